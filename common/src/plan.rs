//! The plan: each layer of a jail as a stack of mount steps on one target, its
//! [`Shape`] (the mounts, bottom first), each mount a [`Step`] a backend performs.
//!
//! jmount applies a stack bottom-up, junmount removes it top-down, `-n` prints it.
//! Both platforms perform the same steps; only how a step is done differs.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::config::{Config, Jail, Mode, Upper};
use crate::exit::{ExitCode, fail};
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
    pub(crate) stacks: Vec<Stack>,
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
    let access = Access {
        gid: jail.upper_group,
    };
    let upper_root = disk.locate(&cfg.upper_root);
    let shared = Access {
        gid: cfg.upper_group,
    };
    let mut stacks = Vec::new();
    for &index in &jail.layers {
        let layer = &cfg.layers[index];
        let null = Null {
            source: disk.real_source(index).to_path_buf(),
            read_only: layer.mode == Mode::Readonly,
        };
        let mut union = None;
        let mut guards = Guards::default();
        if let Some(up) = jail.uppers.get(&index) {
            let upper = match up {
                Upper::Host(path) => disk.locate(path),
                Upper::InRoot(rel) => Place::beneath(&root, rel),
            };
            if upper.root.is_some() && upper.rel().as_os_str().is_empty() {
                return Err(fail(
                    ExitCode::Config,
                    format!(
                        "{}: upper dir {} is a jail root",
                        layer.name,
                        upper.path.display()
                    ),
                ));
            }
            let (upper, work) = match jail.tmpfs.get(&index) {
                // The tmpfs is mounted on the upper's place and the upper dir is
                // `upper` in it, with Linux's work dir `work` beside it (overlay
                // wants both on one file system, the work dir not inside the upper).
                Some(size) => {
                    // The tmpfs's root is jlayers' own wherever it lies.
                    let mut owned = owned_above(&upper, &upper_root, shared, access);
                    owned.push((upper.clone(), access));
                    stacks.push(Stack {
                        layer: layer.name.clone(),
                        target: upper.clone(),
                        shape: Shape::UpperTmpfs(Tmpfs {
                            size: size.clone(),
                            access,
                        }),
                        guards: Guards {
                            owned: owned.clone(),
                            checked: None,
                        },
                    });
                    guards.owned = owned;
                    let work = os.needs_work_dir().then(|| upper.join("work"));
                    (upper.join("upper"), work)
                }
                None => {
                    guards.owned = owned_above(&upper, &upper_root, shared, access);
                    if guards.owned.is_empty() && upper.root.is_none() {
                        guards.checked = Some(upper.path.clone());
                    }
                    let work = os.needs_work_dir().then(|| work_dir(&upper));
                    (upper, work)
                }
            };
            guards
                .owned
                .extend(work.iter().map(|w| (w.clone(), access)));
            union = Some(Union {
                work,
                upper,
                options: layer.union_options.clone(),
            });
        }
        stacks.push(Stack {
            layer: layer.name.clone(),
            target: Place::beneath(&root, &layer.target),
            shape: Shape::Layer { null, union },
            guards,
        });
    }
    Ok(JailPlan {
        jail: jail.name.clone(),
        root,
        stacks,
    })
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

    fn shapes_of(os: Os) -> (Vec<(String, Place, Shape)>, bool) {
        let cfg = Config::parse(CONF, Path::new("jlayers.conf"), os).unwrap();
        let host = crate::roots::Host::of(&cfg);
        let jail_plan = plan(&cfg, &cfg.jails[0], os, &host).unwrap();
        assert_eq!(jail_plan.jail, "j");
        assert_eq!(jail_plan.root, Path::new("/nonexistent-jlayers-plan/j"));
        let stacks = jail_plan
            .stacks
            .into_iter()
            .map(|s| (s.layer, s.target, s.shape))
            .collect();
        (stacks, os.needs_work_dir())
    }

    #[test]
    fn plan_steps_for_each_kind_of_layer() {
        let mut oses = vec![Os::FreeBsd];
        if cfg!(target_os = "linux") {
            oses.push(Os::Linux);
        }
        let root = Path::new("/nonexistent-jlayers-plan/j");
        let host = |p: &str| PathBuf::from(format!("/nonexistent-jlayers-plan/{p}"));
        let inside = |rel: &str| Place::beneath(root, Path::new(rel));
        for os in oses {
            let (stacks, work) = shapes_of(os);
            let union_up = Place::host(host("up/j/ports"));
            let tmpfs_at = inside("var/obj-upper");
            let want = vec![
                (
                    "base".to_string(),
                    inside("base"),
                    Shape::Layer {
                        null: Null {
                            source: host("base"),
                            read_only: true,
                        },
                        union: None,
                    },
                ),
                (
                    "ports".into(),
                    inside("usr/ports"),
                    Shape::Layer {
                        null: Null {
                            source: host("ports"),
                            read_only: false,
                        },
                        union: Some(Union {
                            work: work.then(|| Place::host(host("up/j/ports.work"))),
                            upper: union_up,
                            options: vec!["noatime".into()],
                        }),
                    },
                ),
                // Nested: after its parent, a writable null mount alone.
                (
                    "distfiles".into(),
                    inside("usr/ports/distfiles"),
                    Shape::Layer {
                        null: Null {
                            source: host("distfiles"),
                            read_only: false,
                        },
                        union: None,
                    },
                ),
                // The tmpfs goes on the upper's place first, in a stack of its own;
                // upper and work dir are inside it, side by side.
                (
                    "obj".into(),
                    tmpfs_at.clone(),
                    Shape::UpperTmpfs(Tmpfs {
                        size: Some("1g".into()),
                        access: Access::default(),
                    }),
                ),
                (
                    "obj".into(),
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
                ),
            ];
            assert_eq!(stacks, want, "{os:?}");
        }
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
