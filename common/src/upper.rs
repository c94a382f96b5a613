//! An upper dir as jclean handles it: opened once, the way its owner allows (a
//! host path as configured; a path inside a jail beneath the root, no link
//! followed), then emptied, measured or listed through that one descriptor.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::action::{Sink, Site};
use crate::changes::{self, Entry, Problems};
use crate::exit::{Coded, Domain, ExitCode};
use crate::prune::{Rules, Tally, prune};
use crate::target::{Beneath, Missing, Place};

/// An open upper dir.
pub(crate) struct UpperDir {
    pub(crate) path: PathBuf,
    fd: OwnedFd,
}

impl UpperDir {
    /// Open the upper dir at `place`; `None` when there is none (nothing to do).
    pub(crate) fn open(place: &Place) -> Result<Option<UpperDir>> {
        Ok(match place.open(Missing::Report)? {
            Beneath::Dir(fd) => Some(UpperDir {
                path: place.path.clone(),
                fd,
            }),
            Beneath::Missing(_) => None,
        })
    }

    /// Remove what `rules` allow below it, each removal through `sink` (counted
    /// only for `-n`), skipping `mounts` (mount points below it). The upper dir
    /// itself is never removed: at every instant it is the old upper, partly
    /// emptied, with its owner, mode and flags.
    pub(crate) fn empty(
        &self,
        mounts: &[PathBuf],
        rules: &Rules,
        tally: &Tally,
        sink: &Sink,
        site: &Site,
    ) -> Result<()> {
        prune(&self.fd, &self.path, mounts, rules, tally, sink, site).map_err(|e| self.failed(e))
    }

    /// Tell `each` what every entry is to the host tree `source`; remove (through
    /// `sink`) each for which it returns true. `mounts` (mount points below it)
    /// are skipped.
    pub(crate) fn changes(
        &self,
        source: &Path,
        mounts: &[PathBuf],
        sink: &Sink,
        site: &Site,
        each: impl FnMut(&Entry) -> bool,
    ) -> Result<Problems> {
        let mounts = crate::walk::below(&self.path, mounts);
        changes::walk(&self.fd, source, mounts, sink, site, each).map_err(|e| self.failed(e))
    }

    fn failed(&self, errno: nix::errno::Errno) -> anyhow::Error {
        Domain::error(UpperError {
            path: self.path.clone(),
            source: errno.into(),
        })
    }
}

/// An upper dir's walk that failed (69): the dir, and the errno as its cause.
#[derive(Debug)]
pub(crate) struct UpperError {
    path: PathBuf,
    source: std::io::Error,
}

impl std::fmt::Display for UpperError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

impl std::error::Error for UpperError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl Coded for UpperError {
    fn code(&self) -> ExitCode {
        ExitCode::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A walk's failure names the dir and its errno once, as 69 (refused too:
    /// a root-run walk refused is no matter of who runs it).
    #[test]
    fn a_failed_walk_its_code_and_line() {
        for errno in [nix::errno::Errno::EIO, nix::errno::Errno::EACCES] {
            let err = UpperError {
                path: "/u/j/a".into(),
                source: errno.into(),
            };
            let line = format!("/u/j/a: {}", errno.desc());
            crate::exit::check_domain(err, ExitCode::Unavailable, &line);
        }
    }
}
