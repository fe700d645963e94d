//! `GET /status.json`: the latest snapshot of every target, for Grafana's Infinity datasource.

use axum::Json;
use axum::extract::{RawQuery, State};
use utoipa::IntoParams;

use super::AppState;
use crate::error::{ApiError, Problem, Result};
use crate::model::{FieldError, StatusFilter, StatusParams, StatusRow, SyncStatus};

/// The query parameters `/status.json` takes beside [`StatusFilter::PARAMETERS`].
pub const OWN_PARAMETERS: [&str; 1] = ["sync_status"];

/// The query parameter `/status.json` takes beside [`StatusParams`].
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncStatusParams {
    /// Only targets whose latest check had these results, comma-separated: `SYNCED`,
    /// `OUT_OF_SYNC`, `ERROR`. Unlike `state`, a stale target is selected by its last result.
    #[param(example = "OUT_OF_SYNC,ERROR")]
    pub sync_status: Option<String>,
}

/// Latest status of every target.
///
/// One object per (repo, server), sorted by repo then server. `state` is `STALE` when the last check
/// is older than the target's stale-after, and `stale_since` is then when that happened;
/// `sync_status` stays the last check's result and `status_since` when the current run of that
/// result began. Costs the same however long the history is.
#[utoipa::path(
    get,
    path = "/status.json",
    tag = "status",
    params(StatusParams, SyncStatusParams),
    responses(
        (status = 200, description = "Latest snapshot per target", body = Vec<StatusRow>),
        (status = 400, description = "A query parameter is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn status_list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<StatusRow>>> {
    let (given, rest) = take_param(query.as_deref(), OWN_PARAMETERS[0]);
    let sync_statuses = parse_sync_statuses(&given);
    let filter = StatusFilter::from_query(Some(&rest));
    let (filter, sync_statuses) = match (filter, sync_statuses) {
        (Ok(filter), Ok(sync_statuses)) => (filter, sync_statuses),
        (filter, sync_statuses) => {
            let errors = filter.err().into_iter().flatten();
            return Err(ApiError::InvalidQuery(
                errors.chain(sync_statuses.err()).collect(),
            ));
        }
    };
    let mut rows = state.status_rows(&filter).await?;
    if !sync_statuses.is_empty() {
        rows.retain(|row| sync_statuses.contains(&row.sync_status));
    }
    Ok(Json(rows))
}

/// `sync_status` given at most once, as a comma-separated list of results.
fn parse_sync_statuses(given: &[String]) -> Result<Vec<SyncStatus>, FieldError> {
    match given {
        [] => Ok(Vec::new()),
        [list] => list
            .split(',')
            .map(|item| {
                SyncStatus::parse(item.trim()).ok_or_else(|| {
                    FieldError::new(
                        "sync_status",
                        format!(
                            "must be one or more of SYNCED, OUT_OF_SYNC, ERROR, comma-separated; \
                             got {item:?}"
                        ),
                    )
                })
            })
            .collect(),
        _ => Err(FieldError::new(
            "sync_status",
            "given more than once; use a comma-separated list where lists are allowed",
        )),
    }
}

/// Takes every pair named `name` out of a raw query string: their values in order, and the rest of
/// the query re-encoded, for a parser that does not know `name`.
pub(crate) fn take_param(raw: Option<&str>, name: &str) -> (Vec<String>, String) {
    let mut taken = Vec::new();
    let mut rest = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if key == name {
            taken.push(value.into_owned());
        } else {
            rest.append_pair(&key, &value);
        }
    }
    (taken, rest.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_param_splits_one_name_off_the_query() {
        let (taken, rest) = take_param(
            Some("repo=a%20b&sync_status=ERROR&state=STALE"),
            "sync_status",
        );
        assert_eq!(taken, ["ERROR"]);
        assert_eq!(rest, "repo=a+b&state=STALE");
        assert_eq!(take_param(None, "x"), (Vec::new(), String::new()));
    }

    #[test]
    fn sync_status_is_a_comma_separated_list_given_once() {
        assert_eq!(
            parse_sync_statuses(&["OUT_OF_SYNC, ERROR".to_owned()]),
            Ok(vec![SyncStatus::OutOfSync, SyncStatus::Error])
        );
        assert!(parse_sync_statuses(&["STALE".to_owned()]).is_err());
        assert!(parse_sync_statuses(&["ERROR".to_owned(), "SYNCED".to_owned()]).is_err());
    }
}
