//! The plan: each layer of a jail as a stack of mount steps on one target, its
//! [`Shape`] (the mounts, bottom first), each mount a [`Step`] a backend performs;
//! a layer whose upper dir lives in a tmpfs has that tmpfs's stack too, first.
//!
//! jmount applies a stack bottom-up, junmount removes it top-down, `-n` prints it.
//! Both platforms perform the same steps; only how a step is done differs.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::config::{Config, ConfigError, Jail, Mode, Upper};
use crate::exit::Domain;
use crate::mounts::{Mount, MountsAt};
use crate::os::Os;
use crate::step::{Access, Null, Shape, Tmpfs, Union};
use crate::target::Place;

/// One layer's stack on one jail's target.
#[derive(Clone, Debug)]
pub(crate) struct Stack {
    pub(crate) layer: String,
    /// Beneath the jail root.
    pub(crate) target: Place,
    /// The mounts, bottom first.
    pub(crate) shape: Shape,
    /// The dirs that keep host users out of its upper dir.
    pub(crate) guards: Guards,
}

/// The dirs around a stack's upper dir that keep host users out of it (the upper
/// dir itself is the jail's: it shows as the target's root).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Guards {
    /// jlayers' own, top down: upper_root and the dirs below it above the upper,
    /// a tmpfs upper's root, the work dir. Each made with its [`Access`] (the
    /// jail's; upper_root, every jail's, `[defaults]`') and set back to it when
    /// found otherwise.
    pub(crate) owned: Vec<(Place, Access)>,
    /// A host upper outside upper_root: the admin's dirs above it are only checked.
    pub(crate) checked: Option<PathBuf>,
}

/// Everything jmount does for one jail, and junmount undoes.
#[derive(Clone, Debug)]
pub(crate) struct JailPlan {
    pub(crate) jail: String,
    pub(crate) root: PathBuf,
    /// In mount order: parents before nested layers.
    pub(crate) layers: Vec<LayerPlan>,
}

/// One layer of a jail: its stack, after the tmpfs its upper dir lives in.
#[derive(Clone, Debug)]
pub(crate) struct LayerPlan {
    /// The tmpfs mounted on the upper's place first (`upper_fs = "tmpfs"`).
    pub(crate) tmpfs: Option<Stack>,
    /// The layer's own: null mount, and union.
    pub(crate) stack: Stack,
}

impl JailPlan {
    /// Every stack in mount order (reversed: unmount order), each layer's
    /// tmpfs before its own stack.
    pub(crate) fn stacks(&self) -> impl DoubleEndedIterator<Item = &Stack> + Clone {
        self.layers.iter().flat_map(LayerPlan::stacks)
    }

    /// The layer `stack` (one of this plan's) belongs to.
    pub(crate) fn layer_of(&self, stack: &Stack) -> Option<&LayerPlan> {
        self.layers
            .iter()
            .find(|layer| layer.stacks().any(|s| std::ptr::eq(s, stack)))
    }
}

impl LayerPlan {
    /// Its stacks in mount order: the tmpfs, then its own.
    pub(crate) fn stacks(&self) -> impl DoubleEndedIterator<Item = &Stack> + Clone {
        self.tmpfs.iter().chain(std::iter::once(&self.stack))
    }
}

/// What the mount table shows at a stack's target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// The first so many steps are mounted, in order, on top of whatever else is there.
    Mounted(usize),
    /// The top mount is not part of this stack as planned; `ours` tells whether
    /// mounts of the plan are at the target all the same (out of order, or below it).
    Foreign { top: Mount, ours: bool },
}

/// What a plan needs to know of the disk, found by the caller (roots.rs): the
/// plan itself is made of the configuration and these facts.
pub(crate) trait OnDisk {
    /// A jail root as found (canonical).
    fn real_root(&self, written: &Path) -> PathBuf;
    /// A host path, beneath the jail root it lies in, if any.
    fn locate(&self, path: &Path) -> Place;
    /// Layer `layer`'s source as found (canonical).
    fn real_source(&self, layer: usize) -> &Path;
}

/// The plan for one jail.
pub(crate) fn plan(cfg: &Config, jail: &Jail, os: Os, disk: &dyn OnDisk) -> Result<JailPlan> {
    let root = disk.real_root(&jail.root);
    let planner = Planner {
        cfg,
        jail,
        os,
        access: Access {
            gid: jail.upper_group,
        },
        upper_root: disk.locate(&cfg.upper_root),
        shared: Access {
            gid: cfg.upper_group,
        },
        disk,
        root,
    };
    let layers = (jail.layers.iter())
        .map(|&index| planner.layer(index))
        .collect::<Result<_>>()?;
    Ok(JailPlan {
        jail: jail.name.clone(),
        root: planner.root,
        layers,
    })
}

/// What making one jail's plan knows.
struct Planner<'a> {
    cfg: &'a Config,
    jail: &'a Jail,
    os: Os,
    disk: &'a dyn OnDisk,
    root: PathBuf,
    /// The jail's upper dirs' owner group.
    access: Access,
    upper_root: Place,
    /// upper_root's, every jail's.
    shared: Access,
}

impl Planner<'_> {
    /// Layer `index`'s stack, and its upper's tmpfs when it has one.
    fn layer(&self, index: usize) -> Result<LayerPlan> {
        let layer = &self.cfg.layers[index];
        let null = Null {
            source: self.disk.real_source(index).to_path_buf(),
            read_only: layer.mode == Mode::Readonly,
        };
        let (union, guards, tmpfs) = match self.jail.uppers.get(&index) {
            Some(up) => {
                let (union, guards, tmpfs) = self.union(index, up)?;
                (Some(union), guards, tmpfs)
            }
            None => (None, Guards::default(), None),
        };
        let stack = Stack {
            layer: layer.name.clone(),
            target: Place::beneath(&self.root, &layer.target),
            shape: Shape::Layer { null, union },
            guards,
        };
        Ok(LayerPlan { tmpfs, stack })
    }

    /// The union mount of layer `index` on upper `up`, the dirs that guard it,
    /// and the tmpfs stack the upper lives in, if any.
    fn union(&self, index: usize, up: &Upper) -> Result<(Union, Guards, Option<Stack>)> {
        let layer = &self.cfg.layers[index];
        let upper = match up {
            Upper::Host(path) => self.disk.locate(path),
            Upper::InRoot(rel) => Place::beneath(&self.root, rel),
        };
        if upper.root.is_some() && upper.rel().as_os_str().is_empty() {
            return Err(Domain::error(ConfigError::UpperIsRoot {
                layer: layer.name.clone(),
                upper: upper.path.clone(),
            }));
        }
        let mut guards = Guards::default();
        let mut tmpfs = None;
        let (upper, work) = match self.jail.tmpfs.get(&index) {
            Some(size) => {
                let (stack, upper, work) = self.in_tmpfs(&layer.name, upper, size);
                guards.owned = stack.guards.owned.clone();
                tmpfs = Some(stack);
                (upper, work)
            }
            None => {
                guards.owned = owned_above(&upper, &self.upper_root, self.shared, self.access);
                if guards.owned.is_empty() && upper.root.is_none() {
                    guards.checked = Some(upper.path.clone());
                }
                let work = self.os.needs_work_dir().then(|| work_dir(&upper));
                (upper, work)
            }
        };
        guards
            .owned
            .extend(work.iter().map(|w| (w.clone(), self.access)));
        let union = Union {
            work,
            upper,
            options: layer.union_options.clone(),
        };
        Ok((union, guards, tmpfs))
    }

    /// The tmpfs is mounted on the upper's place (a stack of its own, guarded
    /// as the layer's is) and the upper dir is `upper` in it, with Linux's work
    /// dir `work` beside it (overlay wants both on one file system, the work dir
    /// not inside the upper): the tmpfs's stack and those two.
    fn in_tmpfs(
        &self,
        layer: &str,
        upper: Place,
        size: &Option<String>,
    ) -> (Stack, Place, Option<Place>) {
        // The tmpfs's root is jlayers' own wherever it lies.
        let mut owned = owned_above(&upper, &self.upper_root, self.shared, self.access);
        owned.push((upper.clone(), self.access));
        let stack = Stack {
            layer: layer.to_string(),
            target: upper.clone(),
            shape: Shape::UpperTmpfs(Tmpfs {
                size: size.clone(),
                access: self.access,
            }),
            guards: Guards {
                owned,
                checked: None,
            },
        };
        let work = self.os.needs_work_dir().then(|| upper.join("work"));
        (stack, upper.join("upper"), work)
    }
}

/// The dirs jlayers owns above a host upper dir, top down: upper_root (`shared`:
/// every jail's) and those below it down to the upper's parent (the jail's
/// `access`); none for an upper elsewhere (the admin's dirs, or a jail's tree).
fn owned_above(
    upper: &Place,
    upper_root: &Place,
    shared: Access,
    access: Access,
) -> Vec<(Place, Access)> {
    if upper.root.is_some() || upper_root.root.is_some() {
        return Vec::new();
    }
    let mut owned: Vec<(Place, Access)> = upper
        .path
        .ancestors()
        .skip(1)
        .take_while(|dir| dir.starts_with(&upper_root.path))
        .map(|dir| {
            let access = if dir == upper_root.path {
                shared
            } else {
                access
            };
            (Place::host(dir.to_path_buf()), access)
        })
        .collect();
    owned.reverse();
    owned
}

/// Overlay's work dir: beside the upper, on its file system, never inside it.
pub(crate) fn work_dir(upper: &Place) -> Place {
    upper.with_suffix(".work")
}

impl Stack {
    /// The mounts at this stack's target, in mount order.
    pub(crate) fn at<'t, T: MountsAt + ?Sized>(&self, table: &'t T) -> Vec<&'t Mount> {
        table.mounts_at(&self.target.path)
    }

    /// Whether this is the tmpfs stack a layer's upper dir gets (`upper_fs`).
    pub(crate) fn is_upper_tmpfs(&self) -> bool {
        matches!(self.shape, Shape::UpperTmpfs(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Os;
    use std::path::Path;

    /// A readonly layer, a union layer (default upper under upper_root), a nested
    /// shared layer, and a union layer with a tmpfs upper inside the jail root
    /// (union options default to `noatime`).
    const CONF: &str = r#"
[defaults]
upper_root = "/nonexistent-jlayers-plan/up"

[[layer]]
name = "base"
source = "/nonexistent-jlayers-plan/base"
target = "base"
mode = "readonly"

[[layer]]
name = "ports"
source = "/nonexistent-jlayers-plan/ports"
target = "usr/ports"

[[layer]]
name = "distfiles"
source = "/nonexistent-jlayers-plan/distfiles"
target = "usr/ports/distfiles"
mode = "shared"

[[layer]]
name = "obj"
source = "/nonexistent-jlayers-plan/obj"
target = "usr/obj"
upper_fs = "tmpfs"
upper_size = "1g"

[jail.j]
root = "/nonexistent-jlayers-plan/j"
upper.obj = "var/obj-upper"
"#;

    fn plan_of(os: Os) -> JailPlan {
        let cfg = Config::parse(CONF, Path::new("jlayers.conf"), os).unwrap();
        let host = crate::roots::Host::of(&cfg);
        let jail_plan = plan(&cfg, &cfg.jails[0], os, &host).unwrap();
        assert_eq!(jail_plan.jail, "j");
        assert_eq!(jail_plan.root, Path::new(ROOT));
        jail_plan
    }

    /// Every stack of the plan, in mount order.
    fn shapes_of(os: Os) -> (Vec<(String, Place, Shape)>, bool) {
        let stacks = (plan_of(os).stacks())
            .map(|s| (s.layer.clone(), s.target.clone(), s.shape.clone()))
            .collect();
        (stacks, os.needs_work_dir())
    }

    const ROOT: &str = "/nonexistent-jlayers-plan/j";

    fn host(p: &str) -> PathBuf {
        PathBuf::from(format!("/nonexistent-jlayers-plan/{p}"))
    }

    fn inside(rel: &str) -> Place {
        Place::beneath(Path::new(ROOT), Path::new(rel))
    }

    /// `check` with each platform's stacks (Linux's only on Linux) and whether
    /// it has work dirs.
    fn for_each_os(check: impl Fn(Os, &[(String, Place, Shape)], bool)) {
        for os in oses() {
            let (stacks, work) = shapes_of(os);
            check(os, &stacks, work);
        }
    }

    fn oses() -> Vec<Os> {
        let mut oses = vec![Os::FreeBsd];
        if cfg!(target_os = "linux") {
            oses.push(Os::Linux);
        }
        oses
    }

    /// Five stacks, one per layer and one for the tmpfs, in mount order.
    #[test]
    fn plan_steps_for_each_kind_of_layer() {
        for_each_os(|os, stacks, _| {
            let layers: Vec<&str> = stacks.iter().map(|s| s.0.as_str()).collect();
            assert_eq!(
                layers,
                ["base", "ports", "distfiles", "obj", "obj"],
                "{os:?}"
            );
        });
    }

    /// Four layers, each its own stack; the tmpfs is obj's alone, and unmount
    /// order is mount order reversed.
    #[test]
    fn plan_tmpfs_belongs_to_its_layer() {
        for os in oses() {
            let jail_plan = plan_of(os);
            let layers: Vec<(&str, Option<&Path>)> = (jail_plan.layers.iter())
                .map(|l| {
                    let tmpfs = l.tmpfs.as_ref().map(|t| t.target.path.as_path());
                    (l.stack.layer.as_str(), tmpfs)
                })
                .collect();
            let tmpfs_at = inside("var/obj-upper").path;
            let want = [
                ("base", None),
                ("ports", None),
                ("distfiles", None),
                ("obj", Some(tmpfs_at.as_path())),
            ];
            assert_eq!(layers, want, "{os:?}");
            let obj = &jail_plan.layers[3];
            assert!(obj.tmpfs.as_ref().is_some_and(Stack::is_upper_tmpfs));
            assert!(!obj.stack.is_upper_tmpfs());
            let order: Vec<&Path> = jail_plan.stacks().map(|s| &*s.target.path).collect();
            let mut back: Vec<&Path> = jail_plan.stacks().rev().map(|s| &*s.target.path).collect();
            back.reverse();
            assert_eq!(order, back, "{os:?}");
            let of = |s: &Stack| jail_plan.layer_of(s).map(|l| l.stack.layer.as_str());
            assert_eq!(obj.tmpfs.as_ref().and_then(of), Some("obj"));
            assert_eq!(of(&jail_plan.layers[1].stack), Some("ports"));
            // A stack of another plan is none of this one's, whatever its name.
            assert_eq!(of(&obj.stack.clone()), None);
        }
    }

    #[test]
    fn plan_readonly_layer_is_a_null_mount() {
        for_each_os(|os, stacks, _| {
            let want = (
                "base".to_string(),
                inside("base"),
                Shape::Layer {
                    null: Null {
                        source: host("base"),
                        read_only: true,
                    },
                    union: None,
                },
            );
            assert_eq!(stacks[0], want, "{os:?}");
        });
    }

    #[test]
    fn plan_union_layer_upper_under_upper_root() {
        for_each_os(|os, stacks, work| {
            let want = (
                "ports".to_string(),
                inside("usr/ports"),
                Shape::Layer {
                    null: Null {
                        source: host("ports"),
                        read_only: false,
                    },
                    union: Some(Union {
                        work: work.then(|| Place::host(host("up/j/ports.work"))),
                        upper: Place::host(host("up/j/ports")),
                        options: vec!["noatime".into()],
                    }),
                },
            );
            assert_eq!(stacks[1], want, "{os:?}");
        });
    }

    /// Nested: after its parent, a writable null mount alone.
    #[test]
    fn plan_nested_shared_layer_after_its_parent() {
        for_each_os(|os, stacks, _| {
            let want = (
                "distfiles".to_string(),
                inside("usr/ports/distfiles"),
                Shape::Layer {
                    null: Null {
                        source: host("distfiles"),
                        read_only: false,
                    },
                    union: None,
                },
            );
            assert_eq!(stacks[2], want, "{os:?}");
        });
    }

    /// The tmpfs goes on the upper's place first, in a stack of its own; upper
    /// and work dir are inside it, side by side.
    #[test]
    fn plan_tmpfs_upper_first_then_its_union() {
        for_each_os(|os, stacks, work| {
            let tmpfs_at = inside("var/obj-upper");
            let tmpfs = (
                "obj".to_string(),
                tmpfs_at.clone(),
                Shape::UpperTmpfs(Tmpfs {
                    size: Some("1g".into()),
                    access: Access::default(),
                }),
            );
            assert_eq!(stacks[3], tmpfs, "{os:?}");
            let layer = (
                "obj".to_string(),
                inside("usr/obj"),
                Shape::Layer {
                    null: Null {
                        source: host("obj"),
                        read_only: false,
                    },
                    union: Some(Union {
                        work: work.then(|| tmpfs_at.join("work")),
                        upper: tmpfs_at.join("upper"),
                        options: vec!["noatime".into()],
                    }),
                },
            );
            assert_eq!(stacks[4], layer, "{os:?}");
        });
    }

    #[test]
    fn work_dir_is_a_sibling() {
        let work = work_dir(&Place::beneath(Path::new("/j"), Path::new("a/up")));
        assert_eq!(
            work,
            Place::beneath(Path::new("/j"), Path::new("a/up.work"))
        );
    }
}
