//! `wasmproc:process/spawn`: not implemented by this host yet; `spawn`
//! returns `unsupported`, so no `child` resource can exist.

use crate::bindings::spawn::{Host, HostChild, SpawnOptions};
use crate::bindings::types::{Confinement, ErrorCode, ExitStatus};
use crate::{ProcessCtxView, ProcessError, ProcessResult};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable};

/// A child process started by `spawn`.
#[derive(Debug)]
pub struct Child {
    _private: (),
}

fn no_child<T>() -> wasmtime::Result<T> {
    Err(wasmtime::format_err!(
        "no `child` resource can exist: spawn is not implemented"
    ))
}

fn no_child_trap<T>() -> ProcessResult<T> {
    Err(ProcessError::trap(wasmtime::format_err!(
        "no `child` resource can exist: spawn is not implemented"
    )))
}

impl Host for ProcessCtxView<'_> {
    fn spawn(
        &mut self,
        program: String,
        _args: Vec<String>,
        _options: SpawnOptions,
    ) -> ProcessResult<Resource<Child>> {
        Err(ErrorCode::Unsupported(format!(
            "spawn (of `{program}`) is not implemented by this host yet; use exec-file"
        ))
        .into())
    }
}

impl HostChild for ProcessCtxView<'_> {
    fn pid(&mut self, _: Resource<Child>) -> wasmtime::Result<u32> {
        no_child()
    }
    fn take_stdin(
        &mut self,
        _: Resource<Child>,
    ) -> wasmtime::Result<Option<Resource<DynOutputStream>>> {
        no_child()
    }
    fn take_stdout(
        &mut self,
        _: Resource<Child>,
    ) -> wasmtime::Result<Option<Resource<DynInputStream>>> {
        no_child()
    }
    fn take_stderr(
        &mut self,
        _: Resource<Child>,
    ) -> wasmtime::Result<Option<Resource<DynInputStream>>> {
        no_child()
    }
    fn subscribe(&mut self, _: Resource<Child>) -> wasmtime::Result<Resource<DynPollable>> {
        no_child()
    }
    fn try_wait(&mut self, _: Resource<Child>) -> ProcessResult<Option<ExitStatus>> {
        no_child_trap()
    }
    async fn wait(&mut self, _: Resource<Child>) -> ProcessResult<ExitStatus> {
        no_child_trap()
    }
    fn kill(&mut self, _: Resource<Child>, _signal: u8) -> ProcessResult<()> {
        no_child_trap()
    }
    fn confinement(&mut self, _: Resource<Child>) -> wasmtime::Result<Confinement> {
        no_child()
    }
    fn drop(&mut self, _: Resource<Child>) -> wasmtime::Result<()> {
        no_child()
    }
}
