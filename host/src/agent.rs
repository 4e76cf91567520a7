//! A cluster agent (`wasmproc agent`): runs the workers that forking hosts
//! place on its machine, each within the agent's own policy — its
//! [`ProcessCtx`], whose grants, exported directories (its granted
//! directories, by guest name), limits and sandbox settings are the
//! ceiling of every request. See [`crate::cluster`] for the protocol.
//!
//! A request is checked with `Policy::within` (`cluster/ceiling.rs`); anything beyond is
//! refused (`access-denied`) and reported as a denial. An accepted worker
//! is started exactly as a local fork's (`ProcessCtx::start_worker`),
//! so it runs in the same sandbox; its channel, stdout, stderr and reports
//! are bridged to the host, its spawns audited here and there.
//!
//! An agent serves only hosts whose keys it trusts: a fork request must be
//! signed by one, fresh, never seen before, and sealed to this agent's
//! curve key; anything else is dropped unanswered and counted (the audit
//! log's `cluster-dropped`). Its workers' sessions are encrypted with the
//! keys the request carried, and it watches the heartbeats of the hosts
//! whose workers it runs, and no others (see [`crate::cluster`]).

use crate::child::Child;
use crate::cluster::liveness::Parents;
use crate::cluster::seal::open_from;
use crate::cluster::{
    Advert, Drops, Ended, Ends, ForkReply, ForkRequest, HEARTBEAT, Identity, LOST_AFTER, Link,
    NatsOptions, Opener, Receiving, Rejected, SeenRequests, Signed, Trust, advert_subject,
    channel_halves, fork_subject, is_id, kind, message, new_id, parent_subject, send_stream,
    session_subject, stream, to_wire,
};
use crate::ctx::ProcessCtx;
use crate::failure::Failure;
use crate::outcome::Termination;
use crate::policy::DirAccess;
use crate::policy::{Denial, Lent};
use crate::stdio::StdioRequest;
use crate::worker::spec::{WorkerDir, WorkerSpec};
use anyhow::Result;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Fork requests an agent remembers (to refuse a replay) at most.
const MAX_SEEN_REQUESTS: usize = 1 << 16;

/// A running agent.
pub struct Agent {
    id: String,
    identity: Identity,
    /// The hosts it serves.
    trust: Trust,
    /// The curve key fork requests are sealed to (made at start).
    xkey: nkeys::XKey,
    drops: Drops,
    labels: Vec<String>,
    client: async_nats::Client,
    ctx: Mutex<ProcessCtx>,
    /// The hosts whose workers run here, and their heartbeats.
    parents: Parents,
    /// Fork requests seen, by signer and sequence number.
    seen: Mutex<SeenRequests>,
    /// The task hearing each host's heartbeats, by host id.
    hearing: Mutex<HashMap<String, JoinHandle<()>>>,
    /// The sessions running.
    sessions: Mutex<std::collections::HashSet<String>>,
}

impl Agent {
    /// Connects to NATS as an agent, `identity`, that runs workers
    /// within `ctx`'s policy for the hosts `trust` trusts, advertising
    /// `labels` (and `sha256:HEX` of each pinned program). Must be called
    /// inside a tokio runtime.
    pub async fn connect(
        nats: &NatsOptions,
        mut ctx: ProcessCtx,
        mut labels: Vec<String>,
        (identity, trust): (Identity, Trust),
    ) -> Result<Arc<Agent>> {
        // Each session's workers run as a user of that session's own, so
        // the worker template serves many users and keeps the right to
        // become each.
        ctx.workers.many_users = true;
        let client = nats.connect("wasmproc agent", None).await?;
        labels.extend(ctx.policy.pinned_labels());
        let drops = Drops::new("agent", ctx.audit.clone());
        if trust.is_anyone() {
            drops.insecure();
        }
        Ok(Arc::new(Agent {
            id: new_id(),
            identity,
            trust,
            xkey: nkeys::XKey::new(),
            drops,
            labels,
            client,
            ctx: Mutex::new(ctx),
            parents: Parents::default(),
            seen: Mutex::new(SeenRequests::new(MAX_SEEN_REQUESTS)),
            hearing: Mutex::new(HashMap::new()),
            sessions: Mutex::new(Default::default()),
        }))
    }

    /// The agent's id, as it advertises it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The agent's public key.
    pub fn public_key(&self) -> &str {
        self.identity.public_key()
    }

    /// What this agent dropped from the bus.
    pub fn drops(&self) -> &Drops {
        &self.drops
    }

    /// Serves fork requests until the connection ends.
    pub async fn serve(self: Arc<Self>) -> Result<()> {
        // Its worker template and warm workers, before the first request.
        self.ctx().warm_up();
        let mut requests = (self.client)
            .subscribe(fork_subject(self.public_key(), &self.id))
            .await?;
        let advertising = {
            let agent = self.clone();
            let subject = advert_subject(self.public_key());
            tokio::spawn(async move {
                loop {
                    let advert = serde_json::to_vec(&agent.advert()).expect("serializable");
                    let signed = agent.identity.sign(&subject, &advert);
                    let _ = agent.client.publish(subject.clone(), signed).await;
                    tokio::time::sleep(HEARTBEAT).await;
                }
            })
        };
        tracing::info!(target: "wasmproc::cluster", id = %self.id, "agent serving");
        while let Some(request) = requests.next().await {
            let agent = self.clone();
            tokio::spawn(async move { agent.fork(request).await });
        }
        advertising.abort();
        Ok(())
    }

    fn ctx(&self) -> std::sync::MutexGuard<'_, ProcessCtx> {
        self.ctx.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn advert(&self) -> Advert {
        let ctx = self.ctx();
        let free = ctx.free();
        Advert {
            id: self.id.clone(),
            labels: self.labels.clone(),
            free: u32::try_from(free.live).unwrap_or(u32::MAX),
            xkey: self.xkey.public_key(),
        }
    }

    /// Opens fork request `m`: signed by a trusted host, fresh, never seen
    /// before, sealed to this agent. The request, its signer's key and
    /// sequence number.
    fn open_request(
        &self,
        m: &async_nats::Message,
    ) -> Result<(ForkRequest, String, u64), Rejected> {
        let signed = Signed::parse(&m.payload)?;
        if !self.trust.trusts(signed.key) {
            return Err(Rejected::Untrusted);
        }
        self.trust.check(&m.subject, &signed)?;
        (self.seen.lock().unwrap_or_else(|e| e.into_inner())).first(&signed)?;
        let plain = open_from(&self.xkey, signed.body)?;
        let req = serde_json::from_slice::<ForkRequest>(&plain).map_err(|_| Rejected::Malformed)?;
        // Ids become parts of NATS subjects.
        if !is_id(&req.session) || !is_id(&req.parent) {
            return Err(Rejected::Malformed);
        }
        Ok((req, signed.key.to_owned(), signed.seq))
    }

    /// Answers one fork request, then serves the session it starts. A
    /// request that is not a trusted host's is dropped unanswered.
    async fn fork(self: Arc<Self>, request: async_nats::Message) {
        let opened = match request.reply.clone() {
            Some(reply_to) => self.open_request(&request).map(|r| (r, reply_to)),
            None => Err(Rejected::Malformed),
        };
        let ((req, host, seq), reply_to) = match opened {
            Ok(opened) => opened,
            Err(why) => return self.drops.count(why, &request.subject),
        };
        let ends = Ends {
            host: &host,
            agent: self.public_key(),
            session: &req.session,
        };
        let to_host = Link::new(
            self.client.clone(),
            session_subject(&ends, false),
            req.keys.sealer(&req.session, false),
        );
        let opener = req.keys.opener(&req.session, true);
        let from_host = session_subject(&ends, true);
        let (id, parent) = (req.session.clone(), req.parent.clone());
        let started = self.start(req, (&host, seq), from_host).await;
        let reply = match &started {
            Ok(session) => ForkReply::Started {
                pid: session.child.pid(),
            },
            Err(e) => {
                let (code, message) = to_wire(e);
                ForkReply::Refused { code, message }
            }
        };
        let reply = serde_json::to_vec(&reply).expect("serializable");
        let _ = self.client.publish(reply_to, to_host.seal(&reply)).await;
        // The agent's own warm workers (`--warm-workers`) and template,
        // refilled once the host has its answer.
        self.ctx().refill();
        if let Ok(session) = started {
            self.serve_session(session, to_host, opener).await;
            self.sessions().remove(&id);
            self.release(&parent);
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the worker `req` (signed by `host`, sequence number `seq`)
    /// asks for, within this agent's policy, and listens to its host's
    /// messages on `from_host` (before the host hears of it).
    async fn start(
        self: &Arc<Self>,
        req: ForkRequest,
        (host, seq): (&str, u64),
        from_host: String,
    ) -> Result<Session, Failure> {
        // A session is one host's.
        if !self.sessions().insert(req.session.clone()) {
            return Err(Failure::InvalidArgument(format!(
                "session {} is taken",
                req.session
            )));
        }
        let session = req.session.clone();
        let parent = req.parent.clone();
        // The host's heartbeats count from now on (and only its key's).
        let admitted = (self.parents.admit(&parent, host, seq))
            .map_err(|_| Failure::AccessDenied(format!("host id {parent} is another key's")));
        let started = match admitted {
            Ok(new) => {
                let heard = match new {
                    true => self.hear(host, &parent).await,
                    false => Ok(()),
                };
                let from_host = match heard {
                    Ok(()) => (self.client.subscribe(from_host).await)
                        .map_err(|e| Failure::Io(format!("subscribing to the session: {e}"))),
                    Err(e) => Err(e),
                };
                let started = from_host.and_then(|from_host| self.launch(req, from_host));
                if started.is_err() {
                    self.release(&parent);
                }
                started
            }
            Err(e) => Err(e),
        };
        if started.is_err() {
            self.sessions().remove(&session);
        }
        started
    }

    /// Hears the heartbeats of host `id` (key `key`) while it has workers
    /// here: a subscription to its own subject, so that no other host's
    /// heartbeat, nor a flood of made-up ids, ever reaches this agent.
    async fn hear(self: &Arc<Self>, key: &str, id: &str) -> Result<(), Failure> {
        let subject = parent_subject(key, id);
        let mut beats = (self.client.subscribe(subject).await)
            .map_err(|e| Failure::Io(format!("subscribing to the host's heartbeat: {e}")))?;
        let (agent, key, parent) = (self.clone(), key.to_owned(), id.to_owned());
        let task = tokio::spawn(async move {
            while let Some(m) = beats.next().await {
                let sender = (key.as_str(), parent.as_str());
                if let Err(why) = (agent.parents).beat(&agent.trust, &m.subject, sender, &m.payload)
                {
                    agent.drops.count(why, &m.subject);
                }
            }
        });
        if let Some(old) = self.hearing().insert(id.to_owned(), task) {
            old.abort();
        }
        Ok(())
    }

    /// A session of host `id` ended: past its last, its heartbeats are
    /// not listened to any more.
    fn release(&self, id: &str) {
        if self.parents.release(id)
            && let Some(task) = self.hearing().remove(id)
        {
            task.abort();
        }
    }

    fn hearing(&self) -> std::sync::MutexGuard<'_, HashMap<String, JoinHandle<()>>> {
        self.hearing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the worker of `req`: the part of [`start`](Self::start) that
    /// holds the context.
    fn launch(
        &self,
        req: ForkRequest,
        from_host: async_nats::Subscriber,
    ) -> Result<Session, Failure> {
        let mut ctx = self.ctx();
        let policy = (req.policy.within(&ctx.policy)).map_err(|d| ctx.deny(d))?;
        let component = (ctx.policy.find_fork(&req.component))
            .map_err(|d| ctx.deny(d))?
            .path
            .clone();
        let (dirs, opened) = self.exports(&ctx, &req.dirs)?;
        // As a local fork lends: what was asked, but at most half of what
        // this agent has free, so that one host cannot take it all.
        let free = ctx.free();
        if free.live == 0 {
            return Err(ctx.deny(Denial::Limit {
                limit: "max_live_children",
                message: "this agent has no free worker slot".into(),
            }));
        }
        let mut policy = policy;
        // Each session's children run as a user id of that session's own
        // (and so in a view of their own: IPC and PID namespaces), unless
        // the guest asked for an id the agent allows.
        let ids = match (policy.child_id_asked, ctx.launcher.lease_for_tenant()) {
            (false, Some(lease)) => {
                let lease = lease?;
                policy.child_id = (lease.id, lease.id);
                Some(lease)
            }
            _ => None,
        };
        let live = policy.limits.max_live_children.min(free.live / 2);
        policy.limits.max_live_children = live;
        let spawns = free.spawns.map(|s| s / 2);
        policy.limits.max_total_spawns = match (policy.limits.max_total_spawns, spawns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let lent = Lent {
            live,
            spawns: spawns.and(policy.limits.max_total_spawns).unwrap_or(0),
        };
        let spec = WorkerSpec::new(component, (req.args.clone(), req.env.clone()), dirs, policy);
        let (reports_tx, reports) = mpsc::unbounded_channel::<Bytes>();
        let tee: crate::worker::spec::Tee = Box::new(move |line: &[u8]| {
            let _ = reports_tx.send(message(kind::REPORT, line));
        });
        let output = |piped: bool| {
            if piped {
                StdioRequest::Piped
            } else {
                StdioRequest::Null
            }
        };
        let stdio = [StdioRequest::Null, output(req.stdout), output(req.stderr)];
        let started = ctx.start_worker(spec, opened, lent, stdio, Some(tee))?;
        drop(ctx);
        Ok(Session {
            req,
            _ids: ids,
            child: started.child,
            socket: started.socket,
            reports: started.reports,
            from_host,
            report_lines: reports,
        })
    }

    /// The directories `asked` (export names, read-only or not) as a
    /// worker holds them, opened.
    fn exports(
        &self,
        ctx: &ProcessCtx,
        asked: &[(String, bool)],
    ) -> Result<(Vec<WorkerDir>, Vec<cap_std::fs::Dir>), Failure> {
        let mut dirs = Vec::new();
        let mut opened = Vec::new();
        for (name, read_only) in asked {
            let grant = (ctx.dirs.iter())
                .find(|d| d.guest_path.as_os_str() == name.as_str())
                .ok_or_else(|| ctx.deny(Denial::NotExported(name.clone())))?;
            if grant.access == DirAccess::ReadOnly && !read_only {
                return Err(ctx.deny(Denial::ReadOnlyDir(name.clone())));
            }
            let dir = (grant.dir.try_clone())
                .map_err(|e| Failure::from_io(format_args!("opening export {name}"), &e))?;
            dirs.push(WorkerDir {
                guest_path: name.clone(),
                host_path: grant.host_path.clone(),
                fd: dir.as_fd().as_raw_fd(),
                read_only: *read_only,
            });
            opened.push(dir);
        }
        Ok((dirs, opened))
    }

    /// Bridges a started worker to its host until it ends (then sends its
    /// exit, after everything it sent) or the host is gone or drops it
    /// (then kills it).
    async fn serve_session(&self, session: Session, to_host: Link, mut opener: Opener) {
        let Session {
            req,
            // Held until the session (and so every child of its) ends.
            _ids: _lease,
            mut child,
            socket,
            reports,
            mut from_host,
            mut report_lines,
        } = session;
        let mut receiving = Receiving::new(to_host.clone());
        let mut senders = Vec::new();
        match channel_halves(socket) {
            Ok((read, write)) => {
                let (task, credits) = send_stream(read, to_host.clone(), stream::CHANNEL);
                receiving.credit(stream::CHANNEL, credits);
                receiving.channel_sink(write);
                senders.push(task);
            }
            Err(e) => {
                return self
                    .end_session(&to_host, child, format!("bridging: {e}"))
                    .await;
            }
        }
        for (id, reader) in [
            (stream::STDOUT, child.take_stdout()),
            (stream::STDERR, child.take_stderr()),
        ] {
            if let Some(pipe) = reader.and_then(|r| r.into_receiver().ok()) {
                let (task, credits) = send_stream(pipe, to_host.clone(), id);
                receiving.credit(id, credits);
                senders.push(task);
            }
        }
        let mut sent = Box::pin(async move {
            for task in senders {
                let _ = task.await;
            }
        });
        let mut ended = None;
        let mut check = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                e = child.reap(), if ended.is_none() => ended = Some(e),
                // Once the worker is gone, its streams end; then its exit.
                () = &mut sent, if ended.is_some() => break,
                Some(line) = report_lines.recv() => {
                    let _ = to_host.publish(&line).await;
                }
                m = from_host.next() => {
                    let Some(m) = m else { return };
                    let plain = match opener.open(&m.payload) {
                        Ok(plain) => plain,
                        Err(why) => {
                            self.drops.count(why, &m.subject);
                            continue;
                        }
                    };
                    let Some((&k, body)) = plain.split_first() else { continue };
                    match k {
                        kind::KILL => {
                            let _ = child.kill(body.first().copied().unwrap_or(9));
                        }
                        // The host dropped it: nobody to tell.
                        kind::CLOSE => return,
                        _ => {
                            if let Err(why) = receiving.handle(k, body) {
                                return self.end_session(&to_host, child, why).await;
                            }
                        }
                    }
                }
                _ = check.tick() => {
                    let seen = self.parents.heard(&req.parent);
                    if seen.is_none_or(|at| at.elapsed() > LOST_AFTER) {
                        tracing::warn!(target: "wasmproc::cluster", parent = %req.parent, "the forking host was lost: killing its worker");
                        return;
                    }
                }
            }
        }
        let trap = {
            let mut reports = reports.lock().unwrap_or_else(|e| e.into_inner());
            reports.drain();
            reports.trap.clone()
        };
        drop(reports);
        // The tee is gone with the reports: every line is queued now.
        while let Ok(line) = report_lines.try_recv() {
            let _ = to_host.publish(&line).await;
        }
        let ended = match ended {
            Some(Ok(ended)) => Ended::from(&Termination { trap, ..ended }),
            Some(Err(e)) => lost(format!("waiting for the worker: {e:?}")),
            None => lost("the worker was not waited for".into()),
        };
        self.send_exit(&to_host, &ended).await;
    }

    /// Kills the worker for `why` (a broken session) and tells its host.
    async fn end_session(&self, to_host: &Link, child: Child, why: String) {
        drop(child);
        self.send_exit(to_host, &lost(why)).await;
    }

    async fn send_exit(&self, to_host: &Link, ended: &Ended) {
        let exit = serde_json::to_vec(ended).expect("serializable");
        let _ = to_host.publish(&message(kind::EXIT, &exit)).await;
        let _ = self.client.flush().await;
    }
}

/// A worker the agent started, and what its session needs.
struct Session {
    req: ForkRequest,
    /// The user id this session's children run as, leased while it runs.
    _ids: Option<crate::launch::identity::IdLease>,
    child: Child,
    socket: std::os::unix::net::UnixStream,
    reports: Arc<Mutex<crate::worker::spec::Reports>>,
    from_host: async_nats::Subscriber,
    report_lines: mpsc::UnboundedReceiver<Bytes>,
}

/// The exit of a worker the agent ended itself.
fn lost(why: String) -> Ended {
    Ended {
        lost: Some(why),
        exited: None,
        signaled: Some(9),
        trap: None,
        user_cpu_ns: 0,
        system_cpu_ns: 0,
        max_rss_bytes: 0,
    }
}
