//! The refusals both backends share: a target a jail changed under the run, and a
//! busy unmount. Each backend's own failures are its `error` module's.

use std::fmt;
use std::path::PathBuf;

use crate::exit::{Coded, Domain, ExitCode};
use crate::target::Place;

/// Why a backend refused to act on a target, whichever backend.
#[derive(Debug)]
pub(crate) enum PlatformError {
    /// The target is no longer what was checked: a jail changed it (`what`: how
    /// that was seen).
    Changed { path: PathBuf, what: String },
    /// The unmount found the mount busy.
    Busy { path: PathBuf },
}

impl PlatformError {
    /// [`PlatformError::Busy`] for the unmount of `target`.
    pub(crate) fn busy(target: &Place) -> anyhow::Error {
        Domain::error(PlatformError::Busy {
            path: target.path.clone(),
        })
    }
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformError::Changed { path, what } => write!(
                f,
                "{}: {what}: the path changed while jlayers worked on it (a jail's root user can do that); nothing done there",
                path.display()
            ),
            PlatformError::Busy { path } => write!(f, "unmount {}: busy", path.display()),
        }
    }
}

impl std::error::Error for PlatformError {}

impl Coded for PlatformError {
    /// A changed target is the jail's doing, refused (77); busy is for now (75).
    fn code(&self) -> ExitCode {
        match self {
            PlatformError::Changed { .. } => ExitCode::NoPerm,
            PlatformError::Busy { .. } => ExitCode::TempFail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::check_domain as check;

    #[test]
    fn platform_error_codes_and_lines() {
        check(
            PlatformError::Changed {
                path: "/jails/web/usr/ports".into(),
                what: "no parent directory".into(),
            },
            ExitCode::NoPerm,
            "/jails/web/usr/ports: no parent directory: the path changed while jlayers worked on it (a jail's root user can do that); nothing done there",
        );
        check(
            PlatformError::Busy {
                path: "/jails/web/usr/ports".into(),
            },
            ExitCode::TempFail,
            "unmount /jails/web/usr/ports: busy",
        );
    }
}
