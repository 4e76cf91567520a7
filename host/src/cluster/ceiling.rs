//! An agent's ceiling: a forking host's request narrowed to what the
//! agent's own policy grants ([`Policy::within`]). Why a ceiling and not
//! the host's word: see [`crate::agent`].

use crate::policy::{Denial, Policy};

impl Policy {
    /// This policy (a forking host's request, narrowed by it) within
    /// `ceiling` (an agent's own): every program, shell, component and
    /// environment name must be one the ceiling grants too (its grants are
    /// used: they name the agent's binaries), a pinned program must be
    /// pinned to the same digest there; limits are the lower of the two;
    /// confinement the agent's, required if either requires it; network
    /// only if both allow it; the user ids the agent's. Else the denial.
    pub(crate) fn within(&self, ceiling: &Policy) -> Result<Policy, Denial> {
        let same = |ours: &crate::policy::ProgramGrant,
                    theirs: &crate::policy::ProgramGrant|
         -> Result<crate::policy::ProgramGrant, Denial> {
            match (&ours.pin, &theirs.pin) {
                (Some((want, _)), Some((have, _))) if want != have => {
                    Err(Denial::PinMismatch(ours.name.clone()))
                }
                (Some(_), None) => Err(Denial::PinMismatch(ours.name.clone())),
                _ => Ok(theirs.clone()),
            }
        };
        let programs = (self.programs.iter())
            .map(|p| same(p, ceiling.find_program(&p.name)?))
            .collect::<Result<Vec<_>, _>>()?;
        let shells = (self.shells.iter())
            .map(|s| {
                let theirs = (ceiling.shells.iter()).find(|c| c.name == s.name);
                same(s, theirs.ok_or(Denial::ShellName(s.name.clone()))?)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let forks = (self.forks.iter())
            .map(|f| Ok(ceiling.find_fork(&f.name)?.clone()))
            .collect::<Result<Vec<_>, Denial>>()?;
        if let Some(name) = (self.allowed_env.iter()).find(|n| !ceiling.allowed_env.contains(*n)) {
            return Err(Denial::EnvName(name.clone()));
        }
        // The host's own id for its children means nothing here: only an
        // id the guest asked for is checked against the agent's.
        let asked = (self.child_id_asked).then_some(self.child_id);
        let child_id = match ceiling.check_user(asked.map(|id| id.0), asked.map(|id| id.1))? {
            Some(id) => id,
            None => ceiling.child_id,
        };
        Ok(Policy {
            programs,
            shells,
            forks,
            allowed_env: self.allowed_env.clone(),
            injection_env: (self.injection_env)
                .intersection(&ceiling.injection_env)
                .cloned()
                .collect(),
            limits: self.limits.lower(&ceiling.limits),
            channel_spin: ceiling.channel_spin,
            confine: ceiling.confine,
            network: self.network && ceiling.network,
            require_confinement: self.require_confinement || ceiling.require_confinement,
            use_sandbox: ceiling.use_sandbox,
            child_id,
            child_id_asked: self.child_id_asked,
            allowed_uids: (self.allowed_uids)
                .intersection(&ceiling.allowed_uids)
                .copied()
                .collect(),
            allowed_gids: (self.allowed_gids)
                .intersection(&ceiling.allowed_gids)
                .copied()
                .collect(),
            use_cgroup: ceiling.use_cgroup,
            cgroup_per_child: self.cgroup_per_child || ceiling.cgroup_per_child,
            keep_caps: self.keep_caps & ceiling.keep_caps,
            warm_workers: 0,
            // A remote worker is a nested one: no template of its own.
            worker_template: false,
        })
    }

    /// `sha256:HEX` of each pinned program, for an agent's labels.
    pub(crate) fn pinned_labels(&self) -> Vec<String> {
        (self.programs.iter())
            .filter_map(|p| p.pin.as_ref())
            .map(|(digest, _)| format!("sha256:{}", crate::hex::hex(digest)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! A forking host's request within an agent's policy, without wasm,
    //! processes or NATS.
    use super::*;
    use crate::ctx::ProcessCtx;
    use crate::policy::Limits;

    fn policy(build: impl FnOnce(&mut crate::ctx::ProcessCtxBuilder)) -> Policy {
        let mut b = ProcessCtx::builder();
        b.confine(false);
        build(&mut b);
        b.build().policy().clone()
    }

    #[test]
    fn a_request_gets_the_agents_own_grants_of_what_it_names() {
        let agent = policy(|b| {
            b.allow_program("/bin/true").unwrap();
            b.allow_program("/bin/sh").unwrap();
        });
        let host = policy(|b| {
            b.allow_program("/usr/bin/true").unwrap();
        });
        let got = host.within(&agent).unwrap();
        let paths: Vec<_> = got.programs.iter().map(|p| p.path.clone()).collect();
        assert_eq!(paths, [std::path::PathBuf::from("/bin/true")]);
    }

    #[test]
    fn anything_beyond_the_agents_policy_is_denied() {
        let agent = policy(|b| {
            b.allow_program("/bin/true").unwrap();
            b.allow_env("LANG").unwrap();
        });
        let program = policy(|b| {
            b.allow_program("/bin/sh").unwrap();
        });
        assert_eq!(
            program.within(&agent).unwrap_err(),
            Denial::Program("sh".into())
        );
        let env = policy(|b| {
            b.allow_env("HOME").unwrap();
        });
        assert_eq!(
            env.within(&agent).unwrap_err(),
            Denial::EnvName("HOME".into())
        );
        let shell = policy(|b| {
            b.allow_shell("/bin/sh").unwrap();
        });
        assert_eq!(
            shell.within(&agent).unwrap_err(),
            Denial::ShellName("sh".into())
        );
    }

    #[test]
    fn a_pinned_program_runs_only_where_it_is_pinned_to_the_same_digest() {
        use sha2::{Digest, Sha256};
        let hex: String = Sha256::digest(std::fs::read("/bin/true").unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let pinned = policy(|b| {
            b.allow_program_pinned("/bin/true", &hex).unwrap();
        });
        let unpinned = policy(|b| {
            b.allow_program("/bin/true").unwrap();
        });
        assert_eq!(
            pinned.within(&unpinned).unwrap_err(),
            Denial::PinMismatch("true".into())
        );
        assert!(pinned.within(&pinned).is_ok());
        assert_eq!(pinned.pinned_labels(), [format!("sha256:{hex}")]);
    }

    #[test]
    fn a_default_timeout_is_never_above_the_lower_maximum() {
        let hour = std::time::Duration::from_secs(3600);
        let ten = std::time::Duration::from_secs(10);
        let host = Limits {
            default_timeout: Some(hour),
            ..Limits::default()
        };
        let agent = Limits {
            max_timeout: Some(ten),
            ..Limits::default()
        };
        let got = host.lower(&agent);
        assert_eq!(
            (got.default_timeout, got.max_timeout),
            (Some(ten), Some(ten))
        );
    }

    #[test]
    fn limits_are_the_lower_of_both_and_network_needs_both() {
        let agent = policy(|b| {
            b.limits(Limits {
                max_live_children: 4,
                max_buffer: 1 << 30,
                ..Limits::default()
            })
            .allow_network(false);
        });
        let host = policy(|b| {
            b.limits(Limits {
                max_live_children: 10,
                max_buffer: 1 << 10,
                max_timeout: Some(std::time::Duration::from_secs(3)),
                ..Limits::default()
            })
            .allow_network(true)
            .require_confinement(true);
        });
        let got = host.within(&agent).unwrap();
        assert_eq!(got.limits.max_live_children, 4);
        assert_eq!(got.limits.max_buffer, 1 << 10);
        assert_eq!(
            got.limits.max_timeout,
            Some(std::time::Duration::from_secs(3))
        );
        assert!(!got.network && got.require_confinement);
    }
}
