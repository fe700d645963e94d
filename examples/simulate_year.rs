//! Simulates a fleet's drift history through the store, day by day, optionally with retention, and
//! reports the database's size: the figures in docs/audit.md.
//!
//! cargo run --release --example simulate_year -- sqlite://year.db 1000 365 [RETENTION_DAYS]
//!
//! Every target checks in every 2 minutes. On about one day in three a target drifts for 30 min
//! to 6 h (1-3 of 20 managed files), and on about one day in twenty its check fails (ERROR) for an
//! hour; the rest is SYNCED. With RETENTION_DAYS, retention runs after every simulated day, as
//! `--retention` would. Commits skip fsync (`Store::connect_unsynchronized`), which changes the
//! speed of the run, not the file it leaves. Prints one JSON line.

mod common;

use std::time::Instant;

use common::Loader;
use gitops_status_server::model::{NewSnapshot, SyncStatus};
use gitops_status_server::store::Store;
use gitops_status_server::timestamp::Timestamp;

const CHECK_MILLIS: i64 = 120_000;
const DAY_MILLIS: i64 = 86_400_000;

/// A deterministic 64-bit mix (splitmix64), so every run writes the same history.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A target's status and drifted files at `minute` of `day`.
fn state(target: u64, day: u64, minute: u64) -> (SyncStatus, Vec<String>) {
    let seed = mix(target << 20 | day);
    if seed % 3 == 0 {
        let start = (seed >> 8) % 1_080;
        let length = 30 + (seed >> 20) % 330;
        if (start..start + length).contains(&minute) {
            let count = 1 + (seed >> 32) % 3;
            let files = (0..count)
                .map(|i| {
                    format!(
                        "etc/app/conf.d/{:02}-managed.conf",
                        (seed >> (40 + i * 4)) % 20
                    )
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            return (SyncStatus::OutOfSync, files);
        }
    }
    if (seed >> 48) % 20 == 0 && (1_200..1_260).contains(&minute) {
        return (SyncStatus::Error, Vec::new());
    }
    (SyncStatus::Synced, Vec::new())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: simulate_year DATABASE_URL TARGETS DAYS [RETENTION_DAYS]";
    let url = args.next().ok_or(usage)?;
    let targets: u64 = args.next().ok_or(usage)?.parse()?;
    let days: u64 = args.next().ok_or(usage)?.parse()?;
    let retention_days: Option<i64> = args.next().map(|days| days.parse()).transpose()?;
    let path = url.trim_start_matches("sqlite://").to_owned();

    let store = Store::connect_unsynchronized(&url).await?;
    let end = Timestamp::now().as_millis() - 600_000;
    let start = end - days as i64 * DAY_MILLIS;
    let started = Instant::now();
    let (mut written, mut removed) = (0u64, 0i64);
    let mut loader = Loader::new(store.clone());
    let rounds_per_day = (DAY_MILLIS / CHECK_MILLIS) as u64;
    for day in 0..days {
        for round in 0..rounds_per_day {
            let minute = round * 2;
            for target in 0..targets {
                let (sync_status, files) = state(target, day, minute);
                let at = start
                    + day as i64 * DAY_MILLIS
                    + round as i64 * CHECK_MILLIS
                    + (target as i64 * CHECK_MILLIS) / targets as i64;
                loader
                    .push(NewSnapshot {
                        repo: format!("repo-{}", target % 40),
                        server: format!("server-{target:04}"),
                        sync_status,
                        drift_count: files.len() as i64,
                        files,
                        last_check: Timestamp::from_millis(at),
                        last_check_defaulted: false,
                        received_at: Timestamp::from_millis(at + 1_500),
                        revision: None,
                        run_url: None,
                        message: (sync_status == SyncStatus::Error)
                            .then(|| "ssh: connect to host port 22: Connection refused".to_owned()),
                        stale_after_seconds: None,
                    })
                    .await?;
                written += 1;
            }
        }
        if let Some(keep) = retention_days {
            loader.flush().await?;
            let today = start + (day as i64 + 1) * DAY_MILLIS;
            let report = store
                .prune(Timestamp::from_millis(today - keep * DAY_MILLIS))
                .await?;
            removed += report.removed;
        }
    }
    loader.flush().await?;
    let verified = store.verify().await?;
    store.close().await;
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "{{\"targets\":{targets},\"days\":{days},\"retention_days\":{},\"written\":{written},\
         \"removed\":{removed},\"stored\":{},\"verified\":{},\"seconds\":{:.1},\"bytes\":{bytes},\
         \"bytes_per_stored_snapshot\":{:.1}}}",
        retention_days.map_or("null".to_owned(), |days| days.to_string()),
        verified.checked,
        verified.ok,
        started.elapsed().as_secs_f64(),
        bytes as f64 / verified.checked.max(1) as f64,
    );
    Ok(())
}
