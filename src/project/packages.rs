//! `packages.yml` / `dependencies.yml` and `package-lock.yml`, read and written as dbt does.
//!
//! Pure: no git, no file writes. `crate::deps` fetches and installs what this module describes.
//! The lock's `sha1_hash` is dbt's: the sha1 of the sorted `json.dumps(sort_keys=True)` of each
//! declared package's dataclass dict, so a lock written by dbt is honoured by kiln and the other
//! way round.

use super::yaml::{self, YNode, YValue};
use crate::diagnostics::{Code, Diagnostic, Label, SourceText};
use serde_json::{Map, Value as Json};

/// The lock file's name, beside `dbt_project.yml`.
pub const LOCK_FILE: &str = "package-lock.yml";

/// Where a package comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Local { path: String },
    Git { url: String, revision: Option<String>, subdirectory: Option<String>, warn_unpinned: bool },
    Hub { package: String, version: Vec<String> },
    Tarball { url: String },
    Private { repo: String },
}

impl Source {
    /// How dbt keys a package while resolving: two entries with the same key are one package.
    pub fn key(&self) -> String {
        match self {
            Source::Local { path } => format!("local:{path}"),
            Source::Git { url, subdirectory, .. } => {
                format!("git:{}/{}", url.trim_end_matches('/').trim_end_matches(".git"), subdirectory.as_deref().unwrap_or(""))
            }
            Source::Hub { package, .. } => format!("hub:{package}"),
            Source::Tarball { url } => format!("tarball:{url}"),
            Source::Private { repo } => format!("private:{repo}"),
        }
    }

    /// The name a user recognises the package by, for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Local { path } => format!("local package `{path}`"),
            Source::Git { url, subdirectory: Some(sub), .. } => format!("git package `{url}` (subdirectory `{sub}`)"),
            Source::Git { url, .. } => format!("git package `{url}`"),
            Source::Hub { package, .. } => format!("hub package `{package}`"),
            Source::Tarball { url } => format!("tarball package `{url}`"),
            Source::Private { repo } => format!("private package `{repo}`"),
        }
    }

    /// The project name to expect when nothing better is known (the last path segment).
    pub fn name_hint(&self) -> String {
        let last = |s: &str| s.trim_end_matches('/').trim_end_matches(".git").rsplit(['/', ':']).next().unwrap_or(s).to_string();
        match self {
            Source::Local { path } => last(path),
            Source::Git { subdirectory: Some(sub), .. } => last(sub),
            Source::Git { url, .. } | Source::Tarball { url } => last(url),
            Source::Hub { package, .. } => last(package),
            Source::Private { repo } => last(repo),
        }
    }
}

/// One entry of `packages.yml`: its source (values rendered when a renderer was given), the
/// `name:` it declares, the entry as written, and its line.
#[derive(Clone, Debug)]
pub struct Declared {
    pub source: Source,
    pub name: Option<String>,
    pub raw: YNode,
    pub line: usize,
}

impl Declared {
    /// The package for messages, as written (a rendered URL may hold a credential).
    pub fn as_written(&self) -> String {
        let mut source = self.source.clone();
        if let (Source::Git { url, .. }, Some(raw)) = (&mut source, self.raw.get("git").and_then(YNode::scalar_string)) {
            *url = raw;
        }
        source.describe()
    }
}

/// A declaration file: which one (`packages.yml` or `dependencies.yml`), its text and entries.
#[derive(Clone, Debug)]
pub struct Declarations {
    pub file: SourceText,
    pub packages: Vec<Declared>,
}

/// Renders one string value (`env_var`, `var`), as dbt's package renderer does.
pub type Render<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// Parses a declaration file; with `render`, string values with Jinja are rendered.
pub fn parse_declarations(file: SourceText, render: Option<Render>, diags: &mut Vec<Diagnostic>) -> Declarations {
    let mut packages = Vec::new();
    let doc = match yaml::parse(&file.text) {
        Ok(d) => d,
        Err(e) => {
            diags.push(super::yaml_error(&file, &e));
            return Declarations { file, packages };
        }
    };
    for entry in doc.get("packages").and_then(YNode::as_seq).unwrap_or(&[]) {
        match parse_entry(entry, render) {
            Ok(d) => packages.push(d),
            Err(message) => diags.push(
                Diagnostic::error(Code::InvalidValue, format!("{message} in {}", file.path))
                    .with_label(Label::new(file.clone(), entry.line, entry.col, 1, "this package entry"))
                    .with_help("a package is `- local: PATH`, `- git: URL` (with `revision:`, `subdirectory:`) or `- package: OWNER/NAME` with `version:`"),
            ),
        }
    }
    Declarations { file, packages }
}

fn parse_entry(entry: &YNode, render: Option<Render>) -> Result<Declared, String> {
    let text = |key: &str| -> Result<Option<String>, String> {
        let Some(value) = entry.get(key).and_then(YNode::scalar_string) else {
            return Ok(None);
        };
        match render {
            Some(r) if value.contains("{{") || value.contains("{%") => {
                r(&value).map(Some).map_err(|e| format!("cannot render `{key}`: {e}"))
            }
            _ => Ok(Some(value)),
        }
    };
    let required = |key: &str| text(key)?.filter(|v| !v.is_empty()).ok_or_else(|| format!("`{key}:` is empty"));
    let source = if entry.get("local").is_some() {
        Source::Local { path: required("local")? }
    } else if entry.get("git").is_some() {
        Source::Git {
            url: required("git")?,
            revision: text("revision")?,
            subdirectory: text("subdirectory")?,
            warn_unpinned: entry.get("warn-unpinned").and_then(YNode::as_bool) != Some(false),
        }
    } else if entry.get("package").is_some() {
        let version = match entry.get("version").map(|v| &v.value) {
            Some(YValue::Seq(items)) => items.iter().filter_map(YNode::scalar_string).collect(),
            Some(_) => text("version")?.into_iter().collect(),
            None => return Err("a hub package needs `version:`".into()),
        };
        Source::Hub { package: required("package")?, version }
    } else if entry.get("tarball").is_some() {
        Source::Tarball { url: required("tarball")? }
    } else if entry.get("private").is_some() {
        Source::Private { repo: required("private")? }
    } else {
        return Err("unrecognized package entry".into());
    };
    Ok(Declared { source, name: text("name")?, raw: entry.clone(), line: entry.line })
}

/// dbt's `sha1_hash` of the declared packages.
pub fn declarations_hash(packages: &[Declared]) -> String {
    use sha1::Digest;
    let mut dumps: Vec<String> = packages.iter().map(|p| python_json(&dataclass_dict(p))).collect();
    dumps.sort();
    let digest = sha1::Sha1::digest(dumps.join("\n").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The dict dbt's package dataclass serialises to (`PackageSpec.to_dict()`): its fields with
/// their defaults, the entry as written under `unrendered`, and `name` only when set.
fn dataclass_dict(p: &Declared) -> Json {
    let field = |key: &str| p.raw.get(key).map_or(Json::Null, YNode::to_json);
    let rendered = |s: &str| Json::String(s.to_string());
    let mut d = Map::new();
    match &p.source {
        Source::Local { path } => {
            d.insert("local".into(), rendered(path));
        }
        Source::Git { url, .. } => {
            d.insert("git".into(), rendered(url));
            d.insert("revision".into(), field("revision"));
            d.insert("warn-unpinned".into(), field("warn-unpinned"));
            d.insert("subdirectory".into(), field("subdirectory"));
        }
        Source::Hub { package, .. } => {
            d.insert("package".into(), rendered(package));
            d.insert("version".into(), field("version"));
            d.insert("install_prerelease".into(), p.raw.get("install_prerelease").map_or(Json::Bool(false), YNode::to_json));
        }
        Source::Tarball { url } => {
            d.insert("tarball".into(), rendered(url));
        }
        Source::Private { repo } => {
            d.insert("private".into(), rendered(repo));
            for key in ["provider", "revision", "warn-unpinned", "subdirectory"] {
                d.insert(key.into(), field(key));
            }
        }
    }
    d.insert("unrendered".into(), p.raw.to_json());
    match (&p.source, &p.name) {
        (Source::Tarball { .. }, name) => {
            d.insert("name".into(), name.as_deref().map_or(Json::Null, rendered));
        }
        (_, Some(name)) => {
            d.insert("name".into(), rendered(name));
        }
        _ => {}
    }
    Json::Object(d)
}

/// Python's `json.dumps(value, sort_keys=True)`: `", "` and `": "` separators, ASCII only.
pub fn python_json(value: &Json) -> String {
    let mut out = String::new();
    write_python_json(value, &mut out);
    out
}

fn write_python_json(value: &Json, out: &mut String) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(&n.to_string()),
        Json::String(s) => write_python_string(s, out),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_json(item, out);
            }
            out.push(']');
        }
        Json::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_string(key, out);
                out.push_str(": ");
                write_python_json(&map[key], out);
            }
            out.push('}');
        }
    }
}

fn write_python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A package as `package-lock.yml` pins it.
#[derive(Clone, Debug, PartialEq)]
pub struct Locked {
    pub name: String,
    pub pin: Pin,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Pin {
    Local {
        path: String,
    },
    /// `url` as written in `packages.yml` (unrendered; rendered again when installing).
    Git {
        url: String,
        commit: String,
        subdirectory: Option<String>,
    },
    Hub {
        package: String,
        version: String,
    },
    Tarball {
        url: String,
    },
}

impl Pin {
    /// The package for messages (the URL as written: the lock never holds a rendered one).
    pub fn describe(&self) -> String {
        match self {
            Pin::Local { path } => Source::Local { path: path.clone() }.describe(),
            Pin::Git { url, subdirectory, .. } => {
                Source::Git { url: url.clone(), revision: None, subdirectory: subdirectory.clone(), warn_unpinned: false }.describe()
            }
            Pin::Hub { package, .. } => Source::Hub { package: package.clone(), version: vec![] }.describe(),
            Pin::Tarball { url } => Source::Tarball { url: url.clone() }.describe(),
        }
    }
}

/// `package-lock.yml`: the pinned packages and the hash of the declarations they were resolved from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lock {
    pub packages: Vec<Locked>,
    pub sha1_hash: Option<String>,
}

impl Lock {
    /// Reads a lock file; entries kiln cannot read are errors at their line.
    pub fn parse(file: &SourceText) -> Result<Lock, Diagnostic> {
        let doc = yaml::parse(&file.text).map_err(|e| super::yaml_error(file, &e))?;
        let mut lock = Lock { packages: vec![], sha1_hash: doc.get("sha1_hash").and_then(YNode::scalar_string) };
        for entry in doc.get("packages").and_then(YNode::as_seq).unwrap_or(&[]) {
            let s = |k: &str| entry.get(k).and_then(YNode::scalar_string);
            let pin = if let Some(path) = s("local") {
                Some(Pin::Local { path })
            } else if let (Some(url), Some(commit)) = (s("git"), s("revision")) {
                Some(Pin::Git { url, commit, subdirectory: s("subdirectory") })
            } else if let (Some(package), Some(version)) = (s("package"), s("version")) {
                Some(Pin::Hub { package, version })
            } else {
                s("tarball").map(|url| Pin::Tarball { url })
            };
            match (pin, s("name")) {
                (Some(pin), Some(name)) => lock.packages.push(Locked { name, pin }),
                _ => {
                    return Err(Diagnostic::error(Code::InvalidValue, format!("unreadable package entry in {LOCK_FILE}"))
                        .with_label(Label::new(
                            file.clone(),
                            entry.line,
                            entry.col,
                            1,
                            "expected `name:` and `git:`+`revision:`, `local:`, `package:`+`version:` or `tarball:`",
                        ))
                        .with_help(format!("delete {LOCK_FILE} and run `kiln deps` to write it again")));
                }
            }
        }
        Ok(lock)
    }

    /// The lock file's text, laid out as dbt writes it (keys sorted, list items indented).
    pub fn to_yaml(&self) -> String {
        let mut out = String::from("packages:\n");
        for p in &self.packages {
            let mut fields: Vec<(&str, &str)> = vec![("name", &p.name)];
            match &p.pin {
                Pin::Local { path } => fields.push(("local", path)),
                Pin::Git { url, commit, subdirectory } => {
                    fields.extend([("git", url.as_str()), ("revision", commit.as_str())]);
                    if let Some(sub) = subdirectory {
                        fields.push(("subdirectory", sub));
                    }
                }
                Pin::Hub { package, version } => fields.extend([("package", package.as_str()), ("version", version.as_str())]),
                Pin::Tarball { url } => fields.push(("tarball", url)),
            }
            fields.sort();
            for (i, (key, value)) in fields.iter().enumerate() {
                out.push_str(if i == 0 { "  - " } else { "    " });
                out.push_str(&format!("{key}: {}\n", yaml_scalar(value)));
            }
        }
        if let Some(hash) = &self.sha1_hash {
            out.push_str(&format!("sha1_hash: {hash}\n"));
        }
        out
    }
}

/// A string as PyYAML dumps it: plain when it reads back as the same string, else single-quoted.
fn yaml_scalar(s: &str) -> String {
    let plain_chars = s.chars().all(|c| c.is_ascii_alphanumeric() || "_-./:@+~".contains(c));
    let reads_as_other = matches!(s.to_ascii_lowercase().as_str(), "" | "null" | "~" | "true" | "false" | "yes" | "no" | "on" | "off")
        || s.parse::<f64>().is_ok()
        || s.starts_with(['-', ':', '@', '~'])
        || s.contains(": ")
        || s.ends_with(':');
    if plain_chars && !reads_as_other { s.to_string() } else { format!("'{}'", s.replace('\'', "''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(text: &str) -> Vec<Declared> {
        let mut diags = vec![];
        let d = parse_declarations(SourceText::new("packages.yml", text), None, &mut diags);
        assert!(diags.is_empty(), "{diags:?}");
        d.packages
    }

    /// The hash dbt-core 1.10 wrote for these declarations (`dbt deps`, package-lock.yml).
    #[test]
    fn hash_is_dbts() {
        let text = "packages:\n  - git: \"file:///tmp/gd/repo\"\n    revision: v1\n  - git: \"/tmp/gd/repo\"\n    subdirectory: sub/pkgb\n    revision: main\n";
        assert_eq!(declarations_hash(&declared(text)), "d77012e716dc7088f6e64f6f8052551e119e617a");
    }

    #[test]
    fn python_json_matches_json_dumps() {
        let v = serde_json::json!({"b": [1, 1.5, null, true], "a": "é\"\n"});
        assert_eq!(python_json(&v), r#"{"a": "\u00e9\"\n", "b": [1, 1.5, null, true]}"#);
    }

    #[test]
    fn lock_round_trips() {
        let lock = Lock {
            packages: vec![
                Locked {
                    name: "pkga".into(),
                    pin: Pin::Git { url: "file:///tmp/r".into(), commit: "c02c".into(), subdirectory: Some("sub/b".into()) },
                },
                Locked { name: "utils".into(), pin: Pin::Local { path: "../utils".into() } },
                Locked { name: "dbt_utils".into(), pin: Pin::Hub { package: "dbt-labs/dbt_utils".into(), version: "1.3.0".into() } },
            ],
            sha1_hash: Some("abc".into()),
        };
        let text = lock.to_yaml();
        assert!(
            text.starts_with(
                "packages:\n  - git: file:///tmp/r\n    name: pkga\n    revision: c02c\n    subdirectory: sub/b\n  - local: ../utils\n"
            ),
            "{text}"
        );
        assert_eq!(Lock::parse(&SourceText::new(LOCK_FILE, text.as_str())).unwrap(), lock);
        assert_eq!(yaml_scalar("1.3"), "'1.3'");
        assert_eq!(yaml_scalar("https://x@y/z.git"), "https://x@y/z.git");
    }
}
