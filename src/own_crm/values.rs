//! Times and numbers as Roistat's senders write them. What these do not read is
//! kept as sent by the caller.

use std::collections::BTreeMap;

use time::{
    OffsetDateTime, PrimitiveDateTime, UtcOffset, format_description::FormatItem,
    macros::format_description,
};

use super::Params;
use crate::domain::Decoding;

/// Values read leniently: one that cannot be read is kept as sent in `extra`, and
/// noted.
pub(super) struct Lenient<'a> {
    params: &'a Params,
    extra: BTreeMap<String, String>,
    notes: Vec<String>,
}

impl<'a> Lenient<'a> {
    pub(super) fn new(params: &'a Params, extra: BTreeMap<String, String>) -> Self {
        Self {
            params,
            extra,
            notes: vec![],
        }
    }

    /// A time, in any of the forms [`parse_roistat_time`] reads.
    pub(super) fn time(&mut self, name: &str) -> Option<OffsetDateTime> {
        self.read(name, "a time", parse_roistat_time)
    }

    /// A count of seconds, in any of the forms [`parse_number`] reads.
    pub(super) fn count(&mut self, name: &str) -> Option<u64> {
        self.read(name, "a number", parse_number)
    }

    fn read<T>(&mut self, name: &str, what: &str, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
        let raw = self
            .params
            .get(name)
            .map(str::trim)
            .filter(|raw| !raw.is_empty())?;
        let parsed = parse(raw);
        if parsed.is_none() {
            self.notes.push(format!(
                "{name} {raw:?} cannot be read as {what}: kept as sent in extra"
            ));
            self.extra.insert(name.to_owned(), raw.to_owned());
        }
        parsed
    }

    /// What was left in `extra`, and the decoding notes so far.
    pub(super) fn finish(self) -> (BTreeMap<String, String>, Decoding) {
        let decoding = Decoding {
            notes: self.notes,
            ..Decoding::default()
        };
        (self.extra, decoding)
    }
}

/// Reads Roistat's times, as its pages and receivers show them:
/// `2015-06-28 09:12:54` (the seed), `2019-01-01T11:11:11` (yii2-roistat),
/// `2016-06-19T00:32:12+0000` (Roistat's orders API), `2019-01-01T11:11:11.000Z`;
/// a space or `T` between date and time, seconds and fractions optional, then `Z`,
/// `±HH:MM`, `±HHMM`, `±HH` or nothing (UTC, as the seed says); or Unix seconds
/// (with a fraction or not). The result is in UTC.
pub fn parse_roistat_time(raw: &str) -> Option<OffsetDateTime> {
    const FORMATS: &[&[FormatItem<'static>]] = &[
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]"),
    ];
    let raw = raw.trim();
    if let Some(time) = unix_time(raw) {
        return Some(time);
    }
    let (local, offset) = split_offset(raw)?;
    let local = local.replacen(['t'], "T", 1);
    let local = local.replacen(',', ".", 1);
    FORMATS
        .iter()
        .find_map(|format| PrimitiveDateTime::parse(&local, format).ok())
        .map(|time| time.assume_offset(offset).to_offset(UtcOffset::UTC))
}

/// Unix seconds, with a fraction or not.
fn unix_time(raw: &str) -> Option<OffsetDateTime> {
    let (seconds, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    let digits = |text: &str| text.bytes().all(|byte| byte.is_ascii_digit());
    if seconds.is_empty() || seconds.len() > 12 || !digits(seconds) || !digits(fraction) {
        return None;
    }
    let mut nanos = 0i64;
    for (place, digit) in fraction.bytes().take(9).enumerate() {
        nanos += i64::from(digit - b'0') * 10i64.pow(8 - place as u32);
    }
    let time = OffsetDateTime::from_unix_timestamp(seconds.parse().ok()?).ok()?;
    Some(time + time::Duration::nanoseconds(nanos))
}

/// A time's text before its offset, and the offset (UTC when there is none).
fn split_offset(raw: &str) -> Option<(&str, UtcOffset)> {
    if let Some(local) = raw.strip_suffix(['Z', 'z']) {
        return Some((local, UtcOffset::UTC));
    }
    // The date's own dashes come first: an offset's sign follows the time.
    let time_start = raw.find([' ', 'T', 't']).unwrap_or(raw.len());
    let Some(sign_at) = raw[time_start..].find(['+', '-']).map(|at| time_start + at) else {
        return Some((raw, UtcOffset::UTC));
    };
    let (local, offset) = raw.split_at(sign_at);
    let sign: i8 = if offset.starts_with('-') { -1 } else { 1 };
    let digits: String = offset[1..].chars().filter(|c| *c != ':').collect();
    if !matches!(digits.len(), 2 | 4) || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let hours: i8 = digits[..2].parse().ok()?;
    let minutes: i8 = match &digits[2..] {
        "" => 0,
        text => text.parse().ok()?,
    };
    let offset = UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()?;
    Some((local.trim_end(), offset))
}

/// Reads a non-negative number as Roistat's senders write it: `42`, `42.0`,
/// `42.50`, ` 42 ` (a fraction is rounded to the nearest whole).
pub fn parse_number(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let (whole, fraction) = raw.split_once(['.', ',']).unwrap_or((raw, ""));
    let digits = |text: &str| text.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let round_up = fraction.bytes().next().is_some_and(|digit| digit >= b'5');
    whole.checked_add(u64::from(round_up))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_roistat_forms() {
        for raw in [
            "2019-01-01 11:11:11",
            "2019-01-01T11:11:11",
            "2019-01-01T11:11:11Z",
            "2019-01-01T11:11:11.000Z",
            "2019-01-01 11:11:11.000",
            "2019-01-01T11:11:11+0000",
            "2019-01-01T14:11:11+0300",
            "2019-01-01T14:11:11+03:00",
            "2019-01-01T14:11:11+03",
            "2019-01-01T08:11:11-03:00",
            "2019-01-01 14:11:11 +03:00",
            " 1546341071 ",
            "1546341071.000",
        ] {
            assert_eq!(
                parse_roistat_time(raw).map(OffsetDateTime::unix_timestamp),
                Some(1_546_341_071),
                "{raw}"
            );
        }
        let fraction = parse_roistat_time("2019-01-01T11:11:11.25Z").unwrap();
        assert_eq!(fraction.millisecond(), 250);
        assert_eq!(
            parse_roistat_time("2015-06-28 09:12")
                .unwrap()
                .unix_timestamp(),
            1_435_482_720
        );
        for unreadable in ["01.01.2019", "soon", "2019-01-01T11:11:11+3", "", "-5"] {
            assert_eq!(parse_roistat_time(unreadable), None, "{unreadable}");
        }
    }

    #[test]
    fn numbers_in_the_forms_senders_write() {
        for (raw, number) in [
            ("42", 42),
            ("42.0", 42),
            ("42.50", 43),
            (" 42 ", 42),
            ("0", 0),
        ] {
            assert_eq!(parse_number(raw), Some(number), "{raw}");
        }
        for unreadable in ["", "-1", "4 2", "long", "1e3", "."] {
            assert_eq!(parse_number(unreadable), None, "{unreadable}");
        }
    }
}
