//! Scale-out: workers forked onto the agents of a cluster, through NATS,
//! with the contract of a local `fork`.
//!
//! Why these choices:
//! - **Discovery, capacity and liveness in one message.** Each agent
//!   publishes an [`Advert`] (its id, labels and free worker slots) on
//!   [`ADVERTS`] every [`HEARTBEAT`]; a forking host keeps the table and
//!   picks the agent. A KV bucket would need JetStream on every server and
//!   still no liveness; the service API gives discovery by request, but
//!   a host needs the heartbeats anyway to notice a lost agent, and the
//!   adverts carry the capacity the choice depends on. Forking is then a
//!   plain request to the chosen agent's subject (no queue group: the
//!   host, not NATS, must choose by labels and capacity).
//! - **The channel is the local one, bridged.** The guest's `worker` keeps
//!   its local [`Channel`](crate::Channel) on a socketpair; the other end
//!   is pumped to and from NATS as a byte stream, and on the agent the
//!   same pump feeds the worker process's own socket. Framing, order,
//!   size limits and the guest-side buffer are thus the local code's.
//!   Over NATS each direction is one subject with one publisher and one
//!   subscriber (ordered), every data message numbered (a gap closes the
//!   channel: NATS core may drop for a slow consumer), and sent only
//!   within a window of credits the receiver grants as it writes the
//!   bytes to its socket ([`WINDOW_BYTES`], [`WINDOW_MESSAGES`]).
//! - **Ends.** The agent sends the worker's last messages, its stdout and
//!   stderr, its reports, then its exit; a host that stops seeing the
//!   agent's adverts for [`LOST_AFTER`] ends the worker as lost (`closed`
//!   after what arrived, and `wait` fails naming the agent). The host
//!   publishes its own heartbeat, and an agent kills the workers of a host
//!   it stops hearing from, so nothing is left behind either way.

use crate::bindings::fork::{ForkOptions, Placement};
use crate::bindings::types::{ErrorCode, Termination};
use crate::fork::{End, Worker};
use crate::pipe::PipeReader;
use crate::policy::Denial;
use crate::spawn::Asked;
use crate::{Policy, ProcessCtx};
use anyhow::{Context as _, Result};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Where agents advertise themselves.
pub const ADVERTS: &str = "wasmproc.agents";

/// How often agents advertise and hosts send their heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(250);

/// An agent (or a forking host) not heard from for this long is lost.
pub const LOST_AFTER: Duration = Duration::from_millis(1500);

/// Bytes of channel data in flight, sent but not yet written to the
/// receiver's socket, at most.
pub const WINDOW_BYTES: u64 = 4 << 20;

/// Data messages in flight at most (a NATS subscription holds messages,
/// not bytes: tiny writes must not overflow it).
pub const WINDOW_MESSAGES: u64 = 1024;

/// Bytes read from a socket or pipe into one NATS message, at most.
const CHUNK: usize = 64 << 10;

/// How long a host waits for an agent that matches a placement, and for
/// its answer.
const FORK_TIMEOUT: Duration = Duration::from_secs(5);

/// A random id for an agent, host or session: 16 hex digits (subject-safe).
pub(crate) fn new_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS gives random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The subject an agent takes fork requests on.
pub(crate) fn fork_subject(agent: &str) -> String {
    format!("wasmproc.agent.{agent}.fork")
}

/// The subject a forking host's heartbeat goes to.
pub(crate) fn parent_subject(parent: &str) -> String {
    format!("wasmproc.parent.{parent}")
}

/// The subject of one direction of a session: `to_worker` or not.
pub(crate) fn session_subject(session: &str, to_worker: bool) -> String {
    format!("wasmproc.s.{session}.{}", if to_worker { "p" } else { "w" })
}

/// What an agent says of itself every [`HEARTBEAT`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Advert {
    /// The agent's id (unique per agent process).
    pub id: String,
    /// Its labels, such as `gpu` or `zone=a`, and `sha256:HEX` of each
    /// pinned program.
    pub labels: Vec<String>,
    /// Workers it can still start.
    pub free: u32,
}

/// A host's request to fork a worker on an agent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ForkRequest {
    pub session: String,
    /// The forking host's id, whose heartbeat the agent watches.
    pub parent: String,
    /// The component, by file name: the agent runs its own grant of it.
    pub component: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Directories the agent exports, by name, and whether read-only.
    pub dirs: Vec<(String, bool)>,
    /// The worker's policy as the host narrowed it; the agent runs the
    /// worker within its intersection with its own.
    pub policy: Policy,
    /// Whether the worker's stdout and stderr come back (else /dev/null).
    pub stdout: bool,
    pub stderr: bool,
}

/// An agent's answer to a [`ForkRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ForkReply {
    Started { pid: u32 },
    Refused { code: String, message: String },
}

/// How an `error-code` crosses the wire.
pub(crate) fn to_wire(e: &ErrorCode) -> (String, String) {
    let (code, message) = match e {
        ErrorCode::AccessDenied(m) => ("access-denied", m),
        ErrorCode::NotFound(m) => ("not-found", m),
        ErrorCode::InvalidArgument(m) => ("invalid-argument", m),
        ErrorCode::LimitExceeded(m) => ("limit-exceeded", m),
        ErrorCode::TimedOut(m) => ("timed-out", m),
        ErrorCode::Closed(m) => ("closed", m),
        ErrorCode::Unsupported(m) => ("unsupported", m),
        ErrorCode::Io(m) => ("io", m),
    };
    (code.to_owned(), message.clone())
}

fn from_wire(code: &str, message: String) -> ErrorCode {
    match code {
        "access-denied" => ErrorCode::AccessDenied(message),
        "not-found" => ErrorCode::NotFound(message),
        "invalid-argument" => ErrorCode::InvalidArgument(message),
        "limit-exceeded" => ErrorCode::LimitExceeded(message),
        "timed-out" => ErrorCode::TimedOut(message),
        "closed" => ErrorCode::Closed(message),
        "unsupported" => ErrorCode::Unsupported(message),
        _ => ErrorCode::Io(message),
    }
}

/// One message of a session, as a kind byte and its body.
pub(crate) mod kind {
    /// Channel bytes: `seq: u64 LE`, then the bytes.
    pub const DATA: u8 = b'D';
    /// Credits: `bytes: u64 LE`, `messages: u64 LE` written to the socket so far.
    pub const ACK: u8 = b'A';
    /// The sender's end of the channel is closed.
    pub const EOF: u8 = b'E';
    /// Worker stdout / stderr bytes (empty: the end).
    pub const STDOUT: u8 = b'O';
    pub const STDERR: u8 = b'R';
    /// One report line of the worker (audit event or denial).
    pub const REPORT: u8 = b'L';
    /// The worker ended: a JSON [`super::Ended`]. The last message.
    pub const EXIT: u8 = b'X';
    /// Host to agent: send this signal (one byte) to the worker.
    pub const KILL: u8 = b'K';
    /// Host to agent: the host dropped the worker.
    pub const CLOSE: u8 = b'C';
}

pub(crate) fn message(kind: u8, body: &[u8]) -> Bytes {
    let mut m = BytesMut::with_capacity(1 + body.len());
    m.put_u8(kind);
    m.put_slice(body);
    m.freeze()
}

/// How a remote worker ended, as the agent saw it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ended {
    pub exited: Option<u8>,
    pub signaled: Option<u8>,
    pub trap: Option<String>,
    pub user_cpu_ns: u64,
    pub system_cpu_ns: u64,
    pub max_rss_bytes: u64,
}

impl From<&Termination> for Ended {
    fn from(t: &Termination) -> Ended {
        use crate::bindings::types::ExitStatus;
        let (exited, signaled) = match t.status {
            ExitStatus::Exited(c) => (Some(c), None),
            ExitStatus::Signaled(s) => (None, Some(s)),
        };
        Ended {
            exited,
            signaled,
            trap: t.trap.clone(),
            user_cpu_ns: t.usage.user_cpu_ns,
            system_cpu_ns: t.usage.system_cpu_ns,
            max_rss_bytes: t.usage.max_rss_bytes,
        }
    }
}

impl From<Ended> for Termination {
    fn from(e: Ended) -> Termination {
        use crate::bindings::types::{ExitStatus, ResourceUsage};
        Termination {
            status: match (e.exited, e.signaled) {
                (Some(c), _) => ExitStatus::Exited(c),
                (None, s) => ExitStatus::Signaled(s.unwrap_or(9)),
            },
            timed_out: false,
            trap: e.trap,
            usage: ResourceUsage {
                user_cpu_ns: e.user_cpu_ns,
                system_cpu_ns: e.system_cpu_ns,
                max_rss_bytes: e.max_rss_bytes,
            },
        }
    }
}

/// How to reach the NATS servers: the URL and the credentials and TLS
/// settings, as the CLI's `--nats*` flags give them.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// `nats://HOST:PORT` (or `tls://`), several separated by commas.
    pub url: String,
    /// A token (`--nats-token`).
    pub token: Option<String>,
    /// A user credentials file: JWT and nkey seed (`--nats-creds`).
    pub creds: Option<PathBuf>,
    /// A file holding an nkey seed (`--nats-nkey`).
    pub nkey: Option<PathBuf>,
    /// A CA certificate to trust, for TLS (`--nats-ca`).
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Require TLS (`--nats-tls`; implied by a `tls://` URL).
    pub tls: bool,
}

impl NatsOptions {
    /// Connects, named `name` (shown by the servers' monitoring).
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new().name(name);
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(creds) = &self.creds {
            options = options
                .credentials_file(creds)
                .await
                .with_context(|| format!("reading NATS credentials {}", creds.display()))?;
        }
        if let Some(nkey) = &self.nkey {
            let seed = std::fs::read_to_string(nkey)
                .with_context(|| format!("reading nkey seed {}", nkey.display()))?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls || self.url.starts_with("tls://") {
            options = options.require_tls(true);
        }
        let servers: Vec<&str> = self.url.split(',').map(str::trim).collect();
        options
            .connect(servers.as_slice())
            .await
            .with_context(|| format!("connecting to NATS at {}", self.url))
    }
}

/// A forking host's membership of a cluster: its connection, its
/// heartbeat, and the agents it has seen.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    id: String,
    agents: Mutex<HashMap<String, Seen>>,
    /// Woken by every advert.
    adverts: Notify,
    /// When this host joined: until a round of adverts has come, it does
    /// not know every agent yet.
    joined: Instant,
    tasks: Vec<JoinHandle<()>>,
}

struct Seen {
    advert: Advert,
    at: Instant,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Joins the cluster of the NATS servers `options` names: starts
    /// listening to adverts and sending this host's heartbeat. Must be
    /// called inside a tokio runtime.
    pub async fn connect(options: &NatsOptions) -> Result<Cluster> {
        let client = options.connect("wasmproc host").await?;
        let id = new_id();
        let mut adverts = client.subscribe(ADVERTS).await?;
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let listen = {
                let weak = weak.clone();
                tokio::spawn(async move {
                    use futures_util::StreamExt;
                    while let Some(m) = adverts.next().await {
                        let Some(inner) = weak.upgrade() else { return };
                        if let Ok(advert) = serde_json::from_slice::<Advert>(&m.payload) {
                            let seen = Seen {
                                advert: advert.clone(),
                                at: Instant::now(),
                            };
                            inner.agents().insert(advert.id, seen);
                            inner.adverts.notify_waiters();
                        }
                    }
                })
            };
            let beat = {
                let (client, subject) = (client.clone(), parent_subject(&id));
                tokio::spawn(async move {
                    loop {
                        let _ = client.publish(subject.clone(), Bytes::new()).await;
                        tokio::time::sleep(HEARTBEAT).await;
                    }
                })
            };
            Inner {
                client,
                id,
                agents: Mutex::new(HashMap::new()),
                adverts: Notify::new(),
                joined: Instant::now(),
                tasks: vec![listen, beat],
            }
        });
        Ok(Cluster { inner })
    }

    /// The agents heard from within [`LOST_AFTER`].
    pub fn agents(&self) -> Vec<Advert> {
        (self.inner.agents().values())
            .filter(|s| s.at.elapsed() < LOST_AFTER)
            .map(|s| s.advert.clone())
            .collect()
    }

    /// Whether agent `id` was heard from within [`LOST_AFTER`].
    pub(crate) fn alive(&self, id: &str) -> bool {
        (self.inner.agents().get(id)).is_some_and(|s| s.at.elapsed() < LOST_AFTER)
    }

    /// The agent for `placement`: of those alive with every label asked
    /// for, the one with the most free slots. Waits for adverts up to
    /// [`FORK_TIMEOUT`].
    async fn pick(&self, placement: &Placement) -> Result<String, ErrorCode> {
        let labels: &[String] = match placement {
            Placement::Labels(labels) => labels,
            _ => &[],
        };
        // Every agent has advertised once (and a little more) before the
        // first choice: else the first agent heard would get every worker.
        let settled = self.inner.joined + HEARTBEAT + HEARTBEAT / 2;
        tokio::time::sleep_until(settled.into()).await;
        let deadline = tokio::time::Instant::now() + FORK_TIMEOUT;
        loop {
            let advertised = self.inner.adverts.notified();
            {
                let mut agents = self.inner.agents();
                let best = (agents.iter_mut())
                    .filter(|(_, s)| s.at.elapsed() < LOST_AFTER && s.advert.free > 0)
                    .filter(|(_, s)| labels.iter().all(|l| s.advert.labels.contains(l)))
                    .max_by_key(|(_, s)| s.advert.free);
                if let Some((id, seen)) = best {
                    // Until its next advert, count the slot as taken.
                    seen.advert.free -= 1;
                    return Ok(id.clone());
                }
            }
            if tokio::time::timeout_at(deadline, advertised).await.is_err() {
                let which = match labels {
                    [] => "no agent of the cluster has a free worker slot".to_owned(),
                    _ => format!(
                        "no agent of the cluster with labels {} has a free worker slot",
                        labels.join(", ")
                    ),
                };
                return Err(ErrorCode::LimitExceeded(which));
            }
        }
    }
}

impl Inner {
    fn agents(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A worker running on an agent, as the forking host holds it.
pub(crate) struct Remote {
    pid: u32,
    agent: String,
    state: watch::Receiver<State>,
    client: async_nats::Client,
    to_worker: String,
    pub stdout: Option<PipeReader>,
    pub stderr: Option<PipeReader>,
    tasks: Vec<JoinHandle<()>>,
    /// The live-children slots it holds of its guest's.
    slots: (Arc<AtomicUsize>, usize),
}

#[derive(Debug, Clone)]
enum State {
    Running,
    Ended(Termination),
    Lost(String),
}

impl Remote {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn status(&self) -> Option<Result<Termination, ErrorCode>> {
        match &*self.state.borrow() {
            State::Running => None,
            State::Ended(t) => Some(Ok(t.clone())),
            State::Lost(why) => Some(Err(ErrorCode::Io(why.clone()))),
        }
    }

    /// Waits until the agent says the worker ended, or is lost. Cancel safe.
    pub async fn reap(&mut self) -> Result<Termination, ErrorCode> {
        loop {
            if let Some(ended) = self.status() {
                return ended;
            }
            if self.state.changed().await.is_err() {
                return self.status().unwrap_or_else(|| {
                    Err(ErrorCode::Io(format!(
                        "the session with agent {} ended without an exit",
                        self.agent
                    )))
                });
            }
        }
    }

    pub fn try_status(&mut self) -> Result<Option<Termination>, ErrorCode> {
        self.status().transpose()
    }

    pub fn kill(&self, signal: u8) -> Result<(), ErrorCode> {
        crate::process::signal(signal)?;
        self.send(message(kind::KILL, &[signal]));
        Ok(())
    }

    fn send(&self, m: Bytes) {
        let (client, subject) = (self.client.clone(), self.to_worker.clone());
        tokio::spawn(async move {
            let _ = client.publish(subject, m).await;
        });
    }
}

impl Drop for Remote {
    /// Tells the agent to kill the worker (it also does when this host's
    /// heartbeat stops) and gives back the slots.
    fn drop(&mut self) {
        if self.status().is_none() {
            self.send(message(kind::CLOSE, &[]));
        }
        for task in &self.tasks {
            task.abort();
        }
        self.slots.0.fetch_sub(self.slots.1, Ordering::AcqRel);
    }
}

/// `fork` with a placement other than `local`: the worker's policy is
/// narrowed as for a local fork (its budget lent from this guest's), sent
/// to the agent chosen, which runs it within its own policy.
pub(crate) async fn fork_remote(
    ctx: &mut ProcessCtx,
    component: &str,
    args: Vec<String>,
    options: &ForkOptions,
    placement: Placement,
    [_, stdout, stderr]: [Asked; 3],
) -> Result<Worker, ErrorCode> {
    let Some(cluster) = ctx.cluster.clone() else {
        return Err(ErrorCode::Unsupported(
            "this host has joined no cluster: workers can only run on this machine".into(),
        ));
    };
    let grant = (ctx.policy.find_fork(component)).map_err(|d| ctx.deny(d))?;
    let name = grant.name.clone();
    for arg in &args {
        crate::policy::no_nul("an argument", arg)?;
    }
    let (policy, lent) = (ctx.policy.narrow(options, ctx.free())).map_err(|r| ctx.refuse(r))?;
    let stdout = remote_output("stdout", stdout)?;
    let stderr = remote_output("stderr", stderr)?;
    let slots = 1 + lent.live;
    ctx.check_budget(slots, 1 + lent.spawns)?;
    let agent = cluster.pick(&placement).await?;
    let session = new_id();
    let request = ForkRequest {
        session: session.clone(),
        parent: cluster.inner.id.clone(),
        component: name.clone(),
        args,
        env: options.env.clone(),
        dirs: (options.dirs.iter())
            .map(|d| (d.path.clone(), d.read_only))
            .collect(),
        policy,
        stdout: stdout.is_some(),
        stderr: stderr.is_some(),
    };
    let client = cluster.inner.client.clone();
    // Listen before asking: the worker may answer at once.
    let from_worker = (client.subscribe(session_subject(&session, false)).await)
        .map_err(|e| ErrorCode::Io(format!("subscribing to the worker's session: {e}")))?;
    let body = serde_json::to_vec(&request).map_err(|e| ErrorCode::Io(e.to_string()))?;
    let reply = tokio::time::timeout(
        FORK_TIMEOUT,
        client.request(fork_subject(&agent), body.into()),
    )
    .await
    .map_err(|_| ErrorCode::TimedOut(format!("agent {agent} did not answer the fork in time")))?
    .map_err(|e| ErrorCode::Io(format!("asking agent {agent} to fork: {e}")))?;
    let pid = match serde_json::from_slice::<ForkReply>(&reply.payload) {
        Ok(ForkReply::Started { pid }) => pid,
        Ok(ForkReply::Refused { code, message }) => {
            let error = from_wire(&code, format!("agent {agent}: {message}"));
            if code == "access-denied" || code == "limit-exceeded" {
                ctx.deny(Denial::OnAgent {
                    agent: agent.clone(),
                    reason: message,
                });
            }
            return Err(error);
        }
        Err(e) => return Err(ErrorCode::Io(format!("agent {agent} answered: {e}"))),
    };
    ctx.live_children.fetch_add(slots, Ordering::AcqRel);
    ctx.total_spawns += 1 + lent.spawns;
    if let Some(audit) = &ctx.audit {
        audit.record(
            "fork",
            serde_json::json!({ "pid": pid, "agent": agent, "component": name, "session": session }),
        );
    }
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| ErrorCode::from_io("creating the worker's channel", &e))?;
    let (report_read, report_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| ErrorCode::from_io("creating the worker's report pipe", &e.into()))?;
    let reports = crate::worker::Reports::start(
        report_read,
        (pid, name),
        ctx.audit.clone(),
        ctx.reporter.clone(),
        None,
    )
    .map_err(|e| ErrorCode::from_io("watching the worker's reports", &e))?;
    let (state_tx, state) = watch::channel(State::Running);
    let sides = Sides::new(&ctx.inherit_stdout, &ctx.inherit_stderr, stdout, stderr)
        .map_err(|e| ErrorCode::from_io("setting up the worker's output", &e))?;
    let to_worker = session_subject(&session, true);
    let bridge = Bridge::start(theirs, client.clone(), to_worker.clone())
        .map_err(|e| ErrorCode::from_io("bridging the worker's channel", &e))?;
    let watch = tokio::spawn(watch_session(
        from_worker,
        bridge.inbound,
        sides.writers,
        std::fs::File::from(report_write),
        state_tx,
        (cluster.clone(), agent.clone()),
    ));
    let channel = ctx.channel(ours)?;
    Ok(Worker {
        channel,
        end: End::Remote(Remote {
            pid,
            agent,
            state,
            client,
            to_worker,
            stdout: sides.stdout,
            stderr: sides.stderr,
            tasks: vec![bridge.outbound, watch],
            slots: (ctx.live_children.clone(), slots),
        }),
        reports,
    })
}

/// What a worker output stream asked as `asked` needs from the agent:
/// `None` for /dev/null, else the stream back and whether it is for the
/// guest (`piped`) rather than the host's own (`inherit`).
fn remote_output(name: &str, asked: Asked) -> Result<Option<bool>, ErrorCode> {
    match asked {
        Asked::Null => Ok(None),
        Asked::Piped => Ok(Some(true)),
        Asked::Inherit => Ok(Some(false)),
        Asked::File(_) | Asked::PipeFrom(_) => Err(ErrorCode::InvalidArgument(format!(
            "a remote worker's {name} cannot be a local file or pipe: descriptors do not cross machines"
        ))),
    }
}

/// Where a remote worker's stdout and stderr go on this host: a pipe the
/// guest reads, or the host's own stream.
struct Sides {
    stdout: Option<PipeReader>,
    stderr: Option<PipeReader>,
    writers: [Option<OutputSink>; 2],
}

type OutputSink = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send + Sync>>;

impl Sides {
    fn new(
        inherit_stdout: &Option<Box<dyn wasmtime_wasi::cli::StdoutStream>>,
        inherit_stderr: &Option<Box<dyn wasmtime_wasi::cli::StdoutStream>>,
        stdout: Option<bool>,
        stderr: Option<bool>,
    ) -> std::io::Result<Sides> {
        use wasmtime_wasi::cli::StdoutStream;
        let side = |piped: Option<bool>,
                    host: &dyn StdoutStream|
         -> std::io::Result<(Option<PipeReader>, Option<OutputSink>)> {
            Ok(match piped {
                None => (None, None),
                Some(true) => {
                    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
                    let write = tokio::net::unix::pipe::Sender::from_owned_fd(write)?;
                    (Some(PipeReader::new(read)?), Some(Box::pin(write)))
                }
                Some(false) => (None, Some(Box::into_pin(host.async_stream()))),
            })
        };
        let (stdout, out) = match inherit_stdout {
            Some(to) => side(stdout, to.as_ref())?,
            None => side(stdout, &std::io::stdout())?,
        };
        let (stderr, err) = match inherit_stderr {
            Some(to) => side(stderr, to.as_ref())?,
            None => side(stderr, &std::io::stderr())?,
        };
        Ok(Sides {
            stdout,
            stderr,
            writers: [out, err],
        })
    }
}

/// The forking host's side of a session: everything the agent sends,
/// until the worker's exit or the agent is lost.
async fn watch_session(
    mut from_worker: async_nats::Subscriber,
    mut inbound: Inbound,
    mut outputs: [Option<OutputSink>; 2],
    mut reports: std::fs::File,
    state: watch::Sender<State>,
    (cluster, agent): (Cluster, String),
) {
    use futures_util::StreamExt;
    let mut check = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            m = from_worker.next() => {
                let Some(m) = m else { break };
                let Some((&k, body)) = m.payload.split_first() else { continue };
                match k {
                    kind::EXIT => {
                        // How it ended is known before the channel says
                        // `closed`, so a guest that asks then is told.
                        let ended = serde_json::from_slice::<Ended>(body);
                        let _ = state.send(match ended {
                            Ok(ended) => State::Ended(ended.into()),
                            Err(e) => State::Lost(format!("agent {agent} sent a bad exit: {e}")),
                        });
                        inbound.end().await;
                        return;
                    }
                    kind::STDOUT | kind::STDERR => {
                        let i = usize::from(k == kind::STDERR);
                        if let Some(sink) = &mut outputs[i] {
                            let done = body.is_empty() || sink.write_all(body).await.is_err();
                            if done || sink.flush().await.is_err() {
                                outputs[i] = None;
                            }
                        }
                    }
                    kind::REPORT => {
                        use std::io::Write;
                        let _ = reports.write_all(body).and_then(|()| reports.write_all(b"\n"));
                    }
                    _ => {
                        if let Err(why) = inbound.handle(k, body).await {
                            tracing::warn!(target: "wasmproc::cluster", %agent, "{why}");
                            inbound.end().await;
                        }
                    }
                }
            }
            _ = check.tick() => {
                if !cluster.alive(&agent) {
                    let _ = state.send(State::Lost(format!(
                        "agent {agent} was lost: no heartbeat for {} ms",
                        LOST_AFTER.as_millis()
                    )));
                    inbound.end().await;
                    return;
                }
            }
        }
    }
    let _ = state.send(State::Lost(format!(
        "the connection to agent {agent} ended"
    )));
    inbound.end().await;
}

/// One end of a channel bridged over NATS: the socket's bytes go out as
/// numbered data messages within the window of credits the peer grants;
/// the peer's data is written to the socket, and credited.
pub(crate) struct Bridge {
    /// The task sending what the socket gives.
    pub outbound: JoinHandle<()>,
    /// The handler of what the peer sends (fed by the caller).
    pub inbound: Inbound,
}

/// Credits the peer granted: bytes and messages it has written out.
#[derive(Default)]
struct Credits {
    bytes: AtomicU64,
    messages: AtomicU64,
    changed: Notify,
}

impl Bridge {
    /// Bridges `socket` to `subject` (the peer's) over `client`. Must be
    /// called inside a tokio runtime.
    pub fn start(
        socket: std::os::unix::net::UnixStream,
        client: async_nats::Client,
        subject: String,
    ) -> std::io::Result<Bridge> {
        socket.set_nonblocking(true)?;
        let socket = tokio::net::UnixStream::from_std(socket)?;
        let (read, write) = socket.into_split();
        let credits = Arc::new(Credits::default());
        let outbound = tokio::spawn(pump_out(
            read,
            client.clone(),
            subject.clone(),
            credits.clone(),
        ));
        Ok(Bridge {
            outbound,
            inbound: Inbound {
                socket: Some(write),
                client,
                subject,
                credits,
                next_seq: 0,
                written: (0, 0),
                acked: (0, 0),
            },
        })
    }
}

/// Reads the socket and publishes its bytes while the window allows.
async fn pump_out(
    mut socket: tokio::net::unix::OwnedReadHalf,
    client: async_nats::Client,
    subject: String,
    credits: Arc<Credits>,
) {
    let (mut sent_bytes, mut sent_messages, mut seq) = (0u64, 0u64, 0u64);
    let mut buf = vec![0u8; CHUNK];
    loop {
        loop {
            let changed = credits.changed.notified();
            let bytes = credits.bytes.load(Ordering::Acquire);
            let messages = credits.messages.load(Ordering::Acquire);
            if sent_bytes - bytes < WINDOW_BYTES && sent_messages - messages < WINDOW_MESSAGES {
                break;
            }
            changed.await;
        }
        let n = match socket.read(&mut buf[..]).await {
            Ok(0) | Err(_) => {
                let _ = client
                    .publish(subject.clone(), message(kind::EOF, &[]))
                    .await;
                let _ = client.flush().await;
                return;
            }
            Ok(n) => n,
        };
        let mut m = BytesMut::with_capacity(9 + n);
        m.put_u8(kind::DATA);
        m.put_u64_le(seq);
        m.put_slice(&buf[..n]);
        if client.publish(subject.clone(), m.freeze()).await.is_err() {
            return;
        }
        seq += 1;
        sent_bytes += n as u64;
        sent_messages += 1;
    }
}

/// The receiving half of a bridge.
pub(crate) struct Inbound {
    socket: Option<tokio::net::unix::OwnedWriteHalf>,
    client: async_nats::Client,
    /// The peer's subject, for credits.
    subject: String,
    credits: Arc<Credits>,
    next_seq: u64,
    /// Bytes and messages written to the socket, and credited so far.
    written: (u64, u64),
    acked: (u64, u64),
}

impl Inbound {
    /// Handles a data, credit or end message of the peer; an error (a lost
    /// message, a bad one) means the channel is broken.
    pub async fn handle(&mut self, k: u8, body: &[u8]) -> Result<(), String> {
        match k {
            kind::DATA => {
                let (Some(seq), Some(data)) = (body.first_chunk::<8>(), body.get(8..)) else {
                    return Err("a malformed data message".into());
                };
                let seq = u64::from_le_bytes(*seq);
                if seq != self.next_seq {
                    return Err(format!(
                        "channel message {} was lost (got {seq})",
                        self.next_seq
                    ));
                }
                self.next_seq += 1;
                if let Some(socket) = &mut self.socket
                    && socket.write_all(data).await.is_err()
                {
                    self.socket = None;
                }
                self.written.0 += data.len() as u64;
                self.written.1 += 1;
                self.credit().await;
            }
            kind::ACK => {
                let (Some(bytes), Some(messages)) = (
                    body.first_chunk::<8>(),
                    body.get(8..).and_then(|b| b.first_chunk::<8>()),
                ) else {
                    return Err("a malformed credit message".into());
                };
                let c = &self.credits;
                c.bytes.store(u64::from_le_bytes(*bytes), Ordering::Release);
                c.messages
                    .store(u64::from_le_bytes(*messages), Ordering::Release);
                c.changed.notify_waiters();
            }
            kind::EOF => self.end().await,
            _ => {}
        }
        Ok(())
    }

    /// Grants credits once a quarter of the window was written out.
    async fn credit(&mut self) {
        if self.written.0 - self.acked.0 < WINDOW_BYTES / 4
            && self.written.1 - self.acked.1 < WINDOW_MESSAGES / 4
        {
            return;
        }
        self.acked = self.written;
        let mut body = [0u8; 16];
        body[..8].copy_from_slice(&self.written.0.to_le_bytes());
        body[8..].copy_from_slice(&self.written.1.to_le_bytes());
        let _ = (self.client)
            .publish(self.subject.clone(), message(kind::ACK, &body))
            .await;
    }

    /// The peer's end of the channel is closed: so is the socket for
    /// writing (the local end reads what was written, then the end).
    pub async fn end(&mut self) {
        if let Some(mut socket) = self.socket.take() {
            let _ = socket.shutdown().await;
        }
    }
}
