//! Dev mode's credentials: `keeld --dev` enforces tokens like any cluster,
//! and hands its operator an admin token so the quickstart still works.
//!
//! ```text
//!  <data_dir>/dev-root.key   root key (trust_roots)       ─┐ both installed by the
//!  <data_dir>/dev-api.key    API_TOKEN key (created once) ─┘ cluster's BootstrapTrust
//!  <data_dir>/dev-admin.token  JWT {sub: dev-admin, permissions: ["*"], aud: cluster.id},
//!                              signed by dev-api.key; rewritten at every start and every
//!                              DEV_TOKEN_REFRESH_MS, so it never expires under a running node
//! ```

use crate::trust_roots::{self, RootKeyError};
use keel_kernel::limits::TOKEN_LIFETIME_MS_MAX;
use keel_kernel::token::Claims;
use keel_kernel::trust_store::{KeyPurpose, KeySpec};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// File name of the dev API-token key pair inside the data directory.
pub const DEV_API_KEY_FILE: &str = "dev-api.key";
/// File name of the dev admin token inside the data directory.
pub const DEV_ADMIN_TOKEN_FILE: &str = "dev-admin.token";
/// The dev admin token's subject.
pub const DEV_ADMIN_SUBJECT: &str = "dev-admin";
/// How often a running dev node rewrites its admin token (half its lifetime).
pub const DEV_TOKEN_REFRESH_MS: u64 = TOKEN_LIFETIME_MS_MAX / 2;

/// What dev mode installs and writes.
#[derive(Debug)]
pub struct DevCredentials {
    api_key: ed25519_dalek::SigningKey,
    /// The API-token key, for the bootstrap.
    pub api_spec: KeySpec,
    /// Where the admin token is written.
    pub token_path: PathBuf,
    audience: String,
}

impl DevCredentials {
    /// Creates (once) the API-token key beside the dev root key.
    pub fn prepare(data_dir: &Path, audience: &str) -> Result<DevCredentials, RootKeyError> {
        let (api_key, _) = trust_roots::ensure_dev_key_pair(data_dir, DEV_API_KEY_FILE)?;
        let api_spec = KeySpec {
            public_key: api_key.verifying_key().to_bytes(),
            purposes: BTreeSet::from([KeyPurpose::ApiToken]),
            not_before_ms: 0,
            not_after_ms: None,
        };
        Ok(DevCredentials {
            api_key,
            api_spec,
            token_path: data_dir.join(DEV_ADMIN_TOKEN_FILE),
            audience: audience.to_owned(),
        })
    }

    /// Writes a fresh admin token (mode 0600), valid from `now_ms` for
    /// `TOKEN_LIFETIME_MS_MAX`.
    pub fn write_admin_token(&self, now_ms: u64) -> anyhow::Result<()> {
        let now_s = now_ms / 1000;
        let mut jti = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut jti);
        let claims = Claims {
            sub: DEV_ADMIN_SUBJECT.to_owned(),
            tenant: None,
            permissions: vec![keel_kernel::token::WILDCARD_PERMISSION.to_owned()],
            iat: now_s,
            nbf: now_s,
            exp: now_s + TOKEN_LIFETIME_MS_MAX / 1000,
            jti: hex::encode(jti),
            aud: self.audience.clone(),
        };
        let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&self.api_key)
            .map_err(|error| anyhow::anyhow!("encoding the dev API key: {error}"))?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(keel_kernel::signing::key_id_of(&self.api_key.verifying_key().to_bytes()));
        let token = jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()))?;
        write_private(&self.token_path, format!("{token}\n").as_bytes())?;
        Ok(())
    }
}

/// Replaces `path` with `bytes`, readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension("token.partial");
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&partial)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_kernel::{Command, KernelState, Proposal};

    #[test]
    fn the_dev_admin_token_verifies_once_the_cluster_is_bootstrapped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (root, _) = trust_roots::ensure_dev_root_key(dir.path()).expect("root");
        let credentials = DevCredentials::prepare(dir.path(), "keel").expect("prepared");
        let now_ms = 1_700_000_000_000;
        credentials.write_admin_token(now_ms).expect("written");
        let token = std::fs::read_to_string(&credentials.token_path).expect("read");
        let mut state = KernelState::default();
        let at = |command: Command| Proposal {
            leader_time_ms: now_ms,
            semantics_version: keel_kernel::judge::SEMANTICS_VERSION,
            command,
            idempotency_key: None,
            actor: None,
        };
        let api_token_keys = vec![credentials.api_spec.clone()];
        state.apply(1, &at(Command::BootstrapTrust { root_keys: vec![root], api_token_keys })).expect("bootstrap");
        let principal = keel_kernel::token::verify(token.trim(), state.trust(), "keel", now_ms + 1).expect("verifies");
        assert_eq!(principal.actor.sub, DEV_ADMIN_SUBJECT);
        assert!(principal.may("cluster.admin"));
        // Prepared again (a restart): the same key, so the same bootstrap.
        let again = DevCredentials::prepare(dir.path(), "keel").expect("prepared again");
        assert_eq!(again.api_spec, credentials.api_spec);
    }
}
