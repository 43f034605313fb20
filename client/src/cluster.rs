//! [`KeelClient`]'s `keel.v1.ClusterService` calls: status and membership.
//!
//! Only the leader changes membership; other nodes answer `NOT_LEADER` with
//! the leader's address, which the call loop follows. A change refused with
//! `MEMBERSHIP_CHANGE_IN_PROGRESS` (another change is being committed) is
//! retried within the deadline, honouring the server's `RetryInfo`. Other
//! refusals (`MEMBER_ALREADY_EXISTS`, `ADDRESS_IN_USE`, `MEMBER_NOT_FOUND`,
//! `LAST_VOTER`) are returned as they are.
//!
//! Membership changes are not idempotent: when a transport failure hides
//! whether the first attempt applied, a retried `AddLearner` may answer
//! `MEMBER_ALREADY_EXISTS` and a retried `RemoveMember` `MEMBER_NOT_FOUND`
//! for the change the first attempt made. `PromoteMember` of a voter
//! succeeds again.

use crate::client::KeelClient;
use crate::error::ClientError;
use crate::limits::GRPC_MESSAGE_BYTES_MAX;
use crate::routing::Route;
use crate::served::Served;
use keel_proto::v1 as pb;
use keel_proto::v1::cluster_service_client::ClusterServiceClient;
use tonic::transport::Channel;

pub(crate) fn cluster_service(channel: Channel) -> ClusterServiceClient<Channel> {
    ClusterServiceClient::new(channel)
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
}

impl KeelClient {
    /// `ClusterService.GetStatus`: the serving node's view of the cluster
    /// (answered from its local state, so it goes to a nearby node).
    pub async fn cluster_status(&self) -> Result<Served<pb::ClusterStatus>, ClientError> {
        self.call("GetStatus", Route::Nearby, pb::GetStatusRequest {}, |channel, request| async move {
            cluster_service(channel).get_status(request).await
        })
        .await
    }

    /// `ClusterService.AddLearner`: adds `member` as a learner (its
    /// `is_voter` is ignored). The server answers once the learner has caught
    /// up, or at the deadline while it keeps catching up.
    pub async fn add_learner(&self, member: pb::Member) -> Result<Served<pb::MembershipResponse>, ClientError> {
        let request = pb::AddLearnerRequest { member: Some(member) };
        self.call("AddLearner", Route::Leader, request, |channel, request| async move {
            cluster_service(channel).add_learner(request).await
        })
        .await
    }

    /// `ClusterService.PromoteMember`: makes the learner `node_id` a voter.
    pub async fn promote_member(&self, node_id: u64) -> Result<Served<pb::MembershipResponse>, ClientError> {
        let request = pb::PromoteMemberRequest { node_id };
        self.call("PromoteMember", Route::Leader, request, |channel, request| async move {
            cluster_service(channel).promote_member(request).await
        })
        .await
    }

    /// `ClusterService.RemoveMember`: removes the member `node_id` (voter or
    /// learner). Removing the last voter is refused with `LAST_VOTER`.
    pub async fn remove_member(&self, node_id: u64) -> Result<Served<pb::MembershipResponse>, ClientError> {
        let request = pb::RemoveMemberRequest { node_id };
        self.call("RemoveMember", Route::Leader, request, |channel, request| async move {
            cluster_service(channel).remove_member(request).await
        })
        .await
    }

    /// `ClusterService.TransferLeadership`: hands leadership to the voter
    /// `node_id`; answered once it leads. A learner is refused with
    /// `MEMBER_NOT_VOTER`.
    pub async fn transfer_leadership(
        &self,
        node_id: u64,
    ) -> Result<Served<pb::TransferLeadershipResponse>, ClientError> {
        let request = pb::TransferLeadershipRequest { node_id };
        self.call("TransferLeadership", Route::Leader, request, |channel, request| async move {
            cluster_service(channel).transfer_leadership(request).await
        })
        .await
    }
}
