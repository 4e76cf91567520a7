//! Turning the names a grant or a guest gives into things: a program's
//! absolute path (and its pin), a directory opened with cap-std, a file
//! opened as a child's stdio. What is granted is checked in `check`.

use super::{Denial, Refusal, no_nul};
use crate::failure::{Failure, OpenMode};
use anyhow::{Result, bail};
use cap_std::fs::Dir;
use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Whether a granted directory may be written by the guest's children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirAccess {
    /// Children may only read (enforced by kernel confinement where
    /// available).
    ReadOnly,
    /// Children may read and write.
    ReadWrite,
}

/// A program the guest may run, resolved when it was granted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ProgramGrant {
    /// The file name the guest uses for it, also its `argv[0]`.
    pub name: String,
    /// Absolute path of the binary.
    pub path: PathBuf,
    /// The same without symlinks: what the sandbox shows (and children in
    /// it execute), as it was when granted.
    pub real_path: PathBuf,
    /// The SHA-256 the binary must have, and the file's identity (device,
    /// inode, size, modification time) when it was checked.
    pub pin: Option<([u8; 32], FileId)>,
}

/// What identifies a file's contents without reading them.
pub(crate) type FileId = (u64, u64, u64, i64, i64);

fn file_id(path: &Path) -> io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hasher.finalize().into())
}

impl ProgramGrant {
    /// Pins the binary to the SHA-256 `hex`, which it must have now.
    pub fn pin(&mut self, hex: &str) -> Result<()> {
        let mut want = [0u8; 32];
        if hex.len() != 64 || !hex.is_ascii() {
            bail!("`{hex}` is not a SHA-256 in hex");
        }
        for (i, byte) in want.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
        }
        let id = file_id(&self.path)?;
        if sha256_file(&self.path)? != want {
            bail!("{} does not have the SHA-256 {hex}", self.path.display());
        }
        self.pin = Some((want, id));
        Ok(())
    }

    /// Whether the binary still has its pinned SHA-256 (re-hashed only
    /// when the file changed).
    pub(super) fn pin_holds(&self) -> bool {
        match &self.pin {
            None => true,
            Some((want, id)) => match file_id(&self.path) {
                Ok(now) if now == *id => true,
                Ok(_) => sha256_file(&self.path).is_ok_and(|got| got == *want),
                Err(_) => false,
            },
        }
    }
}

impl ProgramGrant {
    /// Resolves `program` (a path, or a name looked up in the host's PATH).
    pub fn resolve(program: &OsStr) -> Result<ProgramGrant> {
        let as_path = Path::new(program);
        let path = if program.as_encoded_bytes().contains(&b'/') {
            std::path::absolute(as_path)?
        } else {
            let search = std::env::var_os("PATH").unwrap_or_default();
            match std::env::split_paths(&search)
                .map(|dir| dir.join(program))
                .find(|p| is_executable(p))
            {
                Some(p) => std::path::absolute(p)?,
                None => bail!("program `{}` not found in PATH", as_path.display()),
            }
        };
        if !is_executable(&path) {
            bail!("{} is not an executable file", path.display());
        }
        ProgramGrant::named(path)
    }

    /// A component granted for `fork`: an existing file.
    pub fn component(path: &Path) -> Result<ProgramGrant> {
        let path = std::path::absolute(path)?;
        if !path.is_file() {
            bail!("component {} is not a file", path.display());
        }
        ProgramGrant::named(path)
    }

    /// The grant of `path`, named by its file name.
    fn named(path: PathBuf) -> Result<ProgramGrant> {
        let Some(name) = path.file_name().and_then(OsStr::to_str) else {
            bail!("{} has no UTF-8 file name", path.display());
        };
        Ok(ProgramGrant {
            name: name.to_owned(),
            real_path: std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone()),
            path,
            pin: None,
        })
    }

    /// Adds this grant to `grants` (replacing the same one), unless another
    /// there has the same name.
    pub fn add_to(self, grants: &mut Vec<ProgramGrant>) -> Result<()> {
        grants.retain(|g| g.name != self.name || g.path != self.path);
        // Two names of one file (`sh` found in PATH as /usr/bin/sh, and
        // /bin/sh) are one grant: the first stands, and a request by the
        // other name finds it (see `find`).
        if grants
            .iter()
            .any(|g| g.real_path == self.real_path && g.pin == self.pin)
        {
            return Ok(());
        }
        if let Some(other) = grants.iter().find(|g| g.name == self.name) {
            bail!(
                "two grants are both named `{}`: {} and {}",
                self.name,
                other.path.display(),
                self.path.display()
            );
        }
        grants.push(self);
        Ok(())
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The grant named `name`: by file name if it has no `/`, else by
/// absolute path, either as granted or as the file it resolves to (so
/// `/bin/sh` finds the grant of `sh` found in PATH as `/usr/bin/sh`, one
/// file under two names). Only a granted file is ever found, whatever
/// links lead to it.
pub(super) fn find<'a>(grants: &'a [ProgramGrant], name: &str) -> Option<&'a ProgramGrant> {
    if !name.contains('/') {
        return grants.iter().find(|g| g.name == name);
    }
    let path = Path::new(name);
    if let Some(grant) = grants.iter().find(|g| g.path == path) {
        return Some(grant);
    }
    let real = path
        .is_absolute()
        .then(|| std::fs::canonicalize(path).ok())
        .flatten()?;
    grants.iter().find(|g| g.real_path == real)
}

/// A directory children may run in.
#[derive(Debug, Clone)]
pub(crate) struct DirGrant {
    /// How the guest names it.
    pub guest_path: PathBuf,
    /// The host directory (for logs only; access goes through `dir`).
    pub host_path: PathBuf,
    /// The opened directory.
    pub dir: Arc<Dir>,
    /// Whether children may write to it.
    pub access: DirAccess,
}

impl DirGrant {
    /// The host path of `rest` (a relative path) below this directory.
    pub fn host_path_of(&self, rest: &Path) -> PathBuf {
        match rest.as_os_str().is_empty() {
            true => self.host_path.clone(),
            false => self.host_path.join(rest),
        }
    }
}

/// The granted directory of `dirs` that `path` (a guest path) is in, the
/// rest of the path below it, and the directory opened through cap-std
/// (which refuses `..` and symlinks that lead out of the grant with
/// `PermissionDenied`). `None` when `path` is in no granted directory.
pub(super) fn locate_dir<'a>(
    dirs: &'a [DirGrant],
    path: &str,
) -> Option<(&'a DirGrant, PathBuf, io::Result<Dir>)> {
    let path = Path::new(path);
    // The granted directory whose guest path is the longest prefix of
    // `path`; a relative `path` that matches none is relative to the first.
    let matched = (dirs.iter())
        .filter_map(|d| path.strip_prefix(&d.guest_path).ok().map(|rest| (d, rest)))
        .max_by_key(|(d, _)| d.guest_path.components().count());
    let (grant, rest) = match matched {
        Some(m) => m,
        None if path.is_relative() && !dirs.is_empty() => (&dirs[0], path),
        None => return None,
    };
    let rest: PathBuf = (rest.components())
        .filter(|c| *c != Component::CurDir)
        .collect();
    let opened = if rest.as_os_str().is_empty() {
        grant.dir.try_clone()
    } else {
        grant.dir.open_dir(&rest)
    };
    Some((grant, rest, opened))
}

/// Opens the guest's working directory inside a granted directory (the
/// first one when none is asked for; `/` without any).
pub(super) fn open_cwd(
    dirs: &[DirGrant],
    cwd: Option<&str>,
) -> Result<(Option<Dir>, PathBuf), Refusal> {
    let Some(cwd) = cwd else {
        return match dirs.first() {
            Some(d) => {
                let dir = d.dir.try_clone().map_err(|e| {
                    Failure::from_io(format_args!("opening {}", d.guest_path.display()), &e)
                })?;
                Ok((Some(dir), d.host_path.clone()))
            }
            None => Ok((None, PathBuf::from("/"))),
        };
    };
    let (grant, rest, dir) = open_granted_dir(
        dirs,
        cwd,
        "working directory",
        || Denial::Cwd(cwd.to_owned()),
        |grant| Denial::CwdEscape {
            cwd: cwd.to_owned(),
            granted: grant.guest_path.display().to_string(),
        },
    )?;
    Ok((Some(dir), grant.host_path_of(&rest)))
}

/// The directory `path` (a guest path) opened inside the granted directory
/// of `dirs` it is in, with the grant and the rest of the path; or why not:
/// the denial `outside` when it is in no grant, `escape` when `..` or
/// symlinks lead out of its grant, else what is wrong with it (missing, not
/// a directory), naming it as `what`.
pub(crate) fn open_granted_dir<'a>(
    dirs: &'a [DirGrant],
    path: &str,
    what: &str,
    outside: impl FnOnce() -> Denial,
    escape: impl FnOnce(&DirGrant) -> Denial,
) -> Result<(&'a DirGrant, PathBuf, Dir), Refusal> {
    no_nul(what, path)?;
    let Some((grant, rest, opened)) = locate_dir(dirs, path) else {
        return Err(outside().into());
    };
    match opened {
        Ok(dir) => Ok((grant, rest, dir)),
        // cap-std refuses `..` and symlinks that lead out of the grant.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(escape(grant).into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Failure::NotFound(format!(
            "{what} `{path}` does not exist in {}",
            grant.guest_path.display()
        ))
        .into()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err(Failure::InvalidArgument(format!("{what} `{path}` is not a directory")).into())
        }
        Err(e) => Err(Failure::from_io(format_args!("opening {what} `{path}`"), &e).into()),
    }
}

/// Opens file `path` (a guest path) inside the granted directory of `dirs`
/// it is in, as `mode` says, for a child's stdin (`output` false: mode
/// `read`) or its stdout or stderr (a write mode, in a directory granted
/// read-write). Only a regular file will do: a FIFO or device could block
/// the host or reach past the grants.
pub(crate) fn open_granted_file(
    dirs: &[DirGrant],
    path: &str,
    mode: OpenMode,
    output: bool,
) -> Result<std::os::fd::OwnedFd, Refusal> {
    use cap_std::fs::{OpenOptions, OpenOptionsExt};
    no_nul("the file", path)?;
    let invalid = |m: String| Refusal::Invalid(Failure::InvalidArgument(m));
    match (output, mode) {
        (true, OpenMode::Read) => {
            return Err(invalid(format!(
                "file `{path}` is for output: mode `read` is for stdin only"
            )));
        }
        (false, OpenMode::Create | OpenMode::Truncate | OpenMode::Append) => {
            return Err(invalid(format!(
                "file `{path}` is for stdin: its mode must be `read`"
            )));
        }
        _ => {}
    }
    let whole = Path::new(path);
    let (Some(name), Some(parent)) = (whole.file_name(), whole.parent()) else {
        return Err(invalid(format!("`{path}` names no file")));
    };
    let parent = match parent.as_os_str().is_empty() {
        true => ".",
        false => parent.to_str().unwrap_or("."),
    };
    let (grant, _, dir) = open_granted_dir(
        dirs,
        parent,
        "the directory of file",
        || Denial::File(path.to_owned()),
        |_| Denial::File(path.to_owned()),
    )?;
    if output && grant.access == DirAccess::ReadOnly {
        return Err(Denial::ReadOnlyFile(path.to_owned()).into());
    }
    let mut options = OpenOptions::new();
    match mode {
        OpenMode::Read => options.read(true),
        OpenMode::Create => options.write(true).create_new(true),
        OpenMode::Truncate => options.write(true).create(true).truncate(true),
        OpenMode::Append => options.append(true).create(true),
    };
    options
        .mode(0o644)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    let file = match dir.open_with(name, &options) {
        Ok(file) => file.into_std(),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(Denial::File(path.to_owned()).into());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Failure::NotFound(format!("file `{path}` does not exist")).into());
        }
        Err(e) => return Err(Failure::from_io(format_args!("opening file `{path}`"), &e).into()),
    };
    let fail = |e: io::Error| Failure::from_io(format_args!("opening file `{path}`"), &e);
    if !file.metadata().map_err(fail)?.is_file() {
        return Err(invalid(format!("`{path}` is not a regular file")));
    }
    let fd = std::os::fd::OwnedFd::from(file);
    // Opened non-blocking (a FIFO planted there must not hang the host);
    // the child gets it blocking.
    rustix::io::ioctl_fionbio(&fd, false).map_err(|e| fail(e.into()))?;
    Ok(fd)
}
