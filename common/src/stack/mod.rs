//! Applying and removing a jail's plan: the one place that knows the order of
//! mounts, what counts as already done, and how a failed run is rolled back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::action::{
    Below, MakeDir, MakeOwned, MountStep, Recording, SetAccess, Sink, Site, UnmountTop,
};
use crate::detached;
use crate::exit::Domain;
use crate::guard::{Access, Seen, open_above, open_above_warning, warning};
use crate::mounts::{Mount, MountsAt, Table};
use crate::plan::{JailPlan, LayerPlan, Stack, State};
use crate::platform::Busy;
use crate::platform::Platform;
use crate::prune::{Rules, Tally};
use crate::report::Messages;
use crate::step::Step;
use crate::target::{Beneath, Missing, Place};
use crate::upper::UpperDir;

mod error;
mod undo;

pub(crate) use error::{StackError, foreign_advice};

use undo::Made;
pub(crate) use undo::{Entry, Undo, first_error};

/// Runs plans on one platform, handing every change to its sink: done, or
/// printed (`-n`), and recorded either way.
pub(crate) struct Engine<'a> {
    pub(crate) platform: &'a dyn Platform,
    pub(crate) msg: Messages,
    pub(crate) sink: Recording<'a>,
    /// Sources seen to exist this run (they are the host's, shared by the jails).
    sources: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    /// Where the jails' locks are, and the notes of uppers a forced unmount left
    /// in use (none: no notes kept or read).
    lock_dir: Option<&'a Path>,
    /// Dirs around the uppers warned of this run: once each (upper_root is every
    /// jail's).
    warned: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    /// Dirs around the uppers made or set right this run (or, `-n`, printed so):
    /// not looked at again.
    settled: std::sync::Mutex<HashMap<PathBuf, Users>>,
    /// Held shared while a jail makes or takes dirs it checks in `settled`, and
    /// alone while a failed jail takes back the dirs it made: a dir another jail
    /// relies on is never taken from under it.
    dirs: std::sync::RwLock<()>,
}

/// A foreign mount on top of a stack this run would take down.
fn on_top(stack: &Stack, top: &Mount) -> anyhow::Error {
    Domain::error(StackError::OnTop {
        target: stack.target.path.clone(),
        top: top.describe(),
    })
}

/// Who relies on a settled dir: the jail that settled it, and whether another
/// has since (all a failed jail asks: may it take the dir back). Not a set of
/// names: upper_root is every jail's, and a run may have thousands.
struct Users {
    first: String,
    shared: bool,
}

impl Users {
    fn add(&mut self, jail: &str) {
        self.shared |= self.first != jail;
    }
}

/// Where a stack's actions happen.
fn site<'p>(plan: &'p JailPlan, stack: &'p Stack) -> Site<'p> {
    Site::of_layer(&plan.jail, &plan.root, &stack.layer)
}

impl<'a> Engine<'a> {
    pub(crate) fn new(platform: &'a dyn Platform, msg: Messages, sink: Sink<'a>) -> Engine<'a> {
        Engine {
            platform,
            msg,
            sink: Recording::new(sink),
            sources: Default::default(),
            lock_dir: None,
            warned: Default::default(),
            settled: Default::default(),
            dirs: Default::default(),
        }
    }

    /// Keep and heed the notes of uppers `junmount -f` left in use, in `dir`.
    pub(crate) fn with_lock_dir(mut self, dir: &'a Path) -> Engine<'a> {
        self.lock_dir = Some(dir);
        self
    }

    /// Refuse (75) the stacks to be mounted whose upper a union that a forced
    /// unmount detached still uses, naming who uses it.
    fn refuse_live_uppers(&self, plan: &JailPlan, table: &Table) -> Result<()> {
        let Some(dir) = self.lock_dir else {
            return Ok(());
        };
        let site = Site::of_jail(&plan.jail, &plan.root);
        let live = detached::live(dir, &plan.jail, self.platform, &self.sink, &site)?;
        let refused: Vec<String> = plan
            .stacks()
            .filter(|stack| stack.shape.union().is_some())
            .filter(|stack| {
                stack.state(table, self.platform) != State::Mounted(stack.shape.steps().len())
            })
            .filter_map(|stack| {
                let found = live.iter().find(|l| l.note.layer == stack.layer)?;
                Some(format!(
                    "{}: {}",
                    stack.layer,
                    found.describe(&plan.root, &plan.jail)
                ))
            })
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        Err(Domain::error(StackError::LiveUppers(refused)))
    }

    /// Mount what is missing of every stack, in order; what it did, to be taken
    /// back ([`Undo::settle`]d: the mounts). On failure, everything this call
    /// did is taken back before the error is returned.
    pub(crate) fn mount_jail<'p>(&self, plan: &JailPlan) -> Result<Undo<'p>> {
        let mut undo = Undo::default();
        let result = self.mount_all(plan, &mut undo);
        self.platform.release();
        if result.is_ok() {
            return Ok(undo.settle());
        }
        for err in self.unwind(plan, undo) {
            let err = err.context(format!(
                "{}: rollback incomplete, mounts left in place",
                plan.jail
            ));
            self.msg.error(&err);
        }
        result.map(|()| Undo::default())
    }

    fn mount_all(&self, plan: &JailPlan, made: &mut Undo) -> Result<()> {
        if !plan.root.is_dir() {
            return Err(Domain::error(StackError::NoRoot(plan.root.clone())));
        }
        for stack in plan.stacks() {
            if let Some(null) = stack.shape.null() {
                let source = &null.source;
                let mut seen = self.sources.lock().unwrap_or_else(|p| p.into_inner());
                if !seen.contains(source) && source.is_dir() {
                    seen.insert(source.clone());
                }
                if !seen.contains(source) {
                    return Err(Domain::error(StackError::NoSource(source.clone())))
                        .context(stack.layer.clone());
                }
            }
        }
        let mut table = self.sink.mounts(&plan.root)?;
        self.refuse_live_uppers(plan, &table)?;
        for stack in plan.stacks() {
            let before = made.mounts().count();
            self.mount_stack(plan, stack, &table, made)
                .with_context(|| stack.layer.clone())?;
            // Whatever was mounted at or below a target this run mounted on is
            // hidden now, so a nested stack sees nothing of its own there.
            if made.mounts().count() > before {
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
        made: &mut Undo,
    ) -> Result<()> {
        let done = self.prepare(plan, stack, table, made)?;
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
            made.push(Entry::Mount(made_here, mounted));
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
    fn prepare(
        &self,
        plan: &JailPlan,
        stack: &Stack,
        table: &Table,
        undo: &mut Undo,
    ) -> Result<usize> {
        let _dirs = self.dirs.read().unwrap_or_else(|p| p.into_inner());
        // The dirs around the upper first, so that none is made open on the way
        // (a tmpfs upper's stack owns its target: the tmpfs's root once mounted).
        for (place, access) in &stack.guards.owned {
            self.guard(plan, stack, place, *access, undo)?;
        }
        if let Some(upper) = &stack.guards.checked {
            self.check_above(plan, stack, upper);
        }
        if let Some(union) = stack.shape.union() {
            self.ensure_dir(plan, stack, &union.upper, undo)?;
        }
        self.ensure_dir(plan, stack, &stack.target, undo)?;
        match stack.state(table, self.platform) {
            State::Mounted(mounted) => Ok(mounted),
            State::Foreign { top, .. } => Err(Domain::error(StackError::Foreign {
                target: stack.target.path.clone(),
                top: top.describe(),
            })),
        }
    }

    /// A dir jlayers owns around an upper dir: made closed if missing, set back to
    /// the jail's access if not so (said when it was more open).
    fn guard(
        &self,
        plan: &JailPlan,
        stack: &Stack,
        place: &Place,
        access: Access,
        undo: &mut Undo,
    ) -> Result<()> {
        if self.settled(&place.path, &plan.jail) {
            return Ok(());
        }
        let fd = match place.open(Missing::Report)? {
            Beneath::Dir(fd) => fd,
            Beneath::Missing(_) => {
                let made = self
                    .sink
                    .act(&site(plan, stack), MakeOwned(place, access))?;
                let made = made.into_iter().flatten();
                for dir in made {
                    undo.push(Entry::Dir(stack.layer.clone(), dir));
                }
                self.settle(&place.path, &plan.jail);
                return Ok(());
            }
        };
        let seen = Seen::look(fd, &place.path)?;
        if !seen.differs(access) {
            self.settle(&place.path, &plan.jail);
            return Ok(());
        }
        if seen.too_open(access) && self.first_warning(&place.path) {
            let text = warning(
                &place.path,
                &seen,
                access,
                self.msg.tool,
                self.sink.performs(),
            );
            self.msg.warn(&[&plan.jail, &stack.layer], &text);
        }
        self.sink
            .act(&site(plan, stack), SetAccess(place, &seen, access))?;
        self.settle(&place.path, &plan.jail);
        Ok(())
    }

    /// Whether `path` was made or set right this run; `jail` relies on it now.
    fn settled(&self, path: &Path, jail: &str) -> bool {
        let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        match settled.get_mut(path) {
            Some(users) => {
                users.add(jail);
                true
            }
            None => false,
        }
    }

    fn settle(&self, path: &Path, jail: &str) {
        let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        (settled.entry(path.to_path_buf()))
            .and_modify(|users| users.add(jail))
            .or_insert_with(|| Users {
                first: jail.to_string(),
                shared: false,
            });
    }

    /// Whether `jail`, failing, may take back the dir `path` it made: no other
    /// jail relies on it (then it is no longer settled: a jail after it makes it again).
    fn release_dir(&self, path: &Path, jail: &str) -> bool {
        let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        match settled.get(path) {
            Some(users) if users.shared || users.first != jail => false,
            _ => {
                settled.remove(path);
                true
            }
        }
    }

    /// A host upper outside upper_root: warn when no dir above it keeps other
    /// users out (those are the admin's: never changed).
    fn check_above(&self, plan: &JailPlan, stack: &Stack, upper: &Path) {
        let Some(parent) = open_above(upper) else {
            return;
        };
        if self.first_warning(&parent) {
            let text = open_above_warning(upper, &parent);
            self.msg.warn(&[&plan.jail, &stack.layer], &text);
        }
    }

    /// Whether `path` was not warned of yet this run (and now is).
    fn first_warning(&self, path: &Path) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        warned.insert(path.to_path_buf())
    }

    /// Create a directory if missing; one below a jail root with the no-symlink walk
    /// (which, for `-n` too, refuses a link on the way).
    fn ensure_dir(
        &self,
        plan: &JailPlan,
        stack: &Stack,
        place: &Place,
        undo: &mut Undo,
    ) -> Result<()> {
        // A tmpfs upper's mount point is one of the dirs around its upper.
        if self.settled(&place.path, &plan.jail) {
            return Ok(());
        }
        if let Beneath::Missing(_) = place.open(Missing::Report)? {
            let made = self.sink.act(&site(plan, stack), MakeDir(place))?;
            let made = made.into_iter().flatten();
            for dir in made {
                undo.push(Entry::Dir(stack.layer.clone(), dir));
            }
        }
        Ok(())
    }

    /// Unmount the mounts a run made, newest first. What is gone already (a
    /// jail's stop hook may have run junmount) is not missed: each stack loses at
    /// most the mounts the run added that are still on top.
    fn take_back(&self, plan: &JailPlan, made: &[Made]) -> Result<()> {
        if made.is_empty() {
            return Ok(());
        }
        let table = self.sink.mounts(&plan.root)?;
        for stack in plan.stacks().rev() {
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
                    return Err(on_top(stack, &top)).context(stack.layer.clone());
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
        // A tmpfs upper's content goes with it: counted first, told once gone.
        let content = (stack.is_upper_tmpfs() && count > 0)
            .then(|| self.tmpfs_content(plan, stack))
            .flatten();
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
        if let Some(content) = content {
            self.tell_discarded(plan, stack, content);
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
            return Err(Domain::error(StackError::Running(plan.jail.clone())));
        }
        self.take_down_jail(plan, busy).map(drop)
    }

    /// [`Engine::unmount_jail`] without the running jail's check (the caller
    /// stopped it): what it took down, each stack with its count of mounts, for
    /// [`Engine::mount_again`].
    pub(crate) fn take_down_jail<'p>(
        &self,
        plan: &'p JailPlan,
        busy: Busy,
    ) -> Result<Vec<(&'p Stack, usize)>> {
        let table = self.sink.mounts(&plan.root)?;
        // What each stack loses, decided before anything changes.
        let mut work: Vec<(&Stack, usize)> = Vec::new();
        for stack in plan.stacks().rev() {
            let count = self
                .to_take_down(plan, stack, &table)
                .with_context(|| stack.layer.clone())?;
            if count > 0 {
                work.push((stack, count));
            }
        }
        if busy == Busy::Fail {
            self.refuse_if_covered(&work, &table)?;
            // A jail stopped a moment ago may have processes still exiting.
            crate::platform::settle(self.platform, &plan.jail, || {
                self.refuse_if_held(plan, &work)
            })?;
        }
        // -f: who holds what is forced off, found before it is out of reach.
        let held = match busy {
            Busy::Force if self.sink.performs() => {
                let targets: Vec<&Path> =
                    work.iter().map(|(s, _)| s.target.path.as_path()).collect();
                self.platform.holders_of(&targets)
            }
            _ => Vec::new(),
        };
        let mut taken: Vec<(&Stack, usize)> = Vec::new();
        for (at, &(stack, count)) in work.iter().enumerate() {
            let mut taken_here = 0;
            // What -f is about to take off, as the table shows it (top first).
            let tops: Vec<Mount> = match held.get(at) {
                Some(holders) if !holders.is_empty() => {
                    let at_target = stack.at(&table).into_iter().rev().take(count);
                    at_target.cloned().collect()
                }
                _ => Vec::new(),
            };
            let result = self.take_down(plan, stack, &table, count, busy, &mut taken_here);
            let noted = match held.get(at).filter(|h| !h.is_empty()) {
                Some(holders) => self.forced(plan, stack, &tops[..taken_here], holders),
                None => Ok(()),
            };
            if taken_here > 0 {
                taken.push((stack, count));
            }
            if let Err(err) = result {
                let err = err.context(stack.layer.clone());
                return Err(self.put_back(plan, &taken, err));
            }
            noted.with_context(|| stack.layer.clone())?;
        }
        Ok(taken)
    }

    /// How many mounts of the stack to take down; a foreign mount is reported.
    fn to_take_down(&self, plan: &JailPlan, stack: &Stack, table: &Table) -> Result<usize> {
        let mounted = match stack.state(table, self.platform) {
            State::Mounted(mounted) => mounted,
            State::Foreign { top, ours: false } => {
                self.msg.warn(
                    &[&plan.jail, &stack.layer],
                    &format!(
                        "{}: {} is mounted there, not by jlayers; left alone ({})",
                        stack.target.path.display(),
                        top.describe(),
                        foreign_advice(&stack.target.path)
                    ),
                );
                return Ok(0);
            }
            State::Foreign { top, ours: true } => {
                return Err(on_top(stack, &top));
            }
        };
        if mounted == 0 {
            if let Some(moved) = stack.union_elsewhere(table, self.platform) {
                return Err(Domain::error(StackError::Moved {
                    target: stack.target.path.clone(),
                    moved: moved.target.clone(),
                }));
            }
            self.msg.info(&[&plan.jail, &stack.layer], "not mounted");
            return Ok(0);
        }
        // Same rule as for mounting: no symlink on the way, even for -n.
        stack.target.open(Missing::Report)?;
        Ok(mounted)
    }

    /// After `-f` took `tops` off a stack while `holders` used it: name them
    /// (also with -q), and note each union left alive by them.
    fn forced(
        &self,
        plan: &JailPlan,
        stack: &Stack,
        tops: &[Mount],
        holders: &[crate::platform::Holder],
    ) -> Result<()> {
        let named: Vec<String> = holders
            .iter()
            .map(|h| h.describe(&plan.root, &plan.jail))
            .collect();
        // A tmpfs upper goes with its tmpfs: the next jmount makes a new one.
        let tmpfs_upper = plan.layer_of(stack).is_some_and(|l| l.tmpfs.is_some());
        let notes: Vec<detached::Detached> = tops
            .iter()
            .filter(|_| !tmpfs_upper)
            .filter_map(|top| self.platform.detachable(top))
            .filter_map(|(dev, mnt)| {
                let upper = stack.shape.union()?.upper.path.to_string_lossy();
                Some(detached::Detached {
                    layer: stack.layer.clone(),
                    upper: upper.into_owned(),
                    dev,
                    mnt,
                    boot: detached::boot_id(),
                })
            })
            .collect();
        let mut text = format!(
            "{}: forced off while held by {}",
            stack.target.path.display(),
            named.join(", ")
        );
        if let Some(note) = notes.first() {
            text.push_str(&format!(
                "; the detached union still uses {} until they exit (jmount and jclean refuse it meanwhile)",
                note.upper
            ));
        }
        self.msg.problem(&[&plan.jail, &stack.layer], &text);
        match self.lock_dir {
            Some(dir) => detached::note(dir, &plan.jail, notes),
            None => Ok(()),
        }
    }

    /// Refuse the jail (75) when a mount that this run leaves in place lies below
    /// a target it would unmount (a tmpfs an administrator put in the jail's
    /// view): that mount keeps the target busy, with no process to name.
    fn refuse_if_covered(&self, work: &[(&Stack, usize)], table: &Table) -> Result<()> {
        // The mounts at `point` that stay: all but those this run takes off.
        let staying = |point: &Path| {
            let at = crate::mounts::MountsAt::mounts_at(table, point);
            let going: usize = (work.iter())
                .filter(|(s, _)| s.target.path == point)
                .map(|(_, count)| count)
                .sum();
            let stay = at.len().saturating_sub(going);
            at.into_iter().take(stay).collect::<Vec<_>>()
        };
        let mut covered: Vec<String> = Vec::new();
        for (stack, _) in work {
            let target = &stack.target.path;
            // Looked up in the table's sorted mount points, not by a scan of it.
            let mut points: Vec<&Path> = Vec::new();
            for m in table.below(target) {
                let p = m.target.as_path();
                if !points.contains(&p) {
                    points.push(p);
                }
            }
            for point in points {
                for m in staying(point) {
                    covered.push(format!(
                        "{}: {}: busy: {} is mounted below it, on {} (to take it off: umount {})",
                        stack.layer,
                        target.display(),
                        m.describe(),
                        point.display(),
                        point.display()
                    ));
                }
            }
        }
        if covered.is_empty() {
            return Ok(());
        }
        Err(Domain::error(StackError::Held(covered)))
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
        Err(Domain::error(StackError::Held(held)))
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
        // In mount order, as they go back.
        let layers: Vec<&str> = plan
            .stacks()
            .filter(|stack| taken.iter().any(|(t, _)| std::ptr::eq(*t, *stack)))
            .map(|stack| stack.layer.as_str())
            .collect();
        let layers = layers.join(", ");
        let mut undo = Undo::default();
        undo.push(Entry::TakenDown(taken.to_vec()));
        let again = self.unwind(plan, undo).into_iter().next();
        Domain::error(StackError::PutBack {
            failed: crate::exit::text(&err),
            code,
            layers,
            // Past the unwind's own "mounting again" context.
            again: again.map(|re| crate::exit::cause_text(&re)),
        })
    }

    /// Mount again what [`Engine::take_down_jail`] took down: in mount order, each
    /// stack cut to the mounts it had.
    pub(crate) fn mount_again(&self, plan: &JailPlan, taken: &[(&Stack, usize)]) -> Result<()> {
        let cut = |stack: &Stack| {
            let &(_, count) = taken.iter().find(|(t, _)| std::ptr::eq(*t, stack))?;
            Some(Stack {
                shape: stack.shape.cut(count),
                ..stack.clone()
            })
        };
        let layers = (plan.layers.iter())
            .filter_map(|layer| {
                let tmpfs = layer.tmpfs.as_ref().and_then(cut);
                match (tmpfs, cut(&layer.stack)) {
                    (tmpfs, Some(stack)) => Some(LayerPlan { tmpfs, stack }),
                    // Its tmpfs alone was down: that stack alone goes back (only
                    // the order of the stacks counts to mount_jail).
                    (Some(tmpfs), None) => Some(LayerPlan {
                        tmpfs: None,
                        stack: tmpfs,
                    }),
                    (None, None) => None,
                }
            })
            .collect();
        let again = JailPlan {
            jail: plan.jail.clone(),
            root: plan.root.clone(),
            layers,
        };
        self.mount_jail(&again).map(drop)
    }

    /// What a tmpfs upper holds, counted as jclean -n counts (files, allocated
    /// bytes) before its unmount throws it away; `None` when it cannot be read.
    fn tmpfs_content(&self, plan: &JailPlan, stack: &Stack) -> Option<(u64, u64)> {
        let dir = UpperDir::open(&stack.target).ok()??;
        let tally = Tally::default();
        let rules = Rules {
            keep: None,
            older_than: None,
        };
        let count_only = Sink::new(self.platform, self.msg, true);
        dir.empty(&[], &rules, &tally, &count_only, &site(plan, stack))
            .ok()?;
        let files = tally.files.load(std::sync::atomic::Ordering::Relaxed);
        let bytes = tally.bytes.load(std::sync::atomic::Ordering::Relaxed);
        Some((files, bytes))
    }

    /// Say what a tmpfs upper held as it goes (-n: would go), and record it for
    /// the layer's JSON object.
    fn tell_discarded(&self, plan: &JailPlan, stack: &Stack, (files, bytes): (u64, u64)) {
        let verb = if self.sink.performs() {
            "discarded"
        } else {
            "would discard"
        };
        let what = format!(
            "tmpfs upper {}: {verb} {files} files, {}",
            stack.target.path.display(),
            crate::report::size(bytes, false)
        );
        let scope = [plan.jail.as_str(), stack.layer.as_str()];
        // An empty one is no news but with -v.
        if files > 0 {
            self.msg.warn(&scope, &what);
        } else {
            self.msg.info(&scope, &what);
        }
        self.sink
            .note(&stack.layer, crate::action::Did::Discard { files, bytes });
    }
}

/// A stack's state is read with the backend's notion of which mount a step makes.
impl Stack {
    /// This stack's union mounted anywhere in `table` but at its target (its
    /// upper dir is its own: a union of it is this stack's wherever it shows).
    /// Looked up by its upper dir, the union's source: no scan of the table.
    pub(crate) fn union_elsewhere<'t>(
        &self,
        table: &'t Table,
        platform: &dyn Platform,
    ) -> Option<&'t Mount> {
        let upper = &self.shape.union()?.upper.path;
        let union = self.shape.steps().find(|s| matches!(s, Step::Union(_)))?;
        table
            .of_source(upper.as_os_str())
            .find(|m| m.target != self.target.path && platform.matches(union, m))
    }

    /// Read this stack's state from the table: the plan's steps must sit on top of
    /// the target's mounts as a consistent prefix, bottom step first.
    pub(crate) fn state<T: MountsAt + ?Sized>(&self, table: &T, platform: &dyn Platform) -> State {
        let at = self.at(table);
        for count in (1..=self.shape.steps().len().min(at.len())).rev() {
            let top = &at[at.len() - count..];
            if self
                .shape
                .steps()
                .zip(top)
                .all(|(step, m)| platform.matches(step, m))
            {
                return State::Mounted(count);
            }
        }
        match at.last() {
            None => State::Mounted(0),
            Some(top) => State::Foreign {
                top: (*top).clone(),
                ours: at
                    .iter()
                    .any(|m| self.shape.steps().any(|step| platform.matches(step, m))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{ExitCode, code_of};
    use crate::platform::fake::{Call, Fake, MSG, Scene, Script};

    fn engine<'a>(fake: &'a Fake, dry: bool) -> Engine<'a> {
        Engine::new(fake, MSG, Sink::new(fake, MSG, dry))
    }

    /// A union layer `a`, a read-only `b`, a union `c`: five mounts, in order
    /// a null, a union, b null, c null, c union.
    fn scene() -> Scene {
        Scene::new(&[("a", true), ("b", false), ("c", true)])
    }

    /// The (kind, layer) of each mount the plan makes, in mount order.
    const ORDER: [(&str, &str); 5] = [
        ("null", "a"),
        ("union", "a"),
        ("null", "b"),
        ("null", "c"),
        ("union", "c"),
    ];

    fn mount_call(scene: &Scene, (kind, layer): (&str, &str), made: Option<u64>) -> Call {
        let kind = if kind == "null" { "null" } else { "union" };
        let target = scene.target(layer);
        Call::Mount { kind, target, made }
    }

    #[test]
    fn mounts_every_step_in_order() {
        let scene = scene();
        let fake = Fake::default();
        let made = engine(&fake, false).mount_jail(&scene.plan).unwrap();
        assert_eq!(made.mounts().count(), 5);
        let want: Vec<Call> = (ORDER.iter().enumerate())
            .map(|(i, &step)| mount_call(&scene, step, Some(i as u64 + 1)))
            .collect();
        assert_eq!(fake.take_calls(), want);
        // Again: all mounted already, nothing done.
        assert!(
            engine(&fake, false)
                .mount_jail(&scene.plan)
                .unwrap()
                .mounts()
                .next()
                .is_none()
        );
        assert_eq!(fake.take_calls(), []);
    }

    /// A failure at the Nth mount takes back exactly the N-1 made before it,
    /// newest first, and leaves the table as it was.
    #[test]
    fn a_failed_step_rolls_back_the_ones_made_in_reverse() {
        for n in 1..=ORDER.len() {
            let scene = scene();
            let script = Script {
                refuse_mount: Some(n),
                ..Script::default()
            };
            let fake = Fake::new(script);
            let err = engine(&fake, false).mount_jail(&scene.plan).unwrap_err();
            assert_eq!(code_of(&err), ExitCode::NoPerm, "{err:#}");
            let mut want: Vec<Call> = (ORDER[..n - 1].iter().enumerate())
                .map(|(i, &step)| mount_call(&scene, step, Some(i as u64 + 1)))
                .collect();
            want.push(mount_call(&scene, ORDER[n - 1], None));
            want.extend((1..n as u64).rev().map(Call::Discard));
            assert_eq!(fake.take_calls(), want, "failure at mount {n}");
            assert_eq!(fake.lines(), [], "failure at mount {n}");
        }
    }

    /// A mount that does not land on its target is taken back, then the run's.
    #[test]
    fn a_mount_that_lands_elsewhere_is_taken_back_and_rolled_back() {
        let scene = scene();
        let script = Script {
            lands_elsewhere: Some((3, scene.dir.join("elsewhere"))),
            ..Script::default()
        };
        let fake = Fake::new(script);
        let err = engine(&fake, false).mount_jail(&scene.plan).unwrap_err();
        assert_eq!(code_of(&err), ExitCode::NoPerm, "{err:#}");
        assert!(format!("{err:#}").contains("the path changed"), "{err:#}");
        let calls = fake.take_calls();
        assert_eq!(calls[2], mount_call(&scene, ORDER[2], None));
        assert_eq!(calls[3..], [Call::Discard(2), Call::Discard(1)]);
        assert_eq!(fake.lines(), []);
    }

    /// A rollback leaves alone what was mounted before the run, and a half-built
    /// stack is completed on top of what the table shows.
    #[test]
    fn rollback_keeps_what_was_there_before() {
        let scene = scene();
        let fake = Fake::new(Script {
            refuse_mount: Some(3),
            ..Script::default()
        });
        let a = &scene.plan.layers[0].stack;
        let first = a.shape.steps().next().unwrap();
        let before = fake.preload(first, &scene.target("a"));
        let err = engine(&fake, false).mount_jail(&scene.plan).unwrap_err();
        assert_eq!(code_of(&err), ExitCode::NoPerm);
        let calls = fake.take_calls();
        // a's union on top of the null found, b's null, c's null refused.
        assert_eq!(calls[0], mount_call(&scene, ORDER[1], Some(before + 1)));
        assert_eq!(
            calls[3..],
            [Call::Discard(before + 2), Call::Discard(before + 1)]
        );
        let kept = (before, "nullfs".to_string(), scene.target("a"));
        assert_eq!(fake.lines(), [kept]);
    }

    /// junmount: nested layers first, each stack's newest mount first.
    #[test]
    fn unmount_takes_down_in_exact_reverse() {
        let scene = scene();
        let fake = Fake::default();
        engine(&fake, false).mount_jail(&scene.plan).unwrap();
        fake.take_calls();
        (engine(&fake, false).unmount_jail(&scene.plan, Busy::Fail)).unwrap();
        let ids: Vec<(u64, PathBuf)> = fake
            .take_calls()
            .into_iter()
            .map(|call| match call {
                Call::Unmount { target, id, .. } => (id, target),
                other => panic!("{other:?}"),
            })
            .collect();
        let want: Vec<(u64, PathBuf)> = (ORDER.iter().enumerate().rev())
            .map(|(i, (_, layer))| (i as u64 + 1, scene.target(layer)))
            .collect();
        assert_eq!(ids, want);
        assert_eq!(fake.lines(), []);
    }

    #[test]
    fn a_running_jail_is_refused_without_force() {
        let scene = scene();
        let fake = Fake::default();
        engine(&fake, false).mount_jail(&scene.plan).unwrap();
        fake.script.lock().unwrap().running = true;
        let err = (engine(&fake, false).unmount_jail(&scene.plan, Busy::Fail)).unwrap_err();
        assert_eq!(code_of(&err), ExitCode::TempFail, "{err:#}");
        assert_eq!(fake.lines().len(), 5);
        (engine(&fake, false).unmount_jail(&scene.plan, Busy::Force)).unwrap();
        assert_eq!(fake.lines(), []);
    }

    /// A held target refuses the jail before anything is unmounted.
    #[test]
    fn a_held_target_unmounts_nothing() {
        let scene = scene();
        let fake = Fake::default();
        engine(&fake, false).mount_jail(&scene.plan).unwrap();
        let lines = fake.lines();
        fake.take_calls();
        fake.script.lock().unwrap().held = vec![scene.target("a")];
        let err = (engine(&fake, false).unmount_jail(&scene.plan, Busy::Fail)).unwrap_err();
        assert_eq!(code_of(&err), ExitCode::TempFail, "{err:#}");
        assert!(
            format!("{err:#}").contains("held by pid 4242 make"),
            "{err:#}"
        );
        assert_eq!(fake.take_calls(), []);
        assert_eq!(fake.lines(), lines);
    }

    /// An unmount that fails busy midway: what this call took down (all of c,
    /// b's null) is mounted again, in mount order, and the error says so.
    #[test]
    fn a_busy_unmount_midway_puts_back_what_was_taken_down() {
        let scene = scene();
        let fake = Fake::default();
        engine(&fake, false).mount_jail(&scene.plan).unwrap();
        let before = fake.shape();
        fake.take_calls();
        fake.script.lock().unwrap().busy_at = vec![scene.target("a")];
        let err = (engine(&fake, false).unmount_jail(&scene.plan, Busy::Fail)).unwrap_err();
        assert_eq!(code_of(&err), ExitCode::TempFail, "{err:#}");
        let text = format!("{err:#}");
        assert!(
            text.contains("mounted again what this run took down (b, c)"),
            "{text}"
        );
        assert_eq!(fake.shape(), before);
        let calls = fake.take_calls();
        let remounts: Vec<&Call> = calls.iter().skip(4).collect();
        let want = [ORDER[2], ORDER[3], ORDER[4]];
        assert_eq!(remounts.len(), want.len(), "{calls:?}");
        for (call, step) in remounts.into_iter().zip(want) {
            let Call::Mount { kind, target, made } = call else {
                panic!("{call:?}")
            };
            assert!(made.is_some());
            assert_eq!((*kind, target), (step.0, &scene.target(step.1)));
        }
    }

    /// jclean --remount: what was taken down is mounted again exactly, each
    /// stack cut to the mounts it had.
    #[test]
    fn take_down_then_mount_again_restores_the_table() {
        let scene = scene();
        let fake = Fake::default();
        // c is mounted only half: its null.
        let c = &scene.plan.layers[2].stack;
        let engine = engine(&fake, false);
        let a_b = JailPlan {
            layers: scene.plan.layers[..2].to_vec(),
            ..scene.plan.clone()
        };
        engine.mount_jail(&a_b).unwrap();
        fake.preload(c.shape.steps().next().unwrap(), &scene.target("c"));
        let before = fake.shape();
        let taken = engine.take_down_jail(&scene.plan, Busy::Fail).unwrap();
        assert_eq!(fake.lines(), []);
        let counts: Vec<(&str, usize)> = taken.iter().map(|(s, n)| (&*s.layer, *n)).collect();
        assert_eq!(counts, [("c", 1), ("b", 1), ("a", 2)]);
        engine.mount_again(&scene.plan, &taken).unwrap();
        assert_eq!(fake.shape(), before);
    }

    /// jupdate's undo: only what its own mount_jail made goes, newest first;
    /// what was mounted before the run stays.
    #[test]
    fn undo_takes_down_only_what_the_run_made() {
        let scene = scene();
        let fake = Fake::default();
        let a_null = scene.plan.layers[0].stack.shape.steps().next().unwrap();
        let found = fake.preload(a_null, &scene.target("a"));
        let engine = engine(&fake, false);
        let made = engine.mount_jail(&scene.plan).unwrap();
        assert_eq!(made.mounts().count(), 4);
        fake.take_calls();
        assert!(engine.unwind(&scene.plan, made).is_empty());
        let unmounted: Vec<u64> = (fake.take_calls().into_iter())
            .map(|call| match call {
                Call::Unmount { id, .. } => id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(unmounted, [found + 4, found + 3, found + 2, found + 1]);
        assert_eq!(fake.lines(), [(found, "nullfs".into(), scene.target("a"))]);
        // Nothing made: nothing undone.
        assert!(engine.unwind(&scene.plan, Undo::default()).is_empty());
        assert_eq!(fake.take_calls(), []);
    }

    /// `-n`: nothing made, every mount printed in order, and the table it
    /// would leave is what the printed unmounts then take down, in reverse.
    #[test]
    fn dry_run_prints_the_planned_table_in_order() {
        let scene = scene();
        let fake = Fake::default();
        let engine = engine(&fake, true);
        assert_eq!(engine.mount_jail(&scene.plan).unwrap().mounts().count(), 5);
        assert!(!scene.target("a").exists(), "-n made a directory");
        let printed: Vec<Call> = (ORDER.iter())
            .map(|&(kind, layer)| Call::PrintMount {
                kind: if kind == "null" { "null" } else { "union" },
                target: scene.target(layer),
            })
            .collect();
        assert_eq!(fake.take_calls(), printed);
        assert_eq!(fake.lines(), []);
        let table = engine.sink.mounts(&scene.plan.root).unwrap();
        let planned: Vec<(&str, &Path)> = scene
            .plan
            .stacks()
            .flat_map(|s| s.at(&table))
            .map(|m| (m.fstype.as_str(), m.target.as_path()))
            .collect();
        let a = scene.target("a");
        let (b, c) = (scene.target("b"), scene.target("c"));
        let want: [(&str, &Path); 5] = [
            ("nullfs", &a),
            ("unionfs", &a),
            ("nullfs", &b),
            ("nullfs", &c),
            ("unionfs", &c),
        ];
        assert_eq!(planned, want);
        // Each stack's dirs (upper, then target) before its mounts.
        let did: Vec<String> = (engine.sink.take().into_iter())
            .map(|change| match change.did {
                crate::action::Did::Mount(kind, _, _) => format!("{} {kind}", change.layer),
                other => format!("{} {other:?}", change.layer),
            })
            .collect();
        let want = [
            "a Mkdir", "a Mkdir", "a null", "a union", "b Mkdir", "b null", "c Mkdir", "c Mkdir",
            "c null", "c union",
        ];
        assert_eq!(did, want);
        // What -n then takes down is what it printed, newest first.
        engine.unmount_jail(&scene.plan, Busy::Fail).unwrap();
        let taken: Vec<Call> = (ORDER.iter().rev())
            .map(|(_, layer)| Call::PrintUnmount(scene.target(layer)))
            .collect();
        assert_eq!(fake.take_calls(), taken);
    }

    /// A union layer `a` whose upper lives in a tmpfs, and a read-only `b`.
    fn tmpfs_scene() -> Scene {
        Scene::new(&[("a", true), ("b", false)]).tmpfs_upper("a")
    }

    /// A tmpfs upper goes on before its layer's stack, and comes off after it.
    #[test]
    fn a_tmpfs_upper_is_mounted_first_and_taken_down_last() {
        let scene = tmpfs_scene();
        let fake = Fake::default();
        engine(&fake, false).mount_jail(&scene.plan).unwrap();
        let kinds: Vec<(&str, PathBuf)> = (fake.take_calls().into_iter())
            .map(|call| match call {
                Call::Mount { kind, target, .. } => (kind, target),
                other => panic!("{other:?}"),
            })
            .collect();
        let (tmpfs, a, b) = (
            scene.tmpfs_target("a"),
            scene.target("a"),
            scene.target("b"),
        );
        let want = [
            ("tmpfs", tmpfs.clone()),
            ("null", a.clone()),
            ("union", a.clone()),
            ("null", b.clone()),
        ];
        assert_eq!(kinds, want);
        (engine(&fake, false).unmount_jail(&scene.plan, Busy::Fail)).unwrap();
        let targets: Vec<PathBuf> = (fake.take_calls().into_iter())
            .map(|call| match call {
                Call::Unmount { target, .. } => target,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(targets, [b, a.clone(), a, tmpfs]);
        assert_eq!(fake.lines(), []);
    }

    /// jclean --remount with a layer's tmpfs mounted but not the layer: the
    /// tmpfs alone comes off, and alone goes back.
    #[test]
    fn a_tmpfs_taken_down_alone_is_mounted_again_alone() {
        let scene = tmpfs_scene();
        let fake = Fake::default();
        let tmpfs = scene.plan.layers[0].tmpfs.as_ref().unwrap();
        let step = tmpfs.shape.steps().next().unwrap();
        std::fs::create_dir_all(scene.tmpfs_target("a")).unwrap();
        fake.preload(step, &scene.tmpfs_target("a"));
        let before = fake.shape();
        let engine = engine(&fake, false);
        let taken = engine.take_down_jail(&scene.plan, Busy::Fail).unwrap();
        assert_eq!(fake.lines(), []);
        let counts: Vec<(&Path, usize)> = (taken.iter())
            .map(|(s, n)| (s.target.path.as_path(), *n))
            .collect();
        assert_eq!(counts, [(scene.tmpfs_target("a").as_path(), 1)]);
        fake.take_calls();
        engine.mount_again(&scene.plan, &taken).unwrap();
        assert_eq!(fake.shape(), before);
        let made = fake.take_calls();
        assert!(
            matches!(&made[..], [Call::Mount { kind: "tmpfs", .. }]),
            "{made:?}"
        );
    }
}
