//! jclean(8): empty the upper dirs of union layers and report what was freed.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use globset::{Glob, GlobSetBuilder};

use crate::changes::{self, Kind};
use crate::cli::Common;
use crate::config::Jail;
use crate::exit::{ExitCode, fail};
use crate::lock::lock_jail;
use crate::mounts::Mount;
use crate::plan::{JailPlan, Stack, State, Step, plan};
use crate::prune::{Rules, Tally, prune};
use crate::report::{Messages, emit, path_json, size};
use crate::signals;
use crate::target::{Beneath, Place};
use serde_json::json;

use super::{Setup, each_jail, run};

/// Empty the upper dir of each union layer of the named jails, so that they see the
/// pristine host tree again, and report what was freed: one line per upper dir,
/// JAIL, LAYER, FILES, SIZE, UPPER_PATH, TAB-separated.
#[derive(clap::Parser, Debug)]
#[command(name = "jclean", version)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub opts: Opts,
}

/// jclean's own flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Opts {
    /// List every entry of each upper dir with what it is to the host tree:
    /// JAIL, LAYER, KIND (new, copy, modified, stale, whiteout, opaque, dir), SIZE,
    /// PATH; deletes nothing (implies -n)
    #[arg(long = "list")]
    pub list: bool,

    /// Prune only entries of KIND (new, copy, modified, stale, whiteout), e.g.
    /// 'stale': host files changed since the jail's copy; repeatable
    #[arg(long = "only", value_name = "KIND", value_parser = Kind::parse_prunable,
          conflicts_with_all = ["keep", "older_than"])]
    pub only: Vec<Kind>,

    /// Keep paths matching GLOB, relative to the upper dir (e.g. 'distfiles/**'),
    /// with their parents; repeatable
    #[arg(long = "keep", value_name = "GLOB")]
    pub keep: Vec<String>,

    /// Only remove entries not modified for AGE (e.g. 12h, 7d)
    #[arg(long = "older-than", value_name = "AGE", value_parser = crate::cli::parse_age)]
    pub older_than: Option<Duration>,

    /// Worker threads, 1 to 256 [default: all cores]
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = crate::cli::parse_jobs)]
    pub jobs: Option<usize>,

    /// Exact byte counts instead of human sizes
    #[arg(short = 'b', long = "bytes")]
    pub bytes: bool,
}

/// Files and bytes freed, summed over upper dirs.
#[derive(Default)]
struct Total {
    lines: usize,
    files: u64,
    bytes: u64,
}

pub fn main(cli: &Cli) -> ExitCode {
    let opts = &cli.opts;
    // --list deletes nothing.
    let mut common = cli.common.clone();
    common.dry_run |= opts.list;
    let args = &common;
    run("jclean", args, |s| {
        let rules = match rules(opts, args.dry_run) {
            Ok(r) => r,
            Err(e) => {
                s.msg.error(&e);
                return ExitCode::Usage;
            }
        };
        let pool = match rayon::ThreadPoolBuilder::new()
            .num_threads(opts.jobs.unwrap_or(0))
            .build()
        {
            Ok(p) => p,
            Err(e) => {
                s.msg.error(&anyhow::anyhow!("thread pool: {e}"));
                return ExitCode::Unavailable;
            }
        };
        let mut total = Total::default();
        let cleaner = Cleaner {
            s,
            rules: &rules,
            opts,
        };
        let status = each_jail(s, |jail| pool.install(|| cleaner.jail(jail, &mut total)));
        if total.lines > 1 {
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
        status
    })
}

fn rules(opts: &Opts, dry_run: bool) -> Result<Rules> {
    let keep = if opts.keep.is_empty() {
        None
    } else {
        let mut b = GlobSetBuilder::new();
        for g in &opts.keep {
            let glob = Glob::new(g.trim_start_matches("./"))
                .map_err(|e| fail(ExitCode::Usage, format!("--keep {g}: {e}")))?;
            b.add(glob);
        }
        Some(
            b.build()
                .map_err(|e| fail(ExitCode::Usage, format!("--keep: {e}")))?,
        )
    };
    Ok(Rules {
        keep,
        older_than: opts.older_than.map(|age| SystemTime::now() - age),
        dry_run,
    })
}

/// One run's settings, shared by every jail and upper dir.
struct Cleaner<'a> {
    s: &'a Setup,
    rules: &'a Rules,
    opts: &'a Opts,
}

impl Cleaner<'_> {
    fn jail(&self, jail: &Jail, total: &mut Total) -> Result<()> {
        let (s, rules) = (self.s, self.rules);
        let _lock = (!rules.dry_run)
            .then(|| lock_jail(&s.cfg.lock_dir, &jail.name))
            .transpose()?;
        let plan = plan(&s.cfg, jail, &*s.platform)?;
        let table = s.platform.mounts(&plan.root)?;
        let mut first_err = None;
        for stack in &plan.stacks {
            let Some(Step::Union { upper, .. }) = stack.steps.last() else {
                continue;
            };
            signals::check()?;
            // A live upper must not change under a mounted union (undefined behaviour
            // on both platforms): refuse the layer, delete nothing.
            // A tmpfs upper is live while its tmpfs is mounted (junmount discards it).
            let tmpfs_up = plan.stacks.iter().any(|t| {
                t.layer == stack.layer
                    && t.is_upper_tmpfs()
                    && t.state(&table, &*s.platform) != State::Mounted(0)
            });
            let live = stack.state(&table, &*s.platform) != State::Mounted(0)
                || table.iter().any(|m| s.platform.matches(&stack.steps[1], m))
                || tmpfs_up;
            let r = if live {
                Err(fail(
                    ExitCode::TempFail,
                    format!(
                        "{}: the layer is mounted on {}; nothing deleted (junmount it first)",
                        upper.path.display(),
                        stack.target.path.display()
                    ),
                ))
            } else {
                self.upper(&plan, stack, upper, &table, total)
            };
            if let Err(e) = r.with_context(|| stack.layer.clone()) {
                if signals::interrupted() {
                    return Err(e);
                }
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Prune one upper dir and print its report line.
    fn upper(
        &self,
        plan: &JailPlan,
        stack: &Stack,
        up: &Place,
        table: &[Mount],
        total: &mut Total,
    ) -> Result<()> {
        let (s, rules, opts) = (self.s, self.rules, self.opts);
        let (jail, layer, upper) = (plan.jail.as_str(), stack.layer.as_str(), up.path.as_path());
        // The upper dir, opened the way its owner allows: a host
        // path as configured, a path inside a jail without following links.
        let dir = match up.open(false)? {
            Beneath::Dir(fd) => Some(fd),
            Beneath::Missing(_) => None,
        };
        if opts.list || !opts.only.is_empty() {
            let source = match &stack.steps[0] {
                Step::Null { source, .. } => source.as_path(),
                _ => return Ok(()),
            };
            return self.by_kind(jail, layer, upper, source, dir.as_ref(), total);
        }
        let tally = Tally::default();
        if let Some(dir) = &dir {
            let mounts: Vec<PathBuf> = table
                .iter()
                .filter(|m| m.target.starts_with(upper) && m.target != upper)
                .map(|m| m.target.clone())
                .collect();
            // The upper dir itself is never removed: at every instant it is the old
            // upper, partly emptied, with its owner, mode and flags.
            with_progress(&s.msg, &tally, opts.bytes, || {
                prune(dir, upper, &mounts, rules, &tally)
            })
            .map_err(|e| {
                fail(
                    ExitCode::Unavailable,
                    format!("{}: {}", upper.display(), e.desc()),
                )
            })?;
        }
        let left = tally
            .skipped
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        let files = tally.files.load(Ordering::Relaxed);
        let bytes = tally.bytes.load(Ordering::Relaxed);
        self.report(jail, layer, files, bytes, upper, total);
        signals::check()?;
        self.left_behind(jail, layer, upper, &left)
    }
}

impl Cleaner<'_> {
    /// `--list` and `--only`: each entry by what it is to the host tree; list it
    /// (`JAIL LAYER KIND SIZE PATH`), or remove it when its kind is asked for; then
    /// the layer's report line, as for a whole prune.
    fn by_kind(
        &self,
        jail: &str,
        layer: &str,
        upper: &std::path::Path,
        source: &std::path::Path,
        dir: Option<&std::os::fd::OwnedFd>,
        total: &mut Total,
    ) -> Result<()> {
        let opts = self.opts;
        let prune = !opts.list && !self.rules.dry_run;
        let (mut files, mut bytes) = (0u64, 0u64);
        let problems = match dir {
            None => Vec::new(),
            Some(dir) => changes::walk(dir, source, |e| {
                let wanted = opts.only.is_empty() || opts.only.contains(&e.kind);
                if !wanted {
                    return false;
                }
                if opts.list {
                    let path = upper.join(e.rel);
                    emit(
                        "jclean",
                        &[
                            OsStr::new(jail),
                            OsStr::new(layer),
                            OsStr::new(e.kind.name()),
                            size(e.size, opts.bytes).as_ref(),
                            path.as_os_str(),
                        ],
                        json!({"jail": jail, "layer": layer, "kind": e.kind.name(),
                               "bytes": e.size, "path": path_json(&path)}),
                    );
                    return false;
                }
                files += 1;
                bytes += e.size;
                prune
            })
            .map_err(|e| {
                fail(
                    ExitCode::Unavailable,
                    format!("{}: {}", upper.display(), e.desc()),
                )
            })?,
        };
        if !opts.list {
            self.report(jail, layer, files, bytes, upper, total);
        }
        signals::check()?;
        let left: Vec<(PathBuf, String)> = problems
            .into_iter()
            .map(|(rel, why)| (upper.join(rel), why))
            .collect();
        self.left_behind(jail, layer, upper, &left)
    }
}

impl Cleaner<'_> {
    /// What was left for any reason but a rule fails the layer (69), and is named
    /// even with -q (cron mails it): the first 20, then how many more.
    fn left_behind(
        &self,
        jail: &str,
        layer: &str,
        upper: &Path,
        left: &[(PathBuf, String)],
    ) -> Result<()> {
        const NAMED: usize = 20;
        for (path, why) in left.iter().take(NAMED) {
            self.s
                .msg
                .problem(&[jail, layer], &format!("{}: {why}", path.display()));
        }
        if left.len() > NAMED {
            self.s.msg.problem(
                &[jail, layer],
                &format!("... and {} more left", left.len() - NAMED),
            );
        }
        let entries = match left.len() {
            0 => return Ok(()),
            1 => "1 entry".to_string(),
            n => format!("{n} entries"),
        };
        Err(fail(
            ExitCode::Unavailable,
            format!(
                "{}: not emptied, {entries} left (named above)",
                upper.display()
            ),
        ))
    }

    /// One upper dir's report line, counted into the total.
    fn report(
        &self,
        jail: &str,
        layer: &str,
        files: u64,
        bytes: u64,
        upper: &Path,
        total: &mut Total,
    ) {
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
                   "upper": path_json(upper), "changed": files > 0 && !self.rules.dry_run}),
        );
        total.lines += 1;
        total.files += files;
        total.bytes += bytes;
    }
}

/// Run `work` with a progress line on stderr (files, bytes, rate) when stderr is
/// a terminal; nothing otherwise.
fn with_progress<T>(msg: &Messages, tally: &Tally, exact: bool, work: impl FnOnce() -> T) -> T {
    if msg.quiet || !std::io::stderr().is_terminal() {
        return work();
    }
    let bar = indicatif::ProgressBar::new_spinner();
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
        let r = work();
        done.store(true, Ordering::Relaxed);
        bar.finish_and_clear();
        r
    })
}
