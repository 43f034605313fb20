//! A small cluster CA for Keel: make the CA, issue node and client
//! certificates from it, and write them as PEM files (the library behind
//! `keelctl certs init|issue`).
//!
//! ```text
//!   generate_ca(common_name, days) ─▶ CaBundle ─ write_ca(dir) ─▶ ca.crt (0644), ca.key (0600)
//!                                        ▲
//!                                        └── read_ca(dir)
//!   issue(&ca, name, sans, usage, days) ─▶ Issued ─ write_issued(dir, name) ─▶ <name>.crt, <name>.key (0600)
//! ```
//!
//! Keys are ECDSA P-256. A node certificate must be issued with
//! [`Usage::Both`]: a node serves the client and peer ports and dials its
//! peers with the same certificate, and its subjectAltNames must include the
//! host part of its advertised peer address (nodes compare them exactly and
//! never accept wildcards, so wildcards are refused here too). Files are
//! never overwritten; secret keys are created with mode 0600.

use crate::limits::KEY_FILE_BYTES_MAX;
use crate::local_error::LocalError;
use crate::local_file::{self, PUBLIC_FILE_MODE, SECRET_FILE_MODE};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Default lifetime of a CA made by `keelctl certs init`.
pub const CA_VALID_DAYS_DEFAULT: u32 = 3_650;
/// Default lifetime of a certificate made by `keelctl certs issue`.
pub const ISSUED_VALID_DAYS_DEFAULT: u32 = 365;
/// Longest lifetime of any certificate made here.
pub const VALID_DAYS_MAX: u32 = 36_500;
/// subjectAltNames in one certificate.
pub const SANS_MAX: usize = 64;
/// Bytes in a common name or a DNS name (the DNS limit).
pub const NAME_BYTES_MAX: usize = 253;
/// Bytes in a file name stem given to [`write_issued`].
pub const FILE_STEM_BYTES_MAX: usize = 64;
/// Bytes read from a certificate file before it is refused.
pub const CERT_FILE_BYTES_MAX: u64 = 64 * 1024;
/// A certificate is valid from this long before it was made, so that a
/// node whose clock is a little behind still accepts it.
pub const CLOCK_SKEW_ALLOWANCE_S: i64 = 300;
/// Bytes of a certificate serial number (positive, random).
const SERIAL_BYTES: usize = 16;

const _: () = assert!(ISSUED_VALID_DAYS_DEFAULT <= CA_VALID_DAYS_DEFAULT);
const _: () = assert!(CA_VALID_DAYS_DEFAULT <= VALID_DAYS_MAX);
const _: () = assert!(KEY_FILE_BYTES_MAX <= CERT_FILE_BYTES_MAX);

/// File name of the CA certificate written by [`write_ca`].
pub const CA_CERT_FILE_NAME: &str = "ca.crt";
/// File name of the CA key written by [`write_ca`].
pub const CA_KEY_FILE_NAME: &str = "ca.key";
/// Suffix of a certificate file written by [`write_issued`].
pub const CERT_FILE_SUFFIX: &str = ".crt";
/// Suffix of a key file written by [`write_issued`].
pub const KEY_FILE_SUFFIX: &str = ".key";

/// A CA certificate and its key, PEM. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    /// The self-signed CA certificate.
    pub cert_pem: String,
    /// The CA's PKCS#8 private key.
    pub key_pem: String,
}

/// A certificate issued by a [`CaBundle`] and its key, PEM. `Debug` never
/// shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate (leaf only; the CA is in `ca.crt`).
    pub cert_pem: String,
    /// Its PKCS#8 private key.
    pub key_pem: String,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("CaBundle").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Issued").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// What an issued certificate may be used for (its extendedKeyUsage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server authentication only.
    Server,
    /// TLS client authentication only (an operator or service calling Keel).
    Client,
    /// Both: what every node certificate needs.
    Both,
}

impl Usage {
    fn extended_key_usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Both => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        }
    }
}

/// Where [`write_ca`] or [`write_issued`] put the two files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFilePaths {
    /// The certificate, mode 0644.
    pub cert: PathBuf,
    /// The private key, mode 0600.
    pub key: PathBuf,
}

/// A fresh self-signed CA that may sign end-entity certificates only (path
/// length 0), valid from now for `valid_days`.
pub fn generate_ca(common_name: &str, valid_days: u32) -> Result<CaBundle, LocalError> {
    check_common_name("common_name", common_name)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, valid_days)?;
    params.serial_number = Some(random_serial());
    let what = || format!("CA {common_name:?}");
    let key = KeyPair::generate().map_err(|source| LocalError::CertificateGeneration { what: what(), source })?;
    let cert = params.self_signed(&key).map_err(|source| LocalError::CertificateGeneration { what: what(), source })?;
    Ok(CaBundle { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A certificate for `name` (its common name) with subjectAltNames `sans`
/// (each an IP address or a DNS name), signed by `ca`, valid from now for
/// `valid_days` and never past the CA's own expiry.
pub fn issue(ca: &CaBundle, name: &str, sans: &[String], usage: Usage, valid_days: u32) -> Result<Issued, LocalError> {
    check_common_name("name", name)?;
    check_sans(sans, usage)?;
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|source| LocalError::CertificateInvalid {
        source_name: "CA key".into(),
        problem: format!("not a usable private key: {source}"),
    })?;
    let ca_not_after = check_ca(ca, &ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(|source| LocalError::CertificateInvalid {
        source_name: "CA certificate".into(),
        problem: source.to_string(),
    })?;

    let mut params = CertificateParams::new(sans.to_vec())
        .map_err(|source| LocalError::ArgumentInvalid { argument: "--san".into(), problem: source.to_string() })?;
    params.distinguished_name = distinguished_name(name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usage.extended_key_usages();
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    set_validity(&mut params, valid_days)?;
    if params.not_after > ca_not_after {
        return Err(LocalError::ArgumentInvalid {
            argument: "--days".into(),
            problem: format!("{valid_days} days would outlive the CA, which expires at {ca_not_after}"),
        });
    }

    let what = || format!("certificate for {name:?}");
    let key = KeyPair::generate().map_err(|source| LocalError::CertificateGeneration { what: what(), source })?;
    let cert =
        params.signed_by(&key, &issuer).map_err(|source| LocalError::CertificateGeneration { what: what(), source })?;
    Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Writes `dir/ca.crt` (0644) and `dir/ca.key` (0600), creating `dir` (0700)
/// if needed. Refuses to overwrite either file.
pub fn write_ca(ca: &CaBundle, dir: &Path) -> Result<CertFilePaths, LocalError> {
    let paths = CertFilePaths { cert: dir.join(CA_CERT_FILE_NAME), key: dir.join(CA_KEY_FILE_NAME) };
    write_pair(dir, &paths, &ca.cert_pem, &ca.key_pem)?;
    Ok(paths)
}

/// Reads the CA written by [`write_ca`] from `dir` and checks that the key
/// belongs to the certificate and the certificate is a CA.
pub fn read_ca(dir: &Path) -> Result<CaBundle, LocalError> {
    let cert_path = dir.join(CA_CERT_FILE_NAME);
    let key_path = dir.join(CA_KEY_FILE_NAME);
    let ca = CaBundle {
        cert_pem: read_text(&cert_path, CERT_FILE_BYTES_MAX)?,
        key_pem: read_text(&key_path, KEY_FILE_BYTES_MAX)?,
    };
    let key = KeyPair::from_pem(&ca.key_pem).map_err(|source| LocalError::CertificateInvalid {
        source_name: key_path.display().to_string(),
        problem: format!("not a usable private key: {source}"),
    })?;
    check_ca(&ca, &key).map_err(|error| match error {
        LocalError::CertificateInvalid { problem, .. } => {
            LocalError::CertificateInvalid { source_name: cert_path.display().to_string(), problem }
        }
        other => other,
    })?;
    Ok(ca)
}

/// Writes `dir/<name>.crt` (0644) and `dir/<name>.key` (0600), creating
/// `dir` (0700) if needed. `name` must be a plain file name stem. Refuses to
/// overwrite either file.
pub fn write_issued(issued: &Issued, dir: &Path, name: &str) -> Result<CertFilePaths, LocalError> {
    check_file_stem(name)?;
    let paths = CertFilePaths {
        cert: dir.join(format!("{name}{CERT_FILE_SUFFIX}")),
        key: dir.join(format!("{name}{KEY_FILE_SUFFIX}")),
    };
    write_pair(dir, &paths, &issued.cert_pem, &issued.key_pem)?;
    Ok(paths)
}

fn write_pair(dir: &Path, paths: &CertFilePaths, cert_pem: &str, key_pem: &str) -> Result<(), LocalError> {
    create_private_dir(dir)?;
    // Check both before writing either, so that a clash leaves nothing behind.
    for path in [&paths.cert, &paths.key] {
        if path.exists() {
            return Err(LocalError::FileWrite {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "refusing to overwrite an existing file",
                ),
            });
        }
    }
    // The key first: a certificate without its key is useless, a key without
    // its certificate is noticed at once.
    local_file::write(&paths.key, key_pem.as_bytes(), SECRET_FILE_MODE, true)?;
    local_file::write(&paths.cert, cert_pem.as_bytes(), PUBLIC_FILE_MODE, true)
}

fn create_private_dir(dir: &Path) -> Result<(), LocalError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| LocalError::FileWrite { path: dir.to_owned(), source })
}

fn read_text(path: &Path, bytes_max: u64) -> Result<String, LocalError> {
    let bytes = local_file::read_bounded(path, bytes_max)?;
    String::from_utf8(bytes).map_err(|_| LocalError::CertificateInvalid {
        source_name: path.display().to_string(),
        problem: "is not UTF-8 text (PEM expected)".into(),
    })
}

/// The CA certificate must parse, be a CA and hold the public half of `key`.
/// Returns its expiry.
fn check_ca(ca: &CaBundle, key: &KeyPair) -> Result<OffsetDateTime, LocalError> {
    let invalid = |problem: String| LocalError::CertificateInvalid { source_name: "CA certificate".into(), problem };
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes())
        .map_err(|error| invalid(format!("not PEM: {error}")))?;
    let certificate = pem.parse_x509().map_err(|error| invalid(format!("not X.509: {error}")))?;
    if !certificate.is_ca() {
        return Err(invalid("is not a CA certificate (basicConstraints CA:FALSE or absent)".into()));
    }
    if certificate.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
        return Err(invalid("does not belong to the CA key".into()));
    }
    Ok(certificate.validity().not_after.to_datetime())
}

fn set_validity(params: &mut CertificateParams, valid_days: u32) -> Result<(), LocalError> {
    if valid_days == 0 || valid_days > VALID_DAYS_MAX {
        return Err(LocalError::ArgumentInvalid {
            argument: "--days".into(),
            problem: format!("must be between 1 and {VALID_DAYS_MAX}, not {valid_days}"),
        });
    }
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::seconds(CLOCK_SKEW_ALLOWANCE_S);
    params.not_after = now + time::Duration::days(i64::from(valid_days));
    Ok(())
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; SERIAL_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // Serial numbers are positive integers (RFC 5280 §4.1.2.2).
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn check_common_name(argument: &str, name: &str) -> Result<(), LocalError> {
    let problem = if name.trim().is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > NAME_BYTES_MAX {
        Some(format!("is longer than {NAME_BYTES_MAX} bytes"))
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    };
    match problem {
        Some(problem) => Err(LocalError::ArgumentInvalid { argument: argument.to_owned(), problem }),
        None => Ok(()),
    }
}

/// Each SAN is an IP address or a DNS name of letters, digits, `-` and `.`;
/// no wildcards. Server certificates need at least one.
fn check_sans(sans: &[String], usage: Usage) -> Result<(), LocalError> {
    let invalid = |problem: String| LocalError::ArgumentInvalid { argument: "--san".into(), problem };
    if sans.is_empty() && usage != Usage::Client {
        return Err(invalid("a server certificate needs at least one (its host name or IP address)".into()));
    }
    if sans.len() > SANS_MAX {
        return Err(invalid(format!("{} names; at most {SANS_MAX} are accepted", sans.len())));
    }
    for san in sans {
        if san.parse::<IpAddr>().is_ok() {
            continue;
        }
        let is_dns_name = !san.is_empty()
            && san.len() <= NAME_BYTES_MAX
            && san.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
            });
        if !is_dns_name {
            return Err(invalid(format!("{san:?} is neither an IP address nor a DNS name (wildcards are refused)")));
        }
    }
    Ok(())
}

fn check_file_stem(name: &str) -> Result<(), LocalError> {
    let is_plain = !name.is_empty()
        && name.len() <= FILE_STEM_BYTES_MAX
        && !name.starts_with('.')
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if is_plain {
        return Ok(());
    }
    Err(LocalError::ArgumentInvalid {
        argument: "name".into(),
        problem: format!(
            "{name:?} must be 1–{FILE_STEM_BYTES_MAX} letters, digits, '-', '_' or '.', not starting with '.'"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::GeneralName;

    fn parse(pem_text: &str) -> X509Certificate<'static> {
        // Leaked so the parsed certificate can borrow it; test-only.
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).expect("PEM");
        let der: &'static [u8] = Box::leak(pem.contents.into_boxed_slice());
        x509_parser::parse_x509_certificate(der).expect("X.509").1
    }

    fn sans(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn days_between(certificate: &X509Certificate<'_>) -> i64 {
        let validity = certificate.validity();
        (validity.not_after.to_datetime() - validity.not_before.to_datetime()).whole_days()
    }

    #[test]
    fn generate_ca_makes_a_ca_that_signs_leaves_only() {
        let ca = generate_ca("Keel test CA", 30).expect("CA");
        let certificate = parse(&ca.cert_pem);
        assert!(certificate.is_ca());
        let constraints = certificate.basic_constraints().expect("extension").expect("present").value;
        assert_eq!(constraints.path_len_constraint, Some(0));
        assert_eq!(certificate.subject().to_string(), "CN=Keel test CA");
        assert_eq!(certificate.subject(), certificate.issuer());
        certificate.verify_signature(None).expect("self-signed");
        assert_eq!(days_between(&certificate), 30, "30 days plus the clock-skew allowance");
        assert!(ca.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"), "Debug must not show the key");
    }

    #[test]
    fn issued_certificate_chains_to_the_ca_and_names_its_sans() {
        let ca = generate_ca("Keel test CA", 30).expect("CA");
        let issued =
            issue(&ca, "node-1", &sans(&["node-1.keel.test", "10.0.0.1", "::1"]), Usage::Both, 7).expect("issue");
        let ca_certificate = parse(&ca.cert_pem);
        let certificate = parse(&issued.cert_pem);

        certificate.verify_signature(Some(ca_certificate.public_key())).expect("signed by the CA");
        assert_eq!(certificate.issuer(), ca_certificate.subject());
        assert!(!certificate.is_ca());
        assert_eq!(certificate.subject().to_string(), "CN=node-1");
        assert_eq!(days_between(&certificate), 7);

        let names = &certificate.subject_alternative_name().expect("extension").expect("present").value.general_names;
        assert_eq!(names.len(), 3);
        assert!(matches!(names[0], GeneralName::DNSName("node-1.keel.test")));
        assert!(matches!(names[1], GeneralName::IPAddress(&[10, 0, 0, 1])));
        assert!(matches!(names[2], GeneralName::IPAddress(octets) if octets.len() == 16 && octets[15] == 1));

        let usages = certificate.extended_key_usage().expect("extension").expect("present").value;
        assert!(usages.server_auth && usages.client_auth);

        let key = KeyPair::from_pem(&issued.key_pem).expect("key parses");
        assert_eq!(certificate.tbs_certificate.subject_pki.raw, key.subject_public_key_info().as_slice());
    }

    /// The same webpki checks a node runs in its handshakes: chain, validity,
    /// key usages, path length and the server name.
    #[test]
    fn a_node_certificate_passes_webpki_as_server_and_as_client() {
        use rustls::client::WebPkiServerVerifier;
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        use rustls::server::WebPkiClientVerifier;
        use std::sync::Arc;

        let ca = generate_ca("Keel test CA", 30).expect("CA");
        let issued = issue(&ca, "node-1", &sans(&["node-1.keel.test", "10.0.0.1"]), Usage::Both, 7).expect("issue");
        let der = |pem_text: &str| {
            let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).expect("PEM");
            CertificateDer::from(pem.contents)
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(&ca.cert_pem)).expect("CA is a trust anchor");
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let leaf = der(&issued.cert_pem);

        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone()).build().expect("verifier");
        for name in ["node-1.keel.test", "10.0.0.1"] {
            let server_name = ServerName::try_from(name).expect("name");
            server_verifier.verify_server_cert(&leaf, &[], &server_name, &[], UnixTime::now()).expect(name);
        }
        let other_name = ServerName::try_from("node-2.keel.test").expect("name");
        assert!(server_verifier.verify_server_cert(&leaf, &[], &other_name, &[], UnixTime::now()).is_err());

        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider).build().expect("verifier");
        client_verifier.verify_client_cert(&leaf, &[], UnixTime::now()).expect("usable as a client certificate");

        let server_only = issue(&ca, "web", &sans(&["web.keel.test"]), Usage::Server, 7).expect("issue");
        assert!(
            client_verifier.verify_client_cert(&der(&server_only.cert_pem), &[], UnixTime::now()).is_err(),
            "a server-only certificate cannot authenticate a client"
        );
    }

    #[test]
    fn a_certificate_does_not_verify_against_another_ca() {
        let ca = generate_ca("one", 30).expect("CA");
        let other = generate_ca("two", 30).expect("CA");
        let issued = issue(&ca, "node-1", &sans(&["node-1"]), Usage::Both, 7).expect("issue");
        let other_certificate = parse(&other.cert_pem);
        assert!(parse(&issued.cert_pem).verify_signature(Some(other_certificate.public_key())).is_err());
    }

    #[test]
    fn usage_sets_the_extended_key_usages() {
        let ca = generate_ca("ca", 30).expect("CA");
        for (usage, is_server, is_client) in
            [(Usage::Server, true, false), (Usage::Client, false, true), (Usage::Both, true, true)]
        {
            let issued = issue(&ca, "x", &sans(&["x.keel.test"]), usage, 1).expect("issue");
            let certificate = parse(&issued.cert_pem);
            let usages = certificate.extended_key_usage().expect("extension").expect("present").value;
            assert_eq!((usages.server_auth, usages.client_auth), (is_server, is_client), "{usage:?}");
        }
        issue(&ca, "operator", &[], Usage::Client, 1).expect("a client certificate may have no SAN");
    }

    #[test]
    fn issue_refuses_bad_arguments() {
        let ca = generate_ca("ca", 30).expect("CA");
        let argument_of = |result: Result<Issued, LocalError>| match result {
            Err(LocalError::ArgumentInvalid { argument, .. }) => argument,
            other => panic!("expected ArgumentInvalid, got {other:?}"),
        };
        assert_eq!(argument_of(issue(&ca, "n", &[], Usage::Both, 1)), "--san");
        assert_eq!(argument_of(issue(&ca, "n", &sans(&["*.keel.test"]), Usage::Both, 1)), "--san");
        assert_eq!(argument_of(issue(&ca, "n", &sans(&["a..b"]), Usage::Both, 1)), "--san");
        assert_eq!(argument_of(issue(&ca, "n", &sans(&["-a.b"]), Usage::Both, 1)), "--san");
        let too_many: Vec<String> = (0..=SANS_MAX).map(|index| format!("n{index}.keel")).collect();
        assert_eq!(argument_of(issue(&ca, "n", &too_many, Usage::Both, 1)), "--san");
        assert_eq!(argument_of(issue(&ca, "", &sans(&["a"]), Usage::Both, 1)), "name");
        assert_eq!(argument_of(issue(&ca, "n", &sans(&["a"]), Usage::Both, 0)), "--days");
        assert_eq!(argument_of(issue(&ca, "n", &sans(&["a"]), Usage::Both, VALID_DAYS_MAX + 1)), "--days");
        assert_eq!(argument_of(issue(&ca, "n", &sans(&["a"]), Usage::Both, 31)), "--days", "outlives the CA");
        assert!(matches!(
            generate_ca(" ", 1),
            Err(LocalError::ArgumentInvalid { argument, .. }) if argument == "common_name"
        ));
    }

    #[test]
    fn issue_refuses_a_ca_whose_key_is_not_its_own() {
        let ca = generate_ca("ca", 30).expect("CA");
        let other = generate_ca("other", 30).expect("CA");
        let mixed = CaBundle { cert_pem: ca.cert_pem.clone(), key_pem: other.key_pem };
        let error = issue(&mixed, "n", &sans(&["a"]), Usage::Both, 1).expect_err("mismatch");
        assert!(error.to_string().contains("does not belong to the CA key"), "{error}");

        let leaf = issue(&ca, "n", &sans(&["a"]), Usage::Both, 1).expect("issue");
        let not_a_ca = CaBundle { cert_pem: leaf.cert_pem, key_pem: leaf.key_pem };
        let error = issue(&not_a_ca, "m", &sans(&["b"]), Usage::Both, 1).expect_err("not a CA");
        assert!(error.to_string().contains("is not a CA"), "{error}");
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn write_ca_and_read_ca_round_trip_with_safe_modes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_dir = dir.path().join("tls");
        let ca = generate_ca("ca", 30).expect("CA");
        let paths = write_ca(&ca, &ca_dir).expect("write");
        assert_eq!(paths, CertFilePaths { cert: ca_dir.join("ca.crt"), key: ca_dir.join("ca.key") });
        assert_eq!(read_ca(&ca_dir).expect("read back"), ca);
        #[cfg(unix)]
        {
            assert_eq!(mode_of(&paths.key), 0o600);
            assert_eq!(mode_of(&paths.cert), 0o644);
            assert_eq!(mode_of(&ca_dir), 0o700);
        }
    }

    #[test]
    fn writers_never_overwrite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = generate_ca("ca", 30).expect("CA");
        write_ca(&ca, dir.path()).expect("first write");
        let again = generate_ca("ca", 30).expect("CA");
        match write_ca(&again, dir.path()) {
            Err(LocalError::FileWrite { path, source }) => {
                assert_eq!(path, dir.path().join("ca.crt"));
                assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists);
            }
            other => panic!("expected FileWrite, got {other:?}"),
        }
        assert_eq!(read_ca(dir.path()).expect("still the first CA"), ca);

        let issued = issue(&ca, "node-1", &sans(&["node-1"]), Usage::Both, 1).expect("issue");
        // A stray key file alone blocks the pair, and nothing is written.
        std::fs::write(dir.path().join("node-1.key"), "x").expect("stray key");
        let error = write_issued(&issued, dir.path(), "node-1").expect_err("clash");
        assert!(error.to_string().contains("node-1.key"), "{error}");
        assert!(!dir.path().join("node-1.crt").exists(), "nothing written on a clash");
    }

    #[test]
    fn write_issued_names_files_after_the_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = generate_ca("ca", 30).expect("CA");
        let issued = issue(&ca, "node-1", &sans(&["node-1"]), Usage::Both, 1).expect("issue");
        let paths = write_issued(&issued, dir.path(), "node-1").expect("write");
        assert_eq!(paths.cert, dir.path().join("node-1.crt"));
        assert_eq!(paths.key, dir.path().join("node-1.key"));
        assert_eq!(std::fs::read_to_string(&paths.cert).expect("read"), issued.cert_pem);
        #[cfg(unix)]
        assert_eq!(mode_of(&paths.key), 0o600);
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            assert!(
                matches!(write_issued(&issued, dir.path(), bad), Err(LocalError::ArgumentInvalid { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn read_ca_names_the_file_at_fault() {
        let dir = tempfile::tempdir().expect("temp dir");
        let error = read_ca(dir.path()).expect_err("missing");
        assert!(error.to_string().contains("ca.crt"), "{error}");

        let ca = generate_ca("ca", 30).expect("CA");
        write_ca(&ca, dir.path()).expect("write");
        std::fs::write(dir.path().join("ca.key"), generate_ca("other", 30).expect("CA").key_pem).expect("swap key");
        let error = read_ca(dir.path()).expect_err("mismatch");
        assert!(error.to_string().contains("ca.crt") && error.to_string().contains("does not belong"), "{error}");
    }
}
