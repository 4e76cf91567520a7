//! The cache's unit tests: entries and the key written, read back and
//! refused (mode, links, symlinks, tag, size), caches refused for where they
//! are, and grants refused for reaching the cache by any name. They reach
//! into [`ComponentCache`](super::ComponentCache)'s private methods, so
//! they live in the module, not in `tests/`.

use super::*;
use std::os::unix::fs::PermissionsExt as _;

fn cache() -> (tempfile::TempDir, ComponentCache) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = ComponentCache::new(tmp.path().join("cache")).unwrap();
    (tmp, cache)
}

const KEY_A: [u8; 32] = [1; 32];
const KEY_B: [u8; 32] = [2; 32];

fn stored(cache: &ComponentCache, key: &[u8; 32], code: &[u8]) -> PathBuf {
    let name = entry_name(key);
    cache.store(&name, key, code).unwrap();
    cache.entry_path(&name)
}

/// The code of the entry for `key`, if it verifies.
fn verdict(cache: &ComponentCache, key: &[u8; 32]) -> Result<Option<Vec<u8>>> {
    let Some(entry) = cache.read_verified(&entry_name(key), key)? else {
        return Ok(None);
    };
    Ok(Some(crate::sys::with_entry_mapped(
        entry.fd.as_fd(),
        entry.code_len,
        <[u8]>::to_vec,
    )?))
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn an_entry_written_by_the_cache_reads_back_verified() {
    let (_tmp, cache) = cache();
    let path = stored(&cache, &KEY_A, b"code");
    let bytes = verdict(&cache, &KEY_A).unwrap().unwrap();
    assert_eq!(bytes, b"code");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert!(verdict(&cache, &KEY_B).unwrap().is_none(), "no entry");
}

#[test]
fn the_cache_makes_a_0600_key_once_and_keeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let first = ComponentCache::new(&dir).unwrap();
    let meta = std::fs::symlink_metadata(dir.join(KEY_FILE)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(meta.len(), 32);
    let second = ComponentCache::new(&dir).unwrap();
    assert_eq!(first.key, second.key);
    let path = stored(&first, &KEY_A, b"code");
    assert!(verdict(&second, &KEY_A).unwrap().is_some());
    assert!(path.starts_with(std::fs::canonicalize(&dir).unwrap().join(ENTRIES)));
}

#[test]
fn an_entry_of_another_mode_is_refused() {
    let (_tmp, cache) = cache();
    let path = stored(&cache, &KEY_A, b"code");
    set_mode(&path, 0o644);
    let e = verdict(&cache, &KEY_A).unwrap_err();
    assert!(format!("{e}").contains("mode is 0644"), "{e}");
}

#[test]
fn an_entry_with_a_second_link_is_refused() {
    let (tmp, cache) = cache();
    let path = stored(&cache, &KEY_A, b"code");
    std::fs::hard_link(&path, tmp.path().join("elsewhere")).unwrap();
    let e = verdict(&cache, &KEY_A).unwrap_err();
    assert!(format!("{e}").contains("2 links"), "{e}");
}

#[test]
fn an_entry_that_is_a_symlink_is_refused_even_to_a_valid_entry() {
    let (_tmp, cache) = cache();
    let real = stored(&cache, &KEY_A, b"code");
    let name = entry_name(&KEY_B);
    std::os::unix::fs::symlink(&real, cache.entry_path(&name)).unwrap();
    let e = verdict(&cache, &KEY_B).unwrap_err();
    assert!(format!("{e}").contains("symbolic link"), "{e}");
}

#[test]
fn an_entry_with_altered_code_fails_its_mac() {
    let (_tmp, cache) = cache();
    let path = stored(&cache, &KEY_A, b"code");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let e = verdict(&cache, &KEY_A).unwrap_err();
    assert!(format!("{e}").contains("tag does not match"), "{e}");
}

#[test]
fn an_entry_copied_over_another_name_fails_its_mac() {
    let (_tmp, cache) = cache();
    let a = stored(&cache, &KEY_A, b"code of A");
    let b = stored(&cache, &KEY_B, b"code of B");
    std::fs::copy(&a, &b).unwrap();
    let e = verdict(&cache, &KEY_B).unwrap_err();
    assert!(format!("{e}").contains("tag does not match"), "{e}");
}

#[test]
fn an_entry_made_under_another_key_fails_its_mac() {
    let tmp = tempfile::tempdir().unwrap();
    let (_other_tmp, other) = cache();
    let cache = ComponentCache::new(tmp.path().join("cache")).unwrap();
    let theirs = stored(&other, &KEY_A, b"code");
    std::fs::copy(&theirs, cache.entry_path(&entry_name(&KEY_A))).unwrap();
    assert!(verdict(&cache, &KEY_A).is_err());
}

#[test]
fn a_truncated_entry_fails() {
    let (_tmp, cache) = cache();
    let path = stored(&cache, &KEY_A, b"code");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(20).unwrap();
    assert!(verdict(&cache, &KEY_A).is_err());
}

#[test]
fn a_bad_entry_is_replaced_by_the_next_store() {
    let (_tmp, cache) = cache();
    let path = stored(&cache, &KEY_A, b"code");
    set_mode(&path, 0o666);
    assert!(verdict(&cache, &KEY_A).is_err());
    stored(&cache, &KEY_A, b"code");
    assert!(verdict(&cache, &KEY_A).unwrap().is_some());
}

#[test]
fn a_key_of_another_mode_or_size_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    ComponentCache::new(&dir).unwrap();
    set_mode(&dir.join(KEY_FILE), 0o644);
    let e = ComponentCache::new(&dir).unwrap_err();
    assert!(format!("{e:#}").contains("mode is 0644"), "{e:#}");
    std::fs::remove_file(dir.join(KEY_FILE)).unwrap();
    std::fs::write(dir.join(KEY_FILE), b"short").unwrap();
    set_mode(&dir.join(KEY_FILE), 0o600);
    let e = ComponentCache::new(&dir).unwrap_err();
    assert!(format!("{e:#}").contains("not 32"), "{e:#}");
}

#[test]
fn a_key_that_is_a_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    ComponentCache::new(&dir).unwrap();
    std::fs::rename(dir.join(KEY_FILE), tmp.path().join("mine")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("mine"), dir.join(KEY_FILE)).unwrap();
    let e = ComponentCache::new(&dir).unwrap_err();
    assert!(format!("{e:#}").contains("symbolic link"), "{e:#}");
}

#[test]
fn a_cache_writable_by_others_or_below_such_a_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    set_mode(&open, 0o777);
    let e = ComponentCache::new(open.join("cache")).unwrap_err();
    assert!(format!("{e:#}").contains("others may write"), "{e:#}");
    // Sticky, as /tmp: others cannot rename what is ours.
    set_mode(&open, 0o1777);
    ComponentCache::new(open.join("cache")).unwrap();
    let leaf = tmp.path().join("leaf");
    std::fs::create_dir(&leaf).unwrap();
    set_mode(&leaf, 0o770);
    let e = ComponentCache::new(&leaf).unwrap_err();
    assert!(
        format!("{e:#}").contains("not be writable by others"),
        "{e:#}"
    );
}

#[test]
fn a_cache_below_another_users_directory_is_refused() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to give a directory away");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(12345), Some(12345)).unwrap();
    let e = ComponentCache::new(theirs.join("cache")).unwrap_err();
    assert!(format!("{e:#}").contains("belongs to uid 12345"), "{e:#}");
}

#[test]
fn grants_containing_or_inside_the_cache_are_refused_and_others_accepted() {
    let (tmp, cache) = cache();
    let base = tmp.path();
    std::fs::create_dir(base.join("beside")).unwrap();
    std::os::unix::fs::symlink(base, base.join("beside/link")).unwrap();
    for grant in [
        base.to_path_buf(),
        base.join("cache"),
        base.join("beside/link"),
        PathBuf::from("/"),
    ] {
        let e = cache.check_grant(&grant).unwrap_err().to_string();
        assert!(e.contains("contains the compiled-component cache"), "{e}");
        assert!(e.contains(&grant.display().to_string()), "{e}");
        assert!(e.contains(&cache.dir().display().to_string()), "{e}");
    }
    let e = cache
        .check_grant(&base.join("cache/entries"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lies inside the compiled-component cache"),
        "{e}"
    );
    cache.check_grant(&base.join("beside")).unwrap();
    // Without an instance, and for a cache not made yet.
    let guard = |dir: &Path| CacheGuard::at(dir).unwrap();
    guard(&base.join("cache")).check(base).unwrap_err();
    let later = guard(&base.join("later/cache"));
    let e = later.check(base).unwrap_err().to_string();
    assert!(
        e.contains("where the compiled-component cache would be made"),
        "{e}"
    );
    later.check(&base.join("beside")).unwrap();
}

#[test]
fn a_grant_holding_a_symlink_on_the_way_to_the_cache_is_refused() {
    // home/.cache -> elsewhere/cache: home does not contain the resolved
    // cache, but it holds the link a guest could replace.
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let (home, elsewhere) = (base.join("home"), base.join("elsewhere"));
    std::fs::create_dir_all(elsewhere.join("cache")).unwrap();
    std::fs::create_dir_all(home.join("work")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("cache"), home.join(".cache")).unwrap();
    let cache = ComponentCache::new(home.join(".cache/wasmproc/components")).unwrap();
    let e = cache.check_grant(&home).unwrap_err().to_string();
    assert!(
        e.contains("a step on the path to the compiled-component cache"),
        "{e}"
    );
    assert!(e.contains(&home.display().to_string()), "{e}");
    // The link's target and what lies beyond are the cache's ancestors.
    for grant in [elsewhere.join("cache"), elsewhere.clone()] {
        let e = cache.check_grant(&grant).unwrap_err().to_string();
        assert!(e.contains("contains the compiled-component cache"), "{e}");
    }
    // Beside every step: accepted.
    cache.check_grant(&home.join("work")).unwrap();
}

#[test]
fn a_relative_link_with_dot_dot_on_the_way_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    std::fs::create_dir_all(base.join("a/b")).unwrap();
    std::fs::create_dir_all(base.join("real")).unwrap();
    std::os::unix::fs::symlink("../../real", base.join("a/b/link")).unwrap();
    let guard = CacheGuard::at(&base.join("a/b/link/cache")).unwrap();
    // Where it would be made is `real`; the link lives in `a/b`.
    guard.check(&base.join("real")).unwrap_err();
    guard.check(&base.join("a/b")).unwrap_err();
    guard.check(&base.join("a")).unwrap_err();
}

#[test]
fn a_loop_of_links_fails_the_walk() {
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("loop", tmp.path().join("loop")).unwrap();
    let e = CacheGuard::at(&tmp.path().join("loop/cache")).unwrap_err();
    assert!(format!("{e:#}").contains("symbolic links"), "{e:#}");
}
