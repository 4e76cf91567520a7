//! A test guest for `spawn`: runs one scenario named by its first argument
//! and prints what it saw, one `key: value` a line.
//!
//! ```text
//! spawn-probe stream PROGRAM [ARGS]...        read stdout to its end; print bytes, reads, stderr, status
//! spawn-probe stdin TEXT PROGRAM [ARGS]...    write TEXT to stdin, close it, print stdout and status
//! spawn-probe child-first PROGRAM [ARGS]...   read a line, drop the child before its streams, read on
//! spawn-probe kill PROGRAM [ARGS]...          try-wait, kill with SIGTERM, wait
//! spawn-probe never-read SECS PROGRAM [ARGS]  never read a piped stdout; after SECS, is it still running?
//! spawn-probe drop PROGRAM [ARGS]...          read the first line (a pid), drop the child, then ask
//!                                             `testprog alive PID` through exec-file
//! spawn-probe trap PROGRAM [ARGS]...          print the first line (a pid), then trap
//! spawn-probe hold PROGRAM [ARGS]...          print the first line (a pid), then sleep 60 s
//! spawn-probe exit PROGRAM [ARGS]...          print the first line (a pid), then exit(0) at once
//! spawn-probe many-hold N PROGRAM [ARGS]...  spawn N children, print `pid: P` for each and
//!                                             `ready`, then sleep 60 s
//! spawn-probe limit N PROGRAM [ARGS]...       spawn N children at once, printing each result
//! spawn-probe stdio KIND PROGRAM [ARGS]...    spawn with stdout and stderr KIND (inherit|null), wait
//! spawn-probe fanout N PROGRAM [ARGS]...      run N children at once, polling all; print each one's output
//! spawn-probe bad PROGRAM [ARGS]...           print the spawn error
//! spawn-probe deadline MS SIG PROGRAM [ARGS]  spawn with timeout-ms MS and kill-signal SIG (`-`: default),
//!                                             read stdout; print it, try-wait before the end, then wait
//! spawn-probe wait-timeout MS PROGRAM [ARGS]  wait-timeout MS; print the error; kill; wait
//! spawn-probe usage PROGRAM [ARGS]...         wait; print status and resource usage
//! spawn-probe pipe A [ARGS] --- B [ARGS]      A's stdout straight into B's stdin (pipe-from);
//!                                             print B's stdout, both statuses
//! spawn-probe pipe-misuse PROGRAM [ARGS]      give a child's stdout as another's stdout; print the error
//! spawn-probe file-out PATH MODE PROGRAM...   stdout to file PATH (create|truncate|append); print status
//!                                             or the spawn error
//! spawn-probe file-in PATH PROGRAM...         stdin from file PATH; print stdout or the spawn error
//! ```

use wasmproc_guest::exec::{ExecOptions, exec_file};
use wasmproc_guest::io::poll::poll;
use wasmproc_guest::io::streams::{InputStream, StreamError};
use wasmproc_guest::spawn::{Child, SpawnOptions, spawn};
use wasmproc_guest::types::{ErrorCode, FileMode, Stdio, StdioFile, Termination};

fn options(stdin: Stdio, stdout: Stdio, stderr: Stdio) -> SpawnOptions {
    SpawnOptions { stdin, stdout, stderr, ..SpawnOptions::default() }
}

fn piped() -> SpawnOptions {
    options(Stdio::Null, Stdio::Piped, Stdio::Piped)
}

fn start(argv: &[String], options: SpawnOptions) -> Result<Child, ErrorCode> {
    let (program, args) = argv.split_first().expect("a program");
    spawn(program, args, options)
}

fn must(argv: &[String], options: SpawnOptions) -> Child {
    start(argv, options).unwrap_or_else(|e| panic!("spawn {argv:?}: {}: {}", e.code(), e.message()))
}

/// How a child ended: its status, and `timed-out` when its deadline killed it.
fn ended(t: &Termination) -> String {
    match t.timed_out {
        true => format!("{} timed-out", t.status),
        false => t.status.to_string(),
    }
}

fn file(path: &str, mode: &str) -> Stdio {
    let mode = match mode {
        "read" => FileMode::Read,
        "create" => FileMode::Create,
        "truncate" => FileMode::Truncate,
        "append" => FileMode::Append,
        other => panic!("spawn-probe: unknown file mode {other:?}"),
    };
    Stdio::File(StdioFile { path: path.to_owned(), mode })
}

/// Reads `stream` to its end with blocking reads; returns (bytes, reads).
fn read_all(stream: &InputStream) -> (Vec<u8>, usize) {
    let mut data = Vec::new();
    let mut reads = 0;
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(bytes) => {
                reads += 1;
                data.extend_from_slice(&bytes);
            }
            Err(StreamError::Closed) => return (data, reads),
            Err(StreamError::LastOperationFailed(e)) => panic!("read: {}", e.to_debug_string()),
        }
    }
}

fn first_line(stream: &InputStream) -> String {
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        line.extend(stream.blocking_read(1).expect("a line"));
    }
    String::from_utf8(line).unwrap().trim().to_owned()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = &args[1..];
    match args[0].as_str() {
        "stream" => {
            let child = must(rest, piped());
            println!("pid-positive: {}", child.pid() > 0);
            let (out, err) = (child.take_stdout().unwrap(), child.take_stderr().unwrap());
            println!("take-again: {}", child.take_stdout().is_none());
            let (data, reads) = read_all(&out);
            println!("stdout-bytes: {}", data.len());
            println!("stdout-reads-more-than-one: {}", reads > 1);
            if data.len() <= 4096 {
                println!("stdout: {:?}", String::from_utf8_lossy(&data));
            }
            println!("stderr: {:?}", String::from_utf8_lossy(&read_all(&err).0));
            drop((out, err));
            println!("status: {}", ended(&child.wait().unwrap()));
        }
        "child-first" => {
            // Drops the child before its streams: they read what the child
            // wrote, then the end, and the guest does not trap.
            let child = must(rest, options(Stdio::Piped, Stdio::Piped, Stdio::Null));
            let (input, out) = (child.take_stdin().unwrap(), child.take_stdout().unwrap());
            let first = first_line(&out);
            drop(child);
            println!("first: {first}");
            println!("rest: {:?}", String::from_utf8_lossy(&read_all(&out).0));
            println!("write-after: {}", input.blocking_write_and_flush(b"x").is_err());
            drop((input, out));
            println!("done");
        }
        "stdin" => {
            let child = must(&rest[1..], options(Stdio::Piped, Stdio::Piped, Stdio::Null));
            let (input, out) = (child.take_stdin().unwrap(), child.take_stdout().unwrap());
            for chunk in rest[0].as_bytes().chunks(4096) {
                input.blocking_write_and_flush(chunk).expect("write stdin");
            }
            drop(input); // EOF
            println!("stdout: {:?}", String::from_utf8_lossy(&read_all(&out).0));
            drop(out);
            println!("status: {}", ended(&child.wait().unwrap()));
        }
        "kill" => {
            let child = must(rest, piped());
            println!("try-wait: {:?}", child.try_wait().unwrap().map(|t| ended(&t)));
            child.kill(15).unwrap();
            println!("status: {}", ended(&child.wait().unwrap()));
            println!("kill-after-exit: {:?}", child.kill(9).map_err(|e| e.code()));
            println!("bad-signal: {:?}", child.kill(0).map_err(|e| e.code()));
        }
        "never-read" => {
            let secs: f64 = rest[0].parse().unwrap();
            let child = must(&rest[1..], piped());
            let out = child.take_stdout().unwrap();
            std::thread::sleep(std::time::Duration::from_secs_f64(secs));
            println!("still-running: {}", child.try_wait().unwrap().is_none());
            drop(out);
        }
        "drop" => {
            let child = must(rest, piped());
            let out = child.take_stdout().unwrap();
            let pid = first_line(&out);
            let child_pid = child.pid().to_string();
            drop(out);
            drop(child);
            for p in [child_pid, pid] {
                let alive = exec_file("testprog", &["alive".into(), p], &ExecOptions::default()).unwrap();
                print!("after-drop: {}", String::from_utf8_lossy(&alive.stdout));
                eprint!("{}", String::from_utf8_lossy(&alive.stderr));
            }
        }
        "trap" => {
            let child = must(rest, piped());
            let out = child.take_stdout().unwrap();
            println!("child: {}", child.pid());
            println!("grandchild: {}", first_line(&out));
            panic!("trapping with children alive");
        }
        "exit" => {
            let child = must(rest, piped());
            let out = child.take_stdout().unwrap();
            println!("child: {}", child.pid());
            println!("grandchild: {}", first_line(&out));
            // No destructor runs: the host must clean up when the instance ends.
            std::process::exit(0);
        }
        "hold" => {
            let child = must(rest, piped());
            let out = child.take_stdout().unwrap();
            println!("child: {}", child.pid());
            println!("grandchild: {}", first_line(&out));
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
        "many-hold" => {
            let n: usize = rest[0].parse().unwrap();
            let children: Vec<Child> =
                (0..n).map(|_| must(&rest[1..], options(Stdio::Null, Stdio::Null, Stdio::Null))).collect();
            for c in &children {
                println!("pid: {}", c.pid());
            }
            println!("ready");
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
        "limit" => {
            let n: usize = rest[0].parse().unwrap();
            let mut children = Vec::new();
            for _ in 0..n {
                match start(&rest[1..], options(Stdio::Null, Stdio::Null, Stdio::Null)) {
                    Ok(c) => {
                        println!("spawned");
                        children.push(c);
                    }
                    Err(e) => println!("error: {}: {}", e.code(), e.message()),
                }
            }
            for c in &children {
                c.kill(9).unwrap();
            }
        }
        "stdio" => {
            let kind = || if rest[0] == "inherit" { Stdio::Inherit } else { Stdio::Null };
            let child = must(&rest[1..], options(Stdio::Null, kind(), kind()));
            println!("streams: {} {}", child.take_stdout().is_some(), child.take_stderr().is_some());
            println!("status: {}", ended(&child.wait().unwrap()));
        }
        "fanout" => fanout(rest[0].parse().unwrap(), &rest[1..]),
        "bad" => match start(rest, piped()) {
            Ok(_) => println!("spawned"),
            Err(e) => println!("error: {}: {}", e.code(), e.message()),
        },
        "deadline" => {
            let ms: u64 = rest[0].parse().unwrap();
            let signal = rest[1].parse().ok();
            let options = SpawnOptions { timeout_ms: Some(ms), kill_signal: signal, ..piped() };
            let child = match start(&rest[2..], options) {
                Ok(child) => child,
                Err(e) => return println!("error: {}: {}", e.code(), e.message()),
            };
            let out = child.take_stdout().unwrap();
            println!("first: {}", first_line(&out));
            println!("try-wait: {:?}", child.try_wait().unwrap().map(|t| ended(&t)));
            println!("rest: {:?}", String::from_utf8_lossy(&read_all(&out).0));
            println!("status: {}", ended(&child.wait().unwrap()));
        }
        "wait-timeout" => {
            let ms: u64 = rest[0].parse().unwrap();
            let child = must(&rest[1..], options(Stdio::Null, Stdio::Null, Stdio::Null));
            match child.wait_timeout(ms) {
                Ok(t) => println!("ended: {}", ended(&t)),
                Err(e) => println!("error: {}: {}", e.code(), e.message()),
            }
            println!("running: {}", child.try_wait().unwrap().is_none());
            child.kill(9).unwrap();
            println!("status: {}", ended(&child.wait_timeout(10_000).unwrap()));
        }
        "usage" => {
            let child = must(rest, options(Stdio::Null, Stdio::Null, Stdio::Null));
            let t = child.wait().unwrap();
            println!("status: {}", ended(&t));
            println!("cpu-ms: {}", (t.usage.user_cpu_ns + t.usage.system_cpu_ns) / 1_000_000);
            println!("max-rss-kib: {}", t.usage.max_rss_bytes / 1024);
        }
        "pipe" => {
            let split = rest.iter().position(|a| a == "---").expect("A --- B");
            let first = must(&rest[..split], options(Stdio::Null, Stdio::Piped, Stdio::Null));
            let stream = first.take_stdout().unwrap();
            let second = must(&rest[split + 1..], options(Stdio::PipeFrom(stream), Stdio::Piped, Stdio::Null));
            let out = second.take_stdout().unwrap();
            let (data, _) = read_all(&out);
            if data.len() <= 4096 {
                println!("stdout: {:?}", String::from_utf8_lossy(&data));
            } else {
                println!("stdout-bytes: {}", data.len());
            }
            println!("first: {}", ended(&first.wait().unwrap()));
            println!("second: {}", ended(&second.wait().unwrap()));
        }
        "pipe-misuse" => {
            let first = must(rest, options(Stdio::Null, Stdio::Piped, Stdio::Null));
            let stream = first.take_stdout().unwrap();
            match start(rest, options(Stdio::Null, Stdio::PipeFrom(stream), Stdio::Null)) {
                Ok(_) => println!("spawned"),
                Err(e) => println!("error: {}: {}", e.code(), e.message()),
            }
            println!("first: {}", ended(&first.wait().unwrap()));
        }
        "file-out" => match start(&rest[2..], options(Stdio::Null, file(&rest[0], &rest[1]), Stdio::Null)) {
            Ok(child) => println!("status: {}", ended(&child.wait().unwrap())),
            Err(e) => println!("error: {}: {}", e.code(), e.message()),
        },
        "file-in" => match start(&rest[1..], options(file(&rest[0], "read"), Stdio::Piped, Stdio::Null)) {
            Ok(child) => {
                let out = child.take_stdout().unwrap();
                println!("stdout: {:?}", String::from_utf8_lossy(&read_all(&out).0));
                drop(out);
                println!("status: {}", ended(&child.wait().unwrap()));
            }
            Err(e) => println!("error: {}: {}", e.code(), e.message()),
        },
        other => panic!("spawn-probe: unknown scenario {other:?}"),
    }
}

/// N children at once (argument i appended to each), one poll over all
/// their stdouts; prints each child's whole output in order of i.
fn fanout(n: usize, argv: &[String]) {
    struct Job {
        out: Option<InputStream>,
        data: Vec<u8>,
        _child: Child,
    }
    let mut jobs: Vec<Job> = (0..n)
        .map(|i| {
            let mut argv = argv.to_vec();
            argv.push(i.to_string());
            let child = must(&argv, options(Stdio::Null, Stdio::Piped, Stdio::Null));
            Job { out: child.take_stdout(), data: Vec::new(), _child: child }
        })
        .collect();
    let mut max_open = 0;
    loop {
        let open: Vec<usize> = (0..n).filter(|&i| jobs[i].out.is_some()).collect();
        if open.is_empty() {
            break;
        }
        max_open = max_open.max(open.len());
        let pollables: Vec<_> = open.iter().map(|&i| jobs[i].out.as_ref().unwrap().subscribe()).collect();
        let ready = poll(&pollables.iter().collect::<Vec<_>>());
        drop(pollables);
        for r in ready {
            let job = &mut jobs[open[r as usize]];
            match job.out.as_ref().unwrap().read(64 * 1024) {
                Ok(bytes) => job.data.extend(bytes),
                Err(_) => job.out = None,
            }
        }
    }
    println!("concurrent: {}", max_open == n);
    for job in &jobs {
        print!("{}", String::from_utf8_lossy(&job.data));
    }
}
