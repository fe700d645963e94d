//! Verification of an SQLite history at the speed of the file: one read-only connection of its
//! own on a blocking thread, in one read transaction, every row's columns borrowed straight from
//! SQLite into the chain encoding. Through sqlx each row crossed to the async side as an owned
//! row; here nothing per snapshot is allocated but the stored hash. Snapshots and events are
//! read by two cursors in id order and merged, so each target's chain comes out in order and
//! memory stays flat.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::chain::{ChainFields, EventFields, Verification};
use crate::model::SyncStatus;
use crate::store::StoreError;
use crate::store::audit::{
    ACKS_SQL, AckRow, CHECKPOINTS_SQL, EVENTS_SQL, SILENCES_SQL, SilenceRow,
    TARGETS_BEFORE_LIFECYCLE_SQL, TARGETS_SQL, TargetHead, Verifier, canonical_files,
    checkpoint_map,
};
use crate::timestamp::Timestamp;

/// What verification reads of a snapshot, column for column, in arrival order.
const CHAIN_ROWS_SQL: &str = "select id, target_id, sync_status, drift_count, fileset_id, \
     last_check, received_delay, revision, run_url, message, stale_after, hash \
     from snapshots order by id";

/// Recomputes every chain in the database file at `path` and names the first record (by id)
/// whose stored hash does not follow, or row that disagrees with the chain. Memory follows the
/// number of targets, file sets, acknowledgements and silences, not the length of the history.
pub async fn verify(path: PathBuf) -> Result<Verification, StoreError> {
    tokio::task::spawn_blocking(move || verify_file(&path))
        .await
        .map_err(|error| StoreError::corrupt(format!("the verification task failed: {error}")))?
}

fn verify_file(path: &Path) -> Result<Verification, StoreError> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(read_error)?;
    connection
        .busy_timeout(Duration::from_secs(5))
        .map_err(read_error)?;
    // One snapshot of the file for every read below: heads, checkpoints and rows agree.
    connection.execute_batch("begin").map_err(read_error)?;
    let verification = verify_in_transaction(&connection).map_err(read_error);
    let _ = connection.execute_batch("rollback");
    verification?
}

fn verify_in_transaction(
    connection: &Connection,
) -> Result<Result<Verification, StoreError>, rusqlite::Error> {
    let lifecycle: bool = connection.query_row(HAS_LIFECYCLE_SQL, [], |row| row.get(0))?;
    let checkpoints = connection
        .prepare(CHECKPOINTS_SQL)?
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let targets_sql = if lifecycle {
        TARGETS_SQL
    } else {
        TARGETS_BEFORE_LIFECYCLE_SQL
    };
    let targets: Vec<TargetHead> = connection
        .prepare(targets_sql)?
        .query_map([], |row| {
            Ok(TargetHead {
                id: row.get(0)?,
                repo: row.get(1)?,
                server: row.get(2)?,
                head_id: row.get(3)?,
                head_hash: row.get(4)?,
                ack_id: row.get(5)?,
                retired_at: row.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let names: HashMap<i64, (String, String)> = targets
        .iter()
        .map(|target| (target.id, (target.repo.clone(), target.server.clone())))
        .collect();
    let mut verifier = Verifier::new(checkpoint_map(checkpoints), targets);
    let filesets = match canonical_filesets(connection)? {
        Ok(filesets) => filesets,
        Err(error) => return Ok(Err(error)),
    };

    // Two cursors in id order, merged: each target's snapshots and events form its chain.
    let mut events_statement = if lifecycle {
        Some(connection.prepare(EVENTS_SQL)?)
    } else {
        None
    };
    let mut events = events_statement
        .as_mut()
        .map(|statement| statement.query([]))
        .transpose()?;
    let mut next_event = read_event(&mut events)?;
    let mut statement = connection.prepare(CHAIN_ROWS_SQL)?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        while let Some(event) = next_event.take_if(|event| event.id < id) {
            push_event(&mut verifier, &names, event);
            next_event = read_event(&mut events)?;
        }
        let target_id: i64 = row.get(1)?;
        // As the inner join of the reads: a row whose target is gone is not the target's.
        let Some((repo, server)) = names.get(&target_id) else {
            continue;
        };
        let code: i64 = row.get(2)?;
        let Some(sync_status) = SyncStatus::from_code(code) else {
            return Ok(Err(StoreError::corrupt(format!(
                "snapshot {id}: unknown sync_status code {code}"
            ))));
        };
        let last_check: i64 = row.get(5)?;
        let received_delay: i64 = row.get(6)?;
        let fileset_id: Option<i64> = row.get(4)?;
        let fields = ChainFields {
            id,
            repo,
            server,
            sync_status,
            drift_count: row.get(3)?,
            files_json: fileset_id
                .and_then(|id| filesets.get(&id))
                .map_or("[]", String::as_str),
            last_check: Timestamp::from_millis(last_check),
            received_at: Timestamp::from_millis(last_check + received_delay),
            revision: row.get_ref(7)?.as_str_or_null()?,
            run_url: row.get_ref(8)?.as_str_or_null()?,
            message: row.get_ref(9)?.as_str_or_null()?,
            stale_after_seconds: row.get(10)?,
        };
        let stored = row.get_ref(11)?.as_blob_or_null()?.map(<[u8]>::to_vec);
        verifier.push_fields(target_id, &fields, stored);
    }
    drop(rows);
    while let Some(event) = next_event.take() {
        push_event(&mut verifier, &names, event);
        next_event = read_event(&mut events)?;
    }
    drop(events);

    if lifecycle {
        let mut acks = connection.prepare(ACKS_SQL)?;
        let mut rows = acks.query([])?;
        while let Some(row) = rows.next()? {
            verifier.check_ack(AckRow {
                id: row.get(0)?,
                target_id: row.get(1)?,
                reason: row.get(2)?,
                by: row.get(3)?,
                files: row.get(4)?,
                created_at: row.get(5)?,
                until: row.get(6)?,
                ended_at: row.get(7)?,
                end_reason: row.get(8)?,
                ended_by: row.get(9)?,
            });
        }
        let mut silences = connection.prepare(SILENCES_SQL)?;
        let mut rows = silences.query([])?;
        while let Some(row) = rows.next()? {
            verifier.check_silence(SilenceRow {
                id: row.get(0)?,
                repos: row.get(1)?,
                servers: row.get(2)?,
                starts_at: row.get(3)?,
                ends_at: row.get(4)?,
                reason: row.get(5)?,
                by: row.get(6)?,
                created_at: row.get(7)?,
                deleted_at: row.get(8)?,
                deleted_by: row.get(9)?,
            });
        }
    }
    Ok(Ok(verifier.finish()))
}

/// Whether the database has the lifecycle tables (migration 0003): a backup from before them
/// verifies as it did.
const HAS_LIFECYCLE_SQL: &str =
    "select exists (select 1 from sqlite_master where type = 'table' and name = 'events')";

/// An event as the merge holds it: owned, since events are few beside snapshots.
#[derive(Debug)]
struct EventRow {
    id: i64,
    target_id: Option<i64>,
    kind: String,
    at: i64,
    body: String,
    hash: Option<Vec<u8>>,
}

/// The next event of `EVENTS_SQL`, if any (none without the lifecycle tables).
fn read_event(rows: &mut Option<rusqlite::Rows<'_>>) -> Result<Option<EventRow>, rusqlite::Error> {
    let Some(rows) = rows else {
        return Ok(None);
    };
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    Ok(Some(EventRow {
        id: row.get(0)?,
        target_id: row.get(1)?,
        kind: row.get(2)?,
        at: row.get(3)?,
        body: row.get(4)?,
        hash: row.get_ref(5)?.as_blob_or_null()?.map(<[u8]>::to_vec),
    }))
}

/// Checks an event: of its target's chain (skipped, as the snapshots' inner join skips them,
/// when its target is gone), or of the fleet chain.
fn push_event(verifier: &mut Verifier, names: &HashMap<i64, (String, String)>, event: EventRow) {
    let (target, repo, server) = match event.target_id {
        None => (None, None, None),
        Some(target) => match names.get(&target) {
            Some((repo, server)) => (Some(target), Some(repo.as_str()), Some(server.as_str())),
            None => return,
        },
    };
    let fields = EventFields {
        id: event.id,
        repo,
        server,
        kind: &event.kind,
        at: Timestamp::from_millis(event.at),
        body: &event.body,
    };
    verifier.push_event(target, &fields, event.hash);
}

/// Every file set's names as the chain encodes them, by id: read and re-encoded once, however
/// many snapshots share them, so a stored set is checked by what it says, not by how its JSON is
/// spaced.
fn canonical_filesets(
    connection: &Connection,
) -> Result<Result<HashMap<i64, String>, StoreError>, rusqlite::Error> {
    let mut filesets = HashMap::new();
    let mut statement = connection.prepare("select id, files from filesets")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        match canonical_files(id, row.get_ref(1)?.as_str()?) {
            Ok(files) => filesets.insert(id, files),
            Err(error) => return Ok(Err(error)),
        };
    }
    Ok(Ok(filesets))
}

/// A failed read in the store's terms: a busy or unreachable file is unavailable for now (503),
/// anything else is an error of the database.
fn read_error(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::OutOfMemory,
        ) => StoreError::Unavailable(error.to_string()),
        _ => StoreError::corrupt(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::chain::{self, Hash, RecordKind};

    const MIGRATIONS: [&str; 3] = [
        include_str!("../../../migrations/sqlite/0001_init.sql"),
        include_str!("../../../migrations/sqlite/0002_audit_chain.sql"),
        include_str!("../../../migrations/sqlite/0003_lifecycle.sql"),
    ];

    /// A database file with the first `migrations` applied, and its chains' heads so far.
    struct File {
        _dir: tempfile::TempDir,
        path: PathBuf,
        connection: Connection,
        heads: HashMap<Option<i64>, Hash>,
    }

    impl File {
        fn new(migrations: usize) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("verify.db");
            let connection = Connection::open(&path).unwrap();
            for migration in &MIGRATIONS[..migrations] {
                connection.execute_batch(migration).unwrap();
            }
            connection
                .execute_batch(
                    "insert into targets (id, repo, server) values (1, 'r', 'a'), (2, 'r', 'b')",
                )
                .unwrap();
            Self {
                _dir: dir,
                path,
                connection,
                heads: HashMap::new(),
            }
        }

        fn snapshot(&mut self, id: i64, target: i64) {
            let server = if target == 1 { "a" } else { "b" };
            let fields = ChainFields {
                id,
                repo: "r",
                server,
                sync_status: SyncStatus::Synced,
                drift_count: 0,
                files_json: "[]",
                last_check: Timestamp::from_millis(id * 1000),
                received_at: Timestamp::from_millis(id * 1000),
                revision: None,
                run_url: None,
                message: None,
                stale_after_seconds: None,
            };
            let hash = chain::link_fields(&fields, self.heads.get(&Some(target)), &mut Vec::new());
            self.connection
                .execute(
                    "insert into snapshots (id, target_id, last_check, received_delay, \
                     sync_status, drift_count, change, hash) values (?1, ?2, ?3, 0, 0, 0, 0, ?4)",
                    params![id, target, id * 1000, &hash[..]],
                )
                .unwrap();
            self.heads.insert(Some(target), hash);
        }

        /// An event of a kind no row the API reads depends on (as a newer server's would be).
        fn event(&mut self, id: i64, target: Option<i64>) {
            let server = target.map(|target| if target == 1 { "a" } else { "b" });
            let body = r#"{"snapshot":null}"#;
            let fields = EventFields {
                id,
                repo: server.map(|_| "r"),
                server,
                kind: "note",
                at: Timestamp::from_millis(id * 1000),
                body,
            };
            let hash = chain::link_event(&fields, self.heads.get(&target), &mut Vec::new());
            self.connection
                .execute(
                    "insert into events (id, target_id, kind, at, body, hash) \
                     values (?1, ?2, 'note', ?3, ?4, ?5)",
                    params![id, target, id * 1000, body, &hash[..]],
                )
                .unwrap();
            self.heads.insert(target, hash);
        }

        fn verify(&self) -> Verification {
            verify_file(&self.path).unwrap()
        }
    }

    #[test]
    fn the_two_cursors_merge_each_targets_snapshots_and_events_in_id_order() {
        let mut file = File::new(3);
        // Events before the first snapshot, between, in runs, and after the last.
        file.event(1, None);
        file.snapshot(2, 1);
        file.event(3, Some(1));
        file.event(4, Some(1));
        file.snapshot(5, 2);
        file.event(6, None);
        file.snapshot(7, 1);
        file.event(8, Some(2));
        file.snapshot(9, 2);
        file.event(10, Some(1));
        file.event(11, None);
        let verification = file.verify();
        assert_eq!(
            verification,
            Verification {
                ok: true,
                checked: 11,
                first_bad: None,
                statements: None
            }
        );

        // Each record checked in its place: an event edited after the last snapshot, then one
        // between two snapshots of its target.
        file.connection
            .execute("update events set at = at + 1 where id = 10", [])
            .unwrap();
        let bad = file.verify().first_bad.unwrap();
        assert_eq!((bad.id, bad.kind.as_deref()), (10, Some("note")));
        file.connection
            .execute(
                "update events set body = '{\"snapshot\":1}' where id = 4",
                [],
            )
            .unwrap();
        assert_eq!(file.verify().first_bad.unwrap().id, 4);
        file.connection
            .execute("delete from events where id = 3", [])
            .unwrap();
        assert_eq!(file.verify().first_bad.unwrap().id, 4);
        file.connection
            .execute("delete from events where id in (4, 10)", [])
            .unwrap();
        let bad = file.verify().first_bad.unwrap();
        assert_eq!(
            (bad.id, bad.record),
            (7, RecordKind::Snapshot),
            "{}",
            bad.reason
        );
    }

    #[test]
    fn an_event_whose_target_is_gone_is_no_chains() {
        let mut file = File::new(3);
        file.snapshot(1, 1);
        file.event(2, Some(1));
        file.connection
            .execute_batch(
                "pragma foreign_keys = off; insert into events (id, target_id, kind, at, body, \
                 hash) values (3, 9, 'retire', 0, '{}', x'00')",
            )
            .unwrap();
        assert_eq!(file.verify().checked, 2);
        assert!(file.verify().ok);
    }

    #[test]
    fn a_database_from_before_the_lifecycle_tables_verifies_as_before() {
        let mut file = File::new(2);
        file.snapshot(1, 1);
        file.snapshot(2, 2);
        file.snapshot(3, 1);
        assert_eq!(
            file.verify(),
            Verification {
                ok: true,
                checked: 3,
                first_bad: None,
                statements: None
            }
        );
        file.connection
            .execute("update snapshots set drift_count = 1 where id = 3", [])
            .unwrap();
        assert_eq!(file.verify().first_bad.unwrap().id, 3);
    }
}
