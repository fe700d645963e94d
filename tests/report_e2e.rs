//! `report` end to end: the compiled server on a temporary SQLite file, real Ansible (from
//! `target/ansible-venv`, which `./test.sh` creates, or `ANSIBLE_PLAYBOOK`) running
//! the example playbooks and the seed's playbook against localhost on managed files in a temporary
//! directory standing in for /etc, and `/status.json` read back after every step.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::post;
use common::TcpServer;
use common::binary::{BINARY, Binary};
use common::tools;
use serde_json::{Value, json};
use tempfile::TempDir;

const REVISION: &str = "3f2c1ab";
const RUN_URL: &str = "https://ci.example.org/repos/7/pipeline/912";

fn example(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(path)
        .display()
        .to_string()
}

/// A managed root, Ansible's scratch directories, inventories and a running server.
struct Lab {
    dir: TempDir,
    root: PathBuf,
    ansible: PathBuf,
    server: Binary,
    client: reqwest::Client,
}

impl Lab {
    /// `None` (said loudly) when Ansible is not installed.
    fn start(test: &str) -> Option<Self> {
        let ansible = tools::ANSIBLE_PLAYBOOK.require(test)?;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("etc");
        std::fs::create_dir(&root).unwrap();
        // An empty config of our own, so no ansible.cfg of the machine changes the output.
        std::fs::write(dir.path().join("ansible.cfg"), "[defaults]\n").unwrap();
        let server = start_server(dir.path());
        Some(Self {
            dir,
            root,
            ansible,
            server,
            client: reqwest::Client::new(),
        })
    }

    fn inventory(&self, name: &str, hosts: &[&str]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, hosts.join("\n") + "\n").unwrap();
        path.display().to_string()
    }

    /// `ansible-playbook -i INVENTORY PLAYBOOK -e managed_root=ROOT`.
    fn playbook_args(&self, inventory: &str, playbook: &str) -> Vec<String> {
        vec![
            self.ansible.display().to_string(),
            "-i".to_owned(),
            inventory.to_owned(),
            example(&format!("ansible/playbooks/{playbook}")),
            "-e".to_owned(),
            format!("managed_root={}", self.root.display()),
        ]
    }

    /// A command with Ansible confined to the lab and no reporting settings from outside.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        for (name, _) in std::env::vars() {
            if name.starts_with("GITOPS_STATUS_")
                || name.starts_with("ANSIBLE_")
                || matches!(name.as_str(), "REPO_NAME" | "SERVER_NAME")
            {
                command.env_remove(name);
            }
        }
        let scratch = self.dir.path();
        command
            .current_dir(scratch)
            .env("ANSIBLE_CONFIG", scratch.join("ansible.cfg"))
            .env("ANSIBLE_HOME", scratch.join("ansible-home"))
            .env("ANSIBLE_LOCAL_TEMP", scratch.join("ansible-tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_TIMEOUT", "10")
            .env("CI_COMMIT_SHA", REVISION)
            .env("CI_PIPELINE_URL", RUN_URL)
            .stdin(Stdio::null());
        command
    }

    fn apply(&self, inventory: &str) {
        let args = self.playbook_args(inventory, "apply.yml");
        let output = self.command(&args[0]).args(&args[1..]).output().unwrap();
        assert!(
            output.status.success(),
            "apply failed:\n{}",
            text(&output.stdout)
        );
        for file in ["rsyslog.conf", "rsyslog.d/30-lab.conf"] {
            assert!(
                self.root.join(file).is_file(),
                "apply did not install {file}"
            );
        }
    }

    /// `gitops-status-server report [flags] -- ansible-playbook ... PLAYBOOK`.
    fn report(&self, flags: &[&str], inventory: &str, playbook: &str) -> Output {
        self.command(BINARY)
            .args(["report", "--url", &self.server.url(""), "--repo", "rsyslog"])
            .arg("--strip-prefix")
            .arg(&self.root)
            .args(flags)
            .arg("--")
            .args(self.playbook_args(inventory, playbook))
            .output()
            .unwrap()
    }

    async fn get(&self, path: &str) -> Vec<Value> {
        let response = self
            .client
            .get(format!("{}{path}", self.server.url("")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        match response.json().await.unwrap() {
            Value::Array(rows) => rows,
            other => panic!("{path}: not an array: {other}"),
        }
    }

    /// `/status.json` reduced to what the drift check decides, one entry per target.
    async fn status(&self) -> Vec<Value> {
        self.get("/status.json")
            .await
            .into_iter()
            .map(|row| {
                assert_eq!(row["revision"], REVISION, "{row}");
                assert_eq!(row["run_url"], RUN_URL, "{row}");
                json!({
                    "repo": row["repo"],
                    "server": row["server"],
                    "state": row["state"],
                    "drift_count": row["drift_count"],
                    "files": row["files"],
                    "message": row["message"],
                })
            })
            .collect()
    }

    async fn snapshots_stored(&self) -> usize {
        self.get("/history?limit=10000").await.len()
    }
}

/// Drift in a managed file: a line the repo does not have.
fn drift(path: &Path) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(b"*.* /var/log/everything.log\n")
        .unwrap();
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code and the four steps, and returns the snapshots printed on stdout.
fn finished(output: &Output, code: i32) -> Vec<Value> {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr:\n{stderr}");
    for step in 1..=4 {
        assert!(
            stderr.contains(&format!("Step {step}/4: ")),
            "step {step}:\n{stderr}"
        );
    }
    text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("stdout carries only JSON lines"))
        .collect()
}

fn target(server: &str, state: &str, files: &[&str], message: Value) -> Value {
    json!({
        "repo": "rsyslog",
        "server": server,
        "state": state,
        "drift_count": files.len(),
        "files": files.iter().map(|name| json!({ "name": name })).collect::<Vec<_>>(),
        "message": message,
    })
}

#[tokio::test]
async fn drift_lifecycle_with_real_ansible() {
    let Some(lab) = Lab::start("drift_lifecycle_with_real_ansible") else {
        return;
    };
    let local = lab.inventory(
        "local.ini",
        &["lab ansible_connection=local ansible_python_interpreter={{ansible_playbook_python}}"],
    );
    let name_it = ["--server", "rsyslog-lab"];
    lab.apply(&local);

    // In sync: the single host `lab` is reported under SERVER_NAME.
    let printed = finished(&lab.report(&name_it, &local, "drift-check.yml"), 0);
    assert_eq!(printed.len(), 1);
    assert_eq!(printed[0]["sync_status"], "SYNCED");
    assert_eq!(
        lab.status().await,
        [target("rsyslog-lab", "SYNCED", &[], Value::Null)]
    );

    // A local edit is drift; --fail-on-drift passes it through as exit code 4.
    let edited = lab.root.join("rsyslog.d/30-lab.conf");
    drift(&edited);
    let fail_on_drift = ["--server", "rsyslog-lab", "--fail-on-drift"];
    finished(&lab.report(&fail_on_drift, &local, "drift-check.yml"), 4);
    assert_eq!(
        lab.status().await,
        [target(
            "rsyslog-lab",
            "OUT_OF_SYNC",
            &["rsyslog.d/30-lab.conf"],
            Value::Null
        )]
    );

    // A deleted file is drift too; this run goes through the seed's script name.
    std::fs::remove_file(lab.root.join("rsyslog.conf")).unwrap();
    let binary_dir = Path::new(BINARY).parent().unwrap();
    let ansible_dir = lab.ansible.parent().unwrap();
    let path = std::env::join_paths(
        [binary_dir.to_owned(), ansible_dir.to_owned()]
            .into_iter()
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
    )
    .unwrap();
    let args = lab.playbook_args(&local, "drift-check.yml");
    let output = lab
        .command(example("update-gitops-status.sh"))
        .args(&args[1..3])
        .args(&args[4..])
        .env("PATH", path)
        .env("GITOPS_STATUS_SERVER_URL", lab.server.url(""))
        .env("REPO_NAME", "rsyslog")
        .env("SERVER_NAME", "rsyslog-lab")
        .env("GITOPS_STATUS_STRIP_PREFIX", &lab.root)
        .env("DRIFT_CHECK_PLAYBOOK", &args[3])
        .output()
        .unwrap();
    finished(&output, 0);
    assert_eq!(
        lab.status().await,
        [target(
            "rsyslog-lab",
            "OUT_OF_SYNC",
            &["rsyslog.conf", "rsyslog.d/30-lab.conf"],
            Value::Null
        )]
    );

    // Re-applying the repository brings it back in sync.
    lab.apply(&local);
    finished(&lab.report(&fail_on_drift, &local, "drift-check.yml"), 0);
    assert_eq!(
        lab.status().await,
        [target("rsyslog-lab", "SYNCED", &[], Value::Null)]
    );

    // Output that shows no host's run (here: only the task list) is exit 3, and nothing is posted.
    let stored = lab.snapshots_stored().await;
    let output = lab
        .command(BINARY)
        .args(["report", "--url", &lab.server.url(""), "--repo", "rsyslog"])
        .args(name_it)
        .arg("--")
        .args(lab.playbook_args(&local, "drift-check.yml"))
        .arg("--list-tasks")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("error: no drift-check result: no host ran"),
        "{}",
        text(&output.stderr)
    );
    assert!(output.stdout.is_empty());
    assert_eq!(lab.snapshots_stored().await, stored);

    // Two hosts, one unreachable, output captured first and piped in: one snapshot per host.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let two = lab.inventory(
        "two.ini",
        &[
            "rsyslog-lab ansible_connection=local ansible_python_interpreter={{ansible_playbook_python}}",
            &format!("ghost ansible_host=127.0.0.1 ansible_port={closed_port} ansible_connection=ssh"),
        ],
    );
    let args = lab.playbook_args(&two, "drift-check.yml");
    let captured = lab.command(&args[0]).args(&args[1..]).output().unwrap();
    assert_eq!(
        captured.status.code(),
        Some(4),
        "ansible-playbook: 4 = unreachable host"
    );
    let mut report = lab
        .command(BINARY)
        .args(["report", "--url", &lab.server.url(""), "--repo", "rsyslog"])
        .args(["--server", "rsyslog-lab", "--fail-on-drift", "--input", "-"])
        .arg("--strip-prefix")
        .arg(&lab.root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    report
        .stdin
        .take()
        .unwrap()
        .write_all(&captured.stdout)
        .unwrap();
    let output = report.wait_with_output().unwrap();
    let printed = finished(&output, 5);
    assert_eq!(printed.len(), 2);
    // SERVER_NAME is one of the hosts, so it names its own snapshot and there is nothing to say.
    assert!(!text(&output.stderr).contains("SERVER_NAME="));
    let status = lab.status().await;
    assert_eq!(status.len(), 2, "{status:?}");
    assert_eq!(status[1], target("rsyslog-lab", "SYNCED", &[], Value::Null));
    let message = status[0]["message"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        status[0],
        target("ghost", "ERROR", &[], Value::String(message.clone()))
    );
    assert!(
        message.starts_with("host unreachable: ")
            && message.contains(&format!("port {closed_port}")),
        "{message}"
    );
}

/// The seed's playbook (tests/fixtures/ansible/seed-drift-check.yml, its snippet verbatim) prints
/// markers only on drift. Run as the seed's pipeline runs it: GITOPS_STATUS_SERVER_URL set to the
/// full `.../api/status` endpoint, REPO_NAME and SERVER_NAME from the environment.
#[tokio::test]
async fn the_seed_playbook_verbatim_with_real_ansible() {
    let Some(lab) = Lab::start("the_seed_playbook_verbatim_with_real_ansible") else {
        return;
    };
    let seed_playbook = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ansible/seed-drift-check.yml")
        .display()
        .to_string();
    let host = |name: &str, root: &Path| {
        format!(
            "{name} ansible_connection=local ansible_python_interpreter={{{{ansible_playbook_python}}}} \
             managed_root={}",
            root.display()
        )
    };
    let seed_report = |inventory: &str, server_name: &str| {
        lab.command(BINARY)
            .arg("report")
            .env("GITOPS_STATUS_SERVER_URL", lab.server.url("/api/status"))
            .env("REPO_NAME", "rsyslog")
            .env("SERVER_NAME", server_name)
            .arg("--")
            .arg(&lab.ansible)
            .args(["-i", inventory, &seed_playbook, "-e"])
            .arg(format!("repo_files={}", example("ansible/files")))
            .output()
            .unwrap()
    };
    let local = lab.inventory("seed.ini", &[&host("10.0.0.7", &lab.root)]);
    lab.apply(&lab.inventory("apply.ini", &[&host("lab", &lab.root)]));

    // Clean: no marker at all, and the seed's "Synced State" JSON under SERVER_NAME.
    let output = seed_report(&local, "rsyslog-lab");
    let mut printed = finished(&output, 0);
    assert_eq!(printed.len(), 1);
    assert!(printed[0]["last_check"].is_string());
    printed[0].as_object_mut().unwrap().remove("last_check");
    assert_eq!(
        printed[0],
        json!({
            "repo": "rsyslog",
            "server": "rsyslog-lab",
            "sync_status": "SYNCED",
            "drift_count": 0,
            "files": [],
            "revision": REVISION,
            "run_url": RUN_URL,
        })
    );
    let stderr = text(&output.stderr);
    assert!(
        !stderr.contains("\"msg\": \"DRIFTED_FILES=") && stderr.contains("skipping: [10.0.0.7]"),
        "the seed prints no marker when clean:\n{stderr}"
    );
    for line in [
        "  rsyslog-lab: SYNCED (no DRIFTED_FILES= or SYNC_STATUS= marker, and the PLAY RECAP \
         shows the run completed with no failed or unreachable task: the seed's playbook prints \
         its markers only on drift, so this is SYNCED)\n"
            .to_owned(),
        format!(
            "Step 4/4: Sending status to gitops-status-server at {}...\n",
            lab.server.url("/api/status")
        ),
    ] {
        assert!(stderr.contains(&line), "{line}\n{stderr}");
    }
    assert_eq!(
        lab.status().await,
        [target("rsyslog-lab", "SYNCED", &[], Value::Null)]
    );

    // Drifted: the markers name the seed's hard-coded /etc path, then its fail task fails the
    // host; that is drift, not an error.
    let main = lab.root.join("rsyslog.conf");
    drift(&main);
    let output = seed_report(&local, "rsyslog-lab");
    assert!(text(&output.stderr).contains("the playbook ended with exit status: 2"));
    finished(&output, 0);
    assert_eq!(
        lab.status().await,
        [target(
            "rsyslog-lab",
            "OUT_OF_SYNC",
            &["rsyslog.conf"],
            Value::Null
        )]
    );

    // Two hosts in one run, the drifted one named SERVER_NAME, the other clean: each under its
    // inventory name, the clean one SYNCED although it printed nothing.
    let clean_root = lab.dir.path().join("etc-2");
    for file in ["rsyslog.conf", "rsyslog.d/30-lab.conf"] {
        let to = clean_root.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(Path::new(&example("ansible/files")).join(file), to).unwrap();
    }
    let two = lab.inventory(
        "seed-two.ini",
        &[&host("rsyslog-lab", &lab.root), &host("lab-2", &clean_root)],
    );
    let output = seed_report(&two, "rsyslog-lab");
    assert_eq!(finished(&output, 0).len(), 2);
    assert!(!text(&output.stderr).contains("is not one of"));
    assert_eq!(
        lab.status().await,
        [
            target("lab-2", "SYNCED", &[], Value::Null),
            target("rsyslog-lab", "OUT_OF_SYNC", &["rsyslog.conf"], Value::Null),
        ]
    );

    // SERVER_NAME naming none of the hosts: said in the step output; nothing posted under it.
    let output = seed_report(&two, "elsewhere");
    finished(&output, 0);
    assert!(
        text(&output.stderr).contains(
            "  SERVER_NAME=elsewhere is not one of the 2 hosts this run checked (rsyslog-lab, \
             lab-2): each host is reported under its inventory name, and nothing under elsewhere\n"
        ),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(lab.status().await.len(), 2);
}

/// The exit codes `report --help` documents, against the real server, from captured output.
#[tokio::test]
async fn exit_codes_from_captured_output() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let fixture = |name: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ansible")
            .join(name)
    };
    let report = |url: &str, args: &[&str]| {
        bare_report()
            .args(["report", "--url", url, "--retries", "0"])
            .args(args)
            .output()
            .unwrap()
    };
    let stored = || async {
        reqwest::get(format!("{}/history", server.url("")))
            .await
            .unwrap()
            .json::<Vec<Value>>()
            .await
            .unwrap()
    };
    let synced = fixture("synced.out");
    let synced = synced.to_str().unwrap();

    // --dry-run prints the snapshot and sends nothing.
    let output = report(
        &server.url(""),
        &["--repo", "rsyslog", "--dry-run", "--input", synced],
    );
    assert_eq!(finished(&output, 0)[0]["server"], "lab");
    assert!(stored().await.is_empty());

    // The server's 422 is exit 1, with the field it names.
    let output = report(&server.url(""), &["--repo", "rs\tyslog", "--input", synced]);
    finished(&output, 1);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("HTTP 422") && stderr.contains("repo: must not contain control characters"),
        "{stderr}"
    );

    // Recorded: exit 0, and --fail-on-drift turns drift into 4 and an error into 5. A base URL
    // with a trailing slash posts to /api/status like one without.
    let drifted = fixture("seed-one-line.out");
    let output = report(
        &server.url("/"),
        &["--repo", "rsyslog", "--input", drifted.to_str().unwrap()],
    );
    finished(&output, 0);
    let unreachable = fixture("unresolvable-host.out");
    let output = report(
        &server.url(""),
        &[
            "--repo",
            "rsyslog",
            "--fail-on-drift",
            "--input",
            unreachable.to_str().unwrap(),
        ],
    );
    finished(&output, 5);
    let history = stored().await;
    let servers: Vec<(&str, &str)> = history
        .iter()
        .map(|row| {
            (
                row["server"].as_str().unwrap(),
                row["sync_status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        servers,
        [
            ("rsyslog-lab.invalid", "ERROR"),
            ("rsyslog-lab", "OUT_OF_SYNC")
        ]
    );
    assert_eq!(
        history[1]["files_text"],
        "rsyslog.conf, rsyslog.d/30-lab.conf"
    );

    // The seed's playbook on a clean run prints no marker: its completed run is SYNCED, posted
    // to the full endpoint URL the seed's pipeline sets (not to /api/status/api/status).
    let seed_clean = fixture("seed-synced.out");
    let output = report(
        &server.url("/api/status"),
        &[
            "--repo",
            "rsyslog",
            "--server",
            "rsyslog-seed",
            "--input",
            seed_clean.to_str().unwrap(),
        ],
    );
    assert_eq!(finished(&output, 0)[0]["sync_status"], "SYNCED");
    let stderr = text(&output.stderr);
    for line in [
        "  rsyslog-seed: SYNCED (no DRIFTED_FILES= or SYNC_STATUS= marker, and the PLAY RECAP \
         shows the run completed with no failed or unreachable task: the seed's playbook prints \
         its markers only on drift, so this is SYNCED)\n",
        &format!(
            "Step 4/4: Sending status to gitops-status-server at {}...\n",
            server.url("/api/status")
        ),
    ] {
        assert!(stderr.contains(line), "{line}\n{stderr}");
    }
    let latest = &stored().await[0];
    assert_eq!(
        (
            &latest["server"],
            &latest["sync_status"],
            &latest["drift_count"]
        ),
        (&json!("rsyslog-seed"), &json!("SYNCED"), &json!(0))
    );

    // A server that is not there: 1 after the retries.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let output = report(&nobody, &["--repo", "rsyslog", "--input", synced]);
    finished(&output, 1);
    assert!(text(&output.stderr).contains("not recorded after 1 attempt(s): cannot connect"));

    // No result: output cut before its PLAY RECAP (no marker, no completed run), an unreadable
    // input, a command that cannot start. Nothing posted.
    let apply = std::fs::read_to_string(fixture("apply-no-markers.out")).unwrap();
    let cut = dir.path().join("cut.out");
    std::fs::write(&cut, apply.split("PLAY RECAP").next().unwrap()).unwrap();
    let output = report(
        &server.url(""),
        &["--repo", "rsyslog", "--input", cut.to_str().unwrap()],
    );
    assert!(
        text(&output.stderr).contains(
            "error: no drift-check result: no host printed DRIFTED_FILES= or SYNC_STATUS=, and \
             no PLAY RECAP line shows a host whose run completed"
        ),
        "{}",
        text(&output.stderr)
    );
    for args in [
        vec!["--input".to_owned(), cut.display().to_string()],
        vec![
            "--input".to_owned(),
            dir.path().join("missing.out").display().to_string(),
        ],
        vec![
            "--".to_owned(),
            dir.path().join("no-such-ansible").display().to_string(),
        ],
    ] {
        let mut all = vec!["--repo", "rsyslog"];
        all.extend(args.iter().map(String::as_str));
        let output = report(&server.url(""), &all);
        assert_eq!(
            output.status.code(),
            Some(3),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert!(output.stdout.is_empty());
    }
    assert_eq!(stored().await.len(), 3);

    // Bad configuration, exit 2: each message names the flag and the environment variable.
    for (url, says) in [
        (
            "ftp://gitops",
            "--url / GITOPS_STATUS_SERVER_URL: \"ftp://gitops\" must be an http:// or https:// \
             URL with a host",
        ),
        (
            "gitops:8080",
            "--url / GITOPS_STATUS_SERVER_URL: \"gitops:8080\" has no scheme; write \
             http://gitops:8080",
        ),
        (
            "localhost",
            "--url / GITOPS_STATUS_SERVER_URL: \"localhost\" has no scheme; write \
             http://localhost",
        ),
    ] {
        let output = report(url, &["--repo", "rsyslog", "--input", synced]);
        assert_eq!(output.status.code(), Some(2), "{url}");
        assert!(
            text(&output.stderr).contains(says),
            "{}",
            text(&output.stderr)
        );
    }
    let output = bare_report()
        .args(["report", "--input", synced])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output.stderr),
        "error: no server to report to: set --url / GITOPS_STATUS_SERVER_URL to the server's base \
         URL, e.g. http://gitops-status-server:80 (or the full http://.../api/status endpoint)\n\
         error: no repository name: set --repo / REPO_NAME to the repository whose configuration \
         was checked, e.g. rsyslog\n"
    );
    // The environment variables alone are enough.
    let output = bare_report()
        .args(["report", "--input", synced, "--dry-run"])
        .env("GITOPS_STATUS_SERVER_URL", "gitops:8080")
        .env("REPO_NAME", "rsyslog")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("\"gitops:8080\" has no scheme; write http://gitops:8080"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(stored().await.len(), 3);
}

/// `report` with no reporting setting from the environment of the test run.
fn bare_report() -> Command {
    let mut command = Command::new(BINARY);
    for name in [
        "GITOPS_STATUS_SERVER_URL",
        "REPO_NAME",
        "SERVER_NAME",
        "GITOPS_STATUS_INPUT",
        "GITOPS_STATUS_TOKEN",
        "GITOPS_STATUS_DRY_RUN",
        "GITOPS_STATUS_FAIL_ON_DRIFT",
    ] {
        command.env_remove(name);
    }
    command.stdin(Stdio::null());
    command
}

/// `report` of captured output in which host `lab` drifted in 12,000 files (named in reverse
/// order, so the cut must sort them), posted to `url`.
async fn report_twelve_thousand_files(dir: &Path, url: String) -> Output {
    let names: Vec<String> = (0..12_000)
        .rev()
        .map(|n| format!("/etc/conf.d/{n:05}.conf"))
        .collect();
    let input = dir.join("huge.out");
    std::fs::write(
        &input,
        format!(
            "ok: [lab] => {{\"msg\": \"DRIFTED_FILES={}\"}}\n\
             ok: [lab] => {{\"msg\": \"SYNC_STATUS=OUT_OF_SYNC\"}}\n\n\
             PLAY RECAP ***\nlab : ok=2 changed=0 unreachable=0 failed=0\n",
            names.join(",")
        ),
    )
    .unwrap();
    tokio::task::spawn_blocking(move || {
        bare_report()
            .args(["report", "--url", &url, "--repo", "rsyslog", "--input"])
            .arg(&input)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// 12,000 drifted files: the server gets the first 10,000 names in sorted order, the true count
/// and a message; the step output names five and counts the rest. A tiny real HTTP server takes
/// the POST, so this checks what the client sends whatever the server accepts.
#[tokio::test]
async fn twelve_thousand_drifted_files_are_sent_cut_and_logged_short() {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = received.clone();
    let app = Router::new().route(
        "/api/status",
        post(move |axum::Json(body): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                axum::Json(json!({ "id": 1 }))
            }
        }),
    );
    let server = TcpServer::start(app).await;
    let dir = tempfile::tempdir().unwrap();
    let output = report_twelve_thousand_files(dir.path(), server.url("")).await;
    finished(&output, 0);
    let cut = "the drift check found 12000 drifted files; the list was cut to the first 10000 \
               names in sorted order (the most a snapshot holds), drift_count has the true number";

    let body = received.lock().unwrap().pop().expect("one POST");
    let files: Vec<&str> = body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["name"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..10_000).map(|n| format!("conf.d/{n:05}.conf")).collect();
    assert_eq!(files, expected);
    assert_eq!(
        (&body["sync_status"], &body["drift_count"], &body["message"]),
        (&json!("OUT_OF_SYNC"), &json!(12_000), &json!(cut))
    );

    let stderr = text(&output.stderr);
    let line = format!(
        "  lab: OUT_OF_SYNC, 12000 drifted files: conf.d/00000.conf, conf.d/00001.conf, \
         conf.d/00002.conf, conf.d/00003.conf, conf.d/00004.conf and 11995 more ({cut})\n"
    );
    assert!(stderr.contains(&line), "{stderr}");
    let longest = stderr.lines().map(str::len).max().unwrap_or_default();
    assert!(longest < 400, "a {longest}-character log line:\n{stderr}");
    server.stop().await;
}

/// The same cut against the real server: it records the drift (not a 422), with the true count
/// beside the 10,000 names and the message that says the list was cut.
#[tokio::test]
async fn the_real_server_records_a_cut_list_of_twelve_thousand_files() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let output = report_twelve_thousand_files(dir.path(), server.url("/api/status")).await;
    finished(&output, 0);

    let status: Vec<Value> = reqwest::get(server.url("/status.json?repo=rsyslog&server=lab"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let [row] = status.as_slice() else {
        panic!("one target: {status:?}")
    };
    assert_eq!(
        (&row["sync_status"], &row["drift_count"]),
        (&json!("OUT_OF_SYNC"), &json!(12_000))
    );
    let files = row["files"].as_array().unwrap();
    assert_eq!(files.len(), 10_000);
    assert_eq!(files[0]["name"], "conf.d/00000.conf");
    assert_eq!(files[9_999]["name"], "conf.d/09999.conf");
    assert!(
        row["message"]
            .as_str()
            .unwrap()
            .contains("the list was cut to the first 10000 names"),
        "{row}"
    );
}

#[test]
fn the_wrapper_script_is_shellcheck_clean() {
    let script = example("update-gitops-status.sh");
    let Some(shellcheck) = tools::SHELLCHECK.require("the_wrapper_script_is_shellcheck_clean")
    else {
        return;
    };
    let output = Command::new(shellcheck).arg(&script).output().unwrap();
    assert!(
        output.status.success(),
        "shellcheck {script}:\n{}",
        text(&output.stdout)
    );
}

/// Loads the Woodpecker example with the Python that runs Ansible (PyYAML comes with it).
#[test]
fn the_woodpecker_example_deploys_on_push_and_checks_on_the_cron() {
    let Some(ansible) = tools::ANSIBLE_PLAYBOOK
        .require("the_woodpecker_example_deploys_on_push_and_checks_on_the_cron")
    else {
        return;
    };
    let shebang = std::fs::read_to_string(&ansible).unwrap();
    let python = shebang
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("#!"))
        .map(str::trim)
        .expect("ansible-playbook starts with a #! line naming its Python");
    let script = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)";
    let output = Command::new(python)
        .args(["-c", script, &example(".woodpecker.yml")])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let pipeline: Value = serde_json::from_slice(&output.stdout).unwrap();
    let steps: Vec<(&str, &Value)> = pipeline["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| (step["name"].as_str().unwrap(), &step["when"][0]))
        .collect();
    assert_eq!(
        steps,
        [
            (
                "syntax-check",
                &json!({ "event": ["push", "pull_request"] })
            ),
            ("deploy", &json!({ "event": "push", "branch": "master" })),
            (
                "update-gitops-status",
                &json!({ "event": "push", "branch": "master" })
            ),
            (
                "gitops_sync_check",
                &json!({ "event": "cron", "cron": "gitops_sync_check" })
            ),
        ]
    );
    for step in &pipeline["steps"].as_array().unwrap()[2..] {
        assert_eq!(step["environment"]["REPO_NAME"], "rsyslog");
        assert!(step["environment"]["GITOPS_STATUS_SERVER_URL"].is_string());
        let commands = step["commands"].to_string();
        assert!(
            commands.contains(
                "gitops-status-server report -- ansible-playbook ansible/playbooks/drift-check.yml"
            ),
            "{commands}"
        );
    }
}

/// The server binary on an ephemeral port over `status.db` in `dir`.
fn start_server(dir: &Path) -> Binary {
    let database_url = format!("sqlite://{}", dir.join("status.db").display());
    Binary::start(dir, &["--database-url", &database_url], &[])
}
