//! Every environment variable kiln reads, in one place.

/// Directory holding `profiles.yml` (checked before `DBT_PROFILES_DIR`).
pub const KILN_PROFILES_DIR: &str = "KILN_PROFILES_DIR";
/// dbt's variable for the `profiles.yml` directory, honoured for compatibility.
pub const DBT_PROFILES_DIR: &str = "DBT_PROFILES_DIR";
/// Disables colour when set (https://no-color.org).
pub const NO_COLOR: &str = "NO_COLOR";
/// Forces colour even when stderr is not a terminal.
pub const FORCE_COLOR: &str = "FORCE_COLOR";
/// Set to show Rust backtraces of internal errors (otherwise one line is printed).
pub const KILN_BACKTRACE: &str = "KILN_BACKTRACE";
/// Seconds a build waits for the warehouse another kiln process is writing (default 60).
pub const KILN_LOCK_WAIT: &str = "KILN_LOCK_WAIT";
/// The user's home directory, for `~/.kiln` and `~/.dbt`.
pub const HOME: &str = "HOME";

/// A snapshot of the process environment, taken once by the CLI and handed to lower layers.
pub fn snapshot() -> std::collections::HashMap<String, String> {
    std::env::vars().collect()
}
