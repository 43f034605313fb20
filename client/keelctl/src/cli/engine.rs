//! `keelctl engine`: sign manifests, publish them, read the registry.
//!
//! ```text
//!   m.json ─┐                         ┌─▶ m.signed.json (engine sign --out)
//!           ├─ SignedManifest + sign ─┤
//!   bundle ─┘   (--key, repeatable)   └─▶ PublishEngineVersion (engine publish)
//! ```
//!
//! Signing happens locally; `publish`, `get`, `list`, `versions`, `yank`,
//! `dependants` and `graph` talk to the cluster.

use super::error::CliError;
use super::output::Output;
use super::table::Table;
use super::timestamp::format_rfc3339;
use super::{ConsistencyArg, GlobalArgs, connect, enum_name};
use base64::Engine as _;
use keel_client::error::ClientError;
use keel_client::key_pair::KeyPair;
use keel_client::pb;
use keel_client::signed_manifest::SignedManifest;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Hex characters of the manifest digest shown in tables.
const SHA256_HEX_CHARS_SHOWN: usize = 16;

/// `keelctl engine …`
#[derive(Debug, clap::Subcommand)]
pub enum EngineCommand {
    /// Sign a manifest (or add a signature to a signed bundle).
    Sign {
        /// A manifest JSON file, or a bundle to add a signature to.
        #[arg(long)]
        manifest: PathBuf,
        /// The publisher's secret key file.
        #[arg(long)]
        key: PathBuf,
        /// Where to write the bundle; stdout when omitted.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Publish a signed bundle, or sign a manifest and publish it.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["bundle", "manifest"])))]
    Publish {
        /// A signed bundle (from `engine sign`).
        bundle: Option<PathBuf>,
        /// A manifest (or bundle) to sign with --key and publish.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// A publisher's secret key file to sign with first (repeatable).
        #[arg(long)]
        key: Vec<PathBuf>,
    },
    /// Show one engine version (the highest when --version is omitted).
    Get {
        /// The engine's name.
        name: String,
        /// A semver version.
        #[arg(long)]
        version: Option<String>,
        /// Read consistency.
        #[arg(long, value_enum, default_value_t)]
        consistency: ConsistencyArg,
    },
    /// List engines.
    List {
        /// Read consistency.
        #[arg(long, value_enum, default_value_t)]
        consistency: ConsistencyArg,
    },
    /// List the versions of one engine.
    Versions {
        /// The engine's name.
        name: String,
        /// Read consistency.
        #[arg(long, value_enum, default_value_t)]
        consistency: ConsistencyArg,
    },
    /// Yank a version: still readable, no longer resolvable for new dependants.
    Yank {
        /// The engine's name.
        name: String,
        /// The semver version to yank.
        version: String,
    },
    /// List the engines that depend on one engine, directly or transitively.
    Dependants {
        /// The engine's name.
        name: String,
        /// Read consistency.
        #[arg(long, value_enum, default_value_t)]
        consistency: ConsistencyArg,
    },
    /// Show a version's dependency closure as resolved at publish.
    Graph {
        /// The engine's name.
        name: String,
        /// A semver version (the highest when omitted).
        #[arg(long)]
        version: Option<String>,
        /// Read consistency.
        #[arg(long, value_enum, default_value_t)]
        consistency: ConsistencyArg,
    },
}

/// One signature as shown.
#[derive(Debug, Serialize)]
pub struct SignatureView {
    /// The signing key's id.
    pub key_id: String,
    /// Base64 of the 64 signature bytes.
    pub signature: String,
}

/// An engine version as shown.
#[derive(Debug, Serialize)]
pub struct EngineVersionView {
    /// `engines/{engine}/versions/{version}`.
    pub name: String,
    /// The engine's name.
    pub engine: String,
    /// Semver.
    pub version: String,
    /// `core`, `critical`, `standard` or `experimental`.
    pub tier: String,
    /// Free text.
    pub description: String,
    /// Lowercase hex SHA-256 of the canonical manifest.
    pub manifest_sha256: String,
    /// Signatures over the manifest.
    pub signatures: Vec<SignatureView>,
    /// Revision at which it was published.
    pub publish_revision: u64,
    /// Publish time, Unix ms.
    pub publish_time_ms: i64,
    /// Publish time, RFC 3339.
    pub publish_time: String,
    /// Yanked: readable, no longer resolvable for new dependants.
    pub yanked: bool,
    /// UI surfaces the manifest declares, as `kind:name=entry`.
    pub ui_surfaces: Vec<String>,
    /// The manifest document (only for `engine get`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<serde_json::Value>,
}

impl EngineVersionView {
    /// The view of a version from the server; `with_manifest` parses and
    /// includes the manifest after checking its digest.
    pub fn from_proto(version: &pb::EngineVersion, with_manifest: bool) -> Result<Self, ClientError> {
        let manifest = if with_manifest {
            let digest = hex::encode(Sha256::digest(&version.manifest));
            if digest != version.manifest_sha256 {
                return Err(ClientError::ResponseInvalid {
                    method: "GetEngineVersion",
                    field: "manifest_sha256",
                    problem: format!("is {} but the manifest hashes to {digest}", version.manifest_sha256),
                });
            }
            let value = serde_json::from_slice(&version.manifest).map_err(|error| ClientError::ResponseInvalid {
                method: "GetEngineVersion",
                field: "manifest",
                problem: format!("is not JSON: {error}"),
            })?;
            Some(value)
        } else {
            None
        };
        Ok(EngineVersionView {
            name: version.name.clone(),
            engine: version.engine.clone(),
            version: version.version.clone(),
            tier: tier_name(version.tier),
            description: version.description.clone(),
            manifest_sha256: version.manifest_sha256.clone(),
            signatures: version
                .signatures
                .iter()
                .map(|signature| SignatureView {
                    key_id: signature.key_id.clone(),
                    signature: base64::engine::general_purpose::STANDARD.encode(&signature.signature),
                })
                .collect(),
            publish_revision: version.publish_revision,
            publish_time_ms: version.publish_time_ms,
            publish_time: format_rfc3339(version.publish_time_ms),
            yanked: version.yanked,
            ui_surfaces: version.ui_surfaces.iter().map(ui_surface_text).collect(),
            manifest,
        })
    }

    fn signer_ids(&self) -> String {
        self.signatures.iter().map(|signature| signature.key_id.as_str()).collect::<Vec<_>>().join(",")
    }

    fn add_fields(&self, table: &mut Table) {
        table
            .field("engine", &self.engine)
            .field("version", &self.version)
            .field("tier", &self.tier)
            .field("description", &self.description)
            .field("manifest_sha256", &self.manifest_sha256)
            .field("signed_by", self.signer_ids())
            .field("publish_revision", self.publish_revision)
            .field("publish_time", &self.publish_time)
            .field("yanked", self.yanked)
            .field("ui_surfaces", if self.ui_surfaces.is_empty() { "-".into() } else { self.ui_surfaces.join(" ") });
    }
}

/// `kind:name=entry`, e.g. `panel:invoices=ui/invoices.html`.
fn ui_surface_text(surface: &pb::UiSurface) -> String {
    let kind = pb::UiSurfaceKind::try_from(surface.kind)
        .map_or_else(|_| format!("UNKNOWN({})", surface.kind), |kind| kind.as_str_name().to_lowercase());
    format!("{kind}:{}={}", surface.name, surface.entry)
}

/// An engine summary as shown.
#[derive(Debug, Serialize)]
pub struct EngineView {
    /// `engines/{engine}`.
    pub name: String,
    /// The engine's name.
    pub engine: String,
    /// Highest published version.
    pub latest_version: String,
    /// Published versions.
    pub version_count: u32,
}

/// One node of a resolved graph as shown.
#[derive(Debug, Serialize)]
pub struct GraphNodeView {
    /// The engine's name.
    pub engine: String,
    /// Semver.
    pub version: String,
    /// `core`, `critical`, `standard` or `experimental`.
    pub tier: String,
}

/// What `dependants` reports.
#[derive(Debug, Serialize)]
pub struct DependantsView {
    /// The engine asked about.
    pub engine: String,
    /// Engines depending on it, ordered by name.
    pub dependants: Vec<String>,
}

/// What `publish` reports.
#[derive(Debug, Serialize)]
pub struct PublishedView {
    /// Whether this call published it (false: identical content was already published).
    pub created: bool,
    /// The published version.
    pub engine_version: Option<EngineVersionView>,
}

/// What `sign --out` reports.
#[derive(Debug, Serialize)]
pub struct SignedView {
    /// The bundle written.
    pub out: String,
    /// The key that signed.
    pub key_id: String,
    /// Signatures the bundle now holds.
    pub signature_count: usize,
}

fn tier_name(tier: i32) -> String {
    enum_name(tier, |value| pb::Tier::try_from(value).ok().map(|tier| tier.as_str_name())).to_ascii_lowercase()
}

/// Runs an `engine` command.
pub async fn run(command: EngineCommand, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    match command {
        EngineCommand::Sign { manifest, key, out } => {
            let mut bundle = SignedManifest::read_file(&manifest)?;
            let key = KeyPair::read_secret_file(&key)?;
            bundle.sign(&key)?;
            match out {
                None => output.write_stdout(&bundle.to_json()),
                Some(out) => {
                    bundle.write_file(&out)?;
                    let view = SignedView {
                        out: out.display().to_string(),
                        key_id: key.key_id(),
                        signature_count: bundle.signatures().len(),
                    };
                    output.show(&view, |view| {
                        let mut table = Table::fields();
                        table
                            .field("out", &view.out)
                            .field("key_id", &view.key_id)
                            .field("signature_count", view.signature_count);
                        table
                    })
                }
            }
        }
        EngineCommand::Publish { bundle, manifest, key } => {
            let Some(source) = bundle.or(manifest) else {
                return Err(CliError::Usage { problem: "give a bundle file or --manifest".into() });
            };
            let mut signed = SignedManifest::read_file(&source)?;
            for key_file in &key {
                signed.sign(&KeyPair::read_secret_file(key_file)?)?;
            }
            if signed.signatures().is_empty() {
                return Err(CliError::Usage {
                    problem: format!(
                        "{} has no signatures; sign it with `keelctl engine sign` or pass --key",
                        source.display()
                    ),
                });
            }
            let client = connect(global).await?;
            let served = client.publish_signed_manifest(&signed).await?;
            let engine_version = match &served.value.engine_version {
                Some(version) => Some(EngineVersionView::from_proto(version, false)?),
                None => None,
            };
            let view = PublishedView { created: served.value.created, engine_version };
            output.show(&view, |view| {
                let mut table = Table::fields();
                table.field("created", view.created);
                if let Some(version) = &view.engine_version {
                    version.add_fields(&mut table);
                }
                table
            })?;
            output.served_by(&served.meta);
            Ok(())
        }
        EngineCommand::Get { name, version, consistency } => {
            let client = connect(global).await?;
            let served = client.get_engine_version(&name, version.as_deref(), consistency.into()).await?;
            let view = EngineVersionView::from_proto(&served.value, true)?;
            output.show(&view, |view| {
                let mut table = Table::fields();
                view.add_fields(&mut table);
                table
            })?;
            output.served_by(&served.meta);
            Ok(())
        }
        EngineCommand::List { consistency } => {
            let client = connect(global).await?;
            let served = client.list_all_engines(consistency.into()).await?;
            let views: Vec<EngineView> = served
                .value
                .iter()
                .map(|engine| EngineView {
                    name: engine.name.clone(),
                    engine: engine.engine.clone(),
                    latest_version: engine.latest_version.clone(),
                    version_count: engine.version_count,
                })
                .collect();
            output.show(&views, |views| {
                let mut table = Table::with_header(&["ENGINE", "LATEST_VERSION", "VERSIONS"]);
                for view in views {
                    table.row([view.engine.clone(), view.latest_version.clone(), view.version_count.to_string()]);
                }
                table
            })?;
            output.served_by(&served.meta);
            Ok(())
        }
        EngineCommand::Versions { name, consistency } => {
            let client = connect(global).await?;
            let served = client.list_all_engine_versions(&name, consistency.into()).await?;
            let mut views = Vec::with_capacity(served.value.len());
            for version in &served.value {
                views.push(EngineVersionView::from_proto(version, false)?);
            }
            output.show(&views, |views| {
                let mut table =
                    Table::with_header(&["VERSION", "TIER", "PUBLISHED", "REVISION", "SHA256", "SIGNED_BY"]);
                for view in views {
                    let digest: String = view.manifest_sha256.chars().take(SHA256_HEX_CHARS_SHOWN).collect();
                    table.row([
                        view.version.clone(),
                        view.tier.clone(),
                        view.publish_time.clone(),
                        view.publish_revision.to_string(),
                        digest,
                        view.signer_ids(),
                    ]);
                }
                table
            })?;
            output.served_by(&served.meta);
            Ok(())
        }
        EngineCommand::Yank { name, version } => {
            let client = connect(global).await?;
            let served = client.yank_engine_version(&name, &version).await?;
            let view = EngineVersionView::from_proto(&served.value, false)?;
            output.show(&view, |view| {
                let mut table = Table::fields();
                view.add_fields(&mut table);
                table
            })?;
            output.served_by(&served.meta);
            Ok(())
        }
        EngineCommand::Dependants { name, consistency } => {
            let client = connect(global).await?;
            let served = client.list_dependants(&name, consistency.into()).await?;
            let view = DependantsView { engine: name, dependants: served.value.engines.clone() };
            output.show(&view, |view| {
                let mut table = Table::with_header(&["DEPENDANT"]);
                for engine in &view.dependants {
                    table.row([engine.clone()]);
                }
                table
            })?;
            output.served_by(&served.meta);
            Ok(())
        }
        EngineCommand::Graph { name, version, consistency } => {
            let client = connect(global).await?;
            let served = client.get_resolved_graph(&name, version.as_deref(), consistency.into()).await?;
            let views: Vec<GraphNodeView> = served
                .value
                .nodes
                .iter()
                .map(|node| GraphNodeView {
                    engine: node.engine.clone(),
                    version: node.version.clone(),
                    tier: tier_name(node.tier),
                })
                .collect();
            output.show(&views, |views| {
                let mut table = Table::with_header(&["ENGINE", "VERSION", "TIER"]);
                for view in views {
                    table.row([view.engine.clone(), view.version.clone(), view.tier.clone()]);
                }
                table
            })?;
            output.served_by(&served.meta);
            Ok(())
        }
    }
}
