//! jmount(8): stack each jail's layers.

use crate::cli::Common;
use crate::exit::ExitCode;

use super::stack_tool;

/// Stack each jail's layers: null mount of the host tree, then union mount of the
/// jail's upper dir on top. Silent on success.
#[derive(clap::Parser, Debug)]
#[command(name = "jmount", version)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
}

pub fn main(cli: &Cli) -> ExitCode {
    stack_tool("jmount", &cli.common, false, |engine, plan| {
        engine.mount_jail(plan).map(drop)
    })
}
