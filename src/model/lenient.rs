//! Lenient JSON reading, in the same single pass as parsing: a value of the wrong JSON type
//! becomes an error for that value alone, and an object's unknown and repeated keys are named
//! instead of failing the document (or, for a repeated key, silently letting the last copy win).
//! So one read of a body finds every bad field, and the struct that derives `Deserialize` and
//! `ToSchema` is the only statement of the schema.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::FieldError;

/// A field as read: absent or null, a value of the type it must have, or something else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Lenient<T> {
    /// Absent, or `null`.
    #[default]
    Missing,
    /// A value of the right JSON type; a struct may still hold fields that were not.
    Read(T),
    /// A value of the wrong JSON type; the message says what it must be.
    Wrong(&'static str),
}

impl<T> Lenient<T> {
    /// The value of a required field, or `None` with the field named in `errors`.
    pub fn required(self, field: &str, errors: &mut Vec<FieldError>) -> Option<T> {
        match self {
            Self::Read(value) => Some(value),
            Self::Missing => {
                errors.push(FieldError::new(field, "is required"));
                None
            }
            Self::Wrong(expected) => {
                errors.push(FieldError::new(field, expected));
                None
            }
        }
    }

    /// The value of an optional field: `Some(None)` when absent or null, `None` when it had the
    /// wrong type (then named in `errors`), so rules that need it can step aside.
    pub fn optional(self, field: &str, errors: &mut Vec<FieldError>) -> Option<Option<T>> {
        match self {
            Self::Read(value) => Some(Some(value)),
            Self::Missing => Some(None),
            Self::Wrong(expected) => {
                errors.push(FieldError::new(field, expected));
                None
            }
        }
    }
}

/// How a type reads from JSON: each hook returns `None` for a value it cannot be.
pub trait Shape<'de>: Sized {
    /// The error for a value of the wrong JSON type, e.g. "must be a string".
    const EXPECTED: &'static str;

    fn from_text(_text: &str) -> Option<Self> {
        None
    }

    fn from_integer(_number: i64) -> Option<Self> {
        None
    }

    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<Skipped>()?.is_some() {}
        Ok(None)
    }

    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<Skipped, Skipped>()?.is_some() {}
        Ok(None)
    }
}

impl Shape<'_> for String {
    const EXPECTED: &'static str = "must be a string";

    fn from_text(text: &str) -> Option<Self> {
        Some(text.to_owned())
    }
}

impl Shape<'_> for i64 {
    const EXPECTED: &'static str = "must be an integer";

    fn from_integer(number: i64) -> Option<Self> {
        Some(number)
    }
}

impl<'de, T: Shape<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through `deserialize_option`, a field the derive finds missing arrives as `None` too.
        deserializer.deserialize_option(LenientVisitor(PhantomData))
    }
}

struct LenientVisitor<T>(PhantomData<T>);

impl<T> LenientVisitor<T> {
    fn read<'de>(value: Option<T>) -> Lenient<T>
    where
        T: Shape<'de>,
    {
        value.map_or(Lenient::Wrong(T::EXPECTED), Lenient::Read)
    }
}

impl<'de, T: Shape<'de>> Visitor<'de> for LenientVisitor<T> {
    type Value = Lenient<T>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Lenient::Missing)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Lenient::Missing)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Lenient::Wrong(T::EXPECTED))
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<Self::Value, E> {
        Ok(Self::read(T::from_integer(number)))
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<Self::Value, E> {
        Ok(Self::read(
            i64::try_from(number).ok().and_then(T::from_integer),
        ))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Lenient::Wrong(T::EXPECTED))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Self::read(T::from_text(text)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        T::from_seq(seq).map(Self::read)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::from_map(map).map(Self::read)
    }
}

/// Reads a JSON object into `T`'s derived `Deserialize`, which sees only the keys it declares,
/// each once. Returns `T` and the keys it did not see: unknown ones and repeated ones, named
/// relative to the object.
pub fn read_object<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    map: A,
) -> Result<(T, Vec<FieldError>), A::Error> {
    let mut rejected = Vec::new();
    let value = T::deserialize(ObjectDeserializer {
        map,
        rejected: &mut rejected,
    })?;
    Ok((value, rejected))
}

/// Hands a struct's visitor a map of its own fields only; the field list comes from the derive.
struct ObjectDeserializer<'r, A> {
    map: A,
    rejected: &'r mut Vec<FieldError>,
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for ObjectDeserializer<'_, A> {
    type Error = A::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_map(KnownKeysOnce {
            map: self.map,
            fields,
            seen: 0,
            rejected: self.rejected,
        })
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        // Only a struct declares its fields; anything else gets a map with no key it accepts.
        self.deserialize_struct("", &[], visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The keys of an object that are `fields`, each the first time it appears.
struct KnownKeysOnce<'r, A> {
    map: A,
    fields: &'static [&'static str],
    /// Bit `i` is set once `fields[i]` was passed on.
    seen: u64,
    rejected: &'r mut Vec<FieldError>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for KnownKeysOnce<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        while let Some(Key(key)) = self.map.next_key()? {
            let position = self.fields.iter().position(|field| *field == key);
            let Some(index) = position.filter(|index| *index < 64) else {
                self.rejected
                    .push(FieldError::new(key.into_owned(), "unknown field"));
                self.map.next_value::<Skipped>()?;
                continue;
            };
            if self.seen & (1 << index) != 0 {
                self.rejected
                    .push(FieldError::new(key.into_owned(), "duplicate key"));
                self.map.next_value::<Skipped>()?;
                continue;
            }
            self.seen |= 1 << index;
            let field = BorrowedStrDeserializer::<Self::Error>::new(self.fields[index]);
            return seed.deserialize(field).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.map.next_value_seed(seed)
    }
}

/// A value read and thrown away. Unlike `serde::de::IgnoredAny`, it goes through
/// `deserialize_any`, so the parser's nesting limit still holds: a nesting bomb is not JSON this
/// server reads (400), wherever it sits.
struct Skipped;

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SkipVisitor;

        impl<'de> Visitor<'de> for SkipVisitor {
            type Value = Skipped;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("any JSON value")
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skipped, E> {
                Ok(Skipped)
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skipped, E> {
                Ok(Skipped)
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skipped, E> {
                Ok(Skipped)
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skipped, E> {
                Ok(Skipped)
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Skipped, E> {
                Ok(Skipped)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Skipped, E> {
                Ok(Skipped)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skipped, A::Error> {
                while seq.next_element::<Skipped>()?.is_some() {}
                Ok(Skipped)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skipped, A::Error> {
                while map.next_entry::<Skipped, Skipped>()?.is_some() {}
                Ok(Skipped)
            }
        }

        deserializer.deserialize_any(SkipVisitor)
    }
}

/// An object key, borrowed from the input unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("an object key")
            }

            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(key)))
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Pair {
        left: Lenient<String>,
        right: Lenient<i64>,
        #[serde(skip)]
        rejected: Vec<FieldError>,
    }

    impl<'de> Shape<'de> for Pair {
        const EXPECTED: &'static str = "must be an object";

        fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
            let (mut pair, rejected) = read_object::<Self, A>(map)?;
            pair.rejected = rejected;
            Ok(Some(pair))
        }
    }

    fn read(json: &str) -> Lenient<Pair> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn every_field_keeps_its_own_error() {
        let Lenient::Read(pair) = read(r#"{"left": [1, {"x": 2}], "right": "7"}"#) else {
            panic!("not read");
        };
        assert_eq!(pair.left, Lenient::Wrong("must be a string"));
        assert_eq!(pair.right, Lenient::Wrong("must be an integer"));
        assert!(pair.rejected.is_empty());
    }

    #[test]
    fn missing_and_null_fields_are_missing() {
        let Lenient::Read(pair) = read(r#"{"right": null}"#) else {
            panic!("not read");
        };
        assert_eq!(
            (pair.left, pair.right),
            (Lenient::Missing, Lenient::Missing)
        );
    }

    #[test]
    fn unknown_and_repeated_keys_are_named_and_the_first_copy_is_kept() {
        let Lenient::Read(pair) =
            read(r#"{"left": "a", "x": {"deep": []}, "left": "b", "r\u0069ght": 1, "right": 2}"#)
        else {
            panic!("not read");
        };
        assert_eq!(pair.left, Lenient::Read("a".to_owned()));
        assert_eq!(pair.right, Lenient::Read(1));
        assert_eq!(
            pair.rejected,
            [
                FieldError::new("x", "unknown field"),
                FieldError::new("left", "duplicate key"),
                FieldError::new("right", "duplicate key"),
            ]
        );
    }

    #[test]
    fn a_value_of_another_type_is_wrong_and_broken_json_still_fails() {
        assert!(matches!(read("[1]"), Lenient::Wrong("must be an object")));
        assert!(matches!(read("null"), Lenient::Missing));
        assert!(serde_json::from_str::<Lenient<Pair>>(r#"{"left": "a",}"#).is_err());
        assert!(serde_json::from_str::<Lenient<Pair>>(r#"{"left": "a"} x"#).is_err());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for bomb in [
            deep.clone(),
            format!(r#"{{"x": {deep}}}"#),
            format!(r#"{{"left": {deep}}}"#),
        ] {
            assert!(
                serde_json::from_str::<Lenient<Pair>>(&bomb).is_err(),
                "{bomb}"
            );
        }
    }
}
