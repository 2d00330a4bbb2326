//! dbt's microbatch: an incremental model built in windows of its `event_time` (`batch_size`
//! each). A first build (or `--full-refresh`) covers `begin` to now; an incremental run the
//! current batch and `lookback` batches before it; `--event-time-start` / `--event-time-end`
//! choose the range. Each batch reads only its window of every upstream relation that has an
//! `event_time` config, and replaces its window of the table.

use crate::project::typed::MicrobatchConfig;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// One window: [`start`, `end`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

/// A time as dbt writes it into SQL: `2024-01-01 00:00:00+00:00`.
pub fn sql_time(t: OffsetDateTime) -> String {
    format!("{} {:02}:{:02}:{:02}+00:00", t.date(), t.hour(), t.minute(), t.second())
}

/// `2024-01-01`, `2024-01-01 06:00:00` or `2024-01-01T06:00:00[Z]`, in UTC.
pub fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    let bad = || format!("`{text}` is not a date or time; write `2024-01-01` or `2024-01-01 06:00:00`");
    let t = text.trim().trim_end_matches('Z').trim_end_matches("+00:00");
    let (date, clock) = t.split_once([' ', 'T']).unwrap_or((t, "00:00:00"));
    let mut d = date.split('-').map(|p| p.parse::<i32>().map_err(|_| bad()));
    let (y, m, day) = (d.next().ok_or_else(bad)??, d.next().ok_or_else(bad)??, d.next().ok_or_else(bad)??);
    let mut c = clock.split(':').map(|p| p.split('.').next().unwrap_or("0").parse::<u8>().map_err(|_| bad()));
    let (h, min, s) = (c.next().unwrap_or(Ok(0))?, c.next().unwrap_or(Ok(0))?, c.next().unwrap_or(Ok(0))?);
    let month = u8::try_from(m).ok().and_then(|m| Month::try_from(m).ok()).ok_or_else(bad)?;
    let date = Date::from_calendar_date(y, month, u8::try_from(day).map_err(|_| bad())?).map_err(|_| bad())?;
    let time = Time::from_hms(h, min, s).map_err(|_| bad())?;
    Ok(PrimitiveDateTime::new(date, time).assume_utc())
}

/// The start of the batch holding `t`.
fn truncate(t: OffsetDateTime, size: &str) -> OffsetDateTime {
    let date = t.date();
    let (date, hour) = match size {
        "hour" => (date, t.hour()),
        "day" => (date, 0),
        "month" => (date.replace_day(1).unwrap_or(date), 0),
        _ => (date.replace_day(1).and_then(|d| d.replace_month(Month::January)).unwrap_or(date), 0),
    };
    PrimitiveDateTime::new(date, Time::from_hms(hour, 0, 0).unwrap_or(Time::MIDNIGHT)).assume_utc()
}

/// `t` moved by `n` batches (`t` at a batch start).
fn offset(t: OffsetDateTime, size: &str, n: i64) -> OffsetDateTime {
    match size {
        "hour" => t + time::Duration::hours(n),
        "day" => t + time::Duration::days(n),
        _ => {
            let months = if size == "month" { n } else { 12 * n };
            let index = i64::from(t.year()) * 12 + i64::from(t.month() as u8) - 1 + months;
            let (year, month) = (index.div_euclid(12) as i32, (index.rem_euclid(12) + 1) as u8);
            let month = Month::try_from(month).unwrap_or(Month::January);
            let date = Date::from_calendar_date(year, month, 1).unwrap_or(t.date());
            PrimitiveDateTime::new(date, t.time()).assume_utc()
        }
    }
}

/// The batches of a run, as dbt's `MicrobatchBuilder` cuts them: from `--event-time-start`, or
/// `begin` on a first build, or `lookback` batches before the current one; to
/// `--event-time-end` or the end of the current batch. The last batch may be shorter.
pub fn batches(
    c: &MicrobatchConfig,
    incremental: bool,
    now: OffsetDateTime,
    range: (Option<OffsetDateTime>, Option<OffsetDateTime>),
) -> Result<Vec<Batch>, String> {
    let size = c.batch_size.as_str();
    let end = range.1.unwrap_or_else(|| {
        let start = truncate(now, size);
        if start == now { now } else { offset(start, size, 1) }
    });
    let start = match range.0 {
        Some(s) => truncate(s, size),
        None if !incremental => truncate(parse_time(&c.begin).map_err(|e| format!("`begin`: {e}"))?, size),
        // The batch ending at `end` counts as the current one.
        None => {
            let current = if truncate(end, size) == end { 1 } else { 0 };
            offset(truncate(end, size), size, -i64::from(c.lookback + current))
        }
    };
    let mut out = Vec::new();
    let mut current = start;
    while current < end {
        let next = offset(current, size, 1).min(end);
        out.push(Batch { start: current, end: next });
        current = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(size: &str, lookback: u32) -> MicrobatchConfig {
        MicrobatchConfig { event_time: "at".into(), batch_size: size.into(), begin: "2024-01-30".into(), lookback }
    }

    fn show(b: &[Batch]) -> Vec<String> {
        b.iter().map(|b| format!("{} .. {}", sql_time(b.start), sql_time(b.end))).collect()
    }

    #[test]
    fn batches_as_dbt_cuts_them() {
        let now = parse_time("2024-02-02 10:30:00").unwrap();
        // First build: begin to the end of the current batch.
        assert_eq!(
            show(&batches(&config("day", 1), false, now, (None, None)).unwrap()),
            [
                "2024-01-30 00:00:00+00:00 .. 2024-01-31 00:00:00+00:00",
                "2024-01-31 00:00:00+00:00 .. 2024-02-01 00:00:00+00:00",
                "2024-02-01 00:00:00+00:00 .. 2024-02-02 00:00:00+00:00",
                "2024-02-02 00:00:00+00:00 .. 2024-02-03 00:00:00+00:00",
            ]
        );
        // Incremental: the current batch and `lookback` before it.
        assert_eq!(batches(&config("day", 2), true, now, (None, None)).unwrap().len(), 3);
        // An explicit range; the last batch stops at its end.
        let range = (Some(parse_time("2023-11-15").unwrap()), Some(parse_time("2024-01-10T00:00:00Z").unwrap()));
        assert_eq!(
            show(&batches(&config("month", 1), true, now, range).unwrap()),
            [
                "2023-11-01 00:00:00+00:00 .. 2023-12-01 00:00:00+00:00",
                "2023-12-01 00:00:00+00:00 .. 2024-01-01 00:00:00+00:00",
                "2024-01-01 00:00:00+00:00 .. 2024-01-10 00:00:00+00:00",
            ]
        );
        assert_eq!(
            show(&batches(&config("hour", 0), true, now, (None, None)).unwrap()),
            ["2024-02-02 10:00:00+00:00 .. 2024-02-02 11:00:00+00:00"]
        );
        assert_eq!(batches(&config("year", 1), false, now, (None, None)).unwrap().len(), 1);
        assert!(parse_time("2024-13-01").is_err());
        assert!(
            batches(&MicrobatchConfig { begin: "soon".into(), ..config("day", 1) }, false, now, (None, None))
                .unwrap_err()
                .contains("`begin`")
        );
    }
}
