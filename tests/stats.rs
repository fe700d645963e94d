//! `/api/stats` as a compliance report: rows per target, repo, server or the whole selection,
//! each state's share in percent, the time acknowledgements and silences covered, retired
//! targets counting no time, and the same rows as CSV; numbers computed by hand on constructed
//! histories.
//!
//! Acknowledgements, silences and retirements are written here with SQL, as the lifecycle's
//! writer stores them (migrations/*/…lifecycle.sql), retirements as chained events.

mod common;

use axum::http::StatusCode;
use common::{Backend, TestApp, snapshot};
use gitops_status_server::chain::{EventFields, Hash, link_event};
use gitops_status_server::timestamp::Timestamp;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, SqliteConnection};

backend_tests! {
    group_by_sums_targets_per_repo_per_server_and_over_all,
    group_by_keeps_the_filters_and_target_is_the_default,
    acknowledged_seconds_count_drift_an_acknowledgement_covered,
    silenced_seconds_count_time_a_matching_silence_covered_once,
    retired_targets_count_no_time_until_a_snapshot_revives_them,
    csv_has_a_line_per_row_named_as_group_by_names_it,
    csv_cells_a_spreadsheet_would_run_are_guarded,
}

/// 2026-01-01T00:00:00Z: windows start here, well in the past.
const T0: i64 = 1_767_225_600_000;

fn at(seconds: i64) -> String {
    Timestamp::from_millis(T0 + seconds * 1000).to_string()
}

/// Milliseconds of `seconds` after T0, as the lifecycle tables store times.
fn ms(seconds: i64) -> i64 {
    T0 + seconds * 1000
}

/// The hour the tests look at.
fn hour(query: &str) -> String {
    format!("/api/stats?from={}&to={}{query}", at(0), at(3600))
}

async fn record_all(app: &TestApp, repo: &str, server: &str, checks: &[(i64, &str, &[&str])]) {
    for (seconds, status, files) in checks {
        app.record(&snapshot(repo, server, status, files, &at(*seconds)))
            .await;
    }
}

/// Four targets over the hour, at most 600 s (the default stale-after) between checks except
/// where STALE is meant.
async fn fleet(backend: Backend) -> TestApp {
    let app = TestApp::on(backend).await;
    // SYNCED 2600, OUT_OF_SYNC 1000; one episode resolved after 1000 s.
    record_all(
        &app,
        "r1",
        "s1",
        &[
            (0, "SYNCED", &[]),
            (500, "SYNCED", &[]),
            (1000, "OUT_OF_SYNC", &["a.conf"]),
            (1500, "OUT_OF_SYNC", &["a.conf"]),
            (2000, "SYNCED", &[]),
            (2500, "SYNCED", &[]),
            (3000, "SYNCED", &[]),
            (3500, "SYNCED", &[]),
        ],
    )
    .await;
    // SYNCED 1200, OUT_OF_SYNC 2400; one episode still open at the end (2400 s).
    record_all(
        &app,
        "r1",
        "s2",
        &[
            (0, "SYNCED", &[]),
            (600, "SYNCED", &[]),
            (1200, "OUT_OF_SYNC", &["a.conf", "b.conf"]),
            (1800, "OUT_OF_SYNC", &["b.conf"]),
            (2400, "OUT_OF_SYNC", &["b.conf"]),
            (3000, "OUT_OF_SYNC", &["b.conf"]),
        ],
    )
    .await;
    // SYNCED 900, ERROR 300, then nothing: STALE from 1200 on (2400).
    record_all(
        &app,
        "r2",
        "s1",
        &[
            (0, "SYNCED", &[]),
            (300, "ERROR", &[]),
            (600, "SYNCED", &[]),
        ],
    )
    .await;
    // SYNCED 3000, OUT_OF_SYNC 600; episodes of 400 s and 200 s, both resolved.
    record_all(
        &app,
        "r2",
        "s2",
        &[
            (0, "OUT_OF_SYNC", &["c.conf"]),
            (400, "SYNCED", &[]),
            (800, "OUT_OF_SYNC", &["a.conf"]),
            (1000, "SYNCED", &[]),
            (1500, "SYNCED", &[]),
            (2000, "SYNCED", &[]),
            (2500, "SYNCED", &[]),
            (3000, "SYNCED", &[]),
            (3500, "SYNCED", &[]),
        ],
    )
    .await;
    app
}

/// A row of the hour, its key fields first; states in the order SYNCED, OUT_OF_SYNC, ERROR,
/// STALE.
fn row(key: Value, targets: i64, checks: i64, seconds: [f64; 4], percent: [f64; 4]) -> Value {
    let mut row = key;
    let fields = json!({
        "targets": targets,
        "from": at(0), "from_ms": T0, "to": at(3600), "to_ms": ms(3600),
        "checks": checks,
        "seconds": {
            "SYNCED": seconds[0], "OUT_OF_SYNC": seconds[1], "ERROR": seconds[2], "STALE": seconds[3]
        },
        "percent": {
            "SYNCED": percent[0], "OUT_OF_SYNC": percent[1], "ERROR": percent[2], "STALE": percent[3]
        },
        "acknowledged_seconds": 0.0,
        "silenced_seconds": 0.0,
    });
    row.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    row
}

/// `row` with its episode fields.
fn with_episodes(
    mut row: Value,
    episodes: i64,
    mean: Option<f64>,
    longest: Option<f64>,
    top_files: &[(&str, i64)],
) -> Value {
    row["drift_episodes"] = json!(episodes);
    row["mean_time_to_resync_seconds"] = json!(mean);
    row["longest_drift_seconds"] = json!(longest);
    row["top_files"] = top_files
        .iter()
        .map(|(name, episodes)| json!({"name": name, "episodes": episodes}))
        .collect();
    row
}

async fn group_by_sums_targets_per_repo_per_server_and_over_all(backend: Backend) {
    let app = fleet(backend).await;

    let repos = app.get_rows(&hour("&group_by=repo")).await;
    assert_eq!(
        repos,
        [
            with_episodes(
                // 3800 and 3400 of 7200 s.
                row(
                    json!({"repo": "r1"}),
                    2,
                    14,
                    [3800.0, 3400.0, 0.0, 0.0],
                    [52.778, 47.222, 0.0, 0.0]
                ),
                2,
                Some(1000.0),
                Some(2400.0),
                &[("a.conf", 2), ("b.conf", 1)],
            ),
            with_episodes(
                row(
                    json!({"repo": "r2"}),
                    2,
                    12,
                    [3900.0, 600.0, 300.0, 2400.0],
                    [54.167, 8.333, 4.167, 33.333]
                ),
                2,
                Some(300.0),
                Some(400.0),
                &[("a.conf", 1), ("c.conf", 1)],
            ),
        ]
    );

    let servers = app.get_rows(&hour("&group_by=server")).await;
    assert_eq!(
        servers,
        [
            with_episodes(
                row(
                    json!({"server": "s1"}),
                    2,
                    11,
                    [3500.0, 1000.0, 300.0, 2400.0],
                    [48.611, 13.889, 4.167, 33.333]
                ),
                1,
                Some(1000.0),
                Some(1000.0),
                &[("a.conf", 1)],
            ),
            with_episodes(
                row(
                    json!({"server": "s2"}),
                    2,
                    15,
                    [4200.0, 3000.0, 0.0, 0.0],
                    [58.333, 41.667, 0.0, 0.0]
                ),
                3,
                Some(300.0),
                Some(2400.0),
                &[("a.conf", 2), ("b.conf", 1), ("c.conf", 1)],
            ),
        ]
    );

    // The mean is over every resolved episode of the fleet: (1000 + 400 + 200) / 3, to the
    // millisecond.
    let all = app.get_rows(&hour("&group_by=all")).await;
    assert_eq!(
        all,
        [with_episodes(
            row(
                json!({}),
                4,
                26,
                [7700.0, 4000.0, 300.0, 2400.0],
                [53.472, 27.778, 2.083, 16.667]
            ),
            4,
            Some(533.333),
            Some(2400.0),
            &[("a.conf", 3), ("b.conf", 1), ("c.conf", 1)],
        )]
    );

    // Every group's numbers are its targets' summed: the per-target rows agree.
    let targets = app.get_rows(&hour("")).await;
    assert_eq!(targets.len(), 4);
    for state in ["SYNCED", "OUT_OF_SYNC", "ERROR", "STALE"] {
        let sum: f64 = targets
            .iter()
            .map(|row| row["seconds"][state].as_f64().unwrap())
            .sum();
        assert_eq!(json!(sum), all[0]["seconds"][state], "{state}");
    }

    // No target in the window, no group.
    let early = format!(
        "/api/stats?from={}&to={}&group_by=all",
        at(-7200),
        at(-3600)
    );
    assert_eq!(app.get_rows(&early).await, Vec::<Value>::new());
}

async fn group_by_keeps_the_filters_and_target_is_the_default(backend: Backend) {
    let app = fleet(backend).await;
    let r1_servers = app.get_rows(&hour("&repo=r1&group_by=server")).await;
    assert_eq!(
        r1_servers
            .iter()
            .map(|row| (
                row["server"].clone(),
                row["targets"].clone(),
                row.get("repo")
            ))
            .collect::<Vec<_>>(),
        [(json!("s1"), json!(1), None), (json!("s2"), json!(1), None)]
    );
    let r1s1 = with_episodes(
        row(
            json!({"repo": "r1", "server": "s1"}),
            1,
            8,
            [2600.0, 1000.0, 0.0, 0.0],
            [72.222, 27.778, 0.0, 0.0],
        ),
        1,
        Some(1000.0),
        Some(1000.0),
        &[("a.conf", 1)],
    );
    let mut expected = r1s1.clone();
    expected.as_object_mut().unwrap().remove("repo");
    assert_eq!(r1_servers[0], expected);

    let explicit = app.get_rows(&hour("&server=s1&group_by=target")).await;
    let default = app.get_rows(&hour("&server=s1")).await;
    assert_eq!(explicit, default);
    assert_eq!(default[0], r1s1);
    assert_eq!(default[1]["repo"], "r2");
}

/// Inserts an acknowledgement of `r`/`server` as the API will store it; times in seconds from
/// T0.
async fn acknowledge(
    app: &TestApp,
    id: i64,
    server: &str,
    created: i64,
    until: i64,
    ended: Option<i64>,
    files: Option<&str>,
) {
    let ended = ended.map_or("null".to_owned(), |seconds| ms(seconds).to_string());
    let files = files.map_or("null".to_owned(), |globs| format!("'{globs}'"));
    app.execute(&format!(
        "insert into acks (id, target_id, reason, by, files, created_at, until, ended_at) \
         select {id}, id, 'hotfix', 'ops', {files}, {}, {}, {ended} from targets \
         where repo = 'r' and server = '{server}'",
        ms(created),
        ms(until),
    ))
    .await;
}

async fn acknowledged_seconds_count_drift_an_acknowledgement_covered(backend: Backend) {
    let app = TestApp::on(backend).await;
    // SYNCED 0-600, OUT_OF_SYNC 600-2400, ERROR 2400-3000, SYNCED 3000-3600.
    record_all(
        &app,
        "r",
        "s",
        &[
            (0, "SYNCED", &[]),
            (600, "OUT_OF_SYNC", &["app/a.conf"]),
            (1200, "OUT_OF_SYNC", &["app/a.conf"]),
            (1800, "OUT_OF_SYNC", &["app/a.conf", "etc/b.conf"]),
            (2400, "ERROR", &[]),
            (3000, "SYNCED", &[]),
        ],
    )
    .await;
    // OUT_OF_SYNC 0-600, then STALE.
    record_all(&app, "r", "t", &[(0, "OUT_OF_SYNC", &["x.conf"])]).await;

    // From 900 until the SYNCED check at 3000 resolved it, for files under app/: it covers
    // 900-1800, not 1800-2400 (etc/b.conf drifted outside its globs), and the ERROR 2400-3000
    // (no file at all).
    acknowledge(&app, 101, "s", 900, 5000, Some(3000), Some(r#"["app/*"]"#)).await;
    // Any files, expired at 2200 (not ended yet in the table): 2000-2200.
    acknowledge(&app, 102, "s", 2000, 2200, None, None).await;
    // Deleted at 2600, inside the first one's time: counted once.
    acknowledge(&app, 103, "s", 2500, 3500, Some(2600), None).await;
    // While SYNCED: nothing to acknowledge.
    acknowledge(&app, 104, "s", 3100, 3500, None, None).await;
    // The whole hour, but STALE time is no drift it can cover.
    acknowledge(&app, 105, "t", 0, 3600, None, None).await;
    // Outside the window.
    acknowledge(&app, 106, "s", -3000, -100, None, None).await;

    let rows = app.get_rows(&hour("")).await;
    let seconds = |row: &Value| {
        (
            row["server"].clone(),
            row["seconds"].clone(),
            row["acknowledged_seconds"].clone(),
        )
    };
    assert_eq!(
        rows.iter().map(seconds).collect::<Vec<_>>(),
        [
            (
                json!("s"),
                json!({"SYNCED": 1200.0, "OUT_OF_SYNC": 1800.0, "ERROR": 600.0, "STALE": 0.0}),
                // 300 + 600 + 200 + 600.
                json!(1700.0),
            ),
            (
                json!("t"),
                json!({"SYNCED": 0.0, "OUT_OF_SYNC": 600.0, "ERROR": 0.0, "STALE": 3000.0}),
                json!(600.0),
            ),
        ]
    );
    assert_eq!(
        rows[0]["percent"],
        json!({"SYNCED": 33.333, "OUT_OF_SYNC": 50.0, "ERROR": 16.667, "STALE": 0.0})
    );
    let all = app.get_rows(&hour("&group_by=all")).await;
    assert_eq!(all[0]["acknowledged_seconds"], 2300.0);

    // Half the window: the same rules, cut at its edges.
    let half = app
        .get_rows(&format!(
            "/api/stats?from={}&to={}&server=s",
            at(1000),
            at(2100)
        ))
        .await;
    // 1000-1800 under the first, 2000-2100 under the second.
    assert_eq!(half[0]["acknowledged_seconds"], 900.0);
}

/// Inserts a silence as the API will store it; times in seconds from T0.
async fn silence(
    app: &TestApp,
    id: i64,
    repos: &str,
    servers: &str,
    (starts, ends): (i64, i64),
    deleted: Option<i64>,
) {
    let deleted = deleted.map_or("null".to_owned(), |seconds| ms(seconds).to_string());
    app.execute(&format!(
        "insert into silences (id, repos, servers, starts_at, ends_at, reason, by, created_at, \
         deleted_at) values ({id}, '{repos}', '{servers}', {}, {}, 'maintenance', 'ops', {}, \
         {deleted})",
        ms(starts),
        ms(ends),
        ms(starts),
    ))
    .await;
}

async fn silenced_seconds_count_time_a_matching_silence_covered_once(backend: Backend) {
    let app = TestApp::on(backend).await;
    let every_600 = [
        (0, "SYNCED", &[][..]),
        (600, "SYNCED", &[][..]),
        (1200, "OUT_OF_SYNC", &["a.conf"][..]),
        (1800, "SYNCED", &[][..]),
        (2400, "SYNCED", &[][..]),
        (3000, "SYNCED", &[][..]),
    ];
    record_all(&app, "r", "s", &every_600).await;
    record_all(&app, "r", "t", &every_600).await;
    // Its first snapshot is at 1800: no time before it, silenced or not.
    record_all(&app, "r", "u", &every_600[3..]).await;

    silence(&app, 201, r#"["r"]"#, r#"["s*"]"#, (300, 900), None).await;
    // Overlaps the first; deleted at 1200, before its end.
    silence(&app, 202, r#"["*"]"#, r#"["s"]"#, (600, 1500), Some(1200)).await;
    // Its server glob matches t, its repo glob does not match r.
    silence(&app, 203, r#"["other", "x*"]"#, r#"["t"]"#, (0, 3600), None).await;
    // Matches t by its second server glob; began before the window.
    silence(
        &app,
        204,
        r#"["r*"]"#,
        r#"["nope", "t"]"#,
        (-600, 300),
        None,
    )
    .await;
    // Begins before u existed.
    silence(&app, 205, r#"["*"]"#, r#"["u"]"#, (-600, 2400), None).await;
    // Deleted before it began: it never silenced anything.
    silence(&app, 206, r#"["*"]"#, r#"["*"]"#, (3000, 3500), Some(2000)).await;
    // Ends where the window begins.
    silence(&app, 207, r#"["*"]"#, r#"["*"]"#, (-1200, 0), None).await;

    let rows = app.get_rows(&hour("")).await;
    assert_eq!(
        rows.iter()
            .map(|row| (row["server"].clone(), row["silenced_seconds"].clone()))
            .collect::<Vec<_>>(),
        [
            // 300-1200 once, though two silences cover 600-900.
            (json!("s"), json!(900.0)),
            (json!("t"), json!(300.0)),
            (json!("u"), json!(600.0)),
        ]
    );
    // A state is still counted as it was: silences change no state's seconds.
    assert_eq!(
        rows[0]["seconds"],
        json!({"SYNCED": 3000.0, "OUT_OF_SYNC": 600.0, "ERROR": 0.0, "STALE": 0.0})
    );
    let all = app.get_rows(&hour("&group_by=all")).await;
    assert_eq!(all[0]["silenced_seconds"], 1800.0);
}

/// One text value of a one-row query on the test's database.
async fn query_text(app: &TestApp, sql: &str) -> Option<String> {
    match app.backend {
        Backend::Sqlite => {
            let mut connection = SqliteConnection::connect(&app.database_url).await.unwrap();
            sqlx::query_scalar(sql)
                .fetch_one(&mut connection)
                .await
                .unwrap()
        }
        Backend::Postgres => {
            let mut connection = PgConnection::connect(&app.database_url).await.unwrap();
            sqlx::query_scalar(sql)
                .fetch_one(&mut connection)
                .await
                .unwrap()
        }
    }
}

/// Chains a lifecycle event of `r`/`server` behind the server's back, as its writer will: the
/// next id of the shared id space, hashed onto the target's chain head, which it becomes.
/// Returns its id.
async fn chain_event(app: &TestApp, server: &str, kind: &str, seconds: i64, body: &str) -> i64 {
    let target = format!("(select id from targets where repo = 'r' and server = '{server}')");
    let id = app
        .query_i64(
            "select max(id) + 1 from (select id from snapshots union all select id from events) \
             as ids",
        )
        .await;
    let head_hex = match app.backend {
        Backend::Sqlite => format!("select lower(hex(head_hash)) from targets where id = {target}"),
        Backend::Postgres => {
            format!("select encode(head_hash, 'hex') from targets where id = {target}")
        }
    };
    let previous: Option<Hash> = query_text(app, &head_hex)
        .await
        .map(|hex| hex::decode(hex).unwrap().try_into().unwrap());
    let fields = EventFields {
        id,
        repo: Some("r"),
        server: Some(server),
        kind,
        at: Timestamp::from_millis(ms(seconds)),
        body,
    };
    let hash = hex::encode(link_event(&fields, previous.as_ref(), &mut Vec::new()));
    let hash = match app.backend {
        Backend::Sqlite => format!("x'{hash}'"),
        Backend::Postgres => format!("decode('{hash}', 'hex')"),
    };
    app.execute_all(&[
        &format!(
            "insert into events (id, target_id, kind, at, body, hash) \
             values ({id}, {target}, '{kind}', {}, '{body}', {hash})",
            ms(seconds)
        ),
        &format!("update targets set head_id = {id}, head_hash = {hash} where id = {target}"),
    ])
    .await;
    id
}

async fn retire(app: &TestApp, server: &str, seconds: i64) {
    chain_event(app, server, "retire", seconds, r#"{"by":"ops"}"#).await;
    app.execute(&format!(
        "update targets set retired_at = {} where repo = 'r' and server = '{server}'",
        ms(seconds)
    ))
    .await;
}

/// Records that `snapshot` revived `r`/`server`, received at `seconds`.
async fn revive(app: &TestApp, server: &str, seconds: i64, snapshot: i64) {
    let body = format!(r#"{{"snapshot":{snapshot}}}"#);
    chain_event(app, server, "revive", seconds, &body).await;
    app.execute(&format!(
        "update targets set retired_at = null where repo = 'r' and server = '{server}'"
    ))
    .await;
}

async fn snapshot_id(app: &TestApp, server: &str, seconds: i64) -> i64 {
    app.query_i64(&format!(
        "select s.id from snapshots s join targets t on t.id = s.target_id \
         where t.repo = 'r' and t.server = '{server}' and s.last_check = {}",
        ms(seconds)
    ))
    .await
}

async fn retired_targets_count_no_time_until_a_snapshot_revives_them(backend: Backend) {
    let app = TestApp::on(backend).await;
    record_all(
        &app,
        "r",
        "back",
        &[
            (0, "SYNCED", &[]),
            (1500, "SYNCED", &[]),
            (2100, "OUT_OF_SYNC", &["a.conf"]),
            (2700, "SYNCED", &[]),
        ],
    )
    .await;
    record_all(
        &app,
        "r",
        "gone",
        &[(0, "SYNCED", &[]), (600, "OUT_OF_SYNC", &["a.conf"])],
    )
    .await;
    record_all(&app, "r", "old", &[(-1200, "SYNCED", &[])]).await;
    record_all(
        &app,
        "r",
        "pruned",
        &[(0, "SYNCED", &[]), (1800, "SYNCED", &[])],
    )
    .await;

    // Retired at 300; the check of 1500, received at 1502, revived it.
    retire(&app, "back", 300).await;
    let reviving = snapshot_id(&app, "back", 1500).await;
    revive(&app, "back", 1502, reviving).await;
    // Retired at 900 while drifted, never revived.
    retire(&app, "gone", 900).await;
    // Retired before the window.
    retire(&app, "old", -600).await;
    // Revived by a snapshot retention has since removed: from the revival's own time, 1900.
    retire(&app, "pruned", 600).await;
    revive(&app, "pruned", 1900, 999_999).await;
    silence(&app, 301, r#"["*"]"#, r#"["gone"]"#, (0, 3600), None).await;

    let rows = app.get_rows(&hour("")).await;
    let key = |server: &str| json!({"repo": "r", "server": server});
    let mut gone = with_episodes(
        // Nothing after 900, STALE included; the open episode ends there too.
        row(
            key("gone"),
            1,
            2,
            [600.0, 300.0, 0.0, 0.0],
            [66.667, 33.333, 0.0, 0.0],
        ),
        1,
        None,
        Some(300.0),
        &[("a.conf", 1)],
    );
    gone["silenced_seconds"] = json!(900.0);
    assert_eq!(
        rows,
        [
            with_episodes(
                // SYNCED 0-300, 1500-2100 and 2700-3300, then STALE until 3600.
                row(
                    key("back"),
                    1,
                    4,
                    [1500.0, 600.0, 0.0, 300.0],
                    [62.5, 25.0, 0.0, 12.5]
                ),
                1,
                Some(600.0),
                Some(600.0),
                &[("a.conf", 1)],
            ),
            gone,
            // "old", retired throughout the window, is in no row.
            with_episodes(
                // SYNCED 0-600 and 1900-2400, STALE 2400-3600.
                row(
                    key("pruned"),
                    1,
                    2,
                    [1100.0, 0.0, 0.0, 1200.0],
                    [47.826, 0.0, 0.0, 52.174]
                ),
                0,
                None,
                None,
                &[],
            ),
        ]
    );

    let all = app.get_rows(&hour("&group_by=all")).await;
    assert_eq!(all[0]["targets"], 3);
    assert_eq!(
        all[0]["seconds"],
        json!({"SYNCED": 3200.0, "OUT_OF_SYNC": 900.0, "ERROR": 0.0, "STALE": 1500.0})
    );

    // Before its retirement, the retired target counts as any other.
    let before = app
        .get_rows(&format!(
            "/api/stats?from={}&to={}&server=old",
            at(-1200),
            at(0)
        ))
        .await;
    assert_eq!(
        before[0]["seconds"],
        json!({"SYNCED": 600.0, "OUT_OF_SYNC": 0.0, "ERROR": 0.0, "STALE": 0.0})
    );
}

async fn csv_has_a_line_per_row_named_as_group_by_names_it(backend: Backend) {
    let app = fleet(backend).await;
    let fixed = "targets,from,to,checks,synced_seconds,out_of_sync_seconds,error_seconds,\
                 stale_seconds,synced_percent,out_of_sync_percent,error_percent,stale_percent,\
                 acknowledged_seconds,silenced_seconds,drift_episodes,\
                 mean_time_to_resync_seconds,longest_drift_seconds,top_files,from_ms,to_ms";
    let window = format!("{},{},", at(0), at(3600));
    let millis = format!(",{},{}", T0, ms(3600));

    let response = app.get(&hour("&group_by=server&format=csv")).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.content_type(), "text/csv; charset=utf-8");
    assert!(response.header("etag").is_some());
    assert_eq!(
        response.text(),
        format!(
            "server,{fixed}\n\
             s1,2,{window}11,3500.0,1000.0,300.0,2400.0,48.611,13.889,4.167,33.333,0.0,0.0,1,\
             1000.0,1000.0,a.conf (1){millis}\n\
             s2,2,{window}15,4200.0,3000.0,0.0,0.0,58.333,41.667,0.0,0.0,0.0,0.0,3,300.0,2400.0,\
             \"a.conf (2), b.conf (1), c.conf (1)\"{millis}\n"
        )
    );

    // The default grouping names both; `all` neither. A null is an empty cell.
    let targets = app.get(&hour("&repo=r1&format=csv")).await.text();
    assert_eq!(
        targets,
        format!(
            "repo,server,{fixed}\n\
             r1,s1,1,{window}8,2600.0,1000.0,0.0,0.0,72.222,27.778,0.0,0.0,0.0,0.0,1,1000.0,\
             1000.0,a.conf (1){millis}\n\
             r1,s2,1,{window}6,1200.0,2400.0,0.0,0.0,33.333,66.667,0.0,0.0,0.0,0.0,1,,2400.0,\
             \"a.conf (1), b.conf (1)\"{millis}\n"
        )
    );
    let all = app.get(&hour("&group_by=all&format=csv")).await.text();
    assert!(all.starts_with(&format!("{fixed}\n4,{window}26,")), "{all}");
    assert_eq!(all.lines().count(), 2, "{all}");

    // The JSON answer and the CSV one are tagged apart.
    let json_tag = app.get(&hour("&group_by=server")).await;
    assert_ne!(json_tag.header("etag"), response.header("etag"));
}

async fn csv_cells_a_spreadsheet_would_run_are_guarded(backend: Backend) {
    let app = TestApp::on(backend).await;
    for (seconds, status, files) in [
        (0, "OUT_OF_SYNC", &["=cmd|' /C calc'!A0"][..]),
        (600, "SYNCED", &[][..]),
    ] {
        app.record(&snapshot("+repo", "@server", status, files, &at(seconds)))
            .await;
    }
    let csv = app.get(&hour("&format=csv")).await.text();
    let line = csv.lines().nth(1).unwrap();
    assert!(line.starts_with("'+repo,'@server,1,"), "{line}");
    assert!(line.contains(",'=cmd|' /C calc'!A0 (1),"), "{line}");
}
