//! [`KeelClient`]'s `keel.v1.ClusterService` calls.

use crate::client::KeelClient;
use crate::error::ClientError;
use crate::limits::GRPC_MESSAGE_BYTES_MAX;
use crate::served::Served;
use keel_proto::v1 as pb;
use keel_proto::v1::cluster_service_client::ClusterServiceClient;
use tonic::transport::Channel;

fn cluster_service(channel: Channel) -> ClusterServiceClient<Channel> {
    ClusterServiceClient::new(channel)
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
}

impl KeelClient {
    /// `ClusterService.GetStatus`: the serving node's view of the cluster.
    pub async fn cluster_status(&self) -> Result<Served<pb::ClusterStatus>, ClientError> {
        self.call("GetStatus", pb::GetStatusRequest {}, |channel, request| async move {
            cluster_service(channel).get_status(request).await
        })
        .await
    }
}
