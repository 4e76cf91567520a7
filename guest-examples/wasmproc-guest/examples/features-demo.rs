//! What wasmproc-guest's `process` layer adds for `wasmproc:process@0.2.0`,
//! end to end, one line of output per feature (an example to copy from).
//!
//! ```text
//! features-demo SELF DIR
//! wasmproc run --dir /tmp/demo::/data --allow-run seq --allow-run sort --allow-run sleep \
//!     --allow-shell --allow-fork features-demo.wasm features-demo.wasm features-demo.wasm /data
//! ```
//!
//! SELF is this component as granted for forking (it forks itself as the
//! worker: `features-demo --worker MODE`); DIR a read-write granted
//! directory, empty.

use std::time::Duration;
use wasmproc_guest::process::{self, Command, Fork, Placement, Stdio};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--worker") {
        worker(&args[2..]);
    }
    let (me, dir) = (&args[1], &args[2]);
    let file = format!("{dir}/sorted");

    // `seq 5 | sort -rn > DIR/sorted`: child to child, into a file.
    let mut seq = Command::new("seq").arg("5").stdout(Stdio::piped()).spawn()?;
    let mut sort = Command::new("sort");
    sort.arg("-rn").stdin(Stdio::from(seq.stdout.take().unwrap())).stdout(Stdio::create_file(&file));
    let status = sort.status()?;
    println!("pipe: {status} {}", seq.wait()?);
    // The pipe went to the first spawn; the command cannot give it again.
    println!("again: {}", sort.spawn().unwrap_err().name());
    Command::new("seq").args(["6", "6"]).stdout(Stdio::append_file(&file)).status()?;
    println!("file: {:?}", std::fs::read_to_string(&file)?);
    // A file as stdin, with the output collected.
    let out = Command::new("sort").arg("-n").stdin(Stdio::read_file(&file)).output()?;
    println!("from file: {:?}", String::from_utf8_lossy(&out.stdout));
    let refused = Command::new("seq").arg("1").stdout(Stdio::create_new_file(&file)).status().unwrap_err();
    println!("create_new over a file: {}", refused.name());

    // Deadlines: SIGTERM by default, or the signal chosen.
    let status = Command::new("sleep").arg("10").timeout(Duration::from_millis(200)).status()?;
    println!("timeout: {status} success={} signal={:?}", status.success(), status.signal());
    let status = Command::new("sleep").arg("10").timeout(Duration::from_millis(200)).kill_signal(9).status()?;
    println!("kill_signal: {status}");
    let out = Command::new("sleep").arg("10").timeout(Duration::from_millis(200)).output()?;
    println!("output timeout: {} {}", out.status, out.timed_out);

    // Waiting with a limit.
    let mut child = Command::new("sleep").arg("10").spawn()?;
    let first = child.wait_timeout(Duration::from_millis(100))?;
    child.kill()?;
    let then = child.wait_timeout(Duration::from_secs(5))?;
    println!("wait_timeout: {first:?} then {}", then.map(|s| s.to_string()).unwrap_or_default());

    // What a child used.
    let status = Command::new("seq").arg("300000").stdout(Stdio::null()).status()?;
    let usage = status.usage();
    println!("usage: rss>0={} cpu<10s={}", usage.max_rss_bytes > 0, usage.user_time() < Duration::from_secs(10));

    // A shell chosen by name.
    let out = process::exec_in("sh", "echo from $0")?;
    println!("exec_in: {:?}", String::from_utf8_lossy(&out.stdout));
    println!("exec_in bash: {}", process::exec_in("bash", "true").unwrap_err().name());

    // Workers: their own exit codes, traps, piped stdout, channel close on
    // either side, forking in turn.
    let status = Fork::new(me.as_str()).args(["--worker", "exit", "7"]).spawn()?.wait()?;
    println!("worker exit: {status}");
    let status = Fork::new(me.as_str()).args(["--worker", "trap"]).stderr(Stdio::null()).spawn()?.wait()?;
    println!("worker trap: code={:?} trapped={}", status.code(), status.trap().is_some());
    let worker = Fork::new(me.as_str()).args(["--worker", "print"]).stdout(Stdio::piped()).spawn()?;
    let out = Command::new("sort").stdin(Stdio::from(worker.take_stdout().unwrap())).output()?;
    println!("worker stdout to sort: {:?} {}", String::from_utf8_lossy(&out.stdout), worker.wait()?);
    let worker = Fork::new(me.as_str()).args(["--worker", "count"]).spawn()?;
    for m in ["a", "b", "c"] {
        worker.send(m.as_bytes())?;
    }
    worker.close_channel();
    println!("close_channel: send={} worker {}", worker.send(b"d").unwrap_err().name(), worker.wait()?);
    let worker = Fork::new(me.as_str()).args(["--worker", "close"]).spawn()?;
    let bye = worker.recv()?.unwrap_or_default();
    println!("parent closed: {:?} then {:?}, worker {}", String::from_utf8_lossy(&bye), worker.recv()?, worker.wait()?);
    let status = Fork::new(me.as_str()).args(["--worker", "nested", me]).allow_fork(me.as_str()).spawn()?.wait()?;
    println!("nested fork: {status}");
    let status = Fork::new(me.as_str()).args(["--worker", "nested", me]).spawn()?.wait()?;
    println!("nested fork without the grant: {status}");
    let refused = Fork::new(me.as_str()).placement(Placement::Cluster).spawn().unwrap_err();
    println!("placement cluster: {}", refused.name());
    Ok(())
}

/// The worker side, by mode.
fn worker(args: &[String]) -> ! {
    match args.first().map(String::as_str).unwrap_or_default() {
        "exit" => wasmproc_guest::exit(args[1].parse().unwrap()),
        "trap" => panic!("a worker that traps"),
        "print" => {
            println!("pear\napple\nfig");
            wasmproc_guest::exit(0)
        }
        "count" => {
            // Exits with how many messages arrived before the channel closed.
            let mut n = 0;
            while process::recv_from_parent().unwrap().is_some() {
                n += 1;
            }
            wasmproc_guest::exit(n)
        }
        "close" => {
            process::send_to_parent(b"bye").unwrap();
            process::close_parent_channel();
            let refused = process::send_to_parent(b"more").is_err_and(|e| e.name() == "closed");
            wasmproc_guest::exit(if refused { 0 } else { 1 })
        }
        "nested" => match Fork::new(args[1].as_str()).args(["--worker", "exit", "5"]).spawn() {
            Ok(inner) => wasmproc_guest::exit(inner.wait().unwrap().code().unwrap_or(99) as u8),
            Err(e) => {
                eprintln!("nested: {e}");
                wasmproc_guest::exit(if e.is_access_denied() { 13 } else { 99 })
            }
        },
        other => panic!("unknown worker mode {other:?}"),
    }
}
