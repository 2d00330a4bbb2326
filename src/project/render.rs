//! Jinja in YAML values, rendered when a project is loaded, as dbt renders them: every string
//! value of `dbt_project.yml`'s config trees and of properties files, with `target`, `var` and
//! `env_var`, except the keys dbt renders later (hooks, descriptions, tests, `vars`). A rendered
//! value becomes a boolean, a number or null when it reads as one (dbt's native rendering), so
//! `+enabled: "{{ var('load', false) }}"` is a boolean.
//!
//! Pure: the caller brings the renderer.

use super::config::ConfigTree;
use super::yaml::{YNode, YValue};
use serde_json::Value as Json;

/// Renders one string that contains Jinja; the error says what went wrong.
pub type Render<'a> = &'a (dyn Fn(&str) -> Result<String, String> + Sync);

/// A value that failed to render: where (a key path, and the line in properties files) and why.
#[derive(Debug)]
pub struct RenderError {
    pub path: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

fn has_jinja(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// dbt's native rendering: text that reads as a boolean, null or number becomes one.
pub fn native(text: String) -> Json {
    match text.trim() {
        "True" | "true" => Json::Bool(true),
        "False" | "false" => Json::Bool(false),
        "None" | "none" => Json::Null,
        t => match (t.parse::<i64>(), t.parse::<f64>()) {
            (Ok(i), _) => Json::from(i),
            (_, Ok(f)) if f.is_finite() && t.chars().any(|c| c.is_ascii_digit()) => Json::from(f),
            _ => Json::String(text),
        },
    }
}

/// Keys whose values dbt renders later (or never) in `dbt_project.yml` config trees.
fn late_in_project(key: &str) -> bool {
    matches!(key, "pre-hook" | "post-hook" | "pre_hook" | "post_hook")
}

/// Renders the string values of a `dbt_project.yml` config tree (`models:`, `seeds:`, ...).
pub fn render_tree(tree: &mut ConfigTree, path: &str, render: Render, errors: &mut Vec<RenderError>) {
    for (key, value) in tree.configs.iter_mut() {
        if !late_in_project(key) {
            render_json(value, &format!("{path}.+{key}"), render, errors);
        }
    }
    for (name, child) in tree.children.iter_mut() {
        render_tree(child, &format!("{path}.{name}"), render, errors);
    }
}

fn render_json(value: &mut Json, path: &str, render: Render, errors: &mut Vec<RenderError>) {
    match value {
        Json::String(s) if has_jinja(s) => match render(s) {
            Ok(text) => *value = native(text),
            Err(message) => errors.push(RenderError { path: path.to_string(), line: 0, col: 0, message }),
        },
        Json::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                render_json(item, &format!("{path}[{i}]"), render, errors);
            }
        }
        Json::Object(map) => {
            for (k, v) in map.iter_mut() {
                render_json(v, &format!("{path}.{k}"), render, errors);
            }
        }
        _ => {}
    }
}

/// Renders the string values of a properties file, leaving what dbt renders later: descriptions
/// (`doc()`), tests and their arguments, hooks, macro arguments.
pub fn render_properties(doc: &mut YNode, render: Render, errors: &mut Vec<RenderError>) {
    let YValue::Map(sections) = &mut doc.value else { return };
    for (key, entries) in sections.iter_mut() {
        let Some(section) = key.as_str().map(str::to_string) else { continue };
        if section == "version" {
            continue;
        }
        let YValue::Seq(entries) = &mut entries.value else { continue };
        for entry in entries.iter_mut() {
            let mut path = vec![];
            render_node(entry, &section, &mut path, render, errors);
        }
    }
}

fn render_node(node: &mut YNode, section: &str, path: &mut Vec<String>, render: Render, errors: &mut Vec<RenderError>) {
    if !should_render(section, path) {
        return;
    }
    match &mut node.value {
        YValue::Str(s) if has_jinja(s) => match render(s) {
            Ok(text) => node.value = YNode::from_json(&native(text)).value,
            Err(message) => {
                errors.push(RenderError { path: format!("{section}.{}", path.join(".")), line: node.line, col: node.col, message })
            }
        },
        YValue::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                render_node(item, section, path, render, errors);
                path.pop();
            }
        }
        YValue::Map(pairs) => {
            for (k, v) in pairs.iter_mut() {
                path.push(k.scalar_string().unwrap_or_default());
                render_node(v, section, path, render, errors);
                path.pop();
            }
        }
        _ => {}
    }
}

/// dbt's `SchemaYamlRenderer.should_render_keypath`, for a key path inside one entry of
/// `section`.
fn should_render(section: &str, path: &[String]) -> bool {
    let Some(first) = path.first() else { return true };
    match section {
        "sources" => {
            !(first == "description"
                || first == "loaded_at_query"
                || path.len() >= 2 && first == "config" && path[1] == "loaded_at_query"
                || first == "tables" && path.len() > 2 && later(&path[2..]))
        }
        "macros" => !(first == "arguments" || later(&path[1..])),
        _ => !later(path),
    }
}

/// dbt's `_is_norender_key`: tests, descriptions and hooks are rendered later.
fn later(path: &[String]) -> bool {
    let is = |i: usize, keys: &[&str]| path.get(i).is_some_and(|k| keys.contains(&k.as_str()));
    const LATE: &[&str] = &["tests", "data_tests", "description", "loaded_at_query"];
    is(0, LATE)
        || path.len() == 2 && is(1, LATE)
        || path.len() >= 2 && path[0] == "config" && is(1, &["pre_hook", "post_hook", "pre-hook", "post-hook", "loaded_at_query"])
        || path.len() == 5 && path[4] == "description"
        || path.len() >= 3 && path[0] == "columns" && is(2, LATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(s: &str) -> Result<String, String> {
        if s.contains("boom") {
            return Err("boom".into());
        }
        Ok(s.replace("{{ target.schema }}", "main").replace("{{ var('flag', false) }}", "false").replace("{{ 3 }}", "3"))
    }

    fn rendered(yaml: &str) -> (Json, Vec<RenderError>) {
        let mut doc = super::super::yaml::parse(yaml).unwrap();
        let mut errors = vec![];
        render_properties(&mut doc, &fake, &mut errors);
        (doc.to_json(), errors)
    }

    #[test]
    fn properties_render_values_but_not_descriptions_tests_or_hooks() {
        let (doc, errors) = rendered(
            "version: 2\nsources:\n  - name: raw\n    schema: \"{{ target.schema }}_raw\"\n    description: \"{{ target.schema }}\"\n    meta:\n      external_location: \"data/{{ target.schema }}.csv\"\n    tables:\n      - name: t\n        description: \"{{ target.schema }}\"\n        identifier: \"{{ target.schema }}_t\"\nmodels:\n  - name: m\n    description: \"{{ target.schema }}\"\n    config:\n      enabled: \"{{ var('flag', false) }}\"\n      post_hook: \"{{ target.schema }}\"\n      limit: \"{{ 3 }}\"\n    columns:\n      - name: c\n        description: \"{{ target.schema }}\"\n        data_tests:\n          - accepted_values:\n              values: [\"{{ target.schema }}\"]\n",
        );
        assert!(errors.is_empty());
        let src = &doc["sources"][0];
        assert_eq!(src["schema"], "main_raw");
        assert_eq!(src["description"], "{{ target.schema }}");
        assert_eq!(src["meta"]["external_location"], "data/main.csv");
        assert_eq!(src["tables"][0]["description"], "{{ target.schema }}");
        assert_eq!(src["tables"][0]["identifier"], "main_t");
        let m = &doc["models"][0];
        assert_eq!(m["config"]["enabled"], false, "native rendering");
        assert_eq!(m["config"]["limit"], 3);
        assert_eq!(m["config"]["post_hook"], "{{ target.schema }}");
        assert_eq!(m["description"], "{{ target.schema }}");
        assert_eq!(m["columns"][0]["description"], "{{ target.schema }}");
        assert_eq!(m["columns"][0]["data_tests"][0]["accepted_values"]["values"][0], "{{ target.schema }}");
    }

    #[test]
    fn a_value_that_fails_to_render_is_reported_at_its_line() {
        let (_, errors) = rendered("version: 2\nmodels:\n  - name: m\n    config:\n      alias: \"{{ boom }}\"\n");
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].line, errors[0].path.as_str(), errors[0].message.as_str()), (5, "models.config.alias", "boom"));
    }

    #[test]
    fn project_trees_render_configs_but_not_hooks() {
        let mut tree = ConfigTree::default();
        tree.configs.insert("enabled".into(), Json::from("{{ var('flag', false) }}"));
        tree.configs.insert("post-hook".into(), Json::from(vec![Json::from("{{ target.schema }}")]));
        let mut child = ConfigTree::default();
        child.configs.insert("schema".into(), Json::from("{{ target.schema }}_x"));
        tree.children.insert("staging".into(), child);
        let mut errors = vec![];
        render_tree(&mut tree, "models", &fake, &mut errors);
        assert!(errors.is_empty());
        assert_eq!(tree.configs["enabled"], false);
        assert_eq!(tree.configs["post-hook"][0], "{{ target.schema }}");
        assert_eq!(tree.children["staging"].configs["schema"], "main_x");
    }
}
