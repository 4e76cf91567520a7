//! The launcher of a forked worker's children, outside the worker.
//!
//! A worker process runs its guest's wasm, and so, should the compiled code
//! it runs ever be an attacker's, native code. It must hold nothing that
//! code could use: it runs as its guest's user, with no capability (see
//! `worker::WorkerProcess::accept`). The children it asks for still need
//! what only a privileged process can give them (their user, their
//! namespaces, their cgroup), so a worker does not start them itself: it
//! asks the host that forked it, over a socket of its own, as Chrome's
//! renderers ask the browser and a privilege-separated sshd asks its
//! monitor.
//!
//! The host serves each worker on a thread of its own ([`service`]),
//! holding what the worker may do: the worker's narrowed policy, its
//! directories (opened by the host, not the worker), the sandbox view
//! built for them, the guest's cgroup, user and audit log. It checks every
//! request again against that policy ([`Policy::check`], as for its own
//! guest: the worker's word counts for nothing) and starts the child
//! behind the same walls as any. The child is the host's: the host reaps
//! it and kills its group, on the worker's word or when the worker is
//! gone, so nothing a worker leaves behind outlives it.
//!
//! The worker ([`client`]) gets back the child's pid, a pidfd (to poll:
//! only a parent can wait for a process, so how it ended comes back in
//! answer to [`Ask::Reap`]) and its ends of the child's pipes.
//!
//! The wire: one frame a message (`channel::send_frame_with_fds`), a JSON
//! [`Ask`] from the worker and one JSON [`Answer`] back for each but
//! [`Ask::Release`], strictly in turn, descriptors attached with
//! `SCM_RIGHTS`.
//!
//! [`Policy::check`]: crate::policy::Policy::check

pub(crate) mod client;
pub(crate) mod service;
#[cfg(test)]
mod tests;

use crate::failure::Failure;
use crate::outcome::{Confinement, ExitStatus, ResourceUsage};
use crate::policy::{Asked, Policy};
use serde::{Deserialize, Serialize};

/// What a worker asks its launcher.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Ask {
    /// Start a child for `request` (checked again), with stdio as `stdio`
    /// says: the descriptors of the `Given` ones come with the message, in
    /// order. Answered with [`Answer::Started`].
    Start {
        kind: Kind,
        request: Asked,
        stdio: [Stdio; 3],
    },
    /// Send `signal` to the process group of child `id`.
    Signal { id: u64, signal: i32 },
    /// How child `id` ended, if it has (answered with [`Answer::Reaped`]).
    Reap { id: u64 },
    /// The worker is done with child `id`: kill what is left of its
    /// group, and reap it. The one request not answered: a worker does
    /// not wait for it.
    Release { id: u64 },
    /// A launch socket of its own for a worker this worker forks, holding
    /// `policy` (the worker's worker's, narrowed by this worker) and the
    /// directories `dirs` (paths as this worker names them, and whether
    /// read-only): checked to lie within this socket's rights, and served
    /// with them narrowed so (answered with [`Answer::Connected`] and the
    /// socket).
    Connect {
        policy: Box<Policy>,
        dirs: Vec<(String, bool)>,
    },
}

/// Which call started a child, as the audit log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Spawn,
    Exec,
    ExecFile,
}

impl Kind {
    /// The kind the audit log calls `name`.
    pub fn of(name: &str) -> Kind {
        match name {
            "exec" => Kind::Exec,
            "exec-file" => Kind::ExecFile,
            _ => Kind::Spawn,
        }
    }

    /// The audit log's name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Spawn => "spawn",
            Kind::Exec => "exec",
            Kind::ExecFile => "exec-file",
        }
    }
}

/// One of a child's standard streams, as a worker asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Stdio {
    /// A new pipe; its other end comes back to the worker.
    Pipe,
    /// `/dev/null`.
    Null,
    /// A descriptor the worker sends (a file it opened in its grants, or
    /// another child's output pipe).
    Given,
}

/// The launcher's answer to one [`Ask`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Answer {
    /// The child started: the launcher's id of it (what later requests
    /// name it by: its pid may be another child's once it is reaped), its
    /// pid and confinement; the message carries a pidfd of it, then the
    /// worker's end of each `pipes` stream, in order.
    Started {
        id: u64,
        pid: i32,
        confinement: Confinement,
        pipes: [bool; 3],
    },
    /// Done.
    Done,
    /// A new launch socket (with the message), confining children at
    /// `level`.
    Connected { level: Confinement },
    /// How the child ended, if it has.
    Reaped {
        ended: Option<(ExitStatus, ResourceUsage)>,
    },
    /// Refused, or failed.
    Failed(Failure),
}
