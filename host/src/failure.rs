//! Why a request failed, in the domain's own terms: the policy, the
//! launcher and the workers return a [`Failure`], and the WIT glue turns it
//! into the guest's `error-code` in one place (`convert`), as wasmtime-wasi
//! turns its socket errors into `wasi:sockets`' codes. The cases are the
//! guest-visible ones, so the mapping loses nothing.

use std::fmt;

/// A request refused or failed, with a message that names what.
#[derive(Debug, Clone, PartialEq, Eq)]
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
