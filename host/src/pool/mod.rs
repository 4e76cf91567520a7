//! The worker pool of a guest: starting worker processes for `fork` (a
//! warm one, one forked by the guest's worker template, or one started
//! from the worker executable), the compiled code and sandbox each gets,
//! and narrowing a request into a worker's specification. The WIT glue
//! (`fork`) calls [`ProcessCtx::start_worker`]; so does a cluster agent.

mod remote;
pub(crate) mod template;
#[cfg(test)]
mod tests;
pub(crate) mod workers;

pub(crate) use remote::fork_remote;
pub(crate) use template::Template;
use template::{
    EARLY_SPEC_MAX, IdleRole, SendSpec, TEMPLATE_STARTS, TEMPLATE_TIMEOUT, no_worker_executable,
    take_back, worker_args, worker_channel,
};

use crate::channel::Channel;
use crate::child::Child;
use crate::code::Code;
use crate::ctx::ProcessCtx;
use crate::failure::Failure;
use crate::launch::remote::service::{self, Rights};
use crate::policy::Policy;
use crate::policy::{Denial, DirAccess, DirGrant, Headroom, Lent, Prepared, WorkerRequest};
use crate::stdio::StdioRequest;
use crate::worker::spec::{CodeRef, HOST_ENV, LaunchRef, WorkerDir, WorkerSpec};
use cap_std::fs::Dir;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A worker's launcher, as it is set up ([`ProcessCtx::worker_launch`]).
struct WorkerLaunch {
    /// The worker's end of its launch socket.
    theirs: std::os::fd::OwnedFd,
    /// How the launcher confines the worker's children.
    level: crate::outcome::Confinement,
    /// This host's end and the worker's rights, to serve once the worker
    /// runs (`None`: another launcher serves it).
    served: Option<Served>,
}

/// What this host serves a worker's launch socket with.
struct Served {
    ours: UnixStream,
    rights: Rights,
}

impl Served {
    /// Starts serving, handing the audit events of the worker's children
    /// to the worker's `reports` as the worker's own lines are, so that
    /// they are tagged with the worker and reach whoever forked it (a
    /// cluster host too), but never through the worker's pipe, which the
    /// worker could garble.
    fn serve(
        mut self,
        services: &Arc<service::Services>,
        reports: &Arc<std::sync::Mutex<crate::worker::spec::Reports>>,
    ) -> Result<(), Failure> {
        let fail = |e: std::io::Error| Failure::from_io("starting the worker's launcher", &e);
        let lines = crate::worker::spec::ReportLines(reports.clone());
        self.rights.launcher.audit = Some(crate::audit::AuditLog::new(lines));
        let rights = Arc::new(std::sync::Mutex::new(self.rights));
        (services.serve(self.ours, rights, service::Account::new())).map_err(fail)
    }
}

/// The directory grants of a worker's directories `dirs`, as this host
/// opened them (`opened`).
fn worker_grants(dirs: &[WorkerDir], opened: &[Dir]) -> std::io::Result<Vec<DirGrant>> {
    (dirs.iter().zip(opened))
        .map(|(d, dir)| {
            Ok(DirGrant {
                guest_path: PathBuf::from(&d.guest_path),
                host_path: d.host_path.clone(),
                dir: Arc::new(dir.try_clone()?),
                access: match d.read_only {
                    true => DirAccess::ReadOnly,
                    false => DirAccess::ReadWrite,
                },
            })
        })
        .collect()
}

impl ProcessCtx {
    /// What this guest has free of its budgets, not counting the worker
    /// about to be forked.
    pub(crate) fn free(&self) -> Headroom {
        self.budget.free(&self.policy.limits)
    }

    /// The worker specification for `options`, with the directories opened,
    /// if every capability asked for is one this guest holds (see
    /// [`Policy::narrow`]); and what the worker is lent of this guest's
    /// budgets.
    pub(crate) fn narrow(
        &self,
        component: PathBuf,
        args: Vec<String>,
        request: &WorkerRequest,
    ) -> Result<(WorkerSpec, Vec<Dir>, Lent), Failure> {
        let (mut policy, lent) =
            (self.policy.narrow(request, self.free())).map_err(|r| self.refuse(r))?;
        // A worker never confines its children less than its parent.
        policy.require_confinement |= self.confinement() == crate::outcome::Confinement::Full;
        let mut opened = Vec::new();
        let mut dirs = Vec::new();
        for (path, read_only) in &request.dirs {
            let (dir, host_path) = self.narrow_dir(path, *read_only)?;
            dirs.push(WorkerDir {
                guest_path: path.clone(),
                host_path,
                fd: dir.as_fd().as_raw_fd(),
                read_only: *read_only,
            });
            opened.push(dir);
        }
        let spec = WorkerSpec::new(component, (args, request.env.clone()), dirs, policy);
        Ok((spec, opened, lent))
    }

    /// Opens directory `path` to pass on, if this guest holds it (and holds
    /// it writable unless `read_only`).
    fn narrow_dir(&self, path: &str, read_only: bool) -> Result<(Dir, PathBuf), Failure> {
        let (grant, rest, dir) = crate::policy::open_granted_dir(
            &self.dirs,
            path,
            "directory",
            || Denial::ForkDir(path.to_owned()),
            |_| Denial::ForkDir(path.to_owned()),
        )
        .map_err(|r| self.refuse(r))?;
        if grant.access == DirAccess::ReadOnly && !read_only {
            return Err(self.deny(Denial::ReadOnlyDir(path.to_owned())));
        }
        let host_path = grant.host_path_of(&rest);
        if let Some(guard) = &self.cache_guard {
            (guard.check_open(&dir, &host_path))
                .map_err(|e| Failure::AccessDenied(format!("{e:#}")))?;
        }
        Ok((dir, host_path))
    }
}

/// A worker process started on this machine, before its channel is
/// wrapped: the host's end of the channel socket (the specification
/// already written to it), the process, and its reports.
pub(crate) struct StartedWorker {
    pub socket: std::os::unix::net::UnixStream,
    pub child: Child,
    pub reports: std::sync::Arc<std::sync::Mutex<crate::worker::spec::Reports>>,
}

impl ProcessCtx {
    /// Starts the worker for `spec` (its directories `dirs` open), lent
    /// `lent`, with stdio as asked: the common part of a local `fork` and a
    /// cluster agent's. The process is a warm one from the pool if there
    /// is one (see [`warm_up`](Self::warm_up)), else a new one; either way
    /// it gets its specification and every descriptor it names over its
    /// channel. `tee` also gets each report line.
    pub(crate) fn start_worker(
        &mut self,
        mut spec: WorkerSpec,
        dirs: Vec<Dir>,
        lent: Lent,
        [_, stdout, stderr]: [StdioRequest; 3],
        tee: Option<crate::worker::spec::Tee>,
    ) -> Result<StartedWorker, Failure> {
        let (slots, spawns) = (1 + lent.live, 1 + lent.spawns);
        // A warm worker holds its own slot already.
        self.workers.drop_dead_warm_workers();
        let held = usize::from(!self.workers.warm.is_empty());
        self.check_budget(slots - held, spawns)?;
        let codes = self.tree_code(&spec)?;
        let launch = self.worker_launch(&spec.policy, &spec.dirs, &dirs)?;
        let (out, out_reader, mut forwarders) = self.worker_output("stdout", stdout)?;
        let (err, err_reader, more) = self.worker_output("stderr", stderr)?;
        forwarders.extend(more);
        let (reports, report_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| Failure::from_io("creating the worker's report pipe", &e.into()))?;
        let mut passed = vec![report_end.as_fd(), out.as_fd(), err.as_fd()];
        spec.report_fd = Some(0);
        spec.stdio = Some((1, 2));
        for (dir, opened) in spec.dirs.iter_mut().zip(&dirs) {
            passed.push(opened.as_fd());
            dir.fd = (passed.len() - 1) as RawFd;
        }
        for (component, code) in &codes {
            passed.push(code.fd());
            spec.code.push(CodeRef {
                component: component.clone(),
                key: code.key.clone(),
                fd: (passed.len() - 1) as RawFd,
            });
        }
        if let Some(launch) = &launch {
            passed.push(launch.theirs.as_fd());
            spec.launch = Some(LaunchRef {
                fd: (passed.len() - 1) as RawFd,
                level: launch.level,
            });
        }
        let started = serde_json::to_vec(&spec)
            .map_err(|e| Failure::Io(format!("encoding the worker specification: {e}")))
            .and_then(|json| {
                self.idle_worker(
                    &|socket| crate::channel::send_frame_with_fds(socket, &json, &passed),
                    json.len(),
                )
            });
        // The worker has its copies now (or there is none).
        drop(passed);
        let (mut child, socket, held) = started?;
        child.count(slots - held);
        self.worker_deadline(&mut child)?;
        self.budget.spawned(spawns);
        child.attach(out_reader, err_reader, forwarders);
        drop((dirs, report_end, out, err));
        let component = (spec.component.file_name())
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        if let Some(audit) = &self.audit {
            audit.record(
                "fork",
                serde_json::json!({ "pid": child.pid(), "component": component, "lent": { "live": lent.live, "spawns": lent.spawns } }),
            );
        }
        let reports = crate::worker::spec::Reports::start(
            reports,
            (child.pid(), component),
            self.audit.clone(),
            self.reporter.clone(),
            tee,
        )
        .map_err(|e| Failure::from_io("watching the worker's reports", &e))?;
        // (Its requests wait in the socket until then.)
        if let Some(served) = launch.and_then(|l| l.served) {
            served.serve(&self.launcher.services, &reports)?;
        }
        Ok(StartedWorker {
            socket,
            child,
            reports,
        })
    }

    /// Gives the worker `child` this guest's maximum timeout as its
    /// deadline, if there is one: the operator's cap on how long any child
    /// runs holds for workers too (SIGTERM, then SIGKILL after the grace).
    fn worker_deadline(&self, child: &mut Child) -> Result<(), Failure> {
        let limits = &self.policy.limits;
        let Some(after) = limits.max_timeout else {
            return Ok(());
        };
        let timeout = crate::child::Timeout {
            after,
            signal: rustix::process::Signal::TERM,
            grace: limits.kill_grace,
        };
        (child.set_deadline(timeout))
            .map_err(|e| Failure::from_io("setting the worker's deadline", &e))
    }

    /// The launcher of the children of a worker holding `policy` and
    /// directories `dirs` (`opened`): this host, serving the worker's
    /// socket with the worker's own rights (see [`crate::launch::remote`]);
    /// or, for a worker's worker, a socket of its own from the launcher of
    /// this worker. `None` when the worker may start no child.
    fn worker_launch(
        &mut self,
        policy: &Policy,
        dirs: &[WorkerDir],
        opened: &[Dir],
    ) -> Result<Option<WorkerLaunch>, Failure> {
        let programs = policy.runnable();
        if programs.is_empty() {
            return Ok(None);
        }
        let fail = |e: std::io::Error| Failure::from_io("setting up the worker's launcher", &e);
        if let Some(remote) = &self.launcher.remote {
            let dirs = (dirs.iter())
                .map(|d| (d.guest_path.clone(), d.read_only))
                .collect();
            let (theirs, level) = remote.connect(policy, dirs)?;
            return Ok(Some(WorkerLaunch {
                theirs,
                level,
                served: None,
            }));
        }
        let grants = worker_grants(dirs, opened).map_err(fail)?;
        let view = (policy.confine && policy.use_sandbox)
            .then(|| (self.launcher).view(&grants, &programs, (policy.network, policy.child_id)))
            .flatten();
        let launcher = self.launcher.for_worker(policy, &grants, view, None);
        let level = launcher.layers(policy, true, None).level();
        let (ours, theirs) = UnixStream::pair().map_err(fail)?;
        let rights = Rights {
            policy: policy.clone(),
            dirs: grants,
            launcher,
        };
        Ok(Some(WorkerLaunch {
            theirs: theirs.into(),
            level,
            served: Some(Served { ours, rights }),
        }))
    }

    /// The compiled code of `spec`'s component and of each component it
    /// may fork in turn, compiled now if need be (see [`crate::code`]).
    fn tree_code(&self, spec: &WorkerSpec) -> Result<Vec<(PathBuf, Code)>, Failure> {
        let Some(source) = &self.workers.code else {
            return Err(no_worker_executable());
        };
        let mut paths = vec![&spec.component];
        for fork in &spec.policy.forks {
            if !paths.contains(&&fork.path) {
                paths.push(&fork.path);
            }
        }
        let code = |path: &PathBuf| match source.code(path, true) {
            Ok(Some(code)) => Ok((path.clone(), code)),
            Ok(None) => Err(Failure::Io(format!(
                "no compiled code of {} was handed to this worker",
                path.display()
            ))),
            Err(e) => Err(Failure::Io(format!(
                "cannot compile {} for its worker: {e:#}",
                path.display()
            ))),
        };
        paths.into_iter().map(code).collect()
    }

    /// The compiled code, where it is at hand without compiling, of each
    /// component the guest may fork: what a warm worker or the template
    /// loads before its specification comes.
    fn preload_code(&self) -> Vec<Code> {
        let Some(source) = &self.workers.code else {
            return Vec::new();
        };
        (self.policy.forks.iter())
            .filter_map(|fork| match source.code(&fork.path, false) {
                Ok(code) => code,
                Err(e) => {
                    tracing::warn!(component = %fork.path.display(), error = %format!("{e:#}"),
                        "cannot preload a component's code");
                    None
                }
            })
            .collect()
    }

    /// Starts the worker template if the guest may fork and has none
    /// running (see [`ProcessCtxBuilder::worker_template`]), then warm
    /// workers until the pool holds the policy's `warm_workers`: worker
    /// processes that have started and set up their engine, and wait,
    /// holding nothing, for a specification. A failure only leaves the pool
    /// smaller (the next fork starts a worker itself). Must be called
    /// inside a tokio runtime. Called before the guest starts, and (through
    /// `refill`, only after a fork took a warm worker or lost the template)
    /// to refill
    /// the pool when the guest next waits for a worker (`receive`,
    /// `subscribe`, `wait`), not in `fork` itself: the new process then
    /// starts while the forked one does.
    ///
    /// [`ProcessCtxBuilder::worker_template`]: crate::ctx::ProcessCtxBuilder::worker_template
    pub fn warm_up(&mut self) {
        if self.policy.forks.is_empty() {
            return;
        }
        self.start_template();
        self.workers.drop_dead_warm_workers();
        while self.workers.warm.len() < self.policy.warm_workers {
            // Each holds a live-children slot: the guest's budget covers
            // every process it has.
            if self.check_budget(1, 0).is_err() {
                return;
            }
            match self.new_idle_worker(IdleRole::Warm) {
                Ok((child, socket)) => {
                    child.count(1);
                    self.workers.warm.push((child, socket));
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "cannot start a warm worker");
                    return;
                }
            }
        }
    }

    /// [`warm_up`](Self::warm_up), if a fork since the last one took a warm
    /// worker or lost the template: what the guest's waits call, so that
    /// a wait costs nothing more otherwise.
    pub(crate) fn refill(&mut self) {
        if std::mem::take(&mut self.workers.refill_due) {
            self.warm_up();
        }
    }

    /// Waits (without blocking the thread) until the worker template, if
    /// one is starting and no warm worker is there to take, is ready, has
    /// ended, or is dropped for not being ready [`TEMPLATE_TIMEOUT`] after
    /// it started: a fork right after the guest started then costs the
    /// template's remaining start (an executable started for it would take
    /// longer) and a fork of it, rather than a second process start
    /// competing with the template's for the same cores.
    pub(crate) async fn template_started(&mut self) {
        if !self.workers.warm.is_empty() {
            return;
        }
        while let Some(template) = &mut self.workers.template
            && !template.is_ready()
        {
            if !matches!(template.child.try_status(), Ok(None)) {
                return;
            }
            if template.started.elapsed() > TEMPLATE_TIMEOUT {
                tracing::warn!(
                    pid = template.child.pid(),
                    "dropping a worker template that was not ready in time"
                );
                self.workers.template = None;
                self.workers.refill_due = true;
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Starts the worker template, unless there is one running, it is
    /// turned off, the guest may not fork, or it was started
    /// [`TEMPLATE_STARTS`] times already.
    fn start_template(&mut self) {
        let policy = &self.policy;
        if !policy.worker_template
            || policy.forks.is_empty()
            || self.workers.executable.is_none()
            || !crate::sys::can_fork_as_sibling()
        {
            return;
        }
        if let Some(template) = &mut self.workers.template {
            if matches!(template.child.try_status(), Ok(None)) {
                return;
            }
            tracing::warn!(pid = template.child.pid(), "the worker template ended");
            self.workers.template = None;
        }
        if self.workers.template_starts >= TEMPLATE_STARTS {
            return;
        }
        self.workers.template_starts += 1;
        let started = self
            .new_idle_worker(IdleRole::Template)
            .and_then(|(child, socket)| {
                (socket.set_read_timeout(Some(TEMPLATE_TIMEOUT)))
                    .and_then(|()| socket.set_write_timeout(Some(TEMPLATE_TIMEOUT)))
                    .map_err(|e| Failure::from_io("setting up the template's channel", &e))?;
                Ok((child, socket))
            });
        match started {
            Ok((child, socket)) => {
                self.workers.template = Some(Template {
                    child,
                    socket,
                    ready: false,
                    started: std::time::Instant::now(),
                })
            }
            Err(e) => tracing::warn!(error = ?e, "cannot start the worker template"),
        }
    }

    /// A worker process that `send` has sent its specification (of
    /// `spec_len` bytes) to, and the slots it holds: a warm one (one), else
    /// a new one (none). A copy forked by the template gets a small
    /// specification on its channel before the template is asked for it,
    /// so that it finds it there as soon as it runs; if the template then
    /// fails, the host takes the specification back before it starts a
    /// worker from the executable instead, so that no copy runs it
    /// unseen.
    fn idle_worker(
        &mut self,
        send: &SendSpec<'_>,
        spec_len: usize,
    ) -> Result<(Child, std::os::unix::net::UnixStream, usize), Failure> {
        let sent = |socket: &std::os::unix::net::UnixStream| {
            send(socket).map_err(|e| Failure::from_io("sending the worker its specification", &e))
        };
        self.workers.refill_due = true;
        while let Some((mut child, socket)) = self.workers.warm.pop() {
            if matches!(child.try_status(), Ok(None)) {
                sent(&socket)?;
                return Ok((child, socket, 1));
            }
        }
        if self.workers.template_ready() {
            let (ours, theirs) = worker_channel()?;
            // Early only if the socket takes it whole without a reader.
            let early = spec_len <= EARLY_SPEC_MAX;
            if early {
                sent(&ours)?;
            }
            match self.fork_from_template(&theirs) {
                Ok(child) => {
                    if !early {
                        sent(&ours)?;
                    }
                    return Ok((child, ours, 0));
                }
                Err(e) if early && !take_back(&theirs) => {
                    return Err(Failure::Io(format!(
                        "the worker template failed after its copy took the specification: {e}"
                    )));
                }
                Err(_) => {}
            }
        }
        let (child, socket) = self.new_idle_worker(IdleRole::Cold)?;
        sent(&socket)?;
        Ok((child, socket, 0))
    }

    /// Starts a worker process with nothing but its channel: no directory,
    /// no pipe, /dev/null as stdio, not counted in the guest's budget yet.
    /// Forked by the worker template if it is ready (the copy has the
    /// guest's components loaded), else started from the worker executable
    /// (a warm one, or the template, then loads every component the guest
    /// may fork before its specification comes: `--preload`).
    fn new_idle_worker(
        &mut self,
        idle: IdleRole,
    ) -> Result<(Child, std::os::unix::net::UnixStream), Failure> {
        if idle == IdleRole::Warm && self.workers.template_ready() {
            let (ours, theirs) = worker_channel()?;
            if let Ok(child) = self.fork_from_template(&theirs) {
                return Ok((child, ours));
            }
        }
        let (ours, theirs) = worker_channel()?;
        let preload = match idle {
            IdleRole::Cold => Vec::new(),
            IdleRole::Warm | IdleRole::Template => self.preload_code(),
        };
        let args = worker_args(idle, theirs.as_raw_fd(), &preload, self.worker_user());
        let inherit = std::iter::once(theirs.as_raw_fd())
            .chain(preload.iter().map(|code| code.fd().as_raw_fd()))
            .collect();
        let prepared = self.worker_prepared(args, inherit)?;
        let kind = match idle {
            IdleRole::Template => "worker-template",
            _ => "worker-process",
        };
        let child = self.start_child(
            kind,
            &prepared,
            [StdioRequest::Null, StdioRequest::Null, StdioRequest::Null],
        )?;
        Ok((child, ours))
    }

    /// The user every worker process (the template included) becomes as
    /// soon as it starts: the guest's, that every worker of this guest
    /// becomes anyway (see `worker::shed_privileges`), so that none holds
    /// a privilege while it waits; none where workers run as several
    /// users (`WorkerPool::many_users`) or keep root.
    fn worker_user(&self) -> Option<(u32, u32)> {
        (!self.workers.many_users)
            .then(|| crate::launch::identity::worker_user(&self.policy))
            .flatten()
    }

    /// A worker process to start (or, as the audit log shows it, that the
    /// template forked) with `args`, keeping the descriptors `inherit` (its
    /// channel first).
    fn worker_prepared(&self, args: Vec<String>, inherit: Vec<RawFd>) -> Result<Prepared, Failure> {
        let Some(executable) = self.workers.executable.clone() else {
            return Err(no_worker_executable());
        };
        Ok(Prepared {
            // What the guest's view shows (see `Launcher::worker_view`).
            real_program: std::fs::canonicalize(&executable).unwrap_or_else(|_| executable.clone()),
            program: executable,
            argv0: "wasmproc".to_owned(),
            args,
            env: (HOST_ENV.iter())
                .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
                .collect(),
            cwd: None,
            cwd_host: PathBuf::from("/"),
            inherit_fds: inherit,
            confine: false,
            identity: None,
            lent: Lent::default(),
            counted: false,
            asked: None,
        })
    }

    /// A worker process on the channel end `theirs`, forked by the (ready)
    /// worker template. If the template fails, it is dropped, with a
    /// warning, and the next `warm_up` starts another. Its budget, walls
    /// and audit event are a started one's
    /// ([`launch_with`](Self::launch_with)); of the walls only the cgroup
    /// applies, as to any worker process (started unconfined: it confines
    /// itself).
    fn fork_from_template(
        &mut self,
        theirs: &std::os::unix::net::UnixStream,
    ) -> Result<Child, Failure> {
        let Some(mut template) = self.workers.template.take() else {
            return Err(Failure::Unsupported("no worker template".into()));
        };
        // What ran: the template's copy, not the executable.
        let args = vec![format!(
            "(forked by worker template {})",
            template.child.pid()
        )];
        let prepared = self.worker_prepared(args, vec![theirs.as_raw_fd()])?;
        // Its copies start in the template's cgroup, the guest's, unless
        // each worker gets a cgroup of its own.
        // (A template running as its guest's user may move no process:
        // the host moves its copy, which waits for its specification.)
        let own_cgroup = self.policy.cgroup_per_child;
        let unprivileged = self.worker_user().is_some();
        let launched = self.launch_with("worker-process", &prepared, |walls| {
            let cgroup = walls.cgroup.filter(|_| own_cgroup);
            let fail = |e| Failure::from_io("forking a worker from the worker template", &e);
            let (child, pid) = match unprivileged {
                false => template.fork(theirs, cgroup).map_err(fail)?,
                true => {
                    let forked = template.fork(theirs, None).map_err(fail)?;
                    if let Some(cgroup) = cgroup {
                        crate::launch::cgroup::adopt(cgroup, forked.1).map_err(fail)?;
                    }
                    forked
                }
            };
            Ok((child, pid))
        });
        match launched {
            Ok(launched) => {
                self.workers.template = Some(template);
                Ok(Child::without_stdio(launched))
            }
            Err(e) => {
                tracing::warn!(error = ?e, "dropping the worker template");
                self.workers.refill_due = true;
                Err(e)
            }
        }
    }

    /// A worker's stdout or stderr (`name`) asked as `asked`: the
    /// descriptor the worker gets, and the guest's stream or the host's
    /// copying task, if any.
    #[allow(clippy::type_complexity)]
    fn worker_output(
        &self,
        name: &str,
        asked: StdioRequest,
    ) -> Result<
        (
            std::os::fd::OwnedFd,
            Option<crate::pipe::PipeReader>,
            Vec<tokio::task::JoinHandle<()>>,
        ),
        Failure,
    > {
        let (io, route) = self.route(name, asked)?;
        let fail = |e: std::io::Error| {
            Failure::from_io(format_args!("setting up the worker's {name}"), &e)
        };
        let (ours, theirs) = match io {
            crate::launch::process::ChildIo::Pipe => {
                let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                    .map_err(|e| fail(e.into()))?;
                (Some(read), write)
            }
            crate::launch::process::ChildIo::Given(fd) => (None, fd),
            _ => {
                let null = crate::launch::process::dev_null().map_err(fail)?;
                (
                    None,
                    rustix::io::fcntl_dupfd_cloexec(null, 3).map_err(|e| fail(e.into()))?,
                )
            }
        };
        let mut forwarders = Vec::new();
        let reader = route.stream(ours, &mut forwarders).map_err(fail)?;
        Ok((theirs, reader, forwarders))
    }

    /// A channel on this host's end `socket` of a local channel (to a
    /// worker, or a worker's to its parent), set up as this context's
    /// channels are: its spin and buffer.
    pub(crate) fn channel(
        &mut self,
        socket: std::os::unix::net::UnixStream,
    ) -> Result<Channel, Failure> {
        let mut channel = Channel::new(socket)
            .map_err(|e| Failure::from_io("setting up a worker channel", &e))?;
        let limits = &self.policy.limits;
        channel.set_spin(self.policy.channel_spin);
        channel.set_buffer(limits.channel_buffer);
        let total = limits.channel_buffer_total;
        let pool = (self.workers.channel_bytes)
            .get_or_insert_with(|| crate::channel::BufferPool::new(total));
        channel.set_pool(pool.clone());
        Ok(channel)
    }
}
