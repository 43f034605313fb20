//! Tenant isolation, checked on a real 3-node cluster: a seeded random
//! workload of tenant-scoped callers (creates, updates, reads, lists,
//! events, watches, evaluations, spread over every member), and a checker
//! that no response and no watch message to tenant A ever carries tenant
//! B's data. Plus revocation: a revoked token is refused by every member
//! within a bound, measured.

use crate::fixture::reason_of;
use anyhow::{Context, Result, ensure};
use keel_chaos::cluster::{Cluster, ClusterOptions};
use keel_chaos::process::{AuthChannel, Bearer};
use keel_proto::v1 as pb;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tonic::Code;

const TENANTS: [&str; 3] = ["alpha", "bravo", "charlie"];
/// Random operations per tenant.
const OPS_PER_TENANT: usize = 40;
/// How long watchers may take to deliver what was published.
const WATCH_DEADLINE: Duration = Duration::from_secs(20);

/// What a tenant's caller may do.
const TENANT_PERMISSIONS: &[&str] =
    &["tenant.read", "tenant.write", "events.read", "events.publish", "policy.evaluate", "registry.read"];

fn tenant(tenant_id: &str, display_name: &str) -> pb::Tenant {
    pb::Tenant {
        tenant_id: tenant_id.into(),
        display_name: display_name.into(),
        tier: pb::TenantTier::Basic as i32,
        home_region: "eu-west".into(),
        ..pb::Tenant::default()
    }
}

/// A marker only `owner`'s data carries.
fn marker(owner: &str) -> String {
    format!("secret-of-{owner}")
}

/// Every tenant id and marker in `text` that is not `own`'s.
fn foreign_in(text: &str, own: &str) -> Vec<String> {
    TENANTS
        .iter()
        .filter(|other| **other != own)
        .flat_map(|other| [other.to_string(), marker(other)])
        .filter(|needle| text.contains(needle.as_str()))
        .collect()
}

async fn channel(cluster: &Cluster, member: usize, token: &str) -> Result<AuthChannel> {
    let channel = cluster.nodes[member].raw_channel().await?;
    Ok(tonic::service::interceptor::InterceptedService::new(channel, Bearer::new(Some(token))?))
}

/// One tenant's watch: every event it delivers, as text, until told to stop.
async fn watch(
    channel: AuthChannel,
    own: &'static str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<pb::Event>> {
    let mut events = pb::event_service_client::EventServiceClient::new(channel);
    let request =
        pb::WatchRequest { from_revision: 1, tenant: own.into(), progress_interval_ms: 200, ..Default::default() };
    let mut stream = events.watch(request).await?.into_inner();
    let mut seen = Vec::new();
    let mut stop = stop;
    loop {
        tokio::select! {
            message = stream.message() => match message? {
                Some(message) => seen.extend(message.events),
                None => return Ok(seen),
            },
            _ = stop.wait_for(|stopped| *stopped) => return Ok(seen),
        }
    }
}

#[tokio::test]
async fn no_response_or_watch_message_to_one_tenant_carries_anothers_data() -> Result<()> {
    let seed: u64 = rand::random();
    println!("tenant isolation seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cluster = Cluster::three(ClusterOptions::default()).await?;
    let mut tokens = BTreeMap::new();
    for own in TENANTS {
        tokens.insert(own, cluster.token(&format!("user-{own}"), Some(own), TENANT_PERMISSIONS)?);
    }
    // Each tenant creates itself (its token may create its own tenant only).
    for own in TENANTS {
        let mut tenants =
            pb::tenant_service_client::TenantServiceClient::new(channel(&cluster, 0, &tokens[own]).await?);
        tenants
            .create_tenant(pb::CreateTenantRequest { tenant: Some(tenant(own, &marker(own))), ..Default::default() })
            .await
            .with_context(|| format!("{own} creates itself"))?;
    }
    // A watcher per tenant, on a random member.
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut watchers = Vec::new();
    for own in TENANTS {
        let member = rng.gen_range(0..3);
        watchers.push((own, tokio::spawn(watch(channel(&cluster, member, &tokens[own]).await?, own, stop_rx.clone()))));
    }

    let mut leaks = Vec::new();
    let mut published: BTreeMap<&str, usize> = BTreeMap::new();
    for step in 0..OPS_PER_TENANT * TENANTS.len() {
        let own = TENANTS[rng.gen_range(0..TENANTS.len())];
        let other = TENANTS.iter().copied().filter(|t| *t != own).nth(rng.gen_range(0..2)).unwrap_or(own);
        let member = rng.gen_range(0..3);
        let channel = channel(&cluster, member, &tokens[own]).await?;
        let mut tenants = pb::tenant_service_client::TenantServiceClient::new(channel.clone());
        let mut events = pb::event_service_client::EventServiceClient::new(channel.clone());
        let mut policies = pb::policy_service_client::PolicyServiceClient::new(channel);
        let (what, answer): (&str, Result<String, tonic::Status>) = match rng.gen_range(0..9) {
            0 => (
                "get own",
                tenants
                    .get_tenant(pb::GetTenantRequest { name: own.into(), consistency: 0 })
                    .await
                    .map(|r| format!("{:?}", r.into_inner())),
            ),
            1 => (
                "get other",
                tenants
                    .get_tenant(pb::GetTenantRequest { name: other.into(), consistency: 0 })
                    .await
                    .map(|r| format!("{:?}", r.into_inner())),
            ),
            2 => (
                "list",
                tenants.list_tenants(pb::ListTenantsRequest::default()).await.map(|r| format!("{:?}", r.into_inner())),
            ),
            3 => {
                let update = pb::UpdateTenantRequest {
                    tenant: Some(tenant(own, &format!("{} {step}", marker(own)))),
                    ..Default::default()
                };
                ("update own", tenants.update_tenant(update).await.map(|r| format!("{:?}", r.into_inner())))
            }
            4 => {
                let update =
                    pb::UpdateTenantRequest { tenant: Some(tenant(other, "taken over")), ..Default::default() };
                ("update other", tenants.update_tenant(update).await.map(|r| format!("{:?}", r.into_inner())))
            }
            5 => {
                let payload = format!("{} {step}", marker(own)).into_bytes();
                let stamped = rng.gen_bool(0.5);
                let request = pb::PublishEventRequest {
                    topic: "work".into(),
                    tenant: if stamped { own.into() } else { String::new() },
                    payload,
                    ..Default::default()
                };
                let answer = events.publish(request).await.map(|r| format!("{:?}", r.into_inner()));
                if answer.is_ok() {
                    *published.entry(own).or_default() += 1;
                }
                ("publish own", answer)
            }
            6 => {
                let request = pb::PublishEventRequest {
                    topic: "work".into(),
                    tenant: other.into(),
                    payload: b"forged".to_vec(),
                    ..Default::default()
                };
                ("publish as other", events.publish(request).await.map(|r| format!("{:?}", r.into_inner())))
            }
            7 => {
                let context = pb::EvaluationContext {
                    tenant: other.into(),
                    engine: "billing".into(),
                    action: "charge".into(),
                    ..Default::default()
                };
                let request = pb::EvaluateRequest { context: Some(context), ..Default::default() };
                ("evaluate other", policies.evaluate(request).await.map(|r| format!("{:?}", r.into_inner())))
            }
            _ => {
                let context = pb::EvaluationContext {
                    tenant: own.into(),
                    engine: "billing".into(),
                    action: "charge".into(),
                    ..Default::default()
                };
                let request = pb::EvaluateRequest { context: Some(context), ..Default::default() };
                ("evaluate own", policies.evaluate(request).await.map(|r| format!("{:?}", r.into_inner())))
            }
        };
        let touches_other = matches!(what, "get other" | "update other" | "publish as other" | "evaluate other");
        match answer {
            Ok(text) => {
                ensure!(!touches_other || other == own, "{own}: {what} {other} was allowed: {text}");
                let foreign = foreign_in(&text, own);
                if !foreign.is_empty() {
                    leaks.push(format!("{own} {what}: {foreign:?} in {text}"));
                }
            }
            Err(status) if touches_other => {
                ensure!(
                    status.code() == Code::PermissionDenied && reason_of(&status) == "TENANT_OUT_OF_SCOPE",
                    "{own}: {what} {other}: {status:?}"
                );
                let foreign: Vec<String> =
                    foreign_in(status.message(), own).into_iter().filter(|found| *found != other).collect();
                ensure!(
                    foreign.is_empty() && !status.message().contains(&marker(other)),
                    "{own}: the refusal leaks {status:?}"
                );
            }
            Err(status) => {
                // Evaluations of an unpublished engine may fail on their own
                // terms; what matters is that nothing foreign shows.
                let foreign = foreign_in(&format!("{status:?}"), own);
                if !foreign.is_empty() {
                    leaks.push(format!("{own} {what} failed with {foreign:?}: {status:?}"));
                }
            }
        }
    }

    // Watchers: every tenant sees its own publications, and only its own data.
    let deadline = Instant::now() + WATCH_DEADLINE;
    let mut users = BTreeMap::new();
    for own in TENANTS {
        let mut client = pb::event_service_client::EventServiceClient::new(channel(&cluster, 0, &tokens[own]).await?);
        // The watcher cannot be asked how far it got; wait until a fresh
        // watch from revision 1 has every publication, then stop them all.
        loop {
            let request = pb::WatchRequest {
                from_revision: 1,
                tenant: own.into(),
                progress_interval_ms: 100,
                ..Default::default()
            };
            let mut stream = client.watch(request).await?.into_inner();
            let mut count = 0;
            let until = Instant::now() + Duration::from_millis(500);
            while let Ok(Ok(Some(message))) = tokio::time::timeout_at(until.into(), stream.message()).await {
                count += message.events.iter().filter(|event| event.kind == "USER_EVENT").count();
            }
            if count >= published.get(own).copied().unwrap_or(0) {
                break;
            }
            ensure!(Instant::now() < deadline, "{own}'s events did not all arrive");
        }
        users.insert(own, format!("user-{own}"));
    }
    stop.send(true)?;
    for (own, watcher) in watchers {
        let seen = watcher.await??;
        let user_events: Vec<&pb::Event> = seen.iter().filter(|event| event.kind == "USER_EVENT").collect();
        ensure!(
            user_events.len() == published.get(own).copied().unwrap_or(0),
            "{own}'s watcher saw {} of its {} events",
            user_events.len(),
            published.get(own).copied().unwrap_or(0)
        );
        for event in &seen {
            ensure!(event.tenant == own, "{own}'s watcher got an event of {:?}: {event:?}", event.tenant);
            ensure!(event.caused_by == users[own], "{own}'s event caused by {:?}", event.caused_by);
            let foreign = foreign_in(&format!("{event:?} {}", String::from_utf8_lossy(&event.payload)), own);
            if !foreign.is_empty() {
                leaks.push(format!("{own}'s watcher: {foreign:?} in {event:?}"));
            }
        }
    }
    ensure!(leaks.is_empty(), "seed {seed}: {} leaks:\n{}", leaks.len(), leaks.join("\n"));
    // Every member ends in the same state.
    cluster.converged().await?;
    Ok(())
}

#[tokio::test]
async fn a_revoked_token_is_refused_by_every_member_within_a_second() -> Result<()> {
    let cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let token = cluster.token("eve", None, &["cluster.read"])?;
    let claims = keel_client::token::read_claims(&token)?;
    let status = |member: usize| {
        let token = token.clone();
        let cluster = &cluster;
        async move {
            let mut client =
                pb::cluster_service_client::ClusterServiceClient::new(channel(cluster, member, &token).await?);
            anyhow::Ok(client.get_status(pb::GetStatusRequest {}).await)
        }
    };
    for member in 0..3 {
        status(member).await?.with_context(|| format!("member {member} accepts the token before"))?;
    }
    let mut trust = pb::trust_service_client::TrustServiceClient::new(cluster.nodes[leader].channel().await?);
    let started = Instant::now();
    trust
        .revoke_token(pb::RevokeTokenRequest {
            jti: claims.jti.clone(),
            exp_ms: claims.exp * 1000,
            ..Default::default()
        })
        .await?;
    let mut refused_after = vec![None; 3];
    let deadline = started + Duration::from_secs(5);
    while refused_after.iter().any(Option::is_none) && Instant::now() < deadline {
        for (member, refused) in refused_after.iter_mut().enumerate() {
            if refused.is_none()
                && let Err(refusal) = status(member).await?
            {
                ensure!(reason_of(&refusal) == "TOKEN_REVOKED", "member {member}: {refusal:?}");
                *refused = Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("revocation effective after {refused_after:?} (from the RevokeToken call)");
    let slowest = refused_after.iter().map(|after| after.unwrap_or(Duration::MAX)).max().unwrap_or(Duration::MAX);
    ensure!(slowest <= Duration::from_secs(1), "a member still accepted the token after 1 s: {refused_after:?}");
    Ok(())
}
