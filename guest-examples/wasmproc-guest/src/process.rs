//! Processes the `std::process` way, on top of the `wasmproc:process`
//! bindings.
//!
//! ```ignore
//! use wasmproc_guest::process::{Command, Stdio};
//! use std::time::Duration;
//!
//! // Run to completion, output collected by the host (`exec-file`).
//! let out = Command::new("sort").arg("-n").current_dir("/data").output()?;
//! print!("{}", String::from_utf8_lossy(&out.stdout));
//!
//! // A running child with streamed stdio (`spawn`), killed after 5 s.
//! let mut child = Command::new("sort")
//!     .arg("-n")
//!     .env("LC_ALL", "C")
//!     .stdin(Stdio::piped())
//!     .stdout(Stdio::piped())
//!     .timeout(Duration::from_secs(5))
//!     .spawn()?;
//! child.stdin.take().unwrap().write_all(b"3\n1\n2\n")?; // dropped: EOF
//! let out = child.wait_with_output()?;
//!
//! // `seq 1 20 | sort -rn > /data/out`: child to child through a kernel
//! // pipe, into a file in a granted directory.
//! let mut seq = Command::new("seq").args(["1", "20"]).stdout(Stdio::piped()).spawn()?;
//! let mut sort = Command::new("sort").arg("-rn")
//!     .stdin(Stdio::from(seq.stdout.take().unwrap()))
//!     .stdout(Stdio::create_file("/data/out"))
//!     .spawn()?;
//! let (a, b) = (seq.wait()?, sort.wait()?);
//!
//! // Through a granted shell (`exec`), the first or a named one.
//! let out = wasmproc_guest::process::exec("ls | wc -l")?;
//! let out = wasmproc_guest::process::exec_in("bash", "echo $BASH_VERSION")?;
//!
//! // Another component in its own process, with a message channel (`fork`).
//! let worker = wasmproc_guest::process::fork("worker.wasm")?;
//! worker.send(b"job 1")?;
//! let reply = worker.recv()?; // `None` once the worker has gone
//! worker.close_channel(); // the worker's `recv_from_parent` says `None`
//! let status = worker.wait()?; // `status.trap()` if it trapped
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
//! must be allowed by the host); the working directory, and a file given as
//! a standard stream, are guest paths inside a granted directory;
//! [`Command::uid`] and [`Command::gid`] (as `CommandExt`'s) take only the
//! ids the host granted, and without them a child runs as the host's child
//! user, not as the guest's; dropping a [`Child`] (and its streams) kills
//! its process group; [`ExitStatus`] also says whether a deadline killed
//! the process, what it used, and (for a worker) why it trapped.

use crate::io::poll::Pollable;
use crate::io::streams::{InputStream, OutputStream, StreamError};
use crate::types::{self, ErrorCode};
use crate::{exec as wit_exec, fork as wit_fork, parent as wit_parent, spawn as wit_spawn};
use std::any::Any;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

pub use crate::fork::{Placement, WorkerLimits};
pub use crate::types::{FileMode, ResourceUsage};

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

    /// The host's message.
    pub fn message(&self) -> &str {
        self.code.message()
    }

    /// Whether the host refused the request by policy.
    pub fn is_access_denied(&self) -> bool {
        matches!(self.code, ErrorCode::AccessDenied(_))
    }

    /// Turns the error of a wasi:io stream operation into a `closed` or
    /// `io` error.
    fn stream(e: StreamError) -> Self {
        match e {
            StreamError::Closed => Error::new(ErrorCode::Closed("the stream is closed".into())),
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

/// Milliseconds of `d`, saturated.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How a process ended, as `std::process::ExitStatus`, and what it used.
///
/// Its `Display` is the WIT status, `exited(N)` or `signaled(N)`, followed
/// by `, timed out` and `, trap: MESSAGE` when they apply.
#[derive(Debug, Clone)]
pub struct ExitStatus {
    status: types::ExitStatus,
    timed_out: bool,
    trap: Option<String>,
    usage: ResourceUsage,
}

impl ExitStatus {
    /// Exited with code 0, before any deadline and without a trap.
    pub fn success(&self) -> bool {
        self.status.success() && !self.timed_out && self.trap.is_none()
    }

    /// The exit code, if the process exited (rather than being signaled).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The signal that terminated the process, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// Whether its deadline ([`Command::timeout`]) expired and the host
    /// killed its process group ([`code`](Self::code) and
    /// [`signal`](Self::signal) then say how it ended).
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// For a forked worker whose guest trapped: the trap's message (the
    /// worker then exits with code 134).
    pub fn trap(&self) -> Option<&str> {
        self.trap.as_deref()
    }

    /// The CPU time and peak memory the process used (for a worker: the
    /// worker process itself).
    pub fn usage(&self) -> ResourceUsage {
        self.usage
    }

    /// The WIT `exit-status`.
    pub fn raw(&self) -> types::ExitStatus {
        self.status
    }
}

impl From<types::Termination> for ExitStatus {
    fn from(t: types::Termination) -> Self {
        ExitStatus { status: t.status, timed_out: t.timed_out, trap: t.trap, usage: t.usage }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if self.timed_out {
            f.write_str(", timed out")?;
        }
        if let Some(trap) = &self.trap {
            write!(f, ", trap: {trap}")?;
        }
        Ok(())
    }
}

/// Where a child's (or worker's) standard stream goes, as
/// `std::process::Stdio`.
///
/// Besides [`piped`](Self::piped), [`inherit`](Self::inherit) and
/// [`null`](Self::null):
///
/// - a file in a granted directory, opened by the host (the child needs no
///   access of its own): [`read_file`](Self::read_file) for stdin;
///   [`create_file`](Self::create_file) (created or emptied, as
///   `std::fs::File::create`), [`create_new_file`](Self::create_new_file)
///   (must not exist, as `File::create_new`) and
///   [`append_file`](Self::append_file) for output; or
///   [`file`](Self::file) with a [`FileMode`];
/// - for stdin only, `Stdio::from(child_stdout)` (or a `ChildStderr`, or a
///   worker's): the other process's output, through a kernel pipe straight
///   from one to the other (`seq | sort`), without passing through the
///   guest. Its stream is given to the host by the first
///   [`Command::spawn`]; the new `Child` keeps the other process alive.
#[derive(Debug)]
pub struct Stdio(Kind);

enum Kind {
    Piped,
    Inherit,
    Null,
    File(types::StdioFile),
    /// Another process's output stream, and what keeps that process alive.
    PipeFrom(InputStream, Rc<dyn Any>),
    /// A `PipeFrom` an earlier spawn gave to the host.
    Used,
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Piped => f.write_str("Piped"),
            Kind::Inherit => f.write_str("Inherit"),
            Kind::Null => f.write_str("Null"),
            Kind::File(file) => f.debug_tuple("File").field(&file.path).field(&file.mode).finish(),
            Kind::PipeFrom(..) => f.write_str("PipeFrom"),
            Kind::Used => f.write_str("PipeFrom(given to an earlier spawn)"),
        }
    }
}

impl Stdio {
    /// A pipe the guest reads or writes ([`Child::stdout`] and friends).
    pub fn piped() -> Self {
        Stdio(Kind::Piped)
    }

    /// The guest's own stream.
    pub fn inherit() -> Self {
        Stdio(Kind::Inherit)
    }

    /// `/dev/null`.
    pub fn null() -> Self {
        Stdio(Kind::Null)
    }

    /// The file `path` (a guest path in a granted directory; writing needs
    /// it granted read-write), opened as `mode` says. A created file gets
    /// mode 0644.
    pub fn file(path: impl Into<String>, mode: FileMode) -> Self {
        Stdio(Kind::File(types::StdioFile { path: path.into(), mode }))
    }

    /// Stdin read from the file `path`, which must exist.
    pub fn read_file(path: impl Into<String>) -> Self {
        Self::file(path, FileMode::Read)
    }

    /// Output written to the file `path`, created if missing and emptied
    /// if present (as `std::fs::File::create`).
    pub fn create_file(path: impl Into<String>) -> Self {
        Self::file(path, FileMode::Truncate)
    }

    /// Output written to the new file `path`; it is an error if it exists
    /// (as `std::fs::File::create_new`).
    pub fn create_new_file(path: impl Into<String>) -> Self {
        Self::file(path, FileMode::Create)
    }

    /// Output appended to the file `path`, created if missing.
    pub fn append_file(path: impl Into<String>) -> Self {
        Self::file(path, FileMode::Append)
    }

    /// The WIT value for one spawn, and what must outlive the child: a
    /// `PipeFrom`'s stream is given away (leaving `Used`), every other
    /// kind is copied.
    fn take_for_spawn(&mut self, name: &str) -> Result<(types::Stdio, Option<Rc<dyn Any>>)> {
        let wit = match &self.0 {
            Kind::Piped => types::Stdio::Piped,
            Kind::Inherit => types::Stdio::Inherit,
            Kind::Null => types::Stdio::Null,
            Kind::File(file) => types::Stdio::File(file.clone()),
            Kind::PipeFrom(..) => {
                let Kind::PipeFrom(stream, owner) = std::mem::replace(&mut self.0, Kind::Used) else {
                    unreachable!("matched above")
                };
                return Ok((types::Stdio::PipeFrom(stream), Some(owner)));
            }
            Kind::Used => {
                return Err(Error::new(ErrorCode::InvalidArgument(format!(
                    "{name}: the stream given with `Stdio::from` went to an earlier spawn"
                ))));
            }
        };
        Ok((wit, None))
    }

    /// Whether this is only the default of [`Command::output`]: nothing, or
    /// `/dev/null`.
    fn is_null(&self) -> bool {
        matches!(self.0, Kind::Null)
    }
}

impl From<ChildStdout> for Stdio {
    /// The child's (or worker's) piped stdout as another child's stdin.
    fn from(stdout: ChildStdout) -> Self {
        let Reader { stream, owner } = stdout.0;
        Stdio(Kind::PipeFrom(stream, owner))
    }
}

impl From<ChildStderr> for Stdio {
    /// The child's (or worker's) piped stderr as another child's stdin.
    fn from(stderr: ChildStderr) -> Self {
        let Reader { stream, owner } = stderr.0;
        Stdio(Kind::PipeFrom(stream, owner))
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
    kill_signal: Option<u8>,
    max_buffer: Option<u64>,
    uid: Option<u32>,
    gid: Option<u32>,
    shell: Option<String>,
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
            kill_signal: None,
            max_buffer: None,
            uid: None,
            gid: None,
            shell: None,
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
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.stdin = Some(cfg.into());
        self
    }

    /// The child's stdout. Default: inherit for [`spawn`](Self::spawn);
    /// [`output`](Self::output) always collects it.
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.stdout = Some(cfg.into());
        self
    }

    /// The child's stderr. Default: inherit for [`spawn`](Self::spawn);
    /// [`output`](Self::output) always collects it.
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.stderr = Some(cfg.into());
        self
    }

    /// Bytes [`output`](Self::output) writes to the child's stdin before
    /// closing it (it takes precedence over [`stdin`](Self::stdin)).
    pub fn input(&mut self, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.input = Some(bytes.into());
        self
    }

    /// Kill the child's process group after `timeout`, counted from the
    /// start: [`ExitStatus::timed_out`] then tells. Default: no deadline
    /// for a spawned child ([`spawn`](Self::spawn), [`status`](Self::status));
    /// the host's default timeout for one the host runs to completion
    /// ([`output`](Self::output) without a [`stdin`](Self::stdin), and
    /// [`exec_with`]). Above the host's maximum it is refused with
    /// `limit-exceeded`.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = Some(timeout);
        self
    }

    /// The signal sent to the process group when the
    /// [`timeout`](Self::timeout) expires (or, for `output`, a stream
    /// exceeds the [`max_buffer`](Self::max_buffer)); SIGKILL follows after
    /// the host's grace period if the group is still there. Default:
    /// SIGTERM (15), as Node's.
    pub fn kill_signal(&mut self, signal: u8) -> &mut Self {
        self.kill_signal = Some(signal);
        self
    }

    /// For [`output`](Self::output) (when the host collects it): the most
    /// bytes kept per stream.
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

    /// For [`exec_with`]: the granted shell to run the command with (by
    /// file name or absolute path). Default: the first shell the host
    /// granted. Not used by this command's own `spawn` and `output`.
    pub fn shell(&mut self, shell: impl Into<String>) -> &mut Self {
        self.shell = Some(shell.into());
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
            timeout_ms: self.timeout.map(millis),
            kill_signal: self.kill_signal,
            max_buffer: self.max_buffer,
            stdin: self.input.clone(),
            uid: self.uid,
            gid: self.gid,
            shell: self.shell.clone(),
        }
    }

    /// Starts the child (`spawn`); stdio not configured is inherited.
    pub fn spawn(&mut self) -> Result<Child> {
        let context = || format!("spawn {}", self.program);
        let stdio = |s: &mut Option<Stdio>, name: &str| match s {
            Some(s) => s.take_for_spawn(name),
            None => Ok((types::Stdio::Inherit, None)),
        };
        let (stdin, upstream) = stdio(&mut self.stdin, "stdin").map_err(|e| e.context(context()))?;
        let (stdout, _) = stdio(&mut self.stdout, "stdout").map_err(|e| e.context(context()))?;
        let (stderr, _) = stdio(&mut self.stderr, "stderr").map_err(|e| e.context(context()))?;
        let options = wit_spawn::SpawnOptions {
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            stdin,
            stdout,
            stderr,
            uid: self.uid,
            gid: self.gid,
            timeout_ms: self.timeout.map(millis),
            kill_signal: self.kill_signal,
        };
        let child =
            wit_spawn::spawn(&self.program, &self.args, options).map_err(|e| Error::new(e).context(context()))?;
        Ok(Child::new(child, upstream))
    }

    /// Runs the child to completion and collects its stdout and stderr.
    ///
    /// With [`input`](Self::input) bytes as stdin, or without a
    /// [`stdin`](Self::stdin) (or with `Stdio::null()`: `/dev/null`), the
    /// host runs it and buffers the output (`exec-file`, up to
    /// [`max_buffer`](Self::max_buffer) bytes per stream). With another
    /// stdin (a file, another child's output, a pipe, the guest's own), the
    /// child is spawned with piped stdout and stderr, which are read to
    /// their ends (no buffer limit; [`Output::truncated`] is false).
    pub fn output(&mut self) -> Result<Output> {
        if self.input.is_none() && self.stdin.as_ref().is_some_and(|s| !s.is_null()) {
            let (stdout, stderr) = (self.stdout.replace(Stdio::piped()), self.stderr.replace(Stdio::piped()));
            let child = self.spawn();
            (self.stdout, self.stderr) = (stdout, stderr);
            return child?.wait_with_output();
        }
        wit_exec::exec_file(&self.program, &self.args, &self.exec_options())
            .map(Output::from)
            .map_err(|e| Error::new(e).context(format!("run {}", self.program)))
    }

    /// Runs the child to completion (stdio not configured is inherited)
    /// and returns how it ended.
    pub fn status(&mut self) -> Result<ExitStatus> {
        let mut child = self.spawn()?;
        child.wait()
    }
}

/// Runs `command` through the first shell the host granted (`SHELL -c
/// command`) and collects its output.
pub fn exec(command: &str) -> Result<Output> {
    exec_with(command, &Command::new("sh"))
}

/// As [`exec`], with the shell `shell`, one the host granted (by file name
/// or absolute path).
pub fn exec_in(shell: &str, command: &str) -> Result<Output> {
    exec_with(command, Command::new("sh").shell(shell))
}

/// As [`exec`], with the working directory, environment, input, timeout,
/// kill signal, buffer size, user, group and [`shell`](Command::shell) of
/// `options` (its program, arguments and stdio are ignored).
pub fn exec_with(command: &str, options: &Command) -> Result<Output> {
    wit_exec::exec(command, &options.exec_options())
        .map(Output::from)
        .map_err(|e| Error::new(e).context(format!("exec {command:?}")))
}

/// A finished child's status and collected output.
#[derive(Debug, Clone)]
pub struct Output {
    /// How it ended, and what it used.
    pub status: ExitStatus,
    /// Everything it wrote to stdout (up to the buffer size).
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr (up to the buffer size).
    pub stderr: Vec<u8>,
    /// The OS process id it had (0 if unknown).
    pub pid: u32,
    /// The timeout expired and its process group was killed (as
    /// `status.timed_out()`).
    pub timed_out: bool,
    /// An output stream exceeded the buffer size and was truncated.
    pub truncated: bool,
}

impl From<wit_exec::ExecOutput> for Output {
    fn from(o: wit_exec::ExecOutput) -> Self {
        Output {
            status: ExitStatus { status: o.status, timed_out: o.timed_out, trap: None, usage: o.usage },
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
    /// The process whose output is this child's stdin (`Stdio::from`),
    /// kept alive as long as this one.
    _upstream: Option<Rc<dyn Any>>,
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child").field("pid", &self.id()).field("status", &self.status).finish_non_exhaustive()
    }
}

impl Child {
    fn new(child: wit_spawn::Child, upstream: Option<Rc<dyn Any>>) -> Self {
        let inner = Rc::new(child);
        let owner = || -> Rc<dyn Any> { inner.clone() };
        Child {
            stdin: inner.take_stdin().map(|stream| ChildStdin { stream, _owner: inner.clone() }),
            stdout: inner.take_stdout().map(|stream| ChildStdout(Reader { stream, owner: owner() })),
            stderr: inner.take_stderr().map(|stream| ChildStderr(Reader { stream, owner: owner() })),
            status: None,
            _upstream: upstream,
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
        if let Some(status) = &self.status {
            return Ok(status.clone());
        }
        let status = ExitStatus::from(self.inner.wait()?);
        self.status = Some(status.clone());
        Ok(status)
    }

    /// Waits for the child to exit for at most `timeout`: `None` if it is
    /// still running then (it is left running). Unlike [`wait`](Self::wait),
    /// it leaves stdin open.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            match self.inner.wait_timeout(millis(timeout)) {
                Ok(t) => self.status = Some(t.into()),
                Err(ErrorCode::TimedOut(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.status.clone())
    }

    /// How the child ended if it has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.inner.try_wait()?.map(ExitStatus::from);
        }
        Ok(self.status.clone())
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
        let readers = [self.stdout.take().map(|s| s.0), self.stderr.take().map(|s| s.0)];
        let [stdout, stderr] = read_to_end(readers)?;
        let status = self.wait()?;
        let timed_out = status.timed_out();
        Ok(Output { status, stdout, stderr, pid: self.id(), timed_out, truncated: false })
    }

    /// The generated resource, for what this layer does not cover.
    pub fn raw(&self) -> &wit_spawn::Child {
        &self.inner
    }
}

/// Reads every reader given to its end, all at once.
fn read_to_end<const N: usize>(mut readers: [Option<Reader>; N]) -> Result<[Vec<u8>; N]> {
    let mut bufs = std::array::from_fn(|_| Vec::new());
    while readers.iter().any(Option::is_some) {
        let open: Vec<usize> = (0..N).filter(|&i| readers[i].is_some()).collect();
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
    Ok(bufs)
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

/// The read end of a child's or worker's piped output stream, and the
/// resource (a spawned child or a worker) it belongs to.
struct Reader {
    stream: InputStream,
    owner: Rc<dyn Any>,
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
        #[doc = concat!("The read end of a child's (or worker's) piped ", $what, ".")]
        ///
        /// `std::io::Read` blocks; for several children at once, poll
        /// [`subscribe`](Self::subscribe)'s pollables and call
        /// [`read_available`](Self::read_available). `Stdio::from` makes it
        /// another child's stdin.
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

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
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
    programs: Vec<String>,
    dirs: Vec<wit_fork::DirGrant>,
    allow_env: Vec<String>,
    env: Vec<(String, String)>,
    shell: bool,
    forks: Vec<String>,
    stdout: Stdio,
    stderr: Stdio,
    limits: WorkerLimits,
    uid: Option<u32>,
    gid: Option<u32>,
    placement: Placement,
}

impl Fork {
    /// A worker running `component`.
    pub fn new(component: impl Into<String>) -> Self {
        Fork {
            component: component.into(),
            args: Vec::new(),
            programs: Vec::new(),
            dirs: Vec::new(),
            allow_env: Vec::new(),
            env: Vec::new(),
            shell: false,
            forks: Vec::new(),
            stdout: Stdio::inherit(),
            stderr: Stdio::inherit(),
            limits: WorkerLimits::default(),
            uid: None,
            gid: None,
            placement: Placement::Local,
        }
    }

    /// Adds an argument of the worker.
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments of the worker.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Lets the worker run `program` (which this guest may run).
    pub fn allow_program(&mut self, program: impl Into<String>) -> &mut Self {
        self.programs.push(program.into());
        self
    }

    /// Passes on the granted directory `path`.
    pub fn dir(&mut self, path: impl Into<String>, read_only: bool) -> &mut Self {
        self.dirs.push(wit_fork::DirGrant { path: path.into(), read_only });
        self
    }

    /// Lets the worker set the variable `name` for its children.
    pub fn allow_env(&mut self, name: impl Into<String>) -> &mut Self {
        self.allow_env.push(name.into());
        self
    }

    /// Sets a variable of the worker's own environment.
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Lets the worker use the shells (if this guest may).
    pub fn shell(&mut self, shell: bool) -> &mut Self {
        self.shell = shell;
        self
    }

    /// Lets the worker fork `component` in turn (as this guest names it:
    /// one it may fork itself). Its workers share this guest's budget.
    pub fn allow_fork(&mut self, component: impl Into<String>) -> &mut Self {
        self.forks.push(component.into());
        self
    }

    /// Where the worker's stdout goes: inherit (the default), null, piped
    /// ([`Worker::take_stdout`]) or a file.
    pub fn stdout(&mut self, cfg: Stdio) -> &mut Self {
        self.stdout = cfg;
        self
    }

    /// Where the worker's stderr goes, as [`stdout`](Self::stdout).
    pub fn stderr(&mut self, cfg: Stdio) -> &mut Self {
        self.stderr = cfg;
        self
    }

    /// Lower limits for the worker and its children. Default: this
    /// guest's.
    pub fn limits(&mut self, limits: WorkerLimits) -> &mut Self {
        self.limits = limits;
        self
    }

    /// The user id the worker's children run as (the worker process itself
    /// is the host's), as [`Command::uid`]. Default: the host's child user.
    pub fn uid(&mut self, id: u32) -> &mut Self {
        self.uid = Some(id);
        self
    }

    /// The group id the worker's children run as, as [`Command::gid`].
    /// Default: the host's child group.
    pub fn gid(&mut self, id: u32) -> &mut Self {
        self.gid = Some(id);
        self
    }

    /// Where the worker runs: [`Placement::Local`] (the default), or on an
    /// agent of the cluster the host joined (`Cluster`, or `Labels` the
    /// agent must have). A host in no cluster refuses any but `Local` with
    /// `unsupported`.
    pub fn placement(&mut self, placement: Placement) -> &mut Self {
        self.placement = placement;
        self
    }

    /// Starts the worker.
    pub fn spawn(&mut self) -> Result<Worker> {
        let context = || format!("fork {}", self.component);
        let (stdout, _) = self.stdout.take_for_spawn("stdout").map_err(|e| e.context(context()))?;
        let (stderr, _) = self.stderr.take_for_spawn("stderr").map_err(|e| e.context(context()))?;
        let options = wit_fork::ForkOptions {
            programs: self.programs.clone(),
            dirs: self.dirs.clone(),
            allow_env: self.allow_env.clone(),
            env: self.env.clone(),
            shell: self.shell,
            forks: self.forks.clone(),
            stdout,
            stderr,
            limits: self.limits,
            uid: self.uid,
            gid: self.gid,
            placement: self.placement.clone(),
        };
        wit_fork::fork(&self.component, &self.args, options)
            .map(|inner| Worker { inner: Rc::new(inner) })
            .map_err(|e| Error::new(e).context(context()))
    }
}

/// A forked worker: a component in its own OS process, with an ordered
/// message channel. Dropping it (and its streams) kills the worker.
pub struct Worker {
    inner: Rc<wit_fork::Worker>,
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
    /// error once the worker is gone or either side closed the channel.
    pub fn send(&self, message: &[u8]) -> Result<()> {
        Ok(self.inner.send(message)?)
    }

    /// The next message, blocking; `None` once the worker has exited and
    /// every message it sent was received (or the channel was closed).
    pub fn recv(&self) -> Result<Option<Vec<u8>>> {
        closed_is_none(self.inner.receive())
    }

    /// The next message if one is ready (`Ok(None)` if none is, or the
    /// channel is closed).
    pub fn try_recv(&self) -> Result<Option<Vec<u8>>> {
        Ok(closed_is_none(self.inner.try_receive())?.flatten())
    }

    /// A pollable ready when [`recv`](Self::recv) would not block.
    pub fn subscribe(&self) -> Pollable {
        self.inner.subscribe()
    }

    /// Closes the message channel, as Node's `disconnect`: what was sent
    /// is still delivered, then the worker's `recv_from_parent` returns
    /// `None`; from now on `send` fails with `closed`, `recv` returns
    /// `None` and the worker's messages are dropped. The worker keeps
    /// running.
    pub fn close_channel(&self) {
        self.inner.close_channel();
    }

    /// A pollable ready once the worker process has exited.
    pub fn subscribe_exit(&self) -> Pollable {
        self.inner.subscribe_exit()
    }

    /// Waits for the worker process to exit; its messages stay
    /// receivable.
    pub fn wait(&self) -> Result<ExitStatus> {
        Ok(self.inner.wait()?.into())
    }

    /// Waits for the worker process to exit for at most `timeout`: `None`
    /// if it is still running then (it is left running).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        match self.inner.wait_timeout(millis(timeout)) {
            Ok(t) => Ok(Some(t.into())),
            Err(ErrorCode::TimedOut(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// How the worker ended if it has exited, without blocking.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        Ok(self.inner.try_wait()?.map(ExitStatus::from))
    }

    /// Sends `signal` to the worker's process group.
    pub fn signal(&self, signal: u8) -> Result<()> {
        Ok(self.inner.kill(signal)?)
    }

    /// Kills the worker's process group with SIGKILL.
    pub fn kill(&self) -> Result<()> {
        self.signal(9)
    }

    /// The read end of a piped stdout ([`Fork::stdout`]), once.
    pub fn take_stdout(&self) -> Option<ChildStdout> {
        let owner: Rc<dyn Any> = self.inner.clone();
        self.inner.take_stdout().map(|stream| ChildStdout(Reader { stream, owner }))
    }

    /// The read end of a piped stderr, once.
    pub fn take_stderr(&self) -> Option<ChildStderr> {
        let owner: Rc<dyn Any> = self.inner.clone();
        self.inner.take_stderr().map(|stream| ChildStderr(Reader { stream, owner }))
    }

    /// The generated resource, for what this layer does not cover.
    pub fn raw(&self) -> &wit_fork::Worker {
        &self.inner
    }
}

/// In a forked worker: sends one message to the parent. A `closed` error
/// once the parent has closed the channel or exited.
pub fn send_to_parent(message: &[u8]) -> Result<()> {
    Ok(wit_parent::send(message)?)
}

/// In a forked worker: the next message from the parent, blocking; `None`
/// once the parent has closed the channel (after its last message).
pub fn recv_from_parent() -> Result<Option<Vec<u8>>> {
    closed_is_none(wit_parent::receive())
}

/// In a forked worker: the next message from the parent if one is ready
/// (`Ok(None)` if none is, or the channel is closed).
pub fn try_recv_from_parent() -> Result<Option<Vec<u8>>> {
    Ok(closed_is_none(wit_parent::try_receive())?.flatten())
}

/// In a forked worker: closes the channel to the parent, as Node's
/// `process.disconnect()`: what was sent is still delivered, then the
/// parent's `recv` returns `None`; from now on `send_to_parent` fails with
/// `closed` and `recv_from_parent` returns `None`.
pub fn close_parent_channel() {
    wit_parent::close();
}
