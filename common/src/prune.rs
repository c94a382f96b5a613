//! Pruning an upper dir (jclean): parallel across subdirectories, every open and
//! delete relative to a directory descriptor, never following a symbolic link and
//! never leaving the upper dir's file system.
//!
//! Like std's `remove_dir_all` since CVE-2022-21658, a directory is entered only with
//! `openat(parent, name, O_NOFOLLOW | O_DIRECTORY)`, so swapping a directory for a
//! symlink mid-run makes the open fail and the link itself is unlinked.
//!
//! The walk is [`crate::walk`]'s, shared with `--list` and `--only`: bounded
//! descriptors and stack, memory linear in depth with a small constant. The first
//! few levels are parallel (each directory one rayon task: entries of one directory
//! share its lock, so finer splitting buys nothing); below them each subtree is
//! walked by one thread.

use std::collections::HashSet;
use std::ffi::{CStr, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use globset::GlobSet;
use nix::errno::Errno;
use nix::sys::stat::FileStat;
use nix::unistd::UnlinkatFlags;

use crate::action::{Act, Dry, Perform, Sink, Site, Unlink};
use crate::signals;
use crate::walk::{At, DirStat, Done, FD_KEEP, Visit, Walker, below, is_dir, listing, mtime};
use crate::walk::{os, stat_here};

/// What to prune, and what to leave.
pub(crate) struct Rules {
    /// Paths relative to the upper dir to keep, with their parents.
    pub(crate) keep: Option<GlobSet>,
    /// Only entries last modified before this.
    pub(crate) older_than: Option<SystemTime>,
}

/// Running totals, shared by the workers (and the progress bar).
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) files: AtomicU64,
    pub(crate) bytes: AtomicU64,
    /// Inodes with several links: their space is freed once.
    linked: Mutex<HashSet<(u64, u64)>>,
    any_linked: AtomicBool,
    /// Paths skipped because another file system is mounted there, or because
    /// they could not be removed: (path, why).
    pub(crate) skipped: Mutex<Vec<(PathBuf, String)>>,
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

    fn freed(&self, blocks: u64, is_dir: bool, blocks_count: bool) {
        if !is_dir {
            self.files.fetch_add(1, Ordering::Relaxed);
        }
        if blocks_count {
            self.bytes.fetch_add(blocks * 512, Ordering::Relaxed);
        }
    }

    fn skip(&self, path: PathBuf, why: String) {
        self.skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((path, why));
    }
}

/// Pruning, as the walk's visitor: every non-directory removed (unless a rule
/// keeps it), every directory removed once emptied.
struct Pruner<'a> {
    rules: &'a Rules,
    /// Where each removal goes: done, or (`-n`) only counted.
    sink: &'a Sink<'a>,
    /// The jail's layer whose upper dir this is.
    site: &'a Site<'a>,
    tally: &'a Tally,
    upper: &'a Path,
}

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
pub(crate) fn prune(
    dir: &OwnedFd,
    upper: &Path,
    mounts: &[PathBuf],
    rules: &Rules,
    tally: &Tally,
    sink: &Sink,
    site: &Site,
) -> nix::Result<()> {
    let pruner = Pruner {
        rules,
        sink,
        site,
        tally,
        upper,
    };
    let walker = Walker::new(&pruner, dir, below(upper, mounts))?;
    let kept = walker.par(dir, &[], 0, par_depth(rayon::current_num_threads()));
    if !kept && !signals::interrupted() {
        let _ = sink.act(site, Complete(&pruner, dir));
    }
    Ok(())
}

/// A removal completed and checked: the upper dir's own whiteouts (FreeBSD)
/// taken, what is left named. Only a removal that was made (not for `-n`).
struct Complete<'p, 'a>(&'p Pruner<'a>, &'p OwnedFd);

impl Act for Complete<'_, '_> {
    type Output = ();
    fn perform(self, _: &Perform, _: &Site) -> anyhow::Result<()> {
        self.0.remove_whiteouts(self.1);
        self.0.left_over(self.1);
        Ok(())
    }
    fn print(self, _: &Dry, _: &Site) {}
}

impl Pruner<'_> {
    /// Remove `name` of `dir` through the sink (`-n`: counted as removed).
    fn unlink(&self, dir: &OwnedFd, name: &CStr, flags: UnlinkatFlags) -> nix::Result<()> {
        let act = Unlink { dir, name, flags };
        match self.sink.act(self.site, act) {
            Ok(Some(done)) => done,
            // -n: counted as removed.
            Ok(None) => Ok(()),
            Err(_) => Err(Errno::EIO),
        }
    }

    fn too_new(&self, mtime: SystemTime) -> bool {
        self.rules.older_than.is_some_and(|cut| mtime > cut)
    }

    fn kept_by_glob(&self, rel: &Path) -> bool {
        self.rules.keep.as_ref().is_some_and(|g| g.is_match(rel))
    }

    /// The upper dir's own whiteouts (FreeBSD), which its walk cannot remove.
    fn remove_whiteouts(&self, dir: &OwnedFd) {
        for (name, why) in os::remove_whiteouts(dir) {
            let path = match name {
                Some(name) => self.upper.join(OsStr::from_bytes(name.to_bytes())),
                None => self.upper.to_path_buf(),
            };
            self.tally.skip(path, why);
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

impl Visit for Pruner<'_> {
    /// A non-directory entry: removed unless a rule keeps it.
    fn file(&self, at: &At, dir: &OwnedFd, name: &CStr, _: Option<&OwnedFd>) -> Done {
        if self.rules.keep.is_some() && self.kept_by_glob(&at.join(name)) {
            return Done::Kept;
        }
        let st = match stat_here(dir, name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Done::Gone,
            Err(err) => {
                self.problem(at.join(name), err.desc().into());
                return Done::Kept;
            }
        };
        if is_dir(&st) {
            return Done::Dir;
        }
        if self.too_new(mtime(&st)) {
            return Done::Kept;
        }
        let counts = self.tally.first_sight(&st);
        match self.unlink(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Done::Gone,
            // A directory swapped in since the stat: walk it as one.
            Err(Errno::EISDIR) | Err(Errno::EPERM)
                if stat_here(dir, name).is_ok_and(|st| is_dir(&st)) =>
            {
                return Done::Dir;
            }
            Err(err) => {
                self.problem(at.join(name), err.desc().into());
                return Done::Kept;
            }
        }
        self.tally.freed(st.st_blocks as u64, false, counts);
        Done::Gone
    }

    fn keep_dir(&self, at: &At, name: &CStr) -> bool {
        self.rules.keep.is_some() && self.kept_by_glob(&at.join(name))
    }

    /// Remove the emptied subdirectory `name` of `parent` unless something in it
    /// was kept or it is too new itself. Returns "kept".
    fn leave(&self, at: &At, parent: &OwnedFd, name: &CStr, st: &DirStat, kept: bool) -> bool {
        if kept || self.too_new(st.mtime) {
            return true;
        }
        match self.unlink(parent, name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            // Swapped for a symlink or file after the walk: remove that instead
            // (what was walked went elsewhere, and is found there or named).
            Err(Errno::ENOTDIR) => {
                return !matches!(self.file(at, parent, name, None), Done::Gone);
            }
            Err(err) => {
                let why = format!("cannot remove: {}", err.desc());
                self.problem(at.join(name), why);
                return true;
            }
        }
        self.tally.freed(st.blocks, true, true);
        false
    }

    fn problem(&self, rel: PathBuf, why: String) {
        self.tally.skip(self.upper.join(rel), why);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    /// The check after a walk lists the upper from its start, though a raw
    /// listing before it left the shared offset at the end.
    #[test]
    fn left_over_sees_entries_after_a_listing() {
        let upper = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            std::fs::write(upper.path().join(name), "").unwrap();
        }
        let dir: OwnedFd = std::fs::File::open(upper.path()).unwrap().into();
        // Read the directory raw, as the whiteout scan's getdirentries(2) does on
        // FreeBSD: the shared offset is left at the end.
        let mut buf = [0u8; 4096];
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        let read = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                std::os::fd::AsRawFd::as_raw_fd(&dir),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        assert!(read > 0);
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
        let sink = crate::action::Sink::new(&linux, msg, true);
        let pruner = Pruner {
            rules: &rules,
            sink: &sink,
            site: &Site::of_layer("j", Path::new("/"), "l"),
            tally: &tally,
            upper: upper.path(),
        };
        pruner.left_over(&dir);
        let left = tally.skipped.into_inner().unwrap();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|(_, why)| why.contains("appeared")));
    }
}

/// Pruning on temp dirs, without root: through the fake platform's sinks.
#[cfg(test)]
mod walk_tests {
    use std::os::fd::OwnedFd;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::platform::fake::{Fake, MSG};

    /// What is left below `dir`, as sorted paths below it.
    fn left(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(at) = todo.pop() {
            for entry in std::fs::read_dir(&at).unwrap() {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                if path.is_dir() && !path.is_symlink() {
                    todo.push(path);
                }
                found.push(rel);
            }
        }
        found.sort();
        found
    }

    /// A tree with a kept dir, a link out of it, and a mount point.
    fn tree() -> (tempfile::TempDir, tempfile::TempDir) {
        let upper = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("canary"), "").unwrap();
        for dir in ["a/b/c", "keep/sub", "m/inside"] {
            std::fs::create_dir_all(upper.path().join(dir)).unwrap();
        }
        for file in ["a/b/c/f", "a/g", "keep/k", "keep/sub/k", "t", "m/inside/x"] {
            std::fs::write(upper.path().join(file), "data").unwrap();
        }
        std::os::unix::fs::symlink(outside.path(), upper.path().join("a/link")).unwrap();
        (upper, outside)
    }

    fn run(upper: &Path, dry: bool) -> Tally {
        let mut keep = globset::GlobSetBuilder::new();
        keep.add(globset::Glob::new("keep").unwrap());
        let rules = Rules {
            keep: Some(keep.build().unwrap()),
            older_than: None,
        };
        let tally = Tally::default();
        let fake = Fake::default();
        let sink = Sink::new(&fake, MSG, dry);
        let dir: OwnedFd = std::fs::File::open(upper).unwrap().into();
        let mounts = [upper.join("m")];
        let site = Site::of_layer("j", Path::new("/"), "l");
        prune(&dir, upper, &mounts, &rules, &tally, &sink, &site).unwrap();
        tally
    }

    #[test]
    fn prunes_all_but_kept_and_mounted_never_through_a_link() {
        let (upper, outside) = tree();
        let before = left(upper.path());
        let tally = run(upper.path(), true);
        assert_eq!(left(upper.path()), before, "-n removed something");
        let counted = tally.files.load(Ordering::Relaxed);
        let tally = run(upper.path(), false);
        // f, g, t and the link: the same count as -n's.
        assert_eq!(tally.files.load(Ordering::Relaxed), 4);
        assert_eq!(counted, 4);
        let kept = [
            "keep",
            "keep/k",
            "keep/sub",
            "keep/sub/k",
            "m",
            "m/inside",
            "m/inside/x",
        ];
        assert_eq!(left(upper.path()), kept);
        assert!(outside.path().join("canary").exists());
        let skipped = tally.skipped.into_inner().unwrap();
        let why = "another file system is mounted here; skipped".to_string();
        assert_eq!(skipped, [(upper.path().join("m"), why)]);
    }

    #[test]
    fn too_new_entries_stay() {
        let (upper, _outside) = tree();
        let before = left(upper.path());
        let rules = Rules {
            keep: None,
            older_than: Some(SystemTime::UNIX_EPOCH),
        };
        let tally = Tally::default();
        let fake = Fake::default();
        let sink = Sink::new(&fake, MSG, false);
        let dir: OwnedFd = std::fs::File::open(upper.path()).unwrap().into();
        let site = Site::of_layer("j", Path::new("/"), "l");
        prune(&dir, upper.path(), &[], &rules, &tally, &sink, &site).unwrap();
        assert_eq!(left(upper.path()), before);
        assert_eq!(tally.files.load(Ordering::Relaxed), 0);
    }
}
