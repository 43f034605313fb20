//! `keelctl trust`: add, list, show and revoke trust-store keys; show and
//! rotate the root metadata.
//!
//! `add-key` builds the key's spec from a public key file, signs its payload
//! with a root key file and sends `AddKey`:
//!
//! ```text
//!   --public p.pub ─┐
//!   --purpose …     ├─▶ KeySpec ──payload──▶ sign with --signer root.key ──▶ AddKey
//!   --not-before/after ┘
//! ```
//!
//! `revoke` signs `keel/v1/revoke\n` + JCS `{"key_id"}` with root key files
//! and sends `RevokeKey`; `show-root` reads `GetRoot`; `rotate-root` (in
//! `rotate_root`) builds, signs and sends the next root metadata.
//!
//! `--signer` may be repeated wherever a root signature is needed: once the
//! root threshold is above 1, a threshold of root keys must sign.

pub mod rotate_root;

use super::error::CliError;
use super::output::Output;
use super::table::Table;
use super::timestamp::{format_rfc3339, now_ms_rounded_to_second, parse_time_ms};
use super::{ConsistencyArg, GlobalArgs, connect, enum_name};
use keel_client::key_pair::KeyPair;
use keel_client::key_spec::{KeySpec, ms_from_timestamp};
use keel_client::pb;
use keel_client::public_key::PublicKey;
use serde::Serialize;
use std::path::PathBuf;

/// `keelctl trust …`
#[derive(Debug, clap::Subcommand)]
pub enum TrustCommand {
    /// Add a key, signed by a root key.
    AddKey(AddKeyArgs),
    /// List keys.
    List {
        /// Only keys with this purpose.
        #[arg(long, value_enum)]
        purpose: Option<PurposeArg>,
        /// Read consistency.
        #[arg(long, value_enum, default_value_t)]
        consistency: ConsistencyArg,
    },
    /// Show one key.
    Get {
        /// The key id.
        key_id: String,
        /// Read consistency.
        #[arg(long, value_enum, default_value_t)]
        consistency: ConsistencyArg,
    },
    /// Show the root metadata: its version and each role's keys and threshold.
    ShowRoot {
        /// Read consistency.
        #[arg(long, value_enum, default_value_t)]
        consistency: ConsistencyArg,
    },
    /// Revoke a key, signed by root keys.
    Revoke {
        /// The key id to revoke.
        key_id: String,
        /// A root key's secret key file that signs the revocation (repeat
        /// for a root threshold above 1).
        #[arg(long, required = true)]
        signer: Vec<PathBuf>,
    },
    /// Rotate the root metadata to the next version: new root keys and
    /// thresholds, signed by current and new root keys.
    RotateRoot(rotate_root::RotateRootArgs),
}

/// `keelctl trust add-key` arguments.
#[derive(Debug, clap::Args)]
pub struct AddKeyArgs {
    /// The key to add: a public key file (a secret key file also works).
    #[arg(long)]
    pub public: PathBuf,
    /// What the key may sign (repeat for several).
    #[arg(long, value_enum, required = true)]
    pub purpose: Vec<PurposeArg>,
    /// Valid from (RFC 3339 or Unix ms). Default: now, rounded down to the second.
    #[arg(long, value_parser = parse_time_ms)]
    pub not_before: Option<u64>,
    /// Valid until, exclusive (RFC 3339 or Unix ms). Default: no expiry.
    #[arg(long, value_parser = parse_time_ms)]
    pub not_after: Option<u64>,
    /// A root key's secret key file that signs the addition (repeat for a
    /// root threshold above 1).
    #[arg(long, required = true)]
    pub signer: Vec<PathBuf>,
}

/// Purposes a key added with `add-key` may hold (root keys are installed at
/// bootstrap only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PurposeArg {
    /// Signs engine manifests.
    EnginePublisher,
    /// Signs API capability tokens.
    ApiToken,
}

impl From<PurposeArg> for pb::KeyPurpose {
    fn from(purpose: PurposeArg) -> Self {
        match purpose {
            PurposeArg::EnginePublisher => pb::KeyPurpose::EnginePublisher,
            PurposeArg::ApiToken => pb::KeyPurpose::ApiToken,
        }
    }
}

/// A key as `keelctl` shows it.
#[derive(Debug, Serialize)]
pub struct KeyView {
    /// `keys/{key_id}`.
    pub name: String,
    /// The key id.
    pub key_id: String,
    /// Lowercase hex public key.
    pub public_key: String,
    /// Purpose names, e.g. `ENGINE_PUBLISHER`.
    pub purposes: Vec<String>,
    /// Valid from, Unix ms.
    pub not_before_ms: Option<u64>,
    /// Valid from, RFC 3339.
    pub not_before: Option<String>,
    /// Valid until (exclusive), Unix ms; `null` when it never expires.
    pub not_after_ms: Option<u64>,
    /// Valid until, RFC 3339.
    pub not_after: Option<String>,
    /// Revision at which it was added.
    pub create_revision: u64,
    /// Root keys that admitted it.
    pub signed_by: Vec<String>,
    /// Revision at which it was revoked; `null` when it is not revoked.
    pub revoked_revision: Option<u64>,
}

impl KeyView {
    /// The view of a key from the server.
    pub fn from_proto(key: &pb::Key) -> Self {
        let spec = key.spec.clone().unwrap_or_default();
        let not_before_ms = spec.not_before.as_ref().and_then(ms_from_timestamp);
        let not_after_ms = spec.not_after.as_ref().and_then(ms_from_timestamp);
        KeyView {
            name: key.name.clone(),
            key_id: key.key_id.clone(),
            public_key: hex::encode(&spec.public_key),
            purposes: spec.purposes.iter().map(|purpose| purpose_name(*purpose)).collect(),
            not_before_ms,
            not_before: not_before_ms.map(time_text),
            not_after_ms,
            not_after: not_after_ms.map(time_text),
            create_revision: key.create_revision,
            signed_by: key.signed_by.clone(),
            revoked_revision: (key.revoked_revision > 0).then_some(key.revoked_revision),
        }
    }

    fn add_fields(&self, table: &mut Table) {
        table
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key)
            .field("purposes", self.purposes.join(","))
            .field("not_before", self.not_before.as_deref().unwrap_or("-"))
            .field("not_after", self.not_after.as_deref().unwrap_or("never"))
            .field("create_revision", self.create_revision)
            .field("signed_by", if self.signed_by.is_empty() { "-".into() } else { self.signed_by.join(",") })
            .field(
                "revoked_revision",
                self.revoked_revision.map_or_else(|| "-".into(), |revision| revision.to_string()),
            );
    }
}

/// What `add-key` reports.
#[derive(Debug, Serialize)]
pub struct AddedKeyView {
    /// Whether this call added the key (false: it was already present).
    pub created: bool,
    /// The key.
    pub key: Option<KeyView>,
}

/// What `revoke` reports.
#[derive(Debug, Serialize)]
pub struct RevokedKeyView {
    /// Revision at which the key was revoked.
    pub revoked_revision: u64,
    /// The key.
    pub key: KeyView,
}

/// One role of the root metadata as `keelctl` shows it.
#[derive(Debug, Serialize)]
pub struct RoleView {
    /// The role's name, e.g. `engine-publisher`.
    pub role: String,
    /// Ids of the keys in the role.
    pub key_ids: Vec<String>,
    /// Signatures required.
    pub threshold: u32,
}

/// The root metadata as `keelctl` shows it.
#[derive(Debug, Serialize)]
pub struct RootView {
    /// The metadata version.
    pub version: u64,
    /// Every role.
    pub roles: Vec<RoleView>,
}

impl RootView {
    /// The view of root metadata from the server.
    pub fn from_proto(root: &pb::RootMetadata) -> Self {
        RootView {
            version: root.version,
            roles: root
                .roles
                .iter()
                .map(|role| RoleView {
                    role: role.role.clone(),
                    key_ids: role.key_ids.clone(),
                    threshold: role.threshold,
                })
                .collect(),
        }
    }

    /// One row per role.
    pub fn to_table(&self) -> Table {
        let mut table = Table::with_header(&["VERSION", "ROLE", "THRESHOLD", "KEY_IDS"]);
        for role in &self.roles {
            table.row([
                self.version.to_string(),
                role.role.clone(),
                role.threshold.to_string(),
                if role.key_ids.is_empty() { "-".into() } else { role.key_ids.join(",") },
            ]);
        }
        table
    }
}

fn purpose_name(purpose: i32) -> String {
    enum_name(purpose, |value| pb::KeyPurpose::try_from(value).ok().map(|purpose| purpose.as_str_name()))
}

fn time_text(unix_ms: u64) -> String {
    format_rfc3339(i64::try_from(unix_ms).unwrap_or(i64::MAX))
}

/// Runs a `trust` command.
pub async fn run(command: TrustCommand, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    match command {
        TrustCommand::AddKey(args) => add_key(args, global, output).await,
        TrustCommand::List { purpose, consistency } => {
            let client = connect(global).await?;
            let served = client.list_all_keys(purpose.map(pb::KeyPurpose::from), consistency.into()).await?;
            let views: Vec<KeyView> = served.value.iter().map(KeyView::from_proto).collect();
            output.show(&views, |views| {
                let mut table = Table::with_header(&[
                    "KEY_ID",
                    "PURPOSES",
                    "NOT_BEFORE",
                    "NOT_AFTER",
                    "REVISION",
                    "SIGNED_BY",
                    "REVOKED_AT",
                ]);
                for view in views {
                    table.row([
                        view.key_id.clone(),
                        view.purposes.join(","),
                        view.not_before.clone().unwrap_or_else(|| "-".into()),
                        view.not_after.clone().unwrap_or_else(|| "never".into()),
                        view.create_revision.to_string(),
                        if view.signed_by.is_empty() { "-".into() } else { view.signed_by.join(",") },
                        view.revoked_revision.map_or_else(|| "-".into(), |revision| revision.to_string()),
                    ]);
                }
                table
            })?;
            output.served_by(&served.meta);
            Ok(())
        }
        TrustCommand::Get { key_id, consistency } => {
            let client = connect(global).await?;
            let served = client.get_key(&key_id, consistency.into()).await?;
            output.show(&KeyView::from_proto(&served.value), |view| {
                let mut table = Table::fields();
                view.add_fields(&mut table);
                table
            })?;
            output.served_by(&served.meta);
            Ok(())
        }
        TrustCommand::ShowRoot { consistency } => {
            let client = connect(global).await?;
            let served = client.get_root(consistency.into()).await?;
            output.show(&RootView::from_proto(&served.value), RootView::to_table)?;
            output.served_by(&served.meta);
            Ok(())
        }
        TrustCommand::Revoke { key_id, signer } => {
            let signers = read_signers(&signer)?;
            let client = connect(global).await?;
            let served = client.revoke_key_signed(&key_id, &signers.iter().collect::<Vec<_>>()).await?;
            let view = RevokedKeyView {
                revoked_revision: served.value.revoked_revision,
                key: KeyView::from_proto(&served.value),
            };
            output.show(&view, |view| {
                let mut table = Table::fields();
                table.field("revoked_revision", view.revoked_revision);
                view.key.add_fields(&mut table);
                table
            })?;
            output.served_by(&served.meta);
            Ok(())
        }
        TrustCommand::RotateRoot(args) => rotate_root::run(args, global, output).await,
    }
}

/// Reads every `--signer` secret key file.
fn read_signers(paths: &[PathBuf]) -> Result<Vec<KeyPair>, CliError> {
    Ok(paths.iter().map(|path| KeyPair::read_secret_file(path)).collect::<Result<Vec<_>, _>>()?)
}

/// Builds, signs and sends an `AddKey` request.
async fn add_key(args: AddKeyArgs, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    let public = PublicKey::read_file(&args.public)?;
    let signers = read_signers(&args.signer)?;
    let not_before_ms = match args.not_before {
        Some(not_before_ms) => not_before_ms,
        None => now_ms_rounded_to_second().map_err(|problem| CliError::Usage { problem })?,
    };
    let spec = KeySpec::new(
        *public.bytes(),
        args.purpose.iter().copied().map(pb::KeyPurpose::from),
        not_before_ms,
        args.not_after,
    )?;
    let request = spec.add_key_request(&signers.iter().collect::<Vec<_>>())?;
    let client = connect(global).await?;
    let served = client.add_key(request).await?;
    let view = AddedKeyView { created: served.value.created, key: served.value.key.as_ref().map(KeyView::from_proto) };
    output.show(&view, |view| {
        let mut table = Table::fields();
        table.field("created", view.created);
        if let Some(key) = &view.key {
            key.add_fields(&mut table);
        }
        table
    })?;
    output.served_by(&served.meta);
    Ok(())
}
