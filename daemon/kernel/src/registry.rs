//! Engine registry v1: published engine versions, immutable once published.
//!
//! A publish verifies the manifest's signatures against the trust store at the
//! entry's time, then stores the canonical bytes under `name@version`. The
//! same canonical bytes again is an idempotent success; different bytes for a
//! published version is refused.
//!
//! Publishing also checks the dependency closure: every requirement resolves
//! to the highest matching version that is published and not yanked, each
//! dependency is of the same or a more trusted tier, and the graph over engine
//! names stays acyclic. The resolved versions are recorded with the new
//! version, so its graph never changes afterwards. A yanked version stays
//! readable but no longer resolves for new dependants.

use crate::ids::Name;
use crate::judge::Applying;
use crate::manifest::{self, Tier};
use crate::persistent::Map;
use crate::rejection::Rejection;
use crate::signing::Signature;
use crate::state_budget::{Charged, ITEM_OVERHEAD_BYTES, StateBudget};
use crate::trust_store::{KeyPurpose, TrustStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One published engine version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineVersion {
    /// Engine name.
    pub engine: Name,
    /// Parsed semver.
    pub version: semver::Version,
    /// Tier from the manifest.
    pub tier: Tier,
    /// Description from the manifest.
    pub description: String,
    /// Canonical manifest bytes as signed.
    // Bytes, not a sequence of u8: the same bincode, encoded and decoded as one copy.
    #[serde(with = "serde_bytes")]
    pub manifest: Vec<u8>,
    /// Lowercase hex SHA-256 of `manifest`.
    pub manifest_sha256: String,
    /// The signatures that verified at publish time: the first valid one of
    /// each key, in the order sent. Unverified ones are not kept, so every key
    /// listed here did sign; a check of signers for revocation can rely on it.
    pub signatures: Vec<Signature>,
    /// Revision of the publish.
    pub publish_revision: u64,
    /// Leader-stamped time of the publish, Unix ms.
    pub publish_time_ms: u64,
    /// What each dependency resolved to at publish, in manifest order.
    pub resolved_dependencies: Vec<(Name, semver::Version)>,
    /// Yanked: still readable, no longer resolvable for new dependants.
    pub is_yanked: bool,
}

/// The registry's replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Persistent: a clone shares every version (see `KernelState`).
    engines: Map<Name, Versions>,
}

/// One engine's versions, ascending.
pub type Versions = Map<semver::Version, Arc<EngineVersion>>;

impl Charged for EngineVersion {
    fn charged_bytes(&self) -> usize {
        ITEM_OVERHEAD_BYTES
            + self.engine.as_str().len()
            + self.description.len()
            + self.manifest.len()
            + self.manifest_sha256.len()
            + self
                .signatures
                .iter()
                .map(|signature| signature.key_id.len() + signature.signature.len() + 16)
                .sum::<usize>()
            + self.resolved_dependencies.iter().map(|(name, _)| name.as_str().len() + 64).sum::<usize>()
    }
}

impl Registry {
    /// Every engine version, for a recount of the state budget.
    pub(crate) fn charged(&self) -> impl Iterator<Item = &dyn Charged> {
        self.engines.values().flat_map(|versions| versions.values().map(|version| version.as_ref() as &dyn Charged))
    }

    /// Publishes one manifest; returns the stored version and whether it is new.
    pub(crate) fn publish(
        &mut self,
        trust: &TrustStore,
        manifest_bytes: &[u8],
        signatures: &[Signature],
        applying: Applying<'_>,
        budget: &mut StateBudget,
    ) -> Result<(EngineVersion, bool), Rejection> {
        let Applying { revision, at_ms, judge } = applying;
        if !trust.is_bootstrapped() {
            return Err(Rejection::TrustNotBootstrapped);
        }
        let parsed = manifest::parse_judged(manifest_bytes, judge)?;
        if signatures.is_empty() {
            return Err(Rejection::FieldRequired { field: "signatures".into() });
        }
        let signatures = trust.counted_signatures(
            trust.requirement(KeyPurpose::EnginePublisher),
            &parsed.signing_payload(),
            signatures,
            at_ms,
        )?;
        let name = parsed.manifest.name.clone();
        if let Some(existing) = self.engines.get(&name).and_then(|versions| versions.get(&parsed.version)) {
            return if existing.manifest == parsed.canonical {
                Ok((EngineVersion::clone(existing), false))
            } else {
                Err(Rejection::VersionAlreadyPublished {
                    engine: name.to_string(),
                    version: parsed.version.to_string(),
                })
            };
        }
        let resolved_dependencies = self.resolve_dependencies(&parsed.manifest)?;
        let record = EngineVersion {
            engine: name.clone(),
            version: parsed.version.clone(),
            tier: parsed.manifest.tier,
            description: parsed.manifest.description.clone(),
            manifest_sha256: hex::encode(Sha256::digest(&parsed.canonical)),
            manifest: parsed.canonical,
            signatures,
            publish_revision: revision,
            publish_time_ms: at_ms,
            resolved_dependencies,
            is_yanked: false,
        };
        budget.charge(0, record.charged_bytes())?;
        self.engines.entry(name).or_default().insert(parsed.version, Arc::new(record.clone()));
        Ok((record, true))
    }

    /// Resolves a manifest's dependencies (highest matching version that is
    /// not yanked), checks the tier rule and that the new edges close no cycle
    /// over engine names. Checks run in manifest order, so the first failing
    /// dependency names the rejection on every node.
    fn resolve_dependencies(&self, manifest: &manifest::Manifest) -> Result<Vec<(Name, semver::Version)>, Rejection> {
        let mut resolved = Vec::with_capacity(manifest.dependencies.len());
        for dependency in &manifest.dependencies {
            let unresolvable = || Rejection::DependencyUnresolvable {
                engine: dependency.name.to_string(),
                requirement: dependency.requirement.clone(),
            };
            // `manifest::parse` already checked every requirement parses.
            let requirement = semver::VersionReq::parse(&dependency.requirement).map_err(|_| unresolvable())?;
            let target = self
                .engines
                .get(&dependency.name)
                .and_then(|versions| versions.values().rev().find(|v| !v.is_yanked && requirement.matches(&v.version)))
                .ok_or_else(unresolvable)?;
            // Tiers are ordered from most to least trusted.
            if target.tier > manifest.tier {
                return Err(Rejection::DependencyTierViolation {
                    engine: manifest.name.to_string(),
                    tier: manifest.tier.as_str().into(),
                    dependency: dependency.name.to_string(),
                    dependency_tier: target.tier.as_str().into(),
                });
            }
            resolved.push((dependency.name.clone(), target.version.clone()));
        }
        for (dependency, _) in &resolved {
            if let Some(mut path) = self.path_between(dependency, &manifest.name) {
                path.insert(0, manifest.name.to_string());
                return Err(Rejection::DependencyCycle { path });
            }
        }
        Ok(resolved)
    }

    /// Engine names each engine depends on through any of its versions.
    fn name_edges(&self) -> BTreeMap<&Name, BTreeSet<&Name>> {
        self.engines
            .iter()
            .map(|(name, versions)| {
                let targets = versions.values().flat_map(|v| v.resolved_dependencies.iter().map(|(n, _)| n)).collect();
                (name, targets)
            })
            .collect()
    }

    /// The first path (depth first, names in order) from `from` to `to` over
    /// dependency edges between engine names, both ends included.
    fn path_between(&self, from: &Name, to: &Name) -> Option<Vec<String>> {
        if from == to {
            return Some(vec![from.to_string()]);
        }
        let edges = self.name_edges();
        let targets_of = |name: &Name| -> Vec<&Name> { edges.get(name).into_iter().flatten().copied().collect() };
        let mut visited = BTreeSet::from([from]);
        // `path[i]`'s unexplored targets are `pending[i]`, in name order.
        let mut path = vec![from];
        let mut pending = vec![targets_of(from)];
        while let Some(targets) = pending.last_mut() {
            if targets.is_empty() {
                pending.pop();
                path.pop();
                continue;
            }
            let next = targets.remove(0);
            if next == to {
                path.push(next);
                return Some(path.iter().map(ToString::to_string).collect());
            }
            if visited.insert(next) {
                path.push(next);
                pending.push(targets_of(next));
            }
        }
        None
    }

    /// Marks a version yanked; returns it and whether it changed.
    pub(crate) fn yank(
        &mut self,
        engine: &Name,
        version: &semver::Version,
    ) -> Result<(EngineVersion, bool), Rejection> {
        let record = self.engines.get_mut(engine).and_then(|versions| versions.get_mut(version)).ok_or_else(|| {
            Rejection::EngineVersionNotFound { engine: engine.to_string(), version: version.to_string() }
        })?;
        let changed = !record.is_yanked;
        Arc::make_mut(record).is_yanked = true;
        Ok((EngineVersion::clone(record), changed))
    }

    /// Engines that depend on `engine`, directly or transitively, through any
    /// of their versions (yanked ones included). Excludes `engine` itself.
    pub fn dependants(&self, engine: &Name) -> BTreeSet<Name> {
        let mut reverse: BTreeMap<&Name, BTreeSet<&Name>> = BTreeMap::new();
        for (from, targets) in self.name_edges() {
            for target in targets {
                reverse.entry(target).or_default().insert(from);
            }
        }
        let mut found = BTreeSet::new();
        let mut pending = vec![engine];
        while let Some(next) = pending.pop() {
            for &dependant in reverse.get(next).into_iter().flatten() {
                if dependant != engine && found.insert(dependant.clone()) {
                    pending.push(dependant);
                }
            }
        }
        found
    }

    /// The version itself first, then every version in its dependency
    /// closure as resolved at publish, in (name, version) order; `None` when
    /// the version is not published.
    pub fn resolved_graph(&self, engine: &Name, version: &semver::Version) -> Option<Vec<(Name, semver::Version)>> {
        let root = self.engines.get(engine)?.get(version)?;
        let mut closure: BTreeSet<(&Name, &semver::Version)> = BTreeSet::new();
        let mut pending = vec![root.as_ref()];
        while let Some(node) = pending.pop() {
            for (name, version) in &node.resolved_dependencies {
                if closure.insert((name, version)) {
                    // Recorded dependencies were published, and versions are never removed.
                    if let Some(dependency) = self.engines.get(name).and_then(|versions| versions.get(version)) {
                        pending.push(dependency.as_ref());
                    }
                }
            }
        }
        closure.remove(&(engine, version));
        let mut graph = vec![(engine.clone(), version.clone())];
        graph.extend(closure.into_iter().map(|(name, version)| (name.clone(), version.clone())));
        Some(graph)
    }

    /// The highest version of `engine` that is not yanked.
    pub fn latest_unyanked(&self, engine: &Name) -> Option<&EngineVersion> {
        self.engines.get(engine)?.values().rev().find(|version| !version.is_yanked).map(Arc::as_ref)
    }

    /// One version, or the highest when `version` is `None`.
    pub fn get(&self, engine: &Name, version: Option<&semver::Version>) -> Option<&EngineVersion> {
        let versions = self.engines.get(engine)?;
        match version {
            Some(version) => versions.get(version),
            None => versions.values().next_back(),
        }
        .map(Arc::as_ref)
    }

    /// Engines in name order strictly after `after`, each with its versions.
    pub fn engines_from<'a>(&'a self, after: Option<&Name>) -> impl Iterator<Item = (&'a Name, &'a Versions)> + 'a {
        let start = match after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        self.engines.range((start, std::ops::Bound::Unbounded))
    }

    /// Versions of one engine in ascending order strictly after `after`.
    pub fn versions_from<'a>(
        &'a self,
        engine: &Name,
        after: Option<&semver::Version>,
    ) -> Option<impl Iterator<Item = &'a EngineVersion> + 'a> {
        let versions = self.engines.get(engine)?;
        let start = match after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        Some(versions.range((start, std::ops::Bound::Unbounded)).map(|(_, v)| v.as_ref()))
    }

    /// Number of engines.
    pub fn engine_count(&self) -> usize {
        self.engines.len()
    }

    /// Number of versions across all engines.
    pub fn version_count(&self) -> usize {
        self.engines.values().map(|versions| versions.len()).sum()
    }
}
