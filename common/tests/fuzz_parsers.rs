//! Property tests ("fuzzing") for every parser of outside input: the configuration
//! file, mountinfo, `mount -p`, ages, jail names from stdin. Each runs a bounded
//! number of generated cases (`PROPTEST_CASES` overrides), so CI time stays fixed;
//! failures proptest finds are kept in `fuzz_parsers.proptest-regressions` and the
//! odd inputs found so far are plain tests at the end.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jlayers::cli::{MAX_AGE_SECS, names_from, parse_age};
use jlayers::config::Config;
use jlayers::exit::{ExitCode, code_of};
use jlayers::platform::Os;
use jlayers::platform::freebsd::parse_mount_p;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(2000),
        ..ProptestConfig::default()
    }
}

/// Escape a path the way the kernel writes mountinfo fields (proc(5)).
#[cfg(target_os = "linux")]
fn mangle(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &c in b {
        if matches!(c, b' ' | b'\t' | b'\n' | b'\\') {
            out.extend_from_slice(format!("\\{c:03o}").as_bytes());
        } else {
            out.push(c);
        }
    }
    out
}

/// An absolute path of arbitrary bytes (no NUL, as the kernel allows).
#[cfg(target_os = "linux")]
fn any_path() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::collection::vec(
            any::<u8>().prop_filter("no NUL or /", |b| *b != 0 && *b != b'/'),
            1..12,
        ),
        0..5,
    )
    .prop_map(|parts| {
        let mut p = Vec::new();
        for part in parts {
            p.push(b'/');
            p.extend(part);
        }
        if p.is_empty() {
            p.push(b'/');
        }
        p
    })
}

/// A TOML string literal holding `s`.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The result a config text must give: a config, or an error with exit 78 whose
/// message is one line.
#[track_caller]
fn config_outcome(text: &str, os: Os) {
    match Config::parse(text, Path::new("/etc/jlayers.conf"), os) {
        Ok(_) => {}
        Err(e) => {
            assert_eq!(code_of(&e), ExitCode::Config, "{e:#}");
            assert!(!format!("{e:#}").contains('\n'), "one line: {e:#}");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[cfg(target_os = "linux")]
    #[test]
    fn mountinfo_never_panics(raw in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = jlayers::platform::linux::parse_mountinfo(&raw);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn mountinfo_fields_round_trip(
        id in 1u64..1_000_000,
        maj in 0u32..512, min in 0u32..1_000_000,
        root in any_path(), target in any_path(), source in any_path(),
        fstype in "[a-z0-9.]{1,10}",
        optional in prop::sample::select(vec!["", "shared:1 ", "master:3 propagate_from:2 "]),
    ) {
        let mut line = format!("{id} 1 {maj}:{min} ").into_bytes();
        line.extend(mangle(&root));
        line.push(b' ');
        line.extend(mangle(&target));
        line.extend_from_slice(format!(" rw,noatime {optional}- {fstype} ").as_bytes());
        line.extend(mangle(&source));
        line.extend_from_slice(b" rw,lowerdir=/x\n");
        let t = jlayers::platform::linux::parse_mountinfo(&line);
        prop_assert_eq!(t.len(), 1);
        let m = &t[0];
        let l = m.linux.as_ref().unwrap();
        prop_assert_eq!(l.id, id);
        prop_assert_eq!(l.dev, (maj, min));
        prop_assert_eq!(&l.root, &PathBuf::from(OsString::from_vec(root)));
        prop_assert_eq!(&m.target, &PathBuf::from(OsString::from_vec(target)));
        prop_assert_eq!(&m.source, &OsString::from_vec(source));
        prop_assert_eq!(&m.fstype, &fstype);
        prop_assert!(m.options.iter().any(|o| o == "noatime"));
    }

    #[test]
    fn mount_p_never_panics(text in "\\PC{0,300}") {
        let _ = parse_mount_p(&text);
    }

    #[test]
    fn mount_p_round_trips_with_any_padding(
        rows in prop::collection::vec(("[!-~]{1,30}", "/[!-~]{0,30}", "[a-z]{2,8}", "[a-z]{2,6}(,[a-z]{2,6}){0,3}", "[ \t]{1,3}"), 1..6)
    ) {
        let mut text = String::new();
        for (src, mp, ty, opts, pad) in &rows {
            text.push_str(&format!("{src}{pad}{mp}{pad}{ty}{pad}{opts} {pad}0 0\n"));
        }
        let t = parse_mount_p(&text);
        prop_assert_eq!(t.len(), rows.len());
        for (m, (src, mp, ty, opts, _)) in t.iter().zip(&rows) {
            let src = src.strip_prefix("<above>:").unwrap_or(src);
            prop_assert_eq!(m.source.as_bytes(), src.as_bytes());
            prop_assert_eq!(&m.target, &PathBuf::from(mp));
            prop_assert_eq!(&m.fstype, ty);
            prop_assert_eq!(m.options.join(","), opts.clone());
        }
    }

    #[test]
    fn ages_never_panic(s in "\\PC{0,30}") {
        let _ = parse_age(&s);
    }

    #[test]
    fn ages_are_exact_or_refused(n in any::<u64>(), unit in prop::sample::select(vec![("", 1u64), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400), ("w", 604800)])) {
        let (u, mult) = unit;
        let got = parse_age(&format!("{n}{u}"));
        if u.is_empty() {
            // A number alone is refused, whatever its size (issue 18).
            prop_assert!(got.unwrap_err().contains("give a unit"));
            return Ok(());
        }
        match n.checked_mul(mult).filter(|&s| s <= MAX_AGE_SECS) {
            Some(secs) => prop_assert_eq!(got, Ok(Duration::from_secs(secs))),
            None => prop_assert!(got.unwrap_err().contains("too large")),
        }
    }

    #[test]
    fn names_one_a_line(raw in prop::collection::vec(any::<u8>(), 0..300)) {
        let names = names_from(&raw);
        let lines = raw.split(|&b| b == b'\n').filter(|l| !l.trim_ascii().is_empty()).count();
        prop_assert_eq!(names.len(), lines);
        for n in &names {
            let b = n.as_bytes();
            prop_assert!(!b.is_empty() && !b.contains(&b'\n'));
            prop_assert_eq!(b, b.trim_ascii());
        }
    }

    #[test]
    fn config_text_never_panics(text in "\\PC{0,400}") {
        config_outcome(&text, Os::Linux);
        config_outcome(&text, Os::FreeBsd);
    }

    /// Well-formed TOML with arbitrary names, paths, modes and upper settings:
    /// a config or a one-line 78, never a panic or another status.
    #[test]
    fn config_shapes(
        layers in prop::collection::vec(("\\PC{0,8}", "\\PC{0,12}", prop::option::of("\\PC{0,12}"), prop::sample::select(vec!["union", "readonly", "shared", "bogus"])), 0..4),
        jails in prop::collection::vec(("[a-z0-9\"\\\\. -]{0,8}", "\\PC{0,16}", prop::option::of("\\PC{0,10}")), 0..4),
        upper_root in "\\PC{0,16}",
    ) {
        let mut text = format!("[defaults]\nupper_root = {}\n", toml_str(&upper_root));
        for (name, source, target, mode) in &layers {
            text.push_str(&format!("[[layer]]\nname = {}\nsource = {}\nmode = {}\n", toml_str(name), toml_str(source), toml_str(mode)));
            if let Some(t) = target {
                text.push_str(&format!("target = {}\n", toml_str(t)));
            }
        }
        for (name, root, upper) in &jails {
            text.push_str(&format!("[jail.{}]\nroot = {}\n", toml_str(name), toml_str(root)));
            if let (Some(u), Some((layer, ..))) = (upper, layers.first()) {
                text.push_str(&format!("upper.{} = {}\n", toml_str(layer), toml_str(u)));
            }
        }
        config_outcome(&text, Os::Linux);
        config_outcome(&text, Os::FreeBsd);
        // What is accepted is what was written: the layers in file order, with
        // their names, modes and sources.
        if let Ok(cfg) = Config::parse(&text, Path::new("/etc/jlayers.conf"), Os::Linux) {
            prop_assert_eq!(cfg.layers.len(), layers.len());
            for (l, (name, source, _, mode)) in cfg.layers.iter().zip(&layers) {
                prop_assert_eq!(&l.name, name);
                prop_assert_eq!(format!("{:?}", l.mode).to_lowercase(), *mode);
                if !source.contains("..") {
                    prop_assert!(l.source.components().eq(Path::new(source).components()));
                }
            }
        }
    }

    /// A well-formed file (valid names, absolute sources, distinct targets, any
    /// mode) is accepted on both platforms and reads back as written.
    #[test]
    fn valid_configs_read_back(
        layers in prop::collection::vec(("[a-z][a-z0-9_.-]{0,7}", "[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,7}", prop::sample::select(vec!["union", "readonly", "shared"])), 1..5),
        jails in prop::collection::btree_set("[a-zA-Z0-9_-]{1,8}", 0..4),
        tmpfs in any::<bool>(),
    ) {
        let mut text = String::from("[defaults]\nupper_root = \"/var/up\"\n");
        let mut want = Vec::new();
        for (i, (name, dir, mode)) in layers.iter().enumerate() {
            // Unique names, and targets that nest in none of the others.
            let (name, source, target) = (format!("{name}{i}"), format!("/src/{dir}/{i}"), format!("t{i}/{dir}"));
            text.push_str(&format!("[[layer]]\nname = {}\nsource = {}\ntarget = {}\nmode = {}\n", toml_str(&name), toml_str(&source), toml_str(&target), toml_str(mode)));
            if tmpfs && *mode == "union" {
                text.push_str("upper_fs = \"tmpfs\"\n");
            }
            want.push((name, source, target, *mode));
        }
        // All-digit names are jail IDs on FreeBSD: a letter in front.
        let jails: Vec<String> = jails.iter().map(|j| format!("j{j}")).collect();
        for j in &jails {
            text.push_str(&format!("[jail.{j}]\nroot = \"/jails/{j}\"\n"));
        }
        for os in [Os::Linux, Os::FreeBsd] {
            let cfg = Config::parse(&text, Path::new("/etc/jlayers.conf"), os);
            prop_assert!(cfg.is_ok(), "{:?}: {:#}\n{}", os, cfg.unwrap_err(), text);
            let cfg = cfg.unwrap();
            prop_assert_eq!(cfg.layers.len(), want.len());
            for (l, (name, source, target, mode)) in cfg.layers.iter().zip(&want) {
                prop_assert_eq!(&l.name, name);
                prop_assert_eq!(&l.source, Path::new(source));
                prop_assert_eq!(&l.target, Path::new(target));
                prop_assert_eq!(format!("{:?}", l.mode).to_lowercase(), *mode);
                prop_assert_eq!(l.tmpfs.is_some(), tmpfs && *mode == "union");
            }
            let mut names: Vec<&str> = cfg.jails.iter().map(|j| j.name.as_str()).collect();
            names.sort();
            prop_assert_eq!(names, jails.iter().map(String::as_str).collect::<Vec<_>>());
            for j in &cfg.jails {
                prop_assert_eq!(&j.root, &Path::new("/jails").join(&j.name));
                prop_assert_eq!(&j.layers, &(0..want.len()).collect::<Vec<_>>());
                let unions: Vec<usize> = (0..want.len()).filter(|&i| want[i].3 == "union").collect();
                prop_assert_eq!(j.uppers.keys().copied().collect::<Vec<_>>(), unions.clone());
                for i in unions {
                    prop_assert_eq!(
                        &j.uppers[&i],
                        &jlayers::config::Upper::Host(Path::new("/var/up").join(&j.name).join(&want[i].0))
                    );
                }
            }
        }
    }
}

// The odd inputs found so far, kept as plain tests.

#[test]
fn found_ages() {
    // Overflowed SystemTime::now() - age (issue 9).
    for s in [
        "18446744073709551615s",
        "20000000000000w",
        "110000000000000d",
    ] {
        assert!(parse_age(s).unwrap_err().contains("too large"), "{s}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn found_mountinfo() {
    // An escape beyond one byte (\777) overflowed the decoder; it is literal now.
    let t = jlayers::platform::linux::parse_mountinfo(b"1 0 0:1 / /a\\777b rw - tmpfs t\\400 rw\n");
    assert_eq!(t[0].target, Path::new("/a\\777b"));
    assert_eq!(t[0].source.as_bytes(), b"t\\400");
    // Truncated lines and a lone separator give nothing, not a panic.
    for raw in [
        &b"1 0 0:1 / /a rw -"[..],
        b"-",
        b"1 0 x / / rw - t s",
        b"\\",
    ] {
        assert!(jlayers::platform::linux::parse_mountinfo(raw).is_empty());
    }
}

#[test]
fn found_names() {
    assert_eq!(
        names_from(b"web\r\n\n  server \n\xff\xfe\n"),
        [
            OsString::from("web"),
            "server".into(),
            OsString::from_vec(vec![0xff, 0xfe])
        ]
    );
}
