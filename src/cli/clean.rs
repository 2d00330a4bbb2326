//! `kiln clean`: removes `clean-targets`. Refuses paths outside the project and the local
//! warehouse (`.kiln/`), so cleaning never loses data.

use super::printer::Printer;
use super::session::{self, Stop};
use super::{EXIT_OK, EXIT_PROJECT, GlobalArgs};
use std::collections::HashMap;

/// Whether `dir` is or holds a kiln warehouse (of any target: its writer's lock file or a
/// table pointer inside).
fn holds_a_warehouse(dir: &std::path::Path) -> bool {
    walkdir::WalkDir::new(dir)
        .max_depth(6)
        .into_iter()
        .filter_map(Result::ok)
        .any(|e| e.file_name() == ".kiln-lock" || e.file_name() == "_kiln_table.json" || e.file_name() == "_kiln_view.json")
}

pub fn run(global: &GlobalArgs, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    let s = match session::load(global, env, printer, "clean", Stop::Target) {
        Ok(s) => s,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let root = &s.project.root;
    let warehouse = s.target.warehouse_dir(root);
    let mut code = EXIT_OK;
    for t in &s.project.config().clean_targets {
        let path = root.join(t);
        let canonical = std::fs::canonicalize(&path).unwrap_or(path.clone());
        let protected = canonical == *root
            || !canonical.starts_with(root)
            || canonical.starts_with(root.join(".kiln"))
            || warehouse.starts_with(&canonical)
            || canonical.starts_with(&warehouse)
            || holds_a_warehouse(&canonical);
        if protected {
            printer.warn(&format!("not cleaning `{t}`: it is outside the project, the project itself, or holds the local warehouse"));
            code = EXIT_PROJECT;
            continue;
        }
        if path.exists() {
            std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path))?;
            printer.info(&format!("Removed {t}"));
        }
    }
    Ok(code)
}
