//! The `wasmproc` command-line host as a library: the store state and the
//! runner that the CLI uses to run a `wasi:cli/command` component with
//! wasmtime-wasi plus `wasmproc:process`. Embedders who want more control use
//! [`wasmproc_host`] directly (see `host/examples/embed.rs`).

#![forbid(unsafe_code)]
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use wasmproc_host::{
    CacheGuard, ComponentCache, ProcessCtx, ProcessCtxView, ProcessView, WorkerCode,
};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::CommandPre;
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
    /// The store's limits: the guest's linear memories are capped at
    /// [`Limits::max_wasm_memory`](wasmproc_host::Limits::max_wasm_memory).
    pub limits: wasmtime::StoreLimits,
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
    /// Every name of the cache's location a grant could reach it by: kept
    /// even when the cache is refused (fail closed).
    guard: Option<CacheGuard>,
    /// Why there is no cache, if there is none.
    no_cache: Option<String>,
}

impl Runner {
    /// An engine configured for async component-model guests, with
    /// wasmtime-wasi and `wasmproc:process` linked, and the component cache
    /// at [`ComponentCache::default_dir`] (without a cache, with a warning,
    /// if it cannot be used; its location still refuses every grant over
    /// it). Fails only if that location cannot be walked (see
    /// [`CacheGuard::at`]).
    pub fn new() -> Result<Runner> {
        let Some(dir) = ComponentCache::default_dir() else {
            let mut runner = Runner::with_cache(None)?;
            runner.no_cache =
                Some("no cache directory: set WASMPROC_CACHE, XDG_CACHE_HOME or HOME".into());
            return Ok(runner);
        };
        match ComponentCache::new(&dir) {
            Ok(cache) => Runner::with_cache(Some(cache)),
            Err(e) => {
                tracing::warn!(target: "wasmproc::cache", error = %format!("{e:#}"),
                    "compiling without a component cache");
                let mut runner = Runner::with_cache(None)?;
                runner.guard = Some(CacheGuard::at(&dir)?);
                runner.no_cache = Some(format!("{e:#}"));
                Ok(runner)
            }
        }
    }

    /// As [`new`](Self::new), with the component cache `cache` (or none).
    pub fn with_cache(cache: Option<ComponentCache>) -> Result<Runner> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmproc_host::add_to_linker_async(&mut linker)?;
        Ok(Runner {
            engine,
            linker,
            no_cache: cache
                .is_none()
                .then(|| "no component cache was given".to_owned()),
            guard: cache.as_ref().map(|c| c.guard().clone()),
            cache,
        })
    }

    /// The engine components are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiled code for the worker processes of guests this runner runs:
    /// its engine's, through its cache (see [`WorkerCode`]).
    pub fn worker_code(&self) -> WorkerCode {
        WorkerCode::compiling(self.engine.clone(), self.cache.clone())
    }

    /// The component cache, if there is one.
    pub fn cache(&self) -> Option<&ComponentCache> {
        self.cache.as_ref()
    }

    /// Every name of the component cache's location a grant could reach
    /// it by, whether or not the cache could be used (`None`: no location
    /// at all): give it to [`ProcessCtxBuilder::cache_guard`](wasmproc_host::ProcessCtxBuilder::cache_guard),
    /// and check the guest's own preopens with it.
    pub fn cache_guard(&self) -> Option<&CacheGuard> {
        self.guard.as_ref()
    }

    /// The component at `path`, compiled once and then loaded from the
    /// component cache, which verifies every entry first (see
    /// [`ComponentCache`]).
    pub fn load(&self, path: &Path) -> Result<Component> {
        let component = match &self.cache {
            Some(cache) => cache.load(&self.engine, path),
            None => Component::from_file(&self.engine, path).map_err(anyhow::Error::from),
        };
        component.with_context(|| format!("cannot load component {}", path.display()))
    }

    /// Compiles the component at `path` into the component cache, unless a
    /// verified entry is there already, and returns the entry's path
    /// (`wasmproc compile`).
    pub fn compile(&self, path: &Path) -> Result<PathBuf> {
        let Some(cache) = &self.cache else {
            bail!(
                "no component cache to fill: {}",
                self.no_cache.as_deref().unwrap_or("none")
            );
        };
        cache
            .compile(&self.engine, path)
            .with_context(|| format!("cannot compile component {}", path.display()))
    }

    /// `component` with its imports resolved against this runner's
    /// linker and its memory images made (copy-on-write, in a memfd),
    /// ready to instantiate as a command any number of times, each
    /// instantiation mapping the images: a warm worker, and the worker
    /// template whose copies inherit them, prepare their components before
    /// they know which they run.
    pub fn prepare(&self, component: &Component) -> Result<CommandPre<GuestState>> {
        let prepared = (component.initialize_copy_on_write_image())
            .and_then(|()| self.linker.instantiate_pre(component))
            .and_then(CommandPre::new);
        (prepared.map_err(anyhow::Error::from))
            .context("cannot instantiate the component as a wasi:cli command")
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
        self.run_prepared(&self.prepare(component)?, wasi, process)
            .await
    }

    /// As [`run`](Self::run), for a component [`prepare`](Self::prepare)d.
    pub async fn run_prepared(
        &self,
        pre: &CommandPre<GuestState>,
        wasi: WasiCtx,
        mut process: ProcessCtx,
    ) -> Result<(GuestExit, Option<anyhow::Error>)> {
        // Warm workers start now, alongside the guest's instantiation.
        process.warm_up();
        let mut limits = wasmtime::StoreLimitsBuilder::new();
        if let Some(max) = process.limits().max_wasm_memory {
            limits = limits.memory_size(usize::try_from(max).unwrap_or(usize::MAX));
        }
        let state = GuestState {
            wasi,
            process,
            table: ResourceTable::new(),
            limits: limits.build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        let command = (pre.instantiate_async(&mut store))
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
