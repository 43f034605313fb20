//! The rendered configuration is real: the chart rendered for 3 replicas
//! with TLS from a Secret, and its members started as containers the way
//! Kubernetes would start the pods, must form a cluster that passes the
//! chart's own `helm test` command.
//!
//! ```text
//!   helm template ─► ConfigMap (keel.toml), StatefulSet pod spec, test Pod spec, Certificate dnsNames
//!   keelctl certs/keys/token ─► the Secrets' files (<fullname>-tls, -trust, -test-token)
//!   per member i: docker run on a private network
//!       hostname <fullname>-i, alias <fullname>-i.<fullname>-headless.<ns>.svc.cluster.local
//!       (and the client Service's name), the rendered args, env (downward API resolved:
//!       pod name, namespace, labels; $(VAR) expanded as Kubernetes does), every volume at its
//!       mount path (ConfigMap and Secret items read-only, emptyDir and claims as tmpfs owned by
//!       fsGroup), the security context (user, fsGroup, read-only root, no capabilities)
//!   the test Pod's container, the same way ─► `keelctl cluster check` must exit 0
//! ```
//!
//! The image is built from the binaries under test (`deploy/image/build.sh`,
//! as the compose test does). Containers, network and image are removed by a
//! drop guard. Skipped, passing, when no Docker engine answers or the chart
//! tools are absent.

use super::{FULLNAME, HelmTools, NAMESPACE, Rendered, member_host, repo_root};
use crate::commands::{docker_answers, run, unique_suffix};
use crate::harness::{keelctl_bin, keeld_bin};
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Longest a docker command (or the image build) may take.
const DOCKER_DEADLINE: Duration = Duration::from_secs(180);
/// Longest the members may take to elect a leader and list three voters.
const READY_DEADLINE: Duration = Duration::from_secs(120);
/// Longest the check container may take (its own `--deadline-ms` is 60 s).
const CHECK_DEADLINE: Duration = Duration::from_secs(150);
const POLL_INTERVAL: Duration = Duration::from_millis(500);
const REPLICAS: usize = 3;

/// Containers, network and image of one run; all removed on drop.
struct DockerRun {
    containers: Vec<String>,
    network: String,
    image: String,
}

impl Drop for DockerRun {
    fn drop(&mut self) {
        for container in &self.containers {
            let _ = run(Command::new("docker").args(["rm", "--force", "--volumes", container]), DOCKER_DEADLINE);
        }
        let _ = run(Command::new("docker").args(["network", "rm", &self.network]), DOCKER_DEADLINE);
        let _ = run(Command::new("docker").args(["image", "rm", "--force", &self.image]), DOCKER_DEADLINE);
    }
}

impl DockerRun {
    fn logs(&self) -> String {
        let mut logs = String::new();
        for container in &self.containers {
            if let Ok(output) = run(Command::new("docker").args(["logs", "--tail", "25", container]), DOCKER_DEADLINE) {
                logs += &format!(
                    "--- {container}\n{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        logs
    }
}

/// Runs `command` and requires success; returns stdout.
fn run_ok(command: &mut Command) -> Result<String> {
    crate::commands::run_ok(command, DOCKER_DEADLINE)
}

/// What a Secret named in the pod specs holds: key → bytes.
type SecretData = BTreeMap<String, Vec<u8>>;

/// The pod a container runs in, as Kubernetes would know it.
struct PodIdentity<'a> {
    name: String,
    labels: &'a Value,
    pod_spec: &'a Value,
}

/// Kubernetes' `$(VAR)` expansion in env values, args and commands: `$(NAME)`
/// becomes NAME's value when NAME is defined (earlier in the env list),
/// `$$` is a literal `$`, anything else stays as written.
fn expand(text: &str, defined: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(inner) = tail.strip_prefix("$(")
            && let Some(end) = inner.find(')')
            && let Some(value) = defined.get(&inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment, resolved as the kubelet would.
fn resolve_env(
    container: &Value,
    pod: &PodIdentity<'_>,
    secrets: &BTreeMap<String, SecretData>,
) -> Result<Vec<(String, String)>> {
    let mut defined = BTreeMap::new();
    let mut env = Vec::new();
    for entry in container["env"].as_array().into_iter().flatten() {
        let name = entry["name"].as_str().context("env name")?.to_owned();
        let value = if let Some(value) = entry["value"].as_str() {
            expand(value, &defined)
        } else if let Some(field) = entry["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match field {
                "metadata.name" => pod.name.clone(),
                "metadata.namespace" => NAMESPACE.to_owned(),
                _ => match field.strip_prefix("metadata.labels['").and_then(|label| label.strip_suffix("']")) {
                    Some(label) => pod.labels[label].as_str().unwrap_or_default().to_owned(),
                    None => bail!("env {name}: fieldRef {field} is not resolved by this test"),
                },
            }
        } else if let Some(secret) = entry["valueFrom"]["secretKeyRef"].as_object() {
            let secret_name = secret["name"].as_str().context("secretKeyRef name")?;
            let key = secret["key"].as_str().context("secretKeyRef key")?;
            let bytes = secrets.get(secret_name).and_then(|data| data.get(key)).context("secretKeyRef target")?;
            String::from_utf8(bytes.clone())?
        } else {
            bail!("env {name}: {entry} is not resolved by this test");
        };
        defined.insert(name.clone(), value.clone());
        env.push((name, value));
    }
    Ok(env)
}

/// Writes the files a ConfigMap or Secret volume shows (its `items`, or
/// every key) under `dir`, readable by the container's user.
fn write_projection(dir: &Path, data: &SecretData, items: Option<&Vec<Value>>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let files: Vec<(String, String)> = match items {
        Some(items) => items
            .iter()
            .map(|item| {
                Ok((
                    item["key"].as_str().context("item key")?.to_owned(),
                    item["path"].as_str().context("item path")?.to_owned(),
                ))
            })
            .collect::<Result<_>>()?,
        None => data.keys().map(|key| (key.clone(), key.clone())).collect(),
    };
    for (key, path) in files {
        let bytes = data.get(&key).with_context(|| format!("no key {key} for {}", dir.display()))?;
        let file = dir.join(path);
        std::fs::write(&file, bytes)?;
        set_mode(&file, 0o444)?;
    }
    set_mode(dir, 0o555)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?)
}

/// `docker run` arguments for `container` of `pod`: identity, security
/// context, environment and volumes; the image, command and args last.
fn docker_args(
    container: &Value,
    pod: &PodIdentity<'_>,
    configmaps: &BTreeMap<String, SecretData>,
    secrets: &BTreeMap<String, SecretData>,
    work: &Path,
) -> Result<Vec<String>> {
    let mut args: Vec<String> = Vec::new();
    let pod_security = &pod.pod_spec["securityContext"];
    let security = &container["securityContext"];
    let pick = |key: &str| security.get(key).or_else(|| pod_security.get(key)).and_then(Value::as_u64);
    let (user, group) = (pick("runAsUser").context("runAsUser")?, pick("runAsGroup").context("runAsGroup")?);
    args.extend(["--user".into(), format!("{user}:{group}")]);
    let fs_group = pod_security["fsGroup"].as_u64();
    if let Some(fs_group) = fs_group {
        args.extend(["--group-add".into(), fs_group.to_string()]);
    }
    if security["readOnlyRootFilesystem"] == true {
        args.push("--read-only".into());
    }
    if security["allowPrivilegeEscalation"] == false {
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    for capability in security["capabilities"]["drop"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        args.extend(["--cap-drop".into(), capability.to_owned()]);
    }
    for (name, value) in resolve_env(container, pod, secrets)? {
        args.extend(["--env".into(), format!("{name}={value}")]);
    }
    let volumes = pod.pod_spec["volumes"].as_array().cloned().unwrap_or_default();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = mount["name"].as_str().context("mount name")?;
        let path = mount["mountPath"].as_str().context("mountPath")?;
        let volume = volumes.iter().find(|volume| volume["name"] == name);
        let host_dir = work.join("volumes").join(&pod.name).join(name);
        let items = |source: &Value| source["items"].as_array().cloned();
        match volume {
            Some(volume) if volume.get("configMap").is_some() => {
                let source = &volume["configMap"];
                let data = configmaps.get(source["name"].as_str().context("configMap name")?).context("configMap")?;
                write_projection(&host_dir, data, items(source).as_ref())?;
                args.extend(["--volume".into(), format!("{}:{path}:ro", host_dir.display())]);
            }
            Some(volume) if volume.get("secret").is_some() => {
                let source = &volume["secret"];
                let secret_name = source["secretName"].as_str().context("secretName")?;
                let data = secrets.get(secret_name).with_context(|| format!("no Secret {secret_name} prepared"))?;
                write_projection(&host_dir, data, items(source).as_ref())?;
                args.extend(["--volume".into(), format!("{}:{path}:ro", host_dir.display())]);
            }
            // emptyDir, or a claim from volumeClaimTemplates: an empty
            // directory the pod's user and fsGroup may write, as the kubelet
            // prepares it (Docker's tmpfs honours uid/gid, not a bare mode).
            Some(volume) if volume.get("emptyDir").is_none() => bail!("volume {name}: {volume} is not emulated"),
            _ => {
                let group = fs_group.unwrap_or(group);
                args.extend(["--tmpfs".into(), format!("{path}:rw,nosuid,nodev,mode=0770,uid={user},gid={group}")]);
            }
        }
    }
    let image = container["image"].as_str().context("image")?;
    let command = as_strings(&container["command"]);
    if let Some(entrypoint) = command.first() {
        args.extend(["--entrypoint".into(), entrypoint.clone()]);
    }
    args.push(image.to_owned());
    args.extend(command.iter().skip(1).cloned());
    args.extend(as_strings(&container["args"]));
    Ok(args)
}

fn as_strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Runs keelctl on the host (certificates, keys, tokens).
fn keelctl(args: &[&str]) -> Result<String> {
    run_ok(Command::new(keelctl_bin()).env_remove("KEEL_CLUSTER_ID").args(args))
}

/// The Secrets the chart's pods mount, made as an operator would:
/// certificates for the Certificate's DNS names, a root and an API-token
/// key, and a token for the check scoped to its probe tenant.
fn make_secrets(dns_names: &[&str], work: &Path) -> Result<BTreeMap<String, SecretData>> {
    let path = |name: &str| work.join(name).to_string_lossy().into_owned();
    keelctl(&["certs", "init", "--dir", &path("ca"), "--common-name", "keel helm test CA"])?;
    let (ca_path, issued_path) = (path("ca"), path("issued"));
    let mut issue = vec!["certs", "issue", "--ca", &ca_path, "member", "--out", &issued_path];
    for name in dns_names {
        issue.extend(["--san", name]);
    }
    keelctl(&issue)?;
    keelctl(&["keys", "generate", "--out", &path("root")])?;
    keelctl(&["keys", "generate", "--out", &path("api")])?;
    keelctl(&[
        "token",
        "issue",
        "--key",
        &path("api.key"),
        "--sub",
        "keel-helm-test",
        "--tenant",
        "keel-check",
        "--permission",
        "tenant.read",
        "--permission",
        "tenant.write",
        "--permission",
        "cluster.read",
        "--audience",
        "keel",
        "--ttl",
        "1h",
        "--out",
        &path("check.token"),
    ])?;
    let read = |name: &str| std::fs::read(work.join(name)).with_context(|| format!("reading {name}"));
    let mut secrets = BTreeMap::new();
    secrets.insert(
        format!("{FULLNAME}-tls"),
        SecretData::from([
            ("ca.crt".into(), read("ca/ca.crt")?),
            ("tls.crt".into(), read("issued/member.crt")?),
            ("tls.key".into(), read("issued/member.key")?),
        ]),
    );
    secrets.insert(
        format!("{FULLNAME}-trust"),
        SecretData::from([("root.pub".into(), read("root.pub")?), ("api.pub".into(), read("api.pub")?)]),
    );
    secrets.insert(format!("{FULLNAME}-test-token"), SecretData::from([("token".into(), read("check.token")?)]));
    Ok(secrets)
}

/// Every rendered ConfigMap's data.
fn configmaps(rendered: &Rendered) -> BTreeMap<String, SecretData> {
    rendered
        .docs
        .iter()
        .filter(|doc| doc["kind"] == "ConfigMap")
        .filter_map(|doc| {
            let name = doc["metadata"]["name"].as_str()?.to_owned();
            let data = doc["data"].as_object()?;
            let data = data.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.as_bytes().to_vec()))).collect();
            Some((name, data))
        })
        .collect()
}

#[test]
fn the_rendered_members_form_a_cluster_that_passes_the_helm_test_check() -> Result<()> {
    let Some(tools) = HelmTools::find("the rendered members in Docker") else { return Ok(()) };
    if !docker_answers() {
        println!("skipping the rendered members in Docker: no Docker engine answers");
        return Ok(());
    }
    let started = Instant::now();
    let unique = unique_suffix()?;
    let tag = format!("helm-it-{unique}");
    let mut docker =
        DockerRun { containers: Vec::new(), network: format!("keel-helm-it-{unique}"), image: format!("keel:{tag}") };
    run_ok(
        Command::new(repo_root().join("deploy/image/build.sh"))
            .env("KEELD_BIN", keeld_bin())
            .env("KEELCTL_BIN", keelctl_bin())
            .env("KEEL_IMAGE", &docker.image),
    )?;
    let image_sets = ["image.repository=keel".to_owned(), format!("image.tag={tag}"), "image.pullPolicy=Never".into()];
    let image_sets: Vec<&str> = image_sets.iter().map(String::as_str).collect();
    let rendered = tools.render(&image_sets)?;
    tools.validate(&rendered)?;
    // The names a cert-manager Certificate would carry: the member certificate the Secret holds.
    let mut cert_sets = image_sets.clone();
    cert_sets.extend(["tls.certManager.enabled=true", "tls.certManager.issuerRef.name=keel-ca"]);
    let with_certificate = tools.render(&cert_sets)?;
    let certificate = with_certificate.get("Certificate", FULLNAME)?;
    let dns_names = super::as_strs(&certificate["spec"]["dnsNames"]);

    let work = tempfile::Builder::new().prefix("keel-helm-it-").tempdir()?;
    let secrets = make_secrets(&dns_names, work.path())?;
    let configmaps = configmaps(&rendered);
    run_ok(Command::new("docker").args(["network", "create", &docker.network]))?;

    let statefulset = rendered.get("StatefulSet", FULLNAME)?;
    let template = &statefulset["spec"]["template"];
    let member_container = rendered.keeld_container()?;
    let service_host = format!("{FULLNAME}.{NAMESPACE}.svc.cluster.local");
    for index in 0..REPLICAS {
        let pod = PodIdentity {
            name: format!("{FULLNAME}-{index}"),
            labels: &template["metadata"]["labels"],
            pod_spec: &template["spec"],
        };
        let container_name = format!("{}-{}", docker.network, pod.name);
        let mut args = vec!["run".to_owned(), "--detach".into(), "--name".into(), container_name.clone()];
        args.extend(["--hostname".into(), pod.name.clone(), "--network".into(), docker.network.clone()]);
        // The pod's DNS name under the headless Service, and the client
        // Service's name (Docker's DNS answers it with every member).
        args.extend(["--network-alias".into(), member_host(index), "--network-alias".into(), service_host.clone()]);
        args.extend(docker_args(member_container, &pod, &configmaps, &secrets, work.path())?);
        run_ok(Command::new("docker").args(&args))?;
        docker.containers.push(container_name);
    }

    // The helm test pod, as rendered; run once the members list three voters.
    let test_pod = rendered.get("Pod", &format!("{FULLNAME}-cluster-check"))?;
    let test_container = &test_pod["spec"]["containers"][0];
    let pod = PodIdentity {
        name: format!("{FULLNAME}-cluster-check"),
        labels: &test_pod["metadata"]["labels"],
        pod_spec: &test_pod["spec"],
    };
    let check_args = docker_args(test_container, &pod, &configmaps, &secrets, work.path())?;
    let run_check = |args: &[String]| -> Result<std::process::Output> {
        let mut command = Command::new("docker");
        command.args(["run", "--rm", "--network", &docker.network]).args(args);
        run(&mut command, CHECK_DEADLINE)
    };
    // `cluster status` with the check's connection flags: everything up to the subcommand.
    let cluster_at = check_args.iter().rposition(|arg| arg == "cluster").context("the check's args name `cluster`")?;
    let mut status_args = check_args[..cluster_at].to_vec();
    status_args.extend(["--output".into(), "json".into(), "cluster".into(), "status".into()]);
    let ready_by = Instant::now() + READY_DEADLINE;
    loop {
        let output = run_check(&status_args)?;
        let status: Option<Value> = serde_json::from_slice(&output.stdout).ok();
        let n_voters = status.as_ref().and_then(|status| {
            status["members"].as_array().map(|m| m.iter().filter(|m| m["is_voter"] == true).count())
        });
        let leader = status.as_ref().and_then(|status| status["leader_id"].as_u64()).unwrap_or(0);
        if output.status.success() && leader != 0 && n_voters == Some(REPLICAS) {
            break;
        }
        if Instant::now() > ready_by {
            bail!(
                "no leader with {REPLICAS} voters within {READY_DEADLINE:?}; last status: {}{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                docker.logs()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    let output = run_check(&check_args)?;
    ensure!(
        output.status.success(),
        "the helm test check failed ({}):\n{}{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        docker.logs()
    );
    println!(
        "the rendered members passed the helm test check in {:?}:\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stdout)
    );
    Ok(())
}

#[test]
fn env_values_expand_like_kubernetes() {
    let defined = BTreeMap::from([("POD_NAME".to_owned(), "it-keel-1".to_owned())]);
    assert_eq!(expand("$(POD_NAME).h:7401", &defined), "it-keel-1.h:7401");
    assert_eq!(expand("$$(POD_NAME)", &defined), "$(POD_NAME)");
    assert_eq!(expand("$(UNDEFINED)-$(POD_NAME)", &defined), "$(UNDEFINED)-it-keel-1");
    assert_eq!(expand("a$b", &defined), "a$b");
}
