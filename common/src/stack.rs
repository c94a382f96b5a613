//! Applying and removing a jail's plan: the one place that knows the order of
//! mounts, what counts as already done, and how a failed run is rolled back.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::action::{Below, Discard, MakeDir, MountStep, Recording, Sink, Site, UnmountTop};
use crate::exit::{ExitCode, fail};
use crate::mounts::{Mount, Table};
use crate::plan::{JailPlan, Stack, State, Step};
use crate::platform::Busy;
use crate::platform::{Mounted, Platform};
use crate::report::Messages;
use crate::target::{Beneath, Missing, Place};

/// Runs plans on one platform, handing every change to its sink: done, or
/// printed (`-n`), and recorded either way.
pub(crate) struct Engine<'a> {
    pub(crate) platform: &'a dyn Platform,
    pub(crate) msg: Messages,
    pub(crate) sink: Recording<'a>,
    /// Sources seen to exist this run (they are the host's, shared by the jails).
    sources: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
}

/// A foreign mount on top of a stack this run would take down.
fn on_top(stack: &Stack, top: &Mount, what: &str) -> anyhow::Error {
    fail(
        ExitCode::Unavailable,
        format!(
            "{}: {} is mounted on top of this layer; {what}",
            stack.target.path.display(),
            top.describe()
        ),
    )
}

/// One mount this run made: enough to take it down again.
#[derive(Clone, Debug)]
pub(crate) struct Made {
    pub(crate) layer: String,
    pub(crate) target: PathBuf,
}

/// While a run mounts: what each mount pinned, to take it back if a later one fails.
type Pinned = Vec<(Made, Option<Mounted>)>;

/// Where a stack's actions happen.
fn site<'p>(plan: &'p JailPlan, stack: &'p Stack) -> Site<'p> {
    Site {
        jail: &plan.jail,
        root: &plan.root,
        layer: &stack.layer,
    }
}

impl<'a> Engine<'a> {
    pub(crate) fn new(platform: &'a dyn Platform, msg: Messages, sink: Sink<'a>) -> Engine<'a> {
        Engine {
            platform,
            msg,
            sink: Recording::new(sink),
            sources: Default::default(),
        }
    }

    /// Mount what is missing of every stack, in order. On failure, everything this
    /// call mounted is unmounted again before the error is returned.
    pub(crate) fn mount_jail(&self, plan: &JailPlan) -> Result<Vec<Made>> {
        let mut made: Pinned = Vec::new();
        let result = self.mount_all(plan, &mut made);
        self.platform.release();
        if result.is_ok() {
            // Dropping the descriptors: they would keep the mounts busy.
            return result.map(|()| made.into_iter().map(|(m, _)| m).collect());
        }
        for (made_one, pinned) in made.into_iter().rev() {
            let Some(mounted) = pinned else { continue };
            let site = Site {
                jail: &plan.jail,
                root: &plan.root,
                layer: &made_one.layer,
            };
            if let Err(re) = self.sink.act(&site, Discard(mounted)) {
                self.msg.error(&re.context(format!(
                    "{}: {}: rollback incomplete, mounts left in place",
                    plan.jail, made_one.layer
                )));
            }
        }
        result.map(|()| Vec::new())
    }

    fn mount_all(&self, plan: &JailPlan, made: &mut Pinned) -> Result<()> {
        if !plan.root.is_dir() {
            return Err(fail(
                ExitCode::NoInput,
                format!("jail root {} does not exist", plan.root.display()),
            ));
        }
        for stack in &plan.stacks {
            if let Some(null) = stack.shape.null() {
                let source = &null.source;
                let mut seen = self.sources.lock().unwrap_or_else(|p| p.into_inner());
                if !seen.contains(source) && source.is_dir() {
                    seen.insert(source.clone());
                }
                if !seen.contains(source) {
                    return Err(fail(
                        ExitCode::NoInput,
                        format!("source {} does not exist", source.display()),
                    ))
                    .context(stack.layer.clone());
                }
            }
        }
        let mut table = self.sink.mounts(&plan.root)?;
        for stack in &plan.stacks {
            let before = made.len();
            self.mount_stack(plan, stack, &table, made)
                .with_context(|| stack.layer.clone())?;
            // Whatever was mounted at or below a target this run mounted on is
            // hidden now, so a nested stack sees nothing of its own there.
            if made.len() > before {
                table.hide(&stack.target.path);
            }
        }
        Ok(())
    }

    fn mount_stack(
        &self,
        plan: &JailPlan,
        stack: &Stack,
        table: &Table,
        made: &mut Pinned,
    ) -> Result<()> {
        let done = self.prepare(plan, stack, table)?;
        if done == stack.shape.steps().len() {
            self.msg
                .info(&[&plan.jail, &stack.layer], "already mounted");
        }
        // The mount each step must go on top of: what the table shows there now,
        // then what this run mounted.
        let mut below = match (done, stack.at(table).last()) {
            (0, _) | (_, None) => None,
            (_, Some(top)) => Some(Below::Table(top)),
        };
        for step in stack.shape.steps().skip(done) {
            if let Step::Union(union) = step {
                self.warn_of_upper(plan, stack, &union.upper, table);
            }
            let action = MountStep {
                step,
                target: &stack.target,
                below: below.take(),
            };
            let made_here = Made {
                layer: stack.layer.clone(),
                target: stack.target.path.clone(),
            };
            let mounted = self.sink.act(&site(plan, stack), action)?;
            if let Some(top) = &mounted {
                below = Some(Below::Made(top.id.clone()));
            }
            made.push((made_here, mounted));
        }
        Ok(())
    }

    /// The platform's warning about an upper dir the union is about to use (on
    /// FreeBSD, an upper on ZFS); only when the mount is made, not for `-n`.
    fn warn_of_upper(&self, plan: &JailPlan, stack: &Stack, upper: &Place, table: &Table) {
        if !self.sink.performs() {
            return;
        }
        let warning = self
            .platform
            .upper_warning(&upper.path, &stack.target.path, table.lines());
        if let Some(text) = warning {
            self.msg.warn(&[&plan.jail, &stack.layer], &text);
        }
    }

    /// Make the stack's directories and read how much of it is mounted already.
    fn prepare(&self, plan: &JailPlan, stack: &Stack, table: &Table) -> Result<usize> {
        if let Some(union) = stack.shape.union() {
            self.ensure_dir(plan, stack, &union.upper)?;
            if let Some(work) = &union.work {
                self.ensure_dir(plan, stack, work)?;
            }
        }
        self.ensure_dir(plan, stack, &stack.target)?;
        match stack.state(table, self.platform) {
            State::Mounted(mounted) => Ok(mounted),
            State::Foreign { top, .. } => Err(fail(
                ExitCode::Unavailable,
                format!(
                    "{}: {} is mounted there, not as planned; not stacking on it (junmount it first)",
                    stack.target.path.display(),
                    top.describe()
                ),
            )),
        }
    }

    /// Create a directory if missing; one below a jail root with the no-symlink walk
    /// (which, for `-n` too, refuses a link on the way).
    fn ensure_dir(&self, plan: &JailPlan, stack: &Stack, place: &Place) -> Result<()> {
        if let Beneath::Missing(_) = place.open(Missing::Report)? {
            self.sink.act(&site(plan, stack), MakeDir(place))?;
        }
        Ok(())
    }

    /// Unmount the mounts this run made, newest first. What is gone already (a
    /// jail's stop hook may have run junmount) is not missed: each stack loses at
    /// most the mounts this run added that are still on top.
    pub(crate) fn undo(&self, plan: &JailPlan, made: &[Made]) -> Result<()> {
        if made.is_empty() {
            return Ok(());
        }
        let table = self.sink.mounts(&plan.root)?;
        for stack in plan.stacks.iter().rev() {
            let ours = made
                .iter()
                .filter(|m| m.target == stack.target.path)
                .count();
            if ours == 0 {
                continue;
            }
            let count = match stack.state(&table, self.platform) {
                State::Mounted(mounted) => mounted.min(ours),
                State::Foreign { top, .. } => {
                    return Err(on_top(stack, &top, "left alone")).context(stack.layer.clone());
                }
            };
            self.take_down(plan, stack, &table, count, Busy::Fail, &mut 0)
                .with_context(|| stack.layer.clone())?;
        }
        Ok(())
    }

    /// Unmount the top `count` mounts at the stack's target, each one checked to be the
    /// table's through a descriptor opened beneath the root. `taken` counts the
    /// mounts removed, also when a later one fails.
    fn take_down(
        &self,
        plan: &JailPlan,
        stack: &Stack,
        table: &Table,
        count: usize,
        busy: Busy,
        taken: &mut usize,
    ) -> Result<()> {
        // The top count mounts are the plan's bottom count steps, newest on top.
        let tops = stack.at(table).into_iter().rev().take(count);
        let steps = stack.shape.steps().take(count).rev();
        for (top, step) in tops.zip(steps) {
            let action = UnmountTop {
                step,
                target: &stack.target,
                top,
                busy,
            };
            self.sink.act(&site(plan, stack), action)?;
            *taken += 1;
        }
        Ok(())
    }

    /// Take down every stack, nested layers first, each newest mount first; only
    /// mounts the plan would have made are touched. All or nothing: when a target
    /// it would unmount is held (and not `-f`), nothing is unmounted; when an
    /// unmount fails busy all the same (a process came in since), what this call
    /// took down is mounted again.
    pub(crate) fn unmount_jail(&self, plan: &JailPlan, busy: Busy) -> Result<()> {
        if busy == Busy::Fail && self.platform.jail_running(&plan.jail)? {
            return Err(fail(
                ExitCode::TempFail,
                format!(
                    "jail is running (jls -j {} shows it); stop it first, or use -f",
                    plan.jail
                ),
            ));
        }
        let table = self.sink.mounts(&plan.root)?;
        // What each stack loses, decided before anything changes.
        let mut work: Vec<(&Stack, usize)> = Vec::new();
        for stack in plan.stacks.iter().rev() {
            let count = self
                .to_take_down(plan, stack, &table)
                .with_context(|| stack.layer.clone())?;
            if count > 0 {
                work.push((stack, count));
            }
        }
        if busy == Busy::Fail {
            // A jail stopped a moment ago may have processes still exiting.
            crate::platform::settle(self.platform, &plan.jail, || {
                self.refuse_if_held(plan, &work)
            })?;
        }
        let mut taken: Vec<(&Stack, usize)> = Vec::new();
        for &(stack, count) in &work {
            let mut taken_here = 0;
            let result = self.take_down(plan, stack, &table, count, busy, &mut taken_here);
            if taken_here > 0 {
                taken.push((stack, count));
            }
            if let Err(err) = result {
                let err = err.context(stack.layer.clone());
                return Err(self.put_back(plan, &taken, err));
            }
        }
        Ok(())
    }

    /// How many mounts of the stack to take down; a foreign mount is reported.
    fn to_take_down(&self, plan: &JailPlan, stack: &Stack, table: &Table) -> Result<usize> {
        let mounted = match stack.state(table, self.platform) {
            State::Mounted(mounted) => mounted,
            State::Foreign { top, ours: false } => {
                self.msg.warn(
                    &[&plan.jail, &stack.layer],
                    &format!(
                        "{}: {} is mounted there, not by jlayers; left alone",
                        stack.target.path.display(),
                        top.describe()
                    ),
                );
                return Ok(0);
            }
            State::Foreign { top, ours: true } => {
                return Err(on_top(stack, &top, "left alone (unmount it first)"));
            }
        };
        if mounted == 0 {
            self.msg.info(&[&plan.jail, &stack.layer], "not mounted");
            return Ok(0);
        }
        // Same rule as for mounting: no symlink on the way, even for -n.
        stack.target.open(Missing::Report)?;
        Ok(mounted)
    }

    /// Refuse the jail (75), naming every holder, when any target to unmount is
    /// held. Only the mounts the table shows are looked at (not `-n`'s ghosts).
    fn refuse_if_held(&self, plan: &JailPlan, work: &[(&Stack, usize)]) -> Result<()> {
        let targets: Vec<&Path> = work.iter().map(|(s, _)| s.target.path.as_path()).collect();
        let found = self.platform.holders_of(&targets);
        let held: Vec<String> = work
            .iter()
            .zip(&found)
            .filter(|(_, h)| !h.is_empty())
            .map(|((stack, _), holders)| {
                let named: Vec<String> = holders
                    .iter()
                    .map(|holder| holder.describe(&plan.root, &plan.jail))
                    .collect();
                format!(
                    "{}: {}: busy: held by {}",
                    stack.layer,
                    stack.target.path.display(),
                    named.join(", ")
                )
            })
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        Err(fail(
            ExitCode::TempFail,
            format!("{}; nothing unmounted", held.join("; ")),
        ))
    }

    /// After an unmount failed midway: mount again what this run took down of the
    /// jail (each stack as far as it was mounted), and say so in the error.
    fn put_back(
        &self,
        plan: &JailPlan,
        taken: &[(&Stack, usize)],
        err: anyhow::Error,
    ) -> anyhow::Error {
        if taken.is_empty() {
            return err.context("nothing unmounted");
        }
        let code = crate::exit::code_of(&err);
        // In mount order, each stack cut to the mounts it had.
        let again = JailPlan {
            jail: plan.jail.clone(),
            root: plan.root.clone(),
            stacks: plan
                .stacks
                .iter()
                .filter_map(|stack| {
                    let &(_, count) = taken.iter().find(|(t, _)| std::ptr::eq(*t, stack))?;
                    Some(Stack {
                        shape: stack.shape.cut(count),
                        ..stack.clone()
                    })
                })
                .collect(),
        };
        let layers: Vec<&str> = again.stacks.iter().map(|s| s.layer.as_str()).collect();
        let layers = layers.join(", ");
        match self.mount_jail(&again) {
            Ok(_) => fail(
                code,
                format!("{err:#}; mounted again what this run took down ({layers})"),
            ),
            Err(re) => fail(
                code,
                format!(
                    "{err:#}; mounting again what this run took down ({layers}) failed: {re:#}"
                ),
            ),
        }
    }
}
