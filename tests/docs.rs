//! The docs as a reader follows them: every relative link in README.md,
//! ROADMAP.md, benches/RESULTS.md, guest-libs/README.md and docs/ leads to
//! a file that exists and, with a `#fragment`, to a heading of it (GitHub's
//! anchors). No wasm, no process: it reads files.

mod common;

use common::repo;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The Markdown files a reader starts from, and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = ["README.md", "ROADMAP.md", "benches/RESULTS.md"]
        .iter()
        .chain(&["guest-libs/README.md"])
        .map(|p| repo().join(p))
        .filter(|p| p.exists())
        .collect();
    let mut dirs = vec![repo().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                pages.push(path);
            }
        }
    }
    pages
}

/// The targets of the inline links `[text](target)` of `markdown`, outside
/// code blocks and code spans.
fn links(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans are not links.
        let text: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].trim().to_owned());
            rest = &after[end..];
        }
    }
    found
}

/// GitHub's anchor of each heading of `markdown`.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let Some(heading) = (!fenced)
            .then(|| line.trim_start_matches('#'))
            .filter(|h| line.starts_with('#') && h.starts_with(' '))
        else {
            continue;
        };
        let slug: String = (heading.trim().to_lowercase().chars())
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut anchor = slug.clone();
        let mut n = 1;
        while !seen.insert(anchor.clone()) {
            anchor = format!("{slug}-{n}");
            n += 1;
        }
    }
    seen
}

/// Why `target`, linked from `page`, leads nowhere; `None` if it leads
/// somewhere.
fn broken(page: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
    let file = match file {
        "" => page.to_owned(),
        file => page.parent().unwrap().join(file),
    };
    if !file.exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    if fragment.is_empty() || file.extension().is_none_or(|e| e != "md") {
        return None;
    }
    let headings = anchors(&std::fs::read_to_string(&file).unwrap());
    (!headings.contains(fragment)).then(|| format!("{} has no heading #{fragment}", file.display()))
}

#[test]
fn every_relative_link_of_the_docs_leads_to_a_file_and_heading_that_exist() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for page in pages() {
        let markdown = std::fs::read_to_string(&page).unwrap();
        for target in links(&markdown) {
            checked += 1;
            if let Some(why) = broken(&page, &target) {
                problems.push(format!("{}: ({target}): {why}", page.display()));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the parser right?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn anchors_are_githubs() {
    let page = "# The launcher of a worker's children\n## Three machines (M1, M2)\n## A\n## A\n";
    let want = [
        "the-launcher-of-a-workers-children",
        "three-machines-m1-m2",
        "a",
        "a-1",
    ];
    assert_eq!(anchors(page), want.iter().map(|a| a.to_string()).collect());
}

/// The lines of `markdown`, each with the lines its trailing `\\`
/// continues joined to it, as a shell reads them.
fn shell_lines(markdown: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut open: Option<String> = None;
    for line in markdown.lines() {
        let joined = match open.take() {
            Some(head) => format!("{head} {}", line.trim()),
            None => line.trim().to_owned(),
        };
        match joined.strip_suffix('\\') {
            Some(head) => open = Some(head.trim_end().to_owned()),
            None => lines.push(joined),
        }
    }
    lines
}

/// Each `cargo run --release -- run …` command of the README and of the
/// pages of docs/, as a newcomer pastes it (continuation lines joined),
/// run with this build's `wasmproc` from the repository's root (the
/// guests it names under `guest-examples/target/components/` are the
/// ones the tests build): each must succeed.
#[test]
fn every_run_command_of_the_readme_and_docs_succeeds_as_pasted() {
    const CARGO_RUN: &str = "cargo run --release -- ";
    let built = format!("{}/", common::guests_dir().display());
    let mut commands = Vec::new();
    for page in pages().iter().filter(|p| !p.ends_with("RESULTS.md")) {
        let text = std::fs::read_to_string(page).unwrap();
        let page = page
            .strip_prefix(repo())
            .unwrap_or(page)
            .display()
            .to_string();
        (shell_lines(&text).iter())
            .filter_map(|l| l.strip_prefix(CARGO_RUN))
            .for_each(|command| commands.push((page.clone(), command.to_owned())));
    }
    assert!(commands.len() >= 9, "{commands:?}");
    for (page, command) in commands {
        let args: Vec<String> = (command.split_whitespace())
            .map(|a| a.replace("guest-examples/target/components/", &built))
            .collect();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmproc"))
            .args(&args)
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{page}: `wasmproc {command}`: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn continued_shell_lines_are_read_as_one() {
    let text = "a \\\n    b \\\n  c\nd\n";
    assert_eq!(shell_lines(text), ["a b c", "d"]);
}
