//! Who a peer is: the hosts its certificate names, and whether one of them is
//! the host of a member's peer address.
//!
//! The peer port's handshake has already proved that the certificate chains to
//! the cluster CA; this module proves that it was issued to a *member*. Names
//! are compared exactly — DNS names ignoring ASCII case and a trailing dot, IP
//! addresses as addresses (`::1` equals `0:0::1`). Wildcard DNS names never
//! match: a wildcard certificate would let one holder speak for every member.

use super::TlsError;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tonic::Status;
use tonic::transport::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;

/// `ErrorInfo.reason` when a peer-port request comes without a client certificate.
pub const PEER_CERTIFICATE_REQUIRED: &str = "PEER_CERTIFICATE_REQUIRED";
/// `ErrorInfo.reason` when a peer's certificate names no member.
pub const PEER_NOT_MEMBER: &str = "PEER_NOT_MEMBER";

/// `ErrorInfo.reason` when a peer call names another cluster.
pub const CLUSTER_MISMATCH: &str = "CLUSTER_MISMATCH";

/// A peer call that named another cluster than this member's (or none).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this member belongs to cluster {ours:?}; the caller named {}", theirs.as_deref().map(|id| format!("cluster {id:?}")).unwrap_or_else(|| "no cluster".to_owned()))]
pub struct ClusterMismatch {
    /// This member's `cluster.id`.
    pub ours: String,
    /// What the caller's `keel-cluster-id` said.
    pub theirs: Option<String>,
}

impl ClusterMismatch {
    /// Reasons this type produces.
    pub const REASONS: &'static [&'static str] = &[CLUSTER_MISMATCH];
}

impl crate::status::Fault for ClusterMismatch {
    fn reason(&self) -> &'static str {
        CLUSTER_MISMATCH
    }
    fn code(&self) -> tonic::Code {
        tonic::Code::FailedPrecondition
    }
    fn metadata(&self) -> crate::status::Metadata {
        crate::status::Metadata::from([("cluster_id".to_owned(), self.theirs.clone().unwrap_or_default())])
    }
}

/// Why a peer-port request was refused after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerCertificateError {
    /// The connection carries no client certificate (plaintext, or a TLS
    /// server configured without client authentication).
    #[error("the peer port admits only cluster members; this connection presented no client certificate")]
    Missing,
    /// The certificate names no host of a member's peer address.
    #[error("the peer certificate names {sans:?}; none of these is the host of a member's peer address")]
    NotMember {
        /// The certificate's DNS and IP subjectAltNames (empty when it has
        /// none or they cannot be read).
        sans: Vec<String>,
    },
}

impl PeerCertificateError {
    /// The stable reason, [`PEER_CERTIFICATE_REQUIRED`] or [`PEER_NOT_MEMBER`].
    pub fn reason(&self) -> &'static str {
        match self {
            PeerCertificateError::Missing => PEER_CERTIFICATE_REQUIRED,
            PeerCertificateError::NotMember { .. } => PEER_NOT_MEMBER,
        }
    }

    /// Reasons this type produces.
    pub const REASONS: &'static [&'static str] = &[PEER_CERTIFICATE_REQUIRED, PEER_NOT_MEMBER];
}

impl crate::status::Fault for PeerCertificateError {
    fn reason(&self) -> &'static str {
        PeerCertificateError::reason(self)
    }
    fn code(&self) -> tonic::Code {
        tonic::Code::PermissionDenied
    }
    fn metadata(&self) -> crate::status::Metadata {
        match self {
            PeerCertificateError::Missing => crate::status::Metadata::new(),
            PeerCertificateError::NotMember { sans } => {
                crate::status::Metadata::from([("sans".to_owned(), sans.join(","))])
            }
        }
    }
}

/// The DNS names and IP addresses in the certificate's subjectAltName, in
/// certificate order; IPs in their canonical text form. Other name kinds
/// (email, URI, ...) are left out. A certificate without the extension has
/// none.
pub fn san_hosts(cert_der: &[u8]) -> Result<Vec<String>, TlsError> {
    let invalid = |source| TlsError::CertificateDerInvalid { source };
    let certificate = parse_x509(cert_der).map_err(invalid)?;
    let Some(alternative_names) = certificate.subject_alternative_name().map_err(invalid)? else {
        return Ok(Vec::new());
    };
    let mut hosts = Vec::new();
    for name in &alternative_names.value.general_names {
        match name {
            GeneralName::DNSName(dns_name) => hosts.push((*dns_name).to_owned()),
            GeneralName::IPAddress(octets) => hosts.push(ip_from_octets(octets).map_err(invalid)?.to_string()),
            _ => {}
        }
    }
    Ok(hosts)
}

/// The identities a client certificate names, for binding a token's `sub`
/// to it: its URI, DNS and email subjectAltNames and its subject common
/// names. A certificate that cannot be parsed names none.
pub fn certificate_identities(cert_der: &[u8]) -> Vec<String> {
    let Ok(certificate) = parse_x509(cert_der) else {
        return Vec::new();
    };
    let mut identities = Vec::new();
    if let Ok(Some(alternative_names)) = certificate.subject_alternative_name() {
        for name in &alternative_names.value.general_names {
            match name {
                GeneralName::URI(uri) => identities.push((*uri).to_owned()),
                GeneralName::DNSName(dns_name) => identities.push((*dns_name).to_owned()),
                GeneralName::RFC822Name(email) => identities.push((*email).to_owned()),
                _ => {}
            }
        }
    }
    for common_name in certificate.subject().iter_common_name() {
        if let Ok(common_name) = common_name.as_str() {
            identities.push(common_name.to_owned());
        }
    }
    identities
}

/// True when some DNS or IP subjectAltName of the certificate equals the host
/// part of some member's peer address (`member_hosts` holds those host parts,
/// see [`peer_host`]). A certificate that cannot be parsed is no member's.
pub fn is_member_certificate(cert_der: &[u8], member_hosts: &BTreeSet<String>) -> bool {
    let Ok(sans) = san_hosts(cert_der) else {
        return false;
    };
    let members: Vec<HostName> = member_hosts.iter().filter_map(|host| HostName::parse(host)).collect();
    sans.iter().filter_map(|san| HostName::parse(san)).any(|san| members.contains(&san))
}

/// The membership check on a peer-port connection's certificates (leaf
/// first, as `tonic::Request::peer_certs` returns them). Only the leaf names
/// the peer; the handshake has already verified the chain.
pub fn check_peer_certificates(
    peer_certs: Option<&[CertificateDer<'_>]>,
    member_hosts: &BTreeSet<String>,
) -> Result<(), PeerCertificateError> {
    let Some(leaf) = peer_certs.and_then(|certificates| certificates.first()) else {
        return Err(PeerCertificateError::Missing);
    };
    if is_member_certificate(leaf, member_hosts) {
        return Ok(());
    }
    Err(PeerCertificateError::NotMember { sans: san_hosts(leaf).unwrap_or_default() })
}

/// The peer port's interceptor body: `PERMISSION_DENIED` (with `ErrorInfo`
/// reason [`PEER_CERTIFICATE_REQUIRED`] or [`PEER_NOT_MEMBER`]) unless the
/// request came over TLS with a client certificate naming a member. Wire it as
///
/// ```ignore
/// let interceptor = move |request: tonic::Request<()>| {
///     tls::member_cert_check(&request, &member_hosts.borrow())?;
///     Ok(request)
/// };
/// ```
///
/// `peer_certs` is only filled in for TCP connections served by tonic's TLS,
/// so the check fails closed anywhere else.
pub fn member_cert_check(request: &tonic::Request<()>, member_hosts: &BTreeSet<String>) -> Result<(), Status> {
    let peer_certs = request.peer_certs();
    check_peer_certificates(peer_certs.as_deref().map(Vec::as_slice), member_hosts).map_err(|error| {
        // Handled here: the peer gets the status, the operator gets one line.
        tracing::warn!(remote_addr = ?request.remote_addr(), reason = error.reason(), %error, "peer refused");
        crate::status::to_status(&error)
    })
}

/// The host part of a peer address, as member host sets and
/// [`super::peer_client_tls`] expect it: `node-1.keel:7401` → `node-1.keel`,
/// `[::1]:7401` → `::1`, `https://10.0.0.2:7401/` → `10.0.0.2`. DNS names
/// are lowercased.
pub fn peer_host(address: &str) -> Result<String, TlsError> {
    let without_scheme = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = without_scheme.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host_port)| host_port);
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split_once(']').map(|(host, _)| host)
    } else if authority.parse::<Ipv6Addr>().is_ok() {
        Some(authority)
    } else {
        Some(authority.rsplit_once(':').map_or(authority, |(host, _)| host))
    };
    match host {
        Some(host) if !host.is_empty() => Ok(host.to_ascii_lowercase()),
        _ => Err(TlsError::AddressHostMissing { address: address.to_owned() }),
    }
}

/// Parses one DER certificate, refusing trailing bytes.
pub(super) fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, X509Error> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], certificate)) => Ok(certificate),
        Ok(_) => Err(X509Error::InvalidCertificate),
        Err(x509_parser::nom::Err::Error(error) | x509_parser::nom::Err::Failure(error)) => Err(error),
        Err(x509_parser::nom::Err::Incomplete(_)) => Err(X509Error::InvalidCertificate),
    }
}

fn ip_from_octets(octets: &[u8]) -> Result<IpAddr, X509Error> {
    if let Ok(octets) = <[u8; 4]>::try_from(octets) {
        return Ok(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if let Ok(octets) = <[u8; 16]>::try_from(octets) {
        return Ok(IpAddr::V6(Ipv6Addr::from(octets)));
    }
    Err(X509Error::InvalidExtensions)
}

/// A host in comparable form.
#[derive(Debug, PartialEq, Eq)]
enum HostName {
    Ip(IpAddr),
    /// Lowercase, without a trailing dot.
    Dns(String),
}

impl HostName {
    /// `None` for an empty name or a wildcard.
    fn parse(host: &str) -> Option<HostName> {
        let unbracketed = host.strip_prefix('[').and_then(|host| host.strip_suffix(']')).unwrap_or(host);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Some(HostName::Ip(ip));
        }
        let dns_name = host.strip_suffix('.').unwrap_or(host);
        if dns_name.is_empty() || dns_name.contains('*') {
            return None;
        }
        Some(HostName::Dns(dns_name.to_ascii_lowercase()))
    }
}
