//! Starting a [`Prepared`] command as the leader of its own process group,
//! and the guard that kills the group.

use crate::ctx::ProcessCtx;
use crate::failure::Failure;
use crate::outcome::Confinement;
use crate::policy::Prepared;
use crate::sandbox::{Layers, Sandbox};
use rustix::process::Pid;
use serde_json::json;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::time::Instant;

use crate::os_child::{GroupGuard, Launched, OsChild};

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

impl ProcessCtx {
    /// Refuses a child (or worker) that would take `slots` live-children
    /// slots and `spawns` of the total spawns, if the guest has not that
    /// many left.
    pub(crate) fn check_budget(&self, slots: usize, spawns: u64) -> Result<(), Failure> {
        (self.budget.check(&self.policy.limits, slots, spawns)).map_err(|d| self.deny(d))
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
        self.check_layers(prepared, &layers)?;
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
        self.budget.take(slots, spawns);
        let confinement = layers.level();
        let started = Started {
            kind,
            pgid,
            layers: &layers,
            identity,
            cgroup: child_cgroup.as_ref(),
            caps: walls_caps,
        };
        self.record_start(prepared, &started);
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
                live: self.budget.live().clone(),
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

/// What the audit log says of a child that started.
struct Started<'a> {
    kind: &'static str,
    pgid: Pid,
    layers: &'a Layers,
    identity: Option<(u32, u32)>,
    cgroup: Option<&'a crate::cgroup::ChildCgroup>,
    caps: u64,
}

impl ProcessCtx {
    /// Refuses `prepared` if it must be fully confined and is not, or asks
    /// for an identity the layers cannot give it.
    fn check_layers(&self, prepared: &Prepared, layers: &Layers) -> Result<(), Failure> {
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
        Ok(())
    }

    /// Writes the audit event of a child that started.
    fn record_start(&self, prepared: &Prepared, started: &Started<'_>) {
        let Some(audit) = &self.audit else { return };
        let confinement = started.layers.level();
        audit.record(
            started.kind,
            json!({
                "pid": started.pgid.as_raw_nonzero().get(),
                "program": prepared.program,
                "argv": std::iter::once(&prepared.argv0).chain(&prepared.args).collect::<Vec<_>>(),
                "cwd": prepared.cwd_host,
                "env": prepared.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                "confinement": crate::sandbox::confinement_name(confinement),
                "layers": started.layers.to_json(),
                "identity": started.identity.map(|(uid, gid)| json!({ "uid": uid, "gid": gid })),
                "rlimits": self.policy.limits.rlimits,
                "cgroup": match started.cgroup {
                    Some(child) => Some(child.path()),
                    None => self.cgroup.as_ref().map(|c| c.path()),
                },
                "capabilities": capability_names(started.caps),
            }),
        );
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
    /// [`ProcessCtxBuilder::build`](crate::ctx::ProcessCtxBuilder::build)).
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
