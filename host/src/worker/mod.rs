//! The worker side of `fork`: what a forked worker may do, as the parent
//! host sends it, and how the worker process sets itself up from it.
//!
//! A worker is started as `WORKER_EXECUTABLE __worker --channel-fd N`, with
//! descriptor N one end of a Unix socketpair, an empty environment (but for
//! a few host settings, see [`HOST_ENV`]) and `/dev/null` as stdio; it may
//! be started long before it is used (a warm worker, its engine and the
//! components it may run loaded). Most worker processes are not started
//! from the executable but forked, as the host's own children, by the
//! guest's worker template ([`serve_as_template`]), which has all that
//! done already. The first message on the channel is a
//! JSON `WorkerSpec`, sent with every descriptor it names (`SCM_RIGHTS`):
//! its stdout and stderr, report pipe, directories, code and launch
//! socket; everything after it belongs to the guests. The worker's guest
//! gets no grant the spec does not name, and the spec only ever names a
//! subset of its parent's, with the parent's confinement settings whole.
//! On a root host every worker process runs inside its guest's sandbox
//! (its view and PID namespace: `Launcher::worker_view`). It keeps only
//! `CAP_SETUID` and `CAP_SETGID` (`sandbox::WORKER_CAPS`) until its
//! specification comes, then becomes its guest's user with no capability
//! at all ([`WorkerProcess::accept`]) and confines itself with Landlock
//! ([`confine`]) before its runtime starts. Where the host knows that user
//! ahead (a guest's, not an agent's many sessions'), every worker process,
//! the template included, becomes it as it starts ([`become_user`]), so
//! that none holds a privilege while it waits. It starts no child itself: the host that forked it does, over
//! the launch socket (see `launch::remote`). Its guest's audit
//! events and denials go up a pipe to the parent host
//! (`WorkerSpec::report_fd`).

pub(crate) mod spec;

use crate::ctx::{ProcessCtx, ProcessCtxBuilder};
use crate::policy::DirAccess;
use anyhow::{Context as _, Result, bail};
pub use spec::HOST_ENV;
use spec::{TemplateReply, TemplateRequest, WorkerSpec};
use std::os::fd::{AsFd as _, RawFd};
use std::os::unix::net::UnixStream;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

/// A worker process, set up from what its parent host sent.
pub struct WorkerProcess {
    /// What the parent sent.
    spec: WorkerSpec,
    /// The worker guest's WASI context: arguments, environment, its
    /// directories as preopens and the process's stdio.
    pub wasi: WasiCtxBuilder,
    /// The worker guest's process capabilities (the channel to its parent
    /// is attached with [`ProcessCtx::connect_parent`]).
    pub process: ProcessCtxBuilder,
    /// The channel's socket, until the runtime that will serve it starts.
    pub channel: UnixStream,
    /// The report pipe to the parent host, for [`report_trap`].
    pub reports: Option<std::fs::File>,
    /// The compiled code of its component.
    code: crate::code::Code,
}

/// The channel on the inherited descriptor `channel_fd`, as the parent
/// host started this worker (or worker template) process with.
pub fn inherited_channel(channel_fd: RawFd) -> Result<UnixStream> {
    let fd = crate::sys::take_inherited_fd(channel_fd).context("taking the channel")?;
    Ok(UnixStream::from(fd))
}

/// The compiled code the host passed a warm worker or the worker template
/// when it started it, as its `--preload KEY:FD` argument names it: the
/// code's cache key, and the component loaded into `engine`.
pub fn preloaded(
    engine: &wasmtime::Engine,
    arg: &str,
) -> Result<(String, wasmtime::component::Component)> {
    let (key, fd) = (arg.rsplit_once(':')).context("--preload takes KEY:FD")?;
    let fd = crate::sys::take_inherited_fd(fd.parse().context("--preload takes KEY:FD")?)
        .context("taking preloaded code")?;
    Ok((key.to_owned(), crate::code::load(engine, fd.as_fd())?))
}

/// Serves as the worker template of the host at the other end of
/// `channel`: a worker process that has its engine up and its guest's
/// components loaded, and for each request forks a copy of itself as a
/// sibling (a child of the host, see `sys::fork_as_sibling`), which goes
/// on as a new worker waiting for its specification. A new worker thus
/// costs a `fork` instead of starting the executable, its dynamic
/// linking, engine and component loads. Returns, in each new worker, its
/// channel; in the template, `None` once the host closed the channel.
///
/// Must be called while this process has one thread (checked): the
/// template forks copies of itself, and starts no thread. It holds no grant
/// of the guest's: its channel, the code it preloaded (never the component
/// cache: no worker opens it) and `CAP_SETUID`/`CAP_SETGID`, which each
/// worker it forks drops for good when its specification comes. Every
/// worker it forks holds only its own channel (the
/// template's is closed at once) until its specification comes, as any
/// warm worker, and leads its own process group before the host hears of
/// it.
pub fn serve_as_template(channel: UnixStream) -> Result<Option<UnixStream>> {
    channel.set_nonblocking(false)?;
    if !crate::sys::can_fork_as_sibling() {
        bail!("this process cannot serve as a worker template (it needs glibc on x86_64)");
    }
    let one = crate::sys::one_thread().context("a worker template must have one thread")?;
    let host = rustix::process::getppid();
    reply(&channel, &TemplateReply::Ready, None)?;
    loop {
        let (request, fds) = match crate::channel::read_frame_with_fds(&channel) {
            Ok(frame) => frame,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e).context("reading the host's request"),
        };
        let request: TemplateRequest =
            serde_json::from_slice(&request).context("reading the host's request")?;
        let mut fds = fds.into_iter();
        let (Some(socket), cgroup) = (fds.next(), fds.next()) else {
            bail!("the host asked for a worker without its channel");
        };
        if request.cgroup != cgroup.is_some() {
            bail!("the host's request and the descriptors it sent disagree on the cgroup");
        }
        // The new worker says, by closing its end, that it leads its own
        // group (or has failed to) before the host hears of it.
        let (settled, settled_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        match crate::sys::fork_as_sibling(&one, cgroup.as_ref().map(|c| c.as_fd())) {
            Err(e) => {
                let error = format!("cannot fork a worker: {e}");
                reply(&channel, &TemplateReply::Failed { error }, None)?;
            }
            Ok(crate::sys::Forked::Child) => {
                drop((channel, settled));
                become_worker(host)?;
                rustix::io::write(&settled_end, b"!")?;
                return Ok(Some(UnixStream::from(socket)));
            }
            Ok(crate::sys::Forked::Parent(pid, pidfd)) => {
                drop(settled_end);
                let mut byte = [0u8];
                let answer = match rustix::io::read(&settled, &mut byte) {
                    Ok(1) => TemplateReply::Started {
                        pid: pid.as_raw_nonzero().get(),
                    },
                    _ => TemplateReply::Failed {
                        error: format!("the worker forked as pid {pid:?} failed to set up"),
                    },
                };
                reply(&channel, &answer, Some(pidfd.as_fd()))?;
            }
        }
    }
}

/// Sends the host `answer`, with `pidfd`.
fn reply(
    channel: &UnixStream,
    answer: &TemplateReply,
    pidfd: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<()> {
    let bytes = serde_json::to_vec(answer)?;
    let passed: Vec<_> = pidfd.into_iter().collect();
    crate::channel::send_frame_with_fds(channel, &bytes, &passed).context("answering the host")
}

/// Makes this worker process (a warm one, the template, or one started for
/// the fork at hand) `user` as soon as it starts, before it reads anything
/// from the host: the user it would become when its specification comes
/// (see [`WorkerProcess::accept`]), so that it holds no privilege while it
/// waits, and neither do the copies the template forks. Must be called
/// while the process has one thread.
pub fn become_user(user: (u32, u32)) -> Result<()> {
    crate::sys::shed_privileges(Some(user)).context("giving up the worker process's privileges")
}

/// Makes a process just forked from the template of host `host` a worker
/// of its own: killed when the host goes, the leader of its own process
/// group (the group the host kills), as a worker the host starts is.
/// (`PR_SET_PDEATHSIG` follows the host's thread that started the
/// template, as it follows the thread that starts any child.)
fn become_worker(host: Option<rustix::process::Pid>) -> Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    if rustix::process::getppid() != host {
        bail!("the host ended while a worker was forked for it");
    }
    rustix::process::setsid()?;
    Ok(())
}

impl WorkerProcess {
    /// Reads the specification from `channel` and prepares the worker's contexts. Needs no
    /// runtime and starts no thread, so that the worker can still
    /// [`confine`] itself after building them.
    pub fn accept(channel: UnixStream) -> Result<WorkerProcess> {
        channel.set_nonblocking(false)?;
        let (first, passed) = crate::channel::read_frame_with_fds(&channel)
            .context("no worker specification from the parent")?;
        let mut spec: WorkerSpec =
            serde_json::from_slice(&first).context("reading the worker specification")?;
        let mut passed: Vec<Option<std::os::fd::OwnedFd>> = passed.into_iter().map(Some).collect();
        let mut take = |i: RawFd| {
            (usize::try_from(i).ok())
                .and_then(|i| passed.get_mut(i)?.take())
                .ok_or_else(|| std::io::Error::other(format!("descriptor {i} was not sent")))
        };
        if let Some((out, err)) = spec.stdio {
            rustix::stdio::dup2_stdout(take(out)?)?;
            rustix::stdio::dup2_stderr(take(err)?)?;
        }
        let mut dirs = Vec::new();
        for dir in &mut spec.dirs {
            let fd =
                take(dir.fd).with_context(|| format!("taking directory {}", dir.guest_path))?;
            dir.fd = std::os::fd::AsRawFd::as_raw_fd(&fd);
            dirs.push(fd);
        }

        let mut wasi = WasiCtx::builder();
        let name = spec
            .component
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        wasi.inherit_stdout()
            .inherit_stderr()
            .arg(name)
            .args(&spec.args)
            .envs(&spec.env);
        let mut process = ProcessCtx::builder();
        for (dir, fd) in spec.dirs.iter().zip(dirs) {
            let (perms, access) = if dir.read_only {
                (FsPerms::ReadOnly, DirAccess::ReadOnly)
            } else {
                (FsPerms::ReadWrite, DirAccess::ReadWrite)
            };
            // The same directory (not a path that may have changed since).
            let same = format!("/proc/self/fd/{}", dir.fd);
            wasi.preopened_dir(&same, &dir.guest_path, perms)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("opening directory {}", dir.guest_path))?;
            process.dir_handle(
                cap_std::fs::Dir::from_std_file(fd.into()),
                &dir.host_path,
                &dir.guest_path,
                access,
            )?;
        }
        if spec.component.as_os_str().is_empty() {
            bail!("the worker specification names no component");
        }
        let mut codes = std::collections::HashMap::new();
        for code in &spec.code {
            let fd = take(code.fd).context("taking the compiled code")?;
            let key = code.key.clone();
            codes.insert(code.component.clone(), crate::code::Code::new(key, fd));
        }
        // (Kept in `codes` too: a worker may fork its own component.)
        let Some(code) = codes.get(&spec.component).cloned() else {
            bail!("the worker specification has no code for its component");
        };
        process.policy(spec.policy.clone());
        if let Some(launch) = &spec.launch {
            let socket = UnixStream::from(take(launch.fd).context("taking the launch socket")?);
            let client = crate::launch::remote::client::LaunchClient::new(socket, launch.level)?;
            process.launcher(client);
        }
        if !spec.policy.forks.is_empty() {
            // Its own workers run the same executable, on the code handed
            // down with this specification.
            let code = crate::code::WorkerCode::handed(codes);
            process.worker_executable(std::env::current_exe()?, code)?;
        }
        let mut reports = None;
        if let Some(fd) = spec.report_fd {
            let pipe = std::fs::File::from(take(fd).context("taking the report pipe")?);
            reports = Some(pipe.try_clone()?);
            report_to_parent(&mut process, pipe)?;
        }
        shed_privileges(&spec.policy)?;
        Ok(WorkerProcess {
            spec,
            wasi,
            process,
            channel,
            reports,
            code,
        })
    }
}

impl WorkerProcess {
    /// The component to run (absolute path, granted to the parent).
    pub fn component(&self) -> &std::path::Path {
        &self.spec.component
    }

    /// The cache key of its component's code: a component loaded ahead
    /// of the specification (`--preload`) with the same key is the same
    /// code.
    pub fn code_key(&self) -> &str {
        &self.code.key
    }

    /// Its component, from the code the parent host handed over.
    pub fn load(&self, engine: &wasmtime::Engine) -> Result<wasmtime::component::Component> {
        crate::code::load(engine, self.code.fd())
    }
}

/// Gives up every privilege this worker process has, before any of its
/// guest's code runs: it becomes its guest's user (the one its children
/// run as, when the host is root and gives children a user of their
/// own), with no capability left and no way to gain one (`no_new_privs`).
/// What it needs of the host's rights it was given as descriptors
/// (opened above), and its children are started by its launcher (see
/// [`crate::launch::remote`]); so native code in a worker, should the
/// code it runs ever be an attacker's, is just another process of the
/// guest's user.
fn shed_privileges(policy: &crate::policy::Policy) -> Result<()> {
    // A copy of a worker template that became the user already has no
    // root to give up (and no right to change user again).
    let user = crate::launch::identity::worker_user(policy)
        .filter(|_| rustix::process::geteuid().is_root());
    crate::sys::shed_privileges(user).context("giving up the worker's privileges")
}

/// Tells the parent host that the worker's guest trapped, with `message`,
/// so that its `termination` says so (`trap`) rather than only an exit
/// code.
pub fn report_trap(pipe: &mut std::fs::File, message: &str) {
    use std::io::Write;
    let line = serde_json::json!({ "trap": message });
    let _ = writeln!(pipe, "{line}");
}

/// Sends `process`'s audit events (as their JSON lines) and denials (as
/// `{"denied": REASON}`) up `pipe` to the parent host, which writes them to
/// its own audit log and reports the denials as its own.
fn report_to_parent(process: &mut ProcessCtxBuilder, pipe: std::fs::File) -> Result<()> {
    let denials = std::sync::Mutex::new(pipe.try_clone()?);
    process
        .audit_log(crate::audit::AuditLog::new(pipe))
        .on_denial(move |denial| {
            use std::io::Write;
            let line = serde_json::json!({ "denied": denial.to_string() });
            let mut pipe = denials.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(pipe, "{line}");
        });
    Ok(())
}

/// Confines this worker process with Landlock before its runtime starts
/// (see [`crate::launch::confine`]): to what its children may reach, plus its
/// guest's cgroup. It needs no file of its own (its code came as a memfd).
/// The level reached is written to its audit log
/// (and so to its parent's) as a `worker-confined` event. Fails if it
/// cannot confine itself fully while `process` must confine fully.
pub fn confine(process: &ProcessCtx) -> Result<crate::outcome::Confinement> {
    use crate::outcome::Confinement;
    let read_write: Vec<&std::path::Path> = process.cgroup().into_iter().collect();
    let level = crate::launch::confine::confine_worker(
        (
            &process.policy,
            &process.dirs,
            process.workers.executable.as_deref(),
        ),
        &[],
        &read_write,
    )
    .unwrap_or_else(|e| {
        tracing::warn!(target: "wasmproc::sandbox", "the worker process runs unconfined: {e:#}");
        Confinement::None
    });
    if let Some(audit) = &process.audit {
        audit.record(
            "worker-confined",
            // (No pid of its own: in its guest's PID namespace it has
            // another; the host tags the event with the worker's.)
            serde_json::json!({
                "landlock": crate::launch::sandbox::confinement_name(level),
            }),
        );
    }
    if process.policy.require_confinement && level != Confinement::Full {
        bail!("the worker process must be fully confined, but it is not on this kernel");
    }
    Ok(level)
}
