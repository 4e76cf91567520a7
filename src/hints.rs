//! What to tell the operator when a guest is denied something: the flag
//! that would grant it, written so that it works when pasted.

use crate::Grants;
use std::path::{Path, PathBuf};
use wasmproc_host::Denial;

/// What the hints look at: the directories granted to the guest (where a
/// program it asks for by name may be) and where wasmproc was started.
pub struct Hints {
    dirs: Vec<PathBuf>,
    here: Option<PathBuf>,
}

impl Hints {
    pub fn new(args: &Grants) -> Hints {
        let dirs = args.dirs.iter().chain(&args.dirs_ro);
        Hints {
            dirs: dirs
                .filter_map(|d| std::path::absolute(&d.host).ok())
                .collect(),
            here: std::env::current_dir().ok(),
        }
    }

    /// The hint for a program the guest may not run: `--allow-run NAME` if
    /// the host's PATH has NAME (that is where the grant looks), else the
    /// absolute path of a program of that name in a granted directory or
    /// below the current one, else a request for its absolute path.
    fn program(&self, program: &str) -> String {
        if program.contains('/') || on_path(program).is_some() {
            return format!("grant it with --allow-run {program}");
        }
        let below_here = self
            .here
            .iter()
            .flat_map(|here| find_below(here, program, 3));
        let granted = self.dirs.iter().map(|dir| dir.join(program));
        match granted.filter(|p| is_program(p)).chain(below_here).next() {
            Some(found) => format!(
                "`{program}` is not on the host's PATH: grant it by its path, --allow-run {}",
                found.display()
            ),
            None => format!(
                "`{program}` is not on the host's PATH: grant it by its absolute path, \
                 --allow-run /PATH/TO/{program}"
            ),
        }
    }

    /// The hint for a component the guest may not fork: `--allow-fork`
    /// with a path that works when pasted: the component's absolute path
    /// if it has one, else that of a file of its name in a granted
    /// directory, where wasmproc was started, or below it.
    fn component(&self, component: &str) -> String {
        let path = Path::new(component);
        if path.is_absolute() {
            return format!("grant it with --allow-fork {component}");
        }
        let name = path.file_name().map(Path::new).unwrap_or(path);
        let here = self.here.iter().flat_map(|here| {
            let direct = Some(here.join(name)).filter(|p| p.is_file());
            direct.or_else(|| find_file_below(here, name, 3))
        });
        let granted = self.dirs.iter().map(|dir| dir.join(name));
        match granted.filter(|p| p.is_file()).chain(here).next() {
            Some(found) => format!("grant it with --allow-fork {}", found.display()),
            None => format!(
                "grant it by its path, --allow-fork /PATH/TO/{}",
                name.display()
            ),
        }
    }

    /// The flag that would have granted what `denial` refused.
    pub fn grant(&self, denial: &Denial) -> String {
        match denial {
            Denial::Program(p) => self.program(p),
            Denial::Shell => "grant one with --allow-shell".to_owned(),
            Denial::Cwd(c) => format!("grant a directory containing it with --dir HOST::{c}"),
            Denial::CwdEscape { .. } => "no flag grants leaving a granted directory".to_owned(),
            Denial::EnvName(n) => format!("allow it with --allow-env {n}"),
            Denial::InjectionEnv(n) => {
                format!("allow it with --allow-injection-env {n}, knowingly")
            }
            Denial::PinMismatch(_) => "check the binary, then grant its new digest".to_owned(),
            Denial::Limit {
                limit: "max_timeout",
                ..
            } => "raise it with --timeout".to_owned(),
            Denial::Limit {
                limit: "max_buffer",
                ..
            } => "raise it with --max-buffer".to_owned(),
            Denial::Limit {
                limit: "max_live_children",
                ..
            } => "raise it with --max-children".to_owned(),
            Denial::Limit { limit, .. } => format!("a host limit ({limit})"),
            Denial::ForkComponent(c) => self.component(c),
            Denial::InWorker { .. } => {
                "a worker holds what its parent passed it in fork-options".to_owned()
            }
            Denial::Uid(uid) => format!("allow it with --allow-uid {uid}"),
            Denial::Gid(gid) => format!("allow it with --allow-gid {gid}"),
            Denial::ForkDir(_) | Denial::ReadOnlyDir(_) | Denial::ForkLimit { .. } => {
                "a worker only gets what its parent holds".to_owned()
            }
            Denial::OnAgent { .. } => "the agent's own policy decides".to_owned(),
            Denial::NotExported(d) => format!("export it on the agent with --dir HOST::{d}"),
            Denial::File(_) | Denial::ReadOnlyFile(_) => {
                "grant a directory holding it with --dir".to_owned()
            }
            Denial::ShellName(s) => format!("grant it with --allow-shell={s}"),
            _ => "not grantable by a flag".to_owned(),
        }
    }
}

/// What a granted program needs that a confined child cannot reach, if
/// anything, as a warning that names what to grant: a version manager's
/// shim (pyenv, rbenv, nodenv, asdf: a script in a `shims` directory that
/// runs the manager's own files), or a script whose `#!` interpreter is
/// outside what children see (`visible`: the system directories, the
/// granted programs and directories). Either would run, and fail with
/// exit status 127 in the child, only once the guest asks for it.
pub fn unreachable_interpreter(program: &Path, visible: &dyn Fn(&Path) -> bool) -> Option<String> {
    let interpreter = shebang(program)?;
    let shown = program.display();
    if program.parent()?.file_name()? == "shims" {
        let name = program.file_name()?.to_string_lossy();
        let real = shim_target(program)
            .map(|p| format!("--allow-run {}", p.display()))
            .unwrap_or_else(|| {
                format!("--allow-run \"$(pyenv which {name})\" (or your version manager's `which`)")
            });
        return Some(format!(
            "{shown} is a version manager's shim, which runs files children cannot see: \
             grant the program it stands for, {real}"
        ));
    }
    (!visible(&interpreter)).then(|| {
        format!(
            "{shown} is a script run by {}, which children cannot see: grant it too, \
             --allow-run {0}",
            interpreter.display()
        )
    })
}

/// The interpreter the `#!` line of the script `path` names (through
/// `env`, the program `env` would find on PATH), if it is a script.
fn shebang(path: &Path) -> Option<PathBuf> {
    use std::io::Read as _;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = String::from_utf8_lossy(line.split(|b| *b == b'\n').next()?).into_owned();
    let mut words = line.split_whitespace();
    let interpreter = PathBuf::from(words.next()?);
    if interpreter.file_name().is_some_and(|n| n == "env") {
        let program = words.find(|w| !w.starts_with('-'))?;
        return on_path(program);
    }
    Some(interpreter)
}

/// The program a pyenv-style shim at `shim` stands for: ROOT/versions/V/
/// bin/NAME for the version `$PYENV_VERSION` or ROOT/version names.
fn shim_target(shim: &Path) -> Option<PathBuf> {
    let root = shim.parent()?.parent()?;
    let version = std::env::var("PYENV_VERSION").ok().or_else(|| {
        let file = std::fs::read_to_string(root.join("version")).ok()?;
        Some(file.lines().next()?.trim().to_owned())
    })?;
    let target = root
        .join("versions")
        .join(version)
        .join("bin")
        .join(shim.file_name()?);
    is_program(&target).then(|| std::fs::canonicalize(&target).unwrap_or(target))
}

/// Why the file at `path` cannot be run as a component, if it plainly
/// cannot, said so that the operator knows what to do: not WebAssembly at
/// all (and, for a program given right after a bare `--allow-shell` in
/// `argv`, the `--allow-shell=PATH` that was meant), or a core module.
pub fn not_a_component(path: &Path, argv: &[String]) -> Option<String> {
    use std::io::Read as _;
    let mut head = [0u8; 8];
    let mut file = std::fs::File::open(path).ok()?;
    let n = file.read(&mut head).ok()?;
    let shown = path.display();
    if n < 8 || head[..4] != *b"\0asm" {
        let after_shell =
            (argv.windows(2)).any(|w| w[0] == "--allow-shell" && Path::new(&w[1]) == path);
        return Some(match after_shell && is_program(path) {
            true => format!(
                "{shown} is not a WebAssembly file: it was taken for the component because \
                 --allow-shell takes its shell only after `=`; write --allow-shell={shown}"
            ),
            false => format!("{shown} is not a WebAssembly file"),
        });
    }
    // Bytes 6..8 are the layer: 0 for a core module, 1 for a component.
    (head[6..8] == [0, 0]).then(|| {
        format!(
            "{shown} is a core WebAssembly module, not a component: build for \
             wasm32-wasip2, or make one with `wasm-tools component new {shown} \
             --adapt wasi_snapshot_preview1.command.wasm -o component.wasm`"
        )
    })
}

/// An executable regular file.
fn is_program(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `name` in the host's PATH, as the grant looks it up.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_program(p))
}

/// A file called `name` in `dir` or below it (see [`find_below`]).
fn find_file_below(dir: &Path, name: &Path, depth: usize) -> Option<PathBuf> {
    find_below_where(dir, name.as_os_str(), depth, &|p| p.is_file())
}

/// A program called `name` in `dir` or below it, `depth` directories down
/// at most, passing over hidden directories and build trees (`target`,
/// `node_modules`), and giving up after a few thousand entries.
fn find_below(dir: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    find_below_where(dir, std::ffi::OsStr::new(name), depth, &is_program)
}

/// A file called `name` in `dir` or below it that is `wanted` (see
/// [`find_below`]).
fn find_below_where(
    dir: &Path,
    name: &std::ffi::OsStr,
    depth: usize,
    wanted: &dyn Fn(&Path) -> bool,
) -> Option<PathBuf> {
    let mut queue = std::collections::VecDeque::from([(dir.to_owned(), 0)]);
    let mut seen = 0;
    while let Some((dir, level)) = queue.pop_front() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > 5000 {
                return None;
            }
            let (path, file) = (entry.path(), entry.file_name());
            let skip = file.to_string_lossy().starts_with('.')
                || ["target", "node_modules"].contains(&&*file.to_string_lossy());
            if file == name && wanted(&path) {
                return Some(path);
            }
            if level < depth && !skip && entry.file_type().is_ok_and(|t| t.is_dir()) {
                queue.push_back((path, level + 1));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn hints(dirs: &[&Path], here: &Path) -> Hints {
        let dirs = dirs.iter().map(|d| d.to_path_buf()).collect();
        Hints {
            dirs,
            here: Some(here.to_owned()),
        }
    }

    fn program(dir: &Path, name: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_program_on_the_path_is_granted_by_its_name() {
        let none = tempfile::tempdir().unwrap();
        let hint = hints(&[], none.path()).grant(&Denial::Program("sh".into()));
        assert_eq!(hint, "grant it with --allow-run sh");
    }

    #[test]
    fn a_program_off_the_path_is_granted_by_the_path_where_it_was_found() {
        let here = tempfile::tempdir().unwrap();
        let granted = tempfile::tempdir().unwrap();
        let deep = program(&here.path().join("a/b/c"), "wasmproc-hint-test");
        let hint = hints(&[], here.path()).grant(&Denial::Program("wasmproc-hint-test".into()));
        assert!(
            hint.ends_with(&format!("--allow-run {}", deep.display())),
            "{hint}"
        );
        let in_grant = program(granted.path(), "wasmproc-hint-test");
        let hint = hints(&[granted.path()], here.path())
            .grant(&Denial::Program("wasmproc-hint-test".into()));
        assert!(
            hint.ends_with(&format!("--allow-run {}", in_grant.display())),
            "{hint}"
        );
        program(&here.path().join("target/x"), "hidden-from-hints");
        let hint = hints(&[], here.path()).grant(&Denial::Program("hidden-from-hints".into()));
        assert_eq!(
            hint,
            "`hidden-from-hints` is not on the host's PATH: grant it by its absolute path, \
             --allow-run /PATH/TO/hidden-from-hints"
        );
    }

    #[test]
    fn a_component_not_granted_is_hinted_by_a_path_that_works_when_pasted() {
        let here = tempfile::tempdir().unwrap();
        let child = here.path().join("workers/child.wasm");
        std::fs::create_dir_all(child.parent().unwrap()).unwrap();
        std::fs::write(&child, b"\0asm").unwrap();
        let h = hints(&[], here.path());
        for asked in ["child.wasm", "./child.wasm", "lib/child.wasm"] {
            let hint = h.grant(&Denial::ForkComponent(asked.into()));
            assert_eq!(
                hint,
                format!("grant it with --allow-fork {}", child.display()),
                "{asked}"
            );
        }
        let hint = h.grant(&Denial::ForkComponent("other.wasm".into()));
        assert_eq!(
            hint,
            "grant it by its path, --allow-fork /PATH/TO/other.wasm"
        );
        let hint = h.grant(&Denial::ForkComponent("/abs/x.wasm".into()));
        assert_eq!(hint, "grant it with --allow-fork /abs/x.wasm");
    }
}
