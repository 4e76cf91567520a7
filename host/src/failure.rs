//! Why a request failed, in the domain's own terms: the policy, the
//! launcher and the workers return a [`Failure`], and the WIT glue turns it
//! into the guest's `error-code` in one place (`convert`), as wasmtime-wasi
//! turns its socket errors into `wasi:sockets`' codes. The cases are the
//! guest-visible ones, so the mapping loses nothing.

use std::fmt;

/// A request refused or failed, with a message that names what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Failure {
    /// The policy does not grant it.
    AccessDenied(String),
    /// A granted thing does not exist.
    NotFound(String),
    /// A value the guest passed is malformed.
    InvalidArgument(String),
    /// A host limit was hit.
    LimitExceeded(String),
    /// A deadline passed.
    TimedOut(String),
    /// A worker channel is closed.
    Closed(String),
    /// This host cannot do it.
    Unsupported(String),
    /// The operating system reported an error.
    Io(String),
}

impl Failure {
    /// The failure for an OS error `err` while doing `what`.
    pub(crate) fn from_io(what: impl fmt::Display, err: &std::io::Error) -> Self {
        Failure::Io(format!("{what}: {err}"))
    }

    /// The guest-visible case, as `error-code` names it (`access-denied`,
    /// ...): also what crosses the cluster's wire.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::AccessDenied(_) => "access-denied",
            Failure::NotFound(_) => "not-found",
            Failure::InvalidArgument(_) => "invalid-argument",
            Failure::LimitExceeded(_) => "limit-exceeded",
            Failure::TimedOut(_) => "timed-out",
            Failure::Closed(_) => "closed",
            Failure::Unsupported(_) => "unsupported",
            Failure::Io(_) => "io",
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Failure::AccessDenied(m)
            | Failure::NotFound(m)
            | Failure::InvalidArgument(m)
            | Failure::LimitExceeded(m)
            | Failure::TimedOut(m)
            | Failure::Closed(m)
            | Failure::Unsupported(m)
            | Failure::Io(m) => m,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Failure {}

/// How a file is opened as a child's stdio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read (stdin).
    Read,
    /// Write a new file; an existing one is an error.
    Create,
    /// Write, truncating an existing file.
    Truncate,
    /// Append, creating the file if need be.
    Append,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every variant, in declaration order, with message `m`.
    fn every_variant(m: &str) -> [Failure; 8] {
        let m = m.to_owned();
        [
            Failure::AccessDenied(m.clone()),
            Failure::NotFound(m.clone()),
            Failure::InvalidArgument(m.clone()),
            Failure::LimitExceeded(m.clone()),
            Failure::TimedOut(m.clone()),
            Failure::Closed(m.clone()),
            Failure::Unsupported(m.clone()),
            Failure::Io(m),
        ]
    }

    proptest! {
        /// Whatever the variant, the message is what it was made with and
        /// Display shows it alone, with nothing added.
        #[test]
        fn the_message_and_display_are_the_message_whatever_the_variant(m in ".*") {
            for failure in every_variant(&m) {
                prop_assert_eq!(failure.message(), m.as_str());
                prop_assert_eq!(failure.to_string(), m.clone());
            }
        }
    }

    #[test]
    fn an_os_error_names_what_was_being_done_and_the_error() {
        let err = std::io::Error::from_raw_os_error(libc::ENOENT);
        let failure = Failure::from_io(format_args!("opening {}", "/srv/in.txt"), &err);
        assert_eq!(failure, Failure::Io(format!("opening /srv/in.txt: {err}")));
        assert!(
            failure
                .message()
                .starts_with("opening /srv/in.txt: No such file")
        );
    }
}
