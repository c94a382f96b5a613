//! jupdate's I/O seams: what reaches the updater (only stdin, stdout and stderr),
//! what of its output reaches the admin (control characters made visible), and
//! the log (live, bounded by `log_max`, each run's entry ended by a result line,
//! its history out of the updater's reach), with jupdate's memory bounded whatever
//! the updater writes.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jlayers_tests::{Backend, Out, Sandbox, on_both, sandbox};

on_both!(
    only_stdio_crosses_into_the_jail,
    failure_tail_shows_control_characters,
    log_follows_the_run,
    each_entry_ends_with_its_result,
    history_cannot_be_wiped,
    real_output_is_bounded,
    sparse_output_writes_no_zeros,
);

/// One jail `j1` (no layers) with a busybox userland and a /proc of its own,
/// `extra` added to its section of the config.
fn jail(sb: &Sandbox, extra: &str) {
    let root = sb.jail_root(
        "j1",
        &[
            "sh", "env", "echo", "printf", "sleep", "ls", "cat", "test", "[", "yes", "head", "dd",
            "touch", "readlink",
        ],
    );
    fs::create_dir_all(root.join("proc")).unwrap();
    fs::create_dir_all(root.join("dev")).unwrap();
    std::os::unix::fs::symlink("/proc/self/fd/2", root.join("dev/stderr")).unwrap();
    // The simulated jail is a chroot: its /proc is the host's, as a jail's own
    // procfs is on FreeBSD (the Linux sandbox mounts one of its own).
    if sb.backend == Backend::FreeBsd && cfg!(target_os = "linux") {
        sb.sh(&format!(
            "mount -t proc proc '{}'",
            root.join("proc").display()
        ))
        .ok();
    }
    sb.conf(&format!(
        "[defaults]\nupper_root = \"@T/upper\"\nlock_dir = \"@T/run\"\nlog_dir = \"@T/log\"\n\
         [jail.j1]\nroot = \"@T/j1\"\n{extra}"
    ));
}

fn log(sb: &Sandbox) -> Vec<u8> {
    fs::read(sb.path("log/j1.log")).unwrap()
}

fn log_text(sb: &Sandbox) -> String {
    String::from_utf8_lossy(&log(sb)).into_owned()
}

/// `jupdate ARGS` with the directory `dir` open as descriptor 9, not close-on-exec,
/// as `flock DIR jupdate ...` leaves it.
fn with_dir_open(sb: &Sandbox, dir: &Path, args: &[&str]) -> Out {
    let held = fs::File::open(dir).unwrap();
    let fd = held.as_raw_fd();
    let mut c = sb.tool("jupdate", args);
    // SAFETY: dup2 only, in the forked child (the copy is not close-on-exec).
    unsafe {
        c.pre_exec(move || {
            if libc::dup2(fd, 9) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Out::from(c.output().unwrap())
}

/// A descriptor of a host directory that jupdate's caller left open never reaches
/// the updater: through it `/proc/self/fd/9/..` would be the host's tree, written
/// as root. The updater has 0, 1 and 2 only (and what `ls` opens itself).
fn only_stdio_crosses_into_the_jail(b: Backend) {
    sandbox(b, |sb| {
        jail(sb, "");
        fs::create_dir_all(sb.path("host/inner")).unwrap();
        let script = "ls /proc/self/fd | while read fd; do printf 'fd:%s ' $fd; done; echo; \
                      echo escaped > /proc/self/fd/9/../escaped && echo wrote-the-host";
        let o = with_dir_open(
            sb,
            &sb.path("host/inner"),
            &["j1", "--", "sh", "-c", script],
        );
        let log = log_text(sb);
        assert!(!sb.path("host/escaped").exists(), "{log}");
        assert!(!log.lines().any(|l| l == "wrote-the-host"), "{log}");
        // ls itself opens one directory (3) to list it.
        assert!(
            log.contains("fd:0 fd:1 fd:2 fd:3 \n"),
            "{}\n{log}",
            o.stderr
        );
    });
}

/// What the updater prints reaches the admin's terminal and cron's mail with its
/// control characters made visible: no escape sequence retitles the window, clears
/// the screen or answers for the admin. The log keeps the bytes as they came.
fn failure_tail_shows_control_characters(b: Backend) {
    sandbox(b, |sb| {
        jail(sb, "");
        let script =
            "printf 'before\\n\\033]0;pwned\\007\\033[2J\\n\\tred:\\033[31mx\\r\\n'; exit 3";
        let o = sb.run("jupdate", &["j1", "--", "sh", "-c", script]);
        o.code(69)
            .err_has("jupdate: j1: update failed with status 3");
        for raw in ['\x1b', '\x07', '\r'] {
            assert!(!o.stderr.contains(raw), "{raw:?} in {:?}", o.stderr);
        }
        o.err_has("jupdate: j1: log: ^[]0;pwned^G^[[2J")
            .err_has("jupdate: j1: log: \tred:^[[31mx")
            .err_has("jupdate: j1: log: before");
        let log = log(sb);
        let raw = b"\x1b]0;pwned\x07\x1b[2J\n";
        assert!(log.windows(raw.len()).any(|w| w == raw), "{log:?}");
    });
}

/// The log shows the run as it happens (`tail -f` of a long build): the first line
/// is there while the updater still runs.
fn log_follows_the_run(b: Backend) {
    sandbox(b, |sb| {
        jail(sb, "");
        let script = "echo first-line; i=0; while [ ! -e /go ]; do sleep 0.05; \
                      i=$((i+1)); [ $i -gt 400 ] && exit 9; done; echo last-line";
        let mut child = sb.spawn("jupdate", &["j1", "--", "sh", "-c", script]);
        let end = Instant::now() + Duration::from_secs(10);
        let mut seen = false;
        while Instant::now() < end && child.try_wait().unwrap().is_none() {
            if fs::read(sb.path("log/j1.log"))
                .is_ok_and(|l| String::from_utf8_lossy(&l).contains("first-line\n"))
            {
                seen = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let running = child.try_wait().unwrap().is_none();
        fs::write(sb.path("j1/go"), "").unwrap();
        let st = child.wait().unwrap();
        let log = log_text(sb);
        assert!(
            seen && running,
            "not in the log while the run went on:\n{log}"
        );
        assert!(st.success(), "{log}");
        assert!(log.contains("last-line\n"), "{log}");
    });
}

/// Whether `line` is `DATE UTC: jupdate: ` followed by `what`.
fn dated(line: &str, what: &str) -> bool {
    let b = line.as_bytes();
    line.len() > 23
        && b[4] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && line[19..].starts_with(" UTC: jupdate: ")
        && line[23 + ": jupdate: ".len()..].starts_with(what)
}

/// Each run's entry: its header, its output, and a dated result line saying how it
/// ended; a run that finds the entry before it without one (jupdate was killed)
/// says so first.
fn each_entry_ends_with_its_result(b: Backend) {
    sandbox(b, |sb| {
        jail(sb, "");
        // What a run killed with SIGKILL leaves: a header and some output.
        fs::create_dir_all(sb.path("log")).unwrap();
        fs::write(
            sb.path("log/j1.log"),
            "2026-01-02 03:04:05 UTC: jupdate: sh -c 'echo killed'\nkilled\npartial line",
        )
        .unwrap();
        sb.run("jupdate", &["j1", "--", "sh", "-c", "echo next"])
            .ok();
        sb.run(
            "jupdate",
            &["j1", "--", "sh", "-c", "printf no-newline; exit 4"],
        )
        .code(69)
        .err_has("jupdate: j1: update failed with status 4");
        sb.run(
            "jupdate",
            &["--timeout", "1s", "j1", "--", "sh", "-c", "sleep 30"],
        )
        .code(75)
        .err_has("timed out");
        let log = log_text(sb);
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 12, "{log}");
        assert_eq!(lines[2], "partial line", "{log}");
        assert!(
            dated(
                lines[3],
                "the run started 2026-01-02 03:04:05 UTC did not finish (jupdate was killed)"
            ),
            "{log}"
        );
        assert!(dated(lines[4], "sh -c 'echo next'"), "{log}");
        assert_eq!(lines[5], "next");
        assert!(dated(lines[6], "exit 0 after "), "{log}");
        assert!(
            dated(lines[7], "sh -c 'printf no-newline; exit 4'"),
            "{log}"
        );
        assert_eq!(lines[8], "no-newline");
        assert!(dated(lines[9], "exit 4 after "), "{log}");
        assert!(dated(lines[10], "sh -c 'sleep 30'"), "{log}");
        assert!(dated(lines[11], "timeout after "), "{log}");
    });
}

/// Nothing the updater does reaches what is already in the log: not a reopening
/// of its output with O_TRUNC (`echo x >/dev/stderr`), not a truncation of it
/// (`: >/proc/self/fd/1`), earlier runs' entries nor its own output so far.
fn history_cannot_be_wiped(b: Backend) {
    sandbox(b, |sb| {
        jail(sb, "");
        sb.run("jupdate", &["j1", "--", "sh", "-c", "echo first-run"])
            .ok();
        // The sleeps: a FreeBSD run's output file is followed every 100 ms (what
        // was copied is the log's; a truncation and a regrowth between two looks
        // would lose the new output's start).
        let script = "echo second-run; sleep 1; : >/proc/self/fd/1; sleep 1; \
                      echo reopened >/dev/stderr; sleep 1; echo after";
        sb.run("jupdate", &["j1", "--", "sh", "-c", script]).ok();
        let log = log_text(sb);
        for want in ["first-run\n", "second-run\n", "reopened\nafter\n"] {
            assert!(log.contains(want), "{want:?} missing:\n{log:?}");
        }
        assert!(!log.contains('\0'), "{log:?}");
        // Nothing of a run's own output file is left beside the log.
        let left: Vec<_> = fs::read_dir(sb.path("log"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["j1.log"], "{left:?}");
    });
}

/// GNU time(1) reports jupdate's own peak RSS.
const TIME: &str = "/usr/bin/time";

/// jupdate's peak RSS, in KiB, to stay under whatever the updater writes.
const MAX_RSS_KIB: u64 = 16 * 1024;

/// `jupdate ARGS` under GNU time: its output and its peak RSS in KiB.
fn measured(sb: &Sandbox, args: &[&str]) -> (Out, u64) {
    assert!(
        Path::new(TIME).is_file(),
        "{TIME} is needed to measure peak RSS (scripts/deps.sh installs it)"
    );
    let mut c = Command::new(TIME);
    sb.backend_env(&mut c);
    c.args(["-f", "jupdate-peak-rss-kib %M"])
        .arg(jlayers_tests::bin_dir().join("jupdate"))
        .arg("-c")
        .arg(sb.path("jlayers.conf"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let rss = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("jupdate-peak-rss-kib "))
        .next_back()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from {TIME}: {stderr}"));
    let out = Out::from(std::process::Output {
        status: output.status,
        stdout: output.stdout,
        stderr: stderr.into_bytes(),
    });
    (out, rss)
}

const MIB_200: &str = "209715200";

/// 200 MiB of real output with `log_max = "1m"`: the log keeps 1 MiB of it and a
/// line saying what was cut, the run goes on to its end (its result line, its
/// last words in the failure tail), and jupdate stays small.
fn real_output_is_bounded(b: Backend) {
    sandbox(b, |sb| {
        jail(sb, "log_max = \"1m\"\n");
        let script =
            format!("yes 0123456789abcdef | head -c {MIB_200}; echo; echo last-words; exit 1");
        let (o, rss) = measured(sb, &["j1", "--", "sh", "-c", &script]);
        o.code(69).err_has("jupdate: j1: log: last-words");
        let len = fs::metadata(sb.path("log/j1.log")).unwrap().len();
        let log = log(sb);
        let text = String::from_utf8_lossy(&log[log.len().saturating_sub(4096)..]).into_owned();
        assert!(len < (1 << 20) + 4096, "log of {len} bytes:\n{text}");
        let cut = 209_715_200 + 1 + "last-words\n".len() - (1 << 20);
        assert!(
            text.contains(&format!(
                "\njupdate: {cut} bytes of output cut (log_max: 1048576 bytes)\n"
            )),
            "{text}"
        );
        let last = text.lines().last().unwrap();
        assert!(dated(last, "exit 1 after "), "{text}");
        assert!(rss < MAX_RSS_KIB, "jupdate's peak RSS {rss} KiB");
    });
}

/// An output made 200 MiB long by a seek past its end (ftruncate, `dd seek=`): a
/// pipe cannot be (Linux), a file's hole is skipped (FreeBSD); the log gets no
/// zeros, and jupdate stays small.
fn sparse_output_writes_no_zeros(b: Backend) {
    sandbox(b, |sb| {
        jail(sb, "");
        let script = format!(
            "echo before-hole; dd of=/proc/self/fd/1 bs=1 seek={MIB_200} count=0 2>&1; \
             echo after-hole; exit 1"
        );
        let (o, rss) = measured(sb, &["j1", "--", "sh", "-c", &script]);
        o.code(69).err_has("jupdate: j1: log: after-hole");
        let log = log(sb);
        let text = String::from_utf8_lossy(&log);
        assert!(log.len() < 64 << 10, "log of {} bytes", log.len());
        assert!(!log.contains(&0), "NUL bytes in the log");
        assert!(
            text.contains("before-hole\n") && text.contains("after-hole\n"),
            "{text}"
        );
        assert!(!o.stderr.contains('\0'), "{:?}", o.stderr);
        assert!(rss < MAX_RSS_KIB, "jupdate's peak RSS {rss} KiB");
    });
}
