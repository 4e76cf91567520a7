//! The one place where domain types become WIT types and back (the glue's
//! side of the boundary): a [`Failure`] becomes the guest's `error-code`.

use crate::bindings::types::{ErrorCode, FileMode};
use crate::failure::{Failure, OpenMode};
use crate::policy::{WorkerLimits, WorkerRequest};

impl From<&crate::bindings::fork::ForkOptions> for WorkerRequest {
    fn from(options: &crate::bindings::fork::ForkOptions) -> WorkerRequest {
        let l = &options.limits;
        WorkerRequest {
            programs: options.programs.clone(),
            dirs: (options.dirs.iter())
                .map(|d| (d.path.clone(), d.read_only))
                .collect(),
            allow_env: options.allow_env.clone(),
            env: options.env.clone(),
            shell: options.shell,
            forks: options.forks.clone(),
            limits: WorkerLimits {
                max_live_children: l.max_live_children,
                max_total_spawns: l.max_total_spawns,
                max_buffer: l.max_buffer,
                max_timeout_ms: l.max_timeout_ms,
                cpu_seconds: l.cpu_seconds,
                address_space: l.address_space,
                open_files: l.open_files,
                processes: l.processes,
                file_size: l.file_size,
            },
            uid: options.uid,
            gid: options.gid,
        }
    }
}

impl From<crate::outcome::Termination> for crate::bindings::types::Termination {
    fn from(t: crate::outcome::Termination) -> Self {
        Self {
            status: t.status.into(),
            timed_out: t.timed_out,
            trap: t.trap,
            usage: t.usage.into(),
        }
    }
}

impl From<Failure> for ErrorCode {
    fn from(failure: Failure) -> ErrorCode {
        match failure {
            Failure::AccessDenied(m) => ErrorCode::AccessDenied(m),
            Failure::NotFound(m) => ErrorCode::NotFound(m),
            Failure::InvalidArgument(m) => ErrorCode::InvalidArgument(m),
            Failure::LimitExceeded(m) => ErrorCode::LimitExceeded(m),
            Failure::TimedOut(m) => ErrorCode::TimedOut(m),
            Failure::Closed(m) => ErrorCode::Closed(m),
            Failure::Unsupported(m) => ErrorCode::Unsupported(m),
            Failure::Io(m) => ErrorCode::Io(m),
        }
    }
}

impl From<ErrorCode> for Failure {
    fn from(code: ErrorCode) -> Failure {
        match code {
            ErrorCode::AccessDenied(m) => Failure::AccessDenied(m),
            ErrorCode::NotFound(m) => Failure::NotFound(m),
            ErrorCode::InvalidArgument(m) => Failure::InvalidArgument(m),
            ErrorCode::LimitExceeded(m) => Failure::LimitExceeded(m),
            ErrorCode::TimedOut(m) => Failure::TimedOut(m),
            ErrorCode::Closed(m) => Failure::Closed(m),
            ErrorCode::Unsupported(m) => Failure::Unsupported(m),
            ErrorCode::Io(m) => Failure::Io(m),
        }
    }
}

impl From<Failure> for crate::ProcessError {
    fn from(failure: Failure) -> crate::ProcessError {
        ErrorCode::from(failure).into()
    }
}

impl From<FileMode> for OpenMode {
    fn from(mode: FileMode) -> OpenMode {
        match mode {
            FileMode::Read => OpenMode::Read,
            FileMode::Create => OpenMode::Create,
            FileMode::Truncate => OpenMode::Truncate,
            FileMode::Append => OpenMode::Append,
        }
    }
}

impl From<crate::outcome::ExitStatus> for crate::bindings::types::ExitStatus {
    fn from(status: crate::outcome::ExitStatus) -> Self {
        match status {
            crate::outcome::ExitStatus::Exited(code) => Self::Exited(code),
            crate::outcome::ExitStatus::Signaled(signal) => Self::Signaled(signal),
        }
    }
}

impl From<crate::outcome::ResourceUsage> for crate::bindings::types::ResourceUsage {
    fn from(usage: crate::outcome::ResourceUsage) -> Self {
        Self {
            user_cpu_ns: usage.user_cpu_ns,
            system_cpu_ns: usage.system_cpu_ns,
            max_rss_bytes: usage.max_rss_bytes,
        }
    }
}

impl From<crate::outcome::Confinement> for crate::bindings::types::Confinement {
    fn from(level: crate::outcome::Confinement) -> Self {
        match level {
            crate::outcome::Confinement::None => Self::None,
            crate::outcome::Confinement::Partial => Self::Partial,
            crate::outcome::Confinement::Full => Self::Full,
        }
    }
}

impl From<crate::bindings::types::Confinement> for crate::outcome::Confinement {
    fn from(level: crate::bindings::types::Confinement) -> Self {
        match level {
            crate::bindings::types::Confinement::None => Self::None,
            crate::bindings::types::Confinement::Partial => Self::Partial,
            crate::bindings::types::Confinement::Full => Self::Full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A failure's variant name and message.
    fn failure_parts(f: &Failure) -> (&'static str, &str) {
        (f.code(), f.message())
    }

    /// An error code's variant name (as the WIT spells it) and message.
    fn code_parts(e: &ErrorCode) -> (&'static str, &str) {
        match e {
            ErrorCode::AccessDenied(m) => ("access-denied", m),
            ErrorCode::NotFound(m) => ("not-found", m),
            ErrorCode::InvalidArgument(m) => ("invalid-argument", m),
            ErrorCode::LimitExceeded(m) => ("limit-exceeded", m),
            ErrorCode::TimedOut(m) => ("timed-out", m),
            ErrorCode::Closed(m) => ("closed", m),
            ErrorCode::Unsupported(m) => ("unsupported", m),
            ErrorCode::Io(m) => ("io", m),
        }
    }

    fn any_failure() -> impl Strategy<Value = Failure> {
        let variants: [fn(String) -> Failure; 8] = [
            Failure::AccessDenied,
            Failure::NotFound,
            Failure::InvalidArgument,
            Failure::LimitExceeded,
            Failure::TimedOut,
            Failure::Closed,
            Failure::Unsupported,
            Failure::Io,
        ];
        (0..variants.len(), ".*").prop_map(move |(i, m)| variants[i](m))
    }

    proptest! {
        /// The guest sees the error code of the same name, with the same
        /// message, and turning it back gives the failure unchanged.
        #[test]
        fn a_failure_becomes_the_error_code_of_the_same_name_and_back_unchanged(failure in any_failure()) {
            let code = ErrorCode::from(failure.clone());
            prop_assert_eq!(code_parts(&code), failure_parts(&failure));
            prop_assert_eq!(Failure::from(code), failure);
        }

        /// A failure handed to the guest is an error-code value, not a trap.
        #[test]
        fn a_failure_returned_from_a_host_function_is_an_error_code_not_a_trap(failure in any_failure()) {
            let error = crate::ProcessError::from(failure.clone());
            let code = error.downcast().expect("an error-code, not a trap");
            prop_assert_eq!(code_parts(&code), failure_parts(&failure));
        }
    }

    #[test]
    fn every_file_mode_opens_as_the_mode_of_the_same_name() {
        let pairs = [
            (FileMode::Read, OpenMode::Read),
            (FileMode::Create, OpenMode::Create),
            (FileMode::Truncate, OpenMode::Truncate),
            (FileMode::Append, OpenMode::Append),
        ];
        for (mode, open) in pairs {
            assert_eq!(OpenMode::from(mode), open);
        }
    }
}
