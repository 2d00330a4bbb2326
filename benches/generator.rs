//! Writes realistic dbt projects of N models for benchmarks: staging -> intermediate -> marts
//! layers, 1-3 `ref`s per model (looped over in Jinja), several macro calls with `{% for %}`
//! loops per model, `{% set %}`, `config()`, `var()`, incremental models with their
//! `is_incremental()` block, ephemeral models, and schema tests on every model. The SQL is
//! plain enough for DataFusion, PostgreSQL and DuckDB alike. Deterministic: the same N gives
//! the same project.

use std::fmt::Write as _;
use std::path::Path;

/// A tiny deterministic generator (no `rand` dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

pub struct Spec {
    pub models: usize,
    pub seed_rows: usize,
}

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create dir");
    }
    std::fs::write(path, text).expect("write file");
}

pub fn generate(dir: &Path, spec: &Spec) {
    let n = spec.models.max(10);
    let mut rng = Lcg(42);
    write(
        &dir.join("dbt_project.yml"),
        "name: bench\nconfig-version: 2\nprofile: bench\n\nvars:\n  statuses: ['placed', 'shipped', 'completed', 'returned']\n  min_amount: 0\n\nmodels:\n  bench:\n    staging:\n      +materialized: view\n    intermediate:\n      +materialized: view\n    marts:\n      +materialized: table\n      +tags: ['marts']\n",
    );
    write(
        &dir.join("macros/helpers.sql"),
        "{% macro cents_to_dollars(col, scale=2) -%}\n    round({{ col }} / 100.0, {{ scale }})\n{%- endmacro %}\n\n\
         {% macro safe_divide(a, b) -%}\n    case when {{ b }} = 0 then null else {{ a }} / {{ b }} end\n{%- endmacro %}\n\n\
         {% macro status_flags(statuses) -%}\n    {%- for s in statuses %}\n    sum(case when status = '{{ s }}' then 1 else 0 end) as n_{{ s }}{{ ',' if not loop.last }}\n    {%- endfor %}\n{%- endmacro %}\n\n\
         {% macro select_columns(columns, alias=none) -%}\n    {%- for c in columns %}\n    {% if alias %}{{ alias }}.{% endif %}{{ c }}{{ ',' if not loop.last }}\n    {%- endfor %}\n{%- endmacro %}\n\n\
         {% macro date_bucket(col, grain='day') -%}\n    date_trunc('{{ grain }}', {{ col }})\n{%- endmacro %}\n\n\
         {% macro is_valid_status(col) -%}\n    {%- set statuses = var('statuses') -%}\n    {{ col }} in ({% for s in statuses %}'{{ s }}'{{ ', ' if not loop.last }}{% endfor %})\n{%- endmacro %}\n",
    );
    // Seeds.
    let rows = spec.seed_rows.max(1);
    let mut orders = String::from("id,customer_id,amount_cents,status,created_at\n");
    let statuses = ["placed", "shipped", "completed", "returned"];
    for i in 1..=rows {
        let _ = writeln!(
            orders,
            "{i},{},{},{},2024-01-{:02} 10:{:02}:00",
            1 + rng.below(rows / 10 + 1),
            rng.below(100_000),
            statuses[rng.below(4)],
            1 + rng.below(28),
            rng.below(60)
        );
    }
    write(&dir.join("seeds/raw_orders.csv"), &orders);
    let mut customers = String::from("id,name,country\n");
    for i in 1..=(rows / 10).max(1) {
        let _ = writeln!(customers, "{i},customer_{i},{}", ["NL", "DE", "FR", "US"][rng.below(4)]);
    }
    write(&dir.join("seeds/raw_customers.csv"), &customers);

    let n_staging = (n / 10).max(2);
    let n_marts = (n * 3 / 10).max(2);
    let n_int = n - n_staging - n_marts;
    let mut layers: Vec<(String, &str)> = Vec::with_capacity(n);
    let folder_size = 100;
    // Staging: select from seeds.
    for i in 0..n_staging {
        let name = format!("stg_{i:05}");
        let (seed, body) = if i % 2 == 0 {
            ("raw_orders", "id, customer_id, {{ cents_to_dollars('amount_cents') }} as amount, status, created_at")
        } else {
            ("raw_orders", "id, customer_id, cast(amount_cents as double precision) / 100 as amount, lower(status) as status, created_at")
        };
        let sql = format!("select\n    {body}\nfrom {{{{ ref('{seed}') }}}}\nwhere amount_cents >= {{{{ var('min_amount') }}}}\n");
        write(&dir.join(format!("models/staging/g{:03}/{name}.sql", i / folder_size)), &sql);
        layers.push((name, "staging"));
    }
    // Intermediate: 1-3 refs to earlier models, loops, some ephemeral.
    for i in 0..n_int {
        let name = format!("int_{i:05}");
        let k = 1 + rng.below(3);
        let mut parents: Vec<String> = (0..k).map(|_| layers[rng.below(layers.len())].0.clone()).collect();
        parents.sort();
        parents.dedup();
        let ephemeral = i % 17 == 0;
        let mut sql = String::new();
        if ephemeral {
            sql.push_str("{{ config(materialized='ephemeral') }}\n");
        }
        // As real projects write them: a column list set once and looped over by a macro, the
        // parents looped over, several macro calls, a var.
        let list: Vec<String> = parents.iter().map(|p| format!("'{p}'")).collect();
        let _ = writeln!(sql, "{{%- set columns = ['id', 'customer_id', 'amount', 'status', 'created_at'] -%}}");
        let _ = writeln!(sql, "{{%- set parents = [{}] -%}}\n", list.join(", "));
        sql.push_str("with unioned as (\n    {%- for p in parents %}\n    select {{ select_columns(columns) }}\n    from {{ ref(p) }}\n    {%- if not loop.last %}\n    union all\n    {%- endif %}\n    {%- endfor %}\n)\n\n");
        sql.push_str("select\n    {{ select_columns(columns, 'u') }},\n    {{ date_bucket('u.created_at') }} as created_day,\n    {{ date_bucket('u.created_at', 'month') }} as created_month\nfrom unioned as u\nwhere u.amount >= {{ var('min_amount') }}\n");
        if i % 3 == 0 {
            sql.push_str("  and {{ is_valid_status('u.status') }}\n");
        }
        write(&dir.join(format!("models/intermediate/g{:03}/{name}.sql", i / folder_size)), &sql);
        layers.push((name, "intermediate"));
    }
    // Marts: aggregates, some incremental.
    let int_start = n_staging;
    for i in 0..n_marts {
        let name = format!("fct_{i:05}");
        let p = &layers[int_start + rng.below(n_int)].0;
        let incremental = i % 5 == 0;
        let mut sql = String::new();
        if incremental {
            sql.push_str("{{ config(materialized='incremental', unique_key='customer_id') }}\n\n");
        }
        let _ = write!(
            sql,
            "select\n    customer_id,\n    count(*) as orders,\n    sum(amount) as total_amount,\n    {{{{ safe_divide('sum(amount)', 'count(*)') }}}} as avg_amount,\n    {{{{ status_flags(var('statuses')) }}}},\n    max(created_at) as last_order_at\nfrom {{{{ ref('{p}') }}}}\n"
        );
        if incremental {
            sql.push_str("{% if is_incremental() %}\n{%- set cutoff = \"(select max(last_order_at) from \" ~ this ~ \")\" %}\nwhere created_at > {{ cutoff }}\n{% endif %}\n");
        }
        sql.push_str("group by customer_id\n");
        write(&dir.join(format!("models/marts/g{:03}/{name}.sql", i / folder_size)), &sql);
        layers.push((name, "marts"));
    }
    // A schema test or two on every model, one properties file per folder.
    let mut by_folder: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for (name, layer) in &layers {
        let group = name[name.len() - 5..].parse::<usize>().unwrap_or(0) / folder_size;
        let key = format!("models/{layer}/g{group:03}/schema.yml");
        let entry = by_folder.entry(key).or_insert_with(|| "version: 2\n\nmodels:\n".to_string());
        if *layer == "marts" {
            let _ = writeln!(entry, "  - name: {name}\n    columns:\n      - name: customer_id\n        data_tests: [not_null, unique]");
        } else {
            let _ = writeln!(
                entry,
                "  - name: {name}\n    columns:\n      - name: id\n        data_tests: [not_null]\n      - name: status\n        data_tests:\n          - accepted_values:\n              values: ['placed', 'shipped', 'completed', 'returned']"
            );
        }
    }
    for (path, text) in by_folder {
        write(&dir.join(path), &text);
    }
}

/// `profiles.yml` with two targets on the same project: `kiln` (embedded DataFusion, the
/// default) and `dbt` (dbt-duckdb, for the side-by-side runs), both 4 threads.
pub fn write_profiles(dir: &Path) {
    write(
        &dir.join("profiles.yml"),
        "bench:\n  target: kiln\n  outputs:\n    kiln:\n      type: datafusion\n      threads: 4\n    dbt:\n      type: duckdb\n      path: dbt.duckdb\n      threads: 4\n",
    );
}

/// Runs `dbt <args>` on the `dbt` target of [`write_profiles`]; wall seconds. `dbt` is the
/// executable of a venv with dbt-core and dbt-duckdb (`KILN_BENCH_DBT`).
pub fn run_dbt(dbt: &std::ffi::OsStr, dir: &Path, args: &[&str]) -> f64 {
    let start = std::time::Instant::now();
    let out = std::process::Command::new(dbt)
        .args(args)
        .args(["--profiles-dir", ".", "--target", "dbt", "--quiet"])
        .current_dir(dir)
        .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        .output()
        .expect("run dbt");
    assert!(out.status.success(), "dbt {args:?} failed:\n{}", String::from_utf8_lossy(&out.stdout));
    start.elapsed().as_secs_f64()
}

/// The `dbt` to compare with: `KILN_BENCH_DBT=/path/to/dbt`, or `KILN_BENCH_DBT=venv` for a venv
/// the bench makes itself under `target/bench-venv` (dbt-core 1.10, dbt-duckdb 1.9 and
/// dbt-postgres 1.9 from PyPI, installed once). `None` when unset: only kiln is timed.
pub fn dbt() -> Option<std::ffi::OsString> {
    let value = std::env::var_os("KILN_BENCH_DBT")?;
    if value != "venv" {
        return Some(value);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-venv");
    let dbt = venv.join("bin/dbt");
    let ok = |dbt: &Path| std::process::Command::new(dbt).arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok(&dbt) {
        println!("installing dbt-core, dbt-duckdb and dbt-postgres into {} ...", venv.display());
        let run = |cmd: &mut std::process::Command| {
            let status = cmd.status().expect("run python3 (needed for KILN_BENCH_DBT=venv)");
            assert!(status.success(), "{cmd:?} failed");
        };
        run(std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(std::process::Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "dbt-core>=1.10,<1.11",
            "dbt-duckdb>=1.9,<1.10",
            "dbt-postgres>=1.9,<1.10",
        ]));
        assert!(ok(&dbt), "{} does not run after installing", dbt.display());
    }
    Some(dbt.into_os_string())
}
