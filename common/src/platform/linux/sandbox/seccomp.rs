//! The system calls the updater may not make: those Docker's default seccomp
//! profile refuses a container without extra capabilities, as a table that
//! seccompiler (rust-vmm's, Firecracker's) compiles into classic BPF.
//!
//! A refused call fails with EPERM, as under Docker, never kills: an updater that
//! probes a call goes on without it. clone3(2) fails with ENOSYS instead: a filter
//! cannot read the flags it takes in memory, and libc then falls back to clone(2),
//! whose flags the table checks.
//!
//! ABIs. A 64-bit kernel runs 32-bit programs too, and seccomp sees each call with
//! its ABI's audit arch and that ABI's numbers. seccompiler compiles for one arch
//! and kills the calls of any other; jlayers installs one filter per ABI, each
//! compiled from the same table with that ABI's numbers and its arch check turned
//! into "another arch: allow, its own filter decides", plus a guard that refuses
//! (ENOSYS) every call of an ABI no filter covers. On x86_64 i386 has a filter (its
//! own numbers); x32, whose calls come as x86_64's with bit 30 set, is refused by
//! the guard: few kernels run x32 programs (Debian's do not by default), and its
//! numbers in the x86_64 filter would double the time the kernel takes to install
//! it (it runs each filter on every call number to cache what it always allows).
//! On aarch64 the guard refuses the 32-bit arm ABI: jails rarely hold such programs
//! and many arm64 CPUs no longer run them.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// Why a call of the table is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deny {
    /// Always, with EPERM.
    Always,
    /// With EPERM when its first argument (the flags) has any of these bits.
    AnyBit(u32),
    /// With EPERM unless its first argument is one of these.
    Unless(&'static [u32]),
    /// Always, with ENOSYS: the caller falls back to an older call.
    Missing,
}

/// Every namespace clone(2) can make: the updater has CAP_SYS_ADMIN for none of
/// them but a user namespace, in which it would have every capability again.
const NEW_NAMESPACES: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// unshare(2) also takes CLONE_NEWTIME (in clone(2) that bit is the exit signal's).
const CLONE_NEWTIME: u32 = 0x80;

/// The personalities allowed: the default, PER_LINUX32 (`setarch i686`) and the
/// query; never READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE and the like.
const PERSONALITIES: &[u32] = &[0, 0x0008, 0xffff_ffff];

/// The table, by name; each ABI gives the numbers (a name an ABI lacks is left out).
const CALLS: &[(&str, Deny)] = &[
    // The kernel's keyrings are not namespaced: the host's keys.
    ("keyctl", Deny::Always),
    ("add_key", Deny::Always),
    ("request_key", Deny::Always),
    // Kernel attack surface Docker keeps from containers.
    ("bpf", Deny::Always),
    ("perf_event_open", Deny::Always),
    ("userfaultfd", Deny::Always),
    ("io_uring_setup", Deny::Always),
    ("io_uring_enter", Deny::Always),
    ("io_uring_register", Deny::Always),
    // The host's kernel, clock and power.
    ("kexec_load", Deny::Always),
    ("kexec_file_load", Deny::Always),
    ("init_module", Deny::Always),
    ("finit_module", Deny::Always),
    ("delete_module", Deny::Always),
    ("clock_settime", Deny::Always),
    ("clock_settime64", Deny::Always),
    ("clock_adjtime", Deny::Always),
    ("clock_adjtime64", Deny::Always),
    ("settimeofday", Deny::Always),
    ("adjtimex", Deny::Always),
    ("stime", Deny::Always),
    ("acct", Deny::Always),
    ("swapon", Deny::Always),
    ("swapoff", Deny::Always),
    ("reboot", Deny::Always),
    ("vm86", Deny::Always),
    ("vm86old", Deny::Always),
    // Mounts, old API and new.
    ("mount", Deny::Always),
    ("umount", Deny::Always),
    ("umount2", Deny::Always),
    ("fsopen", Deny::Always),
    ("fsconfig", Deny::Always),
    ("fsmount", Deny::Always),
    ("fspick", Deny::Always),
    ("open_tree", Deny::Always),
    ("open_tree_attr", Deny::Always),
    ("move_mount", Deny::Always),
    ("mount_setattr", Deny::Always),
    ("pivot_root", Deny::Always),
    // Namespaces.
    ("setns", Deny::Always),
    ("unshare", Deny::AnyBit(NEW_NAMESPACES | CLONE_NEWTIME)),
    ("clone", Deny::AnyBit(NEW_NAMESPACES)),
    ("clone3", Deny::Missing),
    ("personality", Deny::Unless(PERSONALITIES)),
];

/// This build's own numbers: libc's.
fn native(name: &str) -> Option<i64> {
    Some(match name {
        "keyctl" => libc::SYS_keyctl,
        "add_key" => libc::SYS_add_key,
        "request_key" => libc::SYS_request_key,
        "bpf" => libc::SYS_bpf,
        "perf_event_open" => libc::SYS_perf_event_open,
        "userfaultfd" => libc::SYS_userfaultfd,
        "io_uring_setup" => libc::SYS_io_uring_setup,
        "io_uring_enter" => libc::SYS_io_uring_enter,
        "io_uring_register" => libc::SYS_io_uring_register,
        "kexec_load" => libc::SYS_kexec_load,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "init_module" => libc::SYS_init_module,
        "finit_module" => libc::SYS_finit_module,
        "delete_module" => libc::SYS_delete_module,
        "clock_settime" => libc::SYS_clock_settime,
        "clock_adjtime" => libc::SYS_clock_adjtime,
        "settimeofday" => libc::SYS_settimeofday,
        "adjtimex" => libc::SYS_adjtimex,
        "acct" => libc::SYS_acct,
        "swapon" => libc::SYS_swapon,
        "swapoff" => libc::SYS_swapoff,
        "reboot" => libc::SYS_reboot,
        "mount" => libc::SYS_mount,
        "umount2" => libc::SYS_umount2,
        "fsopen" => libc::SYS_fsopen,
        "fsconfig" => libc::SYS_fsconfig,
        "fsmount" => libc::SYS_fsmount,
        "fspick" => libc::SYS_fspick,
        "open_tree" => libc::SYS_open_tree,
        // Linux 6.15, one number on every arch; not in libc yet.
        "open_tree_attr" => 467,
        "move_mount" => libc::SYS_move_mount,
        "mount_setattr" => libc::SYS_mount_setattr,
        "pivot_root" => libc::SYS_pivot_root,
        "setns" => libc::SYS_setns,
        "unshare" => libc::SYS_unshare,
        "clone" => libc::SYS_clone,
        "clone3" => libc::SYS_clone3,
        "personality" => libc::SYS_personality,
        _ => return None,
    })
}

/// i386's numbers (arch/x86/entry/syscalls/syscall_32.tbl).
#[cfg(target_arch = "x86_64")]
fn i386(name: &str) -> Option<i64> {
    Some(match name {
        "keyctl" => 288,
        "add_key" => 286,
        "request_key" => 287,
        "bpf" => 357,
        "perf_event_open" => 336,
        "userfaultfd" => 374,
        "io_uring_setup" => 425,
        "io_uring_enter" => 426,
        "io_uring_register" => 427,
        "kexec_load" => 283,
        "init_module" => 128,
        "finit_module" => 350,
        "delete_module" => 129,
        "clock_settime" => 264,
        "clock_settime64" => 404,
        "clock_adjtime" => 343,
        "clock_adjtime64" => 405,
        "settimeofday" => 79,
        "adjtimex" => 124,
        "stime" => 25,
        "acct" => 51,
        "swapon" => 87,
        "swapoff" => 115,
        "reboot" => 88,
        "vm86old" => 113,
        "vm86" => 166,
        "mount" => 21,
        "umount" => 22,
        "umount2" => 52,
        "fsopen" => 430,
        "fsconfig" => 431,
        "fsmount" => 432,
        "fspick" => 433,
        "open_tree" => 428,
        "open_tree_attr" => 467,
        "move_mount" => 429,
        "mount_setattr" => 442,
        "pivot_root" => 217,
        "setns" => 346,
        "unshare" => 310,
        "clone" => 120,
        "clone3" => 435,
        "personality" => 136,
        _ => return None,
    })
}

/// An x32 call: an x86_64 number with this bit set, under AUDIT_ARCH_X86_64.
#[cfg(target_arch = "x86_64")]
const X32_BIT: u32 = 0x4000_0000;

/// An ABI with a filter: its audit arch and its numbers.
struct Abi {
    arch: u32,
    numbers: fn(&str) -> Option<i64>,
}

#[cfg(target_arch = "x86_64")]
const ABIS: &[Abi] = &[
    Abi {
        arch: 0xC000_003E, // AUDIT_ARCH_X86_64
        numbers: native,
    },
    Abi {
        arch: 0x4000_0003, // AUDIT_ARCH_I386
        numbers: i386,
    },
];
#[cfg(target_arch = "aarch64")]
const ABIS: &[Abi] = &[Abi {
    arch: 0xC000_00B7, // AUDIT_ARCH_AARCH64
    numbers: native,
}];

/// The arch seccompiler compiles for: this build's (the arch check is rewritten).
#[cfg(target_arch = "x86_64")]
const TARGET: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const TARGET: TargetArch = TargetArch::aarch64;

/// [`compile`]d once per process: a fixed table, compiled on every build by the
/// unit tests, so it cannot fail at run time.
pub(crate) fn filters() -> &'static [BpfProgram] {
    static FILTERS: std::sync::OnceLock<Vec<BpfProgram>> = std::sync::OnceLock::new();
    FILTERS.get_or_init(|| compile().expect("the seccomp table compiles"))
}

/// The filters to install, all of them (the kernel runs every one on each call
/// and takes the strictest answer): the arch guard, then per ABI one filter for
/// the calls refused with EPERM and one for those refused with ENOSYS.
fn compile() -> Result<Vec<BpfProgram>> {
    let mut programs = vec![guard()];
    for abi in ABIS {
        let mut eperm = BTreeMap::new();
        let mut enosys = BTreeMap::new();
        for &(name, deny) in CALLS {
            let Some(number) = (abi.numbers)(name) else {
                continue;
            };
            match deny {
                Deny::Missing => enosys.insert(number, Vec::new()),
                _ => eperm.insert(number, rules(deny)?),
            };
        }
        for (rules, errno) in [(eperm, libc::EPERM), (enosys, libc::ENOSYS)] {
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno as u32),
                TARGET,
            )
            .context("seccomp filter")?;
            let mut program = BpfProgram::try_from(filter).context("seccomp filter")?;
            retarget(&mut program, abi.arch)?;
            programs.push(program);
        }
    }
    Ok(programs)
}

/// The rules under which a call of the table matches (no rule: always).
fn rules(deny: Deny) -> Result<Vec<SeccompRule>> {
    let first_arg = |op, value: u32| {
        SeccompCondition::new(0, SeccompCmpArgLen::Dword, op, value.into())
            .context("seccomp condition")
    };
    Ok(match deny {
        Deny::Always | Deny::Missing => Vec::new(),
        // One rule per bit: rules are alternatives, a rule's conditions all hold.
        Deny::AnyBit(mask) => (0..32)
            .map(|bit| 1u32 << bit)
            .filter(|flag| mask & flag != 0)
            .map(|flag| {
                let condition = first_arg(SeccompCmpOp::MaskedEq(flag.into()), flag)?;
                SeccompRule::new(vec![condition]).context("seccomp rule")
            })
            .collect::<Result<_>>()?,
        Deny::Unless(allowed) => {
            let conditions = allowed
                .iter()
                .map(|&value| first_arg(SeccompCmpOp::Ne, value))
                .collect::<Result<_>>()?;
            vec![SeccompRule::new(conditions).context("seccomp rule")?]
        }
    })
}

const LD_ARCH: sock_filter = sock_filter {
    code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
    jt: 0,
    jf: 0,
    k: 4, // struct seccomp_data: the arch after the number
};

/// seccompiler's programs open with `load arch; equal to TARGET: skip one; kill`.
/// Make that `equal to arch: skip one; allow`, same length (the jumps after it stay
/// right): another arch's calls are left to that arch's filter and the guard.
fn retarget(program: &mut BpfProgram, arch: u32) -> Result<()> {
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    match program.get_mut(..3) {
        Some([load, check, kill])
            if *load == LD_ARCH
                && check.code == jeq
                && (check.jt, check.jf) == (1, 0)
                && kill.code == ret
                && kill.k == libc::SECCOMP_RET_KILL_PROCESS =>
        {
            check.k = arch;
            kill.k = libc::SECCOMP_RET_ALLOW;
            Ok(())
        }
        _ => bail!("seccompiler's program does not open with the arch check jlayers rewrites"),
    }
}

/// Refuse (ENOSYS) the calls of every ABI no filter covers; allow the others.
fn guard() -> BpfProgram {
    let op = |code: u32, jt, jf, k| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    let refuse = op(ret, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
    let allow = op(ret, 0, 0, libc::SECCOMP_RET_ALLOW);
    #[cfg(target_arch = "x86_64")]
    let program = vec![
        LD_ARCH,
        op(jeq, 0, 3, ABIS[0].arch),
        // x86_64: refuse x32's numbers.
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        op(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, 2, 0, X32_BIT),
        allow.clone(),
        op(jeq, 1, 0, ABIS[1].arch),
        refuse,
        allow,
    ];
    #[cfg(target_arch = "aarch64")]
    let program = vec![LD_ARCH, op(jeq, 1, 0, ABIS[0].arch), refuse, allow];
    program
}

/// Install `filters` on the calling thread (no_new_privs, which seccomp requires
/// without CAP_SYS_ADMIN, is set too). Allocates nothing: fit for a forked child.
pub(crate) fn install(filters: &[BpfProgram]) -> std::io::Result<()> {
    for filter in filters {
        seccompiler::apply_filter(filter).map_err(|err| match err {
            seccompiler::Error::Prctl(err) | seccompiler::Error::Seccomp(err) => err,
            _ => std::io::Error::from_raw_os_error(libc::EINVAL),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::linux::sandbox::testing::{call, errno, in_child, write_all};

    /// Every name of the table has a number on some ABI (a misspelt name would be
    /// left out silently), and the natively refused calls are all there.
    #[test]
    fn every_call_has_a_number() {
        for &(name, _) in CALLS {
            assert!(
                ABIS.iter().any(|abi| (abi.numbers)(name).is_some()),
                "{name}: no ABI has it"
            );
        }
        for name in ["keyctl", "bpf", "mount", "unshare", "clone3", "personality"] {
            assert!(native(name).is_some(), "{name}");
        }
    }

    #[test]
    fn filters_compile() {
        let programs = compile().unwrap();
        assert_eq!(programs.len(), 1 + 2 * ABIS.len());
        for program in &programs {
            assert!(program.len() < 4096, "{}", program.len());
            assert_eq!(program[0], LD_ARCH);
            assert_eq!(program.last().unwrap().code, 0x06, "ends in a return");
        }
    }

    /// The numbers of this build's own ABI, from libc (and the one libc lacks):
    /// a second reading of the kernel's table, beside [`native`]'s.
    fn libc_number(name: &str) -> Option<i64> {
        [
            ("keyctl", libc::SYS_keyctl),
            ("add_key", libc::SYS_add_key),
            ("request_key", libc::SYS_request_key),
            ("bpf", libc::SYS_bpf),
            ("perf_event_open", libc::SYS_perf_event_open),
            ("userfaultfd", libc::SYS_userfaultfd),
            ("io_uring_setup", libc::SYS_io_uring_setup),
            ("io_uring_enter", libc::SYS_io_uring_enter),
            ("io_uring_register", libc::SYS_io_uring_register),
            ("kexec_load", libc::SYS_kexec_load),
            ("kexec_file_load", libc::SYS_kexec_file_load),
            ("init_module", libc::SYS_init_module),
            ("finit_module", libc::SYS_finit_module),
            ("delete_module", libc::SYS_delete_module),
            ("clock_settime", libc::SYS_clock_settime),
            ("clock_adjtime", libc::SYS_clock_adjtime),
            ("settimeofday", libc::SYS_settimeofday),
            ("adjtimex", libc::SYS_adjtimex),
            ("acct", libc::SYS_acct),
            ("swapon", libc::SYS_swapon),
            ("swapoff", libc::SYS_swapoff),
            ("reboot", libc::SYS_reboot),
            ("mount", libc::SYS_mount),
            ("umount2", libc::SYS_umount2),
            ("fsopen", libc::SYS_fsopen),
            ("fsconfig", libc::SYS_fsconfig),
            ("fsmount", libc::SYS_fsmount),
            ("fspick", libc::SYS_fspick),
            ("open_tree", libc::SYS_open_tree),
            // include/uapi/asm-generic/unistd.h and syscall_64.tbl of Linux 6.15.
            ("open_tree_attr", 467),
            ("move_mount", libc::SYS_move_mount),
            ("mount_setattr", libc::SYS_mount_setattr),
            ("pivot_root", libc::SYS_pivot_root),
            ("setns", libc::SYS_setns),
            ("unshare", libc::SYS_unshare),
            ("clone", libc::SYS_clone),
            ("clone3", libc::SYS_clone3),
            ("personality", libc::SYS_personality),
        ]
        .into_iter()
        .find_map(|(n, number)| (n == name).then_some(number))
    }

    /// i386's numbers as the kernel's headers give them (asm/unistd_32.h, from
    /// arch/x86/entry/syscalls/syscall_32.tbl), for the table's calls i386 has.
    #[cfg(target_arch = "x86_64")]
    const UNISTD_32: &str = "\
#define __NR_mount 21
#define __NR_umount 22
#define __NR_stime 25
#define __NR_acct 51
#define __NR_umount2 52
#define __NR_settimeofday 79
#define __NR_swapon 87
#define __NR_reboot 88
#define __NR_vm86old 113
#define __NR_swapoff 115
#define __NR_clone 120
#define __NR_adjtimex 124
#define __NR_init_module 128
#define __NR_delete_module 129
#define __NR_personality 136
#define __NR_vm86 166
#define __NR_pivot_root 217
#define __NR_clock_settime 264
#define __NR_kexec_load 283
#define __NR_add_key 286
#define __NR_request_key 287
#define __NR_keyctl 288
#define __NR_unshare 310
#define __NR_perf_event_open 336
#define __NR_clock_adjtime 343
#define __NR_setns 346
#define __NR_finit_module 350
#define __NR_bpf 357
#define __NR_userfaultfd 374
#define __NR_clock_settime64 404
#define __NR_clock_adjtime64 405
#define __NR_io_uring_setup 425
#define __NR_io_uring_enter 426
#define __NR_io_uring_register 427
#define __NR_open_tree 428
#define __NR_move_mount 429
#define __NR_fsopen 430
#define __NR_fsconfig 431
#define __NR_fsmount 432
#define __NR_fspick 433
#define __NR_clone3 435
#define __NR_mount_setattr 442
#define __NR_open_tree_attr 467
";

    /// The number `name` has on the ABI of audit arch `arch`, from a source other
    /// than the ABI's own table.
    fn expected_number(arch: u32, name: &str) -> Option<i64> {
        #[cfg(target_arch = "x86_64")]
        if arch == 0x4000_0003 {
            return UNISTD_32.lines().find_map(|line| {
                let (define, number) = line.rsplit_once(' ')?;
                (define.strip_prefix("#define __NR_")? == name).then(|| number.parse().unwrap())
            });
        }
        assert_eq!(arch, ABIS[0].arch, "an ABI without a second table");
        libc_number(name)
    }

    /// What classic BPF `program` returns for `data` (struct seccomp_data), as the
    /// kernel runs it: the instructions seccompiler and [`guard`] emit.
    fn run_bpf(program: &[sock_filter], data: &[u8; 64]) -> u32 {
        let jump = |code: u32, acc: u32, k: u32| match code & 0xf0 {
            c if c == libc::BPF_JEQ => acc == k,
            c if c == libc::BPF_JGT => acc > k,
            c if c == libc::BPF_JGE => acc >= k,
            _ => panic!("jump {code:#x}"),
        };
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let op = &program[pc];
            let code = u32::from(op.code);
            pc += 1;
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                let at = op.k as usize;
                acc = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
            } else if code == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K {
                acc &= op.k;
            } else if code == libc::BPF_JMP | libc::BPF_JA {
                pc += op.k as usize;
            } else if code & 0x07 == libc::BPF_JMP && code & 0x08 == libc::BPF_K {
                pc += usize::from(if jump(code, acc, op.k) { op.jt } else { op.jf });
            } else if code == libc::BPF_RET | libc::BPF_K {
                return op.k;
            } else {
                panic!("instruction {code:#x}");
            }
        }
    }

    /// The errno the filters refuse call `nr` of ABI `arch` with, its arguments
    /// all `arg`; `None`: allowed. At most one filter refuses any call.
    fn verdict(programs: &[BpfProgram], arch: u32, nr: i64, arg: u64) -> Option<u32> {
        let mut data = [0u8; 64];
        data[..4].copy_from_slice(&(nr as u32).to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for at in (16..64).step_by(8) {
            data[at..at + 8].copy_from_slice(&arg.to_ne_bytes());
        }
        let refusals: Vec<u32> = programs
            .iter()
            .map(|program| run_bpf(program, &data))
            .filter(|&ret| ret != libc::SECCOMP_RET_ALLOW)
            .collect();
        assert!(refusals.len() <= 1, "{arch:#x} {nr}: {refusals:x?}");
        let ret = *refusals.first()?;
        assert_eq!(ret & !0xffff, libc::SECCOMP_RET_ERRNO, "{arch:#x} {nr}");
        Some(ret & 0xffff)
    }

    /// Per ABI: each call of the table has the number a second source gives it,
    /// and the compiled filters refuse exactly those numbers (under some first
    /// argument: all bits set for the flags, READ_IMPLIES_EXEC for personality),
    /// with the table's errno. Two numbers swapped fails here.
    #[test]
    fn each_abi_refuses_exactly_its_own_numbers() {
        let programs = compile().unwrap();
        for abi in ABIS {
            let mut want = BTreeMap::new();
            for &(name, deny) in CALLS {
                let number = expected_number(abi.arch, name);
                assert_eq!((abi.numbers)(name), number, "{:#x} {name}", abi.arch);
                let errno = if deny == Deny::Missing {
                    libc::ENOSYS
                } else {
                    libc::EPERM
                };
                want.extend(number.map(|number| (number, errno as u32)));
            }
            let refused: BTreeMap<i64, u32> = (0..1024)
                .filter_map(|nr| {
                    [u64::MAX, 0x0040_0000]
                        .into_iter()
                        .find_map(|arg| verdict(&programs, abi.arch, nr, arg))
                        .map(|errno| (nr, errno))
                })
                .collect();
            assert_eq!(refused, want, "{:#x}", abi.arch);
        }
    }

    #[test]
    fn retarget_refuses_an_unknown_opening() {
        let mut program = guard();
        assert!(retarget(&mut program, 0).is_err());
    }

    /// An i386 call from this 64-bit process (int 0x80: seccomp sees
    /// AUDIT_ARCH_I386 and i386's numbers), with two arguments.
    #[cfg(target_arch = "x86_64")]
    fn call_i386(nr: i64, a: i64, b: i64) -> i64 {
        let mut eax = nr;
        // SAFETY: int 0x80 reads eax, ebx, ecx (and more, which these calls ignore)
        // and writes eax; rbx is reserved by LLVM, hence the exchange.
        unsafe {
            std::arch::asm!(
                "xchg {a:r}, rbx",
                "int 0x80",
                "xchg {a:r}, rbx",
                a = inout(reg) a => _,
                inout("rax") eax,
                in("rcx") b,
                lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _,
            );
        }
        // i386 returns a 32-bit value: -errno sign-extended from eax.
        i64::from(eax as i32)
    }

    /// What a call must return under the filter.
    #[derive(Clone, Copy, PartialEq)]
    enum Want {
        /// Refused with this errno.
        Refused(i32),
        /// Refused with this errno, and without a filter it succeeds for anyone
        /// (root or not): its refusal can only be the filter's.
        RefusedOnlyByFilter(i32),
        /// Goes through (any result not negative).
        Allowed,
    }

    type Check = (&'static str, fn() -> i64, Want);

    const SESSION: i64 = -3; // KEY_SPEC_SESSION_KEYRING
    const GET_ID: i64 = 0; // KEYCTL_GET_KEYRING_ID
    const NEWUSER: i64 = libc::CLONE_NEWUSER as i64;
    const EPERM: Want = Want::Refused(libc::EPERM);
    const ONLY: Want = Want::RefusedOnlyByFilter(libc::EPERM);
    const ALLOWED: Want = Want::Allowed;

    /// The sample calls. The refused ones have arguments that make them fail or
    /// act on the test's child alone if a broken filter let them through (clone(2)
    /// gets CLONE_FS beside CLONE_NEWUSER, which the kernel refuses: no child).
    fn checks() -> Vec<Check> {
        let mut checks = kernel_checks();
        checks.extend(mount_checks());
        checks.extend(allowed_checks());
        #[cfg(target_arch = "x86_64")]
        checks.extend(other_abi_checks());
        checks
    }

    /// Calls at the kernel's keyrings, attack surface, clock and power.
    fn kernel_checks() -> Vec<Check> {
        vec![
            // By libc's numbers: a filter built with numbers swapped or off by one
            // fails here.
            (
                "keyctl",
                || call(libc::SYS_keyctl, [GET_ID, SESSION, 0, 0]),
                ONLY,
            ),
            ("add_key", || call(libc::SYS_add_key, [0, 0, 0, 0]), EPERM),
            (
                "request_key",
                || call(libc::SYS_request_key, [0, 0, 0, 0]),
                EPERM,
            ),
            ("bpf", || call(libc::SYS_bpf, [0, 0, 0, 0]), EPERM),
            (
                "perf_event_open",
                || call(libc::SYS_perf_event_open, [0, 0, -1, -1]),
                EPERM,
            ),
            // UFFD_USER_MODE_ONLY: allowed to anyone where there is no filter.
            (
                "userfaultfd",
                || call(libc::SYS_userfaultfd, [1, 0, 0, 0]),
                ONLY,
            ),
            (
                "io_uring_setup",
                || call(libc::SYS_io_uring_setup, [0, 0, 0, 0]),
                EPERM,
            ),
            // An arch in the flags that is none: EINVAL if it got through.
            (
                "kexec_load",
                || call(libc::SYS_kexec_load, [0, 0, 0, 0x0001_0000]),
                EPERM,
            ),
            (
                "init_module",
                || call(libc::SYS_init_module, [0, 0, 0, 0]),
                EPERM,
            ),
            (
                "clock_settime",
                || call(libc::SYS_clock_settime, [-1, 0, 0, 0]),
                EPERM,
            ),
            (
                "settimeofday",
                || call(libc::SYS_settimeofday, [0, 0, 0, 0]),
                EPERM,
            ),
            ("acct", || call(libc::SYS_acct, [1, 0, 0, 0]), EPERM),
            ("reboot", || call(libc::SYS_reboot, [0, 0, 0, 0]), EPERM),
        ]
    }

    /// Mounts, namespaces and personalities.
    fn mount_checks() -> Vec<Check> {
        vec![
            ("mount", || call(libc::SYS_mount, [0, 0, 0, 0]), EPERM),
            ("umount2", || call(libc::SYS_umount2, [0, 0, 0, 0]), EPERM),
            ("fsopen", || call(libc::SYS_fsopen, [0, 0, 0, 0]), EPERM),
            (
                "open_tree",
                || call(libc::SYS_open_tree, [-1, 0, 0, 0]),
                EPERM,
            ),
            ("open_tree_attr", || call(467, [-1, 0, 0, 0]), EPERM),
            (
                "pivot_root",
                || call(libc::SYS_pivot_root, [0, 0, 0, 0]),
                EPERM,
            ),
            ("setns", || call(libc::SYS_setns, [-1, 0, 0, 0]), EPERM),
            (
                "unshare(CLONE_NEWUSER)",
                || call(libc::SYS_unshare, [NEWUSER, 0, 0, 0]),
                EPERM,
            ),
            (
                "unshare(CLONE_NEWNS)",
                || call(libc::SYS_unshare, [libc::CLONE_NEWNS as i64, 0, 0, 0]),
                EPERM,
            ),
            (
                "unshare(CLONE_NEWTIME)",
                || call(libc::SYS_unshare, [0x80, 0, 0, 0]),
                EPERM,
            ),
            (
                "clone(CLONE_NEWUSER)",
                || call(libc::SYS_clone, [NEWUSER | 0x200, 0, 0, 0]),
                EPERM,
            ),
            (
                "clone3",
                || call(libc::SYS_clone3, [0, 0, 0, 0]),
                Want::Refused(libc::ENOSYS),
            ),
            // Allowed to anyone where there is no filter.
            (
                "personality(READ_IMPLIES_EXEC)",
                || call(libc::SYS_personality, [0x0040_0000, 0, 0, 0]),
                ONLY,
            ),
            (
                "personality(ADDR_NO_RANDOMIZE)",
                || call(libc::SYS_personality, [0x0004_0000, 0, 0, 0]),
                ONLY,
            ),
        ]
    }

    fn allowed_checks() -> Vec<Check> {
        vec![
            // Allowed.
            ("getpid", || call(libc::SYS_getpid, [0; 4]), ALLOWED),
            (
                "personality(query)",
                || call(libc::SYS_personality, [0xffff_ffff, 0, 0, 0]),
                ALLOWED,
            ),
            (
                "personality(PER_LINUX)",
                || call(libc::SYS_personality, [0, 0, 0, 0]),
                ALLOWED,
            ),
            (
                "unshare(CLONE_FILES)",
                || call(libc::SYS_unshare, [libc::CLONE_FILES as i64, 0, 0, 0]),
                ALLOWED,
            ),
            ("fork", fork_and_reap, ALLOWED),
        ]
    }

    /// The other ABIs of an x86_64 kernel: x32, i386.
    #[cfg(target_arch = "x86_64")]
    fn other_abi_checks() -> Vec<Check> {
        vec![
            // The guard refuses x32 whole (this kernel may lack it: ENOSYS too).
            (
                "x32 keyctl",
                (|| {
                    call(
                        libc::SYS_keyctl | i64::from(X32_BIT),
                        [GET_ID, SESSION, 0, 0],
                    )
                }) as fn() -> i64,
                Want::Refused(libc::ENOSYS),
            ),
            (
                "x32 getpid",
                || call(libc::SYS_getpid | i64::from(X32_BIT), [0; 4]),
                Want::Refused(libc::ENOSYS),
            ),
            ("i386 keyctl", || call_i386(288, GET_ID, SESSION), ONLY),
            ("i386 mount", || call_i386(21, 0, 0), EPERM),
            (
                "i386 unshare(CLONE_NEWUSER)",
                || call_i386(310, NEWUSER, 0),
                EPERM,
            ),
            (
                "i386 clone3",
                || call_i386(435, 0, 0),
                Want::Refused(libc::ENOSYS),
            ),
            ("i386 getpid", || call_i386(20, 0, 0), ALLOWED),
        ]
    }

    fn fork_and_reap() -> i64 {
        // SAFETY: the grandchild only exits; the caller reaps it.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                libc::_exit(0);
            }
            if pid < 0 {
                return -i64::from(errno());
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                0
            } else {
                -1
            }
        }
    }

    /// Run each check in a forked child, after `setup`; the indexes of those
    /// for which `wrong` holds (u8::MAX: `setup` failed).
    fn run_checks(
        checks: &[Check],
        setup: impl FnOnce() -> bool,
        wrong: impl Fn(i64, Want) -> bool,
    ) -> Vec<u8> {
        in_child(|fd| {
            if !setup() {
                write_all(fd, &[u8::MAX]);
                return;
            }
            for (index, &(_, check, want)) in checks.iter().enumerate() {
                if wrong(check(), want) {
                    write_all(fd, &[index as u8]);
                }
            }
        })
    }

    /// The filters on sample calls, in a forked child that applies them with
    /// no_new_privs alone (no root needed): each refused call fails with its
    /// errno, each allowed one goes through.
    #[test]
    fn filters_refuse_the_table_and_allow_the_rest() {
        let programs = filters();
        let checks = checks();
        assert!(checks.len() < usize::from(u8::MAX));
        // Without the filter first: the calls only the filter refuses go through,
        // or this test would prove nothing (an i386 call fails if this kernel
        // cannot run i386 programs: then the i386 filter would go untested).
        let unfiltered: Vec<Check> = checks
            .iter()
            .copied()
            .filter(|&(_, _, want)| !matches!(want, Want::Refused(_)))
            .collect();
        let control = run_checks(&unfiltered, || true, |got, _| got < 0);
        let names = |checks: &[Check], failed: &[u8]| -> Vec<&str> {
            failed.iter().map(|&i| checks[usize::from(i)].0).collect()
        };
        assert!(
            control.is_empty(),
            "without a filter these fail already: {:?}",
            names(&unfiltered, &control)
        );
        let failed = run_checks(
            &checks,
            || {
                // SAFETY: plain prctl.
                let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                nnp == 0 && install(programs).is_ok()
            },
            |got, want| match want {
                Want::Refused(errno) | Want::RefusedOnlyByFilter(errno) => got != -i64::from(errno),
                Want::Allowed => got < 0,
            },
        );
        assert_ne!(failed, [u8::MAX], "the filters did not install");
        assert!(
            failed.is_empty(),
            "wrong under the filter: {:?}",
            names(&checks, &failed)
        );
    }
}
