//! PostgreSQL push-down against a real server.
//!
//! - `KILN_TEST_PG` (`host=127.0.0.1 port=5433 user=postgres`) names a server on which the user
//!   may create databases; every test works in a database of its own. `.ci/run` starts one.
//! - `KILN_TEST_PG_BIN` (the directory of `initdb` and `pg_ctl`) lets the fault tests run a
//!   private cluster they can stop and restart.
//!
//! In CI both must be set: the tests fail rather than skip.

use crate::common::*;
use kiln::engine::postgres::PostgresEngine;
use kiln::engine::postgres::connect::ConnectSettings;
use kiln::engine::{Engine, RelationName, SeedLoad};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Clone, Debug)]
struct Server {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
}

/// The shared test server, or `None` (with a note) outside CI when it is not configured.
fn server() -> Option<Server> {
    let spec = peer("KILN_TEST_PG", "the PostgreSQL test")?;
    let mut s = Server { host: "127.0.0.1".into(), port: 5432, user: "postgres".into(), password: None };
    for part in spec.split_whitespace() {
        match part.split_once('=') {
            Some(("host", v)) => s.host = v.into(),
            Some(("port", v)) => s.port = v.parse().expect("KILN_TEST_PG port"),
            Some(("user", v)) => s.user = v.into(),
            Some(("password", v)) => s.password = Some(v.into()),
            _ => panic!("KILN_TEST_PG: cannot read `{part}`; write `host=... port=... user=...`"),
        }
    }
    Some(s)
}

impl Server {
    fn settings(&self, dbname: &str) -> ConnectSettings {
        let mut m = indexmap::IndexMap::new();
        for (k, v) in [("host", self.host.clone()), ("port", self.port.to_string()), ("user", self.user.clone()), ("dbname", dbname.into())]
        {
            m.insert(k.to_string(), Value::from(v));
        }
        if let Some(p) = &self.password {
            m.insert("password".into(), Value::from(p.clone()));
        }
        m.insert("sslmode".into(), Value::from("disable"));
        ConnectSettings::from_target(&m).expect("settings")
    }

    fn engine(&self, dbname: &str) -> PostgresEngine {
        PostgresEngine::open(self.settings(dbname)).unwrap_or_else(|e| panic!("cannot connect to {dbname}: {e}"))
    }

    /// A new, empty database named after the test.
    fn fresh_db(&self, hint: &str) -> String {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let name = format!("kiln_{hint}_{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let admin = self.engine("postgres");
        admin.execute(&format!("drop database if exists {name}")).unwrap();
        admin.execute(&format!("create database {name}")).unwrap();
        name
    }

    /// A copy of the pgshop fixture whose `profiles.yml` targets a new database (returned).
    fn pgshop(&self, hint: &str) -> (tempfile::TempDir, String) {
        let db = self.fresh_db(hint);
        let tmp = temp_project("projects/pgshop");
        std::fs::write(tmp.path().join("profiles.yml"), self.profiles("pgshop", &[("kiln", &db)])).unwrap();
        (tmp, db)
    }

    /// A `profiles.yml` with one postgres output per (target, database).
    fn profiles(&self, profile: &str, targets: &[(&str, &str)]) -> String {
        let mut out = format!("{profile}:\n  target: {}\n  outputs:\n", targets[0].0);
        for (target, db) in targets {
            out.push_str(&format!(
                "    {target}:\n      type: postgres\n      host: {}\n      port: {}\n      user: {}\n      password: \"{{{{ env_var('KILN_TEST_PG_PASSWORD', '') }}}}\"\n      dbname: {db}\n      schema: analytics\n      threads: 4\n",
                self.host, self.port, self.user
            ));
        }
        out
    }
}

fn kiln_pg(dir: &Path, server: &Server, args: &[&str]) -> std::process::Output {
    kiln(dir).args(args).env("KILN_TEST_PG_PASSWORD", server.password.clone().unwrap_or_default()).output().expect("kiln runs")
}

/// (name, `"schema"."alias"`) of every enabled model and seed in a project's manifest.
fn relations(dir: &Path) -> Vec<(String, String)> {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    built_relations(dir).into_iter().map(|(name, schema, alias)| (name, format!("{}.{}", q(&schema), q(&alias)))).collect()
}

/// Loads the example project's external CSV source into PostgreSQL, as an extract step would.
fn load_example_source(engine: &PostgresEngine, db: &str, project: &Path) {
    engine.create_schema(db, "shop_exports").unwrap();
    let load = SeedLoad {
        relation: RelationName { database: db.into(), schema: "shop_exports".into(), name: "order_items".into() },
        path: project.join("data/order_items.csv"),
        delimiter: b',',
        column_types: vec![],
        full_refresh: false,
    };
    engine.load_seed(&load).unwrap();
}

/// Builds `dir` on DataFusion (default target) and on PostgreSQL, then compares every model's
/// and seed's rows.
fn same_rows_on_both_engines(server: &Server, dir: &Path, profile: &str, prepare: impl Fn(&PostgresEngine, &str)) {
    let out = run(dir, &["build"]);
    assert_eq!(out.status.code(), Some(0), "DataFusion build:\n{}", stderr(&out));
    let df_rel: std::collections::HashMap<String, String> = relations(dir).into_iter().collect();
    let db = server.fresh_db(profile);
    std::fs::create_dir_all(dir.join("pg")).unwrap();
    std::fs::write(dir.join("pg/profiles.yml"), server.profiles(profile, &[("pg", &db)])).unwrap();
    let pg = server.engine(&db);
    prepare(&pg, &db);
    let out = kiln_pg(dir, server, &["build", "--profiles-dir", "pg"]);
    assert_eq!(out.status.code(), Some(0), "PostgreSQL build:\n{}", stderr(&out));
    let pg_relations = relations(dir);
    assert!(pg_relations.len() >= 5, "{pg_relations:?}");
    for (name, rel) in &pg_relations {
        let theirs = df_rel.get(name).unwrap_or_else(|| panic!("{name} is not in the DataFusion build: {df_rel:?}"));
        let b = datafusion_rows(dir, theirs);
        let a = engine_rows(&pg, rel);
        assert!(!a.is_empty(), "{name} is empty on PostgreSQL");
        assert_eq!(a, b, "{name}: PostgreSQL and DataFusion rows differ");
    }
}

#[test]
fn example_project_builds_the_same_rows_on_postgres_and_datafusion() {
    let Some(server) = server() else { return };
    let tmp = crate::engine::example_project();
    same_rows_on_both_engines(&server, tmp.path(), "coffee_shop", |pg, db| load_example_source(pg, db, tmp.path()));
}

#[test]
fn shop_project_builds_the_same_rows_on_postgres_and_datafusion() {
    let Some(server) = server() else { return };
    let tmp = temp_project("projects/shop");
    std::fs::remove_dir_all(tmp.path().join("profiles")).unwrap();
    same_rows_on_both_engines(&server, tmp.path(), "shop", |_, _| {});
}

/// The dbt-postgres project builds unchanged under dbt-postgres and under kiln, twice (the second
/// build runs the incremental models incrementally, with a schema change): the same tables
/// (columns, types, rows) and the same test outcomes, node by node.
#[test]
fn pgshop_matches_dbt_postgres() {
    let Some(server) = server() else { return };
    let Some(dbt) = peer("KILN_TEST_DBT", "the dbt-postgres parity test") else { return };
    let (ours, theirs) = (server.fresh_db("pgshop_kiln"), server.fresh_db("pgshop_dbt"));
    let (kdir, ddir) = (temp_project("projects/pgshop"), temp_project("projects/pgshop"));
    for d in [kdir.path(), ddir.path()] {
        std::fs::write(d.join("profiles.yml"), server.profiles("pgshop", &[("kiln", &ours), ("dbt", &theirs)])).unwrap();
    }
    let statuses = |dir: &Path| -> Vec<(String, String)> {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("target/run_results.json")).unwrap()).unwrap();
        let mut v: Vec<(String, String)> = doc["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["unique_id"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    };
    for vars in ["{}", "{until: '2024-01-06'}"] {
        let out = std::process::Command::new(&dbt)
            .args(["build", "--profiles-dir", ".", "--target", "dbt", "--vars", vars])
            .current_dir(ddir.path())
            .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
            .env("KILN_TEST_PG_PASSWORD", server.password.clone().unwrap_or_default())
            .output()
            .unwrap();
        assert!(out.status.success(), "dbt build {vars}:\n{}", String::from_utf8_lossy(&out.stdout));
        let out = kiln_pg(kdir.path(), &server, &["build", "--profiles-dir", ".", "--target", "kiln", "--vars", vars]);
        assert_eq!(out.status.code(), Some(0), "kiln build {vars}:\n{}", stderr(&out));
        let (k, d) = (statuses(kdir.path()), statuses(ddir.path()));
        assert_eq!(k, d, "test and build outcomes differ from dbt-postgres (vars {vars})");
        assert!(k.iter().any(|(_, s)| s == "warn"), "the fixture has warning tests: {k:?}");
        let (ke, de) = (server.engine(&ours), server.engine(&theirs));
        let rels = relations(kdir.path());
        assert_eq!(rels.len(), 10, "{rels:?}");
        for (name, rel) in &rels {
            let r = RelationName {
                database: String::new(),
                schema: "analytics".into(),
                name: rel.rsplit("\".\"").next().unwrap().trim_matches('"').replace("\"\"", "\""),
            };
            assert_eq!(ke.describe(&r).unwrap(), de.describe(&r).unwrap(), "{name}: columns or types differ from dbt-postgres");
            assert_eq!(engine_rows(&ke, rel), engine_rows(&de, rel), "{name}: rows differ from dbt-postgres (vars {vars})");
        }
    }
    // The contract's constraints exist on the table, as dbt-postgres creates them.
    let constraints = "select a.attname::text, a.attnotnull, coalesce((select string_agg(c.contype::text, ',' order by c.contype) \
        from pg_constraint c where c.conrelid = a.attrelid and a.attnum = any(c.conkey)), '') \
        from pg_attribute a where a.attrelid = 'analytics.dim_customers'::regclass and a.attnum > 0 order by a.attnum";
    let (ke, de) = (server.engine(&ours), server.engine(&theirs));
    let ours_c = ke.query(constraints, None).unwrap().rows;
    assert_eq!(ours_c, de.query(constraints, None).unwrap().rows);
    assert_eq!(ours_c[0], vec![Value::from("customer_id"), Value::Bool(true), Value::from("p")]);
    // persist_docs wrote the descriptions, as dbt-postgres does.
    let k = server.engine(&ours);
    let comment = k
        .query("select obj_description('analytics.stg_orders'::regclass), col_description('analytics.stg_orders'::regclass, 1)", None)
        .unwrap();
    assert_eq!(comment.rows[0], vec![Value::from("One row per order, typed and renamed."), Value::from("The order's id (it's unique).")]);
}

#[test]
fn materializations_swap_atomically_and_seeds_reload() {
    let Some(server) = server() else { return };
    let (tmp, db) = server.pgshop("swap");
    let d = tmp.path();
    let out = kiln_pg(d, &server, &["build", "--profiles-dir", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let pg = server.engine(&db);
    // A view built on the seed survives a seed reload with the same columns (truncate + COPY).
    pg.execute("create view analytics.watcher as select count(*) as n from analytics.raw_orders").unwrap();
    let out = kiln_pg(d, &server, &["seed", "--profiles-dir", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(pg.query("select n from analytics.watcher", None).unwrap().rows[0][0], Value::from(7));
    // Seed values are data, never SQL: quotes, commas, newlines and backslashes arrive intact.
    let notes = pg.query("select note from analytics.raw_orders order by id", None).unwrap();
    let notes: Vec<&Value> = notes.rows.iter().map(|r| &r[0]).collect();
    assert_eq!(notes[2], "comma, inside");
    assert_eq!(notes[3], "line\nbreak");
    assert_eq!(notes[4], "back\\slash");
    assert_eq!(*notes[5], Value::Null, "`null` in a seed is NULL, as in dbt");
    let names = pg.query("select name from analytics.raw_customers order by id", None).unwrap();
    assert_eq!(names.rows[2][0], "Chloé \"CJ\" Jones");
    // --store-failures keeps the failing rows in the audit schema.
    let out = kiln_pg(d, &server, &["test", "--profiles-dir", ".", "--store-failures", "-s", "stg_orders"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("See the failing rows: select * from"), "{}", stderr(&out));
    let stored = pg.query("select count(*) from analytics_dbt_test__audit.not_null_stg_orders_note", None).unwrap();
    assert_eq!(stored.rows[0][0], Value::from(2));
    // A contract constraint the new rows violate: PostgreSQL refuses it, the old table stays.
    let before = engine_rows(&pg, "analytics.dim_customers");
    std::fs::write(
        d.join("models/marts/dim_customers.sql"),
        "select customer_id, customer_name, signup_date, 1 as days_since_signup from {{ ref('stg_customers') }}\nunion all\nselect 1, 'again', current_date, 2\n",
    )
    .unwrap();
    let out = kiln_pg(d, &server, &["run", "--profiles-dir", ".", "-s", "dim_customers"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("constraint primary_key on `customer_id` failed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("Key (customer_id)=(1) is duplicated"), "{}", stderr(&out));
    assert_eq!(engine_rows(&pg, "analytics.dim_customers"), before);
    // --full-refresh recreates the seed (dropping what depends on it, as dbt-postgres does).
    let out = kiln_pg(d, &server, &["seed", "--profiles-dir", ".", "--full-refresh"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(pg.describe(&RelationName { database: db.clone(), schema: "analytics".into(), name: "watcher".into() }).unwrap().is_none());
    // A relation that changes kind (view -> table) is swapped in place; no temporary is left.
    std::fs::write(
        d.join("models/staging/stg_customers.sql"),
        "{{ config(materialized='table') }}\nselect 1 as customer_id, 'x' as customer_name, current_date as signup_date, false as is_vip\n",
    )
    .unwrap();
    let out = kiln_pg(d, &server, &["run", "--profiles-dir", ".", "-s", "stg_customers"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let kinds = pg
        .query("select relname::text, relkind::text from pg_class c join pg_namespace n on n.oid = c.relnamespace where nspname = 'analytics' and relname like 'stg_customers%' order by 1", None)
        .unwrap();
    assert_eq!(kinds.rows, vec![vec![Value::from("stg_customers"), Value::from("r")]]);
    // Identifiers with capitals, spaces and quotes.
    let cols =
        pg.describe(&RelationName { database: db.clone(), schema: "analytics".into(), name: "Customer Orders".into() }).unwrap().unwrap();
    assert_eq!(cols[1].0, "Customer \"Name\"");
}

#[test]
fn sql_error_points_at_the_model_and_keeps_the_old_table() {
    let Some(server) = server() else { return };
    let (tmp, db) = server.pgshop("caret");
    let d = tmp.path();
    let out = kiln_pg(d, &server, &["build", "--profiles-dir", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(
        d.join("models/marts/revenue_by_status.sql"),
        "select\n    order_date,\n    sum(amount) as total,\n    sum(no_such_column) as broken\nfrom {{ ref('stg_orders') }}\ngroup by 1\n",
    )
    .unwrap();
    // Static analysis finds it first: the model fails without reaching the warehouse.
    let out = kiln_pg(d, &server, &["run", "--profiles-dir", ".", "-s", "revenue_by_status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error[E701]: column `no_such_column` not found in `stg_orders`"), "{err}");
    assert!(!err.contains("does not exist"), "the warehouse ran it:\n{err}");
    // Without it, PostgreSQL's own error points at the model.
    let out = kiln_pg(d, &server, &["run", "--profiles-dir", ".", "-s", "revenue_by_status", "--static-analysis", "off"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("column \"no_such_column\" does not exist"), "{err}");
    assert!(err.contains("--> models/marts/revenue_by_status.sql (compiled SQL, line 4, column 9"), "{err}");
    assert!(err.contains("4 |     sum(no_such_column) as broken\n  |         ^"), "{err}");
    let pg = server.engine(&db);
    let cols =
        pg.describe(&RelationName { database: db.clone(), schema: "analytics".into(), name: "revenue_by_status".into() }).unwrap().unwrap();
    assert!(cols.iter().any(|(c, _)| c == "completed_amount"), "the previous table is kept: {cols:?}");
}

/// A statement fails in the middle of the swap (after the old table was renamed away): the
/// transaction rolls back and the old table is still there, under its name, with its rows.
#[test]
fn failure_halfway_through_a_swap_keeps_the_previous_table() {
    let Some(server) = server() else { return };
    let (tmp, db) = server.pgshop("halfway");
    let d = tmp.path();
    let out = kiln_pg(d, &server, &["build", "--profiles-dir", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let pg = server.engine(&db);
    let before = engine_rows(&pg, "analytics.dim_customers");
    pg.execute(
        "create function analytics.refuse_backup_drop() returns event_trigger language plpgsql as $$\n\
         begin\n  if exists (select 1 from pg_event_trigger_dropped_objects() where object_name like '%__dbt_backup') then\n\
         raise exception 'refusing to drop a backup (test)';\n  end if;\nend $$",
    )
    .unwrap();
    pg.execute("create event trigger refuse_backup_drop on sql_drop execute function analytics.refuse_backup_drop()").unwrap();
    std::fs::write(
        d.join("models/marts/dim_customers.sql"),
        "select customer_id, customer_name, signup_date, 0 as days_since_signup from {{ ref('stg_customers') }} where false\n",
    )
    .unwrap();
    let out = kiln_pg(d, &server, &["run", "--profiles-dir", ".", "-s", "dim_customers"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("refusing to drop a backup (test)"), "{}", stderr(&out));
    assert_eq!(engine_rows(&pg, "analytics.dim_customers"), before, "the previous table is intact");
    let left = pg.query("select relname::text from pg_class where relname like 'dim_customers__dbt%'", None).unwrap();
    assert!(left.rows.is_empty(), "nothing half-swapped is left: {:?}", left.rows);
}

/// A private cluster, with password authentication on TCP, that a test may stop and restart.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

const CLUSTER_PASSWORD: &str = "Right-Pa55word";

fn as_postgres(cmd: &str) -> std::process::Output {
    let root = unsafe { libc::geteuid() } == 0;
    let mut c = if root {
        let mut c = std::process::Command::new("su");
        c.args(["postgres", "-s", "/bin/sh", "-c", cmd]);
        c
    } else {
        let mut c = std::process::Command::new("sh");
        c.args(["-c", cmd]);
        c
    };
    c.output().expect("runs a PostgreSQL tool")
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let bin = peer("KILN_TEST_PG_BIN", "the PostgreSQL fault test")?;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::write(dir.path().join("pw"), CLUSTER_PASSWORD).unwrap();
        if unsafe { libc::geteuid() } == 0 {
            let st = std::process::Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().unwrap();
            assert!(st.success());
        }
        let c = Cluster { dir, port, bin: PathBuf::from(bin) };
        let d = c.dir.path().display();
        let out = as_postgres(&format!(
            "{}/initdb -D {d}/data -U postgres --auth-local=trust --auth-host=scram-sha-256 --pwfile={d}/pw",
            c.bin.display()
        ));
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        c.up();
        Some(c)
    }

    fn up(&self) {
        let d = self.dir.path().display();
        let out = as_postgres(&format!(
            "{}/pg_ctl -D {d}/data -l {d}/log -w start -o '-p {} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off'",
            self.bin.display(),
            self.port
        ));
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn down(&self) {
        let out = as_postgres(&format!("{}/pg_ctl -D {}/data -m fast -w stop", self.bin.display(), self.dir.path().display()));
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn server(&self) -> Server {
        Server { host: "127.0.0.1".into(), port: self.port, user: "postgres".into(), password: Some(CLUSTER_PASSWORD.into()) }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&format!("{}/pg_ctl -D {}/data -m immediate stop", self.bin.display(), self.dir.path().display()));
    }
}

/// Wrong password, server down before the run, server stopped during the run: clear errors,
/// no password in any output, descendants skipped, previous relations intact.
#[test]
fn connection_faults_are_reported_and_lose_nothing() {
    let Some(cluster) = Cluster::start() else { return };
    let server = cluster.server();
    let (tmp, db) = server.pgshop("faults");
    let d = tmp.path();
    std::fs::write(d.join("models/marts/after_dim.sql"), "select count(*) as n from {{ ref('dim_customers') }}\n").unwrap();

    // Wrong password: said plainly, and the password itself never printed.
    let wrong = "Wr0ng-Secret-xyz";
    for cmd in [&["debug", "--profiles-dir", "."][..], &["build", "--profiles-dir", "."]] {
        let out = kiln(d).args(cmd).env("KILN_TEST_PG_PASSWORD", wrong).output().unwrap();
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(all.contains("authentication failed for user `postgres`"), "{all}");
        assert!(!all.contains(wrong), "the password leaked: {all}");
    }

    // A first good build; then a slow model, stopped mid-run by a server shutdown.
    let out = kiln_pg(d, &server, &["build", "--profiles-dir", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = engine_rows(&server.engine(&db), "analytics.dim_customers");
    std::fs::write(
        d.join("models/marts/dim_customers.sql"),
        "with wait as (select pg_sleep(30))\nselect c.customer_id, c.customer_name, c.signup_date, 0 as days_since_signup\nfrom {{ ref('stg_customers') }} as c cross join wait\n",
    )
    .unwrap();
    let child = kiln(d)
        .args(["run", "--profiles-dir", ".", "-s", "dim_customers+", "-s", "revenue_by_status"])
        .env("KILN_TEST_PG_PASSWORD", CLUSTER_PASSWORD)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    cluster.down();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ERROR table       analytics.dim_customers"), "{err}");
    assert!(err.contains("SKIP  table       analytics.after_dim"), "{err}");
    assert!(err.contains("the connection to PostgreSQL was lost") || err.contains("terminating connection"), "{err}");

    // Server down before the run: refused, with what to check.
    let out = kiln_pg(d, &server, &["build", "--profiles-dir", "."]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("connection refused; is the server running"), "{}", stderr(&out));

    // Back up: the previous table is intact, nothing half-swapped remains.
    cluster.up();
    let pg = server.engine(&db);
    assert_eq!(engine_rows(&pg, "analytics.dim_customers"), before);
    let left = pg.query("select relname::text from pg_class where relname like '%__dbt_%'", None).unwrap();
    assert!(left.rows.is_empty(), "{:?}", left.rows);
}

/// `adapter` methods and statements in hooks change the warehouse on both engines, as they do in
/// dbt: a table made by `run_query`, a row deleted, the table renamed, a schema created and
/// dropped, relations listed; a project hook records what it saw in a table of its own.
#[test]
fn adapter_methods_and_hook_statements_change_the_warehouse_on_both_engines() {
    let Some(server) = server() else { return };
    let db = server.fresh_db("adapter");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("models")).unwrap();
    std::fs::create_dir_all(d.join("macros")).unwrap();
    std::fs::write(d.join("dbt_project.yml"), "name: maint\nconfig-version: 2\nprofile: maint\non-run-end:\n  - \"{{ maintain() }}\"\n")
        .unwrap();
    let mut profiles = server.profiles("maint", &[("pg", &db)]);
    profiles.push_str("    local:\n      type: datafusion\n      schema: analytics\n");
    std::fs::write(d.join("profiles.yml"), profiles).unwrap();
    std::fs::write(d.join("models/m.sql"), "select 1 as id\n").unwrap();
    std::fs::write(
        d.join("macros/maintain.sql"),
        r#"{% macro maintain() %}
  {% set db, schema = target.database, target.schema %}
  {% set scratch = api.Relation.create(database=db, schema=schema, identifier='scratch') %}
  {% set moved = api.Relation.create(database=db, schema=schema, identifier='scratch_moved') %}
  {% do adapter.drop_relation(moved) %}
  {% do run_query("create table " ~ scratch ~ " as select 1 as id union all select 2 as id") %}
  {% do run_query("delete from " ~ scratch ~ " where id = 1") %}
  {% do adapter.rename_relation(scratch, moved) %}
  {% set extra = api.Relation.create(database=db, schema='maint_extra') %}
  {% do adapter.create_schema(extra) %}
  {% set had_schema = adapter.check_schema_exists(db, 'maint_extra') %}
  {% do adapter.drop_schema(extra) %}
  {% set has_schema = adapter.check_schema_exists(db, 'maint_extra') %}
  {% set listed = adapter.list_relations_without_caching(api.Relation.create(database=db, schema=schema)) | map(attribute='identifier') | list %}
  {% do run_query("create table if not exists " ~ schema ~ ".maint_log (observation varchar)") %}
  {% do run_query("insert into " ~ schema ~ ".maint_log values ('old gone: " ~ (adapter.get_relation(db, schema, 'scratch') is none) ~ "'), ('schema: " ~ had_schema ~ " then " ~ has_schema ~ "'), ('listed moved: " ~ ('scratch_moved' in listed) ~ "')") %}
{% endmacro %}
"#,
    )
    .unwrap();
    for target in ["local", "pg"] {
        let out = kiln_pg(d, &server, &["run", "--profiles-dir", ".", "-t", target]);
        assert_eq!(out.status.code(), Some(0), "{target}: {}", stderr(&out));
        let show = |sql: &str| {
            let out = kiln_pg(d, &server, &["show", "--profiles-dir", ".", "-t", target, "--inline", sql, "-o", "json"]);
            assert_eq!(out.status.code(), Some(0), "{target}: {}", stderr(&out));
            stdout(&out)
        };
        let log = show("select observation from {{ target.schema }}.maint_log order by 1");
        for seen in ["old gone: true", "schema: true then false", "listed moved: true"] {
            assert!(log.to_lowercase().contains(seen), "{target}: `{seen}` not in\n{log}");
        }
        assert!(show("select id from {{ target.schema }}.scratch_moved").contains("\"id\":2"), "{target}: the delete persisted");
    }
}

/// A unit test on a PostgreSQL target whose input has a `character varying(n)` column (and
/// other PostgreSQL type names) runs on the embedded engine.
#[test]
fn unit_tests_on_postgres_read_postgres_type_names() {
    let Some(server) = server() else { return };
    let db = server.fresh_db("unit_types");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("models")).unwrap();
    std::fs::write(d.join("dbt_project.yml"), "name: ut\nconfig-version: 2\nprofile: ut\n").unwrap();
    std::fs::write(d.join("profiles.yml"), server.profiles("ut", &[("pg", &db)])).unwrap();
    std::fs::write(
        d.join("models/named.sql"),
        "select cast('a' as character varying(20)) as name, cast(1 as double precision) as score, cast('2024-01-01' as timestamp(3) without time zone) as at\n",
    )
    .unwrap();
    std::fs::write(d.join("models/shouted.sql"), "select upper(name) as name, score * 2 as score from {{ ref('named') }}\n").unwrap();
    std::fs::write(
        d.join("models/unit.yml"),
        "version: 2\nunit_tests:\n  - name: shouts\n    model: shouted\n    given:\n      - input: ref('named')\n        rows:\n          - {name: ab, score: 1.5}\n    expect:\n      rows:\n        - {name: AB, score: 3.0}\n",
    )
    .unwrap();
    let out = kiln_pg(d, &server, &["build", "--profiles-dir", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("PASS  unit test   shouts"), "{}", stderr(&out));
}

/// `kiln init`'s template builds unchanged on PostgreSQL, every node with a result.
#[test]
fn init_template_builds_on_postgres() {
    let Some(server) = server() else { return };
    let db = server.fresh_db("template");
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(run(tmp.path(), &["init", "shop"]).status.code(), Some(0));
    let d = tmp.path().join("shop");
    std::fs::write(d.join("profiles.yml"), server.profiles("shop", &[("pg", &db)])).unwrap();
    let out = kiln_pg(&d, &server, &["build", "--profiles-dir", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let results: Value = serde_json::from_str(&std::fs::read_to_string(d.join("target/run_results.json")).unwrap()).unwrap();
    let results = results["results"].as_array().unwrap();
    assert!(results.len() >= 10, "{results:?}");
    assert!(results.iter().all(|r| r["status"] == "success" || r["status"] == "pass"), "{results:?}");
}

/// One contract, written as users write types, passes on DataFusion and on PostgreSQL when the
/// data matches (text built with `||`, numeric with precision, timestamps, integers).
#[test]
fn one_contract_passes_on_both_engines() {
    let Some(server) = server() else { return };
    let db = server.fresh_db("contract");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("models")).unwrap();
    std::fs::write(d.join("dbt_project.yml"), "name: ct\nconfig-version: 2\nprofile: ct\n").unwrap();
    let mut profiles = server.profiles("ct", &[("pg", &db)]);
    profiles.push_str("    local:\n      type: datafusion\n      schema: analytics\n");
    std::fs::write(d.join("profiles.yml"), profiles).unwrap();
    std::fs::write(
        d.join("models/contracted.sql"),
        "{{ config(materialized='table') }}\nselect cast(1 as integer) as id, 'a' || 'b' as name, cast(1.5 as numeric(10, 2)) as amount, \
         cast('2024-01-01 10:00:00' as timestamp) as at, true as flag\n",
    )
    .unwrap();
    std::fs::write(
        d.join("models/contracted.yml"),
        "version: 2\nmodels:\n  - name: contracted\n    config:\n      contract: {enforced: true}\n    columns:\n      - {name: id, data_type: integer}\n      - {name: name, data_type: varchar}\n      - {name: amount, data_type: 'numeric(10,2)'}\n      - {name: at, data_type: timestamp}\n      - {name: flag, data_type: boolean}\n",
    )
    .unwrap();
    for target in ["local", "pg"] {
        let out = kiln_pg(d, &server, &["run", "--profiles-dir", ".", "-t", target]);
        assert_eq!(out.status.code(), Some(0), "{target}: {}", stderr(&out));
    }
}

/// SIGTERM during a long statement cancels it on the server: kiln ends within seconds with exit
/// 130 and the table keeps its previous version.
#[test]
fn sigterm_cancels_a_running_statement() {
    let Some(server) = server() else { return };
    let db = server.fresh_db("cancel");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("models")).unwrap();
    std::fs::write(d.join("dbt_project.yml"), "name: cx\nconfig-version: 2\nprofile: cx\nmodels:\n  cx:\n    +materialized: table\n")
        .unwrap();
    std::fs::write(d.join("profiles.yml"), server.profiles("cx", &[("pg", &db)])).unwrap();
    std::fs::write(d.join("models/slow.sql"), "select 1 as v\n").unwrap();
    assert_eq!(kiln_pg(d, &server, &["run", "--profiles-dir", "."]).status.code(), Some(0));
    std::fs::write(d.join("models/slow.sql"), "select 2 as v from pg_sleep(60)\n").unwrap();
    let child = kiln(d)
        .args(["run", "--profiles-dir", "."])
        .env("KILN_TEST_PG_PASSWORD", server.password.clone().unwrap_or_default())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (out, took) = terminate_after(child, std::time::Duration::from_millis(3000));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?} after SIGTERM\n{err}");
    let out = kiln_pg(d, &server, &["show", "--profiles-dir", ".", "--inline", "select v from {{ ref('slow') }}", "-o", "json"]);
    assert!(stdout(&out).contains("\"v\":1"), "the previous version: {}{}", stdout(&out), stderr(&out));
}

/// Secrets on PostgreSQL: a model that renders one is refused before anything reaches the
/// catalog, and a hook whose error echoes the secret (a failed cast quotes its input) has it
/// masked in every output.
#[test]
fn secrets_stay_out_of_the_postgres_catalog_and_errors() {
    let Some(server) = server() else { return };
    let db = server.fresh_db("secrets");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: s\nconfig-version: 2\nprofile: s\n");
    write(d, "profiles.yml", &server.profiles("s", &[("pg", &db)]));
    let secret = "tok\"en\\ü-9876";
    write(d, "models/v.sql", "select '{{ env_var(\"DBT_ENV_SECRET_TOKEN\") | upper }}' as token\n");
    let out = kiln(d).args(["run"]).env("DBT_ENV_SECRET_TOKEN", secret).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("error[E211]") && stderr(&out).contains("models/v.sql:1"), "{}", stderr(&out));
    write(d, "models/v.sql", "{{ config(post_hook=\"select '{{ env_var('DBT_ENV_SECRET_TOKEN') }}'::int\") }}\nselect 1 as id\n");
    for format in ["text", "json"] {
        let out = kiln(d).args(["run", "--log-format", format]).env("DBT_ENV_SECRET_TOKEN", secret).output().unwrap();
        let text = stdout(&out) + &stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{format}: the cast fails: {text}");
        assert!(text.contains("invalid input syntax") && text.contains("*****") && !text.contains("9876"), "{format}: {text}");
    }
    let rows = engine_rows(&server.engine(&db), "(select definition from pg_views where schemaname = 'analytics') as v");
    assert_eq!(rows.len(), 1, "the view is built: {rows:?}");
    assert!(rows.iter().all(|v| !v.contains("9876")), "{rows:?}");
    for entry in walkdir::WalkDir::new(d.join("target")).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file()) {
        assert!(!std::fs::read_to_string(entry.path()).unwrap_or_default().contains("9876"), "{} holds the secret", entry.path().display());
    }
}

/// The project of `fidelity::unbuildable_configs_fail_only_their_nodes` on PostgreSQL:
/// `insert_overwrite` and `tabel` warn at parse and fail alone; the project's strategy macro
/// runs on the server.
#[test]
fn unbuildable_configs_fail_only_their_nodes_on_postgres() {
    let Some(server) = server() else { return };
    let db = server.fresh_db("unbuildable");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    crate::fidelity::write_unbuildable_project(d);
    write(d, "profiles.yml", &server.profiles("inc", &[("pg", &db)]));
    crate::fidelity::check_unbuildable_project(d, "postgres");
}

/// A source declared as a file (dbt-duckdb's `external_location`) is read on the embedded
/// engine; on PostgreSQL, which cannot read files, a model that selects from it gets a warning
/// naming the source and its line, and reads the warehouse's relation.
#[test]
fn file_sources_on_postgres_are_reported() {
    let Some(server) = server() else { return };
    let db = server.fresh_db("file_sources");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "dbt_project.yml", "name: f\nconfig-version: 2\nprofile: f\n");
    write(d, "profiles.yml", &server.profiles("f", &[("pg", &db)]));
    write(d, "data/users.csv", "id\n1\n");
    write(
        d,
        "models/sources.yml",
        "version: 2\nsources:\n  - name: app\n    schema: analytics\n    tables:\n      - name: users\n        config:\n          external_location: data/users.csv\n",
    );
    write(d, "models/m.sql", "select * from {{ source('app', 'users') }}\n");
    server.engine(&db).execute("create schema if not exists analytics; create table analytics.users as select 7 as id").unwrap();
    let out = kiln(d).args(["run"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("warning[E118]: source `app.users` is a file") && err.contains("--> models/sources.yml:6"), "{err}");
    assert_eq!(engine_rows(&server.engine(&db), "analytics.m"), ["7.000000"]);
}

/// `--defer` on PostgreSQL: prod and dev are two schemas of one database.
#[test]
fn defer_reads_unselected_parents_from_the_state_run_on_postgres() {
    let Some(server) = server() else { return };
    let db = server.fresh_db("defer");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let profiles = server.profiles("st", &[("prod", &db), ("dev", &db)]);
    // One database, a schema per target.
    let profiles = profiles.replacen("schema: analytics", "schema: prod", 1).replacen("schema: analytics", "schema: dev", 1);
    crate::state::write_project(d, &profiles);
    let engine = server.engine(&db);
    let rows = |sql: &str| -> Vec<String> { engine_rows(&engine, &format!("({sql}) as q")) };
    crate::state::check_defer(d, &rows);
}

/// Snapshots on PostgreSQL hold dbt-postgres' rows after each batch of source changes, under each
/// `hard_deletes` mode, and the embedded engine (`type: datafusion`) holds the same rows.
#[test]
fn snapshots_match_dbt_postgres_and_the_embedded_engine() {
    use crate::dbt_parity::{SNAPSHOT_BATCHES, SNAPSHOTS, snapshot_project};
    let Some(server) = server() else { return };
    let Some(dbt) = peer("KILN_TEST_DBT", "the dbt-postgres snapshot parity test") else { return };
    for hd in ["ignore", "invalidate", "new_record"] {
        let (ours, theirs) = (server.fresh_db("snap_kiln"), server.fresh_db("snap_dbt"));
        let (kdir, ddir, edir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for d in [kdir.path(), ddir.path(), edir.path()] {
            snapshot_project(d);
            let mut profiles = server.profiles("snap", &[("kiln", &ours), ("dbt", &theirs)]);
            profiles.push_str("    embedded:\n      type: datafusion\n      schema: analytics\n");
            write(d, "profiles.yml", &profiles);
        }
        let embedded_rows = |relation: &str| -> Vec<String> {
            let out = run(
                edir.path(),
                &[
                    "show",
                    "--profiles-dir",
                    ".",
                    "-t",
                    "embedded",
                    "--inline",
                    &format!("select * from {relation}"),
                    "--limit",
                    "1000",
                    "-o",
                    "json",
                ],
            );
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            shown_rows(&out, canon)
        };
        for (i, batch) in SNAPSHOT_BATCHES.iter().enumerate() {
            let vars = format!("{{now: '2030-01-0{} 00:00:00', hd: {hd}}}", i + 1);
            for d in [kdir.path(), ddir.path(), edir.path()] {
                write(d, "seeds/src.csv", batch);
            }
            let args = ["build", "--full-refresh", "--profiles-dir", ".", "--vars", &vars];
            let out = std::process::Command::new(&dbt)
                .args(args)
                .args(["--target", "dbt"])
                .current_dir(ddir.path())
                .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
                .env("KILN_TEST_PG_PASSWORD", server.password.clone().unwrap_or_default())
                .output()
                .unwrap();
            assert!(out.status.success(), "dbt build (batch {i}, {hd}):\n{}", String::from_utf8_lossy(&out.stdout));
            let out = kiln_pg(kdir.path(), &server, &[&args[..], &["--target", "kiln"]].concat());
            assert_eq!(out.status.code(), Some(0), "kiln build (batch {i}, {hd}):\n{}", stderr(&out));
            let out = run(edir.path(), &[&args[..], &["--target", "embedded"]].concat());
            assert_eq!(out.status.code(), Some(0), "kiln build on the embedded engine (batch {i}, {hd}):\n{}", stderr(&out));
            let (ke, de) = (server.engine(&ours), server.engine(&theirs));
            for relation in SNAPSHOTS {
                let r =
                    RelationName { database: String::new(), schema: "snaps".into(), name: relation.trim_start_matches("snaps.").into() };
                let columns = ke.describe(&r).unwrap();
                assert_eq!(columns, de.describe(&r).unwrap(), "columns of {relation} (batch {i}, {hd})");
                let theirs_rows = engine_rows(&de, relation);
                assert_eq!(engine_rows(&ke, relation), theirs_rows, "rows of {relation} after batch {i} ({hd})");
                assert_eq!(embedded_rows(relation), theirs_rows, "the embedded engine's {relation} after batch {i} ({hd})");
            }
        }
    }
}

/// `kiln compile --introspect` reads the sources' columns from PostgreSQL once; analysis then
/// types the models that read them, offline.
#[test]
fn introspected_sources_type_the_models_that_read_them() {
    let Some(server) = server() else { return };
    let (tmp, db) = server.pgshop("introspect");
    let d = tmp.path();
    let pg = server.engine(&db);
    pg.execute("create schema landing").unwrap();
    pg.execute("create table landing.payments (payment_id integer, order_id integer, amount numeric(10,2), paid_at timestamp)").unwrap();
    std::fs::write(
        d.join("models/staging/sources.yml"),
        "version: 2\nsources:\n  - name: landing\n    schema: landing\n    tables:\n      - name: payments\n      - name: refunds\n",
    )
    .unwrap();
    std::fs::write(
        d.join("models/staging/stg_payments.sql"),
        "select payment_id, order_id, amunt from {{ source('landing', 'payments') }}\n",
    )
    .unwrap();
    let e701 = |out: &std::process::Output| stderr(out).contains("error[E701]: column `amunt` not found in `payments`");
    // Without the warehouse's columns the source is unknown, and so is the typo.
    let out = kiln_pg(d, &server, &["compile", "--profiles-dir", ".", "-s", "stg_payments"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Read once: kept in target/source_columns.json; a source the warehouse lacks is said.
    let out = kiln_pg(d, &server, &["compile", "--profiles-dir", ".", "-s", "stg_payments", "--introspect"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(e701(&out), "{}", stderr(&out));
    assert!(stderr(&out).contains("the warehouse has no relation for 1 source(s): landing.refunds"), "{}", stderr(&out));
    let cached: Value = serde_json::from_str(&std::fs::read_to_string(d.join("target/source_columns.json")).unwrap()).unwrap();
    let columns = &cached["sources"]["source.pgshop.landing.payments"]["columns"];
    assert_eq!(columns[2], serde_json::json!({"name": "amount", "data_type": "numeric(10,2)"}), "{cached}");
    // Then offline: a profile that cannot connect still finds it, from the file.
    std::fs::write(d.join("profiles.yml"), "pgshop:\n  target: kiln\n  outputs:\n    kiln:\n      type: postgres\n      host: 127.0.0.1\n      port: 9\n      user: nobody\n      password: x\n      dbname: nowhere\n      schema: analytics\n").unwrap();
    let out = kiln(d).args(["compile", "--profiles-dir", ".", "-s", "stg_payments"]).output().unwrap();
    assert!(e701(&out), "{}", stderr(&out));
    // With the typo fixed, the model is typed from the warehouse's types.
    std::fs::write(
        d.join("models/staging/stg_payments.sql"),
        "select payment_id, order_id, amount from {{ source('landing', 'payments') }}\n",
    )
    .unwrap();
    let out = kiln(d).args(["compile", "--profiles-dir", ".", "-s", "stg_payments", "--static-analysis", "strict"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(d.join("target/manifest.json")).unwrap()).unwrap();
    let amount = &manifest["nodes"]["model.pgshop.stg_payments"]["columns"]["amount"];
    assert!(amount["data_type"].as_str().is_some_and(|t| t.starts_with("DECIMAL(10")), "{amount}");
}
