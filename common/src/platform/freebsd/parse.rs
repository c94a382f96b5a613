//! Reading what FreeBSD's tools print: mount(8) (`-p`, `-v`), fstat(1), and the
//! error jexec(8) gives for a missing home directory; and the `<above>:` prefix
//! statfs(2) puts before a union's upper dir.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::error::FreeBsdError;
use crate::exit::Domain;
use crate::mounts::Mount;
use crate::platform::{Exec, Holder, MountId};

/// `jexec -l` takes the host's passwd entry of the caller, attaches to the
/// jail and then changes to its home directory there, `err(1, "chdir: %s",
/// pw_dir)` when it fails (usr.sbin/jexec/jexec.c): a jail without /root.
pub(super) fn jexec_failure(exec: &Exec, output: &str) -> Option<anyhow::Error> {
    let line = output.lines().find(|l| !l.trim().is_empty())?;
    let rest = line.strip_prefix("jexec: chdir: ")?;
    let (dir, why) = rest.rsplit_once(": ").unwrap_or((rest, "failed"));
    let inside = Path::new(dir).strip_prefix("/").unwrap_or(Path::new(dir));
    Some(Domain::error(FreeBsdError::NoHome {
        dir: dir.to_string(),
        jail: exec.jail.to_string(),
        why: why.to_string(),
        host: exec.root.join(inside),
    }))
}

/// f_mntfromname of a union is its upper dir behind `<above>:` (`<below>:` with
/// `-o below`); mount -p drops the prefix (putfsent()), and so does jlayers.
pub(super) fn strip_union_prefix(from: &[u8]) -> &[u8] {
    [b"<above>:".as_slice(), b"<below>:"]
        .iter()
        .find_map(|p| from.strip_prefix(*p))
        .unwrap_or(from)
}

/// fstat(1) output: a header, then `USER CMD PID FD MOUNT INUM MODE SZ|DV R/W`
/// per open file; one holder per pid, with how it holds the file system.
/// print_file_info() writes the command with `%-10s` (usr.bin/fstat/fstat.c), and
/// a command name may hold spaces: the line is read from the right, where the
/// columns are fixed, and the command is what lies between the user and the pid.
pub(crate) fn parse_fstat(text: &str) -> Vec<Holder> {
    let mut out: Vec<Holder> = Vec::new();
    for line in text.lines().skip(1) {
        let Some((cmd, pid, fd)) = fstat_line(line) else {
            continue;
        };
        let how = match fd {
            "wd" => "cwd",
            "root" => "root",
            "jail" => "jail root",
            "text" => "executable",
            "mmap" => "mapping",
            "tr" => "trace file",
            "ctty" => "terminal",
            _ => "open file",
        };
        match out.iter_mut().find(|holder| holder.pid == pid) {
            Some(holder) if !holder.how.contains(&how) => holder.how.push(how),
            Some(_) => {}
            None => out.push(Holder {
                pid,
                command: cmd.to_string(),
                jail: None,
                root: None,
                how: vec![how],
            }),
        }
    }
    out
}

/// One fstat(1) line of a vnode: its command, pid and FD column. From the right:
/// R/W (`%2s`, blank when neither), SZ|DV, MODE, INUM, the mount point (absent
/// when unknown), FD, PID; the user is the first word, the command the rest.
fn fstat_line(line: &str) -> Option<(&str, u32, &str)> {
    // Each word with its byte offset in the line.
    let mut words: Vec<(usize, &str)> = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices().chain([(line.len(), ' ')]) {
        match (c.is_ascii_whitespace(), start) {
            (true, Some(s)) => {
                words.push((s, &line[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    let mut end = words.len();
    if matches!(words.last(), Some((_, "r" | "w" | "rw"))) {
        end -= 1;
    }
    end = end.checked_sub(3)?;
    if end > 0 && words[end - 1].1.starts_with('/') {
        end -= 1;
    }
    let fd = words.get(end.checked_sub(1)?)?.1;
    let (pid_at, pid) = *words.get(end.checked_sub(2)?)?;
    let fd_ok = fd.bytes().all(|b| b.is_ascii_digit())
        || ["text", "wd", "root", "jail", "tr", "mmap", "ctty"].contains(&fd);
    // The user, one word, then at least one word of command.
    if !fd_ok || end < 4 {
        return None;
    }
    let user_end = words[0].0 + words[0].1.len();
    let cmd = line[user_end..pid_at].trim();
    Some((cmd, pid.parse().ok()?, fd))
}

/// `mount -v` (sbin/mount/mount.c prmount(), verbose): `FROM on ON (TYPE, flag,
/// ..., fsid HEX)`, the fsid as the bytes of f_fsid in hex, as umount(8) takes it;
/// a union's FROM keeps its `<above>:` prefix, dropped here.
#[cfg_attr(target_os = "freebsd", allow(dead_code))] // the simulation's seam
pub(crate) fn parse_mount_v(text: &str) -> Vec<(MountId, Mount)> {
    use std::os::unix::ffi::OsStrExt;
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.rsplit_once(" (")?;
            let (from, on) = head.split_once(" on ")?;
            let mut fields = tail.strip_suffix(')')?.split(", ");
            let fstype = fields.next()?.to_string();
            let mut options = vec!["rw".to_string()];
            let mut id = None;
            for field in fields {
                match field.strip_prefix("fsid ") {
                    Some(hex) => id = Some(MountId(hex.to_string())),
                    None if field == "read-only" => options[0] = "ro".into(),
                    None => options.push(field.to_string()),
                }
            }
            let source = from.as_bytes();
            Some((
                id?,
                Mount {
                    source: OsStr::from_bytes(strip_union_prefix(source)).to_os_string(),
                    target: PathBuf::from(on),
                    fstype,
                    options,
                    linux: None,
                },
            ))
        })
        .collect()
}

/// `mount -p` (fstab(5) format): fields separated by runs of tabs or spaces.
pub fn parse_mount_p(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            if fields.len() < 4 {
                return None;
            }
            // statfs(2) shows a union's upper as `<above>:DIR`; mount -p strips it.
            let source = fields[0].strip_prefix("<above>:").unwrap_or(fields[0]);
            Some(Mount {
                source: source.into(),
                target: PathBuf::from(fields[1]),
                fstype: fields[2].to_string(),
                options: fields[3].split(',').map(String::from).collect(),
                linux: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mount -p` of a FreeBSD 14 host with the recipe's jail mounted, padded as
    /// sbin/mount/mount.c putfsent() pads it.
    const MOUNT_P: &str = "zroot/ROOT/default\t/\t\t\tzfs\trw,noatime \t0 0\n\
devfs\t\t\t/dev\t\t\tdevfs\trw\t\t0 0\n\
/dev/gpt/efiboot0\t/boot/efi\t\tmsdosfs\trw\t\t2 2\n\
zroot/usr/ports\t\t/usr/ports\t\tzfs\trw,noatime \t0 0\n\
/usr/ports\t\t/usr/local/var/jails/192.168.0.100/usr/ports nullfs\trw\t\t0 0\n\
/usr/local/var/jails/192.168.0.100/usr/tmp/foo /usr/local/var/jails/192.168.0.100/usr/ports unionfs\trw,noatime \t0 0\n\
/usr/ports\t\t/usr/local/var/jails/192.168.0.101/usr/ports nullfs\tro\t\t0 0\n";

    #[test]
    fn parses_padded_fstab_lines_in_order() {
        let table = parse_mount_p(MOUNT_P);
        assert_eq!(table.len(), 7);
        assert_eq!(table[3].source, "zroot/usr/ports");
        assert_eq!(table[3].fstype, "zfs");
        let jp = Path::new("/usr/local/var/jails/192.168.0.100/usr/ports");
        assert_eq!(
            (table[4].target.as_path(), table[4].fstype.as_str()),
            (jp, "nullfs")
        );
        assert_eq!(
            (table[5].target.as_path(), table[5].fstype.as_str()),
            (jp, "unionfs")
        );
        assert_eq!(
            table[5].source,
            "/usr/local/var/jails/192.168.0.100/usr/tmp/foo"
        );
        assert!(table[5].options.contains(&"noatime".to_string()));
        assert!(table[6].read_only() && !table[4].read_only());
    }

    #[test]
    fn parses_mount_v_with_fsids() {
        let text = "zroot/ROOT/default on / (zfs, local, noatime, nfsv4acls, fsid 0f2bdc8ede3a7c2d)\n\
/usr/ports on /j/usr/ports (nullfs, local, read-only, fsid 2a00000039000000)\n\
<above>:/j/usr/tmp/foo on /j/usr/ports (unionfs, local, noatime, fsid 2b00000039000000)\n\
garbage\n";
        let table = parse_mount_v(text);
        assert_eq!(table.len(), 3);
        assert_eq!(table[1].0, MountId("2a00000039000000".into()));
        assert!(table[1].1.read_only() && table[1].1.fstype == "nullfs");
        assert_eq!(table[2].1.source, "/j/usr/tmp/foo");
        assert_eq!(table[2].1.target, Path::new("/j/usr/ports"));
        assert!(table[0].1.options.contains(&"noatime".to_string()));
    }

    #[test]
    fn fstat_holders() {
        let text = "USER     CMD          PID   FD MOUNT      INUM MODE         SZ|DV R/W\n\
root     sleep       1234 text /          123 -r-xr-xr-x   12345  r\n\
root     sleep       1234   wd /j/usr/ports  5 drwxr-xr-x     512  r\n\
root     make        1300    3 /j/usr/ports 77 -rw-r--r--    2048  r\n\
root     make        1300   wd /j/usr/ports  5 drwxr-xr-x     512  r\n\
root     make        1300    4 /j/usr/ports 78 -rw-r--r--    2048  r\n";
        let holders = parse_fstat(text);
        assert_eq!(holders.len(), 2);
        assert_eq!(
            (holders[0].pid, holders[0].command.as_str()),
            (1234, "sleep")
        );
        assert_eq!(holders[0].how, ["executable", "cwd"]);
        assert_eq!(
            (holders[1].pid, holders[1].command.as_str()),
            (1300, "make")
        );
        assert_eq!(holders[1].how, ["open file", "cwd"]);
        assert!(parse_fstat("").is_empty());
        // print_file_info(): "%-8s %-10s %5d", so a command with spaces, a long
        // one, and a blank R/W column.
        let text = "USER     CMD          PID   FD MOUNT      INUM MODE         SZ|DV R/W\n\
root     port maker  4321   wd /j/usr/ports      5 drwxr-xr-x     512  r\n\
root     a b c d e f g h  77    3 /j/usr/ports     77 -rw-r--r--    2048   \n\
www      httpd        900 mmap /j/usr/ports     78 -rw-r--r--    2048 rw\n";
        let holders = parse_fstat(text);
        let got: Vec<_> = holders
            .iter()
            .map(|h| (h.pid, h.command.as_str(), h.how[0]))
            .collect();
        assert_eq!(
            got,
            [
                (4321, "port maker", "cwd"),
                (77, "a b c d e f g h", "open file"),
                (900, "httpd", "mapping")
            ]
        );
    }
}
