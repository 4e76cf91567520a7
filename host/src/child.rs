//! A child process as the guest holds it: the leader of its own process
//! group, its guest-side streams, its deadline; how it ended. Dropping it
//! kills the group. Both `spawn`'s children and the local end of a forked
//! worker are one.

use crate::failure::Failure;
use crate::launch::os_child::{Ended, GroupGuard, Launched, OsChild, signal};
use crate::outcome::{Confinement, Termination};
use crate::pipe::PipeReader;
use rustix::process::Signal;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;
use wasmtime_wasi::p2::{DynOutputStream, Pollable};

/// A child process started by `spawn`: the leader of its own process group.
/// Dropping it kills the group (and reaps the leader in the background).
pub struct Child {
    process: OsChild,
    /// Shared (weakly) with the deadline's timer only.
    group: Arc<GroupGuard>,
    pub(crate) stdin: Option<DynOutputStream>,
    pub(crate) stdout: Option<PipeReader>,
    pub(crate) stderr: Option<PipeReader>,
    pub(crate) confinement: Confinement,
    /// Tasks copying `inherit`ed output to the guest's streams.
    pub(crate) forwarders: Vec<JoinHandle<()>>,
    deadline: Option<Deadline>,
}

/// `ended` if it comes within `ms` milliseconds, else `timed-out` saying
/// that `what` is still running (`wait-timeout` of a child or worker).
pub(crate) async fn ended_within(
    ms: u64,
    what: String,
    ended: impl std::future::Future<Output = Result<Termination, Failure>>,
) -> Result<Termination, Failure> {
    match tokio::time::timeout(Duration::from_millis(ms), ended).await {
        Ok(ended) => ended,
        Err(_) => Err(Failure::TimedOut(format!(
            "{what} is still running after {ms} ms"
        ))),
    }
}

/// A spawned child's `timeout-ms`: a timer that kills the group.
struct Deadline {
    timer: JoinHandle<()>,
    /// Set when the timer found the child still running and killed it.
    expired: Arc<AtomicBool>,
}

/// When and how a child is killed for running too long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeout {
    pub after: Duration,
    pub signal: Signal,
    /// How long the group has after `signal` before SIGKILL.
    pub grace: Duration,
}

/// How long `wait` waits, after the child exited, for its `inherit`ed output
/// to be passed on: descendants may keep the pipe open for longer.
const FORWARD_GRACE: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.group.pid())
            .field("status", &self.process.status())
            .finish_non_exhaustive()
    }
}

impl Child {
    /// Waits for the leader to exit and for its `inherit`ed output to be
    /// passed on (up to [`FORWARD_GRACE`]). Cancel safe.
    pub(crate) async fn reap(&mut self) -> Result<Termination, Failure> {
        let ended = (self.process.wait().await).map_err(|e| {
            Failure::from_io(format_args!("waiting for child {}", self.group.pid()), &e)
        })?;
        self.group.exited(ended.status);
        if !self.forwarders.is_empty() {
            let forwarded = async {
                for task in &mut self.forwarders {
                    let _ = task.await;
                }
            };
            let _ = tokio::time::timeout(FORWARD_GRACE, forwarded).await;
            // Tasks still copying (for descendants) go on detached.
            self.forwarders.clear();
        }
        Ok(self.termination(ended))
    }

    /// As [`reap`](Self::reap), for at most `ms` milliseconds.
    pub(crate) async fn reap_within(&mut self, ms: u64) -> Result<Termination, Failure> {
        let pid = self.pid();
        ended_within(ms, format!("process {pid}"), self.reap()).await
    }

    fn termination(&self, ended: Ended) -> Termination {
        Termination {
            status: ended.status,
            timed_out: (self.deadline.as_ref()).is_some_and(|d| d.expired.load(Ordering::Acquire)),
            trap: None,
            usage: ended.usage,
        }
    }

    /// Starts the timer that kills the child after `timeout`.
    pub(crate) fn set_deadline(&mut self, timeout: Timeout) -> io::Result<()> {
        let Some(pidfd) = self.process.pidfd()? else {
            return Ok(());
        };
        let expired = Arc::new(AtomicBool::new(false));
        let timer = tokio::spawn(expire(
            Arc::downgrade(&self.group),
            pidfd,
            timeout,
            expired.clone(),
        ));
        self.deadline = Some(Deadline { timer, expired });
        Ok(())
    }
}

/// The deadline's timer: after `timeout.after`, if the leader is still
/// running, sends the kill signal to the group, and SIGKILL after the
/// grace period (to whatever is left of the group, as `exec` does).
async fn expire(
    group: Weak<GroupGuard>,
    pidfd: OwnedFd,
    timeout: Timeout,
    expired: Arc<AtomicBool>,
) {
    tokio::time::sleep(timeout.after).await;
    // A pidfd is readable once its process has exited: this holds for a
    // process that is not this one's child too (a forked worker's, which
    // its launcher started), where `waitid` could not ask.
    let mut poll = [rustix::event::PollFd::new(
        &pidfd,
        rustix::event::PollFlags::IN,
    )];
    let running = matches!(
        rustix::event::poll(&mut poll, Some(&rustix::event::Timespec::default())),
        Ok(0)
    );
    let Some(guard) = group.upgrade().filter(|_| running) else {
        return;
    };
    expired.store(true, Ordering::Release);
    send(&guard, timeout.signal);
    drop(guard);
    tokio::time::sleep(timeout.grace).await;
    if let Some(guard) = group.upgrade() {
        send(&guard, Signal::KILL);
    }
}

fn send(group: &GroupGuard, signal: Signal) {
    if let Err(e) = group.signal(signal) {
        tracing::error!(pgid = group.pid(), error = %e, "cannot signal process group");
    }
}

impl Drop for Child {
    /// Kills the group now; the `OsChild` then reaps the leader in the
    /// background, so no zombie is left.
    fn drop(&mut self) {
        if let Some(deadline) = &self.deadline {
            deadline.timer.abort();
        }
        if self.process.status().is_none() {
            self.group.kill_before_reaping();
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Child {
    async fn ready(&mut self) {
        // An error makes the pollable ready too; `try-wait` then reports it.
        let _ = self.reap().await;
    }
}

impl Child {
    /// The child `launched`, with none of its streams the host's (a worker
    /// process until it has its specification).
    pub(crate) fn without_stdio(launched: Launched) -> Child {
        Child {
            confinement: launched.confinement,
            process: launched.child,
            group: Arc::new(launched.group),
            stdin: None,
            stdout: None,
            stderr: None,
            forwarders: Vec::new(),
            deadline: None,
        }
    }

    /// The leader's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.group.pid()
    }

    /// How the leader ended if it has exited, without blocking.
    pub(crate) fn try_status(&mut self) -> Result<Option<Termination>, Failure> {
        let pid = self.pid();
        let ended = (self.process.try_wait())
            .map_err(|e| Failure::from_io(format_args!("checking child {pid}"), &e))?;
        Ok(ended.map(|ended| {
            self.group.exited(ended.status);
            self.termination(ended)
        }))
    }

    /// Sends signal number `n` to the group.
    pub(crate) fn kill(&self, n: u8) -> Result<(), Failure> {
        let signal = signal(n)?;
        (self.group.signal(signal))
            .map_err(|e| Failure::from_io(format_args!("signalling child {}", self.pid()), &e))
    }

    /// Takes `slots` of the guest's live-children slots (a warm worker
    /// that got its specification).
    pub(crate) fn count(&self, slots: usize) {
        self.group.count(slots);
    }

    /// Gives a worker started before its output was known its guest-side
    /// streams and the tasks copying its inherited output.
    pub(crate) fn attach(
        &mut self,
        stdout: Option<PipeReader>,
        stderr: Option<PipeReader>,
        forwarders: Vec<JoinHandle<()>>,
    ) {
        self.stdout = stdout;
        self.stderr = stderr;
        self.forwarders.extend(forwarders);
    }

    /// Takes the piped stdout.
    pub(crate) fn take_stdout(&mut self) -> Option<PipeReader> {
        self.stdout.take()
    }

    /// Takes the piped stderr.
    pub(crate) fn take_stderr(&mut self) -> Option<PipeReader> {
        self.stderr.take()
    }
}
