//! The jail jupdate runs an updater in on Linux: not a chroot (a root process
//! escapes one with a second chroot, a new /proc mount, or /proc/PID/root), but
//! what a container runtime (runc, bubblewrap) makes:
//!
//! - new mount, PID, IPC and UTS namespaces, and a network namespace with only
//!   loopback unless the jail says `network = "host"`;
//! - `pivot_root` into the jail root with the host's tree detached, the jail's whole
//!   tree `nodev` (a device node made or planted in it never opens);
//! - a fresh procfs of the sandbox's PID namespace (never the host's) with runc's
//!   masked paths covered and its read-only paths read-only;
//! - a /dev of its own (tmpfs): the host's null, zero, full, random, urandom and tty
//!   bound in, a new devpts instance, /dev/shm and the /proc/self/fd links; the
//!   jail root's own /dev is hidden, never written; /sys an empty read-only tmpfs;
//! - root's capabilities cut down to a container runtime's default set without
//!   CAP_MKNOD and CAP_NET_RAW (no CAP_SYS_ADMIN, CAP_SYS_PTRACE, ...), with
//!   `PR_SET_NO_NEW_PRIVS`. The updater still builds as root: chown and install work;
//! - Docker's default seccomp profile's refusals (see seccomp.rs): no keyrings,
//!   bpf, perf, userfaultfd, io_uring, kexec, modules, clock setting, swap, reboot,
//!   mounts or namespaces (in a user namespace the updater would have every
//!   capability again), personality only the default or 32-bit;
//! - a new session keyring of its own, as runc gives each container.
//!
//! A mount point the jail root lacks (or has as a symlink or file) is left alone:
//! the updater then has no /proc (or /dev, /sys), never a host's one.
//!
//! Process tree: jupdate's child unshares and forks pid 1 of the new PID namespace,
//! which sets up the mounts and forks the updater (pid 2), reaping orphans until
//! the updater exits. Each waits for the one below and exits with its status, so
//! jupdate sees the updater's status; all three share one process group, which
//! jupdate's time limit kills.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::config::Network;

/// What the updater keeps: Docker's default capability set without CAP_NET_RAW
/// and CAP_MKNOD (Docker keeps that one only behind a device cgroup, which jlayers
/// does not have).
const KEEP: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    18, // CAP_SYS_CHROOT
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

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

fn keep_mask() -> u64 {
    KEEP.iter().fold(0, |m, &c| m | 1 << c)
}

/// Everything the forked child needs, made before the fork (it must not allocate).
struct Plan {
    root: CString,
    host: CString,
    last_cap: u32,
    network: Network,
    filters: &'static [seccompiler::BpfProgram],
}

/// Make `command` run its program inside a sandbox rooted at `root`, named `name`.
pub(crate) fn confine(command: &mut Command, root: &Path, name: &str, network: Network) {
    let plan = Plan {
        root: CString::new(root.as_os_str().as_bytes()).unwrap_or_default(),
        host: CString::new(name).unwrap_or_default(),
        last_cap: std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63),
        network,
        filters: super::seccomp::filters(),
    };
    // SAFETY: after fork in a threaded process the closure calls only
    // async-signal-safe system calls on data prepared above; nothing allocates.
    unsafe {
        command.pre_exec(move || enter(&plan));
    }
}

fn os_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn ok(status: libc::c_int) -> std::io::Result<()> {
    if status == 0 { Ok(()) } else { Err(os_err()) }
}

fn errno() -> libc::c_int {
    // SAFETY: reads this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Runs in the forked child. Returns (to exec the updater) only in pid 2.
fn enter(plan: &Plan) -> std::io::Result<()> {
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if plan.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: plain system calls (see confine).
    unsafe {
        ok(libc::unshare(flags))?;
        let init = libc::fork();
        if init < 0 {
            return Err(os_err());
        }
        if init > 0 {
            wait_and_exit(init);
        }
        // pid 1 of the new namespace.
        let none = std::ptr::null::<libc::c_char>();
        let root = &plan.root;
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
        set_attr(root, libc::AT_RECURSIVE, libc::MOUNT_ATTR_NODEV)?;
        // The host's nodes, taken while its /dev is in reach: one detached copy of
        // /dev/null per masked file, one per device (a device the host lacks, in a
        // minimal container's /dev, is left out).
        let mut devices = [-1; DEVICES.len()];
        for (fd, dev) in devices.iter_mut().zip(DEVICES) {
            *fd = match clone_tree(dev) {
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => -1,
                result => result?,
            };
        }
        let mut masks = [-1; MASKED_FILES.len()];
        for fd in masks.iter_mut() {
            *fd = clone_tree(c"/dev/null")?;
        }
        ok(libc::chdir(root.as_ptr()))?;
        ok(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int)?;
        // The host's tree was stacked under the new root: detach it.
        ok(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
        ok(libc::chdir(c"/".as_ptr()))?;
        // From here on every path resolves inside the jail root.
        if is_dir(c"/proc") {
            detach_all(c"/proc");
            mount_proc(&masks)?;
        }
        if is_dir(c"/dev") {
            detach_all(c"/dev");
            mount_dev(&devices)?;
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
        for fd in devices.into_iter().chain(masks).filter(|&fd| fd >= 0) {
            libc::close(fd);
        }
        if plan.network == Network::None {
            loopback_up()?;
        }
        libc::sethostname(plan.host.as_ptr(), plan.host.as_bytes().len());
        let updater = libc::fork();
        if updater < 0 {
            return Err(os_err());
        }
        if updater > 0 {
            reap_until(updater);
        }
        // pid 2: the updater.
        drop_privileges(plan.last_cap)?;
        // Before the filter, which refuses keyctl(2).
        super::seccomp::join_new_session_keyring()?;
        super::seccomp::install(plan.filters)
    }
}

/// mount_setattr(2) on the mount at `path` (and below it, with AT_RECURSIVE).
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
unsafe fn is_dir(path: &CStr) -> bool {
    // SAFETY: zeroed stat is a valid out-buffer for lstat.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::lstat(path.as_ptr(), &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// Detach whatever the host mounted at `path` (a /proc of its own, a bound /dev),
/// stacked mounts too.
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

/// Bring up `lo` in the new network namespace (it starts down).
unsafe fn loopback_up() -> std::io::Result<()> {
    // struct ifreq: the name, then a union whose first short is ifr_flags.
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _rest: [u8; 22],
    }
    const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
    const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _rest: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: the request outlives the calls and has the kernel's layout.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(os_err());
        }
        let mut status = libc::ioctl(sock, SIOCGIFFLAGS, &mut req as *mut IfReq);
        if status == 0 {
            req.flags |= libc::IFF_UP as libc::c_short;
            status = libc::ioctl(sock, SIOCSIFFLAGS, &req as *const IfReq);
        }
        let err = os_err();
        libc::close(sock);
        if status == 0 { Ok(()) } else { Err(err) }
    }
}

/// Exit with the status of `pid` (128 + signal if it was killed), holding nothing
/// open: jupdate's spawn waits for its exec-status pipe to close.
unsafe fn wait_and_exit(pid: libc::pid_t) -> ! {
    // SAFETY: async-signal-safe calls only (the caller is a forked child); `st`
    // is a live local and errno is this thread's.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        let mut st = 0;
        while libc::waitpid(pid, &mut st, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
        libc::_exit(exit_code(st))
    }
}

/// As pid 1: reap every child until `pid` exits, then exit with its status.
unsafe fn reap_until(pid: libc::pid_t) -> ! {
    // SAFETY: async-signal-safe calls only (the caller is a forked child); `st`
    // is a live local and errno is this thread's.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        loop {
            let mut st = 0;
            let reaped = libc::waitpid(-1, &mut st, 0);
            if reaped == pid {
                libc::_exit(exit_code(st));
            }
            if reaped < 0 && *libc::__errno_location() == libc::ECHILD {
                libc::_exit(1);
            }
        }
    }
}

fn exit_code(st: libc::c_int) -> libc::c_int {
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        128 + libc::WTERMSIG(st)
    }
}

/// Cut the bounding, permitted, effective and inheritable sets down to KEEP (for
/// root the bounding set is what exec grants), clear ambient ones, and make sure
/// no setuid or file capability can grant more.
unsafe fn drop_privileges(last_cap: u32) -> std::io::Result<()> {
    let keep = keep_mask();
    // SAFETY: prctl and capset with integer arguments and pointers to live
    // locals; async-signal-safe, as the forked caller needs.
    unsafe {
        for cap in 0..=last_cap.min(63) {
            if keep & (1 << cap) == 0 {
                ok(libc::prctl(
                    libc::PR_CAPBSET_DROP,
                    cap as libc::c_ulong,
                    0,
                    0,
                    0,
                ))?;
            }
        }
        ok(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ))?;
        #[repr(C)]
        struct Header {
            version: u32,
            pid: libc::c_int,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let half = |m: u64| Data {
            effective: m as u32,
            permitted: m as u32,
            inheritable: 0,
        };
        let data = [half(keep), half(keep >> 32)];
        ok(
            libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) as libc::c_int,
        )?;
        ok(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_mknod_in_the_kept_capabilities() {
        assert_eq!(keep_mask() & (1 << 27), 0);
        assert_eq!(keep_mask() & (1 << 21), 0); // CAP_SYS_ADMIN
    }
}
