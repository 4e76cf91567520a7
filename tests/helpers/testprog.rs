//! A tiny native program the tests run as a child, so they do not depend on
//! whatever `/bin` has. Built by the tests with plain `rustc` (std only).
//!
//! testprog echo ARGS...      print ARGS joined by spaces, and a newline
//! testprog stderr TEXT       print TEXT to stderr
//! testprog exit N            exit with code N
//! testprog abort             die by SIGABRT
//! testprog sleep SECS        sleep
//! testprog grandchild SECS   start `testprog sleep SECS` (same process group),
//!                            print its pid, then sleep SECS
//! testprog flood BYTES       write BYTES bytes of 'x' to stdout
//! testprog env               print the environment, sorted, one NAME=VALUE a line
//! testprog cwd               print the working directory
//! testprog cat               copy stdin to stdout
//! testprog read PATH        print the file's contents, or `error: KIND`
//! testprog write PATH TEXT  write TEXT to PATH; print `written` or `error: KIND`
//! testprog connect ADDR      connect a TCP socket; print `connected` or `error: KIND`
//! testprog daemon OUT PATH   start `testprog detached OUT PATH` in a new process
//!                            group (out of the child's group), and exit at once
//! testprog detached OUT PATH after 1 s, try to read PATH; write what `read`
//!                            would print to the file OUT
//! testprog count             print the number of bytes read from stdin
//! testprog argv0             print argv[0]
//! testprog alive PID         print `gone` once process PID is gone (or a
//!                            zombie), waiting up to 5 s, else `alive`;
//!                            `unknown` if /proc cannot be read
//! testprog read-fd N        print what descriptor N holds (an attacker
//!                            guessing at descriptors the host left open), or
//!                            `error: bad descriptor`
//! testprog nofile            print the soft and hard RLIMIT_NOFILE
//! testprog setuid UID        switch to user id UID; print `changed` or `error: KIND`
//! testprog wc PATH           print `N PATH`, N the number of newlines in the
//!                            file (as `wc -l PATH`), or `error: KIND`

use std::io::{Read, Write};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let secs = |i: usize| Duration::from_secs_f64(arg(i).parse().expect("seconds"));
    let mut out = std::io::stdout().lock();
    match arg(1).as_str() {
        "echo" => {
            let _ = writeln!(out, "{}", args[2..].join(" "));
        }
        "stderr" => eprint!("{}", arg(2)),
        "exit" => std::process::exit(arg(2).parse().expect("exit code")),
        "abort" => std::process::abort(),
        "sleep" => std::thread::sleep(secs(2)),
        "grandchild" => {
            let child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["sleep", &arg(2)])
                .spawn()
                .expect("spawn grandchild");
            let _ = writeln!(out, "{}", child.id());
            let _ = out.flush();
            std::thread::sleep(secs(2));
        }
        "flood" => {
            let mut left: usize = arg(2).parse().expect("bytes");
            let chunk = [b'x'; 65536];
            while left > 0 {
                let n = left.min(chunk.len());
                if out.write_all(&chunk[..n]).is_err() {
                    return;
                }
                left -= n;
            }
        }
        "env" => {
            let mut vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            vars.sort();
            for v in vars {
                let _ = writeln!(out, "{v}");
            }
        }
        "cwd" => {
            let _ = writeln!(out, "{}", std::env::current_dir().unwrap().display());
        }
        "cat" => {
            let mut input = Vec::new();
            std::io::stdin().read_to_end(&mut input).unwrap();
            let _ = out.write_all(&input);
        }
        "read" => {
            let _ = writeln!(out, "{}", read(&arg(2)));
        }
        "write" => {
            let result = std::fs::write(arg(2), arg(3)).map_or_else(|e| format!("error: {}", e.kind()), |()| "written".into());
            let _ = writeln!(out, "{result}");
        }
        "connect" => {
            let result = std::net::TcpStream::connect(arg(2))
                .map_or_else(|e| format!("error: {}", e.kind()), |_| "connected".into());
            let _ = writeln!(out, "{result}");
        }
        "daemon" => {
            use std::os::unix::process::CommandExt;
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["detached", &arg(2), &arg(3)])
                .process_group(0)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn the daemon");
        }
        "detached" => {
            std::thread::sleep(Duration::from_secs(1));
            let _ = std::fs::write(arg(2), read(&arg(3)));
        }
        "count" => {
            let n = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink()).unwrap();
            let _ = writeln!(out, "{n}");
        }
        "argv0" => {
            let _ = writeln!(out, "{}", arg(0));
        }
        "alive" => {
            let stat = format!("/proc/{}/stat", arg(2));
            // `None`: cannot tell (for example /proc is not readable here).
            let gone = || match std::fs::read_to_string(&stat) {
                // ESRCH (3): it exited while we looked.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(3) => Some(true),
                Err(e) => {
                    eprintln!("testprog: {stat}: {e}");
                    None
                }
                Ok(s) => Some(s.rsplit(") ").next().is_some_and(|rest| rest.starts_with('Z'))),
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while gone() == Some(false) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let answer = match gone() {
                Some(true) => "gone",
                Some(false) => "alive",
                None => "unknown",
            };
            let _ = writeln!(out, "{answer}");
        }
        "read-fd" => {
            use std::os::fd::FromRawFd;
            let fd: i32 = arg(2).parse().expect("descriptor");
            // SAFETY: none — this is the attack: take over a descriptor this
            // program did not open.
            let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
            let mut text = String::new();
            let _ = match file.read_to_string(&mut text) {
                Ok(_) => writeln!(out, "{text}"),
                Err(e) if e.raw_os_error() == Some(9) => writeln!(out, "error: bad descriptor"),
                Err(e) => writeln!(out, "error: {}", e.kind()),
            };
            std::mem::forget(file);
        }
        "nofile" => {
            unsafe extern "C" {
                fn getrlimit(resource: i32, limit: *mut [u64; 2]) -> i32;
            }
            const RLIMIT_NOFILE: i32 = 7;
            let mut limit = [0u64; 2];
            // SAFETY: getrlimit writes one `struct rlimit` (two u64) to `limit`.
            let _ = unsafe { getrlimit(RLIMIT_NOFILE, &mut limit) };
            let _ = writeln!(out, "{} {}", limit[0], limit[1]);
        }
        "setuid" => {
            unsafe extern "C" {
                fn setuid(uid: u32) -> i32;
            }
            let uid: u32 = arg(2).parse().expect("uid");
            // SAFETY: setuid takes a plain integer and touches no memory of ours.
            let result = match unsafe { setuid(uid) } {
                0 => "changed".to_owned(),
                _ => format!("error: {}", std::io::Error::last_os_error().kind()),
            };
            let _ = writeln!(out, "{result}");
        }
        "wc" => {
            let result = std::fs::read(arg(2)).map_or_else(
                |e| format!("error: {}", e.kind()),
                |bytes| format!("{} {}", bytes.iter().filter(|&&b| b == b'\n').count(), arg(2)),
            );
            let _ = writeln!(out, "{result}");
        }
        other => panic!("testprog: unknown mode {other:?}"),
    }
}

/// The contents of the file at `path`, or `error: KIND`.
fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("error: {}", e.kind()))
}
