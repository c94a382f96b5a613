//! The plan: each layer of a jail as a stack of mount steps on one target.
//!
//! jmount applies a stack bottom-up, junmount removes it top-down, `-n` prints it.
//! Both platforms perform the same steps; only how a step is done differs.

use std::path::{Path, PathBuf};

use crate::config::{Config, Jail, Mode, Upper};
use crate::mounts::Mount;
use crate::platform::Platform;

/// One mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// nullfs (FreeBSD) / bind mount (Linux) of a host directory on the target.
    Null { source: PathBuf, read_only: bool },
    /// unionfs (FreeBSD) / overlay (Linux) of the upper dir over what the target shows.
    Union {
        upper: PathBuf,
        /// Linux's overlay work dir, a sibling of `upper`; `None` on FreeBSD.
        work: Option<PathBuf>,
        options: Vec<String>,
    },
}

/// One layer's stack on one jail's target.
#[derive(Clone, Debug)]
pub struct Stack {
    pub layer: String,
    pub mode: Mode,
    /// Relative to the jail root.
    pub target_rel: PathBuf,
    /// `root/target_rel`.
    pub target: PathBuf,
    /// The union layer's upper dir, as configured.
    pub upper: Option<Upper>,
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

/// The plan for one jail.
pub fn plan(cfg: &Config, jail: &Jail, platform: &dyn Platform) -> JailPlan {
    let root = real(&jail.root);
    let stacks = jail
        .layers
        .iter()
        .map(|&i| {
            let layer = &cfg.layers[i];
            let target = root.join(&layer.target);
            let source = real(&layer.source);
            let upper = jail.uppers.get(&i).cloned();
            let mut steps = vec![Step::Null {
                source,
                read_only: layer.mode == Mode::Readonly,
            }];
            if let Some(up) = &upper {
                let upath = match up {
                    Upper::Host(p) => real(p),
                    Upper::InRoot(rel) => root.join(rel),
                };
                steps.push(Step::Union {
                    work: platform.needs_work_dir().then(|| work_dir(&upath)),
                    upper: upath,
                    options: layer.union_options.clone(),
                });
            }
            Stack {
                layer: layer.name.clone(),
                mode: layer.mode,
                target_rel: layer.target.clone(),
                target,
                upper,
                steps,
            }
        })
        .collect();
    JailPlan {
        jail: jail.name.clone(),
        root,
        stacks,
    }
}

/// Overlay's work dir: beside the upper, on its file system, never inside it.
pub fn work_dir(upper: &Path) -> PathBuf {
    let mut name = upper.file_name().unwrap_or_default().to_os_string();
    name.push(".work");
    upper.with_file_name(name)
}

impl Stack {
    /// Read this stack's state from the table: the plan's steps must sit on top of
    /// the target's mounts as a consistent prefix, bottom step first.
    pub fn state(&self, table: &[Mount], platform: &dyn Platform) -> State {
        let at: Vec<&Mount> = table.iter().filter(|m| m.target == self.target).collect();
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
        assert_eq!(work_dir(Path::new("/a/b/up")), Path::new("/a/b/up.work"));
    }
}
