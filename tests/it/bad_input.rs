//! Bad input against a real keeld: each request gets a clear status and a
//! stable reason, and changes nothing (the state digest before and after is
//! equal).

use crate::fixture::assert_refused;
use crate::fixture::{Fixture, KeyOptions, reason_of};
use crate::harness::KeelProcess;
use crate::single_node::{get, registry};
use anyhow::Result;
use keel_proto::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn bad_publishes_are_refused_and_change_nothing() -> Result<()> {
    let node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    let publisher = fixture.add_publisher_key(&node).await?;
    fixture.publish(&node, &Fixture::manifest("billing", "1.0.0"), &publisher).await?;
    let digest = node.status().await?.state_digest;

    // Oversized manifest.
    let mut big = Fixture::manifest("big", "1.0.0");
    big["description"] = serde_json::Value::String("x".repeat(300 * 1024));
    let result = fixture.publish_value(&node, &big, &[&publisher]).await;
    assert_refused(&node, &digest, "oversized manifest", result, Code::InvalidArgument, "LIMIT_EXCEEDED").await?;

    // Oversized name and description.
    let long_name = Fixture::manifest(&"n".repeat(300), "1.0.0");
    let result = fixture.publish_value(&node, &long_name, &[&publisher]).await;
    assert_refused(&node, &digest, "oversized name", result, Code::InvalidArgument, "LIMIT_EXCEEDED").await?;
    let mut long_description = Fixture::manifest("described", "1.0.0");
    long_description["description"] = serde_json::Value::String("d".repeat(5000));
    let result = fixture.publish_value(&node, &long_description, &[&publisher]).await;
    assert_refused(&node, &digest, "oversized description", result, Code::InvalidArgument, "LIMIT_EXCEEDED").await?;

    // Malformed manifest and missing fields.
    let result = fixture.publish_bytes(&node, b"{not json", &[&publisher]).await;
    assert_refused(&node, &digest, "malformed manifest", result, Code::InvalidArgument, "MANIFEST_MALFORMED").await?;
    let result = fixture
        .publish_value(&node, &serde_json::json!({"name": "noversion", "tier": "standard"}), &[&publisher])
        .await;
    let status = result.as_ref().err().cloned();
    assert!(
        matches!(status.as_ref().map(reason_of).as_deref(), Some("FIELD_REQUIRED" | "MANIFEST_MALFORMED")),
        "missing version: {status:?}"
    );
    assert_eq!(node.status().await?.state_digest, digest);
    let result = fixture.publish_bytes(&node, b"", &[&publisher]).await;
    assert_refused(&node, &digest, "empty manifest", result, Code::InvalidArgument, "FIELD_REQUIRED").await?;
    let manifest = serde_json::to_vec(&Fixture::manifest("unsigned", "1.0.0"))?;
    let result = fixture.publish_raw(&node, manifest, Vec::new()).await;
    assert_refused(&node, &digest, "no signatures", result, Code::InvalidArgument, "FIELD_REQUIRED").await?;

    // Invalid semver.
    let result = fixture.publish_value(&node, &Fixture::manifest("semver", "1.0"), &[&publisher]).await;
    assert_refused(&node, &digest, "invalid semver", result, Code::InvalidArgument, "VERSION_INVALID").await?;

    // Unknown signing key.
    let stranger = Fixture::generate_key();
    let result = fixture.publish_value(&node, &Fixture::manifest("stranger", "1.0.0"), &[&stranger]).await;
    assert_refused(&node, &digest, "unknown key", result, Code::PermissionDenied, "KEY_UNKNOWN").await?;

    // Tampered bytes: signed one manifest, sent another.
    let signed = serde_json::to_vec(&Fixture::manifest("tampered", "1.0.0"))?;
    let sent = serde_json::to_vec(&Fixture::manifest("tampered", "1.0.1"))?;
    let signature = Fixture::sign_manifest(&signed, &publisher)?;
    let result = fixture.publish_raw(&node, sent, vec![signature]).await;
    assert_refused(&node, &digest, "tampered manifest", result, Code::PermissionDenied, "SIGNATURE_INVALID").await?;

    // A different manifest for an already published version.
    let mut changed = Fixture::manifest("billing", "1.0.0");
    changed["description"] = serde_json::Value::String("changed".into());
    let result = fixture.publish_value(&node, &changed, &[&publisher]).await;
    assert_refused(&node, &digest, "republish different", result, Code::AlreadyExists, "VERSION_ALREADY_PUBLISHED")
        .await?;

    // The identical manifest again is idempotent: success, created = false, nothing changes.
    let again = fixture.publish(&node, &Fixture::manifest("billing", "1.0.0"), &publisher).await?;
    assert!(!again.created);
    assert_eq!(node.status().await?.state_digest, digest);

    // The store is still intact and serving.
    registry(&node).await?.get_engine_version(get("billing", "1.0.0")).await?;
    Ok(())
}

#[tokio::test]
async fn bad_keys_are_refused_and_change_nothing() -> Result<()> {
    let node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    let now_ms = crate::fixture::now_ms();
    const HOUR_MS: u64 = 3_600_000;

    // Keys that exist but cannot publish: api-token purpose, expired, not yet valid.
    let token_key = Fixture::generate_key();
    fixture.add_key(&node, &token_key, KeyOptions::purpose(pb::KeyPurpose::ApiToken), None).await?;
    let expired = Fixture::generate_key();
    let options = KeyOptions {
        not_before_ms: Some(now_ms - 2 * HOUR_MS),
        not_after_ms: Some(now_ms - HOUR_MS),
        ..KeyOptions::publisher()
    };
    fixture.add_key(&node, &expired, options, None).await?;
    let future = Fixture::generate_key();
    let options = KeyOptions { not_before_ms: Some(now_ms + HOUR_MS), ..KeyOptions::publisher() };
    fixture.add_key(&node, &future, options, None).await?;
    let digest = node.status().await?.state_digest;

    let manifest = Fixture::manifest("gated", "1.0.0");
    let result = fixture.publish_value(&node, &manifest, &[&token_key]).await;
    assert_refused(&node, &digest, "api-token key", result, Code::PermissionDenied, "KEY_PURPOSE_MISMATCH").await?;
    let result = fixture.publish_value(&node, &manifest, &[&expired]).await;
    assert_refused(&node, &digest, "expired key", result, Code::PermissionDenied, "KEY_EXPIRED").await?;
    let result = fixture.publish_value(&node, &manifest, &[&future]).await;
    assert_refused(&node, &digest, "not-yet-valid key", result, Code::PermissionDenied, "KEY_NOT_YET_VALID").await?;

    // Adding a publisher key without a valid root signature.
    let candidate = Fixture::generate_key();
    let signed_by_self = fixture.add_key(&node, &candidate, KeyOptions::publisher(), Some(&candidate)).await;
    assert_refused(&node, &digest, "self-signed key", signed_by_self, Code::PermissionDenied, "KEY_UNKNOWN").await?;
    let signed_by_publisher = fixture.add_key(&node, &candidate, KeyOptions::publisher(), Some(&token_key)).await;
    assert_refused(
        &node,
        &digest,
        "non-root signer",
        signed_by_publisher,
        Code::PermissionDenied,
        "KEY_PURPOSE_MISMATCH",
    )
    .await?;
    let unsigned = fixture.add_key_raw(&node, &candidate, KeyOptions::publisher(), Vec::new()).await;
    assert_refused(&node, &digest, "unsigned key", unsigned, Code::PermissionDenied, "SIGNATURE_THRESHOLD_NOT_MET")
        .await?;
    let forged = vec![pb::Signature { key_id: fixture.root_key_id(), signature: vec![7; 64] }];
    let forged = fixture.add_key_raw(&node, &candidate, KeyOptions::publisher(), forged).await;
    assert_refused(&node, &digest, "forged root signature", forged, Code::PermissionDenied, "SIGNATURE_INVALID")
        .await?;
    let inverted =
        KeyOptions { not_before_ms: Some(now_ms), not_after_ms: Some(now_ms - 1), ..KeyOptions::publisher() };
    let inverted = fixture.add_key(&node, &candidate, inverted, None).await;
    assert_refused(&node, &digest, "inverted window", inverted, Code::InvalidArgument, "KEY_VALIDITY_INVALID").await?;
    Ok(())
}

#[tokio::test]
async fn bad_tenants_are_refused_and_change_nothing() -> Result<()> {
    let node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    fixture.create_tenant(&node, "acme").await?;
    let digest = node.status().await?.state_digest;
    let mut client = crate::single_node::tenants(&node).await?;

    let duplicate = client.create_tenant(Fixture::tenant_request("acme")).await;
    assert_refused(&node, &digest, "duplicate tenant", duplicate, Code::AlreadyExists, "TENANT_ALREADY_EXISTS").await?;
    let mut bad_id = Fixture::tenant_request("Not Valid");
    let result = client.create_tenant(bad_id.clone()).await;
    assert_refused(&node, &digest, "bad tenant id", result, Code::InvalidArgument, "FIELD_INVALID").await?;
    if let Some(tenant) = bad_id.tenant.as_mut() {
        tenant.tenant_id = "ok".into();
        tenant.tier = 0;
    }
    let result = client.create_tenant(bad_id).await;
    assert_refused(&node, &digest, "missing tier", result, Code::InvalidArgument, "FIELD_REQUIRED").await?;
    let update = pb::UpdateTenantRequest {
        tenant: Fixture::tenant_request("acme").tenant,
        etag: "r1".into(),
        idempotency_key: String::new(),
    };
    let result = client.update_tenant(update).await;
    assert_refused(&node, &digest, "stale etag", result, Code::FailedPrecondition, "ETAG_MISMATCH").await?;
    let update = pb::UpdateTenantRequest {
        tenant: Fixture::tenant_request("ghost").tenant,
        etag: String::new(),
        idempotency_key: String::new(),
    };
    let result = client.update_tenant(update).await;
    assert_refused(&node, &digest, "missing tenant", result, Code::NotFound, "TENANT_NOT_FOUND").await?;
    let result = client.get_tenant(pb::GetTenantRequest { name: "ghost".into(), consistency: 0 }).await;
    assert_refused(&node, &digest, "get missing tenant", result, Code::NotFound, "TENANT_NOT_FOUND").await?;
    let result = client
        .list_tenants(pb::ListTenantsRequest { page_size: 5, page_token: "garbage".into(), consistency: 0 })
        .await;
    assert_refused(&node, &digest, "bad page token", result, Code::InvalidArgument, "PAGE_TOKEN_INVALID").await?;
    Ok(())
}

#[tokio::test]
async fn garbage_bytes_on_the_grpc_port_change_nothing() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = KeelProcess::start().await?;
    let digest = node.status().await?.state_digest;
    let addr = node.endpoint.trim_start_matches("http://").to_owned();
    let payloads: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x01\x02\x03garbage\xff\xfe",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x08\x00\x00\x00\x00\x00\xff\xff\xff\xff",
        &[0xAB; 70_000],
    ];
    for payload in payloads {
        let mut stream = tokio::net::TcpStream::connect(&addr).await?;
        let _ = stream.write_all(payload).await;
        let mut sink = vec![0u8; 4096];
        // The server answers or closes; either way it must not hang or die.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut sink)).await;
    }
    let status = node.status().await?;
    assert_eq!(status.state_digest, digest);
    Ok(())
}
