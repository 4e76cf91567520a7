//! The seed's spawn example as a guest component:
//!
//! ```js
//! const p = child_process.spawn('node', ['support.js', i]);
//! p.stdout.on('data', d => console.log('stdout: ' + d));
//! p.stderr.on('data', d => console.log('stderr: ' + d));
//! p.on('close', code => console.log('child process exited with code ' + code));
//! ```
//!
//! Spawns `support i` for i in 0..3, all running at once, and reacts to
//! whichever of their streams or exits is ready (one `poll` over all of
//! their pollables).

use wasmproc_guest::io::poll::poll;
use wasmproc_guest::io::streams::{InputStream, StreamError};
use wasmproc_guest::spawn::{Child, SpawnOptions, spawn};
use wasmproc_guest::types::{ExitStatus, Stdio};

/// One running child. Field order is drop order: streams before the child.
struct Running {
    stdout: Option<InputStream>,
    stderr: Option<InputStream>,
    child: Child,
    status: Option<ExitStatus>,
}

#[derive(Clone, Copy)]
enum Source {
    Stdout,
    Stderr,
    Exit,
}

fn main() {
    let program = std::env::args().nth(1).unwrap_or_else(|| "support".to_owned());
    let mut running = Vec::new();
    for i in 0..3 {
        let options =
            SpawnOptions { stdin: Stdio::Null, stdout: Stdio::Piped, stderr: Stdio::Piped, ..SpawnOptions::default() };
        match spawn(&program, &[i.to_string()], options) {
            Ok(child) => {
                running.push(Running { stdout: child.take_stdout(), stderr: child.take_stderr(), child, status: None })
            }
            Err(e) => {
                eprintln!("spawn {program} {i}: {}: {}", e.code(), e.message());
                std::process::exit(1);
            }
        }
    }
    while !running.is_empty() {
        // What each pollable stands for, then one poll over all of them.
        let mut sources = Vec::new();
        let mut pollables = Vec::new();
        for (k, r) in running.iter().enumerate() {
            if let Some(s) = &r.stdout {
                pollables.push(s.subscribe());
                sources.push((k, Source::Stdout));
            }
            if let Some(s) = &r.stderr {
                pollables.push(s.subscribe());
                sources.push((k, Source::Stderr));
            }
            if r.status.is_none() {
                pollables.push(r.child.subscribe());
                sources.push((k, Source::Exit));
            }
        }
        let ready = poll(&pollables.iter().collect::<Vec<_>>());
        // Pollables are children of their streams: drop them first.
        drop(pollables);
        for index in ready {
            let (k, source) = sources[index as usize];
            let r = &mut running[k];
            match source {
                Source::Stdout => read(&mut r.stdout, "stdout"),
                Source::Stderr => read(&mut r.stderr, "stderr"),
                Source::Exit => r.status = r.child.try_wait().ok().flatten().map(|t| t.status),
            }
        }
        // Node's 'close': the child exited and its stdio are closed.
        running.retain(|r| match (r.status, &r.stdout, &r.stderr) {
            (Some(status), None, None) => {
                match status {
                    ExitStatus::Exited(code) => println!("child process exited with code {code}"),
                    ExitStatus::Signaled(sig) => println!("child process killed by signal {sig}"),
                }
                false
            }
            _ => true,
        });
    }
}

/// Prints what is ready on `stream` with `label`; forgets it at its end.
fn read(stream: &mut Option<InputStream>, label: &str) {
    let Some(s) = stream else { return };
    match s.read(64 * 1024) {
        Ok(bytes) if bytes.is_empty() => {}
        Ok(bytes) => println!("{label}: {}", String::from_utf8_lossy(&bytes)),
        Err(StreamError::Closed) => *stream = None,
        Err(StreamError::LastOperationFailed(e)) => {
            eprintln!("{label}: {}", e.to_debug_string());
            *stream = None;
        }
    }
}
