//! Who is on the bus: the nkey each host and agent signs with, the keys
//! each trusts, the signed envelope of every control message, and the
//! count of what was dropped.
//!
//! Why so:
//! - **nkeys, user keys.** A host's or agent's identity is a NATS *user*
//!   nkey (`SU…` seed, `U…` public key): the very key the server can
//!   authenticate it with (`nkey:` users of the shipped configuration), so
//!   one file is both its NATS login and its signature, as wasmCloud's
//!   hosts sign with their nkeys. Trust is a list of public keys, as in
//!   NATS's own decentralized auth: no certificate authority to run.
//! - **Every control message is signed and fresh.** Adverts, heartbeats
//!   and fork requests carry the signer's key, a timestamp, a sequence
//!   number and an ed25519 signature over the subject too (an advert is
//!   never a heartbeat, a request for one agent never another's). A
//!   message is dropped, and counted, if it is malformed, signed by a key
//!   not trusted, badly signed, older or newer than [`FRESH`], or not newer
//!   than the last one of the same sender: a captured message cannot be
//!   played again. The sequence starts at the clock (µs) so that a
//!   restarted process is never taken for a replay of itself.
//! - **Cheap checks first.** Whether a key is trusted (a map lookup) is
//!   known before a signature is checked, so a flood of strangers costs
//!   almost nothing.

use crate::audit::AuditLog;
use bytes::{BufMut, Bytes, BytesMut};
use nkeys::KeyPair;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How far a signed message's timestamp may be from this machine's
/// clock (both ways: clocks of machines differ).
pub const FRESH: Duration = Duration::from_secs(30);

/// The first bytes of a signed envelope (version 1).
const MAGIC: &[u8; 4] = b"WPS1";

/// What every signature covers first: no other protocol's signature
/// (a NATS nonce, say) is ever one of ours.
const DOMAIN: &[u8] = b"wasmproc-cluster-v1\0";

/// The length of an nkey public key.
const KEY_LEN: usize = 56;

/// Why a message from the bus was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Not a signed envelope at all (or cut short).
    Unsigned,
    /// Signed by a key this side does not trust.
    Untrusted,
    /// The signature does not verify.
    BadSignature,
    /// Its timestamp is outside [`FRESH`].
    Stale,
    /// Not newer than what its sender sent before: a replay.
    Replayed,
    /// A heartbeat or message for a host or session not known here.
    Unknown,
    /// It does not decrypt with the session's (or this agent's) key.
    Undecryptable,
    /// It decrypts or verifies, but its contents make no sense.
    Malformed,
}

impl Rejected {
    /// The reason as the log and the audit log say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Unsigned => "unsigned",
            Rejected::Untrusted => "untrusted key",
            Rejected::BadSignature => "bad signature",
            Rejected::Stale => "stale",
            Rejected::Replayed => "replayed",
            Rejected::Unknown => "unknown sender",
            Rejected::Undecryptable => "undecryptable",
            Rejected::Malformed => "malformed",
        }
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure to load or make an identity or a trust list.
#[derive(Debug)]
pub struct KeyError(pub String);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// A host's or agent's key pair, and the sequence of what it signs.
pub struct Identity {
    key: KeyPair,
    public: String,
    seq: AtomicU64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn now_millis() -> u64 {
    now_micros() / 1000
}

impl Identity {
    /// A new user key pair (for development: its public key must be told
    /// to the other side).
    pub fn generate() -> Identity {
        Identity::from_key(KeyPair::new_user())
    }

    /// The identity whose seed (`SU…`) is `seed`.
    pub fn from_seed(seed: &str) -> Result<Identity, KeyError> {
        let key = KeyPair::from_seed(seed.trim())
            .map_err(|e| KeyError(format!("not an nkey seed: {e}")))?;
        Ok(Identity::from_key(key))
    }

    /// The identity whose seed is in the file at `path`.
    pub fn from_file(path: &Path) -> Result<Identity, KeyError> {
        let seed = std::fs::read_to_string(path)
            .map_err(|e| KeyError(format!("reading key {}: {e}", path.display())))?;
        Identity::from_seed(&seed).map_err(|e| KeyError(format!("key {}: {e}", path.display())))
    }

    fn from_key(key: KeyPair) -> Identity {
        Identity {
            public: key.public_key(),
            key,
            seq: AtomicU64::new(now_micros()),
        }
    }

    /// The seed, to write to a key file.
    pub fn seed(&self) -> String {
        self.key
            .seed()
            .expect("a generated or loaded key has its seed")
    }

    /// The public key (`U…`), as the other side trusts it.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// `body` signed for `subject`, with the next sequence number: the
    /// envelope of every control message (public for tools and tests).
    pub fn sign(&self, subject: &str, body: &[u8]) -> Bytes {
        let (ts, seq) = (now_millis(), self.seq.fetch_add(1, Ordering::AcqRel));
        let signed = signed_bytes(subject, ts, seq, body);
        let sig = self
            .key
            .sign(&signed)
            .expect("a key pair with a seed signs");
        let mut m = BytesMut::with_capacity(4 + KEY_LEN + 16 + sig.len() + body.len());
        m.put_slice(MAGIC);
        m.put_slice(self.public.as_bytes());
        m.put_u64_le(ts);
        m.put_u64_le(seq);
        m.put_slice(&sig);
        m.put_slice(body);
        m.freeze()
    }
}

fn signed_bytes(subject: &str, ts: u64, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(DOMAIN.len() + subject.len() + 17 + body.len());
    signed.extend_from_slice(DOMAIN);
    signed.extend_from_slice(subject.as_bytes());
    signed.push(0);
    signed.extend_from_slice(&ts.to_le_bytes());
    signed.extend_from_slice(&seq.to_le_bytes());
    signed.extend_from_slice(body);
    signed
}

/// A signed envelope as it came, before its signature is checked.
#[derive(Debug)]
pub(crate) struct Signed<'a> {
    /// The signer's public key, as it claims.
    pub key: &'a str,
    pub ts: u64,
    pub seq: u64,
    sig: &'a [u8],
    pub body: &'a [u8],
}

impl<'a> Signed<'a> {
    /// Splits `payload` into its parts (nothing is checked yet).
    pub fn parse(payload: &'a [u8]) -> Result<Signed<'a>, Rejected> {
        let rest = payload.strip_prefix(MAGIC).ok_or(Rejected::Unsigned)?;
        if rest.len() < KEY_LEN + 16 + 64 {
            return Err(Rejected::Unsigned);
        }
        let (key, rest) = rest.split_at(KEY_LEN);
        let key = std::str::from_utf8(key).map_err(|_| Rejected::Unsigned)?;
        let (ts, rest) = rest.split_at(8);
        let (seq, rest) = rest.split_at(8);
        let (sig, body) = rest.split_at(64);
        Ok(Signed {
            key,
            ts: u64::from_le_bytes(ts.try_into().expect("8 bytes")),
            seq: u64::from_le_bytes(seq.try_into().expect("8 bytes")),
            sig,
            body,
        })
    }

    /// Whether the timestamp is within [`FRESH`] of this machine's clock.
    pub fn fresh(&self) -> Result<(), Rejected> {
        let fresh = FRESH.as_millis() as u64;
        match now_millis().abs_diff(self.ts) <= fresh {
            true => Ok(()),
            false => Err(Rejected::Stale),
        }
    }
}

/// The public keys one side trusts (or, insecure, anyone's).
#[derive(Debug)]
pub struct Trust {
    keys: HashMap<String, KeyPair>,
    anyone: bool,
}

impl Trust {
    /// Trusts exactly the public keys `keys` (`U…`).
    pub fn keys<S: AsRef<str>>(keys: impl IntoIterator<Item = S>) -> Result<Trust, KeyError> {
        let mut map = HashMap::new();
        for key in keys {
            let key = key.as_ref().trim();
            let pair = KeyPair::from_public_key(key)
                .map_err(|e| KeyError(format!("`{key}` is not an nkey public key: {e}")))?;
            map.insert(key.to_owned(), pair);
        }
        Ok(Trust {
            keys: map,
            anyone: false,
        })
    }

    /// Trusts anyone who signs (`--insecure` with no keys): messages must
    /// still be signed, fresh and not replayed, but the key is not checked.
    pub fn anyone() -> Trust {
        Trust {
            keys: HashMap::new(),
            anyone: true,
        }
    }

    /// Whether this trusts any key that signs.
    pub fn is_anyone(&self) -> bool {
        self.anyone
    }

    /// Whether `key` is trusted (before checking a signature of it).
    pub fn trusts(&self, key: &str) -> bool {
        self.anyone || self.keys.contains_key(key)
    }

    /// Checks `m`, sent on `subject`: a trusted key, a good signature, a
    /// fresh timestamp. (Replays are the caller's: it knows the sender's
    /// last sequence number.)
    pub(crate) fn check(&self, subject: &str, m: &Signed<'_>) -> Result<(), Rejected> {
        let signed = signed_bytes(subject, m.ts, m.seq, m.body);
        match self.keys.get(m.key) {
            Some(key) => key.verify(&signed, m.sig),
            None if self.anyone => KeyPair::from_public_key(m.key)
                .map_err(|_| Rejected::Untrusted)?
                .verify(&signed, m.sig),
            None => return Err(Rejected::Untrusted),
        }
        .map_err(|_| Rejected::BadSignature)?;
        m.fresh()
    }
}

/// What one side dropped, counted; shown in the log (at warn) and the
/// audit log (`cluster-dropped`, with the total): each of the first 16,
/// then at each power of two or after a quiet second.
pub struct Drops {
    role: &'static str,
    total: AtomicU64,
    shown: Mutex<Option<Instant>>,
    audit: Option<AuditLog>,
}

impl std::fmt::Debug for Drops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drops")
            .field("total", &self.total())
            .finish_non_exhaustive()
    }
}

impl Drops {
    /// Counts for `role` (`host` or `agent`), auditing to `audit`.
    pub fn new(role: &'static str, audit: Option<AuditLog>) -> Drops {
        Drops {
            role,
            total: AtomicU64::new(0),
            shown: Mutex::new(None),
            audit,
        }
    }

    /// Messages dropped so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }

    /// Counts one message on `subject` dropped for `why`.
    pub fn count(&self, why: Rejected, subject: &str) {
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        {
            // The first few, then a flood in ever rarer lines.
            let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
            let quiet = shown.is_some_and(|at| at.elapsed() < Duration::from_secs(1));
            if quiet && total > 16 && !total.is_power_of_two() {
                return;
            }
            *shown = Some(Instant::now());
        }
        tracing::warn!(target: "wasmproc::cluster", role = self.role, total, reason = %why, subject, "dropped a message from the bus");
        if let Some(audit) = &self.audit {
            audit.record(
                "cluster-dropped",
                serde_json::json!({
                    "role": self.role, "total": total, "reason": why.as_str(), "subject": subject,
                }),
            );
        }
    }

    /// Says that this side trusts anyone (`--insecure`): in the log and
    /// the audit log.
    pub fn insecure(&self) {
        tracing::warn!(target: "wasmproc::cluster", role = self.role, "insecure: trusting any key on the bus");
        if let Some(audit) = &self.audit {
            audit.record(
                "cluster-insecure",
                serde_json::json!({ "role": self.role, "trust": "anyone who signs" }),
            );
        }
    }
}

/// The last sequence number of each sender, for requests that each
/// start something (fork requests): one of them seen again within
/// [`FRESH`] is a replay. Bounded: past `max`, the oldest are forgotten
/// (they are stale by then, or the senders are trusted and flooding).
pub(crate) struct Seen {
    /// (key, seq) -> when it was seen.
    seen: HashMap<(String, u64), Instant>,
    max: usize,
}

impl Seen {
    pub fn new(max: usize) -> Seen {
        Seen {
            seen: HashMap::new(),
            max,
        }
    }

    /// Records `m`'s key and sequence number; a replay if seen already.
    pub fn first(&mut self, m: &Signed<'_>) -> Result<(), Rejected> {
        if self.seen.len() >= self.max {
            self.seen.retain(|_, at| at.elapsed() < FRESH * 2);
        }
        if self.seen.len() >= self.max {
            return Err(Rejected::Replayed);
        }
        match self.seen.insert((m.key.to_owned(), m.seq), Instant::now()) {
            None => Ok(()),
            Some(_) => Err(Rejected::Replayed),
        }
    }
}
