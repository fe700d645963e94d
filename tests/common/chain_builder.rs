//! Builds a history with chained events straight into a database, hashes computed with the
//! server's own encoding (`chain::link_fields`, `chain::link_event`), for tests of what reads the
//! chain (verify, retention, exports, `migrate-to`) independently of the writers. The rows are
//! what the server stores: snapshots with their file sets and transition flags, events, the
//! `acks` and `silences` rows and `targets.ack_id`/`retired_at` they record, every chain head.

use gitops_status_server::chain::{self, ChainFields, EventFields, Hash};
use gitops_status_server::model::SyncStatus;
use gitops_status_server::timestamp::Timestamp;
use sha2::{Digest, Sha256};

use super::Backend;

/// 2026-01-01T00:00:00Z: times are seconds from here.
pub const T0: i64 = 1_767_225_600_000;

/// `T0 + seconds`, in milliseconds.
pub fn millis(seconds: i64) -> i64 {
    T0 + seconds * 1000
}

/// `T0 + seconds` as the API writes times.
pub fn rfc3339(seconds: i64) -> String {
    Timestamp::from_millis(millis(seconds)).to_string()
}

/// A JSON string literal.
fn js(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// A JSON array of strings.
fn js_list(items: &[&str]) -> String {
    serde_json::to_string(items).unwrap()
}

#[derive(Debug, Clone)]
struct TargetRow {
    repo: String,
    server: String,
    head: Option<(i64, Hash)>,
    ack_id: Option<i64>,
    retired_at: Option<i64>,
    /// `(last_check, sync_status code, fileset id)` of its latest snapshot by last_check.
    latest: Option<(i64, i64, i64, Option<i64>)>,
    /// Where its current run of sync_status began.
    status_since: Option<i64>,
}

#[derive(Debug, Clone)]
struct AckRow {
    id: i64,
    target: i64,
    reason: String,
    by: String,
    files: Option<String>,
    created_at: i64,
    until: i64,
    end: Option<(i64, String, Option<String>)>,
}

#[derive(Debug, Clone)]
struct SilenceRow {
    id: i64,
    repos: String,
    servers: String,
    starts_at: i64,
    ends_at: i64,
    reason: String,
    by: String,
    created_at: i64,
    end: Option<(i64, String)>,
}

/// A history under construction, in arrival (id) order.
#[derive(Debug, Default)]
pub struct ChainBuilder {
    next_id: i64,
    targets: Vec<TargetRow>,
    fleet_head: Option<Hash>,
    filesets: Vec<String>,
    snapshots: Vec<String>,
    events: Vec<String>,
    acks: Vec<AckRow>,
    silences: Vec<SilenceRow>,
    backend: Option<Backend>,
    buffer: Vec<u8>,
}

impl ChainBuilder {
    pub fn new(backend: Backend) -> Self {
        Self {
            next_id: 1,
            backend: Some(backend),
            ..Self::default()
        }
    }

    fn bytes(&self, bytes: &[u8]) -> String {
        match self.backend {
            Some(Backend::Postgres) => format!("'\\x{}'::bytea", hex::encode(bytes)),
            _ => format!("x'{}'", hex::encode(bytes)),
        }
    }

    fn target(&mut self, repo: &str, server: &str) -> i64 {
        let index = match self
            .targets
            .iter()
            .position(|t| t.repo == repo && t.server == server)
        {
            Some(index) => index,
            None => {
                self.targets.push(TargetRow {
                    repo: repo.to_owned(),
                    server: server.to_owned(),
                    head: None,
                    ack_id: None,
                    retired_at: None,
                    latest: None,
                    status_since: None,
                });
                self.targets.len() - 1
            }
        };
        index as i64 + 1
    }

    fn take_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Appends a check of `repo`/`server` at `seconds`, received a second later; checks of one
    /// target must come in `last_check` order. Returns its id.
    pub fn snapshot(
        &mut self,
        repo: &str,
        server: &str,
        seconds: i64,
        status: SyncStatus,
        files: &[&str],
    ) -> i64 {
        let target = self.target(repo, server);
        let id = self.take_id();
        let mut names = files.to_vec();
        names.sort_unstable();
        let files_json = chain::files_json(names.iter().copied());
        let fileset = (!names.is_empty()).then(|| {
            match self.filesets.iter().position(|set| *set == files_json) {
                Some(index) => index as i64 + 1,
                None => {
                    self.filesets.push(files_json.clone());
                    self.filesets.len() as i64
                }
            }
        });
        let last_check = millis(seconds);
        let row = &self.targets[target as usize - 1];
        let change = match row.latest {
            None => 3,
            Some((previous_check, _, previous_status, previous_fileset)) => {
                assert!(previous_check < last_check, "checks of a target in order");
                i64::from(previous_status != status.code())
                    | (i64::from(previous_fileset != fileset) << 1)
            }
        };
        let fields = ChainFields {
            id,
            repo,
            server,
            sync_status: status,
            drift_count: names.len() as i64,
            files_json: &files_json,
            last_check: Timestamp::from_millis(last_check),
            received_at: Timestamp::from_millis(last_check + 1000),
            revision: Some("rev"),
            run_url: None,
            message: None,
            stale_after_seconds: None,
        };
        let previous = row.head.map(|(_, hash)| hash);
        let hash = chain::link_fields(&fields, previous.as_ref(), &mut self.buffer);
        let hash_sql = self.bytes(&hash);
        self.snapshots.push(format!(
            "insert into snapshots (id, target_id, last_check, received_delay, sync_status, \
             drift_count, fileset_id, change, stale_after, revision, run_url, message, hash) \
             values ({id}, {target}, {last_check}, 1000, {}, {}, {}, {change}, null, 'rev', null, \
             null, {hash_sql})",
            status.code(),
            names.len(),
            fileset.map_or("null".to_owned(), |id| id.to_string()),
        ));
        let row = &mut self.targets[target as usize - 1];
        if change & 1 == 1 {
            row.status_since = Some(last_check);
        }
        row.latest = Some((last_check, id, status.code(), fileset));
        row.head = Some((id, hash));
        id
    }

    /// Appends an event with `body` (compact JSON) of `kind` at `at` (ms): on the chain of
    /// `target` (repo, server), or the fleet chain. Returns its id.
    pub fn event(&mut self, target: Option<(&str, &str)>, kind: &str, at: i64, body: &str) -> i64 {
        let target_id = target.map(|(repo, server)| self.target(repo, server));
        let id = self.take_id();
        let fields = EventFields {
            id,
            repo: target.map(|(repo, _)| repo),
            server: target.map(|(_, server)| server),
            kind,
            at: Timestamp::from_millis(at),
            body,
        };
        let previous = match target_id {
            Some(target) => self.targets[target as usize - 1].head.map(|(_, hash)| hash),
            None => self.fleet_head,
        };
        let hash = chain::link_event(&fields, previous.as_ref(), &mut self.buffer);
        let hash_sql = self.bytes(&hash);
        self.events.push(format!(
            "insert into events (id, target_id, kind, at, body, hash) values ({id}, {}, '{kind}', \
             {at}, '{}', {hash_sql})",
            target_id.map_or("null".to_owned(), |id| id.to_string()),
            body.replace('\'', "''"),
        ));
        match target_id {
            Some(target) => self.targets[target as usize - 1].head = Some((id, hash)),
            None => self.fleet_head = Some(hash),
        }
        id
    }

    /// An acknowledgement of the target's drift at `seconds`, until `until` (seconds).
    pub fn ack(
        &mut self,
        (repo, server): (&str, &str),
        seconds: i64,
        reason: &str,
        until: i64,
        files: Option<&[&str]>,
        by: &str,
    ) -> i64 {
        let files = files.map(js_list);
        let body = format!(
            "{{\"reason\":{},\"until\":{},\"files\":{},\"by\":{}}}",
            js(reason),
            js(&rfc3339(until)),
            files.as_deref().unwrap_or("null"),
            js(by)
        );
        let id = self.event(Some((repo, server)), "ack", millis(seconds), &body);
        let target = self.target(repo, server);
        self.acks.push(AckRow {
            id,
            target,
            reason: reason.to_owned(),
            by: by.to_owned(),
            files,
            created_at: millis(seconds),
            until: millis(until),
            end: None,
        });
        self.targets[target as usize - 1].ack_id = Some(id);
        id
    }

    /// The end of acknowledgement `ack` at `seconds`.
    pub fn ack_end(
        &mut self,
        (repo, server): (&str, &str),
        seconds: i64,
        ack: i64,
        reason: &str,
        by: Option<&str>,
        snapshot: Option<i64>,
    ) -> i64 {
        let body = format!(
            "{{\"ack\":{ack},\"reason\":{},\"by\":{},\"snapshot\":{}}}",
            js(reason),
            by.map_or("null".to_owned(), js),
            snapshot.map_or("null".to_owned(), |id| id.to_string())
        );
        let id = self.event(Some((repo, server)), "ack_end", millis(seconds), &body);
        let row = self.acks.iter_mut().find(|row| row.id == ack).unwrap();
        row.end = Some((millis(seconds), reason.to_owned(), by.map(str::to_owned)));
        let target = self.target(repo, server);
        let target = &mut self.targets[target as usize - 1];
        if target.ack_id == Some(ack) {
            target.ack_id = None;
        }
        id
    }

    /// A silence on the fleet chain, made at `seconds`.
    pub fn silence(
        &mut self,
        seconds: i64,
        repos: &[&str],
        servers: &[&str],
        window: (i64, i64),
        reason: &str,
        by: &str,
    ) -> i64 {
        let body = format!(
            "{{\"repos\":{},\"servers\":{},\"starts_at\":{},\"ends_at\":{},\"reason\":{},\"by\":{}}}",
            js_list(repos),
            js_list(servers),
            js(&rfc3339(window.0)),
            js(&rfc3339(window.1)),
            js(reason),
            js(by)
        );
        let id = self.event(None, "silence", millis(seconds), &body);
        self.silences.push(SilenceRow {
            id,
            repos: js_list(repos),
            servers: js_list(servers),
            starts_at: millis(window.0),
            ends_at: millis(window.1),
            reason: reason.to_owned(),
            by: by.to_owned(),
            created_at: millis(seconds),
            end: None,
        });
        id
    }

    /// Silence `silence` deleted early, at `seconds`.
    pub fn silence_end(&mut self, seconds: i64, silence: i64, by: &str) -> i64 {
        let body = format!("{{\"silence\":{silence},\"by\":{}}}", js(by));
        let id = self.event(None, "silence_end", millis(seconds), &body);
        let row = self
            .silences
            .iter_mut()
            .find(|row| row.id == silence)
            .unwrap();
        row.end = Some((millis(seconds), by.to_owned()));
        id
    }

    /// The target retired at `seconds`.
    pub fn retire(&mut self, repo: &str, server: &str, seconds: i64, by: &str) -> i64 {
        let body = format!("{{\"by\":{}}}", js(by));
        let id = self.event(Some((repo, server)), "retire", millis(seconds), &body);
        let target = self.target(repo, server);
        self.targets[target as usize - 1].retired_at = Some(millis(seconds));
        id
    }

    /// The target revived by snapshot `snapshot`, received at `seconds`.
    pub fn revive(&mut self, repo: &str, server: &str, seconds: i64, snapshot: i64) -> i64 {
        let body = format!("{{\"snapshot\":{snapshot}}}");
        let id = self.event(Some((repo, server)), "revive", millis(seconds), &body);
        let target = self.target(repo, server);
        self.targets[target as usize - 1].retired_at = None;
        id
    }

    /// The greatest id given.
    pub fn last_id(&self) -> i64 {
        self.next_id - 1
    }

    /// The statements that store the history in a migrated, empty database.
    pub fn statements(&self) -> Vec<String> {
        let postgres = self.backend == Some(Backend::Postgres);
        let opt = |value: Option<i64>| value.map_or("null".to_owned(), |v| v.to_string());
        let text = |value: Option<&str>| {
            value.map_or("null".to_owned(), |v| {
                format!("'{}'", v.replace('\'', "''"))
            })
        };
        let mut statements = Vec::new();
        for (index, target) in self.targets.iter().enumerate() {
            let (head_id, head_hash) = match target.head {
                Some((id, hash)) => (id.to_string(), self.bytes(&hash)),
                None => ("null".to_owned(), "null".to_owned()),
            };
            let extra = if postgres {
                format!(
                    ", {}, {}",
                    opt(target.latest.map(|(_, id, _, _)| id)),
                    opt(target.status_since)
                )
            } else {
                String::new()
            };
            statements.push(format!(
                "insert into targets (id, repo, server, head_id, head_hash, ack_id, retired_at{}) \
                 values ({}, {}, {}, {head_id}, {head_hash}, {}, {}{extra})",
                if postgres {
                    ", latest_id, status_since"
                } else {
                    ""
                },
                index + 1,
                text(Some(&target.repo)),
                text(Some(&target.server)),
                opt(target.ack_id),
                opt(target.retired_at),
            ));
        }
        for (index, files) in self.filesets.iter().enumerate() {
            let digest: [u8; 32] = Sha256::digest(files.as_bytes()).into();
            statements.push(format!(
                "insert into filesets (id, digest, files) values ({}, {}, {})",
                index + 1,
                self.bytes(&digest),
                text(Some(files))
            ));
        }
        statements.extend(self.snapshots.iter().cloned());
        statements.extend(self.events.iter().cloned());
        for ack in &self.acks {
            let (ended_at, end_reason, ended_by) = match &ack.end {
                Some((at, reason, by)) => (Some(*at), Some(reason.as_str()), by.as_deref()),
                None => (None, None, None),
            };
            statements.push(format!(
                "insert into acks (id, target_id, reason, \"by\", files, created_at, until, \
                 ended_at, end_reason, ended_by) values ({}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                ack.id,
                ack.target,
                text(Some(&ack.reason)),
                text(Some(&ack.by)),
                text(ack.files.as_deref()),
                ack.created_at,
                ack.until,
                opt(ended_at),
                text(end_reason),
                text(ended_by),
            ));
        }
        for silence in &self.silences {
            let (deleted_at, deleted_by) = match &silence.end {
                Some((at, by)) => (Some(*at), Some(by.as_str())),
                None => (None, None),
            };
            statements.push(format!(
                "insert into silences (id, repos, servers, starts_at, ends_at, reason, \"by\", \
                 created_at, deleted_at, deleted_by) values ({}, {}, {}, {}, {}, {}, {}, {}, {}, \
                 {})",
                silence.id,
                text(Some(&silence.repos)),
                text(Some(&silence.servers)),
                silence.starts_at,
                silence.ends_at,
                text(Some(&silence.reason)),
                text(Some(&silence.by)),
                silence.created_at,
                opt(deleted_at),
                text(deleted_by),
            ));
        }
        if postgres {
            statements.push(format!(
                "select setval('snapshots_id_seq', {}, false), \
                 setval(pg_get_serial_sequence('targets', 'id'), {}, false), \
                 setval(pg_get_serial_sequence('filesets', 'id'), {}, false)",
                self.next_id,
                self.targets.len() + 1,
                self.filesets.len() + 1
            ));
        }
        statements
    }
}
