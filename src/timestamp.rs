//! Instants as the service stores and speaks them: UTC milliseconds, written as RFC 3339 with three
//! fraction digits.

use std::fmt;

use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch, UTC. Every time the API returns is one of these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current wall-clock time, truncated to the millisecond.
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 with a mandatory offset (`Z` or `+02:00`), keeping millisecond precision
    /// (finer digits are truncated toward the past).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .map(Self::from_datetime)
    }

    /// Parses a query-string time: RFC 3339, or integer Unix milliseconds as Grafana's `${__from}`
    /// sends them. A `+` offset that arrived unencoded (and so decoded as a space) is accepted too.
    pub fn parse_query(text: &str) -> Option<Self> {
        if let Ok(millis) = text.parse::<i64>() {
            return Some(Self(millis));
        }
        Self::parse_rfc3339(text).or_else(|| Self::parse_rfc3339(&text.replacen(' ', "+", 1)))
    }

    fn from_datetime(at: OffsetDateTime) -> Self {
        let nanos = at.unix_timestamp_nanos();
        Self(i64::try_from(nanos.div_euclid(1_000_000)).unwrap_or(i64::MAX))
    }

    /// Shifts by a signed number of milliseconds, saturating at the ends of the range.
    pub const fn plus_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }
}

/// Milliseconds of year 0000-01-01T00:00:00Z and of the first instant after 9999: the range the
/// fixed-width format covers.
const FIRST_MILLIS: i64 = -62_167_219_200_000;
const END_MILLIS: i64 = 253_402_300_800_000;

impl Timestamp {
    /// Appends `2026-04-21T10:30:00.000Z` to `out`: by hand, without allocating, as the integrity
    /// chain writes two per record. Instants outside years 0..=9999, which validation never
    /// admits, are written as `<millis>ms`.
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        if !(FIRST_MILLIS..END_MILLIS).contains(&self.0) {
            out.extend_from_slice(format!("{}ms", self.0).as_bytes());
            return;
        }
        let days = self.0.div_euclid(86_400_000);
        let of_day = self.0.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        let digits = |out: &mut Vec<u8>, value: i64, width: u32| {
            for place in (0..width).rev() {
                // Each digit is 0..=9.
                out.push(b'0' + u8::try_from(value / 10_i64.pow(place) % 10).unwrap_or(0));
            }
        };
        digits(out, year, 4);
        out.push(b'-');
        digits(out, month, 2);
        out.push(b'-');
        digits(out, day, 2);
        out.push(b'T');
        digits(out, of_day / 3_600_000, 2);
        out.push(b':');
        digits(out, of_day / 60_000 % 60, 2);
        out.push(b':');
        digits(out, of_day / 1000 % 60, 2);
        out.push(b'.');
        digits(out, of_day % 1000, 3);
        out.push(b'Z');
    }
}

/// The proleptic Gregorian (year, month, day) of a day count from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
const fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Vec::with_capacity(24);
        self.write_rfc3339(&mut text);
        // Only ASCII is written.
        f.write_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::format_description;

    use super::*;

    #[test]
    fn formats_with_three_fraction_digits_in_utc() {
        let at = Timestamp::parse_rfc3339("2026-04-21T12:30:00.123456+02:00").unwrap();
        assert_eq!(at.to_string(), "2026-04-21T10:30:00.123Z");
        assert_eq!(
            Timestamp::parse_rfc3339("2026-04-21T10:30:00Z")
                .unwrap()
                .to_string(),
            "2026-04-21T10:30:00.000Z"
        );
    }

    /// The hand-written formatter agrees with the `time` crate's over the whole range it covers,
    /// leap days, century years and both ends included.
    #[test]
    fn hand_formatting_matches_the_time_crate() {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let reference = |millis: i64| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
                .unwrap()
                .format(&format)
                .unwrap()
        };
        let mut samples = vec![
            FIRST_MILLIS,
            END_MILLIS - 1,
            -1,
            0,
            951_782_400_000,    // 2000-02-29
            4_107_542_400_000,  // 2100-03-01
            1_776_767_400_123,  // 2026-04-21T10:30:00.123
            -2_208_988_800_001, // 1899-12-31T23:59:59.999
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let span = u64::try_from(END_MILLIS - FIRST_MILLIS).unwrap();
            samples.push(FIRST_MILLIS + i64::try_from(state % span).unwrap());
        }
        for millis in samples {
            assert_eq!(
                Timestamp::from_millis(millis).to_string(),
                reference(millis),
                "{millis}"
            );
        }
        assert_eq!(
            Timestamp::from_millis(END_MILLIS).to_string(),
            format!("{END_MILLIS}ms")
        );
    }

    #[test]
    fn truncates_sub_millisecond_digits_toward_the_past() {
        let before_epoch = Timestamp::parse_rfc3339("1969-12-31T23:59:59.9995Z").unwrap();
        assert_eq!(before_epoch.as_millis(), -1);
    }

    #[test]
    fn rejects_times_without_offset() {
        assert_eq!(Timestamp::parse_rfc3339("2026-04-21T10:30:00"), None);
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn query_times_accept_millis_and_unencoded_plus() {
        assert_eq!(
            Timestamp::parse_query("1776767400000"),
            Some(Timestamp::from_millis(1_776_767_400_000))
        );
        assert_eq!(
            Timestamp::parse_query("2026-04-21T12:30:00 02:00"),
            Timestamp::parse_rfc3339("2026-04-21T10:30:00Z")
        );
    }
}
