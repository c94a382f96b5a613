//! The jail jupdate runs an updater in on Linux: not a chroot (a root process
//! escapes one with a second chroot, a new /proc mount, or /proc/PID/root), but
//! new mount, PID, IPC and UTS namespaces, `pivot_root` into the jail root with the
//! host's tree detached, and root's capabilities cut down to a container runtime's
//! default set (no CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE, ...), with
//! `PR_SET_NO_NEW_PRIVS`. The updater still builds as root: chown, install and
//! mknod work.
//!
//! Process tree: jupdate's child unshares and forks pid 1 of the new PID namespace,
//! which sets up the mounts and forks the updater (pid 2), reaping orphans until
//! the updater exits. Each waits for the one below and exits with its status, so
//! jupdate sees the updater's status; all three share one process group, which
//! jupdate's time limit kills.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// What the updater keeps: Docker's default capability set without CAP_NET_RAW.
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
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

fn keep_mask() -> u64 {
    KEEP.iter().fold(0, |m, &c| m | 1 << c)
}

/// Make `c` run its program inside a sandbox rooted at `root`, named `name`.
pub fn confine(c: &mut Command, root: &Path, name: &str) {
    let root = CString::new(root.as_os_str().as_bytes()).unwrap_or_default();
    let host = CString::new(name).unwrap_or_default();
    let last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    // SAFETY: after fork in a threaded process the closure calls only
    // async-signal-safe system calls on data prepared above; nothing allocates.
    unsafe {
        c.pre_exec(move || enter(&root, &host, last_cap));
    }
}

fn os_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn ok(r: libc::c_int) -> std::io::Result<()> {
    if r == 0 { Ok(()) } else { Err(os_err()) }
}

/// Runs in the forked child. Returns (to exec the updater) only in pid 2.
fn enter(root: &CString, host: &CString, last_cap: u32) -> std::io::Result<()> {
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
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
        ok(libc::chdir(root.as_ptr()))?;
        ok(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int)?;
        // The host's tree was stacked under the new root: detach it.
        ok(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
        ok(libc::chdir(c"/".as_ptr()))?;
        // A /proc or /sys the host put in the jail would show the host's processes
        // and kernel knobs: the updater gets neither.
        libc::umount2(c"/proc".as_ptr(), libc::MNT_DETACH);
        libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH);
        libc::sethostname(host.as_ptr(), host.as_bytes().len());
        let updater = libc::fork();
        if updater < 0 {
            return Err(os_err());
        }
        if updater > 0 {
            reap_until(updater);
        }
        // pid 2: the updater.
        drop_privileges(last_cap)
    }
}

/// Exit with the status of `pid` (128 + signal if it was killed), holding nothing
/// open: jupdate's spawn waits for its exec-status pipe to close.
unsafe fn wait_and_exit(pid: libc::pid_t) -> ! {
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
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        loop {
            let mut st = 0;
            let r = libc::waitpid(-1, &mut st, 0);
            if r == pid {
                libc::_exit(exit_code(st));
            }
            if r < 0 && *libc::__errno_location() == libc::ECHILD {
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
