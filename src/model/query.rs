//! Query strings: known parameters only, each at most once, and the value parsers they share.

use super::FieldError;
use crate::timestamp::Timestamp;

/// Splits raw query pairs into known parameters, rejecting unknown and repeated ones by name.
#[derive(Debug)]
pub(crate) struct QueryPairs<'a> {
    pairs: Vec<(String, String)>,
    known: &'a [&'a str],
}

impl<'a> QueryPairs<'a> {
    pub(crate) fn parse(
        raw: Option<&str>,
        known: &'a [&'a str],
        errors: &mut Vec<FieldError>,
    ) -> QueryPairs<'a> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if !known.contains(&key.as_ref()) {
                errors.push(FieldError::new(
                    key.clone(),
                    format!("unknown parameter; expected one of {}", known.join(", ")),
                ));
            } else if pairs.iter().any(|(seen, _)| *seen == key) {
                errors.push(FieldError::new(
                    key.clone(),
                    "given more than once; use a comma-separated list where lists are allowed",
                ));
            } else {
                pairs.push((key.into_owned(), value.into_owned()));
            }
        }
        QueryPairs { pairs, known }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        debug_assert!(self.known.contains(&name));
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub(crate) fn name_filter(&self, name: &str, errors: &mut Vec<FieldError>) -> Option<String> {
        let value = self.get(name)?.trim();
        if value.is_empty() || value.chars().any(char::is_control) {
            errors.push(FieldError::new(
                name,
                "must be a non-empty name without control characters",
            ));
        }
        Some(value.to_owned())
    }

    /// A comma-separated list of enum values, e.g. `state=OUT_OF_SYNC,ERROR`.
    pub(crate) fn list<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Option<T>,
        allowed: &str,
        errors: &mut Vec<FieldError>,
    ) -> Vec<T> {
        let Some(value) = self.get(name) else {
            return Vec::new();
        };
        let mut parsed = Vec::new();
        for item in value.split(',') {
            match parse(item.trim()) {
                Some(item) => parsed.push(item),
                None => {
                    errors.push(FieldError::new(
                        name,
                        format!("must be one or more of {allowed}, comma-separated; got {item:?}"),
                    ));
                    return Vec::new();
                }
            }
        }
        parsed
    }

    pub(crate) fn time(&self, name: &str, errors: &mut Vec<FieldError>) -> Option<Timestamp> {
        let value = self.get(name)?;
        let parsed = Timestamp::parse_query(value);
        if parsed.is_none() {
            errors.push(FieldError::new(
                name,
                "must be an RFC 3339 time with an offset or integer Unix milliseconds",
            ));
        }
        parsed
    }
}
