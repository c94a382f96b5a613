//! One mount step of a layer's stack: what the plan is made of and what a backend
//! performs. Its own module, so that the plan and the backends use it without
//! importing each other.

use std::path::PathBuf;

use crate::target::Place;

/// One mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// nullfs (FreeBSD) / bind mount (Linux) of a host directory on the target.
    Null { source: PathBuf, read_only: bool },
    /// unionfs (FreeBSD) / overlay (Linux) of the upper dir over what the target shows.
    Union {
        upper: Place,
        /// Linux's overlay work dir, a sibling of `upper`; `None` on FreeBSD.
        work: Option<Place>,
        options: Vec<String>,
    },
    /// A tmpfs of its own for a union layer's upper (and, on Linux, work) dir,
    /// mounted on the upper's place before the layer's stack; `size` as tmpfs takes
    /// it (`4g`), `None` for the kernel's default.
    Tmpfs { size: Option<String> },
}

/// What an unmount does with a busy mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    /// Fail (75), naming what holds it.
    Fail,
    /// Take it away all the same (`-f`: `umount -f`, a lazy detach on Linux).
    Force,
}

impl Step {
    /// The step's kind, as the JSON records name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Null { .. } => "null",
            Step::Union { .. } => "union",
            Step::Tmpfs { .. } => "tmpfs",
        }
    }

    /// What the step mounts, as a record shows it.
    pub fn source_shown(&self) -> PathBuf {
        match self {
            Step::Null { source, .. } => source.clone(),
            Step::Union { upper, .. } => upper.path.clone(),
            Step::Tmpfs { .. } => PathBuf::from("tmpfs"),
        }
    }

    /// The step in words, for `-v`.
    pub fn describe(&self) -> String {
        match self {
            Step::Null {
                source,
                read_only: true,
            } => format!("read-only null mount of {}", source.display()),
            Step::Null { source, .. } => format!("null mount of {}", source.display()),
            Step::Union { upper, .. } => format!("union mount of {}", upper.path.display()),
            Step::Tmpfs { .. } => "tmpfs for the upper dir".to_string(),
        }
    }
}
