//! The host's side of a worker's launch socket: one thread per worker that
//! checks each request against the worker's grants and starts, signals and
//! reaps the worker's children (see the [module docs](super)).

use super::{Answer, Ask, Kind, Stdio};
use crate::failure::Failure;
use crate::launch::os_child::Launched;
use crate::launch::process::{ChildIo, start_os_process};
use crate::launch::sandbox::Sandbox;
use crate::launch::{Launcher, Slots};
use crate::outcome::Confinement;
use crate::outcome::{ExitStatus, ResourceUsage};
use crate::policy::{Asked, Budget, Denial, DirAccess, DirGrant, Limits, Policy, Refusal};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

/// A worker's rights, shared by its launch sockets (its own, and its
/// workers').
pub(crate) type Shared = Arc<Mutex<Rights>>;

/// What one worker's children may be: the worker's narrowed policy, its
/// directories as the host opened them, and the walls they start behind.
pub(crate) struct Rights {
    pub policy: Policy,
    pub dirs: Vec<DirGrant>,
    pub launcher: Launcher,
}

/// The launch sockets a guest's host serves, one thread each: stopped
/// (every child they started killed and reaped) when the guest's
/// launcher is dropped, so that nothing of the guest outlives it, its
/// cgroup included.
#[derive(Debug, Default)]
pub(crate) struct Services {
    running: Mutex<Vec<(UnixStream, std::thread::JoinHandle<()>)>>,
}

impl Services {
    /// Serves the worker at the other end of `socket` on a thread of its
    /// own, until the worker closes it (or dies) or these services stop;
    /// then kills and reaps every child it left.
    pub(crate) fn serve(
        self: &Arc<Self>,
        socket: UnixStream,
        rights: Shared,
        account: Account,
    ) -> io::Result<()> {
        socket.set_nonblocking(false)?;
        let stop = socket.try_clone()?;
        // A child's pidfd is watched by the runtime (and reaped in it if
        // dropped unreaped), as the host's own children are.
        let runtime = tokio::runtime::Handle::try_current().ok();
        let services = self.clone();
        let thread = std::thread::Builder::new()
            .name("wasmproc-launcher".into())
            .spawn(move || {
                let _entered = runtime.as_ref().map(|r| r.enter());
                let mut service = Service {
                    rights,
                    services,
                    account,
                    children: HashMap::new(),
                    next_id: 0,
                };
                service.run(&socket);
            })?;
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|(_, thread)| !thread.is_finished());
        running.push((stop, thread));
        Ok(())
    }

    /// Ends every service (and those they started), and waits for them.
    pub(crate) fn stop(&self) {
        loop {
            let running =
                std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()));
            if running.is_empty() {
                return;
            }
            for (socket, thread) in running {
                // The blocked read returns end-of-file: the thread ends.
                let _ = socket.shutdown(std::net::Shutdown::Both);
                let _ = thread.join();
            }
        }
    }
}

/// What a launch socket's starts are counted against: a budget of its
/// own, under its worker's limits, and the budget of every launch socket
/// above it (a worker's worker's socket: its parent's, and so on up),
/// each under its own limits. So a worker that ignores its own lending,
/// and gives each worker it forks all it holds, still starts no more
/// children through them all than its own limits allow. A worker's
/// worker's socket holds a live slot of each budget above it while it is
/// served (it is one of their live children).
pub(crate) struct Account {
    pub budget: Arc<Mutex<Budget>>,
    /// The budgets above this one, the topmost first, with their limits.
    pub above: Vec<(Arc<Mutex<Budget>>, Limits)>,
    /// Held for their `Drop`.
    pub _slots: Vec<Slot>,
}

impl Account {
    /// A budget of its own, for a worker's socket.
    pub fn new() -> Account {
        Account {
            budget: Arc::default(),
            above: Vec::new(),
            _slots: Vec::new(),
        }
    }

    /// Locks the budgets above this one, the topmost first (every thread
    /// locks a chain in that order), and refuses `slots` live slots and
    /// `spawns` spawns past any of their limits.
    fn check_above(&self, slots: usize, spawns: u64) -> Result<Vec<Above<'_>>, Denial> {
        let above: Vec<Above<'_>> = (self.above.iter())
            .map(|(budget, limits)| (budget.lock().unwrap_or_else(|e| e.into_inner()), limits))
            .collect();
        for (budget, limits) in &above {
            budget.check(limits, slots, spawns)?;
        }
        Ok(above)
    }
}

/// A locked budget above an account, and its limits.
type Above<'a> = (std::sync::MutexGuard<'a, Budget>, &'a Limits);

/// Takes one live slot and `spawns` spawns of each budget in `above`: the
/// slots, given back when dropped.
fn take_above(above: Vec<Above<'_>>, spawns: u64) -> Vec<Slot> {
    (above.into_iter())
        .map(|(mut budget, _)| {
            budget.take(1, spawns);
            Slot(budget.live().clone())
        })
        .collect()
}

/// One live slot of a budget, given back when dropped.
pub(crate) struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// One worker's launcher: its rights, and the children it started.
struct Service {
    rights: Shared,
    /// Where a worker's worker's launch socket is served.
    services: Arc<Services>,
    account: Account,
    /// The children started, by the id given each, with the slots they
    /// hold of the budgets above this socket's.
    children: HashMap<u64, (Launched, Vec<Slot>)>,
    next_id: u64,
}

impl Service {
    /// Answers requests in turn until the socket closes.
    fn run(&mut self, socket: &UnixStream) {
        while let Ok((frame, fds)) = crate::channel::read_frame_with_fds(socket) {
            let (answer, passed) = match serde_json::from_slice::<Ask>(&frame) {
                Ok(Ask::Release { id }) => {
                    // Unanswered (the worker does not wait for it): its
                    // group is killed and it is reaped, as it is dropped.
                    self.children.remove(&id);
                    continue;
                }
                Ok(ask) => self.answer(ask, fds),
                Err(e) => (
                    Answer::Failed(Failure::InvalidArgument(format!(
                        "not a launch request: {e}"
                    ))),
                    Vec::new(),
                ),
            };
            let bytes = serde_json::to_vec(&answer).expect("an answer always encodes");
            let passed: Vec<_> = passed.iter().map(AsFd::as_fd).collect();
            if crate::channel::send_frame_with_fds(socket, &bytes, &passed).is_err() {
                return;
            }
        }
    }

    /// The answer to `ask` (sent with `fds`), and the descriptors it
    /// carries.
    fn answer(&mut self, ask: Ask, fds: Vec<OwnedFd>) -> (Answer, Vec<OwnedFd>) {
        let failed = |f| (Answer::Failed(f), Vec::new());
        match ask {
            Ask::Start {
                kind,
                request,
                stdio,
            } => self
                .start(kind, &request, stdio, fds)
                .unwrap_or_else(failed),
            Ask::Signal { id, signal } => match self.signal(id, signal) {
                Ok(()) => (Answer::Done, Vec::new()),
                Err(f) => failed(f),
            },
            Ask::Reap { id } => match self.reap(id) {
                Ok(ended) => (Answer::Reaped { ended }, Vec::new()),
                Err(f) => failed(f),
            },
            // Taken in `run`, unanswered.
            Ask::Release { .. } => (Answer::Done, Vec::new()),
            Ask::Connect { policy, dirs } => match self.connect(&policy, &dirs) {
                Ok((socket, level)) => (Answer::Connected { level }, vec![socket]),
                Err(f) => failed(f),
            },
        }
    }

    /// A new launch socket for a worker's worker holding `asked` and the
    /// directories `dirs` (as this worker names them, read-only or not),
    /// if they lie within this socket's rights: served with the narrower
    /// rights (the grants of this socket's policy for what it names,
    /// directories opened here, a view built for them), on a thread of
    /// its own. The end to give the worker's worker, and its confinement.
    fn connect(
        &self,
        asked: &Policy,
        dirs: &[(String, bool)],
    ) -> Result<(OwnedFd, Confinement), Failure> {
        let rights = self.rights.lock().unwrap_or_else(|e| e.into_inner());
        let parent = &rights.launcher;
        if rights.policy.forks.is_empty() {
            return Err(refused(
                parent,
                Denial::ForkComponent("(any)".into()).into(),
            ));
        }
        // The worker's worker is one of the worker's live children: its
        // socket holds a slot of this budget, and of each above, while it
        // is served.
        let above = (self.account.check_above(1, 0)).map_err(|d| refused(parent, d.into()))?;
        let mut budget = self
            .account
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        (budget.check(&rights.policy.limits, 1, 0)).map_err(|d| refused(parent, d.into()))?;
        let policy = (asked.within(&rights.policy)).map_err(|d| refused(parent, d.into()))?;
        let mut grants = Vec::new();
        for (path, read_only) in dirs {
            let grant = narrower_dir(&rights.dirs, path, *read_only);
            grants.push(grant.map_err(|r| refused(parent, r))?);
        }
        let programs = policy.runnable();
        let view = (policy.confine && policy.use_sandbox && !programs.is_empty())
            .then(
                || match Sandbox::build(&grants, &programs, policy.network) {
                    Ok(view) => Some(Arc::new(view)),
                    Err(e) => {
                        tracing::warn!(target: "wasmproc::sandbox", error = %format!("{e:#}"),
                        "a worker's worker's children get its parent's view");
                        parent.sandbox.clone()
                    }
                },
            )
            .flatten();
        let launcher = parent.for_worker(&policy, &grants, view, parent.audit.clone());
        let level = launcher.layers(&policy, true, None).level();
        let fail = |e: io::Error| Failure::from_io("serving a worker's worker's launcher", &e);
        let (ours, theirs) = UnixStream::pair().map_err(fail)?;
        let narrower = Rights {
            policy,
            dirs: grants,
            launcher,
        };
        budget.take(1, 0);
        let mut slots = take_above(above, 0);
        slots.push(Slot(budget.live().clone()));
        drop(budget);
        let mut chain = self.account.above.clone();
        chain.push((self.account.budget.clone(), rights.policy.limits.clone()));
        let account = Account {
            budget: Arc::default(),
            above: chain,
            _slots: slots,
        };
        let narrower = Arc::new(Mutex::new(narrower));
        (self.services.serve(ours, narrower, account)).map_err(fail)?;
        Ok((theirs.into(), level))
    }

    /// Starts the child `asked` for, if the worker's grants allow it: the
    /// answer, with the child's pidfd and the worker's ends of its pipes.
    fn start(
        &mut self,
        kind: Kind,
        asked: &Asked,
        stdio: [Stdio; 3],
        fds: Vec<OwnedFd>,
    ) -> Result<(Answer, Vec<OwnedFd>), Failure> {
        let rights = self.rights.lock().unwrap_or_else(|e| e.into_inner());
        let Rights {
            policy,
            dirs,
            launcher,
        } = &*rights;
        let refused = |r| refused(launcher, r);
        // The budgets first: a worker past one costs no checking.
        let above = (self.account.check_above(1, 1)).map_err(|d| refused(d.into()))?;
        let mut budget = self
            .account
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        (budget.check(&policy.limits, 1, 1)).map_err(|d| refused(d.into()))?;
        let prepared = (policy.check(dirs, &asked.request())).map_err(refused)?;
        let stdio = child_stdio(stdio, fds)?;
        let slots = Slots {
            count: 1,
            live: budget.live(),
        };
        let mut launched = launcher.start(policy, kind.name(), &prepared, slots, |walls| {
            start_os_process(&prepared, stdio, walls)
        })?;
        budget.take(1, 1);
        let held = take_above(above, 1);
        drop((budget, rights));
        let child = &mut launched.child;
        let pidfd = (child.pidfd().ok().flatten())
            .ok_or_else(|| Failure::Io("the child has no pidfd".into()))?;
        let ends = [child.stdin.take(), child.stdout.take(), child.stderr.take()];
        self.next_id += 1;
        let id = self.next_id;
        let answer = Answer::Started {
            id,
            pid: launched.group.pgid.as_raw_nonzero().get(),
            confinement: launched.confinement,
            pipes: ends.each_ref().map(Option::is_some),
        };
        let passed = std::iter::once(pidfd).chain(ends.into_iter().flatten());
        self.children.insert(id, (launched, held));
        Ok((answer, passed.collect()))
    }

    /// Sends `signal` to child `id`'s group: nothing if the worker
    /// released it (or never had it).
    fn signal(&self, id: u64, signal: i32) -> Result<(), Failure> {
        let Some((child, _)) = self.children.get(&id) else {
            return Ok(());
        };
        let signal = u8::try_from(signal)
            .map_err(|_| Failure::InvalidArgument(format!("{signal} is not a signal number")))?;
        let signal = crate::launch::os_child::signal(signal)?;
        (child.group.signal(signal)).map_err(|e| Failure::from_io("signalling the child", &e))
    }

    /// How child `id` ended, if it has (reaped now).
    fn reap(&mut self, id: u64) -> Result<Option<(ExitStatus, ResourceUsage)>, Failure> {
        let Some((child, _)) = self.children.get_mut(&id) else {
            return Err(Failure::InvalidArgument(format!(
                "child {id} is no child of this worker's"
            )));
        };
        let pid = child.group.pid();
        let ended = (child.child.try_wait())
            .map_err(|e| Failure::from_io(format_args!("waiting for child {pid}"), &e))?;
        if let Some(ended) = ended {
            child.group.exited(ended.status);
        }
        Ok(ended.map(|e| (e.status, e.usage)))
    }
}

/// The worker's error for a request its own grants refuse: which a worker
/// checks first, so it is written to the audit log (by `launcher`) as what
/// it is, a worker that tried more than it holds.
fn refused(launcher: &Launcher, refusal: Refusal) -> Failure {
    let failure = match refusal {
        Refusal::Denied(denial) => {
            if let Some(audit) = &launcher.audit {
                let reason = format!("the worker's launcher refused: {denial}");
                audit.record("denied", serde_json::json!({ "reason": reason }));
            }
            denial.to_error_code()
        }
        Refusal::Invalid(failure) => failure,
    };
    tracing::warn!(target: "wasmproc::denied", %failure, "a worker asked for a child its grants refuse");
    failure
}

/// The directory `path` (as the worker names it) opened here, if the
/// worker holds it (writable, unless `read_only`).
fn narrower_dir(dirs: &[DirGrant], path: &str, read_only: bool) -> Result<DirGrant, Refusal> {
    let denied = || Denial::ForkDir(path.to_owned());
    let (grant, rest, dir) =
        crate::policy::open_granted_dir(dirs, path, "directory", denied, |_| denied())?;
    if grant.access == DirAccess::ReadOnly && !read_only {
        return Err(Denial::ReadOnlyDir(path.to_owned()).into());
    }
    Ok(DirGrant {
        guest_path: path.into(),
        host_path: grant.host_path_of(&rest),
        dir: Arc::new(dir),
        access: match read_only {
            true => DirAccess::ReadOnly,
            false => DirAccess::ReadWrite,
        },
    })
}

/// A child's stdio as the worker asked for it, with the descriptors it
/// sent for the `Given` streams: only pipes and regular files (what a
/// worker's own `file` and `pipe-from` streams are), never a directory,
/// a socket or a path descriptor, which could take the child out of its
/// view or past its grants.
fn child_stdio(stdio: [Stdio; 3], fds: Vec<OwnedFd>) -> Result<[ChildIo; 3], Failure> {
    let given = stdio.iter().filter(|s| **s == Stdio::Given).count();
    if given != fds.len() {
        return Err(Failure::InvalidArgument(format!(
            "{} descriptors sent for {given} given streams",
            fds.len()
        )));
    }
    for fd in &fds {
        check_given(fd)?;
    }
    let mut fds = fds.into_iter();
    Ok(stdio.map(|s| match s {
        Stdio::Pipe => ChildIo::Pipe,
        Stdio::Null => ChildIo::Null,
        Stdio::Given => ChildIo::Given(fds.next().expect("counted above")),
    }))
}

/// Refuses a descriptor that is not an open pipe or regular file.
fn check_given(fd: &OwnedFd) -> Result<(), Failure> {
    use rustix::fs::FileType;
    let bad = |what: String| Failure::InvalidArgument(format!("a child's stdio {what}"));
    let flags = rustix::fs::fcntl_getfl(fd).map_err(|e| bad(format!("is unusable: {e}")))?;
    if flags.contains(rustix::fs::OFlags::PATH) {
        return Err(bad("is a path descriptor".into()));
    }
    let stat = rustix::fs::fstat(fd).map_err(|e| bad(format!("is unusable: {e}")))?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Fifo | FileType::RegularFile => Ok(()),
        other => Err(bad(format!(
            "must be a pipe or a regular file, not {other:?}"
        ))),
    }
}
