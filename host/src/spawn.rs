//! `wasmproc:process/spawn`: running children with streaming stdio.
//!
//! A child's piped stdio are wasi:io streams that read and write the pipe
//! directly ([`crate::pipe`]), pushed into the resource table as children of
//! the `child` resource. The host holds no output: a guest that does not
//! read makes the child block on a full pipe; `check-write` offers stdin's
//! bounded write budget.

use crate::bindings::spawn::{Host, HostChild, SpawnOptions};
use crate::bindings::types::{Confinement, ErrorCode, ExitStatus, Stdio as StdioKind};
use crate::pipe::{PipeReader, PipeWriter};
use crate::policy::{Prepared, Request, Run};
use crate::process::{ChildIo, GroupGuard, OsChild, signal};
use crate::{ProcessCtx, ProcessCtxView, ProcessError, ProcessResult};
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
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
    group: GroupGuard,
    stdin: Option<DynOutputStream>,
    stdout: Option<DynInputStream>,
    stderr: Option<DynInputStream>,
    confinement: Confinement,
    /// Tasks copying `inherit`ed output to the guest's streams.
    forwarders: Vec<JoinHandle<()>>,
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
    pub(crate) async fn reap(&mut self) -> Result<ExitStatus, ErrorCode> {
        let status = (self.process.wait().await).map_err(|e| {
            ErrorCode::from_io(format_args!("waiting for child {}", self.group.pid()), &e)
        })?;
        self.group.exited(status);
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
        Ok(status)
    }
}

impl Drop for Child {
    /// Kills the group now; the `OsChild` then reaps the leader in the
    /// background, so no zombie is left.
    fn drop(&mut self) {
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

/// Where one output stream of a child goes.
enum Route {
    /// A pipe the guest reads as a wasi:io input-stream.
    Guest,
    /// A pipe the host copies to the guest's own stream (`inherit`).
    Forward(Pin<Box<dyn AsyncWrite + Send + Sync>>),
    /// Straight to /dev/null.
    Os,
}

impl ProcessCtx {
    /// The OS stdio and route of a child's output stream given as `kind`.
    ///
    /// An `inherit`ed stream is a pipe the host copies into `inherit_to`,
    /// never the host's own open file: a child holding that could truncate
    /// or seek the operator's log, or change its flags.
    fn route(&self, kind: StdioKind, inherit_to: &dyn StdoutStream) -> (ChildIo, Route) {
        match kind {
            StdioKind::Piped => (ChildIo::Pipe, Route::Guest),
            StdioKind::Inherit => (
                ChildIo::Pipe,
                Route::Forward(Box::into_pin(inherit_to.async_stream())),
            ),
            StdioKind::Null => (ChildIo::Null, Route::Os),
        }
    }
}

impl Route {
    /// The guest's stream for `pipe`, or `None` when the host forwards it
    /// (starting the copy) or there is no pipe.
    fn stream(
        self,
        pipe: Option<OwnedFd>,
        forwarders: &mut Vec<JoinHandle<()>>,
    ) -> io::Result<Option<DynInputStream>> {
        let Some(pipe) = pipe else { return Ok(None) };
        Ok(match self {
            Route::Guest => Some(Box::new(PipeReader::new(pipe)?)),
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
        stdin: StdioKind,
        stdout: StdioKind,
        stderr: StdioKind,
    ) -> Result<Child, ErrorCode> {
        let stdin = match stdin {
            StdioKind::Piped => ChildIo::Pipe,
            StdioKind::Inherit => ChildIo::Inherit,
            StdioKind::Null => ChildIo::Null,
        };
        let (out_os, out_route) = match &self.inherit_stdout {
            Some(to) => self.route(stdout, to.as_ref()),
            None => self.route(stdout, &io::stdout()),
        };
        let (err_os, err_route) = match &self.inherit_stderr {
            Some(to) => self.route(stderr, to.as_ref()),
            None => self.route(stderr, &io::stderr()),
        };
        let mut launched = self.launch(kind, prepared, [stdin, out_os, err_os])?;
        let process = &mut launched.child;
        let mut forwarders = Vec::new();
        let pipes = |e: io::Error| ErrorCode::from_io("setting up the child's pipes", &e);
        let stdin = match process.stdin.take() {
            Some(w) => Some(Box::new(PipeWriter::new(w).map_err(pipes)?) as DynOutputStream),
            None => None,
        };
        let stdout = (out_route.stream(process.stdout.take(), &mut forwarders)).map_err(pipes)?;
        let stderr = (err_route.stream(process.stderr.take(), &mut forwarders)).map_err(pipes)?;
        Ok(Child {
            confinement: launched.confinement,
            process: launched.child,
            group: launched.group,
            stdin,
            stdout,
            stderr,
            forwarders,
        })
    }
}

impl Child {
    /// The leader's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.group.pid()
    }

    /// The exit status if the leader has exited, without blocking.
    pub(crate) fn try_status(&mut self) -> Result<Option<ExitStatus>, ErrorCode> {
        let pid = self.pid();
        let status = (self.process.try_wait())
            .map_err(|e| ErrorCode::from_io(format_args!("checking child {pid}"), &e))?;
        if let Some(status) = status {
            self.group.exited(status);
        }
        Ok(status)
    }

    /// Sends signal number `n` to the group.
    pub(crate) fn kill(&self, n: u8) -> Result<(), ErrorCode> {
        let signal = signal(n)?;
        (self.group.signal(signal))
            .map_err(|e| ErrorCode::from_io(format_args!("signalling child {}", self.pid()), &e))
    }

    /// Takes the piped stdout.
    pub(crate) fn take_stdout(&mut self) -> Option<DynInputStream> {
        self.stdout.take()
    }

    /// Takes the piped stderr.
    pub(crate) fn take_stderr(&mut self) -> Option<DynInputStream> {
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
        let req = Request::new(Run::Program(&program, &args), &options.cwd, &options.env)
            .user(options.uid, options.gid);
        let prepared = self.ctx.prepare(&req)?;
        let child = (self.ctx).start_child(
            "spawn",
            &prepared,
            options.stdin,
            options.stdout,
            options.stderr,
        )?;
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
        self.take_stream(&child, Child::take_stdout)
    }

    fn take_stderr(
        &mut self,
        child: Resource<Child>,
    ) -> wasmtime::Result<Option<Resource<DynInputStream>>> {
        self.take_stream(&child, Child::take_stderr)
    }

    fn subscribe(&mut self, child: Resource<Child>) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(self.table, child)
    }

    fn try_wait(&mut self, child: Resource<Child>) -> ProcessResult<Option<ExitStatus>> {
        let child = self.child(&child).map_err(ProcessError::trap)?;
        Ok(child.try_status()?)
    }

    async fn wait(&mut self, child: Resource<Child>) -> ProcessResult<ExitStatus> {
        let child = self.child(&child).map_err(ProcessError::trap)?;
        Ok(child.reap().await?)
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
