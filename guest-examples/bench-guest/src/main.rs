//! The guest side of `benches/compare.rs`: runs one scenario's loop inside
//! the guest, timed with `std::time::Instant`, so that instantiating the
//! component is not part of the figure. Prints `elapsed-ns: T` for the timed
//! part; the bench divides by the count it asked for.
//!
//! ```text
//! bench-guest spawn N             spawn `true` (stdio null) and wait for it, N times
//! bench-guest exec N              exec `echo hi` through the shell, N times
//! bench-guest read BYTES          read a `head -c BYTES /dev/zero` child's stdout to the end
//! bench-guest write BYTES         write BYTES into a `cat` child's stdin (its stdout null)
//! bench-guest fork N              fork `echo-worker then exit3`, take its first message, wait; N times
//! bench-guest fork-paced N MS    the same, N times, MS ms apart (a warm pool refilled between
//!                                 forks); `elapsed-ns` sums only the forks
//! bench-guest round-trip N SIZE   N round trips of SIZE-byte messages through `echo-worker echo`
//! bench-guest pipelined N SIZE W  N SIZE-byte messages through `echo-worker echo`, at most W in flight
//! bench-guest children N MS       spawn N `sleep 60`, print `spawned: N` and `started-ns: T` (the
//!                                 time to start all N), sleep MS, drop them all
//! bench-guest idle N MS           fork N `echo-worker echo`, one round trip each, print `forked: N`,
//!                                 leave them idle for MS, drop them all
//! bench-guest pipe FILE BYTES     `cat FILE` wired straight into `wc -c` (pipe-from); check wc's count
//! ```
//!
//! With `PLACEMENT=cluster` in its environment, the fork, round-trip and
//! pipelined workers run on an agent of the host's cluster.

use std::time::{Duration, Instant};
use wasmproc_guest::exec::{ExecOptions, exec};
use wasmproc_guest::fork::{ForkOptions, Placement, Worker, WorkerLimits, fork};
use wasmproc_guest::io::streams::StreamError;
use wasmproc_guest::spawn::{Child, SpawnOptions, spawn};
use wasmproc_guest::types::{ErrorCode, ExitStatus, Stdio, Termination};

const WORKER: &str = "echo-worker.wasm";

fn fail(what: &str, e: ErrorCode) -> ! {
    eprintln!("bench-guest: {what}: {}: {}", e.code(), e.message());
    std::process::exit(1)
}

fn start(program: &str, args: &[&str], stdin: Stdio, stdout: Stdio) -> Child {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let options = SpawnOptions { stdin, stdout, stderr: Stdio::Null, ..SpawnOptions::default() };
    spawn(program, &args, options).unwrap_or_else(|e| fail(program, e))
}

/// Workers go where `$PLACEMENT` says: `cluster`, or on this machine.
fn start_worker(args: &[&str]) -> Worker {
    start_worker_with(args, WorkerLimits::default())
}

/// As `start_worker`, with `limits`.
fn start_worker_with(args: &[&str], limits: WorkerLimits) -> Worker {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let placement = match std::env::var("PLACEMENT").as_deref() {
        Ok("cluster") => Placement::Cluster,
        _ => Placement::Local,
    };
    let options = ForkOptions { stdout: Stdio::Null, placement, limits, ..ForkOptions::default() };
    fork(WORKER, &args, options).unwrap_or_else(|e| fail("fork", e))
}

fn wait_ok(child: &Child) {
    match child.wait() {
        Ok(Termination { status: ExitStatus::Exited(0), .. }) => {}
        other => panic!("child ended with {other:?}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> u64 { args.get(i).and_then(|a| a.parse().ok()).expect("a number argument") };
    let t0 = Instant::now();
    match args.first().map(String::as_str).unwrap_or_default() {
        "spawn" => {
            for _ in 0..num(1) {
                wait_ok(&start("true", &[], Stdio::Null, Stdio::Null));
            }
        }
        "exec" => {
            for _ in 0..num(1) {
                let out = exec("echo hi", &ExecOptions::default()).unwrap_or_else(|e| fail("exec", e));
                assert_eq!(out.stdout, b"hi\n");
            }
        }
        "pipe" => {
            let cat = start("cat", &[&args[1]], Stdio::Null, Stdio::Piped);
            let wc = start("wc", &["-c"], Stdio::PipeFrom(cat.take_stdout().expect("piped stdout")), Stdio::Piped);
            let out = wc.take_stdout().expect("piped stdout");
            let mut count = Vec::new();
            while let Ok(chunk) = out.blocking_read(64) {
                count.extend(chunk);
            }
            assert_eq!(String::from_utf8_lossy(&count).trim(), num(2).to_string(), "bytes counted");
            drop(out);
            wait_ok(&cat);
            wait_ok(&wc);
        }
        "read" => {
            let bytes = num(1);
            let child = start("head", &["-c", &bytes.to_string(), "/dev/zero"], Stdio::Null, Stdio::Piped);
            let stdout = child.take_stdout().expect("piped stdout");
            let mut total = 0u64;
            loop {
                match stdout.blocking_read(1 << 20) {
                    Ok(chunk) => total += chunk.len() as u64,
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => panic!("read: {}", e.to_debug_string()),
                }
            }
            assert_eq!(total, bytes, "bytes read");
            drop(stdout);
            wait_ok(&child);
        }
        "write" => {
            let zeros = vec![0u8; 1 << 20];
            let mut left = num(1) as usize;
            let child = start("cat", &[], Stdio::Piped, Stdio::Null);
            let stdin = child.take_stdin().expect("piped stdin");
            let pollable = stdin.subscribe();
            while left > 0 {
                let n = (stdin.check_write().expect("check-write") as usize).min(left).min(zeros.len());
                if n == 0 {
                    pollable.block();
                    continue;
                }
                stdin.write(&zeros[..n]).expect("write");
                left -= n;
            }
            stdin.blocking_flush().expect("flush");
            drop(pollable);
            drop(stdin);
            wait_ok(&child);
        }
        "fork" => {
            for _ in 0..num(1) {
                let worker = start_worker(&["then", "exit3"]);
                worker.receive().unwrap_or_else(|e| fail("receive", e));
                worker.wait().unwrap_or_else(|e| fail("wait", e));
            }
        }
        "fork-paced" => {
            let mut forks = Duration::ZERO;
            for _ in 0..num(1) {
                std::thread::sleep(Duration::from_millis(num(2)));
                let t = Instant::now();
                let worker = start_worker(&["then", "exit3"]);
                worker.receive().unwrap_or_else(|e| fail("receive", e));
                worker.wait().unwrap_or_else(|e| fail("wait", e));
                forks += t.elapsed();
            }
            println!("elapsed-ns: {}", forks.as_nanos());
            return;
        }
        "round-trip" => {
            let (n, size) = (num(1), num(2) as usize);
            let worker = start_worker(&["echo"]);
            let message = vec![7u8; size];
            let round_trip = || {
                worker.send(&message).unwrap_or_else(|e| fail("send", e));
                let reply = worker.receive().unwrap_or_else(|e| fail("receive", e));
                assert_eq!(reply.len(), size);
            };
            // Warm up (the worker starts, both sides fault in their buffers).
            for _ in 0..100 {
                round_trip();
            }
            let t = Instant::now();
            for _ in 0..n {
                round_trip();
            }
            println!("elapsed-ns: {}", t.elapsed().as_nanos());
            return;
        }
        "pipelined" => {
            let (n, size, window) = (num(1), num(2) as usize, num(3));
            let worker = start_worker(&["echo"]);
            let message = vec![7u8; size];
            worker.send(&message).unwrap_or_else(|e| fail("send", e));
            worker.receive().unwrap_or_else(|e| fail("receive", e));
            let t = Instant::now();
            let (mut sent, mut received) = (0u64, 0u64);
            while received < n {
                while sent < n && sent - received < window {
                    worker.send(&message).unwrap_or_else(|e| fail("send", e));
                    sent += 1;
                }
                worker.receive().unwrap_or_else(|e| fail("receive", e));
                received += 1;
                while worker.try_receive().unwrap_or_else(|e| fail("receive", e)).is_some() {
                    received += 1;
                }
            }
            println!("elapsed-ns: {}", t.elapsed().as_nanos());
            return;
        }
        "children" => {
            let n = num(1);
            let children: Vec<Child> = (0..n).map(|_| start("sleep", &["60"], Stdio::Null, Stdio::Null)).collect();
            println!("spawned: {}", children.len());
            println!("started-ns: {}", t0.elapsed().as_nanos());
            std::thread::sleep(Duration::from_millis(num(2)));
            // Dropping each child kills its process group.
            drop(children);
        }
        "worker-spawn" => {
            // A forked worker's spawn+wait loop, timed by the worker: its
            // children are started by the host's launcher.
            let mut options = ForkOptions { stdout: Stdio::Null, ..ForkOptions::default() };
            options.programs.push("true".into());
            let n = num(1).to_string();
            let worker =
                fork(WORKER, &["spawn-wait".into(), n, "true".into()], options).unwrap_or_else(|e| fail("fork", e));
            let ns = worker.receive().unwrap_or_else(|e| fail("receive", e));
            worker.wait().unwrap_or_else(|e| fail("wait", e));
            println!("elapsed-ns: {}", String::from_utf8_lossy(&ns));
            return;
        }
        "idle" => {
            let workers: Vec<Worker> = (0..num(1))
                .map(|_| {
                    // No children of its own: each worker takes one slot.
                    let limits = WorkerLimits { max_live_children: Some(0), ..WorkerLimits::default() };
                    let worker = start_worker_with(&["echo"], limits);
                    worker.send(b"up").unwrap_or_else(|e| fail("send", e));
                    worker.receive().unwrap_or_else(|e| fail("receive", e));
                    worker
                })
                .collect();
            println!("forked: {}", workers.len());
            std::thread::sleep(Duration::from_millis(num(2)));
            // Dropping a worker ends its process.
            drop(workers);
        }
        other => panic!("bench-guest: unknown scenario {other:?}"),
    }
    println!("elapsed-ns: {}", t0.elapsed().as_nanos());
}
