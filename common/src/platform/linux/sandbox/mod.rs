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
//! - Docker's default seccomp profile's refusals (see [`seccomp`]): no keyrings,
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
//!
//! Supervised, as bubblewrap's `--die-with-parent`: the unsharer dies with jupdate
//! (PR_SET_PDEATHSIG, SIGKILL) and pid 1 learns of the unsharer's death (its own
//! death signal, caught); the kernel kills a PID namespace whose pid 1 is gone.
//! Pid 1 holds the jail's lock (the open file description jupdate locked) and,
//! once the updater exits or the unsharer dies, kills and reaps what is left
//! before it exits: the lock is free only when no process of the run is.
//!
//! By phase: [`fs`] the mount namespace and root, [`caps`] what root keeps,
//! [`seccomp`] the filter; here the process tree that runs them.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::platform::Hold;

mod caps;
mod fs;
mod seccomp;

/// What the sandbox gives of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Net {
    /// A network namespace of its own with only loopback, up.
    Loopback,
    /// The host's network namespace.
    Host,
}

/// Everything the forked child needs, made before the fork (it must not allocate).
struct Plan {
    root: CString,
    host: CString,
    last_cap: u32,
    network: Net,
    filters: &'static [seccompiler::BpfProgram],
    /// jupdate's pid: the unsharer's parent, checked once its death signal is set.
    parent: libc::pid_t,
    /// The jail's lock (-1: none), held by pid 1 to its end.
    lock: libc::c_int,
    /// The run's cgroups' `cgroup.procs`, which the unsharer joins.
    cgroups: Vec<libc::c_int>,
}

/// Make `command` run its program inside a sandbox rooted at `root`, named `name`.
pub(crate) fn confine(command: &mut Command, root: &Path, name: &str, network: Net, hold: Hold) {
    let plan = Plan {
        root: CString::new(root.as_os_str().as_bytes()).unwrap_or_default(),
        host: CString::new(name).unwrap_or_default(),
        last_cap: std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63),
        network,
        filters: seccomp::filters(),
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        lock: hold.lock.unwrap_or(-1),
        cgroups: hold.cgroups.to_vec(),
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

/// Die with the parent (SIGKILL). The signal follows the parent *thread* that
/// forked: jupdate spawns from a rayon worker, which lives as long as the pool
/// (all of jupdate's run) and waits in that spawn's `Run::wait` until the child
/// is gone, so no thread exit can kill a run.
///
/// # Safety
///
/// Only in the child confine's spawn forked (the unsharer), before its exec.
/// Async-signal-safe; allocates nothing.
unsafe fn die_with_parent() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments.
    ok(unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    })
}

/// As pid 1: SIGTERM when the unsharer dies, caught (an empty handler: it only
/// interrupts the reaping, which then looks at `orphaned`). Not SIGKILL: pid 1
/// killed, the kernel releases its files (the jail's lock) before it kills the
/// rest of the namespace; caught, pid 1 kills and reaps the run first.
///
/// # Safety
///
/// Only in pid 1 of the new PID namespace: it replaces the process's SIGTERM
/// disposition. Async-signal-safe; allocates nothing.
unsafe fn init_dies_with_parent() -> std::io::Result<()> {
    extern "C" fn interrupt(_: libc::c_int) {}
    // SAFETY: a zeroed sigaction with a handler that does nothing; prctl with
    // integer arguments.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = interrupt as *const () as libc::sighandler_t;
        // No SA_RESTART: waitpid returns EINTR.
        ok(libc::sigaction(
            libc::SIGTERM,
            &action,
            std::ptr::null_mut(),
        ))?;
        ok(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        ))
    }
}

/// Whether the unsharer is gone: the write end of `alive` closed with it.
///
/// # Safety
///
/// `alive` is the read end of [`start_init`]'s pipe. Async-signal-safe.
unsafe fn orphaned(alive: libc::c_int) -> bool {
    let mut watch = libc::pollfd {
        fd: alive,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on a live local, without waiting.
    unsafe { libc::poll(&mut watch, 1, 0) != 0 }
}

/// Runs in the forked child. Returns (to exec the updater) only in pid 2.
fn enter(plan: &Plan) -> std::io::Result<()> {
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if plan.network == Net::Loopback {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: this is the child confine's spawn forked (see there), each step
    // run in the process its contract names: the unsharer, then pid 1, then the
    // updater (pid 2).
    unsafe {
        join_run(plan)?;
        ok(libc::unshare(flags))?;
        let alive = start_init(plan)?;
        fs::set_up(&plan.root)?;
        if plan.network == Net::Loopback {
            loopback_up()?;
        }
        libc::sethostname(plan.host.as_ptr(), plan.host.as_bytes().len());
        let updater = libc::fork();
        if updater < 0 {
            return Err(os_err());
        }
        if updater > 0 {
            reap_until(updater, plan.lock, alive);
        }
        // pid 2: the updater, which starts with 0, 1 and 2 only.
        crate::platform::cloexec_above_stderr()?;
        caps::drop_privileges(plan.last_cap)?;
        // Before the filter, which refuses keyctl(2).
        caps::join_new_session_keyring()?;
        seccomp::install(plan.filters)
    }
}

/// As the unsharer, before anything of the run exists: die with jupdate, join
/// the run's cgroups, and let go of what it inherited.
///
/// # Safety
///
/// Only in the child confine's spawn forked, before its exec: it may exit the
/// process, and closes descriptors of it. Async-signal-safe calls only; it
/// allocates nothing.
unsafe fn join_run(plan: &Plan) -> std::io::Result<()> {
    // SAFETY: the caller is the forked child (see above); `write` reads a live
    // C string.
    unsafe {
        die_with_parent()?;
        // jupdate died before the death signal was set: it will never come.
        if libc::getppid() != plan.parent {
            libc::_exit(137);
        }
        // Into the run's cgroups before anything of the run exists ("0": the
        // writer itself), so that every process of the run is counted.
        for &fd in &plan.cgroups {
            if libc::write(fd, c"0".as_ptr().cast(), 1) != 1 {
                return Err(os_err());
            }
        }
        // Before pid 1 is forked: it never holds a host directory.
        close_inherited();
    }
    Ok(())
}

/// Fork pid 1 of the new PID namespace. The unsharer waits for it and exits with
/// its status (it never returns); pid 1 returns the read end of a pipe whose
/// write end closes with the unsharer (pid 1 sees its parent, outside its
/// namespace, as 0 in getppid).
///
/// # Safety
///
/// Only in the unsharer, right after its unshare(2): the parent half never
/// returns. Async-signal-safe calls only; it allocates nothing.
unsafe fn start_init(plan: &Plan) -> std::io::Result<libc::c_int> {
    // SAFETY: the caller is the unsharer (see above); pipe2 fills a live local.
    unsafe {
        let mut alive = [-1; 2];
        ok(libc::pipe2(alive.as_mut_ptr(), libc::O_CLOEXEC))?;
        let init = libc::fork();
        if init < 0 {
            return Err(os_err());
        }
        if init > 0 {
            libc::close(alive[0]);
            if plan.lock >= 0 {
                name_holder(plan.lock, init);
            }
            wait_and_exit(init, alive[1]);
        }
        // pid 1 of the new namespace.
        libc::close(alive[1]);
        init_dies_with_parent()?;
        if orphaned(alive[0]) {
            libc::_exit(137);
        }
        Ok(alive[0])
    }
}

/// Close what the unsharer inherited above stderr that is not jupdate's own (not
/// close-on-exec: a descriptor the caller left open, `flock DIR jupdate`), and
/// every directory (another thread's, from `-j`), so that neither the unsharer nor
/// pid 1 ever holds a host directory. The spawn's own pipe (close-on-exec, not a
/// directory) stays: a failed setup is still reported through it.
///
/// # Safety
///
/// Only in the unsharer, after its fork: it closes descriptors other code of the
/// process may own. Async-signal-safe calls only; it allocates nothing.
unsafe fn close_inherited() {
    // SAFETY: async-signal-safe calls on a C string and descriptor numbers.
    unsafe {
        let list = libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if list < 0 {
            // No /proc: every number up to the limit.
            let highest = libc::sysconf(libc::_SC_OPEN_MAX).clamp(0, 1 << 20) as libc::c_int;
            (3..=highest).for_each(|fd| close_if_inherited(fd));
            return;
        }
        each_listed_fd(list, |fd| {
            if fd > 2 && fd != list {
                close_if_inherited(fd);
            }
        });
        libc::close(list);
    }
}

/// Close `fd` if it is open and not close-on-exec, or a directory.
///
/// # Safety
///
/// As [`close_inherited`]: in the unsharer only.
unsafe fn close_if_inherited(fd: libc::c_int) {
    // SAFETY: fcntl, fstat into a zeroed local, close: on a number only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return;
        }
        let mut st: libc::stat = std::mem::zeroed();
        let dir = libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if flags & libc::FD_CLOEXEC == 0 || dir {
            libc::close(fd);
        }
    }
}

/// Each descriptor number the open `/proc/self/fd` directory `list` names, read
/// with getdents64 into a stack buffer.
///
/// # Safety
///
/// `list` is an open directory descriptor. Async-signal-safe; allocates nothing
/// (as long as `each` does not).
unsafe fn each_listed_fd(list: libc::c_int, mut each: impl FnMut(libc::c_int)) {
    // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
    let mut buf = [0u64; 512];
    loop {
        // SAFETY: the kernel writes at most the buffer's size into it.
        let got = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                list,
                buf.as_mut_ptr(),
                std::mem::size_of_val(&buf),
            )
        };
        if got <= 0 {
            break;
        }
        // SAFETY: the first `got` bytes of `buf` are what the kernel wrote.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), got as usize) };
        let mut at = 0;
        while at + 19 < bytes.len() {
            let reclen = u16::from_ne_bytes([bytes[at + 16], bytes[at + 17]]) as usize;
            if reclen < 20 || at + reclen > bytes.len() {
                break;
            }
            if let Some(fd) = fd_number(&bytes[at + 19..at + reclen]) {
                each(fd);
            }
            at += reclen;
        }
    }
}

/// The number a `/proc/self/fd` entry's name (NUL-padded) starts with.
fn fd_number(name: &[u8]) -> Option<libc::c_int> {
    let mut fd: libc::c_int = 0;
    let mut digits = 0;
    for &b in name {
        if !b.is_ascii_digit() {
            break;
        }
        fd = fd
            .saturating_mul(10)
            .saturating_add((b - b'0') as libc::c_int);
        digits += 1;
    }
    (digits > 0).then_some(fd)
}

/// Bring up `lo` in the new network namespace (it starts down).
///
/// # Safety
///
/// Only in pid 1 of the sandbox's own network namespace: it changes the
/// namespace's `lo`. Async-signal-safe; allocates nothing.
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

/// Append pid 1's pid (as the host sees it) to the lock file after jupdate's:
/// should jupdate die, a second run names the run's live process.
///
/// # Safety
///
/// Only in the unsharer; `lock` is the jail's lock file, open for writing.
/// Async-signal-safe; allocates nothing.
unsafe fn name_holder(lock: libc::c_int, pid: libc::pid_t) {
    let mut line = [0u8; 16];
    let mut at = line.len() - 1;
    line[at] = b'\n';
    let mut rest = pid.unsigned_abs();
    loop {
        at -= 1;
        line[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    // SAFETY: fstat and pwrite on an open descriptor and live buffers.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(lock, &mut st) == 0 {
            let text = &line[at..];
            libc::pwrite(lock, text.as_ptr().cast(), text.len(), st.st_size);
        }
    }
}

/// Close every descriptor from 3 up except those in `keep` (-1: none).
///
/// # Safety
///
/// Only in a forked child of the sandbox, before exec: it closes descriptors other
/// code of the process may own. Async-signal-safe; allocates nothing.
unsafe fn close_all_but(keep: &[libc::c_int]) {
    let mut from = 3;
    // Ascending, without allocating: the next kept descriptor each round.
    loop {
        let next = keep.iter().copied().filter(|&fd| fd >= from).min();
        let to = next.map_or(u32::MAX, |fd| (fd - 1) as u32);
        if next != Some(from) {
            // SAFETY: close_range takes integers.
            unsafe { libc::syscall(libc::SYS_close_range, from as u32, to, 0u32) };
        }
        match next {
            Some(fd) => from = fd + 1,
            None => return,
        }
    }
}

/// Exit with the status of `pid` (128 + signal if it was killed), holding nothing
/// open but `alive` (its closing tells pid 1 this process is gone): jupdate's
/// spawn waits for its exec-status pipe to close.
///
/// # Safety
///
/// Only in the unsharer, with `pid` its child pid 1: it closes the process's
/// descriptors and exits it. Async-signal-safe; allocates nothing.
unsafe fn wait_and_exit(pid: libc::pid_t, alive: libc::c_int) -> ! {
    // SAFETY: async-signal-safe calls only (the caller is a forked child); `st`
    // is a live local and errno is this thread's.
    unsafe {
        close_all_but(&[alive]);
        let mut st = 0;
        while libc::waitpid(pid, &mut st, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
        libc::_exit(exit_code(st))
    }
}

/// As pid 1: reap every child until `pid` exits, or until the unsharer is gone
/// (jupdate died); then kill whatever of the run is left (kill(-1) from pid 1
/// reaches every other process of the namespace), reap it all, and exit with
/// `pid`'s status. `lock`, kept open to the end, is released with this process,
/// after the last of the run.
///
/// # Safety
///
/// Only in pid 1 of the sandbox's PID namespace, with `pid` its child: kill(-1)
/// from anywhere else reaches every process the caller may signal. It closes the
/// process's descriptors and exits it. Async-signal-safe; allocates nothing.
unsafe fn reap_until(pid: libc::pid_t, lock: libc::c_int, alive: libc::c_int) -> ! {
    // SAFETY: async-signal-safe calls only (the caller is a forked child); `st`
    // is a live local and errno is this thread's.
    unsafe {
        close_all_but(&[lock, alive]);
        let (mut code, mut ending) = (None, false);
        loop {
            // Checked before each wait: a SIGTERM that came before it (between
            // the fork and here) interrupted nothing.
            ending = ending || orphaned(alive);
            if ending {
                libc::kill(-1, libc::SIGKILL);
            }
            let mut st = 0;
            let reaped = libc::waitpid(-1, &mut st, 0);
            if reaped < 0 && *libc::__errno_location() == libc::ECHILD {
                libc::_exit(code.unwrap_or(137));
            }
            if reaped == pid {
                code = Some(exit_code(st));
                ending = true;
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

/// What the sandbox's unit tests share: raw calls, and a forked child to make
/// them in (a filter or a keyring joined there stays there).
#[cfg(test)]
mod testing {
    /// A raw system call's result: the value, or -errno.
    pub(super) fn call(nr: i64, args: [i64; 4]) -> i64 {
        // SAFETY: every call below is given arguments that make it fail or do
        // nothing if it were let through (no pointer the kernel writes to).
        let r = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3]) };
        if r < 0 { -i64::from(errno()) } else { r }
    }

    pub(super) fn errno() -> i32 {
        // SAFETY: reads this thread's errno.
        unsafe { *libc::__errno_location() }
    }

    /// Run `body` in a forked child; the bytes it writes to the descriptor it is
    /// given. The child does no allocation (the test harness has threads).
    pub(super) fn in_child(body: impl FnOnce(libc::c_int)) -> Vec<u8> {
        let mut pipe = [0; 2];
        // SAFETY: pipe fills the array; the child runs only system calls and
        // writes, then _exits; the parent reads and reaps.
        unsafe {
            assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::close(pipe[0]);
                body(pipe[1]);
                libc::_exit(0);
            }
            libc::close(pipe[1]);
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(pipe[0], buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n as usize]);
            }
            libc::close(pipe[0]);
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "the child died: status {status:#x}"
            );
            out
        }
    }

    pub(super) fn write_all(fd: libc::c_int, bytes: &[u8]) {
        // SAFETY: writes from a live buffer.
        unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    }
}
