//! Ed25519 key pairs and their secret key files.
//!
//! A secret key file is JSON, created with mode 0600 and never overwritten:
//!
//! ```text
//! {"key_id": "<32 hex>", "public_key": "<64 hex>", "secret_key": "<64 hex>"}
//! ```
//!
//! `secret_key` is the 32-byte Ed25519 seed. On reading, the public key and
//! key id are derived from the seed again and must match the file, so a file
//! that was edited or mixed up is refused rather than used to sign.

use crate::limits::KEY_FILE_BYTES_MAX;
use crate::local_error::LocalError;
use crate::local_file::{self, SECRET_FILE_MODE};
use crate::public_key::PublicKey;
use crate::signing::{self, PUBLIC_KEY_BYTES};
use ed25519_dalek::Signer;
use keel_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Bytes of an Ed25519 secret seed.
pub const SECRET_KEY_BYTES: usize = 32;
/// File name suffix of a secret key file written by [`KeyPair::write_files`].
pub const SECRET_FILE_SUFFIX: &str = ".key";
/// File name suffix of a public key file written by [`KeyPair::write_files`].
pub const PUBLIC_FILE_SUFFIX: &str = ".pub";

/// The on-disk shape of a secret key file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretKeyFile {
    key_id: String,
    public_key: String,
    secret_key: String,
}

/// An Ed25519 signing key. `Debug` shows only the key id.
#[derive(Clone)]
pub struct KeyPair {
    signing_key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("KeyPair").field("key_id", &self.key_id()).finish_non_exhaustive()
    }
}

/// Where [`KeyPair::write_files`] put the two files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFilePaths {
    /// `<prefix>.key`, mode 0600.
    pub secret: PathBuf,
    /// `<prefix>.pub`.
    pub public: PathBuf,
}

impl KeyPair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        KeyPair { signing_key: ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng) }
    }

    /// The key with this 32-byte seed.
    pub fn from_secret_bytes(secret: [u8; SECRET_KEY_BYTES]) -> Self {
        KeyPair { signing_key: ed25519_dalek::SigningKey::from_bytes(&secret) }
    }

    /// The raw public key.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_BYTES] {
        self.signing_key.verifying_key().to_bytes()
    }

    /// The public half with its id.
    pub fn public(&self) -> PublicKey {
        PublicKey::from_bytes(self.public_key())
    }

    /// The key id (see [`signing::key_id_of`]).
    pub fn key_id(&self) -> String {
        signing::key_id_of(&self.public_key())
    }

    /// The key as PKCS #8 DER (what JWT libraries take).
    pub fn to_pkcs8_der(&self) -> Result<ed25519_dalek::pkcs8::SecretDocument, ed25519_dalek::pkcs8::Error> {
        ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&self.signing_key)
    }

    /// An Ed25519 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; signing::SIGNATURE_BYTES] {
        self.signing_key.sign(message).to_bytes()
    }

    /// A signature over `message` in wire form, named by this key's id.
    pub fn sign_to_proto(&self, message: &[u8]) -> pb::Signature {
        pb::Signature { key_id: self.key_id(), signature: self.sign(message).to_vec() }
    }

    /// The secret key file's JSON text (with a trailing newline).
    pub fn to_secret_json(&self) -> String {
        let file = SecretKeyFile {
            key_id: self.key_id(),
            public_key: hex::encode(self.public_key()),
            secret_key: hex::encode(self.signing_key.to_bytes()),
        };
        // Serialising a struct of three strings cannot fail.
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Parses a secret key file's JSON. `source_name` names the file in errors.
    pub fn from_secret_json(source_name: &str, bytes: &[u8]) -> Result<Self, LocalError> {
        let file: SecretKeyFile = serde_json::from_slice(bytes)
            .map_err(|source| LocalError::JsonInvalid { source_name: source_name.to_owned(), source })?;
        let secret = decode_hex_array::<SECRET_KEY_BYTES>(source_name, "secret_key", &file.secret_key)?;
        let key_pair = KeyPair::from_secret_bytes(secret);
        let public_key = decode_hex_array::<PUBLIC_KEY_BYTES>(source_name, "public_key", &file.public_key)?;
        if public_key != key_pair.public_key() {
            return Err(LocalError::FieldInvalid {
                source_name: source_name.to_owned(),
                field: "public_key".into(),
                problem: "does not belong to secret_key".into(),
            });
        }
        check_key_id(source_name, &file.key_id, &public_key)?;
        Ok(key_pair)
    }

    /// Reads a secret key file.
    pub fn read_secret_file(path: &Path) -> Result<Self, LocalError> {
        let bytes = local_file::read_bounded(path, KEY_FILE_BYTES_MAX)?;
        KeyPair::from_secret_json(&path.display().to_string(), &bytes)
    }

    /// Writes the secret key file at `path` with mode 0600. Never overwrites.
    pub fn write_secret_file(&self, path: &Path) -> Result<(), LocalError> {
        local_file::write(path, self.to_secret_json().as_bytes(), SECRET_FILE_MODE, true)
    }

    /// Writes `<prefix>.key` (secret, 0600) and `<prefix>.pub`. Refuses to
    /// overwrite either file.
    pub fn write_files(&self, prefix: &Path) -> Result<KeyFilePaths, LocalError> {
        let paths = KeyFilePaths {
            secret: with_suffix(prefix, SECRET_FILE_SUFFIX),
            public: with_suffix(prefix, PUBLIC_FILE_SUFFIX),
        };
        // Check both before writing either, so a clash leaves nothing behind.
        for path in [&paths.secret, &paths.public] {
            if path.exists() {
                return Err(LocalError::FileWrite {
                    path: path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "file exists; not overwriting a key",
                    ),
                });
            }
        }
        self.write_secret_file(&paths.secret)?;
        self.public().write_file(&paths.public)?;
        Ok(paths)
    }
}

/// `prefix` with `suffix` appended to its file name (not replacing an extension).
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Decodes exactly `N` bytes of hex (either case) from field `field`.
pub(crate) fn decode_hex_array<const N: usize>(
    source_name: &str,
    field: &str,
    value: &str,
) -> Result<[u8; N], LocalError> {
    let invalid = |problem: String| LocalError::FieldInvalid {
        source_name: source_name.to_owned(),
        field: field.to_owned(),
        problem,
    };
    let bytes = hex::decode(value).map_err(|error| invalid(format!("is not hex: {error}")))?;
    let length = bytes.len();
    <[u8; N]>::try_from(bytes).map_err(|_| invalid(format!("has {length} bytes; expected {N}")))
}

/// Checks that a file's `key_id` is the id of its public key.
pub(crate) fn check_key_id(
    source_name: &str,
    key_id: &str,
    public_key: &[u8; PUBLIC_KEY_BYTES],
) -> Result<(), LocalError> {
    let expected = signing::key_id_of(public_key);
    if key_id.to_ascii_lowercase() != expected {
        return Err(LocalError::FieldInvalid {
            source_name: source_name.to_owned(),
            field: "key_id".into(),
            problem: format!("is {key_id:?} but the public key's id is {expected:?}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_json_round_trips() {
        let key_pair = KeyPair::generate();
        let parsed = KeyPair::from_secret_json("k.key", key_pair.to_secret_json().as_bytes()).expect("round trip");
        assert_eq!(parsed.public_key(), key_pair.public_key());
        assert_eq!(parsed.key_id(), key_pair.key_id());
    }

    #[test]
    fn files_round_trip_with_secret_mode_0600() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key_pair = KeyPair::from_secret_bytes([3u8; 32]);
        let paths = key_pair.write_files(&dir.path().join("publisher")).expect("write");
        assert_eq!(paths.secret, dir.path().join("publisher.key"));
        assert_eq!(paths.public, dir.path().join("publisher.pub"));
        let secret = KeyPair::read_secret_file(&paths.secret).expect("read secret");
        assert_eq!(secret.key_id(), key_pair.key_id());
        let public = PublicKey::read_file(&paths.public).expect("read public");
        assert_eq!(public.key_id(), key_pair.key_id());
        assert_eq!(public.bytes(), &key_pair.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&paths.secret).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(key_pair.write_files(&dir.path().join("publisher")).is_err(), "must not overwrite");
    }

    #[test]
    fn secret_file_with_foreign_public_key_is_refused() {
        let key_pair = KeyPair::from_secret_bytes([3u8; 32]);
        let other = KeyPair::from_secret_bytes([4u8; 32]);
        let text =
            key_pair.to_secret_json().replace(&hex::encode(key_pair.public_key()), &hex::encode(other.public_key()));
        let error = KeyPair::from_secret_json("k.key", text.as_bytes()).expect_err("mismatch");
        assert!(matches!(&error, LocalError::FieldInvalid { field, .. } if field == "public_key"), "{error}");
    }

    #[test]
    fn secret_file_with_wrong_key_id_is_refused() {
        let key_pair = KeyPair::from_secret_bytes([3u8; 32]);
        let text = key_pair.to_secret_json().replace(&key_pair.key_id(), "00112233445566778899aabbccddeeff");
        let error = KeyPair::from_secret_json("k.key", text.as_bytes()).expect_err("mismatch");
        assert!(matches!(&error, LocalError::FieldInvalid { field, .. } if field == "key_id"), "{error}");
    }

    #[test]
    fn short_secret_is_refused_with_the_field_named() {
        let text = r#"{"key_id": "00", "public_key": "00", "secret_key": "abcd"}"#;
        let error = KeyPair::from_secret_json("k.key", text.as_bytes()).expect_err("short");
        assert_eq!(error.to_string(), "k.key: field `secret_key` has 2 bytes; expected 32");
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let key_pair = KeyPair::from_secret_bytes([9u8; 32]);
        let debug = format!("{key_pair:?}");
        assert!(debug.contains(&key_pair.key_id()));
        assert!(!debug.contains(&hex::encode([9u8; 32])));
    }
}
