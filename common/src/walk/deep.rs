//! The walk below the parallel levels (or all of it, in path order): on one
//! thread, with an explicit stack of frames of a few words each; the state of
//! one such walk is a [`Deep`], each of its moves a method.

// st_ino, st_mtime, st_blocks differ in width and sign across platforms.
#![allow(clippy::unnecessary_cast)]

use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;
use std::time::SystemTime;

use nix::sys::stat::fstat;

use super::fs::open_dir;
use super::pending::{PENDING_FILE, PENDING_WHITEOUT, pop_name};
use super::{At, DirStat, Done, Entered, FD_KEEP, Host, Visit, Walker};
use crate::signals;

/// One directory on the walk's stack: a few words, whatever the depth.
pub(super) struct Frame {
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
    pub(super) fn new(entered: &Entered, name_at: usize, todo_at: usize, kept: bool) -> Frame {
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

    pub(super) fn dir_stat(&self) -> DirStat {
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

/// One deep walk: the directories being walked (the first is the one it was
/// given), the host directories beside them, the entries pending and the path.
struct Deep<'w, 'a, V: ?Sized> {
    walker: &'w Walker<'a, V>,
    frames: Vec<Frame>,
    /// The host directories beside the first frames, as deep as the host tree
    /// has them (below, every entry is new): nothing for a jail's own subtree.
    hosts: Vec<Host>,
    /// Each frame's pending entries from its `todo_at` on ([`super::pending`]).
    todo: Vec<u8>,
    /// The current directory's path below the upper dir.
    path: Vec<u8>,
}

impl<V: Visit + ?Sized> Walker<'_, V> {
    /// Walk everything below the entered directory `top` (at `path`) on this
    /// thread, with an explicit stack, and the host tree's directory `host` beside
    /// it. Returns "kept"; `top` itself is left to the caller.
    pub(crate) fn deep(&self, top: Entered, host: Option<Host>, path: Vec<u8>) -> bool {
        let name_at = path.len();
        let mut deep = Deep {
            walker: self,
            frames: Vec::new(),
            hosts: Vec::new(),
            todo: Vec::new(),
            path,
        };
        deep.push(top, host, name_at);
        deep.run()
    }

    /// The parent of a finished directory, through `..`, if it is still the
    /// directory walked down from (inode `ino`); else the subtree was moved
    /// during the walk.
    fn back_up(&self, child: Option<&OwnedFd>, ino: u64, path: &[u8]) -> Option<OwnedFd> {
        let fd = open_dir(child?, c"..").ok()?;
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

impl<V: Visit + ?Sized> Deep<'_, '_, V> {
    fn run(mut self) -> bool {
        loop {
            if signals::interrupted() {
                return true;
            }
            let Some(current) = self.frames.last() else {
                return true;
            };
            match pop_name(&mut self.todo, current.todo_at) {
                Some((kind, name)) => self.take(kind, &name),
                None => {
                    if let Some(kept) = self.climb() {
                        return kept;
                    }
                }
            }
        }
    }

    /// List the entered directory `dir` (at the path as it is now) and make it
    /// the current frame, its name starting at `name_at` in the path.
    fn push(&mut self, dir: Entered, host: Option<Host>, name_at: usize) {
        let todo_at = self.todo.len();
        let host_fd = host.as_ref().and_then(|h| h.fd.as_ref());
        let kept = (self.walker).list(&dir.fd, &At(&self.path), host_fd, &mut self.todo);
        let mut frame = Frame::new(&dir, name_at, todo_at, kept);
        frame.fd = Some(dir.fd);
        self.frames.push(frame);
        self.hosts.extend(host);
    }

    /// The current directory's pending entry `name`: a whiteout, a file whose
    /// turn comes after the listing (path order), or a subdirectory to enter.
    fn take(&mut self, kind: u8, name: &CStr) {
        let depth = self.frames.len();
        // The host directory beside the current one, if the host tree goes
        // this deep.
        let beside = self.hosts.last().filter(|_| self.hosts.len() == depth);
        let Some(current) = self.frames.last_mut() else {
            return;
        };
        let Some(fd) = current.fd.as_ref() else {
            current.kept = true;
            return;
        };
        let host_fd = beside.and_then(|h| h.fd.as_ref());
        let (at, visitor) = (At(&self.path), self.walker.visitor);
        let done = match kind {
            PENDING_WHITEOUT => {
                visitor.whiteout(&at, name);
                return;
            }
            PENDING_FILE => visitor.file(&at, fd, name, host_fd),
            _ => Done::Dir,
        };
        // A directory now (or the listing did not say): walk it.
        let entered = match done {
            Done::Dir => self.walker.enter(fd, name, &at, host_fd),
            other => Err(other),
        };
        let child = match entered {
            Err(Done::Kept) => {
                current.kept = true;
                return;
            }
            Err(_) => return,
            Ok(child) => child,
        };
        let host = beside.and_then(|h| h.child(name));
        self.descend(child, host, name);
    }

    /// Enter the subdirectory `name` of the current frame, opened as `child`.
    fn descend(&mut self, child: Entered, host: Option<Host>, name: &CStr) {
        if self.frames.len() > FD_KEEP {
            self.let_go(host.is_some());
        }
        let name_at = self.path.len();
        if !self.path.is_empty() {
            self.path.push(b'/');
        }
        self.path.extend_from_slice(name.to_bytes());
        // Beside a host tree, its directory of that name is there or not.
        let on_host = self.walker.host_known.then_some(host.is_some());
        let at = At(&self.path);
        (self.walker.visitor).entered(&at, &child.fd, &child.st, on_host);
        self.push(child, host, name_at);
    }

    /// Below the frames that keep their descriptors, the current frame's goes
    /// (it comes back through the child's `..`), and the host's beside it when
    /// the child has one (else it is the only one held below).
    fn let_go(&mut self, host_below: bool) {
        let depth = self.frames.len();
        if let Some(current) = self.frames.last_mut() {
            current.fd = None;
        }
        if host_below && self.hosts.len() == depth {
            if let Some(beside) = self.hosts.last_mut() {
                beside.fd = None;
            }
        }
    }

    /// The top frame is walked: climb back and let the visitor settle it.
    /// `Some(kept)` once the first frame is done: the walk is over.
    fn climb(&mut self) -> Option<bool> {
        let Some(done) = self.frames.pop() else {
            return Some(true);
        };
        let done_host = if self.hosts.len() > self.frames.len() {
            self.hosts.pop()
        } else {
            None
        };
        if self.frames.is_empty() {
            return Some(done.kept);
        }
        let start = done.name_at + usize::from(done.name_at > 0);
        let name = CString::new(&self.path[start..]).unwrap_or_default();
        self.path.truncate(done.name_at);
        self.regain(&done, done_host.as_ref());
        let (st, kept_below) = (done.dir_stat(), done.kept);
        drop(done.fd);
        let kept = self.settle(&name, &st, kept_below);
        if let Some(above) = self.frames.last_mut() {
            above.kept |= kept;
        }
        None
    }

    /// Get back through the finished frame `done`'s `..` the descriptors let go
    /// of on the way down: its parent's, and the host's beside it.
    fn regain(&mut self, done: &Frame, done_host: Option<&Host>) {
        let Some(parent) = self.frames.last_mut() else {
            return;
        };
        if parent.fd.is_none() {
            parent.fd = self
                .walker
                .back_up(done.fd.as_ref(), parent.ino, &self.path);
        }
        let Some(host_parent) = self.hosts.last_mut().filter(|_| done_host.is_some()) else {
            return;
        };
        if host_parent.fd.is_none() {
            host_parent.fd = back_up_host(done_host, host_parent);
            if host_parent.fd.is_none() {
                let why = "the host tree changed during the walk; entries below are told as new";
                self.walker
                    .visitor
                    .problem(At(&self.path).rel(), why.into());
            }
        }
    }

    /// Let the visitor settle the finished subdirectory `name` of the current
    /// frame; whether it stays. When the way back is gone, the current frame and
    /// every one without a descriptor stay, up to the nearest that has one.
    fn settle(&mut self, name: &CStr, st: &DirStat, kept: bool) -> bool {
        let parent = self.frames.last().and_then(|f| f.fd.as_ref());
        if let Some(parent) = parent {
            let at = At(&self.path);
            return self.walker.visitor.leave(&at, parent, name, st, kept);
        }
        while let Some(stuck) = self.frames.last().filter(|f| f.fd.is_none()) {
            self.todo.truncate(stuck.todo_at);
            self.path.truncate(stuck.name_at);
            self.frames.pop();
        }
        self.hosts.truncate(self.frames.len());
        true
    }
}

/// The host directory above a finished one, through `..`, checked like the
/// upper's (the host tree is trusted, but a walk must not drift from it).
fn back_up_host(child: Option<&Host>, parent: &Host) -> Option<OwnedFd> {
    let fd = open_dir(child?.fd.as_ref()?, c"..").ok()?;
    let st = fstat(&fd).ok()?;
    (st.st_dev as u64 == parent.dev && st.st_ino as u64 == parent.ino).then_some(fd)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_frame_is_48_bytes() {
        assert!(std::mem::size_of::<super::Frame>() <= 48);
    }
}
