//! [`KeelClient`]'s `keel.v1.AuditService` calls: the serving member's
//! audit log, read and verified (`Nearby`: name the member with the endpoint).

use crate::client::KeelClient;
use crate::error::ClientError;
use crate::limits::GRPC_MESSAGE_BYTES_MAX;
use crate::routing::Route;
use crate::served::Served;
use keel_proto::v1 as pb;
use keel_proto::v1::audit_service_client::AuditServiceClient;
use tonic::transport::Channel;

fn audit_service(channel: Channel) -> AuditServiceClient<Channel> {
    AuditServiceClient::new(channel)
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
}

impl KeelClient {
    /// `AuditService.QueryAudit`: one page of the member's records.
    pub async fn query_audit(
        &self,
        request: pb::QueryAuditRequest,
    ) -> Result<Served<pb::QueryAuditResponse>, ClientError> {
        self.call("QueryAudit", Route::Nearby, request, |channel, request| async move {
            audit_service(channel).query_audit(request).await
        })
        .await
    }

    /// `AuditService.ExportAudit`: every matching record, streamed.
    pub async fn export_audit(
        &self,
        request: pb::ExportAuditRequest,
    ) -> Result<Served<tonic::Streaming<pb::ExportAuditChunk>>, ClientError> {
        self.call("ExportAudit", Route::Nearby, request, |channel, request| async move {
            audit_service(channel).export_audit(request).await
        })
        .await
    }

    /// `AuditService.VerifyAudit`: the member's chain and checkpoints checked.
    pub async fn verify_audit(&self) -> Result<Served<pb::VerifyAuditResponse>, ClientError> {
        self.call("VerifyAudit", Route::Nearby, pb::VerifyAuditRequest {}, |channel, request| async move {
            audit_service(channel).verify_audit(request).await
        })
        .await
    }
}
