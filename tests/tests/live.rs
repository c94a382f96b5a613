//! What `junmount -f` leaves behind, and what junmount, jmount and jclean say:
//! forced holders named, uppers of detached unions refused while in use (Linux),
//! mounts named by type, foreign mounts with one advice.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::process::{Child, Command};

use jlayers_tests::{Backend, Sandbox, on_both, sandbox};

on_both!(forced_unmount_names_its_holders,);

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
