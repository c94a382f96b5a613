//! Each tool's behaviour, from parsed flags to exit status. The tool crates only
//! parse their command line and call in here.

use anyhow::{Context, Result};

use crate::action::{Lock, Sink, Site};
use crate::cli::{self, Common};
use crate::config::{Config, ConfigError, Jail};
use crate::exit::{Coded, Domain, ExitCode, code_of};
use crate::platform::{self, Os, Platform};
use crate::report::{Messages, Verbosity};
use crate::signals;
use crate::stack::Engine;

pub mod jclean;
pub mod jmount;
pub mod junmount;
pub mod jupdate;

/// What every tool loads before it works on jails.
pub(crate) struct Setup {
    pub(crate) cfg: Config,
    pub(crate) platform: Box<dyn Platform>,
    /// The backend's OS: what the plan needs of the platform.
    pub(crate) os: Os,
    /// The configuration's roots and sources as found on disk.
    pub(crate) host: crate::roots::Host,
    pub(crate) msg: Messages,
    pub(crate) jails: Vec<usize>,
}

impl Setup {
    /// The jail's lock for the run, taken through `sink` (`-n`: none).
    pub(crate) fn lock(&self, sink: &Sink, jail: &Jail) -> Result<Option<crate::lock::JailLock>> {
        let site = Site::of_jail(&jail.name, &jail.root);
        let dir = &self.cfg.lock_dir;
        sink.act(
            &site,
            Lock {
                dir,
                jail: &jail.name,
            },
        )
    }

    pub(crate) fn load(tool: &'static str, args: &Common) -> Result<Setup> {
        let msg = Messages {
            tool,
            level: Verbosity::of(args.quiet, args.verbose),
        };
        let os = Os::current()?;
        let path = args
            .config
            .clone()
            .unwrap_or_else(|| Config::default_path(os));
        let cfg = Config::load(&path, os)?;
        let host = crate::roots::Host::of(&cfg);
        if let Some((first, second)) = host.roots.shared() {
            let (first, second) = (&cfg.jails[first], &cfg.jails[second]);
            return Err(Domain::error(ConfigError::SameRoot {
                config: path,
                jail: second.name.clone(),
                other: first.name.clone(),
                root: second.root.clone(),
                other_root: first.root.clone(),
            }));
        }
        let jails = cli::select(&cfg, args)?;
        let mut cfg = cfg;
        let along = cli::restrict_layers(&mut cfg, &jails, &args.layers, args.nested)?;
        if !along.is_empty() {
            msg.warn(
                &[],
                &format!(
                    "--layer {}: takes the layers nested in it along: {}",
                    args.layers.join(", --layer "),
                    along.join(", ")
                ),
            );
        }
        Ok(Setup {
            cfg,
            platform: platform::backend(os)?,
            os,
            host,
            msg,
            jails,
        })
    }

    /// Where this run's actions go: done, or printed for `-n`.
    pub(crate) fn sink(&self, dry_run: bool) -> Sink<'_> {
        Sink::new(&*self.platform, self.msg, dry_run)
    }

    /// The engine that applies and removes plans, for this run.
    pub(crate) fn engine(&self, args: &Common) -> Engine<'_> {
        Engine::new(&*self.platform, self.msg, self.sink(args.dry_run))
            .with_lock_dir(&self.cfg.lock_dir)
    }

    pub(crate) fn selected(&self) -> impl Iterator<Item = &Jail> {
        self.jails.iter().map(|&i| &self.cfg.jails[i])
    }
}

/// Run `work` for each selected jail in turn; one jail's failure does not stop the
/// others. The status is that of the first jail that failed.
pub(crate) fn each_jail(setup: &Setup, mut work: impl FnMut(&Jail) -> Result<()>) -> ExitCode {
    let mut status = Status::new();
    for jail in setup.selected() {
        if signals::interrupted() {
            break;
        }
        if let Err(err) = work(jail).with_context(|| jail.name.clone()) {
            setup.msg.error(&err);
            failed_json(setup.msg.tool, &jail.name, &err);
            status.add(code_of(&err));
        }
    }
    status.end()
}

/// Run `work` for each selected jail on `pool`, as many at a time as it has
/// threads, and `tell` each result (which gives that jail's status) in the order
/// the jails were given: a result is held until those before it are told. The
/// status is [`each_jail`]'s; once interrupted no jail is started, and those
/// that finished are told all the same.
pub(crate) fn each_jail_par<T: Send>(
    setup: &Setup,
    pool: &rayon::ThreadPool,
    work: impl Fn(&Jail) -> T + Sync,
    mut tell: impl FnMut(T) -> ExitCode,
) -> ExitCode {
    let mut status = Status::new();
    let work = &work;
    // FIFO: the jails start in the order given.
    pool.in_place_scope_fifo(|scope| {
        let results: Vec<_> = setup
            .selected()
            .map(|jail| {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                scope.spawn_fifo(move |_| {
                    if !signals::interrupted() {
                        // The receiver is dropped only after every result is read.
                        let _ = tx.send(work(jail));
                    }
                });
                rx
            })
            .collect();
        // A jail not started (interrupted) sends nothing: its sender is dropped.
        for rx in results {
            if let Ok(result) = rx.recv() {
                status.add(tell(result));
            }
        }
    });
    status.end()
}

/// A run's status over its jails: that of the first jail, in the order given,
/// that failed; 130 once interrupted.
struct Status(ExitCode);

impl Status {
    fn new() -> Status {
        Status(ExitCode::Ok)
    }

    fn add(&mut self, code: ExitCode) {
        if self.0 == ExitCode::Ok {
            self.0 = code;
        }
    }

    fn end(self) -> ExitCode {
        if signals::interrupted() {
            ExitCode::Interrupted
        } else {
            self.0
        }
    }
}

/// A completion file's name for a tool.
type FileName = fn(&str) -> String;

/// The shells completions are made for: the shell, its directory, its file names.
pub(crate) const SHELLS: [(clap_complete::Shell, &str, FileName); 3] = [
    (clap_complete::Shell::Bash, "bash", |t| t.to_string()),
    (clap_complete::Shell::Zsh, "zsh", |t| format!("_{t}")),
    (clap_complete::Shell::Fish, "fish", |t| format!("{t}.fish")),
];

/// Each tool's command line, for completions.
pub fn commands() -> Vec<clap::Command> {
    use clap::CommandFactory;
    vec![
        jmount::Cli::command(),
        junmount::Cli::command(),
        jclean::Cli::command(),
        jupdate::Cli::command(),
    ]
}

/// Write shell completions for the four tools below `dir`: `bash/TOOL`,
/// `zsh/_TOOL`, `fish/TOOL.fish`. Returns the files written.
pub fn write_completions(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    for (shell, sub, file) in SHELLS {
        let sub_dir = dir.join(sub);
        std::fs::create_dir_all(&sub_dir)?;
        for mut cmd in commands() {
            let name = cmd.get_name().to_string();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
            let path = sub_dir.join(file(&name));
            std::fs::write(&path, out)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// jmount and junmount: for each jail, under its lock, `act` on its plan, then the
/// layers' `--json` records. `failed_too`: a failed jail's layers get their
/// records as well, saying what changed before it failed (junmount; a failed
/// jmount takes back all it mounted, which no record lists).
pub(crate) fn stack_tool(
    tool: &'static str,
    args: &Common,
    failed_too: bool,
    act: impl Fn(&Engine, &crate::plan::JailPlan) -> Result<()>,
) -> ExitCode {
    run(tool, args, |setup| {
        let engine = setup.engine(args);
        Ok(each_jail(setup, |jail| {
            let _lock = setup.lock(&engine.sink, jail)?;
            let plan = crate::plan::plan(&setup.cfg, jail, setup.os, &setup.host)?;
            engine.sink.take();
            let result = act(&engine, &plan);
            if result.is_ok() || failed_too {
                layer_records(tool, &plan, &engine.sink.take());
            }
            result
        }))
    })
}

/// jmount's and junmount's `--json` records: one object per layer of the plan, with
/// what this run changed there (`changed` true exactly when it made a directory or
/// a mount, or removed one) and the mounts it made or removed, in order, each with
/// `"action"`: `mount` or `unmount`.
pub(crate) fn layer_records(
    tool: &str,
    plan: &crate::plan::JailPlan,
    changes: &[crate::action::Change],
) {
    use crate::action::Did;
    use crate::report::path_json;
    if !crate::report::json() {
        return;
    }
    // In the order the run went: junmount takes the layers down in reverse.
    let layers: Vec<&crate::plan::LayerPlan> = if tool == "junmount" {
        plan.layers.iter().rev().collect()
    } else {
        plan.layers.iter().collect()
    };
    for layer in layers {
        // A tmpfs upper's changes are its layer's, under the layer's name.
        let st = &layer.stack;
        let mine: Vec<&Did> = changes
            .iter()
            .filter(|sub_dir| sub_dir.layer == st.layer)
            .map(|c| &c.did)
            .collect();
        let mounts: Vec<serde_json::Value> = mine
            .iter()
            .filter_map(|sub_dir| match sub_dir {
                Did::Mount(k, src, t) => Some(
                    serde_json::json!({"action": "mount", "type": k, "source": path_json(src), "target": path_json(t)}),
                ),
                Did::Unmount(k, src, t) => Some(
                    serde_json::json!({"action": "unmount", "type": k, "source": path_json(src), "target": path_json(t)}),
                ),
                Did::Mkdir | Did::Mode | Did::Discard { .. } => None,
            })
            .collect();
        // A tmpfs upper's content, gone with it: what it held.
        let discarded = mine.iter().find_map(|did| match did {
            Did::Discard { files, bytes } => {
                Some(serde_json::json!({"files": files, "bytes": bytes}))
            }
            _ => None,
        });
        let mut record = serde_json::json!({"jail": plan.jail, "layer": st.layer,
                           "target": path_json(&st.target.path),
                           "changed": !mine.is_empty(), "mounts": mounts});
        if let Some(discarded) = discarded {
            record["discarded"] = discarded;
        }
        crate::report::json_record(tool, record);
    }
}

/// With `--json`, a failed jail is a record too: `{"tool", "jail", "error", "exit"}`.
pub(crate) fn failed_json(tool: &str, jail: &str, e: &anyhow::Error) {
    if crate::report::json() {
        crate::report::json_record(
            tool,
            serde_json::json!({"jail": jail, "error": crate::exit::message(e), "exit": code_of(e).code()}),
        );
    }
}

/// Load, then run `body`: an error loading, or one `body` returns, is said here
/// on one line and gives the exit status.
pub(crate) fn run(
    tool: &'static str,
    args: &Common,
    body: impl FnOnce(&Setup) -> Result<ExitCode>,
) -> ExitCode {
    signals::install();
    crate::report::set_tool(tool);
    crate::report::set_json(args.json());
    crate::report::set_header(tool, args.dry_run);
    let code = Setup::load(tool, args)
        .and_then(|setup| body(&setup))
        .unwrap_or_else(|e| {
            Messages {
                tool,
                level: Verbosity::Normal,
            }
            .error(&e);
            code_of(&e)
        });
    if signals::interrupted() {
        crate::report::interrupted_note();
    }
    // Output that did not reach stdout (a full disk): 74, unless a jail failed
    // first or the run was interrupted.
    match code {
        ExitCode::Ok if crate::report::stdout_failed() => ExitCode::IoErr,
        c => c,
    }
}

/// A pool of `threads` workers (0: one per core).
pub(crate) fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|err| Domain::error(ThreadPoolError(err)))
}

/// The workers cannot be had (rayon's error, the cause shown after it).
#[derive(Debug)]
pub(crate) struct ThreadPoolError(rayon::ThreadPoolBuildError);

impl std::fmt::Display for ThreadPoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("thread pool")
    }
}

impl std::error::Error for ThreadPoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl Coded for ThreadPoolError {
    /// 69; a thread refused to the caller (the system call's errno, rayon's
    /// cause) 77: the cause is who runs the tool.
    fn code(&self) -> ExitCode {
        use std::error::Error;
        let refused = self
            .0
            .source()
            .and_then(|cause| cause.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                io.kind() == std::io::ErrorKind::PermissionDenied
                    || matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
            });
        if refused {
            ExitCode::NoPerm
        } else {
            ExitCode::Unavailable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rayon's one error a test can make: a second global pool.
    #[test]
    fn thread_pool_error_code_and_line() {
        let build = || rayon::ThreadPoolBuilder::new().build_global();
        let _ = build();
        crate::exit::check_domain(
            ThreadPoolError(build().unwrap_err()),
            ExitCode::Unavailable,
            "thread pool: The global thread pool has already been initialized.",
        );
    }
}
