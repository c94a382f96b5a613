//! The end of each tool's `--help` (not `-h`): exit status, environment, files and
//! the manual page. The exit statuses are read out of the tool's own page
//! (man/TOOL.8, built in), so that `--help` and the page cannot say different
//! things.

/// Each tool's page, as installed.
const PAGES: [(&str, &str); 4] = [
    ("jmount", include_str!("../../man/jmount.8")),
    ("junmount", include_str!("../../man/junmount.8")),
    ("jclean", include_str!("../../man/jclean.8")),
    ("jupdate", include_str!("../../man/jupdate.8")),
];

/// The width `--help`'s exit statuses are wrapped to.
const WIDTH: usize = 79;

/// The text after the options in `TOOL --help`.
pub(crate) fn after_long_help(tool: &str) -> String {
    let page = PAGES.iter().find(|(t, _)| *t == tool).map_or("", |p| p.1);
    let mut text = String::from("EXIT STATUS\n");
    for (status, meaning) in exit_statuses(page) {
        let mut line = format!("  {status:<5}");
        for word in meaning.split(' ') {
            if line.len() + 1 + word.len() > WIDTH && line.len() > 7 {
                text.push_str(line.trim_end());
                text.push('\n');
                line = " ".repeat(7);
            } else if line.len() > 7 {
                line.push(' ');
            }
            line.push_str(word);
        }
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str("  With several jails, the status is that of the first jail that failed.\n");
    text.push_str(
        "\nENVIRONMENT\n\
         \x20 JLAYERS_CONF      the configuration file, unless -c is given\n\
         \x20 JLAYERS_PLATFORM  freebsd or linux: the backend, instead of this system's\n",
    );
    text.push_str(
        "\nFILES\n\
         \x20 /usr/local/etc/jlayers.conf  configuration (FreeBSD; /etc/jlayers.conf on Linux)\n\
         \x20 /var/run/jlayers/JAIL.lock   lock files (/run/jlayers on Linux)\n",
    );
    if tool == "jupdate" {
        text.push_str("  /var/log/jlayers/JAIL.log    each jail's log, appended to\n");
    }
    text.push_str(&format!("\nSee {tool}(8) and jlayers.conf(5).\n"));
    text
}

/// The `.It STATUS` items of a page's EXIT STATUS list, each as one line of
/// plain text.
fn exit_statuses(page: &str) -> Vec<(String, String)> {
    let mut items: Vec<(String, String)> = Vec::new();
    let mut inside = false;
    for line in page.lines() {
        if line == ".Sh EXIT STATUS" {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if line.starts_with(".El") || line.starts_with(".Sh") {
            break;
        }
        if let Some(status) = line.strip_prefix(".It ") {
            items.push((status.trim().to_string(), String::new()));
            continue;
        }
        let Some((_, meaning)) = items.last_mut() else {
            continue;
        };
        let words = match line.strip_prefix('.') {
            Some(call) => plain(call),
            None => line.to_string(),
        };
        join(meaning, &words);
    }
    items
}

/// Append `words` to `text`: a space between, none before closing punctuation.
fn join(text: &mut String, words: &str) {
    let closes = words.starts_with(|c: char| ".,:;)]".contains(c));
    if !text.is_empty() && !closes && !text.ends_with(['(', '[']) {
        text.push(' ');
    }
    text.push_str(words);
}

/// One mdoc macro line as mandoc shows it in plain text, for the few macros the
/// EXIT STATUS lists use: `Fl` (a dash), `Xr` (`name(8)`), `Ql` (quoted), `Pq`
/// (in parentheses); the others only mark up their words.
fn plain(call: &str) -> String {
    let tokens: Vec<&str> = call.split_whitespace().collect();
    let mut out = String::new();
    let (mut at, mut wrap) = (0, None);
    let mut quote = false;
    while at < tokens.len() {
        let token = tokens[at];
        at += 1;
        match token {
            "Pq" => wrap = Some(out.len()),
            "Ql" => quote = true,
            "Ic" | "No" | "Ar" | "Cm" | "Pa" | "Dv" | "Ev" | "Va" | "Nm" | "Sy" | "Em" => {}
            "Fl" => {
                let flag = tokens.get(at).copied().unwrap_or("");
                at += 1;
                join(&mut out, &format!("-{flag}"));
            }
            "Xr" => {
                let (name, section) = (tokens.get(at), tokens.get(at + 1));
                at += 2;
                join(
                    &mut out,
                    &format!("{}({})", name.unwrap_or(&""), section.unwrap_or(&"")),
                );
            }
            word => join(&mut out, word),
        }
    }
    if quote {
        out = format!("'{out}'");
    }
    if let Some(from) = wrap {
        out.insert(from, '(');
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_as_plain_text() {
        assert_eq!(
            plain("Pq Fl -status : No every layer shown"),
            "(--status: every layer shown)"
        );
        assert_eq!(plain("Ql (run as root)"), "'(run as root)'");
        assert_eq!(plain("Xr junmount 8 )"), "junmount(8))");
        assert_eq!(plain("Ic junmount -f ,"), "junmount -f,");
    }

    #[test]
    fn every_page_has_its_statuses() {
        for (tool, page) in PAGES {
            let codes: Vec<String> = exit_statuses(page).into_iter().map(|c| c.0).collect();
            assert!(codes.contains(&"0".to_string()), "{tool}: {codes:?}");
            assert!(codes.contains(&"78".to_string()), "{tool}: {codes:?}");
        }
    }
}
