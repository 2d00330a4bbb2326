//! `profiles.yml`: where it is found, which target is used, and which of its values are secret.
//!
//! Lookup order: `--profiles-dir`, `KILN_PROFILES_DIR`, `DBT_PROFILES_DIR`, the project directory,
//! `~/.kiln`, `~/.dbt`. With no `profiles.yml` anywhere, the built-in target `dev` runs on the
//! embedded DataFusion engine, so a fresh project needs no setup.

use super::fs::Fs;
use super::yaml::{self, YNode};
use super::yaml_error;
use crate::diagnostics::{Code, Diagnostic, Label, SourceText, did_you_mean};
use indexmap::IndexMap;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

use crate::adapter::Adapter;
pub use crate::adapter::EngineKind;

/// The resolved target of a run.
#[derive(Clone, Debug)]
pub struct Target {
    pub profile_name: String,
    pub name: String,
    /// `type:` as written (`datafusion`, `duckdb`, `postgres`, `bigquery`), for `target.type`.
    pub adapter_type: String,
    /// What kiln knows about that adapter type.
    pub adapter: &'static Adapter,
    pub database: String,
    pub schema: String,
    pub threads: usize,
    /// Every key of the target, rendered. Secrets are included: use [`Target::public_settings`]
    /// for anything printed or written.
    pub settings: IndexMap<String, Json>,
    /// Where the target came from (`None` for the built-in default).
    pub profiles_path: Option<PathBuf>,
}

/// Keys whose values are never printed or written to artifacts.
pub const SECRET_KEYS: &[&str] = &[
    "password",
    "pass",
    "token",
    "private_key",
    "private_key_passphrase",
    "keyfile_json",
    "refresh_token",
    "client_secret",
    "secret",
    "aws_secret_access_key",
    "secret_access_key",
    "s3_secret_access_key",
    "account_key",
    "sas_token",
    "service_account_json",
    "api_key",
    "access_token",
];

pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_KEYS.contains(&k.as_str()) || k.ends_with("_password") || k.ends_with("_secret") || k.ends_with("_token")
}

impl Target {
    /// The built-in target: DataFusion, warehouse under `.kiln/` in the project.
    pub fn builtin(profile_name: &str) -> Target {
        let mut settings = IndexMap::new();
        settings.insert("type".into(), Json::from(crate::adapter::embedded().name));
        settings.insert("path".into(), Json::from(".kiln/warehouse"));
        Target {
            profile_name: profile_name.to_string(),
            name: "dev".into(),
            adapter_type: crate::adapter::embedded().name.into(),
            adapter: crate::adapter::embedded(),
            database: "kiln".into(),
            schema: "main".into(),
            threads: std::thread::available_parallelism().map_or(4, |n| n.get().max(4)),
            settings,
            profiles_path: None,
        }
    }

    /// Settings with secrets masked, for `kiln debug`, logs and `target` in templates.
    pub fn public_settings(&self) -> IndexMap<String, Json> {
        self.settings.iter().map(|(k, v)| (k.clone(), if is_secret_key(k) { Json::from("*****") } else { v.clone() })).collect()
    }

    /// Values that must be scrubbed from anything printed.
    /// The secret values to mask wherever they appear in text. A value that is also a public
    /// one (the target or profile name, a schema, a user) is left out: masking it would hide
    /// those names everywhere, and printing them reveals nothing new. [`Target::public_settings`]
    /// masks secret keys regardless.
    pub fn secret_values(&self) -> Vec<String> {
        let public: Vec<&str> = self
            .settings
            .iter()
            .filter(|(k, _)| !is_secret_key(k))
            .filter_map(|(_, v)| v.as_str())
            .chain([self.name.as_str(), self.profile_name.as_str(), self.adapter_type.as_str()])
            .collect();
        self.settings
            .iter()
            .filter(|(k, _)| is_secret_key(k))
            .filter_map(|(_, v)| v.as_str().map(str::to_string))
            .filter(|s| s.len() >= 3 && !public.contains(&s.as_str()))
            .collect()
    }

    /// Where the embedded engine keeps this target's warehouse: `path` (default
    /// `.kiln/warehouse`) relative to the project; a dbt-duckdb database file `x.duckdb` becomes
    /// the directory `x.duckdb.kiln`.
    pub fn warehouse_dir(&self, project_root: &Path) -> PathBuf {
        let path = self.settings.get("path").and_then(Json::as_str).unwrap_or(".kiln/warehouse");
        let path = if path.ends_with(".duckdb") || path.ends_with(".db") { format!("{path}.kiln") } else { path.to_string() };
        project_root.join(path)
    }

    /// Dialect-specific quoting character.
    pub fn quote_char(&self) -> char {
        self.adapter.quote
    }

    /// Which engine builds this target.
    pub fn engine(&self) -> EngineKind {
        self.adapter.engine
    }
}

/// Finds the directory holding `profiles.yml`. `env` gives environment variables (the CLI reads
/// the environment, not this layer).
pub fn find_profiles_file(
    fs: &dyn Fs,
    cli_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    project_root: &Path,
    home: Option<&Path>,
) -> (Option<PathBuf>, bool) {
    if let Some(dir) = cli_dir {
        return (Some(dir.join("profiles.yml")), true);
    }
    for var in ["KILN_PROFILES_DIR", "DBT_PROFILES_DIR"] {
        if let Some(dir) = env(var).filter(|d| !d.is_empty()) {
            return (Some(PathBuf::from(dir).join("profiles.yml")), true);
        }
    }
    let in_project = project_root.join("profiles.yml");
    if fs.exists(&in_project) {
        return (Some(in_project), true);
    }
    if let Some(home) = home {
        for dir in [".kiln", ".dbt"] {
            let p = home.join(dir).join("profiles.yml");
            if fs.exists(&p) {
                return (Some(p), false);
            }
        }
    }
    (None, false)
}

/// What resolving the target produced: the target and any warnings.
pub struct Resolved {
    pub target: Target,
    pub warnings: Vec<Diagnostic>,
}

/// Reads `profiles.yml` (if any) and resolves `profile_name` / `target_override`.
/// `render` renders a string value that contains Jinja (`{{ env_var('PGPASSWORD') }}`).
pub fn resolve_target(
    fs: &dyn Fs,
    project_root: &Path,
    profiles: (Option<PathBuf>, bool),
    profile_name: &str,
    target_override: Option<&str>,
    render: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Resolved, Diagnostic> {
    let (path, explicit) = profiles;
    let builtin = |warnings: Vec<Diagnostic>| -> Result<Resolved, Diagnostic> {
        let target = Target::builtin(profile_name);
        if let Some(t) = target_override
            && t != target.name
        {
            return Err(Diagnostic::error(
                Code::TargetNotFound,
                format!("target `{t}` does not exist: no profiles.yml defines profile `{profile_name}`"),
            )
            .with_help("the built-in target is `dev` (embedded DataFusion); add a profiles.yml to define other targets"));
        }
        Ok(Resolved { target, warnings })
    };
    let Some(path) = path else {
        return builtin(vec![]);
    };
    // Inside the project, show the path relative to it (as every other file); else in full.
    let display = path.strip_prefix(project_root).map_or_else(|_| path.to_string_lossy().to_string(), |p| p.to_string_lossy().to_string());
    let text = match fs.read_to_string(&path) {
        Ok(t) => t,
        Err(_) if !explicit => return builtin(vec![]),
        Err(e) => {
            return Err(Diagnostic::error(Code::ProfileNotFound, format!("cannot read {display}: {e}"))
                .with_help("check --profiles-dir / KILN_PROFILES_DIR / DBT_PROFILES_DIR"));
        }
    };
    let source = SourceText::new(display.clone(), text.as_str());
    let doc = yaml::parse(&text).map_err(|e| yaml_error(&source, &e))?;
    let Some(profile) = doc.get(profile_name) else {
        let names: Vec<&str> = doc.entries().map(|(k, _, _)| k).filter(|k| *k != "config").collect();
        let d = Diagnostic::error(Code::ProfileNotFound, format!("profile `{profile_name}` is not defined in {display}"))
            .with_label(Label::new(
                source.clone(),
                1,
                1,
                1,
                format!("defines: {}", if names.is_empty() { "nothing".into() } else { names.join(", ") }),
            ))
            .with_help(did_you_mean(profile_name, names.iter().copied()).unwrap_or_else(|| {
                format!("add a `{profile_name}:` profile, or set `profile:` in dbt_project.yml to one of the names above")
            }));
        if explicit {
            return Err(d);
        }
        return builtin(vec![Diagnostic::warning(
            Code::ProfileNotFound,
            format!("profile `{profile_name}` is not in {display}; using the built-in DataFusion target"),
        )]);
    };
    let default_target = profile.get("target").and_then(YNode::scalar_string).map(|s| render(&s).unwrap_or(s));
    let outputs = profile.get("outputs");
    let target_name = target_override.map(str::to_string).or(default_target).unwrap_or_else(|| "dev".into());
    let Some(out) = outputs.and_then(|o| o.get(&target_name)) else {
        let names: Vec<&str> = outputs.map(|o| o.entries().map(|(k, _, _)| k).collect()).unwrap_or_default();
        let anchor = outputs.unwrap_or(profile);
        return Err(Diagnostic::error(
            Code::TargetNotFound,
            format!("target `{target_name}` is not an output of profile `{profile_name}`"),
        )
        .with_label(Label::new(source.clone(), anchor.line, anchor.col, 1, format!("outputs: {}", names.join(", "))))
        .with_help(did_you_mean(&target_name, names.iter().copied()).unwrap_or_else(|| "pass one of the outputs with --target".into())));
    };
    let mut settings = IndexMap::new();
    for (k, _, v) in out.entries() {
        let value = match v.to_json() {
            Json::String(s) if s.contains("{{") || s.contains("{%") => {
                let rendered = render(&s).map_err(|e| {
                    Diagnostic::error(Code::BadProfile, format!("cannot render `{k}` of target `{target_name}`: {e}"))
                        .with_label(Label::new(source.clone(), v.line, v.col, 1, "in this value"))
                })?;
                // Numbers and booleans rendered from env vars become numbers again, as in dbt.
                serde_json::from_str::<Json>(&rendered).ok().filter(|j| j.is_number() || j.is_boolean()).unwrap_or(Json::String(rendered))
            }
            other => other,
        };
        settings.insert(k.to_string(), value);
    }
    let bad = |msg: String, node: &YNode, help: &str| {
        Diagnostic::error(Code::BadProfile, msg)
            .with_label(Label::new(source.clone(), node.line, node.col, 1, "here"))
            .with_help(help.to_string())
    };
    let Some(adapter_type) = settings.get("type").and_then(Json::as_str).map(str::to_string) else {
        return Err(bad(
            format!("target `{target_name}` of profile `{profile_name}` has no `type`"),
            out,
            "add `type: datafusion` (or postgres, bigquery)",
        ));
    };
    let Some(adapter) = crate::adapter::lookup(&adapter_type) else {
        return Err(bad(
            format!("adapter type `{adapter_type}` is not supported"),
            out.get("type").unwrap_or(out),
            &format!("kiln knows these types: {}", Adapter::known_types().join(", ")),
        ));
    };
    let s = |keys: &[&str]| {
        keys.iter().find_map(|k| settings.get(*k).and_then(|v| v.as_str().map(str::to_string).or_else(|| Some(v.to_string()))))
    };
    // dbt-duckdb names the database after its file.
    let database = s(adapter.database_keys).or_else(|| {
        (adapter.engine == EngineKind::DataFusion).then(|| s(&["path"])).flatten().map(|p| {
            let name = p.rsplit('/').next().unwrap_or(&p).to_string();
            name.split('.').next().unwrap_or(&name).to_string()
        })
    });
    let required = |value: Option<String>, keys: &[&str], default: Option<&str>, what: &str| match (value, default) {
        (Some(v), _) if !v.is_empty() && v != ":memory:" => Ok(v),
        (_, Some(d)) => Ok(d.to_string()),
        _ => Err(bad(
            format!("target `{target_name}` has no {what} (`{}`)", keys.join("`/`")),
            out,
            &format!("add `{}:` to the target", keys[0]),
        )),
    };
    let database = required(database, adapter.database_keys, adapter.default_database, "database")?;
    let schema = required(s(adapter.schema_keys), adapter.schema_keys, adapter.default_schema, "schema")?;
    let threads = match settings.get("threads") {
        None | Some(Json::Null) => 1,
        Some(v) => match v.as_u64().or_else(|| v.as_str().and_then(|t| t.trim().parse().ok())) {
            Some(t) if t >= 1 => t as usize,
            _ => {
                return Err(bad(
                    format!("`threads` of target `{target_name}` is `{v}`, not a positive whole number"),
                    out.get("threads").unwrap_or(out),
                    "write the number of nodes to build at once, e.g. `threads: 4`",
                ));
            }
        },
    };
    Ok(Resolved {
        target: Target {
            profile_name: profile_name.into(),
            name: target_name,
            adapter_type,
            adapter,
            database,
            schema,
            threads,
            settings,
            profiles_path: Some(path),
        },
        warnings: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::fs::MemFs;

    fn render(s: &str) -> Result<String, String> {
        Ok(s.replace("{{ env_var('PGPASSWORD') }}", "hunter2"))
    }

    #[test]
    fn postgres_target_with_secret() {
        let root = Path::new("/p");
        let fs = MemFs::new(
            root,
            &[(
                "profiles.yml",
                "shop:\n  target: dev\n  outputs:\n    dev:\n      type: postgres\n      host: localhost\n      user: u\n      password: \"{{ env_var('PGPASSWORD') }}\"\n      dbname: shop\n      schema: analytics\n      threads: 4\n",
            )],
        );
        let found = find_profiles_file(&fs, None, &|_| None, root, None);
        let r = resolve_target(&fs, root, found, "shop", None, &render).unwrap();
        assert_eq!(r.target.engine(), EngineKind::Postgres);
        assert_eq!((r.target.database.as_str(), r.target.schema.as_str(), r.target.threads), ("shop", "analytics", 4));
        assert_eq!(r.target.settings["password"], "hunter2");
        assert_eq!(r.target.public_settings()["password"], "*****");
        assert_eq!(r.target.secret_values(), vec!["hunter2".to_string()]);
        // A password that is also the target's name is masked as a setting, not in every text.
        let mut t = r.target.clone();
        t.name = "hunter2".into();
        assert!(t.secret_values().is_empty());
        assert_eq!(t.public_settings()["password"], "*****");
    }

    #[test]
    fn threads_that_are_not_a_number_are_an_error_at_their_line() {
        let root = Path::new("/p");
        for bad in ["many", "[1, 2]", "0"] {
            let text = format!("p:\n  target: dev\n  outputs:\n    dev:\n      type: datafusion\n      threads: {bad}\n");
            let fs = MemFs::new(root, &[("profiles.yml", text.as_str())]);
            let found = find_profiles_file(&fs, None, &|_| None, root, None);
            let err = resolve_target(&fs, root, found, "p", None, &render).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!((err.code, err.labels[0].line), (Code::BadProfile, 6), "{bad}");
        }
    }

    #[test]
    fn no_profiles_means_builtin_datafusion() {
        let fs = MemFs::default();
        let found = find_profiles_file(&fs, None, &|_| None, Path::new("/p"), None);
        let r = resolve_target(&fs, Path::new("/p"), found, "shop", None, &render).unwrap();
        assert_eq!(r.target.engine(), EngineKind::DataFusion);
        assert!(resolve_target(&fs, Path::new("/p"), (None, false), "shop", Some("prod"), &render).is_err());
    }
}
