//! The notify file (`--notify-file`): receivers and the routes that send transitions to them,
//! checked whole at start so a mistake stops the server with one line naming the setting.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use wildmatch::WildMatch;

use crate::model::SyncStatus;

/// The states a route follows when it names none.
const DEFAULT_STATES: [&str; 3] = ["OUT_OF_SYNC", "ERROR", "STALE"];

/// What a receiver understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverKind {
    /// The documented JSON event (`NotificationEvent`), signed when a secret is set.
    Webhook,
    /// A Slack incoming webhook: `{text, blocks}`.
    Slack,
    /// Alertmanager's `POST /api/v2/alerts`.
    Alertmanager,
}

/// Where notifications go.
#[derive(Clone)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    /// Key of the `X-GitOps-Signature` HMAC; never logged.
    pub secret: Option<String>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url.as_str())
            .field("headers", &self.headers.len())
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Which transitions go to a receiver.
#[derive(Debug, Clone)]
pub struct Route {
    /// Index into [`NotifyConfig::receivers`].
    pub receiver: usize,
    pub repos: Vec<WildMatch>,
    pub servers: Vec<WildMatch>,
    pub states: Vec<String>,
    /// Hold-down: a state is notified only once it has lasted this long.
    pub hold: Duration,
    /// Reminder interval while the state lasts (`webhook` and `slack` receivers; see
    /// `notify::remind`). Alertmanager has its own `repeat_interval`.
    pub repeat: Option<Duration>,
}

impl Route {
    pub fn matches(&self, repo: &str, server: &str, state: &str) -> bool {
        self.repos.iter().any(|glob| glob.matches(repo))
            && self.servers.iter().any(|glob| glob.matches(server))
            && self.states.iter().any(|wanted| wanted == state)
    }
}

/// The whole notify file.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    pub receivers: Vec<Receiver>,
    pub routes: Vec<Route>,
}

impl NotifyConfig {
    /// Reads and checks the file; the error is one line starting with `setting`.
    pub fn load(path: &Path, setting: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("{setting}: cannot read {}: {error}", path.display()))?;
        Self::parse(&text).map_err(|cause| {
            format!(
                "{setting}: {} is not a valid notify file: {cause}",
                path.display()
            )
        })
    }

    /// Parses the TOML text; the error names the setting inside the file (`receivers[1].kind`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: NotifyFile =
            toml::from_str(text).map_err(|error| error.message().replace(['\n', '\r'], " "))?;
        let mut config = Self::default();
        for (index, entry) in file.receivers.into_iter().enumerate() {
            let at = |key: &str, problem: String| format!("receivers[{index}].{key}: {problem}");
            let name = entry.name.trim().to_owned();
            if name.is_empty() {
                return Err(at("name", "must not be empty".into()));
            }
            if config.receivers.iter().any(|known| known.name == name) {
                return Err(at("name", format!("{name:?} is already a receiver's name")));
            }
            let kind = match entry.kind.as_str() {
                "webhook" => ReceiverKind::Webhook,
                "slack" => ReceiverKind::Slack,
                "alertmanager" => ReceiverKind::Alertmanager,
                other => {
                    return Err(at(
                        "kind",
                        format!("{other:?} is not one of \"webhook\", \"slack\", \"alertmanager\""),
                    ));
                }
            };
            let url = Url::parse(&entry.url)
                .ok()
                .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
                .ok_or_else(|| at("url", format!("{:?} is not an http(s) URL", entry.url)))?;
            for header in entry.headers.keys() {
                if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(at("headers", format!("{header:?} is not a header name")));
                }
            }
            config.receivers.push(Receiver {
                name,
                kind,
                url,
                headers: entry.headers.into_iter().collect(),
                secret: entry.secret.filter(|secret| !secret.is_empty()),
            });
        }
        for (index, entry) in file.routes.into_iter().enumerate() {
            let at = |key: &str, problem: String| format!("routes[{index}].{key}: {problem}");
            let receiver = config
                .receivers
                .iter()
                .position(|receiver| receiver.name == entry.receiver)
                .ok_or_else(|| {
                    at(
                        "receiver",
                        format!("{:?} is not a receiver's name", entry.receiver),
                    )
                })?;
            let globs = |key: &str, list: Option<Vec<String>>| match list {
                None => Ok(vec![WildMatch::new("*")]),
                Some(list) if list.is_empty() || list.iter().any(|g| g.trim().is_empty()) => {
                    Err(at(
                        key,
                        "must be non-empty glob patterns (\"*\" for all)".into(),
                    ))
                }
                Some(list) => Ok(list
                    .iter()
                    .map(|glob| WildMatch::new(glob.trim()))
                    .collect()),
            };
            let states = match entry.states {
                None => DEFAULT_STATES
                    .iter()
                    .map(|state| (*state).to_owned())
                    .collect(),
                Some(states) => {
                    for state in &states {
                        if state != "STALE" && SyncStatus::parse(state).is_none() {
                            return Err(at(
                                "states",
                                format!(
                                    "{state:?} is not one of \"OUT_OF_SYNC\", \"ERROR\", \"STALE\", \"SYNCED\""
                                ),
                            ));
                        }
                    }
                    states
                }
            };
            let duration = |key: &str, text: &str| {
                humantime::parse_duration(text.trim()).map_err(|error| {
                    at(
                        key,
                        format!("{text:?} is not a duration such as 5m: {error}"),
                    )
                })
            };
            let hold = match &entry.hold {
                Some(text) => duration("for", text)?,
                None => Duration::ZERO,
            };
            let repeat = match &entry.repeat {
                Some(text) => Some(duration("repeat", text)?).filter(|every| !every.is_zero()),
                None => None,
            };
            config.routes.push(Route {
                receiver,
                repos: globs("repos", entry.repos)?,
                servers: globs("servers", entry.servers)?,
                states,
                hold,
                repeat,
            });
        }
        Ok(config)
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|receiver| receiver.name == name)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyFile {
    #[serde(default)]
    receivers: Vec<ReceiverEntry>,
    #[serde(default)]
    routes: Vec<RouteEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverEntry {
    name: String,
    kind: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    receiver: String,
    repos: Option<Vec<String>>,
    servers: Option<Vec<String>>,
    states: Option<Vec<String>>,
    #[serde(rename = "for")]
    hold: Option<String>,
    repeat: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        NotifyConfig::parse(text).unwrap_err()
    }

    #[test]
    fn names_the_bad_setting() {
        let ok = "[[receivers]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x/\"\n";
        assert!(
            error(&format!(
                "{ok}[[receivers]]\nname = \"b\"\nkind = \"pager\"\nurl = \"http://x/\"\n"
            ))
            .starts_with("receivers[1].kind: ")
        );
        assert!(
            error("[[receivers]]\nname = \"a\"\nkind = \"slack\"\nurl = \"nope\"\n")
                .starts_with("receivers[0].url: ")
        );
        assert!(
            error(&format!("{ok}[[routes]]\nreceiver = \"b\"\n"))
                .starts_with("routes[0].receiver: ")
        );
        assert!(
            error(&format!(
                "{ok}[[routes]]\nreceiver = \"a\"\nfor = \"soon\"\n"
            ))
            .starts_with("routes[0].for: ")
        );
        assert!(
            error(&format!(
                "{ok}[[routes]]\nreceiver = \"a\"\ncolour = \"red\"\n"
            ))
            .contains("colour")
        );
    }

    #[test]
    fn routes_default_to_every_target_and_the_bad_states() {
        let config = NotifyConfig::parse(
            "[[receivers]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x/\"\n[[routes]]\nreceiver = \"a\"\nfor = \"5m\"\n",
        )
        .unwrap();
        let route = &config.routes[0];
        assert!(route.matches("any", "host", "STALE"));
        assert!(!route.matches("any", "host", "SYNCED"));
        assert_eq!(route.hold, Duration::from_secs(300));
    }
}
