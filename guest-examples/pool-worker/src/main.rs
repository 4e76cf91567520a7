//! A worker of `worker-pool`: receives file paths, answers `SHA256  PATH`
//! (hashing in wasm), and stops at an empty message.

use sha2::{Digest, Sha256};
use std::fmt::Write;
use wasmproc_guest::parent;

fn main() {
    while let Ok(job) = parent::receive() {
        if job.is_empty() {
            break;
        }
        let path = String::from_utf8_lossy(&job).into_owned();
        let reply = match std::fs::read(&path) {
            Ok(bytes) => {
                let digest = Sha256::digest(&bytes);
                let mut hex = String::with_capacity(64);
                for b in digest {
                    let _ = write!(hex, "{b:02x}");
                }
                format!("{hex}  {path}  {}", bytes.len())
            }
            Err(e) => format!("error  {path}  {e}"),
        };
        parent::send(reply.as_bytes()).expect("send to parent");
    }
}
