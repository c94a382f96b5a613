//! A jail is changed all or nothing: when jmount refuses or fails a jail, what
//! that run made for it goes again, the mounts and the directories (upper dirs,
//! work dirs, targets), while what other jails of the run rely on stays.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::fs;
use std::os::unix::fs::symlink;

use jlayers_tests::{Backend, sandbox};

use jlayers_tests::on_both;

on_both!(
    refused_target_takes_back_its_dirs,
    failed_jail_keeps_what_others_use,
    later_layer_fails_takes_back_the_targets,
);

/// j1's ports target is a link the jail planted: refused (77), and the upper
/// dir, its work dir and the dirs above them that this run made are gone again.
fn refused_target_takes_back_its_dirs(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        fs::create_dir_all(sb.path("host-secret")).unwrap();
        symlink(sb.path("host-secret"), sb.path("j1/usr/ports")).unwrap();
        sb.run("jmount", &["j1"])
            .code(77)
            .err_has("usr/ports is a symbolic link");
        assert!(sb.mounts().is_empty(), "{:?}", sb.mounts());
        for dir in ["upper/j1/ports", "upper/j1/ports.work", "upper/j1", "upper"] {
            assert!(!sb.path(dir).exists(), "{dir} left behind");
        }
        assert_eq!(fs::read_dir(sb.path("host-secret")).unwrap().count(), 0);
        // The control: without the link the same run makes them and mounts.
        fs::remove_file(sb.path("j1/usr/ports")).unwrap();
        sb.run("jmount", &["j1"]).ok();
        assert!(sb.path("upper/j1/ports").is_dir());
        assert_eq!(sb.mounts_at("j1/usr/ports").len(), 2);
        sb.run("junmount", &["j1"]).ok();
    });
}

/// With --all, j1 refused and j2 mounted: upper_root, which j2 uses, stays;
/// j1's own dirs go.
fn failed_jail_keeps_what_others_use(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        fs::create_dir_all(sb.path("host-secret")).unwrap();
        symlink(sb.path("host-secret"), sb.path("j1/usr/ports")).unwrap();
        sb.run("jmount", &["--all"]).code(77);
        assert!(!sb.path("upper/j1").exists(), "j1's upper dirs left behind");
        assert!(sb.path("upper/j2/ports").is_dir());
        assert_eq!(sb.mounts_at("j2/usr/ports").len(), 2);
        fs::write(sb.path("j2/usr/ports/new"), "x").unwrap();
        assert!(sb.path("upper/j2/ports/new").is_file());
        sb.run("junmount", &["--all"]).ok();
    });
}

/// The ports stack is mounted, then distfiles fails: the ports mounts go, and
/// the target dir this run made in the jail (usr/ports) too; a dir that held
/// something before the run (the upper, made by the test) stays.
fn later_layer_fails_takes_back_the_targets(b: Backend) {
    sandbox(b, |sb| {
        sb.scene();
        fs::create_dir_all(sb.path("upper/j1/ports")).unwrap();
        fs::write(sb.path("upper/j1/ports/distfiles"), "in the way").unwrap();
        sb.run("jmount", &["j1"])
            .code(73)
            .err_has("jmount: j1: distfiles: ");
        assert!(sb.mounts().is_empty(), "{:?}", sb.mounts());
        assert!(
            !sb.path("j1/usr/ports").exists(),
            "target made by the run left"
        );
        assert!(sb.path("j1/usr").is_dir(), "the jail's own dir taken");
        assert!(sb.path("upper/j1/ports/distfiles").is_file());
    });
}
