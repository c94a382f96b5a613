//! jupdate(8): run the updater inside each jail with its layers in place, then put
//! everything back as it was found.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::action::{RunUpdater, Site, StartStop};
use crate::cli::Common;
use crate::config::Jail;
use crate::exit::{ExitCode, code_of, fail};
use crate::plan::plan;
use crate::platform::Service;
use crate::report::{emit, path_json};
use crate::signals;
use crate::stack::Engine;
use crate::update::{Outcome, Run, log_len, tail};
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
    pub common: Common,
    #[command(flatten)]
    pub opts: Opts,
}

/// jupdate's own flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Jails updated at a time (1 to 256); reports still come in the order given
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 1,
          value_parser = crate::cli::parse_jobs)]
    pub jobs: usize,

    /// Directory for <jail>.log [default: log_dir of the configuration]
    #[arg(long = "log-dir", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// Time limit per jail, a number and a unit (s, m, h, d, w; e.g. 30m,
    /// 6h; a number alone is refused)
    ///
    /// At the limit the command's process group gets SIGTERM, then SIGKILL 3
    /// seconds later; the jail counts as a timeout (75).
    #[arg(long = "timeout", value_name = "AGE", value_parser = crate::cli::parse_timeout)]
    pub timeout: Option<Duration>,

    /// One jail only: the command gets the terminal (default command: portmaster -ai)
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,

    /// The command to run instead of the configured one [default: the jail's
    /// update, else that of [defaults], else portmaster -a -G --no-confirm]
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// How many log lines go to stderr when a jail fails.
const TAIL: usize = 10;

pub fn main(cli: &Cli) -> ExitCode {
    let (args, opts) = (&cli.common, &cli.opts);
    run("jupdate", args, |s| {
        if opts.interactive && s.jails.len() != 1 {
            return Err(fail(ExitCode::Usage, "-i works on exactly one jail"));
        }
        let pool = thread_pool(opts.jobs.min(s.jails.len()).max(1))?;
        // A jail's spinner is made when its updater starts (never for -n).
        let bars = (!args.quiet && !opts.interactive && std::io::stderr().is_terminal())
            .then(indicatif::MultiProgress::new);
        crate::report::set_bars(bars.clone());
        let engine = s.engine(args);
        let status = each_jail_par(
            s,
            &pool,
            |jail| update_jail(s, &engine, jail, opts, bars.as_ref()),
            |told| told.print(s),
        );
        crate::report::set_bars(None);
        Ok(status)
    })
}

/// One jail, start to finish; its report line and messages, to be printed.
fn update_jail(
    s: &Setup,
    engine: &Engine,
    jail: &Jail,
    opts: &Opts,
    bars: Option<&indicatif::MultiProgress>,
) -> Told {
    let start = Instant::now();
    let log_dir = opts.log_dir.as_deref().unwrap_or(&s.cfg.log_dir);
    let log = log_dir.join(format!("{}.log", jail.name));
    let from = log_len(&log);
    let r = in_jail(s, engine, jail, opts, &log, bars).with_context(|| jail.name.clone());
    report(s, engine, jail, (&log, from), start.elapsed().as_secs(), r)
}

/// A spinner with the jail's latest log line, while its updater runs.
fn spinner(bars: &indicatif::MultiProgress, jail: &str) -> indicatif::ProgressBar {
    let b = bars.add(indicatif::ProgressBar::new_spinner());
    b.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix}: {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    b.set_prefix(jail.to_string());
    b.enable_steady_tick(Duration::from_millis(120));
    b
}

/// What is told of one jail: its exit status, its report line (or JSON object),
/// and on a failure the messages and the last lines of its log.
struct Told {
    code: ExitCode,
    record: Option<(Vec<OsString>, serde_json::Value)>,
    /// (scope, message) for stderr.
    problems: Vec<(Vec<String>, String)>,
}

impl Told {
    /// Print it; the jail's exit status.
    fn print(self, s: &Setup) -> ExitCode {
        if let Some((fields, object)) = self.record {
            let fields: Vec<&std::ffi::OsStr> = fields.iter().map(|f| f.as_os_str()).collect();
            emit("jupdate", &fields, object);
        }
        for (scope, msg) in &self.problems {
            let scope: Vec<&str> = scope.iter().map(String::as_str).collect();
            s.msg.problem(&scope, msg);
        }
        self.code
    }
}

/// A jail's report line (or JSON object), and on a failure the message and the
/// last lines of its log on stderr, with the jail's exit status.
/// With -n there is no run to report: only a failure, as a message.
fn report(
    s: &Setup,
    engine: &Engine,
    jail: &Jail,
    (log, from): (&Path, u64),
    secs: u64,
    r: Result<Option<Outcome>>,
) -> Told {
    let (word, status, code) = match &r {
        Ok(Some(o)) => (o.word(), Some(o.status()), o.exit_code()),
        Ok(None) => ("ok", Some(0), ExitCode::Ok),
        Err(e) => ("failed", None, code_of(e)),
    };
    let mut object = json!({"jail": jail.name, "result": word, "exit_code": status,
                            "seconds": secs, "log": path_json(log)});
    if let Err(e) = &r {
        object["error"] = json!(crate::exit::message(e));
        object["exit"] = json!(code.code());
    }
    let (status, secs) = (
        status.map_or("-".into(), |c| c.to_string()),
        secs.to_string(),
    );
    let fields: Vec<OsString> = vec![
        jail.name.clone().into(),
        word.into(),
        status.into(),
        secs.into(),
        log.as_os_str().to_os_string(),
    ];
    // -q: only errors, so a line only for a jail that did not end ok; -n: none.
    let quiet = s.msg.level == crate::report::Verbosity::Quiet && code == ExitCode::Ok;
    let ran = engine.sink.performs();
    let mut told = Told {
        code,
        record: (ran && !quiet).then_some((fields, object)),
        problems: Vec::new(),
    };
    match r {
        Err(e) => told.problems.push((Vec::new(), crate::exit::message(&e))),
        Ok(Some(o)) if o != Outcome::Ok => {
            let what = match o {
                Outcome::Timeout(_) => format!("timed out; killed (log {})", log.display()),
                Outcome::Interrupted(_) => "interrupted; killed".to_string(),
                _ => format!(
                    "update failed with status {} (log {})",
                    o.status(),
                    log.display()
                ),
            };
            told.problems.push((vec![jail.name.clone()], what));
            // Part of the failure, so shown with -q too: cron mails them.
            for line in tail(log, from, TAIL) {
                told.problems
                    .push((vec![jail.name.clone(), "log".into()], line));
            }
        }
        Ok(_) => {}
    }
    told
}

/// Lock, mount, start, run, and restore what was found. `Ok(None)`: printed, not run.
fn in_jail(
    s: &Setup,
    engine: &Engine,
    jail: &Jail,
    opts: &Opts,
    log: &Path,
    bars: Option<&indicatif::MultiProgress>,
) -> Result<Option<Outcome>> {
    let _lock = engine.sink.lock(&s.cfg.lock_dir, &jail.name)?;
    let plan = plan(&s.cfg, jail, &*s.platform)?;
    let made = engine.mount_jail(&plan)?;
    let j = JailRun {
        s,
        engine,
        jail,
        opts,
        site: Site {
            jail: &jail.name,
            root: &plan.root,
            layer: "",
        },
    };
    let mut started = false;
    let result = (|| {
        if !s.platform.jail_running(&jail.name)? {
            started = j.service(Service::Start).context("start")?;
        }
        signals::check()?;
        j.update(log, bars)
    })();
    // Put back what was found, whatever happened: stop what was started, unmount
    // what was mounted. The first error wins.
    let restore = match started {
        true => j.service(Service::Stop).map(drop).context("stop"),
        false => Ok(()),
    };
    let undo = engine.undo(&plan, &made);
    let result = result?;
    restore?;
    undo?;
    Ok(result)
}

/// One jail's update, once its layers are mounted.
struct JailRun<'a> {
    s: &'a Setup,
    engine: &'a Engine<'a>,
    jail: &'a Jail,
    opts: &'a Opts,
    site: Site<'a>,
}

impl JailRun<'_> {
    /// Start or stop the jail: its configured command, else the platform's.
    /// Whether there was one to run.
    fn service(&self, to: Service) -> Result<bool> {
        let configured = match to {
            Service::Start => &self.jail.start,
            Service::Stop => &self.jail.stop,
        };
        let platform = || self.s.platform.service_command(&self.jail.name, to);
        let Some(cmd) = command(configured).or_else(platform) else {
            return Ok(false);
        };
        let service = StartStop {
            argv: &cmd,
            jail: &self.jail.name,
            to,
        };
        self.engine.sink.act(&self.site, service)?;
        Ok(true)
    }

    /// Run the updater, with a spinner showing its latest log line.
    fn update(
        &self,
        log: &Path,
        bars: Option<&indicatif::MultiProgress>,
    ) -> Result<Option<Outcome>> {
        let cmd = update_command(self.s, self.jail, self.opts);
        let bar = bars.map(|b| spinner(b, &self.jail.name));
        let on_line = |line: &str| {
            if let Some(b) = &bar {
                b.set_message(line.to_string());
            }
        };
        let run = Run {
            platform: &*self.s.platform,
            jail: &self.jail.name,
            root: self.site.root,
            cmd: &cmd,
            network: self.s.cfg.network(self.jail),
            log,
            timeout: self.opts.timeout,
            interactive: self.opts.interactive,
            on_line: &on_line,
        };
        let outcome = self.engine.sink.act(&self.site, RunUpdater(&run));
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        outcome
    }
}

fn update_command(s: &Setup, jail: &Jail, opts: &Opts) -> Vec<String> {
    if !opts.cmd.is_empty() {
        opts.cmd.clone()
    } else if opts.interactive {
        vec!["portmaster".into(), "-ai".into()]
    } else {
        jail.update.clone().unwrap_or_else(|| s.cfg.update.clone())
    }
}

fn command(c: &Option<Vec<String>>) -> Option<Vec<OsString>> {
    c.as_ref().map(|v| v.iter().map(OsString::from).collect())
}
