//! jupdate(8): run the updater inside each jail with its layers in place, then put
//! everything back as it was found.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cli::Common;
use crate::config::Jail;
use crate::exit::{ExitCode, code_of, fail};
use crate::lock::lock_jail;
use crate::plan::plan;
use crate::report::{emit, path_json, sh_line};
use crate::signals;
use crate::stack::Engine;
use crate::update::{BATCH_ENV, Outcome, Run, run_host, tail};
use serde_json::json;

use super::{Setup, run};

/// Run the ports updater inside each jail with its layers mounted: take the jail's
/// lock, mount its layers and start it if needed, run the command, then stop and
/// unmount what was not running or mounted before. One report line per jail:
/// JAIL, ok|failed|timeout, EXIT_CODE, SECONDS, LOG_PATH, TAB-separated.
#[derive(clap::Parser, Debug)]
#[command(name = "jupdate", version)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub opts: Opts,
}

/// jupdate's own flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Jails updated at a time (1 to 256)
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 1,
          value_parser = crate::cli::parse_jobs)]
    pub jobs: usize,

    /// Directory for <jail>.log [default: log_dir of the configuration]
    #[arg(long = "log-dir", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// Time limit per jail (e.g. 30m, 6h): the command's process group is killed
    #[arg(long = "timeout", value_name = "AGE", value_parser = crate::cli::parse_timeout)]
    pub timeout: Option<Duration>,

    /// One jail only: the command gets the terminal (default command: portmaster -ai)
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,

    /// The command to run instead of the configured one
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// How many log lines go to stderr when a jail fails.
const TAIL: usize = 10;

pub fn main(cli: &Cli) -> ExitCode {
    let (args, opts) = (&cli.common, &cli.opts);
    run("jupdate", args, |s| {
        if args.dry_run && args.json() {
            s.msg.error(&fail(
                ExitCode::Usage,
                "-n prints sh commands, --json records of a run: give one of them",
            ));
            return ExitCode::Usage;
        }
        if opts.interactive && s.jails.len() != 1 {
            s.msg
                .error(&fail(ExitCode::Usage, "-i works on exactly one jail"));
            return ExitCode::Usage;
        }
        let bars =
            (!args.quiet && !opts.interactive && !args.dry_run && std::io::stderr().is_terminal())
                .then(indicatif::MultiProgress::new);
        let results: Vec<Mutex<ExitCode>> =
            s.jails.iter().map(|_| Mutex::new(ExitCode::Ok)).collect();
        let next = AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..opts.jobs.min(s.jails.len()) {
                sc.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= s.jails.len() || signals::interrupted() {
                            break;
                        }
                        let jail = &s.cfg.jails[s.jails[i]];
                        let code = update_jail(s, jail, opts, args.dry_run, bars.as_ref());
                        *results[i].lock().unwrap_or_else(|p| p.into_inner()) = code;
                    }
                });
            }
        });
        if signals::interrupted() {
            return ExitCode::Interrupted;
        }
        results
            .iter()
            .map(|r| *r.lock().unwrap_or_else(|p| p.into_inner()))
            .find(|&c| c != ExitCode::Ok)
            .unwrap_or(ExitCode::Ok)
    })
}

/// One jail, start to finish; its report line and messages are printed here.
fn update_jail(
    s: &Setup,
    jail: &Jail,
    opts: &Opts,
    dry_run: bool,
    bars: Option<&indicatif::MultiProgress>,
) -> ExitCode {
    let start = Instant::now();
    let log_dir = opts.log_dir.as_deref().unwrap_or(&s.cfg.log_dir);
    let log = log_dir.join(format!("{}.log", jail.name));
    let bar = bars.map(|m| {
        let b = m.add(indicatif::ProgressBar::new_spinner());
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix}: {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.set_prefix(jail.name.clone());
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    let on_line = |line: &str| {
        if let Some(b) = &bar {
            b.set_message(line.to_string());
        }
    };
    let r = in_jail(s, jail, opts, dry_run, &log, &on_line).with_context(|| jail.name.clone());
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if dry_run {
        return r.map_or_else(
            |e| {
                s.msg.error(&e);
                code_of(&e)
            },
            |_| ExitCode::Ok,
        );
    }
    report(s, jail, &log, start.elapsed().as_secs(), r)
}

/// A jail's report line (or JSON object), and on a failure the message and the
/// last lines of its log on stderr. Returns the jail's exit status.
fn report(s: &Setup, jail: &Jail, log: &Path, secs: u64, r: Result<Option<Outcome>>) -> ExitCode {
    let (word, status, code) = match &r {
        Ok(Some(o)) => (o.word(), Some(o.status()), o.exit_code()),
        Ok(None) => ("ok", Some(0), ExitCode::Ok),
        Err(e) => ("failed", None, code_of(e)),
    };
    let mut object = json!({"jail": jail.name, "result": word, "exit_code": status,
                            "seconds": secs, "log": path_json(log)});
    if let Err(e) = &r {
        object["error"] = json!(format!("{e:#}"));
        object["exit"] = json!(code.code());
    }
    emit(
        "jupdate",
        &[
            jail.name.as_ref(),
            word.as_ref(),
            status.map_or("-".to_string(), |c| c.to_string()).as_ref(),
            secs.to_string().as_ref(),
            log.as_os_str(),
        ],
        object,
    );
    match r {
        Err(e) => s.msg.error(&e),
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
            s.msg.error(&anyhow::anyhow!("{}: {what}", jail.name));
            for line in tail(log, TAIL) {
                s.msg.warn(&[&jail.name, "log"], &line);
            }
        }
        Ok(_) => {}
    }
    code
}

/// Lock, mount, start, run, and restore what was found. `Ok(None)`: dry run.
fn in_jail(
    s: &Setup,
    jail: &Jail,
    opts: &Opts,
    dry_run: bool,
    log: &Path,
    on_line: &(dyn Fn(&str) + Sync),
) -> Result<Option<Outcome>> {
    let _lock = (!dry_run)
        .then(|| lock_jail(&s.cfg.lock_dir, &jail.name))
        .transpose()?;
    let engine = Engine::new(&*s.platform, s.msg, dry_run);
    let plan = plan(&s.cfg, jail, &*s.platform)?;
    let made = engine.mount_jail(&plan)?;

    let mut started = None;
    let result = (|| -> Result<Option<Outcome>> {
        if !s.platform.jail_running(&jail.name)? {
            let start =
                command(&jail.start).or_else(|| s.platform.service_command(&jail.name, true));
            if let Some(cmd) = start {
                host(&cmd, dry_run).context("start")?;
                started = Some(());
            }
        }
        signals::check()?;
        let cmd = update_command(s, jail, opts);
        if dry_run {
            let env: &[(&str, &str)] = if opts.interactive { &[] } else { BATCH_ENV };
            sh_line(&s.platform.exec_sh_argv(&jail.name, &plan.root, env, &cmd));
            return Ok(None);
        }
        Run {
            platform: &*s.platform,
            jail: &jail.name,
            root: &plan.root,
            cmd: &cmd,
            log,
            timeout: opts.timeout,
            interactive: opts.interactive,
            on_line,
        }
        .run()
        .map(Some)
    })();

    // Put back what was found, whatever happened: stop what was started, unmount
    // what was mounted. The first error wins.
    let mut restore: Result<()> = Ok(());
    if started.is_some() {
        let stop = command(&jail.stop).or_else(|| s.platform.service_command(&jail.name, false));
        if let Some(cmd) = stop {
            restore = host(&cmd, dry_run).context("stop");
        }
    }
    let undo = engine.undo(&plan, &made);
    let result = result?;
    restore?;
    undo?;
    Ok(result)
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

fn host(cmd: &[OsString], dry_run: bool) -> Result<()> {
    if dry_run {
        sh_line(cmd);
        Ok(())
    } else {
        run_host(cmd)
    }
}
