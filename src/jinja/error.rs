//! Jinja errors as diagnostics. Functions kiln adds to the environment attach a [`KilnError`]
//! (code + hint) to the minijinja error; everything else is classified by its kind.

use crate::diagnostics::{Code, Diagnostic, Label, SourceText};
use minijinja::{Error, ErrorKind};
use std::fmt;

#[derive(Debug, Clone)]
pub struct KilnError {
    pub code: Code,
    pub message: String,
    pub help: Option<String>,
}

impl fmt::Display for KilnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KilnError {}

pub fn kiln_error(code: Code, message: impl Into<String>, help: Option<String>) -> Error {
    let message = message.into();
    Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(KilnError { code, message, help })
}

fn find_kiln(err: &Error) -> Option<&KilnError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = cur {
        if let Some(k) = e.downcast_ref::<KilnError>() {
            return Some(k);
        }
        cur = e.source();
    }
    None
}

/// Template names are file paths; a macro's template is `path::macro_name`.
pub fn template_file(name: &str) -> &str {
    name.split("::").next().unwrap_or(name)
}

/// Converts a render error. `source_of` maps a file path to its text; `context` names what was
/// being rendered (e.g. "model `orders`").
pub fn to_diagnostic(err: &Error, source_of: &dyn Fn(&str) -> Option<SourceText>, context: &str) -> Diagnostic {
    let kiln = find_kiln(err);
    let code = match kiln {
        Some(k) => k.code,
        None => match err.kind() {
            ErrorKind::SyntaxError | ErrorKind::BadEscape => Code::JinjaSyntax,
            ErrorKind::UndefinedError => Code::JinjaUndefined,
            ErrorKind::UnknownFunction => Code::MissingMacro,
            _ if err.to_string().contains("undefined value") => Code::MissingMacro,
            _ => Code::JinjaRender,
        },
    };
    let detail = match kiln {
        Some(k) => k.message.clone(),
        None => err.detail().map(str::to_string).unwrap_or_else(|| err.kind().to_string()),
    };
    let message = match code {
        Code::JinjaSyntax => format!("Jinja syntax error in {context}: {detail}"),
        Code::JinjaUndefined => format!("undefined value in {context}: {detail}"),
        Code::MissingMacro => format!("{detail} (in {context})"),
        _ => format!("{detail} (in {context})"),
    };
    let mut d = Diagnostic::error(code, message);
    let file = err.name().map(template_file);
    if let (Some(file), Some(line)) = (file, err.line()) {
        if let Some(source) = source_of(file) {
            let label = match err.range() {
                Some(r) if r.end <= source.text.len() && r.start < r.end => {
                    let len = r.end - r.start;
                    let mut l = Label::at_offset(source, r.start, len, "");
                    if l.line != line {
                        l.line = line;
                    }
                    l
                }
                _ => Label::new(source, line, 1, 1, ""),
            };
            d = d.with_label(label);
        } else {
            d = d.with_file(file.to_string());
        }
    }
    d.help = kiln.and_then(|k| k.help.clone()).or_else(|| match code {
        Code::JinjaSyntax => Some("check that every `{% if %}`/`{% for %}`/`{% macro %}` is closed and tags are balanced".into()),
        Code::JinjaUndefined => Some("define the variable with `{% set %}`, pass it to the macro, or check its spelling".into()),
        Code::MissingMacro => Some("check the macro's name and that its file is under a `macro-paths` directory".into()),
        _ => None,
    });
    d
}
