//! jclean with real trees, mounts and signals, each test in its own namespace.
// The tests of the Linux backend run on a Linux host only; on FreeBSD their helpers
// are left unused.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use jlayers_tests::{Backend, Sandbox, sandbox};

/// Files in a canary dir outside every upper, with their contents.
fn canary(sb: &Sandbox) -> std::path::PathBuf {
    let c = sb.path("canary");
    fs::create_dir_all(c.join("sub")).unwrap();
    fs::write(c.join("precious"), "keep me").unwrap();
    fs::write(c.join("sub/precious"), "keep me too").unwrap();
    c
}

#[track_caller]
fn assert_canary(c: &Path) {
    assert_eq!(fs::read_to_string(c.join("precious")).unwrap(), "keep me");
    assert_eq!(
        fs::read_to_string(c.join("sub/precious")).unwrap(),
        "keep me too"
    );
}

fn entries(p: &Path) -> usize {
    fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

fn lines(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn symlinks_are_never_followed() {
    sandbox(Backend::Linux, |sb| {
        let up = sb.scene_upper(&[]);
        let c = canary(sb);
        fs::create_dir_all(up.join("a/b")).unwrap();
        symlink(&c, up.join("top-link")).unwrap();
        symlink(c.join("precious"), up.join("a/file-link")).unwrap();
        symlink(&c, up.join("a/b/nested-link")).unwrap();
        symlink("/nonexistent/dangling", up.join("a/dangling")).unwrap();
        // Names need not be UTF-8.
        let odd = std::ffi::OsStr::from_bytes(b"a/\xff\xfe-not-utf8");
        fs::write(up.join(odd), "x").unwrap();
        let o = sb.run("jclean", &["-b", "j1"]);
        o.ok();
        assert_canary(&c);
        assert_eq!(entries(&up), 0);
        assert_eq!(
            lines(&o.stdout)[0][2],
            "5",
            "four links and a file removed: {}",
            o.stdout
        );
    });
}

#[cfg(target_os = "linux")]
#[test]
fn whiteouts_and_opaque_dirs_go_and_the_tree_is_pristine_again() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        sb.run("jmount", &["j1"]).ok();
        let j = sb.path("j1/usr/ports");
        fs::remove_file(j.join("Mk/bsd.port.mk")).unwrap();
        fs::remove_dir_all(j.join("editors")).unwrap();
        fs::create_dir_all(j.join("editors/new")).unwrap(); // opaque over the lower dir
        fs::write(j.join("editors/new/x"), "x").unwrap();
        sb.run("junmount", &["j1"]).ok();
        let up = sb.path("upper/j1/ports");
        assert!(entries(&up) > 0);
        let meta = fs::metadata(&up).unwrap();
        sb.run("jclean", &["j1"]).ok();
        assert_eq!(entries(&up), 0);
        let after = fs::metadata(&up).unwrap();
        assert_eq!(
            (after.uid(), after.gid(), after.mode()),
            (meta.uid(), meta.gid(), meta.mode())
        );
        sb.run("jmount", &["j1"]).ok();
        assert!(j.join("Mk/bsd.port.mk").is_file());
        assert!(j.join("editors/vim/Makefile").is_file());
        assert!(!j.join("editors/new").exists());
        sb.run("junmount", &["j1"]).ok();
    });
}

#[cfg(target_os = "linux")]
#[test]
fn owner_and_mode_kept() {
    sandbox(Backend::Linux, |sb| {
        let up = sb.scene_upper(&[("d/f", "x")]);
        std::os::unix::fs::chown(&up, Some(1234), Some(5678)).unwrap();
        fs::set_permissions(&up, fs::Permissions::from_mode(0o2751)).unwrap();
        sb.run("jclean", &["j1"]).ok();
        let m = fs::metadata(&up).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 5678, 0o2751));
        assert_eq!(entries(&up), 0);
    });
}

#[cfg(target_os = "linux")]
#[test]
fn mount_inside_upper_is_skipped_and_reported() {
    sandbox(Backend::Linux, |sb| {
        let up = sb.scene_upper(&[("junk", "x")]);
        fs::create_dir(up.join("mnt")).unwrap();
        let c = canary(sb);
        sb.sh(&format!(
            "mount --bind {} {}",
            c.display(),
            up.join("mnt").display()
        ))
        .ok();
        // Left behind means not done: exit 69, naming what was left, even with -q.
        let o = sb.run("jclean", &["-q", "j1"]);
        o.code(69)
            .err_has("mnt: another file system is mounted here; skipped")
            .err_has("not emptied, 1 entry left");
        assert_canary(&c);
        assert!(!up.join("junk").exists());
        // A tmpfs (another device) as well.
        sb.sh(&format!(
            "umount {0} && mount -t tmpfs t {0} && touch {0}/t",
            up.join("mnt").display()
        ))
        .ok();
        sb.run("jclean", &["j1"]).code(69).err_has("skipped");
        assert!(up.join("mnt/t").exists());
    });
}

#[cfg(target_os = "linux")]
#[test]
fn mounted_layer_refused_nothing_deleted() {
    mounted_layer_refused_on(Backend::Linux);
}

#[test]
fn mounted_layer_refused_nothing_deleted_freebsd_sim() {
    mounted_layer_refused_on(Backend::FreeBsd);
}

fn mounted_layer_refused_on(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        sb.run("jmount", &["j1"]).ok();
        fs::write(sb.path("j1/usr/ports/new"), "x").unwrap();
        let o = sb.run("jclean", &["j1", "j2"]);
        o.code(75)
            .err_has("jclean: j1: ports: ")
            .err_has("nothing deleted (junmount it first)");
        assert!(sb.path("upper/j1/ports/new").is_file());
        assert_eq!(
            lines(&o.stdout).len(),
            1,
            "j2 is still cleaned: {}",
            o.stdout
        );
        // Looking only reads the upper: allowed on a mounted layer, and says so.
        for (look, want) in [
            (&["-n", "-b", "j1"][..], "j1\tports\t1\t"),
            (&["--list", "j1"][..], "j1\tports\tnew\t"),
        ] {
            let o = sb.run("jclean", look);
            o.ok().err_has("only read, nothing deleted");
            assert!(
                o.stdout.lines().any(|l| l.starts_with(want)),
                "{look:?}: {}",
                o.stdout
            );
        }
        let o = sb.run("jclean", &["-n", "-b", "--json", "j1"]);
        o.ok();
        assert!(o.stdout.contains("\"changed\":false"), "{}", o.stdout);
        assert!(sb.path("upper/j1/ports/new").is_file());
        sb.run("jclean", &["--only", "new", "j1"])
            .code(75)
            .err_has("jclean: j1: ports: ")
            .err_has("nothing deleted (junmount it first)");
        assert!(sb.path("upper/j1/ports/new").is_file());
        sb.run("junmount", &["j1"]).ok();
        sb.run("jclean", &["j1"]).ok();
        assert!(!sb.path("upper/j1/ports/new").exists());
    });
}

#[cfg(target_os = "linux")]
#[test]
fn keep_and_older_than() {
    sandbox(Backend::Linux, |sb| {
        let up = sb.scene_upper(&[
            ("distfiles/sub/a.tar.gz", "a"),
            ("editors/vim/work/.build_done.vim", "b"),
            ("old/stale", "c"),
            ("fresh", "d"),
        ]);
        sb.sh(&format!(
            "touch -d '10 days ago' {0}/old/stale {0}/old",
            up.display()
        ))
        .ok();
        let o = sb.run("jclean", &["--older-than", "7d", "j1"]);
        o.ok();
        assert!(!up.join("old").exists(), "old dir and its old file removed");
        assert!(up.join("fresh").exists() && up.join("editors/vim/work/.build_done.vim").exists());
        assert_eq!(lines(&o.stdout)[0][2], "1");
        sb.run("jclean", &["--keep", "distfiles/**", "j1"]).ok();
        assert!(up.join("distfiles/sub/a.tar.gz").is_file());
        assert!(!up.join("editors").exists() && !up.join("fresh").exists());
        sb.run("jclean", &["--keep", "[", "j1"])
            .code(64)
            .err_has("--keep [");
        sb.run("jclean", &["--older-than", "7y", "j1"])
            .code(64)
            .err_has("jclean: invalid value '7y' for '--older-than <AGE>': \"7y\": unknown unit");
        sb.run("jclean", &["-j", "0", "j1"]).code(64).err_has(
            "jclean: invalid value '0' for '--jobs <N>': \"0\": give a number from 1 to 256",
        );
    });
}

/// A duration without a unit is refused, naming the units: `--older-than 7` meant
/// 7 seconds and pruned nearly everything of an administrator who meant days.
#[cfg(target_os = "linux")]
#[test]
fn durations_need_a_unit() {
    sandbox(Backend::Linux, |sb| {
        let up = sb.scene_upper(&[("work", "x")]);
        for age in ["7", "0", "90"] {
            let o = sb.run("jclean", &["--older-than", age, "j1"]);
            o.code(64).err_has("give a unit: s, m, h, d or w");
            assert_eq!(o.stderr.lines().count(), 1, "one line: {}", o.stderr);
        }
        assert!(up.join("work").exists(), "nothing pruned");
        sb.run("jupdate", &["--timeout", "30", "j1", "--", "true"])
            .code(64)
            .err_has("give a unit: s, m, h, d or w (e.g. 30s for 30 seconds)");
        sb.run("jupdate", &["--log-dir", "logs", "j1", "--", "true"])
            .code(64)
            .err_has("\"logs\" is not an absolute path (as log_dir in the configuration)");
        assert!(!sb.path("logs").exists() && !up.join("logs").exists());
        sb.run("jclean", &["-n", "--older-than", "7d", "j1"]).ok();
    });
}

/// A ports-like upper: FILES files of varied sizes in nested work dirs.
fn build_tree(root: &Path, ports: usize) {
    for p in 0..ports {
        let w = root.join(format!("cat{}/port{p}/work/src/lib", p % 7));
        fs::create_dir_all(&w).unwrap();
        for f in 0..20 {
            fs::write(w.join(format!("f{f}.c")), vec![b'x'; (f * 1500) % 9000]).unwrap();
        }
        fs::write(
            root.join(format!("cat{}/port{p}/work/.build_done.port{p}", p % 7)),
            "",
        )
        .unwrap();
    }
}

#[cfg(target_os = "linux")]
#[test]
fn report_matches_find_and_du_with_total() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        let (u1, u2) = (sb.path("upper/j1/ports"), sb.path("upper/j2/ports"));
        build_tree(&u1, 30);
        build_tree(&u2, 5);
        fs::hard_link(u1.join("cat0/port0/work/src/lib/f3.c"), u1.join("hardlink")).unwrap();
        let expect = |u: &Path| {
            let files = sb
                .sh(&format!(
                    "find {} -mindepth 1 ! -type d | wc -l",
                    u.display()
                ))
                .stdout
                .trim()
                .to_string();
            let du = sb.sh(&format!(
                "echo $(( $(du -s -B1 {0} | cut -f1) - $(stat -c '%b*%B' {0}) ))",
                u.display()
            ));
            (files, du.stdout.trim().to_string())
        };
        let (f1, s1) = expect(&u1);
        let (f2, s2) = expect(&u2);
        let dry = sb.run("jclean", &["-n", "-b", "--all"]);
        dry.ok();
        assert!(u1.join("hardlink").exists(), "-n deletes nothing");
        let o = sb.run("jclean", &["-b", "--all"]);
        o.ok();
        assert_eq!(o.stdout, dry.stdout, "-n counts what a run frees");
        let want = format!(
            "j1\tports\t{f1}\t{s1}\t{}\nj2\tports\t{f2}\t{s2}\t{}\ntotal\t-\t{}\t{}\t-\n",
            u1.display(),
            u2.display(),
            f1.parse::<u64>().unwrap() + f2.parse::<u64>().unwrap(),
            s1.parse::<u64>().unwrap() + s2.parse::<u64>().unwrap()
        );
        assert_eq!(o.stdout, want);
        assert_eq!(entries(&u1) + entries(&u2), 0);
        // Human sizes by default; one upper: no total line.
        build_tree(&u1, 1);
        let h = sb.run("jclean", &["j1"]);
        assert!(h.stdout.contains(" KiB\t"), "{}", h.stdout);
        assert_eq!(h.stdout.lines().count(), 1);
    });
}

#[cfg(target_os = "linux")]
#[test]
fn sigint_stops_within_a_second_with_a_report() {
    sandbox(Backend::Linux, |sb| {
        let up = sb.scene_upper(&[]);
        build_tree(&up, 2500); // 52,500 files
        let (out, took) = sb.signal_jclean(
            &up,
            1000,
            &["-b", "-j", "1", "j1"],
            nix::sys::signal::Signal::SIGINT,
        );
        assert!(took < Duration::from_secs(1), "stopped in {took:?}");
        jlayers_tests::assert_exit(&out, 130);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let rec = lines(&stdout);
        assert_eq!(rec.len(), 1, "{stdout}");
        let freed: u64 = rec[0][2].parse().unwrap();
        assert!(freed > 0 && freed < 52_500, "partial: {freed}");
        let left = sb
            .sh(&format!("find {} ! -type d | wc -l", up.display()))
            .stdout
            .trim()
            .parse::<u64>()
            .unwrap();
        assert_eq!(
            left + freed,
            52_500,
            "the report says exactly what was removed"
        );
    });
}

#[cfg(target_os = "linux")]
#[test]
fn racing_symlink_swaps_never_reach_the_canary() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        let c = canary(sb);
        let up = sb.path("upper/j1/ports");
        for round in 0..40 {
            for d in 0..8 {
                let dir = up.join(format!("d{d}/x"));
                fs::create_dir_all(&dir).unwrap();
                for f in 0..40 {
                    fs::write(dir.join(format!("f{f}")), "").unwrap();
                }
            }
            let mut child = sb
                .tool("jclean", &["j1"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            // Swap directories for symlinks to the canary while jclean runs.
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                for d in 0..8 {
                    let x = up.join(format!("d{d}/x"));
                    let moved = up.join(format!("d{d}/x.moved"));
                    if fs::rename(&x, &moved).is_ok() {
                        let _ = symlink(&c, &x);
                    }
                }
            }
            child.wait().unwrap();
            assert_canary(&c);
            assert_eq!(entries(&c), 2, "round {round}");
            // What the race left behind is cleaned next time.
            sb.run("jclean", &["j1"]).ok();
            assert_canary(&c);
        }
    });
}

/// `jclean --list`: every entry of the upper with what it is to the host tree; and
/// `--only stale` prunes just the copies the host has changed since, so that the
/// jail sees the new host file and keeps its own work.
fn what_each_jail_changed(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        for (f, text) in [
            ("ports/Mk/gone.mk", "# the jail deletes this\n"),
            ("ports/Mk/stale.mk", "# old upstream\n"),
            ("ports/lang/perl/Makefile", "PORTNAME=perl\n"),
        ] {
            fs::create_dir_all(sb.path(f).parent().unwrap()).unwrap();
            fs::write(sb.path(f), text).unwrap();
        }
        sb.run("jmount", &["j1"]).ok();
        let j = sb.path("j1/usr/ports");
        fs::write(j.join("new-file"), "mine").unwrap();
        fs::write(j.join("Mk/bsd.port.mk"), "# changed in the jail\n").unwrap();
        // A mode change copies the file up unchanged.
        for f in ["editors/vim/Makefile", "Mk/stale.mk"] {
            fs::set_permissions(j.join(f), fs::Permissions::from_mode(0o600)).unwrap();
        }
        fs::remove_file(j.join("Mk/gone.mk")).unwrap();
        fs::remove_dir_all(j.join("lang")).unwrap();
        fs::create_dir(j.join("lang")).unwrap();
        fs::create_dir_all(j.join("editors/vim/work/a")).unwrap();
        sb.run("junmount", &["j1"]).ok();
        // Upstream changes a file the jail holds a copy of.
        std::thread::sleep(Duration::from_millis(20));
        fs::write(sb.path("ports/Mk/stale.mk"), "# new upstream\n").unwrap();

        let up = sb.path("upper/j1/ports");
        let o = sb.run("jclean", &["--list", "-b", "j1"]);
        o.ok();
        let mut got: Vec<(String, String)> = lines(&o.stdout)
            .into_iter()
            .map(|f| {
                assert_eq!((f[0].as_str(), f[1].as_str()), ("j1", "ports"), "{f:?}");
                (f[4].clone(), f[2].clone())
            })
            .collect();
        got.sort();
        let want = [
            ("Mk", "dir"),
            ("Mk/bsd.port.mk", "modified"),
            ("Mk/gone.mk", "whiteout"),
            ("Mk/stale.mk", "stale"),
            // Not the nested layer's mount point, made through the union. The
            // parents copied up for a change, told apart from the jail's own.
            ("editors", "dir"),
            ("editors/vim", "dir"),
            // Its mode changed: not a copy of the host's any more.
            ("editors/vim/Makefile", "modified"),
            ("editors/vim/work", "newdir"),
            ("editors/vim/work/a", "newdir"),
            ("lang", "opaque"),
            ("new-file", "new"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want, "{}", o.stdout);
        assert!(up.join("new-file").exists(), "--list deletes nothing");
        // --absolute: the path in the upper dir.
        let o = sb.run("jclean", &["--list", "--absolute", "j1"]);
        let first = &lines(&o.ok().stdout)[0];
        assert_eq!(Path::new(&first[4]), up.join("Mk"), "{}", o.stdout);
        sb.run("jclean", &["--absolute", "j1"])
            .code(64)
            .err_has("--list");

        sb.run("jclean", &["--only", "dir", "j1"]).code(64).err_has(
            "jclean: invalid value 'dir' for '--only <KIND>': dir: directories go with jclean as a whole",
        );
        let o = sb.run("jclean", &["--only", "stale", "-b", "j1"]);
        o.ok();
        assert_eq!(lines(&o.stdout)[0][2], "1", "{}", o.stdout);
        assert!(!up.join("Mk/stale.mk").exists());
        sb.run("jmount", &["j1"]).ok();
        assert_eq!(
            fs::read_to_string(j.join("Mk/stale.mk")).unwrap(),
            "# new upstream\n"
        );
        assert_eq!(
            fs::read_to_string(j.join("Mk/bsd.port.mk")).unwrap(),
            "# changed in the jail\n"
        );
        assert!(j.join("new-file").exists() && !j.join("Mk/gone.mk").exists());
        // Mounted: listing only reads, pruning by kind is refused.
        sb.run("jclean", &["--list", "j1"]).ok();
        sb.run("jclean", &["--only", "new", "j1"])
            .code(75)
            .err_has("jclean: j1: ports: ")
            .err_has("nothing deleted (junmount it first)");
        sb.run("junmount", &["j1"]).ok();
    });
}

/// The kinds tell the jail's own work from copies it never wrote: a line the jail
/// appended survives a host `touch` (conflict, kept by `--only stale`); a copy the
/// jail only touched the atime of goes once the host edits the file (stale); a
/// jail's chmod is modified.
fn kinds_keep_the_jails_own_work(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        for f in ["patched.mk", "touched.mk", "moded.mk", "same.mk"] {
            fs::write(sb.path(&format!("ports/Mk/{f}")), "# host\n").unwrap();
        }
        // Copy-up keeps the host's mtime; the copy's birth must come after it.
        std::thread::sleep(Duration::from_millis(50));
        sb.run("jmount", &["j1"]).ok();
        let j = sb.path("j1/usr/ports/Mk");
        sb.sh(&format!(
            "cd {} && echo '# local patch' >> patched.mk && touch -a touched.mk && \
             chmod 600 moded.mk && touch -a same.mk",
            j.display()
        ))
        .ok();
        sb.run("junmount", &["j1"]).ok();
        std::thread::sleep(Duration::from_millis(50));
        let host = sb.path("ports/Mk");
        sb.sh(&format!(
            "cd {} && touch patched.mk && echo '# host 2' > touched.mk",
            host.display()
        ))
        .ok();
        let up = sb.path("upper/j1/ports/Mk");
        let kinds = || -> Vec<(String, String)> {
            let o = sb.run("jclean", &["--list", "j1"]);
            o.ok();
            let mut got: Vec<(String, String)> = lines(&o.stdout)
                .into_iter()
                .filter_map(|f| {
                    let rel = Path::new(&f[4]).strip_prefix("Mk").ok()?;
                    (f[2] != "dir").then_some(())?;
                    Some((rel.to_string_lossy().into_owned(), f[2].clone()))
                })
                .collect();
            got.sort();
            got
        };
        let want = |w: &[(&str, &str)]| -> Vec<(String, String)> {
            w.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            kinds(),
            want(&[
                ("moded.mk", "modified"),
                ("patched.mk", "conflict"),
                ("same.mk", "copy"),
                ("touched.mk", "stale"),
            ])
        );
        let o = sb.run("jclean", &["--only", "stale", "-b", "j1"]);
        o.ok();
        assert_eq!(lines(&o.stdout)[0][2], "1", "{}", o.stdout);
        assert!(!up.join("touched.mk").exists());
        assert_eq!(
            fs::read_to_string(up.join("patched.mk")).unwrap(),
            "# host\n# local patch\n",
            "the jail's patch survives --only stale"
        );
        sb.run("jclean", &["--only", "conflict", "j1"]).ok();
        assert!(!up.join("patched.mk").exists());
        assert_eq!(
            kinds(),
            want(&[("moded.mk", "modified"), ("same.mk", "copy")])
        );
    });
}

jlayers_tests::on_both!(what_each_jail_changed, kinds_keep_the_jails_own_work);
