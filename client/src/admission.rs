//! [`KeelClient`]'s `keel.v1.AdmissionService` calls. An admission reads
//! the serving member's applied state, so any member answers (`Nearby`).

use crate::client::KeelClient;
use crate::error::ClientError;
use crate::limits::GRPC_MESSAGE_BYTES_MAX;
use crate::routing::Route;
use crate::served::Served;
use keel_proto::v1 as pb;
use keel_proto::v1::admission_service_client::AdmissionServiceClient;
use tonic::transport::Channel;

fn admission_service(channel: Channel) -> AdmissionServiceClient<Channel> {
    AdmissionServiceClient::new(channel)
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
}

impl KeelClient {
    /// `AdmissionService.Admit`: a decision (a denial is `allowed = false`
    /// with a reason, not an error).
    pub async fn admit(&self, request: pb::AdmitRequest) -> Result<Served<pb::AdmitResponse>, ClientError> {
        self.call("Admit", Route::Nearby, request, |channel, request| async move {
            admission_service(channel).admit(request).await
        })
        .await
    }

    /// `AdmissionService.AdmitBatch`: many admissions, each judged alone.
    pub async fn admit_batch(
        &self,
        request: pb::AdmitBatchRequest,
    ) -> Result<Served<pb::AdmitBatchResponse>, ClientError> {
        self.call("AdmitBatch", Route::Nearby, request, |channel, request| async move {
            admission_service(channel).admit_batch(request).await
        })
        .await
    }

    /// `AdmissionService.ReportOutcome`: how an admitted call ended, for the
    /// circuit breakers.
    pub async fn report_outcome(
        &self,
        request: pb::ReportOutcomeRequest,
    ) -> Result<Served<pb::ReportOutcomeResponse>, ClientError> {
        self.call("ReportOutcome", Route::Nearby, request, |channel, request| async move {
            admission_service(channel).report_outcome(request).await
        })
        .await
    }
}
