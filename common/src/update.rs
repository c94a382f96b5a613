//! Running the updater inside one jail (jupdate): the child's environment, its log,
//! its time limit, and killing its whole process group.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::exit::{ExitCode, OrFail};
use crate::platform::{Exec, Platform};
use crate::signals;

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
}

impl Outcome {
    pub(crate) fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout(_) => "timeout",
            Outcome::Failed(_) | Outcome::Interrupted(_) => "failed",
        }
    }

    pub(crate) fn status(self) -> i32 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed(c) | Outcome::Timeout(c) | Outcome::Interrupted(c) => c,
        }
    }

    /// The tool's exit status for this jail.
    pub(crate) fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Ok => ExitCode::Ok,
            Outcome::Failed(_) => ExitCode::Unavailable,
            Outcome::Timeout(_) => ExitCode::TempFail,
            Outcome::Interrupted(_) => ExitCode::Interrupted,
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
    /// Told each line of output as it comes (for a spinner).
    pub(crate) on_line: &'a (dyn Fn(&str) + Sync),
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
        }
    }

    /// The command as one sh line, for `-n`.
    pub(crate) fn sh_argv(&self) -> Vec<std::ffi::OsString> {
        self.platform.exec_sh_argv(&self.exec())
    }

    pub(crate) fn run(&self) -> Result<Outcome> {
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir).or_fail(ExitCode::CantCreate, || {
                format!("log dir {}", dir.display())
            })?;
        }
        // Appended: the log keeps each run's history (newsyslog or logrotate,
        // shipped with the install, rotates it).
        let mut log = File::options()
            .append(true)
            .create(true)
            .open(self.log)
            .or_fail(ExitCode::CantCreate, || {
                format!("log {}", self.log.display())
            })?;
        writeln!(
            log,
            "{}: jupdate: {}",
            utc_timestamp(SystemTime::now()),
            crate::report::sh_one_line(self.cmd)
        )
        .or_fail(ExitCode::CantCreate, || {
            format!("log {}", self.log.display())
        })?;

        // In a session and process group of its own (the platform's
        // exec_command), so that a timeout kills everything it started.
        let mut command = self.platform.exec_command(&self.exec());
        let mut output = None;
        let mut relay = None;
        if self.interactive {
            writeln!(log, "(interactive: the output went to the terminal)").ok();
            // A terminal of its own, relayed to jupdate's: never a descriptor of
            // the admin's terminal (TIOCSTI there types into the admin's shell).
            relay = crate::pty::Relay::open()?;
            if let Some(slave) = relay.as_mut().and_then(|r| r.take_slave()) {
                let clone = || {
                    slave
                        .try_clone()
                        .or_fail(ExitCode::Unavailable, || "pseudo-terminal".into())
                };
                command.stdin(clone()?).stdout(clone()?).stderr(slave);
            }
        } else {
            // Not through a pipe: a daemon the update restarts may keep its
            // output open long after the update ends, and must neither block nor
            // get SIGPIPE. Nor the log itself: `echo x >/dev/stderr` reopens it
            // through /proc/self/fd with O_TRUNC, which would wipe its history.
            // A file of this run's own, appended to the log when the run ends.
            let out = RunOutput::create(self.log)?;
            let clone = || {
                out.file
                    .try_clone()
                    .or_fail(ExitCode::CantCreate, || "log".into())
            };
            command
                .stdin(Stdio::null())
                .stdout(clone()?)
                .stderr(clone()?);
            output = Some(out);
        }
        let spawned = command.spawn();
        // The slave side of -i's terminal goes with it: the child's is the only one.
        drop(command);
        let mut child = match spawned {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.not_found(&mut log).unwrap_or_else(|| {
                    crate::exit::fail(
                        ExitCode::Unavailable,
                        format!("{}: not found in the jail", self.cmd[0]),
                    )
                }));
            }
            Err(err) => {
                return Err(err).or_fail(ExitCode::Unavailable, || {
                    format!("cannot run {}", self.cmd[0])
                });
            }
        };
        let outcome = self.wait(&mut child, output.as_ref(), relay.as_mut());
        // The terminal's last output, then its modes put back (also when dropped
        // on an error): however the run ended.
        if let Some(relay) = relay.as_mut() {
            relay.drain();
        }
        drop(relay);
        if let Some(out) = &output {
            out.append_to(&mut log);
        }
        let outcome = outcome?;
        // 127: the shell's and env(1)'s "not found" (jexec -l NAME env ... CMD);
        // the jail is asked whether that is what happened.
        if outcome == Outcome::Failed(127) && !self.interactive {
            if let Some(err) = self.not_found(&mut log) {
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
        let what = format!("{}: not found in the jail (PATH={path})", self.cmd[0]);
        writeln!(log, "jupdate: {}: {what}", self.jail).ok();
        Some(crate::exit::fail(ExitCode::Unavailable, what))
    }

    /// Wait for the child, killing its process group at the time limit or on
    /// SIGINT/SIGTERM.
    fn wait(
        &self,
        child: &mut Child,
        output: Option<&RunOutput>,
        mut relay: Option<&mut crate::pty::Relay>,
    ) -> Result<Outcome> {
        let start = Instant::now();
        let pgid = Pid::from_raw(child.id() as i32);
        let mut seen = 0u64;
        let mut last_look = Instant::now();
        let mut nap = Duration::from_millis(1);
        let exited = ExitWatch::new(child);
        loop {
            if last_look.elapsed() >= Duration::from_millis(250) {
                last_look = Instant::now();
                if let Some(out) = output {
                    self.latest_line(out, &mut seen);
                }
            }
            if let Some(st) = child
                .try_wait()
                .or_fail(ExitCode::Unavailable, || "wait".into())?
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

impl Run<'_> {
    /// Tell `on_line` the newest complete line this run's output has gained.
    fn latest_line(&self, out: &RunOutput, seen: &mut u64) {
        let len = out.file.metadata().map_or(0, |m| m.len());
        if len <= *seen {
            // Truncated (`>/dev/stderr`): new lines count from its new end.
            *seen = len;
            return;
        }
        // Only the tail matters for a one-line display.
        let from = (*seen).max(len.saturating_sub(4096));
        let mut buf = vec![0; (len - from) as usize];
        let Ok(read) = out.file.read_at(&mut buf, from) else {
            return;
        };
        buf.truncate(read);
        *seen = len;
        let text = String::from_utf8_lossy(&buf);
        if let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) {
            (self.on_line)(line.trim_end());
        }
    }
}

/// One run's output: a file of its own beside the log (on the host, never in the
/// jail), unlinked as soon as it is made, and appended to the log when the run
/// ends. Opened O_APPEND, so that a reopening with O_TRUNC leaves no hole.
struct RunOutput {
    file: File,
}

impl RunOutput {
    fn create(log: &Path) -> Result<RunOutput> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = log.parent().unwrap_or(Path::new("."));
        let base = log.file_name().unwrap_or_default();
        let mut last = None;
        for attempt in 0..100u32 {
            let mut name = std::ffi::OsString::from(".");
            name.push(base);
            name.push(format!(".run-{}-{attempt}", std::process::id()));
            let path = dir.join(name);
            // O_EXCL: a new file or nothing (never an existing file or a
            // symlink's target); owner-only.
            match File::options()
                .read(true)
                .append(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(file) => {
                    // Nothing left behind, whatever happens to jupdate.
                    let _ = std::fs::remove_file(&path);
                    return Ok(RunOutput { file });
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => last = Some(err),
                Err(err) => {
                    return Err(err)
                        .or_fail(ExitCode::CantCreate, || format!("log {}", log.display()));
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free name")))
            .or_fail(ExitCode::CantCreate, || format!("log {}", log.display()))
    }

    /// What the run wrote, appended to the log (up to its length now: a daemon
    /// still writing to it is not waited for).
    fn append_to(&self, log: &mut File) {
        let len = self.file.metadata().map_or(0, |m| m.len());
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0u64;
        while at < len {
            let want = buf.len().min((len - at) as usize);
            match self.file.read_at(&mut buf[..want], at) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if log.write_all(&buf[..read]).is_err() {
                        return;
                    }
                    at += read as u64;
                }
            }
        }
    }
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

/// The length of a log before a run appends to it: where its lines begin.
pub(crate) fn log_len(log: &Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

/// The last `count` lines a run wrote to a log from offset `from` on, for stderr (so
/// that cron mails them): never an earlier run's.
pub(crate) fn tail(log: &Path, from: u64, count: usize) -> Vec<String> {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(log) {
        if file.seek(SeekFrom::Start(from)).is_ok() {
            let _ = file.read_to_end(&mut text);
        }
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// `2026-11-23 20:55:00 UTC`, without a time zone database.
pub(crate) fn utc_timestamp(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil from days (Howard Hinnant's algorithm).
    let shifted = days as i64 + 719_468;
    let era = shifted.div_euclid(146_097);
    let doe = shifted - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_467_300);
        assert_eq!(utc_timestamp(time), "2026-11-23 20:55:00 UTC");
        assert_eq!(
            utc_timestamp(SystemTime::UNIX_EPOCH),
            "1970-01-01 00:00:00 UTC"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc_timestamp(leap), "2000-02-29 00:00:00 UTC");
    }
}
