//! The message channel between a guest and a forked worker: ordered,
//! length-framed messages over a Unix stream socket.
//!
//! Wire format: each message is a 4-byte little-endian length followed by
//! that many bytes. A length above [`MAX_MESSAGE`] is a protocol error that
//! closes the channel.
//!
//! The socket is read and written in the guest's own calls, so a round trip
//! costs two socket hops and no task hand-offs:
//! - `send` appends the frame to an output buffer. The buffer is written
//!   out when it reaches 64 KiB, when this end is about to wait for a
//!   message (`receive`, `try-receive` finding nothing, the pollable), and
//!   otherwise by a flusher task woken when the buffer stops being empty.
//!   Back-to-back sends thus share one `write`, and a request followed by a
//!   wait for its reply goes out at once. At most [`QUEUE_BYTES`] wait in
//!   the buffer; then `send` waits for the socket (backpressure).
//! - `receive` reads the socket directly (up to 64 KiB at a time)
//!   and decodes frames; it reads only when it has no whole message, so
//!   the host holds at most one message plus one chunk, and the kernel's
//!   socket buffer is the queue: a guest that does not receive makes its
//!   peer's `send` wait.
//! - A `receive` that finds nothing checks the socket again for up to
//!   [`SPIN`] before it sleeps. Waking a sleeping thread costs tens of
//!   microseconds on an idle (virtual) CPU, more than a whole round trip; a
//!   peer that answers within the spin is seen at once. The pollable never
//!   spins (a guest may poll many channels at once).
//!
//! The socket is read and written with non-blocking system calls made
//! directly (tokio's cached readiness would hide data that arrived since
//! the last reactor turn, defeating the spin); the reactor is only used to
//! sleep until the socket is readable or writable.

mod frames;

use rustix::net::{RecvFlags, SendFlags};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The largest message, in bytes: 16 MiB.
pub const MAX_MESSAGE: usize = 16 << 20;

/// Bytes of messages `send` holds that the socket has not taken yet,
/// before it waits (a larger message is let through alone): 1 MiB.
pub const QUEUE_BYTES: usize = 1 << 20;

/// How long a `receive` that finds nothing keeps checking the socket before
/// it sleeps, unless set otherwise: 50 µs (see the module docs).
pub const SPIN: Duration = crate::policy::DEFAULT_CHANNEL_SPIN;

/// Frames held before `send` writes them out itself rather than leaving
/// them to the flusher task: 64 KiB.
const FLUSH_AT: usize = 64 << 10;

/// Bytes of unread messages a channel takes in from its peer while the
/// guest waits for the peer's exit, unless set otherwise: 16 MiB (see
/// `Channel::absorb`).
pub const ABSORB_BYTES: usize = crate::policy::DEFAULT_CHANNEL_BUFFER;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 << 10;

use frames::shrink;
pub use frames::{FrameDecoder, FrameError, encode};
pub(crate) use frames::{read_frame_with_fds, send_frame_with_fds};

/// One end of a message channel.
pub struct Channel {
    shared: Arc<EndState>,
    flusher: JoinHandle<()>,
    spin: Duration,
}

/// Bytes a channel takes in unread while its guest waits for the peer's
/// exit; set once, before the channel is used.
type Buffer = std::sync::atomic::AtomicUsize;

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").finish_non_exhaustive()
    }
}

/// The bytes that all of one guest's channels may take in unread between
/// them, while the guest waits for its workers' exits (see
/// [`Channel::set_pool`]): each channel's own buffer bounds one worker,
/// this bounds the guest, however many workers it has. A channel whose
/// share runs out stops reading; its worker then waits to send (no
/// message is lost), as when its own buffer is full.
#[derive(Clone, Debug)]
pub struct BufferPool(Arc<std::sync::atomic::AtomicUsize>);

impl BufferPool {
    /// A pool of `bytes`.
    pub fn new(bytes: usize) -> BufferPool {
        BufferPool(Arc::new(bytes.into()))
    }

    /// Takes `n` bytes if the pool has them.
    fn take(&self, n: usize) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        (self.0)
            .fetch_update(AcqRel, Acquire, |left| left.checked_sub(n))
            .is_ok()
    }

    /// Gives `n` bytes back.
    fn give(&self, n: usize) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::AcqRel);
    }

    /// The bytes left.
    pub fn left(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// What the channel's end, its pollables and its flusher task share.
struct EndState {
    socket: AsyncFd<OwnedFd>,
    inbox: Mutex<Inbox>,
    outbox: Mutex<Outbox>,
    /// Wakes the flusher task.
    flush: Notify,
    /// See [`Channel::set_buffer`].
    buffer: Buffer,
}

/// The read side: bytes read from the socket, not yet taken as messages.
struct Inbox {
    decoder: FrameDecoder,
    chunk: Box<[u8]>,
    /// The peer closed its end, the socket failed, or a frame was bad.
    closed: bool,
    /// This end closed the channel ([`Channel::close_here`]).
    closed_here: bool,
    /// The guest's pool this channel's unread bytes are counted in, and
    /// how many it holds of it.
    pool: Option<BufferPool>,
    charged: usize,
}

impl Inbox {
    /// Gives back to the pool what this channel holds beyond the bytes
    /// still unread (after messages were taken, or all of it once closed).
    fn settle(&mut self) {
        let unread = if self.closed_here {
            0
        } else {
            self.decoder.buffered()
        };
        let excess = self.charged.saturating_sub(unread);
        if let Some(pool) = &self.pool {
            pool.give(excess);
        }
        self.charged -= excess;
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.closed_here = true;
        self.settle();
    }
}

/// The write side: frames not yet written to the socket.
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    /// How much of `bytes` has been written.
    written: usize,
    /// Writing failed (the peer is gone): nothing more can be sent.
    broken: bool,
    /// `close` was called: the flusher writes what is left and ends.
    closing: bool,
    /// The guest's last call on this end was a send.
    after_send: bool,
}

impl Outbox {
    fn pending(&self) -> usize {
        self.bytes.len() - self.written
    }
}

impl Channel {
    /// Makes `socket` one end of a channel and starts its flusher task.
    /// Must be called inside a tokio runtime.
    pub fn new(socket: UnixStream) -> io::Result<Channel> {
        socket.set_nonblocking(true)?;
        let socket = crate::sys::watch(socket.into(), Interest::READABLE | Interest::WRITABLE)?;
        let shared = Arc::new(EndState {
            socket,
            inbox: Mutex::new(Inbox {
                decoder: FrameDecoder::default(),
                chunk: vec![0; READ_CHUNK].into(),
                closed: false,
                closed_here: false,
                pool: None,
                charged: 0,
            }),
            outbox: Mutex::new(Outbox::default()),
            flush: Notify::new(),
            buffer: Buffer::new(ABSORB_BYTES),
        });
        let flusher = tokio::spawn(flush_in_background(shared.clone()));
        Ok(Channel {
            shared,
            flusher,
            spin: SPIN,
        })
    }

    /// Sets how long `receive` checks the socket before it sleeps (default
    /// [`SPIN`]; `Duration::ZERO` never spins).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// Sets how many bytes of unread messages the channel takes in while
    /// the guest waits for the peer's exit (default [`ABSORB_BYTES`]).
    pub fn set_buffer(&mut self, bytes: usize) {
        self.shared
            .buffer
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts the bytes this channel takes in unread against `pool`, which
    /// the guest's other channels share (see [`BufferPool`]).
    pub fn set_pool(&mut self, pool: BufferPool) {
        self.shared.inbox().pool = Some(pool);
    }

    /// Closes the channel from this end, as Node's `disconnect`: nothing
    /// more is sent or received here (`closed`); what was sent before is
    /// still written out, then the socket is shut down both ways, so the
    /// peer receives every earlier message, then `closed`, and its sends
    /// fail.
    pub fn close_here(&self) {
        self.shared.inbox().closed_here = true;
        self.shared.outbox().closing = true;
        self.shared.flush.notify_one();
    }

    /// Sends `message`, waiting while [`QUEUE_BYTES`] are already waiting
    /// for the socket.
    pub async fn send(&self, message: Vec<u8>) -> Result<(), ChannelError> {
        check_size(&message)?;
        loop {
            if self.shared.try_queue(&message)? {
                return Ok(());
            }
            // Full: write some out ourselves.
            self.shared
                .flush_or_wait()
                .await
                .map_err(|_| ChannelError::Closed)?;
        }
    }

    /// Sends `message` if there is room for it now.
    pub fn try_send(&self, message: Vec<u8>) -> Result<(), ChannelError> {
        check_size(&message)?;
        if self.shared.try_queue(&message)? {
            return Ok(());
        }
        let _ = self.shared.flush_now();
        match self.shared.try_queue(&message)? {
            true => Ok(()),
            false => Err(ChannelError::Full),
        }
    }

    /// Waits for the next message; `closed` after the last one.
    pub async fn receive(&self) -> Result<Vec<u8>, ChannelError> {
        let shared = &self.shared;
        shared.receiving();
        if let Some(message) = shared.next()? {
            return Ok(message);
        }
        // About to wait: what we sent must go out first.
        let _ = shared.flush_now();
        let spin_until = Instant::now() + self.spin;
        while Instant::now() < spin_until {
            std::thread::yield_now();
            if let Some(message) = shared.next()? {
                return Ok(message);
            }
        }
        loop {
            match shared.socket.readable().await {
                Ok(mut ready) => {
                    if let Some(message) = shared.next()? {
                        return Ok(message);
                    }
                    ready.clear_ready();
                }
                Err(_) => shared.inbox().closed = true,
            }
        }
    }

    /// The next message if one is here; `closed` after the last one.
    pub fn try_receive(&self) -> Result<Option<Vec<u8>>, ChannelError> {
        self.shared.receiving();
        let message = self.shared.next()?;
        if message.is_none() {
            // The guest will wait or do something else: let what it sent go.
            let _ = self.shared.flush_now();
        }
        Ok(message)
    }

    /// Takes in what the peer sends while the guest waits for something
    /// else (a worker's exit), so that a peer that must write out its
    /// messages before it ends is not kept waiting. It stops taking in once
    /// the channel's buffer ([`set_buffer`](Self::set_buffer), default
    /// [`ABSORB_BYTES`]) is full of unread bytes (then the peer waits for the
    /// guest to read, as with any full channel), and never returns: race it
    /// against what the guest waits for.
    pub(crate) async fn absorb(&self) {
        loop {
            let Ok(mut ready) = self.shared.socket.readable().await else {
                return std::future::pending().await;
            };
            let room = self.shared.take_in(&mut self.shared.inbox());
            if !room {
                return std::future::pending().await;
            }
            ready.clear_ready();
        }
    }

    /// A pollable value that is ready when `receive` would not block.
    pub(crate) fn readiness(&self) -> Readiness {
        Readiness(self.shared.clone())
    }

    /// Stops sending and waits until everything sent has been written to
    /// the socket (or the socket failed), then shuts the socket down, so
    /// the peer sees `closed` after the last message.
    pub async fn close(mut self) {
        self.shared.outbox().closing = true;
        self.shared.flush.notify_one();
        let _ = (&mut self.flusher).await;
    }
}

impl Drop for Channel {
    /// Stops the flusher and shuts the socket down, so the peer sees the
    /// channel closed even while a pollable still holds the socket.
    fn drop(&mut self) {
        self.flusher.abort();
        let _ = rustix::net::shutdown(self.shared.socket.get_ref(), rustix::net::Shutdown::Both);
    }
}

impl EndState {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `message`'s frame to the output buffer if there is room
    /// (there always is when the buffer is empty).
    ///
    /// A message that looks like a request, with nothing else to send and
    /// no message waiting to be taken, is written at once; one in a run of
    /// sends, or a reply while more messages wait, stays in the buffer for
    /// one `write` with the others.
    fn try_queue(&self, message: &[u8]) -> Result<bool, ChannelError> {
        let mut outbox = self.outbox();
        let (closed, waiting) = {
            let inbox = self.inbox();
            (inbox.closed, inbox.decoder.has_message())
        };
        if outbox.closing {
            return Err(ChannelError::ClosedHere);
        }
        if outbox.broken || closed {
            return Err(ChannelError::Closed);
        }
        let pending = outbox.pending();
        if pending > 0 && pending + 4 + message.len() > QUEUE_BYTES {
            return Ok(false);
        }
        let at_once = pending == 0 && !waiting && !outbox.after_send;
        outbox.after_send = true;
        encode(message, &mut outbox.bytes);
        let flushed = if at_once || outbox.pending() >= FLUSH_AT {
            self.write_out(&mut outbox)
                .map_err(|_| ChannelError::Closed)?
        } else {
            false
        };
        if pending == 0 && !flushed {
            // The buffer was empty: the flusher writes it out unless this
            // end does first. (Whenever the buffer holds bytes, the flusher
            // has been woken and writes until it is empty.)
            self.flush.notify_one();
        }
        Ok(true)
    }

    /// Notes that the guest asked for a message (see [`EndState::try_queue`]).
    fn receiving(&self) {
        self.outbox().after_send = false;
    }

    /// Writes as much of the output buffer as the socket takes now;
    /// whether it is all written. An error marks the channel broken.
    fn flush_now(&self) -> io::Result<bool> {
        self.write_out(&mut self.outbox())
    }

    fn write_out(&self, outbox: &mut Outbox) -> io::Result<bool> {
        while outbox.pending() > 0 {
            let from = outbox.written;
            let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
            match rustix::net::send(self.socket.get_ref(), &outbox.bytes[from..], flags)
                .map_err(io::Error::from)
            {
                Ok(n) => outbox.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    outbox.broken = true;
                    outbox.bytes = Vec::new();
                    outbox.written = 0;
                    return Err(e);
                }
            }
        }
        shrink(&mut outbox.bytes);
        outbox.written = 0;
        Ok(true)
    }

    /// The next whole message, reading the socket (without waiting) if none
    /// is decoded yet; `closed` once the peer is gone and every message it
    /// sent was taken.
    fn next(&self) -> Result<Option<Vec<u8>>, ChannelError> {
        let mut inbox = self.inbox();
        if inbox.closed_here {
            return Err(ChannelError::ClosedHere);
        }
        if !inbox.decoder.has_message() {
            self.fill(&mut inbox);
        }
        let next = inbox.decoder.next_message();
        inbox.settle();
        match next {
            Ok(Some(message)) => Ok(Some(message)),
            Ok(None) if inbox.closed => Err(ChannelError::Closed),
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(target: "wasmproc::channel", error = %e, "closing the channel");
                inbox.closed = true;
                Err(ChannelError::Closed)
            }
        }
    }

    /// Reads all the socket holds now into `inbox`, whole messages or
    /// not, while fewer than the channel's buffer holds wait there; whether there is
    /// room for more.
    fn take_in(&self, inbox: &mut Inbox) -> bool {
        let buffer = self.buffer.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            if inbox.closed || inbox.decoder.buffered() >= buffer {
                return false;
            }
            // A chunk is reserved of the guest's pool before it is read.
            if let Some(pool) = &inbox.pool {
                if !pool.take(READ_CHUNK) {
                    return false;
                }
                inbox.charged += READ_CHUNK;
            }
            let read = rustix::net::recv(
                self.socket.get_ref(),
                &mut inbox.chunk[..],
                RecvFlags::DONTWAIT,
            );
            let more = match read.map_err(io::Error::from) {
                Ok((0, _)) => {
                    inbox.closed = true;
                    true
                }
                Ok((n, _)) => {
                    let Inbox { decoder, chunk, .. } = &mut *inbox;
                    decoder.feed(&chunk[..n]);
                    true
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
                Err(_) => {
                    inbox.closed = true;
                    true
                }
            };
            inbox.settle();
            if !more {
                return true;
            }
        }
    }

    /// Reads what the socket holds now, until there is a whole message.
    fn fill(&self, inbox: &mut Inbox) {
        let Inbox {
            decoder,
            chunk,
            closed,
            ..
        } = inbox;
        while !*closed && !decoder.has_message() {
            match rustix::net::recv(self.socket.get_ref(), &mut chunk[..], RecvFlags::DONTWAIT)
                .map_err(io::Error::from)
            {
                Ok((0, _)) => {
                    if decoder.has_partial() {
                        tracing::debug!(target: "wasmproc::channel", "the peer closed the channel inside a message");
                    }
                    *closed = true;
                }
                Ok((n, _)) => decoder.feed(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => *closed = true,
            }
        }
    }

    /// Writes out the output buffer, waiting for the socket as needed
    /// (but returning after the first wait, so the caller can recheck).
    async fn flush_or_wait(&self) -> io::Result<()> {
        if !self.flush_now()? {
            let mut ready = self.socket.writable().await?;
            if !self.flush_now()? {
                ready.clear_ready();
            }
        }
        Ok(())
    }

    /// Whether `receive` would not block now (reading the socket to know).
    fn ready(&self) -> bool {
        let mut inbox = self.inbox();
        self.fill(&mut inbox);
        inbox.closed || inbox.closed_here || inbox.decoder.has_message()
    }
}

/// The flusher task: writes out what `send` left in the output buffer when
/// the guest goes on without waiting for a message; on `close`, writes
/// everything and shuts the socket down (both ways: the peer's sends fail
/// from then on, as its process had ended).
async fn flush_in_background(shared: Arc<EndState>) {
    loop {
        shared.flush.notified().await;
        while shared.outbox().pending() > 0 {
            if shared.flush_or_wait().await.is_err() {
                return;
            }
        }
        if shared.outbox().closing {
            let _ = rustix::net::shutdown(shared.socket.get_ref(), rustix::net::Shutdown::Both);
            return;
        }
    }
}

fn check_size(message: &[u8]) -> Result<(), ChannelError> {
    if message.len() > MAX_MESSAGE {
        return Err(ChannelError::TooLarge(message.len()));
    }
    Ok(())
}

/// Why a channel operation failed. The `wasmproc:process` interfaces turn
/// it into an `error-code` (`closed`, `limit-exceeded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelError {
    /// The peer closed its end (after its last message), or the channel
    /// broke.
    Closed,
    /// This end closed the channel.
    ClosedHere,
    /// A message of this many bytes is over [`MAX_MESSAGE`].
    TooLarge(usize),
    /// `try_send` found no room.
    Full,
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelError::Closed => f.write_str(
                "the channel is closed: the peer closed it or ended, after its last message",
            ),
            ChannelError::ClosedHere => f.write_str("this end closed the channel"),
            ChannelError::TooLarge(n) => write!(
                f,
                "message of {n} bytes is above the limit of {MAX_MESSAGE} bytes"
            ),
            ChannelError::Full => f.write_str("the channel's send queue is full"),
        }
    }
}

impl std::error::Error for ChannelError {}

/// Ready when a channel's `receive` would not block.
pub(crate) struct Readiness(Arc<EndState>);

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Readiness {
    async fn ready(&mut self) {
        let shared = &self.0;
        // About to wait: what we sent must go out first.
        let _ = shared.flush_now();
        while !shared.ready() {
            match shared.socket.readable().await {
                Ok(mut ready) => {
                    if shared.ready() {
                        return;
                    }
                    ready.clear_ready();
                }
                Err(_) => shared.inbox().closed = true,
            }
        }
    }
}

#[cfg(test)]
mod tests;
