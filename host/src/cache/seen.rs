//! Verifications remembered: what makes a warm start of a big component
//! cost what wasmtime's own load of a `.cwasm` costs (issue 25).
//!
//! A full check of a start hashes the component's source (for its cache
//! key) and the whole entry (for its tag): 18 and 35 MiB for the Python
//! guest. Once both passed, the cache writes a record, `seen/NAME`, of
//! what it checked: the source file's identity, the cache key it hashed
//! to, and the entry file's identity, tagged under the host's key. The
//! next start of the same file only compares identities (two `fstat`s and
//! a 150-byte read) and maps the entry.
//!
//! A file's identity is its device, inode, size, modification time and
//! change time. Any write, truncation, `chmod` or `utime` moves the change
//! time to now, which no unprivileged process can set back; a file
//! removed and made again is another inode, or a later change time. A
//! record is only written for a source whose change time is two seconds
//! old or more: a write in the same clock tick as the check could
//! otherwise leave the change time as the record has it (git's "racy
//! clean" case).
//!
//! The records live in the cache's private directory, where no grant
//! reaches (the same walls as the entries' own), and each is tagged under
//! the host's key, so a record copied, altered or made elsewhere is
//! ignored and the start checks in full. Entries are never written in
//! place: a new entry is a new inode, which no record names.

use super::KEY_LEN;
use super::files::{check_private_file, create_private_file, read_private_file, temp_name};
use rustix::fs::{AtFlags, Mode, OFlags, Stat};
use std::io::Write as _;
use std::os::fd::OwnedFd;

/// The records' subdirectory of the cache directory.
pub(super) const SEEN: &str = "seen";
/// What a record's tag authenticates, before the record.
const DOMAIN: &[u8] = b"wasmproc component cache seen v1\0";
/// A file's identity: device, inode, size, modification and change times
/// (seconds, nanoseconds).
type FileId = [i64; 7];
const ID_LEN: usize = 7 * 8;
const RECORD_LEN: usize = ID_LEN + 32 + ID_LEN;
const TAG_LEN: usize = 32;
/// How old a source's change time must be for its record to be written.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

/// The identity of the file whose status is `st`.
pub(super) fn id(st: &Stat) -> FileId {
    [
        st.st_dev as i64,
        st.st_ino as i64,
        st.st_size,
        st.st_mtime,
        st.st_mtime_nsec as i64,
        st.st_ctime,
        st.st_ctime_nsec as i64,
    ]
}

/// A remembered verification: the source of that identity hashed to
/// `cache_key`, whose entry, of that identity, verified.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Seen {
    pub source: FileId,
    pub cache_key: [u8; 32],
    pub entry: FileId,
}

/// The name of the record for the source with status `st`, loaded by an
/// engine of `engine_hash`.
pub(super) fn record_name(st: &Stat, engine_hash: u64) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(st.st_dev as i64).to_le_bytes());
    hasher.update(&(st.st_ino as i64).to_le_bytes());
    hasher.update(&engine_hash.to_le_bytes());
    crate::hex::hex(&hasher.finalize().as_bytes()[..16])
}

impl Seen {
    fn body(&self) -> Vec<u8> {
        let ids = self.source.iter().chain(&self.entry);
        let mut body: Vec<u8> = ids.flat_map(|n| n.to_le_bytes()).collect();
        body.splice(ID_LEN..ID_LEN, self.cache_key);
        body
    }

    fn tag(body: &[u8], key: &[u8; KEY_LEN]) -> blake3::Hash {
        let mut mac = blake3::Hasher::new_keyed(key);
        mac.update(DOMAIN);
        mac.update(body);
        mac.finalize()
    }

    /// The record as written: its body, then its tag under `key`.
    fn encode(&self, key: &[u8; KEY_LEN]) -> Vec<u8> {
        let body = self.body();
        let tag = Seen::tag(&body, key);
        [&body[..], tag.as_bytes()].concat()
    }

    /// The record in `bytes`, if its tag under `key` matches.
    fn decode(bytes: &[u8], key: &[u8; KEY_LEN]) -> Option<Seen> {
        if bytes.len() != RECORD_LEN + TAG_LEN {
            return None;
        }
        let (body, tag) = bytes.split_at(RECORD_LEN);
        // (`Hash`'s comparison takes constant time.)
        if Seen::tag(body, key) != blake3::Hash::from_slice(tag).ok()? {
            return None;
        }
        let ids = |at: usize| -> Option<FileId> {
            let mut id = [0i64; 7];
            for (i, n) in id.iter_mut().enumerate() {
                *n = i64::from_le_bytes(body.get(at + i * 8..at + i * 8 + 8)?.try_into().ok()?);
            }
            Some(id)
        };
        Some(Seen {
            source: ids(0)?,
            cache_key: body[ID_LEN..ID_LEN + 32].try_into().ok()?,
            entry: ids(ID_LEN + 32)?,
        })
    }
}

/// The records of one cache: its `seen` directory and the host key.
pub(super) struct Records<'a> {
    pub dir: &'a OwnedFd,
    pub key: &'a [u8; KEY_LEN],
}

impl Records<'_> {
    /// The record named `name`, if there is one that passes the private
    /// file checks and its tag.
    pub fn read(&self, name: &str) -> Option<Seen> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = rustix::fs::openat(self.dir, name, flags, Mode::empty()).ok()?;
        let bytes = read_private_file(fd, Some(RECORD_LEN + TAG_LEN)).ok()?;
        Seen::decode(&bytes, self.key)
    }

    /// Writes `seen` as the record `name`, unless its source changed too
    /// recently to be told from a change in the same clock tick. Failing to
    /// write only costs the next start a full check.
    pub fn write(&self, name: &str, seen: &Seen) {
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(seen.source[5].max(0) as u64, seen.source[6] as u32);
        // (A change time in the future is never settled.)
        if !changed.elapsed().is_ok_and(|age| age >= SETTLED) {
            return;
        }
        let temp = temp_name(name);
        let written = create_private_file(self.dir, &temp)
            .and_then(|mut file| Ok(file.write_all(&seen.encode(self.key))?))
            .and_then(|()| Ok(rustix::fs::renameat(self.dir, &temp, self.dir, name)?));
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(self.dir, &temp, AtFlags::empty());
            tracing::debug!(error = %e, "cannot remember a cache verification");
        }
    }
}

/// The open entry `name` of the entries directory `entries` and its
/// status, if it passes the private file checks and is the very file
/// `seen` names.
pub(super) fn same_entry(entries: &OwnedFd, name: &str, seen: &Seen) -> Option<(OwnedFd, Stat)> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = rustix::fs::openat(entries, name, flags, Mode::empty()).ok()?;
    let st = check_private_file(&fd, None).ok()?;
    (id(&st) == seen.entry).then_some((fd, st))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen() -> Seen {
        Seen {
            source: [1, 2, 3, 4, 5, 6, 7],
            cache_key: [9; 32],
            entry: [11, 12, 13, 14, 15, 16, 17],
        }
    }

    #[test]
    fn a_record_reads_back_under_its_key_only() {
        let record = seen().encode(&[1; 32]);
        assert_eq!(Seen::decode(&record, &[1; 32]), Some(seen()));
        assert_eq!(Seen::decode(&record, &[2; 32]), None);
    }

    #[test]
    fn an_altered_record_is_ignored() {
        let mut record = seen().encode(&[1; 32]);
        for i in [0, ID_LEN, RECORD_LEN - 1, RECORD_LEN] {
            record[i] ^= 1;
            assert_eq!(Seen::decode(&record, &[1; 32]), None, "byte {i}");
            record[i] ^= 1;
        }
        assert_eq!(Seen::decode(&record[1..], &[1; 32]), None);
    }
}
