//! The `git` commands `kiln deps` runs: resolve a revision to a commit (`ls-remote`), and check
//! out one commit into a directory without its history.
//!
//! Never interactive (`GIT_TERMINAL_PROMPT=0`): a URL that needs credentials fails at once in CI
//! instead of waiting for a password. Errors are messages for the caller to place.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where to fetch from: URLs as they are, a relative local path from the project root.
pub fn locate(url: &str, project_root: &Path) -> String {
    let is_url = url.contains("://") || (url.contains('@') && url.contains(':'));
    if is_url || Path::new(url).is_absolute() { url.to_string() } else { project_root.join(url).to_string_lossy().into_owned() }
}

fn git(cwd: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("git");
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out =
        cmd.args(args).env("LC_ALL", "C").env("GIT_TERMINAL_PROMPT", "0").stdin(Stdio::null()).output().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "git is not installed (or not on PATH); kiln runs `git` to fetch git packages".to_string(),
            _ => format!("cannot run git: {e}"),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join("; ");
        Err(if err.is_empty() { format!("`git {}` failed", args[0]) } else { err })
    }
}

pub fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit `revision` (a tag, a branch, a commit or `HEAD`) names in `url`. Tags win over
/// branches of the same name, as in dbt.
pub fn resolve(url: &str, revision: &str) -> Result<String, String> {
    if is_commit(revision) {
        return Ok(revision.to_ascii_lowercase());
    }
    let listing = git(None, &["ls-remote", url])?;
    let refs: Vec<(&str, &str)> = listing.lines().filter_map(|l| l.split_once('\t')).map(|(sha, r)| (r, sha)).collect();
    let find = |name: &str| refs.iter().find(|(r, _)| *r == name).map(|(_, sha)| sha.to_string());
    let wanted = if revision == "HEAD" {
        vec!["HEAD".to_string()]
    } else {
        vec![format!("refs/tags/{revision}^{{}}"), format!("refs/tags/{revision}"), format!("refs/heads/{revision}")]
    };
    if let Some(sha) = wanted.iter().find_map(|w| find(w)) {
        return Ok(sha);
    }
    let names =
        |prefix: &str| -> Vec<&str> { refs.iter().filter_map(|(r, _)| r.strip_prefix(prefix)).filter(|r| !r.ends_with("^{}")).collect() };
    let (tags, branches) = (names("refs/tags/"), names("refs/heads/"));
    let mut message = format!("revision `{revision}` is not a tag, branch or full commit of {url}");
    if revision.len() >= 7 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        message.push_str(" (a commit must be written in full, 40 characters)");
    }
    let list = |v: &[&str]| {
        if v.is_empty() { "none".to_string() } else { v.iter().take(12).map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ") }
    };
    Err(format!("{message}; tags: {}; branches: {}", list(&tags), list(&branches)))
}

/// Checks out `commit` of `url` into `dir` (created), without `.git`.
pub fn checkout(url: &str, commit: &str, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    git(Some(dir), &["init", "-q"])?;
    // One commit, no history; servers that refuse to serve a commit by id get a full fetch.
    if git(Some(dir), &["fetch", "-q", "--depth", "1", url, commit]).is_err() {
        git(Some(dir), &["fetch", "-q", url, "+refs/heads/*:refs/kiln/heads/*", "+refs/tags/*:refs/kiln/tags/*"])?;
    }
    git(Some(dir), &["-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit])
        .map_err(|_| format!("commit {commit} is not in {url}"))?;
    std::fs::remove_dir_all(dir.join(".git")).map_err(|e| format!("cannot remove {}/.git: {e}", dir.display()))
}

/// The package directory inside a checkout: its root, or `subdirectory`.
pub fn package_dir(checkout: &Path, subdirectory: Option<&str>) -> PathBuf {
    subdirectory.map_or_else(|| checkout.to_path_buf(), |s| checkout.join(s.trim_matches('/')))
}
