//! The pure parts of the cluster — ids and subjects, the wire format
//! of every message, the credit window — without wasm, processes or a
//! NATS server: an offline client queues what it publishes (what
//! crosses a real server is tests/cluster.rs's).
use super::*;
use crate::failure::Failure;
use crate::outcome::Termination;
use crate::policy::Policy;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::outcome::{ExitStatus, ResourceUsage};
use proptest::prelude::*;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::AsyncReadExt;
use tokio::io::ReadBuf;

/// A client that never reaches a server: what it publishes is queued.
async fn offline_client() -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .reconnect_delay_callback(|_| Duration::from_secs(3600))
        .client_capacity(1 << 16)
        .connect("127.0.0.1:1")
        .await
        .expect("an offline client needs no server")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A sealed way to `subject` on `client`, with keys of its own.
fn link(client: async_nats::Client, subject: &str) -> Link {
    let sealer = SessionKeys::new().sealer("test", true);
    Link::new(client, subject.to_owned(), sealer)
}

/// A `Receiving` on an offline client, with its runtime.
fn offline_receiving() -> (tokio::runtime::Runtime, Receiving) {
    let rt = runtime();
    let client = rt.block_on(offline_client());
    (rt, Receiving::new(link(client, "peer")))
}

/// The body of a data message, as `kind::DATA` documents it.
fn data(stream: u8, seq: u64, bytes: &[u8]) -> Vec<u8> {
    let mut body = vec![stream];
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(bytes);
    body
}

/// The body of a credit message, as `kind::ACK` documents it.
fn ack(stream: u8, bytes: u64, messages: u64) -> Vec<u8> {
    let mut body = vec![stream];
    body.extend_from_slice(&bytes.to_le_bytes());
    body.extend_from_slice(&messages.to_le_bytes());
    body
}

fn error_code() -> impl Strategy<Value = Failure> {
    // A string's strategy is a `&str` regex: `Copy`.
    let m = any::<String>();
    prop_oneof![
        m.prop_map(Failure::AccessDenied),
        m.prop_map(Failure::NotFound),
        m.prop_map(Failure::InvalidArgument),
        m.prop_map(Failure::LimitExceeded),
        m.prop_map(Failure::TimedOut),
        m.prop_map(Failure::Closed),
        m.prop_map(Failure::Unsupported),
        m.prop_map(Failure::Io),
    ]
}

fn advert() -> impl Strategy<Value = Advert> {
    (
        any::<String>(),
        prop::collection::vec(any::<String>(), 0..6),
        any::<u32>(),
    )
        .prop_map(|(id, labels, free)| Advert {
            id,
            labels,
            free,
            xkey: String::new(),
        })
}

fn fork_request() -> impl Strategy<Value = ForkRequest> {
    (
        (any::<String>(), any::<String>(), any::<String>()),
        prop::collection::vec(any::<String>(), 0..5),
        prop::collection::vec((any::<String>(), any::<String>()), 0..5),
        prop::collection::vec((any::<String>(), any::<bool>()), 0..5),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |((session, parent, component), args, env, dirs, (stdout, stderr))| ForkRequest {
                session,
                parent,
                component,
                args,
                env,
                dirs,
                policy: Policy::default(),
                stdout,
                stderr,
                keys: SessionKeys::new(),
            },
        )
}

fn fork_reply() -> impl Strategy<Value = ForkReply> {
    prop_oneof![
        any::<u32>().prop_map(|pid| ForkReply::Started { pid }),
        (any::<String>(), any::<String>())
            .prop_map(|(code, message)| ForkReply::Refused { code, message }),
    ]
}

fn termination() -> impl Strategy<Value = Termination> {
    (
        prop_oneof![
            any::<u8>().prop_map(ExitStatus::Exited),
            any::<u8>().prop_map(ExitStatus::Signaled),
        ],
        prop::option::of(any::<String>()),
        (any::<u64>(), any::<u64>(), any::<u64>()),
    )
        .prop_map(|(status, trap, (user, system, rss))| Termination {
            status,
            timed_out: false,
            trap,
            usage: ResourceUsage {
                user_cpu_ns: user,
                system_cpu_ns: system,
                max_rss_bytes: rss,
            },
        })
}

/// A termination as comparable plain data.
fn plain(t: &Termination) -> (Option<u8>, Option<u8>, bool, Option<String>, [u64; 3]) {
    let (exited, signaled) = match t.status {
        ExitStatus::Exited(c) => (Some(c), None),
        ExitStatus::Signaled(s) => (None, Some(s)),
    };
    let u = &t.usage;
    (
        exited,
        signaled,
        t.timed_out,
        t.trap.clone(),
        [u.user_cpu_ns, u.system_cpu_ns, u.max_rss_bytes],
    )
}

fn json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("serializable")
}

proptest! {
    /// `is_id` is exactly "1 to 64 ASCII letters or digits".
    #[test]
    fn an_id_is_one_to_sixty_four_ascii_alphanumerics_and_nothing_else(
        id in prop_oneof![any::<String>(), "[A-Za-z0-9]{0,70}", "[A-Za-z0-9.*> _\\-]{0,70}"],
    ) {
        let expected = (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric());
        prop_assert_eq!(is_id(&id), expected);
    }

    /// An id that passes is one token of every subject it is put in:
    /// it can neither add a token nor be a wildcard.
    #[test]
    fn a_valid_id_is_exactly_one_token_of_every_subject(id in "[A-Za-z0-9]{1,64}") {
        prop_assert!(is_id(&id));
        let ends = Ends { host: &id, agent: &id, session: &id };
        for (subject, count) in [
            (fork_subject(&id, &id), 5),
            (parent_subject(&id, &id), 4),
            (advert_subject(&id), 3),
            (session_subject(&ends, true), 6),
            (session_subject(&ends, false), 6),
        ] {
            let tokens: Vec<&str> = subject.split('.').collect();
            prop_assert_eq!(tokens.len(), count);
            prop_assert_eq!(tokens[2], id.as_str());
            prop_assert!(tokens.iter().all(|t| !t.is_empty() && *t != "*" && *t != ">"));
        }
    }

    /// Every error code crosses the wire as itself, message and all.
    #[test]
    fn every_error_code_round_trips_through_the_wire(e in error_code()) {
        let (code, message) = to_wire(&e);
        let back = from_wire(&code, message.clone());
        prop_assert_eq!(to_wire(&back), (code, message));
        prop_assert_eq!(std::mem::discriminant(&back), std::mem::discriminant(&e));
    }

    /// A session message is its kind byte, then its body unchanged.
    #[test]
    fn a_session_message_is_its_kind_byte_then_its_body(
        k in any::<u8>(),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let m = message(k, &body);
        prop_assert_eq!(m.len(), 1 + body.len());
        prop_assert_eq!(m[0], k);
        prop_assert_eq!(&m[1..], &body[..]);
    }

    #[test]
    fn an_advert_round_trips_through_json(a in advert()) {
        let bytes = serde_json::to_vec(&a).unwrap();
        let back: Advert = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(back.id, a.id);
        prop_assert_eq!(back.labels, a.labels);
        prop_assert_eq!(back.free, a.free);
    }

    #[test]
    fn a_fork_request_round_trips_through_json(r in fork_request()) {
        let bytes = serde_json::to_vec(&r).unwrap();
        let back: ForkRequest = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(&back.session, &r.session);
        prop_assert_eq!(&back.env, &r.env);
        prop_assert_eq!(&back.dirs, &r.dirs);
        prop_assert_eq!(json(&back), json(&r));
    }

    #[test]
    fn a_fork_reply_round_trips_through_json(r in fork_reply()) {
        let bytes = serde_json::to_vec(&r).unwrap();
        let back: ForkReply = serde_json::from_slice(&bytes).unwrap();
        match (&back, &r) {
            (ForkReply::Started { pid: a }, ForkReply::Started { pid: b }) => prop_assert_eq!(a, b),
            (
                ForkReply::Refused { code: c1, message: m1 },
                ForkReply::Refused { code: c2, message: m2 },
            ) => {
                prop_assert_eq!(c1, c2);
                prop_assert_eq!(m1, m2);
            }
            _ => prop_assert!(false, "{back:?} is not {r:?}"),
        }
    }

    /// What the agent sends as a worker's exit is what the host reads:
    /// status, trap and usage.
    #[test]
    fn an_exit_carries_the_termination_across_the_wire(t in termination()) {
        let exit = message(kind::EXIT, &serde_json::to_vec(&Ended::from(&t)).unwrap());
        prop_assert_eq!(exit[0], kind::EXIT);
        let ended: Ended = serde_json::from_slice(&exit[1..]).unwrap();
        prop_assert!(ended.lost.is_none());
        prop_assert_eq!(plain(&Termination::from(ended)), plain(&t));
    }

    /// Every strict prefix of every JSON message is an error.
    #[test]
    fn a_truncated_json_message_is_an_error_not_a_panic(
        a in advert(),
        r in fork_request(),
        reply in fork_reply(),
        t in termination(),
        cut in any::<prop::sample::Index>(),
    ) {
        fn prefixes_fail<T: Serialize + serde::de::DeserializeOwned>(
            value: &T,
            cut: prop::sample::Index,
        ) -> bool {
            let bytes = serde_json::to_vec(value).unwrap();
            let at = cut.index(bytes.len());
            serde_json::from_slice::<T>(&bytes[..at]).is_err()
        }
        prop_assert!(prefixes_fail(&a, cut));
        prop_assert!(prefixes_fail(&r, cut));
        prop_assert!(prefixes_fail(&reply, cut));
        prop_assert!(prefixes_fail(&Ended::from(&t), cut));
    }

    /// Whatever bytes come from the network, decoding them as any
    /// message is a value or an error, never a panic.
    #[test]
    fn decoding_arbitrary_bytes_as_any_message_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let _ = serde_json::from_slice::<Advert>(&bytes);
        let _ = serde_json::from_slice::<ForkRequest>(&bytes);
        let _ = serde_json::from_slice::<ForkReply>(&bytes);
        let _ = serde_json::from_slice::<Ended>(&bytes);
        let (_rt, mut receiving) = offline_receiving();
        if let Some((&k, body)) = bytes.split_first() {
            let handled = receiving.handle(k, body);
            if body.is_empty() || body[0] >= 3 {
                prop_assert!(handled.is_err());
            }
        }
    }

    /// A message for a stream beyond stdout, stderr and the channel is
    /// an error, whatever its kind.
    #[test]
    fn a_message_for_an_unknown_stream_is_an_error(
        k in prop_oneof![Just(kind::DATA), Just(kind::ACK), Just(kind::EOF), any::<u8>()],
        stream in 3u8..,
        rest in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let (_rt, mut receiving) = offline_receiving();
        let mut body = vec![stream];
        body.extend_from_slice(&rest);
        let why = receiving.handle(k, &body).unwrap_err();
        prop_assert!(why.contains("unknown stream"), "{}", why);
    }
}

#[test]
fn new_ids_are_sixteen_hex_digits_that_pass_the_id_check() {
    let ids: std::collections::HashSet<String> = (0..100).map(|_| new_id()).collect();
    assert_eq!(ids.len(), 100, "ids repeat");
    for id in &ids {
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(is_id(id));
    }
}

#[test]
fn ids_that_could_escape_a_subject_token_are_refused() {
    for bad in [
        "", "*", ">", "a.b", "a b", "a\tb", "a\r\nb", "ab*", "a>", "é", "a-b", "a_b",
    ] {
        assert!(!is_id(bad), "{bad:?} passed");
    }
    assert!(is_id(&"a".repeat(64)));
    assert!(!is_id(&"a".repeat(65)));
}

#[test]
fn a_session_has_one_subject_each_way() {
    assert_eq!(fork_subject("K", "abc"), "wasmproc.agent.K.abc.fork");
    assert_eq!(parent_subject("K", "abc"), "wasmproc.parent.K.abc");
    assert_eq!(advert_subject("K"), "wasmproc.agents.K");
    let ends = Ends {
        host: "H",
        agent: "A",
        session: "abc",
    };
    let (to, from) = (session_subject(&ends, true), session_subject(&ends, false));
    assert_eq!(to, "wasmproc.s.H.A.abc.p");
    assert_eq!(from, "wasmproc.s.H.A.abc.w");
    assert_ne!(to, from);
}

#[test]
fn message_kinds_streams_and_error_codes_are_distinct() {
    let kinds = [
        kind::DATA,
        kind::ACK,
        kind::EOF,
        kind::REPORT,
        kind::EXIT,
        kind::KILL,
        kind::CLOSE,
    ];
    let unique: std::collections::HashSet<u8> = kinds.into_iter().collect();
    assert_eq!(unique.len(), kinds.len());
    assert_eq!([stream::CHANNEL, stream::STDOUT, stream::STDERR], [0, 1, 2]);
    let codes: std::collections::HashSet<String> = [
        Failure::AccessDenied(String::new()),
        Failure::NotFound(String::new()),
        Failure::InvalidArgument(String::new()),
        Failure::LimitExceeded(String::new()),
        Failure::TimedOut(String::new()),
        Failure::Closed(String::new()),
        Failure::Unsupported(String::new()),
        Failure::Io(String::new()),
    ]
    .iter()
    .map(|e| to_wire(e).0)
    .collect();
    assert_eq!(codes.len(), 8);
}

#[test]
fn an_unknown_error_code_from_an_agent_reads_as_io_with_its_message() {
    let e = from_wire("no-such-code", "agent x: what".into());
    assert!(
        matches!(&e, Failure::Io(m) if m == "agent x: what"),
        "{e:?}"
    );
}

#[test]
fn out_of_range_numbers_and_wrong_shapes_in_json_messages_are_errors() {
    assert!(serde_json::from_str::<Advert>(r#"{"id":"a","labels":[],"free":4294967296}"#).is_err());
    assert!(serde_json::from_str::<Advert>(r#"{"id":"a","labels":[],"free":-1}"#).is_err());
    assert!(serde_json::from_str::<Advert>(r#"{"id":"a","labels":"gpu","free":1}"#).is_err());
    assert!(serde_json::from_str::<ForkReply>(r#"{"Started":{"pid":4294967296}}"#).is_err());
    assert!(serde_json::from_str::<ForkReply>(r#"{"Exploded":{}}"#).is_err());
    let exit = |exited: &str| {
        format!(
            r#"{{"exited":{exited},"signaled":null,"trap":null,"user_cpu_ns":0,"system_cpu_ns":0,"max_rss_bytes":0}}"#
        )
    };
    assert!(serde_json::from_str::<Ended>(&exit("255")).is_ok());
    assert!(serde_json::from_str::<Ended>(&exit("256")).is_err());
    // A big body is not a problem in itself: only its shape is.
    let labels = vec!["x".repeat(1000); 1000];
    let big = serde_json::to_vec(&Advert {
        id: "a".into(),
        labels,
        free: 1,
        xkey: String::new(),
    })
    .unwrap();
    assert_eq!(
        serde_json::from_slice::<Advert>(&big).unwrap().labels.len(),
        1000
    );
}

#[test]
fn an_exit_without_a_status_reads_as_killed_and_a_lost_one_says_why() {
    let ended: Ended = serde_json::from_str(
            r#"{"exited":null,"signaled":null,"trap":null,"user_cpu_ns":1,"system_cpu_ns":2,"max_rss_bytes":3}"#,
        )
        .unwrap();
    assert!(ended.lost.is_none(), "`lost` defaults to none");
    let t = Termination::from(ended);
    assert!(matches!(t.status, ExitStatus::Signaled(9)));
    assert_eq!(plain(&t).4, [1, 2, 3]);
    let lost: Ended = serde_json::from_str(
            r#"{"lost":"bridging: gone","exited":null,"signaled":9,"trap":null,"user_cpu_ns":0,"system_cpu_ns":0,"max_rss_bytes":0}"#,
        )
        .unwrap();
    assert_eq!(lost.lost.as_deref(), Some("bridging: gone"));
}

#[test]
fn an_empty_or_truncated_stream_message_is_an_error_not_a_panic() {
    let (_rt, mut receiving) = offline_receiving();
    for k in [kind::DATA, kind::ACK, kind::EOF] {
        assert!(receiving.handle(k, &[]).is_err(), "empty {}", k as char);
    }
    // A data message needs its stream and an 8-byte sequence number.
    let full = data(stream::STDOUT, 0, b"");
    for len in 1..full.len() {
        let why = receiving.handle(kind::DATA, &full[..len]).unwrap_err();
        assert!(why.contains("malformed data"), "{why}");
    }
    // A credit message needs its stream and two 8-byte counts.
    let full = ack(stream::STDOUT, 1, 1);
    for len in 1..full.len() {
        let why = receiving.handle(kind::ACK, &full[..len]).unwrap_err();
        assert!(why.contains("malformed credit"), "{why}");
    }
    assert_eq!(receiving.handle(kind::ACK, &full), Ok(()));
    assert_eq!(
        receiving.handle(kind::DATA, &data(stream::STDOUT, 0, b"")),
        Ok(())
    );
}

#[test]
fn a_lost_or_repeated_data_message_breaks_the_session() {
    let (_rt, mut receiving) = offline_receiving();
    // Each stream is numbered on its own.
    for s in [stream::CHANNEL, stream::STDOUT, stream::STDERR] {
        assert_eq!(receiving.handle(kind::DATA, &data(s, 0, b"a")), Ok(()));
    }
    assert_eq!(
        receiving.handle(kind::DATA, &data(stream::STDOUT, 1, b"b")),
        Ok(())
    );
    let gap = receiving.handle(kind::DATA, &data(stream::STDOUT, 3, b"d"));
    assert_eq!(gap.unwrap_err(), "message 2 of stream 1 was lost (got 3)");
    let (_rt, mut receiving) = offline_receiving();
    assert_eq!(
        receiving.handle(kind::DATA, &data(stream::STDERR, 0, b"a")),
        Ok(())
    );
    assert!(
        receiving
            .handle(kind::DATA, &data(stream::STDERR, 0, b"a"))
            .is_err()
    );
    let (_rt, mut receiving) = offline_receiving();
    assert!(
        receiving
            .handle(kind::DATA, &data(stream::CHANNEL, 1, b"a"))
            .is_err()
    );
}

#[test]
fn granted_credits_only_grow_whatever_order_they_arrive_in() {
    let (_rt, mut receiving) = offline_receiving();
    let credits = Arc::new(Credits::default());
    receiving.credit(stream::STDERR, credits.clone());
    let granted = |c: &Credits| {
        (
            c.bytes.load(Ordering::Acquire),
            c.messages.load(Ordering::Acquire),
        )
    };
    receiving
        .handle(kind::ACK, &ack(stream::STDERR, 100, 10))
        .unwrap();
    assert_eq!(granted(&credits), (100, 10));
    // A late, older grant takes nothing back.
    receiving
        .handle(kind::ACK, &ack(stream::STDERR, 50, 5))
        .unwrap();
    assert_eq!(granted(&credits), (100, 10));
    receiving
        .handle(kind::ACK, &ack(stream::STDERR, 40, 20))
        .unwrap();
    assert_eq!(granted(&credits), (100, 20));
    // Another stream's grant is that stream's.
    receiving
        .handle(kind::ACK, &ack(stream::STDOUT, 1 << 40, 1 << 40))
        .unwrap();
    assert_eq!(granted(&credits), (100, 20));
}

/// A source giving `chunk` bytes a read, counting its reads, then its
/// end after `limit` reads.
struct Counted {
    reads: Arc<AtomicU64>,
    chunk: usize,
    limit: u64,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.reads.load(Ordering::Acquire) < self.limit {
            let n = self.chunk.min(buf.remaining());
            buf.initialize_unfilled_to(n).fill(b'x');
            buf.advance(n);
            self.reads.fetch_add(1, Ordering::AcqRel);
        }
        Poll::Ready(Ok(()))
    }
}

/// Waits until `reads` is `n`, then checks it stays there a while.
async fn reads_stop_at(reads: &AtomicU64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while reads.load(Ordering::Acquire) < n {
        assert!(Instant::now() < deadline, "stuck at {reads:?}, not {n}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        reads.load(Ordering::Acquire),
        n,
        "the sender went past its window"
    );
}

#[tokio::test]
async fn a_sender_stops_at_a_full_message_window_and_resumes_as_credits_come() {
    let client = offline_client().await;
    let reads = Arc::new(AtomicU64::new(0));
    let source = Counted {
        reads: reads.clone(),
        chunk: 1,
        limit: u64::MAX,
    };
    let (task, credits) = send_stream(source, link(client.clone(), "peer"), stream::STDOUT);
    reads_stop_at(&reads, WINDOW_MESSAGES).await;
    let mut receiving = Receiving::new(link(client, "unused"));
    receiving.credit(stream::STDOUT, credits);
    receiving
        .handle(kind::ACK, &ack(stream::STDOUT, 256, 256))
        .unwrap();
    reads_stop_at(&reads, WINDOW_MESSAGES + 256).await;
    // A stale grant changes nothing.
    receiving
        .handle(kind::ACK, &ack(stream::STDOUT, 10, 10))
        .unwrap();
    reads_stop_at(&reads, WINDOW_MESSAGES + 256).await;
    receiving
        .handle(kind::ACK, &ack(stream::STDOUT, 1000, 1000))
        .unwrap();
    reads_stop_at(&reads, WINDOW_MESSAGES + 1000).await;
    task.abort();
}

#[tokio::test]
async fn a_sender_stops_at_a_full_byte_window_and_resumes_as_credits_come() {
    let client = offline_client().await;
    let reads = Arc::new(AtomicU64::new(0));
    let source = Counted {
        reads: reads.clone(),
        chunk: CHUNK,
        limit: u64::MAX,
    };
    let (task, credits) = send_stream(source, link(client.clone(), "peer"), stream::CHANNEL);
    let per_window = WINDOW_BYTES / CHUNK as u64;
    reads_stop_at(&reads, per_window).await;
    let mut receiving = Receiving::new(link(client, "unused"));
    receiving.credit(stream::CHANNEL, credits);
    receiving
        .handle(kind::ACK, &ack(stream::CHANNEL, WINDOW_BYTES / 4, 1))
        .unwrap();
    reads_stop_at(&reads, per_window + per_window / 4).await;
    task.abort();
}

#[tokio::test]
async fn a_grant_beyond_what_was_sent_never_underflows_the_window() {
    let client = offline_client().await;
    let reads = Arc::new(AtomicU64::new(0));
    let limit = 3 * WINDOW_MESSAGES;
    let source = Counted {
        reads: reads.clone(),
        chunk: 1,
        limit,
    };
    let (task, credits) = send_stream(source, link(client, "peer"), stream::STDERR);
    credits.bytes.store(u64::MAX, Ordering::Release);
    credits.messages.store(u64::MAX, Ordering::Release);
    credits.changed.notify_waiters();
    // Past the window, to the source's end: no overflow, no stall.
    reads_stop_at(&reads, limit).await;
    task.abort();
}

#[tokio::test]
async fn a_receiver_grants_credits_each_time_a_quarter_of_the_window_is_written() {
    let written = Written {
        counts: Mutex::new(((0, 0), (0, 0))),
        link: link(offline_client().await, "peer"),
        stream: stream::STDOUT,
    };
    let counts = || *written.counts.lock().unwrap();
    written.add(WINDOW_BYTES / 4 - 1, 1);
    assert_eq!(
        counts(),
        ((WINDOW_BYTES / 4 - 1, 1), (0, 0)),
        "granted too early"
    );
    written.add(1, 0);
    let quarter = ((WINDOW_BYTES / 4, 1), (WINDOW_BYTES / 4, 1));
    assert_eq!(counts(), quarter);
    written.add(0, WINDOW_MESSAGES / 4 - 1);
    assert_eq!(counts().1, quarter.1, "granted too early");
    written.add(0, 1);
    let all = (WINDOW_BYTES / 4, 1 + WINDOW_MESSAGES / 4);
    assert_eq!(counts(), (all, all));
    // A sender waiting at a full window always gets a grant.
    const { assert!(WINDOW_BYTES / 4 >= CHUNK as u64 && WINDOW_MESSAGES / 4 >= 1) };
}

#[tokio::test]
async fn a_sink_gets_its_stream_in_order_then_its_end() {
    let mut receiving = Receiving::new(link(offline_client().await, "peer"));
    let (sink, mut out) = tokio::io::duplex(1 << 16);
    receiving.sink(stream::STDOUT, Box::pin(sink));
    let (err_sink, mut err_out) = tokio::io::duplex(1 << 16);
    receiving.sink(stream::STDERR, Box::pin(err_sink));
    for (seq, piece) in [&b"hello, "[..], b"", b"world"].into_iter().enumerate() {
        receiving
            .handle(kind::DATA, &data(stream::STDOUT, seq as u64, piece))
            .unwrap();
    }
    receiving
        .handle(kind::DATA, &data(stream::STDERR, 0, b"oops"))
        .unwrap();
    receiving.handle(kind::EOF, &[stream::STDOUT]).unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), out.read_to_end(&mut got))
        .await
        .expect("the stream ends at its EOF")
        .unwrap();
    assert_eq!(got, b"hello, world");
    // The other stream goes on until the session ends.
    let mut four = [0u8; 4];
    err_out.read_exact(&mut four).await.unwrap();
    assert_eq!(&four, b"oops");
    receiving.end();
    assert_eq!(err_out.read(&mut four).await.unwrap(), 0);
}
