//! Writes the seed corpus for every target under `corpus/<target>/`, from
//! the same material the tests use: the shipped policies, a valid manifest,
//! a root document, real peer messages, snapshots and log entries.

use keel_kernel::command::{Command, Proposal};
use keel_kernel::tenant::{TenantSpec, TenantStatus, TenantTier};
use keel_kernel::{KernelState, Name};
use keel_node::raft::peer_message::{self, Envelope};
use keel_node::raft::{NodeId, TypeConfig};
use keel_node::replica::Write;
use keel_proto::raft::v1 as raft_pb;
use keel_proto::v1 as pb;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{Entry, EntryPayload, LeaderId, LogId, Vote};
use prost::Message;
use std::collections::BTreeSet;
use std::path::Path;

fn write(target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn tagged(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(bytes);
    out
}

fn envelope(tag: u8, (version, body): (u32, Vec<u8>)) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn name(text: &str) -> Name {
    Name::parse("name", text).expect("seed names are valid")
}

fn proposal(command: Command) -> Proposal {
    Proposal {
        leader_time_ms: 1_700_000_000_000,
        semantics_version: keel_kernel::judge::SEMANTICS_VERSION,
        command,
        idempotency_key: None,
        actor: None,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for (index, source) in keel_fuzz::POLICIES.iter().enumerate() {
        write("policy_put", &format!("policy-{index}"), source.as_bytes())?;
        let input = br#"{"tenant":"acme","engine":"billing","action":"run","risk_band":"low","region":"eu-west","facts":{"tenant":{"tier":"enterprise","home_region":"eu-west","status":"active","enabled_engines":["billing"]},"engine":null}}"#;
        write("policy_evaluate", &format!("input-{index}"), &tagged(index as u8, input))?;
    }
    write(
        "policy_put",
        "sprintf",
        b"package keel.policy\n\ndecision := {\"allow\": false, \"reason\": sprintf(\"%5d\", [1])}\n",
    )?;

    let manifest = br#"{"name":"billing","version":"1.0.0","tier":"standard","description":"Bills.","dependencies":[{"name":"ledger","requirement":"^1"}],"actions":[{"name":"charge","description":"Charges.","input_schema":{"type":"object","properties":{"amount":{"type":"integer","minimum":0}},"required":["amount"]},"output_schema":true}],"data_classes":["pii"],"capabilities":["net.none"],"ui":[{"name":"panel","kind":"panel","entry":"ui/index.html","description":"Panel."}]}"#;
    write("manifest", "billing", manifest)?;

    let root = br#"{"version":2,"roles":{"root":{"key_ids":["00112233445566778899aabbccddeeff"],"threshold":1},"engine-publisher":{"key_ids":[],"threshold":1},"api-token":{"key_ids":[],"threshold":1}},"root_keys":[{"public_key":"0000000000000000000000000000000000000000000000000000000000000000","not_before_ms":0}]}"#;
    write("trust_documents", "rotation", root)?;

    let spec = TenantSpec {
        tenant_id: name("acme"),
        display_name: "Acme".into(),
        tier: TenantTier::Enterprise,
        home_region: name("eu-west"),
        status: TenantStatus::Active,
        enabled_engines: BTreeSet::from([name("billing")]),
    };
    let create = Command::CreateTenant { spec };
    let log_id = LogId::new(LeaderId::new(3, 1), 9);
    let entry = Entry::<TypeConfig> { log_id, payload: EntryPayload::Normal(proposal(create.clone())) };
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(LogId::new(LeaderId::new(3, 1), 8)),
        leader_commit: Some(log_id),
        entries: vec![entry.clone()],
    };
    let message: raft_pb::AppendEntriesRequest = peer_message::pack(&append)?;
    write("peer_messages", "append", &envelope(0, message.open()))?;
    let vote = VoteRequest::<NodeId> { vote: Vote::new(4, 2), last_log_id: Some(log_id) };
    let message: raft_pb::VoteRequest = peer_message::pack(&vote)?;
    write("peer_messages", "vote", &envelope(1, message.open()))?;
    let forward = Write { command: create.clone(), idempotency_key: Some("k-1".into()), actor: None };
    let message: raft_pb::ForwardRequest = peer_message::pack(&forward)?;
    write("peer_messages", "forward", &envelope(2, message.open()))?;

    let mut state = KernelState::default();
    let _ = state.apply(1, &proposal(create));
    write("snapshot_decode", "state", &state.encode_snapshot())?;
    write("snapshot_decode", "empty", &KernelState::default().encode_snapshot())?;
    write("snapshot_decode", "entry", &keel_node::raft::log_store::encode_entry(&entry)?)?;

    let tenant = pb::CreateTenantRequest {
        tenant: Some(pb::Tenant {
            tenant_id: "acme".into(),
            display_name: "Acme".into(),
            tier: pb::TenantTier::Enterprise as i32,
            home_region: "eu-west".into(),
            status: pb::TenantStatus::Active as i32,
            enabled_engines: vec!["billing".into()],
            ..Default::default()
        }),
        idempotency_key: String::new(),
    };
    write("request_convert", "tenant", &tagged(1, &tenant.encode_to_vec()))?;
    let publish = pb::PublishEngineVersionRequest { manifest: manifest.to_vec(), ..Default::default() };
    write("request_convert", "publish", &tagged(0, &publish.encode_to_vec()))?;
    let event = pb::PublishEventRequest { topic: "deploys".into(), payload: b"{}".to_vec(), ..Default::default() };
    write("request_convert", "event", &tagged(4, &event.encode_to_vec()))?;
    let watch = pb::WatchRequest { from_revision: 3, kinds: vec!["TENANT_CREATED".into()], ..Default::default() };
    write("request_convert", "watch", &tagged(5, &watch.encode_to_vec()))?;

    // The judging worker's frames: a decision and an input check, framed.
    let frame = |judgement: &keel_kernel::judge::Judgement| -> Result<Vec<u8>, serde_json::Error> {
        let body = serde_json::to_vec(judgement)?;
        let mut framed = (body.len() as u32).to_le_bytes().to_vec();
        framed.extend(body);
        Ok(framed)
    };
    let decide = keel_kernel::judge::Judgement::PolicyDecide {
        source: keel_fuzz::POLICIES[3].to_owned(),
        inputs: vec![serde_json::json!({"tenant": "acme", "risk_band": "low"})],
        with_probes: false,
    };
    let check = keel_kernel::judge::Judgement::ActionInput {
        action: "charge".into(),
        schema: serde_json::json!({"type": "object", "required": ["amount"]}),
        input: serde_json::json!({"amount": 3}),
    };
    let mut frames = frame(&decide)?;
    frames.extend(frame(&check)?);
    frames.extend(frame(&decide)?);
    write("judge_frames", "decide-check-decide", &frames)?;

    // Redis replies: admitted (two scopes), limited, replayed, a breaker's.
    write("redis_replies", "admitted", &tagged(1, b"*3\r\n:1\r\n:9\r\n:2\r\n"))?;
    write("redis_replies", "limited", &tagged(1, b"*3\r\n:0\r\n:2\r\n:250000\r\n"))?;
    let first = pb::AdmitResponse { allowed: true, reason: "OK".into(), ..Default::default() };
    let mut replayed = format!("*2\r\n:2\r\n${}\r\n", first.encoded_len()).into_bytes();
    replayed.extend(first.encode_to_vec());
    replayed.extend(b"\r\n");
    write("redis_replies", "replayed", &tagged(0, &replayed))?;
    write("redis_replies", "breaker", &tagged(0, b"*4\r\n:0\r\n:2\r\n:0\r\n:2\r\n"))?;

    // Envoy's descriptors and an admission.
    let entry = |key: &str, value: &str| keel_proto::envoy::ratelimit::v3::rate_limit_descriptor::Entry {
        key: key.into(),
        value: value.into(),
    };
    let envoy = keel_proto::envoy::ratelimit::v3::RateLimitRequest {
        domain: "keel".into(),
        descriptors: vec![keel_proto::envoy::ratelimit::v3::RateLimitDescriptor {
            entries: vec![entry("tenant", "acme"), entry("engine", "billing"), entry("action", "charge")],
            ..Default::default()
        }],
        hits_addend: 1,
    };
    write("envoy_descriptors", "envoy", &tagged(0, &envoy.encode_to_vec()))?;
    let admit = pb::AdmitRequest {
        tenant: "acme".into(),
        engine: "billing".into(),
        action: "charge".into(),
        input_json: r#"{"amount": 3}"#.into(),
        cost: 2,
        idempotency_key: "k-1".into(),
        ..Default::default()
    };
    write("envoy_descriptors", "admit", &tagged(1, &admit.encode_to_vec()))?;

    // An audit log: a checkpoint, two admissions, a checkpoint.
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let mut chain = keel_audit::Chain::new(1);
    let mut log = chain.checkpoint(&key, 1_700_000_000_000, "eu-west")?;
    log.push(b'\n');
    for tenant in ["acme", "beta"] {
        let record = keel_audit::Record {
            tenant: tenant.into(),
            engine: "billing".into(),
            action: "charge".into(),
            decision: "allowed".into(),
            reason: "OK".into(),
            ..keel_audit::Record::default()
        };
        log.extend(chain.seal(record)?);
        log.push(b'\n');
    }
    log.extend(chain.checkpoint(&key, 1_700_000_000_001, "eu-west")?);
    write("audit_lines", "log", &log)?;
    println!("seed corpus written under corpus/");
    Ok(())
}
