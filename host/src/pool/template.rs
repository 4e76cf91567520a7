//! The worker template: an idle worker process that forks new worker
//! processes as the host asks (`worker::serve_as_template`), and the small
//! pieces every way of starting a worker process shares.

use crate::child::Child;
use crate::code::Code;
use crate::failure::Failure;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

/// The largest specification a cold fork sends before the template has
/// forked the worker that reads it: a socket's buffer takes it whole.
pub(super) const EARLY_SPEC_MAX: usize = 32 << 10;

/// Takes back the specification sent ahead on a channel whose worker was
/// never forked, reading it from the worker's end `theirs`; whether it was
/// still there (else a copy the template made has it).
pub(super) fn take_back(theirs: &std::os::unix::net::UnixStream) -> bool {
    theirs.set_nonblocking(true).is_ok() && crate::channel::read_frame_with_fds(theirs).is_ok()
}

/// The error of a fork on a host that cannot start worker processes.
pub(super) fn no_worker_executable() -> Failure {
    Failure::Unsupported("this host has no worker executable to run forked components".into())
}

/// The worker executable's arguments for an `idle` worker process (or the
/// template), becoming `user` as soon as it starts if given, on the
/// inherited channel descriptor `channel_fd`, loading the inherited code
/// `preload` before its specification comes.
pub(super) fn worker_args(
    idle: IdleRole,
    channel_fd: RawFd,
    preload: &[Code],
    user: Option<(u32, u32)>,
) -> Vec<String> {
    ["__worker", "--channel-fd", &channel_fd.to_string()]
        .into_iter()
        .map(str::to_owned)
        .chain((idle == IdleRole::Template).then(|| "--template".to_owned()))
        .chain(
            user.into_iter()
                .flat_map(|(uid, gid)| ["--user".to_owned(), format!("{uid}:{gid}")]),
        )
        .chain(preload.iter().flat_map(|code| {
            let fd = code.fd().as_raw_fd();
            ["--preload".to_owned(), format!("{}:{fd}", code.key)]
        }))
        .collect()
}

/// Sends a worker its specification on the host's end of its channel.
pub(super) type SendSpec<'a> = dyn Fn(&std::os::unix::net::UnixStream) -> std::io::Result<()> + 'a;

/// A new socketpair for a worker's channel: the host's end, the worker's.
pub(super) fn worker_channel() -> Result<
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
pub(super) enum IdleRole {
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
    pub(super) child: Child,
    pub(super) socket: std::os::unix::net::UnixStream,
    /// Whether it said it is ready (its engine up, its components loaded).
    pub(super) ready: bool,
    /// When it was started.
    pub(super) started: std::time::Instant,
}

/// How long the host waits for the worker template to answer a request.
pub(super) const TEMPLATE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times a guest's worker template is started (replaced after
/// it ended or failed) before its workers start from the executable only.
pub(super) const TEMPLATE_STARTS: u32 = 3;

impl Template {
    /// Whether the template has said it is ready; never waits (until then
    /// workers start from the executable).
    pub(super) fn is_ready(&mut self) -> bool {
        if !self.ready && self.socket.set_nonblocking(true).is_ok() {
            let answer = crate::channel::read_frame_with_fds(&self.socket);
            self.ready = matches!(
                answer.map(|(a, _)| serde_json::from_slice(&a)),
                Ok(Ok(crate::worker::spec::TemplateReply::Ready))
            );
            self.ready &= self.socket.set_nonblocking(false).is_ok();
        }
        self.ready
    }

    /// A new worker process, forked by the template, on the channel end
    /// `theirs`, started in `cgroup` if given. A process it forked that
    /// then failed is killed and reaped.
    pub(super) fn fork(
        &mut self,
        theirs: &std::os::unix::net::UnixStream,
        cgroup: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> std::io::Result<(crate::launch::os_child::OsChild, rustix::process::Pid)> {
        use crate::worker::spec::{TemplateReply, TemplateRequest};
        let request = serde_json::to_vec(&TemplateRequest {
            cgroup: cgroup.is_some(),
        })?;
        let fds: Vec<_> = std::iter::once(theirs.as_fd()).chain(cgroup).collect();
        crate::channel::send_frame_with_fds(&self.socket, &request, &fds)?;
        let (reply, mut passed) = crate::channel::read_frame_with_fds(&self.socket)?;
        let forked = passed.pop();
        match (serde_json::from_slice(&reply)?, forked) {
            (TemplateReply::Started { .. }, Some(pidfd)) => {
                // The pid the template saw is its PID namespace's (the
                // guest's); the pidfd tells this host's.
                let pid = crate::launch::os_child::pid_of(&pidfd)?;
                Ok((crate::launch::os_child::OsChild::new(pid, pidfd)?, pid))
            }
            (TemplateReply::Failed { error }, forked) => {
                if let Some(pidfd) = forked {
                    // Ours to reap (a child of this host's): killed and
                    // reaped in the background.
                    let _ =
                        rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
                    drop(crate::launch::os_child::OsChild::new(
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
