//! A test guest that makes the `exec` requests given as arguments and prints
//! each result in a stable, line-oriented form.
//!
//! ```text
//! exec-probe REQUEST [--- REQUEST]...
//! REQUEST := [OPTION]... (shell COMMAND | file PROGRAM [ARG]...)
//!          | spawn PROGRAM | fork COMPONENT | alloc MIB
//! OPTION  := --cwd DIR | --env NAME=VALUE | --timeout-ms N | --kill-signal N
//!          | --max-buffer N | --stdin TEXT | --uid N | --gid N | --shell SHELL
//! ```
//!
//! Any `<NUL>` in a string is replaced by a NUL byte, so tests can send one.
//! Output per request: `error: <code>: <message>`, or the lines `pid`,
//! `status`, `stdout`, `stderr`, `stdout-truncated`, `stderr-truncated`,
//! `timed-out`, `cpu-ms` (user + system CPU time), `max-rss-kib`.

use wasmproc_guest::exec::{ExecOptions, ExecOutput, exec, exec_file};
use wasmproc_guest::fork::{ForkOptions, fork};
use wasmproc_guest::spawn::{SpawnOptions, spawn};
use wasmproc_guest::types::{ErrorCode, Stdio};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).map(|a| a.replace("<NUL>", "\0")).collect();
    for request in args.split(|a| a == "---") {
        if let Some(result) = other_interface(request) {
            match result {
                Ok(what) => println!("{what}"),
                Err(e) => println!("error: {}: {}", e.code(), e.message()),
            }
            continue;
        }
        match run(request) {
            Ok(out) => print_output(&out),
            Err(e) => println!("error: {}: {}", e.code(), e.message()),
        }
    }
}

/// `spawn PROGRAM` and `fork COMPONENT`, to see what this host says of them.
fn other_interface(request: &[String]) -> Option<Result<String, ErrorCode>> {
    let stdio = || (Stdio::Inherit, Stdio::Inherit, Stdio::Inherit);
    match request {
        [kind, program] if kind == "spawn" => {
            let (stdin, stdout, stderr) = stdio();
            let options = SpawnOptions { stdin, stdout, stderr, ..SpawnOptions::default() };
            Some(spawn(program, &[], options).map(|child| format!("spawned: pid {}", child.pid())))
        }
        [kind, mib] if kind == "alloc" => {
            // Grows this guest's own memory, to see the host's cap.
            let mib: usize = mib.parse().expect("alloc MIB");
            let mut memory: Vec<u8> = Vec::new();
            Some(Ok(match memory.try_reserve_exact(mib << 20) {
                Ok(()) => format!("allocated {mib} MiB"),
                Err(_) => format!("cannot allocate {mib} MiB"),
            }))
        }
        [kind, component] if kind == "fork" => {
            let (_, stdout, stderr) = stdio();
            let options = ForkOptions { stdout, stderr, ..ForkOptions::default() };
            Some(fork(component, &[], options).map(|worker| format!("forked: pid {}", worker.pid())))
        }
        _ => None,
    }
}

fn run(request: &[String]) -> Result<ExecOutput, ErrorCode> {
    let mut options = ExecOptions::default();
    let mut it = request.iter();
    let number = |v: Option<&String>| -> u64 { v.and_then(|v| v.parse().ok()).expect("option needs a number") };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--cwd" => options.cwd = it.next().cloned(),
            "--env" => {
                let kv = it.next().expect("--env NAME=VALUE");
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                options.env.push((k.to_owned(), v.to_owned()));
            }
            "--timeout-ms" => options.timeout_ms = Some(number(it.next())),
            "--kill-signal" => options.kill_signal = Some(number(it.next()) as u8),
            "--max-buffer" => options.max_buffer = Some(number(it.next())),
            "--stdin" => options.stdin = it.next().map(|s| s.as_bytes().to_vec()),
            "--uid" => options.uid = Some(number(it.next()) as u32),
            "--gid" => options.gid = Some(number(it.next()) as u32),
            "--shell" => options.shell = it.next().cloned(),
            "shell" => return exec(it.next().expect("shell COMMAND"), &options),
            "file" => {
                let program = it.next().expect("file PROGRAM");
                let rest: Vec<String> = it.cloned().collect();
                return exec_file(program, &rest, &options);
            }
            other => panic!("exec-probe: unknown argument {other:?}"),
        }
    }
    panic!("exec-probe: a request needs `shell COMMAND` or `file PROGRAM`");
}

fn print_output(out: &ExecOutput) {
    println!("pid: {}", out.pid);
    println!("status: {}", out.status);
    println!("stdout: {}", show(&out.stdout));
    println!("stderr: {}", show(&out.stderr));
    println!("stdout-truncated: {}", out.stdout_truncated);
    println!("stderr-truncated: {}", out.stderr_truncated);
    println!("timed-out: {}", out.timed_out);
    println!("cpu-ms: {}", (out.usage.user_cpu_ns + out.usage.system_cpu_ns) / 1_000_000);
    println!("max-rss-kib: {}", out.usage.max_rss_bytes / 1024);
}

/// Short output quoted; long output as its length.
fn show(bytes: &[u8]) -> String {
    if bytes.len() <= 4096 {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        format!("<{} bytes>", bytes.len())
    }
}
