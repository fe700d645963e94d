//! Wire types of the HTTP API (serde + utoipa schemas) and the validation of everything clients
//! send, one file per concern.

mod cursor;
mod episode;
pub mod feed;
mod history;
pub mod lenient;
pub mod lifecycle;
mod page;
mod push;
pub(crate) mod query;
mod snapshot;
mod status;
pub mod times;

use serde::Serialize;
use utoipa::ToSchema;

pub use cursor::{Cursor, EpisodeCursor};
pub use episode::*;
pub use history::*;
pub use page::JsonPage;
pub use push::*;
pub use snapshot::*;
pub use status::*;

/// One invalid field of a request, as listed in a problem's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Path of the field: `repo`, `files[3].name`, or a query parameter's name.
    #[schema(example = "files[3].name")]
    pub field: String,
    /// What is wrong with it.
    #[schema(example = "must not contain control characters")]
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The fields an error list names, sorted: what the model's tests compare.
#[cfg(test)]
pub(crate) fn error_fields<T: std::fmt::Debug>(result: Result<T, Vec<FieldError>>) -> Vec<String> {
    let mut names: Vec<String> = result
        .unwrap_err()
        .into_iter()
        .map(|error| error.field)
        .collect();
    names.sort();
    names
}
