//! `wasmproc:process/spawn`: running children with streaming stdio.
//!
//! A child's piped stdio are wasi:io streams that read and write the pipe
//! directly ([`crate::pipe`]), pushed into the resource table as children of
//! the `child` resource. The host holds no output: a guest that does not
//! read makes the child block on a full pipe; `check-write` offers stdin's
//! bounded write budget.

use crate::bindings::spawn::{Host, HostChild, SpawnOptions};
use crate::bindings::types::{Confinement, Stdio};
use crate::child::Child;
use crate::failure::Failure;
use crate::pipe::PipeReader;
use crate::policy::{Request, Run};
use crate::stdio::StdioRequest;
use crate::{ProcessCtxView, ProcessError, ProcessResult};
use std::sync::Arc;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable};

impl ProcessCtxView<'_> {
    /// `kind`, taking a stream it gives out of the table.
    pub(crate) fn ask(&mut self, kind: Stdio) -> Result<StdioRequest, Failure> {
        Ok(match kind {
            Stdio::Piped => StdioRequest::Piped,
            Stdio::Inherit => StdioRequest::Inherit,
            Stdio::Null => StdioRequest::Null,
            Stdio::File(file) => StdioRequest::File {
                path: file.path,
                mode: file.mode.into(),
            },
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
                StdioRequest::PipeFrom(
                    pipe.as_deref()
                        .map(crate::pipe::blocking_read_end)
                        .transpose(),
                )
            }
        })
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

    fn try_wait(
        &mut self,
        child: Resource<Child>,
    ) -> ProcessResult<Option<crate::bindings::types::Termination>> {
        let child = self.child(&child).map_err(ProcessError::trap)?;
        Ok(child.try_status()?.map(Into::into))
    }

    async fn wait(
        &mut self,
        child: Resource<Child>,
    ) -> ProcessResult<crate::bindings::types::Termination> {
        let child = self.child(&child).map_err(ProcessError::trap)?;
        Ok(child.reap().await?.into())
    }

    async fn wait_timeout(
        &mut self,
        child: Resource<Child>,
        timeout_ms: u64,
    ) -> ProcessResult<crate::bindings::types::Termination> {
        let child = self.child(&child).map_err(ProcessError::trap)?;
        Ok(child.reap_within(timeout_ms).await?.into())
    }

    fn kill(&mut self, child: Resource<Child>, signal: u8) -> ProcessResult<()> {
        let child = self.child(&child).map_err(ProcessError::trap)?;
        Ok(child.kill(signal)?)
    }

    fn confinement(&mut self, child: Resource<Child>) -> wasmtime::Result<Confinement> {
        Ok(self.child(&child)?.confinement.into())
    }

    fn drop(&mut self, child: Resource<Child>) -> wasmtime::Result<()> {
        // Dropping the value kills the process group (see `GroupGuard`).
        self.table.delete(child)?;
        Ok(())
    }
}
