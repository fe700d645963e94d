//! `report import-pushgateway URL`: reads a running Pushgateway's `GET /api/v1/metrics` and posts
//! one snapshot per target its `gitops_sync_status` samples name, so the history starts from the
//! state Pushgateway holds.
//!
//! A sample's target is its `repo` and `server` labels: the group's grouping key when the
//! pipeline pushed to `/metrics/job/{job}/repo/{repo}/server/{server}` (Pushgateway copies the
//! grouping key onto every sample), or the sample's own labels when it pushed to a shorter path.
//! The snapshot is checked when Pushgateway last received the metric, so a second import of the
//! same state is an identical retry that the server stores once.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::Outcome;
use super::args::ImportArgs;
use super::payload::Report;
use super::send::{Sender, problem_detail};
use crate::model::{SYNC_STATUS_METRIC, SyncStatus};
use crate::timestamp::Timestamp;

/// `GET /api/v1/metrics`'s answer.
#[derive(Debug, Deserialize)]
pub struct MetricsResponse {
    pub status: String,
    #[serde(default)]
    pub data: Vec<Group>,
    #[serde(default)]
    pub error: Option<String>,
}

/// One group: its grouping key, and each metric family pushed to it by name (beside
/// `last_push_successful`, which is not one).
#[derive(Debug, Deserialize)]
pub struct Group {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(flatten)]
    pub members: BTreeMap<String, serde_json::Value>,
}

/// A metric family as the API shows it.
#[derive(Debug, Deserialize)]
struct Family {
    /// When Pushgateway last received it (Go's RFC 3339 with nanoseconds).
    time_stamp: String,
    #[serde(default)]
    metrics: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Absent for histograms and summaries.
    value: Option<String>,
}

/// What one target of the Pushgateway becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// `repo/server`, for the step lines.
    pub target: String,
    /// The snapshot to post, or why there is none.
    pub snapshot: Result<Report, String>,
}

/// Every target the response's `gitops_sync_status` samples name, sorted by repo, server and
/// time. Groups without the metric, and samples without both labels, are not targets.
pub fn imports(response: &MetricsResponse) -> Vec<Import> {
    let mut imports = Vec::new();
    for group in &response.data {
        let Some(family) = group.members.get(SYNC_STATUS_METRIC) else {
            continue;
        };
        let job = group.labels.get("job").map_or("", String::as_str);
        let family = match Family::deserialize(family) {
            Ok(family) => family,
            Err(error) => {
                imports.push(Import {
                    target: format!("job {job}"),
                    snapshot: Err(format!("{SYNC_STATUS_METRIC} is not readable: {error}")),
                });
                continue;
            }
        };
        let mut targets: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
        for sample in &family.metrics {
            // The grouping key wins over a sample's own labels, as in Pushgateway.
            let label = |name: &str| group.labels.get(name).or_else(|| sample.labels.get(name));
            if let (Some(repo), Some(server)) = (label("repo"), label("server")) {
                let value = sample.value.as_deref().unwrap_or("(none)");
                targets
                    .entry((repo.clone(), server.clone()))
                    .or_default()
                    .push(value);
            }
        }
        for ((repo, server), values) in targets {
            imports.push(Import {
                target: format!("{repo}/{server}"),
                snapshot: snapshot(repo, server, job, &family.time_stamp, &values),
            });
        }
    }
    imports.sort_by(|a, b| {
        let key = |import: &Import| {
            let at = import
                .snapshot
                .as_ref()
                .ok()
                .map(|report| report.last_check);
            (import.target.clone(), at)
        };
        key(a).cmp(&key(b))
    });
    imports
}

fn snapshot(
    repo: String,
    server: String,
    job: &str,
    pushed_at: &str,
    values: &[&str],
) -> Result<Report, String> {
    let status_of = |value: &str| {
        let number: Option<f64> = value.parse().ok();
        SyncStatus::ALL
            .into_iter()
            .find(|status| number == Some(status.code() as f64))
    };
    let statuses: Vec<Option<SyncStatus>> = values.iter().map(|value| status_of(value)).collect();
    let sync_status = match statuses.as_slice() {
        [Some(first), rest @ ..] if rest.iter().all(|status| *status == Some(*first)) => *first,
        _ => {
            return Err(format!(
                "{SYNC_STATUS_METRIC} is {}: not one value of 0, 1 or 2",
                values.join(", ")
            ));
        }
    };
    let last_check = Timestamp::parse_rfc3339(pushed_at)
        .ok_or_else(|| format!("the push time {pushed_at:?} is not an RFC 3339 time"))?;
    Ok(Report {
        repo,
        server,
        sync_status,
        drift_count: 0,
        files: Vec::new(),
        last_check,
        revision: None,
        run_url: None,
        message: Some(format!("imported from Pushgateway (job {job})")),
        note: None,
    })
}

/// Reads the groups, posts a snapshot per target, and maps the result to an exit code.
pub async fn run(args: ImportArgs) -> Outcome {
    let missing = args.missing();
    if !missing.is_empty() {
        for line in missing {
            eprintln!("error: {line}");
        }
        return Outcome::BadConfig;
    }
    eprintln!("Reading {}...", args.pushgateway);
    let response = match fetch(&args.pushgateway, args.delivery.timeout).await {
        Ok(response) => response,
        Err(error) => {
            eprintln!("error: {error}");
            return Outcome::NoResult;
        }
    };
    let imports = imports(&response);
    eprintln!(
        "  {} group(s); {} target(s) with {SYNC_STATUS_METRIC}, repo and server",
        response.data.len(),
        imports.len()
    );
    let mut all_recorded = true;
    let mut snapshots = Vec::new();
    for import in imports {
        match import.snapshot {
            Ok(report) => {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
                snapshots.push(report);
            }
            Err(reason) => {
                eprintln!("  {}: not imported: {reason}", import.target);
                all_recorded = false;
            }
        }
    }
    if args.dry_run {
        eprintln!("Sending... skipped (--dry-run)");
        return if all_recorded {
            Outcome::Recorded
        } else {
            Outcome::NotRecorded
        };
    }
    let Some(sender) = Sender::for_delivery(&args.delivery) else {
        return Outcome::NotRecorded;
    };
    eprintln!(
        "Sending to gitops-status-server at {}...",
        sender.endpoint()
    );
    for report in &snapshots {
        let target = format!("{}/{}", report.repo, report.server);
        let status = report.sync_status.as_str();
        match sender
            .send(report, |note| eprintln!("  {target}: {note}"))
            .await
        {
            Ok(delivered) => {
                let id = delivered
                    .snapshot_id
                    .map(|id| format!(" as snapshot {id}"))
                    .unwrap_or_default();
                let replayed = if delivered.replayed {
                    ", already imported before"
                } else {
                    ""
                };
                eprintln!(
                    "  {target}: {status} of {} recorded{id} (HTTP {}{replayed})",
                    report.last_check, delivered.status
                );
            }
            Err(error) => {
                eprintln!("  {target}: error: {error}");
                all_recorded = false;
            }
        }
    }
    if all_recorded {
        Outcome::Recorded
    } else {
        Outcome::NotRecorded
    }
}

/// `GET /api/v1/metrics`, read as JSON.
async fn fetch(url: &Url, timeout: Duration) -> Result<MetricsResponse, String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!(
            "gitops-status-server-import/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|error| format!("cannot set up the HTTP client: {error}"))?;
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|error| format!("cannot read {url}: {error}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|error| format!("cannot read {url}: {error}"))?;
    if !status.is_success() {
        return Err(format!(
            "{url} answered HTTP {}: {} (is this a Pushgateway, version 1.0 or later?)",
            status.as_u16(),
            problem_detail(&text)
        ));
    }
    let response: MetricsResponse = serde_json::from_str(&text)
        .map_err(|error| format!("{url} did not answer Pushgateway's JSON: {error}"))?;
    if response.status != "success" {
        return Err(format!(
            "{url} answered status {:?}: {}",
            response.status,
            response.error.as_deref().unwrap_or("(no error given)")
        ));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn response(data: serde_json::Value) -> MetricsResponse {
        serde_json::from_value(json!({ "status": "success", "data": data })).unwrap()
    }

    fn family(time_stamp: &str, samples: serde_json::Value) -> serde_json::Value {
        json!({ "time_stamp": time_stamp, "type": "GAUGE", "help": "x", "metrics": samples })
    }

    #[test]
    fn each_target_of_a_gitops_sync_status_sample_is_one_snapshot() {
        let pushed = "2026-04-21T10:30:00.123456789+02:00";
        let data = json!([
            {
                "labels": { "job": "gitops_rsyslog", "repo": "rsyslog", "server": "rack/lab" },
                "last_push_successful": true,
                "push_time_seconds": family(pushed, json!([{ "labels": {}, "value": "1.7e9" }])),
                "gitops_sync_status": family(pushed, json!([
                    { "labels": { "job": "gitops_rsyslog", "repo": "rsyslog", "server": "rack/lab", "instance": "" }, "value": "1" }
                ])),
            },
            // The seed's old form: repo and server only on the sample, two servers in a group.
            {
                "labels": { "job": "gitops_nginx" },
                "gitops_sync_status": family("2026-04-21T08:00:00Z", json!([
                    { "labels": { "repo": "nginx", "server": "web-2" }, "value": "2" },
                    { "labels": { "repo": "nginx", "server": "web-1" }, "value": "0" },
                    { "labels": { "repo": "nginx" }, "value": "0" },
                ])),
            },
            { "labels": { "job": "other" }, "up": family(pushed, json!([{ "labels": {}, "value": "1" }])) },
        ]);
        let imports = imports(&response(data));
        let summary: Vec<(String, SyncStatus, String, Option<String>)> = imports
            .into_iter()
            .map(|import| {
                let report = import.snapshot.unwrap();
                (
                    import.target,
                    report.sync_status,
                    report.last_check.to_string(),
                    report.message,
                )
            })
            .collect();
        let message = |job: &str| Some(format!("imported from Pushgateway (job {job})"));
        assert_eq!(
            summary,
            [
                (
                    "nginx/web-1".to_owned(),
                    SyncStatus::Synced,
                    "2026-04-21T08:00:00.000Z".to_owned(),
                    message("gitops_nginx")
                ),
                (
                    "nginx/web-2".to_owned(),
                    SyncStatus::Error,
                    "2026-04-21T08:00:00.000Z".to_owned(),
                    message("gitops_nginx")
                ),
                (
                    "rsyslog/rack/lab".to_owned(),
                    SyncStatus::OutOfSync,
                    "2026-04-21T08:30:00.123Z".to_owned(),
                    message("gitops_rsyslog")
                ),
            ]
        );
    }

    #[test]
    fn a_value_other_than_0_1_2_or_samples_that_disagree_are_not_imported() {
        let data = json!([
            {
                "labels": { "job": "j", "repo": "r", "server": "a" },
                "gitops_sync_status": family("2026-04-21T08:00:00Z", json!([{ "labels": {}, "value": "3" }])),
            },
            {
                "labels": { "job": "j", "repo": "r", "server": "b" },
                "gitops_sync_status": family("2026-04-21T08:00:00Z", json!([
                    { "labels": { "instance": "x" }, "value": "0" },
                    { "labels": { "instance": "y" }, "value": "1" },
                ])),
            },
            {
                "labels": { "job": "j", "repo": "r", "server": "c" },
                "gitops_sync_status": family("yesterday", json!([{ "labels": {}, "value": "0" }])),
            },
            {
                "labels": { "job": "j", "repo": "r", "server": "d" },
                "gitops_sync_status": "garbage",
            },
        ]);
        let outcomes: Vec<(String, String)> = imports(&response(data))
            .into_iter()
            .map(|import| (import.target, import.snapshot.unwrap_err()))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("job j".to_owned(), "gitops_sync_status is not readable: invalid type: string \"garbage\", expected struct Family".to_owned()),
                ("r/a".to_owned(), "gitops_sync_status is 3: not one value of 0, 1 or 2".to_owned()),
                ("r/b".to_owned(), "gitops_sync_status is 0, 1: not one value of 0, 1 or 2".to_owned()),
                ("r/c".to_owned(), "the push time \"yesterday\" is not an RFC 3339 time".to_owned()),
            ]
        );
    }
}
