//! `pids`, `memory` and `cpu`: on Linux a cgroup of the run's own (the v1
//! hierarchies on a host that has only those, as the test machines do), removed
//! after the run; on FreeBSD rctl(8) rules on the jail, through the simulation.
#![cfg(target_os = "linux")]

use std::fs;
use std::time::{Duration, Instant};

use jlayers_tests::{Backend, Sandbox, sandbox};

/// The standard scene, j1 with these keys and a busybox userland with `extra`
/// applets and a /dev (a shell's background job reads /dev/null).
fn scene(sb: &Sandbox, keys: &str, extra: &[&str]) {
    sb.scene();
    let root = sb.jail_root("j1", &["sh", "env", "sleep", "echo", "cat"]);
    for applet in extra {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::create_dir_all(root.join("dev")).unwrap();
    sb.conf(
        &jlayers_tests::SCENE_CONF
            .replace("root = \"@T/j1\"", &format!("root = \"@T/j1\"\n{keys}")),
    );
}

/// The run's cgroups of `jupdate` in the v1 hierarchies this host has (the
/// test's own cgroup in each: jupdate inherits it).
fn run_cgroups(jupdate: u32) -> Vec<std::path::PathBuf> {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    ["pids", "memory", "cpu"]
        .iter()
        .filter_map(|controller| {
            let path = own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
                names.split(',').any(|n| n == *controller).then_some(path)
            })?;
            Some(
                std::path::Path::new("/sys/fs/cgroup")
                    .join(controller)
                    .join(path.trim_start_matches('/'))
                    .join(format!("jlayers-j1-{jupdate}")),
            )
        })
        .collect()
}

fn log(sb: &Sandbox) -> String {
    fs::read_to_string(sb.path("log/j1.log")).unwrap_or_default()
}

/// A fork bomb stops at `pids`: the run's cgroup never holds more, the log
/// says forks were refused, and the cgroup is gone after the run.
#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    sandbox(Backend::Linux, |sb| {
        scene(sb, "pids = 50", &[]);
        let child = sb.spawn(
            "jupdate",
            &[
                "--timeout",
                "4s",
                "j1",
                "--",
                "sh",
                "-c",
                // The bomb ends itself at its first refused fork (ash exits on
                // it), within milliseconds; the run then lasts 2 s more with no
                // fork, so that its cgroup is seen however loaded the machine.
                "(f(){ f & f; }; f); exec sleep 2",
            ],
        );
        let cgroups = run_cgroups(child.id());
        let pids = cgroups
            .iter()
            .find(|p| p.starts_with("/sys/fs/cgroup/pids"))
            .expect("a v1 pids hierarchy on this host")
            .clone();
        // Watched for as long as the run goes (it ends at its 4 s timeout, however
        // long a loaded machine takes to start it), within a minute.
        let t = Instant::now();
        let mut most = 0u64;
        let mut child = child;
        while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(60) {
            if let Ok(text) = fs::read_to_string(pids.join("pids.current")) {
                most = most.max(text.trim().parse().unwrap_or(0));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            most > 0,
            "the run's cgroup {} was never seen: {stderr}",
            pids.display()
        );
        assert!(most <= 50, "{most} processes in the run's cgroup");
        assert!(
            log(sb).contains("jupdate: j1: the pids limit (50) refused"),
            "{}",
            log(sb)
        );
        for dir in cgroups {
            assert!(!dir.exists(), "{} left after the run", dir.display());
        }
    });
}

/// An allocation over `memory` ends the updater, and jupdate says so.
#[test]
fn an_allocation_over_memory_ends_the_run_as_such() {
    sandbox(Backend::Linux, |sb| {
        scene(sb, "memory = \"32m\"", &["head", "tail"]);
        let o = sb.run(
            "jupdate",
            &["j1", "--", "sh", "-c", "head -c 200m /dev/zero | tail"],
        );
        o.code(69)
            .err_has("out of memory at the jail's memory limit (32m)");
        assert!(o.stdout.starts_with("j1\tfailed\t137\t"), "{}", o.stdout);
        assert!(
            log(sb).contains("the memory limit (32m) was hit"),
            "{}",
            log(sb)
        );
    });
}

/// The cgroups of a run are gone after it, a failed one too; every key lands
/// in its v1 file while the run lives; one a killed jupdate left is removed by
/// the next run of the jail.
#[test]
fn cgroups_hold_the_keys_and_go_with_the_run() {
    sandbox(Backend::Linux, |sb| {
        scene(sb, "pids = 64\nmemory = \"64m\"\ncpu = 1.5", &[]);
        let show = "cat /proc/self/cgroup; sleep 0.5; exit 3";
        let child = sb.spawn("jupdate", &["j1", "--", "sh", "-c", show]);
        let cgroups = run_cgroups(child.id());
        let t = Instant::now();
        while !cgroups.iter().all(|d| d.exists()) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let read = |dir: &std::path::Path, file: &str| {
            fs::read_to_string(dir.join(file)).map(|t| t.trim().to_string())
        };
        let values: Vec<_> = [
            (0, "pids.max"),
            (1, "memory.limit_in_bytes"),
            (2, "cpu.cfs_quota_us"),
            (2, "cpu.cfs_period_us"),
        ]
        .iter()
        .map(|&(i, file)| read(&cgroups[i], file).ok())
        .collect();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(69));
        assert_eq!(
            values,
            [
                Some("64".into()),
                Some((64u64 << 20).to_string()),
                Some("150000".into()),
                Some("100000".into())
            ]
        );
        for dir in &cgroups {
            assert!(!dir.exists(), "{} left after the run", dir.display());
        }
        // What a killed jupdate (a pid past pid_max: gone) leaves: removed by the
        // next run of the jail; another jail's is left alone.
        let stale: Vec<_> = cgroups
            .iter()
            .map(|d| d.with_file_name("jlayers-j1-999999999"))
            .collect();
        let other = cgroups[0].with_file_name("jlayers-j2-999999999");
        for d in stale.iter().chain([&other]) {
            fs::create_dir(d).unwrap();
        }
        let o = sb.run("jupdate", &["j1", "--", "sh", "-c", "exit 0"]);
        let gone = stale.iter().all(|d| !d.exists());
        let _ = fs::remove_dir(&other);
        for d in &stale {
            let _ = fs::remove_dir(d);
        }
        o.ok();
        assert!(gone, "a killed run's cgroup was left");
    });
}

/// With no key, a run still gets podman's pids limit.
#[test]
fn the_default_pids_limit_is_2048() {
    sandbox(Backend::Linux, |sb| {
        scene(sb, "", &[]);
        let child = sb.spawn("jupdate", &["j1", "--", "sh", "-c", "sleep 1"]);
        let pids = run_cgroups(child.id()).remove(0);
        let t = Instant::now();
        let mut max = None;
        while max.is_none() && t.elapsed() < Duration::from_secs(5) {
            max = fs::read_to_string(pids.join("pids.max")).ok();
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(max.as_deref().map(str::trim), Some("2048"));
        assert!(!pids.exists());
    });
}

/// The keys of a FreeBSD jail: on the simulated userland.
fn freebsd_scene(sb: &Sandbox, racct: bool) {
    scene(sb, "pids = 50\nmemory = \"32m\"\ncpu = 1.5", &[]);
    let knob = sb.path("sim-state/sysctl/kern.racct.enable");
    fs::create_dir_all(knob.parent().unwrap()).unwrap();
    fs::write(knob, if racct { "1\n" } else { "0\n" }).unwrap();
}

/// FreeBSD: the keys are rctl(8) rules on the jail for the run, added before the
/// update command and removed after it, exactly these.
#[test]
fn freebsd_limits_are_rctl_rules_for_the_run() {
    sandbox(Backend::FreeBsd, |sb| {
        freebsd_scene(sb, true);
        let o = sb.run("jupdate", &["j1", "--", "sh", "-c", "exit 0"]);
        o.ok();
        let calls = fs::read_to_string(sb.path("sim-state/rctl.log")).unwrap();
        assert_eq!(
            calls,
            "rctl -a jail:j1:maxproc:deny=50\n\
             rctl -a jail:j1:memoryuse:deny=33554432\n\
             rctl -a jail:j1:pcpu:deny=150\n\
             rctl -r jail:j1:maxproc:deny=50\n\
             rctl -r jail:j1:memoryuse:deny=33554432\n\
             rctl -r jail:j1:pcpu:deny=150\n"
        );
        assert_eq!(fs::read_to_string(sb.path("sim-state/rctl")).unwrap(), "");
        // A failed run removes them too.
        sb.run("jupdate", &["j1", "--", "sh", "-c", "exit 3"])
            .code(69)
            .err_has("jupdate: j1: update failed with status 3");
        assert_eq!(fs::read_to_string(sb.path("sim-state/rctl")).unwrap(), "");
        // -n: the rctl commands around the update, nothing run.
        fs::remove_file(sb.path("sim-state/rctl.log")).unwrap();
        let o = sb.run("jupdate", &["-n", "j1", "--", "portmaster", "-a"]);
        o.ok();
        let lines: Vec<&str> = o.stdout.lines().collect();
        let update = lines
            .iter()
            .position(|l| l.starts_with("jexec "))
            .unwrap_or_else(|| panic!("{}", o.stdout));
        assert_eq!(
            lines[update - 3..update],
            [
                "rctl -a jail:j1:maxproc:deny=50",
                "rctl -a jail:j1:memoryuse:deny=33554432",
                "rctl -a jail:j1:pcpu:deny=150",
            ]
        );
        assert_eq!(
            lines[update + 1..update + 4],
            [
                "rctl -r jail:j1:maxproc:deny=50",
                "rctl -r jail:j1:memoryuse:deny=33554432",
                "rctl -r jail:j1:pcpu:deny=150",
            ]
        );
        assert!(!sb.path("sim-state/rctl.log").exists());
    });
}

/// FreeBSD without resource accounting: a jail with limits is refused, saying
/// how to turn it on, and nothing is left mounted or running; without keys no
/// rule is made (no default pids limit there).
#[test]
fn freebsd_limits_need_racct() {
    sandbox(Backend::FreeBsd, |sb| {
        freebsd_scene(sb, false);
        sb.run("jupdate", &["j1", "--", "sh", "-c", "exit 0"])
            .code(78)
            .err_has("kern.racct.enable=1 to /boot/loader.conf and reboot");
        assert!(sb.mounts().is_empty());
        assert!(!sb.jail_running("j1"));
        sb.conf(jlayers_tests::SCENE_CONF);
        sb.run("jupdate", &["j1", "--", "sh", "-c", "exit 0"]).ok();
        assert!(!sb.path("sim-state/rctl.log").exists());
    });
}

/// Linux -n: the limits as a comment before the update line.
#[test]
fn dry_run_prints_the_limits() {
    sandbox(Backend::Linux, |sb| {
        scene(sb, "pids = 50", &[]);
        let o = sb.run("jupdate", &["-n", "j1", "--", "portmaster", "-a"]);
        o.ok();
        assert!(
            o.stdout.contains("# limits: cgroup jlayers-j1-") && o.stdout.contains("pids.max=50"),
            "{}",
            o.stdout
        );
    });
}
