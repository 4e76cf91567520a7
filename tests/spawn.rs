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
    assert!(
        value(&run.stdout, "first").parse::<u32>().is_ok(),
        "{}",
        run.stdout
    );
    // The group was killed with the child: nothing more, then the end.
    assert_eq!(value(&run.stdout, "rest"), "\"\"");
    // (Whether a write after that fails depends on when the killed
    // processes let go of the pipe: not checked.)
    assert!(run.stdout.ends_with("done\n"), "{}", run.stdout);
}
