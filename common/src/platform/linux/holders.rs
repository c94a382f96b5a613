//! Who keeps a mount busy: every process with its working directory, root, an open
//! file or a mapping at or below the mount point, from `/proc` (as fuser(1) finds
//! them).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::platform::Holder;

/// Processes using anything at or below `target`, in pid order.
pub fn holders(target: &Path) -> Vec<Holder> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut out: Vec<Holder> = procs
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            (pid != me).then(|| holder(pid, &e.path(), target))?
        })
        .collect();
    out.sort_by_key(|h| h.pid);
    out
}

fn holder(pid: u32, dir: &Path, target: &Path) -> Option<Holder> {
    let below = |p: &Path| p.starts_with(target);
    let link = |name: &str| std::fs::read_link(dir.join(name)).ok();
    let mut how = Vec::new();
    if link("cwd").is_some_and(|p| below(&p)) {
        how.push("cwd");
    }
    let root = link("root");
    if root.as_deref().is_some_and(below) {
        how.push("root");
    }
    let open = std::fs::read_dir(dir.join("fd")).ok().is_some_and(|fds| {
        fds.flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|p| below(&p))
    });
    if open {
        how.push("open file");
    }
    let mapped = std::fs::read(dir.join("maps")).ok().is_some_and(|maps| {
        maps.split(|&b| b == b'\n').any(|line| {
            // The path is the sixth field, from the first '/' on.
            line.iter()
                .position(|&b| b == b'/')
                .is_some_and(|i| below(Path::new(OsStr::from_bytes(&line[i..]))))
        })
    });
    if mapped {
        how.push("mapping");
    }
    if how.is_empty() {
        return None;
    }
    let command = std::fs::read_to_string(dir.join("comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_else(|_| "?".into());
    Some(Holder {
        pid,
        command,
        jail: None,
        root: root.filter(|r| r != Path::new("/")),
        how,
    })
}
