//! # wasmproc-host
//!
//! A [wasmtime] host for the `wasmproc:process` WIT package: WebAssembly
//! components `exec`, `spawn` and `fork` **real OS processes**, under
//! capabilities the embedder grants: which programs, in which directories,
//! with which environment variable names, under which limits. Everything is
//! denied by default.
//!
//! It is built like `wasmtime-wasi`: a [`ProcessCtx`] made by a
//! [`ProcessCtxBuilder`] (whose docs list every default), a small view trait
//! ([`ProcessView`]) giving the host access to it and to the store's
//! [`ResourceTable`], and [`add_to_linker_async`]. A policy denial reaches the
//! guest as an `error-code` value; only a host bug or an invalid handle traps.
//!
//! | interface | status |
//! |---|---|
//! | `exec` (`exec`, `exec-file`) | implemented |
//! | `spawn` | implemented: streaming stdio as wasi:io streams |
//! | `fork`, `parent` | implemented: workers in their own processes, [`Channel`] |
//!
//! ## What a child gets
//!
//! - the granted program's absolute path, resolved when it was granted,
//!   with `argv[0]` its file name;
//! - an empty environment plus the allowed names the guest set (loader and
//!   interpreter injection variables only if the embedder opted in);
//! - a working directory inside a granted directory, entered with `fchdir`
//!   on a directory opened through cap-std (so `..` and symlinks cannot
//!   leave it), or `/` when no directory was granted;
//! - its own session and process group (no controlling terminal), killed
//!   as a whole on timeout, on buffer
//!   overflow, when an `exec` ends, when the guest drops its `child`, when
//!   the store is dropped (guest trap or end), and SIGKILL if the host
//!   thread that started it dies;
//! - the guest's sandbox (see [`sandbox`]): an unprivileged user under a
//!   root host, a mount namespace in which only the system paths, the
//!   grants and the granted programs exist, an empty network namespace, an
//!   IPC namespace and session keyring of its own, and a seccomp filter;
//! - `no_new_privs`, the context's resource limits, no Linux capability
//!   (even under a root host), and Landlock confinement to the granted
//!   directories, programs and the system files programs need, without TCP
//!   (see [`confine`]), as a second wall;
//! - no descriptor of the host (its `inherit`ed output is a pipe the host
//!   copies; an inherited stdin is reopened read-only);
//! - a place in the guest's cgroup v2 (where the host may make one), which
//!   is killed as a whole when the context is dropped, so nothing a child
//!   started outlives the guest (optionally a cgroup per child, see
//!   [`ProcessCtxBuilder::cgroup_per_child`]).
//!
//! Children start the way `posix_spawn` starts them (a vfork-style
//! `clone`, nothing of the host copied), and are waited on through pidfds:
//! the context must live, and be dropped, inside a tokio runtime.
//!
//! ## Example
//!
//! ```no_run
//! use wasmproc_host::{DirAccess, ProcessCtx, ProcessCtxView, ProcessView};
//! use wasmtime::component::{Linker, ResourceTable};
//! use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
//!
//! struct State { wasi: WasiCtx, process: ProcessCtx, table: ResourceTable }
//!
//! impl WasiView for State {
//!     fn ctx(&mut self) -> WasiCtxView<'_> {
//!         WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
//!     }
//! }
//! impl ProcessView for State {
//!     fn process(&mut self) -> ProcessCtxView<'_> {
//!         ProcessCtxView { ctx: &mut self.process, table: &mut self.table }
//!     }
//! }
//!
//! # fn main() -> anyhow::Result<()> {
//! let process = ProcessCtx::builder()
//!     .allow_program("sort")?
//!     .dir("data", "/data", DirAccess::ReadOnly)?
//!     .build();
//! # let engine = wasmtime::Engine::default();
//! let mut linker = Linker::<State>::new(&engine);
//! wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
//! wasmproc_host::add_to_linker_async(&mut linker)?;
//! # Ok(()) }
//! ```
//!
//! See `host/examples/embed.rs` for a complete embedding.

#![deny(missing_docs)]
#![forbid(unsafe_op_in_unsafe_fn)]
// `unsafe` lives in `sys` only, each block with a `// SAFETY:` comment.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod agent;
mod audit;
pub mod bindings;
mod cache;
pub mod channel;
mod child;
pub mod cluster;
pub mod code;
mod convert;
mod ctx;
mod error;
mod exec;
pub mod failure;
mod fork;
mod forked;
mod hex;
mod launch;
mod memfd;
pub mod outcome;
mod pipe;
mod policy;
mod pool;
mod spawn;
mod stdio;
#[allow(unsafe_code)]
mod sys;
pub mod worker;

pub use audit::AuditLog;
pub use cache::{CacheGuard, ComponentCache};
pub use channel::Channel;
pub use child::Child;
pub use code::WorkerCode;
pub use ctx::{ProcessCtx, ProcessCtxBuilder};
pub use error::{ProcessError, ProcessResult};
pub use forked::Worker;
pub use launch::{confine, sandbox};
pub use policy::{
    ChildRlimits, DEFAULT_MAX_WASM_MEMORY, DenialReporter, DirAccess, Limits, Policy,
    default_child_processes,
};
pub use policy::{Denial, INJECTION_ENV, INJECTION_ENV_PREFIXES, is_injection_env};

use bindings::types::ErrorCode;
use wasmtime::component::{HasData, Linker, ResourceTable};

/// What the `wasmproc:process` host functions work on: the guest's
/// [`ProcessCtx`] and the store's resource table (shared with wasmtime-wasi,
/// so child streams are ordinary wasi:io resources).
pub struct ProcessCtxView<'a> {
    /// The guest's process capabilities and state.
    pub ctx: &'a mut ProcessCtx,
    /// The store's resource table.
    pub table: &'a mut ResourceTable,
}

/// Gives the `wasmproc:process` host access to a store's data. Implement it
/// beside [`wasmtime_wasi::WasiView`], returning the same table.
pub trait ProcessView: Send {
    /// The guest's [`ProcessCtx`] and resource table.
    fn process(&mut self) -> ProcessCtxView<'_>;
}

/// The [`HasData`] marker of this crate's host functions.
struct WasmProcess;

impl HasData for WasmProcess {
    type Data<'a> = ProcessCtxView<'a>;
}

/// Adds every interface of `wasmproc:process` (`types`, `exec`, `spawn`,
/// `fork`, `parent`) to `linker`. The host functions are async: call the
/// guest with the `_async` entry points (`call_async`, or
/// `Command::instantiate_async` and `call_run`) on a tokio runtime; no
/// `Config` switch is needed in wasmtime 48 (`async_support` is
/// deprecated there).
pub fn add_to_linker_async<T: ProcessView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    bindings::types::add_to_linker::<T, WasmProcess>(linker, T::process)?;
    bindings::exec::add_to_linker::<T, WasmProcess>(linker, T::process)?;
    bindings::spawn::add_to_linker::<T, WasmProcess>(linker, T::process)?;
    bindings::fork::add_to_linker::<T, WasmProcess>(linker, T::process)?;
    bindings::parent::add_to_linker::<T, WasmProcess>(linker, T::process)?;
    Ok(())
}

impl bindings::types::Host for ProcessCtxView<'_> {
    fn convert_error_code(&mut self, err: ProcessError) -> wasmtime::Result<ErrorCode> {
        err.downcast()
    }
}
