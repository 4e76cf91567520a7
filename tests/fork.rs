//! `fork` end to end: guest components fork worker components that run in
//! their own `wasmproc` processes, and talk to them over the channel.

mod common;

use common::*;
use wasmproc::GuestExit;
use wasmproc_host::{ChildRlimits, DirAccess, Limits, ProcessCtxBuilder};

async fn fork_probe(grants: ProcessCtxBuilder, args: &[&str]) -> String {
    let run = run_component(&guest("fork-probe"), grants, args).await;
    assert_eq!(
        run.exit,
        GuestExit::Code(0),
        "fork-probe failed: {}\n{:?}",
        run.stderr,
        run.trap
    );
    run.stdout
}

/// As [`fork_probe`], with the denials reported to the host.
async fn fork_probe_denials(
    grants: ProcessCtxBuilder,
    args: &[&str],
) -> (String, Vec<wasmproc_host::Denial>) {
    let run = run_component(&guest("fork-probe"), grants, args).await;
    assert_eq!(
        run.exit,
        GuestExit::Code(0),
        "{}\n{:?}",
        run.stderr,
        run.trap
    );
    (run.stdout, run.denials)
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_pong_of_ten_thousand_messages_keeps_their_order() {
    let out = fork_probe(grants_fork(), &["ping", "10000", "64"]).await;
    assert_eq!(out, "round-trips: 10000\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_mib_and_maximum_size_messages_round_trip_and_one_byte_more_is_refused() {
    let out = fork_probe(grants_fork(), &["big"]).await;
    assert_eq!(value(&out, "1048576"), "true");
    assert_eq!(value(&out, "16777216"), "true");
    assert_eq!(
        value(&out, "over"),
        "limit-exceeded: message of 16777217 bytes is above the limit of 16777216 bytes"
    );
    assert_eq!(value(&out, "after"), "true", "the channel still works");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_pipelined_messages_each_way_arrive_in_order() {
    let out = fork_probe(grants_fork(), &["pipelined", "100000"]).await;
    assert_eq!(value(&out, "received-in-order"), "100000");
    // The worker checked the other direction and exits 0 only if it was in order.
    assert_eq!(value(&out, "status"), "Ok(\"exited(0)\")");
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_in_a_burst_arrive_while_the_guest_only_waits_for_the_exit() {
    // The guest never receives or polls the channel after its sends, so
    // only the host's background flusher can deliver what they buffered.
    let out = fork_probe(grants_fork(), &["burst", "1000"]).await;
    assert_eq!(value(&out, "status"), "exited(0)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_trap_is_reported_after_its_messages_are_delivered() {
    let out = fork_probe(grants_fork(), &["end", "trap"]).await;
    assert_eq!(value(&out, "messages"), "one two three");
    assert_eq!(value(&out, "then"), "closed");
    // A trap stays distinguishable from an exit: the worker process exits
    // as a trapped wasmtime does (134), and its termination carries the trap.
    let status = value(&out, "status");
    assert!(status.starts_with("exited(134) trap="), "{status}");
    assert!(
        status.contains("`unreachable` instruction executed"),
        "{status}"
    );
    assert_eq!(value(&out, "send-after"), "Err(\"closed\")");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_exit_code_is_reported_after_its_messages_are_delivered() {
    let out = fork_probe(grants_fork(), &["end", "exit3"]).await;
    assert_eq!(value(&out, "messages"), "one two three");
    assert_eq!(value(&out, "then"), "closed");
    // The worker called wasi:cli's exit-with-code(3): its own code, no trap.
    assert_eq!(value(&out, "status"), "exited(3)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_is_reported_as_signaled_and_its_channel_closed() {
    let out = fork_probe(grants_fork(), &["end", "kill"]).await;
    assert_eq!(value(&out, "messages"), "one two three");
    assert_eq!(value(&out, "then"), "closed");
    assert_eq!(value(&out, "status"), "signaled(9)");
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_is_denied_for_a_component_not_granted() {
    let out = fork_probe(grants_fork(), &["ask", "component", "seed-exec.wasm"]).await;
    assert_eq!(
        out,
        "error: access-denied: component `seed-exec.wasm` is not allowed for fork\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_cannot_get_what_its_parent_does_not_hold() {
    let granted = tempfile::tempdir().unwrap();
    let mut grants = grants_fork();
    grants
        .dir(granted.path(), "/ro", DirAccess::ReadOnly)
        .unwrap();
    grants.allow_env("LANG").unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &["ask", "program", "sh"],
            "error: access-denied: program `sh` is not allowed",
        ),
        (
            &["ask", "shell", ""],
            "error: access-denied: no shell is granted for `exec`",
        ),
        (
            &["ask", "env", "LD_PRELOAD"],
            "error: access-denied: environment variable `LD_PRELOAD` is not allowed",
        ),
        (
            &["ask", "dir", "/etc"],
            "error: access-denied: directory `/etc` is not inside a directory this guest holds",
        ),
        (
            &["ask", "dir", "/ro/.."],
            "error: access-denied: directory `/ro/..` is not inside a directory this guest holds",
        ),
        (
            &["ask", "dir-rw", "/ro"],
            "error: access-denied: directory `/ro` is read-only for this guest and can only be passed on read-only",
        ),
        (
            &["ask", "max-live-children", "65"],
            "error: access-denied: worker limit max-live-children of 65 is more than this guest has free (63: its own limit, less what its children and other workers hold, less the worker itself)",
        ),
    ];
    for (args, expected) in cases {
        let mut grants = grants_fork();
        grants
            .dir(granted.path(), "/ro", DirAccess::ReadOnly)
            .unwrap();
        assert_eq!(
            fork_probe(grants, args).await.trim_end(),
            expected,
            "{args:?}"
        );
    }
    // What it does hold it may pass on.
    for args in [
        &["ask", "program", TP][..],
        &["ask", "dir", "/ro"],
        &["ask", "env", "LANG"],
        &["ask", "max-live-children", "2"],
        &["ask", "max-timeout-ms", "100"],
    ] {
        let mut grants = grants_fork();
        grants
            .dir(granted.path(), "/ro", DirAccess::ReadOnly)
            .unwrap()
            .allow_env("LANG")
            .unwrap();
        assert_eq!(fork_probe(grants, args).await, "forked\n", "{args:?}");
    }
    drop(grants);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_gets_the_lower_limits_its_parent_asked_for() {
    let out = fork_probe(
        grants_fork(),
        &[
            "limited",
            "max-live-children",
            "2",
            "spawn-n",
            "5",
            TP,
            "sleep",
            "30",
        ],
    )
    .await;
    assert_eq!(value(&out, "reply"), "started 2, then limit-exceeded");
    // Every exec of the worker gets the lowered maximum as its timeout.
    let out = fork_probe(
        grants_fork(),
        &[
            "limited",
            "max-timeout-ms",
            "200",
            "exec-status",
            TP,
            "sleep",
            "30",
        ],
    )
    .await;
    assert_eq!(value(&out, "reply"), "signaled(15) timed-out=true");
    // A child rlimit: the parent's 64 open files, the worker's children 16;
    // more than 64 is refused.
    let grants = || {
        let mut g = grants_fork();
        g.limits(Limits {
            rlimits: ChildRlimits {
                open_files: Some(64),
                ..ChildRlimits::default()
            },
            ..Limits::default()
        });
        g
    };
    let out = fork_probe(
        grants(),
        &["limited", "open-files", "16", "exec", TP, "nofile"],
    )
    .await;
    assert_eq!(value(&out, "reply"), "16 16");
    let out = fork_probe(grants(), &["ask", "open-files", "65"]).await;
    assert_eq!(
        out.trim_end(),
        "error: access-denied: worker limit open-files of 65 is above this guest's own (64)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guests_cgroup_and_its_workers_cgroups_are_gone_when_the_guest_ends() {
    // The worker spawns a long sleep in its own cgroup (nested in the
    // guest's), then the guest ends while both still run.
    let run = run_component(
        &guest("fork-probe"),
        grants_fork(),
        &["worker", TP, "-", "spawn", TP, "sleep", "60"],
    )
    .await;
    let pid: i32 = value(&run.stdout, "reply")
        .parse()
        .expect("the grandchild's pid");
    let cgroup = run.cgroup.expect("this machine lets the host make cgroups");
    assert!(!cgroup.exists(), "{} is left", cgroup.display());
    // Removed only once empty: nothing of the guest is left.
    assert!(
        process_gone(pid),
        "the worker's child {pid} outlived the guest"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_runs_only_the_programs_passed_on_to_it() {
    let passed = fork_probe(
        grants_fork(),
        &["worker", TP, "-", "exec", TP, "echo", "from", "worker"],
    )
    .await;
    assert_eq!(value(&passed, "reply"), "from worker\n".trim_end());
    let kept = fork_probe(
        grants_fork(),
        &["worker", "-", "-", "exec", TP, "echo", "hi"],
    )
    .await;
    assert_eq!(
        value(&kept, "reply"),
        "error: access-denied: program `testprog` is not allowed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_cannot_use_a_directory_its_parent_did_not_pass_on() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().canonicalize().unwrap();
    let grants = || {
        let mut g = grants_fork();
        g.dir(dir.path(), "/work", DirAccess::ReadWrite).unwrap();
        g
    };
    let passed = fork_probe(grants(), &["worker", TP, "/work", "cwd", "/work", TP]).await;
    assert_eq!(value(&passed, "reply"), host.display().to_string());
    let kept = fork_probe(grants(), &["worker", TP, "-", "cwd", "/work", TP]).await;
    assert_eq!(
        value(&kept, "reply"),
        "error: access-denied: working directory `/work` is outside the granted directories"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_reads_files_only_in_directories_passed_on_to_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note"), "for the worker").unwrap();
    let grants = || {
        let mut g = grants_fork();
        g.dir(dir.path(), "/work", DirAccess::ReadWrite).unwrap();
        g
    };
    let passed = fork_probe(grants(), &["worker", "-", "/work:ro", "read", "/work/note"]).await;
    assert_eq!(value(&passed, "reply"), "for the worker");
    let kept = fork_probe(grants(), &["worker", "-", "-", "read", "/work/note"]).await;
    assert!(value(&kept, "reply").starts_with("error: "), "{kept}");
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_pool_hashes_every_file_of_a_directory_across_its_workers() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let mut expected = String::new();
    for i in 0..12 {
        let name = format!("file{i:02}");
        let body = format!("contents of file {i}\n").repeat(i * 100 + 1);
        std::fs::write(dir.path().join(&name), &body).unwrap();
        let hex: String = Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        expected.push_str(&format!("{hex}  /data/{name}\n"));
    }
    let mut grants = ProcessCtxBuilder::new();
    grants
        .worker_executable(env!("CARGO_BIN_EXE_wasmproc"), common::worker_code())
        .unwrap()
        .allow_fork(guest("pool-worker"))
        .unwrap()
        .dir(dir.path(), "/data", DirAccess::ReadOnly)
        .unwrap();
    let run = run_component_with_dir(
        &guest("worker-pool"),
        grants,
        dir.path(),
        "/data",
        &["/data", "3"],
    )
    .await;
    assert_eq!(run.exit, GuestExit::Code(0), "{}", run.stderr);
    let (hashes, summary) = run.stdout.rsplit_once("12 files").expect("a summary line");
    assert_eq!(hashes, expected);
    assert!(summary.contains("hashed by 3 workers"), "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_without_a_worker_executable_is_unsupported() {
    let mut grants = grants_testprog();
    grants.allow_fork(guest("echo-worker")).unwrap();
    let out = fork_probe(grants, &["ask", "program", TP]).await;
    assert!(
        out.starts_with("error: unsupported: this host has no worker executable"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_children_limit_covers_the_guest_and_all_its_workers() {
    let mut grants = grants_fork();
    grants.limits(Limits {
        max_live_children: 4,
        ..Limits::default()
    });
    // 4 workers, each asked to keep 4 children: without one budget for the
    // tree that was 20 processes.
    let out = fork_probe(grants, &["fan", "4", "4", TP, "sleep", "30"]).await;
    let started: usize = out
        .lines()
        .filter_map(|l| l.strip_prefix("reply: started "))
        .map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    let workers = out.lines().filter(|l| l.starts_with("reply: ")).count();
    assert!(
        workers + started <= 4,
        "{workers} workers and {started} children under a limit of 4:\n{out}"
    );
    assert!(workers >= 1 && started >= 1, "{out}");
    assert!(out.contains("fork: error: limit-exceeded"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_cannot_be_lent_more_than_its_parent_has_free() {
    let mut grants = grants_fork();
    grants.limits(Limits {
        max_live_children: 4,
        ..Limits::default()
    });
    // The worker takes one slot itself: 3 are free for its children.
    let out = fork_probe(grants, &["ask", "max-live-children", "4"]).await;
    assert!(out.starts_with("error: access-denied: worker limit max-live-children of 4 is more than this guest has free (3"), "{out}");
    let mut grants = grants_fork();
    grants.limits(Limits {
        max_live_children: 4,
        ..Limits::default()
    });
    let out = fork_probe(
        grants,
        &[
            "limited",
            "max-live-children",
            "3",
            "spawn-n",
            "5",
            TP,
            "sleep",
            "30",
        ],
    )
    .await;
    assert_eq!(value(&out, "reply"), "started 3, then limit-exceeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_for_a_worker_before_reading_its_messages_does_not_deadlock() {
    // 20 000 small messages: far more than the kernel's socket buffer holds
    // (about 2 000 did before the host took them in while waiting).
    let out = fork_probe(grants_fork(), &["wait-first", "20000"]).await;
    assert_eq!(value(&out, "status"), "exited(0)");
    assert_eq!(value(&out, "received"), "20000");
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_the_channel_delivers_every_earlier_message_then_closed() {
    let out = fork_probe(grants_fork(), &["close-here", "3"]).await;
    assert_eq!(
        value(&out, "send-after"),
        "closed: this end closed the channel"
    );
    assert_eq!(
        value(&out, "receive-after"),
        "closed: this end closed the channel"
    );
    // The worker counted what it received before `closed`, as its exit code.
    assert_eq!(value(&out, "status"), "exited(3)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_closing_its_end_leaves_it_running_and_the_parent_sees_closed() {
    let out = fork_probe(grants_fork(), &["close-there", "5"]).await;
    assert_eq!(value(&out, "received"), "5");
    assert_eq!(value(&out, "then"), "closed");
    assert_eq!(value(&out, "running"), "true");
    // Exit 0: the worker's own send after closing said `closed`.
    assert_eq!(value(&out, "status"), "exited(0)");
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_timeout_on_a_running_worker_says_timed_out() {
    let out = fork_probe(grants_fork(), &["wait-timeout", "200"]).await;
    let error = value(&out, "error");
    assert!(
        error.starts_with("timed-out: worker ") && error.ends_with("still running after 200 ms"),
        "{error}"
    );
    assert_eq!(value(&out, "status"), "signaled(9)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_is_killed_at_the_hosts_maximum_timeout() {
    let mut grants = grants_fork();
    grants.limits(Limits {
        max_timeout: Some(std::time::Duration::from_millis(300)),
        ..Limits::default()
    });
    let started = std::time::Instant::now();
    // The worker sleeps for ever; the guest waits up to 20 s for it. The
    // worker process ends on SIGTERM as a `wasmproc` process does (143).
    let out = fork_probe(grants, &["wait-timeout", "20000"]).await;
    assert_eq!(value(&out, "ended"), "exited(143)", "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_takes_in_a_workers_messages_up_to_the_channel_buffer() {
    // 20 000 small messages (160 KB of payload) fit the default buffer: the
    // wait ends although the guest has not read one.
    let out = fork_probe(grants_fork(), &["wait-sending", "20000", "10000"]).await;
    assert_eq!(value(&out, "first-wait"), "exited(0)");
    assert_eq!(value(&out, "received"), "20000");
    // With a 4 KiB buffer the worker waits for the guest to read, and so
    // does the wait; once the guest reads, nothing is lost.
    let mut grants = grants_fork();
    grants.limits(Limits {
        channel_buffer: 4 << 10,
        ..Limits::default()
    });
    let out = fork_probe(grants, &["wait-sending", "20000", "500"]).await;
    assert_eq!(value(&out, "first-wait"), "timed-out");
    assert_eq!(value(&out, "received"), "20000");
    assert_eq!(value(&out, "status"), "exited(0)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workers_termination_reports_its_cpu_time_and_memory() {
    let out = fork_probe(grants_fork(), &["usage"]).await;
    assert_eq!(value(&out, "status"), "exited(0)");
    let cpu: u64 = value(&out, "cpu-ms").parse().unwrap();
    // The worker spins for 300 ms of wall-clock time; on two busy cores
    // (the whole suite runs at once) it got 88 ms of CPU once: what is
    // checked is that its CPU time is counted, not how much it got.
    assert!(cpu >= 30, "{out}");
    let rss: u64 = value(&out, "max-rss-kib").parse().unwrap();
    assert!(rss > 1024, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_forks_in_turn_what_its_parent_passed_on() {
    let out = fork_probe(
        grants_fork(),
        &[
            "nested",
            "3",
            "testprog",
            "echo-worker.wasm",
            "exec",
            "testprog",
            "echo",
            "deep",
        ],
    )
    .await;
    assert_eq!(value(&out, "reply"), "3>2>deep");
    assert_eq!(value(&out, "status"), "exited(0)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_not_passed_a_component_cannot_fork_it_and_the_denial_reaches_the_top() {
    let (out, denials) = fork_probe_denials(
        grants_fork(),
        &[
            "nested", "2", "testprog", "-", "exec", "testprog", "echo", "x",
        ],
    )
    .await;
    assert_eq!(
        value(&out, "reply"),
        "2>error: access-denied: component `echo-worker.wasm` is not allowed for fork"
    );
    assert!(
        denials
            .iter()
            .any(|d| d.to_string().contains("echo-worker.wasm")),
        "{denials:?}"
    );
    // Nor can a parent pass on a component it was not granted.
    let out = fork_probe(
        grants_fork(),
        &[
            "nested",
            "2",
            "testprog",
            "seed-exec.wasm",
            "exec",
            "testprog",
            "echo",
            "x",
        ],
    )
    .await;
    assert_eq!(
        value(&out, "error"),
        "access-denied: component `seed-exec.wasm` is not allowed for fork"
    );
}

/// The pids of this process's children running `wasmproc __worker`.
fn worker_processes() -> Vec<u32> {
    let me = std::process::id().to_string();
    (std::fs::read_dir("/proc").unwrap().flatten())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit(") ").next().and_then(|r| r.split(' ').nth(1));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(me.as_str()) && String::from_utf8_lossy(&cmdline).contains("__worker")
        })
        .collect()
}

/// The pids of the audit log's `event` events.
fn audited(log: &std::path::Path, event: &str) -> Vec<u32> {
    (std::fs::read_to_string(log).unwrap().lines())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == event)
        .map(|e| e["pid"].as_u64().unwrap() as u32)
        .collect()
}

/// `/proc/PID/stat`'s fields after the command name (state, ppid, pgrp...).
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(") ").next().unwrap_or_default();
    rest.split(' ').map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_workers_and_the_template_hold_nothing_but_their_channel_until_a_spec() {
    let granted = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut grants = grants_fork();
    grants
        .dir(granted.path(), "/data", DirAccess::ReadOnly)
        .unwrap()
        .warm_workers(2)
        .audit_log(wasmproc_host::AuditLog::to_file(log.path()).unwrap());
    let mut ctx = grants.build();
    ctx.warm_up();
    // This context's workers: in its cgroup (other tests fork meanwhile).
    let cgroup = ctx.cgroup().expect("a cgroup of the context's").to_owned();
    let mine = || -> Vec<u32> {
        let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
        let mine: Vec<u32> = procs.lines().map(|l| l.parse().unwrap()).collect();
        (worker_processes().into_iter())
            .filter(|p| mine.contains(p))
            .collect()
    };
    // (Under load, /proc may show a just-started process late.)
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut idle = mine();
    while idle.len() != 3 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
        idle = mine();
    }
    let template = audited(log.path(), "worker-template");
    assert_eq!(template.len(), 1, "one worker template");
    assert_eq!(idle.len(), 3, "the template and two warm workers: {idle:?}");
    assert!(idle.contains(&template[0]));
    for pid in &idle {
        // Its descriptors: /dev/null as stdio, its channel, its own files
        // (the engine's), never the guest's directory.
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
        for fd in fds.flatten() {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            assert!(
                !target.starts_with(granted.path()),
                "idle worker {pid} holds {}",
                target.display()
            );
        }
    }
    drop(ctx);
    for pid in &idle {
        assert!(process_gone(pid), "idle worker {pid} outlived its context");
    }
}

/// Waits (up to 10 s) until process `pid` waits in `recvmsg` (x86_64
/// system call 47): a worker template that is ready waits for requests.
fn wait_until_receiving(pid: u32) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < until {
        let call = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        if call.starts_with("47 ") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("process {pid} never waited for a request");
}

fn kill(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
}

/// A context of `grants` with one warm worker forked by its template (the
/// first one starts from the executable while the template is not ready;
/// it is killed once the template is, and its replacement is forked), its
/// audit log, the template's pid and the forked worker's.
fn with_a_forked_warm_worker(
    mut grants: ProcessCtxBuilder,
) -> (wasmproc_host::ProcessCtx, tempfile::NamedTempFile, u32, u32) {
    let log = tempfile::NamedTempFile::new().unwrap();
    grants
        .warm_workers(1)
        .audit_log(wasmproc_host::AuditLog::to_file(log.path()).unwrap());
    let mut ctx = grants.build();
    ctx.warm_up();
    let [template] = audited(log.path(), "worker-template")[..] else {
        panic!("one worker template");
    };
    let [started] = audited(log.path(), "worker-process")[..] else {
        panic!("one warm worker");
    };
    wait_until_receiving(template);
    kill(started);
    assert!(process_gone(started));
    ctx.warm_up();
    let [_, forked] = audited(log.path(), "worker-process")[..] else {
        panic!("a second warm worker");
    };
    let log_text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        log_text.contains(&format!("forked by worker template {template}")),
        "the second warm worker was not forked by the template: {log_text}"
    );
    (ctx, log, template, forked)
}

/// Whether process `pid` is running (not gone, not a zombie), now.
fn alive(pid: u32) -> bool {
    stat_fields(pid)
        .first()
        .is_some_and(|state| !state.is_empty() && state != "Z")
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_are_forked_from_the_template_as_the_hosts_own_children() {
    let (mut ctx, log, template, forked) = with_a_forked_warm_worker(grants_fork());
    // The template's copy (its command line), yet this host's child, the
    // leader of its own process group.
    let me = std::process::id().to_string();
    let fields = stat_fields(forked);
    assert_eq!((&fields[1], &fields[2]), (&me, &forked.to_string()));
    let cmdline = std::fs::read(format!("/proc/{forked}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("--template"));
    // A template that died is replaced when the pool is next filled.
    kill(template);
    assert!(process_gone(template));
    ctx.warm_up();
    let templates = audited(log.path(), "worker-template");
    assert_eq!(templates.len(), 2, "the template replaced");
    assert!(alive(templates[1]) && alive(forked));
    drop(ctx);
    for pid in [forked, templates[1]] {
        assert!(process_gone(pid), "{pid} outlived its context");
    }
}

/// The cgroup of process `pid` (the path in `/proc/PID/cgroup`).
fn cgroup_of(pid: u32) -> String {
    let line = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    line.trim().rsplit(':').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_cgroup_per_child_a_forked_worker_gets_its_own_not_the_templates() {
    let mut grants = grants_fork();
    grants.cgroup_per_child(true);
    let (ctx, _log, template, forked) = with_a_forked_warm_worker(grants);
    let guest = ctx.cgroup().expect("a cgroup of the context's").to_owned();
    let (theirs, mine) = (cgroup_of(template), cgroup_of(forked));
    assert_ne!(theirs, mine, "the worker was left in the template's cgroup");
    let guest_name = guest.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        mine.contains(&guest_name),
        "{mine} is not inside the guest's {guest_name}"
    );
    drop(ctx);
    assert!(process_gone(forked) && process_gone(template));
}

/// Runs fork-probe's `fan 2` (two workers, each running testprog once)
/// with the worker template on or off; returns the audit log's lines.
async fn fan_of_two(template: bool) -> String {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut grants = grants_fork();
    grants
        .worker_template(template)
        .audit_log(wasmproc_host::AuditLog::to_file(log.path()).unwrap());
    let out = fork_probe(grants, &["fan", "2", "1", "testprog", "echo", "hi"]).await;
    assert_eq!(
        out.matches("reply: started 1, then none").count(),
        2,
        "{out}"
    );
    std::fs::read_to_string(log.path()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_forking_as_it_starts_gets_workers_forked_by_its_template() {
    // The forks come before the template is ready: they wait for it
    // rather than start the executable.
    let log = fan_of_two(true).await;
    assert_eq!(
        log.matches("\"event\":\"worker-template\"").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("forked by worker template").count(), 2, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_with_a_megabyte_of_arguments_is_forked_by_the_template_too() {
    // Its specification is too large to wait in the channel before the
    // copy is there to read it: sent after the fork.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut grants = grants_fork();
    grants.audit_log(wasmproc_host::AuditLog::to_file(log.path()).unwrap());
    let text = "x".repeat(1 << 20);
    let out = fork_probe(grants, &["output", &text]).await;
    assert!(out.contains(&text), "the worker's output did not come back");
    let log = std::fs::read_to_string(log.path()).unwrap();
    assert!(log.contains("forked by worker template"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_template_each_worker_starts_from_the_executable() {
    let log = fan_of_two(false).await;
    assert!(!log.contains("worker-template"), "{log}");
    assert_eq!(
        log.matches("\"event\":\"worker-process\"").count(),
        2,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forks_take_warm_workers_and_the_pool_refills() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut grants = grants_fork();
    grants
        .warm_workers(2)
        .audit_log(wasmproc_host::AuditLog::to_file(log.path()).unwrap());
    let out = fork_probe(grants, &["fan", "3", "1", "testprog", "echo", "hi"]).await;
    assert_eq!(
        out.matches("reply: started 1, then none").count(),
        3,
        "{out}"
    );
    let log = std::fs::read_to_string(log.path()).unwrap();
    let events: Vec<serde_json::Value> = (log.lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let started: Vec<&serde_json::Value> = (events.iter())
        .filter(|e| e["event"] == "worker-process")
        .map(|e| &e["pid"])
        .collect();
    let forked: Vec<&serde_json::Value> = (events.iter())
        .filter(|e| e["event"] == "fork")
        .map(|e| &e["pid"])
        .collect();
    assert_eq!(forked.len(), 3);
    // Two were started before the guest forked; each fork took one and
    // started one: five in all, and every forked worker was one of them,
    // forked by the template started first.
    assert_eq!(started.len(), 5, "{log}");
    assert_eq!(events[0]["event"], "worker-template", "{log}");
    let first_fork = (events.iter()).position(|e| e["event"] == "fork").unwrap();
    let warm_before: Vec<_> = events[..first_fork]
        .iter()
        .filter(|e| e["event"] == "worker-process")
        .collect();
    assert_eq!(warm_before.len(), 2);
    assert!(forked.iter().all(|p| started.contains(p)));
}
