//! Man pages: lint-clean mdoc, and every flag in a tool's --help and every option
//! its parser takes documented there.

use std::path::Path;
use std::process::Command;

use jlayers_tests::TOOLS;

fn man_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../man"))
}

#[test]
fn every_help_flag_is_in_the_page() {
    for tool in TOOLS {
        let out = Command::new(jlayers_tests::bin_dir().join(tool))
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        let page = std::fs::read_to_string(man_dir().join(format!("{tool}.8"))).unwrap();
        // Each option line's long flag (not a flag quoted in a description, such
        // as the default command's --no-confirm).
        let mut flags: Vec<&str> = help
            .lines()
            .filter(|l| l.trim_start().starts_with('-'))
            .filter_map(|l| {
                l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .find(|w| w.starts_with("--") && w.len() > 2)
            })
            .collect();
        flags.sort();
        flags.dedup();
        assert!(
            flags.len() >= 6,
            "{tool}: too few flags read from --help: {flags:?}"
        );
        for f in flags {
            // mdoc writes --dry-run as `Fl -dry-run`.
            let mdoc = format!("Fl {}", &f[1..]);
            assert!(
                page.contains(&mdoc),
                "{tool}.8 does not document {f} (want `{mdoc}`)"
            );
        }
    }
}

/// Every option the parser takes, short and long, heads an item of the page's
/// option list (`.It Fl c Ar file , Fl -config Ar file`), not just a mention.
#[test]
fn every_option_has_an_item_in_the_page() {
    for mut cmd in jlayers::cmd::commands() {
        let tool = cmd.get_name().to_string();
        let page = std::fs::read_to_string(man_dir().join(format!("{tool}.8"))).unwrap();
        let items: Vec<Vec<&str>> = page
            .lines()
            .filter_map(|l| l.strip_prefix(".It "))
            .map(|l| l.split_whitespace().collect())
            .collect();
        let has = |flag: &str| {
            items
                .iter()
                .any(|w| w.windows(2).any(|p| p[0] == "Fl" && p[1] == flag))
        };
        cmd.build();
        let args: Vec<_> = cmd.get_arguments().filter(|a| !a.is_positional()).collect();
        assert!(args.len() >= 8, "{tool}: too few options");
        for arg in args {
            let long = format!("-{}", arg.get_long().unwrap());
            assert!(has(&long), "{tool}.8 has no `.It Fl {long}`");
            if let Some(c) = arg.get_short() {
                assert!(has(&c.to_string()), "{tool}.8 has no `.It Fl {c}`");
            }
        }
    }
}

#[test]
fn pages_are_lint_clean() {
    let mut pages: Vec<_> = std::fs::read_dir(man_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "5" || e == "8"))
        .collect();
    pages.sort();
    for t in TOOLS {
        assert!(
            pages.contains(&man_dir().join(format!("{t}.8"))),
            "{t}.8 missing"
        );
    }
    let out = Command::new("mandoc")
        .args(["-Tlint", "-Wwarning"])
        .args(&pages)
        .output()
        .unwrap_or_else(|e| panic!("mandoc is needed for this test (apt-get install mandoc): {e}"));
    let msgs =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && msgs.trim().is_empty(),
        "mandoc -Tlint:\n{msgs}"
    );
}

/// A `--help` text's EXIT STATUS items or a page's as mandoc renders them:
/// `(status, meaning)`, the meaning on one line, quotes as `'`.
fn statuses(text: &str, head: &str) -> Vec<(String, String)> {
    let mut items: Vec<(String, String)> = Vec::new();
    let section = text
        .split_once(head)
        .map_or("", |(_, rest)| rest)
        .split("\n\n")
        .next()
        .unwrap_or("");
    for line in section.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = words.first() else { continue };
        if first.chars().all(|c| c.is_ascii_digit()) {
            items.push((first.to_string(), words[1..].join(" ")));
        } else if first.starts_with("With") {
            break;
        } else if let Some((_, meaning)) = items.last_mut() {
            meaning.push(' ');
            meaning.push_str(&words.join(" "));
        }
    }
    for (_, meaning) in &mut items {
        *meaning = meaning.replace('`', "'");
    }
    items
}

/// Each tool's `--help` gives its own exit statuses, as its page does, word for
/// word (jclean's are not jmount's).
#[test]
fn help_exit_status_is_the_pages() {
    for tool in TOOLS {
        let out = Command::new(jlayers_tests::bin_dir().join(tool))
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        let page = man_dir().join(format!("{tool}.8"));
        let rendered = Command::new("sh")
            .arg("-c")
            .arg("mandoc -Tascii \"$1\" | col -b")
            .arg("sh")
            .arg(&page)
            .output()
            .unwrap_or_else(|e| panic!("mandoc and col are needed for this test: {e}"));
        let rendered = String::from_utf8(rendered.stdout).unwrap();
        let want = statuses(&rendered, "\nEXIT STATUS\n");
        assert!(want.len() >= 6, "{tool}.8: {want:?}");
        assert_eq!(statuses(&help, "\nEXIT STATUS\n"), want, "{tool} --help");
    }
}

/// `--help` describes JAIL once.
#[test]
fn help_describes_jail_once() {
    for tool in TOOLS {
        let out = Command::new(jlayers_tests::bin_dir().join(tool))
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        let said = help.matches("Jails to work on").count();
        assert_eq!(said, 1, "{tool} --help:\n{help}");
    }
}
