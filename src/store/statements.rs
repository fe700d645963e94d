//! Signed head statements in the database: reading every chain's head in one consistent read,
//! storing the signed statement as the next of the one chain of statements, listing them, and
//! checking them against the chains (`verify --public-key`). The same SQL on both stores; on
//! SQLite the one short insert goes through a reader connection, as the notifications' do.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;

use crate::chain::{self, Hash};
use crate::signing::{
    BadStatement, HeadStatement, SignedHead, SignedStatement, StatementKey, StatementsVerification,
};
use crate::store::{ConnectError, DatabaseKind, DatabaseUrl, Store, StoreError};
use crate::timestamp::Timestamp;

/// Every target's recorded chain head (the writer keeps it in the transaction that extends the
/// chain). Sorted in Rust, bytewise: PostgreSQL's collation may not be.
const TARGET_HEADS_SQL: &str =
    "select repo, server, head_id, head_hash from targets where head_id is not null";
/// The fleet chain's newest event: served by the primary key, walking back from the end.
const FLEET_HEAD_SQL: &str =
    "select id, hash from events where target_id is null order by id desc limit 1";
const RECORDS_SQL: &str = "select (select count(*) from snapshots) + (select count(*) from events)";
const LATEST_SQL: &str = "select seq, at, body, hash, signature, public_key from head_statements order by seq desc limit 1";
const INSERT_SQL: &str = "insert into head_statements (seq, at, body, hash, signature, public_key) \
     values ($1, $2, $3, $4, $5, $6)";
/// A page of statements after seq `$1`, at most `$2`.
const PAGE_SQL: &str = "select seq, at, body, hash, signature, public_key from head_statements \
     where seq > $1 order by seq limit $2";
/// A record by id, with its chain's names (null on the fleet chain) and its stored hash.
const RECORD_SQL: &str = "select t.repo, t.server, s.hash from snapshots s \
     join targets t on t.id = s.target_id where s.id = $1 \
     union all select t.repo, t.server, e.hash from events e \
     left join targets t on t.id = e.target_id where e.id = $1";
/// The retention checkpoint of a target (`$1`, `$2`) nearest before id `$3`.
const CHECKPOINT_BEFORE_SQL: &str = "select c.target_id, c.after_id, c.resume_hash \
     from chain_checkpoints c join targets t on t.id = c.target_id \
     where t.repo = $1 and t.server = $2 and c.after_id < $3 order by c.after_id desc limit 1";
/// Records of target `$1` retained strictly between ids `$2` and `$3`.
const RETAINED_BETWEEN_SQL: &str = "select (select count(*) from snapshots where target_id = $1 \
     and id > $2 and id < $3) + (select count(*) from events where target_id = $1 and id > $2 \
     and id < $3)";

/// Targets an evidence file may hold: `$1` repo and `$2` server, null for any.
const EVIDENCE_TARGETS_SQL: &str = "select id, repo, server from targets \
     where ($1 is null or repo = $1) and ($2 is null or server = $2)";
/// The first and last id and the latest reception of a target's (`$1`) snapshots checked in
/// `[$2, $3)`: one range of snapshots_target_time.
const SELECTED_SNAPSHOTS_SQL: &str = "select min(id), max(id), max(last_check + received_delay) \
     from snapshots where target_id = $1 and last_check >= $2 and last_check < $3";
/// The same for a target's events that took effect in `[$2, $3)`.
const SELECTED_EVENTS_SQL: &str =
    "select min(id), max(id), max(at) from events where target_id = $1 and at >= $2 and at < $3";
/// The record of target `$1` just before id `$2`, snapshot or event.
const RECORD_BEFORE_SQL: &str = "select id, hash from (select id, hash from snapshots \
     where target_id = $1 and id < $2 order by id desc limit 1) s union all \
     select id, hash from (select id, hash from events where target_id = $1 and id < $2 \
     order by id desc limit 1) e order by id desc limit 1";
const CHECKPOINT_AT_SQL: &str =
    "select resume_hash from chain_checkpoints where target_id = $1 and after_id = $2";
/// A target's (`$1`) checkpoints after records `$2` up to before `$3`.
const CHECKPOINTS_IN_SQL: &str = "select after_id, resume_hash from chain_checkpoints \
     where target_id = $1 and after_id >= $2 and after_id < $3 order by after_id";
/// A target's (`$1`) events after id `$2` up to `$3`, the first `$4`.
const EVENTS_RANGE_SQL: &str = "select id, kind, at, body, hash from events \
     where target_id = $1 and id > $2 and id <= $3 order by id limit $4";
/// The statements made at or after `$1`, after seq `$2`, the first `$3`.
const STATEMENTS_SINCE_SQL: &str = "select seq, at, body, hash, signature, public_key \
     from head_statements where at >= $1 and seq > $2 order by seq limit $3";

/// A target an evidence file may hold.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EvidenceTarget {
    pub id: i64,
    pub repo: String,
    pub server: String,
}

/// A record of a target's chain, as an evidence file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainRecord {
    Snapshot(crate::model::Snapshot),
    Event {
        id: i64,
        kind: String,
        at: Timestamp,
        body: String,
        hash: Vec<u8>,
    },
}

impl ChainRecord {
    pub fn id(&self) -> i64 {
        match self {
            Self::Snapshot(snapshot) => snapshot.id,
            Self::Event { id, .. } => *id,
        }
    }
}

/// A `head_statements` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StatementRow {
    pub seq: i64,
    pub at: i64,
    pub body: String,
    pub hash: Vec<u8>,
    pub signature: Vec<u8>,
    pub public_key: Vec<u8>,
}

impl StatementRow {
    /// The stored statement, or what is wrong with its text.
    pub fn signed(&self) -> Result<SignedStatement, String> {
        let statement = HeadStatement::parse(&self.body)?;
        Ok(SignedStatement {
            statement,
            text: self.body.clone(),
            hash: chain::from_bytes(&self.hash).unwrap_or([0; 32]),
            signature: self.signature.clone(),
            public_key: self.public_key.clone(),
        })
    }
}

/// What a statement is made of, read in one transaction.
#[derive(Debug)]
struct HeadsRead {
    records: i64,
    heads: Vec<SignedHead>,
    fleet: Option<(i64, Hash)>,
    latest: Option<StatementRow>,
}

/// How a signed head stands against the stored chain.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HeadFound {
    /// A record of that chain with that id is stored, with this hash.
    Stored(Option<Vec<u8>>),
    /// A record with that id is stored on another chain.
    Elsewhere {
        repo: String,
        server: String,
    },
    /// No record with that id is stored, and it lay in a gap retention cut (after the
    /// target's nearest checkpoint, before the next retained record).
    Pruned,
    Missing,
}

/// The queries of this module on one database's connection type, as a module of async
/// functions: `$begin` opens the consistent read.
macro_rules! statement_queries {
    ($module:ident, $connection:ty, $begin:literal) => {
        mod $module {
            use super::*;

            pub async fn read_heads(
                connection: &mut $connection,
            ) -> Result<HeadsRead, StoreError> {
                sqlx::query($begin).execute(&mut *connection).await?;
                let read = async {
                    let rows: Vec<(String, String, i64, Option<Vec<u8>>)> =
                        sqlx::query_as(TARGET_HEADS_SQL)
                            .fetch_all(&mut *connection)
                            .await?;
                    let mut heads = rows
                        .into_iter()
                        .map(|(repo, server, id, hash)| {
                            let hash = hash.as_deref().and_then(chain::from_bytes).ok_or_else(
                                || {
                                    StoreError::corrupt(format!(
                                        "target {repo}/{server}: its recorded head hash is not 32 bytes"
                                    ))
                                },
                            )?;
                            Ok(SignedHead {
                                repo,
                                server,
                                id,
                                hash,
                            })
                        })
                        .collect::<Result<Vec<_>, StoreError>>()?;
                    heads.sort_by(|a, b| (&a.repo, &a.server).cmp(&(&b.repo, &b.server)));
                    let fleet: Option<(i64, Vec<u8>)> = sqlx::query_as(FLEET_HEAD_SQL)
                        .fetch_optional(&mut *connection)
                        .await?;
                    let fleet = match fleet {
                        Some((id, hash)) => Some((
                            id,
                            chain::from_bytes(&hash).ok_or_else(|| {
                                StoreError::corrupt(format!("event {id}: its hash is not 32 bytes"))
                            })?,
                        )),
                        None => None,
                    };
                    let records: i64 = sqlx::query_scalar(RECORDS_SQL)
                        .fetch_one(&mut *connection)
                        .await?;
                    let latest: Option<StatementRow> = sqlx::query_as(LATEST_SQL)
                        .fetch_optional(&mut *connection)
                        .await?;
                    Ok::<_, StoreError>(HeadsRead {
                        records,
                        heads,
                        fleet,
                        latest,
                    })
                }
                .await;
                sqlx::query("rollback").execute(&mut *connection).await?;
                read
            }

            pub async fn insert(
                connection: &mut $connection,
                signed: &SignedStatement,
            ) -> Result<(), StoreError> {
                sqlx::query(INSERT_SQL)
                    .bind(signed.statement.seq)
                    .bind(signed.statement.at.as_millis())
                    .bind(&signed.text)
                    .bind(signed.hash.as_slice())
                    .bind(signed.signature.as_slice())
                    .bind(signed.public_key.as_slice())
                    .execute(&mut *connection)
                    .await?;
                Ok(())
            }

            pub async fn page(
                connection: &mut $connection,
                after: i64,
                limit: i64,
            ) -> Result<Vec<StatementRow>, StoreError> {
                Ok(sqlx::query_as(PAGE_SQL)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&mut *connection)
                    .await?)
            }

            pub async fn evidence_targets(
                connection: &mut $connection,
                repo: Option<&str>,
                server: Option<&str>,
            ) -> Result<Vec<EvidenceTarget>, StoreError> {
                Ok(sqlx::query_as(EVIDENCE_TARGETS_SQL)
                    .bind(repo)
                    .bind(server)
                    .fetch_all(&mut *connection)
                    .await?)
            }

            /// `(first id, last id, latest reception)` of the records selected in `[from, to)`.
            pub async fn selected_span(
                connection: &mut $connection,
                target: i64,
                from: i64,
                to: i64,
            ) -> Result<Option<(i64, i64, i64)>, StoreError> {
                let mut span: Option<(i64, i64, i64)> = None;
                for sql in [SELECTED_SNAPSHOTS_SQL, SELECTED_EVENTS_SQL] {
                    let row: (Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(sql)
                        .bind(target)
                        .bind(from)
                        .bind(to)
                        .fetch_one(&mut *connection)
                        .await?;
                    if let (Some(first), Some(last), Some(at)) = row {
                        span = Some(match span {
                            None => (first, last, at),
                            Some((a, b, c)) => (a.min(first), b.max(last), c.max(at)),
                        });
                    }
                }
                Ok(span)
            }

            /// What the target's record `first` links to: its predecessor's hash, or the
            /// checkpoint of the gap before it; `None` for the chain's first record.
            pub async fn previous_hash(
                connection: &mut $connection,
                target: i64,
                first: i64,
            ) -> Result<Option<Vec<u8>>, StoreError> {
                let before: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(RECORD_BEFORE_SQL)
                    .bind(target)
                    .bind(first)
                    .fetch_optional(&mut *connection)
                    .await?;
                let after_id = before.as_ref().map_or(0, |(id, _)| *id);
                let checkpoint: Option<Vec<u8>> = sqlx::query_scalar(CHECKPOINT_AT_SQL)
                    .bind(target)
                    .bind(after_id)
                    .fetch_optional(&mut *connection)
                    .await?;
                Ok(checkpoint.or(before.and_then(|(_, hash)| hash)))
            }

            pub async fn checkpoints_in(
                connection: &mut $connection,
                target: i64,
                from_id: i64,
                to_id: i64,
            ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
                Ok(sqlx::query_as(CHECKPOINTS_IN_SQL)
                    .bind(target)
                    .bind(from_id)
                    .bind(to_id)
                    .fetch_all(&mut *connection)
                    .await?)
            }

            /// The target's records after id `after` up to `upto`, the first `limit` by id.
            pub async fn records(
                connection: &mut $connection,
                target: i64,
                after: i64,
                upto: i64,
                limit: i64,
            ) -> Result<Vec<ChainRecord>, StoreError> {
                let sql = format!(
                    "{} from snapshots s join targets t on t.id = s.target_id \
                     left join filesets f on f.id = s.fileset_id where s.target_id = $1 \
                     and s.id > $2 and s.id <= $3 order by s.id limit $4",
                    crate::store::sql::SNAPSHOT_COLUMNS
                );
                let rows = sqlx::query(&sql)
                    .bind(target)
                    .bind(after)
                    .bind(upto)
                    .bind(limit)
                    .fetch_all(&mut *connection)
                    .await?;
                let mut records = rows
                    .iter()
                    .map(|row| {
                        crate::store::sql::snapshot_from_row(row).map(ChainRecord::Snapshot)
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()?;
                let events: Vec<(i64, String, i64, String, Vec<u8>)> =
                    sqlx::query_as(EVENTS_RANGE_SQL)
                        .bind(target)
                        .bind(after)
                        .bind(upto)
                        .bind(limit)
                        .fetch_all(&mut *connection)
                        .await?;
                records.extend(events.into_iter().map(|(id, kind, at, body, hash)| {
                    ChainRecord::Event {
                        id,
                        kind,
                        at: Timestamp::from_millis(at),
                        body,
                        hash,
                    }
                }));
                records.sort_by_key(ChainRecord::id);
                records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                Ok(records)
            }

            pub async fn statements_since(
                connection: &mut $connection,
                at: i64,
                after_seq: i64,
                limit: i64,
            ) -> Result<Vec<StatementRow>, StoreError> {
                Ok(sqlx::query_as(STATEMENTS_SINCE_SQL)
                    .bind(at)
                    .bind(after_seq)
                    .bind(limit)
                    .fetch_all(&mut *connection)
                    .await?)
            }

            /// Checks every statement in seq order, a page at a time.
            pub async fn verify(
                connection: &mut $connection,
                key: &VerifyingKey,
            ) -> Result<StatementsVerification, StoreError> {
                let mut checker = StatementChecker::new(key);
                let mut after = 0;
                'pages: loop {
                    let rows = page(connection, after, 100).await?;
                    let Some(last) = rows.last() else { break };
                    after = last.seq;
                    for row in &rows {
                        let Some(heads) = checker.statement(row) else {
                            break 'pages;
                        };
                        for head in heads {
                            let found = find_head(
                                connection,
                                head.repo.as_deref(),
                                head.server.as_deref(),
                                head.id,
                            )
                            .await?;
                            if !checker.head(row.seq, &head, found) {
                                break 'pages;
                            }
                        }
                    }
                }
                Ok(checker.finish())
            }

            pub async fn find_head(
                connection: &mut $connection,
                repo: Option<&str>,
                server: Option<&str>,
                id: i64,
            ) -> Result<HeadFound, StoreError> {
                let rows: Vec<(Option<String>, Option<String>, Option<Vec<u8>>)> =
                    sqlx::query_as(RECORD_SQL)
                        .bind(id)
                        .fetch_all(&mut *connection)
                        .await?;
                if let Some((stored_repo, stored_server, hash)) = rows.into_iter().next() {
                    if stored_repo.as_deref() == repo && stored_server.as_deref() == server {
                        return Ok(HeadFound::Stored(hash));
                    }
                    return Ok(HeadFound::Elsewhere {
                        repo: stored_repo.unwrap_or_default(),
                        server: stored_server.unwrap_or_default(),
                    });
                }
                let (Some(repo), Some(server)) = (repo, server) else {
                    return Ok(HeadFound::Missing);
                };
                let checkpoint: Option<(i64, i64, Vec<u8>)> = sqlx::query_as(CHECKPOINT_BEFORE_SQL)
                    .bind(repo)
                    .bind(server)
                    .bind(id)
                    .fetch_optional(&mut *connection)
                    .await?;
                let Some((target, after, resume)) = checkpoint else {
                    return Ok(HeadFound::Missing);
                };
                let between: i64 = sqlx::query_scalar(RETAINED_BETWEEN_SQL)
                    .bind(target)
                    .bind(after)
                    .bind(id)
                    .fetch_one(&mut *connection)
                    .await?;
                Ok(if between == 0 && resume.len() == 32 {
                    HeadFound::Pruned
                } else {
                    HeadFound::Missing
                })
            }
        }
    };
}

statement_queries!(on_sqlite, sqlx::SqliteConnection, "begin");
statement_queries!(
    on_postgres,
    sqlx::PgConnection,
    "begin isolation level repeatable read read only"
);

/// Runs `$body` with `$connection` a connection of either database (`$module` its queries).
macro_rules! on_connection {
    ($store:expr, $module:ident, $connection:ident => $body:expr) => {
        match $store {
            Store::Sqlite(store) => {
                let mut held = store.readers().acquire().await?;
                let $connection = &mut *held;
                use on_sqlite as $module;
                $body
            }
            Store::Postgres(store) => {
                let mut held = store.pool().acquire().await?;
                let $connection = &mut *held;
                use on_postgres as $module;
                $body
            }
        }
    };
}

/// Attempts at extending the chain of statements when other replicas keep winning the race.
const SIGN_ATTEMPTS: usize = 5;

impl Store {
    /// Signs every chain's head as the next statement, unless (with `unless_since`) a statement
    /// was already made at or after that time, by this replica or another; then `None`.
    pub async fn sign_heads(
        &self,
        key: &StatementKey,
        unless_since: Option<Timestamp>,
    ) -> Result<Option<SignedStatement>, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let read =
                on_connection!(self, queries, connection => queries::read_heads(connection).await?);
            if let (Some(since), Some(latest)) = (unless_since, &read.latest) {
                if latest.at >= since.as_millis() {
                    return Ok(None);
                }
            }
            let statement = HeadStatement {
                seq: read.latest.as_ref().map_or(1, |latest| latest.seq + 1),
                at: Timestamp::now(),
                records: read.records,
                previous: read
                    .latest
                    .as_ref()
                    .map(|latest| chain::from_bytes(&latest.hash).unwrap_or([0; 32])),
                heads: read.heads,
                fleet: read.fleet,
            };
            let signed = key.sign(&statement);
            let inserted = on_connection!(self, queries, connection => queries::insert(connection, &signed).await);
            match inserted {
                Ok(()) => return Ok(Some(signed)),
                // Another replica took this seq: sign again on top of its statement.
                Err(StoreError::Conflict(_)) if attempt < SIGN_ATTEMPTS => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// At most `limit` statements after seq `after`, by seq.
    pub async fn statements(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StatementRow>, StoreError> {
        on_connection!(self, queries, connection => queries::page(connection, after, limit).await)
    }

    /// Targets matching the evidence selection, sorted by repo then server (bytewise).
    pub async fn evidence_targets(
        &self,
        repo: Option<&str>,
        server: Option<&str>,
    ) -> Result<Vec<EvidenceTarget>, StoreError> {
        let mut targets = on_connection!(self, queries, connection => queries::evidence_targets(connection, repo, server).await)?;
        targets.sort_by(|a, b| (&a.repo, &a.server).cmp(&(&b.repo, &b.server)));
        Ok(targets)
    }

    /// `(first id, last id, latest reception)` of a target's records selected in `[from, to)`.
    pub async fn evidence_span(
        &self,
        target: i64,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Option<(i64, i64, i64)>, StoreError> {
        on_connection!(self, queries, connection => queries::selected_span(connection, target, from.as_millis(), to.as_millis()).await)
    }

    /// What the target's record `first` links to (`None`: the chain's first record).
    pub async fn evidence_previous(
        &self,
        target: i64,
        first: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        on_connection!(self, queries, connection => queries::previous_hash(connection, target, first).await)
    }

    /// The target's checkpoints after records `from_id..to_id`.
    pub async fn evidence_checkpoints(
        &self,
        target: i64,
        from_id: i64,
        to_id: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        on_connection!(self, queries, connection => queries::checkpoints_in(connection, target, from_id, to_id).await)
    }

    /// The target's records after id `after` up to `upto`, the first `limit`.
    pub async fn evidence_records(
        &self,
        target: i64,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<ChainRecord>, StoreError> {
        on_connection!(self, queries, connection => queries::records(connection, target, after, upto, limit).await)
    }

    /// Whether the target's record `id` is stored, whatever its hash: a signed head an evidence
    /// file can link to (retention may have removed it since; a rewritten one is for the file's
    /// check to name).
    pub async fn head_is_stored(
        &self,
        repo: &str,
        server: &str,
        id: i64,
    ) -> Result<bool, StoreError> {
        let found = on_connection!(self, queries, connection => queries::find_head(connection, Some(repo), Some(server), id).await)?;
        Ok(matches!(found, HeadFound::Stored(_)))
    }

    /// Statements made at or after `at`, after seq `after_seq`, the first `limit`.
    pub async fn statements_since(
        &self,
        at: Timestamp,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StatementRow>, StoreError> {
        on_connection!(self, queries, connection => queries::statements_since(connection, at.as_millis(), after_seq, limit).await)
    }

    /// Checks every statement: signed by `key`, one chain, and every head it signs on the
    /// stored chains (docs/audit.md, "Head statements").
    pub async fn verify_statements(
        &self,
        key: &VerifyingKey,
    ) -> Result<StatementsVerification, StoreError> {
        on_connection!(self, queries, connection => queries::verify(connection, key).await)
    }
}

/// A head a statement signs, the fleet chain's with no repo or server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HeadToCheck {
    repo: Option<String>,
    server: Option<String>,
    id: i64,
    hash: Hash,
}

impl HeadToCheck {
    fn chain(&self) -> String {
        match (&self.repo, &self.server) {
            (Some(repo), Some(server)) => format!("{repo}/{server}"),
            _ => "the fleet chain".to_owned(),
        }
    }
}

/// Checks statements in seq order; the store looks up the heads it asks about.
#[derive(Debug)]
struct StatementChecker<'k> {
    key: &'k VerifyingKey,
    previous: Option<(i64, Hash)>,
    /// The heads already found on the chains, by chain: a head unchanged since an earlier
    /// statement is not looked up again.
    seen: HashMap<(Option<String>, Option<String>), (i64, Hash)>,
    checked: i64,
    heads_checked: i64,
    pruned: i64,
    latest: Option<(i64, Timestamp)>,
    first_bad: Option<BadStatement>,
}

impl<'k> StatementChecker<'k> {
    fn new(key: &'k VerifyingKey) -> Self {
        Self {
            key,
            previous: None,
            seen: HashMap::new(),
            checked: 0,
            heads_checked: 0,
            pruned: 0,
            latest: None,
            first_bad: None,
        }
    }

    fn bad(&mut self, seq: i64, reason: String, head: Option<&HeadToCheck>) {
        self.first_bad = Some(BadStatement {
            seq,
            reason,
            repo: head.and_then(|head| head.repo.clone()),
            server: head.and_then(|head| head.server.clone()),
            id: head.map(|head| head.id),
        });
    }

    /// Checks a statement on its own and against the one before; the heads to look up, or
    /// `None` once one is bad.
    fn statement(&mut self, row: &StatementRow) -> Option<Vec<HeadToCheck>> {
        self.checked += 1;
        let signed = match row.signed() {
            Ok(signed) => signed,
            Err(error) => {
                self.bad(
                    row.seq,
                    format!(
                        "statement {}: its text is not a head statement: {error}",
                        row.seq
                    ),
                    None,
                );
                return None;
            }
        };
        let statement = &signed.statement;
        let reason = if statement.seq != row.seq || statement.at.as_millis() != row.at {
            Some("its seq or time columns differ from its signed text".to_owned())
        } else {
            signed.check(self.key).err()
        }
        .or_else(|| match (self.previous, statement.previous) {
            (None, None) if statement.seq == 1 => None,
            (None, _) => Some(format!(
                "statements before {} are missing: the first stored statement must be 1 and \
                 link to none",
                statement.seq
            )),
            (Some((seq, hash)), Some(previous)) if statement.seq == seq + 1 && previous == hash => {
                None
            }
            (Some((seq, _)), _) => Some(format!(
                "it does not follow statement {seq}: a statement between them was removed, or \
                 one of them was replaced"
            )),
        });
        if let Some(reason) = reason {
            self.bad(row.seq, format!("statement {}: {reason}", row.seq), None);
            return None;
        }
        self.previous = Some((statement.seq, signed.hash));
        self.latest = Some((statement.seq, statement.at));
        let heads = statement
            .heads
            .iter()
            .map(|head| HeadToCheck {
                repo: Some(head.repo.clone()),
                server: Some(head.server.clone()),
                id: head.id,
                hash: head.hash,
            })
            .chain(statement.fleet.map(|(id, hash)| HeadToCheck {
                repo: None,
                server: None,
                id,
                hash,
            }))
            .filter(|head| {
                self.seen.get(&(head.repo.clone(), head.server.clone()))
                    != Some(&(head.id, head.hash))
            })
            .collect();
        Some(heads)
    }

    /// Judges one signed head by what the store found; false once it is bad.
    fn head(&mut self, seq: i64, head: &HeadToCheck, found: HeadFound) -> bool {
        self.heads_checked += 1;
        let signed = hex::encode(head.hash);
        let chain = head.chain();
        let reason = match found {
            HeadFound::Stored(Some(hash)) if hash == head.hash => None,
            HeadFound::Stored(stored) => Some(format!(
                "statement {seq} signed record {id} of {chain} with hash {signed}, but the stored \
                 record has hash {stored}: the history up to that record was rewritten after the \
                 statement was signed (re-hashing every later record does not help: the signed \
                 hash is what the chain must still end in)",
                id = head.id,
                stored = stored.map_or("none".to_owned(), hex::encode),
            )),
            HeadFound::Elsewhere { repo, server } => Some(format!(
                "statement {seq} signed record {id} as the head of {chain}, but record {id} is \
                 stored on {other}: it was moved",
                id = head.id,
                other = if repo.is_empty() {
                    "the fleet chain".to_owned()
                } else {
                    format!("{repo}/{server}")
                }
            )),
            HeadFound::Pruned => {
                self.pruned += 1;
                None
            }
            HeadFound::Missing => Some(format!(
                "statement {seq} signed record {id} as the head of {chain} (hash {signed}), but no \
                 such record is stored and no retention checkpoint covers it: it was removed",
                id = head.id,
            )),
        };
        match reason {
            Some(reason) => {
                self.bad(seq, reason, Some(head));
                false
            }
            None => {
                self.seen.insert(
                    (head.repo.clone(), head.server.clone()),
                    (head.id, head.hash),
                );
                true
            }
        }
    }

    fn finish(mut self) -> StatementsVerification {
        if self.checked == 0 {
            self.bad(
                0,
                "no head statement is stored: a server with --signing-key signs one when it \
                 starts, so they were never made here or were deleted"
                    .to_owned(),
                None,
            );
        }
        StatementsVerification {
            ok: self.first_bad.is_none(),
            public_key: hex::encode(self.key.as_bytes()),
            checked: self.checked,
            heads_checked: self.heads_checked,
            pruned_heads: self.pruned,
            latest_seq: self.latest.map(|(seq, _)| seq),
            latest_at: self.latest.map(|(_, at)| at),
            first_bad: self.first_bad,
        }
    }
}

impl Store {
    /// Checks the statements of the database at `url` through one read-only connection, as
    /// `verify` reads the chains: no migration, no writer.
    pub async fn verify_statements_database(
        url: &str,
        key: &VerifyingKey,
    ) -> Result<StatementsVerification, ConnectError> {
        use std::str::FromStr;
        use std::time::Duration;

        let url = DatabaseUrl::parse(url)?;
        match url.kind() {
            DatabaseKind::Sqlite { path } => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(url.as_str())?
                    .read_only(true)
                    .busy_timeout(Duration::from_secs(5));
                let mut connection =
                    <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
                        .await
                        .map_err(|error| {
                            super::sqlite::open_failure(path, super::sqlite::Access::Read, error)
                        })?;
                let verification = on_sqlite::verify(&mut connection, key).await?;
                let _ = sqlx::Connection::close(connection).await;
                Ok(verification)
            }
            DatabaseKind::Postgres => {
                let options = sqlx::postgres::PgConnectOptions::from_str(url.as_str())?
                    .application_name("gitops-status-server verify")
                    .options([("default_transaction_read_only", "on")]);
                let mut connection = super::postgres::connect_once(&options).await?;
                let verification = on_postgres::verify(&mut connection, key).await?;
                let _ = sqlx::Connection::close(connection).await;
                Ok(verification)
            }
        }
    }
}
