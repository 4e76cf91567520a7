//! The limits of a guest and of each of its children, and how a worker's
//! combine with its parent's ([`Limits::lower`]).

use std::time::Duration;

/// How long a worker channel's `receive` checks the socket before its
/// thread sleeps, unless set.
pub const DEFAULT_CHANNEL_SPIN: Duration = Duration::from_micros(50);

/// How much of a worker's unread messages the host takes in while the
/// guest waits for the worker's exit, unless set.
pub const DEFAULT_CHANNEL_BUFFER: usize = 16 << 20;

/// The default bytes all of a guest's worker channels take in unread
/// between them: 64 MiB.
pub const DEFAULT_CHANNEL_BUFFER_TOTAL: usize = 64 << 20;

/// Resource limits of a [`ProcessCtx`](crate::ProcessCtx). [`Limits::default`] gives the values
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
    #[serde(default = "default_max_wasm_memory")]
    pub max_wasm_memory: Option<u64>,
    /// Bytes of a worker's messages the host takes in unread while the
    /// guest waits for the worker's exit (`wait`, `wait-timeout`, the exit
    /// pollable), so a worker that sends before it ends is not kept
    /// waiting; past it, the worker waits for the guest to receive.
    /// Also a worker's, for its own workers. Default: 16 MiB
    /// (`DEFAULT_CHANNEL_BUFFER`).
    #[serde(default = "default_channel_buffer")]
    pub channel_buffer: usize,
    /// Bytes all the guest's worker channels take in unread between them
    /// (each also within `channel_buffer`), so that the host's memory for
    /// unread messages is bounded per guest however many workers it has;
    /// past it, workers wait for the guest to receive. A worker's own
    /// channels (to its workers) have a total of their own, within its
    /// lent limits. Default: 64 MiB (`DEFAULT_CHANNEL_BUFFER_TOTAL`).
    #[serde(default = "default_channel_buffer_total")]
    pub channel_buffer_total: usize,
}

fn default_channel_buffer_total() -> usize {
    DEFAULT_CHANNEL_BUFFER_TOTAL
}

/// A policy sent without the field keeps the default cap (never none).
fn default_max_wasm_memory() -> Option<u64> {
    Some(DEFAULT_MAX_WASM_MEMORY)
}

fn default_channel_buffer() -> usize {
    DEFAULT_CHANNEL_BUFFER
}

/// A default timeout never above the maximum (`None`: none, no maximum).
fn capped_at(default: Option<Duration>, max: Option<Duration>) -> Option<Duration> {
    default.map(|d| max.map_or(d, |max| d.min(max)))
}

impl Limits {
    /// `exec`'s timeout when the guest gives none: the default, never
    /// above the maximum.
    pub(crate) fn default_timeout_within_max(&self) -> Option<Duration> {
        capped_at(self.default_timeout, self.max_timeout)
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
            default_timeout: capped_at(
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
            channel_buffer_total: (self.channel_buffer_total).min(other.channel_buffer_total),
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
            channel_buffer_total: default_channel_buffer_total(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A number that is often small (so that two draws tie) and sometimes
    /// anything.
    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0), 1..8u64, any::<u64>()]
    }

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (0..4u64).prop_map(Duration::from_secs),
            (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
        ]
    }

    fn child_rlimits() -> impl Strategy<Value = ChildRlimits> {
        let o = || proptest::option::of(number());
        (o(), o(), o(), o(), o()).prop_map(
            |(cpu_seconds, address_space, open_files, processes, file_size)| ChildRlimits {
                cpu_seconds,
                address_space,
                open_files,
                processes,
                file_size,
            },
        )
    }

    /// Any `Limits`, a default timeout above the maximum included.
    fn limits() -> impl Strategy<Value = Limits> {
        let d = || proptest::option::of(duration());
        let n = || number().prop_map(|n| n as usize);
        (
            (number(), number(), d(), d(), duration()),
            (n(), n(), proptest::option::of(number()), child_rlimits()),
            (proptest::option::of(number()), n(), n()),
        )
            .prop_map(
                |(
                    (default_max_buffer, max_buffer, default_timeout, max_timeout, kill_grace),
                    (max_arg_bytes, max_live_children, max_total_spawns, rlimits),
                    (max_wasm_memory, channel_buffer, channel_buffer_total),
                )| Limits {
                    default_max_buffer,
                    max_buffer,
                    default_timeout,
                    max_timeout,
                    kill_grace,
                    max_arg_bytes,
                    max_live_children,
                    max_total_spawns,
                    rlimits,
                    max_wasm_memory,
                    channel_buffer,
                    channel_buffer_total,
                },
            )
    }

    /// `Limits` whose default timeout is within its maximum, as `lower`
    /// leaves them.
    fn normal_limits() -> impl Strategy<Value = Limits> {
        limits().prop_map(|mut l| {
            l.default_timeout = l.default_timeout_within_max();
            l
        })
    }

    /// `a` is at most `b`, `None` being no limit.
    fn at_most<T: Ord>(a: Option<T>, b: Option<T>) -> bool {
        match (a, b) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => a <= b,
        }
    }

    /// Every field of `low` is at most the same field of `high`.
    fn nowhere_above(low: &Limits, high: &Limits) -> bool {
        let (l, h) = (&low.rlimits, &high.rlimits);
        low.default_max_buffer <= high.default_max_buffer
            && low.max_buffer <= high.max_buffer
            && at_most(low.default_timeout, high.default_timeout)
            && at_most(low.max_timeout, high.max_timeout)
            && low.kill_grace <= high.kill_grace
            && low.max_arg_bytes <= high.max_arg_bytes
            && low.max_live_children <= high.max_live_children
            && at_most(low.max_total_spawns, high.max_total_spawns)
            && at_most(l.cpu_seconds, h.cpu_seconds)
            && at_most(l.address_space, h.address_space)
            && at_most(l.open_files, h.open_files)
            && at_most(l.processes, h.processes)
            && at_most(l.file_size, h.file_size)
            && at_most(low.max_wasm_memory, high.max_wasm_memory)
            && low.channel_buffer <= high.channel_buffer
            && low.channel_buffer_total <= high.channel_buffer_total
    }

    proptest! {
        #[test]
        fn lowering_never_widens_a_limit_of_either_side(a in limits(), b in limits()) {
            let low = a.lower(&b);
            prop_assert!(nowhere_above(&low, &a), "{low:?}\nabove\n{a:?}");
            prop_assert!(nowhere_above(&low, &b), "{low:?}\nabove\n{b:?}");
        }

        #[test]
        fn lowering_keeps_the_default_timeout_within_the_maximum(a in limits(), b in limits()) {
            let low = a.lower(&b);
            prop_assert_eq!(low.default_timeout, low.default_timeout_within_max());
        }

        #[test]
        fn lowering_limits_by_themselves_changes_nothing(a in limits()) {
            // Once the default timeout is within the maximum, as `lower`
            // leaves it, lowering by itself is the identity.
            let mut normal = a.clone();
            normal.default_timeout = a.default_timeout_within_max();
            prop_assert_eq!(normal.lower(&normal), normal.clone());
            prop_assert_eq!(a.lower(&a), normal);
        }

        #[test]
        fn lowering_is_commutative(a in limits(), b in limits()) {
            prop_assert_eq!(a.lower(&b), b.lower(&a));
        }

        #[test]
        fn lowering_is_associative(a in limits(), b in limits(), c in limits()) {
            prop_assert_eq!(a.lower(&b).lower(&c), a.lower(&b.lower(&c)));
        }

        #[test]
        fn lowering_by_no_limits_at_all_changes_nothing(a in normal_limits()) {
            let unlimited = Limits {
                default_max_buffer: u64::MAX,
                max_buffer: u64::MAX,
                default_timeout: None,
                max_timeout: None,
                kill_grace: Duration::MAX,
                max_arg_bytes: usize::MAX,
                max_live_children: usize::MAX,
                max_total_spawns: None,
                rlimits: ChildRlimits::default(),
                max_wasm_memory: None,
                channel_buffer: usize::MAX,
                channel_buffer_total: usize::MAX,
            };
            prop_assert_eq!(a.lower(&unlimited), a.clone());
            prop_assert_eq!(unlimited.lower(&a), a);
        }

        #[test]
        fn the_default_timeout_is_never_above_the_maximum(
            default in proptest::option::of(duration()),
            max in proptest::option::of(duration()),
        ) {
            let limits = Limits { default_timeout: default, max_timeout: max, ..Limits::default() };
            let got = limits.default_timeout_within_max();
            match (default, max) {
                // No default: none, whatever the maximum.
                (None, _) => prop_assert_eq!(got, None),
                (Some(d), None) => prop_assert_eq!(got, Some(d)),
                (Some(d), Some(m)) => prop_assert_eq!(got, Some(d.min(m))),
            }
        }

        #[test]
        fn child_rlimits_list_exactly_the_limits_that_are_set(r in child_rlimits()) {
            use rustix::process::Resource;
            let expected: Vec<(Resource, u64)> = [
                (Resource::Cpu, r.cpu_seconds),
                (Resource::As, r.address_space),
                (Resource::Nofile, r.open_files),
                (Resource::Nproc, r.processes),
                (Resource::Fsize, r.file_size),
            ]
            .into_iter()
            .filter_map(|(resource, v)| v.map(|v| (resource, v)))
            .collect();
            let list = r.to_list();
            prop_assert_eq!(&list, &expected);
            let set = [r.cpu_seconds, r.address_space, r.open_files, r.processes, r.file_size];
            prop_assert_eq!(list.len(), set.iter().flatten().count());
        }

        #[test]
        fn limits_come_back_the_same_from_json(a in limits()) {
            let json = serde_json::to_string(&a).unwrap();
            let back: Limits = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, a);
        }
    }

    #[test]
    fn default_child_processes_stay_below_pid_max_and_at_most_4096() {
        let n = default_child_processes();
        assert!(n > 0, "no process at all");
        assert!(n <= 4096, "{n}");
        if let Ok(pid_max) = std::fs::read_to_string("/proc/sys/kernel/pid_max") {
            let pid_max: u64 = pid_max.trim().parse().unwrap();
            assert!(n < pid_max, "{n} of pid_max {pid_max}");
            assert!(n <= pid_max / 2, "{n} above half of pid_max {pid_max}");
        }
    }

    #[test]
    fn default_limits_are_the_ones_the_fields_document() {
        let l = Limits::default();
        assert_eq!(l.default_max_buffer, 1024 * 1024, "1 MiB");
        assert_eq!(l.max_buffer, 64 * 1024 * 1024, "64 MiB");
        assert_eq!(l.default_timeout, None);
        assert_eq!(l.max_timeout, None);
        assert_eq!(l.kill_grace, Duration::from_secs(2));
        assert_eq!(l.max_arg_bytes, 256 * 1024, "256 KiB");
        assert_eq!(l.max_live_children, 64);
        assert_eq!(l.max_total_spawns, None);
        assert_eq!(l.rlimits, ChildRlimits::default());
        assert_eq!(l.rlimits.to_list(), []);
        assert_eq!(l.max_wasm_memory, Some(512 * 1024 * 1024), "512 MiB");
        assert_eq!(l.channel_buffer, 16 * 1024 * 1024, "16 MiB");
        assert!(l.default_max_buffer <= l.max_buffer);
        assert_eq!(l.default_timeout_within_max(), None);
    }
}
