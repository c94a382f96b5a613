//! The dirs that keep host users out of the upper dirs.
//!
//! A jail's root user can write a set-user-ID root file into its upper dir (through
//! its view of the target), and any host user who can walk the host path to it can
//! run it as root (Docker's CVE-2021-41091). The upper dir itself cannot be the
//! lock: the jail sees it as its target's root and sets its mode at will. The lock
//! is the dirs around it that jlayers owns (upper_root and the dirs below it down
//! to the upper's parent, a tmpfs upper's root, the overlay work dir): 0700, or
//! 0710 with `upper_group`. jmount makes them so and sets back what it finds more
//! open, through the descriptor it looked at, never a path looked up again.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, fchmod, fstat, mkdirat};
use nix::unistd::{Gid, fchown};

use crate::exit::Domain;
use crate::target::{Beneath, MadeDir, Missing, Place, TargetError};

pub(crate) use crate::step::Access;

/// One of jlayers' dirs as found: its descriptor, permission bits and group.
#[derive(Debug)]
pub(crate) struct Seen {
    fd: OwnedFd,
    pub(crate) mode: u32,
    pub(crate) gid: u32,
}

impl Seen {
    /// Look at the dir `fd` (opened at `path`).
    pub(crate) fn look(fd: OwnedFd, path: &Path) -> Result<Seen> {
        let st = fstat(fd.as_fd()).map_err(|e| TargetError::open(path, e))?;
        // mode_t is u16 on FreeBSD.
        #[allow(clippy::useless_conversion)]
        let mode = u32::from(st.st_mode) & 0o7777;
        Ok(Seen {
            fd,
            mode,
            gid: st.st_gid,
        })
    }

    /// Whether it lets in more than `access` does: other users, or a group other
    /// than the one named.
    pub(crate) fn too_open(&self, access: Access) -> bool {
        let others = self.mode & 0o077 & !(access.mode() & 0o070);
        let group = self.mode & 0o070 != 0 && access.gid.is_some_and(|g| g != self.gid);
        others != 0 || group
    }

    /// Whether it is not exactly as `access` says.
    pub(crate) fn differs(&self, access: Access) -> bool {
        self.mode & 0o777 != access.mode() || access.gid.is_some_and(|g| g != self.gid)
    }

    /// Set it to `access`, by its descriptor; set-ID and sticky bits are kept.
    pub(crate) fn set(&self, access: Access, path: &Path) -> Result<()> {
        let err = |e: Errno| {
            Domain::error(TargetError::Mode {
                path: path.to_path_buf(),
                source: e.into(),
            })
        };
        let special = self.mode & 0o7000;
        if let Some(gid) = access.gid.filter(|&g| g != self.gid) {
            // Closed first: the new group never gets what the old mode gave the old one.
            fchmod(
                self.fd.as_fd(),
                Mode::from_bits_truncate((special | 0o700) as _),
            )
            .map_err(err)?;
            fchown(self.fd.as_fd(), None, Some(Gid::from_raw(gid))).map_err(err)?;
        }
        fchmod(
            self.fd.as_fd(),
            Mode::from_bits_truncate((special | access.mode()) as _),
        )
        .map_err(err)
    }

    /// What a warning says of it: `mode 0755`, or `mode 0750, group 20` when a
    /// group is named and its group can pass.
    fn describe(&self, access: Access) -> String {
        if access.gid.is_some() && self.mode & 0o070 != 0 {
            format!("mode {:04o}, group {}", self.mode & 0o7777, self.gid)
        } else {
            format!("mode {:04o}", self.mode & 0o7777)
        }
    }
}

/// The warning for a dir of jlayers' more open than `access`: `done` when this
/// run set it right, else what would (`tool`) or what the admin can run.
pub(crate) fn warning(path: &Path, seen: &Seen, access: Access, tool: &str, done: bool) -> String {
    let head = format!(
        "{} is {}: a host user can run the jail's set-user-ID files through it",
        path.display(),
        seen.describe(access)
    );
    if done {
        return format!("{head}; set to {}", access.describe());
    }
    let fix: Vec<String> = access
        .commands(path)
        .iter()
        .map(|argv| {
            let words: Vec<Vec<u8>> = argv.iter().map(|w| crate::report::sh_quote(w)).collect();
            String::from_utf8_lossy(&words.join(&b' ')).into_owned()
        })
        .collect();
    format!(
        "{head}; {tool} sets it to {} ({}), as it does every dir it owns there",
        access.describe(),
        fix.join(" && ")
    )
}

/// Make a dir jlayers owns: missing parents as [`Place`] makes them (0755), the
/// dir itself set to `access` by the descriptor it was opened by.
/// The dirs made (missing parents too) are pushed on `made`, top down.
pub(crate) fn make(place: &Place, access: Access, made: &mut Vec<MadeDir>) -> Result<()> {
    let cannot = |e: Errno| TargetError::create(&place.path, e);
    let mode = Mode::from_bits_truncate(access.mode() as _);
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let fd = match place.split() {
        // Below a jail root: made and opened on its parent's descriptor, no link
        // followed.
        Some((parent, name)) if place.root.is_some() => {
            let dir = parent.create(made)?;
            match mkdirat(&dir, name, mode) {
                Ok(()) => made.extend(MadeDir::made(&dir, name, &place.path)),
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(cannot(e)),
            }
            openat(&dir, name, flags | OFlag::O_NOFOLLOW, Mode::empty()).map_err(cannot)?
        }
        // A host path: the admin's links are followed, as everywhere.
        _ => {
            let parent = match place.path.parent() {
                Some(parent) => Some(Place::host(parent.to_path_buf()).create(made)?),
                None => None,
            };
            match nix::unistd::mkdir(&place.path, mode) {
                Ok(()) => {
                    if let (Some(dir), Some(name)) = (&parent, place.path.file_name()) {
                        made.extend(MadeDir::made(dir, name, &place.path));
                    }
                }
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(cannot(e)),
            }
            open(&place.path, flags, Mode::empty()).map_err(cannot)?
        }
    };
    // The umask may have taken bits away, and the group is the parent's.
    let seen = Seen::look(fd, &place.path)?;
    if seen.differs(access) {
        seen.set(access, &place.path)?;
    }
    Ok(())
}

/// What `--status` says of a stack's guards: each dir more open than its access
/// (or, for a host upper outside upper_root, with no closed dir above it), with
/// its warning. Looks only; a dir that cannot be opened is left to jmount to say.
pub(crate) fn findings(guards: &crate::plan::Guards, tool: &str) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for &(ref place, access) in &guards.owned {
        let Ok(Beneath::Dir(fd)) = place.open(Missing::Report) else {
            continue;
        };
        let Ok(seen) = Seen::look(fd, &place.path) else {
            continue;
        };
        if seen.too_open(access) {
            let text = warning(&place.path, &seen, access, tool, false);
            out.push((place.path.clone(), text));
        }
    }
    let above = guards
        .checked
        .as_ref()
        .and_then(|upper| Some((upper, open_above(upper)?)));
    if let Some((upper, parent)) = above {
        out.push((parent.clone(), open_above_warning(upper, &parent)));
    }
    out
}

/// An upper dir on a host path outside upper_root: the dirs above it are the
/// admin's, never changed. When every one of them lets other users through, the
/// upper's parent (to close); `None` when one is closed to them.
pub(crate) fn open_above(upper: &Path) -> Option<PathBuf> {
    let parent = upper.parent()?;
    let closed = parent
        .ancestors()
        .any(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 == 0));
    (!closed).then(|| parent.to_path_buf())
}

/// The warning for [`open_above`]'s finding.
pub(crate) fn open_above_warning(upper: &Path, parent: &Path) -> String {
    format!(
        "upper dir {}: every dir above it lets other users through, so a host user can run the jail's set-user-ID files through it; chmod 0700 {} (jlayers changes only the dirs it owns: those below upper_root)",
        upper.display(),
        parent.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_open_and_differs() {
        let dir = tempfile::tempdir().unwrap();
        let fd = open(
            dir.path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let mut seen = Seen::look(fd, dir.path()).unwrap();
        let root = Access::default();
        let group = Access { gid: Some(5) };
        for (mode, gid, open_root, open_group) in [
            (0o755, 0, true, true),
            (0o700, 0, false, false),
            (0o710, 5, true, false),
            (0o710, 6, true, true),
            (0o701, 5, true, true),
            (0o1700, 0, false, false),
        ] {
            seen.mode = mode;
            seen.gid = gid;
            assert_eq!(seen.too_open(root), open_root, "{mode:o} {gid}");
            assert_eq!(seen.too_open(group), open_group, "{mode:o} {gid}");
        }
        seen.mode = 0o700;
        seen.gid = 0;
        assert!(!seen.differs(root));
        assert!(seen.differs(group), "less open, but not as configured");
        assert_eq!(group.tmpfs_options(), "mode=0710,gid=5");
        assert_eq!(root.tmpfs_options(), "mode=0700");
    }
}
