//! `kiln watch` end to end: the real binary watches a temporary project while the test edits
//! files, reads its JSON events, and checks the tables it rebuilt.

use crate::common::{kiln, run, stderr, stdout, temp_project};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Watch {
    child: Child,
    events: mpsc::Receiver<Value>,
}

impl Watch {
    fn start(dir: &Path, extra: &[&str]) -> Watch {
        let mut child = kiln(dir)
            .args(["watch", "--profiles-dir", "profiles", "--log-format", "json", "--debounce", "20"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kiln watch starts");
        let out = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON event ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Watch { child, events }
    }

    /// Events up to and including the first that `done` accepts.
    fn until(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            match self.events.recv_timeout(Duration::from_secs(60)) {
                Ok(e) => {
                    let stop = done(&e);
                    seen.push(e);
                    if stop {
                        return seen;
                    }
                }
                Err(_) => panic!("no {what} within 60 s; events so far:\n{}", lines(&seen)),
            }
        }
    }

    /// One turn: events up to the next `build_finished`.
    fn turn(&mut self) -> Vec<Value> {
        self.until("build_finished", |e| e["event"] == "build_finished")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(events: &[Value]) -> String {
    events.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
}

/// unique_id -> status of the nodes a turn built.
fn finished(events: &[Value]) -> std::collections::BTreeMap<String, String> {
    events
        .iter()
        .filter(|e| e["event"] == "node_finished")
        .map(|e| (e["unique_id"].as_str().unwrap_or_default().to_string(), e["status"].as_str().unwrap_or_default().to_string()))
        .collect()
}

fn started(events: &[Value]) -> &Value {
    events.iter().find(|e| e["event"] == "build_started").unwrap_or_else(|| panic!("no build_started:\n{}", lines(events)))
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_string)).collect()
}

/// A one-value query on the warehouse, by a second kiln process while the watch runs.
fn scalar(dir: &Path, sql: &str) -> Value {
    let out = run(dir, &["show", "--profiles-dir", "profiles", "--inline", sql, "-o", "json", "--quiet"]);
    assert!(out.status.success(), "kiln show failed:\n{}", stderr(&out));
    let row: Value = serde_json::from_str(stdout(&out).lines().next().unwrap_or_default()).expect("a JSON row");
    row.as_object().and_then(|o| o.values().next().cloned()).expect("one column")
}

/// Saves as many editors do: a hidden temp file renamed over the file, so the watcher never sees
/// half a file, however slow the machine.
fn save(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("f")));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{} has no `{from}`", path.display());
    save(path, &text.replacen(from, to, 1));
}

fn shop() -> tempfile::TempDir {
    let tmp = temp_project("projects/shop");
    let out = run(tmp.path(), &["deps", "--profiles-dir", "profiles"]);
    assert!(out.status.success(), "{}", stderr(&out));
    tmp
}

#[test]
fn watch_rebuilds_what_each_save_changes() {
    let tmp = shop();
    let d = tmp.path();
    let mut w = Watch::start(d, &[]);
    let first = w.turn();
    assert_eq!(first[0]["event"], "watch_started", "{}", lines(&first));
    let built = finished(&first);
    assert!(built.len() > 20 && built.values().all(|s| s == "success" || s == "pass"), "first build:\n{}", lines(&first));
    assert_eq!(built.get("snapshot.shop.orders_snapshot").map(String::as_str), Some("success"), "{}", lines(&first));

    // A snapshot: it runs again, with a note that history is not replayed.
    edit(&d.join("snapshots/orders_snapshot.sql"), "select *", "select *, 1 as edited");
    let turn = w.turn();
    assert!(turn.iter().any(|e| e["event"] == "snapshot_note"), "{}", lines(&turn));
    assert_eq!(finished(&turn).get("snapshot.shop.orders_snapshot").map(String::as_str), Some("success"), "{}", lines(&turn));

    // A model: it and what is downstream are rebuilt, with their tests; nothing else.
    edit(&d.join("models/staging/stg_orders.sql"), "select * from renamed", "select * from renamed where order_id <= 50");
    let turn = w.turn();
    assert_eq!(ids(&started(&turn)["files"]), BTreeSet::from(["models/staging/stg_orders.sql".to_string()]));
    assert_eq!(ids(&started(&turn)["modified"]), BTreeSet::from(["model.shop.stg_orders".to_string()]));
    let built = finished(&turn);
    for id in ["model.shop.stg_orders", "model.shop.orders", "model.shop.customers"] {
        assert_eq!(built.get(id).map(String::as_str), Some("success"), "{id}:\n{}", lines(&turn));
    }
    assert!(built.keys().any(|k| k.starts_with("test.shop.unique_stg_orders_order_id")), "{}", lines(&turn));
    assert!(!built.contains_key("model.shop.stg_customers") && !built.keys().any(|k| k.starts_with("seed.")), "{}", lines(&turn));
    assert_eq!(scalar(d, "select count(*) as n from {{ ref('orders') }}"), 50);

    // A macro: the models that call it are rebuilt, with the new SQL.
    let before = scalar(d, "select cast(sum(amount) as double) as s from {{ ref('stg_payments') }}").as_f64().expect("a sum");
    edit(
        &d.join("macros/cents_to_dollars.sql"),
        "cast({{ column_name }} as decimal(16, {{ scale }})) / 100\n",
        "cast({{ column_name }} as decimal(16, {{ scale }})) / 1000\n",
    );
    let turn = w.turn();
    let built = finished(&turn);
    assert!(built.contains_key("model.shop.stg_payments") && !built.contains_key("model.shop.stg_customers"), "{}", lines(&turn));
    let after = scalar(d, "select cast(sum(amount) as double) as s from {{ ref('stg_payments') }}").as_f64().expect("a sum");
    assert!((before / after - 10.0).abs() < 1e-6, "sum went from {before} to {after}");

    // A test added in YAML runs (and warns); its model is not rebuilt for it.
    edit(
        &d.join("models/staging/schema.yml"),
        "  - name: stg_customers\n    columns:\n",
        "  - name: stg_customers\n    columns:\n      - name: first_name\n        data_tests:\n          - accepted_values:\n              values: ['Michael']\n              config:\n                severity: warn\n",
    );
    let turn = w.turn();
    let built = finished(&turn);
    assert_eq!(built.len(), 1, "{}", lines(&turn));
    let (id, status) = built.iter().next().expect("one node");
    assert!(id.starts_with("test.shop.accepted_values_stg_customers_first_name"), "{id}");
    assert_eq!(status, "warn");
    assert_eq!(turn.last().expect("event")["warn"], 1);

    // A seed: reloaded, and what reads it rebuilt.
    let seed = d.join("seeds/raw_customers.csv");
    save(&seed, &format!("{}101,Ada,L.\n", std::fs::read_to_string(&seed).expect("read")));
    let turn = w.turn();
    let built = finished(&turn);
    for id in ["seed.shop.raw_customers", "model.shop.stg_customers", "model.shop.customers"] {
        assert_eq!(built.get(id).map(String::as_str), Some("success"), "{id}:\n{}", lines(&turn));
    }
    assert_eq!(scalar(d, "select count(*) as n from {{ ref('stg_customers') }}"), 101);

    // A broken template: the diagnostic names the file and line; nothing runs; watching goes on.
    let model = d.join("models/staging/stg_orders.sql");
    let good = std::fs::read_to_string(&model).expect("read");
    save(&model, &good.replace("{{ ref('raw_orders') }}", "{{ ref('raw_orders' }}"));
    let turn = w.turn();
    let diag = turn.iter().find(|e| e["level"] == "error").unwrap_or_else(|| panic!("no diagnostic:\n{}", lines(&turn)));
    assert_eq!(diag["file"], "models/staging/stg_orders.sql");
    assert_eq!(diag["line"], 2);
    assert!(finished(&turn).is_empty() && turn.last().expect("event")["parse_error"] == true, "{}", lines(&turn));
    // Saved back as it was: the error is reported gone; nothing needs rebuilding.
    save(&model, &good);
    let turn = w.turn();
    assert!(turn.last().expect("event")["fixed"] == true && finished(&turn).is_empty(), "{}", lines(&turn));

    // Broken SQL: the model fails with its SQL error, what is downstream is skipped.
    save(&model, &good.replace("select * from renamed", "selec * from renamed"));
    let turn = w.turn();
    let built = finished(&turn);
    assert_eq!(built.get("model.shop.stg_orders").map(String::as_str), Some("error"), "{}", lines(&turn));
    assert_eq!(built.get("model.shop.orders").map(String::as_str), Some("skipped"));
    let failure = turn.iter().find(|e| e["unique_id"] == "model.shop.stg_orders").expect("stg_orders event");
    assert!(failure["message"].as_str().unwrap_or_default().contains("stg_orders.sql"), "{failure}");

    // The fix: everything the failures held back is built again.
    save(&model, &good);
    let turn = w.turn();
    let built = finished(&turn);
    assert!(
        ["model.shop.stg_orders", "model.shop.orders", "model.shop.customers"]
            .iter()
            .all(|id| built.get(*id).map(String::as_str) == Some("success")),
        "{}",
        lines(&turn)
    );

    // A new model, then renamed: the new name is built, the old one reported removed.
    save(&d.join("models/marts/order_counts.sql"), "select count(*) as n from {{ ref('stg_orders') }}\n");
    let turn = w.turn();
    assert_eq!(ids(&started(&turn)["added"]), BTreeSet::from(["model.shop.order_counts".to_string()]), "{}", lines(&turn));
    assert_eq!(finished(&turn).get("model.shop.order_counts").map(String::as_str), Some("success"));
    std::fs::rename(d.join("models/marts/order_counts.sql"), d.join("models/marts/order_totals.sql")).expect("rename");
    let turn = w.turn();
    assert_eq!(ids(&started(&turn)["removed"]), BTreeSet::from(["model.shop.order_counts".to_string()]), "{}", lines(&turn));
    assert_eq!(finished(&turn).get("model.shop.order_totals").map(String::as_str), Some("success"), "{}", lines(&turn));
    assert_eq!(scalar(d, "select n from {{ ref('order_totals') }}"), 50);

    // Two saves in quick succession: whatever was cancelled, the table ends as the last save says.
    let counts = d.join("models/marts/order_totals.sql");
    save(&counts, "select count(*) + 1 as n from {{ ref('stg_orders') }}\n");
    w.until("build_started", |e| e["event"] == "build_started");
    save(&counts, "select count(*) + 2 as n from {{ ref('stg_orders') }}\n");
    let mut last = w.turn();
    while !last.iter().any(|e| e["event"] == "build_started" && ids(&e["modified"]).contains("model.shop.order_totals")) {
        last = w.turn();
    }
    // The turn that saw the second save may itself have been the first; settle on the value.
    let mut n = scalar(d, "select n from {{ ref('order_totals') }}");
    for _ in 0..50 {
        if n == 52 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        n = scalar(d, "select n from {{ ref('order_totals') }}");
    }
    assert_eq!(n, 52);

    // A build in another process while the watch writes the warehouse: it is told who holds
    // it (and, with no time to wait, stops); the watch goes on.
    let other = crate::common::kiln(d).args(["run", "--profiles-dir", "profiles"]).env("KILN_LOCK_WAIT", "0").output().expect("kiln runs");
    let err = stderr(&other);
    assert_eq!(other.status.code(), Some(1), "{err}");
    assert!(err.contains("error[E509]") && err.contains("kiln watch"), "{err}");

    // kiln's own writes (target/, the warehouse) never trigger a rebuild: nothing arrives now.
    std::fs::write(d.join("target/unrelated.sql"), "select 1").expect("write");
    assert!(w.events.recv_timeout(Duration::from_millis(500)).is_err(), "a write under target/ triggered a rebuild");
}

#[test]
fn watch_stops_cleanly_on_signal_and_on_q() {
    let tmp = shop();
    let d = tmp.path();
    // --no-downstream: the changed model and its tests only.
    let mut w = Watch::start(d, &["--no-downstream", "-s", "+stg_orders+"]);
    w.turn();
    edit(&d.join("models/staging/stg_orders.sql"), "select * from renamed", "select * from renamed where order_id > 1");
    let built = finished(&w.turn());
    assert!(built.contains_key("model.shop.stg_orders"), "{built:?}");
    assert!(!built.contains_key("model.shop.orders") && !built.contains_key("model.shop.customers"), "{built:?}");
    assert!(built.keys().filter(|k| k.starts_with("test.")).all(|k| k.contains("stg_orders")), "{built:?}");

    // SIGTERM (as an orchestrator or `kill` sends): a clean stop, exit 0.
    // SAFETY: signals the child this test started.
    unsafe {
        libc::kill(w.child.id() as i32, libc::SIGTERM);
    }
    w.until("watch_stopped", |e| e["event"] == "watch_stopped");
    let status = w.child.wait().expect("exit");
    assert_eq!(status.code(), Some(0));
    // The last rebuild's artifacts (written off the loop) are on disk when watching stops.
    let text = std::fs::read_to_string(d.join("target/run_results.json")).expect("run_results.json");
    let results: Value = serde_json::from_str(&text).expect("JSON");
    let ran: BTreeSet<&str> = results["results"].as_array().expect("results").iter().filter_map(|r| r["unique_id"].as_str()).collect();
    assert!(ran.contains("model.shop.stg_orders") && !ran.contains("model.shop.orders"), "{ran:?}");

    // `q` on stdin.
    let mut w = Watch::start(d, &["-s", "stg_orders", "--defer-upstream"]);
    let first = w.turn();
    assert!(finished(&first).is_empty(), "--defer-upstream built what already exists:\n{}", lines(&first));
    w.child.stdin.as_mut().expect("stdin").write_all(b"q\n").expect("write q");
    w.until("watch_stopped", |e| e["event"] == "watch_stopped");
    assert_eq!(w.child.wait().expect("exit").code(), Some(0));
}

/// Resident memory of process `pid`, in bytes (Linux).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    kb.unwrap_or(0) * 1024
}

/// Every macro edit builds a new Jinja environment; the old ones are freed. After 200 edits
/// resident memory has grown by less than it would with one leaked environment per edit.
#[test]
fn macro_edits_under_watch_keep_memory_flat() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    crate::common::write(d, "dbt_project.yml", "name: w\nconfig-version: 2\nprofile: w\n");
    crate::common::write(d, "profiles/profiles.yml", "w:\n  target: dev\n  outputs:\n    dev:\n      type: datafusion\n      threads: 2\n");
    let body = |i: usize| {
        let pads: String = (0..50).map(|k| format!("{{% macro pad{k}(x) %}}{{{{ x }}}}{{% endmacro %}}\n")).collect();
        format!("{{% macro pick() %}}{i}{{% endmacro %}}\n{pads}")
    };
    crate::common::write(d, "macros/m.sql", &body(0));
    crate::common::write(d, "models/a.sql", "select {{ pick() }} as x, '{{ pad7(1) }}' as y\n");
    let mut w = Watch::start(d, &[]);
    w.turn();
    let mut after = Vec::new();
    for i in 1..=200 {
        save(&d.join("macros/m.sql"), &body(i));
        let turn = w.turn();
        assert_eq!(finished(&turn).get("model.w.a").map(String::as_str), Some("success"), "edit {i}:\n{}", lines(&turn));
        if i == 50 || i == 200 {
            after.push(rss(w.child.id()));
        }
    }
    assert_eq!(scalar_with(d, "select x from {{ ref('a') }}"), 200);
    let grown = after[1].saturating_sub(after[0]);
    eprintln!("resident memory after 50 edits: {} MB, after 200: {} MB", after[0] >> 20, after[1] >> 20);
    assert!(
        grown < 40 << 20,
        "resident memory grew by {} MB over 150 macro edits ({} -> {} MB)",
        grown >> 20,
        after[0] >> 20,
        after[1] >> 20
    );
}

fn scalar_with(dir: &Path, sql: &str) -> i64 {
    scalar(dir, sql).as_i64().expect("a number")
}

#[test]
fn watch_checks_what_a_save_changes_against_what_it_remembers() {
    let tmp = shop();
    let d = tmp.path();
    let mut w = Watch::start(d, &[]);
    let first = w.turn();
    assert!(finished(&first).values().all(|s| s == "success" || s == "pass"), "first build:\n{}", lines(&first));

    // A column renamed upstream: `customers`, unchanged, is checked again against the new
    // columns (not its remembered result) and fails unrun.
    let model = d.join("models/staging/stg_customers.sql");
    edit(&model, "        first_name,\n", "        first_name as given_name,\n");
    let turn = w.turn();
    let built = finished(&turn);
    assert_eq!(built.get("model.shop.stg_customers").map(String::as_str), Some("success"), "{}", lines(&turn));
    assert_eq!(built.get("model.shop.customers").map(String::as_str), Some("error"), "{}", lines(&turn));
    let failed = turn.iter().find(|e| e["unique_id"] == "model.shop.customers").expect("customers finished");
    assert_eq!(failed["code"], "E701", "{failed}");
    assert!(failed["message"].as_str().is_some_and(|m| m.contains("first_name")), "{failed}");

    // Saved back: the finding is not remembered; both build again.
    edit(&model, "        first_name as given_name,\n", "        first_name,\n");
    let turn = w.turn();
    let built = finished(&turn);
    for id in ["model.shop.stg_customers", "model.shop.customers"] {
        assert_eq!(built.get(id).map(String::as_str), Some("success"), "{id}:\n{}", lines(&turn));
    }
}
