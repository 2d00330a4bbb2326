//! dbt's `Column`: what `adapter.get_columns_in_relation` and `api.Column.create` return. Macro
//! packages read its fields (`name`, `column`, `quoted`, `dtype`, `data_type`, `char_size`,
//! `numeric_precision`, `numeric_scale`) and call its methods (`is_string`, `is_number`,
//! `is_float`, `is_integer`, `is_numeric`, `string_size`, `string_type`, `can_expand_to`,
//! `literal`), with the type names of dbt-postgres and dbt-duckdb.

use super::relation::quote_ident;
use minijinja::value::{Enumerator, Object, Value};
use minijinja::{Error, ErrorKind, State};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// The base type, lower case and without its size: `character varying`, `numeric`.
    base: String,
    /// The type as the warehouse described it.
    pub dtype: String,
    char_size: Option<u64>,
    precision: Option<u64>,
    scale: Option<u64>,
    quote: char,
}

const STRINGS: &[&str] =
    &["text", "character varying", "character", "varchar", "char", "bpchar", "string", "utf8", "utf8view", "largeutf8"];
const FLOATS: &[&str] = &["real", "float4", "float", "double precision", "float8", "double", "float32", "float64"];
const INTEGERS: &[&str] = &[
    "smallint",
    "integer",
    "bigint",
    "smallserial",
    "serial",
    "bigserial",
    "int2",
    "int4",
    "int8",
    "int",
    "tinyint",
    "hugeint",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "utinyint",
    "usmallint",
    "uinteger",
    "ubigint",
];
const NUMERICS: &[&str] = &["numeric", "decimal", "decimal128", "decimal256"];

/// Whether two type names are the same type as dbt's contracts compare them (through
/// `Column.data_type`: `text` and `varchar` are both `character varying(256)`).
pub fn same_type(a: &str, b: &str) -> bool {
    a == b || Column::new("", a, '"').data_type().eq_ignore_ascii_case(&Column::new("", b, '"').data_type())
}

impl Column {
    /// A column from its name and the type the warehouse gave (`character varying(20)`,
    /// `Decimal128(10, 2)`, `INTEGER`).
    pub fn new(name: &str, dtype: &str, quote: char) -> Column {
        let (base, args) = match dtype.split_once('(') {
            Some((b, rest)) => (b, rest.trim_end_matches(')')),
            None => (dtype, ""),
        };
        let sizes: Vec<u64> = args.split(',').filter_map(|a| a.trim().parse().ok()).collect();
        let base = base.trim().to_ascii_lowercase();
        let is_string = STRINGS.contains(&base.as_str());
        Column {
            name: name.to_string(),
            dtype: dtype.to_string(),
            char_size: if is_string { sizes.first().copied() } else { None },
            precision: if is_string { None } else { sizes.first().copied() },
            scale: if is_string { None } else { sizes.get(1).copied() },
            base,
            quote,
        }
    }

    pub fn into_value(self) -> Value {
        Value::from_object(self)
    }

    fn is(&self, names: &[&str]) -> bool {
        names.contains(&self.base.as_str())
    }

    fn string_size(&self) -> Option<u64> {
        self.is(STRINGS).then(|| self.char_size.unwrap_or(256))
    }

    /// dbt's `data_type`: a string type is `character varying(size)` (256 when the warehouse
    /// gives no size), a numeric has its precision and scale.
    fn data_type(&self) -> String {
        match (self.string_size(), self.is(NUMERICS), self.precision, self.scale) {
            (Some(size), _, _, _) => format!("character varying({size})"),
            (None, true, Some(p), Some(s)) => format!("{}({p},{s})", self.base),
            _ => self.dtype.clone(),
        }
    }
}

fn opt(v: Option<u64>) -> Value {
    v.map_or(Value::from(()), Value::from)
}

impl Object for Column {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(match key.as_str()? {
            "name" | "column" => Value::from(self.name.as_str()),
            "quoted" => Value::from(quote_ident(&self.name, self.quote)),
            "dtype" => Value::from(self.dtype.as_str()),
            "data_type" => Value::from(self.data_type()),
            "char_size" => opt(self.char_size),
            "numeric_precision" => opt(self.precision),
            "numeric_scale" => opt(self.scale),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["name", "column", "quoted", "dtype", "data_type", "char_size", "numeric_precision", "numeric_scale"])
    }

    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let arg = |i: usize| args.get(i).map(|v| v.to_string()).unwrap_or_default();
        Ok(match method {
            "is_string" => Value::from(self.is(STRINGS)),
            "is_float" => Value::from(self.is(FLOATS)),
            "is_integer" => Value::from(self.is(INTEGERS)),
            "is_numeric" => Value::from(self.is(NUMERICS)),
            "is_number" => Value::from(self.is(FLOATS) || self.is(INTEGERS) || self.is(NUMERICS)),
            "string_size" => match self.string_size() {
                Some(n) => Value::from(n),
                None => return Err(Error::new(ErrorKind::InvalidOperation, format!("column `{}` is not a string", self.name))),
            },
            "string_type" => Value::from(format!("character varying({})", arg(0))),
            "numeric_type" => Value::from(format!("numeric({},{})", arg(1), arg(2))),
            "can_expand_to" => {
                let other = args.first().and_then(|v| v.downcast_object_ref::<Column>());
                Value::from(match (self.string_size(), other.and_then(Column::string_size)) {
                    (Some(mine), Some(theirs)) => theirs > mine,
                    _ => false,
                })
            }
            "literal" => Value::from(format!("{}::{}", arg(0), self.data_type())),
            _ => return Err(Error::new(ErrorKind::UnknownMethod, format!("Column has no method `{method}`"))),
        })
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result
    where
        Self: Sized + 'static,
    {
        write!(f, "<Column {} ({})>", self.name, self.data_type())
    }
}

#[cfg(test)]
mod tests {
    use super::Column;

    #[test]
    fn types_are_read_as_dbt_postgres_and_dbt_duckdb_do() {
        let c = Column::new("name", "character varying(20)", '"');
        assert!(c.is(super::STRINGS) && c.string_size() == Some(20));
        assert_eq!(c.data_type(), "character varying(20)");
        assert!(super::same_type("text", "character varying") && super::same_type("VARCHAR", "text"));
        assert!(!super::same_type("character varying(20)", "text") && !super::same_type("integer", "bigint"));
        assert_eq!(Column::new("t", "TEXT", '"').string_size(), Some(256));
        let n = Column::new("amount", "numeric(10,2)", '"');
        assert!(n.is(super::NUMERICS) && n.data_type() == "numeric(10,2)");
        assert!(Column::new("f", "DOUBLE", '"').is(super::FLOATS));
        assert!(Column::new("i", "Int64", '"').is(super::INTEGERS));
        assert!(Column::new("d", "Decimal128(38, 10)", '"').is(super::NUMERICS));
        assert!(!Column::new("ts", "timestamp", '"').is(super::STRINGS));
    }
}
