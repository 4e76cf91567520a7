//! Liveness that can't be spoofed or flooded: the hosts an agent watches.
//!
//! Why so: an agent needs the heartbeat of a host only while one of that
//! host's workers runs on it, so a host enters the table when the agent
//! accepts its (signed, trusted) fork request, with the key that signed
//! it and that request's sequence number, and leaves it with its last
//! worker. A heartbeat is then checked cheapest first: an id not in the
//! table is dropped by a map lookup (a flood of made-up ids touches
//! nothing and costs no signature check), then its key must be the one
//! the host forked with, its signature good, its timestamp fresh and its
//! sequence number above the last (a captured heartbeat played again is
//! stale news). Nobody else can enter the table, so nobody can push a
//! host out of it: its size is the number of hosts with workers here.
//! The agent listens only to the heartbeat subjects of the hosts in the
//! table (one subscription each, made when a host enters), so that the
//! server, not the agent, sets aside everyone else's.

use super::{Rejected, Signed, Trust};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// A host with workers on this agent.
struct Parent {
    key: String,
    /// Sequence number of its newest message.
    seq: u64,
    /// When its last good heartbeat (or its fork request) came.
    at: Instant,
    /// Its sessions here.
    sessions: usize,
}

/// The hosts an agent's workers belong to, by host id.
#[derive(Default)]
pub(crate) struct Parents {
    hosts: Mutex<HashMap<String, Parent>>,
}

impl Parents {
    fn hosts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Parent>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Host `id` (key `key`) has a new session here, asked for in a
    /// message of sequence number `seq`. Whether the host is new here.
    pub fn admit(&self, id: &str, key: &str, seq: u64) -> Result<bool, Rejected> {
        let mut hosts = self.hosts();
        match hosts.get_mut(id) {
            // The same host id with another key is not that host.
            Some(p) if p.key != key => Err(Rejected::Untrusted),
            Some(p) => {
                p.sessions += 1;
                p.seq = p.seq.max(seq);
                Ok(false)
            }
            None => {
                hosts.insert(
                    id.to_owned(),
                    Parent {
                        key: key.to_owned(),
                        seq,
                        at: Instant::now(),
                        sessions: 1,
                    },
                );
                Ok(true)
            }
        }
    }

    /// A session of host `id` ended. Whether that was its last here.
    pub fn release(&self, id: &str) -> bool {
        let mut hosts = self.hosts();
        let Some(p) = hosts.get_mut(id) else {
            return false;
        };
        p.sessions -= 1;
        if p.sessions > 0 {
            return false;
        }
        hosts.remove(id);
        true
    }

    /// When host `id` was last heard from, if it is in the table.
    pub fn heard(&self, id: &str) -> Option<Instant> {
        self.hosts().get(id).map(|p| p.at)
    }

    /// A heartbeat on `subject`, from host `id` claiming key `key`.
    pub fn beat(
        &self,
        trust: &Trust,
        subject: &str,
        (key, id): (&str, &str),
        payload: &[u8],
    ) -> Result<(), Rejected> {
        let claimed = {
            let hosts = self.hosts();
            let p = hosts.get(id).ok_or(Rejected::Unknown)?;
            if p.key != key {
                return Err(Rejected::Untrusted);
            }
            p.seq
        };
        let m = Signed::parse(payload)?;
        if m.key != key {
            return Err(Rejected::Untrusted);
        }
        if m.seq <= claimed {
            return Err(Rejected::Replayed);
        }
        trust.check(subject, &m)?;
        let mut hosts = self.hosts();
        let p = hosts.get_mut(id).ok_or(Rejected::Unknown)?;
        if m.seq <= p.seq {
            return Err(Rejected::Replayed);
        }
        p.seq = m.seq;
        p.at = Instant::now();
        Ok(())
    }

    /// Hosts in the table.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.hosts().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Identity;

    #[test]
    fn only_an_admitted_hosts_own_newer_heartbeats_count() {
        let host = Identity::generate();
        let stranger = Identity::generate();
        let trust = Trust::keys([host.public_key(), stranger.public_key()]).unwrap();
        let parents = Parents::default();
        let subject = "wasmproc.parent.K.h1";
        let first = host.sign(subject, &[]);
        let key = host.public_key();
        // Before any fork: unknown, whoever signs.
        assert_eq!(
            parents.beat(&trust, subject, (key, "h1"), &first),
            Err(Rejected::Unknown)
        );
        assert!(parents.admit("h1", key, 0).unwrap());
        let at = parents.heard("h1").unwrap();
        let second = host.sign(subject, &[]);
        assert_eq!(parents.beat(&trust, subject, (key, "h1"), &second), Ok(()));
        assert!(parents.heard("h1").unwrap() >= at);
        // Played again, or an older one: replays.
        assert_eq!(
            parents.beat(&trust, subject, (key, "h1"), &second),
            Err(Rejected::Replayed)
        );
        assert_eq!(
            parents.beat(&trust, subject, (key, "h1"), &first),
            Err(Rejected::Replayed)
        );
        // Another trusted key cannot beat for h1.
        let forged = stranger.sign(subject, &[]);
        assert_eq!(
            parents.beat(&trust, subject, (stranger.public_key(), "h1"), &forged),
            Err(Rejected::Untrusted)
        );
        assert_eq!(
            parents.beat(&trust, subject, (key, "h1"), &forged),
            Err(Rejected::Untrusted)
        );
        // A heartbeat for another subject is not this one's.
        let elsewhere = host.sign("wasmproc.parent.K.h2", &[]);
        assert_eq!(
            parents.beat(&trust, subject, (key, "h1"), &elsewhere),
            Err(Rejected::BadSignature)
        );
    }

    #[test]
    fn a_flood_of_ids_never_enters_the_table_and_the_last_session_frees_its_host() {
        let host = Identity::generate();
        let trust = Trust::keys([host.public_key()]).unwrap();
        let parents = Parents::default();
        assert!(parents.admit("real", host.public_key(), 0).unwrap());
        assert!(!parents.admit("real", host.public_key(), 0).unwrap());
        for i in 0..10_000 {
            let id = format!("fake{i}");
            let beat = host.sign(&format!("wasmproc.parent.K.{id}"), &[]);
            assert_eq!(
                parents.beat(&trust, "x", (host.public_key(), &id), &beat),
                Err(Rejected::Unknown)
            );
        }
        assert_eq!(parents.len(), 1);
        assert!(parents.heard("real").is_some());
        assert!(!parents.release("real"));
        assert!(parents.heard("real").is_some());
        assert!(parents.release("real"));
        assert!(parents.heard("real").is_none());
    }
}
