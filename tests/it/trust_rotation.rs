//! Trust store v2 over the API: revoking a publisher key with the dev root
//! key stops it signing, without touching what it signed before; `GetRoot`
//! shows the bootstrap metadata and `GetKey` the revocation revision.

use crate::fixture::{Fixture, reason_of};
use crate::harness::KeelProcess;
use anyhow::{Context, Result};
use keel_client::key_pair::KeyPair;
use keel_proto::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn a_revoked_publisher_key_signs_nothing_more() -> Result<()> {
    let node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    let root = KeyPair::read_secret_file(&node.dev_root_key()).context("reading the dev root key")?;
    let publisher = fixture.add_publisher_key(&node).await?;
    fixture.publish(&node, &Fixture::manifest("billing", "1.0.0"), &publisher).await?;

    let mut trust = pb::trust_service_client::TrustServiceClient::new(node.channel().await?);
    let key_id = publisher.key_id();
    let payload = keel_client::signing::revoke_payload(&key_id)?;
    let revoked = trust
        .revoke_key(pb::RevokeKeyRequest {
            key_id: key_id.clone(),
            signatures: vec![root.sign_to_proto(&payload)],
            idempotency_key: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(revoked.key_id, key_id);
    assert!(revoked.revoked_revision > 0, "{revoked:?}");

    let digest = node.status().await?.state_digest;
    let result = fixture.publish_value(&node, &Fixture::manifest("billing", "1.0.1"), &[&publisher]).await;
    let status = match result {
        Ok(value) => anyhow::bail!("publishing with a revoked key succeeded: {value:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(reason_of(&status), "KEY_REVOKED", "{status:?}");
    assert_eq!(node.status().await?.state_digest, digest, "a refused publish changed the state");

    let root_metadata = trust.get_root(pb::GetRootRequest { consistency: 0 }).await?.into_inner();
    assert_eq!(root_metadata.version, 1);
    let root_role = root_metadata.roles.iter().find(|role| role.role == "root").context("no root role")?;
    assert_eq!(root_role.key_ids, vec![fixture.root_key_id()]);
    assert_eq!(root_role.threshold, 1);

    let key = trust.get_key(pb::GetKeyRequest { name: key_id, consistency: 0 }).await?.into_inner();
    assert_eq!(key.revoked_revision, revoked.revoked_revision);
    assert!(key.revoked_revision > 0);
    Ok(())
}
