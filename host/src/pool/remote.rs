//! `fork` onto a cluster agent: the worker's policy is narrowed as for a
//! local fork (its budget lent from the guest's), the agent is asked to
//! run it (within its own policy too), and the session is wired to a
//! [`Worker`] whose channel and output are the local ones, bridged.

use crate::cluster::{
    Answer, ForkRequest, Opener, Remote, Session, SessionKeys, Started, from_wire, new_id,
};
use crate::ctx::ProcessCtx;
use crate::failure::Failure;
use crate::forked::{Worker, WorkerSite};
use crate::policy::{Denial, WorkerRequest};
use crate::stdio::StdioRequest;

/// `fork` with a placement other than `local`: the worker's policy is
/// narrowed as for a local fork (its budget lent from this guest's), sent
/// to the agent chosen, which runs it within its own policy.
pub(crate) async fn fork_remote(
    ctx: &mut ProcessCtx,
    component: &str,
    args: Vec<String>,
    request: &WorkerRequest,
    labels: &[String],
    [_, stdout, stderr]: [StdioRequest; 3],
) -> Result<Worker, Failure> {
    let Some(cluster) = ctx.workers.cluster.clone() else {
        return Err(Failure::Unsupported(
            "this host has joined no cluster: workers can only run on this machine".into(),
        ));
    };
    let grant = (ctx.policy.find_fork(component)).map_err(|d| ctx.deny(d))?;
    let name = grant.name.clone();
    let (policy, lent) = (ctx.policy.narrow(request, ctx.free())).map_err(|r| ctx.refuse(r))?;
    let stdout = remote_output("stdout", stdout)?;
    let stderr = remote_output("stderr", stderr)?;
    let slots = 1 + lent.live;
    ctx.check_budget(slots, 1 + lent.spawns)?;
    let agent = cluster.pick(labels).await?;
    let session = new_id();
    let request = ForkRequest {
        session: session.clone(),
        parent: cluster.id().to_owned(),
        component: name.clone(),
        args,
        env: request.env.clone(),
        dirs: request.dirs.clone(),
        policy,
        stdout: stdout.is_some(),
        stderr: stderr.is_some(),
        keys: SessionKeys::new(),
    };
    let (picked, agent) = (agent.clone(), agent.id);
    let (pid, from_worker, link) = match cluster.ask_fork(&picked, request).await? {
        Answer::Started {
            pid,
            from_worker,
            opener,
            link,
        } => (pid, (from_worker, *opener), link),
        Answer::Refused { code, message } => {
            let error = from_wire(&code, format!("agent {agent}: {message}"));
            if code == "access-denied" || code == "limit-exceeded" {
                ctx.deny(Denial::OnAgent {
                    agent: agent.clone(),
                    reason: message,
                });
            }
            return Err(error);
        }
    };
    ctx.budget.take(slots, 1 + lent.spawns);
    tracing::info!(target: "wasmproc::cluster", component = %name, %agent, pid,
        "the worker runs on agent {agent} (pid {pid} there)");
    if let Some(audit) = &ctx.audit {
        audit.record(
            "fork",
            serde_json::json!({ "pid": pid, "agent": agent, "component": name, "session": session }),
        );
    }
    // From here the worker runs on the agent: until the `Remote` holds
    // it, a failure must give back the slots and have the agent kill it.
    let mut guard = Started {
        to_worker: link,
        slots: Some((ctx.budget.live().clone(), slots)),
    };
    connect_remote(
        ctx,
        &mut guard,
        from_worker,
        (pid, name, agent),
        [stdout, stderr],
    )
}

/// Wires a started remote worker to this host: its channel, output and
/// reports; the slots pass from `started` to the worker.
fn connect_remote(
    ctx: &mut ProcessCtx,
    started: &mut Started,
    (from_worker, opener): (async_nats::Subscriber, Opener),
    (pid, name, agent): (u32, String, String),
    outputs: [Option<bool>; 2],
) -> Result<Worker, Failure> {
    let cluster = ctx
        .workers
        .cluster
        .clone()
        .expect("a remote fork has a cluster");
    let io = |what: &'static str| move |e: std::io::Error| Failure::from_io(what, &e);
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(io("creating the worker's channel"))?;
    let (report_read, report_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Failure::from_io("creating the worker's report pipe", &e.into()))?;
    let reports = crate::worker::spec::Reports::start(
        report_read,
        (pid, name),
        ctx.audit.clone(),
        ctx.reporter.clone(),
        None,
    )
    .map_err(io("watching the worker's reports"))?;
    let session = Session {
        from_worker,
        opener,
        pid,
        cluster,
        agent,
        channel: theirs,
        reports: std::fs::File::from(report_write),
    };
    let remote = Remote::open(session, started, outputs, |stderr| {
        ctx.inherited_output(stderr)
    })
    .map_err(io("bridging the worker's session"))?;
    Ok(Worker {
        channel: ctx.channel(ours)?,
        end: WorkerSite::Remote(remote),
        reports,
    })
}

/// What a worker output stream asked as `asked` needs from the agent:
/// `None` for /dev/null, else the stream back and whether it is for the
/// guest (`piped`) rather than the host's own (`inherit`).
fn remote_output(name: &str, asked: StdioRequest) -> Result<Option<bool>, Failure> {
    match asked {
        StdioRequest::Null => Ok(None),
        StdioRequest::Piped => Ok(Some(true)),
        StdioRequest::Inherit => Ok(Some(false)),
        StdioRequest::File { .. } | StdioRequest::PipeFrom(_) => {
            Err(Failure::InvalidArgument(format!(
                "a remote worker's {name} cannot be a local file or pipe: descriptors do not cross machines"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_output_can_be_null_piped_or_inherited_but_not_a_descriptor() {
        assert_eq!(remote_output("stdout", StdioRequest::Null).unwrap(), None);
        assert_eq!(
            remote_output("stdout", StdioRequest::Piped).unwrap(),
            Some(true)
        );
        assert_eq!(
            remote_output("stderr", StdioRequest::Inherit).unwrap(),
            Some(false)
        );
        let e = remote_output("stderr", StdioRequest::PipeFrom(Ok(None))).unwrap_err();
        assert!(
            matches!(&e, Failure::InvalidArgument(m) if m.contains("stderr")),
            "{e:?}"
        );
    }
}
