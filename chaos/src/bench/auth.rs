//! `keel-bench --auth`: what authentication costs.
//!
//! Two measurements, one run:
//! - the edge's check in process (keel-node's `Authenticator` over a trust
//!   store with one API-token key): p50/p99 of a first-time check (a token
//!   not seen before: JWT parse + EdDSA verify + claims) and of a cached one
//!   (SHA-256 of the token, a map lookup, the revocation/expiry re-check;
//!   `CACHED_CALLERS` callers taking turns);
//! - serializable `GetTenant` throughput of two dev nodes side by side, one
//!   with `api.authentication = "required"` (every call sends the admin
//!   token) and one with `"off"`, at each client count.

use super::stats::percentile;
use super::workload::{LoadResult, Writer, run_load};
use crate::process::{AuthChannel, KeelProcess};
use anyhow::{Context, Result};
use keel_kernel::token::Claims;
use keel_kernel::trust_store::{KeyPurpose, KeySpec, TrustStore};
use keel_kernel::{Command, KernelState, Proposal};
use keel_node::edge::authn::{AuthMode, AuthSettings, Authenticator, TrustSource};
use keel_proto::v1 as pb;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Checks timed per kind.
const CHECKS: usize = 20_000;
/// Distinct callers in the cached runs.
const CACHED_CALLERS: usize = 1_000;
/// Tenant every read asks for.
const TENANT: &str = "bench-reader";

/// What `--auth` measured.
#[derive(Debug, Clone, Serialize)]
pub struct AuthResult {
    /// First-time check (verify), µs.
    pub first_p50_us: f64,
    /// First-time check, p99, µs.
    pub first_p99_us: f64,
    /// Cached check, µs.
    pub cached_p50_us: f64,
    /// Cached check, p99, µs.
    pub cached_p99_us: f64,
    /// Reads with authentication required, per client count.
    pub reads_on: Vec<LoadResult>,
    /// Reads with authentication off, per client count.
    pub reads_off: Vec<LoadResult>,
}

#[derive(Debug)]
struct FixedTrust(KernelState);

impl TrustSource for FixedTrust {
    fn with_trust(&self, f: &mut dyn FnMut(&TrustStore)) {
        f(self.0.trust());
    }
}

fn micros(samples: &mut [u64], p: f64) -> f64 {
    samples.sort_unstable();
    percentile(samples, p).unwrap_or(0) as f64 / 1000.0
}

/// p50/p99 of first-time and cached checks, in µs.
fn micro() -> Result<(f64, f64, f64, f64)> {
    let api = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let root = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let spec = |key: &ed25519_dalek::SigningKey, purpose| KeySpec {
        public_key: key.verifying_key().to_bytes(),
        purposes: BTreeSet::from([purpose]),
        not_before_ms: 0,
        not_after_ms: None,
    };
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let mut state = KernelState::default();
    let bootstrap = Command::BootstrapTrust {
        root_keys: vec![spec(&root, KeyPurpose::Root)],
        api_token_keys: vec![spec(&api, KeyPurpose::ApiToken)],
    };
    let proposal = Proposal {
        leader_time_ms: now_ms,
        semantics_version: keel_kernel::judge::SEMANTICS_VERSION,
        command: bootstrap,
        idempotency_key: None,
        actor: None,
    };
    state.apply(1, &proposal).map_err(|rejection| anyhow::anyhow!("bootstrap: {rejection}"))?;
    let settings = AuthSettings {
        mode: AuthMode::Required,
        audience: "keel".into(),
        bind_client_certificates: false,
        failure_burst: 1,
        failures_per_s: 1,
    };
    let authenticator = Authenticator::new(
        &settings,
        Arc::new(FixedTrust(state)),
        Arc::new(keel_node::leader_clock::LeaderClock::new(5_000, 0)),
        keel_node::edge::RpcMetrics::default(),
    );
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&api)?;
    let key = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(keel_kernel::signing::key_id_of(&api.verifying_key().to_bytes()));
    let now_s = now_ms / 1000;
    let tokens: Vec<String> = (0..CHECKS)
        .map(|index| {
            let claims = Claims {
                sub: format!("user-{index}"),
                tenant: Some("acme".into()),
                permissions: vec!["tenant.read".into(), "events.read".into(), "policy.evaluate".into()],
                iat: now_s,
                nbf: now_s,
                exp: now_s + 3600,
                jti: format!("jti-{index}"),
                aud: "keel".into(),
            };
            jsonwebtoken::encode(&header, &claims, &key)
        })
        .collect::<Result<_, _>>()?;
    let mut first = Vec::with_capacity(CHECKS);
    for token in &tokens {
        let started = Instant::now();
        authenticator.principal(token).map_err(|error| anyhow::anyhow!("a bench token: {error}"))?;
        first.push(started.elapsed().as_nanos() as u64);
    }
    // A working set of callers that fits the cache, warmed first.
    let working_set = &tokens[..CACHED_CALLERS];
    for token in working_set {
        authenticator.principal(token).map_err(|error| anyhow::anyhow!("a bench token: {error}"))?;
    }
    let mut cached = Vec::with_capacity(CHECKS);
    for token in working_set.iter().cycle().take(CHECKS) {
        let started = Instant::now();
        authenticator.principal(token).map_err(|error| anyhow::anyhow!("a bench token: {error}"))?;
        cached.push(started.elapsed().as_nanos() as u64);
    }
    Ok((micros(&mut first, 50.0), micros(&mut first, 99.0), micros(&mut cached, 50.0), micros(&mut cached, 99.0)))
}

/// Serializable `GetTenant` of one tenant.
#[derive(Clone)]
struct Reader(pb::tenant_service_client::TenantServiceClient<AuthChannel>);

impl Writer for Reader {
    async fn write(&mut self, _id: String, timeout: Duration) -> Result<()> {
        let mut request = tonic::Request::new(pb::GetTenantRequest {
            name: TENANT.into(),
            consistency: pb::ReadConsistency::Serializable as i32,
        });
        request.set_timeout(timeout);
        self.0.get_tenant(request).await?;
        Ok(())
    }
}

async fn dev_node(keeld: &std::path::Path, authentication: &str) -> Result<KeelProcess> {
    let args = ["--dev", "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"];
    let mut node = KeelProcess::new(args.iter().map(|a| a.to_string()).collect())?.with_binary(keeld.to_path_buf());
    node.set_env("KEEL_API__AUTHENTICATION", authentication);
    node.launch().await?;
    node.wait_ready().await?;
    let mut tenants = pb::tenant_service_client::TenantServiceClient::new(node.channel().await?);
    let tenant = super::workload::bench_tenant(TENANT.into(), "Reader".into());
    tenants.create_tenant(pb::CreateTenantRequest { tenant: Some(tenant), ..Default::default() }).await?;
    Ok(node)
}

/// Runs both measurements.
pub async fn bench_auth(keeld: PathBuf, clients: &[usize], duration: Duration) -> Result<AuthResult> {
    eprintln!("keel: timing {CHECKS} first-time and {CHECKS} cached token checks");
    let (first_p50_us, first_p99_us, cached_p50_us, cached_p99_us) = micro().context("the check microbenchmark")?;
    let on = dev_node(&keeld, "required").await.context("a node with authentication required")?;
    let off = dev_node(&keeld, "off").await.context("a node with authentication off")?;
    let mut reads_on = Vec::new();
    let mut reads_off = Vec::new();
    for (run, clients) in clients.iter().copied().enumerate() {
        // The same load on each node, one after the other; which goes first
        // alternates by run (repeat a client count to see both orders).
        let mut order = [(&on, "on"), (&off, "off")];
        if run % 2 == 1 {
            order.reverse();
        }
        for (node, label) in order {
            let reader = Reader(pb::tenant_service_client::TenantServiceClient::new(node.channel().await?));
            run_load(reader.clone(), &format!("warm-{label}-{run}"), clients, Duration::from_secs(1)).await?;
            let result = run_load(reader, &format!("{label}-{run}"), clients, duration).await?;
            eprintln!("keel: auth {label}, {clients} clients: {:.0} reads/s", result.ops_per_s);
            match label {
                "on" => reads_on.push(result),
                _ => reads_off.push(result),
            }
        }
    }
    Ok(AuthResult { first_p50_us, first_p99_us, cached_p50_us, cached_p99_us, reads_on, reads_off })
}

/// The `--auth` table.
pub fn render(out: &mut String, result: &AuthResult) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "\n### Authentication cost\n");
    let _ = writeln!(out, "| token check (in process) | p50 µs | p99 µs |\n|---|---|---|");
    let _ = writeln!(out, "| first time (verify) | {:.1} | {:.1} |", result.first_p50_us, result.first_p99_us);
    let _ = writeln!(out, "| cached | {:.2} | {:.2} |", result.cached_p50_us, result.cached_p99_us);
    let _ = writeln!(
        out,
        "\n| serializable GetTenant, clients | auth on reads/s | auth off reads/s | on/off | p99 on ms | p99 off ms |\n|---|---|---|---|---|---|"
    );
    for (on, off) in result.reads_on.iter().zip(&result.reads_off) {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
            on.clients,
            on.ops_per_s,
            off.ops_per_s,
            on.ops_per_s / off.ops_per_s.max(f64::MIN_POSITIVE),
            on.p99_us as f64 / 1000.0,
            off.p99_us as f64 / 1000.0
        );
    }
}
