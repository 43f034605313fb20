//! Capability tokens: issuing them (`keelctl token issue`) and sending them
//! (`authorization: Bearer <token>` on every call).
//!
//! A token is a JWT signed with EdDSA by a key that holds the `API_TOKEN`
//! purpose in the cluster's trust store; the header's `kid` names that key.
//! Claims (times in Unix seconds): `sub`, optional `tenant`, `permissions`,
//! `iat`, `nbf`, `exp` (at most `TOKEN_LIFETIME_MAX` after `iat`), `jti`,
//! and `aud` (the cluster id, `cluster.id` in keeld's configuration).

use crate::key_pair::KeyPair;
use crate::limits::{TOKEN_BYTES_MAX, TOKEN_LIFETIME_MAX};
use crate::local_error::LocalError;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};

/// A bearer token. Its `Debug` form hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(MetadataValue<Ascii>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// A token from its text (surrounding whitespace ignored).
    pub fn new(token: &str) -> Result<BearerToken, LocalError> {
        let token = token.trim();
        let invalid = |problem: &str| LocalError::ArgumentInvalid { argument: "token".into(), problem: problem.into() };
        if token.is_empty() {
            return Err(invalid("is empty"));
        }
        if token.len() > TOKEN_BYTES_MAX {
            return Err(invalid(&format!("is {} bytes; at most {TOKEN_BYTES_MAX} are allowed", token.len())));
        }
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| invalid("is not printable ASCII (a JWT is three base64url parts)"))?;
        Ok(BearerToken(value))
    }

    /// The `authorization` header value.
    pub fn header(&self) -> &MetadataValue<Ascii> {
        &self.0
    }
}

/// What a token says (JWT claims; times in Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Who the caller is.
    pub sub: String,
    /// The one tenant a tenant-scoped token may see and affect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// What it may do (`tenant.read`, `policy.write`, …; `*`: everything,
    /// for tokens not scoped to a tenant).
    pub permissions: Vec<String>,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Expires at.
    pub exp: u64,
    /// The token's id, for revocation.
    pub jti: String,
    /// The cluster id.
    pub aud: String,
}

impl TokenClaims {
    /// Claims valid from `now` for `ttl` (at most [`TOKEN_LIFETIME_MAX`]),
    /// with a random `jti`.
    pub fn new(sub: &str, audience: &str, permissions: Vec<String>, now: Duration, ttl: Duration) -> TokenClaims {
        let iat = now.as_secs();
        let mut jti = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut jti);
        TokenClaims {
            sub: sub.to_owned(),
            tenant: None,
            permissions,
            iat,
            nbf: iat,
            exp: iat.saturating_add(ttl.as_secs()),
            jti: hex::encode(jti),
            aud: audience.to_owned(),
        }
    }
}

/// Signs `claims` with `key` (whose key id becomes the `kid`).
pub fn issue(key: &KeyPair, claims: &TokenClaims) -> Result<String, LocalError> {
    let invalid = |problem: String| LocalError::ArgumentInvalid { argument: "token".into(), problem };
    if claims.exp.saturating_sub(claims.iat) > TOKEN_LIFETIME_MAX.as_secs() {
        return Err(invalid(format!("lives longer than {} s (TOKEN_LIFETIME_MS_MAX)", TOKEN_LIFETIME_MAX.as_secs())));
    }
    let der = key.to_pkcs8_der().map_err(|error| invalid(format!("encoding the key: {error}")))?;
    let encoding_key = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(key.key_id());
    let token =
        jsonwebtoken::encode(&header, claims, &encoding_key).map_err(|error| invalid(format!("signing: {error}")))?;
    if token.len() > TOKEN_BYTES_MAX {
        return Err(invalid(format!("is {} bytes; at most {TOKEN_BYTES_MAX} are allowed", token.len())));
    }
    Ok(token)
}

/// The claims of `token`, read without checking its signature (for showing
/// what a token says, and for revoking it by its `jti` and `exp`).
pub fn read_claims(token: &str) -> Result<TokenClaims, LocalError> {
    let invalid = |problem: String| LocalError::ArgumentInvalid { argument: "token".into(), problem };
    let payload = token.trim().split('.').nth(1).ok_or_else(|| invalid("is not a JWT (three parts)".into()))?;
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
        .map_err(|_| invalid("its claims are not base64url".into()))?;
    serde_json::from_slice(&bytes).map_err(|error| invalid(format!("its claims do not parse: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_read_back_and_are_bounded() {
        let key = KeyPair::generate();
        let claims = TokenClaims::new(
            "alice",
            "keel",
            vec!["tenant.read".into()],
            Duration::from_secs(1_000),
            Duration::from_secs(60),
        );
        let token = issue(&key, &claims).expect("issues");
        assert_eq!(read_claims(&token).expect("reads"), claims);
        assert!(BearerToken::new(&token).is_ok());
        assert!(format!("{:?}", BearerToken::new(&token).expect("token")).contains("redacted"));
        let too_long = TokenClaims { exp: claims.iat + TOKEN_LIFETIME_MAX.as_secs() + 1, ..claims };
        assert!(issue(&key, &too_long).is_err());
        assert!(BearerToken::new("").is_err());
        assert!(BearerToken::new("a\u{7f}b").is_err());
        assert!(BearerToken::new(&"a".repeat(TOKEN_BYTES_MAX + 1)).is_err());
    }
}
