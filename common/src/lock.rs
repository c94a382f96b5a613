//! One `flock(2)` lock file per jail, so that runs from cron never race each other.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Result;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::exit::{ExitCode, OrFail, fail};

/// Held for as long as it lives; the kernel drops it if the process dies.
#[derive(Debug)]
pub struct JailLock {
    _lock: Option<Flock<File>>,
}

/// Take `<dir>/<jail>.lock`, or fail at once (75) naming the holder's pid.
///
/// A run started by the holder itself (jupdate starting a jail whose jail.conf hook
/// runs `jmount NAME`) would deadlock on its parent: when the holder is an ancestor
/// of this process the lock is taken as already ours.
pub fn lock_jail(dir: &Path, jail: &str) -> Result<JailLock> {
    std::fs::create_dir_all(dir).or_fail(ExitCode::CantCreate, || {
        format!("lock dir {}", dir.display())
    })?;
    let path = dir.join(format!("{jail}.lock"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .or_fail(ExitCode::CantCreate, || {
            format!("lock file {}", path.display())
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            // The pid is for the message of whoever comes second.
            let _ = lock.set_len(0);
            let _ = lock.rewind();
            let _ = writeln!(lock, "{}", std::process::id());
            Ok(JailLock { _lock: Some(lock) })
        }
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut s = String::new();
            let _ = file.read_to_string(&mut s);
            let pid: Option<u32> = s.trim().parse().ok();
            if pid.is_some_and(is_ancestor) {
                return Ok(JailLock { _lock: None });
            }
            let holder = pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"));
            Err(fail(
                ExitCode::TempFail,
                format!(
                    "locked by another jlayers run ({holder}, {})",
                    path.display()
                ),
            ))
        }
        Err((_, e)) => Err(fail(
            ExitCode::CantCreate,
            format!("lock {}: {}", path.display(), e.desc()),
        )),
    }
}

/// Whether `pid` is this process's parent, grandparent, ...
fn is_ancestor(pid: u32) -> bool {
    let mut p = std::os::unix::process::parent_id();
    for _ in 0..64 {
        if p == pid {
            return true;
        }
        match parent_of(p) {
            Some(pp) if pp > 1 && pp != p => p = pp,
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
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("run/jlayers");
        let held = lock_jail(&dir, "web").unwrap();
        // Another open file description conflicts even within one process.
        let e = lock_jail(&dir, "web").unwrap_err();
        assert_eq!(code_of(&e), ExitCode::TempFail);
        assert!(
            format!("{e:#}").contains(&format!("pid {}", std::process::id())),
            "{e:#}"
        );
        assert!(lock_jail(&dir, "server").is_ok());
        drop(held);
        assert!(lock_jail(&dir, "web").is_ok());
    }

    #[test]
    fn ancestry() {
        assert!(is_ancestor(std::os::unix::process::parent_id()));
        assert!(!is_ancestor(std::process::id()));
    }
}
