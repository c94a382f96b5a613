//! Why the Linux backend could not read the table, mount or unmount.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::exit::{Coded, Domain, ExitCode, of_io};
use crate::platform::PlatformError;

/// A failed system call of the Linux backend. Where the call's description
/// ends the line, it is the `source` (exit::text shows it); where more follows
/// it (a hint), the variant holds the errno and says it itself, once.
#[derive(Debug)]
pub(crate) enum LinuxError {
    /// /proc/self/mountinfo cannot be opened or read.
    MountTable(io::Error),
    /// A mount system call (`what`: "bind mount", "overlay mount", ...) failed.
    Mount {
        what: &'static str,
        target: PathBuf,
        source: io::Error,
    },
    /// A mount system call was refused (EPERM, EACCES).
    MountRefused {
        what: &'static str,
        target: PathBuf,
        errno: Errno,
    },
    /// overlay takes no descriptors as layers, and the upper path is too long
    /// to be given as a path.
    OverlayLong { target: PathBuf },
    /// A union step without its work dir.
    NoWorkDir,
    /// A mount made by this run cannot be detached again.
    Detach { id: String, source: io::Error },
    /// The mount at a target cannot be looked up.
    TopMount { path: PathBuf, source: io::Error },
    /// A descriptor's mount id cannot be had (Linux before 5.12).
    MountId { path: PathBuf, errno: Errno },
    /// umount2(2) failed (EBUSY is a [`PlatformError::Busy`]).
    Unmount { path: PathBuf, source: io::Error },
    /// umount2(2) refused with EPERM.
    UnmountRefused { path: PathBuf },
}

impl LinuxError {
    /// The error of a failed mount system call (`what`) on `target`.
    pub(super) fn mount(errno: Errno, what: &'static str, target: &Path) -> anyhow::Error {
        let target = target.to_path_buf();
        Domain::error(match errno {
            Errno::EPERM | Errno::EACCES => LinuxError::MountRefused {
                what,
                target,
                errno,
            },
            _ => LinuxError::Mount {
                what,
                target,
                source: errno.into(),
            },
        })
    }

    /// The error of a failed umount2(2) of `path`.
    pub(super) fn unmount(errno: Errno, path: &Path) -> anyhow::Error {
        let path = path.to_path_buf();
        match errno {
            Errno::EBUSY => Domain::error(PlatformError::Busy { path }),
            Errno::EPERM => Domain::error(LinuxError::UnmountRefused { path }),
            _ => Domain::error(LinuxError::Unmount {
                path,
                source: errno.into(),
            }),
        }
    }

    fn cause(&self) -> Option<&io::Error> {
        match self {
            LinuxError::MountTable(source)
            | LinuxError::Mount { source, .. }
            | LinuxError::Detach { source, .. }
            | LinuxError::TopMount { source, .. }
            | LinuxError::Unmount { source, .. } => Some(source),
            LinuxError::MountRefused { .. }
            | LinuxError::OverlayLong { .. }
            | LinuxError::NoWorkDir
            | LinuxError::MountId { .. }
            | LinuxError::UnmountRefused { .. } => None,
        }
    }
}

impl fmt::Display for LinuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinuxError::MountTable(_) => f.write_str("/proc/self/mountinfo"),
            LinuxError::Mount { what, target, .. } => write!(f, "{what} on {}", target.display()),
            LinuxError::MountRefused {
                what,
                target,
                errno,
            } => write!(
                f,
                "{what} on {}: {} (run as root)",
                target.display(),
                errno.desc()
            ),
            LinuxError::OverlayLong { target } => write!(
                f,
                "overlay mount on {}: the upper path is 256 bytes or longer, which this kernel's overlay can only take as a descriptor (Linux 6.13)",
                target.display()
            ),
            LinuxError::NoWorkDir => f.write_str("overlay needs a work dir"),
            LinuxError::Detach { id, .. } => write!(f, "detach mount {id}"),
            LinuxError::TopMount { path, .. } => write!(f, "{}", path.display()),
            LinuxError::MountId { path, errno } => write!(
                f,
                "{}: mount id: {} (jlayers needs Linux 5.12 or later)",
                path.display(),
                errno.desc()
            ),
            LinuxError::Unmount { path, .. } => write!(f, "unmount {}", path.display()),
            LinuxError::UnmountRefused { path } => {
                write!(f, "unmount {}: not permitted (run as root)", path.display())
            }
        }
    }
}

impl std::error::Error for LinuxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause().map(|e| e as _)
    }
}

impl Coded for LinuxError {
    /// A mount or unmount goes by its errno (refused 77, busy 75, else 69);
    /// the rest cannot be done here (69).
    fn code(&self) -> ExitCode {
        match self {
            LinuxError::Mount { source, .. } | LinuxError::Unmount { source, .. } => {
                of_io(source, ExitCode::Unavailable)
            }
            LinuxError::MountRefused { .. } | LinuxError::UnmountRefused { .. } => ExitCode::NoPerm,
            LinuxError::MountTable(_)
            | LinuxError::OverlayLong { .. }
            | LinuxError::NoWorkDir
            | LinuxError::Detach { .. }
            | LinuxError::TopMount { .. }
            | LinuxError::MountId { .. } => ExitCode::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::check_domain as check;

    const AT: &str = "/jails/web/usr/ports";

    #[test]
    fn linux_error_codes_and_lines() {
        let os = io::Error::from_raw_os_error;
        check(
            LinuxError::MountTable(os(libc::ENOENT)),
            ExitCode::Unavailable,
            "/proc/self/mountinfo: No such file or directory",
        );
        let mount = |errno| LinuxError::Mount {
            what: "bind mount",
            target: AT.into(),
            source: os(errno),
        };
        let line = format!("bind mount on {AT}: No such file or directory");
        check(mount(libc::ENOENT), ExitCode::Unavailable, &line);
        let line = format!("bind mount on {AT}: Device or resource busy");
        check(mount(libc::EBUSY), ExitCode::TempFail, &line);
        for errno in [Errno::EPERM, Errno::EACCES] {
            let refused = LinuxError::MountRefused {
                what: "tmpfs",
                target: AT.into(),
                errno,
            };
            let line = format!("tmpfs on {AT}: {} (run as root)", errno.desc());
            check(refused, ExitCode::NoPerm, &line);
        }
        check(
            LinuxError::OverlayLong { target: AT.into() },
            ExitCode::Unavailable,
            &format!(
                "overlay mount on {AT}: the upper path is 256 bytes or longer, which this kernel's overlay can only take as a descriptor (Linux 6.13)"
            ),
        );
        check(
            LinuxError::NoWorkDir,
            ExitCode::Unavailable,
            "overlay needs a work dir",
        );
    }

    #[test]
    fn linux_unmount_error_codes_and_lines() {
        let os = io::Error::from_raw_os_error;
        check(
            LinuxError::Detach {
                id: "412".into(),
                source: os(libc::EINVAL),
            },
            ExitCode::Unavailable,
            "detach mount 412: Invalid argument",
        );
        check(
            LinuxError::TopMount {
                path: AT.into(),
                source: os(libc::ENOENT),
            },
            ExitCode::Unavailable,
            &format!("{AT}: No such file or directory"),
        );
        check(
            LinuxError::MountId {
                path: AT.into(),
                errno: Errno::EINVAL,
            },
            ExitCode::Unavailable,
            &format!("{AT}: mount id: Invalid argument (jlayers needs Linux 5.12 or later)"),
        );
        let unmount = |errno| LinuxError::Unmount {
            path: AT.into(),
            source: os(errno),
        };
        let line = format!("unmount {AT}: Invalid argument");
        check(unmount(libc::EINVAL), ExitCode::Unavailable, &line);
        let line = format!("unmount {AT}: Permission denied");
        check(unmount(libc::EACCES), ExitCode::NoPerm, &line);
        check(
            LinuxError::UnmountRefused { path: AT.into() },
            ExitCode::NoPerm,
            &format!("unmount {AT}: not permitted (run as root)"),
        );
    }

    /// The errno picks the variant: busy is the shared one, EPERM says
    /// "(run as root)" once, and a refused mount is never told twice.
    #[test]
    fn errno_picks_the_variant() {
        let text = |err: anyhow::Error| (crate::exit::code_of(&err), crate::exit::text(&err));
        let busy = LinuxError::unmount(Errno::EBUSY, Path::new(AT));
        let line = format!("unmount {AT}: busy");
        assert_eq!(text(busy), (ExitCode::TempFail, line));
        let refused = LinuxError::unmount(Errno::EPERM, Path::new(AT));
        let line = format!("unmount {AT}: not permitted (run as root)");
        assert_eq!(text(refused), (ExitCode::NoPerm, line));
        let refused = LinuxError::mount(Errno::EPERM, "bind mount", Path::new(AT));
        let line = format!("bind mount on {AT}: Operation not permitted (run as root)");
        assert_eq!(text(refused), (ExitCode::NoPerm, line));
        let gone = LinuxError::mount(Errno::ENOENT, "bind mount", Path::new(AT));
        let line = format!("bind mount on {AT}: No such file or directory");
        assert_eq!(text(gone), (ExitCode::Unavailable, line));
    }
}
