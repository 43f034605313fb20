//! The one place protobuf meets the kernel.
//!
//! `pb::X → kernel` conversions validate shape and return a [`Rejection`]
//! naming the field; `kernel → pb::X` conversions build responses. No other
//! module looks inside generated types' fields for validation.

use keel_kernel::limits::{Limit, NAME_BYTES_MAX};
use keel_kernel::manifest::Tier;
use keel_kernel::policy::{self, EvaluationContext, PolicyDecision, PolicyTestCase, StoredPolicy};
use keel_kernel::registry::EngineVersion;
use keel_kernel::signing::Signature;
use keel_kernel::tenant::{Tenant, TenantSpec, TenantStatus, TenantTier};
use keel_kernel::trust_store::{KeyPurpose, KeySpec, RootMetadata, TrustedKey};
use keel_kernel::{Name, Rejection};
use keel_proto::v1 as pb;
use std::collections::BTreeSet;

/// Bytes in a key id as sent (hex of `KEY_ID_BYTES`).
const KEY_ID_HEX_LEN: usize = keel_kernel::signing::KEY_ID_BYTES * 2;

fn required(field: &'static str) -> Rejection {
    Rejection::FieldRequired { field: field.into() }
}

fn invalid(field: &'static str, problem: &'static str) -> Rejection {
    Rejection::FieldInvalid { field: field.into(), problem: problem.into() }
}

/// Unix ms of a timestamp; before 1970 is refused.
fn timestamp_ms(field: &'static str, timestamp: &prost_types::Timestamp) -> Result<u64, Rejection> {
    if timestamp.seconds < 0 || !(0..1_000_000_000).contains(&timestamp.nanos) {
        return Err(invalid(field, "must be a valid time at or after 1970-01-01"));
    }
    let seconds = u64::try_from(timestamp.seconds).map_err(|_| invalid(field, "out of range"))?;
    seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(u64::try_from(timestamp.nanos / 1_000_000).ok()?))
        .ok_or_else(|| invalid(field, "out of range"))
}

fn timestamp_of(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A key id as sent: exactly the hex length of a key id.
pub fn key_id(field: &'static str, value: &str) -> Result<String, Rejection> {
    if value.is_empty() {
        return Err(required(field));
    }
    if value.len() != KEY_ID_HEX_LEN || !value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(invalid(field, "a key id is 32 lowercase hex characters"));
    }
    Ok(value.to_owned())
}

/// Signatures as sent.
pub fn signatures(list: Vec<pb::Signature>) -> Result<Vec<Signature>, Rejection> {
    Limit::SignaturesPerRequest.check(list.len())?;
    list.into_iter()
        .map(|sig| {
            Limit::SignatureBytes.check(sig.signature.len())?;
            Ok(Signature { key_id: key_id("signatures.key_id", &sig.key_id)?, signature: sig.signature })
        })
        .collect()
}

/// A key purpose; UNSPECIFIED is refused.
pub fn purpose(value: i32) -> Result<KeyPurpose, Rejection> {
    match pb::KeyPurpose::try_from(value) {
        Ok(pb::KeyPurpose::Root) => Ok(KeyPurpose::Root),
        Ok(pb::KeyPurpose::EnginePublisher) => Ok(KeyPurpose::EnginePublisher),
        Ok(pb::KeyPurpose::ApiToken) => Ok(KeyPurpose::ApiToken),
        Ok(pb::KeyPurpose::Unspecified) | Err(_) => Err(invalid("spec.purposes", "unknown key purpose")),
    }
}

fn purpose_to_pb(purpose: KeyPurpose) -> pb::KeyPurpose {
    match purpose {
        KeyPurpose::Root => pb::KeyPurpose::Root,
        KeyPurpose::EnginePublisher => pb::KeyPurpose::EnginePublisher,
        KeyPurpose::ApiToken => pb::KeyPurpose::ApiToken,
    }
}

/// A key spec as sent.
pub fn key_spec(spec: Option<pb::KeySpec>) -> Result<KeySpec, Rejection> {
    let spec = spec.ok_or_else(|| required("spec"))?;
    if spec.public_key.is_empty() {
        return Err(required("spec.public_key"));
    }
    let public_key: [u8; 32] = spec
        .public_key
        .as_slice()
        .try_into()
        .map_err(|_| invalid("spec.public_key", "an Ed25519 public key is 32 bytes"))?;
    if spec.purposes.is_empty() {
        return Err(required("spec.purposes"));
    }
    let purposes = spec.purposes.iter().map(|p| purpose(*p)).collect::<Result<BTreeSet<_>, _>>()?;
    let not_before_ms = spec.not_before.as_ref().map(|t| timestamp_ms("spec.not_before", t)).transpose()?;
    let not_after_ms = spec.not_after.as_ref().map(|t| timestamp_ms("spec.not_after", t)).transpose()?;
    let spec = KeySpec { public_key, purposes, not_before_ms: not_before_ms.unwrap_or(0), not_after_ms };
    spec.validate()?;
    Ok(spec)
}

/// A stored key for the wire.
pub fn key_to_pb(key: &TrustedKey) -> pb::Key {
    pb::Key {
        name: format!("keys/{}", key.key_id),
        key_id: key.key_id.clone(),
        spec: Some(pb::KeySpec {
            public_key: key.spec.public_key.to_vec(),
            purposes: key.spec.purposes.iter().map(|p| purpose_to_pb(*p) as i32).collect(),
            not_before: Some(timestamp_of(key.spec.not_before_ms)),
            not_after: key.spec.not_after_ms.map(timestamp_of),
        }),
        create_revision: key.create_revision,
        signed_by: key.signed_by.clone(),
        revoked_revision: key.revoked_at_revision.unwrap_or(0),
    }
}

/// The key id of a `RevokeKey` request: `keys/{id}` or a bare id.
pub fn revoke_key_id(value: &str) -> Result<String, Rejection> {
    key_id("key_id", value.strip_prefix("keys/").unwrap_or(value))
}

/// The metadata document of a `RotateRoot` request, checked for presence and
/// size; the kernel parses it.
pub fn root_metadata_bytes(bytes: Vec<u8>) -> Result<Vec<u8>, Rejection> {
    if bytes.is_empty() {
        return Err(required("metadata"));
    }
    Limit::ManifestBytes.check(bytes.len())?;
    Ok(bytes)
}

/// Root metadata for the wire, roles in role order.
pub fn root_to_pb(root: &RootMetadata) -> pb::RootMetadata {
    pb::RootMetadata {
        version: root.version,
        roles: root
            .roles
            .iter()
            .map(|(role, keys)| pb::RoleKeys {
                role: role.name().to_owned(),
                key_ids: keys.key_ids.iter().cloned().collect(),
                threshold: keys.threshold,
            })
            .collect(),
    }
}

/// `keys/{id}` or a bare id.
pub fn key_name(name: &str) -> Result<String, Rejection> {
    key_id("name", name.strip_prefix("keys/").unwrap_or(name))
}

/// An engine name as sent.
pub fn engine_name(field: &'static str, value: &str) -> Result<Name, Rejection> {
    Name::parse(field, value.strip_prefix("engines/").unwrap_or(value))
}

fn tier_to_pb(tier: Tier) -> pb::Tier {
    match tier {
        Tier::Core => pb::Tier::Core,
        Tier::Critical => pb::Tier::Critical,
        Tier::Standard => pb::Tier::Standard,
        Tier::Experimental => pb::Tier::Experimental,
    }
}

/// A published version for the wire.
pub fn engine_version_to_pb(version: &EngineVersion) -> pb::EngineVersion {
    pb::EngineVersion {
        name: format!("engines/{}/versions/{}", version.engine, version.version),
        engine: version.engine.to_string(),
        version: version.version.to_string(),
        tier: tier_to_pb(version.tier) as i32,
        description: version.description.clone(),
        manifest: version.manifest.clone(),
        manifest_sha256: version.manifest_sha256.clone(),
        signatures: version
            .signatures
            .iter()
            .map(|s| pb::Signature { key_id: s.key_id.clone(), signature: s.signature.clone() })
            .collect(),
        publish_revision: version.publish_revision,
        publish_time_ms: ms_i64(version.publish_time_ms),
        yanked: version.is_yanked,
        ui_surfaces: keel_kernel::manifest::ui_surfaces_of(&version.manifest).iter().map(ui_surface_to_pb).collect(),
    }
}

/// One UI surface for the wire.
fn ui_surface_to_pb(surface: &keel_kernel::ui_surface::UiSurface) -> pb::UiSurface {
    use keel_kernel::ui_surface::UiKind;
    let kind = match surface.kind {
        UiKind::Panel => pb::UiSurfaceKind::Panel,
        UiKind::Form => pb::UiSurfaceKind::Form,
        UiKind::Widget => pb::UiSurfaceKind::Widget,
    };
    pb::UiSurface {
        name: surface.name.to_string(),
        kind: kind as i32,
        entry: surface.entry.clone(),
        description: surface.description.clone(),
    }
}

/// One node of a resolved graph for the wire.
pub fn resolved_node_to_pb(version: &EngineVersion) -> pb::ResolvedNode {
    pb::ResolvedNode {
        engine: version.engine.to_string(),
        version: version.version.to_string(),
        tier: tier_to_pb(version.tier) as i32,
    }
}

fn tenant_tier(value: i32) -> Result<TenantTier, Rejection> {
    match pb::TenantTier::try_from(value) {
        Ok(pb::TenantTier::Basic) => Ok(TenantTier::Basic),
        Ok(pb::TenantTier::StandardTenant) => Ok(TenantTier::Standard),
        Ok(pb::TenantTier::Enterprise) => Ok(TenantTier::Enterprise),
        Ok(pb::TenantTier::Unspecified) => Err(required("tenant.tier")),
        Err(_) => Err(invalid("tenant.tier", "unknown tenant tier")),
    }
}

fn tenant_status(value: i32) -> Result<TenantStatus, Rejection> {
    match pb::TenantStatus::try_from(value) {
        Ok(pb::TenantStatus::Active | pb::TenantStatus::Unspecified) => Ok(TenantStatus::Active),
        Ok(pb::TenantStatus::Suspended) => Ok(TenantStatus::Suspended),
        Err(_) => Err(invalid("tenant.status", "unknown tenant status")),
    }
}

/// A tenant's writable fields as sent.
pub fn tenant_spec(tenant: Option<pb::Tenant>) -> Result<TenantSpec, Rejection> {
    let tenant = tenant.ok_or_else(|| required("tenant"))?;
    let tenant_id =
        Name::parse("tenant.tenant_id", tenant.tenant_id.strip_prefix("tenants/").unwrap_or(&tenant.tenant_id))?;
    if tenant.display_name.is_empty() {
        return Err(required("tenant.display_name"));
    }
    keel_kernel::ids::check_description(&tenant.display_name)?;
    Limit::EnabledEnginesPerTenant.check(tenant.enabled_engines.len())?;
    let enabled_engines = tenant
        .enabled_engines
        .iter()
        .map(|engine| Name::parse("tenant.enabled_engines", engine))
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(TenantSpec {
        tenant_id,
        display_name: tenant.display_name,
        tier: tenant_tier(tenant.tier)?,
        home_region: Name::parse("tenant.home_region", &tenant.home_region)?,
        status: tenant_status(tenant.status)?,
        enabled_engines,
    })
}

/// `tenants/{id}` or a bare id.
pub fn tenant_name(name: &str) -> Result<Name, Rejection> {
    Name::parse("name", name.strip_prefix("tenants/").unwrap_or(name))
}

/// A stored tenant for the wire.
pub fn tenant_to_pb(tenant: &Tenant) -> pb::Tenant {
    let spec = &tenant.spec;
    pb::Tenant {
        name: format!("tenants/{}", spec.tenant_id),
        tenant_id: spec.tenant_id.to_string(),
        display_name: spec.display_name.clone(),
        tier: match spec.tier {
            TenantTier::Basic => pb::TenantTier::Basic,
            TenantTier::Standard => pb::TenantTier::StandardTenant,
            TenantTier::Enterprise => pb::TenantTier::Enterprise,
        } as i32,
        home_region: spec.home_region.to_string(),
        status: match spec.status {
            TenantStatus::Active => pb::TenantStatus::Active,
            TenantStatus::Suspended => pb::TenantStatus::Suspended,
        } as i32,
        enabled_engines: spec.enabled_engines.iter().map(Name::to_string).collect(),
        etag: tenant.etag(),
        create_revision: tenant.create_revision,
        update_revision: tenant.update_revision,
        create_time_ms: ms_i64(tenant.create_time_ms),
        update_time_ms: ms_i64(tenant.update_time_ms),
    }
}

/// Checks the manifest's size before anything else reads it.
pub fn manifest_bytes(bytes: &[u8]) -> Result<(), Rejection> {
    if bytes.is_empty() {
        return Err(required("manifest"));
    }
    Limit::ManifestBytes.check(bytes.len())
}

const _: () = assert!(KEY_ID_HEX_LEN <= NAME_BYTES_MAX);

/// An optional name: empty means none.
fn optional_name(field: &'static str, value: &str) -> Result<Option<Name>, Rejection> {
    if value.is_empty() {
        return Ok(None);
    }
    Name::parse(field, value).map(Some)
}

/// A `PublishEventRequest` as the kernel command (the key travels beside it).
pub fn publish_event(request: pb::PublishEventRequest) -> Result<(keel_kernel::Command, String), Rejection> {
    if request.topic.is_empty() {
        return Err(required("topic"));
    }
    let topic = Name::parse("topic", &request.topic)?;
    if topic.as_str().starts_with(crate::admission::breaker::MEMBER_TOPIC_PREFIX) {
        return Err(Rejection::FieldInvalid {
            field: "topic".into(),
            problem: "topics starting keel- are the members'".into(),
        });
    }
    let tenant = optional_name("tenant", &request.tenant)?;
    let engine = optional_name("engine", &request.engine)?;
    Limit::EventPayloadBytes.check(request.payload.len())?;
    let command = keel_kernel::Command::PublishEvent { topic, tenant, engine, payload: request.payload };
    Ok((command, request.idempotency_key))
}

/// A `WatchRequest`'s filter and start revision (0: from now).
pub fn watch_filter(request: &pb::WatchRequest) -> Result<(u64, super::events::WatchFilter), Rejection> {
    let mut kinds = BTreeSet::new();
    for kind in &request.kinds {
        let known = keel_kernel::EventKind::ALL_NAMES
            .iter()
            .find(|name| **name == kind.as_str())
            .ok_or_else(|| invalid("kinds", "not an event kind (see keel.v1.Event.kind)"))?;
        kinds.insert(*known);
    }
    let filter = super::events::WatchFilter {
        kinds,
        tenant: optional_name("tenant", &request.tenant)?,
        engine: optional_name("engine", &request.engine)?,
    };
    Ok((request.from_revision, filter))
}

/// An event on the wire: kind, scope and attributes by kind.
pub fn event_to_pb(event: &keel_kernel::Event) -> pb::Event {
    use keel_kernel::EventKind;
    let mut attributes = std::collections::HashMap::new();
    let mut payload = Vec::new();
    match &event.kind {
        EventKind::TrustBootstrapped { root_key_ids } => {
            attributes.insert("root_key_ids".to_owned(), root_key_ids.join(","));
        }
        EventKind::KeyAdded { key_id } | EventKind::KeyRevoked { key_id } => {
            attributes.insert("key_id".to_owned(), key_id.clone());
        }
        EventKind::EngineVersionPublished { version, .. } | EventKind::EngineVersionYanked { version, .. } => {
            attributes.insert("version".to_owned(), version.clone());
        }
        EventKind::TenantCreated { .. } | EventKind::TenantUpdated { .. } => {}
        EventKind::RootRotated { version } => {
            attributes.insert("root_version".to_owned(), version.to_string());
        }
        EventKind::PolicyPut { name, version } => {
            attributes.insert("policy".to_owned(), name.to_string());
            attributes.insert("version".to_owned(), version.to_string());
        }
        EventKind::UserEvent { topic, payload: bytes, .. } => {
            attributes.insert("topic".to_owned(), topic.to_string());
            payload = bytes.clone();
        }
        EventKind::TokenRevoked { jti } => {
            attributes.insert("jti".to_owned(), jti.clone());
        }
    }
    pb::Event {
        revision: event.revision,
        kind: event.kind.name().to_owned(),
        time_ms: event.time_ms,
        tenant: event.kind.tenant().map(Name::to_string).unwrap_or_default(),
        engine: event.kind.engine().map(Name::to_string).unwrap_or_default(),
        attributes,
        payload,
        caused_by: event.caused_by.clone().unwrap_or_default(),
    }
}

/// `policies/{name}` or a bare policy name.
pub fn policy_name(field: &'static str, name: &str) -> Result<Name, Rejection> {
    Name::parse(field, name.strip_prefix("policies/").unwrap_or(name))
}

/// A stored policy version for the wire.
pub fn policy_to_pb(policy: &StoredPolicy) -> pb::Policy {
    pb::Policy {
        name: format!("policies/{}/versions/{}", policy.name, policy.version),
        policy: policy.name.to_string(),
        version: policy.version,
        source: policy.source.clone(),
        source_sha256: policy.source_sha256.clone(),
        put_revision: policy.put_revision,
        put_time_ms: ms_i64(policy.put_time_ms),
    }
}

/// A decision context as sent: tenant, engine and action required, the rest optional.
pub fn evaluation_context(context: Option<pb::EvaluationContext>) -> Result<EvaluationContext, Rejection> {
    let context = context.ok_or_else(|| required("context"))?;
    let optional =
        |field: &'static str, value: &str| (!value.is_empty()).then(|| Name::parse(field, value)).transpose();
    Limit::PolicyContextDataClasses.check(context.data_classes.len())?;
    let data_classes = context
        .data_classes
        .iter()
        .map(|class| {
            policy::data_class_from_name(class)
                .ok_or_else(|| invalid("context.data_classes", "must be public, confidential, pii, pci or phi"))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(EvaluationContext {
        tenant: Name::parse("context.tenant", &context.tenant)?,
        engine: Name::parse("context.engine", &context.engine)?,
        version: (!context.version.is_empty())
            .then(|| keel_kernel::manifest::parse_version("context.version", &context.version))
            .transpose()?,
        action: Name::parse("context.action", &context.action)?,
        role: optional("context.role", &context.role)?,
        risk_band: optional("context.risk_band", &context.risk_band)?,
        region: optional("context.region", &context.region)?,
        data_classes,
    })
}

/// Test cases as sent, within `POLICY_TEST_CASES_MAX`.
pub fn policy_test_cases(cases: Vec<pb::PolicyTestCase>) -> Result<Vec<PolicyTestCase>, Rejection> {
    Limit::PolicyTestCases.check(cases.len())?;
    cases
        .into_iter()
        .map(|case| {
            Ok(PolicyTestCase {
                context: evaluation_context(case.context)?,
                expect_allow: case.expect_allow,
                expect_reason: case.expect_reason,
            })
        })
        .collect()
}

/// A decision for the wire.
pub fn policy_decision_to_pb(decision: &PolicyDecision) -> pb::PolicyDecision {
    pb::PolicyDecision {
        allow: decision.allow,
        reason: decision.reason.clone(),
        limits: decision.limits.map(|limits| pb::DecisionLimits {
            calls_per_minute: limits.calls_per_minute,
            burst: limits.burst,
            max_duration_ms: limits.max_duration_ms,
        }),
        allow_degraded: decision.allow_degraded,
        policy_version: decision.policy_version.clone(),
        decision_id: decision.decision_id.clone(),
        revision: decision.revision,
    }
}
