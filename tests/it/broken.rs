//! The broken-project corpus: one minimal project per error code under
//! `tests/fixtures/broken/<CODE>_<what>/`, each with `case.json` naming the command and the
//! expected `CODE file:line`. Every case must exit 1, never panic, report the expected code at
//! the expected place, and render the same diagnostic as its snapshot.

use crate::common::*;
use serde_json::Value;

#[test]
fn every_broken_project_reports_its_error() {
    let root = fixtures().join("broken");
    let mut cases: Vec<_> =
        std::fs::read_dir(&root).expect("corpus").filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    assert!(cases.len() >= 40, "the corpus has {} cases; it must have at least 40", cases.len());
    let mut codes_seen = std::collections::BTreeSet::new();
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let spec: Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("case.json")).expect("case.json")).expect("case.json is JSON");
        let args: Vec<String> = spec["args"].as_array().expect("args").iter().map(|a| a.as_str().unwrap().to_string()).collect();
        let expect = spec["expect"].as_str().expect("expect");
        let (code, place) = expect.split_once(' ').expect("`CODE place`");
        assert!(name.starts_with(code), "{name}: directory must start with its code {code}");
        codes_seen.insert(code.to_string());

        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&case, tmp.path());
        std::fs::remove_file(tmp.path().join("case.json")).unwrap();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();

        // Human output.
        let out = run(tmp.path(), &argv);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: expected exit 1\nstderr:\n{err}");
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{name}: kiln panicked:\n{err}");
        let rendered = err.replace(&tmp.path().display().to_string(), "<project>");
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
        match place {
            "<cli>" => {}
            _ => {
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
    }
    // Every error code a user can trigger from a project has a case.
    for code in [
        "E101", "E102", "E103", "E104", "E105", "E106", "E107", "E109", "E110", "E111", "E113", "E114", "E115", "E201", "E202", "E203",
        "E204", "E205", "E206", "E207", "E208", "E209", "E210", "E301", "E302", "E303", "E304", "E305", "E306", "E401", "E402", "E501",
        "E502", "E503", "E504", "E505",
    ] {
        assert!(codes_seen.contains(code), "no broken project for {code}");
    }
}
