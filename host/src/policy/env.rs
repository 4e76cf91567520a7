//! The environment rules for children: the loader and interpreter
//! injection variables, and what the OS cannot take.

use crate::failure::Failure;
use std::fmt;

/// Environment variables that make a dynamic loader, shell or interpreter
/// run code or load libraries of the setter's choice: refused for children
/// even when allowed, unless the embedder opts in per name
/// ([`ProcessCtxBuilder::allow_injection_env`](crate::ctx::ProcessCtxBuilder::allow_injection_env)).
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
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_PROXY_COMMAND",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "ZDOTDIR",
    "OPENSSL_CONF",
    "PHPRC",
    "PYTHONWARNINGS",
    "LESSOPEN",
    "LESSCLOSE",
    "GIT_CONFIG",
    "LUA_INIT",
];

/// Prefixes of [`INJECTION_ENV`] names: the dynamic loaders' (`LD_PRELOAD`,
/// `LD_LIBRARY_PATH`, `LD_AUDIT`, macOS `DYLD_*`), bash's exported
/// functions, git's configuration from the environment
/// (`GIT_CONFIG_COUNT`/`KEY_n`/`VALUE_n`, `GIT_CONFIG_PARAMETERS`, ...: it
/// can set `core.sshCommand` or hooks) and Lua's versioned `LUA_INIT_5_x`.
pub const INJECTION_ENV_PREFIXES: &[&str] =
    &["LD_", "DYLD_", "BASH_FUNC_", "GIT_CONFIG_", "LUA_INIT_"];

/// Whether `name` is a loader or interpreter injection variable.
pub fn is_injection_env(name: &str) -> bool {
    INJECTION_ENV.contains(&name) || INJECTION_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// `invalid-argument` naming `what` if the guest string `s` has a NUL byte
/// (the OS could not take it).
pub(crate) fn no_nul(what: impl fmt::Display, s: &str) -> Result<(), Failure> {
    match s.contains('\0') {
        true => Err(Failure::InvalidArgument(format!(
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
pub(crate) fn check_env_pair(name: &str, value: &str) -> Result<(), Failure> {
    if let Some(problem) = bad_env_name(name) {
        return Err(Failure::InvalidArgument(problem));
    }
    no_nul(
        format_args!("the value of environment variable `{name}`"),
        value,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Names of ordinary variables, none an injection one.
    const ORDINARY: &[&str] = &[
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TERM",
        "USER",
        "TZ",
        "RUST_LOG",
        "LD",
        "LDFLAGS",
        "MY_LD_PRELOAD",
        "ENVIRONMENT",
        "BASH",
        "BASH_VERSION",
        "PYTHONUNBUFFERED",
        "NODE_ENV",
        "bash_env",
        "ld_preload",
    ];

    #[test]
    fn every_listed_injection_variable_is_refused() {
        for name in INJECTION_ENV {
            assert!(is_injection_env(name), "{name}");
        }
        for name in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LD_AUDIT",
            "DYLD_INSERT_LIBRARIES",
        ] {
            assert!(is_injection_env(name), "{name}");
        }
        assert!(is_injection_env("BASH_FUNC_ls%%"));
    }

    #[test]
    fn ordinary_names_are_not_injection_variables() {
        for name in ORDINARY {
            assert!(!is_injection_env(name), "{name}");
        }
        assert!(!is_injection_env(""));
    }

    #[test]
    fn the_injection_lists_hold_valid_distinct_names() {
        let all: Vec<&str> = INJECTION_ENV
            .iter()
            .chain(INJECTION_ENV_PREFIXES)
            .copied()
            .collect();
        let distinct: std::collections::BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "a name is listed twice");
        for name in all {
            assert_eq!(bad_env_name(name), None, "{name}");
        }
        for prefix in INJECTION_ENV_PREFIXES {
            assert!(prefix.ends_with('_'), "{prefix}");
            assert!(
                !INJECTION_ENV.iter().any(|n| n.starts_with(prefix)),
                "{prefix} makes a listed name redundant"
            );
        }
    }

    proptest! {
        #[test]
        fn any_name_with_an_injection_prefix_is_refused(
            prefix in proptest::sample::select(INJECTION_ENV_PREFIXES),
            rest in "[A-Za-z0-9_%]{0,20}",
        ) {
            let name = [prefix, rest.as_str()].concat();
            prop_assert!(is_injection_env(&name), "{} passes", name);
        }

        #[test]
        fn no_nul_refuses_a_string_exactly_when_it_has_a_nul(
            head in "[^\0]{0,20}",
            tail in "[^\0]{0,20}",
        ) {
            prop_assert_eq!(no_nul("the argument", &head), Ok(()));
            let with_nul = format!("{head}\0{tail}");
            prop_assert_eq!(
                no_nul(format_args!("argument {}", 3), &with_nul),
                Err(Failure::InvalidArgument("argument 3 contains a NUL byte".into()))
            );
        }

        #[test]
        fn an_env_name_is_bad_exactly_when_empty_or_with_an_equals_sign_or_nul(
            name in "[A-Za-z0-9_=\0.-]{0,12}",
        ) {
            let bad = name.is_empty() || name.contains('=') || name.contains('\0');
            let problem = bad_env_name(&name);
            prop_assert_eq!(problem.is_some(), bad);
            if let Some(problem) = problem {
                prop_assert_eq!(problem, format!("invalid environment variable name {:?}", name));
            }
        }
    }

    #[test]
    fn bad_env_names_are_named_in_the_problem() {
        assert_eq!(
            bad_env_name("").as_deref(),
            Some("invalid environment variable name \"\"")
        );
        assert_eq!(
            bad_env_name("A=B").as_deref(),
            Some("invalid environment variable name \"A=B\"")
        );
        assert_eq!(
            bad_env_name("A\0B").as_deref(),
            Some("invalid environment variable name \"A\\0B\"")
        );
        assert_eq!(bad_env_name("PATH"), None);
        // Odd but takeable by the OS.
        assert_eq!(bad_env_name("with space"), None);
        assert_eq!(bad_env_name("é"), None);
    }

    #[test]
    fn check_env_pair_refuses_a_bad_name_before_a_bad_value() {
        assert_eq!(check_env_pair("PATH", "/usr/bin:/bin"), Ok(()));
        assert_eq!(check_env_pair("EMPTY", ""), Ok(()));
        // `=` belongs in a value.
        assert_eq!(check_env_pair("OPTS", "a=b=c"), Ok(()));
        assert_eq!(
            check_env_pair("A=B", "x"),
            Err(Failure::InvalidArgument(
                "invalid environment variable name \"A=B\"".into()
            ))
        );
        assert_eq!(
            check_env_pair("", "x\0y"),
            Err(Failure::InvalidArgument(
                "invalid environment variable name \"\"".into()
            ))
        );
        assert_eq!(
            check_env_pair("GREETING", "hi\0there"),
            Err(Failure::InvalidArgument(
                "the value of environment variable `GREETING` contains a NUL byte".into()
            ))
        );
    }
}
