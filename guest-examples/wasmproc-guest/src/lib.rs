//! Rust bindings for guest components that use the `wasmproc:process` WIT
//! package, for `wasm32-wasip2` command components. They are generated for
//! the world `wasmproc:process/worker` (everything of `guest`, plus the
//! `parent` channel of forked workers); a component imports only what it
//! uses.
//!
//! ```ignore
//! use wasmproc_guest::exec::{exec_file, ExecOptions};
//! let out = exec_file("sort", &["-n".into()], &ExecOptions::default())?;
//! ```

wit_bindgen::generate!({
    path: "../../wit",
    world: "wasmproc:process/worker",
    generate_all,
});

pub use wasi::io;
pub use wasmproc::process::{exec, fork, parent, spawn, types};

use std::fmt;
use types::{ErrorCode, ExitStatus};

impl Default for exec::ExecOptions {
    /// No cwd (the first granted directory), no environment, the host's
    /// timeout and buffer defaults, SIGKILL on timeout, stdin `/dev/null`.
    fn default() -> Self {
        exec::ExecOptions {
            cwd: None,
            env: Vec::new(),
            timeout_ms: None,
            kill_signal: None,
            max_buffer: None,
            stdin: None,
        }
    }
}

impl ErrorCode {
    /// The WIT name of the case, such as `access-denied`.
    pub fn code(&self) -> &'static str {
        match self {
            ErrorCode::AccessDenied(_) => "access-denied",
            ErrorCode::NotFound(_) => "not-found",
            ErrorCode::InvalidArgument(_) => "invalid-argument",
            ErrorCode::LimitExceeded(_) => "limit-exceeded",
            ErrorCode::TimedOut => "timed-out",
            ErrorCode::Closed => "closed",
            ErrorCode::Unsupported(_) => "unsupported",
            ErrorCode::Io(_) => "io",
        }
    }

    /// The host's message naming what was denied or wrong (empty for the
    /// cases without one).
    pub fn message(&self) -> &str {
        match self {
            ErrorCode::AccessDenied(m)
            | ErrorCode::NotFound(m)
            | ErrorCode::InvalidArgument(m)
            | ErrorCode::LimitExceeded(m)
            | ErrorCode::Unsupported(m)
            | ErrorCode::Io(m) => m,
            ErrorCode::TimedOut | ErrorCode::Closed => "",
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exited({c})"),
            ExitStatus::Signaled(s) => write!(f, "signaled({s})"),
        }
    }
}
