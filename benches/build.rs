//! Build benchmark on the embedded DataFusion engine: generated projects (see `generator.rs`)
//! built from scratch by the real `kiln` binary. Prints median/min/max wall time and the peak
//! memory (max RSS) of the kiln processes.
//!
//!     cargo bench --bench build              # build: 100 models over 10k-row seeds; 20 models over 1M rows;
//!                                            # test: `kiln test` of 1000 models (~1000 data tests) over 1k-row seeds
//!     cargo bench --bench build -- build 100 10000 5   # command, models, seed rows, runs
//!     KILN_BENCH_DIR=/tmp/p cargo bench --bench build -- test   # keep the project (for profiling)

mod generator;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Peak RSS (MB) of any child process waited for so far.
fn children_max_rss_mb() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

fn kiln(dir: &Path, command: &str) -> f64 {
    let start = Instant::now();
    let out =
        Command::new(env!("CARGO_BIN_EXE_kiln")).args([command, "--quiet"]).current_dir(dir).env("HOME", dir).output().expect("run kiln");
    let secs = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "kiln {command} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    secs
}

/// `build` times builds from an empty warehouse; `test` builds once, then times `kiln test`.
fn time(dir: &Path, command: &str, runs: usize) -> (f64, f64, f64) {
    let mut samples = Vec::new();
    if command == "test" {
        kiln(dir, "build");
    }
    for _ in 0..runs {
        if command == "build" {
            let _ = std::fs::remove_dir_all(dir.join(".kiln"));
            let _ = std::fs::remove_dir_all(dir.join("target"));
        }
        samples.push(kiln(dir, command));
    }
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[0], samples[samples.len() - 1])
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let command = raw.first().filter(|c| *c == "build" || *c == "test").cloned();
    let args: Vec<usize> = raw.iter().filter_map(|a| a.parse().ok()).collect();
    let cases: Vec<(&str, usize, usize, usize)> = match (command.as_deref(), args.as_slice()) {
        (c, [m, r, runs, ..]) => vec![(c.unwrap_or("build"), *m, *r, *runs)],
        (c, [m, r]) => vec![(c.unwrap_or("build"), *m, *r, 3)],
        (Some("test"), _) => vec![("test", 1000, 1000, 5)],
        (Some(_), _) => vec![("build", 100, 10_000, 5), ("build", 20, 1_000_000, 3)],
        (None, _) => vec![("build", 100, 10_000, 5), ("build", 20, 1_000_000, 3), ("test", 1000, 1000, 5)],
    };
    println!(
        "kiln benchmark, embedded DataFusion ({} cores, wall seconds; build: seeds, models and their tests from an empty warehouse; test: `kiln test` on a built project)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (command, models, rows, runs) in cases {
        // KILN_BENCH_DIR keeps the generated project there (for profiling).
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = std::env::var_os("KILN_BENCH_DIR").map_or_else(|| tmp.path().to_path_buf(), std::path::PathBuf::from);
        generator::generate(&dir, &generator::Spec { models, seed_rows: rows });
        let tests = count_tests(&dir);
        let (med, min, max) = time(&dir, command, runs);
        println!(
            "{command:<5} N={models:<4} rows={rows:<8} tests={tests:<5} median {med:.3}s  min {min:.3}s  max {max:.3}s  peak RSS so far {:.0} MB",
            children_max_rss_mb()
        );
    }
}

/// Data tests of a generated project (what `kiln ls --resource-type test` lists).
fn count_tests(dir: &Path) -> usize {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["ls", "--resource-type", "test", "--quiet"])
        .current_dir(dir)
        .env("HOME", dir)
        .output()
        .expect("run kiln");
    String::from_utf8_lossy(&out.stdout).lines().count()
}
