//! Stage 1: the project on disk as data.
//!
//! Reads `dbt_project.yml`, the packages it depends on, and every file under the resource paths
//! into a [`Project`]. Nothing here renders Jinja or resolves references; that is `parse`'s job.
//! All IO goes through the [`fs::Fs`] seam.

pub mod config;
pub mod fs;
pub mod packages;
pub mod profiles;
pub mod properties;
pub mod render;
pub mod typed;
pub mod yaml;

use crate::diagnostics::{Code, Diagnostic, Diagnostics, Label, SourceText, did_you_mean};
use config::ConfigTree;
use fs::Fs;
use indexmap::IndexMap;
use rayon::prelude::*;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use yaml::{YNode, YValue};

/// What a file under a resource path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    Model,
    Analysis,
    Snapshot,
    Seed,
    Macro,
    /// A singular test (`tests/**/*.sql`) or a generic test definition under `tests/generic/`.
    Test,
    Properties,
    Docs,
}

/// Seeds up to this size are hashed by their contents (dbt's `MAXIMUM_SEED_SIZE`).
const MAXIMUM_SEED_SIZE: u64 = 1 << 20;

/// One file of a package.
#[derive(Clone, Debug)]
pub struct ProjectFile {
    pub kind: FileKind,
    /// Index into [`Project::packages`].
    pub package: usize,
    /// Path relative to the package root, with `/` separators (dbt's `original_file_path`).
    pub original_path: String,
    /// Path relative to the resource directory it was found in (dbt's `path`).
    pub path: String,
    /// What the user sees in diagnostics: relative to the root project.
    pub display_path: String,
    pub abs_path: PathBuf,
    /// Contents (empty for seeds, which are read by the engine).
    pub text: Arc<str>,
    /// A seed's hash as dbt takes it: the sha256 of its stripped contents, or `None` over
    /// 1 MiB (dbt then hashes its path).
    pub seed_sha256: Option<String>,
}

impl ProjectFile {
    pub fn source(&self) -> SourceText {
        SourceText::new(self.display_path.clone(), self.text.clone())
    }
    /// File name without extension.
    pub fn stem(&self) -> &str {
        let name = self.path.rsplit('/').next().unwrap_or(&self.path);
        name.rsplit_once('.').map_or(name, |(s, _)| s)
    }
    /// Folders between the resource directory and the file (for `fqn`).
    pub fn folders(&self) -> Vec<&str> {
        let mut parts: Vec<&str> = self.path.split('/').collect();
        parts.pop();
        parts
    }
}

/// `dispatch:` entry of `dbt_project.yml`.
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    pub macro_namespace: String,
    pub search_order: Vec<String>,
}

/// A parsed `dbt_project.yml`.
#[derive(Clone, Debug)]
pub struct ProjectConfig {
    pub name: String,
    pub version: Option<String>,
    pub profile: Option<String>,
    pub model_paths: Vec<String>,
    pub seed_paths: Vec<String>,
    pub test_paths: Vec<String>,
    pub analysis_paths: Vec<String>,
    pub macro_paths: Vec<String>,
    pub snapshot_paths: Vec<String>,
    pub docs_paths: Option<Vec<String>>,
    pub target_path: String,
    pub packages_install_path: String,
    pub clean_targets: Vec<String>,
    pub vars: YNode,
    pub trees: IndexMap<&'static str, ConfigTree>,
    /// The trees as written, before their Jinja is rendered: dbt's `unrendered_config`, which
    /// `state:modified` compares (an `env_var` that differs between environments is no change).
    pub unrendered_trees: IndexMap<&'static str, ConfigTree>,
    pub dispatch: Vec<DispatchConfig>,
    pub on_run_start: Vec<String>,
    pub on_run_end: Vec<String>,
    pub require_dbt_version: Option<Json>,
    pub quoting: Json,
    pub source: SourceText,
}

/// Resource sections of `dbt_project.yml` that hold config trees.
pub const CONFIG_SECTIONS: &[&str] = &[
    "models",
    "seeds",
    "snapshots",
    "data_tests",
    "sources",
    "unit_tests",
    "analyses",
    "exposures",
    "metrics",
    "semantic-models",
    "saved-queries",
    "functions",
];

/// `dbt_project.yml` keys kiln reads but does not apply yet, and what that means: each one set
/// gets a warning at its line.
const NOT_APPLIED: &[(&str, &str)] =
    &[("query-comment", "kiln sends the SQL without a query comment (and BigQuery jobs get no labels from one)")];

const TOP_LEVEL_KEYS: &[&str] = &[
    "name",
    "version",
    "config-version",
    "profile",
    "model-paths",
    "source-paths",
    "seed-paths",
    "data-paths",
    "test-paths",
    "analysis-paths",
    "macro-paths",
    "snapshot-paths",
    "docs-paths",
    "asset-paths",
    "function-paths",
    "target-path",
    "log-path",
    "packages-install-path",
    "clean-targets",
    "query-comment",
    "require-dbt-version",
    "quoting",
    "models",
    "seeds",
    "snapshots",
    "sources",
    "tests",
    "data_tests",
    "unit_tests",
    "metrics",
    "semantic-models",
    "saved-queries",
    "exposures",
    "analyses",
    "vars",
    "on-run-start",
    "on-run-end",
    "dispatch",
    "restrict-access",
    "flags",
    "dbt-cloud",
    "functions",
];

impl ProjectConfig {
    pub fn parse(text: &str, display_path: &str, diags: &mut Vec<Diagnostic>) -> Option<ProjectConfig> {
        let source = SourceText::new(display_path, text);
        let doc = match yaml::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                diags.push(yaml_error(&source, &e));
                return None;
            }
        };
        if doc.as_map().is_none() {
            diags.push(Diagnostic::error(Code::InvalidValue, "dbt_project.yml must be a mapping").with_label(Label::new(
                source.clone(),
                doc.line,
                doc.col,
                1,
                format!("found {}", doc.kind()),
            )));
            return None;
        }
        for (key, key_node, value) in doc.entries() {
            if let Some((_, what)) = NOT_APPLIED.iter().find(|(k, _)| *k == key)
                && !matches!(value.to_json(), serde_json::Value::Null | serde_json::Value::Bool(false))
            {
                diags.push(Diagnostic::warning(Code::ConfigNotHonoured, format!("`{key}` is not applied: {what}")).with_label(Label::new(
                    source.clone(),
                    key_node.line,
                    key_node.col,
                    key.chars().count(),
                    "set here",
                )));
            }
            if !TOP_LEVEL_KEYS.contains(&key) {
                diags.push(
                    Diagnostic::error(Code::UnknownKey, format!("unknown key `{key}` in dbt_project.yml"))
                        .with_label(Label::new(
                            source.clone(),
                            key_node.line,
                            key_node.col,
                            key.chars().count(),
                            "not a dbt_project.yml key",
                        ))
                        .with_help_opt(did_you_mean(key, TOP_LEVEL_KEYS.iter().copied())),
                );
            }
        }
        let Some(name) = doc.get("name").and_then(YNode::scalar_string) else {
            diags.push(
                Diagnostic::error(Code::MissingKey, "dbt_project.yml has no `name`")
                    .with_label(Label::new(source.clone(), 1, 1, 1, "expected `name: my_project`"))
                    .with_help("add `name: <project_name>` (letters, digits and underscores)"),
            );
            return None;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.starts_with(|c: char| c.is_ascii_digit())
        {
            let n = doc.get("name").unwrap_or(&doc);
            diags.push(
                Diagnostic::error(Code::BadProjectName, format!("project name `{name}` is not a valid identifier"))
                    .with_label(Label::new(source.clone(), n.line, n.col, name.chars().count(), "invalid name"))
                    .with_help(format!(
                        "use letters, digits and underscores, e.g. `{}`",
                        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                    )),
            );
        }
        let paths = |keys: &[&str], default: &str, diags: &mut Vec<Diagnostic>| -> Vec<String> {
            for key in keys {
                if let Some(v) = doc.get(key) {
                    return string_list(v, &source, key, diags);
                }
            }
            vec![default.to_string()]
        };
        let model_paths = paths(&["model-paths", "source-paths"], "models", diags);
        let seed_paths = paths(&["seed-paths", "data-paths"], "seeds", diags);
        let test_paths = paths(&["test-paths"], "tests", diags);
        let analysis_paths = paths(&["analysis-paths"], "analyses", diags);
        let macro_paths = paths(&["macro-paths"], "macros", diags);
        let snapshot_paths = paths(&["snapshot-paths"], "snapshots", diags);
        let docs_paths = doc.get("docs-paths").map(|v| string_list(v, &source, "docs-paths", diags));
        let target_path = doc.get("target-path").and_then(YNode::scalar_string).unwrap_or_else(|| "target".into());
        let packages_install_path =
            doc.get("packages-install-path").and_then(YNode::scalar_string).unwrap_or_else(|| "dbt_packages".into());
        let clean_targets =
            doc.get("clean-targets").map(|v| string_list(v, &source, "clean-targets", diags)).unwrap_or_else(|| vec![target_path.clone()]);
        let mut trees = IndexMap::new();
        for section in CONFIG_SECTIONS {
            let key: &'static str = if *section == "data_tests" { "data_tests" } else { section };
            let node = if key == "data_tests" { doc.get("data_tests").or_else(|| doc.get("tests")) } else { doc.get(key) };
            if let Some(node) = node {
                if node.as_map().is_none() && !node.is_null() {
                    diags.push(
                        Diagnostic::error(Code::InvalidValue, format!("`{key}` in dbt_project.yml must be a mapping"))
                            .with_label(Label::new(source.clone(), node.line, node.col, 1, format!("found {}", node.kind()))),
                    );
                    continue;
                }
                trees.insert(key, ConfigTree::from_yaml(node, &source, key, diags));
            }
        }
        let mut dispatch = Vec::new();
        if let Some(list) = doc.get("dispatch") {
            for entry in list.as_seq().unwrap_or(&[]) {
                let ns = entry.get("macro_namespace").and_then(YNode::scalar_string);
                let order = entry.get("search_order").map(|v| string_list(v, &source, "search_order", diags));
                match (ns, order) {
                    (Some(macro_namespace), Some(search_order)) => dispatch.push(DispatchConfig { macro_namespace, search_order }),
                    _ => diags.push(
                        Diagnostic::error(Code::InvalidValue, "each `dispatch` entry needs `macro_namespace` and `search_order`")
                            .with_label(Label::new(source.clone(), entry.line, entry.col, 1, "incomplete dispatch entry")),
                    ),
                }
            }
        }
        let hooks = |key: &str, diags: &mut Vec<Diagnostic>| doc.get(key).map(|v| string_list(v, &source, key, diags)).unwrap_or_default();
        let on_run_start = hooks("on-run-start", diags);
        let on_run_end = hooks("on-run-end", diags);
        Some(ProjectConfig {
            name,
            version: doc.get("version").and_then(YNode::scalar_string),
            profile: doc.get("profile").and_then(YNode::scalar_string),
            model_paths,
            seed_paths,
            test_paths,
            analysis_paths,
            macro_paths,
            snapshot_paths,
            docs_paths,
            target_path,
            packages_install_path,
            clean_targets,
            vars: doc.get("vars").cloned().unwrap_or_else(YNode::null),
            unrendered_trees: trees.clone(),
            trees,
            dispatch,
            on_run_start,
            on_run_end,
            require_dbt_version: doc.get("require-dbt-version").map(YNode::to_json),
            quoting: doc.get("quoting").map(YNode::to_json).unwrap_or(Json::Null),
            source,
        })
    }

    pub fn tree(&self, section: &str) -> Option<&ConfigTree> {
        self.trees.get(section)
    }
}

/// A string or list of strings.
pub fn string_list(node: &YNode, source: &SourceText, key: &str, diags: &mut Vec<Diagnostic>) -> Vec<String> {
    match &node.value {
        YValue::Null => vec![],
        YValue::Seq(items) => items
            .iter()
            .filter_map(|i| {
                let s = i.scalar_string();
                if s.is_none() {
                    diags.push(Diagnostic::error(Code::InvalidValue, format!("`{key}` must be a list of strings")).with_label(Label::new(
                        source.clone(),
                        i.line,
                        i.col,
                        1,
                        format!("found {}", i.kind()),
                    )));
                }
                s
            })
            .collect(),
        _ => {
            match node.scalar_string() {
                Some(s) => vec![s],
                None => {
                    diags.push(
                        Diagnostic::error(Code::InvalidValue, format!("`{key}` must be a string or a list of strings"))
                            .with_label(Label::new(source.clone(), node.line, node.col, 1, format!("found {}", node.kind()))),
                    );
                    vec![]
                }
            }
        }
    }
}

pub fn yaml_error(source: &SourceText, e: &yaml::YamlError) -> Diagnostic {
    Diagnostic::error(Code::YamlSyntax, format!("invalid YAML in {}: {}", source.path, e.message))
        .with_label(Label::new(source.clone(), e.line, e.col, 1, e.message.clone()))
        .with_help("check indentation and quoting; values that start with `{{` must be quoted")
}

/// A package: the root project or one it depends on.
#[derive(Clone, Debug)]
pub struct Package {
    pub name: String,
    pub root: PathBuf,
    /// Relative to the root project ("" for the root project).
    pub rel_root: String,
    pub config: ProjectConfig,
    pub is_root: bool,
}

/// (section, package, folder path) -> the project-level config of nodes there.
pub type ConfigCache = std::collections::HashMap<(&'static str, usize, Vec<String>), std::sync::Arc<config::ConfigMap>>;

/// The loaded project.
#[derive(Debug)]
pub struct Project {
    pub root: PathBuf,
    /// Project-level node configs by (section, package, folder path); filled by `parse`.
    pub config_cache: std::sync::Mutex<ConfigCache>,
    pub packages: Vec<Package>,
    pub files: Vec<ProjectFile>,
    /// `packages.yml` (or `dependencies.yml`) as written, values unrendered.
    pub declarations: Option<packages::Declarations>,
}

impl Project {
    pub fn root_package(&self) -> &Package {
        &self.packages[0]
    }
    pub fn config(&self) -> &ProjectConfig {
        &self.packages[0].config
    }
    pub fn name(&self) -> &str {
        &self.packages[0].name
    }
    pub fn target_dir(&self) -> PathBuf {
        self.root.join(&self.config().target_path)
    }
    pub fn package_by_name(&self, name: &str) -> Option<(usize, &Package)> {
        self.packages.iter().enumerate().find(|(_, p)| p.name == name)
    }

    /// Loads the project in `root`: `dbt_project.yml`, its packages, and every resource file.
    pub fn load(fs: &dyn Fs, root: &Path) -> Result<(Project, Diagnostics), Diagnostics> {
        let mut diags = Vec::new();
        let project_file = root.join("dbt_project.yml");
        let text = match fs.read_to_string(&project_file) {
            Ok(t) => t,
            Err(_) => {
                return Err(Diagnostic::error(Code::NoProject, format!("no dbt_project.yml in {}", root.display()))
                    .with_file("dbt_project.yml")
                    .with_help("run kiln in a dbt project directory, pass --project-dir, or create one with `kiln init NAME`")
                    .into());
            }
        };
        let Some(config) = ProjectConfig::parse(&text, "dbt_project.yml", &mut diags) else {
            return Err(Diagnostics(diags));
        };
        let root_pkg = Package { name: config.name.clone(), root: root.to_path_buf(), rel_root: String::new(), config, is_root: true };
        let mut packages = vec![root_pkg];
        let declarations = read_declarations(fs, root, &mut diags);
        let declared = declarations.as_ref().map_or(&[][..], |d| &d.packages[..]);
        let install_dir = root.join(&packages[0].config.packages_install_path);
        let mut candidate_dirs: Vec<PathBuf> = Vec::new();
        for d in declared {
            let packages::Source::Local { path } = &d.source else { continue };
            let dir = root.join(path);
            if fs.exists(&dir.join("dbt_project.yml")) {
                candidate_dirs.push(dir);
            } else if let Some(decl) = &declarations {
                diags.push(
                    Diagnostic::error(Code::BadLocalPackage, format!("local package `{path}` has no dbt_project.yml"))
                        .with_label(Label::new(decl.file.clone(), d.line, 1, 1, format!("{} does not hold a dbt project", dir.display())))
                        .with_help("point `local:` at a directory that contains a dbt_project.yml"),
                );
            }
        }
        // Installed packages (by `kiln deps` or vendored by hand).
        if fs.is_dir(&install_dir) {
            let mut dirs: Vec<PathBuf> = fs
                .walk(&install_dir)
                .into_iter()
                .filter(|p| p.file_name().is_some_and(|n| n == "dbt_project.yml"))
                .filter(|p| p.parent().and_then(Path::parent) == Some(install_dir.as_path()))
                .filter_map(|p| p.parent().map(Path::to_path_buf))
                .collect();
            dirs.sort();
            candidate_dirs.extend(dirs);
        }
        for dir in candidate_dirs {
            let pf = dir.join("dbt_project.yml");
            let rel = rel_path(root, &dir);
            let Ok(text) = fs.read_to_string(&pf) else {
                continue;
            };
            let display = format!("{rel}/dbt_project.yml");
            let Some(config) = ProjectConfig::parse(&text, &display, &mut diags) else {
                continue;
            };
            if packages.iter().any(|p| p.name == config.name) {
                continue; // installed copy of a local package, or the same package twice
            }
            packages.push(Package { name: config.name.clone(), root: dir, rel_root: rel, config, is_root: false });
        }
        if let Some(decl) = &declarations {
            let lock = fs
                .read_to_string(&root.join(packages::LOCK_FILE))
                .ok()
                .and_then(|t| packages::Lock::parse(&SourceText::new(packages::LOCK_FILE, t.as_str())).ok());
            check_installed(decl, lock.as_ref(), &packages, &mut diags);
        }
        let files = discover_files(fs, &packages, &mut diags);
        Ok((Project { root: root.to_path_buf(), config_cache: Default::default(), packages, files, declarations }, Diagnostics(diags)))
    }
}

fn read_declarations(fs: &dyn Fs, root: &Path, diags: &mut Vec<Diagnostic>) -> Option<packages::Declarations> {
    ["packages.yml", "dependencies.yml"].into_iter().find_map(|name| {
        let text = fs.read_to_string(&root.join(name)).ok()?;
        Some(packages::parse_declarations(SourceText::new(name, text.as_str()), None, diags))
    })
}

/// Every declared package that is not local must be installed: by its name in the lock file, by
/// its `name:`, or by the last segment of its URL.
fn check_installed(decl: &packages::Declarations, lock: Option<&packages::Lock>, installed: &[Package], diags: &mut Vec<Diagnostic>) {
    use packages::{Pin, Source};
    for d in &decl.packages {
        let locked = lock.and_then(|l| {
            l.packages.iter().find(|p| match (&p.pin, &d.source) {
                (Pin::Git { url, subdirectory, .. }, Source::Git { .. }) => {
                    d.raw.get("git").and_then(YNode::scalar_string).as_ref() == Some(url)
                        && d.raw.get("subdirectory").and_then(YNode::scalar_string) == *subdirectory
                }
                (Pin::Hub { package, .. }, Source::Hub { package: p, .. }) => package == p,
                (Pin::Tarball { url }, Source::Tarball { url: u }) => url == u,
                _ => false,
            })
        });
        let hint = d.source.name_hint();
        let is_installed = |name: &str| installed.iter().any(|p| p.name == name);
        let found = match (locked, &d.name) {
            (Some(l), _) => is_installed(&l.name),
            (None, Some(name)) => is_installed(name),
            (None, None) => installed.iter().any(|p| p.name == hint || p.name.replace('_', "-") == hint.replace('_', "-")),
        };
        if found || matches!(d.source, Source::Local { .. }) {
            continue;
        }
        let label = Label::new(decl.file.clone(), d.line, 1, 1, "not installed");
        diags.push(match &d.source {
            Source::Hub { package, version } => Diagnostic::error(
                Code::RemotePackage,
                format!("hub package `{package}` ({}) is not installed, and kiln cannot reach the dbt hub", version.join(", ")),
            )
            .with_label(label)
            .with_help(hub_help(package, version)),
            source => Diagnostic::error(Code::PackageNotInstalled, format!("{} is not installed", source.describe()))
                .with_label(label)
                .with_help("run `kiln deps` to install it"),
        });
    }
}

/// How to use a hub package without the hub.
pub fn hub_help(package: &str, version: &[String]) -> String {
    let name = package.rsplit('/').next().unwrap_or(package);
    format!(
        "declare it from its git repository at a tag matching `{}`: `- git: <repository URL>` with `revision: <tag>`, then run `kiln deps`; or vendor a copy: put the package in `vendor/{name}` and declare `- local: vendor/{name}`",
        version.join(", ")
    )
}

pub fn rel_path(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().replace('\\', "/")
}

fn discover_files(fs: &dyn Fs, packages: &[Package], diags: &mut Vec<Diagnostic>) -> Vec<ProjectFile> {
    let root = &packages[0].root;
    let mut found: Vec<(FileKind, usize, PathBuf, String)> = Vec::new();
    for (pi, pkg) in packages.iter().enumerate() {
        let c = &pkg.config;
        let groups: [(&[String], &str); 6] = [
            (&c.model_paths, "model"),
            (&c.analysis_paths, "analysis"),
            (&c.snapshot_paths, "snapshot"),
            (&c.seed_paths, "seed"),
            (&c.macro_paths, "macro"),
            (&c.test_paths, "test"),
        ];
        let mut seen = std::collections::HashSet::new();
        for (dirs, group) in groups {
            for dir in dirs {
                let base = pkg.root.join(dir);
                for file in fs.walk(&base) {
                    if !seen.insert(file.clone()) {
                        continue;
                    }
                    let rel_in_dir = rel_path(&base, &file);
                    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
                    let kind = match (group, ext.as_str()) {
                        (_, "yml" | "yaml") => FileKind::Properties,
                        (_, "md") => FileKind::Docs,
                        ("model", "sql") => FileKind::Model,
                        ("analysis", "sql") => FileKind::Analysis,
                        ("snapshot", "sql") => FileKind::Snapshot,
                        ("seed", "csv") => FileKind::Seed,
                        ("macro", "sql") => FileKind::Macro,
                        ("test", "sql") => FileKind::Test,
                        ("model", "py") => {
                            diags.push(
                                Diagnostic::warning(Code::Unsupported, "Python models are not supported; skipped")
                                    .with_file(rel_path(root, &file)),
                            );
                            continue;
                        }
                        _ => continue,
                    };
                    found.push((kind, pi, file, rel_in_dir));
                }
            }
        }
        if let Some(docs) = &c.docs_paths {
            for dir in docs {
                for file in fs.walk(&pkg.root.join(dir)) {
                    if file.extension().is_some_and(|e| e == "md") && seen.insert(file.clone()) {
                        let rel = rel_path(&pkg.root.join(dir), &file);
                        found.push((FileKind::Docs, pi, file, rel));
                    }
                }
            }
        }
    }
    let read: Vec<Result<ProjectFile, Diagnostic>> = found
        .into_par_iter()
        .map(|(kind, pi, abs, path)| {
            let pkg = &packages[pi];
            let original_path = rel_path(&pkg.root, &abs);
            let display_path = rel_path(root, &abs);
            let unreadable =
                |e: std::io::Error| Diagnostic::error(Code::Io, format!("cannot read {display_path}: {e}")).with_file(display_path.clone());
            let (text, seed_sha256): (Arc<str>, _) = if kind == FileKind::Seed {
                // Hashed here, through `fs` (cached between reloads), not read again at parse.
                let small = fs.size(&abs).map_err(unreadable)? <= MAXIMUM_SEED_SIZE;
                let hash =
                    if small { Some(crate::adapter::names::sha256_hex(fs.read_to_string(&abs).map_err(unreadable)?.trim())) } else { None };
                (Arc::from(""), hash)
            } else {
                (Arc::from(fs.read_to_string(&abs).map_err(unreadable)?), None)
            };
            Ok(ProjectFile { kind, package: pi, original_path, path, display_path, abs_path: abs, text, seed_sha256 })
        })
        .collect();
    let mut files = Vec::with_capacity(read.len());
    for r in read {
        match r {
            Ok(f) => files.push(f),
            Err(d) => diags.push(d),
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_in_memory_project() {
        let root = Path::new("/p");
        let fs = fs::MemFs::new(
            root,
            &[
                ("dbt_project.yml", "name: shop\nprofile: shop\nmodels:\n  shop:\n    +materialized: table\n"),
                ("models/staging/stg_a.sql", "select 1 as id"),
                ("models/schema.yml", "version: 2\n"),
                ("macros/m.sql", "{% macro m() %}1{% endmacro %}"),
                ("seeds/raw.csv", "id\n1\n"),
            ],
        );
        let (project, diags) = Project::load(&fs, root).unwrap();
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(project.name(), "shop");
        let kinds: Vec<(FileKind, &str)> = project.files.iter().map(|f| (f.kind, f.original_path.as_str())).collect();
        assert!(kinds.contains(&(FileKind::Model, "models/staging/stg_a.sql")));
        assert!(kinds.contains(&(FileKind::Seed, "seeds/raw.csv")));
        let model = project.files.iter().find(|f| f.kind == FileKind::Model).unwrap();
        assert_eq!(model.folders(), vec!["staging"]);
        assert_eq!(model.stem(), "stg_a");
    }

    #[test]
    fn unknown_top_level_key() {
        let mut diags = vec![];
        ProjectConfig::parse("name: p\nmodel_paths: [models]\n", "dbt_project.yml", &mut diags);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, Code::UnknownKey);
        assert!(diags[0].help.as_deref().unwrap_or("").contains("model-paths"));
    }
}
