//! `GET /status.json`: the latest snapshot of every target, for Grafana's Infinity datasource.
//!
//! Dashboards poll it at every refresh, so an unchanged answer is neither written again nor sent
//! again: its entity tag is computed from the state that determines it, without writing it
//! ([`status_tag`]), a matching `If-None-Match` gets a 304, and the written body is kept by tag
//! ([`EncodedBodies`]) for the next client that asks without one.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::AppState;
use super::conditional::EntityTag;
use crate::error::{ApiError, Problem, Result};
use crate::model::{StatusFilter, StatusParams, StatusRow};

/// Latest status of every target.
///
/// One object per (repo, server), sorted by repo then server. `state` is `STALE` when the last check
/// is older than the target's stale-after, and `stale_since` is then when that happened;
/// `sync_status` stays the last check's result and `status_since` when the current run of that
/// result began. Costs the same however long the history is. Carries an `ETag` and answers a
/// matching `If-None-Match` with 304.
#[utoipa::path(
    get,
    path = "/status.json",
    tag = "status",
    params(
        StatusParams,
        ("If-None-Match" = Option<String>, Header, description = "Entity tags of answers the client holds; a match answers 304"),
    ),
    responses(
        (status = 200, description = "Latest snapshot per target", body = Vec<StatusRow>,
         headers(("ETag" = String, description = "Weak tag of the answer; it changes when a target's latest snapshot, its `status_since` or its staleness does"))),
        (status = 304, description = "`If-None-Match` names the current tag: no body",
         headers(("ETag" = String, description = "The answer's tag"))),
        (status = 400, description = "A query parameter is invalid; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable or timed out; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn status_list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let filter = StatusFilter::from_query(query.as_deref()).map_err(ApiError::InvalidQuery)?;
    let rows = state.status_rows(&filter).await?;
    let tag = status_tag(&rows, state.settings.stale_after_seconds());
    if tag.is_matched_by(&headers) {
        return Ok(tag.not_modified());
    }
    let body = state.status_bodies.get_or_encode(&tag, || {
        serde_json::to_vec(&rows)
            .map_err(|error| ApiError::internal(format!("encoding /status.json: {error}")))
    })?;
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    tag.apply(response.headers_mut());
    Ok(response)
}

/// The tag of the answer listing `rows`, computed without writing it. A row is fixed by its
/// snapshot (stored snapshots are never edited, so its id names it), its `status_since` (a late
/// check can move it), whether it is stale (which, with the snapshot and the default
/// stale-after, fixes `state`, `in_sync` and `stale_since`), how many seconds it has been stale
/// (`stale_seconds`, which the clock moves once a second while it is) and the default
/// stale-after itself. The
/// release is in the tag too, since another release may write the same rows differently. Every
/// replica over the same database computes the same tag.
pub fn status_tag(rows: &[StatusRow], default_stale_after_seconds: i64) -> EntityTag {
    let mut hasher = Sha256::new();
    hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.update(default_stale_after_seconds.to_le_bytes());
    for row in rows {
        hasher.update(row.snapshot_id.to_le_bytes());
        hasher.update(row.status_since.as_millis().to_le_bytes());
        hasher.update([u8::from(row.stale)]);
        hasher.update(row.stale_seconds.to_le_bytes());
        hasher.update(
            row.acknowledged
                .as_ref()
                .map_or(0, |ack| ack.id)
                .to_le_bytes(),
        );
    }
    EntityTag::from_hasher(hasher)
}

/// Written `/status.json` bodies by tag, most recently used first: the few distinct answers the
/// dashboards poll (one per filter) are each written once per change, not once per request.
/// Bounded by [`EncodedBodies::MAX_BODIES`] and [`EncodedBodies::MAX_BYTES`].
#[derive(Default)]
pub struct EncodedBodies {
    bodies: Mutex<VecDeque<(EntityTag, Bytes)>>,
}

impl EncodedBodies {
    pub const MAX_BODIES: usize = 8;
    pub const MAX_BYTES: usize = 64 * 1024 * 1024;

    /// The body kept for `tag`, or the one `encode` writes, then kept.
    pub fn get_or_encode(
        &self,
        tag: &EntityTag,
        encode: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Bytes> {
        if let Some(body) = self.get(tag) {
            return Ok(body);
        }
        let body = Bytes::from(encode()?);
        let mut bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        if !bodies.iter().any(|(kept, _)| kept == tag) {
            bodies.push_front((tag.clone(), body.clone()));
        }
        let mut bytes = 0;
        let kept = bodies
            .iter()
            .take_while(|(_, body)| {
                bytes += body.len();
                bytes <= Self::MAX_BYTES
            })
            .count()
            .clamp(1, Self::MAX_BODIES);
        bodies.truncate(kept);
        Ok(body)
    }

    fn get(&self, tag: &EntityTag) -> Option<Bytes> {
        let mut bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        let at = bodies.iter().position(|(kept, _)| kept == tag)?;
        let entry = bodies.remove(at)?;
        let body = entry.1.clone();
        bodies.push_front(entry);
        Some(body)
    }
}

impl fmt::Debug for EncodedBodies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("EncodedBodies")
            .field("bodies", &bodies.len())
            .field(
                "bytes",
                &bodies.iter().map(|(_, body)| body.len()).sum::<usize>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Snapshot, SyncStatus};
    use crate::timestamp::Timestamp;

    fn tag(n: u8) -> EntityTag {
        EntityTag::of([[n].as_slice()])
    }

    fn snapshot_of(id: i64) -> Snapshot {
        Snapshot {
            id,
            repo: "r".to_owned(),
            server: "s".to_owned(),
            sync_status: SyncStatus::Synced,
            drift_count: 0,
            files: Vec::new(),
            files_text: String::new(),
            last_check: Timestamp::from_millis(1_000_000),
            received_at: Timestamp::from_millis(1_000_000),
            revision: None,
            run_url: None,
            message: None,
            stale_after_seconds: None,
            hash: String::new(),
        }
    }

    fn row(id: i64, status_since: i64, now: i64) -> StatusRow {
        StatusRow::new(
            snapshot_of(id),
            Timestamp::from_millis(status_since),
            None,
            Timestamp::from_millis(now),
            600,
        )
    }

    /// Whatever changes the written answer changes the tag, which is computed without writing it.
    #[test]
    fn the_status_tag_follows_what_the_answer_shows() {
        let fresh = 1_000_000 + 600_000;
        let stale = fresh + 1;
        let base = status_tag(&[row(1, 0, fresh)], 600);
        assert_eq!(
            base,
            status_tag(&[row(1, 0, fresh - 1)], 600),
            "the clock alone"
        );
        for (other, what) in [
            (status_tag(&[row(2, 0, fresh)], 600), "another snapshot"),
            (status_tag(&[row(1, 5, fresh)], 600), "status_since moved"),
            (status_tag(&[row(1, 0, stale)], 600), "went stale"),
            (status_tag(&[row(1, 0, fresh)], 601), "another default"),
            (status_tag(&[], 600), "no rows"),
            (
                status_tag(&[row(1, 0, fresh), row(2, 0, fresh)], 600),
                "more rows",
            ),
        ] {
            assert_ne!(base, other, "{what}");
        }
        let written = |rows: &[StatusRow]| serde_json::to_vec(rows).unwrap();
        assert_ne!(written(&[row(1, 0, fresh)]), written(&[row(1, 0, stale)]));
        assert_eq!(
            written(&[row(1, 0, fresh)]),
            written(&[row(1, 0, fresh - 1)])
        );
        // A stale target's `stale_seconds` follows the clock by whole seconds, and so does the tag.
        let later = stale + 2_500;
        assert_eq!(row(1, 0, stale).stale_seconds, 0);
        assert_eq!(row(1, 0, later).stale_seconds, 2);
        assert_eq!(row(1, 0, fresh).stale_seconds, 0);
        assert_ne!(written(&[row(1, 0, stale)]), written(&[row(1, 0, later)]));
        assert_ne!(
            status_tag(&[row(1, 0, stale)], 600),
            status_tag(&[row(1, 0, later)], 600),
            "stale for longer"
        );
        assert_eq!(
            status_tag(&[row(1, 0, later)], 600),
            status_tag(&[row(1, 0, later + 400)], 600),
            "within the same second"
        );
    }

    /// The numbers an alert rule compares: `in_sync` 1 only for a fresh SYNCED check.
    #[test]
    fn alert_fields_are_numbers_an_alert_rule_can_compare() {
        let fresh = 1_000_000 + 600_000;
        let value = |row: &StatusRow| serde_json::to_value(row).unwrap();
        let synced = value(&row(1, 0, fresh));
        assert_eq!(synced["in_sync"], 1);
        assert_eq!(synced["stale_seconds"], 0);
        let stale = value(&row(1, 0, fresh + 61_000));
        assert_eq!(stale["state"], "STALE");
        assert_eq!(stale["in_sync"], 0, "a stale SYNCED check is not in sync");
        assert_eq!(stale["stale_seconds"], 61);
        let drifted = StatusRow::new(
            Snapshot {
                sync_status: SyncStatus::OutOfSync,
                drift_count: 2,
                ..snapshot_of(1)
            },
            Timestamp::from_millis(0),
            None,
            Timestamp::from_millis(fresh),
            600,
        );
        let drifted = value(&drifted);
        assert_eq!(drifted["in_sync"], 0);
        assert_eq!(drifted["drift_count"], 2);
    }

    #[test]
    fn bodies_are_written_once_per_tag_and_the_least_recent_go_first() {
        let bodies = EncodedBodies::default();
        let writes = std::cell::Cell::new(0);
        let get = |n: u8| {
            bodies
                .get_or_encode(&tag(n), || {
                    writes.set(writes.get() + 1);
                    Ok(vec![n])
                })
                .unwrap()
        };
        assert_eq!(get(0), Bytes::from(vec![0]));
        assert_eq!(get(0), Bytes::from(vec![0]));
        for n in 1..=8 {
            get(n);
        }
        // 0 was the least recently used of nine: gone, and written again.
        get(0);
        assert_eq!(writes.get(), 10);
        get(8);
        assert_eq!(writes.get(), 10);
    }

    #[test]
    fn a_body_over_the_byte_bound_is_served_but_keeps_only_itself() {
        let bodies = EncodedBodies::default();
        bodies.get_or_encode(&tag(1), || Ok(vec![1])).unwrap();
        let big = bodies
            .get_or_encode(&tag(2), || Ok(vec![0; EncodedBodies::MAX_BYTES + 1]))
            .unwrap();
        assert_eq!(big.len(), EncodedBodies::MAX_BYTES + 1);
        assert_eq!(bodies.bodies.lock().unwrap().len(), 1);
    }
}
