//! `report` end to end: the compiled server on a temporary SQLite file, real Ansible (from
//! `target/ansible-venv`, which `.ci/run` creates, or `ANSIBLE_PLAYBOOK`) running the example
//! playbooks against localhost on managed files in a temporary directory standing in for /etc,
//! and `/status.json` read back after every step.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::binary::{BINARY, Binary};
use serde_json::{Value, json};
use tempfile::TempDir;

const REVISION: &str = "3f2c1ab";
const RUN_URL: &str = "https://ci.example.org/repos/7/pipeline/912";

/// `ANSIBLE_PLAYBOOK`, or the venv `.ci/run` installs ansible-core into. Missing Ansible fails the
/// test: a skipped end-to-end test would hide the gap it exists to close.
fn ansible_playbook() -> PathBuf {
    let path = std::env::var_os("ANSIBLE_PLAYBOOK").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ansible-venv/bin/ansible-playbook"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "ansible-playbook not found at {}: run .ci/run (it installs ansible-core into \
         target/ansible-venv), or set ANSIBLE_PLAYBOOK to an ansible-playbook executable",
        path.display()
    );
    path
}

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
    fn start() -> Self {
        let ansible = ansible_playbook();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("etc");
        std::fs::create_dir(&root).unwrap();
        // An empty config of our own, so no ansible.cfg of the machine changes the output.
        std::fs::write(dir.path().join("ansible.cfg"), "[defaults]\n").unwrap();
        let server = start_server(dir.path());
        Self {
            dir,
            root,
            ansible,
            server,
            client: reqwest::Client::new(),
        }
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
    let lab = Lab::start();
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
    std::fs::OpenOptions::new()
        .append(true)
        .open(&edited)
        .unwrap()
        .write_all(b"*.* /var/log/everything.log\n")
        .unwrap();
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

    // A playbook without markers is a clear error, and nothing is posted.
    let stored = lab.snapshots_stored().await;
    let output = lab.report(&name_it, &local, "apply.yml");
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("no host printed DRIFTED_FILES= or SYNC_STATUS="),
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
    assert!(text(&output.stderr).contains("SERVER_NAME=rsyslog-lab is ignored"));
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
        Command::new(BINARY)
            .args(["report", "--url", url, "--retries", "0"])
            .args(args)
            .env_remove("GITOPS_STATUS_INPUT")
            .env_remove("SERVER_NAME")
            .stdin(Stdio::null())
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

    // Recorded: exit 0, and --fail-on-drift turns drift into 4 and an error into 5.
    let drifted = fixture("seed-one-line.out");
    let output = report(
        &server.url(""),
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

    // A server that is not there: 1 after the retries.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let output = report(&nobody, &["--repo", "rsyslog", "--input", synced]);
    finished(&output, 1);
    assert!(text(&output.stderr).contains("not recorded after 1 attempt(s): cannot connect"));

    // No result: no markers, an unreadable input, a command that cannot start. Nothing posted.
    for args in [
        vec!["--input", fixture("apply-no-markers.out").to_str().unwrap()]
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>(),
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
    assert_eq!(stored().await.len(), 2);

    // Bad configuration: clap's usage error.
    let output = report("ftp://gitops", &["--repo", "rsyslog", "--input", synced]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("--url"));
}

#[test]
fn the_wrapper_script_is_shellcheck_clean() {
    let script = example("update-gitops-status.sh");
    let output = Command::new("shellcheck")
        .arg(&script)
        .output()
        .unwrap_or_else(|error| {
            panic!("shellcheck cannot run ({error}): run .ci/run, or apt-get install shellcheck")
        });
    assert!(
        output.status.success(),
        "shellcheck {script}:\n{}",
        text(&output.stdout)
    );
}

/// Loads the Woodpecker example with the Python that runs Ansible (PyYAML comes with it).
#[test]
fn the_woodpecker_example_deploys_on_push_and_checks_on_the_cron() {
    let ansible = ansible_playbook();
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
