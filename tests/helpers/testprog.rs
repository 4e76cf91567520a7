//! A tiny native program the tests run as a child, so they do not depend on
//! whatever `/bin` has. Built by the tests with plain `rustc` (std only).
//!
//! testprog echo ARGS...      print ARGS joined by spaces, and a newline
//! testprog stderr TEXT       print TEXT to stderr
//! testprog exit N            exit with code N
//! testprog abort             die by SIGABRT
//! testprog sleep SECS        sleep
//! testprog grandchild SECS   start `testprog sleep SECS` (same process group),
//!                            print its pid as a `pid_token`, then sleep SECS
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
//! testprog burn MS           spin until this process used MS ms of CPU time, print `burnt`
//! testprog ignore-term SECS  ignore SIGTERM, print `ready`, then sleep SECS
//! testprog setuid UID        switch to user id UID; print `changed` or `error: KIND`
//! testprog wc PATH           print `N PATH`, N the number of newlines in the
//!                            file (as `wc -l PATH`), or `error: KIND`
//!
//! The sandbox attacks (issue 11). Each prints one line: `ok ...` if the
//! attack went through, else `error: KIND (ERRNO)`, KIND the io::ErrorKind
//! and ERRNO the errno's name, so a test can tell how it was refused
//! (`EACCES` from Landlock or file modes, `EPERM` from seccomp, `ENOENT`
//! from a mount namespace without the path, ...):
//!
//! testprog chmod MODE PATH   chmod(2) PATH to the octal MODE
//! testprog utime PATH        set PATH's atime and mtime to 2000-01-01 (utimensat)
//! testprog setxattr PATH     set the extended attribute user.wasmproc=x (setxattr)
//! testprog stat PATH         stat(2) PATH; print `ok SIZE`
//! testprog unix-stream PATH TEXT  connect to the Unix stream socket PATH, send TEXT
//! testprog unix-dgram PATH TEXT   send TEXT as a datagram to the Unix socket PATH
//! testprog udp ADDR TEXT     send TEXT as a UDP datagram to ADDR (IP:PORT)
//! testprog mptcp ADDR TEXT   socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP),
//!                            connect to ADDR and send TEXT
//! testprog shm-read KEY      attach the existing SysV shared memory segment
//!                            KEY (or `id:ID`) and print its text (to the first NUL)
//! testprog shm-write KEY TEXT  attach segment KEY (or `id:ID`) and write TEXT
//!                            and a NUL at its start
//! testprog msg-read KEY      take a message from the existing SysV message
//!                            queue KEY (or `id:ID`) without waiting; print its text
//! testprog msg-send KEY TEXT put TEXT (type 1) on queue KEY (or `id:ID`)
//! testprog key-read SERIAL   keyctl(KEYCTL_READ) key SERIAL; print its payload
//! testprog key-search DESC   keyctl(KEYCTL_SEARCH) the session keyring for the
//!                            "user" key DESC, read it; print `ok SERIAL PAYLOAD`
//! testprog unshare-userns    unshare(CLONE_NEWUSER | CLONE_NEWNET) (`unshare -Un`)
//! testprog truncate-stderr TEXT  ftruncate(2, 0), then write TEXT to fd 2;
//!                            print how the truncate went
//! testprog setuid-file PATH  copy this binary to PATH and chmod it 04755
//!                            (`cp /usr/bin/id x && chmod u+s x`); print `ok MODE`
//!                            with the mode it has then
//! testprog create-setuid PATH  open(PATH, O_CREAT | O_WRONLY, 04755); print
//!                            `ok MODE` with the mode the new file has

#[path = "pid_token.rs"]
mod pid_token;

use std::io::{Read, Write};
use std::time::Duration;

/// This program's path. A sandboxed child has no `/proc` to find itself
/// in, so the tests also compile the path in (`TESTPROG_PATH`).
fn me() -> std::path::PathBuf {
    std::env::current_exe().unwrap_or_else(|_| {
        option_env!("TESTPROG_PATH")
            .expect("no /proc and no TESTPROG_PATH")
            .into()
    })
}

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
        "burn" => {
            unsafe extern "C" {
                fn clock_gettime(clock: i32, ts: *mut [i64; 2]) -> i32;
            }
            let cpu = || {
                let mut ts = [0i64; 2];
                // SAFETY: CLOCK_PROCESS_CPUTIME_ID (2) into a valid timespec.
                unsafe { clock_gettime(2, &mut ts) };
                Duration::new(ts[0] as u64, ts[1] as u32)
            };
            let want = Duration::from_millis(arg(2).parse().unwrap());
            let mut x = 0u64;
            while cpu() < want {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let _ = writeln!(out, "burnt");
        }
        "ignore-term" => {
            unsafe extern "C" {
                fn signal(signum: i32, handler: usize) -> usize;
            }
            // SAFETY: SIG_IGN (1) for SIGTERM (15): no handler code runs.
            unsafe { signal(15, 1) };
            let _ = writeln!(out, "ready");
            let _ = out.flush();
            std::thread::sleep(secs(2));
        }
        "grandchild" => {
            let child = std::process::Command::new(me())
                .args(["sleep", &arg(2)])
                .spawn()
                .expect("spawn grandchild");
            let _ = writeln!(out, "{}", pid_token::token(child.id()));
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
            std::process::Command::new(me())
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
            let Some(pid) = pid_token::resolve(&arg(2)) else {
                let _ = writeln!(out, "gone");
                return;
            };
            let stat = format!("/proc/{pid}/stat");
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
        other => {
            if let Some(result) = attack(other, &arg) {
                let _ = writeln!(out, "{result}");
            } else {
                panic!("testprog: unknown mode {other:?}")
            }
        }
    }
}

/// Runs the sandbox attack `mode` (see the module docs) with the arguments
/// `arg(2)`, `arg(3)`; its one-line report, or `None` for an unknown mode.
fn attack(mode: &str, arg: &dyn Fn(usize) -> String) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = || cstring(&arg(2));
    let result: Result<String, std::io::Error> = match mode {
        "chmod" => {
            let mode = u32::from_str_radix(&arg(2), 8).expect("octal mode");
            std::fs::set_permissions(arg(3), std::fs::Permissions::from_mode(mode)).map(|()| "ok".into())
        }
        "utime" => {
            // 2000-01-01T00:00:00Z
            let times = [Timespec { sec: 946_684_800, nsec: 0 }; 2];
            // SAFETY: a NUL-terminated path and two timespecs that outlive the call.
            check(unsafe { sys::utimensat(AT_FDCWD, path().as_ptr(), times.as_ptr(), 0) }).map(|_| "ok".into())
        }
        "setxattr" => {
            let name = cstring("user.wasmproc");
            // SAFETY: NUL-terminated path and name, and a 1-byte value.
            check(unsafe { sys::setxattr(path().as_ptr(), name.as_ptr(), b"x".as_ptr(), 1, 0) }).map(|_| "ok".into())
        }
        "stat" => std::fs::metadata(arg(2)).map(|m| format!("ok {}", m.len())),
        "unix-stream" => std::os::unix::net::UnixStream::connect(arg(2))
            .and_then(|mut s| s.write_all(arg(3).as_bytes()))
            .map(|()| "ok sent".into()),
        "unix-dgram" => std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.send_to(arg(3).as_bytes(), arg(2)))
            .map(|n| format!("ok sent {n}")),
        "udp" => std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.send_to(arg(3).as_bytes(), arg(2)))
            .map(|n| format!("ok sent {n}")),
        "mptcp" => mptcp(&arg(2), &arg(3)),
        "shm-read" | "shm-write" => shm(mode == "shm-write", &arg(2), &arg(3)),
        "msg-read" => msg_read(&arg(2)),
        "msg-send" => msg_send(&arg(2), &arg(3)),
        "key-read" => key_read(arg(2).parse().expect("key serial")).map(|payload| format!("ok {payload}")),
        "key-search" => {
            let (kind, description) = (cstring("user"), cstring(&arg(2)));
            // SAFETY: keyctl(KEYCTL_SEARCH, keyring, type, description, 0)
            // reads two NUL-terminated strings.
            check_long(unsafe {
                sys::syscall(
                    SYS_KEYCTL,
                    KEYCTL_SEARCH,
                    KEY_SPEC_SESSION_KEYRING,
                    kind.as_ptr(),
                    description.as_ptr(),
                    0i64,
                )
            })
            .and_then(|serial| key_read(serial as i32).map(|payload| format!("ok {serial} {payload}")))
        }
        "unshare-userns" => {
            const CLONE_NEWUSER: i32 = 0x1000_0000;
            const CLONE_NEWNET: i32 = 0x4000_0000;
            // SAFETY: unshare takes flags only; this program has one thread.
            check(unsafe { sys::unshare(CLONE_NEWUSER | CLONE_NEWNET) }).map(|_| "ok".into())
        }
        "truncate-stderr" => {
            // SAFETY: fd 2 is open for the whole program.
            let truncated = check(unsafe { sys::ftruncate(2, 0) });
            eprintln!("{}", arg(2));
            truncated.map(|_| "ok truncated".into())
        }
        "setuid-file" => std::fs::copy(me(), arg(2))
            .and_then(|_| std::fs::set_permissions(arg(2), std::fs::Permissions::from_mode(0o4755)))
            .and_then(|()| std::fs::metadata(arg(2)))
            .map(|m| format!("ok {:o}", m.permissions().mode() & 0o7777)),
        "create-setuid" => {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o4755)
                .open(arg(2))
                .and_then(|f| f.metadata())
                .map(|m| format!("ok {:o}", m.permissions().mode() & 0o7777))
        }
        _ => return None,
    };
    Some(result.unwrap_or_else(|e| error(&e)))
}

/// `error: KIND (ERRNO)`.
fn error(e: &std::io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(n) => ERRNO_NAMES
            .iter()
            .find(|(code, _)| *code == n)
            .map_or_else(|| format!(" (errno {n})"), |(_, name)| format!(" ({name})")),
        None => String::new(),
    };
    format!("error: {}{name}", e.kind())
}

const ERRNO_NAMES: &[(i32, &str)] = &[
    (1, "EPERM"),
    (2, "ENOENT"),
    (3, "ESRCH"),
    (5, "EIO"),
    (7, "E2BIG"),
    (9, "EBADF"),
    (11, "EAGAIN"),
    (12, "ENOMEM"),
    (13, "EACCES"),
    (14, "EFAULT"),
    (17, "EEXIST"),
    (20, "ENOTDIR"),
    (21, "EISDIR"),
    (22, "EINVAL"),
    (28, "ENOSPC"),
    (30, "EROFS"),
    (38, "ENOSYS"),
    (42, "ENOMSG"),
    (43, "EIDRM"),
    (61, "ENODATA"),
    (87, "EUSERS"),
    (93, "EPROTONOSUPPORT"),
    (95, "EOPNOTSUPP"),
    (97, "EAFNOSUPPORT"),
    (99, "EADDRNOTAVAIL"),
    (101, "ENETUNREACH"),
    (111, "ECONNREFUSED"),
    (126, "ENOKEY"),
    (127, "EKEYEXPIRED"),
    (128, "EKEYREVOKED"),
];

fn cstring(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).expect("no NUL in the argument")
}

/// A C call's `-1` as the error in `errno`.
fn check(ret: i32) -> std::io::Result<i32> {
    if ret == -1 { Err(std::io::Error::last_os_error()) } else { Ok(ret) }
}

fn check_long(ret: i64) -> std::io::Result<i64> {
    if ret == -1 { Err(std::io::Error::last_os_error()) } else { Ok(ret) }
}

const AT_FDCWD: i32 = -100;
const IPC_NOWAIT: i32 = 0o4000;
const MSG_NOERROR: i32 = 0o10000;
const SHM_RDONLY: i32 = 0o10000;
const KEYCTL_SEARCH: i64 = 10;
const KEYCTL_READ: i64 = 11;
const KEY_SPEC_SESSION_KEYRING: i64 = -3;
#[cfg(target_arch = "x86_64")]
const SYS_KEYCTL: i64 = 250;
#[cfg(target_arch = "aarch64")]
const SYS_KEYCTL: i64 = 219;

#[derive(Clone, Copy)]
#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

/// `struct sockaddr_in`.
#[repr(C)]
struct SockaddrIn {
    family: u16,
    port_be: u16,
    addr: [u8; 4],
    zero: [u8; 8],
}

/// `struct msgbuf` with room for 8 KiB of text.
#[repr(C)]
struct MsgBuf {
    mtype: i64,
    mtext: [u8; 8192],
}

/// The C library calls std does not offer (glibc is linked anyway).
mod sys {
    use super::{SockaddrIn, Timespec};
    unsafe extern "C" {
        pub fn utimensat(dirfd: i32, path: *const std::ffi::c_char, times: *const Timespec, flags: i32) -> i32;
        pub fn setxattr(
            path: *const std::ffi::c_char,
            name: *const std::ffi::c_char,
            value: *const u8,
            size: usize,
            flags: i32,
        ) -> i32;
        pub fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
        pub fn connect(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
        pub fn shmget(key: i32, size: usize, flags: i32) -> i32;
        pub fn shmat(id: i32, addr: *const u8, flags: i32) -> *mut u8;
        pub fn shmdt(addr: *const u8) -> i32;
        pub fn msgget(key: i32, flags: i32) -> i32;
        pub fn msgrcv(id: i32, buf: *mut super::MsgBuf, size: usize, kind: i64, flags: i32) -> isize;
        pub fn msgsnd(id: i32, buf: *const super::MsgBuf, size: usize, flags: i32) -> i32;
        pub fn syscall(number: i64, ...) -> i64;
        pub fn unshare(flags: i32) -> i32;
        pub fn ftruncate(fd: i32, length: i64) -> i32;
    }
}

/// An MPTCP connection to `addr` that sends `text`.
fn mptcp(addr: &str, text: &str) -> std::io::Result<String> {
    use std::os::fd::FromRawFd;
    const IPPROTO_MPTCP: i32 = 262;
    let addr: std::net::SocketAddrV4 = addr.parse().expect("IPv4 ADDR:PORT");
    // SAFETY: plain integers.
    let fd = check(unsafe { sys::socket(2, 1, IPPROTO_MPTCP) })?;
    // SAFETY: `fd` is a new socket this function owns.
    let mut stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let sockaddr = SockaddrIn { family: 2, port_be: addr.port().to_be(), addr: addr.ip().octets(), zero: [0; 8] };
    let len = size_of::<SockaddrIn>() as u32;
    // SAFETY: a `sockaddr_in` of `len` bytes that outlives the call.
    check(unsafe { sys::connect(fd, &sockaddr, len) })?;
    stream.write_all(text.as_bytes())?;
    Ok("ok sent".into())
}

/// A SysV IPC id from `KEY` (looked up with `get`) or `id:ID` (used as is,
/// as an attacker guessing ids would).
fn ipc_id(key: &str, get: impl Fn(i32) -> i32) -> std::io::Result<i32> {
    match key.strip_prefix("id:") {
        Some(id) => Ok(id.parse().expect("SysV id")),
        None => check(get(key.parse().expect("SysV key"))),
    }
}

/// Reads (or, with `write`, overwrites with `text`) the start of a SysV
/// shared memory segment. Only its first page is touched, which every
/// segment has.
fn shm(write: bool, key: &str, text: &str) -> std::io::Result<String> {
    // SAFETY: plain integers.
    let id = ipc_id(key, |key| unsafe { sys::shmget(key, 0, 0) })?;
    let flags = if write { 0 } else { SHM_RDONLY };
    // SAFETY: attaches the segment anywhere; checked for (void *)-1 below.
    let at = unsafe { sys::shmat(id, std::ptr::null(), flags) };
    if at as isize == -1 {
        return Err(std::io::Error::last_os_error());
    }
    let result = if write {
        let bytes = text.as_bytes();
        assert!(bytes.len() < 4096, "TEXT fits in a page");
        // SAFETY: `at` maps at least one page, writable.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len());
            *at.add(bytes.len()) = 0;
        }
        format!("ok wrote {}", bytes.len())
    } else {
        // SAFETY: `at` maps at least one page.
        let page = unsafe { std::slice::from_raw_parts(at, 4096) };
        let end = page.iter().position(|&b| b == 0).unwrap_or(page.len());
        format!("ok {}", String::from_utf8_lossy(&page[..end]))
    };
    // SAFETY: `at` is attached, and no reference to it is left.
    unsafe { sys::shmdt(at) };
    Ok(result)
}

fn msg_read(key: &str) -> std::io::Result<String> {
    // SAFETY: plain integers.
    let id = ipc_id(key, |key| unsafe { sys::msgget(key, 0) })?;
    let mut buf = MsgBuf { mtype: 0, mtext: [0; 8192] };
    // SAFETY: `buf` has room for `mtext.len()` bytes of text.
    let n = unsafe { sys::msgrcv(id, &mut buf, buf.mtext.len(), 0, IPC_NOWAIT | MSG_NOERROR) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(format!("ok {}", String::from_utf8_lossy(&buf.mtext[..n as usize])))
}

fn msg_send(key: &str, text: &str) -> std::io::Result<String> {
    // SAFETY: plain integers.
    let id = ipc_id(key, |key| unsafe { sys::msgget(key, 0) })?;
    let mut buf = MsgBuf { mtype: 1, mtext: [0; 8192] };
    buf.mtext[..text.len()].copy_from_slice(text.as_bytes());
    // SAFETY: `buf` holds `text.len()` bytes of text.
    check(unsafe { sys::msgsnd(id, &buf, text.len(), IPC_NOWAIT) })?;
    Ok("ok sent".into())
}

/// The payload of key `serial` (keyctl(KEYCTL_READ)).
fn key_read(serial: i32) -> std::io::Result<String> {
    let mut buf = [0u8; 4096];
    // SAFETY: keyctl(KEYCTL_READ, key, buffer, length) writes at most
    // `length` bytes to `buffer`.
    let n = check_long(unsafe { sys::syscall(SYS_KEYCTL, KEYCTL_READ, serial as i64, buf.as_mut_ptr(), buf.len()) })?;
    let n = (n as usize).min(buf.len());
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The contents of the file at `path`, or `error: KIND`.
fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("error: {}", e.kind()))
}
