//! The seccomp filters of the sandbox (see [`crate::sandbox::SECCOMP_DENIED`]
//! for the table they implement), compiled to BPF with `seccompiler`.
//!
//! Both filters allow every system call they do not name: they are a wall
//! for what the namespaces, the identity and Landlock leave open, not an
//! allow-list that would break ordinary programs. On x86_64 the x32 numbers
//! of each named call are refused too, and any other architecture's calls
//! (i386 through `int 0x80`) kill the process.

use anyhow::Result;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};
use std::collections::BTreeMap;

/// Every namespace flag of `clone` and `unshare`.
const NEW_NAMESPACES: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// `CLONE_NEWTIME`, which only `unshare` takes (in `clone` the bit is part
/// of the exit signal).
const CLONE_NEWTIME: u64 = 0x80;

const SETUID_BITS: &[u64] = &[libc::S_ISUID as u64, libc::S_ISGID as u64];

/// The x32 ABI's flag on x86_64 system call numbers.
const X32: i64 = 0x4000_0000;

/// Rules matching when argument `arg` has any of `bits`.
fn any_bit(arg: u8, bits: &[u64]) -> Result<Vec<SeccompRule>> {
    bits.iter()
        .map(|&bit| {
            let cond = SeccompCondition::new(
                arg,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(bit),
                bit,
            )?;
            Ok(SeccompRule::new(vec![cond])?)
        })
        .collect()
}

/// Rules matching when argument `arg` equals one of `values`.
fn equals(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>> {
    values
        .iter()
        .map(|&value| {
            let cond =
                SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)?;
            Ok(SeccompRule::new(vec![cond])?)
        })
        .collect()
}

/// The calls refused with `EPERM`: number → rules (empty: always).
fn eperm_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>> {
    let mut unshare_flags = NEW_NAMESPACES.to_vec();
    unshare_flags.push(CLONE_NEWTIME);
    let always = [
        libc::SYS_setns,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_open_by_handle_at,
    ];
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        always.into_iter().map(|n| (n, Vec::new())).collect();
    rules.insert(libc::SYS_unshare, any_bit(0, &unshare_flags)?);
    rules.insert(libc::SYS_clone, any_bit(0, NEW_NAMESPACES)?);
    // The mode argument of each call that sets one.
    for (call, mode_arg) in [
        (libc::SYS_chmod, 1),
        (libc::SYS_fchmod, 1),
        (libc::SYS_fchmodat, 2),
        (libc::SYS_fchmodat2, 2),
        (libc::SYS_creat, 1),
        (libc::SYS_open, 2),
        (libc::SYS_openat, 3),
        (libc::SYS_mknod, 1),
        (libc::SYS_mknodat, 2),
    ] {
        rules.insert(call, any_bit(mode_arg, SETUID_BITS)?);
    }
    rules.insert(
        libc::SYS_ioctl,
        equals(1, &[libc::TIOCSTI, libc::TIOCLINUX])?,
    );
    Ok(with_x32(rules))
}

/// On x86_64, the same rules for the x32 numbers of the calls (the x32
/// ABI shares the x86_64 audit architecture, so the filter's architecture
/// check does not stop it).
fn with_x32(rules: BTreeMap<i64, Vec<SeccompRule>>) -> BTreeMap<i64, Vec<SeccompRule>> {
    if !cfg!(target_arch = "x86_64") {
        return rules;
    }
    let mut all = rules.clone();
    for (call, rule) in rules {
        all.insert(call | X32, rule);
    }
    // x32 numbers its own ptrace and process_vm_* calls apart.
    for call in [521, 539, 540] {
        all.insert(call | X32, Vec::new());
    }
    all
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<Vec<libc::sock_filter>> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )?;
    let program: seccompiler::BpfProgram = filter.try_into()?;
    Ok(program
        .into_iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect())
}

/// The two programs: `ENOSYS` for the calls whose arguments a filter
/// cannot read (`clone3`, `openat2`), `EPERM` for the rest.
pub(crate) fn programs() -> Result<[Vec<libc::sock_filter>; 2]> {
    let enosys: BTreeMap<i64, Vec<SeccompRule>> = [libc::SYS_clone3, libc::SYS_openat2]
        .into_iter()
        .map(|n| (n, Vec::new()))
        .collect();
    Ok([
        compile(with_x32(enosys), libc::ENOSYS)?,
        compile(eperm_rules()?, libc::EPERM)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_programs_compile() {
        let [enosys, eperm] = programs().unwrap();
        assert!(!enosys.is_empty() && !eperm.is_empty());
        // BPF programs are at most 4096 instructions.
        assert!(eperm.len() < 4096, "{} instructions", eperm.len());
    }
}
