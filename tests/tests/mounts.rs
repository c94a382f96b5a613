//! jmount and junmount with real mounts, each test in its own mount namespace.
//! Every scenario runs on the Linux backend and, through the simulated userland,
//! on the FreeBSD backend.
// The tests of the Linux backend run on a Linux host only; on FreeBSD their helpers
// are left unused.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::fs;
use std::os::unix::fs::{FileTypeExt, symlink};

use jlayers_tests::{Backend, Sandbox, sandbox};

use jlayers_tests::on_both;

on_both!(
    copy_on_write_two_jails,
    idempotent,
    half_stack_completed,
    rollback_after_later_layer_fails,
    nested_layers_order,
    symlink_at_each_component_refused,
    symlinked_upper_inside_root_refused,
    foreign_mount_left_alone,
    lock_contention,
    missing_root_or_source,
    dry_run_piped_to_sh_is_jmount,
    readonly_layer,
    busy_mount,
    awkward_paths,
    busy_unmount_names_its_holders,
    tmpfs_uppers,
    junmount_all_or_nothing,
);

fn read(sb: &Sandbox, rel: &str) -> Option<String> {
    fs::read_to_string(sb.path(rel)).ok()
}

/// A union stack of the scene's ports layer as the mount table shows it: the null
/// (bind) mount of the ports tree, then the union with `jail`'s upper dir on top,
/// each level's type and source as the backend names them.
#[track_caller]
fn assert_union_stack(sb: &Sandbox, rel: &str, jail: &str) {
    let at = sb.mounts_at(rel);
    assert_eq!(at.len(), 2, "{rel}: {at:?}");
    assert_eq!(at[1], jlayers_tests::UNION_FSTYPE, "{rel}: {at:?}");
    // Linux: a bind shows the type of the file system it mirrors (the test's tmpfs).
    let (null, union) = match sb.backend {
        Backend::Linux => ("tmpfs", "overlay"),
        Backend::FreeBsd => ("nullfs", "unionfs"),
    };
    let upper = sb.path(&format!("upper/{jail}/ports"));
    assert_eq!(
        sb.sources_at(rel),
        [
            (null.to_string(), sb.path("ports")),
            (union.to_string(), upper)
        ],
        "{rel}"
    );
}

fn copy_on_write_two_jails(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.run("jmount", &["--all"]).ok();
        assert_union_stack(sb, "j1/usr/ports", "j1");
        assert_union_stack(sb, "j2/usr/ports", "j2");

        // A build-like write through j1 lands in j1's upper dir only.
        fs::create_dir_all(sb.path("j1/usr/ports/editors/vim/work")).unwrap();
        fs::write(
            sb.path("j1/usr/ports/editors/vim/work/.build_done.vim"),
            "done",
        )
        .unwrap();
        fs::write(
            sb.path("j1/usr/ports/editors/vim/Makefile"),
            "PORTNAME=vim-patched\n",
        )
        .unwrap();
        assert!(
            sb.path("upper/j1/ports/editors/vim/work/.build_done.vim")
                .is_file()
        );
        assert!(!sb.path("ports/editors/vim/work").exists());
        assert!(!sb.path("j2/usr/ports/editors/vim/work").exists());
        assert_eq!(
            read(sb, "ports/editors/vim/Makefile").unwrap(),
            "PORTNAME=vim\n"
        );
        assert_eq!(
            read(sb, "j2/usr/ports/editors/vim/Makefile").unwrap(),
            "PORTNAME=vim\n"
        );

        // Deleting a host file inside j2 hides it there only: the whiteout is in
        // j2's upper dir.
        fs::remove_file(sb.path("j2/usr/ports/Mk/bsd.port.mk")).unwrap();
        assert!(!sb.path("j2/usr/ports/Mk/bsd.port.mk").exists());
        assert!(sb.path("ports/Mk/bsd.port.mk").is_file());
        assert!(sb.path("j1/usr/ports/Mk/bsd.port.mk").is_file());
        let wh = fs::symlink_metadata(sb.path("upper/j2/ports/Mk/bsd.port.mk")).unwrap();
        assert!(wh.file_type().is_char_device(), "whiteout in j2's upper");

        sb.run("junmount", &["--all"]).ok();
        assert!(sb.mounts().is_empty(), "{:?}", sb.mounts());
        // Upper contents survive junmount and come back with the next jmount.
        assert!(
            sb.path("upper/j1/ports/editors/vim/work/.build_done.vim")
                .is_file()
        );
        sb.run("jmount", &["j1", "j2"]).ok();
        assert_eq!(
            read(sb, "j1/usr/ports/editors/vim/Makefile").unwrap(),
            "PORTNAME=vim-patched\n"
        );
        assert!(!sb.path("j2/usr/ports/Mk/bsd.port.mk").exists());
        assert!(sb.path("j1/usr/ports/Mk/bsd.port.mk").exists());
        sb.run("junmount", &["j2", "j1"]).ok();
        assert!(sb.mounts().is_empty());
        assert_eq!(
            read(sb, "ports/editors/vim/Makefile").unwrap(),
            "PORTNAME=vim\n"
        );
    });
}

fn idempotent(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        let o = sb.run("jmount", &["--all"]);
        o.ok();
        assert_eq!(o.stdout, "");
        assert_eq!(o.stderr, "", "silent on success");
        let once = sb.mounts();
        sb.run("jmount", &["--all"]).ok();
        sb.run("jmount", &["j1"]).ok();
        assert_eq!(sb.mounts(), once);
        sb.run("junmount", &["--all"]).ok();
        let again = sb.run("junmount", &["--all"]);
        again.ok();
        assert_eq!(again.stderr, "");
        assert!(sb.mounts().is_empty());
    });
}

fn half_stack_completed(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        // Only the bottom of j1's ports stack is there, as after a crash.
        sb.run("jmount", &["j1"]).ok();
        sb.sh("umount j1/usr/ports/distfiles && umount j1/usr/ports")
            .ok();
        assert_eq!(sb.mounts_at("j1/usr/ports").len(), 1);
        let o = sb.run("jmount", &["-v", "j1"]);
        o.ok()
            .err_has("union mount of")
            .err_has("distfiles: null mount of");
        assert!(!o.stderr.contains("ports: null mount of"), "{}", o.stderr);
        assert_union_stack(sb, "j1/usr/ports", "j1");
        assert_eq!(sb.mounts().len(), 3);
    });
}

fn rollback_after_later_layer_fails(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        // The distfiles target cannot be made: a file stands in the way, inside the
        // union, i.e. in j1's upper dir.
        fs::create_dir_all(sb.path("upper/j1/ports")).unwrap();
        fs::write(sb.path("upper/j1/ports/distfiles"), "in the way").unwrap();
        let o = sb.run("jmount", &["--all"]);
        o.code(73)
            .err_has("jmount: j1: distfiles: ")
            .err_has("is not a directory");
        // j1: no half stack left behind; j2 is mounted all the same.
        assert!(sb.mounts_at("j1/usr/ports").is_empty(), "{:?}", sb.mounts());
        assert_union_stack(sb, "j2/usr/ports", "j2");
        assert_eq!(sb.mounts_at("j2/usr/ports/distfiles").len(), 1);
    });
}

fn nested_layers_order(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        let o = sb.run("jmount", &["-v", "j1"]);
        o.ok();
        let order: Vec<_> = sb.mounts().into_iter().map(|m| m.target).collect();
        assert_eq!(
            order,
            [
                sb.path("j1/usr/ports"),
                sb.path("j1/usr/ports"),
                sb.path("j1/usr/ports/distfiles")
            ]
        );
        // The shared layer writes through to the host.
        fs::write(sb.path("j1/usr/ports/distfiles/new.tar.gz"), "gz").unwrap();
        assert!(sb.path("distfiles/new.tar.gz").is_file());
        assert!(!sb.path("upper/j1/ports/distfiles/new.tar.gz").exists());
        let o = sb.run("junmount", &["-v", "j1"]);
        o.ok();
        let lines: Vec<_> = o.stderr.lines().collect();
        assert_eq!(lines.len(), 3, "{}", o.stderr);
        assert!(
            lines[0].starts_with("junmount: j1: distfiles: unmounted"),
            "{}",
            o.stderr
        );
        assert!(lines[1].starts_with("junmount: j1: ports: unmounted"));
        assert!(lines[2].starts_with("junmount: j1: ports: unmounted"));
    });
}

fn symlink_at_each_component_refused(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        fs::create_dir_all(sb.path("host-secret")).unwrap();
        sb.conf(&jlayers_tests::SCENE_CONF.replace("\"usr/ports\"", "\"usr/local/ports\""));
        for link in ["j1/usr", "j1/usr/local", "j1/usr/local/ports"] {
            let _ = fs::remove_dir_all(sb.path("j1"));
            fs::create_dir_all(sb.path(link)).unwrap();
            fs::remove_dir(sb.path(link)).unwrap();
            symlink(sb.path("host-secret"), sb.path(link)).unwrap();
            let o = sb.run("jmount", &["j1"]);
            o.code(77).err_has("is a symbolic link");
            assert!(sb.mounts().is_empty(), "{link}: {:?}", sb.mounts());
            assert_eq!(
                fs::read_dir(sb.path("host-secret")).unwrap().count(),
                0,
                "{link}: host dir untouched"
            );
            sb.run("junmount", &["j1"]).ok();
        }
    });
}

fn symlinked_upper_inside_root_refused(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        fs::create_dir_all(sb.path("host-secret")).unwrap();
        let conf = jlayers_tests::SCENE_CONF.replace(
            "root = \"@T/j1\"",
            "root = \"@T/j1\"\nupper.ports = \"usr/tmp/foo\"",
        );
        sb.conf(&conf);
        symlink(sb.path("host-secret"), sb.path("j1/usr/tmp")).unwrap();
        sb.run("jmount", &["j1"])
            .code(77)
            .err_has("usr/tmp is a symbolic link");
        assert!(sb.mounts().is_empty());
        assert_eq!(fs::read_dir(sb.path("host-secret")).unwrap().count(), 0);
        // The recipe's layout, without the plant, works.
        fs::remove_file(sb.path("j1/usr/tmp")).unwrap();
        sb.run("jmount", &["j1"]).ok();
        fs::write(sb.path("j1/usr/ports/x"), "").unwrap();
        assert!(sb.path("j1/usr/tmp/foo/x").is_file());
        sb.run("junmount", &["j1"]).ok();
    });
}

fn foreign_mount_left_alone(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        fs::create_dir_all(sb.path("j1/usr/ports")).unwrap();
        sb.sh("mount -t tmpfs jail-tmpfs j1/usr/ports").ok();
        sb.run("jmount", &["j1"])
            .code(69)
            .err_has("tmpfs from jail-tmpfs is mounted there");
        assert_eq!(sb.mounts_at("j1/usr/ports"), ["tmpfs"]);
        let o = sb.run("junmount", &["j1"]);
        o.ok().err_has("not by jlayers; left alone");
        assert_eq!(sb.mounts_at("j1/usr/ports"), ["tmpfs"]);
    });
}

fn lock_contention(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        fs::create_dir_all(sb.path("run")).unwrap();
        // Another run holds j1's lock (flock(1) in a child, which outlives nothing).
        let mut holder = std::process::Command::new("sh")
            .arg("-c")
            .arg("exec 9>run/j1.lock; flock -n 9 || exit 3; echo 4242 >&9; echo locked; exec sleep 30")
            .current_dir(&sb.dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "locked\n");
        let o = sb.run("jmount", &["j1", "j2"]);
        o.code(75)
            .err_has("jmount: j1: locked by another jlayers run (pid 4242");
        assert!(sb.mounts_at("j1/usr/ports").is_empty());
        assert_eq!(
            sb.mounts_at("j2/usr/ports").len(),
            2,
            "the other jail goes on"
        );
        holder.kill().unwrap();
        holder.wait().unwrap();
        sb.run("jmount", &["j1"]).ok();
        sb.run("junmount", &["--all"]).ok();
    });
}

fn missing_root_or_source(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        fs::remove_dir_all(sb.path("j2")).unwrap();
        sb.run("jmount", &["j2", "j1"])
            .code(66)
            .err_has("jmount: j2: jail root")
            .err_has("does not exist");
        assert_eq!(sb.mounts_at("j1/usr/ports").len(), 2);
        sb.run("junmount", &["j1"]).ok();
        fs::remove_dir_all(sb.path("distfiles")).unwrap();
        sb.run("jmount", &["j1"])
            .code(66)
            .err_has("jmount: j1: distfiles: source");
        assert!(sb.mounts().is_empty());
    });
}

fn dry_run_piped_to_sh_is_jmount(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        let plan = sb.run("jmount", &["-n", "--all"]);
        plan.ok();
        assert!(sb.mounts().is_empty(), "-n changes nothing");
        assert!(!sb.path("upper").exists(), "-n creates nothing");
        let by_sh = sb.sh_backend(&format!("set -e\n{}", plan.stdout));
        by_sh.ok();
        let via_sh = sb.mounts();
        // jmount agrees that the job is done, and junmount takes it all down.
        sb.run("jmount", &["--all"]).ok();
        assert_eq!(sb.mounts(), via_sh);
        sb.run("junmount", &["--all"]).ok();
        assert!(sb.mounts().is_empty());
        sb.run("jmount", &["--all"]).ok();
        assert_eq!(sb.mounts(), via_sh);
        // And the teardown plan does the same as junmount.
        let down = sb.run("junmount", &["-n", "--all"]);
        down.ok();
        assert_eq!(down.stdout.lines().count(), 6, "{}", down.stdout);
        sb.sh_backend(&format!("set -e\n{}", down.stdout)).ok();
        assert!(sb.mounts().is_empty());
    });
}

fn readonly_layer(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.conf(&jlayers_tests::SCENE_CONF.replace("mode   = \"shared\"", "mode   = \"readonly\""));
        sb.run("jmount", &["j1"]).ok();
        let e = fs::write(sb.path("j1/usr/ports/distfiles/x"), "").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        sb.run("jmount", &["j1"]).ok();
        assert_eq!(sb.mounts().len(), 3);
        sb.run("junmount", &["j1"]).ok();
        assert!(sb.mounts().is_empty());
    });
}

fn busy_mount(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.run("jmount", &["j1"]).ok();
        // A process with its working directory inside holds the union busy.
        let user = || {
            std::process::Command::new("sleep")
                .arg("30")
                .current_dir(sb.path("j1/usr/ports/editors"))
                .spawn()
                .unwrap()
        };
        let mut busy = user();
        let o = sb.run("junmount", &["j1"]);
        o.code(75)
            .err_has("busy")
            .err_has(&format!("held by pid {} sleep (cwd)", busy.id()));
        busy.kill().unwrap();
        busy.wait().unwrap();
        sb.run("junmount", &["j1"]).ok();
        assert!(sb.mounts().is_empty());
        // -f detaches even while busy.
        sb.run("jmount", &["j1"]).ok();
        let mut busy = user();
        sb.run("junmount", &["-f", "j1"]).ok();
        assert!(sb.mounts().is_empty());
        busy.kill().unwrap();
        busy.wait().unwrap();
    });
}

fn awkward_paths(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        // Something with a non-UTF-8 name is mounted elsewhere in the table.
        // (On a FreeBSD host without the space: mount -p does not escape it, and
        // the harness reads the table to clean up.)
        let name: &[u8] = if jlayers_tests::SIMULATED {
            b"odd\xff name"
        } else {
            b"odd\xffname"
        };
        let odd = sb
            .dir
            .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name));
        fs::create_dir_all(&odd).unwrap();
        sb.tmpfs(&odd);
        if b == Backend::FreeBsd {
            // FreeBSD refuses white space in paths (mount -p cannot carry it).
            sb.conf(&jlayers_tests::SCENE_CONF.replace("@T/j1", "@T/j 1"));
            sb.run("jmount", &["j1"]).code(78).err_has("white space");
            // The file is refused as a whole: j2's paths are fine.
            sb.run("jmount", &["j2"])
                .code(78)
                .err_has("jail j1: path with white space");
            sb.conf(jlayers_tests::SCENE_CONF);
            sb.run("jmount", &["j1"]).ok();
            sb.run("junmount", &["j1"]).ok();
            return;
        }
        let weird = "jail with space\ttab\nnewline,comma:colon\\back";
        fs::create_dir_all(sb.path(weird).join("usr")).unwrap();
        let escaped = weird
            .replace('\\', "\\\\")
            .replace('\t', "\\t")
            .replace('\n', "\\n");
        sb.conf(&jlayers_tests::SCENE_CONF.replace("@T/j1", &format!("@T/{escaped}")));
        sb.run("jmount", &["j1"]).ok();
        assert_union_stack(sb, &format!("{weird}/usr/ports"), "j1");
        fs::write(sb.path(weird).join("usr/ports/new"), "x").unwrap();
        assert!(sb.path("upper/j1/ports/new").is_file());
        sb.run("jmount", &["j1"]).ok();
        assert_eq!(sb.mounts().len(), 4);
        // The -n plan, as sh reads it, is exactly the commands meant: the path with
        // its space, tab, newline, comma, colon and backslash is one word each time.
        let plan = sb.run("junmount", &["-n", "j1"]);
        let words = sb.sh(&format!(
            "umount() {{ printf 'umount|'; for w; do printf '%s|' \"$w\"; done; echo; }}\n{}",
            plan.stdout
        ));
        let t = sb.path(weird).join("usr/ports");
        let want = format!(
            "umount|{0}/distfiles|\numount|{0}|\numount|{0}|\n",
            t.display()
        );
        assert_eq!(words.stdout, want, "-n plan:\n{}", plan.stdout);
        sb.run("junmount", &["j1"]).ok();
        assert_eq!(sb.mounts().len(), 1, "only the tmpfs is left");
    });
}

/// A busy unmount names what holds it: a process in the jail with its working
/// directory below the target, by pid, command and jail.
fn busy_unmount_names_its_holders(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        let root = sb.jail_root("j1", &["sh", "sleep"]);
        sb.run("jmount", &["j1"]).ok();
        // The jail the holder runs in: on Linux the chroot j1; on FreeBSD another
        // jail on the same root, running (stopping j1 would end its processes).
        let jail = match b {
            Backend::Linux => "j1",
            Backend::FreeBsd => "j1holder",
        };
        let mut c = match b {
            Backend::Linux => {
                let mut c = std::process::Command::new("chroot");
                c.arg(&root);
                c
            }
            Backend::FreeBsd => {
                if jlayers_tests::SIMULATED {
                    std::fs::write(sb.path("sim-state/jails/j1holder"), root.to_str().unwrap())
                        .unwrap();
                    sb.sh_backend("service jail onestart j1holder").ok();
                } else {
                    let r = root.display();
                    sb.sh_backend(&format!("jail -c name={jail} path={r} persist"))
                        .ok();
                }
                let mut c = std::process::Command::new("jexec");
                sb.backend_env(&mut c);
                c.arg(jail);
                c
            }
        };
        let mut holder = c
            .args([
                "/bin/sh",
                "-c",
                "cd /usr/ports && echo > /ready && exec sleep 30",
            ])
            .spawn()
            .unwrap();
        // Wait until it sits below the target.
        let t = std::time::Instant::now();
        while !root.join("ready").exists() && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let o = sb.run("junmount", &["j1"]);
        let pid = holder.id();
        o.code(75)
            .err_has(&format!("held by pid {pid} sleep (cwd; jail {jail})"));
        holder.kill().unwrap();
        holder.wait().unwrap();
        sb.run("junmount", &["j1"]).ok();
        assert!(sb.mounts().is_empty());
    });
}

/// `upper_fs = "tmpfs"`: jmount mounts a tmpfs for the upper before the stack,
/// junmount removes it after, so nothing the jail wrote survives; `-n` prints it,
/// a failed jmount takes it back, a nested layer works over it, jclean refuses it
/// while mounted and finds nothing after.
fn tmpfs_uppers(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        let conf = jlayers_tests::SCENE_CONF.replace(
            "[jail.j1]\nroot = \"@T/j1\"\n",
            "[jail.j1]\nroot = \"@T/j1\"\nupper_fs = \"tmpfs\"\nupper_size = \"64m\"\n",
        );
        sb.conf(&conf);
        let plan = sb.run("jmount", &["-n", "j1"]);
        plan.ok();
        let first_mount = plan
            .stdout
            .lines()
            .find(|l| l.contains("mount"))
            .unwrap_or_default();
        assert!(
            first_mount.contains("-t tmpfs -o mode=0700,size=64m tmpfs"),
            "the tmpfs first:\n{}",
            plan.stdout
        );
        assert!(sb.mounts().is_empty(), "-n changes nothing");

        sb.run("jmount", &["j1"]).ok();
        assert_eq!(sb.mounts_at("upper/j1/ports"), ["tmpfs"]);
        let j = sb.path("j1/usr/ports");
        fs::write(j.join("built"), "x").unwrap();
        fs::write(j.join("distfiles/fetched"), "y").unwrap();
        assert!(!sb.path("ports/built").exists(), "copy-on-write");
        assert!(
            sb.path("distfiles/fetched").is_file(),
            "the nested shared layer"
        );
        let upper = "upper/j1/ports/upper";
        assert!(sb.path(upper).join("built").is_file());
        sb.run("jclean", &["j1"])
            .code(75)
            .err_has("jclean: j1: ports: ")
            .err_has("nothing deleted (junmount it first)");
        sb.run("jmount", &["j1"]).ok();
        assert_eq!(sb.mounts().len(), 4, "idempotent");

        sb.run("junmount", &["j1"]).ok();
        assert!(sb.mounts().is_empty());
        assert!(
            !sb.path(upper).join("built").exists(),
            "nothing survives junmount"
        );
        // The upper went with its tmpfs: no path to report.
        let o = sb.run("jclean", &["-b", "j1"]);
        o.ok();
        assert_eq!(o.stdout, "");

        // A failure after the tmpfs is mounted takes it back with the rest.
        fs::write(
            sb.path("ports/distfiles"),
            "a file where a mount point goes",
        )
        .unwrap();
        sb.run("jmount", &["j1"]).code(73).err_has(&format!(
            "jmount: j1: distfiles: {} exists and is not a directory",
            sb.path("j1/usr/ports/distfiles").display()
        ));
        assert!(
            sb.mounts().is_empty(),
            "rolled back: {:?}",
            sb.mounts_at("upper/j1/ports")
        );
        fs::remove_file(sb.path("ports/distfiles")).unwrap();
        sb.run("jmount", &["j1"]).ok();
        assert!(!j.join("built").exists(), "a fresh upper");
        sb.run("junmount", &["j1"]).ok();
    });
}

/// junmount is all or nothing per jail: a held target refuses the whole jail
/// before anything is unmounted (the nested distfiles layer, which is free, stays
/// too); an unmount that fails busy all the same (here a mount below the target,
/// which no process holds) puts back what the run took down. The `--json`
/// records say what changed, then the error.
fn junmount_all_or_nothing(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.run("jmount", &["j1"]).ok();
        let before = sb.mounts().len();
        assert_eq!(before, 3);
        let mut busy = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(sb.path("j1/usr/ports/editors"))
            .spawn()
            .unwrap();
        let o = sb.run("junmount", &["--json", "j1"]);
        o.code(75)
            .err_has(&format!("held by pid {} sleep (cwd)", busy.id()))
            .err_has("nothing unmounted");
        assert_eq!(sb.mounts().len(), before, "nothing of j1 unmounted");
        let v = jlayers_tests::json_lines(&o.stdout);
        assert_eq!(v.len(), 3, "{}", o.stdout);
        assert_eq!(v[0]["changed"], false);
        assert_eq!(v[1]["changed"], false);
        assert_eq!(v[2]["exit"], 75);
        busy.kill().unwrap();
        busy.wait().unwrap();

        // Busy with no process to find (a file of it in flight in a socket):
        // distfiles comes off, ports fails, and distfiles is mounted again.
        let held = in_flight(&sb.path("j1/usr/ports/editors/vim/Makefile"));
        let o = sb.run("junmount", &["--json", "j1"]);
        o.code(75)
            .err_has("busy")
            .err_has("mounted again what this run took down (distfiles)");
        assert_eq!(sb.mounts_at("j1/usr/ports/distfiles").len(), 1);
        assert_eq!(sb.mounts_at("j1/usr/ports").len(), 2);
        let v = jlayers_tests::json_lines(&o.stdout);
        assert_eq!(v.len(), 3, "{}", o.stdout);
        assert_eq!(v[0]["layer"], "distfiles");
        assert_eq!(v[0]["changed"], true);
        let actions = jlayers_tests::json_strs(&v[0]["mounts"], "action");
        assert_eq!(actions, ["unmount", "mount"]);
        assert_eq!(v[1]["layer"], "ports");
        assert_eq!(v[1]["changed"], false);
        assert_eq!(v[2]["exit"], 75);
        drop(held);
        sb.run("junmount", &["j1"]).ok();
        assert!(sb.mounts().is_empty());
    });
}

/// Hold the file at `path` open with no process showing it: its descriptor in
/// flight in a unix socket (sent, never received), which keeps its mount busy
/// while no /proc/PID/fd or fstat line names it. Dropping the pair lets go.
fn in_flight(path: &std::path::Path) -> [std::os::fd::OwnedFd; 2] {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let file = fs::File::open(path).unwrap();
    let mut raw = [0; 2];
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: socketpair writes two descriptors into the array it is given.
    let made = unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, raw.as_mut_ptr()) };
    assert_eq!(made, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: two fresh descriptors that nothing else owns.
    let pair = unsafe { [OwnedFd::from_raw_fd(raw[0]), OwnedFd::from_raw_fd(raw[1])] };
    let int = std::mem::size_of::<libc::c_int>() as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(int) } as usize;
    let mut control = vec![0u8; space];
    let mut byte = [b'x'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data; all zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer has room for one header and one int, which
    // CMSG_FIRSTHDR and CMSG_DATA point into; the data may be unaligned.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(int) as _;
        std::ptr::write_unaligned(
            libc::CMSG_DATA(cmsg).cast::<libc::c_int>(),
            file.as_raw_fd(),
        );
    }
    // SAFETY: msg and everything it points to live until the call returns.
    let sent = unsafe { libc::sendmsg(pair[0].as_raw_fd(), &msg, 0) };
    assert_eq!(sent, 1, "sendmsg: {}", std::io::Error::last_os_error());
    drop(file);
    pair
}

/// The jail renames `usr` (above j1's targets) while its layers are mounted:
/// junmount must not say "not mounted" and leave them (75, naming where they
/// are, nothing unmounted), nor jclean prune the upper under the live union;
/// moved back, junmount takes them down. Linux only: Linux's mount table names
/// a mount point by its path now, FreeBSD's statfs(2) by the path it was
/// mounted on (f_mntonname is not updated by a rename), which the simulation
/// does not model.
#[cfg(target_os = "linux")]
#[test]
fn moved_stack_refused_not_forgotten() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        sb.run("jmount", &["j1"]).ok();
        let before = sb.mounts().len();
        fs::write(sb.path("j1/usr/ports/made-in-jail"), "x").unwrap();
        fs::rename(sb.path("j1/usr"), sb.path("j1/usr.x")).unwrap();
        let moved = sb.path("j1/usr.x/ports");
        sb.run("junmount", &["j1"])
            .code(75)
            .err_has(&format!("its union is mounted on {}", moved.display()))
            .err_has("nothing unmounted");
        assert_eq!(sb.mounts().len(), before, "{:?}", sb.mounts());
        sb.run("jclean", &["j1"])
            .code(75)
            .err_has("nothing deleted");
        assert!(sb.path("upper/j1/ports/made-in-jail").is_file());
        fs::rename(sb.path("j1/usr.x"), sb.path("j1/usr")).unwrap();
        sb.run("junmount", &["j1"]).ok();
        assert!(sb.mounts().is_empty(), "{:?}", sb.mounts());
    });
}
