//! Tests of member discovery and routing against fake nodes: discovered
//! members join the endpoint list, serializable reads go to the preferred
//! region, linearizable reads and writes to the known leader, an unreachable
//! preferred member is skipped, and a failover discovers again.

use crate::client::{ClientConfig, KeelClient};
use crate::fake_node::{Answer, FakeNode, fake_member, keel_status, sample_key};
use crate::pb;
use std::time::Duration;

const SERIALIZABLE: pb::ReadConsistency = pb::ReadConsistency::Serializable;
const LINEARIZABLE: pb::ReadConsistency = pb::ReadConsistency::Linearizable;

fn config(endpoints: &[&str], preferred_region: Option<&str>) -> ClientConfig {
    ClientConfig::new(endpoints.iter().copied())
        .with_call_timeout(Duration::from_secs(5))
        .with_preferred_region(preferred_region.map(str::to_owned))
}

/// An address where nothing listens (a port the OS just gave out and freed).
fn closed_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    drop(listener);
    address
}

/// Three nodes that all report the same members, node 1 leading.
async fn three_nodes(regions: [&str; 3], scripts: [Vec<Answer>; 3]) -> Vec<FakeNode> {
    let mut nodes = Vec::new();
    for ((node_id, region), script) in (1..).zip(regions).zip(scripts) {
        nodes.push(FakeNode::start_in_region(node_id, region, script, vec![]).await);
    }
    let members: Vec<pb::Member> = nodes.iter().map(|node| node.member(true)).collect();
    for node in &nodes {
        node.set_cluster(members.clone(), 1);
    }
    nodes
}

#[tokio::test]
async fn connecting_discovers_every_member_once_after_the_configured_endpoints() {
    let nodes = three_nodes(["eu", "us", "ap"], [vec![], vec![], vec![]]).await;
    let client = KeelClient::connect(config(&[&nodes[0].address], None)).await.expect("connects");
    let addresses: Vec<&str> = nodes.iter().map(|node| node.address.as_str()).collect();
    assert_eq!(client.known_endpoints(), addresses, "the seed first, then the others");
    assert_eq!(client.endpoints(), [nodes[0].address.clone()], "the configuration is unchanged");
    assert_eq!(client.leader_id(), Some(1));
    client.cluster_status().await.expect("status");
    assert_eq!(nodes[0].n_get_status_calls(), 2, "one discovery, then the status asked for");
    assert_eq!(nodes[1].n_get_status_calls() + nodes[2].n_get_status_calls(), 0);
}

#[tokio::test]
async fn discovery_can_be_turned_off() {
    let nodes = three_nodes(["eu", "us", "ap"], [vec![], vec![], vec![]]).await;
    let client =
        KeelClient::connect(config(&[&nodes[0].address], None).with_discover_members(false)).await.expect("connects");
    assert_eq!(client.known_endpoints(), [nodes[0].address.clone()]);
    assert_eq!(nodes[0].n_get_status_calls(), 0);
}

#[tokio::test]
async fn a_serializable_read_goes_to_the_preferred_region_and_a_linearizable_one_to_the_leader() {
    let key = || vec![Answer::Key(sample_key("k1"))];
    let nodes = three_nodes(["eu", "us", "ap"], [key(), key(), key()]).await;
    let client = KeelClient::new(config(&[&nodes[0].address], Some("us"))).expect("valid");
    let served = client.get_key("k1", SERIALIZABLE).await.expect("served");
    assert_eq!((served.meta.node_id, served.meta.region.as_deref()), (Some(2), Some("us")));
    let served = client.get_key("k1", LINEARIZABLE).await.expect("served");
    assert_eq!(served.meta.node_id, Some(1), "node 1 leads");
    assert_eq!(nodes.iter().map(FakeNode::n_get_key_calls).collect::<Vec<_>>(), [1, 1, 0]);
}

#[tokio::test]
async fn writes_prefer_the_leader_that_discovery_found() {
    let nodes = three_nodes(["eu", "us", "ap"], [vec![], vec![], vec![]]).await;
    for node in &nodes {
        node.set_cluster(nodes.iter().map(|node| node.member(true)).collect(), 3);
    }
    let client = KeelClient::new(config(&[&nodes[0].address], None)).expect("valid");
    let served = client.remove_member(2).await.expect("removed");
    assert_eq!(served.meta.node_id, Some(3), "sent to the leader without a NOT_LEADER round trip");
    assert_eq!(nodes.iter().map(FakeNode::n_membership_calls).collect::<Vec<_>>(), [0, 0, 1]);
}

#[tokio::test]
async fn an_unreachable_member_of_the_preferred_region_is_skipped() {
    let seed = FakeNode::start_in_region(1, "eu", vec![Answer::Key(sample_key("k1"))], vec![]).await;
    seed.set_cluster(vec![seed.member(true), fake_member(2, "us", &closed_address(), "127.0.0.1:1", true)], 1);
    let client = KeelClient::new(config(&[&seed.address], Some("us"))).expect("valid");
    let served = client.get_key("k1", SERIALIZABLE).await.expect("served by the seed");
    assert_eq!(served.meta.node_id, Some(1));
}

#[tokio::test]
async fn members_with_unusable_addresses_are_left_out() {
    let seed = FakeNode::start_in_region(1, "eu", vec![], vec![]).await;
    seed.set_cluster(
        vec![
            seed.member(true),
            fake_member(2, "us", "", "127.0.0.1:1", true),
            fake_member(3, "us", "bad host:1", "127.0.0.1:1", true),
        ],
        1,
    );
    let client = KeelClient::connect(config(&[&seed.address], None)).await.expect("connects");
    assert_eq!(client.known_endpoints(), std::slice::from_ref(&seed.address));
}

#[tokio::test]
async fn a_failover_discovers_again_through_the_next_node() {
    let stopping = vec![Answer::Fail(keel_status(tonic::Code::Unavailable, "NODE_UNAVAILABLE", &[], None))];
    let nodes = three_nodes(["eu", "eu", "eu"], [stopping, vec![Answer::Key(sample_key("k1"))], vec![]]).await;
    let client = KeelClient::new(config(&[&nodes[0].address], None)).expect("valid");
    let served = client.get_key("k1", LINEARIZABLE).await.expect("served after the failover");
    assert_eq!(served.meta.node_id, Some(2));
    assert_eq!(nodes[0].n_get_status_calls(), 1, "discovery after connecting");
    assert_eq!(nodes[1].n_get_status_calls(), 1, "and again after the failover");
}
