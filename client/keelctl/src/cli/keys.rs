//! `keelctl keys`: key files, made locally; nothing is sent anywhere.

use super::error::CliError;
use super::output::Output;
use super::table::Table;
use keel_client::key_pair::KeyPair;
use serde::Serialize;
use std::path::PathBuf;

/// `keelctl keys …`
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Generate a key pair: writes OUT.key (secret, mode 0600) and OUT.pub.
    Generate {
        /// Path prefix of the two files; existing files are never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

/// What `keys generate` reports.
#[derive(Debug, Serialize)]
pub struct GeneratedKeyView {
    /// The new key's id.
    pub key_id: String,
    /// Lowercase hex public key.
    pub public_key: String,
    /// The secret key file.
    pub secret_file: String,
    /// The public key file.
    pub public_file: String,
}

/// Runs a `keys` command.
pub fn run(command: KeysCommand, output: &mut Output<'_>) -> Result<(), CliError> {
    match command {
        KeysCommand::Generate { out } => {
            let key_pair = KeyPair::generate();
            let paths = key_pair.write_files(&out)?;
            let view = GeneratedKeyView {
                key_id: key_pair.key_id(),
                public_key: hex::encode(key_pair.public_key()),
                secret_file: paths.secret.display().to_string(),
                public_file: paths.public.display().to_string(),
            };
            output.show(&view, |view| {
                let mut table = Table::fields();
                table
                    .field("key_id", &view.key_id)
                    .field("public_key", &view.public_key)
                    .field("secret_file", &view.secret_file)
                    .field("public_file", &view.public_file);
                table
            })
        }
    }
}
