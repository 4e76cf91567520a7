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
//! Every event also carries the fields given with
//! [`AuditLog::with_context`] (the CLI gives a `run` id and the `guest`'s
//! path, so that runs sharing one log can be told apart).
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
    /// Fields every event gets (see [`AuditLog::with_context`]).
    context: Option<Arc<serde_json::Map<String, Value>>>,
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
            context: None,
        }
    }

    /// Adds `fields` (a JSON object; anything else is ignored) to every
    /// event written through this log and its clones: for example the
    /// `run` and the `guest` an event belongs to, when several runs share
    /// one file. An event's own fields keep their values.
    pub fn with_context(mut self, fields: Value) -> AuditLog {
        if let Value::Object(fields) = fields {
            self.context = Some(Arc::new(fields));
        }
        self
    }

    /// Adds the context's fields to `line`: those it does not have, or
    /// (`over`) all of them, over what it says.
    fn add_context(&self, line: &mut serde_json::Map<String, Value>, over: bool) {
        for (name, value) in self.context.iter().flat_map(|c| c.iter()) {
            if over || !line.contains_key(name) {
                line.insert(name.clone(), value.clone());
            }
        }
    }

    /// Writes an event line a forked worker's host process sent up, tagged
    /// with `worker`. A line its own worker sent up to it keeps that
    /// worker's tag, and `via` lists the workers it passed through,
    /// outermost first.
    pub(crate) fn forward(&self, mut line: Value, worker: &Value) {
        // What is not an event object is kept, wrapped and tagged: nothing a
        // worker sends up escapes its worker tag.
        if !line.is_object() {
            line = serde_json::json!({ "event": "worker-report", "report": line });
        }
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
            // A worker cannot pose as another run or guest.
            self.add_context(fields, true);
        }
        tracing::info!(target: "wasmproc::audit", "{line}");
        self.write(&line);
    }

    fn write(&self, line: &Value) {
        // One write a line: lines stay whole in a pipe two writers share
        // (a worker and the host's launcher of its children).
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = out.write_all(&bytes).and_then(|()| out.flush()) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Records `event` with its `fields` (a JSON object).
    pub(crate) fn record(&self, event: &str, fields: Value) {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        // The event's own time and name win over a field of the same name.
        let mut line = match fields {
            Value::Object(fields) => fields,
            _ => serde_json::Map::new(),
        };
        line.insert("time".to_owned(), json!(time as u64));
        line.insert("event".to_owned(), json!(event));
        self.add_context(&mut line, false);
        let line = Value::Object(line);
        tracing::info!(target: "wasmproc::audit", "{line}");
        self.write(&line);
    }
}

/// An audit log's destination that tests read back.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A destination that can be read back after the log wrote to it.
    #[derive(Clone, Default)]
    pub(crate) struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        /// Each line written, parsed; every line must end with a newline.
        pub(crate) fn lines(&self) -> Vec<Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
            text.lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Sink;
    use super::*;

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    #[test]
    fn each_event_is_one_json_line_with_its_time_its_name_and_its_fields() {
        let sink = Sink::default();
        let log = AuditLog::new(sink.clone());
        let before = now_ms();
        log.record(
            "exec",
            json!({
                "pid": 42,
                "program": "/usr/bin/printf",
                // A newline in an argument cannot split the event's line.
                "argv": ["printf", "a\nb"],
                "cwd": "/srv",
                "env": ["PATH"],
            }),
        );
        log.record(
            "exit",
            json!({ "pid": 42, "status": "exited(0)", "duration_ms": 3 }),
        );
        log.record("denied", json!({ "reason": "not granted" }));
        let after = now_ms();

        let lines = sink.lines();
        assert_eq!(lines.len(), 3);
        for line in &lines {
            let time = line["time"].as_u64().expect("time is Unix milliseconds");
            assert!(
                (before..=after).contains(&time),
                "{time} not in {before}..={after}"
            );
        }
        assert_eq!(lines[0]["event"], "exec");
        assert_eq!(lines[0]["pid"], 42);
        assert_eq!(lines[0]["program"], "/usr/bin/printf");
        assert_eq!(lines[0]["argv"], json!(["printf", "a\nb"]));
        assert_eq!(lines[0]["cwd"], "/srv");
        assert_eq!(lines[0]["env"], json!(["PATH"]));
        assert_eq!(lines[1]["event"], "exit");
        assert_eq!(lines[1]["status"], "exited(0)");
        assert_eq!(lines[1]["duration_ms"], 3);
        assert_eq!(lines[2]["event"], "denied");
        assert_eq!(lines[2]["reason"], "not granted");
        assert_eq!(lines[2].as_object().unwrap().len(), 3, "{}", lines[2]);
    }

    #[test]
    fn every_event_carries_the_context_and_an_events_own_fields_win() {
        let sink = Sink::default();
        let log =
            AuditLog::new(sink.clone()).with_context(json!({ "run": "r1", "guest": "/g.wasm" }));
        // A field named like the header never overwrites it.
        log.record("exec", json!({ "pid": 42, "event": "forged", "time": 0 }));
        // A worker's line saying another run is given this one's.
        log.clone().forward(
            json!({ "event": "exit", "pid": 7, "run": "forged" }),
            &json!({ "pid": 9 }),
        );
        let lines = sink.lines();
        assert_eq!(lines[0]["event"], "exec");
        assert_ne!(lines[0]["time"], 0);
        assert_eq!(lines[0]["pid"], 42);
        for line in &lines {
            assert_eq!(line["run"], "r1", "{line}");
            assert_eq!(line["guest"], "/g.wasm", "{line}");
        }
        assert_eq!(lines[1]["pid"], 7);
    }

    #[test]
    fn fields_that_are_not_an_object_are_left_out_of_the_event() {
        let sink = Sink::default();
        AuditLog::new(sink.clone()).record("exit", json!(["not", "an", "object"]));
        let lines = sink.lines();
        assert_eq!(lines.len(), 1);
        let fields: Vec<&String> = lines[0].as_object().unwrap().keys().collect();
        assert_eq!(fields, ["event", "time"]);
    }

    #[test]
    fn clones_of_a_log_write_whole_lines_to_the_same_place() {
        let sink = Sink::default();
        let log = AuditLog::new(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        log.record("spawn", json!({ "pid": t * 1000 + i }));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut pids: Vec<u64> = sink
            .lines()
            .iter()
            .map(|l| l["pid"].as_u64().unwrap())
            .collect();
        pids.sort();
        let want: Vec<u64> = (0..4)
            .flat_map(|t| (0..50).map(move |i| t * 1000 + i))
            .collect();
        assert_eq!(pids, want);
    }

    #[test]
    fn the_log_file_is_appended_to_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        AuditLog::to_file(&path)
            .unwrap()
            .record("exec", json!({ "pid": 1 }));
        AuditLog::to_file(&path)
            .unwrap()
            .record("exit", json!({ "pid": 1 }));
        let text = std::fs::read_to_string(&path).unwrap();
        let events: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].to_string())
            .collect();
        assert_eq!(events, ["\"exec\"", "\"exit\""]);
    }

    #[test]
    fn a_forwarded_event_is_tagged_with_the_worker_that_sent_it_up() {
        let sink = Sink::default();
        let log = AuditLog::new(sink.clone());
        let worker = json!({ "pid": 7, "component": "/srv/worker.wasm" });
        let line = json!({ "time": 5, "event": "exec", "pid": 8, "program": "/bin/true" });
        log.forward(line.clone(), &worker);

        let mut want = line;
        want["worker"] = worker;
        assert_eq!(
            sink.lines(),
            [want],
            "the line is kept as sent, plus its worker"
        );
    }

    #[test]
    fn a_forwarded_line_that_is_no_event_is_kept_wrapped_and_tagged() {
        let sink = Sink::default();
        let log = AuditLog::new(sink.clone());
        let worker = json!({ "pid": 7, "component": "/srv/worker.wasm" });
        for line in [json!("free text"), json!([1, 2]), json!(42)] {
            log.forward(line.clone(), &worker);
            let got = sink.lines().pop().unwrap();
            let want = json!({ "event": "worker-report", "report": line, "worker": worker });
            assert_eq!(got, want, "nothing escapes the worker tag");
        }
    }

    #[test]
    fn an_event_of_a_worker_s_worker_keeps_its_worker_and_lists_the_chain_outermost_first() {
        let tag = |pid: u32| json!({ "pid": pid, "component": format!("/c{pid}.wasm") });
        // Worker 3 was forked by worker 2, forked by worker 1, forked by
        // the host: each host process forwards what its worker sent up.
        let in_3 = json!({ "time": 1, "event": "spawn", "pid": 99 });
        let in_2 = Sink::default();
        AuditLog::new(in_2.clone()).forward(in_3.clone(), &tag(3));
        let in_1 = Sink::default();
        AuditLog::new(in_1.clone()).forward(in_2.lines().remove(0), &tag(2));
        let top = Sink::default();
        AuditLog::new(top.clone()).forward(in_1.lines().remove(0), &tag(1));

        let line = top.lines().remove(0);
        assert_eq!(line["worker"], tag(3), "the worker whose guest did it");
        assert_eq!(line["via"], json!([tag(1), tag(2)]));
        assert_eq!(line["event"], "spawn");
        assert_eq!(line["pid"], 99);
        assert_eq!(in_1.lines()[0]["via"], json!([tag(2)]));
    }
}
