//! A child's standard streams as the guest asked for them, where each one
//! goes ([`Route`]), and starting a child with them
//! ([`ProcessCtx::start_child`]): the common part of `spawn` and `fork`.

use crate::child::{Child, Timeout};
use crate::ctx::ProcessCtx;
use crate::failure::{Failure, OpenMode};
use crate::launch::os_child::signal;
use crate::launch::process::ChildIo;
use crate::pipe::{PipeReader, PipeWriter};
use crate::policy::Prepared;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;
use wasmtime_wasi::cli::StdoutStream;
use wasmtime_wasi::p2::DynOutputStream;

/// One of a child's standard streams as the guest asked for it, with a
/// stream it gave already taken out of its resource table (a stream passed
/// to the host is the host's, whatever happens next).
pub(crate) enum StdioRequest {
    Piped,
    Inherit,
    Null,
    /// A file in a granted directory.
    File {
        path: String,
        mode: OpenMode,
    },
    /// `pipe-from`: the pipe of the stream given, if it was a child's or
    /// worker's output.
    PipeFrom(io::Result<Option<OwnedFd>>),
}

/// Where one output stream of a child goes.
pub(crate) enum Route {
    /// A pipe the guest reads as a wasi:io input-stream.
    Guest,
    /// A pipe the host copies to the guest's own stream (`inherit`).
    Forward(Pin<Box<dyn AsyncWrite + Send + Sync>>),
    /// Where the OS puts it (/dev/null, a file).
    Os,
}

impl ProcessCtx {
    /// Where a child's or worker's `inherit`ed stdout (or `stderr`) goes:
    /// the context's stream for it ([`ProcessCtxBuilder::stdout`](crate::ctx::ProcessCtxBuilder::stdout)),
    /// else the host's own.
    pub(crate) fn inherited_output(&self, stderr: bool) -> Pin<Box<dyn AsyncWrite + Send + Sync>> {
        let to = match stderr {
            false => self.launcher.inherit_stdout.as_deref(),
            true => self.launcher.inherit_stderr.as_deref(),
        };
        Box::into_pin(match (to, stderr) {
            (Some(to), _) => to.async_stream(),
            (None, false) => io::stdout().async_stream(),
            (None, true) => io::stderr().async_stream(),
        })
    }

    /// The OS stdio and route of a child's output stream `name` (`stdout`
    /// or `stderr`) asked as `asked`.
    ///
    /// An `inherit`ed stream is a pipe the host copies into
    /// [`inherited_output`](Self::inherited_output), never the host's own
    /// open file: a child holding that could truncate or seek the
    /// operator's log, or change its flags.
    pub(crate) fn route(
        &self,
        name: &str,
        asked: StdioRequest,
    ) -> Result<(ChildIo, Route), Failure> {
        Ok(match asked {
            StdioRequest::Piped => (ChildIo::Pipe, Route::Guest),
            StdioRequest::Inherit => (
                ChildIo::Pipe,
                Route::Forward(self.inherited_output(name == "stderr")),
            ),
            StdioRequest::Null => (ChildIo::Null, Route::Os),
            StdioRequest::File { path, mode } => {
                (self.open_stdio_file(&path, mode, true)?, Route::Os)
            }
            StdioRequest::PipeFrom(_) => {
                return Err(Failure::InvalidArgument(format!(
                    "{name} cannot be `pipe-from`: it is for stdin only"
                )));
            }
        })
    }

    /// The OS stdin asked as `asked`.
    fn stdin_io(&self, asked: StdioRequest) -> Result<ChildIo, Failure> {
        Ok(match asked {
            StdioRequest::Piped => ChildIo::Pipe,
            StdioRequest::Inherit => ChildIo::Inherit,
            StdioRequest::Null => ChildIo::Null,
            StdioRequest::File { path, mode } => self.open_stdio_file(&path, mode, false)?,
            StdioRequest::PipeFrom(Ok(Some(pipe))) => ChildIo::Given(pipe),
            StdioRequest::PipeFrom(Ok(None)) => {
                return Err(Failure::InvalidArgument(
                    "the stream given as stdin is not a piped stdout or stderr of a child or worker"
                        .into(),
                ));
            }
            StdioRequest::PipeFrom(Err(e)) => return Err(Failure::from_io("taking the pipe", &e)),
        })
    }

    /// The file `file` opened for a child's stdin (`output` false) or
    /// output, if it is in a granted directory (writable, for output).
    fn open_stdio_file(
        &self,
        path: &str,
        mode: OpenMode,
        output: bool,
    ) -> Result<ChildIo, Failure> {
        crate::policy::open_granted_file(&self.dirs, path, mode, output)
            .map(ChildIo::Given)
            .map_err(|r| self.refuse(r))
    }
}

impl Route {
    /// The guest's stream for `pipe`, or `None` when the host forwards it
    /// (starting the copy) or there is no pipe.
    pub(crate) fn stream(
        self,
        pipe: Option<OwnedFd>,
        forwarders: &mut Vec<JoinHandle<()>>,
    ) -> io::Result<Option<PipeReader>> {
        let Some(pipe) = pipe else { return Ok(None) };
        Ok(match self {
            Route::Guest => Some(PipeReader::new(pipe)?),
            Route::Forward(mut to) => {
                let mut pipe = pipe::Receiver::from_owned_fd(pipe)?;
                // Never aborted: it ends at EOF, when the child's group is
                // gone, so output is not lost when the guest drops the child.
                forwarders.push(tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut pipe, &mut to).await;
                    let _ = to.flush().await;
                }));
                None
            }
            Route::Os => None,
        })
    }
}

impl ProcessCtx {
    /// Starts `prepared` with stdio set up as asked: the common part of
    /// `spawn` and `fork`.
    pub(crate) fn start_child(
        &mut self,
        kind: &'static str,
        prepared: &Prepared,
        [stdin, stdout, stderr]: [StdioRequest; 3],
    ) -> Result<Child, Failure> {
        let stdin = self.stdin_io(stdin)?;
        let (out_os, out_route) = self.route("stdout", stdout)?;
        let (err_os, err_route) = self.route("stderr", stderr)?;
        let mut launched = self.launch(kind, prepared, [stdin, out_os, err_os])?;
        let process = &mut launched.child;
        let mut forwarders = Vec::new();
        let pipes = |e: io::Error| Failure::from_io("setting up the child's pipes", &e);
        let stdin = match process.stdin.take() {
            Some(w) => Some(Box::new(PipeWriter::new(w).map_err(pipes)?) as DynOutputStream),
            None => None,
        };
        let stdout = (out_route.stream(process.stdout.take(), &mut forwarders)).map_err(pipes)?;
        let stderr = (err_route.stream(process.stderr.take(), &mut forwarders)).map_err(pipes)?;
        let mut child = Child::without_stdio(launched);
        (child.stdin, child.stdout, child.stderr) = (stdin, stdout, stderr);
        child.forwarders = forwarders;
        Ok(child)
    }

    /// The deadline of a spawn asked for `timeout_ms` and `kill_signal`,
    /// if within the host's maximum timeout.
    pub(crate) fn spawn_timeout(
        &self,
        timeout_ms: Option<u64>,
        kill_signal: Option<u8>,
    ) -> Result<Option<Timeout>, Failure> {
        let signal = signal(kill_signal.unwrap_or(15))?;
        let limits = &self.policy.limits;
        // The host's maximum is a deadline a guest cannot leave out.
        let after = match timeout_ms {
            Some(ms) => limits.asked_timeout(ms).map_err(|r| self.refuse(r))?,
            None => match limits.max_timeout {
                Some(max) => max,
                None => return Ok(None),
            },
        };
        Ok(Some(Timeout {
            after,
            signal,
            grace: self.policy.limits.kill_grace,
        }))
    }
}
