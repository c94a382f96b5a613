//! What `junmount -f` leaves behind, and what junmount, jmount and jclean say:
//! forced holders named, uppers of detached unions refused while in use (Linux),
//! mounts named by type, foreign mounts with one advice.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::process::{Child, Command};

use jlayers_tests::{Backend, Sandbox, on_both, sandbox};

on_both!(
    forced_unmount_names_its_holders,
    junmount_verbose_names_types_json_in_order,
    mount_below_target_named,
    foreign_mount_same_advice,
    status_without_jail_shows_every_jail,
    jclean_only_read_note_once,
);

/// A process with its working directory in j1's ports layer.
fn holder(sb: &Sandbox) -> Child {
    Command::new("sleep")
        .arg("60")
        .current_dir(sb.path("j1/usr/ports/editors"))
        .spawn()
        .unwrap()
}

fn end(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

fn forced_unmount_names_its_holders(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.run("jmount", &["j1"]).ok();
        let busy = holder(sb);
        let held = format!("held by pid {} sleep (cwd)", busy.id());
        // Named even with -q: what -f forced is never silent.
        let o = sb.run("junmount", &["-q", "-f", "j1"]);
        o.ok().err_has("forced off").err_has(&held);
        assert!(sb.mounts().is_empty());
        end(busy);
    });
}

/// Linux: the union junmount -f detached lives on while its holder does, and
/// writes into the upper: jclean and jmount refuse that upper (75, the holder
/// named) until the holder is gone, then both work, and the note is dropped.
#[cfg(target_os = "linux")]
#[test]
fn detached_upper_refused_while_in_use() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        sb.run("jmount", &["j1"]).ok();
        std::fs::write(sb.path("j1/usr/ports/editors/vim/work"), "built").unwrap();
        let busy = holder(sb);
        let held = format!("held by pid {} sleep (cwd)", busy.id());
        sb.run("junmount", &["-f", "j1"])
            .ok()
            .err_has(&held)
            .err_has("detached union still uses");
        assert!(sb.mounts().is_empty());
        assert!(sb.path("run/j1.detached").exists());
        // The detached union still writes into the upper.
        let cwd = format!("/proc/{}/cwd/vim/more", busy.id());
        std::fs::write(cwd, "more").unwrap();
        assert!(sb.path("upper/j1/ports/editors/vim/more").exists());

        let o = sb.run("jclean", &["j1"]);
        o.code(75)
            .err_has("ports")
            .err_has("still in use by the union junmount -f detached")
            .err_has(&held)
            .err_has("nothing deleted");
        assert!(sb.path("upper/j1/ports/editors/vim/work").exists());
        // Counting only reads: allowed.
        sb.run("jclean", &["-n", "j1"]).ok();
        let o = sb.run("jmount", &["j1"]);
        o.code(75)
            .err_has("ports")
            .err_has(&held)
            .err_has("nothing mounted");
        assert!(sb.mounts().is_empty());
        // The other jail is not concerned.
        sb.run("jmount", &["j2"]).ok();
        sb.run("junmount", &["j2"]).ok();

        end(busy);
        sb.run("jclean", &["j1"]).ok();
        assert!(!sb.path("upper/j1/ports/editors/vim/work").exists());
        assert!(!sb.path("run/j1.detached").exists());
        sb.run("jmount", &["j1"]).ok();
        sb.run("junmount", &["j1"]).ok();
    });
}

/// A note whose device is mounted again belongs to another file system now: it
/// is stale, whoever uses that device.
#[cfg(target_os = "linux")]
#[test]
fn detached_note_with_a_reused_device_is_stale() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        sb.run("jmount", &["j1"]).ok();
        let busy = holder(sb);
        sb.run("junmount", &["-f", "j1"]).ok();
        end(busy);
        // Forge the note onto a device that is mounted and used: the test's own
        // overlay, j2's union after jmount.
        sb.run("jmount", &["j2"]).ok();
        let line = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep ' {}/j2/usr/ports ' /proc/self/mountinfo | grep overlay | cut -d' ' -f3",
                sb.dir.display()
            ))
            .output()
            .unwrap();
        let dev = String::from_utf8(line.stdout).unwrap().trim().to_string();
        assert!(dev.contains(':'), "j2's overlay device: {dev:?}");
        let note = std::fs::read_to_string(sb.path("run/j1.detached")).unwrap();
        let v: serde_json::Value = serde_json::from_str(note.lines().next().unwrap()).unwrap();
        let forged = note.replace(v["dev"].as_str().unwrap(), &dev);
        std::fs::write(sb.path("run/j1.detached"), forged).unwrap();
        let user = Command::new("sleep")
            .arg("60")
            .current_dir(sb.path("j2/usr/ports/editors"))
            .spawn()
            .unwrap();
        sb.run("jmount", &["j1"]).ok();
        assert!(!sb.path("run/j1.detached").exists());
        end(user);
    });
}

/// `junmount -v` says what it unmounted by type, as `jmount -v` says what it
/// mounted; `--json` gives the layers in the order they came down.
fn junmount_verbose_names_types_json_in_order(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.run("jmount", &["j1"]).ok();
        let o = sb.run("junmount", &["-v", "j1"]);
        o.ok();
        let lines: Vec<&str> = o.stderr.lines().collect();
        let ports = sb.path("j1/usr/ports");
        let want = [
            format!(
                "junmount: j1: distfiles: unmounted null mount of {} on {}/distfiles",
                sb.path("distfiles").display(),
                ports.display()
            ),
            format!(
                "junmount: j1: ports: unmounted union mount of {} on {}",
                sb.path("upper/j1/ports").display(),
                ports.display()
            ),
            format!(
                "junmount: j1: ports: unmounted null mount of {} on {}",
                sb.path("ports").display(),
                ports.display()
            ),
        ];
        assert_eq!(lines, want, "{}", o.stderr);

        sb.run("jmount", &["j1"]).ok();
        let o = sb.run("junmount", &["--json", "j1"]);
        o.ok();
        let records = jlayers_tests::json_lines(&o.stdout);
        let order: Vec<(&str, &str)> = records
            .iter()
            .flat_map(|r| {
                let layer = r["layer"].as_str().unwrap();
                r["mounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |m| (layer, m["type"].as_str().unwrap()))
            })
            .collect();
        assert_eq!(
            order,
            [("distfiles", "null"), ("ports", "union"), ("ports", "null")],
            "{}",
            o.stdout
        );
    });
}

/// A mount below a target, made by hand, is what keeps the target busy:
/// junmount names it (not "a process has a file open") and unmounts nothing.
fn mount_below_target_named(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.run("jmount", &["j1"]).ok();
        let scratch = sb.path("j1/usr/ports/scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        sb.tmpfs(&scratch);
        let before = sb.mounts().len();
        let o = sb.run("junmount", &["j1"]);
        o.code(75)
            .err_has(&format!(
                "tmpfs from tmpfs is mounted below it, on {}",
                scratch.display()
            ))
            .err_has(&format!("umount {}", scratch.display()))
            .err_has("nothing unmounted");
        assert!(!o.stderr.contains("a process"), "{}", o.stderr);
        assert_eq!(sb.mounts().len(), before, "nothing unmounted");
        sb.sh(&format!("umount {}", scratch.display())).ok();
        sb.run("junmount", &["j1"]).ok();
        assert!(sb.mounts().is_empty());
    });
}

/// A foreign mount at a target: jmount, junmount and jclean give the same
/// advice (`umount TARGET`); none says junmount, which leaves it alone.
fn foreign_mount_same_advice(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        let target = sb.path("j1/usr/ports");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::create_dir_all(sb.path("upper/j1/ports")).unwrap();
        sb.tmpfs(&target);
        let advice = format!("(to take it off: umount {})", target.display());
        let mount = sb.run("jmount", &["j1"]);
        let unmount = sb.run("junmount", &["j1"]);
        let clean = sb.run("jclean", &["j1"]);
        mount.code(69);
        unmount.ok();
        clean.code(75);
        for (tool, o) in [
            ("jmount", &mount),
            ("junmount", &unmount),
            ("jclean", &clean),
        ] {
            assert!(o.stderr.contains(&advice), "{tool}: {}", o.stderr);
            assert!(!o.stderr.contains("junmount it"), "{tool}: {}", o.stderr);
        }
        assert_eq!(sb.mounts_at("j1/usr/ports"), ["tmpfs"]);
    });
}

/// `jmount --status` with no jail named shows every jail, as jls does.
fn status_without_jail_shows_every_jail(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.run("jmount", &["j1"]).ok();
        let o = sb.run("jmount", &["--status"]);
        o.code(1);
        let jails: Vec<&str> = o
            .stdout
            .lines()
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        assert_eq!(jails, ["j1", "j1", "j2", "j2"], "{}", o.stdout);
        assert_eq!(o.stdout, sb.run("jmount", &["--status", "--all"]).stdout);
        // Other runs still need their jails named.
        sb.run("jmount", &[])
            .code(64)
            .err_has("jmount: no jail named (give JAIL... or --all)");
    });
}

/// `jclean -n` and `--list` on mounted layers: the "only read" note once a run,
/// naming them all, and never with -q.
fn jclean_only_read_note_once(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.run("jmount", &["-a"]).ok();
        for look in [&["-n", "-a"][..], &["--list", "-a"][..]] {
            let o = sb.run("jclean", look);
            o.ok();
            assert_eq!(
                o.stderr.matches("only read").count(),
                1,
                "{look:?}: {}",
                o.stderr
            );
            o.err_has("j1: ports, j2: ports");
            let mut quiet = vec!["-q"];
            quiet.extend_from_slice(look);
            let o = sb.run("jclean", &quiet);
            o.ok();
            assert!(o.stderr.is_empty(), "{quiet:?}: {}", o.stderr);
        }
        sb.run("junmount", &["-a"]).ok();
    });
}

/// An open file is enough to keep the detached union alive, also when the upper
/// lies on another file system than the host tree (a file of the overlay then
/// shows the device of its layer, not the overlay's).
#[cfg(target_os = "linux")]
#[test]
fn detached_upper_held_by_an_open_file() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        std::fs::create_dir_all(sb.path("upper")).unwrap();
        sb.tmpfs(&sb.path("upper"));
        sb.run("jmount", &["j1"]).ok();
        let file = sb.path("j1/usr/ports/editors/vim/Makefile");
        let mut busy = Command::new("sh")
            .arg("-c")
            .arg("exec 3<\"$1\"; exec sleep 60")
            .arg("sh")
            .arg(&file)
            .spawn()
            .unwrap();
        // Until sh has opened it and become sleep.
        let comm = format!("/proc/{}/comm", busy.id());
        while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let held = format!("held by pid {} sleep (open file)", busy.id());
        sb.run("junmount", &["-f", "j1"]).ok().err_has(&held);
        sb.run("jclean", &["j1"]).code(75).err_has(&held);
        sb.run("jmount", &["j1"]).code(75).err_has(&held);
        busy.kill().unwrap();
        busy.wait().unwrap();
        sb.run("jmount", &["j1"]).ok();
        sb.run("junmount", &["j1"]).ok();
    });
}

/// A tmpfs upper goes with its tmpfs: after `junmount -f` the next jmount makes
/// a new one, which the detached union does not use, so nothing is refused.
#[cfg(target_os = "linux")]
#[test]
fn detached_tmpfs_upper_not_refused() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        let conf = jlayers_tests::SCENE_CONF.replace(
            "[jail.j1]\nroot = \"@T/j1\"\n",
            "[jail.j1]\nroot = \"@T/j1\"\nupper_fs = \"tmpfs\"\n",
        );
        sb.conf(&conf);
        sb.run("jmount", &["j1"]).ok();
        let busy = holder(sb);
        let o = sb.run("junmount", &["-f", "j1"]);
        o.ok().err_has("forced off");
        assert!(!o.stderr.contains("detached union"), "{}", o.stderr);
        sb.run("jmount", &["j1"]).ok();
        sb.run("junmount", &["j1"]).ok();
        end(busy);
    });
}
