//! The walk's few ways into the file system, each spelled once: a directory is
//! entered only through [`open_dir`] (never through a link), an entry is looked
//! at only through [`stat_here`] (the link itself, not what it points to).

// st_mtime and st_mtime_nsec differ in width and sign across platforms.
#![allow(clippy::unnecessary_cast)]

use std::os::fd::OwnedFd;
use std::time::SystemTime;

use nix::NixPath;
use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstatat};

/// How a directory is opened to be walked: no link followed, nothing else taken.
pub(crate) const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Open the directory `name` of `dir` (`..` to climb back): ELOOP (EMLINK on
/// FreeBSD) for a link, ENOTDIR for anything else not a directory.
pub(crate) fn open_dir<P: ?Sized + NixPath>(dir: &OwnedFd, name: &P) -> nix::Result<OwnedFd> {
    openat(dir, name, DIR_FLAGS, Mode::empty())
}

/// What the entry `name` of `dir` is itself: a link is not followed (lstat(2)
/// beneath a descriptor; the walk's every look at an entry, and the one for any
/// code that must not follow a link a jail may have put there).
pub(crate) fn stat_here<P: ?Sized + NixPath>(dir: &OwnedFd, name: &P) -> nix::Result<FileStat> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

pub(crate) fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(crate) fn mtime(st: &FileStat) -> SystemTime {
    let secs = st.st_mtime;
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + std::time::Duration::new(secs as u64, st.st_mtime_nsec as u32)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

/// A fresh listing of `dir` from its first entry. The duplicate descriptor shares
/// the file offset, which an earlier listing left at the end.
pub(crate) fn listing(dir: &OwnedFd) -> nix::Result<Dir> {
    let fd = nix::unistd::dup(dir)?;
    nix::unistd::lseek(&fd, 0, nix::unistd::Whence::SeekSet)?;
    Dir::from_fd(fd)
}
