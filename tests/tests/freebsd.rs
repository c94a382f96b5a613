//! The FreeBSD backend: golden tests of the exact commands it runs, and what only
//! FreeBSD has (running jails, ZFS uppers), through the simulated userland.
// The simulated FreeBSD userland is Linux (bind mounts, overlayfs).
#![cfg(target_os = "linux")]

use std::fs;
use std::path::Path;

use jlayers_tests::{Backend, Sandbox, sandbox};

const ROOT: &str = "/usr/local/var/jails/192.168.0.100";

/// Make the recipe's real paths exist in this test's namespace only: an overlay on
/// /usr whose upper dir is in the temp dir.
fn recipe_paths(sb: &Sandbox) {
    for d in ["usr-up", "usr-work"] {
        fs::create_dir_all(sb.path(d)).unwrap();
    }
    let opts = format!(
        "lowerdir=/usr,upperdir={},workdir={}",
        sb.path("usr-up").display(),
        sb.path("usr-work").display()
    );
    nix::mount::mount(
        Some("overlay"),
        "/usr",
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .expect("overlay on /usr in the test's namespace");
    for d in [
        "/usr/ports/editors/vim",
        "/usr/ports/distfiles",
        "/usr/local/var/jails",
    ] {
        fs::create_dir_all(d).unwrap();
    }
    // Upper dirs cannot live on overlayfs: the jails get a tmpfs, as on a real host
    // they would get UFS.
    nix::mount::mount(
        Some("tmpfs"),
        "/usr/local/var/jails",
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    fs::create_dir_all(format!("{ROOT}/usr/ports/distfiles")).unwrap();
    fs::create_dir_all(format!("{ROOT}/usr/tmp/foo")).unwrap();
    fs::create_dir_all(sb.path("sim-state/jails")).unwrap();
    fs::write(sb.path("sim-state/jails/server"), ROOT).unwrap();
}

fn recipe_conf(sb: &Sandbox, layers: &str) {
    sb.conf(&format!(
        "[defaults]\nlock_dir = \"@T/run\"\n{layers}\n[jail.server]\nroot = \"{ROOT}\"\nupper.ports = \"usr/tmp/foo\"\n"
    ));
}

const PORTS: &str = "[[layer]]\nname = \"ports\"\nsource = \"/usr/ports\"\n";
const DISTFILES: &str =
    "[[layer]]\nname = \"distfiles\"\nsource = \"/usr/ports/distfiles\"\nmode = \"shared\"\n";

#[test]
fn golden_recipe_union() {
    sandbox(Backend::FreeBsd, |sb| {
        recipe_paths(sb);
        recipe_conf(sb, PORTS);
        let o = sb.run("jmount", &["-n", "server"]);
        o.ok();
        assert_eq!(
            o.stdout,
            format!(
                "mount_nullfs /usr/ports {ROOT}/usr/ports\nmount_unionfs -o noatime {ROOT}/usr/tmp/foo {ROOT}/usr/ports\n"
            )
        );
        sb.run("jmount", &["server"]).ok();
        let table = sb.sh_backend("mount -p").stdout;
        assert!(
            table.contains(&format!(
                "/usr/ports\t\t{ROOT}/usr/ports nullfs\trw\t\t0 0\n"
            )),
            "{table}"
        );
        assert!(
            table.contains(&format!(
                "{ROOT}/usr/tmp/foo {ROOT}/usr/ports unionfs\trw,noatime \t0 0\n"
            )),
            "{table}"
        );
        let o = sb.run("junmount", &["-n", "server"]);
        o.ok();
        assert_eq!(
            o.stdout,
            format!("umount {ROOT}/usr/ports\numount {ROOT}/usr/ports\n")
        );
        sb.run("junmount", &["server"]).ok();
        assert!(!sb.sh_backend("mount -p").stdout.contains(ROOT));
    });
}

#[test]
fn golden_readonly_shared_nested() {
    sandbox(Backend::FreeBsd, |sb| {
        recipe_paths(sb);
        sb.conf(&format!(
            "[defaults]\nlock_dir = \"@T/run\"\n[[layer]]\nname = \"ports\"\nsource = \"/usr/ports\"\nmode = \"readonly\"\n[jail.server]\nroot = \"{ROOT}\"\n"
        ));
        let o = sb.run("jmount", &["-n", "server"]);
        assert_eq!(
            o.stdout,
            format!("mount_nullfs -o ro /usr/ports {ROOT}/usr/ports\n")
        );
        sb.conf(&format!(
            "[defaults]\nlock_dir = \"@T/run\"\n[[layer]]\nname = \"ports\"\nsource = \"/usr/ports\"\nmode = \"shared\"\n[jail.server]\nroot = \"{ROOT}\"\n"
        ));
        let o = sb.run("jmount", &["-n", "server"]);
        assert_eq!(
            o.stdout,
            format!("mount_nullfs /usr/ports {ROOT}/usr/ports\n")
        );

        recipe_conf(sb, &format!("{PORTS}{DISTFILES}"));
        let o = sb.run("jmount", &["-n", "server"]);
        assert_eq!(
            o.stdout,
            format!(
                "mount_nullfs /usr/ports {ROOT}/usr/ports\n\
                 mount_unionfs -o noatime {ROOT}/usr/tmp/foo {ROOT}/usr/ports\n\
                 mount_nullfs /usr/ports/distfiles {ROOT}/usr/ports/distfiles\n"
            )
        );
        sb.run("jmount", &["server"]).ok();
        let o = sb.run("junmount", &["-n", "server"]);
        assert_eq!(
            o.stdout,
            format!(
                "umount {ROOT}/usr/ports/distfiles\numount {ROOT}/usr/ports\numount {ROOT}/usr/ports\n"
            )
        );
        sb.run("junmount", &["server"]).ok();
    });
}

#[test]
fn running_jail_refused_unless_forced() {
    sandbox(Backend::FreeBsd, |sb| {
        recipe_paths(sb);
        recipe_conf(sb, PORTS);
        sb.run("jmount", &["server"]).ok();
        sb.sh_backend("service jail onestart server").ok();
        sb.run("junmount", &["server"])
            .code(75)
            .err_has("junmount: server: jail is running (jls -j server shows it)");
        sb.run("junmount", &["-n", "server"])
            .code(75)
            .err_has("junmount: server: jail is running (jls -j server shows it)");
        let o = sb.run("junmount", &["-n", "-f", "server"]);
        o.ok();
        assert_eq!(
            o.stdout,
            format!("umount -f {ROOT}/usr/ports\numount -f {ROOT}/usr/ports\n")
        );
        sb.run("junmount", &["-f", "server"]).ok();
        assert!(!sb.sh_backend("mount -p").stdout.contains(ROOT));
    });
}

#[test]
fn zfs_upper_warns_once_per_layer() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        // The upper dirs' file system shows as ZFS in the simulated mount -p.
        fs::create_dir_all(sb.path("upper")).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &sb.path("upper"),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        fs::create_dir_all(sb.path("sim-state")).unwrap();
        fs::write(
            sb.path("sim-state/zfs"),
            format!("{}\n", sb.path("upper").display()),
        )
        .unwrap();
        let o = sb.run("jmount", &["--all"]);
        o.ok();
        let warnings: Vec<_> = o
            .stderr
            .lines()
            .filter(|l| l.contains("is on ZFS"))
            .collect();
        assert_eq!(warnings.len(), 2, "{}", o.stderr);
        assert!(
            warnings[0].starts_with("jmount: j1: ports: upper dir "),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("put the upper dir on UFS, or set upper_fs = \"tmpfs\""));
        sb.run("junmount", &["--all"]).ok();
        let o = sb.run("jmount", &["-q", "--all"]);
        o.ok();
        assert_eq!(o.stderr, "");
        sb.run("junmount", &["--all"]).ok();
    });
}

#[test]
fn tool_errors_carry_the_tools_own_line() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        // A mount_unionfs option value unionfs rejects (nmount(2) fails, EX_OSERR):
        // its stderr line is the message, and the null mount made before it is
        // rolled back.
        sb.conf(&jlayers_tests::SCENE_CONF.replace(
            "target = \"usr/ports\"",
            "target = \"usr/ports\"\nunion_options = [\"copymode=bogus\"]",
        ));
        sb.run("jmount", &["j1"]).code(69).err_has(&format!(
            "jmount: j1: ports: mount_unionfs: {}: Invalid copymode: Invalid argument",
            sb.path("j1/usr/ports").display()
        ));
        assert!(sb.mounts().is_empty());
        // The line is the one the simulation's README promises for this case
        // (nmount(2)'s wording), so the README and the simulation cannot drift apart
        // unnoticed.
        let readme = std::fs::read_to_string(jlayers_tests::sim_dir().join("README.md")).unwrap();
        assert!(
            readme.contains("`mount_unionfs: MP: Invalid copymode: Invalid argument`"),
            "tests/freebsd-sim/README.md no longer documents the line asserted above"
        );
    });
}

#[test]
fn interrupted_jmount_rolls_back_and_exits_130() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        let child = sb
            .tool("jmount", &["j1", "j2"])
            .env("SIM_MOUNT_DELAY", "1")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Once the null mount is made, the union mount is under way.
        let out = jlayers_tests::interrupt_when(child, || !sb.mounts().is_empty());
        jlayers_tests::assert_exit(&out, 130);
        assert!(String::from_utf8_lossy(&out.stderr).contains("jmount: j1: "));
        assert!(sb.mounts().is_empty(), "rolled back: {:?}", sb.mounts());
    });
}

/// mount_unionfs passes each -o argument to nmount(2) whole and unionfs ignores
/// names it does not know: one -o per option, or "copymode=masquerade,noatime" is
/// an invalid copymode and "noatime,below" an ignored option (mounted above, with
/// atime).
#[test]
fn union_options_one_o_each() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        let union_conf = |opts: &str| {
            sb.conf(&jlayers_tests::SCENE_CONF.replace(
                "target = \"usr/ports\"",
                &format!("target = \"usr/ports\"\nunion_options = [{opts}]"),
            ));
        };
        union_conf("\"copymode=masquerade\", \"noatime\"");
        let o = sb.run("jmount", &["-n", "j1"]);
        o.ok();
        let t = sb.path("j1/usr/ports");
        let u = sb.path("upper/j1/ports");
        assert!(
            o.stdout.contains(&format!(
                "mount_unionfs -o copymode=masquerade -o noatime {} {}\n",
                u.display(),
                t.display()
            )),
            "{}",
            o.stdout
        );
        sb.run("jmount", &["j1"]).ok();
        let table = sb.sh_backend("mount -p").stdout;
        let union = table
            .lines()
            .find(|l| l.contains(" unionfs\t") || l.contains("\tunionfs\t"))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(union.contains("rw,noatime"), "{union}");
        sb.run("junmount", &["j1"]).ok();

        union_conf("\"noatime\", \"whiteout=whenneeded\"");
        let o = sb.run("jmount", &["-n", "j1"]);
        assert!(
            o.stdout.contains(&format!(
                "mount_unionfs -o noatime -o whiteout=whenneeded {} {}\n",
                u.display(),
                t.display()
            )),
            "{}",
            o.stdout
        );
        sb.run("jmount", &["j1"]).ok();
        assert!(
            sb.sh_backend("mount -p").stdout.contains("rw,noatime"),
            "noatime given to nmount(2)"
        );
        sb.run("junmount", &["j1"]).ok();
        assert!(sb.mounts().is_empty());
    });
}

/// `-o below` swaps unionfs's layers (unionfs_domount): the null mount of the
/// source becomes the writable layer, so the jail writes into the host's tree.
/// The simulation does that; jlayers refuses the option (78) before any mount,
/// and an option name unionfs would ignore without a word as well.
#[test]
fn union_below_and_unknown_options_refused() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        // The simulation's unionfs with -o below writes into what is mounted below.
        for d in ["mp", "up", "sim-state"] {
            fs::create_dir_all(sb.path(d)).unwrap();
        }
        let (src, mp, up) = (sb.path("ports"), sb.path("mp"), sb.path("up"));
        sb.sh_backend(&format!(
            "mount_nullfs {src} {mp} && mount_unionfs -o below {up} {mp} && echo x > {mp}/written",
            src = src.display(),
            mp = mp.display(),
            up = up.display()
        ))
        .ok();
        assert!(src.join("written").exists(), "below: the host tree written");
        assert!(!up.join("written").exists());
        let table = sb.sh_backend("mount -p").stdout;
        assert!(
            table.contains(&up.display().to_string()) && !table.contains("<below>"),
            "mount -p drops the <below>: prefix: {table}"
        );
        sb.sh_backend(&format!("umount {mp} && umount {mp}", mp = mp.display()))
            .ok();
        fs::remove_file(src.join("written")).unwrap();

        let union_conf = |opts: &str| {
            sb.conf(&jlayers_tests::SCENE_CONF.replace(
                "target = \"usr/ports\"",
                &format!("target = \"usr/ports\"\nunion_options = [{opts}]"),
            ));
        };
        union_conf("\"noatime\", \"below\"");
        for args in [&["j1"][..], &["-n", "j1"]] {
            sb.run("jmount", args).code(78).err_has(
                "layer ports: union_options: \"below\" swaps the layers: the jail would write into the source, the host's tree, through its null mount; not allowed",
            );
        }
        assert!(sb.mounts().is_empty(), "{:?}", sb.mounts());
        assert!(!src.join("written").exists());
        union_conf("\"noatme\"");
        sb.run("jmount", &["j1"]).code(78).err_has(
            "union_options: unknown option \"noatme\" (unionfs would ignore it without a word); accepted: noatime, nosuid, noexec, ro, copymode=, whiteout=, udir=, ufile=, uid=, gid=",
        );
        assert!(sb.mounts().is_empty());
    });
}

/// nullfs shows its lower file system's read-only bit: a read-write null mount
/// of a read-only source shows "ro" in mount -p and is still jlayers' own.
#[test]
fn rw_null_mount_of_a_readonly_source_is_ours() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        // The distfiles source on a read-only file system of its own.
        let src = sb.path("distfiles");
        sb.tmpfs(&src);
        fs::write(src.join("vim-9.1.tar.xz"), "xz").unwrap();
        sb.sh(&format!("mount -o remount,ro {}", src.display()))
            .ok();
        sb.run("jmount", &["j1"]).ok();
        let nested = sb.path("j1/usr/ports/distfiles");
        let table = sb.sh_backend("mount -p").stdout;
        let line = table
            .lines()
            .find(|l| l.contains(&format!("{} nullfs", nested.display())))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(line.contains("\tro"), "nullfs shows the lower's ro: {line}");
        let n = sb.mounts().len();
        sb.run("jmount", &["j1"]).ok();
        assert_eq!(sb.mounts().len(), n, "already mounted: nothing added");
        sb.run("junmount", &["j1"]).ok();
        let left: Vec<_> = sb
            .mounts()
            .into_iter()
            .filter(|m| m.target.starts_with(sb.path("j1")))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    });
}

/// fstat(1) lists mapped files only with -m: a process that holds the mount only
/// by a mapping is named as its holder.
#[test]
fn holder_by_mapping_is_named() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        // A copy of a library this test process has mapped (std links libgcc_s).
        let maps = fs::read_to_string("/proc/self/maps").unwrap();
        let lib = maps
            .lines()
            .filter_map(|l| l.split_ascii_whitespace().nth(5))
            .find(|p| p.ends_with("/libgcc_s.so.1"))
            .expect("the test maps a copy of libgcc_s.so.1, which it has mapped itself");
        fs::copy(lib, sb.path("distfiles/libmapped.so")).unwrap();
        sb.run("jmount", &["j1"]).ok();
        // ld.so maps the preloaded library and closes it: only the mapping is left.
        let mut holder = std::process::Command::new("sleep")
            .arg("30")
            .env("LD_PRELOAD", sb.path("j1/usr/ports/distfiles/libmapped.so"))
            .current_dir("/")
            .spawn()
            .unwrap();
        let maps = format!("/proc/{}/maps", holder.id());
        let t = std::time::Instant::now();
        while !fs::read_to_string(&maps).is_ok_and(|m| m.contains("libmapped.so"))
            && t.elapsed() < std::time::Duration::from_secs(5)
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let o = sb.run("junmount", &["j1"]);
        o.code(75)
            .err_has(&format!("held by pid {} sleep (mapping)", holder.id()));
        holder.kill().unwrap();
        holder.wait().unwrap();
        sb.run("junmount", &["j1"]).ok();
        assert!(sb.mounts().is_empty());
    });
}

/// fstat(1) prints the command with `%-10s`: a command name with a space keeps
/// its holder, read from the fixed columns on the right.
#[test]
fn holder_whose_command_has_a_space_is_named() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        sb.run("jmount", &["j1"]).ok();
        fs::create_dir_all(sb.path("bin")).unwrap();
        let exe = sb.path("bin/port maker");
        fs::copy("/bin/sleep", &exe).unwrap();
        let mut holder = std::process::Command::new(&exe)
            .arg("30")
            .current_dir(sb.path("j1/usr/ports"))
            .spawn()
            .unwrap();
        let comm = format!("/proc/{}/comm", holder.id());
        let t = std::time::Instant::now();
        while !fs::read_to_string(&comm).is_ok_and(|c| c == "port maker\n")
            && t.elapsed() < std::time::Duration::from_secs(5)
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        sb.run("junmount", &["j1"])
            .code(75)
            .err_has(&format!("held by pid {} port maker (cwd)", holder.id()));
        holder.kill().unwrap();
        holder.wait().unwrap();
        sb.run("junmount", &["j1"]).ok();
        assert!(sb.mounts().is_empty());
    });
}

/// `jexec -l` changes to the caller's home directory inside the jail
/// (usr.sbin/jexec/jexec.c: `err(1, "chdir: %s", pw_dir)`): a jail without /root
/// fails before the updater runs, and jupdate says what is missing and the fix,
/// not "update failed with status 1".
#[test]
fn jail_without_root_home_is_explained() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        let root = sb.jail_root("j1", &["sh", "true", "env"]);
        fs::remove_dir(root.join("root")).unwrap();
        let o = sb.run("jupdate", &["j1", "--", "true"]);
        o.code(69).err_has(&format!(
            "jexec -l: the home directory /root of the user it runs as is missing in jail j1 (chdir: No such file or directory); create it (mkdir -m 700 {}), or give that user a home directory the jail has",
            root.join("root").display()
        ));
        let log = fs::read_to_string(sb.path("log/j1.log")).unwrap();
        assert!(
            log.contains("jexec: chdir: /root: No such file or directory"),
            "{log}"
        );
        assert!(!sb.jail_running("j1"), "stopped again");
        assert!(sb.mounts().is_empty(), "{:?}", sb.mounts());
        fs::create_dir(root.join("root")).unwrap();
        sb.run("jupdate", &["j1", "--", "true"]).ok();
    });
}

/// A mount that a union stands on is busy with no process holding it
/// (dounmount: `mnt_uppers` not empty): the hint names that union, not "a
/// process".
#[test]
fn busy_beneath_a_union_names_the_union() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        sb.run("jmount", &["j1"]).ok();
        // Someone's union whose upper dir lies in j1's shared distfiles mount.
        let nested = sb.path("j1/usr/ports/distfiles");
        fs::create_dir_all(nested.join("up")).unwrap();
        fs::create_dir_all(sb.path("elsewhere")).unwrap();
        sb.sh_backend(&format!(
            "mount_unionfs {}/up {}",
            nested.display(),
            sb.path("elsewhere").display()
        ))
        .ok();
        sb.run("junmount", &["j1"]).code(75).err_has(&format!(
            "unmount {n}: busy: the union mount on {e} has its upper dir {n}/up in it; unmount that first",
            n = nested.display(),
            e = sb.path("elsewhere").display()
        ));
        assert_eq!(sb.mounts_at("j1/usr/ports/distfiles").len(), 1, "put back");
        sb.sh_backend(&format!("umount {}", sb.path("elsewhere").display()))
            .ok();
        sb.run("junmount", &["j1"]).ok();
        assert!(sb.mounts().is_empty(), "{:?}", sb.mounts());
    });
}

/// The pids of the processes whose root is `root` (the simulation's jail members).
fn jail_pids(root: &Path) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r == root))
        .collect()
}

/// `jail -r` does not wait for the processes it kills (usr.sbin/jail/command.c,
/// term_procs): right after jupdate's stop, a process of the jail that is still
/// exiting holds the union. The unmount is tried again while the jail is dying
/// with processes (jls -d, ps -J), for at most 10 s, then fails naming them.
#[test]
fn unmount_after_stop_waits_for_exiting_processes() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        let root = sb.jail_root("j1", &["sh", "sleep", "true", "env", "rm", "test"]);
        // sh opens /dev/null for a command run in the background.
        fs::create_dir(root.join("dev")).unwrap();
        nix::sys::stat::mknod(
            &root.join("dev/null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        // A daemon in /usr/ports that takes a second to exit on SIGTERM.
        // The updater returns once the daemon's trap is set (/ready).
        let daemon = |on_term: &str| {
            format!(
                "rm -f /ready; cd /usr/ports && {{ trap '{on_term}' TERM; : > /ready; while :; do sleep 0.1; done; }} & until test -e /ready; do sleep 0.1; done"
            )
        };
        let o = sb.run(
            "jupdate",
            &["j1", "--", "sh", "-c", &daemon("sleep 1; exit 0")],
        );
        o.ok();
        assert!(!sb.jail_running("j1"));
        assert!(sb.mounts().is_empty(), "{:?}", sb.mounts());
        assert!(jail_pids(&root).is_empty(), "exited");

        // The same for junmount right after an admin's stop (460.jclean's way).
        sb.run("jmount", &["j1"]).ok();
        sb.sh_backend(&format!(
            "service jail onestart j1 && jexec -l j1 sh -c \"{}\" >/dev/null 2>&1 && service jail onestop j1",
            daemon("sleep 1; exit 0")
        ))
        .ok();
        assert!(!jail_pids(&root).is_empty(), "still exiting");
        sb.run("junmount", &["j1"]).ok();
        assert!(sb.mounts().is_empty(), "{:?}", sb.mounts());

        // One that ignores SIGTERM: after the bound, the holders are named.
        let t = std::time::Instant::now();
        let o = sb.run("jupdate", &["j1", "--", "sh", "-c", &daemon("")]);
        let took = t.elapsed();
        let pids = jail_pids(&root);
        for pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        o.code(75)
            .err_has("busy: held by pid ")
            .err_has("(cwd; jail j1)");
        assert!(!pids.is_empty());
        assert!(
            took >= std::time::Duration::from_secs(9) && took < std::time::Duration::from_secs(20),
            "{took:?}"
        );
        let t = std::time::Instant::now();
        while !jail_pids(&root).is_empty() && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        sb.run("junmount", &["j1"]).ok();
        assert!(sb.mounts().is_empty(), "{:?}", sb.mounts());
    });
}

/// mount_nullfs realpath(3)s its mount point: a jail that swaps a component for a
/// link in the instant before sends the mount elsewhere, and jmount takes back
/// what it made there, and nothing else: not another tool's null mount of the
/// same source or tmpfs made meanwhile, nor a long-standing one that the
/// table read before the mount left out (getfsstat skips a mount with an
/// unmount under way).
#[test]
fn redirected_mount_undone_without_touching_foreign_mounts() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        let t = sb.path("");
        let t = t.display();
        for d in ["foreign-null", "foreign-null2", "foreign-tmp", "sim-state"] {
            fs::create_dir_all(sb.path(d)).unwrap();
        }
        // Long-standing, but left out of the table read before the mount.
        sb.sh_backend(&format!("mount_nullfs {t}/ports {t}/foreign-null"))
            .ok();
        fs::write(
            sb.path("sim-state/busy-unmounting"),
            format!("{t}/foreign-null\n"),
        )
        .unwrap();
        let hook = sb.path("sim-state/before-mount_nullfs");
        fs::write(
            &hook,
            format!(
                "#!/bin/sh\nset -e\n\
                 : > {t}/sim-state/busy-unmounting\n\
                 mv {t}/j1/usr {t}/j1/usr.real\n\
                 mkdir -p {t}/host/usr/ports\n\
                 ln -s {t}/host/usr {t}/j1/usr\n\
                 mount_nullfs {t}/ports {t}/foreign-null2\n\
                 mount -t tmpfs tmpfs {t}/foreign-tmp\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
        sb.run("jmount", &["j1"])
            .code(77)
            .err_has("the new mount was not at the planned path; undone");
        assert!(sb.path("sim-state/before-mount_nullfs.ran").exists());
        let left: Vec<_> = sb.mounts().into_iter().map(|m| m.target).collect();
        for foreign in ["foreign-null", "foreign-null2", "foreign-tmp"] {
            assert!(
                left.contains(&sb.path(foreign)),
                "{foreign} survives: {left:?}"
            );
        }
        assert!(
            !left.contains(&sb.path("host/usr/ports")),
            "the stray is undone: {left:?}"
        );
        assert_eq!(left.len(), 3, "{left:?}");
        for foreign in ["foreign-null", "foreign-null2", "foreign-tmp"] {
            sb.sh_backend(&format!("umount {t}/{foreign}")).ok();
        }

        // The same for a tmpfs upper inside the jail root: another tool's tmpfs
        // made meanwhile survives.
        fs::remove_file(sb.path("j1/usr")).unwrap();
        fs::rename(sb.path("j1/usr.real"), sb.path("j1/usr")).unwrap();
        sb.conf(&jlayers_tests::SCENE_CONF.replace(
            "[jail.j1]\nroot = \"@T/j1\"\n",
            "[jail.j1]\nroot = \"@T/j1\"\nupper_fs = \"tmpfs\"\nupper.ports = \"up/ports\"\n",
        ));
        fs::create_dir_all(sb.path("j1/up/ports")).unwrap();
        let hook = sb.path("sim-state/before-mount");
        fs::write(
            &hook,
            format!(
                "#!/bin/sh\nset -e\n\
                 mv {t}/j1/up {t}/j1/up.real\n\
                 mkdir -p {t}/host/up/ports\n\
                 ln -s {t}/host/up {t}/j1/up\n\
                 mount -t tmpfs tmpfs {t}/foreign-tmp\n"
            ),
        )
        .unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
        sb.run("jmount", &["j1"])
            .code(77)
            .err_has("the new mount was not at the planned path; undone");
        let left: Vec<_> = sb.mounts().into_iter().map(|m| m.target).collect();
        assert_eq!(
            left,
            [sb.path("foreign-tmp")],
            "only the foreign tmpfs is left"
        );
        sb.sh_backend(&format!("umount {t}/foreign-tmp")).ok();
    });
}

/// rc.d/jail exits 0 when a jail did not start and never fails to stop: jupdate
/// checks the jail's state after each, and fails with the service's own output.
#[test]
fn service_that_did_not_start_or_stop_fails() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        sb.jail_root("j1", &["sh", "true", "env"]);
        let state = sb.path("sim-state");
        fs::create_dir_all(state.join("cannot-start")).unwrap();
        fs::write(
            state.join("cannot-start/j1"),
            "jail: j1: mount.devfs: /dev: Operation not supported\n",
        )
        .unwrap();
        let o = sb.run("jupdate", &["j1", "--", "true"]);
        o.code(69).err_has(
            "service: the jail is not running after it (jls -j j1): Starting jails: cannot start jail \"j1\": jail: j1: mount.devfs: /dev: Operation not supported .",
        );
        assert!(sb.mounts().is_empty(), "{:?}", sb.mounts());

        fs::remove_file(state.join("cannot-start/j1")).unwrap();
        fs::create_dir_all(state.join("cannot-stop")).unwrap();
        fs::write(
            state.join("cannot-stop/j1"),
            "jail: j1: /bin/sh /etc/rc.shutdown: failed\n",
        )
        .unwrap();
        let o = sb.run("jupdate", &["j1", "--", "true"]);
        o.code(69).err_has(
            "service: the jail is still running after it (jls -j j1): Stopping jails: j1jail: j1: /bin/sh /etc/rc.shutdown: failed .",
        );
        assert!(sb.jail_running("j1"));
        fs::remove_file(state.join("cannot-stop/j1")).unwrap();
        sb.sh_backend("service jail onestop j1").ok();
        sb.run("junmount", &["j1"]).ok();
    });
}

/// The simulated umount(8) answers an unknown file system ID as the real one does
/// (sbin/umount/umount.c: the ID not in the table, statfs(2) of it as a path).
#[test]
fn simulated_umount_of_an_unknown_fsid() {
    sandbox(Backend::FreeBsd, |sb| {
        fs::create_dir_all(sb.path("sim-state")).unwrap();
        let o = sb.sh_backend("umount 00000000deadbeef");
        o.code(1);
        assert_eq!(
            o.stderr,
            "umount: 00000000deadbeef: statfs: No such file or directory\n\
             umount: 00000000deadbeef: unknown file system\n"
        );
    });
}

/// Each simulated tool says which freebsd-src file it follows, so that it can be
/// checked against the real tool line by line.
#[test]
fn every_simulated_tool_cites_its_source() {
    for e in fs::read_dir(jlayers_tests::sim_dir()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") || name == "common.sh" {
            continue;
        }
        let text = fs::read_to_string(e.path()).unwrap();
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            header.contains("SIMULATION") && header.contains("freebsd-src "),
            "{name}: its header must cite the freebsd-src file it follows"
        );
    }
}

/// The weekly 460.jclean stops exactly the running jails jlayers manages and
/// starts exactly those again: another jail keeps running, a managed jail that was
/// down stays down, and it works without jail_enable=YES (service jail stop/start
/// without names would stop every jail, start only jail_list's, and do nothing at
/// all without it).
#[test]
fn periodic_jclean_restarts_exactly_what_it_stopped() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        for j in ["j1", "j2", "other"] {
            sb.jail_root(j, &["sh"]);
        }
        sb.run("jmount", &["--all"]).ok();
        fs::write(sb.path("j1/usr/ports/written-in-jail"), "x").unwrap();
        for j in ["j1", "other"] {
            sb.sh_backend(&format!("service jail onestart {j}")).ok();
        }
        let script = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../freebsd/periodic/weekly/460.jclean"),
        )
        .unwrap()
        .replace(
            "%%PREFIX%%/sbin/",
            &format!("{}/", jlayers_tests::bin_dir().display()),
        );
        fs::write(sb.path("460.jclean"), script).unwrap();
        let mut c = std::process::Command::new("sh");
        sb.backend_env(&mut c);
        let o = jlayers_tests::Out::from(
            c.arg(sb.path("460.jclean"))
                .env("weekly_jclean_enable", "YES")
                .env(
                    "weekly_jclean_flags",
                    format!("-c {} --all", sb.path("jlayers.conf").display()),
                )
                .output()
                .unwrap(),
        );
        assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
        assert!(
            !sb.path("upper/j1/ports/written-in-jail").exists(),
            "cleaned"
        );
        assert!(sb.jail_running("j1"), "stopped and started again");
        assert!(sb.jail_running("other"), "not jlayers': left running");
        assert!(!sb.jail_running("j2"), "was down: left down");
        assert_eq!(sb.mounts_at("j1/usr/ports").len(), 2, "mounted again");
        for j in ["j1", "other"] {
            sb.sh_backend(&format!("service jail onestop {j}")).ok();
        }
        sb.run("junmount", &["--all"]).ok();
    });
}

/// The simulated mount_unionfs is as strict as sbin/mount_unionfs/mount_unionfs.c:
/// each -o whole (an unknown name ignored), distinct paths (64), nmount(2)'s
/// failure as EX_OSERR (71) naming the mount point.
#[test]
fn simulated_mount_unionfs_is_strict() {
    sandbox(Backend::FreeBsd, |sb| {
        for d in ["mp", "up", "mp/inner", "sim-state"] {
            fs::create_dir_all(sb.path(d)).unwrap();
        }
        let (mp, up) = (sb.path("mp"), sb.path("up"));
        let (mp, up) = (mp.display(), up.display());
        sb.sh_backend(&format!("mount_unionfs -o noatime,below {up} {mp}"))
            .ok();
        let table = sb.sh_backend("mount -p").stdout;
        let line = table
            .lines()
            .find(|l| l.contains("unionfs"))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(
            line.contains("\trw\t") && !line.contains("noatime"),
            "one unknown option, ignored: {line}"
        );
        sb.sh_backend(&format!("umount {mp}")).ok();
        let o = sb.sh_backend(&format!("mount_unionfs {mp}/inner {mp}"));
        o.code(64);
        assert!(
            o.stderr.ends_with("are not distinct paths\n"),
            "{}",
            o.stderr
        );
        let o = sb.sh_backend(&format!("mount_unionfs -o copymode=x {up} {mp}"));
        o.code(71);
        assert_eq!(
            o.stderr,
            format!("mount_unionfs: {mp}: Invalid copymode: Invalid argument\n")
        );
    });
}
