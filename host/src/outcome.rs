//! How a process ended, what it used, and how confined it ran: the
//! launcher's answers in the domain's own types, which the WIT glue turns
//! into `exit-status`, `resource-usage` and `confinement` (`convert`).

/// How a process ended: exactly one of an exit code or a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(u8),
    /// A signal of this number ended it.
    Signaled(u8),
}

/// What a process used, as `wait4` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    /// CPU time in user mode, in nanoseconds.
    pub user_cpu_ns: u64,
    /// CPU time in the kernel, in nanoseconds.
    pub system_cpu_ns: u64,
    /// The largest resident set size, in bytes.
    pub max_rss_bytes: u64,
}

/// How fully a process is confined by the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// Not confined.
    None,
    /// Some layers are up.
    Partial,
    /// Every layer is up.
    Full,
}
