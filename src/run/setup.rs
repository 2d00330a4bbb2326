//! What an engine needs from the project before it runs anything, computed from the manifest:
//! the object stores of every bucket a source or an `external` model names, and the relations
//! that are files (dbt-duckdb's `external_location` sources, `external` models).

use crate::diagnostics::Label;
use crate::engine::{External, RelationName, Setup};
use crate::parse::{Manifest, ResourceType, SourceNode};
use crate::project::Project;
use serde_json::Value as Json;

/// The engine setup of `manifest`: `env` is the invocation's environment (object-store
/// credentials), `writer` the warehouse's writer lock when the command changes it.
pub fn engine_setup<'a>(project: &'a Project, manifest: &Manifest, env: &'a std::collections::HashMap<String, String>) -> Setup<'a> {
    let external_models = manifest.nodes.values().filter(|n| n.resource_type == ResourceType::Model && n.materialized() == "external");
    let mut stores: Vec<String> = manifest
        .sources
        .values()
        .filter_map(source_location)
        .map(str::to_string)
        .chain(external_models.clone().filter_map(|n| n.config.get("location").and_then(Json::as_str).map(str::to_string)))
        .filter(|l| l.contains("://") && !l.starts_with("file://"))
        .collect();
    stores.sort();
    stores.dedup();
    let sources = manifest.sources.values().filter_map(|src| {
        let location = source_location(src)?.replace("{name}", &src.name).replace("{identifier}", &src.identifier);
        let location = if location.contains("://") || location.starts_with('/') {
            location
        } else {
            project.root.join(&location).to_string_lossy().into_owned()
        };
        let format = src.config.get("format").and_then(Json::as_str).or_else(|| src.meta.get("format").and_then(Json::as_str));
        Some(External {
            relation: RelationName { database: src.database.clone(), schema: src.schema.clone(), name: src.identifier.clone() },
            location,
            format: format.map(str::to_string),
            declared: Some((
                format!("source `{}.{}`", src.source_name, src.name),
                Label::new(project.files[src.file].source(), src.line, 1, 1, "declared here"),
            )),
        })
    });
    let models = external_models.map(|node| {
        let (location, format) = node.external_target(project);
        External {
            relation: RelationName { database: node.database.clone(), schema: node.schema.clone(), name: node.alias.clone() },
            location,
            format: Some(format),
            declared: None,
        }
    });
    Setup { project_root: &project.root, env, writer: None, stores, externals: sources.chain(models).collect() }
}

/// Where a source's file is: `external_location` in its config or meta, or `external.location`.
fn source_location(src: &SourceNode) -> Option<&str> {
    src.config
        .get("external_location")
        .and_then(Json::as_str)
        .or_else(|| src.meta.get("external_location").and_then(Json::as_str))
        .or_else(|| src.external.get("location").and_then(Json::as_str))
}
