//! A test guest for `fork`: runs one scenario named by its first argument
//! against the `echo-worker.wasm` component and prints what it saw.
//!
//! ```text
//! fork-probe ping N SIZE            N round trips of SIZE-byte messages, checked
//! fork-probe big                    a 1 MiB and a maximum-size (16 MiB) round trip; one over the maximum
//! fork-probe pipelined N            N messages each way at once, order checked on both sides
//! fork-probe burst N               send N messages, then only wait for the worker (which exits
//!                                   after taking N): nothing but the host may deliver them
//! fork-probe end MODE               worker sends three messages then MODE (trap|exit3|kill)
//! fork-probe ask KIND VALUE         fork asking for a capability: program|dir|dir-rw|env|shell|component
//! fork-probe worker PROGRAMS DIRS MODE ARGS...
//!                                   fork echo-worker MODE ARGS passing on PROGRAMS and DIRS
//!                                   (comma-separated, `-` for none; a `:ro` suffix passes a
//!                                   directory read-only); print its reply
//! fork-probe limited LIMIT VALUE MODE ARGS...
//!                                   fork echo-worker MODE ARGS with worker limit LIMIT
//!                                   (max-live-children|max-timeout-ms|open-files) lowered to VALUE, passing
//!                                   on testprog; print its reply
//! fork-probe hold                   fork a worker that spawns `testprog sleep 60`; print both pids; sleep
//! fork-probe env NAME VALUE         fork a worker whose own environment has NAME=VALUE; print
//!                                   what it says NAME is
//! fork-probe close-here N           send N messages, close the channel; print what send/receive say
//!                                   then, and the worker's exit code (how many it received)
//! fork-probe close-there N          the worker sends N messages and closes its end; print what was
//!                                   received, whether the worker still runs, and its status
//! fork-probe wait-timeout MS        wait-timeout MS on a worker that sleeps; print the error; kill; wait
//! fork-probe wait-sending N MS      a worker sends N messages then exits; wait-timeout MS before
//!                                   reading any; print that, then receive all and wait
//! fork-probe usage                  a worker that burns 300 ms of CPU; print status and usage
//! fork-probe output TEXT            the worker prints TEXT on its stdout (piped); print what came
//! fork-probe after-stdin SCENARIO...  print `waiting`, read a line from stdin, then run SCENARIO
//! fork-probe nested DEPTH PROGRAMS FORKS MODE ARGS...
//!                                   fork echo-worker `nest DEPTH ...`, passing on PROGRAMS and FORKS
//!                                   (comma-separated, `-` for none): each level forks the next, the
//!                                   last runs MODE ARGS; print the reply that comes back up
//! ```

use wasmproc_guest::fork::{DirGrant, ForkOptions, Worker, fork};
use wasmproc_guest::types::{ErrorCode, Termination};

const WORKER: &str = "echo-worker.wasm";

/// Forks echo-worker with `args`; with `PLACEMENT=cluster` in this
/// guest's environment, on an agent of the host's cluster.
fn start(args: &[&str], mut options: ForkOptions) -> Result<Worker, ErrorCode> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if std::env::var("PLACEMENT").as_deref() == Ok("cluster") {
        options.placement = wasmproc_guest::fork::Placement::Cluster;
    }
    fork(WORKER, &args, options)
}

fn must(args: &[&str]) -> Worker {
    start(args, ForkOptions::default()).unwrap_or_else(|e| panic!("fork: {}: {}", e.code(), e.message()))
}

/// How a worker ended: its status, and the trap if its guest trapped.
fn ended(t: &Termination) -> String {
    match &t.trap {
        Some(trap) => format!("{} trap={trap:?}", t.status),
        None => t.status.to_string(),
    }
}

fn list(s: &str) -> Vec<String> {
    s.split(',').filter(|s| !s.is_empty() && *s != "-").map(String::from).collect()
}

fn show(e: &ErrorCode) -> String {
    format!("{}: {}", e.code(), e.message())
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("after-stdin") {
        // Say so, and wait for a line on stdin, before the scenario: a test
        // changes something between the host's start and the fork.
        use std::io::Write as _;
        println!("waiting");
        std::io::stdout().flush().unwrap();
        std::io::stdin().read_line(&mut String::new()).unwrap();
        args.remove(0);
    }
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "ping" => {
            let (n, size): (u32, usize) = (arg(1).parse().unwrap(), arg(2).parse().unwrap());
            let worker = must(&["echo"]);
            for i in 0..n {
                let mut message = vec![(i % 251) as u8; size.max(4)];
                message[..4].copy_from_slice(&i.to_le_bytes());
                worker.send(&message).unwrap();
                assert_eq!(worker.receive().unwrap(), message, "round trip {i}");
            }
            println!("round-trips: {n}");
        }
        "big" => {
            let worker = must(&["echo"]);
            for size in [1 << 20, 16 << 20] {
                let message: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
                worker.send(&message).unwrap();
                println!("{size}: {}", worker.receive().unwrap() == message);
            }
            println!("over: {}", worker.send(&vec![0; (16 << 20) + 1]).map_err(|e| show(&e)).unwrap_err());
            println!("after: {}", worker.send(b"still").is_ok() && worker.receive().unwrap() == b"still");
        }
        "pipelined" => {
            let n: u64 = arg(1).parse().unwrap();
            let worker = must(&["count", &n.to_string()]);
            // On a failure, say where, and how the worker ended.
            let fail = |what: &str, e: ErrorCode| -> ! {
                let status = worker.wait().map(|t| ended(&t)).map_err(|e| show(&e));
                eprintln!("fork-probe: {what}: {}; the worker: {status:?}", show(&e));
                std::process::exit(1);
            };
            let mut next_in = 0u64;
            for i in 0..n {
                worker.send(&i.to_le_bytes()).unwrap_or_else(|e| fail(&format!("send {i}"), e));
                // Once all n are in, the worker may be gone: stop asking.
                while next_in < n {
                    let received = worker.try_receive().unwrap_or_else(|e| fail(&format!("try-receive {next_in}"), e));
                    let Some(m) = received else { break };
                    assert_eq!(m, next_in.to_le_bytes(), "message out of order");
                    next_in += 1;
                }
            }
            while next_in < n {
                let m = worker.receive().unwrap_or_else(|e| fail(&format!("receive {next_in}"), e));
                assert_eq!(m, next_in.to_le_bytes(), "message out of order");
                next_in += 1;
            }
            println!("received-in-order: {next_in}");
            println!("status: {:?}", worker.wait().map(|t| ended(&t)).map_err(|e| show(&e)));
        }
        "burst" => {
            let n: u32 = arg(1).parse().unwrap();
            let worker = must(&["take", &n.to_string()]);
            for i in 0..n {
                worker.send(&i.to_le_bytes()).unwrap();
            }
            // No receive, no poll on the channel: wait for the exit, up to 10 s.
            let mut status = None;
            for _ in 0..1000 {
                status = worker.try_wait().unwrap();
                if status.is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            println!("status: {}", status.map_or("still running".to_owned(), |t| ended(&t)));
        }
        "end" => {
            let mode = arg(1);
            let worker = must(&["then", if mode == "kill" { "sleep" } else { &mode }]);
            let mut got = Vec::new();
            if mode == "kill" {
                for _ in 0..3 {
                    got.push(String::from_utf8(worker.receive().unwrap()).unwrap());
                }
                worker.kill(9).unwrap();
            }
            let end = loop {
                match worker.receive() {
                    Ok(m) => got.push(String::from_utf8(m).unwrap()),
                    Err(e) => break e,
                }
            };
            println!("messages: {}", got.join(" "));
            println!("then: {}", end.code());
            println!("status: {}", ended(&worker.wait().unwrap()));
            println!("send-after: {:?}", worker.send(b"x").map_err(|e| e.code()));
        }
        "ask" => {
            let mut options = ForkOptions::default();
            let value = arg(2);
            let component = match arg(1).as_str() {
                "program" => {
                    options.programs.push(value);
                    WORKER.to_owned()
                }
                "dir" => {
                    options.dirs.push(DirGrant { path: value, read_only: true });
                    WORKER.to_owned()
                }
                "dir-rw" => {
                    options.dirs.push(DirGrant { path: value, read_only: false });
                    WORKER.to_owned()
                }
                "env" => {
                    options.allow_env.push(value);
                    WORKER.to_owned()
                }
                "shell" => {
                    options.shell = true;
                    WORKER.to_owned()
                }
                "max-live-children" => {
                    options.limits.max_live_children = Some(value.parse().unwrap());
                    WORKER.to_owned()
                }
                "max-timeout-ms" => {
                    options.limits.max_timeout_ms = Some(value.parse().unwrap());
                    WORKER.to_owned()
                }
                "open-files" => {
                    options.limits.open_files = Some(value.parse().unwrap());
                    WORKER.to_owned()
                }
                _ => value,
            };
            match fork(&component, &["echo".to_owned()], options) {
                Ok(_) => println!("forked"),
                Err(e) => println!("error: {}", show(&e)),
            }
        }
        "worker" => {
            let mut options = ForkOptions::default();
            options.programs = list(&arg(1));
            options.dirs = list(&arg(2))
                .into_iter()
                .map(|d| match d.strip_suffix(":ro") {
                    Some(path) => DirGrant { path: path.to_owned(), read_only: true },
                    None => DirGrant { path: d, read_only: false },
                })
                .collect();
            let rest: Vec<&str> = args[3..].iter().map(String::as_str).collect();
            let worker = start(&rest, options).unwrap_or_else(|e| panic!("fork: {}", show(&e)));
            println!("reply: {}", String::from_utf8_lossy(&worker.receive().unwrap()));
        }
        "limited" => {
            let mut options = ForkOptions::default();
            options.programs.push("testprog".into());
            let value: u64 = arg(2).parse().unwrap();
            match arg(1).as_str() {
                "max-live-children" => options.limits.max_live_children = Some(value as u32),
                "max-timeout-ms" => options.limits.max_timeout_ms = Some(value),
                "open-files" => options.limits.open_files = Some(value),
                other => panic!("fork-probe: unknown limit {other:?}"),
            }
            let rest: Vec<&str> = args[3..].iter().map(String::as_str).collect();
            let worker = start(&rest, options).unwrap_or_else(|e| panic!("fork: {}", show(&e)));
            println!("reply: {}", String::from_utf8_lossy(&worker.receive().unwrap()));
        }
        "wait-first" => {
            // Waits for a worker that sends N messages before it exits,
            // then reads them all.
            let n: u64 = arg(1).parse().unwrap();
            let worker = must(&["send", &n.to_string()]);
            println!("status: {}", ended(&worker.wait().unwrap()));
            let mut received = 0u64;
            while let Ok(m) = worker.receive() {
                assert_eq!(m, received.to_le_bytes(), "message out of order");
                received += 1;
            }
            println!("received: {received}");
        }
        "fan" => {
            // WORKERS workers (default limits, programs: testprog), each
            // running `spawn-n N PROGRAM ARGS...`, all kept alive until
            // every one replied.
            let workers: usize = arg(1).parse().unwrap();
            let rest: Vec<&str> = std::iter::once("spawn-n").chain(args[2..].iter().map(String::as_str)).collect();
            let options = || ForkOptions { programs: vec!["testprog".into()], ..ForkOptions::default() };
            let mut alive = Vec::new();
            for _ in 0..workers {
                match start(&rest, options()) {
                    Ok(worker) => {
                        println!("reply: {}", String::from_utf8_lossy(&worker.receive().unwrap()));
                        alive.push(worker);
                    }
                    Err(e) => println!("fork: error: {}", show(&e)),
                }
            }
        }
        "env" => {
            let options = ForkOptions { env: vec![(arg(1), arg(2))], ..ForkOptions::default() };
            let worker = start(&["getenv", &arg(1)], options).unwrap_or_else(|e| panic!("fork: {}", show(&e)));
            println!("reply: {}", String::from_utf8(worker.receive().unwrap()).unwrap());
            println!("status: {}", ended(&worker.wait().unwrap()));
        }
        "hold" => {
            let mut options = ForkOptions::default();
            options.programs.push("testprog".into());
            let worker = start(&["spawn", "testprog", "sleep", "60"], options).unwrap();
            println!("worker: {}", worker.pid());
            println!("grandchild: {}", String::from_utf8(worker.receive().unwrap()).unwrap());
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
        "close-here" => {
            let n: u32 = arg(1).parse().unwrap();
            let worker = must(&["until-closed"]);
            for i in 0..n {
                worker.send(&i.to_le_bytes()).unwrap();
            }
            worker.close_channel();
            println!("send-after: {}", worker.send(b"x").map_err(|e| show(&e)).unwrap_err());
            println!("receive-after: {}", worker.receive().map_err(|e| show(&e)).unwrap_err());
            println!("status: {}", ended(&worker.wait().unwrap()));
        }
        "close-there" => {
            let worker = must(&["send-close", &arg(1)]);
            let mut got = 0;
            let end = loop {
                match worker.receive() {
                    Ok(_) => got += 1,
                    Err(e) => break e,
                }
            };
            println!("received: {got}");
            println!("then: {}", end.code());
            println!("running: {}", worker.try_wait().unwrap().is_none());
            println!("status: {}", ended(&worker.wait().unwrap()));
        }
        "wait-timeout" => {
            let worker = must(&["then", "sleep"]);
            match worker.wait_timeout(arg(1).parse().unwrap()) {
                Ok(t) => println!("ended: {}", ended(&t)),
                Err(e) => println!("error: {}", show(&e)),
            }
            worker.kill(9).unwrap();
            println!("status: {}", ended(&worker.wait().unwrap()));
        }
        "output" => {
            let options = ForkOptions { stdout: wasmproc_guest::types::Stdio::Piped, ..ForkOptions::default() };
            let worker = start(&["print", &arg(1)], options).unwrap_or_else(|e| panic!("fork: {}", show(&e)));
            let out = worker.take_stdout().expect("piped stdout");
            let mut text = Vec::new();
            while let Ok(bytes) = out.blocking_read(1 << 16) {
                text.extend(bytes);
            }
            println!("stdout: {:?}", String::from_utf8_lossy(&text));
            drop(out);
            println!("status: {}", ended(&worker.wait().unwrap()));
        }
        "wait-sending" => {
            let n: u64 = arg(1).parse().unwrap();
            let worker = must(&["send", &n.to_string()]);
            match worker.wait_timeout(arg(2).parse().unwrap()) {
                Ok(t) => println!("first-wait: {}", ended(&t)),
                Err(e) => println!("first-wait: {}", e.code()),
            }
            let mut received = 0u64;
            while let Ok(m) = worker.receive() {
                assert_eq!(m, received.to_le_bytes(), "message out of order");
                received += 1;
            }
            println!("received: {received}");
            println!("status: {}", ended(&worker.wait().unwrap()));
        }
        "usage" => {
            let t = must(&["burn", "300"]).wait().unwrap();
            println!("status: {}", ended(&t));
            println!("cpu-ms: {}", (t.usage.user_cpu_ns + t.usage.system_cpu_ns) / 1_000_000);
            println!("max-rss-kib: {}", t.usage.max_rss_bytes / 1024);
        }
        "nested" => {
            let mut options = ForkOptions::default();
            options.programs = list(&arg(2));
            options.forks = list(&arg(3));
            let mut rest = vec!["nest", &args[1], &args[2], &args[3]];
            rest.extend(args[4..].iter().map(String::as_str));
            match start(&rest, options) {
                Ok(worker) => {
                    println!("reply: {}", String::from_utf8_lossy(&worker.receive().unwrap()));
                    println!("status: {}", ended(&worker.wait().unwrap()));
                }
                Err(e) => println!("error: {}", show(&e)),
            }
        }
        other => panic!("fork-probe: unknown scenario {other:?}"),
    }
}
