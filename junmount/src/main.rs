//! junmount(8): take each jail's layers down in exact reverse order.

use clap::Parser;

/// Take each jail's layers down in exact reverse order, nested layers first, each
/// stack newest mount first. Only mounts jmount's plan would have made are touched.
#[derive(Parser)]
#[command(name = "junmount", version)]
struct Args {
    #[command(flatten)]
    common: jlayers::cli::Common,

    /// Unmount even if the jail is running, and force busy mounts off
    /// (umount -f on FreeBSD, lazy detach on Linux)
    #[arg(short = 'f', long = "force")]
    force: bool,
}

fn main() -> std::process::ExitCode {
    let args: Args = jlayers::cli::parse("junmount");
    jlayers::cmd::junmount::main(&args.common, args.force).into()
}
