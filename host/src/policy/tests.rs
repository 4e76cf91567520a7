//! The policy core without wasm or processes: what `prepare` grants and
//! refuses, and how fork narrows limits.
use super::*;
use crate::ctx::{ProcessCtx, ProcessCtxBuilder};
use crate::failure::Failure;
use crate::policy::DirAccess;
use std::path::Path;

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
            matches!(ctx.prepare(&req), Err(Failure::AccessDenied(_))),
            "{other}"
        );
    }
}

/// Two names of one file (`sh` found in PATH as /usr/bin/sh, and /bin/sh
/// through the /bin link) are one grant, and a request by either finds
/// it; two different files of one name stay refused.
#[test]
fn two_names_of_one_file_are_one_grant_found_by_either() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let tool = real.join("tool");
    std::fs::write(&tool, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let mut b = ProcessCtx::builder();
    b.allow_program(&tool).unwrap();
    b.allow_program(link.join("tool")).unwrap();
    let ctx = ctx(&mut b);
    let args = vec![];
    for name in [
        tool.to_str().unwrap(),
        link.join("tool").to_str().unwrap(),
        "tool",
    ] {
        let req = Request::new(Run::Program(name, &args), &None, &[]);
        assert_eq!(ctx.prepare(&req).unwrap().program, tool, "{name}");
    }
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::copy(&tool, other.join("tool")).unwrap();
    let mut b = ProcessCtx::builder();
    b.allow_program(&tool).unwrap();
    let Err(e) = b.allow_program(other.join("tool")) else {
        panic!("two files named tool were both granted");
    };
    assert!(
        e.to_string().contains("two grants are both named `tool`"),
        "{e}"
    );
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
    assert!(matches!(err, Failure::AccessDenied(m) if m.contains("no shell")));
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
    assert!(matches!(err, Failure::AccessDenied(m) if m.contains("shell `dash` is not granted")));
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
            Failure::AccessDenied(_) => "access-denied",
            Failure::InvalidArgument(_) => "invalid-argument",
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
        Err(Failure::InvalidArgument(_))
    ));
    let long = vec!["y".repeat(300 << 10)];
    let req = Request::new(Run::Program("sh", &long), &None, &[]);
    assert!(matches!(ctx.prepare(&req), Err(Failure::LimitExceeded(_))));
    let cwd = Some("/a\0".to_owned());
    let req = Request::new(Run::Shell("true", None), &cwd, &[]);
    assert!(matches!(
        ctx.prepare(&req),
        Err(Failure::InvalidArgument(_))
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
            Failure::AccessDenied(_) => "access-denied",
            Failure::NotFound(_) => "not-found",
            Failure::InvalidArgument(_) => "invalid-argument",
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
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
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
    assert!(matches!(ctx.prepare(&req), Err(Failure::AccessDenied(m)) if m.contains("SHA-256")));
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
