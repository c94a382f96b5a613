//! The mount table as jlayers sees it: one model, filled by each platform's reader.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// One line of the mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// What was mounted: the device column of `mount -p`; the source field of mountinfo.
    pub source: OsString,
    /// Where: the mount point.
    pub target: PathBuf,
    pub fstype: String,
    /// Per-mount options (`rw`/`ro`, `noatime`, ...).
    pub options: Vec<String>,
    /// What only Linux's mountinfo tells; `None` from FreeBSD's `mount -p`.
    pub linux: Option<LinuxInfo>,
}

/// The Linux backend's own fields of a mountinfo line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxInfo {
    /// The mount id (mountinfo's first field, statx's `stx_mnt_id`).
    pub id: u64,
    /// The device number (`major:minor`) of the mounted file system.
    pub dev: (u32, u32),
    /// The directory of the file system that is mounted here (bind mounts).
    pub root: PathBuf,
    /// File system options (overlay's `upperdir=` lives here), unescaped.
    pub fs_options: Vec<OsString>,
}

impl LinuxInfo {
    /// The value of a `key=value` file system option.
    pub fn fs_option(&self, key: &str) -> Option<&OsStr> {
        self.fs_options.iter().find_map(|o| {
            let b = o.as_encoded_bytes();
            let rest = b.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
            // SAFETY: split right after an ASCII '=' of a valid OsStr.
            Some(unsafe { OsStr::from_encoded_bytes_unchecked(rest) })
        })
    }
}

impl Mount {
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    /// The Linux mount id, if the table gave one.
    pub fn linux_id(&self) -> Option<u64> {
        self.linux.as_ref().map(|l| l.id)
    }

    /// A one-word description for messages: `TYPE from SOURCE`.
    pub fn describe(&self) -> String {
        format!("{} from {}", self.fstype, self.source.to_string_lossy())
    }
}
