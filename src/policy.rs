//! `wasmproc run --policy FILE`: the same grants as the flags, in TOML.
//!
//! Every key, commented with the flag it stands for, is in
//! `src/policy-example.toml`, which `wasmproc policy --example` prints and
//! a test parses; `docs/policy.md` is the reference.
//!
//!
//! Host paths (`dir.host`, `forks`, `audit_log`, and shells and programs
//! written as paths, with a `/`) are relative to the policy file's
//! directory; `dir.guest` defaults to `dir.host` as written. Where the file
//! and a flag both speak (see `agree`, `file_wins`, `either`, `add`):
//! - lists add to the flags' (`shells` only those not yet granted);
//! - a switch is on when the flag or the file turns it on, so a file
//!   cannot undo a flag (`network = false` with `--allow-network` allows
//!   the network, `worker_template = true` with `--no-worker-template`
//!   starts no template);
//! - a single value given both ways must agree, else the run is refused
//!   naming the key (`shell` is checked against the first
//!   `--allow-shell`) — except where the flag has a default and so cannot
//!   tell whether it was given (`max_buffer`, `max_children`,
//!   `max_wasm_memory`, `channel_buffer`, `channel_buffer_total` and `warm_workers`): there the
//!   file's value wins.
//!
//! Unknown keys and bad values are errors that name the line.

use crate::Grants;

/// A policy file with every key, commented (`wasmproc policy --example`).
pub const EXAMPLE: &str = include_str!("policy-example.toml");
use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    cluster: Option<String>,
    host_key: Option<String>,
    #[serde(default)]
    trust_agents: Vec<String>,
    shell: Option<String>,
    #[serde(default)]
    shells: Vec<String>,
    #[serde(default)]
    programs: Vec<String>,
    #[serde(default)]
    forks: Vec<String>,
    #[serde(default)]
    allow_env: Vec<String>,
    #[serde(default)]
    allow_injection_env: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    audit_log: Option<String>,
    #[serde(default)]
    dir: Vec<Dir>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    confinement: Confinement,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Dir {
    host: String,
    guest: Option<String>,
    #[serde(default)]
    access: Access,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Access {
    Ro,
    #[default]
    Rw,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Limits {
    timeout: Option<String>,
    max_buffer: Option<u64>,
    max_children: Option<usize>,
    max_wasm_memory: Option<u64>,
    channel_buffer: Option<usize>,
    channel_buffer_total: Option<usize>,
    warm_workers: Option<usize>,
    worker_template: Option<bool>,
    #[serde(default)]
    rlimits: BTreeMap<String, u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Confinement {
    require: Option<bool>,
    network: Option<bool>,
    enabled: Option<bool>,
    cgroup: Option<bool>,
    cgroup_per_child: Option<bool>,
    allow_uid_change: Option<bool>,
    sandbox: Option<bool>,
    child_user: Option<String>,
    child_uids: Option<String>,
    #[serde(default)]
    allow_uids: Vec<u32>,
    #[serde(default)]
    allow_gids: Vec<u32>,
}

/// Adds the grants of the policy file at `path` to `args`.
pub fn apply(path: &Path, args: &mut Grants) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    apply_text(path, &text, args)
}

/// Adds the grants of `text`, the policy file at `path`, to `args`, one
/// section after another (the first disagreement found is the error).
fn apply_text(path: &Path, text: &str, args: &mut Grants) -> Result<()> {
    let policy: Policy = toml::from_str(text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let file = Source::new(path);
    args.cluster = file.agree("cluster", args.cluster.take(), policy.cluster.clone())?;
    let key = policy.host_key.as_deref().map(|key| file.path(key));
    args.host_key = file.agree("host_key", args.host_key.take(), key)?;
    args.trust_agent.extend(policy.trust_agents.iter().cloned());
    programs(&file, &policy, args)?;
    environment(&policy, args);
    let log = policy.audit_log.as_deref().map(|log| file.path(log));
    args.audit_log = file.agree("audit_log", args.audit_log.take(), log)?;
    dirs(&file, &policy.dir, args);
    limits(&file, &policy.limits, args)?;
    confinement(&policy.confinement, args);
    file.check_cgroup(args)?;
    identity(&file, &policy.confinement, args)?;
    file.check_confinement(args)
}

/// The policy file being applied: where its relative paths start, and the
/// name its errors carry.
struct Source<'a> {
    path: &'a Path,
    base: &'a Path,
}

impl<'a> Source<'a> {
    fn new(path: &'a Path) -> Self {
        let base = path.parent().unwrap_or(Path::new("."));
        Source { path, base }
    }

    /// A host path written in the file: relative to the file's directory.
    fn path(&self, p: &str) -> PathBuf {
        self.base.join(p)
    }

    /// A program (or shell) written in the file: relative to the file's
    /// directory if written as a path, else a name for the PATH lookup.
    fn program(&self, p: &str) -> String {
        if p.contains('/') {
            self.path(p).display().to_string()
        } else {
            p.to_owned()
        }
    }
}

// Where the file and the flags meet. Every key goes through one of these
// rules; nowhere else is the precedence between them decided.

impl Source<'_> {
    /// A single value, whose flag is unset unless given: the file fills an
    /// unset flag; given both ways, the two must agree, else the run is
    /// refused naming `key`. Returns the value the flag ends with.
    fn agree<T: PartialEq>(
        &self,
        key: &str,
        flag: Option<T>,
        file: Option<T>,
    ) -> Result<Option<T>> {
        match (flag, file) {
            (Some(flag), Some(file)) if flag != file => Err(anyhow!(
                "{}: `{key}` differs from the flag",
                self.path.display()
            )),
            (flag, file) => Ok(flag.or(file)),
        }
    }
}

/// A value whose flag has a default, and so cannot tell whether it was
/// given: the file's value wins.
fn file_wins<T>(flag: &mut T, file: Option<T>) {
    if let Some(file) = file {
        *flag = file;
    }
}

/// A switch: on when the flag or the file turns it on (the file cannot turn
/// off a flag given).
fn either(flag: &mut bool, file_turns_on: bool) {
    *flag |= file_turns_on;
}

/// A list: the file's items add to the flag's.
fn add<T>(flag: &mut Vec<T>, file: impl IntoIterator<Item = T>) {
    flag.extend(file);
}

/// A list of which each item counts once: the file's items not already
/// there add to the flag's.
fn add_new<T: PartialEq>(flag: &mut Vec<T>, file: impl IntoIterator<Item = T>) {
    for item in file {
        if !flag.contains(&item) {
            flag.push(item);
        }
    }
}

// The sections of the file, in the order they are applied.

/// `shell`, `shells`, `programs` and `forks`.
fn programs(file: &Source, policy: &Policy, args: &mut Grants) -> Result<()> {
    // The file's default shell is the first --allow-shell.
    let shell = policy.shell.as_deref().map(|s| file.program(s));
    let default = file.agree("shell", args.allow_shell.first().cloned(), shell)?;
    if args.allow_shell.is_empty() {
        args.allow_shell.extend(default);
    }
    let shells = policy.shells.iter().map(|s| file.program(s));
    add_new(&mut args.allow_shell, shells);
    let programs = policy.programs.iter().map(|p| file.program(p));
    add(&mut args.allow_run, programs);
    let forks = policy.forks.iter().map(|p| file.path(p));
    add(&mut args.allow_fork, forks);
    Ok(())
}

/// `allow_env`, `allow_injection_env` and `env`.
fn environment(policy: &Policy, args: &mut Grants) {
    add(&mut args.allow_env, policy.allow_env.iter().cloned());
    let injection = policy.allow_injection_env.iter().cloned();
    add(&mut args.allow_injection_env, injection);
    let env = policy.env.iter().map(|(k, v)| format!("{k}={v}"));
    add(&mut args.envs, env);
}

/// `[[dir]]`, as `HOST::GUEST` grants of --dir or --dir-ro.
fn dirs(file: &Source, dirs: &[Dir], args: &mut Grants) {
    for dir in dirs {
        let guest = dir.guest.as_deref().unwrap_or(&dir.host);
        let grant = format!("{}::{guest}", file.path(&dir.host).display());
        let list = match dir.access {
            Access::Ro => &mut args.dirs_ro,
            Access::Rw => &mut args.dirs,
        };
        add(list, [grant]);
    }
}

/// `[limits]`.
fn limits(file: &Source, limits: &Limits, args: &mut Grants) -> Result<()> {
    let parse = |t: &String| {
        let bad = || format!("{}: limits.timeout = {t:?}", file.path.display());
        humantime::parse_duration(t).with_context(bad)
    };
    let timeout = limits.timeout.as_ref().map(parse).transpose()?;
    args.timeout = file.agree("limits.timeout", args.timeout, timeout)?;
    file_wins(&mut args.max_buffer, limits.max_buffer);
    file_wins(&mut args.max_children, limits.max_children);
    file_wins(&mut args.channel_buffer, limits.channel_buffer);
    file_wins(&mut args.channel_buffer_total, limits.channel_buffer_total);
    file_wins(&mut args.warm_workers, limits.warm_workers);
    either(
        &mut args.no_worker_template,
        limits.worker_template == Some(false),
    );
    file_wins(&mut args.max_wasm_memory, limits.max_wasm_memory);
    let rlimits = limits.rlimits.iter().map(|(k, v)| format!("{k}={v}"));
    add(&mut args.rlimits, rlimits);
    Ok(())
}

/// The switches of `[confinement]`.
fn confinement(c: &Confinement, args: &mut Grants) {
    either(&mut args.require_confinement, c.require == Some(true));
    either(&mut args.allow_network, c.network == Some(true));
    either(&mut args.no_confinement, c.enabled == Some(false));
    either(&mut args.no_cgroup, c.cgroup == Some(false));
    either(&mut args.cgroup_per_child, c.cgroup_per_child == Some(true));
    either(&mut args.allow_uid_change, c.allow_uid_change == Some(true));
    either(&mut args.no_sandbox, c.sandbox == Some(false));
}

/// The ids of `[confinement]`: `child_user`, `child_uids`, `allow_uids`,
/// `allow_gids`.
fn identity(file: &Source, c: &Confinement, args: &mut Grants) -> Result<()> {
    let parse = |u: &String| {
        let bad = |e| anyhow!("{}: confinement.child_user: {e}", file.path.display());
        crate::parse_user(u).map_err(bad)
    };
    let user = c.child_user.as_ref().map(parse).transpose()?;
    args.child_user = file.agree("confinement.child_user", args.child_user, user)?;
    let ids = (c.child_uids.as_ref())
        .map(|r| crate::parse_id_range(r))
        .transpose()
        .map_err(|e| anyhow!("{}: confinement.child_uids: {e}", file.path.display()))?;
    args.child_uids = file.agree("confinement.child_uids", args.child_uids.clone(), ids)?;
    if args.child_user.is_some() && args.child_uids.is_some() {
        bail!(
            "{}: child_user and child_uids cannot both be given (one id for all, or one per guest)",
            file.path.display()
        );
    }
    add(&mut args.allow_uids, c.allow_uids.iter().copied());
    add(&mut args.allow_gids, c.allow_gids.iter().copied());
    Ok(())
}

// What the flags cannot say together (clap refuses it) but the file and
// the flags can.

impl Source<'_> {
    fn check_cgroup(&self, args: &Grants) -> Result<()> {
        if args.no_cgroup && args.cgroup_per_child {
            bail!(
                "{}: a cgroup per child needs the guest's cgroup",
                self.path.display()
            );
        }
        Ok(())
    }

    fn check_confinement(&self, args: &Grants) -> Result<()> {
        if args.require_confinement && (args.no_confinement || args.no_sandbox) {
            bail!(
                "{}: confinement is both required and disabled",
                self.path.display()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use std::time::Duration;

    /// Where the policy files of these tests (never read from disk) are.
    const FILE: &str = "/etc/wasmproc/policy.toml";

    /// The grants of `wasmproc run FLAGS guest.wasm`.
    fn flags(flags: &[&str]) -> Grants {
        let argv = ["wasmproc"].iter().chain(flags).chain(&["guest.wasm"]);
        match crate::RunArgs::try_parse_from(argv) {
            Ok(args) => args.grants,
            Err(e) => panic!("{e}"),
        }
    }

    /// The grants of `wasmproc run FLAGS --policy FILE guest.wasm`, FILE
    /// holding `policy`.
    fn with_policy(flag: &[&str], policy: &str) -> Result<Grants> {
        let mut args = flags(flag);
        apply_text(Path::new(FILE), policy, &mut args)?;
        Ok(args)
    }

    fn granted(flag: &[&str], policy: &str) -> Grants {
        match with_policy(flag, policy) {
            Ok(args) => args,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// The error refusing `policy` with `flag`.
    fn refused(flag: &[&str], policy: &str) -> String {
        match with_policy(flag, policy) {
            Ok(_) => panic!("accepted: {flag:?} with {policy:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// The example policy of this module's docs.
    fn documented_example() -> String {
        EXAMPLE.to_owned()
    }

    #[test]
    fn the_documented_example_sets_every_flag_it_names() {
        let args = granted(&[], &documented_example());
        assert_eq!(args.allow_shell, ["/bin/sh", "/bin/bash"]);
        assert_eq!(args.allow_run, ["sort", "/etc/wasmproc/tools/wc@sha256:…"]);
        assert_eq!(args.allow_fork, [Path::new("/etc/wasmproc/worker.wasm")]);
        assert_eq!(args.allow_env, ["LANG"]);
        assert!(args.allow_injection_env.is_empty());
        assert_eq!(args.envs, ["MODE=fast"]);
        assert_eq!(
            args.audit_log.as_deref(),
            Some(Path::new("/etc/wasmproc/audit.jsonl"))
        );
        assert_eq!(args.cluster.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(
            args.host_key.as_deref(),
            Some(Path::new("/etc/wasmproc/host.nk"))
        );
        assert_eq!(args.trust_agent, ["UABC…"]);
        assert_eq!(args.dirs_ro, ["/etc/wasmproc/data::/data"]);
        assert!(args.dirs.is_empty());
        assert_eq!(args.timeout, Some(Duration::from_secs(10)));
        assert_eq!(args.max_buffer, 1_048_576);
        assert_eq!(args.max_children, 64);
        assert_eq!(args.max_wasm_memory, 268_435_456);
        assert_eq!(args.channel_buffer, 16_777_216);
        assert_eq!(args.warm_workers, 2);
        assert!(!args.no_worker_template);
        assert_eq!(args.rlimits, ["cpu=10", "nofile=256"]);
        assert!(args.require_confinement);
        assert!(!args.allow_network && !args.no_confinement && !args.no_cgroup);
        assert!(!args.cgroup_per_child && !args.allow_uid_change && !args.no_sandbox);
        assert_eq!(args.child_uids, Some(1_500_000_000..=1_500_065_535));
        assert_eq!(args.child_user, None);
        assert_eq!((args.allow_uids, args.allow_gids), (vec![1000], vec![1000]));
    }

    #[test]
    fn one_id_for_all_and_an_id_per_guest_are_refused_together() {
        let both = "[confinement]\nchild_user = \"7\"\nchild_uids = \"10-20\"\n";
        assert!(refused(&[], both).contains("cannot both be given"));
        let flag_and_file = refused(
            &["--child-user", "7"],
            "[confinement]\nchild_uids = \"10-20\"\n",
        );
        assert!(flag_and_file.contains("cannot both be given"));
        assert!(refused(&[], "[confinement]\nchild_uids = \"0-20\"\n").contains("child_uids"));
    }

    #[test]
    fn the_opposite_switches_turn_on_the_no_flags() {
        let args = granted(
            &[],
            "[limits]\nworker_template = false\n\n[confinement]\nnetwork = true\n\
             enabled = false\ncgroup = false\nallow_uid_change = true\nsandbox = false\n",
        );
        assert!(args.no_worker_template && args.allow_network && args.no_confinement);
        assert!(args.no_cgroup && args.allow_uid_change && args.no_sandbox);
        let args = granted(&[], "[confinement]\ncgroup_per_child = true\n");
        assert!(args.cgroup_per_child);
    }

    #[test]
    fn an_empty_policy_leaves_the_flags_as_they_were() {
        let flag = [
            "--allow-run",
            "sort",
            "--timeout",
            "3s",
            "--max-buffer",
            "7",
        ];
        let args = granted(&flag, "");
        assert_eq!(args.allow_run, ["sort"]);
        assert_eq!(args.timeout, Some(Duration::from_secs(3)));
        assert_eq!(args.max_buffer, 7);
        assert!(args.allow_shell.is_empty() && args.dirs.is_empty());
        assert_eq!((args.cluster, args.child_user), (None, None));
    }

    #[test]
    fn relative_host_paths_resolve_against_the_policy_files_directory() {
        let args = granted(
            &[],
            "programs = [\"bin/tool\", \"/usr/bin/env\"]\nshells = [\"sh/dash\"]\n\
             forks = [\"w.wasm\", \"/opt/w.wasm\"]\naudit_log = \"logs/audit.jsonl\"\n\
             [[dir]]\nhost = \"../data\"\nguest = \"/data\"\n\
             [[dir]]\nhost = \"/srv\"\naccess = \"ro\"\n",
        );
        assert_eq!(args.allow_run, ["/etc/wasmproc/bin/tool", "/usr/bin/env"]);
        assert_eq!(args.allow_shell, ["/etc/wasmproc/sh/dash"]);
        let forks = [Path::new("/etc/wasmproc/w.wasm"), Path::new("/opt/w.wasm")];
        assert_eq!(args.allow_fork, forks);
        let log = Path::new("/etc/wasmproc/logs/audit.jsonl");
        assert_eq!(args.audit_log.as_deref(), Some(log));
        assert_eq!(args.dirs, ["/etc/wasmproc/../data::/data"]);
        assert_eq!(args.dirs_ro, ["/srv::/srv"]);
    }

    #[test]
    fn a_bare_program_name_is_left_for_the_path_lookup() {
        let args = granted(&[], "shell = \"bash\"\nprograms = [\"sort\"]\n");
        assert_eq!(args.allow_shell, ["bash"]);
        assert_eq!(args.allow_run, ["sort"]);
    }

    #[test]
    fn a_directory_is_read_write_at_its_host_path_as_written_by_default() {
        let args = granted(&[], "[[dir]]\nhost = \"data\"\n");
        assert_eq!(args.dirs, ["/etc/wasmproc/data::data"]);
        assert!(args.dirs_ro.is_empty());
    }

    #[test]
    fn lists_in_the_file_add_to_the_flags() {
        let args = granted(
            &[
                "--allow-run=cat",
                "--allow-env=A",
                "--env=X=1",
                "--dir=/a",
                "--rlimit=cpu=1",
                "--allow-uid=7",
                "--allow-gid=8",
                "--allow-fork=/f.wasm",
            ],
            "programs = [\"sort\"]\nallow_env = [\"B\"]\nenv = { Y = \"2\" }\nforks = [\"/g.wasm\"]\n\
             [[dir]]\nhost = \"/b\"\n[limits]\nrlimits = { nofile = 9 }\n\
             [confinement]\nallow_uids = [17]\nallow_gids = [18]\n",
        );
        assert_eq!(args.allow_run, ["cat", "sort"]);
        assert_eq!(args.allow_env, ["A", "B"]);
        assert_eq!(args.envs, ["X=1", "Y=2"]);
        assert_eq!(args.dirs, ["/a", "/b::/b"]);
        assert_eq!(args.rlimits, ["cpu=1", "nofile=9"]);
        assert_eq!(
            (args.allow_uids, args.allow_gids),
            (vec![7, 17], vec![8, 18])
        );
        assert_eq!(
            args.allow_fork,
            [Path::new("/f.wasm"), Path::new("/g.wasm")]
        );
    }

    #[test]
    fn a_timeout_in_the_file_fills_an_unset_flag() {
        let args = granted(&[], "[limits]\ntimeout = \"2m\"\n");
        assert_eq!(args.timeout, Some(Duration::from_secs(120)));
    }

    #[test]
    fn the_same_timeout_in_the_file_and_the_flag_is_fine() {
        let args = granted(&["--timeout", "10s"], "[limits]\ntimeout = \"10000ms\"\n");
        assert_eq!(args.timeout, Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_timeout_in_the_file_and_a_different_flag_is_a_conflict() {
        let error = refused(&["--timeout", "5s"], "[limits]\ntimeout = \"10s\"\n");
        assert_eq!(
            error,
            format!("{FILE}: `limits.timeout` differs from the flag")
        );
    }

    #[test]
    fn every_single_value_agrees_with_its_flag_or_is_a_conflict_naming_its_key() {
        // (key, the flag, the file agreeing with it, the file disagreeing)
        let cases = [
            (
                "cluster",
                "--cluster=nats://a:1",
                "cluster = \"nats://a:1\"",
                "cluster = \"nats://b:1\"",
            ),
            (
                "host_key",
                "--host-key=/etc/wasmproc/a.nk",
                "host_key = \"a.nk\"",
                "host_key = \"b.nk\"",
            ),
            (
                "audit_log",
                "--audit-log=/etc/wasmproc/a.jsonl",
                "audit_log = \"a.jsonl\"",
                "audit_log = \"b.jsonl\"",
            ),
            (
                "shell",
                "--allow-shell=/bin/sh",
                "shell = \"/bin/sh\"",
                "shell = \"/bin/bash\"",
            ),
            (
                "confinement.child_user",
                "--child-user=7:7",
                "[confinement]\nchild_user = \"7\"",
                "[confinement]\nchild_user = \"7:8\"",
            ),
        ];
        for (key, flag, same, different) in cases {
            granted(&[flag], same);
            let error = refused(&[flag], different);
            assert_eq!(error, format!("{FILE}: `{key}` differs from the flag"));
        }
    }

    #[test]
    fn the_files_shell_is_the_default_unless_a_flag_named_it_and_shells_count_once() {
        let policy = "shell = \"/bin/sh\"\nshells = [\"/bin/bash\", \"/bin/sh\", \"/bin/bash\"]\n";
        assert_eq!(granted(&[], policy).allow_shell, ["/bin/sh", "/bin/bash"]);
        let args = granted(&["--allow-shell", "--allow-shell=/bin/zsh"], policy);
        assert_eq!(args.allow_shell, ["/bin/sh", "/bin/zsh", "/bin/bash"]);
        let error = refused(&["--allow-shell=/bin/zsh"], policy);
        assert!(error.contains("`shell` differs"), "{error}");
    }

    #[test]
    fn the_file_wins_over_the_flags_that_have_defaults() {
        let args = granted(
            &[
                "--max-buffer=1",
                "--max-children=2",
                "--max-wasm-memory=3",
                "--channel-buffer=4",
                "--warm-workers=5",
            ],
            "[limits]\nmax_buffer = 10\nmax_children = 20\nmax_wasm_memory = 30\n\
             channel_buffer = 40\nwarm_workers = 50\n",
        );
        assert_eq!(
            (args.max_buffer, args.max_children, args.max_wasm_memory),
            (10, 20, 30)
        );
        assert_eq!((args.channel_buffer, args.warm_workers), (40, 50));
    }

    #[test]
    fn a_switch_is_on_when_either_the_flag_or_the_file_turns_it_on() {
        let args = granted(
            &["--allow-network", "--no-worker-template", "--no-cgroup"],
            "[limits]\nworker_template = true\n[confinement]\nnetwork = false\ncgroup = true\n",
        );
        assert!(args.allow_network && args.no_worker_template && args.no_cgroup);
        let args = granted(&[], "[confinement]\nnetwork = false\nrequire = false\n");
        assert!(!args.allow_network && !args.require_confinement);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        for (policy, key) in [
            ("programz = [\"sort\"]\n", "programz"),
            ("[limits]\ntimout = \"1s\"\n", "timout"),
            ("[[dir]]\nhost = \"a\"\nhots = \"b\"\n", "hots"),
            ("[confinement]\nrequier = true\n", "requier"),
            ("[sandbox]\nenabled = false\n", "sandbox"),
        ] {
            let error = refused(&[], policy);
            assert!(error.starts_with(FILE), "{error}");
            assert!(error.contains(&format!("unknown field `{key}`")), "{error}");
        }
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        for (policy, key) in [
            (
                "[limits]\ntimeout = \"soon\"\n",
                "limits.timeout = \"soon\"",
            ),
            (
                "[confinement]\nchild_user = \"nobody\"\n",
                "confinement.child_user",
            ),
            (
                "[[dir]]\nhost = \"a\"\naccess = \"rx\"\n",
                "access = \"rx\"",
            ),
            ("[limits]\nmax_buffer = \"big\"\n", "max_buffer = \"big\""),
            ("[limits]\nmax_children = -1\n", "max_children = -1"),
            ("forks = \"w.wasm\"\n", "forks = \"w.wasm\""),
            ("[confinement]\nnetwork = \"yes\"\n", "network = \"yes\""),
        ] {
            let error = refused(&[], policy);
            assert!(error.starts_with(FILE), "{error}");
            assert!(error.contains(key), "{key} not in {error}");
        }
    }

    #[test]
    fn a_cgroup_per_child_without_the_cgroup_is_refused() {
        let error = refused(&["--cgroup-per-child"], "[confinement]\ncgroup = false\n");
        assert_eq!(
            error,
            format!("{FILE}: a cgroup per child needs the guest's cgroup")
        );
        refused(&["--no-cgroup"], "[confinement]\ncgroup_per_child = true\n");
    }

    #[test]
    fn confinement_both_required_and_disabled_is_refused() {
        let error = refused(&["--no-sandbox"], "[confinement]\nrequire = true\n");
        assert_eq!(
            error,
            format!("{FILE}: confinement is both required and disabled")
        );
        refused(
            &["--require-confinement"],
            "[confinement]\nenabled = false\n",
        );
        refused(&[], "[confinement]\nrequire = true\nsandbox = false\n");
    }

    #[test]
    fn apply_reads_the_policy_file_and_names_one_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, "[[dir]]\nhost = \"data\"\n").unwrap();
        let mut args = flags(&[]);
        apply(&path, &mut args).unwrap();
        let data = dir.path().join("data");
        assert_eq!(args.dirs, [format!("{}::data", data.display())]);
        let missing = dir.path().join("missing.toml");
        let error = format!("{:#}", apply(&missing, &mut args).unwrap_err());
        assert!(
            error.starts_with(&format!("reading {}", missing.display())),
            "{error}"
        );
    }
}
