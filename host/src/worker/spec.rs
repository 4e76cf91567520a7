//! What passes between a host and its worker processes, below the
//! context: the worker's specification (and the descriptors it names),
//! the template's requests and replies, and the reports a worker sends up.

use serde::{Deserialize, Serialize};
use std::os::fd::RawFd;
use std::path::PathBuf;

/// Host environment variables a worker process gets from its parent host
/// (never seen by the worker's guest or its children): how to log. Not
/// where the component cache lives: a worker never opens it (see
/// [`crate::code`]).
pub const HOST_ENV: &[&str] = &["WASMPROC_LOG"];

/// The worker's capabilities and guest, as sent by the parent host. Its
/// descriptors come with it (`SCM_RIGHTS`), not by inheritance, so that a
/// worker process can be started before anyone knows what it will hold
/// (a warm worker): every descriptor field here is an index into them.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerSpec {
    /// The component to run (absolute path, granted to the parent).
    pub component: PathBuf,
    /// Its arguments after `argv[0]` (the component's file name).
    pub args: Vec<String>,
    /// Its own environment (wasi:cli/environment).
    pub env: Vec<(String, String)>,
    /// Directories it holds, passed as open descriptors.
    pub dirs: Vec<WorkerDir>,
    /// Everything else it may do: its parent's policy, narrowed to what the
    /// parent passed on (see `fork-options`), whole.
    pub policy: crate::policy::Policy,
    /// The pipe its audit events and denials go up to the parent host
    /// through (see [`crate::audit::AuditLog`]).
    #[serde(default)]
    pub report_fd: Option<RawFd>,
    /// Its stdout and stderr.
    #[serde(default)]
    pub stdio: Option<(RawFd, RawFd)>,
    /// The launcher of the worker's children (see `launch::remote`), if
    /// it may start any.
    #[serde(default)]
    pub launch: Option<LaunchRef>,
    /// The compiled code of its component and of every component it may
    /// fork in turn, in sealed memfds (see [`crate::code`]).
    #[serde(default)]
    pub code: Vec<CodeRef>,
}

impl WorkerSpec {
    /// The specification of a worker running `component` with `args` and
    /// `env`, holding `dirs` and `policy`; its descriptors (stdio, reports,
    /// sandbox, code) are added as it is started.
    pub(crate) fn new(
        component: PathBuf,
        (args, env): (Vec<String>, Vec<(String, String)>),
        dirs: Vec<WorkerDir>,
        policy: crate::policy::Policy,
    ) -> WorkerSpec {
        WorkerSpec {
            component,
            args,
            env,
            dirs,
            policy,
            report_fd: None,
            stdio: None,
            launch: None,
            code: Vec::new(),
        }
    }
}

/// The launch socket of a worker, as its specification names it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LaunchRef {
    /// The socket.
    pub fd: RawFd,
    /// How the launcher confines the worker's children.
    pub level: crate::outcome::Confinement,
}

/// The compiled code of one component, as a worker gets it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CodeRef {
    /// The component (absolute path, as its fork grant names it).
    pub component: PathBuf,
    /// Its cache key, in hex: what a warm worker's preloaded code is
    /// matched by.
    pub key: String,
    /// The sealed memfd (an index, as every descriptor of the
    /// specification).
    pub fd: RawFd,
}

/// A directory a worker holds.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerDir {
    /// The guest path, the same as in the parent.
    pub guest_path: String,
    /// The host path, for logs only.
    pub host_path: PathBuf,
    /// The directory's descriptor (an index, as every descriptor of the
    /// specification).
    pub fd: RawFd,
    /// Whether the worker may only read it.
    pub read_only: bool,
}

/// What a host asks of its worker template: a new worker process on the
/// channel passed with the request (the first descriptor), started in the
/// cgroup passed second if `cgroup`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct TemplateRequest {
    #[serde(default)]
    pub cgroup: bool,
}

/// What a template tells its host: that it is ready (once, first), then for
/// each request the new worker's pid (its pidfd comes with it), or why
/// there is none (with the pidfd of a process that started but failed to
/// become a worker, if one did, for the host to reap).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum TemplateReply {
    Ready,
    Started { pid: i32 },
    Failed { error: String },
}

/// The forking host's end of a worker's report pipe: writes each event
/// line to the host's audit log and reports each denial, tagged with the
/// worker. A background task reads it as lines arrive; the host also
/// drains it when the worker has exited and when it drops the worker, so
/// none is lost when the host ends right after. (Reports keep their own
/// order; against the channel's messages they are not ordered: a draining
/// read per message would cost a third of the pipelined throughput.)
pub(crate) struct Reports {
    pipe: std::os::fd::OwnedFd,
    /// Bytes of an unfinished line.
    partial: Vec<u8>,
    worker: (u32, String),
    audit: Option<crate::audit::AuditLog>,
    reporter: Option<crate::policy::DenialReporter>,
    /// The trap of the worker's guest, if it reported one.
    pub trap: Option<String>,
    tee: Option<Tee>,
}

/// Also gets each report line of a worker, as it came (a cluster agent
/// sends them on to the forking host).
pub(crate) type Tee = Box<dyn Fn(&[u8]) + Send>;

/// Whole lines written into a worker's [`Reports`] as if it had sent them
/// up: how the host's launcher of the worker's children reports their
/// events (its `AuditLog` writes each line in one `write`).
pub(crate) struct ReportLines(pub std::sync::Arc<std::sync::Mutex<Reports>>);

impl std::io::Write for ReportLines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut reports = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            reports.handle(line);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Longest report line kept: a longer one is dropped (with a warning).
const MAX_REPORT_LINE: usize = 1 << 20;

impl Reports {
    /// Starts reading `pipe` (made non-blocking) in the background.
    pub(crate) fn start(
        pipe: std::os::fd::OwnedFd,
        worker: (u32, String),
        audit: Option<crate::audit::AuditLog>,
        reporter: Option<crate::policy::DenialReporter>,
        tee: Option<Tee>,
    ) -> std::io::Result<std::sync::Arc<std::sync::Mutex<Reports>>> {
        rustix::io::ioctl_fionbio(&pipe, true)?;
        let watched = crate::sys::watch(rustix::io::dup(&pipe)?, tokio::io::Interest::READABLE)?;
        let reports = std::sync::Arc::new(std::sync::Mutex::new(Reports {
            pipe,
            partial: Vec::new(),
            worker,
            audit,
            reporter,
            trap: None,
            tee,
        }));
        let shared = reports.clone();
        tokio::spawn(async move {
            while let Ok(mut ready) = watched.readable().await {
                let open = shared.lock().unwrap_or_else(|e| e.into_inner()).drain();
                if !open {
                    break;
                }
                ready.clear_ready();
            }
        });
        Ok(reports)
    }

    /// Handles every whole line in the pipe now, without waiting; returns
    /// whether the pipe is still open.
    pub(crate) fn drain(&mut self) -> bool {
        let mut chunk = [0u8; 16 << 10];
        let open = loop {
            match rustix::io::read(&self.pipe, &mut chunk) {
                Ok(0) => break false,
                Ok(n) => self.partial.extend_from_slice(&chunk[..n]),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => break true,
                Err(_) => break false,
            }
        };
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.handle(&line[..end]);
        }
        if self.partial.len() > MAX_REPORT_LINE {
            tracing::warn!(
                pid = self.worker.0,
                "a worker sent an over-long report line"
            );
            self.partial.clear();
        }
        open
    }

    /// Handles one report line (without its newline), as if read from the
    /// pipe.
    pub(crate) fn handle(&mut self, line: &[u8]) {
        if let Some(tee) = &self.tee {
            tee(line);
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
            tracing::warn!(pid = self.worker.0, "a worker sent a bad report line");
            return;
        };
        if let Some(trap) = value.get("trap").and_then(|t| t.as_str()) {
            self.trap = Some(trap.to_owned());
        } else if let Some(reason) = value.get("denied").and_then(|r| r.as_str()) {
            let denial = crate::policy::Denial::InWorker {
                pid: self.worker.0,
                component: self.worker.1.clone(),
                reason: reason.to_owned(),
            };
            tracing::warn!(target: "wasmproc::denied", %denial, "request denied");
            if let Some(reporter) = &self.reporter {
                reporter(&denial);
            }
        } else if let Some(audit) = &self.audit {
            let tag = serde_json::json!({ "pid": self.worker.0, "component": self.worker.1 });
            audit.forward(value, &tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::Sink;
    use std::io::Write;

    #[tokio::test]
    async fn the_launchers_lines_stay_whole_and_tagged_whatever_the_worker_half_wrote() {
        let sink = Sink::default();
        let audit = crate::audit::AuditLog::new(sink.clone());
        let (read, write) = rustix::pipe::pipe().unwrap();
        let reports = Reports::start(read, (7, "w.wasm".into()), Some(audit), None, None).unwrap();
        // The worker leaves half a line in its pipe, as if to swallow the
        // next one written there.
        let mut pipe = std::fs::File::from(write);
        pipe.write_all(b"{\"event\":\"forged\",\"x\":\"").unwrap();
        reports.lock().unwrap().drain();
        // The launcher's event does not go through that pipe.
        let mut lines = ReportLines(reports.clone());
        lines
            .write_all(b"{\"event\":\"spawn\",\"pid\":42}\n")
            .unwrap();
        let events = sink.lines();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["event"], "spawn");
        assert_eq!(events[0]["pid"], 42);
        assert_eq!(events[0]["worker"]["pid"], 7);
    }
}
