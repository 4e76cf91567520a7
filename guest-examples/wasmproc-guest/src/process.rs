//! Processes the `std::process` way, on top of the `wasmproc:process`
//! bindings.
//!
//! ```ignore
//! use wasmproc_guest::process::{Command, Stdio};
//!
//! // Run to completion, output collected by the host (`exec-file`).
//! let out = Command::new("sort").arg("-n").current_dir("/data").output()?;
//! print!("{}", String::from_utf8_lossy(&out.stdout));
//!
//! // A running child with streamed stdio (`spawn`).
//! let mut child = Command::new("sort")
//!     .arg("-n")
//!     .env("LC_ALL", "C")
//!     .stdin(Stdio::piped())
//!     .stdout(Stdio::piped())
//!     .spawn()?;
//! child.stdin.take().unwrap().write_all(b"3\n1\n2\n")?; // dropped: EOF
//! let out = child.wait_with_output()?;
//!
//! // Through the granted shell (`exec`).
//! let out = wasmproc_guest::process::exec("ls | wc -l")?;
//!
//! // Another component in its own process, with a message channel (`fork`).
//! let worker = wasmproc_guest::process::fork("worker.wasm")?;
//! worker.send(b"job 1")?;
//! let reply = worker.recv()?; // `None` once the worker has gone
//! ```
//!
//! Every failure is an [`Error`] carrying the WIT `error-code` the host
//! returned ([`Error::code`]), so a guest can tell `access-denied` from
//! `not-found`; it converts into `std::io::Error` for `?` in functions that
//! return `io::Result`.
//!
//! Differences from `std::process`: programs are never looked up through a
//! `PATH` — the host matches the name against what it granted; children
//! start with an empty environment (every name set with [`Command::env`]
//! must be allowed by the host); the working directory is a guest path
//! inside a granted directory; [`Command::uid`] and [`Command::gid`] (as
//! `CommandExt`'s) take only the ids the host granted, and without them a
//! child runs as the host's child user, not as the guest's.

use crate::io::poll::Pollable;
use crate::io::streams::{InputStream, OutputStream, StreamError};
use crate::types::{self, ErrorCode};
use crate::{exec as wit_exec, fork as wit_fork, parent as wit_parent, spawn as wit_spawn};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

pub use crate::types::ExitStatus;

/// The result of a process operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed process operation: the WIT `error-code` and what was being
/// done.
#[derive(Debug, Clone)]
pub struct Error {
    code: ErrorCode,
    context: Option<String>,
}

impl Error {
    /// An error with `code` and no context.
    pub fn new(code: ErrorCode) -> Self {
        Error { code, context: None }
    }

    /// The same error, saying what was being done (`spawn sort`).
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// The WIT `error-code` value, with the host's message.
    pub fn code(&self) -> &ErrorCode {
        &self.code
    }

    /// The error-code's WIT case name, such as `access-denied`.
    pub fn name(&self) -> &'static str {
        self.code.code()
    }

    /// The host's message (empty for `timed-out` and `closed`).
    pub fn message(&self) -> &str {
        self.code.message()
    }

    /// Whether the host refused the request by policy.
    pub fn is_access_denied(&self) -> bool {
        matches!(self.code, ErrorCode::AccessDenied(_))
    }

    /// Turns the error of a wasi:io stream operation into an `io` error.
    fn stream(e: StreamError) -> Self {
        match e {
            StreamError::Closed => Error::new(ErrorCode::Closed("stream closed".into())),
            StreamError::LastOperationFailed(e) => Error::new(ErrorCode::Io(e.to_debug_string())),
        }
    }
}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Self {
        Error::new(code)
    }
}

impl fmt::Display for Error {
    /// `context: code: message`, such as
    /// `spawn cat: access-denied: program `cat` is not allowed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(context) = &self.context {
            write!(f, "{context}: ")?;
        }
        f.write_str(self.name())?;
        match self.message() {
            "" => Ok(()),
            m => write!(f, ": {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.code)
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        use std::io::ErrorKind;
        let kind = match e.code {
            ErrorCode::AccessDenied(_) => ErrorKind::PermissionDenied,
            ErrorCode::NotFound(_) => ErrorKind::NotFound,
            ErrorCode::InvalidArgument(_) => ErrorKind::InvalidInput,
            ErrorCode::LimitExceeded(_) => ErrorKind::QuotaExceeded,
            ErrorCode::TimedOut(_) => ErrorKind::TimedOut,
            ErrorCode::Closed(_) => ErrorKind::BrokenPipe,
            ErrorCode::Unsupported(_) => ErrorKind::Unsupported,
            ErrorCode::Io(_) => ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

impl ExitStatus {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited(0))
    }

    /// The exit code, if the process exited (rather than being signaled).
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(c) => Some(i32::from(*c)),
            ExitStatus::Signaled(_) => None,
        }
    }

    /// The signal that terminated the process, if one did.
    pub fn signal(&self) -> Option<i32> {
        match self {
            ExitStatus::Signaled(s) => Some(i32::from(*s)),
            ExitStatus::Exited(_) => None,
        }
    }
}

/// Where a child's standard stream goes.
#[derive(Debug)]
pub struct Stdio(types::Stdio);

impl Stdio {
    /// A pipe the guest reads or writes ([`Child::stdout`] and friends).
    pub fn piped() -> Self {
        Stdio(types::Stdio::Piped)
    }
    /// The guest's own stream.
    pub fn inherit() -> Self {
        Stdio(types::Stdio::Inherit)
    }
    /// `/dev/null`.
    pub fn null() -> Self {
        Stdio(types::Stdio::Null)
    }
}

/// A process builder, as `std::process::Command`.
#[derive(Debug)]
pub struct Command {
    program: String,
    args: Vec<String>,
    cwd: Option<String>,
    env: Vec<(String, String)>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    input: Option<Vec<u8>>,
    timeout: Option<Duration>,
    max_buffer: Option<u64>,
    uid: Option<u32>,
    gid: Option<u32>,
}

impl Command {
    /// A command for `program`: a name or absolute path the host granted.
    pub fn new(program: impl Into<String>) -> Self {
        Command {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            stdin: None,
            stdout: None,
            stderr: None,
            input: None,
            timeout: None,
            max_buffer: None,
            uid: None,
            gid: None,
        }
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The working directory: a guest path inside a granted directory
    /// (absolute, or relative to the first one). Default: the first granted
    /// directory.
    pub fn current_dir(&mut self, dir: impl Into<String>) -> &mut Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets an environment variable of the child (its name must be allowed
    /// by the host). Children start with an empty environment.
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets several environment variables.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env.extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The child's stdin. Default: inherit for [`spawn`](Self::spawn),
    /// `/dev/null` (or [`input`](Self::input)) for [`output`](Self::output).
    pub fn stdin(&mut self, cfg: Stdio) -> &mut Self {
        self.stdin = Some(cfg);
        self
    }

    /// The child's stdout. Default: inherit for [`spawn`](Self::spawn);
    /// [`output`](Self::output) always collects it.
    pub fn stdout(&mut self, cfg: Stdio) -> &mut Self {
        self.stdout = Some(cfg);
        self
    }

    /// The child's stderr. Default: inherit for [`spawn`](Self::spawn);
    /// [`output`](Self::output) always collects it.
    pub fn stderr(&mut self, cfg: Stdio) -> &mut Self {
        self.stderr = Some(cfg);
        self
    }

    /// Bytes [`output`](Self::output) writes to the child's stdin before
    /// closing it.
    pub fn input(&mut self, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.input = Some(bytes.into());
        self
    }

    /// For [`output`](Self::output): kill the child's process group after
    /// `timeout` ([`Output::timed_out`] tells). Default: the host's.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = Some(timeout);
        self
    }

    /// For [`output`](Self::output): the most bytes kept per stream.
    pub fn max_buffer(&mut self, bytes: u64) -> &mut Self {
        self.max_buffer = Some(bytes);
        self
    }

    /// The user id the child runs as, as `std::os::unix::process::CommandExt::uid`.
    /// It must be the host's child user or one it granted (`--allow-uid`),
    /// or the child is refused with `access-denied`; only a host running as
    /// root can change it (`unsupported` otherwise). Default: the host's
    /// child user.
    pub fn uid(&mut self, id: u32) -> &mut Self {
        self.uid = Some(id);
        self
    }

    /// The group id the child runs as, as `std::os::unix::process::CommandExt::gid`
    /// (granted with `--allow-gid`; otherwise as for [`uid`](Self::uid)).
    /// Default: the host's child group.
    pub fn gid(&mut self, id: u32) -> &mut Self {
        self.gid = Some(id);
        self
    }

    /// The program, as given to [`new`](Self::new).
    pub fn get_program(&self) -> &str {
        &self.program
    }

    /// The arguments.
    pub fn get_args(&self) -> impl Iterator<Item = &str> {
        self.args.iter().map(String::as_str)
    }

    fn exec_options(&self) -> wit_exec::ExecOptions {
        wit_exec::ExecOptions {
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            timeout_ms: self.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            kill_signal: None,
            max_buffer: self.max_buffer,
            stdin: self.input.clone(),
            uid: self.uid,
            gid: self.gid,
            shell: None,
        }
    }

    /// Starts the child (`spawn`); stdio not configured is inherited.
    pub fn spawn(&mut self) -> Result<Child> {
        let take = |s: &mut Option<Stdio>| s.take().map_or(types::Stdio::Inherit, |s| s.0);
        let options = wit_spawn::SpawnOptions {
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            stdin: take(&mut self.stdin),
            stdout: take(&mut self.stdout),
            stderr: take(&mut self.stderr),
            uid: self.uid,
            gid: self.gid,
            timeout_ms: None,
            kill_signal: None,
        };
        let child = wit_spawn::spawn(&self.program, &self.args, options)
            .map_err(|e| Error::new(e).context(format!("spawn {}", self.program)))?;
        Ok(Child::new(child))
    }

    /// Runs the child to completion and collects its stdout and stderr
    /// (`exec-file`: the host buffers them, up to `max-buffer` bytes).
    pub fn output(&mut self) -> Result<Output> {
        wit_exec::exec_file(&self.program, &self.args, &self.exec_options())
            .map(Output::from)
            .map_err(|e| Error::new(e).context(format!("run {}", self.program)))
    }

    /// Runs the child to completion with inherited stdio and returns how it
    /// ended.
    pub fn status(&mut self) -> Result<ExitStatus> {
        let mut child = self.spawn()?;
        child.wait()
    }
}

/// Runs `command` through the shell the host granted (`SHELL -c command`)
/// and collects its output.
pub fn exec(command: &str) -> Result<Output> {
    exec_with(command, &Command::new("sh"))
}

/// As [`exec`], with the working directory, environment, input, timeout,
/// buffer size, user and group of `options` (its program and arguments are
/// ignored).
pub fn exec_with(command: &str, options: &Command) -> Result<Output> {
    wit_exec::exec(command, &options.exec_options())
        .map(Output::from)
        .map_err(|e| Error::new(e).context(format!("exec {command:?}")))
}

/// A finished child's status and collected output.
#[derive(Debug, Clone)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it wrote to stdout (up to the buffer size).
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr (up to the buffer size).
    pub stderr: Vec<u8>,
    /// The OS process id it had (0 if unknown).
    pub pid: u32,
    /// The timeout expired and its process group was killed.
    pub timed_out: bool,
    /// An output stream exceeded the buffer size and was truncated.
    pub truncated: bool,
}

impl From<wit_exec::ExecOutput> for Output {
    fn from(o: wit_exec::ExecOutput) -> Self {
        Output {
            status: o.status,
            stdout: o.stdout,
            stderr: o.stderr,
            pid: o.pid,
            timed_out: o.timed_out,
            truncated: o.stdout_truncated || o.stderr_truncated,
        }
    }
}

/// A running (or finished) child process, as `std::process::Child`.
///
/// Dropping it (with its streams) kills the child's whole process group.
/// The streams keep the underlying resource alive, so they may outlive the
/// `Child` value.
pub struct Child {
    /// The write end of a piped stdin.
    pub stdin: Option<ChildStdin>,
    /// The read end of a piped stdout.
    pub stdout: Option<ChildStdout>,
    /// The read end of a piped stderr.
    pub stderr: Option<ChildStderr>,
    status: Option<ExitStatus>,
    inner: Rc<wit_spawn::Child>,
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child").field("pid", &self.id()).field("status", &self.status).finish_non_exhaustive()
    }
}

impl Child {
    fn new(child: wit_spawn::Child) -> Self {
        let inner = Rc::new(child);
        Child {
            stdin: inner.take_stdin().map(|stream| ChildStdin { stream, _owner: inner.clone() }),
            stdout: inner.take_stdout().map(|stream| ChildStdout(Reader { stream, _owner: inner.clone() })),
            stderr: inner.take_stderr().map(|stream| ChildStderr(Reader { stream, _owner: inner.clone() })),
            status: None,
            inner,
        }
    }

    /// The OS process id.
    pub fn id(&self) -> u32 {
        self.inner.pid()
    }

    /// Kills the child's process group with SIGKILL.
    pub fn kill(&mut self) -> Result<()> {
        self.signal(9)
    }

    /// Sends `signal` to the child's process group.
    pub fn signal(&mut self, signal: u8) -> Result<()> {
        Ok(self.inner.kill(signal)?)
    }

    /// Waits for the child to exit (closing its stdin first, as std does).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        drop(self.stdin.take());
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.inner.wait()?.status;
        self.status = Some(status);
        Ok(status)
    }

    /// The exit status if the child has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.inner.try_wait()?.map(|t| t.status);
        }
        Ok(self.status)
    }

    /// A pollable ready once the child has exited. Drop it before the
    /// `Child`.
    pub fn subscribe(&self) -> Pollable {
        self.inner.subscribe()
    }

    /// Closes stdin, reads stdout and stderr to their ends (both at once,
    /// so neither pipe can fill up and block the child) and waits.
    pub fn wait_with_output(mut self) -> Result<Output> {
        drop(self.stdin.take());
        let mut readers = [self.stdout.take().map(|s| s.0), self.stderr.take().map(|s| s.0)];
        let mut bufs = [Vec::new(), Vec::new()];
        while readers.iter().any(Option::is_some) {
            let open: Vec<usize> = (0..2).filter(|&i| readers[i].is_some()).collect();
            let pollables: Vec<Pollable> = open.iter().map(|&i| readers[i].as_ref().unwrap().subscribe()).collect();
            let ready = crate::io::poll::poll(&pollables.iter().collect::<Vec<_>>());
            drop(pollables);
            for r in ready {
                let i = open[r as usize];
                match readers[i].as_ref().unwrap().read_available()? {
                    Some(bytes) => bufs[i].extend_from_slice(&bytes),
                    None => readers[i] = None,
                }
            }
        }
        let status = self.wait()?;
        let [stdout, stderr] = bufs;
        Ok(Output { status, stdout, stderr, pid: self.id(), timed_out: false, truncated: false })
    }
}

/// The write end of a child's stdin; dropping it closes the pipe (EOF).
pub struct ChildStdin {
    stream: OutputStream,
    _owner: Rc<wit_spawn::Child>,
}

impl ChildStdin {
    /// The underlying wasi:io stream.
    pub fn stream(&self) -> &OutputStream {
        &self.stream
    }
}

impl std::io::Write for ChildStdin {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(4096);
        self.stream.blocking_write_and_flush(&buf[..n]).map_err(|e| std::io::Error::from(Error::stream(e)))?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.blocking_flush().map_err(|e| std::io::Error::from(Error::stream(e)))
    }
}

/// The read end of a child's piped output stream.
struct Reader {
    stream: InputStream,
    _owner: Rc<wit_spawn::Child>,
}

impl Reader {
    fn subscribe(&self) -> Pollable {
        self.stream.subscribe()
    }

    /// What is ready now (possibly nothing), or `None` at the end.
    fn read_available(&self) -> Result<Option<Vec<u8>>> {
        match self.stream.read(64 * 1024) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StreamError::Closed) => Ok(None),
            Err(e) => Err(Error::stream(e)),
        }
    }

    fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let max = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        match self.stream.blocking_read(max) {
            Ok(bytes) => {
                buf[..bytes.len()].copy_from_slice(&bytes);
                Ok(bytes.len())
            }
            Err(StreamError::Closed) => Ok(0),
            Err(e) => Err(Error::stream(e).into()),
        }
    }
}

macro_rules! output_stream {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The read end of a child's piped ", $what, ".")]
        ///
        /// `std::io::Read` blocks; for several children at once, poll
        /// [`subscribe`](Self::subscribe)'s pollables and call
        /// [`read_available`](Self::read_available).
        pub struct $name(Reader);

        impl $name {
            /// A pollable ready when a read would not block (data or the
            /// end). Drop it before the stream.
            pub fn subscribe(&self) -> Pollable {
                self.0.subscribe()
            }

            /// The bytes ready now without blocking (possibly none), or
            /// `None` once the stream has ended.
            pub fn read_available(&self) -> Result<Option<Vec<u8>>> {
                self.0.read_available()
            }

            /// The underlying wasi:io stream.
            pub fn stream(&self) -> &InputStream {
                &self.0.stream
            }
        }

        impl std::io::Read for $name {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.0.read(buf)
            }
        }
    };
}

output_stream!(ChildStdout, "stdout");
output_stream!(ChildStderr, "stderr");

/// Starts the component at `component` (granted for forking) as a worker
/// in its own process, with no capabilities and inherited stdout and
/// stderr. Use [`Fork`] to pass arguments and capabilities.
pub fn fork(component: impl Into<String>) -> Result<Worker> {
    Fork::new(component).spawn()
}

/// A worker builder: the component, its arguments and the capabilities it
/// gets (each a subset of this guest's).
#[derive(Debug)]
pub struct Fork {
    component: String,
    args: Vec<String>,
    options: wit_fork::ForkOptions,
}

impl Fork {
    /// A worker running `component`.
    pub fn new(component: impl Into<String>) -> Self {
        Fork { component: component.into(), args: Vec::new(), options: wit_fork::ForkOptions::default() }
    }

    /// Adds an argument of the worker.
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Self {
        self.args.push(arg.into());
        self
    }

    /// Lets the worker run `program` (which this guest may run).
    pub fn allow_program(&mut self, program: impl Into<String>) -> &mut Self {
        self.options.programs.push(program.into());
        self
    }

    /// Passes on the granted directory `path`.
    pub fn dir(&mut self, path: impl Into<String>, read_only: bool) -> &mut Self {
        self.options.dirs.push(wit_fork::DirGrant { path: path.into(), read_only });
        self
    }

    /// Lets the worker set the variable `name` for its children.
    pub fn allow_env(&mut self, name: impl Into<String>) -> &mut Self {
        self.options.allow_env.push(name.into());
        self
    }

    /// Sets a variable of the worker's own environment.
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.options.env.push((key.into(), value.into()));
        self
    }

    /// Lets the worker use the shell (if this guest may).
    pub fn shell(&mut self, shell: bool) -> &mut Self {
        self.options.shell = shell;
        self
    }

    /// Where the worker's stdout goes.
    pub fn stdout(&mut self, cfg: Stdio) -> &mut Self {
        self.options.stdout = cfg.0;
        self
    }

    /// Where the worker's stderr goes.
    pub fn stderr(&mut self, cfg: Stdio) -> &mut Self {
        self.options.stderr = cfg.0;
        self
    }

    /// The user id the worker's children run as (the worker process itself
    /// is the host's), as [`Command::uid`]. Default: the host's child user.
    pub fn uid(&mut self, id: u32) -> &mut Self {
        self.options.uid = Some(id);
        self
    }

    /// The group id the worker's children run as, as [`Command::gid`].
    /// Default: the host's child group.
    pub fn gid(&mut self, id: u32) -> &mut Self {
        self.options.gid = Some(id);
        self
    }

    /// Starts the worker.
    pub fn spawn(&mut self) -> Result<Worker> {
        wit_fork::fork(&self.component, &self.args, std::mem::take(&mut self.options))
            .map(|inner| Worker { inner })
            .map_err(|e| Error::new(e).context(format!("fork {}", self.component)))
    }
}

/// A forked worker: a component in its own OS process, with an ordered
/// message channel. Dropping it kills the worker.
pub struct Worker {
    inner: wit_fork::Worker,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker").field("pid", &self.id()).finish_non_exhaustive()
    }
}

/// `Ok(None)` for `closed`, the error otherwise.
fn closed_is_none<T>(r: std::result::Result<T, ErrorCode>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ErrorCode::Closed(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Worker {
    /// The worker's OS process id.
    pub fn id(&self) -> u32 {
        self.inner.pid()
    }

    /// Sends one message; blocks while the channel is full. A `closed`
    /// error once the worker is gone.
    pub fn send(&self, message: &[u8]) -> Result<()> {
        Ok(self.inner.send(message)?)
    }

    /// The next message, blocking; `None` once the worker has exited and
    /// every message it sent was received.
    pub fn recv(&self) -> Result<Option<Vec<u8>>> {
        closed_is_none(self.inner.receive())
    }

    /// The next message if one is ready (`Ok(None)` if none is, or the
    /// channel is closed).
    pub fn try_recv(&self) -> Result<Option<Vec<u8>>> {
        match self.inner.try_receive() {
            Ok(m) => Ok(m),
            Err(ErrorCode::Closed(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A pollable ready when [`recv`](Self::recv) would not block.
    pub fn subscribe(&self) -> Pollable {
        self.inner.subscribe()
    }

    /// Waits for the worker process to exit.
    pub fn wait(&self) -> Result<ExitStatus> {
        Ok(self.inner.wait()?.status)
    }

    /// Sends `signal` to the worker's process group.
    pub fn signal(&self, signal: u8) -> Result<()> {
        Ok(self.inner.kill(signal)?)
    }

    /// The generated resource, for what this layer does not cover.
    pub fn raw(&self) -> &wit_fork::Worker {
        &self.inner
    }
}

/// In a forked worker: sends one message to the parent.
pub fn send_to_parent(message: &[u8]) -> Result<()> {
    Ok(wit_parent::send(message)?)
}

/// In a forked worker: the next message from the parent, blocking; `None`
/// once the parent has closed the channel.
pub fn recv_from_parent() -> Result<Option<Vec<u8>>> {
    closed_is_none(wit_parent::receive())
}
