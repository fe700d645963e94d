//! The reads behind `/api/stats` (`crate::store::stats`), on SQLite, in one read transaction.

use sqlx::sqlite::SqliteConnection;

use crate::stats::{StatsRequest, TargetHistory};
use crate::store::StoreError;
use crate::store::stats;

/// Every matching target's history over the window, sorted by repo then server.
pub async fn histories(
    connection: &mut SqliteConnection,
    request: &StatsRequest,
) -> Result<Vec<TargetHistory>, StoreError> {
    sqlx::query("begin").execute(&mut *connection).await?;
    let result = stats::histories(connection, request).await;
    sqlx::query("rollback").execute(&mut *connection).await?;
    result
}
