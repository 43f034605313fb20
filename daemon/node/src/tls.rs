//! TLS for the client and peer ports: configuration, the certificates and key
//! loaded once at start-up, the tonic configurations built from them, and the
//! check that a peer's certificate names a cluster member.
//!
//! One cluster CA signs every node certificate (and, when client mTLS is on,
//! every client certificate). A node certificate serves *and* dials peers, so
//! it carries both `serverAuth` and `clientAuth` (`keelctl certs issue
//! --usage both`).
//!
//! ```text
//!   [tls] ─▶ TlsConfig::validate / TlsMaterial::load   (read PEM once, bounded; parse; key ↔ cert; cert chains to CA)
//!                      │
//!      ┌───────────────┼──────────────────────────┐
//!      ▼               ▼                          ▼
//!   client_port_server_tls  peer_port_server_tls      peer_client_tls(server_name)
//!   (client certs optional  (client certs REQUIRED,   (present our cert, trust only
//!    or required, CA only)   CA only)                  the CA, verify server name)
//!                            │ handshake ok
//!                            ▼
//!                      member_cert_check (interceptor): leaf SAN = host of some member's peer address
//! ```
//!
//! The handshake proves that a peer holds a certificate from the cluster CA;
//! the interceptor proves that it is a *member*: a certificate the CA issued
//! to a removed node or to a client is refused with `PERMISSION_DENIED`.
//!
//! **No TLS 0-RTT.** rustls leaves early data off unless asked
//! (`ServerConfig::max_early_data_size = 0`, `ClientConfig::enable_early_data =
//! false`) and tonic's configurations expose neither knob, so nothing here can
//! turn it on. 0-RTT data is replayable, which a Raft or API request must
//! never be. `tls::tests::peer_port_never_accepts_early_data` resumes a
//! session with a client that asks for early data and checks it is refused.

mod config;
mod material;
mod peer_identity;
#[cfg(test)]
mod tests;

pub use config::{CA_FILE_KEY, CERT_FILE_KEY, KEY_FILE_KEY, TlsConfig};
pub use material::{CA_FILE_BYTES_MAX, CERT_FILE_BYTES_MAX, KEY_FILE_BYTES_MAX, TlsMaterial};
pub use peer_identity::{
    CLUSTER_MISMATCH, ClusterMismatch, PEER_CERTIFICATE_REQUIRED, PEER_NOT_MEMBER, PeerCertificateError,
    certificate_identities, check_peer_certificates, is_member_certificate, member_cert_check, peer_host, san_hosts,
};

use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{ClientTlsConfig, ServerTlsConfig};

/// Longest a TLS handshake may take, on either side, before the connection is
/// dropped. Without it a peer that stalls mid-handshake holds a connection
/// for ever.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// The client port's TLS: our certificate, and client certificates verified
/// against the cluster CA — demanded when `tls.require_client_certs`,
/// otherwise optional (a client without one is let through to token checks; a
/// client presenting one from another CA is still refused at the handshake).
pub fn client_port_server_tls(material: &TlsMaterial) -> ServerTlsConfig {
    server_tls(material, !material.require_client_certs())
}

/// The peer port's TLS: mutual, always. A peer must present a certificate
/// chaining to the cluster CA or the handshake fails; that the certificate
/// names a member is checked afterwards by [`member_cert_check`].
pub fn peer_port_server_tls(material: &TlsMaterial) -> ServerTlsConfig {
    server_tls(material, false)
}

/// TLS for dialling a peer: present our certificate, trust only the cluster
/// CA, and require the server's certificate to name `server_name` — the host
/// part of the peer's address (see [`peer_host`]; brackets around an IPv6
/// address are removed here).
pub fn peer_client_tls(material: &TlsMaterial, server_name: &str) -> ClientTlsConfig {
    let server_name = server_name.strip_prefix('[').and_then(|name| name.strip_suffix(']')).unwrap_or(server_name);
    ClientTlsConfig::new()
        .ca_certificate(material.ca_certificate())
        .identity(material.identity())
        .domain_name(server_name)
        .timeout(Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS))
}

/// TLS for the shared peer channel pool: like [`peer_client_tls`], but each
/// channel verifies the server against the host of the address it dials (a
/// member's `peer_addr`), so one configuration serves every peer.
pub fn peer_channels_tls(material: &TlsMaterial) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(material.ca_certificate())
        .identity(material.identity())
        .timeout(Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS))
}

fn server_tls(material: &TlsMaterial, is_client_auth_optional: bool) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(material.identity())
        .client_ca_root(material.ca_certificate())
        .client_auth_optional(is_client_auth_optional)
        .timeout(Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS))
}

/// A TLS file or certificate that cannot be used. Errors about configured
/// files name the configuration key first (`tls.cert_file: ...`).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A configured file could not be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    FileRead {
        /// The configuration key, e.g. `tls.cert_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A configured file is larger than that kind of file may be.
    #[error("{key}: {} is larger than {bytes_max} bytes", path.display())]
    FileTooLarge {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// [`CA_FILE_BYTES_MAX`], [`CERT_FILE_BYTES_MAX`] or [`KEY_FILE_BYTES_MAX`].
        bytes_max: u64,
    },
    /// A configured file is not valid PEM.
    #[error("{key}: {} is not valid PEM: {source}", path.display())]
    PemInvalid {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The PEM parser's complaint.
        source: rustls::pki_types::pem::Error,
    },
    /// A configured file holds no section of the kind it must hold.
    #[error("{key}: {} holds no {expected} PEM section", path.display())]
    PemSectionMissing {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// `CERTIFICATE` or `PRIVATE KEY`.
        expected: &'static str,
    },
    /// A certificate in a configured file is not valid X.509.
    #[error("{key}: certificate {index} in {} is not valid X.509: {source}", path.display())]
    CertificateInvalid {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, from 0.
        index: usize,
        /// The X.509 parser's complaint.
        source: x509_parser::error::X509Error,
    },
    /// A certificate in the CA file cannot serve as a trust anchor.
    #[error("{CA_FILE_KEY}: certificate {index} in {} cannot be a trust anchor: {source}", path.display())]
    CaCertificateUnusable {
        /// The CA file.
        path: PathBuf,
        /// Position of the certificate in the file, from 0.
        index: usize,
        /// rustls's complaint.
        source: rustls::Error,
    },
    /// No certificate verifier can be built from the CA file.
    #[error("{CA_FILE_KEY}: {} cannot verify certificates: {source}", path.display())]
    CaUnusable {
        /// The CA file.
        path: PathBuf,
        /// rustls's complaint.
        source: rustls::server::VerifierBuilderError,
    },
    /// The private key is of a type rustls cannot sign with.
    #[error("{KEY_FILE_KEY}: {} cannot be used for signing: {source}", path.display())]
    KeyUnsupported {
        /// The key file.
        path: PathBuf,
        /// rustls's complaint.
        source: rustls::Error,
    },
    /// The private key is not the key of the certificate.
    #[error(
        "{KEY_FILE_KEY}: {} does not belong to the certificate in {} ({CERT_FILE_KEY}): {source}",
        key_path.display(),
        cert_path.display()
    )]
    KeyMismatch {
        /// The key file.
        key_path: PathBuf,
        /// The certificate file.
        cert_path: PathBuf,
        /// rustls's complaint.
        source: rustls::Error,
    },
    /// The node's certificate does not verify against the cluster CA (wrong
    /// CA, expired, not yet valid, or not usable for client authentication).
    #[error(
        "{CERT_FILE_KEY}: {} is not a valid node certificate from the CA in {} ({CA_FILE_KEY}): {source}",
        cert_path.display(),
        ca_path.display()
    )]
    CertificateNotTrusted {
        /// The certificate file.
        cert_path: PathBuf,
        /// The CA file.
        ca_path: PathBuf,
        /// The verifier's complaint.
        source: rustls::Error,
    },
    /// The node's certificate restricts its extended key usage and leaves
    /// out one a node needs.
    #[error(
        "{CERT_FILE_KEY}: {} lacks extended key usage {usage}; a node certificate needs serverAuth and clientAuth",
        path.display()
    )]
    CertificateUsageMissing {
        /// The certificate file.
        path: PathBuf,
        /// `serverAuth` or `clientAuth`.
        usage: &'static str,
    },
    /// DER bytes handed to [`san_hosts`] are not a valid X.509 certificate.
    #[error("certificate is not valid X.509: {source}")]
    CertificateDerInvalid {
        /// The X.509 parser's complaint.
        source: x509_parser::error::X509Error,
    },
    /// A peer address has no host part.
    #[error("peer address {address:?} has no host part")]
    AddressHostMissing {
        /// The address as given.
        address: String,
    },
}
