//! A jupdate run's own cgroup, with its `pids`, `memory` and `cpu` limits: made
//! under jupdate's own cgroup before the run, joined by the sandbox before any
//! process of the run exists, removed after it. cgroup v2 when /sys/fs/cgroup is
//! the unified hierarchy, else the v1 `pids`, `memory` and `cpu` hierarchies at
//! /sys/fs/cgroup/NAME (the layout systemd and Docker hosts mount).

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::config::{DEFAULT_PIDS, Limits};
use crate::exit::{Coded, Domain, ExitCode, IoText};
use crate::platform::Limited;

/// Why the run's cgroups with its limits cannot be had: all 69 (the host's, not
/// the configuration's).
#[derive(Debug)]
pub(crate) enum CgroupError {
    /// jupdate's own cgroup is in no hierarchy of the controller.
    NoController {
        controller: &'static str,
        version: Version,
    },
    /// The controller's directory of jupdate's own cgroup is missing.
    NoControllerAt {
        controller: &'static str,
        parent: PathBuf,
    },
    /// cgroup v2: the controller cannot be delegated to the run's cgroup; the
    /// cause is said in the line, before the advice.
    Delegate {
        controller: &'static str,
        control: PathBuf,
        source: io::Error,
    },
    /// The run's cgroup cannot be made.
    MakeDir { dir: PathBuf, source: io::Error },
    /// A limit cannot be written.
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    /// A `cgroup.procs` cannot be opened.
    Open { path: PathBuf, source: io::Error },
}

impl fmt::Display for CgroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("limits: ")?;
        match self {
            CgroupError::NoController {
                controller,
                version,
            } => write!(
                f,
                "no cgroup {controller} controller on this host ({version:?})"
            ),
            CgroupError::NoControllerAt { controller, parent } => write!(
                f,
                "no cgroup {controller} controller at {}",
                parent.display()
            ),
            CgroupError::Delegate {
                controller,
                control,
                source,
            } => write!(
                f,
                "cannot enable the {controller} controller in {} ({}): run jupdate in a cgroup with it delegated (e.g. systemd-run -p Delegate=yes)",
                control.display(),
                IoText(source)
            ),
            CgroupError::MakeDir { dir, .. } => write!(f, "cgroup {}", dir.display()),
            CgroupError::Write { path, value, .. } => {
                write!(f, "{} = {value}", path.display())
            }
            CgroupError::Open { path, .. } => write!(f, "{}", path.display()),
        }
    }
}

impl std::error::Error for CgroupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CgroupError::MakeDir { source, .. }
            | CgroupError::Write { source, .. }
            | CgroupError::Open { source, .. } => Some(source),
            // Delegate's cause is in its line already: not told twice.
            CgroupError::NoController { .. }
            | CgroupError::NoControllerAt { .. }
            | CgroupError::Delegate { .. } => None,
        }
    }
}

impl Coded for CgroupError {
    fn code(&self) -> ExitCode {
        match self {
            CgroupError::NoController { .. }
            | CgroupError::NoControllerAt { .. }
            | CgroupError::Delegate { .. }
            | CgroupError::MakeDir { .. }
            | CgroupError::Write { .. }
            | CgroupError::Open { .. } => ExitCode::Unavailable,
        }
    }
}

/// Where the hierarchies are mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// The cfs period the cpu limit is a quota of (the kernel's default, 100 ms).
const PERIOD_US: u64 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

/// What one limit writes: the controller, the file in the run's cgroup, the value.
type Setting = (&'static str, &'static str, String);

/// The files and values `limits` comes to (the pids limit always: its default).
pub(crate) fn settings(version: Version, limits: &Limits) -> Vec<Setting> {
    let pids = limits.pids.unwrap_or(DEFAULT_PIDS);
    let mut out = vec![("pids", "pids.max", pids.to_string())];
    if let Some((bytes, _)) = &limits.memory {
        match version {
            // No swap beyond it: the limit holds, and its hit is an OOM kill.
            Version::V2 => out.extend([
                ("memory", "memory.max", bytes.to_string()),
                ("memory", "memory.swap.max", "0".to_string()),
            ]),
            // memsw (memory and swap) must not be below limit_in_bytes: set after
            // it. Without swap accounting the file is absent (skipped).
            Version::V1 => out.extend([
                ("memory", "memory.limit_in_bytes", bytes.to_string()),
                ("memory", "memory.memsw.limit_in_bytes", bytes.to_string()),
            ]),
        }
    }
    if let Some(cpu) = limits.cpu {
        let quota = ((cpu * PERIOD_US as f64).round() as u64).max(1000);
        match version {
            Version::V2 => out.push(("cpu", "cpu.max", format!("{quota} {PERIOD_US}"))),
            Version::V1 => out.extend([
                ("cpu", "cpu.cfs_period_us", PERIOD_US.to_string()),
                ("cpu", "cpu.cfs_quota_us", quota.to_string()),
            ]),
        }
    }
    out
}

/// The files that may be missing on a host (swap accounting off, no swap).
fn optional(file: &str) -> bool {
    matches!(file, "memory.memsw.limit_in_bytes" | "memory.swap.max")
}

/// The run's cgroup in each hierarchy it uses: removed when dropped.
pub(crate) struct RunCgroup {
    version: Version,
    /// The cgroup directory of each controller (v2: the same one for all).
    dirs: Vec<(&'static str, PathBuf)>,
    /// Their `cgroup.procs`, open for the sandbox to write itself into.
    procs: Vec<File>,
    fds: Vec<RawFd>,
    limits: Limits,
}

/// This host's cgroup version.
fn version() -> Version {
    match nix::sys::statfs::statfs(ROOT) {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => Version::V2,
        _ => Version::V1,
    }
}

/// jupdate's own cgroup in the hierarchy of `controller` (v1) or the unified one
/// (v2), from /proc/self/cgroup's text.
pub(crate) fn own_cgroup(text: &str, version: Version, controller: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let ours = match version {
            Version::V2 => id == "0" && controllers.is_empty(),
            Version::V1 => controllers.split(',').any(|c| c == controller),
        };
        ours.then(|| PathBuf::from(path.trim_start_matches('/')))
    })
}

/// The name of a run's cgroup: the jail's, and jupdate's pid (two jupdates of
/// one jail never run at once: its lock).
fn name(jail: &str, pid: u32) -> String {
    format!("jlayers-{jail}-{pid}")
}

/// Whether `entry` is the cgroup of a run of `jail` (any jupdate's).
fn is_run_of(entry: &str, jail: &str) -> bool {
    entry
        .strip_prefix(&format!("jlayers-{jail}-"))
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// The directories for `settings`: each controller's parent (jupdate's own cgroup
/// in it) joined with the run's name. v2: one directory for all.
pub(crate) fn plan_dirs(
    root: &Path,
    version: Version,
    own: &str,
    settings: &[Setting],
    name: &str,
) -> Result<Vec<(&'static str, PathBuf)>, &'static str> {
    let mut dirs: Vec<(&'static str, PathBuf)> = Vec::new();
    for (controller, _, _) in settings {
        if dirs.iter().any(|(c, _)| c == controller) {
            continue;
        }
        let (mount, key) = match version {
            Version::V2 => (root.to_path_buf(), ""),
            Version::V1 => (root.join(controller), *controller),
        };
        let parent = own_cgroup(own, version, key).ok_or(*controller)?;
        dirs.push((controller, mount.join(parent).join(name)));
    }
    Ok(dirs)
}

impl RunCgroup {
    /// Make the run's cgroups with `limits` in them. `None` when there is nothing
    /// to hold: only the default pids limit, and no pids controller for it.
    pub(crate) fn create(jail: &str, limits: &Limits) -> Result<Option<RunCgroup>> {
        let version = version();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Self::create_in(Path::new(ROOT), version, &own, jail, limits)
    }

    pub(crate) fn create_in(
        root: &Path,
        version: Version,
        own: &str,
        jail: &str,
        limits: &Limits,
    ) -> Result<Option<RunCgroup>> {
        let explicit = *limits != Limits::default();
        let settings = settings(version, limits);
        let unavailable = |what: CgroupError| -> Result<Option<RunCgroup>> {
            if explicit {
                Err(Domain::error(what))
            } else {
                // The default pids limit where the host gives no pids controller.
                Ok(None)
            }
        };
        let dirs = match plan_dirs(
            root,
            version,
            own,
            &settings,
            &name(jail, std::process::id()),
        ) {
            Ok(dirs) => dirs,
            Err(controller) => {
                return unavailable(CgroupError::NoController {
                    controller,
                    version,
                });
            }
        };
        let mut run = RunCgroup {
            version,
            dirs: Vec::new(),
            procs: Vec::new(),
            fds: Vec::new(),
            limits: limits.clone(),
        };
        if let Err(what) = run.make_dirs(root, jail, &dirs, &settings) {
            return unavailable(what);
        }
        run.write_settings(&settings)?;
        run.open_procs()?;
        Ok(Some(run))
    }

    /// Make each planned directory (once where controllers share one), after the
    /// stale runs' cgroups of `jail` beside it are gone and (v2) its parent
    /// delegates the controllers. `Err`: what is unavailable.
    fn make_dirs(
        &mut self,
        root: &Path,
        jail: &str,
        dirs: &[(&'static str, PathBuf)],
        settings: &[Setting],
    ) -> Result<(), CgroupError> {
        for (controller, dir) in dirs {
            if self.dirs.iter().any(|(_, made)| made == dir) {
                self.dirs.push((controller, dir.clone()));
                continue;
            }
            let parent = dir.parent().unwrap_or(root);
            if !parent.is_dir() {
                return Err(CgroupError::NoControllerAt {
                    controller,
                    parent: parent.to_path_buf(),
                });
            }
            remove_stale(parent, jail);
            if self.version == Version::V2 {
                delegate(parent, settings)?;
            }
            if let Err(source) = std::fs::create_dir(dir) {
                return Err(CgroupError::MakeDir {
                    dir: dir.clone(),
                    source,
                });
            }
            self.dirs.push((controller, dir.clone()));
        }
        Ok(())
    }

    /// Write each setting into its controller's directory (an optional file the
    /// kernel lacks is skipped).
    fn write_settings(&self, settings: &[Setting]) -> Result<()> {
        for (controller, file, value) in settings {
            let Some((_, dir)) = self.dirs.iter().find(|(c, _)| c == controller) else {
                continue;
            };
            let path = dir.join(file);
            if optional(file) && !path.exists() {
                continue;
            }
            std::fs::write(&path, value).map_err(|source| {
                Domain::error(CgroupError::Write {
                    path: path.clone(),
                    value: value.clone(),
                    source,
                })
            })?;
        }
        Ok(())
    }

    /// Open each directory's `cgroup.procs`, which the sandbox joins.
    fn open_procs(&mut self) -> Result<()> {
        for dir in self.unique() {
            let path = dir.join("cgroup.procs");
            let file = File::options()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|source| {
                    Domain::error(CgroupError::Open {
                        path: path.clone(),
                        source,
                    })
                })?;
            self.fds.push(file.as_raw_fd());
            self.procs.push(file);
        }
        Ok(())
    }

    /// Each directory once.
    fn unique(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (_, dir) in &self.dirs {
            if !dirs.contains(dir) {
                dirs.push(dir.clone());
            }
        }
        dirs
    }

    /// The cgroup of `controller`.
    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }

    /// How many processes the kernel killed for want of memory in the run.
    fn oom_kills(&self) -> u64 {
        let Some(dir) = self.dir("memory") else {
            return 0;
        };
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        counter(&dir.join(file), "oom_kill")
    }

    /// How many forks the pids limit refused.
    fn pids_refused(&self) -> u64 {
        self.dir("pids")
            .map_or(0, |dir| counter(&dir.join("pids.events"), "max"))
    }
}

/// The value of `key` in a flat-keyed cgroup file (`key N` lines).
fn counter(path: &Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

/// Remove what a killed jupdate left of an earlier run of `jail` (empty by now:
/// the run died with it; a cgroup still busy is left). Only a dead jupdate's: the
/// jail's lock is per configuration, and another jupdate (another config, a
/// jail of the same name) may have just made its own, still empty.
fn remove_stale(parent: &Path, jail: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| is_run_of(n, jail) && !alive(n))
        {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Whether the jupdate named at the end of a run's cgroup name still runs.
fn alive(entry: &str) -> bool {
    let pid = entry.rsplit('-').next().and_then(|p| p.parse::<i32>().ok());
    pid.is_some_and(|pid| {
        !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
    })
}

/// v2: the controllers `settings` needs, enabled for the children of `parent`
/// (a cgroup with processes of its own cannot: the message says so).
fn delegate(parent: &Path, settings: &[Setting]) -> Result<(), CgroupError> {
    let control = parent.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control).unwrap_or_default();
    let mut wanted: Vec<&str> = settings.iter().map(|(c, _, _)| *c).collect();
    wanted.dedup();
    for controller in wanted {
        if enabled.split_whitespace().any(|c| c == controller) {
            continue;
        }
        std::fs::write(&control, format!("+{controller}")).map_err(|source| {
            CgroupError::Delegate {
                controller,
                control: control.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

impl Limited for RunCgroup {
    fn cgroups(&self) -> &[RawFd] {
        &self.fds
    }

    fn hit(&self) -> (Vec<String>, bool) {
        let mut lines = Vec::new();
        let refused = self.pids_refused();
        if refused > 0 {
            let pids = self.limits.pids.unwrap_or(DEFAULT_PIDS);
            lines.push(format!("the pids limit ({pids}) refused {refused} fork(s)"));
        }
        let kills = self.oom_kills();
        if kills > 0 {
            let memory = self.limits.memory.as_ref().map_or("", |(_, t)| t.as_str());
            lines.push(format!(
                "the memory limit ({memory}) was hit: {kills} process(es) killed out of memory"
            ));
        }
        (lines, kills > 0)
    }
}

impl Drop for RunCgroup {
    /// Removed once empty: the run's last process may still be on its way out
    /// (a killed run's pid 1); a few seconds at most.
    fn drop(&mut self) {
        self.procs.clear();
        let deadline = Instant::now() + Duration::from_secs(5);
        let dirs = self.unique();
        self.dirs.clear();
        for dir in dirs.into_iter().rev() {
            while std::fs::remove_dir(&dir).is_err_and(|e| e.raw_os_error() == Some(libc::EBUSY))
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// What `-n` prints of the limits: a sh comment (the run's cgroup is made by
/// jupdate itself, named after its own pid).
pub(crate) fn describe(jail: &str, limits: &Limits) -> String {
    let version = version();
    let files: Vec<String> = settings(version, limits)
        .into_iter()
        .map(|(_, file, value)| format!("{file}={value}"))
        .collect();
    format!(
        "# limits: cgroup {} under jupdate's own: {}",
        name(jail, std::process::id()),
        files.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            pids: Some(50),
            memory: Some((32 << 20, "32m".into())),
            cpu: Some(1.5),
        }
    }

    #[test]
    fn v2_files_and_values() {
        let got = settings(Version::V2, &limits());
        assert_eq!(
            got,
            vec![
                ("pids", "pids.max", "50".to_string()),
                ("memory", "memory.max", "33554432".to_string()),
                ("memory", "memory.swap.max", "0".to_string()),
                ("cpu", "cpu.max", "150000 100000".to_string()),
            ]
        );
        // No key: podman's default pids limit alone.
        assert_eq!(
            settings(Version::V2, &Limits::default()),
            vec![("pids", "pids.max", "2048".to_string())]
        );
    }

    #[test]
    fn v1_files_and_values() {
        let got = settings(Version::V1, &limits());
        assert_eq!(
            got,
            vec![
                ("pids", "pids.max", "50".to_string()),
                ("memory", "memory.limit_in_bytes", "33554432".to_string()),
                (
                    "memory",
                    "memory.memsw.limit_in_bytes",
                    "33554432".to_string()
                ),
                ("cpu", "cpu.cfs_period_us", "100000".to_string()),
                ("cpu", "cpu.cfs_quota_us", "150000".to_string()),
            ]
        );
    }

    #[test]
    fn own_cgroups_read() {
        let text = "4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/user.slice/cron\n";
        assert_eq!(
            own_cgroup(text, Version::V1, "memory"),
            Some(PathBuf::from("process_api/abc"))
        );
        assert_eq!(own_cgroup(text, Version::V1, "cpu"), Some(PathBuf::new()));
        assert_eq!(own_cgroup(text, Version::V1, "pids"), None);
        assert_eq!(
            own_cgroup(text, Version::V2, ""),
            Some(PathBuf::from("user.slice/cron"))
        );
    }

    #[test]
    fn stale_runs_are_only_the_jails() {
        assert!(is_run_of("jlayers-web-123", "web"));
        assert!(!is_run_of("jlayers-web-1-123", "web"));
        assert!(!is_run_of("jlayers-web-", "web"));
        assert!(!is_run_of("jlayers-webx-1", "web"));
    }

    /// A fake v2 hierarchy in a temp dir: one cgroup under jupdate's own, the
    /// values written, the controllers delegated; gone when dropped.
    #[test]
    fn v2_writes_a_fake_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("cron");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("cgroup.subtree_control"), "").unwrap();
        // A killed run's cgroup, and another jail's.
        std::fs::create_dir(own.join("jlayers-web-999999999")).unwrap();
        std::fs::create_dir(own.join("jlayers-db-1")).unwrap();
        let run = RunCgroup::create_in(tmp.path(), Version::V2, "0::/cron\n", "web", &limits())
            .unwrap()
            .unwrap();
        let dir = own.join(name("web", std::process::id()));
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("pids.max"), "50");
        assert_eq!(read("memory.max"), "33554432");
        assert_eq!(read("cpu.max"), "150000 100000");
        assert!(!own.join("jlayers-web-999999999").exists());
        assert!(own.join("jlayers-db-1").exists());
        assert_eq!(run.cgroups().len(), 1);
        // A plain directory: the files written are what a removal would meet.
        for f in [
            "pids.max",
            "memory.max",
            "memory.swap.max",
            "cpu.max",
            "cgroup.procs",
        ] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        drop(run);
        assert!(!dir.exists());
    }

    #[test]
    fn missing_controller_refuses_a_set_limit_only() {
        let tmp = tempfile::tempdir().unwrap();
        let got = RunCgroup::create_in(
            tmp.path(),
            Version::V1,
            "4:memory:/\n",
            "web",
            &Limits::default(),
        );
        assert!(got.unwrap().is_none());
        let err = RunCgroup::create_in(tmp.path(), Version::V1, "4:memory:/\n", "web", &limits())
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("pids"), "{err:#}");
    }

    #[test]
    fn cgroup_error_codes_and_lines() {
        use crate::exit::check_domain as check;
        let os = io::Error::from_raw_os_error;
        let own = "/sys/fs/cgroup/cron";
        check(
            CgroupError::NoController {
                controller: "pids",
                version: Version::V1,
            },
            ExitCode::Unavailable,
            "limits: no cgroup pids controller on this host (V1)",
        );
        check(
            CgroupError::NoControllerAt {
                controller: "memory",
                parent: "/sys/fs/cgroup/memory/cron".into(),
            },
            ExitCode::Unavailable,
            "limits: no cgroup memory controller at /sys/fs/cgroup/memory/cron",
        );
        check(
            CgroupError::Delegate {
                controller: "cpu",
                control: format!("{own}/cgroup.subtree_control").into(),
                source: os(libc::EBUSY),
            },
            ExitCode::Unavailable,
            &format!(
                "limits: cannot enable the cpu controller in {own}/cgroup.subtree_control (Device or resource busy): run jupdate in a cgroup with it delegated (e.g. systemd-run -p Delegate=yes)"
            ),
        );
        check(
            CgroupError::MakeDir {
                dir: format!("{own}/jlayers-web-7").into(),
                source: os(libc::EACCES),
            },
            ExitCode::Unavailable,
            &format!("limits: cgroup {own}/jlayers-web-7: Permission denied"),
        );
        check(
            CgroupError::Write {
                path: format!("{own}/jlayers-web-7/pids.max").into(),
                value: "50".into(),
                source: os(libc::EINVAL),
            },
            ExitCode::Unavailable,
            &format!("limits: {own}/jlayers-web-7/pids.max = 50: Invalid argument"),
        );
        check(
            CgroupError::Open {
                path: format!("{own}/jlayers-web-7/cgroup.procs").into(),
                source: os(libc::ENOENT),
            },
            ExitCode::Unavailable,
            &format!("limits: {own}/jlayers-web-7/cgroup.procs: No such file or directory"),
        );
    }
}
