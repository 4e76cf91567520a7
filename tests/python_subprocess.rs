//! The Python guest library (guest-libs/python/wasmproc-subprocess) behaves
//! as CPython's `subprocess`: guest-examples/python/conformance.py prints
//! the same, line for line, run by CPython with the standard library and
//! run by `wasmproc run` as a component with `wasmproc_subprocess`, its
//! children real `python3` processes. A program not granted is a
//! FileNotFoundError naming what was refused, and `fork`/`parent` pass JSON messages between
//! Python and JavaScript workers.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

/// The interpreter the children run: the system's, granted by path.
const PYTHON: &str = "/usr/bin/python3";

/// A directory (readable by the children's user) with conformance.py, the
/// worker components and `sub/`.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("guest-examples/python/conformance.py"),
        dir.path().join("conformance.py"),
    )
    .unwrap();
    for worker in ["upper_worker-py", "support-node", "echo-worker"] {
        std::fs::copy(guest(worker), dir.path().join(format!("{worker}.wasm"))).unwrap();
    }
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    open_to_children(dir.path());
    dir
}

/// `wasmproc run GRANTS... --dir-ro DIR COMPONENT ARGS...` in `dir`.
fn wasmproc(dir: &Path, component: &str, grants: &[&str], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .arg("run")
        .args(grants)
        .arg("--dir-ro")
        .arg(dir)
        .arg(guest(component))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run wasmproc")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_conformance_script_prints_what_cpython_prints() {
    let dir = fixture();
    let cpython = Command::new(PYTHON)
        .args(["conformance.py", PYTHON])
        .current_dir(dir.path())
        .output()
        .expect("run python3");
    assert!(cpython.status.success(), "{}", text(&cpython.stderr));
    let grants = [
        "--allow-run",
        PYTHON,
        "--allow-run",
        "/bin/sh",
        "--allow-shell",
        "--allow-env",
        "GREETING",
    ];
    let component = wasmproc(dir.path(), "conformance-py", &grants, &[PYTHON]);
    assert!(component.status.success(), "{}", text(&component.stderr));
    assert_eq!(text(&component.stdout), text(&cpython.stdout));
    assert_eq!(text(&cpython.stdout).lines().count(), 40);
}

#[test]
fn a_program_not_granted_is_a_file_not_found_error_that_names_what_was_denied() {
    let dir = fixture();
    let run = wasmproc(
        dir.path(),
        "conformance-py",
        &["--allow-run", PYTHON],
        &[PYTHON, "denied"],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(
        text(&run.stdout),
        "denied cat: ('FileNotFoundError', 2, 'cat', 'access-denied')\n\
         [Errno 2] No such file or directory (wasmproc access-denied: program `cat` is not allowed): 'cat'\n\
         denied no-such-program: ('FileNotFoundError', 2, 'no-such-program', 'access-denied')\n\
         [Errno 2] No such file or directory (wasmproc access-denied: program `no-such-program` is not allowed): 'no-such-program'\n\
         denied shell: (2, 'access-denied')\n"
    );
}

#[test]
fn forked_python_and_javascript_workers_answer_json_messages() {
    let dir = fixture();
    let grants = [
        "--allow-fork",
        "upper_worker-py.wasm",
        "--allow-fork",
        "support-node.wasm",
        "--allow-fork",
        "echo-worker.wasm",
    ];
    let run = wasmproc(
        dir.path(),
        "fork_demo-py",
        &grants,
        &[
            "upper_worker-py.wasm",
            "support-node.wasm",
            "echo-worker.wasm",
        ],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let out = text(&run.stdout);
    // The workers print to the stdout they inherit, at their own pace.
    let workers_own = [
        "worker a done",
        "worker b done",
        "Child Process 7 executed.",
    ];
    for line in workers_own {
        assert!(out.lines().any(|l| l == line), "{line}: {out}");
    }
    let ours: Vec<&str> = out.lines().filter(|l| !workers_own.contains(l)).collect();
    assert_eq!(
        ours,
        [
            "answer: {'worker': 'a', 'upper': 'HELLO 0'}",
            "answer: {'worker': 'b', 'upper': 'HELLO 1'}",
            "iterated: {'worker': 'a', 'upper': 'MORE'}",
            "iterated: {'worker': 'a', 'upper': 'AND MORE'}",
            "first exited: 0",
            "second still running after 0.1",
            "second after close: closed",
            "second exited: 0",
            "javascript answer: [{'child': 7, 'got': {'from': 'python'}}]",
            "javascript exited: 0",
            "trapped worker exited: 134",
            "denied: 2 access-denied",
        ]
    );
}
