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

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe_pair() -> (OwnedFd, OwnedFd) {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
    }

    /// Reads `fd` (blocking) to its end.
    fn read_to_end(fd: OwnedFd) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut out).unwrap();
        out
    }

    /// Makes the pipe behind `fd` as small as the kernel allows (a page),
    /// so that a write of more stays pending.
    fn shrink(fd: impl AsFd) -> usize {
        rustix::pipe::fcntl_setpipe_size(fd, 4096).unwrap()
    }

    #[tokio::test]
    async fn a_reader_returns_what_the_pipe_holds_up_to_the_size_asked_then_closed() {
        let (r, w) = pipe_pair();
        let mut reader = PipeReader::new(r).unwrap();
        assert!(reader.read(0).unwrap().is_empty());
        assert!(
            reader.read(10).unwrap().is_empty(),
            "an empty pipe is not closed"
        );
        rustix::io::write(&w, b"abcdef").unwrap();
        reader.ready().await;
        assert_eq!(&reader.read(4).unwrap()[..], b"abcd");
        reader.ready().await;
        assert_eq!(&reader.read(100).unwrap()[..], b"ef");
        drop(w);
        reader.ready().await;
        assert!(matches!(reader.read(10), Err(StreamError::Closed)));
        assert!(matches!(reader.read(10), Err(StreamError::Closed)));
        assert!(matches!(reader.read(0), Err(StreamError::Closed)));
        // Its pipe is gone: the registry cannot hand it to another child.
        assert_eq!(reader.handle().strong_count(), 0);
    }

    #[tokio::test]
    async fn the_registry_hands_out_a_live_reader_s_pipe_once_and_a_dropped_one_s_never() {
        let (r1, _w1) = pipe_pair();
        let (r2, _w2) = pipe_pair();
        let (reader1, reader2) = (PipeReader::new(r1).unwrap(), PipeReader::new(r2).unwrap());
        let mut pipes = Pipes::default();
        pipes.insert(1, reader1.handle());
        pipes.insert(2, reader2.handle());
        drop(reader2);

        let claimed = pipes.claim(1).expect("the stream at 1 is live");
        assert!(Arc::ptr_eq(&claimed, reader1.pipe.as_ref().unwrap()));
        assert!(pipes.claim(1).is_none(), "a pipe is handed out once");
        assert!(pipes.claim(2).is_none(), "the stream at 2 was dropped");
        assert!(pipes.claim(3).is_none(), "nothing was put at 3");

        // While the claimed pipe is held, the stream cannot give it away too.
        let reader1 = reader1.into_receiver().unwrap_err();
        drop(claimed);
        assert!(reader1.into_receiver().is_ok());
    }

    #[tokio::test]
    async fn the_registry_forgets_dropped_streams_as_it_grows() {
        let (r, _w) = pipe_pair();
        let live = PipeReader::new(r).unwrap();
        let mut pipes = Pipes::default();
        pipes.insert(0, live.handle());
        for rep in 1..=1000 {
            pipes.insert(rep, Weak::new());
        }
        assert!(pipes.readers.len() <= 64, "{} entries", pipes.readers.len());
        assert!(pipes.claim(0).is_some(), "a live stream is never pruned");
    }

    #[tokio::test]
    async fn a_blocking_read_end_reads_the_same_pipe_and_is_blocking_and_close_on_exec() {
        use std::os::fd::AsRawFd;
        let (r, w) = pipe_pair();
        let reader = PipeReader::new(r).unwrap();
        let pipe = reader.into_receiver().ok().unwrap();
        let fd = blocking_read_end(&pipe).unwrap();
        assert!(fd.as_raw_fd() >= 3, "never a standard stream's number");
        let status = rustix::fs::fcntl_getfl(&fd).unwrap();
        assert!(!status.contains(rustix::fs::OFlags::NONBLOCK));
        let flags = rustix::io::fcntl_getfd(&fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        rustix::io::write(&w, b"for the next child").unwrap();
        drop((w, pipe));
        assert_eq!(read_to_end(fd), b"for the next child");
    }

    #[tokio::test]
    async fn a_writer_offers_its_budget_and_traps_a_write_larger_than_that() {
        let (r, w) = pipe_pair();
        let mut writer = PipeWriter::new(w).unwrap();
        assert_eq!(writer.check_write().unwrap(), WRITE_BUDGET);
        let too_big = Bytes::from(vec![0; WRITE_BUDGET + 1]);
        assert!(matches!(writer.write(too_big), Err(StreamError::Trap(_))));
        writer.write(Bytes::from_static(b"hello")).unwrap();
        writer.flush().unwrap();
        writer.ready().await;
        assert_eq!(writer.check_write().unwrap(), WRITE_BUDGET);
        drop(writer);
        assert_eq!(read_to_end(r), b"hello");
    }

    #[tokio::test]
    async fn a_flush_offers_no_room_until_the_pipe_took_everything() {
        let (r, w) = pipe_pair();
        let mut writer = PipeWriter::new(w).unwrap();
        let size = shrink(writer.pipe.as_ref().unwrap());
        let data: Vec<u8> = (0..size * 10).map(|i| i as u8).collect();
        writer.write(Bytes::from(data.clone())).unwrap();
        let pending = WRITE_BUDGET - writer.check_write().unwrap();
        assert!(
            pending >= size * 9,
            "the pipe holds at most {size}, {pending} pending"
        );
        writer.flush().unwrap();
        assert_eq!(writer.check_write().unwrap(), 0, "flushing");
        let reading = std::thread::spawn(move || {
            let mut got = vec![0; data.len()];
            std::io::Read::read_exact(&mut std::fs::File::from(r), &mut got).unwrap();
            (got, data)
        });
        writer.ready().await;
        assert_eq!(writer.check_write().unwrap(), WRITE_BUDGET);
        let (got, data) = reading.join().unwrap();
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn a_writer_whose_reader_is_gone_fails_once_then_is_closed() {
        let (r, w) = pipe_pair();
        let mut writer = PipeWriter::new(w).unwrap();
        drop(r);
        let mut results = Vec::new();
        for _ in 0..3 {
            results.push(writer.write(Bytes::from_static(b"lost")));
            writer.ready().await;
        }
        results.push(writer.check_write().map(drop));
        let failed = results
            .iter()
            .position(|r| r.is_err())
            .expect("writing to a closed pipe fails");
        match &results[failed] {
            Err(StreamError::LastOperationFailed(e)) => {
                assert!(
                    format!("{e:#}").to_lowercase().contains("broken pipe"),
                    "{e:#}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(failed < 3, "the failure is reported by the next call");
        for later in &results[failed + 1..] {
            assert!(matches!(later, Err(StreamError::Closed)), "{later:?}");
        }
    }

    #[tokio::test]
    async fn a_writer_dropped_with_bytes_pending_writes_them_out_then_closes_the_pipe() {
        let (r, w) = pipe_pair();
        let mut writer = PipeWriter::new(w).unwrap();
        let size = shrink(writer.pipe.as_ref().unwrap());
        let data: Vec<u8> = (0..size * 25).map(|i| (i * 7) as u8).collect();
        writer.write(Bytes::from(data.clone())).unwrap();
        assert!(
            WRITE_BUDGET - writer.check_write().unwrap() > 0,
            "something is pending"
        );
        drop(writer);
        let got = tokio::task::spawn_blocking(move || read_to_end(r))
            .await
            .unwrap();
        assert_eq!(got, data, "everything, then end of file");
    }
}
