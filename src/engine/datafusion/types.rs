//! Type names on the embedded engine. Its tables hold Arrow types; SQL, macros (`Column`,
//! `get_columns_in_relation`) and contracts see DuckDB's names for them (`BIGINT`, `VARCHAR`,
//! `DECIMAL(10,2)`), which dbt-duckdb projects and macro packages expect and DataFusion's SQL
//! parses back. Type names from other warehouses (PostgreSQL's `character varying(20)`,
//! BigQuery's `INT64`) are translated before DataFusion reads them.

use crate::engine::EngineError;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, cast, col};
use datafusion::prelude::DataFrame;

/// The SQL name of an Arrow type (DuckDB's spelling).
pub fn sql_name(dt: &DataType) -> String {
    match dt {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float16 | DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => "BLOB".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::FixedSizeList(f, _) => {
            format!("{}[]", sql_name(f.data_type()))
        }
        DataType::Dictionary(_, value) => sql_name(value),
        DataType::Null => "NULL".into(),
        other => other.to_string(),
    }
}

/// `df` with the column types other engines read from Parquet: a timestamp in seconds (which
/// Parquet has no unit for, so it would be written as a plain integer) becomes milliseconds.
pub fn portable(df: DataFrame) -> Result<DataFrame, EngineError> {
    let fields: Vec<(String, DataType)> = df.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    if !fields.iter().any(|(_, t)| matches!(t, DataType::Timestamp(TimeUnit::Second, _))) {
        return Ok(df);
    }
    let exprs: Vec<Expr> = fields
        .into_iter()
        .map(|(name, t)| match t {
            DataType::Timestamp(TimeUnit::Second, tz) => {
                cast(col(Column::new_unqualified(&name)), DataType::Timestamp(TimeUnit::Millisecond, tz)).alias(name)
            }
            _ => col(Column::new_unqualified(&name)),
        })
        .collect();
    df.select(exprs).map_err(super::df_err)
}

/// An Arrow type read from a name this module writes, or from a common SQL name, without a
/// query (`None` when unsure: ask DataFusion).
pub fn parse(name: &str) -> Option<DataType> {
    if let Ok(dt) = name.parse::<DataType>() {
        return Some(dt);
    }
    Some(match normalize(name).as_str() {
        "BOOLEAN" => DataType::Boolean,
        "TINYINT" => DataType::Int8,
        "SMALLINT" => DataType::Int16,
        "INTEGER" => DataType::Int32,
        "BIGINT" => DataType::Int64,
        "FLOAT" | "REAL" => DataType::Float32,
        "DOUBLE" => DataType::Float64,
        "VARCHAR" => DataType::Utf8,
        "DATE" => DataType::Date32,
        "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => return None,
    })
}

/// A type name of any warehouse as DataFusion's SQL reads it: `character varying(20)` is
/// `VARCHAR`, `double precision` is `DOUBLE`, `INT64` is `BIGINT`, `numeric(10,2)` is
/// `DECIMAL(10,2)`. Names it does not know are returned as they are.
pub fn normalize(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let (base, args) = match lower.split_once('(') {
        Some((b, rest)) => {
            let close = rest.find(')').unwrap_or(rest.len());
            (format!("{}{}", b.trim(), &rest[(close + 1).min(rest.len())..]), Some(&rest[..close]))
        }
        None => (lower.clone(), None),
    };
    let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
    let mapped = match base.as_str() {
        "character varying" | "varchar" | "character" | "char" | "bpchar" | "text" | "string" | "citext" | "name" | "json" | "jsonb"
        | "uuid" | "nvarchar" | "nchar" => "VARCHAR",
        "double precision" | "float8" | "float64" | "double" => "DOUBLE",
        "real" | "float4" | "float" => "FLOAT",
        "bigint" | "int8" | "int64" | "bigserial" | "long" => "BIGINT",
        "integer" | "int" | "int4" | "serial" | "int32" | "signed" => "INTEGER",
        "smallint" | "int2" | "smallserial" | "int16" | "short" => "SMALLINT",
        "tinyint" | "int1" => "TINYINT",
        "boolean" | "bool" | "logical" => "BOOLEAN",
        "bytea" | "bytes" | "blob" | "binary" | "varbinary" => "BYTEA",
        "date" => "DATE",
        "timestamp" | "timestamp without time zone" | "datetime" | "timestamp_ntz" => "TIMESTAMP",
        "timestamp with time zone" | "timestamptz" | "timestamp_tz" => "TIMESTAMP WITH TIME ZONE",
        "time" | "time without time zone" => "TIME",
        "numeric" | "decimal" | "bignumeric" | "bigdecimal" => {
            return match args {
                Some(a) if !a.trim().is_empty() => format!("DECIMAL({})", a.split(',').map(str::trim).collect::<Vec<_>>().join(",")),
                _ => "DECIMAL(38,10)".into(),
            };
        }
        _ => return name.trim().to_string(),
    };
    mapped.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_translated() {
        for dt in [DataType::Int64, DataType::Utf8View, DataType::Float64, DataType::Date32, DataType::Boolean, DataType::Int32] {
            let name = sql_name(&dt);
            let back = parse(&name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(sql_name(&back), name);
        }
        assert_eq!(sql_name(&DataType::Decimal128(10, 2)), "DECIMAL(10,2)");
        assert_eq!(normalize("character varying(20)"), "VARCHAR");
        assert_eq!(normalize("timestamp(3) without time zone"), "TIMESTAMP");
        assert_eq!(normalize("INT64"), "BIGINT");
        assert_eq!(normalize("numeric(10, 2)"), "DECIMAL(10,2)");
        assert_eq!(normalize("numeric"), "DECIMAL(38,10)");
        assert_eq!(normalize("STRUCT<a INT64>"), "STRUCT<a INT64>");
    }
}
