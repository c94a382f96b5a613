//! Command lines, exit statuses and messages that scripts rely on, through the
//! Linux backend (the same code parses and reports for both).
#![cfg(target_os = "linux")]

use std::io::Write;
use std::process::Stdio;

use jlayers_tests::{Backend, sandbox};

#[test]
fn usage_errors_are_64() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        for tool in ["jmount", "junmount"] {
            sb.run(tool, &[])
                .code(64)
                .err_has(&format!("{tool}: no jail named"));
            sb.run(tool, &["nosuch"])
                .code(64)
                .err_has("nosuch: no such jail in");
            sb.run(tool, &["--bogus"])
                .code(64)
                .err_has(&format!("{tool}: unexpected argument '--bogus'"));
            sb.run(tool, &["--all", "j1"]).code(64);
            sb.run(tool, &["-q", "-v", "j1"]).code(64);
            let o = sb.run(tool, &["nosuch"]);
            assert_eq!(o.stderr.lines().count(), 1, "one line: {}", o.stderr);
        }
        // Nothing was done for the known jail named next to an unknown one.
        sb.run("jmount", &["j1", "nosuch"]).code(64);
        assert!(sb.mounts().is_empty());
    });
}

#[test]
fn help_and_version_exit_0() {
    sandbox(Backend::Linux, |sb| {
        for tool in ["jmount", "junmount"] {
            let o = sb.cmd(tool).arg("--help").output().unwrap();
            assert!(o.status.success());
            assert!(String::from_utf8_lossy(&o.stdout).contains("--dry-run"));
            let o = sb.cmd(tool).arg("-V").output().unwrap();
            assert!(String::from_utf8_lossy(&o.stdout).starts_with(tool));
        }
    });
}

#[test]
fn jail_names_from_stdin() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        let mut c = sb.cmd("jmount");
        c.arg("-c")
            .arg(sb.path("jlayers.conf"))
            .arg("-")
            .stdin(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"j2\n\nj1\n")
            .unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(sb.mounts().len(), 6);
        sb.run("junmount", &["--all"]).ok();
    });
}

#[test]
fn config_errors_are_78_with_position() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        let conf =
            sb.conf("[[layer]]\nname = \"ports\"\nsource = \"/usr/ports\"\n  mdoe = \"union\"\n");
        let o = sb.run("jmount", &["--all"]);
        o.code(78).err_has(&format!(
            "jmount: {}:4:3: unknown field `mdoe`",
            conf.display()
        ));
        assert_eq!(o.stderr.lines().count(), 1);
        sb.conf("[[layer]]\nname='p'\nsource='/p'\n[[layer]]\nname='p'\nsource='/q'\n[jail.a]\nroot='/j'\n");
        sb.run("junmount", &["a"])
            .code(78)
            .err_has("layer p: duplicate layer name");
        let o = sb
            .cmd("jmount")
            .args(["-c", "/nonexistent/jlayers.conf", "--all"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(78));
        // $JLAYERS_CONF is the default path.
        sb.scene();
        let o = sb
            .cmd("jmount")
            .env("JLAYERS_CONF", sb.path("jlayers.conf"))
            .arg("-n")
            .arg("j1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("mount"));
    });
}

#[test]
fn broken_pipe_is_not_an_error() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        // The reader is gone before jmount writes its first line.
        sb.sh(&format!(
            "(sleep 0.3; {} -c jlayers.conf -n --all 2>err; echo $? >status) | true",
            jlayers_tests::bin_dir().join("jmount").display()
        ))
        .ok();
        assert_eq!(std::fs::read_to_string(sb.path("status")).unwrap(), "0\n");
        assert_eq!(std::fs::read_to_string(sb.path("err")).unwrap(), "");
    });
}

#[test]
fn bad_platform_is_a_usage_error() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        let o = sb
            .cmd("jmount")
            .env("JLAYERS_PLATFORM", "solaris")
            .args(["-c"])
            .arg(sb.path("jlayers.conf"))
            .arg("j1")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(64));
    });
}
