//! SIMULATION SUPPORT, not FreeBSD: on Linux the FreeBSD backend runs only against
//! the simulated userland of the tests (`tests/freebsd-sim/`). What stands in for
//! the system calls there: the simulated tools for the mount table and unmounts
//! by ID, statfs(2) from Linux's mountinfo and the simulation's own records.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Result;

use super::error::FreeBsdError;
use super::kernel::{Fs, Ids, hex};
use super::parse::{parse_mount_v, strip_union_prefix};
use crate::exit::{Domain, ExitCode};
use crate::platform::{MountId, run_tool};

/// `mount -v` of the simulation: each line with the fsid umount(8) takes.
pub(super) fn table_ids() -> Result<Ids> {
    let out = Command::new("mount")
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| {
            Domain::error(FreeBsdError::Table {
                how: "mount -v",
                source,
            })
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().next().unwrap_or("failed").to_string();
        return Err(Domain::error(FreeBsdError::TableTool { line }));
    }
    Ok(parse_mount_v(&String::from_utf8_lossy(&out.stdout)))
}

pub(super) fn unmount(id: &MountId, force: bool) -> Result<()> {
    let mut argv: Vec<OsString> = vec!["umount".into()];
    if force {
        argv.push("-f".into());
    }
    argv.push(id.0.clone().into());
    run_tool(&argv, ExitCode::Unavailable)
}

/// SIMULATION SUPPORT, not FreeBSD: on Linux the FreeBSD backend runs only against
/// the simulated userland of the tests. Linux's statfs has no mount point or type
/// name, so they come from the mount the descriptor lies in (statx's mount id, in
/// mountinfo), the type as the simulation recorded it; the "file system ID" is the
/// mount id, which the simulated umount(8) takes back.
#[cfg(target_os = "linux")]
pub(super) fn fs_of(fd: &OwnedFd) -> nix::Result<Fs> {
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;
    let id = crate::mounts::mountinfo::mount_id(fd.as_fd())?;
    let raw = std::fs::read("/proc/self/mountinfo").map_err(|_| nix::errno::Errno::EIO)?;
    let mount = crate::mounts::mountinfo::parse_mountinfo(&raw)
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
            // An id is given again once its mount is gone: a record holds at its
            // own mount point only.
            let at = OsStr::new(fields.get(3)?);
            (fields.len() == 4 && fields[0] == id_s && at == mount.target.as_os_str()).then(|| {
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
pub(super) fn fs_of(_fd: &OwnedFd) -> nix::Result<Fs> {
    Err(nix::errno::Errno::ENOSYS)
}

/// Elsewhere the FreeBSD backend runs only against the simulated userland.
#[cfg(not(target_os = "freebsd"))]
pub(super) fn die_with_parent(_command: &mut Command) {}
