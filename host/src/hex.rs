//! Lower-case hex, for digests and ids in names, subjects and messages.

/// `bytes` as lowercase hexadecimal (cache entry names, agent ids, program
/// digests in labels).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
