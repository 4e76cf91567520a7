//! A process named across PID namespaces. A child in a guest's sandbox is
//! born in the guest's own PID namespace, so the pid it knows its own
//! children by (2, 3, ...) is not the pid the tests see. `testprog
//! grandchild` prints `PID@pid:[INODE]` instead: its child's pid and the
//! namespace it is a pid of; [`resolve`] finds that process in the
//! caller's namespace.

/// The token of `pid`, a process of this process's own PID namespace.
pub fn token(pid: u32) -> String {
    let ns = std::fs::read_link("/proc/self/ns/pid").unwrap_or_default();
    format!("{pid}@{}", ns.display())
}

/// The pid, in this process's namespace, of the process `token` names (a
/// plain pid passes through); `None` if no such process runs.
pub fn resolve(token: &str) -> Option<String> {
    let Some((pid, ns)) = token.split_once('@') else {
        return Some(token.to_owned());
    };
    let named = |entry: &std::fs::DirEntry| -> Option<String> {
        let name = entry.file_name().into_string().ok()?;
        name.parse::<u32>().ok()?;
        let link = std::fs::read_link(entry.path().join("ns/pid")).ok()?;
        let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
        let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
        let inner = nspid.split_whitespace().last()?;
        (link.to_str() == Some(ns) && inner == pid).then_some(name)
    };
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|e| named(&e))
}
