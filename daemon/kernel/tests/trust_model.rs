//! Model-based property test of the trust store: random sequences of
//! bootstraps, key additions, root rotations, revocations and publishes —
//! signed by various keys, at leader times that sweep keys in and out of
//! their validity windows — checked entry by entry against a naive model of
//! what must be accepted, replayed as a no-op, or refused.
//!
//! The model restates the rules in `trust_store.rs` over seeds instead of
//! key ids and signatures:
//! - a signature counts for a role when its key exists, is not revoked,
//!   holds the role's purpose, is listed in the role of the *current* root
//!   metadata, and is inside its window at the entry's time; distinct keys
//!   are counted against the role's threshold;
//! - a rotation must be exactly version N+1 and reach the threshold of
//!   version N's root role *and* of its own root role;
//! - a revocation is refused when it would leave the root role with fewer
//!   unrevoked keys than its threshold.
//!
//! After every entry it also checks two invariants: every key listed in a
//! role holds the role's purpose, and the root role always has at least
//! threshold unrevoked keys (the root of trust can never lock itself out by
//! revocation).

mod fixture;

use fixture::*;
use keel_kernel::command::{Command, Proposal};
use keel_kernel::trust_store::{KeyPurpose, KeySpec, Role};
use keel_kernel::{KernelState, Rejection};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// Seeds keys are drawn from; few, so operations collide often.
const SEEDS: std::ops::RangeInclusive<u8> = 1..=6;
/// Entries in one generated log.
const LOG_ENTRIES_MAX: usize = 28;
/// Validity bounds fall in `T0_MS + 0..WINDOW_OFFSET_MS_MAX`.
const WINDOW_OFFSET_MS_MAX: u64 = 3_000;
/// The leader's clock moves by this much per entry (negative: a slower leader).
const TIME_DELTA_MS: std::ops::RangeInclusive<i64> = -200..=400;
/// Engine versions publishes draw from.
const VERSIONS: [&str; 4] = ["1.0.0", "1.0.1", "1.1.0", "2.0.0"];

/// Who signs an entry.
#[derive(Debug, Clone)]
enum Signers {
    /// These seeds (99 is a stranger no setup installs).
    Seeds(Vec<u8>),
    /// The first `n` keys (in id order) of the current root role and, for a
    /// rotation, of the new root role: read from the state at proposal time.
    Roots(usize),
    /// The first `n` keys of the current engine-publisher role.
    Publishers(usize),
}

/// One generated command, before signing.
#[derive(Debug, Clone)]
enum Op {
    Bootstrap { roots: Vec<u8> },
    AddKey { key: u8, purposes: u8, window: Window, signers: Signers },
    Rotate(Rotation),
    Revoke { key: u8, signers: Signers },
    Publish { version: usize, signers: Signers },
}

#[derive(Debug, Clone)]
struct Rotation {
    /// Added to current version + 1: usually 0; -1 replays, +1 skips.
    version_offset: i64,
    roots: Vec<u8>,
    root_threshold: u32,
    /// Window of root keys not already stored as roots (stored ones keep theirs).
    window: Window,
    /// `None`: keep the current engine-publisher role.
    publishers: Option<Vec<u8>>,
    publisher_threshold: u32,
    signers: Signers,
}

/// A validity window as offsets from [`T0_MS`]; `None` bounds are open.
#[derive(Debug, Clone, Copy)]
struct Window {
    not_before_offset_ms: Option<u64>,
    not_after_offset_ms: Option<u64>,
}

impl Window {
    fn bounds(self) -> (u64, Option<u64>) {
        (self.not_before_offset_ms.map_or(0, |offset| T0_MS + offset), self.not_after_offset_ms.map(|o| T0_MS + o))
    }
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    time_delta_ms: i64,
}

fn seed() -> impl Strategy<Value = u8> {
    SEEDS
}

fn window() -> impl Strategy<Value = Window> {
    let bound = |absent_weight| prop_oneof![absent_weight => Just(None), 1 => (0..WINDOW_OFFSET_MS_MAX).prop_map(Some)];
    (bound(3), bound(2))
        .prop_map(|(not_before_offset_ms, not_after_offset_ms)| Window { not_before_offset_ms, not_after_offset_ms })
}

fn signers() -> impl Strategy<Value = Signers> {
    prop_oneof![
        4 => (1usize..=3).prop_map(Signers::Roots),
        2 => (1usize..=2).prop_map(Signers::Publishers),
        3 => proptest::collection::vec(prop_oneof![8 => seed(), 1 => Just(STRANGER)], 1..=3).prop_map(Signers::Seeds),
    ]
}

fn rotation() -> impl Strategy<Value = Rotation> {
    (
        prop_oneof![8 => Just(0i64), 1 => Just(-1i64), 1 => Just(1i64)],
        proptest::collection::vec(seed(), 1..=3),
        prop_oneof![4 => Just(1u32), 2 => Just(2u32), 1 => Just(3u32), 1 => Just(0u32)],
        window(),
        prop_oneof![3 => Just(None), 1 => proptest::collection::vec(seed(), 0..=2).prop_map(Some)],
        prop_oneof![5 => Just(1u32), 1 => Just(2u32)],
        signers(),
    )
        .prop_map(
            |(version_offset, mut roots, root_threshold, window, publishers, publisher_threshold, signers)| {
                // Distinct roots: a repeated one is refused before anything else
                // (kernel unit tests cover it), which would only waste cases.
                let mut seen = BTreeSet::new();
                roots.retain(|seed| seen.insert(*seed));
                Rotation { version_offset, roots, root_threshold, window, publishers, publisher_threshold, signers }
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    // Purpose bits (ROOT, ENGINE_PUBLISHER, API_TOKEN): mostly a publisher.
    let purposes = prop_oneof![6 => Just(0b010u8), 2 => Just(0b100u8), 1 => Just(0b110u8), 1 => 0u8..8];
    prop_oneof![
        1 => proptest::collection::vec(seed(), 1..=2).prop_map(|roots| Op::Bootstrap { roots }),
        5 => (seed(), purposes, window(), signers())
            .prop_map(|(key, purposes, window, signers)| Op::AddKey { key, purposes, window, signers }),
        3 => rotation().prop_map(Op::Rotate),
        2 => (seed(), signers()).prop_map(|(key, signers)| Op::Revoke { key, signers }),
        5 => (0..VERSIONS.len(), signers()).prop_map(|(version, signers)| Op::Publish { version, signers }),
    ]
}

/// A log that usually starts by bootstrapping seed 1 as root and adding
/// seed 2 as a publisher.
fn log() -> impl Strategy<Value = Vec<Step>> {
    let setup = vec![
        Op::Bootstrap { roots: vec![ROOT] },
        Op::AddKey {
            key: 2,
            purposes: 0b010,
            window: Window { not_before_offset_ms: None, not_after_offset_ms: None },
            signers: Signers::Roots(1),
        },
    ];
    let prefix = prop_oneof![1 => Just(Vec::new()), 6 => Just(setup)];
    let step = (op(), TIME_DELTA_MS).prop_map(|(op, time_delta_ms)| Step { op, time_delta_ms });
    (prefix, proptest::collection::vec(step, 1..LOG_ENTRIES_MAX))
        .prop_map(|(prefix, steps)| prefix.into_iter().map(|op| Step { op, time_delta_ms: 0 }).chain(steps).collect())
}

fn purposes_of(bits: u8) -> Vec<KeyPurpose> {
    [KeyPurpose::Root, KeyPurpose::EnginePublisher, KeyPurpose::ApiToken]
        .into_iter()
        .enumerate()
        .filter(|(bit, _)| bits & (1 << bit) != 0)
        .map(|(_, purpose)| purpose)
        .collect()
}

/// Seeds of the keys in `role` of the state's current root metadata.
fn role_seeds(state: &KernelState, role: Role) -> Vec<u8> {
    let ids = state.trust().root().role(role).key_ids;
    ids.iter().filter_map(|id| seed_of_id(id)).collect()
}

fn seed_of_id(key_id: &str) -> Option<u8> {
    SEEDS.chain([STRANGER]).find(|seed| fixture::key_id(*seed) == key_id)
}

/// The seeds that sign, resolved against the state. `new_roots` are a
/// rotation's new root keys.
fn signer_seeds(signers: &Signers, state: &KernelState, new_roots: &[u8]) -> Vec<u8> {
    match signers {
        Signers::Seeds(seeds) => seeds.clone(),
        Signers::Roots(n) => {
            let mut seeds: Vec<u8> = role_seeds(state, Role::Root).into_iter().take(*n).collect();
            seeds.extend(new_roots.iter().take(*n));
            seeds
        }
        Signers::Publishers(n) => role_seeds(state, Role::EnginePublisher).into_iter().take(*n).collect(),
    }
}

/// The spec of a new root key `seed` in a rotation: a stored root key keeps
/// its spec (as a client would copy it), any other gets `window`.
fn rotation_root_spec(seed: u8, window: Window, state: &KernelState) -> KeySpec {
    match state.trust().get(&key_id(seed)) {
        Some(stored) if stored.spec.purposes.contains(&KeyPurpose::Root) => stored.spec.clone(),
        _ => {
            let (not_before_ms, not_after_ms) = window.bounds();
            with_window(root_spec(seed), not_before_ms, not_after_ms)
        }
    }
}

fn rotation_document(rotation: &Rotation, state: &KernelState) -> serde_json::Value {
    let version = state.trust().root().version.saturating_add(1).saturating_add_signed(rotation.version_offset);
    let root_keys: Vec<serde_json::Value> = rotation
        .roots
        .iter()
        .map(|seed| {
            let spec = rotation_root_spec(*seed, rotation.window, state);
            let mut entry =
                serde_json::json!({"public_key": hex::encode(spec.public_key), "not_before_ms": spec.not_before_ms});
            if let Some(not_after_ms) = spec.not_after_ms {
                entry["not_after_ms"] = not_after_ms.into();
            }
            entry
        })
        .collect();
    let ids = |seeds: &[u8]| seeds.iter().map(|seed| key_id(*seed)).collect::<BTreeSet<_>>();
    let publishers = match &rotation.publishers {
        Some(seeds) => ids(seeds),
        None => state.trust().root().role(Role::EnginePublisher).key_ids,
    };
    let api = state.trust().root().role(Role::ApiToken);
    serde_json::json!({
        "version": version,
        "roles": {
            "root": {"key_ids": ids(&rotation.roots), "threshold": rotation.root_threshold},
            "engine-publisher": {"key_ids": publishers, "threshold": rotation.publisher_threshold},
            "api-token": {"key_ids": api.key_ids, "threshold": api.threshold},
        },
        "root_keys": root_keys,
    })
}

fn proposal(step: &Step, leader_time_ms: u64, state: &KernelState) -> Proposal {
    let command = match &step.op {
        Op::Bootstrap { roots } => bootstrap(roots),
        Op::AddKey { key, purposes, window, signers } => {
            let (not_before_ms, not_after_ms) = window.bounds();
            let spec = with_window(key_spec(*key, &purposes_of(*purposes)), not_before_ms, not_after_ms);
            add_key(spec, &signer_seeds(signers, state, &[]))
        }
        Op::Rotate(rotation) => {
            let document = rotation_document(rotation, state);
            rotate_root(&document, &signer_seeds(&rotation.signers, state, &rotation.roots))
        }
        Op::Revoke { key, signers } => revoke(*key, &signer_seeds(signers, state, &[])),
        Op::Publish { version, signers } => {
            let bytes = manifest("alpha", VERSIONS[*version]);
            let signatures = signer_seeds(signers, state, &[]).iter().map(|s| sign_manifest(&bytes, *s)).collect();
            Command::PublishEngineVersion { manifest: bytes, signatures }
        }
    };
    at(leader_time_ms, command)
}

/// What the model expects an entry to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Predicted {
    Changed,
    NoChange,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelRole {
    seeds: BTreeSet<u8>,
    threshold: usize,
}

#[derive(Debug, Clone)]
struct ModelKey {
    spec: KeySpec,
    is_revoked: bool,
}

/// The trust rules over seeds.
#[derive(Debug, Clone, Default)]
struct Model {
    clock_ms: u64,
    is_bootstrapped: bool,
    version: u64,
    roles: BTreeMap<Role, ModelRole>,
    keys: BTreeMap<u8, ModelKey>,
    published: BTreeSet<String>,
}

impl Model {
    fn role(&self, role: Role) -> ModelRole {
        self.roles.get(&role).cloned().unwrap_or(ModelRole { seeds: BTreeSet::new(), threshold: 1 })
    }

    fn is_valid_at(spec: &KeySpec, at_ms: u64) -> bool {
        spec.not_before_ms <= at_ms && spec.not_after_ms.is_none_or(|not_after_ms| at_ms < not_after_ms)
    }

    /// Distinct signers that count for `role` at `at_ms`.
    fn counted(&self, role: Role, signers: &BTreeSet<u8>, at_ms: u64) -> usize {
        let members = self.role(role).seeds;
        signers
            .iter()
            .filter(|seed| {
                self.keys.get(seed).is_some_and(|key| {
                    !key.is_revoked
                        && key.spec.purposes.contains(&role.purpose())
                        && members.contains(seed)
                        && Self::is_valid_at(&key.spec, at_ms)
                })
            })
            .count()
    }

    fn meets(&self, role: Role, signers: &BTreeSet<u8>, at_ms: u64) -> bool {
        self.counted(role, signers, at_ms) >= self.role(role).threshold
    }

    fn signers_of(signatures: &[keel_kernel::signing::Signature]) -> BTreeSet<u8> {
        signatures.iter().filter_map(|signature| seed_of_id(&signature.key_id)).collect()
    }

    fn seed_of(public_key: &[u8; 32]) -> u8 {
        SEEDS.chain([STRANGER]).find(|seed| &fixture::public_key(*seed) == public_key).expect("keys come from seeds")
    }

    fn apply(&mut self, revision: u64, entry: &Proposal) -> Predicted {
        let at_ms = self.clock_ms.max(entry.leader_time_ms);
        let predicted = match &entry.command {
            Command::BootstrapTrust { root_keys, .. } => self.bootstrap(root_keys),
            Command::AddKey { spec, signatures } => self.add_key(spec, &Self::signers_of(signatures), at_ms),
            Command::RotateRoot { metadata, signatures } => self.rotate(metadata, &Self::signers_of(signatures), at_ms),
            Command::RevokeKey { key_id, signatures } => {
                self.revoke(seed_of_id(key_id), &Self::signers_of(signatures), at_ms)
            }
            Command::PublishEngineVersion { manifest, signatures } => {
                self.publish(manifest, &Self::signers_of(signatures), at_ms)
            }
            other => unreachable!("the trust model never generates {other:?} (revision {revision})"),
        };
        if predicted == Predicted::Changed {
            self.clock_ms = at_ms;
        }
        predicted
    }

    fn bootstrap(&mut self, root_keys: &[KeySpec]) -> Predicted {
        let seeds: Vec<u8> = root_keys.iter().map(|spec| Self::seed_of(&spec.public_key)).collect();
        let distinct: BTreeSet<u8> = seeds.iter().copied().collect();
        if distinct.len() != seeds.len() {
            return Predicted::Rejected;
        }
        if self.is_bootstrapped {
            let n_root_keys = self.keys.values().filter(|key| key.spec.purposes.contains(&KeyPurpose::Root)).count();
            let is_same = root_keys.len() == n_root_keys
                && seeds.iter().zip(root_keys).all(|(seed, spec)| self.keys.get(seed).is_some_and(|k| &k.spec == spec));
            return if is_same { Predicted::NoChange } else { Predicted::Rejected };
        }
        for (seed, spec) in seeds.iter().zip(root_keys) {
            self.keys.insert(*seed, ModelKey { spec: spec.clone(), is_revoked: false });
        }
        let empty = ModelRole { seeds: BTreeSet::new(), threshold: 1 };
        self.roles = BTreeMap::from([
            (Role::Root, ModelRole { seeds: distinct, threshold: 1 }),
            (Role::EnginePublisher, empty.clone()),
            (Role::ApiToken, empty),
        ]);
        self.version = 1;
        self.is_bootstrapped = true;
        Predicted::Changed
    }

    fn add_key(&mut self, spec: &KeySpec, signers: &BTreeSet<u8>, at_ms: u64) -> Predicted {
        let is_well_formed = !spec.purposes.is_empty()
            && !spec.purposes.contains(&KeyPurpose::Root)
            && spec.not_after_ms.is_none_or(|not_after_ms| spec.not_before_ms < not_after_ms);
        if !self.is_bootstrapped || !is_well_formed || !self.meets(Role::Root, signers, at_ms) {
            return Predicted::Rejected;
        }
        let seed = Self::seed_of(&spec.public_key);
        match self.keys.get(&seed) {
            Some(existing) if &existing.spec == spec => Predicted::NoChange,
            Some(_) => Predicted::Rejected,
            None => {
                for purpose in &spec.purposes {
                    if let Some(role) = self.roles.get_mut(&purpose.role()) {
                        role.seeds.insert(seed);
                    }
                }
                self.keys.insert(seed, ModelKey { spec: spec.clone(), is_revoked: false });
                Predicted::Changed
            }
        }
    }

    fn rotate(&mut self, metadata: &[u8], signers: &BTreeSet<u8>, at_ms: u64) -> Predicted {
        if !self.is_bootstrapped {
            return Predicted::Rejected;
        }
        let document: serde_json::Value = serde_json::from_slice(metadata).expect("generated documents are JSON");
        if document["version"].as_u64() != Some(self.version + 1) {
            return Predicted::Rejected;
        }
        let seeds_at = |role: &str| -> Vec<u8> {
            document["roles"][role]["key_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|id| seed_of_id(id.as_str().expect("ids are strings")).expect("ids come from seeds"))
                .collect()
        };
        let threshold_at = |role: &str| document["roles"][role]["threshold"].as_u64().expect("a threshold") as usize;
        let mut new_roots: Vec<(u8, KeySpec)> = Vec::new();
        for entry in document["root_keys"].as_array().expect("root_keys") {
            let public_key: [u8; 32] =
                hex::decode(entry["public_key"].as_str().expect("hex")).expect("hex").try_into().expect("32 bytes");
            let spec = KeySpec {
                public_key,
                purposes: BTreeSet::from([KeyPurpose::Root]),
                not_before_ms: entry["not_before_ms"].as_u64().unwrap_or(0),
                not_after_ms: entry["not_after_ms"].as_u64(),
            };
            if spec.not_after_ms.is_some_and(|not_after_ms| not_after_ms <= spec.not_before_ms)
                || new_roots.iter().any(|(seed, _)| *seed == Self::seed_of(&public_key))
            {
                return Predicted::Rejected;
            }
            new_roots.push((Self::seed_of(&public_key), spec));
        }
        let roots: BTreeSet<u8> = new_roots.iter().map(|(seed, _)| *seed).collect();
        let publishers: BTreeSet<u8> = seeds_at("engine-publisher").into_iter().collect();
        let api_tokens: BTreeSet<u8> = seeds_at("api-token").into_iter().collect();
        let (root_threshold, publisher_threshold, api_threshold) =
            (threshold_at("root"), threshold_at("engine-publisher"), threshold_at("api-token"));
        if root_threshold == 0
            || root_threshold > roots.len()
            || publisher_threshold == 0
            || publisher_threshold > publishers.len().max(1)
            || api_threshold == 0
            || api_threshold > api_tokens.len().max(1)
        {
            return Predicted::Rejected;
        }
        for (seed, spec) in &new_roots {
            if let Some(existing) = self.keys.get(seed)
                && (existing.spec != *spec || existing.is_revoked)
            {
                return Predicted::Rejected;
            }
        }
        for (members, purpose) in [(&publishers, KeyPurpose::EnginePublisher), (&api_tokens, KeyPurpose::ApiToken)] {
            let is_fit = members.iter().all(|seed| {
                self.keys.get(seed).is_some_and(|key| !key.is_revoked && key.spec.purposes.contains(&purpose))
            });
            if !is_fit {
                return Predicted::Rejected;
            }
        }
        if !self.meets(Role::Root, signers, at_ms) {
            return Predicted::Rejected;
        }
        let mut next = self.clone();
        for (seed, spec) in &new_roots {
            next.keys.entry(*seed).or_insert_with(|| ModelKey { spec: spec.clone(), is_revoked: false });
        }
        next.version += 1;
        next.roles = BTreeMap::from([
            (Role::Root, ModelRole { seeds: roots, threshold: root_threshold }),
            (Role::EnginePublisher, ModelRole { seeds: publishers, threshold: publisher_threshold }),
            (Role::ApiToken, ModelRole { seeds: api_tokens, threshold: api_threshold }),
        ]);
        if !next.meets(Role::Root, signers, at_ms) {
            return Predicted::Rejected;
        }
        *self = next;
        Predicted::Changed
    }

    fn revoke(&mut self, seed: Option<u8>, signers: &BTreeSet<u8>, at_ms: u64) -> Predicted {
        if !self.is_bootstrapped || !self.meets(Role::Root, signers, at_ms) {
            return Predicted::Rejected;
        }
        let Some(seed) = seed.filter(|seed| self.keys.contains_key(seed)) else {
            return Predicted::Rejected;
        };
        if self.keys[&seed].is_revoked {
            return Predicted::NoChange;
        }
        let root = self.role(Role::Root);
        if root.seeds.contains(&seed) {
            let n_left =
                root.seeds.iter().filter(|s| **s != seed && self.keys.get(s).is_some_and(|k| !k.is_revoked)).count();
            if n_left < root.threshold {
                return Predicted::Rejected;
            }
        }
        if let Some(key) = self.keys.get_mut(&seed) {
            key.is_revoked = true;
        }
        Predicted::Changed
    }

    fn publish(&mut self, manifest: &[u8], signers: &BTreeSet<u8>, at_ms: u64) -> Predicted {
        if !self.is_bootstrapped || signers.is_empty() || !self.meets(Role::EnginePublisher, signers, at_ms) {
            return Predicted::Rejected;
        }
        let document: serde_json::Value = serde_json::from_slice(manifest).expect("generated manifests are JSON");
        let version = document["version"].as_str().expect("a version").to_owned();
        if self.published.insert(version) { Predicted::Changed } else { Predicted::NoChange }
    }
}

/// Applies `log` at revisions 1.., calling `inspect` with each entry, the
/// result and the state after.
fn replay(
    log: &[Step],
    mut inspect: impl FnMut(u64, &Proposal, &Result<keel_kernel::Applied, Rejection>, &KernelState),
) {
    let mut state = KernelState::default();
    let mut leader_time_ms = T0_MS;
    for (index, step) in log.iter().enumerate() {
        let revision = index as u64 + 1;
        leader_time_ms = leader_time_ms.saturating_add_signed(step.time_delta_ms);
        let entry = proposal(step, leader_time_ms, &state);
        let before = state.clone();
        let result = state.apply(revision, &entry);
        if result.as_ref().map_or(true, |applied| applied.events.is_empty()) {
            assert_eq!(state, before, "entry {revision} ({entry}) changed the state without events");
        }
        inspect(revision, &entry, &result, &state);
    }
}

fn describe(result: &Result<keel_kernel::Applied, Rejection>) -> String {
    match result {
        Err(rejection) => format!("rejected: {} ({rejection})", label(rejection)),
        Ok(applied) if applied.events.is_empty() => "no change".to_owned(),
        Ok(applied) => format!("changed: {:?}", applied.events),
    }
}

/// The invariants every reachable state keeps.
fn assert_trust_invariants(state: &KernelState, context: &str) {
    let trust = state.trust();
    if !trust.is_bootstrapped() {
        return;
    }
    for role in Role::ALL {
        for key_id in &trust.root().role(role).key_ids {
            let key = trust.get(key_id).unwrap_or_else(|| panic!("{context}: {role:?} lists unknown key {key_id}"));
            assert!(key.spec.purposes.contains(&role.purpose()), "{context}: {key_id} in {role:?} lacks its purpose");
        }
    }
    let root = trust.root().role(Role::Root);
    let n_live =
        root.key_ids.iter().filter(|id| trust.get(id).is_some_and(|k| k.revoked_at_revision.is_none())).count();
    assert!(n_live >= root.threshold as usize, "{context}: {n_live} live root keys, threshold {}", root.threshold);
}

fn config() -> ProptestConfig {
    // A case takes a few tens of milliseconds; 128 of them reach the rarer
    // sequences (a revoked key signing again, a rotated-out root) every run
    // (32 did not). PROPTEST_CASES in the environment asks for a deeper run.
    let default = ProptestConfig::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { default.cases } else { 128 };
    ProptestConfig { cases, ..default }
}

proptest! {
    #![proptest_config(config())]

    /// The kernel accepts, replays and refuses exactly what the model does,
    /// ends with the same root metadata, keys, revocations and versions, and
    /// keeps the trust invariants after every entry.
    #[test]
    fn trust_operations_agree_with_the_model(log in log()) {
        let mut model = Model::default();
        let mut last_state = KernelState::default();
        replay(&log, |revision, entry, result, state| {
            let predicted = model.apply(revision, entry);
            let actual = match result {
                Err(_) => Predicted::Rejected,
                Ok(applied) if applied.events.is_empty() => Predicted::NoChange,
                Ok(_) => Predicted::Changed,
            };
            assert_eq!(actual, predicted, "entry {revision} ({entry}): kernel says {}; model {model:#?}", describe(result));
            assert_trust_invariants(state, &format!("after entry {revision} ({entry})"));
            last_state = state.clone();
        });
        let trust = last_state.trust();
        assert_eq!(trust.root().version, model.version, "root version");
        for role in Role::ALL {
            let expected = model.role(role);
            let actual = trust.root().role(role);
            let ids: BTreeSet<String> = expected.seeds.iter().map(|seed| key_id(*seed)).collect();
            if model.is_bootstrapped {
                assert_eq!((actual.key_ids, actual.threshold as usize), (ids, expected.threshold), "{role:?}");
            }
        }
        let keys: BTreeMap<String, bool> =
            trust.iter_from(None).map(|key| (key.key_id.clone(), key.revoked_at_revision.is_some())).collect();
        let model_keys: BTreeMap<String, bool> =
            model.keys.iter().map(|(seed, key)| (key_id(*seed), key.is_revoked)).collect();
        assert_eq!(keys, model_keys, "keys and their revocation");
        let published: BTreeSet<String> = last_state
            .registry()
            .versions_from(&name("alpha"), None)
            .into_iter()
            .flatten()
            .map(|version| version.version.to_string())
            .collect();
        assert_eq!(published, model.published, "published versions");
        assert_eq!(last_state.clock_ms(), model.clock_ms, "clock");
    }
}

/// The generator must keep reaching the outcomes the property is about.
#[test]
fn the_trust_generator_reaches_every_interesting_outcome() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for _ in 0..64 {
        let log = log().new_tree(&mut runner).expect("the log strategy never rejects").current();
        replay(&log, |_, entry, result, _| {
            let kind = entry.to_string().split('@').next().unwrap_or_default().to_owned();
            let outcome = match result {
                Err(rejection) => rejection.reason().to_owned(),
                Ok(applied) if applied.events.is_empty() => "NO_CHANGE".to_owned(),
                Ok(_) => "CHANGED".to_owned(),
            };
            seen.insert(format!("{kind} {outcome}"));
        });
    }
    let expected = [
        "bootstrap_trust CHANGED",
        "bootstrap_trust TRUST_ALREADY_BOOTSTRAPPED",
        "add_key CHANGED",
        "add_key NO_CHANGE",
        "add_key KEY_PURPOSE_MISMATCH",
        "add_key KEY_REVOKED",
        "revoke_key SIGNATURE_THRESHOLD_NOT_MET",
        "revoke_key KEY_REVOKED",
        "rotate_root CHANGED",
        "rotate_root ROOT_VERSION_INVALID",
        "rotate_root SIGNATURE_THRESHOLD_NOT_MET",
        "rotate_root FIELD_INVALID",
        "rotate_root KEY_UNKNOWN",
        "rotate_root KEY_ALREADY_EXISTS",
        "rotate_root KEY_REVOKED",
        "revoke_key CHANGED",
        "revoke_key NO_CHANGE",
        "revoke_key FIELD_INVALID",
        "publish_engine_version CHANGED",
        "publish_engine_version NO_CHANGE",
        "publish_engine_version KEY_REVOKED",
        "publish_engine_version KEY_EXPIRED",
        "publish_engine_version KEY_NOT_YET_VALID",
        "publish_engine_version KEY_PURPOSE_MISMATCH",
    ];
    let missing: Vec<&str> = expected.into_iter().filter(|outcome| !seen.contains(*outcome)).collect();
    assert!(missing.is_empty(), "the trust generator no longer reaches {missing:?}; it reached {seen:#?}");
}
