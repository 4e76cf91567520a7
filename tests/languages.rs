//! Guests in any language: the `fanout` example, written in Rust, C, Python
//! and JavaScript (guest-examples/fanout, c/, python/, js/), built from
//! source by scripts/build-guests.sh, prints byte-identical output against
//! the same directory, and each reports a denied program by its WIT
//! `error-code` name.

mod common;

use common::*;
use wasmproc::GuestExit;
use wasmproc_host::DirAccess;

/// The fixture directory: files with known line counts, and a
/// subdirectory, which fanout leaves out.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, lines) in FILES {
        let body: String = (0..*lines).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    std::fs::create_dir(dir.path().join("subdir")).unwrap();
    std::fs::write(dir.path().join("subdir/inner.txt"), "x\n").unwrap();
    dir
}

/// `(name, lines)` of the fixture's files, in no particular order.
const FILES: &[(&str, usize)] = &[
    ("notes.md", 12),
    ("a.txt", 3),
    ("empty", 0),
    ("B-upper.txt", 1),
    ("zeta.log", 250),
    ("m.csv", 7),
];

/// At most this many children at once.
const K: usize = 2;

/// What every language's fanout must print for the fixture, running
/// `testprog wc NAME` per file: one `NAME: <stdout trimmed>` line per file,
/// sorted by name (bytewise), then the summary.
fn expected() -> String {
    let mut files = FILES.to_vec();
    files.sort();
    let mut out = String::new();
    for (name, lines) in &files {
        out.push_str(&format!("{name}: {lines} {name}\n"));
    }
    out.push_str(&format!("{} files, at most {K} at once\n", files.len()));
    out
}

/// Grants `testprog` and the fixture as `/data`, for the guest's own file
/// access (a read-only preopen) and for its children's working directory.
async fn fanout(component: &str, args: &[&str]) -> GuestRun {
    let dir = fixture();
    let mut grants = grants_testprog();
    grants
        .dir(dir.path(), "/data", DirAccess::ReadOnly)
        .unwrap();
    run_component_with_dir(&guest(component), grants, dir.path(), "/data", args).await
}

/// The component runs the fixture to the expected output, and a run asking
/// for a program that is not granted prints `error: access-denied`.
async fn check_language(component: &str) {
    let k = K.to_string();
    let run = fanout(component, &["/data", &k, TP, "wc"]).await;
    assert_eq!(
        run.exit,
        GuestExit::Code(0),
        "{component}: {}\n{:?}",
        run.stderr,
        run.trap
    );
    assert_eq!(run.stdout, expected(), "{component}'s output");
    assert!(run.denials.is_empty(), "{:?}", run.denials);

    let denied = fanout(component, &["/data", &k, "cat"]).await;
    assert_eq!(
        denied.exit,
        GuestExit::Code(1),
        "{component}: {}\n{:?}",
        denied.stderr,
        denied.trap
    );
    assert_eq!(denied.stdout, "error: access-denied\n", "{component}");
    assert!(
        denied
            .stderr
            .contains("access-denied: program `cat` is not allowed"),
        "{component}: {}",
        denied.stderr
    );
    assert_eq!(denied.denials.len(), 1, "{:?}", denied.denials);
}

#[tokio::test(flavor = "multi_thread")]
async fn fanout_in_rust() {
    check_language("fanout").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fanout_in_c() {
    check_language("fanout-c").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fanout_in_python() {
    check_language("fanout-py").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fanout_in_javascript() {
    check_language("fanout-js").await;
}

/// Children run at most K at once whatever K is, and K above the number of
/// files runs them all at once (the same in every language: checked for
/// the compiled ones, which load in milliseconds).
#[tokio::test(flavor = "multi_thread")]
async fn fanout_reports_how_many_ran_at_once() {
    for component in ["fanout", "fanout-c"] {
        for (k, most) in [(1, 1), (4, 4), (100, FILES.len())] {
            let run = fanout(component, &["/data", &k.to_string(), TP, "wc"]).await;
            assert_eq!(run.exit, GuestExit::Code(0), "{}", run.stderr);
            let summary = format!("{} files, at most {most} at once\n", FILES.len());
            assert!(
                run.stdout.ends_with(&summary),
                "{component} K={k}: {}",
                run.stdout
            );
        }
    }
}

/// A child that fails is reported with its exit status.
#[tokio::test(flavor = "multi_thread")]
async fn fanout_reports_failed_children() {
    for component in ["fanout", "fanout-c"] {
        // `testprog exit NAME` panics on a name that is not a number: 101.
        let run = fanout(component, &["/data", "3", TP, "exit"]).await;
        assert_eq!(run.exit, GuestExit::Code(0), "{}", run.stderr);
        assert!(
            run.stdout.starts_with("B-upper.txt:  [exited 101]\n"),
            "{component}: {}",
            run.stdout
        );
    }
}

/// The Rust guest layer modelled on `std::process` (wasmproc-guest's
/// `process` module): `Command::output`, piped stdin with
/// `wait_with_output`, `Read` on a child's stdout, `status`, errors with
/// their error-code, `exec`, and `fork` with `send`/`recv`.
#[tokio::test(flavor = "multi_thread")]
async fn the_rust_command_layer_works_end_to_end() {
    let run = run_component(
        &guest("command-demo"),
        grants_fork(),
        &[TP, "echo-worker.wasm"],
    )
    .await;
    assert_eq!(
        run.exit,
        GuestExit::Code(0),
        "{}\n{:?}",
        run.stderr,
        run.trap
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 8, "{}", run.stdout);
    assert_eq!(lines[0], r#"output: exited(0) "hello world\n""#);
    assert_eq!(lines[1], r#"piped: exited(0) "through a pipe""#);
    assert_eq!(lines[2], r#"read: "streamed\n""#);
    assert_eq!(lines[3], "status: exited(3) success=false code=Some(3)");
    assert_eq!(lines[4], "cat: access-denied (true)");
    // The error's Display: what was done, the error-code, the host's message.
    assert!(
        lines[5].starts_with(r#"exec: exec "echo hi": access-denied: "#),
        "{}",
        lines[5]
    );
    assert_eq!(lines[6], "io: PermissionDenied");
    assert_eq!(lines[7], r#"worker: "ping""#);
}
