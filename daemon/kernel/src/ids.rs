//! Validated names. A value of these types has passed [`Name::parse`], so code
//! past the edge never re-checks shape.
//!
//! Names are 1..=[`NAME_BYTES_MAX`] bytes of lowercase ASCII letters, digits,
//! `-`, `_` and `.`, starting with a letter or digit. No `/`, so they embed in
//! resource names (`engines/{name}`) without escaping.

use crate::Rejection;
use crate::limits::{Limit, NAME_BYTES_MAX};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A validated name (engine, tenant, region, zone, action, capability).
///
/// Shared, not owned: a clone is a reference count, because names are the
/// keys of the state's persistent maps, and a write after a publish copies
/// the tree nodes on its path — keys included. Encoded exactly as a string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Name(Arc<str>);

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl Name {
    /// Validates `value` as a name; `field` names the request field in the rejection.
    pub fn parse(field: &'static str, value: &str) -> Result<Name, Rejection> {
        if value.is_empty() {
            return Err(Rejection::FieldRequired { field: field.into() });
        }
        if value.len() > NAME_BYTES_MAX {
            return Err(Rejection::LimitExceeded { limit: Limit::NameBytes, actual: value.len() });
        }
        let mut chars = value.chars();
        let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_well =
            value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.');
        if !starts_well || !rest_well {
            return Err(Rejection::FieldInvalid {
                field: field.into(),
                problem: "must be lowercase letters, digits, '-', '_' or '.', starting with a letter or digit".into(),
            });
        }
        Ok(Name(Arc::from(value)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = Rejection;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Name::parse("name", &value)
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.0.to_string()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a free-text field against [`crate::limits::DESCRIPTION_BYTES_MAX`].
pub fn check_description(text: &str) -> Result<(), Rejection> {
    Limit::DescriptionBytes.check(text.len())
}

/// Checks a token claim (`sub`, `jti`, a permission): 1 to
/// [`crate::limits::TOKEN_CLAIM_BYTES_MAX`] bytes, no control characters.
pub fn check_claim(field: &'static str, value: &str) -> Result<(), Rejection> {
    if value.is_empty() {
        return Err(Rejection::FieldRequired { field: field.into() });
    }
    Limit::TokenClaimBytes.check(value.len())?;
    if value.chars().any(char::is_control) {
        return Err(Rejection::FieldInvalid {
            field: field.into(),
            problem: "must not contain control characters".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_documented_alphabet_only() {
        for good in ["a", "billing-engine", "0x.v2_beta", &"a".repeat(NAME_BYTES_MAX)] {
            assert!(Name::parse("name", good).is_ok(), "{good}");
        }
        for bad in ["", "-lead", "Upper", "has/slash", "space d", "é", &"a".repeat(NAME_BYTES_MAX + 1)] {
            assert!(Name::parse("name", bad).is_err(), "{bad}");
        }
    }
}
