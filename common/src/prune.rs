//! Pruning an upper dir (jclean): parallel across subdirectories, every open and
//! delete relative to a directory descriptor, never following a symbolic link and
//! never leaving the upper dir's file system.
//!
//! Like std's `remove_dir_all` since CVE-2022-21658, a directory is entered only with
//! `openat(parent, name, O_NOFOLLOW | O_DIRECTORY)`, so swapping a directory for a
//! symlink mid-run makes the open fail and the link itself is unlinked.
//!
//! The first few levels are parallel (each directory one rayon task: entries of one
//! directory share its lock, so finer splitting buys nothing). Below them each
//! subtree is walked by one thread with an explicit stack, so any depth runs in
//! bounded stack; only the top [`FD_KEEP`] frames of that stack keep their
//! descriptors, deeper ones come back through `..`, checked to be the very directory
//! left (device and inode), so any depth also runs in bounded descriptors. Memory
//! grows with depth and threads, not with files.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use globset::GlobSet;
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};
use nix::unistd::UnlinkatFlags;
use rayon::prelude::*;

use crate::action::Sink;
use crate::signals;

/// What to prune, and what to leave.
pub struct Rules {
    /// Paths relative to the upper dir to keep, with their parents.
    pub keep: Option<GlobSet>,
    /// Only entries last modified before this.
    pub older_than: Option<SystemTime>,
}

/// Running totals, shared by the workers (and the progress bar).
#[derive(Default)]
pub struct Tally {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Inodes with several links: their space is freed once.
    linked: Mutex<HashSet<(u64, u64)>>,
    any_linked: AtomicBool,
    /// Paths skipped because another file system is mounted there, or because
    /// they could not be removed: (path, why).
    pub skipped: Mutex<Vec<(PathBuf, String)>>,
}

impl Tally {
    /// Whether removing this entry frees its blocks. du counts an inode once: the
    /// first link seen counts, and the last one (seen with a link count of 1 once
    /// the others went) must not count again. Asked before the unlink, so that
    /// the first link is on record before any other can see the count drop.
    #[allow(clippy::unnecessary_cast)] // st_dev and st_ino differ in width across platforms
    fn first_sight(&self, st: &FileStat) -> bool {
        if st.st_nlink <= 1 && !self.any_linked.load(Ordering::Relaxed) {
            return true;
        }
        let key = (st.st_dev as u64, st.st_ino as u64);
        let mut seen = self.linked.lock().unwrap_or_else(|p| p.into_inner());
        if st.st_nlink > 1 {
            self.any_linked.store(true, Ordering::Relaxed);
            seen.insert(key)
        } else {
            !seen.contains(&key)
        }
    }

    fn freed(&self, st: &FileStat, is_dir: bool, blocks_count: bool) {
        if !is_dir {
            self.files.fetch_add(1, Ordering::Relaxed);
        }
        if blocks_count {
            self.bytes
                .fetch_add(st.st_blocks as u64 * 512, Ordering::Relaxed);
        }
    }

    fn skip(&self, path: PathBuf, why: String) {
        self.skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((path, why));
    }
}

struct Walk<'a> {
    rules: &'a Rules,
    /// Where each removal goes: done, or (`-n`) only counted.
    sink: &'a dyn Sink,
    tally: &'a Tally,
    dev: u64,
    /// Mount points below the upper dir, from the mount table.
    mounts: &'a [PathBuf],
    upper: &'a Path,
    /// Levels walked in parallel; deeper subtrees go to [`Walk::deep`].
    par_depth: usize,
}

/// Frames of a deep walk that keep their descriptors (the rest reopen `..`).
const FD_KEEP: usize = 8;
/// At most this many levels in parallel (each holds a descriptor per thread).
const PAR_DEPTH: usize = 6;

/// Parallel levels that fit the descriptor limit with `threads` workers: each
/// worker may hold one per parallel level plus a deep walk's, twice over when
/// rayon nests a stolen task in a waiting one.
fn par_depth(threads: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        // rlim_t is u64 on Linux and i64 on FreeBSD.
        #[allow(clippy::useless_conversion)]
        u64::try_from(lim.rlim_cur).unwrap_or(u64::MAX)
    } else {
        256
    };
    // Leave room for stdio, the lock, the mount table, the upper and its parent.
    let per_thread = soft.saturating_sub(24) / (2 * threads.max(1) as u64);
    let spare = per_thread.saturating_sub(FD_KEEP as u64 + 2);
    spare.clamp(1, PAR_DEPTH as u64) as usize
}

/// Prune everything below the open upper dir `dir`. What was kept for any reason
/// but a rule (a mount, an error, a race with the jail) is on `tally.skipped`.
pub fn prune(
    dir: &OwnedFd,
    upper: &Path,
    mounts: &[PathBuf],
    rules: &Rules,
    tally: &Tally,
    sink: &dyn Sink,
) -> nix::Result<()> {
    let st = fstat(dir)?;
    let w = Walk {
        rules,
        sink,
        tally,
        dev: st.st_dev as u64,
        mounts,
        upper,
        par_depth: par_depth(rayon::current_num_threads()),
    };
    let kept = w.dir(dir, Path::new(""), 0);
    if !kept && !signals::interrupted() {
        sink.after(&mut || {
            whiteouts::remove(dir, upper, tally);
            w.left_over(dir);
        });
    }
    Ok(())
}

fn mtime(st: &FileStat) -> SystemTime {
    let secs = st.st_mtime;
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + std::time::Duration::new(secs as u64, st.st_mtime_nsec as u32)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// What became of one entry.
enum Done {
    /// Removed, or gone already.
    Gone,
    /// Left in place (by a rule, or on record in `skipped`).
    Kept,
    /// It is a directory (now): walk it.
    Dir,
}

/// A directory entered: its descriptor, status and path below the upper.
struct Entered {
    fd: OwnedFd,
    st: FileStat,
    rel: PathBuf,
}

/// One directory on a deep walk's stack.
struct Frame {
    /// Held by the top [`FD_KEEP`] frames and the one being listed.
    fd: Option<OwnedFd>,
    st: FileStat,
    /// Name in its parent.
    name: CString,
    rel: PathBuf,
    /// Subdirectories not walked yet.
    todo: Vec<CString>,
    kept: bool,
}

impl Walk<'_> {
    fn too_new(&self, st: &FileStat) -> bool {
        self.rules.older_than.is_some_and(|cut| mtime(st) > cut)
    }

    fn kept_by_glob(&self, rel: &Path) -> bool {
        self.rules.keep.as_ref().is_some_and(|g| g.is_match(rel))
    }

    /// List `dir`: remove its non-directories, return its subdirectories and
    /// whether anything was kept.
    fn list(&self, dir: &OwnedFd, rel: &Path) -> (Vec<CString>, bool) {
        let mut kept = false;
        let mut subdirs = Vec::new();
        let mut listing = match listing(dir) {
            Ok(l) => l,
            Err(e) => {
                self.tally
                    .skip(self.upper.join(rel), format!("cannot read: {}", e.desc()));
                return (subdirs, true);
            }
        };
        for entry in listing.iter() {
            if signals::interrupted() {
                return (subdirs, true);
            }
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.tally
                        .skip(self.upper.join(rel), format!("cannot read: {}", e.desc()));
                    return (subdirs, true);
                }
            };
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let dir_now = match entry.file_type() {
                Some(Type::Directory) => true,
                Some(_) => false,
                None => {
                    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| is_dir(&st))
                }
            };
            let done = if dir_now {
                Done::Dir
            } else {
                self.file(dir, name, rel)
            };
            match done {
                Done::Gone => {}
                Done::Kept => kept = true,
                Done::Dir => subdirs.push(name.to_owned()),
            }
        }
        (subdirs, kept)
    }

    /// A non-directory entry.
    fn file(&self, dir: &OwnedFd, name: &CStr, rel: &Path) -> Done {
        // The relative path is only needed to match --keep and to name a failure.
        let rel_name = || rel.join(OsStr::from_bytes(name.to_bytes()));
        if self.rules.keep.is_some() && self.kept_by_glob(&rel_name()) {
            return Done::Kept;
        }
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Done::Gone,
            Err(e) => {
                self.tally
                    .skip(self.upper.join(rel_name()), e.desc().into());
                return Done::Kept;
            }
        };
        if is_dir(&st) {
            return Done::Dir;
        }
        if self.too_new(&st) {
            return Done::Kept;
        }
        let counts = self.tally.first_sight(&st);
        match self.sink.unlink(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(_) => {}
            Err(Errno::ENOENT) => return Done::Gone,
            // A directory swapped in since the stat: walk it as one.
            Err(Errno::EISDIR) | Err(Errno::EPERM)
                if fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| is_dir(&st)) =>
            {
                return Done::Dir;
            }
            Err(e) => {
                self.tally
                    .skip(self.upper.join(rel_name()), e.desc().into());
                return Done::Kept;
            }
        }
        self.tally.freed(&st, false, counts);
        Done::Gone
    }

    /// Open the subdirectory `name` of `parent` to walk it, or settle it here:
    /// `Err(Done::Gone)` when it went (or was a file now, removed), `Err(Done::Kept)`
    /// when it stays.
    fn enter(&self, parent: &OwnedFd, name: &CStr, rel: &Path) -> Result<Entered, Done> {
        let rel_name = rel.join(OsStr::from_bytes(name.to_bytes()));
        if self.kept_by_glob(&rel_name) {
            return Err(Done::Kept);
        }
        let fd = match openat(parent, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            // Swapped for a symlink (or a file) since it was listed: remove what is
            // there now as a file; never follow it.
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) | Err(Errno::EMLINK) => {
                return match self.file(parent, name, rel) {
                    Done::Dir => {
                        self.tally.skip(
                            self.upper.join(&rel_name),
                            "changed type during the walk; left alone".into(),
                        );
                        Err(Done::Kept)
                    }
                    done => Err(done),
                };
            }
            Err(Errno::ENOENT) => return Err(Done::Gone),
            Err(e) => {
                self.tally.skip(
                    self.upper.join(&rel_name),
                    format!("cannot open: {}", e.desc()),
                );
                return Err(Done::Kept);
            }
        };
        let st = match fstat(&fd) {
            Ok(st) => st,
            Err(e) => {
                self.tally.skip(self.upper.join(&rel_name), e.desc().into());
                return Err(Done::Kept);
            }
        };
        if st.st_dev as u64 != self.dev || self.mounts.contains(&self.upper.join(&rel_name)) {
            self.tally.skip(
                self.upper.join(&rel_name),
                "another file system is mounted here; skipped".into(),
            );
            return Err(Done::Kept);
        }
        Ok(Entered {
            fd,
            st,
            rel: rel_name,
        })
    }

    /// Remove the emptied subdirectory `name` of `parent` unless something in it
    /// was kept or it is too new itself. Returns "kept".
    fn remove_dir(
        &self,
        parent: &OwnedFd,
        name: &CStr,
        st: &FileStat,
        rel: &Path,
        kept: bool,
    ) -> bool {
        if kept || self.too_new(st) {
            return true;
        }
        match self.sink.unlink(parent, name, UnlinkatFlags::RemoveDir) {
            Ok(_) | Err(Errno::ENOENT) => {}
            // Swapped for a symlink or file after the walk: remove that instead
            // (what was walked went elsewhere, and is found there or named).
            Err(Errno::ENOTDIR) => {
                let up = rel.parent().unwrap_or(Path::new(""));
                return !matches!(self.file(parent, name, up), Done::Gone);
            }
            Err(e) => {
                self.tally
                    .skip(self.upper.join(rel), format!("cannot remove: {}", e.desc()));
                return true;
            }
        }
        self.tally.freed(st, true, true);
        false
    }

    /// Prune the contents of `dir` (at `rel`, `depth` levels below the upper), its
    /// subdirectories in parallel. Returns "kept".
    fn dir(&self, dir: &OwnedFd, rel: &Path, depth: usize) -> bool {
        let (subdirs, kept) = self.list(dir, rel);
        let sub_kept = subdirs
            .par_iter()
            .map(|name| self.subdir(dir, name, rel, depth + 1))
            .reduce(|| false, |a, b| a | b);
        kept | sub_kept
    }

    /// A subdirectory found by a parallel level: walk it, then remove it.
    fn subdir(&self, parent: &OwnedFd, name: &CStr, rel: &Path, depth: usize) -> bool {
        match self.enter(parent, name, rel) {
            Err(Done::Kept) => true,
            Err(_) => false,
            Ok(e) => {
                let kept = if depth < self.par_depth {
                    self.dir(&e.fd, &e.rel, depth)
                } else {
                    self.deep(&e)
                };
                drop(e.fd);
                self.remove_dir(parent, name, &e.st, &e.rel, kept)
            }
        }
    }

    /// Prune the contents of `top` on this thread with an explicit stack: bounded
    /// stack and descriptors at any depth. Returns "kept".
    fn deep(&self, top: &Entered) -> bool {
        let (todo, kept) = self.list(&top.fd, &top.rel);
        let Ok(fd) = nix::unistd::dup(&top.fd) else {
            self.tally.skip(
                self.upper.join(&top.rel),
                "cannot duplicate descriptor".into(),
            );
            return true;
        };
        let mut stack = vec![Frame {
            fd: Some(fd),
            st: top.st,
            name: CString::default(),
            rel: top.rel.clone(),
            todo,
            kept,
        }];
        loop {
            if signals::interrupted() {
                return true;
            }
            let depth = stack.len();
            let Some(frame) = stack.last_mut() else {
                return true;
            };
            if let Some(name) = frame.todo.pop() {
                let Some(fd) = frame.fd.as_ref() else {
                    frame.kept = true;
                    continue;
                };
                match self.enter(fd, &name, &frame.rel) {
                    Err(Done::Kept) => frame.kept = true,
                    Err(_) => {}
                    Ok(e) => {
                        let (todo, kept) = self.list(&e.fd, &e.rel);
                        if depth > FD_KEEP {
                            frame.fd = None;
                        }
                        stack.push(Frame {
                            fd: Some(e.fd),
                            st: e.st,
                            name,
                            rel: e.rel,
                            todo,
                            kept,
                        });
                    }
                }
                continue;
            }
            if let Some(kept) = self.finish(&mut stack) {
                return kept;
            }
        }
    }

    /// The top frame of a deep walk is done: remove its directory (through its
    /// parent, reopened by `..` if need be) and tell the parent what stayed.
    /// `Some(kept)` when it was the last frame.
    fn finish(&self, stack: &mut Vec<Frame>) -> Option<bool> {
        let done = stack.pop()?;
        let Some(parent) = stack.last_mut() else {
            return Some(done.kept);
        };
        if parent.fd.is_none() {
            parent.fd = self.back_up(&done, parent);
        }
        drop(done.fd);
        let kept = match &parent.fd {
            Some(pfd) => self.remove_dir(pfd, &done.name, &done.st, &done.rel, done.kept),
            None => {
                // The way back is gone: this frame and every one without a
                // descriptor stay, up to the nearest that still has one.
                while stack.last().is_some_and(|f| f.fd.is_none()) {
                    stack.pop();
                }
                true
            }
        };
        if let Some(p) = stack.last_mut() {
            p.kept |= kept;
        }
        None
    }

    /// The parent of the finished frame `done`, through `..`, if it is still the
    /// directory walked down from; else the subtree was moved during the walk.
    fn back_up(&self, done: &Frame, parent: &Frame) -> Option<OwnedFd> {
        let child = done.fd.as_ref()?;
        let fd = openat(child, c"..", DIR_FLAGS, Mode::empty()).ok()?;
        match fstat(&fd) {
            Ok(st) if st.st_dev == parent.st.st_dev && st.st_ino == parent.st.st_ino => Some(fd),
            _ => {
                self.tally.skip(
                    self.upper.join(&parent.rel),
                    "moved during the walk; left alone".into(),
                );
                None
            }
        }
    }

    /// After a walk that kept nothing, the upper must be empty; whatever appeared
    /// in it meanwhile (the jail writing) is named, not ignored.
    fn left_over(&self, dir: &OwnedFd) {
        let Ok(mut listing) = listing(dir) else {
            return;
        };
        for entry in listing.iter().flatten() {
            let name = entry.file_name();
            if name != c"." && name != c".." {
                self.tally.skip(
                    self.upper.join(OsStr::from_bytes(name.to_bytes())),
                    "appeared during the walk; left alone".into(),
                );
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

/// Whiteouts: entries a union mount's deletions leave in a UFS upper dir. readdir(3)
/// hides them (they are DT_WHT in getdirentries(2)), rmdir(2) ignores them in a
/// directory it removes, and undelete(2) removes one by name. Only the upper dir's
/// own are left after a walk, since it is never removed.
#[cfg(target_os = "freebsd")]
pub(crate) mod whiteouts {
    use std::ffi::{CStr, CString, OsStr};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use super::Tally;

    const DT_WHT: u8 = 14;

    unsafe extern "C" {
        fn getdirentries(
            fd: libc::c_int,
            buf: *mut libc::c_char,
            n: libc::size_t,
            base: *mut libc::off_t,
        ) -> libc::ssize_t;
        fn undelete(path: *const libc::c_char) -> libc::c_int;
    }

    /// The names of the whiteouts in `dir` (struct dirent of FreeBSD 12 and later:
    /// d_reclen at 16, d_type at 18, d_namlen at 20, d_name at 24).
    pub fn list(dir: &OwnedFd) -> std::io::Result<Vec<CString>> {
        let fd = nix::unistd::dup(dir)?;
        // SAFETY: lseek on a descriptor this function owns.
        if unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut names = Vec::new();
        loop {
            let mut base: libc::off_t = 0;
            // SAFETY: the kernel writes at most buf.len() bytes into buf.
            let n = unsafe {
                getdirentries(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut base,
                )
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if n == 0 {
                return Ok(names);
            }
            let mut off = 0usize;
            let end = n as usize;
            while off + 24 <= end {
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                let namlen = u16::from_ne_bytes([buf[off + 20], buf[off + 21]]) as usize;
                if reclen == 0 || off + 24 + namlen > end {
                    break;
                }
                if buf[off + 18] == DT_WHT {
                    if let Ok(name) = CString::new(&buf[off + 24..off + 24 + namlen]) {
                        names.push(name);
                    }
                }
                off += reclen;
            }
        }
    }

    /// Remove the whiteouts in the (otherwise empty) upper dir. undelete(2) takes a
    /// path, so the pinned directory becomes the working directory and the name is
    /// one component: nothing of it is looked up by a path from the host. No other
    /// thread runs a walk at this point.
    pub fn remove(dir: &OwnedFd, upper: &Path, tally: &Tally) {
        let names = match list(dir) {
            Ok(n) if n.is_empty() => return,
            Ok(n) => n,
            Err(e) => {
                tally.skip(upper.to_path_buf(), format!("cannot list whiteouts: {e}"));
                return;
            }
        };
        let Ok(cwd) = nix::fcntl::open(c".", super::DIR_FLAGS, nix::sys::stat::Mode::empty())
        else {
            tally.skip(
                upper.to_path_buf(),
                "cannot open the working directory".into(),
            );
            return;
        };
        if let Err(e) = nix::unistd::fchdir(dir) {
            tally.skip(upper.to_path_buf(), format!("cannot enter: {}", e.desc()));
            return;
        }
        for name in &names {
            // SAFETY: name is a NUL-terminated C string.
            if unsafe { undelete(name.as_ptr()) } != 0 {
                let e = std::io::Error::last_os_error();
                let name: &CStr = name;
                tally.skip(
                    upper.join(OsStr::from_bytes(name.to_bytes())),
                    format!("cannot remove whiteout: {e}"),
                );
            }
        }
        let _ = nix::unistd::fchdir(&cwd);
    }
}

/// Linux file systems have no whiteout entries: overlayfs whiteouts are character
/// devices, removed like any file.
#[cfg(not(target_os = "freebsd"))]
mod whiteouts {
    pub fn remove(_: &std::os::fd::OwnedFd, _: &std::path::Path, _: &super::Tally) {}
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    /// The check after a walk lists the upper from its start, though a raw
    /// listing before it left the shared offset at the end.
    #[test]
    fn left_over_sees_entries_after_a_listing() {
        let t = tempfile::tempdir().unwrap();
        for f in ["a", "b"] {
            std::fs::write(t.path().join(f), "").unwrap();
        }
        let dir: OwnedFd = std::fs::File::open(t.path()).unwrap().into();
        // Read the directory raw, as the whiteout scan's getdirentries(2) does on
        // FreeBSD: the shared offset is left at the end.
        let mut buf = [0u8; 4096];
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                std::os::fd::AsRawFd::as_raw_fd(&dir),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        assert!(n > 0);
        let rules = Rules {
            keep: None,
            older_than: None,
        };
        let tally = Tally::default();
        let linux = crate::platform::linux::Linux::default();
        let msg = crate::report::Messages {
            tool: "test",
            level: crate::report::Verbosity::Normal,
        };
        let sink = crate::action::sink(&linux, msg, true);
        let w = Walk {
            rules: &rules,
            sink: &*sink,
            tally: &tally,
            dev: 0,
            mounts: &[],
            upper: t.path(),
            par_depth: 1,
        };
        w.left_over(&dir);
        let left = tally.skipped.into_inner().unwrap();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|(_, why)| why.contains("appeared")));
    }
}
