//! jmount(8): stack each jail's layers.

use crate::cli::Common;
use crate::exit::ExitCode;
use crate::lock::lock_jail;
use crate::plan::plan;
use crate::stack::Engine;

use super::{each_jail, run};

pub fn main(args: &Common) -> ExitCode {
    run("jmount", args, |s| {
        let engine = Engine {
            platform: &*s.platform,
            msg: s.msg,
            dry_run: args.dry_run,
        };
        each_jail(s, |jail| {
            let _lock = (!args.dry_run)
                .then(|| lock_jail(&s.cfg.lock_dir, &jail.name))
                .transpose()?;
            engine
                .mount_jail(&plan(&s.cfg, jail, &*s.platform)?)
                .map(drop)
        })
    })
}
