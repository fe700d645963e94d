//! The reads behind `/api/stats` (`crate::store::stats`), on PostgreSQL, in one read transaction.

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::stats::{StatsInput, StatsRequest};
use crate::store::StoreError;
use crate::store::stats;
use crate::store::stats::StatsPath;
use crate::timestamp::Timestamp;

/// What `/api/stats` needs of the matching targets, sorted by repo then server.
pub async fn input(
    connection: &mut PgConnection,
    request: &StatsRequest,
    now: Timestamp,
    path: StatsPath,
) -> Result<StatsInput, StoreError> {
    // A transaction object, not `begin` and `rollback` statements: a request dropped half way
    // (client gone, request timeout) must not hand its connection back to the pool still open.
    let mut transaction = connection
        .begin_with("begin isolation level repeatable read read only")
        .await?;
    let result = stats::input(&mut *transaction, request, now, path).await;
    transaction.rollback().await?;
    result
}
