//! Finds the top-level blocks of a Jinja file: `{% macro %}`, `{% test %}`, `{% materialization %}`,
//! `{% docs %}` and `{% snapshot %}`. Each macro becomes its own template, so that every macro call
//! goes through kiln (which is what makes dbt's `return()` and package namespaces work).

/// A top-level block.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub kind: BlockKind,
    pub name: String,
    /// Argument names (macros and tests).
    pub args: Vec<String>,
    /// Byte range of the whole block, from `{%` of the opening tag to `%}` of the closing one.
    pub start: usize,
    pub end: usize,
    /// Byte range between the tags.
    pub body_start: usize,
    pub body_end: usize,
    /// 1-based line of the opening tag.
    pub line: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    Macro,
    Test,
    Materialization,
    Docs,
    Snapshot,
}

impl BlockKind {
    fn from_tag(word: &str) -> Option<(BlockKind, &'static str)> {
        Some(match word {
            "macro" => (BlockKind::Macro, "endmacro"),
            "test" => (BlockKind::Test, "endtest"),
            "materialization" => (BlockKind::Materialization, "endmaterialization"),
            "docs" => (BlockKind::Docs, "enddocs"),
            "snapshot" => (BlockKind::Snapshot, "endsnapshot"),
            _ => return None,
        })
    }
}

/// A `{% ... %}` tag: its byte range and its inner words.
struct Tag<'a> {
    start: usize,
    end: usize,
    inner: &'a str,
}

fn tags(src: &str) -> Vec<Tag<'_>> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_raw = false;
    while i + 1 < bytes.len() {
        if bytes[i] == b'{' && (bytes[i + 1] == b'%' || bytes[i + 1] == b'#' || bytes[i + 1] == b'{') {
            let close: &[u8] = match bytes[i + 1] {
                b'%' => b"%}",
                b'#' => b"#}",
                _ => b"}}",
            };
            let Some(rel) = find(&bytes[i + 2..], close) else {
                break;
            };
            let end = i + 2 + rel + 2;
            if bytes[i + 1] == b'%' {
                let inner = src[i + 2..end - 2].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
                let first = inner.split_whitespace().next().unwrap_or("");
                if in_raw {
                    if first == "endraw" {
                        in_raw = false;
                    }
                } else if first == "raw" {
                    in_raw = true;
                } else {
                    out.push(Tag { start: i, end, inner });
                }
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses `name(a, b=1, c='x')` into the name and argument names.
fn signature(rest: &str) -> (String, Vec<String>) {
    let rest = rest.trim();
    let (name, args) = match rest.find('(') {
        Some(p) => (&rest[..p], &rest[p + 1..rest.rfind(')').unwrap_or(rest.len())]),
        None => (rest.split_whitespace().next().unwrap_or(rest), ""),
    };
    let mut names = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in args.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                ',' if depth == 0 => {
                    names.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            },
        }
        current.push(c);
    }
    names.push(current);
    let names = names.into_iter().map(|a| a.split('=').next().unwrap_or("").trim().to_string()).filter(|a| !a.is_empty()).collect();
    (name.trim().to_string(), names)
}

/// Every top-level block of `src`, plus tags that opened a block and never closed (as errors).
pub fn find_blocks(src: &str) -> Result<Vec<Block>, (usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(BlockKind, &'static str, &Tag, usize)> = None;
    let mut depth = 0usize;
    let all = tags(src);
    for tag in &all {
        let mut words = tag.inner.splitn(2, char::is_whitespace);
        let first = words.next().unwrap_or("");
        let rest = words.next().unwrap_or("");
        match &open {
            None => {
                if let Some((kind, end_word)) = BlockKind::from_tag(first) {
                    open = Some((kind, end_word, tag, line_of(src, tag.start)));
                    depth = 0;
                    let _ = rest;
                }
            }
            Some((kind, end_word, start_tag, line)) => {
                if BlockKind::from_tag(first).is_some_and(|(k, _)| k == *kind) {
                    depth += 1;
                } else if first == *end_word {
                    if depth > 0 {
                        depth -= 1;
                        continue;
                    }
                    let mut w = start_tag.inner.splitn(2, char::is_whitespace);
                    w.next();
                    let (name, args) = signature(w.next().unwrap_or(""));
                    blocks.push(Block {
                        kind: *kind,
                        name,
                        args,
                        start: start_tag.start,
                        end: tag.end,
                        body_start: start_tag.end,
                        body_end: tag.start,
                        line: *line,
                    });
                    open = None;
                }
            }
        }
    }
    if let Some((kind, end_word, tag, line)) = open {
        let _ = (kind, tag);
        return Err((line, format!("this block is never closed (missing `{{% {end_word} %}}`)")));
    }
    Ok(blocks)
}

pub fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// The source of one block as its own template, padded so that line and column numbers in
/// errors match the original file. `{% test x(...) %}` becomes `{% macro test_x(...) %}`.
/// The implicit parameters (`varargs`, `kwargs`) a macro's body uses without declaring them:
/// Jinja gives every macro these, minijinja does not, so kiln declares them (see
/// [`block_template`]) and fills them when the macro is called.
pub fn implicit_params(src: &str, block: &Block) -> Vec<&'static str> {
    let body = &src[block.body_start..block.body_end];
    let uses = |word: &str| {
        body.match_indices(word).any(|(i, _)| {
            let before = body[..i].chars().next_back();
            let after = body[i + word.len()..].chars().next();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
    };
    ["varargs", "kwargs"].into_iter().filter(|w| !block.args.iter().any(|a| a == w) && uses(w)).collect()
}

/// Adds `extra` parameters (with `none` defaults) to a macro's opening tag.
fn with_params(open: &str, extra: &[&str]) -> String {
    let Some(close) = open.rfind(')').filter(|_| !extra.is_empty()) else { return open.to_string() };
    let declared = !open[open.find('(').map_or(close, |p| p + 1)..close].trim().is_empty();
    let added: Vec<String> = extra.iter().map(|p| format!("{p}=none")).collect();
    format!("{}{}{}{}", &open[..close], if declared { ", " } else { "" }, added.join(", "), &open[close..])
}

pub fn block_template(src: &str, block: &Block) -> String {
    let line_start = src[..block.start].rfind('\n').map_or(0, |i| i + 1);
    let mut out = String::with_capacity(block.end - block.start + block.line + 64);
    // The padding is a comment, so rendering the macro's template outputs nothing extra.
    let indent = src[line_start..block.start].chars().count();
    if block.line > 1 {
        out.push_str("{#");
        for _ in 1..block.line {
            out.push('\n');
        }
        out.push_str("#}");
        out.push_str(&" ".repeat(indent.saturating_sub(2)));
    } else {
        out.push_str(&" ".repeat(indent));
    }
    let text = &src[block.start..block.end];
    let open_len = block.body_start - block.start;
    let mut open = with_params(&text[..open_len], &implicit_params(src, block));
    let close_len = block.end - block.body_end;
    let mut close = text[text.len() - close_len..].to_string();
    if block.kind == BlockKind::Test {
        open = open.replacen("test", "macro", 1).replacen(&format!("{}(", block.name), &format!("test_{}(", block.name), 1);
        close = close.replacen("endtest", "endmacro", 1);
    }
    out.push_str(&open);
    out.push_str(&text[open_len..text.len() - close_len]);
    out.push_str(&close);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_macros_tests_and_docs() {
        let src = "{# {% macro commented() %}{% endmacro %} #}\n{% macro a(x, y=1, z='a,b') -%}\n{{ x }}{% if y %}{% endif %}\n{%- endmacro %}\n\n{% test positive(model, column_name) %}\nselect 1\n{% endtest %}\n{% docs d %}text{% enddocs %}\n{% raw %}{% macro not_me() %}{% endmacro %}{% endraw %}";
        let blocks = find_blocks(src).unwrap();
        let names: Vec<(&str, BlockKind)> = blocks.iter().map(|b| (b.name.as_str(), b.kind)).collect();
        assert_eq!(names, vec![("a", BlockKind::Macro), ("positive", BlockKind::Test), ("d", BlockKind::Docs)]);
        assert_eq!(blocks[0].args, vec!["x", "y", "z"]);
        assert_eq!(blocks[0].line, 2);
        let t = block_template(src, &blocks[1]);
        assert!(t.contains("{% macro test_positive(model, column_name) %}"), "{t}");
        assert!(t.contains("{% endmacro %}"));
        assert_eq!(line_of(&t, t.find("select").unwrap()), 7);
        // Jinja's implicit `kwargs` and `varargs` become parameters when the body uses them.
        let src = "{% macro m(a) %}{{ kwargs.get('b') }}{{ varargs }}{% endmacro %}{% macro n() %}{{ kwargs }}{% endmacro %}";
        let blocks = find_blocks(src).unwrap();
        assert!(block_template(src, &blocks[0]).contains("{% macro m(a, varargs=none, kwargs=none) %}"));
        assert!(block_template(src, &blocks[1]).contains("{% macro n(kwargs=none) %}"));
    }

    #[test]
    fn unclosed_block() {
        assert_eq!(find_blocks("\n{% macro a() %}\nselect 1\n").unwrap_err().0, 2);
    }
}
