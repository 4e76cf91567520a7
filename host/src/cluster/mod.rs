//! Scale-out: workers forked onto the agents of a cluster, through NATS,
//! with the contract of a local `fork`.
//!
//! Why these choices:
//! - **Discovery, capacity and liveness in one message.** Each agent
//!   publishes an [`Advert`] (its id, labels and free worker slots) on
//!   [`ADVERTS`] every [`HEARTBEAT`]; a forking host keeps the table and
//!   picks the agent. A KV bucket would need JetStream on every server and
//!   still no liveness; the service API gives discovery by request, but
//!   a host needs the heartbeats anyway to notice a lost agent, and the
//!   adverts carry the capacity the choice depends on. Forking is then a
//!   plain request to the chosen agent's subject (no queue group: the
//!   host, not NATS, must choose by labels and capacity).
//! - **The channel is the local one, bridged.** The guest's `worker` keeps
//!   its local [`Channel`](crate::Channel) on a socketpair; the other end
//!   is pumped to and from NATS as a byte stream, and on the agent the
//!   same pump feeds the worker process's own socket. Framing, order,
//!   size limits and the guest-side buffer are thus the local code's.
//!   Over NATS each direction is one subject with one publisher and one
//!   subscriber (ordered). It carries streams — the channel both ways,
//!   the worker's stdout and stderr — each numbered on its own (a gap
//!   ends the session: NATS core may drop for a slow consumer) and sent
//!   only within a window of credits the receiver grants as it writes the
//!   bytes out ([`WINDOW_BYTES`], [`WINDOW_MESSAGES`]), each written by a
//!   task of its own so that no slow reader holds up the others or the
//!   control messages.
//! - **Ends.** The agent sends the worker's last messages, its stdout and
//!   stderr, its reports, then its exit; a host that stops seeing the
//!   agent's adverts for [`LOST_AFTER`] ends the worker as lost (`closed`
//!   after what arrived, and `wait` fails naming the agent). The host
//!   publishes its own heartbeat, and an agent kills the workers of a host
//!   it stops hearing from, so nothing is left behind either way.
//! - **Trusting no one on the bus.** Everything that reaches a host or an
//!   agent through NATS may come from anyone who can publish there, so
//!   nothing is taken on the server's word: adverts, heartbeats and fork
//!   requests are signed by the sender's nkey and accepted only from
//!   trusted keys, fresh and not replayed ([`identity`]); fork requests
//!   are sealed to the agent and every session message is encrypted and
//!   authenticated end to end (`seal`); an agent watches only the hosts
//!   whose workers it runs (`liveness`). What is dropped is counted. The
//!   subjects carry the public keys of the host and agent they belong to
//!   (`wasmproc.s.HOST.AGENT.SESSION.p`), so that a server configuration
//!   can give each key only its own subjects (`deploy/nats/`): defence in
//!   depth, since the signatures and the encryption hold without it.
//!   With `--insecure` (no keys trusted), anyone who signs is taken, and
//!   both sides say so; messages are still signed and sealed.

mod ceiling;
mod host;
pub mod identity;
pub(crate) mod liveness;
pub(crate) mod seal;
mod session;
#[cfg(test)]
mod tests;
mod wire;

pub(crate) use host::Answer;
pub use host::Cluster;
pub use identity::{Drops, FRESH, Identity, KeyError, Rejected, Trust};
pub(crate) use identity::{Seen as SeenRequests, Signed};
pub(crate) use seal::{Link, Opener, SessionKeys};
pub(crate) use session::*;
pub(crate) use wire::*;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Where agents advertise themselves: `wasmproc.agents.KEY`, KEY the
/// agent's public key.
pub const ADVERTS: &str = "wasmproc.agents";

/// How often agents advertise and hosts send their heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(250);

/// An agent (or a forking host) not heard from for this long is lost.
pub const LOST_AFTER: Duration = Duration::from_millis(1500);

/// Bytes of channel data in flight, sent but not yet written to the
/// receiver's socket, at most.
pub const WINDOW_BYTES: u64 = 4 << 20;

/// Data messages in flight at most (a NATS subscription holds messages,
/// not bytes: tiny writes must not overflow it).
pub const WINDOW_MESSAGES: u64 = 1024;

/// Bytes read from a socket or pipe into one NATS message, at most.
const CHUNK: usize = 64 << 10;

/// How long a host waits for an agent that matches a placement, and for
/// its answer.
const FORK_TIMEOUT: Duration = Duration::from_secs(5);

/// A random id for an agent, host or session: 16 hex digits (subject-safe).
pub(crate) fn new_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS gives random bytes");
    crate::hex::hex(&bytes)
}

/// Whether `id` (an agent's, host's or session's, from the network) can
/// be a NATS subject token: plain alphanumerics, as [`new_id`] makes,
/// never a wildcard or a `.`.
pub(crate) fn is_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The subject agent `key` advertises on.
pub(crate) fn advert_subject(key: &str) -> String {
    format!("{ADVERTS}.{key}")
}

/// The subject agent `id` (key `key`) takes fork requests on.
pub(crate) fn fork_subject(key: &str, agent: &str) -> String {
    format!("wasmproc.agent.{key}.{agent}.fork")
}

/// The subject a forking host's heartbeat goes to: host `parent`, key
/// `key`.
pub(crate) fn parent_subject(key: &str, parent: &str) -> String {
    format!("wasmproc.parent.{key}.{parent}")
}

/// The prefix of the inboxes a host with key `key` gets replies on.
pub(crate) fn inbox_prefix(key: &str) -> String {
    format!("wasmproc.inbox.{key}")
}

/// The ends of a session: the host's and the agent's public keys, and
/// the session's id.
#[derive(Debug, Clone)]
pub(crate) struct Ends<'a> {
    pub host: &'a str,
    pub agent: &'a str,
    pub session: &'a str,
}

/// The subject of one direction of a session: `to_worker` or not.
pub(crate) fn session_subject(ends: &Ends<'_>, to_worker: bool) -> String {
    let Ends {
        host,
        agent,
        session,
    } = ends;
    let way = if to_worker { "p" } else { "w" };
    format!("wasmproc.s.{host}.{agent}.{session}.{way}")
}

/// What an agent says of itself every [`HEARTBEAT`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Advert {
    /// The agent's id (unique per agent process).
    pub id: String,
    /// Its labels, such as `gpu` or `zone=a`, and `sha256:HEX` of each
    /// pinned program.
    pub labels: Vec<String>,
    /// Workers it can still start.
    pub free: u32,
    /// The curve (xkey) public key fork requests are sealed to.
    #[serde(default)]
    pub xkey: String,
}

/// How to reach the NATS servers: the URL and the credentials and TLS
/// settings, as the CLI's `--nats*` flags give them.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// `nats://HOST:PORT` (or `tls://`), several separated by commas.
    pub url: String,
    /// A token (`--nats-token`).
    pub token: Option<String>,
    /// A user credentials file: JWT and nkey seed (`--nats-creds`).
    pub creds: Option<PathBuf>,
    /// A file holding an nkey seed (`--nats-nkey`).
    pub nkey: Option<PathBuf>,
    /// A CA certificate to trust, for TLS (`--nats-ca`).
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Require TLS (`--nats-tls`; implied by a `tls://` URL).
    pub tls: bool,
}

impl NatsOptions {
    /// Connects, named `name` (shown by the servers' monitoring), with
    /// request inboxes under `inbox` if given.
    pub async fn connect(&self, name: &str, inbox: Option<String>) -> Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new().name(name);
        if let Some(inbox) = inbox {
            options = options.custom_inbox_prefix(inbox);
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(creds) = &self.creds {
            options = options
                .credentials_file(creds)
                .await
                .with_context(|| format!("reading NATS credentials {}", creds.display()))?;
        }
        if let Some(nkey) = &self.nkey {
            let seed = std::fs::read_to_string(nkey)
                .with_context(|| format!("reading nkey seed {}", nkey.display()))?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls || self.url.starts_with("tls://") {
            options = options.require_tls(true);
        }
        let servers: Vec<&str> = self.url.split(',').map(str::trim).collect();
        options
            .connect(servers.as_slice())
            .await
            .with_context(|| format!("connecting to NATS at {}", self.url))
    }
}
