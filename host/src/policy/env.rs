//! The environment rules for children: the loader and interpreter
//! injection variables, and what the OS cannot take.

use crate::failure::Failure;
use std::fmt;

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
