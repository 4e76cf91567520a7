//! Loading compiled components, which wasmtime runs as machine code, from
//! sealed memfds: mapped, for a verified cache entry the host copied into
//! one ([`deserialize_sealed_file`]), or copied, for the code a parent
//! host handed a worker ([`deserialize_sealed`]); and hashing a cache
//! entry where it lies ([`with_entry_mapped`]). Unsafe because
//! the bytes must be what a compatible engine produced, unaltered; the
//! `SAFETY` comments say why they are.

use std::os::fd::BorrowedFd;

/// Runs `f` on the first `len` bytes of `entry`, a cache entry that
/// [`ComponentCache`](crate::cache::ComponentCache) opened and checked (a
/// regular 0600 file of this user with one link, in the cache's private
/// directory), mapped private and read-only rather than copied: hashing a
/// 35 MiB entry from the page cache costs less than copying it.
pub(crate) fn with_entry_mapped<T>(
    entry: BorrowedFd<'_>,
    len: usize,
    f: impl FnOnce(&[u8]) -> T,
) -> std::io::Result<T> {
    // SAFETY: the file is at least `len` bytes long (the caller read its
    // size), and nothing shrinks or rewrites it while it is mapped: an
    // entry is only ever replaced by `rename` (a new file), never written
    // in place, and only this user, in a directory only it can enter,
    // could change it (the cache's checks).
    unsafe { with_mapped(entry, len, f) }
}

/// Runs `f` on the first `len` bytes of the file `fd`, mapped private and
/// read-only (empty if `len` is 0), then unmaps them.
///
/// # Safety
/// The file must hold at least `len` bytes, and they must not change or
/// shrink while `f` runs (a shrunk file faults the process, SIGBUS).
unsafe fn with_mapped<T>(
    fd: BorrowedFd<'_>,
    len: usize,
    f: impl FnOnce(&[u8]) -> T,
) -> std::io::Result<T> {
    use rustix::mm::{MapFlags, ProtFlags};
    if len == 0 {
        return Ok(f(&[]));
    }
    // SAFETY: a fresh private, read-only mapping of `len` bytes of `fd` at
    // an address the kernel picks; it aliases no Rust object.
    let map = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ,
            MapFlags::PRIVATE,
            fd,
            0,
        )?
    };
    // SAFETY: the mapping is `len` readable bytes, live until the `munmap`
    // below, which do not change or vanish meanwhile (the contract).
    let bytes = unsafe { std::slice::from_raw_parts(map.cast::<u8>(), len) };
    let result = f(bytes);
    // SAFETY: `map` is the mapping made above, of `len` bytes; `bytes` is
    // not used after this.
    unsafe { rustix::mm::munmap(map, len)? };
    Ok(result)
}

/// Loads the compiled component in `code`, a memfd sealed against
/// writing, growing and shrinking (checked) that holds a verified cache
/// entry's code, by mapping it as wasmtime maps its own `.cwasm` files: no
/// copy into the host's memory, and the component's memory images are
/// mapped from it too. Fails where the kernel refuses executable mappings
/// of memfds (`vm.memfd_noexec`); [`deserialize_sealed`] then copies.
pub(crate) fn deserialize_sealed_file(
    engine: &wasmtime::Engine,
    code: BorrowedFd<'_>,
) -> anyhow::Result<wasmtime::component::Component> {
    use std::os::fd::AsRawFd as _;
    if !crate::memfd::is_sealed(code) {
        anyhow::bail!("the code's memfd is not sealed against change");
    }
    // The very memfd, not a path that may name another file.
    let same = format!("/proc/self/fd/{}", code.as_raw_fd());
    // SAFETY: `Component::deserialize_file` maps the file and runs its
    // code for as long as the component lives, so it must be what a
    // compatible engine's `serialize` produced, unaltered, and stay so.
    // The cache copied into this memfd the code of an entry that passed
    // every check of `ComponentCache` (owner, mode, one link, the keyed
    // tag under the host's key, or a record of that check for the entry
    // file as it still is after the copy), then sealed it against
    // writing, growing and shrinking: no process can change it while it
    // is mapped. wasmtime checks the engine's version and settings in the
    // code's header.
    Ok(unsafe { wasmtime::component::Component::deserialize_file(engine, same)? })
}

/// Loads the compiled component in `code`, a memfd sealed against
/// writing, growing and shrinking (checked) that the parent host filled
/// (see `crate::code`). The memfd is mapped read-only and wasmtime copies
/// the code into memory of its own.
pub(crate) fn deserialize_sealed(
    engine: &wasmtime::Engine,
    code: BorrowedFd<'_>,
) -> anyhow::Result<wasmtime::component::Component> {
    if !crate::memfd::is_sealed(code) {
        anyhow::bail!("the code's memfd is not sealed against change");
    }
    let len = usize::try_from(rustix::fs::fstat(code)?.st_size)?;
    if len == 0 {
        anyhow::bail!("the code's memfd is empty");
    }
    let deserialize = |bytes: &[u8]| {
        // SAFETY: `Component::deserialize` runs `bytes` as machine code,
        // so it must be what `Engine::precompile_component` or
        // `Component::serialize` of a compatible engine produced,
        // unaltered. The parent host put in this memfd only code it
        // compiled itself or read from an entry of its cache that passed
        // every check of `ComponentCache` (owner, mode, one link, keyed
        // tag under the host's key), then sealed it; no worker or guest
        // ever writes it. wasmtime checks the engine's version and
        // settings in the code's header, and copies the bytes before
        // using them.
        unsafe { wasmtime::component::Component::deserialize(engine, bytes) }
    };
    // SAFETY: the memfd is `len` bytes and sealed against writes and
    // shrinking (checked above), so its bytes cannot change or vanish.
    Ok(unsafe { with_mapped(code, len, deserialize) }??)
}
