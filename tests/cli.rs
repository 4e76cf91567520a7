//! The `wasmproc` command line, run as operators run it.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn wasmproc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run wasmproc")
}

/// The events of the audit log at `path`, one JSON object a line.
fn audit_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
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
        "--dir-ro",
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
    // Open to the children's user (a root host's run as an id of their own).
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
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

#[test]
fn host_sigterm_kills_every_child_and_grandchild() {
    use std::io::{BufRead, BufReader};
    let probe = guest("spawn-probe");
    let mut host = Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args([
            "run",
            "--allow-run",
            testprog().to_str().unwrap(),
            probe.to_str().unwrap(),
        ])
        .args(["hold", TP, "grandchild", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(host.stdout.take().unwrap()).lines();
    let mut pid = || {
        lines
            .next()
            .unwrap()
            .unwrap()
            .split(": ")
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let (child, grandchild) = (pid(), pid());
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(host.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let out = host.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    assert!(
        text(&out.stderr).contains("stopped by SIGTERM"),
        "{}",
        text(&out.stderr)
    );
    for pid in [child, grandchild] {
        assert!(
            text(
                &Command::new(testprog())
                    .args(["alive", &pid])
                    .output()
                    .unwrap()
                    .stdout
            ) == "gone\n",
            "process {pid} outlived the host"
        );
    }
}

#[test]
fn prebuilt_seed_spawn_runs_from_the_readme_command() {
    let out = wasmproc(&[
        "run",
        "--allow-run",
        "guest-examples/support/support",
        "guest-examples/prebuilt/seed-spawn.wasm",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for i in 0..3 {
        assert!(
            stdout.contains(&format!("stdout: Child Process {i} executed.\n")),
            "{stdout}"
        );
    }
    assert_eq!(
        stdout.matches("child process exited with code 0\n").count(),
        3
    );
}

#[test]
fn a_child_writing_a_gigabyte_nobody_reads_does_not_grow_the_host() {
    let probe = guest("spawn-probe");
    let host = Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args([
            "run",
            "--allow-run",
            testprog().to_str().unwrap(),
            probe.to_str().unwrap(),
        ])
        .args(["never-read", "3", TP, "flood", "1000000000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let status = std::fs::read_to_string(format!("/proc/{}/status", host.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let out = host.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "still-running: true\n");
    assert!(
        peak_kib < 256 << 10,
        "host peak RSS {peak_kib} KiB: it buffered what the guest did not read"
    );
}

#[test]
fn prebuilt_seed_fork_runs_from_the_readme_command() {
    let out = wasmproc(&[
        "run",
        "--allow-fork",
        "guest-examples/prebuilt/support-worker.wasm",
        "guest-examples/prebuilt/seed-fork.wasm",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "Child Process 0 executed.",
            "Child Process 1 executed.",
            "Child Process 2 executed.",
            "child process exited with code 0",
            "child process exited with code 0",
            "child process exited with code 0",
        ]
    );
}

#[test]
fn worker_channels_work_without_spinning_and_with_a_long_spin() {
    for spin in ["0", "2ms"] {
        let out = wasmproc(&[
            "run",
            "--channel-spin",
            spin,
            "--allow-fork",
            guest("echo-worker").to_str().unwrap(),
            guest("fork-probe").to_str().unwrap(),
            "ping",
            "500",
            "100",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            "round-trips: 500\n",
            "--channel-spin {spin}"
        );
    }
}

#[test]
fn a_killed_host_takes_its_workers_and_their_children_with_it() {
    let (mut host, worker, grandchild) = holding_host();
    // The worker runs in the cgroup the host made for its guest's children.
    let cgroup = cgroup_dir(&worker);
    let name = format!("wasmproc-{}-", host.id());
    assert!(
        cgroup
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&name),
        "{}",
        cgroup.display()
    );
    host.kill().unwrap(); // SIGKILL: no cleanup code runs in the host
    host.wait().unwrap();
    for pid in [&worker, &grandchild] {
        let alive = Command::new(testprog())
            .args(["alive", pid])
            .output()
            .unwrap();
        assert_eq!(
            text(&alive.stdout),
            "gone\n",
            "process {pid} outlived the killed host"
        );
    }
    // Nothing removed the dead host's cgroup; the next host does.
    let next = wasmproc(&[
        "run",
        "--allow-run",
        testprog().to_str().unwrap(),
        guest("exec-probe").to_str().unwrap(),
        "file",
        "testprog",
        "echo",
    ]);
    assert!(next.status.success(), "{}", text(&next.stderr));
    assert!(!cgroup.exists(), "{} is left", cgroup.display());
}

/// The directory of process `pid`'s cgroup v2.
fn cgroup_dir(pid: &str) -> PathBuf {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let own = cgroups.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = mounts
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split(' ').nth(4))
        .expect("a cgroup v2 hierarchy");
    Path::new(mount).join(own.trim_start_matches('/'))
}

#[test]
fn cli_refuses_to_grant_wasmproc_itself() {
    let probe = guest("exec-probe");
    let out = wasmproc(&[
        "run",
        "--allow-run",
        env!("CARGO_BIN_EXE_wasmproc"),
        probe.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("refusing to grant wasmproc itself"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn wit_prints_the_package_guests_import() {
    let out = wasmproc(&["wit"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        std::fs::read_to_string(repo().join("wit/process.wit")).unwrap()
    );
}

#[test]
fn a_policy_file_can_turn_off_the_cgroup_and_allow_uid_changes() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "programs = [{:?}]\naudit_log = \"audit.jsonl\"\n\n[confinement]\ncgroup = false\nallow_uid_change = true\n",
            testprog().display().to_string()
        ),
    )
    .unwrap();
    let out = wasmproc(&[
        "run",
        "--policy",
        policy.to_str().unwrap(),
        guest("exec-probe").to_str().unwrap(),
        "file",
        TP,
        "setuid",
        "65534",
    ]);
    let expected = match rustix::process::geteuid().is_root() {
        true => "stdout: \"changed\\n\"",
        false => "stdout: \"error: permission denied\\n\"",
    };
    assert!(
        text(&out.stdout).contains(expected),
        "{}",
        text(&out.stdout)
    );
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let started: serde_json::Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    assert_eq!(started["capabilities"], "setuid,setgid", "{audit}");
    assert_eq!(started["cgroup"], serde_json::Value::Null, "{audit}");
}

#[test]
fn a_policy_file_grants_what_the_flags_would() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "programs = [{:?}]\nallow_env = [\"MODE\"]\naudit_log = \"audit.jsonl\"\n\n[[dir]]\nhost = \"data\"\nguest = \"/data\"\naccess = \"ro\"\n\n[limits]\ntimeout = \"5s\"\n",
            testprog().display().to_string()
        ),
    )
    .unwrap();
    let probe = guest("exec-probe");
    let out = wasmproc(&[
        "run",
        "--policy",
        policy.to_str().unwrap(),
        probe.to_str().unwrap(),
        "--cwd",
        "/data",
        "--env",
        "MODE=x",
        "file",
        TP,
        "env",
        "---",
        "file",
        "sh",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("stdout: \"MODE=x\\n\""),
        "{stdout}{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("error: access-denied: program `sh` is not allowed"),
        "{stdout}"
    );
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["exec-file", "exit", "denied"], "{audit}");
    assert_eq!(
        events[0]["env"],
        serde_json::json!(["MODE"]),
        "names, never values"
    );
    assert!(events[0]["cwd"].as_str().unwrap().ends_with("/data"));
    assert_eq!(events[0]["confinement"], "full");
    assert_eq!(events[0]["capabilities"], "none");
    assert!(
        (events[0]["cgroup"].as_str().unwrap()).contains("/wasmproc-"),
        "{audit}"
    );
    assert_eq!(events[1]["status"], "exited(0)");
    assert_eq!(events[0]["pid"], events[1]["pid"]);
}

#[test]
fn a_bad_policy_file_is_refused_with_the_line_named() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "allow_env = [\"A\"]\nprogramz = [\"sort\"]\n").unwrap();
    let out = wasmproc(&[
        "run",
        "--policy",
        policy.to_str().unwrap(),
        guest("exec-probe").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("programz"),
        "{stderr}"
    );
}

#[test]
fn child_rlimits_bind_a_workers_children_but_not_the_worker() {
    // 1 GiB of address space is far too little for a wasm runtime, which
    // reserves its memories up front: the worker must not get it.
    let out = wasmproc(&[
        "run",
        "--rlimit",
        "as=1073741824",
        "--allow-fork",
        repo()
            .join("guest-examples/prebuilt/support-worker.wasm")
            .to_str()
            .unwrap(),
        repo()
            .join("guest-examples/prebuilt/seed-fork.wasm")
            .to_str()
            .unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).matches("exited with code 0").count(),
        3,
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_workers_children_and_denials_reach_the_parents_audit_log_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let run = |worker_programs: &str| {
        wasmproc(&[
            "run",
            "--audit-log",
            log.to_str().unwrap(),
            "--allow-run",
            testprog().to_str().unwrap(),
            "--allow-fork",
            guest("echo-worker").to_str().unwrap(),
            guest("fork-probe").to_str().unwrap(),
            "worker",
            worker_programs,
            "-",
            "exec",
            "testprog",
            "echo",
            "hi",
        ])
    };
    let allowed = run("testprog");
    assert_eq!(text(&allowed.stdout), "reply: hi\n\n");
    let denied = run("-");
    assert!(
        text(&denied.stderr).contains("wasmproc: denied: in worker `echo-worker.wasm` (pid ")
            && text(&denied.stderr).contains("): program `testprog` is not allowed"),
        "{}",
        text(&denied.stderr)
    );
    let events = audit_events(&log);
    let from_worker = |event: &str| {
        events
            .iter()
            .filter(|e| e["event"] == event && e["worker"]["component"] == "echo-worker.wasm")
            .count()
    };
    assert_eq!(from_worker("exec-file"), 1, "{events:#?}");
    assert_eq!(from_worker("denied"), 1, "{events:#?}");
    assert!(from_worker("exit") >= 1, "{events:#?}");
    // The worker's exec is tagged with the pid the parent's fork event has.
    let forks: Vec<_> = events.iter().filter(|e| e["event"] == "fork").collect();
    let exec = events
        .iter()
        .find(|e| e["event"] == "exec-file" && e["worker"].is_object())
        .unwrap();
    assert_eq!(exec["worker"]["pid"], forks[0]["pid"]);
}

#[test]
fn the_operator_is_told_when_the_child_user_cannot_use_a_grant() {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    // A root-owned directory: children running as the guest's leased id
    // cannot write to it.
    let dir = tempfile::tempdir().unwrap();
    let out = wasmproc(&[
        "run",
        "--allow-shell",
        "--dir",
        &format!("{}::/data", dir.path().display()),
        guest("exec-probe").to_str().unwrap(),
        "shell",
        "true",
    ]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("children run as uid 15")
            && stderr.contains(&format!(
                "and cannot write to {} (owner 0, group 0,",
                dir.path().display()
            )),
        "{stderr}"
    );
}

#[test]
fn a_forked_worker_process_confines_itself_before_its_runtime_starts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let out = wasmproc(&[
        "run",
        "--audit-log",
        log.to_str().unwrap(),
        "--allow-fork",
        "guest-examples/prebuilt/support-worker.wasm",
        "guest-examples/prebuilt/seed-fork.wasm",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = audit_events(&log);
    let confined: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "worker-confined")
        .collect();
    assert_eq!(confined.len(), 3, "{events:#?}");
    for event in confined {
        // Landlock ABI 6 or later (this machine kind has 7): full.
        assert_eq!(event["landlock"], "full", "{event}");
        // Tagged by the host with the worker's pid as the host knows it.
        let pid = event["worker"]["pid"].as_u64().unwrap();
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "worker-process" && e["pid"] == pid),
            "{event}"
        );
    }
}

#[test]
fn allow_shell_does_not_take_the_component_for_its_shell() {
    let probe = guest("exec-probe");
    let out = wasmproc(&[
        "run",
        "--allow-shell",
        probe.to_str().unwrap(),
        "shell",
        "echo ok",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("stdout: \"ok\\n\""),
        "{}",
        text(&out.stdout)
    );
    let out = wasmproc(&[
        "run",
        "--allow-shell=/bin/sh",
        probe.to_str().unwrap(),
        "shell",
        "echo ok",
    ]);
    assert!(
        text(&out.stdout).contains("stdout: \"ok\\n\""),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn allow_shell_repeated_grants_each_shell_and_the_first_is_the_default() {
    let probe = guest("exec-probe");
    let which = "echo ${BASH_VERSION:+bash}";
    let out = wasmproc(&[
        "run",
        "--allow-shell",
        "--allow-shell=/bin/bash",
        probe.to_str().unwrap(),
        "shell",
        which,
        "---",
        "--shell",
        "bash",
        "shell",
        which,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let seen: Vec<&str> = (stdout.lines())
        .filter_map(|l| l.strip_prefix("stdout: "))
        .collect();
    assert_eq!(seen, ["\"\\n\"", "\"bash\\n\""], "{stdout}");
}

const FEATURES_DEMO_OUTPUT: &str = "\
pipe: exited(0) exited(0)
again: invalid-argument
file: \"5\\n4\\n3\\n2\\n1\\n6\\n\"
from file: \"1\\n2\\n3\\n4\\n5\\n6\\n\"
create_new over a file: io
timeout: signaled(15), timed out success=false signal=Some(15)
kill_signal: signaled(9), timed out
output timeout: signaled(15), timed out true
wait_timeout: None then signaled(9)
usage: rss>0=true cpu<10s=true
exec_in: \"from sh\\n\"
exec_in bash: access-denied
worker exit: exited(7)
worker trap: code=Some(134) trapped=true
worker stdout to sort: \"apple\\nfig\\npear\\n\" exited(0)
close_channel: send=closed worker exited(3)
parent closed: \"bye\" then None, worker exited(0)
nested fork: exited(5)
nested fork without the grant: exited(13)
placement cluster: unsupported
";

#[test]
fn the_rust_process_layer_covers_wit_0_2_0() {
    let dir = tempfile::tempdir().unwrap();
    let demo = guest("features-demo");
    let demo = demo.to_str().unwrap();
    let grant = format!("{}::/data", dir.path().display());
    let out = wasmproc(&[
        "run",
        "--dir",
        &grant,
        "--allow-run",
        "seq",
        "--allow-run",
        "sort",
        "--allow-run",
        "sleep",
        "--allow-shell",
        "--allow-fork",
        demo,
        demo,
        "features-demo.wasm",
        "/data",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        FEATURES_DEMO_OUTPUT,
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn policy_example_prints_the_example_file_that_the_policy_parser_is_tested_on() {
    let out = wasmproc(&["policy", "--example"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let example = std::fs::read_to_string(repo().join("src/policy-example.toml")).unwrap();
    assert_eq!(text(&out.stdout), example);
    // Every key it shows is one the file format knows: an unknown key is
    // refused, naming it.
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(policy.path(), "no_such_key = 1\n").unwrap();
    let refused = wasmproc(&[
        "run",
        "--policy",
        policy.path().to_str().unwrap(),
        guest("exec-probe").to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("no_such_key"),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn sizes_take_the_usual_units_and_a_bad_one_is_refused_naming_the_flag() {
    let probe = guest("exec-probe");
    let out = wasmproc(&[
        "run",
        "--max-wasm-memory",
        "64MiB",
        "--max-buffer",
        "1k",
        "--allow-run",
        testprog().to_str().unwrap(),
        probe.to_str().unwrap(),
        "--",
        "--max-buffer",
        "1025",
        "file",
        TP,
        "echo",
    ]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("above the host's limit of 1024 bytes (raise it with --max-buffer)"),
        "{stderr}"
    );
    let out = wasmproc(&["run", "--max-buffer", "1kg", probe.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(
            "invalid value '1kg' for '--max-buffer <SIZE>': `1kg` is not a size: give bytes, \
             or a number with a unit (k, M, G, KiB, MiB, GiB, kB, MB, GB)"
        ),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_relative_guest_path_and_two_dirs_at_one_guest_path_are_refused_at_start_naming_the_flag() {
    let seed = "guest-examples/prebuilt/seed-exec.wasm";
    let out = wasmproc(&["run", "--dir-ro", "guest-examples::relative", seed]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(
            "invalid value 'guest-examples::relative' for '--dir-ro <HOST[::GUEST]>': the guest \
             path `relative` is relative: give an absolute one, such as `/relative`"
        ),
        "{}",
        text(&out.stderr)
    );
    let out = wasmproc(&[
        "run",
        "--allow-shell",
        "--dir",
        "guest-examples::/support",
        "--dir",
        "guest-examples/support::/support",
        seed,
    ]);
    assert_eq!(
        text(&out.stderr),
        "wasmproc: error: --dir guest-examples/support::/support: the guest path /support is \
         granted already, by --dir guest-examples::/support\n"
    );
    assert_eq!(text(&out.stdout), "", "the guest never ran");
    assert!(!out.status.success());
}

#[test]
fn an_injection_variable_allowed_without_allow_injection_env_is_refused_at_start() {
    let seed = "guest-examples/prebuilt/seed-exec.wasm";
    let out = wasmproc(&["run", "--allow-shell", "--allow-env", "LD_PRELOAD", seed]);
    assert_eq!(
        text(&out.stderr),
        "wasmproc: error: --allow-env LD_PRELOAD: LD_PRELOAD is a loader or interpreter \
         injection variable, which lets whoever sets it run code of their choice in the \
         child: grant it with --allow-injection-env LD_PRELOAD, knowingly\n"
    );
    assert_eq!(text(&out.stdout), "", "the guest never ran");
    assert!(!out.status.success());
}

#[test]
fn a_denied_program_off_the_path_gets_a_hint_that_works_when_pasted() {
    let seed = "guest-examples/prebuilt/seed-spawn.wasm";
    let out = wasmproc(&["run", seed]);
    let stderr = text(&out.stderr);
    let support = repo().join("guest-examples/support/support");
    let hint = format!(
        "wasmproc: denied: program `support` is not allowed (`support` is not on the host's \
         PATH: grant it by its path, --allow-run {})",
        support.display()
    );
    assert!(stderr.contains(&hint), "{stderr}");
    let pasted = hint
        .rsplit_once("--allow-run ")
        .unwrap()
        .1
        .trim_end_matches(')');
    let out = wasmproc(&["run", "--allow-run", pasted, seed]);
    assert_eq!(text(&out.stderr), "");
    assert!(out.status.success());
}

#[test]
fn the_first_run_of_a_big_guest_says_it_compiles_once_and_how_to_do_it_ahead_of_time() {
    let hello = guest("hello-py");
    // At a terminal (`script` gives the run one): the notice, once.
    let cache = tempfile::tempdir().unwrap();
    let at_a_terminal = || {
        let command = format!("{} run {}", env!("CARGO_BIN_EXE_wasmproc"), hello.display());
        Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("WASMPROC_CACHE", cache.path().join("components"))
            .output()
            .unwrap()
    };
    let first = at_a_terminal();
    assert!(first.status.success(), "{}", text(&first.stdout));
    let notice = format!(
        "wasmproc: compiling {0} (only on its first run: `wasmproc compile {0}` does it ahead \
         of time)",
        hello.display()
    );
    assert!(
        text(&first.stdout).contains(&notice),
        "{}",
        text(&first.stdout)
    );
    let second = at_a_terminal();
    assert!(
        !text(&second.stdout).contains("compiling"),
        "the second run loads it from the cache: {}",
        text(&second.stdout)
    );
    // To a pipe (a script comparing output): nothing but the guest's own.
    let cache = tempfile::tempdir().unwrap();
    let piped = Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args(["run", hello.to_str().unwrap()])
        .env("WASMPROC_CACHE", cache.path().join("components"))
        .output()
        .unwrap();
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    assert_eq!(text(&piped.stderr), "");
}

#[test]
fn logs_written_to_a_file_or_pipe_carry_no_colour_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args(["run", "--allow-shell", "--dir-ro"])
        .args([
            "guest-examples/support::/support",
            "guest-examples/prebuilt/seed-exec.wasm",
        ])
        .env("WASMPROC_LOG", "wasmproc=debug")
        .current_dir(repo())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(stderr.contains("DEBUG"), "logs were written: {stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}

#[test]
fn timeout_is_a_deadline_for_every_child_even_one_spawned_without_a_timeout() {
    let started = std::time::Instant::now();
    let out = wasmproc(&[
        "run",
        "--timeout",
        "1s",
        "--allow-run",
        testprog().to_str().unwrap(),
        guest("spawn-probe").to_str().unwrap(),
        "wait-timeout",
        "20000",
        "testprog",
        "sleep",
        "30",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Ended by the operator's deadline (SIGTERM), not the guest's wait.
    assert!(
        text(&out.stdout).contains("ended: signaled(15)"),
        "{}",
        text(&out.stdout)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}

#[test]
fn a_guest_whose_output_reader_goes_away_ends_quietly_as_a_cli_on_sigpipe() {
    use std::io::Read;
    // `wasmproc run … | head -c 1`: the guest writes megabyte lines to a
    // pipe whose reader leaves after one byte. (Three: the host may take a
    // whole line in before the reader leaves, and the guest learns of a
    // failed write only at its next one.)
    let flood = ["file", "testprog", "flood", "1000000"];
    let mut host = Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args(["run", "--allow-run", testprog().to_str().unwrap()])
        .arg(guest("exec-probe"))
        .args(flood)
        .arg("---")
        .args(flood)
        .arg("---")
        .args(flood)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    host.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = host.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("trapped"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn audit_lines_name_their_run_and_guest_so_two_runs_sharing_a_log_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let probe = guest("exec-probe");
    for _ in 0..2 {
        let out = wasmproc(&[
            "run",
            "--audit-log",
            log.to_str().unwrap(),
            "--allow-run",
            testprog().to_str().unwrap(),
            probe.to_str().unwrap(),
            "file",
            "testprog",
            "echo",
            "hi",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let events = audit_events(&log);
    assert!(events.len() >= 4, "{events:#?}");
    let runs: std::collections::BTreeSet<String> =
        events.iter().map(|e| e["run"].to_string()).collect();
    assert_eq!(runs.len(), 2, "{events:#?}");
    for event in &events {
        assert!(event["run"].is_string(), "{event}");
        assert_eq!(event["guest"], probe.to_str().unwrap(), "{event}");
    }
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let parent = pid.to_string();
    (std::fs::read_dir("/proc").unwrap().flatten())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split(' ').collect();
            fields.get(1) == Some(&parent.as_str())
        })
        .collect()
}

#[test]
fn a_killed_host_leaves_no_worker_even_one_that_never_reads_its_channel() {
    // The worker sleeps (it reads nothing) while the guest waits for it:
    // only the kernel's parent-death signal can end it with the host. A
    // worker's change to its guest's user clears that signal: it must be
    // set again after.
    let mut host = Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args([
            "run",
            "--allow-fork",
            guest("echo-worker").to_str().unwrap(),
        ])
        .args([
            guest("fork-probe").to_str().unwrap(),
            "wait-timeout",
            "60000",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Its processes: the template, and the worker it forked (which the host
    // counts as its own child).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let workers = loop {
        let children = children_of(host.id());
        if children.len() >= 2 {
            break children;
        }
        assert!(std::time::Instant::now() < deadline, "no worker started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // Past its specification: running as the guest's user.
    std::thread::sleep(std::time::Duration::from_millis(500));
    host.kill().unwrap(); // SIGKILL: no cleanup code runs in the host
    host.wait().unwrap();
    for pid in workers {
        let alive = Command::new(testprog())
            .args(["alive", &pid.to_string()])
            .output()
            .unwrap();
        assert_eq!(
            text(&alive.stdout),
            "gone\n",
            "worker process {pid} outlived the killed host"
        );
    }
}

/// An executable file at `path` holding `text`.
fn executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `wasmproc run GRANTS hello.wasm`, without pyenv's version override.
fn run_hello_granting(grants: &[&str]) -> Output {
    let hello = guest("hello");
    Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .arg("run")
        .args(grants)
        .arg(&hello)
        .env_remove("PYENV_VERSION")
        .current_dir(repo())
        .output()
        .expect("run wasmproc")
}

#[test]
fn a_granted_pyenv_shim_is_named_with_the_interpreter_to_grant_instead() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join(".pyenv");
    let shim = root.join("shims/python3");
    executable(
        &shim,
        "#!/usr/bin/env bash\nexec \"$PYENV_ROOT/libexec/pyenv\" exec python3 \"$@\"\n",
    );
    std::fs::write(root.join("version"), "3.12.1\n").unwrap();
    let real = root.join("versions/3.12.1/bin/python3");
    executable(&real, "#!/bin/sh\n");
    let out = run_hello_granting(&["--allow-run", shim.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} is a version manager's shim, which runs files children cannot see: \
             grant the program it stands for, --allow-run {}",
            shim.display(),
            real.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_granted_script_whose_interpreter_children_cannot_see_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let interpreter = tmp.path().join("opt/interp");
    executable(&interpreter, "#!/bin/sh\n");
    let script = tmp.path().join("tool");
    executable(
        &script,
        &format!("#!{} -x\nsay hi\n", interpreter.display()),
    );
    let out = run_hello_granting(&["--allow-run", script.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} is a script run by {1}, which children cannot see: grant it too, --allow-run {1}",
            script.display(),
            interpreter.display()
        )),
        "{stderr}"
    );
    // Granted too, or a script of the system's, it is not named.
    let both = [
        "--allow-run",
        script.to_str().unwrap(),
        "--allow-run",
        interpreter.to_str().unwrap(),
    ];
    let out = run_hello_granting(&both);
    assert!(
        !text(&out.stderr).contains("children cannot see"),
        "{}",
        text(&out.stderr)
    );
    let system = tmp.path().join("system-tool");
    executable(&system, "#!/bin/sh\necho hi\n");
    let out = run_hello_granting(&["--allow-run", system.to_str().unwrap()]);
    assert!(
        !text(&out.stderr).contains("children cannot see"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn what_follows_the_component_is_the_guests_even_when_it_looks_like_a_flag() {
    let probe = guest("exec-probe");
    let out = wasmproc(&[
        "run",
        "--max-children",
        "4",
        probe.to_str().unwrap(),
        "spawn",
        "--dir",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // The guest asked to spawn `--dir` (not granted), and wasmproc did not
    // take `--dir` for its own flag (which wants a value).
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("error: access-denied") && stdout.contains("--dir"),
        "{stdout}"
    );
    // `--` given by hand still works, and is the guest's no longer.
    let out = wasmproc(&["run", probe.to_str().unwrap(), "--", "spawn", "--dir"]);
    assert!(text(&out.stdout).contains("--dir"), "{}", text(&out.stdout));
}

#[test]
fn a_file_that_is_not_webassembly_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let text_file = tmp.path().join("notes.wasm");
    std::fs::write(&text_file, "not wasm at all").unwrap();
    let out = wasmproc(&["run", text_file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!(
            "{} is not a WebAssembly file",
            text_file.display()
        )),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_shell_taken_for_the_component_after_a_bare_allow_shell_gets_the_flag_meant() {
    let hello = guest("hello");
    let out = wasmproc(&["run", "--allow-shell", "/bin/sh", hello.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("/bin/sh is not a WebAssembly file")
            && stderr.contains("write --allow-shell=/bin/sh"),
        "{stderr}"
    );
}

#[test]
fn a_core_module_is_named_with_how_to_make_a_component() {
    let tmp = tempfile::tempdir().unwrap();
    let module = tmp.path().join("module.wasm");
    // The smallest core module: the magic and version 1.
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let out = wasmproc(&["run", module.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("is a core WebAssembly module, not a component")
            && stderr.contains("wasm-tools component new"),
        "{stderr}"
    );
}

/// `sh` found in PATH (/usr/bin/sh) and /bin/sh are one file under two
/// names: granting both is one grant, and a guest asking for /bin/sh (as
/// `shell=True` does in the guest libraries) gets it.
#[test]
fn sh_granted_by_name_answers_to_bin_sh_and_both_names_are_one_grant() {
    let probe = guest("exec-probe");
    let probe = probe.to_str().unwrap();
    for grants in [
        &["--allow-run", "sh"][..],
        &["--allow-run", "sh", "--allow-run", "/bin/sh"],
    ] {
        let args: Vec<&str> = ["run"]
            .iter()
            .chain(grants)
            .chain(&[probe, "spawn", "/bin/sh"])
            .copied()
            .collect();
        let out = wasmproc(&args);
        assert!(out.status.success(), "{grants:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).starts_with("spawned: pid"),
            "{grants:?}: {}",
            text(&out.stdout)
        );
    }
}

/// `wasmproc wit --out DIR` writes the package with every wasi package it
/// uses, the repository's `wit/` folder file for file, so that a guest
/// toolchain builds against DIR as it is; `wasmproc wit` alone prints
/// process.wit.
#[test]
fn wit_out_writes_the_package_with_its_dependencies() {
    let tmp = tempfile::tempdir().unwrap();
    let out = wasmproc(&["wit", "--out", tmp.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut todo = vec![repo().join("wit")];
    let mut files = 0;
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            let rel = path.strip_prefix(repo().join("wit")).unwrap();
            let written = std::fs::read(tmp.path().join(rel))
                .unwrap_or_else(|e| panic!("{} not written: {e}", rel.display()));
            assert_eq!(written, std::fs::read(&path).unwrap(), "{}", rel.display());
            files += 1;
        }
    }
    assert!(files >= 7, "{files}");
    let printed = wasmproc(&["wit"]);
    assert_eq!(
        printed.stdout,
        std::fs::read(repo().join("wit/process.wit")).unwrap()
    );
}
