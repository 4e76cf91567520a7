//! The seed's fork example as a guest component:
//!
//! ```js
//! const w = child_process.fork('support.js', [i]);
//! w.on('close', code => console.log('child process exited with code ' + code));
//! ```
//!
//! Forks the `support-worker.wasm` component three times with argument i;
//! each worker, a component in its own OS process, prints
//! `Child Process i executed.` to the stdout it inherits.

use wasmproc_guest::fork::{ForkOptions, fork};
use wasmproc_guest::types::ExitStatus;

fn main() {
    let component = std::env::args().nth(1).unwrap_or_else(|| "support-worker.wasm".to_owned());
    let workers: Vec<_> = (0..3)
        .map(|i| {
            // Nothing passed on; the workers print to our stdout.
            fork(&component, &[i.to_string()], ForkOptions::default()).unwrap_or_else(|e| {
                eprintln!("fork {component} {i}: {}: {}", e.code(), e.message());
                std::process::exit(1);
            })
        })
        .collect();
    for worker in &workers {
        match worker.wait().map(|t| t.status) {
            Ok(ExitStatus::Exited(code)) => println!("child process exited with code {code}"),
            Ok(ExitStatus::Signaled(sig)) => println!("child process killed by signal {sig}"),
            Err(e) => println!("child process lost: {}: {}", e.code(), e.message()),
        }
    }
}
