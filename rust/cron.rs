//! Cron expressions evaluated on the wall clock of an IANA time zone.
//!
//! Users write schedules in local time ("every day at 02:30 in Paris"), so fields are matched
//! against local date-times. Instants are then found one constant-UTC-offset segment at a time:
//! inside a segment local time is a plain shift of UTC, and the daylight-saving rules only have
//! to be applied at the segment boundaries, which keeps runs from being skipped or doubled.
//!
//! DST policy: a local time that falls in a spring-forward gap does not exist, so every match
//! inside the gap collapses into one run at the first instant after the gap (03:00 local when
//! clocks jump 02:00→03:00), and the pattern then continues normally. In a fall-back overlap the
//! repeated local times fire only in their first occurrence, unless the hour field is literally
//! `*`: such interval-like patterns (`0 * * * *`, `*/15 * * * *`) follow real elapsed time and
//! fire in both occurrences. Hence `30 2 * * *` runs exactly once on both transition days, and
//! `0 * * * *` runs 23 times on a spring-forward day and 25 times on a fall-back day.
//!
//! `cron_diff_tests.rs` checks this module against the croner crate; docs/DESIGN.md says why
//! it is kept rather than replaced by it.

use std::fmt;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// Far enough for leap-day patterns (8 years apart around 2100) yet bounded, so that a pattern
/// which never matches cannot loop forever.
const HORIZON_DAYS: i64 = 3660;
const DAY_SECS: i64 = 86_400;
/// UTC offsets are probed a day apart. In the bundled tz database (checked 1900-2100) offset
/// changes are at least six days apart, so a probe cannot step over a change and its reversal.
const PROBE_STEP_SECS: i64 = DAY_SECS;
/// 2000-01-01T00:00:00Z: a fixed reference for the "never fires" check at parse time.
const Y2000_MS: i64 = 946_684_800_000;

/// A cron pattern that can never be used: the message names the pattern, field and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError(pub String);

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CronError {}

/// A parsed cron pattern bound to a time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    pattern: String,
    tz_name: String,
    tz: Tz,
    fields: Fields,
}

impl Cron {
    /// `pattern`: 5 fields (minute hour day-of-month month day-of-week; seconds = 0) or 6 fields
    /// (leading seconds), or a macro. `tz`: an IANA zone name ("UTC", "Europe/Paris").
    pub fn parse(pattern: &str, tz: &str) -> Result<Cron, CronError> {
        let pattern = pattern.trim();
        let fields = Fields::parse(pattern).map_err(|msg| CronError(format!("invalid cron pattern '{pattern}': {msg}")))?;
        let tz_name = tz.trim();
        let zone: Tz = tz_name.parse().map_err(|_| CronError(format!("unknown time zone '{tz_name}'")))?;
        let cron = Cron { pattern: pattern.to_string(), tz_name: tz_name.to_string(), tz: zone, fields };
        cron.ensure_fires()?;
        Ok(cron)
    }

    /// The first instant strictly after `after_ms` (Unix epoch milliseconds, UTC) at which the
    /// pattern fires, in epoch ms (always a whole second). None if it never fires within ~10 years.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let start = after_ms.div_euclid(1000).checked_add(1)?;
        let horizon = start.checked_add(HORIZON_DAYS * DAY_SECS)?;
        // Every instant touched below lies within a couple of days of [start, horizon]; checking
        // the ends once lets the helpers assume representable times.
        naive_at(start.checked_sub(2 * DAY_SECS)?)?;
        naive_at(horizon.checked_add(2 * DAY_SECS)?)?;
        let limit = naive_at(horizon)?.date();

        let mut t = start;
        let mut off = self.offset_at(t);
        let mut min_local = self.first_unseen_local(t, off);
        loop {
            let local = self.fields.next_local(naive_at(min_local)?, limit)?;
            let local_secs = local.and_utc().timestamp();
            let candidate = local_secs - off;
            let Some(change) = self.first_offset_change(t, candidate, off) else {
                return Some(candidate * 1000);
            };
            // The segment [t, change) holds no match; apply the DST policy at its end.
            let new_off = self.offset_at(change);
            if new_off > off {
                // Spring forward: local [change+off, change+new_off) never happens.
                if local_secs < change + new_off {
                    return Some(change * 1000);
                }
                min_local = change + new_off;
            } else if self.fields.every_hour {
                min_local = change + new_off;
            } else {
                // Fall back: local [change+new_off, change+off) repeats; fire only the first time.
                min_local = min_local.max(change + off);
            }
            t = change;
            off = new_off;
        }
    }

    /// The pattern as given (trimmed).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The time zone name as given (trimmed).
    pub fn tz_name(&self) -> &str {
        &self.tz_name
    }

    /// A pattern like `0 0 30 2 *` parses field by field but would silently never run;
    /// rejecting it at parse time surfaces the mistake when the schedule is created.
    fn ensure_fires(&self) -> Result<(), CronError> {
        let now_ms = Utc::now().timestamp_millis();
        if self.next_after(Y2000_MS).is_none() || self.next_after(now_ms).is_none() {
            return Err(CronError(format!("cron pattern '{}' never fires", self.pattern)));
        }
        Ok(())
    }

    /// Seconds east of UTC at instant `t` (epoch seconds, known representable).
    fn offset_at(&self, t: i64) -> i64 {
        naive_at(t).map_or(0, |utc| i64::from(self.tz.offset_from_utc_datetime(&utc).fix().local_minus_utc()))
    }

    /// The first instant in (from, to] whose UTC offset differs from `off`, if any.
    fn first_offset_change(&self, from: i64, to: i64, off: i64) -> Option<i64> {
        let mut lo = from;
        while lo < to {
            let hi = (lo + PROBE_STEP_SECS).min(to);
            if self.offset_at(hi) != off {
                return Some(self.bisect_change(lo, hi, off));
            }
            lo = hi;
        }
        None
    }

    /// Narrows (lo, hi] (offset `off` at lo, another at hi) to the exact second of the change.
    fn bisect_change(&self, mut lo: i64, mut hi: i64, off: i64) -> i64 {
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.offset_at(mid) != off {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// The local time from which to search when starting at `t`. Normally local(t); but when
    /// `t` is in the second pass through a fall-back overlap, a fixed-hour pattern already had
    /// its chance at these local times, so the search starts after the repeated stretch.
    fn first_unseen_local(&self, t: i64, off: i64) -> i64 {
        let local = t + off;
        if self.fields.every_hour {
            return local;
        }
        let Some(naive) = naive_at(local) else {
            return local;
        };
        let LocalResult::Ambiguous(a, b) = self.tz.from_local_datetime(&naive) else {
            return local;
        };
        let first = if a.timestamp() <= b.timestamp() { a } else { b };
        let first_ts = first.timestamp();
        if first_ts >= t {
            return local;
        }
        let first_off = i64::from(first.offset().fix().local_minus_utc());
        match self.first_offset_change(first_ts, t, first_off) {
            Some(change) => local.max(change + first_off),
            None => local,
        }
    }
}

/// Naive date-time for epoch seconds, used both for UTC instants and for local wall-clock
/// times encoded as seconds (local arithmetic is plain shifting within a segment).
fn naive_at(secs: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(secs, 0).map(|dt| dt.naive_utc())
}

/// Smallest set bit of `mask` at or above `from`.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = mask >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

/// The parsed fields as bitmasks (bit n set = value n matches), so finding the next matching
/// hour/minute/second is a shift and a trailing-zero count rather than a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    /// Sunday = bit 0; the alias 7 is folded into it.
    weekdays: u64,
    /// Vixie cron: with both day fields restricted, a day matches when either matches.
    days_restricted: bool,
    weekdays_restricted: bool,
    /// Hour field literally `*`: the pattern is interval-like and fires in both passes of a
    /// fall-back overlap.
    every_hour: bool,
}

impl Fields {
    fn parse(pattern: &str) -> Result<Fields, String> {
        let expanded = expand_macro(pattern)?;
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let [sec, min, hour, dom, month, dow] = match parts[..] {
            [min, hour, dom, month, dow] => ["0", min, hour, dom, month, dow],
            [sec, min, hour, dom, month, dow] => [sec, min, hour, dom, month, dow],
            _ => return Err(format!("expected 5 fields (minute hour day month weekday) or 6 (with leading seconds), got {}", parts.len())),
        };
        let mut weekdays = parse_field(&WEEKDAY, dow)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Fields {
            seconds: parse_field(&SECOND, sec)?,
            minutes: parse_field(&MINUTE, min)?,
            hours: parse_field(&HOUR, hour)?,
            days: parse_field(&DAY, dom)?,
            months: parse_field(&MONTH, month)?,
            weekdays,
            days_restricted: is_restricted(dom),
            weekdays_restricted: is_restricted(dow),
            every_hour: hour == "*",
        })
    }

    /// The first local date-time at or after `from` matching every field, up to `limit`.
    fn next_local(&self, from: NaiveDateTime, limit: NaiveDate) -> Option<NaiveDateTime> {
        let mut date = from.date();
        let mut time = (from.hour(), from.minute(), from.second());
        loop {
            if date > limit {
                return None;
            }
            if !self.month_matches(date.month()) {
                date = self.next_month_start(date)?;
                time = (0, 0, 0);
                continue;
            }
            if self.day_matches(date) {
                if let Some(t) = self.time_in_day(time) {
                    return Some(date.and_time(t));
                }
            }
            date = date.succ_opt()?;
            time = (0, 0, 0);
        }
    }

    /// The first matching time of day at or after (h, m, s), if any is left in the day.
    fn time_in_day(&self, (mut h, mut m, mut s): (u32, u32, u32)) -> Option<NaiveTime> {
        loop {
            let nh = next_bit(self.hours, h).filter(|&v| v <= 23)?;
            if nh != h {
                (h, m, s) = (nh, 0, 0);
            }
            let Some(nm) = next_bit(self.minutes, m) else {
                (h, m, s) = (h + 1, 0, 0);
                continue;
            };
            if nm != m {
                (m, s) = (nm, 0);
            }
            match next_bit(self.seconds, s) {
                Some(ns) => return NaiveTime::from_hms_opt(h, m, ns),
                None => (m, s) = (m + 1, 0),
            }
        }
    }

    fn month_matches(&self, month: u32) -> bool {
        self.months & (1 << month) != 0
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.days_restricted && self.weekdays_restricted {
            dom || dow
        } else {
            dom && dow
        }
    }

    fn next_month_start(&self, date: NaiveDate) -> Option<NaiveDate> {
        match next_bit(self.months, date.month() + 1) {
            Some(month) => NaiveDate::from_ymd_opt(date.year(), month, 1),
            None => NaiveDate::from_ymd_opt(date.year() + 1, self.months.trailing_zeros(), 1),
        }
    }

    #[cfg(test)]
    fn matches(&self, t: NaiveDateTime) -> bool {
        self.seconds & (1 << t.second()) != 0
            && self.minutes & (1 << t.minute()) != 0
            && self.hours & (1 << t.hour()) != 0
            && self.month_matches(t.month())
            && self.day_matches(t.date())
    }
}

/// Vixie cron's test for "restricted": the field does not start with `*` (or `?`).
fn is_restricted(field: &str) -> bool {
    !(field.starts_with('*') || field.starts_with('?'))
}

fn expand_macro(pattern: &str) -> Result<&str, String> {
    if !pattern.starts_with('@') {
        return Ok(pattern);
    }
    match pattern.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Ok("0 0 1 1 *"),
        "@monthly" => Ok("0 0 1 * *"),
        "@weekly" => Ok("0 0 * * 0"),
        "@daily" | "@midnight" => Ok("0 0 * * *"),
        "@hourly" => Ok("0 * * * *"),
        _ => Err(format!("unknown macro '{pattern}' (supported: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)")),
    }
}

/// What one field accepts.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// Upper end of `*` and `N/step`: 6 for day-of-week, where 7 is only an alias of Sunday.
    star_max: u32,
    /// Names for min, min+1, ... (uppercase).
    names: &'static [&'static str],
    names_hint: &'static str,
    allows_question: bool,
}

const SECOND: FieldSpec = FieldSpec { name: "second", min: 0, max: 59, star_max: 59, names: &[], names_hint: "", allows_question: false };
const MINUTE: FieldSpec = FieldSpec { name: "minute", ..SECOND };
const HOUR: FieldSpec = FieldSpec { name: "hour", max: 23, star_max: 23, ..SECOND };
const DAY: FieldSpec = FieldSpec { name: "day-of-month", min: 1, max: 31, star_max: 31, allows_question: true, ..SECOND };
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    star_max: 12,
    names: &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
    names_hint: " or a month name (JAN-DEC)",
    allows_question: false,
};
const WEEKDAY: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    star_max: 6,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    names_hint: " or a day name (SUN-SAT)",
    allows_question: true,
};

fn parse_field(spec: &FieldSpec, text: &str) -> Result<u64, String> {
    let mut mask = 0;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{} value '{text}' has an empty list item", spec.name));
        }
        mask |= parse_item(spec, item)?;
    }
    Ok(mask)
}

/// One list item: `*` | `?` | `N` | `A-B`, optionally followed by `/STEP`.
fn parse_item(spec: &FieldSpec, item: &str) -> Result<u64, String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(parse_step(spec, item, step)?)),
        None => (item, None),
    };
    let (lo, hi) = parse_range(spec, item, range, step.is_some())?;
    let step = step.unwrap_or(1);
    Ok((lo..=hi).step_by(step as usize).fold(0, |mask, v| mask | 1 << v))
}

fn parse_range(spec: &FieldSpec, item: &str, range: &str, stepped: bool) -> Result<(u32, u32), String> {
    if range == "*" || range == "?" {
        if range == "?" && !spec.allows_question {
            return Err(format!("{} value '{item}': '?' is only allowed in day-of-month and day-of-week", spec.name));
        }
        return Ok((spec.min, spec.star_max));
    }
    if let Some((a, b)) = range.split_once('-') {
        let (lo, mut hi) = (parse_value(spec, a)?, parse_value(spec, b)?);
        // The name SUN closing a range is Sunday as 7: `FRI-SUN` = 5-7, `MON-SUN` = every day.
        if lo > hi && spec.max == 7 && b.eq_ignore_ascii_case("SUN") {
            hi = 7;
        }
        if lo > hi {
            return Err(format!(
                "{} value '{item}': wrapping ranges (start after end) are not supported; \
                 split it, e.g. '{lo}-{},{}-{hi}'",
                spec.name, spec.star_max, spec.min
            ));
        }
        return Ok((lo, hi));
    }
    let value = parse_value(spec, range)?;
    // `N/step` means N through the end of the field.
    Ok((value, if stepped { spec.star_max.max(value) } else { value }))
}

fn parse_value(spec: &FieldSpec, token: &str) -> Result<u32, String> {
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
        return match token.parse::<u32>() {
            Ok(v) if (spec.min..=spec.max).contains(&v) => Ok(v),
            _ => Err(format!("{} value '{token}' is out of range {}-{}", spec.name, spec.min, spec.max)),
        };
    }
    spec.names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(token))
        .map(|i| spec.min + i as u32)
        .ok_or_else(|| format!("{} value '{token}' is not a number{}", spec.name, spec.names_hint))
}

/// Steps above the field's maximum (`*/90` minutes) cannot mean what the author intended.
fn parse_step(spec: &FieldSpec, item: &str, step: &str) -> Result<u32, String> {
    let valid = step.bytes().all(|b| b.is_ascii_digit());
    match step.parse::<u32>() {
        Ok(v) if valid && (1..=spec.max).contains(&v) => Ok(v),
        _ => Err(format!("{} value '{item}' has an invalid step '{step}' (expected 1-{})", spec.name, spec.max)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARIS: &str = "Europe/Paris";
    const NEW_YORK: &str = "America/New_York";

    /// Epoch ms of a UTC date-time.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, mo, d).and_then(|date| date.and_hms_opt(h, mi, s)).expect("valid test date").and_utc().timestamp_millis()
    }

    /// Epoch ms of a local wall-clock time that exists exactly once in `tz`.
    fn local(tz: &str, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        let zone: Tz = tz.parse().expect("valid zone");
        let naive = NaiveDate::from_ymd_opt(y, mo, d).and_then(|date| date.and_hms_opt(h, mi, 0)).expect("valid test date");
        zone.from_local_datetime(&naive).single().expect("unambiguous local time").timestamp_millis()
    }

    fn cron(pattern: &str, tz: &str) -> Cron {
        Cron::parse(pattern, tz).unwrap_or_else(|e| panic!("{pattern} in {tz}: {e}"))
    }

    fn next(pattern: &str, tz: &str, after_ms: i64) -> i64 {
        cron(pattern, tz).next_after(after_ms).expect("fires")
    }

    /// The first `n` runs strictly after `after_ms`.
    fn runs(pattern: &str, tz: &str, after_ms: i64, n: usize) -> Vec<i64> {
        let c = cron(pattern, tz);
        let mut out = Vec::with_capacity(n);
        let mut t = after_ms;
        while out.len() < n {
            t = c.next_after(t).expect("fires");
            out.push(t);
        }
        out
    }

    /// All runs in [from_ms, to_ms).
    fn runs_between(c: &Cron, from_ms: i64, to_ms: i64) -> Vec<i64> {
        let mut out = Vec::new();
        let mut t = from_ms - 1;
        while let Some(r) = c.next_after(t) {
            if r >= to_ms {
                break;
            }
            assert!(r > t, "runs must strictly increase");
            out.push(r);
            t = r;
        }
        out
    }

    /// Runs during one local calendar day (local midnight to local midnight).
    fn runs_on_local_day(pattern: &str, tz: &str, y: i32, mo: u32, d: u32) -> Vec<i64> {
        let start = local(tz, y, mo, d, 0, 0);
        let next_day = NaiveDate::from_ymd_opt(y, mo, d).and_then(|date| date.succ_opt()).expect("valid date");
        let end = local(tz, next_day.year(), next_day.month(), next_day.day(), 0, 0);
        runs_between(&cron(pattern, tz), start, end)
    }

    fn err(pattern: &str) -> String {
        match Cron::parse(pattern, "UTC") {
            Ok(_) => panic!("{pattern} should be rejected"),
            Err(e) => e.to_string(),
        }
    }

    // ---- syntax --------------------------------------------------------------------------

    #[test]
    fn cron_accessors_trim() {
        let c = cron("  */5 * * * *\n", " Europe/Paris ");
        assert_eq!(c.pattern(), "*/5 * * * *");
        assert_eq!(c.tz_name(), "Europe/Paris");
        assert_eq!(cron("@daily", "UTC").pattern(), "@daily");
    }

    #[test]
    fn cron_every_minute_is_strictly_after_and_whole_second() {
        let base = utc(2026, 5, 10, 12, 0, 0);
        assert_eq!(next("* * * * *", "UTC", base), utc(2026, 5, 10, 12, 1, 0));
        assert_eq!(next("* * * * *", "UTC", base - 1), base);
        assert_eq!(next("* * * * *", "UTC", base + 59_999), utc(2026, 5, 10, 12, 1, 0));
        assert_eq!(next("* * * * *", "UTC", base + 1), utc(2026, 5, 10, 12, 1, 0));
        assert_eq!(next("* * * * *", "UTC", base + 250) % 1000, 0);
    }

    #[test]
    fn cron_single_values_lists_and_ranges() {
        let base = utc(2026, 5, 10, 12, 7, 0);
        assert_eq!(next("30 14 * * *", "UTC", base), utc(2026, 5, 10, 14, 30, 0));
        assert_eq!(next("30 9 * * *", "UTC", base), utc(2026, 5, 11, 9, 30, 0));
        assert_eq!(
            runs("0,30 * * * *", "UTC", base, 3),
            [utc(2026, 5, 10, 12, 30, 0), utc(2026, 5, 10, 13, 0, 0), utc(2026, 5, 10, 13, 30, 0)]
        );
        assert_eq!(
            runs("10-12 * * * *", "UTC", base, 4),
            [utc(2026, 5, 10, 12, 10, 0), utc(2026, 5, 10, 12, 11, 0), utc(2026, 5, 10, 12, 12, 0), utc(2026, 5, 10, 13, 10, 0)]
        );
        assert_eq!(
            runs("0 8-9,17 * * *", "UTC", base, 4),
            [utc(2026, 5, 10, 17, 0, 0), utc(2026, 5, 11, 8, 0, 0), utc(2026, 5, 11, 9, 0, 0), utc(2026, 5, 11, 17, 0, 0)]
        );
        assert_eq!(next("0 0 15 * *", "UTC", base), utc(2026, 5, 15, 0, 0, 0));
        assert_eq!(next("0 0 1 3 *", "UTC", base), utc(2027, 3, 1, 0, 0, 0));
    }

    #[test]
    fn cron_steps() {
        let base = utc(2026, 5, 10, 12, 0, 0);
        assert_eq!(
            runs("*/15 * * * *", "UTC", base, 5),
            [
                utc(2026, 5, 10, 12, 15, 0),
                utc(2026, 5, 10, 12, 30, 0),
                utc(2026, 5, 10, 12, 45, 0),
                utc(2026, 5, 10, 13, 0, 0),
                utc(2026, 5, 10, 13, 15, 0)
            ]
        );
        assert_eq!(
            runs("1-30/10 * * * *", "UTC", base, 4),
            [utc(2026, 5, 10, 12, 1, 0), utc(2026, 5, 10, 12, 11, 0), utc(2026, 5, 10, 12, 21, 0), utc(2026, 5, 10, 13, 1, 0)]
        );
        // N/step runs from N to the end of the field.
        assert_eq!(
            runs("5/15 * * * *", "UTC", base, 5),
            [
                utc(2026, 5, 10, 12, 5, 0),
                utc(2026, 5, 10, 12, 20, 0),
                utc(2026, 5, 10, 12, 35, 0),
                utc(2026, 5, 10, 12, 50, 0),
                utc(2026, 5, 10, 13, 5, 0)
            ]
        );
        assert_eq!(runs("0 */6 * * *", "UTC", base, 3), [utc(2026, 5, 10, 18, 0, 0), utc(2026, 5, 11, 0, 0, 0), utc(2026, 5, 11, 6, 0, 0)]);
        // Day-of-month steps start at 1; month steps start at January.
        assert_eq!(runs("0 0 */10 * *", "UTC", base, 3), [utc(2026, 5, 11, 0, 0, 0), utc(2026, 5, 21, 0, 0, 0), utc(2026, 5, 31, 0, 0, 0)]);
        assert_eq!(runs("0 0 1 */4 *", "UTC", base, 3), [utc(2026, 9, 1, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0), utc(2027, 5, 1, 0, 0, 0)]);
        // A step larger than the span just yields the start.
        assert_eq!(next("*/59 * * * *", "UTC", base), utc(2026, 5, 10, 12, 59, 0));
    }

    #[test]
    fn cron_six_fields_have_seconds() {
        let base = utc(2026, 5, 10, 12, 0, 0);
        assert_eq!(runs("*/15 * * * * *", "UTC", base, 5), [base + 15_000, base + 30_000, base + 45_000, base + 60_000, base + 75_000]);
        assert_eq!(next("30 0 12 * * *", "UTC", base), utc(2026, 5, 10, 12, 0, 30));
        assert_eq!(next("30 0 12 * * *", "UTC", base + 30_000), utc(2026, 5, 11, 12, 0, 30));
        assert_eq!(next("* * * * * *", "UTC", base + 999), base + 1000);
        // 5 fields means second 0.
        assert_eq!(next("* * * * *", "UTC", base) % 60_000, 0);
    }

    #[test]
    fn cron_month_and_weekday_names() {
        let base = utc(2026, 5, 10, 12, 0, 0); // a Sunday
        assert_eq!(next("0 0 1 jul *", "UTC", base), utc(2026, 7, 1, 0, 0, 0));
        assert_eq!(next("0 0 1 Jan,JUL *", "UTC", base), utc(2026, 7, 1, 0, 0, 0));
        assert_eq!(next("0 0 1 FEB-apr *", "UTC", base), utc(2027, 2, 1, 0, 0, 0));
        assert_eq!(
            runs("0 9 * * MON-FRI", "UTC", base, 6),
            [
                utc(2026, 5, 11, 9, 0, 0),
                utc(2026, 5, 12, 9, 0, 0),
                utc(2026, 5, 13, 9, 0, 0),
                utc(2026, 5, 14, 9, 0, 0),
                utc(2026, 5, 15, 9, 0, 0),
                utc(2026, 5, 18, 9, 0, 0)
            ]
        );
        assert_eq!(next("0 9 * * sat,Sun", "UTC", base), utc(2026, 5, 16, 9, 0, 0));
        assert_eq!(next("0 9 * * wed", "UTC", base), utc(2026, 5, 13, 9, 0, 0));
    }

    #[test]
    fn cron_sunday_is_zero_and_seven() {
        let base = utc(2026, 5, 11, 12, 0, 0); // a Monday
        let sunday = utc(2026, 5, 17, 0, 0, 0);
        assert_eq!(next("0 0 * * 0", "UTC", base), sunday);
        assert_eq!(next("0 0 * * 7", "UTC", base), sunday);
        assert_eq!(next("0 0 * * SUN", "UTC", base), sunday);
        // 5-7 is Friday, Saturday, Sunday.
        assert_eq!(
            runs("0 0 * * 5-7", "UTC", base, 4),
            [utc(2026, 5, 15, 0, 0, 0), utc(2026, 5, 16, 0, 0, 0), sunday, utc(2026, 5, 22, 0, 0, 0)]
        );
        assert_eq!(cron("0 0 * * 0-7", "UTC").fields.weekdays, 0x7f);
        assert_eq!(cron("0 0 * * */2", "UTC").fields.weekdays, 0b101_0101);
    }

    #[test]
    fn cron_question_mark_means_any_day() {
        let base = utc(2026, 5, 10, 12, 0, 0);
        assert_eq!(next("0 0 ? * *", "UTC", base), utc(2026, 5, 11, 0, 0, 0));
        assert_eq!(next("0 0 * * ?", "UTC", base), utc(2026, 5, 11, 0, 0, 0));
        // `?` leaves the other day field in charge (no OR rule).
        assert_eq!(next("0 0 ? * FRI", "UTC", base), utc(2026, 5, 15, 0, 0, 0));
        assert_eq!(next("0 0 20 * ?", "UTC", base), utc(2026, 5, 20, 0, 0, 0));
    }

    #[test]
    fn cron_macros() {
        let base = utc(2026, 5, 10, 12, 7, 0); // a Sunday
        for (name, want) in [
            ("@yearly", utc(2027, 1, 1, 0, 0, 0)),
            ("@annually", utc(2027, 1, 1, 0, 0, 0)),
            ("@monthly", utc(2026, 6, 1, 0, 0, 0)),
            ("@weekly", utc(2026, 5, 17, 0, 0, 0)),
            ("@daily", utc(2026, 5, 11, 0, 0, 0)),
            ("@midnight", utc(2026, 5, 11, 0, 0, 0)),
            ("@hourly", utc(2026, 5, 10, 13, 0, 0)),
            ("@DAILY", utc(2026, 5, 11, 0, 0, 0)),
        ] {
            assert_eq!(next(name, "UTC", base), want, "{name}");
        }
        let m = err("@reboot");
        assert!(m.contains("unknown macro '@reboot'"), "{m}");
        assert!(err("@every 5m").contains("unknown macro '@every 5m'"));
    }

    #[test]
    fn cron_day_of_month_or_day_of_week() {
        let base = utc(2026, 3, 1, 12, 0, 0); // Sunday 2026-03-01; Friday 13th falls in March
                                              // Both restricted: the 13th OR any Friday.
        assert_eq!(
            runs("0 0 13 * 5", "UTC", base, 4),
            [utc(2026, 3, 6, 0, 0, 0), utc(2026, 3, 13, 0, 0, 0), utc(2026, 3, 20, 0, 0, 0), utc(2026, 3, 27, 0, 0, 0)]
        );
        assert_eq!(
            runs("0 0 1,15 * MON", "UTC", base, 4),
            [utc(2026, 3, 2, 0, 0, 0), utc(2026, 3, 9, 0, 0, 0), utc(2026, 3, 15, 0, 0, 0), utc(2026, 3, 16, 0, 0, 0)]
        );
        // Only one restricted: that one decides.
        assert_eq!(next("0 0 13 * *", "UTC", base), utc(2026, 3, 13, 0, 0, 0));
        assert_eq!(next("0 0 * * 5", "UTC", base), utc(2026, 3, 6, 0, 0, 0));
        // A field starting with `*` counts as unrestricted even with a step: AND applies
        // (odd days that are Fridays).
        assert_eq!(runs("0 0 */2 * 5", "UTC", base, 3), [utc(2026, 3, 13, 0, 0, 0), utc(2026, 3, 27, 0, 0, 0), utc(2026, 4, 3, 0, 0, 0)]);
    }

    #[test]
    fn cron_leap_day() {
        assert_eq!(
            runs("0 0 29 2 *", "UTC", utc(2024, 3, 1, 0, 0, 0), 3),
            [utc(2028, 2, 29, 0, 0, 0), utc(2032, 2, 29, 0, 0, 0), utc(2036, 2, 29, 0, 0, 0)]
        );
        // 2100 is not a leap year: eight years between leap days.
        assert_eq!(next("0 0 29 2 *", "UTC", utc(2096, 3, 1, 0, 0, 0)), utc(2104, 2, 29, 0, 0, 0));
        assert_eq!(next("0 0 29 2 *", PARIS, utc(2096, 3, 1, 0, 0, 0)), utc(2104, 2, 28, 23, 0, 0));
        assert_eq!(next("0 0 28 2 *", "UTC", utc(2100, 2, 28, 0, 0, 0)), utc(2101, 2, 28, 0, 0, 0));
    }

    #[test]
    fn cron_sequences_and_month_ends() {
        assert_eq!(
            runs("0 0 31 * *", "UTC", utc(2026, 1, 31, 0, 0, 0), 4),
            [utc(2026, 3, 31, 0, 0, 0), utc(2026, 5, 31, 0, 0, 0), utc(2026, 7, 31, 0, 0, 0), utc(2026, 8, 31, 0, 0, 0)]
        );
        assert_eq!(runs("59 23 31 12 *", "UTC", utc(2026, 6, 1, 0, 0, 0), 2), [utc(2026, 12, 31, 23, 59, 0), utc(2027, 12, 31, 23, 59, 0)]);
        assert_eq!(
            runs("0 12 * * *", "UTC", utc(2026, 12, 30, 12, 0, 0), 3),
            [utc(2026, 12, 31, 12, 0, 0), utc(2027, 1, 1, 12, 0, 0), utc(2027, 1, 2, 12, 0, 0)]
        );
    }

    #[test]
    fn cron_instants_before_1970_and_out_of_range() {
        assert_eq!(next("0 0 1 1 *", "UTC", utc(1969, 6, 1, 0, 0, 0)), 0);
        assert_eq!(next("0 0 * * *", "UTC", -1), 0);
        assert_eq!(cron("* * * * *", "UTC").next_after(i64::MAX), None);
        assert_eq!(cron("* * * * *", "UTC").next_after(i64::MIN), None);
    }

    #[test]
    fn cron_never_matching_pattern_terminates() {
        let fields = Fields::parse("0 0 30 2 *").expect("syntax is fine");
        let c = Cron { pattern: "0 0 30 2 *".into(), tz_name: PARIS.into(), tz: Tz::Europe__Paris, fields };
        assert_eq!(c.next_after(utc(2026, 1, 1, 0, 0, 0)), None);
    }

    // ---- errors --------------------------------------------------------------------------

    #[test]
    fn cron_error_field_count() {
        assert_eq!(
            err("* * * *"),
            "invalid cron pattern '* * * *': expected 5 fields (minute hour day month weekday) \
             or 6 (with leading seconds), got 4"
        );
        assert!(err("* * * * * * *").ends_with("got 7"));
        assert!(err("").ends_with("got 0"));
        assert!(err("   ").ends_with("got 0"));
    }

    #[test]
    fn cron_error_out_of_range_names_field_and_value() {
        assert_eq!(err("61 * * * *"), "invalid cron pattern '61 * * * *': minute value '61' is out of range 0-59");
        for (pattern, want) in [
            ("60 * * * * *", "second value '60' is out of range 0-59"),
            ("0 24 * * *", "hour value '24' is out of range 0-23"),
            ("0 0 0 * *", "day-of-month value '0' is out of range 1-31"),
            ("0 0 32 * *", "day-of-month value '32' is out of range 1-31"),
            ("0 0 * 0 *", "month value '0' is out of range 1-12"),
            ("0 0 * 13 *", "month value '13' is out of range 1-12"),
            ("0 0 * * 8", "day-of-week value '8' is out of range 0-7"),
            ("0 5-99 * * *", "hour value '99' is out of range 0-23"),
            ("99999999999 * * * *", "minute value '99999999999' is out of range 0-59"),
        ] {
            let m = err(pattern);
            assert!(m.contains(want), "{pattern}: {m}");
            assert!(m.starts_with(&format!("invalid cron pattern '{pattern}': ")), "{m}");
        }
    }

    #[test]
    fn cron_error_steps() {
        assert_eq!(
            err("*/0 * * * *"),
            "invalid cron pattern '*/0 * * * *': minute value '*/0' has an invalid step '0' \
             (expected 1-59)"
        );
        assert!(err("0 */24 * * *").contains("hour value '*/24' has an invalid step '24'"));
        assert!(err("*/x * * * *").contains("minute value '*/x' has an invalid step 'x'"));
        assert!(err("*/ * * * *").contains("minute value '*/' has an invalid step ''"));
        assert!(err("*/+5 * * * *").contains("invalid step '+5'"));
        assert!(err("*/5/5 * * * *").contains("invalid step '5/5'"));
    }

    #[test]
    fn cron_error_wrapping_range() {
        let m = err("0 22-2 * * *");
        assert!(m.contains("hour value '22-2': wrapping ranges (start after end) are not supported"), "{m}");
        assert!(m.contains("'22-23,0-2'"), "{m}");
        let m = err("0 0 * * FRI-MON");
        assert!(m.contains("day-of-week value 'FRI-MON': wrapping ranges"), "{m}");
        assert!(m.contains("'5-6,0-1'"), "{m}");
    }

    #[test]
    fn cron_weekday_range_ending_on_sunday_by_name() {
        // Regression: `FRI-SUN` and `MON-SUN` were rejected as wrapping ranges (SUN read as 0).
        let base = utc(2026, 5, 11, 12, 0, 0); // a Monday
        assert_eq!(cron("0 0 * * FRI-SUN", "UTC").fields.weekdays, cron("0 0 * * 5-7", "UTC").fields.weekdays);
        assert_eq!(
            runs("0 0 * * fri-sun", "UTC", base, 4),
            [utc(2026, 5, 15, 0, 0, 0), utc(2026, 5, 16, 0, 0, 0), utc(2026, 5, 17, 0, 0, 0), utc(2026, 5, 22, 0, 0, 0)]
        );
        assert_eq!(cron("0 0 * * MON-SUN", "UTC").fields.weekdays, 0x7f);
        // 1-7/2: Monday, Wednesday, Friday, Sunday.
        assert_eq!(cron("0 0 * * 1-sun/2", "UTC").fields.weekdays, 0b010_1011);
        // Starting at Sunday it stays 0: SUN-SUN is Sunday only, not every day.
        assert_eq!(cron("0 0 * * SUN-SUN", "UTC").fields.weekdays, 1);
        assert_eq!(cron("0 0 * * 0-SUN", "UTC").fields.weekdays, 1);
        // A numeric 0 (or any other name) closing a range still wraps and is rejected.
        assert!(err("0 0 * * 5-0").contains("wrapping ranges"));
        assert!(err("0 0 * * SAT-MON").contains("wrapping ranges"));
    }

    #[test]
    fn cron_error_empty_items_and_bad_tokens() {
        assert!(err("1,,2 * * * *").contains("minute value '1,,2' has an empty list item"));
        assert!(err("1, * * * *").contains("minute value '1,' has an empty list item"));
        assert!(err(",1 * * * *").contains("minute value ',1' has an empty list item"));
        assert!(err("-5 * * * *").contains("minute value '' is not a number"));
        assert!(err("5- * * * *").contains("minute value '' is not a number"));
        assert!(err("+5 * * * *").contains("minute value '+5' is not a number"));
        assert!(err("*-5 * * * *").contains("minute value '*' is not a number"));
        assert!(err("1-2-3 * * * *").contains("minute value '2-3' is not a number"));
        assert!(err("MON * * * *").contains("minute value 'MON' is not a number"));
        assert!(err("0 0 * * JAN").contains("day-of-week value 'JAN' is not a number or a day name (SUN-SAT)"));
        assert!(err("0 0 * FOO *").contains("month value 'FOO' is not a number or a month name (JAN-DEC)"));
        assert!(err("0 0 * JANUARY *").contains("month value 'JANUARY'"));
        assert!(err("0 0 * * MONDAY").contains("day-of-week value 'MONDAY'"));
        assert!(err("0 ? * * *").contains("hour value '?': '?' is only allowed in day-of-month and day-of-week"));
        assert!(err("0 0 * ? *").contains("month value '?'"));
    }

    #[test]
    fn cron_error_unknown_time_zone() {
        assert_eq!(Cron::parse("* * * * *", "Europe/Pariss"), Err(CronError("unknown time zone 'Europe/Pariss'".into())));
        assert_eq!(Cron::parse("* * * * *", "").map_err(|e| e.0), Err("unknown time zone ''".to_string()));
        assert!(Cron::parse("* * * * *", "Asia/Kolkata").is_ok());
        assert!(Cron::parse("* * * * *", "America/Argentina/Buenos_Aires").is_ok());
    }

    #[test]
    fn cron_error_never_fires() {
        assert_eq!(err("0 0 30 2 *"), "cron pattern '0 0 30 2 *' never fires");
        assert_eq!(err("0 0 31 4 *"), "cron pattern '0 0 31 4 *' never fires");
        assert_eq!(err("0 0 31 2,4,6,9,11 *"), "cron pattern '0 0 31 2,4,6,9,11 *' never fires");
        // With the OR rule the weekday rescues it.
        assert!(Cron::parse("0 0 30 2 MON", "UTC").is_ok());
        assert!(Cron::parse("0 0 31 * *", "UTC").is_ok());
    }

    #[test]
    fn cron_error_is_std_error() {
        let e: Box<dyn std::error::Error> = Box::new(CronError("boom".into()));
        assert_eq!(e.to_string(), "boom");
    }

    // ---- time zones and DST ----------------------------------------------------------------

    #[test]
    fn cron_local_time_in_zones() {
        // Paris is UTC+1 in winter, UTC+2 in summer.
        assert_eq!(next("0 9 * * *", PARIS, utc(2026, 1, 10, 0, 0, 0)), utc(2026, 1, 10, 8, 0, 0));
        assert_eq!(next("0 9 * * *", PARIS, utc(2026, 7, 10, 0, 0, 0)), utc(2026, 7, 10, 7, 0, 0));
        // Kolkata: UTC+05:30, no DST.
        assert_eq!(
            runs("0 9 * * *", "Asia/Kolkata", utc(2026, 1, 10, 0, 0, 0), 2),
            [utc(2026, 1, 10, 3, 30, 0), utc(2026, 1, 11, 3, 30, 0)]
        );
        assert_eq!(
            runs("0 * * * *", "Asia/Kolkata", utc(2026, 1, 10, 0, 0, 0), 2),
            [utc(2026, 1, 10, 0, 30, 0), utc(2026, 1, 10, 1, 30, 0)]
        );
        assert_eq!(next("0 0 * * *", "Asia/Kolkata", utc(2026, 1, 10, 18, 29, 0)), utc(2026, 1, 10, 18, 30, 0));
        // Day-of-week is the local one: Monday 00:30 in Kolkata is Sunday 19:00 UTC.
        assert_eq!(next("30 0 * * MON", "Asia/Kolkata", utc(2026, 5, 10, 0, 0, 0)), utc(2026, 5, 10, 19, 0, 0));
    }

    #[test]
    fn cron_paris_spring_forward_daily_in_gap() {
        // 2027-03-28: 02:00 CET -> 03:00 CEST (01:00 UTC); 02:30 does not exist.
        let c = cron("30 2 * * *", PARIS);
        assert_eq!(
            runs("30 2 * * *", PARIS, utc(2027, 3, 26, 12, 0, 0), 3),
            [utc(2027, 3, 27, 1, 30, 0), utc(2027, 3, 28, 1, 0, 0), utc(2027, 3, 29, 0, 30, 0)]
        );
        assert_eq!(c.next_after(utc(2027, 3, 28, 1, 0, 0)), Some(utc(2027, 3, 29, 0, 30, 0)));
        for day in 27..=29 {
            assert_eq!(runs_on_local_day("30 2 * * *", PARIS, 2027, 3, day).len(), 1, "day {day}");
        }
        // Two matches in the gap still make one run.
        assert_eq!(runs_on_local_day("0,30 2 * * *", PARIS, 2027, 3, 28), [utc(2027, 3, 28, 1, 0, 0)]);
        // A gap match and 03:00 itself coincide: one run.
        assert_eq!(runs_on_local_day("30 2,3 * * *", PARIS, 2027, 3, 28), [utc(2027, 3, 28, 1, 0, 0), utc(2027, 3, 28, 1, 30, 0)]);
        assert_eq!(runs_on_local_day("0 2,3 * * *", PARIS, 2027, 3, 28), [utc(2027, 3, 28, 1, 0, 0)]);
    }

    #[test]
    fn cron_paris_spring_forward_hourly_and_quarterly() {
        let hourly = runs_on_local_day("0 * * * *", PARIS, 2027, 3, 28);
        assert_eq!(hourly.len(), 23);
        assert_eq!(
            &hourly[..4],
            [utc(2027, 3, 27, 23, 0, 0), utc(2027, 3, 28, 0, 0, 0), utc(2027, 3, 28, 1, 0, 0), utc(2027, 3, 28, 2, 0, 0)]
        );
        assert!(hourly.windows(2).all(|w| w[1] - w[0] == 3_600_000));
        assert_eq!(
            runs("*/15 * * * *", PARIS, utc(2027, 3, 28, 0, 30, 0), 4),
            [
                utc(2027, 3, 28, 0, 45, 0), // 01:45 CET
                utc(2027, 3, 28, 1, 0, 0),  // 03:00 CEST (02:xx collapsed into it)
                utc(2027, 3, 28, 1, 15, 0),
                utc(2027, 3, 28, 1, 30, 0)
            ]
        );
        assert_eq!(runs_on_local_day("*/15 * * * *", PARIS, 2027, 3, 28).len(), 23 * 4);
        assert_eq!(runs_on_local_day("0 12 * * *", PARIS, 2027, 3, 28), [utc(2027, 3, 28, 10, 0, 0)]);
        assert_eq!(runs_on_local_day("0 12 * * *", PARIS, 2027, 3, 27), [utc(2027, 3, 27, 11, 0, 0)]);
    }

    #[test]
    fn cron_paris_fall_back_daily_in_overlap() {
        // 2027-10-31: 03:00 CEST -> 02:00 CET (01:00 UTC); 02:00-02:59 happens twice.
        let c = cron("30 2 * * *", PARIS);
        assert_eq!(
            runs("30 2 * * *", PARIS, utc(2027, 10, 29, 12, 0, 0), 3),
            [utc(2027, 10, 30, 0, 30, 0), utc(2027, 10, 31, 0, 30, 0), utc(2027, 11, 1, 1, 30, 0)]
        );
        for day in 30..=31 {
            assert_eq!(runs_on_local_day("30 2 * * *", PARIS, 2027, 10, day).len(), 1, "day {day}");
        }
        // Starting inside the second 02:xx (02:10 CET), or just before it, the day is done.
        for after in [utc(2027, 10, 31, 1, 10, 0), utc(2027, 10, 31, 0, 59, 59), utc(2027, 10, 31, 1, 0, 0)] {
            assert_eq!(c.next_after(after), Some(utc(2027, 11, 1, 1, 30, 0)), "after {after}");
        }
        // Before the first 02:30 it is the first occurrence that fires.
        assert_eq!(c.next_after(utc(2027, 10, 31, 0, 10, 0)), Some(utc(2027, 10, 31, 0, 30, 0)));
        // Hour lists and ranges are "fixed hours" too: no double run.
        assert_eq!(
            runs_on_local_day("0 1-3 * * *", PARIS, 2027, 10, 31),
            [utc(2027, 10, 30, 23, 0, 0), utc(2027, 10, 31, 0, 0, 0), utc(2027, 10, 31, 2, 0, 0)]
        );
        assert_eq!(runs_on_local_day("* 2 * * *", PARIS, 2027, 10, 31).len(), 60);
    }

    #[test]
    fn cron_paris_fall_back_hourly_and_quarterly() {
        let hourly = runs_on_local_day("0 * * * *", PARIS, 2027, 10, 31);
        assert_eq!(hourly.len(), 25);
        assert!(hourly.windows(2).all(|w| w[1] - w[0] == 3_600_000));
        assert!(hourly.contains(&utc(2027, 10, 31, 0, 0, 0))); // 02:00 CEST
        assert!(hourly.contains(&utc(2027, 10, 31, 1, 0, 0))); // 02:00 CET
        assert_eq!(
            runs("*/15 * * * *", PARIS, utc(2027, 10, 31, 0, 40, 0), 4),
            [
                utc(2027, 10, 31, 0, 45, 0), // 02:45 CEST
                utc(2027, 10, 31, 1, 0, 0),  // 02:00 CET
                utc(2027, 10, 31, 1, 15, 0), // 02:15 CET
                utc(2027, 10, 31, 1, 30, 0)
            ]
        );
        // Starting inside the second occurrence, interval-like patterns carry on.
        assert_eq!(next("0 * * * *", PARIS, utc(2027, 10, 31, 1, 30, 0)), utc(2027, 10, 31, 2, 0, 0));
        assert_eq!(next("*/15 * * * *", PARIS, utc(2027, 10, 31, 1, 5, 0)), utc(2027, 10, 31, 1, 15, 0));
        let quarterly = runs_on_local_day("*/15 * * * *", PARIS, 2027, 10, 31);
        assert_eq!(quarterly.len(), 25 * 4);
        assert!(quarterly.windows(2).all(|w| w[1] - w[0] == 900_000));
        assert_eq!(runs_on_local_day("0 12 * * *", PARIS, 2027, 10, 31), [utc(2027, 10, 31, 11, 0, 0)]);
        assert_eq!(runs_on_local_day("0 12 * * *", PARIS, 2027, 10, 30), [utc(2027, 10, 30, 10, 0, 0)]);
    }

    #[test]
    fn cron_new_york_spring_forward() {
        // 2027-03-14: 02:00 EST -> 03:00 EDT (07:00 UTC).
        assert_eq!(runs_on_local_day("30 2 * * *", NEW_YORK, 2027, 3, 14), [utc(2027, 3, 14, 7, 0, 0)]);
        assert_eq!(runs("30 2 * * *", NEW_YORK, utc(2027, 3, 13, 12, 0, 0), 2), [utc(2027, 3, 14, 7, 0, 0), utc(2027, 3, 15, 6, 30, 0)]);
        let hourly = runs_on_local_day("0 * * * *", NEW_YORK, 2027, 3, 14);
        assert_eq!(hourly.len(), 23);
        assert!(hourly.windows(2).all(|w| w[1] - w[0] == 3_600_000));
        assert_eq!(
            runs("*/15 * * * *", NEW_YORK, utc(2027, 3, 14, 6, 40, 0), 3),
            [utc(2027, 3, 14, 6, 45, 0), utc(2027, 3, 14, 7, 0, 0), utc(2027, 3, 14, 7, 15, 0)]
        );
        assert_eq!(runs_on_local_day("*/15 * * * *", NEW_YORK, 2027, 3, 14).len(), 92);
        assert_eq!(runs_on_local_day("0 12 * * *", NEW_YORK, 2027, 3, 14), [utc(2027, 3, 14, 16, 0, 0)]);
    }

    #[test]
    fn cron_new_york_fall_back() {
        // 2027-11-07: 02:00 EDT -> 01:00 EST (06:00 UTC); 01:00-01:59 happens twice.
        assert_eq!(runs_on_local_day("30 1 * * *", NEW_YORK, 2027, 11, 7), [utc(2027, 11, 7, 5, 30, 0)]);
        assert_eq!(next("30 1 * * *", NEW_YORK, utc(2027, 11, 7, 6, 10, 0)), utc(2027, 11, 8, 6, 30, 0));
        // 02:30 exists once (EST) on that day.
        assert_eq!(runs_on_local_day("30 2 * * *", NEW_YORK, 2027, 11, 7), [utc(2027, 11, 7, 7, 30, 0)]);
        let hourly = runs_on_local_day("0 * * * *", NEW_YORK, 2027, 11, 7);
        assert_eq!(hourly.len(), 25);
        assert!(hourly.windows(2).all(|w| w[1] - w[0] == 3_600_000));
        assert!(hourly.contains(&utc(2027, 11, 7, 5, 0, 0))); // 01:00 EDT
        assert!(hourly.contains(&utc(2027, 11, 7, 6, 0, 0))); // 01:00 EST
        let quarterly = runs_on_local_day("*/15 * * * *", NEW_YORK, 2027, 11, 7);
        assert_eq!(quarterly.len(), 100);
        assert!(quarterly.windows(2).all(|w| w[1] - w[0] == 900_000));
        assert_eq!(runs_on_local_day("0 12 * * *", NEW_YORK, 2027, 11, 7), [utc(2027, 11, 7, 17, 0, 0)]);
    }

    #[test]
    fn cron_six_field_seconds_across_gap() {
        // Every 20 s during 02:xx collapses into 03:00:00 CEST, then continues.
        assert_eq!(
            runs("*/20 * 2,3 * * *", PARIS, utc(2027, 3, 28, 0, 59, 0), 3),
            [utc(2027, 3, 28, 1, 0, 0), utc(2027, 3, 28, 1, 0, 20), utc(2027, 3, 28, 1, 0, 40)]
        );
    }

    #[test]
    fn cron_full_year_counts() {
        let (from, to) = (local(PARIS, 2027, 1, 1, 0, 0), local(PARIS, 2028, 1, 1, 0, 0));
        let daily = runs_between(&cron("30 2 * * *", PARIS), from, to);
        assert_eq!(daily.len(), 365);
        let quarterly = runs_between(&cron("*/15 * * * *", PARIS), from, to);
        assert_eq!(quarterly.len(), 365 * 96);
        assert!(quarterly.windows(2).all(|w| w[1] - w[0] == 900_000));
        assert!(quarterly.iter().all(|t| t % 1000 == 0));
    }

    /// Reference semantics, checked minute by minute: an instant fires when its local time
    /// matches and it is the first occurrence of that local time (or the hour field is `*`),
    /// or when it ends a spring-forward gap that contained a match.
    fn brute_force_runs(c: &Cron, from_s: i64, to_s: i64) -> Vec<i64> {
        let matches = |local_s: i64| naive_at(local_s).is_some_and(|n| c.fields.matches(n));
        let mut out = Vec::new();
        for u in (from_s..to_s).step_by(60) {
            let (off, before) = (c.offset_at(u), c.offset_at(u - 1));
            let here = matches(u + off) && (c.fields.every_hour || first_occurrence(c, u, off));
            let gap = off > before && (u + before..u + off).step_by(60).any(matches);
            if here || gap {
                out.push(u * 1000);
            }
        }
        out
    }

    fn first_occurrence(c: &Cron, u: i64, off: i64) -> bool {
        let naive = naive_at(u + off).expect("representable");
        match c.tz.from_local_datetime(&naive) {
            LocalResult::Ambiguous(a, b) => u == a.timestamp().min(b.timestamp()),
            _ => true,
        }
    }

    #[test]
    fn cron_matches_brute_force_around_every_transition() {
        let zones = [
            "Europe/Paris",
            "America/New_York",
            "Australia/Sydney",
            "Australia/Lord_Howe", // 30-minute DST shift
            "Pacific/Chatham",     // +12:45 / +13:45
            "America/Santiago",    // transitions at local midnight
            "Asia/Kolkata",
        ];
        let patterns =
            ["30 2 * * *", "0,30 2 * * *", "0 * * * *", "*/15 * * * *", "*/7 1-3 * * *", "0 0 * * *", "45 1,2 * * SUN", "15,45 * * * *"];
        let (from, to) = (utc(2026, 1, 1, 0, 0, 0) / 1000, utc(2028, 1, 1, 0, 0, 0) / 1000);
        let mut checked = 0;
        for zone in zones {
            let probe = cron("* * * * *", zone);
            let mut windows = vec![(from, from + 3 * DAY_SECS)];
            let mut t = from;
            while let Some(change) = probe.first_offset_change(t, to, probe.offset_at(t)) {
                windows.push((change - 2 * DAY_SECS, change + 2 * DAY_SECS));
                t = change;
            }
            for pattern in patterns {
                let c = cron(pattern, zone);
                for &(a, b) in &windows {
                    let want = brute_force_runs(&c, a, b);
                    assert_eq!(runs_between(&c, a * 1000, b * 1000), want, "{pattern} in {zone} near {a}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 7 * 8 * 3, "too few windows checked: {checked}");
    }

    #[test]
    fn cron_day_skipped_by_zone_change() {
        // Samoa skipped 2011-12-30 entirely (-10 -> +14 at local midnight).
        let zone = "Pacific/Apia";
        let c = cron("0 12 * * *", zone);
        let want = [
            utc(2011, 12, 29, 22, 0, 0), // Dec 29 12:00 -10
            utc(2011, 12, 30, 10, 0, 0), // Dec 30 12:00 never happened: first instant after
            utc(2011, 12, 30, 22, 0, 0), // Dec 31 12:00 +14
        ];
        assert_eq!(runs_between(&c, utc(2011, 12, 29, 12, 0, 0), utc(2011, 12, 31, 0, 0, 0)), want);
        let (a, b) = (utc(2011, 12, 28, 0, 0, 0) / 1000, utc(2012, 1, 2, 0, 0, 0) / 1000);
        assert_eq!(runs_between(&c, a * 1000, b * 1000), brute_force_runs(&c, a, b));
    }
}

#[cfg(test)]
#[path = "cron_diff_tests.rs"]
mod diff_tests;
