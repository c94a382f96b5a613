//! Where the end-to-end tests run, and what differs between the two hosts; the
//! scenarios are the same code on both.
//!
//! - Linux: each test in a private mount namespace of its own (nothing it mounts
//!   is visible outside); the FreeBSD backend runs against the simulated userland
//!   of `tests/freebsd-sim` (a SIMULATION, first on PATH).
//! - FreeBSD: the FreeBSD backend runs against the base system itself: jails made
//!   by jail(8) through `service jail onestart`, real nullfs, unionfs and tmpfs.
//!   FreeBSD has no mount namespaces, so a test's mounts are in the host's table
//!   while it runs (all below its temp dir, on a tmpfs of its own) and its jails
//!   are host jails: the tests run one at a time, only as root, only when
//!   `JLAYERS_E2E_ON_HOST=1` says the host is a throwaway one, and each cleans up
//!   after itself (jails removed, mounts unmounted, its jail.conf.d files deleted).
//!   Written without a FreeBSD host to run it on: UNVERIFIED until run on one.

use std::path::{Path, PathBuf};

/// Whether the FreeBSD backend runs against the simulation (a Linux host) rather
/// than the base system (a FreeBSD host).
pub const SIMULATED: bool = cfg!(not(target_os = "freebsd"));

/// The union's file system type in the host's mount table: the simulation's
/// unions are Linux overlays.
pub const UNION_FSTYPE: &str = if SIMULATED { "overlay" } else { "unionfs" };

#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(target_os = "freebsd")]
pub use freebsd::*;

/// One mount as the test reads it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct M {
    pub target: PathBuf,
    pub fstype: String,
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    use std::path::{Path, PathBuf};

    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};

    use super::M;

    /// Held while a test runs; tests run in parallel here.
    pub struct Claim;

    pub fn claim() -> Claim {
        Claim
    }

    /// Before the test's thread starts: nothing (its namespace is made in it).
    pub fn prepare(_dir: &Path) {}

    /// After it ended: nothing (the namespace died with it).
    pub fn cleanup(_dir: &Path) {}

    /// A private mount namespace for this thread, and a tmpfs of its own on `dir`:
    /// the test's files are fast, and gone with the namespace.
    pub fn enter_thread(dir: &Path) {
        if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
            panic!(
                "cannot create a private mount namespace ({e}): run the tests as root, or in a \
                 user+mount namespace: unshare -Urm --propagation private cargo test --workspace"
            );
        }
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make / private in the test's mount namespace");
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=0755"),
        )
        .expect("tmpfs on the test's temp dir");
    }

    /// This thread's mount table (`/proc/thread-self`: the namespace is per
    /// thread). Read with the harness's own few lines rather than jlayers'
    /// parser, so that the tests check the tools against an independent reading.
    pub fn read_mounts() -> Vec<M> {
        let raw = std::fs::read("/proc/thread-self/mountinfo").unwrap();
        raw.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&[u8]> = l.split(|&b| b == b' ').collect();
                let sep = f.iter().position(|&x| x == b"-").unwrap();
                M {
                    target: PathBuf::from(OsString::from_vec(unescape(f[4]))),
                    fstype: String::from_utf8_lossy(f[sep + 1]).into_owned(),
                }
            })
            .collect()
    }

    fn unescape(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            if s[i] == b'\\' && i + 3 < s.len() {
                let o = &s[i + 1..i + 4];
                out.push((o[0] - b'0') * 64 + (o[1] - b'0') * 8 + (o[2] - b'0'));
                i += 4;
            } else {
                out.push(s[i]);
                i += 1;
            }
        }
        out
    }

    /// Whether a live process (not a zombie) runs exactly `argv`, from /proc.
    pub fn process_alive(argv: &[&str]) -> bool {
        let mut want = Vec::new();
        for a in argv {
            want.extend_from_slice(a.as_bytes());
            want.push(0);
        }
        any_live(|p| std::fs::read(p.join("cmdline")).is_ok_and(|c| c.ends_with(&want)))
    }

    /// Whether a live process (not a zombie, not dead) whose /proc/PID is `pick`ed
    /// exists.
    fn any_live(pick: impl Fn(&Path) -> bool) -> bool {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return false;
        };
        procs.flatten().any(|e| {
            let p = e.path();
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.is_empty() && !state.starts_with(['Z', 'X']) && pick(&p)
        })
    }

    /// Whether a live process (not a zombie) has `root` as its root directory (the
    /// same directory: device and inode, through /proc/PID/root): how a test
    /// tells that jupdate's Linux sandbox, which pivots into the jail root, runs.
    pub fn rooted_at(root: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(want) = std::fs::metadata(root) else {
            return false;
        };
        any_live(|p| {
            std::fs::metadata(p.join("root"))
                .is_ok_and(|m| (m.dev(), m.ino()) == (want.dev(), want.ino()))
        })
    }

    /// The mounts at `target`, oldest first, as (file system type, source): a bind
    /// mount's source is the path it shows (the mount point of a mount of the same
    /// device at that device's root, joined with the bind's root), any other's the
    /// source field (an overlay's is what jlayers named it: the upper dir).
    pub fn sources_at(target: &Path) -> Vec<(String, PathBuf)> {
        let raw = std::fs::read("/proc/thread-self/mountinfo").unwrap();
        let rows: Vec<Vec<Vec<u8>>> = raw
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&[u8]> = l.split(|&b| b == b' ').collect();
                let sep = f.iter().position(|&x| x == b"-").unwrap();
                // device, root, mount point, type, source
                [f[2], f[3], f[4], f[sep + 1], f[sep + 2]]
                    .iter()
                    .map(|x| unescape(x))
                    .collect()
            })
            .collect();
        let path = |b: &[u8]| PathBuf::from(OsString::from_vec(b.to_vec()));
        rows.iter()
            .filter(|r| path(&r[2]) == target)
            .map(|r| {
                let whole = rows.iter().find(|w| w[0] == r[0] && w[1] == b"/");
                let source = match whole {
                    Some(w) if r[3] != b"overlay" => path(&w[2]).join(path(&r[1][1..])),
                    _ => path(&r[4]),
                };
                (String::from_utf8_lossy(&r[3]).into_owned(), source)
            })
            .collect()
    }

    /// Make `name` a jail of the simulated userland (its jail.conf entry).
    pub fn register_jail(state: &Path, name: &str, root: &Path) {
        std::fs::create_dir_all(state.join("jails")).unwrap();
        std::fs::write(state.join("jails").join(name), root.to_str().unwrap()).unwrap();
    }

    /// A userland for a jail root: a static busybox in `/bin` with these applets.
    pub fn jail_userland(root: &Path, applets: &[&str]) {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok())
            .expect("a static busybox is needed for these tests (apt-get install busybox-static)");
        // /root too: jexec -l changes to root's home directory in the jail.
        for dir in ["bin", "root"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        for applet in applets {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
}

#[cfg(target_os = "freebsd")]
mod freebsd {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::{Mutex, MutexGuard};

    use super::M;

    /// The jail.conf.d files the running test wrote.
    static WRITTEN: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Held while a test runs: one at a time (jails and mounts are the host's).
    pub struct Claim(#[allow(dead_code)] MutexGuard<'static, ()>);

    /// Take the host for one test, after checking that it may be used.
    pub fn claim() -> Claim {
        let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        if std::env::var_os("JLAYERS_E2E_ON_HOST").is_none_or(|v| v != "1") {
            panic!(
                "FreeBSD has no mount namespaces: the end-to-end tests mount below their temp \
                 dirs and create jails on this host. Run them as root on a throwaway host or VM \
                 with JLAYERS_E2E_ON_HOST=1 (see README, \"Tests on FreeBSD\")"
            );
        }
        if !nix::unistd::geteuid().is_root() {
            panic!("the end-to-end tests mount and create jails: run them as root");
        }
        let jails = output(&["jls", "-q", "name"]);
        if !jails.trim().is_empty() {
            panic!(
                "jails are running on this host ({}): the tests create and remove jails; \
                 run them where none runs",
                jails.split_whitespace().collect::<Vec<_>>().join(", ")
            );
        }
        Claim(guard)
    }

    /// The test's temp dir gets a tmpfs of its own.
    pub fn prepare(dir: &Path) {
        run(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "mode=0755",
            "tmpfs",
            path(dir),
        ]);
    }

    /// Remove what the test left on the host: jails with their root below its
    /// temp dir, its jail.conf.d files, every mount below the temp dir and the
    /// temp dir's tmpfs.
    pub fn cleanup(dir: &Path) {
        for line in output(&["jls", "-q", "name", "path"]).lines() {
            if let Some((name, p)) = line.split_once(' ') {
                if Path::new(p).starts_with(dir) {
                    let _ = Command::new("jail").args(["-r", name]).status();
                }
            }
        }
        for f in WRITTEN.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = std::fs::remove_file(f);
        }
        // Newest first; a few rounds, in case unmounting one reveals another.
        for _ in 0..5 {
            let below: Vec<PathBuf> = read_mounts()
                .into_iter()
                .map(|m| m.target)
                .filter(|t| t.starts_with(dir) && t != dir)
                .collect();
            if below.is_empty() {
                break;
            }
            for t in below.iter().rev() {
                let _ = Command::new("umount").arg("-f").arg(t).status();
            }
        }
        let _ = Command::new("umount").arg("-f").arg(dir).status();
    }

    /// Nothing per thread: FreeBSD has no mount namespaces.
    pub fn enter_thread(_dir: &Path) {}

    /// The host's mount table, from `mount -p`: fields separated by white space,
    /// which mount(8) does not escape (the tests' own paths hold none); paths as
    /// their bytes.
    pub fn read_mounts() -> Vec<M> {
        use std::os::unix::ffi::OsStrExt;
        let o = Command::new("mount").arg("-p").output().unwrap();
        o.stdout
            .split(|&b| b == b'\n')
            .filter_map(|l| {
                let f: Vec<&[u8]> = l
                    .split(|b| b.is_ascii_whitespace())
                    .filter(|w| !w.is_empty())
                    .collect();
                (f.len() >= 3).then(|| M {
                    target: PathBuf::from(std::ffi::OsStr::from_bytes(f[1])),
                    fstype: String::from_utf8_lossy(f[2]).into_owned(),
                })
            })
            .collect()
    }

    /// Whether a live process runs exactly `argv`, by pgrep(1) (which leaves out
    /// zombies: they have no arguments left to match).
    pub fn process_alive(argv: &[&str]) -> bool {
        let pattern = format!("^{}$", argv.join(" "));
        Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Make `name` a jail that `service jail onestart NAME` starts (rc.d/jail
    /// reads /etc/jail.conf.d/NAME.conf): a persistent jail at `root`.
    pub fn register_jail(_state: &Path, name: &str, root: &Path) {
        let dir = Path::new("/etc/jail.conf.d");
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join(format!("{name}.conf"));
        if conf.exists() {
            panic!(
                "{} exists: the tests make a jail of that name; run them on a host without it",
                conf.display()
            );
        }
        let text = format!(
            "{name} {{\n\tpath = \"{}\";\n\tpersist;\n}}\n",
            root.display()
        );
        std::fs::write(&conf, text).unwrap();
        WRITTEN.lock().unwrap_or_else(|p| p.into_inner()).push(conf);
    }

    /// A userland for a jail root: the host's own programs in `/bin` with the
    /// shared libraries ldd(1) names and the run-time linker; a passwd database
    /// with root and the login class database, which `jexec -l` reads inside the
    /// jail.
    pub fn jail_userland(root: &Path, applets: &[&str]) {
        // /root: jexec -l changes to root's home directory in the jail.
        for dir in ["bin", "etc", "root"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for applet in applets {
            let host = ["/bin", "/usr/bin", "/sbin", "/usr/sbin"]
                .iter()
                .map(|d| Path::new(d).join(applet))
                .find(|p| p.is_file())
                .unwrap_or_else(|| {
                    panic!("{applet}: not found in /bin, /usr/bin, /sbin, /usr/sbin")
                });
            std::fs::copy(&host, root.join("bin").join(applet)).unwrap();
            for lib in libraries(&host) {
                copy_into(root, &lib);
            }
        }
        copy_into(root, Path::new("/libexec/ld-elf.so.1"));
        if Path::new("/etc/login.conf.db").exists() {
            copy_into(root, Path::new("/etc/login.conf.db"));
        }
        let etc = root.join("etc");
        std::fs::write(
            etc.join("master.passwd"),
            "root::0:0::0:0:Charlie &:/root:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(etc.join("group"), "wheel:*:0:root\n").unwrap();
        run(&[
            "pwd_mkdb",
            "-d",
            path(&etc),
            path(&etc.join("master.passwd")),
        ]);
    }

    /// The shared libraries a program needs, by ldd(1)'s `-f` format.
    fn libraries(program: &Path) -> Vec<PathBuf> {
        let o = Command::new("ldd")
            .args(["-f", "%p\n"])
            .arg(program)
            .output()
            .unwrap();
        // A static program: ldd says so and fails; it needs nothing.
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with('/'))
            .map(PathBuf::from)
            .collect()
    }

    fn copy_into(root: &Path, host: &Path) {
        let to = root.join(host.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(host, &to).unwrap();
    }

    fn path(p: &Path) -> &str {
        p.to_str().expect("the tests' paths are UTF-8")
    }

    fn run(argv: &[&str]) {
        let st = Command::new(argv[0]).args(&argv[1..]).status().unwrap();
        assert!(st.success(), "{}", argv.join(" "));
    }

    fn output(argv: &[&str]) -> String {
        let o = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// The sim state dir of a test dir (where the simulated jail.conf lives).
pub fn sim_state(dir: &Path) -> PathBuf {
    dir.join("sim-state")
}
