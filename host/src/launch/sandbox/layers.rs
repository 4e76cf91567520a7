//! [`Layers`]: which walls of the sandbox a child stands behind, and the
//! one confinement level they make (`full` only when every one is up).

use super::confinement_name;
use crate::outcome::Confinement;

/// Which walls a child stands behind; the audit log names each, and
/// [`Layers::level`] is what the guest is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    /// Runs as an unprivileged user (a root host's children).
    pub identity: bool,
    /// Sees only the sandbox's file system view.
    pub mount: bool,
    /// In an empty network namespace, or the network is granted.
    pub network: bool,
    /// In the guest's IPC namespace.
    pub ipc: bool,
    /// In the guest's PID namespace, with its own `/proc`.
    pub pid: bool,
    /// Under the seccomp filter.
    pub seccomp: bool,
    /// What Landlock enforces (see [`crate::launch::confine`]).
    pub landlock: Confinement,
}

impl Layers {
    /// `full` when every layer is up and Landlock is full; `none` when no
    /// layer is; `partial` otherwise.
    pub fn level(&self) -> Confinement {
        let walls = [
            self.identity,
            self.mount,
            self.network,
            self.ipc,
            self.pid,
            self.seccomp,
        ];
        match (
            self.landlock,
            walls.iter().all(|&w| w),
            walls.iter().any(|&w| w),
        ) {
            (Confinement::Full, true, _) => Confinement::Full,
            (Confinement::None, _, false) => Confinement::None,
            _ => Confinement::Partial,
        }
    }

    /// The names of the layers that are down.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            ("identity", self.identity),
            ("mount", self.mount),
            ("network", self.network),
            ("ipc", self.ipc),
            ("pid", self.pid),
            ("seccomp", self.seccomp),
            ("landlock", self.landlock == Confinement::Full),
        ]
        .into_iter()
        .filter(|(_, up)| !up)
        .map(|(name, _)| name)
        .collect()
    }

    /// For the audit log.
    pub(crate) fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "identity": self.identity,
            "mount": self.mount,
            "network": self.network,
            "ipc": self.ipc,
            "pid": self.pid,
            "seccomp": self.seccomp,
            "landlock": confinement_name(self.landlock),
        })
    }
}
