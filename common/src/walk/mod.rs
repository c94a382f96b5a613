//! The one walk of an upper dir, for every mode of jclean that reads or prunes one:
//! prune and `-n` ([`crate::prune`]), `--list` and `--only` ([`crate::changes`]).
//!
//! Safety: a directory is entered only with `openat(parent, name, O_NOFOLLOW |
//! O_DIRECTORY)` beneath a descriptor already pinned, never through a path looked
//! up again, and never onto another file system (another device, or a mount point
//! of the mount table). Swapping a directory for a symlink mid-walk makes the open
//! fail and the entry is handled as a file (so a link itself is what is seen).
//!
//! Cost, whatever a jail writes:
//! - Descriptors: a directory is listed whole, its listing closed, before any
//!   subdirectory is entered; of the stack of directories being walked only the top
//!   [`FD_KEEP`] frames and the current one keep a descriptor. Deeper ones are
//!   reopened through `..` when the walk climbs back, checked to be the very
//!   directory left (device and inode); one that is not is left alone and named.
//! - Memory: a frame is a few words (descriptor, inode, the offsets of its name in
//!   one shared path buffer and of its pending entries in one shared name buffer);
//!   the walk's memory is the sum of the names on the current path and of the
//!   pending ones, linear in depth and width with a small constant. A path is
//!   made only for a message, a `--keep` glob or a `--list` line.
//! - Stack: an explicit stack, so any depth runs in bounded stack.
//!
//! Order: pruning takes a directory's files as it lists them and its
//! subdirectories after. `--list` and `--only` walk in path order
//! ([`Walker::in_path_order`]): a directory's names, files and subdirectories
//! together (and whiteouts), pend sorted by their bytes, and each subdirectory is
//! walked whole when its turn comes, right after its own entry. That is the order
//! of [`std::path::Path`]'s comparison (component by component), met as the walk
//! goes: nothing is collected to be sorted after.
//!
//! Pruning may walk the first levels in parallel ([`Walker::par`]): each task is
//! one subdirectory, walked below the parallel levels by [`Walker::deep`].
//!
//! Here: the walker and a directory's listing; [`deep`] the one-thread walk, its
//! state a struct; [`pending`] the entries waiting; [`fs`] the only opens and
//! stats the walk and its modes make; [`os`] what differs by OS (the reader of
//! entries, birth times, opaque dirs, whiteouts), one file each.

// st_dev, st_ino, st_blocks differ in width and sign across platforms.
#![allow(clippy::unnecessary_cast)]

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::stat::{FileStat, fstat};
use rayon::prelude::*;

use crate::signals;

mod deep;
pub(crate) mod fs;
pub(crate) mod os;
mod pending;
#[cfg(test)]
mod tests;

use deep::Frame;
pub(crate) use fs::{is_dir, listing, mtime, open_dir, stat_here};
use pending::{PENDING_DIR, PENDING_FILE, PENDING_WHITEOUT, push_pending, sort_pending};

/// Frames of a walk that keep their descriptors (deeper ones reopen `..`).
pub(crate) const FD_KEEP: usize = 8;

/// The mount points strictly below `upper`, as paths below it: what a walk of
/// it skips.
pub(crate) fn below(upper: &Path, mounts: &[PathBuf]) -> Vec<Vec<u8>> {
    mounts
        .iter()
        .filter_map(|m| m.strip_prefix(upper).ok())
        .filter(|rel| !rel.as_os_str().is_empty())
        .map(|rel| rel.as_os_str().as_bytes().to_vec())
        .collect()
}

/// What became of one entry.
pub(crate) enum Done {
    /// Removed, or gone already.
    Gone,
    /// Left in place (by a rule, or on record as a problem).
    Kept,
    /// It is a directory (now): walk it.
    Dir,
}

/// Where the walk is: the path of the current directory below the upper dir
/// (names joined by `/`, empty for the upper itself). Only for messages, globs and
/// listings.
pub(crate) struct At<'a>(&'a [u8]);

impl At<'_> {
    /// This directory's path below the upper dir.
    pub(crate) fn rel(&self) -> PathBuf {
        PathBuf::from(OsStr::from_bytes(self.0))
    }

    /// Whether this directory's path below the upper dir is `path` (no copy of a
    /// deep path made to tell).
    pub(crate) fn is(&self, path: &Path) -> bool {
        self.0 == path.as_os_str().as_bytes()
    }

    /// The path of the entry `name` of this directory.
    pub(crate) fn join(&self, name: &CStr) -> PathBuf {
        self.rel().join(OsStr::from_bytes(name.to_bytes()))
    }
}

/// What a directory was when it was entered: its age and size, for pruning it
/// once emptied (its mtime changes as it is emptied).
#[derive(Clone, Copy)]
pub(crate) struct DirStat {
    pub(crate) mtime: SystemTime,
    pub(crate) blocks: u64,
}

/// What a mode does with the entries the walk meets.
pub(crate) trait Visit {
    /// A non-directory entry `name` of `dir`; `host` is the host tree's directory
    /// of the same path, when the walk follows one and it has one.
    fn file(&self, at: &At, dir: &OwnedFd, name: &CStr, host: Option<&OwnedFd>) -> Done;
    /// Whether the subdirectory `name` stays as it is, unwalked (a `--keep` glob).
    fn keep_dir(&self, _at: &At, _name: &CStr) -> bool {
        false
    }
    /// A directory just entered (`at` is its own path), before its entries;
    /// `on_host`: whether the host tree has a directory there (`None`: not looked).
    fn entered(&self, _at: &At, _dir: &OwnedFd, _st: &FileStat, _on_host: Option<bool>) {}
    /// The names of the whiteout entries (FreeBSD) of `dir`, which its listing
    /// hides; none unless the visitor tells them.
    fn whiteout_names(&self, _dir: &OwnedFd) -> Vec<CString> {
        Vec::new()
    }
    /// The whiteout entry `name` of the directory at `at`.
    fn whiteout(&self, _at: &At, _name: &CStr) {}
    /// The subdirectory `name` of `parent` is walked; `kept`: something in it
    /// stayed. Returns whether the subdirectory itself stays.
    fn leave(&self, at: &At, parent: &OwnedFd, name: &CStr, st: &DirStat, kept: bool) -> bool;
    /// Something could not be walked: its path below the upper, and why.
    fn problem(&self, rel: PathBuf, why: String);
}

/// A directory entered.
pub(crate) struct Entered {
    pub(crate) fd: OwnedFd,
    pub(crate) st: FileStat,
}

/// The host tree's directory beside a walked one (`--list`, `--only`).
pub(crate) struct Host {
    fd: Option<OwnedFd>,
    dev: u64,
    ino: u64,
}

impl Host {
    /// The host directory `fd` (the layer's source, trusted).
    pub(crate) fn new(fd: OwnedFd) -> Option<Host> {
        let st = fstat(&fd).ok()?;
        Some(Host {
            fd: Some(fd),
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        })
    }

    fn child(&self, name: &CStr) -> Option<Host> {
        Host::new(open_dir(self.fd.as_ref()?, name).ok()?)
    }
}

/// A walk of one upper dir.
pub(crate) struct Walker<'a, V: ?Sized> {
    pub(crate) visitor: &'a V,
    dev: u64,
    /// Mount points below the upper dir, as paths below it.
    mounts: Vec<Vec<u8>>,
    /// Entries in path order ([`Walker::in_path_order`]).
    sorted: bool,
    /// Walked beside the host tree ([`Walker::beside_host`]): a directory's
    /// `on_host` is known.
    host_known: bool,
}

impl<'a, V: Visit + ?Sized> Walker<'a, V> {
    /// A walk of the upper dir `top` (its device bounds the walk), skipping the
    /// mount points `mounts` (paths below it).
    pub(crate) fn new(visitor: &'a V, top: &OwnedFd, mounts: Vec<Vec<u8>>) -> nix::Result<Self> {
        Ok(Walker {
            visitor,
            dev: fstat(top)?.st_dev as u64,
            mounts,
            sorted: false,
            host_known: false,
        })
    }

    /// Walk beside the host tree given to [`Walker::deep`] (none: it has nothing
    /// there), telling each directory whether the host has one of that name.
    pub(crate) fn beside_host(mut self) -> Self {
        self.host_known = true;
        self
    }

    /// Visit entries in path order (for [`Walker::deep`] only): each directory's
    /// names sorted by their bytes, a subdirectory's own entry then its subtree
    /// before its next sibling. Files are then visited after the listing, so a
    /// file of a deep frame is reached through a descriptor got back by `..`.
    pub(crate) fn in_path_order(mut self) -> Self {
        self.sorted = true;
        self
    }

    /// Whether `at`/`name` is a mount point of the table. Compared by length
    /// first: no path is made for a directory that cannot be one.
    fn mount_point(&self, at: &At, name: &CStr) -> bool {
        let (dir, name) = (at.0, name.to_bytes());
        let len = dir.len() + usize::from(!dir.is_empty()) + name.len();
        self.mounts.iter().any(|m| {
            m.len() == len
                && m.starts_with(dir)
                && m.ends_with(name)
                && (dir.is_empty() || m[dir.len()] == b'/')
        })
    }

    /// Open the subdirectory `name` of `parent` to walk it, or settle it here:
    /// `Err(Done::Gone)` when it went (or was a file now, handled as one),
    /// `Err(Done::Kept)` when it stays.
    pub(crate) fn enter(
        &self,
        parent: &OwnedFd,
        name: &CStr,
        at: &At,
        host: Option<&OwnedFd>,
    ) -> Result<Entered, Done> {
        if self.visitor.keep_dir(at, name) {
            return Err(Done::Kept);
        }
        let fd = match open_dir(parent, name) {
            Ok(fd) => fd,
            // Swapped for a symlink (or a file) since it was listed: what is there
            // now is a file; never follow it.
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) | Err(Errno::EMLINK) => {
                return match self.visitor.file(at, parent, name, host) {
                    Done::Dir => {
                        let why = "changed type during the walk; left alone";
                        self.visitor.problem(at.join(name), why.into());
                        Err(Done::Kept)
                    }
                    done => Err(done),
                };
            }
            Err(Errno::ENOENT) => return Err(Done::Gone),
            Err(err) => {
                let why = format!("cannot open: {}", err.desc());
                self.visitor.problem(at.join(name), why);
                return Err(Done::Kept);
            }
        };
        let st = match fstat(&fd) {
            Ok(st) => st,
            Err(err) => {
                self.visitor.problem(at.join(name), err.desc().into());
                return Err(Done::Kept);
            }
        };
        if st.st_dev as u64 != self.dev || self.mount_point(at, name) {
            let why = "another file system is mounted here; skipped";
            self.visitor.problem(at.join(name), why.into());
            return Err(Done::Kept);
        }
        Ok(Entered { fd, st })
    }

    /// List `dir` whole: its files handed to the visitor, its subdirectories
    /// appended to `todo` (each a record `KIND name NUL`). In path order every
    /// entry pends instead, files and whiteouts too, sorted so that the first name
    /// is popped first. Returns "kept".
    fn list(&self, dir: &OwnedFd, at: &At, host: Option<&OwnedFd>, todo: &mut Vec<u8>) -> bool {
        let from = todo.len();
        for name in self.visitor.whiteout_names(dir) {
            if self.sorted {
                push_pending(todo, PENDING_WHITEOUT, &name);
            } else {
                self.visitor.whiteout(at, &name);
            }
        }
        let kept = self.list_entries(dir, at, host, todo);
        if self.sorted {
            sort_pending(todo, from);
        }
        kept
    }

    fn list_entries(
        &self,
        dir: &OwnedFd,
        at: &At,
        host: Option<&OwnedFd>,
        todo: &mut Vec<u8>,
    ) -> bool {
        let mut entries = match os::Entries::new(dir) {
            Ok(entries) => entries,
            Err(err) => {
                self.visitor
                    .problem(at.rel(), format!("cannot read: {}", err.desc()));
                return true;
            }
        };
        let mut kept = false;
        loop {
            if signals::interrupted() {
                return true;
            }
            let (name, dir_type) = match entries.next() {
                None => break,
                Some(Ok(entry)) => entry,
                Some(Err(err)) => {
                    self.visitor
                        .problem(at.rel(), format!("cannot read: {}", err.desc()));
                    return true;
                }
            };
            if name == c"." || name == c".." {
                continue;
            }
            let dir_now = match dir_type {
                Some(listed) => listed,
                None => stat_here(dir, name).is_ok_and(|st| is_dir(&st)),
            };
            let done = if dir_now {
                Done::Dir
            } else if self.sorted {
                push_pending(todo, PENDING_FILE, name);
                continue;
            } else {
                self.visitor.file(at, dir, name, host)
            };
            match done {
                Done::Gone => {}
                Done::Kept => kept = true,
                Done::Dir => push_pending(todo, PENDING_DIR, name),
            }
        }
        kept
    }
}

impl<V: Visit + Sync + ?Sized> Walker<'_, V> {
    /// Walk `dir` (at `path`, `depth` levels below the upper), its subdirectories
    /// in parallel down to `par_depth` levels, each below that by [`Walker::deep`].
    /// Returns "kept".
    pub(crate) fn par(&self, dir: &OwnedFd, path: &[u8], depth: usize, par_depth: usize) -> bool {
        debug_assert!(!self.sorted, "a parallel walk has no order");
        let mut todo = Vec::new();
        let kept = self.list(dir, &At(path), None, &mut todo);
        // Only subdirectories pend in a walk out of path order.
        let sub_kept = pending::dir_names(&todo)
            .par_iter()
            .map(|name| self.par_subdir(dir, name, path, depth + 1, par_depth))
            .reduce(|| false, |a, b| a | b);
        kept | sub_kept
    }

    fn par_subdir(
        &self,
        parent: &OwnedFd,
        name: &CStr,
        path: &[u8],
        depth: usize,
        par_depth: usize,
    ) -> bool {
        let child = match self.enter(parent, name, &At(path), None) {
            Err(Done::Kept) => return true,
            Err(_) => return false,
            Ok(child) => child,
        };
        let mut sub = path.to_vec();
        if !sub.is_empty() {
            sub.push(b'/');
        }
        sub.extend_from_slice(name.to_bytes());
        self.visitor.entered(&At(&sub), &child.fd, &child.st, None);
        let st = Frame::new(&child, 0, 0, false).dir_stat();
        let kept = if depth < par_depth {
            self.par(&child.fd, &sub, depth, par_depth)
        } else {
            self.deep(child, None, sub)
        };
        self.visitor.leave(&At(path), parent, name, &st, kept)
    }
}
