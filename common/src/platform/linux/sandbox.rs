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
//!
//! Supervised, as bubblewrap's `--die-with-parent`: the unsharer dies with jupdate
//! (PR_SET_PDEATHSIG, SIGKILL) and pid 1 learns of the unsharer's death (its own
//! death signal, caught); the kernel kills a PID namespace whose pid 1 is gone.
//! Pid 1 holds the jail's lock (the open file description jupdate locked) and,
//! once the updater exits or the unsharer dies, kills and reaps what is left
//! before it exits: the lock is free only when no process of the run is.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::config::Network;
use crate::platform::Hold;

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
    /// jupdate's pid: the unsharer's parent, checked once its death signal is set.
    parent: libc::pid_t,
    /// The jail's lock (-1: none), held by pid 1 to its end.
    lock: libc::c_int,
    /// The run's cgroups' `cgroup.procs`, which the unsharer joins.
    cgroups: Vec<libc::c_int>,
}

/// Make `command` run its program inside a sandbox rooted at `root`, named `name`.
pub(crate) fn confine(
    command: &mut Command,
    root: &Path,
    name: &str,
    network: Network,
    hold: Hold,
) {
    let plan = Plan {
        root: CString::new(root.as_os_str().as_bytes()).unwrap_or_default(),
        host: CString::new(name).unwrap_or_default(),
        last_cap: std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63),
        network,
        filters: super::seccomp::filters(),
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
    if plan.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: plain system calls (see confine).
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
        ok(libc::unshare(flags))?;
        // Pid 1 sees its parent (outside its namespace) as 0 in getppid: it
        // learns of the unsharer's death by the write end closing instead.
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
            reap_until(updater, plan.lock, alive[0]);
        }
        // pid 2: the updater, which starts with 0, 1 and 2 only.
        crate::platform::cloexec_above_stderr()?;
        drop_privileges(plan.last_cap)?;
        // Before the filter, which refuses keyctl(2).
        super::seccomp::join_new_session_keyring()?;
        super::seccomp::install(plan.filters)
    }
}

/// Close what the unsharer inherited above stderr that is not jupdate's own (not
/// close-on-exec: a descriptor the caller left open, `flock DIR jupdate`), and
/// every directory (another thread's, from `-j`), so that neither the unsharer nor
/// pid 1 ever holds a host directory. The spawn's own pipe (close-on-exec, not a
/// directory) stays: a failed setup is still reported through it.
unsafe fn close_inherited() {
    // SAFETY: async-signal-safe calls on a stack buffer and descriptor numbers.
    unsafe {
        let check = |fd: libc::c_int| {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 {
                return;
            }
            let mut st: libc::stat = std::mem::zeroed();
            let dir = libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if flags & libc::FD_CLOEXEC == 0 || dir {
                libc::close(fd);
            }
        };
        let list = libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if list < 0 {
            // No /proc: every number up to the limit.
            let highest = libc::sysconf(libc::_SC_OPEN_MAX).clamp(0, 1 << 20) as libc::c_int;
            (3..=highest).for_each(check);
            return;
        }
        // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
        let mut buf = [0u64; 512];
        loop {
            let got = libc::syscall(
                libc::SYS_getdents64,
                list,
                buf.as_mut_ptr(),
                std::mem::size_of_val(&buf),
            );
            if got <= 0 {
                break;
            }
            let bytes = std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), got as usize);
            let mut at = 0;
            while at + 19 < bytes.len() {
                let reclen = u16::from_ne_bytes([bytes[at + 16], bytes[at + 17]]) as usize;
                if reclen < 20 || at + reclen > bytes.len() {
                    break;
                }
                let mut fd: libc::c_int = 0;
                let mut digits = 0;
                for &b in &bytes[at + 19..at + reclen] {
                    if !b.is_ascii_digit() {
                        break;
                    }
                    fd = fd
                        .saturating_mul(10)
                        .saturating_add((b - b'0') as libc::c_int);
                    digits += 1;
                }
                if digits > 0 && fd > 2 && fd != list {
                    check(fd);
                }
                at += reclen;
            }
        }
        libc::close(list);
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

/// Append pid 1's pid (as the host sees it) to the lock file after jupdate's:
/// should jupdate die, a second run names the run's live process.
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
