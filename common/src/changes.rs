//! What a jail changed: each entry of an upper dir as it stands to the host tree
//! below it (`jclean --list`), and pruning only some kinds (`jclean --only stale`).
//!
//! The upper is walked by [`crate::walk`], as jclean prunes it, on one thread and
//! in path order (listing is for reading, not for speed), with the host tree's directory of the
//! same path beside each upper directory: a host entry is looked up by name in it,
//! never by a path, so any depth works.
//!
//! Whether the jail wrote a copied-up file's content: both overlayfs (copy-up sets
//! the lower file's times on the copy) and unionfs (`unionfs_copyfile` sets the
//! lower's atime and mtime on the new upper file) keep the host file's mtime on
//! the copy, which is born then. So a copy whose mtime is older than its birth
//! time was never written; one written since has an mtime at or after its birth.
//! And the host changed the file since the copy when its ctime is later than the
//! copy's birth. Without a birth time (a file system that has none) the copy's
//! ctime stands in for it.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode};
use nix::unistd::UnlinkatFlags;

use crate::action::{Sink, Site, Unlink};
use crate::walk::os::{self, Time};
use crate::walk::{At, DirStat, Done, Host, Visit, Walker, is_dir, stat_here};

/// What an upper entry is to the host tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Nothing of that name below it on the host.
    New,
    /// A copied-up host file, still the same as the host's in type, content,
    /// symlink target, mode and owner.
    Copy,
    /// A host file the jail changed (content, mode or owner).
    Modified,
    /// A copy whose content the jail never wrote, of a host file changed since the
    /// copy was made: the jail sees an old one.
    Stale,
    /// A file whose content the jail wrote, of a host file changed since the copy
    /// was made: both sides changed it.
    Conflict,
    /// A host entry the jail deleted.
    Whiteout,
    /// A directory that hides the host's directory of that name.
    Opaque,
    /// A directory, merged with the host's: a parent copied up for a change below
    /// it.
    Dir,
    /// A directory the jail made: the host has none of that name.
    NewDir,
}

impl Kind {
    pub(crate) const ALL: [Kind; 9] = [
        Kind::New,
        Kind::Copy,
        Kind::Modified,
        Kind::Stale,
        Kind::Conflict,
        Kind::Whiteout,
        Kind::Opaque,
        Kind::Dir,
        Kind::NewDir,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::New => "new",
            Kind::Copy => "copy",
            Kind::Modified => "modified",
            Kind::Stale => "stale",
            Kind::Conflict => "conflict",
            Kind::Whiteout => "whiteout",
            Kind::Opaque => "opaque",
            Kind::Dir => "dir",
            Kind::NewDir => "newdir",
        }
    }

    /// `--only KIND`: the kinds that can be pruned alone (not directories).
    pub(crate) fn parse_prunable(name: &str) -> Result<Kind, String> {
        match Kind::ALL.into_iter().find(|k| k.name() == name) {
            Some(Kind::Dir | Kind::NewDir | Kind::Opaque) => Err(format!(
                "{name}: directories go with jclean as a whole; give new, copy, modified, stale, conflict or whiteout"
            )),
            Some(kind) => Ok(kind),
            None => Err(format!(
                "{name:?}: unknown kind (new, copy, modified, stale, conflict, whiteout)"
            )),
        }
    }
}

/// One entry of the upper dir.
pub(crate) struct Entry<'a> {
    pub(crate) kind: Kind,
    /// Allocated size (like du), 0 for directories.
    pub(crate) size: u64,
    /// Its directory, and its name there (none: the directory itself).
    at: &'a At<'a>,
    name: Option<&'a CStr>,
}

impl Entry<'_> {
    /// Whether it is the directory at `path` below the upper dir, without making
    /// its path (each entry's, at any depth, would cost the square of the depth).
    pub(crate) fn is_dir_at(&self, path: &Path) -> bool {
        self.name.is_none() && self.at.is(path)
    }

    /// Its path below the upper dir, made when asked for: at any depth, only
    /// what is shown costs its path.
    pub(crate) fn rel(&self) -> PathBuf {
        match self.name {
            Some(name) => self.at.join(name),
            None => self.at.rel(),
        }
    }
}

/// What a walk found it could not read, as (path below the upper, why).
pub(crate) type Problems = Vec<(PathBuf, String)>;

/// Walk everything below the open upper dir, telling `each` what every entry is to
/// the host tree `source` (a directory, trusted), in path order (a directory
/// before its entries); an entry for which `each` returns true is removed (never
/// a directory). `mounts`: mount points below the upper
/// (paths below it), skipped.
pub(crate) fn walk(
    upper: &OwnedFd,
    source: &Path,
    mounts: Vec<Vec<u8>>,
    sink: &Sink,
    site: &Site,
    each: impl FnMut(&Entry) -> bool,
) -> nix::Result<Problems> {
    let lister = Lister {
        sink,
        site,
        each: RefCell::new(Box::new(each)),
        problems: RefCell::new(Problems::new()),
    };
    let walker = Walker::new(&lister, upper, mounts)?
        .in_path_order()
        .beside_host();
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    // No host tree: every entry is new.
    let host = nix::fcntl::open(source, flags, Mode::empty())
        .ok()
        .and_then(Host::new);
    let top = crate::walk::Entered {
        fd: nix::unistd::dup(upper)?,
        st: nix::sys::stat::fstat(upper)?,
    };
    walker.deep(top, host, Vec::new());
    Ok(lister.problems.into_inner())
}

type Each<'e> = Box<dyn FnMut(&Entry) -> bool + 'e>;

/// Listing, as the walk's visitor: every entry told, those asked for removed.
struct Lister<'a, 'e> {
    sink: &'a Sink<'a>,
    site: &'a Site<'a>,
    each: RefCell<Each<'e>>,
    problems: RefCell<Problems>,
}

impl Lister<'_, '_> {
    fn tell(&self, entry: &Entry) -> bool {
        (self.each.borrow_mut())(entry)
    }
}

impl Visit for Lister<'_, '_> {
    fn file(&self, at: &At, dir: &OwnedFd, name: &CStr, host: Option<&OwnedFd>) -> Done {
        let st = match stat_here(dir, name) {
            Ok(st) => st,
            Err(_) => return Done::Gone,
        };
        if is_dir(&st) {
            return Done::Dir;
        }
        let kind = if whiteout_file(&st) {
            Kind::Whiteout
        } else {
            against_host(dir, name, &st, host)
        };
        let remove = self.tell(&Entry {
            kind,
            size: st.st_blocks as u64 * 512,
            at,
            name: Some(name),
        });
        if !remove {
            return Done::Kept;
        }
        let act = Unlink {
            dir,
            name,
            flags: UnlinkatFlags::NoRemoveDir,
        };
        // -n (`None`): counted as removed.
        let done = match self.sink.act(self.site, act) {
            Ok(done) => done.unwrap_or(Ok(())),
            Err(_) => Err(Errno::EIO),
        };
        match done {
            Ok(()) | Err(Errno::ENOENT) => Done::Gone,
            Err(errno) => {
                self.problem(at.join(name), format!("cannot remove: {}", errno.desc()));
                Done::Kept
            }
        }
    }

    fn entered(&self, at: &At, dir: &OwnedFd, st: &FileStat, on_host: Option<bool>) {
        // overlayfs's opaque attribute, unionfs's `UF_OPAQUE` flag.
        let kind = if os::opaque(dir, st) {
            Kind::Opaque
        } else if on_host == Some(false) {
            Kind::NewDir
        } else {
            Kind::Dir
        };
        self.tell(&Entry {
            kind,
            size: 0,
            at,
            name: None,
        });
    }

    fn whiteout_names(&self, dir: &OwnedFd) -> Vec<CString> {
        os::whiteout_names(dir).unwrap_or_default()
    }

    fn whiteout(&self, at: &At, name: &CStr) {
        self.tell(&Entry {
            kind: Kind::Whiteout,
            size: 0,
            at,
            name: Some(name),
        });
    }

    /// Directories stay: they go with a whole prune.
    fn leave(&self, _: &At, _: &OwnedFd, _: &CStr, _: &DirStat, _: bool) -> bool {
        true
    }

    fn problem(&self, rel: PathBuf, why: String) {
        self.problems.borrow_mut().push((rel, why));
    }
}

#[allow(clippy::unnecessary_cast)]
fn times(st: &FileStat) -> (Time, Time) {
    (
        (st.st_mtime as i64, st.st_mtime_nsec as i64),
        (st.st_ctime as i64, st.st_ctime_nsec as i64),
    )
}

/// A non-directory upper entry against the host's entry of the same name in the
/// host directory `host` (none: the host has no directory there).
fn against_host(dir: &OwnedFd, name: &CStr, st: &FileStat, host: Option<&OwnedFd>) -> Kind {
    let Some(host) = host else {
        return Kind::New;
    };
    let Ok(host_st) = stat_here(host, name) else {
        return Kind::New;
    };
    let (mtime, ctime) = times(st);
    // When the copy was made, and whether the jail wrote its content since.
    let made = os::birth(dir, name, st).unwrap_or(ctime);
    let written = mtime >= made;
    let (_, host_ctime) = times(&host_st);
    if host_ctime > made {
        return if written { Kind::Conflict } else { Kind::Stale };
    }
    let same_meta =
        st.st_mode == host_st.st_mode && st.st_uid == host_st.st_uid && st.st_gid == host_st.st_gid;
    if same_meta && same_content(dir, name, st, host, &host_st) {
        Kind::Copy
    } else {
        Kind::Modified
    }
}

fn same_content(
    dir: &OwnedFd,
    name: &CStr,
    st: &FileStat,
    host: &OwnedFd,
    host_st: &FileStat,
) -> bool {
    let fmt = file_type(st.st_mode);
    if fmt != file_type(host_st.st_mode) {
        return false;
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if fmt == file_type(libc::S_IFREG) {
        if st.st_size != host_st.st_size {
            return false;
        }
        let (Ok(upper_file), Ok(host_file)) = (
            openat(dir, name, flags, Mode::empty()),
            openat(host, name, flags, Mode::empty()),
        ) else {
            return false;
        };
        return equal_streams(
            &mut std::fs::File::from(upper_file),
            &mut std::fs::File::from(host_file),
        );
    }
    if fmt == file_type(libc::S_IFLNK) {
        return nix::fcntl::readlinkat(dir, name)
            .ok()
            .zip(nix::fcntl::readlinkat(host, name).ok())
            .is_some_and(|(a, b)| a == b);
    }
    if fmt == file_type(libc::S_IFCHR) || fmt == file_type(libc::S_IFBLK) {
        return st.st_rdev == host_st.st_rdev;
    }
    true
}

/// The file type bits of a mode (mode_t is 16 bits on FreeBSD, 32 on Linux).
fn file_type(mode: impl Into<u32>) -> u32 {
    #[allow(clippy::unnecessary_cast)]
    const FMT: u32 = libc::S_IFMT as u32;
    mode.into() & FMT
}

fn equal_streams(left: &mut impl std::io::Read, right: &mut impl std::io::Read) -> bool {
    let (mut left_buf, mut right_buf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let got = match read_full(left, &mut left_buf) {
            Ok(got) => got,
            Err(_) => return false,
        };
        match read_full(right, &mut right_buf[..got.max(1)]) {
            Ok(got_right) if got_right == got && left_buf[..got] == right_buf[..got] => {}
            _ => return false,
        }
        if got == 0 {
            return true;
        }
    }
}

/// Read until `buf` is full or the end.
fn read_full(reader: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(filled)
}

/// overlayfs marks a deletion with a 0/0 character device; unionfs with a DT_WHT
/// entry (see [`os::whiteout_names`]).
fn whiteout_file(st: &FileStat) -> bool {
    file_type(st.st_mode) == file_type(libc::S_IFCHR) && st.st_rdev == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::fake::{Fake, MSG};

    /// Every entry below `upper` told against `host`, in walk order, as
    /// (path, kind); those named in `remove` removed through `sink`.
    fn kinds(upper: &Path, host: &Path, sink: &Sink, remove: &[&str]) -> Vec<(String, Kind)> {
        let fd: OwnedFd = std::fs::File::open(upper).unwrap().into();
        let mut seen = Vec::new();
        let site = Site::of_layer("j", Path::new("/"), "l");
        let problems = walk(&fd, host, Vec::new(), sink, &site, |entry| {
            let rel = entry.rel().display().to_string();
            let gone = remove.contains(&rel.as_str());
            seen.push((rel, entry.kind));
            gone
        })
        .unwrap();
        assert_eq!(problems, []);
        seen
    }

    /// A host tree and an upper dir over it: an untouched copy, a file the jail
    /// changed, one it made, a merged directory and one of its own, in path order.
    #[test]
    fn each_entry_against_the_host() {
        let host = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir(host.path().join("d")).unwrap();
        for name in ["d/copy", "d/changed"] {
            std::fs::write(host.path().join(name), "host").unwrap();
        }
        // The copies are born after the host's files last changed.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::create_dir_all(upper.path().join("d")).unwrap();
        std::fs::create_dir_all(upper.path().join("own")).unwrap();
        std::fs::write(upper.path().join("d/copy"), "host").unwrap();
        std::fs::write(upper.path().join("d/changed"), "jail").unwrap();
        std::fs::write(upper.path().join("own/new"), "").unwrap();
        std::os::unix::fs::symlink("/x", upper.path().join("link")).unwrap();
        let fake = Fake::default();
        let dry = Sink::new(&fake, MSG, true);
        let want = [
            ("d", Kind::Dir),
            ("d/changed", Kind::Modified),
            ("d/copy", Kind::Copy),
            ("link", Kind::New),
            ("own", Kind::NewDir),
            ("own/new", Kind::New),
        ];
        let want: Vec<(String, Kind)> = want.iter().map(|(p, k)| (p.to_string(), *k)).collect();
        let remove = ["own/new", "d"];
        assert_eq!(kinds(upper.path(), host.path(), &dry, &remove), want);
        assert!(upper.path().join("own/new").exists(), "-n removed a file");
        let sink = Sink::new(&fake, MSG, false);
        assert_eq!(kinds(upper.path(), host.path(), &sink, &remove), want);
        // A file goes; a directory never does.
        assert!(!upper.path().join("own/new").exists());
        assert!(upper.path().join("d").is_dir());
    }

    /// Without a host tree, every entry is new.
    #[test]
    fn without_a_host_tree_all_is_new() {
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir(upper.path().join("d")).unwrap();
        std::fs::write(upper.path().join("d/f"), "").unwrap();
        let fake = Fake::default();
        let dry = Sink::new(&fake, MSG, true);
        let none = upper.path().join("no-such-host");
        let got = kinds(upper.path(), &none, &dry, &[]);
        let want = [
            ("d".to_string(), Kind::NewDir),
            ("d/f".to_string(), Kind::New),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn only_files_prune_alone() {
        assert_eq!(Kind::parse_prunable("stale"), Ok(Kind::Stale));
        assert!(Kind::parse_prunable("dir").is_err());
        assert!(Kind::parse_prunable("nope").is_err());
    }
}
