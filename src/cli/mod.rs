//! The command line. Only this layer prints, reads the environment, or exits.

#[cfg(feature = "datafusion")]
mod build;
mod clean;
#[cfg(feature = "datafusion")]
mod clone;
mod compile;
mod debug;
mod deps;
pub mod env;
mod init;
mod lineage;
mod ls;
pub mod printer;
#[cfg(feature = "datafusion")]
mod retry;
#[cfg(feature = "datafusion")]
mod run_operation;
pub mod session;
#[cfg(feature = "datafusion")]
mod source;
#[cfg(feature = "watch")]
mod watch;

use clap::{Args, Parser, Subcommand};
use printer::{LogFormat, Printer};
use std::path::PathBuf;

/// Exit codes: 0 success, 1 the project failed, 2 kiln or its usage failed, 130 interrupted.
pub const EXIT_OK: i32 = 0;
pub const EXIT_PROJECT: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
/// Interrupted (Ctrl-C), as shells report SIGINT.
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "SQL-first, declarative data builds: compiles dbt projects and builds them on DataFusion, PostgreSQL or BigQuery",
    long_about = "kiln reads a dbt project (dbt_project.yml, models, macros, seeds, tests, properties YAML) unchanged, \
                  compiles it into a dependency graph, writes dbt-compatible artifacts, and builds it on the embedded \
                  DataFusion engine (tables under .kiln/warehouse, no server).\n\n\
                  Exit codes: 0 success, 1 the project has errors, 2 usage or internal error, 130 interrupted."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Directory of the dbt project (default: the current directory)
    #[arg(long, global = true, value_name = "DIR")]
    pub project_dir: Option<PathBuf>,
    /// Directory holding profiles.yml (default: $KILN_PROFILES_DIR, $DBT_PROFILES_DIR, the project, ~/.kiln, ~/.dbt)
    #[arg(long, global = true, value_name = "DIR")]
    pub profiles_dir: Option<PathBuf>,
    /// Profile to use instead of the one named in dbt_project.yml
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Target (output) of the profile to use
    #[arg(short = 't', long, global = true)]
    pub target: Option<String>,
    /// Variables as a YAML or JSON mapping, e.g. '{start_date: 2024-01-01}'
    #[arg(long, global = true, value_name = "YAML")]
    pub vars: Option<String>,
    /// Output format of logs and diagnostics
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Print only errors and products
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print how long each phase took (load, parse, graph, compile, write) to stderr
    #[arg(long, global = true)]
    pub timings: bool,
    /// Memory the embedded engine may use, e.g. 4GB or 512MiB; sorts, aggregations and joins
    /// spill to disk beyond it. Overrides the target's `memory_limit` (default: 80% of the
    /// machine's or container's memory)
    #[arg(long, global = true, value_name = "SIZE", env = "KILN_MEMORY_LIMIT")]
    pub memory_limit: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct SelectArgs {
    /// Nodes to include (dbt selector syntax: name, +name, name+, @name, tag:x, path:dir, config.k:v, ...)
    #[arg(short = 's', long = "select", alias = "models", short_alias = 'm', num_args = 1.., value_name = "SELECTOR")]
    pub select: Vec<String>,
    /// Nodes to leave out (same syntax as --select)
    #[arg(long, num_args = 1.., value_name = "SELECTOR")]
    pub exclude: Vec<String>,
    /// A named selector from selectors.yml
    #[arg(long, value_name = "NAME")]
    pub selector: Option<String>,
    /// Only these resource types (model, seed, snapshot, test, unit_test, source, exposure, analysis)
    #[arg(long = "resource-type", alias = "resource-types", num_args = 1.., value_name = "TYPE")]
    pub resource_type: Vec<String>,
    /// A directory with the manifest.json of a previous run (kiln's or dbt's), for `state:` selectors
    #[arg(long, value_name = "DIR", env = "DBT_STATE")]
    pub state: Option<std::path::PathBuf>,
    /// `ref()` to a node that is not selected and not built in this target reads the relation the --state run built
    #[arg(long, env = "DBT_DEFER")]
    pub defer: bool,
    /// With --defer: `ref()` to any node that is not selected reads the --state run's relation, built here or not
    #[arg(long, env = "DBT_FAVOR_STATE")]
    pub favor_state: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate the project: load, render (parse phase) and build the graph; writes target/manifest.json
    Parse,
    /// Render every selected node to SQL under target/compiled/, check it, write target/manifest.json and target/lineage.json
    Compile(compile::CompileArgs),
    /// List selected nodes
    #[command(alias = "list")]
    Ls(ls::LsArgs),
    /// Where a column comes from (or, with --downstream, what it feeds), from static analysis
    Lineage(lineage::LineageArgs),
    /// Show the resolved project, profile and target (secrets masked)
    Debug,
    /// Create a new project from kiln's template
    Init(init::InitArgs),
    /// Delete the project's clean-targets (never the local warehouse)
    Clean,
    /// Install the packages of packages.yml (git and local) into dbt_packages/ and write package-lock.yml
    Deps(deps::DepsArgs),
    /// Load seeds (CSV) into the warehouse
    #[cfg(feature = "datafusion")]
    Seed(build::RunArgs),
    /// Build the selected models in dependency order
    #[cfg(feature = "datafusion")]
    Run(build::RunArgs),
    /// Load seeds, build models and run their tests, in dependency order; a failing test skips
    /// what is downstream of the model it tests, a failing unit test keeps its model from building
    #[cfg(feature = "datafusion")]
    Build(build::RunArgs),
    /// Run data tests and unit tests (unit tests run on mocked inputs, locally)
    #[cfg(feature = "datafusion")]
    Test(build::RunArgs),
    /// Record the changes of the selected snapshots' sources as new row versions (SCD type 2)
    #[cfg(feature = "datafusion")]
    Snapshot(build::RunArgs),
    /// Print rows of a model or of a query
    #[cfg(feature = "datafusion")]
    Show(build::ShowArgs),
    /// Run again what the last seed/run/build/test left failed or skipped, with its arguments
    #[cfg(feature = "datafusion")]
    Retry(retry::RetryArgs),
    /// Call a macro with the warehouse attached (its statements run, run_query returns rows)
    #[cfg(feature = "datafusion")]
    RunOperation(run_operation::RunOperationArgs),
    /// Sources: `kiln source freshness`
    #[cfg(feature = "datafusion")]
    Source(source::SourceArgs),
    /// Make the selected relations of a previous run (--state) readable in the target, as views
    #[cfg(feature = "datafusion")]
    Clone(clone::CloneArgs),
    /// Build, then rebuild on every save what it changed (the changed nodes, what is downstream,
    /// their tests), with a short report; `q` or Ctrl-C stops
    #[cfg(feature = "watch")]
    Watch(watch::WatchArgs),
}

/// dbt commands kiln does not have yet, and what to use meanwhile.
const NOT_YET: &[(&str, &str)] = &[("docs", "`kiln compile` writes target/manifest.json, which dbt-docs and other tools read")];

/// For a dbt command kiln lacks: "not supported yet" and where to read more, instead of clap's
/// "did you mean" (which suggested `clean` for `clone`).
fn not_yet_supported(e: &clap::Error) -> Option<String> {
    let clap::error::ContextValue::String(given) = e.get(clap::error::ContextKind::InvalidSubcommand)? else { return None };
    let (name, meanwhile) = NOT_YET.iter().find(|(name, _)| name == given)?;
    Some(format!(
        "error: `kiln {name}` is not supported yet (dbt has it): {meanwhile}.\n  = see docs/compatibility.md for what kiln supports and what is planned"
    ))
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    // An internal error is kiln's fault, not the user's: one clear line and exit 2, no backtrace
    // (set KILN_BACKTRACE=1 to see it).
    if std::env::var_os(env::KILN_BACKTRACE).is_none() {
        std::panic::set_hook(Box::new(|info| {
            let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            eprintln!(
                "error: kiln hit an internal error{location}: {msg}\nThis is a bug in kiln; please report it with the command you ran (KILN_BACKTRACE=1 shows details)."
            );
        }));
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            if let Some(message) = not_yet_supported(&e) {
                eprintln!("{message}");
                return EXIT_USAGE;
            }
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    let env = env::snapshot();
    let mut printer = Printer::new(cli.global.log_format, cli.global.quiet, &env);
    printer.timings = cli.global.timings;
    printer.phase("start");
    let result = match &cli.command {
        Command::Parse => compile::parse(&cli.global, &env, &mut printer),
        Command::Compile(args) => compile::run(&cli.global, args, &env, &mut printer),
        Command::Ls(args) => ls::run(&cli.global, args, &env, &mut printer),
        Command::Lineage(args) => lineage::run(&cli.global, args, &env, &mut printer),
        Command::Debug => debug::run(&cli.global, &env, &mut printer),
        Command::Init(args) => init::run(args, &printer),
        Command::Clean => clean::run(&cli.global, &env, &mut printer),
        Command::Deps(args) => deps::run(&cli.global, args, &env, &mut printer),
        #[cfg(feature = "datafusion")]
        Command::Seed(args) => build::run(&cli.global, args, build::Which::Seed, &env, &mut printer),
        #[cfg(feature = "datafusion")]
        Command::Run(args) => build::run(&cli.global, args, build::Which::Run, &env, &mut printer),
        #[cfg(feature = "datafusion")]
        Command::Build(args) => build::run(&cli.global, args, build::Which::Build, &env, &mut printer),
        #[cfg(feature = "datafusion")]
        Command::Test(args) => build::run(&cli.global, args, build::Which::Test, &env, &mut printer),
        #[cfg(feature = "datafusion")]
        Command::Snapshot(args) => build::run(&cli.global, args, build::Which::Snapshot, &env, &mut printer),
        #[cfg(feature = "datafusion")]
        Command::Show(args) => build::show(&cli.global, args, &env, &mut printer),
        #[cfg(feature = "datafusion")]
        Command::Retry(args) => retry::run(&cli.global, args, &env, &mut printer),
        #[cfg(feature = "datafusion")]
        Command::RunOperation(args) => run_operation::run(&cli.global, args, &env, &mut printer),
        #[cfg(feature = "datafusion")]
        Command::Source(args) => source::run(&cli.global, args, &env, &mut printer),
        #[cfg(feature = "datafusion")]
        Command::Clone(args) => clone::run(&cli.global, args, &env, &mut printer),
        #[cfg(feature = "watch")]
        Command::Watch(args) => watch::run(&cli.global, args, &env, &mut printer),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            printer.diagnostic(&crate::diagnostics::Diagnostic::error(crate::diagnostics::Code::Io, format!("{e:#}")));
            EXIT_USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// The text of `docs/cli.md` under the `###` heading that names `kiln <name>`.
    fn section<'a>(doc: &'a str, name: &str) -> Option<&'a str> {
        let wanted = format!("kiln {name}");
        let mut parts = doc.split("\n### ").skip(1);
        parts.find(|p| p.lines().next().is_some_and(|h| h.split(", ").any(|n| n == wanted))).map(|p| p.split("\n## ").next().unwrap_or(p))
    }

    /// docs/cli.md has a section for every command, naming each of its flags, with an example.
    #[test]
    fn every_command_and_flag_is_documented() {
        let doc = include_str!("../../docs/cli.md");
        let cli = Cli::command();
        let global: Vec<_> = cli.get_arguments().filter_map(|a| a.get_long()).collect();
        let mut missing = vec![];
        let mut commands: Vec<(String, &clap::Command)> = vec![];
        for c in cli.get_subcommands().filter(|c| c.get_name() != "help") {
            match c.get_subcommands().filter(|s| s.get_name() != "help").collect::<Vec<_>>() {
                subs if subs.is_empty() => commands.push((c.get_name().to_string(), c)),
                subs => commands.extend(subs.into_iter().map(|s| (format!("{} {}", c.get_name(), s.get_name()), s))),
            }
        }
        for (name, command) in commands {
            let Some(text) = section(doc, &name) else {
                missing.push(format!("no section for `kiln {name}`"));
                continue;
            };
            if !text.contains(&format!("\n    kiln {name}")) {
                missing.push(format!("`kiln {name}` has no example"));
            }
            for long in command.get_arguments().filter_map(|a| a.get_long()).filter(|l| !global.contains(l) && *l != "help") {
                if !text.contains(&format!("--{long}")) {
                    missing.push(format!("`kiln {name} --{long}` is not in its section"));
                }
            }
        }
        let globals = &doc[doc.find("## Global options").unwrap_or(0)..doc.find("## Selecting nodes").unwrap_or(doc.len())];
        missing.extend(
            global
                .iter()
                .filter(|l| !["help", "version"].contains(l) && !globals.contains(&format!("--{l}")))
                .map(|l| format!("global --{l}")),
        );
        assert!(missing.is_empty(), "docs/cli.md lacks:\n{}", missing.join("\n"));
    }
}
