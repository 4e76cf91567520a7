//! `wasmproc run --policy FILE`: the same grants as the flags, in TOML.
//!
//! ```toml
//! shell = "/bin/sh"                  # --allow-shell (the default shell)
//! shells = ["/bin/bash"]             # more --allow-shell
//! programs = ["sort", "tools/wc@sha256:…"]   # --allow-run
//! forks = ["worker.wasm"]            # --allow-fork
//! allow_env = ["LANG"]               # --allow-env
//! allow_injection_env = []           # --allow-injection-env
//! env = { MODE = "fast" }            # --env (the guest's own)
//! audit_log = "audit.jsonl"          # --audit-log
//! cluster = "nats://127.0.0.1:4222"  # --cluster
//!
//! [[dir]]                            # --dir / --dir-ro
//! host = "data"
//! guest = "/data"                    # default: the host path
//! access = "ro"                      # "ro" or "rw" (default)
//!
//! [limits]
//! timeout = "10s"                    # --timeout
//! max_buffer = 1048576               # --max-buffer
//! max_children = 64                  # --max-children
//! max_wasm_memory = 268435456        # --max-wasm-memory
//! channel_buffer = 16777216          # --channel-buffer
//! warm_workers = 2                   # --warm-workers
//! worker_template = true             # false: --no-worker-template
//! rlimits = { cpu = 10, nofile = 256 }   # --rlimit
//!
//! [confinement]
//! require = true                     # --require-confinement
//! network = false                    # --allow-network
//! enabled = true                     # false: --no-confinement
//! cgroup = true                      # false: --no-cgroup
//! cgroup_per_child = false           # --cgroup-per-child
//! allow_uid_change = false           # --allow-uid-change
//! sandbox = true                     # false: --no-sandbox
//! child_user = "65534:65534"         # --child-user
//! allow_uids = [1000]                # --allow-uid
//! allow_gids = [1000]                # --allow-gid
//! ```
//!
//! Host paths (`dir.host`, programs and forks written as paths, `audit_log`)
//! are relative to the policy file's directory. Lists add to the flags';
//! a single value given both ways must agree, else the run is refused —
//! except where the flag has a default and so cannot tell whether it was
//! given (`max_buffer`, `max_children`, `channel_buffer`, `warm_workers`,
//! and `worker_template`): there the file's value wins.
//! Unknown keys and bad values are errors that name the line.

use crate::Grants;
use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    cluster: Option<String>,
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
    #[serde(default)]
    allow_uids: Vec<u32>,
    #[serde(default)]
    allow_gids: Vec<u32>,
}

/// Adds the grants of the policy file at `path` to `args`.
pub fn apply(path: &Path, args: &mut Grants) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let policy: Policy =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    // A program written as a path is relative to the policy file.
    let host = |p: &str| -> String {
        if p.contains('/') {
            base.join(p).display().to_string()
        } else {
            p.to_owned()
        }
    };
    let conflict =
        |what: &str| anyhow::anyhow!("{}: `{what}` differs from the flag", path.display());

    if let Some(url) = policy.cluster {
        match &args.cluster {
            Some(flag) if *flag != url => return Err(conflict("cluster")),
            _ => args.cluster = Some(url),
        }
    }
    // The file's default shell comes first, unless a flag named another.
    if let Some(shell) = policy.shell {
        let shell = host(&shell);
        match args.allow_shell.first() {
            Some(flag) if *flag != shell => return Err(conflict("shell")),
            Some(_) => {}
            None => args.allow_shell.push(shell),
        }
    }
    for shell in policy.shells.iter().map(|s| host(s)) {
        if !args.allow_shell.contains(&shell) {
            args.allow_shell.push(shell);
        }
    }
    args.allow_run
        .extend(policy.programs.iter().map(|p| host(p)));
    args.allow_fork
        .extend(policy.forks.iter().map(|p| base.join(p)));
    args.allow_env.extend(policy.allow_env);
    args.allow_injection_env.extend(policy.allow_injection_env);
    args.envs
        .extend(policy.env.into_iter().map(|(k, v)| format!("{k}={v}")));
    if let Some(log) = policy.audit_log {
        let log = base.join(log);
        match &args.audit_log {
            Some(flag) if *flag != log => return Err(conflict("audit_log")),
            _ => args.audit_log = Some(log),
        }
    }
    for dir in policy.dir {
        let grant = format!(
            "{}::{}",
            base.join(&dir.host).display(),
            dir.guest.as_deref().unwrap_or(&dir.host)
        );
        match dir.access {
            Access::Ro => args.dirs_ro.push(grant),
            Access::Rw => args.dirs.push(grant),
        }
    }
    if let Some(timeout) = policy.limits.timeout {
        let timeout: Duration = humantime::parse_duration(&timeout)
            .with_context(|| format!("{}: limits.timeout = {timeout:?}", path.display()))?;
        match args.timeout {
            Some(flag) if flag != timeout => return Err(conflict("limits.timeout")),
            _ => args.timeout = Some(timeout),
        }
    }
    if let Some(max) = policy.limits.max_buffer {
        args.max_buffer = max;
    }
    if let Some(max) = policy.limits.max_children {
        args.max_children = max;
    }
    if let Some(bytes) = policy.limits.channel_buffer {
        args.channel_buffer = bytes;
    }
    if let Some(n) = policy.limits.warm_workers {
        args.warm_workers = n;
    }
    if policy.limits.worker_template == Some(false) {
        args.no_worker_template = true;
    }
    if let Some(max) = policy.limits.max_wasm_memory {
        args.max_wasm_memory = max;
    }
    args.rlimits.extend(
        policy
            .limits
            .rlimits
            .iter()
            .map(|(k, v)| format!("{k}={v}")),
    );
    let c = policy.confinement;
    args.require_confinement |= c.require.unwrap_or(false);
    args.allow_network |= c.network.unwrap_or(false);
    args.no_confinement |= c.enabled == Some(false);
    args.no_cgroup |= c.cgroup == Some(false);
    args.cgroup_per_child |= c.cgroup_per_child.unwrap_or(false);
    if args.no_cgroup && args.cgroup_per_child {
        bail!(
            "{}: a cgroup per child needs the guest's cgroup",
            path.display()
        );
    }
    args.allow_uid_change |= c.allow_uid_change.unwrap_or(false);
    args.no_sandbox |= c.sandbox == Some(false);
    if let Some(user) = c.child_user {
        let user = crate::parse_user(&user)
            .map_err(|e| anyhow::anyhow!("{}: confinement.child_user: {e}", path.display()))?;
        match args.child_user {
            Some(flag) if flag != user => return Err(conflict("confinement.child_user")),
            _ => args.child_user = Some(user),
        }
    }
    args.allow_uids.extend(c.allow_uids);
    args.allow_gids.extend(c.allow_gids);
    if args.require_confinement && (args.no_confinement || args.no_sandbox) {
        bail!(
            "{}: confinement is both required and disabled",
            path.display()
        );
    }
    Ok(())
}
