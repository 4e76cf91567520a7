//! A started child's OS process and its group: reaping the leader through
//! its pidfd (with what it used), and the guard that kills the group and
//! gives back the guest's slots when the child is dropped.

use crate::audit::AuditLog;
use crate::failure::Failure;
use crate::launch::Slots;
use crate::launch::cgroup::ChildCgroup;
use crate::outcome::{Confinement, ExitStatus, ResourceUsage};
use rustix::process::{Pid, Signal, kill_process_group};
use serde_json::json;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::io::unix::AsyncFd;

/// How a reaped process ended, and what it used.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ended {
    pub status: ExitStatus,
    pub usage: ResourceUsage,
}

/// A started OS process, known by a pidfd (so waiting and signalling the
/// leader can never hit a recycled pid), with the host's ends of its pipes.
pub(crate) struct OsChild {
    pid: Pid,
    /// `None` once given to the background reaper on drop.
    pidfd: Option<AsyncFd<OwnedFd>>,
    ended: Option<Ended>,
    /// The write end of the child's stdin pipe.
    pub stdin: Option<OwnedFd>,
    /// The read end of the child's stdout pipe.
    pub stdout: Option<OwnedFd>,
    /// The read end of the child's stderr pipe.
    pub stderr: Option<OwnedFd>,
    /// The launcher that started it, for a forked worker's child: the
    /// host's child, which only the host can reap (see
    /// [`remote`](crate::launch::remote)).
    pub launcher: Option<Kept>,
}

/// The process that keeps a child this process did not start (a forked
/// worker's child, kept by the host's launcher: see
/// [`remote`](crate::launch::remote)): only it can reap the child, and
/// it signals the child's group for this process. Children are named by
/// the keeper's own ids, never by pid (a reaped child's pid may be a new
/// child's).
pub(crate) trait Keeper: Send + Sync {
    /// How child `id` ended, if it has.
    fn reap(&self, id: u64) -> io::Result<Option<Ended>>;
    /// Sends `signal` to the group of child `id`.
    fn signal(&self, id: u64, signal: Signal) -> io::Result<()>;
    /// This process is done with child `id`: kill what is left of its
    /// group and reap it.
    fn release(&self, id: u64);
}

/// A child another process keeps: who, and its id there.
#[derive(Clone)]
pub(crate) struct Kept {
    pub keeper: Arc<dyn Keeper>,
    pub id: u64,
}

/// The pid, in this host's PID namespace, of the process `pidfd` refers
/// to (its `fdinfo` says; a process forked in a guest's PID namespace has
/// another pid there).
pub(crate) fn pid_of(pidfd: &OwnedFd) -> io::Result<Pid> {
    use std::os::fd::AsRawFd;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))?;
    (info.lines())
        .find_map(|line| line.strip_prefix("Pid:"))
        .and_then(|pid| pid.trim().parse().ok())
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::other("no live pid behind the pidfd"))
}

impl OsChild {
    /// The host's child `pid`, known by `pidfd`, without pipes.
    pub fn new(pid: Pid, pidfd: OwnedFd) -> io::Result<OsChild> {
        Ok(OsChild {
            pid,
            pidfd: Some(crate::sys::watch(pidfd, tokio::io::Interest::READABLE)?),
            ended: None,
            stdin: None,
            stdout: None,
            stderr: None,
            launcher: None,
        })
    }

    /// Reaps the process if it has exited (through `pidfd`, or its
    /// launcher).
    fn reap(&self, pidfd: BorrowedFd<'_>) -> io::Result<Option<Ended>> {
        match &self.launcher {
            Some(kept) => kept.keeper.reap(kept.id),
            None => reap(pidfd),
        }
    }

    /// Waits for the process to exit and reaps it. Cancel safe.
    pub async fn wait(&mut self) -> io::Result<Ended> {
        if let Some(ended) = self.ended {
            return Ok(ended);
        }
        let pidfd = self.pidfd.as_ref().expect("a child is reaped only on drop");
        loop {
            let mut ready = pidfd.readable().await?;
            if let Some(ended) = self.reap(pidfd.get_ref().as_fd())? {
                self.ended = Some(ended);
                return Ok(ended);
            }
            ready.clear_ready();
        }
    }

    /// The exit status, once the process has been reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        self.ended.map(|e| e.status)
    }

    /// Reaps the process if it has exited, without blocking.
    pub fn try_wait(&mut self) -> io::Result<Option<Ended>> {
        if self.ended.is_none() {
            let pidfd = self.pidfd.as_ref().expect("a child is reaped only on drop");
            self.ended = self.reap(pidfd.get_ref().as_fd())?;
        }
        Ok(self.ended)
    }

    /// A pidfd of the process, for a deadline that must know whether it
    /// has exited (`None` once reaped).
    pub fn pidfd(&self) -> io::Result<Option<OwnedFd>> {
        match (&self.pidfd, self.ended) {
            (Some(fd), None) => Ok(Some(rustix::io::fcntl_dupfd_cloexec(fd.get_ref(), 3)?)),
            _ => Ok(None),
        }
    }
}

impl Drop for OsChild {
    /// Reaps the process in the background if nobody did: the caller has
    /// killed it (or it is about to exit), so no zombie is left behind.
    fn drop(&mut self) {
        if let Some(kept) = &self.launcher {
            // The launcher kills what is left of its group and reaps it.
            kept.keeper.release(kept.id);
            return;
        }
        let (Some(pidfd), None) = (self.pidfd.take(), self.ended) else {
            return;
        };
        if let Ok(Some(_)) = reap(pidfd.get_ref().as_fd()) {
            return;
        }
        let pid = self.pid.as_raw_nonzero().get();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    while let Ok(mut ready) = pidfd.readable().await {
                        match reap(pidfd.get_ref().as_fd()) {
                            Ok(None) => ready.clear_ready(),
                            Ok(Some(_)) | Err(_) => break,
                        }
                    }
                });
            }
            Err(_) => tracing::warn!(pid, "no runtime to reap a child in: it stays a zombie"),
        }
    }
}

/// Reaps the process of `pidfd` if it has exited.
fn reap(pidfd: BorrowedFd<'_>) -> io::Result<Option<Ended>> {
    Ok(crate::sys::reap_pidfd(pidfd)?.map(|(exit, usage)| Ended {
        status: match exit {
            // Exit codes are 0..=255 on Unix; `as u8` keeps the low byte as wait(2) does.
            crate::sys::RawExit::Code(code) => ExitStatus::Exited(code as u8),
            crate::sys::RawExit::Signal(sig) => ExitStatus::Signaled(sig as u8),
        },
        usage: resource_usage(&usage),
    }))
}

/// The WIT resource usage of `wait4`'s (or `waitid`'s) `rusage`.
fn resource_usage(r: &libc::rusage) -> ResourceUsage {
    let ns = |t: libc::timeval| {
        (t.tv_sec.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_usec.max(0) as u64 * 1000)
    };
    ResourceUsage {
        user_cpu_ns: ns(r.ru_utime),
        system_cpu_ns: ns(r.ru_stime),
        // Linux gives kilobytes.
        max_rss_bytes: (r.ru_maxrss.max(0) as u64).saturating_mul(1024),
    }
}

/// Owns a child's process group: dropping it kills every process left in
/// the group with SIGKILL and gives back the child's slots in the
/// live-child limit. ([`OsChild`] reaps the leader in the background if nobody waited.)
pub(crate) struct GroupGuard {
    pub(crate) pgid: Pid,
    pub(crate) live: Arc<AtomicUsize>,
    /// The live-children slots it holds (more than one for a worker).
    pub(crate) slots: AtomicUsize,
    pub(crate) audit: Option<AuditLog>,
    pub(crate) started: Instant,
    pub(crate) status: OnceLock<ExitStatus>,
    /// The group was killed while the leader was still unreaped: nothing
    /// left to do on drop.
    pub(crate) killed: std::sync::atomic::AtomicBool,
    /// The child's own cgroup, if it has one: SIGKILL goes to all of it,
    /// and dropping it kills what is left.
    pub(crate) cgroup: Option<ChildCgroup>,
    /// The launcher that started it (a forked worker's child), which
    /// signals the group for the worker.
    pub(crate) launcher: Option<Kept>,
}

impl GroupGuard {
    /// The guard of the group `pgid` leads, holding `slots`, writing its
    /// `exit` event to `audit`; `cgroup`: the child's own.
    pub fn new(
        pgid: Pid,
        slots: Slots<'_>,
        audit: Option<AuditLog>,
        cgroup: Option<ChildCgroup>,
    ) -> GroupGuard {
        GroupGuard {
            pgid,
            live: slots.live.clone(),
            slots: slots.count.into(),
            audit,
            started: Instant::now(),
            status: OnceLock::new(),
            killed: false.into(),
            cgroup,
            launcher: None,
        }
    }

    /// Sends `signal` to every process of the group (SIGKILL also to every
    /// process of the child's own cgroup, if it has one). A group that is
    /// already gone is not an error.
    ///
    /// Once the leader has been reaped, its pid may be given to a new
    /// process (pids wrap around, at 32768 on some machines) — but only
    /// when no process is left in the group, since a group keeps its number
    /// in use. So if a process with the leader's pid exists then, it is
    /// someone else's, our group is empty, and nothing is sent.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        if let Some(kept) = &self.launcher {
            return kept.keeper.signal(kept.id, signal);
        }
        if signal == Signal::KILL
            && let Some(cgroup) = &self.cgroup
        {
            // Also what left the group (a cgroup's members are only ever
            // this child's, whatever happens to pids).
            cgroup.kill()?;
        }
        if self.status.get().is_some() && rustix::process::test_kill_process(self.pgid).is_ok() {
            return Ok(());
        }
        match kill_process_group(self.pgid, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Kills the group now, before the leader is reaped (the caller reaps
    /// it next), so that dropping the guard later sends nothing.
    pub fn kill_before_reaping(&self) {
        if let Err(e) = self.signal(Signal::KILL) {
            tracing::error!(pgid = self.pid(), error = %e, "cannot kill process group");
        }
        self.killed.store(true, Ordering::Release);
    }

    /// Takes `slots` more of the guest's live-children slots, given back
    /// on drop (a warm worker, once it gets its specification).
    pub fn count(&self, slots: usize) {
        self.slots.fetch_add(slots, Ordering::AcqRel);
        self.live.fetch_add(slots, Ordering::AcqRel);
    }

    /// Notes that the leader has been reaped, and how it ended (for
    /// [`signal`](Self::signal) and the audit log).
    pub fn exited(&self, status: ExitStatus) {
        let _ = self.status.set(status);
    }

    /// The process group id, which is the leader's pid.
    pub fn pid(&self) -> u32 {
        self.pgid.as_raw_nonzero().get().unsigned_abs()
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // A launcher's child: releasing it (its `OsChild` does) kills the
        // group, at no extra round trip.
        if !*self.killed.get_mut()
            && self.launcher.is_none()
            && let Err(e) = self.signal(Signal::KILL)
        {
            tracing::error!(pgid = self.pid(), error = %e, "cannot kill process group");
        }
        self.live.fetch_sub(*self.slots.get_mut(), Ordering::AcqRel);
        if let Some(audit) = &self.audit {
            let status = self.status.get().map_or("killed".to_owned(), status_text);
            let duration_ms = self.started.elapsed().as_millis() as u64;
            audit.record(
                "exit",
                json!({ "pid": self.pid(), "status": status, "duration_ms": duration_ms }),
            );
        }
    }
}

/// `exited(N)` or `signaled(N)`.
fn status_text(status: &ExitStatus) -> String {
    match status {
        ExitStatus::Exited(code) => format!("exited({code})"),
        ExitStatus::Signaled(signal) => format!("signaled({signal})"),
    }
}

/// A started child: the leader of its own process group.
pub(crate) struct Launched {
    pub child: OsChild,
    pub group: GroupGuard,
    /// How the child is confined.
    pub confinement: Confinement,
}

/// The signal numbered `n`, or `invalid-argument`.
pub(crate) fn signal(n: u8) -> Result<Signal, Failure> {
    Signal::from_named_raw(i32::from(n))
        .ok_or_else(|| Failure::InvalidArgument(format!("{n} is not a signal number")))
}
