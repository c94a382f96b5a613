//! Running the updater inside one jail (jupdate): the child's environment, its log,
//! its time limit, and killing its whole process group.
//!
//! A run's entry in the log: a dated header line naming the command, the output as
//! it comes (at most `log_max` bytes of it, then a line saying what was cut), and a
//! dated result line (`exit 0 after 12m03s`, `timeout after ...`, ...). A run that
//! finds the entry before it without a result line says first that that run did
//! not finish.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::exit::{Coded, Domain, ExitCode};
use crate::platform::{Exec, Platform};
use crate::signals;

mod pty;

/// What the updater sees: no questions (BATCH), no pager, a dumb terminal.
pub(crate) const BATCH_ENV: &[(&str, &str)] =
    &[("BATCH", "yes"), ("PAGER", "cat"), ("TERM", "dumb")];

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    /// The command exited non-zero (its status, or 128 + signal).
    Failed(i32),
    /// Killed at the time limit (with the status it ended with).
    Timeout(i32),
    /// Killed because jupdate was interrupted.
    Interrupted(i32),
    /// Ended by the kernel's OOM killer at the run's memory limit (its status).
    OutOfMemory(i32),
}

impl Outcome {
    pub(crate) fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout(_) => "timeout",
            Outcome::Failed(_) | Outcome::Interrupted(_) | Outcome::OutOfMemory(_) => "failed",
        }
    }

    pub(crate) fn status(self) -> i32 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed(c)
            | Outcome::Timeout(c)
            | Outcome::Interrupted(c)
            | Outcome::OutOfMemory(c) => c,
        }
    }

    /// The tool's exit status for this jail.
    pub(crate) fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Ok => ExitCode::Ok,
            Outcome::Failed(_) | Outcome::OutOfMemory(_) => ExitCode::Unavailable,
            Outcome::Timeout(_) => ExitCode::TempFail,
            Outcome::Interrupted(_) => ExitCode::Interrupted,
        }
    }
}

/// Why the updater's run could not be set up, started or waited for.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The log's dir cannot be made.
    LogDir { dir: PathBuf, source: io::Error },
    /// The log cannot be opened or written, or the run's file beside it made.
    Log { log: PathBuf, source: io::Error },
    /// The updater's end of its output cannot be duplicated.
    Output(io::Error),
    /// No pipe for the updater's output.
    Pipe(io::Error),
    /// `-i`: no pseudo-terminal for the updater.
    Pty(io::Error),
    /// `-i`: jupdate's terminal cannot be read or set raw.
    TerminalModes(io::Error),
    /// The updater cannot be waited for.
    Wait(io::Error),
    /// The command is not in the jail; the jail's PATH when its sh could say.
    NotFound { cmd: String, path: Option<String> },
    /// The jail's file is not executable.
    NotExecutable { cmd: String },
    /// The updater cannot be started (any other cause).
    Start { cmd: String, source: io::Error },
}

impl RunError {
    /// The failed system call, if one is the cause.
    fn cause(&self) -> Option<&io::Error> {
        match self {
            RunError::LogDir { source, .. }
            | RunError::Log { source, .. }
            | RunError::Start { source, .. }
            | RunError::Output(source)
            | RunError::Pipe(source)
            | RunError::Pty(source)
            | RunError::TerminalModes(source)
            | RunError::Wait(source) => Some(source),
            RunError::NotFound { .. } | RunError::NotExecutable { .. } => None,
        }
    }

    /// For `map_err`: [`RunError::Log`] for the log at `log`.
    fn log(log: &Path) -> impl FnOnce(io::Error) -> anyhow::Error + '_ {
        move |source| {
            Domain::error(RunError::Log {
                log: log.to_path_buf(),
                source,
            })
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A system call's cause is shown after it (exit::text).
        match self {
            RunError::LogDir { dir, .. } => write!(f, "log dir {}", dir.display()),
            RunError::Log { log, .. } => write!(f, "log {}", log.display()),
            RunError::Output(_) => f.write_str("log"),
            RunError::Pipe(_) => f.write_str("pipe for the output"),
            RunError::Pty(_) => f.write_str("pseudo-terminal"),
            RunError::TerminalModes(_) => f.write_str("terminal modes"),
            RunError::Wait(_) => f.write_str("wait"),
            RunError::NotFound { cmd, path: None } => write!(f, "{cmd}: not found in the jail"),
            RunError::NotFound {
                cmd,
                path: Some(path),
            } => write!(f, "{cmd}: not found in the jail (PATH={path})"),
            RunError::NotExecutable { cmd } => write!(f, "{cmd}: not executable in the jail"),
            RunError::Start { cmd, .. } => write!(f, "cannot run {cmd}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause().map(|e| e as _)
    }
}

impl Coded for RunError {
    /// What could not be made is 73, what could not be run or relayed 69; a
    /// permission refused to jupdate is 77 (a jail's file that is not
    /// executable is the jail's: 69).
    fn code(&self) -> ExitCode {
        if self
            .cause()
            .is_some_and(|e| e.kind() == io::ErrorKind::PermissionDenied)
        {
            return ExitCode::NoPerm;
        }
        match self {
            RunError::LogDir { .. }
            | RunError::Log { .. }
            | RunError::Output(_)
            | RunError::Pipe(_) => ExitCode::CantCreate,
            RunError::Pty(_)
            | RunError::TerminalModes(_)
            | RunError::Wait(_)
            | RunError::NotFound { .. }
            | RunError::NotExecutable { .. }
            | RunError::Start { .. } => ExitCode::Unavailable,
        }
    }
}

/// One run of the updater.
pub(crate) struct Run<'a> {
    pub(crate) platform: &'a dyn Platform,
    pub(crate) jail: &'a str,
    pub(crate) root: &'a Path,
    pub(crate) cmd: &'a [String],
    /// The network the updater gets (Linux).
    pub(crate) network: crate::config::Network,
    pub(crate) log: &'a Path,
    pub(crate) timeout: Option<Duration>,
    /// The command gets this terminal; nothing is captured.
    pub(crate) interactive: bool,
    /// Told each line of output as it comes (for a spinner), made visible.
    pub(crate) on_line: &'a (dyn Fn(&str) + Sync),
    /// The most output the log gets of this run (`log_max`).
    pub(crate) log_max: u64,
    /// The run's last few KiB of output, for the failure tail.
    pub(crate) tail: &'a Mutex<Tail>,
    /// The jail's lock, which the run holds to its last process (Linux).
    pub(crate) lock: Option<std::os::fd::RawFd>,
    /// The run's limits in place ([`crate::action::Limit`]), if any.
    pub(crate) limited: Option<&'a dyn crate::platform::Limited>,
}

impl Run<'_> {
    /// The updater's environment: none of jupdate's for `-i`.
    fn env(&self) -> &'static [(&'static str, &'static str)] {
        if self.interactive { &[] } else { BATCH_ENV }
    }

    fn exec(&self) -> Exec<'_> {
        Exec {
            jail: self.jail,
            root: self.root,
            env: self.env(),
            cmd: self.cmd,
            network: self.network,
            hold: crate::platform::Hold {
                lock: self.lock,
                cgroups: &[],
            },
        }
    }

    /// The command as one sh line, for `-n`.
    pub(crate) fn sh_argv(&self) -> Vec<std::ffi::OsString> {
        self.platform.exec_sh_argv(&self.exec())
    }

    /// The run, its output into `log` ([`open_log`]'s).
    pub(crate) fn run(&self, mut log: File) -> Result<Outcome> {
        let begun = Instant::now();
        self.write_head(&mut log)?;
        let result = self.run_logged(&mut log);
        // However the run ended: an entry without this line is one jupdate did
        // not see to its end.
        let after = duration(begun.elapsed());
        let how = match &result {
            Ok(Outcome::Ok) => format!("exit 0 after {after}"),
            Ok(Outcome::Failed(code)) => format!("exit {code} after {after}"),
            Ok(Outcome::OutOfMemory(code)) => {
                format!("exit {code} after {after}: out of memory at the memory limit")
            }
            Ok(Outcome::Timeout(_)) => format!("timeout after {after}"),
            Ok(Outcome::Interrupted(_)) => format!("interrupted after {after}"),
            Err(err) => format!("error after {after}: {}", crate::exit::message(err)),
        };
        let _ = writeln!(
            log,
            "{}: jupdate: {how}",
            crate::report::utc_timestamp(SystemTime::now())
        );
        result
    }

    /// The run's first log line, after one telling of a run killed before its end.
    fn write_head(&self, log: &mut File) -> Result<()> {
        let now = crate::report::utc_timestamp(SystemTime::now());
        let mut head = String::new();
        // A log cut off mid-line (its run killed) gets this run's lines on lines of their own.
        let len = log.metadata().map_or(0, |m| m.len());
        let mut last = [b'\n'];
        if len > 0 && log.read_at(&mut last, len - 1).is_ok() && last != [b'\n'] {
            head.push('\n');
        }
        if let Some(started) = unfinished(log) {
            let which = started.map_or("the previous run".into(), |at| {
                format!("the run started {at}")
            });
            head += &format!("{now}: jupdate: {which} did not finish (jupdate was killed)\n");
        }
        head += &format!("{now}: jupdate: {}\n", crate::report::sh_one_line(self.cmd));
        log.write_all(head.as_bytes())
            .map_err(RunError::log(self.log))
    }

    /// Spawn the updater with its output going to the log, and wait for it.
    fn run_logged(&self, log: &mut File) -> Result<Outcome> {
        let mut exec = self.exec();
        if let Some(limited) = self.limited {
            exec.hold.cgroups = limited.cgroups();
        }
        // In a session and process group of its own (the platform's
        // exec_command), so that a timeout kills everything it started.
        let mut command = self.platform.exec_command(&exec);
        let (source, relay) = self.wire(&mut command, log)?;
        let child = self.spawn(command, log)?;
        let outcome = self.follow(child, source, relay, log)?;
        let outcome = self.limits_told(outcome, self.limited, log);
        self.judged(outcome, log)
    }

    /// The updater's standard descriptors: `-i`'s own terminal (relayed), or the
    /// log's source (a pipe or the log itself).
    fn wire(
        &self,
        command: &mut std::process::Command,
        log: &mut File,
    ) -> Result<(Option<Source>, Option<pty::Relay>)> {
        if self.interactive {
            writeln!(log, "(interactive: the output went to the terminal)").ok();
            // A terminal of its own, relayed to jupdate's: never a descriptor of
            // the admin's terminal (TIOCSTI there types into the admin's shell).
            let mut relay = pty::Relay::open()?;
            if let Some(slave) = relay.as_mut().and_then(|r| r.take_slave()) {
                let clone = || {
                    slave
                        .try_clone()
                        .map_err(|e| Domain::error(RunError::Pty(e)))
                };
                command.stdin(clone()?).stdout(clone()?).stderr(slave);
            }
            return Ok((None, relay));
        }
        let (out, into) = Source::new(self.platform.output_through_pipe(), self.log)?;
        let clone = || {
            into.try_clone()
                .map_err(|e| Domain::error(RunError::Output(e)))
        };
        command.stdin(Stdio::null()).stdout(clone()?).stderr(into);
        Ok((Some(out), None))
    }

    /// Start the updater; a command the jail lacks or cannot run is told so.
    fn spawn(&self, mut command: std::process::Command, log: &mut File) -> Result<Child> {
        let spawned = command.spawn();
        // Our end of the updater's output: a pipe ends when the run's last writer
        // is gone; the slave side of -i's terminal goes with it too.
        drop(command);
        let cmd = self.cmd[0].clone();
        match spawned {
            Ok(child) => Ok(child),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Err(self
                .not_found(log)
                .unwrap_or_else(|| Domain::error(RunError::NotFound { cmd, path: None }))),
            // The jail's file, not the administrator's permission: 69, not 77
            // (told by the variant, which holds no cause).
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                Err(Domain::error(RunError::NotExecutable { cmd }))
            }
            Err(source) => Err(Domain::error(RunError::Start { cmd, source })),
        }
    }

    /// Wait for the updater while its output goes to the log as it comes, on a
    /// thread of its own, so that the updater never waits on jupdate.
    fn follow(
        &self,
        mut child: Child,
        source: Option<Source>,
        mut relay: Option<pty::Relay>,
        log: &File,
    ) -> Result<Outcome> {
        let ended = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let copier = source.map(|source| {
                let into = log.try_clone();
                let ended = &ended;
                scope.spawn(move || {
                    if let Ok(into) = into {
                        let mut copy = Copy::new(into, self.log_max, self.on_line);
                        source.follow(&mut copy, ended);
                        copy.finish(self.tail);
                    }
                })
            });
            let outcome = self.wait(&mut child, relay.as_mut());
            // The terminal's last output, then its modes put back (also when
            // dropped on an error): however the run ended.
            if let Some(relay) = relay.as_mut() {
                relay.drain();
            }
            drop(relay);
            ended.store(true, Ordering::Release);
            if let Some(copier) = copier {
                copier.thread().unpark();
                let _ = copier.join();
            }
            outcome
        })
    }

    /// The limits the run hit, written to the log; a failure at the memory
    /// limit is told as out of memory.
    fn limits_told(
        &self,
        outcome: Outcome,
        limited: Option<&dyn crate::platform::Limited>,
        log: &mut File,
    ) -> Outcome {
        let Some(limited) = limited else {
            return outcome;
        };
        let (hit, out_of_memory) = limited.hit();
        for line in hit {
            writeln!(log, "jupdate: {}: {line}", self.jail).ok();
        }
        match (out_of_memory, outcome) {
            (true, Outcome::Failed(code)) => Outcome::OutOfMemory(code),
            _ => outcome,
        }
    }

    /// A failed run's cause when it is not the updater's own: a command the
    /// jail lacks, or the platform's way in.
    fn judged(&self, outcome: Outcome, log: &mut File) -> Result<Outcome> {
        // 127: the shell's and env(1)'s "not found" (jexec -l NAME env ... CMD);
        // the jail is asked whether that is what happened.
        if outcome == Outcome::Failed(127) && !self.interactive {
            if let Some(err) = self.not_found(log) {
                return Err(err);
            }
        }
        // A failure of the platform's own way in (FreeBSD: jexec), told apart
        // from the updater's by what the run printed (its last few KiB: all of
        // it, when the way in failed).
        if let (Outcome::Failed(_), false) = (outcome, self.interactive) {
            let printed = self.tail.lock().map(|t| t.text()).unwrap_or_default();
            if let Some(err) = self.platform.exec_failed(&self.exec(), &printed) {
                writeln!(
                    log,
                    "jupdate: {}: {}",
                    self.jail,
                    crate::exit::message(&err)
                )
                .ok();
                return Err(err);
            }
        }
        Ok(outcome)
    }

    /// When the command is not found in the jail: the error naming the jail's
    /// PATH (asked of the jail's own sh, as the updater would have been looked
    /// up), also written to the log. `None` when it is there after all, or the
    /// jail cannot say.
    fn not_found(&self, log: &mut File) -> Option<anyhow::Error> {
        let probe: Vec<String> = [
            "/bin/sh",
            "-c",
            "command -v \"$1\" >/dev/null 2>&1 && exit 0; printf 'PATH=%s\\n' \"$PATH\"; exit 127",
            "sh",
            &self.cmd[0],
        ]
        .map(String::from)
        .to_vec();
        let exec = Exec {
            cmd: &probe,
            ..self.exec()
        };
        let out = self
            .platform
            .exec_command(&exec)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if out.status.code() != Some(127) {
            return None;
        }
        // Only the probe's own answer counts: a 127 without it means the probe
        // itself could not run (no sh, or no env for the environment).
        let out = String::from_utf8_lossy(&out.stdout);
        let path = out.trim_end().strip_prefix("PATH=")?;
        let err = RunError::NotFound {
            cmd: self.cmd[0].clone(),
            path: Some(path.to_string()),
        };
        writeln!(log, "jupdate: {}: {err}", self.jail).ok();
        Some(Domain::error(err))
    }

    /// Wait for the child, killing its process group at the time limit or on
    /// SIGINT/SIGTERM.
    fn wait(&self, child: &mut Child, mut relay: Option<&mut pty::Relay>) -> Result<Outcome> {
        let start = Instant::now();
        let pgid = Pid::from_raw(child.id() as i32);
        let mut nap = Duration::from_millis(1);
        let exited = ExitWatch::new(child);
        loop {
            if let Some(st) = child
                .try_wait()
                .map_err(|e| Domain::error(RunError::Wait(e)))?
            {
                // -i: a ^C on the terminal goes through to the updater's own,
                // which sends its foreground group SIGINT; its death by it (130,
                // also as the Linux sandbox passes it on) ends the run as
                // interrupted.
                if self.interactive && status_code(st) == 130 {
                    stop_group(pgid);
                    return Ok(Outcome::Interrupted(status_code(st)));
                }
                return Ok(match status_code(st) {
                    0 => Outcome::Ok,
                    code => Outcome::Failed(code),
                });
            }
            let timed_out = self.timeout.is_some_and(|t| start.elapsed() >= t);
            if timed_out || signals::interrupted() {
                let code = kill_group(child, pgid);
                return Ok(if timed_out {
                    Outcome::Timeout(code)
                } else {
                    Outcome::Interrupted(code)
                });
            }
            // Short naps first (most per-jail overhead is here), then at most 50 ms
            // between looks at the clock and the interrupt flag; cut short when the
            // child exits, where the system can say so.
            match relay.as_deref_mut() {
                Some(relay) => relay.pump(exited.fd(), nap),
                None => exited.nap(nap),
            }
            nap = (nap * 2).min(Duration::from_millis(50));
        }
    }
}

/// Wakes a nap when the child exits: its pidfd on Linux (a child that exits right
/// after a nap began would otherwise cost the whole nap), a plain sleep elsewhere.
struct ExitWatch(#[cfg(target_os = "linux")] Option<std::os::fd::OwnedFd>);

impl ExitWatch {
    fn new(child: &Child) -> ExitWatch {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::FromRawFd;
            // SAFETY: pidfd_open takes a pid and flags. The child is not reaped yet,
            // so its pid is still its own.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::c_int, 0) };
            if fd < 0 {
                return ExitWatch(None);
            }
            // SAFETY: a new descriptor that nothing else owns.
            ExitWatch(Some(unsafe {
                std::os::fd::OwnedFd::from_raw_fd(fd as i32)
            }))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = child;
            ExitWatch()
        }
    }

    /// Readable once the child has exited, where the system can say so.
    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsFd;
            self.0.as_ref().map(|fd| fd.as_fd())
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }

    fn nap(&self, duration: Duration) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.0 {
            use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
            use std::os::fd::AsFd;
            let ms = PollTimeout::try_from(duration.as_millis().max(1) as i32)
                .unwrap_or(PollTimeout::MAX);
            // Readable once the child has exited; EINTR (a signal) ends the nap too.
            let _ = poll(&mut [PollFd::new(fd.as_fd(), PollFlags::POLLIN)], ms);
            return;
        }
        std::thread::sleep(duration);
    }
}

/// Where the updater's output comes from while it runs.
enum Source {
    /// A pipe's read end (Linux: nothing of the run outlives its sandbox, whose
    /// PID namespace dies with its pid 1, so the pipe ends with the run). A pipe
    /// makes no sparse file and cannot be cut short: `: >/dev/stdout` truncates
    /// nothing, and the log only ever gets what came through it.
    Pipe(OwnedFd),
    /// A file of the run's own beside the log (on the host, never in the jail),
    /// unlinked as soon as it is made, and followed as it grows (FreeBSD: a daemon
    /// the update restarts may keep its output open long after the update ends,
    /// and must neither block nor get SIGPIPE). Opened O_APPEND, so that a
    /// reopening with O_TRUNC leaves no hole.
    File(File),
}

impl Source {
    /// The source, and what the updater writes into.
    fn new(pipe: bool, log: &Path) -> Result<(Source, OwnedFd)> {
        if pipe {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| Domain::error(RunError::Pipe(e.into())))?;
            return Ok((Source::Pipe(read), write));
        }
        let file = run_file(log)?;
        let write = file.try_clone().map_err(RunError::log(log))?;
        Ok((Source::File(file), write.into()))
    }

    /// Copy what the run writes until it is over: a pipe to its end (a writer
    /// that got out of the run, passed on through a socket, is given 2 seconds
    /// once the run has ended), a file until the run has ended.
    fn follow(self, copy: &mut Copy, ended: &AtomicBool) {
        let mut buf = vec![0u8; 64 << 10];
        match self {
            Source::Pipe(fd) => {
                use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
                let mut pipe = File::from(fd);
                let mut over: Option<Instant> = None;
                loop {
                    let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
                    if poll(&mut fds, PollTimeout::from(100u16)).is_ok_and(|n| n > 0) {
                        match pipe.read(&mut buf) {
                            // Its last writer is gone.
                            Ok(0) => return,
                            Ok(read) => copy.take(&buf[..read]),
                            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => return,
                        }
                    }
                    if ended.load(Ordering::Acquire)
                        && over.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(2)
                    {
                        return;
                    }
                }
            }
            Source::File(file) => {
                let mut done = 0;
                loop {
                    let last = ended.load(Ordering::Acquire);
                    done = copy_new(&file, done, &mut buf, copy);
                    if last {
                        return;
                    }
                    // Woken at once when the run ends.
                    std::thread::park_timeout(Duration::from_millis(100));
                }
            }
        }
    }
}

/// A new file for one run's output beside `log`, already unlinked: nothing is left
/// behind, whatever happens to jupdate.
fn run_file(log: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = log.parent().unwrap_or(Path::new("."));
    let base = log.file_name().unwrap_or_default();
    let mut last = None;
    for attempt in 0..100u32 {
        let mut name = std::ffi::OsString::from(".");
        name.push(base);
        name.push(format!(".run-{}-{attempt}", std::process::id()));
        let path = dir.join(name);
        // O_EXCL: a new file or nothing (never an existing file or a symlink's
        // target); owner-only.
        match File::options()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(file) => {
                let _ = std::fs::remove_file(&path);
                return Ok(file);
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last = Some(err),
            Err(err) => return Err(RunError::log(log)(err)),
        }
    }
    Err(RunError::log(log)(
        last.unwrap_or_else(|| io::Error::other("no free name")),
    ))
}

/// Copy what `file` gained past `done` (its data only: a hole, from ftruncate or a
/// seek past the end, is no output); where it ends now. What was already copied is
/// never read again, so the run cannot rewrite it; a file cut short counts new
/// output from its new end.
fn copy_new(file: &File, done: u64, buf: &mut [u8], copy: &mut Copy) -> u64 {
    use std::os::fd::AsRawFd;
    let len = file.metadata().map_or(done, |m| m.len());
    let mut at = done.min(len);
    while at < len {
        let seek = |whence| {
            // SAFETY: lseek on a descriptor this File owns. The updater shares its
            // offset, which its O_APPEND writes do not use.
            let to = unsafe { libc::lseek(file.as_raw_fd(), at as libc::off_t, whence) };
            (to >= 0).then_some(to as u64)
        };
        let Some(data) = seek(libc::SEEK_DATA) else {
            // ENXIO: only a hole from here on.
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            // No SEEK_DATA here: all of it counts as data.
            let end = copy_range(file, at, len, buf, copy);
            at = end;
            break;
        };
        if data >= len {
            break;
        }
        let hole = seek(libc::SEEK_HOLE).map_or(len, |hole| hole.clamp(data, len));
        at = copy_range(file, data, hole.max(data + 1).min(len), buf, copy);
    }
    len.max(at)
}

/// Copy `from..to` of `file`; where it stopped.
fn copy_range(file: &File, from: u64, to: u64, buf: &mut [u8], copy: &mut Copy) -> u64 {
    let mut at = from;
    while at < to {
        let want = buf.len().min((to - at) as usize);
        match file.read_at(&mut buf[..want], at) {
            Ok(0) | Err(_) => return to,
            Ok(read) => {
                // NUL bytes dropped: a file system reports a hole's first page
                // as data (zeros up to the page's end); a log is text.
                for part in buf[..read].split(|&b| b == 0).filter(|p| !p.is_empty()) {
                    copy.take(part);
                }
                at += read as u64;
            }
        }
    }
    at
}

/// Where a run's output goes as it comes: the log (up to `log_max`), the failure
/// tail, and the spinner's line.
struct Copy<'a> {
    log: File,
    max: u64,
    logged: u64,
    /// What came past `max`.
    cut: u64,
    /// The log's last byte from this run ends a line (or there was none).
    ends_line: bool,
    tail: Tail,
    on_line: &'a (dyn Fn(&str) + Sync),
    told: Option<Instant>,
}

impl<'a> Copy<'a> {
    fn new(log: File, max: u64, on_line: &'a (dyn Fn(&str) + Sync)) -> Copy<'a> {
        Copy {
            log,
            max,
            logged: 0,
            cut: 0,
            ends_line: true,
            tail: Tail::default(),
            on_line,
            told: None,
        }
    }

    fn take(&mut self, data: &[u8]) {
        let room = self.max.saturating_sub(self.logged);
        let keep = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if keep > 0 {
            // A full disk loses output, never the run: it goes on being drained.
            let _ = self.log.write_all(&data[..keep]);
            self.logged += keep as u64;
            self.ends_line = data[keep - 1] == b'\n';
        }
        self.cut += (data.len() - keep) as u64;
        self.tail.push(data);
        // The spinner at most ten times a second, however fast lines come.
        if self
            .told
            .is_none_or(|told| told.elapsed() >= Duration::from_millis(100))
        {
            self.told = Some(Instant::now());
            self.tell();
        }
    }

    fn tell(&self) {
        if let Some(line) = self.tail.last_line() {
            (self.on_line)(&line);
        }
    }

    /// The end of the output: a line saying what was cut, and the tail handed over.
    fn finish(mut self, tail: &Mutex<Tail>) {
        if !self.ends_line {
            let _ = self.log.write_all(b"\n");
        }
        if self.cut > 0 {
            let _ = writeln!(
                self.log,
                "jupdate: {} bytes of output cut (log_max: {} bytes)",
                self.cut, self.max
            );
        }
        self.tell();
        if let Ok(mut given) = tail.lock() {
            *given = self.tail;
        }
    }
}

/// How many bytes of a run's output jupdate keeps in memory for its failure tail.
const TAIL_BYTES: usize = 8 << 10;

/// The last few KiB of a run's output: never more, whatever the run writes.
#[derive(Default)]
pub(crate) struct Tail {
    bytes: VecDeque<u8>,
    /// Earlier output was dropped: the first line may be a part of one.
    cut: bool,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(TAIL_BYTES)..];
        let over = (self.bytes.len() + data.len()).saturating_sub(TAIL_BYTES);
        if over > 0 {
            self.bytes.drain(..over);
            self.cut = true;
        }
        self.bytes.extend(data);
    }

    /// The text of the whole lines held.
    fn text(&self) -> String {
        let bytes: Vec<u8> = self.bytes.iter().copied().collect();
        let mut whole = &bytes[..];
        if self.cut {
            if let Some(newline) = whole.iter().position(|&b| b == b'\n') {
                whole = &whole[newline + 1..];
            }
        }
        String::from_utf8_lossy(whole).into_owned()
    }

    /// Its last `count` lines, control characters made visible.
    pub(crate) fn lines(&self, count: usize) -> Vec<String> {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(count)..]
            .iter()
            .map(|line| visible(line))
            .collect()
    }

    /// The newest line with something on it, as a terminal shows it (what
    /// follows its last carriage return), made visible: for a one-line display.
    fn last_line(&self) -> Option<String> {
        let text = self.text();
        let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
        let shown = line
            .trim_end_matches('\r')
            .rsplit('\r')
            .find(|part| !part.trim().is_empty())
            .unwrap_or(line);
        Some(visible(shown.trim_end()))
    }
}

/// `text` with its control characters made visible as `cat -v` shows them (`^[`
/// for ESC, `M-^[` for CSI), tabs kept, and bidirectional overrides named: the
/// updater's output never drives the admin's terminal or cron's mail.
pub(crate) fn visible(text: &str) -> String {
    use std::fmt::Write as _;
    let text = text.strip_suffix('\r').unwrap_or(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' => out.push('\t'),
            '\0'..='\x1f' => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            '\x7f' => out.push_str("^?"),
            '\u{80}'..='\u{9f}' => {
                out.push_str("M-^");
                out.push(char::from((c as u32 - 0x40) as u8));
            }
            // They reorder what follows them on the screen.
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                let _ = write!(out, "<U+{:04X}>", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `12m03s`: a run's duration, to the second.
fn duration(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    if hours > 0 {
        format!("{hours}h{minutes:02}m{seconds:02}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds:02}s")
    } else {
        format!("{seconds}s")
    }
}

/// A dated line of jupdate's in a log: (its date, what follows `jupdate: `).
fn dated(line: &str) -> Option<(&str, &str)> {
    let (date, rest) = (line.get(..23)?, line.get(23..)?);
    let shape = date.bytes().enumerate().all(|(index, b)| match index {
        4 | 7 => b == b'-',
        10 | 19 => b == b' ',
        13 | 16 => b == b':',
        20..=22 => b == b"UTC"[index - 20],
        _ => b.is_ascii_digit(),
    });
    let what = rest.strip_prefix(": jupdate: ")?;
    shape.then_some((date, what))
}

/// Whether a dated line of jupdate's ends a run's entry (or says one did not end).
fn ends_a_run(what: &str) -> bool {
    let after = |prefix: &str| {
        what.strip_prefix(prefix)
            .is_some_and(|r| r.contains(" after "))
    };
    let exit = what
        .strip_prefix("exit ")
        .and_then(|rest| rest.split_once(" after "))
        .is_some_and(|(code, _)| !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()));
    exit || after("timeout")
        || after("interrupted")
        || after("error")
        || what.ends_with(" did not finish (jupdate was killed)")
}

/// How much of the log's end is read for the entry before a run: only a little,
/// however long the log.
const LAST_ENTRY_BYTES: u64 = 4 << 10;

/// `Some` when the log's last entry has no result line (jupdate was killed: SIGKILL,
/// the OOM killer, a power cut), with the date that run started when its header is
/// in the log's last few KiB.
fn unfinished(log: &File) -> Option<Option<String>> {
    let len = log.metadata().ok()?.len();
    if len == 0 {
        return None;
    }
    let from = len.saturating_sub(LAST_ENTRY_BYTES);
    let mut buf = vec![0; (len - from) as usize];
    let read = log.read_at(&mut buf, from).ok()?;
    buf.truncate(read);
    let text = String::from_utf8_lossy(&buf);
    let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
    if dated(last).is_some_and(|(_, what)| ends_a_run(what)) {
        return None;
    }
    let header = text
        .lines()
        .rev()
        .filter_map(dated)
        .find(|(_, what)| !ends_a_run(what));
    Some(header.map(|(date, _)| date.to_string()))
}
/// What is left of a group whose leader has exited: SIGTERM, SIGKILL shortly after.
fn stop_group(pgid: Pid) {
    if killpg(pgid, Signal::SIGTERM).is_ok() {
        std::thread::sleep(Duration::from_millis(200));
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

/// SIGTERM to the group, SIGKILL after a grace period; then reap the leader and
/// make sure no member is left.
fn kill_group(child: &mut Child, pgid: Pid) -> i32 {
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut status = None;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            status = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Whatever of the group is left (or ignored SIGTERM) goes now.
    let _ = killpg(pgid, Signal::SIGKILL);
    let st = match status {
        Some(st) => st,
        None => match child.wait() {
            Ok(st) => st,
            Err(_) => return 137,
        },
    };
    status_code(st)
}

fn status_code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// The jail's log, its dir made when missing. Appended: the log keeps each
/// run's history (newsyslog or logrotate, shipped with the install, rotates it).
pub(crate) fn open_log(log: &Path) -> Result<File> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|source| {
            Domain::error(RunError::LogDir {
                dir: dir.to_path_buf(),
                source,
            })
        })?;
    }
    File::options()
        .read(true)
        .append(true)
        .create(true)
        .open(log)
        .map_err(RunError::log(log))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Seek;

    /// What keeps the log from being written: 73.
    #[test]
    fn run_error_codes_and_lines_of_the_log() {
        use crate::exit::check_domain as check;
        let os = io::Error::from_raw_os_error;
        let log = || PathBuf::from("/var/log/jlayers/web.log");
        check(
            RunError::LogDir {
                dir: "/var/log/jlayers".into(),
                source: os(libc::EROFS),
            },
            ExitCode::CantCreate,
            "log dir /var/log/jlayers: Read-only file system",
        );
        check(
            RunError::Log {
                log: log(),
                source: os(libc::ENOSPC),
            },
            ExitCode::CantCreate,
            "log /var/log/jlayers/web.log: No space left on device",
        );
        check(
            RunError::Log {
                log: log(),
                source: io::Error::other("no free name"),
            },
            ExitCode::CantCreate,
            "log /var/log/jlayers/web.log: no free name",
        );
        check(
            RunError::Output(os(libc::EMFILE)),
            ExitCode::CantCreate,
            "log: Too many open files",
        );
        check(
            RunError::Pipe(os(libc::EMFILE)),
            ExitCode::CantCreate,
            "pipe for the output: Too many open files",
        );
    }

    /// What keeps the command from running or being watched: 69.
    #[test]
    fn run_error_codes_and_lines_of_the_command() {
        use crate::exit::check_domain as check;
        let os = io::Error::from_raw_os_error;
        let cmd = || "portmaster".to_string();
        check(
            RunError::Pty(os(libc::ENOENT)),
            ExitCode::Unavailable,
            "pseudo-terminal: No such file or directory",
        );
        check(
            RunError::TerminalModes(os(libc::ENOTTY)),
            ExitCode::Unavailable,
            &format!("terminal modes: {}", nix::errno::Errno::ENOTTY.desc()),
        );
        check(
            RunError::Wait(os(libc::ECHILD)),
            ExitCode::Unavailable,
            "wait: No child processes",
        );
        check(
            RunError::NotFound {
                cmd: cmd(),
                path: None,
            },
            ExitCode::Unavailable,
            "portmaster: not found in the jail",
        );
        check(
            RunError::NotFound {
                cmd: cmd(),
                path: Some("/bin:/usr/bin".into()),
            },
            ExitCode::Unavailable,
            "portmaster: not found in the jail (PATH=/bin:/usr/bin)",
        );
        check(
            RunError::NotExecutable { cmd: cmd() },
            ExitCode::Unavailable,
            "portmaster: not executable in the jail",
        );
        check(
            RunError::Start {
                cmd: cmd(),
                source: os(libc::E2BIG),
            },
            ExitCode::Unavailable,
            "cannot run portmaster: Argument list too long",
        );
    }

    /// A permission refused to jupdate is 77, whatever it was refused.
    #[test]
    fn run_error_refused_is_77() {
        use crate::exit::check_domain as check;
        let os = io::Error::from_raw_os_error;
        let log = || PathBuf::from("/var/log/jlayers/web.log");
        check(
            RunError::Log {
                log: log(),
                source: os(libc::EACCES),
            },
            ExitCode::NoPerm,
            "log /var/log/jlayers/web.log: Permission denied",
        );
        check(
            RunError::Pty(os(libc::EPERM)),
            ExitCode::NoPerm,
            "pseudo-terminal: Operation not permitted",
        );
    }

    /// A log under a file: its dir not made (73), the cause shown by its text.
    #[test]
    fn log_not_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = open_log(&file.join("logs/web.log")).unwrap_err();
        assert!(matches!(
            err.downcast_ref::<Domain>()
                .and_then(Domain::get::<RunError>),
            Some(RunError::LogDir { .. })
        ));
        assert_eq!(crate::exit::code_of(&err), ExitCode::CantCreate);
        assert_eq!(
            crate::exit::text(&err),
            format!("log dir {}/logs: Not a directory", file.display())
        );
        let err = open_log(tmp.path()).unwrap_err();
        assert!(matches!(
            err.downcast_ref::<Domain>()
                .and_then(Domain::get::<RunError>),
            Some(RunError::Log { .. })
        ));
        assert_eq!(
            crate::exit::text(&err),
            format!("log {}: Is a directory", tmp.path().display())
        );
    }

    #[test]
    fn control_characters_made_visible() {
        assert_eq!(
            visible("\x1b]0;pwned\x07\x1b[2J\tok\x7f\u{9b}31m\r\n\0\r"),
            "^[]0;pwned^G^[[2J\tok^?M-^[31m^M^J^@"
        );
        assert_eq!(visible("abc\u{202e}cba é"), "abc<U+202E>cba é");
    }

    #[test]
    fn tail_keeps_the_last_lines_only() {
        let mut tail = Tail::default();
        tail.push(b"one\ntwo\n\x1b[2Jthree");
        assert_eq!(tail.lines(2), ["two", "^[[2Jthree"]);
        assert_eq!(tail.last_line().as_deref(), Some("^[[2Jthree"));
        for _ in 0..10_000 {
            tail.push(b"0123456789abcdef\n");
        }
        tail.push(b"50%\r60%\r\n\n");
        assert!(tail.bytes.len() <= TAIL_BYTES);
        assert_eq!(tail.lines(3), ["0123456789abcdef", "50%^M60%", ""]);
        assert_eq!(tail.last_line().as_deref(), Some("60%"));
        tail.push(&vec![b'x'; 3 * TAIL_BYTES]);
        assert_eq!(tail.bytes.len(), TAIL_BYTES);
        // Only part of a line is held: it is all there is.
        assert_eq!(tail.lines(1)[0].len(), TAIL_BYTES);
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_millis(900)), "0s");
        assert_eq!(duration(Duration::from_secs(59)), "59s");
        assert_eq!(duration(Duration::from_secs(12 * 60 + 3)), "12m03s");
        assert_eq!(duration(Duration::from_secs(4 * 3600 + 5)), "4h00m05s");
    }

    fn log_with(text: &str) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn an_entry_without_its_result_line_did_not_finish() {
        let header = "2026-12-02 18:00:00 UTC: jupdate: portmaster -a\n";
        for ended in [
            "exit 0 after 12m03s",
            "exit 2 after 1s",
            "timeout after 6h00m00s",
            "interrupted after 3s",
            "error after 0s: x: not found in the jail (PATH=/bin)",
        ] {
            let log = log_with(&format!(
                "{header}out\n2026-12-02 18:12:03 UTC: jupdate: {ended}\n"
            ));
            assert_eq!(unfinished(&log), None, "{ended}");
        }
        assert_eq!(unfinished(&log_with("")), None);
        let killed = log_with(&format!("{header}building\n"));
        assert_eq!(
            unfinished(&killed),
            Some(Some("2026-12-02 18:00:00 UTC".into()))
        );
        // Its header out of reach: said without a date.
        let long = log_with(&format!("{header}{}", "x\n".repeat(4096)));
        assert_eq!(unfinished(&long), Some(None));
        // The line saying so is no header itself.
        let twice = log_with(&format!(
            "{header}2026-12-02 19:00:00 UTC: jupdate: the run started 2026-12-02 18:00:00 UTC \
             did not finish (jupdate was killed)\n2026-12-02 19:00:00 UTC: jupdate: ls\n"
        ));
        assert_eq!(
            unfinished(&twice),
            Some(Some("2026-12-02 19:00:00 UTC".into()))
        );
        // An output line that merely looks like one does not end the entry.
        let fake = log_with(&format!("{header}exit 0 after 1s\n"));
        assert!(unfinished(&fake).is_some());
    }

    #[test]
    fn a_files_holes_are_no_output() {
        // O_APPEND, as a run's own file is.
        let named = tempfile::NamedTempFile::new().unwrap();
        let file = File::options()
            .read(true)
            .append(true)
            .open(named.path())
            .unwrap();
        (&file).write_all(b"before\n").unwrap();
        let tail = Mutex::new(Tail::default());
        let log = tempfile::tempfile().unwrap();
        let no_line = |_: &str| {};
        let mut copy = Copy::new(log.try_clone().unwrap(), 1 << 20, &no_line);
        let mut buf = vec![0; 4096];
        let done = copy_new(&file, 0, &mut buf, &mut copy);
        assert_eq!(done, 7);
        file.set_len(200 << 20).unwrap();
        (&file).write_all(b"after\n").unwrap();
        let done = copy_new(&file, done, &mut buf, &mut copy);
        assert_eq!(done, (200 << 20) + 6);
        // Cut short and written again: counted from its new end, the history kept.
        file.set_len(0).unwrap();
        assert_eq!(copy_new(&file, done, &mut buf, &mut copy), 0);
        (&file).write_all(b"again\n").unwrap();
        copy_new(&file, 0, &mut buf, &mut copy);
        copy.finish(&tail);
        let mut text = String::new();
        (&log).seek(std::io::SeekFrom::Start(0)).unwrap();
        (&log).read_to_string(&mut text).unwrap();
        assert_eq!(text, "before\nafter\nagain\n");
        assert_eq!(tail.lock().unwrap().lines(5), ["before", "after", "again"]);
    }

    #[test]
    fn output_past_log_max_is_cut_and_counted() {
        let log = tempfile::tempfile().unwrap();
        let no_line = |_: &str| {};
        let mut copy = Copy::new(log.try_clone().unwrap(), 10, &no_line);
        copy.take(b"0123456");
        copy.take(b"789abcdef\n");
        copy.take(b"more\n");
        let tail = Mutex::new(Tail::default());
        copy.finish(&tail);
        let mut text = String::new();
        (&log).seek(std::io::SeekFrom::Start(0)).unwrap();
        (&log).read_to_string(&mut text).unwrap();
        assert_eq!(
            text,
            "0123456789\njupdate: 12 bytes of output cut (log_max: 10 bytes)\n"
        );
        assert_eq!(tail.lock().unwrap().lines(1), ["more"]);
    }
}
