//! The Linux mount API that works on descriptors: `open_tree(2)`, `move_mount(2)`,
//! `mount_setattr(2)` (5.12), `fsopen`/`fsconfig`/`fsmount` (5.2), and statx's
//! mount id (5.8, beside the mountinfo reader in [`crate::mounts::mountinfo`]). A
//! mount made this way is attached to the directory a descriptor pins, never to a
//! path the kernel would look up again.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

pub(crate) use crate::mounts::mountinfo::{mount_id, mount_id_at};

fn cstr(value: &OsStr) -> nix::Result<CString> {
    CString::new(value.as_bytes()).map_err(|_| Errno::EINVAL)
}

fn check(returned: libc::c_long) -> nix::Result<libc::c_long> {
    if returned < 0 {
        Err(Errno::last())
    } else {
        Ok(returned)
    }
}

/// `/proc/self/fd/N`: as a path, it names exactly what the descriptor pins.
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A detached copy of the mount at `source` (a bind mount not yet attached).
pub(crate) fn open_tree_clone(source: &Path) -> nix::Result<OwnedFd> {
    let source_c = cstr(source.as_os_str())?;
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    // SAFETY: a valid C string; the result is a new descriptor we own.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source_c.as_ptr(),
            flags,
        )
    })?;
    // SAFETY: open_tree succeeded, so `fd` is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A detached copy of the detached mount `mnt` (Linux 6.15 and later clone a
/// mount that is not in the namespace; older kernels refuse with EINVAL).
pub(crate) fn clone_detached(mnt: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32;
    // SAFETY: an empty C string and an open descriptor; the result is a new
    // descriptor we own.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_open_tree, mnt.as_raw_fd(), c"".as_ptr(), flags) })?;
    // SAFETY: open_tree succeeded, so `fd` is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Make a (detached) mount read-only before anyone can see it.
pub(crate) fn set_read_only(mnt: BorrowedFd<'_>) -> nix::Result<()> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the struct outlives the call and its size is passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
    .map(drop)
}

/// Attach the mount `mnt` on the directory `onto` (on top of what is mounted there).
pub(crate) fn move_mount_onto(mnt: BorrowedFd<'_>, onto: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: empty C strings; both descriptors are open.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            onto.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// Detach the mount whose root `mnt` is, lazily: used only to undo a mount this
/// run has just made (the descriptor itself keeps it busy).
pub(crate) fn detach(mnt: BorrowedFd<'_>) -> nix::Result<()> {
    nix::mount::umount2(&fd_path(mnt), nix::mount::MntFlags::MNT_DETACH)
}

/// A new file system (overlay, tmpfs) being configured (`fsopen`, `fsconfig`,
/// `fsmount`).
pub(crate) struct NewFs(OwnedFd);

impl NewFs {
    pub(crate) fn new(fstype: &CStr) -> nix::Result<NewFs> {
        // SAFETY: a C string; the result is a new descriptor we own.
        let fd = check(unsafe {
            libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC)
        })?;
        // SAFETY: fsopen succeeded, so `fd` is a new descriptor nothing else owns.
        Ok(NewFs(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    fn config(
        &self,
        cmd: libc::c_uint,
        key: Option<&str>,
        value: *const libc::c_void,
        aux: libc::c_int,
    ) -> nix::Result<()> {
        let key = key.map(|k| CString::new(k).unwrap_or_default());
        let kp = key.as_ref().map_or(std::ptr::null(), |k| k.as_ptr());
        // SAFETY: key and value point to live data for the call (or are null).
        check(unsafe { libc::syscall(libc::SYS_fsconfig, self.0.as_raw_fd(), cmd, kp, value, aux) })
            .map(drop)
    }

    /// `key=value` (at most 255 bytes: fsconfig's limit for strings).
    pub(crate) fn set(&self, key: &str, value: &OsStr) -> nix::Result<()> {
        let value_c = cstr(value)?;
        self.config(
            libc::FSCONFIG_SET_STRING,
            Some(key),
            value_c.as_ptr().cast(),
            0,
        )
    }

    /// A flag option (`key` alone).
    pub(crate) fn flag(&self, key: &str) -> nix::Result<()> {
        self.config(libc::FSCONFIG_SET_FLAG, Some(key), std::ptr::null(), 0)
    }

    /// A layer given as a descriptor (Linux 6.13 overlayfs).
    pub(crate) fn set_fd(&self, key: &str, fd: BorrowedFd<'_>) -> nix::Result<()> {
        self.config(
            libc::FSCONFIG_SET_FD,
            Some(key),
            std::ptr::null(),
            fd.as_raw_fd(),
        )
    }

    /// Create the file system and a detached mount of it with `attr` flags.
    pub(crate) fn mount(self, attr: u64) -> Result<OwnedFd, (Errno, String)> {
        let failure = |fs: &NewFs| (Errno::last(), fs.log());
        if self
            .config(libc::FSCONFIG_CMD_CREATE, None, std::ptr::null(), 0)
            .is_err()
        {
            return Err(failure(&self));
        }
        // SAFETY: a configured context; the result is a new descriptor we own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.0.as_raw_fd(),
                libc::FSMOUNT_CLOEXEC,
                attr,
            )
        };
        if fd < 0 {
            return Err(failure(&self));
        }
        // SAFETY: fsmount succeeded, so `fd` is a new descriptor nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// What the file system said about a failure (the context's message log).
    pub(crate) fn log(&self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(read) = nix::unistd::read(&self.0, &mut buf) {
            if read == 0 {
                break;
            }
            let line = String::from_utf8_lossy(&buf[..read]);
            out.push(
                line.trim_start_matches(['e', 'w', 'i', ' '])
                    .trim()
                    .to_string(),
            );
        }
        out.join("; ")
    }
}
