//! The trappable error type of every `wasmproc:process` function.

use crate::bindings::types::ErrorCode;
use std::fmt;

/// The error of a `wasmproc:process` host function: either an
/// [`ErrorCode`] value returned to the guest (a policy denial, bad input, an
/// OS error) or a trap (a host bug or an invalid resource handle).
///
/// Convert an [`ErrorCode`] with `?`/`into()`; make a trap with
/// [`ProcessError::trap`].
pub type ProcessError = wasmtime_wasi::TrappableError<ErrorCode>;

/// The result type of `wasmproc:process` host functions.
pub type ProcessResult<T> = Result<T, ProcessError>;

impl ErrorCode {
    /// The error for an OS error `err` while doing `what`.
    pub(crate) fn from_io(what: impl fmt::Display, err: &std::io::Error) -> Self {
        ErrorCode::Io(format!("{what}: {err}"))
    }
}
