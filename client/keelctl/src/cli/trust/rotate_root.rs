//! `keelctl trust rotate-root`: build the next root metadata, sign it with
//! current and new root keys, send `RotateRoot`.
//!
//! ```text
//!   GetRoot ──▶ version N, roles ─┐
//!   ListKeys(ROOT) ──▶ windows of root keys already stored ─┤
//!   --root-key files, --root-threshold, --*-threshold ──────┴─▶ document (version N+1)
//!        │ --dry-run: print it, send nothing
//!        ▼
//!   sign "keel/v1/root\n" + JCS(document) with every --signer ──▶ RotateRoot ──▶ new RootMetadata
//! ```
//!
//! `--metadata FILE` sends a document written by hand (or by an earlier
//! `--dry-run`) instead of building one. A key of the current root role can
//! stay in the new one by listing it again with `--root-key`; its stored
//! validity window is reused, because the server refuses a root key whose
//! attributes differ from the stored key.

use super::super::error::CliError;
use super::super::output::Output;
use super::super::timestamp::{now_ms_rounded_to_second, parse_time_ms};
use super::super::{GlobalArgs, connect};
use super::RootView;
use keel_client::key_pair::KeyPair;
use keel_client::key_spec::ms_from_timestamp;
use keel_client::limits::MANIFEST_FILE_BYTES_MAX;
use keel_client::local_error::LocalError;
use keel_client::pb;
use keel_client::public_key::PublicKey;
use keel_client::root_metadata::{self, RootKeyEntry, RootMetadataDraft};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `keelctl trust rotate-root` arguments.
#[derive(Debug, clap::Args)]
pub struct RotateRootArgs {
    /// A key of the new root role: a public (or secret) key file. Repeat for
    /// several. List a current root key again to keep it.
    #[arg(long, required_unless_present = "metadata", conflicts_with = "metadata")]
    pub root_key: Vec<PathBuf>,
    /// Signatures the new root role requires. Default: the current root
    /// threshold, at most the number of new root keys.
    #[arg(long, conflicts_with = "metadata")]
    pub root_threshold: Option<u32>,
    /// Signatures the engine-publisher role requires. Default: unchanged.
    #[arg(long, conflicts_with = "metadata")]
    pub engine_publisher_threshold: Option<u32>,
    /// Signatures the api-token role requires. Default: unchanged.
    #[arg(long, conflicts_with = "metadata")]
    pub api_token_threshold: Option<u32>,
    /// New root keys are valid from (RFC 3339 or Unix ms). Default: now,
    /// rounded down to the second. Keys already stored keep their window.
    #[arg(long, value_parser = parse_time_ms, conflicts_with = "metadata")]
    pub not_before: Option<u64>,
    /// New root keys are valid until, exclusive (RFC 3339 or Unix ms).
    /// Default: no expiry.
    #[arg(long, value_parser = parse_time_ms, conflicts_with = "metadata")]
    pub not_after: Option<u64>,
    /// The version the document claims. Default: the current version + 1,
    /// the only one the server accepts.
    #[arg(long, conflicts_with = "metadata")]
    pub metadata_version: Option<u64>,
    /// Send this root metadata document (JSON, see `RotateRootRequest` in
    /// trust.proto) as it is, instead of building one.
    #[arg(long)]
    pub metadata: Option<PathBuf>,
    /// A secret key file that signs: together a threshold of the current
    /// root keys and a threshold of the new ones. Repeat for several.
    #[arg(long, required_unless_present = "dry_run")]
    pub signer: Vec<PathBuf>,
    /// Print the document that would be signed, and send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `trust rotate-root`.
pub async fn run(args: RotateRootArgs, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    let signers = args.signer.iter().map(|path| KeyPair::read_secret_file(path)).collect::<Result<Vec<_>, _>>()?;
    let client = connect(global).await?;
    let document = match &args.metadata {
        Some(path) => read_document(path)?,
        None => build_document(&args, &client).await?,
    };
    if args.dry_run {
        let text = serde_json::to_string_pretty(&document)
            .map_err(|error| CliError::Output { source: std::io::Error::other(error) })?;
        return output.write_stdout(&format!("{text}\n"));
    }
    let signers: Vec<&KeyPair> = signers.iter().collect();
    let served = client.rotate_root_signed(&document, &signers).await?;
    output.show(&RootView::from_proto(&served.value), RootView::to_table)?;
    output.served_by(&served.meta);
    Ok(())
}

/// A document written by hand: any JSON object; the server judges the rest.
fn read_document(path: &std::path::Path) -> Result<serde_json::Value, CliError> {
    let bytes = keel_client::local_file::read_bounded(path, MANIFEST_FILE_BYTES_MAX)?;
    let source_name = path.display().to_string();
    let document: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|source| LocalError::JsonInvalid { source_name: source_name.clone(), source })?;
    if !document.is_object() {
        return Err(LocalError::FieldInvalid {
            source_name,
            field: "(document)".into(),
            problem: "must be a JSON object".into(),
        }
        .into());
    }
    Ok(document)
}

/// The next version of the server's root metadata, with the root role
/// replaced as the arguments say.
async fn build_document(
    args: &RotateRootArgs,
    client: &keel_client::KeelClient,
) -> Result<serde_json::Value, CliError> {
    let current = client.get_root(pb::ReadConsistency::Linearizable).await?.value;
    let stored_roots: BTreeMap<String, pb::Key> = client
        .list_all_keys(Some(pb::KeyPurpose::Root), pb::ReadConsistency::Linearizable)
        .await?
        .value
        .into_iter()
        .map(|key| (key.key_id.clone(), key))
        .collect();
    let not_before_ms = match args.not_before {
        Some(not_before_ms) => not_before_ms,
        None => now_ms_rounded_to_second().map_err(|problem| CliError::Usage { problem })?,
    };
    let mut entries = Vec::with_capacity(args.root_key.len());
    for path in &args.root_key {
        let public = PublicKey::read_file(path)?;
        let entry = match stored_roots.get(public.key_id()).and_then(|key| key.spec.as_ref()) {
            // A stored root key must be described exactly as stored.
            Some(spec) => RootKeyEntry {
                public_key: *public.bytes(),
                not_before_ms: spec.not_before.as_ref().and_then(ms_from_timestamp).unwrap_or(0),
                not_after_ms: spec.not_after.as_ref().and_then(ms_from_timestamp),
            },
            None => RootKeyEntry { public_key: *public.bytes(), not_before_ms, not_after_ms: args.not_after },
        };
        entries.push(entry);
    }
    let current_root_threshold =
        current.roles.iter().find(|role| role.role == root_metadata::ROLE_ROOT).map_or(1, |role| role.threshold.max(1));
    let n_entries = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    let root_threshold = args.root_threshold.unwrap_or_else(|| current_root_threshold.min(n_entries));
    let mut draft = RootMetadataDraft::next_from(&current).with_root_keys(entries, root_threshold)?;
    if let Some(threshold) = args.engine_publisher_threshold {
        draft = draft.with_threshold(root_metadata::ROLE_ENGINE_PUBLISHER, threshold)?;
    }
    if let Some(threshold) = args.api_token_threshold {
        draft = draft.with_threshold(root_metadata::ROLE_API_TOKEN, threshold)?;
    }
    if let Some(version) = args.metadata_version {
        draft.version = version;
    }
    Ok(draft.to_json()?)
}
