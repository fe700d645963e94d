//! The reads behind `/api/stats` (`crate::store::stats`), on SQLite, in one read transaction.

use sqlx::sqlite::SqliteConnection;

use crate::stats::{StatsInput, StatsRequest};
use crate::store::StoreError;
use crate::store::stats;
use crate::store::stats::StatsPath;
use crate::timestamp::Timestamp;

/// What `/api/stats` needs of the matching targets, sorted by repo then server.
pub async fn input(
    connection: &mut SqliteConnection,
    request: &StatsRequest,
    now: Timestamp,
    path: StatsPath,
) -> Result<StatsInput, StoreError> {
    sqlx::query("begin").execute(&mut *connection).await?;
    let result = stats::input(connection, request, now, path).await;
    sqlx::query("rollback").execute(&mut *connection).await?;
    result
}
