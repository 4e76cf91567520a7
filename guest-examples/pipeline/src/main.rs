//! `producer | consumer`, child to child: spawns the producer with a piped
//! stdout and gives that pipe to the consumer as its stdin (`pipe-from`),
//! so the bytes run through a kernel pipe from one process to the other,
//! never through the guest; the consumer's stdout is the guest's own.
//!
//! ```text
//! pipeline PRODUCER [ARGS]... --- CONSUMER [ARGS]...
//! wasmproc run --allow-run seq --allow-run sort pipeline.wasm seq 1 20 --- sort -rn
//! ```
//!
//! Exits 0 when both programs exit 0; otherwise prints their statuses to
//! stderr and exits 1.

use wasmproc_guest::process::{Child, Command, Stdio};

fn start(argv: &[String], stdin: Stdio, stdout: Stdio) -> Child {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("usage: pipeline PRODUCER [ARGS]... --- CONSUMER [ARGS]...");
        wasmproc_guest::exit(2);
    };
    Command::new(program).args(args).stdin(stdin).stdout(stdout).stderr(Stdio::inherit()).spawn().unwrap_or_else(|e| {
        eprintln!("pipeline: cannot start {program}: {}: {}", e.name(), e.message());
        std::process::exit(1);
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args.iter().position(|a| a == "---").unwrap_or(args.len());
    let mut producer = start(&args[..split], Stdio::null(), Stdio::piped());
    let pipe = producer.stdout.take().expect("a piped stdout");
    let mut consumer = start(args.get(split + 1..).unwrap_or_default(), Stdio::from(pipe), Stdio::inherit());
    // As a shell: the consumer first, then the producer (which a consumer
    // that stopped reading early ends with SIGPIPE).
    let consumer = consumer.wait();
    let producer = producer.wait();
    if [&producer, &consumer].iter().all(|s| s.as_ref().is_ok_and(|s| s.success())) {
        return;
    }
    let show = |s: &wasmproc_guest::process::Result<_>| match s {
        Ok(status) => format!("{status}"),
        Err(e) => format!("{e}"),
    };
    eprintln!("pipeline: producer {}, consumer {}", show(&producer), show(&consumer));
    std::process::exit(1);
}
