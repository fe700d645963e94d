//! The `report` subcommand: the CI-side client that replaces the seed's `update-gitops-status.sh`.
//! It runs the drift-check playbook (or reads its output), parses the markers per host, and POSTs
//! one snapshot per host, printing the seed's four steps on stderr and the snapshots, one JSON
//! object a line, on stdout. `report import-pushgateway` posts the state a Pushgateway holds;
//! `report ack` and `report unack` accept a target's drift until a given time, and end that.

pub mod ack;
pub mod args;
pub mod capture;
pub mod import;
pub mod parse;
pub mod payload;
pub mod send;

use std::process::ExitCode;

use crate::model::SyncStatus;
use crate::timestamp::Timestamp;
pub use args::{EXIT_CODES_HELP, ReportAction, ReportArgs};
use capture::Captured;
use payload::{CiContext, Report, RunContext};
use send::Sender;

/// Drifted files the step output names before "and N more".
const NAMES_SHOWN: usize = 5;

/// How a `report` run ends; the discriminant is the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Recorded = 0,
    NotRecorded = 1,
    BadConfig = 2,
    NoResult = 3,
    Drift = 4,
    CheckFailed = 5,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> Self {
        ExitCode::from(outcome as u8)
    }
}

/// Runs the four steps (or the import) and maps the result to an exit code.
pub async fn run(mut args: ReportArgs) -> Outcome {
    match args.action.take() {
        Some(ReportAction::ImportPushgateway(import)) => return import::run(*import).await,
        Some(ReportAction::Ack(ack)) => return ack::run_ack(*ack).await,
        Some(ReportAction::Unack(unack)) => return ack::run_unack(unack).await,
        None => {}
    }
    let missing = args.missing();
    if !missing.is_empty() {
        for line in missing {
            eprintln!("error: {line}");
        }
        return Outcome::BadConfig;
    }
    let captured = match step_1_capture(&args).await {
        Ok(captured) => captured,
        Err(error) => {
            eprintln!("error: {error}");
            return Outcome::NoResult;
        }
    };
    let reports = match step_2_analyze(&args, &captured.text) {
        Ok(reports) => reports,
        Err(error) => {
            eprintln!("error: {error}");
            return Outcome::NoResult;
        }
    };
    step_3_print(&reports);
    if args.dry_run {
        eprintln!("Step 4/4: Sending status to gitops-status-server... skipped (--dry-run)");
    } else if !step_4_send(&args, &reports).await {
        return Outcome::NotRecorded;
    }
    final_outcome(&args, &reports)
}

async fn step_1_capture(args: &ReportArgs) -> std::io::Result<Captured> {
    if let Some(path) = &args.input {
        eprintln!(
            "Step 1/4: Reading drift-check output from {}...",
            if path.as_os_str() == "-" {
                "stdin".to_owned()
            } else {
                path.display().to_string()
            }
        );
        let path = path.clone();
        return tokio::task::spawn_blocking(move || capture::read_input(&path))
            .await
            .map_err(std::io::Error::other)?;
    }
    eprintln!(
        "Step 1/4: Running drift-check playbook: {}",
        args.command.join(" ")
    );
    let command = args.command.clone();
    let captured = tokio::task::spawn_blocking(move || capture::run_command(&command))
        .await
        .map_err(std::io::Error::other)??;
    if let Some(status) = captured.status {
        eprintln!("  the playbook ended with {status}");
    }
    Ok(captured)
}

/// Parses the output and builds one snapshot per host, all checked "now".
fn step_2_analyze(args: &ReportArgs, text: &str) -> Result<Vec<Report>, payload::NoResult> {
    let last_check = Timestamp::now();
    eprintln!("Step 2/4: Analyzing drift detection results...");
    let playbook = parse::parse_playbook_output(text);
    if let Some(note) = server_name_note(args.server.as_deref(), &playbook) {
        eprintln!("  {note}");
    }
    let context = RunContext {
        repo: args.repo.clone().unwrap_or_default(),
        server_name: args.server.clone(),
        strip_prefix: args.strip_prefix.clone(),
        ci: ci_context(args),
        last_check,
    };
    let reports = payload::build_reports(&playbook, &context)?;
    for report in &reports {
        eprintln!("  {}", summary(report));
    }
    Ok(reports)
}

/// The snapshots on stdout, one JSON object a line, for whatever the pipeline pipes them into.
fn step_3_print(reports: &[Report]) {
    eprintln!("Step 3/4: Building JSON payload...");
    for report in reports {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
    }
}

/// Sends every snapshot; true when all were recorded.
async fn step_4_send(args: &ReportArgs, reports: &[Report]) -> bool {
    let Some(sender) = Sender::for_delivery(&args.delivery) else {
        return false;
    };
    eprintln!(
        "Step 4/4: Sending status to gitops-status-server at {}...",
        sender.endpoint()
    );
    let mut all_recorded = true;
    for report in reports {
        let server = &report.server;
        match sender
            .send(report, |note| eprintln!("  {server}: {note}"))
            .await
        {
            Ok(delivered) => {
                let id = delivered
                    .snapshot_id
                    .map(|id| format!(" as snapshot {id}"))
                    .unwrap_or_default();
                let replayed = if delivered.replayed {
                    ", already recorded by an earlier attempt"
                } else {
                    ""
                };
                eprintln!(
                    "  {server}: recorded{id} (HTTP {}{replayed})",
                    delivered.status
                );
            }
            Err(error) => {
                eprintln!("  {server}: error: {error}");
                all_recorded = false;
            }
        }
    }
    all_recorded
}

fn ci_context(args: &ReportArgs) -> CiContext {
    let from_env = CiContext::from_env(|name| std::env::var(name).ok());
    let given = |value: &Option<String>| value.clone().filter(|value| !value.trim().is_empty());
    CiContext {
        revision: given(&args.revision).or(from_env.revision),
        run_url: given(&args.run_url).or(from_env.run_url),
    }
}

/// With several hosts, each is reported under its inventory name; says so when `SERVER_NAME`
/// names none of them, since nothing is then reported under it.
fn server_name_note(server: Option<&str>, playbook: &parse::PlaybookRun) -> Option<String> {
    let server = server?;
    let hosts = &playbook.hosts;
    if hosts.len() < 2 || hosts.iter().any(|host| host.host == server) {
        return None;
    }
    let names: Vec<&str> = hosts.iter().map(|host| host.host.as_str()).collect();
    Some(format!(
        "SERVER_NAME={server} is not one of the {} hosts this run checked ({}): each host is \
         reported under its inventory name, and nothing under {server}",
        hosts.len(),
        names.join(", ")
    ))
}

/// One line per snapshot for the CI log: `rsyslog-lab: OUT_OF_SYNC, 1 drifted file: rsyslog.conf`.
/// A long list shows its first few names and how many more there are.
fn summary(report: &Report) -> String {
    let server = &report.server;
    match report.sync_status {
        SyncStatus::Synced => match report.note {
            Some(note) => format!("{server}: SYNCED ({note})"),
            None => format!("{server}: SYNCED"),
        },
        SyncStatus::OutOfSync => {
            let count = report.drift_count;
            let plural = if count == 1 { "" } else { "s" };
            let mut names: Vec<&str> = report
                .files
                .iter()
                .take(NAMES_SHOWN)
                .map(|file| file.name.as_str())
                .collect();
            let more = count.saturating_sub(names.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let cut = match &report.message {
                Some(message) => format!(" ({message})"),
                None => String::new(),
            };
            if names.is_empty() {
                names.push("(not named)");
            }
            format!(
                "{server}: OUT_OF_SYNC, {count} drifted file{plural}: {}{more}{cut}",
                names.join(", ")
            )
        }
        SyncStatus::Error => format!(
            "{server}: ERROR: {}",
            report.message.as_deref().unwrap_or_default()
        ),
    }
}

fn final_outcome(args: &ReportArgs, reports: &[Report]) -> Outcome {
    let any = |status: SyncStatus| reports.iter().any(|report| report.sync_status == status);
    if !args.fail_on_drift {
        Outcome::Recorded
    } else if any(SyncStatus::Error) {
        Outcome::CheckFailed
    } else if any(SyncStatus::OutOfSync) {
        Outcome::Drift
    } else {
        Outcome::Recorded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FileEntry;

    fn drifted(names: &[&str], drift_count: usize, message: Option<&str>) -> Report {
        Report {
            repo: "rsyslog".to_owned(),
            server: "lab".to_owned(),
            sync_status: SyncStatus::OutOfSync,
            drift_count,
            files: names
                .iter()
                .map(|name| FileEntry {
                    name: (*name).to_owned(),
                })
                .collect(),
            last_check: Timestamp::from_millis(1_776_767_400_000),
            revision: None,
            run_url: None,
            message: message.map(str::to_owned),
            note: None,
        }
    }

    #[test]
    fn the_step_line_names_five_files_and_counts_the_rest() {
        assert_eq!(
            summary(&drifted(&["rsyslog.conf"], 1, None)),
            "lab: OUT_OF_SYNC, 1 drifted file: rsyslog.conf"
        );
        assert_eq!(
            summary(&drifted(&["a", "b", "c", "d", "e"], 5, None)),
            "lab: OUT_OF_SYNC, 5 drifted files: a, b, c, d, e"
        );
        assert_eq!(
            summary(&drifted(&["a", "b", "c", "d", "e", "f"], 6, None)),
            "lab: OUT_OF_SYNC, 6 drifted files: a, b, c, d, e and 1 more"
        );
        // A cut list counts the files the check found, not the ones sent.
        assert_eq!(
            summary(&drifted(
                &["a", "b", "c", "d", "e", "f"],
                12_000,
                Some("cut")
            )),
            "lab: OUT_OF_SYNC, 12000 drifted files: a, b, c, d, e and 11995 more (cut)"
        );
    }

    #[test]
    fn server_name_is_noted_only_when_it_names_none_of_several_hosts() {
        let run = |names: &[&str]| parse::PlaybookRun {
            hosts: names
                .iter()
                .map(|name| parse::HostOutput {
                    host: (*name).to_owned(),
                    ..parse::HostOutput::default()
                })
                .collect(),
            error: None,
        };
        assert_eq!(server_name_note(Some("lab"), &run(&["10.0.0.7"])), None);
        assert_eq!(server_name_note(Some("lab"), &run(&["lab", "lab-2"])), None);
        assert_eq!(server_name_note(None, &run(&["lab-1", "lab-2"])), None);
        assert_eq!(
            server_name_note(Some("lab"), &run(&["lab-1", "lab-2"])).as_deref(),
            Some(
                "SERVER_NAME=lab is not one of the 2 hosts this run checked (lab-1, lab-2): each \
                 host is reported under its inventory name, and nothing under lab"
            )
        );
    }
}
