//! Daily rollups behind `/api/stats` agree with the raw computation byte for byte: random
//! histories (late checks, gaps beyond stale-after, per-snapshot stale-after, retirements and the
//! snapshots that revive, acknowledgements with and without file globs, silences) written through
//! the store's one pipeline, read over random windows with millisecond edges by both paths, on
//! both databases; again after the rollups were rebuilt for another default stale-after.

mod common;

use common::{Backend, TestDatabase, random_history};
use gitops_status_server::model::lifecycle::{EventKind, NewEvent, NewSilence};
use gitops_status_server::rollups::DAY_MILLIS;
use gitops_status_server::stats::{self, GroupBy, StatsFormat, StatsInput, StatsRequest};
use gitops_status_server::store::{StatsPath, Store};
use gitops_status_server::timestamp::Timestamp;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

backend_tests! {
    rollups_agree_with_raw_snapshots_over_random_histories_and_windows,
    a_store_without_complete_rollups_reads_raw_and_rebuilds_them,
    retention_keeps_the_rollups_of_the_days_it_prunes,
}

/// 2026-01-01T00:00:00Z, a UTC midnight.
const T0: i64 = 1_767_225_600_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const TARGETS: usize = 3;

/// One thing that happens to the fleet, in arrival order.
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
    /// An acknowledgement of the target's drift, for `length` ms, of files matching `a*` or any.
    Ack {
        target: usize,
        length: i64,
        only_a: bool,
    },
    /// A silence of servers matching the glob, from `offset` ms around the newest check on.
    Silence {
        glob: &'static str,
        offset: i64,
        length: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let step = prop_oneof![
        8 => 1..15 * MINUTE,
        2 => 15 * MINUTE..4 * HOUR,
        2 => 4 * HOUR..40 * HOUR,
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
        12 => check,
        1 => (0..TARGETS).prop_map(|target| Op::Retire { target }),
        2 => (0..TARGETS, MINUTE..30 * HOUR, any::<bool>())
            .prop_map(|(target, length, only_a)| Op::Ack { target, length, only_a }),
        1 => (
            prop_oneof![Just("*"), Just("s0"), Just("s[12]")],
            -10 * HOUR..10 * HOUR,
            MINUTE..30 * HOUR,
        )
            .prop_map(|(glob, offset, length)| Op::Silence { glob, offset, length }),
    ]
}

/// A window `[from, to)` and the clock it is read at, in ms after T0; some with day-aligned
/// edges, most with edges anywhere.
fn window() -> impl Strategy<Value = (i64, i64, i64)> {
    let edge = prop_oneof![
        3 => -DAY_MILLIS..6 * DAY_MILLIS,
        1 => (-1i64..6).prop_map(|day| day * DAY_MILLIS),
    ];
    (edge.clone(), edge, 0..8 * DAY_MILLIS).prop_map(|(a, b, now)| {
        let (from, to) = if a < b { (a, b) } else { (b, a + 1) };
        (from, to, now)
    })
}

fn case() -> impl Strategy<Value = (Vec<Op>, Vec<(i64, i64, i64)>)> {
    (
        prop::collection::vec(op(), 10..70),
        prop::collection::vec(window(), 6),
    )
}

/// Writes the ops through the store; refused events (an acknowledgement of a SYNCED or retired
/// target, a retirement of one that never reported) are part of the game.
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
                // A late check may land on a taken time with other content: a conflict.
                let _ = store.record(snapshot).await;
            }
            Op::Retire { target } => {
                let event = random_history::retire(*target, newest[*target] + MINUTE);
                let _ = store.record_event(event).await;
            }
            Op::Ack {
                target,
                length,
                only_a,
            } => {
                let at = newest[*target] + MINUTE;
                let event = NewEvent {
                    repo: "r".to_owned(),
                    server: format!("s{target}"),
                    at: Timestamp::from_millis(at),
                    kind: EventKind::Ack {
                        reason: "known".to_owned(),
                        until: Timestamp::from_millis(at + length),
                        files: only_a.then(|| vec!["a*".to_owned()]),
                        by: "ops".to_owned(),
                    },
                };
                let _ = store.record_event(event).await;
            }
            Op::Silence {
                glob,
                offset,
                length,
            } => {
                let starts = newest.iter().max().unwrap_or(&T0) + offset;
                let event = NewEvent {
                    repo: String::new(),
                    server: String::new(),
                    at: Timestamp::from_millis(starts),
                    kind: EventKind::Silence {
                        silence: NewSilence {
                            repos: vec!["*".to_owned()],
                            servers: vec![(*glob).to_owned()],
                            starts_at: Timestamp::from_millis(starts),
                            ends_at: Timestamp::from_millis(starts + length),
                            reason: "maintenance".to_owned(),
                        },
                        by: "ops".to_owned(),
                    },
                };
                store.record_event(event).await.expect("silence");
            }
        }
    }
}

/// Both paths over the window, every grouping: the same JSON, byte for byte. Returns whether
/// the rollups answered.
async fn compare(
    store: &Store,
    (from, to, now): (i64, i64, i64),
    default_stale_after: i64,
    ops: &[Op],
) -> bool {
    let now = Timestamp::from_millis(T0 + now);
    let mut rolled_up = false;
    for group_by in [GroupBy::Target, GroupBy::All] {
        let request = StatsRequest {
            repo: None,
            server: None,
            from: Timestamp::from_millis(T0 + from),
            to: Timestamp::from_millis(T0 + to),
            group_by,
            format: StatsFormat::Json,
        };
        let rollups = StatsPath::Rollups {
            default_stale_after,
        };
        let rolled = store.stats_input(&request, now, rollups).await.unwrap();
        let raw = store
            .stats_input(&request, now, StatsPath::Raw)
            .await
            .unwrap();
        assert!(matches!(raw, StatsInput::Raw(_)));
        rolled_up |= matches!(rolled, StatsInput::Rolled(_));
        let json = |input: &StatsInput| {
            let rows = stats::report(input, &request, now, default_stale_after);
            serde_json::to_string_pretty(&rows).unwrap()
        };
        let (rolled, raw) = (json(&rolled), json(&raw));
        assert!(
            rolled == raw,
            "window {request:?} at {now}, stale-after {default_stale_after}\nops: {ops:#?}\n\
             rollups: {rolled}\nraw: {raw}"
        );
    }
    rolled_up
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(24)
}

async fn rollups_agree_with_raw_snapshots_over_random_histories_and_windows(backend: Backend) {
    let mut runner = TestRunner::new(Config::default());
    let mut rolled_windows = 0;
    for _ in 0..cases() {
        let (ops, windows) = case().new_tree(&mut runner).unwrap().current();
        let database = TestDatabase::create(backend).await;
        let store = Store::connect(&database.url).await.unwrap();
        // On an empty database the rollups are complete at once and kept as snapshots commit.
        store.keep_rollups(600).await.unwrap();
        write(&store, &ops).await;
        for window in &windows {
            rolled_windows += u32::from(compare(&store, *window, 600, &ops).await);
        }
        // Another default: a rebuild from raw snapshots, then the same agreement.
        store.keep_rollups(3600).await.unwrap();
        for window in &windows {
            compare(&store, *window, 3600, &ops).await;
        }
        // A server with yet another default reads raw: the rollups are not for it.
        let (from, to, now) = windows[0];
        let request = StatsRequest {
            repo: None,
            server: None,
            from: Timestamp::from_millis(T0 + from),
            to: Timestamp::from_millis(T0 + to),
            group_by: GroupBy::Target,
            format: StatsFormat::Json,
        };
        let other = StatsPath::Rollups {
            default_stale_after: 600,
        };
        let input = store
            .stats_input(&request, Timestamp::from_millis(T0 + now), other)
            .await
            .unwrap();
        assert!(matches!(input, StatsInput::Raw(_)));
        store.close().await;
    }
    // Most windows hold a whole day: the rollups were what answered them.
    assert!(
        rolled_windows >= cases() * 6 / 3,
        "only {rolled_windows} windows were read from rollups"
    );
}

/// A database written without rollups (as one from before them is) reads raw until the server
/// keeps them; the rebuild then gives the same rows.
async fn a_store_without_complete_rollups_reads_raw_and_rebuilds_them(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = Store::connect(&database.url).await.unwrap();
    let ops: Vec<Op> = (0..200)
        .map(|n| Op::Check {
            target: n % TARGETS,
            step: if n % 17 == 0 { 20 * HOUR } else { 10 * MINUTE },
            status: u8::from(n % 5 == 0),
            files: 1,
            stale_after: None,
        })
        .collect();
    write(&store, &ops).await;
    let window = (0, 5 * DAY_MILLIS, 6 * DAY_MILLIS);
    assert!(!compare(&store, window, 600, &ops).await);
    store.keep_rollups(600).await.unwrap();
    assert!(compare(&store, window, 600, &ops).await);
    store.close().await;
}

/// The rows over `[from, to)` (ms after T0) at `now`, by one path.
async fn rows(store: &Store, (from, to, now): (i64, i64, i64), path: StatsPath) -> String {
    let request = StatsRequest {
        repo: None,
        server: None,
        from: Timestamp::from_millis(T0 + from),
        to: Timestamp::from_millis(T0 + to),
        group_by: GroupBy::Target,
        format: StatsFormat::Json,
    };
    let now = Timestamp::from_millis(T0 + now);
    let input = store.stats_input(&request, now, path).await.unwrap();
    serde_json::to_string(&stats::report(&input, &request, now, 600)).unwrap()
}

/// Retention removes the snapshots of whole days before its cutoff, except transitions; the
/// days' rollups stay, so a window of whole days before the cutoff answers as before, where
/// raw snapshots alone no longer can (the gaps retention left would count as STALE).
async fn retention_keeps_the_rollups_of_the_days_it_prunes(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let store = Store::connect(&database.url).await.unwrap();
    store.keep_rollups(600).await.unwrap();
    // Four days of checks every 5 minutes, drifting now and then.
    let ops: Vec<Op> = (0..4 * 288)
        .map(|n| Op::Check {
            target: n % TARGETS,
            step: 5 * MINUTE,
            status: u8::from(n % 97 < 7),
            files: 1,
            stale_after: None,
        })
        .collect();
    write(&store, &ops).await;
    let window = (DAY_MILLIS, 3 * DAY_MILLIS, 10 * DAY_MILLIS);
    let rollups = StatsPath::Rollups {
        default_stale_after: 600,
    };
    let before = rows(&store, window, rollups).await;
    assert_eq!(before, rows(&store, window, StatsPath::Raw).await);

    let report = store
        .prune(Timestamp::from_millis(T0 + 3 * DAY_MILLIS + HOUR))
        .await
        .unwrap();
    assert!(report.removed > 0, "{report:?}");
    assert_eq!(rows(&store, window, rollups).await, before);
    assert_ne!(rows(&store, window, StatsPath::Raw).await, before);
    store.close().await;
}
