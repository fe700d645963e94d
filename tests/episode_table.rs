//! The materialised episodes (src/store/episode_table.rs) answer `/api/episodes` exactly as the
//! derivation from snapshots does: random histories (late checks, gaps beyond stale-after,
//! per-snapshot stale-after, retirements and the snapshots that revive, acknowledgements)
//! written through the store's one pipeline, read with random filters (repo, server, states,
//! from, to, open, order, limit) page by page through their cursors by both paths, on both
//! databases; again after a rebuild for another default stale-after, and after retention.

mod common;

use common::{Backend, TestDatabase, random_history};
use gitops_status_server::model::lifecycle::{EventKind, NewEvent};
use gitops_status_server::model::{EpisodeClock, EpisodeFilter, Order, TargetState};
use gitops_status_server::store::{EpisodePath, Store};
use gitops_status_server::timestamp::Timestamp;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

backend_tests! {
    materialised_episodes_agree_with_derived_ones_over_random_histories_and_filters,
    retention_keeps_the_materialised_episodes_exact,
}

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const TARGETS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// A check `step` ms after the target's newest (negative: a late check that far before it).
    Check {
        target: usize,
        step: i64,
        status: u8,
        files: u8,
        stale_after: Option<i64>,
    },
    Retire {
        target: usize,
    },
    Ack {
        target: usize,
        length: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let step = prop_oneof![
        8 => 1..15 * MINUTE,
        2 => 15 * MINUTE..4 * HOUR,
        1 => 4 * HOUR..40 * HOUR,
        2 => -20 * HOUR..0i64,
    ];
    let check = (
        0..TARGETS,
        step,
        0u8..3,
        0u8..4,
        prop_oneof![
            6 => Just(None),
            1 => Just(Some(60i64)),
            1 => Just(Some(7200i64)),
        ],
    )
        .prop_map(|(target, step, status, files, stale_after)| Op::Check {
            target,
            step,
            status,
            files,
            stale_after,
        });
    prop_oneof![
        14 => check,
        1 => (0..TARGETS).prop_map(|target| Op::Retire { target }),
        1 => (0..TARGETS, MINUTE..30 * HOUR).prop_map(|(target, length)| Op::Ack { target, length }),
    ]
}

/// A request: the filter (times in ms after T0), the page size, and the clock.
#[derive(Debug, Clone)]
struct Query {
    repo: Option<&'static str>,
    server: Option<usize>,
    states: Vec<TargetState>,
    from: Option<i64>,
    to: Option<i64>,
    open: Option<bool>,
    desc: bool,
    limit: usize,
    now: i64,
}

fn query() -> impl Strategy<Value = Query> {
    let time = -HOUR..4 * 24 * HOUR;
    (
        (
            prop_oneof![3 => Just(None), 1 => Just(Some("r")), 1 => Just(Some("other"))],
            prop_oneof![3 => Just(None), 2 => (0..TARGETS + 1).prop_map(Some)],
            prop::sample::subsequence(TargetState::ALL.to_vec(), 0..=2),
        ),
        (
            prop::option::weighted(0.4, time.clone()),
            prop::option::weighted(0.3, time),
            prop_oneof![2 => Just(None), 1 => Just(Some(true)), 1 => Just(Some(false))],
            any::<bool>(),
            1usize..6,
            prop_oneof![1 => 0..2 * 24 * HOUR, 2 => 2 * 24 * HOUR..6 * 24 * HOUR],
        ),
    )
        .prop_map(
            |((repo, server, states), (from, to, open, desc, limit, now))| {
                let (from, to) = match (from, to) {
                    (Some(from), Some(to)) if from > to => (Some(to), Some(from)),
                    other => other,
                };
                Query {
                    repo,
                    server,
                    states,
                    from,
                    to,
                    open,
                    desc,
                    limit,
                    now,
                }
            },
        )
}

async fn write(store: &Store, ops: &[Op]) {
    let mut newest = [T0; TARGETS];
    for op in ops {
        match op {
            Op::Check {
                target,
                step,
                status,
                files,
                stale_after,
            } => {
                let last_check = if *step > 0 {
                    newest[*target] += step;
                    newest[*target]
                } else {
                    newest[*target] + step
                };
                let snapshot = random_history::check(
                    *target,
                    last_check,
                    newest[*target] + 1000,
                    *status,
                    *files,
                    *stale_after,
                );
                let _ = store.record(snapshot).await;
            }
            Op::Retire { target } => {
                let event = random_history::retire(*target, newest[*target] + MINUTE);
                let _ = store.record_event(event).await;
            }
            Op::Ack { target, length } => {
                let at = newest[*target] + MINUTE;
                let event = NewEvent {
                    repo: "r".to_owned(),
                    server: format!("s{target}"),
                    at: Timestamp::from_millis(at),
                    kind: EventKind::Ack {
                        reason: "known".to_owned(),
                        until: Timestamp::from_millis(at + length),
                        files: None,
                        by: "ops".to_owned(),
                    },
                };
                let _ = store.record_event(event).await;
            }
        }
    }
}

/// Every page of the query by one path, as JSON, following the cursor (at most 40 pages).
async fn pages(store: &Store, query: &Query, default: i64, path: EpisodePath) -> Vec<String> {
    let mut filter = EpisodeFilter {
        repo: query.repo.map(str::to_owned),
        server: query.server.map(|server| format!("s{server}")),
        states: query.states.clone(),
        from: query.from.map(|from| Timestamp::from_millis(T0 + from)),
        to: query.to.map(|to| Timestamp::from_millis(T0 + to)),
        open: query.open,
        order: if query.desc { Order::Desc } else { Order::Asc },
        after: None,
    };
    let clock = EpisodeClock {
        now: Timestamp::from_millis(T0 + query.now),
        default_stale_after_seconds: default,
    };
    let mut pages = Vec::new();
    for _ in 0..40 {
        let (page, more) = store
            .episodes_page_by(path, &filter, clock, query.limit)
            .await
            .unwrap();
        pages.push(format!(
            "{} more={more}",
            serde_json::to_string(&page).unwrap()
        ));
        match page.last() {
            Some(last) if more => filter.after = Some(last.cursor()),
            _ => break,
        }
    }
    pages
}

async fn compare(store: &Store, queries: &[Query], default: i64, ops: &[Op]) -> usize {
    let mut episodes = 0;
    for query in queries {
        let derived = pages(store, query, default, EpisodePath::Derived).await;
        let materialised = pages(store, query, default, EpisodePath::Materialised).await;
        assert!(
            derived == materialised,
            "query {query:?}, stale-after {default}\nops: {ops:#?}\nderived: {derived:#?}\n\
             materialised: {materialised:#?}"
        );
        episodes += derived
            .iter()
            .filter(|page| !page.starts_with("[]"))
            .count();
    }
    episodes
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(24)
}

async fn materialised_episodes_agree_with_derived_ones_over_random_histories_and_filters(
    backend: Backend,
) {
    let mut runner = TestRunner::new(Config::default());
    let mut pages_with_episodes = 0;
    for _ in 0..cases() {
        let (ops, queries) = (
            prop::collection::vec(op(), 10..70),
            prop::collection::vec(query(), 12),
        )
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let database = TestDatabase::create(backend).await;
        let store = Store::connect(&database.url).await.unwrap();
        // On an empty database the episodes are complete at once and kept as snapshots commit.
        store.keep_rollups(600).await.unwrap();
        write(&store, &ops).await;
        pages_with_episodes += compare(&store, &queries, 600, &ops).await;
        // Another default: rebuilt from the snapshots, then the same agreement.
        store.keep_rollups(3600).await.unwrap();
        compare(&store, &queries, 3600, &ops).await;
        store.close().await;
    }
    assert!(pages_with_episodes > 0);
}

/// Retention removes old snapshots; the episodes of what is left are derived again, and both
/// paths still agree.
async fn retention_keeps_the_materialised_episodes_exact(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = Store::connect(&database.url).await.unwrap();
    store.keep_rollups(600).await.unwrap();
    let ops: Vec<Op> = (0..600)
        .map(|n| Op::Check {
            target: n % TARGETS,
            step: if n % 41 == 0 { 2 * HOUR } else { 5 * MINUTE },
            status: u8::from(n % 23 < 3),
            files: 1,
            stale_after: None,
        })
        .collect();
    write(&store, &ops).await;
    let query = Query {
        repo: None,
        server: None,
        states: Vec::new(),
        from: None,
        to: None,
        open: None,
        desc: false,
        limit: 7,
        now: 3 * 24 * HOUR,
    };
    let before = pages(&store, &query, 600, EpisodePath::Materialised).await;
    assert_eq!(
        before,
        pages(&store, &query, 600, EpisodePath::Derived).await
    );
    let report = store
        .prune(Timestamp::from_millis(T0 + 10 * HOUR))
        .await
        .unwrap();
    assert!(report.removed > 0, "{report:?}");
    let after = pages(&store, &query, 600, EpisodePath::Materialised).await;
    assert_ne!(after, before);
    assert_eq!(
        after,
        pages(&store, &query, 600, EpisodePath::Derived).await
    );
    store.close().await;
}
