//! `wasmproc`: run WebAssembly components that may start real, capability-
//! scoped OS processes.

#![forbid(unsafe_code)]
use anyhow::{Context as _, Result, anyhow, bail};

mod grants;
mod hints;
mod policy;
mod values;

use clap::{Parser, Subcommand};
use grants::Grants;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
use wasmproc::{GuestExit, GuestState, Runner};
use wasmproc_host::sandbox::DEFAULT_CHILD_UIDS;
use wasmproc_host::{AuditLog, ChildRlimits, DirAccess, Limits, ProcessCtx, ProcessCtxBuilder};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, WasiCtx};

const CAPABILITIES: &str = "\
CAPABILITY MODEL
  Everything is denied by default. A guest may only:
    - run programs granted with --allow-run (resolved to absolute paths now,
      never through a PATH the guest controls; the guest names a program by
      its file name or that absolute path);
    - run shell commands with `exec` if a shell is granted with --allow-shell
      (a shell can run any program it can reach: grant it knowingly);
    - start children in directories granted with --dir (and below them;
      `..` and symlinks cannot leave them), which are also the guest's own
      WASI preopens;
    - give its children the environment variable names allowed with
      --allow-env (children start with an empty environment);
    - fork the components granted with --allow-fork, as workers in their own
      processes that hold at most the guest's own capabilities.
  Each child is the leader of its own process group; the whole group is
  killed on timeout, on output overflow, when the request ends and when the
  host exits. Children are confined by the kernel, in layers (each named in
  the audit log; `confinement` is full only when every one is up):
    identity  under a root host, each guest's children run as a uid and
              gid of that guest's own, leased from --child-uids (no other
              guest on the machine holds it while it runs), or as
              --child-user, with no supplementary group: they own none of
              the host's files and cannot signal, prlimit or renice
              another guest's children;
    mount     a mount namespace whose read-only root holds only the system
              directories and files programs need, a few devices, the
              granted directories (read-only ones read-only) and the granted
              programs, every mount nosuid,nodev: nothing else exists for
              them, not even to stat;
    network   an empty network namespace, unless --allow-network;
    ipc       an IPC namespace of the guest's and a session keyring of each
              child's own;
    seccomp   no new namespaces, keys, ptrace, bpf, perf, userfaultfd,
              io_uring, mounts, setuid/setgid mode bits, or socket
              families other than unix/inet/netlink (errors the
              child sees);
    landlock  a second wall: only the granted directories and programs and
              the system files, no TCP unless --allow-network.
  --no-sandbox drops the first five, --no-confinement all; a host without
  root or an older kernel loses some, which is reported (warning) and makes
  confinement partial; --require-confinement then refuses to start
  children. Children also get no_new_privs and no Linux capability (unless
  --allow-uid-change keeps the host's uid with CAP_SETUID/CAP_SETGID), no
  descriptor of the host but stdio (inherited output is a pipe the host
  copies, inherited stdin is reopened read-only), and loader/interpreter
  injection variables (LD_PRELOAD, NODE_OPTIONS, ...) are refused even if
  allowed. Children run in a cgroup of the guest's (where the host may make
  one) that is killed when the guest ends, so nothing they start outlives
  it (--no-cgroup, --cgroup-per-child). A refused request returns an
  error-code to the
  guest and is reported on stderr with the flag that would grant it.";

/// Run WebAssembly components that exec, spawn and fork real OS processes,
/// under capabilities you grant.
#[derive(Parser)]
#[command(version, about, after_long_help = CAPABILITIES)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a wasi:cli/command component with the process capabilities granted
    /// by the options.
    #[command(after_long_help = CAPABILITIES)]
    Run(Box<RunArgs>),
    /// Serve as a cluster agent: run the workers that forking hosts
    /// (`wasmproc run --cluster URL`) place on this machine, each within
    /// this agent's own policy and in the same sandbox as a local worker.
    Agent(Box<AgentArgs>),
    /// Make a cluster identity: write a new nkey seed (a NATS user key) to
    /// FILE (mode 0600, never overwritten) and print its public key, which
    /// the other side trusts (`--trust-agent`, `--trust-host`) and the
    /// NATS server's configuration names (deploy/nats/).
    Keygen {
        /// Where the seed goes.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print a policy file with every key `--policy` accepts, each
    /// commented with the flag it stands for.
    Policy {
        /// Print the example (the only thing this command does).
        #[arg(long, required = true)]
        example: bool,
    },
    /// Compile components into the compiled-component cache ahead of time
    /// (as `wasmtime compile`), so that their first run or fork does not pay
    /// for it; prints `COMPONENT -> ENTRY` for each. The cache is
    /// $WASMPROC_CACHE, else $XDG_CACHE_HOME/wasmproc/components, else
    /// ~/.cache/wasmproc/components.
    Compile {
        /// The components to compile.
        #[arg(required = true, value_name = "COMPONENT")]
        components: Vec<PathBuf>,
    },
    /// Print the WIT package wasmproc:process@0.2.0 that guests import, or,
    /// with --out DIR, write it with the wasi 0.2.12 packages it uses
    /// (DIR/process.wit, DIR/deps/...): a folder that WIT tools and guest
    /// toolchains (wit-bindgen, componentize-py, componentize-js) build
    /// against as it is.
    Wit {
        /// Write the package and its dependencies into this folder
        /// (created if missing; files already there are replaced).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Worker mode, started by `fork`: the worker's capabilities come from
    /// its parent host over the channel, never from flags.
    #[command(name = "__worker", hide = true)]
    Worker {
        /// The inherited descriptor of the channel to the parent host.
        #[arg(long)]
        channel_fd: i32,
        /// The compiled code of a component this worker may be asked to
        /// run, as KEY:FD (its cache key and the inherited sealed memfd the
        /// host put it in), loaded before its specification comes (a warm
        /// worker, the template); repeatable.
        #[arg(long)]
        preload: Vec<String>,
        /// Serve as the host's worker template: fork a new worker for each
        /// request (see `wasmproc_host::worker::serve_as_template`).
        #[arg(long)]
        template: bool,
        /// The user (UID:GID) the worker process becomes as it starts.
        #[arg(long, value_parser = parse_user)]
        user: Option<(u32, u32)>,
    },
}

#[derive(Parser)]
struct RunArgs {
    #[command(flatten)]
    grants: Grants,

    /// The component to run.
    component: PathBuf,

    /// Arguments for the component (its argv[1..]).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// `wasmproc agent`: serve the workers forking hosts place on this machine.
#[derive(Parser)]
struct AgentArgs {
    /// The NATS server(s) to join, `nats://HOST:PORT` (or `tls://`),
    /// several separated by commas.
    #[arg(long, value_name = "URL")]
    nats: String,

    /// A label to advertise (repeatable), such as `gpu` or `zone=a`;
    /// `sha256:HEX` of every pinned program is added.
    #[arg(long = "label", value_name = "LABEL")]
    labels: Vec<String>,

    /// This agent's identity: a file holding its nkey seed (`wasmproc
    /// keygen FILE`). It signs its adverts, and is its NATS nkey unless
    /// --nats-token, --nats-creds or --nats-nkey says otherwise. Without
    /// it a key is made for this run and printed.
    #[arg(long, value_name = "FILE")]
    agent_key: Option<PathBuf>,

    /// Serve the hosts with this public key (repeatable): fork requests
    /// signed by any other key are dropped. Required unless --insecure.
    #[arg(long = "trust-host", value_name = "KEY")]
    trust_host: Vec<String>,

    /// The agent's own policy, the ceiling of every worker it runs: its
    /// programs, exported directories (`--dir HOST::NAME` exports HOST as
    /// NAME), components (`--allow-fork`), limits and sandbox settings.
    #[command(flatten)]
    grants: Grants,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMPROC_LOG")
                // Sandbox warnings (a layer down, a grant the child user
                // cannot use) and the cluster's (messages dropped from the
                // bus, with their count) are shown unless the operator
                // chooses.
                .unwrap_or_else(|_| {
                    "error,wasmproc::sandbox=warn,wasmproc::cluster=warn,wasmproc::cache=warn"
                        .into()
                }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::env::var_os("NO_COLOR"),
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ))
        .init();
    let cli = Cli::parse_from(guest_args_apart(std::env::args_os().collect()));
    let result = match cli.command {
        Commands::Run(args) => run(*args),
        Commands::Agent(args) => agent(*args),
        Commands::Keygen { file } => keygen(&file),
        Commands::Worker {
            channel_fd,
            preload,
            template,
            user,
        } => worker(channel_fd, &preload, template, user),
        Commands::Compile { components } => compile(&components),
        Commands::Policy { example: _ } => {
            print!("{}", policy::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
        Commands::Wit { out: None } => {
            print!("{}", WIT_FILES[0].1);
            Ok(ExitCode::SUCCESS)
        }
        Commands::Wit { out: Some(dir) } => write_wit(&dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wasmproc: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether to colour the logs: only on a terminal, and never when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
fn colour(no_color: Option<std::ffi::OsString>, terminal: bool) -> bool {
    no_color.is_none_or(|v| v.is_empty()) && terminal
}

#[cfg(test)]
#[test]
fn logs_are_coloured_only_on_a_terminal_and_without_no_color() {
    assert!(colour(None, true));
    assert!(colour(Some("".into()), true));
    assert!(!colour(Some("1".into()), true));
    assert!(!colour(None, false));
}

fn run(mut args: RunArgs) -> Result<ExitCode> {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(why) = hints::not_a_component(&args.component, &argv) {
        bail!("{why}");
    }
    if let Some(path) = args.grants.policy.clone() {
        grants::apply_policy_file(&path, &mut args.grants)?;
    }
    // The cache first: no grant may reach it.
    let runner = Runner::new()?;
    // One audit log for the guest and the cluster (one writer: whole lines).
    let audit = open_audit(&args.grants, Some(&args.component))?;
    let (wasi, mut process) = contexts(
        &args.grants,
        (&args.component, &args.args),
        &runner,
        audit.clone(),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if let Some(url) = &args.grants.cluster {
            let g = &args.grants;
            let (identity, trust) = cluster_trust("run --cluster", &g.host_key, &g.trust_agent, g)?;
            let nats = g.nats(url, g.host_key.as_deref());
            let cluster = wasmproc_host::cluster::Cluster::connect(&nats, identity, trust, audit);
            process.cluster(cluster.await?);
        }
        let component = load(&runner, &args.component)?;
        let pre = runner.prepare(&component)?;
        let code = run_prepared(&runner, &pre, wasi, process.build(), None).await?;
        Ok(ExitCode::from(code))
    })
}

/// `wasmproc agent`: see `wasmproc_host::agent`.
fn agent(mut args: AgentArgs) -> Result<ExitCode> {
    if let Some(path) = args.grants.policy.clone() {
        grants::apply_policy_file(&path, &mut args.grants)?;
    }
    if args.grants.allow_fork.is_empty() {
        bail!("an agent runs only the components granted with --allow-fork: grant at least one");
    }
    let runner = Runner::new()?;
    let audit = open_audit(&args.grants, None)?;
    let (_, mut process) = contexts(&args.grants, (Path::new("agent"), &[]), &runner, audit)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let keys = cluster_trust("agent", &args.agent_key, &args.trust_host, &args.grants)?;
    runtime.block_on(async {
        let nats = args.grants.nats(&args.nats, args.agent_key.as_deref());
        let agent = wasmproc_host::agent::Agent::connect(&nats, process.build(), args.labels, keys);
        let agent = agent.await?;
        println!("agent {} serving", agent.id());
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            served = agent.serve() => served?,
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The identity in `key` (else one made now, and printed) and the keys
/// `trusted` of a cluster member, `what`; with none trusted, anyone, but
/// only with --insecure (said on stderr here, in the audit log by the
/// library).
fn cluster_trust(
    what: &str,
    key: &Option<PathBuf>,
    trusted: &[String],
    grants: &Grants,
) -> Result<(
    wasmproc_host::cluster::Identity,
    wasmproc_host::cluster::Trust,
)> {
    use wasmproc_host::cluster::{Identity, Trust};
    let identity = match key {
        Some(path) => Identity::from_file(path)?,
        None => {
            let identity = Identity::generate();
            eprintln!(
                "wasmproc: {what}: no key file given: this run's key is {}",
                identity.public_key()
            );
            identity
        }
    };
    let (flag, role) = match what {
        "agent" => ("--trust-host", "host"),
        _ => ("--trust-agent", "agent"),
    };
    let trust = match (trusted, grants.insecure) {
        ([], false) => bail!(
            "{what} trusts no {role}: give {flag} KEY for each {role} (its public key, as              `wasmproc keygen` prints it), or --insecure to trust anyone on the bus"
        ),
        ([], true) => {
            eprintln!(
                "wasmproc: warning: {what} is insecure: it trusts any {role} that signs, and                  anyone who can reach the NATS server can be one (--insecure)"
            );
            Trust::anyone()
        }
        (keys, _) => Trust::keys(keys)?,
    };
    Ok((identity, trust))
}

/// The audit log `--audit-log` names, opened: every event carries this
/// run's id (its start time in milliseconds and the host's pid) and what
/// it runs (`guest`: the component's path), so that runs sharing one log
/// can be told apart (an agent's events have no `guest`: each carries the
/// `worker` it came from).
fn open_audit(args: &Grants, guest: Option<&Path>) -> Result<Option<AuditLog>> {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let run = format!("{started}-{}", std::process::id());
    let mut context = serde_json::json!({ "run": run });
    if let Some(guest) = guest {
        let guest = std::path::absolute(guest).unwrap_or_else(|_| guest.to_owned());
        context["guest"] = serde_json::json!(guest);
    }
    let open = |path: &PathBuf| {
        let log =
            AuditLog::to_file(path).with_context(|| format!("--audit-log {}", path.display()))?;
        Ok(log.with_context(context.clone()))
    };
    args.audit_log.as_ref().map(open).transpose()
}

/// `wasmproc keygen FILE`: a new identity's seed to FILE (0600, never
/// overwritten), its public key to stdout.
fn keygen(file: &Path) -> Result<ExitCode> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let identity = wasmproc_host::cluster::Identity::generate();
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("creating {}", file.display()))?;
    writeln!(out, "{}", identity.seed())?;
    println!("{}", identity.public_key());
    Ok(ExitCode::SUCCESS)
}

/// `argv` with `--` put after the component of `wasmproc run` (unless
/// there is one already): what follows the component is the guest's, even
/// where it looks like one of wasmproc's own flags (`run guest.wasm --dir
/// x` gives the guest `--dir x`).
fn guest_args_apart(mut argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory as _;
    let Some(run) = argv.iter().position(|a| a == "run") else {
        return argv;
    };
    let command = Cli::command();
    let Some(flags) = command.find_subcommand("run") else {
        return argv;
    };
    let takes_value = |token: &str| {
        flags.get_arguments().any(|arg| {
            let long = token
                .strip_prefix("--")
                .is_some_and(|l| arg.get_long() == Some(l));
            let short = (token.len() == 2 && token.starts_with('-') && !token.starts_with("--"))
                .then(|| token.chars().nth(1))
                .flatten()
                .is_some_and(|c| arg.get_short() == Some(c));
            // (A value only after `=` is never the next token.)
            let next_is_value = arg.get_action().takes_values()
                && !arg.is_require_equals_set()
                && arg.get_num_args().is_none_or(|n| n.min_values() > 0);
            (long || short) && next_is_value
        })
    };
    let mut i = run + 1;
    while let Some(token) = argv.get(i).and_then(|t| t.to_str()) {
        match token {
            "--" => return argv,
            _ if token.starts_with('-') && token.len() > 1 => {
                i += if !token.contains('=') && takes_value(token) {
                    2
                } else {
                    1
                };
            }
            _ => {
                if argv.get(i + 1).is_some_and(|next| next != "--") {
                    argv.insert(i + 1, "--".into());
                }
                return argv;
            }
        }
    }
    argv
}

/// Runs a forked worker: see `wasmproc_host::worker`;
/// `template`: serve as the worker template; `user`: the user to become
/// at once.
fn worker(
    channel_fd: i32,
    preload: &[String],
    template: bool,
    user: Option<(u32, u32)>,
) -> Result<ExitCode> {
    // Everything up to `confine` runs on this one thread: the worker
    // confines itself before any other thread exists, so every thread it
    // starts later (the runtime's, the compiler's) is confined too.
    // The engine first, and the components it may run, with their imports
    // resolved: a warm worker (and the template it is forked from) has them
    // ready before it knows which it will run, and holds nothing until its
    // specification comes. A worker never opens the component cache: its
    // code comes from the host, in sealed memfds (wasmproc_host::code).
    let runner = Runner::with_cache(None)?;
    let mut loaded: std::collections::HashMap<String, CommandPre<GuestState>> = (preload.iter())
        .filter_map(|arg| {
            let (key, component) = wasmproc_host::worker::preloaded(runner.engine(), arg)
                .map_err(|e| tracing::warn!(error = %format!("{e:#}"), "cannot preload code"))
                .ok()?;
            Some((key, runner.prepare(&component).ok()?))
        })
        .collect();
    // The system paths every Landlock ruleset grants, opened once (and
    // inherited by the template's copies).
    wasmproc_host::confine::system_rules();
    if let Some(user) = user {
        wasmproc_host::worker::become_user(user)?;
    }
    let mut channel = wasmproc_host::worker::inherited_channel(channel_fd)?;
    if template {
        // Returns in each worker it forks (with its own channel).
        match wasmproc_host::worker::serve_as_template(channel)? {
            Some(own) => channel = own,
            None => return Ok(ExitCode::SUCCESS),
        }
    }
    let worker = wasmproc_host::worker::WorkerProcess::accept(channel)?;
    let pre = match loaded.remove(worker.code_key()) {
        Some(pre) => pre,
        None => runner.prepare(&worker.load(runner.engine())?)?,
    };
    drop(loaded);
    let wasi = { worker.wasi }.build();
    let mut process = { worker.process }.build();
    wasmproc_host::worker::confine(&process)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut reports = worker.reports;
    let code = runtime.block_on(async {
        process.connect_parent(worker.channel)?;
        run_prepared(&runner, &pre, wasi, process, reports.as_mut()).await
    })?;
    // The guest has ended, its messages and reports are written and its
    // children killed (its store is dropped): exit now, leaving the
    // runtime, engine and components to the kernel to free at once rather
    // than tearing them down one by one.
    std::process::exit(i32::from(code))
}

/// Runs a prepared guest until it ends or the host gets SIGINT/SIGTERM, and
/// turns how it ended into the process's exit code; a trap is also
/// reported up `trap_report` (a worker's).
async fn run_prepared(
    runner: &Runner,
    pre: &CommandPre<GuestState>,
    wasi: WasiCtx,
    process: ProcessCtx,
    trap_report: Option<&mut std::fs::File>,
) -> Result<u8> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    // On SIGINT/SIGTERM the guest's store is dropped, which kills the
    // process group of every child it still holds.
    let (exit, trap) = tokio::select! {
        result = runner.run_prepared(pre, wasi, process) => result?,
        _ = interrupt.recv() => return Ok(stopped("SIGINT", 130)),
        _ = terminate.recv() => return Ok(stopped("SIGTERM", 143)),
    };
    Ok(match exit {
        GuestExit::Code(code) => u8::try_from(code).unwrap_or(1),
        // Its output's reader went away (`wasmproc run … | head`): the
        // guest failed writing to a closed pipe. End quietly, as a CLI
        // killed by SIGPIPE does.
        GuestExit::Trap if trap_report.is_none() && stdout_reader_gone() => 141,
        GuestExit::Trap => {
            if let (Some(pipe), Some(e)) = (trap_report, &trap) {
                wasmproc_host::worker::report_trap(pipe, &e.root_cause().to_string());
            }
            let trap = trap.map(|e| format!("{e:#}")).unwrap_or_default();
            eprintln!("wasmproc: error: the guest trapped: {trap}");
            // As wasmtime's CLI does for a trap: the status of SIGABRT.
            134
        }
    })
}

/// Whether this process's stdout is a pipe or socket whose reader has
/// gone (so a write to it fails with EPIPE).
fn stdout_reader_gone() -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(&stdout, PollFlags::OUT)];
    let now = rustix::event::Timespec::default();
    matches!(poll(&mut fds, Some(&now)), Ok(1))
        && (fds[0].revents()).intersects(PollFlags::ERR | PollFlags::HUP)
}

/// The component at `path`, through `runner`'s cache. A big component
/// whose load takes long is being compiled (its first run): that is said
/// on stderr when it is a terminal, once, with how to do it ahead of
/// time, rather than leaving the operator to seconds of silence (and
/// logged at `info` either way).
fn load(runner: &Runner, path: &Path) -> Result<wasmtime::component::Component> {
    const BIG: u64 = 4 << 20;
    const LONG: std::time::Duration = std::time::Duration::from_secs(2);
    if std::fs::metadata(path).map_or(true, |m| m.len() < BIG) {
        return runner.load(path);
    }
    let (loaded, waiting) = std::sync::mpsc::channel::<()>();
    let shown = path.display().to_string();
    let notice = std::thread::spawn(move || {
        if waiting.recv_timeout(LONG) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            tracing::info!(component = %shown, "compiling");
            // Said to a person at a terminal; a script's stderr stays the
            // guest's own (the log line above is there for it).
            if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                return;
            }
            eprintln!(
                "wasmproc: compiling {shown} (only on its first run: `wasmproc compile {shown}` \
                 does it ahead of time)"
            );
        }
    });
    let component = runner.load(path);
    drop(loaded);
    let _ = notice.join();
    component
}

/// `wasmproc compile`: fills the cache, one line per component.
fn compile(components: &[PathBuf]) -> Result<ExitCode> {
    let runner = Runner::new()?;
    for component in components {
        let entry = runner.compile(component)?;
        println!("{} -> {}", component.display(), entry.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn stopped(signal: &str, code: u8) -> u8 {
    eprintln!("wasmproc: stopped by {signal}; the guest's children were killed");
    code
}

/// The WASI and process contexts the flags describe; no directory grant
/// may contain `runner`'s component cache or lie inside it.
fn contexts(
    args: &Grants,
    (component, guest_args): (&Path, &[String]),
    runner: &Runner,
    audit: Option<AuditLog>,
) -> Result<(WasiCtx, wasmproc_host::ProcessCtxBuilder)> {
    let mut wasi = WasiCtx::builder();
    let mut process = ProcessCtx::builder();
    if let Some(guard) = runner.cache_guard() {
        process.cache_guard(guard.clone());
    }
    wasi.inherit_stdio();
    let name = component.file_name().unwrap_or_default().to_string_lossy();
    wasi.arg(name).args(guest_args);
    for env in &args.envs {
        match env.split_once('=') {
            Some((k, v)) => wasi.env(k, v),
            None => match std::env::var(env) {
                Ok(v) => wasi.env(env, v),
                Err(_) => bail!("--env {env}: the host has no variable {env} to pass on"),
            },
        };
    }
    let rw = args
        .dirs
        .iter()
        .map(|d| (d, DirAccess::ReadWrite, FsPerms::ReadWrite, "--dir"));
    let ro = args
        .dirs_ro
        .iter()
        .map(|d| (d, DirAccess::ReadOnly, FsPerms::ReadOnly, "--dir-ro"));
    args.check()?;
    let hints = hints::Hints::new(args);
    for (dir, access, perms, flag) in rw.chain(ro) {
        // First the process grant, which refuses a directory reaching the
        // component cache (the guard below).
        process
            .dir(&dir.host, &dir.guest, access)
            .with_context(|| format!("{flag} {dir}"))?;
        wasi.preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{flag} {dir}"))?;
    }
    for program in &args.allow_run {
        match program.rsplit_once("@sha256:") {
            Some((path, hex)) => process.allow_program_pinned(path, hex),
            None => process.allow_program(program),
        }
        .with_context(|| format!("--allow-run {program}"))?;
    }
    if !args.allow_fork.is_empty() {
        process.worker_executable(std::env::current_exe()?, runner.worker_code())?;
    }
    for component in &args.allow_fork {
        process
            .allow_fork(component)
            .with_context(|| format!("--allow-fork {}", component.display()))?;
    }
    for shell in &args.allow_shell {
        process
            .allow_shell(shell)
            .with_context(|| format!("--allow-shell {shell}"))?;
    }
    for name in &args.allow_env {
        process
            .allow_env(name)
            .with_context(|| format!("--allow-env {name}"))?;
    }
    for name in &args.allow_injection_env {
        process
            .allow_injection_env(name)
            .with_context(|| format!("--allow-injection-env {name}"))?;
    }
    for &uid in &args.allow_uids {
        process.allow_uid(uid);
    }
    for &gid in &args.allow_gids {
        process.allow_gid(gid);
    }
    if let Some(log) = audit {
        process.audit_log(log);
    }
    process
        .limits(Limits {
            default_timeout: args.timeout,
            max_timeout: args.timeout,
            max_buffer: args.max_buffer.0,
            max_live_children: args.max_children,
            rlimits: rlimits(&args.rlimits)?,
            max_wasm_memory: (args.max_wasm_memory.0 > 0).then_some(args.max_wasm_memory.0),
            channel_buffer: args.channel_buffer.to_usize(),
            channel_buffer_total: args.channel_buffer_total.to_usize(),
            ..Limits::default()
        })
        .confine(!args.no_confinement)
        .cgroup(!args.no_cgroup)
        .cgroup_per_child(args.cgroup_per_child)
        .allow_uid_change(args.allow_uid_change)
        .sandbox(!args.no_sandbox)
        .allow_network(args.allow_network)
        .require_confinement(args.require_confinement)
        .channel_spin(args.channel_spin)
        .warm_workers(args.warm_workers)
        .worker_template(!args.no_worker_template)
        .on_denial(move |denial| eprintln!("wasmproc: denied: {denial} ({})", hints.grant(denial)));
    match (args.child_user, args.child_uids.clone()) {
        (Some((uid, gid)), _) => process.child_user(uid, gid),
        (None, ids) => process.child_uids(ids.unwrap_or(DEFAULT_CHILD_UIDS)),
    };
    if !args.no_confinement {
        warn_unreachable_interpreters(&process, args);
    }
    // Running wasmproc itself would let a guest choose its own flags.
    let me = std::fs::canonicalize(std::env::current_exe()?)?;
    if process
        .programs()
        .any(|p| std::fs::canonicalize(p).is_ok_and(|p| p == me))
    {
        bail!(
            "refusing to grant wasmproc itself to the guest: it could run it with any flags (use --allow-fork)"
        );
    }
    Ok((wasi.build(), process))
}

/// Warns of each granted program that needs files confined children
/// cannot see (a shim, a script's interpreter), naming what to grant.
fn warn_unreachable_interpreters(process: &ProcessCtxBuilder, args: &Grants) {
    let granted: Vec<PathBuf> = process.programs().map(Path::to_owned).collect();
    let dirs: Vec<PathBuf> = (args.dirs.iter().chain(&args.dirs_ro))
        .filter_map(|d| std::fs::canonicalize(&d.host).ok())
        .collect();
    let visible = |path: &Path| {
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let system = wasmproc_host::confine::SYSTEM_DIRS.iter().map(Path::new);
        granted.iter().any(|g| *g == real || g == path)
            || system
                .chain(dirs.iter().map(PathBuf::as_path))
                .any(|d| real.starts_with(d))
    };
    for program in &granted {
        if let Some(warning) = hints::unreachable_interpreter(program, &visible) {
            eprintln!("wasmproc: warning: {warning}");
        }
    }
}

/// The `--rlimit NAME=VALUE` flags.
fn rlimits(flags: &[String]) -> Result<ChildRlimits> {
    let mut limits = ChildRlimits::default();
    for flag in flags {
        let (name, value) =
            values::parse_rlimit(flag).map_err(|e| anyhow!("--rlimit {flag}: {e}"))?;
        let slot = match name {
            "cpu" => &mut limits.cpu_seconds,
            "as" => &mut limits.address_space,
            "nofile" => &mut limits.open_files,
            "nproc" => &mut limits.processes,
            _ => &mut limits.file_size,
        };
        *slot = Some(value);
    }
    Ok(limits)
}

/// The WIT package guests import, and the wasi packages it uses, as the
/// repository's `wit/` folder holds them: (path in the folder, text).
const WIT_FILES: &[(&str, &str)] = &[
    ("process.wit", include_str!("../wit/process.wit")),
    ("deps/io/io.wit", include_str!("../wit/deps/io/io.wit")),
    (
        "deps/clocks/clocks.wit",
        include_str!("../wit/deps/clocks/clocks.wit"),
    ),
    (
        "deps/random/random.wit",
        include_str!("../wit/deps/random/random.wit"),
    ),
    (
        "deps/filesystem/filesystem.wit",
        include_str!("../wit/deps/filesystem/filesystem.wit"),
    ),
    (
        "deps/sockets/sockets.wit",
        include_str!("../wit/deps/sockets/sockets.wit"),
    ),
    ("deps/cli/cli.wit", include_str!("../wit/deps/cli/cli.wit")),
];

/// `wasmproc wit --out DIR`: writes [`WIT_FILES`] under `dir`, and says
/// where.
fn write_wit(dir: &Path) -> Result<ExitCode> {
    for (path, text) in WIT_FILES {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    println!(
        "wrote wasmproc:process@0.2.0 and the wasi packages it uses to {}",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A `UID:GID` pair.
fn parse_user(text: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = text.split_once(':').ok_or("expected UID:GID")?;
    Ok((
        uid.parse().map_err(|e| format!("uid: {e}"))?,
        gid.parse().map_err(|e| format!("gid: {e}"))?,
    ))
}
