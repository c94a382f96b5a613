//! FreeBSD: the base system's own tools, found on PATH — `mount_nullfs`,
//! `mount_unionfs`, `umount`, `mount -p`, `jls`, `jexec`, `service`. Built on every
//! OS; tested here against the simulated userland under `tests/freebsd-sim/`.

use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::Result;

use super::{Os, Platform, run_tool};
use crate::exit::{ExitCode, fail};
use crate::mounts::Mount;
use crate::plan::Step;

pub struct FreeBsd;

impl Platform for FreeBsd {
    fn os(&self) -> Os {
        Os::FreeBsd
    }

    fn needs_work_dir(&self) -> bool {
        false
    }

    fn mounts(&self, _scope: &Path) -> Result<Arc<Vec<Mount>>> {
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
        Ok(Arc::new(parse_mount_p(&String::from_utf8_lossy(
            &out.stdout,
        ))))
    }

    fn matches(&self, step: &Step, m: &Mount) -> bool {
        match step {
            Step::Null { source, read_only } => {
                m.fstype == "nullfs"
                    && m.source == source.as_os_str()
                    && *read_only == m.read_only()
            }
            Step::Union { upper, .. } => m.fstype == "unionfs" && m.source == upper.as_os_str(),
        }
    }

    fn mount(&self, step: &Step, target: &Path, _dir: BorrowedFd<'_>) -> Result<()> {
        run_tool(&self.mount_command(step, target), ExitCode::Unavailable)
    }

    fn unmount(&self, target: &Path, force: bool) -> Result<()> {
        run_tool(&self.unmount_command(target, force), ExitCode::Unavailable).map_err(|e| {
            if crate::exit::code_of(&e) == ExitCode::TempFail {
                e.context(crate::exit::Fail {
                    code: ExitCode::TempFail,
                    msg: format!("{} is busy: {}", target.display(), self.busy_hint(target)),
                })
            } else {
                e
            }
        })
    }

    fn mount_command(&self, step: &Step, target: &Path) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        match step {
            Step::Null { source, read_only } => {
                argv.push("mount_nullfs".into());
                if *read_only {
                    argv.extend(["-o".into(), "ro".into()]);
                }
                argv.push(source.into());
            }
            Step::Union { upper, options, .. } => {
                argv.push("mount_unionfs".into());
                if !options.is_empty() {
                    argv.extend(["-o".into(), options.join(",").into()]);
                }
                argv.push(upper.into());
            }
        }
        argv.push(target.into());
        argv
    }

    fn unmount_command(&self, target: &Path, force: bool) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec!["umount".into()];
        if force {
            argv.push("-f".into());
        }
        argv.push(target.into());
        argv
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

    fn service_command(&self, jail: &str, start: bool) -> Option<Vec<OsString>> {
        let verb = if start { "onestart" } else { "onestop" };
        Some(["service", "jail", verb, jail].map(OsString::from).to_vec())
    }

    fn exec_command(
        &self,
        jail: &str,
        _root: &Path,
        env: &[(&str, &str)],
        cmd: &[String],
    ) -> Command {
        // jexec -l keeps only HOME, SHELL, TERM, USER and the login class: set the
        // rest inside the jail with env(1).
        let mut c = Command::new("jexec");
        c.args(["-l", jail, "env"]);
        c.args(env.iter().map(|(k, v)| format!("{k}={v}")));
        c.args(cmd);
        c
    }
}

/// `mount -p` (fstab(5) format): fields separated by runs of tabs or spaces.
pub fn parse_mount_p(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if f.len() < 4 {
                return None;
            }
            // statfs(2) shows a union's upper as `<above>:DIR`; mount -p strips it.
            let source = f[0].strip_prefix("<above>:").unwrap_or(f[0]);
            Some(Mount {
                source: source.into(),
                target: PathBuf::from(f[1]),
                fstype: f[2].to_string(),
                options: f[3].split(',').map(String::from).collect(),
                fs_options: Vec::new(),
                root: PathBuf::from("/"),
                dev: None,
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
        let t = parse_mount_p(MOUNT_P);
        assert_eq!(t.len(), 7);
        assert_eq!(t[3].source, "zroot/usr/ports");
        assert_eq!(t[3].fstype, "zfs");
        let jp = Path::new("/usr/local/var/jails/192.168.0.100/usr/ports");
        assert_eq!(
            (t[4].target.as_path(), t[4].fstype.as_str()),
            (jp, "nullfs")
        );
        assert_eq!(
            (t[5].target.as_path(), t[5].fstype.as_str()),
            (jp, "unionfs")
        );
        assert_eq!(
            t[5].source,
            "/usr/local/var/jails/192.168.0.100/usr/tmp/foo"
        );
        assert!(t[5].options.contains(&"noatime".to_string()));
        assert!(t[6].read_only() && !t[4].read_only());
    }

    #[test]
    fn commands_are_the_base_tools() {
        let p = FreeBsd;
        let t = Path::new("/j/usr/ports");
        let null = Step::Null {
            source: "/usr/ports".into(),
            read_only: true,
        };
        assert_eq!(
            p.mount_command(&null, t),
            ["mount_nullfs", "-o", "ro", "/usr/ports", "/j/usr/ports"]
        );
        let union = Step::Union {
            upper: "/u".into(),
            work: None,
            options: vec!["noatime".into(), "below".into()],
        };
        assert_eq!(
            p.mount_command(&union, t),
            ["mount_unionfs", "-o", "noatime,below", "/u", "/j/usr/ports"]
        );
        assert_eq!(p.unmount_command(t, true), ["umount", "-f", "/j/usr/ports"]);
        let c = p.exec_command(
            "server",
            t,
            &[("BATCH", "yes")],
            &["portmaster".into(), "-a".into()],
        );
        let args: Vec<_> = c.get_args().collect();
        assert_eq!(c.get_program(), "jexec");
        assert_eq!(
            args,
            ["-l", "server", "env", "BATCH=yes", "portmaster", "-a"]
        );
    }
}
