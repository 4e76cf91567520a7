//! Faults the machine throws at a host, injected for real (issue 28): a
//! full or read-only disk under the component cache, and a host out of
//! file descriptors. In each: the guest gets an error value or runs as it
//! would, the operator is told why, the host ends normally, and nothing is
//! left half-written or running.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Mounts a tmpfs of `size` at `dir` (unmounted when the guard drops).
struct Mounted(std::path::PathBuf);

impl Mounted {
    fn tmpfs(dir: &Path, options: &str) -> Mounted {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                options,
                "wasmproc-fault",
                dir.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(status.success(), "mount -o {options} {}", dir.display());
        Mounted(dir.to_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `wasmproc run hello.wasm` with its component cache at `cache`.
fn hello_with_cache(cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args(["run", guest("hello").to_str().unwrap()])
        .env("WASMPROC_CACHE", cache)
        .env("WASMPROC_LOG", "warn")
        .output()
        .unwrap()
}

/// Every file below `dir`.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            match path.is_dir() {
                true => todo.push(path),
                false => found.push(path),
            }
        }
    }
    found
}

fn root() -> bool {
    rustix::process::geteuid().is_root()
}

/// hello.wasm run with its cache on a tmpfs mounted with `options` (kept
/// mounted while the guard lives): it must run and print all the same.
/// The mount, the cache's path, and the run's stderr.
fn hello_on_a_tmpfs(options: &str) -> (tempfile::TempDir, Mounted, std::path::PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let mounted = Mounted::tmpfs(tmp.path(), options);
    let cache = tmp.path().join("cache");
    let out = hello_with_cache(&cache);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!text(&out.stdout).is_empty(), "the guest printed nothing");
    (tmp, mounted, cache, stderr)
}

#[test]
fn a_cache_on_a_full_disk_still_runs_the_guest_and_leaves_no_half_written_entry() {
    if !root() {
        println!("note: mounting a small file system needs root");
        return;
    }
    // Room for the cache's key and directories, not for a compiled entry.
    let (_tmp, full, cache, stderr) = hello_on_a_tmpfs("size=64k,mode=0700");
    assert!(
        stderr.contains("cannot write a compiled-component cache entry")
            && stderr.contains("No space left on device"),
        "{stderr}"
    );
    let entries: Vec<_> = files(&cache.join("entries"));
    assert!(entries.is_empty(), "left behind: {entries:?}");
    // Once there is room, the next run writes the entry, whole.
    drop(full);
    let out = hello_with_cache(&cache);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entries = files(&cache.join("entries"));
    assert_eq!(entries.len(), 1, "{entries:?}");
    let out = hello_with_cache(&cache);
    assert!(
        !text(&out.stderr).contains("failed verification"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_cache_on_a_read_only_disk_still_runs_the_guest_and_says_why() {
    if !root() {
        println!("note: mounting a read-only file system needs root");
        return;
    }
    let (_tmp, _ro, cache, stderr) = hello_on_a_tmpfs("ro,size=64k");
    assert!(
        stderr.contains(&cache.display().to_string()) && stderr.contains("Read-only file system"),
        "{stderr}"
    );
}

/// A host whose descriptors run out (a low `RLIMIT_NOFILE`) while its
/// guest starts child after child: each start past the limit is an error
/// value for the guest, naming the cause; the host stays healthy, ends
/// normally, and leaves no child running.
#[test]
fn a_host_out_of_descriptors_gives_the_guest_errors_and_stays_healthy() {
    let sleep = "/bin/sleep";
    let out = Command::new("prlimit")
        .arg("--nofile=96:96")
        .arg(env!("CARGO_BIN_EXE_wasmproc"))
        .args(["run", "--max-children", "500", "--allow-run", sleep])
        .arg(guest("spawn-probe"))
        .args(["limit", "300", "sleep", "30"])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    let spawned = stdout.lines().filter(|l| *l == "spawned").count();
    let errors: Vec<&str> = stdout.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(spawned > 0 && !errors.is_empty(), "{stdout}\n{stderr}");
    assert!(
        errors.iter().all(|e| e.contains("Too many open files")),
        "{errors:?}"
    );
    assert!(
        !stderr.contains("trapped") && !stderr.contains("panicked"),
        "{stderr}"
    );
    // The guest killed what it started; the host reaped it all.
    let left = Command::new("pgrep")
        .args(["-f", "^/bin/sleep 30$"])
        .output()
        .unwrap();
    assert!(
        text(&left.stdout).trim().is_empty(),
        "left running: {}",
        text(&left.stdout)
    );
}
