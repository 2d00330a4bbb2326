//! The embedded engine beside DuckDB, on the SQL shapes dbt projects are made of: the same data
//! (Parquet files DuckDB generates), the same SQL, the same machine, run in turn. kiln's time
//! is each model's execution time in `target/run_results.json` (planning, running and writing
//! the table); DuckDB's the `create table ... as` of the same select in a database file. Every
//! shape's result is checked to be the same in both (row count and order-independent sums).
//!
//!     KILN_BENCH_DBT=venv cargo bench --bench engine              # 1,000,000 rows
//!     KILN_BENCH_DBT=venv cargo bench --bench engine -- 10000000 2GB   # rows, kiln's --memory-limit
//!     KILN_BENCH_DIR=/tmp/e ...                                    # keep the project (for profiling)
//!     KILN_BENCH_RUNS=5 ...                                        # best of 5 (default 3), each side
//!
//! DuckDB comes from the venv of `KILN_BENCH_DBT` (dbt-duckdb brings it; see `generator.rs`).

#[allow(dead_code)] // the dbt helpers other benches use
mod generator;

use std::path::Path;
use std::process::Command;

/// One shape: its name, its SQL (with `{orders}`, `{orders_b}`, `{customers}`, `{products}` for
/// the inputs and `{prior}` for a table written before), and the sums that check its result.
struct Shape {
    name: &'static str,
    sql: &'static str,
    check: &'static str,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "dedupe",
        sql: "with unioned as (select * from {orders} union all select * from {orders_b}),\n\
              ranked as (select unioned.*, row_number() over (partition by order_id order by ordered_at desc, amount desc) as rn from unioned)\n\
              select cast(order_id as integer) as order_id, customer_id, product_id, ordered_at, amount, status from ranked where rn = 1",
        check: "count(*), sum(order_id), sum(cast(amount as double)), sum(extract(epoch from ordered_at))",
    },
    Shape {
        name: "top_n",
        sql: "select order_id, customer_id, amount from (\n\
              select order_id, customer_id, amount, row_number() over (partition by customer_id order by amount desc, order_id) as rn from {orders}\n\
              ) ranked where rn <= 3",
        check: "count(*), sum(order_id), sum(cast(amount as double))",
    },
    Shape {
        name: "windows_many_groups",
        sql: "select order_id,\n\
              rank() over (partition by customer_id order by ordered_at, order_id) as rk,\n\
              dense_rank() over (partition by customer_id order by status) as drk,\n\
              lag(amount) over (partition by customer_id order by ordered_at, order_id) as prev_amount,\n\
              lead(amount) over (partition by customer_id order by ordered_at, order_id) as next_amount,\n\
              sum(amount) over (partition by customer_id order by ordered_at, order_id rows between unbounded preceding and current row) as running\n\
              from {orders}",
        check: "count(*), sum(rk), sum(drk), sum(cast(prev_amount as double)), sum(cast(next_amount as double)), sum(cast(running as double))",
    },
    Shape {
        name: "windows_few_groups",
        sql: "select order_id,\n\
              rank() over (partition by status order by amount, order_id) as rk,\n\
              ntile(100) over (partition by status order by amount, order_id) as tile,\n\
              sum(amount) over (partition by status order by amount, order_id rows between unbounded preceding and current row) as running\n\
              from {orders}",
        check: "count(*), sum(rk), sum(tile), sum(cast(running as double))",
    },
    Shape {
        name: "join_inner",
        sql: "select o.order_id, c.segment, p.category, o.amount * p.price as value\n\
              from {orders} o join {customers} c on o.customer_id = c.customer_id join {products} p on o.product_id = p.product_id",
        check: "count(*), sum(order_id), sum(cast(value as double)), sum(length(segment)), sum(length(category))",
    },
    Shape {
        name: "join_left",
        sql: "select o.order_id, c.segment, p.category, c.created_at\n\
              from {orders} o left join {customers} c on o.customer_id = c.customer_id left join {products} p on o.product_id = p.product_id",
        check: "count(*), sum(order_id), count(segment), count(category), sum(extract(epoch from created_at))",
    },
    Shape {
        name: "group_by",
        sql: "select date_trunc('day', ordered_at) as day, status, count(*) as n, sum(amount) as total, avg(amount) as mean,\n\
              min(ordered_at) as first_at, max(ordered_at) as last_at from {orders} group by 1, 2",
        check: "count(*), sum(n), sum(cast(total as double)), sum(cast(mean as double)), sum(extract(epoch from first_at)), sum(extract(epoch from last_at))",
    },
    Shape {
        name: "count_distinct",
        sql: "select status, count(distinct customer_id) as customers, count(distinct product_id) as products, count(distinct date_trunc('day', ordered_at)) as days\n\
              from {orders} group by status",
        check: "count(*), sum(customers), sum(products), sum(days)",
    },
    Shape {
        name: "scalar",
        sql: "select order_id, extract(year from ordered_at) as y, date_trunc('month', ordered_at) as month, cast(amount as integer) as whole,\n\
              case when amount > 500 then 'big' when amount > 100 then 'mid' else 'small' end as size,\n\
              upper(status) as status_upper, length(status) as status_length, concat(status, '-', cast(customer_id as varchar)) as tag,\n\
              replace(status, 'e', 'E') as replaced, substr(status, 1, 3) as prefix\n\
              from {orders}",
        check: "count(*), sum(y), sum(extract(epoch from month)), sum(whole), sum(length(size)), sum(length(status_upper)), sum(status_length), sum(length(tag)), sum(length(prefix))",
    },
    Shape {
        name: "read_back",
        sql: "select size, count(*) as n, sum(whole) as whole from {prior} group by size",
        check: "count(*), sum(n), sum(whole)",
    },
];

/// Generates the inputs as Parquet with DuckDB: `orders` (`rows`), `orders_b` (a tenth of them
/// again, later), `customers` (rows / 10, 80% of the ids orders use), `products` (2,000), and
/// `orders.csv` for the seed shape.
const GENERATE: &str = r#"
import duckdb, sys
rows, out = int(sys.argv[1]), sys.argv[2]
c = duckdb.connect()
c.execute("select setseed(0.42)")
customers = max(rows // 10, 1)
c.execute(f"""copy (select i as order_id, (i * 7919) % {customers} as customer_id, (i * 31) % 2000 as product_id,
  timestamp '2024-01-01' + to_seconds((i * 104729) % 31536000) as ordered_at,
  cast(((i * 193) % 100000) / 100.0 as decimal(12,2)) as amount,
  ['placed','shipped','completed','returned','pending'][1 + (i % 5)] as status
  from range({rows}) t(i)) to '{out}/orders.parquet' (format parquet)""")
c.execute(f"""copy (select order_id, customer_id, product_id, ordered_at + interval 1 day as ordered_at, amount + 1 as amount, 'shipped' as status
  from read_parquet('{out}/orders.parquet') where order_id % 10 = 0) to '{out}/orders_b.parquet' (format parquet)""")
c.execute(f"""copy (select i as customer_id, ['consumer','corporate','home','small','enterprise'][1 + (i % 5)] as segment,
  timestamp '2020-01-01' + to_seconds(i * 60) as created_at
  from range({customers}) t(i) where i % 5 <> 4) to '{out}/customers.parquet' (format parquet)""")
c.execute(f"""copy (select i as product_id, 'category_' || (i % 20) as category, cast(1 + (i % 97) / 10.0 as decimal(8,2)) as price
  from range(2000) t(i)) to '{out}/products.parquet' (format parquet)""")
c.execute(f"copy (select * from read_parquet('{out}/orders.parquet')) to '{out}/orders.csv' (header, delimiter ',')")
"#;

/// Runs every shape in DuckDB: `create table` of each select (the best of `runs`), then each
/// check. Prints one line per shape: `name<TAB>seconds<TAB>check values`.
const DUCKDB: &str = r#"
import duckdb, sys, time, json
out, shapes, runs = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
c = duckdb.connect(f"{out}/duck.duckdb")
c.execute("set enable_progress_bar = false")
for name in ['orders', 'orders_b', 'customers', 'products']:
    c.execute(f"create or replace view {name} as select * from read_parquet('{out}/{name}.parquet')")
def best(sql):
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        c.execute(sql)
        took.append(time.perf_counter() - start)
    return min(took)
seed = best(f"create or replace table seed_orders as select * from read_csv('{out}/../seeds/seed_orders.csv', header=true, columns={{'order_id': 'bigint', 'customer_id': 'bigint', 'product_id': 'bigint', 'ordered_at': 'timestamp', 'amount': 'decimal(12,2)', 'status': 'varchar'}})")
check = c.execute("select count(*), sum(order_id), sum(cast(amount as double)) from seed_orders").fetchone()
print("seed_csv\t%f\t%s" % (seed, json.dumps([float(v) for v in check])))
for s in shapes:
    took = best(f"create or replace table {s['name']} as {s['sql']}")
    check = c.execute(f"select {s['check']} from {s['name']}").fetchone()
    print("%s\t%f\t%s" % (s['name'], took, json.dumps([float(v) if v is not None else None for v in check])))
"#;

fn python() -> std::path::PathBuf {
    let dbt = generator::dbt().expect("set KILN_BENCH_DBT (a venv's dbt, or `venv`): DuckDB comes from that venv");
    Path::new(&dbt).with_file_name("python")
}

fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python()).arg("-c").arg(script).args(args).output().expect("python runs");
    assert!(out.status.success(), "python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kiln(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).current_dir(dir).output().expect("kiln runs");
    assert!(out.status.success(), "kiln {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The kiln project: a source per Parquet file, the CSV as a seed, a table model per shape.
fn write_project(dir: &Path) {
    let write = |path: &str, text: &str| {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "dbt_project.yml",
        "name: engine\nconfig-version: 2\nmodels:\n  engine:\n    +materialized: table\nseeds:\n  engine:\n    seed_orders:\n      +column_types: {order_id: bigint, customer_id: bigint, product_id: bigint, ordered_at: timestamp, amount: 'decimal(12,2)', status: varchar}\n",
    );
    let mut sources = String::from("version: 2\nsources:\n  - name: raw\n    tables:\n");
    for t in ["orders", "orders_b", "customers", "products"] {
        sources.push_str(&format!("      - name: {t}\n        meta:\n          external_location: \"data/{t}.parquet\"\n"));
    }
    write("models/sources.yml", &sources);
    let mut prior = "";
    for s in SHAPES {
        let mut sql = s.sql.to_string();
        for t in ["orders_b", "orders", "customers", "products"] {
            sql = sql.replace(&format!("{{{t}}}"), &format!("{{{{ source('raw', '{t}') }}}}"));
        }
        sql = sql.replace("{prior}", &format!("{{{{ ref('{prior}') }}}}"));
        write(&format!("models/{}.sql", s.name), &sql);
        prior = s.name;
    }
}

/// Runs `kiln build` once: its wall time (seconds) and peak RSS (MB).
fn build(dir: &Path, args: &[&str]) -> (f64, f64) {
    let started = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).current_dir(dir).spawn().expect("kiln runs");
    let (mut status, mut usage): (libc::c_int, libc::rusage) = (0, unsafe { std::mem::zeroed() });
    // SAFETY: waits for the child we started; wait4 writes into values we own.
    unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let _ = child.try_wait();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "kiln build failed");
    (started.elapsed().as_secs_f64(), usage.ru_maxrss as f64 / 1024.0)
}

/// Each node's execution time in the last build's `run_results.json`, by node name.
fn execution_times(dir: &Path) -> std::collections::HashMap<String, f64> {
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("target/run_results.json")).unwrap()).unwrap();
    let results = results["results"].as_array().unwrap().iter();
    results
        .filter_map(|r| {
            let name = r["unique_id"].as_str()?.rsplit('.').next()?.to_string();
            Some((name, r["execution_time"].as_f64()?))
        })
        .collect()
}

/// kiln's check values of a shape's table.
fn kiln_check(dir: &Path, table: &str, check: &str) -> Vec<Option<f64>> {
    let out = kiln(dir, &["show", "--inline", &format!("select {check} from {{{{ ref('{table}') }}}}"), "-o", "json", "--quiet"]);
    let row: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    row.values().map(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))).collect()
}

fn same(a: &[Option<f64>], b: &[Option<f64>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0),
            (None, None) => true,
            _ => false,
        })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let rows: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let memory_limit = args.get(1).cloned();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = std::env::var_os("KILN_BENCH_DIR").map_or_else(|| tmp.path().to_path_buf(), std::path::PathBuf::from);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    println!("generating {rows} orders with DuckDB ...");
    run_python(GENERATE, &[&rows.to_string(), &data.to_string_lossy()]);
    write_project(&dir);
    std::fs::create_dir_all(dir.join("seeds")).unwrap();
    std::fs::rename(data.join("orders.csv"), dir.join("seeds/seed_orders.csv")).unwrap();
    // kiln: the seed, then every shape (one thread: DuckDB runs one statement at a time too).
    let mut run = vec!["build", "--threads", "1", "--quiet"];
    if let Some(limit) = &memory_limit {
        run.extend(["--memory-limit", limit]);
    }
    let runs: usize = std::env::var("KILN_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let (kiln_wall, peak_rss) = build(&dir, &run);
    let mut best = execution_times(&dir);
    for _ in 1..runs {
        build(&dir, &run);
        for (name, secs) in execution_times(&dir) {
            best.entry(name).and_modify(|b| *b = f64::min(*b, secs)).or_insert(secs);
        }
    }
    let kiln_time = |name: &str| best.get(name).copied().unwrap_or(f64::NAN);
    // DuckDB: the same selects over the same files.
    let shapes: Vec<serde_json::Value> = SHAPES
        .iter()
        .map(|s| {
            let sql = s.sql.replace("{prior}", "scalar").replace(['{', '}'], "");
            serde_json::json!({"name": s.name, "sql": sql, "check": s.check})
        })
        .collect();
    let duck = run_python(DUCKDB, &[&data.to_string_lossy(), &serde_json::to_string(&shapes).unwrap(), &runs.to_string()]);
    println!(
        "\n{rows} rows, {} cores, kiln {} (one model at a time{}), DuckDB {}; seconds, best of {runs}\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        env!("CARGO_PKG_VERSION"),
        memory_limit.as_ref().map_or(String::new(), |m| format!(", --memory-limit {m}")),
        run_python("import duckdb; print(duckdb.__version__)", &[]).trim()
    );
    println!("{:<22} {:>8} {:>8} {:>7}  result", "shape", "kiln", "DuckDB", "ratio");
    let mut all_same = true;
    for line in duck.lines() {
        let parts: Vec<&str> = line.splitn(3, '\t').collect();
        let [name, secs, check] = parts[..] else { continue };
        let duck_secs: f64 = secs.parse().unwrap();
        let duck_check: Vec<Option<f64>> = serde_json::from_str(check).unwrap();
        let (table, check_sql) = match SHAPES.iter().find(|s| s.name == name) {
            Some(s) => (s.name, s.check),
            None => ("seed_orders", "count(*), sum(order_id), sum(cast(amount as double))"),
        };
        let k = kiln_time(table);
        let ours = kiln_check(&dir, table, check_sql);
        let ok = same(&ours, &duck_check);
        all_same &= ok;
        println!("{name:<22} {k:>8.4} {duck_secs:>8.4} {:>6.2}x  {}", k / duck_secs, if ok { "same" } else { "DIFFERENT" });
        if !ok {
            println!("    {check_sql}\n    kiln:   {ours:?}\n    DuckDB: {duck_check:?}");
        }
    }
    println!("\nkiln build (process, all of the above, first run): {kiln_wall:.2} s wall, peak RSS {peak_rss:.0} MB");
    assert!(all_same, "kiln's and DuckDB's results differ");
}
