//! What a jail changed: each entry of an upper dir as it stands to the host tree
//! below it (`jclean --list`), and pruning only some kinds (`jclean --only stale`).
//!
//! The upper is walked as jclean walks it (every directory opened relative to its
//! parent without following links, never leaving its file system), with an explicit
//! stack, one thread: listing is for reading, not for speed. The host tree is the
//! layer's source, trusted: its entries are looked up by path.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};
use nix::unistd::UnlinkatFlags;

use crate::action::Sink;
use crate::signals;

/// What an upper entry is to the host tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Nothing of that name below it on the host.
    New,
    /// A copied-up host file, still the same as the host's.
    Copy,
    /// A host file the jail changed.
    Modified,
    /// A host file changed on the host after the jail's copy: the jail sees an old one.
    Stale,
    /// A host entry the jail deleted.
    Whiteout,
    /// A directory that hides the host's directory of that name.
    Opaque,
    /// A directory, merged with the host's.
    Dir,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::New,
        Kind::Copy,
        Kind::Modified,
        Kind::Stale,
        Kind::Whiteout,
        Kind::Opaque,
        Kind::Dir,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::New => "new",
            Kind::Copy => "copy",
            Kind::Modified => "modified",
            Kind::Stale => "stale",
            Kind::Whiteout => "whiteout",
            Kind::Opaque => "opaque",
            Kind::Dir => "dir",
        }
    }

    /// `--only KIND`: the kinds that can be pruned alone (not directories).
    pub fn parse_prunable(s: &str) -> Result<Kind, String> {
        match Kind::ALL.into_iter().find(|k| k.name() == s) {
            Some(Kind::Dir | Kind::Opaque) => Err(format!(
                "{s}: directories go with jclean as a whole; give new, copy, modified, stale or whiteout"
            )),
            Some(k) => Ok(k),
            None => Err(format!(
                "{s:?}: unknown kind (new, copy, modified, stale, whiteout)"
            )),
        }
    }
}

/// One entry of the upper dir.
pub struct Entry<'a> {
    pub kind: Kind,
    /// Path below the upper dir.
    pub rel: &'a Path,
    /// Allocated size (like du), 0 for directories.
    pub size: u64,
}

/// What a walk found it could not read, as (path below the upper, why).
pub type Problems = Vec<(PathBuf, String)>;

/// Walk everything below the open upper dir, telling `each` what every entry is to
/// `source`; an entry for which `each` returns true is removed (never a directory).
pub fn walk(
    upper: &OwnedFd,
    source: &Path,
    sink: &dyn Sink,
    mut each: impl FnMut(&Entry) -> bool,
) -> nix::Result<Problems> {
    let mut w = Walker {
        source,
        sink,
        dev: fstat(upper)?.st_dev,
        problems: Problems::new(),
        todo: vec![(nix::unistd::dup(upper)?, PathBuf::new())],
    };
    while let Some((dir, rel)) = w.todo.pop() {
        if signals::interrupted() {
            break;
        }
        w.dir(&dir, &rel, &mut each);
    }
    Ok(w.problems)
}

/// A walk under way.
struct Walker<'a> {
    source: &'a Path,
    sink: &'a dyn Sink,
    dev: nix::libc::dev_t,
    problems: Problems,
    /// Directories still to list: their descriptor and path below the upper.
    todo: Vec<(OwnedFd, PathBuf)>,
}

type Each<'e> = dyn FnMut(&Entry) -> bool + 'e;

impl Walker<'_> {
    /// One directory: its whiteouts and files told, its subdirectories told and
    /// queued.
    fn dir(&mut self, dir: &OwnedFd, rel: &Path, each: &mut Each) {
        let names = match names(dir) {
            Ok(n) => n,
            Err(e) => {
                let why = format!("cannot read: {}", e.desc());
                return self.problems.push((rel.to_path_buf(), why));
            }
        };
        for name in whiteout_names(dir) {
            let rel_name = rel.join(OsStr::from_bytes(name.to_bytes()));
            each(&Entry {
                kind: Kind::Whiteout,
                rel: &rel_name,
                size: 0,
            });
        }
        for name in names {
            let rel_name = rel.join(OsStr::from_bytes(name.to_bytes()));
            let Ok(st) = fstatat(dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            if file_type(st.st_mode) == file_type(libc::S_IFDIR) {
                self.subdir(dir, &name, &st, rel_name, each);
            } else {
                self.file(dir, &name, &st, rel_name, each);
            }
        }
    }

    fn subdir(&mut self, dir: &OwnedFd, name: &CStr, st: &FileStat, rel: PathBuf, each: &mut Each) {
        match enter(dir, name, self.dev) {
            Ok(sub) => {
                let kind = match opaque(&sub, st) {
                    true => Kind::Opaque,
                    false => Kind::Dir,
                };
                each(&Entry {
                    kind,
                    rel: &rel,
                    size: 0,
                });
                self.todo.push((sub, rel));
            }
            Err(why) => self.problems.push((rel, why)),
        }
    }

    fn file(&mut self, dir: &OwnedFd, name: &CStr, st: &FileStat, rel: PathBuf, each: &mut Each) {
        let kind = match whiteout_file(st) {
            true => Kind::Whiteout,
            false => against_host(dir, name, st, &self.source.join(&rel)),
        };
        let size = st.st_blocks as u64 * 512;
        let remove = each(&Entry {
            kind,
            rel: &rel,
            size,
        });
        if remove {
            match self.sink.unlink(dir, name, UnlinkatFlags::NoRemoveDir) {
                Ok(_) | Err(Errno::ENOENT) => {}
                Err(e) => {
                    let why = format!("cannot remove: {}", e.desc());
                    self.problems.push((rel, why));
                }
            }
        }
    }
}

/// Open a subdirectory to walk it: never through a link, never onto another file
/// system (a mount inside the upper is skipped and named).
fn enter(dir: &OwnedFd, name: &CStr, dev: nix::libc::dev_t) -> Result<OwnedFd, String> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(dir, name, flags, Mode::empty()) {
        Ok(sub) if fstat(&sub).is_ok_and(|s| s.st_dev == dev) => Ok(sub),
        Ok(_) => Err("another file system is mounted here; skipped".into()),
        Err(e) => Err(format!("cannot open: {}", e.desc())),
    }
}

/// The names in `dir` but `.` and `..`.
fn names(dir: &OwnedFd) -> nix::Result<Vec<CString>> {
    let mut listing = crate::prune::listing(dir)?;
    let mut out = Vec::new();
    for e in listing.iter() {
        let e = e?;
        let n = e.file_name();
        if n != c"." && n != c".." {
            out.push(n.to_owned());
        }
    }
    Ok(out)
}

/// A non-directory upper entry against the host's entry at `host`.
fn against_host(dir: &OwnedFd, name: &CStr, st: &FileStat, host: &Path) -> Kind {
    let Ok(h) = std::fs::symlink_metadata(host) else {
        return Kind::New;
    };
    // Changed on the host after the upper copy was made or last written.
    if (h.ctime(), h.ctime_nsec()) > (st.st_ctime, st.st_ctime_nsec) {
        return Kind::Stale;
    }
    if same_content(dir, name, st, host, &h) {
        Kind::Copy
    } else {
        Kind::Modified
    }
}

fn same_content(
    dir: &OwnedFd,
    name: &CStr,
    st: &FileStat,
    host: &Path,
    h: &std::fs::Metadata,
) -> bool {
    let fmt = file_type(st.st_mode);
    if fmt != file_type(h.mode()) {
        return false;
    }
    if fmt == file_type(libc::S_IFREG) {
        if st.st_size as u64 != h.size() {
            return false;
        }
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let Ok(fd) = openat(dir, name, flags, Mode::empty()) else {
            return false;
        };
        let Ok(mut b) = std::fs::File::open(host) else {
            return false;
        };
        return equal_streams(&mut std::fs::File::from(fd), &mut b);
    }
    if fmt == file_type(libc::S_IFLNK) {
        return nix::fcntl::readlinkat(dir, name)
            .ok()
            .zip(std::fs::read_link(host).ok())
            .is_some_and(|(a, b)| Path::new(&a) == b);
    }
    true
}

/// The file type bits of a mode (mode_t is 16 bits on FreeBSD, 32 on Linux).
fn file_type(mode: impl Into<u32>) -> u32 {
    #[allow(clippy::unnecessary_cast)]
    const FMT: u32 = libc::S_IFMT as u32;
    mode.into() & FMT
}

fn equal_streams(a: &mut impl std::io::Read, b: &mut impl std::io::Read) -> bool {
    let (mut x, mut y) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = match read_full(a, &mut x) {
            Ok(n) => n,
            Err(_) => return false,
        };
        match read_full(b, &mut y[..n.max(1)]) {
            Ok(m) if m == n && x[..n] == y[..n] => {}
            _ => return false,
        }
        if n == 0 {
            return true;
        }
    }
}

/// Read until `buf` is full or the end.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// overlayfs marks a deletion with a 0/0 character device; unionfs with a DT_WHT
/// entry (see [`whiteout_names`]).
fn whiteout_file(st: &FileStat) -> bool {
    file_type(st.st_mode) == file_type(libc::S_IFCHR) && st.st_rdev == 0
}

/// Whether a directory hides the host's: overlayfs's `trusted.overlay.opaque`
/// attribute, unionfs's `UF_OPAQUE` flag.
#[cfg(target_os = "linux")]
fn opaque(dir: &OwnedFd, _st: &FileStat) -> bool {
    use std::os::fd::AsRawFd;
    let mut v = [0u8; 4];
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|attr| {
            let name = CString::new(*attr).unwrap_or_default();
            // SAFETY: the buffer and its length are ours; the name is a C string.
            let n = unsafe {
                libc::fgetxattr(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    v.as_mut_ptr().cast(),
                    v.len(),
                )
            };
            n > 0 && matches!(v[0], b'y' | b'x')
        })
}

#[cfg(target_os = "freebsd")]
fn opaque(_dir: &OwnedFd, st: &FileStat) -> bool {
    const UF_OPAQUE: u64 = 0x8;
    #[allow(clippy::unnecessary_cast)]
    let flags = st.st_flags as u64;
    flags & UF_OPAQUE != 0
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn opaque(_dir: &OwnedFd, _st: &FileStat) -> bool {
    false
}

/// UFS whiteouts in `dir`, which readdir(3) hides.
#[cfg(target_os = "freebsd")]
fn whiteout_names(dir: &OwnedFd) -> Vec<CString> {
    crate::prune::whiteouts::list(dir).unwrap_or_default()
}

#[cfg(not(target_os = "freebsd"))]
fn whiteout_names(_dir: &OwnedFd) -> Vec<CString> {
    Vec::new()
}
