//! Hostile input: each case ends with a diagnostic naming the file and line, within bounded
//! time and memory, and never aborts. The bounds are loose (10 s, 1 GB): they catch hangs and
//! blowups, not speed.

use crate::common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Runs kiln in `d`: exit code, stderr, wall time and peak RSS (from `wait4`).
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives its resource usage
fn bounded(d: &Path, args: &[&str]) -> (Option<i32>, String, Duration, u64) {
    let started = Instant::now();
    let child = kiln(d).args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let reader = std::thread::spawn(move || {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.expect("stderr"), &mut err).unwrap();
        err
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    let err = reader.join().unwrap();
    let code = if libc::WIFEXITED(status) { Some(libc::WEXITSTATUS(status)) } else { None };
    (code, err, started.elapsed(), usage.ru_maxrss as u64 * 1024)
}

fn assert_bounded(what: &str, d: &Path, args: &[&str], expect: &[&str]) {
    let (code, err, took, rss) = bounded(d, args);
    let shown = &err[..err.floor_char_boundary(4000)];
    assert_eq!(code, Some(1), "{what}: exit {code:?} (a signal means kiln aborted)\n{shown}");
    for e in expect {
        assert!(err.contains(e), "{what}: `{e}` not in\n{shown}");
    }
    assert!(err.lines().all(|l| l.chars().count() <= 300), "{what}: a line of the diagnostic is not clipped\n{shown}");
    assert!(took < Duration::from_secs(10), "{what}: took {took:?}");
    assert!(rss < 1 << 30, "{what}: peak RSS {} MB", rss >> 20);
}

#[test]
fn hostile_projects_fail_cleanly() {
    // Macros that call each other without end.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: h\nconfig-version: 2\n");
    write(d, "macros/loop.sql", "{% macro a(n) %}{{ b(n + 1) }}{% endmacro %}\n{% macro b(n) %}{{ a(n + 1) }}{% endmacro %}\n");
    write(d, "models/m.sql", "select {{ a(0) }} as x\n");
    assert_bounded("recursive macros", d, &["compile"], &["error[E206]", "nest deeper", "macros/loop.sql:"]);

    // A YAML alias bomb of a few hundred bytes.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: h\nconfig-version: 2\n");
    write(d, "models/m.sql", "select 1 as x\n");
    let mut bomb = String::from("version: 2\nmodels:\n  - name: m\n    meta:\n      a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (name, prev) in ["b", "c", "d", "e", "f", "g", "h", "i", "j"].iter().zip(["a", "b", "c", "d", "e", "f", "g", "h", "i"]) {
        bomb.push_str(&format!(
            "      {name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
    }
    write(d, "models/bomb.yml", &bomb);
    assert_bounded("YAML alias bomb", d, &["parse"], &["error[E101]", "alias bomb", "models/bomb.yml:"]);
}

/// Seeds with a broken header: a duplicate or unnamed column is named, and a header of a
/// million columns fails at once instead of never finishing.
#[test]
fn seed_headers_are_checked() {
    let cases: [(&str, String, &str); 3] = [
        ("duplicate", "id,id,name\n1,2,a\n".into(), "names column `id` twice (columns 1 and 2)"),
        ("unnamed", "id,,name\n1,2,a\n".into(), "column 2 of the seed's header has no name"),
        ("wide", format!("{}\n", (0..1_000_000).map(|i| format!("c{i}")).collect::<Vec<_>>().join(",")), "kiln loads at most 10000"),
    ];
    for (what, csv, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "dbt_project.yml", "name: h\nconfig-version: 2\n");
        write(d, "seeds/s.csv", &csv);
        assert_bounded(what, d, &["seed"], &[expected, "seeds/s.csv"]);
    }
}

/// A model of only comments fails when it runs with the compile-time diagnostic (E402) and its
/// file, not with an engine error about an empty statement; the others build.
#[test]
fn an_empty_model_fails_with_e402_at_run_time() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: h\nconfig-version: 2\n");
    write(d, "models/empty.sql", "-- nothing here\n/* at all */\n");
    write(d, "models/ok.sql", "select 1 as id\n");
    let (code, err, _, _) = bounded(d, &["run"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("error[E402]: model `empty` compiles to empty SQL\n --> models/empty.sql"), "{err}");
    assert!(err.contains("PASS=1"), "{err}");
}

/// A test on a column the model lacks names the properties file and line of the test.
#[test]
fn a_test_on_a_missing_column_names_its_yaml_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: h\nconfig-version: 2\n");
    write(d, "models/m.sql", "select 1 as id\n");
    write(d, "models/s.yml", "version: 2\nmodels:\n  - name: m\n    columns:\n      - name: nope\n        data_tests: [not_null]\n");
    let (code, err, _, _) = bounded(d, &["build"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("No field named nope") && err.contains("--> models/s.yml:6"), "{err}");
}

/// A bad row deep in a seed is reported at its line in the file (the CSV reader counts lines
/// within the chunk it reads).
#[test]
fn a_bad_seed_row_is_reported_at_its_file_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: h\nconfig-version: 2\n");
    let mut csv = String::from("id,amount\n");
    for i in 1..=100_500 {
        csv.push_str(&format!("{i},{i}\n"));
    }
    csv.push_str("100501,1,extra\n");
    write(d, "seeds/s.csv", &csv);
    let (code, err, _, _) = bounded(d, &["seed"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("line 100502 of the seed") && !err.contains("for line "), "{err}");
}

/// A SQL error at the end of a statement (no position from the parser) still points into the
/// compiled SQL and names the model's file.
#[test]
fn a_sql_error_at_the_end_has_a_snippet() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: h\nconfig-version: 2\n");
    write(d, "models/m.sql", "select 1 as x\nfrom\n");
    let (code, err, _, _) = bounded(d, &["run"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--> models/m.sql (compiled SQL, line 2, column 5") && err.contains("2 | from"), "{err}");
}

/// A select list longer than the embedded engine plans (10,000 items) is refused at once with
/// the line of its `select`, in a view, a table or a CTE.
#[test]
fn a_too_wide_select_is_refused_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let columns = (0..20_000).map(|i| format!("{i} as c{i}")).collect::<Vec<_>>().join(", ");
    write(d, "dbt_project.yml", "name: h\nconfig-version: 2\n");
    write(d, "models/wide.sql", &format!("-- 20,000 columns\nselect {columns}\n"));
    write(d, "models/cte.sql", &format!("{{{{ config(materialized='table') }}}}\nwith w as (\n  select {columns}\n)\nselect c0 from w\n"));
    assert_bounded(
        "20,000-column models",
        d,
        &["run"],
        &[
            "this select lists 20000 columns",
            "--> models/wide.sql (compiled SQL, line 2, column 1",
            "--> models/cte.sql (compiled SQL, line 3, column 3",
            "3 |   select 0 as c0, 1 as c1,",
        ],
    );
}
