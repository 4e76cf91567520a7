//! Embedding wasmproc-host: grant one program and one directory, then run a
//! guest command component.
//!
//! ```text
//! cargo run -p wasmproc-host --example embed -- guest-examples/prebuilt/seed-exec.wasm
//! ```
//!
//! It grants `/bin/sh` as the shell (`exec` runs `sh -c ...`) and the
//! directory `guest-examples/support` as `/support`, which is where the seed
//! demo's `support` program lives.

use anyhow::{Context as _, Result};
use wasmproc_host::{DirAccess, ProcessCtx, ProcessCtxView, ProcessView};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxView, WasiView};

/// The store's data: WASI, process capabilities, and the table both use.
struct State {
    wasi: WasiCtx,
    process: ProcessCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ProcessView for State {
    fn process(&mut self) -> ProcessCtxView<'_> {
        ProcessCtxView {
            ctx: &mut self.process,
            table: &mut self.table,
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: embed COMPONENT.wasm")?;
    let support = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-examples/support");

    // The guest sees the directory as a preopen and may start children in it.
    let wasi = WasiCtx::builder()
        .inherit_stdio()
        .arg("guest")
        .preopened_dir(support, "/support", FsPerms::ReadOnly)?
        .build();
    let process = ProcessCtx::builder()
        .allow_shell("/bin/sh")?
        .dir(support, "/support", DirAccess::ReadOnly)?
        .on_denial(|denial| eprintln!("embed: denied: {denial}"))
        .build();

    let engine = Engine::new(&Config::new())?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmproc_host::add_to_linker_async(&mut linker)?;

    let component = Component::from_file(&engine, &path)?;
    let mut store = Store::new(
        &engine,
        State {
            wasi,
            process,
            table: ResourceTable::new(),
        },
    );
    let command = Command::instantiate_async(&mut store, &component, &linker).await?;
    let code = match command.wasi_cli_run().call_run(&mut store).await {
        Ok(result) => i32::from(result.is_err()),
        // The guest called `exit(code)`.
        Err(e) => e.downcast_ref::<I32Exit>().map(|exit| exit.0).ok_or(e)?,
    };
    std::process::exit(code);
}
