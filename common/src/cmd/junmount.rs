//! junmount(8): take each jail's layers down in exact reverse.

use crate::cli::{Common, LayerChoice, Nested};
use crate::exit::ExitCode;
use crate::platform::Busy;

use super::stack_tool;

/// Take each jail's layers down in exact reverse order; silent on success.
///
/// Nested layers first, each stack newest mount first; only mounts jmount's plan
/// would have made are touched. All or nothing per jail: if any target is held,
/// nothing of the jail is unmounted (75, the holders named).
#[derive(clap::Parser, Debug)]
#[command(name = "junmount", version, after_long_help = crate::help::after_long_help("junmount"))]
#[command(mut_arg("dry_run", |a| a.help(
    "Print the sh commands that would do it (runnable: pipe them to sh); change nothing")))]
#[command(mut_arg("json", |a| a.help(
    "Say per layer what was done, as JSON Lines on stdout")))]
pub struct Cli {
    #[command(flatten)]
    pub(crate) common: Common,

    /// Unmount even if the jail is running, and force busy mounts off
    /// (umount -f on FreeBSD, lazy detach on Linux)
    #[arg(short = 'f', long = "force")]
    pub(crate) force: bool,

    #[command(flatten)]
    pub(crate) layers: LayerChoice,
}

pub fn main(cli: &Cli) -> ExitCode {
    let common = cli.layers.apply(&cli.common, Nested::Alone);
    stack_tool("junmount", &common, true, |engine, plan| {
        let busy = if cli.force { Busy::Force } else { Busy::Fail };
        engine.unmount_jail(plan, busy)
    })
}
