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

mod session;
#[cfg(test)]
mod tests;
mod wire;

pub(crate) use session::*;
pub(crate) use wire::*;

use crate::failure::Failure;
use anyhow::{Context as _, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
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
    crate::hex::hex(&bytes)
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
    pub(crate) async fn pick(&self, labels: &[String]) -> Result<String, Failure> {
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
                return Err(Failure::LimitExceeded(which));
            }
        }
    }
}

impl Inner {
    fn agents(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an agent answered a fork request.
pub(crate) enum Answer {
    /// The worker runs, with this pid; the session's messages from it.
    Started(u32, async_nats::Subscriber),
    /// The agent refused, with the error code and message on the wire.
    Refused { code: String, message: String },
}

impl Cluster {
    /// This host's id on the cluster.
    pub(crate) fn id(&self) -> &str {
        &self.inner.id
    }

    /// The NATS client.
    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// Asks `agent` to start the worker of `request`, listening to the
    /// session before asking (the worker may answer at once).
    pub(crate) async fn ask_fork(
        &self,
        agent: &str,
        request: &ForkRequest,
    ) -> Result<Answer, Failure> {
        let client = &self.inner.client;
        let from_worker = (client
            .subscribe(session_subject(&request.session, false))
            .await)
            .map_err(|e| Failure::Io(format!("subscribing to the worker's session: {e}")))?;
        let body = serde_json::to_vec(request).map_err(|e| Failure::Io(e.to_string()))?;
        let reply = tokio::time::timeout(
            FORK_TIMEOUT,
            client.request(fork_subject(agent), body.into()),
        )
        .await
        .map_err(|_| Failure::TimedOut(format!("agent {agent} did not answer the fork in time")))?
        .map_err(|e| Failure::Io(format!("asking agent {agent} to fork: {e}")))?;
        match serde_json::from_slice::<ForkReply>(&reply.payload) {
            Ok(ForkReply::Started { pid }) => Ok(Answer::Started(pid, from_worker)),
            Ok(ForkReply::Refused { code, message }) => Ok(Answer::Refused { code, message }),
            Err(e) => Err(Failure::Io(format!("agent {agent} answered: {e}"))),
        }
    }
}
