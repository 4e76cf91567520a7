//! [`ProcessCtx`], the per-store state of one guest, and its builder.
//!
//! The context is a few owned parts, each with its own `impl` in its own
//! module: the [`Policy`] and the open directory grants (data, checked by
//! `policy`), the [`Launcher`] (the walls children start behind), the
//! [`Budget`] of the guest's tree and the [`WorkerPool`]. What lives here
//! is the glue between them: a request checked, counted, started and
//! reported.

mod builder;

pub use builder::ProcessCtxBuilder;

use crate::audit::AuditLog;
use crate::channel::Channel;
use crate::failure::Failure;
use crate::launch::os_child::{Launched, OsChild};
use crate::launch::process::{ChildIo, Walls, start_os_process};
use crate::launch::{Launcher, Slots};
use crate::outcome::Confinement;
use crate::policy::{
    Budget, Denial, DenialReporter, DirGrant, Limits, Policy, Prepared, Refusal, Request,
};
use crate::pool::workers::WorkerPool;
use anyhow::Result;
use rustix::process::Pid;
use std::fmt;
use std::path::Path;

/// The process capabilities of one guest: which programs it may run, where,
/// with which environment, under which limits. Build one with
/// [`ProcessCtx::builder`]; reach it from the store through
/// [`ProcessView`](crate::ProcessView).
pub struct ProcessCtx {
    /// What the guest may do: grants, limits and confinement settings.
    pub(crate) policy: Policy,
    /// The directories granted, open.
    pub(crate) dirs: Vec<DirGrant>,
    /// The compiled-component cache's location, which no directory
    /// granted or passed on may reach.
    pub(crate) cache_guard: Option<crate::cache::CacheGuard>,
    /// The embedder's denial callback.
    pub(crate) reporter: Option<DenialReporter>,
    /// Where denials and forks are recorded.
    pub(crate) audit: Option<AuditLog>,
    /// The channel to this worker's parent, if the guest is a worker.
    pub(crate) parent: Option<Channel>,
    /// Which of the guest's input-streams are child output pipes.
    pub(crate) pipes: crate::pipe::Pipes,
    /// The walls children start behind, and the starting of them.
    pub(crate) launcher: Launcher,
    /// The live-children slots and spawns of the guest's tree.
    pub(crate) budget: Budget,
    /// The worker processes `fork` starts, and where they come from.
    pub(crate) workers: WorkerPool,
}

impl fmt::Debug for ProcessCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessCtx")
            .field("programs", &self.policy.programs)
            .field("shells", &self.policy.shells)
            .field("dirs", &self.dirs)
            .field("allowed_env", &self.policy.allowed_env)
            .field("forks", &self.policy.forks)
            .field("workers", &self.workers)
            .field("limits", &self.policy.limits)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl ProcessCtx {
    /// A builder that starts from nothing granted.
    pub fn builder() -> ProcessCtxBuilder {
        ProcessCtxBuilder::new()
    }

    /// The cgroup this context's children start in, if it has one (see
    /// [`ProcessCtxBuilder::cgroup`]).
    pub fn cgroup(&self) -> Option<&Path> {
        self.launcher.cgroup.as_ref().map(|c| c.path())
    }

    /// How children of this context are confined.
    pub fn confinement(&self) -> Confinement {
        if let Some(remote) = &self.launcher.remote {
            return remote.level;
        }
        (self.launcher.layers(&self.policy, true, None)).level()
    }

    /// What this guest may do, as data (see [`Policy`]).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.policy.limits
    }

    /// Makes this the context of a forked worker whose `parent` interface
    /// talks over `socket` (see [`worker`](crate::worker)). Must be called
    /// inside a tokio runtime.
    pub fn connect_parent(&mut self, socket: std::os::unix::net::UnixStream) -> Result<()> {
        self.parent = Some(self.channel(socket).map_err(|e| anyhow::anyhow!("{e}"))?);
        Ok(())
    }

    /// Takes the channel to the parent of a forked worker (see
    /// [`ProcessCtx::connect_parent`]), to [`Channel::close`] it when
    /// the guest is done so every message it sent is delivered.
    pub fn take_parent_channel(&mut self) -> Option<Channel> {
        self.parent.take()
    }

    /// Reports `denial` to the embedder, the audit log and `tracing`.
    pub(crate) fn report(&self, denial: &Denial) {
        tracing::warn!(target: "wasmproc::denied", %denial, "request denied");
        if let Some(audit) = &self.audit {
            audit.record(
                "denied",
                serde_json::json!({ "reason": denial.to_string() }),
            );
        }
        if let Some(reporter) = &self.reporter {
            reporter(denial);
        }
    }
}

impl ProcessCtx {
    /// Checks `req` against the policy ([`Policy::check`]), reporting a
    /// denial; the guest's error if refused.
    pub(crate) fn prepare(&self, req: &Request<'_>) -> Result<Prepared, Failure> {
        self.policy
            .check(&self.dirs, req)
            .map_err(|r| self.refuse(r))
    }

    /// The guest's error for `refusal`, reporting a denial first.
    pub(crate) fn refuse(&self, refusal: Refusal) -> Failure {
        match refusal {
            Refusal::Denied(denial) => self.deny(denial),
            Refusal::Invalid(code) => code,
        }
    }

    /// Reports `denial` and turns it into the guest's error.
    pub(crate) fn deny(&self, denial: Denial) -> Failure {
        self.report(&denial);
        denial.to_error_code()
    }
}

impl ProcessCtx {
    /// Refuses a child (or worker) that would take `slots` live-children
    /// slots and `spawns` of the total spawns, if the guest has not that
    /// many left.
    pub(crate) fn check_budget(&self, slots: usize, spawns: u64) -> Result<(), Failure> {
        (self.budget.check(&self.policy.limits, slots, spawns)).map_err(|d| self.deny(d))
    }

    /// Starts `prepared` with the given stdin, stdout and stderr, counting
    /// it against the live-child and total-spawn limits. A forked worker's
    /// child is started by its launcher, the host that forked it (see
    /// [`remote`](crate::launch::remote)).
    pub(crate) fn launch(
        &mut self,
        kind: &'static str,
        prepared: &Prepared,
        stdio: [ChildIo; 3],
    ) -> Result<Launched, Failure> {
        if let (Some(remote), true) = (self.launcher.remote.clone(), prepared.confine) {
            return self.counted(prepared, |_, slots| {
                remote.start(kind, prepared, stdio, slots)
            });
        }
        self.launch_with(kind, prepared, |walls| {
            start_os_process(prepared, stdio, walls)
        })
    }

    /// As [`launch`](Self::launch), the OS process started by `start`
    /// behind the walls it is given (a worker template forks it).
    pub(crate) fn launch_with(
        &mut self,
        kind: &'static str,
        prepared: &Prepared,
        start: impl FnOnce(&Walls<'_>) -> Result<(OsChild, Pid), Failure>,
    ) -> Result<Launched, Failure> {
        self.counted(prepared, |ctx, slots| {
            (ctx.launcher).start(&ctx.policy, kind, prepared, slots, start)
        })
    }

    /// Starts `prepared` with `start`, if the guest's budget has room for
    /// it, and takes that room.
    fn counted(
        &mut self,
        prepared: &Prepared,
        start: impl FnOnce(&Self, Slots<'_>) -> Result<Launched, Failure>,
    ) -> Result<Launched, Failure> {
        // Slots lent to live workers count as live children: the guest's
        // budget covers its whole tree. A warm worker waiting for its
        // specification counts only once it gets one.
        let (slots, spawns) = match prepared.counted {
            true => (1 + prepared.lent.live, 1 + prepared.lent.spawns),
            false => (0, 0),
        };
        self.check_budget(slots, spawns)?;
        let live = self.budget.live().clone();
        let held = Slots {
            count: slots,
            live: &live,
        };
        let launched = start(self, held)?;
        self.budget.take(slots, spawns);
        Ok(launched)
    }
}
