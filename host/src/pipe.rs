//! A child's stdio pipes as wasi:io streams that read and write the pipe
//! directly, in the guest's call, without a task in between.
//!
//! - [`PipeReader`]: `read` takes what the pipe holds now (up to the size
//!   asked, at most [`MAX_READ`]); its pollable waits for the pipe to be
//!   readable. The host holds nothing: a guest that does not read leaves the
//!   child blocked on a full pipe.
//! - [`PipeWriter`]: `write` goes straight into the pipe; what the pipe does
//!   not take at once waits in a buffer of at most [`WRITE_BUDGET`] bytes
//!   (that is what `check-write` offers), written out as the pipe drains.
//!   Bytes still buffered when the stream is dropped are written out in the
//!   background, then the pipe is closed, so a guest that drops stdin right
//!   after a write loses nothing.
//!
//! Both ask the kernel for [`PIPE_SIZE`]-byte pipes, so a busy child and
//! guest switch less often.
//!
//! A [`PipeReader`] holds nothing but the pipe, so its pipe can be given to
//! another child as stdin without losing a byte (`stdio::pipe-from`): the
//! context keeps a [`Pipes`] registry from each reader's table slot to its
//! pipe, since the resource table gives the stream back only as a `dyn
//! InputStream`.

use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Weak};
use tokio::net::unix::pipe;
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

/// The most one `read` returns.
pub(crate) const MAX_READ: usize = 1 << 20;

/// Bytes a guest may write before waiting for the pipe.
pub(crate) const WRITE_BUDGET: usize = 1 << 20;

/// The pipe size asked of the kernel (it may give less).
const PIPE_SIZE: usize = 1 << 20;

fn grow(fd: &OwnedFd) {
    // A smaller pipe only costs speed.
    let _ = rustix::pipe::fcntl_setpipe_size(fd, PIPE_SIZE);
}

/// The read end of a child's stdout or stderr.
pub(crate) struct PipeReader {
    /// Shared only with [`Pipes`]' weak references.
    pipe: Option<Arc<pipe::Receiver>>,
}

impl PipeReader {
    /// Wraps the read end `fd`. Must be called inside a tokio runtime.
    pub fn new(fd: OwnedFd) -> io::Result<PipeReader> {
        grow(&fd);
        Ok(PipeReader {
            pipe: Some(Arc::new(pipe::Receiver::from_owned_fd(fd)?)),
        })
    }
}

impl PipeReader {
    /// The pipe itself, for a host that forwards it (none other holds it).
    pub fn into_receiver(self) -> Result<pipe::Receiver, PipeReader> {
        match self.pipe.map(Arc::try_unwrap) {
            Some(Ok(pipe)) => Ok(pipe),
            Some(Err(pipe)) => Err(PipeReader { pipe: Some(pipe) }),
            None => Err(PipeReader { pipe: None }),
        }
    }

    /// A weak reference to its pipe, for [`Pipes`].
    pub fn handle(&self) -> Weak<pipe::Receiver> {
        self.pipe.as_ref().map(Arc::downgrade).unwrap_or_default()
    }
}

/// Which input-streams in a guest's resource table are [`PipeReader`]s,
/// by table index, and their pipes.
#[derive(Default)]
pub(crate) struct Pipes {
    readers: HashMap<u32, Weak<pipe::Receiver>>,
    /// Prune dead entries when the map reaches this size.
    prune_at: usize,
}

impl Pipes {
    /// Notes that the stream at table index `rep` is the reader of `pipe`
    /// ([`PipeReader::handle`]).
    pub fn insert(&mut self, rep: u32, pipe: Weak<pipe::Receiver>) {
        if self.readers.len() >= self.prune_at {
            self.readers.retain(|_, pipe| pipe.strong_count() > 0);
            self.prune_at = (self.readers.len() * 2).max(64);
        }
        self.readers.insert(rep, pipe);
    }

    /// The pipe of the live stream at table index `rep`, if it is a
    /// [`PipeReader`]'s, taken out of the registry. A stream dropped since
    /// has no pipe left, so an index used again by another stream never
    /// finds the old one's.
    pub fn claim(&mut self, rep: u32) -> Option<Arc<pipe::Receiver>> {
        self.readers.remove(&rep).and_then(|p| p.upgrade())
    }
}

/// A blocking descriptor of `pipe`'s read end, for a child's stdin: call
/// it once the stream holding `pipe` is out of the guest's table, since
/// the file description it shares becomes blocking.
pub(crate) fn blocking_read_end(pipe: &pipe::Receiver) -> io::Result<OwnedFd> {
    let fd = rustix::io::fcntl_dupfd_cloexec(pipe.as_fd(), 3)?;
    rustix::io::ioctl_fionbio(&fd, false)?;
    Ok(fd)
}

#[wasmtime_wasi::async_trait]
impl InputStream for PipeReader {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let Some(pipe) = &self.pipe else {
            return Err(StreamError::Closed);
        };
        if size == 0 {
            return Ok(Bytes::new());
        }
        let mut buf = BytesMut::with_capacity(size.min(MAX_READ));
        match pipe.try_read_buf(&mut buf) {
            Ok(0) => {
                self.pipe = None;
                Err(StreamError::Closed)
            }
            Ok(_) => Ok(buf.freeze()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Bytes::new()),
            Err(e) => {
                self.pipe = None;
                Err(StreamError::LastOperationFailed(e.into()))
            }
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for PipeReader {
    async fn ready(&mut self) {
        if let Some(pipe) = &self.pipe {
            // An error makes `read` report it.
            let _ = pipe.readable().await;
        }
    }
}

/// The write end of a child's stdin.
pub(crate) struct PipeWriter {
    pipe: Option<pipe::Sender>,
    /// Accepted bytes the pipe has not taken yet.
    pending: BytesMut,
    /// A flush was asked and `pending` is not empty yet.
    flushing: bool,
    /// The error of a write that failed, reported by the next call.
    failed: Option<io::Error>,
}

impl PipeWriter {
    /// Wraps the write end `fd`. Must be called inside a tokio runtime.
    pub fn new(fd: OwnedFd) -> io::Result<PipeWriter> {
        grow(&fd);
        Ok(PipeWriter {
            pipe: Some(pipe::Sender::from_owned_fd(fd)?),
            pending: BytesMut::new(),
            flushing: false,
            failed: None,
        })
    }

    /// Writes what the pipe takes now of `pending`.
    fn drain(&mut self) {
        let Some(pipe) = &self.pipe else { return };
        while !self.pending.is_empty() {
            match pipe.try_write(&self.pending) {
                Ok(n) => drop(self.pending.split_to(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.failed = Some(e);
                    self.pending.clear();
                    return;
                }
            }
        }
        self.flushing = false;
    }

    fn check(&mut self) -> StreamResult<()> {
        if let Some(e) = self.failed.take() {
            self.pipe = None;
            return Err(StreamError::LastOperationFailed(e.into()));
        }
        match self.pipe {
            Some(_) => Ok(()),
            None => Err(StreamError::Closed),
        }
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for PipeWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.check()?;
        if bytes.len() > WRITE_BUDGET - self.pending.len() {
            return Err(StreamError::trap(
                "write is larger than check-write allowed",
            ));
        }
        self.pending.extend_from_slice(&bytes);
        self.drain();
        self.check()
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.check()?;
        self.drain();
        self.flushing = !self.pending.is_empty();
        self.check()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.check()?;
        self.drain();
        self.check()?;
        Ok(if self.flushing {
            0
        } else {
            WRITE_BUDGET - self.pending.len()
        })
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for PipeWriter {
    async fn ready(&mut self) {
        while !self.pending.is_empty() && self.failed.is_none() {
            let Some(pipe) = &self.pipe else { return };
            if let Err(e) = pipe.writable().await {
                self.failed = Some(e);
                return;
            }
            self.drain();
        }
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        let (Some(pipe), false) = (self.pipe.take(), self.pending.is_empty()) else {
            return;
        };
        let pending = std::mem::take(&mut self.pending);
        // The child gets EOF once this is written (or fails: it is gone).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut pipe = pipe;
                let _ = pipe.write_all(&pending).await;
            });
        }
    }
}
