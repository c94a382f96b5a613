//! The action model. The engines (a jail's stack of mounts, jupdate's run, jclean's
//! walk) decide what to change and hand each change to a [`Sink`] as an [`Action`]:
//! [`Perform`] does it, [`Dry`] does nothing and prints it as sh for `-n` (or, with
//! `--json`, only lets it be recorded). A [`Recorder`] keeps what was done for the
//! JSON records. Whether a run changes anything is decided here, once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CStr, OsStr, OsString};
use std::ops::Bound;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::exit::{ExitCode, code_of, fail};
use crate::lock::{JailLock, lock_jail};
use crate::mounts::{Index, Mount, Table};
use crate::platform::{MountId, Mounted, Platform, Service};
use crate::report::{Messages, sh_line};
use crate::signals;
pub use crate::step::Busy;
use crate::step::Step;
use crate::target::{Missing, Place};
use crate::update::{Outcome, Run};

/// Where an action happens: the jail (its name and root) and the layer.
#[derive(Clone, Copy, Debug)]
pub struct At<'a> {
    pub jail: &'a str,
    pub root: &'a Path,
    pub layer: &'a str,
}

/// One change to the system.
pub enum Action<'a> {
    /// Create a missing directory, and its missing parents, the way `Place` walks.
    Mkdir(&'a Place),
    /// Perform `step` on `target`. `below`: the mount that must be on top there
    /// first; `table`: the mount table the step was planned against.
    Mount {
        step: &'a Step,
        target: &'a Place,
        below: Option<Below<'a>>,
        table: &'a [Mount],
    },
    /// Remove the top mount at `target`, which the table shows as `top` and the
    /// plan made with `step`.
    Unmount {
        step: &'a Step,
        target: &'a Place,
        top: &'a Mount,
        busy: Busy,
    },
    /// Take back a mount this run has just made (a rollback), by what was pinned.
    Discard(Mounted),
    /// Start or stop a jail with `argv`, run on the host (its configured command
    /// or the platform's); the platform checks the jail's state after it.
    Service {
        argv: &'a [OsString],
        jail: &'a str,
        to: Service,
    },
    /// Run the updater inside a jail.
    Update(&'a Run<'a>),
}

/// The mount a new one must go on top of.
pub enum Below<'a> {
    /// The top of the target as the table shows it, to be pinned first.
    Table(&'a Mount),
    /// One this run made.
    Made(MountId),
}

/// What an action gave back.
pub enum Effect {
    Done,
    /// A mount made, pinned: what a rollback takes back.
    Mounted(Mounted),
    /// How the updater ended.
    Updated(Outcome),
}

/// Where actions go.
pub trait Sink: Sync {
    fn act(&self, at: &At, action: Action) -> Result<Effect>;

    /// The mount table below `root` as this run leaves it: what the system shows,
    /// with what a dry run printed as if it were done.
    fn mounts(&self, root: &Path) -> Result<Table>;

    /// Take the jail's lock for the run (a dry run changes nothing: no lock).
    fn lock(&self, dir: &Path, jail: &str) -> Result<Option<JailLock>>;

    /// Remove one entry of an upper dir (jclean's walk: an action per entry).
    /// `Ok(true)`: removed; `Ok(false)`: only counted.
    fn unlink(&self, dir: &OwnedFd, name: &CStr, flags: UnlinkatFlags) -> nix::Result<bool>;

    /// What follows only a change that was made: completing and checking a
    /// removal (whiteouts, entries that appeared), a run's record line. The
    /// performer calls `then`; a dry run made no change.
    fn after(&self, then: &mut dyn FnMut());
}

/// The sink for a run: doing, or (`-n`) printing.
pub fn sink<'a>(platform: &'a dyn Platform, msg: Messages, dry_run: bool) -> Box<dyn Sink + 'a> {
    if dry_run {
        Box::new(Dry {
            platform,
            sh: !crate::report::json(),
            ghosts: Mutex::default(),
            indexed: Indexed::default(),
        })
    } else {
        Box::new(Perform {
            platform,
            msg,
            indexed: Indexed::default(),
        })
    }
}

/// The platform's table with its index, built once for each table the platform
/// reads (a backend hands out the same table while nothing changed).
#[derive(Default)]
struct Indexed(Mutex<Option<LastIndex>>);

/// A table the platform handed out, and its index.
type LastIndex = (Arc<Vec<Mount>>, Arc<Index>);

impl Indexed {
    fn table(&self, platform: &dyn Platform, root: &Path, extra: Vec<Mount>) -> Result<Table> {
        let lines = platform.mounts(root)?;
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let index = match &*last {
            Some((l, i)) if Arc::ptr_eq(l, &lines) => i.clone(),
            _ => {
                let i = Arc::new(crate::mounts::index(&lines));
                *last = Some((lines.clone(), i.clone()));
                i
            }
        };
        Ok(Table::new(lines, index, extra))
    }
}

/// Does each action.
pub struct Perform<'a> {
    platform: &'a dyn Platform,
    msg: Messages,
    indexed: Indexed,
}

impl Sink for Perform<'_> {
    fn act(&self, at: &At, action: Action) -> Result<Effect> {
        match action {
            Action::Mkdir(place) => place.open(Missing::Create).map(|_| Effect::Done),
            Action::Mount {
                step,
                target,
                below,
                table,
            } => self.mount(at, step, target, below, table),
            Action::Unmount {
                target, top, busy, ..
            } => {
                let id = self.platform.pin(target, top)?;
                self.platform
                    .unmount(target, &id, busy)
                    .map_err(|e| self.name_holders(at, &target.path, e))?;
                let done = format!("unmounted {}", target.path.display());
                self.msg.info(&[at.jail, at.layer], &done);
                Ok(Effect::Done)
            }
            Action::Discard(made) => self.platform.discard(made).map(|()| Effect::Done),
            Action::Service { argv, jail, to } => {
                self.platform.service(argv, jail, to).map(|()| Effect::Done)
            }
            Action::Update(run) => run.run().map(Effect::Updated),
        }
    }

    fn mounts(&self, root: &Path) -> Result<Table> {
        self.indexed.table(self.platform, root, Vec::new())
    }

    fn lock(&self, dir: &Path, jail: &str) -> Result<Option<JailLock>> {
        lock_jail(dir, jail).map(Some)
    }

    fn unlink(&self, dir: &OwnedFd, name: &CStr, flags: UnlinkatFlags) -> nix::Result<bool> {
        unlinkat(dir, name, flags).map(|()| true)
    }

    fn after(&self, then: &mut dyn FnMut()) {
        then();
    }
}

impl Perform<'_> {
    fn mount(
        &self,
        at: &At,
        step: &Step,
        target: &Place,
        below: Option<Below>,
        table: &[Mount],
    ) -> Result<Effect> {
        signals::check()?;
        let below = match below {
            Some(Below::Table(top)) => Some(self.platform.pin(target, top)?),
            Some(Below::Made(id)) => Some(id),
            None => None,
        };
        if let Step::Union { upper, .. } = step {
            let warning = self
                .platform
                .upper_warning(&upper.path, &target.path, table);
            if let Some(w) = warning {
                self.msg.warn(&[at.jail, at.layer], &w);
            }
        }
        let m = self.platform.mount(step, target, below.as_ref())?;
        let done = format!("{} on {}", step.describe(), target.path.display());
        self.msg.info(&[at.jail, at.layer], &done);
        Ok(Effect::Mounted(m))
    }

    /// A busy unmount's error, with what holds the mount: each process as `pid
    /// command (how, jail)`, or the platform's hint when none is found.
    fn name_holders(&self, at: &At, target: &Path, e: anyhow::Error) -> anyhow::Error {
        if code_of(&e) != ExitCode::TempFail {
            return e;
        }
        let holders = self.platform.holders(target);
        if holders.is_empty() {
            let hint = self.platform.busy_hint(target);
            return fail(ExitCode::TempFail, format!("{e:#}: {hint}"));
        }
        let named: Vec<String> = holders
            .iter()
            .map(|h| h.describe(at.root, at.jail))
            .collect();
        let held = named.join(", ");
        fail(ExitCode::TempFail, format!("{e:#}: held by {held}"))
    }
}

/// `-n`: does nothing; prints each action as the sh command that does it (unless
/// the records are JSON), and keeps the mounts it printed as if they were made,
/// so that what a run would take down again is printed exactly.
pub struct Dry<'a> {
    platform: &'a dyn Platform,
    sh: bool,
    /// The mount table lines the printed mounts would add.
    ghosts: Mutex<Ghosts>,
    indexed: Indexed,
}

/// The lines a dry run's printed mounts would add: by mount point, each in mount
/// order, and which mount points each jail root's stacks printed mounts on. Paths
/// (normal ones) are keyed by their bytes: comparing `Path`s parses components.
#[derive(Default)]
struct Ghosts {
    at: BTreeMap<OsString, Vec<Mount>>,
    of_root: HashMap<OsString, BTreeSet<OsString>>,
}

impl Ghosts {
    /// The lines that matter below `root`: those of its own stacks (a tmpfs upper
    /// may lie outside it) and any at or below it.
    fn near(&self, root: &Path) -> Vec<Mount> {
        let root = root.as_os_str();
        // Below `root` in byte order: the keys that start with `root/`.
        let mut below = root.as_encoded_bytes().to_vec();
        if below.last() != Some(&b'/') {
            below.push(b'/');
        }
        let from = Bound::Included(OsStr::from_bytes(&below));
        let mut targets: BTreeSet<&OsStr> = self
            .at
            .range::<OsStr, _>((from, Bound::Unbounded))
            .take_while(|(t, _)| t.as_encoded_bytes().starts_with(&below))
            .map(|(t, _)| t.as_os_str())
            .collect();
        targets.extend(self.at.get_key_value(root).map(|(t, _)| t.as_os_str()));
        targets.extend(
            self.of_root
                .get(root)
                .into_iter()
                .flatten()
                .map(|t| t.as_os_str()),
        );
        targets
            .into_iter()
            .filter_map(|t| self.at.get(t))
            .flatten()
            .cloned()
            .collect()
    }
}

impl Dry<'_> {
    fn ghosts(&self) -> std::sync::MutexGuard<'_, Ghosts> {
        self.ghosts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Sink for Dry<'_> {
    fn act(&self, at: &At, action: Action) -> Result<Effect> {
        match action {
            Action::Mkdir(place) => {
                self.print(&[
                    OsStr::new("mkdir"),
                    OsStr::new("-p"),
                    place.path.as_os_str(),
                ]);
            }
            Action::Mount { step, target, .. } => {
                let mut ghosts = self.ghosts();
                let line = self.platform.planned(step, &target.path);
                let t = target.path.as_os_str();
                ghosts.at.entry(t.to_owned()).or_default().push(line);
                match ghosts.of_root.get_mut(at.root.as_os_str()) {
                    Some(set) => set.insert(t.to_owned()),
                    None => ghosts
                        .of_root
                        .entry(at.root.as_os_str().to_owned())
                        .or_default()
                        .insert(t.to_owned()),
                };
                drop(ghosts);
                if self.sh {
                    self.platform.print_mount(step, &target.path);
                }
            }
            Action::Unmount { target, busy, .. } => {
                if let Some(at) = self.ghosts().at.get_mut(target.path.as_os_str()) {
                    at.pop();
                }
                self.print(&self.platform.unmount_command(&target.path, busy));
            }
            // Nothing printed was made: nothing to take back.
            Action::Discard(_) => {}
            Action::Service { argv, .. } => self.print(argv),
            Action::Update(run) => self.print(&run.sh_argv()),
        }
        Ok(Effect::Done)
    }

    fn mounts(&self, root: &Path) -> Result<Table> {
        let extra = self.ghosts().near(root);
        self.indexed.table(self.platform, root, extra)
    }

    fn lock(&self, _dir: &Path, _jail: &str) -> Result<Option<JailLock>> {
        Ok(None)
    }

    fn unlink(&self, _dir: &OwnedFd, _name: &CStr, _flags: UnlinkatFlags) -> nix::Result<bool> {
        Ok(false)
    }

    fn after(&self, _then: &mut dyn FnMut()) {}
}

impl Dry<'_> {
    fn print<S: AsRef<OsStr>>(&self, argv: &[S]) {
        if self.sh {
            sh_line(argv);
        }
    }
}

/// One change a run made (or, with `-n`, would make) to a layer.
#[derive(Clone, Debug)]
pub struct Done {
    pub layer: String,
    pub what: Did,
}

#[derive(Clone, Debug)]
pub enum Did {
    Mkdir(PathBuf),
    /// A mount made: its kind (`null`, `union`, `tmpfs`), source and target.
    Mount(&'static str, PathBuf, PathBuf),
    /// A mount removed, the same way.
    Unmount(&'static str, PathBuf, PathBuf),
}

impl Did {
    /// What the records say of an action; `None` for what they do not show.
    fn of(action: &Action) -> Option<Did> {
        match action {
            Action::Mkdir(p) => Some(Did::Mkdir(p.path.clone())),
            Action::Mount { step, target, .. } => Some(Did::Mount(
                step.kind(),
                step.source_shown(),
                target.path.clone(),
            )),
            Action::Unmount { step, target, .. } => Some(Did::Unmount(
                step.kind(),
                step.source_shown(),
                target.path.clone(),
            )),
            Action::Discard(_) | Action::Service { .. } | Action::Update(_) => None,
        }
    }
}

/// Keeps what the actions it saw did, for the layers' JSON records.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<Done>>);

impl Recorder {
    fn record(&self, layer: &str, what: Did) {
        let mut done = self.0.lock().unwrap_or_else(|p| p.into_inner());
        done.push(Done {
            layer: layer.to_string(),
            what,
        });
    }

    /// What was done since the last call.
    pub fn take(&self) -> Vec<Done> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A sink with its recorder: what the engines hand their actions to.
pub struct Actor<'a> {
    pub sink: Box<dyn Sink + 'a>,
    pub recorder: Recorder,
}

impl<'a> Actor<'a> {
    pub fn new(sink: Box<dyn Sink + 'a>) -> Actor<'a> {
        Actor {
            sink,
            recorder: Recorder::default(),
        }
    }

    /// Hand `action` to the sink; record it once it is done.
    pub fn act(&self, at: &At, action: Action) -> Result<Effect> {
        let did = Did::of(&action);
        let effect = self.sink.act(at, action)?;
        if let Some(d) = did {
            self.recorder.record(at.layer, d);
        }
        Ok(effect)
    }
}
