//! Uppers a forced unmount left in use. On Linux, `junmount -f` detaches a busy
//! union lazily: the overlay lives on, out of the table, for as long as a process
//! keeps a directory or file of it, and still writes into its upper and work dirs.
//! Pruning that upper or stacking a second overlay on it is undefined behaviour,
//! so junmount notes each such layer in `<lock_dir>/<jail>.detached` (the layer
//! and the overlay's device), and jmount and jclean refuse the layer while some
//! process still uses that device. FreeBSD's `umount -f` revokes the vnodes and
//! leaves nothing mounted: no note there.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::action::{Act, Dry, Perform, Sink, Site};
use crate::exit::{Coded, Domain, ExitCode};
use crate::platform::{Holder, Platform};

/// One layer whose union a forced unmount detached while it was in use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Detached {
    pub(crate) layer: String,
    /// The upper dir, as shown to the administrator.
    pub(crate) upper: String,
    /// The detached file system's device, `major:minor` (the table's, st_dev).
    pub(crate) dev: String,
    /// Its mount id, which an open file of it names (fdinfo's `mnt_id`).
    #[serde(default)]
    pub(crate) mnt: u64,
    /// The boot it was noted in: a device number means nothing after a reboot.
    pub(crate) boot: String,
}

/// A noted layer whose detached union some process still uses.
pub(crate) struct Live {
    pub(crate) note: Detached,
    pub(crate) holders: Vec<Holder>,
}

/// Why a jail's notes could not be written.
#[derive(Debug)]
pub(crate) enum DetachedError {
    /// The lock dir, where the notes go, cannot be made.
    LockDir { dir: PathBuf, source: io::Error },
    /// The notes file cannot be written, renamed into place or removed.
    Write { path: PathBuf, source: io::Error },
}

impl fmt::Display for DetachedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DetachedError::LockDir { dir, .. } => write!(f, "lock dir {}", dir.display()),
            DetachedError::Write { path, .. } => write!(f, "{}", path.display()),
        }
    }
}

impl std::error::Error for DetachedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DetachedError::LockDir { source, .. } | DetachedError::Write { source, .. } => {
                Some(source)
            }
        }
    }
}

impl Coded for DetachedError {
    /// A permission refused is 77: the cause is who runs the tool.
    fn code(&self) -> ExitCode {
        let (DetachedError::LockDir { source, .. } | DetachedError::Write { source, .. }) = self;
        if source.kind() == io::ErrorKind::PermissionDenied {
            ExitCode::NoPerm
        } else {
            ExitCode::CantCreate
        }
    }
}

/// This boot's id (Linux); empty where there is none.
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_string())
        .unwrap_or_default()
}

fn file(lock_dir: &Path, jail: &str) -> PathBuf {
    lock_dir.join(format!("{jail}.detached"))
}

fn read(path: &Path) -> Vec<Detached> {
    // A damaged line is dropped: the note only makes jmount and jclean careful.
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Replace the jail's notes with `notes` (none: the file goes), atomically: a
/// temp file renamed over it, so a reader never sees half of it.
fn write(lock_dir: &Path, jail: &str, notes: &[Detached]) -> Result<()> {
    let path = file(lock_dir, jail);
    let not_written = |source| {
        Domain::error(DetachedError::Write {
            path: path.clone(),
            source,
        })
    };
    if notes.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(not_written(e)),
            _ => Ok(()),
        };
    }
    let mut text = String::new();
    for note in notes {
        text.push_str(&serde_json::to_string(note).unwrap_or_default());
        text.push('\n');
    }
    std::fs::create_dir_all(lock_dir).map_err(|source| {
        Domain::error(DetachedError::LockDir {
            dir: lock_dir.to_path_buf(),
            source,
        })
    })?;
    let tmp = lock_dir.join(format!(".{jail}.detached.{}", std::process::id()));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(not_written)
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// Add `new` to the jail's notes (under the jail's lock).
pub(crate) fn note(lock_dir: &Path, jail: &str, new: Vec<Detached>) -> Result<()> {
    if new.is_empty() {
        return Ok(());
    }
    let mut notes = read(&file(lock_dir, jail));
    notes.retain(|old| !new.iter().any(|n| n.dev == old.dev && n.layer == old.layer));
    notes.extend(new);
    write(lock_dir, jail, &notes)
}

/// The jail's noted layers that a process still uses, with those processes;
/// the stale notes are forgotten (through `sink`: not for `-n`, and under the
/// jail's lock). A note is stale once no process uses its device, after a
/// reboot, or when that device is in the mount table: then the number was
/// given to another file system, and whoever uses it uses that one.
pub(crate) fn live(
    lock_dir: &Path,
    jail: &str,
    platform: &dyn Platform,
    sink: &Sink,
    site: &Site,
) -> Result<Vec<Live>> {
    let path = file(lock_dir, jail);
    let notes = read(&path);
    if notes.is_empty() {
        return Ok(Vec::new());
    }
    let table = platform.mounts(Path::new("/"))?;
    let boot = boot_id();
    let mut alive = Vec::new();
    for note in &notes {
        let reused = table.iter().any(|m| {
            m.linux
                .as_ref()
                .is_some_and(|l| format!("{}:{}", l.dev.0, l.dev.1) == note.dev)
        });
        if note.boot != boot || reused {
            continue;
        }
        // A mount id in the table was given to another mount: look by device only.
        let mnt_reused = table
            .iter()
            .any(|m| m.linux.as_ref().is_some_and(|l| l.id == note.mnt));
        let mnt = if mnt_reused { 0 } else { note.mnt };
        let holders = platform.detached_users(&note.dev, mnt);
        if !holders.is_empty() {
            alive.push(Live {
                note: note.clone(),
                holders,
            });
        }
    }
    if alive.len() != notes.len() {
        let kept: Vec<Detached> = alive.iter().map(|l| l.note.clone()).collect();
        sink.act(
            site,
            Forget {
                lock_dir,
                jail,
                kept: &kept,
            },
        )?;
    }
    Ok(alive)
}

/// Forget the stale notes of a jail: keep only `kept`.
struct Forget<'a> {
    lock_dir: &'a Path,
    jail: &'a str,
    kept: &'a [Detached],
}

impl Act for Forget<'_> {
    type Output = ();
    fn perform(self, _: &Perform, _: &Site) -> Result<()> {
        write(self.lock_dir, self.jail, self.kept)
    }
    fn print(self, _: &Dry, _: &Site) {}
}

impl Live {
    /// `UPPER is still used by the union junmount -f detached: held by ...`.
    pub(crate) fn describe(&self, root: &Path, jail: &str) -> String {
        let named: Vec<String> = self
            .holders
            .iter()
            .map(|h| h.describe(root, jail))
            .collect();
        format!(
            "{}: still in use by the union junmount -f detached: held by {}",
            self.note.upper,
            named.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::check_domain as check;

    #[test]
    fn detached_error_codes_and_lines() {
        let os = io::Error::from_raw_os_error;
        check(
            DetachedError::LockDir {
                dir: "/run/jlayers".into(),
                source: os(libc::EROFS),
            },
            ExitCode::CantCreate,
            "lock dir /run/jlayers: Read-only file system",
        );
        check(
            DetachedError::Write {
                path: "/run/jlayers/web.detached".into(),
                source: os(libc::ENOSPC),
            },
            ExitCode::CantCreate,
            "/run/jlayers/web.detached: No space left on device",
        );
        // A permission refused is 77 whatever was written.
        for errno in [libc::EACCES, libc::EPERM] {
            check(
                DetachedError::Write {
                    path: "/run/jlayers/web.detached".into(),
                    source: os(errno),
                },
                ExitCode::NoPerm,
                &format!(
                    "/run/jlayers/web.detached: {}",
                    nix::errno::Errno::from_raw(errno).desc()
                ),
            );
        }
    }

    /// A file where the lock dir should be: the notes cannot be written (73).
    #[test]
    fn notes_not_written() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        let noted = Detached {
            layer: "ports".into(),
            upper: "/upper".into(),
            dev: "0:42".into(),
            mnt: 7,
            boot: String::new(),
        };
        let err = note(&file.join("run"), "web", vec![noted]).unwrap_err();
        assert_eq!(crate::exit::code_of(&err), ExitCode::CantCreate);
        assert!(matches!(
            err.downcast_ref::<Domain>()
                .and_then(Domain::get::<DetachedError>),
            Some(DetachedError::LockDir { .. })
        ));
        assert_eq!(
            crate::exit::text(&err),
            format!("lock dir {}/run: Not a directory", file.display())
        );
    }
}
