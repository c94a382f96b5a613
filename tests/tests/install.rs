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
    install_with(&["-o", os], dest)
}

fn install_with(opts: &[&str], dest: &Path) {
    let st = Command::new("sh")
        .arg(ws().join("scripts/install.sh"))
        .args(opts)
        .arg("-b")
        .arg(bin_dir())
        .arg("-d")
        .arg(dest)
        .arg("/usr/local")
        .status()
        .unwrap();
    assert!(st.success(), "install.sh {opts:?}");
}

/// The port's `SUB_FILES` (its Makefile's list).
fn sub_files(mk: &str) -> Vec<String> {
    let line = mk
        .lines()
        .find_map(|l| l.strip_prefix("SUB_FILES="))
        .expect("the port makes its periodic scripts with SUB_FILES");
    line.split_whitespace().map(String::from).collect()
}

#[test]
fn freebsd_layout_is_the_ports_plist() {
    let t = tempfile::tempdir().unwrap();
    install_with(&["-o", "freebsd", "-p"], t.path());
    let root = t.path().join("usr/local");
    assert!(
        !root.join("etc/periodic").exists(),
        "install.sh -p leaves the periodic scripts to the port's SUB_FILES"
    );
    // What bsd.port.mk does with SUB_FILES: files/NAME.in with %%PREFIX%% filled
    // in, to ${WRKDIR}/NAME, which do-install puts in etc/periodic/weekly.
    let port = ws().join("freebsd/ports/sysutils/jlayers");
    let mk = std::fs::read_to_string(port.join("Makefile")).unwrap();
    assert!(
        mk.contains(".for f in ${SUB_FILES}")
            && mk.contains(
                "${INSTALL_SCRIPT} ${WRKDIR}/${f} ${STAGEDIR}${PREFIX}/etc/periodic/weekly/${f}"
            ),
        "do-install installs the SUB_FILES"
    );
    let subs = sub_files(&mk);
    assert_eq!(subs, ["450.jupdate", "460.jclean"]);
    std::fs::create_dir_all(root.join("etc/periodic/weekly")).unwrap();
    for f in &subs {
        let text = std::fs::read_to_string(port.join("files").join(format!("{f}.in"))).unwrap();
        let source = std::fs::read_to_string(ws().join("freebsd/periodic/weekly").join(f)).unwrap();
        assert_eq!(
            text, source,
            "files/{f}.in is a copy of freebsd/periodic/weekly/{f}: cp freebsd/periodic/weekly/{f} freebsd/ports/sysutils/jlayers/files/{f}.in"
        );
        std::fs::write(
            root.join("etc/periodic/weekly").join(f),
            text.replace("%%PREFIX%%", "/usr/local"),
        )
        .unwrap();
    }
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
    // newsyslog.conf(5): jupdate's logs, a glob, nothing to signal; a sample,
    // so that a package upgrade keeps the admin's edits.
    assert!(
        plist
            .lines()
            .any(|l| l == "@sample etc/newsyslog.conf.d/jlayers.conf.sample"),
        "the newsyslog entry is @sample in pkg-plist"
    );
    let conf =
        std::fs::read_to_string(root.join("etc/newsyslog.conf.d/jlayers.conf.sample")).unwrap();
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
    assert_eq!(mode("etc/newsyslog.conf.d/jlayers.conf.sample"), 0o644);
}

/// `make install` (no port): install.sh fills in the periodic scripts' PREFIX
/// itself, and puts the newsyslog entry in place from its sample, as @sample
/// does: once, never over the admin's edited copy.
#[test]
fn freebsd_make_install_fills_in_what_the_port_does() {
    let t = tempfile::tempdir().unwrap();
    install("freebsd", t.path());
    let root = t.path().join("usr/local");
    for p in ["450.jupdate", "460.jclean"] {
        let text = std::fs::read_to_string(root.join("etc/periodic/weekly").join(p)).unwrap();
        assert!(
            !text.contains("%%PREFIX%%") && text.contains("/usr/local/sbin/j"),
            "{p}"
        );
    }
    let nsl = root.join("etc/newsyslog.conf.d");
    let sample = std::fs::read_to_string(nsl.join("jlayers.conf.sample")).unwrap();
    assert_eq!(
        std::fs::read_to_string(nsl.join("jlayers.conf")).unwrap(),
        sample
    );
    std::fs::write(nsl.join("jlayers.conf"), "# edited\n").unwrap();
    install("freebsd", t.path());
    assert_eq!(
        std::fs::read_to_string(nsl.join("jlayers.conf")).unwrap(),
        "# edited\n",
        "an upgrade keeps the edited entry"
    );
}

/// jupdate(8)'s periodic example is the script the install ships, enabled the way
/// that script reads its knobs: no second weekly job of the admin's making.
#[test]
fn jupdate_page_describes_the_installed_periodic_script() {
    let page = std::fs::read_to_string(ws().join("man/jupdate.8")).unwrap();
    let script = std::fs::read_to_string(ws().join("freebsd/periodic/weekly/450.jupdate")).unwrap();
    assert!(
        page.contains("/usr/local/etc/periodic/weekly/450.jupdate"),
        "jupdate(8) names 450.jupdate"
    );
    for knob in ["weekly_jupdate_enable", "weekly_jupdate_flags"] {
        assert!(script.contains(knob) && page.contains(knob), "{knob}");
    }
    assert!(
        !page.contains("500.jupdate"),
        "no other periodic script than the installed one"
    );
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
    assert_eq!(got.len(), 4 + 5 + 1 + 12 + UNITS.len());
    systemd_units(&t.path().join("usr/local/lib/systemd/system"));
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
        // Each system's own default; the commented one is FreeBSD's.
        let upper = if os == Os::Linux {
            "/var/lib/jlayers"
        } else {
            "/usr/local/var/jlayers"
        };
        assert_eq!(cfg.upper_root, Path::new(upper), "{os:?}");
        assert_eq!(all.upper_root, Path::new("/usr/local/var/jlayers"));
        assert!(!cfg.allow_empty && all.allow_empty);
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
    // bsd.port.mk's default DISTFILES is DISTNAME EXTRACT_SUFX, which cargo.mk
    // appends the crates to: a DISTFILES= line only restates it.
    assert!(
        !mk.lines().any(|l| l.starts_with("DISTFILES")),
        "no DISTFILES= beside USES=cargo"
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

/// The systemd units install.sh puts in PREFIX/lib/systemd/system on Linux.
const UNITS: [&str; 5] = [
    "jlayers.service",
    "jlayers-update.service",
    "jlayers-update.timer",
    "jlayers-clean.service",
    "jlayers-clean.timer",
];

/// The installed units: the PREFIX filled in, the boot unit a oneshot that stays
/// active (jmount at start, junmount at stop), the timers' services the README's
/// cron jobs, and every unit valid to `systemd-analyze verify` (with the
/// commands pointed at the built tools, which it checks are executable).
fn systemd_units(dir: &Path) {
    let read = |u: &str| std::fs::read_to_string(dir.join(u)).unwrap();
    for u in UNITS {
        let text = read(u);
        assert!(!text.contains("%%PREFIX%%"), "{u}: {text}");
    }
    let boot = read("jlayers.service");
    for line in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStart=/usr/local/sbin/jmount -q --all",
        "ExecStop=/usr/local/sbin/junmount -q --all",
        "WantedBy=multi-user.target",
    ] {
        assert!(boot.lines().any(|l| l == line), "jlayers.service: {line}");
    }
    assert!(
        read("jlayers-clean.service")
            .lines()
            .any(|l| l.starts_with("ExecStart=/usr/local/sbin/jclean -q --remount ")),
        "the weekly clean is jclean --remount"
    );
    assert!(read("jlayers-update.service").contains("ExecStart=/usr/local/sbin/jupdate -q "));
    for timer in ["jlayers-update.timer", "jlayers-clean.timer"] {
        assert!(read(timer).contains("WantedBy=timers.target"), "{timer}");
    }
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("systemd-analyze is needed to check the systemd units (scripts/deps.sh: apt-get install systemd)");
    let t = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for u in UNITS {
        let text = read(u).replace("/usr/local/sbin/", &format!("{}/", bin_dir().display()));
        let p = t.path().join(u);
        std::fs::write(&p, text).unwrap();
        paths.push(p);
    }
    // --man=no: the pages are not installed on the machine running the tests.
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `make install` installs the build cargo made where CARGO_TARGET_DIR says.
#[test]
fn make_install_honours_cargo_target_dir() {
    let t = tempfile::tempdir().unwrap();
    let release = t.path().join("build/release");
    std::fs::create_dir_all(&release).unwrap();
    for tool in jlayers_tests::TOOLS {
        let p = release.join(tool);
        std::fs::write(&p, format!("#!/bin/sh\necho built-elsewhere {tool}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let dest = t.path().join("dest");
    let out = Command::new("make")
        .arg("-C")
        .arg(ws())
        .arg("install")
        .arg(format!("DESTDIR={}", dest.display()))
        .env("CARGO_TARGET_DIR", t.path().join("build"))
        .output()
        .expect("make");
    assert!(
        out.status.success(),
        "make install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jmount = std::fs::read_to_string(dest.join("usr/local/sbin/jmount")).unwrap();
    assert!(jmount.contains("built-elsewhere jmount"), "{jmount}");
}
