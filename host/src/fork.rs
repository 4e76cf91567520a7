//! `wasmproc:process/fork` and `wasmproc:process/parent`: not implemented by
//! this host yet; `fork` returns `unsupported`, so no `worker` resource can
//! exist, and a component that was not forked has no parent to talk to.

use crate::bindings::fork::{ForkOptions, Host, HostWorker};
use crate::bindings::parent;
use crate::bindings::types::{ErrorCode, ExitStatus};
use crate::{ProcessCtxView, ProcessError, ProcessResult};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynInputStream, DynPollable};

/// A forked worker component running in its own OS process.
#[derive(Debug)]
pub struct Worker {
    _private: (),
}

fn no_worker<T>() -> wasmtime::Result<T> {
    Err(wasmtime::format_err!(
        "no `worker` resource can exist: fork is not implemented"
    ))
}

fn no_worker_trap<T>() -> ProcessResult<T> {
    Err(ProcessError::trap(wasmtime::format_err!(
        "no `worker` resource can exist: fork is not implemented"
    )))
}

impl Host for ProcessCtxView<'_> {
    fn fork(
        &mut self,
        component: String,
        _args: Vec<String>,
        _options: ForkOptions,
    ) -> ProcessResult<Resource<Worker>> {
        Err(ErrorCode::Unsupported(format!(
            "fork (of `{component}`) is not implemented by this host yet"
        ))
        .into())
    }
}

impl HostWorker for ProcessCtxView<'_> {
    fn pid(&mut self, _: Resource<Worker>) -> wasmtime::Result<u32> {
        no_worker()
    }
    async fn send(&mut self, _: Resource<Worker>, _message: Vec<u8>) -> ProcessResult<()> {
        no_worker_trap()
    }
    async fn receive(&mut self, _: Resource<Worker>) -> ProcessResult<Vec<u8>> {
        no_worker_trap()
    }
    fn try_receive(&mut self, _: Resource<Worker>) -> ProcessResult<Option<Vec<u8>>> {
        no_worker_trap()
    }
    fn subscribe(&mut self, _: Resource<Worker>) -> wasmtime::Result<Resource<DynPollable>> {
        no_worker()
    }
    fn subscribe_exit(&mut self, _: Resource<Worker>) -> wasmtime::Result<Resource<DynPollable>> {
        no_worker()
    }
    fn try_wait(&mut self, _: Resource<Worker>) -> ProcessResult<Option<ExitStatus>> {
        no_worker_trap()
    }
    async fn wait(&mut self, _: Resource<Worker>) -> ProcessResult<ExitStatus> {
        no_worker_trap()
    }
    fn kill(&mut self, _: Resource<Worker>, _signal: u8) -> ProcessResult<()> {
        no_worker_trap()
    }
    fn take_stdout(
        &mut self,
        _: Resource<Worker>,
    ) -> wasmtime::Result<Option<Resource<DynInputStream>>> {
        no_worker()
    }
    fn take_stderr(
        &mut self,
        _: Resource<Worker>,
    ) -> wasmtime::Result<Option<Resource<DynInputStream>>> {
        no_worker()
    }
    fn drop(&mut self, _: Resource<Worker>) -> wasmtime::Result<()> {
        no_worker()
    }
}

fn not_forked() -> ProcessError {
    ErrorCode::Unsupported(
        "this component was not started by fork: it has no parent channel".into(),
    )
    .into()
}

impl parent::Host for ProcessCtxView<'_> {
    async fn send(&mut self, _message: Vec<u8>) -> ProcessResult<()> {
        Err(not_forked())
    }
    async fn receive(&mut self) -> ProcessResult<Vec<u8>> {
        Err(not_forked())
    }
    fn try_receive(&mut self) -> ProcessResult<Option<Vec<u8>>> {
        Err(not_forked())
    }
    /// Ready at once, so a guest polling it goes on to `try-receive` and
    /// gets the `unsupported` error instead of waiting forever.
    fn subscribe(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        let ready = self.table.push(Ready)?;
        wasmtime_wasi::p2::subscribe(self.table, ready)
    }
}

/// A pollable that is always ready.
struct Ready;

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Ready {
    async fn ready(&mut self) {}
}
