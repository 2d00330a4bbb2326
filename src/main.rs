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
/// `MALLOC_TRIM_THRESHOLD_` in the environment still wins.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
        unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20) };
    }
}
