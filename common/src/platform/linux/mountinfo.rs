//! `/proc/self/mountinfo` (proc(5)), read into the shared mount model.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use crate::mounts::{LinuxInfo, Mount};

/// `/proc/self/mountinfo` (proc(5)): octal escapes decoded, lines in mount order.
/// A line that does not parse is skipped rather than failing the whole table.
pub fn parse_mountinfo(raw: &[u8]) -> Vec<Mount> {
    raw.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<Mount> {
    let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let sep = f.iter().position(|&x| x == b"-")?;
    if sep < 6 || f.len() < sep + 3 {
        return None;
    }
    let dev = std::str::from_utf8(f[2]).ok()?;
    let (maj, min) = dev.split_once(':')?;
    Some(Mount {
        source: OsString::from_vec(unescape(f[sep + 2])),
        target: PathBuf::from(OsString::from_vec(unescape(f[4]))),
        fstype: String::from_utf8_lossy(&unescape(f[sep + 1])).into_owned(),
        options: String::from_utf8_lossy(f[5])
            .split(',')
            .map(String::from)
            .collect(),
        linux: Some(LinuxInfo {
            id: std::str::from_utf8(f[0]).ok()?.parse().ok()?,
            dev: (maj.parse().ok()?, min.parse().ok()?),
            root: PathBuf::from(OsString::from_vec(unescape(f[3]))),
            fs_options: f
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

/// Decode the kernel's `\NNN` octal escapes.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        // `\NNN` up to \377 (one byte); anything else is taken literally.
        if s[i] == b'\\'
            && i + 3 < s.len()
            && (b'0'..=b'3').contains(&s[i + 1])
            && s[i + 2..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    #[test]
    fn mountinfo_escapes_and_order() {
        let raw = b"22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
63 22 254:0 /tmp/t/lo /tmp/my\\040dir\\011tab\\012nl\\134x rw,relatime - ext4 /dev/vda rw,discard\n\
66 63 0:39 / /tmp/my\\040dir\\011tab\\012nl\\134x rw,noatime - overlay overlay rw,lowerdir=/a\\054b,upperdir=/u\\040p,workdir=/w\n\
70 22 0:40 / /mnt/\\377bad ro - tmpfs tmpfs rw\n";
        let t = parse_mountinfo(raw);
        assert_eq!(t.len(), 4);
        let weird = Path::new("/tmp/my dir\ttab\nnl\\x");
        assert_eq!(t[1].target, weird);
        let l1 = t[1].linux.as_ref().unwrap();
        assert_eq!(l1.root, Path::new("/tmp/t/lo"));
        assert_eq!(l1.dev, (254, 0));
        assert_eq!(t[2].target, weird);
        assert_eq!(t[2].fstype, "overlay");
        let l2 = t[2].linux.as_ref().unwrap();
        assert_eq!(l2.fs_option("upperdir"), Some(OsStr::new("/u p")));
        assert_eq!(l2.fs_option("lowerdir"), Some(OsStr::new("/a,b")));
        assert!(t[2].options.contains(&"noatime".to_string()));
        assert_eq!(t[3].target.as_os_str().as_bytes(), b"/mnt/\xffbad");
        assert!(t[3].read_only());
    }
}
