//! Engine manifests: the JSON document a publisher signs.
//!
//! Parsing is strict (unknown keys are refused) and fully validated here, so
//! a [`Manifest`] value is always well formed: every action schema is a
//! usable JSON Schema (`action_schema`, judged through `judge` by
//! [`parse_judged`]), every UI surface well formed
//! (`ui_surface`). The canonical form is RFC 8785 JSON of the document as
//! sent; its SHA-256 identifies the content.

use crate::ids::{Name, check_description};
use crate::judge::{self, ActionSchema, Judge, Judgement};
use crate::limits::{Limit, MANIFEST_BYTES_MAX};
use crate::rejection::Rejection;
use crate::signing;
use crate::ui_surface::{self, UiSurface};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Isolation tier, from most to least trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Tier {
    Core,
    Critical,
    Standard,
    Experimental,
}

impl Tier {
    /// The lowercase name, as in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Core => "core",
            Tier::Critical => "critical",
            Tier::Standard => "standard",
            Tier::Experimental => "experimental",
        }
    }
}

/// Kinds of data an engine handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum DataClass {
    Public,
    Confidential,
    Pii,
    Pci,
    Phi,
}

/// A dependency on another engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// The engine depended on.
    pub name: Name,
    /// A semver requirement, e.g. `^1.2`.
    pub requirement: String,
}

/// One action an engine offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Unique within the manifest.
    pub name: Name,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the input.
    #[serde(default)]
    pub input_schema: Option<serde_json::Value>,
    /// JSON Schema of the output.
    #[serde(default)]
    pub output_schema: Option<serde_json::Value>,
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The engine's name.
    pub name: Name,
    /// Semver, without build metadata.
    pub version: String,
    /// Isolation tier.
    pub tier: Tier,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Engines this version needs.
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    /// What it can do.
    #[serde(default)]
    pub actions: Vec<Action>,
    /// Data it handles.
    #[serde(default)]
    pub data_classes: BTreeSet<DataClass>,
    /// Capabilities it requires from the host.
    #[serde(default)]
    pub capabilities: BTreeSet<Name>,
    /// UI surfaces it offers, if any.
    #[serde(default)]
    pub ui: Vec<UiSurface>,
}

/// Only the `ui` list of a manifest; other keys are ignored.
#[derive(Deserialize)]
struct UiOnly {
    #[serde(default)]
    ui: Vec<UiSurface>,
}

/// The UI surfaces of a stored (canonical, already validated) manifest.
/// Bytes that do not parse have none; a stored manifest always parses.
pub fn ui_surfaces_of(canonical: &[u8]) -> Vec<UiSurface> {
    serde_json::from_slice::<UiOnly>(canonical).map(|only| only.ui).unwrap_or_default()
}

/// A manifest with its canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    /// The validated document.
    pub manifest: Manifest,
    /// The parsed version.
    pub version: semver::Version,
    /// RFC 8785 bytes of the document as sent.
    pub canonical: Vec<u8>,
}

impl ParsedManifest {
    /// The bytes publishers sign.
    pub fn signing_payload(&self) -> Vec<u8> {
        signing::payload(signing::MANIFEST_PAYLOAD_PREFIX, &self.canonical)
    }
}

/// Parses, validates and canonicalises manifest bytes.
pub fn parse(bytes: &[u8]) -> Result<ParsedManifest, Rejection> {
    if bytes.is_empty() {
        return Err(Rejection::FieldRequired { field: "manifest".into() });
    }
    Limit::ManifestBytes.check(bytes.len())?;
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|error| Rejection::ManifestMalformed { detail: error.to_string() })?;
    // serde_json keeps the last of repeated keys; refuse them instead (below).
    serde_json::from_slice::<UniqueKeys>(bytes)
        .map_err(|error| Rejection::ManifestMalformed { detail: error.to_string() })?;
    // Names are checked before typed decoding, because serde flattens their
    // rejection into a string and a bad name must surface as its own reason.
    check_names(&value)?;
    let manifest: Manifest = serde_json::from_value(value.clone())
        .map_err(|error| Rejection::ManifestMalformed { detail: error.to_string() })?;
    let version = validate(&manifest)?;
    let canonical = signing::canonical_json(&value)?;
    // Canonical JSON can be larger than what was sent (`1e20` is written out in
    // full), and what is stored and signed is the canonical form.
    if canonical.len() > MANIFEST_BYTES_MAX {
        return Err(Rejection::LimitExceeded { limit: Limit::ManifestBytes, actual: canonical.len() });
    }
    Ok(ParsedManifest { manifest, version, canonical })
}

/// Deserialising into this checks that no JSON object repeats a key, and
/// keeps nothing.
///
/// RFC 8785 canonicalises I-JSON, which forbids repeated keys, and parsers
/// disagree on which of two repeated values wins. Accepting them would let a
/// reviewer's tool show one manifest while Keel stores and verifies another,
/// so a manifest with a repeated key is malformed.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = UniqueKeys;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
        while items.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
        let mut keys = BTreeSet::new();
        while let Some(key) = entries.next_key::<String>()? {
            if keys.contains(&key) {
                return Err(serde::de::Error::custom(format_args!("key {key:?} is repeated")));
            }
            keys.insert(key);
            entries.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

/// Refuses a bad name anywhere in the document with its own reason
/// (`FIELD_REQUIRED`, `FIELD_INVALID`, or `LIMIT_EXCEEDED` naming
/// `NAME_BYTES_MAX`) instead of `MANIFEST_MALFORMED`. Values of the wrong JSON
/// type are left to typed decoding, which refuses them as malformed.
fn check_names(document: &serde_json::Value) -> Result<(), Rejection> {
    fn name_at(field: &'static str, value: Option<&serde_json::Value>) -> Result<(), Rejection> {
        match value {
            Some(serde_json::Value::String(text)) => Name::parse(field, text).map(drop),
            _ => Ok(()),
        }
    }
    name_at("manifest.name", document.get("name"))?;
    let lists = [
        ("dependencies", "manifest.dependencies.name"),
        ("actions", "manifest.actions.name"),
        ("ui", "manifest.ui.name"),
    ];
    for (list, field) in lists {
        if let Some(serde_json::Value::Array(items)) = document.get(list) {
            for item in items {
                name_at(field, item.get("name"))?;
            }
        }
    }
    if let Some(serde_json::Value::Array(items)) = document.get("capabilities") {
        for item in items {
            name_at("manifest.capabilities", Some(item))?;
        }
    }
    Ok(())
}

fn validate(manifest: &Manifest) -> Result<semver::Version, Rejection> {
    let version = parse_version("manifest.version", &manifest.version)?;
    check_description(&manifest.description)?;
    Limit::DependenciesPerEngine.check(manifest.dependencies.len())?;
    Limit::ActionsPerEngine.check(manifest.actions.len())?;
    Limit::CapabilitiesPerEngine.check(manifest.capabilities.len())?;
    let mut dependency_names = BTreeSet::new();
    for dependency in &manifest.dependencies {
        semver::VersionReq::parse(&dependency.requirement).map_err(|_| Rejection::VersionInvalid {
            field: "manifest.dependencies.requirement".into(),
            value: dependency.requirement.clone(),
        })?;
        if dependency.name == manifest.name {
            return Err(Rejection::FieldInvalid {
                field: "manifest.dependencies".into(),
                problem: "an engine cannot depend on itself".into(),
            });
        }
        if !dependency_names.insert(&dependency.name) {
            return Err(Rejection::FieldInvalid {
                field: "manifest.dependencies".into(),
                problem: "each engine may be listed once".into(),
            });
        }
    }
    let mut action_names = BTreeSet::new();
    for action in &manifest.actions {
        check_description(&action.description)?;
        if !action_names.insert(&action.name) {
            return Err(Rejection::FieldInvalid {
                field: "manifest.actions".into(),
                problem: "action names must be unique".into(),
            });
        }
    }
    ui_surface::validate(&manifest.ui)?;
    Ok(version)
}

/// The judgement of a manifest's action schemas (`None` when it has none
/// to check). [`parse`] leaves them out: running `jsonschema` is a
/// judgement, which `apply` hands to its judge (see `judge`).
pub fn schema_judgement(manifest: &Manifest) -> Option<Judgement> {
    let schemas: Vec<ActionSchema> = manifest
        .actions
        .iter()
        .flat_map(|action| {
            [(true, &action.input_schema), (false, &action.output_schema)]
                .into_iter()
                .filter_map(|(is_input, schema)| schema.as_ref().map(|schema| (is_input, schema)))
                .map(|(is_input, schema)| ActionSchema {
                    action: action.name.to_string(),
                    is_input,
                    schema: schema.clone(),
                })
        })
        .collect();
    (!schemas.is_empty()).then_some(Judgement::ActionSchemas { schemas })
}

/// [`parse`], then the action schemas judged by `judge`.
pub fn parse_judged(bytes: &[u8], judge: &dyn Judge) -> Result<ParsedManifest, Rejection> {
    let parsed = parse(bytes)?;
    if let Some(judgement) = schema_judgement(&parsed.manifest) {
        judge::accepted(judge, &judgement)?;
    }
    Ok(parsed)
}

/// Parses an engine version: semver without build metadata (build metadata
/// has no precedence, so `1.0.0+a` and `1.0.0+b` would be ambiguous).
pub fn parse_version(field: &'static str, value: &str) -> Result<semver::Version, Rejection> {
    if value.is_empty() {
        return Err(Rejection::FieldRequired { field: field.into() });
    }
    let version = semver::Version::parse(value)
        .map_err(|_| Rejection::VersionInvalid { field: field.into(), value: value.to_owned() })?;
    if !version.build.is_empty() {
        return Err(Rejection::VersionInvalid { field: field.into(), value: value.to_owned() });
    }
    Ok(version)
}
