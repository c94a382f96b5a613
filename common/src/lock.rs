//! One `flock(2)` lock file per jail, so that runs from cron never race each other.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::exit::{Coded, Domain, ExitCode, of_errno};

/// Held for as long as it lives; the kernel drops it if the process dies.
#[derive(Debug)]
pub(crate) struct JailLock {
    lock: Option<Flock<File>>,
}

impl JailLock {
    /// The locked open file description (`None`: an ancestor holds the lock), for
    /// the run's sandbox to hold to its end.
    pub(crate) fn fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.lock.as_ref().map(|lock| lock.as_raw_fd())
    }
}

impl Drop for JailLock {
    /// Empty the file before letting go: an empty lock file means "being taken",
    /// never a stale pid (a run killed with -9 leaves its pid, which the next
    /// holder overwrites at once and a waiter checks for life).
    fn drop(&mut self) {
        if let Some(lock) = &self.lock {
            let _ = lock.set_len(0);
        }
    }
}

/// How long a second run waits for the holder's pid to appear in the file, or for
/// a dying holder to let go.
const PID_WAIT: Duration = Duration::from_secs(1);

/// Why a jail's lock could not be taken.
#[derive(Debug)]
pub(crate) enum LockError {
    /// The lock directory cannot be made.
    CreateDir { dir: PathBuf, source: io::Error },
    /// The lock file cannot be opened or made.
    CreateFile { path: PathBuf, source: io::Error },
    /// Another run holds it.
    Busy { holder: Holder, path: PathBuf },
    /// flock(2) itself failed.
    Lock { path: PathBuf, errno: Errno },
}

/// Who holds a jail's lock, as its file names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// The run that took it.
    Pid(u32),
    /// The sandbox's pid 1 of a run whose jupdate is gone.
    Sandbox(u32),
    /// The file names no pid (yet).
    Unknown,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Pid(p) => write!(f, "pid {p}"),
            Holder::Sandbox(p) => write!(f, "pid {p}, the sandbox of a jupdate that was killed"),
            Holder::Unknown => f.write_str("pid unknown"),
        }
    }
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::CreateDir { dir, .. } => write!(f, "lock dir {}", dir.display()),
            LockError::CreateFile { path, .. } => write!(f, "lock file {}", path.display()),
            LockError::Busy { holder, path } => write!(
                f,
                "locked by another jlayers run ({holder}, {})",
                path.display()
            ),
            LockError::Lock { path, errno } => {
                write!(f, "lock {}: {}", path.display(), errno.desc())
            }
        }
    }
}

impl std::error::Error for LockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::CreateDir { source, .. } | LockError::CreateFile { source, .. } => {
                Some(source)
            }
            LockError::Busy { .. } => None,
            // Its description is in the line already: not told twice.
            LockError::Lock { .. } => None,
        }
    }
}

impl Coded for LockError {
    /// A permission refused is 77 whatever was being made: the cause is who runs
    /// the tool.
    fn code(&self) -> ExitCode {
        match self {
            LockError::CreateDir { source, .. } | LockError::CreateFile { source, .. } => {
                if source.kind() == io::ErrorKind::PermissionDenied {
                    ExitCode::NoPerm
                } else {
                    ExitCode::CantCreate
                }
            }
            LockError::Busy { .. } => ExitCode::TempFail,
            LockError::Lock { errno, .. } => of_errno(*errno, ExitCode::CantCreate),
        }
    }
}

/// Take `<dir>/<jail>.lock`, or fail at once (75) naming the holder's pid.
///
/// A run started by the holder itself (jupdate starting a jail whose jail.conf hook
/// runs `jmount NAME`) would deadlock on its parent: when the holder is an ancestor
/// of this process the lock is taken as already ours.
pub(crate) fn lock_jail(dir: &Path, jail: &str) -> Result<JailLock> {
    let path = dir.join(format!("{jail}.lock"));
    let start = Instant::now();
    let mut file = open_lock_file(dir, &path).map_err(Domain::error)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(holding(lock)),
            Err((locked, Errno::EWOULDBLOCK)) => match seen(&locked) {
                Seen::Ancestor => return Ok(JailLock { lock: None }),
                // Between the holder's flock and its write the file is empty (or
                // names a dead run): look again, briefly.
                Seen::Holder { live: false, .. } if start.elapsed() < PID_WAIT => {
                    std::thread::sleep(Duration::from_millis(5));
                    file = locked;
                }
                Seen::Holder { holder, .. } => {
                    return Err(Domain::error(LockError::Busy { holder, path }));
                }
            },
            Err((_, errno)) => return Err(Domain::error(LockError::Lock { path, errno })),
        }
    }
}

/// Open (or make) the lock file; the lock dir is made when missing, not looked at
/// again for every jail.
fn open_lock_file(dir: &Path, path: &Path) -> Result<File, LockError> {
    let try_open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
    };
    let file = match try_open() {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|source| LockError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
            try_open()
        }
        opened => opened,
    };
    file.map_err(|source| LockError::CreateFile {
        path: path.to_path_buf(),
        source,
    })
}

/// The lock taken: the pid, for the message of whoever comes second, written
/// whole at offset 0, then the file cut to it, so that it never reads empty or
/// half-written while held.
fn holding(lock: Flock<File>) -> JailLock {
    let line = format!("{}\n", std::process::id());
    let _ = lock.write_all_at(line.as_bytes(), 0);
    let _ = lock.set_len(line.len() as u64);
    JailLock { lock: Some(lock) }
}

/// What the file of a lock held by someone else says.
enum Seen {
    /// An ancestor of this process holds it: ours already.
    Ancestor,
    /// Another run; `live`: a process it names exists.
    Holder { holder: Holder, live: bool },
}

fn seen(locked: &File) -> Seen {
    let pids = holders(locked);
    let pid = pids.first().copied();
    if pid.is_some_and(is_ancestor) {
        return Seen::Ancestor;
    }
    // A run whose jupdate is gone lives on in its sandbox only while that
    // sandbox's pid 1 (the next line) does: name it.
    let live = pids.iter().copied().find(|&p| alive(p));
    let holder = match live.or(pid) {
        Some(p) if Some(p) != pid => Holder::Sandbox(p),
        Some(p) => Holder::Pid(p),
        None => Holder::Unknown,
    };
    Seen::Holder {
        holder,
        live: live.is_some(),
    }
}

/// The pids in the lock file: the holder's on the first line, then the pid 1 of
/// each sandbox it started (Linux), as the host sees them. Complete lines only.
fn holders(file: &File) -> Vec<u32> {
    let mut buf = [0u8; 256];
    let len = file.read_at(&mut buf, 0).unwrap_or(0);
    let text = std::str::from_utf8(&buf[..len]).unwrap_or("");
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .split('\n')
        .map_while(|line| line.trim().parse().ok().filter(|&p| p > 0))
        .collect()
}

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None),
        Err(Errno::ESRCH)
    )
}

/// Whether `pid` is this process's parent, grandparent, ...
fn is_ancestor(pid: u32) -> bool {
    let mut current = std::os::unix::process::parent_id();
    for _ in 0..64 {
        if current == pid {
            return true;
        }
        match parent_of(current) {
            Some(parent) if parent > 1 && parent != current => current = parent,
            _ => return false,
        }
    }
    false
}

#[cfg(target_os = "linux")]
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: read after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(not(target_os = "linux"))]
fn parent_of(pid: u32) -> Option<u32> {
    let out = std::process::Command::new("ps")
        .args(["-o", "ppid=", "-p", &pid.to_string()])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::code_of;

    #[test]
    fn second_lock_fails_with_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run/jlayers");
        let held = lock_jail(&dir, "web").unwrap();
        // Another open file description conflicts even within one process.
        let err = lock_jail(&dir, "web").unwrap_err();
        assert_eq!(code_of(&err), ExitCode::TempFail);
        assert!(
            format!("{err:#}").contains(&format!("pid {}", std::process::id())),
            "{err:#}"
        );
        assert!(lock_jail(&dir, "server").is_ok());
        drop(held);
        assert!(lock_jail(&dir, "web").is_ok());
    }

    /// A run whose jupdate was killed: its sandbox's pid 1 (the second line)
    /// holds the lock, and is named.
    #[test]
    fn a_killed_jupdates_sandbox_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let held = lock_jail(tmp.path(), "web").unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        let text = format!("{dead}\n{}\n", std::process::id());
        held.lock
            .as_ref()
            .unwrap()
            .write_all_at(text.as_bytes(), 0)
            .unwrap();
        let err = lock_jail(tmp.path(), "web").unwrap_err();
        assert_eq!(code_of(&err), ExitCode::TempFail);
        let want = format!(
            "pid {}, the sandbox of a jupdate that was killed",
            std::process::id()
        );
        assert!(format!("{err:#}").contains(&want), "{err:#}");
    }

    /// A lock dir or file that cannot be made: 73, told by the system call's
    /// text only.
    #[test]
    fn lock_file_or_dir_not_made() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        let dir = file.join("run");
        let err = lock_jail(&dir, "web").unwrap_err();
        assert_eq!(code_of(&err), ExitCode::CantCreate);
        assert!(matches!(
            err.downcast_ref::<Domain>()
                .and_then(Domain::get::<LockError>),
            Some(LockError::CreateFile { .. })
        ));
        assert_eq!(
            crate::exit::message(&err),
            format!("lock file {}/web.lock: Not a directory", dir.display())
        );
        // A dangling link where the dir should be: not made.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path().join("gone/run"), &link).unwrap();
        let err = lock_jail(&link, "web").unwrap_err();
        assert_eq!(code_of(&err), ExitCode::CantCreate);
        assert!(matches!(
            err.downcast_ref::<Domain>()
                .and_then(Domain::get::<LockError>),
            Some(LockError::CreateDir { .. })
        ));
        assert_eq!(
            crate::exit::message(&err),
            format!("lock dir {}: File exists", link.display())
        );
    }

    #[test]
    fn lock_error_codes_and_messages() {
        let path = PathBuf::from("/run/jlayers/web.lock");
        let busy = LockError::Busy {
            holder: Holder::Unknown,
            path: path.clone(),
        };
        assert_eq!(busy.code(), ExitCode::TempFail);
        assert_eq!(
            busy.to_string(),
            "locked by another jlayers run (pid unknown, /run/jlayers/web.lock)"
        );
        let denied = LockError::CreateFile {
            path: path.clone(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert_eq!(denied.code(), ExitCode::NoPerm);
        let lock = LockError::Lock {
            path,
            errno: Errno::ENOLCK,
        };
        assert_eq!(lock.code(), ExitCode::CantCreate);
        let line = format!("lock /run/jlayers/web.lock: {}", Errno::ENOLCK.desc());
        assert_eq!(lock.to_string(), line);
        // The line the tools print: the errno's description once.
        assert_eq!(crate::exit::text(&Domain::error(lock)), line);
    }

    #[test]
    fn ancestry() {
        assert!(is_ancestor(std::os::unix::process::parent_id()));
        assert!(!is_ancestor(std::process::id()));
    }
}
