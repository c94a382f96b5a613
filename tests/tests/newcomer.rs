//! What a newcomer meets first: the scripts README's two commands run.

use std::path::{Path, PathBuf};
use std::process::Command;

fn ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `scripts/debian-root.sh --print-mirror` with apt's configuration in `apt`.
fn mirror(apt: &Path, over: Option<&str>) -> String {
    let mut cmd = Command::new(ws().join("scripts/debian-root.sh"));
    cmd.arg("--print-mirror")
        .env("JLAYERS_APT_DIR", apt)
        .env_remove("JLAYERS_DEBIAN_MIRROR");
    if let Some(over) = over {
        cmd.env("JLAYERS_DEBIAN_MIRROR", over);
    }
    let out = cmd.output().expect("run scripts/debian-root.sh");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The sandbox tests' Debian root comes from the archive the host's apt uses (a
/// host behind a local mirror or proxy reaches no other), in either of apt's
/// formats; security, updates and disabled entries are passed over; the variable
/// still wins. Neither README nor the script names a mirror host.
#[test]
fn debian_root_takes_the_hosts_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let apt = tmp.path();
    std::fs::create_dir_all(apt.join("sources.list.d")).unwrap();
    assert_eq!(mirror(apt, None), "(the default of debootstrap)");

    std::fs::write(
        apt.join("sources.list.d/debian.sources"),
        "Types: deb\nURIs: http://security.mirror.invalid/debian-security\n\
         Suites: bookworm-security\nComponents: main\n\n\
         Types: deb\nURIs: http://off.mirror.invalid/debian\nSuites: bookworm\n\
         Components: main\nEnabled: no\n\n\
         Types: deb deb-src\n# the local one\nURIs: http://local.mirror.invalid/debian\n\
         Suites: bookworm bookworm-updates\nComponents: main\n",
    )
    .unwrap();
    assert_eq!(mirror(apt, None), "http://local.mirror.invalid/debian");

    std::fs::write(
        apt.join("sources.list"),
        "# deb http://commented.invalid/debian bookworm main\n\
         deb http://proxy.invalid:3142/debian-security bookworm-security main\n\
         deb [arch=amd64 signed-by=/k.gpg] http://proxy.invalid:3142/debian bookworm main\n",
    )
    .unwrap();
    assert_eq!(mirror(apt, None), "http://proxy.invalid:3142/debian");
    assert_eq!(
        mirror(apt, Some("http://chosen.invalid/debian")),
        "http://chosen.invalid/debian"
    );

    for file in ["README.md", "scripts/debian-root.sh"] {
        let text = std::fs::read_to_string(ws().join(file)).unwrap();
        assert!(
            !text.contains("deb.debian.org"),
            "{file} names a mirror host"
        );
    }
}
