//! The one place where domain types become WIT types and back (the glue's
//! side of the boundary): a [`Failure`] becomes the guest's `error-code`.

use crate::bindings::types::{ErrorCode, FileMode};
use crate::failure::{Failure, OpenMode};

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
