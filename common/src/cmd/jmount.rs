//! jmount(8): stack each jail's layers.

use crate::cli::Common;
use crate::exit::ExitCode;
use crate::lock::lock_jail;
use crate::plan::plan;
use crate::stack::Engine;

use super::{each_jail, layer_records, run};

/// Stack each jail's layers: null mount of the host tree, then union mount of the
/// jail's upper dir on top. Silent on success.
#[derive(clap::Parser, Debug)]
#[command(name = "jmount", version)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
}

pub fn main(cli: &Cli) -> ExitCode {
    let args = &cli.common;
    run("jmount", args, |s| {
        let engine = Engine::new(&*s.platform, s.msg, args.dry_run);
        each_jail(s, |jail| {
            let _lock = (!args.dry_run)
                .then(|| lock_jail(&s.cfg.lock_dir, &jail.name))
                .transpose()?;
            let plan = plan(&s.cfg, jail, &*s.platform)?;
            engine.take_journal();
            engine.mount_jail(&plan)?;
            layer_records("jmount", &plan, &engine.take_journal());
            Ok(())
        })
    })
}
