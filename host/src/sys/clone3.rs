//! `clone3` itself: its argument structure and, for a child that shares
//! the parent's memory (`CLONE_VM | CLONE_VFORK`), the raw system call
//! that runs the child on its own stack. Both ways of starting a process
//! that need `clone3` use it: a spawned child started in a cgroup
//! (`spawn`) and a worker template's fork (`fork`).

use std::ffi::{c_int, c_void};

/// `struct clone_args` of `clone3(2)`, up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
pub(super) struct CloneArgs {
    pub(super) flags: u64,
    pub(super) pidfd: u64,
    pub(super) child_tid: u64,
    pub(super) parent_tid: u64,
    pub(super) exit_signal: u64,
    pub(super) stack: u64,
    pub(super) stack_size: u64,
    pub(super) tls: u64,
    pub(super) set_tid: u64,
    pub(super) set_tid_size: u64,
    pub(super) cgroup: u64,
}

pub(super) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3(args)`, the child calling `child(arg)` on the stack `args`
/// names and then exiting; returns the child's pid or `-errno`.
///
/// # Safety
/// As `libc::clone` with CLONE_VM | CLONE_VFORK: `args` must describe a
/// valid stack with a 16-byte aligned top, and `child` must never return
/// into this function's caller (it runs on that stack, sharing memory).
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn clone3_vfork(
    args: &CloneArgs,
    child: extern "C" fn(*mut c_void) -> c_int,
    arg: *mut c_void,
) -> i64 {
    let ret: i64;
    // SAFETY: see the function's contract. The kernel starts the child
    // after the `syscall` instruction with rax = 0 and rsp = the top of its
    // stack (16-byte aligned, so `call` leaves the callee the ABI's
    // alignment); r12 and r13 are kept. The child calls `child(arg)` and
    // exits with its result without returning into Rust code. The parent
    // only sees rax (the pid or -errno), rcx and r11 clobbered by `syscall`.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, 60", // SYS_exit
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") child,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Starting a child in a cgroup needs `clone3`, implemented for x86_64
/// only; elsewhere `cgroup` never hands out a cgroup.
#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn clone3_vfork(
    _args: &CloneArgs,
    _child: extern "C" fn(*mut c_void) -> c_int,
    _arg: *mut c_void,
) -> i64 {
    -(libc::ENOSYS as i64)
}
