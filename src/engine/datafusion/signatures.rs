//! A warehouse dialect's functions ([`crate::adapter::functions`]) as planning-only functions
//! of a scratch session: static analysis plans PostgreSQL's `to_char` or BigQuery's
//! `safe_divide` with their result types. Calling one fails: they are never run.

use super::DataFusionEngine;
use crate::adapter::functions::{Arg, Catalog, Function, Kind, Overload, Returns};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::type_coercion::binary::type_union_resolution;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use std::collections::HashMap;
use std::sync::Arc;

/// Names the SQL planner handles itself, or as table functions: left to DataFusion.
const PLANNER_OWNED: &[&str] = &["unnest", "generate_series", "grouping", "struct", "array"];

impl DataFusionEngine {
    /// Registers `catalog`'s scalar functions (in place of DataFusion's of the same name) and
    /// the aggregates DataFusion lacks. Window functions are DataFusion's own.
    pub fn register_catalog(&self, catalog: &'static Catalog) {
        let planner = self.planner();
        let mut types: HashMap<&str, DataType> = HashMap::new();
        for f in catalog.functions() {
            for o in &f.overloads {
                if let Returns::Type(name) = &o.returns {
                    types.entry(name.as_str()).or_insert_with(|| {
                        planner
                            .plan_columns(&format!("select cast(null as {name}) as c"))
                            .map_or(DataType::Null, |s| s.field(0).data_type().clone())
                    });
                }
            }
        }
        let state = self.ctx.state();
        let has_aggregate = |name: &str| datafusion::execution::FunctionRegistry::udaf(&state, name).is_ok();
        for f in catalog.functions().filter(|f| !PLANNER_OWNED.contains(&f.name.as_str())) {
            let planned = Planned {
                function: f,
                signature: Signature::user_defined(Volatility::Volatile),
                returns: f
                    .overloads
                    .iter()
                    .map(|o| if let Returns::Type(t) = &o.returns { types.get(t.as_str()).cloned() } else { None })
                    .collect(),
            };
            match f.kind {
                Kind::Scalar => self.ctx.register_udf(ScalarUDF::new_from_impl(planned)),
                Kind::Aggregate if !has_aggregate(&f.name) => self.ctx.register_udaf(AggregateUDF::new_from_impl(planned)),
                Kind::Aggregate | Kind::Window => {}
            }
        }
    }
}

/// A catalog function: typed by its overloads, never run.
#[derive(Debug)]
struct Planned {
    function: &'static Function,
    signature: Signature,
    /// The resolved type of each overload that returns a named type.
    returns: Vec<Option<DataType>>,
}

impl PartialEq for Planned {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.function, other.function)
    }
}

impl Eq for Planned {}

impl std::hash::Hash for Planned {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.function.name.hash(state);
    }
}

impl Planned {
    /// The overload a call with `args` takes: the first whose argument classes fit, else the
    /// first that takes that many.
    fn overload(&self, args: &[DataType]) -> Result<(usize, &Overload)> {
        let overloads = &self.function.overloads;
        let takes = |(_, o): &(usize, &Overload)| o.takes(args.len());
        let fits = |(_, o): &(usize, &Overload)| args.iter().enumerate().all(|(i, t)| o.arg(i).is_some_and(|a| fits(a, t)));
        match overloads.iter().enumerate().filter(takes).find(fits).or_else(|| overloads.iter().enumerate().find(takes)) {
            Some(found) => Ok(found),
            None => plan_err!("`{}` takes {} arguments, not {}", self.function.name, self.function.arities(), args.len()),
        }
    }

    fn coerce(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        self.overload(args).map(|_| args.to_vec())
    }

    fn result(&self, args: &[DataType]) -> Result<DataType> {
        let (i, overload) = self.overload(args)?;
        let arg = |n: usize| args.get(n).cloned().unwrap_or(DataType::Null);
        Ok(match &overload.returns {
            Returns::Type(_) => self.returns[i].clone().unwrap_or(DataType::Null),
            Returns::Arg(n) => arg(*n),
            Returns::Element(n) => match arg(*n) {
                DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => f.data_type().clone(),
                _ => DataType::Null,
            },
            Returns::ArrayOf(n) => DataType::new_list(arg(*n), true),
            Returns::Common(n) => {
                let typed: Vec<DataType> = args.iter().skip(*n).filter(|t| !t.is_null()).cloned().collect();
                if typed.is_empty() { DataType::Null } else { type_union_resolution(&typed).unwrap_or(DataType::Null) }
            }
            Returns::Unknown => DataType::Null,
        })
    }
}

/// Whether a value of type `t` may be passed as `class`. Text fits every class: it may be a
/// literal, which the warehouse casts.
fn fits(class: Arg, t: &DataType) -> bool {
    use DataType::*;
    let text = matches!(t, Utf8 | Utf8View | LargeUtf8);
    text || t.is_null()
        || match class {
            Arg::Any | Arg::Part => true,
            Arg::Text => false,
            Arg::Number => t.is_numeric(),
            Arg::Int => t.is_integer(),
            Arg::Float => t.is_floating(),
            Arg::Bool => matches!(t, Boolean),
            Arg::Date => matches!(t, Date32 | Date64 | Timestamp(..)),
            Arg::Time => matches!(t, Time32(_) | Time64(_)),
            Arg::Timestamp => matches!(t, Timestamp(..) | Date32 | Date64),
            Arg::Temporal => t.is_temporal(),
            Arg::Interval => matches!(t, Interval(_) | Duration(_)),
            Arg::Bytes => matches!(t, Binary | BinaryView | LargeBinary),
            Arg::Json => true,
            Arg::Array => matches!(t, List(_) | LargeList(_) | FixedSizeList(..)),
        }
}

impl ScalarUDFImpl for Planned {
    fn name(&self) -> &str {
        &self.function.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        self.coerce(args)
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.result(args)
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("`{}` is planned for static analysis only", self.function.name)
    }
}

impl AggregateUDFImpl for Planned {
    fn name(&self) -> &str {
        &self.function.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        self.coerce(args)
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.result(args)
    }
    fn state_fields(
        &self,
        args: datafusion::logical_expr::function::StateFieldsArgs,
    ) -> Result<Vec<datafusion::arrow::datatypes::FieldRef>> {
        Ok(vec![Arc::new(Field::new(args.name, args.return_field.data_type().clone(), true))])
    }
    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        exec_err!("`{}` is planned for static analysis only", self.function.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::SqlDialect;

    fn engine(dialect: SqlDialect) -> DataFusionEngine {
        let engine = DataFusionEngine::scratch("db", "main", dialect.datafusion_name(), super::super::Flavor::Postgres).unwrap();
        engine.register_catalog(Catalog::of(dialect).unwrap());
        engine
    }

    #[test]
    fn every_result_type_is_known() {
        for dialect in [SqlDialect::Postgres, SqlDialect::BigQuery] {
            let planner = engine(dialect).planner();
            let catalog = Catalog::of(dialect).unwrap();
            let mut unknown: Vec<&str> = catalog
                .functions()
                .flat_map(|f| &f.overloads)
                .filter_map(|o| if let Returns::Type(t) = &o.returns { Some(t.as_str()) } else { None })
                .filter(|t| planner.plan_columns(&format!("select cast(null as {t}) as c")).is_err())
                .collect();
            unknown.sort();
            unknown.dedup();
            assert_eq!(unknown, Vec::<&str>::new(), "{dialect:?}");
        }
    }

    #[test]
    fn plans_with_the_dialects_result_types() {
        let pg = engine(SqlDialect::Postgres).planner();
        let schema =
            pg.plan_columns("select to_char(now(), 'YYYY') as a, date_part('day', now()) as b, round(1.5::numeric, 1) as c").unwrap();
        let types: Vec<String> = schema.fields().iter().map(|f| super::super::types::sql_name(f.data_type())).collect();
        assert_eq!(types[..2], ["VARCHAR", "DOUBLE"]);
        assert!(pg.plan_columns("select array_length(array[1, 2]) as n").is_err());
        let bq = engine(SqlDialect::BigQuery).planner();
        let schema = bq.plan_columns("select safe_divide(1, 2) as a, format_date('%F', current_date()) as b, countif(true) as c").unwrap();
        let types: Vec<String> = schema.fields().iter().map(|f| super::super::types::sql_name(f.data_type())).collect();
        assert_eq!(types, ["DOUBLE", "VARCHAR", "BIGINT"]);
    }
}
