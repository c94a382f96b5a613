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
