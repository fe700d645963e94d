//! Verification of an SQLite history at the speed of the file: one read-only connection of its
//! own on a blocking thread, in one read transaction, every row's columns borrowed straight from
//! SQLite into the chain encoding. Through sqlx each row crossed to the async side as an owned
//! row; here nothing per row is allocated but the stored hash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::chain::{self, ChainFields, Verification};
use crate::model::SyncStatus;
use crate::store::StoreError;
use crate::store::audit::{CHECKPOINTS_SQL, TargetHead, Verifier, checkpoint_map};
use crate::timestamp::Timestamp;

/// What verification reads of a snapshot, column for column, in arrival order.
const CHAIN_ROWS_SQL: &str = "select id, target_id, sync_status, drift_count, fileset_id, \
     last_check, received_delay, revision, run_url, message, stale_after, hash \
     from snapshots order by id";

/// Recomputes every target's chain in the database file at `path` and names the first snapshot
/// (by id) whose stored hash does not follow. Memory follows the number of targets and file
/// sets, not the length of the history.
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
    let checkpoints = connection
        .prepare(CHECKPOINTS_SQL)?
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut verifier = Verifier::new(checkpoint_map(checkpoints));
    let targets: Vec<TargetHead> = connection
        .prepare("select id, repo, server, head_id, head_hash from targets")?
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let names: HashMap<i64, (&str, &str)> = targets
        .iter()
        .map(|(id, repo, server, _, _)| (*id, (repo.as_str(), server.as_str())))
        .collect();
    let filesets = match canonical_filesets(connection)? {
        Ok(filesets) => filesets,
        Err(error) => return Ok(Err(error)),
    };
    let mut statement = connection.prepare(CHAIN_ROWS_SQL)?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let target_id: i64 = row.get(1)?;
        // As the inner join of the reads: a row whose target is gone is not the target's.
        let Some(&(repo, server)) = names.get(&target_id) else {
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
    Ok(Ok(verifier.finish(targets)))
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
        let names: Vec<String> = match serde_json::from_str(row.get_ref(1)?.as_str()?) {
            Ok(names) => names,
            Err(error) => return Ok(Err(StoreError::corrupt(format!("file set {id}: {error}")))),
        };
        filesets.insert(id, chain::files_json(names.iter().map(String::as_str)));
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
