//! jupdate(8): run the updater inside each jail with its layers in place, then put
//! everything back as it was found.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::action::{Limit, OpenLog, RunUpdater, Site};
use crate::cli::{Common, UsageError};
use crate::config::Jail;
use crate::exit::{Domain, ExitCode, code_of};
use crate::lock::JailLock;
use crate::plan::plan;
use crate::platform::Service;
use crate::report::{emit, path_json};
use crate::signals;
use crate::stack::{Engine, Entry, Undo, first_error};
use crate::update::{Outcome, Run, Tail};
use serde_json::json;

use super::{Setup, each_jail_par, run, thread_pool};

/// Run the ports updater inside each jail with its layers mounted.
///
/// For each jail: take its lock, mount its layers and start it if needed, run the
/// command (by default portmaster -a -G --no-confirm) with its output appended to
/// the jail's log, then stop and unmount what was not running or mounted before.
/// One report line per jail: JAIL, ok|failed|timeout, EXIT_CODE, SECONDS, LOG_PATH,
/// TAB-separated.
#[derive(clap::Parser, Debug)]
#[command(name = "jupdate", version, after_long_help = crate::help::after_long_help("jupdate"))]
#[command(mut_arg("dry_run", |a| a.help(
    "Print the run as sh commands (mount, start, update, stop, unmount); change nothing")))]
// -n prints sh commands, --json records of a run: not both.
#[command(mut_arg("dry_run", |a| a.conflicts_with_all(["json", "libxo"])))]
pub struct Cli {
    #[command(flatten)]
    pub(crate) common: Common,
    #[command(flatten)]
    pub(crate) opts: Opts,
}

/// jupdate's own flags.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Opts {
    /// Jails updated at a time (1 to 256); reports still come in the order given
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 1,
          value_parser = crate::cli::parse_jobs)]
    pub(crate) jobs: usize,

    /// Directory for <jail>.log [default: log_dir of the configuration]
    #[arg(long = "log-dir", value_name = "DIR", value_parser = crate::cli::abs_dir())]
    pub(crate) log_dir: Option<PathBuf>,

    /// Time limit per jail, a number and a unit (s, m, h, d, w; e.g. 30m,
    /// 6h; a number alone is refused)
    ///
    /// At the limit the command's process group gets SIGTERM, then SIGKILL 3
    /// seconds later; the jail counts as a timeout (75).
    #[arg(long = "timeout", value_name = "AGE", value_parser = crate::cli::parse_timeout)]
    pub(crate) timeout: Option<Duration>,

    /// One jail only: the command gets the terminal (default command: portmaster -ai)
    #[arg(short = 'i', long = "interactive")]
    pub(crate) interactive: bool,

    /// The command to run instead of the configured one [default: the jail's
    /// update, else that of [defaults], else portmaster -a -G --no-confirm]
    #[arg(last = true, value_name = "CMD")]
    pub(crate) cmd: Vec<String>,
}

/// How many log lines go to stderr when a jail fails.
const TAIL: usize = 10;

pub fn main(cli: &Cli) -> ExitCode {
    let (args, opts) = (&cli.common, &cli.opts);
    run("jupdate", args, |setup| {
        if opts.interactive && setup.jails.len() != 1 {
            return Err(Domain::error(UsageError::InteractiveNotOne));
        }
        let pool = thread_pool(opts.jobs.min(setup.jails.len()).max(1))?;
        // A jail's spinner is made when its updater starts (never for -n).
        let bars = (!args.quiet && !opts.interactive && std::io::stderr().is_terminal())
            .then(indicatif::MultiProgress::new);
        crate::report::set_bars(bars.clone());
        let engine = setup.engine(args);
        let status = each_jail_par(
            setup,
            &pool,
            |jail| update_jail(setup, &engine, jail, opts, bars.as_ref()),
            |told| told.print(setup),
        );
        crate::report::set_bars(None);
        Ok(status)
    })
}

/// One jail, start to finish; its report line and messages, to be printed.
fn update_jail(
    setup: &Setup,
    engine: &Engine,
    jail: &Jail,
    opts: &Opts,
    bars: Option<&indicatif::MultiProgress>,
) -> Told {
    let start = Instant::now();
    let log_dir = opts.log_dir.as_deref().unwrap_or(&setup.cfg.log_dir);
    let log = log_dir.join(format!("{}.log", jail.name));
    let tail = std::sync::Mutex::new(Tail::default());
    let result =
        in_jail(setup, engine, jail, opts, (&log, &tail), bars).with_context(|| jail.name.clone());
    report(
        setup,
        engine,
        jail,
        (&log, &tail),
        start.elapsed().as_secs(),
        result,
    )
}

/// A spinner with the jail's latest log line, while its updater runs.
fn spinner(bars: &indicatif::MultiProgress, jail: &str) -> indicatif::ProgressBar {
    let bar = bars.add(indicatif::ProgressBar::new_spinner());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix}: {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_prefix(jail.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// What is told of one jail: its exit status, its report line (or JSON object),
/// and on a failure the messages and the last lines of its output.
struct Told {
    code: ExitCode,
    record: Option<(Vec<OsString>, serde_json::Value)>,
    /// (scope, message) for stderr.
    problems: Vec<(Vec<String>, String)>,
}

impl Told {
    /// Print it; the jail's exit status.
    fn print(self, setup: &Setup) -> ExitCode {
        if let Some((fields, object)) = self.record {
            let fields: Vec<&std::ffi::OsStr> = fields.iter().map(|f| f.as_os_str()).collect();
            emit("jupdate", &fields, object);
        }
        for (scope, msg) in &self.problems {
            let scope: Vec<&str> = scope.iter().map(String::as_str).collect();
            setup.msg.problem(&scope, msg);
        }
        self.code
    }
}

/// A jail's report line (or JSON object), and on a failure the message and the
/// last lines of its output on stderr, with the jail's exit status.
/// With -n there is no run to report: only a failure, as a message.
fn report(
    setup: &Setup,
    engine: &Engine,
    jail: &Jail,
    (log, tail): (&Path, &std::sync::Mutex<Tail>),
    secs: u64,
    result: Result<Option<Outcome>>,
) -> Told {
    let code = match &result {
        Ok(Some(outcome)) => outcome.exit_code(),
        Ok(None) => ExitCode::Ok,
        Err(err) => code_of(err),
    };
    // -q: only errors, so a line only for a jail that did not end ok; -n: none.
    let quiet = setup.msg.level == crate::report::Verbosity::Quiet && code == ExitCode::Ok;
    let ran = engine.sink.performs();
    let mut told = Told {
        code,
        record: (ran && !quiet).then(|| record(jail, log, secs, &result)),
        problems: Vec::new(),
    };
    match result {
        Err(err) => told.problems.push((Vec::new(), crate::exit::message(&err))),
        Ok(Some(outcome)) if outcome != Outcome::Ok => {
            told.problems
                .push((vec![jail.name.clone()], failed(jail, log, outcome)));
            // Part of the failure, so shown with -q too: cron mails them.
            let lines = tail.lock().map(|t| t.lines(TAIL)).unwrap_or_default();
            for line in lines {
                told.problems
                    .push((vec![jail.name.clone(), "log".into()], line));
            }
        }
        Ok(_) => {}
    }
    told
}

/// A jail's report line's fields and its JSON object.
fn record(
    jail: &Jail,
    log: &Path,
    secs: u64,
    result: &Result<Option<Outcome>>,
) -> (Vec<OsString>, serde_json::Value) {
    let (word, status, code) = match result {
        Ok(Some(outcome)) => (outcome.word(), Some(outcome.status()), outcome.exit_code()),
        Ok(None) => ("ok", Some(0), ExitCode::Ok),
        Err(err) => ("failed", None, code_of(err)),
    };
    let mut object = json!({"jail": jail.name, "result": word, "exit_code": status,
                            "seconds": secs, "log": path_json(log)});
    if let Err(err) = result {
        object["error"] = json!(crate::exit::message(err));
        object["exit"] = json!(code.code());
    }
    let status = status.map_or("-".into(), |status| status.to_string());
    let fields: Vec<OsString> = vec![
        jail.name.clone().into(),
        word.into(),
        status.into(),
        secs.to_string().into(),
        log.as_os_str().to_os_string(),
    ];
    (fields, object)
}

/// What a run that did not end ok says of how it ended.
fn failed(jail: &Jail, log: &Path, outcome: Outcome) -> String {
    match outcome {
        Outcome::Timeout(_) => format!("timed out; killed (log {})", log.display()),
        Outcome::Interrupted(_) => "interrupted; killed".to_string(),
        Outcome::OutOfMemory(code) => format!(
            "update failed with status {code}: out of memory at the jail's memory limit ({}) (log {})",
            jail.limits
                .memory
                .as_ref()
                .map_or("", |(_, text)| text.as_str()),
            log.display()
        ),
        _ => format!(
            "update failed with status {} (log {})",
            outcome.status(),
            log.display()
        ),
    }
}

/// Lock, mount, start, run, and restore what was found. `Ok(None)`: printed, not run.
fn in_jail(
    setup: &Setup,
    engine: &Engine,
    jail: &Jail,
    opts: &Opts,
    log: (&Path, &std::sync::Mutex<Tail>),
    bars: Option<&indicatif::MultiProgress>,
) -> Result<Option<Outcome>> {
    let lock = setup.lock(&engine.sink, jail)?;
    let plan = plan(&setup.cfg, jail, setup.os, &setup.host)?;
    let mut undo = engine.mount_jail(&plan)?;
    let jail_run = JailRun {
        setup,
        engine,
        jail,
        opts,
        site: Site::of_jail(&jail.name, &plan.root),
    };
    let result = (|| {
        if !setup.platform.jail_running(&jail.name)? {
            engine.service(&plan, jail, Service::Start, &mut undo)?;
        }
        signals::check()?;
        jail_run.update(log, bars, lock.as_ref().and_then(JailLock::fd), &mut undo)
    })();
    // Put back what was found, whatever happened, newest first: lift the limits,
    // stop what was started, unmount what was mounted.
    let undone = engine.unwind(&plan, undo);
    first_error(result, undone, |err| {
        setup.msg.error(&err.context(jail.name.clone()))
    })
}

/// One jail's update, once its layers are mounted.
struct JailRun<'a> {
    setup: &'a Setup,
    engine: &'a Engine<'a>,
    jail: &'a Jail,
    opts: &'a Opts,
    site: Site<'a>,
}

impl<'a> JailRun<'a> {
    /// Run the updater, with a spinner showing its latest log line; its limits
    /// are pushed onto `undo`, to be lifted with the rest.
    fn update(
        &self,
        (log, tail): (&Path, &std::sync::Mutex<Tail>),
        bars: Option<&indicatif::MultiProgress>,
        lock: Option<std::os::fd::RawFd>,
        undo: &mut Undo<'a>,
    ) -> Result<Option<Outcome>> {
        let cmd = update_command(self.setup, self.jail, self.opts);
        let bar = bars.map(|bars| spinner(bars, &self.jail.name));
        let on_line = |line: &str| {
            if let Some(bar) = &bar {
                bar.set_message(line.to_string());
            }
        };
        let limits = &self.jail.limits;
        let jail = &self.jail.name;
        let sink = &self.engine.sink;
        let log_file = sink.act(&self.site, OpenLog(log))?;
        let held = sink.act(&self.site, Limit { jail, limits })?.flatten();
        undo.push(Entry::Limits { limits, held });
        let run = Run {
            platform: &*self.setup.platform,
            jail: &self.jail.name,
            root: self.site.root(),
            cmd: &cmd,
            network: self.setup.cfg.network(self.jail),
            log,
            timeout: self.opts.timeout,
            interactive: self.opts.interactive,
            on_line: &on_line,
            lock,
            limited: undo.limited(),
            log_max: self.setup.cfg.log_max(self.jail),
            tail,
        };
        let outcome = sink.act(&self.site, RunUpdater(&run, log_file));
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        outcome
    }
}

fn update_command(setup: &Setup, jail: &Jail, opts: &Opts) -> Vec<String> {
    if !opts.cmd.is_empty() {
        opts.cmd.clone()
    } else if opts.interactive {
        vec!["portmaster".into(), "-ai".into()]
    } else {
        jail.update
            .clone()
            .unwrap_or_else(|| setup.cfg.update.clone())
    }
}
