//! Rust bindings for guest components that use the `wasmproc:process` WIT
//! package, for `wasm32-wasip2` command components. They are generated for
//! the world `wasmproc:process/worker` (everything of `guest`, plus the
//! `parent` channel of forked workers); a component imports only what it
//! uses.
//!
//! Two layers:
//!
//! - [`process`]: the idiomatic one, modelled on `std::process` —
//!   [`Command`], [`Stdio`], [`Child`](process::Child) with `Read`/`Write`
//!   streams, [`process::exec`] through the granted shell, and
//!   [`process::fork`] returning a [`Worker`](process::Worker) with
//!   `send`/`recv`; errors are a [`process::Error`] carrying the WIT
//!   `error-code`.
//! - the generated bindings, re-exported as [`exec`], [`spawn`], [`fork`],
//!   [`parent`], [`types`] and [`io`] (wasi:io streams and poll).
//!
//! ```ignore
//! use wasmproc_guest::{Command, Stdio};
//! let mut child = Command::new("sort").arg("-n").current_dir("data").env("K", "V")
//!     .stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
//! let out = Command::new("wc").arg("-l").output()?;
//!
//! // or the generated bindings directly:
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

pub mod process;
pub use process::{Command, Error, Stdio};

use std::fmt;
use types::{ErrorCode, ExitStatus};

impl Default for exec::ExecOptions {
    /// No cwd (the first granted directory), no environment, the host's
    /// timeout and buffer defaults, SIGKILL on timeout, stdin `/dev/null`,
    /// the host's child user and group.
    fn default() -> Self {
        exec::ExecOptions {
            cwd: None,
            env: Vec::new(),
            timeout_ms: None,
            kill_signal: None,
            max_buffer: None,
            stdin: None,
            uid: None,
            gid: None,
            shell: None,
        }
    }
}

impl Default for spawn::SpawnOptions {
    /// No cwd (the first granted directory), no environment, stdin, stdout
    /// and stderr the guest's own (as `std::process::Command::spawn`), the
    /// host's child user and group, no deadline (SIGTERM if one is set).
    fn default() -> Self {
        spawn::SpawnOptions {
            cwd: None,
            env: Vec::new(),
            stdin: types::Stdio::Inherit,
            stdout: types::Stdio::Inherit,
            stderr: types::Stdio::Inherit,
            uid: None,
            gid: None,
            timeout_ms: None,
            kill_signal: None,
        }
    }
}

impl Default for fork::ForkOptions {
    /// Nothing passed on to the worker (no programs, directories or env
    /// names, no shell, no components to fork, empty environment); its
    /// stdout and stderr are the
    /// guest's own; its limits are the guest's; its children run as the
    /// host's child user and group.
    fn default() -> Self {
        fork::ForkOptions {
            programs: Vec::new(),
            dirs: Vec::new(),
            allow_env: Vec::new(),
            env: Vec::new(),
            shell: false,
            forks: Vec::new(),
            stdout: types::Stdio::Inherit,
            stderr: types::Stdio::Inherit,
            limits: fork::WorkerLimits::default(),
            uid: None,
            gid: None,
        }
    }
}

impl Default for fork::WorkerLimits {
    /// Every limit the forking guest's own.
    fn default() -> Self {
        fork::WorkerLimits {
            max_live_children: None,
            max_total_spawns: None,
            max_buffer: None,
            max_timeout_ms: None,
            cpu_seconds: None,
            address_space: None,
            open_files: None,
            processes: None,
            file_size: None,
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
            ErrorCode::TimedOut(_) => "timed-out",
            ErrorCode::Closed(_) => "closed",
            ErrorCode::Unsupported(_) => "unsupported",
            ErrorCode::Io(_) => "io",
        }
    }

    /// The host's message naming what was denied or wrong.
    pub fn message(&self) -> &str {
        match self {
            ErrorCode::AccessDenied(m)
            | ErrorCode::NotFound(m)
            | ErrorCode::InvalidArgument(m)
            | ErrorCode::LimitExceeded(m)
            | ErrorCode::TimedOut(m)
            | ErrorCode::Closed(m)
            | ErrorCode::Unsupported(m)
            | ErrorCode::Io(m) => m,
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
