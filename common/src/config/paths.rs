//! Paths as jlayers.conf(5) takes them: absolute or below a jail root, made
//! normal, and the names that end up in paths and commands.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::{Layer, Upper};

/// FreeBSD's `mount -p` separates fields with white space: a path holding some
/// could not be read back.
pub(super) fn freebsd_paths(
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

/// Jail names end up in file names, `service jail onestart NAME` and jls(8).
pub(super) fn valid_jail_name(name: &str) -> bool {
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
pub(super) fn abs_path(written: &str) -> Result<PathBuf, String> {
    let path = Path::new(written);
    if !path.is_absolute() {
        return Err(format!("{written:?} is not an absolute path"));
    }
    normal(path, written)
}

/// A path relative to a jail root: not absolute, no `..`, not empty.
pub(super) fn rel_path(written: &str) -> Result<PathBuf, String> {
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
pub(super) fn normal(path: &Path, written: &str) -> Result<PathBuf, String> {
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
