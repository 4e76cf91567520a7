//! `producer | consumer` through the guest: spawns two programs and pumps
//! the first's stdout into the second's stdin, while copying the second's
//! stdout to the guest's own stdout — streaming both ways, with wasi:io
//! backpressure (`check-write`) and one `poll` over all three streams.
//!
//! ```text
//! pipeline PRODUCER [ARGS]... --- CONSUMER [ARGS]...
//! wasmproc run --allow-run seq --allow-run sort pipeline.wasm seq 1 20 --- sort -rn
//! ```
//!
//! Exits 0 when both programs exit 0; otherwise prints their statuses to
//! stderr and exits 1.

use std::io::Write;
use wasmproc_guest::io::poll::{Pollable, poll};
use wasmproc_guest::io::streams::{InputStream, OutputStream};
use wasmproc_guest::spawn::{Child, SpawnOptions, spawn};
use wasmproc_guest::types::{ExitStatus, Stdio};

fn start(argv: &[String], stdin: Stdio, stdout: Stdio) -> Child {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("usage: pipeline PRODUCER [ARGS]... --- CONSUMER [ARGS]...");
        std::process::exit(2);
    };
    let options = SpawnOptions { stdin, stdout, stderr: Stdio::Inherit, ..SpawnOptions::default() };
    spawn(program, args, &options).unwrap_or_else(|e| {
        eprintln!("pipeline: cannot start {program}: {}: {}", e.code(), e.message());
        std::process::exit(1);
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args.iter().position(|a| a == "---").unwrap_or(args.len());
    let producer = start(&args[..split], Stdio::Null, Stdio::Piped);
    let consumer = start(args.get(split + 1..).unwrap_or_default(), Stdio::Piped, Stdio::Piped);
    pump(&producer, &consumer);
    let statuses = [producer.wait(), consumer.wait()];
    if statuses.iter().all(|s| matches!(s, Ok(ExitStatus::Exited(0)))) {
        return;
    }
    eprintln!("pipeline: producer {:?}, consumer {:?}", statuses[0], statuses[1]);
    std::process::exit(1);
}

fn pump(producer: &Child, consumer: &Child) {
    let mut from: Option<InputStream> = producer.take_stdout();
    let mut to: Option<OutputStream> = consumer.take_stdin();
    let mut out: Option<InputStream> = consumer.take_stdout();
    let mut pending: Vec<u8> = Vec::new();
    let mut stdout = std::io::stdout().lock();
    while out.is_some() {
        if from.is_none() && pending.is_empty() {
            // Flush what the stream accepted, then close it: EOF for the
            // consumer. (Dropping an unflushed wasi:io stream may lose data.)
            if let Some(t) = to.take() {
                let _ = t.blocking_flush();
            }
        }
        let mut pollables: Vec<(u8, Pollable)> = Vec::new();
        match (&from, &to) {
            (Some(f), Some(_)) if pending.is_empty() => pollables.push((0, f.subscribe())),
            (_, Some(t)) if !pending.is_empty() => pollables.push((1, t.subscribe())),
            _ => {}
        }
        if let Some(o) = &out {
            pollables.push((2, o.subscribe()));
        }
        let ready: Vec<u8> = poll(&pollables.iter().map(|(_, p)| p).collect::<Vec<_>>())
            .into_iter()
            .map(|i| pollables[i as usize].0)
            .collect();
        drop(pollables);
        for which in ready {
            match which {
                0 => match from.as_ref().map(|f| f.read(64 * 1024)) {
                    Some(Ok(bytes)) => pending = bytes,
                    _ => from = None,
                },
                1 => {
                    let t = to.as_ref().expect("polled");
                    let written = t.check_write().and_then(|n| {
                        let n = pending.len().min(n as usize);
                        t.write(&pending[..n]).map(|()| n)
                    });
                    match written {
                        Ok(n) => drop(pending.drain(..n)),
                        // The consumer stopped reading: stop producing, as a shell would.
                        Err(_) => {
                            pending.clear();
                            from = None;
                            to = None;
                        }
                    }
                }
                _ => match out.as_ref().map(|o| o.read(64 * 1024)) {
                    Some(Ok(bytes)) => stdout.write_all(&bytes).expect("write stdout"),
                    _ => out = None,
                },
            }
        }
    }
    stdout.flush().expect("flush stdout");
}
