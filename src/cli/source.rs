//! `kiln source freshness`: checks how recently each selected source was loaded.

use super::build::open_engine;
use super::printer::{Paint, Printer};
use super::session::{self, Stop};
use super::{EXIT_OK, EXIT_PROJECT, GlobalArgs, SelectArgs};
use crate::diagnostics::Diagnostics;
use crate::run::freshness::{self, Freshness, SourceResult};
use std::collections::HashMap;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct SourceArgs {
    #[command(subcommand)]
    pub command: SourceCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SourceCommand {
    /// Check how long ago each selected source was loaded, against its warn_after/error_after;
    /// writes target/sources.json
    Freshness(FreshnessArgs),
}

#[derive(clap::Args, Debug)]
pub struct FreshnessArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Where to write the results (default: target/sources.json)
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<std::path::PathBuf>,
}

pub fn run(global: &GlobalArgs, args: &SourceArgs, env: &HashMap<String, String>, printer: &mut Printer) -> anyhow::Result<i32> {
    let SourceCommand::Freshness(args) = &args.command;
    let s = match session::load(global, env, printer, "freshness", Stop::Graph) {
        Ok(s) => s,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let selected = match session::selection(&s, &args.select) {
        Ok(sel) => sel,
        Err(d) => return Ok(session::report(printer, &d)),
    };
    let (sources, unmeasurable): (Vec<&crate::parse::SourceNode>, Vec<_>) = s
        .manifest
        .sources
        .values()
        .filter(|src| selected.contains(&src.unique_id) && freshness::has_criteria(&src.freshness))
        .partition(|src| src.loaded_at_field.is_some() || src.loaded_at_query.is_some());
    // As dbt: without metadata-based freshness, a source needs its loaded_at_field (or query).
    for src in unmeasurable {
        printer.diagnostic(
            &crate::diagnostics::Diagnostic::warning(
                crate::diagnostics::Code::ConfigNotHonoured,
                format!("source `{}.{}` has a freshness but no loaded_at_field or loaded_at_query: its freshness is not checked", src.source_name, src.name),
            )
            .with_label(crate::diagnostics::Label::new(s.project.files[src.file].source(), src.line, 1, 1, "declared here"))
            .with_help(format!(
                "the {} target has no metadata-based freshness; add `loaded_at_field: <timestamp column>` or `loaded_at_query: <a query selecting one timestamp>`",
                s.target.adapter.name
            )),
        );
    }
    if sources.is_empty() {
        printer.warn("Nothing to do: no selected source has a freshness (warn_after or error_after)");
        return Ok(EXIT_OK);
    }
    let engine = match open_engine(&s, None) {
        Ok((e, _)) => e,
        Err(d) => return Ok(session::report(printer, &Diagnostics::from(d))),
    };
    let started = Instant::now();
    printer.info(&format!("Running with kiln {} on target `{}`: {} source(s)", env!("CARGO_PKG_VERSION"), s.target.name, sources.len()));
    let mut results = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let start = Instant::now();
        let relation = src.relation(s.target.quote_char());
        let sql = match (&src.loaded_at_query, &src.loaded_at_field) {
            (Some(q), _) => s
                .jinja
                .render_for_relation(q, &src.package, relation)
                .map(|q| freshness::custom_query(&q))
                .map_err(|e| format!("cannot render loaded_at_query: {}", e.detail().map_or_else(|| e.to_string(), str::to_string))),
            (None, Some(field)) => Ok(freshness::query(&relation.render(), field, src.freshness["filter"].as_str())),
            (None, None) => continue,
        };
        let outcome = sql.and_then(|sql| engine.query(&sql, None).map_err(|e| e.message)).map(|t| {
            let row = t.rows.first().cloned().unwrap_or_default();
            let text = |i: usize| row.get(i).and_then(|v| v.as_str()).map_or_else(|| "0001-01-01T00:00:00+00:00".to_string(), utc);
            // No rows loaded at all: as old as can be.
            let age = row.get(2).and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok())).unwrap_or(f64::MAX);
            (text(0), text(1), age)
        });
        let status = match &outcome {
            Ok((_, _, age)) => freshness::status(&src.freshness, *age),
            Err(_) => Freshness::RuntimeError,
        };
        let result = SourceResult {
            unique_id: src.unique_id.clone(),
            status,
            outcome,
            criteria: src.freshness.clone(),
            seconds: start.elapsed().as_secs_f64(),
            thread: 0,
        };
        report(printer, i + 1, sources.len(), src, &result);
        results.push(result);
    }
    let generated_at = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let doc = freshness::sources_json(&results, &s.invocation.invocation_id, &generated_at, started.elapsed().as_secs_f64());
    let path = match &args.output {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => s.project.root.join(p),
        None => s.project.target_dir().join("sources.json"),
    };
    session::write_atomic_with(&path, |w| serde_json::to_writer(w, &doc).map_err(std::io::Error::other))?;
    let failed = results.iter().any(|r| matches!(r.status, Freshness::Error | Freshness::RuntimeError));
    Ok(if failed { EXIT_PROJECT } else { EXIT_OK })
}

/// A timestamp as dbt writes it (ISO 8601, with its UTC offset as `+HH:MM`): the embedded
/// engine gives none (UTC), PostgreSQL `+HH`.
fn utc(text: &str) -> String {
    let text = text.replacen(' ', "T", 1);
    let time_part = text.split_once('T').map_or("", |(_, t)| t);
    match time_part.rfind(['+', '-']) {
        None if time_part.ends_with('Z') => text,
        None => format!("{text}+00:00"),
        Some(i) if time_part.len() - i == 3 => format!("{text}:00"),
        Some(_) => text,
    }
}

/// One line per source, as dbt prints them (`PASS`, `WARN`, `ERROR STALE`, `ERROR`).
fn report(printer: &Printer, index: usize, total: usize, src: &crate::parse::SourceNode, r: &SourceResult) {
    if printer.format == super::printer::LogFormat::Json {
        printer.json_line(&serde_json::json!({
            "event": "node_finished", "unique_id": r.unique_id, "resource_type": "source",
            "status": r.status.as_str(), "message": r.outcome.as_ref().err(), "execution_time": r.seconds,
            "index": index, "total": total,
        }));
        return;
    }
    let (word, paint) = match r.status {
        Freshness::Pass => ("PASS", Paint::Green),
        Freshness::Warn => ("WARN", Paint::Yellow),
        Freshness::Error => ("ERROR STALE", Paint::Red),
        Freshness::RuntimeError => ("ERROR", Paint::Red),
    };
    let what = format!("freshness of {}.{}", src.source_name, src.name);
    let dots = 60usize.saturating_sub(what.len());
    printer.info(&format!("{index} of {total} {} {what}{} [{word} in {:.2}s]", printer.paint(word, paint), ".".repeat(dots), r.seconds));
    if let Err(e) = &r.outcome {
        printer.error(&format!("{} failed:\n{e}", r.unique_id));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_carry_their_offset() {
        assert_eq!(super::utc("2026-11-30T04:07:35.79"), "2026-11-30T04:07:35.79+00:00");
        assert_eq!(super::utc("2026-11-30 02:10:24.25+00"), "2026-11-30T02:10:24.25+00:00");
        assert_eq!(super::utc("2026-11-30T02:10:24-05:30"), "2026-11-30T02:10:24-05:30");
    }
}
