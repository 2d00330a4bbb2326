//! Functions dbt projects use that DataFusion lacks, with PostgreSQL/dbt semantics:
//! `datediff(part, a, b)` (boundaries crossed, as dbt's `postgres__datediff`),
//! `dateadd(part, n, ts)`, `last_day(date[, part])`, and `any_value` (an alias of `first_value`).

use chrono::{Datelike, Months, NaiveDate, NaiveDateTime, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Date32Array, Int64Array, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;
use std::sync::Arc;

pub fn register(ctx: &SessionContext) {
    // DuckDB spellings too, so projects (and dbt-duckdb's macros) written for DuckDB run.
    ctx.register_udf(ScalarUDF::from(DateDiff(Signature::any(3, Volatility::Immutable))).with_aliases(["date_diff"]));
    ctx.register_udf(ScalarUDF::from(DateAdd(Signature::any(3, Volatility::Immutable))).with_aliases(["date_add"]));
    ctx.register_udf(ScalarUDF::from(LastDay(Signature::variadic_any(Volatility::Immutable))));
    let any_value =
        datafusion::functions_aggregate::first_last::first_value_udaf().as_ref().clone().with_aliases(["any_value", "arbitrary"]);
    ctx.register_udaf(any_value);
    let split = datafusion::functions_nested::string::string_to_array_udf().as_ref().clone().with_aliases(["string_split", "str_split"]);
    ctx.register_udf(split);
    // Replaces DataFusion's md5 (text and binary only): any value is hashed as its text.
    ctx.register_udf(ScalarUDF::from(Md5(Signature::any(1, Volatility::Immutable))));
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Md5(Signature);

impl ScalarUDFImpl for Md5 {
    fn name(&self) -> &str {
        "md5"
    }
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = arrays(&args)?;
        let text = cast(&a[0], &DataType::Utf8)?;
        let out: datafusion::arrow::array::StringArray =
            text.as_string::<i32>().iter().map(|v| v.map(crate::adapter::names::md5_hex)).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

const MICROS: DataType = DataType::Timestamp(TimeUnit::Microsecond, None);

fn arrays(args: &ScalarFunctionArgs) -> Result<Vec<ArrayRef>> {
    ColumnarValue::values_to_arrays(&args.args)
}

fn timestamps(a: &ArrayRef) -> Result<TimestampMicrosecondArray> {
    // Values are microseconds since the epoch, UTC, whatever the input's time zone.
    let target = match a.data_type() {
        DataType::Timestamp(_, Some(tz)) => DataType::Timestamp(TimeUnit::Microsecond, Some(tz.clone())),
        _ => MICROS,
    };
    Ok(cast(a, &target)?.as_primitive::<TimestampMicrosecondType>().clone())
}

fn parts(a: &ArrayRef) -> Result<Vec<Option<String>>> {
    let s = cast(a, &DataType::Utf8)?;
    Ok(s.as_string::<i32>().iter().map(|p| p.map(|p| p.trim().trim_matches('\'').to_ascii_lowercase())).collect())
}

fn naive(micros: i64) -> Option<NaiveDateTime> {
    chrono::DateTime::from_timestamp_micros(micros).map(|d| d.naive_utc())
}

fn quarter(d: &NaiveDateTime) -> i64 {
    (d.month0() / 3) as i64
}

/// Boundaries of `part` crossed from `a` to `b` (PostgreSQL's `date_part` arithmetic).
fn diff(part: &str, a: NaiveDateTime, b: NaiveDateTime) -> Option<i64> {
    let years = (b.year() - a.year()) as i64;
    let days = (b.date() - a.date()).num_days();
    Some(match part {
        "year" | "years" | "yy" | "yyyy" => years,
        "quarter" | "quarters" | "qtr" => years * 4 + quarter(&b) - quarter(&a),
        "month" | "months" | "mon" | "mm" => years * 12 + b.month() as i64 - a.month() as i64,
        "day" | "days" | "dd" | "d" => days,
        "week" | "weeks" | "wk" | "w" => {
            let (da, db) = (a.weekday().num_days_from_sunday(), b.weekday().num_days_from_sunday());
            let adjust = match (da <= db, a <= b) {
                (true, true) => 0,
                (true, false) => -1,
                (false, true) => 1,
                (false, false) => 0,
            };
            days / 7 + adjust
        }
        "hour" | "hours" | "hh" => days * 24 + b.hour() as i64 - a.hour() as i64,
        "minute" | "minutes" | "mi" => (days * 24 + b.hour() as i64 - a.hour() as i64) * 60 + b.minute() as i64 - a.minute() as i64,
        "second" | "seconds" | "ss" | "s" => {
            ((days * 24 + b.hour() as i64 - a.hour() as i64) * 60 + b.minute() as i64 - a.minute() as i64) * 60 + b.second() as i64
                - a.second() as i64
        }
        _ => return None,
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DateDiff(Signature);

impl ScalarUDFImpl for DateDiff {
    fn name(&self) -> &str {
        "datediff"
    }
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = arrays(&args)?;
        let (p, x, y) = (parts(&a[0])?, timestamps(&a[1])?, timestamps(&a[2])?);
        let mut out = Vec::with_capacity(x.len());
        for (i, part) in p.iter().enumerate().take(x.len()) {
            let v = match (part, x.is_valid(i), y.is_valid(i)) {
                (Some(part), true, true) => {
                    let (Some(a), Some(b)) = (naive(x.value(i)), naive(y.value(i))) else {
                        return exec_err!("datediff: timestamp out of range");
                    };
                    match diff(part, a, b) {
                        Some(d) => Some(d),
                        None => {
                            return exec_err!(
                                "datediff: unsupported date part '{part}' (use year, quarter, month, week, day, hour, minute or second)"
                            );
                        }
                    }
                }
                _ => None,
            };
            out.push(v);
        }
        Ok(ColumnarValue::Array(Arc::new(Int64Array::from(out))))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DateAdd(Signature);

/// `t` plus `n` parts; `None` for an unknown part or a result out of range (never a panic,
/// never a silent wrap).
fn add(part: &str, n: i64, t: NaiveDateTime) -> Option<NaiveDateTime> {
    let months = |m: Option<i64>| {
        let m = m?;
        let abs = Months::new(u32::try_from(m.unsigned_abs()).ok()?);
        if m >= 0 { t.checked_add_months(abs) } else { t.checked_sub_months(abs) }
    };
    let delta = |d: Option<chrono::TimeDelta>| t.checked_add_signed(d?);
    match part {
        "year" | "years" => months(n.checked_mul(12)),
        "quarter" | "quarters" => months(n.checked_mul(3)),
        "month" | "months" => months(Some(n)),
        "week" | "weeks" => delta(n.checked_mul(7).and_then(chrono::TimeDelta::try_days)),
        "day" | "days" => delta(chrono::TimeDelta::try_days(n)),
        "hour" | "hours" => delta(chrono::TimeDelta::try_hours(n)),
        "minute" | "minutes" => delta(chrono::TimeDelta::try_minutes(n)),
        "second" | "seconds" => delta(chrono::TimeDelta::try_seconds(n)),
        _ => None,
    }
}

impl ScalarUDFImpl for DateAdd {
    fn name(&self) -> &str {
        "dateadd"
    }
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(MICROS)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = arrays(&args)?;
        let p = parts(&a[0])?;
        let n = cast(&a[1], &DataType::Int64)?;
        let n = n.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let t = timestamps(&a[2])?;
        let mut out: Vec<Option<i64>> = Vec::with_capacity(t.len());
        for (i, part) in p.iter().enumerate().take(t.len()) {
            out.push(match (part, n.is_valid(i), t.is_valid(i)) {
                (Some(part), true, true) => {
                    let r = naive(t.value(i)).and_then(|ts| add(part, n.value(i), ts));
                    match r {
                        Some(v) => Some(v.and_utc().timestamp_micros()),
                        None => return exec_err!("dateadd: unsupported date part '{part}' or result out of range"),
                    }
                }
                _ => None,
            });
        }
        Ok(ColumnarValue::Array(Arc::new(datafusion::arrow::array::PrimitiveArray::<TimestampMicrosecondType>::from(out))))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct LastDay(Signature);

impl ScalarUDFImpl for LastDay {
    fn name(&self) -> &str {
        "last_day"
    }
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Date32)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = arrays(&args)?;
        let t = timestamps(&a[0])?;
        let p = if a.len() > 1 { parts(&a[1])? } else { vec![Some("month".to_string()); t.len()] };
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).ok_or_else(|| DataFusionError::Internal("epoch".into()))?;
        let mut out = Vec::with_capacity(t.len());
        for (i, part) in p.iter().enumerate().take(t.len()) {
            let Some(d) = t.is_valid(i).then(|| naive(t.value(i))).flatten().map(|d| d.date()) else {
                out.push(None);
                continue;
            };
            let (y, m) = (d.year(), d.month());
            let last = match part.as_deref().unwrap_or("month") {
                "year" => NaiveDate::from_ymd_opt(y, 12, 31),
                "quarter" => NaiveDate::from_ymd_opt(y, (m - 1) / 3 * 3 + 1, 1)
                    .and_then(|f| f.checked_add_months(Months::new(3)))
                    .and_then(|f| f.pred_opt()),
                "week" => Some(d + chrono::Duration::days(6 - d.weekday().num_days_from_sunday() as i64)),
                _ => NaiveDate::from_ymd_opt(y, m, 1).and_then(|f| f.checked_add_months(Months::new(1))).and_then(|f| f.pred_opt()),
            };
            out.push(last.map(|l| (l - epoch).num_days() as i32));
        }
        Ok(ColumnarValue::Array(Arc::new(Date32Array::from(out))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn postgres_datediff_semantics() {
        // Boundaries crossed, not elapsed time: Dec 31 -> Jan 1 is one year, one month, one day.
        assert_eq!(diff("year", dt("2023-12-31 23:00:00"), dt("2024-01-01 01:00:00")), Some(1));
        assert_eq!(diff("month", dt("2024-01-31 00:00:00"), dt("2024-03-01 00:00:00")), Some(2));
        assert_eq!(diff("day", dt("2024-01-01 23:59:00"), dt("2024-01-02 00:01:00")), Some(1));
        assert_eq!(diff("day", dt("2024-01-10 00:00:00"), dt("2024-01-01 00:00:00")), Some(-9));
        assert_eq!(diff("quarter", dt("2024-03-31 00:00:00"), dt("2024-04-01 00:00:00")), Some(1));
        assert_eq!(diff("hour", dt("2024-01-01 10:59:00"), dt("2024-01-01 11:00:00")), Some(1));
        assert_eq!(diff("week", dt("2024-01-06 00:00:00"), dt("2024-01-07 00:00:00")), Some(1), "Saturday to Sunday crosses a week");
        assert_eq!(diff("fortnight", dt("2024-01-06 00:00:00"), dt("2024-01-07 00:00:00")), None);
    }

    #[test]
    fn dateadd_months_clamp() {
        assert_eq!(add("month", 1, dt("2024-01-31 00:00:00")), Some(dt("2024-02-29 00:00:00")));
        assert_eq!(add("day", -1, dt("2024-03-01 00:00:00")), Some(dt("2024-02-29 00:00:00")));
    }

    #[test]
    fn dateadd_out_of_range_is_none_not_a_panic_or_a_wrap() {
        let t = dt("2024-01-01 00:00:00");
        for part in ["year", "quarter", "month", "week", "day", "hour", "minute", "second"] {
            for n in [i64::MAX, i64::MIN] {
                assert_eq!(add(part, n, t), None, "{part} {n}");
            }
        }
        // More months than fit in u32 (used to wrap to a small shift).
        assert_eq!(add("month", i64::from(u32::MAX) + 1, t), None);
        assert_eq!(add("month", 12, t), Some(dt("2025-01-01 00:00:00")));
    }
}
