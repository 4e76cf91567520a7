//! `exec` and `exec-file` end to end: the exec-probe guest component asks a
//! real host to run real processes (the `testprog` helper, or a shell).

mod common;

use common::*;
use std::time::{Duration, Instant};
use wasmproc_host::{Denial, DirAccess, Limits, ProcessCtx};

#[tokio::test(flavor = "multi_thread")]
async fn exec_file_returns_the_childs_output_and_exit_code_zero() {
    let out = probe_one(grants_testprog(), &["file", TP, "echo", "hello", "world"]).await;
    assert_eq!(out.field("status"), "exited(0)");
    assert_eq!(out.field("stdout"), quoted("hello world\n"));
    assert_eq!(out.field("stderr"), quoted(""));
    assert_eq!(out.field("timed-out"), "false");
    assert!(out.field("pid").parse::<u32>().unwrap() > 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_file_reports_a_nonzero_exit_code() {
    let outs = probe(
        grants_testprog(),
        &["file", TP, "exit", "3", "---", "file", TP, "exit", "255"],
    )
    .await
    .0;
    assert_eq!(outs[0].field("status"), "exited(3)");
    assert_eq!(outs[1].field("status"), "exited(255)");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_file_captures_stderr_apart_from_stdout() {
    let out = probe_one(grants_testprog(), &["file", TP, "stderr", "oops"]).await;
    assert_eq!(out.field("stderr"), quoted("oops"));
    assert_eq!(out.field("stdout"), quoted(""));
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_file_reports_a_child_killed_by_a_signal_as_signaled_only() {
    let out = probe_one(grants_testprog(), &["file", TP, "abort"]).await;
    assert_eq!(out.field("status"), "signaled(6)");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_file_gives_the_child_its_stdin_bytes() {
    let out = probe_one(
        grants_testprog(),
        &["--stdin", "line one\nline two", "file", TP, "cat"],
    )
    .await;
    assert_eq!(out.field("stdout"), quoted("line one\nline two"));
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_file_runs_the_granted_binary_with_its_name_as_argv0() {
    let by_name = probe_one(grants_testprog(), &["file", TP, "argv0"]).await;
    assert_eq!(by_name.field("stdout"), quoted("testprog\n"));
    let path = testprog().to_str().unwrap();
    let by_path = probe_one(grants_testprog(), &["file", path, "argv0"]).await;
    assert_eq!(by_path.field("stdout"), quoted("testprog\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_file_is_denied_when_program_not_allowed() {
    let (outs, run) = probe(
        grants_testprog(),
        &["file", "sh", "-c", "true", "---", "file", "/bin/sh"],
    )
    .await;
    assert_eq!(
        outs[0].err(),
        ("access-denied", "program `sh` is not allowed")
    );
    assert_eq!(
        outs[1].err(),
        ("access-denied", "program `/bin/sh` is not allowed")
    );
    assert_eq!(
        run.denials,
        [
            Denial::Program("sh".into()),
            Denial::Program("/bin/sh".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_file_is_denied_when_nothing_is_granted() {
    let out = probe_one(ProcessCtx::builder(), &["file", TP, "echo"]).await;
    assert_eq!(out.err().0, "access-denied");
}

#[tokio::test(flavor = "multi_thread")]
async fn children_change_their_uid_only_when_the_embedder_allows_it() {
    let denied = probe_one(grants_testprog(), &["file", TP, "setuid", "1234"]).await;
    assert_eq!(denied.field("stdout"), quoted("error: permission denied\n"));
    let mut grants = grants_testprog();
    grants.allow_uid_change(true);
    let allowed = probe_one(grants, &["file", TP, "setuid", "1234"]).await;
    // Only a root host has CAP_SETUID to pass on.
    let expected = match rustix::process::geteuid().is_root() {
        true => "changed\n",
        false => "error: permission denied\n",
    };
    assert_eq!(allowed.field("stdout"), quoted(expected));
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_file_reports_not_found_when_a_granted_program_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("vanishing");
    std::fs::copy(testprog(), &copy).unwrap();
    let mut grants = ProcessCtx::builder();
    grants.allow_program(&copy).unwrap();
    std::fs::remove_file(&copy).unwrap();
    let out = probe_one(grants, &["file", "vanishing", "echo"]).await;
    let (code, message) = out.err();
    assert_eq!(code, "not-found");
    assert!(message.contains("vanishing"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_through_a_shell_is_denied_unless_a_shell_is_granted() {
    let denied = probe_one(grants_testprog(), &["shell", "echo hi"]).await;
    assert_eq!(
        denied.err(),
        ("access-denied", "no shell is granted for `exec`")
    );

    let mut grants = grants_testprog();
    grants.allow_shell("/bin/sh").unwrap();
    let out = probe_one(grants, &["shell", "echo hi; echo err >&2; exit 4"]).await;
    assert_eq!(out.field("stdout"), quoted("hi\n"));
    assert_eq!(out.field("stderr"), quoted("err\n"));
    assert_eq!(out.field("status"), "exited(4)");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_the_granted_shell_it_names_and_refuses_others() {
    let mut grants = grants_testprog();
    grants
        .allow_shell("/bin/sh")
        .unwrap()
        .allow_shell("/bin/bash")
        .unwrap();
    let which = "echo ${BASH_VERSION:+bash}";
    let outs = probe(
        grants,
        &[
            "shell", which, "---", "--shell", "bash", "shell", which, "---", "--shell", "zsh",
            "shell", which,
        ],
    )
    .await
    .0;
    assert_eq!(
        outs[0].field("stdout"),
        quoted("\n"),
        "the first granted shell"
    );
    assert_eq!(outs[1].field("stdout"), quoted("bash\n"));
    assert_eq!(
        outs[2].err(),
        ("access-denied", "shell `zsh` is not granted for `exec`")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_output_reports_the_childs_cpu_time_and_memory() {
    let out = probe_one(grants_testprog(), &["file", TP, "burn", "300"]).await;
    assert_eq!(out.field("stdout"), quoted("burnt\n"));
    let cpu: u64 = out.field("cpu-ms").parse().unwrap();
    assert!(cpu >= 290, "{out:?}");
    let rss: u64 = out.field("max-rss-kib").parse().unwrap();
    assert!(rss > 0, "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn children_start_with_an_empty_environment_plus_allowed_names() {
    let mut grants = grants_testprog();
    grants.allow_env("GREETING").unwrap();
    let out = probe_one(grants, &["--env", "GREETING=hi there", "file", TP, "env"]).await;
    assert_eq!(out.field("stdout"), quoted("GREETING=hi there\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn env_name_not_allowed_is_denied() {
    let mut grants = grants_testprog();
    grants.allow_env("GREETING").unwrap();
    let (outs, run) = probe(
        grants,
        &[
            "--env",
            "GREETING=x",
            "--env",
            "LD_PRELOAD=/x.so",
            "file",
            TP,
            "env",
        ],
    )
    .await;
    assert_eq!(
        outs[0].err(),
        (
            "access-denied",
            "environment variable `LD_PRELOAD` is not allowed"
        )
    );
    assert_eq!(run.denials, [Denial::EnvName("LD_PRELOAD".into())]);
}

/// A granted directory with a `sub` directory, a file, and a symlink `out`
/// pointing outside it.
fn granted_tree() -> (tempfile::TempDir, tempfile::TempDir) {
    let granted = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir(granted.path().join("sub")).unwrap();
    std::fs::write(granted.path().join("file"), "").unwrap();
    std::os::unix::fs::symlink(outside.path(), granted.path().join("out")).unwrap();
    (granted, outside)
}

fn grants_dir(granted: &std::path::Path) -> wasmproc_host::ProcessCtxBuilder {
    let mut grants = grants_testprog();
    grants.dir(granted, "/work", DirAccess::ReadWrite).unwrap();
    grants
}

#[tokio::test(flavor = "multi_thread")]
async fn cwd_inside_a_granted_dir_is_entered() {
    let (granted, _outside) = granted_tree();
    let host = granted.path().canonicalize().unwrap();
    let outs = probe(
        grants_dir(granted.path()),
        &[
            "--cwd",
            "/work/sub",
            "file",
            TP,
            "cwd",
            "---",
            "--cwd",
            "sub",
            "file",
            TP,
            "cwd",
            "---",
            "file",
            TP,
            "cwd",
        ],
    )
    .await
    .0;
    let sub = quoted(&format!("{}\n", host.join("sub").display()));
    assert_eq!(outs[0].field("stdout"), sub, "absolute guest path");
    assert_eq!(
        outs[1].field("stdout"),
        sub,
        "relative to the first granted dir"
    );
    assert_eq!(
        outs[2].field("stdout"),
        quoted(&format!("{}\n", host.display())),
        "default: first granted dir"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn children_run_in_the_root_directory_when_no_dir_is_granted() {
    let out = probe_one(grants_testprog(), &["file", TP, "cwd"]).await;
    assert_eq!(out.field("stdout"), quoted("/\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cwd_outside_granted_dirs_is_denied() {
    let (granted, _outside) = granted_tree();
    let (outs, run) = probe(
        grants_dir(granted.path()),
        &["--cwd", "/etc", "file", TP, "cwd"],
    )
    .await;
    assert_eq!(
        outs[0].err(),
        (
            "access-denied",
            "working directory `/etc` is outside the granted directories"
        )
    );
    assert_eq!(run.denials, [Denial::Cwd("/etc".into())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cwd_dotdot_escape_is_denied() {
    let (granted, _outside) = granted_tree();
    let outs = probe(
        grants_dir(granted.path()),
        &[
            "--cwd",
            "/work/..",
            "file",
            TP,
            "cwd",
            "---",
            "--cwd",
            "/work/sub/../..",
            "file",
            TP,
            "cwd",
            "---",
            "--cwd",
            "../",
            "file",
            TP,
            "cwd",
        ],
    )
    .await
    .0;
    for out in &outs {
        let (code, message) = out.err();
        assert_eq!(code, "access-denied");
        assert!(
            message.contains("leads out of the granted directory `/work`"),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cwd_symlink_escape_is_denied() {
    let (granted, _outside) = granted_tree();
    let (outs, run) = probe(
        grants_dir(granted.path()),
        &["--cwd", "/work/out", "file", TP, "cwd"],
    )
    .await;
    assert_eq!(outs[0].err().0, "access-denied");
    assert_eq!(
        run.denials,
        [Denial::CwdEscape {
            cwd: "/work/out".into(),
            granted: "/work".into()
        }]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cwd_that_does_not_exist_or_is_a_file_is_refused() {
    let (granted, _outside) = granted_tree();
    let outs = probe(
        grants_dir(granted.path()),
        &[
            "--cwd",
            "/work/missing",
            "file",
            TP,
            "cwd",
            "---",
            "--cwd",
            "/work/file",
            "file",
            TP,
            "cwd",
        ],
    )
    .await
    .0;
    assert_eq!(outs[0].err().0, "not-found");
    assert_eq!(outs[1].err().0, "invalid-argument");
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_sends_sigterm_by_default_and_kills_the_child_and_its_grandchild() {
    let started = Instant::now();
    let out = probe_one(
        grants_testprog(),
        &["--timeout-ms", "500", "file", TP, "grandchild", "60"],
    )
    .await;
    assert_eq!(out.field("timed-out"), "true");
    // Node's default: SIGTERM first (SIGKILL only after the grace).
    assert_eq!(out.field("status"), "signaled(15)");
    let printed = out
        .field("stdout")
        .trim_matches('"')
        .trim_end_matches("\\n")
        .to_owned();
    let grandchild = printed;
    // The grandchild was killed with its group.
    assert!(
        process_gone(&grandchild),
        "grandchild {grandchild} still alive"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_sends_the_requested_signal_first() {
    let out = probe_one(
        grants_testprog(),
        &[
            "--timeout-ms",
            "200",
            "--kill-signal",
            "15",
            "file",
            TP,
            "sleep",
            "60",
        ],
    )
    .await;
    assert_eq!(out.field("timed-out"), "true");
    assert_eq!(out.field("status"), "signaled(15)");
}

#[tokio::test(flavor = "multi_thread")]
async fn output_over_max_buffer_is_truncated_and_flagged_and_the_host_stays_healthy() {
    let outs = probe(
        grants_testprog(),
        &[
            "--max-buffer",
            "1000",
            "file",
            TP,
            "flood",
            "50000000",
            "---",
            "file",
            TP,
            "echo",
            "still fine",
        ],
    )
    .await
    .0;
    assert_eq!(outs[0].field("stdout"), quoted(&"x".repeat(1000)));
    assert_eq!(outs[0].field("stdout-truncated"), "true");
    assert_eq!(outs[0].field("stderr-truncated"), "false");
    // The kill signal, SIGTERM unless asked (as Node's maxBuffer).
    assert_eq!(outs[0].field("status"), "signaled(15)");
    assert_eq!(outs[1].field("stdout"), quoted("still fine\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn output_up_to_max_buffer_is_kept_whole() {
    let out = probe_one(
        grants_testprog(),
        &["--max-buffer", "100000", "file", TP, "flood", "100000"],
    )
    .await;
    assert_eq!(out.field("stdout"), "<100000 bytes>");
    assert_eq!(out.field("stdout-truncated"), "false");
    assert_eq!(out.field("status"), "exited(0)");
}

#[tokio::test(flavor = "multi_thread")]
async fn nul_byte_in_an_argument_is_invalid_argument() {
    let mut grants = grants_testprog();
    grants
        .allow_env("A")
        .unwrap()
        .allow_shell("/bin/sh")
        .unwrap();
    let outs = probe(
        grants,
        &[
            "file",
            TP,
            "echo",
            "a<NUL>b",
            "---",
            "file",
            "test<NUL>prog",
            "---",
            "--env",
            "A=x<NUL>y",
            "file",
            TP,
            "env",
            "---",
            "--cwd",
            "a<NUL>",
            "file",
            TP,
            "cwd",
            "---",
            "shell",
            "echo <NUL>",
        ],
    )
    .await
    .0;
    assert_eq!(outs.len(), 5);
    for out in &outs {
        let (code, message) = out.err();
        assert_eq!(code, "invalid-argument");
        assert!(message.contains("NUL"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_sizes_timeouts_and_signals_are_refused_with_a_reason() {
    let mut grants = grants_testprog();
    grants.limits(Limits {
        max_buffer: 4096,
        ..Limits::default()
    });
    let outs = probe(
        grants,
        &[
            "--max-buffer",
            "0",
            "file",
            TP,
            "echo",
            "---",
            "--max-buffer",
            "5000",
            "file",
            TP,
            "echo",
            "---",
            "--timeout-ms",
            "0",
            "file",
            TP,
            "echo",
            "---",
            "--kill-signal",
            "0",
            "file",
            TP,
            "echo",
            "---",
            "--kill-signal",
            "200",
            "file",
            TP,
            "echo",
            "---",
            "file",
            "",
        ],
    )
    .await
    .0;
    let codes: Vec<&str> = outs.iter().map(|o| o.err().0).collect();
    assert_eq!(
        codes,
        [
            "invalid-argument",
            "limit-exceeded",
            "invalid-argument",
            "invalid-argument",
            "invalid-argument",
            "invalid-argument"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_maximum_timeout_bounds_what_the_guest_may_ask() {
    let mut grants = grants_testprog();
    grants.limits(Limits {
        default_timeout: Some(Duration::from_millis(300)),
        max_timeout: Some(Duration::from_secs(1)),
        ..Limits::default()
    });
    let outs = probe(
        grants,
        &[
            "--timeout-ms",
            "5000",
            "file",
            TP,
            "echo",
            "---",
            "file",
            TP,
            "sleep",
            "60",
        ],
    )
    .await
    .0;
    assert_eq!(outs[0].err().0, "limit-exceeded");
    assert_eq!(
        outs[1].field("timed-out"),
        "true",
        "the default timeout applies"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn arguments_over_the_byte_limit_are_refused() {
    let mut grants = grants_testprog();
    grants.limits(Limits {
        max_arg_bytes: 1000,
        ..Limits::default()
    });
    let big = "y".repeat(2000);
    let out = probe_one(grants, &["file", TP, "echo", &big]).await;
    assert_eq!(out.err().0, "limit-exceeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn spawns_over_the_total_limit_are_refused() {
    let mut grants = grants_testprog();
    grants.limits(Limits {
        max_total_spawns: Some(2),
        ..Limits::default()
    });
    let outs = probe(
        grants,
        &[
            "file", TP, "echo", "---", "file", TP, "echo", "---", "file", TP, "echo",
        ],
    )
    .await
    .0;
    assert_eq!(outs[0].field("status"), "exited(0)");
    assert_eq!(outs[1].field("status"), "exited(0)");
    assert_eq!(outs[2].err().0, "limit-exceeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_of_a_component_not_granted_is_an_error_value_not_a_trap() {
    let out = probe_one(grants_testprog(), &["fork", "worker.wasm"]).await;
    assert_eq!(
        out.err(),
        (
            "access-denied",
            "component `worker.wasm` is not allowed for fork"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_traps_leaves_the_host_healthy() {
    // A request without a program makes exec-probe panic: a trap.
    let trapped = run_component(&guest("exec-probe"), grants_testprog(), &["--cwd", "/"]).await;
    assert_eq!(trapped.exit, wasmproc::GuestExit::Trap);
    assert!(
        trapped
            .stderr
            .contains("needs `shell COMMAND` or `file PROGRAM`"),
        "{}",
        trapped.stderr
    );
    let out = probe_one(grants_testprog(), &["file", TP, "echo", "after"]).await;
    assert_eq!(out.field("stdout"), quoted("after\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_runs_as_an_asked_user_only_when_the_host_granted_it() {
    let mut shell = ProcessCtx::builder();
    shell.allow_shell("/bin/sh").unwrap();
    let out = probe_one(shell, &["--uid", "1234", "shell", "id -u"]).await;
    assert_eq!(out.err(), ("access-denied", "user id 1234 is not allowed"));
    let mut shell = ProcessCtx::builder();
    shell.allow_shell("/bin/sh").unwrap();
    let out = probe_one(shell, &["--gid", "1234", "shell", "id -g"]).await;
    assert_eq!(out.err(), ("access-denied", "group id 1234 is not allowed"));

    let mut granted = ProcessCtx::builder();
    granted
        .allow_shell("/bin/sh")
        .unwrap()
        .allow_uid(1234)
        .allow_gid(4321);
    let out = probe_one(
        granted,
        &[
            "--uid",
            "1234",
            "--gid",
            "4321",
            "shell",
            "id -u; id -g; id -G",
        ],
    )
    .await;
    if rustix::process::geteuid().is_root() {
        assert_eq!(out.field("stdout"), quoted("1234\n4321\n4321\n"));
    } else {
        // Only a root host's children change user.
        assert_eq!(out.err().0, "unsupported");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_hosts_children_run_as_an_id_leased_to_their_guest_or_the_child_user() {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let mut shell = ProcessCtx::builder();
    shell.allow_shell("/bin/sh").unwrap();
    let out = probe_one(shell, &["shell", "id -u; id -g; id -G"]).await;
    let said: String = serde_json::from_str(out.field("stdout")).unwrap();
    let ids: Vec<u32> = said
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(
        wasmproc_host::sandbox::DEFAULT_CHILD_UIDS.contains(&ids[0]),
        "{said}"
    );
    assert_eq!(ids, [ids[0]; 3], "uid, gid and the only group are one id");
    let mut shell = ProcessCtx::builder();
    shell.allow_shell("/bin/sh").unwrap().child_user(2000, 3000);
    let out = probe_one(shell, &["shell", "id -u; id -g"]).await;
    assert_eq!(out.field("stdout"), quoted("2000\n3000\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_cannot_grow_its_memory_past_the_cap() {
    let mut capped = ProcessCtx::builder();
    capped.limits(Limits {
        max_wasm_memory: Some(32 << 20),
        ..Limits::default()
    });
    let run = run_component(
        &guest("exec-probe"),
        capped,
        &["alloc", "64", "---", "alloc", "8"],
    )
    .await;
    assert_eq!(
        run.stdout, "cannot allocate 64 MiB\nallocated 8 MiB\n",
        "{}",
        run.stderr
    );
    let uncapped = run_component(
        &guest("exec-probe"),
        ProcessCtx::builder(),
        &["alloc", "64"],
    )
    .await;
    assert_eq!(uncapped.stdout, "allocated 64 MiB\n");
}

/// Issue 22, row 6: a guest's memory is bounded with default settings.
#[tokio::test(flavor = "multi_thread")]
async fn a_guest_is_capped_at_the_default_wasm_memory_unless_the_embedder_lifts_it() {
    assert_eq!(
        Limits::default().max_wasm_memory,
        Some(wasmproc_host::DEFAULT_MAX_WASM_MEMORY)
    );
    let over = (wasmproc_host::DEFAULT_MAX_WASM_MEMORY >> 20) + 64;
    let over = over.to_string();
    let args = ["alloc", &over, "---", "alloc", "8"];
    let run = run_component(&guest("exec-probe"), ProcessCtx::builder(), &args).await;
    let expected = format!("cannot allocate {over} MiB\nallocated 8 MiB\n");
    assert_eq!(run.stdout, expected, "{}", run.stderr);
    let mut lifted = ProcessCtx::builder();
    lifted.limits(Limits {
        max_wasm_memory: None,
        ..Limits::default()
    });
    let run = run_component(&guest("exec-probe"), lifted, &["alloc", &over]).await;
    assert_eq!(
        run.stdout,
        format!("allocated {over} MiB\n"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_program_granted_through_a_symlink_runs_in_the_sandbox() {
    // The link's directory is not granted: the sandbox shows the binary at
    // its real path, and the child runs that.
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("tp-link");
    std::os::unix::fs::symlink(testprog(), &link).unwrap();
    let mut grants = ProcessCtx::builder();
    grants.allow_program(&link).unwrap();
    let out = probe_one(grants, &["file", "tp-link", "argv0"]).await;
    assert_eq!(out.field("stdout"), quoted("tp-link\n"));
}
