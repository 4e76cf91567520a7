//! A pool of forked workers hashing every file of a directory.
//!
//! ```text
//! worker-pool DIR [WORKERS [PLACEMENT]]
//! wasmproc run --dir data::/data --allow-fork pool-worker.wasm worker-pool.wasm /data 4
//! ```
//!
//! Forks WORKERS (default 4) `pool-worker.wasm` components, each holding
//! only DIR, read-only; hands out one file path at a time to whichever
//! worker is free (one `poll` over all their channels); prints the
//! `sha256sum`-style lines sorted by path, then a summary. PLACEMENT is
//! `local` (the default), `cluster`, or `labels:L1,L2` (workers on the
//! agents of the host's cluster, DIR then naming a directory the agents
//! export). A worker that dies or is lost mid-run is reported on stderr;
//! its job goes to the others.

use wasmproc_guest::fork::{DirGrant, ForkOptions, Placement, Worker, fork};
use wasmproc_guest::io::poll::poll;

fn placement(arg: Option<&String>) -> Placement {
    match arg.map(String::as_str) {
        None | Some("local") => Placement::Local,
        Some("cluster") => Placement::Cluster,
        Some(other) => match other.strip_prefix("labels:") {
            Some(labels) => Placement::Labels(labels.split(',').map(String::from).collect()),
            None => {
                eprintln!("worker-pool: placement is local, cluster or labels:L1,L2, not {other:?}");
                std::process::exit(2);
            }
        },
    }
}

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
            let options = ForkOptions {
                dirs: vec![DirGrant { path: dir.clone(), read_only: true }],
                placement: placement(args.get(2)),
                ..ForkOptions::default()
            };
            fork("pool-worker.wasm", &[], options).unwrap_or_else(|e| {
                eprintln!("worker-pool: fork: {}: {}", e.code(), e.message());
                std::process::exit(1);
            })
        })
        .collect();
    // Prime every worker with one job, then refill whichever answers.
    let mut current: Vec<Option<String>> = vec![None; workers.len()];
    let mut alive = vec![true; workers.len()];
    let give = |w: usize, jobs: &mut Vec<String>, current: &mut Vec<Option<String>>, alive: &mut Vec<bool>| {
        while let Some(job) = jobs.pop() {
            if workers[w].send(job.as_bytes()).is_ok() {
                current[w] = Some(job);
                return;
            }
            jobs.push(job);
            alive[w] = false;
            return;
        }
    };
    for w in 0..workers.len() {
        give(w, &mut jobs, &mut current, &mut alive);
    }
    let mut results = Vec::with_capacity(total);
    let mut per_worker = vec![0usize; workers.len()];
    while current.iter().any(Option::is_some) {
        let waiting: Vec<usize> = (0..workers.len()).filter(|&w| current[w].is_some()).collect();
        let pollables: Vec<_> = waiting.iter().map(|&w| workers[w].subscribe()).collect();
        let ready = poll(&pollables.iter().collect::<Vec<_>>());
        drop(pollables);
        for r in ready {
            let w = waiting[r as usize];
            match workers[w].receive() {
                Ok(reply) => {
                    results.push(String::from_utf8_lossy(&reply).into_owned());
                    per_worker[w] += 1;
                    current[w] = None;
                    give(w, &mut jobs, &mut current, &mut alive);
                }
                Err(e) => {
                    let how = match workers[w].try_wait() {
                        Ok(Some(t)) => t.status.to_string(),
                        Ok(None) => "still running".to_owned(),
                        Err(e) => format!("{}: {}", e.code(), e.message()),
                    };
                    eprintln!(
                        "worker-pool: worker {w} is gone ({}: {}; {how}); its job goes to the others",
                        e.code(),
                        e.message()
                    );
                    alive[w] = false;
                    jobs.extend(current[w].take());
                    // Hand out again to every idle living worker.
                    for v in 0..workers.len() {
                        if alive[v] && current[v].is_none() {
                            give(v, &mut jobs, &mut current, &mut alive);
                        }
                    }
                }
            }
        }
        if !jobs.is_empty() && !alive.iter().any(|a| *a) {
            eprintln!("worker-pool: every worker is gone, {} jobs left", jobs.len());
            std::process::exit(1);
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
