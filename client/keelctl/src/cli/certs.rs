//! `keelctl certs`: a cluster CA and node/client certificates, made locally
//! (nothing is sent anywhere). Node certificates serve TLS and authenticate as
//! TLS clients to peers, so they carry both usages by default.

use super::error::CliError;
use super::output::Output;
use super::table::Table;
use keel_client::certs::{self, Usage};
use serde::Serialize;
use std::path::PathBuf;

/// `keelctl certs …`
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create a cluster CA: DIR/ca.crt and DIR/ca.key (mode 0600).
    Init {
        /// Directory for the CA files; existing files are never overwritten.
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "keel cluster CA")]
        common_name: String,
        /// Validity in days.
        #[arg(long, default_value_t = certs::CA_VALID_DAYS_DEFAULT)]
        valid_days: u32,
    },
    /// Issue a certificate signed by the CA in --ca: OUT/NAME.crt and OUT/NAME.key.
    Issue {
        /// Directory holding ca.crt and ca.key.
        #[arg(long)]
        ca: PathBuf,
        /// Certificate name (common name and file stem), e.g. node-1.
        name: String,
        /// Subject alternative names: the host part of the node's client and
        /// peer addresses (IP or DNS name). Repeatable.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// What the certificate is for.
        #[arg(long, value_enum, default_value_t = UsageArg::Node)]
        usage: UsageArg,
        /// Output directory (default: the CA directory).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Validity in days.
        #[arg(long, default_value_t = certs::ISSUED_VALID_DAYS_DEFAULT)]
        valid_days: u32,
    },
}

/// `--usage` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UsageArg {
    /// A node: TLS server and TLS client to its peers.
    Node,
    /// A server only.
    Server,
    /// A client only (an operator or a service calling Keel).
    Client,
}

impl From<UsageArg> for Usage {
    fn from(usage: UsageArg) -> Usage {
        match usage {
            UsageArg::Node => Usage::Both,
            UsageArg::Server => Usage::Server,
            UsageArg::Client => Usage::Client,
        }
    }
}

/// What a `certs` command wrote.
#[derive(Debug, Serialize)]
pub struct CertFilesView {
    /// The certificate file.
    pub cert_file: String,
    /// The private key file.
    pub key_file: String,
}

/// Runs a `certs` command.
pub fn run(command: CertsCommand, output: &mut Output<'_>) -> Result<(), CliError> {
    let paths = match command {
        CertsCommand::Init { dir, common_name, valid_days } => {
            let ca = certs::generate_ca(&common_name, valid_days)?;
            certs::write_ca(&ca, &dir)?
        }
        CertsCommand::Issue { ca, name, sans, usage, out, valid_days } => {
            let bundle = certs::read_ca(&ca)?;
            let issued = certs::issue(&bundle, &name, &sans, usage.into(), valid_days)?;
            certs::write_issued(&issued, out.as_deref().unwrap_or(&ca), &name)?
        }
    };
    let view = CertFilesView { cert_file: paths.cert.display().to_string(), key_file: paths.key.display().to_string() };
    output.show(&view, |view| {
        let mut table = Table::fields();
        table.field("cert_file", &view.cert_file).field("key_file", &view.key_file);
        table
    })
}
