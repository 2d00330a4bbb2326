//! The broken-project corpus: one minimal project per error code under
//! `tests/fixtures/broken/<CODE>_<what>/`, each with `case.json` naming the command and the
//! expected `CODE file:line`. Every case must exit 1, never panic, report the expected code at
//! the expected place, and render the same diagnostic as its snapshot.

use crate::common::*;
use serde_json::Value;

/// Codes without a broken project, and why.
const NO_FIXTURE: &[(&str, &str)] = &[
    ("E100", "an unreadable file needs permissions a test cannot rely on (root reads everything)"),
    ("E108", "a warning"),
    ("E112", "seed header errors: tests/it/hostile.rs"),
    ("E116", "a warning; its node fails with E605 (fixture E605_unknown_materialization)"),
    ("E117", "a warning: tests/it/fidelity.rs"),
    ("E118", "a warning: tests/it/fidelity.rs"),
    ("E307", "a test whose model is disabled: tests/it/quality.rs"),
    ("E403", "a warning of `kiln compile`"),
    ("E507", "a warning"),
    ("E508", "a connection failure: tests/it/postgres.rs, against a real server"),
    ("E510", "a warning of `kiln deps`: tests/it/packages.rs"),
    ("E509", "a busy warehouse needs a second process: tests/it/warehouse.rs"),
    ("E211", "secrets: tests/it/cli.rs"),
    ("E603", "a lost connection: tests/it/postgres.rs stops a real server"),
    ("E604", "an interrupted run: tests/it/warehouse.rs sends SIGTERM"),
    ("E607", "unit test errors: tests/it/quality.rs"),
    ("E703", "a warning of `static_analysis: strict`: tests/it/analysis.rs"),
    ("E900", "a bug in kiln: no project triggers it"),
];

#[test]
fn every_broken_project_reports_its_error() {
    let root = fixtures().join("broken");
    let mut cases: Vec<_> =
        std::fs::read_dir(&root).expect("corpus").filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    let mut codes_seen = std::collections::BTreeSet::new();
    let mut failed = Vec::new();
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        codes_seen.insert(name.split('_').next().unwrap_or_default().to_string());
        // One failing case does not hide the others: each is reported, then the test fails.
        if let Err(panic) = std::panic::catch_unwind(|| check_case(&case, &name)) {
            let why = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            failed.push(format!("{name}: {}", why.unwrap_or_default().lines().next().unwrap_or_default()));
        }
    }
    // Every code has a case, or a reason above.
    for code in kiln::diagnostics::Code::ALL {
        let code = code.as_str();
        if !codes_seen.contains(code) && !NO_FIXTURE.iter().any(|(c, _)| *c == code) {
            failed.push(format!("{code}: no broken project under tests/fixtures/broken/ (or a reason in NO_FIXTURE)"));
        }
    }
    assert!(failed.is_empty(), "{} broken-project case(s) failed:\n{}", failed.len(), failed.join("\n"));
}

fn check_case(case: &std::path::Path, name: &str) {
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("case.json")).expect("case.json")).expect("case.json is JSON");
    let args: Vec<String> = spec["args"].as_array().expect("args").iter().map(|a| a.as_str().unwrap().to_string()).collect();
    let expect = spec["expect"].as_str().expect("expect");
    let (code, place) = expect.split_once(' ').expect("`CODE place`");
    assert!(name.starts_with(code), "{name}: directory must start with its code {code}");

    let tmp = tempfile::tempdir().unwrap();
    copy_dir(case, tmp.path());
    std::fs::remove_file(tmp.path().join("case.json")).unwrap();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();

    // Human output.
    let out = run(tmp.path(), &argv);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{name}: expected exit 1\nstderr:\n{err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{name}: kiln panicked:\n{err}");
    let rendered = normalize(&err.replace(&tmp.path().display().to_string(), "<project>"));
    insta::assert_snapshot!(format!("broken__{name}"), rendered);

    // JSON output names the same code and place.
    let mut json_args = argv.clone();
    json_args.extend(["--log-format", "json"]);
    let out = run(tmp.path(), &json_args);
    assert_eq!(out.status.code(), Some(1), "{name}: --log-format json must exit 1 too");
    let diags: Vec<Value> =
        stdout(&out).lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v.get("code").is_some()).collect();
    let hit = diags
        .iter()
        .find(|d| d["code"] == code)
        .unwrap_or_else(|| panic!("{name}: no {code} diagnostic in JSON output:\n{}", stdout(&out)));
    let file = hit["file"].as_str();
    if place != "<cli>" {
        let (want_file, want_line) = match place.rsplit_once(':') {
            Some((f, l)) => (f, Some(l.parse::<u64>().expect("line"))),
            None => (place, None),
        };
        assert_eq!(file, Some(want_file), "{name}: wrong file in {hit}");
        if let Some(line) = want_line {
            assert_eq!(hit["line"].as_u64(), Some(line), "{name}: wrong line in {hit}");
        }
    }
}

/// Run-time output holds timings and a progress count that vary: blanked for the snapshot.
fn normalize(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let progress = l.split_whitespace().next().is_some_and(|w| w.parse::<u32>().is_ok()) && l.contains(" of ");
            !progress && !l.starts_with("Running with kiln") && !l.starts_with("Finished in")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
