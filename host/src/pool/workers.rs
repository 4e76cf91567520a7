//! [`WorkerPool`]: the state of one guest's worker processes, owned by
//! its context. Starting workers needs the launcher and the budget too,
//! so that lives on the context (`pool/mod.rs`); this part holds only
//! what the pool itself keeps.

use super::template::Template;
use crate::child::Child;
use std::path::PathBuf;

/// The worker processes of one guest's `fork`, and where they come
/// from: the worker executable and the compiled code it is handed, warm
/// workers waiting for a specification, the worker template, and the
/// cluster remote workers are placed on.
#[derive(Default)]
pub(crate) struct WorkerPool {
    /// The program that runs forked workers.
    pub(crate) executable: Option<PathBuf>,
    /// Where the compiled code of forked components comes from.
    pub(crate) code: Option<crate::code::WorkerCode>,
    /// The cluster workers may be placed on, if the host joined one.
    pub(crate) cluster: Option<crate::cluster::Cluster>,
    /// The bytes all the guest's worker channels may take in unread
    /// (`Limits::channel_buffer_total`), made when the first is set up.
    pub(crate) channel_bytes: Option<crate::channel::BufferPool>,
    /// Warm worker processes waiting for a specification, and their
    /// channels (see `ProcessCtx::warm_up`).
    pub(super) warm: Vec<(Child, std::os::unix::net::UnixStream)>,
    /// The worker template, once started (see
    /// [`worker_template`](crate::ProcessCtxBuilder::worker_template)).
    pub(super) template: Option<Template>,
    /// Whether its workers run as more than one user (a cluster agent's,
    /// a user per session): the worker template then keeps the right to
    /// become each (`CAP_SETUID`, `CAP_SETGID`) rather than becoming the
    /// guest's user as soon as it starts.
    pub(crate) many_users: bool,
    /// How many times the template was started.
    pub(super) template_starts: u32,
    /// Whether a fork took a warm worker or lost the template since the
    /// last `warm_up` (see `ProcessCtx::refill`).
    pub(super) refill_due: bool,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("executable", &self.executable)
            .field("warm", &self.warm.len())
            .field("template", &self.template.as_ref().map(|t| t.child.pid()))
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    /// Forgets warm workers that have ended (reaping them).
    pub(super) fn drop_dead_warm_workers(&mut self) {
        self.warm
            .retain_mut(|(child, _)| matches!(child.try_status(), Ok(None)));
    }

    /// Whether there is a worker template and it is ready (never waits).
    pub(super) fn template_ready(&mut self) -> bool {
        self.template.as_mut().is_some_and(Template::is_ready)
    }
}
