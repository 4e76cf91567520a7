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

use crate::bindings::types::{ErrorCode, Termination};
use crate::cluster::{
    ADVERTS, Advert, Bridge, Ended, ForkReply, ForkRequest, HEARTBEAT, LOST_AFTER, NatsOptions,
    fork_subject, kind, message, new_id, session_subject, to_wire,
};
use crate::ctx::DirAccess;
use crate::policy::{Denial, Lent};
use crate::spawn::{Asked, Child};
use crate::worker::{WorkerDir, WorkerSpec};
use crate::{Policy, ProcessCtx};
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
        }))
    }

    /// The agent's id, as it advertises it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Serves fork requests until the connection ends.
    pub async fn serve(self: Arc<Self>) -> Result<()> {
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
            Ok(req) => self.start(req),
            Err(e) => Err(ErrorCode::InvalidArgument(format!(
                "a bad fork request: {e}"
            ))),
        };
        let reply = match &started {
            Ok((_, child, _, _)) => ForkReply::Started { pid: child.pid() },
            Err(e) => {
                let (code, message) = to_wire(e);
                ForkReply::Refused { code, message }
            }
        };
        let reply = serde_json::to_vec(&reply).expect("serializable");
        let _ = self.client.publish(reply_to, reply.into()).await;
        if let Ok((req, child, bridge, reports)) = started {
            self.serve_session(req, child, bridge, reports).await;
        }
    }

    /// Starts the worker `req` asks for, within this agent's policy.
    #[allow(clippy::type_complexity)]
    fn start(
        &self,
        req: ForkRequest,
    ) -> Result<
        (
            ForkRequest,
            Child,
            (Bridge, mpsc::Receiver<Bytes>),
            Arc<Mutex<crate::worker::Reports>>,
        ),
        ErrorCode,
    > {
        // Ids become parts of NATS subjects: only ones such as `new_id`
        // makes, never a wildcard or a `.`.
        for id in [&req.session, &req.parent] {
            if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(ErrorCode::InvalidArgument(format!(
                    "`{id}` is not a session or host id"
                )));
            }
        }
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
        let lent = Lent { live, spawns: 0 };
        let spec = WorkerSpec {
            component,
            args: req.args.clone(),
            env: req.env.clone(),
            dirs,
            policy,
            report_fd: None,
            stdio: None,
            sandbox: None,
        };
        // Everything the worker sends goes through one queue, so that its
        // exit comes after its last message, output and report.
        let (queue, outgoing) = mpsc::channel::<Bytes>(256);
        let tee: crate::worker::Tee = {
            let queue = queue.clone();
            Box::new(move |line: &[u8]| {
                let _ = queue.try_send(message(kind::REPORT, line));
            })
        };
        let output = |piped: bool| if piped { Asked::Piped } else { Asked::Null };
        let stdio = [Asked::Null, output(req.stdout), output(req.stderr)];
        let started = ctx.start_worker(spec, opened, lent, stdio, Some(tee))?;
        drop(ctx);
        let bridge = Bridge::start(
            started.socket,
            self.client.clone(),
            session_subject(&req.session, false),
        )
        .map_err(|e| ErrorCode::from_io("bridging the worker's channel", &e))?;
        self.parents().insert(req.parent.clone(), Instant::now());
        drop(queue);
        Ok((req, started.child, (bridge, outgoing), started.reports))
    }

    /// The directories `asked` (export names, read-only or not) as a
    /// worker holds them, opened.
    fn exports(
        &self,
        ctx: &ProcessCtx,
        asked: &[(String, bool)],
    ) -> Result<(Vec<WorkerDir>, Vec<cap_std::fs::Dir>), ErrorCode> {
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
                .map_err(|e| ErrorCode::from_io(format_args!("opening export {name}"), &e))?;
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
    /// exit) or the host is gone or drops it (then kills it).
    async fn serve_session(
        &self,
        req: ForkRequest,
        mut child: Child,
        (bridge, mut outgoing): (Bridge, mpsc::Receiver<Bytes>),
        reports: Arc<Mutex<crate::worker::Reports>>,
    ) {
        let to_host = session_subject(&req.session, false);
        let mut from_host = match self
            .client
            .subscribe(session_subject(&req.session, true))
            .await
        {
            Ok(s) => s,
            Err(_) => return,
        };
        let Bridge {
            outbound,
            mut inbound,
        } = bridge;
        let (queue, more) = mpsc::channel::<Bytes>(256);
        let pumps = [
            child
                .take_stdout()
                .map(|r| pump(r, kind::STDOUT, queue.clone())),
            child
                .take_stderr()
                .map(|r| pump(r, kind::STDERR, queue.clone())),
        ];
        drop(queue);
        let publisher = {
            let (client, subject) = (self.client.clone(), to_host.clone());
            tokio::spawn(async move {
                let mut more = more;
                loop {
                    let m = tokio::select! {
                        m = outgoing.recv() => m,
                        m = more.recv() => m,
                    };
                    match m {
                        Some(m) => {
                            let _ = client.publish(subject.clone(), m).await;
                        }
                        None => {
                            // One closed: drain the other.
                            while let Some(m) = more.recv().await {
                                let _ = client.publish(subject.clone(), m).await;
                            }
                            while let Some(m) = outgoing.recv().await {
                                let _ = client.publish(subject.clone(), m).await;
                            }
                            return;
                        }
                    }
                }
            })
        };
        let mut check = tokio::time::interval(HEARTBEAT);
        let ended = loop {
            tokio::select! {
                ended = child.reap() => break ended.ok(),
                m = from_host.next() => {
                    let Some(m) = m else { break None };
                    let Some((&k, body)) = m.payload.split_first() else { continue };
                    match k {
                        kind::KILL => {
                            let _ = child.kill(body.first().copied().unwrap_or(9));
                        }
                        kind::CLOSE => break None,
                        _ => {
                            if inbound.handle(k, body).await.is_err() {
                                break None;
                            }
                        }
                    }
                }
                _ = check.tick() => {
                    let seen = self.parents().get(&req.parent).copied();
                    if seen.is_none_or(|at| at.elapsed() > LOST_AFTER) {
                        tracing::warn!(target: "wasmproc::cluster", parent = %req.parent, "the forking host was lost: killing its worker");
                        break None;
                    }
                }
            }
        };
        let Some(ended) = ended else {
            // Dropping the child kills the worker's process group.
            drop(child);
            outbound.abort();
            publisher.abort();
            return;
        };
        // The worker is gone: its channel, output and reports end now.
        let _ = outbound.await;
        for pump in pumps.into_iter().flatten() {
            let _ = pump.await;
        }
        let trap = {
            let mut reports = reports.lock().unwrap_or_else(|e| e.into_inner());
            reports.drain();
            reports.trap.clone()
        };
        drop(reports);
        let _ = publisher.await;
        let ended = Termination { trap, ..ended };
        let exit = serde_json::to_vec(&Ended::from(&ended)).expect("serializable");
        let _ = self
            .client
            .publish(to_host, message(kind::EXIT, &exit))
            .await;
        let _ = self.client.flush().await;
    }
}

/// Sends what `reader` gives as `k` messages into `queue`, then an empty
/// one for the end.
fn pump(
    mut reader: crate::pipe::PipeReader,
    k: u8,
    queue: mpsc::Sender<Bytes>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(chunk) = reader.next_chunk().await {
            if queue.send(message(k, &chunk)).await.is_err() {
                return;
            }
        }
        let _ = queue.send(message(k, &[])).await;
    })
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
        let forks_empty = forks.is_empty();
        if let Some(name) = (self.allowed_env.iter()).find(|n| !ceiling.allowed_env.contains(*n)) {
            return Err(Denial::EnvName(name.clone()));
        }
        let child_id = match ceiling.check_user(Some(self.child_id.0), Some(self.child_id.1))? {
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
            warm_workers: if forks_empty { 0 } else { ceiling.warm_workers },
        })
    }

    /// `sha256:HEX` of each pinned program, for an agent's labels.
    fn pinned_labels(&self) -> Vec<String> {
        (self.programs.iter())
            .filter_map(|p| p.pin.as_ref())
            .map(|(digest, _)| {
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                format!("sha256:{hex}")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! A forking host's request within an agent's policy, without wasm,
    //! processes or NATS.
    use super::*;
    use crate::Limits;

    fn policy(build: impl FnOnce(&mut crate::ProcessCtxBuilder)) -> Policy {
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
