//! Instants as the service stores and speaks them: UTC milliseconds, written as RFC 3339 with three
//! fraction digits.

use std::fmt;

use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

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

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let formatted = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|at| at.format(&format).ok());
        match formatted {
            Some(text) => f.write_str(&text),
            // Only reachable for instants outside years 0..=9999, which validation never admits.
            None => write!(f, "{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
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
