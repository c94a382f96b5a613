//! jupdate with real chroots (a static busybox in each jail root) and a stand-in
//! portmaster, on Linux and through the simulated FreeBSD userland.
// The tests of the Linux backend run on a Linux host only; on FreeBSD their helpers
// are left unused.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use jlayers_tests::{Backend, Out, Sandbox, sandbox};

use jlayers_tests::on_both;

on_both!(
    product_lands_in_the_upper_with_a_clean_environment,
    one_failing_jail_does_not_stop_the_other,
    two_at_a_time,
    timeout_kills_the_process_group,
    state_is_restored,
    interrupt_restores_and_exits_130,
    dry_run_prints_and_changes_nothing,
    stderr_reopened_keeps_the_history,
    interactive_reads_the_terminal,
);

/// What stands in for portmaster: builds into /usr/ports, shows its environment
/// and what its stdin holds.
const PORTMASTER: &str = r#"#!/bin/sh
echo "portmaster $*"
env | sort
mkdir -p /usr/ports/editors/vim/work && echo built > /usr/ports/editors/vim/work/.build_done.vim
if read line; then echo "stdin: $line"; else echo "stdin: EOF"; fi
"#;

/// A jail root with a static busybox as its userland.
fn jail_root(sb: &Sandbox, name: &str) {
    let root = sb.jail_root(
        name,
        &[
            "sh", "env", "sort", "mkdir", "echo", "sleep", "touch", "cat", "ls", "test", "[",
        ],
    );
    fs::create_dir_all(root.join("usr/local/sbin")).unwrap();
    let pm = root.join("usr/local/sbin/portmaster");
    fs::write(&pm, PORTMASTER).unwrap();
    fs::set_permissions(&pm, fs::Permissions::from_mode(0o755)).unwrap();
}

fn scene(sb: &Sandbox) {
    sb.scene();
    jail_root(sb, "j1");
    jail_root(sb, "j2");
}

/// The text of `jail`'s log.
fn log(sb: &Sandbox, jail: &str) -> String {
    fs::read_to_string(sb.path(&format!("log/{jail}.log"))).unwrap()
}

/// Whether `jail` runs: on Linux, a process in its sandbox (the jail root as its
/// root directory); on FreeBSD, `jls` shows it.
fn running(sb: &Sandbox, jail: &str) -> bool {
    sb.jail_running(jail)
}

fn product_lands_in_the_upper_with_a_clean_environment(b: Backend) {
    sandbox(b, |sb| {
        scene(sb);
        let o = Out::from(
            sb.tool("jupdate", &["j1"])
                .env("LEAKME", "1")
                .output()
                .unwrap(),
        );
        o.ok();
        let log = sb.path("log/j1.log");
        let f: Vec<&str> = o.stdout.trim_end().split('\t').collect();
        assert_eq!(f.len(), 5, "{}", o.stdout);
        assert_eq!(
            (f[0], f[1], f[2], f[4]),
            ("j1", "ok", "0", log.to_str().unwrap())
        );
        f[3].parse::<u64>().unwrap();
        let text = fs::read_to_string(&log).unwrap();
        let header = text.lines().next().unwrap();
        assert!(
            header.starts_with("20")
                && header.ends_with(" UTC: jupdate: portmaster -a -G --no-confirm"),
            "{header}"
        );
        for want in [
            "portmaster -a -G --no-confirm",
            "BATCH=yes",
            "PAGER=cat",
            "TERM=dumb",
            "stdin: EOF",
        ] {
            assert!(text.contains(want), "log lacks {want}:\n{text}");
        }
        assert!(
            !text.contains("LEAKME"),
            "the caller's environment leaked:\n{text}"
        );
        if b == Backend::FreeBsd {
            // jexec -l: only HOME, SHELL, TERM, USER and the login class survive.
            assert!(
                text.contains("USER=root") && text.contains("SHELL="),
                "{text}"
            );
        } else {
            // A cleared environment: PATH and HOME as a login gives, no more.
            assert!(
                text.lines().any(|l| l == "HOME=/root")
                    && text.lines().any(|l| l.starts_with("PATH=/"))
                    && !text.contains("USER="),
                "{text}"
            );
        }
        assert!(
            sb.path("upper/j1/ports/editors/vim/work/.build_done.vim")
                .is_file()
        );
        assert!(
            !sb.path("ports/editors/vim/work").exists(),
            "host tree untouched"
        );
        assert!(
            sb.mounts().is_empty(),
            "layers unmounted again: {:?}",
            sb.mounts()
        );
        assert!(!running(sb, "j1"));
    });
}

fn one_failing_jail_does_not_stop_the_other(b: Backend) {
    sandbox(b, |sb| {
        scene(sb);
        fs::write(
            sb.path("j1/usr/local/sbin/portmaster"),
            "#!/bin/sh\necho 'Aborting update'\nexit 1\n",
        )
        .unwrap();
        let o = sb.run("jupdate", &["--all"]);
        o.code(69)
            .err_has("jupdate: j1: update failed with status 1")
            .err_has("jupdate: j1: log: Aborting update");
        let lines: Vec<&str> = o.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{}", o.stdout);
        assert!(lines[0].starts_with("j1\tfailed\t1\t"));
        assert!(lines[1].starts_with("j2\tok\t0\t"));
        assert!(sb.mounts().is_empty());
    });
}

fn two_at_a_time(b: Backend) {
    sandbox(b, |sb| {
        scene(sb);
        // Each update waits at a barrier in the shared distfiles dir until the other
        // has arrived: only two at a time can pass (no timing involved).
        let barrier = "touch /usr/ports/distfiles/arrived.$1; i=0; \
            while [ ! -e /usr/ports/distfiles/arrived.$2 ]; do sleep 0.05; i=$((i+1)); [ $i -gt 400 ] && exit 9; done; echo met";
        let conf = jlayers_tests::SCENE_CONF
            .replace("root = \"@T/j1\"", &format!("root = \"@T/j1\"\nupdate = [\"sh\", \"-c\", \"{barrier}\", \"-\", \"a\", \"b\"]"))
            .replace("root = \"@T/j2\"", &format!("root = \"@T/j2\"\nupdate = [\"sh\", \"-c\", \"{barrier}\", \"-\", \"b\", \"a\"]"));
        sb.conf(&conf);
        let o = sb.run("jupdate", &["-j", "2", "--all"]);
        o.ok();
        assert_eq!(
            o.stdout.lines().filter(|l| l.contains("\tok\t")).count(),
            2,
            "{}",
            o.stdout
        );
        assert!(log(sb, "j2").contains("met"));
    });
}

fn timeout_kills_the_process_group(b: Backend) {
    sandbox(b, |sb| {
        scene(sb);
        // A duration no other test uses, one per backend (they run in parallel).
        let secs = if b == Backend::Linux { "6543" } else { "6544" };
        let t = Instant::now();
        let o = sb.run(
            "jupdate",
            &[
                "--timeout",
                "1s",
                "j1",
                "--",
                "sh",
                "-c",
                &format!("sleep {secs} & sleep 70"),
            ],
        );
        o.code(75).err_has("timed out");
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(o.stdout.starts_with("j1\ttimeout\t"), "{}", o.stdout);
        // Found from the host (in the sandbox's PID namespace, $! means nothing
        // here): a live process running `sleep 6543`.
        let alive = || jlayers_tests::userland::process_alive(&["sleep", secs]);
        let t = Instant::now();
        while alive() && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(), "background child survived");
        assert!(sb.mounts().is_empty());
        assert!(!running(sb, "j1"));
    });
}

fn state_is_restored(b: Backend) {
    sandbox(b, |sb| {
        scene(sb);
        // Every combination of mounted and (FreeBSD only) running before the run is
        // what is found after it, on success and on failure alike.
        let runs: &[bool] = if b == Backend::FreeBsd {
            &[false, true]
        } else {
            &[false]
        };
        for &mounted in &[false, true] {
            for &run_before in runs {
                for cmd in [
                    "ls /usr/ports/editors/vim > /usr/ports/distfiles/seen",
                    "exit 4",
                ] {
                    if mounted {
                        sb.run("jmount", &["j1"]).ok();
                    }
                    if run_before {
                        sb.sh_backend("service jail onestart j1").ok();
                    }
                    let before = sb.mounts();
                    let o = sb.run("jupdate", &["j1", "--", "sh", "-c", cmd]);
                    o.code(if cmd == "exit 4" { 69 } else { 0 });
                    let case = format!("mounted={mounted} running={run_before} cmd={cmd}");
                    assert_eq!(sb.mounts(), before, "{case}");
                    assert_eq!(running(sb, "j1"), run_before, "{case}");
                    if run_before {
                        sb.sh_backend("service jail onestop j1").ok();
                    }
                    sb.run("junmount", &["j1"]).ok();
                }
            }
        }
        // The layers were in place for the command.
        assert_eq!(
            fs::read_to_string(sb.path("distfiles/seen")).unwrap(),
            "Makefile\n"
        );
    });
}

fn interrupt_restores_and_exits_130(b: Backend) {
    sandbox(b, |sb| {
        scene(sb);
        let child = sb
            .tool(
                "jupdate",
                &[
                    "j1",
                    "j2",
                    "--",
                    "sh",
                    "-c",
                    "touch /usr/ports/distfiles/started; sleep 60",
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The positive control of every `!running` here: while j1's updater runs,
        // j1 (and j1 only) is seen running.
        let seen = std::cell::Cell::new(None);
        let out = jlayers_tests::interrupt_when(child, || {
            let started = sb.path("distfiles/started").exists();
            if started && seen.get().is_none() {
                seen.set(Some((running(sb, "j1"), running(sb, "j2"))));
            }
            started
        });
        assert_eq!(seen.get(), Some((true, false)), "j1 running, j2 not yet");
        jlayers_tests::assert_exit(&out, 130);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("j1\tfailed\t"));
        // A jail not yet started is not started after the interrupt.
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        assert!(!sb.path("log/j2.log").exists());
        assert!(sb.mounts().is_empty());
        assert!(!running(sb, "j1") && !running(sb, "j2"));
    });
}

#[cfg(target_os = "linux")]
#[test]
fn interactive_takes_one_jail_and_the_terminal() {
    sandbox(Backend::Linux, |sb| {
        scene(sb);
        sb.run("jupdate", &["-i", "--all"])
            .code(64)
            .err_has("-i works on exactly one jail");
        sb.run("jupdate", &["-i", "j1", "j2"])
            .code(64)
            .err_has("jupdate: -i works on exactly one jail");
        // The command's output goes to jupdate's own stdout and stdin, not the log.
        let o = sb.run(
            "jupdate",
            &[
                "-i",
                "j1",
                "--",
                "sh",
                "-c",
                "echo on-the-terminal; echo TERM=$TERM",
            ],
        );
        o.ok();
        assert!(o.stdout.starts_with("on-the-terminal\n"), "{}", o.stdout);
        let log = log(sb, "j1");
        assert!(
            !log.lines().any(|l| l == "on-the-terminal") && log.contains("interactive"),
            "{log}"
        );
    });
}

/// `-n` prints the run: jmount's plan, the start, the updater, the stop, and
/// exactly the unmounts that take back what it mounted, newest first.
fn dry_run_prints_and_changes_nothing(b: Backend) {
    sandbox(b, |sb| {
        scene(sb);
        let plan = sb.run("jmount", &["-n", "j1"]);
        plan.ok();
        let o = sb.run("jupdate", &["-n", "j1"]);
        o.ok();
        assert!(o.stdout.starts_with(&plan.stdout), "{}", o.stdout);
        let lines: Vec<&str> = o.stdout.lines().collect();
        let mounted: Vec<&str> = plan
            .stdout
            .lines()
            .filter(|l| l.starts_with("mount"))
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(mounted.len(), 3, "{}", plan.stdout);
        let undo: Vec<String> = mounted
            .iter()
            .rev()
            .map(|t| format!("umount {t}"))
            .collect();
        assert_eq!(lines[lines.len() - 3..], undo, "{}", o.stdout);
        if b == Backend::FreeBsd {
            assert!(lines.contains(&"service jail onestart j1"), "{}", o.stdout);
            assert!(lines.contains(
                &"jexec -l j1 env BATCH=yes PAGER=cat TERM=dumb portmaster -a -G --no-confirm"
            ));
            assert!(lines.contains(&"service jail onestop j1"));
            assert!(!running(sb, "j1"));
        } else {
            // No jail to start: the updater in its sandbox, chrooted to the jail
            // root (found there on its PATH), just before the unmounts.
            assert!(!o.stdout.contains("service jail"), "{}", o.stdout);
            let run = lines[lines.len() - 4];
            let chroot = format!(" chroot {} env -i ", sb.path("j1").display());
            assert!(
                run.starts_with("unshare ")
                    && run.contains(&chroot)
                    && run.ends_with(" TERM=dumb /usr/local/sbin/portmaster -a -G --no-confirm"),
                "{}",
                o.stdout
            );
        }
        assert!(sb.mounts().is_empty() && !sb.path("log").exists());
    });
}

#[cfg(target_os = "linux")]
#[test]
fn configured_start_and_stop_run_as_hooks_under_the_lock() {
    sandbox(Backend::Linux, |sb| {
        scene(sb);
        // The jail's own start/stop commands call jmount/junmount, as jail.conf's
        // exec.prestart/exec.poststop hooks do: they run while jupdate holds the
        // jail's lock, as its children, and must not be refused.
        let bin = jlayers_tests::bin_dir();
        let conf = sb.path("jlayers.conf");
        let hook = |tool: &str, mark: &str| {
            format!(
                "[\"sh\", \"-c\", \"{} -c {} j1 && touch {}\"]",
                bin.join(tool).display(),
                conf.display(),
                sb.path(mark).display()
            )
        };
        let text = jlayers_tests::SCENE_CONF.replace(
            "root = \"@T/j1\"",
            &format!(
                "root = \"@T/j1\"\nstart = {}\nstop = {}",
                hook("jmount", "started"),
                hook("junmount", "stopped")
            ),
        );
        sb.conf(&text);
        let o = sb.run(
            "jupdate",
            &["j1", "--", "sh", "-c", "ls /usr/ports/editors"],
        );
        o.ok();
        assert!(
            sb.path("started").exists() && sb.path("stopped").exists(),
            "{}",
            o.stderr
        );
        assert!(log(sb, "j1").contains("vim"));
        assert!(sb.mounts().is_empty());
        // A failing start command fails the jail, and the layers come off again.
        sb.conf(
            &jlayers_tests::SCENE_CONF
                .replace("root = \"@T/j1\"", "root = \"@T/j1\"\nstart = [\"false\"]"),
        );
        sb.run("jupdate", &["j1"])
            .code(69)
            .err_has("jupdate: j1: start: false failed");
        assert!(sb.mounts().is_empty());
        // A failing stop command fails the jail, and the layers come off all the
        // same: what is put back after it still is.
        sb.conf(&jlayers_tests::SCENE_CONF.replace(
            "root = \"@T/j1\"",
            "root = \"@T/j1\"\nstart = [\"true\"]\nstop = [\"false\"]",
        ));
        sb.run("jupdate", &["j1", "--", "sh", "-c", "exit 0"])
            .code(69)
            .err_has("jupdate: j1: stop: false failed");
        assert!(sb.mounts().is_empty());
        // The run's own failure is the jail's; the stop's is said too.
        fs::write(sb.path("afile"), "").unwrap();
        let logs = sb.path("afile/logs");
        let o = sb.run(
            "jupdate",
            &[
                "--log-dir",
                logs.to_str().unwrap(),
                "j1",
                "--",
                "sh",
                "-c",
                ":",
            ],
        );
        o.code(73).err_has("jupdate: j1: stop: false failed");
        assert!(o.stderr.contains("afile/logs"), "{}", o.stderr);
        assert!(sb.mounts().is_empty());
    });
}

/// A build script's `echo x >/dev/stderr` reopens its stderr (through
/// /proc/self/fd/2 on Linux) with O_TRUNC: it wipes this run's output at most,
/// never the log's earlier runs.
fn stderr_reopened_keeps_the_history(b: Backend) {
    sandbox(b, |sb| {
        scene(sb);
        let root = sb.path("j1");
        // The simulated jail is a chroot: its /dev/stderr is /proc's, as on Linux.
        fs::create_dir_all(root.join("proc")).unwrap();
        fs::create_dir_all(root.join("dev")).unwrap();
        std::os::unix::fs::symlink("/proc/self/fd/2", root.join("dev/stderr")).unwrap();
        if b == Backend::FreeBsd && cfg!(target_os = "linux") {
            sb.sh(&format!(
                "mount -t proc proc '{}'",
                root.join("proc").display()
            ))
            .ok();
        }
        sb.run("jupdate", &["j1", "--", "sh", "-c", "echo first-run"])
            .ok();
        sb.run(
            "jupdate",
            &[
                "j1",
                "--",
                "sh",
                "-c",
                "echo second-run; echo reopened >/dev/stderr; echo after",
            ],
        )
        .ok();
        let log = log(sb, "j1");
        let headers = log
            .lines()
            .filter(|l| l.contains(": jupdate: sh -c "))
            .count();
        assert_eq!(headers, 2, "{log:?}");
        let results = log
            .lines()
            .filter(|l| l.contains(": jupdate: exit 0 after "))
            .count();
        assert_eq!(results, 2, "{log:?}");
        assert!(log.contains("first-run\n"), "{log:?}");
        assert!(log.contains("reopened\nafter\n"), "{log:?}");
        assert!(!log.contains('\0'), "{log:?}");
        // Nothing of the run's own output file is left beside the log.
        let left: Vec<_> = fs::read_dir(sb.path("log"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["j1.log"], "{left:?}");
    });
}

/// `jupdate -i j1 -- sh -c SCRIPT` on a terminal of its own (its controlling
/// terminal, stdin, stdout and stderr), `keys` typed once `ready` is seen on it;
/// what the terminal showed and jupdate's status, or `None` if it did not end
/// within 30 s.
fn on_a_terminal(sb: &Sandbox, script: &str, keys: &[u8]) -> (String, Option<i32>) {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = fs::File::from(pty.slave);
    let fd = slave.as_raw_fd();
    let ready = "ready";
    let mut c = sb.tool("jupdate", &["-i", "j1", "--", "sh", "-c", script]);
    c.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: setsid and ioctl only, in the forked child.
    unsafe {
        c.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().unwrap();
    drop(slave);
    let master = fs::File::from(pty.master);
    let mut writer = master.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Read the terminal until jupdate is done (the master sees EIO then).
    jlayers_tests::read_terminal(master, move |raw| {
        let _ = tx.send(raw.to_vec());
    });
    let end = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut typed = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > end {
            // Hung: end it for the test to go on.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            child.wait().unwrap();
            break None;
        }
        while let Ok(raw) = rx.try_recv() {
            seen = raw;
        }
        if !typed && String::from_utf8_lossy(&seen).contains(ready) {
            writer.write_all(keys).unwrap();
            typed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(100));
    while let Ok(raw) = rx.try_recv() {
        seen = raw;
    }
    (String::from_utf8_lossy(&seen).into_owned(), status)
}

/// `-i`: the updater may read the terminal (as `portmaster -ai` does): its own,
/// relayed to the test's. A ^C there ends the run as interrupted, everything put
/// back (130).
fn interactive_reads_the_terminal(b: Backend) {
    sandbox(b, |sb| {
        scene(sb);
        let script = "[ -t 0 ] && echo stdin-is-a-tty; echo ready; read x; echo got $x";
        let (out, status) = on_a_terminal(sb, script, b"hello\n");
        assert_eq!(status, Some(0), "{out}");
        assert!(out.contains("stdin-is-a-tty"), "{out}");
        assert!(out.contains("got hello"), "{out}");
        assert!(out.contains("j1\tok\t0\t"), "{out}");
        assert!(sb.mounts().is_empty());
        assert!(!running(sb, "j1"));

        // ^C: the updater's terminal sends its group SIGINT.
        let script = "echo ready; read x; echo not-interrupted";
        let (out, status) = on_a_terminal(sb, script, b"\x03");
        assert_eq!(status, Some(130), "{out}");
        assert!(!out.lines().any(|l| l.trim() == "not-interrupted"), "{out}");
        assert!(out.contains("jupdate: j1: interrupted"), "{out}");
        assert!(sb.mounts().is_empty());
        assert!(!running(sb, "j1"));
    });
}

/// The pids of live processes whose command line is exactly `argv`.
#[cfg(target_os = "linux")]
fn pids_of(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            let state = stat.rsplit(')').next()?.trim_start();
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            // argv[0] as the jail's shell gave it: a name or a path.
            let named = cmdline.ends_with(&want)
                && cmdline.len() - want.len()
                    == cmdline[..cmdline.len() - want.len()]
                        .iter()
                        .rposition(|&b| b == b'/')
                        .map_or(0, |i| i + 1);
            (named && !state.starts_with('Z')).then_some(pid)
        })
        .collect()
}

/// Wait up to `limit` for `done`; whether it came.
fn within(limit: Duration, done: impl Fn() -> bool) -> bool {
    let t = Instant::now();
    while !done() {
        if t.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// kill -9 of jupdate mid-run: every process of the run dies with it (the
/// sandbox's pid 1 holding the jail's lock to the end), and no junmount, jclean
/// or jupdate of the jail runs beside a process of the run.
#[cfg(target_os = "linux")]
#[test]
fn a_killed_jupdate_takes_its_run_along() {
    sandbox(Backend::Linux, |sb| {
        scene(sb);
        // A /dev for the sandbox to mount its own on: a shell's background job
        // reads /dev/null.
        fs::create_dir_all(sb.path("j1/dev")).unwrap();
        // A number no other test sleeps.
        let marker = ["sleep", "3071"];
        // Whatever outlives the test (a failure) is killed: the updater's pid 2,
        // and so its sandbox, ends with them.
        struct Reap<'a>(&'a [&'a str]);
        impl Drop for Reap<'_> {
            fn drop(&mut self) {
                for pid in pids_of(self.0) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _reap = Reap(&marker);
        let mut child = sb.spawn(
            "jupdate",
            &[
                "j1",
                "--",
                "sh",
                "-c",
                "sleep 3071 & sleep 3071 & sleep 3071",
            ],
        );
        if !within(Duration::from_secs(20), || pids_of(&marker).len() == 3) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            let seen: Vec<String> = fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .filter(|c| c.contains("3071"))
                .collect();
            panic!(
                "the updater did not start ({seen:?}): {}{}",
                String::from_utf8_lossy(&out.stderr),
                log(sb, "j1")
            );
        }
        // The sandbox's pid 1 holds the jail's lock: its pid follows jupdate's in
        // the lock file, and it has the file open (checked after the kill, so
        // that a failure leaves nothing running).
        let lock = sb.path("run/j1.lock");
        let text = fs::read_to_string(&lock).unwrap();
        let pids: Vec<String> = text.lines().map(String::from).collect();
        let holds = pids.get(1).is_some_and(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|p| p == lock))
        });
        child.kill().unwrap();
        child.wait().unwrap();
        let t = Instant::now();
        // As long as a process of the run lives, the jail is locked; once
        // junmount gets through, none is left.
        loop {
            let o = sb.run("junmount", &["j1"]);
            if o.code == 0 {
                assert!(pids_of(&marker).is_empty(), "junmount ran beside the run");
                break;
            }
            o.code(75).err_has("locked by another jlayers run (pid");
            assert!(t.elapsed() < Duration::from_secs(1), "{}", o.stderr);
        }
        assert!(
            within(Duration::from_secs(1), || pids_of(&marker).is_empty()),
            "the run outlived jupdate: {:?}",
            pids_of(&marker)
        );
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(pids.first(), Some(&child.id().to_string()), "{text:?}");
        assert!(
            holds,
            "the sandbox's pid 1 does not hold {}: {text:?}",
            lock.display()
        );
        assert!(sb.mounts().is_empty());
        sb.run("jclean", &["j1"]).ok();
        sb.run("jupdate", &["j1", "--", "sh", "-c", "exit 0"]).ok();
        assert!(sb.mounts().is_empty());
    });
}

/// A background process the updater leaves behind dies with the run, before
/// jupdate reports it: the lock is free only when no process of the run is.
#[cfg(target_os = "linux")]
#[test]
fn nothing_of_the_run_outlives_the_updater() {
    sandbox(Backend::Linux, |sb| {
        scene(sb);
        fs::create_dir_all(sb.path("j1/dev")).unwrap();
        let o = sb.run(
            "jupdate",
            &["j1", "--", "sh", "-c", "sleep 3072 & sleep 3072 & exit 0"],
        );
        o.ok();
        assert!(pids_of(&["sleep", "3072"]).is_empty());
    });
}

/// The lock outlives jupdate for as long as a process of its run does: one of
/// the updater's processes frozen (a frozen process dies of SIGKILL only once
/// thawed), jupdate killed; the jail stays locked, naming the run's sandbox,
/// until that process is thawed and gone.
#[cfg(target_os = "linux")]
#[test]
fn the_lock_lives_as_long_as_the_run() {
    sandbox(Backend::Linux, |sb| {
        scene(sb);
        fs::create_dir_all(sb.path("j1/dev")).unwrap();
        let marker = ["sleep", "3073"];
        struct Reap<'a>(&'a [&'a str]);
        impl Drop for Reap<'_> {
            fn drop(&mut self) {
                for pid in pids_of(self.0) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _reap = Reap(&marker);
        // A v1 freezer cgroup under the test's own, thawed and removed at the end.
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let parent = own
            .lines()
            .find_map(|l| l.split_once(":freezer:").map(|(_, p)| p.to_string()))
            .expect("a v1 freezer hierarchy on this host");
        let freezer = std::path::Path::new("/sys/fs/cgroup/freezer")
            .join(parent.trim_start_matches('/'))
            .join(format!("jlayers-test-{}", std::process::id()));
        fs::create_dir(&freezer).unwrap();
        struct Thaw(std::path::PathBuf);
        impl Drop for Thaw {
            fn drop(&mut self) {
                let _ = fs::write(self.0.join("freezer.state"), "THAWED");
                // Whatever is still in it (a failure) is killed, so that it goes.
                let procs = fs::read_to_string(self.0.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let t = Instant::now();
                while fs::remove_dir(&self.0).is_err() && t.elapsed() < Duration::from_secs(3) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let thaw = Thaw(freezer.clone());
        let mut child = sb.spawn(
            "jupdate",
            &[
                "j1",
                "--",
                "sh",
                "-c",
                "sleep 3073 & sleep 3073 & sleep 3073",
            ],
        );
        assert!(within(Duration::from_secs(20), || pids_of(&marker).len() == 3));
        let frozen = pids_of(&marker)[0];
        fs::write(freezer.join("cgroup.procs"), frozen.to_string()).unwrap();
        fs::write(freezer.join("freezer.state"), "FROZEN").unwrap();
        assert!(within(Duration::from_secs(5), || {
            fs::read_to_string(freezer.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
        }));
        child.kill().unwrap();
        child.wait().unwrap();
        // The rest of the run goes; the frozen process stays, and so does the lock.
        assert!(within(Duration::from_secs(1), || pids_of(&marker) == [frozen]));
        for tool in ["junmount", "jclean", "jupdate"] {
            sb.run(tool, &["j1"])
                .code(75)
                .err_has("the sandbox of a jupdate that was killed");
        }
        drop(thaw);
        assert!(within(Duration::from_secs(1), || pids_of(&marker).is_empty()));
        sb.run("junmount", &["j1"]).ok();
    });
}

/// The attacker's tool: `inject TTY TEXT` types TEXT and a newline into terminal
/// TTY (a path, or 0, 1 or 2 for that descriptor) with TIOCSTI, as a hostile
/// updater would into the admin's shell. Static, for any jail root.
const INJECT_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc != 3) return 64;
    int fd = strlen(argv[1]) == 1 && strchr("012", argv[1][0])
        ? argv[1][0] - '0' : open(argv[1], O_RDWR);
    if (fd < 0) { perror(argv[1]); return 1; }
    char nl = '\n';
    for (char *p = argv[2]; *p; p++)
        if (ioctl(fd, TIOCSTI, p) < 0) { perror("TIOCSTI"); return 1; }
    if (ioctl(fd, TIOCSTI, &nl) < 0) { perror("TIOCSTI"); return 1; }
    printf("injected into %s\n", argv[1]);
    return 0;
}
"#;

/// The scene with j1 a busybox root that has `stty`, the `inject` tool, and a
/// /dev/tty (the Linux sandbox binds the host's into its own /dev; the simulated
/// jail, a chroot, gets the host's bound over its own).
#[cfg(target_os = "linux")]
fn tty_scene(sb: &Sandbox, b: Backend) {
    sb.scene();
    let root = sb.jail_root(
        "j1",
        &[
            "sh", "env", "echo", "sleep", "stty", "true", "cat", "test", "[",
        ],
    );
    jail_root(sb, "j2");
    let src = sb.path("inject.c");
    fs::write(&src, INJECT_C).unwrap();
    let o = std::process::Command::new("cc")
        .args(["-static", "-O", "-o"])
        .arg(root.join("bin/inject"))
        .arg(&src)
        .output()
        .expect("cc(1) builds the TIOCSTI tool (apt-get install gcc libc6-dev)");
    assert!(
        o.status.success(),
        "cc -static: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    fs::create_dir_all(root.join("dev")).unwrap();
    fs::create_dir_all(root.join("proc")).unwrap();
    if b == Backend::FreeBsd {
        fs::write(root.join("dev/tty"), "").unwrap();
        nix::mount::mount(
            Some("/dev/tty"),
            &root.join("dev/tty"),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind /dev/tty into the simulated jail");
    }
}

/// What the test does once the terminal shows a word.
enum Step<'a> {
    Type(&'a [u8]),
    /// TIOCSWINSZ on the test's terminal (rows, columns).
    Resize(u16, u16),
    Signal(nix::sys::signal::Signal),
    /// Look at the updater's `sleep ARG` process from the host, then end it.
    Sleeper(&'a str),
}

/// A run of jupdate on a terminal the test owns.
#[derive(Default)]
struct TtyRun {
    shown: String,
    status: Option<i32>,
    /// The test's terminal's modes before jupdate, when the first step came, and
    /// after it exited.
    modes: Vec<libc::termios>,
    /// What was left to read on the test's terminal after jupdate exited (what
    /// an admin's shell would run).
    left: String,
    /// The updater's `sleep`: its session and its controlling terminal (device
    /// number, 0 for none), from /proc.
    sleeper: Option<(i32, i32)>,
    jupdate_pid: i32,
}

fn modes(fd: &impl std::os::fd::AsRawFd) -> libc::termios {
    // SAFETY: tcgetattr fills the termios it is given, a local.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd.as_raw_fd(), &mut t), 0, "tcgetattr");
        t
    }
}

fn same_modes(a: &libc::termios, b: &libc::termios) -> bool {
    (a.c_iflag, a.c_oflag, a.c_cflag, a.c_lflag, a.c_cc)
        == (b.c_iflag, b.c_oflag, b.c_cflag, b.c_lflag, b.c_cc)
}

/// A process (not a zombie) running exactly `argv`: its pid, session and tty_nr.
#[cfg(target_os = "linux")]
fn process_running(argv: &[&str]) -> Option<(i32, i32, i32)> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        if fs::read(e.path().join("cmdline")).ok()? != want {
            return None;
        }
        let stat = fs::read_to_string(e.path().join("stat")).ok()?;
        let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        if f[0] == "Z" {
            return None;
        }
        Some((pid, f[3].parse().ok()?, f[4].parse().ok()?))
    })
}

/// `jupdate ARGS` on a terminal of the test's (its controlling terminal, stdin,
/// stdout and stderr, as an admin's shell gives it) of `size`, each step done
/// once the terminal shows its word.
#[cfg(target_os = "linux")]
fn on_tty(sb: &Sandbox, args: &[&str], size: (u16, u16), steps: &[(&str, Step)]) -> TtyRun {
    on_tty_with(sb, args, size, steps, true)
}

/// [`on_tty`], with jupdate's stdin /dev/null unless `stdin`.
#[cfg(target_os = "linux")]
fn on_tty_with(
    sb: &Sandbox,
    args: &[&str],
    size: (u16, u16),
    steps: &[(&str, Step)],
    stdin: bool,
) -> TtyRun {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let winsize = nix::pty::Winsize {
        ws_row: size.0,
        ws_col: size.1,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&winsize), None).unwrap();
    let slave = fs::File::from(pty.slave);
    let fd = slave.as_raw_fd();
    let mut run = TtyRun::default();
    run.modes.push(modes(&slave));
    let mut c = sb.tool("jupdate", args);
    c.stdin(if stdin {
        Stdio::from(slave.try_clone().unwrap())
    } else {
        Stdio::null()
    })
    .stdout(slave.try_clone().unwrap())
    .stderr(slave.try_clone().unwrap());
    // SAFETY: setsid and ioctl only, in the forked child.
    unsafe {
        c.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().unwrap();
    run.jupdate_pid = child.id() as i32;
    let master = fs::File::from(pty.master);
    let mut writer = master.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    jlayers_tests::read_terminal(master, move |raw| {
        let _ = tx.send(raw.to_vec());
    });
    let end = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut next = 0;
    run.status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > end {
            // Hung: jupdate takes its updater down on SIGTERM.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(run.jupdate_pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            child.wait().unwrap();
            break None;
        }
        while let Ok(raw) = rx.try_recv() {
            seen = raw;
        }
        if let Some((word, step)) = steps.get(next) {
            let sleeper = match step {
                Step::Sleeper(arg) => process_running(&["sleep", arg]),
                _ => None,
            };
            let due = match step {
                Step::Sleeper(_) => sleeper.is_some(),
                _ => String::from_utf8_lossy(&seen).contains(word),
            };
            if due {
                if next == 0 {
                    run.modes.push(modes(&slave));
                }
                match step {
                    Step::Type(keys) => writer.write_all(keys).unwrap(),
                    Step::Resize(rows, cols) => {
                        let size = nix::pty::Winsize {
                            ws_row: *rows,
                            ws_col: *cols,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        // SAFETY: TIOCSWINSZ reads the winsize, a local.
                        let r = unsafe { libc::ioctl(writer.as_raw_fd(), libc::TIOCSWINSZ, &size) };
                        assert_eq!(r, 0, "TIOCSWINSZ");
                    }
                    Step::Signal(sig) => {
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.jupdate_pid), *sig)
                            .unwrap();
                    }
                    Step::Sleeper(_) => {
                        let (pid, sid, tty) = sleeper.unwrap();
                        run.sleeper = Some((sid, tty));
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                next += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    run.modes.push(modes(&slave));
    // Whatever was typed into the test's terminal and is still unread: a whole
    // line, as the shell would read it.
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&slave),
        nix::poll::PollFlags::POLLIN,
    )];
    if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(300u16)).unwrap_or(0) > 0 {
        let mut buf = [0u8; 4096];
        let n = nix::unistd::read(&slave, &mut buf).unwrap_or(0);
        run.left = String::from_utf8_lossy(&buf[..n]).into_owned();
    }
    std::thread::sleep(Duration::from_millis(100));
    while let Ok(raw) = rx.try_recv() {
        seen = raw;
    }
    run.shown = String::from_utf8_lossy(&seen).into_owned();
    run
}

/// Without -i the updater runs in a session of its own, with no controlling
/// terminal: /dev/tty does not open, and TIOCSTI types nothing into the admin's
/// shell.
#[cfg(target_os = "linux")]
fn no_terminal_without_i(b: Backend) {
    sandbox(b, |sb| {
        tty_scene(sb, b);
        // A duration of this run's own: one per backend (the two run in
        // parallel) and per test process (a stray of an earlier one is not it).
        let secs = format!(
            "{}",
            200_000 + std::process::id() * 2 + u32::from(b == Backend::Linux)
        );
        let script = format!("inject /dev/tty 'echo INJECTED'; sleep {secs}; true");
        let run = on_tty(
            sb,
            &["j1", "--", "sh", "-c", &script],
            (24, 80),
            &[("sleep", Step::Sleeper(&secs))],
        );
        let log = log(sb, "j1");
        assert_eq!(run.status, Some(0), "{log}");
        assert_eq!(run.left, "", "typed into the test's terminal\n{log}");
        assert!(!log.contains("injected into"), "{log}");
        let (sid, tty) = run.sleeper.expect("the updater's sleep was seen");
        assert_ne!(sid, run.jupdate_pid, "the updater in jupdate's session");
        assert_eq!(tty, 0, "the updater has a controlling terminal");
    });
}

/// -i: the updater's terminal is its own, relayed: TIOCSTI on its stdin types
/// into that one only; the window size comes through, at start and when it
/// changes; the admin's terminal is raw while it runs and its modes come back.
#[cfg(target_os = "linux")]
fn interactive_terminal_is_its_own(b: Backend) {
    sandbox(b, |sb| {
        tty_scene(sb, b);
        let script = "[ -t 0 ] && echo stdin-is-a-tty; stty size; echo ready; read x; \
                      echo got $x; stty size; inject 0 'echo INJECTED'; echo done";
        let run = on_tty(
            sb,
            &["-i", "j1", "--", "sh", "-c", script],
            (33, 97),
            &[
                ("ready", Step::Resize(40, 120)),
                ("ready", Step::Type(b"hello\r")),
            ],
        );
        let out = &run.shown;
        assert_eq!(run.status, Some(0), "{out}");
        assert!(out.contains("stdin-is-a-tty"), "{out}");
        assert!(out.contains("33 97"), "{out}");
        assert!(out.contains("got hello"), "{out}");
        assert!(out.contains("40 120"), "{out}");
        assert!(out.contains("injected into 0"), "{out}");
        assert_eq!(run.left, "", "typed into the test's terminal: {out}");
        let [before, during, after] = &run.modes[..] else {
            panic!("{} modes", run.modes.len());
        };
        assert_eq!(during.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG), 0);
        assert!(same_modes(before, after), "modes not restored");
    });
}

/// -i with only stdout and stderr on the admin's terminal (stdin /dev/null): the
/// updater's streams are still a terminal of its own, never the admin's; the end
/// of stdin is its terminal's end of file.
#[cfg(target_os = "linux")]
fn interactive_output_only(b: Backend) {
    sandbox(b, |sb| {
        tty_scene(sb, b);
        let script = "inject 1 'echo INJECTED'; cat; echo cat-ended";
        let run = on_tty_with(
            sb,
            &["-i", "j1", "--", "sh", "-c", script],
            (24, 80),
            &[],
            false,
        );
        let out = &run.shown;
        assert_eq!(run.status, Some(0), "{out}");
        assert!(out.contains("injected into 1"), "{out}");
        assert!(out.contains("cat-ended"), "{out}");
        assert_eq!(run.left, "", "typed into the test's terminal: {out}");
    });
}

/// -i: the admin's terminal gets its modes back however the run ends: at the
/// time limit, on SIGTERM and SIGINT to jupdate, on a ^C typed to the updater.
#[cfg(target_os = "linux")]
fn interactive_modes_come_back(b: Backend) {
    use nix::sys::signal::Signal;
    sandbox(b, |sb| {
        tty_scene(sb, b);
        // The simulated jail's /dev/tty is one.
        let mounts = sb.mounts();
        let script = "echo ready; sleep 30";
        let cases: [(&[&str], Step, i32); 4] = [
            (&["--timeout", "1s"], Step::Type(b""), 75),
            (&[], Step::Signal(Signal::SIGTERM), 130),
            (&[], Step::Signal(Signal::SIGINT), 130),
            (&[], Step::Type(b"\x03"), 130),
        ];
        for (flags, step, want) in cases {
            let mut args = vec!["-i"];
            args.extend_from_slice(flags);
            args.extend(["j1", "--", "sh", "-c", script]);
            let run = on_tty(sb, &args, (24, 80), &[("ready", step)]);
            let case = format!("{args:?}: {}", run.shown);
            assert_eq!(run.status, Some(want), "{case}");
            let [before, during, after] = &run.modes[..] else {
                panic!("{case}: {} modes", run.modes.len());
            };
            assert_eq!(during.c_lflag & libc::ICANON, 0, "{case}: not raw");
            assert!(same_modes(before, after), "{case}: modes not restored");
            assert_eq!(sb.mounts(), mounts, "{case}");
        }
    });
}

#[cfg(target_os = "linux")]
mod tty {
    use super::*;

    #[test]
    fn linux_no_terminal_without_i() {
        no_terminal_without_i(Backend::Linux)
    }
    #[test]
    fn freebsd_sim_no_terminal_without_i() {
        no_terminal_without_i(Backend::FreeBsd)
    }
    #[test]
    fn linux_interactive_terminal_is_its_own() {
        interactive_terminal_is_its_own(Backend::Linux)
    }
    #[test]
    fn freebsd_sim_interactive_terminal_is_its_own() {
        interactive_terminal_is_its_own(Backend::FreeBsd)
    }
    #[test]
    fn linux_interactive_output_only() {
        interactive_output_only(Backend::Linux)
    }
    #[test]
    fn freebsd_sim_interactive_output_only() {
        interactive_output_only(Backend::FreeBsd)
    }
    #[test]
    fn linux_interactive_modes_come_back() {
        interactive_modes_come_back(Backend::Linux)
    }
    #[test]
    fn freebsd_sim_interactive_modes_come_back() {
        interactive_modes_come_back(Backend::FreeBsd)
    }
}
