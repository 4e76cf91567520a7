//! The limits of a guest and of each of its children, and how a worker's
//! combine with its parent's ([`Limits::lower`]).

use std::time::Duration;

/// How long a worker channel's `receive` checks the socket before its
/// thread sleeps, unless set.
pub const DEFAULT_CHANNEL_SPIN: Duration = Duration::from_micros(50);

/// How much of a worker's unread messages the host takes in while the
/// guest waits for the worker's exit, unless set.
pub const DEFAULT_CHANNEL_BUFFER: usize = 16 << 20;

/// Resource limits of a [`ProcessCtx`]. [`Limits::default`] gives the values
/// listed on each field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Bytes kept per output stream by `exec` when the guest does not say
    /// (bounded by `max_buffer`). Default: 1 MiB (Node's `maxBuffer`).
    pub default_max_buffer: u64,
    /// The most a guest may ask for as `max-buffer`. Default: 64 MiB.
    pub max_buffer: u64,
    /// Timeout of `exec` when the guest does not give one. Default: none.
    pub default_timeout: Option<Duration>,
    /// The longest timeout a guest may ask for; with a maximum set, a guest
    /// cannot run an `exec` without a timeout. Default: none (no maximum).
    pub max_timeout: Option<Duration>,
    /// After a timeout or a buffer overflow sends the kill signal, how long
    /// the process group has before it is killed with SIGKILL and its
    /// output abandoned. Default: 2 s.
    pub kill_grace: Duration,
    /// Most bytes of program path, arguments and `NAME=value` environment
    /// strings (each counted with its terminating NUL) per child.
    /// Default: 256 KiB.
    pub max_arg_bytes: usize,
    /// Most children alive at once. Default: 64.
    pub max_live_children: usize,
    /// Most children started over the life of the context. Default: no limit.
    pub max_total_spawns: Option<u64>,
    /// Resource limits (soft and hard) set in every child. Default: none.
    pub rlimits: ChildRlimits,
    /// Bytes each linear memory of the guest (and of every worker it
    /// forks) may grow to; a `memory.grow` beyond fails as out of memory.
    /// Applied by the embedder's store limiter (the CLI's `Runner` does).
    /// Default: [`DEFAULT_MAX_WASM_MEMORY`] (512 MiB), so that a guest's
    /// memory is bounded unless the embedder says otherwise (`None`: no
    /// limit).
    #[serde(default)]
    pub max_wasm_memory: Option<u64>,
    /// Bytes of a worker's messages the host takes in unread while the
    /// guest waits for the worker's exit (`wait`, `wait-timeout`, the exit
    /// pollable), so a worker that sends before it ends is not kept
    /// waiting; past it, the worker waits for the guest to receive.
    /// Also a worker's, for its own workers. Default: 16 MiB
    /// ([`DEFAULT_CHANNEL_BUFFER`]).
    #[serde(default = "default_channel_buffer")]
    pub channel_buffer: usize,
}

fn default_channel_buffer() -> usize {
    DEFAULT_CHANNEL_BUFFER
}

/// A default timeout never above the maximum (`None`: none, no maximum).
fn within(default: Option<Duration>, max: Option<Duration>) -> Option<Duration> {
    default.map(|d| max.map_or(d, |max| d.min(max)))
}

impl Limits {
    /// `exec`'s timeout when the guest gives none: the default, never
    /// above the maximum.
    pub(crate) fn default_timeout_within_max(&self) -> Option<Duration> {
        within(self.default_timeout, self.max_timeout)
    }

    /// The lower of each of this and `other`'s limits (a missing one is no
    /// limit).
    pub fn lower(&self, other: &Limits) -> Limits {
        fn opt<T: Ord + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        let (a, b) = (&self.rlimits, &other.rlimits);
        let max_timeout = opt(self.max_timeout, other.max_timeout);
        Limits {
            default_max_buffer: self.default_max_buffer.min(other.default_max_buffer),
            max_buffer: self.max_buffer.min(other.max_buffer),
            default_timeout: within(
                opt(self.default_timeout, other.default_timeout),
                max_timeout,
            ),
            max_timeout,
            kill_grace: self.kill_grace.min(other.kill_grace),
            max_arg_bytes: self.max_arg_bytes.min(other.max_arg_bytes),
            max_live_children: self.max_live_children.min(other.max_live_children),
            max_total_spawns: opt(self.max_total_spawns, other.max_total_spawns),
            rlimits: ChildRlimits {
                cpu_seconds: opt(a.cpu_seconds, b.cpu_seconds),
                address_space: opt(a.address_space, b.address_space),
                open_files: opt(a.open_files, b.open_files),
                processes: opt(a.processes, b.processes),
                file_size: opt(a.file_size, b.file_size),
            },
            max_wasm_memory: opt(self.max_wasm_memory, other.max_wasm_memory),
            channel_buffer: self.channel_buffer.min(other.channel_buffer),
        }
    }
}

/// Resource limits set in each child (`setrlimit`), inherited by its
/// descendants. `None` leaves a limit as the host has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChildRlimits {
    /// CPU seconds (`RLIMIT_CPU`): the child gets SIGXCPU, then SIGKILL.
    pub cpu_seconds: Option<u64>,
    /// Bytes of address space (`RLIMIT_AS`).
    pub address_space: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Processes of the child's user (`RLIMIT_NPROC`; not enforced for
    /// root). Default, where children run as a user of their own (a root
    /// host's, sandboxed): [`default_child_processes`], a kernel backstop
    /// under `kernel.pid_max` for a tree that forks without end (the
    /// cgroup's `pids.max` is one only where cgroup v2 has that
    /// controller). It counts every process of that user, so guests that
    /// share the child user share it.
    pub processes: Option<u64>,
    /// Bytes of a file the child may write (`RLIMIT_FSIZE`).
    pub file_size: Option<u64>,
}

/// The default `RLIMIT_NPROC` of children that run as a user of their own:
/// 4096, or half of the kernel's `pid_max` if that is lower, so that no
/// guest tree can take every pid of the machine.
pub fn default_child_processes() -> u64 {
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(32768);
    (pid_max / 2).min(4096)
}

/// The default [`Limits::max_wasm_memory`]: 512 MiB per linear memory.
pub const DEFAULT_MAX_WASM_MEMORY: u64 = 512 << 20;

impl ChildRlimits {
    pub(crate) fn to_list(&self) -> Vec<(rustix::process::Resource, u64)> {
        use rustix::process::Resource;
        [
            (Resource::Cpu, self.cpu_seconds),
            (Resource::As, self.address_space),
            (Resource::Nofile, self.open_files),
            (Resource::Nproc, self.processes),
            (Resource::Fsize, self.file_size),
        ]
        .into_iter()
        .filter_map(|(r, v)| Some((r, v?)))
        .collect()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default_max_buffer: 1 << 20,
            max_buffer: 64 << 20,
            default_timeout: None,
            max_timeout: None,
            kill_grace: Duration::from_secs(2),
            max_arg_bytes: 256 << 10,
            max_live_children: 64,
            max_total_spawns: None,
            rlimits: ChildRlimits::default(),
            max_wasm_memory: Some(DEFAULT_MAX_WASM_MEMORY),
            channel_buffer: default_channel_buffer(),
        }
    }
}
