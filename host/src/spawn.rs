//! `wasmproc:process/spawn`: running children with streaming stdio.
//!
//! A child's piped stdio are wasi:io streams that read and write the pipe
//! directly ([`crate::pipe`]), pushed into the resource table as children of
//! the `child` resource. The host holds no output: a guest that does not
//! read makes the child block on a full pipe; `check-write` offers stdin's
//! bounded write budget.

use crate::bindings::spawn::{Host, HostChild, SpawnOptions};
use crate::bindings::types::{Confinement, Stdio, StdioFile, Termination};
use crate::failure::Failure;
use crate::pipe::{PipeReader, PipeWriter};
use crate::policy::{Prepared, Request, Run};
use crate::process::{ChildIo, Ended, GroupGuard, OsChild, signal};
use crate::{ProcessCtx, ProcessCtxView, ProcessError, ProcessResult};
use rustix::process::Signal;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;
use wasmtime::component::Resource;
use wasmtime_wasi::cli::StdoutStream;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, Pollable};

/// A child process started by `spawn`: the leader of its own process group.
/// Dropping it kills the group (and reaps the leader in the background).
pub struct Child {
    process: OsChild,
    /// Shared (weakly) with the deadline's timer only.
    group: Arc<GroupGuard>,
    stdin: Option<DynOutputStream>,
    stdout: Option<PipeReader>,
    stderr: Option<PipeReader>,
    confinement: Confinement,
    /// Tasks copying `inherit`ed output to the guest's streams.
    forwarders: Vec<JoinHandle<()>>,
    deadline: Option<Deadline>,
}

/// `ended` if it comes within `ms` milliseconds, else `timed-out` saying
/// that `what` is still running (`wait-timeout` of a child or worker).
pub(crate) async fn within(
    ms: u64,
    what: String,
    ended: impl std::future::Future<Output = Result<Termination, Failure>>,
) -> Result<Termination, Failure> {
    match tokio::time::timeout(Duration::from_millis(ms), ended).await {
        Ok(ended) => ended,
        Err(_) => Err(Failure::TimedOut(format!(
            "{what} is still running after {ms} ms"
        ))),
    }
}

/// A spawned child's `timeout-ms`: a timer that kills the group.
struct Deadline {
    timer: JoinHandle<()>,
    /// Set when the timer found the child still running and killed it.
    expired: Arc<AtomicBool>,
}

/// When and how a child is killed for running too long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeout {
    pub after: Duration,
    pub signal: Signal,
    /// How long the group has after `signal` before SIGKILL.
    pub grace: Duration,
}

/// How long `wait` waits, after the child exited, for its `inherit`ed output
/// to be passed on: descendants may keep the pipe open for longer.
const FORWARD_GRACE: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.group.pid())
            .field("status", &self.process.status())
            .finish_non_exhaustive()
    }
}

impl Child {
    /// Waits for the leader to exit and for its `inherit`ed output to be
    /// passed on (up to [`FORWARD_GRACE`]). Cancel safe.
    pub(crate) async fn reap(&mut self) -> Result<Termination, Failure> {
        let ended = (self.process.wait().await).map_err(|e| {
            Failure::from_io(format_args!("waiting for child {}", self.group.pid()), &e)
        })?;
        self.group.exited(ended.status);
        if !self.forwarders.is_empty() {
            let forwarded = async {
                for task in &mut self.forwarders {
                    let _ = task.await;
                }
            };
            let _ = tokio::time::timeout(FORWARD_GRACE, forwarded).await;
            // Tasks still copying (for descendants) go on detached.
            self.forwarders.clear();
        }
        Ok(self.termination(ended))
    }

    /// As [`reap`](Self::reap), for at most `ms` milliseconds.
    pub(crate) async fn reap_within(&mut self, ms: u64) -> Result<Termination, Failure> {
        let pid = self.pid();
        within(ms, format!("process {pid}"), self.reap()).await
    }

    fn termination(&self, ended: Ended) -> Termination {
        Termination {
            status: ended.status.into(),
            timed_out: (self.deadline.as_ref()).is_some_and(|d| d.expired.load(Ordering::Acquire)),
            trap: None,
            usage: ended.usage.into(),
        }
    }

    /// Starts the timer that kills the child after `timeout`.
    fn set_deadline(&mut self, timeout: Timeout) -> io::Result<()> {
        let Some(pidfd) = self.process.pidfd()? else {
            return Ok(());
        };
        let expired = Arc::new(AtomicBool::new(false));
        let timer = tokio::spawn(expire(
            Arc::downgrade(&self.group),
            pidfd,
            timeout,
            expired.clone(),
        ));
        self.deadline = Some(Deadline { timer, expired });
        Ok(())
    }
}

/// The deadline's timer: after `timeout.after`, if the leader is still
/// running, sends the kill signal to the group, and SIGKILL after the
/// grace period (to whatever is left of the group, as `exec` does).
async fn expire(
    group: Weak<GroupGuard>,
    pidfd: OwnedFd,
    timeout: Timeout,
    expired: Arc<AtomicBool>,
) {
    tokio::time::sleep(timeout.after).await;
    let options = rustix::process::WaitIdOptions::EXITED
        | rustix::process::WaitIdOptions::NOHANG
        | rustix::process::WaitIdOptions::NOWAIT;
    let running = matches!(
        rustix::process::waitid(rustix::process::WaitId::PidFd(pidfd.as_fd()), options),
        Ok(None)
    );
    let Some(guard) = group.upgrade().filter(|_| running) else {
        return;
    };
    expired.store(true, Ordering::Release);
    send(&guard, timeout.signal);
    drop(guard);
    tokio::time::sleep(timeout.grace).await;
    if let Some(guard) = group.upgrade() {
        send(&guard, Signal::KILL);
    }
}

fn send(group: &GroupGuard, signal: Signal) {
    if let Err(e) = group.signal(signal) {
        tracing::error!(pgid = group.pid(), error = %e, "cannot signal process group");
    }
}

impl Drop for Child {
    /// Kills the group now; the `OsChild` then reaps the leader in the
    /// background, so no zombie is left.
    fn drop(&mut self) {
        if let Some(deadline) = &self.deadline {
            deadline.timer.abort();
        }
        if self.process.status().is_none() {
            self.group.kill_before_reaping();
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Child {
    async fn ready(&mut self) {
        // An error makes the pollable ready too; `try-wait` then reports it.
        let _ = self.reap().await;
    }
}

/// One of a child's standard streams as the guest asked for it, with a
/// stream it gave already taken out of its resource table (a stream passed
/// to the host is the host's, whatever happens next).
pub(crate) enum Asked {
    Piped,
    Inherit,
    Null,
    File(StdioFile),
    /// `pipe-from`: the pipe of the stream given, if it was a child's or
    /// worker's output.
    PipeFrom(io::Result<Option<OwnedFd>>),
}

impl ProcessCtxView<'_> {
    /// `kind`, taking a stream it gives out of the table.
    pub(crate) fn ask(&mut self, kind: Stdio) -> Result<Asked, Failure> {
        Ok(match kind {
            Stdio::Piped => Asked::Piped,
            Stdio::Inherit => Asked::Inherit,
            Stdio::Null => Asked::Null,
            Stdio::File(file) => Asked::File(file),
            Stdio::PipeFrom(stream) => {
                let rep = stream.rep();
                let pipe = self.ctx.pipes.claim(rep);
                if let Err(e) = self.table.delete(stream) {
                    // Still the guest's (a pollable of it is alive): as it was.
                    if let Some(pipe) = &pipe {
                        self.ctx.pipes.insert(rep, Arc::downgrade(pipe));
                    }
                    return Err(Failure::InvalidArgument(format!(
                        "the stream given as stdin: {e}"
                    )));
                }
                // The stream is gone: the pipe is this host's alone.
                Asked::PipeFrom(
                    pipe.as_deref()
                        .map(crate::pipe::blocking_read_end)
                        .transpose(),
                )
            }
        })
    }
}

/// Where one output stream of a child goes.
pub(crate) enum Route {
    /// A pipe the guest reads as a wasi:io input-stream.
    Guest,
    /// A pipe the host copies to the guest's own stream (`inherit`).
    Forward(Pin<Box<dyn AsyncWrite + Send + Sync>>),
    /// Where the OS puts it (/dev/null, a file).
    Os,
}

impl ProcessCtx {
    /// Where a child's or worker's `inherit`ed stdout (or `stderr`) goes:
    /// the context's stream for it ([`ProcessCtxBuilder::stdout`](crate::ProcessCtxBuilder::stdout)),
    /// else the host's own.
    pub(crate) fn inherited_output(&self, stderr: bool) -> Pin<Box<dyn AsyncWrite + Send + Sync>> {
        let to = match stderr {
            false => self.inherit_stdout.as_deref(),
            true => self.inherit_stderr.as_deref(),
        };
        Box::into_pin(match (to, stderr) {
            (Some(to), _) => to.async_stream(),
            (None, false) => io::stdout().async_stream(),
            (None, true) => io::stderr().async_stream(),
        })
    }

    /// The OS stdio and route of a child's output stream `name` (`stdout`
    /// or `stderr`) asked as `asked`.
    ///
    /// An `inherit`ed stream is a pipe the host copies into
    /// [`inherited_output`](Self::inherited_output), never the host's own
    /// open file: a child holding that could truncate or seek the
    /// operator's log, or change its flags.
    pub(crate) fn route(&self, name: &str, asked: Asked) -> Result<(ChildIo, Route), Failure> {
        Ok(match asked {
            Asked::Piped => (ChildIo::Pipe, Route::Guest),
            Asked::Inherit => (
                ChildIo::Pipe,
                Route::Forward(self.inherited_output(name == "stderr")),
            ),
            Asked::Null => (ChildIo::Null, Route::Os),
            Asked::File(file) => (self.open_stdio_file(&file, true)?, Route::Os),
            Asked::PipeFrom(_) => {
                return Err(Failure::InvalidArgument(format!(
                    "{name} cannot be `pipe-from`: it is for stdin only"
                )));
            }
        })
    }

    /// The OS stdin asked as `asked`.
    fn stdin_io(&self, asked: Asked) -> Result<ChildIo, Failure> {
        Ok(match asked {
            Asked::Piped => ChildIo::Pipe,
            Asked::Inherit => ChildIo::Inherit,
            Asked::Null => ChildIo::Null,
            Asked::File(file) => self.open_stdio_file(&file, false)?,
            Asked::PipeFrom(Ok(Some(pipe))) => ChildIo::Given(pipe),
            Asked::PipeFrom(Ok(None)) => {
                return Err(Failure::InvalidArgument(
                    "the stream given as stdin is not a piped stdout or stderr of a child or worker"
                        .into(),
                ));
            }
            Asked::PipeFrom(Err(e)) => return Err(Failure::from_io("taking the pipe", &e)),
        })
    }

    /// The file `file` opened for a child's stdin (`output` false) or
    /// output, if it is in a granted directory (writable, for output).
    fn open_stdio_file(&self, file: &StdioFile, output: bool) -> Result<ChildIo, Failure> {
        crate::policy::open_granted_file(&self.dirs, &file.path, file.mode.into(), output)
            .map(ChildIo::Given)
            .map_err(|r| self.refuse(r))
    }
}

impl Route {
    /// The guest's stream for `pipe`, or `None` when the host forwards it
    /// (starting the copy) or there is no pipe.
    pub(crate) fn stream(
        self,
        pipe: Option<OwnedFd>,
        forwarders: &mut Vec<JoinHandle<()>>,
    ) -> io::Result<Option<PipeReader>> {
        let Some(pipe) = pipe else { return Ok(None) };
        Ok(match self {
            Route::Guest => Some(PipeReader::new(pipe)?),
            Route::Forward(mut to) => {
                let mut pipe = pipe::Receiver::from_owned_fd(pipe)?;
                // Never aborted: it ends at EOF, when the child's group is
                // gone, so output is not lost when the guest drops the child.
                forwarders.push(tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut pipe, &mut to).await;
                    let _ = to.flush().await;
                }));
                None
            }
            Route::Os => None,
        })
    }
}

impl ProcessCtx {
    /// Starts `prepared` with stdio set up as asked: the common part of
    /// `spawn` and `fork`.
    pub(crate) fn start_child(
        &mut self,
        kind: &'static str,
        prepared: &Prepared,
        [stdin, stdout, stderr]: [Asked; 3],
    ) -> Result<Child, Failure> {
        let stdin = self.stdin_io(stdin)?;
        let (out_os, out_route) = self.route("stdout", stdout)?;
        let (err_os, err_route) = self.route("stderr", stderr)?;
        let mut launched = self.launch(kind, prepared, [stdin, out_os, err_os])?;
        let process = &mut launched.child;
        let mut forwarders = Vec::new();
        let pipes = |e: io::Error| Failure::from_io("setting up the child's pipes", &e);
        let stdin = match process.stdin.take() {
            Some(w) => Some(Box::new(PipeWriter::new(w).map_err(pipes)?) as DynOutputStream),
            None => None,
        };
        let stdout = (out_route.stream(process.stdout.take(), &mut forwarders)).map_err(pipes)?;
        let stderr = (err_route.stream(process.stderr.take(), &mut forwarders)).map_err(pipes)?;
        let mut child = Child::without_stdio(launched);
        (child.stdin, child.stdout, child.stderr) = (stdin, stdout, stderr);
        child.forwarders = forwarders;
        Ok(child)
    }

    /// The deadline of a spawn asked for `timeout_ms` and `kill_signal`,
    /// if within the host's maximum timeout.
    fn spawn_timeout(
        &self,
        timeout_ms: Option<u64>,
        kill_signal: Option<u8>,
    ) -> Result<Option<Timeout>, Failure> {
        let signal = signal(kill_signal.unwrap_or(15))?;
        let Some(ms) = timeout_ms else {
            return Ok(None);
        };
        let after = crate::exec::asked_timeout(&self.policy.limits, ms, |d| self.deny(d))?;
        Ok(Some(Timeout {
            after,
            signal,
            grace: self.policy.limits.kill_grace,
        }))
    }
}

impl Child {
    /// The child `launched`, with none of its streams the host's (a worker
    /// process until it has its specification).
    pub(crate) fn without_stdio(launched: crate::process::Launched) -> Child {
        Child {
            confinement: launched.confinement.into(),
            process: launched.child,
            group: Arc::new(launched.group),
            stdin: None,
            stdout: None,
            stderr: None,
            forwarders: Vec::new(),
            deadline: None,
        }
    }

    /// The leader's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.group.pid()
    }

    /// How the leader ended if it has exited, without blocking.
    pub(crate) fn try_status(&mut self) -> Result<Option<Termination>, Failure> {
        let pid = self.pid();
        let ended = (self.process.try_wait())
            .map_err(|e| Failure::from_io(format_args!("checking child {pid}"), &e))?;
        Ok(ended.map(|ended| {
            self.group.exited(ended.status);
            self.termination(ended)
        }))
    }

    /// Sends signal number `n` to the group.
    pub(crate) fn kill(&self, n: u8) -> Result<(), Failure> {
        let signal = signal(n)?;
        (self.group.signal(signal))
            .map_err(|e| Failure::from_io(format_args!("signalling child {}", self.pid()), &e))
    }

    /// Takes `slots` of the guest's live-children slots (a warm worker
    /// that got its specification).
    pub(crate) fn count(&self, slots: usize) {
        self.group.count(slots);
    }

    /// Gives a worker started before its output was known its guest-side
    /// streams and the tasks copying its inherited output.
    pub(crate) fn attach(
        &mut self,
        stdout: Option<PipeReader>,
        stderr: Option<PipeReader>,
        forwarders: Vec<JoinHandle<()>>,
    ) {
        self.stdout = stdout;
        self.stderr = stderr;
        self.forwarders.extend(forwarders);
    }

    /// Takes the piped stdout.
    pub(crate) fn take_stdout(&mut self) -> Option<PipeReader> {
        self.stdout.take()
    }

    /// Takes the piped stderr.
    pub(crate) fn take_stderr(&mut self) -> Option<PipeReader> {
        self.stderr.take()
    }
}

impl Host for ProcessCtxView<'_> {
    fn spawn(
        &mut self,
        program: String,
        args: Vec<String>,
        options: SpawnOptions,
    ) -> ProcessResult<Resource<Child>> {
        // Streams given are taken first: they are the host's now.
        let stdio = [
            self.ask(options.stdin)?,
            self.ask(options.stdout)?,
            self.ask(options.stderr)?,
        ];
        let req = Request::new(Run::Program(&program, &args), &options.cwd, &options.env)
            .user(options.uid, options.gid);
        let prepared = self.ctx.prepare(&req)?;
        let timeout = (self.ctx).spawn_timeout(options.timeout_ms, options.kill_signal)?;
        let mut child = (self.ctx).start_child("spawn", &prepared, stdio)?;
        if let Some(timeout) = timeout {
            (child.set_deadline(timeout))
                .map_err(|e| Failure::from_io("setting the child's deadline", &e))?;
        }
        self.table.push(child).map_err(ProcessError::trap)
    }
}

impl ProcessCtxView<'_> {
    fn child(&mut self, child: &Resource<Child>) -> wasmtime::Result<&mut Child> {
        Ok(self.table.get_mut(child)?)
    }

    /// Moves a stream out of resource `parent` into the table, as a
    /// resource of its own: it owns its end of the pipe, so the guest may
    /// drop `parent` first (the stream then reads what is left, then the
    /// end, or fails to write) — any drop order is safe.
    pub(crate) fn take_stream<T: 'static, S: Send + 'static>(
        &mut self,
        parent: &Resource<T>,
        take: impl FnOnce(&mut T) -> Option<S>,
    ) -> wasmtime::Result<Option<Resource<S>>> {
        let Some(stream) = take(self.table.get_mut(parent)?) else {
            return Ok(None);
        };
        Ok(Some(self.table.push(stream)?))
    }

    /// As [`take_stream`](Self::take_stream) for an output pipe, noted in
    /// the context's [`Pipes`](crate::pipe::Pipes) so that it can be given
    /// to another child as stdin.
    pub(crate) fn take_output<T: 'static>(
        &mut self,
        parent: &Resource<T>,
        take: impl FnOnce(&mut T) -> Option<PipeReader>,
    ) -> wasmtime::Result<Option<Resource<DynInputStream>>> {
        let Some(reader) = take(self.table.get_mut(parent)?) else {
            return Ok(None);
        };
        let pipe = reader.handle();
        let stream: Resource<DynInputStream> = self.table.push(Box::new(reader) as _)?;
        self.ctx.pipes.insert(stream.rep(), pipe);
        Ok(Some(stream))
    }
}

impl HostChild for ProcessCtxView<'_> {
    fn pid(&mut self, child: Resource<Child>) -> wasmtime::Result<u32> {
        Ok(self.child(&child)?.pid())
    }

    fn take_stdin(
        &mut self,
        child: Resource<Child>,
    ) -> wasmtime::Result<Option<Resource<DynOutputStream>>> {
        self.take_stream(&child, |c| c.stdin.take())
    }

    fn take_stdout(
        &mut self,
        child: Resource<Child>,
    ) -> wasmtime::Result<Option<Resource<DynInputStream>>> {
        self.take_output(&child, Child::take_stdout)
    }

    fn take_stderr(
        &mut self,
        child: Resource<Child>,
    ) -> wasmtime::Result<Option<Resource<DynInputStream>>> {
        self.take_output(&child, Child::take_stderr)
    }

    fn subscribe(&mut self, child: Resource<Child>) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(self.table, child)
    }

    fn try_wait(&mut self, child: Resource<Child>) -> ProcessResult<Option<Termination>> {
        let child = self.child(&child).map_err(ProcessError::trap)?;
        Ok(child.try_status()?)
    }

    async fn wait(&mut self, child: Resource<Child>) -> ProcessResult<Termination> {
        let child = self.child(&child).map_err(ProcessError::trap)?;
        Ok(child.reap().await?)
    }

    async fn wait_timeout(
        &mut self,
        child: Resource<Child>,
        timeout_ms: u64,
    ) -> ProcessResult<Termination> {
        let child = self.child(&child).map_err(ProcessError::trap)?;
        Ok(child.reap_within(timeout_ms).await?)
    }

    fn kill(&mut self, child: Resource<Child>, signal: u8) -> ProcessResult<()> {
        let child = self.child(&child).map_err(ProcessError::trap)?;
        Ok(child.kill(signal)?)
    }

    fn confinement(&mut self, child: Resource<Child>) -> wasmtime::Result<Confinement> {
        Ok(self.child(&child)?.confinement)
    }

    fn drop(&mut self, child: Resource<Child>) -> wasmtime::Result<()> {
        // Dropping the value kills the process group (see `GroupGuard`).
        self.table.delete(child)?;
        Ok(())
    }
}
