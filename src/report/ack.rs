//! `report ack` and `report unack`: a CI job that opens a hotfix accepts its target's drift until
//! a given time (`POST /api/acks`), and may end that acknowledgement early
//! (`DELETE /api/acks/{id}`). The acknowledgement goes to stdout as the server returned it, one
//! JSON object; what happens goes to stderr.

use reqwest::{Method, Url};
use serde::Serialize;
use serde_json::Value;

use super::Outcome;
use super::args::{AckArgs, UnackArgs};
use super::send::{Attempt, Sender};
use crate::timestamp::Timestamp;

/// The body of `POST /api/acks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AckRequest {
    pub repo: String,
    pub server: String,
    pub reason: String,
    /// Resolved once, so every retry asks for the same instant.
    pub until: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
}

impl AckRequest {
    /// The request `args` describe, a duration counted from `now`.
    pub fn new(args: &AckArgs, now: Timestamp) -> Self {
        let trimmed = |value: &Option<String>| value.as_deref().unwrap_or("").trim().to_owned();
        Self {
            repo: trimmed(&args.repo),
            server: trimmed(&args.server),
            reason: args.reason.clone(),
            until: args.until.at(now),
            files: (!args.files.is_empty()).then(|| args.files.clone()),
        }
    }

    /// True when `ack` (from `GET /api/acks`) is the one this request makes: after an attempt
    /// whose answer was lost, the server may have recorded it.
    fn made(&self, ack: &Value) -> bool {
        let files = match &self.files {
            Some(files) => Value::from(files.clone()),
            None => Value::Null,
        };
        ack["repo"] == self.repo.as_str()
            && ack["server"] == self.server.as_str()
            && ack["reason"] == self.reason.as_str()
            && ack["until"] == self.until.to_string().as_str()
            && ack["files"] == files
    }
}

/// `report ack`: makes the acknowledgement and maps the result to an exit code.
pub async fn run_ack(args: AckArgs) -> Outcome {
    if let Some(outcome) = refuse_missing(args.missing()) {
        return outcome;
    }
    let Some(sender) = Sender::for_delivery(&args.delivery) else {
        return Outcome::NotRecorded;
    };
    let request = AckRequest::new(&args, Timestamp::now());
    let target = format!("{}/{}", request.repo, request.server);
    let url = sender.url("/api/acks");
    eprintln!(
        "Acknowledging the drift of {target} until {} at {url}...",
        request.until
    );
    let body = serde_json::to_vec(&request).unwrap_or_default();
    let made = sender
        .with_retries(
            |note| eprintln!("  {target}: {note}"),
            async |attempt| {
                if attempt > 1 {
                    if let Some(ack) = recorded_earlier(&sender, &request).await {
                        return Attempt::Done((ack, true));
                    }
                }
                sender
                    .exchange(Method::POST, &url, Some(&body))
                    .await
                    .map(|reply| (Answer::from(reply.text), false))
            },
        )
        .await;
    match made {
        Ok((
            Answer {
                text: printed,
                value: ack,
            },
            earlier,
        )) => {
            println!("{printed}");
            let earlier = if earlier {
                " (recorded by an earlier attempt)"
            } else {
                ""
            };
            eprintln!(
                "  {target}: acknowledgement {} until {} by {}{earlier}",
                ack["id"],
                plain(&ack["until"]),
                plain(&ack["by"])
            );
            Outcome::Recorded
        }
        Err(error) => {
            eprintln!("  {target}: error: {error}");
            Outcome::NotRecorded
        }
    }
}

/// `report unack ID`: ends the acknowledgement and says how it ended.
pub async fn run_unack(args: UnackArgs) -> Outcome {
    if let Some(outcome) = refuse_missing(args.missing()) {
        return outcome;
    }
    let Some(sender) = Sender::for_delivery(&args.delivery) else {
        return Outcome::NotRecorded;
    };
    let id = args.id;
    let url = sender.url(&format!("/api/acks/{id}"));
    eprintln!("Ending acknowledgement {id} at {url}...");
    let ended = sender
        .with_retries(
            |note| eprintln!("  acknowledgement {id}: {note}"),
            async |_| sender.exchange(Method::DELETE, &url, None).await,
        )
        .await;
    if let Err(error) = ended {
        eprintln!("  acknowledgement {id}: error: {error}");
        return Outcome::NotRecorded;
    }
    // Deleting one that had ended already also answers 204: the record says how it ended.
    match read(&sender, &url).await {
        Some(Answer {
            text: printed,
            value: ack,
        }) => {
            println!("{printed}");
            eprintln!(
                "  acknowledgement {id} of {}/{}: ended ({}) at {}",
                plain(&ack["repo"]),
                plain(&ack["server"]),
                plain(&ack["end_reason"]),
                plain(&ack["ended_at"])
            );
        }
        None => eprintln!("  acknowledgement {id}: ended"),
    }
    Outcome::Recorded
}

/// Says why a run cannot start, one `error:` line per missing setting.
fn refuse_missing(missing: Vec<String>) -> Option<Outcome> {
    if missing.is_empty() {
        return None;
    }
    for line in missing {
        eprintln!("error: {line}");
    }
    Some(Outcome::BadConfig)
}

/// The target's acknowledgement in force, when it is the one `request` makes.
async fn recorded_earlier(sender: &Sender, request: &AckRequest) -> Option<Answer> {
    let mut url = sender.url("/api/acks");
    url.query_pairs_mut()
        .append_pair("repo", &request.repo)
        .append_pair("server", &request.server)
        .append_pair("active", "true")
        .append_pair("limit", "1");
    let Value::Array(mut acks) = read(sender, &url).await?.value else {
        return None;
    };
    let newest = acks.pop()?;
    request
        .made(&newest)
        .then(|| Answer::from(newest.to_string()))
}

/// One GET; `None` when it fails in any way.
async fn read(sender: &Sender, url: &Url) -> Option<Answer> {
    match sender.exchange(Method::GET, url, None).await {
        Attempt::Done(reply) => Some(Answer::from(reply.text)),
        _ => None,
    }
}

/// A JSON answer: printed as the server wrote it, read through `value`.
#[derive(Debug)]
struct Answer {
    text: String,
    value: Value,
}

impl From<String> for Answer {
    fn from(text: String) -> Self {
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            text: text.trim().to_owned(),
            value,
        }
    }
}

/// A JSON string as its text, anything else as JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Json;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use serde_json::json;

    use super::*;
    use crate::report::args::{Delivery, Until, status_endpoint};

    fn args(until: Until, files: &[&str]) -> AckArgs {
        AckArgs {
            delivery: Delivery {
                url: None,
                token: None,
                timeout: Duration::from_secs(10),
                retries: 3,
            },
            repo: Some(" rsyslog ".to_owned()),
            server: Some("lab".to_owned()),
            reason: "INC-1".to_owned(),
            until,
            files: files.iter().map(|file| (*file).to_owned()).collect(),
        }
    }

    #[test]
    fn the_body_names_until_as_the_server_writes_it_and_files_only_when_given() {
        let now = Timestamp::from_millis(1_776_767_400_000);
        let request = AckRequest::new(&args(Until::In(Duration::from_secs(86_400)), &[]), now);
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"repo": "rsyslog", "server": "lab", "reason": "INC-1",
                   "until": "2026-04-22T10:30:00.000Z"})
        );
        let request = AckRequest::new(
            &args(
                Until::At(Timestamp::parse_rfc3339("2026-05-01T12:00:00+02:00").unwrap()),
                &["rsyslog.d/*"],
            ),
            now,
        );
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"repo": "rsyslog", "server": "lab", "reason": "INC-1",
                   "until": "2026-05-01T10:00:00.000Z", "files": ["rsyslog.d/*"]})
        );
    }

    #[test]
    fn an_earlier_attempt_is_recognised_by_what_it_asked_for() {
        let now = Timestamp::from_millis(1_776_767_400_000);
        let request = AckRequest::new(&args(Until::In(Duration::from_secs(3600)), &["a*"]), now);
        let stored = json!({"id": 7, "repo": "rsyslog", "server": "lab", "reason": "INC-1",
                            "by": "ci", "files": ["a*"], "until": "2026-04-21T11:30:00.000Z"});
        assert!(request.made(&stored));
        let mut other = stored.clone();
        other["files"] = Value::Null;
        assert!(!request.made(&other));
        let mut other = stored;
        other["until"] = json!("2026-04-21T11:30:00.001Z");
        assert!(!request.made(&other));
    }

    /// A server that records the first acknowledgement but whose answer is lost (a 503), and
    /// that lists what it recorded; returns its URL and the bodies POSTed.
    async fn lossy_server() -> (Url, Arc<Mutex<Vec<Value>>>) {
        let posted: Arc<Mutex<Vec<Value>>> = Arc::default();
        let list = posted.clone();
        let record = posted.clone();
        let app = axum::Router::new().route(
            "/api/acks",
            axum::routing::post(async move |Json(body): Json<Value>| {
                record.lock().unwrap().push(body);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "0")],
                    "busy",
                )
                    .into_response()
            })
            .get(async move || {
                let mut acks: Vec<Value> = list.lock().unwrap().iter().take(1).cloned().collect();
                for ack in &mut acks {
                    ack["id"] = json!(7);
                    ack["by"] = json!("ci");
                    ack["files"] = ack.get("files").cloned().unwrap_or(Value::Null);
                }
                Json(acks)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (status_endpoint(&url).unwrap(), posted)
    }

    #[tokio::test]
    async fn a_retry_finds_the_acknowledgement_its_lost_attempt_recorded() {
        let (url, posted) = lossy_server().await;
        let mut args = args(Until::In(Duration::from_secs(3600)), &["rsyslog.d/*"]);
        args.delivery.url = Some(url);
        assert_eq!(run_ack(args).await, Outcome::Recorded);
        assert_eq!(
            posted.lock().unwrap().len(),
            1,
            "posted once, found on retry"
        );
    }
}
