//! Rust bindings for guest components that use the `wasmproc:process` WIT
//! package (`wasmproc:process@0.2.0`), for `wasm32-wasip2` command
//! components. They are generated for the world `wasmproc:process/worker`
//! (everything of `guest`, plus the `parent` channel of forked workers) and
//! `wasi:cli/exit`; a component imports only what it uses.
//!
//! Two layers:
//!
//! - [`process`]: the idiomatic one, modelled on `std::process` —
//!   [`Command`], [`Stdio`] (pipes, files, another child's output),
//!   [`Child`](process::Child) with `Read`/`Write` streams and an
//!   [`ExitStatus`] that also tells a deadline, resource usage and a
//!   worker's trap, [`process::exec`] through a granted shell, and
//!   [`process::fork`] returning a [`Worker`](process::Worker) with
//!   `send`/`recv`; errors are a [`process::Error`] carrying the WIT
//!   `error-code`.
//! - the generated bindings, re-exported as [`exec`], [`spawn`], [`fork`],
//!   [`parent`], [`types`] and [`io`] (wasi:io streams and poll).
//!
//! And [`exit`], to end the guest with an exit code of its own.
//!
//! ```ignore
//! use wasmproc_guest::{Command, Stdio};
//! let mut child = Command::new("sort").arg("-n").current_dir("data").env("K", "V")
//!     .stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
//! let out = Command::new("wc").arg("-l").output()?;
//!
//! // or the generated bindings directly (`spawn` and `fork` take their
//! // options by value: a `stdio` may hold a stream):
//! use wasmproc_guest::exec::{exec_file, ExecOptions};
//! let out = exec_file("sort", &["-n".into()], &ExecOptions::default())?;
//! ```

wit_bindgen::generate!({
    // The `worker` world, plus `wasi:cli/exit` for [`exit`].
    inline: "
        package wasmproc:guest-bindings;
        world bindings {
            include wasmproc:process/worker@0.2.0;
            import wasi:cli/exit@0.2.12;
        }
    ",
    path: "../../wit",
    world: "wasmproc:guest-bindings/bindings",
    generate_all,
});

pub use wasi::io;
pub use wasmproc::process::{exec, fork, parent, spawn, types};

pub mod process;
pub use process::{Command, Error, ExitStatus, Stdio};

/// Ends the guest with exit code `code`, after flushing Rust's stdout and
/// stderr (`wasi:cli/exit.exit-with-code`). A forked worker's parent then
/// sees `exited(code)`; a guest run by `wasmproc run` exits with `code`.
///
/// `std::process::exit` cannot do this on `wasm32-wasip2`: wasi-libc
/// reports any code but 0 as 1.
pub fn exit(code: u8) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    wasi::cli::exit::exit_with_code(code);
    // exit-with-code does not return.
    std::process::abort()
}

use std::fmt;
use types::ErrorCode;

impl Default for exec::ExecOptions {
    /// No cwd (the first granted directory), no environment, the host's
    /// timeout and buffer defaults, SIGTERM on timeout (SIGKILL after the
    /// host's grace), stdin `/dev/null`,
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
            placement: fork::Placement::Local,
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

impl types::ExitStatus {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        matches!(self, types::ExitStatus::Exited(0))
    }

    /// The exit code, if the process exited (rather than being signaled).
    pub fn code(&self) -> Option<i32> {
        match self {
            types::ExitStatus::Exited(c) => Some(i32::from(*c)),
            types::ExitStatus::Signaled(_) => None,
        }
    }

    /// The signal that terminated the process, if one did.
    pub fn signal(&self) -> Option<i32> {
        match self {
            types::ExitStatus::Signaled(s) => Some(i32::from(*s)),
            types::ExitStatus::Exited(_) => None,
        }
    }
}

impl types::ResourceUsage {
    /// CPU time spent in user mode.
    pub fn user_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.user_cpu_ns)
    }

    /// CPU time spent in the kernel.
    pub fn system_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.system_cpu_ns)
    }
}

impl fmt::Display for types::ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            types::ExitStatus::Exited(c) => write!(f, "exited({c})"),
            types::ExitStatus::Signaled(s) => write!(f, "signaled({s})"),
        }
    }
}
