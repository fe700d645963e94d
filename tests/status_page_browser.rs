//! The status page in a real browser: the release-like binary on a fresh database, seeded over HTTP
//! (snapshots, an acknowledgement and two silences, with tokens so each records who made it),
//! driven by headless Chromium through `tests/browser/status_page.mjs` (playwright-core). Needs
//! `node`, `/usr/bin/chromium` and `npm ci --prefix tests/browser`; `./test.sh` installs them,
//! and without them the test says it did NOT run (fails under `CI=true`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::binary::Binary;
use common::tools;
use common::{at_offset, rendered, snapshot};
use serde_json::{Value, json};

/// What the script saves under `target/screenshots/`, to be looked at.
const SCREENSHOTS: [&str; 9] = [
    "status-page.png",
    "status-page-phone.png",
    "status-page-dark.png",
    "status-page-filtered.png",
    "target-page.png",
    "target-page-phone.png",
    "stale-target-page.png",
    "docs.png",
    "badge-acknowledged.png",
];

/// The tokens the seed writes with: reads stay open for the browser.
const TOKENS: &str = r#"
[[tokens]]
name = "ci-hotfix"
token = "ci-hotfix-write-token"
scopes = ["write"]

[[tokens]]
name = "alice"
token = "alice-admin-token"
scopes = ["admin"]
"#;

/// An RFC 3339 time as the pages show it: `2026-04-22 10:30:00 UTC`.
fn human(rfc3339: &str) -> String {
    format!("{} UTC", rendered(rfc3339)[..19].replacen('T', " ", 1))
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[tokio::test]
async fn the_status_page_works_in_headless_chromium() {
    let test = "the status page browser test";
    let (Some(node), Some(chromium), Some(_)) = (
        tools::NODE.require(test),
        tools::CHROMIUM.require(test),
        tools::PLAYWRIGHT.require(test),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("browser.db").display());
    std::fs::write(dir.path().join("tokens.toml"), TOKENS).unwrap();
    let server = Binary::start(
        dir.path(),
        &[
            "--database-url",
            &database_url,
            "--tokens-file",
            "tokens.toml",
        ],
        &[],
    );
    let client = reqwest::Client::new();
    let post = |path: &str, token: &str, body: &Value| {
        client
            .post(server.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
    };
    let t = |minutes: i64| at_offset(-60 * (90 - minutes));
    let seed = [
        snapshot("nginx", "edge-1", "SYNCED", &[], &t(88)),
        snapshot("rsyslog", "rsyslog-lab", "SYNCED", &[], &t(10)),
        snapshot(
            "rsyslog",
            "rsyslog-lab",
            "OUT_OF_SYNC",
            &["rsyslog.conf"],
            &t(30),
        ),
        snapshot(
            "rsyslog",
            "rsyslog-lab",
            "OUT_OF_SYNC",
            &["rsyslog.conf", "rsyslog.d/30-lab.conf"],
            &t(84),
        ),
        {
            let mut error = snapshot("rsyslog", "rsyslog-prod", "ERROR", &[], &t(85));
            error["message"] =
                json!("ssh: connect to host rsyslog-prod port 22: Connection refused");
            error
        },
        // Names that need percent-encoding in the link to the target's page.
        snapshot("team/app & co", "web #1", "SYNCED", &[], &t(20)),
        snapshot(
            "team/app & co",
            "web #1",
            "OUT_OF_SYNC",
            &["app.ini"],
            &t(86),
        ),
        snapshot("zz-legacy", "old-box", "SYNCED", &[], &t(0)),
        // A dead reporter whose last check found drift: STALE, and says what it last saw.
        snapshot(
            "zz-legacy",
            "old-drift",
            "OUT_OF_SYNC",
            &["legacy.conf", "legacy.d/10-extra.conf"],
            &t(1),
        ),
    ];
    for body in &seed {
        let response = post("/api/status", "ci-hotfix-write-token", body)
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    // The drift on rsyslog-lab is accepted; the rsyslog servers are in maintenance now, the
    // nginx ones tomorrow.
    let until = at_offset(3 * 86_400);
    let ack_reason = "Hotfix for INC-4711: PR #312 brings rsyslog.d/30-lab.conf into the repo";
    let (running_to, coming_from, coming_to) =
        (at_offset(2 * 3600), at_offset(86_400), at_offset(90_000));
    let mut lifecycle = Vec::new();
    for (path, token, body) in [
        (
            "/api/acks",
            "ci-hotfix-write-token",
            json!({"repo": "rsyslog", "server": "rsyslog-lab", "reason": ack_reason,
                   "until": until}),
        ),
        (
            "/api/silences",
            "alice-admin-token",
            json!({"servers": ["rsyslog-*"], "ends_at": running_to,
                   "reason": "Kernel upgrade of the rsyslog hosts"}),
        ),
        (
            "/api/silences",
            "alice-admin-token",
            json!({"repos": ["nginx"], "starts_at": coming_from, "ends_at": coming_to,
                   "reason": "nginx 1.27 rollout"}),
        ),
    ] {
        let response = post(path, token, &body).await.unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        lifecycle.push(response.json::<Value>().await.unwrap());
    }
    // The binary serves its global registry: what the POSTs above counted shows in /metrics.
    let metrics = client
        .get(format!("{}/metrics", server.url("")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "gitops_status_snapshots_ingested_total{{result=\"stored\"}} {}\n",
            seed.len()
        )),
        "{metrics}"
    );
    // The writer times every commit, events' too: at least one batch for the POSTs above, at most
    // one each.
    let commits: usize = metrics
        .lines()
        .find_map(|line| line.strip_prefix("gitops_status_store_commit_duration_seconds_count "))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no commit latency histogram: {metrics}"));
    assert!(
        (1..=seed.len() + lifecycle.len()).contains(&commits),
        "{metrics}"
    );
    let silenced = "Kernel upgrade of the rsyslog hosts";
    let ack = json!({"id": lifecycle[0]["id"], "reason": ack_reason, "by": "ci-hotfix",
                     "until": rendered(&until), "until_text": human(&until)});
    let silences = json!([
        { "id": lifecycle[2]["id"], "reason": "nginx 1.27 rollout", "by": "alice",
          "running": false, "repos": "nginx", "servers": "*" },
        { "id": lifecycle[1]["id"], "reason": silenced, "by": "alice", "running": true,
          "repos": "*", "servers": "rsyslog-*" },
    ]);
    let expected = json!([
        { "repo": "nginx", "server": "edge-1", "state": "SYNCED" },
        { "repo": "rsyslog", "server": "rsyslog-lab", "state": "OUT_OF_SYNC", "ack": ack,
          "silenced": silenced },
        { "repo": "rsyslog", "server": "rsyslog-prod", "state": "ERROR", "silenced": silenced },
        { "repo": "team/app & co", "server": "web #1", "state": "OUT_OF_SYNC" },
        { "repo": "zz-legacy", "server": "old-box", "state": "STALE", "last": "SYNCED" },
        { "repo": "zz-legacy", "server": "old-drift", "state": "STALE", "last": "OUT_OF_SYNC" },
    ]);
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    for name in SCREENSHOTS {
        let _ = std::fs::remove_file(screenshots.join(name));
    }

    let output = Command::new(node)
        .arg(browser_dir().join("status_page.mjs"))
        .arg(server.url(""))
        .arg(expected.to_string())
        .arg(&screenshots)
        .arg(silences.to_string())
        .env("CHROMIUM_PATH", chromium)
        .current_dir(browser_dir())
        .output()
        .expect("run node");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the browser test failed:\n{report}"
    );
    for name in SCREENSHOTS {
        let png = std::fs::read(screenshots.join(name))
            .unwrap_or_else(|error| panic!("no screenshot {name}: {error}\n{report}"));
        assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
    }
}
