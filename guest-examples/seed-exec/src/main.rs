//! The seed's `master.js` exec example as a guest component:
//!
//! ```js
//! child_process.exec('node support.js ' + i, (error, stdout, stderr) => { ... })
//! ```
//!
//! Runs `./support i` for i in 0..3 through the granted shell, in the
//! directory the host granted as `/support` (or the one given as the first
//! argument), and prints each child's stdout, stderr and exit code.

use wasmproc_guest::exec::{ExecOptions, exec};
use wasmproc_guest::types::ExitStatus;

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/support".to_owned());
    let mut failed = false;
    for i in 0..3 {
        let options = ExecOptions { cwd: Some(dir.clone()), ..ExecOptions::default() };
        match exec(&format!("./support {i}"), &options) {
            Ok(out) => {
                println!("stdout: {}", String::from_utf8_lossy(&out.stdout));
                println!("stderr: {}", String::from_utf8_lossy(&out.stderr));
                match out.status {
                    ExitStatus::Exited(code) => println!("Child process exited with exit code {code}"),
                    ExitStatus::Signaled(sig) => println!("Child process killed by signal {sig}"),
                }
            }
            Err(e) => {
                eprintln!("exec ./support {i}: {}: {}", e.code(), e.message());
                failed = true;
            }
        }
    }
    std::process::exit(i32::from(failed));
}
