//! The launcher as a worker's native code would meet it: requests sent
//! straight to its socket, outside what the worker's own context checks.

use super::service::{Rights, Services};
use super::{Answer, Ask, Kind, Stdio};
use crate::ctx::ProcessCtx;
use crate::failure::Failure;
use crate::outcome::ExitStatus;
use crate::policy::{DirAccess, Request, Run};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A launcher serving a worker granted `programs` and the directory
/// `dir` (read-write), unconfined (these tests are of its checks); the
/// worker's end of its socket.
fn launcher(programs: &[&str], dir: &Path) -> UnixStream {
    launcher_with(programs, dir, |_| {})
}

/// As [`launcher`], the worker's grants changed by `more`.
fn launcher_with(
    programs: &[&str],
    dir: &Path,
    more: impl FnOnce(&mut crate::ctx::ProcessCtxBuilder),
) -> UnixStream {
    let mut builder = ProcessCtx::builder();
    for program in programs {
        builder.allow_program(program).unwrap();
    }
    builder.dir(dir, "/work", DirAccess::ReadWrite).unwrap();
    more(&mut builder);
    let ctx = builder.confine(false).build();
    let launcher = (ctx.launcher).for_worker(&ctx.policy, &ctx.dirs, None, None);
    let rights = Rights {
        policy: ctx.policy.clone(),
        dirs: ctx.dirs.clone(),
        launcher,
    };
    let (ours, theirs) = UnixStream::pair().unwrap();
    let services = Arc::new(Services::default());
    let account = super::service::Account::new();
    services
        .serve(ours, Arc::new(Mutex::new(rights)), account)
        .unwrap();
    theirs
}

/// Sends `ask` with `fds`; the answer and the descriptors with it.
fn ask(socket: &UnixStream, ask: &Ask, fds: &[&OwnedFd]) -> (Answer, Vec<OwnedFd>) {
    let fds: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
    let bytes = serde_json::to_vec(ask).unwrap();
    crate::channel::send_frame_with_fds(socket, &bytes, &fds).unwrap();
    let (answer, fds) = crate::channel::read_frame_with_fds(socket).unwrap();
    (serde_json::from_slice(&answer).unwrap(), fds)
}

/// A request to start `program` with `args` in working directory `cwd`.
fn start(program: &str, args: &[&str], cwd: Option<&str>, stdio: [Stdio; 3]) -> Ask {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let cwd = cwd.map(str::to_owned);
    Ask::Start {
        kind: Kind::Spawn,
        request: Request::new(Run::Program(program, &args), &cwd, &[]).to_asked(),
        stdio,
    }
}

const NULL: [Stdio; 3] = [Stdio::Null, Stdio::Null, Stdio::Null];

/// Starts `sleep 60` on `socket`; its id there and its pid.
fn sleeper(socket: &UnixStream) -> (u64, i32) {
    let (answer, _) = ask(socket, &start("sleep", &["60"], None, NULL), &[]);
    let Answer::Started { id, pid, .. } = answer else {
        panic!("{answer:?}");
    };
    (id, pid)
}

/// Waits (10 s at most) for process `pid` to be gone: `what` did not end it.
async fn gone(pid: i32, what: &str) {
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rustix::process::test_kill_process(pid).is_ok() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_asking_its_launcher_for_a_program_not_granted_to_it_is_refused_and_nothing_runs()
{
    let dir = tempfile::tempdir().unwrap();
    let socket = launcher(&["/bin/true"], dir.path());
    let marker = dir.path().join("marker");
    let touch = start("/usr/bin/touch", &[marker.to_str().unwrap()], None, NULL);
    let (answer, fds) = ask(&socket, &touch, &[]);
    assert!(
        matches!(&answer, Answer::Failed(Failure::AccessDenied(m)) if m.contains("touch")),
        "{answer:?}"
    );
    assert!(fds.is_empty());
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!marker.exists(), "the refused program ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_asking_for_a_working_directory_outside_its_grants_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = launcher(&["/bin/true"], dir.path());
    for cwd in ["/etc", "/work/../..", "/"] {
        let (answer, _) = ask(&socket, &start("true", &[], Some(cwd), NULL), &[]);
        assert!(matches!(answer, Answer::Failed(_)), "{cwd}: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_or_path_descriptor_given_as_a_childs_stdio_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = launcher(&["/bin/true"], dir.path());
    let directory: OwnedFd = std::fs::File::open("/").unwrap().into();
    let path = rustix::fs::open(
        "/etc/passwd",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let given = [Stdio::Given, Stdio::Null, Stdio::Null];
    for fd in [&directory, &path] {
        let (answer, _) = ask(&socket, &start("true", &[], None, given), &[fd]);
        assert!(
            matches!(&answer, Answer::Failed(Failure::InvalidArgument(m)) if m.contains("stdio")),
            "{answer:?}"
        );
    }
    // One descriptor too few is refused too.
    let (answer, _) = ask(&socket, &start("true", &[], None, given), &[]);
    assert!(
        matches!(answer, Answer::Failed(Failure::InvalidArgument(_))),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_child_starts_its_output_comes_back_and_it_is_reaped_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let socket = launcher(&["/bin/echo"], dir.path());
    let piped = [Stdio::Null, Stdio::Pipe, Stdio::Null];
    let (answer, fds) = ask(&socket, &start("echo", &["hi"], Some("/work"), piped), &[]);
    let Answer::Started { id, pipes, .. } = answer else {
        panic!("{answer:?}");
    };
    assert_eq!(pipes, [false, true, false]);
    let [_pidfd, stdout] = <[OwnedFd; 2]>::try_from(fds).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(stdout), &mut out).unwrap();
    assert_eq!(out, "hi\n");
    let ended = loop {
        match ask(&socket, &Ask::Reap { id }, &[]).0 {
            Answer::Reaped { ended: Some(ended) } => break ended,
            Answer::Reaped { ended: None } => std::thread::yield_now(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(ended.0, ExitStatus::Exited(0));
    // An id that is not one of its children's: no answer but an error, no
    // signal.
    let (answer, _) = ask(&socket, &Ask::Reap { id: 99 }, &[]);
    assert!(matches!(answer, Answer::Failed(_)), "{answer:?}");
    let (answer, _) = ask(&socket, &Ask::Signal { id: 99, signal: 9 }, &[]);
    assert!(matches!(answer, Answer::Done), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_that_are_no_request_are_refused_and_the_launcher_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let socket = launcher(&["/bin/true"], dir.path());
    crate::channel::send_frame_with_fds(&socket, b"{\"Start\": 7}", &[]).unwrap();
    let (answer, _) = crate::channel::read_frame_with_fds(&socket).unwrap();
    let answer: Answer = serde_json::from_slice(&answer).unwrap();
    assert!(
        matches!(answer, Answer::Failed(Failure::InvalidArgument(_))),
        "{answer:?}"
    );
    let (answer, _) = ask(&socket, &start("true", &[], None, NULL), &[]);
    assert!(matches!(answer, Answer::Started { .. }), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workers_children_are_killed_when_its_launch_socket_closes() {
    let dir = tempfile::tempdir().unwrap();
    let socket = launcher(&["/bin/sleep"], dir.path());
    let (_, pid) = sleeper(&socket);
    drop(socket);
    gone(pid, "the child outlived its worker's socket").await;
}

/// Asks `socket` for a launch socket for a worker's worker holding
/// `programs` and `dirs`.
fn connect(socket: &UnixStream, programs: &[&str], dirs: &[(&str, bool)]) -> Answer {
    let mut builder = ProcessCtx::builder();
    for program in programs {
        builder.allow_program(program).unwrap();
    }
    let policy = builder.confine(false).build().policy().clone();
    let dirs = dirs.iter().map(|(d, ro)| (d.to_string(), *ro)).collect();
    let request = Ask::Connect {
        policy: Box::new(policy),
        dirs,
    };
    let (answer, fds) = ask(socket, &request, &[]);
    assert_eq!(
        fds.len(),
        usize::from(matches!(answer, Answer::Connected { .. }))
    );
    answer
}

/// A worker's grants that let it fork (a component in `dir`), with at most
/// `live` live children.
fn forking(dir: &Path, live: usize) -> impl FnOnce(&mut crate::ctx::ProcessCtxBuilder) {
    let component = dir.join("w.wasm");
    std::fs::write(&component, b"\0asm").unwrap();
    move |b| {
        b.allow_fork(&component).unwrap();
        b.limits(crate::policy::Limits {
            max_live_children: live,
            ..crate::policy::Limits::default()
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_may_not_fork_gets_no_launcher_for_a_worker_and_one_that_may_no_more_than_its_slots()
 {
    let dir = tempfile::tempdir().unwrap();
    let socket = launcher(&["/bin/true"], dir.path());
    let answer = connect(&socket, &["/bin/true"], &[]);
    assert!(
        matches!(answer, Answer::Failed(Failure::AccessDenied(_))),
        "{answer:?}"
    );
    // Two live children in all: a worker's worker's socket holds one while
    // it is served, so a second one and a child past it are refused.
    let socket = launcher_with(&["/bin/sleep"], dir.path(), forking(dir.path(), 2));
    let request = Ask::Connect {
        policy: Box::new(
            ProcessCtx::builder()
                .confine(false)
                .build()
                .policy()
                .clone(),
        ),
        dirs: Vec::new(),
    };
    let (answer, _served) = ask(&socket, &request, &[]);
    assert!(matches!(answer, Answer::Connected { .. }), "{answer:?}");
    let (answer, _) = ask(&socket, &start("sleep", &["60"], None, NULL), &[]);
    assert!(matches!(answer, Answer::Started { .. }), "{answer:?}");
    let answer = connect(&socket, &[], &[]);
    assert!(
        matches!(answer, Answer::Failed(Failure::LimitExceeded(_))),
        "{answer:?}"
    );
    let (answer, _) = ask(&socket, &start("sleep", &["60"], None, NULL), &[]);
    assert!(
        matches!(answer, Answer::Failed(Failure::LimitExceeded(_))),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workers_worker_gets_a_launcher_no_wider_than_its_own_grants() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let socket = launcher_with(
        &["/bin/true", "/bin/echo"],
        dir.path(),
        forking(dir.path(), 64),
    );
    // Wider than the worker: a program it does not hold, a directory
    // outside its grants.
    let answer = connect(&socket, &["/usr/bin/touch"], &[]);
    assert!(
        matches!(answer, Answer::Failed(Failure::AccessDenied(_))),
        "{answer:?}"
    );
    let answer = connect(&socket, &["/bin/true"], &[("/etc", true)]);
    assert!(
        matches!(answer, Answer::Failed(Failure::AccessDenied(_))),
        "{answer:?}"
    );
    // Narrower: only `true`, and only the subdirectory, read-only.
    let (answer, fds) = {
        let mut builder = ProcessCtx::builder();
        builder.allow_program("/bin/true").unwrap();
        let request = Ask::Connect {
            policy: Box::new(builder.confine(false).build().policy().clone()),
            dirs: vec![("/work/sub".into(), true)],
        };
        ask(&socket, &request, &[])
    };
    assert!(matches!(answer, Answer::Connected { .. }), "{answer:?}");
    let narrower = UnixStream::from(fds.into_iter().next().unwrap());
    // The worker could run echo and work in /work; its worker cannot.
    let (answer, _) = ask(&narrower, &start("echo", &["hi"], None, NULL), &[]);
    assert!(
        matches!(answer, Answer::Failed(Failure::AccessDenied(_))),
        "{answer:?}"
    );
    let (answer, _) = ask(&narrower, &start("true", &[], Some("/work"), NULL), &[]);
    assert!(matches!(answer, Answer::Failed(_)), "{answer:?}");
    let (answer, _) = ask(&narrower, &start("true", &[], Some("/work/sub"), NULL), &[]);
    assert!(matches!(answer, Answer::Started { .. }), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_released_child_is_killed_and_the_release_is_not_answered() {
    let dir = tempfile::tempdir().unwrap();
    let socket = launcher(&["/bin/sleep"], dir.path());
    let (id, pid) = sleeper(&socket);
    let release = serde_json::to_vec(&Ask::Release { id }).unwrap();
    crate::channel::send_frame_with_fds(&socket, &release, &[]).unwrap();
    // The next answer is the next request's: the child is no longer the
    // worker's to reap.
    let (answer, _) = ask(&socket, &Ask::Reap { id }, &[]);
    assert!(
        matches!(answer, Answer::Failed(Failure::InvalidArgument(_))),
        "{answer:?}"
    );
    gone(pid, "the released child lives on").await;
}

/// Issue 22: a worker that ignores its own lending, and gives the worker
/// it forks all it holds (three live children), starts no more children
/// through that worker's socket than it holds itself: the worker's worker
/// takes one of the three, and its socket's starts are charged to the
/// worker's budget too. (Before, its socket had a budget of its own, and
/// the same three started again.)
#[tokio::test(flavor = "multi_thread")]
async fn a_workers_workers_children_count_against_its_parents_limits_too() {
    let dir = tempfile::tempdir().unwrap();
    let socket = launcher_with(&["/bin/sleep"], dir.path(), forking(dir.path(), 3));
    let all_it_holds = {
        let mut builder = ProcessCtx::builder();
        builder.allow_program("/bin/sleep").unwrap();
        builder.limits(crate::policy::Limits {
            max_live_children: 3,
            ..crate::policy::Limits::default()
        });
        builder.confine(false).build().policy().clone()
    };
    let request = Ask::Connect {
        policy: Box::new(all_it_holds),
        dirs: Vec::new(),
    };
    let (answer, fds) = ask(&socket, &request, &[]);
    assert!(matches!(answer, Answer::Connected { .. }), "{answer:?}");
    let nested = UnixStream::from(fds.into_iter().next().unwrap());
    let mut started = Vec::new();
    for _ in 0..2 {
        started.push(sleeper(&nested));
    }
    let (answer, _) = ask(&nested, &start("sleep", &["60"], None, NULL), &[]);
    assert!(
        matches!(&answer, Answer::Failed(Failure::LimitExceeded(m)) if m.contains("3 of the 3")),
        "{answer:?}"
    );
    // The worker itself is at its limit too.
    let (answer, _) = ask(&socket, &start("sleep", &["60"], None, NULL), &[]);
    assert!(
        matches!(answer, Answer::Failed(Failure::LimitExceeded(_))),
        "{answer:?}"
    );
    // A child released below gives its slot back above.
    let (id, pid) = started.pop().unwrap();
    let release = serde_json::to_vec(&Ask::Release { id }).unwrap();
    crate::channel::send_frame_with_fds(&nested, &release, &[]).unwrap();
    gone(pid, "the released child lived on").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (answer, _) = ask(&socket, &start("sleep", &["60"], None, NULL), &[]);
        if matches!(answer, Answer::Started { .. }) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{answer:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
