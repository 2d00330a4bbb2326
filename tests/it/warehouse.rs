//! The local warehouse never loses data (issue 16): any relation name stays inside it, readers
//! never delete, one writer at a time.

use crate::common::*;
use std::path::Path;

fn count(d: &Path, model: &str) -> String {
    let out = run(d, &["show", "--inline", &format!("select count(*) as n from {{{{ ref('{model}') }}}}"), "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{model}: {}", stderr(&out));
    stdout(&out)
}

/// Aliases, schemas and databases that look like paths (absolute, `..`, quotes, unicode, case,
/// very long) are relation names, stored inside the warehouse and read back; nothing is
/// written outside it, and a directory kiln did not make is left alone.
#[test]
fn relation_names_never_leave_the_warehouse() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("victim");
    std::fs::create_dir_all(target.join("v1")).unwrap();
    std::fs::write(target.join("v1/keep.txt"), "mine").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(
        d,
        "dbt_project.yml",
        "name: names\nconfig-version: 2\nmodels:\n  names:\n    +materialized: table\nseeds:\n  names:\n    +alias: '../../seed_escape'\n",
    );
    write(d, "seeds/s.csv", "id\n1\n");
    let abs = target.display().to_string();
    let long = "x".repeat(300);
    let cases = [
        ("abs_alias", format!("alias='{abs}'")),
        ("dotdot_alias", "alias='../../../../dotdot'".to_string()),
        ("abs_database", format!("database='{abs}'")),
        ("dotdot_schema", "schema='../../up'".to_string()),
        ("odd_alias", "alias='Ünïcode \"quoted\" .. / x'".to_string()),
        ("long_alias", format!("alias='{long}'")),
        ("case_alias", "alias='CaseMatters'".to_string()),
    ];
    for (name, config) in &cases {
        write(d, &format!("models/{name}.sql"), &format!("{{{{ config({config}) }}}}\nselect 1 as id\n"));
    }
    // A directory in the warehouse that kiln did not make, named as a relation would be.
    std::fs::create_dir_all(d.join(".kiln/warehouse/kiln/main/case_alias/v1")).unwrap();
    let out = run(d, &["build"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (name, _) in &cases {
        assert!(count(d, name).contains("\"n\":1"), "{name}");
    }
    assert!(count(d, "s").contains("\"n\":1"), "the seed");
    // Rebuilt: still readable, and nothing outside the warehouse changed.
    assert_eq!(run(d, &["build"]).status.code(), Some(0));
    assert!(count(d, "abs_alias").contains("\"n\":1"));
    assert_eq!(std::fs::read_to_string(target.join("v1/keep.txt")).unwrap(), "mine");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 1, "nothing was written into {abs}");
    assert!(!d.join("seed_escape").exists() && !d.parent().unwrap().join("seed_escape").exists());
    assert!(d.join(".kiln/warehouse/kiln/main/case_alias/v1").is_dir(), "a directory kiln did not make is left alone");
    let escaped =
        walkdir::WalkDir::new(d).into_iter().filter_map(Result::ok).filter(|e| e.path().ends_with("dotdot") || e.path().ends_with("up"));
    for e in escaped {
        assert!(e.path().starts_with(d.join(".kiln/warehouse")), "{} is outside the warehouse", e.path().display());
    }
}

/// A build while another process reads in a loop and a second build tries to start: readers
/// never fail or delete, the second writer says who holds the warehouse, nothing is lost.
#[test]
fn one_writer_many_readers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: conc\nconfig-version: 2\nmodels:\n  conc:\n    +materialized: table\n");
    let mut seed = String::from("id\n");
    for i in 0..200_000 {
        seed.push_str(&format!("{i}\n"));
    }
    write(d, "seeds/numbers.csv", &seed);
    for i in 0..12 {
        write(d, &format!("models/m{i}.sql"), &format!("select id, id * {i} as v from {{{{ ref('numbers') }}}}\n"));
    }
    assert_eq!(run(d, &["build"]).status.code(), Some(0));
    let mut builder =
        kiln(d).args(["build", "--full-refresh"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut reads = 0;
    let mut refused = false;
    while builder.try_wait().unwrap().is_none() {
        let out = run(d, &["show", "--inline", "select count(*) as n from {{ ref('m5') }}", "-o", "json"]);
        assert_eq!(out.status.code(), Some(0), "a reader failed during the build: {}", stderr(&out));
        assert!(stdout(&out).contains("\"n\":200000"), "{}", stdout(&out));
        reads += 1;
        if !refused {
            let second = kiln(d).args(["run", "-s", "m0"]).env("KILN_LOCK_WAIT", "0").output().unwrap();
            if second.status.code() == Some(1) {
                let err = stderr(&second);
                assert!(err.contains("error[E509]") && err.contains("kiln build") && err.contains("pid "), "{err}");
                refused = true;
            }
        }
    }
    assert!(builder.wait().unwrap().success(), "the build failed");
    assert!(reads > 0 && refused, "reads {reads}, refused {refused}: the build ended too soon to check");
    for i in 0..12 {
        assert!(count(d, &format!("m{i}")).contains("\"n\":200000"), "m{i}");
    }
    // After the build, a second writer starts at once.
    assert_eq!(kiln(d).args(["run", "-s", "m0"]).env("KILN_LOCK_WAIT", "0").output().unwrap().status.code(), Some(0));
}

/// Date arithmetic that overflows is a SQL error of that model (it used to panic kiln and hang
/// the build); the other models build and the run ends with its artifacts.
#[test]
fn date_overflow_fails_one_model_and_the_run_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: ovf\nconfig-version: 2\nmodels:\n  ovf:\n    +materialized: table\n");
    write(d, "models/bad.sql", "select dateadd('day', 9223372036854775807, cast('2024-01-01' as timestamp)) as t\n");
    write(d, "models/wrapped.sql", "select dateadd('month', -9223372036854775808, cast('2024-01-01' as timestamp)) as t\n");
    write(d, "models/good.sql", "select 1 as id\n");
    let out = run(d, &["run"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("internal error"), "{err}");
    assert_eq!(err.matches("result out of range").count(), 4, "both models, in the log and the recap: {err}");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("target/run_results.json")).unwrap()).unwrap();
    let status: Vec<(String, String)> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["unique_id"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().to_string()))
        .collect();
    assert!(
        status.contains(&("model.ovf.good".into(), "success".into())) && status.contains(&("model.ovf.bad".into(), "error".into())),
        "{status:?}"
    );
}

/// `kill -9` at many points of a build: afterwards every table is readable at a complete
/// version, and the next build (with a reader polling meanwhile) succeeds.
#[test]
fn killed_builds_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: kill\nconfig-version: 2\nmodels:\n  kill:\n    +materialized: table\n");
    let mut seed = String::from("id\n");
    for i in 0..50_000 {
        seed.push_str(&format!("{i}\n"));
    }
    write(d, "seeds/numbers.csv", &seed);
    let models = |round: u64| {
        for i in 0..6 {
            write(d, &format!("models/t{i}.sql"), &format!("select id, id * {round} as v from {{{{ ref('numbers') }}}}\n"));
        }
        write(d, "models/v0.sql", &format!("{{{{ config(materialized='view') }}}}\nselect id, {round} as r from {{{{ ref('t0') }}}}\n"));
    };
    models(0);
    assert_eq!(run(d, &["build"]).status.code(), Some(0));
    let all_readable = |when: &str| {
        for m in ["numbers", "t0", "t1", "t2", "t3", "t4", "t5", "v0"] {
            assert!(count(d, m).contains("\"n\":50000"), "{m} after {when}");
        }
    };
    for (round, delay) in [20u64, 60, 120, 200, 300, 450, 650, 900].into_iter().enumerate() {
        models(round as u64 + 1);
        let mut child = kiln(d)
            .args(["build", "--full-refresh"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        all_readable(&format!("a kill after {delay} ms"));
    }
    let mut builder = kiln(d).args(["build"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    while builder.try_wait().unwrap().is_none() {
        all_readable("reads during the next build");
    }
    assert!(builder.wait().unwrap().success());
    all_readable("the last build");
}

/// `kill -9` during snapshots: afterwards the snapshot table is readable and holds a complete
/// history (every run either recorded all its versions or none), and the next run goes on from
/// there.
#[test]
fn killed_snapshots_keep_their_history() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: ks\nconfig-version: 2\n");
    write(
        d,
        "snapshots/s.sql",
        "{% snapshot hist %}\n{{ config(target_schema='snaps', unique_key='id', strategy='check', check_cols='all') }}\nselect * from {{ ref('src') }}\n{% endsnapshot %}\n",
    );
    const ROWS: usize = 40_000;
    let source = |round: usize| {
        let mut seed = String::from("id,v\n");
        for i in 0..ROWS {
            seed.push_str(&format!("{i},{round}\n"));
        }
        write(d, "seeds/src.csv", &seed);
    };
    let history = || -> (usize, usize) {
        let sql = "select count(*) as n, count(case when dbt_valid_to is null then 1 end) as current from {{ ref('hist') }}";
        let out = run(d, &["show", "--inline", sql, "-o", "json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let row: serde_json::Value = serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
        (row["n"].as_u64().unwrap() as usize, row["current"].as_u64().unwrap() as usize)
    };
    source(0);
    assert_eq!(run(d, &["build"]).status.code(), Some(0));
    assert_eq!(history(), (ROWS, ROWS));
    for (round, delay) in [30u64, 90, 180, 300, 500].into_iter().enumerate() {
        source(round + 1);
        let mut child = kiln(d).arg("build").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let (all, current) = history();
        assert!(all % ROWS == 0 && current == ROWS, "after a kill at {delay} ms: {all} versions, {current} current");
    }
    let before = history().0;
    source(99);
    assert_eq!(run(d, &["build"]).status.code(), Some(0));
    assert_eq!(history(), (before + ROWS, ROWS), "the next run records one version of every row");
}
