//! Starting a [`Prepared`] command as the leader of its own process group,
//! and the guard that kills the group.

use crate::ProcessCtx;
use crate::audit::AuditLog;
use crate::cgroup::ChildCgroup;
use crate::failure::Failure;
use crate::outcome::{Confinement, ExitStatus, ResourceUsage};
use crate::policy::{Denial, Prepared};
use crate::sandbox::{Layers, Sandbox};
use rustix::process::{Pid, Signal, kill_process_group};
use serde_json::json;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::io::unix::AsyncFd;

/// A started child: the leader of its own process group.
pub(crate) struct Launched {
    pub child: OsChild,
    pub group: GroupGuard,
    /// How the child is confined.
    pub confinement: Confinement,
}

/// What one of a child's stdin, stdout and stderr is connected to.
#[derive(Debug)]
pub(crate) enum ChildIo {
    /// A new pipe; the host keeps the other end.
    Pipe,
    /// The host's own stdin, opened anew read-only (stdin only).
    Inherit,
    /// `/dev/null`.
    Null,
    /// A descriptor the host opened for it: a file in a granted directory,
    /// or the read end of another child's output pipe.
    Given(OwnedFd),
}

/// How a reaped process ended, and what it used.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ended {
    pub status: ExitStatus,
    pub usage: ResourceUsage,
}

/// A started OS process, known by a pidfd (so waiting and signalling the
/// leader can never hit a recycled pid), with the host's ends of its pipes.
pub(crate) struct OsChild {
    pid: Pid,
    /// `None` once given to the background reaper on drop.
    pidfd: Option<AsyncFd<OwnedFd>>,
    ended: Option<Ended>,
    /// The write end of the child's stdin pipe.
    pub stdin: Option<OwnedFd>,
    /// The read end of the child's stdout pipe.
    pub stdout: Option<OwnedFd>,
    /// The read end of the child's stderr pipe.
    pub stderr: Option<OwnedFd>,
}

impl OsChild {
    /// The host's child `pid`, known by `pidfd`, without pipes.
    pub fn new(pid: Pid, pidfd: OwnedFd) -> io::Result<OsChild> {
        Ok(OsChild {
            pid,
            pidfd: Some(crate::sys::watch(pidfd, tokio::io::Interest::READABLE)?),
            ended: None,
            stdin: None,
            stdout: None,
            stderr: None,
        })
    }

    /// Waits for the process to exit and reaps it. Cancel safe.
    pub async fn wait(&mut self) -> io::Result<Ended> {
        if let Some(ended) = self.ended {
            return Ok(ended);
        }
        let pidfd = self.pidfd.as_ref().expect("a child is reaped only on drop");
        loop {
            let mut ready = pidfd.readable().await?;
            if let Some(ended) = reap(pidfd.get_ref().as_fd())? {
                self.ended = Some(ended);
                return Ok(ended);
            }
            ready.clear_ready();
        }
    }

    /// The exit status, once the process has been reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        self.ended.map(|e| e.status)
    }

    /// Reaps the process if it has exited, without blocking.
    pub fn try_wait(&mut self) -> io::Result<Option<Ended>> {
        if self.ended.is_none() {
            let pidfd = self.pidfd.as_ref().expect("a child is reaped only on drop");
            self.ended = reap(pidfd.get_ref().as_fd())?;
        }
        Ok(self.ended)
    }

    /// A pidfd of the process, for a deadline that must know whether it
    /// has exited (`None` once reaped).
    pub fn pidfd(&self) -> io::Result<Option<OwnedFd>> {
        match (&self.pidfd, self.ended) {
            (Some(fd), None) => Ok(Some(rustix::io::fcntl_dupfd_cloexec(fd.get_ref(), 3)?)),
            _ => Ok(None),
        }
    }
}

impl Drop for OsChild {
    /// Reaps the process in the background if nobody did: the caller has
    /// killed it (or it is about to exit), so no zombie is left behind.
    fn drop(&mut self) {
        let (Some(pidfd), None) = (self.pidfd.take(), self.ended) else {
            return;
        };
        if let Ok(Some(_)) = reap(pidfd.get_ref().as_fd()) {
            return;
        }
        let pid = self.pid.as_raw_nonzero().get();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    while let Ok(mut ready) = pidfd.readable().await {
                        match reap(pidfd.get_ref().as_fd()) {
                            Ok(None) => ready.clear_ready(),
                            Ok(Some(_)) | Err(_) => break,
                        }
                    }
                });
            }
            Err(_) => tracing::warn!(pid, "no runtime to reap a child in: it stays a zombie"),
        }
    }
}

/// Reaps the process of `pidfd` if it has exited.
fn reap(pidfd: BorrowedFd<'_>) -> io::Result<Option<Ended>> {
    Ok(crate::sys::reap_pidfd(pidfd)?.map(|(exit, usage)| Ended {
        status: match exit {
            // Exit codes are 0..=255 on Unix; `as u8` keeps the low byte as wait(2) does.
            crate::sys::RawExit::Code(code) => ExitStatus::Exited(code as u8),
            crate::sys::RawExit::Signal(sig) => ExitStatus::Signaled(sig as u8),
        },
        usage: resource_usage(&usage),
    }))
}

/// The WIT resource usage of `wait4`'s (or `waitid`'s) `rusage`.
pub(crate) fn resource_usage(r: &libc::rusage) -> ResourceUsage {
    let ns = |t: libc::timeval| {
        (t.tv_sec.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_usec.max(0) as u64 * 1000)
    };
    ResourceUsage {
        user_cpu_ns: ns(r.ru_utime),
        system_cpu_ns: ns(r.ru_stime),
        // Linux gives kilobytes.
        max_rss_bytes: (r.ru_maxrss.max(0) as u64).saturating_mul(1024),
    }
}

/// Owns a child's process group: dropping it kills every process left in
/// the group with SIGKILL and gives back the child's slots in the
/// live-child limit. ([`OsChild`] reaps the leader in the background if nobody waited.)
pub(crate) struct GroupGuard {
    pgid: Pid,
    live: Arc<AtomicUsize>,
    /// The live-children slots it holds (more than one for a worker).
    slots: AtomicUsize,
    audit: Option<AuditLog>,
    started: Instant,
    status: OnceLock<ExitStatus>,
    /// The group was killed while the leader was still unreaped: nothing
    /// left to do on drop.
    killed: std::sync::atomic::AtomicBool,
    /// The child's own cgroup, if it has one: SIGKILL goes to all of it,
    /// and dropping it kills what is left.
    cgroup: Option<ChildCgroup>,
}

impl GroupGuard {
    /// Sends `signal` to every process of the group (SIGKILL also to every
    /// process of the child's own cgroup, if it has one). A group that is
    /// already gone is not an error.
    ///
    /// Once the leader has been reaped, its pid may be given to a new
    /// process (pids wrap around, at 32768 on some machines) — but only
    /// when no process is left in the group, since a group keeps its number
    /// in use. So if a process with the leader's pid exists then, it is
    /// someone else's, our group is empty, and nothing is sent.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        if signal == Signal::KILL
            && let Some(cgroup) = &self.cgroup
        {
            // Also what left the group (a cgroup's members are only ever
            // this child's, whatever happens to pids).
            cgroup.kill()?;
        }
        if self.status.get().is_some() && rustix::process::test_kill_process(self.pgid).is_ok() {
            return Ok(());
        }
        match kill_process_group(self.pgid, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Kills the group now, before the leader is reaped (the caller reaps
    /// it next), so that dropping the guard later sends nothing.
    pub fn kill_before_reaping(&self) {
        if let Err(e) = self.signal(Signal::KILL) {
            tracing::error!(pgid = self.pid(), error = %e, "cannot kill process group");
        }
        self.killed.store(true, Ordering::Release);
    }

    /// Takes `slots` more of the guest's live-children slots, given back
    /// on drop (a warm worker, once it gets its specification).
    pub fn count(&self, slots: usize) {
        self.slots.fetch_add(slots, Ordering::AcqRel);
        self.live.fetch_add(slots, Ordering::AcqRel);
    }

    /// Notes that the leader has been reaped, and how it ended (for
    /// [`signal`](Self::signal) and the audit log).
    pub fn exited(&self, status: ExitStatus) {
        let _ = self.status.set(status);
    }

    /// The process group id, which is the leader's pid.
    pub fn pid(&self) -> u32 {
        self.pgid.as_raw_nonzero().get().unsigned_abs()
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !*self.killed.get_mut()
            && let Err(e) = self.signal(Signal::KILL)
        {
            tracing::error!(pgid = self.pid(), error = %e, "cannot kill process group");
        }
        self.live.fetch_sub(*self.slots.get_mut(), Ordering::AcqRel);
        if let Some(audit) = &self.audit {
            let status = self.status.get().map_or("killed".to_owned(), status_text);
            let duration_ms = self.started.elapsed().as_millis() as u64;
            audit.record(
                "exit",
                json!({ "pid": self.pid(), "status": status, "duration_ms": duration_ms }),
            );
        }
    }
}

/// The capabilities a child keeps (if the host has them), for the audit
/// log: `none`, or their names.
fn capability_names(keep: u64) -> String {
    const NAMES: &[(u32, &str)] = &[
        (7, "setuid"),
        (6, "setgid"),
        (5, "kill"),
        (18, "sys_chroot"),
        (21, "sys_admin"),
    ];
    let names: Vec<&str> = (NAMES.iter())
        .filter(|(bit, _)| keep & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect();
    match names.is_empty() {
        true => "none".to_owned(),
        false => names.join(","),
    }
}

/// `exited(N)` or `signaled(N)`.
pub(crate) fn status_text(status: &ExitStatus) -> String {
    match status {
        ExitStatus::Exited(code) => format!("exited({code})"),
        ExitStatus::Signaled(signal) => format!("signaled({signal})"),
    }
}

impl ProcessCtx {
    /// Refuses a child (or worker) that would take `slots` live-children
    /// slots and `spawns` of the total spawns, if the guest has not that
    /// many left.
    pub(crate) fn check_budget(&self, slots: usize, spawns: u64) -> Result<(), Failure> {
        let live = self.live_children.load(Ordering::Acquire);
        if slots > 0 && live + slots > self.policy.limits.max_live_children {
            return Err(self.deny(Denial::Limit {
                limit: "max_live_children",
                message: format!(
                    "{live} of the {} live-children slots are taken (by children, and lent to workers)",
                    self.policy.limits.max_live_children
                ),
            }));
        }
        if let Some(max) = self.policy.limits.max_total_spawns
            && spawns > 0
            && self.total_spawns + spawns > max
        {
            return Err(self.deny(Denial::Limit {
                limit: "max_total_spawns",
                message: format!("{max} children were started, the most allowed"),
            }));
        }
        Ok(())
    }

    /// Starts `prepared` with the given stdin, stdout and stderr, counting
    /// it against the live-child and total-spawn limits.
    pub(crate) fn launch(
        &mut self,
        kind: &'static str,
        prepared: &Prepared,
        stdio: [ChildIo; 3],
    ) -> Result<Launched, Failure> {
        self.launch_with(kind, prepared, |walls| {
            start_os_process(prepared, stdio, walls)
        })
    }

    /// As [`launch`](Self::launch), the OS process started by `start`
    /// behind the walls it is given (a worker template forks it).
    pub(crate) fn launch_with(
        &mut self,
        kind: &'static str,
        prepared: &Prepared,
        start: impl FnOnce(&Walls<'_>) -> Result<(OsChild, Pid), Failure>,
    ) -> Result<Launched, Failure> {
        // Slots lent to live workers count as live children: the guest's
        // budget covers its whole tree. A warm worker waiting for its
        // specification counts only once it gets one.
        let (slots, spawns) = match prepared.counted {
            true => (1 + prepared.lent.live, 1 + prepared.lent.spawns),
            false => (0, 0),
        };
        self.check_budget(slots, spawns)?;
        let layers = self.layers(prepared.confine, prepared.identity);
        if prepared.confine
            && self.policy.require_confinement
            && layers.level() != Confinement::Full
        {
            return Err(Failure::Unsupported(format!(
                "children must be fully confined, but these layers are down: {}",
                layers.missing().join(", ")
            )));
        }
        if let Some((uid, gid)) = prepared.identity
            && !layers.identity
        {
            return Err(Failure::Unsupported(format!(
                "children cannot run as uid {uid} gid {gid} here: only the children of a root host, in the sandbox, change their user"
            )));
        }
        let landlock = match (layers.landlock, &self.confiner.ruleset) {
            (Confinement::Full | Confinement::Partial, Some(fd)) => Some(fd.as_fd()),
            _ => None,
        };
        let sandbox = match layers.mount {
            true => self.sandbox(),
            false => None,
        };
        let cwd = match (sandbox, &prepared.cwd) {
            (Some(sandbox), Some(dir)) => Some(sandbox.view(dir).map_err(|e| {
                Failure::from_io(
                    format_args!(
                        "entering working directory {} inside the sandbox",
                        prepared.cwd_host.display()
                    ),
                    &e,
                )
            })?),
            _ => None,
        };
        let identity = layers
            .identity
            .then(|| prepared.identity.unwrap_or(self.policy.child_id));
        let child_cgroup = match (&self.cgroup, self.policy.cgroup_per_child) {
            (Some(guest), true) => Some(
                (guest.child()).map_err(|e| Failure::from_io("making the child's cgroup", &e))?,
            ),
            _ => None,
        };
        let cgroup = match &child_cgroup {
            Some(child) => Some(child.fd()),
            None => self.cgroup.as_ref().map(|c| c.fd()),
        };
        // Child limits are for children: a forked worker (the host itself,
        // running wasm) applies them to its own children instead.
        let rlimits = match prepared.confine {
            true => self.policy.limits.rlimits.to_list(),
            false => Vec::new(),
        };
        let walls = Walls {
            cwd: match (&cwd, &prepared.cwd) {
                (Some(view), _) => Some(view.as_fd()),
                (None, Some(dir)) => Some(dir.as_fd()),
                (None, None) => None,
            },
            landlock,
            cgroup,
            keep_caps: match prepared.confine || !self.policy.use_sandbox {
                true => self.policy.keep_caps,
                false => self.policy.keep_caps | crate::sandbox::WORKER_CAPS,
            },
            rlimits: &rlimits,
            namespaces: sandbox.map(|s| s.namespaces()),
            identity,
            seccomp: layers.seccomp.then(crate::sandbox::seccomp_program),
        };
        let walls_caps = walls.keep_caps;
        let (child, pgid) = start(&walls)?;
        self.live_children.fetch_add(slots, Ordering::AcqRel);
        self.total_spawns += spawns;
        let confinement = layers.level();
        if let Some(audit) = &self.audit {
            audit.record(
                kind,
                json!({
                    "pid": pgid.as_raw_nonzero().get(),
                    "program": prepared.program,
                    "argv": std::iter::once(&prepared.argv0).chain(&prepared.args).collect::<Vec<_>>(),
                    "cwd": prepared.cwd_host,
                    "env": prepared.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                    "confinement": crate::sandbox::confinement_name(confinement),
                    "layers": layers.to_json(),
                    "identity": identity.map(|(uid, gid)| json!({ "uid": uid, "gid": gid })),
                    "rlimits": self.policy.limits.rlimits,
                    "cgroup": match &child_cgroup {
                        Some(child) => Some(child.path()),
                        None => self.cgroup.as_ref().map(|c| c.path()),
                    },
                    "capabilities": capability_names(walls_caps),
                }),
            );
        }
        tracing::debug!(
            target: "wasmproc::process",
            program = %prepared.program.display(),
            args = ?prepared.args,
            cwd = %prepared.cwd_host.display(),
            env = ?prepared.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            pid = pgid.as_raw_nonzero().get(),
            "started child"
        );
        Ok(Launched {
            confinement,
            child,
            group: GroupGuard {
                pgid,
                live: self.live_children.clone(),
                slots: slots.into(),
                audit: self.audit.clone(),
                started: Instant::now(),
                status: OnceLock::new(),
                killed: false.into(),
                cgroup: child_cgroup,
            },
        })
    }
}

impl ProcessCtx {
    /// The walls a child stands behind: a confined one (not a forked
    /// worker) running as `identity` (the guest's ask) or the child user.
    pub(crate) fn layers(&self, confined: bool, identity: Option<(u32, u32)>) -> Layers {
        if !confined || !self.policy.confine {
            return Layers {
                identity: false,
                mount: false,
                network: false,
                ipc: false,
                seccomp: false,
                landlock: Confinement::None,
            };
        }
        let sandbox = self.sandbox();
        let (uid, gid) = identity.unwrap_or(self.policy.child_id);
        Layers {
            // A user namespace maps only the host's own ids; and root
            // asked for is no unprivileged identity.
            identity: self.policy.use_sandbox
                && self.policy.keep_caps == 0
                && self.can_change_user
                && !sandbox.is_some_and(Sandbox::has_user_namespace)
                && uid != 0
                && gid != 0,
            mount: sandbox.is_some(),
            // A worker's sandbox is its parent's: without a network
            // namespace when the parent had the network.
            network: sandbox.is_some_and(Sandbox::has_network_namespace) || self.policy.network,
            ipc: sandbox.is_some(),
            seccomp: self.policy.use_sandbox,
            landlock: self.confiner.level,
        }
    }

    /// The guest's sandbox, if it was built (see
    /// [`ProcessCtxBuilder::build`](crate::ProcessCtxBuilder::build)).
    pub(crate) fn sandbox(&self) -> Option<&Sandbox> {
        self.sandbox.as_deref()
    }
}

/// Everything that confines a child, as `sys::clone_and_exec` takes it.
pub(crate) struct Walls<'a> {
    /// The working directory (in the sandbox's view, when there is one).
    cwd: Option<BorrowedFd<'a>>,
    landlock: Option<BorrowedFd<'a>>,
    /// The cgroup to start the child in.
    pub cgroup: Option<BorrowedFd<'a>>,
    keep_caps: u64,
    rlimits: &'a [(rustix::process::Resource, u64)],
    namespaces: Option<crate::sys::Namespaces<'a>>,
    identity: Option<(u32, u32)>,
    seccomp: Option<&'a [libc::sock_filter]>,
}

/// Starts the OS process for `prepared`; returns it and its pid.
fn start_os_process(
    prepared: &Prepared,
    stdio: [ChildIo; 3],
    walls: &Walls<'_>,
) -> Result<(OsChild, Pid), Failure> {
    let pipes = |e: io::Error| Failure::from_io("creating the child's pipes", &e);
    let c_string = |what: &str, s: Vec<u8>| {
        CString::new(s).map_err(|_| Failure::InvalidArgument(format!("{what} contains a NUL byte")))
    };
    let program = c_string(
        "the program path",
        match walls.namespaces {
            Some(_) => &prepared.real_program,
            None => &prepared.program,
        }
        .as_os_str()
        .as_encoded_bytes()
        .to_vec(),
    )?;
    let argv = (std::iter::once(&prepared.argv0).chain(&prepared.args))
        .map(|a| c_string("an argument", a.clone().into_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = (prepared.env.iter())
        .map(|(k, v)| c_string("the environment", format!("{k}={v}").into_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let null = match stdio.iter().any(|io| matches!(io, ChildIo::Null)) {
        true => Some(dev_null().map_err(|e| Failure::from_io("opening /dev/null", &e))?),
        false => None,
    };
    // An inherited stream is opened anew, read-only for stdin: the child
    // shares no open file description with the host, so it can neither
    // write to nor truncate, seek or re-flag the host's.
    if stdio[1..].iter().any(|io| matches!(io, ChildIo::Inherit)) {
        return Err(Failure::Io(
            "only stdin is inherited as the host's (output goes through a pipe)".into(),
        ));
    }
    let host_stdin = match stdio[0] {
        ChildIo::Inherit => Some(
            reopen_stdin()
                .or_else(|_| File::open("/dev/null"))
                .map_err(|e| Failure::from_io("reopening stdin", &e))?,
        ),
        _ => None,
    };
    // (the host's end, the child's end) of each stream.
    let mut ends: [(Option<OwnedFd>, Option<OwnedFd>); 3] = Default::default();
    for (i, io) in stdio.iter().enumerate() {
        if matches!(io, ChildIo::Pipe) {
            let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| pipes(e.into()))?;
            ends[i] = if i == 0 {
                (Some(write), Some(read))
            } else {
                (Some(read), Some(write))
            };
        }
    }
    let child_fd = |i: usize| match &stdio[i] {
        ChildIo::Pipe => ends[i].1.as_ref().expect("pipe created").as_fd(),
        ChildIo::Inherit => host_stdin.as_ref().expect("stdin reopened").as_fd(),
        ChildIo::Null => null.expect("/dev/null opened"),
        ChildIo::Given(fd) => fd.as_fd(),
    };
    let spec = crate::sys::SpawnSpec {
        program: &program,
        argv: &argv,
        envp: &envp,
        stdio: [child_fd(0), child_fd(1), child_fd(2)],
        cwd: walls.cwd,
        inherit: &prepared.inherit_fds,
        landlock: walls.landlock,
        rlimits: walls.rlimits,
        cgroup: walls.cgroup,
        keep_caps: walls.keep_caps,
        namespaces: walls.namespaces,
        identity: walls.identity,
        seccomp: walls.seccomp,
    };
    let (pid, pidfd) =
        crate::sys::clone_and_exec(&spec).map_err(|e| spawn_error(prepared, walls.identity, &e))?;
    let [stdin, stdout, stderr] = ends.map(|(ours, _)| ours);
    let mut child =
        OsChild::new(pid, pidfd).map_err(|e| Failure::from_io("watching the child", &e))?;
    (child.stdin, child.stdout, child.stderr) = (stdin, stdout, stderr);
    Ok((child, pid))
}

/// The host's stdin opened anew, read-only, if it is a pipe, a character
/// device or a regular file (never a directory, which would take the child
/// out of its view): without becoming a controlling terminal, and without
/// waiting for a writer on a FIFO.
fn reopen_stdin() -> io::Result<File> {
    use rustix::fs::{FileType, OFlags};
    let kind = FileType::from_raw_mode(rustix::fs::fstat(io::stdin().as_fd())?.st_mode);
    if !matches!(
        kind,
        FileType::Fifo | FileType::CharacterDevice | FileType::RegularFile
    ) {
        return Err(io::Error::other("stdin is not a pipe, device or file"));
    }
    let fd = rustix::fs::open(
        "/proc/self/fd/0",
        OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(File::from(fd))
}

/// `/dev/null`, opened once for every child that gets it.
pub(crate) fn dev_null() -> io::Result<BorrowedFd<'static>> {
    static DEV_NULL: OnceLock<File> = OnceLock::new();
    if DEV_NULL.get().is_none() {
        let file = File::options().read(true).write(true).open("/dev/null")?;
        // A racing thread may have set it first: either file will do.
        let _ = DEV_NULL.set(file);
    }
    Ok(DEV_NULL.get().expect("just set").as_fd())
}

fn spawn_error(prepared: &Prepared, identity: Option<(u32, u32)>, err: &io::Error) -> Failure {
    let program = prepared.program.display();
    match err.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
        Some(rustix::io::Errno::NOENT) => {
            Failure::NotFound(format!("program {program} does not exist"))
        }
        Some(rustix::io::Errno::ACCESS) => match identity {
            Some((uid, gid)) => Failure::AccessDenied(format!(
                "the OS refused to execute {program} as uid {uid} gid {gid} (children of a root host run as that user: it must be able to execute the program and enter its directories)"
            )),
            None => Failure::AccessDenied(format!("the OS refused to execute {program}")),
        },
        Some(rustix::io::Errno::TOOBIG) => Failure::LimitExceeded(format!(
            "arguments and environment of {program} are too large for the OS"
        )),
        Some(rustix::io::Errno::NOEXEC) => {
            Failure::InvalidArgument(format!("{program} is not in an executable format"))
        }
        _ => Failure::from_io(format_args!("starting {program}"), err),
    }
}

/// The signal numbered `n`, or `invalid-argument`.
pub(crate) fn signal(n: u8) -> Result<Signal, Failure> {
    Signal::from_named_raw(i32::from(n))
        .ok_or_else(|| Failure::InvalidArgument(format!("{n} is not a signal number")))
}
