//! Membership changes against real keeld processes: refusals are clear and
//! leave the membership unchanged.

use crate::fixture::reason_of;
use crate::harness::KeelProcess;
use anyhow::{Result, bail, ensure};
use keel_chaos::process::AuthChannel as Channel;
use keel_proto::v1 as pb;
use tonic::Code;

async fn cluster_client(node: &KeelProcess) -> Result<pb::cluster_service_client::ClusterServiceClient<Channel>> {
    Ok(pb::cluster_service_client::ClusterServiceClient::new(node.channel().await?))
}

fn member(node_id: u64, client_addr: &str, peer_addr: &str) -> pb::Member {
    pb::Member {
        node_id,
        client_addr: client_addr.into(),
        peer_addr: peer_addr.into(),
        region: "ap-south".into(),
        zone: "ap-south-a".into(),
        is_voter: false,
    }
}

/// Asserts a refusal with `code`/`reason` and an unchanged membership.
async fn assert_refused<T: std::fmt::Debug>(
    node: &KeelProcess,
    before: &[pb::Member],
    what: &str,
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    reason: &str,
) -> Result<()> {
    let status = match result {
        Ok(response) => bail!("{what}: expected {reason}, got {:?}", response.into_inner()),
        Err(status) => status,
    };
    ensure!(status.code() == code && reason_of(&status) == reason, "{what}: {status:?}");
    let after = node.status().await?.members;
    ensure!(after == before, "{what}: membership changed from {before:?} to {after:?}");
    Ok(())
}

#[tokio::test]
async fn bad_membership_changes_are_refused_and_change_nothing() -> Result<()> {
    let node = KeelProcess::start().await?;
    let status = node.status().await?;
    let before = status.members.clone();
    let me = before.first().cloned().ok_or_else(|| anyhow::anyhow!("no members"))?;
    let mut client = cluster_client(&node).await?;

    let duplicate = client.add_learner(pb::AddLearnerRequest { member: Some(member(1, "127.0.0.1:1", "127.0.0.1:2")) });
    assert_refused(&node, &before, "duplicate node id", duplicate.await, Code::AlreadyExists, "MEMBER_ALREADY_EXISTS")
        .await?;
    let taken = client.add_learner(pb::AddLearnerRequest { member: Some(member(2, &me.client_addr, "127.0.0.1:2")) });
    assert_refused(&node, &before, "address in use", taken.await, Code::AlreadyExists, "ADDRESS_IN_USE").await?;
    let malformed = client.add_learner(pb::AddLearnerRequest { member: Some(member(2, "no-port", "127.0.0.1:2")) });
    assert_refused(&node, &before, "malformed address", malformed.await, Code::InvalidArgument, "FIELD_INVALID")
        .await?;
    let last = client.remove_member(pb::RemoveMemberRequest { node_id: 1 });
    assert_refused(&node, &before, "last voter", last.await, Code::FailedPrecondition, "LAST_VOTER").await?;
    let unknown = client.promote_member(pb::PromoteMemberRequest { node_id: 9 });
    assert_refused(&node, &before, "promote unknown", unknown.await, Code::NotFound, "MEMBER_NOT_FOUND").await?;
    let unknown = client.remove_member(pb::RemoveMemberRequest { node_id: 9 });
    assert_refused(&node, &before, "remove unknown", unknown.await, Code::NotFound, "MEMBER_NOT_FOUND").await?;

    // Promoting a voter is a no-op success.
    let response = client.promote_member(pb::PromoteMemberRequest { node_id: 1 }).await?.into_inner();
    ensure!(response.members == before);
    Ok(())
}
