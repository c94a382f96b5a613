//! `jupdate -i`: the updater gets a pseudo-terminal of its own, which jupdate
//! relays to and from its own terminal (as script(1), `machinectl shell` and
//! `podman run -t` do). The updater never holds a descriptor of the admin's
//! terminal, so TIOCSTI or TIOCLINUX there cannot reach the admin's shell; what
//! it injects into its own terminal only it reads.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::termios::{self, SetArg, SpecialCharacterIndices, Termios};

use super::RunError;
use crate::exit::Domain;
use crate::signals;

/// No pseudo-terminal for the updater.
fn no_pty(errno: Errno) -> anyhow::Error {
    Domain::error(RunError::Pty(errno.into()))
}

/// jupdate's terminal cannot be read or set raw.
fn no_modes(errno: Errno) -> anyhow::Error {
    Domain::error(RunError::TerminalModes(errno.into()))
}

/// What jupdate reads for the updater.
#[derive(PartialEq, Eq)]
enum Input {
    /// stdin is jupdate's terminal, in raw mode for the run: every key goes on as
    /// is (^C included: the updater's terminal turns it into its SIGINT).
    Terminal,
    /// stdin is a pipe or a file: passed on, its end as the terminal's EOF.
    Other,
    /// Nothing (more) to read: stdin ended, or it is a terminal whose foreground
    /// jupdate is not (reading it would stop jupdate with SIGTTIN).
    Done,
}

/// The updater's pseudo-terminal and jupdate's side of it.
pub(crate) struct Relay {
    master: OwnedFd,
    /// The slave side, until the child has it.
    slave: Option<OwnedFd>,
    /// jupdate's terminal (0, 1 or 2), whose window size the updater's follows.
    sized: RawFd,
    input: Input,
    /// Read for the updater, not yet taken by its terminal.
    pending: Vec<u8>,
    /// The master side read its end: nothing holds the slave side any more.
    closed: bool,
    /// stdin's modes before the run, put back when the relay is dropped.
    restore: Option<Termios>,
}

fn borrowed(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: 0, 1 and 2 stay open for the whole life of the process.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

fn is_terminal(fd: RawFd) -> bool {
    termios::tcgetattr(borrowed(fd)).is_ok()
}

fn window_size(fd: RawFd) -> Option<libc::winsize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize to the pointer, a local.
    let got = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ as _, &mut size) };
    (got == 0).then_some(size)
}

impl Relay {
    /// A pseudo-terminal with the modes and window size of jupdate's terminal,
    /// and that terminal (stdin) in raw mode until the relay is dropped. `None`
    /// when none of stdin, stdout and stderr is a terminal: the updater then gets
    /// them as they are.
    pub(crate) fn open() -> Result<Option<Relay>> {
        let Some(sized) = [0, 1, 2].into_iter().find(|&fd| is_terminal(fd)) else {
            return Ok(None);
        };
        let modes = termios::tcgetattr(borrowed(sized)).ok();
        let size = window_size(sized);
        let pty = nix::pty::openpty(size.as_ref(), modes.as_ref()).map_err(no_pty)?;
        // Neither side leaks into what jupdate starts; jupdate never blocks on
        // the updater's terminal.
        for fd in [&pty.master, &pty.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(no_pty)?;
        }
        fcntl(&pty.master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(no_pty)?;
        let stdin = borrowed(0);
        let input = if !is_terminal(0) {
            Input::Other
        } else if nix::unistd::tcgetpgrp(stdin).ok() == Some(nix::unistd::getpgrp()) {
            Input::Terminal
        } else {
            Input::Done
        };
        let mut relay = Relay {
            master: pty.master,
            slave: Some(pty.slave),
            sized,
            input,
            pending: Vec::new(),
            closed: false,
            restore: None,
        };
        if relay.input == Input::Terminal {
            let before = termios::tcgetattr(stdin).map_err(no_modes)?;
            let mut raw = before.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(stdin, SetArg::TCSANOW, &raw).map_err(no_modes)?;
            relay.restore = Some(before);
        }
        signals::watch_resize();
        Ok(Some(relay))
    }

    /// The slave side, for the child's stdin, stdout and stderr: jupdate keeps
    /// none of it, so that the master side sees the end once the updater's side
    /// is all gone.
    pub(crate) fn take_slave(&mut self) -> Option<OwnedFd> {
        self.slave.take()
    }

    /// Relay what is ready, waiting at most `nap` (cut short by input, output,
    /// a signal or `wake` becoming readable).
    pub(crate) fn pump(&mut self, wake: Option<BorrowedFd<'_>>, nap: Duration) {
        if signals::resized() {
            if let Some(size) = window_size(self.sized) {
                // SAFETY: TIOCSWINSZ reads one winsize from the pointer, a local.
                // The updater's terminal sends its foreground group SIGWINCH.
                unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ as _, &size) };
            }
        }
        let stdin = borrowed(0);
        // Typed ahead is taken only as fast as the updater's terminal takes it.
        let read_input = self.input != Input::Done && self.pending.is_empty();
        let mut fds = Vec::with_capacity(3);
        if read_input {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
        if !self.closed {
            let mut flags = PollFlags::POLLIN;
            if !self.pending.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(self.master.as_fd(), flags));
        }
        if let Some(wake) = wake {
            fds.push(PollFd::new(wake, PollFlags::POLLIN));
        }
        let ms = PollTimeout::try_from(nap.as_millis().max(1) as i32).unwrap_or(PollTimeout::MAX);
        if fds.is_empty() {
            std::thread::sleep(nap);
            return;
        }
        // EINTR (a signal) ends the nap too.
        if poll(&mut fds, ms).unwrap_or(0) <= 0 {
            return;
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let input_ready = read_input && ready(&fds[0]);
        let master_ready = !self.closed && ready(&fds[usize::from(read_input)]);
        drop(fds);
        if input_ready {
            self.read_input();
        }
        if master_ready {
            self.write_pending();
            self.read_output();
        }
    }

    fn read_input(&mut self) {
        let mut buf = [0u8; 4096];
        match nix::unistd::read(borrowed(0), &mut buf) {
            // Someone else's read took it first (stdin shared, non-blocking).
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Ok(0) | Err(_) => {
                // A pipe's end is the updater's end of input: its terminal's EOF
                // character (a read there returns 0).
                if self.input == Input::Other {
                    let eof = termios::tcgetattr(&self.master).map_or(4, |t| {
                        t.control_chars[SpecialCharacterIndices::VEOF as usize]
                    });
                    self.pending.push(eof);
                }
                self.input = Input::Done;
            }
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
        }
    }

    fn write_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match nix::unistd::write(&self.master, &self.pending) {
            Ok(n) => {
                self.pending.drain(..n);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => self.pending.clear(),
        }
    }

    /// What the updater wrote, to jupdate's stdout. Returns whether anything was.
    fn read_output(&mut self) -> bool {
        let mut buf = [0u8; 16384];
        match nix::unistd::read(&self.master, &mut buf) {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                // A closed or full stdout loses the output, never the run.
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
                true
            }
            Err(Errno::EAGAIN | Errno::EINTR) => false,
            // EIO: the last holder of the slave side closed it.
            Err(_) => {
                self.closed = true;
                false
            }
        }
    }

    /// Once the updater has exited: what its terminal still holds, until nothing
    /// holds its side any more, or it stays quiet for a moment (something the
    /// updater left behind keeps it open), or for two seconds at most.
    pub(crate) fn drain(&mut self) {
        let end = Instant::now() + Duration::from_secs(2);
        while !self.closed && Instant::now() < end {
            let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(100u8)).unwrap_or(0) <= 0 {
                break;
            }
            if !self.read_output() && !self.closed {
                break;
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(before) = &self.restore {
            // Also when jupdate was put in the background meanwhile: SIGTTOU
            // would stop it there.
            let _ = without_sigttou(|| termios::tcsetattr(borrowed(0), SetArg::TCSANOW, before));
        }
    }
}

/// `run` with SIGTTOU ignored, as changing a terminal from a background group
/// needs.
fn without_sigttou<T>(run: impl FnOnce() -> T) -> T {
    use nix::sys::signal::{SigHandler, signal};
    // SAFETY: SIG_IGN and the previous disposition (restored right after) are
    // no handler code.
    let old = unsafe { signal(Signal::SIGTTOU, SigHandler::SigIgn) };
    let result = run();
    if let Ok(old) = old {
        // SAFETY: as above: it puts back what was there.
        let _ = unsafe { signal(Signal::SIGTTOU, old) };
    }
    result
}
