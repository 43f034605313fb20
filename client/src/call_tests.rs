//! Tests of [`crate::KeelClient`]'s call loop against scripted fake nodes:
//! response metadata, error decoding, which failures are retried, leader
//! redirects (also of membership changes), endpoint failover, deadlines,
//! paging, and membership changes retried while another is in progress.

use crate::client::{ClientConfig, KeelClient};
use crate::error::ClientError;
use crate::fake_node::{
    Answer, FAKE_MEMBERSHIP_REVISION, FAKE_PAGE_SIZE, FakeNode, fake_member, keel_status, sample_key,
};
use crate::limits::RETRY_ATTEMPTS_MAX;
use crate::pb;
use crate::served::ResponseMeta;
use std::time::Duration;

const LINEARIZABLE: pb::ReadConsistency = pb::ReadConsistency::Linearizable;

/// A client without member discovery, so that these tests see exactly the
/// calls they make (discovery has tests of its own in `discovery_tests`).
fn client(endpoints: &[&str], call_timeout_ms: u64) -> KeelClient {
    let config = ClientConfig::new(endpoints.iter().copied())
        .with_call_timeout(Duration::from_millis(call_timeout_ms))
        .with_discover_members(false);
    KeelClient::new(config).expect("valid config")
}

/// An address where nothing listens (a port the OS just gave out and freed).
fn closed_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    address
}

#[tokio::test]
async fn a_response_carries_the_keel_headers_and_the_deadline_is_propagated() {
    let node = FakeNode::start(1, vec![Answer::Key(sample_key("k1"))], vec![]).await;
    let served = client(&[&node.address], 5_000).get_key("k1", LINEARIZABLE).await.expect("served");
    assert_eq!(served.value.key_id, "k1");
    assert_eq!(
        served.meta,
        ResponseMeta { node_id: Some(1), region: Some("local".into()), revision: Some(12), leader: Some("1".into()) }
    );
    let timeouts = node.grpc_timeouts();
    assert_eq!(timeouts.len(), 1);
    assert!(timeouts[0].is_some(), "grpc-timeout must be sent");
}

#[tokio::test]
async fn a_refusal_is_returned_at_once_with_its_details() {
    let refusal = keel_status(tonic::Code::PermissionDenied, "KEY_UNKNOWN", &[("key_id", "k9")], None);
    let node = FakeNode::start(1, vec![Answer::Fail(refusal)], vec![]).await;
    let error = client(&[&node.address], 5_000).get_key("k9", LINEARIZABLE).await.expect_err("refused");
    let ClientError::Server { code, reason, metadata, .. } = &error else { panic!("{error:?}") };
    assert_eq!((*code, reason.as_str()), (tonic::Code::PermissionDenied, "KEY_UNKNOWN"));
    assert_eq!(metadata.get("key_id").map(String::as_str), Some("k9"));
    assert_eq!(node.n_get_key_calls(), 1, "refusals are not retried");
}

#[tokio::test]
async fn no_leader_is_retried_honouring_retry_info() {
    let retry_delay = Duration::from_millis(150);
    let no_leader = || Answer::Fail(keel_status(tonic::Code::Unavailable, "NO_LEADER", &[], Some(retry_delay)));
    let node = FakeNode::start(1, vec![no_leader(), no_leader(), Answer::Key(sample_key("k1"))], vec![]).await;
    let started = tokio::time::Instant::now();
    let served = client(&[&node.address], 5_000).get_key("k1", LINEARIZABLE).await.expect("served after retries");
    assert_eq!(served.value.key_id, "k1");
    assert_eq!(node.n_get_key_calls(), 3);
    assert!(started.elapsed() >= retry_delay * 2, "waited {:?}", started.elapsed());
}

#[tokio::test]
async fn retries_stop_at_the_attempt_bound() {
    let script = (0..RETRY_ATTEMPTS_MAX + 2)
        .map(|_| Answer::Fail(keel_status(tonic::Code::Unavailable, "NO_LEADER", &[], None)))
        .collect();
    let node = FakeNode::start(1, script, vec![]).await;
    let error = client(&[&node.address], 30_000).get_key("k1", LINEARIZABLE).await.expect_err("gives up");
    assert_eq!(error.reason(), "NO_LEADER");
    assert_eq!(node.n_get_key_calls(), usize::try_from(RETRY_ATTEMPTS_MAX).expect("small"));
}

#[tokio::test]
async fn retries_stop_before_the_deadline_with_the_last_error() {
    let slow_retry = Some(Duration::from_secs(2));
    let node = FakeNode::start(
        1,
        vec![Answer::Fail(keel_status(tonic::Code::Unavailable, "NO_LEADER", &[], slow_retry))],
        vec![],
    )
    .await;
    let started = tokio::time::Instant::now();
    let error = client(&[&node.address], 500).get_key("k1", LINEARIZABLE).await.expect_err("no time to retry");
    assert_eq!(error.reason(), "NO_LEADER");
    assert!(started.elapsed() < Duration::from_millis(500), "must not sleep past the deadline");
}

#[tokio::test]
async fn a_silent_server_hits_the_deadline() {
    let node = FakeNode::start(1, vec![Answer::Delay(Duration::from_secs(30))], vec![]).await;
    let started = tokio::time::Instant::now();
    let error = client(&[&node.address], 300).get_key("k1", LINEARIZABLE).await.expect_err("deadline");
    assert!(matches!(error, ClientError::DeadlineExceeded { method: "GetKey", timeout_ms: 300 }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn not_leader_is_followed_to_the_leader() {
    let leader = FakeNode::start(2, vec![Answer::Key(sample_key("k1"))], vec![]).await;
    let leader_addr = leader.address.trim_start_matches("http://").to_owned();
    let follower = FakeNode::start(
        1,
        vec![Answer::Fail(keel_status(
            tonic::Code::Unavailable,
            "NOT_LEADER",
            &[("leader_id", "2"), ("leader_addr", &leader_addr)],
            None,
        ))],
        vec![],
    )
    .await;
    let client = client(&[&follower.address], 5_000);
    let served = client.get_key("k1", LINEARIZABLE).await.expect("served by the leader");
    assert_eq!(served.meta.node_id, Some(2));
    assert_eq!((follower.n_get_key_calls(), leader.n_get_key_calls()), (1, 1));
}

#[tokio::test]
async fn a_dead_first_endpoint_is_skipped() {
    let node = FakeNode::start(3, vec![Answer::Key(sample_key("k1"))], vec![]).await;
    let dead = closed_address();
    let served = client(&[&dead, &node.address], 5_000).get_key("k1", LINEARIZABLE).await.expect("failover");
    assert_eq!(served.meta.node_id, Some(3));
}

#[tokio::test]
async fn node_unavailable_moves_to_the_next_endpoint() {
    let stopping = FakeNode::start(
        1,
        vec![Answer::Fail(keel_status(tonic::Code::Unavailable, "NODE_UNAVAILABLE", &[], None))],
        vec![],
    )
    .await;
    let healthy = FakeNode::start(2, vec![Answer::Key(sample_key("k1"))], vec![]).await;
    let served = client(&[&stopping.address, &healthy.address], 5_000)
        .get_key("k1", LINEARIZABLE)
        .await
        .expect("served by the next node");
    assert_eq!(served.meta.node_id, Some(2));
}

#[tokio::test]
async fn nothing_reachable_is_an_unavailable_error() {
    let error = client(&[&closed_address()], 400).get_key("k1", LINEARIZABLE).await.expect_err("unreachable");
    assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
    assert_eq!(error.class(), crate::ErrorClass::Unavailable);
}

#[tokio::test]
async fn list_all_keys_fetches_every_page() {
    let keys: Vec<pb::Key> = (0..FAKE_PAGE_SIZE * 2 + 1).map(|i| sample_key(&format!("k{i}"))).collect();
    let node = FakeNode::start(1, vec![], keys.clone()).await;
    let served = client(&[&node.address], 5_000).list_all_keys(None, LINEARIZABLE).await.expect("all pages");
    assert_eq!(served.value, keys);
    assert_eq!(node.grpc_timeouts().len(), 3, "three pages");
}

#[tokio::test]
async fn add_key_signed_sends_a_verifiable_signature() {
    let node = FakeNode::start(1, vec![], vec![]).await;
    let root = crate::KeyPair::from_secret_bytes([1u8; 32]);
    let publisher = crate::KeyPair::from_secret_bytes([7u8; 32]);
    let spec = crate::KeySpec::new(publisher.public_key(), [pb::KeyPurpose::EnginePublisher], 1_767_225_600_000, None)
        .expect("valid spec");
    let served = client(&[&node.address], 5_000).add_key_signed(&spec, &[&root]).await.expect("added");
    assert!(served.value.created);
    let requests = node.add_key_requests();
    assert_eq!(requests.len(), 1);
    let signature = &requests[0].signatures[0];
    assert_eq!(signature.key_id, root.key_id());
    let payload = spec.signing_payload().expect("payload");
    assert!(crate::signing::verify(&root.public_key(), &payload, &signature.signature));
}

fn new_member() -> pb::Member {
    fake_member(5, "eu", "10.0.0.5:7400", "10.0.0.5:7401", false)
}

#[tokio::test]
async fn not_leader_on_add_learner_is_followed_and_the_leader_is_then_preferred() {
    let leader = FakeNode::start(2, vec![], vec![]).await;
    let leader_addr = leader.address.trim_start_matches("http://").to_owned();
    let follower = FakeNode::start(1, vec![], vec![]).await;
    follower.fail_membership([keel_status(
        tonic::Code::Unavailable,
        "NOT_LEADER",
        &[("leader_id", "2"), ("leader_addr", &leader_addr)],
        None,
    )]);
    let client = client(&[&follower.address], 5_000);
    let served = client.add_learner(new_member()).await.expect("added by the leader");
    assert_eq!(served.meta.node_id, Some(2));
    assert_eq!(served.value.revision, FAKE_MEMBERSHIP_REVISION);
    let added = served.value.members.iter().find(|member| member.node_id == 5).expect("the new member is listed");
    assert!(!added.is_voter, "a learner");
    assert_eq!((follower.n_membership_calls(), leader.n_membership_calls()), (1, 1));
    assert_eq!(client.known_endpoints(), [follower.address.clone(), leader.address.clone()]);
    assert_eq!(client.leader_id(), Some(2));

    let served = client.promote_member(5).await.expect("promoted");
    assert_eq!(served.meta.node_id, Some(2), "straight to the known leader");
    assert_eq!((follower.n_membership_calls(), leader.n_membership_calls()), (1, 2));
    assert!(served.value.members.iter().any(|member| member.node_id == 5 && member.is_voter));
}

#[tokio::test]
async fn membership_change_in_progress_is_retried_honouring_retry_info() {
    let retry_delay = Duration::from_millis(150);
    let in_progress = || keel_status(tonic::Code::Unavailable, "MEMBERSHIP_CHANGE_IN_PROGRESS", &[], Some(retry_delay));
    let leader = FakeNode::start(1, vec![], vec![]).await;
    leader.fail_membership([in_progress(), in_progress()]);
    let started = tokio::time::Instant::now();
    let served = client(&[&leader.address], 5_000).add_learner(new_member()).await.expect("added after retries");
    assert_eq!(served.value.revision, FAKE_MEMBERSHIP_REVISION);
    assert_eq!(leader.n_membership_calls(), 3);
    assert!(started.elapsed() >= retry_delay * 2, "waited {:?}", started.elapsed());
}

#[tokio::test]
async fn membership_refusals_are_returned_at_once() {
    let leader = FakeNode::start(1, vec![], vec![]).await;
    leader.fail_membership([
        keel_status(tonic::Code::FailedPrecondition, "LAST_VOTER", &[("node_id", "1")], None),
        keel_status(tonic::Code::AlreadyExists, "MEMBER_ALREADY_EXISTS", &[("node_id", "5")], None),
        keel_status(tonic::Code::NotFound, "MEMBER_NOT_FOUND", &[("node_id", "9")], None),
    ]);
    let client = client(&[&leader.address], 5_000);
    let error = client.remove_member(1).await.expect_err("last voter");
    assert_eq!((error.reason(), error.class()), ("LAST_VOTER", crate::ErrorClass::Server));
    assert_eq!(client.add_learner(new_member()).await.expect_err("exists").reason(), "MEMBER_ALREADY_EXISTS");
    assert_eq!(client.promote_member(9).await.expect_err("unknown").reason(), "MEMBER_NOT_FOUND");
    assert_eq!(leader.n_membership_calls(), 3, "one attempt each");
}
