//! The mount table as jlayers sees it: one model, and beside it the readers that
//! fill it from a system's own table ([`mountinfo`] for Linux's, which the FreeBSD
//! backend's simulation reads too).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(target_os = "linux")]
pub mod mountinfo;

/// One line of the mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// What was mounted: the device column of `mount -p`; the source field of mountinfo.
    pub source: OsString,
    /// Where: the mount point.
    pub target: PathBuf,
    pub fstype: String,
    /// Per-mount options (`rw`/`ro`, `noatime`, ...).
    pub options: Vec<String>,
    /// What only Linux's mountinfo tells; `None` from FreeBSD's `mount -p`.
    pub linux: Option<LinuxInfo>,
}

/// The Linux backend's own fields of a mountinfo line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxInfo {
    /// The mount id (mountinfo's first field, statx's `stx_mnt_id`).
    pub id: u64,
    /// The device number (`major:minor`) of the mounted file system.
    pub dev: (u32, u32),
    /// The directory of the file system that is mounted here (bind mounts).
    pub root: PathBuf,
    /// File system options (overlay's `upperdir=` lives here), unescaped.
    pub(crate) fs_options: Vec<OsString>,
}

impl LinuxInfo {
    /// The value of a `key=value` file system option.
    #[cfg(target_os = "linux")]
    pub(crate) fn fs_option(&self, key: &str) -> Option<&std::ffi::OsStr> {
        self.fs_options.iter().find_map(|option| {
            let bytes = option.as_encoded_bytes();
            let rest = bytes.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
            // SAFETY: split right after an ASCII '=' of a valid OsStr.
            Some(unsafe { std::ffi::OsStr::from_encoded_bytes_unchecked(rest) })
        })
    }
}

impl Mount {
    pub(crate) fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    /// The Linux mount id, if the table gave one.
    #[cfg(target_os = "linux")]
    pub(crate) fn linux_id(&self) -> Option<u64> {
        self.linux.as_ref().map(|l| l.id)
    }

    /// A one-word description for messages: `TYPE from SOURCE`.
    pub(crate) fn describe(&self) -> String {
        format!("{} from {}", self.fstype, self.source.to_string_lossy())
    }
}

/// Finding the mounts at one mount point: by a scan of a plain list, or through
/// the index of a [`Table`].
pub(crate) trait MountsAt {
    /// The mounts at `target`, in mount order.
    fn mounts_at(&self, target: &Path) -> Vec<&Mount>;
}

impl MountsAt for [Mount] {
    fn mounts_at(&self, target: &Path) -> Vec<&Mount> {
        self.iter().filter(|m| m.target == target).collect()
    }
}

/// Where each mount point's lines are in a table, and each source's (a union's
/// source is its upper dir), in mount order: each a list of (hash of the path's
/// bytes, line), sorted, so that a path's lines are a run of equal hashes (a
/// binary search; the lines themselves are compared, for a collision). No path
/// is copied: 16 bytes a line, whatever the paths.
#[derive(Debug, Default)]
pub(crate) struct Index {
    hasher: std::hash::RandomState,
    at: Vec<(u64, usize)>,
    by_source: Vec<(u64, usize)>,
    /// The lines by mount point's bytes, for what lies below a dir: sorted the
    /// first time it is asked (jclean), not by every run that indexes.
    by_point: std::sync::OnceLock<Vec<usize>>,
}

impl Index {
    fn key(&self, path: &std::ffi::OsStr) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, path.as_encoded_bytes())
    }

    /// The lines `keys` holds under `path`'s hash, in mount order.
    fn lines<'i>(&self, keys: &'i [(u64, usize)], path: &std::ffi::OsStr) -> &'i [(u64, usize)] {
        let key = self.key(path);
        let from = keys.partition_point(|&(k, _)| k < key);
        let to = from + keys[from..].partition_point(|&(k, _)| k == key);
        &keys[from..to]
    }
}

/// Index a table by mount point and by source.
pub(crate) fn index(lines: &[Mount]) -> Index {
    let mut index = Index::default();
    let at = lines.iter().enumerate();
    index.at = at
        .map(|(line, m)| (index.key(m.target.as_os_str()), line))
        .collect();
    let from = lines.iter().enumerate();
    index.by_source = from.map(|(line, m)| (index.key(&m.source), line)).collect();
    // By hash, then line: a path's lines stay in mount order.
    index.at.sort_unstable();
    index.by_source.sort_unstable();
    index
}

/// The mount table as a run sees it: the system's lines, indexed by mount point
/// (built once per table read, shared by every jail of the run), and the lines
/// a dry run printed as if made (`extra`, after the system's in mount order).
#[derive(Clone, Debug, Default)]
pub(crate) struct Table {
    lines: Arc<Vec<Mount>>,
    index: Arc<Index>,
    extra: Vec<Mount>,
    /// Mount points this run has mounted on: what was below them is hidden.
    hidden: Vec<PathBuf>,
}

impl Table {
    /// `index` must be [`index`] of `lines`.
    pub(crate) fn new(lines: Arc<Vec<Mount>>, index: Arc<Index>, extra: Vec<Mount>) -> Table {
        Table {
            lines,
            index,
            extra,
            hidden: Vec::new(),
        }
    }

    /// The system's lines, in mount order.
    pub(crate) fn lines(&self) -> &[Mount] {
        &self.lines
    }

    /// The system's mounts of `source` (a union's is its upper dir), in mount
    /// order, wherever they are.
    pub(crate) fn of_source(&self, source: &std::ffi::OsStr) -> impl Iterator<Item = &Mount> {
        let lines = self.index.lines(&self.index.by_source, source).iter();
        (lines.map(|&(_, line)| &self.lines[line])).filter(move |m| m.source == source)
    }

    /// The system's mounts strictly below `dir`, in mount order: a binary
    /// search in the lines sorted by mount point, not a scan of the table.
    pub(crate) fn below(&self, dir: &Path) -> Vec<&Mount> {
        let point = |line: &usize| self.lines[*line].target.as_os_str().as_encoded_bytes();
        let sorted = self.index.by_point.get_or_init(|| {
            let mut sorted: Vec<usize> = (0..self.lines.len()).collect();
            sorted.sort_by(|a, b| point(a).cmp(point(b)));
            sorted
        });
        let mut prefix = dir.as_os_str().as_encoded_bytes().to_vec();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        let from = sorted.partition_point(|line| point(line) < prefix.as_slice());
        let mut found: Vec<usize> = sorted[from..]
            .iter()
            .take_while(|line| point(line).starts_with(&prefix))
            .filter(|line| point(line).len() > prefix.len())
            .copied()
            .collect();
        found.sort_unstable();
        found.into_iter().map(|line| &self.lines[line]).collect()
    }

    /// Hide everything at or below `target` (the run mounted on it).
    pub(crate) fn hide(&mut self, target: &Path) {
        self.hidden.push(target.to_path_buf());
    }
}

impl MountsAt for Table {
    fn mounts_at(&self, target: &Path) -> Vec<&Mount> {
        if self.hidden.iter().any(|h| at_or_below(target, h)) {
            return Vec::new();
        }
        let key = target.as_os_str();
        let system = self.index.lines(&self.index.at, key).iter();
        (system.map(|&(_, line)| &self.lines[line]))
            .filter(|m| m.target.as_os_str() == key)
            .chain(self.extra.iter().filter(|m| m.target.as_os_str() == key))
            .collect()
    }
}

/// `path` is `dir` or lies below it, for normal paths (no `.`, `..`, `//` or
/// trailing slash): [`Path::starts_with`] on their bytes, without parsing
/// components.
pub(crate) fn at_or_below(path: &Path, dir: &Path) -> bool {
    let (path, dir) = (
        path.as_os_str().as_encoded_bytes(),
        dir.as_os_str().as_encoded_bytes(),
    );
    path.starts_with(dir)
        && (path.len() == dir.len() || dir.ends_with(b"/") || path[dir.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `below` finds what a scan finds, in mount order, but neither the dir
    /// itself nor a sibling that shares its name's start.
    #[test]
    fn below_as_a_scan_finds_it() {
        let lines: Vec<Mount> = [
            "/u/j/a/x",
            "/u/j/ab",
            "/u/j/a",
            "/u/j/a/x/y",
            "/v",
            "/u/j/a/b",
        ]
        .iter()
        .map(|t| Mount {
            source: "s".into(),
            target: t.into(),
            fstype: "tmpfs".into(),
            options: Vec::new(),
            linux: None,
        })
        .collect();
        let idx = Arc::new(index(&lines));
        let table = Table::new(Arc::new(lines.clone()), idx, Vec::new());
        for dir in ["/u/j/a", "/u/j/a/", "/u", "/", "/w", "/u/j/a/x/y"] {
            let scan: Vec<&Mount> = (lines.iter())
                .filter(|m| m.target.starts_with(dir) && m.target != Path::new(dir))
                .collect();
            assert_eq!(table.below(Path::new(dir)), scan, "{dir}");
        }
        let found: Vec<&Path> = (table.below(Path::new("/u/j/a")).into_iter())
            .map(|m| m.target.as_path())
            .collect();
        assert_eq!(found, ["/u/j/a/x", "/u/j/a/x/y", "/u/j/a/b"].map(Path::new));
    }

    /// Each mount point's and each source's lines, in mount order, as a scan
    /// finds them; a path with no line finds none.
    #[test]
    fn index_finds_what_a_scan_finds() {
        let line = |source: &str, target: &str| Mount {
            source: source.into(),
            target: target.into(),
            fstype: "nullfs".into(),
            options: Vec::new(),
            linux: None,
        };
        let mut lines = Vec::new();
        for i in 0..200 {
            lines.push(line(&format!("/s{}", i % 7), &format!("/j{}/p", i % 13)));
        }
        let idx = Arc::new(index(&lines));
        let table = Table::new(Arc::new(lines.clone()), idx, Vec::new());
        for i in 0..15 {
            let target = PathBuf::from(format!("/j{i}/p"));
            let scan: Vec<&Mount> = lines.iter().filter(|m| m.target == target).collect();
            assert_eq!(table.mounts_at(&target), scan, "{target:?}");
            let source = format!("/s{i}");
            let scan: Vec<&Mount> = lines.iter().filter(|m| m.source == *source).collect();
            let found: Vec<&Mount> = table.of_source(source.as_ref()).collect();
            assert_eq!(found, scan, "{source}");
        }
    }

    #[test]
    fn below_by_bytes_as_by_components() {
        for (path, dir) in [
            ("/a/b", "/a"),
            ("/a/b", "/a/b"),
            ("/a/bc", "/a/b"),
            ("/a", "/a/b"),
            ("/a/b/c", "/"),
            ("/", "/"),
            ("/ab", "/a"),
            ("/a-b/c", "/a"),
        ] {
            let (path, dir) = (Path::new(path), Path::new(dir));
            assert_eq!(
                at_or_below(path, dir),
                path.starts_with(dir),
                "{path:?} {dir:?}"
            );
        }
    }
}
