//! `GET /api/chain/heads` and `GET /api/evidence`: the signed head statements, and evidence
//! files that an auditor checks offline (docs/audit.md).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use super::AppState;
use crate::error::{ApiError, Problem, Result};
use crate::evidence::{self, EvidenceSelection};
use crate::model::{FieldError, query};
use crate::signing::ListedStatement;

/// Query parameters of `GET /api/chain/heads`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HeadsParams {
    /// Only statements after this seq (default 0: from the first).
    pub after: Option<String>,
    /// At most this many statements, 1 to 1000 (default 100).
    pub limit: Option<String>,
}

/// Reads `after` and `limit`.
fn heads_page(raw: Option<&str>) -> std::result::Result<(i64, i64), Vec<FieldError>> {
    let mut errors = Vec::new();
    let params: HeadsParams = query::read_query(raw, &mut errors);
    let after = match params.after.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(after)) if after >= 0 => after,
        Some(_) => {
            errors.push(FieldError::new("after", "must be a seq: an integer from 0"));
            0
        }
    };
    let limit = match params.limit.as_deref().map(str::parse::<i64>) {
        None => 100,
        Some(Ok(limit)) if (1..=1000).contains(&limit) => limit,
        Some(_) => {
            errors.push(FieldError::new(
                "limit",
                "must be an integer from 1 to 1000",
            ));
            100
        }
    };
    if errors.is_empty() {
        Ok((after, limit))
    } else {
        Err(errors)
    }
}

/// Signed head statements.
///
/// With `--signing-key`, the server signs a statement of every chain's head (each target's, and
/// the fleet chain's) at start, every `--sign-interval` and at shutdown; each names the hash of
/// the one before, so they form one chain. Listed by seq, `limit` at a time after `after`.
/// `statement` is the exact text signed (docs/audit.md); `verify --public-key` and
/// `verify-evidence` check the signatures. Empty when the server has never signed.
#[utoipa::path(
    get,
    path = "/api/chain/heads",
    tag = "audit",
    params(HeadsParams),
    responses(
        (status = 200, description = "Statements by seq", body = Vec<ListedStatement>),
        (status = 400, description = "A query parameter is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn chain_heads(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<ListedStatement>>> {
    let (after, limit) = heads_page(query.as_deref()).map_err(ApiError::InvalidQuery)?;
    let rows = state.store.statements(after, limit).await?;
    let listed = rows
        .iter()
        .map(|row| {
            row.signed()
                .map(|signed| signed.listed())
                .map_err(|error| ApiError::internal(format!("statement {}: {error}", row.seq)))
        })
        .collect::<Result<_>>()?;
    Ok(Json(listed))
}

/// Query parameters of `GET /api/evidence`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EvidenceParams {
    /// Only targets of this repo (exact match).
    pub repo: Option<String>,
    /// Only targets on this server (exact match).
    pub server: Option<String>,
    /// Records from this time on (a snapshot's `last_check`, an event's `at`): RFC 3339 or Unix
    /// milliseconds. Default: the start.
    pub from: Option<String>,
    /// Records before this time. Default: no end.
    pub to: Option<String>,
}

impl EvidenceSelection {
    /// Validates `GET /api/evidence`'s query.
    pub fn from_query(raw: Option<&str>) -> std::result::Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let params: EvidenceParams = query::read_query(raw, &mut errors);
        let selection = Self {
            repo: query::name_filter("repo", params.repo, &mut errors),
            server: query::name_filter("server", params.server, &mut errors),
            from: query::time("from", params.from, &mut errors),
            to: query::time("to", params.to, &mut errors),
        };
        if let (Some(from), Some(to)) = (selection.from, selection.to) {
            if from >= to {
                errors.push(FieldError::new("to", "must be after from"));
            }
        }
        if errors.is_empty() {
            Ok(selection)
        } else {
            Err(errors)
        }
    }
}

/// A self-contained evidence file.
///
/// Streams NDJSON: a header, then for each selected target (by repo, server) its records with
/// `last_check` (snapshots) or `at` (events) in `[from, to)` (`selected: true`) and every later
/// record up to the head a signed statement covers (`selected: false`), each with its canonical
/// fields, the hash it links to and its own; the retention checkpoints among them; the
/// statements that cover them; and an end line with the counts, so a cut file is told from a
/// whole one. `gitops-status-server verify-evidence FILE --public-key KEY` checks it without the
/// database (docs/audit.md, "Evidence files").
#[utoipa::path(
    get,
    path = "/api/evidence",
    tag = "audit",
    params(EvidenceParams),
    responses(
        (status = 200, description = "The evidence file, one JSON object per line", content(
            (String = "application/x-ndjson")
        )),
        (status = 400, description = "A query parameter is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn evidence_file(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let selection =
        EvidenceSelection::from_query(query.as_deref()).map_err(ApiError::InvalidQuery)?;
    // Check the database before committing to a 200 that a failing stream would truncate.
    state.store.ping().await?;
    let (chunks, received) = mpsc::channel(4);
    tokio::spawn(evidence::export(state.store.clone(), selection, chunks));
    // Fused: the gzip encoder polls its source once more after the end, and a bare `unfold`
    // panics when polled after it returned `None`, which cut every compressed file short.
    let body = futures_util::stream::unfold(received, |mut received| async move {
        received
            .recv()
            .await
            .map(|chunk| (chunk.map(Bytes::from), received))
    })
    .fuse();
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"gitops-status-evidence.ndjson\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
