//! The sandbox builder's mount steps (see `sandbox`): making the root
//! tmpfs and the directories, files and links in it, detaching a copy of
//! each bind's source (checked to be what was granted), staging the root,
//! making it read-only and attaching the binds beneath it without
//! following any symlink. Like the rest of the builder, they only make
//! system calls.

use super::{check_os, last_errno};
use std::ffi::{CStr, c_char, c_int};
use std::sync::atomic::{AtomicI32, Ordering};

/// One step of building a sandbox's file system view, relative to its new
/// root (see `build_sandbox`).
pub(crate) enum MountStep<'a> {
    /// A directory (one that exists already is fine).
    Dir(&'a CStr),
    /// An empty file, for a file to be bound over.
    File(&'a CStr),
    /// A private tmpfs at this path (mode 1777, at most [`TMP_SIZE`]),
    /// made detached by [`make_entries`], which makes the entries below
    /// it in it, and attached first by [`attach_binds`].
    Tmpfs(&'a CStr),
    /// A symbolic link `at` → `target`.
    Symlink {
        /// What the link says.
        target: &'a CStr,
        /// Where it is.
        at: &'a CStr,
    },
    /// The host path `source` (a file or a directory tree) bound at
    /// `target`, with the mount attributes `attr` (`MOUNT_ATTR_*`) on every
    /// mount of the tree.
    Bind {
        /// The host path, resolved in a copy of the host's mounts.
        source: &'a CStr,
        /// Where it appears, relative to the new root.
        target: &'a CStr,
        /// `MOUNT_ATTR_*` flags.
        attr: u64,
        /// The device and inode `source` must be: the directory or file
        /// the policy granted, not whatever the path leads to by then.
        id: (u64, u64),
    },
}

/// Pairs an error number with the sandbox builder's `step` that failed,
/// as `sandbox_steps` reports it (for `map_err`).
pub(super) fn at_step(step: i32) -> impl Fn(c_int) -> (i32, c_int) {
    move |errno| (step, errno)
}

const AT_RECURSIVE: c_int = 0x8000;

/// The size of a sandbox's private `/tmp`, and how many files it holds.
pub(crate) const TMP_SIZE: &CStr = c"256m";
const TMP_INODES: &CStr = c"65536";

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}
/// Makes the sandbox's root: a new tmpfs (mode 0755) mounted nosuid and
/// nodev, detached (attached nowhere yet); returns its descriptor, opened
/// with close-on-exec in the table the builder shares with the host.
///
/// # Safety
/// Only in the sandbox builder.
pub(super) unsafe fn make_root_tmpfs() -> Result<c_int, c_int> {
    // SAFETY: the builder (see the contract).
    unsafe { mount_tmpfs(c"0755", None) }
}

/// Makes a detached private tmpfs for `/tmp`: mode 1777, at most
/// [`TMP_SIZE`] and [`TMP_INODES`] files, mounted nosuid and nodev.
///
/// # Safety
/// Only in the sandbox builder.
unsafe fn make_private_tmpfs() -> Result<c_int, c_int> {
    // SAFETY: the builder (see the contract).
    unsafe { mount_tmpfs(c"1777", Some((TMP_SIZE, TMP_INODES))) }
}

/// A new tmpfs (see [`new_tmpfs`]) mounted nosuid and nodev, detached;
/// returns its descriptor (close-on-exec).
///
/// # Safety
/// Only in the sandbox builder.
unsafe fn mount_tmpfs(mode: &CStr, size: Option<(&CStr, &CStr)>) -> Result<c_int, c_int> {
    // SAFETY: the file system context is the descriptor `new_tmpfs` opened,
    // closed once mounted; `fsmount` reads no memory of ours.
    unsafe {
        let fs = new_tmpfs(mode, size)?;
        let mounted = libc::syscall(
            libc::SYS_fsmount,
            fs,
            libc::FSMOUNT_CLOEXEC,
            libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        ) as c_int;
        libc::close(fs);
        if mounted < 0 {
            return Err(last_errno());
        }
        Ok(mounted)
    }
}

/// Opens a file system context for a tmpfs with `mode` (and, if given,
/// a `size` and a number of inodes) and creates the file system (not
/// mounted yet); returns the context's descriptor, which is closed again
/// on failure.
///
/// # Safety
/// Only in the sandbox builder.
unsafe fn new_tmpfs(mode: &CStr, size: Option<(&CStr, &CStr)>) -> Result<c_int, c_int> {
    // SAFETY: `fsopen` and `fsconfig` with valid strings (or null) on the
    // context they opened; `close` of that context only.
    unsafe {
        let set = |fs: c_int, key: &CStr, value: &CStr| {
            libc::syscall(
                libc::SYS_fsconfig,
                fs,
                libc::FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        };
        let fs = libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), libc::FSOPEN_CLOEXEC) as c_int;
        let sized = |fs| match size {
            Some((size, inodes)) => {
                set(fs, c"size", size) >= 0 && set(fs, c"nr_inodes", inodes) >= 0
            }
            None => true,
        };
        if fs < 0
            || set(fs, c"mode", mode) < 0
            || !sized(fs)
            || libc::syscall(
                libc::SYS_fsconfig,
                fs,
                libc::FSCONFIG_CMD_CREATE,
                std::ptr::null::<c_char>(),
                std::ptr::null::<c_char>(),
                0,
            ) < 0
        {
            let errno = last_errno();
            if fs >= 0 {
                libc::close(fs);
            }
            return Err(errno);
        }
        Ok(fs)
    }
}

/// Makes every directory, file and symbolic link of `steps` in the root
/// tmpfs `root`, in order, and each private tmpfs (into its slot of
/// `trees`), the entries below it made in it (binds come later, see
/// [`attach_binds`]).
///
/// # Safety
/// Only in the sandbox builder, with `root` its root tmpfs and `trees` as
/// long as `steps`.
pub(super) unsafe fn make_entries(
    steps: &[MountStep<'_>],
    root: c_int,
    trees: &[AtomicI32],
) -> Result<(), (i32, c_int)> {
    // The latest private tmpfs: its path and descriptor.
    let mut tmpfs: Option<(&[u8], c_int)> = None;
    for (i, step) in steps.iter().enumerate() {
        // Where `path` is made: in a private tmpfs it lies below, or root.
        fn place<'p>(
            tmpfs: Option<(&[u8], c_int)>,
            root: c_int,
            path: &'p CStr,
        ) -> (c_int, &'p CStr) {
            let bytes = path.to_bytes_with_nul();
            match tmpfs {
                Some((top, fd))
                    if bytes.starts_with(top) && bytes.get(top.len()) == Some(&b'/') =>
                {
                    let rest = &bytes[top.len() + 1..];
                    (fd, CStr::from_bytes_with_nul(rest).unwrap_or(path))
                }
                _ => (root, path),
            }
        }
        let place = |path| place(tmpfs, root, path);
        // SAFETY: the builder, with its root tmpfs (see the contract).
        let made = unsafe {
            match step {
                MountStep::Dir(path) => {
                    let (at, path) = place(path);
                    make_dir(at, path)
                }
                MountStep::File(path) => {
                    let (at, path) = place(path);
                    make_file(at, path)
                }
                MountStep::Symlink { target, at } => {
                    let (dir, at) = place(at);
                    make_symlink(dir, target, at)
                }
                MountStep::Tmpfs(path) => make_dir(root, path).and_then(|()| {
                    let fd = make_private_tmpfs()?;
                    trees[i].store(fd, Ordering::Release);
                    tmpfs = Some((path.to_bytes(), fd));
                    Ok(())
                }),
                MountStep::Bind { .. } => Ok(()),
            }
        };
        made.map_err(at_step(i as i32))?;
    }
    Ok(())
}

/// Makes the directory `path` (mode 0755) below `root`; one that exists
/// already is fine.
///
/// # Safety
/// Only in the sandbox builder, with `root` its root tmpfs.
unsafe fn make_dir(root: c_int, path: &CStr) -> Result<(), c_int> {
    // SAFETY: `mkdirat` with a valid string, below the builder's tmpfs.
    let r = unsafe { libc::mkdirat(root, path.as_ptr(), 0o755) };
    if r < 0 && last_errno() == libc::EEXIST {
        return Ok(());
    }
    check_os(r)
}

/// Makes the empty file `path` (mode 0644) below `root`, for a file to be
/// bound over. Made without opening it: a writable descriptor, even one a
/// host thread's fork copied for an instant, would keep the tmpfs from
/// becoming read-only (EBUSY).
///
/// # Safety
/// Only in the sandbox builder, with `root` its root tmpfs.
unsafe fn make_file(root: c_int, path: &CStr) -> Result<(), c_int> {
    // SAFETY: `mknodat` with a valid string, below the builder's tmpfs.
    check_os(unsafe { libc::mknodat(root, path.as_ptr(), libc::S_IFREG | 0o644, 0) })
}

/// Makes the symbolic link `at` → `target` below `root`.
///
/// # Safety
/// Only in the sandbox builder, with `root` its root tmpfs.
unsafe fn make_symlink(root: c_int, target: &CStr, at: &CStr) -> Result<(), c_int> {
    // SAFETY: `symlinkat` with valid strings, below the builder's tmpfs.
    check_os(unsafe { libc::symlinkat(target.as_ptr(), root, at.as_ptr()) })
}

/// Makes a detached copy of the source of every bind of `steps`, with its
/// attributes, into its slot of `trees` (by step), before [`stage_root`]
/// can hide any of them.
///
/// # Safety
/// Only in the sandbox builder, in its new mount namespace, with `trees`
/// as long as `steps`.
pub(super) unsafe fn detach_bind_sources(
    steps: &[MountStep<'_>],
    trees: &[AtomicI32],
) -> Result<(), (i32, c_int)> {
    for (i, step) in steps.iter().enumerate() {
        if let MountStep::Bind {
            source, attr, id, ..
        } = step
        {
            // SAFETY: the builder, in its mount namespace (see the
            // contract).
            unsafe { detach_bind_source(&trees[i], source, *attr, *id) }
                .map_err(at_step(i as i32))?;
        }
    }
    Ok(())
}

/// Opens a detached copy of the tree at the host path `source` (a file or
/// a directory tree, not following a final symlink) into `slot`, checks it
/// is the granted `id` (device and inode: the path may no longer lead to
/// what was granted, EXDEV), and sets the mount attributes `attr` on every
/// mount of it.
///
/// # Safety
/// Only in the sandbox builder, in its new mount namespace.
unsafe fn detach_bind_source(
    slot: &AtomicI32,
    source: &CStr,
    attr: u64,
    id: (u64, u64),
) -> Result<(), c_int> {
    // SAFETY: `open_tree` with a valid string; `fstat` into a zeroed
    // `stat` (all zeroes is valid) of the tree it opened.
    unsafe {
        let tree = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            libc::OPEN_TREE_CLONE
                | libc::OPEN_TREE_CLOEXEC
                | (AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW) as libc::c_uint,
        ) as c_int;
        if tree < 0 {
            return Err(last_errno());
        }
        slot.store(tree, Ordering::Release);
        let mut stat: libc::stat = std::mem::zeroed();
        check_os(libc::fstat(tree, &mut stat))?;
        if (stat.st_dev, stat.st_ino) != id {
            return Err(libc::EXDEV);
        }
        check_os(set_mount_attr(
            tree,
            attr,
            libc::AT_EMPTY_PATH | AT_RECURSIVE,
        ))
    }
}

/// `mount_setattr` of the mount `fd` (with `flags`, which include
/// `AT_EMPTY_PATH`), setting the `MOUNT_ATTR_*` flags `attr_set`; returns
/// what the system call returns.
///
/// # Safety
/// Only in the sandbox builder, with `fd` a mount it opened.
unsafe fn set_mount_attr(fd: c_int, attr_set: u64, flags: c_int) -> libc::c_long {
    let attr = libc::mount_attr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `mount_setattr` with a valid empty string and a `mount_attr`
    // of the size given, on the builder's own mount (see the contract).
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            flags,
            &raw const attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    }
}

/// Attaches the root tmpfs `root` at `stage`, an existing host directory,
/// while the tree is assembled: mounts can only be attached below a mount
/// of this namespace.
///
/// # Safety
/// Only in the sandbox builder, in its new (private) mount namespace, with
/// `root` its root tmpfs.
pub(super) unsafe fn stage_root(root: c_int, stage: &CStr) -> Result<(), c_int> {
    // SAFETY: `move_mount` with valid strings, in the builder's own mount
    // namespace (see the contract).
    check_os(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            root,
            c"".as_ptr(),
            libc::AT_FDCWD,
            stage.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
}

/// Makes the root tmpfs `root` read-only (and nosuid, nodev) now that
/// every entry is in it; the binds attached after keep their own
/// attributes.
///
/// # Safety
/// Only in the sandbox builder, with `root` its root tmpfs.
pub(super) unsafe fn make_root_read_only(root: c_int) -> Result<(), c_int> {
    let read_only = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    // SAFETY: on the builder's root tmpfs (see the contract).
    check_os(unsafe { set_mount_attr(root, read_only, libc::AT_EMPTY_PATH) })
}

/// Attaches the detached copy in `trees` of every bind of `steps` at its
/// target below `root`, in order (parents before what is bound inside
/// them).
///
/// # Safety
/// Only in the sandbox builder, with `root` its staged root tmpfs and
/// `trees` filled by [`detach_bind_sources`].
pub(super) unsafe fn attach_binds(
    steps: &[MountStep<'_>],
    trees: &[AtomicI32],
    root: c_int,
) -> Result<(), (i32, c_int)> {
    // Private tmpfses first: binds may lie below them.
    let tmpfses = steps.iter().enumerate().filter_map(|(i, step)| match step {
        MountStep::Tmpfs(target) => Some((i, *target)),
        _ => None,
    });
    let binds = steps.iter().enumerate().filter_map(|(i, step)| match step {
        MountStep::Bind { target, .. } => Some((i, *target)),
        _ => None,
    });
    for (i, target) in tmpfses.chain(binds) {
        // SAFETY: the builder, with its root and trees (see the contract).
        unsafe { attach_bind(root, &trees[i], target) }.map_err(at_step(i as i32))?;
    }
    Ok(())
}

/// Moves the detached tree in `slot` onto its mount point `target` below
/// `root`, then closes it, whether that worked or not (forgetting it in
/// `slot` first).
///
/// # Safety
/// Only in the sandbox builder, with `root` its staged root tmpfs and
/// `slot` holding a tree it opened.
unsafe fn attach_bind(root: c_int, slot: &AtomicI32, target: &CStr) -> Result<(), c_int> {
    let tree = slot.load(Ordering::Acquire);
    // SAFETY: the builder's own descriptors (see the contract); `at` is
    // closed by `move_tree`, `tree` here.
    unsafe {
        let at = open_mount_point(root, target);
        let attached = if at < 0 {
            Err(last_errno())
        } else {
            move_tree(tree, at)
        };
        // Forget it before closing it: the host must never close a
        // number the table may already have given to someone else.
        slot.store(-1, Ordering::Release);
        libc::close(tree);
        attached
    }
}

/// Opens (`O_PATH`) the mount point `target` below `root`, reached without
/// any symlink or `..`: binds attached before may be writable by others.
/// Returns the descriptor, or -1 with `errno` set.
///
/// # Safety
/// Only in the sandbox builder, with `root` its root tmpfs.
unsafe fn open_mount_point(root: c_int, target: &CStr) -> c_int {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `openat2` with a valid string and an `open_how` of the size
    // given.
    unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            target.as_ptr(),
            &raw const how,
            std::mem::size_of::<OpenHow>(),
        ) as c_int
    }
}

/// Moves the detached tree `tree` onto the mount point `at`, then closes
/// `at`; the error number is `move_mount`'s, taken before the close.
///
/// # Safety
/// Only in the sandbox builder, with `tree` and `at` descriptors it
/// opened.
unsafe fn move_tree(tree: c_int, at: c_int) -> Result<(), c_int> {
    // SAFETY: `move_mount` with valid empty strings on the builder's own
    // descriptors; `close` of `at`, which it owns (see the contract).
    unsafe {
        let moved = check_os(libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            at,
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        ));
        libc::close(at);
        moved
    }
}
