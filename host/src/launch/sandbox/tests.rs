//! The sandbox seen from inside: shell commands run through the `exec`
//! interface (no wasm), as a guest would run them.
use super::*;
use crate::ProcessCtxView;
use crate::bindings::exec::{ExecOptions, Host};
use crate::ctx::{ProcessCtx, ProcessCtxBuilder};
use crate::policy::DirAccess;
use wasmtime::component::ResourceTable;

async fn sh(builder: &mut ProcessCtxBuilder, command: &str) -> (String, String, Confinement) {
    let mut ctx = builder.build();
    let mut table = ResourceTable::new();
    let mut view = ProcessCtxView {
        ctx: &mut ctx,
        table: &mut table,
    };
    let options = ExecOptions {
        cwd: None,
        env: vec![],
        timeout_ms: Some(10_000),
        kill_signal: None,
        max_buffer: None,
        stdin: None,
        uid: None,
        gid: None,
        shell: None,
    };
    let out = view.exec(command.into(), options).await.unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.confinement.into(),
    )
}

fn shell() -> ProcessCtxBuilder {
    let mut b = ProcessCtx::builder();
    b.allow_shell("/bin/sh").unwrap();
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_sees_only_the_system_paths_and_its_grants() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut b = shell();
    b.dir(dir.path(), "/work", DirAccess::ReadWrite).unwrap();
    let script = "id -u; echo hi > x && cat x; chmod 4755 x; stat -c %a x; \
                  chmod 666 /etc/passwd; stat /root; unshare -U true";
    let (out, err, level) = sh(&mut b, script).await;
    // A host without root keeps its uid (in a user namespace of its
    // own): every wall but identity stands, so confinement is partial.
    let (uid, want) = match rustix::process::geteuid() {
        id if id.is_root() => (None, Confinement::Full),
        id => (Some(id.as_raw()), Confinement::Partial),
    };
    assert_eq!(level, want, "{err}");
    let (said_uid, rest) = out.split_once('\n').unwrap();
    let said_uid: u32 = said_uid.parse().unwrap();
    match uid {
        // A root host's child runs as an id leased to its guest.
        None => assert!(DEFAULT_CHILD_UIDS.contains(&said_uid), "{out}"),
        Some(uid) => assert_eq!(said_uid, uid),
    }
    assert_eq!(rest, "hi\n644\n", "{err}");
    for refusal in [
        "changing permissions of 'x': Operation not permitted",
        "changing permissions of '/etc/passwd': Read-only file system",
        "cannot statx '/root': No such file or directory",
        "unshare failed: Operation not permitted",
    ] {
        assert!(err.contains(refusal), "{refusal} not in {err}");
    }
}
