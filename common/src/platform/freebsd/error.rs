//! Why the FreeBSD backend could not read the table, unmount, or run a jail's
//! service, updater or limits.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::exit::{Coded, ExitCode, of_io};

/// A failure of the FreeBSD backend. A system call's description is its
/// `source`, shown after the line (exit::text).
#[derive(Debug)]
pub(crate) enum FreeBsdError {
    /// The mount table cannot be read (`how`: getfsstat, or the simulation's
    /// `mount -v`).
    Table {
        how: &'static str,
        source: io::Error,
    },
    /// The simulation's `mount -v` failed: its first line.
    #[cfg_attr(target_os = "freebsd", allow(dead_code))]
    TableTool { line: String },
    /// What should be a file system ID is none.
    #[cfg_attr(not(target_os = "freebsd"), allow(dead_code))]
    NotFsid { id: String },
    /// unmount(2) by file system ID failed.
    #[cfg_attr(not(target_os = "freebsd"), allow(dead_code))]
    Unmount { id: String, source: io::Error },
    /// statfs(2) of a target failed.
    Statfs { path: PathBuf, source: io::Error },
    /// jls(8) cannot be run.
    Jls(io::Error),
    /// `service jail` ran, but the jail is not in the state asked for (`said`:
    /// what the command printed, on one line).
    JailState {
        tool: String,
        jail: String,
        start: bool,
        said: String,
    },
    /// A limit without resource accounting in the kernel.
    NoRacct,
    /// `jexec -l`: the home directory of the user it runs as is missing in the
    /// jail (`dir` inside it, `host` as the host sees it; `why`: jexec's words).
    NoHome {
        dir: String,
        jail: String,
        why: String,
        host: PathBuf,
    },
}

impl FreeBsdError {
    fn cause(&self) -> Option<&io::Error> {
        match self {
            FreeBsdError::Table { source, .. }
            | FreeBsdError::Unmount { source, .. }
            | FreeBsdError::Statfs { source, .. }
            | FreeBsdError::Jls(source) => Some(source),
            FreeBsdError::TableTool { .. }
            | FreeBsdError::NotFsid { .. }
            | FreeBsdError::JailState { .. }
            | FreeBsdError::NoRacct
            | FreeBsdError::NoHome { .. } => None,
        }
    }
}

impl fmt::Display for FreeBsdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeBsdError::Table { how, .. } => f.write_str(how),
            FreeBsdError::TableTool { line } => write!(f, "mount -v: {line}"),
            FreeBsdError::NotFsid { id } => write!(f, "unmount: {id}: not a file system ID"),
            FreeBsdError::Unmount { id, .. } => write!(f, "unmount of file system {id}"),
            FreeBsdError::Statfs { path, .. } => write!(f, "{}: statfs", path.display()),
            FreeBsdError::Jls(_) => f.write_str("jls"),
            FreeBsdError::JailState {
                tool,
                jail,
                start,
                said,
            } => {
                let state = if *start { "not running" } else { "still running" };
                write!(f, "{tool}: the jail is {state} after it (jls -j {jail})")?;
                if !said.is_empty() {
                    write!(f, ": {said}")?;
                }
                Ok(())
            }
            FreeBsdError::NoRacct => f.write_str(
                "pids, memory and cpu need resource accounting (kern.racct.enable is not 1): add kern.racct.enable=1 to /boot/loader.conf and reboot",
            ),
            FreeBsdError::NoHome {
                dir,
                jail,
                why,
                host,
            } => write!(
                f,
                "jexec -l: the home directory {dir} of the user it runs as is missing in jail {jail} (chdir: {why}); create it (mkdir -m 700 {}), or give that user a home directory the jail has",
                host.display()
            ),
        }
    }
}

impl std::error::Error for FreeBsdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause().map(|e| e as _)
    }
}

impl Coded for FreeBsdError {
    /// An unmount goes by its errno (refused 77, busy 75); a limit the kernel
    /// is not set up for is the configuration's (78); the rest 69.
    fn code(&self) -> ExitCode {
        match self {
            FreeBsdError::Unmount { source, .. } => of_io(source, ExitCode::Unavailable),
            FreeBsdError::NoRacct => ExitCode::Config,
            FreeBsdError::Table { .. }
            | FreeBsdError::TableTool { .. }
            | FreeBsdError::NotFsid { .. }
            | FreeBsdError::Statfs { .. }
            | FreeBsdError::Jls(_)
            | FreeBsdError::JailState { .. }
            | FreeBsdError::NoHome { .. } => ExitCode::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::check_domain as check;

    #[test]
    fn freebsd_table_and_unmount_errors() {
        let os = io::Error::from_raw_os_error;
        check(
            FreeBsdError::Table {
                how: "getfsstat",
                source: os(libc::EFAULT),
            },
            ExitCode::Unavailable,
            "getfsstat: Bad address",
        );
        check(
            FreeBsdError::TableTool {
                line: "failed".into(),
            },
            ExitCode::Unavailable,
            "mount -v: failed",
        );
        check(
            FreeBsdError::NotFsid { id: "xyz".into() },
            ExitCode::Unavailable,
            "unmount: xyz: not a file system ID",
        );
        let unmount = |errno| FreeBsdError::Unmount {
            id: "a1b2c3d4e5f60718".into(),
            source: os(errno),
        };
        let line = |desc: &str| format!("unmount of file system a1b2c3d4e5f60718: {desc}");
        let cases = [
            (libc::ENOENT, ExitCode::Unavailable),
            (libc::EBUSY, ExitCode::TempFail),
            (libc::EPERM, ExitCode::NoPerm),
            (libc::EACCES, ExitCode::NoPerm),
        ];
        for (errno, code) in cases {
            check(
                unmount(errno),
                code,
                &line(nix::errno::Errno::from_raw(errno).desc()),
            );
        }
        check(
            FreeBsdError::Statfs {
                path: "/jails/web/usr/ports".into(),
                source: os(libc::ENOENT),
            },
            ExitCode::Unavailable,
            "/jails/web/usr/ports: statfs: No such file or directory",
        );
    }

    #[test]
    fn freebsd_jail_errors() {
        check(
            FreeBsdError::Jls(io::Error::from_raw_os_error(libc::ENOENT)),
            ExitCode::Unavailable,
            "jls: No such file or directory",
        );
        let state = |start, said: &str| FreeBsdError::JailState {
            tool: "service".into(),
            jail: "web".into(),
            start,
            said: said.into(),
        };
        check(
            state(true, "cannot start jail \"web\":"),
            ExitCode::Unavailable,
            "service: the jail is not running after it (jls -j web): cannot start jail \"web\":",
        );
        check(
            state(false, ""),
            ExitCode::Unavailable,
            "service: the jail is still running after it (jls -j web)",
        );
        check(
            FreeBsdError::NoRacct,
            ExitCode::Config,
            "pids, memory and cpu need resource accounting (kern.racct.enable is not 1): add kern.racct.enable=1 to /boot/loader.conf and reboot",
        );
        check(
            FreeBsdError::NoHome {
                dir: "/root".into(),
                jail: "web".into(),
                why: "No such file or directory".into(),
                host: "/jails/web/root".into(),
            },
            ExitCode::Unavailable,
            "jexec -l: the home directory /root of the user it runs as is missing in jail web (chdir: No such file or directory); create it (mkdir -m 700 /jails/web/root), or give that user a home directory the jail has",
        );
    }
}
