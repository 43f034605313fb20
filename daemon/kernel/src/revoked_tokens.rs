//! [`RevokedTokens`]: the replicated deny-list of capability token ids.
//!
//! ```text
//!  RevokeToken{jti, exp_ms} ──► by_jti[jti] = exp_ms, by_exp ∋ (exp_ms, jti)
//!  every state-changing apply at t ──► drop entries with exp_ms <= t
//!                                      (the token is refused as expired anyway)
//! ```
//!
//! Nothing is stored per issued token: only revoked ids, each until its
//! token's own `exp`. A token lives at most `TOKEN_LIFETIME_MS_MAX`, so the
//! list holds at most the tokens revoked within that time, and
//! [`crate::limits::REVOKED_TOKENS_MAX`] bounds it outright.

use crate::limits::{Limit, TOKEN_LIFETIME_MS_MAX};
use crate::persistent::{Map, Set};
use crate::rejection::Rejection;
use serde::{Deserialize, Serialize};

/// Revoked token ids, with an index by expiry for retention.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedTokens {
    by_jti: Map<String, u64>,
    by_exp: Set<(u64, String)>,
}

impl RevokedTokens {
    /// Whether `jti` is on the list.
    pub fn contains(&self, jti: &str) -> bool {
        self.by_jti.contains_key(jti)
    }

    /// Ids on the list.
    pub fn len(&self) -> usize {
        self.by_jti.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.by_jti.is_empty()
    }

    /// Adds `jti` until `exp_ms`; `Ok(false)` when it is already listed
    /// (the later expiry is kept). Checks everything before it changes
    /// anything.
    pub(crate) fn revoke(&mut self, jti: &str, exp_ms: u64, at_ms: u64) -> Result<bool, Rejection> {
        crate::ids::check_claim("jti", jti)?;
        if exp_ms <= at_ms {
            // Already expired: every member refuses it as expired, so there
            // is nothing to remember.
            return Ok(false);
        }
        // A token lives at most TOKEN_LIFETIME_MS_MAX from its `iat`; an
        // issuer's clock may run ahead, so twice that is allowed, no more.
        if exp_ms > at_ms.saturating_add(2 * TOKEN_LIFETIME_MS_MAX) {
            return Err(Rejection::FieldInvalid {
                field: "exp_ms".into(),
                problem: "is further ahead than any valid token's expiry".into(),
            });
        }
        match self.by_jti.get(jti).copied() {
            Some(listed) if listed >= exp_ms => Ok(false),
            Some(listed) => {
                self.by_exp.remove(&(listed, jti.to_owned()));
                self.by_jti.insert(jti.to_owned(), exp_ms);
                self.by_exp.insert((exp_ms, jti.to_owned()));
                Ok(true)
            }
            None => {
                Limit::RevokedTokens.check(self.by_jti.len() + 1)?;
                self.by_jti.insert(jti.to_owned(), exp_ms);
                self.by_exp.insert((exp_ms, jti.to_owned()));
                Ok(true)
            }
        }
    }

    /// Forgets every id whose token has expired by `at_ms`.
    pub(crate) fn retain(&mut self, at_ms: u64) {
        while let Some((exp_ms, jti)) = self.by_exp.get_min().cloned() {
            if exp_ms > at_ms {
                break;
            }
            self.by_exp.remove(&(exp_ms, jti.clone()));
            self.by_jti.remove(&jti);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_at_their_tokens_exp_and_the_list_is_bounded() {
        let mut list = RevokedTokens::default();
        assert_eq!(list.revoke("a", 2_000, 1_000), Ok(true));
        assert_eq!(list.revoke("a", 1_500, 1_000), Ok(false), "an earlier expiry keeps the later one");
        assert_eq!(list.revoke("b", 3_000, 1_000), Ok(true));
        assert_eq!(list.revoke("c", 900, 1_000), Ok(false), "an expired token is not remembered");
        assert!(list.contains("a") && list.contains("b") && !list.contains("c"));
        list.retain(2_000);
        assert!(!list.contains("a") && list.contains("b"));
        list.retain(3_000);
        assert!(list.is_empty());
        let far = 1_000 + 2 * TOKEN_LIFETIME_MS_MAX + 1;
        assert!(matches!(list.revoke("d", far, 1_000), Err(Rejection::FieldInvalid { .. })));
        assert!(list.revoke("", 2_000, 1_000).is_err());
        assert!(list.revoke(&"x".repeat(crate::limits::TOKEN_CLAIM_BYTES_MAX + 1), 2_000, 1_000).is_err());
    }
}
