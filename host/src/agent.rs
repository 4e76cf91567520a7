//! A cluster agent (`wasmproc agent`): runs the workers that forking hosts
//! place on its machine, each within the agent's own policy — its
//! [`ProcessCtx`], whose grants, exported directories (its granted
//! directories, by guest name), limits and sandbox settings are the
//! ceiling of every request. See [`crate::cluster`] for the protocol.
//!
//! A request is checked with [`Policy::within`]; anything beyond is
//! refused (`access-denied`) and reported as a denial. An accepted worker
//! is started exactly as a local fork's ([`ProcessCtx::start_worker`]),
//! so it runs in the same sandbox; its channel, stdout, stderr and reports
//! are bridged to the host, its spawns audited here and there.

use crate::child::Child;
use crate::cluster::{
    ADVERTS, Advert, Ended, ForkReply, ForkRequest, HEARTBEAT, LOST_AFTER, NatsOptions, Receiving,
    channel_halves, fork_subject, is_id, kind, message, new_id, send_stream, session_subject,
    stream, to_wire,
};
use crate::ctx::ProcessCtx;
use crate::failure::Failure;
use crate::outcome::Termination;
use crate::policy::DirAccess;
use crate::policy::Policy;
use crate::policy::{Denial, Lent};
use crate::stdio::Asked;
use crate::worker::spec::{WorkerDir, WorkerSpec};
use anyhow::Result;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// A running agent.
pub struct Agent {
    id: String,
    labels: Vec<String>,
    client: async_nats::Client,
    ctx: Mutex<ProcessCtx>,
    /// When each forking host was last heard from.
    parents: Mutex<HashMap<String, Instant>>,
    /// The sessions running.
    sessions: Mutex<std::collections::HashSet<String>>,
}

impl Agent {
    /// Connects to NATS as an agent that runs workers within `ctx`'s
    /// policy, advertising `labels` (and `sha256:HEX` of each pinned
    /// program). Must be called inside a tokio runtime.
    pub async fn connect(
        nats: &NatsOptions,
        ctx: ProcessCtx,
        mut labels: Vec<String>,
    ) -> Result<Arc<Agent>> {
        let client = nats.connect("wasmproc agent").await?;
        labels.extend(ctx.policy.pinned_labels());
        Ok(Arc::new(Agent {
            id: new_id(),
            labels,
            client,
            ctx: Mutex::new(ctx),
            parents: Mutex::new(HashMap::new()),
            sessions: Mutex::new(Default::default()),
        }))
    }

    /// The agent's id, as it advertises it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Serves fork requests until the connection ends.
    pub async fn serve(self: Arc<Self>) -> Result<()> {
        // Its worker template and warm workers, before the first request.
        self.ctx().warm_up();
        let mut requests = self.client.subscribe(fork_subject(&self.id)).await?;
        let mut parents = self.client.subscribe("wasmproc.parent.*").await?;
        let hearing = {
            let agent = self.clone();
            tokio::spawn(async move {
                while let Some(m) = parents.next().await {
                    if let Some(id) = m.subject.strip_prefix("wasmproc.parent.") {
                        let mut parents = agent.parents();
                        parents.insert(id.to_owned(), Instant::now());
                        // Hosts long gone are forgotten.
                        if parents.len() > 1024 {
                            parents.retain(|_, at| at.elapsed() < LOST_AFTER * 10);
                        }
                    }
                }
            })
        };
        let advertising = {
            let agent = self.clone();
            tokio::spawn(async move {
                loop {
                    let advert = serde_json::to_vec(&agent.advert()).expect("serializable");
                    let _ = agent.client.publish(ADVERTS, advert.into()).await;
                    tokio::time::sleep(HEARTBEAT).await;
                }
            })
        };
        tracing::info!(target: "wasmproc::cluster", id = %self.id, "agent serving");
        while let Some(request) = requests.next().await {
            let agent = self.clone();
            tokio::spawn(async move { agent.fork(request).await });
        }
        hearing.abort();
        advertising.abort();
        Ok(())
    }

    fn parents(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.parents.lock().unwrap_or_else(|e| e.into_inner())
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
        }
    }

    /// Answers one fork request, then serves the session it starts.
    async fn fork(self: Arc<Self>, request: async_nats::Message) {
        let Some(reply_to) = request.reply.clone() else {
            return;
        };
        let started = match serde_json::from_slice::<ForkRequest>(&request.payload) {
            Ok(req) => self.start(req).await,
            Err(e) => Err(Failure::InvalidArgument(format!("a bad fork request: {e}"))),
        };
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
        let _ = self.client.publish(reply_to, reply.into()).await;
        // The agent's own warm workers (`--warm-workers`) and template,
        // refilled once the host has its answer.
        self.ctx().refill();
        if let Ok(session) = started {
            let id = session.req.session.clone();
            self.serve_session(session).await;
            self.sessions().remove(&id);
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the worker `req` asks for, within this agent's policy, and
    /// listens to its host's messages (before the host hears of it).
    async fn start(&self, req: ForkRequest) -> Result<Session, Failure> {
        // Ids become parts of NATS subjects; and a session is one host's.
        if let Some(id) = [&req.session, &req.parent]
            .into_iter()
            .find(|id| !is_id(id))
        {
            return Err(Failure::InvalidArgument(format!(
                "`{id}` is not a session or host id"
            )));
        }
        if !self.sessions().insert(req.session.clone()) {
            return Err(Failure::InvalidArgument(format!(
                "session {} is taken",
                req.session
            )));
        }
        let from_host = self
            .client
            .subscribe(session_subject(&req.session, true))
            .await
            .map_err(|e| Failure::Io(format!("subscribing to the session: {e}")));
        let session = req.session.clone();
        let started = from_host.and_then(|from_host| self.launch(req, from_host));
        if started.is_err() {
            self.sessions().remove(&session);
        }
        started
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
        let output = |piped: bool| if piped { Asked::Piped } else { Asked::Null };
        let stdio = [Asked::Null, output(req.stdout), output(req.stderr)];
        let started = ctx.start_worker(spec, opened, lent, stdio, Some(tee))?;
        drop(ctx);
        self.parents().insert(req.parent.clone(), Instant::now());
        Ok(Session {
            req,
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
    async fn serve_session(&self, session: Session) {
        let Session {
            req,
            mut child,
            socket,
            reports,
            mut from_host,
            mut report_lines,
        } = session;
        let to_host = session_subject(&req.session, false);
        let mut receiving = Receiving::new(self.client.clone(), to_host.clone());
        let mut senders = Vec::new();
        match channel_halves(socket) {
            Ok((read, write)) => {
                let (task, credits) =
                    send_stream(read, self.client.clone(), to_host.clone(), stream::CHANNEL);
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
                let (task, credits) = send_stream(pipe, self.client.clone(), to_host.clone(), id);
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
                    let _ = self.client.publish(to_host.clone(), line).await;
                }
                m = from_host.next() => {
                    let Some(m) = m else { return };
                    let Some((&k, body)) = m.payload.split_first() else { continue };
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
                    let seen = self.parents().get(&req.parent).copied();
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
            let _ = self.client.publish(to_host.clone(), line).await;
        }
        let ended = match ended {
            Some(Ok(ended)) => Ended::from(&Termination { trap, ..ended }),
            Some(Err(e)) => lost(format!("waiting for the worker: {e:?}")),
            None => lost("the worker was not waited for".into()),
        };
        self.send_exit(&to_host, &ended).await;
    }

    /// Kills the worker for `why` (a broken session) and tells its host.
    async fn end_session(&self, to_host: &str, child: Child, why: String) {
        drop(child);
        self.send_exit(to_host, &lost(why)).await;
    }

    async fn send_exit(&self, to_host: &str, ended: &Ended) {
        let exit = serde_json::to_vec(ended).expect("serializable");
        let _ = (self.client)
            .publish(to_host.to_owned(), message(kind::EXIT, &exit))
            .await;
        let _ = self.client.flush().await;
    }
}

/// A worker the agent started, and what its session needs.
struct Session {
    req: ForkRequest,
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

impl Policy {
    /// This policy (a forking host's request, narrowed by it) within
    /// `ceiling` (an agent's own): every program, shell, component and
    /// environment name must be one the ceiling grants too (its grants are
    /// used: they name the agent's binaries), a pinned program must be
    /// pinned to the same digest there; limits are the lower of the two;
    /// confinement the agent's, required if either requires it; network
    /// only if both allow it; the user ids the agent's. Else the denial.
    pub(crate) fn within(&self, ceiling: &Policy) -> Result<Policy, Denial> {
        let same = |ours: &crate::policy::ProgramGrant,
                    theirs: &crate::policy::ProgramGrant|
         -> Result<crate::policy::ProgramGrant, Denial> {
            match (&ours.pin, &theirs.pin) {
                (Some((want, _)), Some((have, _))) if want != have => {
                    Err(Denial::PinMismatch(ours.name.clone()))
                }
                (Some(_), None) => Err(Denial::PinMismatch(ours.name.clone())),
                _ => Ok(theirs.clone()),
            }
        };
        let programs = (self.programs.iter())
            .map(|p| same(p, ceiling.find_program(&p.name)?))
            .collect::<Result<Vec<_>, _>>()?;
        let shells = (self.shells.iter())
            .map(|s| {
                let theirs = (ceiling.shells.iter()).find(|c| c.name == s.name);
                same(s, theirs.ok_or(Denial::ShellName(s.name.clone()))?)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let forks = (self.forks.iter())
            .map(|f| Ok(ceiling.find_fork(&f.name)?.clone()))
            .collect::<Result<Vec<_>, Denial>>()?;
        if let Some(name) = (self.allowed_env.iter()).find(|n| !ceiling.allowed_env.contains(*n)) {
            return Err(Denial::EnvName(name.clone()));
        }
        // The host's own id for its children means nothing here: only an
        // id the guest asked for is checked against the agent's.
        let asked = (self.child_id_asked).then_some(self.child_id);
        let child_id = match ceiling.check_user(asked.map(|id| id.0), asked.map(|id| id.1))? {
            Some(id) => id,
            None => ceiling.child_id,
        };
        Ok(Policy {
            programs,
            shells,
            forks,
            allowed_env: self.allowed_env.clone(),
            injection_env: (self.injection_env)
                .intersection(&ceiling.injection_env)
                .cloned()
                .collect(),
            limits: self.limits.lower(&ceiling.limits),
            channel_spin: ceiling.channel_spin,
            confine: ceiling.confine,
            network: self.network && ceiling.network,
            require_confinement: self.require_confinement || ceiling.require_confinement,
            use_sandbox: ceiling.use_sandbox,
            child_id,
            child_id_asked: self.child_id_asked,
            allowed_uids: (self.allowed_uids)
                .intersection(&ceiling.allowed_uids)
                .copied()
                .collect(),
            allowed_gids: (self.allowed_gids)
                .intersection(&ceiling.allowed_gids)
                .copied()
                .collect(),
            use_cgroup: ceiling.use_cgroup,
            cgroup_per_child: self.cgroup_per_child || ceiling.cgroup_per_child,
            keep_caps: self.keep_caps & ceiling.keep_caps,
            warm_workers: 0,
            // A remote worker is a nested one: no template of its own.
            worker_template: false,
        })
    }

    /// `sha256:HEX` of each pinned program, for an agent's labels.
    fn pinned_labels(&self) -> Vec<String> {
        (self.programs.iter())
            .filter_map(|p| p.pin.as_ref())
            .map(|(digest, _)| format!("sha256:{}", crate::hex::hex(digest)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! A forking host's request within an agent's policy, without wasm,
    //! processes or NATS.
    use super::*;
    use crate::policy::Limits;

    fn policy(build: impl FnOnce(&mut crate::ctx::ProcessCtxBuilder)) -> Policy {
        let mut b = ProcessCtx::builder();
        b.confine(false);
        build(&mut b);
        b.build().policy().clone()
    }

    #[test]
    fn a_request_gets_the_agents_own_grants_of_what_it_names() {
        let agent = policy(|b| {
            b.allow_program("/bin/true").unwrap();
            b.allow_program("/bin/sh").unwrap();
        });
        let host = policy(|b| {
            b.allow_program("/usr/bin/true").unwrap();
        });
        let got = host.within(&agent).unwrap();
        let paths: Vec<_> = got.programs.iter().map(|p| p.path.clone()).collect();
        assert_eq!(paths, [std::path::PathBuf::from("/bin/true")]);
    }

    #[test]
    fn anything_beyond_the_agents_policy_is_denied() {
        let agent = policy(|b| {
            b.allow_program("/bin/true").unwrap();
            b.allow_env("LANG").unwrap();
        });
        let program = policy(|b| {
            b.allow_program("/bin/sh").unwrap();
        });
        assert_eq!(
            program.within(&agent).unwrap_err(),
            Denial::Program("sh".into())
        );
        let env = policy(|b| {
            b.allow_env("HOME").unwrap();
        });
        assert_eq!(
            env.within(&agent).unwrap_err(),
            Denial::EnvName("HOME".into())
        );
        let shell = policy(|b| {
            b.allow_shell("/bin/sh").unwrap();
        });
        assert_eq!(
            shell.within(&agent).unwrap_err(),
            Denial::ShellName("sh".into())
        );
    }

    #[test]
    fn a_pinned_program_runs_only_where_it_is_pinned_to_the_same_digest() {
        use sha2::{Digest, Sha256};
        let hex: String = Sha256::digest(std::fs::read("/bin/true").unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let pinned = policy(|b| {
            b.allow_program_pinned("/bin/true", &hex).unwrap();
        });
        let unpinned = policy(|b| {
            b.allow_program("/bin/true").unwrap();
        });
        assert_eq!(
            pinned.within(&unpinned).unwrap_err(),
            Denial::PinMismatch("true".into())
        );
        assert!(pinned.within(&pinned).is_ok());
        assert_eq!(pinned.pinned_labels(), [format!("sha256:{hex}")]);
    }

    #[test]
    fn a_default_timeout_is_never_above_the_lower_maximum() {
        let hour = std::time::Duration::from_secs(3600);
        let ten = std::time::Duration::from_secs(10);
        let host = Limits {
            default_timeout: Some(hour),
            ..Limits::default()
        };
        let agent = Limits {
            max_timeout: Some(ten),
            ..Limits::default()
        };
        let got = host.lower(&agent);
        assert_eq!(
            (got.default_timeout, got.max_timeout),
            (Some(ten), Some(ten))
        );
    }

    #[test]
    fn limits_are_the_lower_of_both_and_network_needs_both() {
        let agent = policy(|b| {
            b.limits(Limits {
                max_live_children: 4,
                max_buffer: 1 << 30,
                ..Limits::default()
            })
            .allow_network(false);
        });
        let host = policy(|b| {
            b.limits(Limits {
                max_live_children: 10,
                max_buffer: 1 << 10,
                max_timeout: Some(std::time::Duration::from_secs(3)),
                ..Limits::default()
            })
            .allow_network(true)
            .require_confinement(true);
        });
        let got = host.within(&agent).unwrap();
        assert_eq!(got.limits.max_live_children, 4);
        assert_eq!(got.limits.max_buffer, 1 << 10);
        assert_eq!(
            got.limits.max_timeout,
            Some(std::time::Duration::from_secs(3))
        );
        assert!(!got.network && got.require_confinement);
    }
}
