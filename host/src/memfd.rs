//! Sealed memfds: compiled code that cannot change under whoever holds it.
//!
//! A memfd sealed against writing, growing and shrinking (and against new
//! seals) holds the same bytes for as long as it lives, whoever else holds
//! it: so wasmtime may map it rather than copy it, and workers may be
//! handed it. The cache puts a verified entry's code in one (a copy made
//! in the kernel, with no page faults of ours), so that neither a later
//! write to the entry file nor its truncation can change or fault code
//! that runs; the host hands workers the same descriptor.

use anyhow::{Result, bail};
use rustix::fs::{MemfdFlags, SealFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The seals every code memfd carries.
pub(crate) const SEALS: SealFlags = SealFlags::WRITE
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// A new, empty memfd that can be sealed.
fn new_memfd() -> Result<OwnedFd> {
    Ok(rustix::fs::memfd_create(
        "wasmproc-code",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?)
}

/// A sealed memfd holding `bytes`.
pub(crate) fn sealed(bytes: &[u8]) -> Result<OwnedFd> {
    let mut file = std::fs::File::from(new_memfd()?);
    std::io::Write::write_all(&mut file, bytes)?;
    let fd = OwnedFd::from(file);
    rustix::fs::fcntl_add_seals(&fd, SEALS)?;
    Ok(fd)
}

/// A sealed memfd holding the first `len` bytes of the file `from`,
/// copied by the kernel (`sendfile`).
pub(crate) fn sealed_copy(from: BorrowedFd<'_>, len: usize) -> Result<OwnedFd> {
    let fd = new_memfd()?;
    let mut offset = 0u64;
    while (offset as usize) < len {
        let left = len - offset as usize;
        let sent = rustix::fs::sendfile(&fd, from, Some(&mut offset), left)?;
        if sent == 0 {
            bail!("the file ended after {offset} of {len} bytes");
        }
    }
    rustix::fs::fcntl_add_seals(&fd, SEALS)?;
    Ok(fd)
}

/// Whether `fd` carries every seal of [`SEALS`] but the seal seal (a
/// memfd another process sealed need not have sealed its seals).
pub(crate) fn is_sealed(fd: impl AsFd) -> bool {
    let needed = SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW;
    rustix::fs::fcntl_get_seals(fd).is_ok_and(|seals| seals.contains(needed))
}
