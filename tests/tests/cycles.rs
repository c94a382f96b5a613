//! The administrator's cycles around the tools (issue 29): the weekly clean as one
//! command (`jclean --remount`), and what a tmpfs upper held when it goes.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::fs;

use jlayers_tests::{Backend, Sandbox, sandbox};

/// The scene's two jails and a third, `j3`, never mounted.
fn three_jails(sb: &Sandbox) {
    sb.scene();
    fs::create_dir_all(sb.path("j3/usr")).unwrap();
    let conf = format!(
        "{}\n[jail.j3]\nroot = \"@T/j3\"\n",
        jlayers_tests::SCENE_CONF
    );
    sb.conf(&conf);
}

/// The files left in a jail's ports upper.
fn upper_files(sb: &Sandbox, jail: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(sb.path(&format!("upper/{jail}/ports")))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                // The nested layer's mount point, made again by every jmount.
                .filter(|n| n != "distfiles")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `jclean --remount --all`: one jail held by a process with its cwd in its view
/// is skipped as a whole (75, the holder named; its layers stay mounted, its
/// upper untouched); the others are taken down, pruned and mounted again as they
/// were (a jail that was not mounted stays unmounted).
fn remount_skips_a_busy_jail(b: Backend) {
    sandbox(b, |sb| {
        three_jails(sb);
        sb.run("jmount", &["j1", "j2"]).ok();
        fs::write(sb.path("j1/usr/ports/j1-wrote"), "1").unwrap();
        fs::write(sb.path("j2/usr/ports/j2-wrote"), "2").unwrap();
        fs::create_dir_all(sb.path("upper/j3/ports")).unwrap();
        fs::write(sb.path("upper/j3/ports/j3-left"), "3").unwrap();
        let before = sb.mounts();
        let mut busy = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(sb.path("j1/usr/ports/editors"))
            .spawn()
            .unwrap();
        let o = sb.run("jclean", &["--remount", "--all"]);
        let pid = busy.id();
        busy.kill().unwrap();
        busy.wait().unwrap();
        o.code(75)
            .err_has("jclean: j1: ports: ")
            .err_has(&format!("held by pid {pid} sleep (cwd)"));
        assert_eq!(upper_files(sb, "j1"), ["j1-wrote"], "busy: left alone");
        assert!(upper_files(sb, "j2").is_empty(), "j2 cleaned");
        assert!(upper_files(sb, "j3").is_empty(), "j3 cleaned");
        let lines: Vec<&str> = o.stdout.lines().collect();
        assert!(
            lines.iter().any(|l| l.starts_with("j2\tports\t1\t")),
            "{}",
            o.stdout
        );
        assert!(!lines.iter().any(|l| l.starts_with("j1\t")), "{}", o.stdout);
        let targets = |ms: &[jlayers_tests::M]| -> Vec<(std::path::PathBuf, String)> {
            ms.iter()
                .map(|m| (m.target.clone(), m.fstype.clone()))
                .collect()
        };
        let mut after = targets(&sb.mounts());
        let mut want = targets(&before);
        after.sort();
        want.sort();
        assert_eq!(after, want, "every jail mounted as it was");
        assert!(sb.mounts_at("j3/usr/ports").is_empty(), "j3 stays down");
        // The view is whole again: the host tree, none of what was pruned.
        assert!(sb.path("j2/usr/ports/editors/vim/Makefile").is_file());
        assert!(!sb.path("j2/usr/ports/j2-wrote").exists());

        // -n: counts what it would free, as if the layers were down; changes
        // nothing; -q: nothing on stdout.
        let o = sb.run("jclean", &["--remount", "-n", "j1"]);
        o.ok();
        assert!(o.stdout.starts_with("j1\tports\t1\t"), "{}", o.stdout);
        assert_eq!(upper_files(sb, "j1"), ["j1-wrote"]);
        // --only: only that kind pruned, the rest kept.
        fs::write(sb.path("j1/usr/ports/editors/vim/Makefile"), "changed").unwrap();
        let o = sb.run("jclean", &["--remount", "--only", "new", "j1"]);
        o.ok();
        assert_eq!(upper_files(sb, "j1"), ["editors"], "the modified copy kept");
        let o = sb.run("jclean", &["--remount", "-q", "j1"]);
        o.ok();
        assert_eq!(o.stdout, "");
        assert!(upper_files(sb, "j1").is_empty());
        assert_eq!(sb.mounts_at("j1/usr/ports").len(), 2);
    });
}

/// A tmpfs upper: junmount says what it discards (-n: would discard), --json
/// carries it on the layer's object, jclean then reports no path for it, and
/// `jclean --remount` gives the jail a fresh tmpfs.
fn tmpfs_upper_says_what_it_discards(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        let conf = jlayers_tests::SCENE_CONF.replace(
            "[jail.j1]\nroot = \"@T/j1\"\n",
            "[jail.j1]\nroot = \"@T/j1\"\nupper_fs = \"tmpfs\"\nupper_size = \"64m\"\n",
        );
        sb.conf(&conf);
        sb.run("jmount", &["j1"]).ok();
        fs::write(sb.path("j1/usr/ports/built"), vec![7u8; 64 * 1024]).unwrap();
        fs::write(sb.path("j1/usr/ports/editors/vim/Makefile"), "changed").unwrap();
        let tmpfs = sb.path("upper/j1/ports");
        let o = sb.run("junmount", &["-n", "j1"]);
        o.ok().err_has(&format!(
            "junmount: j1: ports: tmpfs upper {}: would discard 2 files, ",
            tmpfs.display()
        ));
        let o = sb.run("junmount", &["-n", "--json", "j1"]);
        o.ok();
        let records = jlayers_tests::json_lines(&o.stdout);
        let ports = records
            .iter()
            .find(|r| r["layer"] == "ports")
            .unwrap_or_else(|| panic!("{}", o.stdout));
        assert_eq!(ports["discarded"]["files"], 2, "{ports}");
        assert!(ports["discarded"]["bytes"].as_u64().unwrap() >= 64 * 1024);

        // jclean --remount: a fresh tmpfs, what the old one held said.
        let o = sb.run("jclean", &["--remount", "j1"]);
        o.ok().err_has("discarded 2 files, ");
        assert_eq!(sb.mounts_at("upper/j1/ports"), ["tmpfs"]);
        assert!(!sb.path("j1/usr/ports/built").exists());
        assert!(
            !o.stdout.contains(tmpfs.to_str().unwrap()),
            "no path for an upper that went with its tmpfs: {}",
            o.stdout
        );

        fs::write(sb.path("j1/usr/ports/built"), "again").unwrap();
        let o = sb.run("junmount", &["--json", "j1"]);
        o.ok().err_has(&format!(
            "junmount: j1: ports: tmpfs upper {}: discarded 1 files, ",
            tmpfs.display()
        ));
        let records = jlayers_tests::json_lines(&o.stdout);
        let ports = records.iter().find(|r| r["layer"] == "ports").unwrap();
        assert_eq!(ports["discarded"]["files"], 1, "{ports}");
        assert!(sb.mounts().is_empty());
        // -q: silent.
        sb.run("jmount", &["j1"]).ok();
        fs::write(sb.path("j1/usr/ports/built"), "again").unwrap();
        let o = sb.run("junmount", &["-q", "j1"]);
        o.ok();
        assert_eq!(o.stderr, "");

        // Not mounted: nothing to clean, no path reported.
        let o = sb.run("jclean", &["j1"]);
        o.ok();
        assert_eq!(o.stdout, "", "no line for a tmpfs upper not mounted");
    });
}

/// jupdate says what the tmpfs upper it mounted held when it unmounts it.
fn jupdate_says_what_its_tmpfs_upper_held(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.jail_root("j1", &["sh", "echo", "env"]);
        let conf = jlayers_tests::SCENE_CONF.replace(
            "[jail.j1]\nroot = \"@T/j1\"\n",
            "[jail.j1]\nroot = \"@T/j1\"\nupper_fs = \"tmpfs\"\n",
        );
        sb.conf(&conf);
        let o = sb.run(
            "jupdate",
            &["j1", "--", "sh", "-c", "echo built > /usr/ports/built"],
        );
        o.ok().err_has(&format!(
            "jupdate: j1: ports: tmpfs upper {}: discarded 1 files, ",
            sb.path("upper/j1/ports").display()
        ));
        assert!(sb.mounts().is_empty());
    });
}

/// Interrupted while it prunes, `jclean --remount` stops, puts the jail's layers
/// back as they were and exits 130.
fn interrupted_remount_puts_the_jail_back(b: Backend) {
    sandbox(b, |sb| {
        let up = sb.scene_upper(&[]);
        for d in 0..100 {
            let dir = up.join(format!("d{d}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..200 {
                fs::write(dir.join(format!("f{f}")), "x").unwrap();
            }
        }
        sb.run("jmount", &["j1"]).ok();
        let before = sb.mounts().len();
        let (out, _) = sb.signal_jclean(
            &up,
            100,
            &["--remount", "j1"],
            nix::sys::signal::Signal::SIGTERM,
        );
        jlayers_tests::assert_exit(&out, 130);
        assert_eq!(sb.mounts().len(), before, "put back");
        assert_eq!(sb.mounts_at("j1/usr/ports").len(), 2);
        assert!(sb.path("j1/usr/ports/editors/vim/Makefile").is_file());
        assert!(fs::read_dir(&up).unwrap().count() > 1, "stopped midway");
    });
}

jlayers_tests::on_both!(
    interrupted_remount_puts_the_jail_back,
    remount_skips_a_busy_jail,
    tmpfs_upper_says_what_it_discards,
    jupdate_says_what_its_tmpfs_upper_held
);

/// FreeBSD: `jclean --remount` stops a running jail it manages before taking its
/// layers down and starts it again after; a jail that was stopped stays stopped,
/// a jail it does not manage keeps running.
#[test]
fn remount_restarts_exactly_the_jails_it_stopped() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        for j in ["j1", "j2", "other"] {
            sb.jail_root(j, &["sh"]);
        }
        sb.run("jmount", &["--all"]).ok();
        fs::write(sb.path("j1/usr/ports/j1-wrote"), "1").unwrap();
        fs::write(sb.path("j2/usr/ports/j2-wrote"), "2").unwrap();
        for j in ["j1", "other"] {
            sb.sh_backend(&format!("service jail onestart {j}")).ok();
        }
        // junmount alone refuses a running jail.
        sb.run("junmount", &["j1"])
            .code(75)
            .err_has("junmount: j1: jail is running (jls -j j1 shows it)");
        let o = sb.run("jclean", &["-q", "--remount", "--all"]);
        o.ok();
        assert_eq!(o.stdout, "");
        assert!(upper_files(sb, "j1").is_empty(), "j1 cleaned");
        assert!(upper_files(sb, "j2").is_empty(), "j2 cleaned");
        assert!(sb.jail_running("j1"), "stopped and started again");
        assert!(!sb.jail_running("j2"), "was stopped: left stopped");
        assert!(sb.jail_running("other"), "not jlayers': left running");
        for j in ["j1", "j2"] {
            assert_eq!(sb.mounts_at(&format!("{j}/usr/ports")).len(), 2, "{j}");
        }
        // A jail that does not start again is said, and fails the run (the
        // simulation's hook stands for jail(8)'s failure).
        if jlayers_tests::SIMULATED {
            fs::create_dir_all(sb.path("sim-state/cannot-start")).unwrap();
            fs::write(sb.path("sim-state/cannot-start/j1"), "jail: no\n").unwrap();
            let o = sb.run("jclean", &["-q", "--remount", "j1"]);
            o.code(69).err_has("jclean: j1: start: ");
            assert_eq!(sb.mounts_at("j1/usr/ports").len(), 2, "mounted again");
            fs::remove_file(sb.path("sim-state/cannot-start/j1")).unwrap();
            sb.sh_backend("service jail onestart j1").ok();
        }
        for j in ["j1", "other"] {
            sb.sh_backend(&format!("service jail onestop {j}")).ok();
        }
        sb.run("junmount", &["--all"]).ok();
    });
}

/// `--all` with no jail in the file is a broken template, not a success (78),
/// unless the file says it is meant so (`allow_empty = true`).
#[cfg(target_os = "linux")]
#[test]
fn all_with_no_jail_is_an_error_unless_allowed() {
    sandbox(Backend::Linux, |sb| {
        let layers = "[defaults]\nlock_dir = \"@T/run\"\n\n[[layer]]\nname = \"ports\"\nsource = \"@T/ports\"\n";
        fs::create_dir_all(sb.path("ports")).unwrap();
        sb.conf(layers);
        for tool in jlayers_tests::TOOLS {
            sb.run(tool, &["-q", "--all"])
                .code(78)
                .err_has("no jail configured for --all")
                .err_has("allow_empty = true");
        }
        sb.run("jmount", &["--all", "nosuch"])
            .code(64)
            .err_has("jmount: give jail names or --all, not both");
        sb.conf(&layers.replace("[defaults]\n", "[defaults]\nallow_empty = true\n"));
        for tool in jlayers_tests::TOOLS {
            let o = sb.run(tool, &["--all"]);
            o.ok();
            assert_eq!(o.stdout, "", "{tool}");
        }
    });
}

/// On Linux the upper dirs live under /var/lib/jlayers unless the file says
/// otherwise (the FHS's place for a program's state); FreeBSD keeps
/// /usr/local/var/jlayers.
#[cfg(target_os = "linux")]
#[test]
fn default_upper_root_is_each_systems_own() {
    for (backend, want) in [
        (Backend::Linux, "/var/lib/jlayers/j1/ports"),
        (Backend::FreeBsd, "/usr/local/var/jlayers/j1/ports"),
    ] {
        sandbox(backend, |sb| {
            sb.scene();
            let conf = jlayers_tests::SCENE_CONF.replace("upper_root = \"@T/upper\"\n", "");
            sb.conf(&conf);
            let o = sb.run("jmount", &["-n", "j1"]);
            o.ok();
            assert!(o.stdout.contains(want), "{backend:?}: {}", o.stdout);
        });
    }
}
