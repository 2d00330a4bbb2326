//! Command behaviour: selection, init, clean, deps, debug, secrets, vars, exit codes.

use crate::common::*;

fn ls(dir: &std::path::Path, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["ls", "--profiles-dir", "profiles", "-o", "name"];
    argv.extend_from_slice(args);
    let out = run(dir, &argv);
    assert_eq!(out.status.code(), Some(0), "ls {args:?} failed:\n{}", stderr(&out));
    stdout(&out).lines().map(str::to_string).collect()
}

#[test]
fn selection_grammar() {
    let tmp = temp_project("projects/shop");
    let d = tmp.path();
    let models = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--resource-type", "model"]);
        ls(d, &a)
    };
    assert_eq!(models(&["-s", "+orders"]), ["orders", "stg_orders", "stg_payments"]);
    assert_eq!(models(&["-s", "stg_orders+"]), ["customers", "orders", "stg_orders"]);
    assert_eq!(models(&["-s", "1+customers"]), ["customers", "stg_customers", "stg_orders", "stg_payments"]);
    assert_eq!(models(&["-s", "tag:finance"]), ["orders"]);
    assert_eq!(models(&["-s", "path:models/staging"]), ["stg_customers", "stg_orders", "stg_payments"]);
    assert_eq!(models(&["-s", "config.materialized:table"]), ["customers", "orders"]);
    assert_eq!(models(&["-s", "staging"]), ["stg_customers", "stg_orders", "stg_payments"]);
    assert_eq!(models(&["-s", "stg_*"]), ["stg_customers", "stg_orders", "stg_payments"]);
    // Comma = intersection, space = union, --exclude.
    assert_eq!(models(&["-s", "tag:staging,stg_p*"]), ["stg_payments"]);
    assert_eq!(models(&["-s", "stg_orders stg_customers"]), ["stg_customers", "stg_orders"]);
    assert_eq!(models(&["-s", "+customers", "--exclude", "stg_payments"]), ["customers", "stg_customers", "stg_orders"]);
    // @: descendants and all their ancestors.
    // (the relationships test on orders refers to customers, so orders is an ancestor of a descendant, as in dbt)
    assert_eq!(models(&["-s", "@stg_customers"]), ["customers", "orders", "stg_customers", "stg_orders", "stg_payments"]);
    // Seeds, and tests selected with their models (eager).
    assert_eq!(ls(d, &["-s", "resource_type:seed", "--resource-type", "seed"]), ["raw_customers", "raw_orders", "raw_payments"]);
    assert_eq!(ls(d, &["-s", "raw_payments", "--resource-type", "test"]), ["not_null_raw_payments_id", "unique_raw_payments_id"]);
    let tests = ls(d, &["-s", "stg_orders", "--resource-type", "test"]);
    assert_eq!(tests.len(), 3, "{tests:?}");
    assert!(ls(d, &["-s", "test_type:singular"]).contains(&"assert_total_payment_amount_is_positive".to_string()));
    assert_eq!(ls(d, &["-s", "test_name:relationships"]).len(), 1);
    assert_eq!(ls(d, &["-s", "file:orders.sql", "--resource-type", "model"]), ["orders"]);
}

#[test]
fn yaml_selectors_and_sources() {
    let tmp = temp_project("projects/events");
    let d = tmp.path();
    let out = run(d, &["ls", "--selector", "marts_only", "-o", "name"]);
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), ["activity_dashboard", "counts_purchases", "user_activity"]);
    let out = run(d, &["ls", "-s", "source:raw", "-o", "selector"]);
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert!(lines.contains(&"source:events.raw.events".to_string()), "{lines:?}");
    assert!(lines.contains(&"source:events.raw.users".to_string()));
    let out = run(d, &["ls", "-s", "source:raw.users+", "--resource-type", "model", "exposure", "-o", "name"]);
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), ["activity_dashboard", "stg_users", "user_activity"]);
}

#[test]
fn init_writes_a_project_that_compiles() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["init", "acme"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let project = tmp.path().join("acme");
    let yml = std::fs::read_to_string(project.join("dbt_project.yml")).unwrap();
    assert!(yml.starts_with("name: acme\n"));
    let out = run(&project, &["compile"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sql = std::fs::read_to_string(project.join("target/compiled/acme/models/marts/customers.sql")).unwrap();
    assert!(sql.contains("from \"kiln\".\"main\".\"stg_customers\" as c"), "{sql}");
    // A second init into the same directory refuses.
    let out = run(tmp.path(), &["init", "acme"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(tmp.path(), &["init", "bad-name"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn clean_removes_targets_but_never_the_warehouse() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), &["init", "p"]);
    let p = tmp.path().join("p");
    assert_eq!(run(&p, &["compile"]).status.code(), Some(0));
    std::fs::create_dir_all(p.join(".kiln/warehouse")).unwrap();
    std::fs::write(p.join(".kiln/warehouse/keep"), "data").unwrap();
    let out = run(&p, &["clean"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!p.join("target").exists());
    assert!(p.join(".kiln/warehouse/keep").exists());
    // A clean-target pointing at the warehouse or outside the project is refused.
    let yml = std::fs::read_to_string(p.join("dbt_project.yml"))
        .unwrap()
        .replace("clean-targets: [\"target\", \"dbt_packages\"]", "clean-targets: [\".kiln\", \"..\"]");
    std::fs::write(p.join("dbt_project.yml"), yml).unwrap();
    let out = run(&p, &["clean"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(p.join(".kiln/warehouse/keep").exists());
    assert!(tmp.path().exists());
    // A dbt-duckdb target's warehouse (`path: dev.duckdb` is the directory `dev.duckdb.kiln`),
    // and that of a target other than the one cleaning, are never cleaned either.
    std::fs::write(
        p.join("profiles.yml"),
        "p:
  target: duck
  outputs:
    duck:
      type: duckdb
      path: dev.duckdb
    other:
      type: duckdb
      path: other.duckdb
",
    )
    .unwrap();
    for target in ["duck", "other"] {
        assert_eq!(kiln(&p).args(["seed", "--profiles-dir", ".", "-t", target]).output().unwrap().status.code(), Some(0));
    }
    let yml = std::fs::read_to_string(p.join("dbt_project.yml"))
        .unwrap()
        .replace("clean-targets: [\".kiln\", \"..\"]", "clean-targets: [\"dev.duckdb.kiln\", \"other.duckdb.kiln\"]");
    std::fs::write(p.join("dbt_project.yml"), yml).unwrap();
    let out = kiln(&p).args(["clean", "--profiles-dir", ".", "-t", "duck"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(p.join("dev.duckdb.kiln").is_dir() && p.join("other.duckdb.kiln").is_dir(), "{}", stderr(&out));
}

#[test]
fn deps_installs_local_packages() {
    let tmp = temp_project("projects/shop");
    let d = tmp.path();
    let out = run(d, &["deps", "--profiles-dir", "profiles"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(d.join("dbt_packages/dbt_utils/dbt_project.yml").exists());
    // The installed copy and the declared local path are the same package: still compiles.
    let out = run(d, &["compile", "--profiles-dir", "profiles"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn debug_masks_secrets() {
    let tmp = temp_project("projects/shop");
    let out = kiln(tmp.path())
        .args(["debug", "--profiles-dir", "profiles", "-t", "pg"])
        .env("SHOP_PG_PASSWORD", "s3cr3t-value")
        .output()
        .unwrap();
    let text = stdout(&out) + &stderr(&out);
    assert!(!text.contains("s3cr3t-value"), "{text}");
    assert!(text.contains("password: *****"), "{text}");
    assert!(text.contains("adapter type: postgres"));
    // The fixture's server (user `shop` on 127.0.0.1:5432) does not exist here: the check fails,
    // says why, and exits 1, as `dbt debug` does.
    assert!(text.contains("connection:   FAILED: target `pg`: "), "{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
}

#[test]
fn secret_env_vars_never_reach_artifacts() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), &["init", "p"]);
    let p = tmp.path().join("p");
    // In a model's SQL a secret is refused, as dbt does, at its file and line: it would end up in
    // compiled files, artifacts and the warehouse's catalog.
    std::fs::write(p.join("models/secret.sql"), "select\n  '{{ env_var(\"DBT_ENV_SECRET_TOKEN\") }}' as token\n").unwrap();
    let out = kiln(&p).args(["compile"]).env("DBT_ENV_SECRET_TOKEN", "tok-123456").output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error[E211]") && err.contains("models/secret.sql:2"), "{err}");
    assert!(!err.contains("tok-123456"), "{err}");
    // In a hook it may be read, and is masked in every output, also with quotes, backslashes and
    // unicode that JSON escapes.
    let secret = "tok\"en\\ü-9876";
    std::fs::write(
        p.join("models/secret.sql"),
        "{{ config(post_hook=\"select '{{ env_var('DBT_ENV_SECRET_TOKEN') }}' from no_such_table\") }}\nselect 1 as id\n",
    )
    .unwrap();
    for format in ["text", "json"] {
        let out = kiln(&p).args(["run", "-s", "secret", "--log-format", format]).env("DBT_ENV_SECRET_TOKEN", secret).output().unwrap();
        let text = stdout(&out) + &stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{format}: the hook fails: {text}");
        assert!(text.contains("no_such_table") && text.contains("*****"), "{format}: {text}");
        assert!(!text.contains("9876"), "{format}: the secret leaked: {text}");
        let artifacts = std::fs::read_to_string(p.join("target/run_results.json")).unwrap();
        assert!(!artifacts.contains("9876"), "{format}: run_results.json");
    }
    // A secret a hook stored as data is masked when shown, as text and as JSON.
    std::fs::write(
        p.join("models/secret.sql"),
        "{{ config(post_hook=\"create table if not exists main.kept as select '{{ env_var('DBT_ENV_SECRET_TOKEN') }}' as s\") }}\nselect 1 as id\n",
    )
    .unwrap();
    assert_eq!(kiln(&p).args(["run", "-s", "secret"]).env("DBT_ENV_SECRET_TOKEN", secret).output().unwrap().status.code(), Some(0));
    for format in ["table", "json"] {
        let out = kiln(&p)
            .args(["show", "--inline", "select s from main.kept", "-o", format])
            .env("DBT_ENV_SECRET_TOKEN", secret)
            .output()
            .unwrap();
        let text = stdout(&out);
        assert!(text.contains("*****") && !text.contains("9876"), "{format}: {text}{}", stderr(&out));
    }
    // Nothing kiln wrote holds it: compiled and run SQL, artifacts, the warehouse's files.
    for entry in walkdir::WalkDir::new(&p).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file()) {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "parquet") {
            continue; // table data: the secret is the value the user stored
        }
        let bytes = std::fs::read(path).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("9876"), "{} holds the secret", path.display());
    }
}

#[test]
fn vars_from_the_command_line_override_the_project() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), &["init", "p"]);
    let p = tmp.path().join("p");
    let out = run(&p, &["compile", "-s", "stg_orders", "--vars", "{min_order_total_cents: 500}"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("where amount_cents >= 500"), "{}", stdout(&out));
}

#[test]
fn inline_sql_and_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), &["init", "p"]);
    let p = tmp.path().join("p");
    let out = run(&p, &["compile", "--inline", "select count(*) from {{ ref('customers') }}"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "select count(*) from \"kiln\".\"main\".\"customers\"");
    assert_eq!(run(&p, &["compile", "--no-such-flag"]).status.code(), Some(2));
    assert_eq!(run(&p, &["frobnicate"]).status.code(), Some(2));
}

#[test]
fn parse_writes_manifest_and_reports_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), &["init", "p"]);
    let p = tmp.path().join("p");
    std::fs::write(p.join("models/extra.yml"), "version: 2\nmodels:\n  - name: not_a_model\n").unwrap();
    let out = run(&p, &["parse"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning[E108]"), "{}", stderr(&out));
    assert!(p.join("target/manifest.json").exists());
}

/// A `query-comment` kiln does not add is reported at its line; `query-comment: null` (dbt's
/// way to switch it off) is not.
#[test]
fn query_comment_is_reported_as_not_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "models/m.sql", "select 1 as id\n");
    write(
        d,
        "dbt_project.yml",
        "name: qc\nconfig-version: 2\nquery-comment:\n  comment: \"run by {{ target.name }}\"\n  job-label: true\n",
    );
    let out = run(d, &["parse"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning[E118]: `query-comment` is not applied"), "{}", stderr(&out));
    assert!(stderr(&out).contains("dbt_project.yml:3:1"), "{}", stderr(&out));
    write(d, "dbt_project.yml", "name: qc\nconfig-version: 2\nquery-comment: null\n");
    assert!(!stderr(&run(d, &["parse"])).contains("query-comment"));
}
