//! Narrowing a worker's limits, without wasm or processes.
use super::*;
use crate::policy::{Limits, WorkerLimits};

fn limits(live: Option<u32>, spawns: Option<u64>) -> WorkerLimits {
    WorkerLimits {
        max_live_children: live,
        max_total_spawns: spawns,
        max_buffer: None,
        max_timeout_ms: None,
        cpu_seconds: None,
        address_space: None,
        open_files: None,
        processes: None,
        file_size: None,
    }
}

/// What a context with no child alive has free.
fn free(ctx: &ProcessCtx) -> Headroom {
    let limits = &ctx.policy.limits;
    Headroom {
        live: limits.max_live_children - 1,
        spawns: limits.max_total_spawns.map(|m| m - 1),
    }
}

fn ctx(max_live: usize, max_spawns: Option<u64>) -> ProcessCtx {
    ProcessCtx::builder()
        .confine(false)
        .limits(Limits {
            max_live_children: max_live,
            max_total_spawns: max_spawns,
            ..Limits::default()
        })
        .build()
}

#[test]
fn a_worker_is_lent_its_budget_out_of_what_its_parent_has_free() {
    let ctx = ctx(8, Some(100));
    // The worker takes a slot and a spawn itself: 7 and 99 are free.
    let (worker, lent) = ctx
        .policy
        .narrow_limits(&limits(None, None), free(&ctx))
        .unwrap();
    assert_eq!(
        (worker.max_live_children, worker.max_total_spawns),
        (3, Some(49))
    );
    assert_eq!(
        lent,
        Lent {
            live: 3,
            spawns: 49
        }
    );
    let (worker, lent) = ctx
        .policy
        .narrow_limits(&limits(Some(7), Some(99)), free(&ctx))
        .unwrap();
    assert_eq!(
        (worker.max_live_children, worker.max_total_spawns),
        (7, Some(99))
    );
    assert_eq!(
        lent,
        Lent {
            live: 7,
            spawns: 99
        }
    );
    assert!(
        ctx.policy
            .narrow_limits(&limits(Some(8), None), free(&ctx))
            .is_err()
    );
    assert!(
        ctx.policy
            .narrow_limits(&limits(None, Some(100)), free(&ctx))
            .is_err()
    );
}

#[test]
fn without_a_total_limit_a_worker_has_none_unless_asked() {
    let ctx = ctx(64, None);
    let (worker, lent) = ctx
        .policy
        .narrow_limits(&limits(None, None), free(&ctx))
        .unwrap();
    assert_eq!(worker.max_total_spawns, None);
    assert_eq!(lent.spawns, 0);
    let (worker, _) = ctx
        .policy
        .narrow_limits(&limits(None, Some(5)), free(&ctx))
        .unwrap();
    assert_eq!(worker.max_total_spawns, Some(5));
}

#[test]
fn a_worker_gets_its_parents_whole_policy_narrowed() {
    let mut b = ProcessCtx::builder();
    b.allow_program("/bin/sh")
        .unwrap()
        .allow_program("/bin/true")
        .unwrap()
        .allow_env("LANG")
        .unwrap()
        .child_user(2000, 3000)
        .allow_uid(1234)
        .cgroup_per_child(true)
        .allow_network(true)
        .require_confinement(true)
        .channel_spin(Duration::from_micros(7))
        .confine(false);
    let ctx = b.build();
    let request = WorkerRequest {
        programs: vec!["sh".into()],
        uid: Some(1234),
        ..WorkerRequest::default()
    };
    let (spec, _, _) = ctx
        .narrow(PathBuf::from("/w.wasm"), vec![], &request)
        .unwrap();
    let policy = &spec.policy;
    let names: Vec<_> = policy.programs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["sh"]);
    assert!(policy.allowed_env.is_empty() && policy.forks.is_empty());
    assert_eq!(policy.child_id, (1234, 3000));
    assert_eq!(policy.allowed_uids, ctx.policy.allowed_uids);
    assert!(policy.cgroup_per_child && policy.network && policy.require_confinement);
    assert!(!policy.confine);
    assert_eq!(policy.channel_spin, Duration::from_micros(7));
    // It crosses to the worker process as JSON, whole.
    let sent = serde_json::to_string(&spec).unwrap();
    let got: WorkerSpec = serde_json::from_str(&sent).unwrap();
    assert_eq!(serde_json::to_string(&got).unwrap(), sent);
}

#[test]
fn other_worker_limits_only_go_down() {
    let ctx = ctx(8, None);
    let mut asked = limits(None, None);
    asked.max_buffer = Some(1 << 10);
    let (worker, _) = ctx.policy.narrow_limits(&asked, free(&ctx)).unwrap();
    assert_eq!(worker.max_buffer, 1 << 10);
    asked.max_buffer = Some(u64::MAX);
    assert!(ctx.policy.narrow_limits(&asked, free(&ctx)).is_err());
}
