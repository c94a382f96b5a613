//! A platform for unit tests: an in-memory mount table, failures scripted in
//! advance, and a record of every call it got. The engines run on it as on a
//! real backend, without root; the directories they make and check are real
//! (temp dirs), the mounts are not.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;

use super::{Busy, Exec, Holder, MountId, Mounted, Platform, Service, changed, planned_line};
use crate::exit::{ExitCode, fail};
use crate::mounts::Mount;
use crate::plan::{Guards, JailPlan, LayerPlan, Stack};
use crate::report::{Messages, Verbosity};
use crate::step::{Access, Null, Shape, Step, Tmpfs, Union};
use crate::target::Place;

/// What the fake was asked to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    /// A mount of `kind` on `target`; `made`: the new mount's id, `None` when it failed.
    Mount {
        kind: &'static str,
        target: PathBuf,
        made: Option<u64>,
    },
    /// A mount just made, taken back (a rollback).
    Discard(u64),
    /// An unmount of mount `id` at `target`.
    Unmount {
        target: PathBuf,
        id: u64,
        busy: Busy,
    },
    /// `-n`: the mount command printed for a step of `kind` on `target`.
    PrintMount { kind: &'static str, target: PathBuf },
    /// `-n`: the unmount command printed for `target`.
    PrintUnmount(PathBuf),
    /// A jail started or stopped.
    Service(Service),
}

/// Failures to come, and what the fake reports of the world.
#[derive(Clone, Debug, Default)]
pub(crate) struct Script {
    /// The Nth mount call (from 1) fails EPERM; nothing is made.
    pub(crate) refuse_mount: Option<usize>,
    /// The Nth mount call lands on this other path: it is not on top at its
    /// target, so it is taken back and the call fails, as a backend does.
    pub(crate) lands_elsewhere: Option<(usize, PathBuf)>,
    /// The Nth unmount call (from 1) fails EBUSY unless forced.
    pub(crate) busy_unmount: Option<usize>,
    /// Every unmount at these targets fails EBUSY unless forced.
    pub(crate) busy_at: Vec<PathBuf>,
    /// Processes said to hold the mounts at these targets.
    pub(crate) held: Vec<PathBuf>,
    /// Whether the jail runs.
    pub(crate) running: bool,
    /// A start or stop that fails (69); the jail stays as it was.
    pub(crate) refuse_service: Option<Service>,
}

#[derive(Default)]
struct World {
    /// The mount table in mount order, each line with its id.
    table: Vec<(u64, Mount)>,
    next_id: u64,
    calls: Vec<Call>,
    mount_calls: usize,
    unmount_calls: usize,
}

/// The fake backend.
#[derive(Default)]
pub(crate) struct Fake {
    world: Mutex<World>,
    pub(crate) script: Mutex<Script>,
}

/// The file system names the fake shows, FreeBSD's.
const NULL: &str = "nullfs";
const UNION: &str = "unionfs";

fn id_of(id: &MountId) -> u64 {
    id.0.parse().unwrap_or(u64::MAX)
}

impl Fake {
    pub(crate) fn new(script: Script) -> Fake {
        Fake {
            world: Mutex::default(),
            script: Mutex::new(script),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn scripted(&self) -> Script {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Put `step` on `target` as if mounted before the run (not a call).
    pub(crate) fn preload(&self, step: Step, target: &Path) -> u64 {
        let mut world = self.world();
        world.next_id += 1;
        let id = world.next_id;
        world
            .table
            .push((id, planned_line(step, target, NULL, UNION)));
        id
    }

    /// Every call so far, taken.
    pub(crate) fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.world().calls)
    }

    /// The table as (id, fstype, target), in mount order.
    pub(crate) fn lines(&self) -> Vec<(u64, String, PathBuf)> {
        let world = self.world();
        let lines = world.table.iter();
        lines
            .map(|(id, m)| (*id, m.fstype.clone(), m.target.clone()))
            .collect()
    }

    /// The table as (fstype, target), ids left out: what a put-back restores.
    pub(crate) fn shape(&self) -> Vec<(String, PathBuf)> {
        self.lines().into_iter().map(|(_, f, t)| (f, t)).collect()
    }

    /// The id of the top mount at `target`.
    fn top_at(world: &World, target: &Path) -> Option<u64> {
        let mut at = world.table.iter().filter(|(_, m)| m.target == target);
        at.next_back().map(|(id, _)| *id)
    }

    fn push(world: &mut World, mount: Mount) -> u64 {
        world.next_id += 1;
        let id = world.next_id;
        world.table.push((id, mount));
        id
    }

    fn remove(world: &mut World, id: u64) -> bool {
        let before = world.table.len();
        world.table.retain(|(line, _)| *line != id);
        world.table.len() < before
    }
}

impl Platform for Fake {
    fn mounts(&self, _scope: &Path) -> Result<Arc<Vec<Mount>>> {
        let world = self.world();
        Ok(Arc::new(
            world.table.iter().map(|(_, m)| m.clone()).collect(),
        ))
    }

    fn matches(&self, step: Step, mount: &Mount) -> bool {
        let line = planned_line(step, &mount.target, NULL, UNION);
        line.fstype == mount.fstype && line.source == mount.source
    }

    fn pin(&self, target: &Place, top: &Mount) -> Result<MountId> {
        let world = self.world();
        let found = world.table.iter().rfind(|(_, m)| m.target == target.path);
        match found {
            Some((id, m)) if m == top => Ok(MountId(id.to_string())),
            _ => Err(changed(target, "pin")),
        }
    }

    fn mount(&self, step: Step, target: &Place, below: Option<&MountId>) -> Result<Mounted> {
        // The target is opened as a backend opens it: beneath the root, no link.
        target.open_dir()?;
        let script = self.scripted();
        let mut world = self.world();
        world.mount_calls += 1;
        let n = world.mount_calls;
        let (kind, path) = (step.kind(), target.path.clone());
        let mut call = Call::Mount {
            kind,
            target: path.clone(),
            made: None,
        };
        if script.refuse_mount == Some(n) {
            world.calls.push(call);
            let why = format!("{}: mount: Operation not permitted", path.display());
            return Err(fail(ExitCode::NoPerm, why));
        }
        // What it must go on top of is on top there, as a backend checks first.
        let top = Self::top_at(&world, &path);
        if below.is_some_and(|below| top != Some(id_of(below))) {
            world.calls.push(call);
            return Err(changed(target, "mount"));
        }
        let lands = match &script.lands_elsewhere {
            Some((at, elsewhere)) if *at == n => elsewhere.clone(),
            _ => path.clone(),
        };
        let id = Self::push(&mut world, planned_line(step, &lands, NULL, UNION));
        // Checked to be on top at the target, as a backend checks it.
        if Self::top_at(&world, &path) != Some(id) {
            Self::remove(&mut world, id);
            world.calls.push(call);
            return Err(changed(target, "mount"));
        }
        if let Call::Mount { made, .. } = &mut call {
            *made = Some(id);
        }
        world.calls.push(call);
        let id = MountId(id.to_string());
        Ok(Mounted { id, fd: None })
    }

    fn discard(&self, made: Mounted) -> Result<()> {
        let mut world = self.world();
        let id = id_of(&made.id);
        world.calls.push(Call::Discard(id));
        if Self::remove(&mut world, id) {
            Ok(())
        } else {
            Err(fail(ExitCode::Unavailable, format!("mount {id} is gone")))
        }
    }

    fn unmount(&self, target: &Place, id: &MountId, busy: Busy) -> Result<()> {
        let script = self.scripted();
        let mut world = self.world();
        world.unmount_calls += 1;
        let (n, id) = (world.unmount_calls, id_of(id));
        let path = target.path.clone();
        world.calls.push(Call::Unmount {
            target: path.clone(),
            id,
            busy,
        });
        let refused = script.busy_unmount == Some(n) || script.busy_at.contains(&path);
        if refused && busy == Busy::Fail {
            let why = format!("unmount of {}: Device busy", path.display());
            return Err(fail(ExitCode::TempFail, why));
        }
        if Self::top_at(&world, &path) != Some(id) {
            return Err(changed(target, "unmount"));
        }
        Self::remove(&mut world, id);
        Ok(())
    }

    fn planned(&self, step: Step, target: &Path) -> Mount {
        planned_line(step, target, NULL, UNION)
    }

    fn mount_command(&self, step: Step, target: &Path) -> Vec<OsString> {
        let line = self.planned(step, target);
        let fstype = OsString::from(line.fstype);
        vec![
            "mount".into(),
            "-t".into(),
            fstype,
            line.source,
            target.into(),
        ]
    }

    fn print_mount(&self, step: Step, target: &Path) {
        let (kind, target) = (step.kind(), target.to_path_buf());
        self.world().calls.push(Call::PrintMount { kind, target });
    }

    fn force_flag(&self) -> &'static str {
        "-f"
    }

    fn unmount_command(&self, target: &Path, _busy: Busy) -> Vec<OsString> {
        let call = Call::PrintUnmount(target.to_path_buf());
        self.world().calls.push(call);
        vec!["umount".into(), target.into()]
    }

    fn holders(&self, target: &Path) -> Vec<Holder> {
        if !self.scripted().held.iter().any(|t| t == target) {
            return Vec::new();
        }
        vec![Holder {
            pid: 4242,
            command: "make".into(),
            jail: None,
            root: None,
            how: vec!["cwd"],
        }]
    }

    fn busy_hint(&self, _target: &Path) -> String {
        "no process holds it (fake)".into()
    }

    fn jail_running(&self, _jail: &str) -> Result<bool> {
        Ok(self.scripted().running)
    }

    fn service_command(&self, jail: &str, to: Service) -> Option<Vec<OsString>> {
        let verb = if to == Service::Start {
            "start"
        } else {
            "stop"
        };
        Some(vec![
            "service".into(),
            "jail".into(),
            verb.into(),
            jail.into(),
        ])
    }

    fn service(&self, _argv: &[OsString], _jail: &str, to: Service) -> Result<()> {
        self.world().calls.push(Call::Service(to));
        let mut script = self.script.lock().unwrap_or_else(|p| p.into_inner());
        if script.refuse_service == Some(to) {
            return Err(crate::exit::fail(
                ExitCode::Unavailable,
                "service failed (fake)",
            ));
        }
        script.running = to == Service::Start;
        Ok(())
    }

    fn exec_command(&self, _exec: &Exec) -> Command {
        Command::new("true")
    }
}

/// Messages of a test run: errors and problems only.
pub(crate) const MSG: Messages = Messages {
    tool: "test",
    level: Verbosity::Quiet,
};

/// A jail in a temp dir: its root, a host source per layer, upper dirs on the
/// host, and the plan that stacks each layer on `mnt/NAME` below the root.
pub(crate) struct Scene {
    pub(crate) dir: PathBuf,
    pub(crate) plan: JailPlan,
}

impl Scene {
    /// Layers by name, each a union layer (null and union) or a read-only one.
    pub(crate) fn new(layers: &[(&str, bool)]) -> Scene {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("jlayers-fake-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let layers = layers
            .iter()
            .map(|&(layer, union)| {
                let source = dir.join("src").join(layer);
                std::fs::create_dir_all(&source).unwrap();
                let null = Null {
                    source,
                    read_only: !union,
                };
                let union = union.then(|| Union {
                    upper: Place::host(dir.join("up").join(layer)),
                    work: None,
                    options: Vec::new(),
                });
                let target = Path::new("mnt").join(layer);
                let stack = Stack {
                    layer: layer.to_string(),
                    target: Place::beneath(&root, &target),
                    shape: Shape::Layer { null, union },
                    guards: Guards::default(),
                };
                LayerPlan { tmpfs: None, stack }
            })
            .collect();
        let jail = "j".to_string();
        let plan = JailPlan { jail, root, layers };
        Scene { dir, plan }
    }

    /// Union layer `layer`'s upper dir put in a tmpfs of its own, mounted on
    /// the upper's place (the tmpfs's root: `upper` in it), as the plan does.
    pub(crate) fn tmpfs_upper(mut self, layer: &str) -> Scene {
        let at = self.tmpfs_target(layer);
        let mut layers = self.plan.layers.iter_mut();
        let layer = layers.find(|l| l.stack.layer == layer).unwrap();
        let Shape::Layer {
            union: Some(union), ..
        } = &mut layer.stack.shape
        else {
            panic!("{}: no union", layer.stack.layer)
        };
        union.upper = Place::host(at.join("upper"));
        layer.tmpfs = Some(Stack {
            layer: layer.stack.layer.clone(),
            target: Place::host(at),
            shape: Shape::UpperTmpfs(Tmpfs {
                size: None,
                access: Access::default(),
            }),
            guards: Guards::default(),
        });
        self
    }

    /// The target of `layer`.
    pub(crate) fn target(&self, layer: &str) -> PathBuf {
        self.plan.root.join("mnt").join(layer)
    }

    /// Where [`Scene::tmpfs_upper`] mounts `layer`'s tmpfs.
    pub(crate) fn tmpfs_target(&self, layer: &str) -> PathBuf {
        self.dir.join("up").join(layer)
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
