//! `/api/episodes`: runs of one state per target by the rules of `/api/stats`, with which it
//! agrees on every window; filters, open episodes, cursors, exports, retirement and
//! acknowledgements.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use gitops_status_server::timestamp::Timestamp;
use serde_json::{Value, json};

backend_tests! {
    an_episode_holds_its_checks_files_and_snapshots,
    episodes_and_stats_agree_on_every_window,
    stale_time_is_an_episode_of_its_own_and_a_late_check_moves_boundaries,
    open_episodes_are_each_targets_current_one,
    filters_select_states_and_the_episodes_overlapping_a_window,
    cursor_pages_cover_every_episode_once_in_both_orders,
    csv_and_ndjson_export_the_whole_selection,
    bad_episode_parameters_are_named,
    an_unchanged_page_answers_304,
    retirement_ends_the_last_episode_and_a_later_snapshot_starts_anew,
    an_acknowledgement_covers_the_drift_it_was_made_for,
    random_histories_match_a_brute_force_model_on_every_selection,
}

const MINUTE: i64 = 60_000;

/// A time as the API takes and writes it.
fn at(millis: i64) -> String {
    Timestamp::from_millis(millis).to_string()
}

/// A whole minute a few days ago: histories are laid out from here.
fn base() -> i64 {
    let now = Timestamp::now().as_millis();
    (now - 3 * 24 * 60 * MINUTE) / MINUTE * MINUTE
}

/// Posts one check of `r/{server}` at `millis`, with its own stale-after when given.
/// A service as the server runs one: keeping the materialised episodes (and rollups) for its
/// default stale-after from the start, so pages are read from them
/// (src/store/episode_table.rs); tests/episode_table.rs compares them with the derivation.
async fn served(backend: Backend) -> TestApp {
    let app = TestApp::on(backend).await;
    app.store.keep_rollups(600).await.unwrap();
    app
}

async fn check(
    app: &TestApp,
    server: &str,
    status: &str,
    files: &[&str],
    millis: i64,
    stale_after_seconds: Option<i64>,
) -> Value {
    let mut body = snapshot("r", server, status, files, &at(millis));
    if let Some(seconds) = stale_after_seconds {
        body["stale_after_seconds"] = json!(seconds);
    }
    app.record(&body).await
}

fn id(row: &Value) -> i64 {
    row["id"].as_i64().unwrap()
}

/// The episodes' (state, started_at, ended_at) in milliseconds.
fn spans(episodes: &[Value]) -> Vec<(String, i64, Option<i64>)> {
    episodes
        .iter()
        .map(|episode| {
            (
                episode["state"].as_str().unwrap().to_owned(),
                episode["started_at_ms"].as_i64().unwrap(),
                episode["ended_at_ms"].as_i64(),
            )
        })
        .collect()
}

fn span(state: &str, start: i64, end: Option<i64>) -> (String, i64, Option<i64>) {
    (state.to_owned(), start, end)
}

async fn an_episode_holds_its_checks_files_and_snapshots(backend: Backend) {
    let app = served(backend).await;
    let t = base();
    let synced = check(&app, "lab", "SYNCED", &[], t, None).await;
    let drift = check(
        &app,
        "lab",
        "OUT_OF_SYNC",
        &["b.conf"],
        t + 2 * MINUTE,
        None,
    )
    .await;
    check(
        &app,
        "lab",
        "OUT_OF_SYNC",
        &["a.conf", "b.conf"],
        t + 4 * MINUTE,
        None,
    )
    .await;
    let last = check(
        &app,
        "lab",
        "OUT_OF_SYNC",
        &["a.conf"],
        t + 6 * MINUTE,
        None,
    )
    .await;
    let resync = check(&app, "lab", "SYNCED", &[], t + 8 * MINUTE, None).await;
    check(&app, "lab", "SYNCED", &[], t + 10 * MINUTE, None).await;

    let episodes = app.get_rows("/api/episodes?order=asc").await;
    assert_eq!(
        episodes[1],
        json!({
            "repo": "r",
            "server": "lab",
            "state": "OUT_OF_SYNC",
            "started_at": at(t + 2 * MINUTE),
            "started_at_ms": t + 2 * MINUTE,
            "ended_at": at(t + 8 * MINUTE),
            "ended_at_ms": t + 8 * MINUTE,
            "duration_seconds": 360.0,
            "checks": 3,
            "files": [{ "name": "a.conf" }, { "name": "b.conf" }],
            "files_text": "a.conf, b.conf",
            "first_snapshot_id": id(&drift),
            "last_snapshot_id": id(&last),
            "acknowledged": null,
        })
    );
    assert_eq!(
        (
            episodes[0]["checks"].clone(),
            episodes[0]["first_snapshot_id"].clone()
        ),
        (json!(1), json!(id(&synced)))
    );
    assert_eq!(episodes[0]["files"], json!([]));
    // The last check went stale 10 minutes after it: the SYNCED run ends there, and STALE is
    // still open.
    assert_eq!(
        spans(&episodes),
        [
            span("SYNCED", t, Some(t + 2 * MINUTE)),
            span("OUT_OF_SYNC", t + 2 * MINUTE, Some(t + 8 * MINUTE)),
            span("SYNCED", t + 8 * MINUTE, Some(t + 20 * MINUTE)),
            span("STALE", t + 20 * MINUTE, None),
        ]
    );
    assert_eq!(episodes[2]["first_snapshot_id"], id(&resync));
    assert_eq!(episodes[2]["checks"], 2);
    let stale = &episodes[3];
    assert_eq!(stale["checks"], 0);
    assert_eq!(stale["first_snapshot_id"], stale["last_snapshot_id"]);
    assert_eq!(stale["ended_at"], Value::Null);
    let open_for = Timestamp::now().as_millis() - (t + 20 * MINUTE);
    let duration = stale["duration_seconds"].as_f64().unwrap() * 1000.0;
    assert!((duration - open_for as f64).abs() < 60_000.0, "{stale}");
    // Newest first by default.
    let mut descending = app.get_rows("/api/episodes").await;
    descending.reverse();
    assert_eq!(spans(&descending), spans(&episodes));
}

/// A history with every rule in it, on four targets of repo `r` (see the comments); returns
/// the times worth cutting windows at.
async fn varied_history(app: &TestApp) -> Vec<i64> {
    let t = base();
    let mut times = vec![t - 60 * MINUTE, t, t + 1];
    // one: drift whose files change, a stale gap inside the drift, ERROR, and a late check
    // that lands inside the first SYNCED run; then checks with a stale-after of their own.
    for (minute, status, files, stale_after) in [
        (0, "SYNCED", &[][..], None),
        (2, "SYNCED", &[], None),
        (4, "OUT_OF_SYNC", &["x"][..], None),
        (6, "OUT_OF_SYNC", &["x", "y"], None),
        (30, "OUT_OF_SYNC", &["y"], None),
        (32, "ERROR", &[], None),
        (34, "ERROR", &[], None),
        (36, "SYNCED", &[], None),
        (100, "SYNCED", &[], Some(60)),
        (102, "SYNCED", &[], Some(60)),
        (104, "OUT_OF_SYNC", &["z"], None),
        (3, "OUT_OF_SYNC", &["late"], None),
    ] {
        check(app, "one", status, files, t + minute * MINUTE, stale_after).await;
        times.push(t + minute * MINUTE);
    }
    times.extend([
        t + 16 * MINUTE,
        t + 46 * MINUTE,
        t + 101 * MINUTE,
        t + 114 * MINUTE,
    ]);
    // two: checks every 2 minutes up to now, an ERROR among them: the current run is fresh.
    let now = Timestamp::now().as_millis() / 1000 * 1000;
    for step in 0..15 {
        let status = if step == 7 { "ERROR" } else { "SYNCED" };
        check(
            app,
            "two",
            status,
            &[],
            now - 30 * MINUTE + step * 2 * MINUTE,
            None,
        )
        .await;
    }
    times.extend([now - 31 * MINUTE, now - 16 * MINUTE, now - 15 * MINUTE]);
    // three: one drifted check with a one-hour stale-after, stale for good after it.
    check(
        app,
        "three",
        "OUT_OF_SYNC",
        &["a"],
        t + 10 * MINUTE,
        Some(3600),
    )
    .await;
    times.push(t + 70 * MINUTE);
    // four: ERROR with a gap between two ERRORs, then SYNCED after a gap; a late OUT_OF_SYNC
    // lands in the second gap and closes it.
    for minute in [0, 5, 20, 22, 40, 30] {
        let status = match minute {
            40 => "SYNCED",
            30 => "OUT_OF_SYNC",
            _ => "ERROR",
        };
        let files: &[&str] = if minute == 30 { &["b"] } else { &[] };
        check(
            app,
            "four",
            status,
            files,
            t + 200 * MINUTE + minute * MINUTE,
            None,
        )
        .await;
        times.push(t + 200 * MINUTE + minute * MINUTE);
    }
    times.extend([t + 215 * MINUTE, t + 250 * MINUTE]);
    times.sort_unstable();
    times.dedup();
    times
}

/// Milliseconds of each state within `[from, to)`, summed over episodes, an open episode
/// counted up to `now`; also checks that each episode overlaps the window.
fn clipped(episodes: &[Value], from: i64, to: i64, now: i64) -> BTreeMap<(String, String), i64> {
    let mut sums = BTreeMap::new();
    for episode in episodes {
        let start = episode["started_at_ms"].as_i64().unwrap();
        let end = episode["ended_at_ms"].as_i64().unwrap_or(i64::MAX);
        assert!(
            start < to && end > from,
            "{episode} is outside [{from}, {to})"
        );
        let held = end.min(to).min(now) - start.max(from);
        let key = (
            episode["server"].as_str().unwrap().to_owned(),
            episode["state"].as_str().unwrap().to_owned(),
        );
        *sums.entry(key).or_default() += held.max(0);
    }
    sums
}

/// `/api/stats`' seconds per (server, state), in milliseconds, zeros left out.
fn stats_millis(stats: &[Value]) -> BTreeMap<(String, String), i64> {
    let mut millis = BTreeMap::new();
    for target in stats {
        for (state, seconds) in target["seconds"].as_object().unwrap() {
            let value = (seconds.as_f64().unwrap() * 1000.0).round() as i64;
            if value != 0 {
                millis.insert(
                    (target["server"].as_str().unwrap().to_owned(), state.clone()),
                    value,
                );
            }
        }
    }
    millis
}

async fn episodes_and_stats_agree_on_every_window(backend: Backend) {
    let app = served(backend).await;
    let mut times = varied_history(&app).await;
    let now = Timestamp::now().as_millis();
    times.push(now);
    let mut windows = 0;
    for (index, &from) in times.iter().enumerate() {
        for &to in &times[index + 1..] {
            let window = format!("repo=r&from={from}&to={to}");
            let stats = app.get_rows(&format!("/api/stats?{window}")).await;
            let episodes = app
                .get_rows(&format!("/api/episodes?{window}&limit=10000"))
                .await;
            let mut sums = clipped(&episodes, from, to, now);
            sums.retain(|_, millis| *millis != 0);
            assert_eq!(sums, stats_millis(&stats), "window [{from}, {to})");
            windows += 1;
        }
    }
    assert!(windows > 300, "{windows}");
    // A window that reaches past now: the open episodes run up to the moment each answer was
    // made, which differ by little.
    let window = format!("repo=r&from={}&to={}", times[0], now + 86_400_000);
    let stats = stats_millis(&app.get_rows(&format!("/api/stats?{window}")).await);
    let episodes = app.get_rows(&format!("/api/episodes?{window}")).await;
    let sums = clipped(
        &episodes,
        times[0],
        now + 86_400_000,
        Timestamp::now().as_millis(),
    );
    assert_eq!(
        sums.keys().collect::<Vec<_>>(),
        stats.keys().collect::<Vec<_>>()
    );
    for (key, millis) in sums {
        assert!((millis - stats[&key]).abs() < 10_000, "{key:?}");
    }

    // Over the whole history: every snapshot is in exactly one episode, and each target's
    // episodes follow one another without gap or overlap, never twice the same state.
    let all = app.get_rows("/api/episodes?order=asc&limit=10000").await;
    let mut checks: BTreeMap<String, i64> = BTreeMap::new();
    for episode in &all {
        *checks
            .entry(episode["server"].as_str().unwrap().to_owned())
            .or_default() += episode["checks"].as_i64().unwrap();
    }
    let history = app.all_history().await;
    for (server, count) in checks {
        let snapshots = history.iter().filter(|row| row["server"] == server).count();
        assert_eq!(count, snapshots as i64, "{server}");
    }
    for server in ["one", "two", "three", "four"] {
        let mine: Vec<&Value> = all.iter().filter(|e| e["server"] == server).collect();
        for pair in mine.windows(2) {
            assert_eq!(pair[0]["ended_at_ms"], pair[1]["started_at_ms"], "{server}");
            assert_ne!(pair[0]["state"], pair[1]["state"], "{server}");
        }
        assert!(mine.last().unwrap()["ended_at"].is_null(), "{server}");
    }
}

async fn stale_time_is_an_episode_of_its_own_and_a_late_check_moves_boundaries(backend: Backend) {
    let app = served(backend).await;
    varied_history(&app).await;
    let t = base();
    let one = app
        .get_rows("/api/episodes?server=one&order=asc&limit=10000")
        .await;
    assert_eq!(
        spans(&one),
        [
            span("SYNCED", t, Some(t + 3 * MINUTE)),
            // The late check at minute 3 split the SYNCED run and started the drift early.
            span("OUT_OF_SYNC", t + 3 * MINUTE, Some(t + 16 * MINUTE)),
            span("STALE", t + 16 * MINUTE, Some(t + 30 * MINUTE)),
            span("OUT_OF_SYNC", t + 30 * MINUTE, Some(t + 32 * MINUTE)),
            span("ERROR", t + 32 * MINUTE, Some(t + 36 * MINUTE)),
            span("SYNCED", t + 36 * MINUTE, Some(t + 46 * MINUTE)),
            span("STALE", t + 46 * MINUTE, Some(t + 100 * MINUTE)),
            // A stale-after of 60 s: two minutes between checks leave one minute STALE.
            span("SYNCED", t + 100 * MINUTE, Some(t + 101 * MINUTE)),
            span("STALE", t + 101 * MINUTE, Some(t + 102 * MINUTE)),
            span("SYNCED", t + 102 * MINUTE, Some(t + 103 * MINUTE)),
            span("STALE", t + 103 * MINUTE, Some(t + 104 * MINUTE)),
            span("OUT_OF_SYNC", t + 104 * MINUTE, Some(t + 114 * MINUTE)),
            span("STALE", t + 114 * MINUTE, None),
        ]
    );
    let files: Vec<&Value> = one.iter().map(|episode| &episode["files_text"]).collect();
    assert_eq!(files[1], "late, x, y");
    assert_eq!(files[3], "y");
    assert_eq!(files[2], "");
    let checks: Vec<i64> = one.iter().map(|e| e["checks"].as_i64().unwrap()).collect();
    assert_eq!(checks, [2, 3, 0, 1, 2, 1, 0, 1, 0, 1, 0, 1, 0]);

    let four = app.get_rows("/api/episodes?server=four&order=asc").await;
    let t = t + 200 * MINUTE;
    assert_eq!(
        spans(&four),
        [
            span("ERROR", t, Some(t + 15 * MINUTE)),
            span("STALE", t + 15 * MINUTE, Some(t + 20 * MINUTE)),
            span("ERROR", t + 20 * MINUTE, Some(t + 30 * MINUTE)),
            span("OUT_OF_SYNC", t + 30 * MINUTE, Some(t + 40 * MINUTE)),
            span("SYNCED", t + 40 * MINUTE, Some(t + 50 * MINUTE)),
            span("STALE", t + 50 * MINUTE, None),
        ]
    );
}

async fn open_episodes_are_each_targets_current_one(backend: Backend) {
    let app = served(backend).await;
    varied_history(&app).await;
    let open = app.get_rows("/api/episodes?open=true").await;
    let servers: Vec<(&str, &str)> = open
        .iter()
        .map(|e| (e["server"].as_str().unwrap(), e["state"].as_str().unwrap()))
        .collect();
    // Latest first: two's fresh SYNCED run started 14 minutes ago.
    assert_eq!(
        servers,
        [
            ("two", "SYNCED"),
            ("four", "STALE"),
            ("one", "STALE"),
            ("three", "STALE"),
        ]
    );
    assert!(open.iter().all(|episode| episode["ended_at"].is_null()));
    let two = &open[0];
    let since = Timestamp::now().as_millis() - two["started_at_ms"].as_i64().unwrap();
    let duration = (two["duration_seconds"].as_f64().unwrap() * 1000.0) as i64;
    assert!((since - duration).abs() < 10_000, "{two}");
    assert_eq!(two["checks"], 7);

    let closed = app.get_rows("/api/episodes?open=false&limit=10000").await;
    let all = app.get_rows("/api/episodes?limit=10000").await;
    assert_eq!(closed.len() + open.len(), all.len());
    assert!(closed.iter().all(|episode| !episode["ended_at"].is_null()));
    let open_asc = app
        .get_rows("/api/episodes?open=true&order=asc&server=two")
        .await;
    assert_eq!(keys(&open_asc), keys(&open[..1]));
    let stale = app.get_rows("/api/episodes?open=true&state=STALE").await;
    assert_eq!(stale.len(), 3);
}

async fn filters_select_states_and_the_episodes_overlapping_a_window(backend: Backend) {
    let app = served(backend).await;
    varied_history(&app).await;
    let all = app.get_rows("/api/episodes?limit=10000").await;
    for states in [
        "OUT_OF_SYNC",
        "STALE",
        "ERROR,STALE",
        "SYNCED,OUT_OF_SYNC,ERROR,STALE",
    ] {
        let wanted: BTreeSet<&str> = states.split(',').collect();
        let expected: Vec<Value> = all
            .iter()
            .filter(|e| wanted.contains(e["state"].as_str().unwrap()))
            .cloned()
            .collect();
        let selected = app
            .get_rows(&format!("/api/episodes?state={states}&limit=10000"))
            .await;
        assert_eq!(keys(&selected), keys(&expected), "{states}");
        for order in ["asc", "desc"] {
            let (paged, _) = follow(
                &app,
                &format!("/api/episodes?state={states}&order={order}&limit=2"),
            )
            .await;
            assert_eq!(paged.len(), expected.len(), "{states} {order}");
        }
    }
    let t = base();
    // [from, to) selects what overlaps it: an episode ending at `from` or starting at `to` is
    // out; one spanning the whole window is in.
    let window = app
        .get_rows(&format!(
            "/api/episodes?server=one&order=asc&from={}&to={}",
            at(t + 16 * MINUTE),
            at(t + 32 * MINUTE)
        ))
        .await;
    assert_eq!(
        spans(&window),
        [
            span("STALE", t + 16 * MINUTE, Some(t + 30 * MINUTE)),
            span("OUT_OF_SYNC", t + 30 * MINUTE, Some(t + 32 * MINUTE)),
        ]
    );
    let inside = app
        .get_rows(&format!(
            "/api/episodes?server=one&from={}&to={}",
            t + 50 * MINUTE,
            t + 60 * MINUTE
        ))
        .await;
    assert_eq!(
        spans(&inside),
        [span("STALE", t + 46 * MINUTE, Some(t + 100 * MINUTE))]
    );
    let empty = app
        .get_rows(&format!("/api/episodes?from={}&to={}", t - 10, t - 10))
        .await;
    assert_eq!(empty, Vec::<Value>::new());
    // `from` = `to`: the episode in force at that instant, one per target.
    let instant = t + 31 * MINUTE;
    let at_instant = app
        .get_rows(&format!("/api/episodes?from={instant}&to={instant}"))
        .await;
    assert_eq!(
        spans(&at_instant),
        [
            span("OUT_OF_SYNC", t + 30 * MINUTE, Some(t + 32 * MINUTE)),
            span("OUT_OF_SYNC", t + 10 * MINUTE, Some(t + 70 * MINUTE)),
        ]
    );
    let nothing = app.get_rows("/api/episodes?repo=none").await;
    assert_eq!(nothing, Vec::<Value>::new());
}

/// Follows `Link: <...>; rel="next"` from `first` to the end, returning every row seen.
async fn follow(app: &TestApp, first: &str) -> (Vec<Value>, usize) {
    let mut rows = Vec::new();
    let mut pages = 0;
    let mut next = Some(first.to_owned());
    while let Some(uri) = next {
        let response = app.get(&uri).await;
        assert_eq!(response.status.as_u16(), 200, "{}", response.text());
        pages += 1;
        rows.extend(response.json().as_array().unwrap().iter().cloned());
        next = response.header("link").map(|link| {
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            link.trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_owned()
        });
    }
    (rows, pages)
}

/// What identifies an episode across answers made at different moments.
fn keys(rows: &[Value]) -> Vec<(String, i64, i64)> {
    rows.iter()
        .map(|row| {
            (
                row["server"].as_str().unwrap().to_owned(),
                row["started_at_ms"].as_i64().unwrap(),
                row["first_snapshot_id"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn cursor_pages_cover_every_episode_once_in_both_orders(backend: Backend) {
    let app = served(backend).await;
    varied_history(&app).await;
    // Two targets whose episodes start at the same instants: the id breaks the tie.
    let t = base();
    for server in ["twin-a", "twin-b"] {
        for (minute, status) in [(0, "SYNCED"), (2, "ERROR"), (4, "SYNCED")] {
            check(&app, server, status, &[], t + minute * MINUTE, None).await;
        }
    }
    let all = app.get_rows("/api/episodes?limit=10000").await;
    let sorted = {
        let mut sorted = keys(&all);
        sorted.sort_by_key(|key| std::cmp::Reverse((key.1, key.2)));
        sorted
    };
    assert_eq!(
        keys(&all),
        sorted,
        "latest first, then by first_snapshot_id"
    );
    for limit in [1, 3, 7, 100] {
        let (rows, pages) = follow(&app, &format!("/api/episodes?limit={limit}")).await;
        assert_eq!(keys(&rows), keys(&all), "limit={limit}");
        assert_eq!(pages, all.len().div_ceil(limit), "limit={limit}");
        let (rows, _) = follow(&app, &format!("/api/episodes?limit={limit}&order=asc")).await;
        let mut ascending = keys(&rows);
        ascending.reverse();
        assert_eq!(ascending, keys(&all), "asc limit={limit}");
    }
    let (rows, _) = follow(&app, "/api/episodes?server=one&limit=4&order=asc").await;
    assert_eq!(
        keys(&rows),
        keys(
            &app.get_rows("/api/episodes?server=one&order=asc&limit=100")
                .await
        )
    );
    // Pages from a window and a state keep both.
    let window = format!("from={}&to={}", t + 10 * MINUTE, t + 220 * MINUTE);
    let (rows, _) = follow(&app, &format!("/api/episodes?{window}&state=STALE&limit=2")).await;
    assert_eq!(
        keys(&rows),
        keys(
            &app.get_rows(&format!("/api/episodes?{window}&state=STALE"))
                .await
        )
    );
    assert!(rows.len() > 3);

    // The envelope carries the same cursor in the body.
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let uri = match &cursor {
            None => "/api/episodes?envelope=true&limit=5".to_owned(),
            Some(cursor) => format!("/api/episodes?envelope=true&limit=5&cursor={cursor}"),
        };
        let page = app.get(&uri).await.json();
        seen.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(keys(&seen), keys(&all));
    let link = app.get("/api/episodes?limit=2&repo=r").await;
    let link = link.header("link").unwrap();
    assert!(
        link.starts_with("</api/episodes?limit=2&repo=r&cursor="),
        "{link}"
    );
}

async fn csv_and_ndjson_export_the_whole_selection(backend: Backend) {
    let app = served(backend).await;
    varied_history(&app).await;
    // A file whose name a spreadsheet would run.
    let t = base();
    check(&app, "five", "OUT_OF_SYNC", &["=cmd.conf"], t, None).await;
    let all = app.get_rows("/api/episodes?limit=10000").await;

    let response = app.get("/api/episodes?format=ndjson").await;
    assert_eq!(response.status.as_u16(), 200);
    assert_eq!(response.content_type(), "application/x-ndjson");
    let lines: Vec<Value> = response
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(keys(&lines), keys(&all));
    assert!(lines.len() > 20);

    let response = app
        .request(
            axum::http::Request::get("/api/episodes?server=five")
                .header("accept", "text/csv")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.content_type(), "text/csv; charset=utf-8");
    assert_eq!(response.header("link"), None);
    let mut reader = csv::Reader::from_reader(response.body.as_ref());
    let headers: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        headers,
        [
            "repo",
            "server",
            "state",
            "started_at",
            "ended_at",
            "duration_seconds",
            "checks",
            "files",
            "first_snapshot_id",
            "last_snapshot_id",
            "acknowledged_id",
            "acknowledged_reason",
            "acknowledged_by",
            "acknowledged_until",
            "started_at_ms",
            "ended_at_ms",
            "acknowledged_until_ms",
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let five = app.get_rows("/api/episodes?server=five&order=asc").await;
    assert_eq!(records.len(), five.len());
    // Newest first: the open STALE, then the drift.
    let drift = &records[1];
    assert_eq!(&drift[2], "OUT_OF_SYNC");
    assert_eq!(&drift[3], five[0]["started_at"].as_str().unwrap());
    assert_eq!(&drift[4], five[0]["ended_at"].as_str().unwrap());
    assert_eq!(&drift[6], "1");
    assert_eq!(&drift[7], "'=cmd.conf", "a formula is quoted");
    assert_eq!(&drift[14], t.to_string());
    assert_eq!(&drift[15], five[0]["ended_at_ms"].to_string());
    assert_eq!(&records[0][4], "", "open: no end");

    let response = app
        .get("/api/episodes?format=csv&limit=3&state=STALE")
        .await;
    assert_eq!(
        csv::Reader::from_reader(response.body.as_ref())
            .records()
            .count(),
        3
    );
}

async fn bad_episode_parameters_are_named(backend: Backend) {
    let app = served(backend).await;
    for (query, field) in [
        ("order=newest", "order"),
        ("open=yes", "open"),
        ("from=yesterday", "from"),
        ("to=2026-04-21T10:30:00", "to"),
        ("state=LATE", "state"),
        ("format=xml", "format"),
        ("cursor=bm9wZQ", "cursor"),
        ("cursor=djEuMS4y", "cursor"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("page=2", "page"),
        ("server=a&server=b", "server"),
        ("repo=", "repo"),
        ("envelope=true&format=csv", "envelope"),
    ] {
        app.get(&format!("/api/episodes?{query}"))
            .await
            .assert_problem(400, &[field]);
    }
    app.get("/api/episodes?from=2026-05-01T00:00:00Z&to=2026-04-01T00:00:00Z")
        .await
        .assert_problem(400, &["to"]);
    app.get("/api/episodes?limit=0&order=up&state=x")
        .await
        .assert_problem(400, &["limit", "order", "state"]);
}

async fn an_unchanged_page_answers_304(backend: Backend) {
    let app = served(backend).await;
    let t = base();
    check(&app, "lab", "SYNCED", &[], t, None).await;
    check(&app, "lab", "ERROR", &[], t + MINUTE, None).await;
    // Only ended episodes: the answer does not change with the clock.
    let uri = format!("/api/episodes?open=false&to={}", t + 5 * MINUTE);
    let first = app.get(&uri).await;
    let tag = first.header("etag").unwrap().to_owned();
    assert!(tag.starts_with("W/\""), "{tag}");
    let again = app
        .request(
            axum::http::Request::get(&uri)
                .header("if-none-match", &tag)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(again.status.as_u16(), 304);
    assert!(again.body.is_empty());
    check(&app, "lab", "SYNCED", &[], t + 2 * MINUTE, None).await;
    let changed = app
        .request(
            axum::http::Request::get(&uri)
                .header("if-none-match", &tag)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(changed.status.as_u16(), 200);
    assert_ne!(changed.header("etag").unwrap(), tag);
}

/// Sends `method` to `uri` with an optional JSON body.
async fn send(app: &TestApp, method: &str, uri: &str, body: Option<Value>) -> TestResponse {
    let mut request = axum::http::Request::builder().method(method).uri(uri);
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            axum::body::Body::from(body.to_string())
        }
        None => axum::body::Body::empty(),
    };
    app.request(request.body(body).unwrap()).await
}

/// When `r/{server}` was retired, as `/api/targets` says.
async fn retired_at(app: &TestApp, server: &str) -> Option<i64> {
    let targets = app.get_rows("/api/targets?include_retired=true").await;
    let target = targets.iter().find(|target| target["server"] == server);
    target.and_then(|target| target["retired_at_ms"].as_i64())
}

async fn retirement_ends_the_last_episode_and_a_later_snapshot_starts_anew(backend: Backend) {
    let app = served(backend).await;
    let t = base();
    check(&app, "old", "SYNCED", &[], t, None).await;
    check(&app, "old", "OUT_OF_SYNC", &["a"], t + 2 * MINUTE, None).await;
    assert_eq!(
        send(&app, "DELETE", "/api/targets/r/old", None)
            .await
            .status,
        204
    );
    let retired = retired_at(&app, "old").await.unwrap();
    // The drift went stale 10 minutes after its check; STALE ends at the retirement.
    let before = [
        span("SYNCED", t, Some(t + 2 * MINUTE)),
        span("OUT_OF_SYNC", t + 2 * MINUTE, Some(t + 12 * MINUTE)),
        span("STALE", t + 12 * MINUTE, Some(retired)),
    ];
    assert_eq!(
        spans(&app.get_rows("/api/episodes?server=old&order=asc").await),
        before
    );
    assert_eq!(
        app.get_rows("/api/episodes?server=old&open=true").await,
        Vec::<Value>::new()
    );

    // A check brings it back: a new episode starts at that check.
    let revival = app
        .record(
            &json!({"repo": "r", "server": "old", "sync_status": "OUT_OF_SYNC",
                        "files": [{"name": "b"}]}),
        )
        .await;
    let revived = revival["last_check_ms"].as_i64().unwrap();
    assert!(revived >= retired);
    assert_eq!(retired_at(&app, "old").await, None);
    let episodes = app.get_rows("/api/episodes?server=old&order=asc").await;
    assert_eq!(spans(&episodes[..3]), before);
    assert_eq!(spans(&episodes[3..]), [span("OUT_OF_SYNC", revived, None)]);
    assert_eq!(episodes[3]["first_snapshot_id"], revival["id"]);
    assert_eq!(episodes[3]["checks"], 1);
    assert_eq!(episodes[3]["files_text"], "b");
    let (desc, _) = follow(&app, "/api/episodes?server=old&limit=1").await;
    assert_eq!(keys(&desc).len(), 4);
    let (from_retired, _) = follow(
        &app,
        &format!("/api/episodes?server=old&order=asc&limit=1&from={retired}"),
    )
    .await;
    assert_eq!(spans(&from_retired), [span("OUT_OF_SYNC", revived, None)]);

    // `/api/stats` counts the same time, retirement included.
    let times = [
        t - MINUTE,
        t + MINUTE,
        t + 11 * MINUTE,
        t + 60 * MINUTE,
        retired - 1,
        retired,
        revived,
    ];
    for (index, &from) in times.iter().enumerate() {
        for &to in times[index + 1..].iter().filter(|to| **to > from) {
            let window = format!("server=old&from={from}&to={to}");
            let stats = app.get_rows(&format!("/api/stats?{window}")).await;
            let episodes = app.get_rows(&format!("/api/episodes?{window}")).await;
            let mut sums = clipped(&episodes, from, to, i64::MAX);
            sums.retain(|_, millis| *millis != 0);
            assert_eq!(sums, stats_millis(&stats), "window [{from}, {to})");
        }
    }
}

async fn an_acknowledgement_covers_the_drift_it_was_made_for(backend: Backend) {
    let app = served(backend).await;
    let t = base();
    for (minute, status) in [
        (0, "OUT_OF_SYNC"),
        (2, "ERROR"),
        (4, "SYNCED"),
        (6, "OUT_OF_SYNC"),
        (8, "SYNCED"),
    ] {
        let files: &[&str] = if status == "OUT_OF_SYNC" { &["a"] } else { &[] };
        check(&app, "lab", status, files, t + minute * MINUTE, None).await;
    }
    let target = "(select id from targets where server = 'lab')";
    // Made during the first drift, resolved when the target synced at minute 4.
    app.execute(&format!(
        "insert into acks (id, target_id, reason, \"by\", files, created_at, \"until\", \
         ended_at, end_reason, ended_by) values (5000000, {target}, 'hotfix, PR #88', 'ci', \
         null, {}, {}, {}, 'resolved', null)",
        t + MINUTE,
        t + 86_400_000,
        t + 4 * MINUTE
    ))
    .await;
    let episodes = app.get_rows("/api/episodes?order=asc").await;
    let acknowledged: Vec<&Value> = episodes.iter().map(|e| &e["acknowledged"]).collect();
    let ack = json!({
        "id": 5000000,
        "reason": "hotfix, PR #88",
        "by": "ci",
        "until": at(t + 86_400_000),
        "until_ms": t + 86_400_000,
    });
    assert_eq!(
        acknowledged,
        [
            &ack,
            &ack,
            &Value::Null,
            &Value::Null,
            &Value::Null,
            &Value::Null
        ]
    );
    let response = app.get("/api/episodes?format=csv&order=asc").await;
    let records: Vec<csv::StringRecord> = csv::Reader::from_reader(response.body.as_ref())
        .records()
        .map(Result::unwrap)
        .collect();
    assert_eq!(&records[0][10], "5000000");
    assert_eq!(&records[0][11], "hotfix, PR #88");
    assert_eq!(&records[0][16], (t + 86_400_000).to_string());
    assert_eq!(&records[2][10], "");

    // Made through the API on a target drifting now: its open episode shows it, and once the
    // target syncs, the drift that ended keeps it.
    let now = Timestamp::now().as_millis();
    check(&app, "live", "OUT_OF_SYNC", &["a"], now - MINUTE, None).await;
    let until = at(now + 86_400_000);
    let made = send(
        &app,
        "POST",
        "/api/acks",
        Some(json!({"repo": "r", "server": "live", "reason": "PR #9", "until": until})),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let made = made.json();
    let summary = json!({
        "id": made["id"],
        "reason": "PR #9",
        "by": "anonymous",
        "until": until,
        "until_ms": now + 86_400_000,
    });
    let open = app.get_rows("/api/episodes?server=live&open=true").await;
    assert_eq!(open[0]["acknowledged"], summary);
    app.record(&json!({"repo": "r", "server": "live", "sync_status": "SYNCED"}))
        .await;
    let episodes = app.get_rows("/api/episodes?server=live&order=asc").await;
    assert_eq!(
        spans(&episodes)
            .iter()
            .map(|(state, _, end)| (state.as_str(), end.is_some()))
            .collect::<Vec<_>>(),
        [("OUT_OF_SYNC", true), ("SYNCED", false)]
    );
    assert_eq!(episodes[0]["acknowledged"], summary);
    assert_eq!(episodes[1]["acknowledged"], Value::Null);
}

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }

    fn percent(&mut self, p: i64) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// An episode as the model and the API both describe it (durations aside).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Modelled {
    start: i64,
    first: i64,
    server: String,
    state: String,
    end: Option<i64>,
    checks: i64,
    last: i64,
    files: Vec<String>,
}

impl Modelled {
    fn of(episode: &Value) -> Self {
        Self {
            start: episode["started_at_ms"].as_i64().unwrap(),
            first: episode["first_snapshot_id"].as_i64().unwrap(),
            server: episode["server"].as_str().unwrap().to_owned(),
            state: episode["state"].as_str().unwrap().to_owned(),
            end: episode["ended_at_ms"].as_i64(),
            checks: episode["checks"].as_i64().unwrap(),
            last: episode["last_snapshot_id"].as_i64().unwrap(),
            files: episode["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|file| file["name"].as_str().unwrap().to_owned())
                .collect(),
        }
    }
}

/// One snapshot as the model reads it.
#[derive(Debug, Clone)]
struct Stored {
    id: i64,
    at: i64,
    status: String,
    files: Vec<String>,
    stale_after: i64,
}

/// The episodes of one target, straight from the rules: every snapshot's state holds from its
/// check until the next check, its stale-after's worth, and STALE beyond it; retirements
/// (`(retired_at, revived)`: until the revival, for good without one) remove their time; equal
/// neighbours merge. A run counts the checks made during it.
fn model(
    server: &str,
    mut snapshots: Vec<Stored>,
    retirements: &[(i64, Option<i64>)],
    now: i64,
) -> Vec<Modelled> {
    snapshots.sort_by_key(|snapshot| snapshot.at);
    let holes: Vec<(i64, i64)> = retirements
        .iter()
        .map(|&(from, until)| (from, until.map_or(i64::MAX, |until| until.max(from))))
        .filter(|(from, until)| from < until)
        .collect();
    let held = |start: i64, end: i64| -> Vec<(i64, i64)> {
        let mut parts = vec![(start, end)];
        for &(from, until) in &holes {
            parts = parts
                .into_iter()
                .flat_map(|(a, b)| {
                    [(a, b.min(from)), (a.max(until), b)]
                        .into_iter()
                        .filter(|(a, b)| a < b)
                })
                .collect();
        }
        parts
    };
    let mut pieces: Vec<(Modelled, i64)> = Vec::new();
    for (index, snapshot) in snapshots.iter().enumerate() {
        // The latest check holds for good (i64::MAX), stale once now is past its stale-after.
        let next = snapshots.get(index + 1).map(|next| next.at);
        let end = next.unwrap_or(i64::MAX);
        let fresh_end = snapshot.at + snapshot.stale_after;
        let (fresh, stale) = if fresh_end < next.unwrap_or(now) {
            ((snapshot.at, fresh_end), Some((fresh_end, end)))
        } else {
            ((snapshot.at, end), None)
        };
        let mut push = |(start, end): (i64, i64), state: &str| {
            for (start, end) in held(start, end) {
                let stale = state == "STALE";
                pieces.push((
                    Modelled {
                        start,
                        first: snapshot.id,
                        server: server.to_owned(),
                        state: state.to_owned(),
                        end: (end != i64::MAX).then_some(end),
                        checks: 0,
                        last: snapshot.id,
                        files: if stale {
                            Vec::new()
                        } else {
                            snapshot.files.clone()
                        },
                    },
                    if stale { i64::MIN } else { snapshot.at },
                ));
            }
        };
        push(fresh, &snapshot.status);
        if let Some(stale) = stale {
            push(stale, "STALE");
        }
    }
    let mut episodes: Vec<Modelled> = Vec::new();
    for (piece, checked_at) in pieces {
        let merge = episodes
            .last()
            .is_some_and(|last| last.state == piece.state && last.end == Some(piece.start));
        if !merge {
            episodes.push(piece);
        } else if let Some(last) = episodes.last_mut() {
            last.end = piece.end;
            last.last = piece.last;
            let files: BTreeSet<String> = last.files.drain(..).chain(piece.files).collect();
            last.files = files.into_iter().collect();
        }
        let episode = episodes.last_mut().unwrap();
        if checked_at >= episode.start {
            episode.checks += 1;
        }
    }
    episodes
}

/// Builds a random history of three targets on `app`; returns the model of every episode.
/// Retirements and revivals are recorded as the pipeline records them (`retire`, then `revive`
/// naming the check that came next), at times in the past, which the API cannot do; some
/// revivals name a check that is no longer stored, so they end at the event's time.
async fn random_history(app: &TestApp, rng: &mut Rng) -> Vec<Modelled> {
    let now = Timestamp::now().as_millis();
    let base = (now - 20 * 24 * 60 * MINUTE) / 1000 * 1000;
    let mut event_id = 10_000_000;
    let mut modelled = Vec::new();
    for server in ["a", "b", "c"] {
        let mut stored: Vec<Stored> = Vec::new();
        let mut retirements: Vec<(i64, Option<i64>)> = Vec::new();
        let mut retired: Option<i64> = None;
        let mut t = base + rng.below(3_600) * 1000;
        let mut status = "SYNCED";
        let snapshots = 12 + rng.below(30);
        for _ in 0..snapshots {
            t += match rng.below(100) {
                0..70 => 2 * MINUTE + rng.below(30) * 1000,
                70..85 => 11 * MINUTE + rng.below(600) * 1000,
                85..95 => 60 * MINUTE + rng.below(7200) * 1000,
                _ => 30_000,
            };
            if rng.percent(25) {
                status = *rng.pick(&["SYNCED", "OUT_OF_SYNC", "ERROR"]);
            }
            let late = !stored.is_empty() && rng.percent(10);
            let at = if late {
                // Between two stored checks, on an odd second none of them has.
                let earlier = stored[rng.below(stored.len() as u64) as usize].at;
                earlier + 1000 + 2 * rng.below(40) * 1000 + 17_000
            } else {
                t
            };
            if stored.iter().any(|snapshot| snapshot.at == at) || at >= t && late {
                continue;
            }
            let status = if late {
                *rng.pick(&["SYNCED", "OUT_OF_SYNC", "ERROR"])
            } else {
                status
            };
            let files: Vec<&str> = match status {
                "OUT_OF_SYNC" => {
                    let mut files: Vec<&str> = ["a.conf", "b.conf", "c.conf"]
                        .into_iter()
                        .filter(|_| rng.percent(50))
                        .collect();
                    if files.is_empty() {
                        files.push("a.conf");
                    }
                    files
                }
                "ERROR" if rng.percent(30) => vec!["e.conf"],
                _ => Vec::new(),
            };
            let stale_after = rng.percent(20).then(|| *rng.pick(&[60, 300, 900, 3600]));
            let row = check(app, server, status, &files, at, stale_after).await;
            stored.push(Stored {
                id: id(&row),
                at,
                status: status.to_owned(),
                files: files.iter().map(|file| (*file).to_owned()).collect(),
                stale_after: stale_after.unwrap_or(600) * 1000,
            });
            if let Some(retired_at) = retired.take() {
                // This check revives the target, or, when the revival names a check no longer
                // stored, the revival's own time ends the retirement.
                let (snapshot, revived) = if rng.percent(20) {
                    (999_999_999, at + rng.below(7_200) * 1000 - 600_000)
                } else {
                    (id(&row), at)
                };
                event(
                    app,
                    server,
                    event_id,
                    "revive",
                    revived,
                    &format!("{{\"snapshot\":{snapshot}}}"),
                )
                .await;
                event_id += 1;
                retirements.push((retired_at, Some(revived)));
            }
            if !late && rng.percent(8) {
                let at = t + rng.below(40 * 60) * 1000 + 1000;
                event(app, server, event_id, "retire", at, "{\"by\":\"ops\"}").await;
                event_id += 1;
                retired = Some(at);
                t = at;
            }
        }
        if retired.is_none() && rng.percent(20) {
            let at = t + rng.below(40 * 60) * 1000 + 1000;
            event(app, server, event_id, "retire", at, "{\"by\":\"ops\"}").await;
            event_id += 1;
            retired = Some(at);
        }
        retirements.extend(retired.map(|at| (at, None)));
        modelled.extend(model(server, stored, &retirements, now));
    }
    modelled
}

/// Records an event of `r/{server}`'s chain behind the pipeline's back (its hash is not the
/// chain's: these tests do not verify).
async fn event(app: &TestApp, server: &str, id: i64, kind: &str, at: i64, body: &str) {
    let target = format!("(select id from targets where server = '{server}')");
    let hash = match app.backend {
        Backend::Sqlite => format!("x'{}'", "00".repeat(32)),
        Backend::Postgres => format!("decode('{}', 'hex')", "00".repeat(32)),
    };
    app.execute(&format!(
        "insert into events (id, target_id, kind, at, body, hash) values \
         ({id}, {target}, '{kind}', {at}, '{body}', {hash})"
    ))
    .await;
}

async fn random_histories_match_a_brute_force_model_on_every_selection(backend: Backend) {
    for seed in [7, 1_234_567, 99_991, 31_337] {
        let mut rng = Rng(seed);
        let app = TestApp::on(backend).await;
        let mut modelled = random_history(&app, &mut rng).await;
        // The history's retirements and revivals were written behind the server's back: the
        // episodes are materialised from what is stored, by the rebuild a server runs at start.
        app.store.keep_rollups(600).await.unwrap();
        modelled.sort();
        let all: Vec<Modelled> = app
            .get_rows("/api/episodes?order=asc&limit=10000")
            .await
            .iter()
            .map(Modelled::of)
            .collect();
        assert_eq!(all, modelled, "seed {seed}");
        for episode in app.get_rows("/api/episodes?open=false&limit=10000").await {
            let length = episode["ended_at_ms"].as_i64().unwrap()
                - episode["started_at_ms"].as_i64().unwrap();
            assert_eq!(
                (episode["duration_seconds"].as_f64().unwrap() * 1000.0).round() as i64,
                length
            );
        }

        let (earliest, latest) = (modelled[0].start, modelled.last().unwrap().start);
        for round in 0..30 {
            let mut query = Vec::new();
            let time = |rng: &mut Rng| {
                earliest - MINUTE + rng.below((latest - earliest) as u64 + 2 * MINUTE as u64)
            };
            let from = rng.percent(50).then(|| time(&mut rng));
            let to = rng
                .percent(50)
                .then(|| time(&mut rng))
                .map(|to| to.max(from.unwrap_or(i64::MIN)));
            if let Some(from) = from {
                query.push(format!("from={from}"));
            }
            if let Some(to) = to {
                query.push(format!("to={to}"));
            }
            let states: Vec<&str> = ["SYNCED", "OUT_OF_SYNC", "ERROR", "STALE"]
                .into_iter()
                .filter(|_| rng.percent(40))
                .collect();
            if !states.is_empty() && rng.percent(60) {
                query.push(format!("state={}", states.join(",")));
            }
            let open = *rng.pick(&[None, None, Some(true), Some(false)]);
            if let Some(open) = open {
                query.push(format!("open={open}"));
            }
            let order = *rng.pick(&["asc", "desc"]);
            let limit = *rng.pick(&[1, 2, 3, 5, 50]);
            query.push(format!("order={order}&limit={limit}"));
            let query = query.join("&");
            let wanted_states = query.contains("state=");
            let mut expected: Vec<&Modelled> = modelled
                .iter()
                .filter(|e| !wanted_states || states.contains(&e.state.as_str()))
                .filter(|e| to.is_none_or(|to| e.start < to))
                .filter(|e| from.is_none_or(|from| e.end.is_none_or(|end| end > from)))
                .filter(|e| open.is_none_or(|open| open == e.end.is_none()))
                .collect();
            if order == "desc" {
                expected.reverse();
            }
            let (rows, _) = follow(&app, &format!("/api/episodes?{query}")).await;
            let rows: Vec<Modelled> = rows.iter().map(Modelled::of).collect();
            assert_eq!(
                rows.iter().collect::<Vec<_>>(),
                expected,
                "seed {seed} round {round}: {query}"
            );
        }
    }
}
