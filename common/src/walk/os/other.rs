//! Other systems: no birth time, no opaque directories, no whiteout entries.

use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;

use nix::sys::stat::FileStat;

use super::{Time, WhiteoutProblem};

pub(crate) use super::readdir::Readdir as Entries;

pub(crate) fn birth(_dir: &OwnedFd, _name: &CStr, _st: &FileStat) -> Option<Time> {
    None
}

pub(crate) fn opaque(_dir: &OwnedFd, _st: &FileStat) -> bool {
    false
}

pub(crate) fn whiteout_names(_dir: &OwnedFd) -> std::io::Result<Vec<CString>> {
    Ok(Vec::new())
}

pub(crate) fn remove_whiteouts(_dir: &OwnedFd) -> Vec<WhiteoutProblem> {
    Vec::new()
}
