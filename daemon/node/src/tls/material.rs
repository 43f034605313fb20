//! `TlsMaterial`: the CA, certificate chain and key, read once and checked.
//!
//! Everything that can be wrong with the files is found here, at start-up,
//! with the configuration key in the error — not later as a handshake failure
//! that a peer reports as "unknown CA".

use super::config::{CA_FILE_KEY, CERT_FILE_KEY, KEY_FILE_KEY};
use super::peer_identity::parse_x509;
use super::{TlsConfig, TlsError};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use tonic::transport::{Certificate, Identity};

/// Bytes read from `tls.ca_file` before it is refused (a bundle of a few CAs).
pub const CA_FILE_BYTES_MAX: u64 = 256 * 1024;
/// Bytes read from `tls.cert_file` before it is refused (a leaf and intermediates).
pub const CERT_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Bytes read from `tls.key_file` before it is refused (an RSA-4096 key is ~3.3 KiB).
pub const KEY_FILE_BYTES_MAX: u64 = 16 * 1024;

const _: () = assert!(KEY_FILE_BYTES_MAX <= CERT_FILE_BYTES_MAX);
const _: () = assert!(CERT_FILE_BYTES_MAX <= CA_FILE_BYTES_MAX);

/// The cluster CA, this node's certificate chain and its private key, read
/// once and checked: every certificate parses, the key belongs to the leaf,
/// the leaf allows `serverAuth` and `clientAuth` and chains to the CA and is
/// within its validity window at load time. `Debug` never shows the key.
#[derive(Clone)]
pub struct TlsMaterial {
    ca_pem: Vec<u8>,
    ca_certificates: Vec<CertificateDer<'static>>,
    cert_pem: Vec<u8>,
    cert_chain: Vec<CertificateDer<'static>>,
    key_pem: Vec<u8>,
    require_client_certs: bool,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TlsMaterial")
            .field("n_ca_certificates", &self.ca_certificates.len())
            .field("n_chain_certificates", &self.cert_chain.len())
            .field("require_client_certs", &self.require_client_certs)
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Reads and checks the three files named by `config`.
    pub fn load(config: &TlsConfig) -> Result<TlsMaterial, TlsError> {
        let ca_pem = read_bounded(CA_FILE_KEY, &config.ca_file, CA_FILE_BYTES_MAX)?;
        let cert_pem = read_bounded(CERT_FILE_KEY, &config.cert_file, CERT_FILE_BYTES_MAX)?;
        let key_pem = read_bounded(KEY_FILE_KEY, &config.key_file, KEY_FILE_BYTES_MAX)?;

        let ca_certificates = parse_certificates(CA_FILE_KEY, &config.ca_file, &ca_pem)?;
        let cert_chain = parse_certificates(CERT_FILE_KEY, &config.cert_file, &cert_pem)?;
        let key = parse_private_key(&config.key_file, &key_pem)?;

        check_key_matches(config, &cert_chain, &key)?;
        check_node_usages(config, &cert_chain)?;
        check_chains_to_ca(config, &ca_certificates, &cert_chain)?;

        Ok(TlsMaterial {
            ca_pem,
            ca_certificates,
            cert_pem,
            cert_chain,
            key_pem,
            require_client_certs: config.require_client_certs,
        })
    }

    /// `tls.require_client_certs`.
    pub fn require_client_certs(&self) -> bool {
        self.require_client_certs
    }

    /// This node's leaf certificate (e.g. to check with [`super::san_hosts`]
    /// that it names this node's advertised peer host).
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        self.cert_chain.first().expect("load refuses a certificate file without certificates")
    }

    /// The CA certificates, DER.
    pub fn ca_certificates_der(&self) -> &[CertificateDer<'static>] {
        &self.ca_certificates
    }

    /// This node's certificate chain and key, for tonic.
    pub fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// The cluster CA, for tonic.
    pub fn ca_certificate(&self) -> Certificate {
        Certificate::from_pem(&self.ca_pem)
    }
}

/// Reads `path`, refusing files larger than `bytes_max`.
fn read_bounded(key: &'static str, path: &Path, bytes_max: u64) -> Result<Vec<u8>, TlsError> {
    let read_error = |source| TlsError::FileRead { key, path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    // One byte past the bound tells "exactly at the bound" from "over it".
    file.take(bytes_max.saturating_add(1)).read_to_end(&mut bytes).map_err(read_error)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > bytes_max {
        return Err(TlsError::FileTooLarge { key, path: path.to_owned(), bytes_max });
    }
    Ok(bytes)
}

/// Every `CERTIFICATE` section of `pem`; at least one, each valid X.509.
fn parse_certificates(key: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::PemInvalid { key, path: path.to_owned(), source })?;
    if certificates.is_empty() {
        return Err(TlsError::PemSectionMissing { key, path: path.to_owned(), expected: "CERTIFICATE" });
    }
    for (index, certificate) in certificates.iter().enumerate() {
        parse_x509(certificate).map_err(|source| TlsError::CertificateInvalid {
            key,
            path: path.to_owned(),
            index,
            source,
        })?;
    }
    Ok(certificates)
}

/// The first private key section of `pem` (what tonic will use too).
fn parse_private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        pem::Error::NoItemsFound => {
            TlsError::PemSectionMissing { key: KEY_FILE_KEY, path: path.to_owned(), expected: "PRIVATE KEY" }
        }
        source => TlsError::PemInvalid { key: KEY_FILE_KEY, path: path.to_owned(), source },
    })
}

fn check_key_matches(
    config: &TlsConfig,
    cert_chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), TlsError> {
    let signing_key = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|source| TlsError::KeyUnsupported { path: config.key_file.clone(), source })?;
    rustls::sign::CertifiedKey::new(cert_chain.to_vec(), signing_key).keys_match().map_err(|source| {
        TlsError::KeyMismatch { key_path: config.key_file.clone(), cert_path: config.cert_file.clone(), source }
    })
}

/// A node certificate both serves (peer and client ports) and dials peers.
/// A certificate without the extendedKeyUsage extension may do both.
fn check_node_usages(config: &TlsConfig, cert_chain: &[CertificateDer<'static>]) -> Result<(), TlsError> {
    let Some(leaf) = cert_chain.first() else {
        return Err(TlsError::PemSectionMissing {
            key: CERT_FILE_KEY,
            path: config.cert_file.clone(),
            expected: "CERTIFICATE",
        });
    };
    let invalid =
        |source| TlsError::CertificateInvalid { key: CERT_FILE_KEY, path: config.cert_file.clone(), index: 0, source };
    let certificate = parse_x509(leaf).map_err(invalid)?;
    let Some(usages) = certificate.extended_key_usage().map_err(invalid)? else {
        return Ok(());
    };
    let usages = usages.value;
    for (usage, is_present) in [("serverAuth", usages.server_auth), ("clientAuth", usages.client_auth)] {
        if !(is_present || usages.any) {
            return Err(TlsError::CertificateUsageMissing { path: config.cert_file.clone(), usage });
        }
    }
    Ok(())
}

/// Verifies the chain exactly as a peer port will: with webpki, for client
/// authentication, against the CA alone, at the current time.
fn check_chains_to_ca(
    config: &TlsConfig,
    ca_certificates: &[CertificateDer<'static>],
    cert_chain: &[CertificateDer<'static>],
) -> Result<(), TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for (index, certificate) in ca_certificates.iter().enumerate() {
        roots.add(certificate.clone()).map_err(|source| TlsError::CaCertificateUnusable {
            path: config.ca_file.clone(),
            index,
            source,
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|source| TlsError::CaUnusable { path: config.ca_file.clone(), source })?;
    let (leaf, intermediates) = cert_chain.split_first().ok_or_else(|| TlsError::PemSectionMissing {
        key: CERT_FILE_KEY,
        path: config.cert_file.clone(),
        expected: "CERTIFICATE",
    })?;
    verifier.verify_client_cert(leaf, intermediates, UnixTime::now()).map(|_| ()).map_err(|source| {
        TlsError::CertificateNotTrusted { cert_path: config.cert_file.clone(), ca_path: config.ca_file.clone(), source }
    })
}
