//! Static analysis (`kiln compile`): no findings on projects that build, the inferred columns
//! equal what the embedded engine builds, and strict mode names what it cannot type. The
//! wrong models are in the broken-project corpus (`E701_*`, `E702_*`).

use crate::common::*;

/// The example project and the fixture projects that build on the embedded engine.
fn buildable() -> Vec<tempfile::TempDir> {
    let mut projects = vec![example_project()];
    for f in ["shop", "quality", "fidelity", "pgshop", "xdb", "bqpart", "lineage"] {
        projects.push(temp_project(&format!("projects/{f}")));
    }
    projects
}

fn example_project() -> tempfile::TempDir {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    for part in ["dbt_project.yml", "models", "seeds", "macros", "data", "data_tests"] {
        let from = root.join(part);
        if from.is_dir() {
            copy_dir(&from, &tmp.path().join(part));
        } else {
            std::fs::copy(&from, tmp.path().join(part)).unwrap();
        }
    }
    tmp
}

/// The analysis diagnostics (`E70x`) of `kiln compile` with `args`.
fn findings(dir: &std::path::Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut argv = vec!["compile", "--log-format", "json"];
    argv.extend(args);
    let out = run(dir, &argv);
    stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["code"].as_str().is_some_and(|c| c.starts_with("E70")))
        .collect()
}

#[test]
fn projects_that_build_type_every_model_without_findings() {
    for project in buildable() {
        let dir = project.path();
        let mut pgshop = false;
        // `pgshop` is a PostgreSQL project (on the embedded engine its contract's `integer`
        // is not the `bigint` DataFusion computes, and analysis says so): compiled for its
        // target. Compiling does not connect.
        if std::fs::read_to_string(dir.join("dbt_project.yml")).unwrap().contains("name: pgshop") {
            let pg = "type: postgres\n      host: 127.0.0.1\n      port: 5432\n      user: u\n      password: p\n      dbname: db\n      schema: s";
            write(dir, "profiles.yml", &format!("pgshop:\n  target: pg\n  outputs:\n    pg:\n      {pg}\n"));
            pgshop = true;
        }
        let found = findings(dir, &["--static-analysis", "strict"]);
        // A model whose SQL a macro builds from the warehouse's data (`fidelity`'s pivots) is
        // unknown until the warehouse holds it; then it is typed as compiled.
        let warehouse_bound = |f: &serde_json::Value| f.to_string().contains("depends on what the warehouse holds");
        if pgshop {
            // Compiled without its PostgreSQL: `revenue_by_status` pivots on a `run_query`.
            let names: Vec<&str> = found.iter().filter(|f| warehouse_bound(f)).filter_map(|f| f["message"].as_str()).collect();
            assert_eq!(names, ["kiln cannot tell the columns of model `revenue_by_status`"], "{found:#?}");
            assert_eq!(found.len(), 1, "{found:#?}");
            continue;
        }
        if !found.is_empty() && found.iter().all(warehouse_bound) {
            let out = run(dir, &["build"]);
            assert!(out.status.code().is_some_and(|c| c <= 1), "{}", stderr(&out));
            let found = findings(dir, &["--static-analysis", "strict"]);
            assert!(found.is_empty(), "{} after a build: {found:#?}", dir.display());
            continue;
        }
        assert!(found.is_empty(), "{}: {found:#?}", dir.display());
    }
}

/// Every column class a type name falls in, whether written by DataFusion (`Int64`,
/// `Utf8View`, `Timestamp(µs)`) or as SQL (`BIGINT`, `VARCHAR`, `TIMESTAMP`).
fn class(t: &str) -> &'static str {
    let t = t.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if has(&["timestamp"]) {
        "timestamp"
    } else if has(&["date"]) {
        "date"
    } else if has(&["decimal", "numeric"]) {
        "decimal"
    } else if has(&["float", "double", "real"]) {
        "float"
    } else if has(&["int"]) {
        "integer"
    } else if has(&["utf8", "char", "string", "text"]) {
        "string"
    } else if has(&["bool"]) {
        "boolean"
    } else {
        "other"
    }
}

/// The inferred columns of each model `kiln compile` wrote into the manifest: id -> (name, type).
fn inferred(dir: &std::path::Path) -> std::collections::HashMap<String, Vec<(String, String)>> {
    // `pgshop`'s contract fails on the embedded engine (E704, exit 1): the manifest is written
    // all the same.
    let out = run(dir, &["compile", "--quiet"]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
    let path = ["target/kiln/manifest.json", "target/manifest.json"].map(|p| dir.join(p)).into_iter().find(|p| p.exists());
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path.expect("a manifest")).unwrap()).unwrap();
    let nodes = manifest["nodes"].as_object().unwrap().values();
    nodes
        .filter_map(|node| {
            let columns: Vec<(String, String)> = node["columns"]
                .as_object()?
                .values()
                .filter(|c| c["inferred"] == true)
                .map(|c| (c["name"].as_str().unwrap().to_lowercase(), c["data_type"].as_str().unwrap().to_string()))
                .collect();
            (!columns.is_empty()).then(|| (node["unique_id"].as_str().unwrap().to_string(), columns))
        })
        .collect()
}

#[test]
fn inferred_columns_equal_the_built_ones() {
    let mut compared = 0;
    for project in buildable() {
        let dir = project.path();
        // Compiled before anything is built (no `is_incremental()` branch), and again after
        // (a model whose columns come from `run_query` has its data then).
        let before = inferred(dir);
        run(dir, &["build", "--quiet"]); // some fixtures have tests that fail on purpose
        let after = inferred(dir);
        let sql = "select table_schema, table_name, column_name, data_type from information_schema.columns";
        let built = run(dir, &["show", "--inline", sql, "--limit", "100000", "-o", "json"]);
        let built: Vec<serde_json::Value> = stdout(&built).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let manifest = after.keys().chain(before.keys()).collect::<std::collections::BTreeSet<_>>();
        for id in manifest {
            if !id.starts_with("model.") && !id.starts_with("snapshot.") {
                continue;
            }
            let inferred = after.get(id).or(before.get(id)).unwrap();
            let name = id.rsplit('.').next().unwrap();
            let mut columns: Vec<(String, &'static str)> = built
                .iter()
                .filter(|c| c["table_name"].as_str().is_some_and(|t| t == name))
                .map(|c| (c["column_name"].as_str().unwrap().to_lowercase(), class(c["data_type"].as_str().unwrap())))
                .collect();
            if columns.is_empty() {
                continue; // not built: a test upstream failed, or an alias names it otherwise
            }
            columns.sort();
            let mut expected: Vec<(String, &'static str)> = inferred.iter().map(|(n, t)| (n.clone(), class(t))).collect();
            expected.sort();
            assert_eq!(expected, columns, "{id} in {}", dir.display());
            compared += 1;
        }
    }
    assert!(compared >= 30, "only {compared} relations compared");
}

#[test]
fn strict_mode_names_what_it_cannot_type() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: p\nconfig-version: 2\nprofile: p\n");
    write(d, "models/sources.yml", "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: events\n");
    write(d, "models/stg_events.sql", "select id, kind from {{ source('raw', 'events') }}\n");
    write(d, "models/typo.sql", "select idd from {{ ref('stg_events') }}\n");
    // Baseline: a source without columns is unknown, so nothing downstream is reported.
    assert!(findings(d, &[]).is_empty());
    // Strict: each model says why it has no columns.
    let found = findings(d, &["--static-analysis", "strict"]);
    let untyped: Vec<&str> = found.iter().filter(|f| f["code"] == "E703").map(|f| f["message"].as_str().unwrap()).collect();
    assert_eq!(untyped.len(), 2, "{found:#?}");
    assert!(untyped.iter().any(|m| m.contains("`stg_events`")), "{untyped:?}");
    // Declared columns make the source known, but only in part: through `select *`, an unknown
    // column is a warning in strict mode and nothing in baseline...
    write(
        d,
        "models/sources.yml",
        "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: events\n        columns:\n          - name: id\n            data_type: bigint\n          - name: kind\n            data_type: varchar\n",
    );
    write(d, "models/stg_events.sql", "select * from {{ source('raw', 'events') }}\n");
    assert!(findings(d, &[]).is_empty());
    let found = findings(d, &["--static-analysis", "strict"]);
    assert!(found.iter().any(|f| f["code"] == "E701" && f["level"] == "warning" && f["file"] == "models/typo.sql"), "{found:#?}");
    // ... while a model that names its columns is known in full, and the typo is certain.
    write(d, "models/stg_events.sql", "select id, kind from {{ source('raw', 'events') }}\n");
    let found = findings(d, &[]);
    assert!(found.iter().any(|f| f["code"] == "E701" && f["level"] == "error" && f["line"] == 1 && f["col"] == 8), "{found:#?}");
    write(d, "models/stg_events.sql", "select * from {{ source('raw', 'events') }}\n");
    // The mode is a config of each model: `strict` on this one reports it in a baseline run,
    // `off` skips it.
    write(d, "models/typo.sql", "{{ config(static_analysis='strict') }}\nselect idd from {{ ref('stg_events') }}\n");
    assert!(findings(d, &[]).iter().any(|f| f["file"] == "models/typo.sql" && f["code"] == "E701"));
    write(d, "models/typo.sql", "{{ config(static_analysis='off') }}\nselect idd from {{ ref('stg_events') }}\n");
    assert!(findings(d, &[]).is_empty());
}

/// `target/lineage.json` as lines: `node.column <- node.column (how)`, filters and join keys.
fn lineage_lines(dir: &std::path::Path) -> String {
    let lineage: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("target/lineage.json")).unwrap()).unwrap();
    let short = |id: &serde_json::Value| id.as_str().unwrap().rsplit('.').next().unwrap().to_string();
    let mut lines = Vec::new();
    for (node, l) in lineage["nodes"].as_object().unwrap() {
        let node = node.rsplit('.').next().unwrap();
        for (column, reads) in l["columns"].as_object().unwrap() {
            let reads: Vec<String> = reads
                .as_array()
                .unwrap()
                .iter()
                .map(|r| format!("{}.{} ({})", short(&r["node"]), r["column"].as_str().unwrap(), r["how"].as_str().unwrap()))
                .collect();
            lines.push(format!("{node}.{column} <- {}", if reads.is_empty() { "nothing".to_string() } else { reads.join(", ") }));
        }
        for kind in ["filters", "join_keys"] {
            for r in l[kind].as_array().unwrap() {
                lines.push(format!("{node} {kind}: {}.{}", short(&r["node"]), r["column"].as_str().unwrap()));
            }
        }
    }
    lines.join("\n")
}

#[test]
fn lineage_of_every_kind_of_derivation() {
    let project = temp_project("projects/lineage");
    let dir = project.path();
    let out = run(dir, &["compile", "--quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    insta::assert_snapshot!("lineage_json", lineage_lines(dir));
    // `kiln lineage`: up to the seeds, and down from a seed's column.
    let up = run(dir, &["lineage", "customer_totals.total"]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    let down = run(dir, &["lineage", "raw_orders.amount", "--downstream"]);
    insta::assert_snapshot!("lineage_cli", format!("{}\n---\n{}", stdout(&up), stdout(&down)));
    let json: serde_json::Value = serde_json::from_str(&stdout(&run(dir, &["lineage", "via_eph.double_amount", "-o", "json"]))).unwrap();
    assert_eq!(json["next"][0]["node"], "model.lineage.stg_orders", "{json}");
    assert_eq!(json["next"][0]["how"], "expression", "{json}");
    assert_eq!(json["next"][0]["next"][0]["node"], "seed.lineage.raw_orders", "{json}");
    let bad = run(dir, &["lineage", "custmer_totals.total"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("did you mean `customer_totals`"), "{}", stderr(&bad));
}

/// Each node's status and message in `target/run_results.json`, by name.
fn statuses(dir: &std::path::Path) -> std::collections::BTreeMap<String, (String, String)> {
    let text = std::fs::read_to_string(dir.join("target/run_results.json")).unwrap();
    let results: serde_json::Value = serde_json::from_str(&text).unwrap();
    let results = results["results"].as_array().unwrap().iter();
    let entry = |r: &serde_json::Value| {
        let name = r["unique_id"].as_str()?.rsplit('.').next()?.to_string();
        Some((name, (r["status"].as_str()?.to_string(), r["message"].as_str().unwrap_or_default().to_string())))
    };
    results.filter_map(entry).collect()
}

#[test]
fn builds_fail_what_analysis_is_certain_of_without_running_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: p\nconfig-version: 2\nmodels:\n  p:\n    +materialized: table\n");
    write(d, "seeds/raw_orders.csv", "order_id,status,amount\n1,placed,10\n2,shipped,20\n");
    write(d, "models/totals.sql", "select status, sum(amount) as total from {{ ref('raw_orders') }} group by status\n");
    write(d, "models/fine.sql", "select order_id from {{ ref('raw_orders') }}\n");
    write(d, "models/child.sql", "select * from {{ ref('totals') }}\n");
    let out = run(d, &["build"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A typo: the model fails with the finding, unrun, and keeps its table; its child is
    // skipped; the rest builds.
    write(d, "models/totals.sql", "select status, sum(amont) as total from {{ ref('raw_orders') }} group by status\n");
    let out = run(d, &["build"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("error[E701]: column `amont` not found in `raw_orders`"), "{err}");
    assert!(err.contains(" --> models/totals.sql:1:20"), "{err}");
    let status = statuses(d);
    assert_eq!(status["totals"].0, "error");
    assert!(status["totals"].1.contains("column `amont` not found"), "{status:?}");
    assert_eq!(status["child"].0, "skipped");
    assert_eq!(status["fine"].0, "success");
    let kept = run(d, &["show", "--inline", "select sum(total) as t from {{ ref('totals') }}", "-o", "json", "--quiet"]);
    assert!(stdout(&kept).contains("\"t\":30"), "the previous table stays: {}", stdout(&kept));
    // `--static-analysis off`: the engine runs it and fails it its own way.
    let out = run(d, &["run", "-s", "totals", "--static-analysis", "off"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!stderr(&out).contains("E701"), "{}", stderr(&out));
    assert!(stderr(&out).contains("E601"), "{}", stderr(&out));
    // A model whose SQL a macro builds from the warehouse's data is not judged before the build
    // (its parent is rebuilt first): here a pivot over statuses that the new seed adds.
    write(d, "models/totals.sql", "select status, sum(amount) as total from {{ ref('raw_orders') }} group by status\n");
    write(
        d,
        "models/pivot.sql",
        "{% set statuses = run_query('select distinct status from ' ~ ref('raw_orders') ~ ' order by 1').columns[0].values() if execute else [] %}\nselect\n{%- for s in statuses %} sum(case when status = '{{ s }}' then amount end) as {{ s }},{% endfor %} count(*) as n\nfrom {{ ref('raw_orders') }}\n",
    );
    write(d, "models/returned.sql", "select returned from {{ ref('pivot') }}\n");
    write(d, "seeds/raw_orders.csv", "order_id,status,amount\n1,placed,10\n2,shipped,20\n3,returned,5\n");
    let out = run(d, &["build"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn ls_lists_inferred_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: p\nconfig-version: 2\n");
    write(d, "seeds/raw_orders.csv", "order_id,status,amount\n1,placed,10.5\n");
    write(d, "models/orders.sql", "select order_id, upper(status) as status, amount * 2 as doubled from {{ ref('raw_orders') }}\n");
    write(
        d,
        "models/orders.yml",
        "version: 2\nmodels:\n  - name: orders\n    columns:\n      - name: order_id\n        description: the key\n",
    );
    let out = run(d, &["ls", "-o", "json", "--output-keys", "unique_id", "columns"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |id: &str| lines.iter().find(|l| l["unique_id"] == id).unwrap_or_else(|| panic!("{id}: {lines:?}"))["columns"].clone();
    let orders = of("model.p.orders");
    assert_eq!(orders["order_id"]["description"], "the key");
    assert_eq!(orders["order_id"]["data_type"], "BIGINT");
    assert_eq!(orders["order_id"]["inferred"], true);
    assert_eq!(orders["status"]["data_type"], "VARCHAR");
    assert_eq!(orders["doubled"]["data_type"], "DOUBLE");
    assert_eq!(of("seed.p.raw_orders")["amount"]["data_type"], "DOUBLE");
    // Without the key, dbt's keys only.
    let out = run(d, &["ls", "-o", "json"]);
    assert!(!stdout(&out).contains("\"columns\""), "{}", stdout(&out));
}
