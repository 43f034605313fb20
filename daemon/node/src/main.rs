//! `keeld`: the Keel daemon.
//!
//! `keeld --dev` runs the embedded default: one node, data in `./keel-data`,
//! plaintext on loopback ports 7400 (gRPC), 7401 (peer), 7402 (ops HTTP).

use clap::Parser;
use figment::Figment;
use figment::providers::Serialized;
use keel_node::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// The Keel daemon.
#[derive(Debug, Parser)]
#[command(name = "keeld", version, about = "Keel: a distributed governance kernel")]
struct Flags {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Development mode: single node, plaintext on loopback, generated root key.
    #[arg(long)]
    dev: bool,
    /// Data directory (RocksDB, dev root key). Default ./keel-data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Client gRPC listen address (port 0: any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Peer listen address.
    #[arg(long)]
    peer_listen: Option<SocketAddr>,
    /// Ops HTTP listen address.
    #[arg(long)]
    ops_listen: Option<SocketAddr>,
    /// Raft node id.
    #[arg(long)]
    node_id: Option<u64>,
    /// Region name.
    #[arg(long)]
    region: Option<String>,
    /// Zone name.
    #[arg(long)]
    zone: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
}

impl Flags {
    /// Only the flags given, as figment overrides.
    fn overrides(&self) -> Figment {
        let mut figment = Figment::new();
        if self.dev {
            figment = figment.merge(Serialized::default("dev", true));
        }
        macro_rules! set {
            ($key:literal, $value:expr) => {
                if let Some(value) = &$value {
                    figment = figment.merge(Serialized::default($key, value));
                }
            };
        }
        set!("data_dir", self.data_dir);
        set!("listen.client", self.listen);
        set!("listen.peer", self.peer_listen);
        set!("listen.ops", self.ops_listen);
        set!("node.id", self.node_id);
        set!("node.region", self.region);
        set!("node.zone", self.zone);
        set!("log.format", self.log_format);
        figment
    }
}

/// Counts every allocation, so a judging child (`keeld __judge`) can cap
/// its own memory exactly (see `keel_node::judge`). Uncapped in the daemon.
#[global_allocator]
static ALLOCATOR: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

/// Caps further allocations at `budget` bytes above what is allocated now,
/// or lifts the cap.
fn set_judging_budget(budget: Option<usize>) {
    let limit = match budget {
        Some(budget) => ALLOCATOR.allocated().saturating_add(budget),
        None => usize::MAX,
    };
    // Raising a limit cannot fail; lowering it fails only below what is
    // allocated, which `allocated() + budget` never is.
    let _ = ALLOCATOR.set_limit(limit);
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|arg| arg == keel_node::judge::JUDGE_SUBCOMMAND) {
        return keel_node::judge::child_main(set_judging_budget);
    }
    let flags = Flags::parse();
    let config = match Config::load(flags.config.as_deref(), flags.overrides()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("keeld: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keeld: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the OTLP exporters' channels are spawned on it.
    let entered = runtime.enter();
    let telemetry = keel_node::telemetry::init(&config.log, &config.telemetry, &config.node);
    drop(entered);
    let telemetry = match telemetry {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("keeld: {error}");
            return ExitCode::from(2);
        }
    };
    let code = match runtime.block_on(keel_node::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "keeld stopped");
            eprintln!("keeld: {error:#}");
            ExitCode::FAILURE
        }
    };
    // The last spans and metrics leave while the runtime still runs.
    telemetry.shutdown();
    code
}
