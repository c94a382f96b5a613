//! The configuration as written made into [`Config`]: every rule of
//! jlayers.conf(5) but those across jails' paths (shared.rs). Each table's
//! mistake is named; a rule that needs a table named wrong waits for the fix.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::mounts::at_or_below;
use crate::os::Os;

use super::paths::{abs_path, freebsd_paths, rel_path, valid_jail_name};
use super::raw::{Found, Number, Raw, RawDefaults, RawJail, RawLayer, RawLimits, UpperFs};
use super::shared::shared_paths;
use super::{Config, Jail, LOG_MAX, Layer, Limits, Mode, Upper};

/// The rules over what [`super::raw::read`] read; `None` when any mistake was
/// found (then in `found`).
pub(super) fn build(raw: Raw, path: &Path, os: Os, found: &mut Found<'_>) -> Option<Config> {
    let before = found.errors.len();
    let defaults = defaults(raw.defaults, os, found);
    let mut layers: Vec<Layer> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for raw_layer in raw.layer {
        match build_layer(raw_layer, &names, os) {
            Ok(layer) => {
                names.insert(layer.name.clone(), layers.len());
                layers.push(layer);
            }
            Err(e) => found.rule(e),
        }
    }
    let index = LayerIndex::new(&layers, names);
    // A jail's rules need every layer and the defaults as meant; a jail table
    // that could not be read only misses its own.
    let (Some(defaults), true) = (defaults, raw.whole && found.errors.len() == before) else {
        return None;
    };
    check_nesting(&layers, &index, found);
    let mut jails = Vec::new();
    for (name, raw_jail) in raw.jail {
        match build_jail(name, raw_jail, &layers, &index, &defaults.upper_root, os) {
            Ok(mut jail) => {
                jail.upper_group = jail.upper_group.or(defaults.group);
                jail.limits = jail.limits.or(&defaults.limits);
                jails.push(jail);
            }
            Err(e) => found.rule(e),
        }
    }
    if !found.errors.is_empty() {
        return None;
    }
    if let Err(e) = shared_paths(&jails, &layers) {
        found.rule(e);
        return None;
    }
    Some(Config {
        path: path.to_path_buf(),
        upper_root: defaults.upper_root,
        log_dir: defaults.log_dir,
        lock_dir: defaults.lock_dir,
        update: defaults.update,
        layers,
        jails,
        default_network: defaults.network,
        allow_empty: defaults.allow_empty,
        upper_group: defaults.group,
        default_log_max: defaults.log_max,
    })
}

/// `[defaults]`, with the platform's defaults filled in.
struct Defaults {
    upper_root: PathBuf,
    log_dir: PathBuf,
    lock_dir: PathBuf,
    update: Vec<String>,
    network: super::Network,
    allow_empty: bool,
    group: Option<u32>,
    limits: Limits,
    log_max: u64,
}

/// `[defaults]` checked key by key: each mistake named.
fn defaults(mut raw: RawDefaults, os: Os, found: &mut Found<'_>) -> Option<Defaults> {
    let group = match &raw.upper_group {
        Some(group) => keep(
            found,
            group_id(group)
                .map_err(|e| format!("upper_group: {e}"))
                .map(Some),
        ),
        None => Some(None),
    };
    let limits = keep(
        found,
        RawLimits {
            pids: raw.pids,
            memory: raw.memory.take(),
            cpu: raw.cpu.take(),
        }
        .build(),
    );
    let log_max = match &raw.log_max {
        Some(given) => keep(found, byte_size(given).map_err(|e| format!("log_max: {e}"))),
        None => Some(LOG_MAX),
    };
    let network = raw.network.unwrap_or_default();
    let allow_empty = raw.allow_empty.unwrap_or(false);
    let paths = keep(found, default_paths(raw, os));
    let (paths, group, limits, log_max) = (paths?, group?, limits?, log_max?);
    Some(Defaults {
        upper_root: paths.upper_root,
        log_dir: paths.log_dir,
        lock_dir: paths.lock_dir,
        update: paths.update,
        network,
        allow_empty,
        group,
        limits,
        log_max,
    })
}

/// `r`'s value, or its mistake named as one of `[defaults]`.
fn keep<T>(found: &mut Found<'_>, r: Result<T, String>) -> Option<T> {
    r.map_err(|e| found.rule(format!("defaults: {e}"))).ok()
}

/// `[defaults]`'s paths and update command, the platform's where not given.
struct Places {
    upper_root: PathBuf,
    log_dir: PathBuf,
    lock_dir: PathBuf,
    update: Vec<String>,
}

fn default_paths(raw: RawDefaults, os: Os) -> Result<Places, String> {
    let path = |key: &str, given: Option<String>, default: &str| {
        abs_path(given.as_deref().unwrap_or(default)).map_err(|e| format!("{key}: {e}"))
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
        return Err("update: empty command".into());
    }
    Ok(Places {
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
fn check_nesting(layers: &[Layer], index: &LayerIndex, found: &mut Found<'_>) {
    for (position, layer) in layers.iter().enumerate() {
        // The first parent listed after this layer.
        if let Some(parent) = index.parents(&layer.target).filter(|&p| p > position).min() {
            found.rule(format!(
                "layer {}: listed before its parent layer {} (mounted inside it)",
                layer.name, layers[parent].name
            ));
        }
        let first = index.by_target[&layer.target][0];
        if first < position {
            found.rule(format!(
                "layer {}: same target as layer {}",
                layer.name, layers[first].name
            ));
        }
    }
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
    jail_name(&name, os).map_err(ctx)?;
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
    commands(&raw).map_err(ctx)?;
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

/// A jail's name as the platform's tools take it.
fn jail_name(name: &str, os: Os) -> Result<(), String> {
    if !valid_jail_name(name) {
        return Err("bad jail name (letters, digits, '-' and '_' only)".into());
    }
    // jls -j and jexec take an all-digit argument as a jail ID, never a name.
    if os == Os::FreeBsd && name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(
            "an all-digit jail name is a jail ID to jls(8) and jexec(8): use a name with a letter"
                .into(),
        );
    }
    Ok(())
}

/// A jail's commands: none given empty.
fn commands(raw: &RawJail) -> Result<(), String> {
    for (what, cmd) in [
        ("update", &raw.update),
        ("start", &raw.start),
        ("stop", &raw.stop),
    ] {
        if cmd.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(format!("{what}: empty command"));
        }
    }
    Ok(())
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
pub(super) fn byte_size(given: &str) -> Result<u64, String> {
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
