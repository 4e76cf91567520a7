//! The attack suite: real guest components try to escape the capabilities
//! they were given, against real processes, and must be refused. The suite
//! prints a table of the attacks tried and how each was refused.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;
use wasmproc_host::{DirAccess, Limits, ProcessCtx, ProcessCtxBuilder};

/// A host layout for the attacks: a read-write dir granted as /work (with a
/// symlink `out` to the outside), a read-only dir granted as /ro, and a
/// secret file in a directory that is not granted.
struct Site {
    work: TempDir,
    ro: TempDir,
    outside: TempDir,
}

impl Site {
    fn new() -> Site {
        let site = Site {
            work: tempfile::tempdir().unwrap(),
            ro: tempfile::tempdir().unwrap(),
            outside: tempfile::tempdir().unwrap(),
        };
        std::fs::write(site.secret(), "the secret").unwrap();
        std::fs::write(site.ro.path().join("data"), "read-only data").unwrap();
        std::os::unix::fs::symlink(site.outside.path(), site.work.path().join("out")).unwrap();
        site
    }

    fn secret(&self) -> String {
        self.outside.path().join("secret").display().to_string()
    }

    fn host(&self, dir: &TempDir, name: &str) -> String {
        dir.path().join(name).display().to_string()
    }

    /// Grants testprog, /bin/sh as the shell, /work and /ro.
    fn grants(&self) -> ProcessCtxBuilder {
        let mut grants = grants_testprog();
        grants
            .allow_shell("/bin/sh")
            .unwrap()
            .dir(self.work.path(), "/work", DirAccess::ReadWrite)
            .unwrap()
            .dir(self.ro.path(), "/ro", DirAccess::ReadOnly)
            .unwrap()
            .allow_env("LD_PRELOAD")
            .unwrap()
            .allow_env("PATH")
            .unwrap();
        grants
    }
}

/// One attack's result: whether it was refused, and how.
struct Verdict {
    refused: bool,
    how: String,
}

/// Refused if the request failed with `code`.
fn refused_by_error(out: &Outcome, code: &str) -> Verdict {
    match out {
        Outcome::Err(c, m) if c == code => Verdict {
            refused: true,
            how: format!("{c}: {m}"),
        },
        other => Verdict {
            refused: false,
            how: format!("{other:?}"),
        },
    }
}

/// Refused if the child's stdout is exactly `expected`.
fn refused_by_output(out: &Outcome, expected: &str, how: &str) -> Verdict {
    match out {
        Outcome::Ok(fields) if fields["stdout"] == quoted(expected) => Verdict {
            refused: true,
            how: how.to_owned(),
        },
        other => Verdict {
            refused: false,
            how: format!("{other:?}"),
        },
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_attack_is_refused() {
    let site = Site::new();
    let secret = site.secret();
    let work = site.work.path().canonicalize().unwrap();
    let mut table: Vec<(&str, Verdict)> = Vec::new();

    for (attack, cwd) in [
        ("cwd `..` escape", "/work/.."),
        ("cwd absolute path outside the grants", "/etc"),
        ("cwd through a symlink out of a grant", "/work/out"),
    ] {
        let out = probe_one(site.grants(), &["--cwd", cwd, "file", TP, "cwd"]).await;
        table.push((attack, refused_by_error(&out, "access-denied")));
    }

    let out = probe_one(site.grants(), &["file", TP, "read", &secret]).await;
    table.push((
        "granted program reads a file outside the grants",
        refused_by_output(
            &out,
            "error: permission denied\n",
            "Landlock: permission denied",
        ),
    ));

    let out = probe_one(site.grants(), &["file", TP, "read", "/etc/shadow"]).await;
    table.push((
        "granted program reads /etc/shadow",
        refused_by_output(
            &out,
            "error: permission denied\n",
            "Landlock: permission denied",
        ),
    ));

    let out = probe_one(
        site.grants(),
        &["shell", &format!("cat {secret} /etc/shadow")],
    )
    .await;
    let shell_read = match &out {
        Outcome::Ok(f)
            if f["stdout"] == quoted("")
                && f["stderr"].matches("Permission denied").count() == 2 =>
        {
            Verdict {
                refused: true,
                how: "Landlock: cat got permission denied".into(),
            }
        }
        other => Verdict {
            refused: false,
            how: format!("{other:?}"),
        },
    };
    table.push((
        "granted shell runs `cat` on files outside the grants",
        shell_read,
    ));

    let ro_file = site.host(&site.ro, "data");
    let out = probe_one(
        site.grants(),
        &["shell", &format!("echo changed > {ro_file}; cat {ro_file}")],
    )
    .await;
    let ro_write = match &out {
        Outcome::Ok(f)
            if f["stdout"] == quoted("read-only data")
                && f["stderr"].contains("Permission denied") =>
        {
            Verdict {
                refused: true,
                how: "Landlock: permission denied".into(),
            }
        }
        other => Verdict {
            refused: false,
            how: format!("{other:?}"),
        },
    };
    table.push(("granted shell writes to a read-only grant", ro_write));

    let out = probe_one(
        site.grants(),
        &[
            "file",
            TP,
            "write",
            &format!("{}/new", site.outside.path().display()),
            "x",
        ],
    )
    .await;
    table.push((
        "granted program creates a file outside the grants",
        refused_by_output(
            &out,
            "error: permission denied\n",
            "Landlock: permission denied",
        ),
    ));

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = probe_one(site.grants(), &["file", TP, "connect", &addr]).await;
    table.push((
        "granted program connects to a TCP port",
        refused_by_output(
            &out,
            "error: permission denied\n",
            "Landlock: permission denied",
        ),
    ));

    let out = probe_one(
        site.grants(),
        &["--env", "LD_PRELOAD=/tmp/evil.so", "file", TP, "env"],
    )
    .await;
    table.push((
        "LD_PRELOAD (allowed name) into a child",
        refused_by_error(&out, "access-denied"),
    ));

    // A `testprog` the guest would like to run instead of the granted one.
    let evil = tempfile::tempdir().unwrap();
    let fake = evil.path().join("testprog");
    std::fs::write(&fake, "#!/bin/sh\necho pwned\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("PATH={}", evil.path().display());
    let out = probe_one(
        site.grants(),
        &["--env", &path, "file", TP, "echo", "genuine"],
    )
    .await;
    table.push((
        "PATH set by the guest picks another binary",
        refused_by_output(&out, "genuine\n", "the granted binary ran"),
    ));

    let fake = fake.display().to_string();
    let out = probe_one(site.grants(), &["file", &fake, "echo"]).await;
    table.push((
        "run another binary by absolute path (argv0 trick)",
        refused_by_error(&out, "access-denied"),
    ));
    let out = probe_one(site.grants(), &["file", "../testprog", "echo"]).await;
    table.push((
        "run a relative path named like a grant",
        refused_by_error(&out, "access-denied"),
    ));

    let out = probe_one(site.grants(), &["file", TP, "echo", "a<NUL>b"]).await;
    table.push((
        "NUL byte in an argument",
        refused_by_error(&out, "invalid-argument"),
    ));
    let out = probe_one(site.grants(), &["--env", "PATH=a<NUL>", "file", TP, "echo"]).await;
    table.push((
        "NUL byte in an environment value",
        refused_by_error(&out, "invalid-argument"),
    ));
    let long = "y".repeat(300 << 10);
    let out = probe_one(site.grants(), &["file", TP, "echo", &long]).await;
    table.push((
        "over-long arguments",
        refused_by_error(&out, "limit-exceeded"),
    ));

    // Fork bomb from the guest: the live-child limit stops it; the host lives on.
    let mut grants = site.grants();
    grants.limits(Limits {
        max_live_children: 32,
        ..Limits::default()
    });
    let run = run_component(
        &guest("spawn-probe"),
        grants,
        &["limit", "200", TP, "sleep", "30"],
    )
    .await;
    let spawned = run.stdout.matches("spawned").count();
    let refusals = run.stdout.matches("error: limit-exceeded").count();
    let after = probe_one(site.grants(), &["file", TP, "echo", "alive"]).await;
    table.push((
        "fork bomb (200 spawns, limit 32)",
        Verdict {
            refused: spawned == 32 && refusals == 168 && after.field("stdout") == quoted("alive\n"),
            how: format!("{spawned} spawned, {refusals} limit-exceeded, host alive"),
        },
    ));

    let out = probe_one(site.grants(), &["file", TP, "flood", "200000000"]).await;
    table.push((
        "output flood (200 MB)",
        Verdict {
            refused: out.field("stdout-truncated") == "true"
                && out.field("stdout") == "<1048576 bytes>",
            how: "killed, truncated to 1 MiB and flagged".into(),
        },
    ));

    // A child that leaves its process group: without the cgroup it survives
    // the group kill, but stays confined...
    let mut no_cgroup = site.grants();
    no_cgroup.cgroup(false);
    let said = daemon_report(no_cgroup, &work.join("daemon-1"), &secret, false).await;
    table.push((
        "child double-forks and daemonizes (no cgroup), then reads outside",
        Verdict {
            refused: said.as_deref() == Some("error: permission denied"),
            how: format!("still confined: {said:?}"),
        },
    ));
    // ... with the guest's cgroup (the default) it dies with the guest...
    let said = daemon_report(site.grants(), &work.join("daemon-2"), &secret, false).await;
    table.push((
        "daemonized grandchild outlives the guest",
        Verdict {
            refused: said.is_none(),
            how: "killed with the guest's cgroup before its report was due".into(),
        },
    ));
    // ... and with a cgroup per child it dies with its exec, while the
    // guest goes on.
    let mut per_child = site.grants();
    per_child.cgroup_per_child(true);
    let said = daemon_report(per_child, &work.join("daemon-3"), &secret, true).await;
    table.push((
        "daemonized grandchild outlives its exec (cgroup per child)",
        Verdict {
            refused: said.is_none(),
            how: "killed with the child's cgroup when the exec ended".into(),
        },
    ));

    // A root host's child would be root with every capability: it must not
    // be able to use them.
    let out = probe_one(site.grants(), &["file", TP, "setuid", "65534"]).await;
    table.push((
        "child switches to another user id",
        refused_by_output(
            &out,
            "error: permission denied\n",
            "no CAP_SETUID: every capability dropped before exec",
        ),
    ));
    if rustix::process::geteuid().is_root() {
        let private = site.host(&site.work, "private");
        std::fs::write(&private, "not yours").unwrap();
        std::os::unix::fs::chown(&private, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(
            &private,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let out = probe_one(site.grants(), &["file", TP, "read", &private]).await;
        table.push((
            "child of a root host reads another user's private file in a grant",
            refused_by_output(
                &out,
                "error: permission denied\n",
                "no CAP_DAC_OVERRIDE: every capability dropped before exec",
            ),
        ));
    }

    // A descriptor the host opened without close-on-exec (a careless
    // library, say): the child must not get it.
    let leaked = rustix::fs::open(
        site.secret().as_str(),
        rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&leaked).to_string();
    let out = probe_one(site.grants(), &["file", TP, "read-fd", &fd]).await;
    table.push((
        "child reads a host descriptor left without close-on-exec",
        refused_by_output(
            &out,
            "error: bad descriptor\n",
            "closed before exec (close_range)",
        ),
    ));
    drop(leaked);

    let mut grants = site.grants();
    grants
        .worker_executable(env!("CARGO_BIN_EXE_wasmproc"))
        .unwrap()
        .allow_fork(guest("echo-worker"))
        .unwrap();
    let run = run_component(&guest("fork-probe"), grants, &["ask", "program", "sh"]).await;
    table.push((
        "worker asks for a program its parent lacks",
        Verdict {
            refused: run.stdout.starts_with("error: access-denied"),
            how: run.stdout.trim().to_owned(),
        },
    ));

    // Pinned program swapped for another after the grant.
    let pinned_dir = tempfile::tempdir().unwrap();
    let pinned = pinned_dir.path().join("pinned");
    std::fs::copy(testprog(), &pinned).unwrap();
    let digest = sha256_hex(&pinned);
    let mut grants = ProcessCtx::builder();
    grants.allow_program_pinned(&pinned, &digest).unwrap();
    std::fs::copy("/bin/sh", &pinned).unwrap();
    let out = probe_one(grants, &["file", "pinned", "-c", "echo pwned"]).await;
    table.push((
        "pinned program replaced after the grant",
        refused_by_error(&out, "access-denied"),
    ));

    println!("\n| attack | refused | how |\n|---|---|---|");
    for (attack, outcome) in &table {
        println!(
            "| {attack} | {} | {} |",
            if outcome.refused { "yes" } else { "NO" },
            outcome.how
        );
    }
    let failed: Vec<_> = table
        .iter()
        .filter(|(_, o)| !o.refused)
        .map(|(a, o)| format!("{a}: {}", o.how))
        .collect();
    assert!(
        failed.is_empty(),
        "attacks not refused:\n{}",
        failed.join("\n")
    );
}

/// Runs `testprog daemon`, whose detached grandchild tries to read `secret`
/// after 1 s and writes what it got to `report`; with `guest_goes_on` the
/// guest then lives 1.5 s more. Returns the report, if one was written.
async fn daemon_report(
    grants: ProcessCtxBuilder,
    report: &Path,
    secret: &str,
    guest_goes_on: bool,
) -> Option<String> {
    let mut args = vec!["file", TP, "daemon", report.to_str().unwrap(), secret];
    if guest_goes_on {
        args.extend(["---", "file", TP, "sleep", "1.5"]);
    }
    let outs = probe(grants, &args).await.0;
    assert!(
        outs.iter().all(|o| o.field("status") == "exited(0)"),
        "{outs:?}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::read_to_string(report).ok()
}

fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn host_sigterm_with_fifty_children_alive_leaves_none() {
    use std::io::{BufRead, BufReader};
    let mut host = Command::new(env!("CARGO_BIN_EXE_wasmproc"))
        .args([
            "run",
            "--allow-run",
            testprog().to_str().unwrap(),
            guest("spawn-probe").to_str().unwrap(),
        ])
        .args(["many-hold", "50", TP, "sleep", "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pids = Vec::new();
    for line in BufReader::new(host.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "ready" {
            break;
        }
        pids.push(line.strip_prefix("pid: ").unwrap().to_owned());
    }
    assert_eq!(pids.len(), 50);
    let pid = rustix::process::Pid::from_raw(host.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert_eq!(host.wait().unwrap().code(), Some(143));
    let left: Vec<_> = pids
        .iter()
        .filter(|pid| {
            let alive = Command::new(testprog())
                .args(["alive", pid])
                .output()
                .unwrap();
            String::from_utf8_lossy(&alive.stdout) != "gone\n"
        })
        .collect();
    assert!(left.is_empty(), "children outlived the host: {left:?}");
}
