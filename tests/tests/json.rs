//! `--json` (and `--libxo json`): JSON Lines on stdout, one object per record, exact
//! types; `changed` on jmount/junmount records true exactly when the run altered
//! something; an object with `error` and `exit` for a failed jail.
// The tests of the Linux backend run on a Linux host only; on FreeBSD their helpers
// are left unused.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use serde_json::Value;

use jlayers_tests::{Backend, Sandbox, json_lines, on_both, sandbox};

fn changed(v: &[Value]) -> Vec<bool> {
    v.iter().map(|o| o["changed"].as_bool().unwrap()).collect()
}

fn mount_records_say_what_changed(b: Backend) {
    sandbox(b, |sb: &Sandbox| {
        sb.scene();
        // -n: what would change, and no sh lines.
        let o = sb.run("jmount", &["--json", "-n", "j1"]);
        o.ok();
        let v = json_lines(&o.stdout);
        assert_eq!(changed(&v), [true, true]);
        assert!(sb.mounts().is_empty());

        let o = sb.run("jmount", &["--json", "j1"]);
        o.ok();
        let v = json_lines(&o.stdout);
        assert_eq!(v.len(), 2, "one object per layer: {}", o.stdout);
        assert_eq!(v[0]["tool"], "jmount");
        assert_eq!(v[0]["jail"], "j1");
        assert_eq!(v[0]["layer"], "ports");
        assert_eq!(v[0]["target"], sb.path("j1/usr/ports").to_str().unwrap());
        assert_eq!(changed(&v), [true, true]);
        let kinds = jlayers_tests::json_strs(&v[0]["mounts"], "type");
        assert_eq!(kinds, ["null", "union"]);
        assert_eq!(
            v[0]["mounts"][0]["source"],
            sb.path("ports").to_str().unwrap()
        );

        // Nothing to do: nothing changed, nothing listed.
        let o = sb.run("jmount", &["--libxo", "json", "j1"]);
        o.ok();
        let v = json_lines(&o.stdout);
        assert_eq!(changed(&v), [false, false]);
        assert!(v.iter().all(|o| o["mounts"].as_array().unwrap().is_empty()));

        // junmount: newest first, the layers in the order they came down.
        let o = sb.run("junmount", &["--json", "j1"]);
        o.ok();
        let v = json_lines(&o.stdout);
        assert_eq!(changed(&v), [true, true]);
        assert_eq!(v[0]["layer"], "distfiles");
        assert_eq!(v[1]["mounts"][0]["type"], "union");
        assert_eq!(v[1]["mounts"][1]["type"], "null");
        let o = sb.run("junmount", &["--json", "j1"]);
        assert_eq!(changed(&json_lines(&o.stdout)), [false, false]);
    });
}

on_both!(mount_records_say_what_changed);

#[cfg(target_os = "linux")]
#[test]
fn failures_clean_and_update_records() {
    sandbox(Backend::Linux, |sb| {
        sb.scene();
        // A failed jail is an object with the message and the exit status; the
        // other jail still gets its records.
        std::fs::remove_dir_all(sb.path("j2")).unwrap();
        let o = sb.run("jmount", &["--json", "--all"]);
        o.code(66);
        let v = json_lines(&o.stdout);
        assert_eq!(v.len(), 3, "{}", o.stdout);
        assert_eq!(v[2]["jail"], "j2");
        assert_eq!(v[2]["exit"], 66);
        assert!(v[2]["error"].as_str().unwrap().contains("does not exist"));
        // A layer that is mounted: jclean's refusal as an object.
        let o = sb.run("jclean", &["--json", "j1"]);
        o.code(75);
        let v = json_lines(&o.stdout);
        assert_eq!(v[0]["exit"], 75);
        let error = v[0]["error"].as_str().unwrap();
        assert!(error.contains("the layer is mounted on"), "{error}");
        sb.run("junmount", &["j1"]).ok();

        std::fs::write(sb.path("upper/j1/ports/built"), vec![0u8; 10000]).unwrap();
        let o = sb.run("jclean", &["--json", "j1"]);
        o.ok();
        let v = json_lines(&o.stdout);
        assert_eq!(v[0]["files"], 1);
        assert!(
            v[0]["bytes"].as_u64().unwrap() >= 10000,
            "bytes, not a human size"
        );
        assert_eq!(v[0]["changed"], true);
        std::fs::create_dir_all(sb.path("j2/usr")).unwrap();
        let o = sb.run("jclean", &["--json", "--all"]);
        o.ok();
        let v = json_lines(&o.stdout);
        assert_eq!(v.len(), 3);
        assert_eq!(v[2]["total"], true);
        assert_eq!(v[2]["jail"], Value::Null);
        assert_eq!(v[2]["files"], 0);

        // jupdate: its line as an object; -n does not go with --json.
        sb.jail_root("j1", &["sh", "true", "false"]);
        let o = sb.run("jupdate", &["--json", "j1", "--", "/bin/false"]);
        o.code(69);
        let v = json_lines(&o.stdout);
        assert_eq!(v.len(), 1, "{}", o.stdout);
        assert_eq!(v[0]["result"], "failed");
        assert_eq!(v[0]["exit_code"], 1);
        assert!(v[0]["seconds"].is_u64());
        assert_eq!(v[0]["log"], sb.path("log/j1.log").to_str().unwrap());
        sb.run("jupdate", &["--json", "-n", "j1"])
            .code(64)
            .err_has("jupdate: the argument '--json' cannot be used with '--dry-run'");
        sb.run("jmount", &["--libxo", "xml", "j1"])
            .code(64)
            .err_has("only json");
    });
}
