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
use crate::trust_store::{KeyPurpose, TrustStore};
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

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Who.
    pub sub: String,
    /// Scoped to this tenant, if any.
    pub tenant: Option<Name>,
    /// What it may do.
    pub permissions: BTreeSet<String>,
    /// The token's id.
    pub jti: String,
    /// When the token expires, Unix ms.
    pub exp_ms: u64,
    /// The trust-store key that signed it.
    pub key_id: String,
}

/// Why a token was refused; each has a stable reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
}

impl TokenError {
    /// Every reason this type produces (names of `keel.v1.ErrorReason`).
    pub const REASONS: &'static [&'static str] = &[
        "TOKEN_TOO_LARGE",
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
    let key = trust.get(&key_id).ok_or_else(|| TokenError::UnknownKey { key_id: key_id.clone() })?;
    if !key.spec.purposes.contains(&KeyPurpose::ApiToken) {
        return Err(TokenError::KeyNotForTokens { key_id });
    }
    let is_valid_now = now_ms >= key.spec.not_before_ms && key.spec.not_after_ms.is_none_or(|after| now_ms < after);
    if key.revoked_at_revision.is_some() || !is_valid_now {
        return Err(TokenError::KeyRevoked { key_id });
    }
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
    let tenant = claims.tenant.as_deref().map(|tenant| Name::parse("tenant", tenant)).transpose();
    let tenant = tenant.map_err(|rejection| malformed(format!("tenant: {rejection}")))?;
    Ok(Principal {
        sub: claims.sub,
        tenant,
        permissions: claims.permissions.into_iter().collect(),
        jti: claims.jti,
        exp_ms: ms(claims.exp),
        key_id,
    })
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
        ];
        let reasons: BTreeSet<&str> = all.iter().map(TokenError::reason).collect();
        assert_eq!(reasons.len(), all.len());
        assert_eq!(reasons, TokenError::REASONS.iter().copied().collect());
    }
}
