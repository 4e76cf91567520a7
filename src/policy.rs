//! `wasmproc run --policy FILE`: the same grants as the flags, in TOML.
//!
//! Which key stands for which flag, and which wins when both speak, is
//! declared once, in the table of `crate::grants`, with the [`schema!`]
//! macro of this module. Here are what that table is made with: the rules
//! ([`rule`]), the conversions from what the file holds to what a flag
//! holds ([`convert`]), and the checks of what the flags cannot say
//! together but the file and the flags can. Every key, commented with the
//! flag it stands for, is in `src/policy-example.toml`, which `wasmproc
//! policy --example` prints; `docs/policy.md` is the reference. Tests keep
//! the three in step with the table.
//!
//! Host paths (`dir.host`, `forks`, `audit_log`, the cluster's files, and
//! shells and programs written as paths, with a `/`) are relative to the
//! policy file's directory; `dir.guest` defaults to `dir.host` as written.
//! Unknown keys and bad values are errors that name the line.

use crate::Grants;
use crate::grants::PolicyFile;
use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;
use std::fmt::Debug;
use std::path::Path;

/// A policy file with every key, commented (`wasmproc policy --example`).
pub const EXAMPLE: &str = include_str!("policy-example.toml");

/// Declares the flags of a grant and the policy-file keys that stand for
/// them (see `crate::grants`): makes the clap struct, one serde struct per
/// section of the file, `apply` (which applies each key to its flags by its
/// rule, in the table's order) and the lists [`Key`]s and [`Flag`]s.
macro_rules! schema {
    (@convert) => { $crate::policy::convert::same };
    (@convert $conv:ident) => { $crate::policy::convert::$conv };
    (@why) => { None };
    (@why $why:literal) => { Some($why) };
    (
        $(#[$meta:meta])*
        pub struct $flags:ident, file $file:ident {
            $(
                $(#[$m:meta])*
                $field:ident: $ty:ty
                $(; key $key:ident: $kty:ty => $rule:ident($($target:ident),+) $(via $conv:ident)?)*
                $(; flag only $why:literal)?
            ,)*
        }
        $(
            [$section:ident] $section_ty:ident, heading $heading:literal {
                $(
                    $(#[$sm:meta])*
                    $sfield:ident: $sty:ty
                    $(; key $skey:ident: $skty:ty
                        => $srule:ident($($starget:ident),+) $(via $sconv:ident)?)*
                    $(; flag only $swhy:literal)?
                ,)*
            }
        )*
    ) => {
        $(#[$meta])*
        #[derive(clap::Args)]
        pub struct $flags {
            $( $(#[$m])* pub $field: $ty, )*
            $($( #[arg(help_heading = $heading)] $(#[$sm])* pub $sfield: $sty, )*)*
        }

        /// A policy file's top level.
        #[derive(::serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $file {
            $($( #[serde(default)] $key: $kty, )*)*
            $( #[serde(default)] $section: $section_ty, )*
        }

        $(
            #[doc = concat!("The `[", stringify!($section), "]` section of a policy file.")]
            #[derive(::serde::Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            pub(crate) struct $section_ty {
                $($( #[serde(default)] $skey: $skty, )*)*
            }
        )*

        /// Applies every key of `policy`, the file `file`, to its flags in
        /// `args`, by its rule: the first refusal is the error.
        pub(crate) fn apply(
            file: &$crate::policy::Source,
            policy: $file,
            args: &mut $flags,
        ) -> ::anyhow::Result<()> {
            use $crate::policy::{FileKey, rule};
            $($(
                rule::$rule(
                    FileKey {
                        file,
                        name: stringify!($key),
                        conv: $crate::policy::schema!(@convert $($conv)?),
                    },
                    policy.$key,
                    $(&mut args.$target),+
                )?;
            )*)*
            $($($(
                rule::$srule(
                    FileKey {
                        file,
                        name: concat!(stringify!($section), ".", stringify!($skey)),
                        conv: $crate::policy::schema!(@convert $($sconv)?),
                    },
                    policy.$section.$skey,
                    $(&mut args.$starget),+
                )?;
            )*)*)*
            Ok(())
        }

        /// Every key of the file, in the order they are applied.
        #[cfg_attr(not(test), allow(dead_code, reason = "read by the tests"))]
        pub(crate) const KEYS: &[$crate::policy::Key] = &[
            $($( $crate::policy::Key {
                name: stringify!($key),
                flags: &[$(stringify!($target)),+],
                rule: stringify!($rule),
                via: stringify!($($conv)?),
            }, )*)*
            $($($( $crate::policy::Key {
                name: concat!(stringify!($section), ".", stringify!($skey)),
                flags: &[$(stringify!($starget)),+],
                rule: stringify!($srule),
                via: stringify!($($sconv)?),
            }, )*)*)*
        ];

        /// Every flag, and why it has no key if it has none.
        #[cfg_attr(not(test), allow(dead_code, reason = "read by the tests"))]
        pub(crate) const FLAGS: &[$crate::policy::Flag] = &[
            $( $crate::policy::Flag {
                name: stringify!($field),
                only: $crate::policy::schema!(@why $($why)?),
            }, )*
            $($( $crate::policy::Flag {
                name: stringify!($sfield),
                only: $crate::policy::schema!(@why $($swhy)?),
            }, )*)*
        ];
    };
}
pub(crate) use schema;

/// A key of the policy file, as [`schema!`] declared it.
#[cfg_attr(not(test), allow(dead_code, reason = "read by the tests"))]
pub(crate) struct Key {
    /// `SECTION.KEY`, or `KEY` at the top level.
    pub name: &'static str,
    /// The fields of the flags it is applied to.
    pub flags: &'static [&'static str],
    /// The name of its [`rule`].
    pub rule: &'static str,
    /// The name of its [`convert`]er, if it has one.
    pub via: &'static str,
}

/// A flag, as [`schema!`] declared it.
#[cfg_attr(not(test), allow(dead_code, reason = "read by the tests"))]
pub(crate) struct Flag {
    /// Its field in [`Grants`] (clap's id).
    pub name: &'static str,
    /// Why no key stands for it, if none does.
    pub only: Option<&'static str>,
}

/// A `[[dir]]` of the file: a `--dir` or `--dir-ro` grant.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Dir {
    host: String,
    guest: Option<String>,
    #[serde(default)]
    access: Access,
}

/// As the file writes it: `{ host = "data", guest = "data" }`.
impl Debug for Dir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{ host = {:?}", self.host)?;
        if let Some(guest) = &self.guest {
            write!(f, ", guest = {guest:?}")?;
        }
        write!(f, " }}")
    }
}

#[derive(Deserialize, Default, PartialEq, Debug)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Access {
    Ro,
    #[default]
    Rw,
}

/// Adds the grants of the policy file at `path` to `args`.
pub fn apply(path: &Path, args: &mut Grants) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    apply_text(path, &text, args)
}

/// Adds the grants of `text`, the policy file at `path`, to `args`, key by
/// key (the first refusal is the error), then checks what the file and the
/// flags say together.
fn apply_text(path: &Path, text: &str, args: &mut Grants) -> Result<()> {
    let policy: PolicyFile =
        toml::from_str(text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let file = Source::new(path);
    crate::grants::apply(&file, policy, args)?;
    file.check_cgroup(args)?;
    file.check_identity(args)?;
    file.check_confinement(args)?;
    file.check_client_cert(args)
}

/// The policy file being applied: where its relative paths start, and the
/// name its errors carry.
pub(crate) struct Source<'a> {
    path: &'a Path,
    base: &'a Path,
}

impl<'a> Source<'a> {
    fn new(path: &'a Path) -> Self {
        let base = path.parent().unwrap_or(Path::new("."));
        Source { path, base }
    }

    /// The error `what`, naming the file.
    fn refuse(&self, what: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{}: {what}", self.path.display())
    }
}

/// A key of the policy file being applied, with the conversion of its
/// values into its flag's.
pub(crate) struct FileKey<'a, C> {
    pub file: &'a Source<'a>,
    pub name: &'static str,
    pub conv: C,
}

/// A conversion of a value the file holds (a `T`) into what a flag holds.
pub(crate) trait Convert<T, U>: Fn(&Source, T) -> Result<U> {}
impl<T, U, F: Fn(&Source, T) -> Result<U>> Convert<T, U> for F {}

impl<C> FileKey<'_, C> {
    /// The error `what` about this key, naming the file.
    fn refuse(&self, what: &str) -> anyhow::Error {
        self.file.refuse(format!("`{}` {what}", self.name))
    }

    /// `value` converted; a value the conversion refuses is an error naming
    /// the file, the key and the value.
    fn convert<T: Debug, U>(&self, value: T) -> Result<U>
    where
        C: Convert<T, U>,
    {
        let shown = format!("{value:?}");
        let refused = |e: anyhow::Error| {
            let name = self.name;
            self.file.refuse(format!("{name} = {shown}: {e:#}"))
        };
        (self.conv)(self.file, value).map_err(refused)
    }
}

/// How a key and its flag combine: one function a rule, each applying the
/// value the file gives a key to the flag(s) it names. Every key goes
/// through one of these (see `crate::grants`); nowhere else is the
/// precedence between the file and the flags decided.
pub(crate) mod rule {
    use super::{Access, Convert, Dir, FileKey};
    use crate::values::DirGrant;
    use anyhow::Result;
    use std::fmt::Debug;

    /// What each rule means, as docs/policy.md says it.
    #[cfg_attr(not(test), allow(dead_code, reason = "read by the tests"))]
    pub(crate) fn meaning(rule: &str) -> &'static str {
        match rule {
            "agree" => "the file fills an unset flag; given both ways, they must agree",
            "first" => "the default: must agree with the first flag, else is granted first",
            "file_wins" => "the file's value wins (the flag has a default)",
            "on" => "on when the flag or the file turns it on",
            "add" => "adds to the flag's",
            "add_new" => "adds those not granted yet",
            "dirs" => "adds to `--dir` (`access = \"rw\"`, the default) or `--dir-ro` (`\"ro\"`)",
            _ => panic!("rule `{rule}` has no meaning written"),
        }
    }

    /// A single value, whose flag is unset unless given: the file fills an
    /// unset flag; given both ways, the two must agree, else the run is
    /// refused naming the key.
    pub(crate) fn agree<T: Debug, U: PartialEq>(
        key: FileKey<impl Convert<T, U>>,
        value: Option<T>,
        flag: &mut Option<U>,
    ) -> Result<()> {
        match value.map(|v| key.convert(v)).transpose()? {
            Some(value) if flag.as_ref().is_some_and(|flag| *flag != value) => {
                Err(key.refuse("differs from the flag"))
            }
            Some(value) => {
                *flag = Some(value);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The first of a list (the default shell): as [`agree`] with the
    /// list's first item, and the first item of an empty list.
    pub(crate) fn first<T: Debug, U: PartialEq>(
        key: FileKey<impl Convert<T, U>>,
        value: Option<T>,
        flag: &mut Vec<U>,
    ) -> Result<()> {
        let mut default = (!flag.is_empty()).then(|| flag.remove(0));
        let agreed = agree(key, value, &mut default);
        flag.splice(0..0, default);
        agreed
    }

    /// A value whose flag has a default, and so cannot tell whether it was
    /// given: the file's value wins.
    pub(crate) fn file_wins<T: Debug, U>(
        key: FileKey<impl Convert<T, U>>,
        value: Option<T>,
        flag: &mut U,
    ) -> Result<()> {
        if let Some(value) = value {
            *flag = key.convert(value)?;
        }
        Ok(())
    }

    /// A switch: on when the flag or the file turns it on (the file cannot
    /// turn off a flag given). The key of a `--no-X` flag is `X` `via not`.
    pub(crate) fn on(
        key: FileKey<impl Convert<bool, bool>>,
        value: Option<bool>,
        flag: &mut bool,
    ) -> Result<()> {
        let turned_on = value.map(|v| key.convert(v)).transpose()?;
        *flag |= turned_on == Some(true);
        Ok(())
    }

    /// A list: the file's items add to the flag's.
    pub(crate) fn add<T: Debug, U>(
        key: FileKey<impl Convert<T, U>>,
        value: impl IntoIterator<Item = T>,
        flag: &mut Vec<U>,
    ) -> Result<()> {
        for item in value {
            flag.push(key.convert(item)?);
        }
        Ok(())
    }

    /// A list of which each item counts once: the file's items not already
    /// there add to the flag's.
    pub(crate) fn add_new<T: Debug, U: PartialEq>(
        key: FileKey<impl Convert<T, U>>,
        value: impl IntoIterator<Item = T>,
        flag: &mut Vec<U>,
    ) -> Result<()> {
        for item in value {
            let item = key.convert(item)?;
            if !flag.contains(&item) {
                flag.push(item);
            }
        }
        Ok(())
    }

    /// `[[dir]]`: each a grant added to --dir or --dir-ro by its access.
    pub(crate) fn dirs(
        key: FileKey<impl Convert<Dir, (Access, DirGrant)>>,
        value: Vec<Dir>,
        rw: &mut Vec<DirGrant>,
        ro: &mut Vec<DirGrant>,
    ) -> Result<()> {
        for dir in value {
            match key.convert(dir)? {
                (Access::Ro, grant) => ro.push(grant),
                (Access::Rw, grant) => rw.push(grant),
            }
        }
        Ok(())
    }
}

/// What the file holds, made into what a flag holds (`via` in the table).
pub(crate) mod convert {
    use super::{Access, Dir, Source};
    use crate::values::DirGrant;
    use crate::values::Written;
    use anyhow::{Result, anyhow};
    use std::fmt::Display;
    use std::path::PathBuf;
    use std::time::Duration;

    /// The value as it is.
    pub(crate) fn same<T>(_: &Source, value: T) -> Result<T> {
        Ok(value)
    }

    /// The opposite switch: the key `X` of the flag `--no-X`.
    pub(crate) fn not(_: &Source, value: bool) -> Result<bool> {
        Ok(!value)
    }

    /// What a conversion adds to its rule's meaning, as docs/policy.md
    /// says it.
    #[cfg_attr(not(test), allow(dead_code, reason = "read by the tests"))]
    pub(crate) fn meaning(conv: &str) -> Option<&'static str> {
        (conv == "not").then_some("the key is its opposite (`false` turns the flag on)")
    }

    /// A host path: relative to the file's directory.
    pub(crate) fn path(file: &Source, path: String) -> Result<PathBuf> {
        Ok(file.base.join(path))
    }

    /// A program (or shell): relative to the file's directory if written
    /// as a path, else a name for the PATH lookup.
    pub(crate) fn program(file: &Source, program: String) -> Result<String> {
        Ok(match program.contains('/') {
            true => file.base.join(program).display().to_string(),
            false => program,
        })
    }

    /// `NAME = VALUE` of a table, as the flag's `NAME=VALUE`.
    pub(crate) fn assignment(_: &Source, (name, value): (String, impl Display)) -> Result<String> {
        Ok(format!("{name}={value}"))
    }

    /// `NAME = VALUE` of `[limits] rlimits`, as `--rlimit NAME=VALUE`.
    pub(crate) fn rlimit(_: &Source, (name, value): (String, Written)) -> Result<String> {
        let flag = format!("{name}={}", value.0);
        crate::values::parse_rlimit(&flag).map_err(|e| anyhow!(e))?;
        Ok(flag)
    }

    /// A `[[dir]]`: its host path relative to the file's directory, its
    /// guest path as `--dir` takes it (the host path as written if none).
    pub(crate) fn dir(file: &Source, dir: Dir) -> Result<(Access, DirGrant)> {
        let host = file.base.join(&dir.host);
        let grant = match &dir.guest {
            Some(guest) => DirGrant::new(host, guest).map_err(|e| anyhow!(e))?,
            None => DirGrant {
                host,
                guest: dir.host,
            },
        };
        Ok((dir.access, grant))
    }

    /// A duration, as `--timeout` takes it (`500ms`, `10s`, `2m`).
    pub(crate) fn duration(_: &Source, text: String) -> Result<Duration> {
        Ok(humantime::parse_duration(&text)?)
    }

    /// `UID[:GID]`, as `--child-user` takes it.
    pub(crate) fn user(_: &Source, text: String) -> Result<(u32, u32)> {
        crate::values::parse_user(&text).map_err(|e| anyhow!(e))
    }

    /// `FIRST-LAST`, as `--child-uids` takes it.
    pub(crate) fn id_range(_: &Source, text: String) -> Result<std::ops::RangeInclusive<u32>> {
        crate::values::parse_id_range(&text).map_err(|e| anyhow!(e))
    }
}

// What the flags cannot say together (clap refuses it) but the file and
// the flags can.

impl Source<'_> {
    fn check_cgroup(&self, args: &Grants) -> Result<()> {
        if args.no_cgroup && args.cgroup_per_child {
            bail!(self.refuse("a cgroup per child needs the guest's cgroup"));
        }
        Ok(())
    }

    fn check_identity(&self, args: &Grants) -> Result<()> {
        if args.child_user.is_some() && args.child_uids.is_some() {
            bail!(self.refuse(
                "child_user and child_uids cannot both be given (one id for all, or one per guest)"
            ));
        }
        Ok(())
    }

    fn check_confinement(&self, args: &Grants) -> Result<()> {
        if args.require_confinement && (args.no_confinement || args.no_sandbox) {
            bail!(self.refuse("confinement is both required and disabled"));
        }
        Ok(())
    }

    fn check_client_cert(&self, args: &Grants) -> Result<()> {
        if args.nats_cert.is_some() != args.nats_key.is_some() {
            bail!(self.refuse("nats_cert and nats_key go together (a certificate and its key)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::{FLAGS, KEYS};
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
        apply(&path, &mut args).unwrap();
        let data = dir.path().join("data");
        assert_eq!(shown(&args.dirs), [format!("{}::data", data.display())]);
        let missing = dir.path().join("missing.toml");
        let error = format!("{:#}", apply(&missing, &mut args).unwrap_err());
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
        let mut table = String::from(
            "| key | flag | when the file and the flag both give it |\n|---|---|---|\n",
        );
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
}
