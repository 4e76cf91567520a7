//! Why a request was refused: a [`Denial`] names the missing grant for the
//! operator, and becomes the guest's failure.

use crate::failure::Failure;
use std::fmt;

/// A request the policy refused, as told to a
/// [`DenialReporter`](crate::DenialReporter).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denial {
    /// A program that is not on the allow-list.
    Program(String),
    /// `exec` without a granted shell.
    Shell,
    /// `exec` with a shell that is not granted.
    ShellName(String),
    /// A working directory outside the granted directories.
    Cwd(String),
    /// A working directory whose `..` or symlinks lead out of the granted
    /// directory it starts in.
    CwdEscape {
        /// The working directory the guest asked for.
        cwd: String,
        /// The guest path of the granted directory it starts in.
        granted: String,
    },
    /// An environment variable name that is not allowed.
    EnvName(String),
    /// A loader or interpreter injection variable the host did not opt in to.
    InjectionEnv(String),
    /// A pinned program whose binary no longer has its SHA-256.
    PinMismatch(String),
    /// A component that is not granted for `fork`.
    ForkComponent(String),
    /// A directory passed on to a worker that the guest does not hold.
    ForkDir(String),
    /// A read-only directory passed on to a worker as writable.
    ReadOnlyDir(String),
    /// A worker limit above the forking guest's own: which one, and the
    /// message given to the guest.
    ForkLimit {
        /// The limit's name, as in `worker-limits`.
        limit: &'static str,
        /// What was asked for and what the guest holds.
        message: String,
    },
    /// A denial in a forked worker's guest, sent up to the forking host.
    InWorker {
        /// The worker process.
        pid: u32,
        /// The worker's component (its file name).
        component: String,
        /// What the worker's policy refused.
        reason: String,
    },
    /// A file for a child's stdio outside the granted directories (or
    /// leading out of them through `..` or a symlink).
    File(String),
    /// A file for a child's output in a directory granted read-only.
    ReadOnlyFile(String),
    /// A directory a cluster agent does not export.
    NotExported(String),
    /// A cluster agent refused a worker (beyond its policy or capacity).
    OnAgent {
        /// The agent's id.
        agent: String,
        /// What it said.
        reason: String,
    },
    /// A user id the host did not grant.
    Uid(u32),
    /// A group id the host did not grant.
    Gid(u32),
    /// A limit: which one, and the message given to the guest.
    Limit {
        /// The limit's name, as in [`Limits`](crate::Limits).
        limit: &'static str,
        /// What was asked for and what the limit is.
        message: String,
    },
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Program(p) => write!(f, "program `{p}` is not allowed"),
            Denial::Shell => f.write_str("no shell is granted for `exec`"),
            Denial::ShellName(s) => write!(f, "shell `{s}` is not granted for `exec`"),
            Denial::Cwd(c) => write!(
                f,
                "working directory `{c}` is outside the granted directories"
            ),
            Denial::CwdEscape { cwd, granted } => write!(
                f,
                "working directory `{cwd}` leads out of the granted directory `{granted}` through `..` or a symlink"
            ),
            Denial::EnvName(n) => write!(f, "environment variable `{n}` is not allowed"),
            Denial::PinMismatch(p) => write!(
                f,
                "program `{p}` was changed since it was granted (SHA-256 mismatch)"
            ),
            Denial::InjectionEnv(n) => write!(
                f,
                "environment variable `{n}` can make the child load or run other code, and the host did not opt in to it"
            ),
            Denial::ForkComponent(c) => write!(f, "component `{c}` is not allowed for fork"),
            Denial::ForkDir(d) => write!(
                f,
                "directory `{d}` is not inside a directory this guest holds"
            ),
            Denial::ReadOnlyDir(d) => {
                write!(
                    f,
                    "directory `{d}` is read-only for this guest and can only be passed on read-only"
                )
            }
            Denial::InWorker {
                pid,
                component,
                reason,
            } => write!(f, "in worker `{component}` (pid {pid}): {reason}"),
            Denial::File(p) => write!(
                f,
                "file `{p}` is outside the granted directories (or leads out of them)"
            ),
            Denial::ReadOnlyFile(p) => write!(
                f,
                "file `{p}` is in a directory granted read-only: a child cannot write it"
            ),
            Denial::OnAgent { agent, reason } => write!(f, "on agent {agent}: {reason}"),
            Denial::NotExported(d) => {
                write!(f, "directory `{d}` is not exported by this agent")
            }
            Denial::Uid(uid) => write!(f, "user id {uid} is not allowed"),
            Denial::Gid(gid) => write!(f, "group id {gid} is not allowed"),
            Denial::Limit { message, .. } | Denial::ForkLimit { message, .. } => {
                f.write_str(message)
            }
        }
    }
}

impl Denial {
    /// The `error-code` the guest gets for this denial.
    pub fn to_error_code(&self) -> Failure {
        match self {
            Denial::Limit { .. } => Failure::LimitExceeded(self.to_string()),
            _ => Failure::AccessDenied(self.to_string()),
        }
    }
}

/// Why a request was refused: a denial of the policy (which the context
/// reports to the operator), or input no policy could accept.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The policy does not grant it.
    Denied(Denial),
    /// Bad input or a failure (the guest's `error-code` as it is).
    Invalid(Failure),
}

impl From<Denial> for Refusal {
    fn from(denial: Denial) -> Self {
        Refusal::Denied(denial)
    }
}

impl From<Failure> for Refusal {
    fn from(code: Failure) -> Self {
        Refusal::Invalid(code)
    }
}
