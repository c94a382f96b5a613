//! The two backends. Each performs plan steps and reads the mount table; ordering,
//! idempotence and rollback live in [`crate::stack`], once for both.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::Result;

use crate::config::Limits;
use crate::exit::{Domain, ExitCode, IoText, ToolError};
use crate::mounts::Mount;
use crate::step::Step;
use crate::target::Place;

pub(crate) use self::error::PlatformError;
pub use crate::os::Os;

/// What an unmount does with a busy mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Busy {
    /// Fail (75), naming what holds it.
    Fail,
    /// Take it away all the same (`-f`: `umount -f`, a lazy detach on Linux).
    Force,
}

mod error;
#[cfg(test)]
pub(crate) mod fake;
pub mod freebsd;
#[cfg(target_os = "linux")]
pub mod linux;

/// A command's program and arguments.
pub(crate) fn argv_of(command: &Command) -> Vec<OsString> {
    let mut argv = vec![command.get_program().to_os_string()];
    argv.extend(command.get_args().map(|a| a.to_os_string()));
    argv
}

/// A tmpfs upper's options, the same for mount(8) on both systems: the root
/// directory, which holds the upper dir, closed as jlayers' other dirs around the
/// uppers are (not tmpfs's default 1777), and the size.
pub(crate) fn tmpfs_options(tmpfs: &crate::step::Tmpfs) -> String {
    let access = tmpfs.access.tmpfs_options();
    match &tmpfs.size {
        Some(size) => format!("{access},size={size}"),
        None => access,
    }
}

/// A mount table line as a backend shows the mount of `step` on `target`, its
/// file system named `null` for a null and `union` for a union step.
pub(crate) fn planned_line(step: Step, target: &Path, null: &str, union: &str) -> Mount {
    let (source, fstype) = match step {
        Step::Null(null_step) => (null_step.source.as_os_str(), null),
        Step::Union(union_step) => (union_step.upper.path.as_os_str(), union),
        Step::Tmpfs(_) => (std::ffi::OsStr::new("tmpfs"), "tmpfs"),
    };
    let ro = matches!(step, Step::Null(null_step) if null_step.read_only);
    Mount {
        source: source.to_os_string(),
        target: target.to_path_buf(),
        fstype: fstype.to_string(),
        options: vec![if ro { "ro" } else { "rw" }.to_string()],
        linux: None,
    }
}

/// A command to run inside a jail.
pub(crate) struct Exec<'a> {
    pub(crate) jail: &'a str,
    /// Linux: the root the sandbox pivots into (FreeBSD: jexec finds it by name;
    /// errors name it).
    pub(crate) root: &'a Path,
    /// Its whole environment, besides what the platform itself must set.
    pub(crate) env: &'a [(&'a str, &'a str)],
    pub(crate) cmd: &'a [String],
    /// Linux: the network the sandbox gives (FreeBSD: the jail's own, from jail.conf).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) network: crate::config::Network,
    /// Linux: what the sandbox holds for the run.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) hold: Hold<'a>,
}

/// What the sandbox's processes hold for the run (Linux): the jail's lock, kept
/// by its pid 1 to the end, and the run's cgroups (open `cgroup.procs` files),
/// which it joins before anything of the run exists.
#[derive(Clone, Copy, Default)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) struct Hold<'a> {
    pub(crate) lock: Option<std::os::fd::RawFd>,
    pub(crate) cgroups: &'a [std::os::fd::RawFd],
}

/// Make `command` (a jail's updater) start a session of its own, registered
/// before anything else it does in the child: no terminal of the caller's is its
/// controlling terminal, so `/dev/tty` gives ENXIO and TIOCSTI there is refused.
/// Its process group is its own too, which a time limit kills. When its stdin is
/// a terminal (the pseudo-terminal `jupdate -i` gives it) that one becomes its
/// controlling terminal; TIOCSCTTY without force takes no terminal another
/// session has, so it never takes the caller's.
pub(crate) fn own_session(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: after fork the closure makes only async-signal-safe system calls
    // (setsid, tcgetattr, ioctl) on its own stack; nothing allocates.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut modes: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut modes) == 0 && libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A jail's start or stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    Start,
    Stop,
}

/// A process that keeps a mount busy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) pid: u32,
    pub(crate) command: String,
    /// The jail it runs in, when the platform says (FreeBSD: the jail's name).
    pub(crate) jail: Option<String>,
    /// Its root directory when not `/` (Linux: a chroot's or jail's root).
    pub(crate) root: Option<PathBuf>,
    /// How it holds the mount: cwd, root, open file, mapping, ...
    pub(crate) how: Vec<&'static str>,
}

impl Holder {
    /// `pid 4242 make (cwd; jail web)`; a process whose root is `root` is said to
    /// be in jail `jail`.
    pub(crate) fn describe(&self, root: &Path, jail: &str) -> String {
        let mut what = self.how.join(", ");
        let place = self.jail.as_ref().map(|j| format!("jail {j}")).or_else(|| {
            self.root.as_ref().map(|dir| {
                if dir == root {
                    format!("jail {jail}")
                } else {
                    format!("root {}", dir.display())
                }
            })
        });
        if let Some(place) = place {
            what.push_str("; ");
            what.push_str(&place);
        }
        format!("pid {} {} ({what})", self.pid, self.command)
    }
}

/// One mount, as a backend names it for good: Linux's mount id, FreeBSD's file
/// system ID (in the hexadecimal form umount(8) takes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountId(pub(crate) String);

/// A mount just made: its id, and (Linux) a descriptor of its root.
#[derive(Debug)]
pub(crate) struct Mounted {
    pub(crate) id: MountId,
    /// What a Linux rollback detaches by; FreeBSD's unmount needs only the id.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fd: Option<std::os::fd::OwnedFd>,
}

/// The error for a target that is no longer what was checked: a jail changed it.
pub(crate) fn changed(target: &Place, what: &str) -> anyhow::Error {
    Domain::error(PlatformError::Changed {
        path: target.path.clone(),
        what: what.to_string(),
    })
}

/// What a backend does.
pub(crate) trait Platform: Sync {
    /// The mount table, in mount order; exact at and below `scope` (a backend may
    /// serve what it read before when nothing there can have changed since).
    fn mounts(&self, scope: &Path) -> Result<Arc<Vec<Mount>>>;

    /// Whether `mount` is the mount that `step` makes (file system type and source).
    fn matches(&self, step: Step, mount: &Mount) -> bool;

    /// Identify the top mount at `target`, which the table shows as `top`, by what
    /// a descriptor opened beneath the jail root finds there now.
    fn pin(&self, target: &Place, top: &Mount) -> Result<MountId>;

    /// Perform `step` on `target`, opened beneath the jail root; `below` is the
    /// mount that must be on top there first (the stack's previous step). Returns
    /// the new mount, checked to be on top at `target`, or undoes it and fails.
    fn mount(&self, step: Step, target: &Place, below: Option<&MountId>) -> Result<Mounted>;

    /// Let go of every descriptor kept from the mounts made so far (they keep
    /// the mounts busy): a jail's stacks are all mounted, or rolled back.
    fn release(&self) {}

    /// Take back a mount this run has just made, by what `mount` pinned: no path
    /// is looked up, so a jail racing the rollback cannot make it miss.
    fn discard(&self, made: Mounted) -> Result<()>;

    /// Remove mount `id`, the top one at `target` (forced: `umount -f`, lazy
    /// detach), never a mount a changed path would lead to.
    fn unmount(&self, target: &Place, id: &MountId, busy: Busy) -> Result<()>;

    /// The mount table's line for the mount `step` makes on `target`: what `-n`
    /// takes as made, so that it prints exactly what a run would take down again.
    fn planned(&self, step: Step, target: &Path) -> Mount;

    /// The sh command that performs `step`, for `-n`.
    fn mount_command(&self, step: Step, target: &Path) -> Vec<OsString>;

    /// Print `step` for `-n` as one sh command line that does exactly that mount.
    fn print_mount(&self, step: Step, target: &Path) {
        crate::report::sh_line(&self.mount_command(step, target));
    }

    /// umount(8)'s flag for [`Busy::Force`]: `-f` on FreeBSD, `-l` (lazy) on Linux.
    fn force_flag(&self) -> &'static str;

    /// The sh command that removes the top mount at `target`, for `-n`.
    fn unmount_command(&self, target: &Path, busy: Busy) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec!["umount".into()];
        if busy == Busy::Force {
            argv.push(self.force_flag().into());
        }
        argv.push(target.into());
        argv
    }

    /// A warning about the file system an upper dir lies in, for a union on
    /// `target` (FreeBSD: ZFS has no whiteouts).
    fn upper_warning(&self, _upper: &Path, _target: &Path, _table: &[Mount]) -> Option<String> {
        None
    }

    /// The processes that keep the mount at `target` busy.
    fn holders(&self, target: &Path) -> Vec<Holder>;

    /// For each of `targets`, the processes that keep its mount busy (one look
    /// for all of them where the platform can).
    fn holders_of(&self, targets: &[&Path]) -> Vec<Vec<Holder>> {
        targets.iter().map(|t| self.holders(t)).collect()
    }

    /// The union `top` as a forced unmount would leave it in use: its device
    /// (`major:minor`) and mount id. `None` where a forced unmount leaves nothing
    /// behind (FreeBSD's `umount -f` revokes the vnodes of the file system).
    fn detachable(&self, _top: &Mount) -> Option<(String, u64)> {
        None
    }

    /// The processes still using a detached file system, by
    /// [`Platform::detachable`]'s device and mount id.
    fn detached_users(&self, _dev: &str, _mnt: u64) -> Vec<Holder> {
        Vec::new()
    }

    /// What probably holds a busy mount, when no process is found holding it.
    fn busy_hint(&self, target: &Path) -> String;

    /// Whether the jail is running. Linux chroots have no such state: false.
    fn jail_running(&self, jail: &str) -> Result<bool>;

    /// Whether processes of the jail are still exiting after it was stopped
    /// (FreeBSD: `jail -r` does not wait for what it kills); `None` where the
    /// platform cannot tell.
    fn jail_exiting(&self, _jail: &str) -> Option<bool> {
        None
    }

    /// The command that starts (or stops) the jail when its config gives none;
    /// `None` where the platform has no notion of a running jail.
    fn service_command(&self, jail: &str, to: Service) -> Option<Vec<OsString>>;

    /// Start or stop `jail` with `argv` (its configured command or
    /// [`Platform::service_command`]). A platform that knows whether a jail runs
    /// checks that the command did what it is for: rc.d/jail exits 0 when a jail
    /// did not start or stop.
    fn service(&self, argv: &[OsString], _jail: &str, _to: Service) -> Result<()> {
        run_tool(argv, ExitCode::Unavailable)
    }

    /// The command that runs `cmd` inside the jail with `env` as its whole
    /// environment (besides what the platform itself must set).
    fn exec_command(&self, exec: &Exec) -> Command;

    /// When a command run by [`Platform::exec_command`] failed, and `output`
    /// (the start of what it printed) shows that the platform's own way into the
    /// jail failed before the command ran: the error that says why and what to do.
    fn exec_failed(&self, _exec: &Exec, _output: &str) -> Option<anyhow::Error> {
        None
    }

    /// Whether the updater's output may go through a pipe: only where nothing it
    /// starts outlives the run (else a daemon the update restarts would keep the
    /// pipe, and block on it or get SIGPIPE).
    fn output_through_pipe(&self) -> bool {
        false
    }

    /// [`Platform::exec_command`] as one sh command line, for `-n`.
    fn exec_sh_argv(&self, exec: &Exec) -> Vec<OsString> {
        argv_of(&self.exec_command(exec))
    }

    /// Put a run's limits in place (`None`: nothing to hold); they go when the
    /// result is dropped.
    fn limit(&self, _jail: &str, _limits: &Limits) -> Result<Option<Box<dyn Limited>>> {
        Ok(None)
    }

    /// What `-n` prints of a run's limits: sh lines before the update and after.
    fn limit_sh(&self, _jail: &str, _limits: &Limits) -> (Vec<String>, Vec<String>) {
        (Vec::new(), Vec::new())
    }
}

/// A run's limits, in place until dropped.
pub(crate) trait Limited: Sync {
    /// Linux: the run's cgroups (their open `cgroup.procs`), for the sandbox.
    fn cgroups(&self) -> &[std::os::fd::RawFd] {
        &[]
    }

    /// After the run: a line for each limit it ran into, and whether memory ran
    /// out (the kernel killed a process of the run for it).
    fn hit(&self) -> (Vec<String>, bool) {
        (Vec::new(), false)
    }
}

/// How long a busy unmount waits for a stopped jail's processes to exit: as long
/// as jail(8) waits for them to end by themselves (its default stop.timeout).
pub(crate) const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Do `attempt` again, with growing pauses, while it fails busy (75) and the
/// jail's processes are still exiting, for at most [`SETTLE`]: right after a
/// stop, they may still hold the jail's mounts. The last result is returned.
pub(crate) fn settle<T>(
    platform: &dyn Platform,
    jail: &str,
    mut attempt: impl FnMut() -> Result<T>,
) -> Result<T> {
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(50);
    // Attempts left once no process is exiting (any more): the last ones may
    // have gone between an attempt and the look, and a reference to a mount
    // can outlive its process by a moment.
    let mut grace = 3;
    loop {
        let result = attempt();
        let busy = matches!(&result, Err(e) if crate::exit::code_of(e) == ExitCode::TempFail);
        let left = SETTLE.saturating_sub(start.elapsed());
        if !busy || left.is_zero() {
            return result;
        }
        // Once none was exiting, not asked again.
        let exiting = grace == 3
            && match platform.jail_exiting(jail) {
                Some(exiting) => exiting,
                None => return result,
            };
        if !exiting {
            if grace == 0 {
                return result;
            }
            grace -= 1;
        }
        std::thread::sleep(pause.min(left));
        crate::signals::check()?;
        pause = (pause * 2).min(std::time::Duration::from_secs(1));
    }
}

/// The backend for `os`.
pub(crate) fn backend(os: Os) -> Result<Box<dyn Platform>> {
    match os {
        Os::FreeBsd => Ok(Box::new(freebsd::FreeBsd)),
        #[cfg(target_os = "linux")]
        Os::Linux => Ok(Box::new(linux::Linux::default())),
        #[cfg(not(target_os = "linux"))]
        Os::Linux => Err(Domain::error(crate::os::OsError::LinuxOnly)),
    }
}

/// The errno a tool's message names by its strerror(3) text (FreeBSD's and
/// Linux's wording): the one place text is read, since a tool tells no more.
fn errno_in(line: &str) -> Option<nix::errno::Errno> {
    use nix::errno::Errno;
    if line.contains("busy") {
        Some(Errno::EBUSY)
    } else if line.contains("Operation not permitted") {
        Some(Errno::EPERM)
    } else if line.contains("Permission denied") {
        Some(Errno::EACCES)
    } else {
        None
    }
}

/// Run a base-system tool; a failure carries the tool's own first stderr line.
pub(crate) fn run_tool(argv: &[OsString], code: ExitCode) -> Result<()> {
    run_tool_output(argv, code).map(drop)
}

/// [`run_tool`], giving back what the tool printed (stdout, then stderr). A
/// failure is a [`ToolError`]: its code is `code` unless its line names an errno
/// that means another ([`crate::exit::of_errno`]).
pub(crate) fn run_tool_output(argv: &[OsString], code: ExitCode) -> Result<String> {
    let tool = argv[0].to_string_lossy().into_owned();
    let out = match Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) => return Err(not_started(tool, &e, code).into()),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Ok(format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)));
    }
    let line = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let line = line.strip_prefix(&format!("{tool}: ")).unwrap_or(line);
    let errno = errno_in(line);
    let status = match out.status.code() {
        Some(exit) => format!("exit {exit}"),
        None => "killed by a signal".into(),
    };
    Err(ToolError {
        line: line.to_string(),
        status,
        errno,
        code: errno.map_or(code, |e| crate::exit::of_errno(e, code)),
        tool,
    }
    .into())
}

/// A tool that could not be started (`err`), told as the tool's own line.
fn not_started(tool: String, err: &std::io::Error, code: ExitCode) -> ToolError {
    ToolError {
        line: IoText(err).to_string(),
        status: String::new(),
        errno: err.raw_os_error().map(nix::errno::Errno::from_raw),
        code,
        tool,
    }
}

/// In a forked child before exec: every descriptor above stderr marked
/// close-on-exec, so that the program it execs starts with 0, 1 and 2 only (a
/// descriptor the caller left open, `flock DIR jupdate`, would otherwise reach
/// the host from the jail). Marked, not closed: the spawn's own pipe still
/// reports a failed exec. Async-signal-safe: no allocation.
pub(crate) fn cloexec_above_stderr() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    // SAFETY: close_range(2) with integer arguments.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } == 0;
    #[cfg(target_os = "freebsd")]
    // SAFETY: close_range(2) with integer arguments.
    let marked =
        unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) } == 0;
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    let marked = false;
    if marked {
        return Ok(());
    }
    // A kernel without CLOSE_RANGE_CLOEXEC (FreeBSD before 13.1): one descriptor
    // at a time, up to the limit.
    // SAFETY: sysconf with a constant.
    let highest = (unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }).clamp(0, 1 << 20) as libc::c_int;
    for fd in 3..=highest {
        // SAFETY: fcntl on a descriptor number; EBADF for one not open.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

#[cfg(test)]
mod tool_tests {
    use super::*;
    use crate::exit::{code_of, message};

    fn sh(script: &str) -> Vec<OsString> {
        ["sh", "-c", script].map(OsString::from).to_vec()
    }

    /// A tool's stderr is read once, where it ran: its first line (its own name
    /// stripped) is the message, the errno it names the code's cause.
    #[test]
    fn a_tools_line_and_its_errno() {
        let err = run_tool(
            &sh("echo >&2; echo 'sh: /x: Permission denied' >&2; exit 1"),
            ExitCode::Unavailable,
        )
        .unwrap_err();
        let tool = err.downcast_ref::<ToolError>().unwrap();
        assert_eq!(tool.errno, Some(nix::errno::Errno::EACCES));
        assert_eq!(code_of(&err), ExitCode::NoPerm);
        assert!(crate::exit::refused(&err));
        assert_eq!(format!("{err}"), "sh: /x: Permission denied");
        let err =
            run_tool(&sh("echo 'device busy' >&2; exit 1"), ExitCode::CantCreate).unwrap_err();
        assert_eq!(code_of(&err), ExitCode::TempFail);
        let err = run_tool(&sh("exit 3"), ExitCode::CantCreate).unwrap_err();
        assert_eq!(code_of(&err), ExitCode::CantCreate);
        assert!(!crate::exit::refused(&err));
        assert_eq!(format!("{err}"), "sh failed (exit 3)");
    }

    /// A tool that cannot be started: its name and the system call's text.
    #[test]
    fn a_tool_not_started() {
        let argv = [OsString::from("/nonexistent-jlayers-tool")];
        let err = run_tool_output(&argv, ExitCode::Unavailable).unwrap_err();
        assert_eq!(code_of(&err), ExitCode::Unavailable);
        assert_eq!(
            message(&err),
            "/nonexistent-jlayers-tool: No such file or directory"
        );
    }
}
