//! Differential tests of `rust/cron.rs` against the `croner` crate (a dev-dependency only).
//!
//! 1. Generated patterns: 100,000 in release builds (20,000 in debug), drawn from a fixed RNG state over
//!    the syntax both sides accept: 5 or 6 fields; `*`, and `?` in the day fields, as a whole
//!    field (croner rejects a bare `*` inside a list); values; ranges; `*/S`, `A-B/S` and `N/S`
//!    steps; lists of those; month and weekday names in any case; 7 as Sunday. Left out because
//!    only croner has them: `L`, `W`, `#`, the `+` prefix (used below only to restate our own
//!    rule), a seventh year field. Macros are checked on their own (`@midnight`, ours only,
//!    against croner's `@daily`). A pattern that never fires (`0 0 30 2 *`) is rejected by ours at
//!    parse time and not compared (about 1 in 5,000).
//!    Each pattern is evaluated in UTC or in a zone with a fixed offset (Asia/Kolkata +05:30 since
//!    1945, Etc/GMT+11 = UTC-11), where daylight saving cannot interfere, from two random instants
//!    between 1971 and 2099, three runs in a row each: both sides must return the same instants.
//!    Where the two differ by design, the pattern given to croner is rewritten to say ours:
//!    - Day-of-month with day-of-week: we follow Vixie cron, where a day field that starts with `*`
//!      or `?` (`*/2`, `*/5,7`) is unrestricted, so the other day field decides alone (AND). Croner
//!      counts only a field that is exactly `*` or `?` as unrestricted and ORs the two otherwise;
//!      such patterns go to croner with its AND prefix `+` on the weekday field.
//!    - `N/S` in day-of-week: ours runs N to 6 (like `*/S`, 7 being only an alias of Sunday);
//!      croner (with `sloppy_ranges`, needed for `N/S` at all) runs N to 7, adding Sunday to
//!      `1/3`. Croner gets `N-6/S`.
//!    - `SUN-SUN` and `0-SUN`: croner rewrites `-SUN` to `-7` before parsing, so both mean every
//!      day to it; ours reads them as Sunday. Croner gets `0-0`.
//!
//! 2. A DST table: spring-forward gap and fall-back overlap in Europe/Paris, America/New_York and
//!    Australia/Lord_Howe (30-minute shift) for `30 2 * * *`, `0 * * * *`, `*/15 * * * *`,
//!    `0 30 1 * * *`, plus rows that show where the two DST policies part. Every run within two
//!    hours either side of the change is listed by hand, in local wall-clock time, for ours; croner
//!    either gives the same list or its own list is written next to ours.

use chrono::{DateTime, LocalResult, NaiveDate, TimeZone};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};

use super::{Cron, DAY_SECS, HORIZON_DAYS};

/// SplitMix64: a fixed, dependency-free generator, so the generated patterns never change.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in lo..=hi.
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next_u64() % u64::from(hi - lo + 1)) as u32
    }

    /// True with probability pct %.
    fn pct(&mut self, pct: u32) -> bool {
        self.range(0, 99) < pct
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Time,
    DayOfMonth,
    Month,
    DayOfWeek,
}

struct Field {
    kind: Kind,
    min: u32,
    max: u32,
    /// `*` in percent.
    star_pct: u32,
    names: &'static [&'static str],
}

const SECOND: Field = Field { kind: Kind::Time, min: 0, max: 59, star_pct: 45, names: &[] };
const MINUTE: Field = Field { star_pct: 30, ..SECOND };
const HOUR: Field = Field { max: 23, ..MINUTE };
const DAY_OF_MONTH: Field = Field { kind: Kind::DayOfMonth, min: 1, max: 31, star_pct: 50, names: &[] };
const MONTH: Field = Field {
    kind: Kind::Month,
    min: 1,
    max: 12,
    star_pct: 55,
    names: &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
};
const DAY_OF_WEEK: Field =
    Field { kind: Kind::DayOfWeek, min: 0, max: 7, star_pct: 50, names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"] };

/// A value as a number or, now and then, as a name in upper, lower or mixed case.
fn value_text(rng: &mut Rng, f: &Field, v: u32) -> String {
    let Some(name) = f.names.get((v - f.min) as usize).filter(|_| rng.pct(30)) else {
        return v.to_string();
    };
    match rng.range(0, 2) {
        0 => name.to_string(),
        1 => name.to_ascii_lowercase(),
        _ => name[..1].to_string() + &name[1..].to_ascii_lowercase(),
    }
}

/// Mostly small steps, sometimes any step the field accepts (1 to its maximum).
fn step(rng: &mut Rng, f: &Field) -> u32 {
    if rng.pct(75) {
        rng.range(1, f.max.min(12))
    } else {
        rng.range(1, f.max)
    }
}

/// `lo-hi`, as (ours, croner's).
fn range_text(rng: &mut Rng, f: &Field, lo: u32, hi: u32) -> (String, String) {
    let lo_text = value_text(rng, f, lo);
    // Sunday closing a range, by name: `FRI-SUN` is 5-7, `SUN-SUN` and `0-SUN` are Sunday.
    let hi_text = if f.kind == Kind::DayOfWeek && hi == 7 && rng.pct(50) { "sun".to_string() } else { value_text(rng, f, hi) };
    let ours = format!("{lo_text}-{hi_text}");
    // Croner reads any `-SUN` as 7, so `0-SUN` is every day to it: it gets `0-0`.
    let croner = if lo == 0 && hi_text.eq_ignore_ascii_case("sun") { format!("{lo_text}-0") } else { ours.clone() };
    (ours, croner)
}

/// One list item, as (ours, croner's).
fn item(rng: &mut Rng, f: &Field) -> (String, String) {
    let same = |s: String| (s.clone(), s);
    match rng.range(0, 99) {
        0..=39 => {
            let v = rng.range(f.min, f.max);
            same(value_text(rng, f, v))
        }
        40..=64 => {
            let (a, b) = (rng.range(f.min, f.max), rng.range(f.min, f.max));
            let (lo, hi) = (a.min(b), a.max(b));
            range_text(rng, f, lo, hi)
        }
        65..=79 => same(format!("*/{}", step(rng, f))),
        80..=91 => {
            let (a, b) = (rng.range(f.min, f.max), rng.range(f.min, f.max));
            let (lo, hi) = (a.min(b), a.max(b));
            let s = step(rng, f);
            let (ours, croner) = range_text(rng, f, lo, hi);
            (format!("{ours}/{s}"), format!("{croner}/{s}"))
        }
        _ => {
            let n = rng.range(f.min, f.max);
            let s = step(rng, f);
            let n_text = value_text(rng, f, n);
            let ours = format!("{n_text}/{s}");
            let croner = if f.kind == Kind::DayOfWeek && n <= 6 { format!("{n_text}-6/{s}") } else { ours.clone() };
            (ours, croner)
        }
    }
}

/// One field, as (ours, croner's).
fn field(rng: &mut Rng, f: &Field) -> (String, String) {
    if rng.pct(f.star_pct) {
        let any = if matches!(f.kind, Kind::DayOfMonth | Kind::DayOfWeek) && rng.pct(15) { "?" } else { "*" };
        return (any.to_string(), any.to_string());
    }
    let count = match rng.range(0, 99) {
        0..=59 => 1,
        60..=84 => 2,
        _ => 3,
    };
    let (mut ours, mut croner) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let (o, c) = item(rng, f);
        ours.push(o);
        croner.push(c);
    }
    (ours.join(","), croner.join(","))
}

struct Generated {
    ours: String,
    croner: String,
    /// Croner got `+` on the weekday field to follow the Vixie day rule.
    day_rule_rewritten: bool,
}

fn generate(rng: &mut Rng) -> Generated {
    let with_seconds = rng.pct(40);
    let second = if with_seconds { Some(field(rng, &SECOND)) } else { None };
    let (minute, hour, dom, month, mut dow) =
        (field(rng, &MINUTE), field(rng, &HOUR), field(rng, &DAY_OF_MONTH), field(rng, &MONTH), field(rng, &DAY_OF_WEEK));
    let starts_any = |s: &str| s.starts_with('*') || s.starts_with('?');
    let is_any = |s: &str| s == "*" || s == "?";
    let ours_and = starts_any(&dom.0) || starts_any(&dow.0);
    let croner_or = !is_any(&dom.1) && !is_any(&dow.1);
    let day_rule_rewritten = ours_and && croner_or;
    if day_rule_rewritten {
        dow.1 = format!("+{}", dow.1);
    }
    let mut ours = Vec::new();
    let mut croner = Vec::new();
    for (o, c) in second.into_iter().chain([minute, hour, dom, month, dow]) {
        ours.push(o);
        croner.push(c);
    }
    Generated { ours: ours.join(" "), croner: croner.join(" "), day_rule_rewritten }
}

fn croner_parse(pattern: &str) -> croner::Cron {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .sloppy_ranges(true)
        .build()
        .parse(pattern)
        .unwrap_or_else(|e| panic!("croner rejects '{pattern}': {e}"))
}

/// Croner's first run strictly after `after_ms`, evaluated in `tz`.
fn croner_next(c: &croner::Cron, tz: Tz, after_ms: i64) -> Option<i64> {
    let start = DateTime::from_timestamp_millis(after_ms).expect("representable").with_timezone(&tz);
    c.find_next_occurrence(&start, false).ok().map(|t| t.timestamp_millis())
}

const FIXED_ZONES: [&str; 3] = ["UTC", "Asia/Kolkata", "Etc/GMT+11"];
/// 1971-01-01 and 2099-01-01 UTC, in seconds.
const FROM_S: i64 = 31_536_000;
const TO_S: i64 = 4_070_908_800;

#[test]
fn cron_agrees_with_croner_on_generated_patterns() {
    let wanted = if cfg!(debug_assertions) { 20_000 } else { 100_000 };
    let mut rng = Rng(0x5EED_C0DE_2026);
    let (mut compared, mut never_fires, mut rewritten, mut runs, mut six_fields) = (0, 0, 0, 0, 0);
    let mut zones_used = [0; FIXED_ZONES.len()];
    while compared < wanted {
        let g = generate(&mut rng);
        let zone_index = rng.range(0, FIXED_ZONES.len() as u32 - 1) as usize;
        let zone = FIXED_ZONES[zone_index];
        let ours = match Cron::parse(&g.ours, zone) {
            Ok(c) => c,
            // `0 0 30 2 *` and the like are valid syntax that never fires: we reject them at
            // parse time; croner would search up to the year 5000. Not compared.
            Err(e) if e.0.ends_with("never fires") => {
                never_fires += 1;
                continue;
            }
            Err(e) => panic!("ours rejects '{}': {e}", g.ours),
        };
        let theirs = croner_parse(&g.croner);
        let tz: Tz = zone.parse().expect("zone");
        for _ in 0..2 {
            let secs = FROM_S + (rng.next_u64() % (TO_S - FROM_S) as u64) as i64;
            let mut after = secs * 1000 + (rng.next_u64() % 1000) as i64 * i64::from(rng.pct(50));
            for _ in 0..3 {
                let want = croner_next(&theirs, tz, after);
                match ours.next_after(after) {
                    Some(got) => {
                        assert_eq!(Some(got), want, "'{}' (croner: '{}') in {zone} after {after} ms", g.ours, g.croner);
                        runs += 1;
                        after = got;
                    }
                    None => {
                        // Ours looks ~10 years ahead; croner further.
                        let horizon = after + HORIZON_DAYS * DAY_SECS * 1000;
                        assert!(want.is_none_or(|t| t > horizon), "'{}' in {zone} after {after}: ours None, croner {want:?}", g.ours);
                        break;
                    }
                }
            }
        }
        compared += 1;
        zones_used[zone_index] += 1;
        rewritten += usize::from(g.day_rule_rewritten);
        six_fields += usize::from(g.ours.split(' ').count() == 6);
    }
    eprintln!("compared {compared}, runs {runs}, never fires {never_fires}, day rule rewritten {rewritten}, six fields {six_fields}, zones {zones_used:?}");
    // The mix is what the comment at the top says it is.
    assert!(runs > compared * 5, "runs compared: {runs}");
    assert!(never_fires < compared / 100, "never fires: {never_fires}");
    assert!(rewritten > compared / 25 && rewritten < compared / 4, "day rule rewritten: {rewritten}");
    assert!(six_fields > compared / 3 && six_fields < compared / 2, "six fields: {six_fields}");
    assert!(zones_used.iter().all(|&n| n > compared / 4), "zones: {zones_used:?}");
}

#[test]
fn cron_generated_patterns_cover_the_syntax() {
    // The generator reaches every construct the comment at the top lists.
    let mut rng = Rng(0x5EED_C0DE_2026);
    let patterns: Vec<Generated> = (0..5_000).map(|_| generate(&mut rng)).collect();
    let has = |pred: &dyn Fn(&Generated) -> bool| patterns.iter().any(pred);
    let dow = |g: &Generated| g.ours.rsplit(' ').next().unwrap_or("").to_string();
    let month = |g: &Generated| g.ours.split(' ').rev().nth(1).unwrap_or("").to_string();
    assert!(has(&|g| g.ours.split(' ').count() == 5));
    assert!(has(&|g| g.ours.split(' ').count() == 6));
    assert!(has(&|g| g.ours.contains('?')));
    assert!(has(&|g| g.ours.contains(',')));
    assert!(has(&|g| g.ours.contains("*/")));
    assert!(has(&|g| g.ours.split([' ', ',']).any(|i| i.contains('-') && i.contains('/'))));
    assert!(has(&|g| g.ours.split([' ', ',']).any(|i| !i.contains('-') && !i.starts_with('*') && i.contains('/'))));
    assert!(has(&|g| month(g).contains("jan") || month(g).contains("Dec") || month(g).contains("JUN")));
    assert!(has(&|g| dow(g).to_ascii_uppercase().contains("FRI")));
    assert!(has(&|g| dow(g).split(',').any(|i| i.ends_with("-sun") && !i.starts_with('0'))));
    assert!(has(&|g| dow(g).split(',').any(|i| i.eq_ignore_ascii_case("SUN-SUN"))));
    assert!(has(&|g| dow(g).split([',', '-', '/']).any(|v| v == "7")));
    assert!(has(&|g| g.day_rule_rewritten));
    assert!(has(&|g| g.ours != g.croner && !g.day_rule_rewritten));
}

#[test]
fn cron_macros_agree_with_croner() {
    let after = DateTime::parse_from_rfc3339("2026-05-10T12:07:00Z").expect("date").timestamp_millis();
    // Croner has no @midnight; it is @daily.
    for (ours, theirs) in [
        ("@yearly", "@yearly"),
        ("@annually", "@annually"),
        ("@monthly", "@monthly"),
        ("@weekly", "@weekly"),
        ("@daily", "@daily"),
        ("@midnight", "@daily"),
        ("@hourly", "@hourly"),
    ] {
        let (c, r) = (Cron::parse(ours, "UTC").expect("macro"), croner_parse(theirs));
        let mut t = after;
        for _ in 0..3 {
            let got = c.next_after(t).expect("fires");
            assert_eq!(Some(got), croner_next(&r, Tz::UTC, t), "{ours}");
            t = got;
        }
    }
}

/// The rewrites above are real differences: without them croner answers otherwise.
#[test]
fn cron_known_differences_from_croner() {
    let after = DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z").expect("date").timestamp_millis(); // a Sunday
    let day = |d: u32| NaiveDate::from_ymd_opt(2026, 3, d).and_then(|x| x.and_hms_opt(0, 0, 0)).expect("date").and_utc().timestamp_millis();
    let ours = |p: &str| Cron::parse(p, "UTC").expect("parses").next_after(after);
    let theirs = |p: &str| croner_next(&croner_parse(p), Tz::UTC, after);
    // Odd days that are Mondays (Vixie: `*/2` leaves the weekday in charge) / odd days or Mondays.
    assert_eq!(ours("0 0 */2 * MON"), Some(day(9)));
    assert_eq!(theirs("0 0 */2 * MON"), Some(day(2)));
    assert_eq!(theirs("0 0 */2 * +MON"), Some(day(9)));
    // Monday and Thursday / Monday, Thursday and Sunday (7).
    assert_eq!(ours("0 0 * * 1/3"), Some(day(2)));
    assert_eq!(ours("0 0 * * SUN"), Some(day(8)));
    assert_eq!(Cron::parse("0 0 * * 1/3", "UTC").expect("parses").next_after(day(5)), Some(day(9)));
    assert_eq!(croner_next(&croner_parse("0 0 * * 1/3"), Tz::UTC, day(5)), Some(day(8)));
    // Sunday / every day.
    assert_eq!(ours("0 0 * * SUN-SUN"), Some(day(8)));
    assert_eq!(theirs("0 0 * * SUN-SUN"), Some(day(2)));
}

// ---- DST table ---------------------------------------------------------------------------------

/// A local wall-clock time on `date` in `tz`: "02:30", or "02:30a" / "02:30b" for the first /
/// second pass through a fall-back overlap. A time in a gap is a mistake in the table.
fn wall(tz: Tz, date: NaiveDate, text: &str) -> i64 {
    let (hm, pass) = match text.strip_suffix(['a', 'b']) {
        Some(hm) => (hm, text.chars().last()),
        None => (text, None),
    };
    let (h, m) = hm.split_once(':').expect("HH:MM");
    let naive = date.and_hms_opt(h.parse().expect("hour"), m.parse().expect("minute"), 0).expect("time");
    match (tz.from_local_datetime(&naive), pass) {
        (LocalResult::Single(t), None) => t.timestamp_millis(),
        (LocalResult::Ambiguous(a, b), Some(p)) => {
            let (first, second) = if a < b { (a, b) } else { (b, a) };
            if p == 'a' { first } else { second }.timestamp_millis()
        }
        (r, p) => panic!("{text} on {date} in {tz}: {r:?} does not fit the pass marker {p:?}"),
    }
}

/// One transition: the zone, the local date and the instant (UTC, RFC 3339) of the change.
struct Transition {
    zone: &'static str,
    date: (i32, u32, u32),
    change: &'static str,
}

const PARIS_SPRING: Transition = Transition { zone: "Europe/Paris", date: (2026, 3, 29), change: "2026-03-29T01:00:00Z" };
const PARIS_FALL: Transition = Transition { zone: "Europe/Paris", date: (2026, 10, 25), change: "2026-10-25T01:00:00Z" };
const NEW_YORK_SPRING: Transition = Transition { zone: "America/New_York", date: (2026, 3, 8), change: "2026-03-08T07:00:00Z" };
const NEW_YORK_FALL: Transition = Transition { zone: "America/New_York", date: (2026, 11, 1), change: "2026-11-01T06:00:00Z" };
/// Lord Howe moves by 30 minutes: 02:00 -> 02:30 in October, 02:00 -> 01:30 in April.
const LORD_HOWE_SPRING: Transition = Transition { zone: "Australia/Lord_Howe", date: (2026, 10, 4), change: "2026-10-03T15:30:00Z" };
const LORD_HOWE_FALL: Transition = Transition { zone: "Australia/Lord_Howe", date: (2026, 4, 5), change: "2026-04-04T15:00:00Z" };

/// The runs in [change - 2 h, change + 2 h): ours by hand, croner's when it differs.
struct Row {
    at: Transition,
    pattern: &'static str,
    ours: &'static [&'static str],
    croner: Option<&'static [&'static str]>,
}

const QUARTERS_SPRING: &[&str] = &[
    "00:00", "00:15", "00:30", "00:45", "01:00", "01:15", "01:30", "01:45", // before the gap
    "03:00", "03:15", "03:30", "03:45", "04:00", "04:15", "04:30", "04:45",
];

fn dst_table() -> Vec<Row> {
    let row = |at, pattern, ours| Row { at, pattern, ours, croner: None };
    vec![
        // Paris, 2026-03-29: 02:00 CET -> 03:00 CEST. Window 00:00 CET - 05:00 CEST.
        row(PARIS_SPRING, "30 2 * * *", &["03:00"]),
        row(PARIS_SPRING, "0 * * * *", &["00:00", "01:00", "03:00", "04:00"]),
        row(PARIS_SPRING, "*/15 * * * *", QUARTERS_SPRING),
        row(PARIS_SPRING, "0 30 1 * * *", &["01:30"]),
        // Paris, 2026-10-25: 03:00 CEST -> 02:00 CET. Window 01:00 CEST - 04:00 CET.
        row(PARIS_FALL, "30 2 * * *", &["02:30a"]),
        row(PARIS_FALL, "0 * * * *", &["01:00", "02:00a", "02:00b", "03:00"]),
        row(
            PARIS_FALL,
            "*/15 * * * *",
            &[
                "01:00", "01:15", "01:30", "01:45", "02:00a", "02:15a", "02:30a", "02:45a", "02:00b", "02:15b", "02:30b", "02:45b",
                "03:00", "03:15", "03:30", "03:45",
            ],
        ),
        row(PARIS_FALL, "0 30 1 * * *", &["01:30"]),
        // New York, 2026-03-08: 02:00 EST -> 03:00 EDT. Window 00:00 EST - 05:00 EDT.
        row(NEW_YORK_SPRING, "30 2 * * *", &["03:00"]),
        row(NEW_YORK_SPRING, "0 * * * *", &["00:00", "01:00", "03:00", "04:00"]),
        row(NEW_YORK_SPRING, "*/15 * * * *", QUARTERS_SPRING),
        row(NEW_YORK_SPRING, "0 30 1 * * *", &["01:30"]),
        // New York, 2026-11-01: 02:00 EDT -> 01:00 EST. Window 00:00 EDT - 03:00 EST.
        row(NEW_YORK_FALL, "30 2 * * *", &["02:30"]),
        row(NEW_YORK_FALL, "0 * * * *", &["00:00", "01:00a", "01:00b", "02:00"]),
        row(
            NEW_YORK_FALL,
            "*/15 * * * *",
            &[
                "00:00", "00:15", "00:30", "00:45", "01:00a", "01:15a", "01:30a", "01:45a", "01:00b", "01:15b", "01:30b", "01:45b",
                "02:00", "02:15", "02:30", "02:45",
            ],
        ),
        row(NEW_YORK_FALL, "0 30 1 * * *", &["01:30a"]),
        // Lord Howe, 2026-10-04: 02:00 +10:30 -> 02:30 +11. Window 00:00 +10:30 - 04:30 +11.
        row(LORD_HOWE_SPRING, "30 2 * * *", &["02:30"]),
        // Ours: 02:00 is in the gap and collapses into 02:30, half an hour before 03:00.
        // Croner counts `0 * * * *` as an interval job and drops the gap match.
        Row {
            at: LORD_HOWE_SPRING,
            pattern: "0 * * * *",
            ours: &["00:00", "01:00", "02:30", "03:00", "04:00"],
            croner: Some(&["00:00", "01:00", "03:00", "04:00"]),
        },
        row(
            LORD_HOWE_SPRING,
            "*/15 * * * *",
            &[
                "00:00", "00:15", "00:30", "00:45", "01:00", "01:15", "01:30", "01:45", "02:30", "02:45", "03:00", "03:15", "03:30",
                "03:45", "04:00", "04:15",
            ],
        ),
        row(LORD_HOWE_SPRING, "0 30 1 * * *", &["01:30"]),
        // Lord Howe, 2026-04-05: 02:00 +11 -> 01:30 +10:30. Window 00:00 +11 - 03:30 +10:30.
        row(LORD_HOWE_FALL, "30 2 * * *", &["02:30"]),
        row(LORD_HOWE_FALL, "0 * * * *", &["00:00", "01:00", "02:00", "03:00"]),
        row(
            LORD_HOWE_FALL,
            "*/15 * * * *",
            &[
                "00:00", "00:15", "00:30", "00:45", "01:00", "01:15", "01:30a", "01:45a", "01:30b", "01:45b", "02:00", "02:15", "02:30",
                "02:45", "03:00", "03:15",
            ],
        ),
        row(LORD_HOWE_FALL, "0 30 1 * * *", &["01:30a"]),
        // Where the policies part. Croner calls a pattern "fixed-time" only when second, minute
        // and hour are single values; anything else drops its gap matches and fires in both
        // passes of an overlap. Ours keys on the hour field alone.
        // A daily job at 02:00 and 02:30: croner skips the day.
        Row { at: PARIS_SPRING, pattern: "0,30 2 * * *", ours: &["03:00"], croner: Some(&[]) },
        // Half past every hour: ours fires 02:30's run at 03:00, croner drops it.
        Row {
            at: PARIS_SPRING,
            pattern: "30 * * * *",
            ours: &["00:30", "01:30", "03:00", "03:30", "04:30"],
            croner: Some(&["00:30", "01:30", "03:30", "04:30"]),
        },
        // Daily at 01:00, 02:00 and 03:00: croner runs 02:00 twice.
        Row {
            at: PARIS_FALL,
            pattern: "0 1-3 * * *",
            ours: &["01:00", "02:00a", "03:00"],
            croner: Some(&["01:00", "02:00a", "02:00b", "03:00"]),
        },
        Row {
            at: NEW_YORK_FALL,
            pattern: "*/30 1 * * *",
            ours: &["01:00a", "01:30a"],
            croner: Some(&["01:00a", "01:30a", "01:00b", "01:30b"]),
        },
    ]
}

#[test]
fn cron_dst_table_against_croner() {
    let mut differing = 0;
    for row in dst_table() {
        let Transition { zone, date: (y, m, d), change } = row.at;
        let tz: Tz = zone.parse().expect("zone");
        let date = NaiveDate::from_ymd_opt(y, m, d).expect("date");
        let change_ms = DateTime::parse_from_rfc3339(change).expect("instant").timestamp_millis();
        // The table's instant of the change is the one the tz database has.
        let off = |t: i64| tz.offset_from_utc_datetime(&DateTime::from_timestamp_millis(t).expect("t").naive_utc());
        assert_ne!(off(change_ms - 1000), off(change_ms), "{zone} {change}");
        let (from, to) = (change_ms - 2 * 3_600_000, change_ms + 2 * 3_600_000);
        let label = format!("'{}' in {zone} around {change}", row.pattern);

        let ours = Cron::parse(row.pattern, zone).expect("parses");
        let mut got = Vec::new();
        let mut t = from - 1;
        while let Some(next) = ours.next_after(t).filter(|&n| n < to) {
            got.push(next);
            t = next;
        }
        let want: Vec<i64> = row.ours.iter().map(|w| wall(tz, date, w)).collect();
        assert_eq!(got, want, "ours: {label}");

        let theirs = croner_parse(row.pattern);
        let mut got = Vec::new();
        let mut t = DateTime::from_timestamp_millis(from - 1000).expect("from").with_timezone(&tz);
        while let Some(next) = theirs.find_next_occurrence(&t, false).ok().filter(|n| n.timestamp_millis() < to) {
            got.push(next.timestamp_millis());
            t = next;
        }
        let want_croner: Vec<i64> = match row.croner {
            Some(list) => {
                assert_ne!(list, row.ours, "{label}: a croner list is only written where it differs");
                differing += 1;
                list.iter().map(|w| wall(tz, date, w)).collect()
            }
            None => want,
        };
        assert_eq!(got, want_croner, "croner: {label}");
    }
    assert_eq!(differing, 5);
    // Spot checks of the wall-clock notation against plain UTC instants.
    let at = |s: &str| DateTime::parse_from_rfc3339(s).expect("instant").timestamp_millis();
    let paris: Tz = "Europe/Paris".parse().expect("zone");
    let lord_howe: Tz = "Australia/Lord_Howe".parse().expect("zone");
    assert_eq!(wall(paris, NaiveDate::from_ymd_opt(2026, 3, 29).expect("date"), "03:00"), at("2026-03-29T01:00:00Z"));
    assert_eq!(wall(paris, NaiveDate::from_ymd_opt(2026, 10, 25).expect("date"), "02:30a"), at("2026-10-25T00:30:00Z"));
    assert_eq!(wall(paris, NaiveDate::from_ymd_opt(2026, 10, 25).expect("date"), "02:30b"), at("2026-10-25T01:30:00Z"));
    assert_eq!(wall(lord_howe, NaiveDate::from_ymd_opt(2026, 10, 4).expect("date"), "02:30"), at("2026-10-03T15:30:00Z"));
    assert_eq!(wall(lord_howe, NaiveDate::from_ymd_opt(2026, 4, 5).expect("date"), "01:30b"), at("2026-04-04T15:00:00Z"));
}
