//! Command lines, exit statuses and messages that scripts rely on, through the
//! Linux backend (the same code parses and reports for both).
#![cfg(target_os = "linux")]

use std::io::Write;
use std::process::{Command, Stdio};

use jlayers_tests::{Backend, sandbox};

/// Run `c`: it exits `code`, saying exactly `stderr`.
#[track_caller]
fn fails_with(c: &mut Command, code: i32, stderr: &str) {
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(code));
    assert_eq!(String::from_utf8_lossy(&o.stderr), stderr);
}

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
            sb.run(tool, &["--all", "j1"])
                .code(64)
                .err_has(&format!("{tool}: give jail names or --all, not both"));
            sb.run(tool, &["-q", "-v", "j1"]).code(64).err_has(&format!(
                "{tool}: the argument '--quiet' cannot be used with '--verbose'"
            ));
            let o = sb.run(tool, &["nosuch"]);
            assert_eq!(o.stderr.lines().count(), 1, "one line: {}", o.stderr);
        }
        // Nothing was done for the known jail named next to an unknown one.
        sb.run("jmount", &["j1", "nosuch"])
            .code(64)
            .err_has("jmount: nosuch: no such jail in");
        assert!(sb.mounts().is_empty());
    });
}

#[test]
fn help_and_version_exit_0() {
    use jlayers_tests::TOOLS;
    let commands = jlayers::cmd::commands();
    let names: Vec<_> = commands.iter().map(|c| c.get_name().to_string()).collect();
    assert_eq!(names, TOOLS, "one command line per tool");
    sandbox(Backend::Linux, |sb| {
        for mut cmd in commands {
            let tool = cmd.get_name().to_string();
            let version = format!("{tool} {}\n", env!("CARGO_PKG_VERSION"));
            for flag in ["-V", "--version"] {
                let o = sb.cmd(&tool).arg(flag).output().unwrap();
                assert_eq!(o.status.code(), Some(0), "{tool} {flag}");
                assert_eq!(String::from_utf8_lossy(&o.stdout), version, "{tool} {flag}");
                assert!(o.stderr.is_empty(), "{tool} {flag}");
            }
            let help = |flag: &str| {
                let o = sb.cmd(&tool).arg(flag).output().unwrap();
                assert_eq!(o.status.code(), Some(0), "{tool} {flag}");
                assert!(o.stderr.is_empty(), "{tool} {flag}");
                String::from_utf8(o.stdout).unwrap()
            };
            let (short, long) = (help("-h"), help("--help"));
            assert!(
                short.contains(&format!("Usage: {tool} [OPTIONS]")) && long.len() > short.len(),
                "{tool}: -h a summary, --help the long form:\n{short}\n{long}"
            );
            // Every option the parser takes, with its short form, is on an
            // option line of both helps (`  -c, --config <FILE>`).
            cmd.build();
            let mut n = 0;
            for arg in cmd.get_arguments().filter(|a| !a.is_positional()) {
                assert!(!arg.is_hide_set(), "{tool}: hidden option {}", arg.get_id());
                let long_flag = format!("--{}", arg.get_long().unwrap());
                let want = match arg.get_short() {
                    Some(c) => format!("-{c}, {long_flag}"),
                    None => format!("    {long_flag}"),
                };
                for (which, text) in [("-h", &short), ("--help", &long)] {
                    assert!(
                        text.lines().any(|l| {
                            l.starts_with("  ")
                                && l.contains(&want)
                                && l[l.find(&want).unwrap() + want.len()..]
                                    .chars()
                                    .next()
                                    .is_none_or(|c| c == ' ')
                        }),
                        "{tool} {which} does not list `{want}`:\n{text}"
                    );
                }
                n += 1;
            }
            assert!(n >= 8, "{tool}: only {n} options");
        }
    });
}

#[test]
fn jail_names_from_stdin() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        let from_stdin = |input: &'static [u8]| {
            let mut c = sb.tool("jmount", &["-"]);
            c.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            child.stdin.take().unwrap().write_all(input).unwrap();
            jlayers_tests::Out::from(child.wait_with_output().unwrap())
        };
        // Blank and white-space lines skipped, names trimmed (a CR too), a name
        // given twice taken once; the jails in the order given.
        from_stdin(b"j2\n\n  \t\r\n j1 \r\nj2\n").ok();
        let jails: Vec<String> = sb
            .mounts()
            .iter()
            .map(|m| {
                let rel = m.target.strip_prefix(&sb.dir).unwrap();
                rel.iter().next().unwrap().to_string_lossy().into_owned()
            })
            .collect();
        assert_eq!(jails, ["j2", "j2", "j2", "j1", "j1", "j1"], "{jails:?}");
        sb.run("junmount", &["--all"]).ok();
        from_stdin(b"\n \r\n")
            .code(64)
            .err_has("jmount: no jail named on standard input");
        assert!(sb.mounts().is_empty());
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
        fails_with(
            sb.cmd("jmount")
                .args(["-c", "/nonexistent/jlayers.conf", "--all"]),
            78,
            "jmount: /nonexistent/jlayers.conf: No such file or directory\n",
        );
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
        // The plan is the file's: its sources, targets and upper_root.
        let p = |rel: &str| sb.path(rel).display().to_string();
        // The dirs around the upper are closed (jlayers.conf(5) upper_group).
        let want = [
            format!("mkdir -p -m 0700 {}", p("upper")),
            format!("mkdir -p -m 0700 {}", p("upper/j1")),
            format!("mkdir -p -m 0700 {}", p("upper/j1/ports.work")),
            format!("mkdir -p {}", p("upper/j1/ports")),
            format!("mkdir -p {}", p("j1/usr/ports")),
            format!("mount --bind {} {}", p("ports"), p("j1/usr/ports")),
            format!(
                "mount -t overlay {up} -o noatime,lowerdir={t},upperdir={up},workdir={up}.work {t}",
                up = p("upper/j1/ports"),
                t = p("j1/usr/ports")
            ),
            format!("mkdir -p {}", p("j1/usr/ports/distfiles")),
            format!(
                "mount --bind {} {}",
                p("distfiles"),
                p("j1/usr/ports/distfiles")
            ),
        ];
        assert_eq!(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .collect::<Vec<_>>(),
            want
        );
        assert!(sb.mounts().is_empty(), "-n mounts nothing");
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
        fails_with(
            sb.tool("jmount", &["j1"])
                .env("JLAYERS_PLATFORM", "solaris"),
            64,
            "jmount: JLAYERS_PLATFORM=solaris: expected freebsd or linux\n",
        );
        assert!(sb.mounts().is_empty());
    });
}
