//! junmount(8): take each jail's layers down in exact reverse.

use crate::cli::Common;
use crate::exit::ExitCode;
use crate::lock::lock_jail;
use crate::plan::plan;
use crate::stack::Engine;

use super::{each_jail, layer_records, run};

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
    let (args, force) = (&cli.common, cli.force);
    run("junmount", args, |s| {
        let engine = Engine::new(&*s.platform, s.msg, args.dry_run);
        each_jail(s, |jail| {
            let _lock = (!args.dry_run)
                .then(|| lock_jail(&s.cfg.lock_dir, &jail.name))
                .transpose()?;
            let plan = plan(&s.cfg, jail, &*s.platform)?;
            engine.take_journal();
            engine.unmount_jail(&plan, force)?;
            layer_records("junmount", &plan, &engine.take_journal());
            Ok(())
        })
    })
}
