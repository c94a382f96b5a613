//! What the walk and its modes need of the file system that differs by OS, one
//! file per OS behind the same small interface:
//!
//! - `Entries`: a directory's entries from its first, each with whether it is a
//!   directory (`None`: the file system does not say);
//! - `birth(dir, name, st)`: when an entry was born, if its file system says;
//! - `opaque(dir, st)`: whether a directory hides the host's of that name;
//! - `whiteout_names(dir)`: the whiteout entries a listing hides (FreeBSD);
//! - `remove_whiteouts(dir)`: remove those of the (emptied) upper dir.

/// A time as (seconds, nanoseconds).
pub(crate) type Time = (i64, i64);

/// A problem met removing whiteouts: the whiteout's name (none: the upper dir
/// itself), and why.
pub(crate) type WhiteoutProblem = (Option<std::ffi::CString>, String);

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(target_os = "freebsd")]
mod freebsd;
#[cfg(target_os = "freebsd")]
pub(crate) use freebsd::*;

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
mod other;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
pub(crate) use other::*;

#[cfg(not(target_os = "linux"))]
mod readdir;
