//! `fanout DIR K PROGRAM [ARGS...]`: runs `PROGRAM ARGS... NAME` in DIR for
//! every regular file NAME in DIR, at most K at once, streaming each child's
//! stdout as it arrives; then prints, sorted by name,
//!
//! ```text
//! NAME: <the child's stdout, trimmed>      (` [exited N]` / ` [signaled N]` appended if it failed)
//! N files, at most M at once
//! ```
//!
//! where M is how many children ran at once at most. If a child cannot be
//! started it prints `error: <error-code>` (the WIT case name, such as
//! `access-denied`), the host's message on stderr, and exits with 1.
//!
//! The same program exists in C, Python and JavaScript (guest-examples/c,
//! python, js); all four print byte-identical output.

use std::collections::VecDeque;
use wasmproc_guest::io::poll::poll;
use wasmproc_guest::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use wasmproc_guest::types::ExitStatus as Status;

/// A running child. Field order is drop order: the stream before the child.
struct Job {
    name: String,
    stdout: Option<ChildStdout>,
    out: Vec<u8>,
    child: Child,
    status: Option<ExitStatus>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: fanout DIR K PROGRAM [ARGS...]");
        std::process::exit(1);
    }
    let (dir, program, extra) = (&args[1], &args[3], &args[4..]);
    let k: usize = match args[2].parse() {
        Ok(k) if k > 0 => k,
        _ => {
            eprintln!("fanout: K must be a positive number");
            std::process::exit(1);
        }
    };

    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(e) => {
            eprintln!("fanout: {dir}: {e}");
            std::process::exit(1);
        }
    };
    names.sort();
    let total = names.len();

    let mut queue: VecDeque<String> = names.into();
    let mut running: Vec<Job> = Vec::new();
    let mut done: Vec<(String, String)> = Vec::new();
    let mut most = 0;
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < k {
            let Some(name) = queue.pop_front() else { break };
            let spawned = Command::new(program)
                .args(extra)
                .arg(&name)
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) => {
                    println!("error: {}", e.name());
                    eprintln!("fanout: {e}");
                    std::process::exit(1);
                }
            };
            running.push(Job { name, stdout: child.stdout.take(), out: Vec::new(), child, status: None });
        }
        most = most.max(running.len());

        // One poll over every open stdout and every child not yet exited.
        let mut sources = Vec::new();
        let mut pollables = Vec::new();
        for (i, job) in running.iter().enumerate() {
            if let Some(s) = &job.stdout {
                pollables.push(s.subscribe());
                sources.push((i, true));
            }
            if job.status.is_none() {
                pollables.push(job.child.subscribe());
                sources.push((i, false));
            }
        }
        let ready = poll(&pollables.iter().collect::<Vec<_>>());
        drop(pollables);
        for r in ready {
            let (i, is_stdout) = sources[r as usize];
            let job = &mut running[i];
            if is_stdout {
                match job.stdout.as_ref().map(ChildStdout::read_available) {
                    Some(Ok(Some(bytes))) => job.out.extend_from_slice(&bytes),
                    _ => job.stdout = None,
                }
            } else {
                job.status = job.child.try_wait().ok().flatten();
            }
        }

        let mut i = 0;
        while i < running.len() {
            if running[i].stdout.is_none() && running[i].status.is_some() {
                let job = running.swap_remove(i);
                let mut line = String::from_utf8_lossy(&job.out).trim_ascii().to_owned();
                match job.status.as_ref().map(ExitStatus::raw) {
                    Some(Status::Exited(0)) | None => {}
                    Some(Status::Exited(c)) => line.push_str(&format!(" [exited {c}]")),
                    Some(Status::Signaled(s)) => line.push_str(&format!(" [signaled {s}]")),
                }
                done.push((job.name, line));
            } else {
                i += 1;
            }
        }
    }

    done.sort();
    for (name, line) in &done {
        println!("{name}: {line}");
    }
    println!("{total} files, at most {most} at once");
}
