//! FreeBSD: the base system's own tools, found on PATH — `mount_nullfs`,
//! `mount_unionfs`, `mount -t tmpfs`, `jls`, `jexec`, `service`, `fstat`, `ps` —
//! and two system calls for what the tools do less exactly: the mount table from
//! getfsstat(2) with `MNT_NOWAIT` (`mount -p` waits on every file system: a hung
//! NFS mount would hang jlayers) and unmount(2) with `MNT_BYFSID` (umount(8)
//! retries by path when the file system ID is gone). Built on every OS; on Linux
//! tested against the simulated userland under `tests/freebsd-sim/`, where the
//! [`kernel`] seam reads `mount -v` and runs `umount FSID` of the simulation
//! instead of the two system calls (which the simulation cannot intercept).
//!
//! By phase: [`kernel`] the system calls, [`tools`] the commands, [`parse`] what
//! they print, `sim` what stands in for the system calls off FreeBSD.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::Result;

use super::{Exec, Holder, Limited, MountId, Mounted, Platform, Service, changed};
use crate::config::Limits;
use crate::exit::ExitCode;
use crate::mounts::Mount;
use crate::platform::{Busy, PlatformError};
use crate::step::{Null, Step, Union};
use crate::target::Place;

mod error;
mod kernel;
mod parse;
#[cfg(not(target_os = "freebsd"))]
mod sim;
mod tools;

pub use parse::parse_mount_p;

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
        let fs = kernel::fs_at(target)?;
        if fs.on != top.target || fs.fstype != top.fstype {
            return Err(changed(
                target,
                "the top mount is not the one in the mount table",
            ));
        }
        Ok(fs.id)
    }

    fn mount(&self, step: Step, target: &Place, below: Option<&MountId>) -> Result<Mounted> {
        tools::mount(self, step, target, below)
    }

    fn discard(&self, made: Mounted) -> Result<()> {
        kernel::unmount(&made.id, false)
    }

    /// unmount(2) with `MNT_BYFSID` unmounts exactly that file system, wherever
    /// its mount point is by now, and fails when it is gone.
    fn unmount(&self, target: &Place, id: &MountId, busy: Busy) -> Result<()> {
        kernel::unmount(id, busy == Busy::Force).map_err(|err| {
            if crate::exit::code_of(&err) == ExitCode::TempFail {
                PlatformError::busy(target)
            } else {
                err
            }
        })
    }

    fn mount_command(&self, step: Step, target: &Path) -> Vec<OsString> {
        tools::mount_command(step, target)
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

    fn holders(&self, target: &Path) -> Vec<Holder> {
        tools::holders(target)
    }

    fn busy_hint(&self, target: &Path) -> String {
        tools::busy_hint(target)
    }

    fn jail_running(&self, jail: &str) -> Result<bool> {
        tools::jail_running(jail)
    }

    fn jail_exiting(&self, jail: &str) -> Option<bool> {
        tools::jail_exiting(jail)
    }

    fn service_command(&self, jail: &str, to: Service) -> Option<Vec<OsString>> {
        let verb = match to {
            Service::Start => "onestart",
            Service::Stop => "onestop",
        };
        Some(["service", "jail", verb, jail].map(OsString::from).to_vec())
    }

    fn service(&self, argv: &[OsString], jail: &str, to: Service) -> Result<()> {
        tools::service(argv, jail, to)
    }

    fn exec_command(&self, exec: &Exec) -> Command {
        tools::exec_command(exec)
    }

    fn exec_failed(&self, exec: &Exec, output: &str) -> Option<anyhow::Error> {
        parse::jexec_failure(exec, output)
    }

    fn limit(&self, jail: &str, limits: &Limits) -> Result<Option<Box<dyn Limited>>> {
        tools::limit(jail, limits)
    }

    fn limit_sh(&self, jail: &str, limits: &Limits) -> (Vec<String>, Vec<String>) {
        tools::limit_sh(jail, limits)
    }
}
