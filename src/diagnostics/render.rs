//! The one place diagnostics become text: rustc-style snippets for people, JSON lines for tools.

use super::{Diagnostic, Label, Severity};
use std::fmt::Write;

const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[1;33m";
const BLUE: &str = "\x1b[1;34m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// Renders a diagnostic for a terminal:
///
/// ```text
/// error[E301]: model `orders` refers to `stg_order`, which does not exist
///   --> models/orders.sql:3:8
///    |
///  3 | from {{ ref('stg_order') }}
///    |         ^^^^^^^^^^^^^^^^ no model named `stg_order`
///    |
///    = help: did you mean `stg_orders`?
/// ```
pub fn human(d: &Diagnostic, color: bool) -> String {
    let paint = |code: &str, s: &str| {
        if color { format!("{code}{s}{RESET}") } else { s.to_string() }
    };
    let level_color = match d.severity {
        Severity::Error => RED,
        Severity::Warning => YELLOW,
    };
    let mut out = String::new();
    let head = format!("{}[{}]", d.severity.as_str(), d.code);
    let _ = writeln!(out, "{}{}", paint(level_color, &head), paint(BOLD, &format!(": {}", d.message)));
    let gutter = d.labels.iter().map(|l| l.line.to_string().len()).max().unwrap_or(1);
    let pad = " ".repeat(gutter);
    for (i, label) in d.labels.iter().enumerate() {
        let arrow = if i == 0 { "-->" } else { ":::" };
        let _ = writeln!(out, "{pad}{} {}:{}:{}", paint(BLUE, arrow), label.source.path, label.line, label.col);
        snippet(&mut out, label, gutter, color, level_color);
    }
    if d.labels.is_empty()
        && let Some(file) = &d.file
    {
        let _ = writeln!(out, "{pad}{} {file}", paint(BLUE, "-->"));
    }
    for note in &d.notes {
        let _ = writeln!(out, "{pad} {} note: {}", paint(BLUE, "="), indent_continuation(note, gutter + 9));
    }
    if let Some(help) = &d.help {
        let _ = writeln!(out, "{pad} {} help: {}", paint(BLUE, "="), indent_continuation(help, gutter + 9));
    }
    out
}

fn indent_continuation(text: &str, width: usize) -> String {
    text.replace('\n', &format!("\n{}", " ".repeat(width)))
}

fn snippet(out: &mut String, label: &Label, gutter: usize, color: bool, level_color: &str) {
    let paint = |code: &str, s: &str| {
        if color { format!("{code}{s}{RESET}") } else { s.to_string() }
    };
    let Some(line_text) = label.source.text.lines().nth(label.line - 1) else {
        return;
    };
    let line_text = line_text.trim_end_matches('\r');
    let bar = paint(BLUE, "|");
    let _ = writeln!(out, "{} {bar}", " ".repeat(gutter));
    let _ = writeln!(out, "{} {bar} {}", paint(BLUE, &format!("{:>gutter$}", label.line)), line_text.replace('\t', "    "));
    // Columns count characters; tabs were widened to 4 above.
    let prefix: String = line_text.chars().take(label.col - 1).collect();
    let offset = prefix.chars().map(|c| if c == '\t' { 4 } else { 1 }).sum::<usize>();
    let available = line_text.chars().count().saturating_sub(label.col - 1).max(1);
    let carets = "^".repeat(label.len.min(available));
    let text = if label.text.is_empty() { String::new() } else { format!(" {}", label.text) };
    let _ = writeln!(out, "{} {bar} {}{}", " ".repeat(gutter), " ".repeat(offset), paint(level_color, &format!("{carets}{text}")));
    let _ = writeln!(out, "{} {bar}", " ".repeat(gutter));
}

/// One JSON object per diagnostic (for `--log-format json`).
pub fn json(d: &Diagnostic) -> serde_json::Value {
    let primary = d.labels.first();
    serde_json::json!({
        "level": d.severity.as_str(),
        "code": d.code.as_str(),
        "message": d.message,
        "file": d.path(),
        "line": primary.map(|l| l.line),
        "col": primary.map(|l| l.col),
        "snippet": primary.and_then(|l| l.source.text.lines().nth(l.line - 1).map(str::to_string)),
        "labels": d.labels.iter().map(|l| serde_json::json!({
            "file": l.source.path, "line": l.line, "col": l.col, "len": l.len, "text": l.text,
        })).collect::<Vec<_>>(),
        "notes": d.notes,
        "help": d.help,
    })
}
