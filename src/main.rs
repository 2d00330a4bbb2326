//! The `kiln` binary: parse arguments, run, map the result to an exit code.

fn main() {
    // A panic inside kiln becomes exit code 2 (usage/internal), after the hook's one-line message.
    let code = std::panic::catch_unwind(kiln::cli::main).unwrap_or(2);
    std::process::exit(code);
}
