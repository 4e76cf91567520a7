//! The `wasmproc` command line, run as operators run it.

mod common;

use common::*;
use std::process::{Command, Output};

fn wasmproc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run wasmproc")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SEED_EXEC_OUTPUT: &str = "\
stdout: Child Process 0 executed.\n\nstderr: \nChild process exited with exit code 0
stdout: Child Process 1 executed.\n\nstderr: \nChild process exited with exit code 0
stdout: Child Process 2 executed.\n\nstderr: \nChild process exited with exit code 0
";

fn run_seed_exec(component: &str) -> Output {
    wasmproc(&[
        "run",
        "--allow-shell",
        "--dir",
        "guest-examples/support::/support",
        component,
    ])
}

#[test]
fn prebuilt_seed_exec_still_runs_against_this_host() {
    let out = run_seed_exec("guest-examples/prebuilt/seed-exec.wasm");
    assert_eq!(text(&out.stderr), "");
    assert_eq!(text(&out.stdout), SEED_EXEC_OUTPUT);
    assert!(out.status.success());
}

#[test]
fn freshly_built_seed_exec_prints_what_the_seed_prints() {
    let out = run_seed_exec(guest("seed-exec").to_str().unwrap());
    assert_eq!(text(&out.stdout), SEED_EXEC_OUTPUT);
    assert!(out.status.success());
}

#[test]
fn seed_exec_without_a_shell_is_denied_and_told_which_flag_grants_it() {
    let out = wasmproc(&[
        "run",
        "--dir",
        "guest-examples/support::/support",
        "guest-examples/prebuilt/seed-exec.wasm",
    ]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "wasmproc: denied: no shell is granted for `exec` (grant one with --allow-shell)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("access-denied"),
        "the guest reports the error-code: {stderr}"
    );
    assert!(!out.status.success());
}

#[test]
fn cli_denial_names_the_denied_program_and_the_flag_that_grants_it() {
    let probe = guest("exec-probe");
    let out = wasmproc(&[
        "run",
        "--allow-run",
        "true",
        probe.to_str().unwrap(),
        "file",
        "cat",
        "/etc/passwd",
    ]);
    assert_eq!(
        text(&out.stdout),
        "error: access-denied: program `cat` is not allowed\n"
    );
    assert_eq!(
        text(&out.stderr),
        "wasmproc: denied: program `cat` is not allowed (grant it with --allow-run cat)\n"
    );
}

#[test]
fn cli_grants_programs_dirs_and_env_names_from_flags() {
    let dir = tempfile::tempdir().unwrap();
    let probe = guest("exec-probe");
    let dir_flag = format!("{}::/data", dir.path().display());
    let out = wasmproc(&[
        "run",
        "--allow-run",
        testprog().to_str().unwrap(),
        "--dir",
        &dir_flag,
        "--allow-env",
        "MODE",
        probe.to_str().unwrap(),
        "--cwd",
        "/data",
        "--env",
        "MODE=fast",
        "file",
        TP,
        "env",
    ]);
    assert_eq!(text(&out.stderr), "");
    assert!(
        text(&out.stdout).contains("stdout: \"MODE=fast\\n\""),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn cli_timeout_flag_bounds_every_child() {
    let probe = guest("exec-probe");
    let out = wasmproc(&[
        "run",
        "--allow-run",
        testprog().to_str().unwrap(),
        "--timeout",
        "300ms",
        probe.to_str().unwrap(),
        "file",
        TP,
        "sleep",
        "30",
        "---",
        "--timeout-ms",
        "60000",
        "file",
        TP,
        "echo",
    ]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("timed-out: true"), "{stdout}");
    assert!(stdout.contains("error: limit-exceeded"), "{stdout}");
    assert!(
        text(&out.stderr).contains("raise it with --timeout"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cli_refuses_a_grant_it_cannot_resolve() {
    let probe = guest("exec-probe");
    let out = wasmproc(&[
        "run",
        "--allow-run",
        "no-such-program-wasmproc",
        probe.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--allow-run no-such-program-wasmproc: program `no-such-program-wasmproc` not found in PATH"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cli_reports_a_guest_trap_and_exits_like_wasmtime() {
    let probe = guest("exec-probe");
    let out = wasmproc(&["run", probe.to_str().unwrap(), "--cwd", "/"]);
    assert_eq!(out.status.code(), Some(134));
    assert!(
        text(&out.stderr).contains("wasmproc: error: the guest trapped"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cli_help_explains_the_capability_model() {
    let out = wasmproc(&["run", "--help"]);
    let help = text(&out.stdout);
    for needle in [
        "CAPABILITY MODEL",
        "denied by default",
        "--allow-run",
        "--allow-shell",
        "--dir",
        "--allow-env",
        "--timeout",
    ] {
        assert!(help.contains(needle), "help lacks {needle}:\n{help}");
    }
}
