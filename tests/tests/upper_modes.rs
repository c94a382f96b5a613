//! The dirs around the upper dirs keep host users out (issue 27 item 4, Docker's
//! CVE-2021-41091): a set-user-ID root file a jail writes into its upper is not
//! theirs to run. jmount makes upper_root, the per-jail dir, the work dir and a
//! tmpfs upper's root 0700 (0710 with `upper_group`), says which existing ones are
//! more open, and sets back those it owns; the upper dir itself is the jail's.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use jlayers_tests::{Backend, Sandbox, on_both, sandbox};

on_both!(
    setuid_file_out_of_host_users_reach,
    modes_as_made,
    group_key_gives_0710,
    open_dirs_warned_and_set_back,
    tmpfs_upper_closed,
    upper_outside_upper_root_checked,
);

/// The user the attacks run as.
const NOBODY: u32 = 65534;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

/// The standard scene, its temp dir open to everyone (as /var/lib is): only
/// jlayers' own dirs can keep a host user out.
fn open_scene(sb: &Sandbox) {
    sb.scene();
    fs::set_permissions(&sb.dir, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The jail's root user writes a set-user-ID root copy of id(1) through its view
/// of the target: it lands in the upper dir. Returns its path there.
fn plant_setuid(sb: &Sandbox, target: &str, upper: &str) -> std::path::PathBuf {
    let seen = sb.path(target).join("rootshell");
    fs::copy("/usr/bin/id", &seen).unwrap();
    fs::set_permissions(&seen, fs::Permissions::from_mode(0o4755)).unwrap();
    let planted = sb.path(upper).join("rootshell");
    let md = fs::metadata(&planted).expect("written through the union into the upper");
    assert_eq!(md.mode() & 0o7777, 0o4755);
    assert_eq!(md.uid(), 0);
    planted
}

/// Run `path` as uid NOBODY with group `gid` (no other group).
fn run_as(path: &Path, gid: u32) -> std::io::Result<std::process::Output> {
    Command::new(path).uid(NOBODY).gid(gid).output()
}

/// What running the planted file as nobody gave: refused with EACCES.
fn refused(path: &Path) {
    match run_as(path, NOBODY) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}"),
        Ok(o) => panic!(
            "{} ran for an unprivileged host user: {}",
            path.display(),
            String::from_utf8_lossy(&o.stdout)
        ),
    }
}

/// The attack: a set-user-ID root file the jail wrote cannot be run by an
/// unprivileged host user through the upper dir path. The jail's own view is as
/// before: its target shows the upper dir's mode (0755), readable by anyone.
fn setuid_file_out_of_host_users_reach(b: Backend) {
    sandbox(b, |sb| {
        open_scene(sb);
        sb.run("jmount", &["j1"]).ok();
        let planted = plant_setuid(sb, "j1/usr/ports", "upper/j1/ports");
        refused(&planted);
        // The tree the jail sees keeps its modes: a user in the jail reads it.
        assert_eq!(mode(&sb.path("j1/usr/ports")), 0o755);
        let o = Command::new("cat")
            .arg(sb.path("j1/usr/ports/Mk/bsd.port.mk"))
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        sb.run("junmount", &["j1"]).ok();
        refused(&planted);
    });
}

/// A fresh jmount makes upper_root, the jail's dir and the work dir 0700, owned
/// by root; the upper dir keeps 0755 (the jail sees it as its target). A second
/// run changes nothing and says nothing.
fn modes_as_made(b: Backend) {
    sandbox(b, |sb| {
        open_scene(sb);
        let o = sb.run("jmount", &["--json", "j1"]);
        o.ok();
        assert_eq!(o.stderr, "");
        for dir in ["upper", "upper/j1"] {
            assert_eq!(mode(&sb.path(dir)), 0o700, "{dir}");
            assert_eq!(fs::metadata(sb.path(dir)).unwrap().gid(), 0, "{dir}");
        }
        if b == Backend::Linux {
            assert_eq!(mode(&sb.path("upper/j1/ports.work")), 0o700);
        } else {
            // unionfs has no work dir.
            assert!(!sb.path("upper/j1/ports.work").exists());
        }
        assert_eq!(mode(&sb.path("upper/j1/ports")), 0o755);
        let o = sb.run("jmount", &["--json", "j1"]);
        o.ok();
        assert_eq!(o.stderr, "");
        assert!(!o.stdout.contains("\"changed\":true"), "{}", o.stdout);
        // j2 shares upper_root: its own dir is made closed too.
        sb.run("jmount", &["j2"]).ok();
        assert_eq!(mode(&sb.path("upper/j2")), 0o700);
        sb.run("junmount", &["-a"]).ok();
    });
}

/// `upper_group` (a number here; a name is looked up): the dirs are 0710 and the
/// group's; a member of it passes, nobody else does. `[defaults]`' group is
/// upper_root's (every jail's), a jail's own is that of its dirs below it. An
/// unknown group is 78.
fn group_key_gives_0710(b: Backend) {
    sandbox(b, |sb| {
        open_scene(sb);
        let conf = jlayers_tests::SCENE_CONF
            .replace("[defaults]\n", "[defaults]\nupper_group = \"12345\"\n")
            .replace(
                "[jail.j2]\nroot = \"@T/j2\"\n",
                "[jail.j2]\nroot = \"@T/j2\"\nupper_group = \"23456\"\n",
            );
        sb.conf(&conf);
        sb.run("jmount", &["-a"]).ok();
        let mut dirs = vec![("upper", 12345), ("upper/j1", 12345), ("upper/j2", 23456)];
        if b == Backend::Linux {
            dirs.push(("upper/j1/ports.work", 12345));
            dirs.push(("upper/j2/ports.work", 23456));
        } else {
            // unionfs has no work dir.
            assert!(!sb.path("upper/j1/ports.work").exists());
        }
        for (dir, gid) in dirs {
            let md = fs::metadata(sb.path(dir)).unwrap();
            assert_eq!((md.mode() & 0o7777, md.gid()), (0o710, gid), "{dir}");
        }
        assert_eq!(mode(&sb.path("upper/j1/ports")), 0o755);
        let planted = plant_setuid(sb, "j1/usr/ports", "upper/j1/ports");
        refused(&planted);
        let o = run_as(&planted, 12345).expect("the group passes");
        assert!(o.status.success());
        let again = sb.run("jmount", &["-a"]);
        again.ok();
        assert_eq!(
            again.stderr, "",
            "each dir as its group says: nothing to set"
        );
        sb.run("junmount", &["-a"]).ok();

        // Unknown: 78, nothing made.
        let conf = jlayers_tests::SCENE_CONF.replace(
            "[defaults]\n",
            "[defaults]\nupper_group = \"no-such-group-jlayers\"\n",
        );
        sb.conf(&conf);
        fs::remove_dir_all(sb.path("upper")).unwrap();
        sb.run("jmount", &["j2"])
            .code(78)
            .err_has("defaults: upper_group: unknown group \"no-such-group-jlayers\"");
        assert!(!sb.path("upper").exists());
    });
}

/// Dirs an older jmount made 0755: `--status` and `-n` say so, one line per dir
/// on stderr, and change nothing (`-q`: silent, as every warning); jmount sets
/// them back to 0700, through the mounted stack too, and says so.
fn open_dirs_warned_and_set_back(b: Backend) {
    sandbox(b, |sb| {
        open_scene(sb);
        sb.run("jmount", &["j1"]).ok();
        sb.run("junmount", &["j1"]).ok();
        let open = ["upper", "upper/j1"];
        for dir in open {
            fs::set_permissions(sb.path(dir), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let warning = |dir: &str, tool: &str| {
            let p = sb.path(dir).display().to_string();
            format!(
                "jmount: j1: ports: {p} is mode 0755: a host user can run the jail's set-user-ID files through it; {tool} sets it to 0700 (chmod 0700 {p})"
            )
        };
        let status = sb.run("jmount", &["--status", "j1"]);
        status.code(1);
        assert_eq!(
            status.stdout,
            format!(
                "j1\tports\tunmounted\t{}\nj1\tdistfiles\tunmounted\t{}\n",
                sb.path("j1/usr/ports").display(),
                sb.path("j1/usr/ports/distfiles").display()
            ),
            "the records as they were"
        );
        for dir in open {
            status.err_has(&warning(dir, "jmount"));
        }
        assert_eq!(status.stderr.lines().count(), 2, "{}", status.stderr);
        let dry = sb.run("jmount", &["-n", "j1"]);
        dry.ok();
        for dir in open {
            dry.err_has(&warning(dir, "jmount"));
            assert!(
                dry.stdout
                    .contains(&format!("chmod 0700 {}\n", sb.path(dir).display())),
                "{}",
                dry.stdout
            );
        }
        let quiet = sb.run("jmount", &["-n", "-q", "j1"]);
        quiet.ok();
        assert_eq!(quiet.stderr, "");
        for dir in open {
            assert_eq!(mode(&sb.path(dir)), 0o755, "--status and -n change nothing");
        }

        let o = sb.run("jmount", &["j1"]);
        o.ok();
        for dir in open {
            o.err_has(&format!(
                "jmount: j1: ports: {} is mode 0755: a host user can run the jail's set-user-ID files through it; set to 0700",
                sb.path(dir).display()
            ));
            assert_eq!(mode(&sb.path(dir)), 0o700, "{dir}");
        }
        let planted = plant_setuid(sb, "j1/usr/ports", "upper/j1/ports");
        refused(&planted);

        // Opened again while mounted: jmount again sets it back.
        fs::set_permissions(sb.path("upper/j1"), fs::Permissions::from_mode(0o755)).unwrap();
        let o = sb.run("jmount", &["j1"]);
        o.ok().err_has("is mode 0755");
        assert_eq!(mode(&sb.path("upper/j1")), 0o700);
        refused(&planted);
        let o = sb.run("jmount", &["--status", "j1"]);
        o.ok();
        assert_eq!(o.stderr, "");
        sb.run("junmount", &["j1"]).ok();
    });
}

/// `upper_fs = "tmpfs"`: the tmpfs's root (its mode= option) holds the upper and
/// work dirs and is 0700 (0710 and the group with upper_group).
fn tmpfs_upper_closed(b: Backend) {
    sandbox(b, |sb| {
        open_scene(sb);
        let conf = jlayers_tests::SCENE_CONF
            .replace(
                "[jail.j1]\nroot = \"@T/j1\"\n",
                "[jail.j1]\nroot = \"@T/j1\"\nupper_fs = \"tmpfs\"\n",
            )
            .replace(
                "[jail.j2]\nroot = \"@T/j2\"\n",
                "[jail.j2]\nroot = \"@T/j2\"\nupper_fs = \"tmpfs\"\nupper_group = \"12345\"\n",
            );
        sb.conf(&conf);
        let o = sb.run("jmount", &["-a"]);
        o.ok();
        assert_eq!(o.stderr, "");
        assert_eq!(sb.mounts_at("upper/j1/ports"), ["tmpfs"]);
        assert_eq!(mode(&sb.path("upper/j1/ports")), 0o700);
        let j2 = fs::metadata(sb.path("upper/j2/ports")).unwrap();
        assert_eq!((j2.mode() & 0o7777, j2.gid()), (0o710, 12345));
        assert_eq!(mode(&sb.path("upper/j1/ports/upper")), 0o755);
        let planted = plant_setuid(sb, "j1/usr/ports", "upper/j1/ports/upper");
        refused(&planted);
        // Even were upper_root open, the tmpfs's root is closed.
        fs::set_permissions(sb.path("upper"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(sb.path("upper/j1"), fs::Permissions::from_mode(0o755)).unwrap();
        refused(&planted);
        sb.run("junmount", &["-a"]).ok();
    });
}

/// An upper on a host path outside upper_root: the dirs above it are the
/// admin's. jmount warns while every one lets other users through, and changes
/// none of them; closed by the admin, the warning goes.
fn upper_outside_upper_root_checked(b: Backend) {
    sandbox(b, |sb| {
        open_scene(sb);
        let conf = jlayers_tests::SCENE_CONF.replace(
            "[jail.j1]\nroot = \"@T/j1\"\n",
            "[jail.j1]\nroot = \"@T/j1\"\nupper.ports = \"@T/mine/ports\"\n",
        );
        sb.conf(&conf);
        fs::create_dir(sb.path("mine")).unwrap();
        fs::set_permissions(sb.path("mine"), fs::Permissions::from_mode(0o755)).unwrap();
        let says = format!(
            "jmount: j1: ports: upper dir {}: every dir above it lets other users through, so a host user can run the jail's set-user-ID files through it; chmod 0700 {}",
            sb.path("mine/ports").display(),
            sb.path("mine").display()
        );
        sb.run("jmount", &["--status", "j1"]).code(1).err_has(&says);
        sb.run("jmount", &["j1"]).ok().err_has(&says);
        assert_eq!(mode(&sb.path("mine")), 0o755, "the admin's: left alone");
        if b == Backend::Linux {
            assert_eq!(mode(&sb.path("mine/ports.work")), 0o700);
        } else {
            assert!(!sb.path("mine/ports.work").exists());
        }
        sb.run("junmount", &["j1"]).ok();
        fs::set_permissions(sb.path("mine"), fs::Permissions::from_mode(0o700)).unwrap();
        let o = sb.run("jmount", &["j1"]);
        o.ok();
        assert_eq!(o.stderr, "");
        sb.run("junmount", &["j1"]).ok();
    });
}
