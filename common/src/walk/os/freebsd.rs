//! FreeBSD: entries read with readdir(3), birth times in the stat, unionfs's
//! `UF_OPAQUE` flag, and UFS whiteouts: entries a union mount's deletions leave
//! in an upper dir. readdir(3) hides them (they are DT_WHT in getdirentries(2)),
//! rmdir(2) ignores them in a directory it removes, and undelete(2) removes one
//! by name. Only the upper dir's own are left after a prune, since it is never
//! removed.

// st_birthtime and st_flags differ in width across versions.
#![allow(clippy::unnecessary_cast)]

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::stat::FileStat;

use super::{Time, WhiteoutProblem};

pub(crate) use super::readdir::Readdir as Entries;

pub(crate) fn birth(_dir: &OwnedFd, _name: &CStr, st: &FileStat) -> Option<Time> {
    (st.st_birthtime >= 0).then_some((st.st_birthtime as i64, st.st_birthtime_nsec as i64))
}

pub(crate) fn opaque(_dir: &OwnedFd, st: &FileStat) -> bool {
    const UF_OPAQUE: u64 = 0x8;
    let flags = st.st_flags as u64;
    flags & UF_OPAQUE != 0
}

const DT_WHT: u8 = 14;

unsafe extern "C" {
    fn getdirentries(
        fd: libc::c_int,
        buf: *mut libc::c_char,
        nbytes: libc::size_t,
        base: *mut libc::off_t,
    ) -> libc::ssize_t;
    fn undelete(path: *const libc::c_char) -> libc::c_int;
}

/// The names of the whiteouts in `dir` (struct dirent of FreeBSD 12 and later:
/// d_reclen at 16, d_type at 18, d_namlen at 20, d_name at 24).
pub(crate) fn whiteout_names(dir: &OwnedFd) -> std::io::Result<Vec<CString>> {
    let fd = nix::unistd::dup(dir)?;
    // SAFETY: lseek on a descriptor this function owns.
    if unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut names = Vec::new();
    loop {
        let mut base: libc::off_t = 0;
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        let read = unsafe {
            getdirentries(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut base,
            )
        };
        if read < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if read == 0 {
            return Ok(names);
        }
        whiteouts_in(&buf[..read as usize], &mut names);
    }
}

/// The whiteouts among the records of one getdirentries(2) read.
fn whiteouts_in(buf: &[u8], names: &mut Vec<CString>) {
    let mut off = 0usize;
    while off + 24 <= buf.len() {
        let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
        let namlen = u16::from_ne_bytes([buf[off + 20], buf[off + 21]]) as usize;
        if reclen == 0 || off + 24 + namlen > buf.len() {
            break;
        }
        if buf[off + 18] == DT_WHT {
            if let Ok(name) = CString::new(&buf[off + 24..off + 24 + namlen]) {
                names.push(name);
            }
        }
        off += reclen;
    }
}

/// Remove the whiteouts in the (otherwise empty) upper dir. undelete(2) takes a
/// path, so the pinned directory becomes the working directory and the name is
/// one component: nothing of it is looked up by a path from the host. No other
/// thread runs a walk at this point.
pub(crate) fn remove_whiteouts(dir: &OwnedFd) -> Vec<WhiteoutProblem> {
    let names = match whiteout_names(dir) {
        Ok(names) if names.is_empty() => return Vec::new(),
        Ok(names) => names,
        Err(err) => return vec![(None, format!("cannot list whiteouts: {err}"))],
    };
    let flags = crate::walk::fs::DIR_FLAGS;
    let Ok(cwd) = nix::fcntl::open(c".", flags, nix::sys::stat::Mode::empty()) else {
        return vec![(None, "cannot open the working directory".into())];
    };
    if let Err(err) = nix::unistd::fchdir(dir) {
        return vec![(None, format!("cannot enter: {}", err.desc()))];
    }
    let mut problems = Vec::new();
    for name in names {
        // SAFETY: name is a NUL-terminated C string.
        if unsafe { undelete(name.as_ptr()) } != 0 {
            let err = std::io::Error::last_os_error();
            problems.push((Some(name), format!("cannot remove whiteout: {err}")));
        }
    }
    let _ = nix::unistd::fchdir(&cwd);
    problems
}
