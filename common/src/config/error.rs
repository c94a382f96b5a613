//! Why a configuration cannot be used: one mistake, said on its own (a file's
//! several mistakes are an `exit::Failures`). All 78.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::exit::{Coded, ExitCode};

/// One mistake of the configuration, or its file unreadable.
#[derive(Debug)]
pub(crate) enum ConfigError {
    /// The file cannot be read.
    Read { path: PathBuf, source: io::Error },
    /// The file is not UTF-8 text, from this line and column.
    NotUtf8 {
        path: PathBuf,
        line: usize,
        col: usize,
    },
    /// A layer's upper dir is the root of a jail (seen once its place is known).
    UpperIsRoot { layer: String, upper: PathBuf },
    /// Two jails have one root (seen on disk: the paths may differ).
    SameRoot {
        config: PathBuf,
        jail: String,
        other: String,
        root: PathBuf,
        other_root: PathBuf,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The cause, shown after it, says what failed.
            ConfigError::Read { path, .. } => write!(f, "{}", path.display()),
            ConfigError::NotUtf8 { path, line, col } => {
                write!(f, "{}:{line}:{col}: not UTF-8 text", path.display())
            }
            ConfigError::UpperIsRoot { layer, upper } => {
                write!(f, "{layer}: upper dir {} is a jail root", upper.display())
            }
            ConfigError::SameRoot {
                config,
                jail,
                other,
                root,
                other_root,
            } => write!(
                f,
                "{}: jail {jail}: same root as jail {other}: {} is {}",
                config.display(),
                root.display(),
                other_root.display()
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::NotUtf8 { .. }
            | ConfigError::UpperIsRoot { .. }
            | ConfigError::SameRoot { .. } => None,
        }
    }
}

impl Coded for ConfigError {
    /// The configuration's, even a file refused to the caller (78).
    fn code(&self) -> ExitCode {
        match self {
            ConfigError::Read { .. }
            | ConfigError::NotUtf8 { .. }
            | ConfigError::UpperIsRoot { .. }
            | ConfigError::SameRoot { .. } => ExitCode::Config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::check_domain as check;

    #[test]
    fn config_error_codes_and_lines() {
        let conf = "/usr/local/etc/jlayers.conf";
        for (errno, desc) in [
            (libc::ENOENT, "No such file or directory"),
            (libc::EACCES, "Permission denied"),
        ] {
            check(
                ConfigError::Read {
                    path: conf.into(),
                    source: io::Error::from_raw_os_error(errno),
                },
                ExitCode::Config,
                &format!("{conf}: {desc}"),
            );
        }
        check(
            ConfigError::NotUtf8 {
                path: conf.into(),
                line: 3,
                col: 7,
            },
            ExitCode::Config,
            &format!("{conf}:3:7: not UTF-8 text"),
        );
        check(
            ConfigError::UpperIsRoot {
                layer: "ports".into(),
                upper: "/jails/db".into(),
            },
            ExitCode::Config,
            "ports: upper dir /jails/db is a jail root",
        );
        check(
            ConfigError::SameRoot {
                config: conf.into(),
                jail: "db".into(),
                other: "web".into(),
                root: "/jails/db".into(),
                other_root: "/jails/web".into(),
            },
            ExitCode::Config,
            &format!("{conf}: jail db: same root as jail web: /jails/db is /jails/web"),
        );
    }
}
