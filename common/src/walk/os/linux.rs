//! Linux: entries read with getdents64(2), birth times from statx(2),
//! overlayfs's opaque attribute. Overlayfs whiteouts are character devices, met
//! and removed as any file: no whiteout entries.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::stat::FileStat;

use super::{Time, WhiteoutProblem};

pub(crate) use Getdents as Entries;

/// The entries of a directory, from its first, read straight with getdents64(2)
/// from the walk's own descriptor into one buffer: a listing costs a seek and
/// the reads, not a duplicate descriptor, a DIR and its checks.
pub(crate) struct Getdents<'a> {
    fd: &'a OwnedFd,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl<'a> Getdents<'a> {
    pub(crate) fn new(fd: &'a OwnedFd) -> nix::Result<Self> {
        // The offset is the descriptor's: an earlier listing left it at the end.
        nix::unistd::lseek(fd, 0, nix::unistd::Whence::SeekSet)?;
        Ok(Getdents {
            fd,
            buf: vec![0; 16 * 1024],
            pos: 0,
            end: 0,
        })
    }

    pub(crate) fn next(&mut self) -> Option<nix::Result<(&CStr, Option<bool>)>> {
        if self.pos >= self.end {
            // SAFETY: the kernel writes at most buf.len() bytes into buf.
            let read = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr(),
                    self.buf.len(),
                )
            };
            if read < 0 {
                return Some(Err(Errno::last()));
            }
            if read == 0 {
                return None;
            }
            (self.pos, self.end) = (0, read as usize);
        }
        // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1),
        // then the NUL-terminated name.
        let rec = &self.buf[self.pos..self.end];
        let reclen = match rec.get(16..18) {
            Some(&[a, b]) => usize::from(u16::from_ne_bytes([a, b])),
            _ => 0,
        };
        if reclen < 20 || reclen > rec.len() {
            self.end = 0;
            return Some(Err(Errno::EIO));
        }
        let start = self.pos;
        self.pos += reclen;
        let rec = &self.buf[start..start + reclen];
        let kind = match rec[18] {
            libc::DT_DIR => Some(true),
            libc::DT_UNKNOWN => None,
            _ => Some(false),
        };
        match CStr::from_bytes_until_nul(&rec[19..]) {
            Ok(name) => Some(Ok((name, kind))),
            Err(_) => Some(Err(Errno::EIO)),
        }
    }
}

/// When the entry `name` of `dir` was born, if its file system says.
pub(crate) fn birth(dir: &OwnedFd, name: &CStr, _st: &FileStat) -> Option<Time> {
    // SAFETY: statx is plain old data; all zeroes is a valid value.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the name is a C string, the buffer is ours and of the right type.
    let status = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BTIME,
            &mut sx,
        )
    };
    (status == 0 && sx.stx_mask & libc::STATX_BTIME != 0)
        .then_some((sx.stx_btime.tv_sec, i64::from(sx.stx_btime.tv_nsec)))
}

/// overlayfs's `trusted.overlay.opaque` (or, unprivileged, `user.`) attribute.
pub(crate) fn opaque(dir: &OwnedFd, _st: &FileStat) -> bool {
    let mut value = [0u8; 4];
    [c"trusted.overlay.opaque", c"user.overlay.opaque"]
        .iter()
        .any(|name| {
            // SAFETY: the buffer and its length are ours; the name is a C string.
            let len = unsafe {
                libc::fgetxattr(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            len > 0 && matches!(value[0], b'y' | b'x')
        })
}

pub(crate) fn whiteout_names(_dir: &OwnedFd) -> std::io::Result<Vec<CString>> {
    Ok(Vec::new())
}

pub(crate) fn remove_whiteouts(_dir: &OwnedFd) -> Vec<WhiteoutProblem> {
    Vec::new()
}
