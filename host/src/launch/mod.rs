//! The launch layer: the only code that starts processes.
//!
//! A [`Launcher`] owns everything a child is started behind: the guest's
//! sandbox (and the narrower views built for its workers' children), the
//! Landlock ruleset, the guest's cgroup and whether this host can give its
//! children another user. It takes a [`Prepared`] request (already checked
//! by the policy) and the policy it was checked against, and starts the OS
//! process behind those walls, writing the audit event. It knows nothing
//! of WIT, of the guest's budget (the context checks and takes that around
//! [`Launcher::start`]) or of workers.
//!
//! The parts, from the top: [`process`] turns a request into a
//! `clone`/`exec` (the walls as `sys` takes them); [`os_child`] is the
//! started process and the guard that kills its group; [`sandbox`],
//! [`seccomp`], [`confine`] (Landlock) and [`cgroup`] are the walls.

pub(crate) mod cgroup;
pub mod confine;
pub mod identity;
pub(crate) mod os_child;
pub(crate) mod process;
pub(crate) mod remote;
pub mod sandbox;
pub(crate) mod seccomp;

use crate::audit::AuditLog;
use crate::failure::Failure;
use crate::outcome::Confinement;
use crate::policy::{DirAccess, DirGrant, Policy, Prepared, ProgramGrant};
use cgroup::Cgroup;
use confine::Confiner;
use os_child::{GroupGuard, Launched, OsChild};
use process::Walls;
use rustix::process::Pid;
use sandbox::{Layers, Sandbox};
use serde_json::json;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use wasmtime_wasi::cli::StdoutStream;

/// How many workers' views (see [`Launcher::view`]) a guest keeps.
const WORKER_VIEWS: usize = 8;

/// What a worker's view is built from: its directories (device, inode and
/// whether read-only), its programs and whether it has the network; and
/// whose children it holds (their user and group), so that two tenants
/// (two sessions on an agent) never share one, its IPC and PID
/// namespaces included.
#[derive(Debug, PartialEq, Eq)]
struct ViewKey {
    dirs: Vec<((u64, u64), bool)>,
    programs: Vec<PathBuf>,
    network: bool,
    owner: (u32, u32),
}

/// The walls of one guest's children, and the starting of them.
#[derive(Default)]
pub(crate) struct Launcher {
    /// The Landlock ruleset of the guest's grants.
    pub(crate) confiner: Confiner,
    /// The sandbox, made when the context is built (`None`: none is
    /// needed, or it could not be made, which was logged).
    pub(crate) sandbox: Option<Arc<Sandbox>>,
    /// The views built for workers' children, by their grants (see
    /// [`Launcher::view`]).
    views: Vec<(ViewKey, Arc<Sandbox>)>,
    /// Whether this host can make its children another user (it has
    /// `CAP_SETUID` and `CAP_SETGID`), read once when it is built.
    pub(crate) can_change_user: bool,
    /// The cgroup children start in; `None`: none could be made.
    pub(crate) cgroup: Option<Arc<Cgroup>>,
    /// Where start events go.
    pub(crate) audit: Option<AuditLog>,
    /// The user and group id leased to this guest tree, or why none could
    /// be (then children that would change user are refused rather than
    /// run as another guest's).
    pub(crate) ids: Option<Result<identity::IdLease, String>>,
    /// The range `ids` was leased from, for leases of the guest's tenants
    /// (an agent's remote sessions).
    pub(crate) id_range: Option<std::ops::RangeInclusive<u32>>,
    /// Where `inherit`ed child stdout and stderr go (`None`: the host's).
    pub(crate) inherit_stdout: Option<Box<dyn StdoutStream>>,
    pub(crate) inherit_stderr: Option<Box<dyn StdoutStream>>,
    /// A forked worker's launcher (see [`remote`]): the host that forked
    /// it, which starts its children; then none of the walls above is
    /// this process's own.
    pub(crate) remote: Option<Arc<remote::client::LaunchClient>>,
    /// The launch sockets this host serves for the guest's workers.
    pub(crate) services: Arc<remote::service::Services>,
}

impl Drop for Launcher {
    /// Stops the launchers of the guest's workers first: their children
    /// are killed and reaped, and their hold on the guest's cgroup ends,
    /// before the cgroup itself is removed.
    fn drop(&mut self) {
        self.services.stop();
    }
}

/// The budget a start takes: live-children `slots`, counted on `live`
/// while the child's group lives.
pub(crate) struct Slots<'a> {
    pub count: usize,
    pub live: &'a Arc<AtomicUsize>,
}

impl Launcher {
    /// Sets up the walls for a guest with `policy` and directories `dirs`:
    /// its cgroup, its sandbox (built now, before any guest code runs, and
    /// only here: nothing a guest does later can make it fail and lower
    /// the walls) and its Landlock ruleset. Each that cannot be made is
    /// logged, and children run without it (see [`Launcher::layers`]).
    ///
    /// The sandbox is built when the guest may run programs, or fork
    /// (`worker`, the worker executable): its worker processes live in it
    /// too (see [`Launcher::worker_view`]), so its view shows `worker`,
    /// read-only (children may not execute it: Landlock grants them only
    /// their programs).
    pub(crate) fn set_up(&mut self, policy: &Policy, dirs: &[DirGrant], worker: Option<&Path>) {
        if self.remote.is_some() {
            return;
        }
        if policy.use_cgroup {
            self.cgroup = Cgroup::create()
                .map(Arc::new)
                .inspect_err(|e| {
                    tracing::warn!(target: "wasmproc::sandbox", error = %e,
                        "children will run without a cgroup of their own");
                })
                .ok();
        }
        let mut programs = policy.runnable();
        let worker = worker.and_then(worker_grant);
        programs.extend(worker.as_ref());
        if policy.confine && policy.use_sandbox && !programs.is_empty() && self.sandbox.is_none() {
            self.sandbox = Sandbox::build(dirs, &programs, policy.network)
                .map(Arc::new)
                .inspect_err(|e| {
                    tracing::warn!(
                        target: "wasmproc::sandbox",
                        "children run without the namespace sandbox (confinement is partial): {e:#}"
                    );
                })
                .ok();
        }
        self.confine(policy, dirs);
    }

    /// Makes the Landlock ruleset of `policy`'s grants, if it confines.
    fn confine(&mut self, policy: &Policy, dirs: &[DirGrant]) {
        let programs = policy.runnable();
        if policy.confine {
            let own = self
                .sandbox
                .as_ref()
                .map(|s| s.own_dirs())
                .unwrap_or_default();
            let confiner = Confiner::new(dirs, &programs, policy.network, &own);
            self.confiner = confiner.unwrap_or_else(|e| {
                tracing::warn!(target: "wasmproc::sandbox", error = %e,
                    "children will run without Landlock confinement");
                Confiner::none()
            });
        }
    }

    /// The walls of the children of a forked worker holding `policy` and
    /// `dirs` (its narrowed grants), which this host starts for it (see
    /// [`remote`]): behind `view`, under a Landlock ruleset of their own,
    /// in this guest's cgroup and as its user, their events written to
    /// `audit`.
    pub(crate) fn for_worker(
        &self,
        policy: &Policy,
        dirs: &[DirGrant],
        view: Option<Arc<Sandbox>>,
        audit: Option<AuditLog>,
    ) -> Launcher {
        let mut launcher = Launcher::default();
        launcher.sandbox = view;
        launcher.can_change_user = self.can_change_user;
        launcher.cgroup = self.cgroup.clone();
        launcher.audit = audit;
        // The worker's policy names the user its children run as (the
        // guest's lease, or its session's); only a failed lease is needed
        // here, to refuse.
        if let Some(Err(why)) = &self.ids {
            launcher.ids = Some(Err(why.clone()));
        }
        launcher.confine(policy, dirs);
        launcher
    }

    /// A user and group id of its own for a tenant of this guest (a remote
    /// session on an agent), leased from the guest's range; `None` where
    /// the guest leases none (a fixed child user, or a host without root).
    pub(crate) fn lease_for_tenant(&self) -> Option<Result<identity::IdLease, Failure>> {
        let range = self.id_range.as_ref()?;
        Some(identity::lease(range).map_err(|e| {
            Failure::LimitExceeded(format!("no user id for this session's children: {e}"))
        }))
    }

    /// The guest's sandbox, if it was built.
    pub(crate) fn sandbox(&self) -> Option<&Sandbox> {
        self.sandbox.as_deref()
    }

    /// The guest's sandbox as its worker processes (and the worker
    /// template) enter it: its view, which shows the worker executable,
    /// and its PID namespace, whose `/proc` a worker needs (it opens what
    /// it was handed through `/proc/self/fd`). So a worker, which runs
    /// wasm and may run native code should an attacker ever get it that
    /// far, sees no path and no process outside its guest's; it then
    /// narrows itself further with Landlock (`worker::confine`).
    fn worker_view(&self, policy: &Policy) -> Option<&Sandbox> {
        (self.sandbox()).filter(|s| policy.confine && policy.use_sandbox && s.has_pid_namespace())
    }

    /// The walls a child stands behind: a confined one (not a forked
    /// worker) running as `identity` (the guest's ask) or the child user.
    pub(crate) fn layers(
        &self,
        policy: &Policy,
        confined: bool,
        identity: Option<(u32, u32)>,
    ) -> Layers {
        if !confined || !policy.confine {
            // A worker process: in the guest's view and PID namespace
            // where it has them, with network and IPC namespaces of its
            // own on a root host (its other walls it builds itself).
            let view = !confined && self.worker_view(policy).is_some();
            let own = !confined && policy.use_sandbox && can_make_namespaces();
            return Layers {
                identity: false,
                mount: view,
                network: own,
                ipc: own,
                pid: view,
                seccomp: false,
                landlock: Confinement::None,
            };
        }
        let sandbox = self.sandbox();
        let (uid, gid) = identity.unwrap_or(policy.child_id);
        Layers {
            // A user namespace maps only the host's own ids; and root
            // asked for is no unprivileged identity.
            identity: policy.use_sandbox
                && policy.keep_caps == 0
                && self.can_change_user
                && !sandbox.is_some_and(Sandbox::has_user_namespace)
                && uid != 0
                && gid != 0,
            mount: sandbox.is_some(),
            // A worker's sandbox is its parent's: without a network
            // namespace when the parent had the network.
            network: sandbox.is_some_and(Sandbox::has_network_namespace) || policy.network,
            ipc: sandbox.is_some(),
            pid: sandbox.is_some_and(Sandbox::has_pid_namespace),
            seccomp: policy.use_sandbox,
            landlock: self.confiner.level,
        }
    }

    /// Starts `prepared` (checked against `policy`) with `start`, behind
    /// the walls its policy gives it, holding `slots`; writes its audit
    /// event (`kind`).
    pub(crate) fn start(
        &self,
        policy: &Policy,
        kind: &'static str,
        prepared: &Prepared,
        slots: Slots<'_>,
        start: impl FnOnce(&Walls<'_>) -> Result<(OsChild, Pid), Failure>,
    ) -> Result<Launched, Failure> {
        let layers = self.layers(policy, prepared.confine, prepared.identity);
        check_layers(policy, prepared, &layers, self.ids.as_ref())?;
        let sandbox = layers.mount.then(|| self.sandbox()).flatten();
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
        let identity = (layers.identity).then(|| prepared.identity.unwrap_or(policy.child_id));
        let child_cgroup = match (&self.cgroup, policy.cgroup_per_child) {
            (Some(guest), true) => Some(
                (guest.child()).map_err(|e| Failure::from_io("making the child's cgroup", &e))?,
            ),
            _ => None,
        };
        // Child limits are for children: a forked worker (the host itself,
        // running wasm) applies them to its own children instead.
        let rlimits = match prepared.confine {
            true => policy.limits.rlimits.to_list(),
            false => Vec::new(),
        };
        let walls = Walls {
            cwd: match (&cwd, &prepared.cwd) {
                (Some(view), _) => Some(view.as_fd()),
                (None, Some(dir)) => Some(dir.as_fd()),
                (None, None) => None,
            },
            landlock: match (layers.landlock, &self.confiner.ruleset) {
                (Confinement::Full | Confinement::Partial, Some(fd)) => Some(fd.as_fd()),
                _ => None,
            },
            cgroup: match &child_cgroup {
                Some(child) => Some(child.fd()),
                None => self.cgroup.as_ref().map(|c| c.fd()),
            },
            keep_caps: match prepared.confine || !policy.use_sandbox {
                true => policy.keep_caps,
                false => policy.keep_caps | sandbox::WORKER_CAPS,
            },
            rlimits: &rlimits,
            namespaces: sandbox.map(|s| s.namespaces()),
            // A worker process needs no network (its children get theirs
            // from the launcher) and shares no IPC with the host or its
            // guest's children: on a root host it gets empty namespaces of
            // its own (see `layers`).
            own_namespaces: !prepared.confine && layers.ipc,
            identity,
            seccomp: layers.seccomp.then(sandbox::seccomp_program),
        };
        let caps = walls.keep_caps;
        let (child, pgid) = start(&walls)?;
        let started = Started {
            kind,
            pgid,
            layers: &layers,
            identity,
            cgroup: child_cgroup.as_ref(),
            caps,
        };
        self.record_start(policy, prepared, &started);
        Ok(Launched {
            confinement: layers.level(),
            child,
            group: GroupGuard::new(pgid, slots, self.audit.clone(), child_cgroup),
        })
    }

    /// Writes the audit event (and the debug trace) of a child that
    /// started.
    fn record_start(&self, policy: &Policy, prepared: &Prepared, started: &Started<'_>) {
        tracing::debug!(
            target: "wasmproc::process",
            program = %prepared.program.display(),
            args = ?prepared.args,
            cwd = %prepared.cwd_host.display(),
            env = ?prepared.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            pid = started.pgid.as_raw_nonzero().get(),
            "started child"
        );
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
                "confinement": sandbox::confinement_name(confinement),
                "layers": started.layers.to_json(),
                "identity": started.identity.map(|(uid, gid)| json!({ "uid": uid, "gid": gid })),
                "rlimits": policy.limits.rlimits,
                "cgroup": match started.cgroup {
                    Some(child) => Some(child.path()),
                    None => self.cgroup.as_ref().map(|c| c.path()),
                },
                "capabilities": capability_names(started.caps),
            }),
        );
    }

    /// The sandbox for the children of a worker holding `grants`,
    /// `programs` and (or not) the network, whose children run as `owner`:
    /// a view of the worker's own,
    /// narrowed grants, not of this guest's (issue 22, row 4: Landlock
    /// alone left a worker's children able to stat, chmod, utime and
    /// setxattr files of the parent's grants, and to connect to its
    /// sockets). Views are built once per set of grants and kept, so a
    /// pool of like workers pays one build. Where no view can be built (a
    /// worker forking under its own Landlock, which forbids mounting),
    /// this guest's own view, which holds every grant the worker has,
    /// with a warning.
    pub(crate) fn view(
        &mut self,
        grants: &[DirGrant],
        programs: &[&ProgramGrant],
        (network, owner): (bool, (u32, u32)),
    ) -> Option<Arc<Sandbox>> {
        let key = ViewKey {
            dirs: (grants.iter())
                .filter_map(|g| Some((dir_id(&g.dir)?, g.access == DirAccess::ReadOnly)))
                .collect(),
            programs: programs.iter().map(|p| p.real_path.clone()).collect(),
            network,
            owner,
        };
        if let Some((_, view)) = self.views.iter().find(|(k, _)| *k == key) {
            return Some(view.clone());
        }
        match Sandbox::build(grants, programs, network) {
            Ok(view) => {
                let view = Arc::new(view);
                if self.views.len() == WORKER_VIEWS {
                    self.views.remove(0);
                }
                self.views.push((key, view.clone()));
                Some(view)
            }
            Err(e) => {
                tracing::warn!(target: "wasmproc::sandbox", error = %format!("{e:#}"),
                    "a worker's children get its parent's view of the grants (Landlock narrows them)");
                self.sandbox.clone()
            }
        }
    }
}

/// The worker executable `path` as the sandbox shows it: bound read-only
/// at its real path, like a granted program (but not granted to children).
fn worker_grant(path: &Path) -> Option<ProgramGrant> {
    let real_path = std::fs::canonicalize(path).ok()?;
    Some(ProgramGrant {
        name: "wasmproc".into(),
        path: path.to_owned(),
        real_path,
        pin: None,
    })
}

/// Whether this process may make namespaces (it holds `CAP_SYS_ADMIN`:
/// a root host, not a worker, which holds nothing, whatever its uid).
fn can_make_namespaces() -> bool {
    rustix::thread::capabilities(None).is_ok_and(|c| {
        c.effective
            .contains(rustix::thread::CapabilitySet::SYS_ADMIN)
    })
}

/// The device and inode of the open directory `dir`.
fn dir_id(dir: &cap_std::fs::Dir) -> Option<(u64, u64)> {
    let st = rustix::fs::fstat(dir).ok()?;
    Some((st.st_dev, st.st_ino))
}

/// Refuses `prepared` if it must be fully confined and is not, or asks
/// for an identity the layers cannot give it.
fn check_layers(
    policy: &Policy,
    prepared: &Prepared,
    layers: &Layers,
    ids: Option<&Result<identity::IdLease, String>>,
) -> Result<(), Failure> {
    if prepared.confine && policy.require_confinement && layers.level() != Confinement::Full {
        return Err(Failure::Unsupported(format!(
            "children must be fully confined, but these layers are down: {}",
            layers.missing().join(", ")
        )));
    }
    if prepared.confine
        && layers.identity
        && let Some(Err(why)) = ids
    {
        return Err(Failure::Unsupported(format!(
            "no user id of its own for this guest's children: {why}"
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

/// What the audit log says of a child that started.
struct Started<'a> {
    kind: &'static str,
    pgid: Pid,
    layers: &'a Layers,
    identity: Option<(u32, u32)>,
    cgroup: Option<&'a cgroup::ChildCgroup>,
    caps: u64,
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
