//! `/proc/self/mountinfo` (proc(5)), read into the shared mount model, and the
//! mount id (statx, 5.8) that finds a descriptor's line in it.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use nix::errno::Errno;

use crate::mounts::{LinuxInfo, Mount};

/// `/proc/self/mountinfo` (proc(5)): octal escapes decoded, lines in mount order.
/// A line that does not parse is skipped rather than failing the whole table.
pub fn parse_mountinfo(raw: &[u8]) -> Vec<Mount> {
    raw.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<Mount> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let sep = fields.iter().position(|&x| x == b"-")?;
    if sep < 6 || fields.len() < sep + 3 {
        return None;
    }
    let dev = std::str::from_utf8(fields[2]).ok()?;
    let (maj, min) = dev.split_once(':')?;
    Some(Mount {
        source: OsString::from_vec(unescape(fields[sep + 2])),
        target: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
        fstype: String::from_utf8_lossy(&unescape(fields[sep + 1])).into_owned(),
        options: String::from_utf8_lossy(fields[5])
            .split(',')
            .map(String::from)
            .collect(),
        linux: Some(LinuxInfo {
            id: std::str::from_utf8(fields[0]).ok()?.parse().ok()?,
            dev: (maj.parse().ok()?, min.parse().ok()?),
            root: PathBuf::from(OsString::from_vec(unescape(fields[3]))),
            fs_options: fields
                .get(sep + 3)
                .map(|o| {
                    o.split(|&b| b == b',')
                        .map(|x| OsString::from_vec(unescape(x)))
                        .collect()
                })
                .unwrap_or_default(),
        }),
    })
}

fn statx_mnt_id(dir: BorrowedFd<'_>, name: &CString, flags: libc::c_int) -> nix::Result<u64> {
    // SAFETY: zeroed statx is a valid value; the kernel fills it.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a C string and `stx` a live buffer of the type statx writes.
    let status = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::AT_NO_AUTOMOUNT,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    if status != 0 {
        return Err(Errno::last());
    }
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(Errno::ENOSYS);
    }
    Ok(stx.stx_mnt_id)
}

/// The id of the mount that `fd` lies in (mountinfo's first field).
pub(crate) fn mount_id(fd: BorrowedFd<'_>) -> nix::Result<u64> {
    statx_mnt_id(fd, &CString::default(), libc::AT_EMPTY_PATH)
}

/// The id of the top mount at `dir/name`, not following a link there.
pub(crate) fn mount_id_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<u64> {
    let name = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
    statx_mnt_id(dir, &name, libc::AT_SYMLINK_NOFOLLOW)
}

/// Decode the kernel's `\NNN` octal escapes.
fn unescape(escaped: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut at = 0;
    while at < escaped.len() {
        // `\NNN` up to \377 (one byte); anything else is taken literally.
        if escaped[at] == b'\\'
            && at + 3 < escaped.len()
            && (b'0'..=b'3').contains(&escaped[at + 1])
            && escaped[at + 2..at + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(
                (escaped[at + 1] - b'0') * 64
                    + (escaped[at + 2] - b'0') * 8
                    + (escaped[at + 3] - b'0'),
            );
            at += 4;
        } else {
            out.push(escaped[at]);
            at += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn mountinfo_escapes_and_order() {
        let raw = b"22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
63 22 254:0 /tmp/t/lo /tmp/my\\040dir\\011tab\\012nl\\134x rw,relatime - ext4 /dev/vda rw,discard\n\
66 63 0:39 / /tmp/my\\040dir\\011tab\\012nl\\134x rw,noatime - overlay overlay rw,lowerdir=/a\\054b,upperdir=/u\\040p,workdir=/w\n\
70 22 0:40 / /mnt/\\377bad ro - tmpfs tmpfs rw\n";
        let table = parse_mountinfo(raw);
        assert_eq!(table.len(), 4);
        let weird = Path::new("/tmp/my dir\ttab\nnl\\x");
        assert_eq!(table[1].target, weird);
        let bind_info = table[1].linux.as_ref().unwrap();
        assert_eq!(bind_info.root, Path::new("/tmp/t/lo"));
        assert_eq!(bind_info.dev, (254, 0));
        assert_eq!(table[2].target, weird);
        assert_eq!(table[2].fstype, "overlay");
        let overlay_info = table[2].linux.as_ref().unwrap();
        assert_eq!(overlay_info.fs_option("upperdir"), Some(OsStr::new("/u p")));
        assert_eq!(overlay_info.fs_option("lowerdir"), Some(OsStr::new("/a,b")));
        assert!(table[2].options.contains(&"noatime".to_string()));
        assert_eq!(table[3].target.as_os_str().as_bytes(), b"/mnt/\xffbad");
        assert!(table[3].read_only());
    }
}
