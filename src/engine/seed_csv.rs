//! Seed CSV files for the warehouse engines: column types inferred as dbt does (agate's type
//! tester), named by the engine, and the rows re-encoded as clean CSV for a bulk load
//! (PostgreSQL's `COPY`, a BigQuery load job).
//!
//! Inference, per column, over every non-null value (`""` and `null` are NULL): integers
//! ([`Inferred::Integer`], [`Inferred::BigInt`] past 32 bits), other numbers, `YYYY-MM-DD` dates,
//! `YYYY-MM-DD HH:MM:SS` and ISO 8601 timestamps, `true`/`false`, anything else text.
//! `column_types` overrides a column.

use crate::engine::{EngineError, SeedLoad};

/// A seed ready to load: its columns (name, SQL type) and its rows as CSV (header first, NULLs
/// as unquoted empty fields).
pub struct SeedData {
    pub columns: Vec<(String, String)>,
    pub csv: Vec<u8>,
    pub rows: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Inferred {
    /// No value seen yet.
    Empty,
    Integer,
    BigInt,
    Number,
    Date,
    Timestamp,
    Boolean,
    Text,
}

fn is_null(v: &str) -> bool {
    v.is_empty() || v.eq_ignore_ascii_case("null")
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    v.is_ascii() && b.len() == 10 && b[4] == b'-' && b[7] == b'-' && digits(&v[..4], 4) && digits(&v[5..7], 2) && digits(&v[8..], 2)
}

fn is_timestamp(v: &str) -> bool {
    if !v.is_ascii() || v.len() < 19 || !is_date(&v[..10]) || !matches!(v.as_bytes()[10], b' ' | b'T') {
        return false;
    }
    let t = &v[11..];
    let (hms, rest) = t.split_at(8);
    let b = hms.as_bytes();
    if !(b[2] == b':' && b[5] == b':' && digits(&hms[..2], 2) && digits(&hms[3..5], 2) && digits(&hms[6..], 2)) {
        return false;
    }
    // Fractional seconds and an offset (ISO 8601) are allowed.
    let rest = rest.strip_prefix('.').map_or(rest, |r| r.trim_start_matches(|c: char| c.is_ascii_digit()));
    rest.is_empty() || rest == "Z" || (rest.starts_with(['+', '-']) && rest[1..].chars().all(|c| c.is_ascii_digit() || c == ':'))
}

fn is_number(v: &str) -> bool {
    let s = v.strip_prefix(['-', '+']).unwrap_or(v);
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['-', '+']).unwrap_or(e))),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let ok_digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    !(int.is_empty() && frac.is_empty()) && ok_digits(int) && ok_digits(frac) && exponent.is_none_or(|e| !e.is_empty() && ok_digits(e))
}

fn infer(v: &str) -> Inferred {
    let is_int = {
        let s = v.strip_prefix('-').unwrap_or(v);
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
    };
    if is_int {
        match v.parse::<i64>() {
            Ok(i) if i32::try_from(i).is_ok() => Inferred::Integer,
            Ok(_) => Inferred::BigInt,
            Err(_) => Inferred::Number,
        }
    } else if is_number(v) {
        Inferred::Number
    } else if is_date(v) {
        Inferred::Date
    } else if is_timestamp(v) {
        Inferred::Timestamp
    } else if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
        Inferred::Boolean
    } else {
        Inferred::Text
    }
}

/// The type of a column holding values of types `a` and `b`.
fn widen(a: Inferred, b: Inferred) -> Inferred {
    use Inferred::*;
    match (a.min(b), a.max(b)) {
        (Empty, x) => x,
        (x, y) if x == y => x,
        (Integer, BigInt) => BigInt,
        (Integer | BigInt, Number) => Number,
        (Date, Timestamp) => Timestamp,
        _ => Text,
    }
}

/// Reads a seed's CSV: header, inferred (or configured) types named by `type_name`, and the
/// rows re-encoded (NULLs as unquoted empty fields).
pub fn read(seed: &SeedLoad, type_name: fn(Inferred) -> &'static str) -> Result<SeedData, EngineError> {
    let file = seed.path.display();
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(seed.delimiter)
        .has_headers(true)
        .flexible(false)
        .from_path(&seed.path)
        .map_err(|e| EngineError::new(format!("cannot read the seed {file}: {e}")))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| EngineError::new(format!("cannot read the header of {file}: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut types = vec![Inferred::Empty; header.len()];
    let mut out = csv::WriterBuilder::new().quote_style(csv::QuoteStyle::Necessary).from_writer(Vec::new());
    let write_err = |e: csv::Error| EngineError::new(format!("cannot encode {file}: {e}"));
    out.write_record(&header).map_err(write_err)?;
    let mut rows = 0u64;
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            EngineError::new(format!(
                "{file}:{}: {e}; every row needs as many fields as the header",
                e.position().map_or(i as u64 + 2, |p| p.line())
            ))
        })?;
        for (t, v) in types.iter_mut().zip(record.iter()) {
            if !is_null(v) {
                *t = widen(*t, infer(v));
            }
        }
        // NULLs become unquoted empty fields, which COPY and load jobs read as NULL.
        let fields: Vec<&[u8]> = record.iter().map(|v| if is_null(v) { &b""[..] } else { v.as_bytes() }).collect();
        out.write_record(&fields).map_err(write_err)?;
        rows += 1;
    }
    let columns = header
        .iter()
        .zip(&types)
        .map(|(name, t)| {
            let configured = seed.column_types.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)).map(|(_, t)| t.clone());
            (name.clone(), configured.unwrap_or_else(|| type_name(*t).to_string()))
        })
        .collect();
    let csv = out.into_inner().map_err(|e| EngineError::new(format!("cannot encode {file}: {e}")))?;
    Ok(SeedData { columns, csv, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_follows_dbt() {
        use Inferred::*;
        let t = |vals: &[&str]| vals.iter().filter(|v| !is_null(v)).fold(Empty, |acc, v| widen(acc, infer(v)));
        assert_eq!(t(&["1", "-2", ""]), Integer);
        assert_eq!(t(&["1", "3000000000"]), BigInt);
        assert_eq!(t(&["1", "2.5"]), Number);
        assert_eq!(t(&["2024-01-01", "null"]), Date);
        assert_eq!(t(&["2024-01-01", "2024-01-02 10:00:00"]), Timestamp);
        assert_eq!(t(&["2024-01-02T10:00:00.123Z"]), Timestamp);
        assert_eq!(t(&["true", "FALSE"]), Boolean);
        assert_eq!(t(&["1", "x"]), Text);
        assert_eq!(t(&["", "null"]), Empty);
        assert_eq!(t(&["1e5", ".5"]), Number);
        assert_eq!(t(&["2024-13"]), Text);
    }
}
