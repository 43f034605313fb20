//! [`KeelClient`]'s `keel.v1.PolicyService` calls.
//!
//! `PutPolicy` is safe to retry: putting the latest version's exact source
//! again answers that version with `created = false`, even when the first
//! attempt applied and moved the version past `expected_version`.

use crate::client::{KeelClient, collect_pages};
use crate::error::ClientError;
use crate::limits::{GRPC_MESSAGE_BYTES_MAX, LIST_PAGE_SIZE};
use crate::routing::Route;
use crate::served::Served;
use keel_proto::v1 as pb;
use keel_proto::v1::policy_service_client::PolicyServiceClient;
use tonic::transport::Channel;

fn policy_service(channel: Channel) -> PolicyServiceClient<Channel> {
    PolicyServiceClient::new(channel)
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
}

impl KeelClient {
    /// `PolicyService.PutPolicy`: the next version of `policy`; with
    /// `expected_version`, only if the latest version is that one (0: new).
    pub async fn put_policy(
        &self,
        policy: &str,
        source: &str,
        expected_version: Option<u64>,
    ) -> Result<Served<pb::PutPolicyResponse>, ClientError> {
        let request = pb::PutPolicyRequest {
            policy: policy.to_owned(),
            source: source.to_owned(),
            expected_version,
            idempotency_key: self.randomness.idempotency_key(),
        };
        self.call("PutPolicy", Route::Leader, request, |channel, request| async move {
            policy_service(channel).put_policy(request).await
        })
        .await
    }

    /// `PolicyService.GetPolicy`: one version, or the latest when `version` is 0.
    pub async fn get_policy(
        &self,
        policy: &str,
        version: u64,
        consistency: pb::ReadConsistency,
    ) -> Result<Served<pb::Policy>, ClientError> {
        let request = pb::GetPolicyRequest { name: policy.to_owned(), version, consistency: consistency.into() };
        self.call("GetPolicy", Route::for_read(request.consistency), request, |channel, request| async move {
            policy_service(channel).get_policy(request).await
        })
        .await
    }

    /// `PolicyService.ListPolicies`: one page.
    pub async fn list_policies(
        &self,
        request: pb::ListPoliciesRequest,
    ) -> Result<Served<pb::ListPoliciesResponse>, ClientError> {
        self.call("ListPolicies", Route::for_read(request.consistency), request, |channel, request| async move {
            policy_service(channel).list_policies(request).await
        })
        .await
    }

    /// The latest version of every policy, fetching all pages.
    pub async fn list_all_policies(
        &self,
        consistency: pb::ReadConsistency,
    ) -> Result<Served<Vec<pb::Policy>>, ClientError> {
        let template = pb::ListPoliciesRequest {
            page_size: LIST_PAGE_SIZE,
            page_token: String::new(),
            consistency: consistency.into(),
        };
        collect_pages(
            "ListPolicies",
            |page_token| self.list_policies(pb::ListPoliciesRequest { page_token, ..template.clone() }),
            |page: pb::ListPoliciesResponse| (page.policies, page.next_page_token),
        )
        .await
    }

    /// `PolicyService.Evaluate`: a decision by `policy` (empty: `main`).
    pub async fn evaluate_policy(
        &self,
        policy: &str,
        context: pb::EvaluationContext,
        consistency: pb::ReadConsistency,
    ) -> Result<Served<pb::PolicyDecision>, ClientError> {
        let request =
            pb::EvaluateRequest { policy: policy.to_owned(), context: Some(context), consistency: consistency.into() };
        self.call("Evaluate", Route::for_read(request.consistency), request, |channel, request| async move {
            policy_service(channel).evaluate(request).await
        })
        .await
    }

    /// `PolicyService.Test`: runs a candidate source against cases without storing it.
    pub async fn test_policy(
        &self,
        source: &str,
        cases: Vec<pb::PolicyTestCase>,
        consistency: pb::ReadConsistency,
    ) -> Result<Served<pb::TestPolicyResponse>, ClientError> {
        let request = pb::TestPolicyRequest { source: source.to_owned(), cases, consistency: consistency.into() };
        self.call("Test", Route::for_read(request.consistency), request, |channel, request| async move {
            policy_service(channel).test(request).await
        })
        .await
    }
}
