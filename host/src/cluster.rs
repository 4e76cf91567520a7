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
//!   subscriber (ordered). It carries streams — the channel both ways,
//!   the worker's stdout and stderr — each numbered on its own (a gap
//!   ends the session: NATS core may drop for a slow consumer) and sent
//!   only within a window of credits the receiver grants as it writes the
//!   bytes out ([`WINDOW_BYTES`], [`WINDOW_MESSAGES`]), each written by a
//!   task of its own so that no slow reader holds up the others or the
//!   control messages.
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
    crate::hex(&bytes)
}

/// Whether `id` (an agent's, host's or session's, from the network) can
/// be a NATS subject token: plain alphanumerics, as [`new_id`] makes,
/// never a wildcard or a `.`.
pub(crate) fn is_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
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
    /// Bytes of a stream: `stream: u8`, `seq: u64 LE`, then the bytes.
    pub const DATA: u8 = b'D';
    /// Credits of a stream: `stream: u8`, then `bytes: u64 LE`,
    /// `messages: u64 LE` written out so far.
    pub const ACK: u8 = b'A';
    /// The end of a stream: `stream: u8`.
    pub const EOF: u8 = b'E';
    /// One report line of the worker (audit event or denial).
    pub const REPORT: u8 = b'L';
    /// The worker ended: a JSON [`super::Ended`]. The last message.
    pub const EXIT: u8 = b'X';
    /// Host to agent: send this signal (one byte) to the worker.
    pub const KILL: u8 = b'K';
    /// Host to agent: the host dropped the worker.
    pub const CLOSE: u8 = b'C';
}

/// The streams of a session, each numbered and credited on its own: the
/// channel both ways, and the worker's stdout and stderr to the host.
pub(crate) mod stream {
    pub const CHANNEL: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
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
    /// The agent ended the worker itself (a broken channel): why.
    #[serde(default)]
    pub lost: Option<String>,
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
            lost: None,
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
                        let Ok(advert) = serde_json::from_slice::<Advert>(&m.payload) else {
                            continue;
                        };
                        if !is_id(&advert.id) {
                            continue;
                        }
                        let id = advert.id.clone();
                        let seen = Seen {
                            advert,
                            at: Instant::now(),
                        };
                        let mut agents = inner.agents();
                        agents.insert(id, seen);
                        if agents.len() > 1024 {
                            agents.retain(|_, s| s.at.elapsed() < LOST_AFTER * 10);
                        }
                        drop(agents);
                        inner.adverts.notify_waiters();
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
        // Unless the agent said it ended, it may still run there (a worker
        // "lost" by a stalled advert too): the agent kills it.
        if !matches!(&*self.state.borrow(), State::Ended(_)) {
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
    // From here the worker runs on the agent: until the `Remote` holds
    // it, a failure must give back the slots and have the agent kill it.
    let mut guard = Started {
        client: client.clone(),
        to_worker: session_subject(&session, true),
        slots: Some((ctx.live_children.clone(), slots)),
    };
    connect_remote(
        ctx,
        &mut guard,
        from_worker,
        (pid, name, agent),
        (stdout, stderr),
    )
}

/// A remote worker the agent started, until the host holds it: dropped, it
/// tells the agent to kill it and gives back its slots.
struct Started {
    client: async_nats::Client,
    to_worker: String,
    slots: Option<(Arc<AtomicUsize>, usize)>,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some((live, slots)) = self.slots.take() {
            live.fetch_sub(slots, Ordering::AcqRel);
            let (client, subject) = (self.client.clone(), self.to_worker.clone());
            tokio::spawn(async move {
                let _ = client.publish(subject, message(kind::CLOSE, &[])).await;
            });
        }
    }
}

/// Wires a started remote worker to this host: its channel, output and
/// reports; the slots pass from `started` to the `Remote`.
fn connect_remote(
    ctx: &mut ProcessCtx,
    started: &mut Started,
    from_worker: async_nats::Subscriber,
    (pid, name, agent): (u32, String, String),
    (stdout, stderr): (Option<bool>, Option<bool>),
) -> Result<Worker, ErrorCode> {
    let cluster = ctx.cluster.clone().expect("a remote fork has a cluster");
    let client = started.client.clone();
    fn io(what: &'static str) -> impl Fn(std::io::Error) -> ErrorCode {
        move |e| ErrorCode::from_io(what, &e)
    }
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(io("creating the worker's channel"))?;
    let (report_read, report_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| ErrorCode::from_io("creating the worker's report pipe", &e.into()))?;
    let reports = crate::worker::Reports::start(
        report_read,
        (pid, name),
        ctx.audit.clone(),
        ctx.reporter.clone(),
        None,
    )
    .map_err(io("watching the worker's reports"))?;
    let mut receiving = Receiving::new(client.clone(), started.to_worker.clone());
    let (read, write) = channel_halves(theirs).map_err(io("bridging the worker's channel"))?;
    let (outbound, credits) = send_stream(
        read,
        client.clone(),
        started.to_worker.clone(),
        stream::CHANNEL,
    );
    receiving.credit(stream::CHANNEL, credits);
    receiving.channel_sink(write);
    let mut readers = [None, None];
    for (i, asked) in [stdout, stderr].into_iter().enumerate() {
        let Some(piped) = asked else { continue };
        let (reader, sink) = output_sink(piped, || ctx.inherited_output(i == 1))
            .map_err(io("setting up the worker's output"))?;
        readers[i] = reader;
        receiving.sink(stream::STDOUT + i as u8, sink);
    }
    let (state_tx, state) = watch::channel(State::Running);
    let watch = tokio::spawn(watch_session(
        from_worker,
        receiving,
        std::fs::File::from(report_write),
        state_tx,
        (cluster, agent.clone()),
    ));
    let channel = ctx.channel(ours)?;
    let [stdout, stderr] = readers;
    Ok(Worker {
        channel,
        end: End::Remote(Remote {
            pid,
            agent,
            state,
            client,
            to_worker: started.to_worker.clone(),
            stdout,
            stderr,
            tasks: vec![outbound, watch],
            slots: started.slots.take().expect("not yet given"),
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

/// Where a remote worker's stdout or stderr goes on this host: a pipe the
/// guest reads (`piped`: `true`), or the host's own stream.
fn output_sink(
    piped: bool,
    host: impl FnOnce() -> Sink,
) -> std::io::Result<(Option<PipeReader>, Sink)> {
    Ok(match piped {
        true => {
            let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
            let write = tokio::net::unix::pipe::Sender::from_owned_fd(write)?;
            (Some(PipeReader::new(read)?), Box::pin(write))
        }
        false => (None, host()),
    })
}

/// The forking host's side of a session: everything the agent sends,
/// until the worker's exit or the agent is lost. Never waits on a write:
/// stream bytes go to their sinks' tasks.
async fn watch_session(
    mut from_worker: async_nats::Subscriber,
    mut receiving: Receiving,
    mut reports: std::fs::File,
    state: watch::Sender<State>,
    (cluster, agent): (Cluster, String),
) {
    use futures_util::StreamExt;
    let mut check = tokio::time::interval(HEARTBEAT);
    let lost = loop {
        tokio::select! {
            m = from_worker.next() => {
                let Some(m) = m else {
                    break format!("the connection to agent {agent} ended");
                };
                let Some((&k, body)) = m.payload.split_first() else { continue };
                match k {
                    kind::EXIT => {
                        // How it ended is known before the channel says
                        // `closed`, so a guest that asks then is told.
                        let _ = state.send(match serde_json::from_slice::<Ended>(body) {
                            Ok(Ended { lost: Some(why), .. }) => {
                                State::Lost(format!("agent {agent} ended the worker: {why}"))
                            }
                            Ok(ended) => State::Ended(ended.into()),
                            Err(e) => State::Lost(format!("agent {agent} sent a bad exit: {e}")),
                        });
                        receiving.end();
                        return;
                    }
                    kind::REPORT => {
                        use std::io::Write;
                        let _ = reports.write_all(body).and_then(|()| reports.write_all(b"\n"));
                    }
                    _ => {
                        if let Err(why) = receiving.handle(k, body) {
                            break format!("agent {agent}: {why}");
                        }
                    }
                }
            }
            _ = check.tick() => {
                if !cluster.alive(&agent) {
                    break format!(
                        "agent {agent} was lost: no heartbeat for {} ms",
                        LOST_AFTER.as_millis()
                    );
                }
            }
        }
    };
    let _ = state.send(State::Lost(lost));
    receiving.end();
}

/// Where a received stream's bytes are written.
pub(crate) type Sink = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send + Sync>>;

/// Credits a peer granted for one stream: bytes and messages it has
/// written out.
#[derive(Default)]
pub(crate) struct Credits {
    bytes: AtomicU64,
    messages: AtomicU64,
    changed: Notify,
}

/// Sends what `source` gives as stream `stream` to `subject`, numbered,
/// while the peer's credits allow; then its end.
pub(crate) fn send_stream(
    mut source: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    client: async_nats::Client,
    subject: String,
    stream: u8,
) -> (JoinHandle<()>, Arc<Credits>) {
    let credits = Arc::new(Credits::default());
    let granted = credits.clone();
    let task = tokio::spawn(async move {
        let (mut sent_bytes, mut sent_messages, mut seq) = (0u64, 0u64, 0u64);
        let mut buf = vec![0u8; CHUNK];
        loop {
            loop {
                let changed = granted.changed.notified();
                let bytes = granted.bytes.load(Ordering::Acquire);
                let messages = granted.messages.load(Ordering::Acquire);
                if sent_bytes.saturating_sub(bytes) < WINDOW_BYTES
                    && sent_messages.saturating_sub(messages) < WINDOW_MESSAGES
                {
                    break;
                }
                changed.await;
            }
            let n = match source.read(&mut buf[..]).await {
                Ok(0) | Err(_) => {
                    let _ = client
                        .publish(subject.clone(), message(kind::EOF, &[stream]))
                        .await;
                    let _ = client.flush().await;
                    return;
                }
                Ok(n) => n,
            };
            let mut m = BytesMut::with_capacity(10 + n);
            m.put_u8(kind::DATA);
            m.put_u8(stream);
            m.put_u64_le(seq);
            m.put_slice(&buf[..n]);
            if client.publish(subject.clone(), m.freeze()).await.is_err() {
                return;
            }
            seq += 1;
            sent_bytes += n as u64;
            sent_messages += 1;
        }
    });
    (task, credits)
}

/// The receiving side of a session: each stream's bytes are queued to a
/// task that writes them to its sink and grants credits as it does (the
/// queue is bounded by the credits the sender waits for), so that no
/// stream, however slow its reader, holds up the others or the control
/// messages.
pub(crate) struct Receiving {
    client: async_nats::Client,
    /// The peer's subject, for credits.
    subject: String,
    queues: [Option<tokio::sync::mpsc::UnboundedSender<Bytes>>; 3],
    next_seq: [u64; 3],
    /// The credits of this side's own streams, which the peer grants.
    credits: [Option<Arc<Credits>>; 3],
    /// The channel socket, written at once while nothing waits for it.
    direct: Option<Direct>,
}

/// A channel socket written in the caller's turn while it takes the
/// bytes (a round trip then costs no task hand-off), else by its writer
/// task, which keeps the order.
struct Direct {
    socket: Arc<tokio::net::unix::OwnedWriteHalf>,
    /// Bytes handed to the writer task and not written yet.
    backlog: Arc<AtomicU64>,
    written: Arc<Written>,
}

/// What a stream's sink has written, and credited, so far.
struct Written {
    counts: Mutex<((u64, u64), (u64, u64))>,
    client: async_nats::Client,
    subject: String,
    stream: u8,
}

impl Written {
    /// Counts `bytes` (ending `messages` messages) written; grants credits
    /// once a quarter of the window was.
    fn add(&self, bytes: u64, messages: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (written, acked) = &mut *counts;
        *written = (written.0 + bytes, written.1 + messages);
        if written.0 - acked.0 < WINDOW_BYTES / 4 && written.1 - acked.1 < WINDOW_MESSAGES / 4 {
            return;
        }
        *acked = *written;
        let mut body = [0u8; 17];
        body[0] = self.stream;
        body[1..9].copy_from_slice(&written.0.to_le_bytes());
        body[9..].copy_from_slice(&written.1.to_le_bytes());
        let (client, subject) = (self.client.clone(), self.subject.clone());
        tokio::spawn(async move {
            let _ = client.publish(subject, message(kind::ACK, &body)).await;
        });
    }
}

impl Receiving {
    pub fn new(client: async_nats::Client, subject: String) -> Receiving {
        Receiving {
            client,
            subject,
            queues: Default::default(),
            next_seq: [0; 3],
            credits: Default::default(),
            direct: None,
        }
    }

    /// Writes the channel stream to `socket`, at once while it takes the
    /// bytes; at the stream's end, shuts the socket down both ways (the
    /// local end reads what was written, then `closed`, and its sends
    /// fail, as when a local peer closes).
    pub fn channel_sink(&mut self, socket: tokio::net::unix::OwnedWriteHalf) {
        let socket = Arc::new(socket);
        let backlog = Arc::new(AtomicU64::new(0));
        let written = Arc::new(Written {
            counts: Mutex::new(((0, 0), (0, 0))),
            client: self.client.clone(),
            subject: self.subject.clone(),
            stream: stream::CHANNEL,
        });
        let (queue, mut queued) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        self.queues[usize::from(stream::CHANNEL)] = Some(queue);
        self.direct = Some(Direct {
            socket: socket.clone(),
            backlog: backlog.clone(),
            written: written.clone(),
        });
        tokio::spawn(async move {
            'queue: while let Some(bytes) = queued.recv().await {
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    if socket.writable().await.is_err() {
                        break 'queue;
                    }
                    match socket.try_write(rest) {
                        Ok(n) => rest = &rest[n..],
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => break 'queue,
                    }
                }
                // A queued piece is the end of a message.
                written.add(bytes.len() as u64, 1);
                backlog.fetch_sub(bytes.len() as u64, Ordering::AcqRel);
            }
            let socket: &tokio::net::UnixStream = (*socket).as_ref();
            let _ = rustix::net::shutdown(socket, rustix::net::Shutdown::Both);
        });
    }

    /// Writes channel bytes `data` at once if nothing waits and the socket
    /// takes them; whatever is left goes to the writer task.
    fn write_channel(&mut self, data: &[u8]) {
        let i = usize::from(stream::CHANNEL);
        let (Some(direct), Some(queue)) = (&self.direct, &self.queues[i]) else {
            return;
        };
        let mut done = 0;
        if direct.backlog.load(Ordering::Acquire) == 0 {
            match direct.socket.try_write(data) {
                Ok(n) => done = n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        if done == data.len() {
            direct.written.add(done as u64, 1);
            return;
        }
        direct.written.add(done as u64, 0);
        let rest = Bytes::copy_from_slice(&data[done..]);
        direct
            .backlog
            .fetch_add(rest.len() as u64, Ordering::AcqRel);
        let _ = queue.send(rest);
    }

    /// Grants the peer's credits for this side's stream `stream` to
    /// `credits` (a [`send_stream`]'s).
    pub fn credit(&mut self, stream: u8, credits: Arc<Credits>) {
        self.credits[usize::from(stream)] = Some(credits);
    }

    /// Writes stream `stream` (an output) to `sink`, by a task of its
    /// own; at its end, shuts `sink` down.
    pub fn sink(&mut self, stream: u8, mut sink: Sink) {
        let (queue, mut queued) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        self.queues[usize::from(stream)] = Some(queue);
        let written = Written {
            counts: Mutex::new(((0, 0), (0, 0))),
            client: self.client.clone(),
            subject: self.subject.clone(),
            stream,
        };
        tokio::spawn(async move {
            while let Some(bytes) = queued.recv().await {
                if sink.write_all(&bytes).await.is_err() || sink.flush().await.is_err() {
                    break;
                }
                written.add(bytes.len() as u64, 1);
            }
            let _ = sink.shutdown().await;
        });
    }

    /// Handles a data, credit or end message of the peer without waiting;
    /// an error (a lost message, a bad one) means the session is broken.
    pub fn handle(&mut self, k: u8, body: &[u8]) -> Result<(), String> {
        let Some((&stream, rest)) = body.split_first() else {
            return Err("an empty message".into());
        };
        let i = usize::from(stream);
        if i >= 3 {
            return Err(format!("a message for unknown stream {stream}"));
        }
        match k {
            kind::DATA => {
                let (Some(seq), Some(data)) = (rest.first_chunk::<8>(), rest.get(8..)) else {
                    return Err("a malformed data message".into());
                };
                let seq = u64::from_le_bytes(*seq);
                if seq != self.next_seq[i] {
                    return Err(format!(
                        "message {} of stream {stream} was lost (got {seq})",
                        self.next_seq[i]
                    ));
                }
                self.next_seq[i] += 1;
                if stream == stream::CHANNEL && self.direct.is_some() {
                    self.write_channel(data);
                } else if let Some(queue) = &self.queues[i] {
                    let _ = queue.send(Bytes::copy_from_slice(data));
                }
            }
            kind::ACK => {
                let (Some(bytes), Some(messages)) = (
                    rest.first_chunk::<8>(),
                    rest.get(8..).and_then(|b| b.first_chunk::<8>()),
                ) else {
                    return Err("a malformed credit message".into());
                };
                if let Some(c) = &self.credits[i] {
                    // Credits only grow.
                    c.bytes
                        .fetch_max(u64::from_le_bytes(*bytes), Ordering::AcqRel);
                    c.messages
                        .fetch_max(u64::from_le_bytes(*messages), Ordering::AcqRel);
                    c.changed.notify_waiters();
                }
            }
            kind::EOF => self.queues[i] = None,
            _ => {}
        }
        Ok(())
    }

    /// Ends every stream: each sink gets what was queued, then its end.
    pub fn end(&mut self) {
        self.queues = Default::default();
    }
}

/// A channel socket as the two halves a session uses: the half to read
/// (sent as stream `channel`) and the half to write
/// ([`Receiving::channel_sink`]).
pub(crate) fn channel_halves(
    socket: std::os::unix::net::UnixStream,
) -> std::io::Result<(
    tokio::net::unix::OwnedReadHalf,
    tokio::net::unix::OwnedWriteHalf,
)> {
    socket.set_nonblocking(true)?;
    Ok(tokio::net::UnixStream::from_std(socket)?.into_split())
}

#[cfg(test)]
mod tests {
    //! The pure parts of the cluster — ids and subjects, the wire format
    //! of every message, the credit window — without wasm, processes or a
    //! NATS server: an offline client queues what it publishes, and one
    //! test stands a few lines of NATS protocol in for a server to see
    //! what is actually put on the wire.
    use super::*;
    use crate::bindings::types::{ExitStatus, ResourceUsage};
    use proptest::prelude::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// A client that never reaches a server: what it publishes is queued.
    async fn offline_client() -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .reconnect_delay_callback(|_| Duration::from_secs(3600))
            .client_capacity(1 << 16)
            .connect("127.0.0.1:1")
            .await
            .expect("an offline client needs no server")
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    /// A `Receiving` on an offline client, with its runtime.
    fn offline_receiving() -> (tokio::runtime::Runtime, Receiving) {
        let rt = runtime();
        let client = rt.block_on(offline_client());
        (rt, Receiving::new(client, "peer".into()))
    }

    /// The body of a data message, as `kind::DATA` documents it.
    fn data(stream: u8, seq: u64, bytes: &[u8]) -> Vec<u8> {
        let mut body = vec![stream];
        body.extend_from_slice(&seq.to_le_bytes());
        body.extend_from_slice(bytes);
        body
    }

    /// The body of a credit message, as `kind::ACK` documents it.
    fn ack(stream: u8, bytes: u64, messages: u64) -> Vec<u8> {
        let mut body = vec![stream];
        body.extend_from_slice(&bytes.to_le_bytes());
        body.extend_from_slice(&messages.to_le_bytes());
        body
    }

    fn error_code() -> impl Strategy<Value = ErrorCode> {
        // A string's strategy is a `&str` regex: `Copy`.
        let m = any::<String>();
        prop_oneof![
            m.prop_map(ErrorCode::AccessDenied),
            m.prop_map(ErrorCode::NotFound),
            m.prop_map(ErrorCode::InvalidArgument),
            m.prop_map(ErrorCode::LimitExceeded),
            m.prop_map(ErrorCode::TimedOut),
            m.prop_map(ErrorCode::Closed),
            m.prop_map(ErrorCode::Unsupported),
            m.prop_map(ErrorCode::Io),
        ]
    }

    fn advert() -> impl Strategy<Value = Advert> {
        (
            any::<String>(),
            prop::collection::vec(any::<String>(), 0..6),
            any::<u32>(),
        )
            .prop_map(|(id, labels, free)| Advert { id, labels, free })
    }

    fn fork_request() -> impl Strategy<Value = ForkRequest> {
        (
            (any::<String>(), any::<String>(), any::<String>()),
            prop::collection::vec(any::<String>(), 0..5),
            prop::collection::vec((any::<String>(), any::<String>()), 0..5),
            prop::collection::vec((any::<String>(), any::<bool>()), 0..5),
            (any::<bool>(), any::<bool>()),
        )
            .prop_map(
                |((session, parent, component), args, env, dirs, (stdout, stderr))| ForkRequest {
                    session,
                    parent,
                    component,
                    args,
                    env,
                    dirs,
                    policy: Policy::default(),
                    stdout,
                    stderr,
                },
            )
    }

    fn fork_reply() -> impl Strategy<Value = ForkReply> {
        prop_oneof![
            any::<u32>().prop_map(|pid| ForkReply::Started { pid }),
            (any::<String>(), any::<String>())
                .prop_map(|(code, message)| ForkReply::Refused { code, message }),
        ]
    }

    fn termination() -> impl Strategy<Value = Termination> {
        (
            prop_oneof![
                any::<u8>().prop_map(ExitStatus::Exited),
                any::<u8>().prop_map(ExitStatus::Signaled),
            ],
            prop::option::of(any::<String>()),
            (any::<u64>(), any::<u64>(), any::<u64>()),
        )
            .prop_map(|(status, trap, (user, system, rss))| Termination {
                status,
                timed_out: false,
                trap,
                usage: ResourceUsage {
                    user_cpu_ns: user,
                    system_cpu_ns: system,
                    max_rss_bytes: rss,
                },
            })
    }

    /// A termination as comparable plain data.
    fn plain(t: &Termination) -> (Option<u8>, Option<u8>, bool, Option<String>, [u64; 3]) {
        let (exited, signaled) = match t.status {
            ExitStatus::Exited(c) => (Some(c), None),
            ExitStatus::Signaled(s) => (None, Some(s)),
        };
        let u = &t.usage;
        (
            exited,
            signaled,
            t.timed_out,
            t.trap.clone(),
            [u.user_cpu_ns, u.system_cpu_ns, u.max_rss_bytes],
        )
    }

    fn json<T: Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(value).expect("serializable")
    }

    proptest! {
        /// `is_id` is exactly "1 to 64 ASCII letters or digits".
        #[test]
        fn an_id_is_one_to_sixty_four_ascii_alphanumerics_and_nothing_else(
            id in prop_oneof![any::<String>(), "[A-Za-z0-9]{0,70}", "[A-Za-z0-9.*> _\\-]{0,70}"],
        ) {
            let expected = (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric());
            prop_assert_eq!(is_id(&id), expected);
        }

        /// An id that passes is one token of every subject it is put in:
        /// it can neither add a token nor be a wildcard.
        #[test]
        fn a_valid_id_is_exactly_one_token_of_every_subject(id in "[A-Za-z0-9]{1,64}") {
            prop_assert!(is_id(&id));
            for (subject, count) in [
                (fork_subject(&id), 4),
                (parent_subject(&id), 3),
                (session_subject(&id, true), 4),
                (session_subject(&id, false), 4),
            ] {
                let tokens: Vec<&str> = subject.split('.').collect();
                prop_assert_eq!(tokens.len(), count);
                prop_assert_eq!(tokens[2], id.as_str());
                prop_assert!(tokens.iter().all(|t| !t.is_empty() && *t != "*" && *t != ">"));
            }
        }

        /// Every error code crosses the wire as itself, message and all.
        #[test]
        fn every_error_code_round_trips_through_the_wire(e in error_code()) {
            let (code, message) = to_wire(&e);
            let back = from_wire(&code, message.clone());
            prop_assert_eq!(to_wire(&back), (code, message));
            prop_assert_eq!(std::mem::discriminant(&back), std::mem::discriminant(&e));
        }

        /// A session message is its kind byte, then its body unchanged.
        #[test]
        fn a_session_message_is_its_kind_byte_then_its_body(
            k in any::<u8>(),
            body in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let m = message(k, &body);
            prop_assert_eq!(m.len(), 1 + body.len());
            prop_assert_eq!(m[0], k);
            prop_assert_eq!(&m[1..], &body[..]);
        }

        #[test]
        fn an_advert_round_trips_through_json(a in advert()) {
            let bytes = serde_json::to_vec(&a).unwrap();
            let back: Advert = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(back.id, a.id);
            prop_assert_eq!(back.labels, a.labels);
            prop_assert_eq!(back.free, a.free);
        }

        #[test]
        fn a_fork_request_round_trips_through_json(r in fork_request()) {
            let bytes = serde_json::to_vec(&r).unwrap();
            let back: ForkRequest = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(&back.session, &r.session);
            prop_assert_eq!(&back.env, &r.env);
            prop_assert_eq!(&back.dirs, &r.dirs);
            prop_assert_eq!(json(&back), json(&r));
        }

        #[test]
        fn a_fork_reply_round_trips_through_json(r in fork_reply()) {
            let bytes = serde_json::to_vec(&r).unwrap();
            let back: ForkReply = serde_json::from_slice(&bytes).unwrap();
            match (&back, &r) {
                (ForkReply::Started { pid: a }, ForkReply::Started { pid: b }) => prop_assert_eq!(a, b),
                (
                    ForkReply::Refused { code: c1, message: m1 },
                    ForkReply::Refused { code: c2, message: m2 },
                ) => {
                    prop_assert_eq!(c1, c2);
                    prop_assert_eq!(m1, m2);
                }
                _ => prop_assert!(false, "{back:?} is not {r:?}"),
            }
        }

        /// What the agent sends as a worker's exit is what the host reads:
        /// status, trap and usage.
        #[test]
        fn an_exit_carries_the_termination_across_the_wire(t in termination()) {
            let exit = message(kind::EXIT, &serde_json::to_vec(&Ended::from(&t)).unwrap());
            prop_assert_eq!(exit[0], kind::EXIT);
            let ended: Ended = serde_json::from_slice(&exit[1..]).unwrap();
            prop_assert!(ended.lost.is_none());
            prop_assert_eq!(plain(&Termination::from(ended)), plain(&t));
        }

        /// Every strict prefix of every JSON message is an error.
        #[test]
        fn a_truncated_json_message_is_an_error_not_a_panic(
            a in advert(),
            r in fork_request(),
            reply in fork_reply(),
            t in termination(),
            cut in any::<prop::sample::Index>(),
        ) {
            fn prefixes_fail<T: Serialize + serde::de::DeserializeOwned>(
                value: &T,
                cut: prop::sample::Index,
            ) -> bool {
                let bytes = serde_json::to_vec(value).unwrap();
                let at = cut.index(bytes.len());
                serde_json::from_slice::<T>(&bytes[..at]).is_err()
            }
            prop_assert!(prefixes_fail(&a, cut));
            prop_assert!(prefixes_fail(&r, cut));
            prop_assert!(prefixes_fail(&reply, cut));
            prop_assert!(prefixes_fail(&Ended::from(&t), cut));
        }

        /// Whatever bytes come from the network, decoding them as any
        /// message is a value or an error, never a panic.
        #[test]
        fn decoding_arbitrary_bytes_as_any_message_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = serde_json::from_slice::<Advert>(&bytes);
            let _ = serde_json::from_slice::<ForkRequest>(&bytes);
            let _ = serde_json::from_slice::<ForkReply>(&bytes);
            let _ = serde_json::from_slice::<Ended>(&bytes);
            let (_rt, mut receiving) = offline_receiving();
            if let Some((&k, body)) = bytes.split_first() {
                let handled = receiving.handle(k, body);
                if body.is_empty() || body[0] >= 3 {
                    prop_assert!(handled.is_err());
                }
            }
        }

        /// A message for a stream beyond stdout, stderr and the channel is
        /// an error, whatever its kind.
        #[test]
        fn a_message_for_an_unknown_stream_is_an_error(
            k in prop_oneof![Just(kind::DATA), Just(kind::ACK), Just(kind::EOF), any::<u8>()],
            stream in 3u8..,
            rest in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let (_rt, mut receiving) = offline_receiving();
            let mut body = vec![stream];
            body.extend_from_slice(&rest);
            let why = receiving.handle(k, &body).unwrap_err();
            prop_assert!(why.contains("unknown stream"), "{}", why);
        }
    }

    #[test]
    fn new_ids_are_sixteen_hex_digits_that_pass_the_id_check() {
        let ids: std::collections::HashSet<String> = (0..100).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 100, "ids repeat");
        for id in &ids {
            assert_eq!(id.len(), 16);
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(is_id(id));
        }
    }

    #[test]
    fn ids_that_could_escape_a_subject_token_are_refused() {
        for bad in [
            "", "*", ">", "a.b", "a b", "a\tb", "a\r\nb", "ab*", "a>", "é", "a-b", "a_b",
        ] {
            assert!(!is_id(bad), "{bad:?} passed");
        }
        assert!(is_id(&"a".repeat(64)));
        assert!(!is_id(&"a".repeat(65)));
    }

    #[test]
    fn a_session_has_one_subject_each_way() {
        assert_eq!(fork_subject("abc"), "wasmproc.agent.abc.fork");
        assert_eq!(parent_subject("abc"), "wasmproc.parent.abc");
        let (to, from) = (session_subject("abc", true), session_subject("abc", false));
        assert_eq!(to, "wasmproc.s.abc.p");
        assert_eq!(from, "wasmproc.s.abc.w");
        assert_ne!(to, from);
    }

    #[test]
    fn message_kinds_streams_and_error_codes_are_distinct() {
        let kinds = [
            kind::DATA,
            kind::ACK,
            kind::EOF,
            kind::REPORT,
            kind::EXIT,
            kind::KILL,
            kind::CLOSE,
        ];
        let unique: std::collections::HashSet<u8> = kinds.into_iter().collect();
        assert_eq!(unique.len(), kinds.len());
        assert_eq!([stream::CHANNEL, stream::STDOUT, stream::STDERR], [0, 1, 2]);
        let codes: std::collections::HashSet<String> = [
            ErrorCode::AccessDenied(String::new()),
            ErrorCode::NotFound(String::new()),
            ErrorCode::InvalidArgument(String::new()),
            ErrorCode::LimitExceeded(String::new()),
            ErrorCode::TimedOut(String::new()),
            ErrorCode::Closed(String::new()),
            ErrorCode::Unsupported(String::new()),
            ErrorCode::Io(String::new()),
        ]
        .iter()
        .map(|e| to_wire(e).0)
        .collect();
        assert_eq!(codes.len(), 8);
    }

    #[test]
    fn an_unknown_error_code_from_an_agent_reads_as_io_with_its_message() {
        let e = from_wire("no-such-code", "agent x: what".into());
        assert!(
            matches!(&e, ErrorCode::Io(m) if m == "agent x: what"),
            "{e:?}"
        );
    }

    #[test]
    fn out_of_range_numbers_and_wrong_shapes_in_json_messages_are_errors() {
        assert!(
            serde_json::from_str::<Advert>(r#"{"id":"a","labels":[],"free":4294967296}"#).is_err()
        );
        assert!(serde_json::from_str::<Advert>(r#"{"id":"a","labels":[],"free":-1}"#).is_err());
        assert!(serde_json::from_str::<Advert>(r#"{"id":"a","labels":"gpu","free":1}"#).is_err());
        assert!(serde_json::from_str::<ForkReply>(r#"{"Started":{"pid":4294967296}}"#).is_err());
        assert!(serde_json::from_str::<ForkReply>(r#"{"Exploded":{}}"#).is_err());
        let exit = |exited: &str| {
            format!(
                r#"{{"exited":{exited},"signaled":null,"trap":null,"user_cpu_ns":0,"system_cpu_ns":0,"max_rss_bytes":0}}"#
            )
        };
        assert!(serde_json::from_str::<Ended>(&exit("255")).is_ok());
        assert!(serde_json::from_str::<Ended>(&exit("256")).is_err());
        // A big body is not a problem in itself: only its shape is.
        let labels = vec!["x".repeat(1000); 1000];
        let big = serde_json::to_vec(&Advert {
            id: "a".into(),
            labels,
            free: 1,
        })
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Advert>(&big).unwrap().labels.len(),
            1000
        );
    }

    #[test]
    fn an_exit_without_a_status_reads_as_killed_and_a_lost_one_says_why() {
        let ended: Ended = serde_json::from_str(
            r#"{"exited":null,"signaled":null,"trap":null,"user_cpu_ns":1,"system_cpu_ns":2,"max_rss_bytes":3}"#,
        )
        .unwrap();
        assert!(ended.lost.is_none(), "`lost` defaults to none");
        let t = Termination::from(ended);
        assert!(matches!(t.status, ExitStatus::Signaled(9)));
        assert_eq!(plain(&t).4, [1, 2, 3]);
        let lost: Ended = serde_json::from_str(
            r#"{"lost":"bridging: gone","exited":null,"signaled":9,"trap":null,"user_cpu_ns":0,"system_cpu_ns":0,"max_rss_bytes":0}"#,
        )
        .unwrap();
        assert_eq!(lost.lost.as_deref(), Some("bridging: gone"));
    }

    #[test]
    fn a_remote_output_can_be_null_piped_or_inherited_but_not_a_descriptor() {
        assert_eq!(remote_output("stdout", Asked::Null).unwrap(), None);
        assert_eq!(remote_output("stdout", Asked::Piped).unwrap(), Some(true));
        assert_eq!(
            remote_output("stderr", Asked::Inherit).unwrap(),
            Some(false)
        );
        let e = remote_output("stderr", Asked::PipeFrom(Ok(None))).unwrap_err();
        assert!(
            matches!(&e, ErrorCode::InvalidArgument(m) if m.contains("stderr")),
            "{e:?}"
        );
    }

    #[test]
    fn an_empty_or_truncated_stream_message_is_an_error_not_a_panic() {
        let (_rt, mut receiving) = offline_receiving();
        for k in [kind::DATA, kind::ACK, kind::EOF] {
            assert!(receiving.handle(k, &[]).is_err(), "empty {}", k as char);
        }
        // A data message needs its stream and an 8-byte sequence number.
        let full = data(stream::STDOUT, 0, b"");
        for len in 1..full.len() {
            let why = receiving.handle(kind::DATA, &full[..len]).unwrap_err();
            assert!(why.contains("malformed data"), "{why}");
        }
        // A credit message needs its stream and two 8-byte counts.
        let full = ack(stream::STDOUT, 1, 1);
        for len in 1..full.len() {
            let why = receiving.handle(kind::ACK, &full[..len]).unwrap_err();
            assert!(why.contains("malformed credit"), "{why}");
        }
        assert_eq!(receiving.handle(kind::ACK, &full), Ok(()));
        assert_eq!(
            receiving.handle(kind::DATA, &data(stream::STDOUT, 0, b"")),
            Ok(())
        );
    }

    #[test]
    fn a_lost_or_repeated_data_message_breaks_the_session() {
        let (_rt, mut receiving) = offline_receiving();
        // Each stream is numbered on its own.
        for s in [stream::CHANNEL, stream::STDOUT, stream::STDERR] {
            assert_eq!(receiving.handle(kind::DATA, &data(s, 0, b"a")), Ok(()));
        }
        assert_eq!(
            receiving.handle(kind::DATA, &data(stream::STDOUT, 1, b"b")),
            Ok(())
        );
        let gap = receiving.handle(kind::DATA, &data(stream::STDOUT, 3, b"d"));
        assert_eq!(gap.unwrap_err(), "message 2 of stream 1 was lost (got 3)");
        let (_rt, mut receiving) = offline_receiving();
        assert_eq!(
            receiving.handle(kind::DATA, &data(stream::STDERR, 0, b"a")),
            Ok(())
        );
        assert!(
            receiving
                .handle(kind::DATA, &data(stream::STDERR, 0, b"a"))
                .is_err()
        );
        let (_rt, mut receiving) = offline_receiving();
        assert!(
            receiving
                .handle(kind::DATA, &data(stream::CHANNEL, 1, b"a"))
                .is_err()
        );
    }

    #[test]
    fn granted_credits_only_grow_whatever_order_they_arrive_in() {
        let (_rt, mut receiving) = offline_receiving();
        let credits = Arc::new(Credits::default());
        receiving.credit(stream::STDERR, credits.clone());
        let granted = |c: &Credits| {
            (
                c.bytes.load(Ordering::Acquire),
                c.messages.load(Ordering::Acquire),
            )
        };
        receiving
            .handle(kind::ACK, &ack(stream::STDERR, 100, 10))
            .unwrap();
        assert_eq!(granted(&credits), (100, 10));
        // A late, older grant takes nothing back.
        receiving
            .handle(kind::ACK, &ack(stream::STDERR, 50, 5))
            .unwrap();
        assert_eq!(granted(&credits), (100, 10));
        receiving
            .handle(kind::ACK, &ack(stream::STDERR, 40, 20))
            .unwrap();
        assert_eq!(granted(&credits), (100, 20));
        // Another stream's grant is that stream's.
        receiving
            .handle(kind::ACK, &ack(stream::STDOUT, 1 << 40, 1 << 40))
            .unwrap();
        assert_eq!(granted(&credits), (100, 20));
    }

    /// A source giving `chunk` bytes a read, counting its reads, then its
    /// end after `limit` reads.
    struct Counted {
        reads: Arc<AtomicU64>,
        chunk: usize,
        limit: u64,
    }

    impl tokio::io::AsyncRead for Counted {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.reads.load(Ordering::Acquire) < self.limit {
                let n = self.chunk.min(buf.remaining());
                buf.initialize_unfilled_to(n).fill(b'x');
                buf.advance(n);
                self.reads.fetch_add(1, Ordering::AcqRel);
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Waits until `reads` is `n`, then checks it stays there a while.
    async fn reads_stop_at(reads: &AtomicU64, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while reads.load(Ordering::Acquire) < n {
            assert!(Instant::now() < deadline, "stuck at {reads:?}, not {n}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            reads.load(Ordering::Acquire),
            n,
            "the sender went past its window"
        );
    }

    #[tokio::test]
    async fn a_sender_stops_at_a_full_message_window_and_resumes_as_credits_come() {
        let client = offline_client().await;
        let reads = Arc::new(AtomicU64::new(0));
        let source = Counted {
            reads: reads.clone(),
            chunk: 1,
            limit: u64::MAX,
        };
        let (task, credits) = send_stream(source, client.clone(), "peer".into(), stream::STDOUT);
        reads_stop_at(&reads, WINDOW_MESSAGES).await;
        let mut receiving = Receiving::new(client, "unused".into());
        receiving.credit(stream::STDOUT, credits);
        receiving
            .handle(kind::ACK, &ack(stream::STDOUT, 256, 256))
            .unwrap();
        reads_stop_at(&reads, WINDOW_MESSAGES + 256).await;
        // A stale grant changes nothing.
        receiving
            .handle(kind::ACK, &ack(stream::STDOUT, 10, 10))
            .unwrap();
        reads_stop_at(&reads, WINDOW_MESSAGES + 256).await;
        receiving
            .handle(kind::ACK, &ack(stream::STDOUT, 1000, 1000))
            .unwrap();
        reads_stop_at(&reads, WINDOW_MESSAGES + 1000).await;
        task.abort();
    }

    #[tokio::test]
    async fn a_sender_stops_at_a_full_byte_window_and_resumes_as_credits_come() {
        let client = offline_client().await;
        let reads = Arc::new(AtomicU64::new(0));
        let source = Counted {
            reads: reads.clone(),
            chunk: CHUNK,
            limit: u64::MAX,
        };
        let (task, credits) = send_stream(source, client.clone(), "peer".into(), stream::CHANNEL);
        let per_window = WINDOW_BYTES / CHUNK as u64;
        reads_stop_at(&reads, per_window).await;
        let mut receiving = Receiving::new(client, "unused".into());
        receiving.credit(stream::CHANNEL, credits);
        receiving
            .handle(kind::ACK, &ack(stream::CHANNEL, WINDOW_BYTES / 4, 1))
            .unwrap();
        reads_stop_at(&reads, per_window + per_window / 4).await;
        task.abort();
    }

    #[tokio::test]
    async fn a_grant_beyond_what_was_sent_never_underflows_the_window() {
        let client = offline_client().await;
        let reads = Arc::new(AtomicU64::new(0));
        let limit = 3 * WINDOW_MESSAGES;
        let source = Counted {
            reads: reads.clone(),
            chunk: 1,
            limit,
        };
        let (task, credits) = send_stream(source, client, "peer".into(), stream::STDERR);
        credits.bytes.store(u64::MAX, Ordering::Release);
        credits.messages.store(u64::MAX, Ordering::Release);
        credits.changed.notify_waiters();
        // Past the window, to the source's end: no overflow, no stall.
        reads_stop_at(&reads, limit).await;
        task.abort();
    }

    #[tokio::test]
    async fn a_receiver_grants_credits_each_time_a_quarter_of_the_window_is_written() {
        let written = Written {
            counts: Mutex::new(((0, 0), (0, 0))),
            client: offline_client().await,
            subject: "peer".into(),
            stream: stream::STDOUT,
        };
        let counts = || *written.counts.lock().unwrap();
        written.add(WINDOW_BYTES / 4 - 1, 1);
        assert_eq!(
            counts(),
            ((WINDOW_BYTES / 4 - 1, 1), (0, 0)),
            "granted too early"
        );
        written.add(1, 0);
        let quarter = ((WINDOW_BYTES / 4, 1), (WINDOW_BYTES / 4, 1));
        assert_eq!(counts(), quarter);
        written.add(0, WINDOW_MESSAGES / 4 - 1);
        assert_eq!(counts().1, quarter.1, "granted too early");
        written.add(0, 1);
        let all = (WINDOW_BYTES / 4, 1 + WINDOW_MESSAGES / 4);
        assert_eq!(counts(), (all, all));
        // A sender waiting at a full window always gets a grant.
        const { assert!(WINDOW_BYTES / 4 >= CHUNK as u64 && WINDOW_MESSAGES / 4 >= 1) };
    }

    #[tokio::test]
    async fn a_sink_gets_its_stream_in_order_then_its_end() {
        let mut receiving = Receiving::new(offline_client().await, "peer".into());
        let (sink, mut out) = tokio::io::duplex(1 << 16);
        receiving.sink(stream::STDOUT, Box::pin(sink));
        let (err_sink, mut err_out) = tokio::io::duplex(1 << 16);
        receiving.sink(stream::STDERR, Box::pin(err_sink));
        for (seq, piece) in [&b"hello, "[..], b"", b"world"].into_iter().enumerate() {
            receiving
                .handle(kind::DATA, &data(stream::STDOUT, seq as u64, piece))
                .unwrap();
        }
        receiving
            .handle(kind::DATA, &data(stream::STDERR, 0, b"oops"))
            .unwrap();
        receiving.handle(kind::EOF, &[stream::STDOUT]).unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), out.read_to_end(&mut got))
            .await
            .expect("the stream ends at its EOF")
            .unwrap();
        assert_eq!(got, b"hello, world");
        // The other stream goes on until the session ends.
        let mut four = [0u8; 4];
        err_out.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"oops");
        receiving.end();
        assert_eq!(err_out.read(&mut four).await.unwrap(), 0);
    }
}
