//! The `wasmproc` command-line host as a library: the store state and the
//! runner that the CLI uses to run a `wasi:cli/command` component with
//! wasmtime-wasi plus `wasmproc:process`. Embedders who want more control use
//! [`wasmproc_host`] directly (see `host/examples/embed.rs`).

use anyhow::{Context as _, Result};
use std::path::Path;
use wasmproc_host::{ComponentCache, ProcessCtx, ProcessCtxView, ProcessView};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

/// The data of a guest's store: its WASI context, its process capabilities
/// and the resource table both share.
pub struct GuestState {
    /// wasmtime-wasi's context (args, env, stdio, preopens).
    pub wasi: WasiCtx,
    /// The guest's process capabilities.
    pub process: ProcessCtx,
    /// The store's resources.
    pub table: ResourceTable,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ProcessView for GuestState {
    fn process(&mut self) -> ProcessCtxView<'_> {
        ProcessCtxView {
            ctx: &mut self.process,
            table: &mut self.table,
        }
    }
}

/// How a guest command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestExit {
    /// `wasi:cli/run` returned, or the guest called `exit`, with this code.
    Code(i32),
    /// The guest trapped; the message is in the returned error.
    Trap,
}

/// Compiles components and runs them as commands. One runner (one engine)
/// can run many guests, each in its own store.
pub struct Runner {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: Option<ComponentCache>,
}

impl Runner {
    /// An engine configured for async component-model guests, with
    /// wasmtime-wasi and `wasmproc:process` linked.
    pub fn new() -> Result<Runner> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmproc_host::add_to_linker_async(&mut linker)?;
        let cache = ComponentCache::default_dir().and_then(|dir| match ComponentCache::new(&dir) {
            Ok(cache) => Some(cache),
            Err(e) => {
                tracing::warn!(error = %e, "compiling without a component cache");
                None
            }
        });
        Ok(Runner {
            engine,
            linker,
            cache,
        })
    }

    /// The component at `path`, compiled once and then loaded from the
    /// component cache ([`ComponentCache::default_dir`]).
    pub fn load(&self, path: &Path) -> Result<Component> {
        let component = match &self.cache {
            Some(cache) => cache.load(&self.engine, path),
            None => Component::from_file(&self.engine, path).map_err(anyhow::Error::from),
        };
        component.with_context(|| format!("cannot load component {}", path.display()))
    }

    /// Runs `component`'s `wasi:cli/run` export with `wasi` and `process`.
    /// A trap is returned as `Ok((GuestExit::Trap, Some(error)))` so the host
    /// can report it and go on.
    pub async fn run(
        &self,
        component: &Component,
        wasi: WasiCtx,
        process: ProcessCtx,
    ) -> Result<(GuestExit, Option<anyhow::Error>)> {
        let state = GuestState {
            wasi,
            process,
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        let command = Command::instantiate_async(&mut store, component, &self.linker)
            .await
            .map_err(anyhow::Error::from)
            .context("cannot instantiate the component as a wasi:cli command")?;
        let result = command.wasi_cli_run().call_run(&mut store).await;
        // A forked worker's messages are all delivered before it exits.
        if let Some(channel) = store.data_mut().process.take_parent_channel() {
            channel.close().await;
        }
        Ok(match result {
            Ok(Ok(())) => (GuestExit::Code(0), None),
            Ok(Err(())) => (GuestExit::Code(1), None),
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => (GuestExit::Code(exit.0), None),
                None => (GuestExit::Trap, Some(anyhow::Error::from(e))),
            },
        })
    }
}
