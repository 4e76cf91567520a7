//! `wasmproc:process/exec`: run to completion with buffered output.

use crate::bindings::exec::{ExecOptions, ExecOutput, Host};
use crate::failure::Failure;
use crate::launch::os_child::signal;
use crate::launch::process::ChildIo;
use crate::policy::{Denial, Request, Run};
use crate::{ProcessCtx, ProcessCtxView, ProcessResult};
use bytes::BufMut;
use rustix::process::Signal;
use std::os::fd::OwnedFd;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::time::{Instant, sleep_until};

impl Host for ProcessCtxView<'_> {
    async fn exec(
        &mut self,
        command: String,
        mut options: ExecOptions,
    ) -> ProcessResult<ExecOutput> {
        let input = options.stdin.take();
        let req = Request::new(
            Run::Shell(&command, options.shell.as_deref()),
            &options.cwd,
            &options.env,
        )
        .user(options.uid, options.gid);
        Ok(run(self.ctx, &req, &options, input).await?)
    }

    async fn exec_file(
        &mut self,
        program: String,
        args: Vec<String>,
        mut options: ExecOptions,
    ) -> ProcessResult<ExecOutput> {
        let input = options.stdin.take();
        let req = Request::new(Run::Program(&program, &args), &options.cwd, &options.env)
            .user(options.uid, options.gid);
        Ok(run(self.ctx, &req, &options, input).await?)
    }
}

/// The limits of one `exec`, checked against the host's.
struct Bounds {
    max_buffer: usize,
    timeout: Option<Duration>,
    kill_signal: Signal,
    grace: Duration,
}

impl ProcessCtx {
    fn exec_bounds(&self, options: &ExecOptions) -> Result<Bounds, Failure> {
        let limits = &self.policy.limits;
        let max_buffer =
            (options.max_buffer).unwrap_or(limits.default_max_buffer.min(limits.max_buffer));
        if max_buffer == 0 {
            return Err(Failure::InvalidArgument(
                "max-buffer must be at least 1 byte".into(),
            ));
        }
        if max_buffer > limits.max_buffer {
            return Err(self.deny(Denial::Limit {
                limit: "max_buffer",
                message: format!(
                    "max-buffer of {max_buffer} bytes is above the host's limit of {} bytes",
                    limits.max_buffer
                ),
            }));
        }
        let timeout = match options.timeout_ms {
            Some(ms) => Some(limits.asked_timeout(ms).map_err(|r| self.refuse(r))?),
            None => limits.default_timeout_within_max(),
        };
        if let Some(max) = limits.max_timeout
            && timeout.is_none()
        {
            return Err(self.deny(Denial::Limit {
                limit: "max_timeout",
                message: format!("no timeout is above the host's limit of {max:?}"),
            }));
        }
        Ok(Bounds {
            // The host's maximum bounds it, so it fits in memory.
            max_buffer: usize::try_from(max_buffer).unwrap_or(usize::MAX),
            timeout,
            // SIGTERM, as Node's `exec` sends, then SIGKILL after the grace.
            kill_signal: signal(options.kill_signal.unwrap_or(15))?,
            grace: limits.kill_grace,
        })
    }
}

/// Runs the checked request to completion. `input` is the child's stdin
/// (`None`: /dev/null).
async fn run(
    ctx: &mut ProcessCtx,
    req: &Request<'_>,
    options: &ExecOptions,
    input: Option<Vec<u8>>,
) -> Result<ExecOutput, Failure> {
    let bounds = ctx.exec_bounds(options)?;
    let prepared = ctx.prepare(req)?;
    let stdin = if input.is_some() {
        ChildIo::Pipe
    } else {
        ChildIo::Null
    };
    let started = Instant::now();
    let mut launched = ctx.launch(req.kind(), &prepared, [stdin, ChildIo::Pipe, ChildIo::Pipe])?;
    drop(prepared);
    let pid = launched.group.pid();
    let confinement = launched.confinement;
    let child = &mut launched.child;
    let group = &launched.group;

    let pipes = |e: std::io::Error| Failure::from_io("setting up the child's pipes", &e);
    let mut stdin = (child
        .stdin
        .take()
        .map(pipe::Sender::from_owned_fd)
        .transpose())
    .map_err(pipes)?;
    let input = input.unwrap_or_default();
    let mut stdout = Capture::new(child.stdout.take(), bounds.max_buffer).map_err(pipes)?;
    let mut stderr = Capture::new(child.stderr.take(), bounds.max_buffer).map_err(pipes)?;
    let write_stdin = async {
        if let Some(pipe) = stdin.as_mut() {
            // A child that exits without reading its input is not an error.
            let _ = pipe.write_all(&input).await;
        }
        drop(stdin.take());
    };
    tokio::pin!(write_stdin);
    let mut stdin_done = false;

    let deadline = bounds.timeout.map(|t| started + t);
    let mut timed_out = false;
    // Set once the kill signal went out: when the group must be gone.
    let mut grace_deadline: Option<Instant> = None;
    let mut status = None;

    while status.is_none() || !stdout.done() || !stderr.done() {
        let mut overflowed = false;
        tokio::select! {
            () = &mut write_stdin, if !stdin_done => stdin_done = true,
            r = stdout.read(), if !stdout.done() => overflowed = r,
            r = stderr.read(), if !stderr.done() => overflowed = r,
            s = child.wait(), if status.is_none() => {
                let s = s.map_err(|e| Failure::from_io("waiting for the child", &e))?;
                group.exited(s.status);
                status = Some(s);
            }
            () = sleep_until(deadline.unwrap_or(started)), if deadline.is_some() && !timed_out => {
                timed_out = true;
                kill(group, bounds.kill_signal, &mut grace_deadline, bounds.grace);
            }
            () = sleep_until(grace_deadline.unwrap_or(started)), if grace_deadline.is_some() => {
                // Whatever is left of the group, or still holds the pipes
                // after leaving it, gets no more time.
                kill(group, Signal::KILL, &mut None, bounds.grace);
                grace_deadline = None;
                stdout.abandon();
                stderr.abandon();
            }
        }
        if overflowed {
            kill(group, bounds.kill_signal, &mut grace_deadline, bounds.grace);
            // Only now close the pipe, so the child dies of the kill signal,
            // not of SIGPIPE on its next write.
            for capture in [&mut stdout, &mut stderr] {
                if capture.truncated {
                    capture.abandon();
                }
            }
        }
    }
    let duration = started.elapsed();
    let ended = status.expect("loop ends after the child exited");
    // No process of the group outlives the exec (the guard kills on drop).
    drop(launched);
    Ok(ExecOutput {
        pid,
        status: ended.status.into(),
        usage: ended.usage.into(),
        stdout_truncated: stdout.truncated,
        stderr_truncated: stderr.truncated,
        stdout: stdout.data,
        stderr: stderr.data,
        timed_out,
        duration_ns: u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
        confinement: confinement.into(),
    })
}

/// Sends `signal` to the group, once, and starts the grace period.
fn kill(
    group: &crate::launch::os_child::GroupGuard,
    signal: Signal,
    grace_deadline: &mut Option<Instant>,
    grace: Duration,
) {
    if let Err(e) = group.signal(signal) {
        tracing::error!(pgid = group.pid(), error = %e, "cannot signal process group");
    }
    if grace_deadline.is_none() {
        *grace_deadline = Some(Instant::now() + grace);
    }
}

/// Bytes read from a child's output at a time, at most.
const READ_CHUNK: usize = 64 << 10;

/// One output stream being collected, up to a bound.
struct Capture {
    pipe: Option<pipe::Receiver>,
    data: Vec<u8>,
    max: usize,
    truncated: bool,
}

impl Capture {
    /// Collects from the read end `pipe`.
    fn new(pipe: Option<OwnedFd>, max: usize) -> std::io::Result<Self> {
        Ok(Capture {
            pipe: pipe.map(pipe::Receiver::from_owned_fd).transpose()?,
            data: Vec::new(),
            max,
            truncated: false,
        })
    }

    fn done(&self) -> bool {
        self.pipe.is_none() || self.truncated
    }

    /// Stops reading: the read end is closed.
    fn abandon(&mut self) {
        self.pipe = None;
    }

    /// Reads one chunk; returns whether the stream just went over its bound
    /// (then it is truncated to the bound, and done: the caller kills the
    /// child, then abandons the pipe). Cancel safe.
    async fn read(&mut self) -> bool {
        let Some(pipe) = self.pipe.as_mut() else {
            return false;
        };
        // Straight into the kept output, one byte past the bound at most
        // (to see the overflow).
        let room = self.max - self.data.len();
        self.data.reserve((room + 1).min(READ_CHUNK));
        match pipe.read_buf(&mut (&mut self.data).limit(room + 1)).await {
            Ok(0) | Err(_) => {
                self.pipe = None;
                false
            }
            Ok(_) => {
                if self.data.len() > self.max {
                    self.data.truncate(self.max);
                    self.truncated = true;
                }
                self.truncated
            }
        }
    }
}
