//! The platform a run is for, a leaf every layer may ask.

use anyhow::Result;

use crate::exit::{ExitCode, fail};

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
            Some(value) => Err(fail(
                ExitCode::Usage,
                format!(
                    "JLAYERS_PLATFORM={}: expected freebsd or linux",
                    value.to_string_lossy()
                ),
            )),
        }
    }

    /// Whether the union step needs a work dir beside the upper dir (overlayfs
    /// does, unionfs does not).
    pub fn needs_work_dir(self) -> bool {
        self == Os::Linux
    }
}
