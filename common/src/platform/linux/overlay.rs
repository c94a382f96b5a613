//! overlayfs as jlayers mounts it: the options a layer may give, the layers as
//! descriptors (or their /proc paths), and the same mount as mount(8) takes it.

use std::ffi::{OsStr, OsString};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::api;
use super::error::LinuxError;
use crate::exit::Domain;
use crate::target::Place;

/// Per-mount flags that `union_options` may name; the rest go to overlay itself.
pub(super) const FLAG_NAMES: &[(MsFlags, &str)] = &[
    (MsFlags::MS_RDONLY, "ro"),
    (MsFlags::MS_NOATIME, "noatime"),
    (MsFlags::MS_NODIRATIME, "nodiratime"),
    (MsFlags::MS_RELATIME, "relatime"),
    (MsFlags::MS_NODEV, "nodev"),
    (MsFlags::MS_NOSUID, "nosuid"),
    (MsFlags::MS_NOEXEC, "noexec"),
];

/// The same flags as fsmount(2) attributes.
fn mount_attr(flags: MsFlags) -> u64 {
    let mut attrs = 0;
    for (flag, attr) in [
        (MsFlags::MS_RDONLY, libc::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOATIME, libc::MOUNT_ATTR_NOATIME),
        (MsFlags::MS_NODIRATIME, libc::MOUNT_ATTR_NODIRATIME),
        (MsFlags::MS_NODEV, libc::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOSUID, libc::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NOEXEC, libc::MOUNT_ATTR_NOEXEC),
    ] {
        if flags.contains(flag) {
            attrs |= attr;
        }
    }
    attrs
}

/// How overlay is told its layers (lower, upper, work): as descriptors (Linux 6.13
/// and later), or else as `/proc/self/fd/N` paths, which name exactly what the
/// descriptors pin, but which the kernel records as such in mountinfo.
pub(super) enum Layers<'a> {
    Fds(BorrowedFd<'a>, BorrowedFd<'a>, BorrowedFd<'a>),
    Paths(BorrowedFd<'a>, BorrowedFd<'a>, BorrowedFd<'a>),
}

pub(super) enum OverlayError {
    /// The kernel does not take layers as descriptors: try paths.
    Refused,
    Failed(Errno, String, &'static str),
    Long,
}

impl OverlayError {
    pub(super) fn into_error(self, target: &Path) -> anyhow::Error {
        match self {
            OverlayError::Failed(e, log, what) => {
                let err = LinuxError::mount(e, what, target);
                if log.is_empty() {
                    err
                } else {
                    err.context(format!("overlay: {log}"))
                }
            }
            OverlayError::Refused | OverlayError::Long => Domain::error(LinuxError::OverlayLong {
                target: target.to_path_buf(),
            }),
        }
    }
}

/// A detached overlay mount, named after its upper dir (the `source`), which is how
/// jlayers recognises it in the mount table whatever the kernel shows of its layers.
pub(super) fn overlay(
    upper: &Place,
    options: &[String],
    layers: Layers<'_>,
) -> Result<OwnedFd, OverlayError> {
    let failed = |what: &'static str| move |e: Errno| OverlayError::Failed(e, String::new(), what);
    let fs = api::NewFs::new(c"overlay").map_err(failed("overlay file system"))?;
    let name = upper.path.as_os_str();
    let named = name.len() < 256 && fs.set("source", name).is_ok();
    let mut flags = MsFlags::empty();
    for option in options {
        match FLAG_NAMES.iter().find(|(_, name)| name == option) {
            Some((flag, _)) => flags |= *flag,
            None => match option.split_once('=') {
                Some((key, value)) => fs.set(key, OsStr::new(value)),
                None => fs.flag(option),
            }
            .map_err(|e| OverlayError::Failed(e, fs.log(), "overlay option"))?,
        }
    }
    match layers {
        Layers::Fds(lower, up, work) => {
            if let Err(errno) = fs.set_fd("lowerdir+", lower) {
                return Err(if errno == Errno::EINVAL {
                    OverlayError::Refused
                } else {
                    OverlayError::Failed(errno, fs.log(), "overlay lower layer")
                });
            }
            fs.set_fd("upperdir", up)
                .and_then(|()| fs.set_fd("workdir", work))
                .map_err(|e| OverlayError::Failed(e, fs.log(), "overlay layers"))?;
        }
        Layers::Paths(lower, up, work) => {
            if !named {
                return Err(OverlayError::Long);
            }
            for (key, fd) in [("lowerdir", lower), ("upperdir", up), ("workdir", work)] {
                fs.set(key, api::fd_path(fd).as_os_str())
                    .map_err(|e| OverlayError::Failed(e, fs.log(), "overlay layers"))?;
            }
        }
    }
    fs.mount(mount_attr(flags))
        .map_err(|(e, log)| OverlayError::Failed(e, log, "overlay mount"))
}

/// The overlay mount's flags and option string. The lower layer is the target itself:
/// the bind mount below, exactly as unionfs takes the mount point's contents.
pub(super) fn overlay_args(
    target: &Path,
    upper: &Path,
    work: Option<&Path>,
    options: &[String],
) -> (MsFlags, OsString) {
    let mut flags = MsFlags::empty();
    let mut data: Vec<u8> = Vec::new();
    for option in options {
        match FLAG_NAMES.iter().find(|(_, name)| name == option) {
            Some((flag, _)) => flags |= *flag,
            None => {
                data.extend_from_slice(option.as_bytes());
                data.push(b',');
            }
        }
    }
    data.extend_from_slice(b"lowerdir=");
    escape_option(target.as_os_str(), &mut data);
    data.extend_from_slice(b",upperdir=");
    escape_option(upper.as_os_str(), &mut data);
    if let Some(work) = work {
        data.extend_from_slice(b",workdir=");
        escape_option(work.as_os_str(), &mut data);
    }
    (flags, OsString::from_vec(data))
}

/// mount(8)'s `-o` word: flag names, then the overlay's own options.
pub(super) fn options_word(flags: MsFlags, data: &OsStr) -> OsString {
    let mut word: Vec<u8> = Vec::new();
    for (flag, name) in FLAG_NAMES {
        if flags.contains(*flag) {
            word.extend_from_slice(name.as_bytes());
            word.push(b',');
        }
    }
    word.extend_from_slice(data.as_bytes());
    OsString::from_vec(word)
}

/// overlayfs option values escape `,`, `:` and `\` with a backslash.
fn escape_option(value: &OsStr, out: &mut Vec<u8>) {
    for &byte in value.as_bytes() {
        if matches!(byte, b',' | b':' | b'\\') {
            out.push(b'\\');
        }
        out.push(byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_escape() {
        let (flags, data) = overlay_args(
            Path::new("/j/a,b"),
            Path::new("/u:p"),
            Some(Path::new("/w\\x")),
            &["noatime".into(), "redirect_dir=on".into()],
        );
        assert_eq!(flags, MsFlags::MS_NOATIME);
        assert_eq!(
            data,
            OsStr::new("redirect_dir=on,lowerdir=/j/a\\,b,upperdir=/u\\:p,workdir=/w\\\\x")
        );
    }
}
