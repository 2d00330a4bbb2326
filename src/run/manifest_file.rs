//! Reading a `manifest.json` back: kiln's own, or one dbt-core wrote (schema v12 and nearby;
//! unknown keys are kept, missing ones default). The typed view holds what comparing two
//! projects needs (`state:modified`, `--defer`): every node's identity, checksum, config,
//! relation and dependencies. The whole document is kept as read, so writing it back gives the
//! same bytes.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value as Json;

/// A manifest read from disk.
#[derive(Debug)]
pub struct ManifestFile {
    pub metadata: Metadata,
    /// Models, seeds, snapshots, tests, analyses and operations, by unique id.
    pub nodes: IndexMap<String, NodeView>,
    pub sources: IndexMap<String, NodeView>,
    pub macros: IndexMap<String, MacroView>,
    pub parent_map: IndexMap<String, Vec<String>>,
    /// The document as read.
    raw: Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Metadata {
    pub dbt_schema_version: String,
    pub dbt_version: String,
    pub project_name: Option<String>,
    pub adapter_type: Option<String>,
    pub invocation_id: Option<String>,
    pub generated_at: Option<String>,
}

/// What kiln reads of a node or source.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct NodeView {
    pub unique_id: String,
    pub resource_type: String,
    pub name: String,
    pub package_name: String,
    pub original_file_path: String,
    pub checksum: Checksum,
    pub config: IndexMap<String, Json>,
    /// The configs as written (what `state:modified.configs` compares).
    pub unrendered_config: IndexMap<String, Json>,
    pub description: String,
    pub columns: IndexMap<String, Json>,
    pub contract: Json,
    pub database: Option<String>,
    pub schema: Option<String>,
    pub alias: Option<String>,
    pub identifier: Option<String>,
    pub relation_name: Option<String>,
    pub depends_on: DependsOn,
    pub raw_code: Option<String>,
    pub fqn: Vec<String>,
}

/// What kiln reads of a macro.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct MacroView {
    pub macro_sql: String,
    pub depends_on: DependsOn,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Checksum {
    pub name: String,
    pub checksum: String,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DependsOn {
    pub nodes: Vec<String>,
    pub macros: Vec<String>,
}

/// Why a manifest could not be read.
#[derive(Debug)]
pub struct ReadError(pub String);

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ManifestFile {
    /// Reads `text`; `what` names it in errors (its path).
    pub fn parse(text: &str, what: &str) -> Result<ManifestFile, ReadError> {
        let raw: Json = serde_json::from_str(text).map_err(|e| ReadError(format!("{what} is not JSON: {e}")))?;
        let section = |key: &str| raw.get(key).cloned().unwrap_or(Json::Object(Default::default()));
        let metadata: Metadata =
            serde_json::from_value(section("metadata")).map_err(|e| ReadError(format!("{what}: `metadata` cannot be read: {e}")))?;
        if !metadata.dbt_schema_version.contains("/manifest/") {
            return Err(ReadError(format!(
                "{what} is not a dbt manifest (its metadata.dbt_schema_version is `{}`)",
                metadata.dbt_schema_version
            )));
        }
        let entries = |key: &str| -> Result<IndexMap<String, NodeView>, ReadError> {
            serde_json::from_value(section(key)).map_err(|e| ReadError(format!("{what}: `{key}` cannot be read: {e}")))
        };
        let nodes = entries("nodes")?;
        let sources = entries("sources")?;
        let macros = serde_json::from_value(section("macros")).map_err(|e| ReadError(format!("{what}: `macros` cannot be read: {e}")))?;
        let parent_map =
            serde_json::from_value(section("parent_map")).map_err(|e| ReadError(format!("{what}: `parent_map` cannot be read: {e}")))?;
        Ok(ManifestFile { metadata, nodes, sources, macros, parent_map, raw })
    }

    pub fn read(path: &std::path::Path) -> Result<ManifestFile, ReadError> {
        let text = std::fs::read_to_string(path).map_err(|e| ReadError(format!("cannot read {}: {e}", path.display())))?;
        ManifestFile::parse(&text, &path.display().to_string())
    }

    /// The relation the run recorded for node `id` (its database, schema and alias).
    pub fn relation(&self, id: &str) -> Option<crate::engine::RelationName> {
        let then = self.nodes.get(id)?;
        let name = then.alias.clone().or_else(|| then.identifier.clone()).unwrap_or_else(|| then.name.clone());
        Some(crate::engine::RelationName { database: then.database.clone()?, schema: then.schema.clone()?, name })
    }

    /// The manifest as JSON, as it was read.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.raw).unwrap_or_default()
    }
}
