//! Paths below a jail root, walked without following any symbolic link.
//!
//! The jail's root user owns everything below the root: a symlink planted at
//! `usr` or `usr/ports` would otherwise aim a host-side mount (or mkdir) at any host
//! directory. Like jail(8)'s `check_path()` for mount.fstab, every component is
//! opened relative to its parent with `O_NOFOLLOW | O_DIRECTORY`; missing ones are
//! created with `mkdirat` on the parent's descriptor.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use anyhow::Result;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstatat, mkdirat};

use crate::exit::{Coded, Domain, ExitCode};

/// Why a directory beneath a jail root, or one of jlayers' own around the
/// uppers (guard.rs), could not be opened, made or set.
#[derive(Debug)]
pub(crate) enum TargetError {
    /// The jail root is missing (or a file is on its way).
    NoRoot { root: PathBuf },
    /// The jail root cannot be opened.
    Root { root: PathBuf, source: io::Error },
    /// A path below a root that is not plain relative: the configuration's.
    NotRelative { rel: PathBuf },
    /// A missing directory cannot be made.
    Create { path: PathBuf, source: io::Error },
    /// A directory made (or found made) is missing when opened.
    Gone { path: PathBuf },
    /// A directory that must exist does not.
    Missing { path: PathBuf },
    /// A component is a symbolic link, never followed.
    Symlink { path: PathBuf },
    /// A component is something other than a directory.
    NotDir { path: PathBuf },
    /// A directory cannot be opened or looked at.
    Open { path: PathBuf, source: io::Error },
    /// One of jlayers' dirs cannot be set to its mode or group.
    Mode { path: PathBuf, source: io::Error },
}

impl TargetError {
    /// [`TargetError::Create`] for a failed system call.
    pub(crate) fn create(path: &Path, errno: Errno) -> anyhow::Error {
        Domain::error(TargetError::Create {
            path: path.to_path_buf(),
            source: errno.into(),
        })
    }

    /// [`TargetError::Open`] for a failed system call.
    pub(crate) fn open(path: &Path, errno: Errno) -> anyhow::Error {
        Domain::error(TargetError::Open {
            path: path.to_path_buf(),
            source: errno.into(),
        })
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A system call's cause is shown after it (exit::text).
        match self {
            TargetError::NoRoot { root } => {
                write!(f, "jail root {} does not exist", root.display())
            }
            TargetError::Root { root, .. } => write!(f, "jail root {}", root.display()),
            TargetError::NotRelative { rel } => {
                write!(f, "{}: not a plain relative path", rel.display())
            }
            TargetError::Create { path, .. } | TargetError::Gone { path } => {
                write!(f, "cannot create {}", path.display())
            }
            TargetError::Missing { path } => write!(f, "{} does not exist", path.display()),
            TargetError::Symlink { path } => write!(
                f,
                "{} is a symbolic link; refusing to follow it (the jail could aim it at any host directory)",
                path.display()
            ),
            TargetError::NotDir { path } => {
                write!(f, "{} exists and is not a directory", path.display())
            }
            TargetError::Open { path, .. } => write!(f, "{}", path.display()),
            TargetError::Mode { path, .. } => {
                write!(f, "cannot set the mode of {}", path.display())
            }
        }
    }
}

impl std::error::Error for TargetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TargetError::Root { source, .. }
            | TargetError::Create { source, .. }
            | TargetError::Open { source, .. }
            | TargetError::Mode { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Coded for TargetError {
    /// By what went wrong, not by the errno: a root that cannot be opened is a
    /// missing input (66) even when refused.
    fn code(&self) -> ExitCode {
        match self {
            TargetError::NoRoot { .. } | TargetError::Root { .. } | TargetError::Missing { .. } => {
                ExitCode::NoInput
            }
            TargetError::NotRelative { .. } => ExitCode::Config,
            TargetError::Symlink { .. } => ExitCode::NoPerm,
            TargetError::Create { .. }
            | TargetError::Gone { .. }
            | TargetError::NotDir { .. }
            | TargetError::Open { .. }
            | TargetError::Mode { .. } => ExitCode::CantCreate,
        }
    }
}

/// What opening a directory does about missing components.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Create them (mode 0755).
    Create,
    /// Say which is missing: [`Beneath::Missing`].
    Report,
}

/// Open `root/rel`, creating missing directories if told to; else a missing one is
/// named by [`Beneath::Missing`].
/// The directories it creates are pushed on `made_dirs`, top down.
fn open_beneath(
    root: &Path,
    rel: &Path,
    missing: Missing,
    made_dirs: &mut Vec<MadeDir>,
) -> Result<Beneath> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = open(root, flags, Mode::empty()).map_err(|err| {
        let root = root.to_path_buf();
        Domain::error(match err {
            Errno::ENOENT | Errno::ENOTDIR => TargetError::NoRoot { root },
            err => TargetError::Root {
                root,
                source: err.into(),
            },
        })
    })?;
    if let Some(fd) = open_in_one(&dir, rel, flags) {
        return Ok(Beneath::Dir(fd));
    }
    let mut here = root.to_path_buf();
    for component in rel.components() {
        let Component::Normal(name) = component else {
            return Err(Domain::error(TargetError::NotRelative {
                rel: rel.to_path_buf(),
            }));
        };
        here.push(name);
        match step_in(&dir, name, &here, missing, made_dirs)? {
            Some(fd) => dir = fd,
            None => return Ok(Beneath::Missing(here)),
        }
    }
    Ok(Beneath::Dir(dir))
}

/// One component of [`open_beneath`]'s walk: `name` in `dir` (at `here`),
/// made if missing and told to (once: a dir made and gone again is an error);
/// `None`: missing, and only to be reported.
fn step_in(
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    here: &Path,
    missing: Missing,
    made_dirs: &mut Vec<MadeDir>,
) -> Result<Option<OwnedFd>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let mut made = false;
    loop {
        match openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::ENOENT) if missing == Missing::Report => return Ok(None),
            Err(Errno::ENOENT) if !made => {
                match mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) => made_dirs.extend(MadeDir::made(dir, name, here)),
                    Err(Errno::EEXIST) => {}
                    Err(err) => return Err(TargetError::create(here, err)),
                }
                made = true;
            }
            // O_NOFOLLOW on a link: ELOOP on Linux, EMLINK on FreeBSD; ENOTDIR
            // for other non-directories. Look before saying which.
            Err(err) => return Err(refusal(dir, name, here, err)),
        }
    }
}

/// The whole walk in one system call where the kernel can keep the same rules
/// (Linux openat2: beneath `dir`, no symlink in any component); `None` sends the
/// caller to the component walk, which makes or names what is missing and says
/// why a component was refused. Most of what a mount or unmount opens is there.
#[cfg(target_os = "linux")]
fn open_in_one(dir: &OwnedFd, rel: &Path, flags: OFlag) -> Option<OwnedFd> {
    use nix::fcntl::{OpenHow, ResolveFlag, openat2};
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let how = OpenHow::new().flags(flags | OFlag::O_NOFOLLOW).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    openat2(dir, rel, how).ok()
}

#[cfg(not(target_os = "linux"))]
fn open_in_one(_dir: &OwnedFd, _rel: &Path, _flags: OFlag) -> Option<OwnedFd> {
    None
}

/// A directory as the host must reach it: below a jail root (every component the
/// jail's root user could swap is walked without following links), or by a host
/// path that no jail controls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Place {
    /// The absolute path: for messages, the mount table and `-n`.
    pub(crate) path: PathBuf,
    /// The jail root it lies beneath, if any.
    pub(crate) root: Option<PathBuf>,
}

impl Place {
    pub(crate) fn host(path: PathBuf) -> Place {
        Place { path, root: None }
    }

    /// `root/rel`, reached only beneath `root`.
    pub(crate) fn beneath(root: &Path, rel: &Path) -> Place {
        Place {
            path: root.join(rel),
            root: Some(root.to_path_buf()),
        }
    }

    /// The path below the jail root (empty for a host place).
    pub(crate) fn rel(&self) -> &Path {
        match &self.root {
            Some(root) => self.path.strip_prefix(root).unwrap_or(Path::new("")),
            None => Path::new(""),
        }
    }

    /// The directory that holds this one, reached the same way, and this one's name.
    pub(crate) fn split(&self) -> Option<(Place, &std::ffi::OsStr)> {
        let name = self.path.file_name()?;
        if self.root.is_some() && self.rel().as_os_str().is_empty() {
            return None;
        }
        let parent = Place {
            path: self.path.parent()?.to_path_buf(),
            root: self.root.clone(),
        };
        Some((parent, name))
    }

    /// `self/name`, reached the same way.
    pub(crate) fn join(&self, name: &str) -> Place {
        Place {
            path: self.path.join(name),
            root: self.root.clone(),
        }
    }

    /// A sibling with `suffix` added to the name (overlay's work dir).
    pub(crate) fn with_suffix(&self, suffix: &str) -> Place {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        Place {
            path: self.path.with_file_name(name),
            root: self.root.clone(),
        }
    }

    /// Open the directory (creating what is missing if told to).
    pub(crate) fn open(&self, missing: Missing) -> Result<Beneath> {
        self.open_making(missing, &mut Vec::new())
    }

    /// Open the directory, creating what is missing: the directories made, top
    /// down, are pushed on `made`, so that a failed run can take them back.
    pub(crate) fn create(&self, made: &mut Vec<MadeDir>) -> Result<OwnedFd> {
        match self.open_making(Missing::Create, made)? {
            Beneath::Dir(fd) => Ok(fd),
            Beneath::Missing(path) => Err(Domain::error(TargetError::Gone { path })),
        }
    }

    fn open_making(&self, missing: Missing, made: &mut Vec<MadeDir>) -> Result<Beneath> {
        match &self.root {
            Some(root) => open_beneath(root, self.rel(), missing, made),
            None => open_host(&self.path, missing, made),
        }
    }

    /// Open the directory, which must exist.
    pub(crate) fn open_dir(&self) -> Result<OwnedFd> {
        match self.open(Missing::Report)? {
            Beneath::Dir(fd) => Ok(fd),
            Beneath::Missing(path) => Err(Domain::error(TargetError::Missing { path })),
        }
    }
}

/// A host directory: links in it are the administrator's and are followed.
fn open_host(path: &Path, missing: Missing, made: &mut Vec<MadeDir>) -> Result<Beneath> {
    if missing == Missing::Create {
        // The admin's own tree: the dirs missing now are the ones made, top down.
        let mut absent: Vec<&Path> = path
            .ancestors()
            .take_while(|dir| std::fs::symlink_metadata(dir).is_err())
            .collect();
        absent.reverse();
        std::fs::create_dir_all(path).map_err(|source| {
            Domain::error(TargetError::Create {
                path: path.to_path_buf(),
                source,
            })
        })?;
        for dir in absent {
            let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
                continue;
            };
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            if let Ok(parent) = open(parent, flags, Mode::empty()) {
                made.extend(MadeDir::made(&parent, name, dir));
            }
        }
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match open(path, flags, Mode::empty()) {
        Ok(fd) => Ok(Beneath::Dir(fd)),
        Err(Errno::ENOENT) => Ok(Beneath::Missing(path.to_path_buf())),
        Err(err) => Err(TargetError::open(path, err)),
    }
}

/// A directory a run made, pinned by its parent's descriptor and its identity,
/// so that a run that fails can take it back without looking its path up again.
#[derive(Debug)]
pub(crate) struct MadeDir {
    parent: OwnedFd,
    name: std::ffi::OsString,
    id: (u64, u64),
    /// For messages.
    pub(crate) path: PathBuf,
}

impl MadeDir {
    /// The directory `name` just made in `parent`; `None` if it cannot be pinned
    /// (then it is left, as anything the run cannot be sure it made).
    pub(crate) fn made(parent: &OwnedFd, name: &std::ffi::OsStr, path: &Path) -> Option<MadeDir> {
        let st = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
        Some(MadeDir {
            parent: parent.try_clone().ok()?,
            name: name.to_os_string(),
            id: file_id(&st),
            path: path.to_path_buf(),
        })
    }

    /// Remove it if it is still the directory made and empty; whatever was put
    /// in it since (by the jail or anyone) keeps it. Whether it was removed.
    pub(crate) fn remove(&self) -> bool {
        let same = fstatat(
            &self.parent,
            self.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok_and(|st| file_id(&st) == self.id);
        same && nix::unistd::unlinkat(
            &self.parent,
            self.name.as_os_str(),
            nix::unistd::UnlinkatFlags::RemoveDir,
        )
        .is_ok()
    }
}

/// A file's device and inode.
#[allow(clippy::unnecessary_cast)] // st_dev and st_ino differ in width across platforms
fn file_id(st: &nix::sys::stat::FileStat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// The result of [`open_beneath`].
#[derive(Debug)]
pub(crate) enum Beneath {
    /// The directory, opened.
    Dir(OwnedFd),
    /// The first missing component's path.
    Missing(PathBuf),
}

/// Why the component `name` of `dir` (at `here`) could not be opened, which failed
/// with `err`: a symbolic link, something not a directory, or `err` itself.
fn refusal(dir: &OwnedFd, name: &std::ffi::OsStr, here: &Path, err: Errno) -> anyhow::Error {
    let path = here.to_path_buf();
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
            Domain::error(TargetError::Symlink { path })
        }
        Ok(_) => Domain::error(TargetError::NotDir { path }),
        Err(_) => TargetError::open(here, err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::code_of;
    use std::os::unix::fs::symlink;

    #[test]
    fn creates_and_refuses_links() {
        let jail = tempfile::tempdir().unwrap();
        let root = jail.path();
        let open =
            |rel: &str, missing| open_beneath(root, Path::new(rel), missing, &mut Vec::new());
        let Beneath::Missing(missing) = open("usr/ports", Missing::Report).unwrap() else {
            panic!("should be missing")
        };
        assert_eq!(missing, root.join("usr"));
        let made = open("usr/ports", Missing::Create).unwrap();
        assert!(matches!(made, Beneath::Dir(..)));
        assert!(root.join("usr/ports").is_dir());

        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), root.join("usr/local")).unwrap();
        for create in [Missing::Report, Missing::Create] {
            let err = open("usr/local/x", create).unwrap_err();
            assert_eq!(code_of(&err), ExitCode::NoPerm, "{err:#}");
            assert!(format!("{err:#}").contains("usr/local is a symbolic link"));
        }
        assert!(!outside.path().join("x").exists());
    }

    #[test]
    fn refuses_dangling_links_files_and_a_missing_root() {
        let jail = tempfile::tempdir().unwrap();
        let root = jail.path();
        let open = |rel: &str| open_beneath(root, Path::new(rel), Missing::Create, &mut Vec::new());
        std::fs::create_dir(root.join("usr")).unwrap();
        symlink("/nonexistent", root.join("usr/dangling")).unwrap();
        assert_eq!(
            code_of(&open("usr/dangling").unwrap_err()),
            ExitCode::NoPerm
        );
        assert!(!Path::new("/nonexistent").exists());
        std::fs::write(root.join("usr/file"), "").unwrap();
        assert_eq!(
            code_of(&open("usr/file/x").unwrap_err()),
            ExitCode::CantCreate
        );
        let nope = root.join("nope");
        let err = open_beneath(&nope, Path::new("x"), Missing::Create, &mut Vec::new());
        assert_eq!(code_of(&err.unwrap_err()), ExitCode::NoInput);
    }

    #[test]
    fn target_error_codes_and_lines_of_a_root() {
        use crate::exit::check_domain as check;
        let os = io::Error::from_raw_os_error;
        check(
            TargetError::NoRoot {
                root: "/jails/web".into(),
            },
            ExitCode::NoInput,
            "jail root /jails/web does not exist",
        );
        // Refused, it is a missing input all the same.
        check(
            TargetError::Root {
                root: "/jails/web".into(),
                source: os(libc::EACCES),
            },
            ExitCode::NoInput,
            "jail root /jails/web: Permission denied",
        );
        check(
            TargetError::NotRelative {
                rel: "../etc".into(),
            },
            ExitCode::Config,
            "../etc: not a plain relative path",
        );
    }

    /// A path beneath a root that is refused or cannot be made.
    #[test]
    fn target_error_codes_and_lines_of_a_path() {
        use crate::exit::check_domain as check;
        let path = || PathBuf::from("/jails/web/usr/ports");
        let os = io::Error::from_raw_os_error;
        check(
            TargetError::Create {
                path: path(),
                source: os(libc::EROFS),
            },
            ExitCode::CantCreate,
            "cannot create /jails/web/usr/ports: Read-only file system",
        );
        check(
            TargetError::Gone { path: path() },
            ExitCode::CantCreate,
            "cannot create /jails/web/usr/ports",
        );
        check(
            TargetError::Missing { path: path() },
            ExitCode::NoInput,
            "/jails/web/usr/ports does not exist",
        );
        check(
            TargetError::Symlink { path: path() },
            ExitCode::NoPerm,
            "/jails/web/usr/ports is a symbolic link; refusing to follow it (the jail could aim it at any host directory)",
        );
        check(
            TargetError::NotDir { path: path() },
            ExitCode::CantCreate,
            "/jails/web/usr/ports exists and is not a directory",
        );
        check(
            TargetError::Open {
                path: path(),
                source: os(libc::ELOOP),
            },
            ExitCode::CantCreate,
            &format!("/jails/web/usr/ports: {}", Errno::ELOOP.desc()),
        );
        check(
            TargetError::Mode {
                path: path(),
                source: os(libc::EPERM),
            },
            ExitCode::CantCreate,
            "cannot set the mode of /jails/web/usr/ports: Operation not permitted",
        );
    }

    fn target_error(err: &anyhow::Error) -> Option<&TargetError> {
        err.downcast_ref::<Domain>()
            .and_then(Domain::get::<TargetError>)
    }

    /// The walk's refusals are the domain's own errors, a system call's cause
    /// shown by its text.
    #[test]
    fn refusals_are_target_errors() {
        let jail = tempfile::tempdir().unwrap();
        let root = jail.path();
        let open = |rel: &str| open_beneath(root, Path::new(rel), Missing::Create, &mut Vec::new());
        std::fs::write(root.join("file"), "").unwrap();
        symlink("/", root.join("link")).unwrap();
        let err = open("file/x").unwrap_err();
        assert!(matches!(
            target_error(&err),
            Some(TargetError::NotDir { .. })
        ));
        let err = open("link/x").unwrap_err();
        assert!(matches!(
            target_error(&err),
            Some(TargetError::Symlink { .. })
        ));
        let err = open("../x").unwrap_err();
        assert!(matches!(
            target_error(&err),
            Some(TargetError::NotRelative { .. })
        ));
        let file = root.join("file");
        let err =
            open_beneath(&file, Path::new("x"), Missing::Create, &mut Vec::new()).unwrap_err();
        assert!(matches!(
            target_error(&err),
            Some(TargetError::NoRoot { .. })
        ));
        let err = Place::beneath(root, Path::new("nope"))
            .open_dir()
            .unwrap_err();
        assert!(matches!(
            target_error(&err),
            Some(TargetError::Missing { .. })
        ));
        assert_eq!(code_of(&err), ExitCode::NoInput);
        assert_eq!(
            crate::exit::text(&err),
            format!("{}/nope does not exist", root.display())
        );
        let err = Place::host(file.join("x"))
            .create(&mut Vec::new())
            .unwrap_err();
        assert!(matches!(
            target_error(&err),
            Some(TargetError::Create { .. })
        ));
        assert_eq!(code_of(&err), ExitCode::CantCreate);
        assert_eq!(
            crate::exit::text(&err),
            format!("cannot create {}/x: Not a directory", file.display())
        );
    }

    /// What a run made is taken back only while it is the same dir and empty.
    #[test]
    fn made_dirs_taken_back_only_empty_and_same() {
        let top = tempfile::tempdir().unwrap();
        let root = top.path();
        let mut made = Vec::new();
        Place::beneath(root, Path::new("a/b/c"))
            .create(&mut made)
            .unwrap();
        let paths: Vec<_> = made.iter().map(|d| d.path.clone()).collect();
        assert_eq!(
            paths,
            [root.join("a"), root.join("a/b"), root.join("a/b/c")]
        );
        // Something put in c keeps it, and so its parents.
        std::fs::write(root.join("a/b/c/f"), "").unwrap();
        assert_eq!(
            made.iter().rev().map(|d| d.remove()).collect::<Vec<_>>(),
            [false; 3]
        );
        // c swapped for another (empty) dir: not the one made, kept. (The made one
        // still exists elsewhere, so the new one cannot reuse its inode.)
        std::fs::rename(root.join("a/b/c"), root.join("moved")).unwrap();
        std::fs::create_dir(root.join("a/b/c")).unwrap();
        assert!(!made[2].remove());
        std::fs::remove_dir(root.join("a/b/c")).unwrap();
        // Empty and the same: gone, bottom up.
        assert!(made[1].remove() && made[0].remove());
        assert!(!root.join("a").exists());
        // A host path: the dirs that were missing, and only those.
        let mut made = Vec::new();
        Place::host(root.join("h/i")).create(&mut made).unwrap();
        Place::host(root.join("h/i")).create(&mut made).unwrap();
        assert_eq!(made.len(), 2);
        assert!(made.iter().rev().all(MadeDir::remove));
        assert!(!root.join("h").exists() && root.is_dir());
    }
}
