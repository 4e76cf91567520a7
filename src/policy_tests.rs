//! The policy file and the flags together: precedence, paths, refusals,
//! and the one schema kept in step with the example and the docs.

use super::*;
use crate::policy::*;
use crate::values::Bytes;
use clap::Parser as _;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
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

/// Directory grants as `HOST::GUEST`.
fn shown(dirs: &[crate::values::DirGrant]) -> Vec<String> {
    dirs.iter().map(ToString::to_string).collect()
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
    assert_eq!(shown(&args.dirs_ro), ["/etc/wasmproc/data::/data"]);
    assert!(args.dirs.is_empty());
    assert_eq!(args.timeout, Some(Duration::from_secs(10)));
    assert_eq!(args.max_buffer, Bytes(1_048_576));
    assert_eq!(args.max_children, 64);
    assert_eq!(args.max_wasm_memory, Bytes(256 << 20));
    assert_eq!(args.channel_buffer, Bytes(16 << 20));
    assert_eq!(args.warm_workers, 2);
    assert!(!args.no_worker_template);
    assert_eq!(args.channel_spin, Duration::from_micros(50));
    assert_eq!(args.rlimits, ["as=4GiB", "cpu=10", "nofile=256"]);
    assert!(!args.nats_tls && args.nats_creds.is_none() && args.nats_cert.is_none());
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
    assert_eq!(args.max_buffer, Bytes(7));
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
    assert_eq!(shown(&args.dirs), ["/etc/wasmproc/../data::/data"]);
    assert_eq!(shown(&args.dirs_ro), ["/srv::/srv"]);
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
    assert_eq!(shown(&args.dirs), ["/etc/wasmproc/data::data"]);
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
    assert_eq!(shown(&args.dirs), ["/a::/a", "/b::/b"]);
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
        "[limits]\nmax_buffer = 10\nmax_children = 20\nmax_wasm_memory = \"30MiB\"\n\
         channel_buffer = 40\nwarm_workers = 50\n",
    );
    assert_eq!(
        (args.max_buffer, args.max_children, args.max_wasm_memory),
        (Bytes(10), 20, Bytes(30 << 20))
    );
    assert_eq!((args.channel_buffer, args.warm_workers), (Bytes(40), 50));
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
    apply_policy_file(&path, &mut args).unwrap();
    let data = dir.path().join("data");
    assert_eq!(shown(&args.dirs), [format!("{}::data", data.display())]);
    let missing = dir.path().join("missing.toml");
    let error = format!("{:#}", apply_policy_file(&missing, &mut args).unwrap_err());
    assert!(
        error.starts_with(&format!("reading {}", missing.display())),
        "{error}"
    );
}

#[test]
fn the_cluster_files_and_the_channel_spin_come_from_the_file_too() {
    let args = granted(
        &[],
        "nats_creds = \"u.creds\"\nnats_nkey = \"/k/u.nk\"\nnats_ca = \"ca.pem\"\n\
         nats_cert = \"c.pem\"\nnats_key = \"c.key\"\nnats_tls = true\n\
         [limits]\nchannel_spin = \"0s\"\n",
    );
    let at = |p: &str| Some(PathBuf::from(p));
    assert_eq!(args.nats_creds, at("/etc/wasmproc/u.creds"));
    assert_eq!(args.nats_nkey, at("/k/u.nk"));
    assert_eq!(args.nats_ca, at("/etc/wasmproc/ca.pem"));
    assert_eq!(args.nats_cert, at("/etc/wasmproc/c.pem"));
    assert_eq!(args.nats_key, at("/etc/wasmproc/c.key"));
    assert!(args.nats_tls);
    assert_eq!(args.channel_spin, Duration::ZERO);
    let error = refused(&["--nats-ca=/ca.pem"], "nats_ca = \"other.pem\"\n");
    assert_eq!(error, format!("{FILE}: `nats_ca` differs from the flag"));
}

#[test]
fn a_client_certificate_without_its_key_is_refused() {
    let error = refused(&[], "nats_cert = \"c.pem\"\n");
    assert_eq!(
        error,
        format!("{FILE}: nats_cert and nats_key go together (a certificate and its key)")
    );
    refused(
        &["--nats-cert=/c.pem", "--nats-key=/c.key"],
        "nats_key = \"d.key\"\n",
    );
}

/// The clap arguments of [`Grants`], by id.
fn clap_flags() -> BTreeMap<String, clap::Arg> {
    use clap::Args as _;
    let command = Grants::augment_args(clap::Command::new("wasmproc"));
    (command.get_arguments())
        .map(|arg| (arg.get_id().to_string(), arg.clone()))
        .collect()
}

/// `--LONG` of the flag with the id `flag`.
fn long(flag: &str) -> String {
    let arg = &clap_flags()[flag];
    format!("--{}", arg.get_long().unwrap())
}

#[test]
fn every_flag_has_a_key_or_says_why_not_and_every_key_stands_for_flags() {
    let flags = clap_flags();
    let declared: BTreeSet<_> = FLAGS.iter().map(|f| f.name).collect();
    assert_eq!(declared.len(), FLAGS.len(), "a flag is declared twice");
    assert_eq!(
        flags.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        declared
    );
    for flag in FLAGS {
        let keys: Vec<_> = KEYS
            .iter()
            .filter(|k| k.flags.contains(&flag.name))
            .collect();
        match flag.only {
            Some(why) => assert!(keys.is_empty(), "{} has a key, yet: {why}", flag.name),
            None => assert!(
                !keys.is_empty(),
                "--{} has no key and says not why",
                flag.name
            ),
        }
    }
    let names: BTreeSet<_> = KEYS.iter().map(|k| k.name).collect();
    assert_eq!(names.len(), KEYS.len(), "a key is declared twice");
    for key in KEYS {
        for flag in key.flags {
            assert!(
                flags.contains_key(*flag),
                "{} names no flag {flag}",
                key.name
            );
        }
    }
}

/// The keys the example file writes (or shows commented out), as
/// `SECTION.KEY`, each with its line.
fn example_keys() -> BTreeMap<String, &'static str> {
    let mut section = String::new();
    let mut keys = BTreeMap::new();
    for line in EXAMPLE.lines() {
        let code = line.trim_start_matches("# ");
        if let Some(table) = code.strip_prefix("[[").and_then(|l| l.split_once("]]")) {
            // An array of tables (`[[dir]]`) is a key of its section.
            keys.insert(table.0.to_owned(), line);
            section = format!("{}.", table.0);
        } else if let Some(table) = code.strip_prefix('[').and_then(|l| l.split_once(']')) {
            section = format!("{}.", table.0);
        } else if let Some((key, _)) = code.split_once(" = ") {
            keys.insert(format!("{section}{key}"), line);
        }
    }
    // The fields of a `[[dir]]` are the `Dir`'s, not keys of the table.
    keys.retain(|key, _| !key.starts_with("dir."));
    keys
}

#[test]
fn the_example_file_shows_every_key_beside_its_flag_and_no_other() {
    let written = example_keys();
    let declared: BTreeSet<_> = KEYS.iter().map(|k| k.name.to_owned()).collect();
    assert_eq!(written.keys().cloned().collect::<BTreeSet<_>>(), declared);
    for key in KEYS {
        let line = written[key.name];
        let comment = line.rsplit_once('#').map(|(_, c)| c).unwrap_or_default();
        for flag in key.flags {
            assert!(
                comment.contains(&long(flag)),
                "{line:?} names not {}",
                long(flag)
            );
        }
    }
}

/// docs/policy.md's table of the keys, as the schema declares them.
fn reference() -> String {
    let mut table =
        String::from("| key | flag | when the file and the flag both give it |\n|---|---|---|\n");
    for key in KEYS {
        let flags: Vec<_> = key.flags.iter().map(|f| format!("`{}`", long(f))).collect();
        let rule = [Some(rule::meaning(key.rule)), convert::meaning(key.via)];
        let rule: Vec<_> = rule.into_iter().flatten().collect();
        let (name, rule) = (key.name, rule.join("; "));
        table += &format!("| `{name}` | {} | {rule} |\n", flags.join(", "));
    }
    table += "\nFlags with no key:\n\n";
    for flag in FLAGS {
        if let Some(why) = flag.only {
            table += &format!("- `{}`: {why}.\n", long(flag.name));
        }
    }
    table
}

#[test]
fn docs_policy_md_lists_every_key_with_its_flag_and_rule() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/policy.md"));
    let reference = reference();
    assert!(
        docs.unwrap().contains(&reference),
        "docs/policy.md should hold the table of keys:\n\n{reference}"
    );
}

#[test]
fn sizes_in_the_file_take_units_as_the_flags_do() {
    let args = granted(
        &["--max-buffer=1M"],
        "[limits]\nmax_buffer = \"1k\"\nchannel_buffer_total = \"2 GB\"\n\
         rlimits = { as = \"1GiB\", fsize = 4096 }\n",
    );
    assert_eq!(args.max_buffer, Bytes(1024));
    assert_eq!(args.channel_buffer_total, Bytes(2_000_000_000));
    assert_eq!(args.rlimits, ["as=1GiB", "fsize=4096"]);
    let error = refused(&[], "[limits]\nmax_wasm_memory = \"1 lot\"\n");
    assert!(error.contains("max_wasm_memory = \"1 lot\""), "{error}");
    assert!(error.contains("`1 lot` is not a size"), "{error}");
    let error = refused(&[], "[limits]\nrlimits = { nofile = \"1k\" }\n");
    assert!(
        error.ends_with("limits.rlimits = (\"nofile\", \"1k\"): `1k` is not a number"),
        "{error}"
    );
}

#[test]
fn a_relative_guest_path_given_is_refused_naming_the_key() {
    let error = refused(&[], "[[dir]]\nhost = \"data\"\nguest = \"data\"\n");
    assert_eq!(
        error,
        format!(
            "{FILE}: dir = {{ host = \"data\", guest = \"data\" }}: the guest path `data` \
             is relative: give an absolute one, such as `/data`"
        )
    );
}

#[test]
fn two_directories_at_one_guest_path_are_refused_naming_both() {
    let args = granted(
        &["--dir=/a::/data"],
        "[[dir]]\nhost = \"/b\"\nguest = \"/data/\"\naccess = \"ro\"\n",
    );
    let error = format!("{:#}", args.check().unwrap_err());
    assert_eq!(
        error,
        "--dir-ro /b::/data/: the guest path /data/ is granted already, by --dir /a::/data"
    );
    let args = granted(&["--dir=/a::/data", "--dir-ro=/data/b"], "");
    args.check().unwrap();
}

#[test]
fn an_injection_variable_allowed_without_allow_injection_env_is_refused() {
    let error = format!(
        "{:#}",
        flags(&["--allow-env=A", "--allow-env=LD_PRELOAD"])
            .check()
            .unwrap_err()
    );
    assert!(
        error.starts_with("--allow-env LD_PRELOAD: LD_PRELOAD is a loader or interpreter"),
        "{error}"
    );
    assert!(error.ends_with("grant it with --allow-injection-env LD_PRELOAD, knowingly"));
    let from_file = granted(&[], "allow_env = [\"NODE_OPTIONS\"]\n");
    assert!(from_file.check().is_err());
    let both = ["--allow-env=LD_PRELOAD", "--allow-injection-env=LD_PRELOAD"];
    flags(&both).check().unwrap();
    flags(&["--allow-injection-env=LD_PRELOAD"])
        .check()
        .unwrap();
}
