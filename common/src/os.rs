//! The platform a run is for, a leaf every layer may ask, and why none can run.

use std::ffi::OsString;
use std::fmt;

use anyhow::Result;

use crate::exit::{Coded, Domain, ExitCode};

/// Which backend runs: the build's OS, or `JLAYERS_PLATFORM=freebsd|linux`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Os {
    FreeBsd,
    Linux,
}

impl Os {
    /// The backend of this run.
    pub fn current() -> Result<Os> {
        match std::env::var_os("JLAYERS_PLATFORM") {
            None => Ok(if cfg!(target_os = "freebsd") {
                Os::FreeBsd
            } else {
                Os::Linux
            }),
            Some(value) if value == "freebsd" => Ok(Os::FreeBsd),
            Some(value) if value == "linux" => Ok(Os::Linux),
            Some(value) => Err(Domain::error(OsError::Unknown { value })),
        }
    }

    /// Whether the union step needs a work dir beside the upper dir (overlayfs
    /// does, unionfs does not).
    pub fn needs_work_dir(self) -> bool {
        self == Os::Linux
    }
}

/// Why no backend can run: the caller's mistake (64).
#[derive(Debug)]
pub(crate) enum OsError {
    /// `JLAYERS_PLATFORM` names no backend.
    Unknown { value: OsString },
    /// The Linux backend asked for on another system.
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    LinuxOnly,
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OsError::Unknown { value } => write!(
                f,
                "JLAYERS_PLATFORM={}: expected freebsd or linux",
                value.to_string_lossy()
            ),
            OsError::LinuxOnly => f.write_str("the Linux backend runs only on Linux"),
        }
    }
}

impl std::error::Error for OsError {}

impl Coded for OsError {
    fn code(&self) -> ExitCode {
        match self {
            OsError::Unknown { .. } | OsError::LinuxOnly => ExitCode::Usage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::check_domain as check;

    #[test]
    fn os_error_codes_and_lines() {
        check(
            OsError::Unknown {
                value: "hurd".into(),
            },
            ExitCode::Usage,
            "JLAYERS_PLATFORM=hurd: expected freebsd or linux",
        );
        check(
            OsError::LinuxOnly,
            ExitCode::Usage,
            "the Linux backend runs only on Linux",
        );
    }
}
