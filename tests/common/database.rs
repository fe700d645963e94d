//! The database a test runs on: a fresh SQLite file, or a fresh database on the PostgreSQL server
//! named by `GITOPS_TEST_POSTGRES_URL`, dropped again when the test is done.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use tempfile::TempDir;

use super::in_ci;

/// The server the PostgreSQL tests use when `GITOPS_TEST_POSTGRES_URL` is not set: CI's.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which storage implementation a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `Some(Postgres)` when the PostgreSQL server answers. When it does not, says so on stderr
    /// once per test binary and returns `None`, so the test can return early; under `CI=true`
    /// it panics instead, so CI never passes with the PostgreSQL tests silently skipped.
    pub fn postgres() -> Option<Backend> {
        static REACHABLE: OnceLock<Result<(), String>> = OnceLock::new();
        let reachable = REACHABLE.get_or_init(|| {
            let url = admin_url();
            let outcome = on_own_runtime(async move {
                let mut admin = connect_postgres(&url).await?;
                drop_orphaned_databases(&mut admin).await;
                admin.close().await.map_err(|error| error.to_string())
            });
            if let Err(reason) = &outcome
                && !in_ci()
            {
                // Straight to the process's stderr: libtest captures only print!/eprint!.
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "PostgreSQL tests did NOT run: cannot reach {} ({reason}); `./test.sh` \
                     installs and starts PostgreSQL; CI=true makes this a failure",
                    admin_url()
                );
            }
            outcome
        });
        match reachable {
            Ok(()) => Some(Backend::Postgres),
            Err(reason) if in_ci() => panic!(
                "CI=true and the PostgreSQL tests cannot run: cannot reach {}: {reason}",
                admin_url()
            ),
            Err(_) => None,
        }
    }
}

/// The maintenance database's URL, where test databases are created and dropped.
fn admin_url() -> String {
    std::env::var("GITOPS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A fresh, empty database for one test, and the directory beside it for files the test writes.
#[derive(Debug)]
pub struct TestDatabase {
    pub backend: Backend,
    /// What `Store::connect` and `--database-url` take.
    pub url: String,
    pub dir: TempDir,
    /// Drops the PostgreSQL database when the test is done.
    pub(crate) postgres: Option<PostgresDatabase>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => Self {
                backend,
                url: format!("sqlite://{}", dir.path().join("test.db").display()),
                dir,
                postgres: None,
            },
            Backend::Postgres => {
                let database = PostgresDatabase::create().await;
                Self {
                    backend,
                    url: database.url.clone(),
                    dir,
                    postgres: Some(database),
                }
            }
        }
    }

    /// Runs each statement, in order, on one connection of its own; returns the rows affected.
    pub async fn execute_all(&self, statements: &[&str]) -> u64 {
        execute_all(self.backend, &self.url, statements).await
    }

    /// One value of a one-row, one-column query, e.g. `select count(*) from snapshots`.
    pub async fn query_i64(&self, sql: &str) -> i64 {
        query_i64(self.backend, &self.url, sql).await
    }
}

pub(crate) async fn execute_all(backend: Backend, url: &str, statements: &[&str]) -> u64 {
    let mut affected = 0;
    match backend {
        Backend::Sqlite => {
            let mut connection = SqliteConnection::connect(url).await.unwrap();
            for statement in statements {
                affected += connection
                    .execute(*statement)
                    .await
                    .unwrap_or_else(|error| panic!("{statement}: {error}"))
                    .rows_affected();
            }
            connection.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut connection = PgConnection::connect(url).await.unwrap();
            for statement in statements {
                affected += connection
                    .execute(*statement)
                    .await
                    .unwrap_or_else(|error| panic!("{statement}: {error}"))
                    .rows_affected();
            }
            connection.close().await.unwrap();
        }
    }
    affected
}

pub(crate) async fn query_i64(backend: Backend, url: &str, sql: &str) -> i64 {
    let fetched = match backend {
        Backend::Sqlite => {
            let mut connection = SqliteConnection::connect(url).await.unwrap();
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&mut connection)
                .await
        }
        Backend::Postgres => {
            let mut connection = PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&mut connection)
                .await
        }
    };
    fetched.unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// A database of its own on the PostgreSQL server, `gss_test_<pid>_<n>_<random>`; dropped (with
/// `force`, so connections still open are cut) when this is dropped.
#[derive(Debug)]
pub struct PostgresDatabase {
    pub name: String,
    pub url: String,
}

impl PostgresDatabase {
    pub async fn create() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{PREFIX}{}_{}_{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            random_u32()
        );
        let mut admin = connect_postgres(&admin_url())
            .await
            .unwrap_or_else(|reason| panic!("cannot reach {}: {reason}", admin_url()));
        admin
            .execute(format!(r#"create database "{name}""#).as_str())
            .await
            .unwrap_or_else(|error| panic!("create database {name}: {error}"));
        admin.close().await.unwrap();
        Self {
            url: with_database(&admin_url(), &name),
            name,
        }
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        // The test's own runtime may be the one this runs on (or be shutting down), so the drop
        // gets a thread and a runtime of its own. `with (force)` ends the connections the test's
        // store still holds: closing the store from here could wait on that same blocked runtime.
        let name = self.name.clone();
        let dropped = on_own_runtime(async move { drop_database(&name).await });
        if let Err(reason) = dropped {
            let _ = writeln!(
                std::io::stderr().lock(),
                "could not drop test database {}: {reason}",
                self.name
            );
        }
    }
}

const PREFIX: &str = "gss_test_";

async fn drop_database(name: &str) -> Result<(), String> {
    let mut admin = connect_postgres(&admin_url()).await?;
    admin
        .execute(format!(r#"drop database if exists "{name}" with (force)"#).as_str())
        .await
        .map_err(|error| error.to_string())?;
    admin.close().await.map_err(|error| error.to_string())
}

/// Drops the test databases of test processes that no longer exist (a run cut short by Ctrl-C
/// or `kill` leaves them behind). Only where /proc tells which processes exist.
async fn drop_orphaned_databases(admin: &mut PgConnection) {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(names) =
        sqlx::query_scalar::<_, String>("select datname from pg_database where datname like $1")
            .bind(format!("{PREFIX}%"))
            .fetch_all(&mut *admin)
            .await
    else {
        return;
    };
    for name in names {
        let pid = name[PREFIX.len()..].split('_').next().unwrap_or_default();
        if !pid.is_empty() && !std::path::Path::new("/proc").join(pid).exists() {
            let _ = drop_database(&name).await;
        }
    }
}

async fn connect_postgres(url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(Duration::from_secs(3), PgConnection::connect(url)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no answer within 3 s".to_owned()),
    }
}

/// Runs `work` to completion on a new thread with its own runtime, from sync or async code alike.
fn on_own_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work)
    })
    .join()
    .expect("the database thread panicked")
}

/// `url` with its database name replaced by `name`, keeping user, host, port and parameters.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[authority_end..]
        .find('?')
        .map_or("", |at| &rest[authority_end + at..]);
    format!("{scheme}://{}/{name}{query}", &rest[..authority_end])
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish() as u32
}

/// Turns tests written as `async fn name(backend: Backend)` into `sqlite::name` and
/// `postgres::name`. Names after `multi_thread:` run on a two-worker runtime.
///
/// ```ignore
/// backend_tests! {
///     a_test,
///     another_test;
///     multi_thread:
///         a_concurrent_test,
/// }
/// ```
#[macro_export]
macro_rules! backend_tests {
    (multi_thread: $($threaded:ident),+ $(,)?) => {
        $crate::backend_tests!(; multi_thread: $($threaded),+);
    };
    ($($name:ident),* $(,)? $(; multi_thread: $($threaded:ident),+ $(,)?)?) => {
        mod sqlite {
            use $crate::common::Backend;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(Backend::Sqlite).await
                }
            )*
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $threaded() {
                    super::$threaded(Backend::Sqlite).await
                }
            )+)?
        }

        /// Each returns at once, saying so on stderr, when PostgreSQL is not reachable (CI=true
        /// makes that a failure).
        mod postgres {
            use $crate::common::Backend;
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(backend) = Backend::postgres() {
                        super::$name(backend).await
                    }
                }
            )*
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $threaded() {
                    if let Some(backend) = Backend::postgres() {
                        super::$threaded(backend).await
                    }
                }
            )+)?
        }
    };
}
