//! `strftime_now` for chat templates: the local wall-clock time, formatted like Python's
//! `datetime.now().strftime(fmt)` (glibc directives), without a date/time dependency.

use web_time::{SystemTime, UNIX_EPOCH};

/// A broken-down local time (proleptic Gregorian calendar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalTime {
    pub year: i64,
    pub month: u32, // 1..=12
    pub day: u32,   // 1..=31
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
    /// 0 = Sunday .. 6 = Saturday
    pub weekday: u32,
    /// 1..=366
    pub yday: u32,
}

impl LocalTime {
    /// `now` shifted by `utc_offset_s` seconds (east of UTC positive).
    pub fn from_system_time(now: SystemTime, utc_offset_s: i32) -> LocalTime {
        // Before 1970 `duration_since` fails; count backwards then (clocks set that far back are broken,
        // but this must not panic).
        let (secs, micros) = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_micros()),
            Err(e) => {
                let d = e.duration();
                let mut s = -(d.as_secs() as i64);
                let mut us = d.subsec_micros();
                if us > 0 {
                    s -= 1;
                    us = 1_000_000 - us;
                }
                (s, us)
            }
        };
        let local = secs.saturating_add(utc_offset_s as i64);
        let days = local.div_euclid(86_400);
        let rem = local.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        let weekday = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
        let yday = (days - days_from_civil(year, 1, 1)) as u32 + 1;
        LocalTime { year, month, day, hour: rem / 3600, minute: rem / 60 % 60, second: rem % 60, micros, weekday, yday }
    }
}

// Howard Hinnant's civil-date algorithms (exact for the whole i64 day range we can reach).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS: [&str; 12] =
    ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

/// ISO 8601 week-based year and week number.
fn iso_week(t: &LocalTime) -> (i64, u32) {
    let wday_mon = (t.weekday + 6) % 7; // 0 = Monday
    let week = (t.yday as i64 - wday_mon as i64 + 9) / 7; // yday is 1-based
    if week < 1 {
        let prev = t.year - 1;
        let prev_len = days_from_civil(t.year, 1, 1) - days_from_civil(prev, 1, 1);
        let prev_t = LocalTime { year: prev, yday: (t.yday as i64 + prev_len) as u32, ..*t };
        return iso_week(&prev_t);
    }
    let year_len = days_from_civil(t.year + 1, 1, 1) - days_from_civil(t.year, 1, 1);
    if week == 53 && (t.yday as i64 - wday_mon as i64 + 3) > year_len {
        return (t.year + 1, 1);
    }
    (t.year, week as u32)
}

/// Python's `datetime.strftime` on a naive datetime, as CPython on Linux does it (glibc directives and the
/// `-`, `_`, `0` padding flags; `%z` and `%Z` are empty for a naive time; unknown directives are kept).
pub(crate) fn strftime(fmt: &str, t: &LocalTime) -> String {
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flag = None;
        if let Some(&f) = chars.peek() {
            if matches!(f, '-' | '_' | '0' | '^' | '#') {
                flag = Some(f);
                chars.next();
            }
        }
        let Some(d) = chars.next() else {
            out.push('%');
            if let Some(f) = flag {
                out.push(f);
            }
            break;
        };
        let num = |out: &mut String, v: i64, width: usize, default_pad: char| {
            let pad = match flag {
                Some('-') => None,
                Some('_') => Some(' '),
                Some('0') => Some('0'),
                _ => Some(default_pad),
            };
            let s = v.to_string();
            if let Some(p) = pad {
                for _ in s.len()..width {
                    out.push(p);
                }
            }
            out.push_str(&s);
        };
        let text = |out: &mut String, s: &str| {
            if flag == Some('^') {
                out.push_str(&s.to_uppercase());
            } else {
                out.push_str(s);
            }
        };
        let hour12 = match t.hour % 12 { 0 => 12, h => h } as i64;
        match d {
            'a' => text(&mut out, &DAYS[t.weekday as usize][..3]),
            'A' => text(&mut out, DAYS[t.weekday as usize]),
            'b' | 'h' => text(&mut out, &MONTHS[t.month as usize - 1][..3]),
            'B' => text(&mut out, MONTHS[t.month as usize - 1]),
            'C' => num(&mut out, t.year.div_euclid(100), 2, '0'),
            'd' => num(&mut out, t.day as i64, 2, '0'),
            'e' => num(&mut out, t.day as i64, 2, ' '),
            'H' => num(&mut out, t.hour as i64, 2, '0'),
            'k' => num(&mut out, t.hour as i64, 2, ' '),
            'I' => num(&mut out, hour12, 2, '0'),
            'l' => num(&mut out, hour12, 2, ' '),
            'j' => num(&mut out, t.yday as i64, 3, '0'),
            'm' => num(&mut out, t.month as i64, 2, '0'),
            'M' => num(&mut out, t.minute as i64, 2, '0'),
            'S' => num(&mut out, t.second as i64, 2, '0'),
            'f' => num(&mut out, t.micros as i64, 6, '0'),
            'p' => text(&mut out, if t.hour < 12 { "AM" } else { "PM" }),
            'P' => out.push_str(if t.hour < 12 { "am" } else { "pm" }),
            'y' => num(&mut out, t.year.rem_euclid(100), 2, '0'),
            'Y' => num(&mut out, t.year, 1, '0'),
            'G' => num(&mut out, iso_week(t).0, 1, '0'),
            'g' => num(&mut out, iso_week(t).0.rem_euclid(100), 2, '0'),
            'V' => num(&mut out, iso_week(t).1 as i64, 2, '0'),
            'u' => num(&mut out, if t.weekday == 0 { 7 } else { t.weekday } as i64, 1, '0'),
            'w' => num(&mut out, t.weekday as i64, 1, '0'),
            'U' => num(&mut out, (t.yday as i64 - 1 + 7 - t.weekday as i64) / 7, 2, '0'),
            'W' => num(&mut out, (t.yday as i64 - 1 + 7 - ((t.weekday as i64 + 6) % 7)) / 7, 2, '0'),
            'D' => out.push_str(&strftime("%m/%d/%y", t)),
            'F' => out.push_str(&strftime("%Y-%m-%d", t)),
            'T' => out.push_str(&strftime("%H:%M:%S", t)),
            'R' => out.push_str(&strftime("%H:%M", t)),
            'r' => out.push_str(&strftime("%I:%M:%S %p", t)),
            'c' => out.push_str(&strftime("%a %b %e %H:%M:%S %Y", t)),
            'x' => out.push_str(&strftime("%m/%d/%y", t)),
            'X' => out.push_str(&strftime("%H:%M:%S", t)),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            '%' => out.push('%'),
            // Python leaves these empty for a naive datetime.
            'z' | 'Z' => {}
            other => {
                out.push('%');
                if let Some(f) = flag {
                    out.push(f);
                }
                out.push(other);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> LocalTime {
        LocalTime::from_system_time(UNIX_EPOCH + Duration::from_secs(secs), 0)
    }

    #[test]
    fn civil_dates() {
        // 2025-03-07 09:05:03 UTC, a Friday, day 66 of the year.
        let t = at(1_741_338_303);
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute, t.second), (2025, 3, 7, 9, 5, 3));
        assert_eq!((t.weekday, t.yday), (5, 66));
        assert_eq!(strftime("%d %b %Y|%A|%j|%I%p|%-d|%e|%F %T|%%|%Q", &t), "07 Mar 2025|Friday|066|09AM|7| 7|2025-03-07 09:05:03|%|%Q");
        // 2024-12-30 is in ISO week 1 of 2025; 2021-01-03 in week 53 of 2020.
        assert_eq!(strftime("%G-W%V", &at(1_735_516_800)), "2025-W01");
        assert_eq!(strftime("%G-W%V", &at(1_609_632_000)), "2020-W53");
        // Offsets move the wall clock, including across midnight.
        let t = LocalTime::from_system_time(UNIX_EPOCH + Duration::from_secs(1_741_338_303), -10 * 3600);
        assert_eq!(strftime("%Y-%m-%d %H", &t), "2025-03-06 23");
    }
}
