//! A guest's budget: its live-children slots and its total spawns. One
//! budget covers the guest's whole tree: a worker is lent slots and spawns
//! out of what its parent has free, and a child's slots come back when it
//! is reaped (the count is shared, atomically, with each child's guard).

use super::{Denial, Headroom, Limits};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The live-children slots taken and the children started so far.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    /// Slots taken by live children and lent to workers; each child's
    /// guard gives its slots back.
    live: Arc<AtomicUsize>,
    /// Children (and workers, with what they were lent) started.
    spawned: u64,
}

impl Budget {
    /// Refuses `slots` more live-children slots or `spawns` more spawns
    /// beyond `limits`.
    pub(crate) fn check(&self, limits: &Limits, slots: usize, spawns: u64) -> Result<(), Denial> {
        let live = self.live.load(Ordering::Acquire);
        if slots > 0 && live + slots > limits.max_live_children {
            return Err(Denial::Limit {
                limit: "max_live_children",
                message: format!(
                    "{live} of the {} live-children slots are taken (by children, and lent to workers)",
                    limits.max_live_children
                ),
            });
        }
        if let Some(max) = limits.max_total_spawns
            && spawns > 0
            && self.spawned + spawns > max
        {
            return Err(Denial::Limit {
                limit: "max_total_spawns",
                message: format!("{max} children were started, the most allowed"),
            });
        }
        Ok(())
    }

    /// Takes `slots` slots and `spawns` spawns (checked already).
    pub(crate) fn take(&mut self, slots: usize, spawns: u64) {
        self.live.fetch_add(slots, Ordering::AcqRel);
        self.spawned += spawns;
    }

    /// Counts `spawns` more spawns whose slots were taken already (a warm
    /// worker holds its own).
    pub(crate) fn spawned(&mut self, spawns: u64) {
        self.spawned += spawns;
    }

    /// What is free under `limits`, not counting a worker about to be
    /// forked.
    pub(crate) fn free(&self, limits: &Limits) -> Headroom {
        let in_use = self.live.load(Ordering::Acquire);
        Headroom {
            live: (limits.max_live_children).saturating_sub(in_use + 1),
            spawns: (limits.max_total_spawns).map(|max| max.saturating_sub(self.spawned + 1)),
        }
    }

    /// The shared count of live slots, for a child's guard to give back.
    pub(crate) fn live(&self) -> &Arc<AtomicUsize> {
        &self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(live: usize, spawns: Option<u64>) -> Limits {
        Limits {
            max_live_children: live,
            max_total_spawns: spawns,
            ..Limits::default()
        }
    }

    #[test]
    fn a_budget_refuses_what_would_pass_a_limit_and_names_it() {
        let mut budget = Budget::default();
        let l = limits(2, Some(3));
        budget.check(&l, 2, 2).unwrap();
        budget.take(2, 2);
        let e = budget.check(&l, 1, 0).unwrap_err();
        assert!(
            e.to_string().contains("2 of the 2 live-children slots"),
            "{e}"
        );
        // A child that ends gives its slot back; the spawn stays counted.
        budget.live().fetch_sub(1, Ordering::AcqRel);
        budget.check(&l, 1, 1).unwrap();
        let e = budget.check(&l, 1, 2).unwrap_err();
        assert!(e.to_string().contains("3 children were started"), "{e}");
    }

    #[test]
    fn nothing_asked_is_never_refused() {
        let mut budget = Budget::default();
        budget.take(5, 5);
        budget.check(&limits(1, Some(1)), 0, 0).unwrap();
    }

    proptest! {
        /// Whatever is taken within the checks, the budget never goes
        /// past its limits, and what is free never counts more than is left.
        #[test]
        fn taking_only_what_checks_never_passes_the_limits(
            max in 1usize..50,
            max_spawns in proptest::option::of(1u64..50),
            asks in proptest::collection::vec((0usize..5, 0u64..5), 0..40),
        ) {
            let l = limits(max, max_spawns);
            let mut budget = Budget::default();
            for (slots, spawns) in asks {
                if budget.check(&l, slots, spawns).is_ok() {
                    budget.take(slots, spawns);
                }
                let live = budget.live().load(Ordering::Acquire);
                prop_assert!(live <= max);
                if let Some(m) = max_spawns {
                    prop_assert!(budget.spawned <= m);
                }
                let free = budget.free(&l);
                prop_assert!(free.live + live < max.max(1) || free.live == 0);
            }
        }
    }
}
