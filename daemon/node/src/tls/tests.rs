//! TLS against real tonic servers on loopback, with certificates made here.
//!
//! Each test generates its CAs with `rcgen`, writes the files a node would be
//! configured with, and serves `grpc.health.v1` on `127.0.0.1:0`. The peer
//! server's interceptor counts its calls, so "refused at the handshake" is
//! checked as "the interceptor never ran". Every wait is bounded.

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Endpoint, Identity, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tonic_types::StatusExt;

/// Bound on every connect, call and read in these tests.
const WAIT_MS: u64 = 10_000;
const SERVER_HOST: &str = "node-1.keel.test";
const MEMBER_HOST: &str = "node-2.keel.test";

fn wait() -> Duration {
    Duration::from_millis(WAIT_MS)
}

// ---------------------------------------------------------------- certificates

struct TestCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

const BOTH: &[ExtendedKeyUsagePurpose] = &[ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];

impl TestCa {
    fn new(common_name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa { cert_pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn issue(&self, sans: &[&str], usages: &[ExtendedKeyUsagePurpose]) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|san| (*san).to_owned()).collect::<Vec<_>>()).expect("SANs");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, sans.first().copied().unwrap_or("keel"));
        params.extended_key_usages = usages.to_vec();
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }
}

fn write_config(dir: &Path, name: &str, ca: &TestCa, leaf: &Leaf) -> TlsConfig {
    let config = TlsConfig {
        ca_file: dir.join(format!("{name}-ca.crt")),
        cert_file: dir.join(format!("{name}.crt")),
        key_file: dir.join(format!("{name}.key")),
        require_client_certs: false,
    };
    std::fs::write(&config.ca_file, &ca.cert_pem).expect("write CA");
    std::fs::write(&config.cert_file, &leaf.cert_pem).expect("write cert");
    std::fs::write(&config.key_file, &leaf.key_pem).expect("write key");
    config
}

fn load(dir: &Path, name: &str, ca: &TestCa, leaf: &Leaf) -> TlsMaterial {
    TlsMaterial::load(&write_config(dir, name, ca, leaf)).expect("load TLS material")
}

fn members() -> BTreeSet<String> {
    [SERVER_HOST, MEMBER_HOST].into_iter().map(str::to_owned).collect()
}

/// A client TLS config made by hand, for clients a node would never be.
fn raw_client_tls(trusted_ca: &TestCa, presented: Option<&Leaf>) -> tonic::transport::ClientTlsConfig {
    let config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&trusted_ca.cert_pem))
        .domain_name(SERVER_HOST)
        .timeout(wait());
    match presented {
        Some(leaf) => config.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem)),
        None => config,
    }
}

// ---------------------------------------------------------------- servers

struct RunningServer {
    addr: SocketAddr,
    n_intercepted: Arc<AtomicUsize>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let result = tokio::time::timeout(wait(), self.task).await.expect("server stops in time");
        result.expect("server task").expect("server ran without error");
    }
}

/// Serves health with `tls`; with `member_hosts`, behind [`member_cert_check`].
async fn serve(tls: tonic::transport::ServerTlsConfig, member_hosts: Option<BTreeSet<String>>) -> RunningServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (reporter, _) = tonic_health::server::health_reporter();
    let n_intercepted = Arc::new(AtomicUsize::new(0));
    let counter = n_intercepted.clone();
    let interceptor = move |request: tonic::Request<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        if let Some(member_hosts) = &member_hosts {
            member_cert_check(&request, member_hosts)?;
        }
        Ok(request)
    };
    let health = HealthServer::with_interceptor(HealthService::from_health_reporter(reporter), interceptor);
    let (shutdown, shutdown_received) = oneshot::channel::<()>();
    let router = Server::builder().tls_config(tls).expect("server TLS config").add_service(health);
    let task = tokio::spawn(router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
        let _ = shutdown_received.await;
    }));
    RunningServer { addr, n_intercepted, shutdown: Some(shutdown), task }
}

#[derive(Debug)]
enum Outcome {
    Serving,
    ConnectFailed(String),
    Refused(tonic::Status),
}

async fn check_health(addr: SocketAddr, tls: tonic::transport::ClientTlsConfig) -> Outcome {
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint URI")
        .tls_config(tls)
        .expect("client TLS config")
        .connect_timeout(wait())
        .timeout(wait());
    let channel = match tokio::time::timeout(wait(), endpoint.connect()).await.expect("connect is bounded") {
        Ok(channel) => channel,
        Err(error) => return Outcome::ConnectFailed(error_chain(&error)),
    };
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest { service: String::new() });
    match tokio::time::timeout(wait(), call).await.expect("call is bounded") {
        Ok(response) if response.get_ref().status() == ServingStatus::Serving => Outcome::Serving,
        Ok(response) => panic!("unexpected health answer {:?}", response.get_ref()),
        Err(status) => Outcome::Refused(status),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Refused before any request reached the interceptor: either the client
/// gave up in its handshake or the server's alert broke the first call.
fn assert_refused_at_handshake(outcome: &Outcome, server: &RunningServer, n_intercepted_before: usize) {
    match outcome {
        Outcome::ConnectFailed(_) => {}
        // tonic reports a TLS alert on a call as UNKNOWN "transport error"
        // (e.g. "received fatal alert: UnknownCA"), a dropped connection as
        // UNAVAILABLE; never as an answer from the service.
        Outcome::Refused(status) => assert!(
            matches!(status.code(), tonic::Code::Unknown | tonic::Code::Unavailable),
            "expected a transport failure, got {status:?}"
        ),
        Outcome::Serving => panic!("the handshake should have failed"),
    }
    assert_eq!(server.n_intercepted.load(Ordering::SeqCst), n_intercepted_before, "no request may reach the service");
}

struct PeerFixture {
    _dir: tempfile::TempDir,
    ca: TestCa,
    member: TlsMaterial,
    server: RunningServer,
}

async fn peer_fixture() -> PeerFixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("keel test cluster CA");
    let server_material = load(dir.path(), "server", &ca, &ca.issue(&[SERVER_HOST, "127.0.0.1"], BOTH));
    let member = load(dir.path(), "member", &ca, &ca.issue(&[MEMBER_HOST], BOTH));
    let server = serve(peer_port_server_tls(&server_material), Some(members())).await;
    PeerFixture { _dir: dir, ca, member, server }
}

// ---------------------------------------------------------------- peer port

#[tokio::test]
async fn a_member_with_a_certificate_from_the_cluster_ca_is_served() {
    let fixture = peer_fixture().await;
    let outcome = check_health(fixture.server.addr, peer_client_tls(&fixture.member, SERVER_HOST)).await;
    assert!(matches!(outcome, Outcome::Serving), "{outcome:?}");
    assert_eq!(fixture.server.n_intercepted.load(Ordering::SeqCst), 1);
    fixture.server.stop().await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_at_the_handshake() {
    let fixture = peer_fixture().await;
    let other_ca = TestCa::new("someone else's CA");
    let impostor = other_ca.issue(&[MEMBER_HOST], BOTH);
    let outcome = check_health(fixture.server.addr, raw_client_tls(&fixture.ca, Some(&impostor))).await;
    assert_refused_at_handshake(&outcome, &fixture.server, 0);
    fixture.server.stop().await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_at_the_handshake() {
    let fixture = peer_fixture().await;
    let outcome = check_health(fixture.server.addr, raw_client_tls(&fixture.ca, None)).await;
    assert_refused_at_handshake(&outcome, &fixture.server, 0);
    fixture.server.stop().await;
}

#[tokio::test]
async fn a_cluster_ca_certificate_that_names_no_member_gets_permission_denied() {
    let fixture = peer_fixture().await;
    let stranger = fixture.ca.issue(&["intruder.keel.test", "10.9.9.9"], BOTH);
    let outcome = check_health(fixture.server.addr, raw_client_tls(&fixture.ca, Some(&stranger))).await;
    let Outcome::Refused(status) = outcome else { panic!("expected PERMISSION_DENIED, got {outcome:?}") };
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let error_info = status.get_details_error_info().expect("ErrorInfo detail");
    assert_eq!(error_info.reason, PEER_NOT_MEMBER);
    assert_eq!(error_info.domain, "keel");
    assert_eq!(error_info.metadata.get("sans").map(String::as_str), Some("intruder.keel.test,10.9.9.9"));
    fixture.server.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_cluster_ca_cannot_connect() {
    let fixture = peer_fixture().await;
    let other_ca = TestCa::new("someone else's CA");
    let member_leaf = fixture.ca.issue(&[MEMBER_HOST], BOTH);
    let outcome = check_health(fixture.server.addr, raw_client_tls(&other_ca, Some(&member_leaf))).await;
    let Outcome::ConnectFailed(error) = &outcome else { panic!("expected the client to refuse, got {outcome:?}") };
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert_eq!(fixture.server.n_intercepted.load(Ordering::SeqCst), 0);
    fixture.server.stop().await;
}

#[tokio::test]
async fn a_peer_client_refuses_a_server_whose_certificate_names_another_host() {
    let fixture = peer_fixture().await;
    let outcome = check_health(fixture.server.addr, peer_client_tls(&fixture.member, "node-9.keel.test")).await;
    let Outcome::ConnectFailed(error) = &outcome else { panic!("expected the client to refuse, got {outcome:?}") };
    assert!(error.contains("not valid for name"), "{error}");
    fixture.server.stop().await;
}

#[tokio::test]
async fn peer_port_never_accepts_early_data() {
    let fixture = peer_fixture().await;
    let leaf = fixture.ca.issue(&[MEMBER_HOST], BOTH);
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(fixture.ca.cert_pem.as_bytes()) {
        roots.add(certificate.expect("CA PEM")).expect("CA is a trust anchor");
    }
    let chain =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().expect("leaf PEM");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client identity");
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.enable_early_data = true;
    let config = Arc::new(config);
    let server_name = ServerName::try_from(SERVER_HOST).expect("server name").to_owned();
    let addr = fixture.server.addr;
    // Plain blocking rustls: it shows, before the handshake, whether the
    // cached ticket would let the client send 0-RTT data.
    let handshakes = tokio::task::spawn_blocking(move || {
        // The HTTP/2 client preface and an empty SETTINGS frame; the server
        // answers with its own SETTINGS, and reading that takes in the tickets.
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        for attempt in ["full handshake", "resumption"] {
            let mut tcp = std::net::TcpStream::connect_timeout(&addr, wait()).expect("TCP connect");
            tcp.set_read_timeout(Some(wait())).expect("read timeout");
            tcp.set_write_timeout(Some(wait())).expect("write timeout");
            let mut connection =
                rustls::ClientConnection::new(config.clone(), server_name.clone()).expect("client connection");
            assert!(connection.early_data().is_none(), "{attempt}: the server must never offer 0-RTT");
            let mut stream = rustls::Stream::new(&mut connection, &mut tcp);
            stream.write_all(&preface).expect("handshake and preface");
            let mut buffer = [0u8; 256];
            let n_read = stream.read(&mut buffer).expect("server settings");
            assert!(n_read > 0, "{attempt}: the server closed the connection");
            if attempt == "resumption" {
                assert_eq!(connection.handshake_kind(), Some(rustls::HandshakeKind::Resumed), "not resumed");
            }
            assert!(!connection.is_early_data_accepted(), "{attempt}: early data must never be accepted");
        }
    });
    tokio::time::timeout(wait() * 3, handshakes).await.expect("handshakes are bounded").expect("handshakes");
    fixture.server.stop().await;
}

// ---------------------------------------------------------------- client port

#[tokio::test]
async fn client_port_makes_client_certificates_optional_or_required_per_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("keel test cluster CA");
    let mut config = write_config(dir.path(), "server", &ca, &ca.issue(&[SERVER_HOST], BOTH));
    let client_leaf = ca.issue(&["operator"], &[ExtendedKeyUsagePurpose::ClientAuth]);
    let other_ca = TestCa::new("someone else's CA");
    let impostor = other_ca.issue(&["operator"], &[ExtendedKeyUsagePurpose::ClientAuth]);

    let optional = serve(client_port_server_tls(&TlsMaterial::load(&config).expect("load")), None).await;
    let outcome = check_health(optional.addr, raw_client_tls(&ca, None)).await;
    assert!(matches!(outcome, Outcome::Serving), "no certificate is fine when optional: {outcome:?}");
    let outcome = check_health(optional.addr, raw_client_tls(&ca, Some(&client_leaf))).await;
    assert!(matches!(outcome, Outcome::Serving), "a CA certificate is fine: {outcome:?}");
    let outcome = check_health(optional.addr, raw_client_tls(&ca, Some(&impostor))).await;
    assert_refused_at_handshake(&outcome, &optional, 2);
    optional.stop().await;

    config.require_client_certs = true;
    let required = serve(client_port_server_tls(&TlsMaterial::load(&config).expect("load")), None).await;
    let outcome = check_health(required.addr, raw_client_tls(&ca, None)).await;
    assert_refused_at_handshake(&outcome, &required, 0);
    let outcome = check_health(required.addr, raw_client_tls(&ca, Some(&client_leaf))).await;
    assert!(matches!(outcome, Outcome::Serving), "{outcome:?}");
    required.stop().await;
}

// ---------------------------------------------------------------- loading and validation

#[test]
fn validate_accepts_good_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("ca");
    let config = write_config(dir.path(), "node", &ca, &ca.issue(&[SERVER_HOST], BOTH));
    config.validate().expect("valid");
    let material = TlsMaterial::load(&config).expect("load");
    assert_eq!(san_hosts(material.certificate_der()).expect("SANs"), [SERVER_HOST]);
    assert_eq!(material.ca_certificates_der().len(), 1);
    assert!(!format!("{material:?}").contains("PRIVATE"), "Debug must not show the key");
}

#[test]
fn validate_names_the_key_of_a_missing_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("ca");
    let mut config = write_config(dir.path(), "node", &ca, &ca.issue(&[SERVER_HOST], BOTH));
    config.cert_file = dir.path().join("absent.crt");
    let error = config.validate().expect_err("missing file").to_string();
    assert!(error.starts_with("tls.cert_file: cannot read "), "{error}");
    assert!(error.contains("absent.crt"), "{error}");
}

#[test]
fn validate_refuses_files_over_their_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("ca");
    let config = write_config(dir.path(), "node", &ca, &ca.issue(&[SERVER_HOST], BOTH));
    let padding = vec![b'\n'; usize::try_from(KEY_FILE_BYTES_MAX).expect("fits") + 1];
    std::fs::write(&config.key_file, padding).expect("write");
    let error = config.validate().expect_err("too large");
    assert!(matches!(error, TlsError::FileTooLarge { key: "tls.key_file", bytes_max: KEY_FILE_BYTES_MAX, .. }));
}

#[test]
fn validate_refuses_files_without_pem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("ca");
    let config = write_config(dir.path(), "node", &ca, &ca.issue(&[SERVER_HOST], BOTH));
    std::fs::write(&config.ca_file, "not a certificate\n").expect("write");
    let error = config.validate().expect_err("no PEM").to_string();
    assert!(error.starts_with("tls.ca_file: ") && error.contains("CERTIFICATE"), "{error}");

    let config = write_config(dir.path(), "node2", &ca, &ca.issue(&[SERVER_HOST], BOTH));
    std::fs::write(&config.key_file, &ca.cert_pem).expect("write");
    let error = config.validate().expect_err("no key").to_string();
    assert!(error.starts_with("tls.key_file: ") && error.contains("PRIVATE KEY"), "{error}");

    let config = write_config(dir.path(), "node3", &ca, &ca.issue(&[SERVER_HOST], BOTH));
    std::fs::write(&config.cert_file, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").expect("write");
    let error = config.validate().expect_err("not X.509").to_string();
    assert!(error.starts_with("tls.cert_file: certificate 0 in "), "{error}");
}

#[test]
fn validate_refuses_a_key_that_is_not_the_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("ca");
    let config = write_config(dir.path(), "node", &ca, &ca.issue(&[SERVER_HOST], BOTH));
    std::fs::write(&config.key_file, ca.issue(&[SERVER_HOST], BOTH).key_pem).expect("write");
    let error = config.validate().expect_err("mismatch");
    assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
    assert!(error.to_string().starts_with("tls.key_file: "), "{error}");
}

#[test]
fn validate_refuses_a_certificate_from_another_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("ca");
    let other_ca = TestCa::new("other");
    let config = write_config(dir.path(), "node", &ca, &other_ca.issue(&[SERVER_HOST], BOTH));
    let error = config.validate().expect_err("wrong CA");
    assert!(matches!(error, TlsError::CertificateNotTrusted { .. }), "{error}");
    assert!(error.to_string().starts_with("tls.cert_file: "), "{error}");
}

#[test]
fn validate_refuses_a_node_certificate_that_cannot_both_serve_and_dial() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("ca");
    for (usages, missing) in [
        (&[ExtendedKeyUsagePurpose::ServerAuth][..], "clientAuth"),
        (&[ExtendedKeyUsagePurpose::ClientAuth][..], "serverAuth"),
    ] {
        let config = write_config(dir.path(), missing, &ca, &ca.issue(&[SERVER_HOST], usages));
        let error = config.validate().expect_err("usage missing");
        assert!(matches!(error, TlsError::CertificateUsageMissing { usage, .. } if usage == missing), "{error}");
    }
}

#[test]
fn tls_config_is_strict_and_client_certs_default_to_optional() {
    use figment::providers::{Format, Toml};
    let config: TlsConfig = figment::Figment::from(Toml::string(
        r#"ca_file = "/c/ca.crt"
           cert_file = "/c/n.crt"
           key_file = "/c/n.key""#,
    ))
    .extract()
    .expect("minimal config");
    assert!(!config.require_client_certs);
    let error = figment::Figment::from(Toml::string(
        r#"ca_file = "a"
           cert_file = "b"
           key_file = "c"
           early_data = true"#,
    ))
    .extract::<TlsConfig>()
    .expect_err("unknown key");
    assert!(error.to_string().contains("early_data"), "{error}");
}

// ---------------------------------------------------------------- names

#[test]
fn san_hosts_lists_dns_names_and_ip_addresses() {
    let ca = TestCa::new("ca");
    let leaf = ca.issue(&["node-1.keel.test", "10.0.0.1", "::1"], BOTH);
    assert_eq!(san_hosts(&leaf.der).expect("SANs"), ["node-1.keel.test", "10.0.0.1", "::1"]);
    assert!(matches!(san_hosts(b"junk"), Err(TlsError::CertificateDerInvalid { .. })));
}

#[test]
fn membership_compares_names_exactly() {
    let ca = TestCa::new("ca");
    let hosts = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect::<BTreeSet<_>>();
    let dns = ca.issue(&["Node-1.Keel.Test"], BOTH);
    assert!(is_member_certificate(&dns.der, &hosts(&["node-1.keel.test"])), "DNS ignores case");
    assert!(is_member_certificate(&dns.der, &hosts(&["node-1.keel.test."])), "trailing dot");
    assert!(!is_member_certificate(&dns.der, &hosts(&["node-1.keel"])), "no suffix match");
    assert!(!is_member_certificate(&dns.der, &hosts(&[])), "no members, no match");

    let ip = ca.issue(&["::1", "10.0.0.1"], BOTH);
    assert!(is_member_certificate(&ip.der, &hosts(&["[0:0::1]"])), "IPv6 compared as an address");
    assert!(is_member_certificate(&ip.der, &hosts(&["10.0.0.1"])));
    assert!(!is_member_certificate(&ip.der, &hosts(&["10.0.0.2"])));

    let wildcard = ca.issue(&["*.keel.test"], BOTH);
    assert!(!is_member_certificate(&wildcard.der, &hosts(&["node-1.keel.test", "*.keel.test"])), "never wildcards");
    assert!(!is_member_certificate(b"junk", &hosts(&["node-1.keel.test"])));
}

#[test]
fn check_peer_certificates_needs_a_member_leaf() {
    let ca = TestCa::new("ca");
    let member = CertificateDer::from(ca.issue(&[MEMBER_HOST], BOTH).der);
    let stranger = CertificateDer::from(ca.issue(&["x.keel.test"], BOTH).der);
    assert_eq!(check_peer_certificates(None, &members()), Err(PeerCertificateError::Missing));
    assert_eq!(check_peer_certificates(Some(&[]), &members()), Err(PeerCertificateError::Missing));
    assert_eq!(check_peer_certificates(Some(std::slice::from_ref(&member)), &members()), Ok(()));
    assert_eq!(
        check_peer_certificates(Some(&[stranger.clone(), member]), &members()),
        Err(PeerCertificateError::NotMember { sans: vec!["x.keel.test".into()] }),
        "only the leaf names the peer"
    );
    assert_eq!(PeerCertificateError::Missing.reason(), PEER_CERTIFICATE_REQUIRED);
}

#[test]
fn member_cert_check_refuses_a_request_without_tls() {
    let status = member_cert_check(&tonic::Request::new(()), &members()).expect_err("no TLS");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(status.get_details_error_info().expect("ErrorInfo").reason, PEER_CERTIFICATE_REQUIRED);
}

#[test]
fn peer_host_takes_the_host_part_of_an_address() {
    for (address, host) in [
        ("node-1.keel:7401", "node-1.keel"),
        ("Node-1.Keel", "node-1.keel"),
        ("10.0.0.2:7401", "10.0.0.2"),
        ("[::1]:7401", "::1"),
        ("::1", "::1"),
        ("https://10.0.0.2:7401/", "10.0.0.2"),
        ("http://user@node-2:7401/x?y", "node-2"),
    ] {
        assert_eq!(peer_host(address).expect(address), host, "{address}");
    }
    for address in ["", ":7401", "[]:7401", "https://"] {
        assert!(matches!(peer_host(address), Err(TlsError::AddressHostMissing { .. })), "{address}");
    }
}
