//! The seam between the backend and the kernel for the mount table and unmounts
//! by file system ID. On FreeBSD the system calls themselves; elsewhere (the
//! tests on Linux, which cannot intercept system calls) the simulated userland's
//! `mount -v` and `umount FSID` ([`super::sim`]), the tools an administrator would
//! use: those are what the simulation exercises, the system calls only a FreeBSD
//! host does. Besides, statfs(2) of a descriptor and procctl(2)'s death signal.

use std::ffi::OsString;
#[cfg(target_os = "freebsd")]
use std::os::fd::OwnedFd;
use std::path::PathBuf;
#[cfg(target_os = "freebsd")]
use std::process::Command;

use anyhow::Result;

#[cfg(target_os = "freebsd")]
pub(super) use self::syscalls::{table_ids, unmount};
use super::error::FreeBsdError;
#[cfg(not(target_os = "freebsd"))]
pub(super) use super::sim::{die_with_parent, fs_of, table_ids, unmount};
use crate::exit::Domain;
use crate::mounts::Mount;
use crate::platform::MountId;
use crate::target::Place;

/// The mount table, in mount order.
pub(super) fn table() -> Result<Vec<Mount>> {
    Ok(table_ids()?.into_iter().map(|(_, mount)| mount).collect())
}

/// Each mount with its file system ID.
pub(super) type Ids = Vec<(MountId, Mount)>;

/// The libc crate (0.2.191) declares all this needs for FreeBSD: getfsstat,
/// unmount, fstatfs, `MNT_NOWAIT`, `MNT_BYFSID`, `MNT_FORCE` and the flag bits,
/// with the FreeBSD 12+ `struct statfs` that getfsstat's default symbol fills;
/// no extern block of our own.
#[cfg(target_os = "freebsd")]
mod syscalls {
    use std::ffi::{CStr, OsStr};
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;

    use anyhow::Result;
    use nix::errno::Errno;

    use super::fsid_path;
    use crate::exit::Domain;
    use crate::mounts::Mount;
    use crate::platform::MountId;
    use crate::platform::freebsd::error::FreeBsdError;
    use crate::platform::freebsd::parse::strip_union_prefix;

    /// getfsstat(2) with `MNT_NOWAIT`: the kernel's table as it stands, without
    /// asking any file system (a hung NFS server cannot hang the read), in
    /// mount order, as mount -p would print it, each with its file system ID.
    /// kern_getfsstat (sys/kern/vfs_syscalls.c) skips a mount that
    /// vfs_busy(MBF_NOWAIT) refuses, one with an unmount under way, but
    /// counts it when asked for the number only: a read with fewer entries
    /// than both counts around it missed one, and is done again.
    pub(in crate::platform::freebsd) fn table_ids() -> Result<super::Ids> {
        let err = |e: Errno| {
            Domain::error(FreeBsdError::Table {
                how: "getfsstat",
                source: e.into(),
            })
        };
        let count = || {
            // SAFETY: a null buffer asks only for the number of file systems.
            let n = unsafe { libc::getfsstat(std::ptr::null_mut(), 0, libc::MNT_NOWAIT) };
            if n < 0 {
                Err(err(Errno::last()))
            } else {
                Ok(n as usize)
            }
        };
        let mut tries = 0;
        loop {
            let before = count()?;
            // Room for mounts made in between; a full buffer is read again.
            let room = before + 8;
            let mut buf: Vec<libc::statfs> = Vec::with_capacity(room);
            let size = (room * std::mem::size_of::<libc::statfs>()) as libc::c_long;
            // SAFETY: the kernel writes at most `size` bytes, the capacity of
            // `buf`, and returns how many entries it wrote.
            let got = unsafe { libc::getfsstat(buf.as_mut_ptr(), size, libc::MNT_NOWAIT) };
            if got < 0 {
                return Err(err(Errno::last()));
            }
            let got = got as usize;
            if got == room {
                continue;
            }
            // An unmount in progress ends (or fails) within moments.
            if got < before.min(count()?) && tries < 50 {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            // SAFETY: the kernel initialised the first `got` entries.
            unsafe { buf.set_len(got) };
            return Ok(buf.iter().map(|st| (fsid(st), line(st))).collect());
        }
    }

    /// `f_fsid` as fs_of() gives it: its bytes in memory order, in hex.
    fn fsid(st: &libc::statfs) -> MountId {
        // SAFETY: views the fsid_t inside `st` as its bytes, borrowed from it.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&st.f_fsid as *const libc::fsid_t).cast::<u8>(),
                std::mem::size_of::<libc::fsid_t>(),
            )
        };
        MountId(super::hex(bytes))
    }

    /// One statfs as mount(8)'s putfsent() shows it: the union prefix dropped,
    /// "rw" unless read-only, then flags2opts()'s names.
    fn line(st: &libc::statfs) -> Mount {
        // SAFETY: the kernel NUL-terminates the names inside their arrays.
        let name = |a: &[libc::c_char]| unsafe { CStr::from_ptr(a.as_ptr()) }.to_bytes();
        let flags = st.f_flags as i64;
        let mut options = vec![if flags & libc::MNT_RDONLY as i64 != 0 {
            "ro"
        } else {
            "rw"
        }];
        for (bit, opt) in [
            (libc::MNT_SYNCHRONOUS, "sync"),
            (libc::MNT_NOEXEC, "noexec"),
            (libc::MNT_NOSUID, "nosuid"),
            (libc::MNT_UNION, "union"),
            (libc::MNT_ASYNC, "async"),
            (libc::MNT_NOATIME, "noatime"),
        ] {
            if flags & bit as i64 != 0 {
                options.push(opt);
            }
        }
        Mount {
            source: OsStr::from_bytes(strip_union_prefix(name(&st.f_mntfromname))).to_os_string(),
            target: PathBuf::from(OsStr::from_bytes(name(&st.f_mntonname))),
            fstype: String::from_utf8_lossy(name(&st.f_fstypename)).into_owned(),
            options: options.into_iter().map(String::from).collect(),
            linux: None,
        }
    }

    /// unmount(2) with `MNT_BYFSID` ("FSID:val0:val1", as umount(8) writes
    /// it): exactly that file system or nothing (ENOENT when it is gone; no
    /// retry by path).
    pub(in crate::platform::freebsd) fn unmount(id: &MountId, force: bool) -> Result<()> {
        let path = fsid_path(id)
            .ok_or_else(|| Domain::error(FreeBsdError::NotFsid { id: id.0.clone() }))?;
        let mut flags = libc::MNT_BYFSID;
        if force {
            flags |= libc::MNT_FORCE;
        }
        // SAFETY: a NUL-terminated string the call only reads.
        if unsafe { libc::unmount(path.as_ptr(), flags) } != 0 {
            return Err(Domain::error(FreeBsdError::Unmount {
                id: id.0.clone(),
                source: Errno::last().into(),
            }));
        }
        Ok(())
    }
}

/// The path unmount(2) with `MNT_BYFSID` takes for a file system ID (the fsid_t's
/// bytes in memory order, in hex): "FSID:val0:val1", as umount(8) writes it and
/// kern_unmount() reads it back.
#[cfg_attr(not(target_os = "freebsd"), allow(dead_code))] // the tests use it
fn fsid_path(id: &MountId) -> Option<std::ffi::CString> {
    let hex = id.0.as_bytes();
    if hex.len() != 16 {
        return None;
    }
    let mut bytes = [0u8; 8];
    for (byte, pair) in bytes.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    let val = |i: usize| i32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    std::ffi::CString::new(format!("FSID:{}:{}", val(0), val(4))).ok()
}

/// What statfs(2) says of the file system a descriptor lies in.
#[derive(Debug)]
pub(super) struct Fs {
    /// `f_fsid` as umount(8) takes it: its bytes in memory order, in hex.
    pub(super) id: MountId,
    /// `f_mntonname`.
    pub(super) on: PathBuf,
    /// `f_fstypename`.
    pub(super) fstype: String,
    /// `f_mntfromname`, without unionfs's `<above>:` (`<below>:`) prefix.
    pub(super) from: OsString,
}

/// statfs(2) of the top mount at `place`, opened beneath its jail root.
pub(super) fn fs_at(place: &Place) -> Result<Fs> {
    let fd = place.open_dir()?;
    fs_of(&fd).map_err(|e| {
        Domain::error(FreeBsdError::Statfs {
            path: place.path.clone(),
            source: e.into(),
        })
    })
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(target_os = "freebsd")]
pub(super) fn fs_of(fd: &OwnedFd) -> nix::Result<Fs> {
    use std::ffi::CStr;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;

    use super::parse::strip_union_prefix;
    // SAFETY: a zeroed statfs is valid; the kernel fills it; the names are
    // NUL-terminated arrays inside it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a live statfs the kernel fills.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: views the fsid_t inside `st` as its bytes, borrowed from `st`.
    let id = unsafe {
        std::slice::from_raw_parts(
            (&st.f_fsid as *const libc::fsid_t).cast::<u8>(),
            std::mem::size_of::<libc::fsid_t>(),
        )
    };
    // SAFETY: the kernel NUL-terminates the names inside their arrays in `st`,
    // which outlives the borrows.
    let on = unsafe { CStr::from_ptr(st.f_mntonname.as_ptr()) };
    // SAFETY: as above.
    let from = strip_union_prefix(unsafe { CStr::from_ptr(st.f_mntfromname.as_ptr()) }.to_bytes());
    // SAFETY: as above.
    let ty = unsafe { CStr::from_ptr(st.f_fstypename.as_ptr()) };
    Ok(Fs {
        id: MountId(hex(id)),
        on: PathBuf::from(std::ffi::OsStr::from_bytes(on.to_bytes())),
        fstype: ty.to_string_lossy().into_owned(),
        from: std::ffi::OsStr::from_bytes(from).to_os_string(),
    })
}

/// The process jupdate starts through jexec (jexec execs env, env the updater:
/// one process) gets SIGKILL when jupdate dies (procctl PROC_PDEATHSIG_CTL,
/// FreeBSD 11.2+). What the updater forks in the jail is the jail's: the jail's
/// stop ends it when jupdate started the jail.
#[cfg(target_os = "freebsd")]
pub(super) fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid before the fork; in the child only procctl, getppid and
    // _exit, async-signal-safe, on a live local.
    unsafe {
        let parent = libc::getpid();
        command.pre_exec(move || {
            let mut signal: libc::c_int = libc::SIGKILL;
            if libc::procctl(
                libc::P_PID,
                0,
                libc::PROC_PDEATHSIG_CTL,
                (&mut signal as *mut libc::c_int).cast(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // jupdate died before the signal was set: it will never come.
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsid_path_is_what_kern_unmount_reads() {
        let id = |s: &str| MountId(s.into());
        let want = format!(
            "FSID:{}:{}",
            i32::from_ne_bytes([0x0a, 0, 0, 0]),
            i32::from_ne_bytes([0xff, 0xff, 0xff, 0xff])
        );
        assert_eq!(
            fsid_path(&id("0a000000ffffffff"))
                .unwrap()
                .to_str()
                .unwrap(),
            want
        );
        assert!(fsid_path(&id("0a00")).is_none());
        assert!(fsid_path(&id("0a000000fffffffg")).is_none());
    }
}
