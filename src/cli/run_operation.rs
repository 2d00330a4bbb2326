//! `kiln run-operation`: calls a macro with the warehouse attached.

use super::build::{Writes, open_engine};
use super::printer::Printer;
use super::session::{self, Stop};
use super::{EXIT_OK, GlobalArgs};
use crate::diagnostics::Diagnostics;
use crate::run::runner;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct RunOperationArgs {
    /// The macro to run (`name` or `package.name`)
    pub macro_name: String,
    /// Its keyword arguments, as a YAML or JSON mapping: `--args '{table: orders, days: 7}'`
    #[arg(long, value_name = "YAML")]
    pub args: Option<String>,
}

/// `kiln run-operation`: calls a macro with the warehouse attached, as `dbt run-operation`
/// does: its statements run, `run_query` returns real rows, its `log()` lines are printed.
pub fn run(global: &GlobalArgs, args: &RunOperationArgs, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    let s = match session::load(global, env, printer, "run-operation", Stop::Graph) {
        Ok(s) => s,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let kwargs = match session::parse_yaml_mapping(args.args.as_deref(), "--args") {
        Ok(k) => k,
        Err(d) => return Ok(session::report(printer, &Diagnostics::from(d))),
    };
    let command = format!("kiln run-operation {}", args.macro_name);
    let engine = match open_engine(&s, Some(Writes { command: &command, printer })) {
        Ok((e, _)) => e,
        Err(d) => return Ok(session::report(printer, &Diagnostics::from(d))),
    };
    *s.jinja.shared.runner.write().unwrap_or_else(|e| e.into_inner()) =
        Arc::new(runner::EngineQueries(engine.clone(), s.target.quote_char()));
    let resolver = super::compile::resolver(&s);
    let node = crate::parse::new_node_inline(&s.project, "");
    let ctx = crate::compile::node_ctx(&s.jinja, &node, &resolver, false);
    let kwargs = minijinja::value::Kwargs::from_iter(kwargs.iter().map(|(k, v)| (k.as_str(), crate::jinja::ser(v))));
    let result = s.jinja.call_macro(&args.macro_name, vec![minijinja::Value::from(kwargs)], ctx);
    printer.template_logs(s.jinja.shared.take_logs());
    match result {
        Ok(_) => {
            printer.info(&format!("Ran `{}`", args.macro_name));
            Ok(EXIT_OK)
        }
        Err(e) => {
            let mut d = crate::jinja::error::to_diagnostic(&e, &|_| None, &format!("macro `{}`", args.macro_name));
            // The call itself is kiln's one-line template: no place to show the user.
            d.labels.retain(|l| l.source.path != "<call>");
            if d.file.as_deref() == Some("<call>") {
                d.file = None;
            }
            Ok(session::report(printer, &Diagnostics::from(d)))
        }
    }
}
