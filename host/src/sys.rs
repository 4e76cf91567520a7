//! The only `unsafe` code of the host: what a child does between `fork` and
//! `exec`.

use cap_std::fs::Dir;
use rustix::process::{Signal, fchdir, getpid, getppid, set_parent_process_death_signal};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use tokio::process::Command;

/// Makes the child, before it executes its program:
/// - enter `cwd` with `fchdir` on the already opened directory (never by a
///   path string a guest could race), or `/` when there is none;
/// - ask for SIGKILL when the host thread that started it dies, and exit at
///   once if the host is already gone.
///
/// `cwd` must stay open until the command has been spawned.
pub(crate) fn prepare_child(cmd: &mut Command, cwd: Option<&Dir>) {
    let cwd_fd = cwd.map(|d| d.as_fd().as_raw_fd());
    let host = getpid();
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe operations are allowed. It makes raw system calls
    // through rustix (fchdir, chdir, prctl, getppid) and converts error
    // numbers to `io::Error`s, none of which allocates or takes a lock. The file
    // descriptor is valid in the child: the caller keeps `cwd` open until
    // `spawn` returns, and `fork` copied the descriptor table.
    unsafe {
        cmd.pre_exec(move || {
            match cwd_fd {
                Some(fd) => fchdir(BorrowedFd::borrow_raw(fd))?,
                None => rustix::process::chdir(c"/")?,
            }
            set_parent_process_death_signal(Some(Signal::KILL))?;
            if getppid() != Some(host) {
                return Err(io::Error::from(rustix::io::Errno::SRCH));
            }
            Ok(())
        });
    }
}
