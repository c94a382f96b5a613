//! Exit codes: the contract's sysexits, and how an error carries one to the edge.
//!
//! Errors are `anyhow` chains all the way up. Where the cause is classified, a
//! [`Coded`] error is in the chain: a domain's own enum (in a [`Domain`]: the
//! lock's `LockError`, the engine's `StackError`, ...), a configuration's
//! [`Failures`], or a base tool's [`ToolError`]; the tool's edge asks
//! [`code_of`] for it. An error nobody
//! classified is an operating failure (69). What an error is caused by (a
//! permission refused) is told by its types, never by its text; an I/O error is
//! shown by its description only ([`IoText`]).

use std::fmt;

use nix::errno::Errno;

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

/// An error type that knows the exit status it means: [`code_of`] asks each of
/// the types that implement it, so a domain's error carries its own code.
pub(crate) trait Coded {
    fn code(&self) -> ExitCode;
}

/// A domain's own error type (as lock.rs's `LockError`): carried in a
/// [`Domain`], so that the edge asks its code without knowing the domain (the
/// edge is imported by every domain, never the other way).
pub(crate) trait DomainError: Coded + std::error::Error + Send + Sync + 'static {
    /// For [`Domain::get`]: a test looks at the domain's own error.
    #[cfg_attr(not(test), allow(dead_code))]
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Every coded error type is one: a domain writes its enum, its `Display` and
/// its `Coded`, nothing more.
impl<T: Coded + std::error::Error + Send + Sync + 'static> DomainError for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Any [`DomainError`], as one type the edge finds in an error's chain.
#[derive(Debug)]
pub(crate) struct Domain(Box<dyn DomainError>);

impl Domain {
    pub(crate) fn error(err: impl DomainError) -> anyhow::Error {
        anyhow::Error::new(Domain(Box::new(err)))
    }

    /// The domain's own error, if it is a `T`.
    #[cfg(test)]
    pub(crate) fn get<T: 'static>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }
}

/// For a domain's tests: `err` as the tools get it (found by [`Domain::get`],
/// through a context too), its exit status, and its one line: [`text`], and
/// `{:#}` itself when no I/O cause is shown (std's would add "(os error N)").
#[cfg(test)]
pub(crate) fn check_domain<T: DomainError>(err: T, code: ExitCode, line: &str) {
    let err = Domain::error(err);
    let found = |e: &anyhow::Error| {
        e.downcast_ref::<Domain>()
            .and_then(Domain::get::<T>)
            .is_some()
    };
    assert!(found(&err), "{line}");
    assert_eq!(code_of(&err), code, "{line}");
    assert_eq!(text(&err), line);
    if err.chain().count() == 1 {
        assert_eq!(format!("{err:#}"), line);
    }
    let err = err.context("jail web");
    assert!(found(&err), "{line}");
    assert_eq!(code_of(&err), code, "{line}");
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Domain {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Coded for Domain {
    fn code(&self) -> ExitCode {
        self.0.code()
    }
}

/// An error (or a context layer) that says which exit status it means, with
/// no domain of its own: for tests and the fake platform only (the tools'
/// errors are each a domain's).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) code: ExitCode,
    pub(crate) msg: String,
    /// The failed system call's errno when `msg` tells it, so that [`refused`]
    /// knows the cause without reading the text.
    pub(crate) errno: Option<Errno>,
}

#[cfg(test)]
impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

#[cfg(test)]
impl std::error::Error for Fail {}

#[cfg(test)]
impl Coded for Fail {
    fn code(&self) -> ExitCode {
        self.code
    }
}

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

impl Coded for Failures {
    fn code(&self) -> ExitCode {
        self.code
    }
}

/// A base-system tool that failed: its first stderr line (or how it ended), and
/// the errno that line names, read once where the tool ran.
#[derive(Debug)]
pub(crate) struct ToolError {
    /// The program, as named in the message.
    pub(crate) tool: String,
    /// The tool's first stderr line, its own name stripped; empty when silent.
    pub(crate) line: String,
    /// How the tool ended (`exit 1`, `killed by a signal`), shown when silent.
    pub(crate) status: String,
    pub(crate) errno: Option<Errno>,
    pub(crate) code: ExitCode,
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line.is_empty() {
            write!(f, "{} failed ({})", self.tool, self.status)
        } else {
            write!(f, "{}: {}", self.tool, self.line)
        }
    }
}

impl std::error::Error for ToolError {}

impl Coded for ToolError {
    fn code(&self) -> ExitCode {
        self.code
    }
}

/// An I/O error shown as the tools show every failed system call: its
/// description only, without std's "(os error N)".
pub(crate) struct IoText<'a>(pub(crate) &'a std::io::Error);

impl fmt::Display for IoText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.raw_os_error() {
            Some(raw) => f.write_str(Errno::from_raw(raw).desc()),
            None => fmt::Display::fmt(self.0, f),
        }
    }
}

/// A new classified error (tests).
#[cfg(test)]
pub(crate) fn fail(code: ExitCode, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Fail {
        code,
        msg: msg.into(),
        errno: None,
    })
}

/// A new classified error for a failed system call whose description `msg`
/// tells (tests).
#[cfg(test)]
pub(crate) fn fail_errno(code: ExitCode, errno: Errno, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Fail {
        code,
        msg: msg.into(),
        errno: Some(errno),
    })
}

/// Finds one [`Coded`] type in an error's chain.
type Probe = fn(&anyhow::Error) -> Option<&dyn Coded>;

/// The [`Coded`] error an error's chain holds, if any (in tests a `Fail` first:
/// it may be a context layer put around any of the others).
fn coded(err: &anyhow::Error) -> Option<&dyn Coded> {
    #[cfg(test)]
    if let Some(fail) = err.downcast_ref::<Fail>() {
        return Some(fail);
    }
    // anyhow's downcast sees through context layers, both to context values and
    // to the root error.
    const PROBES: [Probe; 3] = [
        |e| e.downcast_ref::<Domain>().map(|c| c as &dyn Coded),
        |e| e.downcast_ref::<ToolError>().map(|c| c as &dyn Coded),
        |e| e.downcast_ref::<Failures>().map(|c| c as &dyn Coded),
    ];
    PROBES.iter().find_map(|probe| probe(err))
}

/// The exit status an error stands for: its [`Coded`] error's; an error nobody
/// classified is an operating failure (69).
pub fn code_of(err: &anyhow::Error) -> ExitCode {
    coded(err).map_or(ExitCode::Unavailable, Coded::code)
}

/// The exit status a failed system call means, the one mapping of errno for
/// every backend: not permitted 77, busy 75, anything else `otherwise`.
pub(crate) fn of_errno(errno: Errno, otherwise: ExitCode) -> ExitCode {
    match errno {
        Errno::EPERM | Errno::EACCES => ExitCode::NoPerm,
        Errno::EBUSY => ExitCode::TempFail,
        _ => otherwise,
    }
}

/// [`of_errno`] for an I/O error: its errno's code, `otherwise` without one.
pub(crate) fn of_io(err: &std::io::Error, otherwise: ExitCode) -> ExitCode {
    err.raw_os_error()
        .map_or(otherwise, |raw| of_errno(Errno::from_raw(raw), otherwise))
}

/// The errno an error of the chain carries: a system call's, an I/O error's, a
/// tool's (or, in tests, one a `Fail` was made with).
fn errno_of(cause: &(dyn std::error::Error + 'static)) -> Option<Errno> {
    if let Some(errno) = cause.downcast_ref::<Errno>() {
        return Some(*errno);
    }
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        return io.raw_os_error().map(Errno::from_raw);
    }
    if let Some(tool) = cause.downcast_ref::<ToolError>() {
        return tool.errno;
    }
    #[cfg(test)]
    if let Some(fail) = cause.downcast_ref::<Fail>() {
        return fail.errno;
    }
    None
}

/// Whether an error was caused by a permission refused (EPERM, EACCES), at any
/// depth of its chain; told by the errors' types, never by their text.
pub(crate) fn refused(err: &anyhow::Error) -> bool {
    let denied = |cause: &(dyn std::error::Error + 'static)| {
        matches!(errno_of(cause), Some(Errno::EPERM | Errno::EACCES))
            || cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
    };
    err.chain().any(denied)
}

/// An error's chain on one line, as `{:#}` shows it, but an I/O error by its
/// description only ([`IoText`]).
pub(crate) fn text(err: &anyhow::Error) -> String {
    chain_text(err.chain())
}

/// [`text`] without the outermost context: what it says the cause of.
pub(crate) fn cause_text(err: &anyhow::Error) -> String {
    chain_text(err.chain().skip(1))
}

fn chain_text<'e>(chain: impl Iterator<Item = &'e (dyn std::error::Error + 'static)>) -> String {
    let shown: Vec<String> = chain
        .map(|cause| match cause.downcast_ref::<std::io::Error>() {
            Some(io) => IoText(io).to_string(),
            None => cause.to_string(),
        })
        .collect();
    shown.join(": ")
}

/// An error as the tools print it: its chain on one line, and `(run as root)`
/// when a permission refused to a user other than root is the cause.
pub(crate) fn message(err: &anyhow::Error) -> String {
    let text = text(err);
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
        let err = anyhow::Error::new(std::io::Error::other("boom")).context(Fail {
            code: ExitCode::CantCreate,
            msg: "mkdir x".into(),
            errno: None,
        });
        assert_eq!(code_of(&err), ExitCode::CantCreate);
        assert_eq!(format!("{err:#}"), "mkdir x: boom");
        assert_eq!(code_of(&anyhow::anyhow!("plain")), ExitCode::Unavailable);
    }

    #[test]
    fn io_errors_without_the_os_error_suffix() {
        let gone = || std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(IoText(&gone()).to_string(), "No such file or directory");
        assert_eq!(IoText(&std::io::Error::other("boom")).to_string(), "boom");
        let err = anyhow::Error::new(gone()).context("x").context("y");
        assert_eq!(message(&err), "y: x: No such file or directory");
        let err = anyhow::Error::new(gone()).context(Fail {
            code: ExitCode::Config,
            msg: "conf".into(),
            errno: None,
        });
        assert_eq!(message(&err), "conf: No such file or directory");
    }

    #[test]
    fn refused_by_type_never_by_text() {
        let text_only = fail(ExitCode::NoPerm, "x: Permission denied");
        assert!(!refused(&text_only));
        assert!(refused(&fail_errno(ExitCode::NoPerm, Errno::EACCES, "x")));
        let io = std::io::Error::from_raw_os_error(libc::EPERM);
        assert!(refused(&anyhow::Error::new(io).context("y")));
        // A domain's error whose source is the failed call's.
        let target = crate::target::TargetError::create(std::path::Path::new("x"), Errno::EPERM);
        assert!(refused(&target.context("layer")));
        let tool = |errno| ToolError {
            tool: "mount".into(),
            line: "Operation not permitted".into(),
            status: "exit 1".into(),
            errno,
            code: ExitCode::Unavailable,
        };
        assert!(refused(&anyhow::Error::new(tool(Some(Errno::EPERM)))));
        assert!(!refused(&anyhow::Error::new(tool(None))));
    }

    #[test]
    fn code_of_asks_each_coded_type() {
        let tool = ToolError {
            tool: "umount".into(),
            line: String::new(),
            status: "exit 1".into(),
            errno: Some(Errno::EBUSY),
            code: ExitCode::TempFail,
        };
        assert_eq!(tool.to_string(), "umount failed (exit 1)");
        let err = anyhow::Error::new(tool).context("layer");
        assert_eq!(code_of(&err), ExitCode::TempFail);
        // A Fail put around it says more.
        let err = err.context(Fail {
            code: ExitCode::CantCreate,
            msg: "upper".into(),
            errno: None,
        });
        assert_eq!(code_of(&err), ExitCode::CantCreate);
        let list = anyhow::Error::new(Failures {
            code: ExitCode::Config,
            msgs: vec!["a".into(), "b".into()],
        });
        assert_eq!(code_of(&list), ExitCode::Config);
        assert_eq!(format!("{list}"), "a; b");
    }
}
