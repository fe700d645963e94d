//! Seeds a database with a realistic drift history through the store (not HTTP, and without
//! fsync at commit, which changes nothing in the file written), for benchmarks:
//! every target checks in every 2 minutes; on average one check in ten reports OUT_OF_SYNC with 1-3
//! files, the rest SYNCED. The newest round of checks is about now. An optional fourth argument
//! DRIFT_EVERY (default 10) makes one check in DRIFT_EVERY drift instead: long SYNCED runs, for
//! measuring episodes whose snapshots are many.
//!
//! cargo run --release --example seed_history -- sqlite://bench.db 10000 10000000 [DRIFT_EVERY] [--no-rollups]
//!
//! The daily rollups behind `/api/stats` are kept as the history is written, for the default
//! `--stale-after` (600 s), unless `--no-rollups` (then the server rebuilds them at start); the
//! two seeding times are the rollups' ingest cost.
//!
//! Prints one JSON line: snapshots written, seconds, database bytes and bytes per snapshot.

mod common;

use std::time::{Duration, Instant};

use common::Loader;
use gitops_status_server::model::{NewSnapshot, SyncStatus};
use gitops_status_server::store::Store;
use gitops_status_server::timestamp::Timestamp;

const CHECK_INTERVAL_MILLIS: i64 = 120_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: seed_history DATABASE_URL TARGETS SNAPSHOTS [DRIFT_EVERY] [--no-rollups]";
    let url = args.next().ok_or(usage)?;
    let targets: i64 = args.next().ok_or(usage)?.parse()?;
    let snapshots: i64 = args.next().ok_or(usage)?.parse()?;
    let rest: Vec<String> = args.collect();
    let rollups = !rest.iter().any(|arg| arg == "--no-rollups");
    let drift_every: i64 = match rest.iter().find(|arg| *arg != "--no-rollups") {
        Some(every) => every.parse::<i64>()?.max(1),
        None => 10,
    };
    let rounds = (snapshots + targets - 1) / targets;

    // The seeded file is what a durable run would write; fsync would only make seeding slower.
    let store = Store::connect_unsynchronized(&url).await?;
    if rollups {
        store.keep_rollups(600).await?;
    }
    let now = Timestamp::now().as_millis();
    let first_round = now - rounds * CHECK_INTERVAL_MILLIS;
    let started = Instant::now();
    let mut loader = Loader::new(store.clone());
    for n in 0..snapshots {
        let (round, target) = (n / targets, n % targets);
        let drifted = (round + target) % drift_every == 0;
        let files: Vec<String> = if drifted {
            (1..=1 + n % 3)
                .map(|i| format!("conf.d/{i:02}-managed.conf"))
                .collect()
        } else {
            Vec::new()
        };
        // Spread each round over the interval, as independent cron jobs would.
        let at = first_round
            + round * CHECK_INTERVAL_MILLIS
            + target * CHECK_INTERVAL_MILLIS / targets.max(1);
        let snapshot = NewSnapshot {
            repo: format!("repo-{}", target % 50),
            server: format!("server-{target}"),
            sync_status: if drifted {
                SyncStatus::OutOfSync
            } else {
                SyncStatus::Synced
            },
            drift_count: files.len() as i64,
            files,
            last_check: Timestamp::from_millis(at),
            last_check_defaulted: false,
            received_at: Timestamp::from_millis(at + 1_500),
            revision: None,
            run_url: None,
            message: None,
            stale_after_seconds: None,
        };
        loader.push(snapshot).await?;
    }
    loader.flush().await?;
    let seconds = started.elapsed().as_secs_f64();
    store.close().await;

    let path = url.trim_start_matches("sqlite://");
    let bytes: u64 = ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{path}{suffix}")).ok())
        .map(|metadata| metadata.len())
        .sum();
    println!(
        "{{\"snapshots\":{snapshots},\"targets\":{targets},\"rollups\":{rollups},\"seconds\":{seconds:.2},\"bytes\":{bytes},\"bytes_per_snapshot\":{:.1}}}",
        bytes as f64 / snapshots.max(1) as f64
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    Ok(())
}
