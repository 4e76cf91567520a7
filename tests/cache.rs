//! The compiled-component cache under attack (issue 12): every test uses a
//! cache of its own (`WASMPROC_CACHE` for the CLI) and tries what a guest,
//! a child or another party could do to it. Each ends with the host running
//! only code it compiled itself, or refusing the grant, and never crashing.
//!
//! The guests are the committed demo components (`guest-examples/prebuilt`):
//! `seed-spawn` spawns `PROGRAM 0..2` (its argument, default `support`) and
//! reports each child's output and exit; `seed-exec` runs `support i`
//! through a shell; `seed-fork` forks `support-worker` three times.

mod common;

use common::repo;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use wasmproc::{GuestExit, Runner};
use wasmproc_host::{ComponentCache, ProcessCtx};

/// The message of the warning a bad entry gets.
const BAD_ENTRY: &str = "failed verification";
/// What only seed-spawn prints (seed-exec prints `Child process exited
/// with exit code N`).
const SPAWN_EXIT: &str = "child process exited with code 0";

fn prebuilt(name: &str) -> PathBuf {
    repo().join(format!("guest-examples/prebuilt/{name}.wasm"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `wasmproc ARGS` with the component cache `cache`, logging warnings.
fn wasmproc(cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmproc"));
    cmd.args(args)
        .current_dir(repo())
        .env("WASMPROC_CACHE", cache)
        .env("WASMPROC_LOG", "wasmproc=warn,wasmproc_host=warn")
        .env("NO_COLOR", "1");
    cmd
}

fn output(mut cmd: Command) -> Output {
    cmd.output().expect("run wasmproc")
}

/// `wasmproc compile COMPONENTS...` into `cache`: the entry of each.
fn compile(cache: &Path, components: &[&Path]) -> Vec<PathBuf> {
    let mut args = vec!["compile"];
    args.extend(components.iter().map(|c| c.to_str().unwrap()));
    let out = output(wasmproc(cache, &args));
    assert!(out.status.success(), "compile: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let entries: Vec<PathBuf> = stdout
        .lines()
        .zip(components)
        .map(|(line, component)| {
            let (source, entry) = line.split_once(" -> ").expect("COMPONENT -> ENTRY");
            assert_eq!(source, component.to_str().unwrap());
            PathBuf::from(entry)
        })
        .collect();
    assert_eq!(entries.len(), components.len(), "{stdout}");
    entries
}

/// A program `name` in `dir` that prints `Child Process N started.`, sleeps
/// `seconds`, prints `Child Process N executed.` and runs `extra` first.
fn script(dir: &Path, name: &str, extra: &str, seconds: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n{extra}\necho \"Child Process $1 started.\"\nsleep {seconds}\necho \"Child Process $1 executed.\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs seed-spawn with `program` granted (and `flags`), expecting it to
/// succeed with each of the three children's output.
fn run_seed_spawn(cache: &Path, program: &Path, flags: &[&str]) -> Output {
    let mut args = vec!["run", "--allow-run", program.to_str().unwrap()];
    args.extend(flags);
    let seed = prebuilt("seed-spawn");
    let name = program.file_name().unwrap().to_str().unwrap();
    args.extend([seed.to_str().unwrap(), name]);
    let out = output(wasmproc(cache, &args));
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "seed-spawn: {out:?}\n{stdout}\n{}",
        text(&out.stderr)
    );
    for i in 0..3 {
        assert!(
            stdout.contains(&format!("Child Process {i} executed.")),
            "{stdout}"
        );
    }
    assert_eq!(stdout.matches(SPAWN_EXIT).count(), 3, "{stdout}");
    out
}

/// Asserts that `out` failed because a grant overlaps the cache, with a
/// message naming `grant` and `cache`, before the guest ran.
fn assert_refused(out: &Output, grant: &Path, cache: &Path, relation: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(text(&out.stdout), "", "the guest must not run");
    assert!(
        stderr.contains(&format!("refusing the directory grant {}", grant.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "it {relation} the compiled-component cache {}",
            std::fs::canonicalize(cache).unwrap().display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_grant_that_contains_the_cache_is_refused_naming_both_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(tmp.path()).unwrap();
    let cache = base.join("cache");
    let seed = prebuilt("seed-spawn");
    let seed = seed.to_str().unwrap();
    // The cache's parent, read-write and read-only, and the root.
    for (flag, grant) in [
        ("--dir", base.clone()),
        ("--dir-ro", base.clone()),
        ("--dir", cache.clone()),
        ("--dir-ro", PathBuf::from("/")),
    ] {
        let spec = format!("{}::/data", grant.display());
        let out = output(wasmproc(&cache, &["run", flag, &spec, seed]));
        assert_refused(&out, &grant, &cache, "contains");
    }
    // Through a symlink to the cache's parent.
    let elsewhere = tempfile::tempdir().unwrap();
    let link = elsewhere.path().join("link");
    std::os::unix::fs::symlink(&base, &link).unwrap();
    let out = output(wasmproc(
        &cache,
        &["run", "--dir", link.to_str().unwrap(), seed],
    ));
    assert_refused(&out, &link, &cache, "contains");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("(that is, {})", base.display())),
        "{stderr}"
    );
    // From a policy file.
    let policy = elsewhere.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[[dir]]\nhost = \"{}\"\nguest = \"/data\"\naccess = \"ro\"\n",
            base.display()
        ),
    )
    .unwrap();
    let out = output(wasmproc(
        &cache,
        &["run", "--policy", policy.to_str().unwrap(), seed],
    ));
    assert_refused(&out, &base, &cache, "contains");
}

#[test]
fn a_grant_inside_the_cache_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    compile(&cache, &[&prebuilt("seed-spawn")]);
    let entries = std::fs::canonicalize(&cache).unwrap().join("entries");
    let out = output(wasmproc(
        &cache,
        &[
            "run",
            "--dir",
            entries.to_str().unwrap(),
            prebuilt("seed-spawn").to_str().unwrap(),
        ],
    ));
    assert_refused(&out, &entries, &cache, "lies inside");
}

#[test]
fn a_cache_set_inside_a_granted_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(tmp.path()).unwrap().join("data");
    std::fs::create_dir(&data).unwrap();
    // WASMPROC_CACHE deep inside what the guest is granted.
    let cache = data.join("deep/cache");
    let spec = format!("{}::/data", data.display());
    let out = output(wasmproc(
        &cache,
        &[
            "run",
            "--dir",
            &spec,
            prebuilt("seed-spawn").to_str().unwrap(),
        ],
    ));
    assert_refused(&out, &data, &cache, "contains");
}

#[test]
fn a_grant_beside_the_cache_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let beside = tmp.path().join("beside");
    std::fs::create_dir(&beside).unwrap();
    let support = repo().join("guest-examples/support/support");
    let spec = format!("{}::/data", beside.display());
    let out = run_seed_spawn(&cache, &support, &["--dir", &spec]);
    assert!(!text(&out.stderr).contains(BAD_ENTRY));
}

#[test]
fn an_entry_rewritten_by_a_child_is_recompiled_and_the_component_runs_its_own_code() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let spawn = prebuilt("seed-spawn");
    let exec = prebuilt("seed-exec");
    let entries = compile(&cache, &[&spawn, &exec]);
    let (victim, other) = (&entries[0], &entries[1]);
    // A child that copies seed-exec's entry over seed-spawn's, as `cp`
    // does: same inode, owner and mode, other code. Without confinement
    // (Landlock would stop it) and with no grant near the cache (refused),
    // it has the host user's own access to the files.
    let bin = tempfile::tempdir().unwrap();
    let evil = script(
        bin.path(),
        "evil",
        &format!("cp {} {}", other.display(), victim.display()),
        "0",
    );
    run_seed_spawn(&cache, &evil, &["--no-confinement"]);
    assert_eq!(
        std::fs::read(victim).unwrap(),
        std::fs::read(other).unwrap(),
        "the child did rewrite the entry"
    );
    let inode = std::fs::metadata(victim).unwrap().ino();
    // That run remembered its verification of seed-spawn's entry (a start
    // compares file identities, not hashes, while that holds): the
    // rewrite must still be caught.
    let records = std::fs::read_dir(cache.join("seen")).unwrap().count();
    assert!(records > 0, "no verification was remembered");

    // The next run: a warning, a recompile, and seed-spawn's own code (with
    // seed-exec's code it would print `Child process exited with exit
    // code`, or be denied a shell).
    let support = repo().join("guest-examples/support/support");
    let out = run_seed_spawn(&cache, &support, &[]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains(BAD_ENTRY), "no warning: {stderr}");
    assert!(stderr.contains("tag does not match"), "{stderr}");
    assert!(!text(&out.stdout).contains("exit code"));
    // Rewritten: a new file, used without complaint from then on.
    assert_ne!(std::fs::metadata(victim).unwrap().ino(), inode);
    let out = run_seed_spawn(&cache, &support, &[]);
    assert!(
        !text(&out.stderr).contains(BAD_ENTRY),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_corrupted_entry_is_recompiled_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let entry = &compile(&cache, &[&prebuilt("seed-spawn")])[0];
    // Code bytes overwritten with int3, headers left as they were: run
    // as-is, this killed the host with SIGTRAP.
    let mut bytes = std::fs::read(entry).unwrap();
    let len = bytes.len();
    bytes[8192..len - 8192].fill(0xCC);
    std::fs::write(entry, &bytes).unwrap();
    let support = repo().join("guest-examples/support/support");
    let out = run_seed_spawn(&cache, &support, &[]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains(BAD_ENTRY), "{stderr}");
    assert_ne!(std::fs::read(entry).unwrap(), bytes, "rewritten");
}

#[test]
fn entries_with_a_second_link_or_loose_mode_are_recompiled() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let entry = &compile(&cache, &[&prebuilt("seed-spawn")])[0];
    let support = repo().join("guest-examples/support/support");
    // A hard link from a place someone else may write through.
    std::fs::hard_link(entry, tmp.path().join("alias")).unwrap();
    let out = run_seed_spawn(&cache, &support, &[]);
    assert!(
        text(&out.stderr).contains("2 links"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::metadata(entry).unwrap().nlink(), 1, "replaced");
    std::fs::set_permissions(entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = run_seed_spawn(&cache, &support, &[]);
    assert!(
        text(&out.stderr).contains("mode is 0666"),
        "{}",
        text(&out.stderr)
    );
    let mode = std::fs::metadata(entry).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600);
}

#[test]
fn an_entry_truncated_while_its_component_runs_does_not_crash_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let seed = prebuilt("seed-spawn");
    let entry = compile(&cache, &[&seed]).remove(0);
    let slow = script(tmp.path(), "slow", "", "1");
    let mut host = wasmproc(
        &cache,
        &[
            "run",
            "--allow-run",
            slow.to_str().unwrap(),
            seed.to_str().unwrap(),
            "slow",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Once a child has started, the guest is running from the entry.
    let mut stdout = BufReader::new(host.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("started.") {
        let mut line = String::new();
        assert_ne!(
            stdout.read_line(&mut line).unwrap(),
            0,
            "ended early: {seen}"
        );
        seen.push_str(&line);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&entry)
        .unwrap()
        .set_len(0)
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = host.wait_with_output().unwrap();
    // A mapped file would have died of SIGBUS here (status 135).
    assert_eq!(
        out.status.code(),
        Some(0),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
    seen.push_str(&rest);
    for i in 0..3 {
        assert!(
            seen.contains(&format!("Child Process {i} executed.")),
            "{seen}"
        );
    }
    assert_eq!(seen.matches(SPAWN_EXIT).count(), 3, "{seen}");
    // The next load finds the truncated entry, warns and recompiles.
    let support = repo().join("guest-examples/support/support");
    let out = run_seed_spawn(&cache, &support, &[]);
    assert!(
        text(&out.stderr).contains(BAD_ENTRY),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn forked_workers_verify_their_component_entry_too() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let worker = prebuilt("support-worker");
    let seed = prebuilt("seed-fork");
    let entries = compile(&cache, &[&worker, &seed]);
    // seed-fork's entry over the worker's: the three workers (racing)
    // must each refuse it and run support-worker's own code.
    std::fs::copy(&entries[1], &entries[0]).unwrap();
    let out = output(wasmproc(
        &cache,
        &[
            "run",
            "--allow-fork",
            worker.to_str().unwrap(),
            seed.to_str().unwrap(),
        ],
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "Child Process 0 executed.",
            "Child Process 1 executed.",
            "Child Process 2 executed.",
            SPAWN_EXIT,
            SPAWN_EXIT,
            SPAWN_EXIT,
        ]
    );
    assert_ne!(
        std::fs::read(&entries[0]).unwrap(),
        std::fs::read(&entries[1]).unwrap(),
        "a worker rewrote the entry"
    );
    // And now it verifies: compiling again leaves it as it is.
    let before = std::fs::metadata(&entries[0]).unwrap().ino();
    compile(&cache, &[&worker]);
    assert_eq!(std::fs::metadata(&entries[0]).unwrap().ino(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_loads_of_one_component_into_an_empty_cache_all_work() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = prebuilt("seed-spawn");
    // Threads of one host.
    let cache = ComponentCache::new(tmp.path().join("threads")).unwrap();
    let runner = Runner::with_cache(Some(cache)).unwrap();
    let barrier = std::sync::Barrier::new(6);
    let components: Vec<_> = std::thread::scope(|s| {
        let loads: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    runner.load(&seed)
                })
            })
            .collect();
        loads
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect()
    });
    let support = repo().join("guest-examples/support/support");
    for component in components.iter().take(2) {
        let mut process = ProcessCtx::builder();
        process.allow_program(&support).unwrap();
        let (exit, trap) = runner
            .run(
                component,
                wasmtime_wasi::WasiCtx::builder().build(),
                process.build(),
            )
            .await
            .unwrap();
        assert_eq!(exit, GuestExit::Code(0), "{trap:?}");
    }
    let entries: Vec<_> = std::fs::read_dir(tmp.path().join("threads/entries"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "one entry, no temporary left: {entries:?}"
    );

    // Separate hosts (and separate keys being made at once).
    let cache = tmp.path().join("processes");
    let hosts: Vec<_> = (0..4)
        .map(|_| {
            wasmproc(&cache, &["compile", seed.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let lines: Vec<String> = hosts
        .into_iter()
        .map(|h| {
            let out = h.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stdout)
        })
        .collect();
    assert!(lines.iter().all(|l| *l == lines[0]), "{lines:?}");
    let out = run_seed_spawn(&cache, &support, &[]);
    assert!(
        !text(&out.stderr).contains(BAD_ENTRY),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn wasmproc_compile_fills_the_cache_and_a_later_run_uses_the_entry_as_is() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let seed = prebuilt("seed-spawn");
    let entry = compile(&cache, &[&seed]).remove(0);
    assert!(entry.starts_with(std::fs::canonicalize(&cache).unwrap().join("entries")));
    let meta = std::fs::symlink_metadata(&entry).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let key = std::fs::symlink_metadata(cache.join("key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o7777, 0o600);
    assert_eq!(key.len(), 32);
    let bytes = std::fs::read(&entry).unwrap();

    let support = repo().join("guest-examples/support/support");
    let out = run_seed_spawn(&cache, &support, &[]);
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains(BAD_ENTRY) && !stderr.contains("cache"),
        "{stderr}"
    );
    // Compiling again finds the entry verified and leaves it alone.
    assert_eq!(compile(&cache, &[&seed]), std::slice::from_ref(&entry));
    let after = std::fs::symlink_metadata(&entry).unwrap();
    assert_eq!(
        (after.ino(), after.mtime_nsec(), after.mtime()),
        (meta.ino(), meta.mtime_nsec(), meta.mtime())
    );
    assert_eq!(std::fs::read(&entry).unwrap(), bytes);

    // A component that is not one is an error naming it.
    let junk = tmp.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let out = output(wasmproc(&cache, &["compile", junk.to_str().unwrap()]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("junk.wasm"),
        "{}",
        text(&out.stderr)
    );
}

// Issue 22: the cache as a trust root, by every name and in every process.

/// The state of every file below `dir`: names, modes and contents.
fn tree_state(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
    let mut state = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path.clone());
            }
            let bytes = if meta.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            state.push((path, meta.mode(), bytes));
        }
    }
    state.sort();
    state
}

/// Rewrites the entry `victim` of the cache `dir` to hold the code of the
/// entry `code_of`, tagged under `dir`'s own key as `victim`'s: what
/// whoever can read a cache's key can do.
fn forge(dir: &Path, victim: &Path, code_of: &Path) {
    let key: [u8; 32] = std::fs::read(dir.join("key")).unwrap().try_into().unwrap();
    let stem = victim.file_stem().unwrap().to_str().unwrap();
    let cache_key: Vec<u8> = (0..stem.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&stem[i..i + 2], 16).unwrap())
        .collect();
    let entry = std::fs::read(code_of).unwrap();
    // CODE | TAG (32) | MAGIC (16).
    let (code, trailer) = entry.split_at(entry.len() - 48);
    let magic = &trailer[32..];
    let mut mac = blake3::Hasher::new_keyed(&key);
    mac.update(b"wasmproc component cache entry v2\0");
    mac.update(&cache_key);
    mac.update(code);
    let forged = [code, mac.finalize().as_bytes(), magic].concat();
    std::fs::write(victim, forged).unwrap();
}

/// Row 1, the worker's half: the host opened its cache through a link; the
/// link then comes to name a cache whose key the attacker holds, with
/// another component's code forged under a forked component's name. A
/// worker that resolved the path again (as every worker did) ran the
/// forged code; the host's workers run only the code it hands them, and
/// nothing is written to the planted cache.
#[test]
fn a_worker_runs_the_code_its_host_handed_it_not_a_cache_planted_on_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let (real, planted, link) = (base.join("real"), base.join("planted"), base.join("cache"));
    let (probe, echo) = (common::guest("fork-probe"), common::guest("echo-worker"));
    let evil = prebuilt("support-worker");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    compile(&link, &[&probe, &echo]);
    let forged = compile(&planted, &[&echo, &evil]);
    forge(&planted, &forged[0], &forged[1]);
    // The forgery works: a host that trusted the planted cache runs it.
    let (echo_s, probe_s) = (echo.to_str().unwrap(), probe.to_str().unwrap());
    let direct = ["run", "--allow-fork", echo_s, probe_s, "output", "HELLO"];
    let fooled = text(&output(wasmproc(&planted, &direct)).stdout);
    assert!(
        !fooled.contains("HELLO"),
        "the forged entry must run: {fooled}"
    );
    let before = tree_state(&planted);

    let args = [
        "run",
        "--no-worker-template",
        "--allow-fork",
        echo_s,
        probe_s,
        "after-stdin",
        "output",
        "HELLO",
    ];
    let mut host = wasmproc(&link, &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(host.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "waiting\n");
    // The host has its cache open; the path now names the planted one.
    std::os::unix::fs::symlink(&planted, base.join("swap")).unwrap();
    std::fs::rename(base.join("swap"), &link).unwrap();
    std::io::Write::write_all(&mut host.stdin.take().unwrap(), b"go\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = host.wait().unwrap();
    assert!(status.success(), "{status:?}: {rest}");
    assert!(
        rest.contains("stdout: \"HELLO\\n\""),
        "the worker ran other code: {rest}"
    );
    assert_eq!(tree_state(&planted), before, "the planted cache changed");
}

/// Row 1, the grant's half: `~/.cache` is a link out of `~`, so `~` does not
/// contain the resolved cache, but it holds the link a guest could replace.
#[test]
fn a_grant_holding_a_link_on_the_way_to_the_cache_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(tmp.path()).unwrap();
    let (home, elsewhere) = (base.join("home"), base.join("elsewhere/cache"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, home.join(".cache")).unwrap();
    let cache = home.join(".cache/wasmproc/components");
    compile(&cache, &[&prebuilt("seed-spawn")]);
    let seed = prebuilt("seed-spawn");
    let spec = format!("{}::/home", home.display());
    let out = output(wasmproc(
        &cache,
        &["run", "--dir", &spec, seed.to_str().unwrap()],
    ));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(text(&out.stdout), "", "the guest must not run");
    assert!(
        stderr.contains(&format!(
            "refusing the directory grant {}: it contains {}, a step on the path to the \
             compiled-component cache",
            home.display(),
            home.display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read_link(home.join(".cache")).unwrap(), elsewhere);
}

/// Row 2: a cache the host refuses to use (a loose key, a directory others
/// may write) still refuses every grant over its location, so no guest can
/// replace the key for a later run to trust.
#[test]
fn a_cache_the_host_refuses_still_refuses_grants_over_it() {
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(tmp.path()).unwrap();
    let cache = base.join("cache");
    compile(&cache, &[&prebuilt("seed-spawn")]);
    let seed = prebuilt("seed-spawn");
    for (what, path, mode) in [
        ("key", cache.join("key"), 0o644),
        ("dir", cache.clone(), 0o775),
    ] {
        let was = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let before = tree_state(&cache);
        for (grant, relation) in [
            (base.clone(), "contains"),
            (cache.clone(), "contains"),
            (cache.join("entries"), "lies inside"),
        ] {
            let spec = format!("{}::/data", grant.display());
            let out = output(wasmproc(
                &cache,
                &["run", "--dir", &spec, seed.to_str().unwrap()],
            ));
            assert!(
                text(&out.stderr).contains("without a component cache"),
                "{what}"
            );
            assert_refused(&out, &grant, &cache, relation);
        }
        assert_eq!(tree_state(&cache), before, "{what}: the cache changed");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(was)).unwrap();
    }
}
