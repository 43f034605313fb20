//! Test fixtures: keys, manifests and tenants, built and signed with the
//! public client library (`keel-client`), so every test also checks that the
//! client's signing payloads match what the server verifies.

use crate::harness::KeelProcess;
use anyhow::{Context, Result};
use keel_chaos::process::AuthChannel as Channel;
use keel_client::KeyPair;
use keel_proto::v1 as pb;
use tonic_types::StatusExt;

/// Current wall clock, Unix ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The `ErrorInfo.reason` of a status, or "" when there is none.
pub fn reason_of(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}

/// How to describe a key being added.
#[derive(Debug, Clone, Default)]
pub struct KeyOptions {
    /// Purposes of the key.
    pub purposes: Vec<pb::KeyPurpose>,
    /// Default: one minute ago.
    pub not_before_ms: Option<u64>,
    /// Default: no expiry.
    pub not_after_ms: Option<u64>,
}

impl KeyOptions {
    /// An engine-publisher key valid from a minute ago.
    pub fn publisher() -> KeyOptions {
        KeyOptions::purpose(pb::KeyPurpose::EnginePublisher)
    }

    /// A key with one purpose.
    pub fn purpose(purpose: pb::KeyPurpose) -> KeyOptions {
        KeyOptions { purposes: vec![purpose], ..KeyOptions::default() }
    }
}

/// A node's root key and request helpers.
pub struct Fixture {
    root: KeyPair,
}

impl Fixture {
    /// Loads the dev root key keeld generated.
    pub async fn new(node: &KeelProcess) -> Result<Fixture> {
        let root = KeyPair::read_secret_file(&node.dev_root_key()).context("reading the dev root key")?;
        Ok(Fixture { root })
    }

    /// A fixture signing with `root`.
    pub fn with_root(root: KeyPair) -> Fixture {
        Fixture { root }
    }

    /// The root key's id.
    pub fn root_key_id(&self) -> String {
        self.root.key_id()
    }

    /// A fresh random key pair.
    pub fn generate_key() -> KeyPair {
        KeyPair::generate()
    }

    async fn trust(node: &KeelProcess) -> Result<pb::trust_service_client::TrustServiceClient<Channel>> {
        Ok(pb::trust_service_client::TrustServiceClient::new(node.channel().await?))
    }

    /// The wire spec and its signing payload. Built from the client's payload
    /// function rather than `KeySpec::new`, which refuses inverted windows
    /// locally: these tests need the server to see them.
    fn spec(key: &KeyPair, options: &KeyOptions) -> Result<(pb::KeySpec, Vec<u8>)> {
        let not_before_ms = options.not_before_ms.unwrap_or_else(|| now_ms().saturating_sub(60_000));
        let payload = keel_client::signing::key_payload(
            &key.public_key(),
            &options.purposes,
            not_before_ms,
            options.not_after_ms,
        )?;
        let spec = pb::KeySpec {
            public_key: key.public_key().to_vec(),
            purposes: options.purposes.iter().map(|p| *p as i32).collect(),
            not_before: Some(keel_client::key_spec::timestamp_from_ms(not_before_ms)),
            not_after: options.not_after_ms.map(keel_client::key_spec::timestamp_from_ms),
        };
        Ok((spec, payload))
    }

    /// Adds `key`, signed by `signer` (default: the root key).
    pub async fn add_key(
        &self,
        node: &KeelProcess,
        key: &KeyPair,
        options: KeyOptions,
        signer: Option<&KeyPair>,
    ) -> Result<pb::AddKeyResponse, tonic::Status> {
        let (spec, payload) = Self::spec(key, &options).map_err(|e| tonic::Status::internal(e.to_string()))?;
        let signature = signer.unwrap_or(&self.root).sign_to_proto(&payload);
        self.send_add_key(node, spec, vec![signature]).await
    }

    /// Adds `key` with the given signatures as they are.
    pub async fn add_key_raw(
        &self,
        node: &KeelProcess,
        key: &KeyPair,
        options: KeyOptions,
        signatures: Vec<pb::Signature>,
    ) -> Result<pb::AddKeyResponse, tonic::Status> {
        let (spec, _) = Self::spec(key, &options).map_err(|e| tonic::Status::internal(e.to_string()))?;
        self.send_add_key(node, spec, signatures).await
    }

    async fn send_add_key(
        &self,
        node: &KeelProcess,
        spec: pb::KeySpec,
        signatures: Vec<pb::Signature>,
    ) -> Result<pb::AddKeyResponse, tonic::Status> {
        let mut client = Self::trust(node).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Ok(client
            .add_key(pb::AddKeyRequest { spec: Some(spec), signatures, idempotency_key: String::new() })
            .await?
            .into_inner())
    }

    /// Generates a publisher key and admits it with the root key.
    pub async fn add_publisher_key(&self, node: &KeelProcess) -> Result<KeyPair> {
        let key = Self::generate_key();
        let added = self.add_key(node, &key, KeyOptions::publisher(), None).await?;
        anyhow::ensure!(added.created, "publisher key was not created");
        Ok(key)
    }

    /// A small valid manifest.
    pub fn manifest(name: &str, version: &str) -> serde_json::Value {
        serde_json::json!({
            "name": name,
            "version": version,
            "tier": "standard",
            "description": format!("{name} engine"),
            "actions": [{"name": "run", "input_schema": {"type": "object"}}],
            "data_classes": ["confidential"],
        })
    }

    /// Signs manifest bytes as a publisher would.
    pub fn sign_manifest(bytes: &[u8], key: &KeyPair) -> Result<pb::Signature> {
        let value: serde_json::Value = serde_json::from_slice(bytes)?;
        let canonical = keel_client::signing::manifest_canonical("manifest", &value)?;
        Ok(key.sign_to_proto(&keel_client::signing::manifest_payload(&canonical)))
    }

    /// Publishes a manifest signed by `key`, expecting success.
    pub async fn publish(
        &self,
        node: &KeelProcess,
        manifest: &serde_json::Value,
        key: &KeyPair,
    ) -> Result<pb::PublishEngineVersionResponse> {
        Ok(self.publish_value(node, manifest, &[key]).await?)
    }

    /// Publishes a JSON manifest signed by `keys`.
    pub async fn publish_value(
        &self,
        node: &KeelProcess,
        manifest: &serde_json::Value,
        keys: &[&KeyPair],
    ) -> Result<pb::PublishEngineVersionResponse, tonic::Status> {
        let bytes = serde_json::to_vec(manifest).map_err(|e| tonic::Status::internal(e.to_string()))?;
        self.publish_bytes(node, &bytes, keys).await
    }

    /// Publishes raw bytes; signs them when they parse as JSON (else signs nothing valid).
    pub async fn publish_bytes(
        &self,
        node: &KeelProcess,
        bytes: &[u8],
        keys: &[&KeyPair],
    ) -> Result<pb::PublishEngineVersionResponse, tonic::Status> {
        let signatures = keys
            .iter()
            .map(|key| match Self::sign_manifest(bytes, key) {
                Ok(signature) => signature,
                Err(_) => key.sign_to_proto(bytes),
            })
            .collect();
        self.publish_raw(node, bytes.to_vec(), signatures).await
    }

    /// Sends a publish request as given.
    pub async fn publish_raw(
        &self,
        node: &KeelProcess,
        manifest: Vec<u8>,
        signatures: Vec<pb::Signature>,
    ) -> Result<pb::PublishEngineVersionResponse, tonic::Status> {
        let mut client =
            crate::single_node::registry(node).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Ok(client
            .publish_engine_version(pb::PublishEngineVersionRequest {
                manifest,
                signatures,
                idempotency_key: String::new(),
            })
            .await?
            .into_inner())
    }

    /// A valid CreateTenant request.
    pub fn tenant_request(tenant_id: &str) -> pb::CreateTenantRequest {
        pb::CreateTenantRequest {
            tenant: Some(pb::Tenant {
                tenant_id: tenant_id.into(),
                display_name: format!("Tenant {tenant_id}"),
                tier: pb::TenantTier::Enterprise as i32,
                home_region: "eu-west".into(),
                status: pb::TenantStatus::Active as i32,
                enabled_engines: vec!["billing".into()],
                ..Default::default()
            }),
            idempotency_key: String::new(),
        }
    }

    /// Creates a tenant, expecting success.
    pub async fn create_tenant(&self, node: &KeelProcess, tenant_id: &str) -> Result<pb::Tenant> {
        let mut client = crate::single_node::tenants(node).await?;
        Ok(client.create_tenant(Self::tenant_request(tenant_id)).await?.into_inner())
    }
}

/// Asserts `result` failed with `code`/`reason` and the digest did not move.
pub async fn assert_refused<T: std::fmt::Debug>(
    node: &KeelProcess,
    digest_before: &str,
    what: &str,
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    reason: &str,
) -> Result<()> {
    let status = match result {
        Ok(value) => anyhow::bail!("{what}: expected {reason}, got success {value:?}"),
        Err(status) => status,
    };
    anyhow::ensure!(status.code() == code, "{what}: {status:?}");
    anyhow::ensure!(reason_of(&status) == reason, "{what}: {status:?}");
    anyhow::ensure!(node.status().await?.state_digest == digest_before, "{what}: the state changed");
    Ok(())
}
