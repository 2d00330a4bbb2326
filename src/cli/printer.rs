//! The one place that decides how output looks: colour, JSON or text, quiet.

use crate::diagnostics::{Diagnostic, render};
use std::io::{IsTerminal, Write};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The colours output uses: red for errors and failures, yellow for warnings and skips, green
/// for success.
#[derive(Clone, Copy, Debug)]
pub enum Paint {
    Red,
    Green,
    Yellow,
}

pub struct Printer {
    pub format: LogFormat,
    pub color: bool,
    pub quiet: bool,
    pub timings: bool,
    /// A live status line on stderr (a terminal, text output, not quiet).
    pub progress: bool,
    secrets: Vec<String>,
    phase_start: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Printer {
    pub fn new(format: LogFormat, quiet: bool, env: &std::collections::HashMap<String, String>) -> Printer {
        let color = if env.contains_key(super::env::NO_COLOR) {
            false
        } else if env.get(super::env::FORCE_COLOR).is_some_and(|v| !v.is_empty() && v != "0") {
            true
        } else {
            std::io::stderr().is_terminal()
        };
        let progress = format == LogFormat::Text && !quiet && std::io::stderr().is_terminal();
        Printer { format, color, quiet, timings: false, progress, secrets: Vec::new(), phase_start: std::sync::Mutex::new(None) }
    }

    /// Values that must never be printed.
    pub fn add_secrets(&mut self, secrets: impl IntoIterator<Item = String>) {
        for s in secrets {
            if !s.is_empty() && !self.secrets.contains(&s) {
                self.secrets.push(s);
            }
        }
    }

    fn scrub(&self, s: &str) -> String {
        crate::jinja::scrub(s, self.secrets.iter()).into_owned()
    }

    pub fn diagnostic(&self, d: &Diagnostic) {
        match self.format {
            LogFormat::Json => self.json_line(&render::json(d)),
            LogFormat::Text => {
                let text = self.scrub(&render::human(d, self.color));
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
        }
    }

    /// A progress or summary line (stderr, or a JSON event).
    pub fn info(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match self.format {
            LogFormat::Json => self.json_line(&serde_json::json!({"level": "info", "message": self.scrub(msg)})),
            LogFormat::Text => {
                let clear = if self.progress { "\r\x1b[K" } else { "" };
                let _ = writeln!(std::io::stderr().lock(), "{clear}{}", self.scrub(msg));
            }
        }
    }

    /// Replaces the live status line (only when `progress` is on).
    pub fn status(&self, msg: &str) {
        if self.progress {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K{}", self.scrub(msg));
            let _ = err.flush();
        }
    }

    pub fn warn(&self, msg: &str) {
        match self.format {
            LogFormat::Json => self.json_line(&serde_json::json!({"level": "warning", "message": self.scrub(msg)})),
            LogFormat::Text => {
                let head = self.paint("warning", Paint::Yellow);
                let clear = if self.progress { "\r\x1b[K" } else { "" };
                let _ = writeln!(std::io::stderr().lock(), "{clear}{head}: {}", self.scrub(msg));
            }
        }
    }

    /// A failure the user must act on (a model error, a failing test), marked as an error.
    pub fn error(&self, msg: &str) {
        self.error_coded(None, msg)
    }

    /// An error with its code, as `error[E601]: ...`.
    pub fn error_coded(&self, code: Option<crate::diagnostics::Code>, msg: &str) {
        match self.format {
            LogFormat::Json => {
                let mut line = serde_json::json!({"level": "error", "message": self.scrub(msg)});
                if let Some(c) = code {
                    line["code"] = c.as_str().into();
                }
                self.json_line(&line)
            }
            LogFormat::Text => {
                let head = self.paint(&code.map_or("error".to_string(), |c| format!("error[{c}]")), Paint::Red);
                let clear = if self.progress { "\r\x1b[K" } else { "" };
                let _ = writeln!(std::io::stderr().lock(), "{clear}{head}: {}", self.scrub(msg));
            }
        }
    }

    /// `text` in `paint` when colour is on.
    pub fn paint(&self, text: &str, paint: Paint) -> String {
        if !self.color {
            return text.to_string();
        }
        let code = match paint {
            Paint::Red => "1;31",
            Paint::Green => "32",
            Paint::Yellow => "1;33",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// What templates logged: `log(msg, info=True)`, `print()` and warnings. `log(msg)` is a
    /// debug message, which dbt keeps out of the console too.
    pub fn template_logs(&self, logs: Vec<(crate::jinja::LogLevel, String)>) {
        use crate::jinja::LogLevel;
        for (level, msg) in logs {
            match level {
                LogLevel::Debug => {}
                LogLevel::Warn => self.warn(&msg),
                LogLevel::Info | LogLevel::Print => self.info(&msg),
            }
        }
    }

    /// With `--timings`: prints how long the phase that just ended took.
    pub fn phase(&self, name: &str) {
        let now = std::time::Instant::now();
        let mut last = self.phase_start.lock().unwrap_or_else(|e| e.into_inner());
        if let (true, Some(start)) = (self.timings, *last) {
            let _ = writeln!(std::io::stderr().lock(), "timing: {name:<10} {:>8.1} ms", (now - start).as_secs_f64() * 1000.0);
        }
        *last = Some(now);
    }

    /// A product line on stdout (compiled SQL, `ls` output). Returns false on a broken pipe.
    pub fn product(&self, line: &str) -> bool {
        writeln!(std::io::stdout().lock(), "{}", self.scrub(line)).is_ok()
    }

    /// A JSON event on stdout. Secrets are masked in its values before it is serialized: in the
    /// serialized text a secret with `"` or `\` is escaped and would no longer match.
    pub fn json_line(&self, v: &serde_json::Value) {
        let _ = writeln!(std::io::stdout().lock(), "{}", self.scrub_json(v));
    }

    /// A JSON product line on stdout (`show -o json`); false on a broken pipe.
    pub fn product_json(&self, v: &serde_json::Value) -> bool {
        writeln!(std::io::stdout().lock(), "{}", self.scrub_json(v)).is_ok()
    }

    fn scrub_json(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value as J;
        match v {
            J::String(s) => J::String(self.scrub(s)),
            J::Array(items) => J::Array(items.iter().map(|i| self.scrub_json(i)).collect()),
            J::Object(map) => J::Object(map.iter().map(|(k, v)| (self.scrub(k), self.scrub_json(v))).collect()),
            other => other.clone(),
        }
    }
}
