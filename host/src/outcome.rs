//! How a process ended, what it used, and how confined it ran: the
//! launcher's answers in the domain's own types, which the WIT glue turns
//! into `exit-status`, `resource-usage` and `confinement` (`convert`).

/// How a process ended: exactly one of an exit code or a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(u8),
    /// A signal of this number ended it.
    Signaled(u8),
}

/// How a process ended, and what it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// Its exit code or the signal that ended it.
    pub status: ExitStatus,
    /// Its deadline expired and the host killed its process group.
    pub timed_out: bool,
    /// For a worker whose guest trapped: the trap's message.
    pub trap: Option<String>,
    /// What it used.
    pub usage: ResourceUsage,
}

/// What a process used, as `wait4` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceUsage {
    /// CPU time in user mode, in nanoseconds.
    pub user_cpu_ns: u64,
    /// CPU time in the kernel, in nanoseconds.
    pub system_cpu_ns: u64,
    /// The largest resident set size, in bytes.
    pub max_rss_bytes: u64,
}

/// How fully a process is confined by the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Confinement {
    /// Not confined.
    None,
    /// Some layers are up.
    Partial,
    /// Every layer is up.
    Full,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::types as wit;
    use proptest::prelude::*;

    /// An exit status as (exited, number), from either side's type.
    fn ours(status: ExitStatus) -> (bool, u8) {
        match status {
            ExitStatus::Exited(n) => (true, n),
            ExitStatus::Signaled(n) => (false, n),
        }
    }

    fn theirs(status: &wit::ExitStatus) -> (bool, u8) {
        match *status {
            wit::ExitStatus::Exited(n) => (true, n),
            wit::ExitStatus::Signaled(n) => (false, n),
        }
    }

    fn usage_fields(u: &wit::ResourceUsage) -> (u64, u64, u64) {
        (u.user_cpu_ns, u.system_cpu_ns, u.max_rss_bytes)
    }

    fn any_status() -> impl Strategy<Value = ExitStatus> {
        prop_oneof![
            any::<u8>().prop_map(ExitStatus::Exited),
            any::<u8>().prop_map(ExitStatus::Signaled),
        ]
    }

    fn any_usage() -> impl Strategy<Value = ResourceUsage> {
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(u, s, r)| ResourceUsage {
            user_cpu_ns: u,
            system_cpu_ns: s,
            max_rss_bytes: r,
        })
    }

    proptest! {
        /// An exit code stays an exit code, a signal a signal, and the
        /// number is kept.
        #[test]
        fn an_exit_status_keeps_its_kind_and_number_for_the_guest(status in any_status()) {
            prop_assert_eq!(theirs(&wit::ExitStatus::from(status)), ours(status));
        }

        #[test]
        fn resource_usage_converts_field_for_field(usage in any_usage()) {
            prop_assert_eq!(
                usage_fields(&wit::ResourceUsage::from(usage)),
                (usage.user_cpu_ns, usage.system_cpu_ns, usage.max_rss_bytes)
            );
        }

        #[test]
        fn a_termination_converts_field_for_field(
            status in any_status(),
            timed_out in any::<bool>(),
            trap in proptest::option::of(".*"),
            usage in any_usage(),
        ) {
            let t = Termination { status, timed_out, trap: trap.clone(), usage };
            let w = wit::Termination::from(t);
            prop_assert_eq!(theirs(&w.status), ours(status));
            prop_assert_eq!(w.timed_out, timed_out);
            prop_assert_eq!(w.trap, trap);
            prop_assert_eq!(
                usage_fields(&w.usage),
                (usage.user_cpu_ns, usage.system_cpu_ns, usage.max_rss_bytes)
            );
        }
    }

    #[test]
    fn every_confinement_level_converts_to_the_one_of_the_same_name_and_back() {
        let pairs = [
            (Confinement::None, wit::Confinement::None),
            (Confinement::Partial, wit::Confinement::Partial),
            (Confinement::Full, wit::Confinement::Full),
        ];
        for (level, wit_level) in pairs {
            assert_eq!(wit::Confinement::from(level), wit_level);
            assert_eq!(Confinement::from(wit_level), level);
        }
    }
}
