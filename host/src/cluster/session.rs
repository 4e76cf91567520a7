//! A worker's session across the cluster: the forking host's [`Remote`]
//! (its state, its kill and end) and the streams both sides pump over NATS
//! within credit windows ([`send_stream`], [`Receiving`]).

use super::{
    CHUNK, Cluster, Ended, HEARTBEAT, LOST_AFTER, Link, Opener, WINDOW_BYTES, WINDOW_MESSAGES,
    kind, message, stream,
};
use crate::failure::Failure;
use crate::outcome::Termination;
use crate::pipe::PipeReader;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// A worker running on an agent, as the forking host holds it.
pub(crate) struct Remote {
    pid: u32,
    agent: String,
    state: watch::Receiver<State>,
    to_worker: Link,
    pub stdout: Option<PipeReader>,
    pub stderr: Option<PipeReader>,
    tasks: Vec<JoinHandle<()>>,
    /// The live-children slots it holds of its guest's.
    slots: (Arc<AtomicUsize>, usize),
}

#[derive(Debug, Clone)]
enum State {
    Running,
    Ended(Termination),
    Lost(String),
}

impl Remote {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn status(&self) -> Option<Result<Termination, Failure>> {
        match &*self.state.borrow() {
            State::Running => None,
            State::Ended(t) => Some(Ok(t.clone())),
            State::Lost(why) => Some(Err(Failure::Io(why.clone()))),
        }
    }

    /// Waits until the agent says the worker ended, or is lost. Cancel safe.
    pub async fn reap(&mut self) -> Result<Termination, Failure> {
        loop {
            if let Some(ended) = self.status() {
                return ended;
            }
            if self.state.changed().await.is_err() {
                return self.status().unwrap_or_else(|| {
                    Err(Failure::Io(format!(
                        "the session with agent {} ended without an exit",
                        self.agent
                    )))
                });
            }
        }
    }

    pub fn try_status(&mut self) -> Result<Option<Termination>, Failure> {
        self.status().transpose()
    }

    pub fn kill(&self, signal: u8) -> Result<(), Failure> {
        crate::launch::os_child::signal(signal)?;
        self.to_worker.publish_soon(&message(kind::KILL, &[signal]));
        Ok(())
    }
}

impl Drop for Remote {
    /// Tells the agent to kill the worker (it also does when this host's
    /// heartbeat stops) and gives back the slots.
    fn drop(&mut self) {
        // Unless the agent said it ended, it may still run there (a worker
        // "lost" by a stalled advert too): the agent kills it.
        if !matches!(&*self.state.borrow(), State::Ended(_)) {
            self.to_worker.publish_soon(&message(kind::CLOSE, &[]));
        }
        for task in &self.tasks {
            task.abort();
        }
        self.slots.0.fetch_sub(self.slots.1, Ordering::AcqRel);
    }
}

/// Where a remote worker's stdout or stderr goes on this host: a pipe the
/// guest reads (`piped`: `true`), or the host's own stream.
fn output_sink(
    piped: bool,
    host: impl FnOnce() -> Sink,
) -> std::io::Result<(Option<PipeReader>, Sink)> {
    Ok(match piped {
        true => {
            let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
            let write = tokio::net::unix::pipe::Sender::from_owned_fd(write)?;
            (Some(PipeReader::new(read)?), Box::pin(write))
        }
        false => (None, host()),
    })
}

/// The forking host's side of a session: everything the agent sends,
/// until the worker's exit or the agent is lost. Never waits on a write:
/// stream bytes go to their sinks' tasks.
async fn watch_session(
    (mut from_worker, mut opener): (async_nats::Subscriber, Opener),
    mut receiving: Receiving,
    mut reports: std::fs::File,
    state: watch::Sender<State>,
    (cluster, agent): (Cluster, String),
) {
    use futures_util::StreamExt;
    let mut check = tokio::time::interval(HEARTBEAT);
    let lost = loop {
        tokio::select! {
            m = from_worker.next() => {
                let Some(m) = m else {
                    break format!("the connection to agent {agent} ended");
                };
                let plain = match opener.open(&m.payload) {
                    Ok(plain) => plain,
                    Err(why) => {
                        cluster.drops().count(why, &m.subject);
                        continue;
                    }
                };
                let Some((&k, body)) = plain.split_first() else { continue };
                match k {
                    kind::EXIT => {
                        // How it ended is known before the channel says
                        // `closed`, so a guest that asks then is told.
                        let _ = state.send(match serde_json::from_slice::<Ended>(body) {
                            Ok(Ended { lost: Some(why), .. }) => {
                                State::Lost(format!("agent {agent} ended the worker: {why}"))
                            }
                            Ok(ended) => State::Ended(ended.into()),
                            Err(e) => State::Lost(format!("agent {agent} sent a bad exit: {e}")),
                        });
                        receiving.end();
                        return;
                    }
                    kind::REPORT => {
                        use std::io::Write;
                        let _ = reports.write_all(body).and_then(|()| reports.write_all(b"\n"));
                    }
                    _ => {
                        if let Err(why) = receiving.handle(k, body) {
                            break format!("agent {agent}: {why}");
                        }
                    }
                }
            }
            _ = check.tick() => {
                if !cluster.alive(&agent) {
                    break format!(
                        "agent {agent} was lost: no heartbeat for {} ms",
                        LOST_AFTER.as_millis()
                    );
                }
            }
        }
    };
    let _ = state.send(State::Lost(lost));
    receiving.end();
}

/// Where a received stream's bytes are written.
pub(crate) type Sink = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send + Sync>>;

/// Credits a peer granted for one stream: bytes and messages it has
/// written out.
#[derive(Default)]
pub(crate) struct Credits {
    pub(super) bytes: AtomicU64,
    pub(super) messages: AtomicU64,
    pub(super) changed: Notify,
}

/// Sends what `source` gives as stream `stream` to `subject`, numbered,
/// while the peer's credits allow; then its end.
pub(crate) fn send_stream(
    mut source: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    link: Link,
    stream: u8,
) -> (JoinHandle<()>, Arc<Credits>) {
    let credits = Arc::new(Credits::default());
    let granted = credits.clone();
    let task = tokio::spawn(async move {
        let (mut sent_bytes, mut sent_messages, mut seq) = (0u64, 0u64, 0u64);
        let mut buf = vec![0u8; CHUNK];
        loop {
            loop {
                let changed = granted.changed.notified();
                let bytes = granted.bytes.load(Ordering::Acquire);
                let messages = granted.messages.load(Ordering::Acquire);
                if sent_bytes.saturating_sub(bytes) < WINDOW_BYTES
                    && sent_messages.saturating_sub(messages) < WINDOW_MESSAGES
                {
                    break;
                }
                changed.await;
            }
            let n = match source.read(&mut buf[..]).await {
                Ok(0) | Err(_) => {
                    let _ = link.publish(&message(kind::EOF, &[stream])).await;
                    let _ = link.client.flush().await;
                    return;
                }
                Ok(n) => n,
            };
            let mut m = BytesMut::with_capacity(10 + n);
            m.put_u8(kind::DATA);
            m.put_u8(stream);
            m.put_u64_le(seq);
            m.put_slice(&buf[..n]);
            if link.publish(&m).await.is_err() {
                return;
            }
            seq += 1;
            sent_bytes += n as u64;
            sent_messages += 1;
        }
    });
    (task, credits)
}

/// The receiving side of a session: each stream's bytes are queued to a
/// task that writes them to its sink and grants credits as it does (the
/// queue is bounded by the credits the sender waits for), so that no
/// stream, however slow its reader, holds up the others or the control
/// messages.
pub(crate) struct Receiving {
    /// The way to the peer, for credits.
    link: Link,
    queues: [Option<tokio::sync::mpsc::UnboundedSender<Bytes>>; 3],
    next_seq: [u64; 3],
    /// The credits of this side's own streams, which the peer grants.
    credits: [Option<Arc<Credits>>; 3],
    /// The channel socket, written at once while nothing waits for it.
    direct: Option<Direct>,
}

/// A channel socket written in the caller's turn while it takes the
/// bytes (a round trip then costs no task hand-off), else by its writer
/// task, which keeps the order.
struct Direct {
    socket: Arc<tokio::net::unix::OwnedWriteHalf>,
    /// Bytes handed to the writer task and not written yet.
    backlog: Arc<AtomicU64>,
    written: Arc<Written>,
}

/// What a stream's sink has written, and credited, so far.
pub(super) struct Written {
    pub(super) counts: Mutex<((u64, u64), (u64, u64))>,
    pub(super) link: Link,
    pub(super) stream: u8,
}

impl Written {
    /// Counts `bytes` (ending `messages` messages) written; grants credits
    /// once a quarter of the window was.
    pub(super) fn add(&self, bytes: u64, messages: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (written, acked) = &mut *counts;
        *written = (written.0 + bytes, written.1 + messages);
        if written.0 - acked.0 < WINDOW_BYTES / 4 && written.1 - acked.1 < WINDOW_MESSAGES / 4 {
            return;
        }
        *acked = *written;
        let mut body = [0u8; 17];
        body[0] = self.stream;
        body[1..9].copy_from_slice(&written.0.to_le_bytes());
        body[9..].copy_from_slice(&written.1.to_le_bytes());
        self.link.publish_soon(&message(kind::ACK, &body));
    }
}

impl Receiving {
    pub fn new(link: Link) -> Receiving {
        Receiving {
            link,
            queues: Default::default(),
            next_seq: [0; 3],
            credits: Default::default(),
            direct: None,
        }
    }

    /// Writes the channel stream to `socket`, at once while it takes the
    /// bytes; at the stream's end, shuts the socket down both ways (the
    /// local end reads what was written, then `closed`, and its sends
    /// fail, as when a local peer closes).
    pub fn channel_sink(&mut self, socket: tokio::net::unix::OwnedWriteHalf) {
        let socket = Arc::new(socket);
        let backlog = Arc::new(AtomicU64::new(0));
        let written = Arc::new(Written {
            counts: Mutex::new(((0, 0), (0, 0))),
            link: self.link.clone(),
            stream: stream::CHANNEL,
        });
        let (queue, mut queued) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        self.queues[usize::from(stream::CHANNEL)] = Some(queue);
        self.direct = Some(Direct {
            socket: socket.clone(),
            backlog: backlog.clone(),
            written: written.clone(),
        });
        tokio::spawn(async move {
            'queue: while let Some(bytes) = queued.recv().await {
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    if socket.writable().await.is_err() {
                        break 'queue;
                    }
                    match socket.try_write(rest) {
                        Ok(n) => rest = &rest[n..],
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => break 'queue,
                    }
                }
                // A queued piece is the end of a message.
                written.add(bytes.len() as u64, 1);
                backlog.fetch_sub(bytes.len() as u64, Ordering::AcqRel);
            }
            let socket: &tokio::net::UnixStream = (*socket).as_ref();
            let _ = rustix::net::shutdown(socket, rustix::net::Shutdown::Both);
        });
    }

    /// Writes channel bytes `data` at once if nothing waits and the socket
    /// takes them; whatever is left goes to the writer task.
    fn write_channel(&mut self, data: &[u8]) {
        let i = usize::from(stream::CHANNEL);
        let (Some(direct), Some(queue)) = (&self.direct, &self.queues[i]) else {
            return;
        };
        let mut done = 0;
        if direct.backlog.load(Ordering::Acquire) == 0 {
            match direct.socket.try_write(data) {
                Ok(n) => done = n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        if done == data.len() {
            direct.written.add(done as u64, 1);
            return;
        }
        direct.written.add(done as u64, 0);
        let rest = Bytes::copy_from_slice(&data[done..]);
        direct
            .backlog
            .fetch_add(rest.len() as u64, Ordering::AcqRel);
        let _ = queue.send(rest);
    }

    /// Grants the peer's credits for this side's stream `stream` to
    /// `credits` (a [`send_stream`]'s).
    pub fn credit(&mut self, stream: u8, credits: Arc<Credits>) {
        self.credits[usize::from(stream)] = Some(credits);
    }

    /// Writes stream `stream` (an output) to `sink`, by a task of its
    /// own; at its end, shuts `sink` down.
    pub fn sink(&mut self, stream: u8, mut sink: Sink) {
        let (queue, mut queued) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        self.queues[usize::from(stream)] = Some(queue);
        let written = Written {
            counts: Mutex::new(((0, 0), (0, 0))),
            link: self.link.clone(),
            stream,
        };
        tokio::spawn(async move {
            while let Some(bytes) = queued.recv().await {
                if sink.write_all(&bytes).await.is_err() || sink.flush().await.is_err() {
                    break;
                }
                written.add(bytes.len() as u64, 1);
            }
            let _ = sink.shutdown().await;
        });
    }

    /// Handles a data, credit or end message of the peer without waiting;
    /// an error (a lost message, a bad one) means the session is broken.
    pub fn handle(&mut self, k: u8, body: &[u8]) -> Result<(), String> {
        let Some((&stream, rest)) = body.split_first() else {
            return Err("an empty message".into());
        };
        let i = usize::from(stream);
        if i >= 3 {
            return Err(format!("a message for unknown stream {stream}"));
        }
        match k {
            kind::DATA => {
                let (Some(seq), Some(data)) = (rest.first_chunk::<8>(), rest.get(8..)) else {
                    return Err("a malformed data message".into());
                };
                let seq = u64::from_le_bytes(*seq);
                if seq != self.next_seq[i] {
                    return Err(format!(
                        "message {} of stream {stream} was lost (got {seq})",
                        self.next_seq[i]
                    ));
                }
                self.next_seq[i] += 1;
                if stream == stream::CHANNEL && self.direct.is_some() {
                    self.write_channel(data);
                } else if let Some(queue) = &self.queues[i] {
                    let _ = queue.send(Bytes::copy_from_slice(data));
                }
            }
            kind::ACK => {
                let (Some(bytes), Some(messages)) = (
                    rest.first_chunk::<8>(),
                    rest.get(8..).and_then(|b| b.first_chunk::<8>()),
                ) else {
                    return Err("a malformed credit message".into());
                };
                if let Some(c) = &self.credits[i] {
                    // Credits only grow.
                    c.bytes
                        .fetch_max(u64::from_le_bytes(*bytes), Ordering::AcqRel);
                    c.messages
                        .fetch_max(u64::from_le_bytes(*messages), Ordering::AcqRel);
                    c.changed.notify_waiters();
                }
            }
            kind::EOF => self.queues[i] = None,
            _ => {}
        }
        Ok(())
    }

    /// Ends every stream: each sink gets what was queued, then its end.
    pub fn end(&mut self) {
        self.queues = Default::default();
    }
}

/// A channel socket as the two halves a session uses: the half to read
/// (sent as stream `channel`) and the half to write
/// ([`Receiving::channel_sink`]).
pub(crate) fn channel_halves(
    socket: std::os::unix::net::UnixStream,
) -> std::io::Result<(
    tokio::net::unix::OwnedReadHalf,
    tokio::net::unix::OwnedWriteHalf,
)> {
    socket.set_nonblocking(true)?;
    Ok(tokio::net::UnixStream::from_std(socket)?.into_split())
}

/// A remote worker the agent started, until the host holds it: dropped, it
/// tells the agent to kill it and gives back its slots.
pub(crate) struct Started {
    pub to_worker: Link,
    pub slots: Option<(Arc<AtomicUsize>, usize)>,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some((live, slots)) = self.slots.take() {
            live.fetch_sub(slots, Ordering::AcqRel);
            self.to_worker.publish_soon(&message(kind::CLOSE, &[]));
        }
    }
}

/// What a forking host has of a session the agent started.
pub(crate) struct Session {
    /// The session's messages from the worker, and how to open them.
    pub from_worker: async_nats::Subscriber,
    pub opener: Opener,
    /// The worker's pid on the agent.
    pub pid: u32,
    /// The cluster, to notice the agent lost.
    pub cluster: Cluster,
    /// The agent's id.
    pub agent: String,
    /// The worker's end of the local channel, bridged over the session.
    pub channel: std::os::unix::net::UnixStream,
    /// Where the worker's reports are written.
    pub reports: std::fs::File,
}

impl Remote {
    /// Bridges `session`: the channel both ways, each output asked
    /// (`Some(piped)`: to the guest if piped, else to `inherited(stderr)`),
    /// and the agent's messages watched until the worker's exit. The slots
    /// pass from `started`. Returns the worker's piped outputs too.
    pub(crate) fn open(
        session: Session,
        started: &mut Started,
        outputs: [Option<bool>; 2],
        inherited: impl Fn(bool) -> Sink,
    ) -> std::io::Result<Remote> {
        let to_worker = started.to_worker.clone();
        let mut receiving = Receiving::new(to_worker.clone());
        let (read, write) = channel_halves(session.channel)?;
        let (outbound, credits) = send_stream(read, to_worker.clone(), stream::CHANNEL);
        receiving.credit(stream::CHANNEL, credits);
        receiving.channel_sink(write);
        let mut readers = [None, None];
        for (i, asked) in outputs.into_iter().enumerate() {
            let Some(piped) = asked else { continue };
            let (reader, sink) = output_sink(piped, || inherited(i == 1))?;
            readers[i] = reader;
            receiving.sink(stream::STDOUT + i as u8, sink);
        }
        let (state_tx, state) = watch::channel(State::Running);
        let agent = session.agent;
        let watch = tokio::spawn(watch_session(
            (session.from_worker, session.opener),
            receiving,
            session.reports,
            state_tx,
            (session.cluster, agent.clone()),
        ));
        let [stdout, stderr] = readers;
        Ok(Remote {
            pid: session.pid,
            agent,
            state,
            to_worker,
            stdout,
            stderr,
            tasks: vec![outbound, watch],
            slots: started.slots.take().expect("not yet given"),
        })
    }
}
