//! The seccomp filter of the sandbox: [`DENIED`] compiled to one short
//! classic-BPF program. [`crate::launch::sandbox::SECCOMP_DENIED`] documents it; a
//! test checks that both name the same calls.
//!
//! The filter allows every system call it does not name: it is a wall for
//! what the namespaces, the identity and Landlock leave open, not an
//! allow-list that would break ordinary programs. Calls of another
//! architecture (i386 through `int 0x80`) kill the process, and every x32
//! call (which shares the x86_64 audit architecture) is refused.
//!
//! Why not a general filter compiler: every child installs the filter, and
//! the kernel's cost of attaching one grows with its length (it converts
//! and JIT-compiles it, and runs it for every system call number to find
//! those it always allows). `seccompiler`'s program for this table was 932
//! instructions and cost ~330 µs per spawn; this one is a chain of one
//! comparison per named call followed by small argument checks (~110
//! instructions, a few µs).

/// When a named call is refused.
#[derive(Debug, Clone, Copy)]
enum When {
    /// Always.
    Always,
    /// When the low 32 bits of argument `arg` have any bit of `mask`.
    AnyBit { arg: u32, mask: u32 },
    /// When the low 32 bits of argument `arg` are one of `values`.
    OneOf { arg: u32, values: &'static [u32] },
    /// When the low 32 bits of argument `arg` are none of `values`.
    NoneOf { arg: u32, values: &'static [u32] },
    /// Unless the low 32 bits of each argument named are the value paired
    /// with it: for calls that act on a process, unless on the caller.
    Unless(&'static [(u32, u32)]),
}

/// A refused call: its number, when, and the error number it fails with.
#[derive(Debug, Clone, Copy)]
struct Deny {
    call: i64,
    /// The call's name, as in [`crate::launch::sandbox::SECCOMP_DENIED`].
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "checked against the docs in a test")
    )]
    name: &'static str,
    when: When,
    errno: i32,
}

/// Every namespace flag of `clone` and `unshare` (`CLONE_NEWTIME`, 0x80,
/// only for `unshare`: in `clone` the bit is part of the exit signal).
const NEW_NAMESPACES: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;
const CLONE_NEWTIME: u32 = 0x80;
const SETUID_BITS: u32 = libc::S_ISUID | libc::S_ISGID;

/// The socket families children may use.
const SOCKET_FAMILIES: &[u32] = &[
    libc::AF_UNIX as u32,
    libc::AF_INET as u32,
    libc::AF_INET6 as u32,
    libc::AF_NETLINK as u32,
];

/// The x32 ABI's flag on x86_64 system call numbers.
const X32: u32 = 0x4000_0000;

const fn always(call: i64, name: &'static str) -> Deny {
    Deny {
        call,
        name,
        when: When::Always,
        errno: libc::EPERM,
    }
}

/// A call that changes the limits, priority or CPUs of the process its
/// arguments name, refused unless they name the caller itself (`self_is`):
/// all children of a root host share one uid, so the kernel lets any of
/// them `prlimit`, renice or pin another guest's (issue 22, row 3).
const fn on_self_only(call: i64, name: &'static str, self_is: &'static [(u32, u32)]) -> Deny {
    Deny {
        call,
        name,
        when: When::Unless(self_is),
        errno: libc::EPERM,
    }
}

/// Argument 0 is a pid, 0 for the caller.
const PID_0: &[(u32, u32)] = &[(0, 0)];

const fn setuid_mode(call: i64, name: &'static str, arg: u32) -> Deny {
    Deny {
        call,
        name,
        when: When::AnyBit {
            arg,
            mask: SETUID_BITS,
        },
        errno: libc::EPERM,
    }
}

/// What the filter refuses; see [`crate::launch::sandbox::SECCOMP_DENIED`].
const DENIED: &[Deny] = &[
    Deny {
        call: libc::SYS_unshare,
        name: "unshare",
        when: When::AnyBit {
            arg: 0,
            mask: NEW_NAMESPACES | CLONE_NEWTIME,
        },
        errno: libc::EPERM,
    },
    Deny {
        call: libc::SYS_clone,
        name: "clone",
        when: When::AnyBit {
            arg: 0,
            mask: NEW_NAMESPACES,
        },
        errno: libc::EPERM,
    },
    // Their arguments are in memory a filter cannot read; libc falls back
    // to `clone` and `openat` on ENOSYS.
    Deny {
        call: libc::SYS_clone3,
        name: "clone3",
        when: When::Always,
        errno: libc::ENOSYS,
    },
    Deny {
        call: libc::SYS_openat2,
        name: "openat2",
        when: When::Always,
        errno: libc::ENOSYS,
    },
    always(libc::SYS_setns, "setns"),
    always(libc::SYS_keyctl, "keyctl"),
    always(libc::SYS_add_key, "add_key"),
    always(libc::SYS_request_key, "request_key"),
    always(libc::SYS_ptrace, "ptrace"),
    always(libc::SYS_process_vm_readv, "process_vm_readv"),
    always(libc::SYS_process_vm_writev, "process_vm_writev"),
    always(libc::SYS_bpf, "bpf"),
    always(libc::SYS_perf_event_open, "perf_event_open"),
    always(libc::SYS_userfaultfd, "userfaultfd"),
    always(libc::SYS_io_uring_setup, "io_uring_setup"),
    always(libc::SYS_io_uring_enter, "io_uring_enter"),
    always(libc::SYS_io_uring_register, "io_uring_register"),
    always(libc::SYS_mount, "mount"),
    always(libc::SYS_umount2, "umount2"),
    always(libc::SYS_pivot_root, "pivot_root"),
    always(libc::SYS_chroot, "chroot"),
    always(libc::SYS_open_tree, "open_tree"),
    always(libc::SYS_move_mount, "move_mount"),
    always(libc::SYS_fsopen, "fsopen"),
    always(libc::SYS_fsconfig, "fsconfig"),
    always(libc::SYS_fsmount, "fsmount"),
    always(libc::SYS_fspick, "fspick"),
    always(libc::SYS_mount_setattr, "mount_setattr"),
    always(libc::SYS_open_by_handle_at, "open_by_handle_at"),
    always(libc::SYS_pidfd_getfd, "pidfd_getfd"),
    always(libc::SYS_kcmp, "kcmp"),
    always(libc::SYS_process_madvise, "process_madvise"),
    // Families a network namespace does not isolate (vsock reaches the
    // hypervisor) or that are kernel attack surface (AF_ALG, ...).
    Deny {
        call: libc::SYS_socket,
        name: "socket",
        when: When::NoneOf {
            arg: 0,
            values: SOCKET_FAMILIES,
        },
        errno: libc::EAFNOSUPPORT,
    },
    Deny {
        call: libc::SYS_socketpair,
        name: "socketpair",
        when: When::NoneOf {
            arg: 0,
            values: SOCKET_FAMILIES,
        },
        errno: libc::EAFNOSUPPORT,
    },
    setuid_mode(libc::SYS_chmod, "chmod", 1),
    setuid_mode(libc::SYS_fchmod, "fchmod", 1),
    setuid_mode(libc::SYS_fchmodat, "fchmodat", 2),
    setuid_mode(libc::SYS_fchmodat2, "fchmodat2", 2),
    setuid_mode(libc::SYS_creat, "creat", 1),
    setuid_mode(libc::SYS_open, "open", 2),
    setuid_mode(libc::SYS_openat, "openat", 3),
    setuid_mode(libc::SYS_mknod, "mknod", 1),
    setuid_mode(libc::SYS_mknodat, "mknodat", 2),
    on_self_only(libc::SYS_prlimit64, "prlimit64", PID_0),
    // PRIO_PROCESS (0) of the caller (0).
    on_self_only(libc::SYS_setpriority, "setpriority", &[(0, 0), (1, 0)]),
    on_self_only(libc::SYS_sched_setaffinity, "sched_setaffinity", PID_0),
    on_self_only(libc::SYS_sched_setscheduler, "sched_setscheduler", PID_0),
    on_self_only(libc::SYS_sched_setparam, "sched_setparam", PID_0),
    on_self_only(libc::SYS_sched_setattr, "sched_setattr", PID_0),
    // IOPRIO_WHO_PROCESS (1) of the caller (0).
    on_self_only(libc::SYS_ioprio_set, "ioprio_set", &[(0, 1), (1, 0)]),
    on_self_only(libc::SYS_migrate_pages, "migrate_pages", PID_0),
    on_self_only(libc::SYS_move_pages, "move_pages", PID_0),
    Deny {
        call: libc::SYS_ioctl,
        name: "ioctl",
        when: When::OneOf {
            arg: 1,
            values: &[libc::TIOCSTI as u32, libc::TIOCLINUX as u32],
        },
        errno: libc::EPERM,
    },
];

/// `struct seccomp_data` offsets.
const NR: u32 = 0;
const ARCH: u32 = 4;
const fn arg_low(arg: u32) -> u32 {
    16 + 8 * arg
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: usize, jf: usize) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | code | libc::BPF_K) as u16,
        jt: u8::try_from(jt).expect("seccomp jump too far"),
        jf: u8::try_from(jf).expect("seccomp jump too far"),
        k,
    }
}

fn load(offset: u32) -> libc::sock_filter {
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

fn ret(action: u32) -> libc::sock_filter {
    stmt(libc::BPF_RET | libc::BPF_K, action)
}

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

/// The checks of one refused call, to run with its number matched.
fn leaf(deny: &Deny) -> Vec<libc::sock_filter> {
    let refuse = ret(errno(deny.errno));
    let allow = ret(libc::SECCOMP_RET_ALLOW);
    match deny.when {
        When::Always => vec![refuse],
        // Any bit set: refuse; else allow.
        When::AnyBit { arg, mask } => vec![
            load(arg_low(arg)),
            jump(libc::BPF_JSET, mask, 0, 1),
            refuse,
            allow,
        ],
        When::OneOf { arg, values } => matching(arg, values, [allow, refuse]),
        When::NoneOf { arg, values } => matching(arg, values, [refuse, allow]),
        When::Unless(pairs) => {
            // Each pair matched falls through to the next; a mismatch
            // jumps over the rest and `allow` to `refuse`.
            let mut code = Vec::new();
            for (i, &(arg, value)) in pairs.iter().enumerate() {
                let rest = 2 * (pairs.len() - 1 - i) + 1;
                code.extend([load(arg_low(arg)), jump(libc::BPF_JEQ, value, 0, rest)]);
            }
            code.extend([allow, refuse]);
            code
        }
    }
}

/// Loads argument `arg` and compares it with each of `values`: no match
/// falls through to `then[0]`, a match jumps over the rest to `then[1]`.
fn matching(arg: u32, values: &[u32], then: [libc::sock_filter; 2]) -> Vec<libc::sock_filter> {
    let mut code = vec![load(arg_low(arg))];
    for (i, &value) in values.iter().enumerate() {
        code.push(jump(libc::BPF_JEQ, value, values.len() - i, 0));
    }
    code.extend(then);
    code
}

/// The filter: the architecture check, the x32 refusal, one comparison
/// per refused call (each jumping to its checks after the chain), and
/// `allow` for every other call.
pub(crate) fn program() -> Vec<libc::sock_filter> {
    let leaves: Vec<Vec<libc::sock_filter>> = DENIED.iter().map(leaf).collect();
    let mut code = vec![
        load(ARCH),
        jump(libc::BPF_JEQ, AUDIT_ARCH, 1, 0),
        ret(libc::SECCOMP_RET_KILL_PROCESS),
        load(NR),
    ];
    if cfg!(target_arch = "x86_64") {
        code.extend([jump(libc::BPF_JGE, X32, 0, 1), ret(errno(libc::EPERM))]);
    }
    // After the chain comes `allow`, then the leaves in order: from
    // comparison `i`, leaf `i` is the rest of the chain, `allow` and the
    // leaves before it away.
    let mut before = 0;
    for (i, (deny, leaf)) in DENIED.iter().zip(&leaves).enumerate() {
        let skip = (DENIED.len() - i - 1) + 1 + before;
        code.push(jump(libc::BPF_JEQ, deny.call as u32, skip, 0));
        before += leaf.len();
    }
    code.push(ret(libc::SECCOMP_RET_ALLOW));
    code.extend(leaves.into_iter().flatten());
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs `program` on a system call as the kernel would (the classic BPF
    /// subset the filter uses), returning the action.
    fn run(program: &[libc::sock_filter], arch: u32, nr: u32, args: [u32; 6]) -> u32 {
        let data = |offset: u32| match offset {
            NR => nr,
            ARCH => arch,
            o => args[((o - 16) / 8) as usize],
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = program[pc];
            let code = u32::from(i.code);
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                acc = data(i.k);
                pc += 1;
            } else if code == libc::BPF_RET | libc::BPF_K {
                return i.k;
            } else {
                let taken = match code & 0xf0 {
                    c if c == libc::BPF_JEQ => acc == i.k,
                    c if c == libc::BPF_JGE => acc >= i.k,
                    c if c == libc::BPF_JSET => acc & i.k != 0,
                    other => panic!("unexpected jump {other:#x}"),
                };
                pc += 1 + usize::from(if taken { i.jt } else { i.jf });
            }
        }
    }

    fn action(nr: i64, args: [u32; 6]) -> u32 {
        run(&program(), AUDIT_ARCH, nr as u32, args)
    }

    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    #[test]
    fn the_documented_table_names_every_refused_call() {
        use std::collections::BTreeSet;
        let documented: BTreeSet<&str> = (crate::launch::sandbox::SECCOMP_DENIED.iter())
            .flat_map(|(calls, _, _)| calls.split(", "))
            .collect();
        let filtered: BTreeSet<&str> = DENIED.iter().map(|d| d.name).collect();
        assert_eq!(documented, filtered);
    }

    #[test]
    fn the_filter_refuses_what_the_table_says_and_allows_the_rest() {
        assert!(program().len() < 200, "{} instructions", program().len());
        assert_eq!(action(libc::SYS_read, [0; 6]), ALLOW);
        assert_eq!(action(libc::SYS_execve, [0; 6]), ALLOW);
        assert_eq!(action(libc::SYS_keyctl, [0; 6]), EPERM);
        assert_eq!(action(libc::SYS_setns, [0; 6]), EPERM);
        assert_eq!(
            action(libc::SYS_clone3, [0; 6]),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        let user = libc::CLONE_NEWUSER as u32;
        assert_eq!(action(libc::SYS_unshare, [user, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            action(libc::SYS_unshare, [CLONE_NEWTIME, 0, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(
            action(libc::SYS_unshare, [libc::CLONE_FILES as u32, 0, 0, 0, 0, 0]),
            ALLOW
        );
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD) as u32;
        assert_eq!(action(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            action(libc::SYS_clone, [thread | user, 0, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(action(libc::SYS_chmod, [0, 0o755, 0, 0, 0, 0]), ALLOW);
        assert_eq!(action(libc::SYS_chmod, [0, 0o4755, 0, 0, 0, 0]), EPERM);
        assert_eq!(action(libc::SYS_fchmodat, [0, 0, 0o2755, 0, 0, 0]), EPERM);
        assert_eq!(action(libc::SYS_openat, [0, 0, 0o101, 0o644, 0, 0]), ALLOW);
        assert_eq!(action(libc::SYS_openat, [0, 0, 0o101, 0o4755, 0, 0]), EPERM);
        let sti = libc::TIOCSTI as u32;
        assert_eq!(action(libc::SYS_ioctl, [0, sti, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            action(libc::SYS_ioctl, [0, libc::TCGETS as u32, 0, 0, 0, 0]),
            ALLOW
        );
        let no_family = libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32;
        let socket = |family: i32| action(libc::SYS_socket, [family as u32, 1, 0, 0, 0, 0]);
        assert_eq!(socket(libc::AF_INET), ALLOW);
        assert_eq!(socket(libc::AF_UNIX), ALLOW);
        assert_eq!(socket(libc::AF_VSOCK), no_family);
        assert_eq!(socket(libc::AF_ALG), no_family);
        assert_eq!(action(libc::SYS_pidfd_getfd, [0; 6]), EPERM);
        // Limits, priority and CPUs: of the caller only.
        assert_eq!(action(libc::SYS_prlimit64, [0, 7, 1, 0, 0, 0]), ALLOW);
        assert_eq!(action(libc::SYS_prlimit64, [4242, 7, 1, 0, 0, 0]), EPERM);
        assert_eq!(action(libc::SYS_setpriority, [0, 0, 19, 0, 0, 0]), ALLOW);
        assert_eq!(action(libc::SYS_setpriority, [0, 4242, 19, 0, 0, 0]), EPERM);
        // PRIO_USER of the caller's uid: every process of that uid.
        assert_eq!(action(libc::SYS_setpriority, [2, 0, 19, 0, 0, 0]), EPERM);
        assert_eq!(
            action(libc::SYS_sched_setaffinity, [0, 8, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            action(libc::SYS_sched_setaffinity, [9, 8, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(action(libc::SYS_ioprio_set, [1, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(action(libc::SYS_ioprio_set, [1, 4242, 0, 0, 0, 0]), EPERM);
        assert_eq!(action(libc::SYS_ioprio_set, [2, 0, 0, 0, 0, 0]), EPERM);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(action(libc::SYS_read | i64::from(X32), [0; 6]), EPERM);
        }
        assert_eq!(
            run(&program(), 3 | 0x4000_0000, 0, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    /// What the table says about `deny` for these arguments: refused or not.
    fn refused(deny: &Deny, args: [u32; 6]) -> bool {
        let arg = |a: u32| args[a as usize];
        match deny.when {
            When::Always => true,
            When::AnyBit { arg: a, mask } => arg(a) & mask != 0,
            When::OneOf { arg: a, values } => values.contains(&arg(a)),
            When::NoneOf { arg: a, values } => !values.contains(&arg(a)),
            When::Unless(pairs) => !pairs.iter().all(|&(a, v)| arg(a) == v),
        }
    }

    /// The action the table gives `deny` for these arguments.
    fn expected(deny: &Deny, args: [u32; 6]) -> u32 {
        match refused(deny, args) {
            true => errno(deny.errno),
            false => ALLOW,
        }
    }

    /// Argument values worth trying for `deny`: zero, all ones, every
    /// single bit, and each value the row names and its neighbours.
    fn probes(deny: &Deny) -> Vec<u32> {
        let mut values = vec![0, u32::MAX];
        values.extend((0..32).map(|bit| 1u32 << bit));
        let named: Vec<u32> = match deny.when {
            When::Always => vec![],
            When::AnyBit { mask, .. } => vec![mask, !mask],
            When::OneOf { values, .. } | When::NoneOf { values, .. } => values.to_vec(),
            When::Unless(pairs) => pairs.iter().map(|&(_, v)| v).collect(),
        };
        for v in named {
            values.extend([v, v.wrapping_add(1), v.wrapping_sub(1)]);
        }
        values
    }

    /// An argument value that is often one `probes` tries and sometimes
    /// anything.
    fn argument(deny: &'static Deny) -> impl Strategy<Value = u32> {
        prop_oneof![proptest::sample::select(probes(deny)), any::<u32>()]
    }

    #[test]
    fn each_row_is_refused_exactly_when_its_condition_holds() {
        let program = program();
        for deny in DENIED {
            let probes = probes(deny);
            // Each probe in each argument, the others zero or the values
            // the row names (so that `Unless` sees its other pairs match).
            let mut bases = vec![[0u32; 6]];
            if let When::Unless(pairs) = deny.when {
                let mut base = [0u32; 6];
                for &(a, v) in pairs {
                    base[a as usize] = v;
                }
                bases.push(base);
            }
            let mut seen = std::collections::BTreeSet::new();
            for base in bases {
                for position in 0..6 {
                    for &value in &probes {
                        let mut args = base;
                        args[position] = value;
                        let got = run(&program, AUDIT_ARCH, deny.call as u32, args);
                        assert_eq!(got, expected(deny, args), "{} with {args:x?}", deny.name);
                        seen.insert(got);
                    }
                }
            }
            // The probes saw both sides of every condition.
            let refuse = errno(deny.errno);
            match deny.when {
                When::Always => assert_eq!(seen, [refuse].into(), "{}", deny.name),
                _ => assert_eq!(seen, [ALLOW, refuse].into(), "{}", deny.name),
            }
        }
    }

    #[test]
    fn no_call_is_named_twice_and_every_refusal_is_an_errno() {
        let mut calls: Vec<i64> = DENIED.iter().map(|d| d.call).collect();
        calls.sort_unstable();
        calls.dedup();
        assert_eq!(calls.len(), DENIED.len(), "a call is named twice");
        for deny in DENIED {
            assert!(deny.errno > 0, "{}", deny.name);
            let action = errno(deny.errno);
            assert_eq!(
                action & libc::SECCOMP_RET_ACTION_FULL,
                libc::SECCOMP_RET_ERRNO
            );
            assert_eq!(action & libc::SECCOMP_RET_DATA, deny.errno as u32);
            assert!(deny.call >= 0 && (deny.call as u32) < X32, "{}", deny.name);
        }
    }

    #[test]
    fn every_jump_lands_inside_the_program_and_every_path_returns() {
        let program = program();
        let last = program.len() - 1;
        let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        let ret = libc::BPF_RET | libc::BPF_K;
        for (pc, i) in program.iter().enumerate() {
            let code = u32::from(i.code);
            if code == ld {
                // A whole word of `struct seccomp_data` (64 bytes).
                assert!(i.k % 4 == 0 && i.k < 64, "load of {} at {pc}", i.k);
                assert!(pc < last, "a load ends the program");
            } else if code == ret {
                continue;
            } else {
                assert_eq!(code & 0x07, libc::BPF_JMP, "instruction {code:#x} at {pc}");
                assert_eq!(code & 0x08, libc::BPF_K, "jump on X at {pc}");
                let op = code & 0xf0;
                assert!(
                    [libc::BPF_JEQ, libc::BPF_JGE, libc::BPF_JSET].contains(&op),
                    "jump {op:#x} at {pc}"
                );
                for offset in [i.jt, i.jf] {
                    let to = pc + 1 + usize::from(offset);
                    assert!(to <= last, "jump from {pc} to {to} of {}", program.len());
                }
            }
        }
        // Classic BPF only jumps forwards, so with every jump in range the
        // program ends in a return.
        assert_eq!(u32::from(program[last].code), ret);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_x32_call_number_is_refused() {
        let program = program();
        let x32 = |nr: u32| run(&program, AUDIT_ARCH, nr, [0; 6]);
        for deny in DENIED {
            assert_eq!(x32(X32 | deny.call as u32), EPERM, "x32 {}", deny.name);
        }
        // Every x32 number and every one above, 3000 evenly apart and the
        // ends.
        let numbers = (X32..=u32::MAX).step_by(1_000_003).chain([u32::MAX]);
        for nr in numbers.chain([X32 | 1, X32 | 512, X32 | 547, 0x7fff_ffff]) {
            assert_eq!(x32(nr), EPERM, "{nr:#x}");
        }
        // And the number just below is an ordinary (unknown) x86_64 call.
        assert_eq!(x32(X32 - 1), ALLOW);
    }

    proptest! {
        #[test]
        fn rows_are_refused_exactly_when_their_condition_holds_for_any_arguments(
            (deny, args) in (0..DENIED.len()).prop_flat_map(|row| {
                let deny = &DENIED[row];
                let a = || argument(deny);
                (a(), a(), a(), a(), a(), a())
                    .prop_map(move |(a0, a1, a2, a3, a4, a5)| (deny, [a0, a1, a2, a3, a4, a5]))
            })
        ) {
            prop_assert_eq!(
                run(&program(), AUDIT_ARCH, deny.call as u32, args),
                expected(deny, args),
                "{} with {:x?}", deny.name, args
            );
        }

        #[test]
        fn calls_the_table_does_not_name_are_allowed(nr in 0..X32, args in any::<[u32; 6]>()) {
            prop_assume!(!DENIED.iter().any(|d| d.call as u32 == nr));
            prop_assert_eq!(run(&program(), AUDIT_ARCH, nr, args), ALLOW);
        }

        #[test]
        fn a_call_of_another_architecture_is_killed(
            arch in any::<u32>(),
            nr in any::<u32>(),
            args in any::<[u32; 6]>(),
        ) {
            prop_assume!(arch != AUDIT_ARCH);
            prop_assert_eq!(run(&program(), arch, nr, args), libc::SECCOMP_RET_KILL_PROCESS);
        }
    }
}
