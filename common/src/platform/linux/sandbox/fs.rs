//! The sandbox's file system: its own mount namespace with the jail root bound
//! and nodev, `pivot_root` into it with the host's tree detached, and a /proc,
//! /dev and /sys of its own in it.

use std::ffi::CStr;

use super::{errno, ok, os_err};

/// The host's device nodes the sandbox's /dev gets (bound, not made).
const DEVICES: [&CStr; 6] = [
    c"/dev/null",
    c"/dev/zero",
    c"/dev/full",
    c"/dev/random",
    c"/dev/urandom",
    c"/dev/tty",
];

/// runc's default masked paths under /proc: files get /dev/null bound over them,
/// directories an empty read-only tmpfs. A path this kernel lacks is skipped.
const MASKED_FILES: [&CStr; 7] = [
    c"/proc/interrupts",
    c"/proc/kcore",
    c"/proc/keys",
    c"/proc/latency_stats",
    c"/proc/timer_list",
    c"/proc/timer_stats",
    c"/proc/sched_debug",
];
const MASKED_DIRS: [&CStr; 3] = [c"/proc/acpi", c"/proc/asound", c"/proc/scsi"];

/// runc's default read-only paths: the host's kernel knobs.
const READ_ONLY: [&CStr; 5] = [
    c"/proc/bus",
    c"/proc/fs",
    c"/proc/irq",
    c"/proc/sys",
    c"/proc/sysrq-trigger",
];

/// The links a userland expects in /dev (debootstrap makes them into its /dev).
const LINKS: [(&CStr, &CStr); 5] = [
    (c"/proc/self/fd", c"/dev/fd"),
    (c"/proc/self/fd/0", c"/dev/stdin"),
    (c"/proc/self/fd/1", c"/dev/stdout"),
    (c"/proc/self/fd/2", c"/dev/stderr"),
    (c"pts/ptmx", c"/dev/ptmx"),
];

/// Bind the jail root on itself, the whole tree nodev, in a mount namespace whose
/// mounts no longer propagate to the host's; take the host's nodes; pivot into
/// the root; then mount /proc, /dev and /sys there.
///
/// # Safety
///
/// Only in pid 1 of the sandbox's new mount and PID namespaces, after its fork:
/// it changes the calling process's mounts and root for good. Async-signal-safe
/// calls only; it allocates nothing.
pub(super) unsafe fn set_up(root: &CStr) -> std::io::Result<()> {
    // SAFETY: the caller is pid 1 of the new namespaces (see above).
    unsafe {
        bind_root(root)?;
        let (devices, masks) = host_nodes()?;
        pivot(root)?;
        // From here on every path resolves inside the jail root.
        mount_specials(&devices, &masks)?;
        for fd in devices.into_iter().chain(masks).filter(|&fd| fd >= 0) {
            libc::close(fd);
        }
    }
    Ok(())
}

/// Make every mount private (nothing of the sandbox's reaches the host's
/// namespace), bind the root on itself and make its whole tree nodev.
///
/// # Safety
///
/// As [`set_up`]: in the sandbox's own mount namespace only.
unsafe fn bind_root(root: &CStr) -> std::io::Result<()> {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: mount(2) on valid C strings, with no data.
    unsafe {
        ok(libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        ok(libc::mount(
            root.as_ptr(),
            root.as_ptr(),
            none,
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ))?;
        // The jail's whole tree (its layers too) nodev, in this namespace only.
        set_attr(root, libc::AT_RECURSIVE, libc::MOUNT_ATTR_NODEV)
    }
}

/// The host's nodes, taken while its /dev is in reach: one detached copy of
/// /dev/null per masked file, one per device (a device the host lacks, in a
/// minimal container's /dev, is left out: -1).
///
/// # Safety
///
/// As [`set_up`]: before [`pivot`], in the sandbox's own mount namespace.
unsafe fn host_nodes() -> std::io::Result<(
    [libc::c_int; DEVICES.len()],
    [libc::c_int; MASKED_FILES.len()],
)> {
    let mut devices = [-1; DEVICES.len()];
    let mut masks = [-1; MASKED_FILES.len()];
    // SAFETY: open_tree(2) on valid C strings.
    unsafe {
        for (fd, dev) in devices.iter_mut().zip(DEVICES) {
            *fd = match clone_tree(dev) {
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => -1,
                result => result?,
            };
        }
        for fd in masks.iter_mut() {
            *fd = clone_tree(c"/dev/null")?;
        }
    }
    Ok((devices, masks))
}

/// `pivot_root` into `root` with the old root stacked under it, then detach that:
/// the host's tree is out of reach.
///
/// # Safety
///
/// As [`set_up`]: it changes the calling process's root and working directory.
unsafe fn pivot(root: &CStr) -> std::io::Result<()> {
    // SAFETY: system calls on valid C strings.
    unsafe {
        ok(libc::chdir(root.as_ptr()))?;
        ok(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int)?;
        // The host's tree was stacked under the new root: detach it.
        ok(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
        ok(libc::chdir(c"/".as_ptr()))
    }
}

/// A /proc, /dev and /sys of the sandbox's own, on each the jail root has as a
/// directory, whatever the host mounted there detached first.
///
/// # Safety
///
/// As [`set_up`]: after [`pivot`]; `devices` and `masks` are [`host_nodes`]'.
unsafe fn mount_specials(devices: &[libc::c_int], masks: &[libc::c_int]) -> std::io::Result<()> {
    // SAFETY: system calls on valid C strings and open descriptors.
    unsafe {
        if is_dir(c"/proc") {
            detach_all(c"/proc");
            mount_proc(masks)?;
        }
        if is_dir(c"/dev") {
            detach_all(c"/dev");
            mount_dev(devices)?;
        }
        if is_dir(c"/sys") {
            detach_all(c"/sys");
            ok(libc::mount(
                c"tmpfs".as_ptr(),
                c"/sys".as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"mode=0555".as_ptr().cast(),
            ))?;
        }
    }
    Ok(())
}

/// mount_setattr(2) on the mount at `path` (and below it, with AT_RECURSIVE).
///
/// # Safety
///
/// As [`set_up`]: in the sandbox's own mount namespace only, where it changes
/// the mounts at `path`.
unsafe fn set_attr(path: &CStr, flags: libc::c_int, set: u64) -> std::io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the struct outlives the call and its size is passed.
    ok(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    } as libc::c_int)
}

/// A detached copy of the mount of `path` (open_tree(2) OPEN_TREE_CLONE).
///
/// # Safety
///
/// As [`set_up`]: in the sandbox's forked child only (async-signal-safe, no
/// allocation); the descriptor returned is the caller's to close.
unsafe fn clone_tree(path: &CStr) -> std::io::Result<libc::c_int> {
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    // SAFETY: a valid C string.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        Err(os_err())
    } else {
        Ok(fd as libc::c_int)
    }
}

/// Attach the detached mount `fd` on `path`; false if `path` does not exist.
///
/// # Safety
///
/// As [`set_up`]: in the sandbox's own mount namespace only; `fd` is a detached
/// mount from [`clone_tree`].
unsafe fn attach(fd: libc::c_int, path: &CStr) -> std::io::Result<bool> {
    // SAFETY: valid C strings; `fd` is open.
    let status = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    match status {
        0 => Ok(true),
        _ if errno() == libc::ENOENT => Ok(false),
        _ => Err(os_err()),
    }
}

/// Whether `path` is a directory itself, not a symlink to one: the jail root owns
/// its /proc, /dev and /sys, and a link would only move the mount elsewhere in it.
///
/// # Safety
///
/// As [`set_up`]: in the sandbox's forked child, where `path` resolves in the
/// jail root (async-signal-safe, no allocation).
unsafe fn is_dir(path: &CStr) -> bool {
    // SAFETY: zeroed stat is a valid out-buffer for lstat.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::lstat(path.as_ptr(), &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// Detach whatever the host mounted at `path` (a /proc of its own, a bound /dev),
/// stacked mounts too.
///
/// # Safety
///
/// As [`set_up`]: in the sandbox's own mount namespace only, after [`pivot`].
unsafe fn detach_all(path: &CStr) {
    for _ in 0..64 {
        // SAFETY: a valid C string.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) } != 0 {
            break;
        }
    }
}

const HIDDEN: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// A procfs of this PID namespace on /proc, masked and read-only as runc's.
///
/// # Safety
///
/// As [`set_up`]: pid 1 of the new PID namespace (the procfs is that
/// namespace's), after [`pivot`]; `masks` are [`host_nodes`]'.
unsafe fn mount_proc(masks: &[libc::c_int]) -> std::io::Result<()> {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: plain system calls on valid C strings and open descriptors.
    unsafe {
        ok(libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            HIDDEN,
            std::ptr::null(),
        ))?;
        for (&fd, path) in masks.iter().zip(MASKED_FILES) {
            attach(fd, path)?;
        }
        for path in MASKED_DIRS {
            let status = libc::mount(
                c"tmpfs".as_ptr(),
                path.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY | HIDDEN,
                c"mode=0555".as_ptr().cast(),
            );
            if status != 0 && errno() != libc::ENOENT {
                return Err(os_err());
            }
        }
        for path in READ_ONLY {
            let status = libc::mount(
                path.as_ptr(),
                path.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            );
            if status != 0 {
                if errno() == libc::ENOENT {
                    continue;
                }
                return Err(os_err());
            }
            ok(libc::mount(
                none,
                path.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | HIDDEN,
                std::ptr::null(),
            ))?;
        }
    }
    Ok(())
}

/// A tmpfs on /dev with the host's standard nodes bound in (the tmpfs itself is
/// nodev: a node made there never opens), a devpts of its own and /dev/shm.
///
/// # Safety
///
/// As [`set_up`]: in the sandbox's own mount namespace, after [`pivot`];
/// `devices` are [`host_nodes`]' (-1: none).
unsafe fn mount_dev(devices: &[libc::c_int]) -> std::io::Result<()> {
    // SAFETY: plain system calls on valid C strings and open descriptors.
    unsafe {
        ok(libc::mount(
            c"tmpfs".as_ptr(),
            c"/dev".as_ptr(),
            c"tmpfs".as_ptr(),
            HIDDEN,
            c"mode=0755,size=65536k".as_ptr().cast(),
        ))?;
        for (&fd, path) in devices.iter().zip(DEVICES) {
            if fd < 0 {
                continue;
            }
            // A file to bind the node on.
            let node_file = libc::open(
                path.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                0o600,
            );
            if node_file < 0 {
                return Err(os_err());
            }
            libc::close(node_file);
            attach(fd, path)?;
        }
        for (dir, fstype, flags, data) in [
            (
                c"/dev/pts",
                c"devpts",
                libc::MS_NOSUID | libc::MS_NOEXEC,
                c"newinstance,ptmxmode=0666,mode=0620,gid=5",
            ),
            (c"/dev/shm", c"tmpfs", HIDDEN, c"mode=1777,size=65536k"),
        ] {
            ok(libc::mkdir(dir.as_ptr(), 0o755))?;
            ok(libc::mount(
                fstype.as_ptr(),
                dir.as_ptr(),
                fstype.as_ptr(),
                flags,
                data.as_ptr().cast(),
            ))?;
        }
        for (to, link) in LINKS {
            ok(libc::symlink(to.as_ptr(), link.as_ptr()))?;
        }
    }
    Ok(())
}
