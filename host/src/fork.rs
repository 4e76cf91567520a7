//! `wasmproc:process/fork` and `wasmproc:process/parent`: worker components
//! in their own OS processes, with a message channel.
//!
//! `fork` checks that every capability asked for the worker is one the
//! guest holds (programs, shell, directories with read-only kept read-only,
//! environment names; limits at most the guest's own), starts the worker
//! executable in worker mode as a child (own process group, no orphans, as
//! for `spawn`) and sends it a `WorkerSpec` over a socketpair. A worker may
//! fork in turn the components its parent passed on (`fork-options.forks`),
//! each level narrowing again, lending out of the one budget of the tree and
//! reporting up to the one audit log.

use crate::bindings::fork::{ForkOptions, Host, HostWorker};
use crate::bindings::parent;
use crate::channel::{Channel, Readiness};
use crate::failure::Failure;
use crate::forked::{Worker, WorkerSite};
use crate::policy::{WorkerRequest, no_nul};
use crate::stdio::StdioRequest;
use crate::{ProcessCtxView, ProcessError, ProcessResult};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynInputStream, DynPollable, Pollable};

impl Host for ProcessCtxView<'_> {
    async fn fork(
        &mut self,
        component: String,
        args: Vec<String>,
        options: ForkOptions,
    ) -> ProcessResult<Resource<Worker>> {
        let request = WorkerRequest::from(&options);
        // Streams given are taken first: they are the host's now.
        let stdio = [
            StdioRequest::Null,
            self.ask(options.stdout)?,
            self.ask(options.stderr)?,
        ];
        no_nul("the component name", &component)?;
        for arg in &args {
            no_nul("an argument", arg)?;
        }
        let worker = match options.placement {
            crate::bindings::fork::Placement::Local => {
                self.ctx.template_started().await;
                self.fork_local(&component, args, &request, stdio)?
            }
            crate::bindings::fork::Placement::Cluster => {
                crate::pool::fork_remote(self.ctx, &component, args, &request, &[], stdio).await?
            }
            crate::bindings::fork::Placement::Labels(labels) => {
                crate::pool::fork_remote(self.ctx, &component, args, &request, &labels, stdio)
                    .await?
            }
        };
        self.table.push(worker).map_err(ProcessError::trap)
    }
}

impl ProcessCtxView<'_> {
    fn fork_local(
        &mut self,
        component: &str,
        args: Vec<String>,
        request: &WorkerRequest,
        stdio: [StdioRequest; 3],
    ) -> Result<Worker, Failure> {
        let ctx = &mut *self.ctx;
        let path = (ctx.policy.find_fork(component))
            .map_err(|d| ctx.deny(d))?
            .path
            .clone();
        let (spec, dirs, lent) = ctx.narrow(path, args, request)?;
        let started = ctx.start_worker(spec, dirs, lent, stdio, None)?;
        Ok(Worker {
            channel: ctx.channel(started.socket)?,
            end: WorkerSite::Local(started.child),
            reports: started.reports,
        })
    }
}

impl ProcessCtxView<'_> {
    fn worker(&mut self, worker: &Resource<Worker>) -> ProcessResult<&mut Worker> {
        self.table.get_mut(worker).map_err(ProcessError::trap)
    }

    /// A pollable for `channel`'s readiness, owned by the pollable itself
    /// and, if given, a table child of `owner`.
    fn channel_pollable<T: 'static>(
        &mut self,
        readiness: Readiness,
        owner: Option<&Resource<T>>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let readiness = match owner {
            Some(owner) => self.table.push_child(readiness, owner)?,
            None => self.table.push(readiness)?,
        };
        wasmtime_wasi::p2::subscribe(self.table, readiness)
    }
}

impl HostWorker for ProcessCtxView<'_> {
    fn pid(&mut self, worker: Resource<Worker>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&worker)?.end.pid())
    }

    async fn send(&mut self, worker: Resource<Worker>, message: Vec<u8>) -> ProcessResult<()> {
        Ok((self.worker(&worker)?.channel.send(message).await).map_err(Failure::from)?)
    }

    async fn receive(&mut self, worker: Resource<Worker>) -> ProcessResult<Vec<u8>> {
        self.ctx.refill();
        Ok((self.worker(&worker)?.channel.receive().await).map_err(Failure::from)?)
    }

    fn try_receive(&mut self, worker: Resource<Worker>) -> ProcessResult<Option<Vec<u8>>> {
        Ok((self.worker(&worker)?.channel.try_receive()).map_err(Failure::from)?)
    }

    fn subscribe(&mut self, worker: Resource<Worker>) -> wasmtime::Result<Resource<DynPollable>> {
        self.ctx.refill();
        let readiness = self.table.get(&worker)?.channel.readiness();
        self.channel_pollable(readiness, Some(&worker))
    }

    fn subscribe_exit(
        &mut self,
        worker: Resource<Worker>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(self.table, worker)
    }

    fn close_channel(&mut self, worker: Resource<Worker>) -> wasmtime::Result<()> {
        self.table.get(&worker)?.channel.close_here();
        Ok(())
    }

    fn try_wait(
        &mut self,
        worker: Resource<Worker>,
    ) -> ProcessResult<Option<crate::bindings::types::Termination>> {
        Ok(self.worker(&worker)?.try_status()?.map(Into::into))
    }

    async fn wait(
        &mut self,
        worker: Resource<Worker>,
    ) -> ProcessResult<crate::bindings::types::Termination> {
        self.ctx.refill();
        Ok(self.worker(&worker)?.reap().await?.into())
    }

    async fn wait_timeout(
        &mut self,
        worker: Resource<Worker>,
        timeout_ms: u64,
    ) -> ProcessResult<crate::bindings::types::Termination> {
        Ok(self.worker(&worker)?.reap_within(timeout_ms).await?.into())
    }

    fn kill(&mut self, worker: Resource<Worker>, signal: u8) -> ProcessResult<()> {
        Ok(self.worker(&worker)?.end.kill(signal)?)
    }

    fn take_stdout(
        &mut self,
        worker: Resource<Worker>,
    ) -> wasmtime::Result<Option<Resource<DynInputStream>>> {
        self.take_output(&worker, |w: &mut Worker| w.end.take_stdout())
    }

    fn take_stderr(
        &mut self,
        worker: Resource<Worker>,
    ) -> wasmtime::Result<Option<Resource<DynInputStream>>> {
        self.take_output(&worker, |w: &mut Worker| w.end.take_stderr())
    }

    fn drop(&mut self, worker: Resource<Worker>) -> wasmtime::Result<()> {
        // Dropping the value kills the worker's process group.
        self.table.delete(worker)?;
        Ok(())
    }
}

fn not_forked() -> Failure {
    Failure::Unsupported("this component was not started by fork: it has no parent channel".into())
}

impl ProcessCtxView<'_> {
    fn parent(&self) -> Result<&Channel, Failure> {
        self.ctx.parent.as_ref().ok_or_else(not_forked)
    }
}

impl parent::Host for ProcessCtxView<'_> {
    async fn send(&mut self, message: Vec<u8>) -> ProcessResult<()> {
        Ok((self.parent()?.send(message).await).map_err(Failure::from)?)
    }

    async fn receive(&mut self) -> ProcessResult<Vec<u8>> {
        Ok((self.parent()?.receive().await).map_err(Failure::from)?)
    }

    fn try_receive(&mut self) -> ProcessResult<Option<Vec<u8>>> {
        Ok((self.parent()?.try_receive()).map_err(Failure::from)?)
    }

    /// For a component that was not forked, nothing to close.
    fn close(&mut self) -> wasmtime::Result<()> {
        if let Some(channel) = &self.ctx.parent {
            channel.close_here();
        }
        Ok(())
    }

    /// Ready when `receive` would not block; for a component that was not
    /// forked, ready at once, so that it goes on to `try-receive` and gets
    /// `unsupported` instead of waiting forever.
    fn subscribe(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        match &self.ctx.parent {
            Some(channel) => {
                let readiness = channel.readiness();
                self.channel_pollable::<Readiness>(readiness, None)
            }
            None => {
                let ready = self.table.push(Ready)?;
                wasmtime_wasi::p2::subscribe(self.table, ready)
            }
        }
    }
}

/// A pollable that is always ready.
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}
