//! Where a place in compiled SQL is in the model's source file. Jinja keeps no map from its
//! output back to the template, so this looks for the compiled line among the source's lines
//! (most SQL lines pass through Jinja unchanged, only indented differently), and failing that
//! for the first use of the token as a whole word.

/// The 1-based line and column (in characters) in `source` of the token `token` found at
/// `line`, `col` of `compiled`.
pub fn in_source(source: &str, compiled: &str, line: usize, col: usize, token: &str) -> Option<(usize, usize)> {
    let compiled_line = compiled.lines().nth(line.checked_sub(1)?)?;
    let trimmed = compiled_line.trim();
    let lead = indent(compiled_line);
    if !trimmed.is_empty() && col > lead {
        let mut same = source.lines().enumerate().filter(|(_, l)| l.trim() == trimmed);
        if let (Some((i, raw)), None) = (same.next(), same.next()) {
            return Some((i + 1, col - lead + indent(raw)));
        }
    }
    whole_word(source, token)
}

fn indent(line: &str) -> usize {
    line.chars().take_while(|c| c.is_whitespace()).count()
}

/// The first use of `word` in `text` (ASCII case ignored) not inside a longer identifier.
pub fn whole_word(text: &str, word: &str) -> Option<(usize, usize)> {
    word_where(text, word, |_| true)
}

/// The (qualified) identifier that starts at 1-based `line`, `col` of `text` (empty if none does).
pub fn word_at(text: &str, line: usize, col: usize) -> String {
    let line = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
    line.chars().skip(col.saturating_sub(1)).take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.').collect()
}

/// The first call of function `name` in `text`: the name as a whole word, then `(`.
pub fn call(text: &str, name: &str) -> Option<(usize, usize)> {
    word_where(text, name, |rest| rest.trim_start().starts_with('('))
}

/// The first use of `word` in `text` whose rest of the line passes `followed_by`.
fn word_where(text: &str, word: &str, followed_by: impl Fn(&str) -> bool) -> Option<(usize, usize)> {
    if word.is_empty() {
        return None;
    }
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    for (i, line) in text.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let wanted: Vec<char> = word.chars().collect();
        for start in 0..chars.len().saturating_sub(wanted.len() - 1) {
            let end = start + wanted.len();
            let matches = chars[start..end].iter().zip(&wanted).all(|(a, b)| a.eq_ignore_ascii_case(b));
            let bounded = (start == 0 || !ident(chars[start - 1])) && (end == chars.len() || !ident(chars[end]));
            if matches && bounded && followed_by(&chars[end..].iter().collect::<String>()) {
                return Some((i + 1, start + 1));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_line_jinja_passed_through() {
        let source = "{{ config(materialized='table') }}\nselect\n    ordr_id, amount\nfrom {{ ref('stg_orders') }}\n";
        let compiled = "\nselect\n  ordr_id, amount\nfrom \"db\".\"main\".\"stg_orders\"\n";
        assert_eq!(in_source(source, compiled, 3, 3, "ordr_id"), Some((3, 5)));
    }

    #[test]
    fn falls_back_to_the_first_whole_word() {
        let source = "select {{ cols() }}, x_total\nfrom t where total > 0\n";
        let compiled = "select a, b, x_total\nfrom t where total > 0\n";
        // The compiled line 1 is not in the source: the token is looked up as a word.
        assert_eq!(in_source(source, compiled, 1, 8, "x_total"), Some((1, 22)));
        assert_eq!(whole_word(source, "total"), Some((2, 14)));
        assert_eq!(whole_word(source, "nothing"), None);
        assert_eq!(call("select round as r,\n  round (x, 1, 2)", "round"), Some((2, 3)));
        assert_eq!(word_at("select a,\n  email + 1", 2, 3), "email");
    }

    #[test]
    fn an_ambiguous_line_is_not_guessed() {
        // The line appears twice in the source: the token's first use is taken instead.
        let source = "select id\nfrom a\nunion all\nselect id\nfrom b\n";
        assert_eq!(in_source(source, "select id\nfrom a\nunion all\nselect id\nfrom b\n", 4, 8, "id"), Some((1, 8)));
    }
}
