//! Public key files: what an operator hands to a root key holder.
//!
//! ```text
//! {"key_id": "<32 hex>", "public_key": "<64 hex>"}
//! ```
//!
//! Reading also accepts a secret key file (its `secret_key` field is ignored),
//! so `trust add-key --public` works with either file. The key id must match
//! the public key.

use crate::key_pair::{check_key_id, decode_hex_array};
use crate::limits::KEY_FILE_BYTES_MAX;
use crate::local_error::LocalError;
use crate::local_file::{self, PUBLIC_FILE_MODE};
use crate::signing::{self, PUBLIC_KEY_BYTES};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The on-disk shape of a public key file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicKeyFile {
    key_id: String,
    public_key: String,
    /// Present when a secret key file is read as a public one; never written.
    #[serde(default, rename = "secret_key", skip_serializing)]
    _secret_key: Option<serde::de::IgnoredAny>,
}

/// An Ed25519 public key with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key_id: String,
    bytes: [u8; PUBLIC_KEY_BYTES],
}

impl PublicKey {
    /// The key with these raw bytes.
    pub fn from_bytes(bytes: [u8; PUBLIC_KEY_BYTES]) -> Self {
        PublicKey { key_id: signing::key_id_of(&bytes), bytes }
    }

    /// Its id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The raw key.
    pub fn bytes(&self) -> &[u8; PUBLIC_KEY_BYTES] {
        &self.bytes
    }

    /// The public key file's JSON text (with a trailing newline).
    pub fn to_json(&self) -> String {
        let file =
            PublicKeyFile { key_id: self.key_id.clone(), public_key: hex::encode(self.bytes), _secret_key: None };
        // Serialising a struct of two strings cannot fail.
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Parses a public (or secret) key file's JSON. `source_name` names the
    /// file in errors.
    pub fn from_json(source_name: &str, bytes: &[u8]) -> Result<Self, LocalError> {
        let file: PublicKeyFile = serde_json::from_slice(bytes)
            .map_err(|source| LocalError::JsonInvalid { source_name: source_name.to_owned(), source })?;
        let bytes = decode_hex_array::<PUBLIC_KEY_BYTES>(source_name, "public_key", &file.public_key)?;
        if ed25519_dalek::VerifyingKey::from_bytes(&bytes).is_err() {
            return Err(LocalError::FieldInvalid {
                source_name: source_name.to_owned(),
                field: "public_key".into(),
                problem: "is not a valid Ed25519 public key".into(),
            });
        }
        check_key_id(source_name, &file.key_id, &bytes)?;
        Ok(PublicKey::from_bytes(bytes))
    }

    /// Reads a public (or secret) key file.
    pub fn read_file(path: &Path) -> Result<Self, LocalError> {
        let bytes = local_file::read_bounded(path, KEY_FILE_BYTES_MAX)?;
        PublicKey::from_json(&path.display().to_string(), &bytes)
    }

    /// Writes the public key file at `path`. Never overwrites.
    pub fn write_file(&self, path: &Path) -> Result<(), LocalError> {
        local_file::write(path, self.to_json().as_bytes(), PUBLIC_FILE_MODE, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_pair::KeyPair;

    #[test]
    fn json_round_trips_and_has_no_secret() {
        let key_pair = KeyPair::from_secret_bytes([5u8; 32]);
        let text = key_pair.public().to_json();
        assert!(!text.contains("secret_key"), "{text}");
        assert_eq!(PublicKey::from_json("p.pub", text.as_bytes()).expect("round trip"), key_pair.public());
    }

    #[test]
    fn a_secret_key_file_reads_as_its_public_key() {
        let key_pair = KeyPair::from_secret_bytes([5u8; 32]);
        let public = PublicKey::from_json("p.key", key_pair.to_secret_json().as_bytes()).expect("secret file");
        assert_eq!(public, key_pair.public());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let key_pair = KeyPair::from_secret_bytes([5u8; 32]);
        let text = format!(
            r#"{{"key_id": "{}", "public_key": "{}", "purpose": "root"}}"#,
            key_pair.key_id(),
            hex::encode(key_pair.public_key())
        );
        assert!(matches!(PublicKey::from_json("p.pub", text.as_bytes()), Err(LocalError::JsonInvalid { .. })));
    }
}
