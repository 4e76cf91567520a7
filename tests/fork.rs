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
    assert_eq!(value(&out, "then"), "closed: ");
    assert_eq!(value(&out, "status"), "exited(134)");
    assert_eq!(value(&out, "send-after"), "Err(\"closed\")");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_exit_code_is_reported_after_its_messages_are_delivered() {
    let out = fork_probe(grants_fork(), &["end", "exit3"]).await;
    assert_eq!(value(&out, "messages"), "one two three");
    assert_eq!(value(&out, "then"), "closed: ");
    // The worker called exit(3); wasi:cli@0.2's `exit` carries only success
    // or failure (exit-with-code is unstable and unused by Rust's std), so
    // a failing exit is status 1.
    assert_eq!(value(&out, "status"), "exited(1)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_is_reported_as_signaled_and_its_channel_closed() {
    let out = fork_probe(grants_fork(), &["end", "kill"]).await;
    assert_eq!(value(&out, "messages"), "one two three");
    assert_eq!(value(&out, "then"), "closed: ");
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
    assert_eq!(value(&out, "reply"), "signaled(9) timed-out=true");
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
        .worker_executable(env!("CARGO_BIN_EXE_wasmproc"))
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
