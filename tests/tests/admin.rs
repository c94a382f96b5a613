//! What an administrator relies on (issue 18): quiet means quiet, stable order,
//! write errors, not root, the status view, jupdate's diagnostics and log.
// The tests of the Linux backend run on a Linux host only; on FreeBSD their helpers
// are left unused.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::fs;
use std::path::Path;

use jlayers_tests::{Backend, Sandbox, on_both, sandbox};

on_both!(
    quiet_prints_only_errors,
    stable_order,
    write_errors,
    not_root,
    status_view,
    updater_not_found,
    updater_not_executable,
    report_in_a_log,
    log_keeps_history,
    no_line_on_a_spinner,
);

/// A file of `n` bytes in j1's ports upper (the layer is not mounted).
fn upper_file(sb: &Sandbox, jail: &str, name: &str, n: usize) {
    let up = sb.path(&format!("upper/{jail}/ports"));
    fs::create_dir_all(&up).unwrap();
    fs::write(up.join(name), vec![b'x'; n]).unwrap();
}

/// `-q`: no report line for what succeeded, a failure's line and message all
/// the same; `jclean -v` names the upper dirs it pruned.
fn quiet_prints_only_errors(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        upper_file(sb, "j1", "built", 100);
        upper_file(sb, "j2", "built", 100);
        let o = sb.run("jclean", &["-q", "--all"]);
        o.ok();
        assert_eq!(o.stdout, "", "-q: nothing for layers that succeeded");
        assert_eq!(o.stderr, "");

        upper_file(sb, "j1", "built", 100);
        let o = sb.run("jclean", &["-v", "j1"]);
        o.ok().err_has(&format!(
            "jclean: j1: ports: pruned {}: 1 files",
            sb.path("upper/j1/ports").display()
        ));

        // A layer that fails (a mount inside the upper is left) keeps its line.
        let sub = sb.path("upper/j1/ports/sub");
        fs::create_dir_all(&sub).unwrap();
        sb.tmpfs(&sub);
        upper_file(sb, "j2", "built", 100);
        let o = sb.run("jclean", &["-q", "--all"]);
        o.code(69).err_has("not emptied");
        let lines: Vec<&str> = o.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{}", o.stdout);
        assert!(lines[0].starts_with("j1\tports\t"), "{}", o.stdout);
        sb.sh(&format!("umount '{}'", sub.display())).ok();

        // jupdate -q: the failed jail's line and message, nothing for the other.
        for j in ["j1", "j2"] {
            sb.jail_root(j, &["sh", "test", "env", "echo"]);
        }
        fs::write(sb.path("j1/fail"), "").unwrap();
        let o = sb.run(
            "jupdate",
            &[
                "-q",
                "--all",
                "--",
                "/bin/sh",
                "-c",
                "test -e /fail && echo broken && exit 3; exit 0",
            ],
        );
        // The log's last lines are part of the failure: shown with -q (cron mails them).
        o.code(69)
            .err_has("jupdate: j1: update failed with status 3")
            .err_has("jupdate: j1: log: broken");
        let lines: Vec<&str> = o.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{}", o.stdout);
        assert!(lines[0].starts_with("j1\tfailed\t3\t"), "{}", o.stdout);
        fs::remove_file(sb.path("j1/fail")).unwrap();
        let o = sb.run("jupdate", &["-q", "--all", "--", "/bin/sh", "-c", "exit 0"]);
        o.ok();
        assert_eq!(o.stdout, "");
    });
}

/// Reports come in the order the jails were given, whatever finishes first
/// (`jupdate -j 2`: j1 waits until j2 is done); `jclean --list` sorts each
/// layer's entries by path.
fn stable_order(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        for j in ["j1", "j2"] {
            sb.jail_root(j, &["sh", "test", "[", "env", "sleep", "touch"]);
        }
        // j1 ends only once j2 has ended (seen in the shared distfiles dir).
        let wait = "if [ $1 = j1 ]; then i=0; while [ ! -e /usr/ports/distfiles/j2.done ]; \
            do sleep 0.05; i=$((i+1)); [ $i -gt 400 ] && exit 9; done; true; \
            else touch /usr/ports/distfiles/j2.done; fi";
        let conf = jlayers_tests::SCENE_CONF
            .replace(
                "root = \"@T/j1\"",
                &format!("root = \"@T/j1\"\nupdate = [\"sh\", \"-c\", \"{wait}\", \"-\", \"j1\"]"),
            )
            .replace(
                "root = \"@T/j2\"",
                &format!("root = \"@T/j2\"\nupdate = [\"sh\", \"-c\", \"{wait}\", \"-\", \"j2\"]"),
            );
        sb.conf(&conf);
        let o = sb.run("jupdate", &["-j", "2", "j1", "j2"]);
        o.ok();
        let jails: Vec<&str> = o
            .stdout
            .lines()
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        assert_eq!(jails, ["j1", "j2"], "{}", o.stdout);

        // Made in an order that is not the path order. Path order compares
        // component by component: "c" and all below it come before "c-d" ('-' is
        // below '/'). The chain "n/n/..." is deeper than the frames that keep
        // their descriptors: its files after "n" ("z") are reached back through
        // `..`.
        let up = sb.path("upper/j1/ports");
        let mut files: Vec<String> = ["m", "zz", "a", "b/c", "0", "c-d", "c/d", "c/d-e"]
            .map(String::from)
            .to_vec();
        let mut chain = String::from("n");
        for _ in 0..12 {
            files.push(format!("{chain}/z"));
            files.push(format!("{chain}/0"));
            chain.push_str("/n");
        }
        for name in &files {
            let p = up.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, "x").unwrap();
        }
        let o = sb.run("jclean", &["--list", "j1"]);
        o.ok();
        let paths: Vec<&Path> = o
            .stdout
            .lines()
            .map(|l| Path::new(l.rsplit('\t').next().unwrap()))
            .collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "{}", o.stdout);
        // Every entry: the files, and the directories b, c, n and the chain's 11,
        // by their paths in the layer's tree; not distfiles, the nested layer's
        // mount point.
        assert_eq!(paths.len(), files.len() + 3 + 11, "{}", o.stdout);
        assert!(!o.stdout.contains("distfiles"), "{}", o.stdout);
        let at = |p: &str| paths.iter().position(|q| *q == Path::new(p)).unwrap();
        assert!(
            at("c") < at("c/d") && at("c/d-e") < at("c-d"),
            "{}",
            o.stdout
        );
    });
}

/// A tool run with stdout and stderr as given, `-c` the test's config.
fn run_with(
    sb: &Sandbox,
    tool: &str,
    args: &[&str],
    stdout: std::process::Stdio,
    stderr: std::process::Stdio,
) -> jlayers_tests::Out {
    let o = sb
        .cmd(tool)
        .arg("-c")
        .arg(sb.path("jlayers.conf"))
        .args(args)
        .stdout(stdout)
        .stderr(stderr)
        .output()
        .unwrap();
    jlayers_tests::Out::from(o)
}

/// A failed write to stdout is 74 with `TOOL: stdout: ...`, also when stderr
/// fails too (no panic); a closed pipe stays quiet, exit 0.
fn write_errors(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        upper_file(sb, "j1", "built", 100);
        let full = || {
            fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap()
        };
        let o = run_with(
            sb,
            "jclean",
            &["-n", "--all"],
            full().into(),
            std::process::Stdio::piped(),
        );
        o.code(74)
            .err_has("jclean: stdout: No space left on device");
        let o = run_with(sb, "jclean", &["-n", "--all"], full().into(), full().into());
        o.code(74);
        let o = run_with(sb, "jmount", &["-n", "j1"], full().into(), full().into());
        o.code(74);
        assert!(sb.mounts().is_empty());
        let o = run_with(
            sb,
            "jmount",
            &["--help"],
            full().into(),
            std::process::Stdio::piped(),
        );
        o.code(74).err_has("jmount: stdout:");
        // A pipe nobody reads: EPIPE, quiet, 0.
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        let o = run_with(
            sb,
            "jclean",
            &["-n", "--all"],
            w.into(),
            std::process::Stdio::piped(),
        );
        o.ok();
        assert_eq!(o.stderr, "");
        assert!(sb.path("upper/j1/ports/built").exists());
    });
}

/// Not root: 77 and "(run as root)" wherever permission is the cause, the
/// default lock dir included (it was 73). Run as nobody, nothing can be made.
fn not_root(b: Backend) {
    use std::os::unix::fs::PermissionsExt;
    sandbox(b, |sb| {
        sb.scene();
        // The checkout where nobody can reach it, as in root's home (0700): the
        // tools nobody runs are copies in the temp dir, taken before it is hidden.
        drop(sb.cmd_as("jmount", 65534, 65534));
        #[cfg(target_os = "linux")]
        {
            let hidden = jlayers_tests::bin_dir();
            sb.tmpfs(&hidden);
            fs::set_permissions(&hidden, fs::Permissions::from_mode(0o700)).unwrap();
        }
        let as_nobody = |tool: &str, conf: &str| {
            let o = sb
                .cmd_as(tool, 65534, 65534)
                .arg("-c")
                .arg(sb.path(conf))
                .arg("j1")
                .output()
                .unwrap();
            jlayers_tests::Out::from(o)
        };
        // The default lock dir (/run/jlayers, /var/run/jlayers): not ours to make.
        let default_lock = jlayers_tests::SCENE_CONF.replace("lock_dir   = \"@T/run\"\n", "");
        assert_ne!(default_lock, jlayers_tests::SCENE_CONF);
        fs::write(
            sb.path("default-lock.conf"),
            default_lock.replace("@T", sb.dir.to_str().unwrap()),
        )
        .unwrap();
        for tool in ["jmount", "junmount", "jclean", "jupdate"] {
            as_nobody(tool, "default-lock.conf")
                .code(77)
                .err_has("(run as root)");
        }
        // A lock dir root made: the lock file cannot be created by nobody.
        fs::create_dir_all(sb.path("run")).unwrap();
        as_nobody("jmount", "jlayers.conf")
            .code(77)
            .err_has("(run as root)");
        assert!(sb.mounts().is_empty());
    });
}

/// `jmount --status`: JAIL, LAYER, STATE, TARGET per layer; 0 only when every
/// layer shown is mounted as configured; no lock, no change.
fn status_view(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        let t = |rel: &str| sb.path(rel).display().to_string();
        let o = sb.run("jmount", &["--status", "--all"]);
        o.code(1);
        assert_eq!(
            o.stdout,
            format!(
                "j1\tports\tunmounted\t{}\nj1\tdistfiles\tunmounted\t{}\n\
                 j2\tports\tunmounted\t{}\nj2\tdistfiles\tunmounted\t{}\n",
                t("j1/usr/ports"),
                t("j1/usr/ports/distfiles"),
                t("j2/usr/ports"),
                t("j2/usr/ports/distfiles")
            )
        );
        assert!(!sb.path("upper").exists(), "--status made nothing");
        assert!(!sb.path("run").exists(), "--status took no lock");

        sb.run("jmount", &["--all"]).ok();
        sb.run("jmount", &["--status", "j1", "j2"]).ok();
        // The union gone (by hand), the nested layer too: partial, unmounted.
        sb.sh(&format!(
            "umount '{0}/distfiles' && umount '{0}'",
            t("j1/usr/ports")
        ))
        .ok();
        // Something else on j2's nested target.
        sb.tmpfs(&sb.path("j2/usr/ports/distfiles"));
        let o = sb.run("jmount", &["--status", "--json", "--all"]);
        o.code(1);
        let states: Vec<(String, String, String)> = o
            .stdout
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["tool"], "jmount");
                (
                    v["jail"].as_str().unwrap().to_string(),
                    v["layer"].as_str().unwrap().to_string(),
                    v["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String, String)> = [
            ("j1", "ports", "partial"),
            ("j1", "distfiles", "unmounted"),
            ("j2", "ports", "mounted"),
            ("j2", "distfiles", "foreign"),
        ]
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
        assert_eq!(states, want);
        let before = sb.mounts().len();
        sb.run("jmount", &["--status", "-q", "j2"])
            .code(1)
            .ok_or_quiet();
        assert_eq!(sb.mounts().len(), before, "--status changed nothing");
        sb.run("jmount", &["--status", "-n", "j2"])
            .code(64)
            .err_has("jmount: the argument '--status' cannot be used with '--dry-run'");
    });
}

trait Quiet {
    fn ok_or_quiet(&self);
}

impl Quiet for jlayers_tests::Out {
    /// `-q`: no lines at all.
    #[track_caller]
    fn ok_or_quiet(&self) {
        assert_eq!(self.stdout, "");
    }
}

/// An updater that is not in the jail: where it was looked for, 69, and the same
/// line in the jail's log.
fn updater_not_found(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.jail_root("j1", &["sh", "env"]);
        let o = sb.run("jupdate", &["j1", "--", "portmaster", "-a"]);
        o.code(69);
        let line = o
            .stderr
            .lines()
            .find(|l| l.contains("not found"))
            .unwrap_or_else(|| panic!("{}", o.stderr))
            .to_string();
        assert!(
            line.starts_with("jupdate: j1: portmaster: not found in the jail (PATH=/")
                && line.contains("/usr/local/sbin")
                && line.ends_with(')'),
            "{line}"
        );
        assert!(o.stdout.starts_with("j1\tfailed\t-\t"), "{}", o.stdout);
        let log = fs::read_to_string(sb.path("log/j1.log")).unwrap();
        assert!(
            log.lines().any(|l| l == line),
            "{line:?} not in the log:\n{log}"
        );
        assert!(sb.mounts().is_empty());
    });
}

/// An updater that is there but not executable: the command failed (69), not a
/// permission of the administrator's refused (77).
fn updater_not_executable(b: Backend) {
    use std::os::unix::fs::PermissionsExt;
    sandbox(b, |sb| {
        sb.scene();
        sb.jail_root("j1", &["sh", "env"]);
        let tool = sb.path("j1/bin/update-me");
        fs::write(&tool, "#!/bin/sh\necho ran\n").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o644)).unwrap();
        let o = sb.run("jupdate", &["j1", "--", "/bin/update-me"]);
        o.code(69);
        assert!(o.stdout.starts_with("j1\tfailed\t"), "{}", o.stdout);
        if b == Backend::Linux {
            o.err_has("jupdate: j1: /bin/update-me: not executable in the jail");
            assert!(!o.stderr.contains("os error"), "{}", o.stderr);
        } else {
            // jexec's env(1) runs it: its status for a command it cannot run, and
            // the log's tail with its reason.
            o.err_has("jupdate: j1: update failed with status 126")
                .err_has("Permission denied");
        }
        assert!(sb.mounts().is_empty());
    });
}

/// Records appended to a log (`>>clean.log` from cron) are headed by a comment
/// line saying when and what ran, `(dry run)` for `-n`; an interrupted run's end
/// with a line saying its counts are partial. Not on a pipe, a file opened to be
/// rewritten, nor under `-q` when all went well.
fn report_in_a_log(b: Backend) {
    use std::io::Read;
    use std::process::Stdio;
    sandbox(b, |sb| {
        sb.scene();
        upper_file(sb, "j1", "built", 100);
        let log = sb.path("clean.log");
        let append = || {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap()
        };
        let conf = sb.path("jlayers.conf");
        let conf = conf.to_str().unwrap();
        let run = |args: &[&str], out: fs::File| {
            let status = sb.tool("jclean", args).stdout(out).status().unwrap();
            assert!(status.success(), "{args:?}");
        };
        run(&["-n", "j1"], append());
        run(&["-q", "--all"], append());
        upper_file(sb, "j1", "built", 100);
        run(&["j1"], append());
        let text = fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "-q: no header without a record:\n{text}");
        for (header, args) in [
            (lines[0], " UTC (dry run): -c CONF -n j1"),
            (lines[2], " UTC: -c CONF j1"),
        ] {
            assert!(
                header.starts_with("# jclean: 20") && header.ends_with(&args.replace("CONF", conf)),
                "{header}"
            );
        }
        assert!(lines[1].starts_with("j1\tports\t1\t"), "{text}");
        assert!(lines[3].starts_with("j1\tports\t1\t"), "{text}");
        // Not on a pipe, nor a file opened to be rewritten.
        upper_file(sb, "j1", "built", 100);
        let o = sb.run("jclean", &["-n", "j1"]);
        assert!(o.ok().stdout.starts_with("j1\t"), "{}", o.stdout);
        let fresh = sb.path("fresh.log");
        run(&["-n", "j1"], fs::File::create(&fresh).unwrap());
        assert!(fs::read_to_string(&fresh).unwrap().starts_with("j1\t"));

        // Interrupted: the second jail's update still runs when SIGINT comes.
        sb.jail_root("j1", &["sh", "env", "test", "sleep"]);
        sb.jail_root("j2", &["sh", "env", "test", "sleep"]);
        fs::write(sb.path("j2/slow"), "").unwrap();
        let updates = sb.path("update.log");
        let mut child = sb
            .tool(
                "jupdate",
                &[
                    "--all",
                    "--",
                    "sh",
                    "-c",
                    "test -e /slow && exec sleep 30; true",
                ],
            )
            .stdout(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&updates)
                    .unwrap(),
            )
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while !fs::read_to_string(&updates)
            .unwrap_or_default()
            .contains("j1\tok")
            && start.elapsed() < std::time::Duration::from_secs(20)
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let status = child.wait().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(130), "{err}");
        let text = fs::read_to_string(&updates).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("# jupdate: 20"), "{text}");
        assert!(lines[1].starts_with("j1\tok\t0\t"), "{text}");
        assert_eq!(
            lines.last().copied(),
            Some("# interrupted: the counts above are partial"),
            "{text}"
        );
    });
}

/// Each run appends to the jail's log: a one-line header `DATE: jupdate: CMD`
/// (sh-quoted, a newline as `$'\\n'`), then the output; a failure's tail on
/// stderr is this run's only.
fn log_keeps_history(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.jail_root("j1", &["sh", "env", "echo"]);
        let script = "echo first-run\necho 'it''s'";
        sb.run("jupdate", &["j1", "--", "sh", "-c", script]).ok();
        let o = sb.run(
            "jupdate",
            &["j1", "--", "sh", "-c", "echo second-run; exit 2"],
        );
        o.code(69).err_has("jupdate: j1: log: second-run");
        assert!(!o.stderr.contains("first-run"), "{}", o.stderr);
        let log = fs::read_to_string(sb.path("log/j1.log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        let headers: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains(": jupdate: sh -c "))
            .collect();
        assert_eq!(headers.len(), 2, "{log}");
        let date = |h: &str| {
            let d = &h[..23];
            let b = d.as_bytes();
            b[4] == b'-'
                && b[10] == b' '
                && d.ends_with(" UTC")
                && b[..4].iter().all(u8::is_ascii_digit)
        };
        assert!(headers.iter().all(|h| date(h)), "{headers:?}");
        assert_eq!(
            &headers[0][23..],
            ": jupdate: sh -c $'echo first-run\\necho \\'it\\'\\'s\\''"
        );
        assert_eq!(
            &headers[1][23..],
            ": jupdate: sh -c 'echo second-run; exit 2'"
        );
        assert!(log.contains("first-run\nits\n"), "{log}");
        assert!(log.contains("second-run"), "{log}");
        // The header's command, run by sh, is the command that ran.
        let cmd = headers[0].split_once(": jupdate: ").unwrap().1;
        // (FreeBSD's sh reads $'...'; Debian's dash does not, bash does.)
        let shell = if cfg!(target_os = "linux") {
            "bash"
        } else {
            "sh"
        };
        let o = std::process::Command::new(shell)
            .arg("-c")
            .arg(format!("set -- {cmd}; printf '%s|' \"$@\""))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("sh|-c|{script}|")
        );
    });
}

/// `-h` is a short summary; `--help` the long one with EXIT STATUS,
/// ENVIRONMENT, FILES and the manual page; each accurate for its tool.
#[test]
fn help_short_and_long() {
    let help = |tool: &str, flag: &str| {
        let o = std::process::Command::new(jlayers_tests::bin_dir().join(tool))
            .arg(flag)
            .output()
            .unwrap();
        assert!(o.status.success(), "{tool} {flag}");
        String::from_utf8(o.stdout).unwrap()
    };
    for tool in jlayers_tests::TOOLS {
        let (short, long) = (help(tool, "-h"), help(tool, "--help"));
        for want in [
            "EXIT STATUS",
            "ENVIRONMENT",
            "JLAYERS_CONF",
            "JLAYERS_PLATFORM",
            "FILES",
            &format!("See {tool}(8)"),
        ] {
            assert!(long.contains(want), "{tool} --help lacks {want}:\n{long}");
            assert!(
                !short.contains(want) || want.starts_with("JLAYERS_CONF"),
                "{tool} -h has {want}"
            );
        }
        assert!(short.len() * 3 < long.len() * 2, "{tool}: -h is a summary");
        assert!(long.contains(" 75 ") && long.contains(" 77 "), "{tool}");
    }
    // jmount and junmount print no TAB lines (but jmount --status).
    let jm = help("jmount", "-h");
    assert!(!jm.contains("TAB"), "{jm}");
    assert!(!help("junmount", "--help").contains("TAB"));
    // -n prints runnable sh.
    for tool in ["jmount", "junmount"] {
        let h = help(tool, "-h");
        let n = h.lines().find(|l| l.contains("--dry-run")).unwrap();
        assert!(
            n.contains("sh commands") && n.contains("pipe them to sh"),
            "{n}"
        );
    }
    assert!(help("jmount", "--help").contains("\n  1    --status"));
    // jupdate names its default command and the timeout's grace.
    let ju = help("jupdate", "--help");
    assert!(ju.contains("portmaster -a -G --no-confirm"), "{ju}");
    assert!(ju.contains("SIGTERM, then SIGKILL 3"), "{ju}");
    // Ages need units.
    let jc = help("jclean", "-h");
    let age = jc.lines().find(|l| l.contains("--older-than")).unwrap();
    assert!(age.contains("a number and a unit (s, m, h, d"), "{age}");
    let to = ju
        .lines()
        .find(|l| l.contains("Time limit per jail"))
        .unwrap();
    assert!(to.contains("a number and a unit"), "{to}");
}

/// A page rendered as a reader sees it (mandoc, overstrike removed).
fn rendered(page: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../man")
        .join(page);
    let o = std::process::Command::new("mandoc")
        .args(["-Tascii"])
        .arg(&p)
        .output()
        .unwrap_or_else(|e| panic!("mandoc is needed for this test (apt-get install mandoc): {e}"));
    assert!(o.status.success(), "mandoc {page}");
    // Bold and underline are X\bX and _\bX.
    let mut out = Vec::new();
    for &b in &o.stdout {
        if b == 8 {
            out.pop();
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).unwrap()
}

/// The pages say what the tools do: jlayers.conf(5)'s examples, copied, are
/// valid TOML with arrays of strings; jclean(8)'s sizes are as jclean prints
/// them; jupdate(8) gives --timeout's grace; README's cron lines are silent on
/// success.
#[test]
fn pages_match_behaviour() {
    let conf = rendered("jlayers.conf.5");
    let line = |key: &str, nth: usize| -> String {
        conf.lines()
            .map(str::trim)
            .filter(|l| l.starts_with(key) && l.contains("= ["))
            .nth(nth)
            .unwrap_or_else(|| panic!("no `{key} = [...]` example in jlayers.conf(5):\n{conf}"))
            .to_string()
    };
    let text = format!(
        "[defaults]\n{}\n[[layer]]\nname = \"ports\"\nsource = \"/usr/ports\"\n\
         [jail.web]\nroot = \"/jails/web\"\n{}\n{}\n{}\n",
        line("update", 0),
        line("update", 1),
        line("start", 0),
        line("stop", 0)
    );
    let cfg = jlayers::config::Config::parse(
        &text,
        std::path::Path::new("jlayers.conf"),
        jlayers::platform::Os::FreeBsd,
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    assert_eq!(cfg.update, ["portmaster", "-a", "-G", "--no-confirm"]);
    let web = &cfg.jails[0];
    assert!(web.update.is_some() && web.start.is_some() && web.stop.is_some());
    assert!(conf.contains("array of strings"), "{conf}");

    // Every size in jclean(8)'s examples is one jclean prints.
    let clean = rendered("jclean.8");
    let examples = &clean[clean.find("EXAMPLES").unwrap()..];
    let words: Vec<&str> = examples.split_whitespace().collect();
    let mut seen = 0;
    for w in words.windows(2) {
        let mult: u64 = match w[1] {
            "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => continue,
        };
        let Ok(n) = w[0].parse::<f64>() else { continue };
        let bytes = (n * mult as f64).round() as u64;
        let shown = format!("{} {}", w[0], w[1]);
        assert_eq!(
            jlayers::report::size(bytes, false),
            shown,
            "jclean(8) example"
        );
        seen += 1;
    }
    assert!(seen >= 5, "sizes in jclean(8)'s examples: {seen}");

    let upd = rendered("jupdate.8");
    let to = &upd[upd.find("--timeout age").unwrap()..];
    let to = &to[..to.find("-v, --verbose").unwrap()];
    let to = to.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        to.contains("SIGTERM, then, 3 seconds later, SIGKILL"),
        "{to}"
    );

    // README's crontab: each command silent unless it fails.
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .unwrap();
    let cron = &readme[readme.find("From cron (`/etc/crontab`)").unwrap()..];
    let cron = &cron[cron.find("```\n").unwrap() + 4..];
    let cron = &cron[..cron.find("```").unwrap()];
    let mut commands = 0;
    for l in cron.lines() {
        let cmd = l.split_whitespace().skip_while(|w| *w != "root").skip(1);
        let cmd = cmd.collect::<Vec<_>>().join(" ");
        assert!(
            !cmd.contains("tee"),
            "tee repeats the report on stdout: {l}"
        );
        for part in cmd.split([';', '|']).flat_map(|p| p.split("&&")) {
            let part = part.trim();
            commands += 1;
            assert!(
                part.contains(" -q ") || part.contains('>'),
                "not silent on success: {part:?} in {l}"
            );
        }
    }
    assert!(commands >= 3, "{cron}");
    // The weekly clean is one command: per jail, all or nothing.
    assert!(
        cron.lines()
            .any(|l| l.contains("jclean -q --remount --older-than 7d --all")
                && !l.contains("junmount")),
        "{cron}"
    );
}

/// On a terminal, a message printed while another jail's spinner is drawn starts
/// a line of its own (the spinners are cleared first), never on the spinner's.
fn no_line_on_a_spinner(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        for j in ["j1", "j2"] {
            sb.jail_root(j, &["sh", "test", "[", "env", "echo", "sleep"]);
        }
        // j1 fails only once j2's updater runs (it says so in the shared distfiles
        // dir) and its spinner has had time to be drawn: no race with the load.
        let script = "if [ $1 = j1 ]; then i=0; \
            while [ ! -e /usr/ports/distfiles/j2-runs ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; \
            sleep 0.5; echo broken; exit 3; fi; echo > /usr/ports/distfiles/j2-runs; \
            i=0; while [ $i -lt 30 ]; do echo step $i; sleep 0.1; i=$((i+1)); done";
        let conf = jlayers_tests::SCENE_CONF
            .replace(
                "root = \"@T/j1\"",
                &format!(
                    "root = \"@T/j1\"\nupdate = [\"sh\", \"-c\", \"{script}\", \"-\", \"j1\"]"
                ),
            )
            .replace(
                "root = \"@T/j2\"",
                &format!(
                    "root = \"@T/j2\"\nupdate = [\"sh\", \"-c\", \"{script}\", \"-\", \"j2\"]"
                ),
            );
        sb.conf(&conf);
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut child = sb
            .tool("jupdate", &["-j", "2", "j1", "j2"])
            .env("TERM", "xterm")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::from(pty.slave))
            .spawn()
            .unwrap();
        // Read the terminal until jupdate is done (the master sees EOF/EIO then).
        let reader = jlayers_tests::read_terminal(std::fs::File::from(pty.master), |_| {});
        let st = child.wait().unwrap();
        // The slave was handed over: the master reads EIO once the child is gone.
        let raw = reader.join().unwrap();
        assert_eq!(st.code(), Some(69));
        let text = String::from_utf8_lossy(&raw);
        let at = text
            .find("jupdate: j1: update failed")
            .unwrap_or_else(|| panic!("{text:?}"));
        let before = &text[..at];
        assert!(
            before.contains(" j2:"),
            "j2's spinner was drawn before j1's message: {text:?}"
        );
        // Right before the message: a new line, or the spinner's line cleared
        // (indicatif moves to the line's start and erases it: \r, ESC [ ... K).
        let ok = before.ends_with('\n')
            || before.ends_with('\r')
            || before.rfind('\x1b').is_some_and(|i| {
                let esc = &before[i..];
                esc.len() <= 8 && (esc.ends_with('K') || esc.ends_with('J') || esc.ends_with('G'))
            });
        let tail: String = before
            .chars()
            .rev()
            .take(80)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        assert!(ok, "the message landed on a spinner's line: {tail:?}");
    });
}
