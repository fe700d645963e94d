//! Two real faults instead of simulated ones, each against the real binary:
//!
//! - **Disk full**: the SQLite database lives on a small tmpfs this test mounts, and a filler file
//!   takes every byte left. Writes must get 503 problem+json with `Retry-After`, reads and probes
//!   must keep answering, nothing acknowledged may be lost, and once the filler is deleted writes
//!   must succeed again without a restart, with the chain intact.
//! - **PostgreSQL restart under load**: the test runs a cluster of its own (`initdb` into a temp
//!   dir, a free port) and restarts it (`pg_ctl restart -m fast`) while 8 writers keep posting.
//!   Every answer must be 200 or 503 with `Retry-After`, none later than the request timeout;
//!   every 200 must be stored; the server must take writes again within seconds by itself.
//!
//! The disk-full test needs root to mount; the PostgreSQL tests need the server binaries (as root
//! they run them as the user `postgres`, since `initdb` refuses root). Where that is missing, the
//! test says it did NOT run, and fails under `CI=true`.
//! docs/reliability.md has the figures these tests print (`-- --nocapture`).

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::binary::{self, Binary};
use common::tools::did_not_run;
use reqwest::Client;
use serde_json::{Value, json};

/// RFC 3339 time `millis` after `base_ms`.
fn at(base_ms: i64, millis: i64) -> String {
    let at =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(base_ms + millis) * 1_000_000)
            .unwrap();
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Two hours ago, in Unix milliseconds: a base for unique `last_check`s.
fn base_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp() - 7200) * 1000
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// One POST's answer, as far as these tests judge it.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Retry-After, for a 503.
    retry_after: Option<String>,
    /// For a 503: whether the body is a problem+json document saying 503.
    problem: bool,
    /// For a 200: the stored snapshot's id and hash.
    stored: Option<(i64, String)>,
    sent: Instant,
    answered: Instant,
}

impl Answer {
    /// A 503 as the contract says: problem+json and Retry-After.
    fn is_documented_503(&self) -> bool {
        self.status == 503 && self.problem && self.retry_after.is_some()
    }
}

async fn post(client: &Client, url: &str, body: &Value) -> Result<Answer, reqwest::Error> {
    let sent = Instant::now();
    let response = client.post(url).json(body).send().await?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header("retry-after");
    let content_type = header("content-type").unwrap_or_default();
    let body: Value = response.json().await?;
    let answered = Instant::now();
    let problem = content_type == "application/problem+json" && body["status"] == 503;
    let stored = (status == 200).then(|| {
        (
            body["id"].as_i64().expect("a stored snapshot has an id"),
            body["hash"]
                .as_str()
                .expect("a stored snapshot has a hash")
                .to_owned(),
        )
    });
    Ok(Answer {
        status,
        retry_after,
        problem,
        stored,
        sent,
        answered,
    })
}

async fn get_status(client: &Client, url: &str) -> u16 {
    client
        .get(url)
        .send()
        .await
        .map_or(0, |response| response.status().as_u16())
}

/// Every stored snapshot's hash by id, through the NDJSON export.
async fn stored_hashes(client: &Client, server: &Binary) -> HashMap<i64, String> {
    let text = client
        .get(server.url("/history?format=ndjson"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            (
                row["id"].as_i64().unwrap(),
                row["hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The acknowledged snapshots (id → hash) missing from `stored` or stored with another hash.
fn lost(acknowledged: &HashMap<i64, String>, stored: &HashMap<i64, String>) -> Vec<i64> {
    let mut lost: Vec<i64> = acknowledged
        .iter()
        .filter(|(id, hash)| stored.get(id) != Some(hash))
        .map(|(id, _)| *id)
        .collect();
    lost.sort_unstable();
    lost
}

/// `gitops-status-server verify` on `url`, as an operator runs it: its exit code must be 0 and
/// its report say ok.
fn verify_cli(dir: &Path, url: &str) {
    let output = binary::command(dir, &[])
        .args(["verify", "--database-url", url])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "verify: {}\n{report}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["ok"], true, "{report}");
}

async fn verify_api(client: &Client, server: &Binary) {
    let verify: Value = client
        .get(server.url("/api/verify"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
}

// ---------------------------------------------------------------------------------------------
// Disk full
// ---------------------------------------------------------------------------------------------

/// A tmpfs mounted for one test; unmounted when dropped (lazily when something still holds it),
/// so also when the test panics.
#[derive(Debug)]
struct Mount {
    path: PathBuf,
}

impl Mount {
    fn tmpfs(path: &Path, size: &str) -> Result<Self, String> {
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if output.status.success() {
            Ok(Self {
                path: path.to_owned(),
            })
        } else {
            let why = String::from_utf8_lossy(&output.stderr);
            Err(format!(
                "mount -t tmpfs failed: {}",
                why.split_whitespace().collect::<Vec<_>>().join(" ")
            ))
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Writes a file at `path` until the file system refuses another byte; returns its size.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5_u8; 1 << 20];
    let mut written = 0_u64;
    let mut refused = None;
    for size in [1 << 20, 4096, 1] {
        loop {
            match file.write(&chunk[..size]) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(error) => {
                    refused = Some(error);
                    break;
                }
            }
        }
    }
    let refused = refused.expect("the file system refused a write");
    assert_eq!(
        refused.raw_os_error(),
        Some(28),
        "ENOSPC, not something else: {refused}"
    );
    written
}

/// A snapshot of about 3.5 KB with a file set of its own, so that the database grows with every
/// one: target `s{n % 8}` at `last_check` base + n ms.
fn large_snapshot(base_ms: i64, n: i64) -> Value {
    let files: Vec<Value> = (0..8)
        .map(|file| json!({ "name": format!("{n:08}/{file}/{}", "x".repeat(400)) }))
        .collect();
    json!({
        "repo": "disk",
        "server": format!("s{}", n % 8),
        "sync_status": "OUT_OF_SYNC",
        "drift_count": files.len(),
        "files": files,
        "last_check": at(base_ms, n),
        "message": format!("check {n}"),
    })
}

/// Reads and probes while the disk is full: all answered 200. `/readyz` stays 200 on purpose:
/// the server still serves every read, and taking it out of rotation (or restarting it) would
/// not free a byte; writers learn of the fault from their 503s.
async fn assert_reads_answer(client: &Client, server: &mut Binary, when: &str) {
    for path in [
        "/healthz",
        "/readyz",
        "/status.json",
        "/status.json?repo=disk",
        "/history?repo=disk&limit=5",
        "/history?limit=1000",
        "/api/targets",
        "/metrics",
        "/",
    ] {
        let status = get_status(client, &server.url(path)).await;
        assert_eq!(
            status,
            200,
            "{when}: GET {path} answered {status}; log: {}",
            unusual_log(server)
        );
    }
}

/// The server's log without its lines about answered requests: what to look at when a test fails.
fn unusual_log(server: &mut Binary) -> String {
    server
        .logs()
        .into_iter()
        .filter(|line| !line.contains("status=200"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Part of the fault's figures, printed for docs/reliability.md.
#[derive(Debug, Default)]
struct DiskFigures {
    before: usize,
    filler_bytes: u64,
    during: usize,
    accepted_during: usize,
    refused: usize,
    slowest_503: Duration,
    recovery: Duration,
    attempts_to_recover: usize,
    after: usize,
    /// What the acknowledgement posted on the full disk got.
    ack: u16,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_with_503_keeps_reads_and_recovers_when_space_is_freed() {
    const TEST: &str =
        "faults::a_full_disk_refuses_writes_with_503_keeps_reads_and_recovers_when_space_is_freed";
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    // Dropped after the server (declared before it): the mount is free to go then.
    let _mount = match Mount::tmpfs(&small, "16m") {
        Ok(mount) => mount,
        Err(why) => {
            did_not_run(
                TEST,
                &format!("cannot mount a tmpfs ({why})"),
                "it needs root, or CAP_SYS_ADMIN, as ./test.sh runs the tests",
            );
            return;
        }
    };
    let url = format!("sqlite://{}", small.join("faults.db").display());
    let mut server = Binary::start(dir.path(), &["--database-url", &url], &[]);
    let client = Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap();
    let endpoint = server.url("/api/status");
    let base = base_ms();
    let mut figures = DiskFigures::default();
    let mut acknowledged: HashMap<i64, String> = HashMap::new();
    let mut n = 0_i64;

    // Before: some history, a WAL and a database file of some size.
    for _ in 0..100 {
        let answer = post(&client, &endpoint, &large_snapshot(base, n))
            .await
            .unwrap();
        assert_eq!(
            answer.status,
            200,
            "before the fault: {answer:?}; log: {}",
            unusual_log(&mut server)
        );
        acknowledged.extend(answer.stored);
        n += 1;
    }
    figures.before = acknowledged.len();

    // The fault: every byte left on the file system goes to a filler file.
    let filler = small.join("filler");
    figures.filler_bytes = fill(&filler);

    // Rounds of 8 writes at once (so they commit in groups), 2 of them for new targets (so
    // their batch needs a transaction), until 3 rounds in a row are refused whole: whatever
    // SQLite can still put in the WAL's slack may be accepted, and must then be kept.
    let mut refused_rounds = 0;
    while refused_rounds < 3 {
        assert!(
            figures.during < 5000,
            "5,000 writes on a full disk and still not 3 rounds refused in a row"
        );
        let round: Vec<_> = (0..8)
            .map(|k| {
                let mut body = large_snapshot(base, n + k);
                if k >= 6 {
                    body["server"] = json!(format!("new-{}", n + k));
                }
                let (client, endpoint) = (client.clone(), endpoint.clone());
                tokio::spawn(async move { post(&client, &endpoint, &body).await.unwrap() })
            })
            .collect();
        n += 8;
        let mut refused = 0;
        for answer in round {
            let answer = answer.await.unwrap();
            figures.during += 1;
            match answer.status {
                200 => {
                    acknowledged.extend(answer.stored);
                    figures.accepted_during += 1;
                }
                503 => {
                    assert!(answer.is_documented_503(), "{answer:?}");
                    assert_eq!(answer.retry_after.as_deref(), Some("1"));
                    figures.refused += 1;
                    figures.slowest_503 = figures.slowest_503.max(answer.answered - answer.sent);
                    refused += 1;
                }
                status => panic!("a write on a full disk answered {status}: {answer:?}"),
            }
        }
        refused_rounds = if refused == 8 { refused_rounds + 1 } else { 0 };
        assert_reads_answer(&client, &mut server, "disk full").await;
    }
    assert!(figures.refused > 0);
    assert_reads_answer(&client, &mut server, "disk full").await;
    assert!(
        lost(&acknowledged, &stored_hashes(&client, &server).await).is_empty(),
        "an acknowledged snapshot is missing while the disk is full"
    );
    // Another kind of write, an acknowledgement (a chained event, small enough that it may
    // still fit where a snapshot did not): refused the same way, or stored and then kept.
    let ack = client
        .post(server.url("/api/acks"))
        .json(&json!({
            "repo": "disk", "server": "s0", "reason": "disk full test",
            "until": at(base_ms() + 7_200_000, 3_600_000),
        }))
        .send()
        .await
        .unwrap();
    let ack_status = ack.status().as_u16();
    let ack_retry_after = ack.headers().contains_key("retry-after");
    let ack: Value = ack.json().await.unwrap();
    assert!(
        ack_status == 201 || (ack_status == 503 && ack_retry_after && ack["status"] == 503),
        "{ack_status} {ack}"
    );
    let stored_ack = (ack_status == 201).then(|| ack["id"].as_i64().unwrap());
    figures.ack = ack_status;

    // Space is freed: writes succeed again, from the same process.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    loop {
        let answer = post(&client, &endpoint, &large_snapshot(base, n))
            .await
            .unwrap();
        n += 1;
        figures.attempts_to_recover += 1;
        if answer.status == 200 {
            acknowledged.extend(answer.stored);
            break;
        }
        assert!(answer.is_documented_503(), "{answer:?}");
        assert!(
            freed.elapsed() < Duration::from_secs(10),
            "writes still refused 10 s after space was freed: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    figures.recovery = freed.elapsed();
    for _ in 0..50 {
        let answer = post(&client, &endpoint, &large_snapshot(base, n))
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "after space was freed: {answer:?}");
        acknowledged.extend(answer.stored);
        n += 1;
        figures.after += 1;
    }
    assert_reads_answer(&client, &mut server, "after the fault").await;

    let stored = stored_hashes(&client, &server).await;
    let missing = lost(&acknowledged, &stored);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged snapshots lost: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(10)]
    );
    verify_api(&client, &server).await;
    let logs = server.logs().join("\n");
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(server.child.try_wait().unwrap().is_none(), "still running");

    // And once the server has stopped, the file alone: all there, and `verify` ok.
    server.signal("-TERM");
    assert!(server.wait(Duration::from_secs(20)).success());
    verify_cli(dir.path(), &url);
    let server = Binary::start(dir.path(), &["--database-url", &url], &[]);
    assert!(lost(&acknowledged, &stored_hashes(&client, &server).await).is_empty());
    if let Some(id) = stored_ack {
        let path = format!("/api/acks/{id}");
        assert_eq!(get_status(&client, &server.url(&path)).await, 200);
    }
    drop(server);

    println!(
        "disk full: {} acknowledged before; filler {} bytes; {} writes during the fault: {} \
         accepted, {} refused with 503 (slowest {:?}); writes succeeded again {:?} after the \
         filler was deleted (attempt {}); {} after; {} acknowledged in all, 0 lost, verify ok; \
         the acknowledgement posted on the full disk got {}",
        figures.before,
        figures.filler_bytes,
        figures.during,
        figures.accepted_during,
        figures.refused,
        figures.slowest_503,
        figures.recovery,
        figures.attempts_to_recover,
        figures.after,
        acknowledged.len(),
        figures.ack
    );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL restart under load
// ---------------------------------------------------------------------------------------------

/// Where the PostgreSQL server binaries are: `$PG_BINDIR`, the newest
/// `/usr/lib/postgresql/*/bin` (Debian's), or `pg_config --bindir`.
fn postgres_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max();
    if let Some((_, bin)) = newest {
        return Some(bin);
    }
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    bin.join("initdb").is_file().then_some(bin)
}

/// A PostgreSQL cluster of the test's own, in a temp dir, on a free port; stopped (immediate)
/// when dropped. As root its commands run as the `postgres` user, since `initdb` and `postgres`
/// refuse to run as root.
#[derive(Debug)]
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    /// The server's options: its port, and its socket in the temp dir.
    fn options(&self) -> String {
        format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            self.port,
            self.dir.path().display()
        )
    }

    fn start_server(&self) -> Result<Output, String> {
        self.pg_ctl(&["start", "-o", &self.options()])
    }

    fn start(bin: PathBuf) -> Result<Self, String> {
        let as_postgres = is_root();
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        if as_postgres {
            let chown = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .map_err(|error| format!("chown: {error}"))?;
            if !chown.success() {
                return Err("cannot hand the cluster's directory to the user postgres".to_owned());
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| error.to_string())?
            .port();
        let cluster = Self {
            bin,
            dir,
            port,
            as_postgres,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
        )?;
        cluster.start_server()?;
        Ok(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl ARGS` on this cluster, waiting for it, its log in the temp dir.
    fn pg_ctl(&self, args: &[&str]) -> Result<Output, String> {
        let log = self.dir.path().join("postgres.log").display().to_string();
        let data = self.data();
        let mut all = vec!["-D", &data, "-l", &log, "-w", "-t", "60"];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("cannot run {}: {error}", program.display()))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(format!(
                "{} {args:?}: {}\n{}{}",
                program.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
    }
}

/// Writers posting at once.
const WRITERS: usize = 8;
/// The server's `--request-timeout`; the clients wait a little longer, so a hang shows as a
/// client timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Posts unique snapshots to `url` until `stop`; after a 503 waits 100 ms. Every answer goes to
/// `answers`, every failure to get one (a timeout, a dropped connection) to `failures`.
async fn write_continuously(
    url: String,
    writer: usize,
    base_ms: i64,
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    failures: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
) {
    let client = Client::builder()
        .timeout(REQUEST_TIMEOUT + Duration::from_secs(2))
        .build()
        .unwrap();
    let server = format!("w{writer}");
    let mut n = 0_i64;
    while !stop.load(Ordering::Relaxed) {
        let body = json!({
            "repo": "pg-restart",
            "server": server,
            "sync_status": if n % 3 == 0 { "SYNCED" } else { "OUT_OF_SYNC" },
            "files": if n % 3 == 0 { json!([]) } else { json!([{ "name": format!("f{}.conf", n % 5) }]) },
            "last_check": at(base_ms, n),
        });
        n += 1;
        let sent = Instant::now();
        match post(&client, &url, &body).await {
            Ok(answer) => {
                let refused = answer.status == 503;
                if answer.status == 200 {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                answers.lock().unwrap().push(answer);
                if refused {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Err(error) => {
                failures.lock().unwrap().push(format!(
                    "writer {writer}, after {:?}: {error}",
                    sent.elapsed()
                ));
            }
        }
    }
}

/// `/healthz` and `/readyz` every 100 ms until `stop`, each with a 2 s timeout: their statuses
/// (0: no answer in time).
async fn probe_continuously(base: String, stop: Arc<AtomicBool>) -> Vec<(u16, u16)> {
    let client = Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut probes = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let healthz = get_status(&client, &format!("{base}/healthz")).await;
        let readyz = get_status(&client, &format!("{base}/readyz")).await;
        probes.push((healthz, readyz));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    probes
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_restart_under_load_answers_200_or_503_and_recovers() {
    restart_under_load(
        "faults::a_postgres_restart_under_load_answers_200_or_503_and_recovers",
        None,
    )
    .await;
}

/// The same with PostgreSQL down for longer than the pool's acquire timeout (5 s): stopped, 8 s
/// of nothing listening on its port, started again.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_outage_of_8_s_under_load_answers_200_or_503_and_recovers() {
    restart_under_load(
        "faults::a_postgres_outage_of_8_s_under_load_answers_200_or_503_and_recovers",
        Some(Duration::from_secs(8)),
    )
    .await;
}

/// Time allowed from PostgreSQL answering again to a write answered 200.
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);

/// 8 writers posting across `pg_ctl restart -m fast` (`outage: None`), or across `pg_ctl stop
/// -m fast`, `outage` of nothing, and `pg_ctl start`.
async fn restart_under_load(test: &str, outage: Option<Duration>) {
    let Some(bin) = postgres_bindir() else {
        did_not_run(
            test,
            "the PostgreSQL server binaries (initdb, pg_ctl) are not in /usr/lib/postgresql/*/bin \
             nor where pg_config says",
            "`./test.sh` installs them (Debian package postgresql), or set PG_BINDIR",
        );
        return;
    };
    let cluster = match Cluster::start(bin) {
        Ok(cluster) => cluster,
        Err(why) => {
            did_not_run(
                test,
                &format!("cannot run a PostgreSQL cluster of its own ({why})"),
                "as root it runs initdb and pg_ctl as the user postgres (runuser), otherwise \
                 as the user running the tests",
            );
            return;
        }
    };
    let url = cluster.url();
    let timeout = format!("{}s", REQUEST_TIMEOUT.as_secs());
    let mut server = Binary::start(
        cluster.dir.path(),
        &["--database-url", &url, "--request-timeout", &timeout],
        &[],
    );
    let base = base_ms();
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let probes = tokio::spawn(probe_continuously(server.url(""), Arc::clone(&stop)));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            tokio::spawn(write_continuously(
                server.url("/api/status"),
                writer,
                // Each writer its own range of milliseconds, on its own target.
                base + writer as i64 * 1_000_000,
                Arc::clone(&stop),
                Arc::clone(&answers),
                Arc::clone(&failures),
                Arc::clone(&accepted),
            ))
        })
        .collect();

    // Load first, then the restart in the middle of it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted.load(Ordering::Relaxed) < 200 {
        assert!(Instant::now() < deadline, "fewer than 200 writes in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restart_began = Instant::now();
    let restarted = {
        let restart = tokio::task::spawn_blocking(move || {
            let outcome = match outage {
                None => cluster.pg_ctl(&["restart", "-m", "fast"]),
                Some(outage) => cluster.pg_ctl(&["stop", "-m", "fast"]).and_then(|_| {
                    std::thread::sleep(outage);
                    cluster.start_server()
                }),
            };
            (cluster, outcome)
        });
        let (cluster, outcome) = restart.await.unwrap();
        outcome.unwrap_or_else(|why| panic!("pg_ctl: {why}"));
        (cluster, Instant::now())
    };
    let (cluster, restart_done) = restarted;

    // Recovered: a write sent after the restart is answered 200, without touching the server.
    let recovered = loop {
        let first = answers
            .lock()
            .unwrap()
            .iter()
            .filter(|answer| answer.status == 200 && answer.sent >= restart_done)
            .map(|answer| answer.answered)
            .min();
        if let Some(first) = first {
            break first;
        }
        assert!(
            restart_done.elapsed() < RECOVERY_LIMIT,
            "no write succeeded within {RECOVERY_LIMIT:?} of PostgreSQL's return; failures: \
             {:?}; log: {}",
            failures.lock().unwrap(),
            unusual_log(&mut server)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let probes = probes.await.unwrap();
    // Liveness never fails for the database's sake; readiness says whether it answers.
    assert!(
        probes.iter().all(|(healthz, _)| *healthz == 200),
        "/healthz: {probes:?}"
    );
    assert!(
        probes
            .iter()
            .all(|(_, readyz)| *readyz == 200 || *readyz == 503),
        "/readyz: {probes:?}"
    );
    let client = Client::new();
    assert_eq!(get_status(&client, &server.url("/readyz")).await, 200);

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "requests without an answer: {failures:?}; log: {}",
        unusual_log(&mut server)
    );
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let limit = REQUEST_TIMEOUT + Duration::from_secs(1);
    for answer in &answers {
        assert!(
            answer.status == 200 || answer.is_documented_503(),
            "neither 200 nor 503 with Retry-After: {answer:?}"
        );
        assert!(
            answer.answered - answer.sent <= limit,
            "answered after {:?}, beyond the request timeout: {answer:?}",
            answer.answered - answer.sent
        );
    }
    let acknowledged: HashMap<i64, String> = answers
        .iter()
        .filter_map(|answer| answer.stored.clone())
        .collect();
    let last = post(
        &client,
        &server.url("/api/status"),
        &json!({
            "repo": "pg-restart", "server": "after", "sync_status": "SYNCED", "files": [],
            "last_check": at(base, 0),
        }),
    )
    .await
    .unwrap();
    assert_eq!(last.status, 200, "{last:?}");

    // Every 200 is in the database, with the hash it was answered with.
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let rows: Vec<(i64, String)> = sqlx::query_as("select id, encode(hash, 'hex') from snapshots")
        .fetch_all(&mut connection)
        .await
        .unwrap();
    let stored: HashMap<i64, String> = rows.into_iter().collect();
    let missing = lost(&acknowledged, &stored);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged snapshots are not stored: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(10)]
    );
    verify_api(&client, &server).await;
    verify_cli(cluster.dir.path(), &url);
    let logs = server.logs().join("\n");
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(server.child.try_wait().unwrap().is_none(), "still running");

    let during: Vec<&Answer> = answers
        .iter()
        .filter(|answer| answer.answered >= restart_began && answer.sent <= recovered)
        .collect();
    let refused = answers.iter().filter(|answer| answer.status == 503).count();
    let not_ready = probes.iter().filter(|(_, readyz)| *readyz == 503).count();
    let slowest = answers
        .iter()
        .map(|answer| answer.answered - answer.sent)
        .max()
        .unwrap_or_default();
    println!(
        "{test}: {} writes answered by {WRITERS} writers, {} acknowledged (all \
         stored), {} refused with 503; during the fault (restart began to first 200 after it): \
         {} answered, {} 200, {} 503; pg_ctl took {:?}; first 200 {:?} after it returned \
         ({:?} after it began); slowest answer {slowest:?}; /healthz 200 throughout, /readyz 503 \
         {not_ready} of {} probes; verify ok",
        answers.len(),
        acknowledged.len(),
        refused,
        during.len(),
        during.iter().filter(|answer| answer.status == 200).count(),
        during.iter().filter(|answer| answer.status == 503).count(),
        restart_done - restart_began,
        recovered.saturating_duration_since(restart_done),
        recovered - restart_began,
        probes.len(),
    );
    drop(server);
    drop(cluster);
}
