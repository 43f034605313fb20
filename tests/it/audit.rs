//! Audit on a real keeld: every acknowledged admission has a durable record
//! (also across `kill -9`), mutations are recorded before and after, a full
//! disk refuses must-audit calls fast and recovers, tenant tokens read their
//! own records, and a tampered copy of the log names its first bad record.

use crate::admission::{admission, ready_node, request};
use crate::harness::{KeelProcess, http_get, keelctl_bin};
use anyhow::{Context, Result, ensure};
use keel_chaos::process::{AuthChannel, Bearer};
use keel_proto::v1 as pb;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

async fn audit_client(node: &KeelProcess) -> Result<pb::audit_service_client::AuditServiceClient<AuthChannel>> {
    Ok(pb::audit_service_client::AuditServiceClient::new(node.channel().await?))
}

/// Every record matching `query` on `node`, paging to the end.
async fn all_records(node: &KeelProcess, query: pb::QueryAuditRequest) -> Result<Vec<pb::AuditRecord>> {
    let mut client = audit_client(node).await?;
    let mut records = Vec::new();
    let mut page_token = String::new();
    for _ in 0..10_000 {
        let page = client
            .query_audit(pb::QueryAuditRequest { page_size: 1000, page_token, ..query.clone() })
            .await?
            .into_inner();
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            return Ok(records);
        }
        page_token = page.next_page_token;
    }
    anyhow::bail!("more than 10 000 pages")
}

fn kind(kind: &str) -> pb::QueryAuditRequest {
    pb::QueryAuditRequest { kind: kind.into(), ..Default::default() }
}

#[tokio::test]
async fn every_acknowledged_admission_is_on_disk_after_kill_9_and_the_chain_verifies() -> Result<()> {
    let mut node = ready_node(&[]).await?;
    let stop = Instant::now() + Duration::from_millis(1500);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut client = admission(&node).await?;
        tasks.spawn(async move {
            let mut acknowledged = Vec::new();
            while Instant::now() < stop + Duration::from_secs(5) {
                match client.admit(request("acme", "refund", "")).await {
                    Ok(answer) => {
                        let answer = answer.into_inner();
                        anyhow::ensure!(!answer.audit_id.is_empty(), "answered without an audit id: {answer:?}");
                        acknowledged.push(answer.audit_id);
                    }
                    // The node was killed: what was answered before counts.
                    Err(_) => break,
                }
            }
            anyhow::Ok(acknowledged)
        });
    }
    tokio::time::sleep_until(stop.into()).await;
    node.kill_9()?;
    let mut acknowledged = BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        acknowledged.extend(joined??);
    }
    ensure!(acknowledged.len() > 50, "too few admissions under load: {}", acknowledged.len());
    node.restart().await?;
    node.wait_ready().await?;
    let recorded: BTreeSet<String> =
        all_records(&node, kind("admission")).await?.into_iter().map(|record| record.id).collect();
    let missing: Vec<&String> = acknowledged.difference(&recorded).collect();
    ensure!(
        missing.is_empty(),
        "{} acknowledged admissions have no record: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let verified = audit_client(&node).await?.verify_audit(pb::VerifyAuditRequest {}).await?.into_inner();
    ensure!(verified.ok && verified.records >= acknowledged.len() as u64, "{verified:?}");
    // The restarted writer continues the same chain with a checkpoint.
    let admitted = admission(&node).await?.admit(request("acme", "refund", "")).await?.into_inner();
    ensure!(admitted.allowed && !admitted.audit_id.is_empty(), "{admitted:?}");
    let verified = audit_client(&node).await?.verify_audit(pb::VerifyAuditRequest {}).await?.into_inner();
    ensure!(verified.ok, "{verified:?}");
    Ok(())
}

#[tokio::test]
async fn mutations_are_recorded_before_and_after_and_tenant_tokens_read_their_own_records() -> Result<()> {
    let node = ready_node(&[]).await?;
    // ready_node created tenant acme: proposed, then applied, by the dev admin.
    let mutations = all_records(&node, pb::QueryAuditRequest { tenant: "acme".into(), ..kind("mutation") }).await?;
    let decisions: Vec<(&str, &str)> =
        mutations.iter().map(|record| (record.action.as_str(), record.decision.as_str())).collect();
    ensure!(decisions == [("CreateTenant", "proposed"), ("CreateTenant", "applied")], "{decisions:?}");
    ensure!(mutations.iter().all(|record| !record.principal.is_empty()), "{mutations:?}");
    ensure!(mutations[1].revision > 0 && mutations[1].reason == "OK", "{mutations:?}");
    // A refused mutation is recorded as rejected.
    let mut tenants = pb::tenant_service_client::TenantServiceClient::new(node.channel().await?);
    let again = crate::fixture::Fixture::tenant_request("acme");
    ensure!(tenants.create_tenant(again).await.is_err(), "a second acme was created");
    let rejected =
        all_records(&node, pb::QueryAuditRequest { decision: "rejected".into(), ..kind("mutation") }).await?;
    ensure!(rejected.len() == 1 && rejected[0].reason == "TENANT_ALREADY_EXISTS", "{rejected:?}");

    // Admissions for two tenants; a token scoped to acme reads acme's only.
    admission(&node).await?.admit(request("acme", "refund", "")).await?;
    admission(&node).await?.admit(request("other", "refund", "")).await?;
    let api = keel_client::KeyPair::read_secret_file(&node.data_dir().join("dev-api.key"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let mut claims = keel_client::token::TokenClaims::new(
        "auditor-acme",
        "keel",
        vec!["audit.read".into()],
        now,
        Duration::from_secs(600),
    );
    claims.tenant = Some("acme".into());
    let token = keel_client::token::issue(&api, &claims)?;
    let mut scoped = pb::audit_service_client::AuditServiceClient::new(
        tonic::service::interceptor::InterceptedService::new(node.raw_channel().await?, Bearer::new(Some(&token))?),
    );
    let seen = scoped.query_audit(pb::QueryAuditRequest::default()).await?.into_inner().records;
    ensure!(!seen.is_empty() && seen.iter().all(|record| record.tenant == "acme"), "{seen:?}");
    let other = scoped.query_audit(pb::QueryAuditRequest { tenant: "other".into(), ..Default::default() }).await;
    ensure!(other.is_err_and(|status| crate::fixture::reason_of(&status) == "TENANT_OUT_OF_SCOPE"));
    let denied = all_records(&node, pb::QueryAuditRequest { tenant: "other".into(), ..kind("admission") }).await?;
    ensure!(
        denied.len() == 1 && denied[0].decision == "denied" && denied[0].reason == "TENANT_NOT_FOUND",
        "{denied:?}"
    );

    // A bad token is a security record (never with the token in it).
    let mut forged =
        pb::tenant_service_client::TenantServiceClient::new(tonic::service::interceptor::InterceptedService::new(
            node.raw_channel().await?,
            Bearer::new(Some("not.a.token"))?,
        ));
    ensure!(forged.get_tenant(pb::GetTenantRequest { name: "acme".into(), ..Default::default() }).await.is_err());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let security = all_records(&node, kind("security")).await?;
        if let Some(record) = security.iter().find(|record| record.action == "GetTenant") {
            ensure!(record.decision == "refused" && !record.reason.is_empty(), "{record:?}");
            ensure!(!record.detail.contains("not.a.token"), "{record:?}");
            break;
        }
        ensure!(Instant::now() < deadline, "no security record: {security:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A size-limited tmpfs for the audit log (needs root to mount).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(bytes: u64) -> Result<Option<Tmpfs>> {
        let dir = tempfile::tempdir()?.keep();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&dir)
            .output()?;
        if !mounted.status.success() {
            eprintln!(
                "skipping the disk-full test: cannot mount a tmpfs ({})",
                String::from_utf8_lossy(&mounted.stderr).trim()
            );
            let _ = std::fs::remove_dir(&dir);
            return Ok(None);
        }
        Ok(Some(Tmpfs(dir)))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[tokio::test]
async fn a_full_audit_disk_refuses_must_audit_calls_fast_keeps_reads_and_recovers() -> Result<()> {
    let Some(disk) = Tmpfs::mount(512 * 1024)? else {
        return Ok(());
    };
    let dir = disk.0.join("audit");
    let dir_text = dir.to_str().context("utf-8 path")?;
    let node = ready_node(&[("KEEL_AUDIT__DIR", dir_text), ("KEEL_AUDIT__WRITE_TIMEOUT_MS", "200")]).await?;
    let mut client = admission(&node).await?;
    ensure!(client.admit(request("acme", "refund", "")).await?.into_inner().allowed);
    // Fill the disk.
    let filler = disk.0.join("filler");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&filler)?;
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
    }
    let mut refusals = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let answer = client.admit(request("acme", "refund", "")).await;
        ensure!(started.elapsed() < Duration::from_millis(1000), "took {:?}", started.elapsed());
        match answer {
            Ok(answer) => anyhow::bail!("answered while the audit disk is full: {:?}", answer.into_inner()),
            Err(status) => {
                ensure!(status.code() == tonic::Code::Unavailable, "{status:?}");
                ensure!(crate::fixture::reason_of(&status) == "AUDIT_UNAVAILABLE", "{status:?}");
                refusals += 1;
            }
        }
    }
    ensure!(refusals == 20);
    let (code, body) = http_get(&node.ops_addr, "/readyz").await?;
    ensure!(code == 503 && body.contains("audit"), "{code} {body}");
    // A mutation is refused before it is proposed: nothing changes.
    let digest = node.status().await?.state_digest;
    let mut tenants = pb::tenant_service_client::TenantServiceClient::new(node.channel().await?);
    let created = tenants.create_tenant(crate::fixture::Fixture::tenant_request("beta")).await;
    ensure!(created.is_err_and(|status| crate::fixture::reason_of(&status) == "AUDIT_UNAVAILABLE"));
    ensure!(node.status().await?.state_digest == digest, "a refused mutation changed the state");
    // Reads keep working.
    tenants.get_tenant(pb::GetTenantRequest { name: "acme".into(), ..Default::default() }).await?;
    let (_, metrics) = http_get(&node.ops_addr, "/metrics").await?;
    ensure!(
        metrics.lines().any(|line| line.starts_with("keel_audit_refused_total") && !line.ends_with(" 0")),
        "{metrics}"
    );

    // Space returns: ready again and admitting, without a restart.
    std::fs::remove_file(&filler)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(answer) = client.admit(request("acme", "refund", "")).await {
            // Allowed or rate limited (the policy's burst is 3): recorded.
            let answer = answer.into_inner();
            ensure!(!answer.audit_id.is_empty(), "{answer:?}");
            break;
        }
        ensure!(Instant::now() < deadline, "the audit log did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, body) = http_get(&node.ops_addr, "/readyz").await?;
    ensure!(code == 200, "{code} {body}");
    let verified = audit_client(&node).await?.verify_audit(pb::VerifyAuditRequest {}).await?.into_inner();
    ensure!(verified.ok, "{verified:?}");
    drop(node);
    Ok(())
}

/// `keelctl audit verify --dir DIR`: (exit code, stdout + stderr).
fn verify_copy(dir: &std::path::Path) -> Result<(i32, String)> {
    let output = std::process::Command::new(keelctl_bin())
        .args(["--output", "json", "audit", "verify", "--dir"])
        .arg(dir)
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Ok((output.status.code().unwrap_or(-1), text))
}

#[tokio::test]
async fn a_tampered_copy_of_the_log_names_its_first_bad_record() -> Result<()> {
    let node = ready_node(&[]).await?;
    let mut client = admission(&node).await?;
    for _ in 0..20 {
        client.admit(request("acme", "refund", "")).await?;
    }
    let own = node.data_dir().join("audit").join("node-1");
    let copy_of = |name: &str| -> Result<(std::path::PathBuf, std::path::PathBuf, Vec<String>)> {
        let copy = node.scratch().join(name);
        std::fs::create_dir_all(&copy)?;
        let mut segments: Vec<_> = std::fs::read_dir(&own)?.filter_map(|entry| entry.ok().map(|e| e.path())).collect();
        segments.sort();
        let segment = segments.last().context("a segment")?.clone();
        let target = copy.join(segment.file_name().context("a name")?);
        let text = std::fs::read_to_string(&segment)?;
        Ok((copy, target, text.lines().map(str::to_owned).collect()))
    };
    let (intact, target, lines) = copy_of("intact")?;
    std::fs::write(&target, lines.join("\n") + "\n")?;
    let (code, text) = verify_copy(&intact)?;
    ensure!(code == 0, "{code}: {text}");
    // Lines are seq order; find line i's seq to name it.
    let seq = |line: &str| -> Result<u64> {
        let record: serde_json::Value = serde_json::from_str(line)?;
        record["seq"].as_u64().context("a seq")
    };
    // An admission in the middle, with a record after it.
    let pick = (lines.len() / 2..lines.len() - 1)
        .find(|index| lines[*index].contains("\"kind\":\"admission\""))
        .context("an admission record")?;
    let expected = format!("1-{}", seq(&lines[pick])?);

    let (deleted, target, mut lines_deleted) = copy_of("deleted")?;
    lines_deleted.remove(pick);
    std::fs::write(&target, lines_deleted.join("\n") + "\n")?;
    let (code, text) = verify_copy(&deleted)?;
    ensure!(code == 5 && text.contains(&expected), "deleted: {code}: {text}");

    let (edited, target, mut lines_edited) = copy_of("edited")?;
    lines_edited[pick] = lines_edited[pick].replacen("\"acme\"", "\"acmf\"", 1);
    ensure!(lines_edited[pick] != lines[pick], "nothing to edit in {}", lines[pick]);
    std::fs::write(&target, lines_edited.join("\n") + "\n")?;
    let (code, text) = verify_copy(&edited)?;
    ensure!(code == 5 && text.contains(&expected), "edited: {code}: {text}");

    let (reordered, target, mut lines_reordered) = copy_of("reordered")?;
    lines_reordered.swap(pick, pick + 1);
    std::fs::write(&target, lines_reordered.join("\n") + "\n")?;
    let (code, text) = verify_copy(&reordered)?;
    ensure!(code == 5 && text.contains(&expected), "reordered: {code}: {text}");
    Ok(())
}

/// The gauge `name{origin}` on `node`, if reported.
async fn copy_gauge(node: &KeelProcess, name: &str, origin: u64) -> Result<Option<u64>> {
    let (_, metrics) = http_get(&node.ops_addr, "/metrics").await?;
    let wanted = format!("origin=\"{origin}\"");
    Ok(metrics
        .lines()
        .find(|line| line.starts_with(name) && line.contains(&wanted))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.trim().parse().ok()))
}

#[tokio::test]
async fn any_member_answers_for_every_members_records_in_time_order_and_a_lost_disk_is_read_from_copies() -> Result<()>
{
    use keel_chaos::cluster::{Cluster, ClusterOptions};
    let mut cluster = Cluster::three(ClusterOptions::default()).await?;
    crate::admission::cluster_with_limit(&cluster, 6_000_000, 100_000).await?;
    let mut acknowledged: Vec<BTreeSet<String>> = vec![BTreeSet::new(); 3];
    for _ in 0..15 {
        for (index, member) in cluster.nodes.iter().enumerate() {
            let answer = admission(member).await?.admit(request("acme", "refund", "")).await?.into_inner();
            ensure!(answer.allowed && !answer.audit_id.is_empty(), "{answer:?}");
            acknowledged[index].insert(answer.audit_id);
        }
    }
    // One query on one member, in pages of 7: every member's records, once, in time order.
    let records =
        all_records_paged(&cluster.nodes[1], pb::QueryAuditRequest { tenant: "acme".into(), ..kind("admission") }, 7)
            .await?;
    let ids: Vec<String> = records.iter().map(|record| record.id.clone()).collect();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    ensure!(unique.len() == ids.len(), "a record was returned twice");
    for set in &acknowledged {
        ensure!(set.is_subset(&unique), "missing records of a member");
    }
    ensure!(records.windows(2).all(|pair| pair[0].time_ms <= pair[1].time_ms), "not in time order");
    // A token scoped to acme, on another member: the same union, acme's only.
    let token = cluster.token("auditor", Some("acme"), &["audit.read"])?;
    let mut scoped =
        pb::audit_service_client::AuditServiceClient::new(tonic::service::interceptor::InterceptedService::new(
            cluster.nodes[2].raw_channel().await?,
            Bearer::new(Some(&token))?,
        ));
    let mut seen = Vec::new();
    let mut page_token = String::new();
    for _ in 0..1000 {
        let request = pb::QueryAuditRequest { page_size: 1000, page_token, ..Default::default() };
        let page = scoped.query_audit(request).await?.into_inner();
        seen.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    ensure!(seen.iter().all(|record| record.tenant == "acme"), "a scoped token saw another tenant's records");
    let seen: BTreeSet<String> = seen.into_iter().filter(|record| record.kind == "admission").map(|r| r.id).collect();
    ensure!(seen == unique, "a scoped token on another member saw {} of {} records", seen.len(), unique.len());

    // Member 1's log is copied to both others within the stated lag.
    let origin = 1u64;
    let last = acknowledged[0].iter().filter_map(|id| id.strip_prefix("1-")?.parse::<u64>().ok()).max().unwrap_or(0);
    ensure!(acknowledged[0].iter().all(|id| id.starts_with("1-")), "member 0 is node 1: {:?}", acknowledged[0]);
    let deadline = Instant::now() + Duration::from_secs(20);
    for other in &cluster.nodes[1..] {
        loop {
            // The copy holds everything acknowledged.
            if copy_gauge(other, "keel_audit_copy_last_seq", origin).await?.is_some_and(|copied| copied >= last) {
                break;
            }
            ensure!(Instant::now() < deadline, "member 1's audit log was not copied within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    ensure!(last > 0);
    // A member verifies its own log and its copies of the others'.
    let verified = audit_client(&cluster.nodes[1]).await?.verify_audit(pb::VerifyAuditRequest {}).await?.into_inner();
    let origins: Vec<u64> = verified.copies.iter().map(|copy| copy.origin).collect();
    ensure!(verified.ok && origins == [1, 3] && verified.copies.iter().all(|copy| copy.ok), "{verified:?}");
    // Member 1 dies and its disk is destroyed: its records are read from a copy.
    cluster.nodes[0].kill_9()?;
    std::fs::remove_dir_all(cluster.nodes[0].data_dir())?;
    let mut client = audit_client(&cluster.nodes[2]).await?;
    let page =
        client.query_audit(pb::QueryAuditRequest { origin, page_size: 1000, ..kind("admission") }).await?.into_inner();
    ensure!(page.from_copies == [origin], "{:?}", page.from_copies);
    let recovered: BTreeSet<String> = page.records.into_iter().map(|record| record.id).collect();
    let missing: Vec<&String> = acknowledged[0].difference(&recovered).collect();
    ensure!(missing.is_empty(), "records of the lost member are missing from the copy: {missing:?}");
    Ok(())
}

/// Every record matching `query` on `node`, `page_size` at a time.
async fn all_records_paged(
    node: &KeelProcess,
    query: pb::QueryAuditRequest,
    page_size: u32,
) -> Result<Vec<pb::AuditRecord>> {
    let mut client = audit_client(node).await?;
    let mut records = Vec::new();
    let mut page_token = String::new();
    for _ in 0..10_000 {
        let page =
            client.query_audit(pb::QueryAuditRequest { page_size, page_token, ..query.clone() }).await?.into_inner();
        ensure!(page.records.len() <= page_size as usize);
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            return Ok(records);
        }
        page_token = page.next_page_token;
    }
    anyhow::bail!("more than 10 000 pages")
}

#[tokio::test]
async fn keelctl_exports_every_record_as_json_lines_and_csv_and_tails_new_ones() -> Result<()> {
    use crate::keelctl::keelctl_ok;
    let node = ready_node(&[]).await?;
    let mut client = admission(&node).await?;
    for _ in 0..30 {
        client.admit(request("acme", "refund", "")).await?;
    }
    let expected = all_records(&node, kind("admission")).await?;
    let dir = node.scratch();
    let jsonl = keelctl_ok(&node, &dir, &["audit", "export", "--kind", "admission"])?;
    let exported: Vec<serde_json::Value> =
        jsonl.lines().map(serde_json::from_str).collect::<Result<_, _>>().context("JSON Lines")?;
    ensure!(exported.len() == expected.len(), "{} exported, {} recorded", exported.len(), expected.len());
    ensure!(exported.iter().zip(&expected).all(|(line, record)| line["id"] == record.id.as_str()));
    let csv = keelctl_ok(&node, &dir, &["audit", "export", "--kind", "admission", "--format", "csv"])?;
    let mut rows = csv.lines();
    ensure!(rows.next().is_some_and(|header| header.starts_with("id,time_ms,node")), "{csv}");
    ensure!(rows.count() == expected.len(), "{csv}");

    // tail from just after the last record: new records only, then stop after the count.
    let from_ms = expected.iter().map(|record| record.time_ms).max().unwrap_or(0) + 1;
    let tail = std::process::Command::new(keelctl_bin())
        .env("KEEL_ENDPOINTS", &node.endpoint)
        .env("KEEL_TOKEN", node.token.as_deref().unwrap_or_default())
        .args(["audit", "tail", "--kind", "admission", "--count", "3", "--idle-exit-ms", "20000"])
        .args(["--from-ms", &from_ms.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    while crate::fixture::now_ms() < from_ms {
        tokio::task::yield_now().await;
    }
    for _ in 0..3 {
        client.admit(request("acme", "refund", "")).await?;
    }
    let output = tokio::task::spawn_blocking(move || tail.wait_with_output()).await??;
    ensure!(output.status.success(), "tail failed");
    let tailed: Vec<serde_json::Value> =
        String::from_utf8(output.stdout)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    ensure!(tailed.len() == 3, "{tailed:?}");
    let old: BTreeSet<&str> = expected.iter().map(|record| record.id.as_str()).collect();
    ensure!(tailed.iter().all(|line| !old.contains(line["id"].as_str().unwrap_or_default())), "{tailed:?}");
    Ok(())
}
