//! `kiln deps`: installs `local:` packages into `packages-install-path` (a symlink, as dbt does).
//! Hub and git packages need the network; kiln says how to vendor them instead.

use super::printer::Printer;
use super::session::{self, Stop};
use super::{EXIT_OK, GlobalArgs};
use crate::project::PackageSpec;
use std::collections::HashMap;

pub fn run(global: &GlobalArgs, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    let s = match session::load(global, env, printer, "deps", Stop::Target) {
        Ok(s) => s,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let root = &s.project.root;
    let install = root.join(&s.project.config().packages_install_path);
    std::fs::create_dir_all(&install)?;
    let mut installed = 0;
    for spec in &s.project.package_specs {
        let PackageSpec::Local { path, .. } = spec else {
            continue;
        };
        let src = std::fs::canonicalize(root.join(path))?;
        let Some(pkg) =
            s.project.packages.iter().find(|p| std::fs::canonicalize(&p.root).map(|r| r == src).unwrap_or(false) || p.root == src)
        else {
            continue;
        };
        let dest = install.join(&pkg.name);
        if dest.exists() || dest.symlink_metadata().is_ok() {
            if std::fs::canonicalize(&dest).ok().as_ref() == Some(&src) {
                printer.info(&format!("{} is up to date", pkg.name));
                installed += 1;
                continue;
            }
            if dest.symlink_metadata().map(|m| m.file_type().is_symlink()).unwrap_or(false) {
                std::fs::remove_file(&dest)?;
            } else {
                std::fs::remove_dir_all(&dest)?;
            }
        }
        link_or_copy(&src, &dest)?;
        printer.info(&format!("Installed {} from {path}", pkg.name));
        installed += 1;
    }
    printer.info(&format!(
        "{installed} package{} installed in {}",
        if installed == 1 { "" } else { "s" },
        s.project.config().packages_install_path
    ));
    Ok(EXIT_OK)
}

fn link_or_copy(src: &std::path::Path, dest: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        if std::os::unix::fs::symlink(src, dest).is_ok() {
            return Ok(());
        }
    }
    for entry in walkdir::WalkDir::new(src) {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(src).unwrap_or(entry.path());
        let target = dest.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
