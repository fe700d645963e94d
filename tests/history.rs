//! `/history`: filters, `changes_only`, order, limit bounds, keyset cursors and the exports.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::{Value, json};

backend_tests! {
    history_is_newest_first_and_rows_carry_files_text,
    history_filters_by_target_status_and_window,
    changes_only_keeps_first_snapshots_and_transitions,
    limit_is_bounded_and_never_clamped,
    bad_history_parameters_are_named,
    cursor_pages_cover_every_row_once_in_both_orders,
    cursor_traversal_is_stable_while_new_snapshots_arrive,
    csv_export_streams_the_whole_selection,
    ndjson_export_streams_one_snapshot_per_line,
    pages_across_targets_are_exact_over_sparse_and_dense_history,
    window_boundaries_never_drop_or_repeat_a_row,
}

/// Seeds two targets with a known sequence; returns every stored snapshot, oldest first.
async fn seeded(backend: Backend) -> (TestApp, Vec<Value>) {
    let app = TestApp::on(backend).await;
    let sequence: [(&str, &str, &[&str]); 6] = [
        ("web", "SYNCED", &[]),
        ("web", "SYNCED", &[]),
        ("web", "OUT_OF_SYNC", &["a.conf"]),
        ("web", "OUT_OF_SYNC", &["a.conf", "b.conf"]),
        ("web", "OUT_OF_SYNC", &["a.conf", "b.conf"]),
        ("web", "SYNCED", &[]),
    ];
    let mut stored = Vec::new();
    for (minute, (server, status, files)) in sequence.iter().enumerate() {
        let at = at_offset(-3600 + 120 * minute as i64);
        stored.push(
            app.record(&snapshot("rsyslog", server, status, files, &at))
                .await,
        );
        // Another target interleaved, so filters have something to exclude.
        let at = at_offset(-3600 + 120 * minute as i64 + 60);
        let status = if minute == 3 { "ERROR" } else { "SYNCED" };
        stored.push(
            app.record(&snapshot("nginx", "edge", status, &[], &at))
                .await,
        );
    }
    (app, stored)
}

fn ids(rows: &[Value]) -> Vec<i64> {
    rows.iter().map(|row| row["id"].as_i64().unwrap()).collect()
}

async fn history_is_newest_first_and_rows_carry_files_text(backend: Backend) {
    let (app, stored) = seeded(backend).await;
    let rows = app.get_rows("/history").await;
    let mut expected = ids(&stored);
    expected.reverse();
    assert_eq!(ids(&rows), expected);
    let drifted = rows.iter().find(|row| row["drift_count"] == 2).unwrap();
    assert_eq!(drifted["files_text"], "a.conf, b.conf");
    assert_eq!(
        drifted["files"],
        json!([{ "name": "a.conf" }, { "name": "b.conf" }])
    );
    let mut ascending = ids(&app.get_rows("/history?order=asc").await);
    ascending.reverse();
    assert_eq!(ascending, expected);
}

async fn history_filters_by_target_status_and_window(backend: Backend) {
    let (app, stored) = seeded(backend).await;
    let select = |predicate: &dyn Fn(&Value) -> bool| -> Vec<i64> {
        let mut selected: Vec<i64> = stored
            .iter()
            .filter(|row| predicate(row))
            .map(|row| row["id"].as_i64().unwrap())
            .collect();
        selected.reverse();
        selected
    };
    assert_eq!(
        ids(&app.get_rows("/history?repo=rsyslog").await),
        select(&|row| row["repo"] == "rsyslog")
    );
    assert_eq!(
        ids(&app.get_rows("/history?server=edge").await),
        select(&|row| row["server"] == "edge")
    );
    assert_eq!(
        ids(&app.get_rows("/history?repo=rsyslog&server=web").await),
        select(&|row| row["server"] == "web")
    );
    assert_eq!(
        ids(&app.get_rows("/history?repo=rsyslog&server=edge").await),
        Vec::<i64>::new()
    );
    assert_eq!(
        ids(&app.get_rows("/history?sync_status=OUT_OF_SYNC").await),
        select(&|row| row["sync_status"] == "OUT_OF_SYNC")
    );
    assert_eq!(
        ids(&app.get_rows("/history?sync_status=ERROR,OUT_OF_SYNC").await),
        select(&|row| row["sync_status"] != "SYNCED")
    );

    // [from, to): from is inclusive, to exclusive, as RFC 3339 or Unix milliseconds.
    let from = stored[2]["last_check"].as_str().unwrap();
    let to = stored[6]["last_check"].as_str().unwrap();
    let window = select(&|row| {
        let at = row["last_check"].as_str().unwrap();
        at >= from && at < to
    });
    assert_eq!(window.len(), 4);
    assert_eq!(
        ids(&app.get_rows(&format!("/history?from={from}&to={to}")).await),
        window
    );
    let millis = |text: &str| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp_nanos()
            / 1_000_000
    };
    assert_eq!(
        ids(&app
            .get_rows(&format!("/history?from={}&to={}", millis(from), millis(to)))
            .await),
        window
    );
    // An offset whose '+' was not percent-encoded arrives as a space and still parses.
    let shifted = from.replace('Z', "").replace(".000", "");
    let unencoded = time::OffsetDateTime::parse(
        &format!("{shifted}Z"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .to_offset(time::macros::offset!(+2))
    .format(&time::format_description::well_known::Rfc3339)
    .unwrap()
    .replace('+', "%20");
    assert_eq!(
        ids(&app
            .get_rows(&format!("/history?from={unencoded}&to={to}"))
            .await),
        window
    );
}

async fn changes_only_keeps_first_snapshots_and_transitions(backend: Backend) {
    let (app, stored) = seeded(backend).await;
    let rows = app
        .get_rows("/history?repo=rsyslog&changes_only=true&order=asc")
        .await;
    // web: first SYNCED, drift a, drift a+b (file set changed), back to SYNCED.
    let web: Vec<i64> = [0, 4, 6, 10]
        .iter()
        .map(|&i| stored[i]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids(&rows), web);
    let edge = app
        .get_rows("/history?server=edge&changes_only=true&order=asc")
        .await;
    let expected: Vec<i64> = [1, 7, 9]
        .iter()
        .map(|&i| stored[i]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids(&edge), expected);
    let all = app.get_rows("/history?changes_only=true").await;
    assert_eq!(all.len(), 7);
    let off = app.get_rows("/history?changes_only=false").await;
    assert_eq!(off.len(), stored.len());
}

async fn limit_is_bounded_and_never_clamped(backend: Backend) {
    let (app, _) = seeded(backend).await;
    assert_eq!(app.get_rows("/history?limit=1").await.len(), 1);
    assert_eq!(app.get_rows("/history?limit=10000").await.len(), 12);
    for bad in ["0", "10001", "-1", "ten", "1.5", ""] {
        app.get(&format!("/history?limit={bad}"))
            .await
            .assert_problem(400, &["limit"]);
    }
}

async fn bad_history_parameters_are_named(backend: Backend) {
    let app = TestApp::on(backend).await;
    for (query, field) in [
        ("order=newest", "order"),
        ("changes_only=yes", "changes_only"),
        ("from=yesterday", "from"),
        ("to=2026-04-21T10:30:00", "to"),
        ("sync_status=STALE", "sync_status"),
        ("format=xml", "format"),
        ("cursor=bm9wZQ", "cursor"),
        ("cursor=%%%", "cursor"),
        ("page=2", "page"),
        ("server=a&server=b", "server"),
    ] {
        app.get(&format!("/history?{query}"))
            .await
            .assert_problem(400, &[field]);
    }
    app.get("/history?from=2026-05-01T00:00:00Z&to=2026-04-01T00:00:00Z")
        .await
        .assert_problem(400, &["to"]);
    app.get("/history?limit=0&order=up")
        .await
        .assert_problem(400, &["limit", "order"]);
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

async fn cursor_pages_cover_every_row_once_in_both_orders(backend: Backend) {
    let (app, stored) = seeded(backend).await;
    let (rows, pages) = follow(&app, "/history?limit=5").await;
    let mut expected = ids(&stored);
    expected.reverse();
    assert_eq!(ids(&rows), expected);
    assert_eq!(pages, 3);
    let (rows, _) = follow(&app, "/history?limit=5&order=asc&repo=rsyslog").await;
    let web: Vec<i64> = stored
        .iter()
        .filter(|row| row["repo"] == "rsyslog")
        .map(|row| row["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids(&rows), web);
    // An exact multiple of the page size ends without an empty trailing page.
    let (rows, pages) = follow(&app, "/history?limit=6").await;
    assert_eq!((rows.len(), pages), (12, 2));
    // The link keeps the filters.
    let response = app
        .get("/history?limit=2&repo=rsyslog&changes_only=true")
        .await;
    let link = response.header("link").unwrap();
    assert!(
        link.starts_with("</history?limit=2&repo=rsyslog&changes_only=true&cursor="),
        "{link}"
    );
}

async fn cursor_traversal_is_stable_while_new_snapshots_arrive(backend: Backend) {
    let app = TestApp::on(backend).await;
    for i in 0..50 {
        app.record(&snapshot(
            "r",
            &format!("s{}", i % 5),
            "SYNCED",
            &[],
            &at_offset(-1000 + i),
        ))
        .await;
    }
    let before: Vec<i64> = ids(&app.all_history().await);

    let mut seen = Vec::new();
    let mut next = Some("/history?limit=7".to_owned());
    let mut arrivals = 0;
    while let Some(uri) = next {
        let response = app.get(&uri).await;
        seen.extend(ids(response.json().as_array().unwrap()));
        next = response
            .header("link")
            .map(|link| link[1..link.find('>').unwrap()].to_owned());
        // New checks keep arriving between pages, on the same targets and new ones.
        for _ in 0..3 {
            arrivals += 1;
            app.record(&snapshot(
                "r",
                &format!("s{}", arrivals % 7),
                "SYNCED",
                &[],
                &at_offset(-(arrivals % 60)),
            ))
            .await;
        }
    }
    let mut expected = before.clone();
    expected.reverse();
    assert_eq!(
        seen, expected,
        "every row that existed at the start exactly once, in order"
    );
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len());
}

async fn csv_export_streams_the_whole_selection(backend: Backend) {
    let app = TestApp::on(backend).await;
    let mut body = snapshot(
        "rsyslog",
        "lab",
        "OUT_OF_SYNC",
        &["rsyslog.conf", "rsyslog.d/30 \"lab\".conf"],
        &at_offset(-500),
    );
    body["message"] = json!("line one\nline two, with comma");
    body["revision"] = json!("3f2c1ab");
    let drift = app.record(&body).await;
    for i in 0..150 {
        app.record(&snapshot(
            "rsyslog",
            "lab",
            "SYNCED",
            &[],
            &at_offset(-400 + i),
        ))
        .await;
    }

    let response = app.get("/history?format=csv&order=asc").await;
    assert_eq!(response.status.as_u16(), 200);
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
            "id",
            "repo",
            "server",
            "sync_status",
            "drift_count",
            "files",
            "last_check",
            "received_at",
            "revision",
            "run_url",
            "message",
            "hash",
            "last_check_ms",
            "received_at_ms",
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 151, "more than the default page of 100");
    let first = &records[0];
    assert_eq!(first.get(0).unwrap(), drift["id"].to_string());
    assert_eq!(first.get(3).unwrap(), "OUT_OF_SYNC");
    assert_eq!(
        first.get(5).unwrap(),
        "rsyslog.conf, rsyslog.d/30 \"lab\".conf"
    );
    assert_eq!(first.get(6).unwrap(), drift["last_check"].as_str().unwrap());
    assert_eq!(first.get(8).unwrap(), "3f2c1ab");
    assert_eq!(first.get(10).unwrap(), "line one\nline two, with comma");
    assert_eq!(first.get(12).unwrap(), drift["last_check_ms"].to_string());
    assert_eq!(first.get(13).unwrap(), drift["received_at_ms"].to_string());
    assert_eq!(
        drift["last_check_ms"],
        unix_millis(drift["last_check"].as_str().unwrap())
    );

    // Accept: text/csv selects the same; filters and limit apply.
    let response = app
        .request(
            axum::http::Request::get("/history?sync_status=OUT_OF_SYNC")
                .header("accept", "text/csv")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.content_type(), "text/csv; charset=utf-8");
    assert_eq!(
        csv::Reader::from_reader(response.body.as_ref())
            .records()
            .count(),
        1
    );
    let limited = app.get("/history?format=csv&limit=10").await;
    assert_eq!(
        csv::Reader::from_reader(limited.body.as_ref())
            .records()
            .count(),
        10
    );
}

async fn ndjson_export_streams_one_snapshot_per_line(backend: Backend) {
    let app = TestApp::on(backend).await;
    let mut stored = Vec::new();
    for i in 0..1203 {
        let files: &[&str] = if i % 10 == 0 { &["a"] } else { &[] };
        let status = if files.is_empty() {
            "SYNCED"
        } else {
            "OUT_OF_SYNC"
        };
        stored.push(
            app.record(&snapshot(
                "r",
                &format!("s{}", i % 3),
                status,
                files,
                &at_offset(-5000 + i),
            ))
            .await,
        );
    }
    let response = app.get("/history?format=ndjson").await;
    assert_eq!(response.status.as_u16(), 200);
    assert_eq!(response.content_type(), "application/x-ndjson");
    let text = response.text();
    assert!(text.ends_with('\n'));
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    stored.reverse();
    // Same objects as the JSON rows, across more than one internal page of 1000.
    assert_eq!(lines.len(), 1203);
    assert_eq!(lines[0], app.get_rows("/history?limit=1").await[0]);
    assert_eq!(ids(&lines), ids(&stored));

    let response = app
        .request(
            axum::http::Request::get("/history?server=s1&changes_only=true")
                .header("accept", "application/x-ndjson")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.content_type(), "application/x-ndjson");
    let transitions = response.text().lines().count();
    assert_eq!(
        transitions,
        app.get_rows("/history?server=s1&changes_only=true&limit=10000")
            .await
            .len()
    );
    assert!(transitions > 1);
}

/// Pages across targets are gathered window by window; they must be exact whatever the spacing:
/// a year-long gap, a dense burst, several targets, both orders, every filter combination.
async fn pages_across_targets_are_exact_over_sparse_and_dense_history(backend: Backend) {
    let app = TestApp::on(backend).await;
    let mut offsets: Vec<i64> = vec![-365 * 86_400, -200 * 86_400, -30 * 86_400, -86_400, -3_600];
    offsets.extend((0..60).map(|i| -120 + i));
    let mut stored = Vec::new();
    for (i, offset) in offsets.iter().enumerate() {
        for (repo, server) in [("a", "one"), ("a", "two"), ("b", "one")] {
            if (i + server.len()) % 3 == 0 && *offset > -100 {
                continue; // not every target reports every time
            }
            let drifted = (i + repo.len()) % 4 == 0;
            let (status, files): (&str, &[&str]) = if drifted {
                ("OUT_OF_SYNC", &["x.conf"])
            } else {
                ("SYNCED", &[])
            };
            stored.push(
                app.record(&snapshot(repo, server, status, files, &at_offset(*offset)))
                    .await,
            );
        }
    }
    let key = |row: &Value| {
        (
            row["last_check"].as_str().unwrap().to_owned(),
            row["id"].as_i64().unwrap(),
        )
    };
    for query in [
        "",
        "repo=a",
        "server=one",
        "sync_status=OUT_OF_SYNC",
        "changes_only=true",
        "repo=a&changes_only=true",
    ] {
        let all = app.get_rows(&format!("/history?limit=10000&{query}")).await;
        let mut expected: Vec<Value> = stored
            .iter()
            .filter(|row| all.iter().any(|kept| kept["id"] == row["id"]))
            .cloned()
            .collect();
        expected.sort_by_key(|row| std::cmp::Reverse(key(row)));
        assert_eq!(all, expected, "{query}");
        if !query.contains("changes_only") && !query.contains("sync_status") {
            let matches = |row: &&Value| {
                query
                    .split('&')
                    .filter(|pair| !pair.is_empty())
                    .all(|pair| {
                        let (name, value) = pair.split_once('=').unwrap();
                        row[name] == value
                    })
            };
            assert_eq!(all.len(), stored.iter().filter(matches).count(), "{query}");
        }
        for order in ["desc", "asc"] {
            for limit in [1, 7, 50] {
                let (rows, _) = follow(
                    &app,
                    &format!("/history?order={order}&limit={limit}&{query}"),
                )
                .await;
                let mut want = expected.clone();
                if order == "asc" {
                    want.reverse();
                }
                assert_eq!(
                    ids(&rows),
                    ids(&want),
                    "order={order} limit={limit} {query}"
                );
            }
        }
    }
    // A window in the middle of the gap, and one around the burst.
    let from = at_offset(-250 * 86_400);
    let to = at_offset(-2 * 86_400);
    let rows = app.get_rows(&format!("/history?from={from}&to={to}")).await;
    assert_eq!(rows.len(), 6);
}

/// Evenly spread checks at millisecond precision, so page windows start and end between and on
/// rows: every row must still come exactly once, in order.
async fn window_boundaries_never_drop_or_repeat_a_row(backend: Backend) {
    let app = TestApp::on(backend).await;
    let base = time::OffsetDateTime::now_utc() - time::Duration::seconds(2_000);
    let mut stored = Vec::new();
    // Three targets report at the very same instant every round: cursors land on ties.
    for round in 0..100_i64 {
        let at = (base + time::Duration::milliseconds(round * 1_337))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        for (index, server) in ["one", "two", "three"].into_iter().enumerate() {
            let (status, files): (&str, &[&str]) = if (round + index as i64) % 7 == 0 {
                ("OUT_OF_SYNC", &["a"])
            } else {
                ("SYNCED", &[])
            };
            stored.push(app.record(&snapshot("r", server, status, files, &at)).await);
        }
    }
    // A sparse filter makes the first window too narrow, so windows widen and their edges fall
    // anywhere between rows.
    for filter in ["repo=r", "sync_status=OUT_OF_SYNC"] {
        for (order, limit) in [
            ("desc", 1),
            ("asc", 1),
            ("desc", 3),
            ("asc", 4),
            ("desc", 100),
        ] {
            let (rows, _) = follow(
                &app,
                &format!("/history?order={order}&limit={limit}&{filter}"),
            )
            .await;
            let mut want: Vec<&Value> = stored
                .iter()
                .filter(|row| filter == "repo=r" || row["sync_status"] == "OUT_OF_SYNC")
                .collect();
            want.sort_by_key(|row| {
                (
                    row["last_check"].as_str().unwrap().to_owned(),
                    row["id"].as_i64().unwrap(),
                )
            });
            if order == "desc" {
                want.reverse();
            }
            let want: Vec<i64> = want.iter().map(|row| row["id"].as_i64().unwrap()).collect();
            assert_eq!(ids(&rows), want, "order={order} limit={limit} {filter}");
        }
    }
}
