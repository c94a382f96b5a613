//! The configuration file (jlayers.conf(5)): parsing and every validation rule.
//!
//! Parse errors name `FILE:LINE:COLUMN`; semantic errors name the jail and layer.
//! Every failure here is exit 78.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Bound;
use std::path::{Component, Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

use crate::exit::{ExitCode, fail};
use crate::mounts::at_or_below;
use crate::platform::Os;

/// How a layer is stacked on its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Null mount of the source, union mount of a per-jail upper dir on top.
    Union,
    /// Null mount, read-only.
    Readonly,
    /// Null mount, read-write: writes reach the host.
    Shared,
}

#[derive(Clone, Debug)]
pub struct Layer {
    pub name: String,
    /// Absolute host directory.
    pub source: PathBuf,
    /// Relative to the jail root; no `..`.
    pub target: PathBuf,
    pub mode: Mode,
    pub(crate) union_options: Vec<String>,
    /// `upper_fs = "tmpfs"` for this layer in every jail: `Some(size)` (`None`:
    /// the kernel's default size), unless a jail says otherwise.
    pub tmpfs: Option<Option<String>>,
}

#[derive(Clone, Debug)]
pub struct Jail {
    pub name: String,
    /// Absolute host directory.
    pub root: PathBuf,
    /// Indices into [`Config::layers`], in the order this jail stacks them.
    pub layers: Vec<usize>,
    /// Upper dir of each of this jail's union layers, by layer index.
    pub uppers: BTreeMap<usize, Upper>,
    /// The union layers whose upper dir is a tmpfs of its own, with its size.
    pub(crate) tmpfs: BTreeMap<usize, Option<String>>,
    pub update: Option<Vec<String>>,
    pub start: Option<Vec<String>>,
    pub stop: Option<Vec<String>>,
    /// `network`, when the jail sets it ([`Config::network`] has the resolved one).
    pub network: Option<Network>,
    /// The group let through the dirs that hold the upper dirs (`upper_group`, the
    /// jail's or `[defaults]`), as a gid; `None`: root alone.
    pub upper_group: Option<u32>,
    /// `pids`, `memory` and `cpu`: the jail's own, else those of `[defaults]`.
    pub limits: Limits,
    /// `log_max` in bytes, when the jail sets it ([`Config::log_max`] has the
    /// resolved one).
    pub log_max: Option<u64>,
}

/// What one jupdate run may use (`pids`, `memory`, `cpu`); `None`: no limit set
/// (on Linux a run still gets [`DEFAULT_PIDS`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    pub pids: Option<u64>,
    /// Bytes, and the size as written (for messages).
    pub memory: Option<(u64, String)>,
    /// A number of CPUs, e.g. 1.5.
    pub cpu: Option<f64>,
}

/// The pids limit of a run on Linux when none is set: podman's default.
pub const DEFAULT_PIDS: u64 = 2048;

impl Limits {
    /// `self`'s keys, else `other`'s.
    fn or(self, other: &Limits) -> Limits {
        Limits {
            pids: self.pids.or(other.pids),
            memory: self.memory.or_else(|| other.memory.clone()),
            cpu: self.cpu.or(other.cpu),
        }
    }
}

/// What a run keeps of its output in the log when no `log_max` says otherwise.
pub(crate) const LOG_MAX: u64 = 256 << 20;

/// The network jupdate's updater gets on Linux (`network`; on FreeBSD the jail's
/// jail.conf decides and the key has no effect).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// A network namespace of its own with only loopback, up.
    #[default]
    None,
    /// The host's network namespace: every address, port and abstract socket.
    Host,
}

/// Where a union layer's upper dir lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upper {
    /// A host path outside any jail's control.
    Host(PathBuf),
    /// A path inside the jail root, relative to it: the jail's root user controls
    /// its components, so it is resolved with the same no-symlink rule as targets.
    InRoot(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) path: PathBuf,
    pub upper_root: PathBuf,
    pub log_dir: PathBuf,
    pub lock_dir: PathBuf,
    pub update: Vec<String>,
    pub layers: Vec<Layer>,
    pub jails: Vec<Jail>,
    /// `[defaults] network`.
    pub default_network: Network,
    /// `[defaults] allow_empty`: a file with no jail is meant so (`--all` then
    /// selects none instead of failing, 78).
    pub allow_empty: bool,
    /// `[defaults] upper_group`, as a gid: upper_root's group (every jail's).
    pub upper_group: Option<u32>,
    /// `[defaults] log_max` in bytes, else [`LOG_MAX`].
    pub default_log_max: u64,
    /// The jails' roots as found on disk, looked up once per run.
    roots: std::sync::OnceLock<crate::roots::Roots>,
    /// The layers' sources as found on disk (canonical), looked up once per run.
    sources: std::sync::OnceLock<Vec<PathBuf>>,
}

impl Upper {
    /// The upper dir's absolute path for a jail with this root.
    pub(crate) fn path(&self, root: &Path) -> PathBuf {
        match self {
            Upper::Host(path) => path.clone(),
            Upper::InRoot(rel) => root.join(rel),
        }
    }
}

impl Config {
    /// The default path: `$JLAYERS_CONF`, else the platform's `etc` file.
    pub(crate) fn default_path(os: Os) -> PathBuf {
        match std::env::var_os("JLAYERS_CONF") {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => PathBuf::from(match os {
                Os::FreeBsd => "/usr/local/etc/jlayers.conf",
                Os::Linux => "/etc/jlayers.conf",
            }),
        }
    }

    /// Read and validate the file.
    pub(crate) fn load(path: &Path, os: Os) -> Result<Config> {
        let text = std::fs::read(path)
            .map_err(|e| fail(ExitCode::Config, format!("{}: {e}", path.display())))?;
        let text = String::from_utf8(text).map_err(|e| {
            let (line, col) = line_col(&[], e.utf8_error().valid_up_to());
            fail(
                ExitCode::Config,
                format!("{}:{line}:{col}: not UTF-8 text", path.display()),
            )
        })?;
        Self::parse(&text, path, os)
    }

    /// Validate a config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, os: Os) -> Result<Config> {
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let (line, col) = e
                .span()
                .map_or((1, 1), |s| line_col(text.as_bytes(), s.start));
            let msg = e.message().trim_end().replace('\n', " ");
            let hint = e.span().and_then(|s| parse_hint(text, s.start, &msg));
            let hint = hint.map_or(String::new(), |h| format!("; {h}"));
            fail(
                ExitCode::Config,
                format!("{}:{line}:{col}: {msg}{hint}", path.display()),
            )
        })?;
        build(raw, path, os).map_err(|m| fail(ExitCode::Config, format!("{}: {m}", path.display())))
    }

    /// The network `jail` gets: its own setting, else `[defaults]`, else none.
    pub(crate) fn network(&self, jail: &Jail) -> Network {
        jail.network.unwrap_or(self.default_network)
    }

    /// The most output a run of `jail` writes to its log: its own `log_max`,
    /// else `[defaults]`, else [`LOG_MAX`].
    pub(crate) fn log_max(&self, jail: &Jail) -> u64 {
        jail.log_max.unwrap_or(self.default_log_max)
    }

    /// Layer `i`'s source made canonical (the mount table shows real paths): once
    /// a run, not once a jail.
    pub(crate) fn real_source(&self, i: usize) -> &Path {
        self.sources.get_or_init(|| {
            self.layers
                .iter()
                .map(|l| crate::roots::real(&l.source))
                .collect()
        })[i]
            .as_path()
    }

    pub(crate) fn roots(&self) -> &crate::roots::Roots {
        self.roots
            .get_or_init(|| crate::roots::Roots::of(self.jails.iter().map(|j| j.root.as_path())))
    }
}

/// What the administrator most likely meant, for the TOML errors a config writer
/// meets first: a string where an array is wanted (the array written out), and a
/// jail name with dots read as nested tables (the name quoted).
fn parse_hint(text: &str, at: usize, msg: &str) -> Option<String> {
    let start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?.trim();
    if msg.starts_with("invalid type: string") && msg.ends_with("expected a sequence") {
        let (key, value) = line.split_once('=')?;
        let value: String = toml::from_str::<toml::Value>(&format!("v = {}", value.trim()))
            .ok()?
            .get("v")?
            .as_str()?
            .to_string();
        let words: Vec<String> = value
            .split_whitespace()
            .map(|w| toml::Value::String(w.to_string()).to_string())
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
fn line_col(text: &[u8], offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, col)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    layer: Vec<RawLayer>,
    #[serde(default, deserialize_with = "in_file_order")]
    jail: Vec<(String, RawJail)>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    upper_root: Option<String>,
    log_dir: Option<String>,
    lock_dir: Option<String>,
    update: Option<Vec<String>>,
    network: Option<Network>,
    allow_empty: Option<bool>,
    upper_group: Option<String>,
    pids: Option<i64>,
    memory: Option<String>,
    cpu: Option<Number>,
    log_max: Option<String>,
}

/// `pids`, `memory` and `cpu` as written.
#[derive(Default)]
struct RawLimits {
    pids: Option<i64>,
    memory: Option<String>,
    cpu: Option<Number>,
}

/// A TOML number, integer or not (`cpu = 2` as `cpu = 2.0`).
#[derive(Deserialize)]
#[serde(untagged, expecting = "a number of CPUs (e.g. 1.5)")]
enum Number {
    Integer(i64),
    Float(f64),
}

impl RawLimits {
    fn build(self) -> Result<Limits, String> {
        let pids = match self.pids {
            Some(n) if n < 1 => return Err(format!("pids: {n}: at least 1")),
            n => n.map(|n| n as u64),
        };
        let memory = match self.memory {
            Some(text) => Some((
                byte_size(&text)
                    .ok()
                    .filter(|&b| b > 0)
                    .ok_or_else(|| {
                        format!(
                            "memory: {text:?}: a number of bytes with an optional k, m, g or t (e.g. \"4g\")"
                        )
                    })?,
                text,
            )),
            None => None,
        };
        let cpu = match self.cpu {
            Some(Number::Integer(n)) => Some(n as f64),
            Some(Number::Float(x)) => Some(x),
            None => None,
        };
        if let Some(cpu) = cpu {
            // Below 0.01 CPU neither a cgroup's quota nor rctl's percent holds it.
            if !(0.01..=4096.0).contains(&cpu) {
                return Err(format!(
                    "cpu: {cpu}: a number of CPUs from 0.01 to 4096 (e.g. 1.5)"
                ));
            }
        }
        Ok(Limits { pids, memory, cpu })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    name: String,
    source: String,
    target: Option<String>,
    #[serde(default = "default_mode")]
    mode: Mode,
    union_options: Option<Vec<String>>,
    upper_fs: Option<UpperFs>,
    upper_size: Option<String>,
}

/// What an upper dir is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum UpperFs {
    /// A directory on the file system it lies in.
    Dir,
    /// A tmpfs of its own, mounted by jmount and gone with junmount.
    Tmpfs,
}

/// `upper_fs` and `upper_size` together: `Some(size)` for a tmpfs.
fn upper_fs(fs: Option<UpperFs>, size: Option<String>) -> Result<Option<Option<String>>, String> {
    match (fs, size) {
        (Some(UpperFs::Tmpfs), size) => {
            if let Some(size) = &size {
                let digits = size.trim_end_matches(['k', 'm', 'g', 't', 'K', 'M', 'G', 'T']);
                if digits.is_empty()
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                    || size.len() - digits.len() > 1
                {
                    return Err(format!(
                        "upper_size: {size:?}: a number of bytes with an optional k, m, g or t (e.g. \"4g\")"
                    ));
                }
            }
            Ok(Some(size))
        }
        (_, Some(_)) => Err("upper_size: only with upper_fs = \"tmpfs\"".into()),
        (Some(UpperFs::Dir) | None, None) => Ok(None),
    }
}

fn default_mode() -> Mode {
    Mode::Union
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJail {
    root: String,
    layers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "in_file_order")]
    upper: Vec<(String, String)>,
    update: Option<Vec<String>>,
    start: Option<Vec<String>>,
    stop: Option<Vec<String>>,
    upper_fs: Option<UpperFs>,
    upper_size: Option<String>,
    network: Option<Network>,
    upper_group: Option<String>,
    pids: Option<i64>,
    memory: Option<String>,
    cpu: Option<Number>,
    log_max: Option<String>,
}

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

fn build(mut raw: Raw, path: &Path, os: Os) -> Result<Config, String> {
    let default_network = raw.defaults.network.unwrap_or_default();
    let allow_empty = raw.defaults.allow_empty.unwrap_or(false);
    let default_group = match &raw.defaults.upper_group {
        Some(group) => Some(group_id(group).map_err(|e| format!("defaults: upper_group: {e}"))?),
        None => None,
    };
    let default_limits = RawLimits {
        pids: raw.defaults.pids,
        memory: raw.defaults.memory.clone(),
        cpu: raw.defaults.cpu.take(),
    }
    .build()
    .map_err(|e| format!("defaults: {e}"))?;
    let default_log_max = match &raw.defaults.log_max {
        Some(given) => byte_size(given).map_err(|e| format!("defaults: log_max: {e}"))?,
        None => LOG_MAX,
    };
    let Defaults {
        upper_root,
        log_dir,
        lock_dir,
        update,
    } = defaults(raw.defaults, os)?;
    let mut layers: Vec<Layer> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for raw_layer in raw.layer {
        let layer = build_layer(raw_layer, &names, os)?;
        names.insert(layer.name.clone(), layers.len());
        layers.push(layer);
    }
    let index = LayerIndex::new(&layers, names);
    check_nesting(&layers, &index)?;
    let mut jails = Vec::new();
    for (name, raw_jail) in raw.jail {
        let mut jail = build_jail(name, raw_jail, &layers, &index, &upper_root, os)?;
        jail.upper_group = jail.upper_group.or(default_group);
        jail.limits = jail.limits.or(&default_limits);
        jails.push(jail);
    }
    shared_paths(&jails, &layers)?;
    Ok(Config {
        path: path.to_path_buf(),
        upper_root,
        log_dir,
        lock_dir,
        update,
        layers,
        jails,
        default_network,
        allow_empty,
        upper_group: default_group,
        default_log_max,
        roots: Default::default(),
        sources: Default::default(),
    })
}

/// `[defaults]`, with the platform's defaults filled in.
struct Defaults {
    upper_root: PathBuf,
    log_dir: PathBuf,
    lock_dir: PathBuf,
    update: Vec<String>,
}

fn defaults(raw: RawDefaults, os: Os) -> Result<Defaults, String> {
    let path = |key: &str, given: Option<String>, default: &str| {
        abs_path(given.as_deref().unwrap_or(default)).map_err(|e| format!("defaults: {key}: {e}"))
    };
    // hier(7) on FreeBSD; the FHS's /run and /var/lib on Linux.
    let (lock_default, upper_default) = match os {
        Os::FreeBsd => ("/var/run/jlayers", "/usr/local/var/jlayers"),
        Os::Linux => ("/run/jlayers", "/var/lib/jlayers"),
    };
    let update = raw.update.unwrap_or_else(|| {
        ["portmaster", "-a", "-G", "--no-confirm"]
            .map(String::from)
            .to_vec()
    });
    if update.is_empty() {
        return Err("defaults: update: empty command".into());
    }
    Ok(Defaults {
        upper_root: path("upper_root", raw.upper_root, upper_default)?,
        log_dir: path("log_dir", raw.log_dir, "/var/log/jlayers")?,
        lock_dir: path("lock_dir", raw.lock_dir, lock_default)?,
        update,
    })
}

/// The layers looked up by name and by target, so that every rule is checked in
/// time linear in the layers (and jails) of the file, never all against all.
struct LayerIndex {
    by_name: HashMap<String, usize>,
    /// Each target's layers, in file order.
    by_target: HashMap<PathBuf, Vec<usize>>,
}

impl LayerIndex {
    fn new(layers: &[Layer], by_name: HashMap<String, usize>) -> LayerIndex {
        let mut by_target: HashMap<PathBuf, Vec<usize>> = HashMap::new();
        for (index, layer) in layers.iter().enumerate() {
            by_target
                .entry(layer.target.clone())
                .or_default()
                .push(index);
        }
        LayerIndex { by_name, by_target }
    }

    /// The layers whose target strictly holds `target` (its parents), nearest first.
    fn parents<'a>(&'a self, target: &'a Path) -> impl Iterator<Item = usize> + 'a {
        target
            .ancestors()
            .skip(1)
            .filter_map(|a| self.by_target.get(a))
            .flatten()
            .copied()
    }
}

/// One `[[layer]]`, checked against the layers before it (`before`: their names).
fn build_layer(raw: RawLayer, before: &HashMap<String, usize>, os: Os) -> Result<Layer, String> {
    let ctx = |msg: String| format!("layer {}: {msg}", raw.name);
    if raw.name.is_empty() || raw.name.contains(['/', '\0']) || raw.name.trim() != raw.name {
        return Err(ctx("bad layer name".into()));
    }
    if before.contains_key(&raw.name) {
        return Err(ctx("duplicate layer name".into()));
    }
    let source = abs_path(&raw.source).map_err(|e| ctx(format!("source: {e}")))?;
    let target = match &raw.target {
        Some(target) => rel_path(target).map_err(|e| ctx(format!("target: {e}")))?,
        None => rel_path(raw.source.trim_start_matches('/'))
            .map_err(|e| ctx(format!("target (from source): {e}")))?,
    };
    let union_options = raw.union_options.unwrap_or_else(|| vec!["noatime".into()]);
    if union_options
        .iter()
        .any(|o| o.is_empty() || o.contains(','))
    {
        return Err(ctx(
            "union_options: each entry is one option, without commas".into(),
        ));
    }
    if os == Os::FreeBsd {
        union_options
            .iter()
            .try_for_each(|o| unionfs_option(o))
            .map_err(|e| ctx(format!("union_options: {e}")))?;
    }
    let tmpfs = upper_fs(raw.upper_fs, raw.upper_size).map_err(ctx)?;
    if tmpfs.is_some() && raw.mode != Mode::Union {
        return Err(ctx("upper_fs: only a union layer has an upper dir".into()));
    }
    Ok(Layer {
        name: raw.name,
        source,
        target,
        mode: raw.mode,
        union_options,
        tmpfs,
    })
}

/// The `-o` options mount_unionfs(8) may get from a layer: the mount flags every
/// file system takes, then unionfs's own (sys/fs/unionfs/union_vfsops.c,
/// unionfs_domount), without `below` and `target`/`from`.
const UNIONFS_OPTIONS: &str =
    "noatime, nosuid, noexec, ro, copymode=, whiteout=, udir=, ufile=, uid=, gid=";

/// Refuse a unionfs option that would make the jail write outside its upper dir,
/// or that unionfs would ignore without a word (it never calls vfs_filteropt).
fn unionfs_option(option: &str) -> Result<(), String> {
    let (name, value) = match option.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (option, None),
    };
    match (name, value) {
        // unionfs itself refuses a bad value (EINVAL, "Invalid copymode"): only
        // the names need checking here.
        ("noatime" | "nosuid" | "noexec" | "ro", None) => Ok(()),
        ("copymode" | "whiteout" | "udir" | "ufile" | "uid" | "gid", Some(_)) => Ok(()),
        // unionfs_domount: with `below` the null mount of the source becomes the
        // writable layer; `target`/`from` name another upper dir.
        ("below", _) => Err("\"below\" swaps the layers: the jail would write into the source, the host's tree, through its null mount; not allowed".into()),
        ("target" | "from", _) => Err(format!(
            "\"{option}\" would make unionfs take another directory as the writable layer; not allowed"
        )),
        _ => Err(format!(
            "unknown option \"{option}\" (unionfs would ignore it without a word); accepted: {UNIONFS_OPTIONS}"
        )),
    }
}

/// A nested layer is mounted after its parent: the file order must say so.
fn check_nesting(layers: &[Layer], index: &LayerIndex) -> Result<(), String> {
    for (position, layer) in layers.iter().enumerate() {
        // The first parent listed after this layer.
        if let Some(parent) = index.parents(&layer.target).filter(|&p| p > position).min() {
            return Err(format!(
                "layer {}: listed before its parent layer {} (mounted inside it)",
                layer.name, layers[parent].name
            ));
        }
        let first = index.by_target[&layer.target][0];
        if first < position {
            return Err(format!(
                "layer {}: same target as layer {}",
                layer.name, layers[first].name
            ));
        }
    }
    Ok(())
}

/// One `[jail.NAME]`.
fn build_jail(
    name: String,
    raw: RawJail,
    layers: &[Layer],
    index: &LayerIndex,
    upper_root: &Path,
    os: Os,
) -> Result<Jail, String> {
    let ctx = |msg: String| format!("jail {name}: {msg}");
    if !valid_jail_name(&name) {
        return Err(ctx(
            "bad jail name (letters, digits, '-' and '_' only)".into()
        ));
    }
    // jls -j and jexec take an all-digit argument as a jail ID, never a name.
    if os == Os::FreeBsd && name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ctx(
            "an all-digit jail name is a jail ID to jls(8) and jexec(8): use a name with a letter"
                .into(),
        ));
    }
    let root = abs_path(&raw.root).map_err(|e| ctx(format!("root: {e}")))?;
    let upper_group = match &raw.upper_group {
        Some(group) => Some(group_id(group).map_err(|e| ctx(format!("upper_group: {e}")))?),
        None => None,
    };
    let picked = jail_layers(&name, raw.layers.as_deref(), layers, index)?;
    let uppers = jail_uppers(&name, &raw.upper, &picked, layers, index, upper_root)?;
    let tmpfs = jail_tmpfs(&raw, &uppers, layers).map_err(ctx)?;
    check_uppers(&name, &root, &uppers, layers)?;
    if os == Os::FreeBsd {
        freebsd_paths(&root, &picked, &uppers, layers).map_err(ctx)?;
    }
    for (what, cmd) in [
        ("update", &raw.update),
        ("start", &raw.start),
        ("stop", &raw.stop),
    ] {
        if cmd.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(ctx(format!("{what}: empty command")));
        }
    }
    let limits = RawLimits {
        pids: raw.pids,
        memory: raw.memory,
        cpu: raw.cpu,
    }
    .build()
    .map_err(ctx)?;
    let log_max = raw
        .log_max
        .as_deref()
        .map(byte_size)
        .transpose()
        .map_err(|e| ctx(format!("log_max: {e}")))?;
    Ok(Jail {
        limits,
        name,
        root,
        layers: picked,
        uppers,
        tmpfs,
        update: raw.update,
        start: raw.start,
        stop: raw.stop,
        network: raw.network,
        upper_group,
        log_max,
    })
}

/// `upper_group`: a group name (getgrnam(3)) or a number.
fn group_id(written: &str) -> Result<u32, String> {
    if !written.is_empty() && written.bytes().all(|b| b.is_ascii_digit()) {
        return written
            .parse()
            .map_err(|_| format!("{written:?}: not a group id"));
    }
    match nix::unistd::Group::from_name(written) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("unknown group {written:?}")),
        Err(err) => Err(format!("group {written:?}: {}", err.desc())),
    }
}

/// A size as `upper_size` takes it: a number of bytes with an optional k, m, g or
/// t (powers of 1024).
fn byte_size(given: &str) -> Result<u64, String> {
    let digits = given.trim_end_matches(['k', 'm', 'g', 't', 'K', 'M', 'G', 'T']);
    let shift = match &given[digits.len()..] {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        _ => 64,
    };
    let number = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse::<u64>().ok())
        .flatten();
    match number {
        Some(number) if shift < 64 && number.leading_zeros() >= shift => Ok(number << shift),
        _ => Err(format!(
            "{given:?}: a number of bytes with an optional k, m, g or t (e.g. \"256m\")"
        )),
    }
}

/// Which of a jail's union layers get a tmpfs upper, and its size. A jail's
/// upper_fs (set or not: "dir" too) decides for all its union layers; else each
/// layer's own.
fn jail_tmpfs(
    raw: &RawJail,
    uppers: &BTreeMap<usize, Upper>,
    layers: &[Layer],
) -> Result<BTreeMap<usize, Option<String>>, String> {
    let jail_fs = raw.upper_fs.is_some() || raw.upper_size.is_some();
    let jail_tmpfs = upper_fs(raw.upper_fs, raw.upper_size.clone())?;
    Ok(uppers
        .keys()
        .filter_map(|&index| {
            let tmpfs = if jail_fs {
                jail_tmpfs.clone()
            } else {
                layers[index].tmpfs.clone()
            };
            tmpfs.map(|size| (index, size))
        })
        .collect())
}

/// FreeBSD's `mount -p` separates fields with white space: a path holding some
/// could not be read back.
fn freebsd_paths(
    root: &Path,
    picked: &[usize],
    uppers: &BTreeMap<usize, Upper>,
    layers: &[Layer],
) -> Result<(), String> {
    let mut paths = vec![root.to_path_buf()];
    for &index in picked {
        paths.push(layers[index].source.clone());
        paths.push(root.join(&layers[index].target));
    }
    paths.extend(uppers.values().map(|u| u.path(root)));
    match paths.iter().find(|p| has_white_space(p)) {
        Some(path) => Err(format!(
            "path with white space: {} (the mount -p table cannot carry it on FreeBSD)",
            path.display()
        )),
        None => Ok(()),
    }
}

/// The layers a jail gets, as indices, in its order; parents before nested ones.
fn jail_layers(
    name: &str,
    names: Option<&[String]>,
    layers: &[Layer],
    index: &LayerIndex,
) -> Result<Vec<usize>, String> {
    let ctx = |msg: String| format!("jail {name}: {msg}");
    // File order: check_nesting has put parents first already.
    let Some(names) = names else {
        return Ok((0..layers.len()).collect());
    };
    let mut picked = Vec::new();
    // Each listed layer's place in this jail's list.
    let mut pos: HashMap<usize, usize> = HashMap::new();
    for layer_name in names {
        let layer = *index
            .by_name
            .get(layer_name)
            .ok_or_else(|| ctx(format!("unknown layer {layer_name}")))?;
        if pos.insert(layer, picked.len()).is_some() {
            return Err(ctx(format!("layer {layer_name} listed twice")));
        }
        picked.push(layer);
    }
    for (position, &layer) in picked.iter().enumerate() {
        // The first of its parents this jail lists after it.
        if let Some(parent) = index
            .parents(&layers[layer].target)
            .filter_map(|p| pos.get(&p).filter(|&&at| at > position).map(|&at| (at, p)))
            .min()
            .map(|(_, p)| p)
        {
            return Err(ctx(format!(
                "layer {}: listed before its parent layer {}",
                layers[layer].name, layers[parent].name
            )));
        }
    }
    Ok(picked)
}

/// The upper dir of each of a jail's union layers: as given (`upper.LAYER`), else
/// `<upper_root>/<jail>/<layer>`.
fn jail_uppers(
    name: &str,
    given: &[(String, String)],
    picked: &[usize],
    layers: &[Layer],
    index: &LayerIndex,
    upper_root: &Path,
) -> Result<BTreeMap<usize, Upper>, String> {
    let mut uppers = BTreeMap::new();
    let mut named: HashSet<&str> = HashSet::new();
    // Most jails give no upper: no set of their layers then.
    let used: HashSet<usize> = if given.is_empty() {
        HashSet::new()
    } else {
        picked.iter().copied().collect()
    };
    for (lname, written) in given {
        let lctx = |msg: String| format!("jail {name}: layer {lname}: {msg}");
        let layer = *index
            .by_name
            .get(lname)
            .ok_or_else(|| format!("jail {name}: upper.{lname}: unknown layer {lname}"))?;
        if !used.contains(&layer) {
            return Err(lctx(
                "upper given for a layer this jail does not use".into(),
            ));
        }
        if layers[layer].mode != Mode::Union {
            return Err(lctx(
                "upper given for a layer that is not a union layer".into(),
            ));
        }
        let upper = if written.starts_with('/') {
            Upper::Host(abs_path(written).map_err(|e| lctx(format!("upper: {e}")))?)
        } else {
            Upper::InRoot(rel_path(written).map_err(|e| lctx(format!("upper: {e}")))?)
        };
        named.insert(lname);
        uppers.insert(layer, upper);
    }
    for &index in picked {
        let layer = &layers[index];
        if layer.mode != Mode::Union || named.contains(layer.name.as_str()) {
            continue;
        }
        uppers.insert(index, Upper::Host(upper_root.join(name).join(&layer.name)));
    }
    Ok(uppers)
}

/// An upper dir is neither inside nor around its layer's source or target.
fn check_uppers(
    name: &str,
    root: &Path,
    uppers: &BTreeMap<usize, Upper>,
    layers: &[Layer],
) -> Result<(), String> {
    // Every path here is normal: compared by bytes.
    for (&index, upper) in uppers {
        let layer = &layers[index];
        let lctx = |msg: String| format!("jail {name}: layer {}: {msg}", layer.name);
        let upath = upper.path(root);
        let target = root.join(&layer.target);
        if at_or_below(&upath, &layer.source) {
            return Err(lctx(format!(
                "upper dir {} is inside the layer's source",
                upath.display()
            )));
        }
        if at_or_below(&upath, &target) {
            return Err(lctx(format!(
                "upper dir {} is inside the layer's target",
                upath.display()
            )));
        }
        if at_or_below(&target, &upath) || at_or_below(&layer.source, &upath) {
            return Err(lctx(format!(
                "upper dir {} contains the layer's source or target",
                upath.display()
            )));
        }
    }
    Ok(())
}

/// Rules across jails: one root per jail; no upper dir that is, holds or shares
/// a tree with a jail root or another layer's upper dir (two stacks writing one
/// tree, or a jclean of one emptying the other). Each path is looked up in sorted
/// sets, never compared with every other one.
fn shared_paths(jails: &[Jail], layers: &[Layer]) -> Result<(), String> {
    if any_shared(jails) {
        name_shared(jails, layers)
    } else {
        Ok(())
    }
}

/// [`shared_paths`]'s rules one by one, in file order: the first broken one.
fn name_shared(jails: &[Jail], layers: &[Layer]) -> Result<(), String> {
    let mut roots: Sorted<usize> = Sorted::default();
    for (position, jail) in jails.iter().enumerate() {
        if let Some(&other) = roots.get(&jail.root) {
            return Err(format!(
                "jail {}: same root as jail {}: {}",
                jail.name,
                jails[other].name,
                jail.root.display()
            ));
        }
        roots.insert(&jail.root, position);
    }
    // The upper dirs checked so far, with their jail and layer.
    let mut seen: Sorted<(usize, usize)> = Sorted::default();
    for (position, jail) in jails.iter().enumerate() {
        for (&layer, upper) in &jail.uppers {
            let path = upper.path(&jail.root);
            let ctx = || {
                format!(
                    "jail {}: layer {}: upper dir {}",
                    jail.name,
                    layers[layer].name,
                    path.display()
                )
            };
            // The first jail in the file whose root is, or lies below, the upper.
            if let Some(&held) = roots.at_or_below(&path).min() {
                return Err(format!(
                    "{} is or holds the root of jail {}",
                    ctx(),
                    jails[held].name
                ));
            }
            // The first upper checked before that is, holds or lies in this one.
            let above = path.ancestors().skip(1).filter_map(|a| seen.get(a));
            if let Some(&(other_jail, other_layer)) = seen.at_or_below(&path).chain(above).min() {
                return Err(format!(
                    "{} is, holds or lies in the upper dir of jail {}: layer {}",
                    ctx(),
                    jails[other_jail].name,
                    layers[other_layer].name
                ));
            }
            seen.insert(&path, (position, layer));
        }
    }
    Ok(())
}

/// Whether any of [`shared_paths`]'s rules is broken, by one sort of every root
/// and upper dir: the common case (none is) costs no tree of paths; a broken
/// rule is then named by [`shared_paths`] itself, in its order.
fn any_shared(jails: &[Jail]) -> bool {
    const ROOT: u8 = 0;
    const UPPER: u8 = 1;
    // Each path's bytes with `/` as NUL (which no path holds): sorted, what lies
    // below a path then comes right after it (and its equals), before anything
    // else, as `a/b` sorts before `a-b`.
    let key = |path: &Path, kind: u8| {
        let mut bytes: Vec<u8> = path.as_os_str().as_encoded_bytes().to_vec();
        for byte in &mut bytes {
            if *byte == b'/' {
                *byte = 0;
            }
        }
        (bytes, kind)
    };
    let mut all: Vec<(Vec<u8>, u8)> = Vec::with_capacity(jails.len() * 2);
    for jail in jails {
        all.push(key(&jail.root, ROOT));
        all.extend(
            jail.uppers
                .values()
                .map(|up| key(&up.path(&jail.root), UPPER)),
        );
    }
    all.sort_unstable();
    all.windows(2).any(|pair| {
        let ((first, first_kind), (next, _)) = (&pair[0], &pair[1]);
        // (`/` alone ends in its separator: everything is below it.)
        let below =
            next.starts_with(first) && (first.ends_with(&[0]) || next.get(first.len()) == Some(&0));
        // One path twice (whatever each is), or an upper holding anything; an
        // upper or a root in a root is fine.
        first == next || (below && *first_kind == UPPER)
    })
}

/// Normalised absolute paths (no `.`, `..`, `//` or trailing slash) by their
/// bytes, sorted: what lies strictly below `path` is the range of keys that
/// start with `path/`. Hashed too: a path itself is found without comparing long
/// common prefixes down the tree.
struct Sorted<V> {
    in_order: BTreeMap<Vec<u8>, V>,
    by_hash: HashMap<Vec<u8>, V>,
}

impl<V> Default for Sorted<V> {
    fn default() -> Self {
        Sorted {
            in_order: BTreeMap::new(),
            by_hash: HashMap::new(),
        }
    }
}

impl<V: Copy> Sorted<V> {
    fn insert(&mut self, path: &Path, value: V) {
        let key = path.as_os_str().as_encoded_bytes().to_vec();
        self.by_hash.insert(key.clone(), value);
        self.in_order.insert(key, value);
    }

    fn get(&self, path: &Path) -> Option<&V> {
        self.by_hash.get(path.as_os_str().as_encoded_bytes())
    }

    /// The values of `path` and of every path below it.
    fn at_or_below<'a>(&'a self, path: &Path) -> impl Iterator<Item = &'a V> + 'a {
        let mut prefix = path.as_os_str().as_encoded_bytes().to_vec();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        let below = self
            .in_order
            .range::<[u8], _>((Bound::Included(&prefix[..]), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v);
        self.get(path).into_iter().chain(below)
    }
}

/// Jail names end up in file names, `service jail onestart NAME` and jls(8).
fn valid_jail_name(name: &str) -> bool {
    !name.is_empty()
        && name != "-"
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn has_white_space(path: &Path) -> bool {
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .any(|b| b.is_ascii_whitespace())
}

/// An absolute path, normalised (no `.`, no `..`, no trailing slash).
fn abs_path(written: &str) -> Result<PathBuf, String> {
    let path = Path::new(written);
    if !path.is_absolute() {
        return Err(format!("{written:?} is not an absolute path"));
    }
    normal(path, written)
}

/// A path relative to a jail root: not absolute, no `..`, not empty.
fn rel_path(written: &str) -> Result<PathBuf, String> {
    let path = Path::new(written);
    if path.is_absolute() {
        return Err(format!(
            "{written:?} is absolute; give it relative to the jail root"
        ));
    }
    let normalised = normal(path, written)?;
    if normalised.as_os_str().is_empty() {
        return Err(format!("{written:?} names the jail root itself"));
    }
    Ok(normalised)
}

/// `path` (as `written`) made normal (no `.`, `//` or trailing slash); refused
/// if it holds `..` or a NUL byte.
fn normal(path: &Path, written: &str) -> Result<PathBuf, String> {
    if written.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    // Most paths are written normal already: taken as they are.
    let body = written.strip_prefix('/').unwrap_or(written);
    if !body.is_empty() && body.split('/').all(|c| !matches!(c, "" | "." | "..")) {
        return Ok(PathBuf::from(written));
    }
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => return Err(format!("{written:?} contains '..'")),
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{ExitCode, code_of};

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/jlayers.conf"), Os::Linux)
    }

    fn err(text: &str) -> String {
        let error = parse(text).unwrap_err();
        assert_eq!(code_of(&error), ExitCode::Config);
        format!("{error:#}")
    }

    /// `pids`, `memory` and `cpu`: a jail's own over `[defaults]`, key by key;
    /// nonsense refused.
    #[test]
    fn limits() {
        let cfg = parse(
            "[defaults]\npids = 100\nmemory = \"1g\"\n\
             [jail.a]\nroot = '/a'\ncpu = 2\n\
             [jail.b]\nroot = '/b'\npids = 5\ncpu = 0.5\n",
        )
        .unwrap();
        assert_eq!(
            cfg.jails[0].limits,
            Limits {
                pids: Some(100),
                memory: Some((1 << 30, "1g".into())),
                cpu: Some(2.0)
            }
        );
        assert_eq!(cfg.jails[1].limits.pids, Some(5));
        assert_eq!(cfg.jails[1].limits.cpu, Some(0.5));
        assert_eq!(
            parse("[jail.a]\nroot='/a'\n").unwrap().jails[0].limits,
            Limits::default()
        );
        assert!(err("[jail.a]\nroot='/a'\npids = 0\n").contains("pids: 0: at least 1"));
        assert!(err("[defaults]\nmemory = \"lots\"\n").contains("defaults: memory"));
        assert!(err("[jail.a]\nroot='/a'\ncpu = 0\n").contains("cpu: 0"));
        assert!(err("[jail.a]\nroot='/a'\ncpu = \"1\"\n").contains("a number of CPUs"));
    }

    const SPEC: &str = r#"
[defaults]
upper_root = "/usr/local/var/jlayers"
log_dir    = "/var/log/jlayers"
lock_dir   = "/var/run/jlayers"
update     = ["portmaster", "-a", "-G", "--no-confirm"]

[[layer]]
name   = "ports"
source = "/usr/ports"
target = "usr/ports"
mode   = "union"
union_options = ["noatime"]

[[layer]]
name   = "distfiles"
source = "/usr/ports/distfiles"
target = "usr/ports/distfiles"
mode   = "shared"

[jail.server]
root   = "/usr/local/var/jails/192.168.0.100"
upper.ports = "usr/tmp/foo"

[jail.web]
root   = "/usr/local/var/jails/192.168.0.101"
"#;

    #[test]
    fn spec_example() {
        let config = parse(SPEC).unwrap();
        assert_eq!(config.layers.len(), 2);
        assert_eq!(
            config.jails.iter().map(|j| &j.name[..]).collect::<Vec<_>>(),
            ["server", "web"]
        );
        let server = &config.jails[0];
        assert_eq!(server.layers, [0, 1]);
        assert_eq!(server.uppers[&0], Upper::InRoot("usr/tmp/foo".into()));
        assert_eq!(
            config.jails[1].uppers[&0],
            Upper::Host("/usr/local/var/jlayers/web/ports".into())
        );
        assert!(!config.jails[1].uppers.contains_key(&1));
    }

    /// The first mistakes of a config writer get what was most likely meant.
    #[test]
    fn hints_for_first_mistakes() {
        let msg = err("[defaults]\nupdate = \"portmaster -a -G\"\n");
        assert!(
            msg.ends_with(
                "expected a sequence; write it as an array, e.g. update = [\"portmaster\", \"-a\", \"-G\"]"
            ),
            "{msg}"
        );
        let msg = err("[jail.www.example.com]\nroot = \"/j/www\"\n");
        assert!(
            msg.ends_with(
                "[jail.www.example.com] is a jail \"www\" with tables below it; a jail \
                 name is one word (letters, digits, '-' and '_'), e.g. [jail.www-example-com]"
            ),
            "{msg}"
        );
        // Other errors get no guess.
        assert!(!err("[jail.w]\nroot = 5\n").contains("; "));
        assert!(err("[jail.\"www.example.com\"]\nroot = \"/j/www\"\n").contains("bad jail name"));
    }

    #[test]
    fn defaults_and_file_order() {
        let config = parse(
            "[[layer]]\nname='p'\nsource='/usr/ports/'\n[jail.zz]\nroot='/j/zz'\n[jail.aa]\nroot='/j/aa'\n",
        )
        .unwrap();
        assert_eq!(config.layers[0].target, Path::new("usr/ports"));
        assert_eq!(config.layers[0].mode, Mode::Union);
        assert_eq!(config.layers[0].union_options, ["noatime"]);
        assert_eq!(config.lock_dir, Path::new("/run/jlayers"));
        assert_eq!(config.upper_root, Path::new("/var/lib/jlayers"));
        assert!(!config.allow_empty);
        assert_eq!(config.update, ["portmaster", "-a", "-G", "--no-confirm"]);
        assert_eq!(config.jails[0].name, "zz");
        let freebsd = Config::parse("[jail.a]\nroot='/j'\n", Path::new("x"), Os::FreeBsd).unwrap();
        assert_eq!(freebsd.lock_dir, Path::new("/var/run/jlayers"));
        assert_eq!(freebsd.upper_root, Path::new("/usr/local/var/jlayers"));
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let msg = err("[[layer]]\nname = 'p'\nsource = '/usr/ports'\n  colour = 'red'\n");
        assert!(
            msg.starts_with("/etc/jlayers.conf:4:3: unknown field `colour`"),
            "{msg}"
        );
        let msg = err("[jail.a]\nroot='/j'\nstrat = ['x']\n");
        assert!(
            msg.starts_with("/etc/jlayers.conf:3:1: unknown field `strat`"),
            "{msg}"
        );
        let msg = err("[defaults]\nupper_rot = '/x'\n");
        assert!(msg.contains(":2:1: unknown field `upper_rot`"), "{msg}");
        let msg = err("[[layer]]\nname='p'\nsource='/p'\nmode='unoin'\n");
        assert!(msg.contains(":4:6: unknown variant `unoin`"), "{msg}");
        assert!(!err("[x\n").contains('\n'));
    }

    #[test]
    fn validation_rules() {
        let layer = "[[layer]]\nname='p'\nsource='/usr/ports'\n";
        let shared = "[[layer]]\nname='p'\nsource='/usr/ports'\nmode='shared'\nupper_fs='tmpfs'\n";
        let cases: &[(&str, &str)] = &[
            (&format!("{layer}{layer}"), "layer p: duplicate layer name"),
            (
                &format!("{layer}[jail.a]\nroot='/j'\nlayers=['q']\n"),
                "jail a: unknown layer q",
            ),
            (
                &format!("{layer}[jail.a]\nroot='/j'\nupper.q='x'\n"),
                "jail a: upper.q: unknown layer q",
            ),
            (
                &format!("{layer}[jail.a]\nroot='j'\n"),
                "jail a: root: \"j\" is not an absolute path",
            ),
            (
                "[[layer]]\nname='p'\nsource='usr/ports'\n",
                "layer p: source: \"usr/ports\" is not an absolute path",
            ),
            (
                "[[layer]]\nname='p'\nsource='/p'\ntarget='/usr/ports'\n",
                "layer p: target: \"/usr/ports\" is absolute",
            ),
            (
                "[[layer]]\nname='p'\nsource='/p'\ntarget='usr/../../etc'\n",
                "layer p: target: \"usr/../../etc\" contains '..'",
            ),
            (
                "[[layer]]\nname='d'\nsource='/d'\ntarget='usr/ports/distfiles'\n[[layer]]\nname='p'\nsource='/p'\ntarget='usr/ports'\n",
                "layer d: listed before its parent layer p",
            ),
            (
                "[[layer]]\nname='p'\nsource='/p'\ntarget='usr/ports'\n[[layer]]\nname='d'\nsource='/d'\ntarget='usr/ports/distfiles'\n[jail.a]\nroot='/j'\nlayers=['d','p']\n",
                "jail a: layer d: listed before its parent layer p",
            ),
            (
                &format!("{layer}[jail.a]\nroot='/j'\nupper.p='usr/ports/up'\n"),
                "jail a: layer p: upper dir /j/usr/ports/up is inside the layer's target",
            ),
            (
                &format!("{layer}[jail.a]\nroot='/j'\nupper.p='/usr/ports/up'\n"),
                "jail a: layer p: upper dir /usr/ports/up is inside the layer's source",
            ),
            (
                &format!("[defaults]\nupper_root='/usr/ports/x'\n{layer}[jail.a]\nroot='/j'\n"),
                "jail a: layer p: upper dir /usr/ports/x/a/p is inside the layer's source",
            ),
            (
                &format!("{layer}[jail.a]\nroot='/j'\nupper.p='../x'\n"),
                "jail a: layer p: upper: \"../x\" contains '..'",
            ),
            (
                &format!("{layer}[jail.'a.b']\nroot='/j'\n"),
                "jail a.b: bad jail name",
            ),
            (
                &format!("{layer}[jail.a]\nroot='/j'\nupdate=[]\n"),
                "jail a: update: empty command",
            ),
            (
                &format!("{layer}[jail.a]\nroot='/j'\n[jail.b]\nroot='/j/'\n"),
                "jail b: same root as jail a: /j",
            ),
            (
                &format!("{layer}[jail.a]\nroot='/j/a'\nupper.p='/u'\n[jail.b]\nroot='/u/b'\n"),
                "jail a: layer p: upper dir /u is or holds the root of jail b",
            ),
            (
                &format!(
                    "{layer}[jail.a]\nroot='/j/a'\nupper.p='/u'\n[jail.b]\nroot='/j/b'\nupper.p='/u/b'\n"
                ),
                "jail b: layer p: upper dir /u/b is, holds or lies in the upper dir of jail a: layer p",
            ),
            (
                &format!("{layer}upper_size='4g'\n[jail.a]\nroot='/j'\n"),
                "layer p: upper_size: only with upper_fs = \"tmpfs\"",
            ),
            (
                &format!("{layer}upper_fs='tmpfs'\nupper_size='4x'\n[jail.a]\nroot='/j'\n"),
                "layer p: upper_size: \"4x\": a number of bytes",
            ),
            (
                &format!("{layer}upper_fs='zfs'\n[jail.a]\nroot='/j'\n"),
                "unknown variant `zfs`",
            ),
            (
                &format!("{shared}[jail.a]\nroot='/j'\n"),
                "layer p: upper_fs: only a union layer has an upper dir",
            ),
            (
                &format!("{layer}[jail.a]\nroot='/j'\nupper_size='1g'\n"),
                "jail a: upper_size: only with upper_fs",
            ),
        ];
        for (text, want) in cases {
            let msg = err(text);
            assert!(msg.contains(want), "want {want:?} in {msg:?}");
        }
    }

    /// A path taken as written is the one its components make.
    #[test]
    fn normal_as_written_or_rebuilt() {
        for written in [
            "/a/b", "a/b", "/a//b", "/a/./b", "/a/b/", "./a", "a/.", "/", ".", "/a/../b", "a/..b",
            "/.a/b.", "a", "//a",
        ] {
            let by_components = (|| {
                let mut out = PathBuf::new();
                for component in Path::new(written).components() {
                    match component {
                        Component::ParentDir => return None,
                        Component::CurDir => {}
                        other => out.push(other.as_os_str()),
                    }
                }
                Some(out)
            })();
            let got = normal(Path::new(written), written).ok();
            assert_eq!(got, by_components, "{written:?}");
            if let Some(path) = got {
                assert_eq!(
                    path.as_os_str().as_encoded_bytes(),
                    {
                        let mut bytes = Vec::new();
                        for (index, component) in path.components().enumerate() {
                            if index > 1 || (index == 1 && !path.is_absolute()) {
                                bytes.push(b'/');
                            }
                            bytes.extend_from_slice(component.as_os_str().as_encoded_bytes());
                        }
                        bytes
                    },
                    "{written:?}: bytes as the components write them"
                );
            }
        }
    }

    /// The one-sort check says a rule is broken whenever the rule-by-rule one
    /// names one (it may say so when none is: the rules then run one by one).
    #[test]
    fn quick_shared_check_misses_nothing() {
        let paths = [
            "/", "/a", "/a/b", "/a/b/c", "/a-b", "/a-b/c", "/ab", "/a/bc", "/b", "/b/a",
        ];
        let layer = |name: &str| Layer {
            name: name.into(),
            source: "/src".into(),
            target: "t".into(),
            mode: Mode::Union,
            union_options: Vec::new(),
            tmpfs: None,
        };
        let layers = [layer("p"), layer("q")];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n
        };
        let (mut broken, mut fine) = (0, 0);
        for _ in 0..20_000 {
            let jails: Vec<Jail> = (0..1 + next(3))
                .map(|number| {
                    let mut uppers = BTreeMap::new();
                    for layer_index in 0..next(3) {
                        uppers.insert(layer_index, Upper::Host(paths[next(paths.len())].into()));
                    }
                    Jail {
                        name: format!("j{number}"),
                        root: paths[next(paths.len())].into(),
                        layers: uppers.keys().copied().collect(),
                        uppers,
                        tmpfs: BTreeMap::new(),
                        upper_group: None,
                        update: None,
                        start: None,
                        stop: None,
                        network: None,
                        limits: Limits::default(),
                        log_max: None,
                    }
                })
                .collect();
            let named = name_shared(&jails, &layers).is_err();
            assert!(
                !named || any_shared(&jails),
                "missed: {:?}",
                jails
                    .iter()
                    .map(|j| (&j.root, &j.uppers))
                    .collect::<Vec<_>>()
            );
            if named {
                broken += 1
            } else {
                fine += 1
            }
            assert_eq!(shared_paths(&jails, &layers).is_err(), named);
        }
        assert!(broken > 1000 && fine > 1000, "{broken} {fine}");
    }

    /// 10,000 jails: the file loads, and a conflict written last is still found,
    /// naming the first jail it conflicts with (the rules index paths instead of
    /// comparing everything with everything; the benchmark times it).
    #[test]
    fn large_config_every_rule_still_fires() {
        use std::fmt::Write;
        let mut big = String::from(
            "[defaults]\nupper_root='/u'\n\
             [[layer]]\nname='ports'\nsource='/usr/ports'\n\
             [[layer]]\nname='distfiles'\nsource='/d'\ntarget='usr/ports/distfiles'\nmode='shared'\n\
             [[layer]]\nname='src'\nsource='/usr/src'\nmode='readonly'\n",
        );
        for number in 1..=10_000 {
            write!(big, "[jail.j{number}]\nroot='/j/j{number}'\n").unwrap();
        }
        let config = parse(&big).unwrap();
        assert_eq!(config.jails.len(), 10_000);
        assert_eq!(
            config.jails[9_999].uppers[&0],
            Upper::Host("/u/j10000/ports".into())
        );
        let jail_x = "[jail.x]\nroot='/k/x'\n";
        let cases: &[(String, &str)] = &[
            (
                "[jail.x]\nroot='/j/j1/'\n".into(),
                "jail x: same root as jail j1: /j/j1",
            ),
            (
                format!("{jail_x}upper.ports='/j'\n"),
                "jail x: layer ports: upper dir /j is or holds the root of jail j1",
            ),
            (
                format!("{jail_x}upper.ports='/j/j5000'\n"),
                "jail x: layer ports: upper dir /j/j5000 is or holds the root of jail j5000",
            ),
            (
                format!("{jail_x}upper.ports='/u/j10000/ports/in'\n"),
                "jail x: layer ports: upper dir /u/j10000/ports/in is, holds or lies in the upper dir of jail j10000: layer ports",
            ),
            (
                format!("{jail_x}upper.ports='/u/j9999'\n"),
                "upper dir /u/j9999 is, holds or lies in the upper dir of jail j9999: layer ports",
            ),
            (
                format!("{jail_x}upper.ports='/u'\n"),
                "upper dir /u is, holds or lies in the upper dir of jail j1: layer ports",
            ),
            (
                format!("{jail_x}layers=['src','distfiles','ports']\n"),
                "jail x: layer distfiles: listed before its parent layer ports",
            ),
            (
                format!("{jail_x}layers=['ports','nope']\n"),
                "jail x: unknown layer nope",
            ),
            (
                format!("{jail_x}layers=['src','ports','src']\n"),
                "jail x: layer src listed twice",
            ),
            (
                format!("{jail_x}upper.src='/up'\n"),
                "jail x: layer src: upper given for a layer that is not a union layer",
            ),
            (
                "[jail.'x y']\nroot='/k/x'\n".into(),
                "jail x y: bad jail name",
            ),
        ];
        for (tail, want) in cases {
            let msg =
                parse(&format!("{big}{tail}")).map_or_else(|e| format!("{e:#}"), |_| tail.clone());
            assert!(msg.contains(want), "want {want:?} in {msg:?}");
        }
        // The same root written last, as the first jail's was: the pair is named.
        let msg = err(&format!("{big}[jail.x]\nroot='/j/j10000/./'\n"));
        assert!(msg.contains("jail x: same root as jail j10000"), "{msg}");
    }

    /// Sorted by bytes, `/u/a/p!x` and `/u/a/p.x` fall between `/u/a/p` and
    /// `/u/a/p/x`: neither lies in `/u/a/p`, and neither holds it.
    #[test]
    fn neighbours_in_sort_order_are_not_nested() {
        let layer = "[[layer]]\nname='p'\nsource='/usr/ports'\n";
        for other in ["/u/a/p!x", "/u/a/p.x", "/u/a/o", "/u/a/p-"] {
            let text = format!(
                "{layer}[jail.a]\nroot='/j/a'\nupper.p='/u/a/p'\n\
                 [jail.b]\nroot='/j/b'\nupper.p='{other}'\n\
                 [jail.c]\nroot='/j/a!'\n[jail.d]\nroot='/j/a.d'\n"
            );
            assert!(parse(&text).is_ok(), "{other}: {}", err(&text));
        }
        let msg = err(&format!(
            "{layer}[jail.a]\nroot='/j/a'\nupper.p='/u/a/p!x'\n[jail.b]\nroot='/j/b'\nupper.p='/u/a/p!x/in'\n"
        ));
        assert!(msg.contains("lies in the upper dir of jail a"), "{msg}");
        let msg = err(&format!(
            "{layer}[jail.a]\nroot='/j/a!'\n[jail.b]\nroot='/j/b'\nupper.p='/j/a!'\n"
        ));
        assert!(msg.contains("is or holds the root of jail a"), "{msg}");
    }

    /// 2,000 layers: a layer listed before its parent, or on another's target, is
    /// found however far apart the two are.
    #[test]
    fn many_layers_nesting_and_targets() {
        use std::fmt::Write;
        let mut many = String::new();
        for number in 0..2_000 {
            write!(
                many,
                "[[layer]]\nname='l{number}'\nsource='/s/{number}'\ntarget='t/{number}'\n"
            )
            .unwrap();
        }
        let jail = "[jail.a]\nroot='/j'\n";
        let config = parse(&format!("{many}{jail}")).unwrap();
        assert_eq!(config.jails[0].layers.len(), 2_000);
        let msg = err(&format!(
            "{many}[[layer]]\nname='dup'\nsource='/x'\ntarget='t/0'\n{jail}"
        ));
        assert!(msg.contains("layer dup: same target as layer l0"), "{msg}");
        let msg = err(&format!(
            "[[layer]]\nname='in'\nsource='/x'\ntarget='t/0/in'\n{many}{jail}"
        ));
        assert!(
            msg.contains("layer in: listed before its parent layer l0 (mounted inside it)"),
            "{msg}"
        );
        // Two parents after it: the first one listed is named.
        let msg = err(&format!(
            "[[layer]]\nname='in'\nsource='/x'\ntarget='t/5/a/b'\n{many}\
             [[layer]]\nname='mid'\nsource='/y'\ntarget='t/5/a'\n{jail}"
        ));
        assert!(
            msg.contains("layer in: listed before its parent layer l5"),
            "{msg}"
        );
        let msg = err(&format!(
            "{many}[jail.a]\nroot='/j'\nlayers=['l7','l1999','l7']\n"
        ));
        assert!(msg.contains("jail a: layer l7 listed twice"), "{msg}");
    }

    #[test]
    fn tmpfs_uppers_per_layer_or_per_jail() {
        let text = "[[layer]]\nname='p'\nsource='/usr/ports'\nupper_fs='tmpfs'\nupper_size='2g'\n\
                    [[layer]]\nname='q'\nsource='/usr/src'\n\
                    [jail.a]\nroot='/j/a'\n\
                    [jail.b]\nroot='/j/b'\nupper_fs='tmpfs'\n\
                    [jail.c]\nroot='/j/c'\nupper_fs='dir'\n";
        let config = parse(text).unwrap();
        let tmpfs_of = |jail: usize| {
            config.jails[jail]
                .tmpfs
                .clone()
                .into_iter()
                .collect::<Vec<_>>()
        };
        // The layer's own setting; a jail's decides for all its union layers.
        assert_eq!(tmpfs_of(0), [(0, Some("2g".to_string()))]);
        assert_eq!(tmpfs_of(1), [(0, None), (1, None)]);
        assert!(tmpfs_of(2).is_empty());
    }

    #[test]
    fn all_digit_jail_name_refused_on_freebsd() {
        let text = "[[layer]]\nname='p'\nsource='/usr/ports'\n[jail.100]\nroot='/j'\n";
        assert!(parse(text).is_ok());
        let error = Config::parse(text, Path::new("f"), Os::FreeBsd).unwrap_err();
        assert_eq!(code_of(&error), ExitCode::Config);
        assert!(
            format!("{error:#}").contains("jail 100: an all-digit jail name is a jail ID"),
            "{error:#}"
        );
        let ok = text.replace("jail.100", "jail.j100");
        assert!(Config::parse(&ok, Path::new("f"), Os::FreeBsd).is_ok());
    }

    #[test]
    fn union_options_that_write_elsewhere_or_are_unknown_refused_on_freebsd() {
        let conf = |opts: &str| {
            format!(
                "[[layer]]\nname='p'\nsource='/usr/ports'\nunion_options = [{opts}]\n[jail.a]\nroot='/j'\n"
            )
        };
        let refused = |opts: &str, want: &str| {
            let error = Config::parse(&conf(opts), Path::new("f"), Os::FreeBsd).unwrap_err();
            assert_eq!(code_of(&error), ExitCode::Config);
            let msg = format!("{error:#}");
            assert!(msg.contains(want), "{msg}");
        };
        refused(
            "'noatime', 'below'",
            "layer p: union_options: \"below\" swaps the layers: the jail would write into the source",
        );
        refused(
            "'target=/usr/ports'",
            "another directory as the writable layer",
        );
        refused(
            "'noatme'",
            "unknown option \"noatme\" (unionfs would ignore it without a word); accepted: noatime, nosuid",
        );
        refused("'copymode'", "unknown option \"copymode\"");
        let ok = "'noatime', 'copymode=masquerade', 'whiteout=whenneeded', 'udir=0755', 'uid=0'";
        assert!(Config::parse(&conf(ok), Path::new("f"), Os::FreeBsd).is_ok());
    }

    #[test]
    fn white_space_only_refused_on_freebsd() {
        let text = "[[layer]]\nname='p'\nsource='/usr/my ports'\n[jail.a]\nroot='/j'\n";
        assert!(parse(text).is_ok());
        let error = Config::parse(text, Path::new("f"), Os::FreeBsd).unwrap_err();
        assert_eq!(code_of(&error), ExitCode::Config);
        assert!(format!("{error:#}").contains("jail a: path with white space: /usr/my ports"));
    }

    #[test]
    fn network_per_jail_or_defaults() {
        let config =
            parse("[jail.a]\nroot = \"/j/a\"\n[jail.b]\nroot = \"/j/b\"\nnetwork = \"host\"\n")
                .unwrap();
        assert_eq!(config.network(&config.jails[0]), Network::None);
        assert_eq!(config.network(&config.jails[1]), Network::Host);
        let config = parse(
            "[defaults]\nnetwork = \"host\"\n[jail.a]\nroot = \"/j/a\"\n\
             [jail.b]\nroot = \"/j/b\"\nnetwork = \"none\"\n",
        )
        .unwrap();
        assert_eq!(config.network(&config.jails[0]), Network::Host);
        assert_eq!(config.network(&config.jails[1]), Network::None);
        let msg = err("[jail.a]\nroot = \"/j/a\"\nnetwork = \"bridge\"\n");
        assert!(
            msg.contains(":3:") && msg.contains("none") && msg.contains("host"),
            "{msg}"
        );
    }

    #[test]
    fn upper_group_per_jail_or_defaults() {
        let config = parse(
            "[defaults]\nupper_group = \"5\"\n[jail.a]\nroot = \"/j/a\"\n\
             [jail.b]\nroot = \"/j/b\"\nupper_group = \"0\"\n",
        )
        .unwrap();
        assert_eq!(config.jails[0].upper_group, Some(5));
        assert_eq!(config.jails[1].upper_group, Some(0));
        let config = parse("[jail.a]\nroot = \"/j/a\"\n").unwrap();
        assert_eq!(config.jails[0].upper_group, None);
        // By name, as getgrnam(3) finds it (root's group is 0 on every system).
        let root = nix::unistd::Group::from_gid(0.into())
            .unwrap()
            .unwrap()
            .name;
        let config = parse(&format!(
            "[jail.a]\nroot = \"/j/a\"\nupper_group = \"{root}\"\n"
        ))
        .unwrap();
        assert_eq!(config.jails[0].upper_group, Some(0));
        let msg = err("[jail.a]\nroot = \"/j/a\"\nupper_group = \"no-such-group-jlayers\"\n");
        assert!(
            msg.contains("jail a: upper_group: unknown group \"no-such-group-jlayers\""),
            "{msg}"
        );
        let msg = err("[defaults]\nupper_group = \"no-such-group-jlayers\"\n");
        assert!(
            msg.contains("defaults: upper_group: unknown group"),
            "{msg}"
        );
    }

    #[test]
    fn log_max_per_jail_or_defaults() {
        let two = "[jail.a]\nroot = \"/j/a\"\n[jail.b]\nroot = \"/j/b\"\nlog_max = \"64k\"\n";
        let config = parse(two).unwrap();
        assert_eq!(config.log_max(&config.jails[0]), LOG_MAX);
        assert_eq!(config.log_max(&config.jails[1]), 64 << 10);
        let config = parse(&format!("[defaults]\nlog_max = \"2G\"\n{two}")).unwrap();
        assert_eq!(config.log_max(&config.jails[0]), 2 << 30);
        assert_eq!(config.log_max(&config.jails[1]), 64 << 10);
        assert_eq!(
            parse("[defaults]\nlog_max = \"1000\"\n")
                .unwrap()
                .default_log_max,
            1000
        );
        for bad in [
            "",
            "m",
            "1.5m",
            "-1",
            "1mb",
            "1x",
            "16777216t",
            "99999999999999999999",
        ] {
            let msg = err(&format!("[jail.a]\nroot = \"/j/a\"\nlog_max = \"{bad}\"\n"));
            assert!(msg.contains("jail a: log_max:"), "{bad}: {msg}");
            let msg = err(&format!("[defaults]\nlog_max = \"{bad}\"\n"));
            assert!(msg.contains("defaults: log_max:"), "{bad}: {msg}");
        }
        let error = parse("[defaults]\nlog_max = \"lots\"\n").unwrap_err();
        assert_eq!(code_of(&error), ExitCode::Config);
    }
}
