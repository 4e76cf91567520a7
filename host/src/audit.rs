//! The audit log: one JSON object a line for every child started (`exec`,
//! `spawn`, `fork`), every denial and every exit, also sent as `tracing`
//! events (target `wasmproc::audit`).
//!
//! Fields: `time` (Unix milliseconds), `event`, and per event:
//! - `exec`/`spawn`/`fork`: `pid`, `program` (resolved path), `argv`,
//!   `cwd` (host path), `env` (names only, never values), `confinement`,
//!   `rlimits`;
//! - `exit`: `pid`, `status` (`exited(N)`, `signaled(N)`, or `killed`
//!   when the host killed a child nobody waited for), `duration_ms`;
//! - `denied`: `reason`.
//!
//! Events of a forked worker's guest (its children, exits and denials) are
//! sent up to the forking host over a pipe and written here too, with a
//! `worker` field (`pid`, `component`) naming the worker: a guest cannot
//! hide what it does behind a worker.

use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where audit events go. Cloning shares the destination.
#[derive(Clone)]
pub struct AuditLog {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Appends events to the file at `path` (created if missing).
    pub fn to_file(path: impl AsRef<Path>) -> std::io::Result<AuditLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(AuditLog::new(file))
    }

    /// Writes events to `out`.
    pub fn new(out: impl Write + Send + 'static) -> AuditLog {
        AuditLog {
            out: Arc::new(Mutex::new(Box::new(out))),
        }
    }

    /// Writes an event line a forked worker's host process sent up, tagged
    /// with `worker`. A line its own worker sent up to it keeps that
    /// worker's tag, and `via` lists the workers it passed through,
    /// outermost first.
    pub(crate) fn forward(&self, mut line: Value, worker: &Value) {
        if let Some(fields) = line.as_object_mut() {
            // An event of a worker's worker keeps its own worker, under the
            // chain of workers it came up through (outermost first).
            let inner = fields.insert("worker".to_owned(), worker.clone());
            if let Some(inner) = inner {
                let mut via = match fields.remove("via") {
                    Some(Value::Array(via)) => via,
                    _ => Vec::new(),
                };
                via.insert(0, worker.clone());
                fields.insert("worker".to_owned(), inner);
                fields.insert("via".to_owned(), Value::Array(via));
            }
        }
        tracing::info!(target: "wasmproc::audit", "{line}");
        self.write(&line);
    }

    fn write(&self, line: &Value) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Records `event` with its `fields` (a JSON object).
    pub(crate) fn record(&self, event: &str, fields: Value) {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut line = json!({ "time": time as u64, "event": event });
        if let (Some(line), Value::Object(fields)) = (line.as_object_mut(), fields) {
            line.extend(fields);
        }
        tracing::info!(target: "wasmproc::audit", "{line}");
        self.write(&line);
    }
}
