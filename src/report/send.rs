//! Talks to the server for the `report` client: a timeout per attempt, bounded retries with
//! exponential backoff on connection errors, timeouts and 5xx (honouring `Retry-After`), never on
//! 4xx. Snapshots go to `/api/status`; the other operations to its sibling endpoints.

use std::time::Duration;

use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use super::args::{Delivery, api_url};
use super::payload::Report;
use crate::flag_values::Secret;

/// The longest `Retry-After` the client waits; a server asking for more is given up on.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The longest pause between two attempts when the server names none.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Sends snapshots (and acknowledgements) to one server.
#[derive(Debug)]
pub struct Sender {
    client: reqwest::Client,
    endpoint: Url,
    token: Option<Secret>,
    retries: u32,
    first_backoff: Duration,
}

/// The server recorded the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub status: u16,
    /// The server had it already (a retry whose first attempt was committed).
    pub replayed: bool,
    pub snapshot_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A 4xx: retrying the same body cannot help.
    #[error("rejected with HTTP {status}: {detail}")]
    Rejected { status: u16, detail: String },
    #[error("not recorded after {attempts} attempt(s): {last}")]
    GaveUp { attempts: u32, last: String },
}

/// A 2xx answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

/// How one attempt ended.
#[derive(Debug)]
pub enum Attempt<T> {
    Done(T),
    /// A 4xx: the same request cannot succeed later.
    Rejected {
        status: u16,
        detail: String,
    },
    /// Worth another try: a connection error, a timeout or a 5xx.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
}

impl<T> Attempt<T> {
    pub fn map<U>(self, done: impl FnOnce(T) -> U) -> Attempt<U> {
        match self {
            Self::Done(value) => Attempt::Done(done(value)),
            Self::Rejected { status, detail } => Attempt::Rejected { status, detail },
            Self::Retry { reason, after } => Attempt::Retry { reason, after },
        }
    }
}

impl Sender {
    /// `endpoint` is the server's `POST /api/status` URL (see `args::status_endpoint`).
    pub fn new(
        endpoint: &Url,
        token: Option<Secret>,
        timeout: Duration,
        retries: u32,
    ) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!(
                "gitops-status-server-report/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self {
            client,
            endpoint: endpoint.clone(),
            token,
            retries,
            first_backoff: Duration::from_secs(1),
        })
    }

    /// The sender `delivery` describes, or `None` after saying on stderr why there is none.
    pub fn for_delivery(delivery: &Delivery) -> Option<Self> {
        let Some(endpoint) = &delivery.url else {
            eprintln!("error: no server URL (--url / GITOPS_STATUS_SERVER_URL)");
            return None;
        };
        let token = delivery.token.clone();
        match Self::new(endpoint, token, delivery.timeout, delivery.retries) {
            Ok(sender) => Some(sender),
            Err(error) => {
                eprintln!("error: cannot set up the HTTP client: {error}");
                None
            }
        }
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// The server's endpoint at `path` (`/api/acks`), beside `/api/status` under the same base.
    pub fn url(&self, path: &str) -> Url {
        api_url(&self.endpoint, path)
    }

    /// POSTs `report`, retrying what may succeed later; `note` hears about every retry.
    pub async fn send(
        &self,
        report: &Report,
        note: impl FnMut(&str),
    ) -> Result<Delivered, SendError> {
        let body = serde_json::to_vec(report).unwrap_or_default();
        self.with_retries(note, async |_| {
            self.exchange(Method::POST, &self.endpoint, Some(&body))
                .await
                .map(|reply| delivered(&reply))
        })
        .await
    }

    /// Runs `attempt` (given its number, from 1) until it is done, rejected, or out of retries,
    /// pausing between attempts as the server asks or with a growing backoff; `note` hears about
    /// every retry.
    pub async fn with_retries<T>(
        &self,
        mut note: impl FnMut(&str),
        mut attempt: impl AsyncFnMut(u32) -> Attempt<T>,
    ) -> Result<T, SendError> {
        let mut number = 0;
        loop {
            number += 1;
            let (reason, after) = match attempt(number).await {
                Attempt::Done(done) => return Ok(done),
                Attempt::Rejected { status, detail } => {
                    return Err(SendError::Rejected { status, detail });
                }
                Attempt::Retry { reason, after } => (reason, after),
            };
            if number > self.retries {
                return Err(SendError::GaveUp {
                    attempts: number,
                    last: reason,
                });
            }
            let wait = match after {
                Some(after) if after > MAX_RETRY_AFTER => {
                    return Err(SendError::GaveUp {
                        attempts: number,
                        last: format!(
                            "{reason}; the server asks to retry after {}s, longer than the {}s \
                             this client waits",
                            after.as_secs(),
                            MAX_RETRY_AFTER.as_secs()
                        ),
                    });
                }
                Some(after) => after,
                None => backoff(self.first_backoff, number),
            };
            note(&format!(
                "{reason}; retrying in {}s (attempt {} of {})",
                wait.as_secs_f64(),
                number + 1,
                self.retries + 1
            ));
            tokio::time::sleep(wait).await;
        }
    }

    /// One request, with a JSON `body` when given, and the bearer token when there is one.
    pub async fn exchange(&self, method: Method, url: &Url, body: Option<&[u8]>) -> Attempt<Reply> {
        let mut request = self.client.request(method, url.clone());
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Retry {
                    reason: describe_transport_error(&error),
                    after: None,
                };
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => {
                return Attempt::Retry {
                    reason: format!(
                        "HTTP {}: {}",
                        status.as_u16(),
                        describe_transport_error(&error)
                    ),
                    after: None,
                };
            }
        };
        if status.is_success() {
            return Attempt::Done(Reply {
                status,
                headers,
                text,
            });
        }
        let detail = problem_detail(&text);
        if status.is_server_error() {
            return Attempt::Retry {
                reason: format!("HTTP {}: {detail}", status.as_u16()),
                after: retry_after(&headers, OffsetDateTime::now_utc()),
            };
        }
        Attempt::Rejected {
            status: status.as_u16(),
            detail,
        }
    }

    #[cfg(test)]
    fn with_first_backoff(mut self, first_backoff: Duration) -> Self {
        self.first_backoff = first_backoff;
        self
    }
}

fn delivered(reply: &Reply) -> Delivered {
    let replayed = reply
        .headers
        .get("idempotent-replayed")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("true"));
    let snapshot_id = serde_json::from_str::<Value>(&reply.text)
        .ok()
        .and_then(|snapshot| snapshot.get("id").and_then(Value::as_i64));
    Delivered {
        status: reply.status.as_u16(),
        replayed,
        snapshot_id,
    }
}

/// The pause before retry `attempt` + 1: `first`, then doubling, at most `MAX_BACKOFF`.
fn backoff(first: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    first.saturating_mul(factor).min(MAX_BACKOFF)
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn retry_after(headers: &HeaderMap, now: OffsetDateTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = OffsetDateTime::parse(value, &Rfc2822).ok()?;
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

/// A problem+json body in one line: `detail` and each `errors[]` entry; other bodies shortened.
pub fn problem_detail(text: &str) -> String {
    let Ok(problem) = serde_json::from_str::<Value>(text) else {
        let text = text.trim();
        return if text.is_empty() {
            "(empty body)".to_owned()
        } else {
            text.chars().take(500).collect()
        };
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(detail) = problem
        .get("detail")
        .or_else(|| problem.get("title"))
        .and_then(Value::as_str)
    {
        parts.push(detail.to_owned());
    }
    for error in problem
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = error.get("field").and_then(Value::as_str).unwrap_or("?");
        let message = error.get("message").and_then(Value::as_str).unwrap_or("?");
        parts.push(format!("{field}: {message}"));
    }
    if parts.is_empty() {
        problem.to_string()
    } else {
        parts.join("; ")
    }
}

fn describe_transport_error(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's own Display hides the cause (refused, DNS, TLS); the source chain names it.
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes.dedup();
    if causes.is_empty() {
        format!("{what}: {error}")
    } else {
        format!("{what}: {}", causes.join(": "))
    }
}

#[cfg(test)]
mod tests {
    //! The real server cannot be made to answer 5xx or stall on demand, so these tests put a
    //! scripted stand-in on a real TCP port; the end-to-end test covers the real server.

    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus};
    use axum::response::IntoResponse;
    use serde_json::json;

    use super::*;
    use crate::model::SyncStatus;
    use crate::timestamp::Timestamp;

    type Scripted = (u16, Vec<(&'static str, &'static str)>, &'static str);
    /// The `Authorization` header and body of one request.
    type Seen = (Option<String>, Vec<u8>);

    #[derive(Clone, Default)]
    struct Stand {
        replies: Arc<Mutex<Vec<Scripted>>>,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    /// A server that answers each POST with the next scripted reply; returns its endpoint.
    async fn stand_in(replies: Vec<Scripted>, delay: Duration) -> (Url, Stand) {
        let stand = Stand {
            replies: Arc::new(Mutex::new(replies.into_iter().rev().collect())),
            ..Stand::default()
        };
        let handler_stand = stand.clone();
        let app = Router::new().route(
            "/base/api/status",
            axum::routing::post(move |headers: AxumHeaders, body: axum::body::Bytes| {
                let stand = handler_stand.clone();
                async move {
                    tokio::time::sleep(delay).await;
                    let auth = headers
                        .get("authorization")
                        .map(|value| value.to_str().unwrap().to_owned());
                    stand.seen.lock().unwrap().push((auth, body.to_vec()));
                    let (status, headers, body) = stand
                        .replies
                        .lock()
                        .unwrap()
                        .pop()
                        .expect("a scripted reply");
                    let mut reply =
                        (AxumStatus::from_u16(status).unwrap(), body.to_owned()).into_response();
                    for (name, value) in headers {
                        reply.headers_mut().insert(name, value.parse().unwrap());
                    }
                    reply
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/base/api/status", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (Url::parse(&url).unwrap(), stand)
    }

    fn report() -> Report {
        Report {
            repo: "rsyslog".to_owned(),
            server: "rsyslog-lab".to_owned(),
            sync_status: SyncStatus::Synced,
            drift_count: 0,
            files: Vec::new(),
            last_check: Timestamp::from_millis(1_776_767_400_000),
            revision: None,
            run_url: None,
            message: None,
            note: None,
        }
    }

    fn sender(url: &Url, timeout: Duration, retries: u32) -> Sender {
        Sender::new(url, Some("s3cret".parse().unwrap()), timeout, retries)
            .unwrap()
            .with_first_backoff(Duration::from_millis(10))
    }

    const PROBLEM: &str = r#"{"type":"/problems/unavailable","title":"Service Unavailable","status":503,"detail":"the database is busy"}"#;

    #[tokio::test]
    async fn retries_5xx_with_the_same_body_until_recorded() {
        let (url, stand) = stand_in(
            vec![
                (
                    503,
                    vec![
                        ("retry-after", "0"),
                        ("content-type", "application/problem+json"),
                    ],
                    PROBLEM,
                ),
                (502, vec![], "bad gateway"),
                (200, vec![("idempotent-replayed", "true")], r#"{"id": 7}"#),
            ],
            Duration::ZERO,
        )
        .await;
        let mut notes = Vec::new();
        let delivered = sender(&url, Duration::from_secs(5), 3)
            .send(&report(), |note| notes.push(note.to_owned()))
            .await;
        assert_eq!(
            delivered,
            Ok(Delivered {
                status: 200,
                replayed: true,
                snapshot_id: Some(7)
            })
        );
        assert_eq!(
            notes,
            [
                "HTTP 503: the database is busy; retrying in 0s (attempt 2 of 4)",
                "HTTP 502: bad gateway; retrying in 0.02s (attempt 3 of 4)",
            ]
        );
        let seen = stand.seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        let expected = serde_json::to_vec(&report()).unwrap();
        for (auth, body) in seen.iter() {
            assert_eq!(auth.as_deref(), Some("Bearer s3cret"));
            assert_eq!(body, &expected, "every attempt sends the same last_check");
        }
    }

    #[tokio::test]
    async fn never_retries_a_4xx_and_names_the_bad_fields() {
        let problem = r#"{"type":"/problems/validation","title":"Unprocessable Entity","status":422,"detail":"the snapshot is invalid","errors":[{"field":"repo","message":"must not contain control characters"}]}"#;
        let (url, stand) = stand_in(vec![(422, vec![], problem)], Duration::ZERO).await;
        let result = sender(&url, Duration::from_secs(5), 3)
            .send(&report(), |note| panic!("no retry expected: {note}"))
            .await;
        assert_eq!(
            result,
            Err(SendError::Rejected {
                status: 422,
                detail: "the snapshot is invalid; repo: must not contain control characters"
                    .to_owned()
            })
        );
        assert_eq!(stand.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_retry_after_beyond_the_limit_is_given_up_at_once() {
        let (url, stand) = stand_in(
            vec![(503, vec![("retry-after", "3600")], PROBLEM)],
            Duration::ZERO,
        )
        .await;
        let result = sender(&url, Duration::from_secs(5), 3)
            .send(&report(), |note| panic!("no retry expected: {note}"))
            .await;
        let Err(SendError::GaveUp { attempts: 1, last }) = result else {
            panic!("{result:?}");
        };
        assert!(last.contains("retry after 3600s"), "{last}");
        assert_eq!(stand.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_slow_server_times_out_and_a_closed_port_exhausts_the_retries() {
        let (url, _stand) = stand_in(vec![(200, vec![], "{}")], Duration::from_secs(5)).await;
        let result = sender(&url, Duration::from_millis(200), 0)
            .send(&report(), |_| {})
            .await;
        let Err(SendError::GaveUp { attempts: 1, last }) = result else {
            panic!("{result:?}");
        };
        assert!(last.starts_with("timed out"), "{last}");

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/", closed.local_addr().unwrap())).unwrap();
        drop(closed);
        let mut notes = 0;
        let result = sender(&url, Duration::from_secs(5), 2)
            .send(&report(), |_| notes += 1)
            .await;
        let Err(SendError::GaveUp { attempts: 3, last }) = result else {
            panic!("{result:?}");
        };
        assert!(last.starts_with("cannot connect"), "{last}");
        assert!(last.to_lowercase().contains("refused"), "{last}");
        assert_eq!(notes, 2);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let first = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=7).map(|n| backoff(first, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = OffsetDateTime::parse("Thu, 26 Nov 2026 14:00:00 +0000", &Rfc2822).unwrap();
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, value.parse().unwrap());
            headers
        };
        assert_eq!(
            retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers("Thu, 26 Nov 2026 14:00:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&headers("Thu, 26 Nov 2026 13:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn problem_details_in_one_line() {
        assert_eq!(problem_detail(PROBLEM), "the database is busy");
        assert_eq!(problem_detail(""), "(empty body)");
        assert_eq!(problem_detail("<html>oops</html>"), "<html>oops</html>");
        assert_eq!(problem_detail(&json!({"a": 1}).to_string()), r#"{"a":1}"#);
    }
}
