//! `--layer NAME`: jmount, junmount, jclean and `jmount --status` work on that layer
//! of each jail (with the layers nested in it), so that one layer's host tree can
//! be updated across all jails while the others stay as they are.

use std::fs;

use jlayers_tests::{Backend, Sandbox, UNION_FSTYPE, on_both, sandbox};

on_both!(one_layer_down_and_up, nested_needs_its_parent);

/// The fstypes at j1's ports target and at its nested distfiles target.
fn stacks(sb: &Sandbox, jail: &str) -> (Vec<String>, Vec<String>) {
    (
        sb.mounts_at(&format!("{jail}/usr/ports")),
        sb.mounts_at(&format!("{jail}/usr/ports/distfiles")),
    )
}

/// `--layer ports` takes ports down and puts it back with distfiles, which stands
/// on it, and says so; `--layer distfiles` alone leaves ports mounted; `--status
/// --layer` shows only those; an unknown name is a usage error.
fn one_layer_down_and_up(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.run("jmount", &["--all"]).ok();
        let all = sb.mounts();
        assert_eq!(all.len(), 6, "{all:?}");

        let o = sb.run("junmount", &["--layer", "distfiles", "j1"]);
        o.ok();
        assert_eq!(o.stderr, "", "nothing taken along");
        let (ports, distfiles) = stacks(sb, "j1");
        assert_eq!(ports.len(), 2, "ports stays: {ports:?}");
        assert!(distfiles.is_empty(), "{distfiles:?}");
        let o = sb.run("jmount", &["--status", "--layer", "distfiles", "--all"]);
        o.code(1);
        let t = |rel: &str| sb.path(rel).display().to_string();
        assert_eq!(
            o.stdout,
            format!(
                "j1\tdistfiles\tunmounted\t{}\nj2\tdistfiles\tmounted\t{}\n",
                t("j1/usr/ports/distfiles"),
                t("j2/usr/ports/distfiles")
            )
        );

        let o = sb.run("junmount", &["--layer", "ports", "--all"]);
        o.ok()
            .err_has("junmount: --layer ports: takes the layers nested in it along: distfiles");
        assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
        assert!(sb.mounts().is_empty(), "{:?}", sb.mounts());
        let o = sb.run("junmount", &["-q", "--layer", "ports", "--all"]);
        assert_eq!(o.ok().stderr, "", "-q: no note");

        let o = sb.run("jmount", &["-q", "--layer", "ports", "--all"]);
        assert_eq!(o.ok().stderr, "");
        assert_eq!(sb.mounts(), all, "every jail as it was");
        let (ports, distfiles) = stacks(sb, "j2");
        assert_eq!(ports.last().map(String::as_str), Some(UNION_FSTYPE));
        assert_eq!(distfiles.len(), 1);

        for tool in ["jmount", "junmount", "jclean"] {
            sb.run(tool, &["--layer", "nope", "--all"])
                .code(64)
                .err_has("--layer nope: no such layer in ");
        }
        assert_eq!(sb.mounts(), all);
    });
}

/// jmount refuses a nested layer named without the layer it stands on: mounted
/// alone it would land in the jail's own directory, under where ports goes later.
fn nested_needs_its_parent(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.run("jmount", &["--layer", "distfiles", "j1"])
            .code(64)
            .err_has("--layer distfiles: jail j1: it stands on layer ports: name that too");
        assert!(sb.mounts().is_empty());
        sb.run(
            "jmount",
            &["--layer", "distfiles", "--layer", "ports", "j1"],
        )
        .ok();
        assert_eq!(sb.mounts().len(), 3);
        // jclean of one layer: only that layer's upper is touched.
        let up = sb.path("upper/j1/ports");
        fs::write(up.join("built"), "x").unwrap();
        sb.run("junmount", &["j1"]).ok();
        sb.run("jclean", &["-q", "--layer", "distfiles", "j1"]).ok();
        assert!(up.join("built").exists(), "ports untouched");
        sb.run("jclean", &["-q", "--layer", "ports", "j1"]).ok();
        assert!(!up.join("built").exists());
    });
}

/// The documented cycle for a host tree update, with one jail busy: junmount
/// refuses that jail (75, its holder named), so `&&` skips the update; jmount puts
/// back the jails that were taken down; the host tree is untouched and every jail
/// is as it was.
#[cfg(target_os = "linux")]
#[test]
fn host_tree_update_cycle_skips_when_busy() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        sb.run("jmount", &["--all"]).ok();
        let sorted = || {
            let mut mounts = sb.mounts();
            mounts.sort();
            mounts
        };
        let before = sorted();
        let mut holder = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(sb.path("j2/usr/ports"))
            .spawn()
            .unwrap();
        let bin = jlayers_tests::bin_dir();
        let conf = sb.path("jlayers.conf");
        let script = format!(
            "{j}/junmount -q -c {c} --layer ports --all && touch {t}/ports/updated; \
             {j}/jmount -q -c {c} --layer ports --all",
            j = bin.display(),
            c = conf.display(),
            t = sb.dir.display()
        );
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(&script);
        sb.backend_env(&mut cmd);
        let o = jlayers_tests::Out::from(cmd.output().unwrap());
        o.ok().err_has(&format!("held by pid {}", holder.id()));
        assert!(
            !sb.path("ports/updated").exists(),
            "the host tree untouched"
        );
        assert_eq!(sorted(), before, "every jail as it was");
        holder.kill().unwrap();
        holder.wait().unwrap();
    });
}
