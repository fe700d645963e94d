//! Times `/api/stats`'s work on a seeded database (examples/seed_history.rs) by both of its read
//! paths: from the daily rollups, and from raw snapshots only, which is what every request did
//! before the rollups. Store read plus report, as the handler does them, without HTTP.
//!
//! cargo run --release --example stats_paths -- sqlite://bench.db [RUNS] [--aligned] [--raw]
//!
//! The window is the 30 days before now (before today's UTC midnight with `--aligned`, so it
//! has no partial edge day). `--raw` also times the raw path (slow on a big history). Prints
//! one JSON line: the p50 and the slowest run in ms per path, and the rows' equality.

use std::time::Instant;

use gitops_status_server::rollups::{DAY_MILLIS, day_start};
use gitops_status_server::stats::{self, GroupBy, StatsFormat, StatsRequest};
use gitops_status_server::store::{StatsPath, Store};
use gitops_status_server::timestamp::Timestamp;

const STALE_AFTER: i64 = 600;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: stats_paths DATABASE_URL [RUNS] [--aligned] [--raw]";
    let url = args.first().ok_or(usage)?;
    let runs: usize = args.get(1).and_then(|runs| runs.parse().ok()).unwrap_or(11);
    let aligned = args.iter().any(|arg| arg == "--aligned");
    let raw = args.iter().any(|arg| arg == "--raw");

    let store = Store::connect(url).await?;
    store.keep_rollups(STALE_AFTER).await?;
    let now = Timestamp::now();
    let to = if aligned {
        day_start(now.as_millis())
    } else {
        now.as_millis()
    };
    let request = StatsRequest {
        repo: None,
        server: None,
        from: Timestamp::from_millis(to - 30 * DAY_MILLIS),
        to: Timestamp::from_millis(to),
        group_by: GroupBy::All,
        format: StatsFormat::Json,
    };
    let time = |path: StatsPath| {
        let store = store.clone();
        let request = request.clone();
        async move {
            let mut millis = Vec::new();
            let mut body = Vec::new();
            for _ in 0..runs {
                let started = Instant::now();
                let input = store.stats_input(&request, now, path).await?;
                let rows = stats::report(&input, &request, now, STALE_AFTER);
                body = serde_json::to_vec(&rows)?;
                millis.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            millis.sort_by(f64::total_cmp);
            Ok::<_, Box<dyn std::error::Error>>((millis[millis.len() / 2], millis[runs - 1], body))
        }
    };
    let rollups = time(StatsPath::Rollups {
        default_stale_after: STALE_AFTER,
    })
    .await?;
    let mut line = format!(
        "{{\"aligned\":{aligned},\"runs\":{runs},\"rollups_p50_ms\":{:.1},\"rollups_max_ms\":{:.1}",
        rollups.0, rollups.1
    );
    if raw {
        let raw = time(StatsPath::Raw).await?;
        line.push_str(&format!(
            ",\"raw_p50_ms\":{:.1},\"raw_max_ms\":{:.1},\"same_rows\":{}",
            raw.0,
            raw.1,
            raw.2 == rollups.2
        ));
    }
    println!("{line}}}");
    eprintln!("{}", String::from_utf8_lossy(&rollups.2));
    store.close().await;
    Ok(())
}
