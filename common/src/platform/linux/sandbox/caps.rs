//! What the updater may do as root, cut down before it runs: the capability sets
//! (a container runtime's default without CAP_MKNOD and CAP_NET_RAW), no new
//! privileges from setuid or file capabilities, and a session keyring of its own.

use super::ok;

/// What the updater keeps: Docker's default capability set without CAP_NET_RAW
/// and CAP_MKNOD (Docker keeps that one only behind a device cgroup, which jlayers
/// does not have).
const KEEP: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    18, // CAP_SYS_CHROOT
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

fn keep_mask() -> u64 {
    KEEP.iter().fold(0, |m, &c| m | 1 << c)
}

/// Cut the bounding, permitted, effective and inheritable sets down to KEEP (for
/// root the bounding set is what exec grants), clear ambient ones, and make sure
/// no setuid or file capability can grant more.
///
/// # Safety
///
/// Only in the updater's process after the sandbox's fork (pid 2), before its
/// exec: it takes the capabilities of the calling process for good. It makes
/// async-signal-safe calls only and allocates nothing.
pub(super) unsafe fn drop_privileges(last_cap: u32) -> std::io::Result<()> {
    let keep = keep_mask();
    // SAFETY: the caller is the updater's process (see above).
    unsafe {
        drop_bounding(keep, last_cap)?;
        set_capabilities(keep)?;
    }
    // SAFETY: prctl with integer arguments.
    ok(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
}

/// Drop from the bounding set every capability up to `last_cap` not in `keep`,
/// and clear the ambient set.
///
/// # Safety
///
/// As [`drop_privileges`]: in the updater's process only.
unsafe fn drop_bounding(keep: u64, last_cap: u32) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments; async-signal-safe.
    unsafe {
        for cap in 0..=last_cap.min(63) {
            if keep & (1 << cap) == 0 {
                ok(libc::prctl(
                    libc::PR_CAPBSET_DROP,
                    cap as libc::c_ulong,
                    0,
                    0,
                    0,
                ))?;
            }
        }
        ok(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ))
    }
}

/// Set the effective and permitted sets to `keep`, the inheritable one empty
/// (capset(2), version 3: two 32-bit halves).
///
/// # Safety
///
/// As [`drop_privileges`]: in the updater's process only.
unsafe fn set_capabilities(keep: u64) -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let half = |m: u64| Data {
        effective: m as u32,
        permitted: m as u32,
        inheritable: 0,
    };
    let data = [half(keep), half(keep >> 32)];
    // SAFETY: capset reads the header and the two halves, live locals of the
    // kernel's layout.
    ok(
        unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) }
            as libc::c_int,
    )
}

/// Join a new anonymous session keyring, as runc does for each container: the
/// caller's session keyring (and any key linked there) is out of reach even of
/// a keyring call the filter would allow. A kernel without keyrings has none to
/// reach. Allocates nothing: fit for a forked child.
pub(super) fn join_new_session_keyring() -> std::io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: a null name asks for an anonymous keyring; no memory is passed.
    let id = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if id >= 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOSYS) {
        Ok(())
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::linux::sandbox::testing::{call, errno, in_child, write_all};

    #[test]
    fn no_mknod_in_the_kept_capabilities() {
        assert_eq!(keep_mask() & (1 << 27), 0);
        assert_eq!(keep_mask() & (1 << 21), 0); // CAP_SYS_ADMIN
    }

    /// After joining a new session keyring the caller's session keyring, and a key
    /// in it, are out of reach.
    #[test]
    fn a_new_session_keyring_hides_the_callers() {
        const SESSION: i64 = -3; // KEY_SPEC_SESSION_KEYRING
        const GET_ID: i64 = 0;
        let ours = in_child(|fd| {
            // A session keyring of this child's own, and a key in it.
            join_new_session_keyring().unwrap();
            // SAFETY: valid C strings and a payload buffer with its length.
            let key = unsafe {
                libc::syscall(
                    libc::SYS_add_key,
                    c"user".as_ptr(),
                    c"jlayers-test-key".as_ptr(),
                    c"secret".as_ptr(),
                    6usize,
                    SESSION,
                )
            };
            let before = call(libc::SYS_keyctl, [GET_ID, SESSION, 0, 0]);
            let found = search(SESSION);
            join_new_session_keyring().unwrap();
            let after = call(libc::SYS_keyctl, [GET_ID, SESSION, 0, 0]);
            let found_after = search(SESSION);
            let not_found = found_after < 0 && errno() == libc::ENOKEY;
            let ok =
                key > 0 && found == key && before > 0 && after > 0 && after != before && not_found;
            write_all(fd, if ok { b"ok" } else { b"no" });
        });
        assert_eq!(String::from_utf8_lossy(&ours), "ok");
    }

    /// KEYCTL_SEARCH for the test's key in `keyring`: its id, or -1 (errno set).
    fn search(keyring: i64) -> i64 {
        const SEARCH: i64 = 10; // KEYCTL_SEARCH
        // SAFETY: valid C strings; no destination keyring.
        unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                SEARCH,
                keyring,
                c"user".as_ptr(),
                c"jlayers-test-key".as_ptr(),
                0,
            )
        }
    }
}
