//! Build benchmark on the embedded DataFusion engine: generated projects (see `generator.rs`)
//! built from scratch by the real `kiln` binary. Prints median/min/max wall time and the peak
//! memory (max RSS) of the kiln processes.
//!
//!     cargo bench --bench build              # 100 models over 10k-row seeds; 20 models over 1M rows
//!     cargo bench --bench build -- 100 10000 5   # models, seed rows, runs

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

fn time_build(dir: &Path, runs: usize) -> (f64, f64, f64) {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(dir.join(".kiln"));
        let _ = std::fs::remove_dir_all(dir.join("target"));
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", "--quiet"])
            .current_dir(dir)
            .env("HOME", dir)
            .output()
            .expect("run kiln");
        let secs = start.elapsed().as_secs_f64();
        assert!(out.status.success(), "kiln build failed:\n{}", String::from_utf8_lossy(&out.stderr));
        samples.push(secs);
    }
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[0], samples[samples.len() - 1])
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let cases: Vec<(usize, usize, usize)> = match args.as_slice() {
        [m, r, runs, ..] => vec![(*m, *r, *runs)],
        [m, r] => vec![(*m, *r, 3)],
        _ => vec![(100, 10_000, 5), (20, 1_000_000, 3)],
    };
    println!(
        "kiln build benchmark, embedded DataFusion ({} cores, wall seconds, seed + run from an empty warehouse)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (models, rows, runs) in cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        generator::generate(tmp.path(), &generator::Spec { models, seed_rows: rows });
        let (med, min, max) = time_build(tmp.path(), runs);
        println!(
            "build N={models:<4} rows={rows:<8} median {med:.3}s  min {min:.3}s  max {max:.3}s  peak RSS so far {:.0} MB",
            children_max_rss_mb()
        );
    }
}
