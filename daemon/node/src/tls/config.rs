//! `TlsConfig`: where the cluster CA, this node's certificate and its key
//! live, and whether the client port demands client certificates.

use super::{TlsError, TlsMaterial};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Configuration key of [`TlsConfig::ca_file`], as errors name it.
pub const CA_FILE_KEY: &str = "tls.ca_file";
/// Configuration key of [`TlsConfig::cert_file`], as errors name it.
pub const CERT_FILE_KEY: &str = "tls.cert_file";
/// Configuration key of [`TlsConfig::key_file`], as errors name it.
pub const KEY_FILE_KEY: &str = "tls.key_file";

/// TLS settings of a node, embedded as the `[tls]` table of the node
/// configuration (errors therefore name keys as `tls.<field>`):
///
/// ```toml
/// [tls]
/// ca_file = "/etc/keel/tls/ca.crt"
/// cert_file = "/etc/keel/tls/node-1.crt"
/// key_file = "/etc/keel/tls/node-1.key"
/// require_client_certs = false
/// ```
///
/// The same certificate serves the client port and the peer port and is
/// presented when dialling peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA, PEM (one or more certificates). Peers, and clients
    /// presenting certificates, must chain to it; it is the only trust anchor.
    pub ca_file: PathBuf,
    /// This node's certificate chain, PEM, leaf first. Its subjectAltNames
    /// must include the host part of this node's advertised peer address.
    pub cert_file: PathBuf,
    /// This node's private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub key_file: PathBuf,
    /// Whether the client port demands a client certificate from the CA.
    /// When false a client may still present one (it is then verified).
    #[serde(default)]
    pub require_client_certs: bool,
}

impl TlsConfig {
    /// Checks that every file exists, is within its size bound and parses,
    /// that the key belongs to the certificate and that the certificate
    /// chains to the CA. Errors name the key (`tls.cert_file: ...`).
    pub fn validate(&self) -> Result<(), TlsError> {
        TlsMaterial::load(self).map(|_| ())
    }
}
