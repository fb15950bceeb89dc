//! The man page the Debian package installs (deploy/man/wirespeed.8) says
//! what the binary does: every option `wirespeed --help` lists and every
//! environment variable the sources read is described there, so a new
//! option cannot ship undocumented.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const WIRESPEED: &str = env!("CARGO_BIN_EXE_wirespeed");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The page with roff's escaped hyphens made plain.
fn page() -> String {
    let p = repo().join("deploy/man/wirespeed.8");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .replace("\\-", "-")
}

/// Long and short options in the usage text, e.g. `--metrics`, `-f`.
fn options(usage: &str) -> BTreeSet<String> {
    usage
        .split(|c: char| c.is_whitespace() || matches!(c, '[' | ']' | '|' | ','))
        .filter(|w| w.starts_with('-') && w.len() > 1)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .collect()
}

/// Names passed to `std::env::var`/`var_os` in the non-test sources.
fn env_vars(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "tests") {
                env_vars(&path, out);
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs")
            || path.file_name().is_some_and(|n| n == "tests.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Everything after a `#[cfg(test)]` is test code.
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        for pat in ["env::var(\"", "env::var_os(\""] {
            for piece in text.split(pat).skip(1) {
                if let Some(name) = piece.split('"').next() {
                    out.insert(name.to_string());
                }
            }
        }
    }
}

/// Whether `word` stands in `text` on its own (so `-f` is not found inside
/// `--foreground`).
fn mentions(text: &str, word: &str) -> bool {
    let part = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
    text.match_indices(word).any(|(i, _)| {
        !part(text[..i].chars().next_back()) && !part(text[i + word.len()..].chars().next())
    })
}

#[test]
fn every_option_of_help_is_in_the_man_page() {
    let out = Command::new(WIRESPEED).arg("--help").output().unwrap();
    assert!(out.status.success());
    let usage = String::from_utf8(out.stdout).unwrap();
    let opts = options(&usage);
    assert!(
        opts.contains("--metrics") && opts.contains("-f"),
        "usage not parsed: {opts:?}"
    );
    let page = page();
    let missing: Vec<_> = opts.iter().filter(|o| !mentions(&page, o)).collect();
    assert!(
        missing.is_empty(),
        "options missing from wirespeed.8: {missing:?}"
    );
}

#[test]
fn every_environment_variable_read_is_in_the_man_page() {
    let mut vars = BTreeSet::new();
    for crate_dir in ["control/src", "dataplane/src"] {
        env_vars(&repo().join(crate_dir), &mut vars);
    }
    assert!(
        vars.contains("WIRESPEED_METRICS") && vars.contains("WIRESPEED_XDP_IFACES"),
        "sources not scanned: {vars:?}"
    );
    let page = page();
    let missing: Vec<_> = vars
        .iter()
        .filter(|v| !page.contains(&format!(".B {v}\n")))
        .collect();
    assert!(
        missing.is_empty(),
        "environment variables missing from wirespeed.8's ENVIRONMENT: {missing:?}"
    );
}
