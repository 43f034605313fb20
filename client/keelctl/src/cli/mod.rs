//! The `keelctl` command line: argument definitions and dispatch.
//!
//! ```text
//!   argv ──clap──▶ Cli{global, command} ──run()──▶ keys | trust | engine | tenant | policy | cluster | events
//!                                                    │ local work (key files, signing)
//!                                                    │ KeelClient call(s)
//!                                                    ▼
//!                                  Output: table or JSON on stdout, "served by" on stderr
//!                                  CliError: "error: REASON: message" on stderr + exit code
//! ```
//!
//! It lives in the library, rather than in the binary, so that parsing and
//! commands are unit-tested with the crate; `src/bin/keelctl.rs` only parses
//! arguments, runs [`run`] and maps the result to an exit code.

pub mod admit;
pub mod audit;
pub mod certs;
pub mod cluster;
pub mod engine;
pub mod error;
pub mod events;
pub mod keys;
pub mod output;
pub mod policy;
pub mod table;
pub mod tenant;
pub mod timestamp;
pub mod token;
pub mod trust;

use error::CliError;
use keel_client::client::{ClientConfig, KeelClient};
use keel_client::limits::{CALL_TIMEOUT_DEFAULT_MS, CONNECT_TIMEOUT_DEFAULT_MS};
use keel_client::pb;
use keel_client::tls::ClientTls;
use keel_client::token::BearerToken;
use output::{Output, OutputFormat};
use std::path::PathBuf;
use std::time::Duration;

/// Endpoint used when neither `--endpoints` nor `KEEL_ENDPOINTS` is set.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7400";

/// `keelctl`: administer a Keel cluster.
#[derive(Debug, clap::Parser)]
#[command(
    name = "keelctl",
    version,
    about = "Administer a Keel cluster: keys, engines, tenants, policies, status, membership."
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Comma-separated `http://host:port` addresses (`https://` with
    /// `--ca-file`), tried in order.
    #[arg(long, global = true, env = "KEEL_ENDPOINTS", value_delimiter = ',', default_value = DEFAULT_ENDPOINT)]
    pub endpoints: Vec<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Deadline of each call in milliseconds, retries included.
    #[arg(
        long,
        global = true,
        env = "KEEL_TIMEOUT_MS",
        default_value_t = CALL_TIMEOUT_DEFAULT_MS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout_ms: u64,
    /// Region whose members serve `--consistency serializable` reads, when
    /// one is reachable. (Inside `cluster join`, `--region` is the new
    /// member's region instead.)
    #[arg(long, global = true, env = "KEEL_REGION")]
    pub region: Option<String>,
    /// PEM file with the cluster CA: endpoints are then `https://host:port`
    /// and only certificates from this CA are trusted.
    #[arg(long, global = true, env = "KEEL_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate to present (with `--key-file`), for clusters
    /// that require client certificates. Needs `--ca-file`.
    #[arg(long, global = true, env = "KEEL_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `--cert-file`.
    #[arg(long, global = true, env = "KEEL_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// File holding the capability token every call sends (`keelctl token
    /// issue`; `keeld --dev` writes one beside its data). Without it, the
    /// token in KEEL_TOKEN.
    #[arg(long = "token", global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The capability token itself (set it through KEEL_TOKEN).
    #[arg(long = "token-value", global = true, env = "KEEL_TOKEN", hide = true, hide_env_values = true)]
    pub token_value: Option<String>,
}

impl GlobalArgs {
    /// The token these options name: `--token FILE`, else `KEEL_TOKEN`.
    pub fn token(&self) -> Result<Option<BearerToken>, CliError> {
        let text = match (&self.token_file, &self.token_value) {
            (Some(file), _) => token::read_token_file(file)?,
            (None, Some(value)) if !value.trim().is_empty() => value.clone(),
            _ => return Ok(None),
        };
        Ok(Some(BearerToken::new(&text)?))
    }

    /// The TLS settings these options ask for; a client certificate without
    /// a CA file is refused.
    pub fn tls(&self) -> Result<Option<ClientTls>, CliError> {
        let Some(ca_file) = &self.ca_file else {
            if self.cert_file.is_some() || self.key_file.is_some() {
                return Err(keel_client::ClientError::ConfigInvalid {
                    field: "tls.ca_file",
                    problem: "is required with --cert-file/--key-file (--ca-file or KEEL_CA_FILE)".into(),
                }
                .into());
            }
            return Ok(None);
        };
        let tls = ClientTls::new(ca_file);
        Ok(Some(match (&self.cert_file, &self.key_file) {
            (Some(cert_file), Some(key_file)) => tls.with_identity(cert_file, key_file),
            _ => tls,
        }))
    }
}

/// The command groups.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Generate Ed25519 key files.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Create a cluster CA and issue TLS certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Manage the trust store.
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// Sign, publish and read engine versions.
    #[command(subcommand)]
    Engine(engine::EngineCommand),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Put, read, evaluate and test Rego policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Inspect the cluster and change its membership.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Publish user events and watch the change stream.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Issue, show and revoke capability tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Ask whether a tenant may run an engine's action now (exit 4 when denied).
    Admit(admit::AdmitArgs),
    /// Report how an admitted call ended, for the circuit breakers.
    Outcome(admit::OutcomeArgs),
    /// Read a member's audit log and verify its chain (exit 5 when it does not verify).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// `--consistency` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ConsistencyArg {
    /// Reflects every write acknowledged before the read (through the leader).
    #[default]
    Linearizable,
    /// Served from the node's local state; may be stale.
    Serializable,
}

impl From<ConsistencyArg> for pb::ReadConsistency {
    fn from(consistency: ConsistencyArg) -> Self {
        match consistency {
            ConsistencyArg::Linearizable => pb::ReadConsistency::Linearizable,
            ConsistencyArg::Serializable => pb::ReadConsistency::Serializable,
        }
    }
}

/// Runs one parsed command, writing results to `stdout` and notes to `stderr`.
pub async fn run(cli: Cli, stdout: &mut dyn std::io::Write, stderr: &mut dyn std::io::Write) -> Result<(), CliError> {
    let mut output = Output::new(cli.global.output, stdout, stderr);
    let global = &cli.global;
    match cli.command {
        Command::Keys(command) => keys::run(command, &mut output),
        Command::Certs(command) => certs::run(command, &mut output),
        Command::Trust(command) => trust::run(command, global, &mut output).await,
        Command::Engine(command) => engine::run(command, global, &mut output).await,
        Command::Tenant(command) => tenant::run(command, global, &mut output).await,
        Command::Policy(command) => policy::run(command, global, &mut output).await,
        Command::Cluster(command) => cluster::run(command, global, &mut output).await,
        Command::Events(command) => events::run(command, global, &mut output).await,
        Command::Token(command) => token::run(command, global, &mut output).await,
        Command::Admit(args) => admit::run(args, global, &mut output).await,
        Command::Outcome(args) => admit::run_outcome(args, global, &mut output).await,
        Command::Audit(command) => audit::run(command, global, &mut output).await,
    }
}

/// A connected client for the global options.
pub(crate) async fn connect(global: &GlobalArgs) -> Result<KeelClient, CliError> {
    let call_timeout = Duration::from_millis(global.timeout_ms);
    let endpoints: Vec<String> =
        global.endpoints.iter().map(|endpoint| endpoint.trim().to_owned()).filter(|e| !e.is_empty()).collect();
    let region = global.region.as_deref().map(str::trim).filter(|region| !region.is_empty()).map(str::to_owned);
    let config = ClientConfig::new(endpoints)
        .with_preferred_region(region)
        .with_tls(global.tls()?)
        .with_token(global.token()?)
        .with_call_timeout(call_timeout)
        .with_connect_timeout(call_timeout.min(Duration::from_millis(CONNECT_TIMEOUT_DEFAULT_MS)));
    Ok(KeelClient::connect(config).await?)
}

/// The name of a protobuf enum value, or `UNKNOWN(<n>)` for a value this
/// client does not know (a newer server may add values).
pub(crate) fn enum_name(value: i32, name_of: impl Fn(i32) -> Option<&'static str>) -> String {
    name_of(value).map_or_else(|| format!("UNKNOWN({value})"), str::to_owned)
}

#[cfg(test)]
mod command_tests;
#[cfg(test)]
mod tests;
