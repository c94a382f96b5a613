//! jupdate(8): run portmaster (or any updater) inside each jail with its layers in
//! place, then restore what was found.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Run the ports updater inside each jail with its layers mounted: take the jail's
/// lock, mount its layers and start it if needed, run the command, then stop and
/// unmount what was not running or mounted before. One report line per jail:
/// JAIL, ok|failed|timeout, EXIT_CODE, SECONDS, LOG_PATH, TAB-separated.
#[derive(Parser)]
#[command(name = "jupdate", version)]
struct Args {
    #[command(flatten)]
    common: jlayers::cli::Common,

    /// Jails updated at a time (1 to 256)
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 1,
          value_parser = jlayers::cli::parse_jobs)]
    jobs: usize,

    /// Directory for <jail>.log [default: log_dir of the configuration]
    #[arg(long = "log-dir", value_name = "DIR")]
    log_dir: Option<PathBuf>,

    /// Time limit per jail (e.g. 30m, 6h): the command's process group is killed
    #[arg(long = "timeout", value_name = "AGE", value_parser = jlayers::cli::parse_timeout)]
    timeout: Option<Duration>,

    /// One jail only: the command gets the terminal (default command: portmaster -ai)
    #[arg(short = 'i', long = "interactive")]
    interactive: bool,

    /// The command to run instead of the configured one
    #[arg(last = true, value_name = "CMD")]
    cmd: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let args: Args = jlayers::cli::parse("jupdate");
    let opts = jlayers::cmd::jupdate::Opts {
        jobs: args.jobs,
        log_dir: args.log_dir,
        timeout: args.timeout,
        interactive: args.interactive,
        cmd: args.cmd,
    };
    jlayers::cmd::jupdate::main(&args.common, &opts).into()
}
