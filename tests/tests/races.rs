//! A hostile jail against the host-side tools: a racer thread swaps a directory the
//! jail owns for a symlink to a host directory (renameat2 RENAME_EXCHANGE, in a
//! tight loop) while jmount or junmount runs, many times over. Each case counts the
//! runs in which the jail won (a hit) and requires none; it also counts the runs
//! that did their work and those refused, by kind: some must have worked (a tool
//! that always fails early wins no race), and every refusal must be one the case
//! expects. Run with --nocapture to see the counts; JLAYERS_TEST_BIN_DIR measures
//! another build's tools.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use jlayers_tests::{Backend, Out, Sandbox, on_both, read_mounts, sandbox};

on_both!(absolute_upper_inside_root_is_beneath_it);

// The races run on the Linux backend. On FreeBSD, mount_nullfs and mount_unionfs
// take paths (jlayers checks each new mount afterwards and unmounts by file system
// ID); the simulated userland can only model that with Linux path lookups, which
// would make these tests measure the simulation.
#[test]
fn in_root_upper_swapped_during_jmount_linux() {
    in_root_upper_swapped_during_jmount(Backend::Linux)
}
#[test]
fn usr_swapped_during_jmount_linux() {
    usr_swapped_during_jmount(Backend::Linux)
}
#[test]
fn usr_swapped_during_junmount_linux() {
    usr_swapped_during_junmount(Backend::Linux)
}
#[test]
fn usr_swapped_during_readonly_jmount_linux() {
    usr_swapped_during_readonly_jmount(Backend::Linux)
}

/// Tries per case: enough that the code before descriptor pinning lost every case.
const TRIES: usize = 150;

/// The refusals of a run whose path the jail swapped: a symbolic link met on the
/// descriptor walk, a mount found elsewhere than planned (undone), a directory to
/// make found to be something else.
const SWAPPED: &[Refusal] = &[
    (77, "is a symbolic link; refusing to follow it"),
    (77, "the path changed while jlayers worked on it"),
    (73, "exists and is not a directory"),
];

/// The refusals of junmount whose path the jail swapped: [`SWAPPED`]'s, and, with
/// the stack read while it moved, a mount seen on top of the jail's own (left
/// alone) or an unmount refused as busy (nothing unmounted).
const UNMOUNT_SWAPPED: &[Refusal] = &[
    SWAPPED[0],
    SWAPPED[1],
    SWAPPED[2],
    (69, "is mounted on top of this layer; left alone"),
    (75, ": busy: a process has a file open"),
    (75, "its union is mounted on"),
];

/// Exchange `a` and `b` in one step (renameat2 RENAME_EXCHANGE); 0 on success.
fn exchange(a: &CString, b: &CString) -> libc::c_int {
    // SAFETY: two valid C strings.
    unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    }
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Swap `a` and `b` (one a directory, the other a symlink) until `stop`.
fn race(a: &Path, b: &Path, stop: &AtomicBool) {
    let (a, b) = (c_path(a), c_path(b));
    while !stop.load(Ordering::Relaxed) {
        exchange(&a, &b);
    }
}

/// Run `work` while `dir` (a directory) and `dir.x` (a symlink to `host`) trade
/// places; afterwards `dir` is the directory again.
fn racing<T>(dir: &Path, host: &Path, work: impl FnOnce() -> T) -> T {
    let evil = dir.with_extension("x");
    if fs::symlink_metadata(&evil).is_err() {
        symlink(host, &evil).unwrap();
    }
    let stop = AtomicBool::new(false);
    let r = std::thread::scope(|s| {
        s.spawn(|| race(dir, &evil, &stop));
        let r = work();
        stop.store(true, Ordering::Relaxed);
        r
    });
    if fs::symlink_metadata(dir).unwrap().file_type().is_symlink() {
        race_once(dir, &evil);
    }
    r
}

fn race_once(a: &Path, b: &Path) {
    assert_eq!(exchange(&c_path(a), &c_path(b)), 0, "swap back");
}

/// Every file below `dir`, relative, sorted: what the host had there.
fn listing(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(base, &p, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Take every mount in the sandbox down (lazily), whatever state a run left.
fn reset(sb: &Sandbox) {
    for m in sb.mounts().iter().rev() {
        let _ = nix::mount::umount2(&m.target, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The file systems mounted at `p`, in order, with their mount options.
fn at(p: &Path) -> Vec<(String, bool)> {
    let raw = fs::read("/proc/thread-self/mountinfo").unwrap();
    let mut out = Vec::new();
    for l in raw.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let f: Vec<&[u8]> = l.split(|&b| b == b' ').collect();
        if f[4] == p.as_os_str().as_bytes() {
            let sep = f.iter().position(|&x| x == b"-").unwrap();
            let ro = f[5].split(|&b| b == b',').any(|o| o == b"ro");
            out.push((String::from_utf8_lossy(f[sep + 1]).into_owned(), ro));
        }
    }
    out
}

/// One try: the raced tool's run, whether the jail won, and whether the run did
/// its work (checked when it succeeded).
struct Try {
    out: Out,
    hit: bool,
    worked: bool,
}

/// A refusal a case expects: the exit status and a part of its message.
type Refusal = (i32, &'static str);

/// How a case takes a run that succeeded without doing its work.
#[derive(PartialEq)]
enum Idle {
    /// A failure of the test.
    Refused,
    /// Counted only. junmount looks the jail's mounts up in the mount table, which
    /// names a mount point by its path now: while the racer has `usr` renamed
    /// (`usr.x`), nothing is mounted at the jail's paths. On Linux junmount then
    /// finds the union elsewhere and refuses (75); the simulation of FreeBSD
    /// cannot show it (FreeBSD keeps the path a mount was made on), and a run
    /// there may say "not mounted" and succeed (the mounts stay; no host mount is
    /// touched).
    Counted,
}

/// Run `one` TRIES times, resetting the mounts after each; report, and require
/// that the jail never won, that some run did its work (every success, unless
/// `idle` allows otherwise), and that every failure is one of `refusals`.
fn tries(
    sb: &Sandbox,
    name: &str,
    refusals: &[Refusal],
    idle: Idle,
    mut one: impl FnMut(usize) -> Try,
) {
    let (mut hits, mut worked, mut idled) = (0, 0, 0);
    let mut refused: BTreeMap<Refusal, usize> = BTreeMap::new();
    for i in 0..TRIES {
        let t = one(i);
        hits += usize::from(t.hit);
        let (code, err) = (t.out.code, &t.out.stderr);
        if code == 0 {
            let undone = !t.worked && idle == Idle::Refused;
            assert!(
                !undone,
                "{name}: try {i} succeeded, its work undone:\n{err}"
            );
            worked += usize::from(t.worked);
            idled += usize::from(!t.worked);
        } else {
            let kind = refusals
                .iter()
                .find(|(c, m)| *c == code && err.contains(m))
                .unwrap_or_else(|| panic!("{name}: try {i}: unexpected status {code}:\n{err}"));
            *refused.entry(*kind).or_default() += 1;
        }
        reset(sb);
    }
    eprintln!(
        "race {name} ({:?}): {TRIES} tries, {hits} hits, {worked} worked, {idled} idle, \
         refused {refused:?}",
        sb.backend
    );
    assert_eq!(hits, 0, "{name}: the jail won {hits} of {TRIES} races");
    assert!(worked > 0, "{name}: no run did its work: {refused:?}");
}

/// A host directory the jail aims at: `host/ports` holding a secret file.
fn host_tree(sb: &Sandbox) -> PathBuf {
    let host = sb.path("host");
    fs::create_dir_all(host.join("ports")).unwrap();
    fs::write(host.join("ports/secret"), "host only").unwrap();
    host
}

/// The scene's configuration with j1's ports upper at `upper`.
fn j1_upper(sb: &Sandbox, upper: &str) {
    let root = "[jail.j1]\nroot = \"@T/j1\"";
    sb.conf(
        &jlayers_tests::SCENE_CONF.replace(root, &format!("{root}\nupper.ports = \"{upper}\"")),
    );
}

/// Rows 1-3: an upper dir inside the jail root. With its parent swapped for a link
/// to a host dir, overlay's upperdir= and workdir= would land there: the jail's
/// writes reach the host, and overlay empties a host dir named work/.
fn in_root_upper_swapped_during_jmount(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        j1_upper(sb, "var/up/ports");
        let host = sb.path("host2");
        let plant = || {
            for d in ["ports", "ports.work/work"] {
                fs::create_dir_all(host.join(d)).unwrap();
            }
            fs::write(host.join("ports.work/work/precious"), "keep").unwrap();
        };
        plant();
        fs::create_dir_all(sb.path("j1/var/up")).unwrap();
        let before = listing(&host);
        tries(
            sb,
            "in-root upper swapped during jmount",
            SWAPPED,
            Idle::Refused,
            |i| {
                let out = racing(&sb.path("j1/var/up"), &host, || sb.run("jmount", &["j1"]));
                let probe = format!("probe{i}");
                // A build-like write inside the jail must not reach the host; it lands
                // in the upper inside the jail root.
                let worked = out.code == 0
                    && fs::write(sb.path("j1/usr/ports").join(&probe), "jail").is_ok()
                    && sb.path("j1/var/up/ports").join(&probe).is_file();
                let hit = listing(&host) != before;
                if hit {
                    let _ = fs::remove_dir_all(&host);
                    plant();
                }
                Try { out, hit, worked }
            },
        );
    });
}

/// Rows 4 and 6: `usr` swapped while jmount works. The jail must never end up with
/// a bare (read-write) bind of the host source, a mount of it anywhere else, or an
/// overlay whose lower layer is a host dir of its choosing.
fn usr_swapped_during_jmount(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        let host = host_tree(sb);
        let target = sb.path("j1/usr/ports");
        tries(
            sb,
            "usr swapped during jmount",
            SWAPPED,
            Idle::Refused,
            |_| {
                let out = racing(&sb.path("j1/usr"), &host, || sb.run("jmount", &["j1"]));
                let elsewhere = sb.mounts().iter().any(|m| !m.target.starts_with(&target));
                let bare = at(&target).len() == 1;
                let sees_host = target.join("secret").exists();
                let worked = at(&target).get(1).is_some_and(|m| m.0 == "overlay")
                    && target.join("editors/vim/Makefile").is_file()
                    && !at(&target.join("distfiles")).is_empty();
                Try {
                    out,
                    hit: elsewhere || bare || sees_host,
                    worked,
                }
            },
        );
    });
}

/// Row 5: `usr` swapped during junmount. A host mount where the jail points
/// (`host/ports`) must survive.
fn usr_swapped_during_junmount(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        let host = host_tree(sb);
        let decoy = host.join("ports");
        let jail = sb.path("j1");
        tries(
            sb,
            "usr swapped during junmount",
            UNMOUNT_SWAPPED,
            Idle::Counted,
            |_| {
                sb.tmpfs(&decoy);
                sb.run("jmount", &["j1"]).ok();
                let out = racing(&sb.path("j1/usr"), &host, || sb.run("junmount", &["j1"]));
                let worked = sb.mounts().iter().all(|m| !m.target.starts_with(&jail));
                Try {
                    out,
                    hit: at(&decoy).is_empty(),
                    worked,
                }
            },
        );
    });
}

/// Row 7: a readonly layer. The read-only setting must never hit a host mount the
/// jail points at, and the jail's layer must never stay writable.
fn usr_swapped_during_readonly_jmount(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.conf(&jlayers_tests::SCENE_CONF.replace(
            "target = \"usr/ports\"\n",
            "target = \"usr/ports\"\nmode = \"readonly\"\n",
        ));
        // The distfiles layer's mount point, which cannot be made in a read-only
        // layer: without it no run could succeed.
        fs::create_dir_all(sb.path("ports/distfiles")).unwrap();
        let host = host_tree(sb);
        let decoy = host.join("ports");
        let target = sb.path("j1/usr/ports");
        tries(
            sb,
            "usr swapped during readonly jmount",
            SWAPPED,
            Idle::Refused,
            |_| {
                sb.tmpfs(&decoy);
                let out = racing(&sb.path("j1/usr"), &host, || sb.run("jmount", &["j1"]));
                let decoy_ro = at(&decoy).iter().any(|m| m.1);
                let writable = at(&target).first().is_some_and(|m| !m.1);
                let worked = at(&target).first().is_some_and(|m| m.1)
                    && target.join("editors/vim/Makefile").is_file();
                Try {
                    out,
                    hit: decoy_ro || writable,
                    worked,
                }
            },
        );
    });
}

/// No race needed: an upper written as an absolute path inside the jail root is
/// still the jail's. A link the jail plants on its way must stop jmount (nothing
/// made on the host) and jclean (nothing deleted there).
fn absolute_upper_inside_root_is_beneath_it(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        j1_upper(sb, "@T/j1/usr/tmp/foo");
        let host = sb.path("host3");
        fs::create_dir_all(host.join("foo")).unwrap();
        fs::write(host.join("foo/precious"), "keep").unwrap();
        symlink(&host, sb.path("j1/usr/tmp")).unwrap();
        sb.run("jmount", &["j1"])
            .code(77)
            .err_has("usr/tmp is a symbolic link");
        assert!(sb.mounts().is_empty());
        sb.run("jclean", &["j1"])
            .code(77)
            .err_has("usr/tmp is a symbolic link");
        assert_eq!(
            listing(&host),
            [Path::new("foo"), Path::new("foo/precious")]
        );
        // The same upper_root under the jails' parent.
        fs::remove_file(sb.path("j1/usr/tmp")).unwrap();
        let conf = jlayers_tests::SCENE_CONF.replace("@T/upper", "@T");
        sb.conf(&conf);
        symlink(&host, sb.path("j1/ports")).unwrap();
        sb.run("jmount", &["j1"])
            .code(77)
            .err_has("j1/ports is a symbolic link");
        sb.run("jclean", &["j1"])
            .code(77)
            .err_has("j1/ports is a symbolic link");
        assert_eq!(
            listing(&host),
            [Path::new("foo"), Path::new("foo/precious")]
        );
        assert!(read_mounts().iter().all(|m| !m.target.starts_with(&host)));
    });
}

/// jupdate's updater on Linux is root in a sandbox, not in a chroot: it cannot
/// mount (a new /proc would lead to /proc/PID/root, the host's tree), and nothing
/// it names leads out of the jail root.
#[test]
fn updater_cannot_reach_the_host() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        sb.jail_root(
            "j1",
            &[
                "sh", "mount", "mkdir", "echo", "ls", "chown", "mknod", "cat",
            ],
        );
        let escaped = sb.path("escaped");
        let script = format!(
            "mkdir -p /proc /mnt; \
             mount -t proc proc /proc && echo MOUNTED-PROC; \
             mount -t tmpfs tmpfs /mnt && echo MOUNTED-TMPFS; \
             echo pwned > /proc/1/root{e}; echo pwned > /../../..{e}; \
             echo x > /owned && chown 1234:1234 /owned && echo CHOWN-OK; \
             mknod /null c 1 3 && echo MKNOD-OK; \
             echo sandbox-done",
            e = escaped.display()
        );
        let o = sb.run("jupdate", &["j1", "--", "sh", "-c", &script]);
        o.ok();
        let log = fs::read_to_string(sb.path("log/j1.log")).unwrap();
        // What the updater printed, below the log's header (which holds the script).
        let log = log.split_once('\n').map_or("", |(_, rest)| rest);
        assert!(log.contains("sandbox-done"), "{log}");
        assert!(!log.contains("MOUNTED"), "the updater could mount:\n{log}");
        assert!(!escaped.exists(), "the updater wrote a host file:\n{log}");
        // Root inside still builds ports: chown works; mknod does not (no device
        // cgroup guards the nodes it would make: tests/tests/sandbox.rs).
        assert!(log.contains("CHOWN-OK"), "{log}");
        assert!(!log.contains("MKNOD-OK"), "{log}");
        assert!(sb.path("j1/owned").exists());
    });
}

/// Kernels before 6.13 take overlay layers only as paths: jmount then names the
/// pinned descriptors as `/proc/self/fd/N` (the branch forced here), and still
/// recognises its overlay by its source, the upper dir.
#[test]
fn overlay_layers_as_proc_fd_paths() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        let run = |tool: &str| {
            jlayers_tests::Out::from(
                sb.cmd(tool)
                    .env("JLAYERS_OVERLAY_LAYERS", "paths")
                    .arg("-c")
                    .arg(sb.path("jlayers.conf"))
                    .arg("j1")
                    .output()
                    .unwrap(),
            )
        };
        run("jmount").ok();
        assert_eq!(at(&sb.path("j1/usr/ports")).len(), 2);
        let info = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        let overlay = info.lines().find(|l| l.contains(" - overlay ")).unwrap();
        assert!(overlay.contains("upperdir=/proc/self/fd/"), "{overlay}");
        fs::write(sb.path("j1/usr/ports/built"), "x").unwrap();
        assert!(sb.path("upper/j1/ports/built").exists());
        assert!(!sb.path("ports/built").exists());
        run("jmount").ok();
        run("junmount").ok();
        assert!(sb.mounts().is_empty());
    });
}
