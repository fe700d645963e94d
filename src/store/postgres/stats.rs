//! The reads behind `/api/stats` (`crate::store::stats`), on PostgreSQL, in one read transaction.

use sqlx::postgres::PgConnection;

use crate::stats::{StatsRequest, TargetHistory};
use crate::store::StoreError;
use crate::store::stats;

/// Every matching target's history over the window, sorted by repo then server.
pub async fn histories(
    connection: &mut PgConnection,
    request: &StatsRequest,
) -> Result<Vec<TargetHistory>, StoreError> {
    sqlx::query("begin isolation level repeatable read read only")
        .execute(&mut *connection)
        .await?;
    let result = stats::histories(connection, request).await;
    sqlx::query("rollback").execute(&mut *connection).await?;
    result
}
