//! jlayers.conf(5) as written: each table deserialized on its own, so that one
//! run names every mistake of the file (up to [`MAX_ERRORS`]), each with its
//! `FILE:LINE:COLUMN`, not only the first.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, IntoDeserializer, MapAccess, Visitor};
use toml_edit::{ImDocument, Item, Value};

use super::{Mode, Network};

/// The most mistakes one run names.
pub(crate) const MAX_ERRORS: usize = 20;

/// The mistakes found so far, each as `LINE:COLUMN: MESSAGE[; HINT]`.
pub(super) struct Found<'t> {
    text: &'t str,
    pub(super) errors: Vec<String>,
    /// Mistakes past [`MAX_ERRORS`], counted only.
    more: usize,
}

impl<'t> Found<'t> {
    pub(super) fn new(text: &'t str) -> Found<'t> {
        Found {
            text,
            errors: Vec::new(),
            more: 0,
        }
    }

    /// The messages, each `PATH:` first, and how many were not shown.
    pub(super) fn lines(self, path: &Path) -> Vec<String> {
        let sep = |m: &String| {
            if m.starts_with(|c: char| c.is_ascii_digit()) {
                ":"
            } else {
                ": "
            }
        };
        let mut lines: Vec<String> = self
            .errors
            .iter()
            .map(|m| format!("{}{}{m}", path.display(), sep(m)))
            .collect();
        if self.more > 0 {
            lines.push(format!(
                "{}: {} more mistakes not shown (at most {MAX_ERRORS} a run)",
                path.display(),
                self.more
            ));
        }
        lines
    }

    pub(super) fn full(&self) -> bool {
        self.errors.len() >= MAX_ERRORS
    }

    /// A mistake at byte `at` of the text (none: the file as a whole).
    fn at(&mut self, at: Option<usize>, msg: &str) {
        if self.full() {
            self.more += 1;
            return;
        }
        let (line, col) = at.map_or((1, 1), |at| line_col(self.text.as_bytes(), at));
        let msg = msg.trim_end().replace('\n', " ");
        let hint = at.and_then(|at| parse_hint(self.text, at, &msg));
        let hint = hint.map_or(String::new(), |h| format!("; {h}"));
        self.errors.push(format!("{line}:{col}: {msg}{hint}"));
    }

    /// A mistake found once the tables were read (no place in the text).
    pub(super) fn rule(&mut self, msg: String) {
        if self.full() {
            self.more += 1;
        } else {
            self.errors.push(msg);
        }
    }
}

/// Read the text's tables; a syntax error ends the reading (what follows it
/// cannot be trusted), a table's mistake only that table's.
pub(super) fn read(text: &str, found: &mut Found<'_>) -> Option<Raw> {
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            found.at(e.span().map(|s| s.start), e.message());
            return None;
        }
    };
    let mut raw = Raw {
        defaults: RawDefaults::default(),
        layer: Vec::new(),
        jail: Vec::new(),
        whole: true,
    };
    for (key, item) in doc.as_table().iter() {
        let before = found.errors.len() + found.more;
        let at = doc
            .as_table()
            .key(key)
            .and_then(|k| k.span())
            .map(|s| s.start);
        match key {
            "defaults" => {
                if let Some(defaults) = one(item, at, found) {
                    raw.defaults = defaults;
                }
            }
            "layer" => raw.layer = each(item, at, found),
            "jail" => raw.jail = named(item, at, found),
            other => found.at(
                at,
                &format!("unknown field `{other}`, expected one of `defaults`, `layer`, `jail`"),
            ),
        }
        if key != "jail" && found.errors.len() + found.more > before {
            raw.whole = false;
        }
    }
    Some(raw)
}

/// Each element of an array of tables (`[[layer]]`), on its own.
fn each<T: DeserializeOwned>(item: &Item, at: Option<usize>, found: &mut Found<'_>) -> Vec<T> {
    let start = |span: Option<std::ops::Range<usize>>| span.map(|s| s.start).or(at);
    if let Some(tables) = item.as_array_of_tables() {
        return tables
            .iter()
            .filter_map(|t| one(&Item::Table(t.clone()), start(t.span()), found))
            .collect();
    }
    match item.as_array() {
        Some(array) => array
            .iter()
            .filter_map(|v| one(&Item::Value(v.clone()), start(v.span()), found))
            .collect(),
        // Not an array: its own message ("expected a sequence").
        None => one(item, at, found).unwrap_or_default(),
    }
}

/// Each entry of a table (`[jail.NAME]`), on its own, in file order.
fn named<T: DeserializeOwned>(
    item: &Item,
    at: Option<usize>,
    found: &mut Found<'_>,
) -> Vec<(String, T)> {
    let Some(table) = item.as_table_like() else {
        return one::<InFileOrder<T>>(item, at, found).map_or_else(Vec::new, |t| t.0);
    };
    let mut out = Vec::new();
    for (name, entry) in table.iter() {
        let at = table
            .key(name)
            .and_then(|k| k.span())
            .map(|s| s.start)
            .or(at);
        if let Some(value) = one(entry, at, found) {
            out.push((name.to_string(), value));
        }
    }
    out
}

/// One table, naming each of its mistakes: after one, the key it is at is put
/// aside and the table read again, so a typo does not hide the next.
fn one<T: DeserializeOwned>(item: &Item, at: Option<usize>, found: &mut Found<'_>) -> Option<T> {
    let mut value = item.clone().into_value().ok()?;
    let mut aside: Vec<String> = Vec::new();
    loop {
        let err = match T::deserialize(value.clone().into_deserializer()) {
            Ok(table) => return aside.is_empty().then_some(table),
            Err(err) => err,
        };
        // A key missing after one was put aside is most likely that one, misspelt
        // or mistyped: named once.
        if aside.is_empty() || !err.message().starts_with("missing field") {
            found.at(err.span().map(|s| s.start).or(at), err.message());
        }
        let key = err.span().and_then(|span| key_at(&value, span));
        match (key, value.as_inline_table_mut()) {
            (Some(key), Some(table)) if !found.full() => {
                table.remove(&key);
                aside.push(key);
            }
            _ => return None,
        }
    }
}

/// The key of `table` whose key or value holds the bytes `span`.
fn key_at(table: &Value, span: std::ops::Range<usize>) -> Option<String> {
    let holds = |s: Option<std::ops::Range<usize>>| {
        s.is_some_and(|s| s.start <= span.start && span.end <= s.end)
    };
    let table = table.as_inline_table()?;
    table.iter().find_map(|(name, value)| {
        let key = table.key(name)?;
        (holds(key.span()) || holds(value.span())).then(|| name.to_string())
    })
}

/// What the administrator most likely meant, for the TOML errors a config writer
/// meets first: a string where an array is wanted (the array written out), and a
/// jail name with dots read as nested tables (the name quoted).
fn parse_hint(text: &str, at: usize, msg: &str) -> Option<String> {
    let start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?.trim();
    if msg.starts_with("invalid type: string") && msg.ends_with("expected a sequence") {
        let (key, value) = line.split_once('=')?;
        let value: Value = value.trim().parse().ok()?;
        let value = value.as_str()?;
        let words: Vec<String> = value
            .split_whitespace()
            .map(|w| Value::from(w).to_string())
            .collect();
        return Some(format!(
            "write it as an array, e.g. {} = [{}]",
            key.trim(),
            words.join(", ")
        ));
    }
    let name = line.strip_prefix("[jail.")?.strip_suffix(']')?;
    if msg.starts_with("unknown field") && name.contains('.') && !name.contains('"') {
        // Quoting would not help: a dot in a jail name means a child jail on
        // FreeBSD, so names are one word.
        return Some(format!(
            "[jail.{name}] is a jail {:?} with tables below it; a jail name is one \
             word (letters, digits, '-' and '_'), e.g. [jail.{}]",
            name.split('.').next().unwrap_or_default(),
            name.replace('.', "-")
        ));
    }
    None
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &[u8], offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, col)
}

/// The file as written, each table deserialized on its own.
pub(super) struct Raw {
    pub(super) defaults: RawDefaults,
    pub(super) layer: Vec<RawLayer>,
    pub(super) jail: Vec<(String, RawJail)>,
    /// `[defaults]` and every `[[layer]]` read: the jails' rules can be checked.
    pub(super) whole: bool,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) upper_root: Option<String>,
    pub(super) log_dir: Option<String>,
    pub(super) lock_dir: Option<String>,
    pub(super) update: Option<Vec<String>>,
    pub(super) network: Option<Network>,
    pub(super) allow_empty: Option<bool>,
    pub(super) upper_group: Option<String>,
    pub(super) pids: Option<i64>,
    pub(super) memory: Option<String>,
    pub(super) cpu: Option<Number>,
    pub(super) log_max: Option<String>,
}

/// `pids`, `memory` and `cpu` as written.
#[derive(Default)]
pub(super) struct RawLimits {
    pub(super) pids: Option<i64>,
    pub(super) memory: Option<String>,
    pub(super) cpu: Option<Number>,
}

/// A TOML number, integer or not (`cpu = 2` as `cpu = 2.0`).
#[derive(Deserialize)]
#[serde(untagged, expecting = "a number of CPUs (e.g. 1.5)")]
pub(super) enum Number {
    Integer(i64),
    Float(f64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLayer {
    pub(super) name: String,
    pub(super) source: String,
    pub(super) target: Option<String>,
    #[serde(default = "default_mode")]
    pub(super) mode: Mode,
    pub(super) union_options: Option<Vec<String>>,
    pub(super) upper_fs: Option<UpperFs>,
    pub(super) upper_size: Option<String>,
}

/// What an upper dir is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum UpperFs {
    /// A directory on the file system it lies in.
    Dir,
    /// A tmpfs of its own, mounted by jmount and gone with junmount.
    Tmpfs,
}

fn default_mode() -> Mode {
    Mode::Union
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJail {
    pub(super) root: String,
    pub(super) layers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "in_file_order")]
    pub(super) upper: Vec<(String, String)>,
    pub(super) update: Option<Vec<String>>,
    pub(super) start: Option<Vec<String>>,
    pub(super) stop: Option<Vec<String>>,
    pub(super) upper_fs: Option<UpperFs>,
    pub(super) upper_size: Option<String>,
    pub(super) network: Option<Network>,
    pub(super) upper_group: Option<String>,
    pub(super) pids: Option<i64>,
    pub(super) memory: Option<String>,
    pub(super) cpu: Option<Number>,
    pub(super) log_max: Option<String>,
}

/// A table of tables in file order, read as a whole (when it is not a table).
#[derive(Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
struct InFileOrder<T>(#[serde(deserialize_with = "in_file_order")] Vec<(String, T)>);

/// A TOML table as a list of its entries in file order (`--all` means file order).
fn in_file_order<'de, D, V>(deserializer: D) -> Result<Vec<(String, V)>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct TableEntries<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for TableEntries<V> {
        type Value = Vec<(String, V)>;
        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a table")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(TableEntries(std::marker::PhantomData))
}
