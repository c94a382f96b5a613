//! jupdate's Linux sandbox against a real userland (a Debian bookworm minbase
//! root made by debootstrap) and against an attacker: the updater is a hostile
//! root user, each test tries one way out and checks it is shut.
#![cfg(target_os = "linux")]

use std::fs;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

use jlayers_tests::{Backend, Sandbox, sandbox};

/// One Debian jail `d`, with `network` set when given.
fn debian(sb: &Sandbox, network: Option<&str>) {
    sb.debian_jail("d");
    let net = network.map_or(String::new(), |n| format!("network = \"{n}\"\n"));
    sb.conf(&format!(
        "[defaults]\nupper_root = \"@T/upper\"\nlock_dir = \"@T/run\"\nlog_dir = \"@T/log\"\n\
         [jail.d]\nroot = \"@T/d\"\n{net}"
    ));
}

/// Run `script` with bash as the updater in jail `d`; its output (the log without
/// its header line, which holds the script).
fn run(sb: &Sandbox, script: &str) -> String {
    let o = sb.run("jupdate", &["d", "--", "bash", "-c", script]);
    let log = fs::read_to_string(sb.path("log/d.log")).unwrap();
    // The log keeps every run; this run's output follows its header line
    // (`DATE: jupdate: CMD`), which names the script itself.
    let at = log
        .rfind(": jupdate: bash -c ")
        .unwrap_or_else(|| panic!("no header in the log:\n{log}"));
    let out = log[at..].split_once('\n').map_or("", |(_, rest)| rest);
    let out = out.to_string();
    assert!(
        o.code == 0 && out.contains("script-done"),
        "status {}: {}\nlog:\n{out}",
        o.code,
        o.stderr
    );
    out
}

/// `script` run as the control of a probe: by the host's bash in the test's
/// namespace, as root with every capability, `$T` the jail root (unset in the
/// jail), so that the probe's paths are the jail's own. What it printed, which
/// must end the script.
fn on_host(sb: &Sandbox, script: &str) -> String {
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("T", sb.path("d"))
        .current_dir(&sb.dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("script-done"), "{out}");
    out
}

/// Whether `out` has `line` as a whole line.
fn has_line(out: &str, line: &str) -> bool {
    out.lines().any(|l| l == line)
}

/// The host's procfs, mounted twice in the jail's /proc as a chroot recipe that
/// runs more than once leaves it: the sandbox must show its own procfs anyway.
fn host_proc_in_jail(sb: &Sandbox) {
    for _ in 0..2 {
        let st = std::process::Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(sb.path("d/proc"))
            .status()
            .unwrap();
        assert!(st.success(), "mount the host's proc in the jail");
    }
}

/// What build scripts of a real userland do: process substitution and
/// /dev/std* (links into /proc/self/fd), device nodes, a pseudo-terminal, /proc.
#[test]
fn real_userland_runs() {
    sandbox(Backend::Linux, |sb| {
        debian(sb, None);
        // `>/dev/stderr` reopens the run's output through /proc/self/fd,
        // truncating it (as it would outside any sandbox): first, so that the
        // rest stays. The log's earlier runs stay whatever it does.
        let out = run(
            sb,
            "echo to-stderr >/dev/stderr; cat <(echo from-substitution); \
             echo to-stdout >>/dev/stdout; \
             test -c /dev/null && test -c /dev/zero && test -c /dev/urandom && echo nodes-ok; \
             head -c 4 /dev/zero | wc -c; ls /dev/pts; \
             script -qc tty /dev/null; \
             echo procs: $(ls /proc | grep -c '^[0-9]') self: $(readlink /proc/self); \
             test -L /dev/fd && test -d /dev/shm && echo dev-ok; \
             ls /sys | wc -l; touch /sys/x 2>/dev/null || echo sys-ro; \
             getent hosts localhost >/dev/null && echo resolv-ok; \
             echo script-done",
        );
        for want in [
            "to-stderr",
            "from-substitution",
            "to-stdout",
            "nodes-ok",
            "\n4\n",
            "ptmx",
            "/dev/pts/0",
            "dev-ok",
            "sys-ro",
        ] {
            assert!(out.contains(want), "{want:?} missing:\n{out}");
        }
        assert!(!out.contains('\0'), "NUL bytes in the log:\n{out:?}");
        // pid 1 (the sandbox's init), bash, and what bash runs: a handful, never
        // the host's hundreds.
        let n: usize = out
            .split("procs: ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!((2..10).contains(&n), "{n} processes in /proc:\n{out}");
        // The jail root's own /dev (debootstrap's nodes) was not written.
        assert!(!sb.path("d.up/dev").exists(), "the jail's /dev was written");
    });
}

/// A node the updater makes, or one planted in the jail's tree, never opens a
/// device: CAP_MKNOD is gone and the tree is nodev in the sandbox.
#[test]
fn device_nodes_never_open() {
    sandbox(Backend::Linux, |sb| {
        debian(sb, None);
        // Planted by whoever controls the jail's files (c 1 3: the null device).
        let planted = sb.path("d/tmp/planted");
        let st = std::process::Command::new("mknod")
            .arg(&planted)
            .args(["c", "1", "3"])
            .status()
            .unwrap();
        assert!(st.success(), "mknod {}", planted.display());
        let probe = "mknod $T/tmp/made c 1 3 && echo MKNOD-OK; \
             test -c $T/tmp/made && echo x > $T/tmp/made && echo MADE-OPENED; \
             echo x > $T/tmp/planted && echo PLANTED-OPENED; \
             rm -f $T/tmp/made; echo script-done";
        let out = run(sb, probe);
        // The control: the host's root makes and opens both.
        let host = on_host(sb, probe);
        for bad in ["MKNOD-OK", "MADE-OPENED", "PLANTED-OPENED"] {
            assert!(!out.contains(bad), "{bad}:\n{out}");
            assert!(has_line(&host, bad), "{bad} not seen on the host:\n{host}");
        }
    });
}

/// /proc is the sandbox's own procfs even when the host's is mounted in the
/// jail: no host process shows, the kernel's knobs are read-only and the
/// masked files are empty.
#[test]
fn proc_is_the_sandboxes_own() {
    sandbox(Backend::Linux, |sb| {
        debian(sb, None);
        host_proc_in_jail(sb);
        let me = std::process::id();
        let probe = format!(
            "test -d /proc/{me} && echo HOST-PID-SEEN; \
             test -d /proc/self/fd && echo own-proc; \
             ls /proc | grep -c '^[0-9]' | sed 's/^/procs: /'; \
             echo script-done"
        );
        let out = run(sb, &probe);
        assert!(!out.contains("HOST-PID-SEEN"), "{out}");
        assert!(out.contains("own-proc"), "{out}");
        // The control: the host's /proc shows the test.
        let host = on_host(sb, &probe);
        assert!(has_line(&host, "HOST-PID-SEEN"), "{host}");
    });
}

#[test]
fn kernel_knobs_read_only_and_masked() {
    sandbox(Backend::Linux, |sb| {
        debian(sb, None);
        host_proc_in_jail(sb);
        // Writes the value it read (a no-op if it ever got through); 'h' to the
        // sysrq trigger only prints its help to the kernel log.
        let out = run(
            sb,
            "v=$(cat /proc/sys/vm/swappiness) && echo \"$v\" > /proc/sys/vm/swappiness \
               && echo SYSCTL-WRITTEN; \
             test -e /proc/sysrq-trigger && { echo h > /proc/sysrq-trigger && echo SYSRQ-WRITTEN; }; \
             n=$(head -c 16 /proc/kcore 2>/dev/null | wc -c); test \"$n\" -gt 0 && echo KCORE-READ; \
             n=$(cat /proc/timer_list /proc/keys /proc/sched_debug 2>/dev/null | wc -c); \
             test \"$n\" -gt 0 && echo MASKED-READ; \
             touch /proc/sys/kernel/x 2>/dev/null && echo SYS-WRITABLE; \
             test -r /proc/sys/vm/swappiness && echo sys-readable; \
             echo script-done",
        );
        for bad in [
            "SYSCTL-WRITTEN",
            "SYSRQ-WRITTEN",
            "KCORE-READ",
            "MASKED-READ",
            "SYS-WRITABLE",
        ] {
            assert!(!out.contains(bad), "{bad}:\n{out}");
        }
        assert!(out.contains("sys-readable"), "{out}");
    });
}

/// A listener of the test's own on the host's loopback (an ephemeral port) and
/// on an abstract unix socket (the containerd-shim escape's way in), and the
/// script that tries both.
fn host_listeners() -> (std::net::TcpListener, UnixListener, String) {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let name = format!(
        "jlayers-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let unix = UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    let script = format!(
        "(exec 3<>/dev/tcp/127.0.0.1/{port}) && echo TCP-REACHED; \
         perl -MSocket -e 'socket(S, AF_UNIX, SOCK_STREAM, 0) or die; \
           connect(S, pack_sockaddr_un(\"\\0{name}\")) or die \"unix: $!\\n\"; \
           print \"UNIX-REACHED\\n\"'; \
         (exec 3<>/dev/tcp/127.0.0.1/1) 2>&1 | grep -o 'Connection refused' | head -1; \
         echo script-done"
    );
    (tcp, unix, script)
}

/// `network = "none"` (the default): the updater has loopback (up) and nothing
/// of the host's.
#[test]
fn network_none_reaches_no_host_socket() {
    sandbox(Backend::Linux, |sb| {
        debian(sb, None);
        let (_tcp, _unix, script) = host_listeners();
        let out = run(sb, &script);
        assert!(!out.contains("TCP-REACHED"), "{out}");
        assert!(!out.contains("UNIX-REACHED"), "{out}");
        // Its own loopback is up: a closed port refuses, it is not unreachable.
        assert!(out.contains("Connection refused"), "{out}");
        fs::write(
            sb.path("jlayers.conf"),
            fs::read_to_string(sb.path("jlayers.conf")).unwrap() + "network = \"none\"\n",
        )
        .unwrap();
        let out = run(sb, &script);
        assert!(
            !out.contains("TCP-REACHED") && !out.contains("UNIX-REACHED"),
            "{out}"
        );
    });
}

/// `network = "host"` shares the host's namespace, as jupdate(8) warns.
#[test]
fn network_host_is_the_hosts() {
    sandbox(Backend::Linux, |sb| {
        debian(sb, Some("host"));
        let (_tcp, _unix, script) = host_listeners();
        let out = run(sb, &script);
        assert!(out.contains("TCP-REACHED"), "{out}");
        assert!(out.contains("UNIX-REACHED"), "{out}");
    });
}

/// No mount, no new mount namespace, and no user namespace (in which both would
/// be allowed again).
#[test]
fn no_mount_no_namespaces() {
    sandbox(Backend::Linux, |sb| {
        debian(sb, None);
        let probe = "mount -t tmpfs t $T/mnt && echo MOUNTED; \
             mount -t proc p $T/mnt && echo MOUNTED-PROC; \
             unshare -m true && echo UNSHARED-M; \
             unshare -Urm sh -c \"mount -t tmpfs t $T/mnt && echo MOUNTED-IN-USERNS\"; \
             unshare -U true && echo UNSHARED-U; \
             echo script-done";
        let out = run(sb, probe);
        // The control: the host's root does each (in the test's mount namespace).
        let host = on_host(sb, probe);
        for bad in [
            "MOUNTED",
            "MOUNTED-PROC",
            "UNSHARED-M",
            "MOUNTED-IN-USERNS",
            "UNSHARED-U",
        ] {
            assert!(!out.contains(bad), "{bad}:\n{out}");
            assert!(has_line(&host, bad), "{bad} not seen on the host:\n{host}");
        }
    });
}

/// `jupdate -n` prints the sandbox's namespaces (the network one unless the jail
/// has the host's), its capability bounding set, CAP_MKNOD not in it, and the new
/// session keyring.
#[test]
fn dry_run_prints_the_isolation() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        fs::write(
            sb.path("jlayers.conf"),
            fs::read_to_string(sb.path("jlayers.conf")).unwrap() + "network = \"host\"\n",
        )
        .unwrap();
        let line = |jail: &str| {
            let o = sb.run("jupdate", &["-n", jail]);
            o.ok();
            o.stdout
                .lines()
                .find(|l| l.starts_with("unshare "))
                .unwrap_or_else(|| panic!("no unshare line:\n{}", o.stdout))
                .to_string()
        };
        let j1 = line("j1");
        assert!(
            j1.starts_with("unshare --mount --pid --ipc --uts --net --fork "),
            "{j1}"
        );
        assert!(j1.contains("setpriv --no-new-privs --inh-caps=-all --bounding-set=-all,+chown,"));
        assert!(!j1.contains("mknod"), "{j1}");
        assert!(j1.contains(" keyctl session - chroot "), "{j1}");
        let j2 = line("j2");
        assert!(
            j2.starts_with("unshare --mount --pid --ipc --uts --fork "),
            "{j2}"
        );
    });
}

/// A chroot recipe's mounts in the jail root (the host's /dev bound in, its /sys
/// bound twice) are hidden: the updater sees its own /dev and an empty /sys.
#[test]
fn host_dev_and_sys_in_jail_are_hidden() {
    sandbox(Backend::Linux, |sb| {
        debian(sb, None);
        assert!(
            std::path::Path::new("/dev/kmsg").exists(),
            "the test needs the host's /dev/kmsg"
        );
        let mount = |args: &[&str], at: &str| {
            let st = std::process::Command::new("mount")
                .args(args)
                .arg(sb.path(at))
                .status()
                .unwrap();
            assert!(st.success(), "mount {args:?} {at}");
        };
        mount(&["--rbind", "/dev"], "d/dev");
        mount(&["--bind", "/sys"], "d/sys");
        mount(&["--bind", "/sys"], "d/sys");
        let probe = "test -e $T/dev/kmsg && echo HOST-DEV-SEEN; \
             test -e $T/sys/kernel && echo HOST-SYS-SEEN; \
             test -c $T/dev/null && echo own-dev; \
             echo script-done";
        let out = run(sb, probe);
        assert!(!out.contains("HOST-DEV-SEEN"), "{out}");
        assert!(!out.contains("HOST-SYS-SEEN"), "{out}");
        assert!(out.contains("own-dev"), "{out}");
        // The control: the jail root's mounts show the host's /dev and /sys.
        let host = on_host(sb, probe);
        for seen in ["HOST-DEV-SEEN", "HOST-SYS-SEEN"] {
            assert!(
                has_line(&host, seen),
                "{seen} not seen on the host:\n{host}"
            );
        }
    });
}

/// The pids of the processes below `pid` (children first), read from the host's
/// /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            Some((p, ppid.parse().ok()?))
        })
        .collect();
    let mut found = vec![pid];
    let mut at = 0;
    while at < found.len() {
        let parent = found[at];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        at += 1;
    }
    found.remove(0);
    found
}

/// A descriptor of a host directory that jupdate's caller left open (as `flock DIR
/// jupdate -a` from cron leaves it) reaches no updater, with one jail or two at a
/// time: through `/proc/self/fd/9/../..` it would be the host's tree, written as
/// root. Each updater starts with 0, 1 and 2 only (none of the other run's
/// descriptors either), and jupdate's own processes in the sandbox (the unsharer,
/// pid 1) hold no directory.
#[test]
fn no_descriptor_crosses() {
    sandbox(Backend::Linux, |sb| {
        sb.debian_jail("d");
        sb.debian_jail("e");
        sb.conf(
            "[defaults]\nupper_root = \"@T/upper\"\nlock_dir = \"@T/run\"\nlog_dir = \"@T/log\"\n\
             [jail.d]\nroot = \"@T/d\"\n[jail.e]\nroot = \"@T/e\"\n",
        );
        fs::create_dir_all(sb.path("host/a/b")).unwrap();
        let script = "echo fds: $(ls /proc/self/fd); \
            echo pwned > /proc/self/fd/9/../../escaped 2>/dev/null && echo wrote-the-host; \
            ls /proc/self/fd/9/../.. >/dev/null 2>&1 && echo reached-the-host; \
            echo ready; i=0; while [ ! -e /tmp/go ]; do sleep 0.05; i=$((i+1)); \
            [ $i -gt 400 ] && exit 9; done; echo script-done";
        for (jails, args) in [
            (&["d"][..], &["d"][..]),
            (&["d", "e"], &["-j", "2", "--all"]),
        ] {
            for jail in jails {
                let _ = fs::remove_file(sb.path(&format!("{jail}/tmp/go")));
                let _ = fs::remove_file(sb.path(&format!("log/{jail}.log")));
            }
            let held = fs::File::open(sb.path("host/a/b")).unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&held);
            let mut c = sb.tool("jupdate", args);
            c.args(["--", "bash", "-c", script])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            // SAFETY: dup2 only, in the forked child (the copy is not close-on-exec).
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut c, move || {
                    if libc::dup2(fd, 9) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = c.spawn().unwrap();
            drop(held);
            let log = |jail: &str| {
                fs::read_to_string(sb.path(&format!("log/{jail}.log"))).unwrap_or_default()
            };
            let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !jails.iter().all(|j| log(j).contains("\nready\n")) {
                assert!(
                    std::time::Instant::now() < end,
                    "{:?}",
                    jails.iter().map(|j| log(j)).collect::<Vec<_>>()
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            // Every process of jupdate's below it, the updaters' shells too: none
            // holds a directory of the host's.
            for pid in descendants(child.id()) {
                let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
                    continue;
                };
                let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                for fd in fds {
                    let fd = fd.unwrap().path();
                    let target = fs::read_link(&fd).unwrap_or_default();
                    assert!(
                        !fs::metadata(&fd).is_ok_and(|m| m.is_dir()),
                        "{} ({}) holds {} -> {}",
                        pid,
                        exe.display(),
                        fd.display(),
                        target.display()
                    );
                }
            }
            for jail in jails {
                fs::write(sb.path(&format!("{jail}/tmp/go")), "").unwrap();
            }
            let o = child.wait_with_output().unwrap();
            for jail in jails {
                let log = log(jail);
                assert!(o.status.success() && log.contains("script-done"), "{log}");
                assert!(log.contains("\nfds: 0 1 2 3\n"), "{log}");
                for bad in ["wrote-the-host", "reached-the-host"] {
                    assert!(!log.lines().any(|l| l == bad), "{log}");
                }
            }
            assert!(!sb.path("host/escaped").exists());
        }
    });
}

/// A system call the probe makes: its name, number and perl arguments (`$b` is a
/// zeroed buffer), with arguments that make it fail or touch nothing outside the
/// sandbox if it were let through.
type Probe = (&'static str, libc::c_long, &'static str);

/// Docker's default profile's refusals, each made from inside the updater.
const REFUSED: &[Probe] = &[
    ("keyctl", libc::SYS_keyctl, "0, -3, 0"),
    (
        "add_key",
        libc::SYS_add_key,
        "'user', 'planted', 'x', 1, -3",
    ),
    (
        "request_key",
        libc::SYS_request_key,
        "'user', 'jlayers-none', 0, 0",
    ),
    ("bpf", libc::SYS_bpf, "0, $b, 72"),
    (
        "perf_event_open",
        libc::SYS_perf_event_open,
        "$b, 0, -1, -1, 0",
    ),
    ("userfaultfd", libc::SYS_userfaultfd, "1"),
    ("io_uring_setup", libc::SYS_io_uring_setup, "1, $b"),
    (
        "io_uring_enter",
        libc::SYS_io_uring_enter,
        "-1, 0, 0, 0, 0, 0",
    ),
    (
        "io_uring_register",
        libc::SYS_io_uring_register,
        "-1, 0, 0, 0",
    ),
    ("kexec_load", libc::SYS_kexec_load, "0, 0, 0, 0x10000"),
    (
        "kexec_file_load",
        libc::SYS_kexec_file_load,
        "-1, -1, 0, 0, 0",
    ),
    ("init_module", libc::SYS_init_module, "0, 0, ''"),
    ("finit_module", libc::SYS_finit_module, "-1, '', 0"),
    (
        "delete_module",
        libc::SYS_delete_module,
        "'jlayers-none', 0",
    ),
    ("clock_settime", libc::SYS_clock_settime, "-1, $b"),
    ("clock_adjtime", libc::SYS_clock_adjtime, "-1, $b"),
    ("settimeofday", libc::SYS_settimeofday, "0, 0"),
    // modes 0: a query anyone may make where nothing refuses it.
    ("adjtimex", libc::SYS_adjtimex, "$b"),
    ("acct", libc::SYS_acct, "'/nonexistent'"),
    ("swapon", libc::SYS_swapon, "'/nonexistent', 0"),
    ("swapoff", libc::SYS_swapoff, "'/nonexistent'"),
    ("reboot", libc::SYS_reboot, "0, 0, 0, 0"),
    ("mount", libc::SYS_mount, "'none', '/mnt', 'tmpfs', 0, 0"),
    ("umount2", libc::SYS_umount2, "'/nonexistent', 0"),
    ("fsopen", libc::SYS_fsopen, "'tmpfs', 0"),
    ("fsconfig", libc::SYS_fsconfig, "-1, 0, 0, 0, 0"),
    ("fsmount", libc::SYS_fsmount, "-1, 0, 0"),
    ("fspick", libc::SYS_fspick, "-100, '/', 0"),
    ("open_tree", libc::SYS_open_tree, "-100, '/', 1"),
    ("move_mount", libc::SYS_move_mount, "-1, '', -1, '', 0"),
    (
        "mount_setattr",
        libc::SYS_mount_setattr,
        "-100, '/nonexistent', 0, $b, 32",
    ),
    (
        "pivot_root",
        libc::SYS_pivot_root,
        "'/nonexistent', '/nonexistent'",
    ),
    ("setns", libc::SYS_setns, "-1, 0"),
    ("unshare-user", libc::SYS_unshare, "0x10000000"),
    ("unshare-mount", libc::SYS_unshare, "0x20000"),
    // CLONE_FS beside CLONE_NEWUSER: the kernel refuses it, no child.
    ("clone-user", libc::SYS_clone, "0x10000200, 0, 0, 0, 0"),
    (
        "personality-read-implies-exec",
        libc::SYS_personality,
        "0x0400000",
    ),
    (
        "personality-addr-no-randomize",
        libc::SYS_personality,
        "0x0040000",
    ),
];

/// What the filter lets through.
const ALLOWED: &[Probe] = &[
    ("getpid", libc::SYS_getpid, ""),
    ("personality-query", libc::SYS_personality, "0xffffffff"),
    ("personality-linux32", libc::SYS_personality, "8"),
    ("personality-linux", libc::SYS_personality, "0"),
    ("unshare-files", libc::SYS_unshare, "0x400"),
];

/// Give the calling test thread (and what it starts) a new session keyring of its
/// own: a key added there touches no keyring of the host's.
fn own_session_keyring() {
    // SAFETY: KEYCTL_JOIN_SESSION_KEYRING with a null name: an anonymous keyring.
    let id = unsafe { libc::syscall(libc::SYS_keyctl, 1, std::ptr::null::<libc::c_char>()) };
    assert!(id > 0, "keyctl join: {}", std::io::Error::last_os_error());
}

/// A perl script making each probe's call, printing `name=ok` or `name=ERRNO`.
fn probe_script(probes: &[Probe]) -> String {
    let mut script = String::from(
        "my $b = \"\\0\" x 256;\n\
         sub t { my ($n, $r) = @_; print \"$n=\", ($r == -1 ? $! + 0 : 'ok'), \"\\n\" }\n",
    );
    for (name, nr, args) in probes {
        // perl passes a string as a pointer and wants it writable: a variable.
        let args: String = args
            .split(", ")
            .filter(|arg| !arg.is_empty())
            .map(|arg| {
                if arg.starts_with('\'') {
                    format!(", (my $s = {arg})")
                } else {
                    format!(", {arg}")
                }
            })
            .collect();
        script += &format!("t('{name}', syscall({nr}{args}));\n");
    }
    script
}

/// Each call Docker's default seccomp profile refuses fails with EPERM inside the
/// updater (clone3 with ENOSYS, for libc to fall back to clone), made by perl's
/// syscall() in a real userland; getpid, the allowed personalities, a plain
/// unshare and a fork still work.
#[test]
fn seccomp_refuses_dockers_denials() {
    sandbox(Backend::Linux, |sb| {
        debian(sb, None);
        // Where add_key would plant its key if it got through.
        own_session_keyring();
        let mut probes = REFUSED.to_vec();
        probes.push(("clone3", libc::SYS_clone3, "$b, 88"));
        probes.extend(ALLOWED);
        fs::write(sb.path("d/probe.pl"), probe_script(&probes)).unwrap();
        let out = run(
            sb,
            "perl /probe.pl; \
             perl -e 'my $p = fork; exit 0 unless $p; waitpid($p, 0); print \"fork=\", ($? ? $? : \"ok\"), \"\\n\"'; \
             echo script-done",
        );
        let eperm = libc::EPERM.to_string();
        let enosys = libc::ENOSYS.to_string();
        let wants = REFUSED
            .iter()
            .map(|&(name, ..)| (name, eperm.as_str()))
            .chain([("clone3", enosys.as_str()), ("fork", "ok")])
            .chain(ALLOWED.iter().map(|&(name, ..)| (name, "ok")));
        let wrong: Vec<String> = wants
            .filter(|(name, want)| !out.lines().any(|l| l == format!("{name}={want}")))
            .map(|(name, want)| format!("{name} (want {want})"))
            .collect();
        assert!(wrong.is_empty(), "wrong: {wrong:?}\n{out}");
    });
}

/// A key in the caller's session keyring (cron's, an admin's login) is out of
/// the updater's reach: keyctl is refused and the updater's session keyring is
/// a new one. The test joins a session keyring of its own first (its thread
/// alone, inherited by jupdate): no host keyring is touched.
#[test]
fn host_keys_out_of_reach() {
    const SESSION: libc::c_long = -3; // KEY_SPEC_SESSION_KEYRING
    sandbox(Backend::Linux, |sb| {
        debian(sb, None);
        own_session_keyring();
        // SAFETY: valid C strings and a payload with its length.
        let key = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"jlayers-host-key".as_ptr(),
                c"HOST-SECRET".as_ptr(),
                11usize,
                SESSION,
            )
        };
        assert!(key > 0, "add_key: {}", std::io::Error::last_os_error());
        let read = format!(
            "my $b = \"\\0\" x 64; my $n = syscall({nr}, 11, {key}, $b, 64); \
             print $n < 0 ? \"read=$!\\n\" : \"read=$b\\n\"; \
             my ($type, $name) = ('user', 'jlayers-host-key'); \
             $n = syscall({nr}, 10, -3, $type, $name, 0); \
             print \"search=\", ($n < 0 ? $! + 0 : $n), \"\\n\";",
            nr = libc::SYS_keyctl,
        );
        fs::write(sb.path("d/keys.pl"), read).unwrap();
        let probe = "perl $T/keys.pl; echo script-done";
        let out = run(sb, probe);
        assert!(!out.contains("HOST-SECRET"), "{out}");
        assert!(!out.contains(&format!("search={key}")), "{out}");
        assert!(out.contains(&format!("search={}", libc::EPERM)), "{out}");
        // The control: the same script in the test's session reads and finds it.
        let host = on_host(sb, probe);
        assert!(host.contains("read=HOST-SECRET"), "{host:?}");
        assert!(has_line(&host, &format!("search={key}")), "{host}");
    });
}
