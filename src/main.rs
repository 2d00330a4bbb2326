//! The `kiln` binary: parse arguments, run, map the result to an exit code.

fn main() {
    let code = kiln::cli::main();
    std::process::exit(code);
}
