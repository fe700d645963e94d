//! Pages of a keyset-paginated resource as JSON: a bare array whose next page is in the `Link`
//! header, or, with `envelope=true`, an object that also carries the next page's cursor, for
//! clients that can follow a cursor in the body but not in a header (Grafana Infinity's backend
//! parser). Every paginated resource shares these.

use std::borrow::Cow;

use serde::Serialize;
use utoipa::openapi::schema::{
    ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::{ExportFormat, FieldError, MAX_HISTORY_LIMIT, Order, query};

/// One JSON page of `T`s. Its schema (`SnapshotPage` for `T = Snapshot`) refers to `T`'s.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum JsonPage<T> {
    /// The rows; the next page, if any, is in the `Link` header.
    Rows(Vec<T>),
    /// `envelope=true`: the rows and the next page's cursor.
    Envelope {
        items: Vec<T>,
        next_cursor: Option<String>,
    },
}

impl<T> JsonPage<T> {
    pub fn new(rows: Vec<T>, next_cursor: Option<String>, envelope: bool) -> Self {
        if envelope {
            Self::Envelope {
                items: rows,
                next_cursor,
            }
        } else {
            Self::Rows(rows)
        }
    }
}

/// Written by hand: utoipa's derive would copy `T`'s whole schema into the page's instead of
/// referring to it.
impl<T: ToSchema> PartialSchema for JsonPage<T> {
    fn schema() -> RefOr<Schema> {
        let rows = || ArrayBuilder::new().items(Ref::from_schema_name(T::name()));
        let envelope = ObjectBuilder::new()
            .description(Some(
                "`envelope=true`: the rows and the next page's cursor.",
            ))
            .property("items", rows())
            .required("items")
            .property(
                "next_cursor",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                    .description(Some(
                        "Pass it as `cursor`, with the same filters, for the next page; null on \
                         the last page.",
                    )),
            )
            .required("next_cursor");
        OneOfBuilder::new()
            .description(Some(
                "One page: the rows, whose next page is in the `Link` header, or with \
                 `envelope=true` an object with the rows and the next page's cursor.",
            ))
            .item(rows().description(Some(
                "The rows; the next page, if any, is in the `Link` header.",
            )))
            .item(envelope)
            .into()
    }
}

impl<T: ToSchema> ToSchema for JsonPage<T> {
    fn name() -> Cow<'static, str> {
        Cow::Owned(format!("{}Page", T::name()))
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((T::name().into_owned(), T::schema()));
        T::schemas(schemas);
    }
}

/// Reads the `order` parameter: `desc` (the default) or `asc`.
pub(crate) fn order(value: Option<String>, errors: &mut Vec<FieldError>) -> Order {
    match value.as_deref() {
        None | Some("desc") => Order::Desc,
        Some("asc") => Order::Asc,
        Some(_) => {
            errors.push(FieldError::new("order", "must be asc or desc"));
            Order::Desc
        }
    }
}

/// Reads the `limit` parameter: 1..=10000, never clamped.
pub(crate) fn limit(value: Option<String>, errors: &mut Vec<FieldError>) -> Option<usize> {
    value.and_then(|text| {
        let parsed = text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_HISTORY_LIMIT).contains(limit));
        if parsed.is_none() {
            errors.push(FieldError::new(
                "limit",
                format!("must be an integer between 1 and {MAX_HISTORY_LIMIT}"),
            ));
        }
        parsed
    })
}

/// The error of a `cursor` this server did not issue (for this resource).
pub(crate) fn bad_cursor() -> FieldError {
    FieldError::new(
        "cursor",
        "is not a cursor this server issued; take it from a Link header",
    )
}

/// Reads `format` and `envelope` together: the export format (`None`: as `Accept` negotiates)
/// and whether a JSON page is wrapped. An envelope is JSON, whatever `Accept` prefers, and is
/// refused beside `format=csv` or `format=ndjson`.
pub(crate) fn format(
    format: Option<String>,
    envelope: Option<String>,
    errors: &mut Vec<FieldError>,
) -> (Option<ExportFormat>, bool) {
    let format = format.and_then(|text| {
        let format = match text.as_str() {
            "json" => Some(ExportFormat::Json),
            "csv" => Some(ExportFormat::Csv),
            "ndjson" => Some(ExportFormat::Ndjson),
            _ => None,
        };
        if format.is_none() {
            errors.push(FieldError::new("format", "must be json, csv or ndjson"));
        }
        format
    });
    let envelope = query::flag("envelope", envelope, errors);
    if envelope && format.is_some_and(|format| format != ExportFormat::Json) {
        errors.push(FieldError::new(
            "envelope",
            "wraps JSON pages only; leave it out of CSV and NDJSON exports",
        ));
    }
    (format.or(envelope.then_some(ExportFormat::Json)), envelope)
}
