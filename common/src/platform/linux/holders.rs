//! Who keeps a mount busy: every process with its working directory, root, an open
//! file or a mapping at or below the mount point, from `/proc` (as fuser(1) finds
//! them).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::platform::Holder;

/// Processes using anything at or below `target`, in pid order.
pub fn holders(target: &Path) -> Vec<Holder> {
    holders_of(&[target]).pop().unwrap_or_default()
}

/// For each of `targets`, the processes using anything at or below it, in pid
/// order: one pass over `/proc` for all of them.
pub fn holders_of(targets: &[&Path]) -> Vec<Vec<Holder>> {
    let mut out = vec![Vec::new(); targets.len()];
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    let me = std::process::id();
    let mut pids: Vec<u32> = procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&p| p != me)
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let u = Uses::read(pid);
        for (i, t) in targets.iter().enumerate() {
            if let Some(h) = u.holder(t) {
                out[i].push(h);
            }
        }
    }
    out
}

/// What one process uses, read once.
struct Uses {
    pid: u32,
    dir: PathBuf,
    cwd: Option<PathBuf>,
    root: Option<PathBuf>,
    files: Vec<PathBuf>,
    maps: Vec<u8>,
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
            maps: std::fs::read(dir.join("maps")).unwrap_or_default(),
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
        let mapped = self.maps.split(|&b| b == b'\n').any(|line| {
            // The path is the sixth field, from the first '/' on.
            line.iter()
                .position(|&b| b == b'/')
                .is_some_and(|i| below(Path::new(OsStr::from_bytes(&line[i..]))))
        });
        if mapped {
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
