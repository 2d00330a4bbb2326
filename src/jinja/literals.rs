//! Mutable list and dict literals. dbt's Python Jinja lets templates change the lists and dicts
//! they build (`{% do cols.append(c) %}`, `{% do d[k].append(x) %}`,
//! `{% do d.update({k: []}) %}`); minijinja's values cannot change. Before a template is
//! compiled, every list and dict literal in its tags is wrapped in a call that copies it into a
//! changeable object: `[a, b]` becomes `__kiln_list([a, b])`, `{k: v}` becomes
//! `__kiln_dict({k: v})`. Subscripts (`x[0]`, `d['k']`), strings, comments and raw blocks are
//! left alone.

use std::borrow::Cow;

/// `src` with its list and dict literals made mutable (borrowed when it has none).
pub fn mutable_literals(src: &str) -> Cow<'_, str> {
    if !src.contains('[') && !src.contains("{{") && !src.contains("{%") {
        return Cow::Borrowed(src);
    }
    let mut out = String::with_capacity(src.len() + 64);
    let mut rest = src;
    let mut changed = false;
    while let Some(open) = find_tag(rest) {
        let (before, tag) = rest.split_at(open);
        out.push_str(before);
        if tag.starts_with("{#") {
            let end = tag.find("#}").map_or(tag.len(), |e| e + 2);
            out.push_str(&tag[..end]);
            rest = &tag[end..];
            continue;
        }
        if is_raw_start(tag) {
            let end = raw_end(tag);
            out.push_str(&tag[..end]);
            rest = &tag[end..];
            continue;
        }
        let (len, rewritten) = rewrite_tag(tag);
        changed |= rewritten.len() != len;
        out.push_str(&rewritten);
        rest = &tag[len..];
    }
    if !changed {
        return Cow::Borrowed(src);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn find_tag(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(1)).find(|&i| b[i] == b'{' && matches!(b[i + 1], b'{' | b'%' | b'#'))
}

fn is_raw_start(tag: &str) -> bool {
    tag.strip_prefix("{%").is_some_and(|t| t.trim_start_matches(['-', '+']).trim_start().starts_with("raw"))
}

/// The end of a `{% raw %}...{% endraw %}` block starting at 0.
fn raw_end(tag: &str) -> usize {
    let mut i = tag.find("%}").map_or(tag.len(), |e| e + 2);
    while let Some(p) = tag[i..].find("{%") {
        let start = i + p;
        let close = tag[start..].find("%}").map_or(tag.len(), |e| start + e + 2);
        if tag[start + 2..close].trim_matches(['-', '+', ' ', '\t', '\n', '%', '}']).starts_with("endraw") {
            return close;
        }
        i = close;
    }
    tag.len()
}

/// What an open bracket turned out to be.
#[derive(Clone, Copy, PartialEq)]
enum Open {
    List,
    Dict,
    Subscript,
    Paren,
}

/// Rewrites the tag starting at 0; returns how many bytes of the input it covered and the text.
fn rewrite_tag(tag: &str) -> (usize, String) {
    let close = if tag.starts_with("{{") { "}}" } else { "%}" };
    let b = tag.as_bytes();
    let mut out = String::with_capacity(tag.len());
    out.push_str(&tag[..2]);
    let mut stack: Vec<Open> = Vec::new();
    // Whether a value just ended (so `[` is a subscript): an identifier that is not a keyword,
    // a number, a string, or a closing bracket.
    let mut after_value = false;
    let mut i = 2;
    while i < b.len() {
        let c = b[i];
        let trimmed_close = c == b'-' && tag[i + 1..].starts_with(close);
        if stack.is_empty() && (tag[i..].starts_with(close) || trimmed_close) {
            let end = if trimmed_close { i + 3 } else { i + 2 };
            out.push_str(&tag[i..end]);
            return (end, out);
        }
        match c {
            b'\'' | b'"' => {
                let end = string_end(b, i);
                out.push_str(&tag[i..end]);
                i = end;
                after_value = true;
                continue;
            }
            b'[' => {
                let open = if after_value { Open::Subscript } else { Open::List };
                out.push_str(if open == Open::List { "__kiln_list([" } else { "[" });
                stack.push(open);
                after_value = false;
            }
            b'{' => {
                out.push_str("__kiln_dict({");
                stack.push(Open::Dict);
                after_value = false;
            }
            b'(' => {
                out.push('(');
                stack.push(Open::Paren);
                after_value = false;
            }
            b']' | b'}' | b')' => {
                out.push(c as char);
                if matches!(stack.pop(), Some(Open::List | Open::Dict)) {
                    out.push(')');
                }
                after_value = true;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let end = (i..b.len()).find(|&j| !(b[j].is_ascii_alphanumeric() || b[j] == b'_')).unwrap_or(b.len());
                let word = &tag[i..end];
                out.push_str(word);
                after_value = !KEYWORDS.contains(&word);
                i = end;
                continue;
            }
            c if c.is_ascii_whitespace() => out.push(c as char),
            _ => {
                // Operators, commas, colons, dots; a multi-byte character is copied whole.
                let len = tag[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&tag[i..i + len]);
                after_value = false;
                i += len;
                continue;
            }
        }
        i += 1;
    }
    (tag.len(), out)
}

/// Words after which `[` starts a list rather than a subscript.
const KEYWORDS: &[&str] = &[
    "in", "not", "and", "or", "if", "else", "elif", "is", "for", "set", "do", "return", "with", "import", "from", "as", "call", "filter",
    "macro", "test", "print", "yield",
];

fn string_end(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::mutable_literals;

    #[test]
    fn literals_are_wrapped_and_everything_else_kept() {
        let cases = [
            ("{% set x = [] %}", "{% set x = __kiln_list([]) %}"),
            ("{%- set d = {} -%}", "{%- set d = __kiln_dict({}) -%}"),
            ("{% do d.update({k: []}) %}", "{% do d.update(__kiln_dict({k: __kiln_list([])})) %}"),
            ("{% set p = [column_name] %}", "{% set p = __kiln_list([column_name]) %}"),
            ("{{ x[0] ~ d['k'] ~ f(a)[1] ~ [1][0] }}", "{{ x[0] ~ d['k'] ~ f(a)[1] ~ __kiln_list([1])[0] }}"),
            ("{% for c in [1, 2] %}{{ c }}{% endfor %}", "{% for c in __kiln_list([1, 2]) %}{{ c }}{% endfor %}"),
            ("{{ '[not a list]' }} and [text] {# [comment] #}", "{{ '[not a list]' }} and [text] {# [comment] #}"),
            ("{% raw %}{{ [1] }}{% endraw %}{{ [2] }}", "{% raw %}{{ [1] }}{% endraw %}{{ __kiln_list([2]) }}"),
            ("{% macro m(a=[]) %}{% endmacro %}", "{% macro m(a=__kiln_list([])) %}{% endmacro %}"),
            ("{{ {'a': {'b': 1}} }}", "{{ __kiln_dict({'a': __kiln_dict({'b': 1})}) }}"),
            ("{{ x if y in ['a'] else z }}", "{{ x if y in __kiln_list(['a']) else z }}"),
        ];
        for (src, want) in cases {
            assert_eq!(mutable_literals(src), want, "{src}");
        }
    }

    #[test]
    fn text_without_literals_is_borrowed() {
        assert!(matches!(mutable_literals("select {{ ref('a') }} where x = 1"), std::borrow::Cow::Borrowed(_)));
    }
}
