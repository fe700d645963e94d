//! The reads behind `/api/stats` (`crate::store::stats`), on Postgres, in one read transaction.

use futures_util::TryStreamExt;
use sqlx::postgres::PgConnection;
use sqlx::{Postgres, QueryBuilder};

use crate::stats::{StatsRequest, TargetHistory};
use crate::store::StoreError;
use crate::store::stats::{
    self, BEFORE_SQL, CheckRow, EPISODE_SQL, FILESET_SQL, StatsReads, TransitionRow, WINDOW_SQL,
};

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

impl StatsReads for PgConnection {
    async fn targets(
        &mut self,
        request: &StatsRequest,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let mut targets =
            QueryBuilder::<Postgres>::new("select id, repo, server from targets where 1 = 1");
        if let Some(repo) = &request.repo {
            targets.push(" and repo = ").push_bind(repo.clone());
        }
        if let Some(server) = &request.server {
            targets.push(" and server = ").push_bind(server.clone());
        }
        targets.push(" order by repo, server");
        Ok(targets.build_query_as().fetch_all(self).await?)
    }

    async fn before(&mut self, target: i64, from: i64) -> Result<Option<CheckRow>, StoreError> {
        Ok(sqlx::query_as(BEFORE_SQL)
            .bind(target)
            .bind(from)
            .fetch_optional(self)
            .await?)
    }

    async fn window(
        &mut self,
        target: i64,
        from: i64,
        to: i64,
    ) -> Result<Vec<CheckRow>, StoreError> {
        Ok(sqlx::query_as(WINDOW_SQL)
            .bind(target)
            .bind(from)
            .bind(to)
            .fetch_all(self)
            .await?)
    }

    async fn episode(&mut self, target: i64, at: i64) -> Result<Vec<TransitionRow>, StoreError> {
        let mut rows = sqlx::query_as::<_, TransitionRow>(EPISODE_SQL)
            .bind(target)
            .bind(at)
            .fetch(self);
        let mut walked = Vec::new();
        while let Some(transition) = rows.try_next().await? {
            walked.push(transition);
            if stats::starts_episode(transition.1) {
                break;
            }
        }
        Ok(walked)
    }

    async fn fileset(&mut self, id: i64) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar(FILESET_SQL)
            .bind(id)
            .fetch_one(self)
            .await?)
    }
}
