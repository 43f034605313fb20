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

fn request(tenant: &str, action: &str, input: &str) -> pb::AdmitRequest {
    pb::AdmitRequest {
        tenant: tenant.into(),
        engine: "billing".into(),
        action: action.into(),
        input_json: input.into(),
        ..Default::default()
    }
}

async fn admission(node: &KeelProcess) -> Result<pb::admission_service_client::AdmissionServiceClient<AuthChannel>> {
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
    Ok(())
}
