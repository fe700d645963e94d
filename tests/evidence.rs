//! Evidence that does not depend on trusting the database: the real binary signs head statements
//! with a key from `keygen` (at start, every interval, at shutdown); `verify --public-key` checks
//! them against the chains and names a history rewritten behind a signed head, even one
//! re-hashed end to end; `/api/evidence` files check offline with `verify-evidence`, and a cut,
//! forged or wrongly keyed one is refused with its reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::binary::{BINARY, Binary, command};
use common::{Backend, TestDatabase, tools};
use gitops_status_server::chain::{self, ChainFields, Hash};
use gitops_status_server::model::SyncStatus;
use gitops_status_server::signing;
use gitops_status_server::timestamp::Timestamp;
use serde_json::{Value, json};

backend_tests! {
    statements_are_signed_at_start_every_interval_and_at_shutdown_and_verify_checks_them,
    a_history_rewritten_and_rehashed_behind_a_signed_head_is_named,
    an_evidence_file_checks_offline_and_a_cut_forged_or_wrongly_keyed_one_is_refused,
    the_independent_script_checks_signed_heads_against_an_export,
}

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn at(seconds: i64) -> String {
    Timestamp::from_millis(T0 + seconds * 1000).to_string()
}

/// `keygen` into `dir`: the private key's path and the public key's.
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(name);
    let output = run(&["keygen", private.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let public = signing::public_path(&private);
    assert!(public.exists());
    (private, public)
}

fn run(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("GITOPS_STATUS_PUBLIC_KEY")
        .output()
        .unwrap()
}

/// `verify --public-key`: exit code and the JSON printed.
fn verify_with_key(database_url: &str, public: &Path) -> (Option<i32>, Value) {
    let output = run(&[
        "verify",
        "--database-url",
        database_url,
        "--public-key",
        public.to_str().unwrap(),
    ]);
    let printed = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {output:?}"));
    (output.status.code(), printed)
}

fn start(database: &TestDatabase, key: &Path, interval: &str) -> Binary {
    Binary::start(
        database.dir.path(),
        &[
            "--database-url",
            &database.url,
            "--signing-key",
            key.to_str().unwrap(),
            "--sign-interval",
            interval,
        ],
        &[],
    )
}

/// SIGTERM, and the exit code 0 of a graceful stop.
fn stop(mut server: Binary) -> Vec<String> {
    server.signal("-TERM");
    assert!(server.wait(Duration::from_secs(20)).success());
    server.logs()
}

async fn post(client: &reqwest::Client, server: &Binary, repo: &str, host: &str, seconds: i64) {
    let status = if seconds % 240 == 120 {
        json!({"sync_status": "OUT_OF_SYNC", "files": [{"name": "a.conf"}], "drift_count": 1})
    } else {
        json!({"sync_status": "SYNCED"})
    };
    let mut body = json!({"repo": repo, "server": host, "last_check": at(seconds),
                          "message": format!("check at {seconds} «ü»")});
    for (name, value) in status.as_object().unwrap() {
        body[name] = value.clone();
    }
    let response = client
        .post(server.url("/api/status"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

async fn get_json(client: &reqwest::Client, server: &Binary, path: &str) -> Value {
    let response = client.get(server.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

async fn statements_are_signed_at_start_every_interval_and_at_shutdown_and_verify_checks_them(
    backend: Backend,
) {
    let database = TestDatabase::create(backend).await;
    let (key, public) = keygen(database.dir.path(), "signing.pem");
    let client = reqwest::Client::new();
    let server = start(&database, &key, "1s");
    for seconds in [0, 120, 240] {
        post(&client, &server, "r", "a", seconds).await;
    }
    post(&client, &server, "r", "b", 60).await;

    // The start's statement, then one a second.
    let deadline = Instant::now() + Duration::from_secs(20);
    let statements = loop {
        let listed = get_json(&client, &server, "/api/chain/heads").await;
        let listed = listed.as_array().unwrap().clone();
        if listed.len() >= 3 && listed.last().unwrap()["heads"].as_array().unwrap().len() == 2 {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "no statements by interval: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut previous = Value::Null;
    for (index, statement) in statements.iter().enumerate() {
        assert_eq!(statement["seq"], json!(index + 1));
        assert_eq!(statement["previous"], previous, "one chain of statements");
        assert_eq!(
            statement["hash"],
            json!(hex::encode(signing::statement_hash(
                statement["statement"].as_str().unwrap()
            )))
        );
        previous = statement["hash"].clone();
    }
    // The last statement signs each target's newest record as /history tells it.
    let history = get_json(&client, &server, "/history?order=desc&limit=10").await;
    let newest = |host: &str| {
        history
            .as_array()
            .unwrap()
            .iter()
            .filter(|row| row["server"] == host)
            .max_by_key(|row| row["id"].as_i64())
            .cloned()
            .unwrap()
    };
    let last = statements.last().unwrap();
    for (signed, host) in last["heads"].as_array().unwrap().iter().zip(["a", "b"]) {
        let row = newest(host);
        assert_eq!(
            (
                &signed["repo"],
                &signed["server"],
                &signed["id"],
                &signed["hash"]
            ),
            (&json!("r"), &json!(host), &row["id"], &row["hash"])
        );
    }
    assert_eq!(last["records"], json!(4));

    // /api/verify checks them with the server's own key.
    let verification = get_json(&client, &server, "/api/verify").await;
    assert_eq!(verification["ok"], json!(true), "{verification}");
    assert_eq!(
        verification["statements"]["ok"],
        json!(true),
        "{verification}"
    );
    assert!(verification["statements"]["checked"].as_i64().unwrap() >= 3);

    let before_stop = get_json(&client, &server, "/api/chain/heads?limit=1000").await;
    let logs = stop(server);
    assert!(
        logs.iter()
            .any(|line| line.contains("head statement signed") && line.contains("shutdown")),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|line| line.contains("head statement signed") && line.contains("start")),
        "{logs:?}"
    );
    // The private key is never logged.
    let pem = std::fs::read_to_string(&key).unwrap();
    let secret = pem.lines().nth(1).unwrap();
    assert!(
        !logs
            .iter()
            .any(|line| line.contains(secret) || line.contains("PRIVATE"))
    );

    let (code, printed) = verify_with_key(&database.url, &public);
    assert_eq!(code, Some(0), "{printed}");
    let checked = printed["statements"]["checked"].as_i64().unwrap();
    assert!(
        checked > before_stop.as_array().unwrap().len() as i64,
        "the shutdown's statement is stored: {printed}"
    );

    // Another key: named.
    let (_, other) = keygen(database.dir.path(), "other.pem");
    let (code, printed) = verify_with_key(&database.url, &other);
    assert_eq!(code, Some(1), "{printed}");
    assert_eq!(printed["ok"], json!(false));
    let bad = &printed["statements"]["first_bad"];
    assert_eq!(bad["seq"], json!(1), "{printed}");
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("not by the public key given"),
        "{printed}"
    );

    // A forged statement: its text edited and its hash recomputed, its signature kept.
    let seq = last["seq"].as_i64().unwrap();
    let body: String = query_text(
        &database,
        &format!("select body from head_statements where seq = {seq}"),
    )
    .await;
    let forged = body.replacen(",4,[", ",3,[", 1);
    assert_ne!(forged, body);
    let hash = hex::encode(signing::statement_hash(&forged));
    let forged_sql = forged.replace('\'', "''");
    database
        .execute_all(&[&format!(
            "update head_statements set body = '{forged_sql}', hash = {} where seq = {seq}",
            blob(backend, &hash)
        )])
        .await;
    let (code, printed) = verify_with_key(&database.url, &public);
    assert_eq!(code, Some(1), "{printed}");
    let bad = &printed["statements"]["first_bad"];
    assert_eq!(bad["seq"], json!(seq), "{printed}");
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("signature does not verify"),
        "{printed}"
    );
    // The chains themselves are intact.
    assert_eq!(printed["first_bad"], Value::Null);
}

/// A blob literal of hex `hash` on `backend`.
fn blob(backend: Backend, hash: &str) -> String {
    match backend {
        Backend::Sqlite => format!("x'{hash}'"),
        Backend::Postgres => format!("'\\x{hash}'::bytea"),
    }
}

async fn query_text(database: &TestDatabase, sql: &str) -> String {
    match database.backend {
        Backend::Sqlite => {
            use sqlx::Connection;
            let mut connection = sqlx::SqliteConnection::connect(&database.url)
                .await
                .unwrap();
            sqlx::query_scalar(sql)
                .fetch_one(&mut connection)
                .await
                .unwrap()
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
            sqlx::query_scalar(sql)
                .fetch_one(&mut connection)
                .await
                .unwrap()
        }
    }
}

/// The canonical fields of a `/history` row, with `message` as given.
fn rehash(row: &Value, message: Option<&str>, previous: Option<&Hash>) -> Hash {
    let files: Vec<&str> = row["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["name"].as_str().unwrap())
        .collect();
    let files = chain::files_json(files);
    let time = |name: &str| Timestamp::parse_rfc3339(row[name].as_str().unwrap()).unwrap();
    let fields = ChainFields {
        id: row["id"].as_i64().unwrap(),
        repo: row["repo"].as_str().unwrap(),
        server: row["server"].as_str().unwrap(),
        sync_status: SyncStatus::parse(row["sync_status"].as_str().unwrap()).unwrap(),
        drift_count: row["drift_count"].as_i64().unwrap(),
        files_json: &files,
        last_check: time("last_check"),
        received_at: time("received_at"),
        revision: row["revision"].as_str(),
        run_url: row["run_url"].as_str(),
        message,
        stale_after_seconds: row["stale_after_seconds"].as_i64(),
    };
    chain::link_fields(&fields, previous, &mut Vec::new())
}

async fn a_history_rewritten_and_rehashed_behind_a_signed_head_is_named(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (key, public) = keygen(database.dir.path(), "signing.pem");
    let client = reqwest::Client::new();
    let server = start(&database, &key, "1h");
    for seconds in [0, 120, 240, 360] {
        post(&client, &server, "r", "a", seconds).await;
    }
    let rows = get_json(&client, &server, "/history?server=a&order=asc").await;
    let rows = rows.as_array().unwrap().clone();
    stop(server);
    let (code, printed) = verify_with_key(&database.url, &public);
    assert_eq!(code, Some(0), "{printed}");

    // Rewrite the first check's message and re-hash the whole chain after it, head included,
    // as someone with write access to the database and the documented encoding would.
    let mut previous: Option<Hash> = None;
    let mut edits = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let message = if index == 0 {
            Some("nothing happened here")
        } else {
            row["message"].as_str()
        };
        let hash = rehash(row, message, previous.as_ref());
        edits.push(format!(
            "update snapshots set hash = {} where id = {}",
            blob(backend, &hex::encode(hash)),
            row["id"]
        ));
        previous = Some(hash);
    }
    edits.push(format!(
        "update snapshots set message = 'nothing happened here' where id = {}",
        rows[0]["id"]
    ));
    edits.push(format!(
        "update targets set head_hash = {} where server = 'a'",
        blob(backend, &hex::encode(previous.unwrap()))
    ));
    let edits: Vec<&str> = edits.iter().map(String::as_str).collect();
    database.execute_all(&edits).await;

    // The keyless chain cannot tell...
    let output = run(&["verify", "--database-url", &database.url]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    // ...the signed head can.
    let (code, printed) = verify_with_key(&database.url, &public);
    assert_eq!(code, Some(1), "{printed}");
    let bad = &printed["statements"]["first_bad"];
    let head = rows.last().unwrap();
    assert_eq!(
        (&bad["repo"], &bad["server"], &bad["id"]),
        (&json!("r"), &json!("a"), &head["id"]),
        "{printed}"
    );
    let reason = bad["reason"].as_str().unwrap();
    assert!(reason.contains("rewritten"), "{reason}");
    assert!(reason.contains(head["hash"].as_str().unwrap()), "{reason}");
}

async fn an_evidence_file_checks_offline_and_a_cut_forged_or_wrongly_keyed_one_is_refused(
    backend: Backend,
) {
    let database = TestDatabase::create(backend).await;
    let dir = database.dir.path();
    let (key, public) = keygen(dir, "signing.pem");
    let client = reqwest::Client::new();
    let server = start(&database, &key, "1h");
    for seconds in [0, 120, 240, 360] {
        post(&client, &server, "r", "a", seconds).await;
    }
    post(&client, &server, "r", "b", 60).await;
    // An acknowledgement: an event on a's chain, inside the window.
    let response = client
        .post(server.url("/api/acks"))
        .json(
            &json!({"repo": "r", "server": "a", "reason": "known «drift»",
                      "until": Timestamp::now().plus_millis(86_400_000).to_string()}),
        )
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
    // The shutdown's statement covers everything; restart to serve the file.
    stop(server);
    let server = start(&database, &key, "1h");
    let path = format!(
        "/api/evidence?repo=r&server=a&from={}&to={}",
        T0 + 120_000,
        Timestamp::now().plus_millis(1000).as_millis()
    );
    let response = client.get(server.url(&path)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let file = dir.join("evidence.ndjson");
    std::fs::write(&file, &text).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "evidence");
    assert_eq!(lines.last().unwrap()["type"], "end");
    let selected: Vec<&Value> = lines
        .iter()
        .filter(|line| line["selected"] == true)
        .collect();
    // Checks at 120..480 and the acknowledgement.
    assert_eq!(selected.len(), 4, "{text}");
    assert!(
        selected
            .iter()
            .any(|line| line["type"] == "event" && line["kind"] == "ack")
    );
    assert!(lines.iter().any(|line| line["type"] == "statement"));
    assert!(!lines.iter().any(|line| line["server"] == "b"));

    let check = |file: &Path, key: Option<&Path>| {
        let mut args = vec!["verify-evidence", file.to_str().unwrap()];
        if let Some(key) = key {
            args.extend(["--public-key", key.to_str().unwrap()]);
        }
        let output = run(&args);
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap() + &String::from_utf8(output.stderr).unwrap(),
        )
    };
    let (code, said) = check(&file, Some(&public));
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("evidence OK"), "{said}");
    assert!(said.contains("r/a: 4 selected records"), "{said}");
    assert!(said.contains(&at(120)), "{said}");
    assert!(said.contains("(the key given)"), "{said}");
    let (code, said) = check(&file, None);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("pass --public-key"), "{said}");

    let variant = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // Truncated: the end line gone, or a line cut short.
    let cut = variant(
        "cut.ndjson",
        text.lines()
            .take(lines.len() - 1)
            .map(|line| format!("{line}\n"))
            .collect(),
    );
    let (code, said) = check(&cut, Some(&public));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("truncated"), "{said}");
    let cut = variant("cut-mid.ndjson", text[..text.len() / 2].to_owned());
    let (code, said) = check(&cut, Some(&public));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("cut") || said.contains("truncated"), "{said}");

    // A wrong key.
    let (_, other) = keygen(dir, "other.pem");
    let (code, said) = check(&file, Some(&other));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("not by the public key given"), "{said}");

    // A forged statement: its record count changed, its hash recomputed.
    let forged: String = text
        .lines()
        .map(|line| {
            let mut value: Value = serde_json::from_str(line).unwrap();
            if value["type"] == "statement" {
                let statement = value["statement"]
                    .as_str()
                    .unwrap()
                    .replacen(",6,[", ",60,[", 1);
                value["hash"] = json!(hex::encode(signing::statement_hash(&statement)));
                value["statement"] = json!(statement);
            }
            format!("{value}\n")
        })
        .collect();
    assert_ne!(forged, text);
    let (code, said) = check(&variant("forged.ndjson", forged), Some(&public));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("signature does not verify"), "{said}");

    // A record edited in the file: named.
    let edited = text.replacen("check at 240", "check at 241", 1);
    let (code, said) = check(&variant("edited.ndjson", edited), Some(&public));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("was edited"), "{said}");

    // b's check rewritten in the database and re-hashed, its recorded head too: the keyless
    // chain holds, and the evidence file the server now writes names the rewrite offline.
    let rows = get_json(&client, &server, "/history?server=b").await;
    let row = &rows.as_array().unwrap()[0];
    let hash = hex::encode(rehash(row, Some("nothing happened here"), None));
    database
        .execute_all(&[
            &format!(
                "update snapshots set message = 'nothing happened here', hash = {} where id = {}",
                blob(backend, &hash),
                row["id"]
            ),
            &format!(
                "update targets set head_hash = {} where server = 'b'",
                blob(backend, &hash)
            ),
        ])
        .await;
    let output = run(&["verify", "--database-url", &database.url]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let response = client
        .get(server.url("/api/evidence?server=b"))
        .send()
        .await
        .unwrap();
    let rewritten = variant("rewritten.ndjson", response.text().await.unwrap());
    let (code, said) = check(&rewritten, Some(&public));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("r/b") && said.contains("rewritten"), "{said}");
    assert!(said.contains(row["hash"].as_str().unwrap()), "{said}");
}

/// A key file others may read is refused at start, with one line naming it.
#[tokio::test]
async fn a_signing_key_readable_by_others_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keygen(dir.path(), "signing.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o600,
            "keygen writes the private key for its owner only"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let database = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let output = command(dir.path(), &[])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &database,
            "--signing-key",
            key.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("ERROR"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("--signing-key"), "{stderr}");
    assert!(lines[0].contains(key.to_str().unwrap()), "{stderr}");
    assert!(lines[0].contains("readable by group or others"), "{stderr}");
    // keygen never overwrites a key.
    let output = run(&["keygen", key.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

/// Two replicas on one PostgreSQL database, both signing every second while clients write
/// through both: their statements form one chain, and every one checks out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_signing_at_once_keep_one_chain_of_statements() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let database = TestDatabase::create(backend).await;
    let (key, public) = keygen(database.dir.path(), "signing.pem");
    let replicas = [start(&database, &key, "1s"), start(&database, &key, "1s")];
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seconds = 0;
    let statements = loop {
        for (index, replica) in replicas.iter().enumerate() {
            post(&client, replica, "r", &format!("host-{index}"), seconds).await;
        }
        seconds += 60;
        let listed = get_json(&client, &replicas[0], "/api/chain/heads?limit=1000").await;
        let listed = listed.as_array().unwrap().clone();
        if listed.len() >= 6 {
            break listed;
        }
        assert!(Instant::now() < deadline, "too few statements: {listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for pair in statements.windows(2) {
        assert_eq!(pair[1]["seq"], json!(pair[0]["seq"].as_i64().unwrap() + 1));
        assert_eq!(pair[1]["previous"], pair[0]["hash"]);
    }
    for replica in replicas {
        stop(replica);
    }
    let (code, printed) = verify_with_key(&database.url, &public);
    assert_eq!(code, Some(0), "{printed}");
    assert!(printed["statements"]["checked"].as_i64().unwrap() >= 6);
}

/// examples/verify_export.py, written from docs/audit.md, checks the statements of
/// `/api/chain/heads` against a `/history` export: intact, a wrong key, a forged statement, and
/// a target's history rewritten and re-hashed end to end.
async fn the_independent_script_checks_signed_heads_against_an_export(backend: Backend) {
    let test = "the_independent_script_checks_signed_heads_against_an_export";
    let Some(python) = tools::CRYPTOGRAPHY_PYTHON.require(test) else {
        return;
    };
    let probe = Command::new(&python)
        .args(["-c", "import cryptography"])
        .output()
        .unwrap();
    if !probe.status.success() {
        tools::CRYPTOGRAPHY_PYTHON.missing(test, "it has no cryptography");
        return;
    }
    let database = TestDatabase::create(backend).await;
    let dir = database.dir.path();
    let (key, public) = keygen(dir, "signing.pem");
    let client = reqwest::Client::new();
    let server = start(&database, &key, "1h");
    for seconds in [0, 120, 240] {
        post(&client, &server, "r", "a", seconds).await;
    }
    for seconds in [60, 180, 300] {
        post(&client, &server, "r", "b", seconds).await;
    }
    stop(server);
    let server = start(&database, &key, "1h");
    let fetch = |path: &'static str| {
        let client = client.clone();
        let url = server.url(path);
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let trail = fetch("/history?format=ndjson&order=asc").await;
    let events = fetch("/api/chain/events").await;
    let heads = fetch("/api/chain/heads?limit=1000").await;
    stop(server);
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let events = write("events.ndjson", &events);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/verify_export.py");
    let run_script = |trail: &Path, heads: &Path, key: &Path| {
        let output = Command::new(&python)
            .arg(&script)
            .arg(trail)
            .arg("--events")
            .arg(&events)
            .arg("--statements")
            .arg(heads)
            .arg("--public-key")
            .arg(key)
            .output()
            .unwrap();
        let printed: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("{error}: {output:?}"));
        (output.status.code(), printed)
    };
    let trail_file = write("trail.ndjson", &trail);
    let heads_file = write("heads.json", &heads);
    let (code, printed) = run_script(&trail_file, &heads_file, &public);
    assert_eq!(code, Some(0), "{printed}");
    assert_eq!(printed["statements"]["ok"], json!(true), "{printed}");
    assert!(
        printed["statements"]["checked"].as_i64().unwrap() >= 3,
        "{printed}"
    );

    let (_, other) = keygen(dir, "other.pem");
    let (code, printed) = run_script(&trail_file, &heads_file, &other);
    assert_eq!(code, Some(1), "{printed}");
    let reason = printed["statements"]["first_bad"]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("not by the key given"), "{reason}");

    // A forged statement: its record count raised, its hash recomputed.
    let mut listed: Vec<Value> = serde_json::from_str(&heads).unwrap();
    let forged = listed[1]["statement"]
        .as_str()
        .unwrap()
        .replacen(",6,[", ",60,[", 1);
    assert_ne!(forged, listed[1]["statement"].as_str().unwrap());
    listed[1]["hash"] = json!(hex::encode(signing::statement_hash(&forged)));
    listed[1]["statement"] = json!(forged);
    let forged_file = write("forged.json", &serde_json::to_string(&listed).unwrap());
    let (code, printed) = run_script(&trail_file, &forged_file, &public);
    assert_eq!(code, Some(1), "{printed}");
    assert_eq!(
        printed["statements"]["first_bad"]["seq"],
        json!(2),
        "{printed}"
    );
    let reason = printed["statements"]["first_bad"]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("signature does not verify"), "{reason}");

    // b's first message rewritten, and b's chain re-hashed end to end: the chain alone holds.
    let mut previous: Option<Hash> = None;
    let rewritten: String = trail
        .lines()
        .map(|line| {
            let mut row: Value = serde_json::from_str(line).unwrap();
            if row["server"] == "b" {
                if previous.is_none() {
                    row["message"] = json!("nothing happened here");
                }
                let hash = rehash(&row, row["message"].as_str(), previous.as_ref());
                row["hash"] = json!(hex::encode(hash));
                previous = Some(hash);
            }
            format!("{row}\n")
        })
        .collect();
    let rewritten_file = write("rewritten.ndjson", &rewritten);
    let (code, printed) = run_script(&rewritten_file, &heads_file, &public);
    assert_eq!(code, Some(1), "{printed}");
    assert_eq!(
        printed["first_bad"],
        Value::Null,
        "the re-hashed chain holds: {printed}"
    );
    let reason = printed["statements"]["first_bad"]["reason"]
        .as_str()
        .unwrap();
    assert!(
        reason.contains("r/b") && reason.contains("rewritten"),
        "{reason}"
    );
}

/// `migrate-to` copies the statements as they are: they check out on the PostgreSQL copy with
/// the same key, against the copied chains.
#[tokio::test]
async fn migrate_to_copies_the_statements_and_they_check_out_on_the_copy() {
    let Some(postgres) = Backend::postgres() else {
        return;
    };
    let source = TestDatabase::create(Backend::Sqlite).await;
    let (key, public) = keygen(source.dir.path(), "signing.pem");
    let client = reqwest::Client::new();
    let server = start(&source, &key, "1h");
    for seconds in [0, 120, 240] {
        post(&client, &server, "r", "a", seconds).await;
    }
    stop(server);
    let (code, printed) = verify_with_key(&source.url, &public);
    assert_eq!(code, Some(0), "{printed}");
    let target = TestDatabase::create(postgres).await;
    let output = run(&["migrate-to", &target.url, "--database-url", &source.url]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let (code, copied) = verify_with_key(&target.url, &public);
    assert_eq!(code, Some(0), "{copied}");
    assert_eq!(copied["statements"], printed["statements"]);
}
