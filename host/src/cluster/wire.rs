//! The cluster's wire format: fork requests and replies, error codes, and
//! the session's messages (a kind byte, then the body).

use crate::failure::Failure;
use crate::outcome::Termination;
use crate::policy::Policy;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// A host's request to fork a worker on an agent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ForkRequest {
    pub session: String,
    /// The forking host's id, whose heartbeat the agent watches.
    pub parent: String,
    /// The component, by file name: the agent runs its own grant of it.
    pub component: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Directories the agent exports, by name, and whether read-only.
    pub dirs: Vec<(String, bool)>,
    /// The worker's policy as the host narrowed it; the agent runs the
    /// worker within its intersection with its own.
    pub policy: Policy,
    /// Whether the worker's stdout and stderr come back (else /dev/null).
    pub stdout: bool,
    pub stderr: bool,
    /// The session's keys, one per direction (the request is sealed to
    /// the agent: only it reads them).
    pub keys: super::SessionKeys,
}

/// An agent's answer to a [`ForkRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ForkReply {
    Started { pid: u32 },
    Refused { code: String, message: String },
}

/// How an `error-code` crosses the wire.
pub(crate) fn to_wire(e: &Failure) -> (String, String) {
    (e.code().to_owned(), e.message().to_owned())
}

pub(crate) fn from_wire(code: &str, message: String) -> Failure {
    match code {
        "access-denied" => Failure::AccessDenied(message),
        "not-found" => Failure::NotFound(message),
        "invalid-argument" => Failure::InvalidArgument(message),
        "limit-exceeded" => Failure::LimitExceeded(message),
        "timed-out" => Failure::TimedOut(message),
        "closed" => Failure::Closed(message),
        "unsupported" => Failure::Unsupported(message),
        _ => Failure::Io(message),
    }
}

/// One message of a session, as a kind byte and its body.
pub(crate) mod kind {
    /// Bytes of a stream: `stream: u8`, `seq: u64 LE`, then the bytes.
    pub const DATA: u8 = b'D';
    /// Credits of a stream: `stream: u8`, then `bytes: u64 LE`,
    /// `messages: u64 LE` written out so far.
    pub const ACK: u8 = b'A';
    /// The end of a stream: `stream: u8`.
    pub const EOF: u8 = b'E';
    /// One report line of the worker (audit event or denial).
    pub const REPORT: u8 = b'L';
    /// The worker ended: a JSON [`super::Ended`]. The last message.
    pub const EXIT: u8 = b'X';
    /// Host to agent: send this signal (one byte) to the worker.
    pub const KILL: u8 = b'K';
    /// Host to agent: the host dropped the worker.
    pub const CLOSE: u8 = b'C';
}

/// The streams of a session, each numbered and credited on its own: the
/// channel both ways, and the worker's stdout and stderr to the host.
pub(crate) mod stream {
    pub const CHANNEL: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
}

pub(crate) fn message(kind: u8, body: &[u8]) -> Bytes {
    let mut m = BytesMut::with_capacity(1 + body.len());
    m.put_u8(kind);
    m.put_slice(body);
    m.freeze()
}

/// How a remote worker ended, as the agent saw it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ended {
    /// The agent ended the worker itself (a broken channel): why.
    #[serde(default)]
    pub lost: Option<String>,
    pub exited: Option<u8>,
    pub signaled: Option<u8>,
    pub trap: Option<String>,
    pub user_cpu_ns: u64,
    pub system_cpu_ns: u64,
    pub max_rss_bytes: u64,
}

impl From<&Termination> for Ended {
    fn from(t: &Termination) -> Ended {
        use crate::outcome::ExitStatus;
        let (exited, signaled) = match t.status {
            ExitStatus::Exited(c) => (Some(c), None),
            ExitStatus::Signaled(s) => (None, Some(s)),
        };
        Ended {
            lost: None,
            exited,
            signaled,
            trap: t.trap.clone(),
            user_cpu_ns: t.usage.user_cpu_ns,
            system_cpu_ns: t.usage.system_cpu_ns,
            max_rss_bytes: t.usage.max_rss_bytes,
        }
    }
}

impl From<Ended> for Termination {
    fn from(e: Ended) -> Termination {
        use crate::outcome::{ExitStatus, ResourceUsage};
        Termination {
            status: match (e.exited, e.signaled) {
                (Some(c), _) => ExitStatus::Exited(c),
                (None, s) => ExitStatus::Signaled(s.unwrap_or(9)),
            },
            timed_out: false,
            trap: e.trap,
            usage: ResourceUsage {
                user_cpu_ns: e.user_cpu_ns,
                system_cpu_ns: e.system_cpu_ns,
                max_rss_bytes: e.max_rss_bytes,
            },
        }
    }
}
