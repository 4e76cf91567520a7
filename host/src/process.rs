//! Starting a [`Prepared`] command as the leader of its own process group,
//! and the guard that kills the group.

use crate::ProcessCtx;
use crate::audit::AuditLog;
use crate::bindings::types::{Confinement, ErrorCode, ExitStatus};
use crate::policy::{Denial, Prepared};
use rustix::process::{Pid, Signal, kill_process_group};
use serde_json::json;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::process::{Child, Command};

/// A started child: the leader of its own process group.
pub(crate) struct Launched {
    pub child: Child,
    pub group: GroupGuard,
    /// How the child is confined.
    pub confinement: Confinement,
}

/// Owns a child's process group: dropping it kills every process left in
/// the group with SIGKILL and gives back the child's slot in the live-child
/// limit. (tokio reaps the leader in the background if nobody waited.)
pub(crate) struct GroupGuard {
    pgid: Pid,
    live: Arc<AtomicUsize>,
    audit: Option<AuditLog>,
    started: Instant,
    status: OnceLock<ExitStatus>,
    /// The group was killed while the leader was still unreaped: nothing
    /// left to do on drop.
    killed: bool,
}

impl GroupGuard {
    /// Sends `signal` to every process of the group. A group that is
    /// already gone is not an error.
    ///
    /// Once the leader has been reaped, its pid may be given to a new
    /// process (pids wrap around, at 32768 on some machines) — but only
    /// when no process is left in the group, since a group keeps its number
    /// in use. So if a process with the leader's pid exists then, it is
    /// someone else's, our group is empty, and nothing is sent.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        if self.status.get().is_some() && rustix::process::test_kill_process(self.pgid).is_ok() {
            return Ok(());
        }
        match kill_process_group(self.pgid, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Kills the group now, before the leader is reaped (the caller reaps
    /// it next), so that dropping the guard later sends nothing.
    pub fn kill_before_reaping(&mut self) {
        if let Err(e) = self.signal(Signal::KILL) {
            tracing::error!(pgid = self.pid(), error = %e, "cannot kill process group");
        }
        self.killed = true;
    }

    /// Notes that the leader has been reaped, and how it ended (for
    /// [`signal`](Self::signal) and the audit log).
    pub fn exited(&self, status: ExitStatus) {
        let _ = self.status.set(status);
    }

    /// The process group id, which is the leader's pid.
    pub fn pid(&self) -> u32 {
        self.pgid.as_raw_nonzero().get().unsigned_abs()
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !self.killed
            && let Err(e) = self.signal(Signal::KILL)
        {
            tracing::error!(pgid = self.pid(), error = %e, "cannot kill process group");
        }
        self.live.fetch_sub(1, Ordering::AcqRel);
        if let Some(audit) = &self.audit {
            let status = self.status.get().map_or("killed".to_owned(), status_text);
            let duration_ms = self.started.elapsed().as_millis() as u64;
            audit.record(
                "exit",
                json!({ "pid": self.pid(), "status": status, "duration_ms": duration_ms }),
            );
        }
    }
}

/// `exited(N)` or `signaled(N)`.
pub(crate) fn status_text(status: &ExitStatus) -> String {
    match status {
        ExitStatus::Exited(code) => format!("exited({code})"),
        ExitStatus::Signaled(signal) => format!("signaled({signal})"),
    }
}

impl ProcessCtx {
    /// Starts `prepared` with the given stdio, counting it against the
    /// live-child and total-spawn limits.
    pub(crate) fn launch(
        &mut self,
        kind: &'static str,
        prepared: &Prepared,
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<Launched, ErrorCode> {
        let live = self.live_children.load(Ordering::Acquire);
        if live >= self.limits.max_live_children {
            return Err(self.deny(Denial::Limit {
                limit: "max_live_children",
                message: format!("{live} children are alive, the most allowed at once"),
            }));
        }
        if let Some(max) = self.limits.max_total_spawns
            && self.total_spawns >= max
        {
            return Err(self.deny(Denial::Limit {
                limit: "max_total_spawns",
                message: format!("{max} children were started, the most allowed"),
            }));
        }
        let landlock = match (prepared.confine, &self.confiner.ruleset) {
            (true, Some(fd)) => Some(fd.as_fd()),
            _ => None,
        };
        if prepared.confine && self.require_confinement && self.confiner.level != Confinement::Full
        {
            return Err(ErrorCode::Unsupported(format!(
                "children must be fully confined, but this kernel allows only {:?} confinement",
                self.confiner.level
            )));
        }
        let mut cmd = Command::new(&prepared.program);
        cmd.arg0(&prepared.argv0)
            .args(&prepared.args)
            .env_clear()
            .envs(prepared.env.iter().map(|(k, v)| (k, v)))
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true);
        crate::sys::prepare_child(
            &mut cmd,
            prepared.cwd.as_ref(),
            &prepared.inherit_fds,
            landlock,
            &self.limits.rlimits.to_list(),
        );
        let child = cmd.spawn().map_err(|e| spawn_error(prepared, &e))?;
        let pid = child.id().and_then(|id| Pid::from_raw(id as i32));
        let Some(pgid) = pid else {
            return Err(ErrorCode::Io("the child has no pid".into()));
        };
        self.live_children.fetch_add(1, Ordering::AcqRel);
        self.total_spawns += 1;
        let confinement = if landlock.is_some() {
            self.confiner.level
        } else {
            Confinement::None
        };
        if let Some(audit) = &self.audit {
            audit.record(
                kind,
                json!({
                    "pid": pgid.as_raw_nonzero().get(),
                    "program": prepared.program,
                    "argv": std::iter::once(&prepared.argv0).chain(&prepared.args).collect::<Vec<_>>(),
                    "cwd": prepared.cwd_host,
                    "env": prepared.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                    "confinement": match confinement {
                        Confinement::Full => "full",
                        Confinement::Partial => "partial",
                        Confinement::None => "none",
                    },
                    "rlimits": self.limits.rlimits,
                }),
            );
        }
        tracing::debug!(
            target: "wasmproc::process",
            program = %prepared.program.display(),
            args = ?prepared.args,
            cwd = %prepared.cwd_host.display(),
            env = ?prepared.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            pid = pgid.as_raw_nonzero().get(),
            "started child"
        );
        Ok(Launched {
            confinement,
            child,
            group: GroupGuard {
                pgid,
                live: self.live_children.clone(),
                audit: self.audit.clone(),
                started: Instant::now(),
                status: OnceLock::new(),
                killed: false,
            },
        })
    }
}

fn spawn_error(prepared: &Prepared, err: &io::Error) -> ErrorCode {
    let program = prepared.program.display();
    match err.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
        Some(rustix::io::Errno::NOENT) => {
            ErrorCode::NotFound(format!("program {program} does not exist"))
        }
        Some(rustix::io::Errno::ACCESS) => {
            ErrorCode::AccessDenied(format!("the OS refused to execute {program}"))
        }
        Some(rustix::io::Errno::TOOBIG) => ErrorCode::LimitExceeded(format!(
            "arguments and environment of {program} are too large for the OS"
        )),
        Some(rustix::io::Errno::NOEXEC) => {
            ErrorCode::InvalidArgument(format!("{program} is not in an executable format"))
        }
        _ => ErrorCode::from_io(format_args!("starting {program}"), err),
    }
}

/// The signal numbered `n`, or `invalid-argument`.
pub(crate) fn signal(n: u8) -> Result<Signal, ErrorCode> {
    Signal::from_named_raw(i32::from(n))
        .ok_or_else(|| ErrorCode::InvalidArgument(format!("{n} is not a signal number")))
}

/// The WIT exit status of a finished process.
pub(crate) fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        // Exit codes are 0..=255 on Unix; `as u8` keeps the low byte as wait(2) does.
        (Some(code), _) => ExitStatus::Exited(code as u8),
        (None, Some(sig)) => ExitStatus::Signaled(sig as u8),
        (None, None) => unreachable!("a finished Unix process has an exit code or a signal"),
    }
}
