//! Identity and authorization on a real keeld: every client RPC against
//! every kind of bad token, each refused with its code and reason and
//! nothing changed; revocation on every member of a cluster within a bound.
//!
//! The RPC list below is written out independently of the server's
//! permission table (edge/permissions.rs), so a change there that opens or
//! closes an RPC by mistake fails here.

use crate::fixture::{Fixture, now_ms, reason_of};
use crate::harness::KeelProcess;
use anyhow::{Context, Result, bail, ensure};
use keel_chaos::process::AuthChannel;
use keel_client::KeyPair;
use keel_client::token::{TokenClaims, issue};
use keel_proto::v1 as pb;
use prost::Message as _;
use prost::bytes::{Buf as _, BufMut as _};
use std::time::Duration;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Bytes in, bytes out: one caller for every RPC.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut bytes = vec![0; src.remaining()];
        src.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}

/// Whose data an RPC touches, as this test expects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Names a tenant (acme in the requests below).
    Tenant,
    /// A tenant-scoped token may call it (its result is filtered).
    TenantList,
    /// Anyone's with the permission.
    Shared,
    /// Cluster-wide.
    Cluster,
    /// Authorised by root signatures; a token is optional.
    RootSigned,
}

const TENANT: &str = "acme";

fn acme() -> pb::Tenant {
    pb::Tenant {
        tenant_id: TENANT.into(),
        display_name: "Acme".into(),
        tier: pb::TenantTier::Basic as i32,
        home_region: "local".into(),
        ..pb::Tenant::default()
    }
}

/// Every client RPC: path, scope, and a request body.
fn rpcs() -> Vec<(&'static str, Scope, Vec<u8>)> {
    let context = pb::EvaluationContext {
        tenant: TENANT.into(),
        engine: "billing".into(),
        action: "charge".into(),
        ..pb::EvaluationContext::default()
    };
    vec![
        ("/keel.v1.TrustService/AddKey", Scope::RootSigned, pb::AddKeyRequest::default().encode_to_vec()),
        (
            "/keel.v1.TrustService/GetKey",
            Scope::Shared,
            pb::GetKeyRequest { name: "k".into(), consistency: 0 }.encode_to_vec(),
        ),
        ("/keel.v1.TrustService/ListKeys", Scope::Shared, pb::ListKeysRequest::default().encode_to_vec()),
        ("/keel.v1.TrustService/GetRoot", Scope::Shared, pb::GetRootRequest::default().encode_to_vec()),
        ("/keel.v1.TrustService/RevokeKey", Scope::RootSigned, pb::RevokeKeyRequest::default().encode_to_vec()),
        ("/keel.v1.TrustService/RotateRoot", Scope::RootSigned, pb::RotateRootRequest::default().encode_to_vec()),
        (
            "/keel.v1.TrustService/RevokeToken",
            Scope::Cluster,
            pb::RevokeTokenRequest { jti: "matrix".into(), ..pb::RevokeTokenRequest::default() }.encode_to_vec(),
        ),
        (
            "/keel.v1.RegistryService/PublishEngineVersion",
            Scope::Cluster,
            pb::PublishEngineVersionRequest::default().encode_to_vec(),
        ),
        (
            "/keel.v1.RegistryService/GetEngineVersion",
            Scope::Shared,
            pb::GetEngineVersionRequest { engine: "billing".into(), ..Default::default() }.encode_to_vec(),
        ),
        ("/keel.v1.RegistryService/ListEngines", Scope::Shared, pb::ListEnginesRequest::default().encode_to_vec()),
        (
            "/keel.v1.RegistryService/ListEngineVersions",
            Scope::Shared,
            pb::ListEngineVersionsRequest { engine: "billing".into(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "/keel.v1.RegistryService/YankEngineVersion",
            Scope::Cluster,
            pb::YankEngineVersionRequest { engine: "billing".into(), version: "1.0.0".into(), ..Default::default() }
                .encode_to_vec(),
        ),
        (
            "/keel.v1.RegistryService/ListDependants",
            Scope::Shared,
            pb::ListDependantsRequest { engine: "billing".into(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "/keel.v1.RegistryService/GetResolvedGraph",
            Scope::Shared,
            pb::GetResolvedGraphRequest { engine: "billing".into(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "/keel.v1.TenantService/CreateTenant",
            Scope::Tenant,
            pb::CreateTenantRequest { tenant: Some(acme()), ..Default::default() }.encode_to_vec(),
        ),
        (
            "/keel.v1.TenantService/GetTenant",
            Scope::Tenant,
            pb::GetTenantRequest { name: TENANT.into(), consistency: 0 }.encode_to_vec(),
        ),
        (
            "/keel.v1.TenantService/UpdateTenant",
            Scope::Tenant,
            pb::UpdateTenantRequest { tenant: Some(acme()), ..Default::default() }.encode_to_vec(),
        ),
        ("/keel.v1.TenantService/ListTenants", Scope::TenantList, pb::ListTenantsRequest::default().encode_to_vec()),
        (
            "/keel.v1.PolicyService/PutPolicy",
            Scope::Cluster,
            pb::PutPolicyRequest { policy: "main".into(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "/keel.v1.PolicyService/GetPolicy",
            Scope::Shared,
            pb::GetPolicyRequest { name: "main".into(), ..Default::default() }.encode_to_vec(),
        ),
        ("/keel.v1.PolicyService/ListPolicies", Scope::Shared, pb::ListPoliciesRequest::default().encode_to_vec()),
        (
            "/keel.v1.PolicyService/Evaluate",
            Scope::Tenant,
            pb::EvaluateRequest { context: Some(context), ..Default::default() }.encode_to_vec(),
        ),
        ("/keel.v1.PolicyService/Test", Scope::Cluster, pb::TestPolicyRequest::default().encode_to_vec()),
        (
            "/keel.v1.EventService/Watch",
            Scope::Tenant,
            pb::WatchRequest { tenant: TENANT.into(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "/keel.v1.EventService/Publish",
            Scope::Tenant,
            pb::PublishEventRequest { topic: "t".into(), tenant: TENANT.into(), ..Default::default() }.encode_to_vec(),
        ),
        ("/keel.v1.ClusterService/GetStatus", Scope::Shared, pb::GetStatusRequest::default().encode_to_vec()),
        ("/keel.v1.ClusterService/AddLearner", Scope::Cluster, pb::AddLearnerRequest::default().encode_to_vec()),
        (
            "/keel.v1.ClusterService/PromoteMember",
            Scope::Cluster,
            pb::PromoteMemberRequest { node_id: 9 }.encode_to_vec(),
        ),
        (
            "/keel.v1.ClusterService/RemoveMember",
            Scope::Cluster,
            pb::RemoveMemberRequest { node_id: 9 }.encode_to_vec(),
        ),
        (
            "/keel.v1.ClusterService/TransferLeadership",
            Scope::Cluster,
            pb::TransferLeadershipRequest { node_id: 9 }.encode_to_vec(),
        ),
        (
            // Items naming another tenant fail alone; the call itself is allowed.
            "/keel.v1.AdmissionService/AdmitBatch",
            Scope::TenantList,
            pb::AdmitBatchRequest {
                requests: vec![pb::AdmitRequest {
                    tenant: TENANT.into(),
                    engine: "billing".into(),
                    action: "charge".into(),
                    ..Default::default()
                }],
            }
            .encode_to_vec(),
        ),
        (
            "/keel.v1.AdmissionService/Admit",
            Scope::Tenant,
            pb::AdmitRequest {
                tenant: TENANT.into(),
                engine: "billing".into(),
                action: "charge".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ]
}

/// One call of `path` with `body` and `token`: Ok, or the status.
async fn call(node: &KeelProcess, path: &'static str, body: Vec<u8>, token: Option<&str>) -> Result<(), tonic::Status> {
    let channel = node.raw_channel().await.map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let bearer = keel_chaos::process::Bearer::new(token).map_err(|error| tonic::Status::internal(error.to_string()))?;
    let channel: AuthChannel = tonic::service::interceptor::InterceptedService::new(channel, bearer);
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    let mut request = tonic::Request::new(body);
    request.set_timeout(Duration::from_secs(5));
    if path.path().ends_with("/Watch") {
        grpc.server_streaming(request, path, Raw).await.map(|_| ())
    } else {
        grpc.unary(request, path, Raw).await.map(|_| ())
    }
}

/// Reasons that mean "refused for who you are".
const AUTH_REASONS: &[&str] = &[
    "TOKEN_MISSING",
    "TOKEN_MALFORMED",
    "TOKEN_KEY_UNKNOWN",
    "TOKEN_KEY_PURPOSE_MISMATCH",
    "TOKEN_KEY_REVOKED",
    "TOKEN_SIGNATURE_INVALID",
    "TOKEN_EXPIRED",
    "TOKEN_NOT_YET_VALID",
    "TOKEN_AUDIENCE_MISMATCH",
    "TOKEN_TOO_MANY_PERMISSIONS",
    "TOKEN_LIFETIME_TOO_LONG",
    "TOKEN_TOO_LARGE",
    "TOKEN_REVOKED",
    "PERMISSION_MISSING",
    "TENANT_OUT_OF_SCOPE",
    "AUTH_FAILURES_THROTTLED",
];

fn seconds_now() -> u64 {
    now_ms() / 1000
}

fn claims(sub: &str, tenant: Option<&str>, permissions: &[&str]) -> TokenClaims {
    let now = Duration::from_millis(now_ms());
    let permissions = permissions.iter().map(|permission| (*permission).to_owned()).collect();
    let mut claims = TokenClaims::new(sub, "keel", permissions, now, Duration::from_secs(3600));
    claims.tenant = tenant.map(str::to_owned);
    claims
}

/// A JWT built by hand: `claims` signed with `key`, `kid` in the header
/// (so any claim, any lifetime, and a signature by another key than `kid`).
fn issue_as(key: &KeyPair, kid: &str, claims: &TokenClaims) -> Result<String> {
    let encode = |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
    let header = serde_json::json!({"typ": "JWT", "alg": "EdDSA", "kid": kid});
    let signing_input = format!("{}.{}", encode(header.to_string().as_bytes()), encode(&serde_json::to_vec(claims)?));
    Ok(format!("{signing_input}.{}", encode(&key.sign(signing_input.as_bytes()))))
}

/// Every permission there is, granted one by one (the wildcard counts only
/// for tokens not scoped to a tenant).
const ALL_PERMISSIONS: &[&str] = &[
    "registry.read",
    "registry.publish",
    "registry.yank",
    "tenant.read",
    "tenant.write",
    "policy.read",
    "policy.write",
    "policy.evaluate",
    "events.read",
    "events.publish",
    "trust.read",
    "token.revoke",
    "cluster.read",
    "cluster.admin",
    "admission.admit",
    "audit.read",
];

#[tokio::test]
async fn every_rpc_refuses_every_bad_token_with_its_reason_and_changes_nothing() -> Result<()> {
    // A failure budget above what the matrix spends (throttling has its own test).
    let node = KeelProcess::start_with_env(&[("KEEL_API__AUTH_FAILURE_BURST", "100000")]).await?;
    let admin = node.token.clone().context("a dev node has an admin token")?;
    let api = KeyPair::read_secret_file(&node.data_dir().join("dev-api.key"))?;
    let kid = api.key_id();
    let fixture = Fixture::new(&node).await?;
    let root = KeyPair::read_secret_file(&node.dev_root_key())?;
    let client = keel_client::KeelClient::new(
        keel_client::ClientConfig::new([node.endpoint.clone()]).with_token(node.bearer_token()),
    )?;

    // A second API-token key, to be revoked; a token signed by it.
    let doomed = KeyPair::generate();
    fixture.add_key(&node, &doomed, crate::fixture::KeyOptions::purpose(pb::KeyPurpose::ApiToken), None).await?;
    let by_doomed = issue(&doomed, &claims("bob", None, &["*"]))?;
    client.revoke_key_signed(&doomed.key_id(), &[&root]).await?;
    // A token whose jti is revoked.
    let revoked = claims("carol", None, &["*"]);
    let revoked_token = issue(&api, &revoked)?;
    client.revoke_token(&revoked.jti, revoked.exp * 1000).await?;

    let now = seconds_now();
    let expired = TokenClaims { iat: now - 7200, nbf: now - 7200, exp: now - 3600, ..claims("dave", None, &["*"]) };
    let early = TokenClaims { nbf: now + 3600, exp: now + 7200, ..claims("erin", None, &["*"]) };
    let elsewhere = TokenClaims { aud: "another-cluster".into(), ..claims("frank", None, &["*"]) };
    let stranger = KeyPair::generate();
    let many: Vec<String> = (0..101).map(|i| format!("p{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let wide: Vec<String> = (0..100).map(|i| format!("{i:0>90}")).collect();
    let wide: Vec<&str> = wide.iter().map(String::as_str).collect();
    let long_lived = TokenClaims { exp: now + 25 * 3600, ..claims("heidi", None, &["*"]) };
    let kinds: Vec<(&str, Option<String>)> = vec![
        ("too large", Some(issue_as(&api, &kid, &claims("ivan", None, &wide))?)),
        ("too many permissions", Some(issue_as(&api, &kid, &claims("judy", None, &many))?)),
        ("too long-lived", Some(issue_as(&api, &kid, &long_lived)?)),
        ("malformed", Some("not.a-token".to_owned())),
        ("no token", None),
        ("expired", Some(issue(&api, &expired)?)),
        ("not yet valid", Some(issue(&api, &early)?)),
        ("bad signature", Some(issue_as(&stranger, &kid, &claims("mallory", None, &["*"]))?)),
        ("wrong audience", Some(issue(&api, &elsewhere)?)),
        ("revoked jti", Some(revoked_token)),
        ("revoked key", Some(by_doomed)),
        ("missing permission", Some(issue(&api, &claims("grace", None, &["nothing.here"]))?)),
        ("other tenant", Some(issue(&api, &claims("intruder", Some("other"), ALL_PERMISSIONS))?)),
    ];

    let digest = node.status().await?.state_digest;
    let mut failures = Vec::new();
    for (kind, token) in &kinds {
        for (path, scope, body) in rpcs() {
            let answer = call(&node, path, body, token.as_deref()).await;
            let (code, reason) = match &answer {
                Ok(()) => (Code::Ok, String::new()),
                Err(status) => (status.code(), reason_of(status)),
            };
            let expected: Option<(Code, &str)> = match (*kind, scope) {
                ("too large", _) => Some((Code::Unauthenticated, "TOKEN_TOO_LARGE")),
                ("too many permissions", _) => Some((Code::Unauthenticated, "TOKEN_TOO_MANY_PERMISSIONS")),
                ("too long-lived", _) => Some((Code::Unauthenticated, "TOKEN_LIFETIME_TOO_LONG")),
                ("malformed", _) => Some((Code::Unauthenticated, "TOKEN_MALFORMED")),
                ("no token", Scope::RootSigned) => None,
                ("no token", _) => Some((Code::Unauthenticated, "TOKEN_MISSING")),
                ("expired", _) => Some((Code::Unauthenticated, "TOKEN_EXPIRED")),
                ("not yet valid", _) => Some((Code::Unauthenticated, "TOKEN_NOT_YET_VALID")),
                ("bad signature", _) => Some((Code::Unauthenticated, "TOKEN_SIGNATURE_INVALID")),
                ("wrong audience", _) => Some((Code::Unauthenticated, "TOKEN_AUDIENCE_MISMATCH")),
                ("revoked jti", _) => Some((Code::Unauthenticated, "TOKEN_REVOKED")),
                ("revoked key", _) => Some((Code::Unauthenticated, "TOKEN_KEY_REVOKED")),
                ("missing permission", Scope::RootSigned) => None,
                ("missing permission", _) => Some((Code::PermissionDenied, "PERMISSION_MISSING")),
                ("other tenant", Scope::Shared | Scope::TenantList) => None,
                ("other tenant", _) => Some((Code::PermissionDenied, "TENANT_OUT_OF_SCOPE")),
                _ => bail!("unexpected kind {kind}"),
            };
            match expected {
                Some((want_code, want_reason)) if (code, reason.as_str()) != (want_code, want_reason) => {
                    failures.push(format!("{kind} {path}: {code:?} {reason}, expected {want_code:?} {want_reason}"));
                }
                None if AUTH_REASONS.contains(&reason.as_str()) => {
                    failures.push(format!("{kind} {path}: refused as {code:?} {reason}, expected to pass"));
                }
                _ => {}
            }
        }
    }
    ensure!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    ensure!(node.status().await?.state_digest == digest, "a refused request changed the state");

    // The valid admin token passes every RPC's authentication (what follows
    // is the RPC's own business).
    for (path, _, body) in rpcs() {
        if let Err(status) = call(&node, path, body, Some(&admin)).await {
            ensure!(!AUTH_REASONS.contains(&reason_of(&status).as_str()), "admin on {path}: {status:?}");
        }
    }
    // Health stays open.
    call(&node, "/grpc.health.v1.Health/Check", Vec::new(), None).await?;
    Ok(())
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_throttled_but_a_valid_token_is_still_served() -> Result<()> {
    let node = KeelProcess::start_with_env(&[
        ("KEEL_API__AUTH_FAILURE_BURST", "5"),
        ("KEEL_API__AUTH_FAILURES_PER_SOURCE_PER_S", "1"),
    ])
    .await?;
    let status = "/keel.v1.ClusterService/GetStatus";
    let body = || pb::GetStatusRequest::default().encode_to_vec();
    let mut reasons = Vec::new();
    for _ in 0..8 {
        let answer = call(&node, status, body(), Some("not-a-token")).await;
        reasons.push(answer.err().map(|status| reason_of(&status)).unwrap_or_default());
    }
    ensure!(reasons[..5].iter().all(|reason| reason == "TOKEN_MALFORMED"), "{reasons:?}");
    ensure!(reasons[5..].iter().all(|reason| reason == "AUTH_FAILURES_THROTTLED"), "{reasons:?}");
    // The throttled answer says when to come back.
    let throttled = call(&node, status, body(), None).await.err().context("throttled")?;
    ensure!(throttled.code() == Code::ResourceExhausted, "{throttled:?}");
    let retry = tonic_types::StatusExt::get_details_retry_info(&throttled).and_then(|info| info.retry_delay);
    ensure!(retry.is_some_and(|delay| delay > Duration::ZERO), "{throttled:?}");
    // A valid token from the same address is never locked out.
    call(&node, status, body(), node.token.as_deref()).await?;
    Ok(())
}

/// A local address that is not loopback (`None` on a machine without one).
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing; it only picks the outgoing address.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("10.255.255.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A TLS node (no trust roots: it never gets ready, which the ops port does
/// not need) with its ops port on every interface, exposing as `expose` says.
async fn ops_node(expose: Option<&str>) -> Result<KeelProcess> {
    let dir = tempfile::tempdir()?;
    let ca = keel_client::certs::generate_ca("ops test CA", 30)?;
    let tls = keel_chaos::cluster::tls_section(&ca, dir.path(), "node-1", std::net::Ipv4Addr::LOCALHOST)?;
    let expose = expose.map(|expose| format!("[ops]\nexpose = \"{expose}\"\n")).unwrap_or_default();
    let root = KeyPair::generate().write_files(&dir.path().join("root"))?.public;
    let config = format!(
        "[listen]\nclient = \"127.0.0.1:0\"\npeer = \"127.0.0.1:0\"\nops = \"0.0.0.0:0\"\n\
         ops_plaintext_off_loopback = true\n[trust]\nroot_public_keys = [\"{}\"]\n{tls}{expose}",
        root.display()
    );
    let path = dir.path().join("keel.toml");
    std::fs::write(&path, config)?;
    let mut node = KeelProcess::new(vec!["--config".into(), path.display().to_string()])?.with_tls(ca.cert_pem);
    node.launch().await?;
    // The config and certificates are read at start; the directory may go.
    drop(dir);
    Ok(node)
}

#[tokio::test]
async fn diagnostics_answer_loopback_callers_only_unless_exposed() -> Result<()> {
    let Some(ip) = non_loopback_ip() else {
        println!("skipping: this machine has no non-loopback address");
        return Ok(());
    };
    use keel_chaos::process::http_get;
    let node = ops_node(None).await?;
    let port = node.ops_addr.rsplit_once(':').map(|(_, port)| port.to_owned()).context("ops port")?;
    let remote = format!("{ip}:{port}");
    let local = format!("127.0.0.1:{port}");
    for path in ["/diagz", "/metrics"] {
        let (code, body) = http_get(&remote, path).await?;
        ensure!(code == 403 && body.contains("ops.expose"), "{path} from {ip}: {code} {body}");
        ensure!(http_get(&local, path).await?.0 == 200, "{path} from loopback");
    }
    ensure!(http_get(&remote, "/healthz").await?.0 == 200, "/healthz answers everyone");
    ensure!(matches!(http_get(&remote, "/readyz").await?.0, 200 | 503), "/readyz answers everyone");

    let exposed = ops_node(Some("all")).await?;
    let port = exposed.ops_addr.rsplit_once(':').map(|(_, port)| port.to_owned()).context("ops port")?;
    ensure!(http_get(&format!("{ip}:{port}"), "/diagz").await?.0 == 200, "expose = all serves /diagz to anyone");
    Ok(())
}

#[tokio::test]
async fn with_client_certificates_required_a_tokens_sub_must_be_the_certificates_identity() -> Result<()> {
    use keel_client::certs;
    let dir = tempfile::tempdir()?;
    let ca = certs::generate_ca("binding test CA", 30)?;
    let tls = keel_chaos::cluster::tls_section(&ca, dir.path(), "node-1", std::net::Ipv4Addr::LOCALHOST)?;
    let root = KeyPair::generate().write_files(&dir.path().join("root"))?.public;
    let api = KeyPair::generate();
    let api_pub = api.write_files(&dir.path().join("api"))?.public;
    let config = format!(
        "[listen]\nclient = \"127.0.0.1:0\"\npeer = \"127.0.0.1:0\"\nops = \"127.0.0.1:0\"\n\
         [trust]\nroot_public_keys = [\"{}\"]\napi_token_public_keys = [\"{}\"]\n{tls}require_client_certs = true\n",
        root.display(),
        api_pub.display()
    );
    let path = dir.path().join("keel.toml");
    std::fs::write(&path, config)?;
    let mut node = KeelProcess::new(vec!["--config".into(), path.display().to_string()])?.with_tls(ca.cert_pem.clone());
    node.launch().await?;
    // Alice's client certificate, and tokens for alice and for bob.
    let alice = certs::issue(&ca, "alice", &["alice".to_owned()], certs::Usage::Client, 20)?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca.cert_pem))
        .identity(tonic::transport::Identity::from_pem(&alice.cert_pem, &alice.key_pem))
        .domain_name("127.0.0.1");
    let channel = tonic::transport::Channel::from_shared(node.endpoint.clone())?.tls_config(tls)?.connect().await?;
    let status_with = |token: String| {
        let channel = channel.clone();
        async move {
            let bearer = keel_chaos::process::Bearer::new(Some(&token))?;
            let mut client = pb::cluster_service_client::ClusterServiceClient::new(
                tonic::service::interceptor::InterceptedService::new(channel, bearer),
            );
            anyhow::Ok(client.get_status(pb::GetStatusRequest {}).await)
        }
    };
    let as_alice = issue(&api, &claims("alice", None, &["cluster.read"]))?;
    let as_bob = issue(&api, &claims("bob", None, &["cluster.read"]))?;
    // Alice's token is accepted once the trust store is bootstrapped.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while status_with(as_alice.clone()).await?.is_err() {
        ensure!(std::time::Instant::now() < deadline, "alice's token was never accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match status_with(as_bob).await? {
        Err(status) if status.code() == Code::Unauthenticated && reason_of(&status) == "TOKEN_SUBJECT_MISMATCH" => {}
        other => bail!("bob's token on alice's certificate got {other:?}"),
    }
    drop(dir);
    Ok(())
}

#[tokio::test]
async fn a_watch_ends_when_its_token_is_revoked() -> Result<()> {
    let node = KeelProcess::start().await?;
    let api = KeyPair::read_secret_file(&node.data_dir().join("dev-api.key"))?;
    let watcher = claims("walter", None, &["events.read"]);
    let token = issue(&api, &watcher)?;
    let channel = node.raw_channel().await?;
    let mut events = pb::event_service_client::EventServiceClient::new(
        tonic::service::interceptor::InterceptedService::new(channel, keel_chaos::process::Bearer::new(Some(&token))?),
    );
    let mut stream =
        events.watch(pb::WatchRequest { progress_interval_ms: 100, ..Default::default() }).await?.into_inner();
    ensure!(stream.message().await?.is_some(), "the watch starts");
    let client = keel_client::KeelClient::new(
        keel_client::ClientConfig::new([node.endpoint.clone()]).with_token(node.bearer_token()),
    )?;
    client.revoke_token(&watcher.jti, watcher.exp * 1000).await?;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Err(anyhow::anyhow!("the stream ended without a status")),
                Err(status) => return Ok(status),
            }
        }
    })
    .await
    .context("the watch outlived its token's revocation by 5 s")??;
    ensure!(ended.code() == Code::Unauthenticated && reason_of(&ended) == "TOKEN_REVOKED", "{ended:?}");
    Ok(())
}
