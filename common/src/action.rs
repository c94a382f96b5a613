//! The action model. The engines (a jail's stack of mounts, jupdate's run, jclean's
//! walk) decide what to change and hand each change to a [`Sink`] as an [`Act`],
//! one type per kind of change: [`Perform`] does it and gives back what it made,
//! [`Dry`] does nothing and prints it as sh for `-n` (or, with `--json`, only lets
//! it be recorded). [`Recording`] wraps a sink to keep what was done for the JSON
//! records. Whether a run changes anything is decided here, once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CStr, OsStr, OsString};
use std::ops::Bound;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::config::Limits;
use crate::exit::{Coded, Domain, ExitCode, code_of};
use crate::guard::{Access, Seen};
use crate::lock::{JailLock, lock_jail};
use crate::mounts::{Index, Mount, Table};
use crate::platform::Busy;
use crate::platform::{Limited, MountId, Mounted, Platform, Service};
use crate::report::{Messages, sh_line};
use crate::signals;
use crate::step::Step;
use crate::target::{MadeDir, Place};
use crate::update::{Outcome, Run};

/// Where an action happens: a jail as a whole (its start, stop, updater) or one
/// of its layers' stacks.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Site<'a> {
    Jail {
        jail: &'a str,
        root: &'a Path,
    },
    Layer {
        jail: &'a str,
        root: &'a Path,
        layer: &'a str,
    },
}

impl<'a> Site<'a> {
    pub(crate) fn of_jail(jail: &'a str, root: &'a Path) -> Site<'a> {
        Site::Jail { jail, root }
    }

    pub(crate) fn of_layer(jail: &'a str, root: &'a Path, layer: &'a str) -> Site<'a> {
        Site::Layer { jail, root, layer }
    }

    pub(crate) fn jail(&self) -> &'a str {
        match *self {
            Site::Jail { jail, .. } | Site::Layer { jail, .. } => jail,
        }
    }

    pub(crate) fn root(&self) -> &'a Path {
        match *self {
            Site::Jail { root, .. } | Site::Layer { root, .. } => root,
        }
    }

    /// The layer's name; `""` for the jail as a whole (as the JSON records say).
    pub(crate) fn layer(&self) -> &'a str {
        match *self {
            Site::Jail { .. } => "",
            Site::Layer { layer, .. } => layer,
        }
    }

    /// What a message about it names: the jail, and the layer if any.
    pub(crate) fn scope(&self) -> Vec<&'a str> {
        match *self {
            Site::Jail { jail, .. } => vec![jail],
            Site::Layer { jail, layer, .. } => vec![jail, layer],
        }
    }
}

/// One change to the system. Each kind is a type that says what doing it gives
/// back, how [`Perform`] does it and how [`Dry`] shows it: adding a change is
/// adding its type here, and nothing else.
pub(crate) trait Act {
    /// What performing it gives back.
    type Output;
    /// Do it.
    fn perform(self, by: &Perform, site: &Site) -> Result<Self::Output>;
    /// `-n`: show it as the sh command that does it (unless the records are
    /// JSON), and keep what it would change of the mount table.
    fn print(self, by: &Dry, site: &Site);
    /// What the `--json` records say of it; `None` for what they do not show.
    fn record(&self) -> Option<Did> {
        None
    }
}

/// Create a missing directory, and its missing parents, the way `Place` walks.
pub(crate) struct MakeDir<'a>(pub(crate) &'a Place);

/// Create a missing dir that jlayers owns around an upper dir, closed as `Access`
/// says (its missing parents as [`MakeDir`] makes them).
pub(crate) struct MakeOwned<'a>(pub(crate) &'a Place, pub(crate) Access);

/// Set a dir that jlayers owns around an upper dir, found otherwise, to `Access`,
/// by the descriptor it was looked at through.
pub(crate) struct SetAccess<'a>(pub(crate) &'a Place, pub(crate) &'a Seen, pub(crate) Access);

/// Perform `step` on `target`, on top of `below` (the mount that must be on top
/// there first); gives back the mount made, pinned.
pub(crate) struct MountStep<'a> {
    pub(crate) step: Step<'a>,
    pub(crate) target: &'a Place,
    pub(crate) below: Option<Below<'a>>,
}

/// Remove the top mount at `target`, which the table shows as `top` and the plan
/// made with `step`.
pub(crate) struct UnmountTop<'a> {
    pub(crate) step: Step<'a>,
    pub(crate) target: &'a Place,
    pub(crate) top: &'a Mount,
    pub(crate) busy: Busy,
}

/// Take back a mount this run has just made (a rollback), by what was pinned.
pub(crate) struct Discard(pub(crate) Mounted);

/// Start or stop a jail with `argv`, run on the host (its configured command or
/// the platform's); the platform checks the jail's state after it.
pub(crate) struct StartStop<'a> {
    pub(crate) argv: &'a [OsString],
    pub(crate) jail: &'a str,
    pub(crate) to: Service,
}

/// Run the updater inside a jail; gives back how it ended.
pub(crate) struct RunUpdater<'a>(pub(crate) &'a Run<'a>, pub(crate) Option<std::fs::File>);

/// The mount a new one must go on top of.
pub(crate) enum Below<'a> {
    /// The top of the target as the table shows it, to be pinned first.
    Table(&'a Mount),
    /// One this run made.
    Made(MountId),
}

impl Act for MakeDir<'_> {
    /// The dirs made, for a failed run to take back.
    type Output = Vec<MadeDir>;
    fn perform(self, _: &Perform, _: &Site) -> Result<Vec<MadeDir>> {
        let mut made = Vec::new();
        self.0.create(&mut made)?;
        Ok(made)
    }
    fn print(self, by: &Dry, _: &Site) {
        let argv = [
            OsStr::new("mkdir"),
            OsStr::new("-p"),
            self.0.path.as_os_str(),
        ];
        by.print(&argv);
    }
    fn record(&self) -> Option<Did> {
        Some(Did::Mkdir)
    }
}

impl Act for MakeOwned<'_> {
    /// The dirs made, for a failed run to take back.
    type Output = Vec<MadeDir>;
    fn perform(self, _: &Perform, _: &Site) -> Result<Vec<MadeDir>> {
        let mut made = Vec::new();
        crate::guard::make(self.0, self.1, &mut made)?;
        Ok(made)
    }
    fn print(self, by: &Dry, _: &Site) {
        let mode = format!("{:04o}", self.1.mode());
        let argv = [
            OsStr::new("mkdir"),
            OsStr::new("-p"),
            OsStr::new("-m"),
            OsStr::new(&mode),
            self.0.path.as_os_str(),
        ];
        by.print(&argv);
        // chmod again is a no-op; chgrp is what mkdir cannot do.
        for argv in self.1.commands(&self.0.path).iter().skip(1) {
            by.print(argv);
        }
    }
    fn record(&self) -> Option<Did> {
        Some(Did::Mkdir)
    }
}

impl Act for SetAccess<'_> {
    type Output = ();
    fn perform(self, _: &Perform, _: &Site) -> Result<()> {
        self.1.set(self.2, &self.0.path)
    }
    fn print(self, by: &Dry, _: &Site) {
        for argv in self.2.commands(&self.0.path) {
            by.print(&argv);
        }
    }
    fn record(&self) -> Option<Did> {
        Some(Did::Mode)
    }
}

impl Act for MountStep<'_> {
    type Output = Mounted;
    fn perform(self, by: &Perform, site: &Site) -> Result<Mounted> {
        signals::check()?;
        let below = match self.below {
            Some(Below::Table(top)) => Some(by.platform.pin(self.target, top)?),
            Some(Below::Made(id)) => Some(id),
            None => None,
        };
        let made = by.platform.mount(self.step, self.target, below.as_ref())?;
        let done = format!("{} on {}", self.step.describe(), self.target.path.display());
        by.msg.info(&site.scope(), &done);
        Ok(made)
    }
    fn print(self, by: &Dry, site: &Site) {
        let target = &self.target.path;
        let key = target.as_os_str();
        let mut ghosts = by.ghosts();
        let line = by.platform.planned(self.step, target);
        ghosts.at.entry(key.to_owned()).or_default().push(line);
        // A root's entry is made once; looking it up first spares a copy of it.
        let root = site.root().as_os_str();
        match ghosts.of_root.get_mut(root) {
            Some(targets) => targets.insert(key.to_owned()),
            None => (ghosts.of_root.entry(root.to_owned()).or_default()).insert(key.to_owned()),
        };
        drop(ghosts);
        if by.sh {
            by.platform.print_mount(self.step, target);
        }
    }
    fn record(&self) -> Option<Did> {
        let (kind, source) = (self.step.kind(), self.step.source_shown());
        Some(Did::Mount(kind, source, self.target.path.clone()))
    }
}

impl Act for UnmountTop<'_> {
    type Output = ();
    fn perform(self, by: &Perform, site: &Site) -> Result<()> {
        let id = by.platform.pin(self.target, self.top)?;
        let unmount = || by.platform.unmount(self.target, &id, self.busy);
        match self.busy {
            Busy::Fail => crate::platform::settle(by.platform, site.jail(), unmount),
            Busy::Force => unmount(),
        }
        .map_err(|e| by.name_holders(site, &self.target.path, e))?;
        let done = format!(
            "unmounted {} on {}",
            self.step.describe(),
            self.target.path.display()
        );
        by.msg.info(&site.scope(), &done);
        Ok(())
    }
    fn print(self, by: &Dry, _: &Site) {
        if let Some(lines) = by.ghosts().at.get_mut(self.target.path.as_os_str()) {
            lines.pop();
        }
        by.print(&by.platform.unmount_command(&self.target.path, self.busy));
    }
    fn record(&self) -> Option<Did> {
        let (kind, source) = (self.step.kind(), self.step.source_shown());
        Some(Did::Unmount(kind, source, self.target.path.clone()))
    }
}

impl Act for Discard {
    type Output = ();
    fn perform(self, by: &Perform, _: &Site) -> Result<()> {
        by.platform.discard(self.0)
    }
    // Nothing printed was made: nothing to take back.
    fn print(self, _: &Dry, _: &Site) {}
}

/// Remove one entry of an upper dir (jclean's walk, one per entry): what the
/// system call said, for the walk to tell a race from a failure; nothing is
/// removed for `-n` (`None`: only counted).
pub(crate) struct Unlink<'a> {
    pub(crate) dir: &'a OwnedFd,
    pub(crate) name: &'a CStr,
    pub(crate) flags: UnlinkatFlags,
}

impl Act for Unlink<'_> {
    type Output = nix::Result<()>;
    fn perform(self, _: &Perform, _: &Site) -> Result<nix::Result<()>> {
        Ok(unlinkat(self.dir, self.name, self.flags))
    }
    fn print(self, _: &Dry, _: &Site) {}
}

/// Open a jail's log for a run, its dir made when missing (`-n`: neither).
pub(crate) struct OpenLog<'a>(pub(crate) &'a Path);

impl Act for OpenLog<'_> {
    type Output = std::fs::File;
    fn perform(self, _: &Perform, _: &Site) -> Result<std::fs::File> {
        crate::update::open_log(self.0)
    }
    fn print(self, _: &Dry, _: &Site) {}
}

/// Put a run's limits (`pids`, `memory`, `cpu`) in place around the updater: a
/// Linux cgroup, FreeBSD rctl rules. What it gives back holds them; [`Unlimit`]
/// takes them away after the run (`-n`: the sh lines that set and lift them).
pub(crate) struct Limit<'a> {
    pub(crate) jail: &'a str,
    pub(crate) limits: &'a Limits,
}

impl Act for Limit<'_> {
    type Output = Option<Box<dyn Limited>>;
    fn perform(self, by: &Perform, _: &Site) -> Result<Option<Box<dyn Limited>>> {
        by.platform.limit(self.jail, self.limits)
    }
    fn print(self, by: &Dry, _: &Site) {
        by.print_lines(&by.platform.limit_sh(self.jail, self.limits).0);
    }
}

/// Take a run's limits away: [`Limit`]'s undo.
pub(crate) struct Unlimit<'a> {
    pub(crate) jail: &'a str,
    pub(crate) limits: &'a Limits,
    pub(crate) held: Option<Box<dyn Limited>>,
}

impl Act for Unlimit<'_> {
    type Output = ();
    fn perform(self, _: &Perform, _: &Site) -> Result<()> {
        drop(self.held);
        Ok(())
    }
    fn print(self, by: &Dry, _: &Site) {
        by.print_lines(&by.platform.limit_sh(self.jail, self.limits).1);
    }
}

/// Take the jail's lock for the run (a dry run takes none: it changes nothing).
pub(crate) struct Lock<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) jail: &'a str,
}

impl Act for Lock<'_> {
    type Output = JailLock;
    fn perform(self, _: &Perform, _: &Site) -> Result<JailLock> {
        lock_jail(self.dir, self.jail)
    }
    fn print(self, _: &Dry, _: &Site) {}
}

/// Take back a directory a failed run made (only if still empty and the same).
pub(crate) struct RemoveDir(pub(crate) MadeDir);

impl Act for RemoveDir {
    /// Whether it was removed.
    type Output = bool;
    fn perform(self, _: &Perform, _: &Site) -> Result<bool> {
        Ok(self.0.remove())
    }
    fn print(self, by: &Dry, _: &Site) {
        by.print(&[OsStr::new("rmdir"), self.0.path.as_os_str()]);
    }
}

impl Act for StartStop<'_> {
    type Output = ();
    fn perform(self, by: &Perform, _: &Site) -> Result<()> {
        by.platform.service(self.argv, self.jail, self.to)
    }
    fn print(self, by: &Dry, _: &Site) {
        by.print(self.argv);
    }
}

impl Act for RunUpdater<'_> {
    type Output = Outcome;
    fn perform(self, _: &Perform, _: &Site) -> Result<Outcome> {
        let log = self
            .1
            .ok_or_else(|| anyhow::anyhow!("no log opened for the run"))?;
        self.0.run(log)
    }
    fn print(self, by: &Dry, _: &Site) {
        by.print(&self.0.sh_argv());
    }
}

/// Where actions go: done, or (`-n`) printed.
pub(crate) enum Sink<'a> {
    Perform(Perform<'a>),
    Dry(Dry<'a>),
}

impl<'a> Sink<'a> {
    /// The sink for a run: doing, or (`-n`) printing.
    pub(crate) fn new(platform: &'a dyn Platform, msg: Messages, dry_run: bool) -> Sink<'a> {
        let indexed = Indexed::default();
        if dry_run {
            let sh = !crate::report::json();
            let ghosts = Mutex::default();
            Sink::Dry(Dry {
                platform,
                sh,
                ghosts,
                indexed,
            })
        } else {
            Sink::Perform(Perform {
                platform,
                msg,
                indexed,
            })
        }
    }

    /// Do `action` (`Some` of what it gave back), or print it (`None`).
    pub(crate) fn act<A: Act>(&self, site: &Site, action: A) -> Result<Option<A::Output>> {
        match self {
            Sink::Perform(by) => action.perform(by, site).map(Some),
            Sink::Dry(by) => {
                action.print(by, site);
                Ok(None)
            }
        }
    }

    /// Whether actions are done: what follows only a change that was made (a
    /// removal's check, a run's record line) asks this.
    pub(crate) fn performs(&self) -> bool {
        matches!(self, Sink::Perform(_))
    }

    /// The same sink, printing no sh (`-n` of a tool whose own report is its
    /// output: jclean --remount).
    pub(crate) fn silent(mut self) -> Self {
        if let Sink::Dry(by) = &mut self {
            by.sh = false;
        }
        self
    }

    /// The mount table below `root` as this run leaves it: what the system shows,
    /// with what a dry run printed as if it were done.
    pub(crate) fn mounts(&self, root: &Path) -> Result<Table> {
        match self {
            Sink::Perform(by) => by.indexed.table(by.platform, root, Vec::new()),
            Sink::Dry(by) => {
                let extra = by.ghosts().near(root);
                by.indexed.table(by.platform, root, extra)
            }
        }
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
            Some((cached_lines, cached_index)) if Arc::ptr_eq(cached_lines, &lines) => {
                cached_index.clone()
            }
            _ => {
                let built = Arc::new(crate::mounts::index(&lines));
                *last = Some((lines.clone(), built.clone()));
                built
            }
        };
        Ok(Table::new(lines, index, extra))
    }
}

/// Does each action.
pub(crate) struct Perform<'a> {
    platform: &'a dyn Platform,
    msg: Messages,
    indexed: Indexed,
}

impl Perform<'_> {
    /// A busy unmount's error, with what holds the mount: each process as `pid
    /// command (how, jail)`, or the platform's hint when none is found.
    fn name_holders(&self, site: &Site, target: &Path, err: anyhow::Error) -> anyhow::Error {
        if code_of(&err) != ExitCode::TempFail {
            return err;
        }
        let holders = self.platform.holders(target);
        if holders.is_empty() {
            let hint = self.platform.busy_hint(target);
            return Domain::error(BusyError::Unheld { busy: err, hint });
        }
        let holders = holders
            .iter()
            .map(|h| h.describe(site.root(), site.jail()))
            .collect();
        Domain::error(BusyError::Held { busy: err, holders })
    }
}

/// A busy unmount (75), with what holds the mount. The unmount's own error is
/// said first, in its words: it is the line's head, not a cause after it.
#[derive(Debug)]
pub(crate) enum BusyError {
    /// No holder found: the platform's hint of where to look.
    Unheld { busy: anyhow::Error, hint: String },
    /// Each holder as `pid 4242 make (cwd; jail web)`.
    Held {
        busy: anyhow::Error,
        holders: Vec<String>,
    },
}

impl std::fmt::Display for BusyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusyError::Unheld { busy, hint } => {
                write!(f, "{}: {hint}", crate::exit::text(busy))
            }
            BusyError::Held { busy, holders } => write!(
                f,
                "{}: held by {}",
                crate::exit::text(busy),
                holders.join(", ")
            ),
        }
    }
}

impl std::error::Error for BusyError {}

impl Coded for BusyError {
    fn code(&self) -> ExitCode {
        match self {
            BusyError::Unheld { .. } | BusyError::Held { .. } => ExitCode::TempFail,
        }
    }
}

/// `-n`: does nothing; prints each action as the sh command that does it (unless
/// the records are JSON), and keeps the mounts it printed as if they were made,
/// so that what a run would take down again is printed exactly.
pub(crate) struct Dry<'a> {
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

    fn print<S: AsRef<OsStr>>(&self, argv: &[S]) {
        if self.sh {
            sh_line(argv);
        }
    }

    /// Lines already in sh form.
    fn print_lines(&self, lines: &[String]) {
        if self.sh {
            for line in lines {
                crate::report::sh_raw(line);
            }
        }
    }
}

/// One change a run made (or, with `-n`, would make) to a layer.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub(crate) layer: String,
    pub(crate) did: Did,
}

/// What one action did, as the layers' JSON records tell it.
#[derive(Clone, Debug)]
pub(crate) enum Did {
    /// A directory made: the layer changed, though its record lists only mounts.
    Mkdir,
    /// A directory's mode or group set, likewise.
    Mode,
    /// A mount made: its kind (`null`, `union`, `tmpfs`), source and target.
    Mount(&'static str, PathBuf, PathBuf),
    /// A mount removed, the same way.
    Unmount(&'static str, PathBuf, PathBuf),
    /// A tmpfs upper's content thrown away with its unmount (`-n`: would be).
    Discard { files: u64, bytes: u64 },
}

/// A sink that keeps what the actions it was handed did, for the layers' JSON
/// records; everything else is the sink's.
pub(crate) struct Recording<'a> {
    sink: Sink<'a>,
    changes: Mutex<Vec<Change>>,
}

impl<'a> Recording<'a> {
    pub(crate) fn new(sink: Sink<'a>) -> Recording<'a> {
        Recording {
            sink,
            changes: Mutex::default(),
        }
    }

    /// Hand `action` to the sink; record it once it is done (or printed).
    pub(crate) fn act<A: Act>(&self, site: &Site, action: A) -> Result<Option<A::Output>> {
        let did = action.record();
        let output = self.sink.act(site, action)?;
        if let Some(did) = did {
            let layer = site.layer().to_string();
            self.lock_changes().push(Change { layer, did });
        }
        Ok(output)
    }

    /// Record what was done beside an action (a tmpfs upper's content discarded).
    pub(crate) fn note(&self, layer: &str, did: Did) {
        let layer = layer.to_string();
        self.lock_changes().push(Change { layer, did });
    }

    /// What was done since the last call.
    pub(crate) fn take(&self) -> Vec<Change> {
        std::mem::take(&mut *self.lock_changes())
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, Vec<Change>> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<'a> std::ops::Deref for Recording<'a> {
    type Target = Sink<'a>;
    fn deref(&self) -> &Sink<'a> {
        &self.sink
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::exit::code_of;
    use crate::platform::fake::{Call, Fake, MSG, Scene, Script};

    fn site(scene: &Scene) -> Site<'_> {
        Site::of_layer(&scene.plan.jail, &scene.plan.root, "a")
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn make_dir_makes_it_beneath_the_root_and_dry_only_records() {
        let scene = Scene::new(&[("a", false)]);
        let fake = Fake::default();
        let place = &scene.plan.layers[0].stack.target;
        let dry = Sink::new(&fake, MSG, true);
        assert!(dry.act(&site(&scene), MakeDir(place)).unwrap().is_none());
        assert!(!place.path.exists());
        assert!(matches!(MakeDir(place).record(), Some(Did::Mkdir)));
        let sink = Sink::new(&fake, MSG, false);
        sink.act(&site(&scene), MakeDir(place)).unwrap().unwrap();
        assert!(place.path.is_dir());
        // A link on the way is refused, never followed.
        let outside = scene.dir.join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, scene.plan.root.join("link")).unwrap();
        let linked = Place::beneath(&scene.plan.root, Path::new("link/x"));
        let err = sink.act(&site(&scene), MakeDir(&linked)).unwrap_err();
        assert_eq!(code_of(&err), ExitCode::NoPerm, "{err:#}");
        assert!(!outside.join("x").exists());
    }

    #[test]
    fn make_owned_and_set_access_close_the_dir() {
        let scene = Scene::new(&[("a", true)]);
        let fake = Fake::default();
        let sink = Sink::new(&fake, MSG, false);
        let owned = Place::host(scene.dir.join("up/j"));
        let access = Access::default();
        let dry = Sink::new(&fake, MSG, true);
        dry.act(&site(&scene), MakeOwned(&owned, access)).unwrap();
        assert!(!owned.path.exists());
        sink.act(&site(&scene), MakeOwned(&owned, access)).unwrap();
        assert_eq!(mode(&owned.path), 0o700);
        std::fs::set_permissions(&owned.path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fd = owned.open_dir().unwrap();
        let seen = Seen::look(fd, &owned.path).unwrap();
        dry.act(&site(&scene), SetAccess(&owned, &seen, access))
            .unwrap();
        assert_eq!(mode(&owned.path), 0o755);
        sink.act(&site(&scene), SetAccess(&owned, &seen, access))
            .unwrap();
        assert_eq!(mode(&owned.path), 0o700);
        assert!(matches!(
            SetAccess(&owned, &seen, access).record(),
            Some(Did::Mode)
        ));
    }

    /// A mount on top of the table's top pins it first; one on a top that is
    /// not the table's fails and makes nothing.
    #[test]
    fn mount_step_pins_what_it_goes_on() {
        let scene = Scene::new(&[("a", true)]);
        let stack = &scene.plan.layers[0].stack;
        let fake = Fake::default();
        let sink = Sink::new(&fake, MSG, false);
        let target = &stack.target;
        std::fs::create_dir_all(&target.path).unwrap();
        let mut steps = stack.shape.steps();
        let (null, union) = (steps.next().unwrap(), steps.next().unwrap());
        let bottom = fake.preload(null, &target.path);
        let table = fake.mounts(&scene.plan.root).unwrap();
        let mut wrong = table[0].clone();
        wrong.source = "elsewhere".into();
        let below = Some(Below::Table(&wrong));
        let act = MountStep {
            step: union,
            target,
            below,
        };
        let err = sink.act(&site(&scene), act).unwrap_err();
        assert_eq!(code_of(&err), ExitCode::NoPerm, "{err:#}");
        assert_eq!(fake.lines().len(), 1);
        let below = Some(Below::Table(&table[0]));
        let act = MountStep {
            step: union,
            target,
            below,
        };
        let record = act.record();
        let made = sink.act(&site(&scene), act).unwrap().unwrap();
        assert_eq!(made.id.0, (bottom + 1).to_string());
        assert!(matches!(record, Some(Did::Mount("union", _, _))));
        // Taken back by what was pinned.
        sink.act(&site(&scene), Discard(made)).unwrap();
        // The wrong top failed at its pin: no mount was tried.
        assert_eq!(
            fake.take_calls(),
            [
                Call::Mount {
                    kind: "union",
                    target: target.path.clone(),
                    made: Some(bottom + 1)
                },
                Call::Discard(bottom + 1)
            ]
        );
        assert_eq!(fake.lines().len(), 1);
    }

    /// A busy unmount names who holds the mount, or the platform's hint; forced,
    /// it goes.
    #[test]
    fn unmount_top_names_holders_when_busy() {
        let scene = Scene::new(&[("a", false)]);
        let stack = &scene.plan.layers[0].stack;
        let target = &stack.target;
        let fake = Fake::new(Script {
            busy_at: vec![target.path.clone()],
            ..Script::default()
        });
        let sink = Sink::new(&fake, MSG, false);
        let step = stack.shape.steps().next().unwrap();
        fake.preload(step, &target.path);
        let table = fake.mounts(&scene.plan.root).unwrap();
        let top = &table[0];
        let unmount = |busy| UnmountTop {
            step,
            target,
            top,
            busy,
        };
        let err = sink.act(&site(&scene), unmount(Busy::Fail)).unwrap_err();
        assert_eq!(code_of(&err), ExitCode::TempFail);
        assert!(
            format!("{err:#}").contains("no process holds it (fake)"),
            "{err:#}"
        );
        fake.script.lock().unwrap().held = vec![target.path.clone()];
        let err = sink.act(&site(&scene), unmount(Busy::Fail)).unwrap_err();
        assert!(
            format!("{err:#}").contains("held by pid 4242 make (cwd)"),
            "{err:#}"
        );
        assert_eq!(fake.lines().len(), 1);
        sink.act(&site(&scene), unmount(Busy::Force)).unwrap();
        assert_eq!(fake.lines(), []);
        assert!(matches!(
            unmount(Busy::Fail).record(),
            Some(Did::Unmount("null", _, _))
        ));
    }

    #[test]
    fn start_stop_runs_only_when_performed() {
        let scene = Scene::new(&[]);
        let fake = Fake::default();
        let argv = fake.service_command("j", Service::Start).unwrap();
        let start = || StartStop {
            argv: &argv,
            jail: "j",
            to: Service::Start,
        };
        Sink::new(&fake, MSG, true)
            .act(&site(&scene), start())
            .unwrap();
        assert_eq!(fake.take_calls(), []);
        Sink::new(&fake, MSG, false)
            .act(&site(&scene), start())
            .unwrap();
        assert_eq!(fake.take_calls(), [Call::Service(Service::Start)]);
        assert!(fake.jail_running("j").unwrap());
    }

    /// `-n` keeps the mounts it printed as made, per root, and an unmount it
    /// prints takes the newest away again.
    #[test]
    fn dry_ghosts_are_the_table_a_run_would_leave() {
        let scene = Scene::new(&[("a", true)]);
        let stack = &scene.plan.layers[0].stack;
        let fake = Fake::default();
        let dry = Sink::new(&fake, MSG, true);
        for step in stack.shape.steps() {
            let act = MountStep {
                step,
                target: &stack.target,
                below: None,
            };
            dry.act(&site(&scene), act).unwrap();
        }
        let table = dry.mounts(&scene.plan.root).unwrap();
        let kinds: Vec<&str> = stack.at(&table).iter().map(|m| m.fstype.as_str()).collect();
        assert_eq!(kinds, ["nullfs", "unionfs"]);
        let other = dry.mounts(&scene.dir.join("other")).unwrap();
        assert!(stack.at(&other).is_empty());
        let top = stack.at(&table)[1].clone();
        let step = stack.shape.steps().nth(1).unwrap();
        let act = UnmountTop {
            step,
            target: &stack.target,
            top: &top,
            busy: Busy::Fail,
        };
        dry.act(&site(&scene), act).unwrap();
        let table = dry.mounts(&scene.plan.root).unwrap();
        assert_eq!(stack.at(&table).len(), 1);
        assert_eq!(fake.lines(), []);
    }

    #[test]
    fn unlink_removes_only_when_performed() {
        let scene = Scene::new(&[]);
        let file = scene.dir.join("f");
        std::fs::write(&file, "").unwrap();
        let dir: OwnedFd = std::fs::File::open(&scene.dir).unwrap().into();
        let fake = Fake::default();
        let flags = UnlinkatFlags::NoRemoveDir;
        let site = Site::of_layer("j", &scene.dir, "a");
        let unlink = || Unlink {
            dir: &dir,
            name: c"f",
            flags,
        };
        let dry = Sink::new(&fake, MSG, true).act(&site, unlink()).unwrap();
        assert!(dry.is_none());
        assert!(file.exists());
        let done = Sink::new(&fake, MSG, false).act(&site, unlink()).unwrap();
        assert_eq!(done, Some(Ok(())));
        assert!(!file.exists());
    }

    /// The unmount's own line first (its I/O cause without "(os error N)"),
    /// then the holders or the hint.
    #[test]
    fn busy_error_codes_and_lines() {
        use crate::exit::check_domain as check;
        let busy = || {
            let os = std::io::Error::from_raw_os_error(libc::EBUSY);
            anyhow::Error::new(os).context("unmount /jails/web/usr/ports")
        };
        check(
            BusyError::Unheld {
                busy: busy(),
                hint: "see fstat -f /jails/web/usr/ports".into(),
            },
            ExitCode::TempFail,
            "unmount /jails/web/usr/ports: Device or resource busy: see fstat -f /jails/web/usr/ports",
        );
        check(
            BusyError::Held {
                busy: busy(),
                holders: vec![
                    "pid 42 make (cwd; jail web)".into(),
                    "pid 7 sh (root)".into(),
                ],
            },
            ExitCode::TempFail,
            "unmount /jails/web/usr/ports: Device or resource busy: held by pid 42 make (cwd; jail web), pid 7 sh (root)",
        );
    }
}
