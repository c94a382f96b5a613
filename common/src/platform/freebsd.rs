//! FreeBSD: the base system's own tools, found on PATH — `mount_nullfs`,
//! `mount_unionfs`, `mount -t tmpfs`, `jls`, `jexec`, `service`, `fstat`, `ps` —
//! and two system calls for what the tools do less exactly: the mount table from
//! getfsstat(2) with `MNT_NOWAIT` (`mount -p` waits on every file system: a hung
//! NFS mount would hang jlayers) and unmount(2) with `MNT_BYFSID` (umount(8)
//! retries by path when the file system ID is gone). Built on every OS; on Linux
//! tested against the simulated userland under `tests/freebsd-sim/`, where the
//! [`kernel`] seam reads `mount -p` and runs `umount FSID` of the simulation
//! instead of the two system calls (which the simulation cannot intercept).

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::Result;

use super::{MountId, Mounted, Platform, changed, run_tool, run_tool_output};
use crate::exit::{ExitCode, fail};
use crate::mounts::Mount;
use crate::plan::{Null, Step, Union};
use crate::platform::Busy;
use crate::target::Place;

pub(crate) struct FreeBsd;

impl Platform for FreeBsd {
    fn mounts(&self, _scope: &Path) -> Result<Arc<Vec<Mount>>> {
        kernel::table().map(Arc::new)
    }

    fn matches(&self, step: Step, mount: &Mount) -> bool {
        match step {
            // nullfs ORs its lower file system's flags into its own
            // (nullfs_statfs()): a read-write null mount of a read-only file system
            // shows "ro". Only a read-only step requires "ro".
            Step::Null(Null { source, read_only }) => {
                mount.fstype == "nullfs"
                    && mount.source == source.as_os_str()
                    && (!*read_only || mount.read_only())
            }
            Step::Union(Union { upper, .. }) => {
                mount.fstype == "unionfs" && mount.source == upper.path.as_os_str()
            }
            // tmpfs(5) names every mount of it "tmpfs".
            Step::Tmpfs(_) => mount.fstype == "tmpfs",
        }
    }

    fn planned(&self, step: Step, target: &Path) -> Mount {
        super::planned_line(step, target, "nullfs", "unionfs")
    }

    fn pin(&self, target: &Place, top: &Mount) -> Result<MountId> {
        let fs = fs_at(target)?;
        if fs.on != top.target || fs.fstype != top.fstype {
            return Err(changed(
                target,
                "the top mount is not the one in the mount table",
            ));
        }
        Ok(fs.id)
    }

    /// mount_nullfs and mount_unionfs take paths and realpath(3) them: a jail that
    /// swaps a component in the instant between the check and nmount(2) can move
    /// the mount. There is no descriptor-based mount call to close that window; the
    /// new mount is checked afterwards instead, through a descriptor opened beneath
    /// the root, and a mount that landed anywhere else is unmounted again.
    fn mount(&self, step: Step, target: &Place, below: Option<&MountId>) -> Result<Mounted> {
        if let Some(expected) = below {
            if fs_at(target)?.id != *expected {
                return Err(changed(target, "the mount below is not the one checked"));
            }
        }
        // By file system ID: a table row can repeat (the same source mounted
        // twice on one path), an ID cannot.
        let before: Vec<MountId> = kernel::table_ids()?.into_iter().map(|(id, _)| id).collect();
        run_tool(
            &self.mount_command(step, &target.path),
            ExitCode::Unavailable,
        )?;
        let want = self.planned(step, &target.path);
        let (want, from) = (want.fstype.as_str(), want.source.as_os_str());
        match fs_at(target) {
            Ok(fs)
                if fs.on == target.path
                    && fs.fstype == want
                    && fs.from == from
                    && Some(&fs.id) != below =>
            {
                return Ok(Mounted {
                    id: fs.id,
                    fd: None,
                });
            }
            Ok(fs) if fs.on == target.path && fs.fstype == want && Some(&fs.id) != below => {
                // On the target, but of something else (a link swapped into the
                // source or upper path): take it off again.
                let _ = self.discard(Mounted {
                    id: fs.id,
                    fd: None,
                });
            }
            _ => {}
        }
        self.undo_strays(step, target, &before)?;
        Err(changed(
            target,
            "the new mount was not at the planned path; undone",
        ))
    }

    fn discard(&self, made: Mounted) -> Result<()> {
        kernel::unmount(&made.id, false)
    }

    /// unmount(2) with `MNT_BYFSID` unmounts exactly that file system, wherever
    /// its mount point is by now, and fails when it is gone.
    fn unmount(&self, target: &Place, id: &MountId, busy: Busy) -> Result<()> {
        kernel::unmount(id, busy == Busy::Force).map_err(|err| {
            if crate::exit::code_of(&err) == ExitCode::TempFail {
                fail(
                    ExitCode::TempFail,
                    format!("unmount {}: busy", target.path.display()),
                )
            } else {
                err
            }
        })
    }

    fn mount_command(&self, step: Step, target: &Path) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        match step {
            Step::Null(Null { source, read_only }) => {
                argv.push("mount_nullfs".into());
                if *read_only {
                    argv.extend(["-o".into(), "ro".into()]);
                }
                argv.push(source.into());
            }
            // One -o per option: mount_unionfs passes each -o argument to nmount(2)
            // whole (it does not split on commas), and unionfs ignores names it does
            // not know, so "-o noatime,below" would be one unknown option.
            Step::Union(Union { upper, options, .. }) => {
                argv.push("mount_unionfs".into());
                for option in options {
                    argv.extend(["-o".into(), option.into()]);
                }
                argv.push(upper.path.clone().into());
            }
            Step::Tmpfs(tmpfs) => {
                argv.extend(["mount".into(), "-t".into(), "tmpfs".into(), "-o".into()]);
                argv.push(super::tmpfs_options(tmpfs).into());
                argv.push("tmpfs".into());
            }
        }
        argv.push(target.into());
        argv
    }

    fn force_flag(&self) -> &'static str {
        "-f"
    }

    /// unionfs on ZFS cannot whiteout: say what breaks.
    fn upper_warning(&self, upper: &Path, target: &Path, table: &[Mount]) -> Option<String> {
        let fs = table
            .iter()
            .filter(|m| upper.starts_with(&m.target))
            .max_by_key(|m| m.target.as_os_str().len())?;
        (fs.fstype == "zfs").then(|| {
            format!(
                "upper dir {} is on ZFS, which has no whiteouts: deleting or renaming a file of {} inside the jail will fail (EOPNOTSUPP); put the upper dir on UFS, or set upper_fs = \"tmpfs\" for it (jlayers.conf(5))",
                upper.display(),
                target.display()
            )
        })
    }

    /// fstat(1) -m -f lists what is open on the file system mounted there (working
    /// and root directories, text, descriptors, and with -m mappings); ps(1) and
    /// jls(8) name each holder's jail.
    fn holders(&self, target: &Path) -> Vec<super::Holder> {
        let out = |argv: &[&OsStr]| -> Option<String> {
            let output = Command::new(argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()?;
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
        };
        let listing = out(&[
            "fstat".as_ref(),
            "-m".as_ref(),
            "-f".as_ref(),
            target.as_os_str(),
        ])
        .unwrap_or_default();
        let mut holders = parse_fstat(&listing);
        for holder in &mut holders {
            let pid = holder.pid.to_string();
            let jid = out(&[
                "ps".as_ref(),
                "-o".as_ref(),
                "jid=".as_ref(),
                "-p".as_ref(),
                pid.as_ref(),
            ]);
            if let Some(jid) = jid.filter(|j| !j.is_empty() && j != "0") {
                holder.jail = out(&["jls".as_ref(), "-j".as_ref(), jid.as_ref(), "name".as_ref()])
                    .filter(|n| !n.is_empty())
                    .or(Some(jid));
            }
        }
        holders
    }

    /// dounmount() (sys/kern/vfs_mount.c) refuses a mount that another one
    /// stands on (`mnt_uppers`: a union whose layer lies in it) or that has a
    /// mount inside it, with no process involved: those are named first.
    fn busy_hint(&self, target: &Path) -> String {
        let above = kernel::table()
            .map(|table| mounts_on(&table, target))
            .unwrap_or_default();
        if !above.is_empty() {
            return format!("{}; unmount that first", above.join(", "));
        }
        format!(
            "a process still uses it, most likely inside a running jail (see: fstat -f {}; jls)",
            target.display()
        )
    }

    fn jail_running(&self, jail: &str) -> Result<bool> {
        let st = Command::new("jls")
            .args(["-j", jail])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| fail(ExitCode::Unavailable, format!("jls: {e}")))?;
        Ok(st.success())
    }

    /// `jail -r` sends SIGTERM, waits at most stop.timeout, and jail_remove()
    /// kills what is left without waiting for it to exit (usr.sbin/jail/
    /// command.c, term_procs): the jail is dying (`jls -d` lists it, `jls`
    /// does not) while its processes exit, and `ps -J JID` still shows them.
    fn jail_exiting(&self, jail: &str) -> Option<bool> {
        let out = |argv: &[&str]| -> Option<String> {
            let output = Command::new(argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()?;
            Some(String::from_utf8_lossy(&output.stdout).trim().to_string())
        };
        // A running jail's processes are not exiting: no wait for them.
        if self.jail_running(jail).unwrap_or(true) {
            return Some(false);
        }
        let Some(jid) = out(&["jls", "-d", "-j", jail, "jid"]).filter(|j| !j.is_empty()) else {
            return Some(false);
        };
        Some(out(&["ps", "-a", "-J", &jid, "-o", "pid="]).is_some_and(|pids| !pids.is_empty()))
    }

    fn service_command(&self, jail: &str, to: super::Service) -> Option<Vec<OsString>> {
        let verb = match to {
            super::Service::Start => "onestart",
            super::Service::Stop => "onestop",
        };
        Some(["service", "jail", verb, jail].map(OsString::from).to_vec())
    }

    /// `service jail onestart` exits 0 when the jail did not start (rc.d/jail
    /// prints "cannot start jail" and goes on), `onestop` never fails: the jail's
    /// state after the command (jls -j) says whether it worked.
    fn service(&self, argv: &[OsString], jail: &str, to: super::Service) -> Result<()> {
        let output = run_tool_output(argv, ExitCode::Unavailable)?;
        let want = to == super::Service::Start;
        if self.jail_running(jail)? == want {
            return Ok(());
        }
        let said = output.split_whitespace().collect::<Vec<_>>().join(" ");
        let state = if want { "not running" } else { "still running" };
        Err(fail(
            ExitCode::Unavailable,
            format!(
                "{}: the jail is {state} after it (jls -j {jail}){}",
                argv[0].to_string_lossy(),
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            ),
        ))
    }

    fn exec_command(&self, exec: &super::Exec) -> Command {
        let (jail, env, cmd) = (exec.jail, exec.env, exec.cmd);
        // jexec -l keeps only HOME, SHELL, TERM, USER and the login class: set the
        // rest inside the jail with env(1).
        let mut command = Command::new("jexec");
        command.args(["-l", jail, "env"]);
        command.args(env.iter().map(|(k, v)| format!("{k}={v}")));
        command.args(cmd);
        super::own_session(&mut command);
        die_with_parent(&mut command);
        // jexec passes on what it is given: only 0, 1 and 2 into the jail.
        // SAFETY: the closure makes async-signal-safe calls only.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, super::cloexec_above_stderr);
        }
        command
    }

    /// `jexec -l` takes the host's passwd entry of the caller, attaches to the
    /// jail and then changes to its home directory there, `err(1, "chdir: %s",
    /// pw_dir)` when it fails (usr.sbin/jexec/jexec.c): a jail without /root.
    fn exec_failed(&self, exec: &super::Exec, output: &str) -> Option<anyhow::Error> {
        let line = output.lines().find(|l| !l.trim().is_empty())?;
        let rest = line.strip_prefix("jexec: chdir: ")?;
        let (dir, why) = rest.rsplit_once(": ").unwrap_or((rest, "failed"));
        let inside = Path::new(dir).strip_prefix("/").unwrap_or(Path::new(dir));
        Some(fail(
            ExitCode::Unavailable,
            format!(
                "jexec -l: the home directory {dir} of the user it runs as is missing in jail {jail} (chdir: {why}); create it (mkdir -m 700 {}), or give that user a home directory the jail has",
                exec.root.join(inside).display(),
                jail = exec.jail,
            ),
        ))
    }

    fn limit(
        &self,
        jail: &str,
        limits: &crate::config::Limits,
    ) -> Result<Option<Box<dyn super::Limited>>> {
        let rules = rctl_rules(jail, limits);
        if rules.is_empty() {
            return Ok(None);
        }
        let enabled = super::run_tool_output(
            &["sysctl", "-n", "kern.racct.enable"].map(OsString::from),
            ExitCode::Unavailable,
        )
        .unwrap_or_default();
        if enabled.trim() != "1" {
            return Err(fail(
                ExitCode::Config,
                "pids, memory and cpu need resource accounting (kern.racct.enable is not 1): add kern.racct.enable=1 to /boot/loader.conf and reboot",
            ));
        }
        // Each rule added is removed again when `added` is dropped, a failed add
        // too.
        let mut added = Rctl(Vec::new());
        for rule in rules {
            super::run_tool(&rctl("-a", &rule), ExitCode::Unavailable)?;
            added.0.push(rule);
        }
        Ok(Some(Box::new(added)))
    }

    fn limit_sh(&self, jail: &str, limits: &crate::config::Limits) -> (Vec<String>, Vec<String>) {
        let rules = rctl_rules(jail, limits);
        // Jail names and the rules' words need no quoting.
        let line = |op: &str, rule: &String| format!("rctl {op} {rule}");
        (
            rules.iter().map(|r| line("-a", r)).collect(),
            rules.iter().map(|r| line("-r", r)).collect(),
        )
    }
}

/// The mounts that keep the file system at `target` busy in the kernel's eyes,
/// said as the busy hint says them: a union whose upper dir lies in it (unionfs
/// registers itself on its upper layer's mount), and a mount inside it.
fn mounts_on(table: &[Mount], target: &Path) -> Vec<String> {
    table
        .iter()
        .filter(|m| m.target != target)
        .filter_map(|m| {
            let upper = Path::new(&m.source);
            if m.fstype == "unionfs" && upper.starts_with(target) {
                Some(format!(
                    "the union mount on {} has its upper dir {} in it",
                    m.target.display(),
                    upper.display()
                ))
            } else if m.target.starts_with(target) {
                Some(format!(
                    "{} is mounted inside it on {}",
                    m.fstype,
                    m.target.display()
                ))
            } else {
                None
            }
        })
        .collect()
}

/// The process jupdate starts through jexec (jexec execs env, env the updater:
/// one process) gets SIGKILL when jupdate dies (procctl PROC_PDEATHSIG_CTL,
/// FreeBSD 11.2+). What the updater forks in the jail is the jail's: the jail's
/// stop ends it when jupdate started the jail.
#[cfg(target_os = "freebsd")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid before the fork; in the child only procctl, getppid and
    // _exit, async-signal-safe, on a live local.
    unsafe {
        let parent = libc::getpid();
        command.pre_exec(move || {
            let mut signal: libc::c_int = libc::SIGKILL;
            if libc::procctl(
                libc::P_PID,
                0,
                libc::PROC_PDEATHSIG_CTL,
                (&mut signal as *mut libc::c_int).cast(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // jupdate died before the signal was set: it will never come.
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
}

/// The rctl(8) rules of a run's limits on jail `jail`: maxproc, memoryuse (bytes)
/// and pcpu (percent of one CPU). No pids limit unless set.
fn rctl_rules(jail: &str, limits: &crate::config::Limits) -> Vec<String> {
    let mut rules = Vec::new();
    if let Some(pids) = limits.pids {
        rules.push(format!("jail:{jail}:maxproc:deny={pids}"));
    }
    if let Some((bytes, _)) = &limits.memory {
        rules.push(format!("jail:{jail}:memoryuse:deny={bytes}"));
    }
    if let Some(cpu) = limits.cpu {
        rules.push(format!(
            "jail:{jail}:pcpu:deny={}",
            (cpu * 100.0).round() as u64
        ));
    }
    rules
}

fn rctl(op: &str, rule: &str) -> Vec<OsString> {
    ["rctl", op, rule].map(OsString::from).to_vec()
}

/// The rctl rules added for a run: removed when dropped.
struct Rctl(Vec<String>);

impl super::Limited for Rctl {}

impl Drop for Rctl {
    fn drop(&mut self) {
        for rule in self.0.drain(..) {
            let _ = super::run_tool(&rctl("-r", &rule), ExitCode::Unavailable);
        }
    }
}

/// Elsewhere the FreeBSD backend runs only against the simulated userland.
#[cfg(not(target_os = "freebsd"))]
fn die_with_parent(_command: &mut Command) {}

impl FreeBsd {
    /// After a mount that did not land on its target: unmount what this run
    /// made instead. mount_nullfs and mount_unionfs realpath(3) the target, so a
    /// swapped component took the mount to where the path leads now, on the
    /// host or in the jail: only a mount new since `before` (by file system
    /// ID), of this step, at that place or inside the jail root is taken back,
    /// never another tool's mount elsewhere that happens to be new and alike (a
    /// builder's tmpfs, another jail's null mount of the same source).
    fn undo_strays(&self, step: Step, target: &Place, before: &[MountId]) -> Result<()> {
        let resolved = std::fs::canonicalize(&target.path).ok();
        for (id, mount) in kernel::table_ids()? {
            let ours_place = resolved.as_deref() == Some(mount.target.as_path())
                || target
                    .root
                    .as_ref()
                    .is_some_and(|root| mount.target.starts_with(root));
            if !before.contains(&id) && ours_place && self.matches(step, &mount) {
                let _ = kernel::unmount(&id, false);
            }
        }
        Ok(())
    }
}

/// The seam between the backend and the kernel for the mount table and unmounts
/// by file system ID. On FreeBSD the system calls themselves; elsewhere (the
/// tests on Linux, which cannot intercept system calls) the simulated userland's
/// `mount -p` and `umount FSID`, the tools an administrator would use: those are
/// what the simulation exercises, the system calls only a FreeBSD host does.
mod kernel {
    #[cfg(target_os = "freebsd")]
    pub(crate) use self::syscalls::{table_ids, unmount};
    #[cfg(not(target_os = "freebsd"))]
    pub(crate) use self::tools::{table_ids, unmount};

    use super::MountId;
    use crate::mounts::Mount;

    /// The mount table, in mount order.
    pub(crate) fn table() -> anyhow::Result<Vec<Mount>> {
        Ok(table_ids()?.into_iter().map(|(_, mount)| mount).collect())
    }

    /// Each mount with its file system ID.
    pub(crate) type Ids = Vec<(MountId, Mount)>;

    /// The libc crate (0.2.191) declares all this needs for FreeBSD: getfsstat,
    /// unmount, fstatfs, `MNT_NOWAIT`, `MNT_BYFSID`, `MNT_FORCE` and the flag bits,
    /// with the FreeBSD 12+ `struct statfs` that getfsstat's default symbol fills;
    /// no extern block of our own.
    #[cfg(target_os = "freebsd")]
    mod syscalls {
        use std::ffi::{CStr, OsStr};
        use std::os::unix::ffi::OsStrExt;
        use std::path::PathBuf;

        use anyhow::Result;
        use nix::errno::Errno;

        use super::super::{MountId, fsid_path, strip_union_prefix};
        use crate::exit::{ExitCode, fail, of_errno};
        use crate::mounts::Mount;

        /// getfsstat(2) with `MNT_NOWAIT`: the kernel's table as it stands, without
        /// asking any file system (a hung NFS server cannot hang the read), in
        /// mount order, as mount -p would print it, each with its file system ID.
        /// kern_getfsstat (sys/kern/vfs_syscalls.c) skips a mount that
        /// vfs_busy(MBF_NOWAIT) refuses, one with an unmount under way, but
        /// counts it when asked for the number only: a read with fewer entries
        /// than both counts around it missed one, and is done again.
        pub(crate) fn table_ids() -> Result<super::Ids> {
            let err = |e: Errno| fail(ExitCode::Unavailable, format!("getfsstat: {}", e.desc()));
            let count = || {
                // SAFETY: a null buffer asks only for the number of file systems.
                let n = unsafe { libc::getfsstat(std::ptr::null_mut(), 0, libc::MNT_NOWAIT) };
                if n < 0 {
                    Err(err(Errno::last()))
                } else {
                    Ok(n as usize)
                }
            };
            let mut tries = 0;
            loop {
                let before = count()?;
                // Room for mounts made in between; a full buffer is read again.
                let room = before + 8;
                let mut buf: Vec<libc::statfs> = Vec::with_capacity(room);
                let size = (room * std::mem::size_of::<libc::statfs>()) as libc::c_long;
                // SAFETY: the kernel writes at most `size` bytes, the capacity of
                // `buf`, and returns how many entries it wrote.
                let got = unsafe { libc::getfsstat(buf.as_mut_ptr(), size, libc::MNT_NOWAIT) };
                if got < 0 {
                    return Err(err(Errno::last()));
                }
                let got = got as usize;
                if got == room {
                    continue;
                }
                // An unmount in progress ends (or fails) within moments.
                if got < before.min(count()?) && tries < 50 {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                // SAFETY: the kernel initialised the first `got` entries.
                unsafe { buf.set_len(got) };
                return Ok(buf.iter().map(|st| (fsid(st), line(st))).collect());
            }
        }

        /// `f_fsid` as fs_of() gives it: its bytes in memory order, in hex.
        fn fsid(st: &libc::statfs) -> MountId {
            // SAFETY: views the fsid_t inside `st` as its bytes, borrowed from it.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&st.f_fsid as *const libc::fsid_t).cast::<u8>(),
                    std::mem::size_of::<libc::fsid_t>(),
                )
            };
            MountId(super::super::hex(bytes))
        }

        /// One statfs as mount(8)'s putfsent() shows it: the union prefix dropped,
        /// "rw" unless read-only, then flags2opts()'s names.
        fn line(st: &libc::statfs) -> Mount {
            // SAFETY: the kernel NUL-terminates the names inside their arrays.
            let name = |a: &[libc::c_char]| unsafe { CStr::from_ptr(a.as_ptr()) }.to_bytes();
            let flags = st.f_flags as i64;
            let mut options = vec![if flags & libc::MNT_RDONLY as i64 != 0 {
                "ro"
            } else {
                "rw"
            }];
            for (bit, opt) in [
                (libc::MNT_SYNCHRONOUS, "sync"),
                (libc::MNT_NOEXEC, "noexec"),
                (libc::MNT_NOSUID, "nosuid"),
                (libc::MNT_UNION, "union"),
                (libc::MNT_ASYNC, "async"),
                (libc::MNT_NOATIME, "noatime"),
            ] {
                if flags & bit as i64 != 0 {
                    options.push(opt);
                }
            }
            Mount {
                source: OsStr::from_bytes(strip_union_prefix(name(&st.f_mntfromname)))
                    .to_os_string(),
                target: PathBuf::from(OsStr::from_bytes(name(&st.f_mntonname))),
                fstype: String::from_utf8_lossy(name(&st.f_fstypename)).into_owned(),
                options: options.into_iter().map(String::from).collect(),
                linux: None,
            }
        }

        /// unmount(2) with `MNT_BYFSID` ("FSID:val0:val1", as umount(8) writes
        /// it): exactly that file system or nothing (ENOENT when it is gone; no
        /// retry by path).
        pub(crate) fn unmount(id: &MountId, force: bool) -> Result<()> {
            let path = fsid_path(id).ok_or_else(|| {
                fail(
                    ExitCode::Unavailable,
                    format!("unmount: {}: not a file system ID", id.0),
                )
            })?;
            let mut flags = libc::MNT_BYFSID;
            if force {
                flags |= libc::MNT_FORCE;
            }
            // SAFETY: a NUL-terminated string the call only reads.
            if unsafe { libc::unmount(path.as_ptr(), flags) } != 0 {
                let errno = Errno::last();
                return Err(fail(
                    of_errno(errno, ExitCode::Unavailable),
                    format!("unmount of file system {}: {}", id.0, errno.desc()),
                ));
            }
            Ok(())
        }
    }

    /// SIMULATION SUPPORT, not FreeBSD: the simulated tools stand in for the two
    /// system calls.
    #[cfg(not(target_os = "freebsd"))]
    mod tools {
        use std::ffi::OsString;
        use std::process::{Command, Stdio};

        use anyhow::Result;

        use super::super::{MountId, parse_mount_v, run_tool};
        use crate::exit::{ExitCode, fail};

        /// `mount -v` of the simulation: each line with the fsid umount(8) takes.
        pub(crate) fn table_ids() -> Result<super::Ids> {
            let out = Command::new("mount")
                .arg("-v")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| fail(ExitCode::Unavailable, format!("mount -v: {e}")))?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(fail(
                    ExitCode::Unavailable,
                    format!("mount -v: {}", err.lines().next().unwrap_or("failed")),
                ));
            }
            Ok(parse_mount_v(&String::from_utf8_lossy(&out.stdout)))
        }

        pub(crate) fn unmount(id: &MountId, force: bool) -> Result<()> {
            let mut argv: Vec<OsString> = vec!["umount".into()];
            if force {
                argv.push("-f".into());
            }
            argv.push(id.0.clone().into());
            run_tool(&argv, ExitCode::Unavailable)
        }
    }
}

/// The path unmount(2) with `MNT_BYFSID` takes for a file system ID (the fsid_t's
/// bytes in memory order, in hex): "FSID:val0:val1", as umount(8) writes it and
/// kern_unmount() reads it back.
#[cfg_attr(not(target_os = "freebsd"), allow(dead_code))] // the tests use it
fn fsid_path(id: &MountId) -> Option<std::ffi::CString> {
    let hex = id.0.as_bytes();
    if hex.len() != 16 {
        return None;
    }
    let mut bytes = [0u8; 8];
    for (byte, pair) in bytes.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    let val = |i: usize| i32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    std::ffi::CString::new(format!("FSID:{}:{}", val(0), val(4))).ok()
}

/// f_mntfromname of a union is its upper dir behind `<above>:` (`<below>:` with
/// `-o below`); mount -p drops the prefix (putfsent()), and so does jlayers.
fn strip_union_prefix(from: &[u8]) -> &[u8] {
    [b"<above>:".as_slice(), b"<below>:"]
        .iter()
        .find_map(|p| from.strip_prefix(*p))
        .unwrap_or(from)
}

/// What statfs(2) says of the file system a descriptor lies in.
#[derive(Debug)]
struct Fs {
    /// `f_fsid` as umount(8) takes it: its bytes in memory order, in hex.
    id: MountId,
    /// `f_mntonname`.
    on: PathBuf,
    /// `f_fstypename`.
    fstype: String,
    /// `f_mntfromname`, without unionfs's `<above>:` (`<below>:`) prefix.
    from: OsString,
}

/// statfs(2) of the top mount at `place`, opened beneath its jail root.
fn fs_at(place: &Place) -> Result<Fs> {
    let fd = place.open_dir()?;
    fs_of(&fd).map_err(|e| {
        fail(
            ExitCode::Unavailable,
            format!("{}: statfs: {}", place.path.display(), e.desc()),
        )
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(target_os = "freebsd")]
fn fs_of(fd: &OwnedFd) -> nix::Result<Fs> {
    use std::ffi::CStr;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: a zeroed statfs is valid; the kernel fills it; the names are
    // NUL-terminated arrays inside it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a live statfs the kernel fills.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: views the fsid_t inside `st` as its bytes, borrowed from `st`.
    let id = unsafe {
        std::slice::from_raw_parts(
            (&st.f_fsid as *const libc::fsid_t).cast::<u8>(),
            std::mem::size_of::<libc::fsid_t>(),
        )
    };
    // SAFETY: the kernel NUL-terminates the names inside their arrays in `st`,
    // which outlives the borrows.
    let on = unsafe { CStr::from_ptr(st.f_mntonname.as_ptr()) };
    // SAFETY: as above.
    let from = strip_union_prefix(unsafe { CStr::from_ptr(st.f_mntfromname.as_ptr()) }.to_bytes());
    // SAFETY: as above.
    let ty = unsafe { CStr::from_ptr(st.f_fstypename.as_ptr()) };
    Ok(Fs {
        id: MountId(hex(id)),
        on: PathBuf::from(std::ffi::OsStr::from_bytes(on.to_bytes())),
        fstype: ty.to_string_lossy().into_owned(),
        from: std::ffi::OsStr::from_bytes(from).to_os_string(),
    })
}

/// SIMULATION SUPPORT, not FreeBSD: on Linux the FreeBSD backend runs only against
/// the simulated userland of the tests. Linux's statfs has no mount point or type
/// name, so they come from the mount the descriptor lies in (statx's mount id, in
/// mountinfo), the type as the simulation recorded it; the "file system ID" is the
/// mount id, which the simulated umount(8) takes back.
#[cfg(target_os = "linux")]
fn fs_of(fd: &OwnedFd) -> nix::Result<Fs> {
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;
    let id = super::linux::mount_id(fd.as_fd())?;
    let raw = std::fs::read("/proc/self/mountinfo").map_err(|_| nix::errno::Errno::EIO)?;
    let mount = super::linux::parse_mountinfo(&raw)
        .into_iter()
        .find(|mount| mount.linux_id() == Some(id))
        .ok_or(nix::errno::Errno::ENOENT)?;
    let state = std::env::var_os("SIM_STATE")
        .map(PathBuf::from)
        .unwrap_or_default();
    let sim = std::fs::read_to_string(state.join("mounts")).unwrap_or_default();
    let id_s = id.to_string();
    let (fstype, from) = sim
        .lines()
        .rev()
        .find_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (fields.len() == 3 && fields[0] == id_s).then(|| {
                let from = strip_union_prefix(fields[2].as_bytes());
                (
                    fields[1].to_string(),
                    OsStr::from_bytes(from).to_os_string(),
                )
            })
        })
        .unwrap_or((mount.fstype, mount.source));
    Ok(Fs {
        id: MountId(hex(&id.to_be_bytes())),
        on: mount.target,
        fstype,
        from,
    })
}

#[cfg(not(any(target_os = "freebsd", target_os = "linux")))]
fn fs_of(_fd: &OwnedFd) -> nix::Result<Fs> {
    Err(nix::errno::Errno::ENOSYS)
}

/// fstat(1) output: a header, then `USER CMD PID FD MOUNT INUM MODE SZ|DV R/W`
/// per open file; one holder per pid, with how it holds the file system.
/// print_file_info() writes the command with `%-10s` (usr.bin/fstat/fstat.c), and
/// a command name may hold spaces: the line is read from the right, where the
/// columns are fixed, and the command is what lies between the user and the pid.
pub(crate) fn parse_fstat(text: &str) -> Vec<super::Holder> {
    let mut out: Vec<super::Holder> = Vec::new();
    for line in text.lines().skip(1) {
        let Some((cmd, pid, fd)) = fstat_line(line) else {
            continue;
        };
        let how = match fd {
            "wd" => "cwd",
            "root" => "root",
            "jail" => "jail root",
            "text" => "executable",
            "mmap" => "mapping",
            "tr" => "trace file",
            "ctty" => "terminal",
            _ => "open file",
        };
        match out.iter_mut().find(|holder| holder.pid == pid) {
            Some(holder) if !holder.how.contains(&how) => holder.how.push(how),
            Some(_) => {}
            None => out.push(super::Holder {
                pid,
                command: cmd.to_string(),
                jail: None,
                root: None,
                how: vec![how],
            }),
        }
    }
    out
}

/// One fstat(1) line of a vnode: its command, pid and FD column. From the right:
/// R/W (`%2s`, blank when neither), SZ|DV, MODE, INUM, the mount point (absent
/// when unknown), FD, PID; the user is the first word, the command the rest.
fn fstat_line(line: &str) -> Option<(&str, u32, &str)> {
    // Each word with its byte offset in the line.
    let mut words: Vec<(usize, &str)> = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices().chain([(line.len(), ' ')]) {
        match (c.is_ascii_whitespace(), start) {
            (true, Some(s)) => {
                words.push((s, &line[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    let mut end = words.len();
    if matches!(words.last(), Some((_, "r" | "w" | "rw"))) {
        end -= 1;
    }
    end = end.checked_sub(3)?;
    if end > 0 && words[end - 1].1.starts_with('/') {
        end -= 1;
    }
    let fd = words.get(end.checked_sub(1)?)?.1;
    let (pid_at, pid) = *words.get(end.checked_sub(2)?)?;
    let fd_ok = fd.bytes().all(|b| b.is_ascii_digit())
        || ["text", "wd", "root", "jail", "tr", "mmap", "ctty"].contains(&fd);
    // The user, one word, then at least one word of command.
    if !fd_ok || end < 4 {
        return None;
    }
    let user_end = words[0].0 + words[0].1.len();
    let cmd = line[user_end..pid_at].trim();
    Some((cmd, pid.parse().ok()?, fd))
}

/// `mount -v` (sbin/mount/mount.c prmount(), verbose): `FROM on ON (TYPE, flag,
/// ..., fsid HEX)`, the fsid as the bytes of f_fsid in hex, as umount(8) takes it;
/// a union's FROM keeps its `<above>:` prefix, dropped here.
#[cfg_attr(target_os = "freebsd", allow(dead_code))] // the simulation's seam
pub(crate) fn parse_mount_v(text: &str) -> Vec<(MountId, Mount)> {
    use std::os::unix::ffi::OsStrExt;
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.rsplit_once(" (")?;
            let (from, on) = head.split_once(" on ")?;
            let mut fields = tail.strip_suffix(')')?.split(", ");
            let fstype = fields.next()?.to_string();
            let mut options = vec!["rw".to_string()];
            let mut id = None;
            for field in fields {
                match field.strip_prefix("fsid ") {
                    Some(hex) => id = Some(MountId(hex.to_string())),
                    None if field == "read-only" => options[0] = "ro".into(),
                    None => options.push(field.to_string()),
                }
            }
            let source = from.as_bytes();
            Some((
                id?,
                Mount {
                    source: OsStr::from_bytes(strip_union_prefix(source)).to_os_string(),
                    target: PathBuf::from(on),
                    fstype,
                    options,
                    linux: None,
                },
            ))
        })
        .collect()
}

/// `mount -p` (fstab(5) format): fields separated by runs of tabs or spaces.
pub fn parse_mount_p(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            if fields.len() < 4 {
                return None;
            }
            // statfs(2) shows a union's upper as `<above>:DIR`; mount -p strips it.
            let source = fields[0].strip_prefix("<above>:").unwrap_or(fields[0]);
            Some(Mount {
                source: source.into(),
                target: PathBuf::from(fields[1]),
                fstype: fields[2].to_string(),
                options: fields[3].split(',').map(String::from).collect(),
                linux: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mount -p` of a FreeBSD 14 host with the recipe's jail mounted, padded as
    /// sbin/mount/mount.c putfsent() pads it.
    const MOUNT_P: &str = "zroot/ROOT/default\t/\t\t\tzfs\trw,noatime \t0 0\n\
devfs\t\t\t/dev\t\t\tdevfs\trw\t\t0 0\n\
/dev/gpt/efiboot0\t/boot/efi\t\tmsdosfs\trw\t\t2 2\n\
zroot/usr/ports\t\t/usr/ports\t\tzfs\trw,noatime \t0 0\n\
/usr/ports\t\t/usr/local/var/jails/192.168.0.100/usr/ports nullfs\trw\t\t0 0\n\
/usr/local/var/jails/192.168.0.100/usr/tmp/foo /usr/local/var/jails/192.168.0.100/usr/ports unionfs\trw,noatime \t0 0\n\
/usr/ports\t\t/usr/local/var/jails/192.168.0.101/usr/ports nullfs\tro\t\t0 0\n";

    #[test]
    fn parses_padded_fstab_lines_in_order() {
        let table = parse_mount_p(MOUNT_P);
        assert_eq!(table.len(), 7);
        assert_eq!(table[3].source, "zroot/usr/ports");
        assert_eq!(table[3].fstype, "zfs");
        let jp = Path::new("/usr/local/var/jails/192.168.0.100/usr/ports");
        assert_eq!(
            (table[4].target.as_path(), table[4].fstype.as_str()),
            (jp, "nullfs")
        );
        assert_eq!(
            (table[5].target.as_path(), table[5].fstype.as_str()),
            (jp, "unionfs")
        );
        assert_eq!(
            table[5].source,
            "/usr/local/var/jails/192.168.0.100/usr/tmp/foo"
        );
        assert!(table[5].options.contains(&"noatime".to_string()));
        assert!(table[6].read_only() && !table[4].read_only());
    }

    #[test]
    fn parses_mount_v_with_fsids() {
        let text = "zroot/ROOT/default on / (zfs, local, noatime, nfsv4acls, fsid 0f2bdc8ede3a7c2d)\n\
/usr/ports on /j/usr/ports (nullfs, local, read-only, fsid 2a00000039000000)\n\
<above>:/j/usr/tmp/foo on /j/usr/ports (unionfs, local, noatime, fsid 2b00000039000000)\n\
garbage\n";
        let table = parse_mount_v(text);
        assert_eq!(table.len(), 3);
        assert_eq!(table[1].0, MountId("2a00000039000000".into()));
        assert!(table[1].1.read_only() && table[1].1.fstype == "nullfs");
        assert_eq!(table[2].1.source, "/j/usr/tmp/foo");
        assert_eq!(table[2].1.target, Path::new("/j/usr/ports"));
        assert!(table[0].1.options.contains(&"noatime".to_string()));
    }

    #[test]
    fn fsid_path_is_what_kern_unmount_reads() {
        let id = |s: &str| MountId(s.into());
        let want = format!(
            "FSID:{}:{}",
            i32::from_ne_bytes([0x0a, 0, 0, 0]),
            i32::from_ne_bytes([0xff, 0xff, 0xff, 0xff])
        );
        assert_eq!(
            fsid_path(&id("0a000000ffffffff"))
                .unwrap()
                .to_str()
                .unwrap(),
            want
        );
        assert!(fsid_path(&id("0a00")).is_none());
        assert!(fsid_path(&id("0a000000fffffffg")).is_none());
    }

    #[test]
    fn fstat_holders() {
        let text = "USER     CMD          PID   FD MOUNT      INUM MODE         SZ|DV R/W\n\
root     sleep       1234 text /          123 -r-xr-xr-x   12345  r\n\
root     sleep       1234   wd /j/usr/ports  5 drwxr-xr-x     512  r\n\
root     make        1300    3 /j/usr/ports 77 -rw-r--r--    2048  r\n\
root     make        1300   wd /j/usr/ports  5 drwxr-xr-x     512  r\n\
root     make        1300    4 /j/usr/ports 78 -rw-r--r--    2048  r\n";
        let holders = parse_fstat(text);
        assert_eq!(holders.len(), 2);
        assert_eq!(
            (holders[0].pid, holders[0].command.as_str()),
            (1234, "sleep")
        );
        assert_eq!(holders[0].how, ["executable", "cwd"]);
        assert_eq!(
            (holders[1].pid, holders[1].command.as_str()),
            (1300, "make")
        );
        assert_eq!(holders[1].how, ["open file", "cwd"]);
        assert!(parse_fstat("").is_empty());
        // print_file_info(): "%-8s %-10s %5d", so a command with spaces, a long
        // one, and a blank R/W column.
        let text = "USER     CMD          PID   FD MOUNT      INUM MODE         SZ|DV R/W\n\
root     port maker  4321   wd /j/usr/ports      5 drwxr-xr-x     512  r\n\
root     a b c d e f g h  77    3 /j/usr/ports     77 -rw-r--r--    2048   \n\
www      httpd        900 mmap /j/usr/ports     78 -rw-r--r--    2048 rw\n";
        let holders = parse_fstat(text);
        let got: Vec<_> = holders
            .iter()
            .map(|h| (h.pid, h.command.as_str(), h.how[0]))
            .collect();
        assert_eq!(
            got,
            [
                (4321, "port maker", "cwd"),
                (77, "a b c d e f g h", "open file"),
                (900, "httpd", "mapping")
            ]
        );
    }

    #[test]
    fn commands_are_the_base_tools() {
        let platform = FreeBsd;
        let target = Path::new("/j/usr/ports");
        let null = Null {
            source: "/usr/ports".into(),
            read_only: true,
        };
        assert_eq!(
            platform.mount_command(Step::Null(&null), target),
            ["mount_nullfs", "-o", "ro", "/usr/ports", "/j/usr/ports"]
        );
        let union = Union {
            upper: Place::host("/u".into()),
            work: None,
            options: vec!["noatime".into(), "below".into()],
        };
        assert_eq!(
            platform.mount_command(Step::Union(&union), target),
            [
                "mount_unionfs",
                "-o",
                "noatime",
                "-o",
                "below",
                "/u",
                "/j/usr/ports"
            ]
        );
        assert_eq!(
            platform.unmount_command(target, Busy::Force),
            ["umount", "-f", "/j/usr/ports"]
        );
        let command = platform.exec_command(&super::super::Exec {
            jail: "server",
            root: target,
            env: &[("BATCH", "yes")],
            cmd: &["portmaster".into(), "-a".into()],
            network: crate::config::Network::None,
            hold: Default::default(),
        });
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(command.get_program(), "jexec");
        assert_eq!(
            args,
            ["-l", "server", "env", "BATCH=yes", "portmaster", "-a"]
        );
    }
}
