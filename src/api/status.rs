//! `GET /status.json`: the latest snapshot of every target, for Grafana's Infinity datasource.
//!
//! Dashboards poll it at every refresh, so an unchanged answer is neither built again nor sent
//! again. Each answer is kept ([`StatusCache`]) with the store's version it was built from
//! ([`Store::status_version`](crate::store::Store::status_version): a count of the SQLite writer's
//! commits, PostgreSQL's transaction snapshot) and the instant the clock next changes one of
//! its rows; while both hold, a request costs a version read and a lookup: the tag, the body
//! and its gzip encoding are those already written. A matching `If-None-Match` gets a 304.

use std::collections::VecDeque;
use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use super::AppState;
use super::conditional::EntityTag;
use crate::error::{ApiError, Problem, Result};
use crate::model::{StatusFilter, StatusParams, StatusRow, next_clock_change};
use crate::store::{Latest, StatusVersion};
use crate::timestamp::Timestamp;

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
    let answer = state.status_answer(&filter).await?;
    if answer.tag.is_matched_by(&headers) {
        return Ok(answer.tag.not_modified());
    }
    let mut response = if answer.body.len() >= MIN_GZIP_BYTES && prefers_gzip(&headers) {
        let gzip = answer.gzip()?;
        let encoding = [(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"))];
        (encoding, [(header::CONTENT_TYPE, "application/json")], gzip).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/json")],
            answer.body.clone(),
        )
            .into_response()
    };
    answer.tag.apply(response.headers_mut());
    Ok(response)
}

/// One `/status.json` answer, as written for one filter at one version of the store.
pub struct StatusAnswer {
    filter: StatusFilter,
    version: StatusVersion,
    built_at: Timestamp,
    /// When the clock first changes one of the rows ([`next_clock_change`]): the answer holds
    /// from `built_at` until then, unless the version moves.
    changes_at: Timestamp,
    pub tag: EntityTag,
    pub body: Bytes,
    /// The body gzip-encoded, written for the first client that asks for it.
    gzip: OnceLock<Bytes>,
}

impl StatusAnswer {
    /// Writes the answer `filter` selects from `latest` (what the store gave at `version`),
    /// staleness judged at `now`. Every target's clock counts, not only the selected ones': a
    /// target the `state` filter leaves out now may enter it by going stale.
    pub fn build(
        filter: StatusFilter,
        version: StatusVersion,
        latest: Vec<Latest>,
        now: Timestamp,
        default_stale_after_seconds: i64,
    ) -> Result<Self> {
        let changes_at = latest
            .iter()
            .filter(|latest| latest.retired_at.is_none())
            .map(|latest| {
                next_clock_change(
                    &latest.snapshot,
                    latest.ack.as_deref(),
                    now,
                    default_stale_after_seconds,
                )
            })
            .min()
            .unwrap_or(Timestamp::from_millis(i64::MAX));
        let rows = status_rows(latest, &filter, now, default_stale_after_seconds);
        let tag = status_tag(&rows, default_stale_after_seconds);
        let body = serde_json::to_vec(&rows)
            .map_err(|error| ApiError::internal(format!("encoding /status.json: {error}")))?;
        Ok(Self {
            filter,
            version,
            built_at: now,
            changes_at,
            tag,
            body: Bytes::from(body),
            gzip: OnceLock::new(),
        })
    }

    /// Whether this is the answer to `filter` at `version` and `now`.
    pub fn answers(&self, filter: &StatusFilter, version: &StatusVersion, now: Timestamp) -> bool {
        self.version == *version
            && self.built_at <= now
            && now < self.changes_at
            && self.filter == *filter
    }

    /// The body gzip-encoded, at the level the compression layer uses for every other answer.
    pub fn gzip(&self) -> Result<Bytes> {
        if let Some(gzip) = self.gzip.get() {
            return Ok(gzip.clone());
        }
        let mut encoder =
            GzEncoder::new(Vec::with_capacity(self.body.len() / 8), Compression::fast());
        encoder
            .write_all(&self.body)
            .and_then(|()| encoder.finish())
            .map(|gzip| self.gzip.get_or_init(|| Bytes::from(gzip)).clone())
            .map_err(|error| ApiError::internal(format!("gzip of /status.json: {error}")))
    }
}

impl fmt::Debug for StatusAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusAnswer")
            .field("filter", &self.filter)
            .field("version", &self.version)
            .field("built_at", &self.built_at)
            .field("changes_at", &self.changes_at)
            .field("tag", &self.tag)
            .field("bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// The rows `filter` selects from the store's `latest`, staleness judged at `now`; retired
/// targets have left every view until a snapshot brings them back.
pub fn status_rows(
    latest: Vec<Latest>,
    filter: &StatusFilter,
    now: Timestamp,
    default_stale_after_seconds: i64,
) -> Vec<StatusRow> {
    latest
        .into_iter()
        .filter(|latest| latest.retired_at.is_none())
        .map(|latest| {
            StatusRow::new(
                latest.snapshot,
                latest.status_since,
                latest.ack.as_deref(),
                now,
                default_stale_after_seconds,
            )
        })
        .filter(|row| filter.selects(row))
        .collect()
}

/// Bodies shorter than this are left to the compression layer, which does not compress them.
const MIN_GZIP_BYTES: usize = 32;

/// Whether the compression layer would gzip the answer to this request: it picks, among the
/// `Accept-Encoding` entries it knows with a q-value above 0, the highest q-value, gzip over
/// identity on a tie; an entry with a malformed q-value is ignored.
fn prefers_gzip(request: &HeaderMap) -> bool {
    let mut gzip = 0;
    let mut identity = 0;
    let entries = request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|field| field.to_str().ok())
        .flat_map(|field| field.split(','));
    for entry in entries {
        let (coding, q) = match entry.split_once(';') {
            Some((coding, q)) => (coding, q_value(q.trim())),
            None => (entry, Some(1000)),
        };
        let Some(q) = q else { continue };
        let coding = coding.trim();
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = gzip.max(q);
        } else if coding.eq_ignore_ascii_case("identity") {
            identity = identity.max(q);
        }
    }
    gzip > 0 && gzip >= identity
}

/// An RFC 9110 q-value (`q=0.5`) in thousandths; `None` when malformed.
fn q_value(text: &str) -> Option<u16> {
    let value = text
        .strip_prefix("q=")
        .or_else(|| text.strip_prefix("Q="))?;
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|digit| digit.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
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

/// The last few `/status.json` answers, one per filter, most recently used first: the few
/// distinct answers the dashboards poll are each built once per change, not once per request.
/// Bounded by [`StatusCache::MAX_ANSWERS`] and [`StatusCache::MAX_BYTES`].
#[derive(Default)]
pub struct StatusCache {
    answers: Mutex<VecDeque<Arc<StatusAnswer>>>,
    builds: AtomicU64,
}

impl StatusCache {
    pub const MAX_ANSWERS: usize = 8;
    /// Of bodies, their gzip encodings not counted (a tenth more at 10,000 targets).
    pub const MAX_BYTES: usize = 64 * 1024 * 1024;

    /// The kept answer to `filter` at `version`, if it still holds at `now`.
    pub fn get(
        &self,
        filter: &StatusFilter,
        version: &StatusVersion,
        now: Timestamp,
    ) -> Option<Arc<StatusAnswer>> {
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let at = answers
            .iter()
            .position(|answer| answer.answers(filter, version, now))?;
        let answer = answers.remove(at)?;
        answers.push_front(Arc::clone(&answer));
        Some(answer)
    }

    /// Keeps a newly built answer in place of the one for the same filter.
    pub fn keep(&self, answer: Arc<StatusAnswer>) {
        self.builds.fetch_add(1, Ordering::Relaxed);
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        answers.retain(|kept| kept.filter != answer.filter);
        answers.push_front(answer);
        let mut bytes = 0;
        let kept = answers
            .iter()
            .take_while(|answer| {
                bytes += answer.body.len();
                bytes <= Self::MAX_BYTES
            })
            .count()
            .clamp(1, Self::MAX_ANSWERS);
        answers.truncate(kept);
    }

    /// How many answers have been built and kept since the start.
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for StatusCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("StatusCache")
            .field("answers", &answers.len())
            .field(
                "bytes",
                &answers
                    .iter()
                    .map(|answer| answer.body.len())
                    .sum::<usize>(),
            )
            .field("builds", &self.builds())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lifecycle::Ack;
    use crate::model::{Snapshot, SyncStatus};

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

    fn latest(snapshot: Snapshot, ack: Option<Ack>) -> Latest {
        Latest {
            status_since: snapshot.last_check,
            snapshot,
            ack: ack.map(Arc::new),
            retired_at: None,
        }
    }

    fn ack_until(until: i64) -> Ack {
        Ack {
            id: 9,
            repo: "r".to_owned(),
            server: "s".to_owned(),
            reason: "hotfix".to_owned(),
            by: "anonymous".to_owned(),
            files: None,
            created_at: Timestamp::from_millis(0),
            until: Timestamp::from_millis(until),
            ended_at: None,
            end_reason: None,
            ended_by: None,
        }
    }

    fn drifted(id: i64, last_check: i64, stale_after_seconds: Option<i64>) -> Snapshot {
        Snapshot {
            sync_status: SyncStatus::OutOfSync,
            last_check: Timestamp::from_millis(last_check),
            stale_after_seconds,
            ..snapshot_of(id)
        }
    }

    fn build(filter: StatusFilter, version: u64, rows: Vec<Latest>, now: i64) -> StatusAnswer {
        StatusAnswer::build(
            filter,
            StatusVersion::Published(version),
            rows,
            Timestamp::from_millis(now),
            600,
        )
        .unwrap()
    }

    proptest::proptest! {
        /// Until `next_clock_change`, the row built at any instant is the row built at `now`; at
        /// that instant it differs whenever the cause is one the row shows.
        #[test]
        fn a_row_holds_until_its_next_clock_change(
            last_check in 0_i64..2_000_000,
            own in proptest::option::of(1_i64..1_000),
            now in 0_i64..4_000_000,
            until in proptest::option::of(0_i64..4_000_000),
            later in 0.0_f64..1.0,
        ) {
            let snapshot = drifted(1, last_check, own);
            let ack = until.map(ack_until);
            let at = |millis: i64| StatusRow::new(
                snapshot.clone(), Timestamp::from_millis(0), ack.as_ref(),
                Timestamp::from_millis(millis), 600,
            );
            let next = next_clock_change(&snapshot, ack.as_ref(), Timestamp::from_millis(now), 600)
                .as_millis();
            proptest::prop_assert!(next > now);
            let within = now + ((next - now - 1) as f64 * later) as i64;
            proptest::prop_assert_eq!(at(within), at(now));
            proptest::prop_assert_eq!(at(next - 1), at(now));
            proptest::prop_assert_ne!(at(next), at(now));
        }
    }

    /// An answer is served again for its filter and version until the clock changes a row;
    /// another version, another filter, the clock going back or reaching that instant miss.
    #[test]
    fn a_kept_answer_holds_for_its_filter_and_version_until_the_clock_changes_it() {
        let cache = StatusCache::default();
        let now = 1_000_000;
        // Fresh until 1,000,000 + 600,000; the acknowledgement ends before that.
        let rows = || {
            vec![
                latest(drifted(1, now, None), Some(ack_until(now + 5_000))),
                latest(drifted(2, now - 100_000, None), None),
            ]
        };
        let answer = Arc::new(build(StatusFilter::default(), 7, rows(), now));
        cache.keep(Arc::clone(&answer));
        let all = StatusFilter::default();
        let get = |filter: &StatusFilter, version: u64, at: i64| {
            cache.get(
                filter,
                &StatusVersion::Published(version),
                Timestamp::from_millis(at),
            )
        };
        for at in [now, now + 1, now + 4_999] {
            let kept = get(&all, 7, at).expect("kept");
            assert!(Arc::ptr_eq(&kept, &answer), "at {at}");
        }
        assert!(
            get(&all, 7, now + 5_000).is_none(),
            "the acknowledgement ended"
        );
        assert!(get(&all, 7, now - 1).is_none(), "the clock went back");
        assert!(get(&all, 8, now).is_none(), "another version");
        let one_server = StatusFilter {
            server: Some("s".to_owned()),
            ..StatusFilter::default()
        };
        assert!(get(&one_server, 7, now).is_none(), "another filter");
        // Past the acknowledgement, the row's next change is target 2 going stale.
        let later = Arc::new(build(all.clone(), 7, rows(), now + 5_000));
        cache.keep(Arc::clone(&later));
        assert_ne!(later.body, answer.body);
        assert_ne!(later.tag, answer.tag);
        assert!(get(&all, 7, now + 500_000).is_some());
        assert!(get(&all, 7, now + 500_001).is_none(), "target 2 went stale");
        assert_eq!(cache.builds(), 2);
        assert_eq!(
            cache.answers.lock().unwrap().len(),
            1,
            "one answer per filter"
        );
    }

    /// A target the `state` filter leaves out still counts: going stale brings it in.
    #[test]
    fn a_filtered_answer_ends_when_an_unlisted_target_goes_stale() {
        let now = 1_000_000;
        let stale_only = StatusFilter {
            states: vec![crate::model::TargetState::Stale],
            ..StatusFilter::default()
        };
        let answer = build(
            stale_only.clone(),
            1,
            vec![latest(drifted(1, now - 599_000, None), None)],
            now,
        );
        assert_eq!(&answer.body[..], b"[]");
        let version = StatusVersion::Published(1);
        assert!(answer.answers(&stale_only, &version, Timestamp::from_millis(now + 1_000)));
        assert!(!answer.answers(&stale_only, &version, Timestamp::from_millis(now + 1_001)));
    }

    #[test]
    fn the_least_recently_used_answers_go_first() {
        let cache = StatusCache::default();
        let filter = |n: usize| StatusFilter {
            server: Some(format!("s{n}")),
            ..StatusFilter::default()
        };
        for n in 0..=StatusCache::MAX_ANSWERS {
            cache.keep(Arc::new(build(filter(n), 1, Vec::new(), 0)));
            if n == 0 {
                continue;
            }
            // 0 stays the most recently used.
            assert!(
                cache
                    .get(
                        &filter(0),
                        &StatusVersion::Published(1),
                        Timestamp::from_millis(0)
                    )
                    .is_some()
            );
        }
        let kept = |n| {
            cache
                .get(
                    &filter(n),
                    &StatusVersion::Published(1),
                    Timestamp::from_millis(0),
                )
                .is_some()
        };
        assert!(kept(0));
        assert!(!kept(1), "the least recently used of nine");
        assert!(kept(StatusCache::MAX_ANSWERS));
    }

    #[test]
    fn the_gzip_body_is_the_body() {
        let answer = build(
            StatusFilter::default(),
            1,
            vec![latest(drifted(1, 0, None), None)],
            0,
        );
        let gzip = answer.gzip().unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzip[..]), &mut out).unwrap();
        assert_eq!(out, answer.body);
        assert_eq!(
            answer.gzip().unwrap().as_ptr(),
            gzip.as_ptr(),
            "written once"
        );
    }

    /// The same choice as the compression layer's (tower-http's `Accept-Encoding` parsing).
    #[test]
    fn gzip_is_chosen_as_the_compression_layer_would() {
        let choose = |fields: &[&str]| {
            let mut headers = HeaderMap::new();
            for field in fields {
                headers.append(
                    header::ACCEPT_ENCODING,
                    HeaderValue::from_str(field).unwrap(),
                );
            }
            prefers_gzip(&headers)
        };
        for yes in [
            &["gzip"][..],
            &["GZIP"],
            &["x-gzip"],
            &["deflate, gzip;q=0.5"],
            &["br", "gzip;q=1.000"],
            &["gzip;q=0.5, identity;q=0.5"],
            &["gzip, deflate, br, zstd"],
            &["gzip;q=1."],
        ] {
            assert!(choose(yes), "{yes:?}");
        }
        for no in [
            &[][..],
            &["br"],
            &["*"],
            &["gzip;q=0"],
            &["gzip;q=0.000"],
            &["gzip;q=0.5, identity"],
            &["gzip;q=1.5"],
            &["gzip;q=0.0001"],
            &["gzip;q=.5"],
            &["gzip;level=1"],
            &["identity"],
        ] {
            assert!(!choose(no), "{no:?}");
        }
    }
}
