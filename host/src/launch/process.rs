//! Turning a [`Prepared`] command and its [`Walls`] into a `clone`/`exec`:
//! the child's argv, environment and stdio as `sys` takes them.

use crate::failure::Failure;
use crate::policy::Prepared;
use rustix::process::Pid;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use crate::launch::os_child::OsChild;

/// What one of a child's stdin, stdout and stderr is connected to.
#[derive(Debug)]
pub(crate) enum ChildIo {
    /// A new pipe; the host keeps the other end.
    Pipe,
    /// The host's own stdin, opened anew read-only (stdin only).
    Inherit,
    /// `/dev/null`.
    Null,
    /// A descriptor the host opened for it: a file in a granted directory,
    /// or the read end of another child's output pipe.
    Given(OwnedFd),
}

/// Everything that confines a child, as `sys::clone_and_exec` takes it.
pub(crate) struct Walls<'a> {
    /// The working directory (in the sandbox's view, when there is one).
    pub(super) cwd: Option<BorrowedFd<'a>>,
    pub(super) landlock: Option<BorrowedFd<'a>>,
    /// The cgroup to start the child in.
    pub(crate) cgroup: Option<BorrowedFd<'a>>,
    pub(super) keep_caps: u64,
    pub(super) rlimits: &'a [(rustix::process::Resource, u64)],
    pub(super) namespaces: Option<crate::sys::Namespaces<'a>>,
    /// New, empty network and IPC namespaces (a root host's worker
    /// process).
    pub(super) own_namespaces: bool,
    pub(super) identity: Option<(u32, u32)>,
    pub(super) seccomp: Option<&'a [libc::sock_filter]>,
}

/// Starts the OS process for `prepared`; returns it and its pid.
pub(crate) fn start_os_process(
    prepared: &Prepared,
    stdio: [ChildIo; 3],
    walls: &Walls<'_>,
) -> Result<(OsChild, Pid), Failure> {
    let pipes = |e: io::Error| Failure::from_io("creating the child's pipes", &e);
    let c_string = |what: &str, s: Vec<u8>| {
        CString::new(s).map_err(|_| Failure::InvalidArgument(format!("{what} contains a NUL byte")))
    };
    let program = c_string(
        "the program path",
        match walls.namespaces {
            Some(_) => &prepared.real_program,
            None => &prepared.program,
        }
        .as_os_str()
        .as_encoded_bytes()
        .to_vec(),
    )?;
    let argv = (std::iter::once(&prepared.argv0).chain(&prepared.args))
        .map(|a| c_string("an argument", a.clone().into_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = (prepared.env.iter())
        .map(|(k, v)| c_string("the environment", format!("{k}={v}").into_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let null = match stdio.iter().any(|io| matches!(io, ChildIo::Null)) {
        true => Some(dev_null().map_err(|e| Failure::from_io("opening /dev/null", &e))?),
        false => None,
    };
    // An inherited stream is opened anew, read-only for stdin: the child
    // shares no open file description with the host, so it can neither
    // write to nor truncate, seek or re-flag the host's.
    if stdio[1..].iter().any(|io| matches!(io, ChildIo::Inherit)) {
        return Err(Failure::Io(
            "only stdin is inherited as the host's (output goes through a pipe)".into(),
        ));
    }
    let host_stdin = match stdio[0] {
        ChildIo::Inherit => Some(
            reopen_stdin()
                .or_else(|_| File::open("/dev/null"))
                .map_err(|e| Failure::from_io("reopening stdin", &e))?,
        ),
        _ => None,
    };
    // (the host's end, the child's end) of each stream.
    let mut ends: [(Option<OwnedFd>, Option<OwnedFd>); 3] = Default::default();
    for (i, io) in stdio.iter().enumerate() {
        if matches!(io, ChildIo::Pipe) {
            let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| pipes(e.into()))?;
            ends[i] = if i == 0 {
                (Some(write), Some(read))
            } else {
                (Some(read), Some(write))
            };
        }
    }
    let child_fd = |i: usize| match &stdio[i] {
        ChildIo::Pipe => ends[i].1.as_ref().expect("pipe created").as_fd(),
        ChildIo::Inherit => host_stdin.as_ref().expect("stdin reopened").as_fd(),
        ChildIo::Null => null.expect("/dev/null opened"),
        ChildIo::Given(fd) => fd.as_fd(),
    };
    let spec = crate::sys::SpawnSpec {
        program: &program,
        argv: &argv,
        envp: &envp,
        stdio: [child_fd(0), child_fd(1), child_fd(2)],
        cwd: walls.cwd,
        inherit: &prepared.inherit_fds,
        landlock: walls.landlock,
        rlimits: walls.rlimits,
        cgroup: walls.cgroup,
        keep_caps: walls.keep_caps,
        namespaces: walls.namespaces,
        own_namespaces: walls.own_namespaces,
        identity: walls.identity,
        seccomp: walls.seccomp,
    };
    let (pid, pidfd) =
        crate::sys::clone_and_exec(&spec).map_err(|e| spawn_error(prepared, walls.identity, &e))?;
    let [stdin, stdout, stderr] = ends.map(|(ours, _)| ours);
    let mut child =
        OsChild::new(pid, pidfd).map_err(|e| Failure::from_io("watching the child", &e))?;
    (child.stdin, child.stdout, child.stderr) = (stdin, stdout, stderr);
    Ok((child, pid))
}

/// The host's stdin opened anew, read-only, if it is a pipe, a character
/// device or a regular file (never a directory, which would take the child
/// out of its view): without becoming a controlling terminal, and without
/// waiting for a writer on a FIFO.
fn reopen_stdin() -> io::Result<File> {
    use rustix::fs::{FileType, OFlags};
    let kind = FileType::from_raw_mode(rustix::fs::fstat(io::stdin().as_fd())?.st_mode);
    if !matches!(
        kind,
        FileType::Fifo | FileType::CharacterDevice | FileType::RegularFile
    ) {
        return Err(io::Error::other("stdin is not a pipe, device or file"));
    }
    let fd = rustix::fs::open(
        "/proc/self/fd/0",
        OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(File::from(fd))
}

/// `/dev/null`, opened once for every child that gets it.
pub(crate) fn dev_null() -> io::Result<BorrowedFd<'static>> {
    static DEV_NULL: OnceLock<File> = OnceLock::new();
    if DEV_NULL.get().is_none() {
        let file = File::options().read(true).write(true).open("/dev/null")?;
        // A racing thread may have set it first: either file will do.
        let _ = DEV_NULL.set(file);
    }
    Ok(DEV_NULL.get().expect("just set").as_fd())
}

fn spawn_error(prepared: &Prepared, identity: Option<(u32, u32)>, err: &io::Error) -> Failure {
    let program = prepared.program.display();
    match err.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
        Some(rustix::io::Errno::NOENT) => {
            Failure::NotFound(format!("program {program} does not exist"))
        }
        Some(rustix::io::Errno::ACCESS) => match identity {
            Some((uid, gid)) => Failure::AccessDenied(format!(
                "the OS refused to execute {program} as uid {uid} gid {gid} (children of a root host run as that user: it must be able to execute the program and enter its directories)"
            )),
            None => Failure::AccessDenied(format!("the OS refused to execute {program}")),
        },
        Some(rustix::io::Errno::TOOBIG) => Failure::LimitExceeded(format!(
            "arguments and environment of {program} are too large for the OS"
        )),
        Some(rustix::io::Errno::NOEXEC) => {
            Failure::InvalidArgument(format!("{program} is not in an executable format"))
        }
        _ => Failure::from_io(format_args!("starting {program}"), err),
    }
}
