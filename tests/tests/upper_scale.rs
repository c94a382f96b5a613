//! jclean on the uppers a jail's root can write: a chain deeper than any path and
//! a directory wider than the descriptor limit. Every mode (prune, `-n`, `--list`,
//! `--only`) sees every entry, under a low descriptor limit, in bounded memory.
//! Not timed: the figures are bench/scale-upper.sh's.
#![cfg(target_os = "linux")]

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use jlayers_tests::{Backend, Sandbox, sandbox};
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, mkdirat};

/// Far below the widths walked: a walker holding a descriptor per pending
/// directory fails here.
const FD_LIMIT: u32 = 64;
/// Peak RSS allowed to any run, whatever the shape (KiB): a backstop. A debug
/// build's own pages are most of it (its tools take about 8 MiB to print their
/// version), so the bound is loose; how a run grows with depth is checked by
/// [`memory_grows_linearly_with_depth`].
const MAX_RSS_KIB: i64 = 20 * 1024;
/// What one more level of a chain may cost a run at most (bytes): the walk's own
/// frame (48 bytes), its vector's doubling, and slack. A path kept per level, or
/// a copy of the path so far, costs kilobytes a level at these depths.
const PER_LEVEL_BYTES: i64 = 96;

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn touch_at(dir: &OwnedFd, name: &str) {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_CLOEXEC;
    drop(openat(dir, name, flags, Mode::from_bits_truncate(0o644)).unwrap());
}

/// A chain `d/d/d/...` of `levels` directories under `top`, a file `f` every
/// `every` levels, made with *at calls (a path that long cannot be used).
/// Returns the number of files.
fn chain(top: &Path, levels: usize, every: usize) -> usize {
    let mut fd = open(top, dir_flags(), Mode::empty()).unwrap();
    let mode = Mode::from_bits_truncate(0o755);
    let mut files = 0;
    for i in 0..levels {
        mkdirat(&fd, "d", mode).unwrap();
        fd = openat(&fd, "d", dir_flags(), Mode::empty()).unwrap();
        if i % every == 0 {
            touch_at(&fd, "f");
            files += 1;
        }
    }
    files
}

/// `n` sibling directories under `top`, a file in each. Returns the number of files.
fn wide(top: &Path, n: usize) -> usize {
    let fd = open(top, dir_flags(), Mode::empty()).unwrap();
    let mode = Mode::from_bits_truncate(0o755);
    for i in 0..n {
        let name = format!("w{i}");
        mkdirat(&fd, name.as_str(), mode).unwrap();
        let sub = openat(&fd, name.as_str(), dir_flags(), Mode::empty()).unwrap();
        touch_at(&sub, "f");
    }
    n
}

/// A run of jclean under `ulimit -n FD_LIMIT`: its status, its peak RSS, its
/// stdout's line count and first line (a listing of a deep chain is gigabytes:
/// read as it comes, never kept).
struct Run {
    code: i32,
    rss_kib: i64,
    lines: usize,
    first: String,
    stderr: String,
}

/// GNU time(1) reports its child's own peak RSS (a child of the test process
/// would carry the test's pages in ru_maxrss across its exec).
const TIME: &str = "/usr/bin/time";

fn jclean(sb: &Sandbox, args: &[&str]) -> Run {
    assert!(
        Path::new(TIME).is_file(),
        "{TIME} is needed to measure peak RSS (scripts/deps.sh installs it)"
    );
    let mut c = Command::new("sh");
    sb.backend_env(&mut c);
    c.arg("-c")
        .arg("ulimit -n \"$0\" && exec \"$@\"")
        .arg(FD_LIMIT.to_string())
        .args([TIME, "-f", "jclean-peak-rss-kib %M"])
        .arg(jlayers_tests::bin_dir().join("jclean"))
        .arg("-c")
        .arg(sb.path("jlayers.conf"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let mut out = BufReader::with_capacity(1 << 20, child.stdout.take().unwrap());
    let (mut lines, mut first, mut line) = (0, String::new(), Vec::new());
    loop {
        line.clear();
        if out.read_until(b'\n', &mut line).unwrap() == 0 {
            break;
        }
        if lines == 0 {
            first = String::from_utf8_lossy(&line).trim_end().to_string();
        }
        lines += 1;
    }
    let st = child.wait().unwrap();
    let stderr = errs.join().unwrap();
    let rss_kib = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("jclean-peak-rss-kib "))
        .next_back()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from {TIME}: {stderr}"));
    Run {
        code: st.code().unwrap_or(-1),
        rss_kib,
        lines,
        first,
        stderr,
    }
}

impl Run {
    #[track_caller]
    fn ok(&self, what: &str) -> &Self {
        assert_eq!(
            self.code, 0,
            "{what}: exit status; first line: {}; stderr: {}",
            self.first, self.stderr
        );
        assert!(
            self.rss_kib < MAX_RSS_KIB,
            "{what}: peak RSS {} KiB",
            self.rss_kib
        );
        self
    }

    /// The FILES field of a report line.
    fn files(&self) -> usize {
        self.first.split('\t').nth(2).unwrap().parse().unwrap()
    }
}

/// Every mode on the upper of j1's ports layer, holding `files` files in `dirs`
/// directories: counted, listed, pruned by kind, pruned. `all_lines`: a plain
/// `--list` too (each of its lines names its whole path: for a chain of N levels
/// that is N²/2 path components, 10 GB at 100,000 levels, so a chain is listed by
/// `--list --only new`, which walks all of it and prints its files).
fn every_mode_sees_everything(sb: &Sandbox, files: usize, dirs: usize, all_lines: bool) {
    let up = sb.path("upper/j1/ports");
    let r = jclean(sb, &["-n", "-b", "j1"]);
    r.ok("-n");
    assert_eq!(r.files(), files, "-n counts every file: {}", r.first);
    if all_lines {
        let r = jclean(sb, &["--list", "j1"]);
        r.ok("--list");
        assert_eq!(r.lines, files + dirs, "--list lists every entry");
    }
    let r = jclean(sb, &["--list", "--only", "new", "j1"]);
    r.ok("--list --only new");
    assert_eq!(r.lines, files, "--list --only new lists every file");
    let r = jclean(sb, &["--only", "new", "-b", "j1"]);
    r.ok("--only new");
    assert_eq!(
        r.files(),
        files,
        "--only new prunes every file: {}",
        r.first
    );
    let r = jclean(sb, &["-n", "-b", "j1"]);
    r.ok("-n after --only new");
    assert_eq!(r.files(), 0, "only the directories are left: {}", r.first);
    jclean(sb, &["-b", "j1"]).ok("prune");
    assert_eq!(std::fs::read_dir(&up).unwrap().count(), 0, "pruned whole");
}

#[test]
fn a_chain_of_100000_levels_in_every_mode() {
    sandbox(Backend::Linux, |sb| {
        let up = sb.scene_upper(&[]);
        let levels = 100_000;
        let files = chain(&up, levels, 1000);
        every_mode_sees_everything(sb, files, levels, false);
    });
}

/// A run's peak RSS on a chain of `levels`, for each mode that walks it all.
fn peaks_on_a_chain(levels: usize) -> Vec<(&'static str, i64)> {
    let mut peaks = Vec::new();
    sandbox(Backend::Linux, |sb| {
        let up = sb.scene_upper(&[]);
        chain(&up, levels, 1000);
        for (what, args) in [
            ("-n", &["-n", "-b", "j1"][..]),
            ("--list --only new", &["--list", "--only", "new", "j1"][..]),
            ("prune", &["-b", "j1"][..]),
        ] {
            peaks.push((what, jclean(sb, args).ok(what).rss_kib));
        }
    });
    peaks
}

/// From 20,000 to 100,000 levels each mode grows by at most PER_LEVEL_BYTES a
/// level; the control: the shallow chain's runs are measured the same way.
#[test]
fn memory_grows_linearly_with_depth() {
    let (shallow, deep) = (20_000, 100_000);
    let small = peaks_on_a_chain(shallow);
    let big = peaks_on_a_chain(deep);
    let allowed = (deep - shallow) as i64 * PER_LEVEL_BYTES / 1024;
    for ((what, low), (_, high)) in small.iter().zip(&big) {
        assert!(*low > 1024, "{what}: no peak RSS measured ({low} KiB)");
        assert!(
            high - low <= allowed,
            "{what}: {low} KiB at {shallow} levels, {high} KiB at {deep}: more than {allowed} KiB more"
        );
    }
}

#[test]
fn a_dir_of_50000_subdirs_under_a_low_descriptor_limit_in_every_mode() {
    sandbox(Backend::Linux, |sb| {
        let up = sb.scene_upper(&[]);
        let n = 50_000;
        let files = wide(&up, n);
        every_mode_sees_everything(sb, files, n, true);
    });
}

/// The chain's file names are one byte: a name the walk keeps must not be
/// confused with a NUL-separated buffer of them.
#[test]
fn names_of_every_length_and_byte() {
    sandbox(Backend::Linux, |sb| {
        let up = sb.scene_upper(&[]);
        let mut fd = open(&up, dir_flags(), Mode::empty()).unwrap();
        let mut levels = 0;
        for len in [1usize, 2, 17, 255] {
            for b in [b'x', 0xff, b' ', b'-'] {
                let name = CString::new(vec![b; len]).unwrap();
                mkdirat(&fd, name.as_c_str(), Mode::from_bits_truncate(0o755)).unwrap();
                fd = openat(&fd, name.as_c_str(), dir_flags(), Mode::empty()).unwrap();
                levels += 1;
            }
        }
        touch_at(&fd, "f");
        let r = jclean(sb, &["--list", "--only", "new", "j1"]);
        r.ok("--list --only new");
        assert_eq!(r.lines, 1);
        assert!(r.first.starts_with("j1\tports\tnew\t"), "{}", r.first);
        jclean(sb, &["-n", "j1"]).ok("-n");
        jclean(sb, &["j1"]).ok("prune");
        assert_eq!(
            std::fs::read_dir(&up).unwrap().count(),
            0,
            "{levels} levels"
        );
    });
}
