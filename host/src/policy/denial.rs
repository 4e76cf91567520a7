//! Why a request was refused: a [`Denial`] names the missing grant for the
//! operator, and becomes the guest's failure.

use crate::failure::Failure;
use std::fmt;
use std::sync::Arc;

/// A callback told about every request the policy refused, before the guest
/// gets its `error-code`. Use it to tell an operator which grant is missing.
pub type DenialReporter = Arc<dyn Fn(&Denial) + Send + Sync>;

/// A request the policy refused, as told to a
/// [`DenialReporter`].
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One denial of each kind, with the words its message must hold.
    fn every_denial() -> Vec<(Denial, Vec<&'static str>)> {
        vec![
            (
                Denial::Program("/usr/bin/curl".into()),
                vec!["/usr/bin/curl"],
            ),
            (Denial::Shell, vec!["shell", "exec"]),
            (Denial::ShellName("/bin/zsh".into()), vec!["/bin/zsh"]),
            (Denial::Cwd("/etc".into()), vec!["/etc"]),
            (
                Denial::CwdEscape {
                    cwd: "/work/../etc".into(),
                    granted: "/work".into(),
                },
                vec!["`/work/../etc`", "`/work`"],
            ),
            (Denial::EnvName("SECRET_TOKEN".into()), vec!["SECRET_TOKEN"]),
            (
                Denial::InjectionEnv("LD_PRELOAD".into()),
                vec!["LD_PRELOAD"],
            ),
            (
                Denial::PinMismatch("/usr/bin/git".into()),
                vec!["/usr/bin/git", "SHA-256"],
            ),
            (Denial::ForkComponent("evil.wasm".into()), vec!["evil.wasm"]),
            (Denial::ForkDir("/data/other".into()), vec!["/data/other"]),
            (
                Denial::ReadOnlyDir("/data/ro".into()),
                vec!["/data/ro", "read-only"],
            ),
            (
                Denial::ForkLimit {
                    limit: "max-buffer",
                    message: "worker limit max-buffer of 9 is above this guest's own (8)".into(),
                },
                vec!["max-buffer", "9", "(8)"],
            ),
            (
                Denial::InWorker {
                    pid: 4242,
                    component: "child.wasm".into(),
                    reason: "program `rm` is not allowed".into(),
                },
                vec!["child.wasm", "4242", "program `rm` is not allowed"],
            ),
            (Denial::File("/etc/shadow".into()), vec!["/etc/shadow"]),
            (
                Denial::ReadOnlyFile("/data/ro/out.txt".into()),
                vec!["/data/ro/out.txt"],
            ),
            (
                Denial::NotExported("/srv/private".into()),
                vec!["/srv/private"],
            ),
            (
                Denial::OnAgent {
                    agent: "agent-7".into(),
                    reason: "at capacity".into(),
                },
                vec!["agent-7", "at capacity"],
            ),
            (Denial::Uid(1001), vec!["user id 1001"]),
            (Denial::Gid(1002), vec!["group id 1002"]),
            (
                Denial::Limit {
                    limit: "max_timeout",
                    message: "timeout of 10 s is above the maximum of 5 s".into(),
                },
                vec!["10 s", "5 s"],
            ),
        ]
    }

    #[test]
    fn each_denial_names_what_it_denies() {
        for (denial, words) in every_denial() {
            let message = denial.to_string();
            for word in words {
                assert!(
                    message.contains(word),
                    "{denial:?}: {message:?} lacks {word:?}"
                );
            }
        }
    }

    #[test]
    fn a_limit_and_a_fork_limit_show_their_message_as_it_is() {
        let message = "max-live-children of 99 is more than this guest has free (3)";
        let limit = Denial::Limit {
            limit: "max_live_children",
            message: message.into(),
        };
        let fork = Denial::ForkLimit {
            limit: "max-live-children",
            message: message.into(),
        };
        assert_eq!(limit.to_string(), message);
        assert_eq!(fork.to_string(), message);
    }

    #[test]
    fn only_a_limit_is_limit_exceeded_and_every_other_denial_access_denied() {
        for (denial, _) in every_denial() {
            let message = denial.to_string();
            let code = denial.to_error_code();
            assert_eq!(code.message(), message, "{denial:?}");
            match denial {
                Denial::Limit { .. } => assert_eq!(code, Failure::LimitExceeded(message)),
                // A worker asking for more than its parent holds is a grant
                // it lacks (`access-denied` in the WIT's `worker-limits`).
                _ => assert_eq!(code, Failure::AccessDenied(message), "{denial:?}"),
            }
        }
    }

    #[test]
    fn a_refusal_keeps_a_denial_apart_from_bad_input() {
        let denied = Refusal::from(Denial::Shell);
        assert!(
            matches!(denied, Refusal::Denied(Denial::Shell)),
            "{denied:?}"
        );
        let bad = Failure::InvalidArgument("bad".into());
        let invalid = Refusal::from(bad.clone());
        assert!(
            matches!(invalid, Refusal::Invalid(ref f) if *f == bad),
            "{invalid:?}"
        );
    }
}
