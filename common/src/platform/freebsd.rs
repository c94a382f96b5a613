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
use crate::plan::{Null, Step, Tmpfs, Union};
use crate::platform::Busy;
use crate::target::Place;

pub(crate) struct FreeBsd;

impl Platform for FreeBsd {
    fn needs_work_dir(&self) -> bool {
        false
    }

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
        let before = self.mounts(&target.path)?;
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
            Step::Tmpfs(Tmpfs { size }) => {
                argv.extend(["mount".into(), "-t".into(), "tmpfs".into(), "-o".into()]);
                argv.push(super::tmpfs_options(size).into());
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

    fn busy_hint(&self, target: &Path) -> String {
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
        command
    }
}

impl FreeBsd {
    /// After a mount that did not land on its target: unmount what it made
    /// anywhere else (the mounts of this step not in the table `before`).
    fn undo_strays(&self, step: Step, target: &Place, before: &[Mount]) -> Result<()> {
        let after = self.mounts(&target.path)?;
        let mut old: Vec<&Mount> = before.iter().collect();
        for mount in after.iter() {
            if let Some(index) = old.iter().position(|o| *o == mount) {
                old.remove(index);
            } else if self.matches(step, mount) {
                let place = match &target.root {
                    Some(root) if mount.target.starts_with(root) => Place {
                        path: mount.target.clone(),
                        root: Some(root.clone()),
                    },
                    _ => Place::host(mount.target.clone()),
                };
                if let Ok(fs) = fs_at(&place) {
                    let _ = self.unmount(&place, &fs.id, Busy::Fail);
                }
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
    pub(crate) use self::syscalls::{table, unmount};
    #[cfg(not(target_os = "freebsd"))]
    pub(crate) use self::tools::{table, unmount};

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
        /// mount order, as mount -p would print it.
        pub(crate) fn table() -> Result<Vec<Mount>> {
            let err = |e: Errno| fail(ExitCode::Unavailable, format!("getfsstat: {}", e.desc()));
            loop {
                // SAFETY: a null buffer asks only for the number of file systems.
                let count = unsafe { libc::getfsstat(std::ptr::null_mut(), 0, libc::MNT_NOWAIT) };
                if count < 0 {
                    return Err(err(Errno::last()));
                }
                // Room for mounts made in between; a full buffer is read again.
                let room = count as usize + 8;
                let mut buf: Vec<libc::statfs> = Vec::with_capacity(room);
                let size = (room * std::mem::size_of::<libc::statfs>()) as libc::c_long;
                // SAFETY: the kernel writes at most `size` bytes, the capacity of
                // `buf`, and returns how many entries it wrote.
                let got = unsafe { libc::getfsstat(buf.as_mut_ptr(), size, libc::MNT_NOWAIT) };
                if got < 0 {
                    return Err(err(Errno::last()));
                }
                if got as usize == room {
                    continue;
                }
                // SAFETY: the kernel initialised the first `got` entries.
                unsafe { buf.set_len(got as usize) };
                return Ok(buf.iter().map(line).collect());
            }
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

        use super::super::{MountId, parse_mount_p, run_tool};
        use crate::exit::{ExitCode, fail};
        use crate::mounts::Mount;

        pub(crate) fn table() -> Result<Vec<Mount>> {
            let out = Command::new("mount")
                .arg("-p")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| fail(ExitCode::Unavailable, format!("mount -p: {e}")))?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(fail(
                    ExitCode::Unavailable,
                    format!("mount -p: {}", err.lines().next().unwrap_or("failed")),
                ));
            }
            Ok(parse_mount_p(&String::from_utf8_lossy(&out.stdout)))
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

/// fstat(1) output: a header, then `USER CMD PID FD MOUNT ...` per open file; one
/// holder per pid, with how it holds the file system.
pub(crate) fn parse_fstat(text: &str) -> Vec<super::Holder> {
    let mut out: Vec<super::Holder> = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let (Some(cmd), Some(Ok(pid)), Some(fd)) = (
            fields.get(1),
            fields.get(2).map(|p| p.parse::<u32>()),
            fields.get(3),
        ) else {
            continue;
        };
        let how = match *fd {
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
        });
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(command.get_program(), "jexec");
        assert_eq!(
            args,
            ["-l", "server", "env", "BATCH=yes", "portmaster", "-a"]
        );
    }
}
