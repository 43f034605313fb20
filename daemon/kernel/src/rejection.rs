//! Rejections: the deterministic refusals of [`crate::KernelState::apply`].
//!
//! A rejection is replicated outcome data, not a failure of the node: every
//! node applying the same entry reaches the same rejection and changes nothing.
//! Each variant has a stable reason (`UPPER_SNAKE`, listed in
//! `keel.v1.ErrorReason`); the node maps it to a gRPC status in one place.

use crate::limits::Limit;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Why an entry was refused. Structured fields, never free-form messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Rejection {
    #[error("field {field} is required")]
    FieldRequired { field: Cow<'static, str> },
    #[error("field {field} is invalid: {problem}")]
    FieldInvalid { field: Cow<'static, str>, problem: Cow<'static, str> },
    #[error("{} exceeded: {actual} > {}", limit.name(), limit.value())]
    LimitExceeded { limit: Limit, actual: usize },
    #[error("manifest is malformed: {detail}")]
    ManifestMalformed { detail: String },
    #[error("{field} is not valid semver: {value}")]
    VersionInvalid { field: Cow<'static, str>, value: String },

    #[error("no trusted key has id {key_id}")]
    KeyUnknown { key_id: String },
    #[error("key {key_id} lacks the {required} purpose")]
    KeyPurposeMismatch { key_id: String, required: Cow<'static, str> },
    #[error("key {key_id} expired at {not_after_ms} ms (entry time {at_ms} ms)")]
    KeyExpired { key_id: String, not_after_ms: u64, at_ms: u64 },
    #[error("key {key_id} is not valid before {not_before_ms} ms (entry time {at_ms} ms)")]
    KeyNotYetValid { key_id: String, not_before_ms: u64, at_ms: u64 },
    #[error("signature by {key_id} does not verify")]
    SignatureInvalid { key_id: String },
    #[error("{valid} valid signature(s) from {required_purpose} keys, {threshold} required")]
    SignatureThresholdNotMet { required_purpose: Cow<'static, str>, valid: usize, threshold: usize },
    #[error("key {key_id} already exists with different attributes")]
    KeyAlreadyExists { key_id: String },
    #[error("the trust store has no root keys yet")]
    TrustNotBootstrapped,
    #[error("the trust store was already bootstrapped with other root keys")]
    TrustAlreadyBootstrapped,
    #[error("root metadata version {found} is not the next version ({expected})")]
    RootVersionInvalid { expected: u64, found: u64 },
    #[error("key {key_id} was revoked at revision {revoked_at_revision}")]
    KeyRevoked { key_id: String, revoked_at_revision: u64 },
    #[error("key validity window is empty: not_before {not_before_ms} >= not_after {not_after_ms}")]
    KeyValidityInvalid { not_before_ms: u64, not_after_ms: u64 },

    #[error("{engine}@{version} is already published with different content")]
    VersionAlreadyPublished { engine: String, version: String },
    #[error("no published, unyanked version of {engine} matches {requirement}")]
    DependencyUnresolvable { engine: String, requirement: String },
    #[error("{engine} ({tier}) cannot depend on {dependency} ({dependency_tier}), a less trusted tier")]
    DependencyTierViolation {
        engine: String,
        tier: Cow<'static, str>,
        dependency: String,
        dependency_tier: Cow<'static, str>,
    },
    #[error("dependency cycle: {}", path.join(" -> "))]
    DependencyCycle { path: Vec<String> },
    #[error("{engine}@{version} is not published")]
    EngineVersionNotFound { engine: String, version: String },

    #[error("tenant {tenant_id} does not exist")]
    TenantNotFound { tenant_id: String },
    #[error("tenant {tenant_id} already exists")]
    TenantAlreadyExists { tenant_id: String },
    #[error("etag mismatch: expected {expected}, current {current}")]
    EtagMismatch { expected: String, current: String },

    #[error("idempotency key {key} was used at revision {revision} for a different request")]
    IdempotencyKeyReused { key: String, revision: u64 },
    #[error("action {action}: {schema} is not a usable JSON Schema: {problem}")]
    ActionSchemaInvalid { action: String, schema: Cow<'static, str>, problem: String },
    #[error("policy does not compile: {detail}")]
    PolicyCompileFailed { detail: String },
    #[error(
        "policy uses {builtin}, which a replicated policy may not call (not deterministic, or unbounded allocation)"
    )]
    PolicyBuiltinForbidden { builtin: String },
    #[error("policy result for probe {probe} does not match the decision schema: {detail}")]
    PolicyDecisionMalformed { probe: String, detail: String },
    #[error("policy evaluation failed for probe {probe}: {detail}")]
    PolicyEvaluationFailed { probe: String, detail: String },
    #[error("policy {name} has no version {version}")]
    PolicyNotFound { name: String, version: u64 },
    #[error("policy {name} is at version {current}, not {expected}")]
    PolicyVersionMismatch { name: String, expected: u64, current: u64 },
    #[error("the {evaluator} evaluation was aborted ({failure}): {detail}")]
    EvaluationAborted { evaluator: Cow<'static, str>, failure: Cow<'static, str>, detail: String },
    /// The proposal's actor no longer holds: its token or key was revoked,
    /// or it expired, before the entry applied.
    #[error("{0}")]
    Token(crate::token::TokenError),
    /// A tenant-scoped caller asked to read or change another tenant, or
    /// something that is not a tenant's (cluster-wide state).
    #[error("the caller is scoped to tenant {scope}, not {requested:?}")]
    TenantOutOfScope { scope: String, requested: String },
    /// An admission's input does not match its action's input schema.
    #[error("the input of action {action} is invalid: {problem}")]
    InputInvalid { action: String, problem: String },
}

impl Rejection {
    /// The stable reason, one of `keel.v1.ErrorReason`'s names.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::FieldRequired { .. } => "FIELD_REQUIRED",
            Rejection::FieldInvalid { .. } => "FIELD_INVALID",
            Rejection::LimitExceeded { .. } => "LIMIT_EXCEEDED",
            Rejection::ManifestMalformed { .. } => "MANIFEST_MALFORMED",
            Rejection::VersionInvalid { .. } => "VERSION_INVALID",
            Rejection::KeyUnknown { .. } => "KEY_UNKNOWN",
            Rejection::KeyPurposeMismatch { .. } => "KEY_PURPOSE_MISMATCH",
            Rejection::KeyExpired { .. } => "KEY_EXPIRED",
            Rejection::KeyNotYetValid { .. } => "KEY_NOT_YET_VALID",
            Rejection::SignatureInvalid { .. } => "SIGNATURE_INVALID",
            Rejection::SignatureThresholdNotMet { .. } => "SIGNATURE_THRESHOLD_NOT_MET",
            Rejection::KeyAlreadyExists { .. } => "KEY_ALREADY_EXISTS",
            Rejection::TrustNotBootstrapped => "TRUST_NOT_BOOTSTRAPPED",
            Rejection::TrustAlreadyBootstrapped => "TRUST_ALREADY_BOOTSTRAPPED",
            Rejection::KeyValidityInvalid { .. } => "KEY_VALIDITY_INVALID",
            Rejection::RootVersionInvalid { .. } => "ROOT_VERSION_INVALID",
            Rejection::KeyRevoked { .. } => "KEY_REVOKED",
            Rejection::VersionAlreadyPublished { .. } => "VERSION_ALREADY_PUBLISHED",
            Rejection::TenantNotFound { .. } => "TENANT_NOT_FOUND",
            Rejection::TenantAlreadyExists { .. } => "TENANT_ALREADY_EXISTS",
            Rejection::EtagMismatch { .. } => "ETAG_MISMATCH",
            Rejection::DependencyUnresolvable { .. } => "DEPENDENCY_UNRESOLVABLE",
            Rejection::DependencyTierViolation { .. } => "DEPENDENCY_TIER_VIOLATION",
            Rejection::DependencyCycle { .. } => "DEPENDENCY_CYCLE",
            Rejection::EngineVersionNotFound { .. } => "ENGINE_VERSION_NOT_FOUND",
            Rejection::IdempotencyKeyReused { .. } => "IDEMPOTENCY_KEY_REUSED",
            Rejection::ActionSchemaInvalid { .. } => "ACTION_SCHEMA_INVALID",
            Rejection::PolicyCompileFailed { .. } => "POLICY_COMPILE_FAILED",
            Rejection::PolicyBuiltinForbidden { .. } => "POLICY_BUILTIN_FORBIDDEN",
            Rejection::PolicyDecisionMalformed { .. } => "POLICY_DECISION_MALFORMED",
            Rejection::PolicyEvaluationFailed { .. } => "POLICY_EVALUATION_FAILED",
            Rejection::PolicyNotFound { .. } => "POLICY_NOT_FOUND",
            Rejection::PolicyVersionMismatch { .. } => "POLICY_VERSION_MISMATCH",
            Rejection::EvaluationAborted { .. } => "EVALUATION_ABORTED",
            Rejection::Token(error) => error.reason(),
            Rejection::TenantOutOfScope { .. } => "TENANT_OUT_OF_SCOPE",
            Rejection::InputInvalid { .. } => "INPUT_INVALID",
        }
    }

    /// Every reason a rejection can carry (and `TokenError::REASONS`, which
    /// `Rejection::Token` carries); a node test checks each against the proto registry.
    pub const ALL_REASONS: &'static [&'static str] = &[
        "FIELD_REQUIRED",
        "FIELD_INVALID",
        "LIMIT_EXCEEDED",
        "MANIFEST_MALFORMED",
        "VERSION_INVALID",
        "KEY_UNKNOWN",
        "KEY_PURPOSE_MISMATCH",
        "KEY_EXPIRED",
        "KEY_NOT_YET_VALID",
        "SIGNATURE_INVALID",
        "SIGNATURE_THRESHOLD_NOT_MET",
        "KEY_ALREADY_EXISTS",
        "TRUST_NOT_BOOTSTRAPPED",
        "TRUST_ALREADY_BOOTSTRAPPED",
        "KEY_VALIDITY_INVALID",
        "ROOT_VERSION_INVALID",
        "KEY_REVOKED",
        "VERSION_ALREADY_PUBLISHED",
        "TENANT_NOT_FOUND",
        "TENANT_ALREADY_EXISTS",
        "ETAG_MISMATCH",
        "DEPENDENCY_UNRESOLVABLE",
        "DEPENDENCY_TIER_VIOLATION",
        "DEPENDENCY_CYCLE",
        "ENGINE_VERSION_NOT_FOUND",
        "IDEMPOTENCY_KEY_REUSED",
        "ACTION_SCHEMA_INVALID",
        "POLICY_COMPILE_FAILED",
        "POLICY_BUILTIN_FORBIDDEN",
        "POLICY_DECISION_MALFORMED",
        "POLICY_EVALUATION_FAILED",
        "POLICY_NOT_FOUND",
        "POLICY_VERSION_MISMATCH",
        "EVALUATION_ABORTED",
        "TENANT_OUT_OF_SCOPE",
        "INPUT_INVALID",
    ];

    /// What kind of refusal this is, which fixes its gRPC status code.
    pub fn class(&self) -> RejectionClass {
        match self {
            Rejection::FieldRequired { .. }
            | Rejection::FieldInvalid { .. }
            | Rejection::ManifestMalformed { .. }
            | Rejection::VersionInvalid { .. }
            | Rejection::KeyValidityInvalid { .. }
            | Rejection::ActionSchemaInvalid { .. }
            | Rejection::PolicyCompileFailed { .. }
            | Rejection::PolicyBuiltinForbidden { .. }
            | Rejection::PolicyDecisionMalformed { .. }
            | Rejection::PolicyEvaluationFailed { .. }
            | Rejection::EvaluationAborted { .. }
            | Rejection::InputInvalid { .. } => RejectionClass::InvalidArgument,
            Rejection::LimitExceeded { .. } => RejectionClass::InvalidArgument,
            Rejection::KeyUnknown { .. }
            | Rejection::KeyPurposeMismatch { .. }
            | Rejection::KeyExpired { .. }
            | Rejection::KeyNotYetValid { .. }
            | Rejection::SignatureInvalid { .. }
            | Rejection::SignatureThresholdNotMet { .. }
            | Rejection::KeyRevoked { .. }
            | Rejection::TenantOutOfScope { .. } => RejectionClass::PermissionDenied,
            Rejection::Token(_) => RejectionClass::Unauthenticated,
            Rejection::KeyAlreadyExists { .. }
            | Rejection::TrustAlreadyBootstrapped
            | Rejection::VersionAlreadyPublished { .. }
            | Rejection::TenantAlreadyExists { .. } => RejectionClass::AlreadyExists,
            Rejection::TenantNotFound { .. }
            | Rejection::EngineVersionNotFound { .. }
            | Rejection::PolicyNotFound { .. } => RejectionClass::NotFound,
            Rejection::TrustNotBootstrapped
            | Rejection::RootVersionInvalid { .. }
            | Rejection::EtagMismatch { .. }
            | Rejection::DependencyUnresolvable { .. }
            | Rejection::DependencyTierViolation { .. }
            | Rejection::DependencyCycle { .. }
            | Rejection::IdempotencyKeyReused { .. }
            | Rejection::PolicyVersionMismatch { .. } => RejectionClass::FailedPrecondition,
        }
    }
}

/// The families of rejection; each maps to one gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum RejectionClass {
    InvalidArgument,
    PermissionDenied,
    AlreadyExists,
    NotFound,
    FailedPrecondition,
    Unauthenticated,
}
