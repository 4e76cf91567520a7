//! A pool of forked workers hashing every file of a directory.
//!
//! ```text
//! worker-pool DIR [WORKERS]
//! wasmproc run --dir data::/data --allow-fork pool-worker.wasm worker-pool.wasm /data 4
//! ```
//!
//! Forks WORKERS (default 4) `pool-worker.wasm` components, each holding
//! only DIR, read-only; hands out one file path at a time to whichever
//! worker is free (one `poll` over all their channels); prints the
//! `sha256sum`-style lines sorted by path, then a summary.

use wasmproc_guest::fork::{DirGrant, ForkOptions, Worker, fork};
use wasmproc_guest::io::poll::poll;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().cloned().unwrap_or_else(|| "/data".to_owned());
    let n: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(4).max(1);
    let mut jobs: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
            .collect(),
        Err(e) => {
            eprintln!("worker-pool: cannot list {dir}: {e}");
            std::process::exit(1);
        }
    };
    jobs.sort();
    jobs.reverse(); // pop() hands them out in order
    let total = jobs.len();
    let workers: Vec<Worker> = (0..n.min(total.max(1)))
        .map(|_| {
            let options =
                ForkOptions { dirs: vec![DirGrant { path: dir.clone(), read_only: true }], ..ForkOptions::default() };
            fork("pool-worker.wasm", &[], options).unwrap_or_else(|e| {
                eprintln!("worker-pool: fork: {}: {}", e.code(), e.message());
                std::process::exit(1);
            })
        })
        .collect();
    // Prime every worker with one job, then refill whichever answers.
    let mut busy = vec![false; workers.len()];
    for (w, worker) in workers.iter().enumerate() {
        if let Some(job) = jobs.pop() {
            worker.send(job.as_bytes()).expect("send job");
            busy[w] = true;
        }
    }
    let mut results = Vec::with_capacity(total);
    let mut per_worker = vec![0usize; workers.len()];
    while busy.iter().any(|b| *b) {
        let waiting: Vec<usize> = (0..workers.len()).filter(|&w| busy[w]).collect();
        let pollables: Vec<_> = waiting.iter().map(|&w| workers[w].subscribe()).collect();
        let ready = poll(&pollables.iter().collect::<Vec<_>>());
        drop(pollables);
        for r in ready {
            let w = waiting[r as usize];
            let reply = workers[w].receive().expect("a worker died");
            results.push(String::from_utf8_lossy(&reply).into_owned());
            per_worker[w] += 1;
            busy[w] = false;
            if let Some(job) = jobs.pop() {
                workers[w].send(job.as_bytes()).expect("send job");
                busy[w] = true;
            }
        }
    }
    for worker in &workers {
        let _ = worker.send(b"");
    }
    for worker in &workers {
        let _ = worker.wait();
    }
    results.sort_by(|a, b| a.split("  ").nth(1).cmp(&b.split("  ").nth(1)));
    let mut bytes = 0u64;
    for line in &results {
        let mut fields = line.split("  ");
        let (hash, path, size) =
            (fields.next().unwrap_or(""), fields.next().unwrap_or(""), fields.next().unwrap_or("0"));
        bytes += size.parse::<u64>().unwrap_or(0);
        println!("{hash}  {path}");
    }
    println!("{total} files, {bytes} bytes, hashed by {} workers (jobs per worker: {per_worker:?})", workers.len());
}
