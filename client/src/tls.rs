//! TLS to the cluster's client ports.
//!
//! ```text
//!   ClientTls{ca_file, cert_file?, key_file?} ──load (bounded reads, PEM checked)──▶ LoadedTls
//!        └─▶ every https:// endpoint: trust only the CA, verify the host of the URL
//!            against the server's certificate, present the client certificate if given
//! ```
//!
//! Endpoints are `https://` exactly when TLS is configured: a client never
//! mixes plaintext and TLS endpoints, and addresses learned from the cluster
//! (members, `NOT_LEADER` redirects) get the same scheme. Only the cluster CA
//! is trusted; there are no system roots.

use crate::error::ClientError;
use crate::limits::TLS_FILE_BYTES_MAX;
use crate::local_file;
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Where the client's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM file with the cluster CA certificate(s); the only trusted roots.
    pub ca_file: PathBuf,
    /// PEM client certificate, presented when the cluster asks for one
    /// (`tls.require_client_certs`). Given together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl ClientTls {
    /// TLS trusting the CA in `ca_file`, without a client certificate.
    pub fn new(ca_file: impl Into<PathBuf>) -> Self {
        ClientTls { ca_file: ca_file.into(), cert_file: None, key_file: None }
    }

    /// Presents this client certificate and key.
    pub fn with_identity(mut self, cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert_file.into());
        self.key_file = Some(key_file.into());
        self
    }

    /// Checks the shape: a client certificate needs its key and the key its certificate.
    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(invalid("tls.key_file", "is required with tls.cert_file")),
            (None, Some(_)) => Err(invalid("tls.cert_file", "is required with tls.key_file")),
            _ => Ok(()),
        }
    }

    /// Reads the files (each at most [`TLS_FILE_BYTES_MAX`]) and checks that
    /// each holds the PEM section it must hold.
    pub(crate) fn load(&self) -> Result<LoadedTls, ClientError> {
        self.validate()?;
        let ca = read_pem("tls.ca_file", &self.ca_file, &["CERTIFICATE"])?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let (Some(cert_file), Some(key_file)) = (&self.cert_file, &self.key_file) {
            let cert = read_pem("tls.cert_file", cert_file, &["CERTIFICATE"])?;
            let key = read_pem("tls.key_file", key_file, &["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"])?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        Ok(LoadedTls(config))
    }
}

/// The loaded TLS configuration. `Debug` never shows the key.
#[derive(Clone)]
pub(crate) struct LoadedTls(ClientTlsConfig);

impl LoadedTls {
    /// The tonic configuration for one endpoint.
    pub(crate) fn config(&self) -> ClientTlsConfig {
        self.0.clone()
    }
}

impl std::fmt::Debug for LoadedTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("LoadedTls").finish_non_exhaustive()
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ClientError {
    ClientError::ConfigInvalid { field, problem: problem.into() }
}

fn read_pem(field: &'static str, path: &Path, labels: &[&str]) -> Result<Vec<u8>, ClientError> {
    let bytes =
        local_file::read_bounded(path, TLS_FILE_BYTES_MAX).map_err(|error| invalid(field, error.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    if !labels.iter().any(|label| text.contains(&format!("-----BEGIN {label}-----"))) {
        return Err(invalid(field, format!("{} holds no {} PEM section", path.display(), labels[0])));
    }
    Ok(bytes)
}

// Built with certificates from `certs` (the workspace's test build turns the
// feature on: keelctl, keel-chaos and keel-tests use it).
#[cfg(all(test, feature = "certs"))]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_needs_its_key_and_files_need_the_right_pem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = crate::certs::generate_ca("test ca", 2).expect("ca");
        let issued =
            crate::certs::issue(&ca, "client", &["client".to_owned()], crate::certs::Usage::Client, 1).expect("issue");
        let ca_file = dir.path().join("ca.crt");
        let cert_file = dir.path().join("client.crt");
        let key_file = dir.path().join("client.key");
        std::fs::write(&ca_file, &ca.cert_pem).expect("write");
        std::fs::write(&cert_file, &issued.cert_pem).expect("write");
        std::fs::write(&key_file, &issued.key_pem).expect("write");

        assert!(ClientTls::new(&ca_file).load().is_ok());
        assert!(ClientTls::new(&ca_file).with_identity(&cert_file, &key_file).load().is_ok());
        let half = ClientTls { cert_file: Some(cert_file.clone()), ..ClientTls::new(&ca_file) };
        assert!(matches!(half.load(), Err(ClientError::ConfigInvalid { field: "tls.key_file", .. })));
        let swapped = ClientTls::new(&key_file);
        assert!(matches!(swapped.load(), Err(ClientError::ConfigInvalid { field: "tls.ca_file", .. })));
        let missing = ClientTls::new(dir.path().join("absent.crt"));
        assert!(matches!(missing.load(), Err(ClientError::ConfigInvalid { field: "tls.ca_file", .. })));
        assert!(!format!("{:?}", ClientTls::new(&ca_file).load().expect("load")).contains("PRIVATE"));
    }

    fn write_pair(dir: &Path, name: &str, cert_pem: &str, key_pem: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&cert, cert_pem).expect("write");
        std::fs::write(&key, key_pem).expect("write");
        (cert, key)
    }

    #[tokio::test]
    async fn https_endpoints_verify_the_server_against_the_ca_only() {
        use crate::{ClientConfig, KeelClient};
        use std::time::Duration;
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = crate::certs::generate_ca("test ca", 2).expect("ca");
        let server =
            crate::certs::issue(&ca, "node", &["127.0.0.1".to_owned()], crate::certs::Usage::Both, 1).expect("issue");
        let (ca_file, _) = write_pair(dir.path(), "ca", &ca.cert_pem, &ca.key_pem);
        let other = crate::certs::generate_ca("other ca", 2).expect("ca");
        let (other_ca_file, _) = write_pair(dir.path(), "other", &other.cert_pem, &other.key_pem);
        let node = crate::fake_node::FakeNode::start_tls(7, &server.cert_pem, &server.key_pem).await;
        assert!(node.address.starts_with("https://"), "{}", node.address);

        let config = |ca_file: &Path| {
            ClientConfig::new([node.address.clone()])
                .with_call_timeout(Duration::from_secs(5))
                .with_discover_members(false)
                .with_tls(Some(ClientTls::new(ca_file)))
        };
        let served = KeelClient::new(config(&ca_file)).expect("valid").cluster_status().await.expect("served over TLS");
        assert_eq!(served.value.node_id, 7);

        let error =
            KeelClient::new(config(&other_ca_file)).expect("valid").cluster_status().await.expect_err("wrong CA");
        assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");

        let plaintext = ClientConfig::new([node.address.replace("https://", "http://")]).with_tls(config(&ca_file).tls);
        assert!(matches!(KeelClient::new(plaintext), Err(ClientError::EndpointInvalid { .. })));
        let no_ca = ClientConfig::new([node.address.clone()]);
        assert!(matches!(KeelClient::new(no_ca), Err(ClientError::EndpointInvalid { .. })));
    }
}
