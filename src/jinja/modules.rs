//! Python-compatible helpers dbt templates rely on: `modules.datetime`, `modules.re`,
//! `modules.itertools`, mutable lists/dicts (`{% do list.append(x) %}`) and Python string/dict
//! methods (through `minijinja_contrib::pycompat`).
//!
//! Not supported: arithmetic between datetimes and timedeltas (`a - b`); use SQL date functions.

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value, ValueKind};
use minijinja::{Error, ErrorKind, State};
use std::fmt;
use std::sync::{Arc, Mutex};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

pub fn unknown_method(state: &mut State, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

pub fn modules_value() -> Value {
    crate::jinja::vmap([
        ("datetime", Value::from_object(DatetimeModule)),
        ("re", Value::from_object(ReModule)),
        ("itertools", Value::from_object(Itertools)),
        ("pytz", crate::jinja::vmap([("utc", Value::from("UTC"))])),
    ])
}

/// `run_started_at` from an RFC 3339 string.
pub fn datetime_value(rfc3339: &str) -> Value {
    let dt = OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Value::from_object(DateTime { dt: PrimitiveDateTime::new(dt.date(), dt.time()), utc: true, date_only: false })
}

#[derive(Debug, Clone)]
struct DateTime {
    dt: PrimitiveDateTime,
    utc: bool,
    date_only: bool,
}

impl DateTime {
    fn strftime(&self, fmt: &str) -> String {
        let d = self.dt;
        let mut out = String::new();
        let mut chars = fmt.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('Y') => out.push_str(&format!("{:04}", d.year())),
                Some('y') => out.push_str(&format!("{:02}", d.year() % 100)),
                Some('m') => out.push_str(&format!("{:02}", u8::from(d.month()))),
                Some('d') => out.push_str(&format!("{:02}", d.day())),
                Some('H') => out.push_str(&format!("{:02}", d.hour())),
                Some('I') => out.push_str(&format!("{:02}", (d.hour() + 11) % 12 + 1)),
                Some('M') => out.push_str(&format!("{:02}", d.minute())),
                Some('S') => out.push_str(&format!("{:02}", d.second())),
                Some('f') => out.push_str(&format!("{:06}", d.microsecond())),
                Some('j') => out.push_str(&format!("{:03}", d.ordinal())),
                Some('p') => out.push_str(if d.hour() < 12 { "AM" } else { "PM" }),
                Some('B') => out.push_str(&format!("{}", d.month())),
                Some('b') => out.push_str(&format!("{}", d.month())[..3]),
                Some('A') => out.push_str(&format!("{}", d.weekday())),
                Some('a') => out.push_str(&format!("{}", d.weekday())[..3]),
                Some('w') => out.push_str(&d.weekday().number_days_from_sunday().to_string()),
                Some('z') => out.push_str(if self.utc { "+0000" } else { "" }),
                Some('Z') => out.push_str(if self.utc { "UTC" } else { "" }),
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        out
    }

    fn isoformat(&self) -> String {
        if self.date_only {
            return self.strftime("%Y-%m-%d");
        }
        let base = if self.dt.microsecond() > 0 { self.strftime("%Y-%m-%dT%H:%M:%S.%f") } else { self.strftime("%Y-%m-%dT%H:%M:%S") };
        if self.utc { format!("{base}+00:00") } else { base }
    }
}

impl Object for DateTime {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let d = self.dt;
        Some(Value::from(match key.as_str()? {
            "year" => d.year() as i64,
            "month" => u8::from(d.month()) as i64,
            "day" => d.day() as i64,
            "hour" => d.hour() as i64,
            "minute" => d.minute() as i64,
            "second" => d.second() as i64,
            "microsecond" => d.microsecond() as i64,
            _ => return None,
        }))
    }
    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "strftime" => Ok(Value::from(self.strftime(args.first().and_then(|v| v.as_str()).unwrap_or("")))),
            "isoformat" => Ok(Value::from(self.isoformat())),
            "date" => Ok(Value::from_object(DateTime { date_only: true, ..(**self).clone() })),
            "timestamp" => Ok(Value::from(self.dt.assume_utc().unix_timestamp())),
            "weekday" => Ok(Value::from(self.dt.weekday().number_days_from_monday())),
            "isoweekday" => Ok(Value::from(self.dt.weekday().number_from_monday())),
            "astimezone" | "replace" => Ok(Value::from_object((**self).clone())),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.date_only {
            return f.write_str(&self.strftime("%Y-%m-%d"));
        }
        let base = if self.dt.microsecond() > 0 { self.strftime("%Y-%m-%d %H:%M:%S.%f") } else { self.strftime("%Y-%m-%d %H:%M:%S") };
        write!(f, "{base}{}", if self.utc { "+00:00" } else { "" })
    }
}

fn now() -> DateTime {
    let now = OffsetDateTime::now_utc();
    DateTime { dt: PrimitiveDateTime::new(now.date(), now.time()), utc: true, date_only: false }
}

fn parse_datetime(s: &str) -> Option<PrimitiveDateTime> {
    let s = s.trim().replace('T', " ");
    let (date, time) = s.split_once(' ').unwrap_or((&s, "00:00:00"));
    let mut dp = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (dp.next()??, dp.next()??, dp.next()??);
    let time = time.split(['+', 'Z']).next().unwrap_or("00:00:00");
    let mut tp = time.split(':');
    let h = tp.next().and_then(|p| p.parse::<u8>().ok()).unwrap_or(0);
    let mi = tp.next().and_then(|p| p.parse::<u8>().ok()).unwrap_or(0);
    let sec = tp.next().unwrap_or("0");
    let (sec, frac) = sec.split_once('.').unwrap_or((sec, "0"));
    let micro = format!("{frac:0<6}")[..6].parse::<u32>().unwrap_or(0);
    let date = Date::from_calendar_date(y as i32, Month::try_from(m as u8).ok()?, d as u8).ok()?;
    let time = Time::from_hms_micro(h, mi, sec.parse().ok()?, micro).ok()?;
    Some(PrimitiveDateTime::new(date, time))
}

#[derive(Debug)]
struct DatetimeModule;

impl Object for DatetimeModule {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "datetime" => Some(Value::from_object(DatetimeClass { date_only: false })),
            "date" => Some(Value::from_object(DatetimeClass { date_only: true })),
            "timedelta" => Some(Value::from_function(|kwargs: Kwargs| -> Result<Value, Error> {
                let mut seconds = 0i64;
                for (k, mult) in [("weeks", 604_800), ("days", 86_400), ("hours", 3600), ("minutes", 60), ("seconds", 1)] {
                    seconds += kwargs.get::<Option<i64>>(k)?.unwrap_or(0) * mult;
                }
                Ok(crate::jinja::vmap([("total_seconds", Value::from(seconds)), ("days", Value::from(seconds / 86_400))]))
            })),
            "timezone" => Some(crate::jinja::vmap([("utc", Value::from("UTC"))])),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct DatetimeClass {
    date_only: bool,
}

impl Object for DatetimeClass {
    fn call(self: &Arc<Self>, _state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let n = |i: usize, default: i64| args.get(i).and_then(|v| v.as_i64()).unwrap_or(default);
        let date = Date::from_calendar_date(
            n(0, 1970) as i32,
            Month::try_from(n(1, 1) as u8).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?,
            n(2, 1) as u8,
        )
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
        let time = Time::from_hms(n(3, 0) as u8, n(4, 0) as u8, n(5, 0) as u8)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
        Ok(Value::from_object(DateTime { dt: PrimitiveDateTime::new(date, time), utc: false, date_only: self.date_only }))
    }
    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "now" | "utcnow" | "today" => Ok(Value::from_object(DateTime { date_only: self.date_only, ..now() })),
            "strptime" | "fromisoformat" => {
                let s = args.first().and_then(|v| v.as_str()).unwrap_or("");
                let dt = parse_datetime(s)
                    .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, format!("cannot parse `{s}` as a date/time")))?;
                Ok(Value::from_object(DateTime { dt, utc: false, date_only: self.date_only }))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[derive(Debug)]
struct ReModule;

fn compile_regex(pattern: &str, flags: i64) -> Result<regex::Regex, Error> {
    let mut prefix = String::new();
    if flags & 2 != 0 {
        prefix.push_str("(?i)");
    }
    if flags & 8 != 0 {
        prefix.push_str("(?m)");
    }
    if flags & 16 != 0 {
        prefix.push_str("(?s)");
    }
    regex::Regex::new(&format!("{prefix}{pattern}"))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("bad regular expression: {e}")))
}

fn re_call(method: &str, re: &regex::Regex, args: &[Value]) -> Result<Value, Error> {
    let s = |i: usize| args.get(i).map(|v| v.to_string()).unwrap_or_default();
    match method {
        "match" | "search" | "fullmatch" => {
            let text = s(0);
            let caps = re.captures(&text);
            Ok(match caps {
                Some(c)
                    if (method != "match" || c.get(0).is_some_and(|m| m.start() == 0))
                        && (method != "fullmatch" || c.get(0).is_some_and(|m| m.start() == 0 && m.end() == text.len())) =>
                {
                    let groups: Vec<Value> = c.iter().map(|m| m.map_or(Value::from(()), |m| Value::from(m.as_str()))).collect();
                    Value::from_object(ReMatch(groups))
                }
                _ => Value::from(()),
            })
        }
        "findall" => {
            let text = s(0);
            Ok(Value::from(
                re.captures_iter(&text)
                    .map(|c| match c.len() {
                        1 => Value::from(c.get(0).map_or("", |m| m.as_str())),
                        2 => Value::from(c.get(1).map_or("", |m| m.as_str())),
                        _ => Value::from(c.iter().skip(1).map(|m| Value::from(m.map_or("", |m| m.as_str()))).collect::<Vec<_>>()),
                    })
                    .collect::<Vec<_>>(),
            ))
        }
        "sub" => {
            let repl = regex::Regex::new(r"\\(\d+)").map(|r| r.replace_all(&s(0), "$${$1}").into_owned()).unwrap_or_else(|_| s(0));
            let repl = repl.replace("$${", "${");
            Ok(Value::from(re.replace_all(&s(1), repl.as_str()).into_owned()))
        }
        "split" => Ok(Value::from(re.split(&s(0)).map(Value::from).collect::<Vec<_>>())),
        _ => Err(Error::from(ErrorKind::UnknownMethod)),
    }
}

impl Object for ReModule {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(Value::from(match key.as_str()? {
            "I" | "IGNORECASE" => 2,
            "M" | "MULTILINE" => 8,
            "S" | "DOTALL" => 16,
            "X" | "VERBOSE" => 64,
            _ => return None,
        }))
    }
    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let (args, kwargs) = match args.last().and_then(|a| Kwargs::try_from(a.clone()).ok()) {
            Some(k) => (&args[..args.len() - 1], Some(k)),
            None => (args, None),
        };
        let pattern = args.first().map(|v| v.to_string()).unwrap_or_default();
        let flag_pos = match method {
            "sub" => 4,
            "compile" => 1,
            _ => 2,
        };
        let flags = args
            .get(flag_pos)
            .and_then(|v| v.as_i64())
            .or_else(|| kwargs.and_then(|k| k.get::<Option<i64>>("flags").ok().flatten()))
            .unwrap_or(0);
        let re = compile_regex(&pattern, flags)?;
        if method == "compile" {
            return Ok(Value::from_object(RePattern(re)));
        }
        let rest = if method == "sub" { &args[1..args.len().min(3)] } else { &args[1..args.len().min(2)] };
        re_call(method, &re, rest)
    }
}

#[derive(Debug)]
struct RePattern(regex::Regex);

impl Object for RePattern {
    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        re_call(method, &self.0, args)
    }
}

#[derive(Debug)]
struct ReMatch(Vec<Value>);

impl Object for ReMatch {
    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "group" => {
                let i = args.first().and_then(|v| v.as_i64()).unwrap_or(0) as usize;
                Ok(self.0.get(i).cloned().unwrap_or_default())
            }
            "groups" => Ok(Value::from(self.0[1..].to_vec())),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[derive(Debug)]
struct Itertools;

impl Object for Itertools {
    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let lists = |args: &[Value]| -> Result<Vec<Vec<Value>>, Error> { args.iter().map(|a| Ok(a.try_iter()?.collect())).collect() };
        match method {
            "chain" => Ok(Value::from(lists(args)?.into_iter().flatten().collect::<Vec<_>>())),
            "product" => {
                let mut acc: Vec<Vec<Value>> = vec![vec![]];
                for list in lists(args)? {
                    acc = acc.into_iter().flat_map(|prefix| list.iter().map(move |v| [prefix.clone(), vec![v.clone()]].concat())).collect();
                }
                Ok(Value::from(acc.into_iter().map(Value::from).collect::<Vec<_>>()))
            }
            "combinations" => {
                let items: Vec<Value> = args.first().map(|a| a.try_iter().map(|i| i.collect()).unwrap_or_default()).unwrap_or_default();
                let r = args.get(1).and_then(|v| v.as_i64()).unwrap_or(2) as usize;
                let mut out = Vec::new();
                combinations(&items, r, 0, &mut vec![], &mut out);
                Ok(Value::from(out))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

fn combinations(items: &[Value], r: usize, start: usize, cur: &mut Vec<Value>, out: &mut Vec<Value>) {
    if cur.len() == r {
        out.push(Value::from(cur.clone()));
        return;
    }
    for i in start..items.len() {
        cur.push(items[i].clone());
        combinations(items, r, i + 1, cur, out);
        cur.pop();
    }
}

/// A list that `append`/`extend`/`pop` can change, for `{% set l = [] %}{% do l.append(x) %}`
/// (see [`super::literals`]).
#[derive(Debug, Default)]
pub struct MutList(Mutex<Vec<Value>>);

impl MutList {
    /// A changeable copy of `items` (any iterable; none gives an empty list).
    pub fn from_value(items: Option<Value>) -> Value {
        let items: Vec<Value> = items.and_then(|v| v.try_iter().ok().map(Iterator::collect)).unwrap_or_default();
        Value::from_object(MutList(Mutex::new(items)))
    }
}

impl Object for MutList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let items = self.0.lock().ok()?;
        let i = key.as_i64()?;
        let i = if i < 0 { items.len() as i64 + i } else { i };
        items.get(usize::try_from(i).ok()?).cloned()
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.lock().map(|v| v.clone()).unwrap_or_default())
    }
    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let mut items = self.0.lock().map_err(|_| Error::from(ErrorKind::InvalidOperation))?;
        match method {
            "append" => items.push(args.first().cloned().unwrap_or_default()),
            "extend" => {
                items.extend(args.first().map(|a| a.try_iter().map(|i| i.collect::<Vec<_>>()).unwrap_or_default()).unwrap_or_default())
            }
            "insert" => {
                let i = args.first().and_then(|v| v.as_i64()).unwrap_or(0).clamp(0, items.len() as i64) as usize;
                items.insert(i, args.get(1).cloned().unwrap_or_default());
            }
            "pop" => {
                let i = args.first().and_then(|v| v.as_i64()).map_or(items.len().saturating_sub(1), |i| i as usize);
                return Ok(if i < items.len() { items.remove(i) } else { Value::from(()) });
            }
            "remove" => {
                if let Some(p) = items.iter().position(|v| Some(v) == args.first()) {
                    items.remove(p);
                }
            }
            "count" => {
                return Ok(Value::from(items.iter().filter(|v| Some(*v) == args.first()).count()));
            }
            "index" => {
                return Ok(Value::from(items.iter().position(|v| Some(v) == args.first()).map_or(-1, |p| p as i64)));
            }
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        }
        Ok(Value::from(""))
    }
}

/// A dict that `update`/`pop`/`setdefault` can change.
#[derive(Debug, Default)]
pub struct MutDict(Mutex<indexmap::IndexMap<Value, Value>>);

impl MutDict {
    /// A changeable copy of `map` (none gives an empty dict).
    pub fn from_value(map: Option<Value>) -> Value {
        let pairs: Vec<(Value, Value)> = map
            .filter(|m| m.kind() == ValueKind::Map)
            .and_then(|m| m.try_iter().ok().map(|keys| keys.map(|k| (k.clone(), m.get_item(&k).unwrap_or_default())).collect()))
            .unwrap_or_default();
        Self::from_pairs(pairs)
    }

    pub fn from_pairs(pairs: Vec<(Value, Value)>) -> Value {
        Value::from_object(MutDict(Mutex::new(pairs.into_iter().collect())))
    }
}

impl Object for MutDict {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0.lock().ok()?.get(key).cloned()
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.lock().map(|m| m.keys().cloned().collect()).unwrap_or_default())
    }
    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let mut map = self.0.lock().map_err(|_| Error::from(ErrorKind::InvalidOperation))?;
        let pairs = |v: &Value| -> Vec<(Value, Value)> {
            if let Ok(k) = Kwargs::try_from(v.clone()) {
                return k.args().map(|a| (Value::from(a), k.peek::<Value>(a).unwrap_or_default())).collect();
            }
            if v.kind() == ValueKind::Map {
                return v.try_iter().map(|it| it.map(|k| (k.clone(), v.get_item(&k).unwrap_or_default())).collect()).unwrap_or_default();
            }
            Vec::new()
        };
        match method {
            "update" => {
                for a in args {
                    for (k, v) in pairs(a) {
                        map.insert(k, v);
                    }
                }
                Ok(Value::from(""))
            }
            "pop" => Ok(args.first().and_then(|k| map.shift_remove(k)).or_else(|| args.get(1).cloned()).unwrap_or_default()),
            "setdefault" => {
                let k = args.first().cloned().unwrap_or_default();
                Ok(map.entry(k).or_insert_with(|| args.get(1).cloned().unwrap_or_default()).clone())
            }
            "get" => Ok(args.first().and_then(|k| map.get(k).cloned()).or_else(|| args.get(1).cloned()).unwrap_or_default()),
            "items" => Ok(Value::from(map.iter().map(|(k, v)| Value::from(vec![k.clone(), v.clone()])).collect::<Vec<_>>())),
            "keys" => Ok(Value::from(map.keys().cloned().collect::<Vec<_>>())),
            "values" => Ok(Value::from(map.values().cloned().collect::<Vec<_>>())),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}
