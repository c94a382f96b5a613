//! Exit codes: the contract's sysexits, and how an error carries one to the edge.
//!
//! Errors are `anyhow` chains all the way up. Where the cause is classified, a
//! [`Fail`] is put in the chain (as the root error or as a context layer); the tool's
//! edge asks [`code_of`] for it. An error nobody classified is an operating failure (69).

use std::fmt;

/// The exit statuses the man pages give (EXIT STATUS; sysexits(3) values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ExitCode {
    Ok = 0,
    /// `jmount --status`: some layer shown is not mounted as configured.
    NotAllMounted = 1,
    /// EX_USAGE: bad flags, unknown jail name, nothing named.
    Usage = 64,
    /// EX_NOINPUT: a source or root directory is missing.
    NoInput = 66,
    /// EX_UNAVAILABLE: a mount, unmount, start, stop or update command failed.
    Unavailable = 69,
    /// EX_CANTCREAT: an upper or work dir cannot be created.
    CantCreate = 73,
    /// EX_IOERR: writing the output failed (a full disk, an I/O error).
    IoErr = 74,
    /// EX_TEMPFAIL: busy mount, live upper, jail locked, timeout.
    TempFail = 75,
    /// EX_NOPERM: not root, or a symlink in a target path.
    NoPerm = 77,
    /// EX_CONFIG: configuration file invalid.
    Config = 78,
    /// 128 + SIGINT.
    Interrupted = 130,
}

impl ExitCode {
    pub(crate) fn code(self) -> i32 {
        self as i32
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// An error (or a context layer) that says which exit status it means.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) code: ExitCode,
    pub(crate) msg: String,
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Fail {}

/// Several mistakes of one kind found in one go (a configuration's): the tools
/// print each on a line of its own.
#[derive(Debug)]
pub(crate) struct Failures {
    pub(crate) code: ExitCode,
    pub(crate) msgs: Vec<String>,
}

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msgs.join("; "))
    }
}

impl std::error::Error for Failures {}

/// A new classified error.
pub(crate) fn fail(code: ExitCode, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Fail {
        code,
        msg: msg.into(),
    })
}

/// The exit status an error stands for: the outermost [`Fail`] in its chain.
pub fn code_of(err: &anyhow::Error) -> ExitCode {
    // anyhow's downcast sees through context layers, both to context values and
    // to the root error.
    match (err.downcast_ref::<Fail>(), err.downcast_ref::<Failures>()) {
        (Some(fail), _) => fail.code,
        (None, Some(failures)) => failures.code,
        (None, None) => ExitCode::Unavailable,
    }
}

/// The exit status a failed system call means, the one mapping of errno for
/// every backend: not permitted 77, busy 75, anything else `otherwise`.
pub(crate) fn of_errno(errno: nix::errno::Errno, otherwise: ExitCode) -> ExitCode {
    use nix::errno::Errno;
    match errno {
        Errno::EPERM | Errno::EACCES => ExitCode::NoPerm,
        Errno::EBUSY => ExitCode::TempFail,
        _ => otherwise,
    }
}

/// Whether an error was caused by a permission refused (EPERM, EACCES), at any
/// depth of its chain.
pub(crate) fn refused(err: &anyhow::Error) -> bool {
    use nix::errno::Errno;
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
            || cause
                .downcast_ref::<Errno>()
                .is_some_and(|e| matches!(e, Errno::EPERM | Errno::EACCES))
            || {
                let text = cause.to_string();
                text.contains("Operation not permitted") || text.contains("Permission denied")
            }
    })
}

/// An error as the tools print it: its chain on one line, and `(run as root)`
/// when a permission refused to a user other than root is the cause.
pub(crate) fn message(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    let hint = code_of(err) == ExitCode::NoPerm
        && !nix::unistd::geteuid().is_root()
        && refused(err)
        && !text.contains("run as root");
    if hint {
        format!("{text} (run as root)")
    } else {
        text
    }
}

/// Attach a classified context to any error.
pub(crate) trait OrFail<T> {
    fn or_fail(self, code: ExitCode, msg: impl FnOnce() -> String) -> anyhow::Result<T>;
}

impl<T, E> OrFail<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    /// A permission refused is 77 (not permitted) whatever `code` says: the
    /// cause is who runs the tool, not what it was asked to do.
    fn or_fail(self, code: ExitCode, msg: impl FnOnce() -> String) -> anyhow::Result<T> {
        self.map_err(|err| {
            let err = err.into();
            let code = if refused(&err) {
                ExitCode::NoPerm
            } else {
                code
            };
            err.context(Fail { code, msg: msg() })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn code_survives_contexts() {
        let result: anyhow::Result<()> = Err(fail(ExitCode::NoPerm, "symlink"));
        let err = result.context("layer").context("jail").unwrap_err();
        assert_eq!(code_of(&err), ExitCode::NoPerm);
        assert_eq!(format!("{err:#}"), "jail: layer: symlink");
    }

    #[test]
    fn context_code_and_default() {
        let io: Result<(), std::io::Error> = Err(std::io::Error::other("boom"));
        let err = io
            .or_fail(ExitCode::CantCreate, || "mkdir x".into())
            .unwrap_err();
        assert_eq!(code_of(&err), ExitCode::CantCreate);
        assert_eq!(format!("{err:#}"), "mkdir x: boom");
        assert_eq!(code_of(&anyhow::anyhow!("plain")), ExitCode::Unavailable);
    }
}
