//! `wasmproc:process/fork` and `wasmproc:process/parent`: worker components
//! in their own OS processes, with a message channel.
//!
//! `fork` checks that every capability asked for the worker is one the
//! guest holds (programs, shell, directories with read-only kept read-only,
//! environment names; limits at most the guest's own), starts the worker
//! executable in worker mode as a child (own process group, no orphans, as
//! for `spawn`) and sends it a `WorkerSpec` over a socketpair. A worker may
//! fork in turn the components its parent passed on (`fork-options.forks`),
//! each level narrowing again, lending out of the one budget of the tree and
//! reporting up to the one audit log.

use crate::bindings::fork::{DirGrant as ForkDir, ForkOptions, Host, HostWorker, WorkerLimits};
use crate::bindings::parent;
use crate::bindings::types::Termination;
use crate::channel::{Channel, Readiness};
use crate::code::Code;
use crate::failure::Failure;
use crate::policy::DirAccess;
use crate::policy::{Denial, DirGrant, Lent, Prepared, Refusal, check_env_pair, no_nul};
use crate::sandbox::Sandbox;
use crate::spawn::{Asked, Child};
use crate::worker::{CodeRef, HOST_ENV, WorkerDir, WorkerSpec};
use crate::{Limits, Policy, ProcessCtx, ProcessCtxView, ProcessError, ProcessResult};
use cap_std::fs::Dir;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynInputStream, DynPollable, Pollable};

/// A forked worker: a component running in its own OS process (on this
/// machine or a cluster agent's), and the channel to it. Dropping it kills
/// the worker's process group.
pub struct Worker {
    pub(crate) channel: Channel,
    pub(crate) end: End,
    /// Its audit events and denials, on their way to this host's.
    pub(crate) reports: std::sync::Arc<std::sync::Mutex<crate::worker::Reports>>,
}

/// Where a worker's process is.
pub(crate) enum End {
    /// A child process of this host.
    Local(Child),
    /// A process of a cluster agent.
    Remote(crate::cluster::Remote),
}

impl End {
    fn pid(&self) -> u32 {
        match self {
            End::Local(child) => child.pid(),
            End::Remote(remote) => remote.pid(),
        }
    }

    async fn reap(&mut self) -> Result<Termination, Failure> {
        match self {
            End::Local(child) => child.reap().await,
            End::Remote(remote) => remote.reap().await.map_err(Failure::from),
        }
    }

    fn try_status(&mut self) -> Result<Option<Termination>, Failure> {
        match self {
            End::Local(child) => child.try_status(),
            End::Remote(remote) => remote.try_status().map_err(Failure::from),
        }
    }

    fn kill(&self, signal: u8) -> Result<(), Failure> {
        match self {
            End::Local(child) => child.kill(signal),
            End::Remote(remote) => remote.kill(signal).map_err(Failure::from),
        }
    }

    fn take_stdout(&mut self) -> Option<crate::pipe::PipeReader> {
        match self {
            End::Local(child) => child.take_stdout(),
            End::Remote(remote) => remote.stdout.take(),
        }
    }

    fn take_stderr(&mut self) -> Option<crate::pipe::PipeReader> {
        match self {
            End::Local(child) => child.take_stderr(),
            End::Remote(remote) => remote.stderr.take(),
        }
    }
}

impl Worker {
    /// Passes on every report the worker has made so far.
    fn drain_reports(&self) {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain();
    }
}

impl Drop for Worker {
    /// Nothing the worker reported before it is dropped is lost.
    fn drop(&mut self) {
        self.drain_reports();
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("pid", &self.end.pid())
            .finish_non_exhaustive()
    }
}

/// Ready when the worker process has exited.
#[wasmtime_wasi::async_trait]
impl Pollable for Worker {
    async fn ready(&mut self) {
        let _ = self.reap().await;
    }
}

impl Worker {
    /// Waits for the worker to exit, taking in its messages meanwhile (see
    /// [`Channel::absorb`]): a worker that writes out many messages before
    /// it ends does not wait forever for a guest that waits for its exit.
    /// Cancel safe.
    async fn reap(&mut self) -> Result<Termination, Failure> {
        let ended = tokio::select! {
            ended = self.end.reap() => ended,
            () = self.channel.absorb() => unreachable!("absorb never ends"),
        };
        Ok(self.with_trap(ended?))
    }

    /// As [`reap`](Self::reap), for at most `ms` milliseconds.
    async fn reap_within(&mut self, ms: u64) -> Result<Termination, Failure> {
        let pid = self.end.pid();
        crate::spawn::within(ms, format!("worker {pid}"), self.reap()).await
    }

    /// How the worker ended if it has exited, without blocking.
    fn try_status(&mut self) -> Result<Option<Termination>, Failure> {
        Ok(self.end.try_status()?.map(|ended| self.with_trap(ended)))
    }

    /// `ended` with the trap the worker reported, if its guest trapped
    /// (everything it reported comes before its end).
    fn with_trap(&self, mut ended: Termination) -> Termination {
        self.drain_reports();
        ended.trap = (self.reports.lock().unwrap_or_else(|e| e.into_inner()))
            .trap
            .clone();
        ended
    }
}

/// What a guest has free of its budgets when it forks, not counting the
/// worker's own slot and spawn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Free {
    /// Live-children slots.
    pub live: usize,
    /// Total spawns (`None`: no limit).
    pub spawns: Option<u64>,
}

impl Policy {
    /// The policy of a worker forked with `options`: this one, narrowed to
    /// the programs, shell and environment names it passes on (each one
    /// this policy grants), with lower limits and budgets lent out of
    /// `free`, and no forks; every other setting as it is. Also what the
    /// worker is lent. (The worker's directories are opened by the context,
    /// which holds them.)
    pub(crate) fn narrow(
        &self,
        options: &ForkOptions,
        free: Free,
    ) -> Result<(Policy, Lent), Refusal> {
        for (name, value) in &options.env {
            check_env_pair(name, value)?;
        }
        let programs = (options.programs.iter())
            .map(|p| Ok(self.find_program(p)?.clone()))
            .collect::<Result<Vec<_>, Denial>>()?;
        let shells = match (options.shell, self.shells.is_empty()) {
            (false, _) => Vec::new(),
            (true, false) => self.shells.clone(),
            (true, true) => return Err(Denial::Shell.into()),
        };
        let forks = (options.forks.iter())
            .map(|c| Ok(self.find_fork(c)?.clone()))
            .collect::<Result<Vec<_>, Denial>>()?;
        if let Some(name) = (options.allow_env.iter()).find(|n| !self.allowed_env.contains(*n)) {
            return Err(Denial::EnvName(name.clone()).into());
        }
        let (limits, lent) = self.narrow_limits(&options.limits, free)?;
        let child_id = (self.check_user(options.uid, options.gid)?).unwrap_or(self.child_id);
        let policy = Policy {
            programs,
            shells,
            // A worker that cannot fork needs no warm workers.
            warm_workers: if forks.is_empty() {
                0
            } else {
                self.warm_workers
            },
            forks,
            // Nor a template of its own: its forks start from the
            // executable (a template per nested worker would double them).
            worker_template: false,
            allowed_env: options.allow_env.iter().cloned().collect(),
            injection_env: (options.allow_env.iter())
                .filter(|n| self.injection_env.contains(*n))
                .cloned()
                .collect(),
            limits,
            child_id,
            ..self.clone()
        };
        Ok((policy, lent))
    }

    /// This guest's limits, lowered as `asked`, if nothing asked for is
    /// above this guest's own, and what they take from this guest's
    /// budgets: the worker's live children and total spawns are lent out
    /// of what this guest has free (not counting the worker itself), so
    /// the whole tree stays within this guest's limits. Not asked, a worker
    /// gets half of what is free.
    fn narrow_limits(&self, asked: &WorkerLimits, free: Free) -> Result<(Limits, Lent), Denial> {
        let mut limits = self.limits.clone();
        let lend = |name: &'static str, free: u64, asked: Option<u64>| match asked {
            Some(asked) if asked > free => Err(Denial::ForkLimit {
                limit: name,
                message: format!(
                    "worker limit {name} of {asked} is more than this guest has free ({free}: its own limit, less what its children and other workers hold, less the worker itself)"
                ),
            }),
            Some(asked) => Ok(asked),
            None => Ok(free / 2),
        };
        let live = lend(
            "max-live-children",
            free.live as u64,
            asked.max_live_children.map(u64::from),
        )? as usize;
        let spawns = match free.spawns {
            Some(free) => Some(lend("max-total-spawns", free, asked.max_total_spawns)?),
            None => asked.max_total_spawns,
        };
        limits.max_live_children = live;
        limits.max_total_spawns = spawns;
        let lent = Lent {
            live,
            spawns: free.spawns.and(spawns).unwrap_or(0),
        };
        let limits = self.narrow_other_limits(limits, asked)?;
        Ok((limits, lent))
    }

    /// `limits` with the rest of `asked` (all but the budgets) applied, if
    /// nothing asked for is above this guest's own.
    fn narrow_other_limits(
        &self,
        mut limits: Limits,
        asked: &WorkerLimits,
    ) -> Result<Limits, Denial> {
        // `mine`: this guest's value (`None`: no limit).
        let lower = |name: &'static str, mine: Option<u64>, asked: Option<u64>| match (mine, asked)
        {
            (_, None) => Ok(mine),
            (Some(mine), Some(asked)) if asked > mine => Err(Denial::ForkLimit {
                limit: name,
                message: format!(
                    "worker limit {name} of {asked} is above this guest's own ({mine})"
                ),
            }),
            (_, Some(asked)) => Ok(Some(asked)),
        };
        limits.max_buffer = (lower("max-buffer", Some(limits.max_buffer), asked.max_buffer)?)
            .unwrap_or(limits.max_buffer);
        limits.default_max_buffer = limits.default_max_buffer.min(limits.max_buffer);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let timeout = lower(
            "max-timeout-ms",
            limits.max_timeout.map(ms),
            asked.max_timeout_ms,
        )?;
        limits.max_timeout = timeout.map(Duration::from_millis);
        if let Some(max) = limits.max_timeout {
            limits.default_timeout = Some(limits.default_timeout.map_or(max, |d| d.min(max)));
        }
        let rlimits = &mut limits.rlimits;
        rlimits.cpu_seconds = lower("cpu-seconds", rlimits.cpu_seconds, asked.cpu_seconds)?;
        rlimits.address_space = lower("address-space", rlimits.address_space, asked.address_space)?;
        rlimits.open_files = lower("open-files", rlimits.open_files, asked.open_files)?;
        rlimits.processes = lower("processes", rlimits.processes, asked.processes)?;
        rlimits.file_size = lower("file-size", rlimits.file_size, asked.file_size)?;
        Ok(limits)
    }
}

impl From<crate::channel::ChannelError> for Failure {
    /// The guest's error for a channel's: `closed`, or `limit-exceeded`,
    /// with the reason.
    fn from(err: crate::channel::ChannelError) -> Failure {
        use crate::channel::ChannelError;
        match err {
            ChannelError::Closed | ChannelError::ClosedHere => Failure::Closed(err.to_string()),
            other => Failure::LimitExceeded(other.to_string()),
        }
    }
}

impl ProcessCtx {
    /// What this guest has free of its budgets, not counting the worker
    /// about to be forked.
    pub(crate) fn free(&self) -> Free {
        let in_use = self
            .live_children
            .load(std::sync::atomic::Ordering::Acquire);
        Free {
            live: (self.policy.limits.max_live_children).saturating_sub(in_use + 1),
            spawns: (self.policy.limits.max_total_spawns)
                .map(|max| max.saturating_sub(self.total_spawns + 1)),
        }
    }

    /// The worker specification for `options`, with the directories opened,
    /// if every capability asked for is one this guest holds (see
    /// [`Policy::narrow`]); and what the worker is lent of this guest's
    /// budgets.
    fn narrow(
        &self,
        component: PathBuf,
        args: Vec<String>,
        options: &ForkOptions,
    ) -> Result<(WorkerSpec, Vec<Dir>, Lent), Failure> {
        let (mut policy, lent) =
            (self.policy.narrow(options, self.free())).map_err(|r| self.refuse(r))?;
        // A worker never confines its children less than its parent.
        policy.require_confinement |= self.confinement() == crate::outcome::Confinement::Full;
        let mut opened = Vec::new();
        let mut dirs = Vec::new();
        for ForkDir { path, read_only } in &options.dirs {
            let (dir, host_path) = self.narrow_dir(path, *read_only)?;
            dirs.push(WorkerDir {
                guest_path: path.clone(),
                host_path,
                fd: dir.as_fd().as_raw_fd(),
                read_only: *read_only,
            });
            opened.push(dir);
        }
        let spec = WorkerSpec {
            component,
            args,
            env: options.env.clone(),
            dirs,
            policy,
            report_fd: None,
            stdio: None,
            sandbox: None,
            code: Vec::new(),
        };
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
    pub reports: std::sync::Arc<std::sync::Mutex<crate::worker::Reports>>,
}

/// The largest specification a cold fork sends before the template has
/// forked the worker that reads it: a socket's buffer takes it whole.
const EARLY_SPEC_MAX: usize = 32 << 10;

/// Takes back the specification sent ahead on a channel whose worker was
/// never forked, reading it from the worker's end `theirs`; whether it was
/// still there (else a copy the template made has it).
fn take_back(theirs: &std::os::unix::net::UnixStream) -> bool {
    theirs.set_nonblocking(true).is_ok() && crate::channel::read_frame_with_fds(theirs).is_ok()
}

/// How many workers' views (see `ProcessCtx::worker_view`) a guest keeps.
const WORKER_VIEWS: usize = 8;

/// What a worker's view is built from: its directories (device, inode and
/// whether read-only), its programs and whether it has the network.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ViewKey {
    dirs: Vec<((u64, u64), bool)>,
    programs: Vec<PathBuf>,
    network: bool,
}

/// The device and inode of the open directory `dir`.
fn dir_id(dir: &Dir) -> Option<(u64, u64)> {
    let st = rustix::fs::fstat(dir).ok()?;
    Some((st.st_dev, st.st_ino))
}

/// The error of a fork on a host that cannot start worker processes.
fn no_worker_executable() -> Failure {
    Failure::Unsupported("this host has no worker executable to run forked components".into())
}

/// The worker executable's arguments for an `idle` worker process (or the
/// template) on the inherited channel descriptor `channel_fd`, loading the
/// inherited code `preload` before its specification comes.
fn worker_args(idle: Idle, channel_fd: RawFd, preload: &[Code]) -> Vec<String> {
    ["__worker", "--channel-fd", &channel_fd.to_string()]
        .into_iter()
        .map(str::to_owned)
        .chain((idle == Idle::Template).then(|| "--template".to_owned()))
        .chain(preload.iter().flat_map(|code| {
            let fd = code.fd().as_raw_fd();
            ["--preload".to_owned(), format!("{}:{fd}", code.key)]
        }))
        .collect()
}

/// Sends a worker its specification on the host's end of its channel.
type SendSpec<'a> = dyn Fn(&std::os::unix::net::UnixStream) -> std::io::Result<()> + 'a;

/// A new socketpair for a worker's channel: the host's end, the worker's.
fn worker_channel() -> Result<
    (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ),
    Failure,
> {
    std::os::unix::net::UnixStream::pair()
        .map_err(|e| Failure::from_io("creating the worker's channel", &e))
}

/// Which kind of idle worker process to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    /// For the fork at hand.
    Cold,
    /// For the pool of warm workers.
    Warm,
    /// The worker template.
    Template,
}

/// The worker template: an idle worker process that forks new worker
/// processes as the host asks (`worker::serve_as_template`), and the
/// host's end of its channel.
pub(crate) struct Template {
    child: Child,
    socket: std::os::unix::net::UnixStream,
    /// Whether it said it is ready (its engine up, its components loaded).
    ready: bool,
    /// When it was started.
    started: std::time::Instant,
}

/// How long the host waits for the worker template to answer a request.
const TEMPLATE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times a guest's worker template is started (replaced after
/// it ended or failed) before its workers start from the executable only.
const TEMPLATE_STARTS: u32 = 3;

impl Template {
    /// Whether the template has said it is ready; never waits (until then
    /// workers start from the executable).
    fn is_ready(&mut self) -> bool {
        if !self.ready && self.socket.set_nonblocking(true).is_ok() {
            let answer = crate::channel::read_frame_with_fds(&self.socket);
            self.ready = matches!(
                answer.map(|(a, _)| serde_json::from_slice(&a)),
                Ok(Ok(crate::worker::TemplateReply::Ready))
            );
            self.ready &= self.socket.set_nonblocking(false).is_ok();
        }
        self.ready
    }

    /// A new worker process, forked by the template, on the channel end
    /// `theirs`, started in `cgroup` if given. A process it forked that
    /// then failed is killed and reaped.
    fn fork(
        &mut self,
        theirs: &std::os::unix::net::UnixStream,
        cgroup: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> std::io::Result<(crate::process::OsChild, rustix::process::Pid)> {
        use crate::worker::{TemplateReply, TemplateRequest};
        let request = serde_json::to_vec(&TemplateRequest {
            cgroup: cgroup.is_some(),
        })?;
        let fds: Vec<_> = std::iter::once(theirs.as_fd()).chain(cgroup).collect();
        crate::channel::send_frame_with_fds(&self.socket, &request, &fds)?;
        let (reply, mut passed) = crate::channel::read_frame_with_fds(&self.socket)?;
        let forked = passed.pop();
        match (serde_json::from_slice(&reply)?, forked) {
            (TemplateReply::Started { pid }, Some(pidfd)) => {
                let pid = (rustix::process::Pid::from_raw(pid))
                    .ok_or_else(|| std::io::Error::other("a bad pid"))?;
                Ok((crate::process::OsChild::new(pid, pidfd)?, pid))
            }
            (TemplateReply::Failed { error }, forked) => {
                if let Some(pidfd) = forked {
                    // Ours to reap (a child of this host's): killed and
                    // reaped in the background.
                    let _ =
                        rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
                    drop(crate::process::OsChild::new(
                        rustix::process::Pid::INIT,
                        pidfd,
                    ));
                }
                Err(std::io::Error::other(error))
            }
            (answer, _) => Err(std::io::Error::other(format!(
                "an unexpected answer: {answer:?}"
            ))),
        }
    }
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
        [_, stdout, stderr]: [Asked; 3],
        tee: Option<crate::worker::Tee>,
    ) -> Result<StartedWorker, Failure> {
        let (slots, spawns) = (1 + lent.live, 1 + lent.spawns);
        // A warm worker holds its own slot already.
        self.drop_dead_warm_workers();
        let held = usize::from(!self.warm.is_empty());
        self.check_budget(slots - held, spawns)?;
        let codes = self.tree_code(&spec)?;
        let sandbox = self.worker_view(&spec, &dirs);
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
        spec.sandbox = sandbox.as_ref().map(|s| s.to_inherit(&mut passed));
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
        self.total_spawns += spawns;
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
        let reports = crate::worker::Reports::start(
            reports,
            (child.pid(), component),
            self.audit.clone(),
            self.reporter.clone(),
            tee,
        )
        .map_err(|e| Failure::from_io("watching the worker's reports", &e))?;
        Ok(StartedWorker {
            socket,
            child,
            reports,
        })
    }

    /// The sandbox for the children of the worker `spec` (its directories
    /// `dirs` open): a view of the worker's own, narrowed grants, not of
    /// this guest's (issue 22, row 4: Landlock alone left a worker's
    /// children able to stat, chmod, utime and setxattr files of the
    /// parent's grants, and to connect to its sockets). Views are built
    /// once per set of grants and kept, so a pool of like workers pays
    /// one build. `None` when the worker can start no child or is not
    /// sandboxed. Where no view can be built (a worker forking under its
    /// own Landlock, which forbids mounting), this guest's own view,
    /// which holds every grant the worker has, with a warning.
    fn worker_view(&mut self, spec: &WorkerSpec, dirs: &[Dir]) -> Option<Arc<Sandbox>> {
        let policy = &spec.policy;
        let programs = policy.runnable();
        if !(policy.confine && policy.use_sandbox) || programs.is_empty() {
            return None;
        }
        let key = ViewKey {
            dirs: (spec.dirs.iter().zip(dirs))
                .filter_map(|(d, dir)| Some((dir_id(dir)?, d.read_only)))
                .collect(),
            programs: programs.iter().map(|p| p.real_path.clone()).collect(),
            network: policy.network,
        };
        if let Some((_, view)) = self.worker_views.iter().find(|(k, _)| *k == key) {
            return Some(view.clone());
        }
        let grants: Vec<DirGrant> = (spec.dirs.iter().zip(dirs))
            .filter_map(|(d, dir)| {
                Some(DirGrant {
                    guest_path: PathBuf::from(&d.guest_path),
                    host_path: d.host_path.clone(),
                    dir: Arc::new(dir.try_clone().ok()?),
                    access: if d.read_only {
                        DirAccess::ReadOnly
                    } else {
                        DirAccess::ReadWrite
                    },
                })
            })
            .collect();
        match Sandbox::build(&grants, &programs, policy.network) {
            Ok(view) => {
                let view = Arc::new(view);
                if self.worker_views.len() == WORKER_VIEWS {
                    self.worker_views.remove(0);
                }
                self.worker_views.push((key, view.clone()));
                Some(view)
            }
            Err(e) => {
                tracing::warn!(target: "wasmproc::sandbox", error = %format!("{e:#}"),
                    "a worker's children get its parent's view of the grants (Landlock narrows them)");
                self.sandbox.clone()
            }
        }
    }

    /// The compiled code of `spec`'s component and of each component it
    /// may fork in turn, compiled now if need be (see [`crate::code`]).
    fn tree_code(&self, spec: &WorkerSpec) -> Result<Vec<(PathBuf, Code)>, Failure> {
        let Some(source) = &self.worker_code else {
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
        let Some(source) = &self.worker_code else {
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
    /// [`ProcessCtxBuilder::worker_template`]: crate::ProcessCtxBuilder::worker_template
    pub fn warm_up(&mut self) {
        if self.policy.forks.is_empty() {
            return;
        }
        self.start_template();
        self.drop_dead_warm_workers();
        while self.warm.len() < self.policy.warm_workers {
            // Each holds a live-children slot: the guest's budget covers
            // every process it has.
            if self.check_budget(1, 0).is_err() {
                return;
            }
            match self.new_idle_worker(Idle::Warm) {
                Ok((child, socket)) => {
                    child.count(1);
                    self.warm.push((child, socket));
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
        if std::mem::take(&mut self.refill_due) {
            self.warm_up();
        }
    }

    /// Forgets warm workers that have ended (reaping them).
    fn drop_dead_warm_workers(&mut self) {
        self.warm
            .retain_mut(|(child, _)| matches!(child.try_status(), Ok(None)));
    }

    /// Waits (without blocking the thread) until the worker template, if
    /// one is starting and no warm worker is there to take, is ready, has
    /// ended, or is dropped for not being ready [`TEMPLATE_TIMEOUT`] after
    /// it started: a fork right after the guest started then costs the
    /// template's remaining start (an executable started for it would take
    /// longer) and a fork of it, rather than a second process start
    /// competing with the template's for the same cores.
    async fn template_started(&mut self) {
        if !self.warm.is_empty() {
            return;
        }
        while let Some(template) = &mut self.template
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
                self.template = None;
                self.refill_due = true;
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
            || self.worker_executable.is_none()
            || !crate::sys::can_fork_as_sibling()
        {
            return;
        }
        if let Some(template) = &mut self.template {
            if matches!(template.child.try_status(), Ok(None)) {
                return;
            }
            tracing::warn!(pid = template.child.pid(), "the worker template ended");
            self.template = None;
        }
        if self.template_starts >= TEMPLATE_STARTS {
            return;
        }
        self.template_starts += 1;
        let started = self
            .new_idle_worker(Idle::Template)
            .and_then(|(child, socket)| {
                (socket.set_read_timeout(Some(TEMPLATE_TIMEOUT)))
                    .and_then(|()| socket.set_write_timeout(Some(TEMPLATE_TIMEOUT)))
                    .map_err(|e| Failure::from_io("setting up the template's channel", &e))?;
                Ok((child, socket))
            });
        match started {
            Ok((child, socket)) => {
                self.template = Some(Template {
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
        self.refill_due = true;
        while let Some((mut child, socket)) = self.warm.pop() {
            if matches!(child.try_status(), Ok(None)) {
                sent(&socket)?;
                return Ok((child, socket, 1));
            }
        }
        if self.template_ready() {
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
        let (child, socket) = self.new_idle_worker(Idle::Cold)?;
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
        idle: Idle,
    ) -> Result<(Child, std::os::unix::net::UnixStream), Failure> {
        if idle == Idle::Warm && self.template_ready() {
            let (ours, theirs) = worker_channel()?;
            if let Ok(child) = self.fork_from_template(&theirs) {
                return Ok((child, ours));
            }
        }
        let (ours, theirs) = worker_channel()?;
        let preload = match idle {
            Idle::Cold => Vec::new(),
            Idle::Warm | Idle::Template => self.preload_code(),
        };
        let args = worker_args(idle, theirs.as_raw_fd(), &preload);
        let inherit = std::iter::once(theirs.as_raw_fd())
            .chain(preload.iter().map(|code| code.fd().as_raw_fd()))
            .collect();
        let prepared = self.worker_prepared(args, inherit)?;
        let kind = match idle {
            Idle::Template => "worker-template",
            _ => "worker-process",
        };
        let child = self.start_child(kind, &prepared, [Asked::Null, Asked::Null, Asked::Null])?;
        Ok((child, ours))
    }

    /// A worker process to start (or, as the audit log shows it, that the
    /// template forked) with `args`, keeping the descriptors `inherit` (its
    /// channel first).
    fn worker_prepared(&self, args: Vec<String>, inherit: Vec<RawFd>) -> Result<Prepared, Failure> {
        let Some(executable) = self.worker_executable.clone() else {
            return Err(no_worker_executable());
        };
        Ok(Prepared {
            real_program: executable.clone(),
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
        })
    }

    /// Whether there is a worker template and it is ready (never waits).
    fn template_ready(&mut self) -> bool {
        self.template.as_mut().is_some_and(Template::is_ready)
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
        let Some(mut template) = self.template.take() else {
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
        let own_cgroup = self.policy.cgroup_per_child;
        let launched = self.launch_with("worker-process", &prepared, |walls| {
            let cgroup = walls.cgroup.filter(|_| own_cgroup);
            (template.fork(theirs, cgroup))
                .map_err(|e| Failure::from_io("forking a worker from the worker template", &e))
        });
        match launched {
            Ok(launched) => {
                self.template = Some(template);
                Ok(Child::without_stdio(launched))
            }
            Err(e) => {
                tracing::warn!(error = ?e, "dropping the worker template");
                self.refill_due = true;
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
        asked: Asked,
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
            crate::process::ChildIo::Pipe => {
                let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                    .map_err(|e| fail(e.into()))?;
                (Some(read), write)
            }
            crate::process::ChildIo::Given(fd) => (None, fd),
            _ => {
                let null = crate::process::dev_null().map_err(fail)?;
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
        &self,
        socket: std::os::unix::net::UnixStream,
    ) -> Result<Channel, Failure> {
        let mut channel = Channel::new(socket)
            .map_err(|e| Failure::from_io("setting up a worker channel", &e))?;
        channel.set_spin(self.policy.channel_spin);
        channel.set_buffer(self.policy.limits.channel_buffer);
        Ok(channel)
    }
}

impl Host for ProcessCtxView<'_> {
    async fn fork(
        &mut self,
        component: String,
        args: Vec<String>,
        options: ForkOptions,
    ) -> ProcessResult<Resource<Worker>> {
        // Streams given are taken first: they are the host's now.
        let stdio = [
            Asked::Null,
            self.ask(options.stdout)?,
            self.ask(options.stderr)?,
        ];
        let options = ForkOptions {
            stdout: crate::bindings::types::Stdio::Null,
            stderr: crate::bindings::types::Stdio::Null,
            ..options
        };
        no_nul("the component name", &component)?;
        for arg in &args {
            no_nul("an argument", arg)?;
        }
        let worker = match &options.placement {
            crate::bindings::fork::Placement::Local => {
                self.ctx.template_started().await;
                self.fork_local(&component, args, &options, stdio)?
            }
            placement => {
                let placement = placement.clone();
                crate::cluster::fork_remote(self.ctx, &component, args, &options, placement, stdio)
                    .await?
            }
        };
        self.table.push(worker).map_err(ProcessError::trap)
    }
}

impl ProcessCtxView<'_> {
    fn fork_local(
        &mut self,
        component: &str,
        args: Vec<String>,
        options: &ForkOptions,
        stdio: [Asked; 3],
    ) -> Result<Worker, Failure> {
        let ctx = &mut *self.ctx;
        let path = (ctx.policy.find_fork(component))
            .map_err(|d| ctx.deny(d))?
            .path
            .clone();
        let (spec, dirs, lent) = ctx.narrow(path, args, options)?;
        let started = ctx.start_worker(spec, dirs, lent, stdio, None)?;
        Ok(Worker {
            channel: ctx.channel(started.socket)?,
            end: End::Local(started.child),
            reports: started.reports,
        })
    }
}

impl ProcessCtxView<'_> {
    fn worker(&mut self, worker: &Resource<Worker>) -> ProcessResult<&mut Worker> {
        self.table.get_mut(worker).map_err(ProcessError::trap)
    }

    /// A pollable for `channel`'s readiness, owned by the pollable itself
    /// and, if given, a table child of `owner`.
    fn channel_pollable<T: 'static>(
        &mut self,
        readiness: Readiness,
        owner: Option<&Resource<T>>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let readiness = match owner {
            Some(owner) => self.table.push_child(readiness, owner)?,
            None => self.table.push(readiness)?,
        };
        wasmtime_wasi::p2::subscribe(self.table, readiness)
    }
}

impl HostWorker for ProcessCtxView<'_> {
    fn pid(&mut self, worker: Resource<Worker>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&worker)?.end.pid())
    }

    async fn send(&mut self, worker: Resource<Worker>, message: Vec<u8>) -> ProcessResult<()> {
        Ok((self.worker(&worker)?.channel.send(message).await).map_err(Failure::from)?)
    }

    async fn receive(&mut self, worker: Resource<Worker>) -> ProcessResult<Vec<u8>> {
        self.ctx.refill();
        Ok((self.worker(&worker)?.channel.receive().await).map_err(Failure::from)?)
    }

    fn try_receive(&mut self, worker: Resource<Worker>) -> ProcessResult<Option<Vec<u8>>> {
        Ok((self.worker(&worker)?.channel.try_receive()).map_err(Failure::from)?)
    }

    fn subscribe(&mut self, worker: Resource<Worker>) -> wasmtime::Result<Resource<DynPollable>> {
        self.ctx.refill();
        let readiness = self.table.get(&worker)?.channel.readiness();
        self.channel_pollable(readiness, Some(&worker))
    }

    fn subscribe_exit(
        &mut self,
        worker: Resource<Worker>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(self.table, worker)
    }

    fn close_channel(&mut self, worker: Resource<Worker>) -> wasmtime::Result<()> {
        self.table.get(&worker)?.channel.close_here();
        Ok(())
    }

    fn try_wait(&mut self, worker: Resource<Worker>) -> ProcessResult<Option<Termination>> {
        Ok(self.worker(&worker)?.try_status()?)
    }

    async fn wait(&mut self, worker: Resource<Worker>) -> ProcessResult<Termination> {
        self.ctx.refill();
        Ok(self.worker(&worker)?.reap().await?)
    }

    async fn wait_timeout(
        &mut self,
        worker: Resource<Worker>,
        timeout_ms: u64,
    ) -> ProcessResult<Termination> {
        Ok(self.worker(&worker)?.reap_within(timeout_ms).await?)
    }

    fn kill(&mut self, worker: Resource<Worker>, signal: u8) -> ProcessResult<()> {
        Ok(self.worker(&worker)?.end.kill(signal)?)
    }

    fn take_stdout(
        &mut self,
        worker: Resource<Worker>,
    ) -> wasmtime::Result<Option<Resource<DynInputStream>>> {
        self.take_output(&worker, |w: &mut Worker| w.end.take_stdout())
    }

    fn take_stderr(
        &mut self,
        worker: Resource<Worker>,
    ) -> wasmtime::Result<Option<Resource<DynInputStream>>> {
        self.take_output(&worker, |w: &mut Worker| w.end.take_stderr())
    }

    fn drop(&mut self, worker: Resource<Worker>) -> wasmtime::Result<()> {
        // Dropping the value kills the worker's process group.
        self.table.delete(worker)?;
        Ok(())
    }
}

fn not_forked() -> Failure {
    Failure::Unsupported("this component was not started by fork: it has no parent channel".into())
}

impl ProcessCtxView<'_> {
    fn parent(&self) -> Result<&Channel, Failure> {
        self.ctx.parent.as_ref().ok_or_else(not_forked)
    }
}

impl parent::Host for ProcessCtxView<'_> {
    async fn send(&mut self, message: Vec<u8>) -> ProcessResult<()> {
        Ok((self.parent()?.send(message).await).map_err(Failure::from)?)
    }

    async fn receive(&mut self) -> ProcessResult<Vec<u8>> {
        Ok((self.parent()?.receive().await).map_err(Failure::from)?)
    }

    fn try_receive(&mut self) -> ProcessResult<Option<Vec<u8>>> {
        Ok((self.parent()?.try_receive()).map_err(Failure::from)?)
    }

    /// For a component that was not forked, nothing to close.
    fn close(&mut self) -> wasmtime::Result<()> {
        if let Some(channel) = &self.ctx.parent {
            channel.close_here();
        }
        Ok(())
    }

    /// Ready when `receive` would not block; for a component that was not
    /// forked, ready at once, so that it goes on to `try-receive` and gets
    /// `unsupported` instead of waiting forever.
    fn subscribe(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        match &self.ctx.parent {
            Some(channel) => {
                let readiness = channel.readiness();
                self.channel_pollable::<Readiness>(readiness, None)
            }
            None => {
                let ready = self.table.push(Ready)?;
                wasmtime_wasi::p2::subscribe(self.table, ready)
            }
        }
    }
}

/// A pollable that is always ready.
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    //! Narrowing a worker's limits, without wasm or processes.
    use super::*;

    fn limits(live: Option<u32>, spawns: Option<u64>) -> WorkerLimits {
        WorkerLimits {
            max_live_children: live,
            max_total_spawns: spawns,
            max_buffer: None,
            max_timeout_ms: None,
            cpu_seconds: None,
            address_space: None,
            open_files: None,
            processes: None,
            file_size: None,
        }
    }

    /// What a context with no child alive has free.
    fn free(ctx: &ProcessCtx) -> Free {
        let limits = &ctx.policy.limits;
        Free {
            live: limits.max_live_children - 1,
            spawns: limits.max_total_spawns.map(|m| m - 1),
        }
    }

    fn ctx(max_live: usize, max_spawns: Option<u64>) -> ProcessCtx {
        ProcessCtx::builder()
            .confine(false)
            .limits(Limits {
                max_live_children: max_live,
                max_total_spawns: max_spawns,
                ..Limits::default()
            })
            .build()
    }

    #[test]
    fn a_worker_is_lent_its_budget_out_of_what_its_parent_has_free() {
        let ctx = ctx(8, Some(100));
        // The worker takes a slot and a spawn itself: 7 and 99 are free.
        let (worker, lent) = ctx
            .policy
            .narrow_limits(&limits(None, None), free(&ctx))
            .unwrap();
        assert_eq!(
            (worker.max_live_children, worker.max_total_spawns),
            (3, Some(49))
        );
        assert_eq!(
            lent,
            Lent {
                live: 3,
                spawns: 49
            }
        );
        let (worker, lent) = ctx
            .policy
            .narrow_limits(&limits(Some(7), Some(99)), free(&ctx))
            .unwrap();
        assert_eq!(
            (worker.max_live_children, worker.max_total_spawns),
            (7, Some(99))
        );
        assert_eq!(
            lent,
            Lent {
                live: 7,
                spawns: 99
            }
        );
        assert!(
            ctx.policy
                .narrow_limits(&limits(Some(8), None), free(&ctx))
                .is_err()
        );
        assert!(
            ctx.policy
                .narrow_limits(&limits(None, Some(100)), free(&ctx))
                .is_err()
        );
    }

    #[test]
    fn without_a_total_limit_a_worker_has_none_unless_asked() {
        let ctx = ctx(64, None);
        let (worker, lent) = ctx
            .policy
            .narrow_limits(&limits(None, None), free(&ctx))
            .unwrap();
        assert_eq!(worker.max_total_spawns, None);
        assert_eq!(lent.spawns, 0);
        let (worker, _) = ctx
            .policy
            .narrow_limits(&limits(None, Some(5)), free(&ctx))
            .unwrap();
        assert_eq!(worker.max_total_spawns, Some(5));
    }

    #[test]
    fn a_worker_gets_its_parents_whole_policy_narrowed() {
        let mut b = ProcessCtx::builder();
        b.allow_program("/bin/sh")
            .unwrap()
            .allow_program("/bin/true")
            .unwrap()
            .allow_env("LANG")
            .unwrap()
            .child_user(2000, 3000)
            .allow_uid(1234)
            .cgroup_per_child(true)
            .allow_network(true)
            .require_confinement(true)
            .channel_spin(Duration::from_micros(7))
            .confine(false);
        let ctx = b.build();
        let options = ForkOptions {
            programs: vec!["sh".into()],
            dirs: vec![],
            allow_env: vec![],
            env: vec![],
            shell: false,
            forks: vec![],
            stdout: crate::bindings::types::Stdio::Null,
            stderr: crate::bindings::types::Stdio::Null,
            limits: limits(None, None),
            uid: Some(1234),
            gid: None,
            placement: crate::bindings::fork::Placement::Local,
        };
        let (spec, _, _) = ctx
            .narrow(PathBuf::from("/w.wasm"), vec![], &options)
            .unwrap();
        let policy = &spec.policy;
        let names: Vec<_> = policy.programs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["sh"]);
        assert!(policy.allowed_env.is_empty() && policy.forks.is_empty());
        assert_eq!(policy.child_id, (1234, 3000));
        assert_eq!(policy.allowed_uids, ctx.policy.allowed_uids);
        assert!(policy.cgroup_per_child && policy.network && policy.require_confinement);
        assert!(!policy.confine);
        assert_eq!(policy.channel_spin, Duration::from_micros(7));
        // It crosses to the worker process as JSON, whole.
        let sent = serde_json::to_string(&spec).unwrap();
        let got: WorkerSpec = serde_json::from_str(&sent).unwrap();
        assert_eq!(serde_json::to_string(&got).unwrap(), sent);
    }

    #[test]
    fn other_worker_limits_only_go_down() {
        let ctx = ctx(8, None);
        let mut asked = limits(None, None);
        asked.max_buffer = Some(1 << 10);
        let (worker, _) = ctx.policy.narrow_limits(&asked, free(&ctx)).unwrap();
        assert_eq!(worker.max_buffer, 1 << 10);
        asked.max_buffer = Some(u64::MAX);
        assert!(ctx.policy.narrow_limits(&asked, free(&ctx)).is_err());
    }
}
