//! Capability tokens: who a caller is and what it may do, checked by one
//! pure function of (token, trust store, audience, time) that the edge and
//! `apply` share (see ARCHITECTURE.md → Identity and authorization).
//!
//! ```text
//!  token (≤ TOKEN_BYTES_MAX) ─► header {alg: EdDSA, kid} ─► trust store key kid:
//!     known, purpose API_TOKEN, not revoked, valid at `now_ms`
//!  ─► signature (jsonwebtoken, EdDSA) ─► claims: aud == audience, nbf ≤ now < exp,
//!     exp − iat ≤ TOKEN_LIFETIME_MS_MAX, permissions ≤ TOKEN_PERMISSIONS_MAX, tenant a Name
//!  ─► Principal
//! ```
//!
//! No clock is read here: `now_ms` is the caller's (the edge's wall clock, or
//! the entry's leader time in `apply`), so every member decides the same.

use crate::ids::Name;
use crate::limits::{TOKEN_BYTES_MAX, TOKEN_LIFETIME_MS_MAX, TOKEN_PERMISSIONS_MAX};
use crate::trust_store::{KeyPurpose, Role, TrustStore, TrustedKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A token's claims, as signed (times are JWT NumericDate: Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the caller is.
    pub sub: String,
    /// The one tenant a tenant-scoped token may see and affect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// What the caller may do (`tenant.read`, `policy.write`, …).
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Expires at.
    pub exp: u64,
    /// Token id, for revocation.
    pub jti: String,
    /// The cluster the token is for.
    pub aud: String,
}

/// Who caused a change: the part of a verified token that travels in the
/// proposal, so `apply` re-checks it at the entry's revision and time
/// ([`check_actor`]) and every event records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Who.
    pub sub: String,
    /// Scoped to this tenant, if any.
    pub tenant: Option<Name>,
    /// The token's id.
    pub jti: String,
    /// When the token expires, Unix ms.
    pub exp_ms: u64,
    /// The trust-store key that signed it.
    pub key_id: String,
}

/// A verified caller: who, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Who, as proposals carry it.
    pub actor: Actor,
    /// What it may do.
    pub permissions: BTreeSet<String>,
}

/// The permission that grants every other one, to cluster-wide tokens only.
pub const WILDCARD_PERMISSION: &str = "*";

impl Principal {
    /// Whether the token grants `permission`. The wildcard counts only on a
    /// token that is not scoped to a tenant (a cluster admin's).
    pub fn may(&self, permission: &str) -> bool {
        self.permissions.contains(permission)
            || (self.actor.tenant.is_none() && self.permissions.contains(WILDCARD_PERMISSION))
    }
}

/// Why a token was refused; each has a stable reason. Serialisable because
/// `apply` refuses with it too (inside `Rejection::Token`); variants are only
/// ever appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum TokenError {
    /// Over `TOKEN_BYTES_MAX`.
    #[error("the token is {bytes} bytes, over TOKEN_BYTES_MAX")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// Not a JWT this verifier reads (shape, encoding, algorithm, claims).
    #[error("the token is malformed: {detail}")]
    Malformed {
        /// What is wrong.
        detail: String,
    },
    /// The `kid` names no key in the trust store.
    #[error("the token's key {key_id:?} is not in the trust store")]
    UnknownKey {
        /// The key named.
        key_id: String,
    },
    /// The key may not sign tokens (no `API_TOKEN` purpose).
    #[error("key {key_id} may not sign API tokens")]
    KeyNotForTokens {
        /// The key.
        key_id: String,
    },
    /// The key was revoked, or is outside its validity window.
    #[error("key {key_id} is revoked or not valid now")]
    KeyRevoked {
        /// The key.
        key_id: String,
    },
    /// The signature does not verify.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// Past `exp`.
    #[error("the token expired")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Issued for another cluster.
    #[error("the token is for audience {aud:?}, not this cluster")]
    WrongAudience {
        /// The audience it names.
        aud: String,
    },
    /// More permissions than `TOKEN_PERMISSIONS_MAX`.
    #[error("the token carries {count} permissions, over TOKEN_PERMISSIONS_MAX")]
    TooManyPermissions {
        /// How many.
        count: usize,
    },
    /// `exp − iat` over `TOKEN_LIFETIME_MS_MAX`.
    #[error("the token lives longer than TOKEN_LIFETIME_MS_MAX")]
    TooLongLived,
    /// Its id is on the replicated deny-list (`RevokeToken`).
    #[error("token {jti:?} is revoked")]
    Revoked {
        /// The token's id.
        jti: String,
    },
    /// The api-token role needs more signatures than a token carries (one).
    #[error("the api-token role needs {threshold} signatures; a token carries one")]
    ThresholdNotMet {
        /// The role's threshold.
        threshold: usize,
    },
}

impl TokenError {
    /// Every reason this type produces (names of `keel.v1.ErrorReason`).
    pub const REASONS: &'static [&'static str] = &[
        "TOKEN_TOO_LARGE",
        "TOKEN_REVOKED",
        "TOKEN_SIGNATURE_THRESHOLD_NOT_MET",
        "TOKEN_MALFORMED",
        "TOKEN_KEY_UNKNOWN",
        "TOKEN_KEY_PURPOSE_MISMATCH",
        "TOKEN_KEY_REVOKED",
        "TOKEN_SIGNATURE_INVALID",
        "TOKEN_EXPIRED",
        "TOKEN_NOT_YET_VALID",
        "TOKEN_AUDIENCE_MISMATCH",
        "TOKEN_TOO_MANY_PERMISSIONS",
        "TOKEN_LIFETIME_TOO_LONG",
    ];

    /// The stable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::TooLarge { .. } => "TOKEN_TOO_LARGE",
            TokenError::Malformed { .. } => "TOKEN_MALFORMED",
            TokenError::UnknownKey { .. } => "TOKEN_KEY_UNKNOWN",
            TokenError::KeyNotForTokens { .. } => "TOKEN_KEY_PURPOSE_MISMATCH",
            TokenError::KeyRevoked { .. } => "TOKEN_KEY_REVOKED",
            TokenError::BadSignature => "TOKEN_SIGNATURE_INVALID",
            TokenError::Expired => "TOKEN_EXPIRED",
            TokenError::NotYetValid => "TOKEN_NOT_YET_VALID",
            TokenError::WrongAudience { .. } => "TOKEN_AUDIENCE_MISMATCH",
            TokenError::TooManyPermissions { .. } => "TOKEN_TOO_MANY_PERMISSIONS",
            TokenError::TooLongLived => "TOKEN_LIFETIME_TOO_LONG",
            TokenError::Revoked { .. } => "TOKEN_REVOKED",
            TokenError::ThresholdNotMet { .. } => "TOKEN_SIGNATURE_THRESHOLD_NOT_MET",
        }
    }
}

fn malformed(detail: impl Into<String>) -> TokenError {
    TokenError::Malformed { detail: detail.into() }
}

/// Verifies `token` against the trust store for `audience` at `now_ms`.
pub fn verify(token: &str, trust: &TrustStore, audience: &str, now_ms: u64) -> Result<Principal, TokenError> {
    if token.len() > TOKEN_BYTES_MAX {
        return Err(TokenError::TooLarge { bytes: token.len() });
    }
    let header = jsonwebtoken::decode_header(token).map_err(|error| malformed(error.to_string()))?;
    if header.alg != jsonwebtoken::Algorithm::EdDSA {
        return Err(malformed("the algorithm must be EdDSA"));
    }
    let key_id = header.kid.ok_or_else(|| malformed("the header names no key (kid)"))?;
    let key = signing_key(trust, &key_id, now_ms)?;
    // Signature and claim shape only: time and audience are checked below,
    // against the caller's time. jsonwebtoken reads the clock only when its
    // `exp`/`nbf` checks are on, and they are off.
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims = BTreeSet::<String>::new().into_iter().collect();
    let decoding_key = jsonwebtoken::DecodingKey::from_ed_der(&key.spec.public_key);
    let claims = jsonwebtoken::decode::<Claims>(token, &decoding_key, &validation)
        .map_err(|error| match error.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
            _ => malformed(error.to_string()),
        })?
        .claims;
    if claims.aud != audience {
        return Err(TokenError::WrongAudience { aud: claims.aud });
    }
    let ms = |seconds: u64| seconds.saturating_mul(1000);
    if ms(claims.exp).saturating_sub(ms(claims.iat)) > TOKEN_LIFETIME_MS_MAX || claims.exp < claims.iat {
        return Err(TokenError::TooLongLived);
    }
    if now_ms < ms(claims.nbf) {
        return Err(TokenError::NotYetValid);
    }
    if now_ms >= ms(claims.exp) {
        return Err(TokenError::Expired);
    }
    if claims.permissions.len() > TOKEN_PERMISSIONS_MAX {
        return Err(TokenError::TooManyPermissions { count: claims.permissions.len() });
    }
    let claims_checked = [("sub", &claims.sub), ("jti", &claims.jti)]
        .into_iter()
        .chain(claims.permissions.iter().map(|permission| ("permissions", permission)))
        .try_for_each(|(claim, value)| crate::ids::check_claim(claim, value));
    claims_checked.map_err(|rejection| malformed(rejection.to_string()))?;
    let tenant = claims.tenant.as_deref().map(|tenant| Name::parse("tenant", tenant)).transpose();
    let tenant = tenant.map_err(|rejection| malformed(format!("tenant: {rejection}")))?;
    if trust.is_token_revoked(&claims.jti) {
        return Err(TokenError::Revoked { jti: claims.jti });
    }
    Ok(Principal {
        actor: Actor { sub: claims.sub, tenant, jti: claims.jti, exp_ms: ms(claims.exp), key_id },
        permissions: claims.permissions.into_iter().collect(),
    })
}

/// Whether a token verified earlier still holds at `now_ms` against `trust`
/// (its key still valid and not revoked, its id not revoked, not expired):
/// what `apply` checks of a proposal's actor, and the edge of a cached token.
pub fn check_actor(actor: &Actor, trust: &TrustStore, now_ms: u64) -> Result<(), TokenError> {
    signing_key(trust, &actor.key_id, now_ms)?;
    if trust.is_token_revoked(&actor.jti) {
        return Err(TokenError::Revoked { jti: actor.jti.clone() });
    }
    if now_ms >= actor.exp_ms {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// The key `key_id`, if it may sign tokens at `now_ms`.
fn signing_key<'t>(trust: &'t TrustStore, key_id: &str, now_ms: u64) -> Result<&'t TrustedKey, TokenError> {
    let key = trust.get(key_id).ok_or_else(|| TokenError::UnknownKey { key_id: key_id.to_owned() })?;
    // A key signs tokens only while it fills the api-token role (a rotation
    // can drop it), and only if one signature meets the role's threshold.
    if !key.spec.purposes.contains(&KeyPurpose::ApiToken) || !trust.root().contains(Role::ApiToken, key_id) {
        return Err(TokenError::KeyNotForTokens { key_id: key_id.to_owned() });
    }
    let threshold = trust.root().threshold(Role::ApiToken);
    if threshold > 1 {
        return Err(TokenError::ThresholdNotMet { threshold });
    }
    let is_valid_now = now_ms >= key.spec.not_before_ms && key.spec.not_after_ms.is_none_or(|after| now_ms < after);
    if key.revoked_at_revision.is_some() || !is_valid_now {
        return Err(TokenError::KeyRevoked { key_id: key_id.to_owned() });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_names_a_listed_reason() {
        let all = [
            TokenError::TooLarge { bytes: 1 },
            TokenError::Malformed { detail: String::new() },
            TokenError::UnknownKey { key_id: String::new() },
            TokenError::KeyNotForTokens { key_id: String::new() },
            TokenError::KeyRevoked { key_id: String::new() },
            TokenError::BadSignature,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::WrongAudience { aud: String::new() },
            TokenError::TooManyPermissions { count: 1 },
            TokenError::TooLongLived,
            TokenError::Revoked { jti: String::new() },
            TokenError::ThresholdNotMet { threshold: 2 },
        ];
        let reasons: BTreeSet<&str> = all.iter().map(TokenError::reason).collect();
        assert_eq!(reasons.len(), all.len());
        assert_eq!(reasons, TokenError::REASONS.iter().copied().collect());
    }
}
