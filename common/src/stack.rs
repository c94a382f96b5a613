//! Applying and removing a jail's plan: the one place that knows the order of
//! mounts, what counts as already done, and how a failed run is rolled back.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::action::{Action, Actor, At, Below, Busy, Effect, Sink};
use crate::exit::{ExitCode, fail};
use crate::mounts::{Mount, Table};
use crate::plan::{JailPlan, Stack, State, Step};
use crate::platform::{Mounted, Platform};
use crate::report::Messages;
use crate::target::{Beneath, Missing, Place};

/// Runs plans on one platform, handing every change to its [`Actor`]: done, or
/// printed (`-n`), and recorded either way.
pub struct Engine<'a> {
    pub platform: &'a dyn Platform,
    pub msg: Messages,
    pub actor: Actor<'a>,
    /// Sources seen to exist this run (they are the host's, shared by the jails).
    sources: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
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

/// One mount this run made: enough to take it down again.
#[derive(Clone, Debug)]
pub struct Made {
    pub layer: String,
    pub target: PathBuf,
}

/// While a run mounts: what each mount pinned, to take it back if a later one fails.
type Pinned = Vec<(Made, Option<Mounted>)>;

/// Where a stack's actions happen.
fn at<'p>(plan: &'p JailPlan, s: &'p Stack) -> At<'p> {
    At {
        jail: &plan.jail,
        root: &plan.root,
        layer: &s.layer,
    }
}

impl<'a> Engine<'a> {
    pub fn new(platform: &'a dyn Platform, msg: Messages, sink: Box<dyn Sink + 'a>) -> Engine<'a> {
        Engine {
            platform,
            msg,
            actor: Actor::new(sink),
            sources: Default::default(),
        }
    }

    /// Mount what is missing of every stack, in order. On failure, everything this
    /// call mounted is unmounted again before the error is returned.
    pub fn mount_jail(&self, plan: &JailPlan) -> Result<Vec<Made>> {
        let mut made: Pinned = Vec::new();
        let r = self.mount_all(plan, &mut made);
        self.platform.release();
        if r.is_ok() {
            // Dropping the descriptors: they would keep the mounts busy.
            return r.map(|()| made.into_iter().map(|(m, _)| m).collect());
        }
        for (m, mounted) in made.into_iter().rev() {
            let Some(mounted) = mounted else { continue };
            let at = At {
                jail: &plan.jail,
                root: &plan.root,
                layer: &m.layer,
            };
            if let Err(re) = self.actor.act(&at, Action::Discard(mounted)) {
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
                let mut seen = self.sources.lock().unwrap_or_else(|p| p.into_inner());
                if !seen.contains(source) && source.is_dir() {
                    seen.insert(source.clone());
                }
                if !seen.contains(source) {
                    return Err(fail(
                        ExitCode::NoInput,
                        format!("source {} does not exist", source.display()),
                    ))
                    .context(s.layer.clone());
                }
            }
        }
        let mut table = self.actor.sink.mounts(&plan.root)?;
        for s in &plan.stacks {
            let before = made.len();
            self.mount_stack(plan, s, &table, made)
                .with_context(|| s.layer.clone())?;
            // Whatever was mounted at or below a target this run mounted on is
            // hidden now, so a nested stack sees nothing of its own there.
            if made.len() > before {
                table.hide(&s.target.path);
            }
        }
        Ok(())
    }

    fn mount_stack(
        &self,
        plan: &JailPlan,
        s: &Stack,
        table: &Table,
        made: &mut Pinned,
    ) -> Result<()> {
        let done = self.prepare(plan, s, table)?;
        if done == s.steps.len() {
            self.msg.info(&[&plan.jail, &s.layer], "already mounted");
        }
        // The mount each step must go on top of: what the table shows there now,
        // then what this run mounted.
        let mut below = match (done, s.at(table).last()) {
            (0, _) | (_, None) => None,
            (_, Some(top)) => Some(Below::Table(top)),
        };
        for step in &s.steps[done..] {
            let action = Action::Mount {
                step,
                target: &s.target,
                below: below.take(),
                table: table.lines(),
            };
            let made_here = Made {
                layer: s.layer.clone(),
                target: s.target.path.clone(),
            };
            match self.actor.act(&at(plan, s), action)? {
                Effect::Mounted(m) => {
                    below = Some(Below::Made(m.id.clone()));
                    made.push((made_here, Some(m)));
                }
                _ => made.push((made_here, None)),
            }
        }
        Ok(())
    }

    /// Make the stack's directories and read how much of it is mounted already.
    fn prepare(&self, plan: &JailPlan, s: &Stack, table: &Table) -> Result<usize> {
        if let Some(Step::Union { upper, work, .. }) = s.steps.last() {
            self.ensure_dir(plan, s, upper)?;
            if let Some(w) = work {
                self.ensure_dir(plan, s, w)?;
            }
        }
        self.ensure_dir(plan, s, &s.target)?;
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

    /// Create a directory if missing; one below a jail root with the no-symlink walk
    /// (which, for `-n` too, refuses a link on the way).
    fn ensure_dir(&self, plan: &JailPlan, s: &Stack, p: &Place) -> Result<()> {
        if let Beneath::Missing(_) = p.open(Missing::Report)? {
            self.actor.act(&at(plan, s), Action::Mkdir(p))?;
        }
        Ok(())
    }

    /// Unmount the mounts this run made, newest first. What is gone already (a
    /// jail's stop hook may have run junmount) is not missed: each stack loses at
    /// most the mounts this run added that are still on top.
    pub fn undo(&self, plan: &JailPlan, made: &[Made]) -> Result<()> {
        if made.is_empty() {
            return Ok(());
        }
        let table = self.actor.sink.mounts(&plan.root)?;
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
            self.take_down(plan, s, &table, n, Busy::Fail)
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
        table: &Table,
        n: usize,
        busy: Busy,
    ) -> Result<()> {
        let at_target = s.at(table);
        for (i, top) in at_target.iter().rev().take(n).enumerate() {
            // The top mounts are the plan's steps n-1, n-2, ... 0.
            let action = Action::Unmount {
                step: &s.steps[n - 1 - i],
                target: &s.target,
                top,
                busy,
            };
            self.actor.act(&at(plan, s), action)?;
        }
        Ok(())
    }

    /// Take down every stack, nested layers first, each newest mount first; only
    /// mounts the plan would have made are touched.
    pub fn unmount_jail(&self, plan: &JailPlan, busy: Busy) -> Result<()> {
        if busy == Busy::Fail && self.platform.jail_running(&plan.jail)? {
            return Err(fail(
                ExitCode::TempFail,
                format!(
                    "jail is running (jls -j {} shows it); stop it first, or use -f",
                    plan.jail
                ),
            ));
        }
        let table = self.actor.sink.mounts(&plan.root)?;
        for s in plan.stacks.iter().rev() {
            self.unmount_stack(plan, s, &table, busy)
                .with_context(|| s.layer.clone())?;
        }
        Ok(())
    }

    fn unmount_stack(&self, plan: &JailPlan, s: &Stack, table: &Table, busy: Busy) -> Result<()> {
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
        s.target.open(Missing::Report)?;
        self.take_down(plan, s, table, n, busy)
    }
}
