//! SIGINT and SIGTERM become a flag that long operations poll, so that every tool
//! can stop cleanly: roll back, restore, report what was done, exit 130.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::exit::{Coded, Domain, ExitCode};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static RESIZED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catch SIGINT and SIGTERM from now on.
pub(crate) fn install() {
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { sigaction(sig, &act) };
    }
}

extern "C" fn on_resize(_: libc::c_int) {
    RESIZED.store(true, Ordering::SeqCst);
}

/// Catch SIGWINCH (the terminal's window size changed) from now on.
pub(crate) fn watch_resize() {
    let act = SigAction::new(
        SigHandler::Handler(on_resize),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    let _ = unsafe { sigaction(Signal::SIGWINCH, &act) };
}

/// Whether the window size changed since the last call.
pub(crate) fn resized() -> bool {
    RESIZED.swap(false, Ordering::SeqCst)
}

pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// While above zero, [`check`] lets work go on: putting back what a run took
/// down must finish, interrupted or not.
static RESTORING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Run `work` to its end whatever signal comes ([`check`] passes meanwhile).
pub(crate) fn restoring<T>(work: impl FnOnce() -> T) -> T {
    RESTORING.fetch_add(1, Ordering::SeqCst);
    let out = work();
    RESTORING.fetch_sub(1, Ordering::SeqCst);
    out
}

/// The work stopped for a SIGINT or SIGTERM (130).
#[derive(Debug)]
pub(crate) struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

impl Coded for Interrupted {
    fn code(&self) -> ExitCode {
        ExitCode::Interrupted
    }
}

/// `Err(130)` once interrupted (not while [`restoring`]).
pub(crate) fn check() -> anyhow::Result<()> {
    if interrupted() && RESTORING.load(Ordering::SeqCst) == 0 {
        Err(Domain::error(Interrupted))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_code_and_line() {
        crate::exit::check_domain(Interrupted, ExitCode::Interrupted, "interrupted");
    }
}
