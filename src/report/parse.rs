//! Reads `ansible-playbook` output (default stdout callback, JSON or YAML result format) into what
//! each host reported: its `DRIFTED_FILES=` and `SYNC_STATUS=` markers, its first failure, and
//! whether the `PLAY RECAP` shows its run completed or counts it as failed or unreachable. Pure
//! functions, no I/O.

use serde_json::Value;

const DRIFTED_FILES: &str = "DRIFTED_FILES=";
const SYNC_STATUS: &str = "SYNC_STATUS=";

/// Everything one playbook run said, host by host in order of first appearance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlaybookRun {
    pub hosts: Vec<HostOutput>,
    /// The first `ERROR!` / `[ERROR]:` line: why a run ended before any host did anything.
    pub error: Option<String>,
}

/// What one host printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOutput {
    pub host: String,
    /// The `DRIFTED_FILES=` value, split at commas, blanks dropped; `None` without the marker.
    pub drifted_files: Option<Vec<String>>,
    /// The `SYNC_STATUS=` value as printed.
    pub sync_status: Option<String>,
    /// The first failure that was neither ignored nor rescued.
    pub failure: Option<Failure>,
    /// The host's `PLAY RECAP` counts; `None` when the output has no recap line for it.
    pub recap: Option<Recap>,
}

/// The counts of one `PLAY RECAP` line that decide whether a host's run completed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recap {
    pub ok: u64,
    pub failed: u64,
    pub unreachable: u64,
}

/// A task that failed on a host, or the host being unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub task: Option<String>,
    pub message: String,
    pub unreachable: bool,
}

/// What a host's output means for its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Synced,
    /// Drift, with the files as the playbook named them (absolute paths).
    OutOfSync(Vec<String>),
    /// The check itself failed; the reason goes into the snapshot's `message`.
    Error(String),
    /// No marker, but the `PLAY RECAP` shows the host's run completed without a failed or
    /// unreachable task. The seed's playbook prints its markers only when it finds drift, and the
    /// seed's script reported such a run as SYNCED; so does `report`.
    CompletedWithoutMarkers,
    /// Neither marker, and no `PLAY RECAP` line shows the host's run completed; says why.
    Unfinished(String),
}

impl HostOutput {
    /// Interprets the markers and failures. A failure after `SYNC_STATUS=OUT_OF_SYNC` is the
    /// seed's "fail if drift detected" gate, so it is drift; any other failure is an error.
    pub fn verdict(&self) -> Verdict {
        let files = self.drifted_files.clone().unwrap_or_default();
        let failure = self.failure.as_ref().map(Failure::describe);
        match (self.sync_status.as_deref(), failure) {
            (Some("OUT_OF_SYNC"), _) => Verdict::OutOfSync(files),
            (_, Some(failure)) => Verdict::Error(failure),
            (Some("SYNCED"), None) if files.is_empty() => Verdict::Synced,
            (Some("SYNCED"), None) => Verdict::Error(format!(
                "the drift check printed SYNC_STATUS=SYNCED but DRIFTED_FILES={}",
                files.join(",")
            )),
            (Some("ERROR"), None) => {
                Verdict::Error("the drift check printed SYNC_STATUS=ERROR".to_owned())
            }
            (Some(other), None) => Verdict::Error(format!(
                "the drift check printed an unknown SYNC_STATUS={other:?} \
                 (expected SYNCED or OUT_OF_SYNC)"
            )),
            (None, None) => match self.drifted_files {
                Some(_) if files.is_empty() => Verdict::Synced,
                Some(_) => Verdict::OutOfSync(files),
                None => match self.recap {
                Some(recap) if recap.ok > 0 => Verdict::CompletedWithoutMarkers,
                Some(_) => Verdict::Unfinished(
                    "the drift check printed no DRIFTED_FILES= or SYNC_STATUS= marker for this \
                     host, and the PLAY RECAP shows no task ran on it (ok=0): its drift was not \
                     checked"
                        .to_owned(),
                ),
                None => Verdict::Unfinished(
                    "the drift check printed no DRIFTED_FILES= or SYNC_STATUS= marker for this \
                     host, and the output has no PLAY RECAP line for it: its run did not complete"
                        .to_owned(),
                ),
                },
            },
        }
    }
}

impl Failure {
    /// One line for the snapshot's `message`: what failed and why.
    pub fn describe(&self) -> String {
        match (&self.task, self.unreachable) {
            (_, true) => format!("host unreachable: {}", self.message),
            (Some(task), false) => format!("task \"{task}\" failed: {}", self.message),
            (None, false) => format!("failed: {}", self.message),
        }
    }
}

/// Parses the output of one `ansible-playbook` run (stdout, with stderr appended if available).
pub fn parse_playbook_output(text: &str) -> PlaybookRun {
    let lines: Vec<String> = text.lines().map(strip_ansi).collect();
    let mut run = PlaybookRun::default();
    let mut recap: Vec<RecapLine> = Vec::new();
    let mut task: Option<String> = None;
    let mut in_recap = false;
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index].as_str();
        index += 1;
        if in_recap {
            match parse_recap_line(line) {
                Some(entry) => recap.push(entry),
                // The recap ends at the first line that is not a host's counts.
                None => in_recap = false,
            }
            continue;
        }
        if line.starts_with("PLAY RECAP ") {
            in_recap = true;
            continue;
        }
        if let Some(name) =
            header_name(line, "TASK [").or_else(|| header_name(line, "RUNNING HANDLER ["))
        {
            task = Some(name.to_owned());
            continue;
        }
        if run.error.is_none() && (line.starts_with("ERROR!") || line.starts_with("[ERROR]:")) {
            run.error = Some(line.trim().to_owned());
            continue;
        }
        let Some(result) = ResultLine::parse(line) else {
            continue;
        };
        let (payload, consumed) = read_payload(result.payload, &lines[index..]);
        index += consumed;
        let host = host_entry(&mut run.hosts, result.host);
        match result.status {
            "fatal" | "failed" => {
                let ignored = lines[index..]
                    .iter()
                    .find(|next| !next.trim().is_empty())
                    .is_some_and(|next| next.trim() == "...ignoring");
                if !ignored && host.failure.is_none() {
                    host.failure = Some(failure_from(&payload, result.unreachable, task.clone()));
                }
            }
            "ok" | "changed" => {
                for message in payload.messages() {
                    record_marker(host, message);
                }
            }
            _ => {}
        }
    }
    apply_recap(&mut run.hosts, &recap);
    run
}

/// One `status: [host] ... => payload` line.
struct ResultLine<'a> {
    status: &'a str,
    host: &'a str,
    unreachable: bool,
    payload: Option<&'a str>,
}

impl<'a> ResultLine<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let (status, rest) = line.split_once(": [")?;
        if !matches!(status, "ok" | "changed" | "skipping" | "fatal" | "failed") {
            return None;
        }
        let (host, rest) = rest.split_once(']')?;
        // `ok: [web1 -> localhost]` ran on a delegate but reports for web1.
        let host = host.split(" -> ").next().unwrap_or(host);
        let (head, payload) = match rest.split_once("=>") {
            Some((head, payload)) => (head, Some(payload.trim())),
            None => (rest, None),
        };
        Some(Self {
            status,
            host,
            unreachable: head.contains("UNREACHABLE!"),
            payload,
        })
    }
}

/// A result's payload: a JSON object, or (YAML result format) its `msg:` text.
#[derive(Debug, Default)]
enum Payload {
    #[default]
    None,
    Json(Value),
    YamlMessage(String),
    Text(String),
}

impl Payload {
    fn messages(&self) -> Vec<&str> {
        match self {
            Self::Json(value) => match value.get("msg") {
                Some(Value::String(message)) => vec![message.as_str()],
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            },
            Self::YamlMessage(message) => vec![message.as_str()],
            Self::None | Self::Text(_) => Vec::new(),
        }
    }
}

/// Reads the payload that starts on the result line and may continue on the following lines;
/// returns it with the number of following lines it used.
fn read_payload(first: Option<&str>, following: &[String]) -> (Payload, usize) {
    let Some(first) = first else {
        return (Payload::None, 0);
    };
    if first.starts_with('{') {
        if let Ok(value) = serde_json::from_str(first) {
            return (Payload::Json(value), 0);
        }
        // The default callback indents `debug` results over several lines and closes with `}`.
        let mut text = first.to_owned();
        for (used, line) in following.iter().enumerate() {
            text.push('\n');
            text.push_str(line);
            if line.starts_with('}') {
                return match serde_json::from_str(&text) {
                    Ok(value) => (Payload::Json(value), used + 1),
                    Err(_) => (Payload::Text(first.to_owned()), 0),
                };
            }
            if ResultLine::parse(line).is_some() || header_name(line, "TASK [").is_some() {
                break;
            }
        }
        return (Payload::Text(first.to_owned()), 0);
    }
    if first.is_empty() {
        return read_yaml_message(following);
    }
    (Payload::Text(first.to_owned()), 0)
}

/// The YAML result format: indented `key: value` lines, of which `msg` matters.
fn read_yaml_message(following: &[String]) -> (Payload, usize) {
    let block: Vec<&String> = following
        .iter()
        .take_while(|line| line.starts_with(' '))
        .collect();
    let mut lines = block.iter().map(|line| line.as_str());
    while let Some(line) = lines.next() {
        let Some(value) = line.trim_start().strip_prefix("msg:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let mut message = yaml_scalar(value.trim());
        // A long plain scalar folds onto deeper-indented lines, joined by spaces.
        for continuation in lines.by_ref() {
            if continuation.len() - continuation.trim_start().len() <= indent {
                break;
            }
            message.push(' ');
            message.push_str(continuation.trim());
        }
        return (Payload::YamlMessage(message), block.len());
    }
    (Payload::None, block.len())
}

fn yaml_scalar(value: &str) -> String {
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return inner.replace("''", "'");
    }
    if value.starts_with('"') {
        if let Ok(text) = serde_json::from_str::<String>(value) {
            return text;
        }
    }
    value.to_owned()
}

fn record_marker(host: &mut HostOutput, message: &str) {
    let message = message.trim();
    if let Some(files) = message.strip_prefix(DRIFTED_FILES) {
        host.drifted_files = Some(
            files
                .split(',')
                .map(str::trim)
                .filter(|file| !file.is_empty())
                .map(str::to_owned)
                .collect(),
        );
    } else if let Some(status) = message.strip_prefix(SYNC_STATUS) {
        host.sync_status = Some(status.trim().to_owned());
    }
}

fn failure_from(payload: &Payload, unreachable_line: bool, task: Option<String>) -> Failure {
    let (message, unreachable_flag) = match payload {
        Payload::Json(value) => (
            value
                .get("msg")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string()),
            value.get("unreachable").and_then(Value::as_bool) == Some(true),
        ),
        Payload::YamlMessage(message) | Payload::Text(message) => (message.clone(), false),
        Payload::None => ("no details printed".to_owned(), false),
    };
    Failure {
        task,
        message,
        unreachable: unreachable_line || unreachable_flag,
    }
}

fn host_entry<'r>(hosts: &'r mut Vec<HostOutput>, name: &str) -> &'r mut HostOutput {
    let position = match hosts.iter().position(|host| host.host == name) {
        Some(position) => position,
        None => {
            hosts.push(HostOutput {
                host: name.to_owned(),
                ..HostOutput::default()
            });
            hosts.len() - 1
        }
    };
    &mut hosts[position]
}

/// `host : ok=4 changed=1 unreachable=0 failed=1 skipped=0 rescued=0 ignored=0`
#[derive(Debug)]
struct RecapLine {
    host: String,
    counts: Recap,
}

fn parse_recap_line(line: &str) -> Option<RecapLine> {
    let (host, counts) = line.split_once(" : ")?;
    let count = |name: &str| {
        counts
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    };
    Some(RecapLine {
        host: host.trim().to_owned(),
        counts: Recap {
            ok: count("ok")?,
            failed: count("failed")?,
            unreachable: count("unreachable")?,
        },
    })
}

/// The recap has the last word: a host it counts without failures completed its run (a failure
/// line it does not count was rescued), and a host it counts as failed without a failure line
/// printed (another callback, cut output) still fails.
fn apply_recap(hosts: &mut Vec<HostOutput>, recap: &[RecapLine]) {
    for line in recap {
        let host = host_entry(hosts, &line.host);
        let Recap {
            failed,
            unreachable,
            ..
        } = line.counts;
        host.recap = Some(line.counts);
        if failed == 0 && unreachable == 0 {
            host.failure = None;
        } else if host.failure.is_none() {
            host.failure = Some(Failure {
                task: None,
                message: format!(
                    "PLAY RECAP counts failed={failed} unreachable={unreachable} (no failure \
                     line was printed)"
                ),
                unreachable: unreachable > 0,
            });
        }
    }
}

fn header_name<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(prefix)?;
    let end = rest
        .rfind("] ")
        .or_else(|| rest.strip_suffix(']').map(str::len))?;
    Some(&rest[..end])
}

/// Removes ANSI colour sequences (`ANSIBLE_FORCE_COLOR` in CI logs).
fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.clone().next() == Some('[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PlaybookRun {
        let path = format!(
            "{}/tests/fixtures/ansible/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        parse_playbook_output(&std::fs::read_to_string(&path).expect(&path))
    }

    fn verdicts(run: &PlaybookRun) -> Vec<(&str, Verdict)> {
        run.hosts
            .iter()
            .map(|host| (host.host.as_str(), host.verdict()))
            .collect()
    }

    fn paths(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn in_sync_run_of_the_example_playbook() {
        let run = fixture("synced.out");
        assert_eq!(run.error, None);
        assert_eq!(
            run.hosts,
            vec![HostOutput {
                host: "lab".to_owned(),
                drifted_files: Some(Vec::new()),
                sync_status: Some("SYNCED".to_owned()),
                failure: None,
                recap: Some(Recap {
                    ok: 4,
                    failed: 0,
                    unreachable: 0
                }),
            }]
        );
        assert_eq!(verdicts(&run), vec![("lab", Verdict::Synced)]);
    }

    #[test]
    fn drift_is_drift_although_the_drift_gate_fails_the_host() {
        let run = fixture("drift-missing-and-edited.out");
        let host = &run.hosts[0];
        assert_eq!(
            host.failure.as_ref().map(|failure| failure.task.as_deref()),
            Some(Some("Fail if drift detected"))
        );
        assert_eq!(
            verdicts(&run),
            vec![(
                "lab",
                Verdict::OutOfSync(paths(&[
                    "/tmp/rpt/etc/rsyslog.conf",
                    "/tmp/rpt/etc/rsyslog.d/30-lab.conf"
                ]))
            )]
        );
    }

    #[test]
    fn two_hosts_in_one_run_one_drifted_one_unreachable() {
        let run = fixture("two-hosts-drift-and-unreachable.out");
        assert_eq!(
            verdicts(&run),
            vec![
                (
                    "ghost",
                    Verdict::Error(
                        "host unreachable: Task failed: Failed to connect to the host via ssh: \
                         ssh: connect to host 127.0.0.1 port 1: Connection refused"
                            .to_owned()
                    )
                ),
                (
                    "lab",
                    Verdict::OutOfSync(paths(&["/tmp/rpt/etc/rsyslog.conf"]))
                ),
            ]
        );
    }

    #[test]
    fn an_unresolvable_host_is_an_error_naming_the_cause() {
        let run = fixture("unresolvable-host.out");
        let verdicts = verdicts(&run);
        let [(host, Verdict::Error(message))] = verdicts.as_slice() else {
            panic!("{run:?}");
        };
        assert_eq!(*host, "rsyslog-lab.invalid");
        assert!(message.contains("Could not resolve hostname"), "{message}");
    }

    #[test]
    fn a_failure_after_synced_is_an_error_not_a_green_check() {
        let run = fixture("synced-then-failed.out");
        let verdicts = verdicts(&run);
        let [(_, Verdict::Error(message))] = verdicts.as_slice() else {
            panic!("{run:?}");
        };
        assert!(
            message.starts_with("task \"Fail if drift detected\" failed: Task failed: Conditional"),
            "{message}"
        );
    }

    const NO_RECAP_LINE: &str = "the drift check printed no DRIFTED_FILES= or SYNC_STATUS= marker \
         for this host, and the output has no PLAY RECAP line for it: its run did not complete";

    #[test]
    fn a_completed_run_without_markers_is_synced_as_the_seed_reported_it() {
        let run = fixture("apply-no-markers.out");
        assert_eq!(
            verdicts(&run),
            vec![("lab", Verdict::CompletedWithoutMarkers)]
        );

        // The same run cut before its PLAY RECAP shows no completed run.
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/ansible/apply-no-markers.out",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let cut = text.split("PLAY RECAP").next().unwrap();
        assert_eq!(
            verdicts(&parse_playbook_output(cut)),
            vec![("lab", Verdict::Unfinished(NO_RECAP_LINE.to_owned()))]
        );
    }

    #[test]
    fn the_seed_playbook_clean_and_drifted() {
        let clean = fixture("seed-synced.out");
        assert_eq!(
            clean.hosts,
            vec![HostOutput {
                host: "lab".to_owned(),
                recap: Some(Recap {
                    ok: 4,
                    failed: 0,
                    unreachable: 0
                }),
                ..HostOutput::default()
            }]
        );
        assert_eq!(
            verdicts(&clean),
            vec![("lab", Verdict::CompletedWithoutMarkers)]
        );
        let drifted = fixture("seed-drifted.out");
        assert_eq!(
            verdicts(&drifted),
            vec![("lab", Verdict::OutOfSync(paths(&["/etc/rsyslog.conf"])))]
        );
    }

    #[test]
    fn a_host_on_which_no_task_ran_was_not_checked() {
        let run = fixture("two-hosts-one-without-markers.out");
        assert_eq!(
            verdicts(&run),
            vec![
                (
                    "lab2",
                    Verdict::Unfinished(
                        "the drift check printed no DRIFTED_FILES= or SYNC_STATUS= marker for \
                         this host, and the PLAY RECAP shows no task ran on it (ok=0): its \
                         drift was not checked"
                            .to_owned()
                    )
                ),
                ("lab", Verdict::Synced)
            ]
        );
    }

    #[test]
    fn the_yaml_result_format_with_two_hosts() {
        let run = fixture("two-hosts-yaml-format.out");
        let both = Verdict::OutOfSync(paths(&[
            "/tmp/rpt/etc/rsyslog.conf",
            "/tmp/rpt/etc/rsyslog.d/30-lab.conf",
        ]));
        assert_eq!(verdicts(&run), vec![("lab2", both.clone()), ("lab", both)]);
    }

    #[test]
    fn the_seed_one_line_format() {
        let run = fixture("seed-one-line.out");
        assert_eq!(
            verdicts(&run),
            vec![(
                "rsyslog-lab",
                Verdict::OutOfSync(paths(&["/etc/rsyslog.conf", "/etc/rsyslog.d/30-lab.conf"]))
            )]
        );
    }

    #[test]
    fn an_ignored_failure_is_not_a_failure() {
        let run = fixture("ignored-failure.out");
        assert_eq!(run.hosts[0].failure, None);
        assert_eq!(
            verdicts(&run),
            vec![("lab", Verdict::OutOfSync(paths(&["/etc/rsyslog.conf"])))]
        );
    }

    #[test]
    fn a_playbook_that_never_reached_a_host() {
        let run = fixture("playbook-not-found.err");
        assert!(run.hosts.is_empty());
        assert_eq!(
            run.error.as_deref(),
            Some(
                "[ERROR]: the playbook: /work/wt5/examples/ansible/playbooks/no-such-playbook.yml \
                 could not be found"
            )
        );
        let older = parse_playbook_output("ERROR! the playbook: x.yml could not be found\n");
        assert_eq!(
            older.error.as_deref(),
            Some("ERROR! the playbook: x.yml could not be found")
        );
    }

    #[test]
    fn markers_count_only_in_a_result_message() {
        // A managed file that mentions a marker shows up in the diff; that is not a marker.
        let text = "TASK [Compare] ***\n--- before\n+++ after\n+SYNC_STATUS=OUT_OF_SYNC\n \
                    DRIFTED_FILES=/etc/x\nchanged: [lab] => (item=x)\n\n";
        assert_eq!(
            verdicts(&parse_playbook_output(text)),
            vec![("lab", Verdict::Unfinished(NO_RECAP_LINE.to_owned()))]
        );
    }

    #[test]
    fn colours_delegation_and_recap_only_failures() {
        let text = "\u{1b}[0;32mok: [web1 -> localhost] => {\"msg\": \"SYNC_STATUS=SYNCED\"}\u{1b}[0m\n\
                    ok: [web2] => {\"msg\": [\"DRIFTED_FILES=/etc/a, /etc/b,\"]}\n\
                    ok: [web2] => {\"msg\": \"SYNC_STATUS=OUT_OF_SYNC\"}\n\n\
                    PLAY RECAP ***\n\
                    web1 : ok=1 changed=0 unreachable=0 failed=0\n\
                    web2 : ok=2 changed=0 unreachable=0 failed=0\n\
                    web3 : ok=0 changed=0 unreachable=0 failed=1\n";
        let run = parse_playbook_output(text);
        assert_eq!(
            verdicts(&run),
            vec![
                ("web1", Verdict::Synced),
                ("web2", Verdict::OutOfSync(paths(&["/etc/a", "/etc/b"]))),
                (
                    "web3",
                    Verdict::Error(
                        "failed: PLAY RECAP counts failed=1 unreachable=0 \
                         (no failure line was printed)"
                            .to_owned()
                    )
                ),
            ]
        );
    }

    #[test]
    fn contradictory_or_unknown_markers_are_errors() {
        let host = |status: &str, files: &[&str]| HostOutput {
            host: "h".to_owned(),
            drifted_files: Some(paths(files)),
            sync_status: Some(status.to_owned()),
            failure: None,
            recap: None,
        };
        assert!(
            matches!(host("SYNCED", &["/etc/a"]).verdict(), Verdict::Error(m) if m.contains("DRIFTED_FILES=/etc/a"))
        );
        assert!(
            matches!(host("DRIFTING", &[]).verdict(), Verdict::Error(m) if m.contains("\"DRIFTING\""))
        );
        assert_eq!(
            host("OUT_OF_SYNC", &[]).verdict(),
            Verdict::OutOfSync(Vec::new())
        );
        let seed_without_status = HostOutput {
            sync_status: None,
            ..host("", &["/etc/a"])
        };
        assert_eq!(
            seed_without_status.verdict(),
            Verdict::OutOfSync(paths(&["/etc/a"]))
        );
    }
}
