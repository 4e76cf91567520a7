//! Node programs run by `node` and by `wasmproc run` print the same: the
//! classic child_process tutorial's exec, spawn and fork examples
//! (guest-examples/node), built into components with the JavaScript guest
//! library's `wasmproc-componentize-node` (guest-libs/js/wasmproc-child-process),
//! their children real `node` processes and the forked worker a component
//! built from the same support.js. Where Node's own order depends on which
//! child finishes first, the lines are compared as sorted lists; the
//! features program runs its steps one after the other and must match line
//! for line, as must the disconnect program (a parent's `disconnect()` ends
//! its worker's channel; the worker is built from echo.js).

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

/// A directory holding the Node programs, `support.js` and `echo.js`, the
/// worker components built from them as `support.wasm` and `echo.wasm` (what
/// `fork('support.js')` names), and `sub/`; readable by the children's user (65534).
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("guest-examples/node");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "js") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(guest("support-node"), dir.path().join("support.wasm")).unwrap();
    std::fs::copy(guest("echo-node"), dir.path().join("echo.wasm")).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    open_to_children(dir.path());
    dir
}

/// `node PROGRAM.js ARGS...` in `dir`.
fn node(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new("node")
        .arg(format!("{program}.js"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run node (installed by scripts/build-guests.sh)")
}

/// `wasmproc run GRANTS... --dir-ro DIR PROGRAM-node.wasm ARGS...` in `dir`:
/// the children's working directory is `dir`, at its host path, as node's.
fn wasmproc(dir: &Path, program: &str, grants: &[&str], args: &[&str]) -> Output {
    let component = guest(&format!("{program}-node"));
    Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .arg("run")
        .args(grants)
        .arg("--dir-ro")
        .arg(dir)
        .arg(component)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run wasmproc")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sorted_lines(bytes: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = text(bytes).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// Runs `program` both ways and returns (node's output, wasmproc's),
/// after checking both exited with `code`.
fn both(program: &str, grants: &[&str], args: &[&str], code: i32) -> (Output, Output) {
    let dir = fixture();
    let by_node = node(dir.path(), program, args);
    let by_wasmproc = wasmproc(dir.path(), program, grants, args);
    for (who, out) in [("node", &by_node), ("wasmproc", &by_wasmproc)] {
        assert_eq!(
            out.status.code(),
            Some(code),
            "{program} by {who}:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    (by_node, by_wasmproc)
}

#[test]
fn the_exec_tutorial_prints_what_node_prints() {
    let (by_node, by_wasmproc) = both("exec", &["--allow-shell"], &[], 0);
    assert_eq!(
        sorted_lines(&by_wasmproc.stdout),
        sorted_lines(&by_node.stdout)
    );
    // What the program prints for each child, whatever the order.
    let out = text(&by_wasmproc.stdout);
    for i in 0..3 {
        assert!(
            out.contains(&format!("stdout: Child Process {i} executed.\n")),
            "{out}"
        );
    }
    assert_eq!(
        out.matches("Child process exited with exit code 0\n")
            .count(),
        2
    );
    assert!(
        out.contains("Child process exited with exit code 3\nError code: 3\n"),
        "{out}"
    );
    assert!(
        out.contains("stderr: Child Process 2 complains.\n"),
        "{out}"
    );
}

#[test]
fn the_spawn_tutorial_streams_what_node_streams() {
    let (by_node, by_wasmproc) = both("spawn", &["--allow-run", "node"], &[], 0);
    assert_eq!(
        sorted_lines(&by_wasmproc.stdout),
        sorted_lines(&by_node.stdout)
    );
    let out = text(&by_wasmproc.stdout);
    assert_eq!(
        out.matches("child process exited with code 0\n").count(),
        2,
        "{out}"
    );
    assert_eq!(
        out.matches("child process exited with code 3\n").count(),
        1,
        "{out}"
    );
}

#[test]
fn the_fork_tutorial_with_a_worker_built_from_support_js_prints_what_node_prints() {
    let (by_node, by_wasmproc) = both("fork", &["--allow-fork", "support.wasm"], &[], 0);
    assert_eq!(
        sorted_lines(&by_wasmproc.stdout),
        sorted_lines(&by_node.stdout)
    );
    // Each worker's own output (inherited stdout and stderr), its answer
    // over the channel, and its exit code.
    let out = text(&by_wasmproc.stdout);
    for i in 0..3 {
        assert!(
            out.contains(&format!("Child Process {i} executed.\n")),
            "{out}"
        );
        let answer = format!(r#"message from child: {{"child":{i},"got":{{"hello":{i}}}}}"#);
        assert!(out.contains(&answer), "{out}");
    }
    assert!(out.contains("child process exited with code 3\n"), "{out}");
    assert_eq!(
        sorted_lines(&by_wasmproc.stderr),
        sorted_lines(&by_node.stderr)
    );
}

#[test]
fn disconnect_from_the_parent_ends_the_workers_channel_as_in_node() {
    let (by_node, by_wasmproc) = both("disconnect", &["--allow-fork", "echo.wasm"], &[], 0);
    assert_eq!(text(&by_wasmproc.stdout), text(&by_node.stdout));
    // The worker saw its 'disconnect' (its exit code 4) and ended by itself.
    assert!(
        text(&by_node.stdout).ends_with("worker exited: 4 null\n"),
        "{}",
        text(&by_node.stdout)
    );
    assert_eq!(text(&by_wasmproc.stderr), text(&by_node.stderr));
}

#[test]
fn child_process_options_results_and_errors_match_node_line_for_line() {
    let grants = [
        "--allow-shell",
        "--allow-run",
        "node",
        "--allow-env",
        "GREETING",
    ];
    let (by_node, by_wasmproc) = both("features", &grants, &["a", "b"], 2);
    assert_eq!(text(&by_wasmproc.stdout), text(&by_node.stdout));
    assert_eq!(text(&by_node.stdout).lines().count(), 31);
}

#[test]
fn exec_through_a_shell_not_granted_is_an_enoent_error_that_names_the_shell() {
    let dir = fixture();
    let out = wasmproc(dir.path(), "shell", &["--allow-shell=/bin/sh"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "bash: ENOENT | spawn /bin/bash ENOENT (wasmproc access-denied: shell `/bin/bash` is not granted for `exec`)\n\
         sh: hi\n"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("grant it with --allow-shell=/bin/bash"),
        "{stderr}"
    );
}

#[test]
fn a_program_not_granted_is_an_enoent_error_that_names_what_was_denied() {
    let dir = fixture();
    let out = wasmproc(dir.path(), "denied", &["--allow-run", "node"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "execFileSync error: ENOENT access-denied\n\
         fs error: ERR_WASMPROC_UNSUPPORTED\n\
         spawn error: ENOENT -2 spawn cat | spawn cat ENOENT (wasmproc access-denied: program `cat` is not allowed)\n\
         spawn spawnargs: [\"/etc/passwd\"]\n\
         spawn close: -2\n\
         execFile error: ENOENT\n\
         exec error: ENOENT\n\
         fork error: ENOENT fork not-granted.wasm stdout true\n\
         promisified execFile: ENOENT child true\n"
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("grant it with --allow-run cat"), "{stderr}");
    assert!(stderr.contains("no shell is granted"), "{stderr}");
}
