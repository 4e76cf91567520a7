//! The trappable error type of every `wasmproc:process` function.

use crate::bindings::types::ErrorCode;

/// The error of a `wasmproc:process` host function: either an
/// [`ErrorCode`] value returned to the guest (a policy denial, bad input, an
/// OS error) or a trap (a host bug or an invalid resource handle).
///
/// Convert an [`ErrorCode`] with `?`/`into()`; make a trap with
/// [`ProcessError::trap`].
pub type ProcessError = wasmtime_wasi::TrappableError<ErrorCode>;

/// The result type of `wasmproc:process` host functions.
pub type ProcessResult<T> = Result<T, ProcessError>;
