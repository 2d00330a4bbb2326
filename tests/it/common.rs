//! Helpers: run the real `kiln` binary on temporary copies of fixture projects.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `kiln` with a clean environment: no profiles dirs from the caller, HOME inside `dir`, no colour.
pub fn kiln(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.current_dir(dir)
        .env_remove("KILN_PROFILES_DIR")
        .env_remove("DBT_PROFILES_DIR")
        .env_remove("FORCE_COLOR")
        .env("HOME", dir.join(".home"))
        .env("NO_COLOR", "1");
    c
}

pub fn run(dir: &Path, args: &[&str]) -> Output {
    kiln(dir).args(args).output().expect("kiln runs")
}

/// Writes `text` to `path` under `d`, creating its directories.
pub fn write(d: &Path, path: &str, text: &str) {
    let p = d.join(path);
    std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

pub fn copy_dir(src: &Path, dst: &Path) {
    for entry in walkdir::WalkDir::new(src) {
        let entry = entry.expect("walk fixture");
        let rel = entry.path().strip_prefix(src).expect("inside fixture");
        let target = dst.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A temporary copy of `tests/fixtures/<rel>`.
pub fn temp_project(rel: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixtures().join(rel), tmp.path());
    tmp
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file under `dir`, sorted, as "---- path ----\ncontent".
pub fn dump_tree(dir: &Path) -> String {
    let mut files: Vec<PathBuf> =
        walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file()).map(|e| e.into_path()).collect();
    files.sort();
    let mut out = String::new();
    for f in files {
        let rel = f.strip_prefix(dir).expect("inside").to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        out.push_str(&format!("---- {rel} ----\n{}\n", text.trim_end()));
    }
    out
}

/// Sends SIGTERM to `child` after `delay`; its output, and how long it took to end after that.
pub fn terminate_after(child: std::process::Child, delay: std::time::Duration) -> (Output, std::time::Duration) {
    std::thread::sleep(delay);
    let sent = std::time::Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs").success());
    let out = child.wait_with_output().expect("kiln ends");
    (out, sent.elapsed())
}

/// The value of `var`, which names a peer a test needs (a server, an executable). Outside CI an
/// unset variable skips the test, saying so; in CI it fails the test: `.ci/run` sets them all.
pub fn peer(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(std::env::var_os("CI").is_none(), "{var} must be set in CI (see .ci/run): {what} needs it");
            eprintln!("{var} not set: skipping {what} outside CI");
            None
        }
    }
}

/// A value as text that compares across engines: numbers to 6 decimals, timestamps with a space.
pub fn canon(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Number(n) => format!("{:.6}", n.as_f64().unwrap_or(0.0)),
        Value::Null => "null".into(),
        Value::String(s) => {
            let b = s.as_bytes();
            if b.len() >= 19 && b[4] == b'-' && b[10] == b'T' && b[13] == b':' {
                format!("{} {}", &s[..10], &s[11..])
            } else if let Ok(f) = s.parse::<f64>()
                && s.contains('.')
            {
                format!("{f:.6}")
            } else {
                s.clone()
            }
        }
        other => other.to_string(),
    }
}

/// Rows of `select * from relation` on `engine` as sorted canonical lines.
pub fn engine_rows(engine: &dyn kiln::engine::Engine, relation: &str) -> Vec<String> {
    let t = engine.query(&format!("select * from {relation}"), None).unwrap_or_else(|e| panic!("select from {relation}: {e}"));
    canonical_rows(&t)
}

/// A query's rows as sorted canonical lines.
pub fn canonical_rows(t: &kiln::engine::QueryTable) -> Vec<String> {
    let mut rows: Vec<String> = t.rows.iter().map(|r| r.iter().map(canon).collect::<Vec<_>>().join("|")).collect();
    rows.sort();
    rows
}

/// (name, schema, alias) of every enabled model and seed in the manifest of the last build.
pub fn built_relations(dir: &Path) -> Vec<(String, String, String)> {
    use serde_json::Value;
    // The example project writes to `target/kiln` (its `target-path`), fixtures to `target`.
    let path = ["target/kiln/manifest.json", "target/manifest.json"].iter().map(|p| dir.join(p)).find(|p| p.exists()).expect("a manifest");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out: Vec<(String, String, String)> = manifest["nodes"]
        .as_object()
        .unwrap()
        .values()
        .filter(|n| (n["resource_type"] == "model" || n["resource_type"] == "seed") && n["config"]["materialized"] != "ephemeral")
        .map(|n| {
            let s = |k: &str| n[k].as_str().unwrap().to_string();
            (s("name"), s("schema"), s("alias"))
        })
        .collect();
    out.sort();
    out
}

/// Rows of `relation` in the project's default (DataFusion) warehouse, as sorted canonical
/// lines; read through `kiln show`, which registers external sources.
pub fn datafusion_rows(dir: &Path, relation: &str) -> Vec<String> {
    let out = run(dir, &["show", "--inline", &format!("select * from {relation}"), "--limit", "10000000", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{relation}: {}", stderr(&out));
    shown_rows(&out, canon)
}

/// The rows `kiln show -o json` printed, each value written by `canon`, as sorted lines.
pub fn shown_rows(out: &Output, canon: fn(&serde_json::Value) -> String) -> Vec<String> {
    let mut rows: Vec<String> = stdout(out)
        .lines()
        .map(|l| {
            let row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            row.values().map(canon).collect::<Vec<_>>().join("|")
        })
        .collect();
    rows.sort();
    rows
}
