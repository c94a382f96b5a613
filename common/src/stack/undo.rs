//! What a run did to one jail, kept so that it can be taken back. Each change that
//! can be undone is pushed as it goes through the sink, as what takes it back; the
//! engine unwinds the list newest first ([`Engine::unwind`]): when a jmount run
//! fails midway (a jail is changed all or nothing), and at the end of a run that
//! puts back what it found (jupdate; jclean --remount).

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{Engine, StackError};
use crate::action::{Discard, RemoveDir, Site, StartStop, Unlimit};
use crate::config::{Jail, Limits};
use crate::exit::Domain;
use crate::plan::{JailPlan, Stack};
use crate::platform::{Limited, Mounted, Service};
use crate::signals;
use crate::target::MadeDir;

/// One mount a run made: enough to find it again on the table.
#[derive(Clone, Debug)]
pub(crate) struct Made {
    pub(crate) layer: String,
    pub(crate) target: PathBuf,
}

/// What a run did, oldest first, each as what takes it back.
#[derive(Default)]
pub(crate) struct Undo<'p> {
    entries: Vec<Entry<'p>>,
}

/// One change, as what takes it back.
pub(crate) enum Entry<'p> {
    /// A mount made, pinned while its run goes on (`None` for `-n`): a failure
    /// takes it back by what was pinned.
    Mount(Made, Option<Mounted>),
    /// A mount of a run that went through: taken down as far as it is still on
    /// top (a jail's stop hook may have run junmount).
    Mounted(Made),
    /// A dir made (missing parents too), for its layer: only a failed jmount
    /// takes it back.
    Dir(String, MadeDir),
    /// The jail started or stopped: the command that turns it back, and to what.
    Service(Vec<OsString>, Service),
    /// Stacks taken down, each with its count of mounts: mounted again.
    TakenDown(Vec<(&'p Stack, usize)>),
    /// Limits held around the updater: lifted.
    Limits {
        limits: &'p Limits,
        held: Option<Box<dyn Limited>>,
    },
}

impl std::fmt::Debug for Undo<'_> {
    // What is pinned or held shows no more than how much there is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mounts: Vec<&Made> = self.mounts().collect();
        f.debug_struct("Undo")
            .field("mounts", &mounts)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl<'p> Undo<'p> {
    pub(crate) fn push(&mut self, entry: Entry<'p>) {
        self.entries.push(entry);
    }

    /// The mounts pushed, oldest first.
    pub(crate) fn mounts(&self) -> impl Iterator<Item = &Made> {
        self.entries.iter().filter_map(|entry| match entry {
            Entry::Mount(made, _) | Entry::Mounted(made) => Some(made),
            _ => None,
        })
    }

    /// What a run that went through keeps to take back: its mounts, no longer
    /// pinned (the descriptors would keep them busy); the dirs it made stay.
    pub(crate) fn settle(self) -> Undo<'p> {
        let entries = self.entries.into_iter().filter_map(|entry| match entry {
            Entry::Mount(made, _) => Some(Entry::Mounted(made)),
            Entry::Dir(..) => None,
            other => Some(other),
        });
        Undo {
            entries: entries.collect(),
        }
    }

    /// The limits the newest [`Entry::Limits`] holds, for the run they are around.
    pub(crate) fn limited(&self) -> Option<&dyn Limited> {
        self.entries.iter().rev().find_map(|entry| match entry {
            Entry::Limits { held, .. } => Some(held.as_deref()),
            _ => None,
        })?
    }

    fn has_dirs(&self) -> bool {
        (self.entries.iter()).any(|entry| matches!(entry, Entry::Dir(..)))
    }
}

impl<'a> Engine<'a> {
    /// Start or stop the jail, with its configured command, else the platform's;
    /// what turns it back is pushed onto `undo`. Whether there was one to run.
    pub(crate) fn service(
        &self,
        plan: &JailPlan,
        jail: &Jail,
        to: Service,
        undo: &mut Undo,
    ) -> Result<bool> {
        let Some(argv) = self.service_argv(jail, to) else {
            return Ok(false);
        };
        let site = Site::of_jail(&plan.jail, &plan.root);
        let name = &jail.name;
        (self.sink.act(
            &site,
            StartStop {
                argv: &argv,
                jail: name,
                to,
            },
        ))
        .context(service_word(to))?;
        let back = match to {
            Service::Start => Service::Stop,
            Service::Stop => Service::Start,
        };
        if let Some(argv) = self.service_argv(jail, back) {
            undo.push(Entry::Service(argv, back));
        }
        Ok(true)
    }

    /// A jail's start or stop command: its configured one, else the platform's.
    fn service_argv(&self, jail: &Jail, to: Service) -> Option<Vec<OsString>> {
        let configured = match to {
            Service::Start => &jail.start,
            Service::Stop => &jail.stop,
        };
        let configured = configured
            .as_ref()
            .map(|argv| argv.iter().map(OsString::from).collect());
        configured.or_else(|| self.platform.service_command(&jail.name, to))
    }

    /// Take back all `undo` holds, newest first, to the end even when
    /// interrupted; what could not be, each error with its layer (or what it
    /// turned back), newest first. A jail is started again only once everything
    /// newer was taken back (else it is left stopped, and said).
    pub(crate) fn unwind(&self, plan: &JailPlan, undo: Undo) -> Vec<anyhow::Error> {
        signals::restoring(|| {
            // Taking dirs back is exclusive with making them (another jail's).
            let _dirs =
                (undo.has_dirs()).then(|| self.dirs.write().unwrap_or_else(|p| p.into_inner()));
            let mut failed = Vec::new();
            let mut entries = undo.entries;
            while let Some(entry) = entries.pop() {
                let result = match entry {
                    Entry::Mounted(made) => {
                        // A run's mounts go together, by the table, stack by stack.
                        let mut made = vec![made];
                        while matches!(entries.last(), Some(Entry::Mounted(_))) {
                            if let Some(Entry::Mounted(m)) = entries.pop() {
                                made.push(m);
                            }
                        }
                        self.take_back(plan, &made)
                    }
                    Entry::Service(argv, Service::Start) if !failed.is_empty() => {
                        drop(argv);
                        Err(Domain::error(StackError::LeftStopped))
                    }
                    entry => self.turn_back(plan, entry),
                };
                failed.extend(result.err());
            }
            failed
        })
    }

    /// Take back one entry but a run's mounts.
    fn turn_back(&self, plan: &JailPlan, entry: Entry) -> Result<()> {
        let of_layer = |layer| Site::of_layer(&plan.jail, &plan.root, layer);
        let site = Site::of_jail(&plan.jail, &plan.root);
        match entry {
            Entry::Mount(_, None) | Entry::Mounted(_) => Ok(()),
            Entry::Mount(made, Some(mounted)) => {
                (self.sink.act(&of_layer(&made.layer), Discard(mounted)))
                    .map(drop)
                    .context(made.layer)
            }
            Entry::Dir(layer, dir) => {
                if !self.release_dir(&dir.path, &plan.jail) {
                    return Ok(());
                }
                (self.sink.act(&of_layer(&layer), RemoveDir(dir)))
                    .map(drop)
                    .context(layer)
            }
            Entry::Service(argv, to) => {
                let jail = &plan.jail;
                (self.sink.act(
                    &site,
                    StartStop {
                        argv: &argv,
                        jail,
                        to,
                    },
                ))
                .map(drop)
                .context(service_word(to))
            }
            Entry::TakenDown(taken) => self
                .mount_again(plan, &taken)
                .context("mounting again what was taken down"),
            Entry::Limits { limits, held } => {
                let jail = &plan.jail;
                (self.sink.act(&site, Unlimit { jail, limits, held })).map(drop)
            }
        }
    }
}

/// A run's result once [`Engine::unwind`] took back what it did: the run's
/// error, else the first of what could not be taken back; the others are said.
pub(crate) fn first_error<T>(
    result: Result<T>,
    undone: Vec<anyhow::Error>,
    say: impl Fn(anyhow::Error),
) -> Result<T> {
    let mut undone = undone.into_iter();
    let result = match result {
        Ok(out) => undone.next().map_or(Ok(out), Err),
        Err(err) => Err(err),
    };
    undone.for_each(say);
    result
}

/// What an error of a jail's start or stop says it was.
fn service_word(to: Service) -> &'static str {
    match to {
        Service::Start => "start",
        Service::Stop => "stop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Sink;
    use crate::exit::{ExitCode, code_of};
    use crate::platform::fake::{Call, Fake, MSG, Scene};
    use crate::platform::{Busy, Platform};

    fn engine(fake: &Fake) -> Engine<'_> {
        Engine::new(fake, MSG, Sink::new(fake, MSG, false))
    }

    /// A jail with no start or stop of its own: the platform's are run.
    fn jail(scene: &Scene) -> Jail {
        Jail {
            name: scene.plan.jail.clone(),
            root: scene.plan.root.clone(),
            layers: Vec::new(),
            uppers: Default::default(),
            tmpfs: Default::default(),
            update: None,
            start: None,
            stop: None,
            network: None,
            upper_group: None,
            limits: Limits::default(),
            log_max: None,
        }
    }

    fn unmounted(calls: Vec<Call>) -> Vec<u64> {
        (calls.into_iter())
            .filter_map(|call| match call {
                Call::Unmount { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    /// jupdate's restore: the limits lifted, the jail it started stopped, the
    /// mounts it made unmounted, newest first.
    #[test]
    fn unwind_takes_back_newest_first() {
        let scene = Scene::new(&[("a", true), ("b", false)]);
        let (fake, jail, limits) = (Fake::default(), jail(&scene), Limits::default());
        let engine = engine(&fake);
        let mut undo = engine.mount_jail(&scene.plan).unwrap();
        assert!(
            engine
                .service(&scene.plan, &jail, Service::Start, &mut undo)
                .unwrap()
        );
        undo.push(Entry::Limits {
            limits: &limits,
            held: None,
        });
        fake.take_calls();
        assert!(engine.unwind(&scene.plan, undo).is_empty());
        let calls = fake.take_calls();
        assert_eq!(calls[0], Call::Service(Service::Stop));
        assert_eq!(unmounted(calls), [3, 2, 1]);
        assert_eq!(fake.lines(), []);
        assert!(!fake.jail_running("j").unwrap());
    }

    /// What cannot be taken back is said, and what is older is taken back all
    /// the same: a failed stop leaves no mount behind.
    #[test]
    fn a_failure_does_not_stop_the_unwinding() {
        let scene = Scene::new(&[("a", true)]);
        let (fake, jail) = (Fake::default(), jail(&scene));
        let engine = engine(&fake);
        let mut undo = engine.mount_jail(&scene.plan).unwrap();
        engine
            .service(&scene.plan, &jail, Service::Start, &mut undo)
            .unwrap();
        fake.script.lock().unwrap().refuse_service = Some(Service::Stop);
        let failed = engine.unwind(&scene.plan, undo);
        let said: Vec<String> = failed.iter().map(|e| format!("{e:#}")).collect();
        assert_eq!(said, ["stop: service failed (fake)"]);
        assert_eq!(code_of(&failed[0]), ExitCode::Unavailable);
        assert_eq!(fake.lines(), []);
    }

    /// jclean --remount's put back: what was taken down mounted again, then the
    /// jail started; a jail whose layers are not all back is left stopped.
    #[test]
    fn started_again_only_when_all_is_back() {
        for fails in [false, true] {
            let scene = Scene::new(&[("a", true), ("b", false)]);
            let (fake, jail) = (Fake::default(), jail(&scene));
            let engine = engine(&fake);
            engine.mount_jail(&scene.plan).unwrap();
            fake.script.lock().unwrap().running = true;
            let before = fake.shape();
            let mut undo = Undo::default();
            (engine.service(&scene.plan, &jail, Service::Stop, &mut undo)).unwrap();
            let taken = engine.take_down_jail(&scene.plan, Busy::Fail).unwrap();
            undo.push(Entry::TakenDown(taken));
            // The mount calls so far: three to mount, none since.
            fake.script.lock().unwrap().refuse_mount = fails.then_some(4);
            fake.take_calls();
            let failed = engine.unwind(&scene.plan, undo);
            let started = fake.take_calls().contains(&Call::Service(Service::Start));
            assert_eq!(started, !fails);
            assert_eq!(fake.jail_running("j").unwrap(), !fails);
            if !fails {
                assert!(failed.is_empty(), "{failed:?}");
                assert_eq!(fake.shape(), before);
                continue;
            }
            let said: Vec<String> = failed.iter().map(|e| format!("{e:#}")).collect();
            assert!(
                said[0].starts_with("mounting again what was taken down: a: "),
                "{said:?}"
            );
            assert_eq!(
                said[1],
                "the jail is left stopped: its layers are not all back"
            );
        }
    }

    /// The run's own error wins; else the first that could not be taken back;
    /// the others are said.
    #[test]
    fn first_error_is_the_runs() {
        let errors = || vec![anyhow::anyhow!("stop"), anyhow::anyhow!("unmount")];
        let said = std::cell::RefCell::new(Vec::new());
        let say = |e: anyhow::Error| said.borrow_mut().push(e.to_string());
        let err = first_error::<()>(Err(anyhow::anyhow!("run")), errors(), say).unwrap_err();
        assert_eq!(err.to_string(), "run");
        assert_eq!(said.take(), ["stop", "unmount"]);
        let err = first_error(Ok(1), errors(), say).unwrap_err();
        assert_eq!(err.to_string(), "stop");
        assert_eq!(said.take(), ["unmount"]);
        assert_eq!(first_error(Ok(1), Vec::new(), say).unwrap(), 1);
    }
}
