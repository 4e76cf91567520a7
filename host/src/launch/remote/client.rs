//! A worker's side of its launch socket: children started, signalled and
//! reaped by the host that forked it (see the [module docs](super)).

use super::{Answer, Ask, Kind, Stdio};
use crate::failure::Failure;
use crate::launch::Slots;
use crate::launch::os_child::{Ended, GroupGuard, Keeper, Kept, Launched, OsChild};
use crate::launch::process::ChildIo;
use crate::outcome::Confinement;
use crate::policy::Prepared;
use rustix::process::{Pid, Signal};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

/// The launcher of a worker's children, at the other end of a socket.
#[derive(Debug)]
pub(crate) struct LaunchClient {
    /// One request and its answer at a time.
    socket: Mutex<UnixStream>,
    /// How the launcher confines the children.
    pub level: Confinement,
}

impl LaunchClient {
    /// The launcher at the other end of `socket`, confining children at
    /// `level`.
    pub fn new(socket: UnixStream, level: Confinement) -> io::Result<LaunchClient> {
        socket.set_nonblocking(false)?;
        Ok(LaunchClient {
            socket: Mutex::new(socket),
            level,
        })
    }

    /// A launch socket of its own for a worker this worker forks, holding
    /// `policy` and `dirs` (its narrowed grants: paths as this worker names
    /// them, and whether read-only): the launcher checks that
    /// they lie within this worker's and serves the new socket with them.
    /// The socket, and how its children are confined.
    pub fn connect(
        &self,
        policy: &crate::policy::Policy,
        dirs: Vec<(String, bool)>,
    ) -> Result<(OwnedFd, Confinement), Failure> {
        let ask = Ask::Connect {
            policy: Box::new(policy.clone()),
            dirs,
        };
        let fail = |e: io::Error| Failure::from_io("asking for a launcher of the worker's", &e);
        match self.call(&ask, &[]).map_err(fail)? {
            (Answer::Connected { level }, fds) if fds.len() == 1 => {
                Ok((fds.into_iter().next().expect("one"), level))
            }
            (Answer::Failed(failure), _) => Err(failure),
            (other, _) => Err(Failure::Io(format!("the launcher answered {other:?}"))),
        }
    }

    /// Sends `ask` (with `fds`) and reads its answer.
    fn call(&self, ask: &Ask, fds: &[BorrowedFd<'_>]) -> io::Result<(Answer, Vec<OwnedFd>)> {
        let bytes = serde_json::to_vec(ask).map_err(io::Error::other)?;
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        crate::channel::send_frame_with_fds(&socket, &bytes, fds)?;
        let (answer, fds) = crate::channel::read_frame_with_fds(&socket)?;
        let answer = serde_json::from_slice(&answer).map_err(io::Error::other)?;
        Ok((answer, fds))
    }

    /// Asks for `prepared` (checked by this worker already) to be started
    /// with `stdio`, holding `slots` of this worker's budget.
    pub fn start(
        self: &Arc<Self>,
        kind: &'static str,
        prepared: &Prepared,
        stdio: [ChildIo; 3],
        slots: Slots<'_>,
    ) -> Result<Launched, Failure> {
        let request = (prepared.asked.clone())
            .ok_or_else(|| Failure::Io("a worker's child without its request".into()))?;
        let mut given = Vec::new();
        let stdio = stdio.map(|io| match io {
            ChildIo::Pipe => Stdio::Pipe,
            // A worker's own stdin is /dev/null.
            ChildIo::Null | ChildIo::Inherit => Stdio::Null,
            ChildIo::Given(fd) => {
                given.push(fd);
                Stdio::Given
            }
        });
        let ask = Ask::Start {
            kind: Kind::of(kind),
            request,
            stdio,
        };
        let passed: Vec<_> = given.iter().map(AsFd::as_fd).collect();
        let (answer, fds) = (self.call(&ask, &passed))
            .map_err(|e| Failure::from_io("asking the host to start the child", &e))?;
        match answer {
            Answer::Started {
                id,
                pid,
                confinement,
                pipes,
            } => self
                .started((id, pid), fds, pipes, slots)
                .map(|(child, group)| Launched {
                    child,
                    group,
                    confinement,
                }),
            Answer::Failed(failure) => Err(failure),
            other => Err(Failure::Io(format!("the launcher answered {other:?}"))),
        }
    }

    /// The child the launcher started (its id there, and its pid), from its
    /// pidfd and the pipe ends (`pipes`) in `fds`.
    fn started(
        self: &Arc<Self>,
        (id, pid): (u64, i32),
        fds: Vec<OwnedFd>,
        pipes: [bool; 3],
        slots: Slots<'_>,
    ) -> Result<(OsChild, GroupGuard), Failure> {
        let bad = |what: &str| Failure::Io(format!("the launcher's answer {what}"));
        let pid = Pid::from_raw(pid).ok_or_else(|| bad("names no process"))?;
        let expected = 1 + pipes.iter().filter(|p| **p).count();
        if fds.len() != expected {
            self.release(id);
            return Err(bad("has the wrong descriptors"));
        }
        let mut fds = fds.into_iter();
        let pidfd = fds.next().expect("counted");
        let mut child = OsChild::new(pid, pidfd).map_err(|e| {
            self.release(id);
            Failure::from_io("watching the child", &e)
        })?;
        let kept = Kept {
            keeper: self.clone() as Arc<dyn Keeper>,
            id,
        };
        child.launcher = Some(kept.clone());
        let [stdin, stdout, stderr] = pipes.map(|p| p.then(|| fds.next().expect("counted")));
        (child.stdin, child.stdout, child.stderr) = (stdin, stdout, stderr);
        let mut group = GroupGuard::new(pid, slots, None, None);
        group.launcher = Some(kept);
        Ok((child, group))
    }
}

impl Keeper for LaunchClient {
    /// Sends `signal` to the group of child `id`.
    fn signal(&self, id: u64, signal: Signal) -> io::Result<()> {
        let ask = Ask::Signal {
            id,
            signal: signal.as_raw(),
        };
        match self.call(&ask, &[])? {
            (Answer::Done, _) => Ok(()),
            (other, _) => Err(io::Error::other(format!("the launcher answered {other:?}"))),
        }
    }

    /// How child `id` ended, if it has.
    fn reap(&self, id: u64) -> io::Result<Option<Ended>> {
        let ask = Ask::Reap { id };
        match self.call(&ask, &[])? {
            (Answer::Reaped { ended }, _) => {
                Ok(ended.map(|(status, usage)| Ended { status, usage }))
            }
            (other, _) => Err(io::Error::other(format!("the launcher answered {other:?}"))),
        }
    }

    /// Tells the launcher this worker is done with child `id`, without
    /// waiting: the launcher answers nothing to a release.
    fn release(&self, id: u64) {
        let ask = Ask::Release { id };
        let sent = serde_json::to_vec(&ask)
            .map_err(io::Error::other)
            .and_then(|bytes| {
                let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
                crate::channel::send_frame_with_fds(&socket, &bytes, &[])
            });
        if let Err(e) = sent {
            tracing::warn!(id, error = %e, "cannot release a child");
        }
    }
}
