//! Checking a guest's request against the grants of a [`ProcessCtx`].
//!
//! Every guest-controlled value passes through [`ProcessCtx::prepare`], which
//! either refuses it with an [`ErrorCode`] naming the problem or turns it into
//! a [`Prepared`] command that names only granted things.

use crate::bindings::types::{ErrorCode, FileMode};
use crate::ctx::DirAccess;
use crate::{Policy, ProcessCtx};
use anyhow::{Result, bail};
use cap_std::fs::Dir;
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Environment variables that make a dynamic loader, shell or interpreter
/// run code or load libraries of the setter's choice: refused for children
/// even when allowed, unless the embedder opts in per name
/// ([`ProcessCtxBuilder::allow_injection_env`](crate::ProcessCtxBuilder::allow_injection_env)).
/// Names starting with one of [`INJECTION_ENV_PREFIXES`] are refused too.
pub const INJECTION_ENV: &[&str] = &[
    "BASH_ENV",
    "ENV",
    "BASHOPTS",
    "SHELLOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "IFS",
    "CDPATH",
    "NODE_OPTIONS",
    "NODE_PATH",
    "NODE_REPL_EXTERNAL_MODULE",
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONINSPECT",
    "PYTHONUSERBASE",
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "PERL5DB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "MALLOC_CHECK_",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "GIT_EXEC_PATH",
    "GIT_SSH_COMMAND",
    "GIT_CONFIG_GLOBAL",
];

/// Prefixes of [`INJECTION_ENV`] names: the dynamic loaders' (`LD_PRELOAD`,
/// `LD_LIBRARY_PATH`, `LD_AUDIT`, macOS `DYLD_*`) and bash's exported
/// functions.
pub const INJECTION_ENV_PREFIXES: &[&str] = &["LD_", "DYLD_", "BASH_FUNC_"];

/// Whether `name` is a loader or interpreter injection variable.
pub fn is_injection_env(name: &str) -> bool {
    INJECTION_ENV.contains(&name) || INJECTION_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A request the policy refused, as told to a
/// [`DenialReporter`](crate::DenialReporter).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denial {
    /// A program that is not on the allow-list.
    Program(String),
    /// `exec` without a granted shell.
    Shell,
    /// `exec` with a shell that is not granted.
    ShellName(String),
    /// A working directory outside the granted directories.
    Cwd(String),
    /// A working directory whose `..` or symlinks lead out of the granted
    /// directory it starts in.
    CwdEscape {
        /// The working directory the guest asked for.
        cwd: String,
        /// The guest path of the granted directory it starts in.
        granted: String,
    },
    /// An environment variable name that is not allowed.
    EnvName(String),
    /// A loader or interpreter injection variable the host did not opt in to.
    InjectionEnv(String),
    /// A pinned program whose binary no longer has its SHA-256.
    PinMismatch(String),
    /// A component that is not granted for `fork`.
    ForkComponent(String),
    /// A directory passed on to a worker that the guest does not hold.
    ForkDir(String),
    /// A read-only directory passed on to a worker as writable.
    ReadOnlyDir(String),
    /// A worker limit above the forking guest's own: which one, and the
    /// message given to the guest.
    ForkLimit {
        /// The limit's name, as in `worker-limits`.
        limit: &'static str,
        /// What was asked for and what the guest holds.
        message: String,
    },
    /// A denial in a forked worker's guest, sent up to the forking host.
    InWorker {
        /// The worker process.
        pid: u32,
        /// The worker's component (its file name).
        component: String,
        /// What the worker's policy refused.
        reason: String,
    },
    /// A file for a child's stdio outside the granted directories (or
    /// leading out of them through `..` or a symlink).
    File(String),
    /// A file for a child's output in a directory granted read-only.
    ReadOnlyFile(String),
    /// A directory a cluster agent does not export.
    NotExported(String),
    /// A cluster agent refused a worker (beyond its policy or capacity).
    OnAgent {
        /// The agent's id.
        agent: String,
        /// What it said.
        reason: String,
    },
    /// A user id the host did not grant.
    Uid(u32),
    /// A group id the host did not grant.
    Gid(u32),
    /// A limit: which one, and the message given to the guest.
    Limit {
        /// The limit's name, as in [`Limits`](crate::Limits).
        limit: &'static str,
        /// What was asked for and what the limit is.
        message: String,
    },
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Program(p) => write!(f, "program `{p}` is not allowed"),
            Denial::Shell => f.write_str("no shell is granted for `exec`"),
            Denial::ShellName(s) => write!(f, "shell `{s}` is not granted for `exec`"),
            Denial::Cwd(c) => write!(
                f,
                "working directory `{c}` is outside the granted directories"
            ),
            Denial::CwdEscape { cwd, granted } => write!(
                f,
                "working directory `{cwd}` leads out of the granted directory `{granted}` through `..` or a symlink"
            ),
            Denial::EnvName(n) => write!(f, "environment variable `{n}` is not allowed"),
            Denial::PinMismatch(p) => write!(
                f,
                "program `{p}` was changed since it was granted (SHA-256 mismatch)"
            ),
            Denial::InjectionEnv(n) => write!(
                f,
                "environment variable `{n}` can make the child load or run other code, and the host did not opt in to it"
            ),
            Denial::ForkComponent(c) => write!(f, "component `{c}` is not allowed for fork"),
            Denial::ForkDir(d) => write!(
                f,
                "directory `{d}` is not inside a directory this guest holds"
            ),
            Denial::ReadOnlyDir(d) => {
                write!(
                    f,
                    "directory `{d}` is read-only for this guest and can only be passed on read-only"
                )
            }
            Denial::InWorker {
                pid,
                component,
                reason,
            } => write!(f, "in worker `{component}` (pid {pid}): {reason}"),
            Denial::File(p) => write!(
                f,
                "file `{p}` is outside the granted directories (or leads out of them)"
            ),
            Denial::ReadOnlyFile(p) => write!(
                f,
                "file `{p}` is in a directory granted read-only: a child cannot write it"
            ),
            Denial::OnAgent { agent, reason } => write!(f, "on agent {agent}: {reason}"),
            Denial::NotExported(d) => {
                write!(f, "directory `{d}` is not exported by this agent")
            }
            Denial::Uid(uid) => write!(f, "user id {uid} is not allowed"),
            Denial::Gid(gid) => write!(f, "group id {gid} is not allowed"),
            Denial::Limit { message, .. } | Denial::ForkLimit { message, .. } => {
                f.write_str(message)
            }
        }
    }
}

impl Denial {
    /// The `error-code` the guest gets for this denial.
    pub fn to_error_code(&self) -> ErrorCode {
        match self {
            Denial::Limit { .. } => ErrorCode::LimitExceeded(self.to_string()),
            _ => ErrorCode::AccessDenied(self.to_string()),
        }
    }
}

/// A program the guest may run, resolved when it was granted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ProgramGrant {
    /// The file name the guest uses for it, also its `argv[0]`.
    pub name: String,
    /// Absolute path of the binary.
    pub path: PathBuf,
    /// The same without symlinks: what the sandbox shows (and children in
    /// it execute), as it was when granted.
    pub real_path: PathBuf,
    /// The SHA-256 the binary must have, and the file's identity (device,
    /// inode, size, modification time) when it was checked.
    pub pin: Option<([u8; 32], FileId)>,
}

/// What identifies a file's contents without reading them.
pub(crate) type FileId = (u64, u64, u64, i64, i64);

fn file_id(path: &Path) -> io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hasher.finalize().into())
}

impl ProgramGrant {
    /// Pins the binary to the SHA-256 `hex`, which it must have now.
    pub fn pin(&mut self, hex: &str) -> Result<()> {
        let mut want = [0u8; 32];
        if hex.len() != 64 || !hex.is_ascii() {
            bail!("`{hex}` is not a SHA-256 in hex");
        }
        for (i, byte) in want.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
        }
        let id = file_id(&self.path)?;
        if sha256_file(&self.path)? != want {
            bail!("{} does not have the SHA-256 {hex}", self.path.display());
        }
        self.pin = Some((want, id));
        Ok(())
    }

    /// Whether the binary still has its pinned SHA-256 (re-hashed only
    /// when the file changed).
    fn pin_holds(&self) -> bool {
        match &self.pin {
            None => true,
            Some((want, id)) => match file_id(&self.path) {
                Ok(now) if now == *id => true,
                Ok(_) => sha256_file(&self.path).is_ok_and(|got| got == *want),
                Err(_) => false,
            },
        }
    }
}

impl ProgramGrant {
    /// Resolves `program` (a path, or a name looked up in the host's PATH).
    pub fn resolve(program: &OsStr) -> Result<ProgramGrant> {
        let as_path = Path::new(program);
        let path = if program.as_encoded_bytes().contains(&b'/') {
            std::path::absolute(as_path)?
        } else {
            let search = std::env::var_os("PATH").unwrap_or_default();
            match std::env::split_paths(&search)
                .map(|dir| dir.join(program))
                .find(|p| is_executable(p))
            {
                Some(p) => std::path::absolute(p)?,
                None => bail!("program `{}` not found in PATH", as_path.display()),
            }
        };
        if !is_executable(&path) {
            bail!("{} is not an executable file", path.display());
        }
        ProgramGrant::named(path)
    }

    /// A component granted for `fork`: an existing file.
    pub fn component(path: &Path) -> Result<ProgramGrant> {
        let path = std::path::absolute(path)?;
        if !path.is_file() {
            bail!("component {} is not a file", path.display());
        }
        ProgramGrant::named(path)
    }

    /// The grant of `path`, named by its file name.
    fn named(path: PathBuf) -> Result<ProgramGrant> {
        let Some(name) = path.file_name().and_then(OsStr::to_str) else {
            bail!("{} has no UTF-8 file name", path.display());
        };
        Ok(ProgramGrant {
            name: name.to_owned(),
            real_path: std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone()),
            path,
            pin: None,
        })
    }

    /// Adds this grant to `grants` (replacing the same one), unless another
    /// there has the same name.
    pub fn add_to(self, grants: &mut Vec<ProgramGrant>) -> Result<()> {
        grants.retain(|g| g.name != self.name || g.path != self.path);
        if let Some(other) = grants.iter().find(|g| g.name == self.name) {
            bail!(
                "two grants are both named `{}`: {} and {}",
                self.name,
                other.path.display(),
                self.path.display()
            );
        }
        grants.push(self);
        Ok(())
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The grant named `name`: by absolute path if it has a `/`, else by file name.
fn find<'a>(grants: &'a [ProgramGrant], name: &str) -> Option<&'a ProgramGrant> {
    if name.contains('/') {
        grants.iter().find(|g| g.path == Path::new(name))
    } else {
        grants.iter().find(|g| g.name == name)
    }
}

/// A directory children may run in.
#[derive(Debug, Clone)]
pub(crate) struct DirGrant {
    /// How the guest names it.
    pub guest_path: PathBuf,
    /// The host directory (for logs only; access goes through `dir`).
    pub host_path: PathBuf,
    /// The opened directory.
    pub dir: Arc<Dir>,
    /// Whether children may write to it.
    pub access: DirAccess,
}

impl DirGrant {
    /// The host path of `rest` (a relative path) below this directory.
    pub fn host_path_of(&self, rest: &Path) -> PathBuf {
        match rest.as_os_str().is_empty() {
            true => self.host_path.clone(),
            false => self.host_path.join(rest),
        }
    }
}

/// What to run, after every check passed.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The binary to execute.
    pub program: PathBuf,
    /// Its path without symlinks, which a sandboxed child executes (the
    /// sandbox shows the binary there, not its links).
    pub real_program: PathBuf,
    /// Its `argv[0]`.
    pub argv0: String,
    /// `argv[1..]`.
    pub args: Vec<String>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// The working directory, opened; `None`: the root directory.
    pub cwd: Option<Dir>,
    /// The working directory on the host (for logs; the child enters `cwd`).
    pub cwd_host: PathBuf,
    /// Open file descriptors the child keeps across `exec` (for a forked
    /// worker: its channel and directories); all others are closed.
    pub inherit_fds: Vec<RawFd>,
    /// Whether the child is confined with the context's Landlock ruleset
    /// and sandbox (not a forked worker, which is the host itself; its
    /// children are).
    pub confine: bool,
    /// The user and group id the guest asked for (granted), instead of the
    /// context's.
    pub identity: Option<(u32, u32)>,
    /// What it takes of the guest's budgets besides itself: a forked
    /// worker is lent live-children slots and total spawns for its own
    /// children (the live slots come back when it exits).
    pub lent: Lent,
    /// Whether it counts against the guest's budgets now (not a warm
    /// worker, which counts when it gets its specification).
    pub counted: bool,
}

/// Budget lent to a forked worker, on top of the one slot it takes itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Lent {
    /// Live-children slots, given back when the worker exits.
    pub live: usize,
    /// Total spawns, used up.
    pub spawns: u64,
}

/// What the guest asked to run, before any check.
pub(crate) struct Request<'a> {
    pub run: Run<'a>,
    pub cwd: Option<&'a str>,
    pub env: &'a [(String, String)],
    /// The user and group ids asked for.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The program part of a [`Request`].
#[derive(Clone, Copy)]
pub(crate) enum Run<'a> {
    /// `exec`: a command for a granted shell (the one named, or the
    /// first).
    Shell(&'a str, Option<&'a str>),
    /// `exec-file`, `spawn`: a granted program and its arguments.
    Program(&'a str, &'a [String]),
}

impl<'a> Request<'a> {
    /// A request to run `run` with the `cwd` and `env` the guest gave.
    pub fn new(run: Run<'a>, cwd: &'a Option<String>, env: &'a [(String, String)]) -> Self {
        Request {
            run,
            cwd: cwd.as_deref(),
            env,
            uid: None,
            gid: None,
        }
    }

    /// Asks for the child to run as `uid` and `gid`.
    pub fn user(mut self, uid: Option<u32>, gid: Option<u32>) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// The audit log's name for the request's kind.
    pub fn kind(&self) -> &'static str {
        match self.run {
            Run::Shell(..) => "exec",
            Run::Program(..) => "exec-file",
        }
    }
}

/// Why a request was refused: a denial of the policy (which the context
/// reports to the operator), or input no policy could accept.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The policy does not grant it.
    Denied(Denial),
    /// Bad input or a failure (the guest's `error-code` as it is).
    Invalid(ErrorCode),
}

impl From<Denial> for Refusal {
    fn from(denial: Denial) -> Self {
        Refusal::Denied(denial)
    }
}

impl From<ErrorCode> for Refusal {
    fn from(code: ErrorCode) -> Self {
        Refusal::Invalid(code)
    }
}

impl Policy {
    /// Checks `req` against the grants and resolves it to a [`Prepared`]
    /// command, or says why not. Nothing happens but the opening of its
    /// working directory in `dirs` (the granted directories, held open by
    /// the context).
    pub(crate) fn check(&self, dirs: &[DirGrant], req: &Request<'_>) -> Result<Prepared, Refusal> {
        check_strings(req)?;
        let (grant, args) = match req.run {
            Run::Shell(command, shell) => (
                self.find_shell(shell)?,
                vec!["-c".to_owned(), command.to_owned()],
            ),
            Run::Program(program, args) => (self.find_program(program)?, args.to_vec()),
        };
        if !grant.pin_holds() {
            return Err(Denial::PinMismatch(grant.name.clone()).into());
        }
        if !grant.path.exists() {
            return Err(ErrorCode::NotFound(format!(
                "granted program `{}` ({}) no longer exists",
                grant.name,
                grant.path.display()
            ))
            .into());
        }
        let env = self.check_env(req.env)?;
        let arg_bytes = [grant.path.as_os_str().len(), grant.name.len()]
            .into_iter()
            .chain(args.iter().map(String::len))
            .chain(env.iter().map(|(k, v)| k.len() + 1 + v.len()))
            .map(|n| n + 1)
            .sum::<usize>();
        if arg_bytes > self.limits.max_arg_bytes {
            return Err(Denial::Limit {
                limit: "max_arg_bytes",
                message: format!(
                    "arguments and environment take {arg_bytes} bytes, more than the limit of {}",
                    self.limits.max_arg_bytes
                ),
            }
            .into());
        }
        let identity = self.check_user(req.uid, req.gid)?;
        let (cwd, cwd_host) = open_cwd(dirs, req.cwd)?;
        Ok(Prepared {
            program: grant.path.clone(),
            real_program: grant.real_path.clone(),
            argv0: grant.name.clone(),
            args,
            env,
            cwd,
            cwd_host,
            inherit_fds: Vec::new(),
            confine: true,
            identity,
            lent: Lent::default(),
            counted: true,
        })
    }

    /// The user and group a child asked to run as, if granted (the child
    /// user, or an id allowed with `allow_uid`/`allow_gid`); `None` when
    /// nothing was asked.
    pub(crate) fn check_user(
        &self,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<Option<(u32, u32)>, Denial> {
        if uid.is_none() && gid.is_none() {
            return Ok(None);
        }
        let (uid, gid) = (
            uid.unwrap_or(self.child_id.0),
            gid.unwrap_or(self.child_id.1),
        );
        if uid != self.child_id.0 && !self.allowed_uids.contains(&uid) {
            return Err(Denial::Uid(uid));
        }
        if gid != self.child_id.1 && !self.allowed_gids.contains(&gid) {
            return Err(Denial::Gid(gid));
        }
        Ok(Some((uid, gid)))
    }

    /// The program grant the guest names `program`.
    pub(crate) fn find_program(&self, program: &str) -> Result<&ProgramGrant, Denial> {
        find(&self.programs, program).ok_or_else(|| Denial::Program(program.to_owned()))
    }

    /// The shell the guest names `shell` (as a program), or the first one.
    pub(crate) fn find_shell(&self, shell: Option<&str>) -> Result<&ProgramGrant, Denial> {
        match shell {
            None => self.shells.first().ok_or(Denial::Shell),
            Some(_) if self.shells.is_empty() => Err(Denial::Shell),
            Some(name) => {
                find(&self.shells, name).ok_or_else(|| Denial::ShellName(name.to_owned()))
            }
        }
    }

    /// The component grant the guest names `component`.
    pub(crate) fn find_fork(&self, component: &str) -> Result<&ProgramGrant, Denial> {
        find(&self.forks, component).ok_or_else(|| Denial::ForkComponent(component.to_owned()))
    }

    /// The environment of a child: allowed names only, the last value of a
    /// name winning.
    fn check_env(&self, env: &[(String, String)]) -> Result<Vec<(String, String)>, Refusal> {
        let mut out: Vec<(String, String)> = Vec::with_capacity(env.len());
        for (name, value) in env {
            check_env_pair(name, value)?;
            if !self.allowed_env.contains(name) {
                return Err(Denial::EnvName(name.clone()).into());
            }
            if is_injection_env(name) && !self.injection_env.contains(name) {
                return Err(Denial::InjectionEnv(name.clone()).into());
            }
            // A later value for the same name wins, as in a shell.
            out.retain(|(n, _)| n != name);
            out.push((name.clone(), value.clone()));
        }
        Ok(out)
    }
}

/// Refuses NUL bytes and empty names in every guest string.
fn check_strings(req: &Request<'_>) -> Result<(), ErrorCode> {
    match req.run {
        Run::Shell(c, shell) => {
            no_nul("the command", c)?;
            no_nul("the shell", shell.unwrap_or_default())?;
        }
        Run::Program("", _) => {
            return Err(ErrorCode::InvalidArgument(
                "the program name is empty".into(),
            ));
        }
        Run::Program(p, args) => {
            no_nul("the program name", p)?;
            for (i, arg) in args.iter().enumerate() {
                no_nul(format_args!("argument {} ({arg:?})", i + 1), arg)?;
            }
        }
    }
    if let Some(cwd) = req.cwd {
        no_nul("the working directory", cwd)?;
    }
    Ok(())
}

/// The granted directory of `dirs` that `path` (a guest path) is in, the
/// rest of the path below it, and the directory opened through cap-std
/// (which refuses `..` and symlinks that lead out of the grant with
/// `PermissionDenied`). `None` when `path` is in no granted directory.
fn locate_dir<'a>(
    dirs: &'a [DirGrant],
    path: &str,
) -> Option<(&'a DirGrant, PathBuf, io::Result<Dir>)> {
    let path = Path::new(path);
    // The granted directory whose guest path is the longest prefix of
    // `path`; a relative `path` that matches none is relative to the first.
    let matched = (dirs.iter())
        .filter_map(|d| path.strip_prefix(&d.guest_path).ok().map(|rest| (d, rest)))
        .max_by_key(|(d, _)| d.guest_path.components().count());
    let (grant, rest) = match matched {
        Some(m) => m,
        None if path.is_relative() && !dirs.is_empty() => (&dirs[0], path),
        None => return None,
    };
    let rest: PathBuf = (rest.components())
        .filter(|c| *c != Component::CurDir)
        .collect();
    let opened = if rest.as_os_str().is_empty() {
        grant.dir.try_clone()
    } else {
        grant.dir.open_dir(&rest)
    };
    Some((grant, rest, opened))
}

/// Opens the guest's working directory inside a granted directory (the
/// first one when none is asked for; `/` without any).
fn open_cwd(dirs: &[DirGrant], cwd: Option<&str>) -> Result<(Option<Dir>, PathBuf), Refusal> {
    let Some(cwd) = cwd else {
        return match dirs.first() {
            Some(d) => {
                let dir = d.dir.try_clone().map_err(|e| {
                    ErrorCode::from_io(format_args!("opening {}", d.guest_path.display()), &e)
                })?;
                Ok((Some(dir), d.host_path.clone()))
            }
            None => Ok((None, PathBuf::from("/"))),
        };
    };
    let (grant, rest, dir) = open_granted_dir(
        dirs,
        cwd,
        "working directory",
        || Denial::Cwd(cwd.to_owned()),
        |grant| Denial::CwdEscape {
            cwd: cwd.to_owned(),
            granted: grant.guest_path.display().to_string(),
        },
    )?;
    Ok((Some(dir), grant.host_path_of(&rest)))
}

/// The directory `path` (a guest path) opened inside the granted directory
/// of `dirs` it is in, with the grant and the rest of the path; or why not:
/// the denial `outside` when it is in no grant, `escape` when `..` or
/// symlinks lead out of its grant, else what is wrong with it (missing, not
/// a directory), naming it as `what`.
pub(crate) fn open_granted_dir<'a>(
    dirs: &'a [DirGrant],
    path: &str,
    what: &str,
    outside: impl FnOnce() -> Denial,
    escape: impl FnOnce(&DirGrant) -> Denial,
) -> Result<(&'a DirGrant, PathBuf, Dir), Refusal> {
    no_nul(what, path)?;
    let Some((grant, rest, opened)) = locate_dir(dirs, path) else {
        return Err(outside().into());
    };
    match opened {
        Ok(dir) => Ok((grant, rest, dir)),
        // cap-std refuses `..` and symlinks that lead out of the grant.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(escape(grant).into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ErrorCode::NotFound(format!(
            "{what} `{path}` does not exist in {}",
            grant.guest_path.display()
        ))
        .into()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err(ErrorCode::InvalidArgument(format!("{what} `{path}` is not a directory")).into())
        }
        Err(e) => Err(ErrorCode::from_io(format_args!("opening {what} `{path}`"), &e).into()),
    }
}

/// Opens file `path` (a guest path) inside the granted directory of `dirs`
/// it is in, as `mode` says, for a child's stdin (`output` false: mode
/// `read`) or its stdout or stderr (a write mode, in a directory granted
/// read-write). Only a regular file will do: a FIFO or device could block
/// the host or reach past the grants.
pub(crate) fn open_granted_file(
    dirs: &[DirGrant],
    path: &str,
    mode: FileMode,
    output: bool,
) -> Result<std::os::fd::OwnedFd, Refusal> {
    use cap_std::fs::{OpenOptions, OpenOptionsExt};
    no_nul("the file", path)?;
    let invalid = |m: String| Refusal::Invalid(ErrorCode::InvalidArgument(m));
    match (output, mode) {
        (true, FileMode::Read) => {
            return Err(invalid(format!(
                "file `{path}` is for output: mode `read` is for stdin only"
            )));
        }
        (false, FileMode::Create | FileMode::Truncate | FileMode::Append) => {
            return Err(invalid(format!(
                "file `{path}` is for stdin: its mode must be `read`"
            )));
        }
        _ => {}
    }
    let whole = Path::new(path);
    let (Some(name), Some(parent)) = (whole.file_name(), whole.parent()) else {
        return Err(invalid(format!("`{path}` names no file")));
    };
    let parent = match parent.as_os_str().is_empty() {
        true => ".",
        false => parent.to_str().unwrap_or("."),
    };
    let (grant, _, dir) = open_granted_dir(
        dirs,
        parent,
        "the directory of file",
        || Denial::File(path.to_owned()),
        |_| Denial::File(path.to_owned()),
    )?;
    if output && grant.access == DirAccess::ReadOnly {
        return Err(Denial::ReadOnlyFile(path.to_owned()).into());
    }
    let mut options = OpenOptions::new();
    match mode {
        FileMode::Read => options.read(true),
        FileMode::Create => options.write(true).create_new(true),
        FileMode::Truncate => options.write(true).create(true).truncate(true),
        FileMode::Append => options.append(true).create(true),
    };
    options
        .mode(0o644)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    let file = match dir.open_with(name, &options) {
        Ok(file) => file.into_std(),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(Denial::File(path.to_owned()).into());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ErrorCode::NotFound(format!("file `{path}` does not exist")).into());
        }
        Err(e) => return Err(ErrorCode::from_io(format_args!("opening file `{path}`"), &e).into()),
    };
    let fail = |e: io::Error| ErrorCode::from_io(format_args!("opening file `{path}`"), &e);
    if !file.metadata().map_err(fail)?.is_file() {
        return Err(invalid(format!("`{path}` is not a regular file")));
    }
    let fd = std::os::fd::OwnedFd::from(file);
    // Opened non-blocking (a FIFO planted there must not hang the host);
    // the child gets it blocking.
    rustix::io::ioctl_fionbio(&fd, false).map_err(|e| fail(e.into()))?;
    Ok(fd)
}

impl ProcessCtx {
    /// Checks `req` against the policy ([`Policy::check`]), reporting a
    /// denial; the guest's error if refused.
    pub(crate) fn prepare(&self, req: &Request<'_>) -> Result<Prepared, ErrorCode> {
        self.policy
            .check(&self.dirs, req)
            .map_err(|r| self.refuse(r))
    }

    /// The guest's error for `refusal`, reporting a denial first.
    pub(crate) fn refuse(&self, refusal: Refusal) -> ErrorCode {
        match refusal {
            Refusal::Denied(denial) => self.deny(denial),
            Refusal::Invalid(code) => code,
        }
    }

    /// Reports `denial` and turns it into the guest's error.
    pub(crate) fn deny(&self, denial: Denial) -> ErrorCode {
        self.report(&denial);
        denial.to_error_code()
    }
}

/// `invalid-argument` naming `what` if the guest string `s` has a NUL byte
/// (the OS could not take it).
pub(crate) fn no_nul(what: impl fmt::Display, s: &str) -> Result<(), ErrorCode> {
    match s.contains('\0') {
        true => Err(ErrorCode::InvalidArgument(format!(
            "{what} contains a NUL byte"
        ))),
        false => Ok(()),
    }
}

/// Why `name` cannot be an environment variable name (empty, or with `=`
/// or a NUL byte), if it cannot.
pub(crate) fn bad_env_name(name: &str) -> Option<String> {
    (name.is_empty() || name.contains(['=', '\0']))
        .then(|| format!("invalid environment variable name {name:?}"))
}

/// `invalid-argument` for an environment variable the OS could not take.
pub(crate) fn check_env_pair(name: &str, value: &str) -> Result<(), ErrorCode> {
    if let Some(problem) = bad_env_name(name) {
        return Err(ErrorCode::InvalidArgument(problem));
    }
    no_nul(
        format_args!("the value of environment variable `{name}`"),
        value,
    )
}

#[cfg(test)]
mod tests {
    //! The policy core without wasm or processes: what `prepare` grants and
    //! refuses, and how fork narrows limits.
    use super::*;
    use crate::{DirAccess, ProcessCtx, ProcessCtxBuilder};

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        (pairs.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The context of `builder`, without confinement (nothing starts).
    fn ctx(builder: &mut ProcessCtxBuilder) -> ProcessCtx {
        builder.confine(false).build()
    }

    fn shell() -> ProcessCtxBuilder {
        let mut b = ProcessCtx::builder();
        b.allow_shell("/bin/sh").unwrap();
        b
    }

    #[test]
    fn a_program_is_granted_by_file_name_or_absolute_path_only() {
        let mut b = ProcessCtx::builder();
        b.allow_program("/bin/sh").unwrap();
        let ctx = ctx(&mut b);
        let args = vec![];
        let by_name = ctx.prepare(&Request::new(Run::Program("sh", &args), &None, &[]));
        assert_eq!(by_name.unwrap().program, Path::new("/bin/sh"));
        let by_path = ctx.prepare(&Request::new(Run::Program("/bin/sh", &args), &None, &[]));
        assert!(by_path.is_ok());
        for other in ["bash", "./sh", "../bin/sh", "/usr/bin/env"] {
            let req = Request::new(Run::Program(other, &args), &None, &[]);
            assert!(
                matches!(ctx.prepare(&req), Err(ErrorCode::AccessDenied(_))),
                "{other}"
            );
        }
    }

    #[test]
    fn a_policy_checks_without_a_context() {
        // The policy alone, as data (a worker's or a remote agent's), checks
        // a request; a denial comes back as such, unreported.
        let mut b = shell();
        b.allow_env("LANG").unwrap();
        let policy: Policy =
            serde_json::from_str(&serde_json::to_string(ctx(&mut b).policy()).unwrap()).unwrap();
        let req = Request::new(Run::Shell("true", None), &None, &[]);
        assert_eq!(policy.check(&[], &req).unwrap().args, ["-c", "true"]);
        let home = env(&[("HOME", "/")]);
        let req = Request::new(Run::Shell("true", None), &None, &home);
        assert!(matches!(
            policy.check(&[], &req),
            Err(Refusal::Denied(Denial::EnvName(n))) if n == "HOME"
        ));
    }

    #[test]
    fn exec_needs_a_granted_shell() {
        let req = Request::new(Run::Shell("true", None), &None, &[]);
        let err = ctx(&mut ProcessCtx::builder()).prepare(&req).unwrap_err();
        assert!(matches!(err, ErrorCode::AccessDenied(m) if m.contains("no shell")));
        let ok = ctx(&mut shell()).prepare(&req).unwrap();
        assert_eq!(ok.args, ["-c", "true"]);
    }

    #[test]
    fn exec_runs_the_shell_it_names_if_granted_else_the_first() {
        let mut b = shell();
        b.allow_shell("/bin/bash").unwrap();
        let ctx = ctx(&mut b);
        let first = Request::new(Run::Shell("true", None), &None, &[]);
        assert_eq!(ctx.prepare(&first).unwrap().argv0, "sh");
        let bash = Request::new(Run::Shell("true", Some("bash")), &None, &[]);
        assert_eq!(ctx.prepare(&bash).unwrap().argv0, "bash");
        let by_path = Request::new(Run::Shell("true", Some("/bin/bash")), &None, &[]);
        assert_eq!(ctx.prepare(&by_path).unwrap().argv0, "bash");
        let zsh = Request::new(Run::Shell("true", Some("dash")), &None, &[]);
        let err = ctx.prepare(&zsh).unwrap_err();
        assert!(
            matches!(err, ErrorCode::AccessDenied(m) if m.contains("shell `dash` is not granted"))
        );
    }

    #[test]
    fn environment_names_must_be_allowed_and_injection_names_opted_in() {
        let mut b = shell();
        b.allow_env("LANG")
            .unwrap()
            .allow_env("LD_PRELOAD")
            .unwrap();
        let plain = ctx(&mut b);
        let run = Run::Shell("true", None);
        let lang = env(&[("LANG", "C"), ("LANG", "C.UTF-8")]);
        let ok = plain.prepare(&Request::new(run, &None, &lang)).unwrap();
        assert_eq!(ok.env, env(&[("LANG", "C.UTF-8")]), "a later value wins");
        for (bad, code) in [
            (env(&[("HOME", "/")]), "access-denied"),
            (env(&[("LD_PRELOAD", "x.so")]), "access-denied"),
            (env(&[("A=B", "x")]), "invalid-argument"),
            (env(&[("", "x")]), "invalid-argument"),
            (env(&[("LANG", "a\0b")]), "invalid-argument"),
        ] {
            let err = plain.prepare(&Request::new(run, &None, &bad)).unwrap_err();
            let got = match err {
                ErrorCode::AccessDenied(_) => "access-denied",
                ErrorCode::InvalidArgument(_) => "invalid-argument",
                _ => "other",
            };
            assert_eq!(got, code, "{bad:?}");
        }
        let mut b = shell();
        b.allow_injection_env("LD_PRELOAD").unwrap();
        let preload = env(&[("LD_PRELOAD", "x.so")]);
        assert!(
            ctx(&mut b)
                .prepare(&Request::new(run, &None, &preload))
                .is_ok()
        );
    }

    #[test]
    fn nul_bytes_and_over_long_arguments_are_refused() {
        let mut b = shell();
        b.allow_program("/bin/sh").unwrap();
        let ctx = ctx(&mut b);
        let nul = vec!["a\0b".to_owned()];
        let req = Request::new(Run::Program("sh", &nul), &None, &[]);
        assert!(matches!(
            ctx.prepare(&req),
            Err(ErrorCode::InvalidArgument(_))
        ));
        let long = vec!["y".repeat(300 << 10)];
        let req = Request::new(Run::Program("sh", &long), &None, &[]);
        assert!(matches!(
            ctx.prepare(&req),
            Err(ErrorCode::LimitExceeded(_))
        ));
        let cwd = Some("/a\0".to_owned());
        let req = Request::new(Run::Shell("true", None), &cwd, &[]);
        assert!(matches!(
            ctx.prepare(&req),
            Err(ErrorCode::InvalidArgument(_))
        ));
    }

    #[test]
    fn the_working_directory_stays_inside_a_granted_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("out")).unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let mut b = shell();
        b.dir(dir.path(), "/work", DirAccess::ReadOnly).unwrap();
        let ctx = ctx(&mut b);
        let cwd = |c: &str| {
            let cwd = Some(c.to_owned());
            ctx.prepare(&Request::new(Run::Shell("true", None), &cwd, &[]))
        };
        assert_eq!(cwd("/work/sub").unwrap().cwd_host, dir.path().join("sub"));
        assert_eq!(cwd("sub").unwrap().cwd_host, dir.path().join("sub"));
        assert_eq!(cwd("/work").unwrap().cwd_host, dir.path());
        for (bad, code) in [
            ("/work/..", "access-denied"),
            ("/work/out", "access-denied"),
            ("/etc", "access-denied"),
            ("/work/missing", "not-found"),
            ("/work/file", "invalid-argument"),
        ] {
            let got = match cwd(bad).unwrap_err() {
                ErrorCode::AccessDenied(_) => "access-denied",
                ErrorCode::NotFound(_) => "not-found",
                ErrorCode::InvalidArgument(_) => "invalid-argument",
                _ => "other",
            };
            assert_eq!(got, code, "{bad}");
        }
        // No cwd: the first granted directory.
        let none = ctx
            .prepare(&Request::new(Run::Shell("true", None), &None, &[]))
            .unwrap();
        assert_eq!(none.cwd_host, dir.path());
    }

    #[test]
    fn a_pinned_program_is_refused_once_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("prog");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        use sha2::{Digest, Sha256};
        let digest = format!("{:x}", Sha256::digest(std::fs::read(&prog).unwrap()));
        let mut b = ProcessCtx::builder();
        assert!(b.allow_program_pinned(&prog, &"0".repeat(64)).is_err());
        b.allow_program_pinned(&prog, &digest).unwrap();
        let ctx = ctx(&mut b);
        let args = vec![];
        let req = Request::new(Run::Program("prog", &args), &None, &[]);
        assert!(ctx.prepare(&req).is_ok());
        std::fs::write(&prog, "#!/bin/sh\necho changed\n").unwrap();
        assert!(
            matches!(ctx.prepare(&req), Err(ErrorCode::AccessDenied(m)) if m.contains("SHA-256"))
        );
    }

    #[test]
    fn only_granted_user_and_group_ids_may_be_asked_for() {
        let mut b = shell();
        b.child_user(2000, 3000).allow_uid(1234);
        let ctx = ctx(&mut b);
        assert_eq!(ctx.policy.check_user(None, None).unwrap(), None);
        assert_eq!(
            ctx.policy.check_user(Some(1234), None).unwrap(),
            Some((1234, 3000))
        );
        assert_eq!(
            ctx.policy.check_user(Some(2000), Some(3000)).unwrap(),
            Some((2000, 3000))
        );
        assert!(ctx.policy.check_user(Some(0), None).is_err());
        assert!(ctx.policy.check_user(None, Some(1234)).is_err());
    }
}
