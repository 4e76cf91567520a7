//! `spawn` end to end: guest components run real children and stream their
//! stdio through wasi:io streams.

mod common;

use common::*;
use wasmproc::GuestExit;
use wasmproc_host::{Limits, ProcessCtx, ProcessCtxBuilder};

async fn spawn_probe(grants: ProcessCtxBuilder, args: &[&str]) -> GuestRun {
    let run = run_component(&guest("spawn-probe"), grants, args).await;
    assert_eq!(
        run.exit,
        GuestExit::Code(0),
        "spawn-probe failed: {}\n{:?}",
        run.stderr,
        run.trap
    );
    run
}

#[tokio::test(flavor = "multi_thread")]
async fn spawn_streams_a_childs_stdout_through_a_wasi_input_stream() {
    let out = spawn_probe(grants_testprog(), &["stream", TP, "flood", "5000000"])
        .await
        .stdout;
    assert_eq!(value(&out, "pid-positive"), "true");
    assert_eq!(
        value(&out, "take-again"),
        "true",
        "a stream can be taken once"
    );
    assert_eq!(value(&out, "stdout-bytes"), "5000000");
    assert_eq!(value(&out, "stdout-reads-more-than-one"), "true");
    assert_eq!(value(&out, "status"), "exited(0)");
}

#[tokio::test(flavor = "multi_thread")]
async fn spawn_streams_stderr_apart_from_stdout() {
    let out = spawn_probe(grants_testprog(), &["stream", TP, "stderr", "oops"])
        .await
        .stdout;
    assert_eq!(value(&out, "stdout"), quoted(""));
    assert_eq!(value(&out, "stderr"), quoted("oops"));
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_the_stdin_stream_sends_eof_to_the_child() {
    let out = spawn_probe(grants_testprog(), &["stdin", "hello\nworld", TP, "cat"])
        .await
        .stdout;
    assert_eq!(value(&out, "stdout"), quoted("hello\nworld"));
    assert_eq!(value(&out, "status"), "exited(0)");
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_larger_than_the_pipe_is_delivered_whole() {
    let text = "0123456789".repeat(50_000);
    let out = spawn_probe(grants_testprog(), &["stdin", &text, TP, "count"])
        .await
        .stdout;
    assert_eq!(value(&out, "stdout"), quoted("500000\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_signals_the_child_and_wait_reports_the_signal() {
    let out = spawn_probe(grants_testprog(), &["kill", TP, "sleep", "60"])
        .await
        .stdout;
    assert_eq!(value(&out, "try-wait"), "None");
    assert_eq!(value(&out, "status"), "signaled(15)");
    assert_eq!(value(&out, "kill-after-exit"), "Ok(())");
    assert_eq!(value(&out, "bad-signal"), "Err(\"invalid-argument\")");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_never_reads_blocks_the_child() {
    // (tests/cli.rs checks the host's memory while this happens.)
    let out = spawn_probe(
        grants_testprog(),
        &["never-read", "1", TP, "flood", "1000000000"],
    )
    .await
    .stdout;
    assert_eq!(
        value(&out, "still-running"),
        "true",
        "the child must be blocked on a full pipe"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_child_kills_its_whole_process_group() {
    // The guest checks with `testprog alive`, which reads /proc: a confined
    // child cannot.
    let mut grants = grants_testprog();
    grants.confine(false);
    let out = spawn_probe(grants, &["drop", TP, "grandchild", "60"]).await;
    assert_eq!(
        out.stdout.matches("after-drop: gone").count(),
        2,
        "{}{}",
        out.stdout,
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_trap_kills_its_children_and_grandchildren() {
    let run = run_component(
        &guest("spawn-probe"),
        grants_testprog(),
        &["trap", TP, "grandchild", "60"],
    )
    .await;
    assert_eq!(run.exit, GuestExit::Trap);
    assert!(process_gone(value(&run.stdout, "child")));
    assert!(process_gone(value(&run.stdout, "grandchild")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guest_ending_kills_the_children_it_left_running() {
    let run = spawn_probe(grants_testprog(), &["exit", TP, "grandchild", "60"]).await;
    assert!(process_gone(value(&run.stdout, "child")));
    assert!(process_gone(value(&run.stdout, "grandchild")));
}

#[tokio::test(flavor = "multi_thread")]
async fn live_children_over_the_limit_are_refused() {
    let mut grants = grants_testprog();
    grants.limits(Limits {
        max_live_children: 2,
        ..Limits::default()
    });
    let run = spawn_probe(grants, &["limit", "3", TP, "sleep", "60"]).await;
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[..2], ["spawned", "spawned"]);
    assert!(
        lines[2].starts_with("error: limit-exceeded: 2 of the 2 live-children slots are taken"),
        "{}",
        lines[2]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spawn_is_denied_when_program_not_allowed() {
    let run = spawn_probe(grants_testprog(), &["bad", "sh", "-c", "cat /etc/shadow"]).await;
    assert_eq!(
        run.stdout,
        "error: access-denied: program `sh` is not allowed\n"
    );
    let run = spawn_probe(ProcessCtx::builder(), &["bad", TP, "echo"]).await;
    assert_eq!(
        run.stdout,
        "error: access-denied: program `testprog` is not allowed\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn inherited_output_goes_to_the_guests_own_stdout_and_null_discards_it() {
    let run = spawn_probe(
        grants_testprog(),
        &["stdio", "inherit", TP, "echo", "from the child"],
    )
    .await;
    assert_eq!(value(&run.stdout, "streams"), "false false");
    assert!(run.stdout.contains("from the child\n"), "{}", run.stdout);
    let run = spawn_probe(
        grants_testprog(),
        &["stdio", "null", TP, "echo", "from the child"],
    )
    .await;
    assert!(!run.stdout.contains("from the child"), "{}", run.stdout);
    assert_eq!(value(&run.stdout, "status"), "exited(0)");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_children_run_at_once_and_are_polled_together() {
    let run = spawn_probe(grants_testprog(), &["fanout", "20", TP, "echo", "job"]).await;
    let expected: String = (0..20).map(|i| format!("job {i}\n")).collect();
    assert_eq!(run.stdout, format!("concurrent: true\n{expected}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_streams_the_producers_output_into_the_consumer() {
    let run = run_component(
        &guest("pipeline"),
        grants_testprog(),
        &[TP, "flood", "30000000", "---", TP, "count"],
    )
    .await;
    assert_eq!(run.exit, GuestExit::Code(0), "{}", run.stderr);
    assert_eq!(run.stdout, "30000000\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_passes_data_through_unchanged() {
    let run = run_component(
        &guest("pipeline"),
        grants_testprog(),
        &[TP, "echo", "a b c", "---", TP, "cat"],
    )
    .await;
    assert_eq!(run.stdout, "a b c\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_spawn_prints_every_childs_output_and_close() {
    let mut grants = ProcessCtx::builder();
    grants
        .allow_program(repo().join("guest-examples/support/support"))
        .unwrap();
    for component in [
        guest("seed-spawn"),
        repo().join("guest-examples/prebuilt/seed-spawn.wasm"),
    ] {
        let run = run_component(&component, ProcessCtx::builder(), &[]).await;
        assert_eq!(run.exit, GuestExit::Code(1), "denied without a grant");
        let mut grants = ProcessCtx::builder();
        grants
            .allow_program(repo().join("guest-examples/support/support"))
            .unwrap();
        let run = run_component(&component, grants, &[]).await;
        assert_eq!(run.exit, GuestExit::Code(0), "{}", run.stderr);
        let mut lines: Vec<&str> = run.stdout.lines().filter(|l| !l.is_empty()).collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "child process exited with code 0",
                "child process exited with code 0",
                "child process exited with code 0",
                "stdout: Child Process 0 executed.",
                "stdout: Child Process 1 executed.",
                "stdout: Child Process 2 executed.",
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_dropped_before_its_streams_leaves_them_readable_to_the_end() {
    let run = spawn_probe(grants_testprog(), &["child-first", TP, "grandchild", "30"]).await;
    assert!(run.trap.is_none(), "{:?}", run.trap);
    // The grandchild's pid, as `testprog grandchild` names it.
    let first = value(&run.stdout, "first");
    let pid = first.split('@').next().unwrap_or_default();
    assert!(pid.parse::<u32>().is_ok(), "{}", run.stdout);
    // The group was killed with the child: nothing more, then the end.
    assert_eq!(value(&run.stdout, "rest"), "\"\"");
    // (Whether a write after that fails depends on when the killed
    // processes let go of the pipe: not checked.)
    assert!(run.stdout.ends_with("done\n"), "{}", run.stdout);
}

/// A directory granted read-write as `/data` (mode 0777: children run as
/// the unprivileged child user).
fn data_dir() -> (tempfile::TempDir, ProcessCtxBuilder) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut grants = grants_testprog();
    grants
        .dir(dir.path(), "/data", wasmproc_host::DirAccess::ReadWrite)
        .unwrap();
    (dir, grants)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spawn_deadline_kills_the_whole_group_and_wait_says_timed_out() {
    let out = spawn_probe(
        grants_testprog(),
        &["deadline", "1000", "-", TP, "grandchild", "30"],
    )
    .await
    .stdout;
    assert_eq!(value(&out, "try-wait"), "None");
    // SIGTERM by default, as Node's spawn.
    assert_eq!(value(&out, "status"), "signaled(15) timed-out");
    let grandchild = value(&out, "first");
    assert!(process_gone(grandchild), "grandchild {grandchild} survived");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_ignoring_the_kill_signal_is_killed_after_the_grace_period() {
    let mut grants = grants_testprog();
    grants.limits(Limits {
        kill_grace: std::time::Duration::from_millis(200),
        ..Limits::default()
    });
    let out = spawn_probe(grants, &["deadline", "300", "15", TP, "ignore-term", "30"])
        .await
        .stdout;
    assert_eq!(value(&out, "first"), "ready");
    assert_eq!(value(&out, "status"), "signaled(9) timed-out");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_ending_before_its_deadline_is_not_timed_out() {
    let out = spawn_probe(
        grants_testprog(),
        &["deadline", "20000", "9", TP, "echo", "hi"],
    )
    .await
    .stdout;
    assert_eq!(value(&out, "first"), "hi");
    assert_eq!(value(&out, "status"), "exited(0)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spawn_deadline_above_the_hosts_maximum_is_refused() {
    let mut grants = grants_testprog();
    grants.limits(Limits {
        max_timeout: Some(std::time::Duration::from_secs(1)),
        ..Limits::default()
    });
    let out = spawn_probe(grants, &["deadline", "5000", "-", TP, "echo", "hi"])
        .await
        .stdout;
    assert_eq!(
        value(&out, "error"),
        "limit-exceeded: a timeout of 5s is above the host's limit of 1s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spawn_without_a_deadline_gets_the_hosts_maximum_timeout() {
    let mut grants = grants_testprog();
    grants.limits(Limits {
        max_timeout: Some(std::time::Duration::from_millis(300)),
        ..Limits::default()
    });
    let started = std::time::Instant::now();
    let out = spawn_probe(grants, &["wait-timeout", "20000", TP, "sleep", "30"])
        .await
        .stdout;
    // Killed by the host's deadline (SIGTERM), long before the guest's wait
    // or the sleep would have ended.
    assert_eq!(value(&out, "ended"), "signaled(15) timed-out", "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_timeout_says_timed_out_and_leaves_the_child_running() {
    let out = spawn_probe(
        grants_testprog(),
        &["wait-timeout", "200", TP, "sleep", "30"],
    )
    .await
    .stdout;
    let error = value(&out, "error");
    assert!(
        error.starts_with("timed-out: process ") && error.ends_with("still running after 200 ms"),
        "{error}"
    );
    assert_eq!(value(&out, "running"), "true");
    assert_eq!(value(&out, "status"), "signaled(9)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_childs_termination_reports_its_cpu_time_and_memory() {
    let out = spawn_probe(grants_testprog(), &["usage", TP, "burn", "300"])
        .await
        .stdout;
    assert_eq!(value(&out, "status"), "exited(0)");
    let cpu: u64 = value(&out, "cpu-ms").parse().unwrap();
    assert!(cpu >= 290, "{out}");
    let rss: u64 = value(&out, "max-rss-kib").parse().unwrap();
    assert!(rss > 0, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_childs_stdout_runs_straight_into_anothers_stdin() {
    let out = spawn_probe(
        grants_testprog(),
        &["pipe", TP, "flood", "5000000", "---", TP, "count"],
    )
    .await
    .stdout;
    assert_eq!(value(&out, "stdout"), quoted("5000000\n"));
    assert_eq!(value(&out, "first"), "exited(0)");
    assert_eq!(value(&out, "second"), "exited(0)");
}

#[tokio::test(flavor = "multi_thread")]
async fn pipe_from_is_refused_for_anything_but_stdin() {
    let out = spawn_probe(grants_testprog(), &["pipe-misuse", TP, "echo", "x"])
        .await
        .stdout;
    assert_eq!(
        value(&out, "error"),
        "invalid-argument: stdout cannot be `pipe-from`: it is for stdin only"
    );
    assert_eq!(value(&out, "first"), "exited(0)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_childs_stdout_goes_to_a_file_truncated_appended_or_created() {
    let (dir, grants) = data_dir();
    let file = dir.path().join("out.txt");
    std::fs::write(&file, "old contents\n").unwrap();
    let run = |mode: &'static str, text: &'static str| {
        let grants = grants_with_data(dir.path());
        async move {
            spawn_probe(
                grants,
                &["file-out", "/data/out.txt", mode, TP, "echo", text],
            )
            .await
            .stdout
        }
    };
    drop(grants);
    assert_eq!(value(&run("truncate", "one").await, "status"), "exited(0)");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "one\n");
    assert_eq!(value(&run("append", "two").await, "status"), "exited(0)");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "one\ntwo\n");
    let exists = run("create", "three").await;
    assert!(value(&exists, "error").starts_with("io: "), "{exists}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "one\ntwo\n");
    let out = spawn_probe(
        grants_with_data(dir.path()),
        &["file-out", "/data/new.txt", "create", TP, "echo", "new"],
    )
    .await
    .stdout;
    assert_eq!(value(&out, "status"), "exited(0)");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("new.txt")).unwrap(),
        "new\n"
    );
}

/// Grants testprog and `dir` read-write as `/data`.
fn grants_with_data(dir: &std::path::Path) -> ProcessCtxBuilder {
    let mut grants = grants_testprog();
    grants
        .dir(dir, "/data", wasmproc_host::DirAccess::ReadWrite)
        .unwrap();
    grants
}

#[tokio::test(flavor = "multi_thread")]
async fn a_childs_stdin_reads_a_file_in_a_granted_directory() {
    let (dir, grants) = data_dir();
    std::fs::write(dir.path().join("in.txt"), "from a file\n").unwrap();
    let out = spawn_probe(grants, &["file-in", "/data/in.txt", TP, "cat"])
        .await
        .stdout;
    assert_eq!(value(&out, "stdout"), quoted("from a file\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_files_outside_the_grants_or_in_read_only_ones_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target.txt");
    std::fs::write(&target, "untouched\n").unwrap();
    let (dir, _) = data_dir();
    std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("linkdir")).unwrap();
    let ro = tempfile::tempdir().unwrap();
    std::fs::write(ro.path().join("log"), "read-only\n").unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["file-out", "/etc/wasmproc-x", "create"],
            "access-denied: file `/etc/wasmproc-x` is outside the granted directories (or leads out of them)",
        ),
        (
            &["file-out", "/data/link", "truncate"],
            "access-denied: file `/data/link` is outside the granted directories (or leads out of them)",
        ),
        (
            &["file-out", "/data/linkdir/target.txt", "append"],
            "access-denied: file `/data/linkdir/target.txt` is outside the granted directories (or leads out of them)",
        ),
        (
            &["file-out", "/data/../x", "create"],
            "access-denied: file `/data/../x` is outside the granted directories (or leads out of them)",
        ),
        (
            &["file-out", "/ro/log", "truncate"],
            "access-denied: file `/ro/log` is in a directory granted read-only: a child cannot write it",
        ),
        (
            &["file-in", "/data/link"],
            "access-denied: file `/data/link` is outside the granted directories (or leads out of them)",
        ),
    ];
    for (args, want) in cases {
        let mut grants = grants_with_data(dir.path());
        grants
            .dir(ro.path(), "/ro", wasmproc_host::DirAccess::ReadOnly)
            .unwrap();
        let mut argv = args.to_vec();
        argv.extend([TP, "echo", "escaped"]);
        let run = run_component(&guest("spawn-probe"), grants, &argv).await;
        assert_eq!(value(&run.stdout, "error"), want, "{args:?}");
        assert!(!run.denials.is_empty(), "{args:?}: the denial is reported");
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
    assert_eq!(
        std::fs::read_to_string(ro.path().join("log")).unwrap(),
        "read-only\n"
    );
    assert!(!std::path::Path::new("/etc/wasmproc-x").exists());
    assert!(!outside.path().join("x").exists() && !dir.path().join("../x").exists());
}
