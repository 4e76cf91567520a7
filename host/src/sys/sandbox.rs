//! Building a sandbox ([`build_sandbox`]): a short-lived process sharing
//! the host's memory and descriptor table makes the namespaces (user,
//! mount, IPC, network), has the file system view assembled (the mount
//! steps are in `mounts`), opens the namespaces' files for the host to
//! keep, and `pivot_root`s into the new root. This module holds the
//! builder's specification and result, its entry point and its steps that
//! concern namespaces; it reports which step failed.

use super::mounts::{
    MountStep, at_step, attach_binds, detach_bind_sources, make_entries, make_root_read_only,
    make_root_tmpfs, stage_root,
};
use super::{CHILD_STACK, check_os, last_errno};
use std::ffi::{CStr, c_int, c_void};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// What [`build_sandbox`] makes.
pub(crate) struct SandboxSpec<'a> {
    /// For a host without root: the contents of `uid_map` and `gid_map` of
    /// a new user namespace that owns the others.
    pub user_maps: Option<(&'a CStr, &'a CStr)>,
    /// Whether to make a new (empty) network namespace.
    pub net: bool,
    /// Whether to make a PID namespace, with an init process of its own
    /// that mounts the namespace's `/proc` in the view (needs
    /// `CAP_SYS_ADMIN` in the host's own user namespace: a root host).
    pub pid: bool,
    /// An existing directory of the host to stage the new root on while it
    /// is assembled (only in the new mount namespace).
    pub stage: &'a CStr,
    /// The steps, in order: every directory, file and link first, then the
    /// binds (parents before what is bound inside them).
    pub steps: &'a [MountStep<'a>],
}

/// The namespaces of a built sandbox, held open by these descriptors, and
/// its root directory. Dropping it kills the PID namespace's init, if it
/// has one (and so every process of the namespace).
#[derive(Debug)]
pub(crate) struct SandboxFds {
    /// The root of the sandbox's file system view.
    pub root: OwnedFd,
    /// Its user namespace, for a host without root.
    pub user: Option<OwnedFd>,
    /// Its mount namespace.
    pub mnt: OwnedFd,
    /// Its network namespace, unless the network is granted.
    pub net: Option<OwnedFd>,
    /// Its IPC namespace.
    pub ipc: OwnedFd,
    /// Its PID namespace, for children to be started in (`pid_for_children`).
    pub pid: Option<OwnedFd>,
    /// A pidfd of the PID namespace's init (see [`init_main`]), this
    /// host's child: killing it kills every process of the namespace.
    pub init: Option<OwnedFd>,
    /// The root of the PID namespace's `/proc`, as mounted in the view
    /// (`O_PATH`), for the Landlock rule that lets children read it.
    pub proc: Option<OwnedFd>,
    /// The init's stack (0: none), unmapped once it is reaped.
    pub init_stack: usize,
    /// The root of the private `/tmp` tmpfs, if the view has one
    /// (`O_PATH`), for the Landlock rule that lets children write it.
    pub tmp: Option<OwnedFd>,
}

/// What [`sandbox_main`] reads and writes.
struct BuildArgs<'a> {
    spec: &'a SandboxSpec<'a>,
    /// `root`, `user`, `mnt`, `net`, `ipc`, `pid`, `init`, `proc`, `tmp` as opened by the
    /// builder, in the descriptor table it shares with the host; -1 where
    /// none.
    fds: [AtomicI32; 9],
    /// The error number of the step that failed, and which step.
    error: AtomicI32,
    failed_step: AtomicI32,
    /// Set by the builder as its very last step: a builder that died on
    /// the way has not built a sandbox, whatever it stored.
    done: std::sync::atomic::AtomicBool,
    /// A detached copy of each bind's source tree, by step (-1 for the
    /// other steps), opened before the stage hides any path.
    trees: &'a [AtomicI32],
    /// The PID namespace's init's stack, if it was started.
    init_stack: std::sync::atomic::AtomicUsize,
}
/// Builds a sandbox: new mount, IPC and (unless `spec.net` is false)
/// network namespaces — and for a host without root a user namespace
/// owning them — whose file system view is a read-only tmpfs holding only
/// what `spec.steps` put there, and returns descriptors that keep them
/// alive, for children to enter with `setns`.
///
/// The work is done by a short-lived process made with
/// `clone(CLONE_VM | CLONE_VFORK | CLONE_FILES)`: it shares this host's
/// memory (nothing copied; it only reads `spec`) and its descriptor table
/// (so what it opens is the host's), unshares the namespaces, assembles the
/// tree, opens the namespaces' files, switches its root with `pivot_root`
/// and exits. The host's own namespaces are never touched.
///
/// On failure, the error says which step failed.
pub(crate) fn build_sandbox(spec: &SandboxSpec<'_>) -> io::Result<SandboxFds> {
    let mut stack = vec![0u8; CHILD_STACK];
    let trees: Vec<AtomicI32> = spec.steps.iter().map(|_| AtomicI32::new(-1)).collect();
    let args = BuildArgs {
        spec,
        fds: [const { AtomicI32::new(-1) }; 9],
        error: AtomicI32::new(0),
        failed_step: AtomicI32::new(-1),
        done: std::sync::atomic::AtomicBool::new(false),
        trees: &trees,
        init_stack: std::sync::atomic::AtomicUsize::new(0),
    };
    let top = stack.as_mut_ptr_range().end as usize & !15;
    let mut pidfd: c_int = -1;
    // SAFETY: as in `clone_and_exec`: signals are blocked around `clone`; the child
    // runs `sandbox_main` on `stack` (alive until the end of this
    // function), and CLONE_VFORK suspends this thread until it exited, so
    // `args` and `spec` stay alive and unchanged while it reads them; it
    // writes only the atomics of `args`. With CLONE_FILES the descriptors
    // it opens are in this process's table; CLONE_PIDFD stores a pidfd.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            sandbox_main,
            top as *mut c_void,
            libc::CLONE_VM
                | libc::CLONE_VFORK
                | libc::CLONE_FILES
                | libc::CLONE_PIDFD
                | libc::SIGCHLD,
            (&raw const args).cast_mut().cast::<c_void>(),
            &raw mut pidfd,
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    let _ = pid;
    // SAFETY: `clone` succeeded, so `pidfd` is a new descriptor we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let exit = rustix::process::waitid(
        rustix::process::WaitId::PidFd(rustix::fd::AsFd::as_fd(&pidfd)),
        rustix::process::WaitIdOptions::EXITED,
    );
    let exited_cleanly = matches!(exit, Ok(Some(status)) if status.exit_status() == Some(0));
    drop(stack);
    for tree in &trees {
        let fd = tree.load(Ordering::Acquire);
        if fd >= 0 {
            // SAFETY: a detached tree the builder opened in our shared
            // table and did not close (it failed before attaching it).
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    let fds = args.fds.each_ref().map(|fd| {
        let fd = fd.load(Ordering::Acquire);
        // SAFETY: each descriptor the builder stored is one it opened
        // (with close-on-exec) in our shared table and nobody else knows of.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    });
    let mut fds = fds;
    let error = args.error.load(Ordering::Acquire);
    let built = error == 0 && exited_cleanly && args.done.load(Ordering::Acquire);
    let init_stack = args.init_stack.load(Ordering::Acquire);
    if !built && let Some(init) = fds[6].take() {
        super::pid_init::end_init(init, init_stack);
    }
    if error == 0 && !built {
        return Err(io::Error::other(
            "the sandbox builder died before it finished",
        ));
    }
    if error != 0 {
        let step = args.failed_step.load(Ordering::Acquire);
        let err = io::Error::from_raw_os_error(error);
        return Err(io::Error::new(
            err.kind(),
            format!("{} failed: {err}", sandbox_step_name(spec, step)),
        ));
    }
    let [root, user, mnt, net, ipc, pid, init, proc, tmp] = fds;
    let missing = || io::Error::other("the sandbox builder opened no namespace");
    Ok(SandboxFds {
        root: root.ok_or_else(missing)?,
        user,
        mnt: mnt.ok_or_else(missing)?,
        net,
        ipc: ipc.ok_or_else(missing)?,
        pid,
        init,
        proc,
        init_stack,
        tmp,
    })
}

/// Steps of [`sandbox_main`] before and after `spec.steps` (which are
/// numbered from 0), for error messages.
const STEP_USERNS: i32 = -10;
const STEP_UNSHARE: i32 = -9;
const STEP_PRIVATE: i32 = -8;
const STEP_TMPFS: i32 = -7;
const STEP_STAGE: i32 = -6;
const STEP_READ_ONLY: i32 = -5;
const STEP_NSFS: i32 = -4;
const STEP_PIVOT: i32 = -3;
const STEP_INIT: i32 = -2;

fn sandbox_step_name(spec: &SandboxSpec<'_>, step: i32) -> String {
    let path = |p: &CStr| p.to_string_lossy().into_owned();
    match step {
        STEP_USERNS => "making the user namespace".into(),
        STEP_UNSHARE => "making the mount, IPC and network namespaces".into(),
        STEP_PRIVATE => "making the copied mounts private".into(),
        STEP_TMPFS => "making the root tmpfs".into(),
        STEP_STAGE => format!("staging the root on {}", path(spec.stage)),
        STEP_READ_ONLY => "making the root read-only".into(),
        STEP_NSFS => "opening the namespaces".into(),
        STEP_PIVOT => "pivot_root into the sandbox".into(),
        STEP_INIT => "starting the PID namespace's init and mounting its /proc".into(),
        i => match usize::try_from(i).ok().and_then(|i| spec.steps.get(i)) {
            Some(MountStep::Dir(p)) => format!("making directory /{}", path(p)),
            Some(MountStep::Tmpfs(p)) => format!("making the private tmpfs /{}", path(p)),
            Some(MountStep::File(p)) => format!("making file /{}", path(p)),
            Some(MountStep::Symlink { at, .. }) => format!("making link /{}", path(at)),
            Some(MountStep::Bind { source, target, .. }) => {
                format!("binding {} at /{}", path(source), path(target))
            }
            None => format!("step {i}"),
        },
    }
}

/// The sandbox builder, until it exits. Like `child_main` (the spawned
/// child's, in `spawn`): no allocation, no lock, only system calls.
extern "C" fn sandbox_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `BuildArgs` that `build_sandbox` keeps alive
    // until this process exited; `spec` and its strings are alive too.
    unsafe {
        let args = &*arg.cast::<BuildArgs<'_>>();
        match sandbox_steps(args) {
            Ok(()) => args.done.store(true, Ordering::Release),
            Err((step, errno)) => {
                args.failed_step.store(step, Ordering::Release);
                args.error.store(errno.max(1), Ordering::Release);
            }
        }
        libc::_exit(0)
    }
}

/// Writes `contents` to the file `path` (a `/proc/self` file).
///
/// # Safety
/// Only from the sandbox builder.
unsafe fn write_file(path: &CStr, contents: &CStr) -> c_int {
    // SAFETY: open/write/close with valid strings.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return -1;
        }
        let bytes = contents.to_bytes();
        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::close(fd);
        if n == bytes.len() as isize { 0 } else { -1 }
    }
}

/// The steps of [`sandbox_main`], one function each, in this order;
/// `Err((step, errno))` on failure, `step` being the index in `spec.steps`
/// of the mount step that failed or one of the `STEP_*` constants. Like
/// `child_main` (in `spawn`), the steps only make system calls: no
/// allocation, no lock.
///
/// # Safety
/// Only from [`sandbox_main`].
unsafe fn sandbox_steps(args: &BuildArgs<'_>) -> Result<(), (i32, c_int)> {
    let spec = args.spec;
    // SAFETY: we are the sandbox builder (see `build_sandbox`), which every
    // step requires: system calls on valid strings and descriptors this
    // process opened. `root` is the tmpfs it made, whose descriptor stays
    // open (the host takes it, as the sandbox's root, once the builder
    // exited), and `args.trees` has a slot for each of `spec.steps`.
    unsafe {
        if let Some((uid_map, gid_map)) = spec.user_maps {
            make_user_namespace(uid_map, gid_map).map_err(at_step(STEP_USERNS))?;
        }
        unshare_namespaces(spec.net, spec.pid).map_err(at_step(STEP_UNSHARE))?;
        make_mounts_private().map_err(at_step(STEP_PRIVATE))?;
        let root = make_root_tmpfs().map_err(at_step(STEP_TMPFS))?;
        // The host's from now on: it closes it if a later step fails.
        args.fds[0].store(root, Ordering::Release);
        make_entries(spec.steps, root, args.trees)?;
        detach_bind_sources(spec.steps, args.trees)?;
        stage_root(root, spec.stage).map_err(at_step(STEP_STAGE))?;
        make_root_read_only(root).map_err(at_step(STEP_READ_ONLY))?;
        attach_binds(spec.steps, args.trees, root)?;
        open_namespaces(args).map_err(at_step(STEP_NSFS))?;
        pivot_into(root).map_err(at_step(STEP_PIVOT))?;
        if spec.steps.iter().any(|s| matches!(s, MountStep::Tmpfs(_))) {
            let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
            let tmp = libc::open(c"/tmp".as_ptr(), flags);
            if tmp < 0 {
                return Err((STEP_PIVOT, super::last_errno()));
            }
            args.fds[8].store(tmp, Ordering::Release);
        }
        if spec.pid {
            let (init, stack) = super::pid_init::start_init().map_err(at_step(STEP_INIT))?;
            args.fds[6].store(init, Ordering::Release);
            args.init_stack.store(stack, Ordering::Release);
            // The namespace can be named once it has its init: in the
            // `/proc` that init mounted, it is pid 1.
            let pid = libc::open(c"/proc/1/ns/pid".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if pid < 0 {
                return Err((STEP_INIT, super::last_errno()));
            }
            args.fds[5].store(pid, Ordering::Release);
            let proc = libc::open(
                c"/proc".as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            if proc < 0 {
                return Err((STEP_INIT, super::last_errno()));
            }
            args.fds[7].store(proc, Ordering::Release);
        }
    }
    Ok(())
}

/// For a host without root: makes a new user namespace, which will own
/// the others, and maps its ids with `uid_map` and `gid_map` (after
/// denying `setgroups`, as an unprivileged `gid_map` requires).
///
/// # Safety
/// Only in the sandbox builder.
unsafe fn make_user_namespace(uid_map: &CStr, gid_map: &CStr) -> Result<(), c_int> {
    // SAFETY: `unshare` of the builder, and writes of its own `/proc/self`
    // files with valid strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER) < 0
            || write_file(c"/proc/self/setgroups", c"deny") < 0
            || write_file(c"/proc/self/uid_map", uid_map) < 0
            || write_file(c"/proc/self/gid_map", gid_map) < 0
        {
            return Err(last_errno());
        }
    }
    Ok(())
}

/// Makes the new mount and IPC namespaces, a new (empty) network
/// namespace if `net`, and a PID namespace for the builder's children if
/// `pid`. The mount namespace starts as a copy of the host's mounts, which
/// [`detach_bind_sources`] resolves the sources in.
///
/// # Safety
/// Only in the sandbox builder: the host's namespaces stay as they are.
unsafe fn unshare_namespaces(net: bool, pid: bool) -> Result<(), c_int> {
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC;
    if net {
        flags |= libc::CLONE_NEWNET;
    }
    if pid {
        flags |= libc::CLONE_NEWPID;
    }
    // SAFETY: `unshare` of the builder (see the contract).
    check_os(unsafe { libc::unshare(flags) })
}

/// Makes every mount copied from the host private, so that nothing done
/// in the new mount namespace may reach the host's mounts.
///
/// # Safety
/// Only in the sandbox builder, in its new mount namespace.
unsafe fn make_mounts_private() -> Result<(), c_int> {
    // SAFETY: `mount` with valid strings (or null), in the builder's own
    // mount namespace (see the contract).
    check_os(unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })
}
/// Opens the files of the namespaces that were made (user with
/// `spec.user_maps`, network with `spec.net`) into `args.fds`, while
/// `/proc` can still be reached (before [`pivot_into`]).
///
/// # Safety
/// Only in the sandbox builder, with [`sandbox_main`]'s `args`.
unsafe fn open_namespaces(args: &BuildArgs<'_>) -> Result<(), c_int> {
    let spec = args.spec;
    for (slot, path, wanted) in [
        (1, c"/proc/self/ns/user", spec.user_maps.is_some()),
        (2, c"/proc/self/ns/mnt", true),
        (3, c"/proc/self/ns/net", spec.net),
        (4, c"/proc/self/ns/ipc", true),
    ] {
        if wanted {
            // SAFETY: `open` with a valid string.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(last_errno());
            }
            args.fds[slot].store(fd, Ordering::Release);
        }
    }
    Ok(())
}

/// Makes the staged tmpfs `root` the namespace's root with `pivot_root`
/// and detaches the host's tree under it, so nothing else is left in the
/// namespace.
///
/// # Safety
/// Only in the sandbox builder, last, with `root` its staged root tmpfs:
/// it changes the builder's root and working directory.
unsafe fn pivot_into(root: c_int) -> Result<(), c_int> {
    // SAFETY: `fchdir` to the builder's tmpfs, then `pivot_root` and
    // `umount2` with valid strings, in its own mount namespace.
    unsafe {
        if libc::fchdir(root) < 0
            || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) < 0
            || libc::umount2(c".".as_ptr(), libc::MNT_DETACH) < 0
        {
            return Err(last_errno());
        }
    }
    Ok(())
}

impl Drop for SandboxFds {
    fn drop(&mut self) {
        if let Some(init) = self.init.take() {
            super::pid_init::end_init(init, self.init_stack);
        }
    }
}
