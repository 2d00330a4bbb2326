//! `kiln init NAME`: writes `project-template/` (embedded in the binary) into `NAME/`.

use super::printer::Printer;
use super::{EXIT_OK, EXIT_USAGE};
use std::path::PathBuf;

/// The files of `project-template/`, embedded at build time.
const TEMPLATE: &[(&str, &str)] = &[
    ("dbt_project.yml", include_str!("../../project-template/dbt_project.yml")),
    ("README.md", include_str!("../../project-template/README.md")),
    ("models/staging/stg_customers.sql", include_str!("../../project-template/models/staging/stg_customers.sql")),
    ("models/staging/stg_orders.sql", include_str!("../../project-template/models/staging/stg_orders.sql")),
    ("models/staging/schema.yml", include_str!("../../project-template/models/staging/schema.yml")),
    ("models/marts/customers.sql", include_str!("../../project-template/models/marts/customers.sql")),
    ("models/marts/schema.yml", include_str!("../../project-template/models/marts/schema.yml")),
    ("seeds/raw_customers.csv", include_str!("../../project-template/seeds/raw_customers.csv")),
    ("seeds/raw_orders.csv", include_str!("../../project-template/seeds/raw_orders.csv")),
    ("macros/cents_to_dollars.sql", include_str!("../../project-template/macros/cents_to_dollars.sql")),
    ("tests/assert_no_negative_totals.sql", include_str!("../../project-template/tests/assert_no_negative_totals.sql")),
    (".gitignore", include_str!("../../project-template/.gitignore")),
];

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Name of the new project (letters, digits, underscores); also its directory
    pub name: String,
    /// Directory to create it in (default: ./NAME)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(args: &InitArgs, printer: &Printer) -> anyhow::Result<i32> {
    let name = &args.name;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.starts_with(|c: char| c.is_ascii_digit()) {
        printer.diagnostic(
            &crate::diagnostics::Diagnostic::error(
                crate::diagnostics::Code::BadProjectName,
                format!("`{name}` is not a valid project name"),
            )
            .with_help("use letters, digits and underscores, starting with a letter (e.g. `my_project`)"),
        );
        return Ok(EXIT_USAGE);
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        printer.diagnostic(
            &crate::diagnostics::Diagnostic::error(
                crate::diagnostics::Code::Io,
                format!("{} already exists and is not empty", dir.display()),
            )
            .with_help("choose another name or --dir"),
        );
        return Ok(EXIT_USAGE);
    }
    for (path, content) in TEMPLATE {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, content.replace("my_project", name))?;
    }
    printer.info(&format!("Created project `{name}` in {}", dir.display()));
    printer.info(&format!("Next: cd {} && kiln compile", dir.display()));
    Ok(EXIT_OK)
}
