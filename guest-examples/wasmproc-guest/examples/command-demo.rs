//! The `std::process`-style layer of wasmproc-guest, end to end (a test
//! guest of tests/languages.rs, and an example to copy from).
//!
//! `command-demo PROGRAM WORKER`: PROGRAM is the tests' `testprog`, WORKER a
//! component granted for forking that echoes messages (echo-worker).

use std::io::{Read, Write};
use wasmproc_guest::process::{self, Command, Stdio};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (program, worker) = (&args[1], &args[2]);

    // Run to completion; the host collects the output.
    let out = Command::new(program).args(["echo", "hello", "world"]).output()?;
    println!("output: {} {:?}", out.status, String::from_utf8_lossy(&out.stdout));

    // Feed stdin through a pipe; collect what comes back.
    let mut child = Command::new(program).arg("cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    child.stdin.take().unwrap().write_all(b"through a pipe")?;
    let out = child.wait_with_output()?;
    println!("piped: {} {:?}", out.status, String::from_utf8_lossy(&out.stdout));

    // Read a child's stdout with std::io::Read; the stream may outlive the
    // Child value.
    let mut stdout =
        Command::new(program).args(["echo", "streamed"]).stdout(Stdio::piped()).spawn()?.stdout.take().unwrap();
    let mut text = String::new();
    stdout.read_to_string(&mut text)?;
    println!("read: {text:?}");

    // Exit statuses.
    let status = Command::new(program).args(["exit", "3"]).status()?;
    println!("status: {status} success={} code={:?}", status.success(), status.code());

    // Errors carry the WIT error-code.
    match Command::new("cat").output() {
        Ok(_) => println!("cat: ran"),
        Err(e) => println!("cat: {} ({})", e.name(), e.is_access_denied()),
    }
    match process::exec("echo hi") {
        Ok(_) => println!("exec: ran"),
        Err(e) => println!("exec: {e}"),
    }
    let err: std::io::Error = Command::new("cat").spawn().unwrap_err().into();
    println!("io: {:?}", err.kind());

    // A worker component with a message channel.
    let echo = process::Fork::new(worker.as_str()).arg("echo").spawn()?;
    echo.send(b"ping")?;
    let reply = echo.recv()?.unwrap_or_default();
    println!("worker: {:?}", String::from_utf8_lossy(&reply));
    drop(echo);
    Ok(())
}
