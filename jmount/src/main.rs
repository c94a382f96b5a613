//! jmount(8): stack each jail's layers (null mount, then union mount of its upper dir).

use clap::Parser;

/// Stack each jail's layers: null mount of the host tree, then union mount of the
/// jail's upper dir on top. Silent on success.
#[derive(Parser)]
#[command(name = "jmount", version)]
struct Args {
    #[command(flatten)]
    common: jlayers::cli::Common,
}

fn main() -> std::process::ExitCode {
    let args: Args = jlayers::cli::parse("jmount");
    jlayers::cmd::jmount::main(&args.common).into()
}
