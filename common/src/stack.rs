//! Applying and removing a jail's plan: the one place that knows the order of
//! mounts, what counts as already done, and how a failed run is rolled back.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::Upper;
use crate::exit::{ExitCode, OrFail, fail};
use crate::mounts::Mount;
use crate::plan::{JailPlan, Stack, State, Step, work_dir};
use crate::platform::{Os, Platform};
use crate::report::{Messages, sh_line};
use crate::signals;
use crate::target::{Beneath, open_beneath};

/// Runs plans on one platform; with `dry_run` it prints sh commands instead.
pub struct Engine<'a> {
    pub platform: &'a dyn Platform,
    pub msg: Messages,
    pub dry_run: bool,
}

/// One mount this run made: enough to take it down again.
#[derive(Clone, Debug)]
pub struct Made {
    pub layer: String,
    pub target: PathBuf,
}

impl Engine<'_> {
    /// Mount what is missing of every stack, in order. On failure, everything this
    /// call mounted is unmounted again before the error is returned. With `dry_run`
    /// the mounts it would make are printed and returned.
    pub fn mount_jail(&self, plan: &JailPlan) -> Result<Vec<Made>> {
        let mut made = Vec::new();
        match self.mount_all(plan, &mut made) {
            Ok(()) => Ok(made),
            Err(e) => {
                if self.dry_run {
                    return Err(e);
                }
                if let Err(re) = self.undo(plan, &made) {
                    self.msg.error(&re.context(format!(
                        "{}: rollback incomplete, mounts left in place",
                        plan.jail
                    )));
                }
                Err(e)
            }
        }
    }

    fn mount_all(&self, plan: &JailPlan, made: &mut Vec<Made>) -> Result<()> {
        if !plan.root.is_dir() {
            return Err(fail(
                ExitCode::NoInput,
                format!("jail root {} does not exist", plan.root.display()),
            ));
        }
        for s in &plan.stacks {
            if let Some(Step::Null { source, .. }) = s.steps.first() {
                if !source.is_dir() {
                    return Err(fail(
                        ExitCode::NoInput,
                        format!("source {} does not exist", source.display()),
                    ))
                    .context(s.layer.clone());
                }
            }
        }
        let table = self.platform.mounts(&plan.root)?;
        // Targets this run mounted on: whatever was mounted at or below them before
        // is hidden now, so a nested stack sees nothing of its own there.
        let mut covered: Vec<&Path> = Vec::new();
        for s in &plan.stacks {
            let visible: Vec<Mount>;
            let view: &[Mount] = if covered.iter().any(|c| s.target.starts_with(c)) {
                visible = table
                    .iter()
                    .filter(|m| !covered.iter().any(|c| m.target.starts_with(c)))
                    .cloned()
                    .collect();
                &visible
            } else {
                &table
            };
            let before = made.len();
            self.mount_stack(plan, s, view, made)
                .with_context(|| s.layer.clone())?;
            if made.len() > before {
                covered.push(&s.target);
            }
        }
        Ok(())
    }

    fn mount_stack(
        &self,
        plan: &JailPlan,
        s: &Stack,
        table: &[Mount],
        made: &mut Vec<Made>,
    ) -> Result<()> {
        if let Some(up) = &s.upper {
            self.ensure_upper(&plan.root, up)?;
        }
        if let Beneath::Missing(_) = open_beneath(&plan.root, &s.target_rel, !self.dry_run)? {
            print_mkdir(&s.target);
        }
        let done = match s.state(table, self.platform) {
            State::Mounted(n) => n,
            State::Foreign { top, .. } => {
                return Err(fail(
                    ExitCode::Unavailable,
                    format!(
                        "{}: {} is mounted there, not as planned; not stacking on it (junmount it first)",
                        s.target.display(),
                        top.describe()
                    ),
                ));
            }
        };
        if done == s.steps.len() {
            self.msg.info(&[&plan.jail, &s.layer], "already mounted");
        }
        let made_here = || Made {
            layer: s.layer.clone(),
            target: s.target.clone(),
        };
        for step in &s.steps[done..] {
            if self.dry_run {
                sh_line(&self.platform.mount_command(step, &s.target));
                made.push(made_here());
                continue;
            }
            signals::check()?;
            if let Step::Union { upper, .. } = step {
                self.warn_zfs(plan, s, upper, table);
            }
            let Beneath::Dir(dir, _) = open_beneath(&plan.root, &s.target_rel, false)? else {
                return Err(fail(
                    ExitCode::CantCreate,
                    format!("{} vanished", s.target.display()),
                ));
            };
            self.platform
                .mount(step, &s.target, std::os::fd::AsFd::as_fd(&dir))?;
            drop(dir);
            made.push(made_here());
            let what = match step {
                Step::Null {
                    source,
                    read_only: true,
                } => format!("read-only null mount of {}", source.display()),
                Step::Null { source, .. } => format!("null mount of {}", source.display()),
                Step::Union { upper, .. } => format!("union mount of {}", upper.display()),
            };
            self.msg.info(
                &[&plan.jail, &s.layer],
                &format!("{what} on {}", s.target.display()),
            );
        }
        Ok(())
    }

    /// Create the upper dir (and overlay's work dir beside it) if missing.
    fn ensure_upper(&self, root: &Path, up: &Upper) -> Result<()> {
        let mut dirs = match up {
            Upper::Host(p) => vec![(None, p.clone())],
            Upper::InRoot(rel) => vec![(Some(rel.clone()), root.join(rel))],
        };
        if self.platform.needs_work_dir() {
            let (rel, abs) = &dirs[0];
            dirs.push((rel.as_deref().map(work_dir), work_dir(abs)));
        }
        for (rel, abs) in dirs {
            match rel {
                // Inside the jail: the same no-symlink walk as targets.
                Some(rel) => {
                    if let Beneath::Missing(_) = open_beneath(root, &rel, !self.dry_run)? {
                        print_mkdir(&abs);
                    }
                }
                None if self.dry_run => {
                    if !abs.is_dir() {
                        print_mkdir(&abs);
                    }
                }
                None => std::fs::create_dir_all(&abs).or_fail(ExitCode::CantCreate, || {
                    format!("cannot create {}", abs.display())
                })?,
            }
        }
        Ok(())
    }

    /// unionfs on ZFS cannot whiteout: say what breaks, once per layer.
    fn warn_zfs(&self, plan: &JailPlan, s: &Stack, upper: &Path, table: &[Mount]) {
        if self.platform.os() != Os::FreeBsd {
            return;
        }
        let fs = table
            .iter()
            .filter(|m| upper.starts_with(&m.target))
            .max_by_key(|m| m.target.as_os_str().len());
        if fs.is_some_and(|m| m.fstype == "zfs") {
            self.msg.warn(
                &[&plan.jail, &s.layer],
                &format!(
                    "upper dir {} is on ZFS, which has no whiteouts: deleting or renaming a file of {} inside the jail will fail (EOPNOTSUPP); put the upper dir on UFS or tmpfs",
                    upper.display(),
                    s.target.display()
                ),
            );
        }
    }

    /// Unmount the mounts this run made, newest first (`dry_run`: print how). What
    /// is gone already (a jail's stop hook may have run junmount) is not missed:
    /// each stack loses at most the mounts this run added that are still on top.
    pub fn undo(&self, plan: &JailPlan, made: &[Made]) -> Result<()> {
        if self.dry_run {
            for m in made.iter().rev() {
                sh_line(&self.platform.unmount_command(&m.target, false));
            }
            return Ok(());
        }
        if made.is_empty() {
            return Ok(());
        }
        let table = self.platform.mounts(&plan.root)?;
        for s in plan.stacks.iter().rev() {
            let ours = made.iter().filter(|m| m.target == s.target).count();
            if ours == 0 {
                continue;
            }
            let n = match s.state(&table, self.platform) {
                State::Mounted(n) => n.min(ours),
                State::Foreign { top, .. } => {
                    return Err(fail(
                        ExitCode::Unavailable,
                        format!(
                            "{}: {} is mounted on top; left alone",
                            s.target.display(),
                            top.describe()
                        ),
                    ))
                    .context(s.layer.clone());
                }
            };
            for _ in 0..n {
                self.platform
                    .unmount(&s.target, false)
                    .with_context(|| s.layer.clone())?;
                self.msg.info(
                    &[&plan.jail, &s.layer],
                    &format!("unmounted {}", s.target.display()),
                );
            }
        }
        Ok(())
    }

    /// Take down every stack, nested layers first, each newest mount first; only
    /// mounts the plan would have made are touched.
    pub fn unmount_jail(&self, plan: &JailPlan, force: bool) -> Result<()> {
        if !force && self.platform.jail_running(&plan.jail)? {
            return Err(fail(
                ExitCode::TempFail,
                format!(
                    "jail is running (jls -j {} shows it); stop it first, or use -f",
                    plan.jail
                ),
            ));
        }
        let table = self.platform.mounts(&plan.root)?;
        for s in plan.stacks.iter().rev() {
            self.unmount_stack(plan, s, &table, force)
                .with_context(|| s.layer.clone())?;
        }
        Ok(())
    }

    fn unmount_stack(
        &self,
        plan: &JailPlan,
        s: &Stack,
        table: &[Mount],
        force: bool,
    ) -> Result<()> {
        let n = match s.state(table, self.platform) {
            State::Mounted(n) => n,
            State::Foreign { top, ours: false } => {
                self.msg.warn(
                    &[&plan.jail, &s.layer],
                    &format!(
                        "{}: {} is mounted there, not by jlayers; left alone",
                        s.target.display(),
                        top.describe()
                    ),
                );
                return Ok(());
            }
            State::Foreign { top, ours: true } => {
                return Err(fail(
                    ExitCode::Unavailable,
                    format!(
                        "{}: {} is mounted on top of this layer; left alone (unmount it first)",
                        s.target.display(),
                        top.describe()
                    ),
                ));
            }
        };
        if n == 0 {
            self.msg.info(&[&plan.jail, &s.layer], "not mounted");
            return Ok(());
        }
        // Same rule as for mounting: no symlink on the way (and hold no descriptor
        // in it while unmounting).
        open_beneath(&plan.root, &s.target_rel, false)?;
        for _ in 0..n {
            if self.dry_run {
                sh_line(&self.platform.unmount_command(&s.target, force));
                continue;
            }
            self.platform.unmount(&s.target, force)?;
            self.msg.info(
                &[&plan.jail, &s.layer],
                &format!("unmounted {}", s.target.display()),
            );
        }
        Ok(())
    }
}

/// `-n`: a directory the real run would create.
fn print_mkdir(p: &Path) {
    sh_line(&["mkdir".as_ref(), "-p".as_ref(), p.as_os_str()]);
}
