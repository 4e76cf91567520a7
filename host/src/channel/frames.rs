//! Frames on a channel's socket: a little-endian `u32` length, then the
//! message; decoded without blocking ([`FrameDecoder`]) or, for the
//! specification and the template's requests, read and written whole with
//! the descriptors they pass (`SCM_RIGHTS`).

use super::{MAX_MESSAGE, QUEUE_BYTES};
use rustix::net::{RecvFlags, SendFlags};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

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
            shrink(&mut self.buf);
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

    /// Whether [`next_message`](Self::next_message) has something to say: a
    /// whole message or a frame error.
    pub fn has_message(&self) -> bool {
        let rest = &self.buf[self.start..];
        rest.first_chunk::<4>().is_some_and(|header| {
            let len = u32::from_le_bytes(*header) as usize;
            len > MAX_MESSAGE || rest.len() >= 4 + len
        })
    }

    /// Bytes held that no message was taken from yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether a message was cut off (bytes left that are not a whole one).
    pub fn has_partial(&self) -> bool {
        self.start < self.buf.len()
    }
}

/// Empties `buf`, giving back the memory a large message left it with.
pub(super) fn shrink(buf: &mut Vec<u8>) {
    buf.clear();
    if buf.capacity() > QUEUE_BYTES {
        *buf = Vec::new();
    }
}

/// Most descriptors sent with a worker's specification.
pub(crate) const MAX_PASSED_FDS: usize = 64;

/// Sends `message` as one frame on the blocking `socket`, with `fds`
/// attached to its first byte (a worker's specification and the
/// descriptors it names, given to a worker process that may have started
/// long before).
pub(crate) fn send_frame_with_fds(
    socket: &UnixStream,
    message: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage};
    use std::mem::MaybeUninit;
    if fds.len() > MAX_PASSED_FDS {
        return Err(io::Error::other(format!(
            "{} descriptors for a worker, more than {MAX_PASSED_FDS}",
            fds.len()
        )));
    }
    let mut frame = Vec::with_capacity(4 + message.len());
    encode(message, &mut frame);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_PASSED_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("no room for the descriptors"));
    }
    let sent = rustix::net::sendmsg(
        socket,
        &[io::IoSlice::new(&frame)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    std::io::Write::write_all(&mut &*socket, &frame[sent..])
}

/// Reads one frame from the blocking `socket`, taking no byte beyond it,
/// and the descriptors sent with it (close-on-exec).
pub(crate) fn read_frame_with_fds(socket: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage};
    use std::io::Read;
    use std::mem::MaybeUninit;
    let mut header = [0u8; 4];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_PASSED_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        socket,
        &mut [io::IoSliceMut::new(&mut header)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::WAITALL,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(passed) = message {
            fds.extend(passed);
        }
    }
    if got.bytes < 4 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the channel closed before the first frame",
        ));
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::other(FrameError(len).to_string()));
    }
    let mut frame = vec![0u8; len];
    (&*socket).read_exact(&mut frame)?;
    Ok((frame, fds))
}

/// Appends the frame of `message` to `out`.
pub fn encode(message: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(message.len()).expect("messages are at most MAX_MESSAGE bytes");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(message);
}
