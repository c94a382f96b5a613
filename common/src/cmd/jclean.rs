//! jclean(8): empty the upper dirs of union layers and report what was freed.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use globset::{Glob, GlobSetBuilder};

use crate::action::{Sink, Site};
use crate::changes::Kind;
use crate::cli::Common;
use crate::config::Jail;
use crate::exit::{Coded, Domain, ExitCode};
use crate::mounts::Table;
use crate::plan::{JailPlan, LayerPlan, Stack, State, plan};
use crate::platform::{Busy, Service};
use crate::prune::{Rules, Tally};
use crate::report::{Messages, Verbosity, emit, path_json, size};
use crate::signals;
use crate::stack::{Engine, Entry, Undo, first_error};
use crate::step::{Null, Union};
use crate::target::Place;
use crate::upper::UpperDir;
use serde_json::json;

use super::{Setup, each_jail, run, thread_pool};

/// Empty the jails' upper dirs and report what was freed.
///
/// Each union layer's upper dir is emptied, so that the jail sees the pristine host
/// tree again (refused, 75, while the layer is mounted). One line per upper dir:
/// JAIL, LAYER, FILES, SIZE, UPPER_PATH, TAB-separated, then a total line.
#[derive(clap::Parser, Debug)]
#[command(name = "jclean", version, after_long_help = crate::help::after_long_help("jclean"))]
#[command(mut_arg("dry_run", |a| a.help(
    "Count only: report what would be freed; delete nothing")))]
pub struct Cli {
    #[command(flatten)]
    pub(crate) common: Common,
    #[command(flatten)]
    pub(crate) opts: Opts,
    #[command(flatten)]
    pub(crate) layers: crate::cli::LayerChoice,
}

/// jclean's own flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct Opts {
    /// List every entry of each upper dir with what it is to the host tree:
    /// JAIL, LAYER, KIND (new, copy, modified, stale, conflict, whiteout, opaque,
    /// dir, newdir), SIZE, PATH (relative to the layer's tree), sorted by path;
    /// deletes nothing (implies -n), so mounted layers too
    #[arg(long = "list")]
    pub(crate) list: bool,

    /// With --list: PATH is the entry's path in the upper dir, not relative to the
    /// layer's tree
    #[arg(long = "absolute", requires = "list")]
    pub(crate) absolute: bool,

    /// Prune only entries of KIND (new, copy, modified, stale, conflict, whiteout),
    /// e.g. 'stale': copies the jail never wrote of host files changed since;
    /// repeatable
    #[arg(long = "only", value_name = "KIND", value_parser = Kind::parse_prunable,
          conflicts_with_all = ["keep", "older_than"])]
    pub(crate) only: Vec<Kind>,

    /// Keep paths matching GLOB, relative to the upper dir (e.g. 'distfiles/**'),
    /// with their parents; repeatable
    #[arg(long = "keep", value_name = "GLOB")]
    pub(crate) keep: Vec<String>,

    /// Only remove entries not modified for AGE, a number and a unit (s, m, h, d,
    /// w; e.g. 12h, 7d; a number alone is refused)
    #[arg(long = "older-than", value_name = "AGE", value_parser = crate::cli::parse_age)]
    pub(crate) older_than: Option<Duration>,

    /// Worker threads, 1 to 256 [default: all cores]
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = crate::cli::parse_jobs)]
    pub(crate) jobs: Option<usize>,

    /// Exact byte counts instead of human sizes
    #[arg(short = 'b', long = "bytes")]
    pub(crate) bytes: bool,

    /// The weekly clean, per jail and all or nothing: stop the jail if it runs
    /// (FreeBSD), take its layers down, prune, mount again what was mounted,
    /// start what was stopped; a busy jail is skipped (75, holders named)
    #[arg(long = "remount", conflicts_with = "list")]
    pub(crate) remount: bool,
}

/// Files and bytes freed, summed over upper dirs.
#[derive(Default)]
struct Total {
    lines: usize,
    files: u64,
    bytes: u64,
}

pub fn main(cli: &Cli) -> ExitCode {
    let common = cli.layers.apply(&cli.common, crate::cli::Nested::Alone);
    let (args, opts) = (&common, &cli.opts);
    run("jclean", args, |setup| {
        let rules = rules(opts)?;
        let pool = thread_pool(opts.jobs.unwrap_or(0))?;
        let mut total = Total::default();
        let cleaner = Cleaner {
            setup,
            rules: &rules,
            opts,
            looking: args.dry_run || opts.list,
            // --list deletes nothing.
            sink: setup.sink(args.dry_run || opts.list),
            only_read: Default::default(),
        };
        // --remount's mounts and unmounts: for -n, not printed (the report is
        // the output), only checked.
        let engine = Engine::new(
            &*setup.platform,
            setup.msg,
            setup.sink(args.dry_run).silent(),
        );
        let status = each_jail(setup, |jail| {
            pool.install(|| {
                if opts.remount {
                    cleaner.remount(&engine, jail, &mut total)
                } else {
                    cleaner.jail(jail, &mut total)
                }
            })
        });
        told_only_read(setup, cleaner.only_read);
        told_total(setup, opts, &total);
        Ok(status)
    })
}

/// The mounted layers a run only read: said once a run, not once a layer (a
/// warning: never with -q).
fn told_only_read(setup: &Setup, only_read: std::sync::Mutex<Vec<String>>) {
    let only_read = only_read.into_inner().unwrap_or_else(|p| p.into_inner());
    if !only_read.is_empty() {
        let note = format!(
            "mounted layers only read, nothing deleted (a jail may write to them meanwhile): {}",
            only_read.join(", ")
        );
        setup.msg.warn(&[], &note);
    }
}

/// The total line, after more than one report line (not with -q).
fn told_total(setup: &Setup, opts: &Opts, total: &Total) {
    if total.lines > 1 && setup.msg.level != Verbosity::Quiet {
        emit(
            "jclean",
            &[
                "total".as_ref(),
                "-".as_ref(),
                total.files.to_string().as_ref(),
                size(total.bytes, opts.bytes).as_ref(),
                "-".as_ref(),
            ],
            json!({"total": true, "jail": null, "layer": null, "files": total.files,
                   "bytes": total.bytes, "upper": null}),
        );
    }
}

fn rules(opts: &Opts) -> Result<Rules> {
    let keep = if opts.keep.is_empty() {
        None
    } else {
        let mut builder = GlobSetBuilder::new();
        for pattern in &opts.keep {
            let glob = Glob::new(pattern.trim_start_matches("./")).map_err(|e| {
                Domain::error(CleanError::Keep {
                    pattern: Some(pattern.clone()),
                    why: e.to_string(),
                })
            })?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| {
            Domain::error(CleanError::Keep {
                pattern: None,
                why: e.to_string(),
            })
        })?;
        Some(set)
    };
    Ok(Rules {
        keep,
        older_than: opts.older_than.map(|age| SystemTime::now() - age),
    })
}

/// One run's settings, shared by every jail and upper dir.
struct Cleaner<'a> {
    setup: &'a Setup,
    rules: &'a Rules,
    opts: &'a Opts,
    /// Only reading the upper dirs (-n, --list).
    looking: bool,
    sink: Sink<'a>,
    /// The mounted layers looked at (`JAIL: LAYER`), said once at the end.
    only_read: std::sync::Mutex<Vec<String>>,
}

/// One upper dir to clean: the jail's and layer's names, and its stack.
struct UpperToClean<'a> {
    jail: &'a str,
    stack: &'a Stack,
    place: &'a Place,
    /// The jail's plan, for the layers nested in this one.
    plan: &'a JailPlan,
}

impl UpperToClean<'_> {
    fn site(&self) -> Site<'_> {
        Site::of_layer(self.jail, &self.plan.root, &self.stack.layer)
    }
}

impl Cleaner<'_> {
    fn jail(&self, jail: &Jail, total: &mut Total) -> Result<()> {
        let setup = self.setup;
        let _lock = setup.lock(&self.sink, jail)?;
        let plan = plan(&setup.cfg, jail, setup.os, &setup.host)?;
        self.layers(&plan, false, total)
    }

    /// `--remount`, under the jail's lock: stop it if it runs with layers
    /// mounted, take them all down (none when one is held), prune, then take
    /// back what was done: mount again exactly what was taken down, start what
    /// was stopped. A failure to put back leaves the jail stopped, and says so.
    fn remount(&self, engine: &Engine, jail: &Jail, total: &mut Total) -> Result<()> {
        let setup = self.setup;
        let _lock = setup.lock(&self.sink, jail)?;
        let plan = plan(&setup.cfg, jail, setup.os, &setup.host)?;
        let mut undo = Undo::default();
        let mut body = || {
            let stopped = self.any_mounted(engine, &plan)?
                && setup.platform.jail_running(&jail.name)?
                && engine.service(&plan, jail, Service::Stop, &mut undo)?;
            // -n stops no jail: its own processes are no holders to predict.
            let busy = if stopped && !engine.sink.performs() {
                Busy::Force
            } else {
                Busy::Fail
            };
            // Nothing is down when this fails: the jail runs again as it did.
            let taken = engine.take_down_jail(&plan, busy)?;
            undo.push(Entry::TakenDown(taken));
            // -n took nothing down: the uppers are looked at as if it had.
            self.layers(&plan, !engine.sink.performs(), total)
        };
        let cleaned = body();
        // Even when interrupted: the jail is left as it was found.
        let undone = engine.unwind(&plan, undo);
        // The first failure is the jail's; the others are said too.
        first_error(cleaned, undone, |err| {
            setup.msg.error(&err.context(plan.jail.clone()))
        })
    }

    /// Whether any layer of the plan is mounted, wholly or in part.
    fn any_mounted(&self, engine: &Engine, plan: &JailPlan) -> Result<bool> {
        let table = engine.sink.mounts(&plan.root)?;
        let platform = &*self.setup.platform;
        Ok(plan
            .stacks()
            .any(|stack| stack.state(&table, platform) != State::Mounted(0)))
    }

    /// Clean each union layer's upper dir of the plan; `down`: the layers count
    /// as taken down (`--remount -n`, which took nothing down).
    fn layers(&self, plan: &JailPlan, down: bool, total: &mut Total) -> Result<()> {
        let setup = self.setup;
        // Indexed: each layer's lookups cost the same whatever the table's size.
        let table = self.sink.mounts(&plan.root)?;
        // Uppers a union that junmount -f detached still uses (Linux).
        let detached = crate::detached::live(
            &setup.cfg.lock_dir,
            &plan.jail,
            &*setup.platform,
            &self.sink,
            &Site::of_jail(&plan.jail, &plan.root),
        )?;
        let mut first_err = None;
        for layer in &plan.layers {
            let stack = &layer.stack;
            let Some(Union { upper, .. }) = stack.shape.union() else {
                continue;
            };
            signals::check()?;
            if self.tmpfs_gone(plan, layer, &table, down) {
                continue;
            }
            let result = self.layer(plan, layer, upper, (&table, &detached), down, total);
            if let Err(err) = result.with_context(|| stack.layer.clone()) {
                if signals::interrupted() {
                    return Err(err);
                }
                first_err.get_or_insert(err);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// A tmpfs upper that is not mounted holds nothing: no path to report.
    fn tmpfs_gone(&self, plan: &JailPlan, layer: &LayerPlan, table: &Table, down: bool) -> bool {
        let setup = self.setup;
        let Some(tmpfs) = &layer.tmpfs else {
            return false;
        };
        if !down && is_mounted(setup, tmpfs, table) {
            return false;
        }
        let note = format!(
            "tmpfs upper {} not mounted: nothing to clean",
            tmpfs.target.path.display()
        );
        setup.msg.info(&[&plan.jail, &layer.stack.layer], &note);
        true
    }

    /// Clean one layer's upper dir, unless a live union (or one `junmount -f`
    /// detached) still uses it and this run would change it.
    fn layer(
        &self,
        plan: &JailPlan,
        layer: &LayerPlan,
        upper: &Place,
        (table, detached): (&Table, &[crate::detached::Live]),
        down: bool,
        total: &mut Total,
    ) -> Result<()> {
        let setup = self.setup;
        // Looking (-n, --list) only reads the upper, which both platforms allow
        // under a mounted union; changing it is what a live layer forbids.
        let stack = &layer.stack;
        let live = !down && live(setup, layer, table);
        let in_use = detached.iter().find(|d| d.note.layer == stack.layer);
        if let Some(found) = in_use.filter(|_| !self.looking) {
            let held = found.describe(&plan.root, &plan.jail);
            return Err(Domain::error(CleanError::Detached(held)));
        }
        if live && !self.looking {
            return Err(self.mounted(stack, upper, table));
        }
        if live {
            let mut seen = self.only_read.lock().unwrap_or_else(|p| p.into_inner());
            seen.push(format!("{}: {}", plan.jail, stack.layer));
        }
        let to_clean = UpperToClean {
            jail: &plan.jail,
            stack,
            place: upper,
            plan,
        };
        self.upper(&to_clean, table, total)
    }

    /// Why a mounted layer's upper is not cleaned, with what to do about it.
    fn mounted(&self, stack: &Stack, upper: &Place, table: &Table) -> anyhow::Error {
        let target = &stack.target.path;
        // A mount jlayers did not make is not junmount's to take off.
        let foreign = match stack.state(table, &*self.setup.platform) {
            State::Foreign { top, .. } => Some(top.describe()),
            _ => None,
        };
        Domain::error(CleanError::Live {
            upper: upper.path.clone(),
            target: target.clone(),
            foreign,
        })
    }

    /// Prune one upper dir and print its report line.
    fn upper(&self, to_clean: &UpperToClean, table: &Table, total: &mut Total) -> Result<()> {
        let (rules, opts) = (self.rules, self.opts);
        let dir = UpperDir::open(to_clean.place)?;
        let below = table.below(&to_clean.place.path).into_iter();
        let mounts: Vec<PathBuf> = below.map(|m| m.target.clone()).collect();
        if opts.list || !opts.only.is_empty() {
            return self.by_kind(to_clean, dir.as_ref(), &mounts, total);
        }
        let tally = Tally::default();
        if let Some(dir) = &dir {
            with_progress(&self.setup.msg, &tally, opts.bytes, || {
                dir.empty(&mounts, rules, &tally, &self.sink, &to_clean.site())
            })?;
        }
        let left = tally
            .skipped
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        let files = tally.files.load(Ordering::Relaxed);
        let bytes = tally.bytes.load(Ordering::Relaxed);
        let result = self.left_behind(to_clean, &left);
        self.report(to_clean, files, bytes, total, result.is_err());
        signals::check()?;
        result
    }
}

/// Whether any mount of the stack is there.
fn is_mounted(setup: &Setup, stack: &Stack, table: &Table) -> bool {
    stack.state(table, &*setup.platform) != State::Mounted(0)
}

/// Whether a layer's upper is live: a live upper must not change under a mounted
/// union (undefined behaviour on both platforms). A tmpfs upper is live while its
/// tmpfs is mounted (junmount discards it).
fn live(setup: &Setup, layer: &LayerPlan, table: &Table) -> bool {
    let stack = &layer.stack;
    let tmpfs_up = (layer.tmpfs.iter()).any(|t| is_mounted(setup, t, table));
    let elsewhere = stack.union_elsewhere(table, &*setup.platform).is_some();
    is_mounted(setup, stack, table) || elsewhere || tmpfs_up
}

impl Cleaner<'_> {
    /// `--list` and `--only`: each entry by what it is to the host tree; list it
    /// (`JAIL LAYER KIND SIZE PATH`), or remove it when its kind is asked for; then
    /// the layer's report line, as for a whole prune.
    fn by_kind(
        &self,
        to_clean: &UpperToClean,
        dir: Option<&UpperDir>,
        mounts: &[PathBuf],
        total: &mut Total,
    ) -> Result<()> {
        let opts = self.opts;
        let Some(Null { source, .. }) = to_clean.stack.shape.null() else {
            return Ok(());
        };
        let (mut files, mut bytes) = (0u64, 0u64);
        // The mount points of the layers nested in this one, made through the
        // union by jmount: no change of the jail's.
        let nested: Vec<PathBuf> = to_clean
            .plan
            .stacks()
            .filter_map(|t| t.target.path.strip_prefix(&to_clean.stack.target.path).ok())
            .filter(|rel| !rel.as_os_str().is_empty())
            .map(PathBuf::from)
            .collect();
        // --list: the walk meets the entries in path order; each line goes out as
        // it does (memory stays linear in depth, whatever is listed).
        let problems = match dir {
            None => Vec::new(),
            Some(dir) => dir.changes(source, mounts, &self.sink, &to_clean.site(), |e| {
                let mount_point = matches!(e.kind, Kind::Dir | Kind::NewDir)
                    && nested.iter().any(|n| e.is_dir_at(n));
                let wanted = !mount_point && (opts.only.is_empty() || opts.only.contains(&e.kind));
                if wanted && opts.list {
                    self.list_line(to_clean, &e.rel(), e.kind, e.size);
                    return false;
                }
                if wanted {
                    files += 1;
                    bytes += e.size;
                }
                wanted
            })?,
        };
        let left: Vec<(PathBuf, String)> = problems
            .into_iter()
            .map(|(rel, why)| (to_clean.place.path.join(rel), why))
            .collect();
        let result = self.left_behind(to_clean, &left);
        if !opts.list {
            self.report(to_clean, files, bytes, total, result.is_err());
        }
        signals::check()?;
        result
    }

    /// `--list`: `JAIL LAYER KIND SIZE PATH`, PATH relative to the layer's tree
    /// (as `rsync -i` and `zfs diff` name them), or in the upper dir.
    fn list_line(&self, to_clean: &UpperToClean, rel: &std::path::Path, kind: Kind, bytes: u64) {
        let path = if self.opts.absolute {
            to_clean.place.path.join(rel)
        } else {
            rel.to_path_buf()
        };
        let (jail, layer) = (to_clean.jail, to_clean.stack.layer.as_str());
        emit(
            "jclean",
            &[
                OsStr::new(jail),
                OsStr::new(layer),
                OsStr::new(kind.name()),
                size(bytes, self.opts.bytes).as_ref(),
                path.as_os_str(),
            ],
            // A deep path is long: no copy of it for a format not asked for.
            if crate::report::json() {
                json!({"jail": jail, "layer": layer, "kind": kind.name(),
                       "bytes": bytes, "path": path_json(&path)})
            } else {
                serde_json::Value::Null
            },
        );
    }
}

impl Cleaner<'_> {
    /// What was left for any reason but a rule fails the layer (69), and is named
    /// even with -q (cron mails it): the first 20, then how many more.
    fn left_behind(&self, to_clean: &UpperToClean, left: &[(PathBuf, String)]) -> Result<()> {
        const NAMED: usize = 20;
        let scope = [to_clean.jail, to_clean.stack.layer.as_str()];
        for (path, why) in left.iter().take(NAMED) {
            self.setup
                .msg
                .problem(&scope, &format!("{}: {why}", path.display()));
        }
        if left.len() > NAMED {
            let more = format!("... and {} more left", left.len() - NAMED);
            self.setup.msg.problem(&scope, &more);
        }
        if left.is_empty() {
            return Ok(());
        }
        Err(Domain::error(CleanError::NotEmptied {
            upper: to_clean.place.path.clone(),
            left: left.len(),
        }))
    }

    /// One upper dir's report line, counted into the total; with `-q` only for a
    /// layer that `failed`. `-v` names what was pruned on stderr.
    fn report(
        &self,
        to_clean: &UpperToClean,
        files: u64,
        bytes: u64,
        total: &mut Total,
        failed: bool,
    ) {
        let (jail, layer, upper) = (
            to_clean.jail,
            to_clean.stack.layer.as_str(),
            &to_clean.place.path,
        );
        // Whether anything was removed: not for -n.
        let changed = self.sink.performs() && files > 0;
        if changed {
            let what = format!(
                "pruned {}: {files} files, {}",
                upper.display(),
                size(bytes, self.opts.bytes)
            );
            self.setup.msg.info(&[jail, layer], &what);
        }
        total.lines += 1;
        total.files += files;
        total.bytes += bytes;
        if self.setup.msg.level == Verbosity::Quiet && !failed {
            return;
        }
        emit(
            "jclean",
            &[
                OsStr::new(jail),
                OsStr::new(layer),
                files.to_string().as_ref(),
                size(bytes, self.opts.bytes).as_ref(),
                upper.as_os_str(),
            ],
            json!({"jail": jail, "layer": layer, "files": files, "bytes": bytes,
                   "upper": path_json(upper), "changed": changed}),
        );
    }
}

/// Run `work` with a progress line on stderr (files, bytes, rate) when stderr is
/// a terminal; nothing otherwise.
fn with_progress<T>(msg: &Messages, tally: &Tally, exact: bool, work: impl FnOnce() -> T) -> T {
    if msg.level == Verbosity::Quiet || !std::io::stderr().is_terminal() {
        return work();
    }
    let bars = indicatif::MultiProgress::new();
    let bar = bars.add(indicatif::ProgressBar::new_spinner());
    // Messages meanwhile clear the spinner's line first.
    crate::report::set_bars(Some(bars));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let done = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let files = tally.files.load(Ordering::Relaxed);
                let bytes = tally.bytes.load(Ordering::Relaxed);
                let rate = files as f64 / start.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!(
                    "{files} files, {} freed, {rate:.0} files/s",
                    size(bytes, exact)
                ));
                bar.tick();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        bar.finish_and_clear();
        crate::report::set_bars(None);
        result
    })
}

/// Why jclean refused or did not finish an upper dir (or its flags).
#[derive(Debug)]
pub(crate) enum CleanError {
    /// A `--keep` pattern that is no glob (the pattern, when one is to blame) (64).
    Keep {
        pattern: Option<String>,
        why: String,
    },
    /// A union `junmount -f` detached still uses the upper: who holds it (75).
    Detached(String),
    /// The layer is mounted (or something else is, `foreign`, at its target):
    /// its upper is live (75).
    Live {
        upper: PathBuf,
        target: PathBuf,
        foreign: Option<String>,
    },
    /// Entries were left for another reason than a rule, named before (69).
    NotEmptied { upper: PathBuf, left: usize },
}

impl std::fmt::Display for CleanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CleanError::Keep {
                pattern: Some(pattern),
                why,
            } => write!(f, "--keep {pattern}: {why}"),
            CleanError::Keep { pattern: None, why } => write!(f, "--keep: {why}"),
            CleanError::Detached(held) => write!(f, "{held}; nothing deleted"),
            CleanError::Live {
                upper,
                target,
                foreign: Some(top),
            } => write!(
                f,
                "{}: {top} is mounted on {}; nothing deleted ({})",
                upper.display(),
                target.display(),
                crate::stack::foreign_advice(target)
            ),
            CleanError::Live { upper, target, .. } => write!(
                f,
                "{}: the layer is mounted on {}; nothing deleted (junmount it first)",
                upper.display(),
                target.display()
            ),
            CleanError::NotEmptied { upper, left } => {
                let entries = if *left == 1 { "entry" } else { "entries" };
                write!(
                    f,
                    "{}: not emptied, {left} {entries} left (named above)",
                    upper.display()
                )
            }
        }
    }
}

impl std::error::Error for CleanError {}

impl Coded for CleanError {
    fn code(&self) -> ExitCode {
        match self {
            CleanError::Keep { .. } => ExitCode::Usage,
            CleanError::Detached(_) | CleanError::Live { .. } => ExitCode::TempFail,
            CleanError::NotEmptied { .. } => ExitCode::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::check_domain;

    #[test]
    fn each_refusal_its_code_and_line() {
        let keep = |pattern: Option<&str>| CleanError::Keep {
            pattern: pattern.map(String::from),
            why: "unclosed character class".into(),
        };
        check_domain(
            keep(Some("[a")),
            ExitCode::Usage,
            "--keep [a: unclosed character class",
        );
        check_domain(
            keep(None),
            ExitCode::Usage,
            "--keep: unclosed character class",
        );
        check_domain(
            CleanError::Detached("/u/j/a: still in use".into()),
            ExitCode::TempFail,
            "/u/j/a: still in use; nothing deleted",
        );
        let live = |foreign: Option<&str>| CleanError::Live {
            upper: "/u/j/a".into(),
            target: "/j/usr/ports".into(),
            foreign: foreign.map(String::from),
        };
        check_domain(
            live(None),
            ExitCode::TempFail,
            "/u/j/a: the layer is mounted on /j/usr/ports; nothing deleted (junmount it first)",
        );
        check_domain(
            live(Some("tmpfs tmpfs")),
            ExitCode::TempFail,
            "/u/j/a: tmpfs tmpfs is mounted on /j/usr/ports; nothing deleted \
             (to take it off: umount /j/usr/ports)",
        );
        let not_emptied = |left| CleanError::NotEmptied {
            upper: "/u/j/a".into(),
            left,
        };
        check_domain(
            not_emptied(1),
            ExitCode::Unavailable,
            "/u/j/a: not emptied, 1 entry left (named above)",
        );
        check_domain(
            not_emptied(3),
            ExitCode::Unavailable,
            "/u/j/a: not emptied, 3 entries left (named above)",
        );
    }
}
