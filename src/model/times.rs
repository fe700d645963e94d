//! Every time a response carries is written twice: RFC 3339 under its name, and integer Unix
//! milliseconds under the name plus `_ms` (`last_check_ms`), so a Grafana panel needs no
//! conversion. Serializers write the pair with [`time_field`]; [`document_millis_twins`] adds
//! the twins to the OpenAPI schemas by the same rule.

use serde::ser::SerializeStruct;
use utoipa::openapi::schema::{
    KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{OpenApi, RefOr};

use crate::timestamp::Timestamp;

/// Writes `at` under `name` and its Unix milliseconds under `name_ms`; both null when `at` is.
pub(crate) fn time_field<S: SerializeStruct>(
    out: &mut S,
    name: &'static str,
    name_ms: &'static str,
    at: impl Into<Option<Timestamp>>,
) -> Result<(), S::Error> {
    let at = at.into();
    out.serialize_field(name, &at)?;
    out.serialize_field(name_ms, &at.map(Timestamp::as_millis))
}

/// Gives every `date-time` property of every response schema its `_ms` twin, right after it:
/// an integer, nullable and required as the time is. Schemas that requests send (`SnapshotIn`)
/// keep their one form.
pub fn document_millis_twins(openapi: &mut OpenApi) {
    let requests = request_schemas(openapi);
    let Some(components) = openapi.components.as_mut() else {
        return;
    };
    for (name, schema) in components.schemas.iter_mut() {
        if let RefOr::T(Schema::Object(object)) = schema {
            if !requests.contains(name) {
                add_twins(object);
            }
        }
    }
}

/// The names of the component schemas a request body refers to.
fn request_schemas(openapi: &OpenApi) -> Vec<String> {
    let bodies = openapi
        .paths
        .paths
        .values()
        .flat_map(|item| {
            [&item.get, &item.put, &item.post, &item.delete, &item.patch]
                .into_iter()
                .flatten()
        })
        .filter_map(|operation| operation.request_body.as_ref());
    bodies
        .flat_map(|body| body.content.values())
        .filter_map(|content| match &content.schema {
            Some(RefOr::Ref(reference)) => {
                reference.ref_location.rsplit('/').next().map(str::to_owned)
            }
            _ => None,
        })
        .collect()
}

fn add_twins(object: &mut Object) {
    let properties = std::mem::take(&mut object.properties);
    for (name, property) in properties {
        let twin = match &property {
            RefOr::T(Schema::Object(time)) if is_date_time(time) => Some(twin_of(&name, time)),
            _ => None,
        };
        object.properties.insert(name.clone(), property);
        if let Some(twin) = twin {
            let twin_name = format!("{name}_ms");
            if let Some(at) = object.required.iter().position(|field| *field == name) {
                object.required.insert(at + 1, twin_name.clone());
            }
            object
                .properties
                .insert(twin_name, RefOr::T(Schema::Object(twin)));
        }
    }
}

fn is_date_time(object: &Object) -> bool {
    object.format == Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))
}

fn twin_of(name: &str, time: &Object) -> Object {
    let nullable = match &time.schema_type {
        SchemaType::Array(types) => types.contains(&Type::Null),
        _ => false,
    };
    let schema_type = if nullable {
        SchemaType::from_iter([Type::Integer, Type::Null])
    } else {
        SchemaType::new(Type::Integer)
    };
    let example = time
        .example
        .as_ref()
        .and_then(|example| example.as_str())
        .and_then(Timestamp::parse_rfc3339)
        .map(|at| serde_json::Value::from(at.as_millis()));
    let null = if nullable {
        "; null when it is null"
    } else {
        ""
    };
    let mut twin = ObjectBuilder::new()
        .schema_type(schema_type)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .description(Some(format!("`{name}` as Unix milliseconds{null}.")))
        .build();
    // As the times' own examples are written (`example`, not 3.1's `examples`).
    twin.example = example;
    twin
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;

    #[derive(Debug)]
    struct Sample {
        at: Timestamp,
        maybe: Option<Timestamp>,
    }

    impl Serialize for Sample {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut out = serializer.serialize_struct("Sample", 4)?;
            time_field(&mut out, "at", "at_ms", self.at)?;
            time_field(&mut out, "maybe", "maybe_ms", self.maybe)?;
            out.end()
        }
    }

    #[test]
    fn a_time_is_followed_by_its_milliseconds_and_null_by_null() {
        let sample = Sample {
            at: Timestamp::from_millis(1_776_767_400_123),
            maybe: None,
        };
        assert_eq!(
            serde_json::to_string(&sample).unwrap(),
            r#"{"at":"2026-04-21T10:30:00.123Z","at_ms":1776767400123,"maybe":null,"maybe_ms":null}"#
        );
    }
}
