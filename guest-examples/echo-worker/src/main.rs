//! A test worker component, forked by fork-probe. Its first argument picks
//! what it does:
//!
//! ```text
//! echo             send back every message until the channel closes
//! take N           receive N numbered messages, checking order, then exit
//! send N           send N numbered messages, then exit
//! count N          send N numbered messages while receiving N, checking order
//! then MODE        send `one`, `two`, `three`, then MODE: trap | exit3 | sleep
//! exec PROGRAM ARGS...  run PROGRAM through exec-file; send back its stdout or error
//! exec-status PROGRAM ARGS...  the same, sending back `STATUS timed-out=BOOL` or the error
//! spawn-n N PROGRAM ARGS...    spawn PROGRAM N times, keeping each; send back how many
//!                  started and the error that stopped the rest
//! read PATH        read file PATH; send back its contents or the error
//! cwd DIR PROGRAM  run PROGRAM in DIR; send back its stdout or error
//! spawn PROGRAM... spawn PROGRAM (a grandchild); send back its pid; sleep
//! print TEXT       print TEXT on stdout, exit 0
//! until-closed     receive until the channel closes; exit with the count as exit code
//! send-close N     send N messages, close the channel; exit 0 if a send then says `closed`
//! burn MS          spin on the CPU for MS milliseconds of wall time
//! nest DEPTH PROGRAMS FORKS MODE ARGS...
//!                  DEPTH > 1: fork echo-worker `nest DEPTH-1 ...` passing on PROGRAMS
//!                  and FORKS, and send back its reply prefixed by `DEPTH>`; DEPTH 1:
//!                  run MODE ARGS (exec PROGRAM ARGS: send back the result)
//! ```

use wasmproc_guest::exec::{ExecOptions, exec_file};
use wasmproc_guest::parent;
use wasmproc_guest::types::ErrorCode;

fn describe(e: &ErrorCode) -> Vec<u8> {
    format!("error: {}: {}", e.code(), e.message()).into_bytes()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "echo" => {
            while let Ok(message) = parent::receive() {
                parent::send(&message).expect("send");
            }
        }
        "getenv" => {
            // Its own environment variable NAME (fork-options.env).
            let value = std::env::var(arg(1)).unwrap_or_else(|_| "(unset)".to_owned());
            parent::send(value.as_bytes()).expect("send");
        }
        "take" => {
            let n: u32 = arg(1).parse().unwrap();
            for i in 0..n {
                assert_eq!(parent::receive().expect("receive"), i.to_le_bytes(), "message out of order");
            }
        }
        "send" => {
            // N small numbered messages, then exit (flushing them first).
            let n: u64 = arg(1).parse().unwrap();
            for i in 0..n {
                parent::send(&i.to_le_bytes()).expect("send");
            }
        }
        "count" => {
            let n: u64 = arg(1).parse().unwrap();
            let mut next_in = 0u64;
            for i in 0..n {
                parent::send(&i.to_le_bytes()).expect("send");
                while next_in < n {
                    let Some(m) = parent::try_receive().expect("receive") else { break };
                    assert_eq!(m, next_in.to_le_bytes(), "message out of order");
                    next_in += 1;
                }
            }
            while next_in < n {
                let m = parent::receive().expect("receive");
                assert_eq!(m, next_in.to_le_bytes(), "message out of order");
                next_in += 1;
            }
        }
        "then" => {
            for m in ["one", "two", "three"] {
                parent::send(m.as_bytes()).expect("send");
            }
            match arg(1).as_str() {
                "trap" => panic!("worker trapping on purpose"),
                "exit3" => wasmproc_guest::exit(3),
                _ => std::thread::sleep(std::time::Duration::from_secs(60)),
            }
        }
        "exec" => {
            let reply = match exec_file(&arg(1), &args[2..], &ExecOptions::default()) {
                Ok(out) => out.stdout,
                Err(e) => describe(&e),
            };
            parent::send(&reply).expect("send");
        }
        "exec-status" => {
            let reply = match exec_file(&arg(1), &args[2..], &ExecOptions::default()) {
                Ok(out) => format!("{} timed-out={}", out.status, out.timed_out).into_bytes(),
                Err(e) => describe(&e),
            };
            parent::send(&reply).expect("send");
        }
        "spawn-n" => {
            use wasmproc_guest::spawn::{SpawnOptions, spawn};
            use wasmproc_guest::types::Stdio;
            let n: usize = arg(1).parse().unwrap();
            let options = || SpawnOptions {
                stdin: Stdio::Null,
                stdout: Stdio::Null,
                stderr: Stdio::Null,
                ..SpawnOptions::default()
            };
            let mut children = Vec::new();
            let mut stopped = String::from("none");
            for _ in 0..n {
                match spawn(&arg(2), &args[3..], options()) {
                    Ok(child) => children.push(child),
                    Err(e) => {
                        stopped = e.code().to_owned();
                        break;
                    }
                }
            }
            parent::send(format!("started {}, then {stopped}", children.len()).as_bytes()).expect("send");
        }
        "spawn-wait" => {
            // spawn+wait PROG N times (the bench's row of a worker's
            // children); reply with the loop's nanoseconds.
            use wasmproc_guest::spawn::{SpawnOptions, spawn};
            use wasmproc_guest::types::Stdio;
            let n: usize = arg(1).parse().unwrap();
            let t0 = std::time::Instant::now();
            for _ in 0..n {
                let options = SpawnOptions {
                    stdin: Stdio::Null,
                    stdout: Stdio::Null,
                    stderr: Stdio::Null,
                    ..SpawnOptions::default()
                };
                let child = spawn(&arg(2), &[], options).expect("spawn");
                child.wait().expect("wait");
            }
            parent::send(t0.elapsed().as_nanos().to_string().as_bytes()).expect("send");
        }
        "read" => {
            let reply = match std::fs::read(arg(1)) {
                Ok(bytes) => bytes,
                Err(e) => format!("error: {e}").into_bytes(),
            };
            parent::send(&reply).expect("send");
        }
        "cwd" => {
            let options = ExecOptions { cwd: Some(arg(1)), ..ExecOptions::default() };
            let reply = match exec_file(&arg(2), &["cwd".into()], &options) {
                Ok(out) => out.stdout,
                Err(e) => describe(&e),
            };
            parent::send(&reply).expect("send");
        }
        "spawn" => {
            use wasmproc_guest::spawn::{SpawnOptions, spawn};
            use wasmproc_guest::types::Stdio;
            let options = SpawnOptions {
                stdin: Stdio::Null,
                stdout: Stdio::Null,
                stderr: Stdio::Null,
                ..SpawnOptions::default()
            };
            let child = spawn(&arg(1), &args[2..], options).expect("spawn");
            parent::send(child.pid().to_string().as_bytes()).expect("send");
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
        "print" => println!("{}", arg(1)),
        "until-closed" => {
            let mut n = 0u8;
            while parent::receive().is_ok() {
                n += 1;
            }
            wasmproc_guest::exit(n);
        }
        "send-close" => {
            let n: u32 = arg(1).parse().unwrap();
            for i in 0..n {
                parent::send(&i.to_le_bytes()).expect("send");
            }
            parent::close();
            let refused = matches!(parent::send(b"x"), Err(ErrorCode::Closed(_)));
            std::thread::sleep(std::time::Duration::from_millis(300));
            wasmproc_guest::exit(if refused { 0 } else { 1 });
        }
        "burn" => {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(arg(1).parse().unwrap());
            let mut x = 0u64;
            while std::time::Instant::now() < until {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        "nest" => {
            let depth: u32 = arg(1).parse().unwrap();
            if depth <= 1 {
                let reply = match exec_file(&arg(5), &args[6..], &ExecOptions::default()) {
                    Ok(out) => out.stdout,
                    Err(e) => describe(&e),
                };
                parent::send(&reply).expect("send");
                return;
            }
            use wasmproc_guest::fork::{ForkOptions, fork};
            let list = |s: &str| -> Vec<String> {
                s.split(',').filter(|s| !s.is_empty() && *s != "-").map(String::from).collect()
            };
            let options = ForkOptions { programs: list(&arg(2)), forks: list(&arg(3)), ..ForkOptions::default() };
            let mut next: Vec<String> = vec!["nest".into(), (depth - 1).to_string()];
            next.extend(args[2..].iter().cloned());
            let reply = match fork("echo-worker.wasm", &next, options) {
                Ok(worker) => match worker.receive() {
                    Ok(reply) => reply,
                    Err(e) => describe(&e),
                },
                Err(e) => describe(&e),
            };
            let mut out = format!("{depth}>").into_bytes();
            out.extend(reply);
            parent::send(&out).expect("send");
        }
        other => panic!("echo-worker: unknown mode {other:?}"),
    }
}
