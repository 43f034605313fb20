//! Property tests of the kernel over random logs.
//!
//! A log is a sequence of steps, each a command and a leader time. Commands
//! are a mix of valid and invalid ones: bootstraps (sometimes with other or
//! repeated roots), keys signed by known, unknown or wrongly-purposed keys
//! (sometimes over a tampered spec), manifests signed by random keys
//! (sometimes over other bytes, sometimes re-formatted), junk manifests, and
//! tenant creates/updates with current, stale or no etags. Leader times jump
//! back and forth, so keys drift in and out of their validity windows.
//!
//! A second generator builds engine graphs: publishes over a few engines,
//! tiers and requirements, mixed with yanks; after every entry the recorded
//! resolutions exist, keep the tier rule, and the graph over names is acyclic.
//!
//! Keys come from one-byte seeds, so a shrunk failure names its keys exactly.
//! Signature checks are slow in debug builds, so case counts are modest.

mod fixture;

use fixture::*;
use keel_kernel::command::{Command, Proposal};
use keel_kernel::tenant::TenantSpec;
use keel_kernel::trust_store::{KeyPurpose, KeySpec};
use keel_kernel::{Applied, KernelState, Outcome, Rejection};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// Seeds keys are drawn from. Small, so commands often collide.
const SEEDS: std::ops::RangeInclusive<u8> = 1..=6;
const ENGINES: [&str; 2] = ["alpha", "beta"];
const VERSIONS: [&str; 3] = ["1.0.0", "1.1.0", "2.0.0-rc.1"];
const DESCRIPTIONS: [&str; 2] = ["first build", "second build"];
/// Entries in one generated log.
const LOG_ENTRIES_MAX: usize = 32;
/// Key validity bounds fall in `T0_MS + 0..TIME_OFFSET_MS_MAX`.
const TIME_OFFSET_MS_MAX: u64 = 4_000;
/// The leader's clock moves by `TIME_DELTA_MS_MIN..=TIME_DELTA_MS_MAX` per
/// entry, so over a log it sweeps through the validity bounds above.
const TIME_DELTA_MS_MIN: i64 = -300;
const TIME_DELTA_MS_MAX: i64 = 500;
const TENANTS: [&str; 2] = ["acme", "globex"];
const DISPLAY_NAMES: [&str; 3] = ["", "Acme Corp", "Renamed"];
/// Manifests that never validate, each for a different reason.
const JUNK_MANIFESTS: [&[u8]; 6] = [
    b"",
    b"{",
    b"{\"name\": \"alpha\", \"version\": \"1.0\", \"tier\": \"core\"}",
    b"{\"name\": \"alpha\", \"version\": \"1.0.0+build\", \"tier\": \"core\"}",
    b"{\"name\": \"Alpha\", \"version\": \"1.0.0\", \"tier\": \"core\"}",
    b"{\"name\": \"alpha\", \"version\": \"1.0.0\", \"tier\": \"core\", \"extra\": 1}",
];

/// One generated command, before signing.
#[derive(Debug, Clone)]
enum Op {
    Bootstrap {
        roots: Vec<u8>,
    },
    AddKey {
        key: u8,
        purposes: u8,
        not_before_offset_ms: Option<u64>,
        not_after_offset_ms: Option<u64>,
        signer: u8,
        is_tampered: bool,
    },
    Publish {
        engine: usize,
        version: usize,
        description: usize,
        is_pretty: bool,
        signer: u8,
        is_tampered: bool,
    },
    PublishJunk {
        junk: usize,
        signer: u8,
    },
    CreateTenant {
        tenant: usize,
        display_name: usize,
    },
    UpdateTenant {
        tenant: usize,
        display_name: usize,
        etag: Etag,
    },
}

/// Which etag an update sends.
#[derive(Debug, Clone)]
enum Etag {
    None,
    /// The tenant's current etag, read from the state at proposal time.
    Current,
    /// `r{n}`: usually stale, sometimes current by chance.
    Revision(u64),
}

/// One log entry: a command, and how far the leader's clock moved since the
/// previous entry (negative: a leader with a slower clock).
#[derive(Debug, Clone)]
struct Step {
    op: Op,
    time_delta_ms: i64,
}

fn seed() -> impl Strategy<Value = u8> {
    SEEDS
}

/// Who signs a key: usually the bootstrap root, so keys actually get added.
fn key_signer() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(ROOT), 1 => seed()]
}

/// Who signs a manifest: usually the prefix's publisher (seed 2) or a seed that may have been added as one.
fn manifest_signer() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(2), 2 => 3..=*SEEDS.end(), 1 => seed()]
}

/// Purpose bits (ROOT, ENGINE_PUBLISHER, API_TOKEN): mostly a publisher.
fn purpose_bits() -> impl Strategy<Value = u8> {
    prop_oneof![6 => Just(0b010), 1 => Just(0b100), 2 => 0u8..8]
}

/// A validity bound as an offset from [`T0_MS`], often absent.
fn window_offset(absent_weight: u32) -> impl Strategy<Value = Option<u64>> {
    prop_oneof![absent_weight => Just(None), 1 => (0u64..TIME_OFFSET_MS_MAX).prop_map(Some)]
}

fn op() -> impl Strategy<Value = Op> {
    let add_key =
        (seed(), purpose_bits(), window_offset(3), window_offset(2), key_signer(), proptest::bool::weighted(0.1))
            .prop_map(|(key, purposes, not_before_offset_ms, not_after_offset_ms, signer, is_tampered)| Op::AddKey {
                key,
                purposes,
                not_before_offset_ms,
                not_after_offset_ms,
                signer,
                is_tampered,
            });
    let publish = (
        0..ENGINES.len(),
        0..VERSIONS.len(),
        0..DESCRIPTIONS.len(),
        any::<bool>(),
        manifest_signer(),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(engine, version, description, is_pretty, signer, is_tampered)| Op::Publish {
            engine,
            version,
            description,
            is_pretty,
            signer,
            is_tampered,
        });
    let display_name = prop_oneof![1 => Just(0usize), 4 => 1..DISPLAY_NAMES.len()];
    let etag = prop_oneof![2 => Just(Etag::None), 2 => Just(Etag::Current), 1 => (0u64..24).prop_map(Etag::Revision)];
    prop_oneof![
        1 => proptest::collection::vec(seed(), 1..3).prop_map(|roots| Op::Bootstrap { roots }),
        4 => add_key,
        6 => publish,
        1 => (0..JUNK_MANIFESTS.len(), seed()).prop_map(|(junk, signer)| Op::PublishJunk { junk, signer }),
        2 => (0..TENANTS.len(), display_name.clone())
            .prop_map(|(tenant, display_name)| Op::CreateTenant { tenant, display_name }),
        2 => (0..TENANTS.len(), display_name, etag)
            .prop_map(|(tenant, display_name, etag)| Op::UpdateTenant { tenant, display_name, etag }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (op(), TIME_DELTA_MS_MIN..=TIME_DELTA_MS_MAX).prop_map(|(op, time_delta_ms)| Step { op, time_delta_ms })
}

/// A log that usually starts by bootstrapping ROOT and adding seed 2 as a
/// publisher, so later entries have keys to verify against; sometimes not.
fn log() -> impl Strategy<Value = Vec<Step>> {
    let prefix = prop_oneof![
        1 => Just(vec![]),
        1 => Just(vec![Op::Bootstrap { roots: vec![ROOT] }]),
        4 => Just(vec![Op::Bootstrap { roots: vec![ROOT] }, Op::AddKey {
            key: 2,
            purposes: 0b010,
            not_before_offset_ms: None,
            not_after_offset_ms: None,
            signer: ROOT,
            is_tampered: false,
        }]),
    ];
    (prefix, proptest::collection::vec(step(), 1..LOG_ENTRIES_MAX))
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

fn added_key_spec(
    key: u8,
    purposes: u8,
    not_before_offset_ms: Option<u64>,
    not_after_offset_ms: Option<u64>,
) -> KeySpec {
    with_window(
        key_spec(key, &purposes_of(purposes)),
        not_before_offset_ms.map_or(0, |offset| T0_MS + offset),
        not_after_offset_ms.map(|offset| T0_MS + offset),
    )
}

fn manifest_bytes(engine: usize, version: usize, description: usize, is_pretty: bool) -> Vec<u8> {
    let mut document = manifest_value(ENGINES[engine], VERSIONS[version]);
    document["description"] = DESCRIPTIONS[description].into();
    match is_pretty {
        true => serde_json::to_vec_pretty(&document).expect("a JSON value serialises"),
        false => json_bytes(&document),
    }
}

fn tenant(tenant: usize, display_name: usize) -> TenantSpec {
    tenant_spec(TENANTS[tenant], DISPLAY_NAMES[display_name])
}

/// Signs `step` into a proposal stamped `leader_time_ms`. `state` is read
/// only to resolve [`Etag::Current`].
fn proposal(step: &Step, leader_time_ms: u64, state: &KernelState) -> Proposal {
    let command = match &step.op {
        Op::Bootstrap { roots } => bootstrap(roots),
        Op::AddKey { key, purposes, not_before_offset_ms, not_after_offset_ms, signer, is_tampered } => {
            let spec = added_key_spec(*key, *purposes, *not_before_offset_ms, *not_after_offset_ms);
            let signed = match is_tampered {
                true => KeySpec { not_before_ms: spec.not_before_ms + 1, ..spec.clone() },
                false => spec.clone(),
            };
            Command::AddKey { spec, signatures: vec![sign_key_spec(&signed, *signer)] }
        }
        Op::Publish { engine, version, description, is_pretty, signer, is_tampered } => {
            let sent = manifest_bytes(*engine, *version, *description, *is_pretty);
            let signed = match is_tampered {
                true => manifest_bytes(*engine, *version, (description + 1) % DESCRIPTIONS.len(), *is_pretty),
                false => sent.clone(),
            };
            Command::PublishEngineVersion { manifest: sent, signatures: vec![sign_manifest(&signed, *signer)] }
        }
        Op::PublishJunk { junk, signer } => publish(JUNK_MANIFESTS[*junk].to_vec(), *signer),
        Op::CreateTenant { tenant: index, display_name } => {
            Command::CreateTenant { spec: tenant(*index, *display_name) }
        }
        Op::UpdateTenant { tenant: index, display_name, etag } => {
            let spec = tenant(*index, *display_name);
            let expected_etag = match etag {
                Etag::None => None,
                Etag::Current => {
                    Some(state.tenants().get(&spec.tenant_id).map_or_else(|| "r0".to_owned(), |t| t.etag()))
                }
                Etag::Revision(revision) => Some(format!("r{revision}")),
            };
            Command::UpdateTenant { spec, expected_etag }
        }
    };
    at(leader_time_ms, command)
}

/// Applies `log` to a fresh state at revisions 1.., calling `inspect` with
/// each entry, the state before, the result and the state after.
fn replay(
    log: &[Step],
    mut inspect: impl FnMut(u64, &Proposal, &KernelState, &Result<Applied, Rejection>, &KernelState),
) -> KernelState {
    let mut state = KernelState::default();
    let mut leader_time_ms = T0_MS;
    for (index, step) in log.iter().enumerate() {
        let revision = index as u64 + 1;
        leader_time_ms = leader_time_ms.saturating_add_signed(step.time_delta_ms);
        let entry = proposal(step, leader_time_ms, &state);
        let before = state.clone();
        let result = state.apply(revision, &entry);
        inspect(revision, &entry, &before, &result, &state);
    }
    state
}

fn config() -> ProptestConfig {
    // Each case verifies a dozen or so Ed25519 signatures, ~10 ms each in a
    // debug build, so the default keeps each property to a few seconds on 2
    // cores. PROPTEST_CASES in the environment asks for a deeper run.
    let default = ProptestConfig::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { default.cases } else { 32 };
    ProptestConfig { cases, ..default }
}

proptest! {
    #![proptest_config(config())]

    /// (a) Two fresh states applying the same log agree on the digest after every entry.
    #[test]
    fn the_same_log_gives_the_same_digest(log in log()) {
        let mut replica = KernelState::default();
        replay(&log, |revision, entry, _, result, state| {
            let replica_result = replica.apply(revision, entry);
            assert_eq!(&replica_result, result, "entry {revision} ({entry}) gave different results");
            assert_eq!(replica.digest(), state.digest(), "digests diverge after entry {revision} ({entry})");
        });
    }

    /// (b) After every entry, the snapshot decodes to an equal state with an equal digest.
    #[test]
    fn the_snapshot_round_trips_after_every_entry(log in log()) {
        replay(&log, |revision, entry, _, _, state| {
            let bytes = state.encode_snapshot();
            let decoded = KernelState::decode_snapshot(&bytes).expect("own snapshot decodes");
            assert_eq!(&decoded, state, "after entry {revision} ({entry})");
            assert_eq!(decoded.digest(), state.digest(), "after entry {revision} ({entry})");
            assert_eq!(decoded.encode_snapshot(), bytes, "re-encoding after entry {revision} ({entry})");
        });
    }

    /// (c) A rejected entry, or one that changes nothing, leaves the state and its digest as they were.
    #[test]
    fn rejections_leave_the_state_unchanged(log in log()) {
        replay(&log, |revision, entry, before, result, after| {
            let is_unchanged = match result {
                Err(_) => true,
                Ok(applied) => applied.events.is_empty(),
            };
            if is_unchanged {
                assert_eq!(after.digest(), before.digest(), "entry {revision} ({entry}): {}", describe(result));
                assert_eq!(after, before, "entry {revision} ({entry}): {}", describe(result));
            } else {
                assert_ne!(after.digest(), before.digest(), "entry {revision} ({entry}) changed nothing");
            }
        });
    }

    /// (d) The kernel accepts, replays and refuses exactly what a naive model
    /// does, and ends with the same published versions, keys and tenants.
    #[test]
    fn the_kernel_agrees_with_a_naive_model(log in log()) {
        let mut model = Model::default();
        let state = replay(&log, |revision, entry, _, result, _| {
            let predicted = model.apply(revision, entry);
            let actual = match result {
                Err(_) => Predicted::Rejected,
                Ok(applied) if applied.events.is_empty() => Predicted::NoChange,
                Ok(_) => Predicted::Changed,
            };
            assert_eq!(actual, predicted, "entry {revision} ({entry}): kernel says {}", describe(result));
            if let Ok(Applied { outcome: Outcome::TenantWritten { tenant }, .. }) = result {
                assert_eq!(tenant.etag(), format!("r{revision}"));
            }
        });
        let published: BTreeSet<(String, String)> = state
            .registry()
            .engines_from(None)
            .flat_map(|(engine, versions)| versions.keys().map(move |version| (engine.to_string(), version.to_string())))
            .collect();
        assert_eq!(published, model.published.keys().cloned().collect::<BTreeSet<_>>(), "published versions");
        let key_ids: BTreeSet<String> = state.trust().iter_from(None).map(|key| key.key_id.clone()).collect();
        assert_eq!(key_ids, model.keys.keys().map(|&seed| key_id(seed)).collect::<BTreeSet<_>>(), "trusted keys");
        let tenants: BTreeMap<String, String> = state
            .tenants()
            .iter_from(None)
            .map(|tenant| (tenant.spec.tenant_id.to_string(), tenant.spec.display_name.clone()))
            .collect();
        let model_tenants: BTreeMap<String, String> =
            model.tenants.iter().map(|(id, (display_name, _))| (id.clone(), display_name.clone())).collect();
        assert_eq!(tenants, model_tenants, "tenants");
        assert_eq!(state.clock_ms(), model.clock_ms, "clock");
    }
}

/// Any JSON value: every kind of number (huge, negative zero, subnormal),
/// any Unicode string, nested arrays and objects.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON has no NaN or infinity", |number| {
            serde_json::Number::from_f64(number).map(Value::Number)
        }),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,8}", inner, 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: config().cases / 2, ..config() })]

    /// The stored manifest is a fixed point of canonicalisation: publishing
    /// it again (re-signed over its own payload) changes nothing, whatever
    /// JSON the schemas carry.
    #[test]
    fn canonical_manifests_are_a_fixed_point(constant in json_value()) {
        let mut document = manifest_value("echo", "1.0.0");
        document["actions"][0]["input_schema"] = serde_json::json!({ "const": constant });
        let setup = [
            at(T0_MS, bootstrap(&[ROOT])),
            at(T0_MS, add_key(publisher_spec(2), &[ROOT])),
        ];
        let mut state = KernelState::default();
        for (index, entry) in setup.iter().enumerate() {
            state.apply(index as u64 + 1, entry).expect("setup applies");
        }
        let first = state.apply(3, &at(T0_MS, publish(json_bytes(&document), 2)));
        let Ok(Applied { outcome: Outcome::EngineVersionPublished { version, created: true }, .. }) = first else {
            panic!("a manifest with any JSON in its schema publishes: {}", describe(&first));
        };
        let reparsed = keel_kernel::manifest::parse(&version.manifest).expect("the stored manifest parses");
        assert_eq!(reparsed.canonical, version.manifest, "canonicalising the canonical form changes it");
        let before = state.clone();
        let again = state.apply(4, &at(T0_MS, publish(version.manifest.clone(), 2)));
        assert!(matches!(&again, Ok(applied) if applied.events.is_empty()), "republish: {}", describe(&again));
        assert_eq!(state, before);
    }
}

/// A result in one line, for assertion messages.
fn describe(result: &Result<Applied, Rejection>) -> String {
    match result {
        Err(rejection) => format!("rejected: {} ({rejection})", label(rejection)),
        Ok(applied) if applied.events.is_empty() => "no change".to_owned(),
        Ok(applied) => format!("changed: {:?}", applied.events),
    }
}

/// What the model expects an entry to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Predicted {
    Changed,
    NoChange,
    Rejected,
}

/// The kernel's rules, restated as plainly as possible over the generated
/// vocabulary. It identifies keys by seed and manifests by what they say
/// (engine, version, description), never by bytes or signatures.
#[derive(Debug, Default)]
struct Model {
    clock_ms: u64,
    roots: Option<BTreeSet<u8>>,
    keys: BTreeMap<u8, KeySpec>,
    /// (engine, version) → description.
    published: BTreeMap<(String, String), String>,
    /// tenant id → (display name, revision of the last change).
    tenants: BTreeMap<String, (String, u64)>,
}

impl Model {
    fn apply(&mut self, revision: u64, entry: &Proposal) -> Predicted {
        let at_ms = self.clock_ms.max(entry.leader_time_ms);
        let predicted = match &entry.command {
            Command::BootstrapTrust { root_keys, .. } => self.bootstrap(root_keys),
            Command::AddKey { spec, signatures } => self.add_key(spec, &signatures[0], at_ms),
            Command::PublishEngineVersion { manifest, signatures } => self.publish(manifest, &signatures[0], at_ms),
            Command::CreateTenant { spec } => self.create_tenant(spec, revision),
            Command::UpdateTenant { spec, expected_etag } => {
                self.update_tenant(spec, expected_etag.as_deref(), revision)
            }
            Command::YankEngineVersion { .. }
            | Command::RotateRoot { .. }
            | Command::RevokeKey { .. }
            | Command::PublishEvent { .. }
            | Command::PutPolicy { .. }
            | Command::RevokeToken { .. } => {
                unreachable!("the model's logs never yank, rotate the root, revoke, publish events or put policies")
            }
        };
        if predicted == Predicted::Changed {
            self.clock_ms = at_ms;
        }
        predicted
    }

    fn seed_of(public_key: &[u8; 32]) -> u8 {
        (0..=255).find(|&seed| &fixture::public_key(seed) == public_key).expect("generated keys come from seeds")
    }

    fn bootstrap(&mut self, root_keys: &[KeySpec]) -> Predicted {
        let seeds: Vec<u8> = root_keys.iter().map(|spec| Self::seed_of(&spec.public_key)).collect();
        let distinct: BTreeSet<u8> = seeds.iter().copied().collect();
        if distinct.len() != seeds.len() {
            return Predicted::Rejected;
        }
        match &self.roots {
            Some(roots) if *roots == distinct => Predicted::NoChange,
            Some(_) => Predicted::Rejected,
            None => {
                for (&seed, spec) in seeds.iter().zip(root_keys) {
                    self.keys.insert(seed, spec.clone());
                }
                self.roots = Some(distinct);
                Predicted::Changed
            }
        }
    }

    fn is_valid_at(spec: &KeySpec, at_ms: u64) -> bool {
        spec.not_before_ms <= at_ms && spec.not_after_ms.is_none_or(|not_after_ms| at_ms < not_after_ms)
    }

    /// Whether `signature` is by a stored key with `purpose`, valid at `at_ms`, over `signed`.
    fn is_signed_by(
        &self,
        purpose: KeyPurpose,
        signature_payload: &[u8],
        signature: &keel_kernel::signing::Signature,
        at_ms: u64,
    ) -> bool {
        let Some((&seed, spec)) = self.keys.iter().find(|(seed, _)| key_id(**seed) == signature.key_id) else {
            return false;
        };
        spec.purposes.contains(&purpose)
            && Self::is_valid_at(spec, at_ms)
            && sign(seed, signature_payload).signature == signature.signature
    }

    fn add_key(&mut self, spec: &KeySpec, signature: &keel_kernel::signing::Signature, at_ms: u64) -> Predicted {
        let is_well_formed = !spec.purposes.is_empty()
            && !spec.purposes.contains(&KeyPurpose::Root)
            && spec.not_after_ms.is_none_or(|not_after_ms| spec.not_before_ms < not_after_ms);
        let payload = spec.signing_payload().expect("a key spec canonicalises");
        if self.roots.is_none() || !is_well_formed || !self.is_signed_by(KeyPurpose::Root, &payload, signature, at_ms) {
            return Predicted::Rejected;
        }
        let seed = Self::seed_of(&spec.public_key);
        match self.keys.get(&seed) {
            Some(existing) if existing == spec => Predicted::NoChange,
            Some(_) => Predicted::Rejected,
            None => {
                self.keys.insert(seed, spec.clone());
                Predicted::Changed
            }
        }
    }

    fn publish(&mut self, manifest: &[u8], signature: &keel_kernel::signing::Signature, at_ms: u64) -> Predicted {
        // Generated manifests are either junk or one of the vocabulary's documents.
        let Ok(document) = serde_json::from_slice::<serde_json::Value>(manifest) else {
            return Predicted::Rejected;
        };
        let Some(variant) = vocabulary_manifest(&document) else {
            return Predicted::Rejected;
        };
        // Signatures are made over the compact form of the document; a
        // re-formatted document carries the same signature.
        let (engine, version, description) = variant;
        let compact = manifest_bytes(engine, version, description, false);
        let payload = keel_kernel::manifest::parse(&compact).expect("vocabulary manifests parse").signing_payload();
        if self.roots.is_none() || !self.is_signed_by(KeyPurpose::EnginePublisher, &payload, signature, at_ms) {
            return Predicted::Rejected;
        }
        let key = (ENGINES[engine].to_owned(), VERSIONS[version].to_owned());
        match self.published.get(&key) {
            Some(existing) if existing == DESCRIPTIONS[description] => Predicted::NoChange,
            Some(_) => Predicted::Rejected,
            None => {
                self.published.insert(key, DESCRIPTIONS[description].to_owned());
                Predicted::Changed
            }
        }
    }

    fn create_tenant(&mut self, spec: &TenantSpec, revision: u64) -> Predicted {
        let id = spec.tenant_id.to_string();
        if spec.display_name.is_empty() || self.tenants.contains_key(&id) {
            return Predicted::Rejected;
        }
        self.tenants.insert(id, (spec.display_name.clone(), revision));
        Predicted::Changed
    }

    fn update_tenant(&mut self, spec: &TenantSpec, expected_etag: Option<&str>, revision: u64) -> Predicted {
        let Some((display_name, update_revision)) = self.tenants.get_mut(spec.tenant_id.as_str()) else {
            return Predicted::Rejected;
        };
        let is_current = expected_etag.is_none_or(|etag| etag == format!("r{update_revision}"));
        if spec.display_name.is_empty() || !is_current {
            return Predicted::Rejected;
        }
        *display_name = spec.display_name.clone();
        *update_revision = revision;
        Predicted::Changed
    }
}

/// Which vocabulary document `document` is, if any: (engine, version, description) indices.
fn vocabulary_manifest(document: &serde_json::Value) -> Option<(usize, usize, usize)> {
    let mut indices = (0..ENGINES.len())
        .flat_map(|engine| (0..VERSIONS.len()).map(move |version| (engine, version)))
        .flat_map(|(engine, version)| (0..DESCRIPTIONS.len()).map(move |description| (engine, version, description)));
    indices.find(|&(engine, version, description)| {
        let mut candidate = manifest_value(ENGINES[engine], VERSIONS[version]);
        candidate["description"] = DESCRIPTIONS[description].into();
        &candidate == document
    })
}

/// The generator must keep reaching the outcomes the properties are about;
/// otherwise a change to it could quietly leave, say, idempotent publishes
/// untested. Samples logs with proptest's deterministic runner.
#[test]
fn the_generator_reaches_every_interesting_outcome() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for _ in 0..48 {
        let log = log().new_tree(&mut runner).expect("the log strategy never rejects").current();
        replay(&log, |_, entry, _, result, _| {
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
        "bootstrap_trust NO_CHANGE",
        "bootstrap_trust TRUST_ALREADY_BOOTSTRAPPED",
        "bootstrap_trust FIELD_INVALID",
        "add_key CHANGED",
        "add_key NO_CHANGE",
        "add_key KEY_ALREADY_EXISTS",
        "add_key KEY_UNKNOWN",
        "add_key KEY_PURPOSE_MISMATCH",
        "add_key SIGNATURE_INVALID",
        "add_key KEY_VALIDITY_INVALID",
        "add_key TRUST_NOT_BOOTSTRAPPED",
        "publish_engine_version CHANGED",
        "publish_engine_version NO_CHANGE",
        "publish_engine_version VERSION_ALREADY_PUBLISHED",
        "publish_engine_version KEY_UNKNOWN",
        "publish_engine_version KEY_PURPOSE_MISMATCH",
        "publish_engine_version KEY_EXPIRED",
        "publish_engine_version KEY_NOT_YET_VALID",
        "publish_engine_version SIGNATURE_INVALID",
        "publish_engine_version MANIFEST_MALFORMED",
        "create_tenant CHANGED",
        "create_tenant TENANT_ALREADY_EXISTS",
        "create_tenant FIELD_REQUIRED",
        "update_tenant CHANGED",
        "update_tenant ETAG_MISMATCH",
        "update_tenant TENANT_NOT_FOUND",
    ];
    let missing: Vec<&str> = expected.into_iter().filter(|outcome| !seen.contains(*outcome)).collect();
    assert!(missing.is_empty(), "the generator no longer reaches {missing:?}; it reached {seen:#?}");
}

// ---------------------------------------------------------------- engine graphs

/// Engines of the graph vocabulary; few, so dependencies often chain and collide.
const GRAPH_ENGINES: [&str; 4] = ["base", "lib", "app", "tool"];
const GRAPH_VERSIONS: [&str; 3] = ["1.0.0", "1.1.0", "2.0.0"];
const GRAPH_TIERS: [&str; 4] = ["core", "critical", "standard", "experimental"];
const GRAPH_REQUIREMENTS: [&str; 4] = ["^1", "*", "=1.1.0", ">=2"];

/// One generated registry command.
#[derive(Debug, Clone)]
enum GraphOp {
    Publish { engine: usize, version: usize, tier: usize, dependencies: BTreeMap<usize, usize> },
    Yank { engine: usize, version: usize },
}

fn graph_op() -> impl Strategy<Value = GraphOp> {
    let publish = (
        0..GRAPH_ENGINES.len(),
        0..GRAPH_VERSIONS.len(),
        0..GRAPH_TIERS.len(),
        proptest::collection::btree_map(0..GRAPH_ENGINES.len(), 0..GRAPH_REQUIREMENTS.len(), 0..3),
    )
        .prop_map(|(engine, version, tier, mut dependencies)| {
            dependencies.remove(&engine);
            GraphOp::Publish { engine, version, tier, dependencies }
        });
    let yank = (0..GRAPH_ENGINES.len(), 0..GRAPH_VERSIONS.len())
        .prop_map(|(engine, version)| GraphOp::Yank { engine, version });
    prop_oneof![4 => publish, 1 => yank]
}

fn graph_command(op: &GraphOp) -> Command {
    match op {
        GraphOp::Publish { engine, version, tier, dependencies } => {
            let mut document = manifest_value(GRAPH_ENGINES[*engine], GRAPH_VERSIONS[*version]);
            document["tier"] = GRAPH_TIERS[*tier].into();
            document["dependencies"] = dependencies
                .iter()
                .map(|(&d, &r)| serde_json::json!({"name": GRAPH_ENGINES[d], "requirement": GRAPH_REQUIREMENTS[r]}))
                .collect();
            publish(json_bytes(&document), 2)
        }
        GraphOp::Yank { engine, version } => Command::YankEngineVersion {
            engine: name(GRAPH_ENGINES[*engine]),
            version: GRAPH_VERSIONS[*version].parse().expect("vocabulary versions parse"),
        },
    }
}

/// The registry's invariants: every recorded resolved dependency is published
/// and of the same or a more trusted tier, and the graph over names is acyclic.
fn assert_graph_invariants(state: &KernelState, context: &str) {
    let registry = state.registry();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (engine, versions) in registry.engines_from(None) {
        for record in versions.values() {
            for (dependency, version) in &record.resolved_dependencies {
                let target = registry.get(dependency, Some(version));
                let target =
                    target.unwrap_or_else(|| panic!("{context}: {engine} depends on missing {dependency}@{version}"));
                assert!(
                    target.tier <= record.tier,
                    "{context}: {engine} ({:?}) depends on {dependency} ({:?})",
                    record.tier,
                    target.tier
                );
                edges.entry(engine.to_string()).or_default().insert(dependency.to_string());
            }
        }
    }
    // Kahn's algorithm: an acyclic graph removes every node.
    let mut in_degree: BTreeMap<&str, usize> = BTreeMap::new();
    for (from, targets) in &edges {
        in_degree.entry(from).or_default();
        for target in targets {
            *in_degree.entry(target).or_default() += 1;
        }
    }
    let mut ready: Vec<&str> = in_degree.iter().filter(|(_, d)| **d == 0).map(|(n, _)| *n).collect();
    let mut removed = 0;
    while let Some(node) = ready.pop() {
        removed += 1;
        for target in edges.get(node).into_iter().flatten() {
            let degree = in_degree.get_mut(target.as_str()).expect("every target has a degree");
            *degree -= 1;
            if *degree == 0 {
                ready.push(target);
            }
        }
    }
    assert_eq!(removed, in_degree.len(), "{context}: the dependency graph over names has a cycle: {edges:?}");
}

/// A new version resolved each dependency, against the registry just before
/// its publish, to the highest version that matched and was not yanked.
fn assert_resolved_against(before: &KernelState, published: &keel_kernel::registry::EngineVersion, context: &str) {
    let document: serde_json::Value = serde_json::from_slice(&published.manifest).expect("stored manifests are JSON");
    let dependencies = document["dependencies"].as_array().cloned().unwrap_or_default();
    assert_eq!(dependencies.len(), published.resolved_dependencies.len(), "{context}: one resolution per dependency");
    for (dependency, (resolved_name, resolved_version)) in dependencies.iter().zip(&published.resolved_dependencies) {
        let requirement = semver::VersionReq::parse(dependency["requirement"].as_str().expect("a requirement"))
            .expect("vocabulary requirements parse");
        let highest = before
            .registry()
            .versions_from(resolved_name, None)
            .into_iter()
            .flatten()
            .filter(|candidate| !candidate.is_yanked && requirement.matches(&candidate.version))
            .map(|candidate| candidate.version.clone())
            .max();
        assert_eq!(highest.as_ref(), Some(resolved_version), "{context}: {resolved_name} {requirement}");
    }
}

/// A yank flips one version's flag and changes nothing else: every recorded
/// resolution, of every version, stays as it was.
fn assert_only_the_yank_changed(before: &KernelState, after: &KernelState, engine: &str, version: &str, context: &str) {
    let flatten = |state: &KernelState| -> Vec<keel_kernel::registry::EngineVersion> {
        state
            .registry()
            .engines_from(None)
            .flat_map(|(_, versions)| {
                versions.values().map(|version| keel_kernel::registry::EngineVersion::clone(version))
            })
            .collect()
    };
    let (mut expected, actual) = (flatten(before), flatten(after));
    for record in &mut expected {
        if record.engine.as_str() == engine && record.version.to_string() == version {
            record.is_yanked = true;
        }
    }
    assert_eq!(actual, expected, "{context}: a yank changed more than its version's flag");
}

proptest! {
    #![proptest_config(config())]

    /// After any sequence of publishes and yanks, every published version's
    /// recorded resolved dependencies exist and satisfy the tier rule, the
    /// graph over engine names is acyclic, and a rejection or no-op changes nothing.
    #[test]
    fn engine_graphs_stay_resolved_tiered_and_acyclic(ops in proptest::collection::vec(graph_op(), 1..LOG_ENTRIES_MAX)) {
        let mut state = KernelState::default();
        let setup = [at(T0_MS, bootstrap(&[ROOT])), at(T0_MS, add_key(publisher_spec(2), &[ROOT]))];
        for (index, entry) in setup.iter().enumerate() {
            state.apply(index as u64 + 1, entry).expect("setup applies");
        }
        for (index, op) in ops.iter().enumerate() {
            let revision = setup.len() as u64 + index as u64 + 1;
            let before = state.clone();
            let result = state.apply(revision, &at(T0_MS, graph_command(op)));
            let context = format!("entry {revision} ({op:?})");
            if result.as_ref().map_or(true, |applied| applied.events.is_empty()) {
                assert_eq!(state, before, "{context}: {}", describe(&result));
            }
            match (&result, op) {
                (Ok(Applied { outcome: Outcome::EngineVersionPublished { version, created: true }, .. }), _) => {
                    assert_resolved_against(&before, version, &context);
                }
                (Ok(_), GraphOp::Yank { engine, version }) => {
                    assert_only_the_yank_changed(&before, &state, GRAPH_ENGINES[*engine], GRAPH_VERSIONS[*version], &context);
                }
                _ => {}
            }
            assert_graph_invariants(&state, &format!("after {context}"));
        }
    }
}

/// The graph generator reaches every dependency outcome.
#[test]
fn the_graph_generator_reaches_every_dependency_outcome() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for _ in 0..64 {
        let ops = proptest::collection::vec(graph_op(), 1..LOG_ENTRIES_MAX)
            .new_tree(&mut runner)
            .expect("the strategy never rejects")
            .current();
        let mut state = KernelState::default();
        state.apply(1, &at(T0_MS, bootstrap(&[ROOT]))).expect("bootstrap");
        state.apply(2, &at(T0_MS, add_key(publisher_spec(2), &[ROOT]))).expect("publisher");
        for (index, op) in ops.iter().enumerate() {
            let entry = at(T0_MS, graph_command(op));
            let kind = entry.to_string().split('@').next().unwrap_or_default().to_owned();
            let outcome = match state.apply(index as u64 + 3, &entry) {
                Err(rejection) => rejection.reason().to_owned(),
                Ok(applied) if applied.events.is_empty() => "NO_CHANGE".to_owned(),
                Ok(_) => "CHANGED".to_owned(),
            };
            seen.insert(format!("{kind} {outcome}"));
        }
    }
    let expected = [
        "publish_engine_version CHANGED",
        "publish_engine_version DEPENDENCY_UNRESOLVABLE",
        "publish_engine_version DEPENDENCY_TIER_VIOLATION",
        "publish_engine_version DEPENDENCY_CYCLE",
        "yank_engine_version CHANGED",
        "yank_engine_version NO_CHANGE",
        "yank_engine_version ENGINE_VERSION_NOT_FOUND",
    ];
    let missing: Vec<&str> = expected.into_iter().filter(|outcome| !seen.contains(*outcome)).collect();
    assert!(missing.is_empty(), "the graph generator no longer reaches {missing:?}; it reached {seen:#?}");
}

// ---------------------------------------------------------------- action schemas

/// Schema-like JSON: objects keyed mostly by JSON Schema keywords, with any
/// JSON (or nested schema-like objects) as values.
fn schema_like() -> impl Strategy<Value = serde_json::Value> {
    const KEYWORDS: [&str; 16] = [
        "type",
        "properties",
        "items",
        "$ref",
        "pattern",
        "minimum",
        "required",
        "enum",
        "const",
        "anyOf",
        "$defs",
        "additionalProperties",
        "$schema",
        "$id",
        "format",
        "not",
    ];
    let leaf = prop_oneof![
        4 => json_value(),
        1 => proptest::sample::select(vec!["object", "string", "integer", "#", "#/$defs/a", "^(a|b)*$", "(", "https://example.com/s"])
            .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        proptest::collection::btree_map(
            prop_oneof![4 => proptest::sample::select(KEYWORDS.to_vec()).prop_map(str::to_owned), 1 => "[a-z]{1,3}"],
            inner,
            0..4,
        )
        .prop_map(|entries| serde_json::Value::Object(entries.into_iter().collect()))
    })
}

proptest! {
    #![proptest_config(config())]

    /// Checking an action schema is total and deterministic: any JSON is
    /// accepted or refused with ACTION_SCHEMA_INVALID (never a panic), and
    /// checking it again gives the same answer, problem text included.
    #[test]
    fn action_schema_checks_are_total_and_deterministic(schema in schema_like()) {
        use keel_kernel::action_schema::{SchemaRole, check};
        let first = check("run", SchemaRole::Input, &schema);
        if let Err(rejection) = &first {
            prop_assert_eq!(rejection.reason(), "ACTION_SCHEMA_INVALID");
        }
        prop_assert_eq!(check("run", SchemaRole::Input, &schema), first);
    }
}
