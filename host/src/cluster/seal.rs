//! Secrets never in the clear: a fork request is sealed to the agent's
//! curve key, and every message of its session is encrypted and
//! authenticated with keys only the host and that agent hold.
//!
//! Why so:
//! - **xkeys for the request.** An agent advertises (signed) a curve
//!   public key (an nkeys xkey) made when it starts; the host seals each
//!   fork request to it from a curve key of its own made for that request
//!   (crypto_box, as NATS's auth callouts seal with xkeys). So only that
//!   agent reads the request (its args, env values, policy), and a key
//!   that leaks later opens no earlier request. The envelope around it is
//!   signed by the host's nkey, which is what makes it the host's.
//! - **A symmetric key per session and direction.** The request carries
//!   two fresh random keys, one per direction; every session message (the
//!   fork's reply, channel bytes, stdout, stderr, reports, credits, kill,
//!   exit) is one ChaCha20-Poly1305 frame under its direction's key: one
//!   AEAD per NATS message (up to 64 KiB of a stream), never a curve
//!   operation per frame, so throughput stays the transport's. The
//!   session's id and direction are the associated data.
//! - **Counters, and a replay window.** A frame's nonce is its sender's
//!   counter, sent in the clear before it. Messages of one direction come
//!   from several tasks, so they may be published slightly out of order:
//!   the receiver keeps a sliding window ([`WINDOW`] counters, as IPsec and
//!   WireGuard do) and drops a counter seen before or older than it. A
//!   frame is checked before the window moves, so a forgery moves nothing.

use super::Rejected;
use bytes::{Bytes, BytesMut};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters a receiver remembers behind the newest.
const WINDOW: u64 = 8192;

/// The two keys of a session, one per direction; in the sealed request.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SessionKeys {
    /// Host to worker.
    pub to_worker: [u8; 32],
    /// Worker (agent) to host.
    pub from_worker: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

impl SessionKeys {
    pub fn new() -> SessionKeys {
        let mut keys = [0u8; 64];
        getrandom::fill(&mut keys).expect("the OS gives random bytes");
        let (to_worker, from_worker) = keys.split_at(32);
        SessionKeys {
            to_worker: to_worker.try_into().expect("32 bytes"),
            from_worker: from_worker.try_into().expect("32 bytes"),
        }
    }

    fn key(&self, to_worker: bool) -> &[u8; 32] {
        match to_worker {
            true => &self.to_worker,
            false => &self.from_worker,
        }
    }

    /// The sealer of direction `to_worker` of session `session`.
    pub fn sealer(&self, session: &str, to_worker: bool) -> Sealer {
        Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(self.key(to_worker))),
            next: AtomicU64::new(0),
            ad: associated(session, to_worker),
        }
    }

    /// The opener of direction `to_worker` of session `session`.
    pub fn opener(&self, session: &str, to_worker: bool) -> Opener {
        Opener {
            cipher: ChaCha20Poly1305::new(Key::from_slice(self.key(to_worker))),
            ad: associated(session, to_worker),
            window: Window::default(),
        }
    }
}

fn associated(session: &str, to_worker: bool) -> Vec<u8> {
    let mut ad = b"wasmproc-session-v1\0".to_vec();
    ad.extend_from_slice(session.as_bytes());
    ad.push(if to_worker { b'p' } else { b'w' });
    ad
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    *Nonce::from_slice(&n)
}

/// Encrypts one direction of a session: each frame with the next counter.
pub(crate) struct Sealer {
    cipher: ChaCha20Poly1305,
    next: AtomicU64,
    ad: Vec<u8>,
}

impl Sealer {
    /// `plain` as one frame: its counter, then the ciphertext and tag.
    pub fn seal(&self, plain: &[u8]) -> Bytes {
        let counter = self.next.fetch_add(1, Ordering::AcqRel);
        let mut frame = BytesMut::with_capacity(8 + plain.len() + 16);
        frame.extend_from_slice(&counter.to_le_bytes());
        frame.extend_from_slice(plain);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce(counter), &self.ad, &mut frame[8..])
            .expect("a frame is far below the AEAD's limit");
        frame.extend_from_slice(&tag);
        frame.freeze()
    }
}

/// Decrypts one direction of a session, dropping replays.
pub(crate) struct Opener {
    cipher: ChaCha20Poly1305,
    ad: Vec<u8>,
    window: Window,
}

impl Opener {
    /// The plaintext of `frame`, if it is one of this direction's, not
    /// seen before.
    pub fn open(&mut self, frame: &[u8]) -> Result<Vec<u8>, Rejected> {
        if frame.len() < 8 + 16 {
            return Err(Rejected::Undecryptable);
        }
        let (counter, rest) = frame.split_at(8);
        let counter = u64::from_le_bytes(counter.try_into().expect("8 bytes"));
        if !self.window.fresh(counter) {
            return Err(Rejected::Replayed);
        }
        let (body, tag) = rest.split_at(rest.len() - 16);
        let mut plain = body.to_vec();
        self.cipher
            .decrypt_in_place_detached(&nonce(counter), &self.ad, &mut plain, tag.into())
            .map_err(|_| Rejected::Undecryptable)?;
        self.window.mark(counter);
        Ok(plain)
    }
}

/// The counters seen: everything below `top - WINDOW` counts as seen.
struct Window {
    /// One more than the highest counter seen.
    top: u64,
    bits: [u64; (WINDOW / 64) as usize],
}

impl Default for Window {
    fn default() -> Window {
        Window {
            top: 0,
            bits: [0; (WINDOW / 64) as usize],
        }
    }
}

impl Window {
    fn bit(n: u64) -> (usize, u64) {
        let i = n % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Whether `n` may be new (not seen, not older than the window).
    fn fresh(&self, n: u64) -> bool {
        if n >= self.top {
            return true;
        }
        if self.top - n > WINDOW {
            return false;
        }
        let (word, bit) = Window::bit(n);
        self.bits[word] & bit == 0
    }

    /// Marks `n` seen (after [`fresh`](Self::fresh) and its tag checked).
    fn mark(&mut self, n: u64) {
        if n >= self.top {
            if n - self.top >= WINDOW {
                self.bits = [0; (WINDOW / 64) as usize];
            } else {
                for m in self.top..n {
                    let (word, bit) = Window::bit(m);
                    self.bits[word] &= !bit;
                }
            }
            self.top = n + 1;
        }
        let (word, bit) = Window::bit(n);
        self.bits[word] |= bit;
    }
}

/// One direction of a session as its sender holds it: where it goes,
/// and its sealer. Every message a side publishes on a session is sealed.
#[derive(Clone)]
pub(crate) struct Link {
    pub client: async_nats::Client,
    pub subject: String,
    sealer: Arc<Sealer>,
}

impl Link {
    pub fn new(client: async_nats::Client, subject: String, sealer: Sealer) -> Link {
        Link {
            client,
            subject,
            sealer: Arc::new(sealer),
        }
    }

    /// Seals and publishes `plain`.
    pub async fn publish(&self, plain: &[u8]) -> Result<(), async_nats::PublishError> {
        let frame = self.sealer.seal(plain);
        self.client.publish(self.subject.clone(), frame).await
    }

    /// Seals `plain` now and publishes it from a task of its own.
    pub fn publish_soon(&self, plain: &[u8]) {
        let frame = self.sealer.seal(plain);
        let (client, subject) = (self.client.clone(), self.subject.clone());
        tokio::spawn(async move {
            let _ = client.publish(subject, frame).await;
        });
    }

    /// Seals `plain` for a reply subject (the fork's answer).
    pub fn seal(&self, plain: &[u8]) -> Bytes {
        self.sealer.seal(plain)
    }
}

/// `plain` sealed to the agent whose curve public key is `agent_xkey`,
/// from a curve key made for it: that key's public part (56 bytes), then
/// the sealed box.
pub(crate) fn seal_to(agent_xkey: &str, plain: &[u8]) -> Result<Vec<u8>, Rejected> {
    let recipient = nkeys::XKey::from_public_key(agent_xkey).map_err(|_| Rejected::Malformed)?;
    let ours = nkeys::XKey::new();
    let sealed = ours
        .seal(plain, &recipient)
        .map_err(|_| Rejected::Malformed)?;
    let mut out = ours.public_key().into_bytes();
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// What [`seal_to`] sealed, opened with the agent's curve key `xkey`.
pub(crate) fn open_from(xkey: &nkeys::XKey, sealed: &[u8]) -> Result<Vec<u8>, Rejected> {
    if sealed.len() < 56 {
        return Err(Rejected::Undecryptable);
    }
    let (sender, sealed) = sealed.split_at(56);
    let sender = std::str::from_utf8(sender).map_err(|_| Rejected::Undecryptable)?;
    let sender = nkeys::XKey::from_public_key(sender).map_err(|_| Rejected::Undecryptable)?;
    xkey.open(sealed, &sender)
        .map_err(|_| Rejected::Undecryptable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_opens_once_in_its_own_direction_and_session_only() {
        let keys = SessionKeys::new();
        let sealer = keys.sealer("s1", true);
        let frame = sealer.seal(b"SECRET_TOKEN=hunter2");
        assert!(
            !frame.windows(7).any(|w| w == b"hunter2"),
            "the plaintext is not in the frame"
        );
        let mut opener = keys.opener("s1", true);
        assert_eq!(opener.open(&frame).unwrap(), b"SECRET_TOKEN=hunter2");
        assert_eq!(opener.open(&frame), Err(Rejected::Replayed));
        assert_eq!(
            keys.opener("s1", false).open(&frame),
            Err(Rejected::Undecryptable)
        );
        assert_eq!(
            keys.opener("s2", true).open(&frame),
            Err(Rejected::Undecryptable)
        );
        assert_eq!(
            SessionKeys::new().opener("s1", true).open(&frame),
            Err(Rejected::Undecryptable)
        );
    }

    #[test]
    fn frames_out_of_order_within_the_window_open_and_old_ones_do_not() {
        let keys = SessionKeys::new();
        let sealer = keys.sealer("s", false);
        let frames: Vec<Bytes> = (0..WINDOW + 10)
            .map(|i| sealer.seal(&i.to_le_bytes()))
            .collect();
        let mut opener = keys.opener("s", false);
        assert!(opener.open(&frames[5]).is_ok());
        assert!(opener.open(&frames[3]).is_ok());
        assert!(opener.open(&frames[4]).is_ok());
        assert_eq!(opener.open(&frames[3]), Err(Rejected::Replayed));
        assert!(opener.open(&frames[(WINDOW + 9) as usize]).is_ok());
        // Frame 0 is now older than the window: counted as seen.
        assert_eq!(opener.open(&frames[0]), Err(Rejected::Replayed));
        assert!(opener.open(&frames[(WINDOW + 1) as usize]).is_ok());
    }

    #[test]
    fn a_tampered_frame_moves_no_window() {
        let keys = SessionKeys::new();
        let sealer = keys.sealer("s", true);
        let good = sealer.seal(b"x");
        let mut forged = sealer.seal(b"y").to_vec();
        forged[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
        let mut opener = keys.opener("s", true);
        assert_eq!(opener.open(&forged), Err(Rejected::Undecryptable));
        assert_eq!(opener.open(&good).unwrap(), b"x");
    }

    #[test]
    fn a_sealed_fork_request_shows_no_env_value_arg_or_session_key() {
        let keys = SessionKeys::new();
        let request = crate::cluster::ForkRequest {
            session: "s".into(),
            parent: "p".into(),
            component: "worker.wasm".into(),
            args: vec!["ARG-S3CRET".into()],
            env: vec![("TOKEN".into(), "ENV-S3CRET".into())],
            dirs: vec![],
            policy: crate::policy::Policy::default(),
            stdout: true,
            stderr: true,
            keys: keys.clone(),
        };
        let plain = serde_json::to_vec(&request).unwrap();
        let agent = nkeys::XKey::new();
        let sealed = seal_to(&agent.public_key(), &plain).unwrap();
        for secret in [
            &b"S3CRET"[..],
            b"TOKEN",
            b"worker.wasm",
            &keys.to_worker[..8],
        ] {
            assert!(!sealed.windows(secret.len()).any(|w| w == secret));
        }
        assert_eq!(open_from(&agent, &sealed).unwrap(), plain);
    }

    #[test]
    fn a_request_sealed_to_an_agent_opens_only_with_its_key() {
        let agent = nkeys::XKey::new();
        let sealed = seal_to(&agent.public_key(), b"SECRET=1").unwrap();
        assert_eq!(open_from(&agent, &sealed).unwrap(), b"SECRET=1");
        assert_eq!(
            open_from(&nkeys::XKey::new(), &sealed),
            Err(Rejected::Undecryptable)
        );
    }
}
