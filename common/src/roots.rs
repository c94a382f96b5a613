//! The jail roots of a configuration as found on disk: where an upper dir written
//! as a host path really lies, and whether two jails share a root.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, open};
use nix::sys::stat::{Mode, SFlag, fstatat};

use crate::config::Config;
use crate::plan::OnDisk;
use crate::target::Place;

/// What a run found of the configuration on disk, looked up once: the jails'
/// roots and the layers' sources, canonical (the mount table shows real paths).
#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) roots: Roots,
    sources: Vec<PathBuf>,
}

impl Host {
    pub(crate) fn of(cfg: &Config) -> Host {
        Host {
            roots: Roots::of(cfg.jails.iter().map(|j| j.root.as_path())),
            sources: cfg.layers.iter().map(|l| real(&l.source)).collect(),
        }
    }
}

impl OnDisk for Host {
    fn real_root(&self, written: &Path) -> PathBuf {
        self.roots.real(written)
    }

    fn locate(&self, path: &Path) -> Place {
        self.roots.locate(path)
    }

    fn real_source(&self, layer: usize) -> &Path {
        &self.sources[layer]
    }
}

/// Paths that exist are made canonical (the mount table shows real paths); the jail
/// root and sources are host-controlled, so following their links is the admin's intent.
pub(crate) fn real(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Every jail root of the file, canonical, with its device and inode: an upper dir
/// that lies in any of them is reached only beneath that root. Indexed by path and
/// by identity, so that a lookup costs the same with ten jails or ten thousand
/// (paths, all normal, by their bytes: hashing a `Path` parses its components).
#[derive(Debug, Default)]
pub(crate) struct Roots {
    roots: Vec<(PathBuf, Option<(u64, u64)>)>,
    by_path: HashMap<OsString, usize>,
    /// Each identity's first jail in file order, and the next one with it.
    by_id: HashMap<(u64, u64), (usize, Option<usize>)>,
    /// Each root as the file writes it.
    written: HashMap<OsString, usize>,
    /// Host paths looked at by [`Roots::locate`].
    looked: std::sync::Mutex<HashMap<OsString, Look>>,
}

impl Clone for Roots {
    /// A copy looks at the host afresh.
    fn clone(&self) -> Roots {
        Roots {
            roots: self.roots.clone(),
            by_path: self.by_path.clone(),
            by_id: self.by_id.clone(),
            written: self.written.clone(),
            looked: Default::default(),
        }
    }
}

/// A host path as [`Roots::locate`] found it.
#[derive(Clone, Debug)]
enum Look {
    Dir((u64, u64)),
    Link(PathBuf),
    /// Missing, or neither a directory nor a link.
    Other,
}

impl Roots {
    /// The roots of the file's jails, in file order.
    pub(crate) fn of<'a>(roots: impl Iterator<Item = &'a Path>) -> Roots {
        // Jail roots mostly share their parent directory: each parent is made
        // canonical once, and a root that is a plain directory in it costs one
        // lstat(2) (which gives its identity too).
        // The parent is opened once too: each lstat then looks up one name.
        let mut parents: HashMap<&Path, (PathBuf, Option<OwnedFd>)> = HashMap::new();
        let mut written = Vec::new();
        let found = roots
            .map(|root| {
                written.push(root.to_path_buf());
                let plain = root.parent().zip(root.file_name()).and_then(|(dir, name)| {
                    let (real_dir, fd) = parents.entry(dir).or_insert_with(|| {
                        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
                        (real(dir), open(dir, flags, Mode::empty()).ok())
                    });
                    let st = fstatat(fd.as_ref()?, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
                    let id = (st.st_dev, st.st_ino);
                    let is_dir =
                        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
                    is_dir.then(|| (real_dir.join(name), Some(id)))
                });
                plain.unwrap_or_else(|| {
                    let real_root = real(root);
                    let id = std::fs::metadata(&real_root)
                        .ok()
                        .map(|m| (m.dev(), m.ino()));
                    (real_root, id)
                })
            })
            .collect();
        let mut roots = Roots::new(found);
        roots.written = written
            .into_iter()
            .enumerate()
            .map(|(i, w)| (w.into_os_string(), i))
            .collect();
        roots
    }

    /// A jail's root (as the file writes it) made canonical.
    pub(crate) fn real(&self, written: &Path) -> PathBuf {
        match self.written.get(written.as_os_str()) {
            Some(&index) => self.roots[index].0.clone(),
            None => real(written),
        }
    }

    fn new(roots: Vec<(PathBuf, Option<(u64, u64)>)>) -> Roots {
        let mut by_path = HashMap::with_capacity(roots.len());
        let mut by_id: HashMap<(u64, u64), (usize, Option<usize>)> =
            HashMap::with_capacity(roots.len());
        for (index, (root, id)) in roots.iter().enumerate() {
            by_path
                .entry(root.clone().into_os_string())
                .or_insert(index);
            if let Some(id) = id {
                let (first, next) = by_id.entry(*id).or_insert((index, None));
                if *first != index && next.is_none() {
                    *next = Some(index);
                }
            }
        }
        Roots {
            roots,
            by_path,
            by_id,
            written: HashMap::new(),
            looked: Default::default(),
        }
    }

    /// The deepest root that `path` is or lies in: the nearest of its ancestors.
    #[cfg(test)]
    fn containing(&self, path: &Path) -> Option<&Path> {
        path.ancestors()
            .find_map(|a| self.by_path.get(a.as_os_str()))
            .map(|&i| self.roots[i].0.as_path())
    }

    fn same_dir(&self, id: (u64, u64)) -> Option<&Path> {
        self.by_id.get(&id).map(|&(i, _)| self.roots[i].0.as_path())
    }

    /// What a host path is, by lstat(2) (and readlink(2) for a link): once a run,
    /// as the uppers of many jails share their first components. Only paths
    /// outside every jail root are looked at, and those are the host's.
    fn look(&self, path: &Path) -> Look {
        let mut seen = self.looked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(look) = seen.get(path.as_os_str()) {
            return look.clone();
        }
        let look = match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_symlink() => {
                std::fs::read_link(path).map_or(Look::Other, Look::Link)
            }
            Ok(meta) if meta.is_dir() => Look::Dir((meta.dev(), meta.ino())),
            _ => Look::Other,
        };
        seen.insert(path.as_os_str().to_owned(), look.clone());
        look
    }

    /// Two jails whose roots are the same directory (however written: through a
    /// host link, say), by index: their stacks would land on one target. The
    /// first jail in file order that shares its root, and the next one with it.
    pub(crate) fn shared(&self) -> Option<(usize, usize)> {
        self.by_id
            .values()
            .filter_map(|&(first, next)| Some((first, next?)))
            .min()
    }

    /// Where an upper dir written as a host path really lies. Components are
    /// resolved one by one, host links followed, until the walk enters a jail root
    /// (by path, or as the same directory reached another way): from there on the
    /// jail owns every component, so the rest is kept as a path beneath that root.
    pub(crate) fn locate(&self, path: &Path) -> Place {
        let mut rest: Vec<OsString> = components(path);
        rest.reverse();
        let mut here = PathBuf::from("/");
        let slash = self.by_path.get(here.as_os_str());
        let mut links = 0;
        while let Some(component) = rest.pop() {
            if component == ".." {
                here.pop();
                continue;
            }
            let next = here.join(&component);
            let look = self.look(&next);
            // `here` and its ancestors below `/` were looked up already (the walk
            // only goes down, up to one of them, or back to `/`) and none is a
            // root: the deepest root holding `next` is `next` itself, or `/`.
            let by_path = self
                .by_path
                .get(next.as_os_str())
                .or(slash)
                .map(|&i| self.roots[i].0.clone());
            let root = by_path.or_else(|| {
                let Look::Dir(id) = look else { return None };
                self.same_dir(id).map(Path::to_path_buf)
            });
            if let Some(root) = root {
                let mut rel = next
                    .strip_prefix(&root)
                    .unwrap_or(Path::new(""))
                    .to_path_buf();
                rel.extend(rest.iter().rev());
                return Place::beneath(&root, &rel);
            }
            match look {
                Look::Link(target) if links < 40 => {
                    links += 1;
                    if target.is_absolute() {
                        here = PathBuf::from("/");
                    }
                    let mut link_rest = components(&target);
                    link_rest.reverse();
                    rest.extend(link_rest);
                }
                _ => here = next,
            }
        }
        Place::host(here)
    }
}

/// The names and `..`s of `path`, in order (a root or `.` says nothing).
fn components(path: &Path) -> Vec<OsString> {
    path.components()
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

    /// The first jail in file order that shares its root, with the next one.
    #[test]
    fn shared_roots_named_in_file_order() {
        let root = |id: u64| (PathBuf::from(format!("/j/{id}")), Some((1, id)));
        let roots = Roots::new(vec![
            root(1),
            root(2),
            root(2),
            root(1),
            (PathBuf::from("/x"), None),
        ]);
        assert_eq!(roots.shared(), Some((0, 3)));
        assert_eq!(Roots::new(vec![root(1), root(2), root(3)]).shared(), None);
        let deep = Roots::new(vec![root(1), (PathBuf::from("/j/1/sub"), Some((1, 9)))]);
        assert_eq!(
            deep.containing(Path::new("/j/1/sub/x")),
            Some(Path::new("/j/1/sub"))
        );
        assert_eq!(
            deep.containing(Path::new("/j/1/su")),
            Some(Path::new("/j/1"))
        );
        assert_eq!(deep.containing(Path::new("/j/10")), None);
    }

    #[test]
    fn uppers_in_a_jail_root_are_beneath_it() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("jails/j1/usr/tmp")).unwrap();
        std::fs::create_dir_all(base.join("host")).unwrap();
        std::os::unix::fs::symlink(base.join("jails"), base.join("alias")).unwrap();
        std::os::unix::fs::symlink("../jails/j1/usr", base.join("host/rel")).unwrap();
        let roots = Roots::new(vec![(base.join("jails/j1"), None)]);
        let want = Place::beneath(&base.join("jails/j1"), Path::new("usr/tmp/foo"));
        // Written under the root, through a host link to it, through a relative one.
        assert_eq!(roots.locate(&base.join("jails/j1/usr/tmp/foo")), want);
        assert_eq!(roots.locate(&base.join("alias/j1/usr/tmp/foo")), want);
        assert_eq!(roots.locate(&base.join("host/rel/tmp/foo")), want);
        // A jail link below the root is never followed by the host.
        std::os::unix::fs::symlink("/etc", base.join("jails/j1/usr/tmp/evil")).unwrap();
        assert_eq!(
            roots.locate(&base.join("jails/j1/usr/tmp/evil/x")).root,
            Some(base.join("jails/j1"))
        );
        let host = roots.locate(&base.join("host/up"));
        assert_eq!((host.path, host.root), (base.join("host/up"), None));
    }
}
