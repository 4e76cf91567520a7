//! What a guest (or an agent's workers) may do: every grant, limit and
//! confinement flag of `run` and `agent`, each with the policy-file key
//! that stands for it and the rule by which the two combine.
//!
//! This table is the one place a grant is declared: [`schema!`] makes the
//! clap flags ([`Grants`]), the TOML file's sections and how the file is
//! applied to the flags out of it. A key is written after its flag as
//! `; key NAME: TYPE => RULE(FLAG, ...) via CONVERSION`: `TYPE` is what the
//! file holds, the conversion (`crate::policy::convert`) turns it into what
//! the flag holds, and the rule (`crate::policy::rule`) says which wins
//! when both speak (the key `X` of a `--no-X` flag is `on` `via not`). A
//! flag with no key says why (`; flag only "..."`). docs/policy.md lists
//! every key; tests keep it, the example file and this table the same.

use crate::policy::{Dir, Source, schema};
use crate::values::{Bytes, DirGrant, Written, parse_dir, parse_id_range, parse_user};
use anyhow::{Context as _, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmproc_host::Limits;

schema! {
    /// What a guest (or an agent's workers) may do: the grant, limit and
    /// confinement flags shared by `run` and `agent`.
    pub struct Grants, file PolicyFile {
        /// Read grants from a TOML policy file (every key: `wasmproc policy
        /// --example`; docs/policy.md); they add to the flags' grants.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>
            ; flag only "a policy file does not name another",

        /// Grant the host directory HOST to the guest as GUEST (default: the same
        /// path): the guest can use its files and start children in it. The
        /// first --dir is the children's default working directory.
        #[arg(long = "dir", value_name = "HOST[::GUEST]", value_parser = parse_dir)]
        dirs: Vec<DirGrant>,

        /// As --dir, but children may only read the directory (and the guest's
        /// preopen is read-only).
        #[arg(long = "dir-ro", value_name = "HOST[::GUEST]", value_parser = parse_dir)]
        dirs_ro: Vec<DirGrant>
            ; key dir: Vec<Dir> => dirs(dirs, dirs_ro) via dir,

        /// Set the guest's own environment variable NAME (to VALUE, or to the
        /// host's value of NAME). Children do not inherit it.
        #[arg(long = "env", value_name = "NAME[=VALUE]")]
        envs: Vec<String>
            ; key env: BTreeMap<String, String> => add(envs) via assignment,

        /// Let the guest run PROGRAM with exec-file and spawn. PROGRAM is a path
        /// or a name looked up in the host's PATH now; `PROGRAM@sha256:HEX`
        /// pins the binary to that digest.
        #[arg(long = "allow-run", value_name = "PROGRAM[@sha256:HEX]")]
        allow_run: Vec<String>
            ; key programs: Vec<String> => add(allow_run) via program,

        /// Let the guest run shell commands with `exec`, through SHELL -c
        /// (default /bin/sh; give another as --allow-shell=SHELL, so that the
        /// argument after the flag is never taken for it). Repeat it to grant
        /// several shells: the guest picks one with exec's `shell` option, the
        /// first is the default. This grants running any program a shell can
        /// reach.
        #[arg(long = "allow-shell", value_name = "SHELL", num_args = 0..=1, require_equals = true,
              default_missing_value = "/bin/sh")]
        allow_shell: Vec<String>
            ; key shell: Option<String> => first(allow_shell) via program
            ; key shells: Vec<String> => add_new(allow_shell) via program,

        /// Let the guest fork the component at PATH as a worker in its own
        /// process (with at most the guest's own capabilities).
        #[arg(long = "allow-fork", value_name = "PATH")]
        allow_fork: Vec<PathBuf>
            ; key forks: Vec<String> => add(allow_fork) via path,

        /// Let the guest set environment variable NAME for its children.
        #[arg(long = "allow-env", value_name = "NAME")]
        allow_env: Vec<String>
            ; key allow_env: Vec<String> => add(allow_env),

        /// Let the guest set NAME for its children even though it is a loader or
        /// interpreter injection variable (LD_PRELOAD, NODE_OPTIONS, ...), which
        /// is refused otherwise.
        #[arg(long = "allow-injection-env", value_name = "NAME")]
        allow_injection_env: Vec<String>
            ; key allow_injection_env: Vec<String> => add(allow_injection_env),

        /// Append one JSON line per child started, denial and exit to FILE.
        #[arg(long, value_name = "FILE")]
        audit_log: Option<PathBuf>
            ; key audit_log: Option<String> => agree(audit_log) via path,

        /// Join the cluster of the NATS server(s) at URL, so that `fork` can
        /// place workers on its agents (placement `cluster` or `labels`).
        #[arg(long, value_name = "URL", help_heading = "Cluster")]
        cluster: Option<String>
            ; key cluster: Option<String> => agree(cluster),

        /// A NATS token.
        #[arg(long, value_name = "TOKEN", help_heading = "Cluster")]
        nats_token: Option<String>
            ; flag only "a secret: keep it in a `--nats-creds` file instead",

        /// A NATS user credentials file (JWT and nkey seed).
        #[arg(long, value_name = "FILE", help_heading = "Cluster")]
        nats_creds: Option<PathBuf>
            ; key nats_creds: Option<String> => agree(nats_creds) via path,

        /// A file holding a NATS nkey seed.
        #[arg(long, value_name = "FILE", help_heading = "Cluster")]
        nats_nkey: Option<PathBuf>
            ; key nats_nkey: Option<String> => agree(nats_nkey) via path,

        /// A CA certificate to trust for NATS over TLS.
        #[arg(long, value_name = "FILE", help_heading = "Cluster")]
        nats_ca: Option<PathBuf>
            ; key nats_ca: Option<String> => agree(nats_ca) via path,

        /// A client certificate (and --nats-key its key) for mutual TLS.
        #[arg(long, value_name = "FILE", requires = "nats_key", help_heading = "Cluster")]
        nats_cert: Option<PathBuf>
            ; key nats_cert: Option<String> => agree(nats_cert) via path,

        /// The key of --nats-cert.
        #[arg(long, value_name = "FILE", requires = "nats_cert", help_heading = "Cluster")]
        nats_key: Option<PathBuf>
            ; key nats_key: Option<String> => agree(nats_key) via path,

        /// Require TLS to the NATS servers (implied by a `tls://` URL).
        #[arg(long, help_heading = "Cluster")]
        nats_tls: bool
            ; key nats_tls: Option<bool> => on(nats_tls),

        /// This host's cluster identity: a file holding its nkey seed
        /// (`wasmproc keygen FILE`). It signs its fork requests and heartbeat,
        /// and is its NATS nkey unless --nats-token, --nats-creds or
        /// --nats-nkey says otherwise. Without it a key is made for this run
        /// and printed.
        #[arg(long, value_name = "FILE", help_heading = "Cluster")]
        host_key: Option<PathBuf>
            ; key host_key: Option<String> => agree(host_key) via path,

        /// Place workers only on agents with this public key (repeatable);
        /// adverts signed by any other key are dropped. Required with
        /// --cluster unless --insecure.
        #[arg(long = "trust-agent", value_name = "KEY", help_heading = "Cluster")]
        trust_agent: Vec<String>
            ; key trust_agents: Vec<String> => add(trust_agent),

        /// Join a cluster (`run --cluster`, `agent`) trusting any key that
        /// signs, when no key is trusted: for development only. Messages are
        /// still signed and sealed; this is said on stderr and in the audit log.
        #[arg(long, help_heading = "Cluster")]
        insecure: bool
            ; flag only "for development only: never left in a file",
    }

    [limits] LimitsKeys, heading "Limits" {
        /// Longest time any child or forked worker may run (for example
        /// 500ms, 10s, 2m): each gets it as a deadline it cannot leave out
        /// (SIGTERM, then SIGKILL after the grace). It is also the default
        /// timeout of exec. Default: no limit.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        timeout: Option<Duration>
            ; key timeout: Option<String> => agree(timeout) via duration,

        /// Largest output exec may keep per stream (bytes, or with a unit:
        /// 64k, 16MiB).
        #[arg(long, value_name = "SIZE", default_value_t = Bytes(Limits::default().max_buffer))]
        max_buffer: Bytes
            ; key max_buffer: Option<Bytes> => file_wins(max_buffer),

        /// Largest size each linear memory of the guest (and of every worker
        /// it forks) may grow to (1GiB, 512M, ...); `0`: no limit.
        #[arg(long, value_name = "SIZE",
              default_value_t = Bytes(wasmproc_host::DEFAULT_MAX_WASM_MEMORY))]
        max_wasm_memory: Bytes
            ; key max_wasm_memory: Option<Bytes> => file_wins(max_wasm_memory),

        /// Most children alive at once.
        #[arg(long, value_name = "N", default_value_t = Limits::default().max_live_children)]
        max_children: usize
            ; key max_children: Option<usize> => file_wins(max_children),

        /// Keep N worker processes started for `fork` (each has its engine up
        /// and holds nothing until a fork hands it a specification), refilled
        /// when the guest next waits for a worker. Default 0: each costs an
        /// idle process and a live-children slot.
        #[arg(long, value_name = "N", default_value_t = 0)]
        warm_workers: usize
            ; key warm_workers: Option<usize> => file_wins(warm_workers),

        /// Start each worker process from this executable rather than forking
        /// it from the guest's worker template (an idle worker process with the
        /// engine up and the guest's components loaded).
        #[arg(long)]
        no_worker_template: bool
            ; key worker_template: Option<bool> => on(no_worker_template) via not,

        /// How much of a worker's messages the host takes in unread while the
        /// guest waits for the worker's exit (past it, the worker waits for
        /// the guest to receive).
        #[arg(long, value_name = "SIZE", default_value_t = Bytes(Limits::default().channel_buffer as u64))]
        channel_buffer: Bytes
            ; key channel_buffer: Option<Bytes> => file_wins(channel_buffer),

        /// How much all of the guest's worker channels take in unread between
        /// them (each also within --channel-buffer), so the host's memory for
        /// unread messages is bounded however many workers the guest has.
        #[arg(long, value_name = "SIZE",
              default_value_t = Bytes(Limits::default().channel_buffer_total as u64))]
        channel_buffer_total: Bytes
            ; key channel_buffer_total: Option<Bytes> => file_wins(channel_buffer_total),

        /// How long a receive on a worker channel keeps checking the socket
        /// before it sleeps (lower latency for a little CPU); 0 never spins.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
              default_value = "50us")]
        channel_spin: Duration
            ; key channel_spin: Option<String> => file_wins(channel_spin) via duration,

        /// Set a resource limit in every child: cpu (seconds), as (size of
        /// the address space: 1G, 512MiB, ...), nofile, nproc, fsize (size).
        #[arg(long = "rlimit", value_name = "NAME=VALUE")]
        rlimits: Vec<String>
            ; key rlimits: BTreeMap<String, Written> => add(rlimits) via rlimit,
    }

    [confinement] ConfinementKeys, heading "Confinement" {
        /// Let confined children bind and connect TCP sockets.
        #[arg(long)]
        allow_network: bool
            ; key network: Option<bool> => on(allow_network),

        /// Refuse to start children unless the kernel can fully confine them
        /// (Landlock: files and TCP).
        #[arg(long)]
        require_confinement: bool
            ; key require: Option<bool> => on(require_confinement),

        /// Run children without kernel confinement (only the checks made before
        /// they start apply).
        #[arg(long, conflicts_with = "require_confinement")]
        no_confinement: bool
            ; key enabled: Option<bool> => on(no_confinement) via not,

        /// Let children change their user and group ids: they keep the host's
        /// uid and CAP_SETUID/CAP_SETGID when wasmproc runs as root (so the
        /// identity layer is down and confinement is partial); every other
        /// capability is always dropped.
        #[arg(long)]
        allow_uid_change: bool
            ; key allow_uid_change: Option<bool> => on(allow_uid_change),

        /// The user and group ids the children of a root host run as, the same
        /// for every guest run so (65534:65534 is nobody, nogroup), in place
        /// of an id leased per guest from --child-uids. They must be able to
        /// enter the granted directories (and write the read-write ones);
        /// wasmproc warns when they cannot.
        #[arg(long, value_name = "UID[:GID]", value_parser = parse_user, conflicts_with = "child_uids")]
        child_user: Option<(u32, u32)>
            ; key child_user: Option<String> => agree(child_user) via user,

        /// The ids a root host leases one from for each guest: the guest's
        /// children run as that uid and gid, which no other guest of any
        /// wasmproc on the machine holds while it runs (locks in
        /// /run/wasmproc/child-uids). Default: 1500000000-1500065535.
        #[arg(long, value_name = "FIRST-LAST", value_parser = parse_id_range)]
        child_uids: Option<std::ops::RangeInclusive<u32>>
            ; key child_uids: Option<String> => agree(child_uids) via id_range,

        /// Let the guest ask for user id UID for a child (the `uid` option).
        #[arg(long = "allow-uid", value_name = "UID")]
        allow_uids: Vec<u32>
            ; key allow_uids: Vec<u32> => add(allow_uids),

        /// Let the guest ask for group id GID for a child (the `gid` option).
        #[arg(long = "allow-gid", value_name = "GID")]
        allow_gids: Vec<u32>
            ; key allow_gids: Vec<u32> => add(allow_gids),

        /// Run children without the namespace sandbox, the unprivileged
        /// identity and the seccomp filter (Landlock still applies, unless
        /// --no-confinement); confinement is then partial.
        #[arg(long, conflicts_with = "require_confinement")]
        no_sandbox: bool
            ; key sandbox: Option<bool> => on(no_sandbox) via not,

        /// Do not start children in a cgroup of their own (by default one is
        /// made when this process may, and killed when the guest ends, taking
        /// every descendant with it, even one that left its process group).
        #[arg(long)]
        no_cgroup: bool
            ; key cgroup: Option<bool> => on(no_cgroup) via not,

        /// Start each child in a cgroup of its own too, killed when the child is
        /// dropped or its exec ends (then no descendant outlives its child).
        #[arg(long, conflicts_with = "no_cgroup")]
        cgroup_per_child: bool
            ; key cgroup_per_child: Option<bool> => on(cgroup_per_child),
    }
}

impl Grants {
    /// Refuses, before anything starts, what the grants cannot mean
    /// together, naming the flag.
    pub fn check(&self) -> anyhow::Result<()> {
        self.check_guest_paths()?;
        self.check_injection_env()
    }

    /// Refuses an injection variable (LD_PRELOAD, NODE_OPTIONS, ...)
    /// allowed with --allow-env alone: the host would refuse it whenever
    /// the guest set it, so the grant could only fail later.
    fn check_injection_env(&self) -> anyhow::Result<()> {
        let injection = |name: &&String| wasmproc_host::is_injection_env(name);
        let allowed = |name: &&String| self.allow_injection_env.contains(name);
        match self
            .allow_env
            .iter()
            .filter(injection)
            .find(|name| !allowed(name))
        {
            Some(name) => anyhow::bail!(
                "--allow-env {name}: {name} is a loader or interpreter injection variable, \
                 which lets whoever sets it run code of their choice in the child: grant it \
                 with --allow-injection-env {name}, knowingly"
            ),
            None => Ok(()),
        }
    }

    /// Refuses two directory grants at one guest path (the second would
    /// hide the first), naming both.
    fn check_guest_paths(&self) -> anyhow::Result<()> {
        let mut granted = std::collections::HashMap::new();
        let rw = self.dirs.iter().map(|d| ("--dir", d));
        for (flag, dir) in rw.chain(self.dirs_ro.iter().map(|d| ("--dir-ro", d))) {
            let named = format!("{flag} {dir}");
            if let Some(first) = granted.insert(Path::new(&dir.guest), named.clone()) {
                anyhow::bail!(
                    "{named}: the guest path {} is granted already, by {first}",
                    dir.guest
                );
            }
        }
        Ok(())
    }

    /// How to reach the NATS servers at `url` with these credentials; with
    /// none, as the cluster identity in `key` (a NATS user nkey).
    pub fn nats(&self, url: &str, key: Option<&Path>) -> wasmproc_host::cluster::NatsOptions {
        let other = self.nats_token.is_some() || self.nats_creds.is_some();
        wasmproc_host::cluster::NatsOptions {
            url: url.to_owned(),
            token: self.nats_token.clone(),
            creds: self.nats_creds.clone(),
            nkey: (self.nats_nkey.clone()).or_else(|| key.filter(|_| !other).map(Path::to_owned)),
            ca: self.nats_ca.clone(),
            client_cert: self.nats_cert.clone().zip(self.nats_key.clone()),
            tls: self.nats_tls,
        }
    }
}

/// Adds the grants of the policy file at `path` to `args`.
pub fn apply_policy_file(path: &Path, args: &mut Grants) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    apply_text(path, &text, args)
}

/// Adds the grants of `text`, the policy file at `path`, to `args`, key by
/// key (the first refusal is the error), then checks what the file and the
/// flags say together.
pub(crate) fn apply_text(path: &Path, text: &str, args: &mut Grants) -> Result<()> {
    let policy: PolicyFile =
        toml::from_str(text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let file = Source::new(path);
    crate::grants::apply(&file, policy, args)?;
    file.check_cgroup(args)?;
    file.check_identity(args)?;
    file.check_confinement(args)?;
    file.check_client_cert(args)
}

impl Source<'_> {
    pub(crate) fn check_cgroup(&self, args: &Grants) -> Result<()> {
        if args.no_cgroup && args.cgroup_per_child {
            bail!(self.refuse("a cgroup per child needs the guest's cgroup"));
        }
        Ok(())
    }

    pub(crate) fn check_identity(&self, args: &Grants) -> Result<()> {
        if args.child_user.is_some() && args.child_uids.is_some() {
            bail!(self.refuse(
                "child_user and child_uids cannot both be given (one id for all, or one per guest)"
            ));
        }
        Ok(())
    }

    pub(crate) fn check_confinement(&self, args: &Grants) -> Result<()> {
        if args.require_confinement && (args.no_confinement || args.no_sandbox) {
            bail!(self.refuse("confinement is both required and disabled"));
        }
        Ok(())
    }

    pub(crate) fn check_client_cert(&self, args: &Grants) -> Result<()> {
        if args.nats_cert.is_some() != args.nats_key.is_some() {
            bail!(self.refuse("nats_cert and nats_key go together (a certificate and its key)"));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
