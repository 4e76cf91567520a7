//! What a guest may do, as pure data and decisions: the [`Policy`] (grants,
//! limits, confinement settings), checking a request against it
//! ([`Policy::check`]), and why a request is refused ([`Denial`]).
//!
//! This layer decides; it starts, opens the guest's names as the launcher
//! would, and logs nothing of its own. Its parts:
//!
//! - `limits`: [`Limits`] and [`ChildRlimits`], and how two combine;
//! - `grants`: turning names into things (a program's absolute path and
//!   pin, a directory opened, a file opened as stdio);
//! - `check`: a request checked against the grants, into a [`Prepared`]
//!   command that names only granted things;
//! - `denial`: what was refused and why, shown to the operator;
//! - `env`: the environment rules (injection variables, NUL bytes).

mod budget;
mod check;
mod denial;
mod env;
mod grants;
mod limits;
mod narrow;
#[cfg(test)]
mod tests;

pub(crate) use budget::Budget;
pub(crate) use check::{Asked, Lent, Prepared, Request, Run};
pub(crate) use denial::Refusal;
pub use denial::{Denial, DenialReporter};
pub use env::{INJECTION_ENV, INJECTION_ENV_PREFIXES, is_injection_env};
pub(crate) use env::{bad_env_name, check_env_pair, no_nul};
pub use grants::DirAccess;
pub(crate) use grants::{DirGrant, ProgramGrant, open_granted_dir, open_granted_file};
pub use limits::{
    ChildRlimits, DEFAULT_CHANNEL_BUFFER, DEFAULT_CHANNEL_SPIN, DEFAULT_MAX_WASM_MEMORY, Limits,
    default_child_processes,
};
pub(crate) use narrow::Headroom;
pub use narrow::{WorkerLimits, WorkerRequest};

use std::collections::BTreeSet;
use std::time::Duration;

/// The user and group id a root host's children run as by default
/// (`nobody` and `nogroup` on Debian).
pub const DEFAULT_CHILD_ID: u32 = 65534;

/// What a guest may do, as plain data — the grants (but for its
/// directories, which are held open by the context), its limits and how its
/// children are confined — so that it can be narrowed and sent whole to a
/// forked worker, which rebuilds nothing from defaults. Its defaults are
/// [`ProcessCtxBuilder`](crate::ProcessCtxBuilder)'s: nothing granted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// The programs `exec-file` and `spawn` may run, resolved when granted.
    pub(crate) programs: Vec<ProgramGrant>,
    /// The shells `exec` may use; the first is the default.
    pub(crate) shells: Vec<ProgramGrant>,
    /// The components `fork` may start.
    pub(crate) forks: Vec<ProgramGrant>,
    /// The environment variable names the guest may set for children.
    pub(crate) allowed_env: BTreeSet<String>,
    /// Of those, the injection variables the embedder opted in to.
    pub(crate) injection_env: BTreeSet<String>,
    /// Timeouts, buffers, counts, rlimits and memory (see [`Limits`]).
    pub(crate) limits: Limits,
    /// How long a channel's `receive` spins before sleeping.
    pub(crate) channel_spin: Duration,
    /// Landlock and the sandbox at all.
    pub(crate) confine: bool,
    /// Whether children may use the network (TCP, and no empty network
    /// namespace).
    pub(crate) network: bool,
    /// Whether a child that cannot be fully confined is refused.
    pub(crate) require_confinement: bool,
    /// Whether children run in the guest's sandbox (namespaces, seccomp).
    pub(crate) use_sandbox: bool,
    /// The user and group id a root host's children run as.
    pub(crate) child_id: (u32, u32),
    /// Whether `child_id` is one the guest asked for (a worker's `uid` or
    /// `gid` option), rather than the id of its host's choosing: an agent
    /// runs a remote worker's children as an id of its own unless asked.
    #[serde(default)]
    pub(crate) child_id_asked: bool,
    /// Other user ids the guest may ask for.
    pub(crate) allowed_uids: BTreeSet<u32>,
    /// Other group ids the guest may ask for.
    pub(crate) allowed_gids: BTreeSet<u32>,
    /// Whether to put children in a cgroup of their own.
    pub(crate) use_cgroup: bool,
    /// Whether each child gets a cgroup of its own inside the guest's.
    pub(crate) cgroup_per_child: bool,
    /// The capabilities children keep (a bit per capability number).
    pub(crate) keep_caps: u64,
    /// Worker processes kept started, waiting for a specification.
    #[serde(default)]
    pub(crate) warm_workers: usize,
    /// Whether new worker processes are forked from a worker template
    /// rather than started from the executable.
    #[serde(default = "default_true")]
    pub(crate) worker_template: bool,
}

fn default_true() -> bool {
    true
}

impl Policy {
    /// Every program children may run: the granted programs and shell.
    pub(crate) fn runnable(&self) -> Vec<&ProgramGrant> {
        self.programs.iter().chain(&self.shells).collect()
    }
}

impl Default for Policy {
    /// Nothing granted; the defaults [`ProcessCtxBuilder`](crate::ProcessCtxBuilder) lists.
    fn default() -> Self {
        Policy {
            programs: Vec::new(),
            shells: Vec::new(),
            forks: Vec::new(),
            allowed_env: BTreeSet::new(),
            injection_env: BTreeSet::new(),
            limits: Limits::default(),
            channel_spin: DEFAULT_CHANNEL_SPIN,
            confine: true,
            network: false,
            require_confinement: false,
            use_sandbox: true,
            child_id: (DEFAULT_CHILD_ID, DEFAULT_CHILD_ID),
            child_id_asked: false,
            allowed_uids: BTreeSet::new(),
            allowed_gids: BTreeSet::new(),
            use_cgroup: true,
            cgroup_per_child: false,
            keep_caps: 0,
            warm_workers: 0,
            worker_template: true,
        }
    }
}
