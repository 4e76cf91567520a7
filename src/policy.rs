//! `wasmproc run --policy FILE`: the same grants as the flags, in TOML.
//!
//! Which key stands for which flag, and which wins when both speak, is
//! declared once, in the table of `crate::grants`, with the [`schema!`]
//! macro of this module. Here are what that table is made with: the rules
//! ([`rule`]), the conversions from what the file holds to what a flag
//! holds ([`convert`]) and the policy file being read ([`Source`]); the
//! table's module applies a file with them (`grants::apply_policy_file`),
//! and checks what the flags cannot say together but the file and the
//! flags can. Every key, commented with the
//! flag it stands for, is in `src/policy-example.toml`, which `wasmproc
//! policy --example` prints; `docs/policy.md` is the reference. Tests keep
//! the three in step with the table.
//!
//! Host paths (`dir.host`, `forks`, `audit_log`, the cluster's files, and
//! shells and programs written as paths, with a `/`) are relative to the
//! policy file's directory; `dir.guest` defaults to `dir.host` as written.
//! Unknown keys and bad values are errors that name the line.

use anyhow::{Result, anyhow};
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

/// The policy file being applied: where its relative paths start, and the
/// name its errors carry.
pub(crate) struct Source<'a> {
    path: &'a Path,
    base: &'a Path,
}

impl<'a> Source<'a> {
    pub(crate) fn new(path: &'a Path) -> Self {
        let base = path.parent().unwrap_or(Path::new("."));
        Source { path, base }
    }

    /// The error `what`, naming the file.
    pub(crate) fn refuse(&self, what: impl std::fmt::Display) -> anyhow::Error {
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
