//! The `kiln` binary: parse arguments, run, map the result to an exit code.

fn main() {
    return_freed_memory();
    // A panic inside kiln becomes exit code 2 (usage/internal), after the hook's one-line message.
    let code = std::panic::catch_unwind(kiln::cli::main).unwrap_or(2);
    std::process::exit(code);
}

/// glibc keeps freed memory for reuse until 128 KB-32 MB (a threshold it raises as large blocks
/// come and go) is free at the top of a heap. Query engines free large blocks all the time, so
/// the process kept hundreds of MB it no longer used: a 5-million-group aggregation under a
/// 128 MB `--memory-limit` peaked at 510 MB of RSS, 260 MB with a fixed 1 MB threshold.
///
/// Fixing the trim threshold also fixes glibc's mmap threshold at its 128 KB floor, and Arrow's
/// buffers of one batch are 64 KB-1 MB: each was then mapped and unmapped anew (page faults,
/// zeroed pages, TLB shootdowns), a third of the time of a 1M-row scan. Blocks up to 1 MB now
/// come from the heap: `sum(decimal)` over 1M Parquet rows 21 -> 9 ms, for about 20 MB more
/// peak RSS under a 128 MB limit (docs/benchmarks.md). `MALLOC_TRIM_THRESHOLD_` and
/// `MALLOC_MMAP_THRESHOLD_` in the environment still win.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (variable, parameter, value) in
        [("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 1 << 20), ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 1 << 20)]
    {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
            unsafe { libc::mallopt(parameter, value) };
        }
    }
}
