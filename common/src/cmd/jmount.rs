//! jmount(8): stack each jail's layers; `--status` shows how they stand.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::PathBuf;

use crate::cli::{Common, LayerChoice, Nested};
use crate::exit::ExitCode;
use crate::mounts::Mount;
use crate::plan::{JailPlan, State, plan};
use crate::report::{emit, path_json};

use super::{Setup, each_jail, run, stack_tool};

/// Stack each jail's layers of a shared host tree; silent on success.
///
/// For each jail, each layer in the configuration's order: the upper (and work) dir
/// is made if missing, the target checked (no symbolic link below the jail root),
/// then the host tree is null mounted there and, for a union layer, the jail's upper
/// dir union mounted on top. What is mounted already is left alone, a half-built
/// stack is completed, and a failure unmounts what the run mounted for that jail.
#[derive(clap::Parser, Debug)]
#[command(name = "jmount", version, after_long_help = crate::help::after_long_help("jmount"))]
#[command(mut_arg("dry_run", |a| a.help(
    "Print the sh commands that would do it (runnable: pipe them to sh); change nothing")))]
#[command(mut_arg("json", |a| a.help(
    "Say per layer what was done (--status: its state), as JSON Lines on stdout")))]
pub struct Cli {
    #[command(flatten)]
    pub(crate) common: Common,

    /// Show how each layer stands instead; exit 0 if all are mounted, else 1
    ///
    /// One line per layer of the named jails (none named: every jail): JAIL,
    /// LAYER, STATE (mounted, unmounted, partial, foreign), TARGET, TAB-separated;
    /// exit 0 when every layer shown is mounted as configured, 1 otherwise. Takes
    /// no lock, changes nothing.
    #[arg(long = "status", conflicts_with = "dry_run")]
    pub(crate) status: bool,

    #[command(flatten)]
    pub(crate) layers: LayerChoice,
}

pub fn main(cli: &Cli) -> ExitCode {
    if cli.status {
        // No jail named: every jail, as jls(8) lists them all.
        let mut args = cli.layers.apply(&cli.common, Nested::Alone);
        args.all |= args.jails.is_empty();
        return status(&args);
    }
    let common = cli.layers.apply(&cli.common, Nested::NeedsParent);
    stack_tool("jmount", &common, false, |engine, plan| {
        engine.mount_jail(plan).map(drop)
    })
}

/// A layer's state from its stacks' (the layer's own, and a tmpfs upper's).
fn layer_state(states: &[(State, usize)]) -> &'static str {
    if states
        .iter()
        .any(|(setup, _)| matches!(setup, State::Foreign { .. }))
    {
        return "foreign";
    }
    let full = |(setup, len): &(State, usize)| *setup == State::Mounted(*len);
    let none = |(setup, _): &(State, usize)| *setup == State::Mounted(0);
    if states.iter().all(full) {
        "mounted"
    } else if states.iter().all(none) {
        "unmounted"
    } else {
        "partial"
    }
}

/// `--status`: read the mount table, say how each layer stands; no lock.
fn status(args: &Common) -> ExitCode {
    run("jmount", args, |setup| {
        let mut all_mounted = true;
        // Each dir once: upper_root is every jail's.
        let mut warned = std::collections::HashSet::new();
        let code = each_jail(setup, |jail| {
            let plan = plan(&setup.cfg, jail, setup.os, &setup.host)?;
            let table = setup.platform.mounts(&plan.root)?;
            warn_guards(setup, &plan, &mut warned);
            all_mounted &= show_layers(setup, &plan, table.as_slice());
            Ok(())
        });
        Ok(match code {
            ExitCode::Ok if !all_mounted => ExitCode::NotAllMounted,
            c => c,
        })
    })
}

/// Dirs around the uppers that let host users in: said on stderr (each dir once,
/// `warned`), the records stay as they are.
fn warn_guards(setup: &Setup, plan: &JailPlan, warned: &mut HashSet<PathBuf>) {
    for st in plan.stacks() {
        for (dir, text) in crate::guard::findings(&st.guards, "jmount") {
            if warned.insert(dir) {
                setup.msg.warn(&[&plan.jail, &st.layer], &text);
            }
        }
    }
}

/// A record per layer of the jail: its state and target. Whether all are mounted.
fn show_layers(setup: &Setup, plan: &JailPlan, table: &[Mount]) -> bool {
    let mut all_mounted = true;
    for layer in &plan.layers {
        let st = &layer.stack;
        let states: Vec<(State, usize)> = (layer.stacks())
            .map(|t| (t.state(table, &*setup.platform), t.shape.steps().len()))
            .collect();
        let state = layer_state(&states);
        all_mounted &= state == "mounted";
        let target = &st.target.path;
        if setup.msg.level > crate::report::Verbosity::Quiet {
            emit(
                "jmount",
                &[
                    OsStr::new(&plan.jail),
                    OsStr::new(&st.layer),
                    OsStr::new(state),
                    target.as_os_str(),
                ],
                serde_json::json!({"jail": plan.jail, "layer": st.layer,
                                   "state": state, "target": path_json(target)}),
            );
        }
    }
    all_mounted
}
