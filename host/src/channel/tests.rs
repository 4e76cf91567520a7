//! The channel without wasm or processes: frames, descriptors passed
//! with a frame, and a `Channel` over a socketpair (order, limits, close,
//! the buffer a waiting guest takes in).

use super::frames::MAX_PASSED_FDS;
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

// ----- Framing: the pure decoder -----

proptest! {
    /// A frame is the message's length as four little-endian bytes,
    /// then the message itself, appended after what `out` held.
    #[test]
    fn a_frame_is_the_little_endian_length_then_the_message(
        before in prop::collection::vec(any::<u8>(), 0..16),
        message in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut out = before.clone();
        encode(&message, &mut out);
        prop_assert_eq!(&out[..before.len()], &before[..]);
        let frame = &out[before.len()..];
        prop_assert_eq!(frame.len(), 4 + message.len());
        prop_assert_eq!(u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize, message.len());
        prop_assert_eq!(&frame[4..], &message[..]);
    }

    /// However many messages are taken, and however large (enough to make
    /// the decoder compact its buffer), it holds exactly the bytes fed
    /// that no message was taken from, and they decode to the rest.
    #[test]
    fn the_decoder_holds_exactly_the_bytes_not_yet_taken_as_messages(
        sizes in prop::collection::vec(0usize..40_000, 1..12),
        take in 0usize..12,
        tail in 0usize..4,
    ) {
        let messages: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![i as u8; n])
            .collect();
        let mut stream = Vec::new();
        for m in &messages {
            encode(m, &mut stream);
        }
        // A few bytes of one more frame's header.
        stream.extend_from_slice(&[9, 0, 0, 0][..tail]);
        let mut decoder = FrameDecoder::default();
        decoder.feed(&stream);
        let take = take.min(messages.len());
        let mut taken = 0;
        for m in &messages[..take] {
            prop_assert_eq!(decoder.next_message().unwrap(), Some(m.clone()));
            taken += 4 + m.len();
        }
        prop_assert_eq!(decoder.buffered(), stream.len() - taken);
        prop_assert_eq!(decoder.has_partial(), stream.len() > taken);
        for m in &messages[take..] {
            prop_assert_eq!(decoder.next_message().unwrap(), Some(m.clone()));
        }
        prop_assert_eq!(decoder.next_message(), Ok(None));
        prop_assert_eq!(decoder.buffered(), tail);
        prop_assert_eq!(decoder.has_partial(), tail > 0);
    }
}

#[test]
fn a_length_of_exactly_the_limit_is_allowed_and_waits_for_its_bytes() {
    let mut decoder = FrameDecoder::default();
    decoder.feed(&(MAX_MESSAGE as u32).to_le_bytes());
    decoder.feed(b"the start of a 16 MiB message");
    assert!(!decoder.has_message());
    assert_eq!(decoder.next_message(), Ok(None));
    assert!(decoder.has_partial());
    assert_eq!(decoder.buffered(), 4 + 29);
}

#[test]
fn an_over_long_length_counts_as_something_to_say_so_a_reader_does_not_wait_for_it() {
    let mut decoder = FrameDecoder::default();
    decoder.feed(&[0xff, 0xff]);
    assert!(!decoder.has_message(), "half a header is not a message");
    decoder.feed(&[0xff, 0xff]);
    assert!(decoder.has_message());
    assert_eq!(decoder.next_message(), Err(FrameError(u32::MAX as usize)));
    assert_eq!(
        FrameError(u32::MAX as usize).to_string(),
        format!(
            "message of {} bytes is above the limit of {MAX_MESSAGE}",
            u32::MAX
        )
    );
}

// ----- Frames with descriptors, on a blocking socket -----

fn memfd_with(bytes: &[u8]) -> OwnedFd {
    let fd = rustix::fs::memfd_create("channel-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::io::write(&fd, bytes).unwrap();
    fd
}

#[test]
fn a_frame_with_descriptors_arrives_whole_with_them_and_takes_no_byte_after_it() {
    use std::os::fd::AsFd;
    let (a, b) = UnixStream::pair().unwrap();
    let one = memfd_with(b"one");
    let (pipe_r, _pipe_w) = rustix::pipe::pipe().unwrap();
    send_frame_with_fds(&a, b"the specification", &[one.as_fd(), pipe_r.as_fd()]).unwrap();
    send_frame_with_fds(&a, b"the next frame", &[]).unwrap();

    let (frame, fds) = read_frame_with_fds(&b).unwrap();
    assert_eq!(frame, b"the specification");
    assert_eq!(fds.len(), 2);
    for (sent, got) in [(&one, &fds[0]), (&pipe_r, &fds[1])] {
        let (sent, got) = (
            rustix::fs::fstat(sent).unwrap(),
            rustix::fs::fstat(got).unwrap(),
        );
        assert_eq!((got.st_dev, got.st_ino), (sent.st_dev, sent.st_ino));
    }
    for fd in &fds {
        let flags = rustix::io::fcntl_getfd(fd).unwrap();
        assert!(
            flags.contains(rustix::io::FdFlags::CLOEXEC),
            "passed descriptors are close-on-exec"
        );
    }

    // The second frame was left on the socket, whole.
    let (frame, fds) = read_frame_with_fds(&b).unwrap();
    assert_eq!(frame, b"the next frame");
    assert!(fds.is_empty());
}

#[test]
fn more_descriptors_than_the_limit_are_refused_and_nothing_is_sent() {
    use std::os::fd::AsFd;
    let (a, b) = UnixStream::pair().unwrap();
    let fd = memfd_with(b"");
    let many = vec![fd.as_fd(); MAX_PASSED_FDS + 1];
    let err = send_frame_with_fds(&a, b"spec", &many).unwrap_err();
    assert!(err.to_string().contains("more than 64"), "{err}");
    b.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let read = std::io::Read::read(&mut &b, &mut byte);
    assert_eq!(read.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    // Exactly the limit goes through.
    b.set_nonblocking(false).unwrap();
    send_frame_with_fds(&a, b"spec", &many[..MAX_PASSED_FDS]).unwrap();
    let (frame, fds) = read_frame_with_fds(&b).unwrap();
    assert_eq!(
        (frame.as_slice(), fds.len()),
        (&b"spec"[..], MAX_PASSED_FDS)
    );
}

#[test]
fn a_blocking_read_refuses_an_over_long_length_instead_of_allocating_it() {
    let (mut a, b) = UnixStream::pair().unwrap();
    std::io::Write::write_all(&mut a, &u32::MAX.to_le_bytes()).unwrap();
    let err = read_frame_with_fds(&b).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert_eq!(err.to_string(), FrameError(u32::MAX as usize).to_string());
}

#[test]
fn a_socket_closed_before_or_inside_a_frame_is_an_unexpected_end_for_a_blocking_read() {
    let cases: [&[u8]; 3] = [
        b"",                 // nothing at all
        &[5, 0],             // half a header
        &[5, 0, 0, 0, b'a'], // one byte of five
    ];
    for sent in cases {
        let (mut a, b) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut a, sent).unwrap();
        drop(a);
        let err = read_frame_with_fds(&b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "after {sent:?}");
    }
}

// ----- Channel ends -----

/// A channel end on one side of a socket pair, and the raw other side.
fn channel_and_raw_peer() -> (Channel, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    let mut channel = Channel::new(a).unwrap();
    channel.set_spin(Duration::ZERO);
    (channel, b)
}

fn write_raw(mut peer: &UnixStream, bytes: &[u8]) {
    std::io::Write::write_all(&mut peer, bytes).unwrap();
}

#[tokio::test]
async fn messages_arrive_in_order_and_closed_comes_after_the_last() {
    let (a, b) = UnixStream::pair().unwrap();
    let (a, b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
    // Empty, small, over the flush threshold, and over the queue size
    // (which goes through alone).
    let messages = [
        Vec::new(),
        b"hello".to_vec(),
        vec![1; FLUSH_AT + 3],
        vec![2; QUEUE_BYTES * 2 + 5],
        b"bye".to_vec(),
    ];
    let sender = async {
        for m in &messages {
            a.send(m.clone()).await.unwrap();
        }
        a.close().await;
    };
    let receiver = async {
        let mut got = Vec::new();
        loop {
            match b.receive().await {
                Ok(m) => got.push(m),
                Err(e) => return (got, e),
            }
        }
    };
    let ((), (got, end)) = tokio::join!(sender, receiver);
    assert_eq!(got, messages);
    assert_eq!(end, ChannelError::Closed);
}

#[tokio::test]
async fn a_frame_split_across_writes_is_received_whole_once_its_last_byte_is_in() {
    let (channel, peer) = channel_and_raw_peer();
    let mut frame = Vec::new();
    encode(b"hello, worker", &mut frame);
    for cut in [2, 4, 9] {
        let written = match cut {
            2 => &frame[..2],
            4 => &frame[2..4],
            _ => &frame[4..9],
        };
        write_raw(&peer, written);
        assert_eq!(channel.try_receive(), Ok(None), "after {cut} bytes");
    }
    write_raw(&peer, &frame[9..]);
    assert_eq!(channel.try_receive(), Ok(Some(b"hello, worker".to_vec())));
    assert_eq!(channel.try_receive(), Ok(None));
}

#[tokio::test]
async fn an_over_long_length_from_the_peer_closes_the_channel_after_earlier_messages() {
    let (channel, peer) = channel_and_raw_peer();
    let mut bytes = Vec::new();
    encode(b"fine", &mut bytes);
    bytes.extend_from_slice(&((MAX_MESSAGE + 1) as u32).to_le_bytes());
    bytes.extend_from_slice(b"junk");
    write_raw(&peer, &bytes);
    assert_eq!(channel.receive().await, Ok(b"fine".to_vec()));
    assert_eq!(channel.receive().await, Err(ChannelError::Closed));
    assert_eq!(channel.try_receive(), Err(ChannelError::Closed));
    assert_eq!(
        channel.send(b"reply".to_vec()).await,
        Err(ChannelError::Closed)
    );
    assert_eq!(
        channel.try_send(b"reply".to_vec()),
        Err(ChannelError::Closed)
    );
}

#[tokio::test]
async fn the_peer_ending_inside_a_frame_is_closed_not_a_short_message() {
    let (channel, peer) = channel_and_raw_peer();
    let mut bytes = Vec::new();
    encode(b"whole", &mut bytes);
    bytes.extend_from_slice(&10u32.to_le_bytes());
    bytes.extend_from_slice(b"cut");
    write_raw(&peer, &bytes);
    drop(peer);
    assert_eq!(channel.receive().await, Ok(b"whole".to_vec()));
    assert_eq!(channel.receive().await, Err(ChannelError::Closed));
}

#[tokio::test]
async fn a_message_over_the_limit_is_refused_and_nothing_is_sent() {
    let (channel, peer) = channel_and_raw_peer();
    let big = vec![0u8; MAX_MESSAGE + 1];
    assert_eq!(
        channel.send(big.clone()).await,
        Err(ChannelError::TooLarge(MAX_MESSAGE + 1))
    );
    assert_eq!(
        channel.try_send(big),
        Err(ChannelError::TooLarge(MAX_MESSAGE + 1))
    );
    // The channel still works, and the peer got nothing before this.
    channel.send(b"ok".to_vec()).await.unwrap();
    let (frame, _) = read_frame_with_fds(&peer).unwrap();
    assert_eq!(frame, b"ok");
}

#[tokio::test]
async fn after_close_here_this_end_refuses_everything_and_the_peer_gets_earlier_messages_then_closed()
 {
    let (a, b) = UnixStream::pair().unwrap();
    let (a, b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
    a.send(b"first".to_vec()).await.unwrap();
    a.send(b"second".to_vec()).await.unwrap();
    b.send(b"never read".to_vec()).await.unwrap();
    a.close_here();
    assert_eq!(
        a.send(b"late".to_vec()).await,
        Err(ChannelError::ClosedHere)
    );
    assert_eq!(a.try_send(b"late".to_vec()), Err(ChannelError::ClosedHere));
    assert_eq!(a.try_receive(), Err(ChannelError::ClosedHere));
    assert_eq!(a.receive().await, Err(ChannelError::ClosedHere));

    assert_eq!(b.receive().await, Ok(b"first".to_vec()));
    assert_eq!(b.receive().await, Ok(b"second".to_vec()));
    assert_eq!(b.receive().await, Err(ChannelError::Closed));
    assert_eq!(b.send(b"reply".to_vec()).await, Err(ChannelError::Closed));
}

#[tokio::test]
async fn try_send_says_full_once_the_queue_holds_its_limit_and_loses_nothing() {
    let (a, b) = UnixStream::pair().unwrap();
    let (a, b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
    let message = |i: usize| vec![i as u8; 100_000];
    let mut sent = 0;
    let full = loop {
        match a.try_send(message(sent)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(a.shared.outbox().pending() <= QUEUE_BYTES);
        assert!(
            sent < 1000,
            "the peer reads nothing, so the queue must fill"
        );
    };
    assert_eq!(full, ChannelError::Full);
    assert!(a.shared.outbox().pending() + 100_004 > QUEUE_BYTES);
    for i in 0..sent {
        assert_eq!(b.receive().await, Ok(message(i)), "message {i}");
    }
    assert_eq!(b.try_receive(), Ok(None));
}

/// Fills the raw `peer`'s side with 100-byte messages from a thread
/// (which blocks while the socket is full) and closes it after `total`.
fn flood(peer: UnixStream, total: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut frame = Vec::new();
        encode(&[7; 100], &mut frame);
        for _ in 0..total {
            write_raw(&peer, &frame);
        }
    })
}

#[tokio::test]
async fn receive_holds_at_most_one_chunk_beyond_the_message_it_returns() {
    let (channel, peer) = channel_and_raw_peer();
    let total = 10_000; // about 1 MiB: more than the socket holds
    let writer = flood(peer, total);
    // Let the writer fill the socket.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(channel.receive().await, Ok(vec![7; 100]));
    let held = channel.shared.inbox().decoder.buffered();
    assert!(held <= READ_CHUNK, "held {held} bytes");
    let mut got = 1;
    while channel.receive().await.is_ok() {
        got += 1;
        assert!(channel.shared.inbox().decoder.buffered() <= READ_CHUNK);
    }
    writer.join().unwrap();
    assert_eq!(got, total);
}

#[tokio::test]
async fn absorb_stops_taking_in_once_the_buffer_is_full_and_keeps_every_message() {
    let (mut channel, peer) = channel_and_raw_peer();
    let buffer = 100_000;
    channel.set_buffer(buffer);
    let total = 10_000;
    let writer = flood(peer, total);
    let deadline = Instant::now() + Duration::from_secs(10);
    while channel.shared.inbox().decoder.buffered() < buffer {
        assert!(Instant::now() < deadline, "absorb took in too little");
        let absorbed = tokio::time::timeout(Duration::from_millis(10), channel.absorb()).await;
        assert!(absorbed.is_err(), "absorb never ends");
    }
    // Full: more absorbing takes in nothing more.
    let _ = tokio::time::timeout(Duration::from_millis(30), channel.absorb()).await;
    let held = channel.shared.inbox().decoder.buffered();
    assert!(held < buffer + READ_CHUNK, "held {held} bytes");
    assert!(
        held < 104 * total,
        "absorb stopped before taking everything"
    );
    let mut got = 0;
    while let Ok(m) = channel.receive().await {
        assert_eq!(m, vec![7; 100]);
        got += 1;
    }
    writer.join().unwrap();
    assert_eq!(got, total);
}

#[tokio::test]
async fn channels_sharing_a_pool_take_in_no_more_than_it_holds_between_them_and_lose_nothing() {
    let pool = BufferPool::new(3 * READ_CHUNK);
    let (mut a, peer_a) = channel_and_raw_peer();
    let (mut b, peer_b) = channel_and_raw_peer();
    for channel in [&mut a, &mut b] {
        channel.set_buffer(usize::MAX);
        channel.set_pool(pool.clone());
    }
    let total = 10_000; // about 1 MiB each: more than the pool and the sockets
    let writers = [flood(peer_a, total), flood(peer_b, total)];
    for _ in 0..20 {
        for channel in [&a, &b] {
            let _ = tokio::time::timeout(Duration::from_millis(10), channel.absorb()).await;
        }
    }
    let held = |c: &Channel| c.shared.inbox().decoder.buffered();
    assert!(
        held(&a) + held(&b) <= 3 * READ_CHUNK,
        "held {} + {} bytes",
        held(&a),
        held(&b)
    );
    assert!(
        pool.left() < READ_CHUNK,
        "the pool was not used: {}",
        pool.left()
    );
    for channel in [&a, &b] {
        let mut got = 0;
        while let Ok(m) = channel.receive().await {
            assert_eq!(m, vec![7; 100]);
            got += 1;
        }
        assert_eq!(got, total);
    }
    for writer in writers {
        writer.join().unwrap();
    }
    drop((a, b));
    assert_eq!(pool.left(), 3 * READ_CHUNK, "every byte is given back");
}
