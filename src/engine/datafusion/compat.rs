//! SQL semantics of the warehouse a project was written for, on DataFusion. A `type: duckdb`
//! target gets DuckDB's (dbt-duckdb projects run unchanged and give DuckDB's values); every
//! other target gets PostgreSQL's, which DataFusion mostly shares. Built from DataFusion's
//! extension points: an expression planner for operators, wrapped functions for coercion,
//! extra functions, and session options.
//!
//! What cannot be matched is listed in `docs/engine.md`.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, IntervalMonthDayNanoArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, IntervalMonthDayNano, IntervalUnit, TimeUnit};
use datafusion::common::{DFSchema, Result, plan_err};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawAggregateExpr, RawBinaryExpr};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, Operator, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, cast as cast_expr,
};
use datafusion::prelude::SessionContext;
use sqlparser::ast::BinaryOperator;
use sqlparser::ast::{DataType as SqlType, ExactNumberInfo, TimezoneInfo};
use std::sync::Arc;

/// Whose SQL semantics the engine follows (the target adapter's).
pub use crate::adapter::Semantics as Flavor;

/// A session with the flavour's semantics (and every warehouse's type names) installed.
pub fn install(ctx: SessionContext, flavor: Flavor) -> SessionContext {
    let mut state = SessionStateBuilder::new_from_existing(ctx.state()).with_type_planner(Arc::new(TypeNames)).build();
    if flavor == Flavor::DuckDb {
        // DuckDB reads `1.5` as DECIMAL(2,1).
        state.config_mut().options_mut().sql_parser.parse_float_as_decimal = true;
    }
    let _ = datafusion::execution::FunctionRegistry::register_expr_planner(&mut state, Arc::new(Planner { flavor }));
    let ctx = SessionContext::new_with_state(state);
    ctx.add_analyzer_rule(Arc::new(PgCasts));
    ctx.register_udf(ScalarUDF::from(IntervalScale(Signature::any(2, Volatility::Immutable))));
    ctx.register_udf(ScalarUDF::from(LiteralCoercion(datafusion::functions::core::coalesce())));
    ctx.register_udf(ScalarUDF::from(Mod(Signature::user_defined(Volatility::Immutable))));
    ctx.register_udf(ScalarUDF::from(ToDouble(Signature::any(1, Volatility::Immutable))));
    for (name, part) in DATE_PARTS {
        ctx.register_udf(ScalarUDF::from(PartOf { name, part, signature: Signature::any(1, Volatility::Immutable) }));
    }
    // DuckDB's names for DataFusion's chrono-formatted functions.
    ctx.register_udf(datafusion::functions::datetime::to_char().as_ref().clone().with_aliases(["strftime"]));
    let to_timestamp = datafusion::functions::datetime::to_timestamp(ctx.state().config_options());
    ctx.register_udf(to_timestamp.as_ref().clone().with_aliases(["strptime"]));
    ctx
}

/// Type names DataFusion's SQL does not know, from PostgreSQL (`character varying(20)`),
/// BigQuery (`INT64`, `BYTES`, `BIGNUMERIC`) and DuckDB (`HUGEINT`, `UBIGINT`).
#[derive(Debug)]
struct TypeNames;

impl TypePlanner for TypeNames {
    fn plan_type_field(&self, sql_type: &SqlType) -> Result<Option<FieldRef>> {
        let decimal = |info: &ExactNumberInfo| match info {
            ExactNumberInfo::PrecisionAndScale(p, s) => DataType::Decimal128((*p).min(38) as u8, *s as i8),
            ExactNumberInfo::Precision(p) => DataType::Decimal128((*p).min(38) as u8, 0),
            ExactNumberInfo::None => DataType::Decimal128(38, 10),
        };
        // Microseconds, as PostgreSQL and DuckDB keep them: `'9999-12-31'::timestamp` (the
        // usual "valid to" of a current row) fits, where nanoseconds end in 2262.
        let timestamp = |tz: &TimezoneInfo| match tz {
            TimezoneInfo::WithTimeZone | TimezoneInfo::Tz => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            _ => DataType::Timestamp(TimeUnit::Microsecond, None),
        };
        let data_type = match sql_type {
            SqlType::Character(_)
            | SqlType::CharacterVarying(_)
            | SqlType::CharVarying(_)
            | SqlType::JSON
            | SqlType::JSONB
            | SqlType::Uuid => DataType::Utf8,
            SqlType::Int16 => DataType::Int16,
            SqlType::Int32 => DataType::Int32,
            SqlType::Int64 | SqlType::Signed | SqlType::SignedInteger => DataType::Int64,
            SqlType::UInt8 | SqlType::UTinyInt => DataType::UInt8,
            SqlType::UInt16 | SqlType::USmallInt => DataType::UInt16,
            SqlType::UInt32 => DataType::UInt32,
            SqlType::UInt64 | SqlType::UBigInt | SqlType::Unsigned | SqlType::UnsignedInteger => DataType::UInt64,
            SqlType::HugeInt | SqlType::Int128 => DataType::Decimal128(38, 0),
            SqlType::Float32 => DataType::Float32,
            SqlType::Float64 => DataType::Float64,
            SqlType::Bytes(_) => DataType::Binary,
            SqlType::Dec(info) | SqlType::BigNumeric(info) | SqlType::BigDecimal(info) => decimal(info),
            SqlType::Datetime(_) | SqlType::TimestampNtz(_) => DataType::Timestamp(TimeUnit::Microsecond, None),
            SqlType::Timestamp(_, tz) => timestamp(tz),
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(Field::new("", data_type, true))))
    }
}

#[derive(Debug)]
struct Planner {
    flavor: Flavor,
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

fn is_number(t: &DataType) -> bool {
    t.is_numeric()
}

fn is_temporal(t: &DataType) -> bool {
    matches!(t, DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _))
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
}

fn binary(left: Expr, op: Operator, right: Expr) -> Expr {
    Expr::BinaryExpr(BinaryExpr::new(Box::new(left), op, Box::new(right)))
}

fn call(udf: impl ScalarUDFImpl + 'static, args: Vec<Expr>) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(ScalarUDF::from(udf)), args))
}

impl ExprPlanner for Planner {
    fn plan_binary_op(&self, expr: RawBinaryExpr, schema: &DFSchema) -> Result<PlannerResult<RawBinaryExpr>> {
        let (Ok(lt), Ok(rt)) = (expr.left.get_type(schema), expr.right.get_type(schema)) else {
            return Ok(PlannerResult::Original(expr));
        };
        let duckdb = self.flavor == Flavor::DuckDb;
        let scale = || IntervalScale(Signature::any(2, Volatility::Immutable));
        Ok(PlannerResult::Planned(match expr.op {
            // `interval '1 day' * 3`, as dbt's `dateadd` renders it on PostgreSQL and DuckDB.
            BinaryOperator::Multiply if matches!(lt, DataType::Interval(_)) && is_number(&rt) => call(scale(), vec![expr.left, expr.right]),
            BinaryOperator::Multiply if is_number(&lt) && matches!(rt, DataType::Interval(_)) => call(scale(), vec![expr.right, expr.left]),
            // DuckDB: `/` divides as doubles (`36 / 100` is 0.36, a DECIMAL quotient is a DOUBLE).
            BinaryOperator::Divide if duckdb && is_number(&lt) && is_number(&rt) && !(lt.is_floating() && rt.is_floating()) => {
                binary(cast_expr(expr.left, DataType::Float64), Operator::Divide, cast_expr(expr.right, DataType::Float64))
            }
            // `//` (DuckDB) and `DIV` (MySQL): integer division.
            BinaryOperator::DuckIntegerDivide | BinaryOperator::MyIntegerDivide if is_integer(&lt) && is_integer(&rt) => {
                binary(expr.left, Operator::Divide, expr.right)
            }
            BinaryOperator::DuckIntegerDivide | BinaryOperator::MyIntegerDivide if is_number(&lt) && is_number(&rt) => {
                let quotient = binary(cast_expr(expr.left, DataType::Float64), Operator::Divide, cast_expr(expr.right, DataType::Float64));
                Expr::ScalarFunction(ScalarFunction::new_udf(datafusion::functions::math::floor(), vec![quotient]))
            }
            // DuckDB refuses to compare a date with a text column (a text literal is cast).
            BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq
                if duckdb && mixes_temporal_and_text_column(&expr, &lt, &rt) =>
            {
                let (t, text) = if is_temporal(&lt) { (&lt, &expr.right) } else { (&rt, &expr.left) };
                let message = format!(
                    "Cannot compare values of type {} and type VARCHAR - an explicit cast is required (DuckDB semantics of this `type: duckdb` target)",
                    super::types::sql_name(t)
                );
                // Where the text column is, for static analysis.
                let span = text.spans().and_then(|s| s.first());
                let diagnostic = datafusion::common::Diagnostic::new_error(message.clone(), span);
                return Err(datafusion::error::DataFusionError::Plan(message).with_diagnostic(diagnostic));
            }
            _ => return Ok(PlannerResult::Original(expr)),
        }))
    }

    /// DuckDB: `avg` of a DECIMAL is a DOUBLE.
    fn plan_aggregate(&self, mut expr: RawAggregateExpr) -> Result<PlannerResult<RawAggregateExpr>> {
        if self.flavor != Flavor::DuckDb || expr.func.name() != "avg" || expr.args.len() != 1 {
            return Ok(PlannerResult::Original(expr));
        }
        let arg = expr.args.remove(0);
        expr.args.push(call(ToDouble(Signature::any(1, Volatility::Immutable)), vec![arg]));
        // Planned by DataFusion's own planner, with the argument changed.
        Ok(PlannerResult::Original(expr))
    }
}

fn mixes_temporal_and_text_column(expr: &RawBinaryExpr, lt: &DataType, rt: &DataType) -> bool {
    let literal = |e: &Expr| matches!(e, Expr::Literal(..));
    (is_temporal(lt) && is_text(rt) && !literal(&expr.right)) || (is_text(lt) && is_temporal(rt) && !literal(&expr.left))
}

/// `kiln_interval_scale(interval, n)`: an interval times a number (each field times `n`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalScale(Signature);

impl ScalarUDFImpl for IntervalScale {
    fn name(&self) -> &str {
        "kiln_interval_scale"
    }
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Interval(IntervalUnit::MonthDayNano))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let interval = cast(&arrays[0], &DataType::Interval(IntervalUnit::MonthDayNano))?;
        let factor = cast(&arrays[1], &DataType::Float64)?;
        let (interval, factor) = (
            interval.as_primitive::<datafusion::arrow::datatypes::IntervalMonthDayNanoType>(),
            factor.as_primitive::<datafusion::arrow::datatypes::Float64Type>(),
        );
        let out: IntervalMonthDayNanoArray = (0..interval.len())
            .map(|i| {
                (interval.is_valid(i) && factor.is_valid(i)).then(|| {
                    let (v, f) = (interval.value(i), factor.value(i));
                    IntervalMonthDayNano::new((v.months as f64 * f) as i32, (v.days as f64 * f) as i32, (v.nanoseconds as f64 * f) as i64)
                })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// `kiln_to_double(x)`: a DECIMAL as DOUBLE; any other value unchanged.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToDouble(Signature);

impl ScalarUDFImpl for ToDouble {
    fn name(&self) -> &str {
        "kiln_to_double"
    }
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(match &args[0] {
            DataType::Decimal128(..) | DataType::Decimal256(..) => DataType::Float64,
            other => other.clone(),
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let target = self.return_type(&[args.args[0].data_type()])?;
        args.args[0].cast_to(&target, None)
    }
}

/// DuckDB's (and MySQL's) one-part date functions: `year(d)` is `date_part('year', d)`.
const DATE_PARTS: [(&str, &str); 11] = [
    ("year", "year"),
    ("month", "month"),
    ("day", "day"),
    ("dayofmonth", "day"),
    ("hour", "hour"),
    ("minute", "minute"),
    ("second", "second"),
    ("quarter", "quarter"),
    ("week", "week"),
    ("dayofweek", "dow"),
    ("dayofyear", "doy"),
];

/// `year(d)`, `month(d)`, ...: one part of a date or timestamp, as a BIGINT.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PartOf {
    name: &'static str,
    part: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for PartOf {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let date_part = datafusion::functions::datetime::date_part();
        let part = ColumnarValue::Scalar(datafusion::common::ScalarValue::Utf8(Some(self.part.to_string())));
        let part_field: FieldRef = Arc::new(Field::new("part", DataType::Utf8, false));
        let inner = ScalarFunctionArgs {
            args: vec![part, args.args[0].clone()],
            arg_fields: vec![part_field, args.arg_fields[0].clone()],
            number_rows: args.number_rows,
            return_field: Arc::new(Field::new(self.name, DataType::Int32, true)),
            config_options: args.config_options.clone(),
        };
        date_part.invoke_with_args(inner)?.cast_to(&DataType::Int64, None)
    }
}

/// `mod(a, b)`: the remainder, as `%`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Mod(Signature);

impl ScalarUDFImpl for Mod {
    fn name(&self) -> &str {
        "mod"
    }
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [a, b] if a.is_integer() && b.is_integer() => Ok(vec![DataType::Int64, DataType::Int64]),
            [a, b] if a.is_numeric() && b.is_numeric() => Ok(vec![DataType::Float64, DataType::Float64]),
            _ => plan_err!("mod(a, b) takes two numbers"),
        }
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args[0].clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        Ok(ColumnarValue::Array(datafusion::arrow::compute::kernels::numeric::rem(&arrays[0], &arrays[1])?))
    }
}

/// A function whose text arguments are cast to the date or timestamp type of its other
/// arguments, as PostgreSQL and DuckDB do with untyped literals: `coalesce(valid_to,
/// '2099-01-01')`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct LiteralCoercion(Arc<ScalarUDF>);

impl ScalarUDFImpl for LiteralCoercion {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn signature(&self) -> &Signature {
        self.0.signature()
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let temporal = args.iter().find(|t| is_temporal(t)).cloned();
        let args: Vec<DataType> =
            args.iter().map(|t| if is_text(t) { temporal.clone().unwrap_or_else(|| t.clone()) } else { t.clone() }).collect();
        self.0.coerce_types(&args)
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.0.return_type(args)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<datafusion::arrow::datatypes::FieldRef> {
        self.0.return_field_from_args(args)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.0.invoke_with_args(args)
    }
    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.0.simplify(args, info)
    }
    fn short_circuits(&self) -> bool {
        self.0.short_circuits()
    }
}

/// Casts as PostgreSQL and DuckDB do them, where Arrow's differ; planned after type coercion,
/// so the casts `||`, `concat` and comparisons imply are covered too:
/// - a timestamp as text reads `2024-01-01 10:00:00.5` (a space, the fraction in microseconds
///   without trailing zeros, `+00` for one with a time zone), where Arrow writes ISO 8601
///   (`2024-01-01T10:00:00.500`): see [`TimestampToText`];
/// - a DECIMAL or floating-point number cast to an integer is rounded (`1.5` → 2), where Arrow
///   truncates (→ 1).
#[derive(Debug)]
struct PgCasts;

impl datafusion::optimizer::AnalyzerRule for PgCasts {
    fn analyze(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        _: &datafusion::common::config::ConfigOptions,
    ) -> Result<datafusion::logical_expr::LogicalPlan> {
        use datafusion::common::tree_node::TreeNode;
        plan.transform_up_with_subqueries(|plan| {
            let mut schema = DFSchema::empty();
            for input in plan.inputs() {
                schema.merge(input.schema());
            }
            let names = datafusion::logical_expr::expr_rewriter::NamePreserver::new(&plan);
            plan.map_expressions(|e| {
                let saved = names.save(&e);
                Ok(e.transform_up(|e| pg_cast(e, &schema))?.update_data(|e| saved.restore(e)))
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "kiln_pg_casts"
    }
}

/// A cast as PostgreSQL and DuckDB do it (see [`PgCasts`]); anything else as it is.
fn pg_cast(e: Expr, schema: &DFSchema) -> Result<datafusion::common::tree_node::Transformed<Expr>> {
    use datafusion::common::tree_node::Transformed;
    use datafusion::logical_expr::expr::{Cast, TryCast};
    let (inner, to) = match &e {
        Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => (expr, field.data_type()),
        _ => return Ok(Transformed::no(e)),
    };
    let from = inner.get_type(schema);
    match &from {
        Ok(DataType::Timestamp(_, _)) if is_text(to) => {
            let text = call(TimestampToText(Signature::any(1, Volatility::Immutable)), vec![(**inner).clone()]);
            Ok(Transformed::yes(if *to == DataType::Utf8 { text } else { cast_expr(text, to.clone()) }))
        }
        Ok(t)
            if is_integer(to)
                && matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..) | DataType::Float32 | DataType::Float64) =>
        {
            let rounded = datafusion::functions::math::round().call(vec![(**inner).clone()]);
            Ok(Transformed::yes(match e {
                Expr::TryCast(TryCast { field, .. }) => Expr::TryCast(TryCast { expr: Box::new(rounded), field }),
                Expr::Cast(Cast { field, .. }) => Expr::Cast(Cast { expr: Box::new(rounded), field }),
                other => other,
            }))
        }
        _ => Ok(Transformed::no(e)),
    }
}

/// A timestamp as PostgreSQL and DuckDB write it as text (see [`PgCasts`]).
#[derive(Debug, PartialEq, Eq, Hash)]
struct TimestampToText(Signature);

impl ScalarUDFImpl for TimestampToText {
    fn name(&self) -> &str {
        "kiln_timestamp_text"
    }
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let array = args.args[0].clone().into_array(args.number_rows)?;
        let zoned = matches!(array.data_type(), DataType::Timestamp(_, Some(_)));
        let micros = cast(&array, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let micros = micros.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        let text: datafusion::arrow::array::StringArray = micros.iter().map(|v| v.and_then(|v| timestamp_as_text(v, zoned))).collect();
        Ok(ColumnarValue::Array(Arc::new(text)))
    }
}

/// `2024-01-01 10:00:00[.fraction][+00]` from microseconds since the epoch (UTC).
fn timestamp_as_text(micros: i64, zoned: bool) -> Option<String> {
    let at = chrono::DateTime::from_timestamp_micros(micros)?.naive_utc();
    let mut text = at.format("%Y-%m-%d %H:%M:%S").to_string();
    let fraction = micros.rem_euclid(1_000_000);
    if fraction != 0 {
        text.push('.');
        text.push_str(format!("{fraction:06}").trim_end_matches('0'));
    }
    if zoned {
        text.push_str("+00");
    }
    Some(text)
}
