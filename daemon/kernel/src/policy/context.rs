//! What a policy is asked about, and the `input` document it sees.
//!
//! ```text
//!  EvaluationContext {tenant, engine, version?, action, role?, risk_band?, region?, data_classes}
//!        + replicated facts (tenant record, engine version manifest) at one revision
//!        ──► input = {tenant, engine, version, action, role, risk_band, region, data_classes,
//!                     facts: {tenant: {tier, home_region, status, enabled_engines} | null,
//!                             engine: {version, tier, data_classes, actions, is_yanked} | null}}
//! ```
//!
//! The input is a pure function of the context and the state, so the same
//! request at the same revision gives the same input (and decision id) on
//! every node.

use crate::ids::Name;
use crate::manifest::{DataClass, Manifest};
use crate::registry::Registry;
use crate::tenant::{TenantStatus, TenantTier, Tenants};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Prefix of the bytes a decision id hashes.
const DECISION_ID_PREFIX: &[u8] = b"keel/v1/decision\n";
/// Bytes of a decision id before hex encoding.
pub const DECISION_ID_BYTES: usize = 16;

/// A decision request. Optional fields are `null` in the input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EvaluationContext {
    /// The calling tenant.
    pub tenant: Name,
    /// The engine to run.
    pub engine: Name,
    /// The engine version; the highest published one when absent.
    pub version: Option<semver::Version>,
    /// The action to run.
    pub action: Name,
    /// The caller's role.
    pub role: Option<Name>,
    /// Risk band of the call (`low`, `medium`, `high`, `critical` by convention).
    pub risk_band: Option<Name>,
    /// Region the call runs in.
    pub region: Option<Name>,
    /// Data classes the call touches.
    pub data_classes: BTreeSet<DataClass>,
}

/// The lowercase name of a data class, as in manifests.
pub fn data_class_name(class: DataClass) -> &'static str {
    match class {
        DataClass::Public => "public",
        DataClass::Confidential => "confidential",
        DataClass::Pii => "pii",
        DataClass::Pci => "pci",
        DataClass::Phi => "phi",
    }
}

/// The data class named `name` (lowercase, as in manifests).
pub fn data_class_from_name(name: &str) -> Option<DataClass> {
    [DataClass::Public, DataClass::Confidential, DataClass::Pii, DataClass::Pci, DataClass::Phi]
        .into_iter()
        .find(|class| data_class_name(*class) == name)
}

fn tier_name(tier: TenantTier) -> &'static str {
    match tier {
        TenantTier::Basic => "basic",
        TenantTier::Standard => "standard",
        TenantTier::Enterprise => "enterprise",
    }
}

fn status_name(status: TenantStatus) -> &'static str {
    match status {
        TenantStatus::Active => "active",
        TenantStatus::Suspended => "suspended",
    }
}

fn names<'a>(items: impl IntoIterator<Item = &'a DataClass>) -> Vec<&'static str> {
    items.into_iter().map(|class| data_class_name(*class)).collect()
}

/// The `input` document for `context` against the given tenants and registry.
pub fn input_document(context: &EvaluationContext, tenants: &Tenants, registry: &Registry) -> Value {
    let tenant = tenants.get(&context.tenant).map(|tenant| {
        json!({
            "tier": tier_name(tenant.spec.tier),
            "home_region": tenant.spec.home_region.as_str(),
            "status": status_name(tenant.spec.status),
            "enabled_engines": tenant.spec.enabled_engines.iter().map(Name::as_str).collect::<Vec<_>>(),
        })
    });
    let engine = registry.get(&context.engine, context.version.as_ref()).map(|version| {
        // The stored bytes passed `manifest::parse` at publish; should they
        // ever not decode, the policy sees no data classes or actions rather
        // than the evaluation failing.
        let manifest = serde_json::from_slice::<Manifest>(&version.manifest).ok();
        let data_classes = manifest.as_ref().map(|m| names(&m.data_classes)).unwrap_or_default();
        let actions: Vec<&str> =
            manifest.as_ref().map(|m| m.actions.iter().map(|a| a.name.as_str()).collect()).unwrap_or_default();
        json!({
            "version": version.version.to_string(),
            "tier": version.tier.as_str(),
            "data_classes": data_classes,
            "actions": actions,
            "is_yanked": version.is_yanked,
        })
    });
    json!({
        "tenant": context.tenant.as_str(),
        "engine": context.engine.as_str(),
        "version": context.version.as_ref().map(ToString::to_string),
        "action": context.action.as_str(),
        "role": context.role.as_ref().map(Name::as_str),
        "risk_band": context.risk_band.as_ref().map(Name::as_str),
        "region": context.region.as_ref().map(Name::as_str),
        "data_classes": names(&context.data_classes),
        "facts": { "tenant": tenant, "engine": engine },
    })
}

/// A decision's id: lowercase hex of the first [`DECISION_ID_BYTES`] of
/// SHA-256(`keel/v1/decision\n` ‖ revision (u64 LE) ‖ policy version ‖ `\n` ‖
/// RFC 8785 bytes of the input). Equal on every node for the same request at
/// the same revision and policy version.
pub fn decision_id(revision: u64, policy_version: &str, input: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(DECISION_ID_PREFIX);
    hasher.update(revision.to_le_bytes());
    hasher.update(policy_version.as_bytes());
    hasher.update(b"\n");
    // A JSON value built from strings, booleans, arrays and objects always
    // canonicalises; should it not, the plain serialisation still identifies it.
    let canonical = serde_json_canonicalizer::to_vec(input).unwrap_or_else(|_| input.to_string().into_bytes());
    hasher.update(&canonical);
    hex::encode(&hasher.finalize()[..DECISION_ID_BYTES])
}

/// The fixed inputs every policy is evaluated on at put; each result must be
/// undefined or a well-formed decision. They cover absent facts, every tenant
/// tier and status, and the risk bands and data classes the examples use.
pub fn probe_inputs() -> Vec<(&'static str, Value)> {
    let tenant = |tier: &str, region: &str, status: &str| json!({"tier": tier, "home_region": region, "status": status, "enabled_engines": ["probe-engine"]});
    let engine = |tier: &str, classes: &[&str], is_yanked: bool| json!({"version": "1.0.0", "tier": tier, "data_classes": classes, "actions": ["run"], "is_yanked": is_yanked});
    let input = |risk: Option<&str>, region: Option<&str>, classes: &[&str], tenant: Value, engine: Value| {
        json!({
            "tenant": "probe-tenant", "engine": "probe-engine", "version": null, "action": "run",
            "role": "operator", "risk_band": risk, "region": region, "data_classes": classes,
            "facts": {"tenant": tenant, "engine": engine},
        })
    };
    vec![
        ("no-facts", input(None, None, &[], Value::Null, Value::Null)),
        (
            "critical-enterprise",
            input(
                Some("critical"),
                Some("eu-west"),
                &["pii"],
                tenant("enterprise", "eu-west", "active"),
                engine("critical", &["pii"], false),
            ),
        ),
        (
            "low-basic",
            input(
                Some("low"),
                Some("us-east"),
                &["public"],
                tenant("basic", "us-east", "active"),
                engine("standard", &["public"], false),
            ),
        ),
        (
            "high-standard-suspended",
            input(
                Some("high"),
                Some("ap-south"),
                &["pci", "phi"],
                tenant("standard", "eu-central", "suspended"),
                engine("experimental", &["confidential"], true),
            ),
        ),
    ]
}
