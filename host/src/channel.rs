//! The message channel between a guest and a forked worker: ordered,
//! length-framed messages over a Unix stream socket.
//!
//! Wire format: each message is a 4-byte little-endian length followed by
//! that many bytes. A length above [`MAX_MESSAGE`] is a protocol error that
//! closes the channel.
//!
//! Both directions work on the socket in the guest's own call, with no task
//! in between: `send` writes the frame (waiting while the socket is full),
//! `receive` reads the socket when no whole message is buffered. The queue
//! in each direction is the kernel's socket buffers (set to [`QUEUE_BYTES`]):
//! when the receiving guest does not receive, its socket fills, and the
//! sender's `send` waits — backpressure from end to end. When the peer
//! closes its end (it exited or crashed), every message it sent first is
//! still received, then `closed`.

use crate::bindings::types::ErrorCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// The largest message, in bytes: 16 MiB.
pub const MAX_MESSAGE: usize = 16 << 20;

/// The socket buffer size asked of the kernel in each direction: 1 MiB
/// (it may give less; Linux doubles what it grants for bookkeeping).
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

    /// Whether a whole message (or a frame error) is buffered.
    pub fn has_message(&self) -> bool {
        let rest = &self.buf[self.start..];
        match rest.first_chunk::<4>() {
            Some(header) => {
                let len = u32::from_le_bytes(*header) as usize;
                len > MAX_MESSAGE || rest.len() >= 4 + len
            }
            None => false,
        }
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
    write: OwnedWriteHalf,
    /// A frame being built, kept to reuse its allocation.
    frame: Vec<u8>,
    read: Arc<ReadSide>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").finish_non_exhaustive()
    }
}

/// The receiving side, shared with the pollables of `subscribe`.
struct ReadSide {
    socket: OwnedReadHalf,
    decoder: Mutex<FrameDecoder>,
    /// The peer closed its end (or the stream broke): after the buffered
    /// messages, `closed`.
    eof: AtomicBool,
}

impl ReadSide {
    /// The next buffered message, reading what the socket holds now if
    /// none is. `Ok(None)`: nothing yet.
    fn try_next(&self) -> Result<Option<Vec<u8>>, ErrorCode> {
        let mut decoder = self.decoder.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => return Ok(Some(message)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(target: "wasmproc::channel", error = %e, "closing the channel");
                    self.eof.store(true, Ordering::Release);
                    return Err(ErrorCode::Closed);
                }
            }
            if self.eof.load(Ordering::Acquire) {
                return Err(ErrorCode::Closed);
            }
            let mut buf = [0u8; 64 << 10];
            match self.socket.try_read(&mut buf) {
                Ok(0) => self.eof.store(true, Ordering::Release),
                Ok(n) => decoder.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(_) => self.eof.store(true, Ordering::Release),
            }
        }
    }

    /// Whether `try_next` would not return `Ok(None)`.
    fn ready_now(&self) -> bool {
        self.eof.load(Ordering::Acquire)
            || self
                .decoder
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .has_message()
    }

    /// Waits until `try_next` would not return `Ok(None)`.
    async fn wait(&self) {
        loop {
            if self.ready_now() {
                return;
            }
            if self.socket.readable().await.is_err() {
                self.eof.store(true, Ordering::Release);
                return;
            }
            // Take in what arrived, so a partial frame does not count.
            let mut decoder = self.decoder.lock().unwrap_or_else(|e| e.into_inner());
            let mut buf = [0u8; 64 << 10];
            match self.socket.try_read(&mut buf) {
                Ok(0) => self.eof.store(true, Ordering::Release),
                Ok(n) => decoder.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => self.eof.store(true, Ordering::Release),
            }
        }
    }
}

impl Channel {
    /// A channel over `socket`, with [`QUEUE_BYTES`] socket buffers. Must
    /// be called inside a tokio runtime.
    pub fn new(socket: UnixStream) -> Channel {
        let size = QUEUE_BYTES;
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&socket, size);
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, size);
        let (read, write) = socket.into_split();
        Channel {
            write,
            frame: Vec::new(),
            read: Arc::new(ReadSide {
                socket: read,
                decoder: Mutex::new(FrameDecoder::default()),
                eof: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `message`, waiting while the socket is full.
    pub async fn send(&mut self, message: &[u8]) -> Result<(), ErrorCode> {
        if self.read.eof.load(Ordering::Acquire) {
            return Err(ErrorCode::Closed);
        }
        if message.len() > MAX_MESSAGE {
            return Err(ErrorCode::LimitExceeded(format!(
                "message of {} bytes is above the limit of {MAX_MESSAGE} bytes",
                message.len()
            )));
        }
        self.frame.clear();
        // Large messages are not copied into the frame: header, then message.
        let written = if message.len() > (64 << 10) {
            let len = message.len() as u32;
            self.frame.extend_from_slice(&len.to_le_bytes());
            match self.write.write_all(&self.frame[..4]).await {
                Ok(()) => self.write.write_all(message).await,
                Err(e) => Err(e),
            }
        } else {
            encode(message, &mut self.frame);
            self.write.write_all(&self.frame).await
        };
        if self.frame.capacity() > (1 << 20) {
            self.frame = Vec::new();
        }
        written.map_err(|_| ErrorCode::Closed)
    }

    /// Waits for the next message; `closed` after the last one.
    pub async fn receive(&self) -> Result<Vec<u8>, ErrorCode> {
        loop {
            if let Some(message) = self.read.try_next()? {
                return Ok(message);
            }
            self.read.wait().await;
        }
    }

    /// The next message if one is here; `closed` after the last one.
    pub fn try_receive(&self) -> Result<Option<Vec<u8>>, ErrorCode> {
        self.read.try_next()
    }

    /// A pollable value that is ready when `receive` would not block.
    pub(crate) fn readiness(&self) -> Readiness {
        Readiness(self.read.clone())
    }

    /// Shuts the socket down for writing, so the peer sees `closed` after
    /// the last message (every `send` has already handed its frame to the
    /// kernel).
    pub async fn close(mut self) {
        let _ = self.write.shutdown().await;
    }
}

/// Ready when a channel's `receive` would not block.
pub(crate) struct Readiness(Arc<ReadSide>);

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Readiness {
    async fn ready(&mut self) {
        self.0.wait().await;
    }
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
