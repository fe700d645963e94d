//! Start-up on the real binary: configuration that would lose data or cannot work stops the
//! process with one line naming the setting as it was given (flag, environment variable or
//! default), the value (without its password), the cause and the fix; a bad value exits 2 before
//! anything is opened or bound, a database or address that cannot be used at start exits 1.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::binary::{self, BINARY, Binary};
use common::{Backend, TestDatabase};

/// What a run of the binary that is expected to stop left behind.
#[derive(Debug)]
struct Stopped {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Stopped {
    /// The message of the one line on stderr, without the log line's time and level.
    fn only_line(&self) -> String {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|line| !line.is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {}", self.stderr);
        message(lines[0])
    }

    /// The message of the one error line among what was logged.
    fn error_line(&self) -> String {
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|line| line.contains("ERROR") || line.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "one error line: {}", self.stderr);
        message(errors[0])
    }
}

/// A clap error (`error: MESSAGE`) or a log line (`TIME  ERROR target: MESSAGE`), as MESSAGE.
fn message(line: &str) -> String {
    match line.strip_prefix("error: ") {
        Some(message) => message.to_owned(),
        None => line
            .split_once(" gitops_status_server: ")
            .map(|(_, message)| message.to_owned())
            .unwrap_or_else(|| panic!("not an error line: {line}")),
    }
}

/// Runs the binary in `dir` and waits for it to stop by itself (a process that starts serving
/// instead is killed and fails the test).
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Stopped {
    let mut command = binary::command(dir, env);
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{args:?} {env:?} did not stop: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    Stopped {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

const KEEP_A_FILE: &str = "which loses every snapshot when the server stops; name a file: \
                           sqlite://PATH, e.g. sqlite://gitops-status.db";

#[test]
fn urls_sqlite_would_not_keep_are_refused_by_every_command_before_anything_opens() {
    for (url, cause) in [
        (
            "sqlite:",
            "the path is empty, and SQLite then makes a temporary database",
        ),
        (
            "sqlite://",
            "the path is empty, and SQLite then makes a temporary database",
        ),
        (
            "sqlite://?cache=shared",
            "the path is empty, and SQLite then makes a temporary database",
        ),
        (
            "sqlite::memory:",
            "\":memory:\" makes an in-memory SQLite database",
        ),
        (
            "sqlite://:memory:",
            "\":memory:\" makes an in-memory SQLite database",
        ),
        (
            "sqlite://x.db?mode=memory",
            "mode=memory makes an in-memory SQLite database",
        ),
        (
            "sqlite://x.db?vfs=memdb",
            "vfs=memdb makes an in-memory SQLite database",
        ),
    ] {
        let expected = |setting: &str| format!("{setting}: {url}: {cause}, {KEEP_A_FILE}");
        for (args, env, setting) in [
            (vec![], vec![("DATABASE_URL", url)], "DATABASE_URL"),
            (
                vec!["serve", "--database-url", url],
                vec![],
                "--database-url",
            ),
            (vec!["verify"], vec![("DATABASE_URL", url)], "DATABASE_URL"),
            (
                vec![
                    "migrate-to",
                    "postgres://postgres@127.0.0.1:1/gitops",
                    "--database-url",
                    url,
                ],
                vec![],
                "--database-url",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let stopped = run(dir.path(), &args, &env);
            assert_eq!(stopped.code, Some(2), "{args:?} {env:?}: {stopped:?}");
            assert_eq!(stopped.only_line(), expected(setting), "{args:?} {env:?}");
            assert_eq!(stopped.stdout, "", "{args:?}");
            // No file, and (one line, no "listening") no address bound.
            assert_eq!(
                entries(dir.path()),
                Vec::<String>::new(),
                "{args:?} {env:?}"
            );
        }
    }
}

#[test]
fn a_url_that_is_not_a_database_url_says_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.db");
    let plain = plain.to_str().unwrap();
    for (url, message) in [
        (
            plain.to_owned(),
            format!(
                "--database-url: {plain}: a path, not a URL; write sqlite://{plain} for an \
                 SQLite file there"
            ),
        ),
        (
            "mysql://x/y".to_owned(),
            "--database-url: mysql://x/y: unsupported scheme \"mysql\"; write sqlite://PATH or \
             postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
                .to_owned(),
        ),
        (
            "postgres://app:s3cret@db.example/".to_owned(),
            "--database-url: postgres://app:***@db.example/: names no database, so PostgreSQL \
             would use the user's default one (often the `postgres` maintenance database); add \
             the database to the path: postgres://app:***@db.example/gitops"
                .to_owned(),
        ),
    ] {
        let stopped = run(dir.path(), &["--database-url", &url], &[]);
        assert_eq!(stopped.code, Some(2), "{url}: {stopped:?}");
        assert_eq!(stopped.only_line(), message);
        assert!(!stopped.stderr.contains("s3cret"), "{}", stopped.stderr);
    }
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[test]
fn an_sqlite_file_that_cannot_be_opened_says_which_directory_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();

    let stopped = run(
        dir.path(),
        &["--database-url", "sqlite://nodir/sub/x.db"],
        &[],
    );
    assert_eq!(stopped.code, Some(1), "{stopped:?}");
    assert_eq!(
        stopped.only_line(),
        format!(
            "--database-url: sqlite://nodir/sub/x.db: the directory {root}/nodir/sub does not \
             exist; create the directory first, or fix the path"
        )
    );

    let missing = format!("sqlite://{root}/missing.db");
    let stopped = run(dir.path(), &["verify"], &[("DATABASE_URL", &missing)]);
    assert_eq!(stopped.code, Some(2), "{stopped:?}");
    assert_eq!(
        stopped.only_line(),
        format!(
            "DATABASE_URL: {missing}: the file {root}/missing.db does not exist; check the path; \
             this command never creates a database"
        )
    );
    assert_eq!(entries(dir.path()), Vec::<String>::new());

    std::fs::create_dir(dir.path().join("a-directory.db")).unwrap();
    let stopped = run(
        dir.path(),
        &["--database-url", "sqlite://a-directory.db"],
        &[],
    );
    assert_eq!(stopped.code, Some(1), "{stopped:?}");
    assert_eq!(
        stopped.only_line(),
        format!(
            "--database-url: sqlite://a-directory.db: {root}/a-directory.db is a directory; name \
             a file in it, e.g. sqlite:///that/directory/gitops-status.db"
        )
    );
    std::fs::remove_dir(dir.path().join("a-directory.db")).unwrap();

    // A directory this user cannot write in. Root writes through permission bits, so as root
    // the test uses /sys, which refuses new files to everyone.
    let read_only = dir.path().join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    let mut permissions = std::fs::metadata(&read_only).unwrap().permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(&read_only, permissions).unwrap();
    let read_only = if std::fs::write(read_only.join("probe"), "").is_ok() {
        Path::new("/sys").to_path_buf()
    } else {
        read_only
    };
    let url = format!("sqlite://{}/x.db", read_only.display());
    let stopped = run(dir.path(), &["--database-url", &url], &[]);
    assert_eq!(stopped.code, Some(1), "{stopped:?}");
    let line = stopped.only_line();
    let expected = format!(
        "--database-url: {url}: cannot create {}/x.db: the directory {} is not writable (",
        read_only.display(),
        read_only.display()
    );
    assert!(line.starts_with(&expected), "{line}");
    assert!(
        line.ends_with("); make it writable for the server's user, or choose another directory"),
        "{line}"
    );
}

#[test]
fn postgres_with_nothing_listening_is_refused_at_once_naming_host_and_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("postgres://app:s3cret@127.0.0.1:{port}/gitops");
    let started = Instant::now();
    let stopped = run(dir.path(), &[], &[("DATABASE_URL", &url)]);
    // The pool's acquire timeout, which this replaces, took 5 s.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stopped.code, Some(1), "{stopped:?}");
    assert_eq!(
        stopped.only_line(),
        format!(
            "DATABASE_URL: postgres://app:***@127.0.0.1:{port}/gitops: connection refused by \
             127.0.0.1:{port}; is PostgreSQL running and listening there?"
        )
    );
}

#[test]
fn migrate_to_names_its_target_argument_for_the_target_problems() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let refused = format!("postgres://postgres@127.0.0.1:{port}/gitops");
    for (target, code, message) in [
        (
            "sqlite://copy.db".to_owned(),
            2,
            "<POSTGRES_URL>: sqlite://copy.db: migrate-to copies into PostgreSQL, and this names \
             an SQLite file; name the PostgreSQL database to copy into: \
             postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
                .to_owned(),
        ),
        (
            "postgres://postgres@127.0.0.1/".to_owned(),
            2,
            "<POSTGRES_URL>: postgres://postgres@127.0.0.1/: names no database, so PostgreSQL \
             would use the user's default one (often the `postgres` maintenance database); add \
             the database to the path: postgres://postgres@127.0.0.1/gitops"
                .to_owned(),
        ),
        (
            refused.clone(),
            2,
            format!(
                "<POSTGRES_URL>: {refused}: connection refused by 127.0.0.1:{port}; is \
                 PostgreSQL running and listening there?; nothing copied"
            ),
        ),
    ] {
        // A source that exists and verifies, so only the target can be at fault.
        let source = dir.path().join("source.db");
        let source_url = format!("sqlite://{}", source.display());
        if !source.exists() {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let store = gitops_status_server::store::Store::connect(&source_url)
                    .await
                    .unwrap();
                store.close().await;
            });
        }
        let stopped = run(
            dir.path(),
            &["migrate-to", &target],
            &[("DATABASE_URL", &source_url)],
        );
        assert_eq!(stopped.code, Some(code), "{target}: {stopped:?}");
        assert_eq!(stopped.error_line(), message);
        assert_eq!(stopped.stdout, "");
    }
}

/// Starts `serve` with `listen` and returns the address it logs, and the child to stop.
fn listening_on(dir: &Path, listen: &str) -> (SocketAddr, std::process::Child) {
    let mut child = Command::new(BINARY)
        .args(["--listen", listen])
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("GITOPS_STATUS_LISTEN")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("address=").nth(1) {
            let address = rest.split_whitespace().next().unwrap().parse().unwrap();
            return (address, child);
        }
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{listen}: no address logged: {seen:?}");
}

#[test]
fn listen_takes_a_host_name_and_a_bare_port() {
    let dir = tempfile::tempdir().unwrap();
    for (listen, ip) in [("localhost:0", "127.0.0.1"), (":0", "0.0.0.0")] {
        let (address, mut child) = listening_on(dir.path(), listen);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(address.ip().to_string(), ip, "{listen}");
        assert_ne!(address.port(), 0);
    }
    let stopped = run(dir.path(), &["--listen", "8080"], &[]);
    assert_eq!(stopped.code, Some(2), "{stopped:?}");
    assert_eq!(
        stopped.only_line(),
        "--listen: 8080: no port; write :8080 for every interface, or 127.0.0.1:8080"
    );
}

#[test]
fn a_port_in_use_names_the_setting_that_chose_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    for (args, env, setting) in [
        (vec!["--listen", address.as_str()], vec![], "--listen"),
        (
            vec!["serve", "--listen", address.as_str()],
            vec![("GITOPS_STATUS_LISTEN", "127.0.0.1:1")],
            "--listen",
        ),
        (
            vec![],
            vec![("GITOPS_STATUS_LISTEN", address.as_str())],
            "GITOPS_STATUS_LISTEN",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let stopped = run(dir.path(), &args, &env);
        assert_eq!(stopped.code, Some(1), "{args:?}: {stopped:?}");
        assert_eq!(
            stopped.error_line(),
            format!(
                "{setting}: {address}: cannot listen: Address already in use (os error 98); \
                 another process listens there; stop it or choose another port"
            )
        );
    }
}

#[test]
fn a_bad_flag_value_and_a_bad_environment_value_both_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (args, env) in [
        (vec!["--database-url", "mysql://x/y"], vec![]),
        (vec![], vec![("DATABASE_URL", "mysql://x/y")]),
        (vec!["--listen", "nowhere"], vec![]),
        (vec![], vec![("GITOPS_STATUS_LISTEN", "nowhere")]),
        (vec!["verify", "--database-url", "sqlite::memory:"], vec![]),
        (vec!["--database-url", "sqlite://x.db?mode=ro"], vec![]),
    ] {
        let stopped = run(dir.path(), &args, &env);
        assert_eq!(stopped.code, Some(2), "{args:?} {env:?}: {stopped:?}");
    }
}

#[tokio::test]
async fn the_start_up_log_names_the_database_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Binary::start(dir.path(), &["--database-url", "sqlite://logged.db"], &[]);
    let logs = server.logs().join("\n");
    let path = dir.path().join("logged.db");
    assert!(
        logs.contains(&format!("database=SQLite file {}", path.display())),
        "{logs}"
    );
    drop(server);

    let Some(backend) = Backend::postgres() else {
        return;
    };
    let database = TestDatabase::create(backend).await;
    // Trust authentication ignores the password; the log must not show it anyway.
    let url = database
        .url
        .replacen("://postgres@", "://postgres:s3cret@", 1);
    assert_ne!(
        url, database.url,
        "the test database's URL has changed shape"
    );
    let mut server = Binary::start(dir.path(), &[], &[("DATABASE_URL", &url)]);
    let logs = server.logs().join("\n");
    let shown = url.replacen(":s3cret@", ":***@", 1);
    assert!(
        logs.contains(&format!("database=PostgreSQL {shown}")),
        "{logs}"
    );
    assert!(!logs.contains("s3cret"), "{logs}");
}

#[test]
fn serve_help_names_both_database_forms() {
    let output = Command::new(BINARY)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("sqlite://PATH"), "{help}");
    assert!(
        help.contains("postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"),
        "{help}"
    );
}
