//! YAML with positions. Every node keeps the line/column it came from, so a bad key in
//! `schema.yml` is reported at its line. Scalars resolve as PyYAML does (YAML 1.1: `yes`/`no`
//! are booleans), because that is what dbt projects are written against. Anchors, aliases and
//! `<<` merge keys are supported.

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde_json::Value as Json;
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub enum YValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<YNode>),
    Map(Vec<(YNode, YNode)>),
}

/// A YAML value with its 1-based position.
#[derive(Clone, Debug, PartialEq)]
pub struct YNode {
    pub value: YValue,
    pub line: usize,
    pub col: usize,
}

#[derive(Clone, Debug)]
pub struct YamlError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl YNode {
    pub fn null() -> YNode {
        YNode { value: YValue::Null, line: 1, col: 1 }
    }
    pub fn is_null(&self) -> bool {
        matches!(self.value, YValue::Null)
    }
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            YValue::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The scalar as text (numbers and booleans too), as dbt does when it expects a name.
    pub fn scalar_string(&self) -> Option<String> {
        match &self.value {
            YValue::Str(s) => Some(s.clone()),
            YValue::Int(i) => Some(i.to_string()),
            YValue::Float(f) => Some(f.to_string()),
            YValue::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match &self.value {
            YValue::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_seq(&self) -> Option<&[YNode]> {
        match &self.value {
            YValue::Seq(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_map(&self) -> Option<&[(YNode, YNode)]> {
        match &self.value {
            YValue::Map(m) => Some(m),
            _ => None,
        }
    }
    /// Key/value pairs of a mapping, keys as text.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &YNode, &YNode)> {
        self.as_map().unwrap_or(&[]).iter().filter_map(|(k, v)| k.as_str().map(|ks| (ks, k, v)))
    }
    pub fn get(&self, key: &str) -> Option<&YNode> {
        self.as_map()?.iter().rev().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }
    /// The node of the key itself (for positions).
    pub fn key_node(&self, key: &str) -> Option<&YNode> {
        self.as_map()?.iter().rev().find(|(k, _)| k.as_str() == Some(key)).map(|(k, _)| k)
    }
    pub fn kind(&self) -> &'static str {
        match self.value {
            YValue::Null => "null",
            YValue::Bool(_) => "a boolean",
            YValue::Int(_) => "an integer",
            YValue::Float(_) => "a number",
            YValue::Str(_) => "a string",
            YValue::Seq(_) => "a list",
            YValue::Map(_) => "a mapping",
        }
    }

    pub fn to_json(&self) -> Json {
        match &self.value {
            YValue::Null => Json::Null,
            YValue::Bool(b) => Json::Bool(*b),
            YValue::Int(i) => Json::from(*i),
            YValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
            YValue::Str(s) => Json::String(s.clone()),
            YValue::Seq(items) => Json::Array(items.iter().map(YNode::to_json).collect()),
            YValue::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    let key = k.scalar_string().unwrap_or_else(|| k.to_json().to_string());
                    map.insert(key, v.to_json());
                }
                Json::Object(map)
            }
        }
    }

    /// Builds a positionless node from JSON (used for `--vars`).
    pub fn from_json(json: &Json) -> YNode {
        let value = match json {
            Json::Null => YValue::Null,
            Json::Bool(b) => YValue::Bool(*b),
            Json::Number(n) => n.as_i64().map_or_else(|| YValue::Float(n.as_f64().unwrap_or(0.0)), YValue::Int),
            Json::String(s) => YValue::Str(s.clone()),
            Json::Array(a) => YValue::Seq(a.iter().map(YNode::from_json).collect()),
            Json::Object(o) => YValue::Map(
                o.iter().map(|(k, v)| (YNode { value: YValue::Str(k.clone()), line: 0, col: 0 }, YNode::from_json(v))).collect(),
            ),
        };
        YNode { value, line: 0, col: 0 }
    }
}

/// Parses the first document of `text`. An empty file is `Null`.
pub fn parse(text: &str) -> Result<YNode, YamlError> {
    let mut builder = Builder { anchors: HashMap::new(), stack: Vec::new(), root: None };
    // Nodes aliases have copied so far: a "billion laughs" file of a few hundred bytes would
    // otherwise expand to gigabytes.
    let mut expanded: usize = 0;
    let parser = Parser::new_from_str(text);
    for event in parser {
        let (event, span) =
            event.map_err(|e| YamlError { line: e.marker().line(), col: e.marker().col() + 1, message: e.info().to_string() })?;
        let (line, col) = (span.start.line(), span.start.col() + 1);
        match event {
            Event::DocumentEnd if builder.root.is_some() => {
                break;
            }
            Event::Alias(id) => {
                let (node, size) = builder.anchors.get(&id).cloned().ok_or_else(|| YamlError {
                    line,
                    col,
                    message: "alias to an unknown anchor".to_string(),
                })?;
                expanded = expanded.saturating_add(size);
                if expanded > MAX_ALIAS_EXPANSION {
                    return Err(YamlError {
                        line,
                        col,
                        message: format!(
                            "aliases expand to more than {MAX_ALIAS_EXPANSION} values (a YAML alias bomb?); write the values out"
                        ),
                    });
                }
                builder.push(node, 0)?;
            }
            Event::Scalar(value, style, anchor, _tag) => {
                let value = if style == ScalarStyle::Plain { resolve_plain(&value) } else { YValue::Str(value.into_owned()) };
                builder.push(YNode { value, line, col }, anchor)?;
            }
            Event::SequenceStart(anchor, _) => builder.stack.push(Frame::Seq(YNode { value: YValue::Seq(Vec::new()), line, col }, anchor)),
            Event::MappingStart(anchor, _) => {
                builder.stack.push(Frame::Map(YNode { value: YValue::Map(Vec::new()), line, col }, anchor, None, 0));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match builder.stack.pop() {
                    Some(Frame::Seq(n, a)) | Some(Frame::Map(n, a, _, _)) => (n, a),
                    None => continue,
                };
                builder.push(node, anchor)?;
            }
            _ => {}
        }
    }
    Ok(builder.root.unwrap_or_else(YNode::null))
}

enum Frame {
    Seq(YNode, usize),
    /// A map, its anchor, the key waiting for its value, and how many of its entries came from
    /// `<<` merges (those come first; a key of the map itself replaces a merged one).
    Map(YNode, usize, Option<YNode>, usize),
}

/// How many values aliases may copy in one file.
const MAX_ALIAS_EXPANSION: usize = 1_000_000;

/// The number of values in `node` (itself included).
fn size(node: &YNode) -> usize {
    1 + match &node.value {
        YValue::Seq(items) => items.iter().map(size).sum(),
        YValue::Map(pairs) => pairs.iter().map(|(k, v)| size(k) + size(v)).sum(),
        _ => 0,
    }
}

struct Builder {
    /// Anchored values, with their size.
    anchors: HashMap<usize, (YNode, usize)>,
    stack: Vec<Frame>,
    root: Option<YNode>,
}

impl Builder {
    fn push(&mut self, node: YNode, anchor: usize) -> Result<(), YamlError> {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), size(&node)));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(seq, _)) => {
                if let YValue::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map(map, _, pending, merged)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    let YValue::Map(entries) = &mut map.value else { unreachable!("map frame holds a map") };
                    if key.as_str() == Some("<<") {
                        merge_into(entries, &node, merged);
                        return Ok(());
                    }
                    match entries.iter().position(|(k, _)| k.value == key.value) {
                        Some(i) if i < *merged => {
                            entries.remove(i);
                            *merged -= 1;
                            entries.push((key, node));
                        }
                        Some(i) => {
                            return Err(YamlError {
                                line: key.line,
                                col: key.col,
                                message: format!(
                                    "duplicate key `{}` (first at line {}); YAML keeps only one, so this one would silently win",
                                    key.scalar_string().unwrap_or_default(),
                                    entries[i].0.line
                                ),
                            });
                        }
                        None => entries.push((key, node)),
                    }
                }
            },
        }
        Ok(())
    }
}

/// `<<: *base` (or a list of them): keys of the merged maps that the map does not set itself.
/// They go before the map's own keys; `count` grows by how many were added.
fn merge_into(entries: &mut Vec<(YNode, YNode)>, merged: &YNode, count: &mut usize) {
    let sources: Vec<&YNode> = match &merged.value {
        YValue::Seq(items) => items.iter().collect(),
        _ => vec![merged],
    };
    for source in sources {
        if let YValue::Map(src) = &source.value {
            for (k, v) in src {
                if !entries.iter().any(|(ek, _)| ek.value == k.value) {
                    entries.insert(*count, (k.clone(), v.clone()));
                    *count += 1;
                }
            }
        }
    }
}

fn resolve_plain(s: &str) -> YValue {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return YValue::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return YValue::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return YValue::Bool(false);
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" => return YValue::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return YValue::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return YValue::Float(f64::NAN),
        _ => {}
    }
    let bytes = s.as_bytes();
    let numeric_start = bytes[0].is_ascii_digit() || (matches!(bytes[0], b'-' | b'+' | b'.') && bytes.len() > 1);
    if numeric_start {
        let clean = s.replace('_', "");
        if let Some(hex) = clean.strip_prefix("0x")
            && let Ok(i) = i64::from_str_radix(hex, 16)
        {
            return YValue::Int(i);
        }
        if let Some(oct) = clean.strip_prefix("0o")
            && let Ok(i) = i64::from_str_radix(oct, 8)
        {
            return YValue::Int(i);
        }
        if clean.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'+')
            && let Ok(i) = clean.parse::<i64>()
        {
            return YValue::Int(i);
        }
        if clean.bytes().any(|b| b == b'.' || b == b'e' || b == b'E')
            && clean.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
            && let Ok(f) = clean.parse::<f64>()
        {
            return YValue::Float(f);
        }
    }
    YValue::Str(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_scalars() {
        let doc = parse("a: 1\nb:\n  - yes\n  - 'yes'\n  - 1.5\nc: ~\n").unwrap();
        assert_eq!(doc.get("a").unwrap().value, YValue::Int(1));
        let b = doc.get("b").unwrap().as_seq().unwrap();
        assert_eq!(b[0].value, YValue::Bool(true));
        assert_eq!(b[1].value, YValue::Str("yes".into()));
        assert_eq!(b[2].value, YValue::Float(1.5));
        assert_eq!((b[2].line, b[2].col), (5, 5));
        assert!(doc.get("c").unwrap().is_null());
        assert_eq!(doc.key_node("b").unwrap().line, 2);
    }

    #[test]
    fn anchors_and_merge_keys() {
        let doc = parse("base: &b\n  x: 1\n  y: 2\nchild:\n  <<: *b\n  y: 3\n").unwrap();
        let child = doc.get("child").unwrap();
        assert_eq!(child.get("x").unwrap().value, YValue::Int(1));
        assert_eq!(child.get("y").unwrap().value, YValue::Int(3));
        assert_eq!(child.as_map().unwrap().len(), 2, "the map's own `y` replaces the merged one");
        // The own key may also come first.
        let doc = parse("base: &b\n  y: 2\nchild:\n  y: 3\n  <<: *b\n").unwrap();
        assert_eq!(doc.get("child").unwrap().get("y").unwrap().value, YValue::Int(3));
    }

    #[test]
    fn duplicate_keys_are_errors_at_the_second() {
        let err = parse("name: a\nmodels:\n  x: 1\nname: b\n").unwrap_err();
        assert_eq!(err.line, 4);
        assert!(err.message.contains("duplicate key `name` (first at line 1)"), "{}", err.message);
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.line >= 1, "{err:?}");
    }

    #[test]
    fn strings_that_look_numeric() {
        assert_eq!(resolve_plain("1.2.3"), YValue::Str("1.2.3".into()));
        assert_eq!(resolve_plain("-"), YValue::Str("-".into()));
        assert_eq!(resolve_plain("0x1F"), YValue::Int(31));
        assert_eq!(resolve_plain("2024-01-01"), YValue::Str("2024-01-01".into()));
    }
}
