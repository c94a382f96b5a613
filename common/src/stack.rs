//! Applying and removing a jail's plan: the one place that knows the order of
//! mounts, what counts as already done, and how a failed run is rolled back.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::exit::{ExitCode, code_of, fail};
use crate::mounts::Mount;
use crate::plan::{JailPlan, Stack, State, Step};
use crate::platform::{MountId, Mounted, Platform};
use crate::report::{Messages, sh_line};
use crate::signals;
use crate::target::{Beneath, Place};

/// Runs plans on one platform; with `dry_run` it prints sh commands instead (or,
/// with `--json`, only records what it would do).
pub struct Engine<'a> {
    pub platform: &'a dyn Platform,
    pub msg: Messages,
    pub dry_run: bool,
    /// What was done (or would be), for the JSON records.
    pub journal: Mutex<Vec<Done>>,
}

/// One change a run made (or, with `-n`, would make) to a layer.
#[derive(Clone, Debug)]
pub struct Done {
    pub layer: String,
    pub what: Did,
}

#[derive(Clone, Debug)]
pub enum Did {
    Mkdir(PathBuf),
    /// A mount made: its kind (`null`, `union`, `tmpfs`), source and target.
    Mount(&'static str, PathBuf, PathBuf),
    /// A mount removed, the same way.
    Unmount(&'static str, PathBuf, PathBuf),
}

/// A step's kind, as the JSON records name it.
pub fn kind(step: &Step) -> &'static str {
    match step {
        Step::Null { .. } => "null",
        Step::Union { .. } => "union",
        Step::Tmpfs { .. } => "tmpfs",
    }
}

/// A foreign mount on top of a stack this run would take down.
fn on_top(s: &Stack, top: &Mount, what: &str) -> anyhow::Error {
    fail(
        ExitCode::Unavailable,
        format!(
            "{}: {} is mounted on top of this layer; {what}",
            s.target.path.display(),
            top.describe()
        ),
    )
}

/// A step, for `-v`.
fn describe(step: &Step) -> String {
    match step {
        Step::Null {
            source,
            read_only: true,
        } => format!("read-only null mount of {}", source.display()),
        Step::Null { source, .. } => format!("null mount of {}", source.display()),
        Step::Union { upper, .. } => format!("union mount of {}", upper.path.display()),
        Step::Tmpfs { .. } => "tmpfs for the upper dir".to_string(),
    }
}

/// What a step mounts: the source a record shows.
fn source(step: &Step) -> PathBuf {
    match step {
        Step::Null { source, .. } => source.clone(),
        Step::Union { upper, .. } => upper.path.clone(),
        Step::Tmpfs { .. } => PathBuf::from("tmpfs"),
    }
}

/// One mount this run made: enough to take it down again.
#[derive(Clone, Debug)]
pub struct Made {
    pub layer: String,
    pub target: PathBuf,
}

/// While a run mounts: what each mount pinned, to take it back if a later one fails.
type Pinned = Vec<(Made, Option<Mounted>)>;

impl<'a> Engine<'a> {
    pub fn new(platform: &'a dyn Platform, msg: Messages, dry_run: bool) -> Engine<'a> {
        Engine {
            platform,
            msg,
            dry_run,
            journal: Mutex::default(),
        }
    }

    /// sh lines for `-n`, unless the records are JSON.
    fn print_sh(&self) -> bool {
        self.dry_run && !crate::report::json()
    }

    fn note(&self, layer: &str, what: Did) {
        self.journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Done {
                layer: layer.to_string(),
                what,
            });
    }

    /// What was done since the last call.
    pub fn take_journal(&self) -> Vec<Done> {
        std::mem::take(&mut *self.journal.lock().unwrap_or_else(|p| p.into_inner()))
    }
    /// Mount what is missing of every stack, in order. On failure, everything this
    /// call mounted is unmounted again before the error is returned. With `dry_run`
    /// the mounts it would make are printed and returned.
    pub fn mount_jail(&self, plan: &JailPlan) -> Result<Vec<Made>> {
        let mut made: Pinned = Vec::new();
        let r = self.mount_all(plan, &mut made);
        if r.is_ok() || self.dry_run {
            // Dropping the descriptors: they would keep the mounts busy.
            return r.map(|()| made.into_iter().map(|(m, _)| m).collect());
        }
        for (m, mounted) in made.into_iter().rev() {
            let Some(mounted) = mounted else { continue };
            if let Err(re) = self.platform.discard(mounted) {
                self.msg.error(&re.context(format!(
                    "{}: {}: rollback incomplete, mounts left in place",
                    plan.jail, m.layer
                )));
            }
        }
        r.map(|()| Vec::new())
    }

    fn mount_all(&self, plan: &JailPlan, made: &mut Pinned) -> Result<()> {
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
            let view: &[Mount] = if covered.iter().any(|c| s.target.path.starts_with(c)) {
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
                covered.push(&s.target.path);
            }
        }
        Ok(())
    }

    fn mount_stack(
        &self,
        plan: &JailPlan,
        s: &Stack,
        table: &[Mount],
        made: &mut Pinned,
    ) -> Result<()> {
        let done = self.prepare(s, table)?;
        if done == s.steps.len() {
            self.msg.info(&[&plan.jail, &s.layer], "already mounted");
        }
        // The mount each step must go on top of: what the table shows there now,
        // then what this run mounted.
        let mut below: Option<MountId> = match (done, s.at(table).last()) {
            (0, _) | (_, None) => None,
            (_, Some(top)) if !self.dry_run => Some(self.platform.pin(&s.target, top)?),
            _ => None,
        };
        let made_here = || Made {
            layer: s.layer.clone(),
            target: s.target.path.clone(),
        };
        for step in &s.steps[done..] {
            self.note(
                &s.layer,
                Did::Mount(kind(step), source(step), s.target.path.clone()),
            );
            if self.dry_run {
                if self.print_sh() {
                    self.platform.print_mount(step, &s.target.path);
                }
                made.push((made_here(), None));
                continue;
            }
            signals::check()?;
            if let Step::Union { upper, .. } = step {
                self.warn_upper(plan, s, &upper.path, table);
            }
            let m = self.platform.mount(step, &s.target, below.as_ref())?;
            below = Some(m.id.clone());
            made.push((made_here(), Some(m)));
            self.msg.info(
                &[&plan.jail, &s.layer],
                &format!("{} on {}", describe(step), s.target.path.display()),
            );
        }
        Ok(())
    }

    /// Make the stack's directories and read how much of it is mounted already.
    fn prepare(&self, s: &Stack, table: &[Mount]) -> Result<usize> {
        if let Some(Step::Union { upper, work, .. }) = s.steps.last() {
            self.ensure_dir(s, upper)?;
            if let Some(w) = work {
                self.ensure_dir(s, w)?;
            }
        }
        self.ensure_dir(s, &s.target)?;
        match s.state(table, self.platform) {
            State::Mounted(n) => Ok(n),
            State::Foreign { top, .. } => Err(fail(
                ExitCode::Unavailable,
                format!(
                    "{}: {} is mounted there, not as planned; not stacking on it (junmount it first)",
                    s.target.path.display(),
                    top.describe()
                ),
            )),
        }
    }

    /// Create a directory if missing (`dry_run`: print how); one below a jail root
    /// with the no-symlink walk.
    fn ensure_dir(&self, s: &Stack, p: &Place) -> Result<()> {
        if let Beneath::Missing(_) = p.open(!self.dry_run)? {
            self.note(&s.layer, Did::Mkdir(p.path.clone()));
            if self.print_sh() {
                print_mkdir(&p.path);
            }
        }
        Ok(())
    }

    /// What the platform says about an upper dir's file system, before mounting.
    fn warn_upper(&self, plan: &JailPlan, s: &Stack, upper: &Path, table: &[Mount]) {
        if let Some(w) = self.platform.upper_warning(upper, &s.target.path, table) {
            self.msg.warn(&[&plan.jail, &s.layer], &w);
        }
    }

    /// Unmount the mounts this run made, newest first (`dry_run`: print how). What
    /// is gone already (a jail's stop hook may have run junmount) is not missed:
    /// each stack loses at most the mounts this run added that are still on top.
    pub fn undo(&self, plan: &JailPlan, made: &[Made]) -> Result<()> {
        if self.dry_run {
            for m in made.iter().rev().filter(|_| self.print_sh()) {
                sh_line(&self.platform.unmount_command(&m.target, false));
            }
            return Ok(());
        }
        if made.is_empty() {
            return Ok(());
        }
        let table = self.platform.mounts(&plan.root)?;
        for s in plan.stacks.iter().rev() {
            let ours = made.iter().filter(|m| m.target == s.target.path).count();
            if ours == 0 {
                continue;
            }
            let n = match s.state(&table, self.platform) {
                State::Mounted(n) => n.min(ours),
                State::Foreign { top, .. } => {
                    return Err(on_top(s, &top, "left alone")).context(s.layer.clone());
                }
            };
            self.take_down(plan, s, &table, n, false)
                .with_context(|| s.layer.clone())?;
        }
        Ok(())
    }

    /// Unmount the top `n` mounts at the stack's target, each one checked to be the
    /// table's through a descriptor opened beneath the root.
    fn take_down(
        &self,
        plan: &JailPlan,
        s: &Stack,
        table: &[Mount],
        n: usize,
        force: bool,
    ) -> Result<()> {
        let at = s.at(table);
        for (i, top) in at.iter().rev().take(n).enumerate() {
            // The top mounts are the plan's steps n-1, n-2, ... 0.
            let step = &s.steps[n - 1 - i];
            let did = Did::Unmount(kind(step), source(step), s.target.path.clone());
            if self.dry_run {
                self.note(&s.layer, did);
                if self.print_sh() {
                    sh_line(&self.platform.unmount_command(&s.target.path, force));
                }
                continue;
            }
            let id = self.platform.pin(&s.target, top)?;
            self.platform
                .unmount(&s.target, &id, force)
                .map_err(|e| self.name_holders(plan, &s.target.path, e))?;
            self.note(&s.layer, did);
            self.msg.info(
                &[&plan.jail, &s.layer],
                &format!("unmounted {}", s.target.path.display()),
            );
        }
        Ok(())
    }

    /// A busy unmount's error, with what holds the mount: each process as `pid
    /// command (how, jail)`, or the platform's hint when none is found.
    fn name_holders(&self, plan: &JailPlan, target: &Path, e: anyhow::Error) -> anyhow::Error {
        if code_of(&e) != ExitCode::TempFail {
            return e;
        }
        let holders = self.platform.holders(target);
        if holders.is_empty() {
            return fail(
                ExitCode::TempFail,
                format!("{e:#}: {}", self.platform.busy_hint(target)),
            );
        }
        let named: Vec<String> = holders
            .iter()
            .map(|h| {
                let mut what = h.how.join(", ");
                let place = h.jail.as_ref().map(|j| format!("jail {j}")).or_else(|| {
                    h.root.as_ref().map(|r| {
                        if *r == plan.root {
                            format!("jail {}", plan.jail)
                        } else {
                            format!("root {}", r.display())
                        }
                    })
                });
                if let Some(p) = place {
                    what.push_str("; ");
                    what.push_str(&p);
                }
                format!("pid {} {} ({what})", h.pid, h.command)
            })
            .collect();
        fail(
            ExitCode::TempFail,
            format!("{e:#}: held by {}", named.join(", ")),
        )
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
                        s.target.path.display(),
                        top.describe()
                    ),
                );
                return Ok(());
            }
            State::Foreign { top, ours: true } => {
                return Err(on_top(s, &top, "left alone (unmount it first)"));
            }
        };
        if n == 0 {
            self.msg.info(&[&plan.jail, &s.layer], "not mounted");
            return Ok(());
        }
        // Same rule as for mounting: no symlink on the way, even for -n.
        s.target.open(false)?;
        self.take_down(plan, s, table, n, force)
    }
}

/// `-n`: a directory the real run would create.
fn print_mkdir(p: &Path) {
    sh_line(&["mkdir".as_ref(), "-p".as_ref(), p.as_os_str()]);
}
