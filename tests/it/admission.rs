//! Admission on a real keeld: each denial reason in pipeline order, an
//! allowed admission's provenance, and the in-process rate limit.

use crate::fixture::{Fixture, reason_of};
use crate::harness::KeelProcess;
use anyhow::{Result, ensure};
use keel_chaos::process::AuthChannel;
use keel_proto::v1 as pb;

/// Allows everything with a tight limit for the tenant × engine scope.
const POLICY: &str = r#"package keel.policy

decision := {"allow": false, "reason": "critical calls need review"} if {
	input.risk_band == "critical"
} else := {"allow": true, "reason": "ok", "limits": {"calls_per_minute": 60, "burst": 3, "max_duration_ms": 1000}}
"#;

fn billing(version: &str) -> serde_json::Value {
    serde_json::json!({
        "name": "billing",
        "version": version,
        "tier": "standard",
        "actions": [
            {"name": "charge", "input_schema": {
                "type": "object",
                "properties": {"amount": {"type": "integer", "minimum": 1}},
                "required": ["amount"]
            }},
            {"name": "refund"}
        ],
    })
}

pub(crate) fn request(tenant: &str, action: &str, input: &str) -> pb::AdmitRequest {
    pb::AdmitRequest {
        tenant: tenant.into(),
        engine: "billing".into(),
        action: action.into(),
        input_json: input.into(),
        ..Default::default()
    }
}

pub(crate) async fn admission(
    node: &KeelProcess,
) -> Result<pb::admission_service_client::AdmissionServiceClient<AuthChannel>> {
    Ok(pb::admission_service_client::AdmissionServiceClient::new(node.channel().await?))
}

async fn denied(node: &KeelProcess, request: pb::AdmitRequest, reason: &str) -> Result<pb::AdmitResponse> {
    let answer = admission(node).await?.admit(request.clone()).await?.into_inner();
    ensure!(!answer.allowed && answer.reason == reason, "{request:?}: expected {reason}, got {answer:?}");
    Ok(answer)
}

#[tokio::test]
async fn admissions_are_denied_in_pipeline_order_with_a_reason_and_allowed_with_provenance() -> Result<()> {
    let node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    let publisher = fixture.add_publisher_key(&node).await?;
    fixture.publish(&node, &billing("1.0.0"), &publisher).await?;
    fixture.create_tenant(&node, "acme").await?;
    let mut tenants = crate::single_node::tenants(&node).await?;
    let mut other = Fixture::tenant_request("other");
    if let Some(tenant) = other.tenant.as_mut() {
        tenant.enabled_engines.clear();
    }
    tenants.create_tenant(other).await?;
    let mut asleep = Fixture::tenant_request("asleep");
    if let Some(tenant) = asleep.tenant.as_mut() {
        tenant.status = pb::TenantStatus::Suspended as i32;
    }
    tenants.create_tenant(asleep).await?;

    let valid = r#"{"amount": 5}"#;
    denied(&node, request("nobody", "charge", valid), "TENANT_NOT_FOUND").await?;
    // keelctl: the decision on stdout, exit status 4 for a denial.
    let output = crate::keelctl::keelctl(
        &node,
        &node.scratch(),
        &["--output", "json", "admit", "--tenant", "nobody", "--engine", "billing", "--action", "charge"],
    )?;
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    ensure!(output.status.code() == Some(4) && shown["reason"] == "TENANT_NOT_FOUND", "{output:?}");
    denied(&node, request("asleep", "charge", valid), "TENANT_SUSPENDED").await?;
    denied(&node, request("other", "charge", valid), "ENGINE_NOT_ENABLED").await?;
    let unknown_version = pb::AdmitRequest { version: "9.9.9".into(), ..request("acme", "charge", valid) };
    denied(&node, unknown_version, "ENGINE_VERSION_NOT_FOUND").await?;
    denied(&node, request("acme", "mint", valid), "ACTION_UNKNOWN").await?;
    let answer = denied(&node, request("acme", "charge", r#"{"amount": 0}"#), "INPUT_INVALID").await?;
    ensure!(answer.detail.contains("amount"), "{answer:?}");
    // No policy yet: default deny.
    denied(&node, request("acme", "charge", valid), "POLICY_DENIED").await?;

    let mut policies = pb::policy_service_client::PolicyServiceClient::new(node.channel().await?);
    policies
        .put_policy(pb::PutPolicyRequest { policy: "main".into(), source: POLICY.into(), ..Default::default() })
        .await?;
    let critical = pb::AdmitRequest { risk_band: "critical".into(), ..request("acme", "charge", valid) };
    let answer = denied(&node, critical, "POLICY_DENIED").await?;
    ensure!(answer.detail == "critical calls need review" && !answer.decision_id.is_empty(), "{answer:?}");

    // Allowed: with the decision's provenance and the room left per scope.
    let answer = admission(&node).await?.admit(request("acme", "charge", valid)).await?.into_inner();
    ensure!(answer.allowed && answer.reason.is_empty(), "{answer:?}");
    ensure!(answer.policy_version == "main@1" && answer.engine_version == "1.0.0", "{answer:?}");
    ensure!(answer.limits.as_ref().is_some_and(|limits| limits.burst == 3), "{answer:?}");
    let scope = answer.remaining.iter().find(|room| room.scope == "tenant_engine:acme/billing");
    ensure!(scope.is_some_and(|room| room.remaining == 2), "{answer:?}");
    ensure!(answer.revision > 0 && answer.trust_root_version == 1, "{answer:?}");
    // An action without an input schema needs no input.
    ensure!(admission(&node).await?.admit(request("acme", "refund", "")).await?.into_inner().allowed);
    let third = admission(&node).await?.admit(request("acme", "charge", valid)).await?.into_inner();
    ensure!(third.allowed, "the third call of the burst: {third:?}");
    // The burst of 3 is spent: rate limited, with when to come back.
    let answer = denied(&node, request("acme", "charge", valid), "RATE_LIMITED").await?;
    ensure!(answer.retry_after_ms > 0 && answer.retry_after_ms <= 1_000, "{answer:?}");

    // A yanked version named explicitly, then the signer revoked.
    let mut registry = crate::single_node::registry(&node).await?;
    registry
        .yank_engine_version(pb::YankEngineVersionRequest {
            engine: "billing".into(),
            version: "1.0.0".into(),
            ..Default::default()
        })
        .await?;
    let yanked = pb::AdmitRequest { version: "1.0.0".into(), ..request("acme", "charge", valid) };
    denied(&node, yanked, "ENGINE_VERSION_YANKED").await?;
    fixture.publish(&node, &billing("1.1.0"), &publisher).await?;
    let root = keel_client::KeyPair::read_secret_file(&node.dev_root_key())?;
    let client = keel_client::KeelClient::new(
        keel_client::ClientConfig::new([node.endpoint.clone()]).with_token(node.bearer_token()),
    )?;
    client.revoke_key_signed(&publisher.key_id(), &[&root]).await?;
    denied(&node, request("acme", "charge", valid), "ENGINE_SIGNER_REVOKED").await?;

    // Requests that cannot be judged are errors, not denials.
    let bad = admission(&node).await?.admit(request("acme", "charge", "{not json")).await;
    ensure!(bad.as_ref().is_err_and(|status| reason_of(status) == "FIELD_INVALID"), "{bad:?}");
    Ok(())
}

#[tokio::test]
async fn a_tenants_token_admits_for_its_tenant_only() -> Result<()> {
    let node = KeelProcess::start().await?;
    let api = keel_client::KeyPair::read_secret_file(&node.data_dir().join("dev-api.key"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let mut claims = keel_client::token::TokenClaims::new(
        "gateway",
        "keel",
        vec!["admission.admit".into()],
        now,
        std::time::Duration::from_secs(600),
    );
    claims.tenant = Some("acme".into());
    let token = keel_client::token::issue(&api, &claims)?;
    let channel = node.raw_channel().await?;
    let mut client = pb::admission_service_client::AdmissionServiceClient::new(
        tonic::service::interceptor::InterceptedService::new(channel, keel_chaos::process::Bearer::new(Some(&token))?),
    );
    let own = client.admit(request("acme", "charge", "")).await?.into_inner();
    ensure!(own.reason == "TENANT_NOT_FOUND", "its own tenant is judged: {own:?}");
    let other = client.admit(request("other", "charge", "")).await;
    ensure!(other.as_ref().is_err_and(|status| reason_of(status) == "TENANT_OUT_OF_SCOPE"), "{other:?}");
    // In a batch, the other tenant's item fails alone.
    let batch = pb::AdmitBatchRequest { requests: vec![request("acme", "charge", ""), request("other", "charge", "")] };
    let items = client.admit_batch(batch).await?.into_inner().items;
    ensure!(items[0].response.as_ref().is_some_and(|answer| answer.reason == "TENANT_NOT_FOUND"), "{items:?}");
    ensure!(items[1].response.is_none() && items[1].error_reason == "TENANT_OUT_OF_SCOPE", "{items:?}");
    Ok(())
}

/// A dev node with `envs`, the billing engine, tenant acme and the policy.
pub(crate) async fn ready_node(envs: &[(&str, &str)]) -> Result<KeelProcess> {
    let node = KeelProcess::start_with_env(envs).await?;
    let fixture = Fixture::new(&node).await?;
    let publisher = fixture.add_publisher_key(&node).await?;
    fixture.publish(&node, &billing("1.0.0"), &publisher).await?;
    fixture.create_tenant(&node, "acme").await?;
    let mut policies = pb::policy_service_client::PolicyServiceClient::new(node.channel().await?);
    policies
        .put_policy(pb::PutPolicyRequest { policy: "main".into(), source: POLICY.into(), ..Default::default() })
        .await?;
    Ok(node)
}

async fn admit(node: &KeelProcess) -> Result<(pb::AdmitResponse, std::time::Duration)> {
    let mut client = admission(node).await?;
    let started = std::time::Instant::now();
    let answer = client.admit(request("acme", "refund", "")).await?.into_inner();
    Ok((answer, started.elapsed()))
}

#[tokio::test]
async fn with_redis_the_limit_is_shared_and_a_refused_check_charges_no_scope() -> Result<()> {
    let redis = keel_chaos::redis::RedisServer::start()?;
    let url = redis.url();
    // Two separate nodes sharing one Redis: the tenant's limit is one. The
    // tenant scope (enterprise tier) is set to 60/min with a burst of 10, so
    // each charge moves its TAT by a whole second and charges can be counted.
    let envs = [
        ("KEEL_REDIS__URL", url.as_str()),
        // A loaded test machine, not a deadline test (see the outage test).
        ("KEEL_REDIS__TIMEOUT_MS", "500"),
        ("KEEL_ADMISSION__ENTERPRISE__CALLS_PER_MINUTE", "60"),
        ("KEEL_ADMISSION__ENTERPRISE__BURST", "10"),
    ];
    let first = ready_node(&envs).await?;
    let second = ready_node(&envs).await?;
    let mut allowed = 0;
    for node in [&first, &second, &first, &second, &first] {
        let (answer, _) = admit(node).await?;
        ensure!(!answer.degraded, "{answer:?}");
        if answer.allowed {
            allowed += 1;
        } else {
            ensure!(answer.reason == "RATE_LIMITED" && answer.retry_after_ms > 0, "{answer:?}");
        }
    }
    ensure!(allowed == 3, "the policy's burst of 3 across both nodes, got {allowed}");
    // The tenant × engine scope refused twice; the tenant scope was charged 3 times, not 5.
    let tat_ahead_s = |scope: &str| -> Result<f64> {
        let reply = redis.command(&format!("GET keel:rl:{{t:acme}}:{scope}"))?;
        let tat: u64 = reply.lines().nth(1).unwrap_or_default().trim().parse()?;
        let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as u64;
        Ok((tat as f64 - now_us as f64) / 1e6)
    };
    let tenant_ahead = tat_ahead_s("tenant:acme")?;
    ensure!((2.0..=3.5).contains(&tenant_ahead), "the tenant scope is {tenant_ahead:.2} s ahead: 3 charges, not 5");
    Ok(())
}

#[tokio::test]
async fn a_redis_outage_is_answered_within_the_timeout_in_each_mode_and_recovery_is_automatic() -> Result<()> {
    for mode in ["fail_closed", "fail_open", "local"] {
        let mut redis = keel_chaos::redis::RedisServer::start()?;
        let url = redis.url();
        let node = ready_node(&[("KEEL_REDIS__URL", &url), ("KEEL_REDIS__ON_UNAVAILABLE", mode)]).await?;
        // Before the outage: Redis answers (a loaded machine may miss one 25 ms deadline).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (answer, _) = admit(&node).await?;
            if answer.allowed && !answer.degraded {
                break;
            }
            ensure!(std::time::Instant::now() < deadline, "{mode}: before the outage: {answer:?}");
        }
        let mut local_allowed = 0u32;
        // Paused: calls hang, so only the deadline answers. Then killed.
        for outage in ["paused", "killed"] {
            match outage {
                "paused" => redis.pause()?,
                _ => {
                    redis.resume()?;
                    redis.kill_9()?;
                }
            }
            for _ in 0..3 {
                let (answer, elapsed) = admit(&node).await?;
                ensure!(answer.degraded, "{mode}/{outage}: not marked degraded: {answer:?}");
                // 25 ms for Redis, the rest is the call itself (debug build, loaded machine).
                ensure!(elapsed < std::time::Duration::from_millis(500), "{mode}/{outage}: took {elapsed:?}");
                match mode {
                    "fail_closed" => ensure!(!answer.allowed && answer.reason == "LIMITER_UNAVAILABLE", "{answer:?}"),
                    "fail_open" => ensure!(answer.allowed, "{mode}/{outage}: {answer:?}"),
                    // Limited here instead: the policy's burst of 3 holds in process too.
                    _ => {
                        ensure!(answer.allowed || answer.reason == "RATE_LIMITED", "{mode}/{outage}: {answer:?}");
                        local_allowed += u32::from(answer.allowed);
                    }
                }
            }
        }
        ensure!(mode != "local" || (1..=3).contains(&local_allowed), "local mode admitted {local_allowed}");
        // Ready only if a degraded mode is declared; /diagz and /metrics say degraded.
        let (code, body) = keel_chaos::process::http_get(&node.ops_addr, "/readyz").await?;
        match mode {
            "fail_closed" => ensure!(code == 503 && body.contains("rate limiter"), "{mode}: /readyz {code} {body}"),
            _ => ensure!(code == 200, "{mode}: /readyz {code} {body}"),
        }
        let (_, diagz) = keel_chaos::process::http_get(&node.ops_addr, "/diagz").await?;
        let diagz: serde_json::Value = serde_json::from_str(&diagz)?;
        ensure!(diagz["limiter"]["degraded"] == true, "{mode}: {}", diagz["limiter"]);
        let (_, metrics) = keel_chaos::process::http_get(&node.ops_addr, "/metrics").await?;
        ensure!(metrics.contains("keel_limiter_degraded 1"), "{mode}: the gauge");
        // Back: ready again without an admission (the member probes), then
        // admissions use Redis again, without a restart.
        redis.restart()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while keel_chaos::process::http_get(&node.ops_addr, "/readyz").await?.0 != 200 {
            ensure!(std::time::Instant::now() < deadline, "{mode}: /readyz did not recover");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (answer, _) = admit(&node).await?;
            // Redis restarted empty: its scopes have room again.
            if !answer.degraded && (answer.allowed || answer.reason == "RATE_LIMITED") {
                break;
            }
            ensure!(std::time::Instant::now() < deadline, "{mode}: no recovery: {answer:?}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The billing engine, tenant acme and a policy allowing everything at
/// `per_minute` / `burst` for tenant × engine, on `cluster`, converged.
pub(crate) async fn cluster_with_limit(
    cluster: &keel_chaos::cluster::Cluster,
    per_minute: u64,
    burst: u64,
) -> Result<()> {
    let leader = cluster.leader().await?;
    let node = &cluster.nodes[leader];
    let fixture = Fixture::with_root(cluster.root.clone());
    let publisher = fixture.add_publisher_key(node).await?;
    fixture.publish(node, &billing("1.0.0"), &publisher).await?;
    fixture.create_tenant(node, "acme").await?;
    let policy = format!(
        "package keel.policy\n\ndecision := {{\"allow\": true, \"reason\": \"ok\", \"limits\": \
         {{\"calls_per_minute\": {per_minute}, \"burst\": {burst}, \"max_duration_ms\": 1000}}}}\n"
    );
    let mut policies = pb::policy_service_client::PolicyServiceClient::new(node.channel().await?);
    policies.put_policy(pb::PutPolicyRequest { policy: "main".into(), source: policy, ..Default::default() }).await?;
    cluster.converged().await?;
    Ok(())
}

/// N closed-loop clients on every member of a three-node cluster sharing
/// `redis`, all for one tenant × engine limit, for 30 s: the admitted count
/// stays within GCRA's bound and reaches 95 % of the limit.
async fn a_tenants_limit_holds_across_three_members(redis: keel_chaos::cluster::RedisTarget) -> Result<()> {
    use keel_chaos::cluster::{Cluster, ClusterOptions};
    const RUN: std::time::Duration = std::time::Duration::from_secs(30);
    const PER_MINUTE: u64 = 600;
    const BURST: u64 = 20;
    const CLIENTS_PER_MEMBER: usize = 2;
    let cluster = Cluster::three(ClusterOptions { redis: Some(redis), ..ClusterOptions::default() }).await?;
    cluster_with_limit(&cluster, PER_MINUTE, BURST).await?;

    // Closed-loop clients on every member, all for the same tenant and engine.
    let started = std::time::Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for member in &cluster.nodes {
        for _ in 0..CLIENTS_PER_MEMBER {
            let mut client = admission(member).await?;
            clients.spawn(async move {
                let (mut allowed, mut limited) = (0u64, 0u64);
                while started.elapsed() < RUN {
                    let answer = client.admit(request("acme", "refund", "")).await?.into_inner();
                    anyhow::ensure!(!answer.degraded, "{answer:?}");
                    match answer.allowed {
                        true => allowed += 1,
                        false if answer.reason == "RATE_LIMITED" => limited += 1,
                        false => anyhow::bail!("{answer:?}"),
                    }
                }
                Ok((allowed, limited))
            });
        }
    }
    let (mut allowed, mut limited) = (0u64, 0u64);
    while let Some(result) = clients.join_next().await {
        let (a, l) = result??;
        allowed += a;
        limited += l;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // GCRA: at most burst + rate × time over any window; the run lasted `elapsed`.
    let bound = BURST as f64 + PER_MINUTE as f64 / 60.0 * elapsed;
    let floor = 0.95 * PER_MINUTE as f64 / 60.0 * RUN.as_secs_f64();
    println!("admitted {allowed} (bound {bound:.0}, floor {floor:.0}), limited {limited}, in {elapsed:.1} s");
    ensure!(limited > 0, "the load never reached the limit");
    ensure!((allowed as f64) <= bound, "admitted {allowed} > {bound:.0}");
    ensure!((allowed as f64) >= floor, "admitted {allowed} < 95% of the limit ({floor:.0})");
    Ok(())
}

#[tokio::test]
async fn a_tenants_limit_holds_across_a_three_node_cluster_sharing_redis() -> Result<()> {
    let redis = keel_chaos::redis::RedisServer::start()?;
    a_tenants_limit_holds_across_three_members(keel_chaos::cluster::RedisTarget::Server(redis.url())).await
}

#[tokio::test]
async fn a_tenants_limit_holds_across_a_three_node_cluster_sharing_a_redis_cluster() -> Result<()> {
    let redis = keel_chaos::redis::RedisCluster::start(3)?;
    a_tenants_limit_holds_across_three_members(keel_chaos::cluster::RedisTarget::Cluster(redis.urls())).await?;
    // The tenant's keys live on one master.
    let holding = redis.key_counts()?.into_iter().filter(|keys| *keys > 0).count();
    ensure!(holding == 1, "a tenant's scopes share one slot: {:?}", redis.key_counts()?);
    Ok(())
}

#[tokio::test]
async fn a_password_protected_redis_is_used_and_the_password_never_reaches_the_log() -> Result<()> {
    const SECRET: &str = "s3cret-pass-9f1c";
    let redis = keel_chaos::redis::RedisServer::start_with_password(SECRET)?;
    let good = ready_node(&[("KEEL_REDIS__URL", &redis.url())]).await?;
    let (answer, _) = admit(&good).await?;
    ensure!(answer.allowed && !answer.degraded, "with the password: {answer:?}");
    let wrong = redis.url().replace(SECRET, "not-the-password");
    let refused = ready_node(&[("KEEL_REDIS__URL", &wrong)]).await?;
    let (answer, _) = admit(&refused).await?;
    ensure!(answer.reason == "LIMITER_UNAVAILABLE" && answer.degraded, "with a wrong password: {answer:?}");
    for node in [&good, &refused] {
        let log = node.log();
        ensure!(!log.contains(SECRET) && !log.contains("not-the-password"), "a password reached the log");
    }
    Ok(())
}

#[tokio::test]
async fn a_batch_judges_each_admission_alone() -> Result<()> {
    let node = ready_node(&[]).await?;
    let batch = pb::AdmitBatchRequest {
        requests: vec![
            request("acme", "refund", ""),
            request("nobody", "refund", ""),
            request("acme", "charge", "{not json"),
            request("acme", "charge", r#"{"amount": 0}"#),
        ],
    };
    let items = admission(&node).await?.admit_batch(batch).await?.into_inner().items;
    ensure!(items.len() == 4, "{items:?}");
    ensure!(items[0].response.as_ref().is_some_and(|answer| answer.allowed), "{:?}", items[0]);
    ensure!(items[1].response.as_ref().is_some_and(|answer| answer.reason == "TENANT_NOT_FOUND"), "{:?}", items[1]);
    ensure!(items[2].response.is_none() && items[2].error_reason == "FIELD_INVALID", "{:?}", items[2]);
    ensure!(items[3].response.as_ref().is_some_and(|answer| answer.reason == "INPUT_INVALID"), "{:?}", items[3]);
    // Over the bound: the call is refused whole.
    let too_many = pb::AdmitBatchRequest { requests: vec![request("acme", "refund", ""); 257] };
    let refused = admission(&node).await?.admit_batch(too_many).await;
    ensure!(refused.as_ref().is_err_and(|status| reason_of(status) == "FIELD_INVALID"), "{refused:?}");
    Ok(())
}

#[tokio::test]
async fn an_idempotent_admission_is_charged_once_also_when_retried_on_another_node() -> Result<()> {
    let redis = keel_chaos::redis::RedisServer::start()?;
    let url = redis.url();
    let envs = [("KEEL_REDIS__URL", url.as_str()), ("KEEL_REDIS__TIMEOUT_MS", "500")];
    let first = ready_node(&envs).await?;
    let second = ready_node(&envs).await?;
    let keyed = |key: &str| pb::AdmitRequest { idempotency_key: key.into(), ..request("acme", "refund", "") };
    let answer = admission(&first).await?.admit(keyed("order-1")).await?.into_inner();
    ensure!(answer.allowed && !answer.idempotent_replay, "{answer:?}");
    let room = |answer: &pb::AdmitResponse| {
        answer.remaining.iter().find(|room| room.scope == "tenant_engine:acme/billing").map(|room| room.remaining)
    };
    ensure!(room(&answer) == Some(2), "the policy's burst of 3, one spent: {answer:?}");
    // Retried on both members: the first decision, nothing charged.
    for node in [&second, &first, &second] {
        let again = admission(node).await?.admit(keyed("order-1")).await?.into_inner();
        ensure!(again.allowed && again.idempotent_replay, "{again:?}");
        ensure!(again.decision_id == answer.decision_id, "the first decision: {again:?}");
        ensure!(again.served_by == answer.served_by, "as the first member decided it: {again:?}");
    }
    // The scope still has 2 left: a fresh key spends one of them.
    let fresh = admission(&second).await?.admit(keyed("order-2")).await?.into_inner();
    ensure!(fresh.allowed && room(&fresh) == Some(1), "{fresh:?}");
    // Concurrent retries of a new key on both members: charged once.
    let (a, b) = tokio::join!(
        async { admission(&first).await?.admit(keyed("order-3")).await.map_err(anyhow::Error::from) },
        async { admission(&second).await?.admit(keyed("order-3")).await.map_err(anyhow::Error::from) },
    );
    let (a, b) = (a?.into_inner(), b?.into_inner());
    ensure!(a.allowed && b.allowed && (a.idempotent_replay != b.idempotent_replay), "{a:?} {b:?}");
    let spent = admission(&first).await?.admit(request("acme", "refund", "")).await?.into_inner();
    ensure!(!spent.allowed && spent.reason == "RATE_LIMITED", "3 charges in all, the burst is spent: {spent:?}");
    // A denial is not recorded: the same key is judged afresh.
    let denied_first = admission(&first).await?.admit(keyed("order-4")).await?.into_inner();
    ensure!(denied_first.reason == "RATE_LIMITED" && !denied_first.idempotent_replay, "{denied_first:?}");
    Ok(())
}

#[tokio::test]
async fn without_redis_a_retry_on_the_same_member_is_charged_once() -> Result<()> {
    let node = ready_node(&[]).await?;
    let keyed = pb::AdmitRequest { idempotency_key: "order-1".into(), ..request("acme", "refund", "") };
    let answer = admission(&node).await?.admit(keyed.clone()).await?.into_inner();
    let again = admission(&node).await?.admit(keyed.clone()).await?.into_inner();
    ensure!(answer.allowed && !answer.idempotent_replay && again.idempotent_replay, "{answer:?} {again:?}");
    let too_long = pb::AdmitRequest { idempotency_key: "k".repeat(129), ..keyed };
    let refused = admission(&node).await?.admit(too_long).await;
    ensure!(refused.as_ref().is_err_and(|status| reason_of(status) == "FIELD_INVALID"), "{refused:?}");
    Ok(())
}

#[tokio::test]
async fn a_tls_redis_is_used_with_the_configured_ca() -> Result<()> {
    let redis = keel_chaos::redis::RedisServer::start_tls()?;
    let ca = redis.tls_files().map(|tls| tls.ca.display().to_string()).unwrap_or_default();
    // A debug build's first TLS handshake can take longer than 25 ms.
    let node = ready_node(&[
        ("KEEL_REDIS__URL", &redis.url()),
        ("KEEL_REDIS__TLS_CA_FILE", &ca),
        ("KEEL_REDIS__TIMEOUT_MS", "500"),
    ])
    .await?;
    let (answer, _) = admit(&node).await?;
    ensure!(answer.allowed && !answer.degraded, "over TLS: {answer:?}");
    // Without the CA the server is not trusted: an outage, not an admission.
    let untrusting = ready_node(&[("KEEL_REDIS__URL", &redis.url()), ("KEEL_REDIS__TIMEOUT_MS", "500")]).await?;
    let (answer, _) = admit(&untrusting).await?;
    ensure!(answer.reason == "LIMITER_UNAVAILABLE" && answer.degraded, "without the CA: {answer:?}");
    Ok(())
}

async fn report(node: &KeelProcess, outcome: pb::CallOutcome) -> Result<pb::ReportOutcomeResponse> {
    let request = pb::ReportOutcomeRequest {
        tenant: "acme".into(),
        engine: "billing".into(),
        action: "refund".into(),
        outcome: outcome as i32,
        duration_ms: 5,
    };
    Ok(admission(node).await?.report_outcome(request).await?.into_inner())
}

/// Allows everything, with room enough that limits never refuse; degraded
/// mode for the "lenient" role.
const OPEN_POLICY: &str = r#"package keel.policy

decision := {"allow": true, "reason": "ok", "allow_degraded": true} if {
	input.role == "lenient"
} else := {"allow": true, "reason": "ok"}
"#;

#[tokio::test]
async fn a_breaker_opens_on_every_member_lets_only_its_probes_through_and_closes_on_success() -> Result<()> {
    let redis = keel_chaos::redis::RedisServer::start()?;
    let url = redis.url();
    let envs = [
        ("KEEL_REDIS__URL", url.as_str()),
        ("KEEL_REDIS__TIMEOUT_MS", "500"),
        ("KEEL_BREAKER__MIN_CALLS", "4"),
        ("KEEL_BREAKER__ERROR_RATE_PERCENT", "50"),
        ("KEEL_BREAKER__COOL_DOWN_MS", "1500"),
        ("KEEL_BREAKER__HALF_OPEN_PROBES", "2"),
        ("KEEL_BREAKER__STALENESS_MS", "100"),
    ];
    let first = KeelProcess::start_with_env(&envs).await?;
    let second = KeelProcess::start_with_env(&envs).await?;
    for node in [&first, &second] {
        let fixture = Fixture::new(node).await?;
        let publisher = fixture.add_publisher_key(node).await?;
        fixture.publish(node, &billing("1.0.0"), &publisher).await?;
        let checkout = serde_json::json!({
            "name": "checkout", "version": "1.0.0", "tier": "standard",
            "actions": [{"name": "pay"}],
            "dependencies": [{"name": "billing", "requirement": "^1"}],
        });
        fixture.publish(node, &checkout, &publisher).await?;
        let mut tenant = Fixture::tenant_request("acme");
        if let Some(tenant) = tenant.tenant.as_mut() {
            tenant.enabled_engines.push("checkout".into());
        }
        crate::single_node::tenants(node).await?.create_tenant(tenant).await?;
        let mut policies = pb::policy_service_client::PolicyServiceClient::new(node.channel().await?);
        policies
            .put_policy(pb::PutPolicyRequest {
                policy: "main".into(),
                source: OPEN_POLICY.into(),
                ..Default::default()
            })
            .await?;
    }
    let pay = |role: &str| pb::AdmitRequest {
        engine: "checkout".into(),
        action: "pay".into(),
        role: role.into(),
        ..request("acme", "", "")
    };
    // Closed: both members admit.
    for node in [&first, &second] {
        ensure!(admit(node).await?.0.allowed);
    }
    // The first member sees errors: 2 of 4 calls (50 %) open the breaker.
    for outcome in [pb::CallOutcome::Ok, pb::CallOutcome::Error, pb::CallOutcome::Ok, pb::CallOutcome::Timeout] {
        report(&first, outcome).await?;
    }
    let state = report(&first, pb::CallOutcome::Ok).await?;
    ensure!(state.breaker == "billing" && state.state == pb::BreakerState::Open as i32, "{state:?}");
    // Open on every member (the second's view is at most 100 ms old), and its dependant is denied.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for node in [&first, &second] {
        loop {
            let (answer, _) = admit(node).await?;
            if answer.reason == "CIRCUIT_OPEN" {
                ensure!(answer.retry_after_ms > 0 && answer.retry_after_ms <= 1_500, "{answer:?}");
                break;
            }
            ensure!(std::time::Instant::now() < deadline, "not open on a member: {answer:?}");
        }
        let dependant = admission(node).await?.admit(pay("")).await?.into_inner();
        ensure!(dependant.reason == "DEPENDENCY_UNAVAILABLE", "{dependant:?}");
        // Unless the policy allows degraded mode.
        let lenient = admission(node).await?.admit(pay("lenient")).await?.into_inner();
        ensure!(lenient.allowed && lenient.degraded && lenient.degraded_reason.contains("billing"), "{lenient:?}");
    }
    // After the cool-down: exactly 2 probes across both members.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut probes = 0;
    loop {
        let (answer, _) = admit(&first).await?;
        if answer.allowed {
            probes += 1;
            break;
        }
        ensure!(answer.reason == "CIRCUIT_OPEN", "{answer:?}");
        ensure!(std::time::Instant::now() < deadline, "the cool-down never ended");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for node in [&second, &first, &second, &first, &second] {
        let (answer, _) = admit(node).await?;
        match answer.allowed {
            true => probes += 1,
            false => ensure!(answer.reason == "CIRCUIT_OPEN", "{answer:?}"),
        }
    }
    ensure!(probes == 2, "half-open let {probes} admissions through, not 2");
    // Two successes close it; both members admit again.
    report(&second, pb::CallOutcome::Ok).await?;
    let state = report(&first, pb::CallOutcome::Ok).await?;
    ensure!(state.state == pb::BreakerState::Closed as i32, "{state:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for node in [&first, &second] {
        while !admit(node).await?.0.allowed {
            ensure!(std::time::Instant::now() < deadline, "not closed on a member");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        ensure!(admission(node).await?.admit(pay("")).await?.into_inner().allowed, "the dependant runs again");
    }
    // The three transitions were logged by the members that made them.
    let logged = first.log().matches("circuit breaker changed state").count()
        + second.log().matches("circuit breaker changed state").count();
    ensure!(logged == 3, "closed → open → half_open → closed, logged {logged} times");
    // And published as events (topic keel-breaker) in each member's stream.
    let mut seen = Vec::new();
    for node in [&first, &second] {
        let mut events = pb::event_service_client::EventServiceClient::new(node.channel().await?);
        let watch = pb::WatchRequest {
            from_revision: 1,
            engine: "billing".into(),
            progress_interval_ms: 200,
            ..Default::default()
        };
        let mut stream = events.watch(watch).await?.into_inner();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        // Until the stream is caught up and idle (a progress message).
        while let Ok(message) = tokio::time::timeout_at(deadline, stream.message()).await {
            let Some(message) = message? else { break };
            if message.events.is_empty() && message.progress_revision > 0 {
                break;
            }
            for event in message.events {
                if event.attributes.get("topic").is_some_and(|topic| topic == "keel-breaker") {
                    let payload: serde_json::Value = serde_json::from_slice(&event.payload)?;
                    let state = |key: &str| payload[key].as_str().unwrap_or_default().to_owned();
                    seen.push(format!("{}→{}", state("from"), state("to")));
                }
            }
        }
    }
    seen.sort();
    ensure!(seen == ["closed→open", "half_open→closed", "open→half_open"], "breaker events: {seen:?}");
    // The same transitions are audit records (on the member that saw each).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut recorded = Vec::new();
        for member in [&first, &second] {
            let mut audit = pb::audit_service_client::AuditServiceClient::new(member.channel().await?);
            let query = pb::QueryAuditRequest { kind: "breaker".into(), ..Default::default() };
            let page = audit.query_audit(query).await?.into_inner();
            recorded.extend(page.records.into_iter().map(|record| record.decision));
        }
        recorded.sort();
        if recorded == ["closed", "half_open", "open"] {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "breaker records: {recorded:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // An outcome must be named.
    let bad = admission(&first)
        .await?
        .report_outcome(pb::ReportOutcomeRequest {
            tenant: "acme".into(),
            engine: "billing".into(),
            action: "refund".into(),
            ..Default::default()
        })
        .await;
    ensure!(bad.as_ref().is_err_and(|status| reason_of(status) == "FIELD_INVALID"), "{bad:?}");
    Ok(())
}

#[tokio::test]
async fn envoys_rate_limit_api_maps_descriptors_onto_admissions() -> Result<()> {
    use keel_proto::envoy::ratelimit::v3 as rls;
    let node = ready_node(&[]).await?;
    let mut envoy = rls::rate_limit_service_client::RateLimitServiceClient::new(node.channel().await?);
    let entry = |key: &str, value: &str| rls::rate_limit_descriptor::Entry { key: key.into(), value: value.into() };
    let keel = |hits: Option<u64>| rls::RateLimitDescriptor {
        entries: vec![entry("tenant", "acme"), entry("engine", "billing"), entry("action", "refund")],
        hits_addend: hits,
        ..Default::default()
    };
    let foreign = rls::RateLimitDescriptor { entries: vec![entry("remote_address", "10.0.0.1")], ..Default::default() };
    let ask = |descriptors: Vec<rls::RateLimitDescriptor>| rls::RateLimitRequest {
        domain: "edge".into(),
        descriptors,
        hits_addend: 0,
    };
    // The policy's burst is 3: two hits, then one, then over the limit.
    let ok = rls::rate_limit_response::Code::Ok as i32;
    let over = rls::rate_limit_response::Code::OverLimit as i32;
    let first = envoy.should_rate_limit(ask(vec![keel(Some(2)), foreign.clone()])).await?.into_inner();
    ensure!(first.overall_code == ok && first.statuses.len() == 2, "{first:?}");
    ensure!(first.statuses[0].limit_remaining == 1 && first.statuses[1].code == ok, "{first:?}");
    let limit = first.statuses[0].current_limit.as_ref();
    ensure!(limit.is_some_and(|limit| limit.requests_per_unit == 60), "the per-minute limit: {first:?}");
    ensure!(first.request_headers_to_add.iter().any(|header| header.key == "x-keel-decision-id"), "{first:?}");
    let second = envoy.should_rate_limit(ask(vec![keel(None)])).await?.into_inner();
    ensure!(second.overall_code == ok, "{second:?}");
    let third = envoy.should_rate_limit(ask(vec![keel(None), foreign])).await?.into_inner();
    ensure!(third.overall_code == over && third.statuses[0].code == over && third.statuses[1].code == ok, "{third:?}");
    let reason = third.response_headers_to_add.iter().find(|header| header.key == "x-keel-reason");
    ensure!(reason.is_some_and(|header| header.value == "RATE_LIMITED"), "{third:?}");
    ensure!(third.statuses[0].duration_until_reset.is_some(), "{third:?}");
    // Denials other than limits are over the limit too, with their reason.
    let nobody = rls::RateLimitDescriptor {
        entries: vec![entry("tenant", "nobody"), entry("engine", "billing"), entry("action", "refund")],
        ..Default::default()
    };
    let unknown = envoy.should_rate_limit(ask(vec![nobody])).await?.into_inner();
    let reason = unknown.response_headers_to_add.iter().find(|header| header.key == "x-keel-reason");
    ensure!(unknown.overall_code == over && reason.is_some_and(|h| h.value == "TENANT_NOT_FOUND"), "{unknown:?}");
    // Malformed descriptors are errors.
    let twice = rls::RateLimitDescriptor {
        entries: vec![entry("tenant", "acme"), entry("tenant", "other")],
        ..Default::default()
    };
    let refused = envoy.should_rate_limit(ask(vec![twice])).await;
    ensure!(refused.as_ref().is_err_and(|status| reason_of(status) == "FIELD_INVALID"), "{refused:?}");
    Ok(())
}

#[tokio::test]
async fn in_redis_cluster_a_refusal_in_the_shared_slot_refunds_the_tenants_slot() -> Result<()> {
    let redis = keel_chaos::redis::RedisCluster::start(3)?;
    let urls = format!("{:?}", redis.urls());
    // The engine scope (shared slot) allows 2 at once; the tenant scope
    // (the tenant's slot) moves its TAT by a whole second per charge.
    let node = ready_node(&[
        ("KEEL_REDIS__CLUSTER_URLS", &urls),
        ("KEEL_REDIS__TIMEOUT_MS", "500"),
        ("KEEL_ADMISSION__ENTERPRISE__CALLS_PER_MINUTE", "60"),
        ("KEEL_ADMISSION__ENTERPRISE__BURST", "10"),
        ("KEEL_ADMISSION__ENGINE__CALLS_PER_MINUTE", "60"),
        ("KEEL_ADMISSION__ENGINE__BURST", "2"),
    ])
    .await?;
    for _ in 0..2 {
        let (answer, _) = admit(&node).await?;
        ensure!(answer.allowed && !answer.degraded, "{answer:?}");
        ensure!(answer.remaining.iter().any(|room| room.scope == "engine:billing"), "{answer:?}");
    }
    for _ in 0..3 {
        let (answer, _) = admit(&node).await?;
        ensure!(answer.reason == "RATE_LIMITED" && answer.detail.contains("engine:billing"), "{answer:?}");
    }
    // The tenant scope holds 2 charges, not 5: each refusal was refunded.
    let key = "keel:rl:{t:acme}:tenant:acme";
    let tat: u64 = redis
        .nodes
        .iter()
        .filter_map(|node| node.command(&format!("GET {key}")).ok())
        .find_map(|reply| reply.lines().nth(1).and_then(|line| line.trim().parse().ok()))
        .ok_or_else(|| anyhow::anyhow!("no master holds {key}"))?;
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as u64;
    let ahead_s = (tat as f64 - now_us as f64) / 1e6;
    ensure!((1.0..=2.5).contains(&ahead_s), "the tenant scope is {ahead_s:.2} s ahead: 2 charges, not 5");
    Ok(())
}

#[tokio::test]
async fn without_redis_each_member_runs_its_own_breakers() -> Result<()> {
    let node = ready_node(&[
        ("KEEL_BREAKER__MIN_CALLS", "2"),
        ("KEEL_BREAKER__COOL_DOWN_MS", "60000"),
        ("KEEL_BREAKER__ACTIONS", "[\"billing/refund\"]"),
    ])
    .await?;
    for _ in 0..2 {
        report(&node, pb::CallOutcome::Error).await?;
    }
    let (answer, _) = admit(&node).await?;
    ensure!(answer.reason == "CIRCUIT_OPEN" && !answer.degraded, "{answer:?}");
    ensure!(answer.detail.contains("billing/refund"), "a per-action breaker: {answer:?}");
    // Another action of the engine has its own (closed) breaker... the engine's.
    let charge = admission(&node).await?.admit(request("acme", "charge", r#"{"amount": 1}"#)).await?.into_inner();
    ensure!(charge.allowed, "{charge:?}");
    // Reports about what could never have been admitted are refused.
    for (tenant, engine, action, reason) in [
        ("nobody", "billing", "refund", "TENANT_NOT_FOUND"),
        ("acme", "ghost", "refund", "ENGINE_VERSION_NOT_FOUND"),
        ("acme", "billing", "mint", "FIELD_INVALID"),
    ] {
        let request = pb::ReportOutcomeRequest {
            tenant: tenant.into(),
            engine: engine.into(),
            action: action.into(),
            outcome: pb::CallOutcome::Error as i32,
            duration_ms: 1,
        };
        let refused = admission(&node).await?.report_outcome(request).await;
        ensure!(refused.as_ref().is_err_and(|status| reason_of(status) == reason), "{reason}: {refused:?}");
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_checks_share_redis_round_trips_and_the_limit_still_holds() -> Result<()> {
    let redis = keel_chaos::redis::RedisServer::start()?;
    let node = ready_node(&[("KEEL_REDIS__URL", &redis.url()), ("KEEL_REDIS__TIMEOUT_MS", "500")]).await?;
    let _ = redis.command("CONFIG RESETSTAT")?;
    const ITEMS: usize = 200;
    let batch = pb::AdmitBatchRequest { requests: vec![request("acme", "refund", ""); ITEMS] };
    let items = admission(&node).await?.admit_batch(batch).await?.into_inner().items;
    let allowed = items.iter().filter(|item| item.response.as_ref().is_some_and(|answer| answer.allowed)).count();
    let limited = items
        .iter()
        .filter(|item| item.response.as_ref().is_some_and(|answer| answer.reason == "RATE_LIMITED"))
        .count();
    ensure!(allowed == 3 && limited == ITEMS - 3, "the policy's burst of 3: {allowed} allowed, {limited} limited");
    // Script runs, not one per admission: the checks went in batches.
    let stats = redis.command("INFO commandstats")?;
    let calls: u64 = stats
        .lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| line.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum();
    ensure!((1..=ITEMS as u64 / 2).contains(&calls), "{calls} script runs for {ITEMS} checks:\n{stats}");
    Ok(())
}

#[tokio::test]
async fn in_local_mode_three_members_without_redis_stay_within_the_clusters_limit() -> Result<()> {
    use keel_chaos::cluster::{Cluster, ClusterOptions, RedisTarget};
    const PER_MINUTE: u64 = 600;
    const BURST: u64 = 6;
    const RUN: std::time::Duration = std::time::Duration::from_secs(3);
    let mut redis = keel_chaos::redis::RedisServer::start()?;
    let options = ClusterOptions {
        redis: Some(RedisTarget::Server(redis.url())),
        redis_on_unavailable: Some("local"),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::three(options).await?;
    cluster_with_limit(&cluster, PER_MINUTE, BURST).await?;
    redis.kill_9()?;
    // Every member admits on its own share (limit ÷ 3 voters, rounded down).
    let started = std::time::Instant::now();
    let mut allowed = 0u64;
    while started.elapsed() < RUN {
        for member in &cluster.nodes {
            let answer = admission(member).await?.admit(request("acme", "refund", "")).await?.into_inner();
            ensure!(answer.degraded, "{answer:?}");
            match answer.allowed {
                true => allowed += 1,
                false => ensure!(answer.reason == "RATE_LIMITED", "{answer:?}"),
            }
        }
    }
    let bound = BURST as f64 + PER_MINUTE as f64 / 60.0 * started.elapsed().as_secs_f64();
    ensure!(allowed >= BURST && (allowed as f64) <= bound, "admitted {allowed}, bound {bound:.0}");
    Ok(())
}

/// keel-node's `ADMISSION_COST_MAX`.
const ADMISSION_COST_MAX: u64 = 1_000_000;

/// A cost past what the limit script computes exactly used to overflow its
/// integer reply, which the limiter took for a Redis failure: in
/// `fail_open` the admission was then allowed, degraded. Such a cost is
/// invalid input; the cap itself is judged like any other cost.
#[tokio::test]
async fn an_absurd_cost_is_refused_as_invalid_and_never_taken_for_a_redis_outage() -> Result<()> {
    let redis = keel_chaos::redis::RedisServer::start()?;
    let url = redis.url();
    let envs = [
        ("KEEL_REDIS__URL", url.as_str()),
        ("KEEL_REDIS__TIMEOUT_MS", "500"),
        ("KEEL_REDIS__ON_UNAVAILABLE", "fail_open"),
        ("KEEL_ADMISSION__ENTERPRISE__CALLS_PER_MINUTE", "1"),
        ("KEEL_ADMISSION__ENTERPRISE__BURST", "1"),
    ];
    let node = ready_node(&envs).await?;
    let mut client = admission(&node).await?;
    for cost in [u64::MAX, 1 << 53, ADMISSION_COST_MAX + 1] {
        let status = client
            .admit(pb::AdmitRequest { cost, ..request("acme", "refund", "") })
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("cost {cost} was judged"))?;
        ensure!(status.code() == tonic::Code::InvalidArgument, "cost {cost}: {status:?}");
        ensure!(reason_of(&status) == "FIELD_INVALID", "cost {cost}: {status:?}");
    }
    let mut envoy =
        keel_proto::envoy::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient::new(node.channel().await?);
    let entry = |key: &str, value: &str| keel_proto::envoy::ratelimit::v3::rate_limit_descriptor::Entry {
        key: key.into(),
        value: value.into(),
    };
    let status = envoy
        .should_rate_limit(keel_proto::envoy::ratelimit::v3::RateLimitRequest {
            domain: "keel".into(),
            descriptors: vec![keel_proto::envoy::ratelimit::v3::RateLimitDescriptor {
                entries: vec![entry("tenant", "acme"), entry("engine", "billing"), entry("action", "refund")],
                ..Default::default()
            }],
            hits_addend: u32::MAX,
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("hits_addend u32::MAX was judged"))?;
    ensure!(status.code() == tonic::Code::InvalidArgument, "{status:?}");
    // At the cap, one call per minute: exact arithmetic, a plain refusal.
    let answer = client
        .admit(pb::AdmitRequest { cost: ADMISSION_COST_MAX, ..request("acme", "refund", "") })
        .await?
        .into_inner();
    ensure!(!answer.allowed && answer.reason == "RATE_LIMITED" && !answer.degraded, "{answer:?}");
    ensure!(answer.retry_after_ms >= (ADMISSION_COST_MAX - 1) * 60_000, "{answer:?}");
    let (answer, _) = admit(&node).await?;
    ensure!(answer.allowed && !answer.degraded, "{answer:?}");
    Ok(())
}
