//! Query strings: each endpoint's parameters are one struct that derives `Deserialize` (which
//! names the accepted parameters) and `IntoParams` (which documents them). Unknown and repeated
//! parameters are named; the value parsers the endpoints share sit here too.

use serde::de::value::MapDeserializer;
use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Visitor};

use super::FieldError;
use crate::timestamp::Timestamp;

/// Reads a query string into `T`, a struct of `Option<String>` fields: the fields its derive
/// declares are the accepted parameters. Unknown and repeated parameters are named in `errors`
/// and left out.
pub(crate) fn read_query<T: DeserializeOwned + Default>(
    raw: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> T {
    let pairs = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    T::deserialize(QueryDeserializer { pairs, errors }).unwrap_or_else(|error| {
        errors.push(FieldError::new("query", error.to_string()));
        T::default()
    })
}

/// Hands a parameter struct's visitor the pairs it declares, each once.
struct QueryDeserializer<'e> {
    pairs: Vec<(String, String)>,
    errors: &'e mut Vec<FieldError>,
}

impl<'de> Deserializer<'de> for QueryDeserializer<'_> {
    type Error = de::value::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let mut accepted: Vec<(String, QueryValue)> = Vec::with_capacity(self.pairs.len());
        for (key, value) in self.pairs {
            if !fields.contains(&key.as_str()) {
                self.errors.push(FieldError::new(
                    key,
                    format!("unknown parameter; expected one of {}", fields.join(", ")),
                ));
            } else if accepted.iter().any(|(seen, _)| *seen == key) {
                self.errors.push(FieldError::new(
                    key,
                    "given more than once; use a comma-separated list where lists are allowed",
                ));
            } else {
                accepted.push((key, QueryValue(value)));
            }
        }
        visitor.visit_map(MapDeserializer::new(accepted.into_iter()))
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.deserialize_struct("", &[], visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// One parameter's text, which an `Option<String>` field takes as present.
struct QueryValue(String);

impl<'de> IntoDeserializer<'de, de::value::Error> for QueryValue {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for QueryValue {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_string(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

/// A repo or server filter: trimmed, not empty, no control characters.
pub(crate) fn name_filter(
    name: &str,
    value: Option<String>,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let value = value?.trim().to_owned();
    if value.is_empty() || value.chars().any(char::is_control) {
        errors.push(FieldError::new(
            name,
            "must be a non-empty name without control characters",
        ));
    }
    Some(value)
}

/// A comma-separated list of enum values, e.g. `state=OUT_OF_SYNC,ERROR`.
pub(crate) fn list<T>(
    name: &str,
    value: Option<String>,
    parse: impl Fn(&str) -> Option<T>,
    allowed: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<T> {
    let Some(value) = value else {
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

/// A boolean flag: `true` or `false`; absent is false.
pub(crate) fn flag(name: &str, value: Option<String>, errors: &mut Vec<FieldError>) -> bool {
    match value.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            errors.push(FieldError::new(name, "must be true or false"));
            false
        }
    }
}

/// A time: RFC 3339 with an offset, or integer Unix milliseconds.
pub(crate) fn time(
    name: &str,
    value: Option<String>,
    errors: &mut Vec<FieldError>,
) -> Option<Timestamp> {
    let value = value?;
    let parsed = Timestamp::parse_query(&value);
    if parsed.is_none() {
        errors.push(FieldError::new(
            name,
            "must be an RFC 3339 time with an offset or integer Unix milliseconds",
        ));
    }
    parsed
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize)]
    struct Params {
        repo: Option<String>,
        server: Option<String>,
    }

    #[test]
    fn the_struct_names_the_accepted_parameters() {
        let mut errors = Vec::new();
        let params: Params = read_query(Some("repo=a%20b&x=1&repo=c&server="), &mut errors);
        assert_eq!(params.repo.as_deref(), Some("a b"));
        assert_eq!(params.server.as_deref(), Some(""));
        assert_eq!(
            errors,
            [
                FieldError::new("x", "unknown parameter; expected one of repo, server"),
                FieldError::new(
                    "repo",
                    "given more than once; use a comma-separated list where lists are allowed"
                ),
            ]
        );
    }
}
