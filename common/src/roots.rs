//! The jail roots of a configuration as found on disk: where an upper dir written
//! as a host path really lies, and whether two jails share a root.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::target::Place;

/// Paths that exist are made canonical (the mount table shows real paths); the jail
/// root and sources are host-controlled, so following their links is the admin's intent.
pub(crate) fn real(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Every jail root of the file, canonical, with its device and inode: an upper dir
/// that lies in any of them is reached only beneath that root.
#[derive(Clone, Debug, Default)]
pub struct Roots(Vec<(PathBuf, Option<(u64, u64)>)>);

impl Roots {
    /// The roots of the file's jails, in file order.
    pub fn of<'a>(roots: impl Iterator<Item = &'a Path>) -> Roots {
        Roots(
            roots
                .map(|root| {
                    let r = real(root);
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

#[cfg(test)]
mod tests {
    use super::*;

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
