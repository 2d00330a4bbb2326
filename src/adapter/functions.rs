//! The functions of each warehouse's SQL, for static analysis: names, kinds, arities, argument
//! classes and result types. Kept as one text file per dialect (`functions/*.txt`, one
//! overload per line); analysis checks calls against them and plans with their result types.
//!
//! A catalog lists the functions dbt projects call, not every function a warehouse has: a
//! name it does not list is unknown (never an error by itself), and `names:` lines list
//! functions known to exist whose signatures are not written down.

use super::SqlDialect;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// What kind of function a name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Scalar,
    Aggregate,
    Window,
}

/// The class of values an argument takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    Any,
    Text,
    Number,
    Int,
    Float,
    Bool,
    Date,
    Time,
    Timestamp,
    /// A date, time, datetime or timestamp.
    Temporal,
    Interval,
    Bytes,
    Json,
    Array,
    /// A date part: a keyword in BigQuery (`date_diff(a, b, day)`), a string in PostgreSQL.
    Part,
}

/// What an overload returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Returns {
    /// A type, by its name in the dialect.
    Type(String),
    /// The type of argument `n` (0-based).
    Arg(usize),
    /// The element type of the array argument `n`.
    Element(usize),
    /// An array of the type of argument `n`.
    ArrayOf(usize),
    /// The common type of the arguments from `n` on (`coalesce`, `if`).
    Common(usize),
    /// Not written down: analysis leaves it untyped.
    Unknown,
}

/// One signature: its arguments, how many it takes, and what it returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overload {
    pub args: Vec<Arg>,
    pub min: usize,
    /// `None`: the last argument repeats.
    pub max: Option<usize>,
    pub returns: Returns,
}

impl Overload {
    pub fn takes(&self, n: usize) -> bool {
        n >= self.min && self.max.is_none_or(|max| n <= max)
    }

    /// The class of argument `i` (the last one repeats).
    pub fn arg(&self, i: usize) -> Option<Arg> {
        self.args.get(i).or_else(|| if self.max.is_none() { self.args.last() } else { None }).copied()
    }
}

#[derive(Debug)]
pub struct Function {
    pub name: String,
    pub kind: Kind,
    pub overloads: Vec<Overload>,
}

impl Function {
    pub fn takes(&self, n: usize) -> bool {
        self.overloads.iter().any(|o| o.takes(n))
    }

    /// "1 or 2", "3 or more": the argument counts it takes, for messages.
    pub fn arities(&self) -> String {
        let mut counts: Vec<usize> = Vec::new();
        let mut open: Option<usize> = None;
        for o in &self.overloads {
            match o.max {
                Some(max) => counts.extend(o.min..=max),
                None => open = Some(open.map_or(o.min, |m| m.min(o.min))),
            }
        }
        if let Some(m) = open {
            counts.retain(|c| *c < m);
        }
        counts.sort_unstable();
        counts.dedup();
        let mut parts: Vec<String> = counts.iter().map(usize::to_string).collect();
        if let Some(m) = open {
            parts.push(format!("{m} or more"));
        }
        match parts.as_slice() {
            [] => "no".into(),
            [one] => one.clone(),
            [init @ .., last] => format!("{} or {last}", init.join(", ")),
        }
    }
}

/// The functions of one dialect.
#[derive(Debug, Default)]
pub struct Catalog {
    functions: HashMap<String, Function>,
    /// Known to exist, signatures not written down.
    also: HashSet<String>,
    /// Name prefixes of function families known to exist (`st_` for geography).
    prefixes: Vec<String>,
}

impl Catalog {
    /// The catalog of `dialect`, when kiln has one.
    pub fn of(dialect: SqlDialect) -> Option<&'static Catalog> {
        static POSTGRES: OnceLock<Catalog> = OnceLock::new();
        static BIGQUERY: OnceLock<Catalog> = OnceLock::new();
        match dialect {
            SqlDialect::Postgres => Some(POSTGRES.get_or_init(|| parse(include_str!("functions/postgres.txt")))),
            SqlDialect::BigQuery => Some(BIGQUERY.get_or_init(|| parse(include_str!("functions/bigquery.txt")))),
            SqlDialect::Generic | SqlDialect::DuckDb => None,
        }
    }

    /// A function by its name (any case).
    pub fn get(&self, name: &str) -> Option<&Function> {
        self.functions.get(&name.to_ascii_lowercase())
    }

    /// Whether the dialect has a function of this name, signature known or not.
    pub fn exists(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        self.functions.contains_key(&lower) || self.also.contains(&lower) || self.prefixes.iter().any(|p| lower.starts_with(p.as_str()))
    }

    pub fn functions(&self) -> impl Iterator<Item = &Function> {
        self.functions.values()
    }

    /// Every name the catalog knows.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.functions.keys().chain(self.also.iter()).map(String::as_str)
    }
}

/// Parses a catalog file. Each line is one overload, `[agg|win] name(arg, arg?, arg...) -> ret`,
/// or `names: a b c` (names only), or `prefixes: st_`; `#` starts a comment. A bad line is a
/// bug in kiln, caught by the unit tests.
fn parse(text: &str) -> Catalog {
    let mut catalog = Catalog::default();
    for line in text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()) {
        if let Some(names) = line.strip_prefix("names:") {
            catalog.also.extend(names.split_whitespace().map(str::to_ascii_lowercase));
            continue;
        }
        if let Some(prefixes) = line.strip_prefix("prefixes:") {
            catalog.prefixes.extend(prefixes.split_whitespace().map(str::to_ascii_lowercase));
            continue;
        }
        let Some((kind, name, overload)) = parse_overload(line) else {
            debug_assert!(false, "bad catalog line: {line}");
            continue;
        };
        let f = catalog.functions.entry(name.clone()).or_insert_with(|| Function { name, kind, overloads: Vec::new() });
        f.overloads.push(overload);
    }
    catalog
}

fn parse_overload(line: &str) -> Option<(Kind, String, Overload)> {
    let (kind, rest) = match line.split_once(' ') {
        Some(("agg", rest)) => (Kind::Aggregate, rest.trim()),
        Some(("win", rest)) => (Kind::Window, rest.trim()),
        _ => (Kind::Scalar, line),
    };
    let (call, returns) = rest.split_once("->")?;
    let (name, args) = call.trim().strip_suffix(')')?.split_once('(')?;
    let mut overload = Overload { args: Vec::new(), min: 0, max: Some(0), returns: parse_returns(returns.trim())? };
    for arg in args.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let (class, repeat) = match arg.strip_suffix("...").or_else(|| arg.strip_suffix('*')) {
            Some(class) => (class, Some(arg.ends_with("..."))),
            None => (arg.strip_suffix('?').unwrap_or(arg), None),
        };
        overload.args.push(parse_arg(class)?);
        match repeat {
            Some(at_least_one) => {
                overload.min += usize::from(at_least_one);
                overload.max = None;
            }
            None => {
                overload.max = overload.max.map(|m| m + 1);
                if !arg.ends_with('?') {
                    overload.min += 1;
                }
            }
        }
    }
    Some((kind, name.trim().to_ascii_lowercase(), overload))
}

fn parse_arg(class: &str) -> Option<Arg> {
    Some(match class {
        "any" => Arg::Any,
        "text" => Arg::Text,
        "number" => Arg::Number,
        "int" => Arg::Int,
        "float" => Arg::Float,
        "bool" => Arg::Bool,
        "date" => Arg::Date,
        "time" => Arg::Time,
        "timestamp" => Arg::Timestamp,
        "temporal" => Arg::Temporal,
        "interval" => Arg::Interval,
        "bytes" => Arg::Bytes,
        "json" => Arg::Json,
        "array" => Arg::Array,
        "part" => Arg::Part,
        _ => return None,
    })
}

fn parse_returns(text: &str) -> Option<Returns> {
    let arg = |s: &str| s.strip_prefix('$')?.parse::<usize>().ok()?.checked_sub(1);
    Some(if text == "?" {
        Returns::Unknown
    } else if let Some(n) = arg(text) {
        Returns::Arg(n)
    } else if let Some(inner) = text.strip_prefix("elem(").and_then(|t| t.strip_suffix(')')) {
        Returns::Element(arg(inner)?)
    } else if let Some(inner) = text.strip_prefix("array(").and_then(|t| t.strip_suffix(')')) {
        Returns::ArrayOf(arg(inner)?)
    } else if let Some(inner) = text.strip_prefix("common(").and_then(|t| t.strip_suffix(')')) {
        Returns::Common(arg(inner)?)
    } else {
        Returns::Type(text.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogs_parse() {
        for dialect in [SqlDialect::Postgres, SqlDialect::BigQuery] {
            let text = match dialect {
                SqlDialect::Postgres => include_str!("functions/postgres.txt"),
                _ => include_str!("functions/bigquery.txt"),
            };
            let mut kinds: HashMap<String, Kind> = HashMap::new();
            for line in text.lines().map(|l| l.split('#').next().unwrap_or("").trim()) {
                if line.is_empty() || line.starts_with("names:") || line.starts_with("prefixes:") {
                    continue;
                }
                let Some((kind, name, _)) = parse_overload(line) else { panic!("{dialect:?}: bad line `{line}`") };
                assert_eq!(*kinds.entry(name).or_insert(kind), kind, "{dialect:?}: `{line}` is of another kind than the lines before");
            }
        }
    }

    #[test]
    fn arities() {
        let (_, _, o) = parse_overload("round(number, int?) -> $1").unwrap();
        assert_eq!((o.min, o.max, o.returns), (1, Some(2), Returns::Arg(0)));
        let (_, _, o) = parse_overload("concat_ws(text, any...) -> text").unwrap();
        assert_eq!((o.min, o.max), (2, None));
        let (kind, _, o) = parse_overload("agg mode() -> ?").unwrap();
        assert_eq!((kind, o.min, o.max), (Kind::Aggregate, 0, Some(0)));
        let pg = Catalog::of(SqlDialect::Postgres).unwrap();
        assert_eq!(pg.get("ARRAY_LENGTH").unwrap().arities(), "2");
        assert_eq!(pg.get("round").unwrap().arities(), "1 or 2");
        assert_eq!(pg.get("concat").unwrap().arities(), "1 or more");
        assert!(!pg.get("array_length").unwrap().takes(1));
        assert!(pg.exists("st_distance") && !pg.exists("cuont"));
    }
}
