//! junmount(8): take each jail's layers down in exact reverse.

use crate::cli::Common;
use crate::exit::ExitCode;
use crate::lock::lock_jail;
use crate::plan::plan;
use crate::stack::Engine;

use super::{each_jail, run};

pub fn main(args: &Common, force: bool) -> ExitCode {
    run("junmount", args, |s| {
        let engine = Engine {
            platform: &*s.platform,
            msg: s.msg,
            dry_run: args.dry_run,
        };
        each_jail(s, |jail| {
            let _lock = (!args.dry_run)
                .then(|| lock_jail(&s.cfg.lock_dir, &jail.name))
                .transpose()?;
            engine.unmount_jail(&plan(&s.cfg, jail, &*s.platform)?, force)
        })
    })
}
