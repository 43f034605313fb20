//! Time arguments and time display: RFC 3339 or Unix milliseconds.
//!
//! `--not-before 2026-01-01T00:00:00Z`, `--not-before 2026-01-01T01:00:00+01:00`
//! and `--not-before 1767225600000` name the same instant. Output shows
//! RFC 3339 in UTC next to the milliseconds. The conversion uses the
//! proleptic Gregorian calendar (days-from-civil), so no time zone database
//! or date crate is needed.

/// Milliseconds per second.
const MS_PER_SECOND: i64 = 1_000;
/// Seconds per day.
const SECONDS_PER_DAY: i64 = 86_400;
/// Digits of a fraction of a second kept (milliseconds).
const FRACTION_DIGITS_KEPT: usize = 3;
/// Digits of a fraction of a second accepted (nanoseconds).
const FRACTION_DIGITS_MAX: usize = 9;

/// Parses Unix milliseconds (all digits) or an RFC 3339 timestamp into Unix
/// milliseconds. Instants before 1970 are refused.
pub fn parse_time_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("{text:?} is too large for Unix milliseconds"));
    }
    let unix_ms = parse_rfc3339_ms(text).ok_or_else(|| {
        format!("{text:?} is neither Unix milliseconds nor an RFC 3339 time like 2026-01-01T00:00:00Z")
    })?;
    u64::try_from(unix_ms).map_err(|_| format!("{text:?} is before 1970-01-01T00:00:00Z"))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into Unix milliseconds
/// (fractions below a millisecond are dropped).
fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < "YYYY-MM-DDTHH:MM:SSZ".len() {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let separators_ok = bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b't' | b' ')
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !separators_ok {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &text[19..];
    let mut fraction_ms = 0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let n_digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if n_digits == 0 || n_digits > FRACTION_DIGITS_MAX {
            return None;
        }
        let kept = &after_dot[..n_digits.min(FRACTION_DIGITS_KEPT)];
        let scale = 10i64.pow(u32::try_from(FRACTION_DIGITS_KEPT - kept.len()).ok()?);
        fraction_ms = kept.parse::<i64>().ok()? * scale;
        rest = &after_dot[n_digits..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let offset = &rest[1..];
            if offset.len() != 5 || offset.as_bytes()[2] != b':' {
                return None;
            }
            let digits = |range: std::ops::Range<usize>| -> Option<i64> {
                let part = offset.get(range)?;
                part.bytes().all(|byte| byte.is_ascii_digit()).then(|| part.parse().ok()).flatten()
            };
            let (offset_hours, offset_minutes) = (digits(0..2)?, digits(3..5)?);
            if offset_hours > 23 || offset_minutes > 59 {
                return None;
            }
            sign * (offset_hours * 3_600 + offset_minutes * 60)
        }
    };
    let seconds =
        days_from_civil(year, month, day) * SECONDS_PER_DAY + hour * 3_600 + minute * 60 + second - offset_seconds;
    Some(seconds * MS_PER_SECOND + fraction_ms)
}

/// RFC 3339 in UTC: `2026-01-01T00:00:00Z`, with `.123` when the
/// milliseconds are not zero.
pub fn format_rfc3339(unix_ms: i64) -> String {
    let seconds = unix_ms.div_euclid(MS_PER_SECOND);
    let millis = unix_ms.rem_euclid(MS_PER_SECOND);
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (second_of_day / 3_600, second_of_day % 3_600 / 60, second_of_day % 60);
    let fraction = if millis == 0 { String::new() } else { format!(".{millis:03}") };
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}Z")
}

/// Unix milliseconds now, rounded down to the second.
pub fn now_ms_rounded_to_second() -> Result<u64, String> {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "the system clock is before 1970".to_owned())?;
    elapsed.as_secs().checked_mul(1_000).ok_or_else(|| "the system clock is out of range".to_owned())
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day number since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_milliseconds_and_rfc3339_forms_of_one_instant() {
        for text in [
            "1767225600000",
            "2026-01-01T00:00:00Z",
            "2026-01-01t00:00:00z",
            "2026-01-01 00:00:00Z",
            "2026-01-01T01:30:00+01:30",
            "2025-12-31T23:00:00-01:00",
            "2026-01-01T00:00:00.000Z",
        ] {
            assert_eq!(parse_time_ms(text), Ok(1_767_225_600_000), "{text}");
        }
        assert_eq!(parse_time_ms("2026-01-01T00:00:00.1239Z"), Ok(1_767_225_600_123));
        assert_eq!(parse_time_ms("2026-01-01T00:00:00.5Z"), Ok(1_767_225_600_500));
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time_ms("2024-02-29T12:00:00Z"), Ok(1_709_208_000_000));
    }

    #[test]
    fn refuses_malformed_times() {
        for text in [
            "",
            "tomorrow",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00.Z",
            "1969-12-31T23:59:59Z",
            "99999999999999999999999",
            "-5",
        ] {
            assert!(parse_time_ms(text).is_err(), "{text} should be refused");
        }
    }

    #[test]
    fn formats_utc_and_round_trips() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_767_225_600_000), "2026-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_709_208_000_042), "2024-02-29T12:00:00.042Z");
        for unix_ms in [0i64, 951_782_400_000, 1_767_225_600_123, 4_102_444_800_000, 253_402_300_799_999] {
            let text = format_rfc3339(unix_ms);
            assert_eq!(parse_time_ms(&text).map(i64::try_from), Ok(Ok(unix_ms)), "{text}");
        }
    }
}
