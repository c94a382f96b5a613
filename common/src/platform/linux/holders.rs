//! Who keeps a mount busy: every process with its working directory, root, an open
//! file or a mapping at or below the mount point, from `/proc` (as fuser(1) finds
//! them).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::platform::Holder;

/// Processes using anything at or below `target`, in pid order, as `/proc`
/// shows them now.
pub(crate) fn holders(target: &Path) -> Vec<Holder> {
    scan().iter().filter_map(|u| u.holder(target)).collect()
}

/// Every process's uses, in pid order, this process left out.
fn scan() -> Vec<Uses> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut pids: Vec<u32> = procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&p| p != me)
        .collect();
    pids.sort_unstable();
    pids.into_iter().map(Uses::read).collect()
}

/// For each of `targets`, the processes using anything at or below it, in pid
/// order. `/proc` is read whole once per run (a run of many jails would
/// otherwise read it once per jail: seconds for 200 jails); each process found
/// there is read again now, so that one that has let go is not named. One that
/// came since is not seen: its unmount then fails busy, and junmount puts back
/// what it took down.
pub(crate) fn holders_of(targets: &[&Path]) -> Vec<Vec<Holder>> {
    static SNAPSHOT: std::sync::OnceLock<Vec<Uses>> = std::sync::OnceLock::new();
    let snap = SNAPSHOT.get_or_init(scan);
    targets
        .iter()
        .map(|t| {
            snap.iter()
                .filter(|u| u.holder(t).is_some())
                .filter_map(|u| Uses::read(u.pid).holder(t))
                .collect()
        })
        .collect()
}

/// What one process uses, read once.
struct Uses {
    pid: u32,
    dir: PathBuf,
    cwd: Option<PathBuf>,
    root: Option<PathBuf>,
    files: Vec<PathBuf>,
    /// The files it maps, each once.
    maps: Vec<PathBuf>,
}

impl Uses {
    fn read(pid: u32) -> Uses {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let link = |name: &str| std::fs::read_link(dir.join(name)).ok();
        let files = std::fs::read_dir(dir.join("fd")).map_or_else(
            |_| Vec::new(),
            |fds| {
                fds.flatten()
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .collect()
            },
        );
        Uses {
            pid,
            cwd: link("cwd"),
            root: link("root"),
            files,
            maps: mapped(&dir),
            dir,
        }
    }

    fn holder(&self, target: &Path) -> Option<Holder> {
        let below = |p: &Path| p.starts_with(target);
        let mut how = Vec::new();
        if self.cwd.as_deref().is_some_and(below) {
            how.push("cwd");
        }
        if self.root.as_deref().is_some_and(below) {
            how.push("root");
        }
        if self.files.iter().any(|p| below(p)) {
            how.push("open file");
        }
        if self.maps.iter().any(|p| below(p)) {
            how.push("mapping");
        }
        if how.is_empty() {
            return None;
        }
        let command = std::fs::read_to_string(self.dir.join("comm"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_else(|_| "?".into());
        Some(Holder {
            pid: self.pid,
            command,
            jail: None,
            root: self.root.clone().filter(|r| r != Path::new("/")),
            how,
        })
    }
}

/// The files a process maps, each once, from `/proc/PID/maps`.
fn mapped(dir: &Path) -> Vec<PathBuf> {
    let maps = std::fs::read(dir.join("maps")).unwrap_or_default();
    let mut out: Vec<PathBuf> = maps
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            // The path is the sixth field, from the first '/' on.
            let start = line.iter().position(|&b| b == b'/')?;
            Some(PathBuf::from(OsStr::from_bytes(&line[start..])))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}
