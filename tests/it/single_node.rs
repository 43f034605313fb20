//! One real keeld: publish, read, crash with `kill -9`, restart, read again.

use crate::fixture::Fixture;
use crate::harness::KeelProcess;
use anyhow::Result;
use keel_proto::v1 as pb;

#[tokio::test]
async fn published_engine_survives_kill_9_with_the_same_digest() -> Result<()> {
    let mut node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    let publisher = fixture.add_publisher_key(&node).await?;
    let manifest = Fixture::manifest("billing", "1.0.0");
    let published = fixture.publish(&node, &manifest, &publisher).await?;
    assert!(published.created);
    let tenant = fixture.create_tenant(&node, "acme").await?;

    let before = registry(&node).await?.get_engine_version(get("billing", "1.0.0")).await?.into_inner();
    let status_before = node.status().await?;
    assert!(status_before.engine_version_count == 1 && status_before.tenant_count == 1);

    node.kill_9()?;
    node.restart().await?;

    let after = registry(&node).await?.get_engine_version(get("billing", "1.0.0")).await?.into_inner();
    assert_eq!(after, before, "the same manifest, signatures and revisions after restart");
    let tenant_after =
        tenants(&node).await?.get_tenant(pb::GetTenantRequest { name: "acme".into(), consistency: 0 }).await?;
    assert_eq!(tenant_after.into_inner(), tenant);
    let status_after = node.status().await?;
    // A restart may append a blank leader entry, so compare the digest: the state itself is identical.
    assert_eq!(status_after.state_digest, status_before.state_digest);
    assert!(status_after.applied_index >= status_before.applied_index);
    Ok(())
}

#[tokio::test]
async fn reads_report_who_served_them_and_at_which_revision() -> Result<()> {
    let node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    let publisher = fixture.add_publisher_key(&node).await?;
    fixture.publish(&node, &Fixture::manifest("search", "0.1.0"), &publisher).await?;

    for consistency in [pb::ReadConsistency::Linearizable, pb::ReadConsistency::Serializable] {
        let request = pb::GetEngineVersionRequest {
            engine: "search".into(),
            version: String::new(),
            consistency: consistency as i32,
        };
        let response = registry(&node).await?.get_engine_version(request).await?;
        let metadata = response.metadata();
        assert_eq!(metadata.get("keel-node-id").and_then(|v| v.to_str().ok()), Some("1"));
        assert_eq!(metadata.get("keel-region").and_then(|v| v.to_str().ok()), Some("local"));
        assert_eq!(metadata.get("keel-leader").and_then(|v| v.to_str().ok()), Some("1"));
        let revision: u64 = metadata.get("keel-revision").and_then(|v| v.to_str().ok()).unwrap_or("0").parse()?;
        assert!(revision >= response.get_ref().publish_revision);
    }
    Ok(())
}

#[tokio::test]
async fn lists_page_through_everything_once() -> Result<()> {
    let node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    for i in 0..7 {
        fixture.create_tenant(&node, &format!("tenant-{i}")).await?;
    }
    let mut client = tenants(&node).await?;
    let mut seen = Vec::new();
    let mut page_token = String::new();
    for _ in 0..10 {
        let page = client
            .list_tenants(pb::ListTenantsRequest { page_size: 3, page_token: page_token.clone(), consistency: 0 })
            .await?
            .into_inner();
        seen.extend(page.tenants.into_iter().map(|t| t.tenant_id));
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("tenant-{i}")).collect();
    assert_eq!(seen, expected);
    Ok(())
}

#[tokio::test]
async fn ops_endpoints_answer() -> Result<()> {
    let node = KeelProcess::start().await?;
    let (code, _) = crate::harness::http_get(&node.ops_addr, "/healthz").await?;
    assert_eq!(code, 200);
    let (code, body) = crate::harness::http_get(&node.ops_addr, "/diagz").await?;
    assert_eq!(code, 200);
    let diag: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(diag["node_id"], 1);
    assert_eq!(diag["role"], "leader");
    assert_eq!(diag["is_trust_bootstrapped"], true);
    assert_eq!(diag["state_digest"].as_str().map(str::len), Some(64));
    assert_eq!(diag["limits"]["IN_FLIGHT_REQUESTS_MAX"], 1024, "the node's bounds are reported");
    // Every RPC gets a request id (the caller's, when it sends a short one)
    // and lands in the per-method metrics with its code.
    let mut client = pb::cluster_service_client::ClusterServiceClient::new(node.channel().await?);
    let mut request = tonic::Request::new(pb::GetStatusRequest {});
    request.metadata_mut().insert("x-request-id", tonic::metadata::MetadataValue::from_static("probe-42"));
    let response = client.get_status(request).await?;
    assert_eq!(response.metadata().get("x-request-id").and_then(|v| v.to_str().ok()), Some("probe-42"));
    let response = client.get_status(pb::GetStatusRequest {}).await?;
    assert!(response.metadata().get("x-request-id").is_some(), "a generated request id");
    let refused = pb::GetTenantRequest { name: "nobody".into(), consistency: 0 };
    let _ = pb::tenant_service_client::TenantServiceClient::new(node.channel().await?).get_tenant(refused).await;
    let (code, body) = crate::harness::http_get(&node.ops_addr, "/metrics").await?;
    assert_eq!(code, 200);
    assert!(body.contains("keel_raft_applied_index{"), "{body}");
    assert!(
        body.lines().any(|line| line.starts_with("keel_rpc_duration_seconds_count") && line.contains("GetStatus")),
        "{body}"
    );
    assert!(
        body.lines().any(|line| line.starts_with("keel_rpc_responses_total")
            && line.contains("/keel.v1.TenantService/GetTenant")
            && line.contains("code=\"NOT_FOUND\"")),
        "{body}"
    );
    // The reads count against the read objective (a NOT_FOUND is a correct
    // answer, not a bad one), with a burn rate per window.
    let read_requests = body
        .lines()
        .find(|line| line.starts_with("keel_slo_requests_total") && line.contains("class=\"read\""))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<u64>().ok());
    assert!(read_requests.is_some_and(|n| n >= 3), "{body}");
    assert!(body.contains("keel_slo_burn_rate{") && body.contains("window=\"1h\""), "{body}");
    // Errors by their stable reason, and the snapshot builder's record.
    assert!(
        body.lines().any(|line| line.starts_with("keel_rpc_errors_total") && line.contains("TENANT_NOT_FOUND")),
        "{body}"
    );
    assert!(body.contains("keel_snapshot_builds_total{"), "{body}");
    Ok(())
}

pub fn get(engine: &str, version: &str) -> pb::GetEngineVersionRequest {
    pb::GetEngineVersionRequest { engine: engine.into(), version: version.into(), consistency: 0 }
}

pub async fn registry(
    node: &KeelProcess,
) -> Result<pb::registry_service_client::RegistryServiceClient<keel_chaos::process::AuthChannel>> {
    Ok(pb::registry_service_client::RegistryServiceClient::new(node.channel().await?))
}

pub async fn tenants(
    node: &KeelProcess,
) -> Result<pb::tenant_service_client::TenantServiceClient<keel_chaos::process::AuthChannel>> {
    Ok(pb::tenant_service_client::TenantServiceClient::new(node.channel().await?))
}
