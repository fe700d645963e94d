//! The reads behind `/api/stats` (`crate::store::stats`), on SQLite, in one read transaction.

use sqlx::Connection as _;
use sqlx::sqlite::SqliteConnection;

use crate::stats::{StatsRequest, TargetHistory};
use crate::store::StoreError;
use crate::store::stats;

/// Every matching target's history over the window, sorted by repo then server.
pub async fn histories(
    connection: &mut SqliteConnection,
    request: &StatsRequest,
) -> Result<Vec<TargetHistory>, StoreError> {
    // A transaction object, not `begin` and `rollback` statements: a request dropped half way
    // (client gone, request timeout) must not hand its connection back to the pool still open.
    let mut transaction = connection.begin().await?;
    let result = stats::histories(&mut *transaction, request).await;
    transaction.rollback().await?;
    result
}
