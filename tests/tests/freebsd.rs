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
        sb.run("junmount", &["-n", "server"]).code(75);
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
        // A mount_unionfs option the tool rejects: its stderr line is the message,
        // and the null mount made before it is rolled back.
        sb.conf(&jlayers_tests::SCENE_CONF.replace(
            "target = \"usr/ports\"",
            "target = \"usr/ports\"\nunion_options = [\"bogus\"]",
        ));
        sb.run("jmount", &["j1"])
            .code(69)
            .err_has("jmount: j1: ports: mount_unionfs: bogus: option not supported");
        assert!(sb.mounts().is_empty());
        assert!(Path::new(&jlayers_tests::sim_dir().join("README.md")).is_file());
    });
}

#[test]
fn interrupted_jmount_rolls_back_and_exits_130() {
    sandbox(Backend::FreeBsd, |sb| {
        sb.scene();
        let child = sb
            .cmd("jmount")
            .env("SIM_MOUNT_DELAY", "1")
            .arg("-c")
            .arg(sb.path("jlayers.conf"))
            .args(["j1", "j2"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Once the null mount is made, the union mount is under way.
        let out = jlayers_tests::interrupt_when(child, || !sb.mounts().is_empty());
        assert_eq!(
            out.status.code(),
            Some(130),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("jmount: j1: "));
        assert!(sb.mounts().is_empty(), "rolled back: {:?}", sb.mounts());
    });
}
