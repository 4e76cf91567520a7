//! Narrowing: the policy of a worker a guest forks is the guest's own,
//! cut down to what the request passes on ([`Policy::narrow`]), with
//! limits never above the guest's and budgets lent out of what it has
//! free. Narrowing never widens.

use super::{Denial, Lent, Limits, Policy, Refusal, check_env_pair};
use std::time::Duration;

/// What a guest asks for a worker it forks, in the domain's terms (the
/// glue makes one of `fork-options`): every capability named must be one
/// the guest holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerRequest {
    /// Programs passed on, by name.
    pub programs: Vec<String>,
    /// Directories passed on: guest path, and read-only.
    pub dirs: Vec<(String, bool)>,
    /// Environment names the worker may set for its children.
    pub allow_env: Vec<String>,
    /// The worker's own environment.
    pub env: Vec<(String, String)>,
    /// Whether the guest's shells are passed on.
    pub shell: bool,
    /// Components the worker may fork in turn.
    pub forks: Vec<String>,
    /// Lower limits for the worker.
    pub limits: WorkerLimits,
    /// Another user id for the worker's children, if granted.
    pub uid: Option<u32>,
    /// Another group id for the worker's children, if granted.
    pub gid: Option<u32>,
}

/// Limits a guest asks for a worker (`None`: as the guest's, or for a
/// budget, half of what it has free).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerLimits {
    /// Live children of the worker's tree.
    pub max_live_children: Option<u32>,
    /// Children started over the worker tree's life.
    pub max_total_spawns: Option<u64>,
    /// `max-buffer` of the worker's execs.
    pub max_buffer: Option<u64>,
    /// The longest timeout.
    pub max_timeout_ms: Option<u64>,
    /// `RLIMIT_CPU` of its children.
    pub cpu_seconds: Option<u64>,
    /// `RLIMIT_AS` of its children.
    pub address_space: Option<u64>,
    /// `RLIMIT_NOFILE` of its children.
    pub open_files: Option<u64>,
    /// `RLIMIT_NPROC` of its children.
    pub processes: Option<u64>,
    /// `RLIMIT_FSIZE` of its children.
    pub file_size: Option<u64>,
}

/// What a guest has free of its budgets when it forks, not counting the
/// worker's own slot and spawn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Headroom {
    /// Live-children slots.
    pub live: usize,
    /// Total spawns (`None`: no limit).
    pub spawns: Option<u64>,
}

impl Policy {
    /// The policy of a worker forked with `options`: this one, narrowed to
    /// the programs, shell and environment names it passes on (each one
    /// this policy grants), with lower limits and budgets lent out of
    /// `free`, and no forks; every other setting as it is. Also what the
    /// worker is lent. (The worker's directories are opened by the context,
    /// which holds them.)
    pub(crate) fn narrow(
        &self,
        request: &WorkerRequest,
        free: Headroom,
    ) -> Result<(Policy, Lent), Refusal> {
        for (name, value) in &request.env {
            check_env_pair(name, value)?;
        }
        let programs = (request.programs.iter())
            .map(|p| Ok(self.find_program(p)?.clone()))
            .collect::<Result<Vec<_>, Denial>>()?;
        let shells = match (request.shell, self.shells.is_empty()) {
            (false, _) => Vec::new(),
            (true, false) => self.shells.clone(),
            (true, true) => return Err(Denial::Shell.into()),
        };
        let forks = (request.forks.iter())
            .map(|c| Ok(self.find_fork(c)?.clone()))
            .collect::<Result<Vec<_>, Denial>>()?;
        if let Some(name) = (request.allow_env.iter()).find(|n| !self.allowed_env.contains(*n)) {
            return Err(Denial::EnvName(name.clone()).into());
        }
        let (limits, lent) = self.narrow_limits(&request.limits, free)?;
        let child_id = (self.check_user(request.uid, request.gid)?).unwrap_or(self.child_id);
        let policy = Policy {
            programs,
            shells,
            // A worker that cannot fork needs no warm workers.
            warm_workers: if forks.is_empty() {
                0
            } else {
                self.warm_workers
            },
            forks,
            // Nor a template of its own: its forks start from the
            // executable (a template per nested worker would double them).
            worker_template: false,
            allowed_env: request.allow_env.iter().cloned().collect(),
            injection_env: (request.allow_env.iter())
                .filter(|n| self.injection_env.contains(*n))
                .cloned()
                .collect(),
            limits,
            child_id,
            child_id_asked: request.uid.is_some() || request.gid.is_some(),
            ..self.clone()
        };
        Ok((policy, lent))
    }

    /// This guest's limits, lowered as `asked`, if nothing asked for is
    /// above this guest's own, and what they take from this guest's
    /// budgets: the worker's live children and total spawns are lent out
    /// of what this guest has free (not counting the worker itself), so
    /// the whole tree stays within this guest's limits. Not asked, a worker
    /// gets half of what is free.
    pub(crate) fn narrow_limits(
        &self,
        asked: &WorkerLimits,
        free: Headroom,
    ) -> Result<(Limits, Lent), Denial> {
        let mut limits = self.limits.clone();
        let lend = |name: &'static str, free: u64, asked: Option<u64>| match asked {
            Some(asked) if asked > free => Err(Denial::ForkLimit {
                limit: name,
                message: format!(
                    "worker limit {name} of {asked} is more than this guest has free ({free}: its own limit, less what its children and other workers hold, less the worker itself)"
                ),
            }),
            Some(asked) => Ok(asked),
            None => Ok(free / 2),
        };
        let live = lend(
            "max-live-children",
            free.live as u64,
            asked.max_live_children.map(u64::from),
        )? as usize;
        let spawns = match free.spawns {
            Some(free) => Some(lend("max-total-spawns", free, asked.max_total_spawns)?),
            None => asked.max_total_spawns,
        };
        limits.max_live_children = live;
        limits.max_total_spawns = spawns;
        let lent = Lent {
            live,
            spawns: free.spawns.and(spawns).unwrap_or(0),
        };
        let limits = self.narrow_other_limits(limits, asked)?;
        Ok((limits, lent))
    }

    /// `limits` with the rest of `asked` (all but the budgets) applied, if
    /// nothing asked for is above this guest's own.
    pub(crate) fn narrow_other_limits(
        &self,
        mut limits: Limits,
        asked: &WorkerLimits,
    ) -> Result<Limits, Denial> {
        // `mine`: this guest's value (`None`: no limit).
        let lower = |name: &'static str, mine: Option<u64>, asked: Option<u64>| match (mine, asked)
        {
            (_, None) => Ok(mine),
            (Some(mine), Some(asked)) if asked > mine => Err(Denial::ForkLimit {
                limit: name,
                message: format!(
                    "worker limit {name} of {asked} is above this guest's own ({mine})"
                ),
            }),
            (_, Some(asked)) => Ok(Some(asked)),
        };
        limits.max_buffer = (lower("max-buffer", Some(limits.max_buffer), asked.max_buffer)?)
            .unwrap_or(limits.max_buffer);
        limits.default_max_buffer = limits.default_max_buffer.min(limits.max_buffer);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let timeout = lower(
            "max-timeout-ms",
            limits.max_timeout.map(ms),
            asked.max_timeout_ms,
        )?;
        limits.max_timeout = timeout.map(Duration::from_millis);
        if let Some(max) = limits.max_timeout {
            limits.default_timeout = Some(limits.default_timeout.map_or(max, |d| d.min(max)));
        }
        let rlimits = &mut limits.rlimits;
        rlimits.cpu_seconds = lower("cpu-seconds", rlimits.cpu_seconds, asked.cpu_seconds)?;
        rlimits.address_space = lower("address-space", rlimits.address_space, asked.address_space)?;
        rlimits.open_files = lower("open-files", rlimits.open_files, asked.open_files)?;
        rlimits.processes = lower("processes", rlimits.processes, asked.processes)?;
        rlimits.file_size = lower("file-size", rlimits.file_size, asked.file_size)?;
        Ok(limits)
    }
}
