//! Parse/compile benchmark: generates projects of N models and times the real `kiln` binary
//! (cold process, no cache kept between runs). Prints median, min and max wall time.
//!
//!     cargo bench --bench compile                 # N = 1,000 and 10,000
//!     cargo bench --bench compile -- 20000 5      # N = 20,000, 5 runs
//!     cargo bench --bench compile -- --gen DIR 10000   # only write the project
//!
//! Instruction count (valgrind's callgrind; repeatable on a busy machine, unlike wall time) of
//! `kiln compile` on one thread, without static analysis and with it, each with an optional
//! ceiling (exit 1 above it) for CI:
//!
//!     cargo bench --bench compile -- --instructions 1000 [--max 9000000000] [--analysis-max 16000000000]
//!
//! The fixed costs under `kiln compile` that do not depend on kiln's own code (sqlparser's
//! check of every compiled model, creating the compiled files, serde_json writing the
//! manifest), measured on their own for a project of N models:
//!
//!     cargo bench --bench compile -- --floor 10000
//!
//! With `KILN_BENCH_DBT` (the `dbt` of a venv with dbt-core and dbt-duckdb), `dbt parse` and
//! `dbt compile` (`--no-partial-parse`, `target/` deleted before each run) of the same project
//! are timed in the same run and compared with `kiln parse` and `kiln compile` (fresh target/).

#[allow(dead_code)] // shared with the build benchmark
mod generator;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Times `kiln <args>`; `fresh` moves `target/` away before each run (every compiled file is
/// created anew), otherwise the previous run's files stay (unchanged ones are not rewritten).
///
/// Moved, not deleted: on ext4 without a journal (this benchmark's VMs) creating a file scans
/// past every inode freed in the last minute, so a run right after deleting 20,000 files
/// measured 0.3-1.0 s more than on a fresh checkout. The moved trees go when `graveyard` does,
/// after the timing.
fn time_kiln(dir: &Path, args: &[&str], runs: usize, fresh: bool, graveyard: &Path) -> (f64, f64, f64) {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        if fresh && dir.join("target").exists() {
            let grave = graveyard.join(format!("{}-{i}", args.join("-")));
            std::fs::rename(dir.join("target"), grave).expect("move target/ aside");
        }
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .arg("--quiet")
            .current_dir(dir)
            .env("HOME", dir)
            .output()
            .expect("run kiln");
        let secs = start.elapsed().as_secs_f64();
        assert!(out.status.success(), "kiln {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        samples.push(secs);
    }
    median(samples)
}

fn median(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[0], samples[samples.len() - 1])
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("--instructions") {
        let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
        let flag =
            |name: &str| -> Option<u64> { args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok()) };
        let tmp = tempfile::tempdir().expect("tempdir");
        generator::generate(tmp.path(), &generator::Spec { models: n, seed_rows: 100 });
        let off = instructions(tmp.path(), n, &["--static-analysis", "off"], "without static analysis", flag("--max"));
        let on = instructions(tmp.path(), n, &[], "with static analysis", flag("--analysis-max"));
        println!("static analysis: {} instructions per model", (on.saturating_sub(off)) / n as u64);
        return;
    }
    if args.first().map(String::as_str) == Some("--floor") {
        return floor(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000));
    }
    if args.first().map(String::as_str) == Some("--gen") {
        let dir = Path::new(args.get(1).expect("--gen DIR N"));
        let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
        generator::generate(dir, &generator::Spec { models: n, seed_rows: 100 });
        println!("wrote a {n}-model project to {}", dir.display());
        return;
    }
    let sizes: Vec<usize> = match args.first().and_then(|s| s.parse().ok()) {
        Some(n) => vec![n],
        None => vec![1_000, 10_000],
    };
    let runs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    println!(
        "kiln parse/compile benchmark ({} cores, {runs} runs each, wall seconds)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    // Every tree is deleted at the end, not between sizes (see `time_kiln`).
    let mut keep = Vec::new();
    for n in sizes {
        let tmp = tempfile::tempdir().expect("tempdir");
        let graveyard = tempfile::tempdir().expect("tempdir");
        generator::generate(tmp.path(), &generator::Spec { models: n, seed_rows: 100 });
        let mut medians = Vec::new();
        for (label, cmd, fresh) in
            [("parse", "parse", true), ("compile, fresh target/", "compile", true), ("compile, target/ kept", "compile", false)]
        {
            let (med, min, max) = time_kiln(tmp.path(), &[cmd], runs, fresh, graveyard.path());
            println!("{label:<24} N={n:<6} median {med:.3}s  min {min:.3}s  max {max:.3}s");
            medians.push((cmd, fresh, med));
        }
        // The same commands by dbt-core + dbt-duckdb (no partial parsing: cold, as kiln's runs).
        let Some(dbt) = generator::dbt() else {
            keep.extend([tmp, graveyard]);
            continue;
        };
        generator::write_profiles(tmp.path());
        for (cmd, kiln_median) in [("parse", medians[0].2), ("compile", medians[1].2)] {
            let samples: Vec<f64> = (0..runs.min(3))
                .map(|_| {
                    let _ = std::fs::remove_dir_all(tmp.path().join("target"));
                    generator::run_dbt(&dbt, tmp.path(), &[cmd, "--no-partial-parse"])
                })
                .collect();
            let (med, min, max) = median(samples);
            println!(
                "  dbt-duckdb {cmd:<13} N={n:<6} median {med:.3}s  min {min:.3}s  max {max:.3}s   kiln takes {:.1}% of dbt's time ({:.0}x faster)",
                100.0 * kiln_median / med,
                med / kiln_median
            );
        }
        keep.extend([tmp, graveyard]);
    }
}

/// Instructions executed by `kiln compile <args>` in `dir` (one rayon thread so that no
/// idle-thread spinning is counted) under callgrind; exits 1 above `max`.
fn instructions(dir: &Path, n: usize, args: &[&str], what: &str, max: Option<u64>) -> u64 {
    let _ = std::fs::remove_dir_all(dir.join("target"));
    let out_file = dir.join("callgrind.out");
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", &format!("--callgrind-out-file={}", out_file.display())])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["compile", "--quiet"])
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("valgrind is needed for --instructions (apt-get install valgrind)");
    assert!(out.status.success(), "kiln compile under valgrind failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let count: u64 = stderr
        .lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no instruction count in valgrind's output:\n{stderr}"));
    println!("kiln compile N={n}, {what}: {count} instructions ({:.0} per model)", count as f64 / n as f64);
    if let Some(max) = max {
        if count > max {
            eprintln!("error: {count} instructions ({what}) is above the ceiling of {max}: something made compiling slower");
            std::process::exit(1);
        }
        println!("under the ceiling of {max} ({:.0}% of it)", 100.0 * count as f64 / max as f64);
    }
    count
}

/// Times, for the compiled output of an N-model project: sqlparser parsing every compiled model
/// (what the SQL check does), creating that many files with that content in a new directory
/// tree (what a cold `kiln compile` writes), and serde_json writing the manifest. Each on one
/// thread and, where it splits, on every core; best of 3.
fn floor(n: usize) {
    use rayon::prelude::*;
    let tmp = tempfile::tempdir().expect("tempdir");
    generator::generate(tmp.path(), &generator::Spec { models: n, seed_rows: 100 });
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["compile", "--quiet"])
        .current_dir(tmp.path())
        .env("HOME", tmp.path())
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "kiln compile failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let mut files = Vec::new();
    collect_sql(&tmp.path().join("target/compiled"), &mut files);
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|p| (p.strip_prefix(tmp.path()).expect("under tmp").display().to_string(), std::fs::read_to_string(p).expect("read")))
        .collect();
    // Generic tests are checked by the engine, not at compile: only models are parsed.
    let models: Vec<&str> = texts.iter().filter(|(p, _)| !p.contains(".yml/")).map(|(_, t)| t.as_str()).collect();
    let dialect = sqlparser::dialect::GenericDialect {};
    let best = |f: &dyn Fn() -> f64| (0..3).map(|_| f()).fold(f64::INFINITY, f64::min);
    let timed = |f: &dyn Fn()| {
        let start = Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };
    let check_one = best(&|| timed(&|| models.iter().for_each(|s| assert!(sqlparser::parser::Parser::parse_sql(&dialect, s).is_ok()))));
    let check_all = best(&|| timed(&|| models.par_iter().for_each(|s| assert!(sqlparser::parser::Parser::parse_sql(&dialect, s).is_ok()))));
    let dirs: std::collections::BTreeSet<String> =
        texts.iter().filter_map(|(p, _)| Path::new(p).parent().map(|d| d.display().to_string())).collect();
    let trees = tempfile::tempdir().expect("tempdir"); // deleted at the end (see `time_kiln`)
    let round = std::sync::atomic::AtomicUsize::new(0);
    let create = |parallel: bool| {
        let root = trees.path().join(round.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string());
        timed(&|| {
            for d in &dirs {
                std::fs::create_dir_all(root.join(d)).expect("mkdir");
            }
            let write = |(p, t): &(String, String)| std::fs::write(root.join(p), t).expect("write");
            if parallel { texts.par_iter().for_each(write) } else { texts.iter().for_each(write) }
        })
    };
    let create_one = best(&|| create(false));
    let create_all = best(&|| create(true));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("target/manifest.json")).expect("manifest")).expect("json");
    let size = serde_json::to_vec(&manifest).expect("json").len();
    let json_one = best(&|| timed(&|| assert!(serde_json::to_vec(&manifest).is_ok())));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("fixed costs of `kiln compile` at N={n} (best of 3; {cores} cores):");
    println!("  sqlparser, {} models ({} MB):  {check_one:.3}s on 1 thread, {check_all:.3}s on {cores}", models.len(), mb(&models));
    println!("  creating {} files:              {create_one:.3}s on 1 thread, {create_all:.3}s on {cores}", texts.len());
    println!("  serde_json, {:.0} MB manifest:    {json_one:.3}s on 1 thread", size as f64 / 1e6);
    let sum = check_all + create_all + json_one / cores as f64;
    println!("  together, each split over {cores} cores: {sum:.3}s (before loading, Jinja and the graph)");
}

fn mb(texts: &[&str]) -> String {
    format!("{:.1}", texts.iter().map(|t| t.len()).sum::<usize>() as f64 / 1e6)
}

fn collect_sql(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect_sql(&path, out);
        } else if path.extension().is_some_and(|e| e == "sql") {
            out.push(path);
        }
    }
}
