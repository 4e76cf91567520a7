//! A forking host's side of the cluster: the agents it trusts and has
//! heard from, its signed heartbeat, and its sealed fork requests.

use super::{
    ADVERTS, Advert, Drops, Ends, FORK_TIMEOUT, ForkReply, ForkRequest, HEARTBEAT, Identity,
    LOST_AFTER, Link, NatsOptions, Opener, Rejected, Signed, Trust, fork_subject, inbox_prefix,
    is_id, parent_subject, seal::seal_to, session_subject,
};
use crate::audit::AuditLog;
use crate::failure::Failure;
use anyhow::Result;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Agents a host keeps at most (trusted keys only ever enter).
const MAX_AGENTS: usize = 1024;

/// A forking host's membership of a cluster: its connection, identity
/// and heartbeat, and the trusted agents it has seen.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    id: String,
    identity: Identity,
    trust: Trust,
    drops: Drops,
    /// The NATS servers it joined (for messages).
    url: String,
    agents: Mutex<HashMap<String, Seen>>,
    /// Woken by every advert.
    adverts: Notify,
    /// When this host joined: until a round of adverts has come, it does
    /// not know every agent yet.
    joined: Instant,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct Seen {
    advert: Advert,
    /// The key that signed it, and the sequence number of its newest.
    key: String,
    seq: u64,
    at: Instant,
}

/// The agent chosen for a worker: its id, and its signing and curve keys.
#[derive(Debug, Clone)]
pub(crate) struct Picked {
    pub id: String,
    pub key: String,
    pub xkey: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.inner.id)
            .field("key", &self.inner.identity.public_key())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Joins the cluster of the NATS servers `options` names as
    /// `identity`, using only agents `trust` trusts; dropped messages are
    /// counted in `audit` too. Starts listening to adverts and sending this
    /// host's heartbeat. Must be called inside a tokio runtime.
    pub async fn connect(
        options: &NatsOptions,
        identity: Identity,
        trust: Trust,
        audit: Option<AuditLog>,
    ) -> Result<Cluster> {
        let inbox = inbox_prefix(identity.public_key());
        let client = options.connect("wasmproc host", Some(inbox)).await?;
        let mut adverts = client.subscribe(format!("{ADVERTS}.*")).await?;
        let drops = Drops::new("host", audit);
        if trust.is_anyone() {
            drops.insecure();
        }
        let inner = Arc::new(Inner {
            client: client.clone(),
            id: super::new_id(),
            identity,
            trust,
            drops,
            url: options.url.clone(),
            agents: Mutex::new(HashMap::new()),
            adverts: Notify::new(),
            joined: Instant::now(),
            tasks: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&inner);
        let listen = tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(m) = adverts.next().await {
                let Some(inner) = weak.upgrade() else { return };
                match inner.advert(&m.subject, &m.payload) {
                    Ok(()) => inner.adverts.notify_waiters(),
                    Err(why) => inner.drops.count(why, &m.subject),
                }
            }
        });
        let weak = Arc::downgrade(&inner);
        let subject = parent_subject(inner.identity.public_key(), &inner.id);
        let beat = tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let beat = inner.identity.sign(&subject, &[]);
                let _ = client.publish(subject.clone(), beat).await;
                drop(inner);
                tokio::time::sleep(HEARTBEAT).await;
            }
        });
        inner.tasks().extend([listen, beat]);
        Ok(Cluster { inner })
    }

    /// What this host dropped from the bus.
    pub fn drops(&self) -> &Drops {
        &self.inner.drops
    }

    /// This host's public key.
    pub fn public_key(&self) -> &str {
        self.inner.identity.public_key()
    }

    /// Whether agent `id` was heard from within [`LOST_AFTER`].
    pub(crate) fn alive(&self, id: &str) -> bool {
        (self.inner.agents().get(id)).is_some_and(|s| s.at.elapsed() < LOST_AFTER)
    }

    /// The agent for `placement`: of those alive with every label asked
    /// for, the one with the most free slots. Waits for adverts up to
    /// [`FORK_TIMEOUT`] while a trusted agent is connected, and fails at
    /// once, saying so, while none is.
    pub(crate) async fn pick(&self, labels: &[String]) -> Result<Picked, Failure> {
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
                    return Ok(Picked {
                        id: id.clone(),
                        key: seen.key.clone(),
                        xkey: seen.advert.xkey.clone(),
                    });
                }
                if !agents.values().any(|s| s.at.elapsed() < LOST_AFTER) {
                    return Err(Failure::Unsupported(format!(
                        "no trusted agent is connected to {} (start one with `wasmproc agent \
                         --nats {0} --trust-host {}`)",
                        self.inner.url,
                        self.public_key()
                    )));
                }
            }
            if tokio::time::timeout_at(deadline, advertised).await.is_err() {
                let which = match labels {
                    [] => "no trusted agent of the cluster has a free worker slot".to_owned(),
                    _ => format!(
                        "no trusted agent of the cluster with labels {} has a free worker slot",
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

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an advert heard on `subject`: from a trusted key (checked
    /// first, cheaply), well signed, fresh, newer than that agent's last.
    fn advert(&self, subject: &str, payload: &[u8]) -> Result<(), Rejected> {
        let key = (subject.strip_prefix(ADVERTS))
            .and_then(|k| k.strip_prefix('.'))
            .ok_or(Rejected::Malformed)?;
        if !self.trust.trusts(key) {
            return Err(Rejected::Untrusted);
        }
        let m = Signed::parse(payload)?;
        if m.key != key {
            return Err(Rejected::Untrusted);
        }
        self.trust.check(subject, &m)?;
        let advert = serde_json::from_slice::<Advert>(m.body).map_err(|_| Rejected::Malformed)?;
        if !is_id(&advert.id) || nkeys::XKey::from_public_key(&advert.xkey).is_err() {
            return Err(Rejected::Malformed);
        }
        let mut agents = self.agents();
        match agents.get_mut(&advert.id) {
            Some(seen) if seen.key != key => return Err(Rejected::Untrusted),
            Some(seen) if m.seq <= seen.seq => return Err(Rejected::Replayed),
            Some(seen) => {
                (seen.advert, seen.seq, seen.at) = (advert, m.seq, Instant::now());
            }
            None => {
                if agents.len() >= MAX_AGENTS {
                    agents.retain(|_, s| s.at.elapsed() < LOST_AFTER * 10);
                }
                if agents.len() >= MAX_AGENTS {
                    return Err(Rejected::Unknown);
                }
                let seen = Seen {
                    advert,
                    key: key.to_owned(),
                    seq: m.seq,
                    at: Instant::now(),
                };
                agents.insert(seen.advert.id.clone(), seen);
            }
        }
        Ok(())
    }
}

/// What an agent answered a fork request.
pub(crate) enum Answer {
    /// The worker runs, with this pid; the session's messages from it,
    /// how to open them, and the session's way to the worker.
    Started {
        pid: u32,
        from_worker: async_nats::Subscriber,
        /// (Boxed: its replay window is a kilobyte.)
        opener: Box<Opener>,
        link: Link,
    },
    /// The agent refused, with the error code and message on the wire.
    Refused { code: String, message: String },
}

impl Cluster {
    /// Sends the fork request `body` on `subject` and waits for the first
    /// reply that opens with `opener` (anything else on the inbox is
    /// dropped and counted: a forged reply cannot fail the fork).
    async fn answer(
        &self,
        id: &str,
        (subject, body): (String, bytes::Bytes),
        opener: &mut Opener,
    ) -> Result<Vec<u8>, Failure> {
        use futures_util::StreamExt;
        let client = &self.inner.client;
        let asking =
            |e: &dyn std::fmt::Display| Failure::Io(format!("asking agent {id} to fork: {e}"));
        let inbox = client.new_inbox();
        let mut replies = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| asking(&e))?;
        (client.publish_with_reply(subject, inbox, body).await).map_err(|e| asking(&e))?;
        let deadline = tokio::time::Instant::now() + FORK_TIMEOUT;
        loop {
            let reply = match tokio::time::timeout_at(deadline, replies.next()).await {
                Ok(Some(reply)) => reply,
                Ok(None) => return Err(asking(&"the connection ended")),
                Err(_) => {
                    return Err(Failure::TimedOut(format!(
                        "agent {id} did not answer the fork in time (does it trust this host's key {}?)",
                        self.public_key()
                    )));
                }
            };
            match opener.open(&reply.payload) {
                Ok(plain) => return Ok(plain),
                Err(why) => self.inner.drops.count(why, &reply.subject),
            }
        }
    }

    /// This host's id on the cluster.
    pub(crate) fn id(&self) -> &str {
        &self.inner.id
    }

    /// Asks `agent` to start the worker of `request`, sealed to it and
    /// signed, with fresh session keys; listens to the session before
    /// asking (the worker may answer at once).
    pub(crate) async fn ask_fork(
        &self,
        agent: &Picked,
        request: ForkRequest,
    ) -> Result<Answer, Failure> {
        let client = &self.inner.client;
        let keys = request.keys.clone();
        let ends = Ends {
            host: self.public_key(),
            agent: &agent.key,
            session: &request.session,
        };
        let from_worker = (client.subscribe(session_subject(&ends, false)).await)
            .map_err(|e| Failure::Io(format!("subscribing to the worker's session: {e}")))?;
        let plain = serde_json::to_vec(&request).map_err(|e| Failure::Io(e.to_string()))?;
        let sealed = seal_to(&agent.xkey, &plain)
            .map_err(|e| Failure::Io(format!("sealing the fork request: {e}")))?;
        let subject = fork_subject(&agent.key, &agent.id);
        let body = self.inner.identity.sign(&subject, &sealed);
        let mut opener = keys.opener(&request.session, false);
        let plain = self.answer(&agent.id, (subject, body), &mut opener).await?;
        let id = &agent.id;
        match serde_json::from_slice::<ForkReply>(&plain) {
            Ok(ForkReply::Started { pid }) => Ok(Answer::Started {
                pid,
                from_worker,
                opener: Box::new(opener),
                link: Link::new(
                    client.clone(),
                    session_subject(&ends, true),
                    keys.sealer(&request.session, true),
                ),
            }),
            Ok(ForkReply::Refused { code, message }) => Ok(Answer::Refused { code, message }),
            Err(e) => Err(Failure::Io(format!("agent {id} answered: {e}"))),
        }
    }
}
