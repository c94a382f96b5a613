//! jclean(8): prune the upper dirs of union layers, in parallel, and report.

use std::time::Duration;

use clap::Parser;

/// Empty the upper dir of each union layer of the named jails, so that they see the
/// pristine host tree again, and report what was freed: one line per upper dir,
/// JAIL, LAYER, FILES, SIZE, UPPER_PATH, TAB-separated.
#[derive(Parser)]
#[command(name = "jclean", version)]
struct Args {
    #[command(flatten)]
    common: jlayers::cli::Common,

    /// List every entry of each upper dir with what it is to the host tree:
    /// JAIL, LAYER, KIND (new, copy, modified, stale, whiteout, opaque, dir), SIZE,
    /// PATH; deletes nothing (implies -n)
    #[arg(long = "list")]
    list: bool,

    /// Prune only entries of KIND (new, copy, modified, stale, whiteout), e.g.
    /// 'stale': host files changed since the jail's copy; repeatable
    #[arg(long = "only", value_name = "KIND", value_parser = jlayers::changes::Kind::parse_prunable,
          conflicts_with_all = ["keep", "older_than"])]
    only: Vec<jlayers::changes::Kind>,

    /// Keep paths matching GLOB, relative to the upper dir (e.g. 'distfiles/**'),
    /// with their parents; repeatable
    #[arg(long = "keep", value_name = "GLOB")]
    keep: Vec<String>,

    /// Only remove entries not modified for AGE (e.g. 12h, 7d)
    #[arg(long = "older-than", value_name = "AGE", value_parser = jlayers::cli::parse_age)]
    older_than: Option<Duration>,

    /// Worker threads, 1 to 256 [default: all cores]
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = jlayers::cli::parse_jobs)]
    jobs: Option<usize>,

    /// Exact byte counts instead of human sizes
    #[arg(short = 'b', long = "bytes")]
    bytes: bool,
}

fn main() -> std::process::ExitCode {
    let args: Args = jlayers::cli::parse("jclean");
    let opts = jlayers::cmd::jclean::Opts {
        list: args.list,
        only: args.only,
        keep: args.keep,
        older_than: args.older_than,
        jobs: args.jobs,
        bytes: args.bytes,
    };
    let mut common = args.common;
    common.dry_run |= args.list;
    jlayers::cmd::jclean::main(&common, &opts).into()
}
