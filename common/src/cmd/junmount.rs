//! junmount(8): take each jail's layers down in exact reverse.

use crate::action::Busy;
use crate::cli::Common;
use crate::exit::ExitCode;

use super::stack_tool;

/// Take each jail's layers down in exact reverse order, nested layers first, each
/// stack newest mount first. Only mounts jmount's plan would have made are touched.
#[derive(clap::Parser, Debug)]
#[command(name = "junmount", version)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,

    /// Unmount even if the jail is running, and force busy mounts off
    /// (umount -f on FreeBSD, lazy detach on Linux)
    #[arg(short = 'f', long = "force")]
    pub force: bool,
}

pub fn main(cli: &Cli) -> ExitCode {
    stack_tool("junmount", &cli.common, true, |engine, plan| {
        let busy = match cli.force {
            true => Busy::Force,
            false => Busy::Fail,
        };
        engine.unmount_jail(plan, busy)
    })
}
