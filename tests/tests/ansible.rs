//! A real ansible-playbook run of `examples/ansible` against localhost (local
//! connection) in the test's own mount namespace: the first run reports the
//! configuration, the mounts and the cron jobs as changed, the second run nothing,
//! the mount table matches the configuration after each, and the clean job's
//! command, run as cron would, cleans and puts every jail back.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Command;

use jlayers_tests::{Backend, Out, Sandbox, bin_dir, sandbox};

/// ansible-playbook from the venv scripts/deps.sh makes (or `$JLAYERS_ANSIBLE`).
fn ansible_playbook() -> PathBuf {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = std::env::var_os("JLAYERS_ANSIBLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target/tools/ansible/bin/ansible-playbook"));
    assert!(
        p.is_file(),
        "{} missing: run scripts/deps.sh (it installs ansible-core from PyPI in a venv)",
        p.display()
    );
    p
}

fn play(sb: &Sandbox, playbook: &Path) -> Out {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let home = sb.path("home");
    std::fs::create_dir_all(&home).unwrap();
    // The cron module looks for crontab(1) even when it writes a cron_file, which
    // it does itself: a stand-in that fails if it is ever run.
    let bin = sb.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let crontab = bin.join("crontab");
    std::fs::write(&crontab, "#!/bin/sh\necho crontab run >&2\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&crontab, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut path = bin.into_os_string();
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let out = Command::new(playbook)
        .args(["-i"])
        .arg(sb.path("hosts.ini"))
        .arg("-e")
        .arg(format!("@{}", sb.path("vars.json").display()))
        .arg(ws.join("examples/ansible/site.yml"))
        .env("HOME", &home)
        .env("PATH", path)
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
        .env("ANSIBLE_REMOTE_TEMP", home.join("tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .env("ANSIBLE_ROLES_PATH", ws.join("examples/ansible/roles"))
        .env_remove("JLAYERS_CONF")
        .output()
        .unwrap();
    Out::from(out)
}

/// The PLAY RECAP line for localhost.
fn recap(o: &Out) -> String {
    o.stdout
        .lines()
        .find(|l| l.starts_with("localhost") && l.contains("changed="))
        .unwrap_or_else(|| panic!("no recap line:\n{}\n{}", o.stdout, o.stderr))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn playbook_reports_changes_once() {
    let playbook = ansible_playbook();
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        std::fs::remove_file(sb.path("jlayers.conf")).unwrap();
        // The play's become is off for localhost: the test runs as root already.
        std::fs::write(
            sb.path("hosts.ini"),
            "[jailhosts]\nlocalhost ansible_connection=local ansible_become=false \
             ansible_python_interpreter=/usr/bin/python3\n",
        )
        .unwrap();
        let t = |p: &str| sb.path(p).to_string_lossy().into_owned();
        let vars = serde_json::json!({
            "jlayers_bin_dir": bin_dir(),
            "jlayers_conf": t("jlayers.conf"),
            "jlayers_upper_root": t("upper"),
            "jlayers_lock_dir": t("run"),
            "jlayers_log_dir": t("log"),
            "jlayers_update": ["sh", "-c", "true"],
            "jlayers_network": "none",
            "jlayers_layers": [
                {"name": "ports", "source": t("ports"), "target": "usr/ports",
                 "union_options": ["noatime"]},
                {"name": "distfiles", "source": t("distfiles"), "target": "usr/ports/distfiles", "mode": "shared"},
            ],
            "jlayers_jails": [
                {"name": "j1", "root": t("j1"), "layers": ["ports", "distfiles"],
                 "upper": {"ports": t("upper-j1-ports")}, "update": ["true"],
                 "start": ["true"], "stop": ["true"], "network": "host"},
                {"name": "j2", "root": t("j2"), "upper_fs": "tmpfs", "upper_size": "16m"},
            ],
            // The cron jobs in the test's own file, not /etc/cron.d.
            "jlayers_cron_file": t("cron.d/jlayers"),
            "jlayers_clean_older_than": "0s",
        });
        std::fs::create_dir_all(sb.path("cron.d")).unwrap();
        std::fs::write(sb.path("vars.json"), vars.to_string()).unwrap();
        let want = |sb: &Sandbox| {
            let mut m: Vec<String> = sb
                .mounts()
                .iter()
                .map(|m| {
                    format!(
                        "{} {}",
                        m.fstype,
                        m.target.strip_prefix(&sb.dir).unwrap().display()
                    )
                })
                .collect();
            m.sort();
            m
        };
        // The first run installs the config, mounts, makes the log dir and the
        // two cron jobs (five changes); the second changes nothing; the table
        // matches the config after each.
        for (run, changes) in [("first run: ", "changed=5"), ("second run:", "changed=0")] {
            let o = play(sb, &playbook);
            o.ok();
            let r = recap(&o);
            eprintln!("{run} {r}");
            assert!(
                r.contains(changes) && r.contains("failed=0"),
                "{r}\n{}",
                o.stdout
            );
            let table = want(sb);
            assert_eq!(table.len(), 7, "3 mounts a jail and j2's tmpfs: {table:?}");
            assert_eq!(sb.mounts_at("upper/j2/ports"), ["tmpfs"]);
            assert_eq!(sb.mounts_at("j1/usr/ports").len(), 2);
            assert_eq!(sb.mounts_at("j2/usr/ports/distfiles").len(), 1);
        }
        // Every key the fleet set is in the file, as the tools read it.
        let conf = std::fs::read_to_string(sb.path("jlayers.conf")).unwrap();
        for line in [
            "update = [\"sh\", \"-c\", \"true\"]",
            "network = \"host\"",
            "layers = [\"ports\", \"distfiles\"]",
            &format!("upper.ports = \"{}\"", t("upper-j1-ports")),
            "start = [\"true\"]",
            "union_options = [\"noatime\"]",
            "upper_size = \"16m\"",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} not in:\n{conf}");
        }
        assert!(
            !conf.contains("lock_dir = \"\""),
            "unset keys left out:\n{conf}"
        );

        // The clean job, run as cron runs it: one command, per jail.
        let cron = std::fs::read_to_string(sb.path("cron.d/jlayers")).unwrap();
        let job = cron
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("jclean"))
            .map(|l| l.split_whitespace().skip(6).collect::<Vec<_>>().join(" "))
            .next()
            .unwrap_or_else(|| panic!("no jclean job:\n{cron}"));
        assert!(job.contains("jclean -q --remount "), "{job}");
        assert!(
            !job.contains("service") && !job.contains("junmount"),
            "{job}"
        );
        std::fs::write(sb.path("j1/usr/ports/j1-wrote"), "x").unwrap();
        std::fs::write(sb.path("j2/usr/ports/j2-wrote"), "x").unwrap();
        let before = want(sb);
        let o = sb.sh(&job);
        o.ok();
        assert_eq!(o.stdout, "", "-q, the report to the log");
        assert!(!sb.path("upper-j1-ports/j1-wrote").exists(), "j1 cleaned");
        assert!(
            !sb.path("j2/usr/ports/j2-wrote").exists(),
            "j2's tmpfs fresh"
        );
        assert_eq!(want(sb), before, "every jail put back");
        assert!(sb.path("log/clean.log").is_file());
        sb.run("junmount", &["--all"]).ok();
        assert!(sb.mounts().is_empty());
    });
}
