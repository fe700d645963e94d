//! Database URLs: which database a URL names, and the ones refused before anything is opened.
//!
//! Every subcommand that opens a database (`serve`, `verify`, both sides of `migrate-to`) takes
//! its URL through `DatabaseUrl::parse`, so one rule decides what is accepted everywhere. Refused:
//! a scheme other than `sqlite:` and `postgres:`; a plain path (the hint says how to write it); and
//! any SQLite URL that SQLite would turn into a database that does not survive a restart. sqlx
//! (`SqliteConnectOptions::from_str`) strips `sqlite://` or `sqlite:`, splits off the query at the
//! first `?`, maps `:memory:` and `mode=memory` to an in-memory database, and hands the rest,
//! percent-decoded, to SQLite with `SQLITE_OPEN_URI`. SQLite then makes an empty name a temporary
//! file deleted on close, `:memory:` an in-memory one, and reads a name starting with `file:` as a
//! URI of its own (`file::memory:`, `file:x?mode=memory`, `vfs=memdb`). So the path sqlx ends up
//! with must be non-empty, not `:memory:`, not a `file:` URI, and the query must not ask for
//! memory. A PostgreSQL URL must name its database: without one PostgreSQL picks the user's
//! default, usually the `postgres` maintenance database.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use crate::config::Problem;

/// A database URL that names a durable SQLite file or a PostgreSQL database. `Display` and
/// `Debug` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: String,
    kind: DatabaseKind,
}

/// Which database a `DatabaseUrl` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseKind {
    /// An SQLite file, at this path as SQLite will open it.
    Sqlite { path: PathBuf },
    /// A PostgreSQL database.
    Postgres,
}

const SQLITE_FORM: &str = "sqlite://PATH";
const POSTGRES_FORM: &str = "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE";

impl DatabaseUrl {
    /// Classifies `text`, refusing what would lose data or is not a database URL at all.
    pub fn parse(text: &str) -> Result<Self, Problem> {
        let url = text.trim().to_owned();
        let kind = match scheme(&url) {
            Some("sqlite") => DatabaseKind::Sqlite {
                path: sqlite_path(&url)?,
            },
            Some("postgres" | "postgresql") => {
                postgres_check(&url)?;
                DatabaseKind::Postgres
            }
            Some(other) => {
                return Err(Problem::new(
                    format!("unsupported scheme {other:?}"),
                    format!("write {SQLITE_FORM} or {POSTGRES_FORM}"),
                ));
            }
            None if url.is_empty() => {
                return Err(Problem::new(
                    "empty",
                    format!("write {SQLITE_FORM} or {POSTGRES_FORM}"),
                ));
            }
            None => {
                return Err(Problem::new(
                    "a path, not a URL",
                    format!("write sqlite://{url} for an SQLite file there"),
                ));
            }
        };
        Ok(Self { url, kind })
    }

    /// Like `parse`, for `serve`, which writes: an SQLite file opened read-only (`mode=ro`,
    /// `immutable`) would start a server that answers every POST 503.
    pub fn parse_writable(text: &str) -> Result<Self, Problem> {
        let url = Self::parse(text)?;
        if let DatabaseKind::Sqlite { .. } = url.kind {
            for (key, value) in sqlite_query(&url.url) {
                let read_only = match key.as_ref() {
                    "mode" => value == "ro",
                    "immutable" => matches!(value.as_ref(), "1" | "true"),
                    _ => false,
                };
                if read_only {
                    return Err(Problem::new(
                        format!("{key}={value} opens the file read-only, and the server writes it"),
                        format!("remove {key}={value}"),
                    ));
                }
            }
        }
        Ok(url)
    }

    /// Like `parse`, for a command that only reads SQLite (`migrate-to`'s source).
    pub fn parse_sqlite(text: &str) -> Result<Self, Problem> {
        let url = Self::parse(text)?;
        match url.kind {
            DatabaseKind::Sqlite { .. } => Ok(url),
            DatabaseKind::Postgres => Err(Problem::new(
                "migrate-to copies from an SQLite database, and this names PostgreSQL",
                format!("name the SQLite file to copy: {SQLITE_FORM}"),
            )),
        }
    }

    /// Like `parse`, for a command that only writes PostgreSQL (`migrate-to`'s target).
    pub fn parse_postgres(text: &str) -> Result<Self, Problem> {
        let url = Self::parse(text)?;
        match url.kind {
            DatabaseKind::Postgres => Ok(url),
            DatabaseKind::Sqlite { .. } => Err(Problem::new(
                "migrate-to copies into PostgreSQL, and this names an SQLite file",
                format!("name the PostgreSQL database to copy into: {POSTGRES_FORM}"),
            )),
        }
    }

    /// The URL as given, password included: for connecting only.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn kind(&self) -> &DatabaseKind {
        &self.kind
    }

    /// What the start-up log says: the SQLite file's absolute path, or the PostgreSQL URL
    /// without its password.
    pub fn describe(&self) -> String {
        match &self.kind {
            DatabaseKind::Sqlite { path } => {
                format!("SQLite file {}", absolute(path).display())
            }
            DatabaseKind::Postgres => format!("PostgreSQL {self}"),
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = Problem;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.url))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.url))
    }
}

/// The scheme, when the text has one: letters, digits, `+`, `-` or `.` before the first `:`.
fn scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// The file sqlx would open for `url`, or why SQLite would not keep what is written to it.
fn sqlite_path(url: &str) -> Result<PathBuf, Problem> {
    let lost = |cause: &str| {
        Problem::new(
            format!("{cause}, which loses every snapshot when the server stops"),
            format!("name a file: {SQLITE_FORM}, e.g. sqlite://gitops-status.db"),
        )
    };
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|error| Problem::new(error.to_string(), format!("write {SQLITE_FORM}")))?;
    let database = sqlite_database(url);
    for (key, value) in sqlite_query(url) {
        if key == "mode" && value == "memory" {
            return Err(lost("mode=memory makes an in-memory SQLite database"));
        }
        if key == "vfs" && value == "memdb" {
            return Err(lost("vfs=memdb makes an in-memory SQLite database"));
        }
    }
    let path = options.get_filename();
    let name = path.to_string_lossy();
    if database == ":memory:" || name == ":memory:" {
        return Err(lost("\":memory:\" makes an in-memory SQLite database"));
    }
    if name.is_empty() {
        return Err(lost(
            "the path is empty, and SQLite then makes a temporary database",
        ));
    }
    if name.starts_with("file:") {
        return Err(Problem::new(
            "SQLite would read the path as a file: URI, which can name a temporary or in-memory \
             database",
            format!("write the file's path instead: {SQLITE_FORM}"),
        ));
    }
    Ok(path.to_path_buf())
}

/// What sqlx takes for the database part of an SQLite URL: after `sqlite://` or `sqlite:`, up
/// to the first `?`.
fn sqlite_database(url: &str) -> &str {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    rest.split_once('?').map_or(rest, |(database, _)| database)
}

/// The query parameters of an SQLite URL, decoded, as sqlx reads them.
fn sqlite_query(url: &str) -> form_urlencoded::Parse<'_> {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    form_urlencoded::parse(query.as_bytes())
}

/// Refuses a PostgreSQL URL sqlx cannot read or one that names no database.
fn postgres_check(url: &str) -> Result<(), Problem> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|error| Problem::new(error.to_string(), format!("write {POSTGRES_FORM}")))?;
    if options.get_database().is_none() {
        return Err(Problem::new(
            "names no database, so PostgreSQL would use the user's default one (often the \
             `postgres` maintenance database)",
            format!(
                "add the database to the path: {}/gitops",
                redact_url(url.trim_end_matches('/'))
            ),
        ));
    }
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The URL with any password replaced by `***`, in the user information and in a `password=`
/// query parameter.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut redacted = match head.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((credentials, host)) => match credentials.split_once(':') {
                    Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
                    None => head.to_owned(),
                },
                None => head.to_owned(),
            }
        }
        None => head.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***".to_owned(),
                _ => pair.to_owned(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&pairs.join("&"));
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        match DatabaseUrl::parse(url) {
            Ok(parsed) => panic!("{url:?} was accepted as {:?}", parsed.kind()),
            Err(problem) => problem.to_string(),
        }
    }

    #[test]
    fn every_url_sqlite_would_not_keep_is_refused() {
        for url in [
            "sqlite:",
            "sqlite://",
            "sqlite:// ",
            "sqlite://?cache=shared",
            "sqlite:?mode=rwc",
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://:memory:?cache=private",
            "sqlite://%3Amemory%3A",
            "sqlite://x.db?mode=memory",
            "sqlite://x.db?mode=rwc&mode=memory",
            "sqlite://x.db?mode=%6Demory",
            "sqlite://x.db?vfs=memdb",
            "sqlite://?mode=memory",
            "sqlite://file::memory:",
            "sqlite:file::memory:?cache=shared",
            "sqlite://file:x.db%3Fmode=memory",
            "sqlite://file:",
        ] {
            let problem = refused(url);
            assert!(
                problem.contains("loses every snapshot") || problem.contains("file: URI"),
                "{url:?}: {problem}"
            );
            assert!(
                problem.contains("sqlite://"),
                "{url:?} gets a hint: {problem}"
            );
        }
    }

    #[test]
    fn file_urls_are_accepted_with_the_path_sqlite_opens() {
        for (url, path) in [
            ("sqlite://gitops-status.db", "gitops-status.db"),
            ("sqlite:gitops-status.db", "gitops-status.db"),
            ("sqlite:///var/lib/gitops/x.db", "/var/lib/gitops/x.db"),
            ("sqlite://x.db?mode=rwc", "x.db"),
            ("sqlite://dir%20one/x.db", "dir one/x.db"),
        ] {
            let parsed = DatabaseUrl::parse(url).unwrap();
            assert_eq!(
                parsed.kind(),
                &DatabaseKind::Sqlite { path: path.into() },
                "{url}"
            );
        }
    }

    #[test]
    fn a_postgres_url_must_name_its_database() {
        for url in [
            "postgres://app@db/",
            "postgres://app@db",
            "postgresql://db:5432",
        ] {
            assert!(refused(url).contains("names no database"), "{url}");
        }
        assert_eq!(
            refused("postgres://app:s3cret@db/"),
            "names no database, so PostgreSQL would use the user's default one (often the \
             `postgres` maintenance database); add the database to the path: \
             postgres://app:***@db/gitops"
        );
        for url in [
            "postgres://app@db/gitops",
            "postgresql://app:pw@db:5433/gitops?sslmode=require",
            "postgres://app@db/?dbname=gitops",
        ] {
            assert_eq!(
                DatabaseUrl::parse(url).unwrap().kind(),
                &DatabaseKind::Postgres
            );
        }
    }

    #[test]
    fn paths_and_other_schemes_get_a_hint() {
        assert_eq!(
            refused("/var/lib/plain.db"),
            "a path, not a URL; write sqlite:///var/lib/plain.db for an SQLite file there"
        );
        assert_eq!(
            refused("mysql://x/y"),
            "unsupported scheme \"mysql\"; write sqlite://PATH or \
             postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
        );
        assert!(refused("").starts_with("empty;"));
    }

    #[test]
    fn serve_refuses_a_file_opened_read_only() {
        for url in ["sqlite://x.db?mode=ro", "sqlite://x.db?immutable=1"] {
            assert!(DatabaseUrl::parse(url).is_ok(), "verify may read it: {url}");
            let problem = DatabaseUrl::parse_writable(url).unwrap_err().to_string();
            assert!(
                problem.contains("opens the file read-only"),
                "{url}: {problem}"
            );
        }
        assert_eq!(
            DatabaseUrl::parse_writable("sqlite://x.db?mode=ro")
                .unwrap_err()
                .to_string(),
            "mode=ro opens the file read-only, and the server writes it; remove mode=ro"
        );
        assert!(DatabaseUrl::parse_writable("sqlite://x.db?mode=rwc").is_ok());
        assert!(DatabaseUrl::parse_writable("postgres://u@h/d").is_ok());
    }

    #[test]
    fn migrate_to_sides_take_one_database_each() {
        assert!(DatabaseUrl::parse_sqlite("sqlite://x.db").is_ok());
        assert!(DatabaseUrl::parse_postgres("postgres://u@h/d").is_ok());
        let error = DatabaseUrl::parse_sqlite("postgres://u@h/d").unwrap_err();
        assert!(error.to_string().contains("names PostgreSQL"), "{error}");
        let error = DatabaseUrl::parse_postgres("sqlite://x.db").unwrap_err();
        assert!(
            error.to_string().contains("names an SQLite file"),
            "{error}"
        );
    }

    #[test]
    fn passwords_never_show() {
        let url =
            DatabaseUrl::parse("postgres://app:s3cret@db:5432/gitops?password=s3cret").unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://app:***@db:5432/gitops?password=***"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(
            url.describe(),
            "PostgreSQL postgres://app:***@db:5432/gitops?password=***"
        );
        assert_eq!(
            redact_url("sqlite://gitops-status.db"),
            "sqlite://gitops-status.db"
        );
    }
}
