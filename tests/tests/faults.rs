//! Faults and bad input: no panic, no crash, no lost owner, no silent partial
//! success. Each test in its own mount namespace.
// The tests of the Linux backend run on a Linux host only; on FreeBSD their helpers
// are left unused.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jlayers_tests::{Backend, Sandbox, on_both, sandbox};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A small deterministic generator (xorshift), seeded from the clock; the seed is
/// in every failure message, and `FAULTS_SEED` replays it.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("FAULTS_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn entries(p: &Path) -> usize {
    fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

/// A chain of `levels` directories below `top`, with a file every 50 levels.
fn chain(top: &Path, levels: usize) {
    let mut p = top.to_path_buf();
    for i in 0..levels {
        p.push("d");
        if i % 50 == 0 {
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("f"), "x").unwrap();
        }
    }
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("bottom"), "x").unwrap();
}

/// `ports` files under `top` in a ports-like shape: category/port/work/src.
fn tree(top: &Path, ports: usize) {
    for p in 0..ports {
        let d = top.join(format!("cat{}/port{p}/work/src", p % 7));
        fs::create_dir_all(&d).unwrap();
        for f in 0..20 {
            fs::write(d.join(format!("f{f}.c")), "int x;\n").unwrap();
        }
    }
}

#[cfg(target_os = "linux")]
#[test]
fn numbers_out_of_range_are_usage_errors() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        for age in [
            "18446744073709551615s",
            "20000000000000w",
            "110000000000000d",
        ] {
            for dry in [&[][..], &["-n"][..]] {
                let mut args = dry.to_vec();
                args.extend(["--older-than", age, "j1"]);
                let o = sb.run("jclean", &args);
                o.code(64).err_has("too large");
                assert_eq!(o.stderr.lines().count(), 1, "one line: {}", o.stderr);
            }
        }
        for jobs in ["0", "257", "3000", "100000"] {
            sb.run("jclean", &["-j", jobs, "j1"])
                .code(64)
                .err_has("1 to 256");
            sb.run("jupdate", &["-j", jobs, "j1"])
                .code(64)
                .err_has(&format!("jupdate: invalid value '{jobs}' for '--jobs <N>'"))
                .err_has("1 to 256");
        }
        sb.run("jupdate", &["--timeout", "0s", "j1"])
            .code(64)
            .err_has("at least 1s");
        sb.run("jupdate", &["--timeout", "20000000000000w", "j1"])
            .code(64)
            .err_has("jupdate: invalid value '20000000000000w' for '--timeout <AGE>'")
            .err_has("too large");
        // The largest values taken work.
        sb.run(
            "jclean",
            &["-n", "-j", "256", "--older-than", "5214w", "j1"],
        )
        .ok();
    });
}

#[cfg(target_os = "linux")]
#[test]
fn any_depth_in_bounded_stack() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        // One `mkdir -p` inside a jail makes a tree deeper than any recursion.
        for j in ["j1", "j2"] {
            chain(&sb.path(&format!("upper/{j}/ports")), 1500);
        }
        for jobs in ["1", "2"] {
            let o = sb.run("jclean", &["-n", "-b", "-j", jobs, "--all"]);
            o.ok();
            let last = o.stdout.lines().last().unwrap_or_default().to_string();
            assert!(last.starts_with("total\t-\t62\t"), "{}", o.stdout);
        }
        sb.run("jclean", &["-j", "2", "--all"]).ok();
        for j in ["j1", "j2"] {
            assert_eq!(entries(&sb.path(&format!("upper/{j}/ports"))), 0);
        }
    });
}

/// Run jclean under `ulimit -n LIMIT`.
fn jclean_with_fd_limit(sb: &Sandbox, limit: u32, args: &[&str]) -> jlayers_tests::Out {
    let mut c = std::process::Command::new("sh");
    sb.backend_env(&mut c);
    c.arg("-c")
        .arg("ulimit -n \"$0\" && exec \"$@\"")
        .arg(limit.to_string())
        .arg(jlayers_tests::bin_dir().join("jclean"))
        .arg("-c")
        .arg(sb.path("jlayers.conf"))
        .args(args);
    jlayers_tests::Out::from(c.output().unwrap())
}

#[cfg(target_os = "linux")]
#[test]
fn any_depth_in_bounded_descriptors_and_never_a_silent_leftover() {
    sandbox(Backend::Linux, |sb| {
        let up = sb.scene_upper(&[]);
        let fill = || {
            chain(&up.join("deep"), 200);
            tree(&up, 30);
        };
        fill();
        jclean_with_fd_limit(sb, 64, &["-j", "2", "j1"]).ok();
        assert_eq!(entries(&up), 0);
        // Starved of descriptors, it may fail, but never says it is done when it
        // is not.
        for limit in [8, 10, 12, 16, 20, 24, 32] {
            fill();
            let o = jclean_with_fd_limit(sb, limit, &["-j", "2", "j1"]);
            match o.code {
                0 => assert_eq!(entries(&up), 0, "ulimit -n {limit}: exit 0 but not empty"),
                69 => {
                    o.err_has("left");
                }
                _ => panic!("ulimit -n {limit}: {o:?}"),
            }
        }
    });
}

#[cfg(target_os = "linux")]
#[test]
fn most_jobs_obey_sigterm_at_once() {
    sandbox(Backend::Linux, |sb| {
        let up = sb.scene_upper(&[]);
        tree(&up, 1500); // 30,000 files
        let (out, took) = sb.signal_jclean(&up, 100, &["-j", "256", "-b", "j1"], Signal::SIGTERM);
        assert!(took < Duration::from_secs(1), "took {took:?}");
        assert_eq!(out.status.code(), Some(130), "{out:?}");
    });
}

/// Owner, group and mode of a directory, or None when it is missing.
fn owner(p: &Path) -> Option<(u32, u32, u32)> {
    fs::symlink_metadata(p)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.uid(), m.gid(), m.mode() & 0o7777))
}

const OWNED: (u32, u32, u32) = (1234, 2345, 0o710);

/// Jails j1..jN (the scene's layers), each upper owned 1234:2345 mode 710 and
/// holding a file of the jail's own.
fn fleet(sb: &Sandbox, n: usize) -> Vec<PathBuf> {
    sb.scene();
    let mut conf = jlayers_tests::SCENE_CONF.to_string();
    let mut uppers = Vec::new();
    for j in 1..=n {
        fs::create_dir_all(sb.path(&format!("j{j}/usr"))).unwrap();
        if j > 2 {
            conf.push_str(&format!("[jail.j{j}]\nroot = \"@T/j{j}\"\n"));
        }
        let up = sb.path(&format!("upper/j{j}/ports"));
        fs::create_dir_all(&up).unwrap();
        fs::write(up.join("jail-data"), format!("j{j}")).unwrap();
        std::os::unix::fs::chown(&up, Some(OWNED.0), Some(OWNED.1)).unwrap();
        fs::set_permissions(&up, fs::Permissions::from_mode(OWNED.2)).unwrap();
        uppers.push(up);
    }
    sb.conf(&conf);
    uppers
}

#[track_caller]
fn assert_uppers(uppers: &[PathBuf], data: bool, why: &str) {
    for up in uppers {
        assert_eq!(owner(up), Some(OWNED), "{why}: {}", up.display());
        if data {
            assert!(
                up.join("jail-data").is_file(),
                "{why}: {} lost data",
                up.display()
            );
        }
    }
}

fn spawn(sb: &Sandbox, tool: &str, env: Option<(&str, &str)>) -> Child {
    let mut c = sb.cmd(tool);
    c.arg("-c")
        .arg(sb.path("jlayers.conf"))
        .args(["-q", "--all"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((k, v)) = env {
        c.env(k, v);
    }
    // Its own process group, so that what it started can be waited for.
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    c.spawn().unwrap()
}

/// SIGKILL to the tool alone, as `kill -9 PID` does; then wait until what it had
/// started (the simulation's mount_unionfs, say) is done too, as the system call a
/// FreeBSD tool was in completes before anything else sees the mount table.
fn kill_tool(child: &mut Child) {
    let _ = child.kill();
    child.wait().unwrap();
    let group = Pid::from_raw(-(child.id() as i32));
    let t = Instant::now();
    while kill(group, None).is_ok() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How long a whole run of `tool` takes here, to spread the kills over it.
fn duration(sb: &Sandbox, tool: &str) -> Duration {
    let t = Instant::now();
    sb.run(tool, &["--all"]).ok();
    t.elapsed()
}

/// The converged states: every stack up (3 mounts a jail), or none.
#[track_caller]
fn assert_converged(sb: &Sandbox, up: bool, jails: usize, why: &str) {
    let n = sb.mounts().len();
    assert_eq!(n, if up { 3 * jails } else { 0 }, "{why}");
}

/// jmount --all and junmount --all killed (SIGKILL) at random moments: the next run
/// of either converges, exits 0, and no upper loses its data or its owner.
fn kill9_mount_and_unmount_converge(b: Backend) {
    sandbox(b, |sb| {
        // The simulation's tools are shell scripts: fewer jails and rounds there.
        let (jails, rounds) = match b {
            Backend::Linux => (6, 40),
            Backend::FreeBsd => (3, 16),
        };
        let uppers = fleet(sb, jails);
        let mut rng = Rng::new();
        let full = duration(sb, "jmount").max(duration(sb, "junmount"));
        for round in 0..rounds {
            let tool = ["jmount", "junmount"][rng.below(2) as usize];
            if tool == "junmount" {
                sb.run("jmount", &["--all"]).ok();
            }
            let mut child = spawn(sb, tool, None);
            std::thread::sleep(full.mul_f64(rng.below(1000) as f64 / 1000.0));
            kill_tool(&mut child);
            let why = format!("round {round}, {tool} killed, seed {}", rng.0);
            assert_uppers(&uppers, true, &why);
            let next = ["jmount", "junmount"][rng.below(2) as usize];
            sb.run(next, &["--all"]).ok();
            assert_converged(sb, next == "jmount", jails, &why);
            assert_uppers(&uppers, true, &why);
        }
        sb.run("junmount", &["--all"]).ok();
        if b == Backend::FreeBsd && jlayers_tests::SIMULATED {
            // And killed right after each step: the simulation's tools kill their
            // caller after the N-th mount or unmount (the base system's cannot).
            for (tool, step, steps) in [
                ("jmount", "mount_nullfs", 2 * jails),
                ("jmount", "mount_unionfs", jails),
                ("junmount", "umount", 3 * jails),
            ] {
                for n in 1..=steps {
                    if tool == "junmount" {
                        sb.run("jmount", &["--all"]).ok();
                    }
                    let _ = fs::remove_file(sb.path(&format!("sim-state/calls.{step}")));
                    let at = format!("{step} {n}");
                    let st = spawn(sb, tool, Some(("SIM_KILL_AT", &at))).wait().unwrap();
                    assert_eq!(st.code(), None, "{tool} killed after {at}");
                    let why = format!("{tool} killed after {at}");
                    assert_uppers(&uppers, true, &why);
                    sb.run(tool, &["--all"]).ok();
                    assert_converged(sb, tool == "jmount", jails, &why);
                    sb.run("junmount", &["--all"]).ok();
                }
            }
        }
    });
}

/// jclean killed at random moments: the upper is never missing, never changes owner
/// or mode, and the next run empties it and exits 0. A watcher checks the uppers
/// the whole time: emptying is crash-safe at every instant, not just at the kills.
#[cfg(target_os = "linux")]
#[test]
fn kill9_clean_converges_upper_never_missing() {
    sandbox(Backend::Linux, |sb| {
        const JAILS: usize = 4;
        let uppers = fleet(sb, JAILS);
        let fill = || {
            for up in &uppers {
                tree(up, 60);
            }
        };
        fill();
        let full = duration(sb, "jclean");
        let stop = AtomicBool::new(false);
        let seen_bad = std::thread::scope(|sc| {
            let watcher = sc.spawn(|| {
                let mut bad = None;
                while !stop.load(Ordering::Relaxed) {
                    for up in &uppers {
                        let o = owner(up);
                        if o != Some(OWNED) {
                            bad.get_or_insert((up.clone(), o));
                        }
                    }
                }
                bad
            });
            // Stop the watcher however this thread leaves (a failed assert too).
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let stopper = Stop(&stop);
            let mut rng = Rng::new();
            for round in 0..30 {
                fill();
                let mut child = spawn(sb, "jclean", None);
                std::thread::sleep(full.mul_f64(rng.below(1000) as f64 / 1000.0));
                kill_tool(&mut child);
                let why = format!("round {round}, seed {}", rng.0);
                assert_uppers(&uppers, false, &why);
                sb.run("jclean", &["--all"]).ok();
                for up in &uppers {
                    assert_eq!(entries(up), 0, "{why}");
                }
            }
            drop(stopper);
            watcher.join().unwrap()
        });
        assert_eq!(seen_bad, None, "an upper was missing or changed owner/mode");
    });
}

/// `jmount -n | sh` is exactly `jmount`, and junmount takes that run down, for
/// paths holding what mount(8)'s option parser or overlayfs's escapes trip on:
/// `"` (mount(8) has no escape for it), `,` `:` and (Linux) `\`.
fn dry_run_is_the_run_for_any_path(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        let (root, upper) = match b {
            Backend::Linux => ("j\"1", "up,per:x\\y"),
            // FreeBSD's own tools take these as plain arguments.
            Backend::FreeBsd => ("j\"1", "up,per:x"),
        };
        fs::create_dir_all(sb.path(root).join("usr")).unwrap();
        let toml = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        sb.conf(
            &jlayers_tests::SCENE_CONF
                .replace("@T/j1", &format!("@T/{}", toml(root)))
                .replace("@T/upper", &format!("@T/{}", toml(upper))),
        );
        sb.run("jmount", &["--all"]).ok();
        let direct = sb.mounts();
        assert_eq!(direct.len(), 6);
        sb.run("junmount", &["--all"]).ok();
        assert!(sb.mounts().is_empty(), "junmount recognises its own mounts");
        let plan = sb.run("jmount", &["-n", "--all"]);
        plan.ok();
        sb.sh_backend(&format!("set -e\n{}", plan.stdout)).ok();
        let via_sh = sb.mounts();
        let targets = |v: &[jlayers_tests::M]| -> Vec<(PathBuf, String)> {
            v.iter()
                .map(|m| (m.target.clone(), m.fstype.clone()))
                .collect()
        };
        assert_eq!(targets(&via_sh), targets(&direct), "plan:\n{}", plan.stdout);
        sb.run("jmount", &["--all"]).ok();
        assert_eq!(sb.mounts().len(), 6, "jmount sees the job done");
        sb.run("junmount", &["--all"]).ok();
        assert!(sb.mounts().is_empty());
        assert!(sb.path(upper).join("j1/ports").is_dir());
    });
}

on_both!(
    kill9_mount_and_unmount_converge,
    dry_run_is_the_run_for_any_path
);

/// Two runs racing for one jail: the loser exits 75 and always names the winner's
/// pid, never "pid unknown" (the file is empty between the winner's flock and its
/// write).
#[cfg(target_os = "linux")]
#[test]
fn lock_always_names_its_holder() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        let mut contended = 0;
        for round in 0..150 {
            let a = sb.spawn("jmount", &["j1"]);
            let b = sb.spawn("jmount", &["j1"]);
            let (pa, pb) = (a.id(), b.id());
            let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
            for (o, other) in [(&oa, pb), (&ob, pa)] {
                let err = String::from_utf8_lossy(&o.stderr);
                match o.status.code() {
                    Some(0) => {}
                    Some(75) => {
                        contended += 1;
                        assert!(
                            err.contains(&format!("(pid {other},")),
                            "round {round}: {err}"
                        );
                    }
                    c => panic!("round {round}: exit {c:?}: {err}"),
                }
            }
            sb.run("junmount", &["j1"]).ok();
        }
        assert!(
            contended > 0,
            "the two runs never met; the test proves nothing"
        );
        eprintln!("{contended} of 150 rounds contended");
    });
}

/// A source on a mount that is itself a bind of a subdirectory (as `/` is in a
/// container or after pivot_root): mountinfo's root field of jmount's bind is the
/// path within the file system, not the source's path, and junmount still knows
/// the mounts for its own.
#[cfg(target_os = "linux")]
#[test]
fn mounts_recognised_whatever_the_root_field() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        sb.sh(
            "mkdir store && mv ports store/ports && mkdir ports && mount --bind store/ports ports",
        )
        .ok();
        sb.run("jmount", &["--all"]).ok();
        assert_eq!(sb.mounts().len(), 7, "the ports bind and 3 mounts a jail");
        sb.run("jmount", &["--all"]).ok();
        assert_eq!(sb.mounts().len(), 7, "nothing mounted twice");
        sb.run("junmount", &["--all"]).ok();
        let left: Vec<_> = sb.mounts().into_iter().map(|m| m.target).collect();
        assert_eq!(left, [sb.path("ports")], "only the foreign bind is left");
    });
}

/// Two jails whose roots are one directory through a host link would stack twice
/// on one target under two locks: refused (78) before anything is mounted.
#[cfg(target_os = "linux")]
#[test]
fn same_root_through_a_link_is_refused() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        std::os::unix::fs::symlink(sb.path("j1"), sb.path("j1-alias")).unwrap();
        sb.conf(&format!(
            "{}[jail.alias]\nroot = \"@T/j1-alias\"\n",
            jlayers_tests::SCENE_CONF
        ));
        sb.run("jmount", &["--all"])
            .code(78)
            .err_has("jail alias: same root as jail j1");
        sb.run("jmount", &["j2"])
            .code(78)
            .err_has("jail alias: same root as jail j1");
        assert!(sb.mounts().is_empty());
    });
}
