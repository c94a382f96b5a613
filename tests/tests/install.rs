//! What an administrator installs: `scripts/install.sh` (behind `make install`) puts
//! each file where hier(7) or the FHS expects it, the port's pkg-plist lists exactly
//! what it installs on FreeBSD, and the generated files in the repository (shell
//! completions, the port's Makefile.crates) are current.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use jlayers_tests::bin_dir;

fn ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every file below `dir`, relative to it.
fn files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

fn install(os: &str, dest: &Path) {
    let st = Command::new("sh")
        .arg(ws().join("scripts/install.sh"))
        .args(["-o", os, "-b"])
        .arg(bin_dir())
        .arg("-d")
        .arg(dest)
        .arg("/usr/local")
        .status()
        .unwrap();
    assert!(st.success(), "install.sh -o {os}");
}

#[test]
fn freebsd_layout_is_the_ports_plist() {
    let t = tempfile::tempdir().unwrap();
    install("freebsd", t.path());
    let root = t.path().join("usr/local");
    // The ports framework compresses man pages; @sample installs the sample.
    let got: BTreeSet<String> = files(&root)
        .into_iter()
        .map(|f| {
            if f.starts_with("share/man/") {
                format!("{f}.gz")
            } else {
                f
            }
        })
        .collect();
    let plist =
        std::fs::read_to_string(ws().join("freebsd/ports/sysutils/jlayers/pkg-plist")).unwrap();
    let want: BTreeSet<String> = plist
        .lines()
        .map(|l| l.strip_prefix("@sample ").unwrap_or(l).to_string())
        .collect();
    assert_eq!(got, want, "pkg-plist and install.sh -o freebsd disagree");
    // periodic(8) scripts: the PREFIX filled in, valid sh, off unless enabled.
    for p in ["450.jupdate", "460.jclean"] {
        let f = root.join("etc/periodic/weekly").join(p);
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("%%PREFIX%%") && text.contains("/usr/local/sbin/j"),
            "{p}"
        );
        let st = Command::new("sh").arg("-n").arg(&f).status().unwrap();
        assert!(st.success(), "sh -n {p}");
        let out = Command::new("/bin/sh")
            .arg(&f)
            .env("PATH", "/nonexistent")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{p} does nothing unless enabled"
        );
        assert!(out.stdout.is_empty(), "{p}");
    }
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("sbin/jmount"), 0o555);
    assert_eq!(mode("share/man/man8/jmount.8"), 0o444);
    // newsyslog.conf(5): jupdate's logs, a glob, nothing to signal.
    let conf = std::fs::read_to_string(root.join("etc/newsyslog.conf.d/jlayers.conf")).unwrap();
    let entries: Vec<Vec<&str>> = conf
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(entries.len(), 1, "{conf}");
    let e = &entries[0];
    // logfilename mode count size when flags (no owner:group, no pid file).
    assert_eq!(e.len(), 6, "{e:?}");
    assert_eq!(e[0], "/var/log/jlayers/*.log");
    assert!(e[1].len() == 3 && e[1].bytes().all(|b| (b'0'..=b'7').contains(&b)));
    assert!(e[2].parse::<u32>().is_ok() && (e[3] == "*" || e[3].parse::<u32>().is_ok()));
    assert!(e[4].starts_with('$') || e[4] == "*" || e[4].starts_with('@'));
    assert!(
        e[5].contains('G') && e[5].contains('N'),
        "glob, no signal: {e:?}"
    );
    assert_eq!(mode("etc/newsyslog.conf.d/jlayers.conf"), 0o644);
}

#[test]
fn linux_layout_follows_the_fhs() {
    let t = tempfile::tempdir().unwrap();
    install("linux", t.path());
    let got = files(&t.path().join("usr/local"));
    for f in [
        "sbin/jmount",
        "sbin/jupdate",
        "share/man/man8/jclean.8",
        "share/man/man5/jlayers.conf.5",
        "share/doc/jlayers/jlayers.conf.sample",
        "share/bash-completion/completions/jmount",
        "share/zsh/site-functions/_jclean",
        "share/fish/vendor_completions.d/jupdate.fish",
    ] {
        assert!(got.contains(f), "{f} not installed: {got:?}");
    }
    assert!(
        !got.iter().any(|f| f.starts_with("etc/")),
        "nothing in PREFIX/etc on Linux"
    );
    assert_eq!(got.len(), 4 + 5 + 1 + 12);
    // logrotate(8) reads /etc/logrotate.d whatever the PREFIX.
    let conf = std::fs::read_to_string(t.path().join("etc/logrotate.d/jlayers")).unwrap();
    let body: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(body.first(), Some(&"/var/log/jlayers/*.log {"), "{conf}");
    assert_eq!(body.last(), Some(&"}"), "{conf}");
    for d in &body[1..body.len() - 1] {
        let known = [
            "weekly",
            "rotate",
            "compress",
            "delaycompress",
            "missingok",
            "notifempty",
        ];
        let word = d.split_whitespace().next().unwrap();
        assert!(known.contains(&word), "unexpected directive {d:?}");
    }
    assert_eq!(
        files(&t.path().join("etc")).len(),
        1,
        "only logrotate.d/jlayers in /etc"
    );
}

#[test]
fn sample_configuration_is_valid() {
    use jlayers::config::{Config, Mode, Network, Upper};
    use jlayers::platform::Os;
    let text = std::fs::read_to_string(ws().join("examples/jlayers.conf.sample")).unwrap();
    // The sample with its commented settings and example jail switched on: the
    // defaults it shows commented out must be the defaults, and its jail valid.
    let on: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with("[jail.")
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        let k = k.trim_end();
                        !k.is_empty()
                            && k.bytes()
                                .all(|b| b.is_ascii_lowercase() || b"_.".contains(&b))
                    }) =>
            {
                rest
            }
            _ => l,
        })
        .fold(String::new(), |t, l| t + l + "\n");
    assert!(on.contains("\n[jail.server]\n"), "{on}");
    for os in [Os::FreeBsd, Os::Linux] {
        let cfg = Config::parse(&text, Path::new("jlayers.conf.sample"), os).unwrap();
        let all = Config::parse(&on, Path::new("jlayers.conf.sample"), os)
            .unwrap_or_else(|e| panic!("{os:?}: the sample's commented settings: {e:#}"));
        assert_eq!(cfg.upper_root, Path::new("/usr/local/var/jlayers"));
        let layers: Vec<_> = cfg
            .layers
            .iter()
            .map(|l| {
                (
                    l.name.as_str(),
                    l.source.as_path(),
                    l.target.as_path(),
                    l.mode,
                )
            })
            .collect();
        assert_eq!(
            layers,
            [
                (
                    "ports",
                    Path::new("/usr/ports"),
                    Path::new("usr/ports"),
                    Mode::Union
                ),
                (
                    "distfiles",
                    Path::new("/usr/ports/distfiles"),
                    Path::new("usr/ports/distfiles"),
                    Mode::Shared
                ),
            ]
        );
        assert!(cfg.jails.is_empty(), "the sample's jail is commented out");
        for c in [&cfg, &all] {
            assert_eq!(c.log_dir, Path::new("/var/log/jlayers"));
            assert_eq!(c.update, ["portmaster", "-a", "-G", "--no-confirm"]);
            assert_eq!(c.default_network, Network::None);
            assert_eq!(c.default_log_max, 256 << 20);
        }
        // The commented lock_dir is FreeBSD's default; Linux's is the one it names.
        let lock = if os == Os::Linux {
            "/run/jlayers"
        } else {
            "/var/run/jlayers"
        };
        assert_eq!(cfg.lock_dir, Path::new(lock), "{os:?}");
        assert_eq!(all.lock_dir, Path::new("/var/run/jlayers"));
        assert_eq!(all.layers[0].tmpfs, Some(Some("4g".into())));
        let [server] = &all.jails[..] else {
            panic!("{:?}", all.jails)
        };
        assert_eq!(server.name, "server");
        assert_eq!(server.root, Path::new("/usr/local/var/jails/192.168.0.100"));
        assert_eq!(server.layers, [0, 1]);
        assert_eq!(server.uppers[&0], Upper::InRoot("usr/tmp/foo".into()));
        assert_eq!(server.network, Some(Network::Host));
    }
}

#[test]
fn completions_are_current() {
    let t = tempfile::tempdir().unwrap();
    jlayers::cmd::write_completions(t.path()).unwrap();
    let repo = ws().join("completions");
    assert_eq!(files(t.path()), files(&repo));
    for f in files(t.path()) {
        assert!(
            std::fs::read(t.path().join(&f)).unwrap() == std::fs::read(repo.join(&f)).unwrap(),
            "completions/{f} is stale: cargo run --example completions -p jlayers -- completions"
        );
    }
    let bash = std::fs::read_to_string(repo.join("bash/jclean")).unwrap();
    assert!(bash.contains("--older-than") && bash.contains("--json"));
}

/// The packages of Cargo.lock that have a line starting with `key`, in the lock's
/// order: `name-version` and that line's quoted value.
fn lock_packages(key: &str) -> Vec<(String, String)> {
    let lock = std::fs::read_to_string(ws().join("Cargo.lock")).unwrap();
    let mut got = Vec::new();
    let (mut name, mut version) = (String::new(), String::new());
    for line in lock.lines() {
        let val = |l: &str| l.split('"').nth(1).unwrap_or_default().to_string();
        if line.starts_with("name = ") {
            name = val(line);
        } else if line.starts_with("version = ") {
            version = val(line);
        } else if line.starts_with(key) {
            got.push((format!("{name}-{version}"), val(line)));
        }
    }
    got
}

#[test]
fn ports_crates_are_cargo_lock() {
    let want: Vec<String> = lock_packages("source = \"registry+")
        .into_iter()
        .map(|(crate_, _)| crate_)
        .collect();
    let crates =
        std::fs::read_to_string(ws().join("freebsd/ports/sysutils/jlayers/Makefile.crates"))
            .unwrap();
    let got: Vec<String> = crates
        .split_whitespace()
        .filter(|w| *w != "CARGO_CRATES=" && *w != "\\")
        .map(String::from)
        .collect();
    assert_eq!(
        got, want,
        "Makefile.crates is stale: run scripts/ports-crates.sh"
    );
}

/// The port as the ports framework reads it: Makefile.crates included once (by
/// Mk/Uses/cargo.mk, never again by the Makefile), the tools stripped, and the
/// distinfo the release steps write (scripts/ports-distinfo.sh, `make makesum`'s
/// format): TIMESTAMP, then SHA256 and SIZE of the release tarball and of every
/// crate, in DISTFILES order, the crates' SHA256 those of Cargo.lock.
#[test]
fn port_makefile_and_distinfo() {
    let port = ws().join("freebsd/ports/sysutils/jlayers");
    let mk = std::fs::read_to_string(port.join("Makefile")).unwrap();
    assert!(
        !mk.lines()
            .any(|l| l.starts_with(".include") && l.contains("Makefile.crates")),
        "USES=cargo includes Makefile.crates already"
    );
    assert!(
        mk.contains("${STRIP_CMD} ${STAGEDIR}${PREFIX}/sbin/${t}")
            && mk.contains(".for t in jmount junmount jclean jupdate"),
        "the installed tools are stripped"
    );

    let t = tempfile::tempdir().unwrap();
    let tarball = t.path().join("jlayers-0.1.0.tar.gz");
    std::fs::write(&tarball, b"release tarball").unwrap();
    let out = t.path().join("distinfo");
    let st = Command::new("sh")
        .arg(ws().join("scripts/ports-distinfo.sh"))
        .arg("-o")
        .arg(&out)
        .arg(&tarball)
        .status()
        .unwrap();
    assert!(st.success(), "scripts/ports-distinfo.sh");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    let ts = lines.next().unwrap();
    assert!(
        ts.strip_prefix("TIMESTAMP = ")
            .is_some_and(|n| n.parse::<u64>().is_ok()),
        "{ts}"
    );
    let sums: std::collections::HashMap<String, String> =
        lock_packages("checksum = ").into_iter().collect();
    let crates = std::fs::read_to_string(port.join("Makefile.crates")).unwrap();
    let mut files = vec!["jlayers-0.1.0.tar.gz".to_string()];
    files.extend(
        crates
            .split_whitespace()
            .filter(|w| *w != "CARGO_CRATES=" && *w != "\\")
            .map(|c| format!("rust/crates/{c}.crate")),
    );
    for f in &files {
        let sha = lines.next().unwrap_or_default();
        let hex = sha
            .strip_prefix(&format!("SHA256 ({f}) = "))
            .unwrap_or_else(|| panic!("want SHA256 of {f}: {sha}"));
        assert!(
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{sha}"
        );
        if let Some(c) = f.strip_prefix("rust/crates/") {
            assert_eq!(
                Some(hex),
                sums.get(c.trim_end_matches(".crate")).map(|s| s.as_str()),
                "{f}"
            );
        }
        let size = lines.next().unwrap_or_default();
        assert!(
            size.strip_prefix(&format!("SIZE ({f}) = "))
                .is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n > 0)),
            "want SIZE of {f}: {size}"
        );
    }
    assert_eq!(lines.next(), None);
}

/// Every shell script of the project passes shellcheck (scripts/shellcheck.sh, which
/// CI runs first): scripts/, bench/, the simulated FreeBSD userland, the periodic
/// scripts.
#[test]
fn shell_scripts_pass_shellcheck() {
    let o = Command::new("sh")
        .arg(ws().join("scripts/shellcheck.sh"))
        .output()
        .expect("run scripts/shellcheck.sh (scripts/deps.sh installs shellcheck)");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
