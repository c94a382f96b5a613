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

/// Every process's pid but this one's, in order.
fn other_pids() -> Vec<u32> {
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
    pids
}

/// Every process's uses, in pid order, this process left out.
fn scan() -> Vec<Uses> {
    other_pids().into_iter().map(Uses::read).collect()
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

/// Processes using the file system with device `dev` (`major:minor`) or, for an
/// open file, the mount `mnt` of it: what keeps a union that a forced unmount
/// detached alive. It is out of every mount table, so paths cannot find it: a
/// directory of it has its device (st_dev); a file of an overlay may show the
/// device of the layer it lies in, but fdinfo names the mount it was opened in.
/// Only overlayfs counts: a device number may be reused by another file system.
/// `mnt` 0: by device only.
pub(crate) fn on_device(dev: &str, mnt: u64) -> Vec<Holder> {
    let Some((major, minor)) = dev
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
    else {
        return Vec::new();
    };
    let dev = nix::sys::stat::makedev(major, minor);
    let overlay = |p: &Path| {
        nix::sys::statfs::statfs(p)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC)
    };
    let on = |p: &Path| overlay(p) && nix::sys::stat::stat(p).is_ok_and(|s| s.st_dev == dev);
    let pids = other_pids();
    let mut found = Vec::new();
    for pid in pids {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let mut how = Vec::new();
        if on(&dir.join("cwd")) {
            how.push("cwd");
        }
        let root = std::fs::read_link(dir.join("root")).ok();
        if on(&dir.join("root")) {
            how.push("root");
        }
        let opened = std::fs::read_dir(dir.join("fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                let path = fd.path();
                overlay(&path)
                    && (on(&path) || (mnt != 0 && fd_mount(&dir, &fd.file_name()) == Some(mnt)))
            })
        });
        if opened {
            how.push("open file");
        }
        if how.is_empty() {
            continue;
        }
        let command = std::fs::read_to_string(dir.join("comm"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_else(|_| "?".into());
        found.push(Holder {
            pid,
            command,
            jail: None,
            root: root.filter(|r| r != Path::new("/")),
            how,
        });
    }
    found
}

/// The mount an open file of process `dir` lies in: fdinfo's `mnt_id`.
fn fd_mount(dir: &Path, fd: &OsStr) -> Option<u64> {
    let info = std::fs::read_to_string(dir.join("fdinfo").join(fd)).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|id| id.trim().parse().ok())
}
