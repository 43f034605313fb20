//! Root keys for bootstrap: read from `.pub` files, or generated for dev mode.
//!
//! Key files use keelctl's JSON format: a public file holds
//! `{"key_id", "public_key"}` (lowercase hex), a key pair adds `"secret_key"`.
//! The dev root key pair is written once to `<data_dir>/dev-root.key` with
//! mode 0600 so `keelctl` can sign with it.

use keel_kernel::signing::key_id_of;
use keel_kernel::trust_store::{KeyPurpose, KeySpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// File name of the dev root key pair inside the data directory.
pub const DEV_ROOT_KEY_FILE: &str = "dev-root.key";
/// Largest key file read.
const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;

/// A root key problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum RootKeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a key file.
    #[error("{path}: not a Keel key file: {problem}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    key_id: String,
    public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_key: Option<String>,
}

fn root_spec(public_key: [u8; 32]) -> KeySpec {
    KeySpec { public_key, purposes: BTreeSet::from([KeyPurpose::Root]), not_before_ms: 0, not_after_ms: None }
}

/// Reads a `.pub` (or key pair) file as a root key spec valid from 1970 with no expiry.
pub fn read_root_public_key(path: &Path) -> Result<KeySpec, RootKeyError> {
    let malformed = |problem: &str| RootKeyError::Malformed { path: path.to_owned(), problem: problem.to_owned() };
    let io = |source| RootKeyError::Io { path: path.to_owned(), source };
    let length = std::fs::metadata(path).map_err(io)?.len();
    if length > KEY_FILE_BYTES_MAX {
        return Err(malformed("file is too large for a key file"));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let file: KeyFile = serde_json::from_str(&text).map_err(|e| malformed(&e.to_string()))?;
    let bytes = hex::decode(&file.public_key).map_err(|_| malformed("public_key is not hex"))?;
    let public_key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| malformed("public_key is not 32 bytes"))?;
    if key_id_of(&public_key) != file.key_id {
        return Err(malformed("key_id does not match public_key"));
    }
    let spec = root_spec(public_key);
    spec.validate().map_err(|rejection| malformed(&rejection.to_string()))?;
    Ok(spec)
}

/// Returns the dev root key, creating `<data_dir>/dev-root.key` on first use.
pub fn ensure_dev_root_key(data_dir: &Path) -> Result<(KeySpec, PathBuf), RootKeyError> {
    let (signing_key, path) = ensure_dev_key_pair(data_dir, DEV_ROOT_KEY_FILE)?;
    Ok((root_spec(signing_key.verifying_key().to_bytes()), path))
}

/// Reads the secret key of a key pair file.
pub fn read_key_pair(path: &Path) -> Result<ed25519_dalek::SigningKey, RootKeyError> {
    let malformed = |problem: &str| RootKeyError::Malformed { path: path.to_owned(), problem: problem.to_owned() };
    let io = |source| RootKeyError::Io { path: path.to_owned(), source };
    if std::fs::metadata(path).map_err(io)?.len() > KEY_FILE_BYTES_MAX {
        return Err(malformed("file is too large for a key file"));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let file: KeyFile = serde_json::from_str(&text).map_err(|e| malformed(&e.to_string()))?;
    let secret = file.secret_key.ok_or_else(|| malformed("holds no secret_key"))?;
    let bytes = hex::decode(secret).map_err(|_| malformed("secret_key is not hex"))?;
    let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| malformed("secret_key is not 32 bytes"))?;
    let signing_key = ed25519_dalek::SigningKey::from_bytes(&seed);
    if key_id_of(&signing_key.verifying_key().to_bytes()) != file.key_id {
        return Err(malformed("key_id does not match the key"));
    }
    Ok(signing_key)
}

/// The key pair in `<data_dir>/<file_name>`, created (mode 0600) on first use.
pub fn ensure_dev_key_pair(
    data_dir: &Path,
    file_name: &str,
) -> Result<(ed25519_dalek::SigningKey, PathBuf), RootKeyError> {
    let path = data_dir.join(file_name);
    if path.exists() {
        return Ok((read_key_pair(&path)?, path));
    }
    let io = |source| RootKeyError::Io { path: path.clone(), source };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let signing_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let public_key = signing_key.verifying_key().to_bytes();
    let file = KeyFile {
        key_id: key_id_of(&public_key),
        public_key: hex::encode(public_key),
        secret_key: Some(hex::encode(signing_key.to_bytes())),
    };
    let json = serde_json::to_vec_pretty(&file)
        .map_err(|e| RootKeyError::Malformed { path: path.clone(), problem: e.to_string() })?;
    write_private(&path, &json).map_err(io)?;
    Ok((signing_key, path))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_root_key_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (first, path) = ensure_dev_root_key(dir.path()).expect("created");
        let (second, _) = ensure_dev_root_key(dir.path()).expect("read back");
        assert_eq!(first, second);
        assert_eq!(read_root_public_key(&path).expect("parses"), first);
    }

    #[test]
    fn malformed_key_files_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bad.pub");
        std::fs::write(&path, "{\"key_id\":\"00\",\"public_key\":\"zz\"}").expect("write");
        let error = read_root_public_key(&path).expect_err("malformed").to_string();
        assert!(error.contains("bad.pub"), "{error}");
    }
}
