//! `kiln deps`: installs the packages of `packages.yml` (git and local) and writes
//! `package-lock.yml`, as dbt does; see `crate::deps`. Needs no profile.

use super::printer::Printer;
use super::session::project_dir;
use super::{EXIT_OK, EXIT_PROJECT, GlobalArgs};
use crate::diagnostics::Diagnostics;
use crate::project::packages;
use std::collections::HashMap;

#[derive(clap::Args, Debug, Default)]
pub struct DepsArgs {
    /// Resolve every package again (branches and `HEAD` to their newest commit) and rewrite package-lock.yml
    #[arg(long)]
    pub upgrade: bool,
    /// Resolve and write package-lock.yml only; install nothing
    #[arg(long)]
    pub lock: bool,
}

pub fn run(global: &GlobalArgs, args: &DepsArgs, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    printer.add_secrets(env.iter().filter(|(k, _)| k.starts_with("DBT_ENV_SECRET_")).map(|(_, v)| v.clone()));
    match install(global, args, env, printer) {
        Ok(code) => Ok(code),
        Err(diags) => {
            for d in diags.iter() {
                printer.diagnostic(d);
            }
            printer.error("nothing was installed: packages-install-path and package-lock.yml are as they were");
            Ok(EXIT_PROJECT)
        }
    }
}

fn install(global: &GlobalArgs, args: &DepsArgs, env: &HashMap<String, String>, printer: &mut Printer) -> Result<i32, Diagnostics> {
    let dir = project_dir(global);
    let root = std::fs::canonicalize(&dir).unwrap_or(dir);
    // The project's own errors (a package not installed yet) are what this command fixes.
    let (project, _) = crate::project::Project::load(&crate::project::fs::OsFs, &root)?;
    let Some(declared) = &project.declarations else {
        printer.info("no packages.yml or dependencies.yml: nothing to install");
        return Ok(EXIT_OK);
    };
    let vars = crate::session::parse_vars(global.vars.as_deref())?;
    let render = |text: &str| crate::session::render_profile_value(text, env, &vars);
    let mut diags = vec![];
    let declared = packages::parse_declarations(declared.file.clone(), Some(&render), &mut diags);
    if !diags.is_empty() {
        return Err(Diagnostics(diags));
    }
    let install_path = &project.config().packages_install_path;
    let options = crate::deps::Options { upgrade: args.upgrade, lock_only: args.lock };
    let outcome = crate::deps::run(&root, install_path, &declared, &render, options, &mut |m| printer.info(m))?;
    for w in &outcome.warnings {
        printer.diagnostic(w);
    }
    if outcome.lock_written {
        printer.info(&format!("Wrote {}", packages::LOCK_FILE));
    }
    if !args.lock {
        let n = outcome.installed.len();
        printer.info(&format!("{n} package{} installed in {install_path}", if n == 1 { "" } else { "s" }));
    }
    Ok(EXIT_OK)
}
