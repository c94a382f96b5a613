//! The configuration file (jlayers.conf(5)): parsing and every validation rule.
//!
//! Parse errors name `FILE:LINE:COLUMN`; semantic errors name the jail and layer.
//! Every failure here is exit 78.

//! Reading is in two phases, as ripgrep's flags: `raw` reads the TOML tables as
//! written, `build` applies the rules (paths in `paths`, the rules across jails'
//! paths in `shared`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;

use crate::exit::{Domain, ExitCode, Failures};
use crate::os::Os;

mod build;
mod error;
mod paths;
mod raw;
mod shared;
#[cfg(test)]
mod tests;

pub(crate) use self::error::ConfigError;

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
        let text = std::fs::read(path).map_err(|source| {
            Domain::error(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        })?;
        let text = String::from_utf8(text).map_err(|e| {
            let (line, col) = raw::line_col(e.as_bytes(), e.utf8_error().valid_up_to());
            Domain::error(ConfigError::NotUtf8 {
                path: path.to_path_buf(),
                line,
                col,
            })
        })?;
        Self::parse(&text, path, os)
    }

    /// Validate a config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, os: Os) -> Result<Config> {
        let mut found = raw::Found::new(text);
        let config =
            raw::read(text, &mut found).and_then(|r| build::build(r, path, os, &mut found));
        match config {
            Some(config) if found.errors.is_empty() => Ok(config),
            _ => Err(anyhow::Error::new(Failures {
                code: ExitCode::Config,
                msgs: found.lines(path),
            })),
        }
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
}
