//! A guest's request checked against the grants ([`Policy::check`]): it is
//! refused with a [`Refusal`] naming the problem, or turned into a
//! [`Prepared`] command that names only granted things.

use super::grants::{find, open_cwd};
use super::{
    Denial, DirGrant, Policy, ProgramGrant, Refusal, check_env_pair, is_injection_env, no_nul,
};
use crate::failure::Failure;
use cap_std::fs::Dir;
use std::os::fd::RawFd;
use std::path::PathBuf;

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
    /// The request as the guest asked it, which a worker sends the
    /// launcher of its children to check again (`None`: a worker process,
    /// which the host starts itself).
    pub asked: Option<Asked>,
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

/// A [`Request`] as owned data: what a forked worker sends the launcher
/// of its children (`launch::remote`), which checks it again against the
/// worker's grants rather than trust the worker's own check.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Asked {
    run: AskedRun,
    cwd: Option<String>,
    env: Vec<(String, String)>,
    uid: Option<u32>,
    gid: Option<u32>,
}

/// The program part of an [`Asked`] request.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum AskedRun {
    Shell {
        command: String,
        shell: Option<String>,
    },
    Program {
        program: String,
        args: Vec<String>,
    },
}

impl Asked {
    /// The request it holds, to check.
    pub fn request(&self) -> Request<'_> {
        Request {
            run: match &self.run {
                AskedRun::Shell { command, shell } => Run::Shell(command, shell.as_deref()),
                AskedRun::Program { program, args } => Run::Program(program, args),
            },
            cwd: self.cwd.as_deref(),
            env: &self.env,
            uid: self.uid,
            gid: self.gid,
        }
    }
}

impl<'a> Request<'a> {
    /// The request as owned data.
    pub fn to_asked(&self) -> Asked {
        Asked {
            run: match self.run {
                Run::Shell(command, shell) => AskedRun::Shell {
                    command: command.to_owned(),
                    shell: shell.map(str::to_owned),
                },
                Run::Program(program, args) => AskedRun::Program {
                    program: program.to_owned(),
                    args: args.to_vec(),
                },
            },
            cwd: self.cwd.map(str::to_owned),
            env: self.env.to_vec(),
            uid: self.uid,
            gid: self.gid,
        }
    }

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
            return Err(Failure::NotFound(format!(
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
            asked: Some(req.to_asked()),
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
fn check_strings(req: &Request<'_>) -> Result<(), Failure> {
    match req.run {
        Run::Shell(c, shell) => {
            no_nul("the command", c)?;
            no_nul("the shell", shell.unwrap_or_default())?;
        }
        Run::Program("", _) => {
            return Err(Failure::InvalidArgument("the program name is empty".into()));
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

impl crate::policy::Limits {
    /// The `timeout-ms` `ms` a guest asked for, if it is at least 1 and at
    /// most the host's maximum.
    pub(crate) fn asked_timeout(&self, ms: u64) -> Result<std::time::Duration, Refusal> {
        if ms == 0 {
            let message = "timeout-ms must be at least 1".into();
            return Err(Failure::InvalidArgument(message).into());
        }
        let timeout = std::time::Duration::from_millis(ms);
        match self.max_timeout {
            Some(max) if timeout > max => Err(Denial::Limit {
                limit: "max_timeout",
                message: format!("a timeout of {timeout:?} is above the host's limit of {max:?}"),
            }
            .into()),
            _ => Ok(timeout),
        }
    }
}
