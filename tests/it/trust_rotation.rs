//! Trust store v2 over the API, against real keeld processes: root rotation
//! (through `keelctl trust rotate-root` and raw `RotateRoot`), its refusals,
//! key validity windows, and revocation.
//!
//! Every refusal is checked the same way: the gRPC code, the stable
//! `ErrorInfo.reason`, the state digest unchanged, and the root metadata
//! still at its version.

use crate::cluster_harness::{Cluster, ClusterOptions};
use crate::fixture::{Fixture, KeyOptions, now_ms, reason_of};
use crate::harness::KeelProcess;
use crate::keelctl::{keelctl, keelctl_ok};
use anyhow::{Context, Result, bail, ensure};
use keel_chaos::process::AuthChannel as Channel;
use keel_client::key_pair::KeyPair;
use keel_client::root_metadata::{RootKeyEntry, RootMetadataDraft, rotate_root_request};
use keel_proto::v1 as pb;
use std::time::{Duration, Instant};
use tonic::Code;

/// Bound on waiting for a key to expire in real time.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two checks of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long the expiring publisher key stays valid after it is added.
const SHORT_KEY_LIFETIME_MS: u64 = 3_000;
/// An hour, for windows clearly in the past or the future.
const HOUR_MS: u64 = 3_600_000;

async fn trust(channel: Channel) -> pb::trust_service_client::TrustServiceClient<Channel> {
    pb::trust_service_client::TrustServiceClient::new(channel)
}

async fn root_of(node: &KeelProcess) -> Result<pb::RootMetadata> {
    Ok(trust(node.channel().await?).await.get_root(pb::GetRootRequest { consistency: 0 }).await?.into_inner())
}

fn role<'a>(root: &'a pb::RootMetadata, name: &str) -> Result<&'a pb::RoleKeys> {
    root.roles.iter().find(|role| role.role == name).with_context(|| format!("no {name} role in {root:?}"))
}

/// A root key entry valid forever. The window is fixed, because a root key
/// kept by a later rotation must be described exactly as stored.
fn entry(key: &KeyPair) -> RootKeyEntry {
    RootKeyEntry { public_key: key.public_key(), not_before_ms: 0, not_after_ms: None }
}

/// The next root metadata of `node`, with `roots` as its root role.
async fn next_document(node: &KeelProcess, roots: Vec<RootKeyEntry>, threshold: u32) -> Result<serde_json::Value> {
    let current = root_of(node).await?;
    Ok(RootMetadataDraft::next_from(&current).with_root_keys(roots, threshold)?.to_json()?)
}

async fn send_rotation(
    node: &KeelProcess,
    document: &serde_json::Value,
    signers: &[&KeyPair],
) -> Result<pb::RootMetadata, tonic::Status> {
    let request = rotate_root_request(document, signers).map_err(|e| tonic::Status::internal(e.to_string()))?;
    let channel = node.channel().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    Ok(trust(channel).await.rotate_root(request).await?.into_inner())
}

/// Runs `attempt`, expecting a refusal with `code` and `reason` that changes
/// neither the state digest nor the root version.
async fn assert_refused<T: std::fmt::Debug>(
    node: &KeelProcess,
    what: &str,
    code: Code,
    reason: &str,
    attempt: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<()> {
    let digest = node.status().await?.state_digest;
    let version = root_of(node).await?.version;
    let status = match attempt.await {
        Ok(value) => bail!("{what}: accepted: {value:?}"),
        Err(status) => status,
    };
    ensure!(status.code() == code, "{what}: code {:?}, expected {code:?}: {status:?}", status.code());
    ensure!(reason_of(&status) == reason, "{what}: reason {:?}, expected {reason}: {status:?}", reason_of(&status));
    ensure!(node.status().await?.state_digest == digest, "{what}: a refusal changed the state");
    ensure!(root_of(node).await?.version == version, "{what}: a refusal changed the root version");
    Ok(())
}

/// `keelctl trust rotate-root` moves the root to version 2 with a new key:
/// afterwards the old root key admits nothing, the new one does, and what
/// was published before the rotation stays readable and its publisher keeps
/// publishing.
#[tokio::test]
async fn keelctl_rotates_the_root_and_hands_signing_to_the_new_key() -> Result<()> {
    let node = KeelProcess::start().await?;
    let dir = node.scratch();
    let old_root = node.dev_root_key();
    let old_root = old_root.to_str().context("utf-8 path")?;
    let fixture = Fixture::new(&node).await?;
    let publisher = fixture.add_publisher_key(&node).await?;
    let before = fixture.publish(&node, &Fixture::manifest("billing", "1.0.0"), &publisher).await?;

    keelctl_ok(&node, &dir, &["keys", "generate", "--out", "root2"])?;
    keelctl_ok(&node, &dir, &["keys", "generate", "--out", "ops"])?;
    let dry = keelctl_ok(&node, &dir, &["trust", "rotate-root", "--root-key", "root2.pub", "--dry-run"])?;
    let document: serde_json::Value = serde_json::from_str(&dry).context("--dry-run prints the document")?;
    ensure!(document["version"] == 2, "{document}");
    ensure!(root_of(&node).await?.version == 1, "--dry-run sent nothing");

    let rotated = keelctl_ok(
        &node,
        &dir,
        &[
            "--output",
            "json",
            "trust",
            "rotate-root",
            "--root-key",
            "root2.pub",
            "--signer",
            old_root,
            "--signer",
            "root2.key",
        ],
    )?;
    let rotated: serde_json::Value = serde_json::from_str(&rotated)?;
    ensure!(rotated["version"] == 2, "{rotated}");
    let root2 = KeyPair::read_secret_file(&dir.join("root2.key"))?;
    let shown: serde_json::Value =
        serde_json::from_str(&keelctl_ok(&node, &dir, &["--output", "json", "trust", "show-root"])?)?;
    ensure!(shown["version"] == 2, "{shown}");
    let root_role = shown["roles"].as_array().and_then(|roles| roles.iter().find(|r| r["role"] == "root"));
    ensure!(
        root_role.is_some_and(|r| r["key_ids"] == serde_json::json!([root2.key_id()]) && r["threshold"] == 1),
        "{shown}"
    );
    let publisher_role =
        shown["roles"].as_array().and_then(|roles| roles.iter().find(|r| r["role"] == "engine-publisher"));
    ensure!(
        publisher_role.is_some_and(|r| r["key_ids"] == serde_json::json!([publisher.key_id()])),
        "the rotation keeps the publisher role: {shown}"
    );

    // The old root key no longer admits keys: a refusal, nothing changed.
    let digest = node.status().await?.state_digest;
    let output = keelctl(
        &node,
        &dir,
        &["trust", "add-key", "--public", "ops.pub", "--purpose", "api-token", "--signer", old_root],
    )?;
    ensure!(output.status.code() == Some(1), "old root add-key: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(stderr.contains("KEY_PURPOSE_MISMATCH"), "stderr: {stderr}");
    ensure!(node.status().await?.state_digest == digest, "a refused add-key changed the state");
    // The new one does.
    keelctl_ok(
        &node,
        &dir,
        &["trust", "add-key", "--public", "ops.pub", "--purpose", "api-token", "--signer", "root2.key"],
    )?;
    let keys = keelctl_ok(&node, &dir, &["--output", "json", "trust", "list"])?;
    let keys: serde_json::Value = serde_json::from_str(&keys)?;
    ensure!(keys.as_array().map(Vec::len) == Some(5), "old root, new root, publisher, ops, dev api: {keys}");

    // Signed before the rotation: still readable, byte for byte; its publisher still publishes.
    let mut registry = crate::single_node::registry(&node).await?;
    let stored = registry.get_engine_version(crate::single_node::get("billing", "1.0.0")).await?.into_inner();
    let before = before.engine_version.context("published version")?;
    ensure!(stored.manifest == before.manifest && stored.signatures == before.signatures);
    fixture.publish(&node, &Fixture::manifest("billing", "1.0.1"), &publisher).await?;

    // Version 3: a 2-of-2 root keeping root2 (its stored window is reused),
    // reviewed as a --dry-run document and sent with --metadata.
    keelctl_ok(&node, &dir, &["keys", "generate", "--out", "root3"])?;
    let args = ["trust", "rotate-root", "--root-key", "root2.pub", "--root-key", "root3.pub", "--root-threshold", "2"];
    let document = keelctl_ok(&node, &dir, &[&args[..], &["--dry-run"]].concat())?;
    std::fs::write(dir.join("root-v3.json"), &document)?;
    let signers = ["--signer", "root2.key", "--signer", "root3.key"];
    keelctl_ok(&node, &dir, &[&["trust", "rotate-root", "--metadata", "root-v3.json"][..], &signers].concat())?;
    let root = root_of(&node).await?;
    ensure!(root.version == 3 && role(&root, "root")?.threshold == 2, "{root:?}");
    keelctl_ok(&node, &dir, &["keys", "generate", "--out", "ops2"])?;
    let add = ["trust", "add-key", "--public", "ops2.pub", "--purpose", "api-token"];
    let output = keelctl(&node, &dir, &[&add[..], &["--signer", "root2.key"]].concat())?;
    ensure!(output.status.code() == Some(1), "one of two root signatures: {output:?}");
    ensure!(String::from_utf8_lossy(&output.stderr).contains("SIGNATURE_THRESHOLD_NOT_MET"), "{output:?}");
    keelctl_ok(&node, &dir, &[&add[..], &signers].concat())?;
    Ok(())
}

/// Each malformed rotation is refused with its reason and changes nothing:
/// a skipped version, a missing current or new root signature, a signature
/// by a key of the wrong role, too few of a 2-of-2 root, and new root keys
/// that are expired or not yet valid.
#[tokio::test]
async fn bad_rotations_are_refused_and_change_nothing() -> Result<()> {
    let node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    let root = KeyPair::read_secret_file(&node.dev_root_key())?;
    let publisher = fixture.add_publisher_key(&node).await?;
    let (root2, root3) = (KeyPair::generate(), KeyPair::generate());

    let mut skipped = next_document(&node, vec![entry(&root2)], 1).await?;
    skipped["version"] = 3.into();
    let rotate = |document: serde_json::Value, signers: Vec<KeyPair>| {
        let node = &node;
        async move { send_rotation(node, &document, &signers.iter().collect::<Vec<_>>()).await }
    };
    let failed = Code::FailedPrecondition;
    let denied = Code::PermissionDenied;

    assert_refused(
        &node,
        "skipped version",
        failed,
        "ROOT_VERSION_INVALID",
        rotate(skipped, vec![root.clone(), root2.clone()]),
    )
    .await?;
    let to_root2 = next_document(&node, vec![entry(&root2)], 1).await?;
    assert_refused(
        &node,
        "no current root signature",
        denied,
        "SIGNATURE_THRESHOLD_NOT_MET",
        rotate(to_root2.clone(), vec![root2.clone()]),
    )
    .await?;
    assert_refused(
        &node,
        "no new root signature",
        denied,
        "SIGNATURE_THRESHOLD_NOT_MET",
        rotate(to_root2.clone(), vec![root.clone()]),
    )
    .await?;
    assert_refused(
        &node,
        "a publisher key instead of the current root",
        denied,
        "SIGNATURE_THRESHOLD_NOT_MET",
        rotate(to_root2, vec![publisher.clone(), root2.clone()]),
    )
    .await?;
    let mut expired = entry(&root2);
    expired.not_before_ms = now_ms() - HOUR_MS;
    expired.not_after_ms = Some(now_ms() - HOUR_MS / 2);
    let to_expired = next_document(&node, vec![expired], 1).await?;
    assert_refused(
        &node,
        "an expired new root key",
        denied,
        "SIGNATURE_THRESHOLD_NOT_MET",
        rotate(to_expired, vec![root.clone(), root2.clone()]),
    )
    .await?;
    let mut not_yet = entry(&root2);
    not_yet.not_before_ms = now_ms() + HOUR_MS;
    let to_not_yet = next_document(&node, vec![not_yet], 1).await?;
    assert_refused(
        &node,
        "a new root key not yet valid",
        denied,
        "SIGNATURE_THRESHOLD_NOT_MET",
        rotate(to_not_yet, vec![root.clone(), root2.clone()]),
    )
    .await?;

    // A 2-of-2 root: version 2 needs both old (1-of-1) and both new signatures.
    let two_of_two = next_document(&node, vec![entry(&root2), entry(&root3)], 2).await?;
    assert_refused(
        &node,
        "one of a 2-of-2 new root",
        denied,
        "SIGNATURE_THRESHOLD_NOT_MET",
        rotate(two_of_two.clone(), vec![root.clone(), root2.clone()]),
    )
    .await?;
    let rotated = send_rotation(&node, &two_of_two, &[&root, &root2, &root3]).await?;
    ensure!(rotated.version == 2 && role(&rotated, "root")?.threshold == 2, "{rotated:?}");
    // Version 3 signed by one of the two current roots falls short.
    let to_root3 = next_document(&node, vec![entry(&root3)], 1).await?;
    assert_refused(
        &node,
        "one of a 2-of-2 root",
        denied,
        "SIGNATURE_THRESHOLD_NOT_MET",
        rotate(to_root3, vec![root3.clone()]),
    )
    .await?;
    // The replaced root key signs nothing any more.
    assert_refused(
        &node,
        "a key added by the rotated-out root",
        denied,
        "KEY_PURPOSE_MISMATCH",
        fixture.add_key(&node, &KeyPair::generate(), KeyOptions::publisher(), Some(&root)),
    )
    .await?;
    // Adding a key now takes two root signatures.
    let key = KeyPair::generate();
    let options = KeyOptions {
        purposes: vec![pb::KeyPurpose::ApiToken],
        not_before_ms: Some(now_ms() - HOUR_MS),
        not_after_ms: None,
    };
    assert_refused(
        &node,
        "one of two root signatures on add-key",
        denied,
        "SIGNATURE_THRESHOLD_NOT_MET",
        fixture.add_key(&node, &key, options.clone(), Some(&root2)),
    )
    .await?;
    let signatures: Vec<pb::Signature> =
        [&root2, &root3].into_iter().map(|signer| sign_key(&key, &options, signer)).collect::<Result<_>>()?;
    let added = fixture.add_key_raw(&node, &key, options, signatures).await?;
    ensure!(added.created);
    Ok(())
}

/// The signature of `signer` admitting `key` as `options` describe, with the
/// not-before time the fixture's `add_key_raw` uses.
fn sign_key(key: &KeyPair, options: &KeyOptions, signer: &KeyPair) -> Result<pb::Signature> {
    let not_before_ms = options.not_before_ms.context("sign_key needs an explicit not_before_ms")?;
    let payload =
        keel_client::signing::key_payload(&key.public_key(), &options.purposes, not_before_ms, options.not_after_ms)?;
    Ok(signer.sign_to_proto(&payload))
}

/// Publisher keys outside their window sign nothing; a manifest signed while
/// its key was valid stays published and readable after the key expires.
#[tokio::test]
async fn key_windows_are_judged_at_the_leaders_time_and_old_signatures_stay_valid() -> Result<()> {
    let node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    let now = now_ms();
    let window = |not_before_ms: u64, not_after_ms: Option<u64>| KeyOptions {
        purposes: vec![pb::KeyPurpose::EnginePublisher],
        not_before_ms: Some(not_before_ms),
        not_after_ms,
    };

    let expired = KeyPair::generate();
    fixture.add_key(&node, &expired, window(now - 2 * HOUR_MS, Some(now - HOUR_MS)), None).await?;
    assert_refused(
        &node,
        "an expired publisher",
        Code::PermissionDenied,
        "KEY_EXPIRED",
        fixture.publish_value(&node, &Fixture::manifest("billing", "1.0.0"), &[&expired]),
    )
    .await?;
    let not_yet = KeyPair::generate();
    fixture.add_key(&node, &not_yet, window(now + HOUR_MS, None), None).await?;
    assert_refused(
        &node,
        "a publisher not yet valid",
        Code::PermissionDenied,
        "KEY_NOT_YET_VALID",
        fixture.publish_value(&node, &Fixture::manifest("billing", "1.0.0"), &[&not_yet]),
    )
    .await?;

    // A key valid for a few seconds publishes once; republishing the same
    // manifest is an idempotent success until the key expires, then refused.
    let short = KeyPair::generate();
    let added_at = now_ms();
    fixture.add_key(&node, &short, window(added_at - HOUR_MS, Some(added_at + SHORT_KEY_LIFETIME_MS)), None).await?;
    let manifest = Fixture::manifest("billing", "2.0.0");
    let published = fixture.publish(&node, &manifest, &short).await?.engine_version.context("version")?;
    let deadline = Instant::now() + EXPIRY_DEADLINE;
    loop {
        match fixture.publish_value(&node, &manifest, &[&short]).await {
            Ok(again) => ensure!(!again.created, "republishing created a version: {again:?}"),
            Err(status) if reason_of(&status) == "KEY_EXPIRED" => break,
            Err(status) => bail!("republishing failed unexpectedly: {status:?}"),
        }
        ensure!(Instant::now() < deadline, "the key did not expire within {EXPIRY_DEADLINE:?}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let mut registry = crate::single_node::registry(&node).await?;
    let stored = registry.get_engine_version(crate::single_node::get("billing", "2.0.0")).await?.into_inner();
    ensure!(stored.manifest == published.manifest && stored.signatures == published.signatures);
    ensure!(stored.signatures.iter().any(|s| s.key_id == short.key_id()));
    Ok(())
}

/// A revoked publisher key signs nothing more, without touching what it
/// signed before; `GetRoot` shows the bootstrap metadata and `GetKey` the
/// revocation revision.
#[tokio::test]
async fn a_revoked_publisher_key_signs_nothing_more() -> Result<()> {
    let node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    let root = KeyPair::read_secret_file(&node.dev_root_key()).context("reading the dev root key")?;
    let publisher = fixture.add_publisher_key(&node).await?;
    fixture.publish(&node, &Fixture::manifest("billing", "1.0.0"), &publisher).await?;

    let mut trust = trust(node.channel().await?).await;
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

    assert_refused(
        &node,
        "a revoked publisher",
        Code::PermissionDenied,
        "KEY_REVOKED",
        fixture.publish_value(&node, &Fixture::manifest("billing", "1.0.1"), &[&publisher]),
    )
    .await?;
    let mut registry = crate::single_node::registry(&node).await?;
    registry.get_engine_version(crate::single_node::get("billing", "1.0.0")).await?;

    let root_metadata = trust.get_root(pb::GetRootRequest { consistency: 0 }).await?.into_inner();
    assert_eq!(root_metadata.version, 1);
    let root_role = role(&root_metadata, "root")?;
    assert_eq!(root_role.key_ids, vec![fixture.root_key_id()]);
    assert_eq!(root_role.threshold, 1);

    let key = trust.get_key(pb::GetKeyRequest { name: key_id, consistency: 0 }).await?.into_inner();
    assert_eq!(key.revoked_revision, revoked.revoked_revision);
    Ok(())
}

/// A rotation sent to a follower of a 3-node cluster reaches every member:
/// each serves version 2 from its own state, at the same digest, and a
/// revocation signed by the new root is effective on every member.
#[tokio::test]
async fn a_rotation_and_a_revocation_reach_every_member() -> Result<()> {
    let cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let follower = &cluster.nodes[(leader + 1) % 3];
    let root2 = KeyPair::generate();
    let document = next_document(follower, vec![entry(&root2)], 1).await?;
    let rotated = send_rotation(follower, &document, &[&cluster.root, &root2]).await?;
    ensure!(rotated.version == 2, "{rotated:?}");

    let fixture = Fixture::with_root(root2.clone());
    let publisher = fixture.add_publisher_key(follower).await?;
    let payload = keel_client::signing::revoke_payload(&publisher.key_id())?;
    let request = pb::RevokeKeyRequest {
        key_id: publisher.key_id(),
        signatures: vec![root2.sign_to_proto(&payload)],
        idempotency_key: String::new(),
    };
    let revoked = trust(follower.channel().await?).await.revoke_key(request).await?.into_inner();
    cluster.converged().await?;
    for node in &cluster.nodes {
        let mut client = trust(node.channel().await?).await;
        let serializable = pb::ReadConsistency::Serializable as i32;
        let root = client.get_root(pb::GetRootRequest { consistency: serializable }).await?.into_inner();
        ensure!(root.version == 2 && role(&root, "root")?.key_ids == [root2.key_id()], "{root:?}");
        let key = client.get_key(pb::GetKeyRequest { name: publisher.key_id(), consistency: serializable }).await?;
        ensure!(key.into_inner().revoked_revision == revoked.revoked_revision);
        assert_refused(
            node,
            "a publisher revoked on another member",
            Code::PermissionDenied,
            "KEY_REVOKED",
            fixture.publish_value(node, &Fixture::manifest("billing", "1.0.0"), &[&publisher]),
        )
        .await?;
    }
    Ok(())
}
