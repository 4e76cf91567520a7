//! A forked worker as the forking host holds it: the channel to it, where
//! its process is (a child of this host, or a cluster agent's), and its
//! reports; how it ended, trap included. Dropping it kills the worker.

use crate::channel::Channel;
use crate::child::Child;
use crate::failure::Failure;
use crate::outcome::Termination;
use wasmtime_wasi::p2::Pollable;

/// A forked worker: a component running in its own OS process (on this
/// machine or a cluster agent's), and the channel to it. Dropping it kills
/// the worker's process group.
pub struct Worker {
    pub(crate) channel: Channel,
    pub(crate) end: WorkerSite,
    /// Its audit events and denials, on their way to this host's.
    pub(crate) reports: std::sync::Arc<std::sync::Mutex<crate::worker::spec::Reports>>,
}

/// Where a worker's process is.
pub(crate) enum WorkerSite {
    /// A child process of this host.
    Local(Child),
    /// A process of a cluster agent.
    Remote(crate::cluster::Remote),
}

impl WorkerSite {
    pub(crate) fn pid(&self) -> u32 {
        match self {
            WorkerSite::Local(child) => child.pid(),
            WorkerSite::Remote(remote) => remote.pid(),
        }
    }

    pub(crate) async fn reap(&mut self) -> Result<Termination, Failure> {
        match self {
            WorkerSite::Local(child) => child.reap().await,
            WorkerSite::Remote(remote) => remote.reap().await,
        }
    }

    pub(crate) fn try_status(&mut self) -> Result<Option<Termination>, Failure> {
        match self {
            WorkerSite::Local(child) => child.try_status(),
            WorkerSite::Remote(remote) => remote.try_status(),
        }
    }

    pub(crate) fn kill(&self, signal: u8) -> Result<(), Failure> {
        match self {
            WorkerSite::Local(child) => child.kill(signal),
            WorkerSite::Remote(remote) => remote.kill(signal),
        }
    }

    pub(crate) fn take_stdout(&mut self) -> Option<crate::pipe::PipeReader> {
        match self {
            WorkerSite::Local(child) => child.take_stdout(),
            WorkerSite::Remote(remote) => remote.stdout.take(),
        }
    }

    pub(crate) fn take_stderr(&mut self) -> Option<crate::pipe::PipeReader> {
        match self {
            WorkerSite::Local(child) => child.take_stderr(),
            WorkerSite::Remote(remote) => remote.stderr.take(),
        }
    }
}

impl Worker {
    /// Passes on every report the worker has made so far.
    fn drain_reports(&self) {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain();
    }
}

impl Drop for Worker {
    /// Nothing the worker reported before it is dropped is lost.
    fn drop(&mut self) {
        self.drain_reports();
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("pid", &self.end.pid())
            .finish_non_exhaustive()
    }
}

/// Ready when the worker process has exited.
#[wasmtime_wasi::async_trait]
impl Pollable for Worker {
    async fn ready(&mut self) {
        let _ = self.reap().await;
    }
}

impl Worker {
    /// Waits for the worker to exit, taking in its messages meanwhile (see
    /// [`Channel::absorb`]): a worker that writes out many messages before
    /// it ends does not wait forever for a guest that waits for its exit.
    /// Cancel safe.
    pub(crate) async fn reap(&mut self) -> Result<Termination, Failure> {
        let ended = tokio::select! {
            ended = self.end.reap() => ended,
            () = self.channel.absorb() => unreachable!("absorb never ends"),
        };
        Ok(self.with_trap(ended?))
    }

    /// As [`reap`](Self::reap), for at most `ms` milliseconds.
    pub(crate) async fn reap_within(&mut self, ms: u64) -> Result<Termination, Failure> {
        let pid = self.end.pid();
        crate::child::ended_within(ms, format!("worker {pid}"), self.reap()).await
    }

    /// How the worker ended if it has exited, without blocking.
    pub(crate) fn try_status(&mut self) -> Result<Option<Termination>, Failure> {
        Ok(self.end.try_status()?.map(|ended| self.with_trap(ended)))
    }

    /// `ended` with the trap the worker reported, if its guest trapped
    /// (everything it reported comes before its end).
    fn with_trap(&self, mut ended: Termination) -> Termination {
        self.drain_reports();
        ended.trap = (self.reports.lock().unwrap_or_else(|e| e.into_inner()))
            .trap
            .clone();
        ended
    }
}

impl From<crate::channel::ChannelError> for Failure {
    /// The guest's error for a channel's: `closed`, or `limit-exceeded`,
    /// with the reason.
    fn from(err: crate::channel::ChannelError) -> Failure {
        use crate::channel::ChannelError;
        match err {
            ChannelError::Closed | ChannelError::ClosedHere => Failure::Closed(err.to_string()),
            other => Failure::LimitExceeded(other.to_string()),
        }
    }
}
