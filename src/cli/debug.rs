//! `kiln debug`: the resolved project, profile and target, with secrets masked.

use super::printer::Printer;
use super::session::{self, Stop};
use super::{EXIT_OK, EXIT_PROJECT, GlobalArgs};
use crate::project::profiles::EngineKind;
use std::collections::HashMap;

pub fn run(global: &GlobalArgs, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    let s = match session::load(global, env, printer, "debug", Stop::Target) {
        Ok(s) => s,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let c = s.project.config();
    let t = &s.target;
    let mut lines = vec![
        format!("kiln version: {}", env!("CARGO_PKG_VERSION")),
        format!("project dir:  {}", s.project.root.display()),
        format!("dbt_project.yml: OK (name: {}, profile: {})", c.name, c.profile.as_deref().unwrap_or("<project name>")),
        format!(
            "profiles.yml: {}",
            t.profiles_path.as_ref().map_or("none found; using the built-in target".to_string(), |p| p.display().to_string())
        ),
        format!("profile:      {}", t.profile_name),
        format!("target:       {}", t.name),
        format!("adapter type: {} (engine: {})", t.adapter_type, t.adapter.display),
        format!("database:     {}", t.database),
        format!("schema:       {}", t.schema),
        format!("threads:      {}", t.threads),
        "settings:".to_string(),
    ];
    for (k, v) in t.public_settings() {
        lines.push(format!("  {k}: {}", v.as_str().map_or(v.to_string(), str::to_string)));
    }
    let pkgs: Vec<String> = s.project.packages.iter().skip(1).map(|p| format!("{} ({})", p.name, p.rel_root)).collect();
    lines.push(format!("packages:     {}", if pkgs.is_empty() { "none".into() } else { pkgs.join(", ") }));
    let (connection, code) = match t.engine() {
        EngineKind::DataFusion => ("embedded, nothing to connect to".to_string(), EXIT_OK),
        EngineKind::Postgres | EngineKind::BigQuery => {
            let setup = crate::run::setup::engine_setup(&s.project, &s.manifest, &s.invocation.env_vars);
            match crate::engine::open(t, setup).and_then(|(e, _)| {
                e.version().map_err(|err| crate::diagnostics::Diagnostic::error(crate::diagnostics::Code::Connection, err.message))
            }) {
                Ok(version) => (format!("OK ({version})"), EXIT_OK),
                Err(d) => (format!("FAILED: {}", d.message), EXIT_PROJECT),
            }
        }
    };
    lines.push(format!("connection:   {connection}"));
    for l in lines {
        printer.product(&l);
    }
    Ok(code)
}
