//! [`ProcessCtxBuilder`]: every grant and setting of a [`ProcessCtx`],
//! denied or off by default, and the one place a context is set up.

use super::ProcessCtx;
use crate::audit::AuditLog;
use crate::launch::Launcher;
use crate::launch::identity::DEFAULT_CHILD_UIDS;
use crate::policy::{
    Denial, DirAccess, DirGrant, Limits, Policy, ProgramGrant, default_child_processes,
};
use crate::pool::workers::WorkerPool;
use anyhow::{Context as _, Result, bail};
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use std::ffi::OsStr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi::cli::StdoutStream;

/// Builds a [`ProcessCtx`]. Everything is denied by default:
///
/// | capability | default | grant with |
/// |---|---|---|
/// | programs for `exec-file`/`spawn` | none | [`allow_program`](Self::allow_program) |
/// | a shell for `exec` | none | [`allow_shell`](Self::allow_shell) |
/// | working directories | none (children run in `/`) | [`dir`](Self::dir) |
/// | environment of children | empty; no name allowed | [`allow_env`](Self::allow_env) |
/// | limits | [`Limits::default`] | [`limits`](Self::limits) |
/// | denial callback | none (denials go to `tracing` only) | [`on_denial`](Self::on_denial) |
/// | components for `fork` | none | [`allow_fork`](Self::allow_fork) |
/// | the program that runs forked workers, and their compiled code | none (`fork` is `unsupported`) | [`worker_executable`](Self::worker_executable) |
/// | the compiled-component cache no directory may reach | none (no directory refused) | [`cache_guard`](Self::cache_guard) |
/// | kernel confinement (Landlock) of children | on; no TCP; not required | [`confine`](Self::confine), [`allow_network`](Self::allow_network), [`require_confinement`](Self::require_confinement) |
/// | the sandbox of children (mount, IPC, network namespaces; seccomp) | on | [`sandbox`](Self::sandbox) |
/// | user and group of a root host's children | an id of the guest's own, leased from [`DEFAULT_CHILD_UIDS`](crate::sandbox::DEFAULT_CHILD_UIDS) | [`child_uids`](Self::child_uids), [`child_user`](Self::child_user) |
/// | other user or group ids a guest may ask for | none | [`allow_uid`](Self::allow_uid), [`allow_gid`](Self::allow_gid) |
/// | loader/interpreter variables (`LD_*`, `NODE_OPTIONS`, ...) | refused even if allowed | [`allow_injection_env`](Self::allow_injection_env) |
/// | audit log | none (events go to `tracing`) | [`audit_log`](Self::audit_log) |
/// | where `inherit`ed child output goes | the host's stdout/stderr | [`stdout`](Self::stdout), [`stderr`](Self::stderr) |
/// | a cgroup per child, killed with it | off | [`cgroup_per_child`](Self::cgroup_per_child) |
/// | Linux capabilities of children | none (even under a root host) | [`allow_uid_change`](Self::allow_uid_change) keeps `CAP_SETUID`/`CAP_SETGID` |
/// | a cgroup of its own for the children, killed when the context is dropped | on, where the host can make one | [`cgroup`](Self::cgroup) |
/// | how long a worker channel's `receive` spins before sleeping | 50 µs ([`channel::SPIN`](crate::channel::SPIN)) | [`channel_spin`](Self::channel_spin) |
/// | a cluster to place workers on | none | [`cluster`](Self::cluster) |
/// | warm worker processes kept for `fork` | 0 | [`warm_workers`](Self::warm_workers) |
/// | new worker processes forked from a worker template | on (for a guest granted `fork`) | [`worker_template`](Self::worker_template) |
///
/// Grants are checked when they are made: a program that cannot be found or
/// a directory that cannot be opened is an error of the builder method, not
/// of the guest's later request.
pub struct ProcessCtxBuilder {
    ctx: ProcessCtx,
    /// The ids to lease one from for the children (`None`: the policy's
    /// `child_id` as it is).
    child_uids: Option<RangeInclusive<u32>>,
}

impl Default for ProcessCtxBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessCtxBuilder {
    /// A builder with nothing granted and default [`Limits`].
    pub fn new() -> Self {
        ProcessCtxBuilder {
            ctx: ProcessCtx {
                policy: Policy::default(),
                dirs: Vec::new(),
                cache_guard: None,
                reporter: None,
                audit: None,
                parent: None,
                pipes: Default::default(),
                launcher: Launcher::default(),
                budget: Default::default(),
                workers: WorkerPool::default(),
            },
            child_uids: Some(DEFAULT_CHILD_UIDS),
        }
    }

    /// Keeps `n` worker processes started (their engine set up and the
    /// components the guest may fork loaded, holding nothing else) for
    /// `fork` to hand a specification to, refilled when the guest next
    /// waits for a worker: a fork then skips the process start and the
    /// component load (about 0.6× a cold fork, see benches/RESULTS.md).
    /// Each costs an idle process and a live-children slot while the guest
    /// runs, so the default is 0. Only for a guest granted
    /// `fork`; filled by [`ProcessCtx::warm_up`] (the CLI's `Runner` calls
    /// it before the guest starts).
    pub fn warm_workers(&mut self, n: usize) -> &mut Self {
        self.ctx.policy.warm_workers = n;
        self
    }

    /// Whether worker processes are forked from a worker template (on by
    /// default): one idle worker process per guest granted `fork`, started
    /// by [`ProcessCtx::warm_up`], that has its engine up and the guest's
    /// components loaded, and, once ready, forks a copy of itself for each
    /// new worker process (a cold fork's and each warm worker's): well
    /// under a millisecond, where starting the worker executable, its
    /// engine and component load take several. It holds no grant of the
    /// guest's, takes no live-children slot, and its copies are the host's
    /// children as any worker. Off, until it is ready, or where it cannot
    /// run (not glibc on x86_64), each worker process is started from the
    /// executable. Its cost: the idle process, and every worker of the
    /// guest starts as a copy of the same process (its address-space
    /// layout, stack canary and hash keys; see docs/design.md).
    pub fn worker_template(&mut self, on: bool) -> &mut Self {
        self.ctx.policy.worker_template = on;
        self
    }

    /// Lets `fork` place workers on the agents of `cluster` (`placement`
    /// `cluster` or `labels`), each running them within its own policy
    /// too. Default: none (`unsupported`).
    pub fn cluster(&mut self, cluster: crate::cluster::Cluster) -> &mut Self {
        self.ctx.workers.cluster = Some(cluster);
        self
    }

    /// Has `launcher` (a forked worker's: the host that forked it) start
    /// the children, instead of starting them here.
    pub(crate) fn launcher(
        &mut self,
        launcher: crate::launch::remote::client::LaunchClient,
    ) -> &mut Self {
        self.ctx.launcher.remote = Some(Arc::new(launcher));
        self
    }

    /// Replaces everything but the directories with `policy` (a forked
    /// worker's, narrowed by its parent).
    pub(crate) fn policy(&mut self, policy: Policy) -> &mut Self {
        self.ctx.policy = policy;
        self.child_uids = None;
        self
    }

    /// Lets the guest run `program` with `exec-file` and `spawn`.
    ///
    /// `program` is a path (absolute, or relative to the host's current
    /// directory) or a bare name looked up in the host's `PATH` now, with the
    /// host's ambient authority. It is resolved to an absolute path once,
    /// here; the guest names it by its file name or by that absolute path and
    /// can never make another binary run. Two grants with the same file name
    /// are refused.
    pub fn allow_program(&mut self, program: impl AsRef<OsStr>) -> Result<&mut Self> {
        ProgramGrant::resolve(program.as_ref())?.add_to(&mut self.ctx.policy.programs)?;
        Ok(self)
    }

    /// The paths of the programs granted so far.
    pub fn programs(&self) -> impl Iterator<Item = &Path> {
        (self.ctx.policy.programs.iter())
            .chain(&self.ctx.policy.shells)
            .map(|g| g.path.as_path())
    }

    /// As [`allow_program`](Self::allow_program), pinned to the SHA-256
    /// `sha256` (hex): the binary must have it now, and a child is refused
    /// (`access-denied`) if the file has changed to other contents since.
    pub fn allow_program_pinned(
        &mut self,
        program: impl AsRef<OsStr>,
        sha256: &str,
    ) -> Result<&mut Self> {
        let mut grant = ProgramGrant::resolve(program.as_ref())?;
        grant.pin(sha256)?;
        grant.add_to(&mut self.ctx.policy.programs)?;
        Ok(self)
    }

    /// Lets the guest use `exec`, which runs `shell -c COMMAND`. `shell` is
    /// resolved as for [`allow_program`](Self::allow_program). Several
    /// shells may be granted: the guest chooses one by name with
    /// `exec-options.shell`; the first granted is the default.
    ///
    /// A shell can run any program it can reach: granting one grants that,
    /// within the directory, environment and limit rules that still apply.
    pub fn allow_shell(&mut self, shell: impl AsRef<OsStr>) -> Result<&mut Self> {
        ProgramGrant::resolve(shell.as_ref())?.add_to(&mut self.ctx.policy.shells)?;
        Ok(self)
    }

    /// Lets children run in the host directory `host_path` (and the
    /// directories below it), which the guest names `guest_path`.
    ///
    /// Use the same guest path as the directory's wasi:filesystem preopen so
    /// that a guest's paths mean the same thing to its files and its
    /// children. A grant that reaches the compiled-component cache by any
    /// name is refused here if a [`cache_guard`](Self::cache_guard) was
    /// set first (the CLI sets its runner's, and grants each directory
    /// here before it preopens it for the guest). The first directory
    /// granted is the default working directory and the base of relative
    /// `cwd`s.
    pub fn dir(
        &mut self,
        host_path: impl AsRef<Path>,
        guest_path: &str,
        access: DirAccess,
    ) -> Result<&mut Self> {
        let host_path = host_path.as_ref();
        let dir = Dir::open_ambient_dir(host_path, ambient_authority())
            .with_context(|| format!("cannot open directory {}", host_path.display()))?;
        self.dir_handle(dir, &std::path::absolute(host_path)?, guest_path, access)
    }

    /// As [`dir`](Self::dir), for a directory that is already open.
    pub fn dir_handle(
        &mut self,
        dir: Dir,
        host_path: &Path,
        guest_path: &str,
        access: DirAccess,
    ) -> Result<&mut Self> {
        if guest_path.is_empty() || guest_path.contains('\0') {
            bail!(
                "invalid guest path {guest_path:?} for {}",
                host_path.display()
            );
        }
        if let Some(guard) = &self.ctx.cache_guard {
            guard.check_open(&dir, host_path)?;
        }
        self.ctx.dirs.push(DirGrant {
            guest_path: PathBuf::from(guest_path),
            host_path: host_path.to_owned(),
            dir: Arc::new(dir),
            access,
        });
        Ok(self)
    }

    /// Lets the guest set `name` for its children even though it is one of
    /// the loader or interpreter variables that make a program run code of
    /// the setter's choice ([`INJECTION_ENV`](crate::INJECTION_ENV)),
    /// which are refused otherwise, even when allowed with
    /// [`allow_env`](Self::allow_env).
    pub fn allow_injection_env(&mut self, name: impl Into<String>) -> Result<&mut Self> {
        let name = name.into();
        self.allow_env(name.clone())?;
        self.ctx.policy.injection_env.insert(name);
        Ok(self)
    }

    /// Writes an audit event for every child started, denial and exit to
    /// `log`. Default: none (events still go to `tracing`).
    pub fn audit_log(&mut self, log: AuditLog) -> &mut Self {
        self.ctx.launcher.audit = Some(log.clone());
        self.ctx.audit = Some(log);
        self
    }

    /// Lets the guest set the environment variable `name` for its children.
    pub fn allow_env(&mut self, name: impl Into<String>) -> Result<&mut Self> {
        let name = name.into();
        if let Some(problem) = crate::policy::bad_env_name(&name) {
            bail!(problem);
        }
        self.ctx.policy.allowed_env.insert(name);
        Ok(self)
    }

    /// Replaces the [`Limits`].
    pub fn limits(&mut self, limits: Limits) -> &mut Self {
        self.ctx.policy.limits = limits;
        self
    }

    /// Calls `reporter` for every denied request.
    pub fn on_denial(&mut self, reporter: impl Fn(&Denial) + Send + Sync + 'static) -> &mut Self {
        self.ctx.reporter = Some(Arc::new(reporter));
        self
    }

    /// Lets the guest `fork` the component at `path` (relative to the host's
    /// current directory), which it names by file name or absolute path.
    pub fn allow_fork(&mut self, path: impl AsRef<Path>) -> Result<&mut Self> {
        ProgramGrant::component(path.as_ref())?.add_to(&mut self.ctx.policy.forks)?;
        Ok(self)
    }

    /// Refuses every directory that reaches the compiled-component cache
    /// by any name ([`CacheGuard`](crate::cache::CacheGuard)): the directories
    /// granted after this call, checked when granted, and each directory a
    /// fork passes on, checked again when the fork opens it. Whoever runs
    /// the cache's code must set it (the CLI does), and check the guest's
    /// own preopens with the same guard.
    pub fn cache_guard(&mut self, guard: crate::cache::CacheGuard) -> &mut Self {
        self.ctx.cache_guard = Some(guard);
        self
    }

    /// The program that runs forked workers: a `wasmproc` executable (the
    /// CLI sets its own), started as `PROGRAM __worker --channel-fd N`
    /// with the worker's capabilities sent over the channel, and where the
    /// compiled code it runs comes from: the host compiles each forked
    /// component (or reads its verified cache entry) and hands the worker
    /// the code in a sealed memfd, so that no worker opens the cache (see
    /// [`WorkerCode`](crate::WorkerCode)). `code`'s engine must be
    /// configured as the worker executable's is.
    pub fn worker_executable(
        &mut self,
        program: impl AsRef<Path>,
        code: crate::code::WorkerCode,
    ) -> Result<&mut Self> {
        let grant = ProgramGrant::resolve(program.as_ref().as_os_str())?;
        self.ctx.workers.executable = Some(grant.path);
        self.ctx.workers.code = Some(code);
        Ok(self)
    }

    /// How long a `receive` on a worker channel (both ends: this context's
    /// workers and, passed on, the workers themselves) keeps checking the
    /// socket before its thread sleeps. Spinning trades a little CPU for
    /// latency: waking a sleeping thread costs tens of microseconds on an
    /// idle machine, more than a whole round trip. `Duration::ZERO` never
    /// spins. Default: 50 µs.
    pub fn channel_spin(&mut self, spin: Duration) -> &mut Self {
        self.ctx.policy.channel_spin = spin;
        self
    }

    /// Where the output of children spawned with `stdout: inherit` goes.
    /// Give the same stream as the guest's `WasiCtx` stdout, so that
    /// `inherit` means the guest's own stdout. Default: the host process's
    /// stdout (what the guest has when the host inherits its stdio, as the
    /// CLI does). A child's `inherit`ed stdin is always the host's.
    pub fn stdout(&mut self, stream: impl StdoutStream + 'static) -> &mut Self {
        self.ctx.launcher.inherit_stdout = Some(Box::new(stream));
        self
    }

    /// Where the output of children spawned with `stderr: inherit` goes; as
    /// [`stdout`](Self::stdout).
    pub fn stderr(&mut self, stream: impl StdoutStream + 'static) -> &mut Self {
        self.ctx.launcher.inherit_stderr = Some(Box::new(stream));
        self
    }

    /// Whether each child starts in a cgroup of its own (inside the
    /// guest's, see [`cgroup`](Self::cgroup)), killed when the child's
    /// resource is dropped or its `exec` ends: then not even a descendant
    /// that left the child's process group outlives the child (with the
    /// guest's cgroup alone, such a descendant lives until the guest ends).
    /// Costs a cgroup made and removed per child (~50 µs on a small VM).
    /// Default: off.
    pub fn cgroup_per_child(&mut self, on: bool) -> &mut Self {
        self.ctx.policy.cgroup_per_child = on;
        self
    }

    /// Whether children may change their user and group ids: they keep
    /// `CAP_SETUID` and `CAP_SETGID` if the host has them (a host running
    /// as root). Every other capability is always dropped before `exec`, so
    /// a root host's children run as root without root's powers. Default:
    /// no (children keep no capability).
    pub fn allow_uid_change(&mut self, allow: bool) -> &mut Self {
        const CAP_SETGID: u64 = 1 << 6;
        const CAP_SETUID: u64 = 1 << 7;
        self.ctx.policy.keep_caps = if allow { CAP_SETUID | CAP_SETGID } else { 0 };
        self
    }

    /// Whether children start in a cgroup v2 made for this context, which
    /// is killed as a whole when the context is dropped: then no process a
    /// child started outlives the guest, not even one that left its
    /// process group. Needs write access to the host's own cgroup (root, or
    /// a delegated subtree) and Linux ≥ 5.14; without it the context goes
    /// on without a cgroup (logged; see [`ProcessCtx::cgroup`]). Default:
    /// on.
    pub fn cgroup(&mut self, on: bool) -> &mut Self {
        self.ctx.policy.use_cgroup = on;
        self
    }

    /// Whether children are confined with Landlock (see the `confine`
    /// module docs for what they may reach). Default: yes.
    pub fn confine(&mut self, confine: bool) -> &mut Self {
        self.ctx.policy.confine = confine;
        self
    }

    /// Whether confined children may bind and connect TCP sockets.
    /// Default: no.
    pub fn allow_network(&mut self, allow: bool) -> &mut Self {
        self.ctx.policy.network = allow;
        self
    }

    /// Whether children run in the guest's sandbox: their own mount, IPC
    /// and (unless the network is allowed) network namespaces, an
    /// unprivileged identity under a root host and a seccomp filter (see
    /// the [`sandbox`](crate::launch::sandbox) module). Turned off with
    /// [`confine`](Self::confine) too. Default: yes.
    pub fn sandbox(&mut self, on: bool) -> &mut Self {
        self.ctx.policy.use_sandbox = on;
        self
    }

    /// The user and group id the children of a root host run as, the same
    /// for every guest given them, in place of an id leased per guest (see
    /// [`child_uids`](Self::child_uids)): guests that share an id can
    /// signal, `prlimit` and renice each other's children. Children must
    /// be able to reach the granted directories as this user:
    /// [`build`](Self::build) warns about a grant they cannot enter (or
    /// write, for a read-write grant).
    pub fn child_user(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.ctx.policy.child_id = (uid, gid);
        self.child_uids = None;
        self
    }

    /// The ids a root host leases one from for each guest tree: its
    /// children run as that uid and gid, which no other guest of any host
    /// on the machine holds while it runs (see
    /// `launch::identity`). Default:
    /// [`DEFAULT_CHILD_UIDS`](crate::sandbox::DEFAULT_CHILD_UIDS). If
    /// every id is leased, children are refused (`unsupported`).
    pub fn child_uids(&mut self, ids: RangeInclusive<u32>) -> &mut Self {
        self.child_uids = Some(ids);
        self
    }

    /// Lets the guest ask for user id `uid` for a child (`uid` in the
    /// options of `exec`, `spawn` and `fork`). Default: only the
    /// [`child_user`](Self::child_user) id.
    pub fn allow_uid(&mut self, uid: u32) -> &mut Self {
        self.ctx.policy.allowed_uids.insert(uid);
        self
    }

    /// Lets the guest ask for group id `gid` for a child. Default: only
    /// the [`child_user`](Self::child_user) group.
    pub fn allow_gid(&mut self, gid: u32) -> &mut Self {
        self.ctx.policy.allowed_gids.insert(gid);
        self
    }

    /// Refuse to start children (`unsupported`) unless they can be fully
    /// confined on this kernel. Default: no (run them with the confinement
    /// available, and report it).
    pub fn require_confinement(&mut self, require: bool) -> &mut Self {
        self.ctx.policy.require_confinement = require;
        self
    }

    /// The finished context. Its Landlock ruleset is made here, from the
    /// grants; if that fails, children run unconfined (reported as
    /// `confinement::none`, and refused under
    /// [`require_confinement`](Self::require_confinement)).
    pub fn build(&mut self) -> ProcessCtx {
        let ProcessCtxBuilder {
            mut ctx,
            child_uids,
        } = std::mem::take(self);
        let spawns = !ctx.policy.programs.is_empty() || !ctx.policy.shells.is_empty();
        // A guest that can start nothing needs no cgroup and no ruleset
        // (a few hundred microseconds of every start).
        if !spawns && ctx.policy.forks.is_empty() {
            return ctx;
        }
        ctx.launcher.can_change_user = crate::launch::sandbox::can_change_user();
        let (confine, sandbox) = (ctx.policy.confine, ctx.policy.use_sandbox);
        if let Some(range) = child_uids
            && confine
            && sandbox
            && ctx.launcher.can_change_user
        {
            let lease = crate::launch::identity::lease(&range);
            if let Ok(lease) = &lease {
                ctx.policy.child_id = (lease.id, lease.id);
            }
            ctx.launcher.ids = Some(lease.map_err(|e| e.to_string()));
            ctx.launcher.id_range = Some(range);
        }
        if ctx.policy.confine && ctx.policy.use_sandbox && ctx.launcher.can_change_user {
            let processes = &mut ctx.policy.limits.rlimits.processes;
            processes.get_or_insert_with(default_child_processes);
        }
        if spawns && ctx.policy.confine && ctx.policy.use_sandbox && ctx.launcher.can_change_user {
            for dir in &ctx.dirs {
                let problem = crate::launch::sandbox::unreachable_for(dir, ctx.policy.child_id);
                if let Some(problem) = problem {
                    tracing::warn!(target: "wasmproc::sandbox", "{problem}");
                }
            }
        }
        let worker = (ctx.workers.executable.as_deref()).filter(|_| !ctx.policy.forks.is_empty());
        ctx.launcher.set_up(&ctx.policy, &ctx.dirs, worker);
        ctx
    }
}
