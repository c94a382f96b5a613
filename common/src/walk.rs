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

// st_dev, st_ino, st_blocks differ in width and sign across platforms.
#![allow(clippy::unnecessary_cast)]

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};
use rayon::prelude::*;

use crate::signals;

/// Frames of a walk that keep their descriptors (deeper ones reopen `..`).
pub(crate) const FD_KEEP: usize = 8;

pub(crate) const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

pub(crate) fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
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

pub(crate) fn mtime(st: &FileStat) -> SystemTime {
    let secs = st.st_mtime;
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + std::time::Duration::new(secs as u64, st.st_mtime_nsec as u32)
    } else {
        SystemTime::UNIX_EPOCH
    }
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
        let fd = openat(self.fd.as_ref()?, name, DIR_FLAGS, Mode::empty()).ok()?;
        Host::new(fd)
    }
}

/// One directory on the walk's stack: a few words, whatever the depth.
struct Frame {
    ino: u64,
    /// Its mtime when entered (seconds, nanoseconds) and size in blocks; apart,
    /// not a tuple, so the frame packs into 48 bytes (a tuple pads to 16).
    mtime_s: i64,
    mtime_ns: u32,
    blocks: u32,
    /// Held by the top [`FD_KEEP`] frames and the one being walked.
    fd: Option<OwnedFd>,
    kept: bool,
    /// Where its name starts in the path buffer (its `/` when not first).
    name_at: usize,
    /// Where its pending entries start in the name buffer.
    todo_at: usize,
}

impl Frame {
    fn new(entered: &Entered, name_at: usize, todo_at: usize, kept: bool) -> Frame {
        let st = &entered.st;
        Frame {
            ino: st.st_ino as u64,
            mtime_s: st.st_mtime as i64,
            mtime_ns: st.st_mtime_nsec as u32,
            blocks: u32::try_from(st.st_blocks).unwrap_or(u32::MAX),
            fd: None,
            kept,
            name_at,
            todo_at,
        }
    }

    fn dir_stat(&self) -> DirStat {
        let (secs, nsec) = (self.mtime_s, self.mtime_ns);
        DirStat {
            mtime: match u64::try_from(secs) {
                Ok(secs) => SystemTime::UNIX_EPOCH + std::time::Duration::new(secs, nsec),
                Err(_) => SystemTime::UNIX_EPOCH,
            },
            blocks: u64::from(self.blocks),
        }
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

/// Kinds of a pending entry: the first byte of its record in the name buffer
/// (`KIND name NUL`).
const PENDING_DIR: u8 = b'd';
const PENDING_FILE: u8 = b'f';
const PENDING_WHITEOUT: u8 = b'w';

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
        let fd = match openat(parent, name, DIR_FLAGS, Mode::empty()) {
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
        let mut entries = match Entries::new(dir) {
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
                None => {
                    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| is_dir(&st))
                }
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

    /// Walk everything below the entered directory `top` (at `path`) on this
    /// thread, with an explicit stack, and the host tree's directory `host` beside
    /// it. Returns "kept"; `top` itself is left to the caller.
    pub(crate) fn deep(&self, top: Entered, host: Option<Host>, mut path: Vec<u8>) -> bool {
        let mut todo = Vec::new();
        let host_fd = host.as_ref().and_then(|h| h.fd.as_ref());
        let kept = self.list(&top.fd, &At(&path), host_fd, &mut todo);
        let mut first = Frame::new(&top, path.len(), 0, kept);
        first.fd = Some(top.fd);
        let mut frames = vec![first];
        // The host directories beside the first frames, as deep as the host tree
        // has them (below, every entry is new): nothing for a jail's own subtree.
        let mut hosts: Vec<Host> = host.into_iter().collect();
        loop {
            if signals::interrupted() {
                return true;
            }
            let depth = frames.len();
            let Some(current) = frames.last_mut() else {
                return true;
            };
            // The host directory beside the current one, if the host tree goes
            // this deep.
            let beside = if hosts.len() == depth {
                hosts.last_mut()
            } else {
                None
            };
            if let Some((kind, name)) = pop_name(&mut todo, current.todo_at) {
                let Some(fd) = current.fd.as_ref() else {
                    current.kept = true;
                    continue;
                };
                let host_fd = beside.as_ref().and_then(|h| h.fd.as_ref());
                // In path order a file's turn comes here, after the listing.
                match kind {
                    PENDING_WHITEOUT => {
                        self.visitor.whiteout(&At(&path), &name);
                        continue;
                    }
                    PENDING_FILE => match self.visitor.file(&At(&path), fd, &name, host_fd) {
                        Done::Gone => continue,
                        Done::Kept => {
                            current.kept = true;
                            continue;
                        }
                        // A directory now (or the listing did not say): walk it.
                        Done::Dir => {}
                    },
                    _ => {}
                }
                let child = match self.enter(fd, &name, &At(&path), host_fd) {
                    Err(Done::Kept) => {
                        current.kept = true;
                        continue;
                    }
                    Err(_) => continue,
                    Ok(child) => child,
                };
                let host = beside.as_ref().and_then(|h| h.child(&name));
                if depth > FD_KEEP {
                    current.fd = None;
                    // The host's comes back through the child's `..`: only when
                    // the child has one (else it is the only one held below).
                    if let Some(beside) = beside.filter(|_| host.is_some()) {
                        beside.fd = None;
                    }
                }
                let name_at = path.len();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(name.to_bytes());
                // Beside a host tree, its directory of that name is there or not.
                let on_host = self.host_known.then_some(host.is_some());
                self.visitor
                    .entered(&At(&path), &child.fd, &child.st, on_host);
                let todo_at = todo.len();
                let host_fd = host.as_ref().and_then(|h| h.fd.as_ref());
                let kept = self.list(&child.fd, &At(&path), host_fd, &mut todo);
                let mut frame = Frame::new(&child, name_at, todo_at, kept);
                frame.fd = Some(child.fd);
                frames.push(frame);
                hosts.extend(host);
                continue;
            }
            // The top frame is walked: climb back and let the visitor settle it.
            let Some(done) = frames.pop() else {
                return true;
            };
            let done_host = if hosts.len() > frames.len() {
                hosts.pop()
            } else {
                None
            };
            let Some(parent) = frames.last_mut() else {
                return done.kept;
            };
            let start = done.name_at + usize::from(done.name_at > 0);
            let name = CString::new(&path[start..]).unwrap_or_default();
            path.truncate(done.name_at);
            if parent.fd.is_none() {
                parent.fd = self.back_up(done.fd.as_ref(), parent.ino, &path);
            }
            if let Some(host_parent) = hosts.last_mut().filter(|_| done_host.is_some()) {
                if host_parent.fd.is_none() {
                    host_parent.fd = back_up_host(done_host.as_ref(), host_parent);
                    if host_parent.fd.is_none() {
                        let why =
                            "the host tree changed during the walk; entries below are told as new";
                        self.visitor.problem(At(&path).rel(), why.into());
                    }
                }
            }
            let (st, done_kept) = (done.dir_stat(), done.kept);
            drop(done.fd);
            let kept = match &parent.fd {
                Some(pfd) => self.visitor.leave(&At(&path), pfd, &name, &st, done_kept),
                None => {
                    // The way back is gone: this frame and every one without a
                    // descriptor stay, up to the nearest that still has one.
                    while let Some(stuck) = frames.last().filter(|f| f.fd.is_none()) {
                        todo.truncate(stuck.todo_at);
                        path.truncate(stuck.name_at);
                        frames.pop();
                    }
                    hosts.truncate(frames.len());
                    true
                }
            };
            if let Some(above) = frames.last_mut() {
                above.kept |= kept;
            }
        }
    }

    /// The parent of a finished directory, through `..`, if it is still the
    /// directory walked down from (inode `ino`); else the subtree was moved
    /// during the walk.
    fn back_up(&self, child: Option<&OwnedFd>, ino: u64, path: &[u8]) -> Option<OwnedFd> {
        let fd = openat(child?, c"..", DIR_FLAGS, Mode::empty()).ok()?;
        match fstat(&fd) {
            Ok(st) if st.st_dev as u64 == self.dev && st.st_ino as u64 == ino => Some(fd),
            _ => {
                let why = "moved during the walk; left alone";
                self.visitor.problem(At(path).rel(), why.into());
                None
            }
        }
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
        let names: Vec<&CStr> = todo
            .split_inclusive(|&b| b == 0)
            .filter_map(|n| CStr::from_bytes_with_nul(n.get(1..)?).ok())
            .collect();
        let sub_kept = names
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

/// Append the pending entry `name` of kind `kind` to `todo`.
fn push_pending(todo: &mut Vec<u8>, kind: u8, name: &CStr) {
    todo.push(kind);
    todo.extend_from_slice(name.to_bytes_with_nul());
}

/// The last pending entry at or above `floor` in `todo`, taken off it: its kind
/// and name.
fn pop_name(todo: &mut Vec<u8>, floor: usize) -> Option<(u8, CString)> {
    if todo.len() <= floor {
        return None;
    }
    let end = todo.len() - 1;
    // The kind byte is never NUL: the record starts after the previous NUL.
    let start = todo[floor..end]
        .iter()
        .rposition(|&b| b == 0)
        .map_or(floor, |i| floor + i + 1);
    let rec = (todo[start], CString::new(&todo[start + 1..end]).ok());
    todo.truncate(start);
    Some((rec.0, rec.1?))
}

/// Sort the records of `todo` from `from` on by name, the last name first: popped
/// from the end, they come out in byte order. Costs two words a record while it
/// sorts, and a copy of the records.
fn sort_pending(todo: &mut Vec<u8>, from: usize) {
    let mut recs: Vec<(usize, usize)> = Vec::new();
    let mut start = from;
    for (index, &byte) in todo.iter().enumerate().skip(from) {
        if byte == 0 {
            recs.push((start, index));
            start = index + 1;
        }
    }
    if recs.len() < 2 {
        return;
    }
    let name = |r: &(usize, usize)| &todo[r.0 + 1..r.1];
    recs.sort_unstable_by(|a, b| name(b).cmp(name(a)));
    let mut sorted = Vec::with_capacity(todo.len() - from);
    for &(start, nul) in &recs {
        sorted.extend_from_slice(&todo[start..=nul]);
    }
    drop(recs);
    todo.truncate(from);
    todo.extend_from_slice(&sorted);
}

/// The host directory above a finished one, through `..`, checked like the
/// upper's (the host tree is trusted, but a walk must not drift from it).
fn back_up_host(child: Option<&Host>, parent: &Host) -> Option<OwnedFd> {
    let fd = openat(child?.fd.as_ref()?, c"..", DIR_FLAGS, Mode::empty()).ok()?;
    let st = fstat(&fd).ok()?;
    (st.st_dev as u64 == parent.dev && st.st_ino as u64 == parent.ino).then_some(fd)
}

// The walk lists a directory through the platform's best reader of entries.
#[cfg(target_os = "linux")]
use Getdents as Entries;
#[cfg(not(target_os = "linux"))]
use Readdir as Entries;

/// The entries of a directory, from its first, each with whether it is a
/// directory (`None`: the file system does not say), read straight with
/// getdents64(2) from the walk's own descriptor into one buffer: a listing costs
/// a seek and the reads, not a duplicate descriptor, a DIR and its checks.
#[cfg(target_os = "linux")]
struct Getdents<'a> {
    fd: &'a OwnedFd,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

#[cfg(target_os = "linux")]
impl<'a> Getdents<'a> {
    fn new(fd: &'a OwnedFd) -> nix::Result<Self> {
        // The offset is the descriptor's: an earlier listing left it at the end.
        nix::unistd::lseek(fd, 0, nix::unistd::Whence::SeekSet)?;
        Ok(Getdents {
            fd,
            buf: vec![0; 16 * 1024],
            pos: 0,
            end: 0,
        })
    }

    fn next(&mut self) -> Option<nix::Result<(&CStr, Option<bool>)>> {
        use std::os::fd::AsRawFd;
        if self.pos >= self.end {
            // SAFETY: the kernel writes at most buf.len() bytes into buf.
            let read = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr(),
                    self.buf.len(),
                )
            };
            if read < 0 {
                return Some(Err(Errno::last()));
            }
            if read == 0 {
                return None;
            }
            (self.pos, self.end) = (0, read as usize);
        }
        // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1),
        // then the NUL-terminated name.
        let rec = &self.buf[self.pos..self.end];
        let reclen = match rec.get(16..18) {
            Some(&[a, b]) => usize::from(u16::from_ne_bytes([a, b])),
            _ => 0,
        };
        if reclen < 20 || reclen > rec.len() {
            self.end = 0;
            return Some(Err(Errno::EIO));
        }
        let start = self.pos;
        self.pos += reclen;
        let rec = &self.buf[start..start + reclen];
        let kind = match rec[18] {
            libc::DT_DIR => Some(true),
            libc::DT_UNKNOWN => None,
            _ => Some(false),
        };
        match CStr::from_bytes_until_nul(&rec[19..]) {
            Ok(name) => Some(Ok((name, kind))),
            Err(_) => Some(Err(Errno::EIO)),
        }
    }
}

/// The entries of a directory as `Getdents` gives them on Linux, elsewhere
/// through readdir(3) on a duplicate descriptor.
#[cfg(not(target_os = "linux"))]
struct Readdir<'a> {
    iter: nix::dir::OwningIter,
    cur: Option<nix::dir::Entry>,
    _fd: std::marker::PhantomData<&'a OwnedFd>,
}

#[cfg(not(target_os = "linux"))]
impl<'a> Readdir<'a> {
    fn new(fd: &'a OwnedFd) -> nix::Result<Self> {
        Ok(Readdir {
            iter: listing(fd)?.into_iter(),
            cur: None,
            _fd: std::marker::PhantomData,
        })
    }

    fn next(&mut self) -> Option<nix::Result<(&CStr, Option<bool>)>> {
        match self.iter.next()? {
            Err(err) => Some(Err(err)),
            Ok(entry) => {
                let entry = self.cur.insert(entry);
                let kind = entry.file_type().map(|t| t == nix::dir::Type::Directory);
                Some(Ok((entry.file_name(), kind)))
            }
        }
    }
}

/// A fresh listing of `dir` from its first entry. The duplicate descriptor shares
/// the file offset, which an earlier listing left at the end.
pub(crate) fn listing(dir: &OwnedFd) -> nix::Result<Dir> {
    let fd = nix::unistd::dup(dir)?;
    nix::unistd::lseek(&fd, 0, nix::unistd::Whence::SeekSet)?;
    Dir::from_fd(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop(todo: &mut Vec<u8>, floor: usize) -> Option<(u8, Vec<u8>)> {
        pop_name(todo, floor).map(|(k, n)| (k, n.into_bytes()))
    }

    #[test]
    fn a_frame_is_48_bytes() {
        assert!(std::mem::size_of::<Frame>() <= 48);
    }

    #[test]
    fn pending_names_pop_in_reverse_within_their_frame() {
        let mut todo = b"da\0fbc\0".to_vec();
        let floor = todo.len();
        todo.extend_from_slice(b"wd\0def\0");
        assert_eq!(pop(&mut todo, floor), Some((b'd', b"ef".to_vec())));
        assert_eq!(pop(&mut todo, floor), Some((b'w', b"d".to_vec())));
        assert!(pop_name(&mut todo, floor).is_none());
        assert_eq!(pop(&mut todo, 0), Some((b'f', b"bc".to_vec())));
        assert_eq!(pop(&mut todo, 0), Some((b'd', b"a".to_vec())));
        assert!(todo.is_empty());
    }

    /// Sorted by name bytes whatever the kind, only within their frame.
    #[test]
    fn pending_names_sort_by_name_within_their_frame() {
        let mut todo = b"dzz\0".to_vec();
        let floor = todo.len();
        for (kind, name) in [
            (b'f', "m"),
            (b'd', "a"),
            (b'w', "a-b"),
            (b'f', "\x01"),
            (b'd', "b"),
        ] {
            push_pending(&mut todo, kind, &CString::new(name).unwrap());
        }
        sort_pending(&mut todo, floor);
        let mut got = Vec::new();
        while let Some((kind, name)) = pop(&mut todo, floor) {
            got.push((kind, String::from_utf8(name).unwrap()));
        }
        let want = [
            (b'f', "\x01"),
            (b'd', "a"),
            (b'w', "a-b"),
            (b'd', "b"),
            (b'f', "m"),
        ];
        let want: Vec<(u8, String)> = want.iter().map(|(k, n)| (*k, n.to_string())).collect();
        assert_eq!(got, want);
        assert_eq!(todo, b"dzz\0");
    }
}
