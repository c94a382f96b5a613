//! Pruning an upper dir (jclean): parallel across subdirectories, every open and
//! delete relative to a directory descriptor, never following a symbolic link and
//! never leaving the upper dir's file system.
//!
//! Like std's `remove_dir_all` since CVE-2022-21658, a directory is entered only with
//! `openat(parent, name, O_NOFOLLOW | O_DIRECTORY)`, so swapping a directory for a
//! symlink mid-run makes the open fail and the link itself is unlinked. Each
//! directory is one task (entries of one directory share its lock, so finer
//! splitting buys nothing); memory grows with depth and threads, not with files.

use std::collections::HashSet;
use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, OwnedFd};
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
use nix::unistd::{UnlinkatFlags, unlinkat};
use rayon::prelude::*;

use crate::signals;

/// What to prune, and what to leave.
pub struct Rules {
    /// Paths relative to the upper dir to keep, with their parents.
    pub keep: Option<GlobSet>,
    /// Only entries last modified before this.
    pub older_than: Option<SystemTime>,
    /// Count only.
    pub dry_run: bool,
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
    tally: &'a Tally,
    dev: u64,
    /// Mount points below the upper dir, from the mount table.
    mounts: &'a [PathBuf],
    upper: &'a Path,
}

/// Prune everything below the open upper dir `dir`. Returns whether anything was
/// kept (by a rule, a mount, an error or an interrupt).
pub fn prune(
    dir: &OwnedFd,
    upper: &Path,
    mounts: &[PathBuf],
    rules: &Rules,
    tally: &Tally,
) -> nix::Result<bool> {
    let st = fstat(dir)?;
    let w = Walk {
        rules,
        tally,
        dev: st.st_dev as u64,
        mounts,
        upper,
    };
    Ok(w.dir(dir, Path::new("")))
}

fn mtime(st: &FileStat) -> SystemTime {
    let secs = st.st_mtime;
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + std::time::Duration::new(secs as u64, st.st_mtime_nsec as u32)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

impl Walk<'_> {
    fn too_new(&self, st: &FileStat) -> bool {
        self.rules.older_than.is_some_and(|cut| mtime(st) > cut)
    }

    fn kept_by_glob(&self, rel: &Path) -> bool {
        self.rules.keep.as_ref().is_some_and(|g| g.is_match(rel))
    }

    /// Prune the contents of `dir` (at `rel` below the upper). Returns "kept".
    fn dir(&self, dir: &OwnedFd, rel: &Path) -> bool {
        let mut kept = false;
        let mut subdirs: Vec<Box<OsStr>> = Vec::new();
        let listing = nix::unistd::dup(dir).and_then(Dir::from_fd);
        let mut listing = match listing {
            Ok(l) => l,
            Err(e) => {
                self.tally
                    .skip(self.upper.join(rel), format!("cannot read: {}", e.desc()));
                return true;
            }
        };
        for entry in listing.iter() {
            if signals::interrupted() {
                return true;
            }
            let Ok(entry) = entry else {
                kept = true;
                break;
            };
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let name_os = OsStr::from_bytes(name.to_bytes());
            match entry.file_type() {
                Some(Type::Directory) => subdirs.push(name_os.into()),
                Some(_) => kept |= self.file(dir, name, rel),
                None => match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                        subdirs.push(name_os.into())
                    }
                    _ => kept |= self.file(dir, name, rel),
                },
            }
        }
        drop(listing);
        let sub_kept = subdirs
            .par_iter()
            .map(|name| self.subdir(dir, name, rel))
            .reduce(|| false, |a, b| a | b);
        kept | sub_kept
    }

    /// A non-directory entry. Returns "kept".
    fn file(&self, dir: &OwnedFd, name: &CStr, rel: &Path) -> bool {
        // The relative path is only needed to match --keep and to name a failure.
        let rel_name = || rel.join(OsStr::from_bytes(name.to_bytes()));
        if self.rules.keep.is_some() && self.kept_by_glob(&rel_name()) {
            return true;
        }
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return false,
            Err(e) => {
                self.tally
                    .skip(self.upper.join(rel_name()), e.desc().into());
                return true;
            }
        };
        if self.too_new(&st) {
            return true;
        }
        let counts = st.st_mode & libc::S_IFMT == libc::S_IFDIR || self.tally.first_sight(&st);
        if !self.rules.dry_run {
            match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) => {}
                Err(Errno::ENOENT) => return false,
                // A directory swapped in since it was listed: prune it as one.
                Err(Errno::EISDIR) | Err(Errno::EPERM)
                    if st.st_mode & libc::S_IFMT == libc::S_IFDIR =>
                {
                    return self.subdir(dir, OsStr::from_bytes(name.to_bytes()), rel);
                }
                Err(e) => {
                    self.tally
                        .skip(self.upper.join(rel_name()), e.desc().into());
                    return true;
                }
            }
        }
        self.tally.freed(&st, false, counts);
        false
    }

    /// A subdirectory: prune it, then remove it if nothing in it was kept.
    fn subdir(&self, parent: &OwnedFd, name: &OsStr, rel: &Path) -> bool {
        let rel_name = rel.join(name);
        if self.kept_by_glob(&rel_name) {
            return true;
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(parent, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            // Swapped for a symlink (or a file) since it was listed: remove what is
            // there now as a file; never follow it.
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) | Err(Errno::EMLINK) => {
                let c = std::ffi::CString::new(name.as_bytes()).unwrap_or_default();
                return self.file(parent, &c, rel);
            }
            Err(Errno::ENOENT) => return false,
            Err(e) => {
                self.tally.skip(
                    self.upper.join(&rel_name),
                    format!("cannot open: {}", e.desc()),
                );
                return true;
            }
        };
        let st = match fstat(&fd) {
            Ok(st) => st,
            Err(e) => {
                self.tally.skip(self.upper.join(&rel_name), e.desc().into());
                return true;
            }
        };
        let abs = self.upper.join(&rel_name);
        if st.st_dev as u64 != self.dev || self.mounts.contains(&abs) {
            self.tally
                .skip(abs, "another file system is mounted here; skipped".into());
            return true;
        }
        if self.dir(&fd, &rel_name) || self.too_new(&st) {
            return true;
        }
        drop(fd);
        if !self.rules.dry_run {
            match unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => {
                    self.tally.skip(abs, format!("cannot remove: {}", e.desc()));
                    return true;
                }
            }
        }
        self.tally.freed(&st, true, true);
        false
    }
}

/// Remove the emptied upper dir and make it again with its owner and mode: this
/// also drops entries readdir does not show (whiteouts of FreeBSD's UFS).
pub fn recreate(parent: &OwnedFd, name: &OsStr, st: &FileStat) -> nix::Result<()> {
    unlinkat(parent, name, UnlinkatFlags::RemoveDir)?;
    let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
    nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o700))?;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(parent, name, flags, Mode::empty())?;
    nix::unistd::fchown(
        fd.as_fd(),
        Some(nix::unistd::Uid::from_raw(st.st_uid)),
        Some(nix::unistd::Gid::from_raw(st.st_gid)),
    )?;
    nix::sys::stat::fchmod(fd.as_fd(), mode)
}
