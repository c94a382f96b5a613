//! The plan: each layer of a jail as a stack of mount steps on one target.
//!
//! jmount applies a stack bottom-up, junmount removes it top-down, `-n` prints it.
//! Both platforms perform the same steps; only how a step is done differs.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use anyhow::Result;

use crate::config::{Config, Jail, Mode, Upper};
use crate::exit::{ExitCode, fail};
use crate::mounts::Mount;
use crate::platform::Platform;
use crate::target::Place;

/// One mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// nullfs (FreeBSD) / bind mount (Linux) of a host directory on the target.
    Null { source: PathBuf, read_only: bool },
    /// unionfs (FreeBSD) / overlay (Linux) of the upper dir over what the target shows.
    Union {
        upper: Place,
        /// Linux's overlay work dir, a sibling of `upper`; `None` on FreeBSD.
        work: Option<Place>,
        options: Vec<String>,
    },
    /// A tmpfs of its own for a union layer's upper (and, on Linux, work) dir,
    /// mounted on the upper's place before the layer's stack; `size` as tmpfs takes
    /// it (`4g`), `None` for the kernel's default.
    Tmpfs { size: Option<String> },
}

/// One layer's stack on one jail's target.
#[derive(Clone, Debug)]
pub struct Stack {
    pub layer: String,
    /// Beneath the jail root.
    pub target: Place,
    /// Bottom first.
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug)]
pub struct JailPlan {
    pub jail: String,
    pub root: PathBuf,
    /// In mount order: parents before nested layers.
    pub stacks: Vec<Stack>,
}

/// What the mount table shows at a stack's target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// The first `n` steps are mounted, in order, on top of whatever else is there.
    Mounted(usize),
    /// The top mount is not part of this stack as planned; `ours` tells whether
    /// mounts of the plan are at the target all the same (out of order, or below it).
    Foreign { top: Mount, ours: bool },
}

/// Paths that exist are made canonical (the mount table shows real paths); the jail
/// root and sources are host-controlled, so following their links is the admin's intent.
fn real(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Every jail root of the file, canonical, with its device and inode: an upper dir
/// that lies in any of them is reached only beneath that root.
#[derive(Clone, Debug, Default)]
pub struct Roots(Vec<(PathBuf, Option<(u64, u64)>)>);

impl Roots {
    pub fn of(cfg: &Config) -> Roots {
        Roots(
            cfg.jails
                .iter()
                .map(|j| {
                    let r = real(&j.root);
                    let id = std::fs::metadata(&r).ok().map(|m| (m.dev(), m.ino()));
                    (r, id)
                })
                .collect(),
        )
    }

    fn containing(&self, p: &Path) -> Option<&Path> {
        self.0
            .iter()
            .map(|(r, _)| r.as_path())
            .filter(|r| p.starts_with(r))
            .max_by_key(|r| r.as_os_str().len())
    }

    fn same_dir(&self, m: &std::fs::Metadata) -> Option<&Path> {
        self.0
            .iter()
            .find(|(_, id)| *id == Some((m.dev(), m.ino())))
            .map(|(r, _)| r.as_path())
    }

    /// Two jails whose roots are the same directory (however written: through a
    /// host link, say), by index: their stacks would land on one target.
    pub fn shared(&self) -> Option<(usize, usize)> {
        for (i, (_, a)) in self.0.iter().enumerate() {
            if let Some(j) = self.0[i + 1..]
                .iter()
                .position(|(_, b)| a.is_some() && a == b)
            {
                return Some((i, i + 1 + j));
            }
        }
        None
    }

    /// Where an upper dir written as a host path really lies. Components are
    /// resolved one by one, host links followed, until the walk enters a jail root
    /// (by path, or as the same directory reached another way): from there on the
    /// jail owns every component, so the rest is kept as a path beneath that root.
    pub fn locate(&self, path: &Path) -> Place {
        let mut rest: Vec<OsString> = comps(path);
        rest.reverse();
        let mut here = PathBuf::from("/");
        let mut links = 0;
        while let Some(c) = rest.pop() {
            if c == ".." {
                here.pop();
                continue;
            }
            let next = here.join(&c);
            let root = self.containing(&next).map(Path::to_path_buf).or_else(|| {
                let m = std::fs::metadata(&next).ok()?;
                self.same_dir(&m).map(Path::to_path_buf)
            });
            if let Some(root) = root {
                let mut rel = next
                    .strip_prefix(&root)
                    .unwrap_or(Path::new(""))
                    .to_path_buf();
                rel.extend(rest.iter().rev());
                return Place::beneath(&root, &rel);
            }
            match std::fs::read_link(&next) {
                Ok(target) if links < 40 => {
                    links += 1;
                    if target.is_absolute() {
                        here = PathBuf::from("/");
                    }
                    let mut t = comps(&target);
                    t.reverse();
                    rest.extend(t);
                }
                _ => here = next,
            }
        }
        Place::host(here)
    }
}

fn comps(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// The plan for one jail.
pub fn plan(cfg: &Config, jail: &Jail, platform: &dyn Platform) -> Result<JailPlan> {
    let root = real(&jail.root);
    let mut stacks = Vec::new();
    for &i in &jail.layers {
        let layer = &cfg.layers[i];
        let mut steps = vec![Step::Null {
            source: real(&layer.source),
            read_only: layer.mode == Mode::Readonly,
        }];
        if let Some(up) = jail.uppers.get(&i) {
            let upper = match up {
                Upper::Host(p) => cfg.roots().locate(p),
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
            let (upper, work) = match jail.tmpfs.get(&i) {
                // The tmpfs is mounted on the upper's place and the upper dir is
                // `upper` in it, with Linux's work dir `work` beside it (overlay
                // wants both on one file system, the work dir not inside the upper).
                Some(size) => {
                    stacks.push(Stack {
                        layer: layer.name.clone(),
                        target: upper.clone(),
                        steps: vec![Step::Tmpfs { size: size.clone() }],
                    });
                    let work = platform.needs_work_dir().then(|| upper.join("work"));
                    (upper.join("upper"), work)
                }
                None => {
                    let work = platform.needs_work_dir().then(|| work_dir(&upper));
                    (upper, work)
                }
            };
            steps.push(Step::Union {
                work,
                upper,
                options: layer.union_options.clone(),
            });
        }
        stacks.push(Stack {
            layer: layer.name.clone(),
            target: Place::beneath(&root, &layer.target),
            steps,
        });
    }
    Ok(JailPlan {
        jail: jail.name.clone(),
        root,
        stacks,
    })
}

/// Overlay's work dir: beside the upper, on its file system, never inside it.
pub fn work_dir(upper: &Place) -> Place {
    upper.with_suffix(".work")
}

impl Stack {
    /// Read this stack's state from the table: the plan's steps must sit on top of
    /// the target's mounts as a consistent prefix, bottom step first.
    /// The mounts at this stack's target, in mount order.
    pub fn at<'t>(&self, table: &'t [Mount]) -> Vec<&'t Mount> {
        table
            .iter()
            .filter(|m| m.target == self.target.path)
            .collect()
    }

    pub fn state(&self, table: &[Mount], platform: &dyn Platform) -> State {
        let at = self.at(table);
        for n in (1..=self.steps.len().min(at.len())).rev() {
            let top = &at[at.len() - n..];
            if self.steps[..n]
                .iter()
                .zip(top)
                .all(|(s, m)| platform.matches(s, m))
            {
                return State::Mounted(n);
            }
        }
        match at.last() {
            None => State::Mounted(0),
            Some(top) => State::Foreign {
                top: (*top).clone(),
                ours: at
                    .iter()
                    .any(|m| self.steps.iter().any(|s| platform.matches(s, m))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_dir_is_a_sibling() {
        let w = work_dir(&Place::beneath(Path::new("/j"), Path::new("a/up")));
        assert_eq!(w, Place::beneath(Path::new("/j"), Path::new("a/up.work")));
    }

    #[test]
    fn uppers_in_a_jail_root_are_beneath_it() {
        let t = tempfile::tempdir().unwrap();
        let t = t.path().canonicalize().unwrap();
        std::fs::create_dir_all(t.join("jails/j1/usr/tmp")).unwrap();
        std::fs::create_dir_all(t.join("host")).unwrap();
        std::os::unix::fs::symlink(t.join("jails"), t.join("alias")).unwrap();
        std::os::unix::fs::symlink("../jails/j1/usr", t.join("host/rel")).unwrap();
        let roots = Roots(vec![(t.join("jails/j1"), None)]);
        let want = Place::beneath(&t.join("jails/j1"), Path::new("usr/tmp/foo"));
        // Written under the root, through a host link to it, through a relative one.
        assert_eq!(roots.locate(&t.join("jails/j1/usr/tmp/foo")), want);
        assert_eq!(roots.locate(&t.join("alias/j1/usr/tmp/foo")), want);
        assert_eq!(roots.locate(&t.join("host/rel/tmp/foo")), want);
        // A jail link below the root is never followed by the host.
        std::os::unix::fs::symlink("/etc", t.join("jails/j1/usr/tmp/evil")).unwrap();
        assert_eq!(
            roots.locate(&t.join("jails/j1/usr/tmp/evil/x")).root,
            Some(t.join("jails/j1"))
        );
        let host = roots.locate(&t.join("host/up"));
        assert_eq!((host.path, host.root), (t.join("host/up"), None));
    }
}
