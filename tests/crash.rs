//! Crash durability: concurrent writers, `kill -9` at a random moment (0-1.2 s after the first
//! acknowledgement), restart on the same database;
//! every snapshot that was answered 200 must be there and the integrity chain must verify. Twenty
//! cycles on one SQLite file, eight on one PostgreSQL database (the database server survives the
//! kill, so fewer cycles cover the same ground). `CRASH_SEED=n` replays a run; `CRASH_CYCLES=n`
//! changes the count for both.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::binary::Binary;
use common::{Backend, TestDatabase};
use serde_json::{Value, json};

const WRITERS: usize = 8;
/// Sequence numbers (milliseconds of last_check) each writer may use per cycle: far more than it
/// can post in a cycle, and 20 cycles of 8 writers stay within the last hour.
const PER_WRITER: i64 = 20_000;

/// xorshift64*: enough randomness to pick kill moments, replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// RFC 3339 time `millis` after a base two hours ago: unique per (writer, sequence number).
fn at(base_ms: i64, millis: i64) -> String {
    let at =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(base_ms + millis) * 1_000_000)
            .unwrap();
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Posts unique snapshots until the server goes away; returns the (id, server, last_check) of
/// every one answered 200.
async fn write_until_killed(
    url: String,
    writer: usize,
    first: i64,
    base_ms: i64,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
) -> Vec<(i64, String, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut acknowledged = Vec::new();
    let server = format!("w{writer}");
    for n in first.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let last_check = at(base_ms, n);
        let body = json!({
            "repo": "crash",
            "server": server,
            "sync_status": if n % 3 == 0 { "SYNCED" } else { "OUT_OF_SYNC" },
            "files": if n % 3 == 0 { json!([]) } else { json!([{ "name": format!("f{}.conf", n % 5) }]) },
            "last_check": last_check,
        });
        let Ok(response) = client.post(&url).json(&body).send().await else {
            break;
        };
        if response.status() != 200 {
            break;
        }
        let Ok(stored) = response.json::<Value>().await else {
            break;
        };
        answered.fetch_add(1, Ordering::Relaxed);
        acknowledged.push((
            stored["id"].as_i64().unwrap(),
            server.clone(),
            stored["last_check"].as_str().unwrap().to_owned(),
        ));
    }
    acknowledged
}

/// Every stored snapshot id with its (server, last_check), through the NDJSON export.
async fn stored(server: &Binary) -> HashMap<i64, (String, String)> {
    let text = reqwest::get(server.url("/history?format=ndjson"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            (
                row["id"].as_i64().unwrap(),
                (
                    row["server"].as_str().unwrap().to_owned(),
                    row["last_check"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

backend_tests! {
    multi_thread:
        kill_9_at_random_moments_loses_no_acknowledged_snapshot,
}

async fn kill_9_at_random_moments_loses_no_acknowledged_snapshot(backend: Backend) {
    let seed = env_or(
        "CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    let default_cycles = match backend {
        Backend::Sqlite => 20,
        Backend::Postgres => 8,
    };
    let cycles: u32 = env_or("CRASH_CYCLES", default_cycles);
    println!("crash test: seed {seed} (replay with CRASH_SEED={seed}), {cycles} cycles");
    let mut rng = Rng(seed);
    let database = TestDatabase::create(backend).await;
    let (dir, url) = (&database.dir, &database.url);
    let base_ms = (time::OffsetDateTime::now_utc().unix_timestamp() - 7200) * 1000;
    let started = Instant::now();
    let mut acknowledged: Vec<(i64, String, String)> = Vec::new();
    let mut next_sequence = 0i64;

    for cycle in 0..cycles {
        let mut server = Binary::start(dir.path(), &["--database-url", url], &[]);
        // What earlier cycles acknowledged survived their kill -9, and the chain verifies.
        let rows = stored(&server).await;
        let lost: Vec<_> = acknowledged
            .iter()
            .filter(|(id, server, last_check)| {
                rows.get(id) != Some(&(server.clone(), last_check.clone()))
            })
            .collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle} (seed {seed}): {} of {} acknowledged snapshots lost: {:?}",
            lost.len(),
            acknowledged.len(),
            &lost[..lost.len().min(10)]
        );
        let verify: Value = reqwest::get(server.url("/api/verify"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(verify["ok"], true, "cycle {cycle} (seed {seed}): {verify}");

        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                // Each cycle's writer gets a fresh range of sequence numbers.
                let first = next_sequence + writer as i64 * PER_WRITER;
                tokio::spawn(write_until_killed(
                    server.url("/api/status"),
                    writer,
                    first,
                    base_ms,
                    Arc::clone(&stop),
                    Arc::clone(&answered),
                ))
            })
            .collect();
        next_sequence += WRITERS as i64 * PER_WRITER;
        // The kill lands at a random moment once writing is under way, so that every cycle has
        // acknowledged snapshots at stake, however slow the machine.
        let deadline = Instant::now() + Duration::from_secs(20);
        while answered.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(rng.millis(0, 1200)).await;
        server.kill_9();
        stop.store(true, Ordering::Relaxed);
        let before = acknowledged.len();
        for writer in writers {
            let mine = writer.await.unwrap();
            assert!(
                mine.len() < PER_WRITER as usize,
                "a writer ran out of sequence numbers"
            );
            acknowledged.extend(mine);
        }
        assert!(
            acknowledged.len() > before,
            "cycle {cycle}: nothing acknowledged (seed {seed})"
        );
        println!(
            "cycle {cycle}: {} acknowledged before kill -9 ({} in all)",
            acknowledged.len() - before,
            acknowledged.len()
        );
    }

    let server = Binary::start(dir.path(), &["--database-url", url], &[]);
    let rows = stored(&server).await;
    let lost = acknowledged
        .iter()
        .filter(|(id, server, last_check)| {
            rows.get(id) != Some(&(server.clone(), last_check.clone()))
        })
        .count();
    let verify: Value = reqwest::get(server.url("/api/verify"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!(
        "crash test: {cycles} cycles, {} acknowledged, {lost} lost, {} stored, verify ok={}, {:.1} s",
        acknowledged.len(),
        rows.len(),
        verify["ok"],
        started.elapsed().as_secs_f64()
    );
    assert_eq!(lost, 0, "seed {seed}");
    assert_eq!(verify["ok"], true, "{verify}");
}
