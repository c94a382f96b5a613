//! The base system's tools: mount_nullfs, mount_unionfs and mount(8) to mount,
//! fstat(1), ps(1) and jls(8) for what holds a mount, jls and service(8) for a
//! jail's state, jexec(8) to run in it, sysctl(8) and rctl(8) for its limits.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Result;

use super::error::FreeBsdError;
use super::{FreeBsd, kernel, parse};
use crate::config::Limits;
use crate::exit::{Domain, ExitCode};
use crate::mounts::Mount;
use crate::platform::{
    Exec, Holder, Limited, MountId, Mounted, Platform, Service, changed, run_tool, run_tool_output,
};
use crate::step::{Null, Step, Union};
use crate::target::Place;

/// mount_nullfs and mount_unionfs take paths and realpath(3) them: a jail that
/// swaps a component in the instant between the check and nmount(2) can move
/// the mount. There is no descriptor-based mount call to close that window; the
/// new mount is checked afterwards instead, through a descriptor opened beneath
/// the root, and a mount that landed anywhere else is unmounted again.
pub(super) fn mount(
    platform: &FreeBsd,
    step: Step,
    target: &Place,
    below: Option<&MountId>,
) -> Result<Mounted> {
    if let Some(expected) = below {
        if kernel::fs_at(target)?.id != *expected {
            return Err(changed(target, "the mount below is not the one checked"));
        }
    }
    // By file system ID: a table row can repeat (the same source mounted
    // twice on one path), an ID cannot.
    let before: Vec<MountId> = kernel::table_ids()?.into_iter().map(|(id, _)| id).collect();
    run_tool(
        &platform.mount_command(step, &target.path),
        ExitCode::Unavailable,
    )?;
    let want = platform.planned(step, &target.path);
    let (want, from) = (want.fstype.as_str(), want.source.as_os_str());
    match kernel::fs_at(target) {
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
            let _ = platform.discard(Mounted {
                id: fs.id,
                fd: None,
            });
        }
        _ => {}
    }
    undo_strays(platform, step, target, &before)?;
    Err(changed(
        target,
        "the new mount was not at the planned path; undone",
    ))
}

/// After a mount that did not land on its target: unmount what this run
/// made instead. mount_nullfs and mount_unionfs realpath(3) the target, so a
/// swapped component took the mount to where the path leads now, on the
/// host or in the jail: only a mount new since `before` (by file system
/// ID), of this step, at that place or inside the jail root is taken back,
/// never another tool's mount elsewhere that happens to be new and alike (a
/// builder's tmpfs, another jail's null mount of the same source).
fn undo_strays(platform: &FreeBsd, step: Step, target: &Place, before: &[MountId]) -> Result<()> {
    let resolved = std::fs::canonicalize(&target.path).ok();
    for (id, mount) in kernel::table_ids()? {
        let ours_place = resolved.as_deref() == Some(mount.target.as_path())
            || target
                .root
                .as_ref()
                .is_some_and(|root| mount.target.starts_with(root));
        if !before.contains(&id) && ours_place && platform.matches(step, &mount) {
            let _ = kernel::unmount(&id, false);
        }
    }
    Ok(())
}

pub(super) fn mount_command(step: Step, target: &Path) -> Vec<OsString> {
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
            argv.push(crate::platform::tmpfs_options(tmpfs).into());
            argv.push("tmpfs".into());
        }
    }
    argv.push(target.into());
    argv
}

/// A base tool's standard output, trimmed; `None` when it could not run (or,
/// with `ok_only`, when it failed).
fn stdout_of<S: AsRef<OsStr>>(argv: &[S], ok_only: bool) -> Option<String> {
    let output = Command::new(argv[0].as_ref())
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    (!ok_only || output.status.success())
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// fstat(1) -m -f lists what is open on the file system mounted there (working
/// and root directories, text, descriptors, and with -m mappings); ps(1) and
/// jls(8) name each holder's jail.
pub(super) fn holders(target: &Path) -> Vec<Holder> {
    let out = |argv: &[&OsStr]| stdout_of(argv, true);
    let listing = out(&[
        "fstat".as_ref(),
        "-m".as_ref(),
        "-f".as_ref(),
        target.as_os_str(),
    ])
    .unwrap_or_default();
    let mut holders = parse::parse_fstat(&listing);
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
pub(super) fn busy_hint(target: &Path) -> String {
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

pub(super) fn jail_running(jail: &str) -> Result<bool> {
    let st = Command::new("jls")
        .args(["-j", jail])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| Domain::error(FreeBsdError::Jls(e)))?;
    Ok(st.success())
}

/// `jail -r` sends SIGTERM, waits at most stop.timeout, and jail_remove()
/// kills what is left without waiting for it to exit (usr.sbin/jail/
/// command.c, term_procs): the jail is dying (`jls -d` lists it, `jls`
/// does not) while its processes exit, and `ps -J JID` still shows them.
pub(super) fn jail_exiting(jail: &str) -> Option<bool> {
    let out = |argv: &[&str]| stdout_of(argv, false);
    // A running jail's processes are not exiting: no wait for them.
    if jail_running(jail).unwrap_or(true) {
        return Some(false);
    }
    let Some(jid) = out(&["jls", "-d", "-j", jail, "jid"]).filter(|j| !j.is_empty()) else {
        return Some(false);
    };
    Some(out(&["ps", "-a", "-J", &jid, "-o", "pid="]).is_some_and(|pids| !pids.is_empty()))
}

/// `service jail onestart` exits 0 when the jail did not start (rc.d/jail
/// prints "cannot start jail" and goes on), `onestop` never fails: the jail's
/// state after the command (jls -j) says whether it worked.
pub(super) fn service(argv: &[OsString], jail: &str, to: Service) -> Result<()> {
    let output = run_tool_output(argv, ExitCode::Unavailable)?;
    let want = to == Service::Start;
    if jail_running(jail)? == want {
        return Ok(());
    }
    Err(Domain::error(FreeBsdError::JailState {
        tool: argv[0].to_string_lossy().into_owned(),
        jail: jail.to_string(),
        start: want,
        said: output.split_whitespace().collect::<Vec<_>>().join(" "),
    }))
}

pub(super) fn exec_command(exec: &Exec) -> Command {
    let (jail, env, cmd) = (exec.jail, exec.env, exec.cmd);
    // jexec -l keeps only HOME, SHELL, TERM, USER and the login class: set the
    // rest inside the jail with env(1).
    let mut command = Command::new("jexec");
    command.args(["-l", jail, "env"]);
    command.args(env.iter().map(|(k, v)| format!("{k}={v}")));
    command.args(cmd);
    crate::platform::own_session(&mut command);
    kernel::die_with_parent(&mut command);
    // jexec passes on what it is given: only 0, 1 and 2 into the jail.
    // SAFETY: the closure makes async-signal-safe calls only.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(
            &mut command,
            crate::platform::cloexec_above_stderr,
        );
    }
    command
}

pub(super) fn limit(jail: &str, limits: &Limits) -> Result<Option<Box<dyn Limited>>> {
    let rules = rctl_rules(jail, limits);
    if rules.is_empty() {
        return Ok(None);
    }
    let enabled = run_tool_output(
        &["sysctl", "-n", "kern.racct.enable"].map(OsString::from),
        ExitCode::Unavailable,
    )
    .unwrap_or_default();
    if enabled.trim() != "1" {
        return Err(Domain::error(FreeBsdError::NoRacct));
    }
    // Each rule added is removed again when `added` is dropped, a failed add
    // too.
    let mut added = Rctl(Vec::new());
    for rule in rules {
        run_tool(&rctl("-a", &rule), ExitCode::Unavailable)?;
        added.0.push(rule);
    }
    Ok(Some(Box::new(added)))
}

pub(super) fn limit_sh(jail: &str, limits: &Limits) -> (Vec<String>, Vec<String>) {
    let rules = rctl_rules(jail, limits);
    // Jail names and the rules' words need no quoting.
    let line = |op: &str, rule: &String| format!("rctl {op} {rule}");
    (
        rules.iter().map(|r| line("-a", r)).collect(),
        rules.iter().map(|r| line("-r", r)).collect(),
    )
}

/// The rctl(8) rules of a run's limits on jail `jail`: maxproc, memoryuse (bytes)
/// and pcpu (percent of one CPU). No pids limit unless set.
fn rctl_rules(jail: &str, limits: &Limits) -> Vec<String> {
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

impl Limited for Rctl {}

impl Drop for Rctl {
    fn drop(&mut self) {
        for rule in self.0.drain(..) {
            let _ = run_tool(&rctl("-r", &rule), ExitCode::Unavailable);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Busy;

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
        let command = platform.exec_command(&Exec {
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
