//! Loading compiled components, which wasmtime runs as machine code: from
//! a verified cache entry ([`deserialize_component`]) or from a sealed
//! memfd the parent host filled ([`deserialize_sealed`]). Unsafe because
//! the bytes must be what a compatible engine produced, unaltered; the
//! `SAFETY` comments say why they are.

use std::os::fd::BorrowedFd;

/// Loads a compiled component from `code`, the bytes of a cache entry that
/// [`ComponentCache`](crate::cache::ComponentCache) verified. wasmtime
/// copies them into memory of its own, so nothing done to the file later
/// reaches running code.
pub(crate) fn deserialize_component(
    engine: &wasmtime::Engine,
    code: &[u8],
) -> wasmtime::Result<wasmtime::component::Component> {
    // SAFETY: `Component::deserialize` runs `code` as machine code, so it
    // must be what `Component::serialize` (or `Engine::precompile_component`)
    // of a compatible engine produced, unaltered. The cache passes only the
    // bytes of an entry that it read whole into private memory after opening
    // it with O_NOFOLLOW and checking it is a regular 0600 file of this user
    // with one link, and whose HMAC-SHA256 under the host's secret key (a
    // 0600 file of this user, never in a grant) matches over these very
    // bytes and the entry's cache key, which names the source's SHA-256 and
    // the engine's compatibility hash: only this host's cache wrote them,
    // for this component. wasmtime itself checks the engine version and
    // settings in the header, and copies the bytes before using them.
    unsafe { wasmtime::component::Component::deserialize(engine, code) }
}

/// Loads the compiled component in `code`, a memfd sealed against
/// writing, growing and shrinking (checked) that the parent host filled
/// (see `crate::code`). The memfd is mapped read-only and wasmtime copies
/// the code into memory of its own.
pub(crate) fn deserialize_sealed(
    engine: &wasmtime::Engine,
    code: BorrowedFd<'_>,
) -> anyhow::Result<wasmtime::component::Component> {
    use rustix::fs::SealFlags;
    use rustix::mm::{MapFlags, ProtFlags};
    let needed = SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW;
    if !rustix::fs::fcntl_get_seals(code)?.contains(needed) {
        anyhow::bail!("the code's memfd is not sealed against change");
    }
    let len = usize::try_from(rustix::fs::fstat(code)?.st_size)?;
    if len == 0 {
        anyhow::bail!("the code's memfd is empty");
    }
    // SAFETY: a fresh private, read-only mapping of `len` bytes of `code`
    // at an address the kernel picks; it aliases no Rust object.
    let map = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ,
            MapFlags::PRIVATE,
            code,
            0,
        )?
    };
    // SAFETY: the mapping above is `len` readable bytes, live until the
    // `munmap` below, and the memfd is sealed against writes and
    // shrinking, so the bytes cannot change or vanish (no SIGBUS) while
    // the slice lives.
    let bytes = unsafe { std::slice::from_raw_parts(map.cast::<u8>(), len) };
    // SAFETY: `Component::deserialize` runs `bytes` as machine code, so it
    // must be what `Engine::precompile_component` or `Component::serialize`
    // of a compatible engine produced, unaltered. The parent host put in
    // this memfd only code it compiled itself or read from an entry of its
    // cache that passed every check of `ComponentCache` (owner, mode, one
    // link, HMAC under the host's key), then sealed it; no worker or guest
    // ever writes it. wasmtime checks the engine's version and settings in
    // the code's header, and copies the bytes before using them.
    let component = unsafe { wasmtime::component::Component::deserialize(engine, bytes) };
    // SAFETY: `map` is the mapping made above, of `len` bytes; `bytes` is
    // not used after this.
    unsafe { rustix::mm::munmap(map, len)? };
    Ok(component?)
}
