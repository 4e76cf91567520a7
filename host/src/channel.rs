//! The message channel between a guest and a forked worker: ordered,
//! length-framed messages over a Unix stream socket, with bounded queues on
//! both sides.
//!
//! Wire format: each message is a 4-byte little-endian length followed by
//! that many bytes. A length above [`MAX_MESSAGE`] is a protocol error that
//! closes the channel.
//!
//! Bounds: messages `send` has accepted but the socket has not yet taken
//! may hold up to [`QUEUE_BYTES`] (a larger message is let through alone);
//! received messages the guest has not yet taken may hold up to
//! [`QUEUE_BYTES`] too, after which the host stops reading the socket, the
//! peer's writes block, and the peer's `send` blocks: backpressure from end
//! to end.

use crate::bindings::types::ErrorCode;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

/// The largest message, in bytes: 16 MiB.
pub const MAX_MESSAGE: usize = 16 << 20;

/// Bytes of messages queued in each direction before `send` blocks or the
/// host stops reading: 1 MiB.
pub const QUEUE_BYTES: usize = 1 << 20;

/// A malformed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub usize);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "message of {} bytes is above the limit of {MAX_MESSAGE}",
            self.0
        )
    }
}

/// Splits a byte stream into messages.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
}

impl FrameDecoder {
    /// Adds bytes read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if there is one.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let rest = &self.buf[self.start..];
        let Some(header) = rest.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*header) as usize;
        if len > MAX_MESSAGE {
            return Err(FrameError(len));
        }
        if rest.len() < 4 + len {
            return Ok(None);
        }
        let message = rest[4..4 + len].to_vec();
        self.start += 4 + len;
        if self.start > (64 << 10) && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(message))
    }

    /// Whether a message was cut off (bytes left that are not a whole one).
    pub fn has_partial(&self) -> bool {
        self.start < self.buf.len()
    }
}

/// Appends the frame of `message` to `out`.
pub fn encode(message: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(message.len()).expect("messages are at most MAX_MESSAGE bytes");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(message);
}

/// One end of a message channel.
pub struct Channel {
    outbox: mpsc::UnboundedSender<(Vec<u8>, OwnedSemaphorePermit)>,
    send_budget: Arc<Semaphore>,
    inbox: Arc<Inbox>,
    _tasks: [tokio::task::JoinHandle<()>; 2],
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").finish_non_exhaustive()
    }
}

/// Received messages not yet taken by the guest.
#[derive(Default)]
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
    /// Signalled when a message arrives or the channel closes.
    arrived: Notify,
    /// Signalled when the guest takes a message.
    taken: Notify,
}

#[derive(Default)]
struct InboxState {
    messages: VecDeque<Vec<u8>>,
    bytes: usize,
    closed: bool,
}

impl Channel {
    /// Starts the channel's reader and writer tasks on `socket`. Must be
    /// called inside a tokio runtime.
    pub fn new(socket: UnixStream) -> Channel {
        let (read, write) = socket.into_split();
        let inbox = Arc::new(Inbox::default());
        let (outbox, queued) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_frames(read, inbox.clone()));
        let writer = tokio::spawn(write_frames(write, queued));
        Channel {
            outbox,
            send_budget: Arc::new(Semaphore::new(QUEUE_BYTES)),
            inbox,
            _tasks: [reader, writer],
        }
    }

    /// Queues `message`, waiting while the send queue is full.
    pub async fn send(&self, message: Vec<u8>) -> Result<(), ErrorCode> {
        self.check_open()?;
        check_size(&message)?;
        let permit = (self
            .send_budget
            .clone()
            .acquire_many_owned(cost(&message))
            .await)
            .map_err(|_| ErrorCode::Closed)?;
        self.outbox
            .send((message, permit))
            .map_err(|_| ErrorCode::Closed)
    }

    /// Queues `message` if the send queue has room for it now.
    pub fn try_send(&self, message: Vec<u8>) -> Result<(), ErrorCode> {
        self.check_open()?;
        check_size(&message)?;
        let permit = (self
            .send_budget
            .clone()
            .try_acquire_many_owned(cost(&message)))
        .map_err(|_| ErrorCode::LimitExceeded("the channel's send queue is full".into()))?;
        self.outbox
            .send((message, permit))
            .map_err(|_| ErrorCode::Closed)
    }

    /// `closed` once the peer has closed its end (exited or crashed).
    fn check_open(&self) -> Result<(), ErrorCode> {
        match self.inbox.state.lock().unwrap().closed {
            true => Err(ErrorCode::Closed),
            false => Ok(()),
        }
    }

    /// Waits for the next message; `closed` after the last one.
    pub async fn receive(&self) -> Result<Vec<u8>, ErrorCode> {
        loop {
            let arrived = self.inbox.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(message) = self.try_receive()? {
                return Ok(message);
            }
            arrived.await;
        }
    }

    /// The next message if one is here; `closed` after the last one.
    pub fn try_receive(&self) -> Result<Option<Vec<u8>>, ErrorCode> {
        let mut state = self.inbox.state.lock().unwrap();
        match state.messages.pop_front() {
            Some(message) => {
                state.bytes -= message.len();
                drop(state);
                self.inbox.taken.notify_one();
                Ok(Some(message))
            }
            None if state.closed => Err(ErrorCode::Closed),
            None => Ok(None),
        }
    }

    /// A pollable value that is ready when `receive` would not block.
    pub(crate) fn readiness(&self) -> Readiness {
        Readiness(self.inbox.clone())
    }

    /// Stops accepting messages and waits until every queued one has been
    /// written to the socket (or the socket failed), then shuts the socket
    /// down for writing, so the peer sees `closed` after the last message.
    pub async fn close(self) {
        let Channel {
            outbox,
            _tasks: [reader, writer],
            ..
        } = self;
        drop(outbox);
        let _ = writer.await;
        reader.abort();
    }
}

fn check_size(message: &[u8]) -> Result<(), ErrorCode> {
    if message.len() > MAX_MESSAGE {
        return Err(ErrorCode::LimitExceeded(format!(
            "message of {} bytes is above the limit of {MAX_MESSAGE} bytes",
            message.len()
        )));
    }
    Ok(())
}

/// The queue budget a message takes: its size, but at least 1 and at most
/// the whole queue (so a large message goes alone).
fn cost(message: &[u8]) -> u32 {
    message.len().clamp(1, QUEUE_BYTES) as u32
}

/// Ready when a channel's `receive` would not block.
pub(crate) struct Readiness(Arc<Inbox>);

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Readiness {
    async fn ready(&mut self) {
        loop {
            let arrived = self.0.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let state = self.0.state.lock().unwrap();
                if state.closed || !state.messages.is_empty() {
                    return;
                }
            }
            arrived.await;
        }
    }
}

async fn read_frames(mut socket: OwnedReadHalf, inbox: Arc<Inbox>) {
    let mut decoder = FrameDecoder::default();
    let mut buf = vec![0u8; 64 << 10];
    'read: loop {
        let n = match socket.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        decoder.feed(&buf[..n]);
        loop {
            let message = match decoder.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(target: "wasmproc::channel", error = %e, "closing the channel");
                    break 'read;
                }
            };
            // Wait for room, then queue it.
            loop {
                let taken = inbox.taken.notified();
                tokio::pin!(taken);
                taken.as_mut().enable();
                {
                    let mut state = inbox.state.lock().unwrap();
                    if state.bytes == 0 || state.bytes + message.len() <= QUEUE_BYTES {
                        state.bytes += message.len();
                        state.messages.push_back(message);
                        break;
                    }
                }
                taken.await;
            }
            inbox.arrived.notify_waiters();
        }
    }
    if decoder.has_partial() {
        tracing::debug!(target: "wasmproc::channel", "the peer closed the channel inside a message");
    }
    inbox.state.lock().unwrap().closed = true;
    inbox.arrived.notify_waiters();
}

async fn write_frames(
    socket: OwnedWriteHalf,
    mut queued: mpsc::UnboundedReceiver<(Vec<u8>, OwnedSemaphorePermit)>,
) {
    let mut socket = BufWriter::with_capacity(64 << 10, socket);
    let mut frame = Vec::new();
    while let Some((message, permit)) = queued.recv().await {
        // Write everything already queued, then flush once.
        let mut next = Some((message, permit));
        while let Some((message, _permit)) = next {
            frame.clear();
            encode(&message, &mut frame);
            if socket.write_all(&frame).await.is_err() {
                return;
            }
            next = queued.try_recv().ok();
        }
        if socket.flush().await.is_err() {
            return;
        }
    }
    let _ = socket.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any messages, framed and cut into any chunks, decode to the same
        /// messages in order.
        #[test]
        fn decoder_returns_every_message_in_order_whatever_the_chunking(
            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
            cuts in prop::collection::vec(1usize..64, 1..50),
        ) {
            let mut stream = Vec::new();
            for m in &messages {
                encode(m, &mut stream);
            }
            let mut decoder = FrameDecoder::default();
            let mut got = Vec::new();
            let mut rest = &stream[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*cut).min(rest.len()));
                rest = tail;
                decoder.feed(chunk);
                while let Some(m) = decoder.next_message().unwrap() {
                    got.push(m);
                }
            }
            prop_assert_eq!(got, messages);
            prop_assert!(!decoder.has_partial());
        }

        /// Arbitrary bytes never panic the decoder: they decode to messages,
        /// wait for more, or are refused as over the limit.
        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
            let mut decoder = FrameDecoder::default();
            decoder.feed(&bytes);
            while let Ok(Some(m)) = decoder.next_message() {
                prop_assert!(m.len() <= MAX_MESSAGE);
            }
        }
    }

    #[test]
    fn a_length_over_the_limit_is_a_frame_error() {
        let mut decoder = FrameDecoder::default();
        decoder.feed(&((MAX_MESSAGE + 1) as u32).to_le_bytes());
        assert_eq!(decoder.next_message(), Err(FrameError(MAX_MESSAGE + 1)));
    }
}
