//! [`KeelClient`]'s `keel.v1.TrustService` calls: add, get, list and revoke
//! keys; read and rotate the root metadata.
//!
//! `AddKey` is idempotent on the server (adding an identical key again
//! answers with the existing key), so it is safe to retry.

use crate::client::{KeelClient, collect_pages};
use crate::error::ClientError;
use crate::key_pair::KeyPair;
use crate::key_spec::KeySpec;
use crate::limits::{GRPC_MESSAGE_BYTES_MAX, LIST_PAGE_SIZE};
use crate::root_metadata;
use crate::routing::Route;
use crate::served::Served;
use crate::signing;
use keel_proto::v1 as pb;
use keel_proto::v1::trust_service_client::TrustServiceClient;
use tonic::transport::Channel;

fn trust_service(channel: Channel) -> TrustServiceClient<Channel> {
    TrustServiceClient::new(channel)
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
}

impl KeelClient {
    /// `TrustService.AddKey`.
    pub async fn add_key(&self, mut request: pb::AddKeyRequest) -> Result<Served<pb::AddKeyResponse>, ClientError> {
        request.idempotency_key = self.randomness.key_or_new(std::mem::take(&mut request.idempotency_key));
        self.call("AddKey", Route::Leader, request, |channel, request| async move {
            trust_service(channel).add_key(request).await
        })
        .await
    }

    /// Signs `spec` with every key in `signers` and adds it.
    pub async fn add_key_signed(
        &self,
        spec: &KeySpec,
        signers: &[&KeyPair],
    ) -> Result<Served<pb::AddKeyResponse>, ClientError> {
        self.add_key(spec.add_key_request(signers)?).await
    }

    /// `TrustService.GetKey` by bare key id (or `keys/{key_id}`).
    pub async fn get_key(
        &self,
        key_id: &str,
        consistency: pb::ReadConsistency,
    ) -> Result<Served<pb::Key>, ClientError> {
        let request = pb::GetKeyRequest { name: key_id.to_owned(), consistency: consistency.into() };
        self.call("GetKey", Route::for_read(request.consistency), request, |channel, request| async move {
            trust_service(channel).get_key(request).await
        })
        .await
    }

    /// `TrustService.ListKeys`: one page.
    pub async fn list_keys(&self, request: pb::ListKeysRequest) -> Result<Served<pb::ListKeysResponse>, ClientError> {
        self.call("ListKeys", Route::for_read(request.consistency), request, |channel, request| async move {
            trust_service(channel).list_keys(request).await
        })
        .await
    }

    /// Every key (with `purpose`, when given), fetching all pages.
    pub async fn list_all_keys(
        &self,
        purpose: Option<pb::KeyPurpose>,
        consistency: pb::ReadConsistency,
    ) -> Result<Served<Vec<pb::Key>>, ClientError> {
        let template = pb::ListKeysRequest {
            page_size: LIST_PAGE_SIZE,
            page_token: String::new(),
            consistency: consistency.into(),
            purpose: purpose.map_or(0, i32::from),
        };
        collect_pages(
            "ListKeys",
            |page_token| self.list_keys(pb::ListKeysRequest { page_token, ..template.clone() }),
            |page: pb::ListKeysResponse| (page.keys, page.next_page_token),
        )
        .await
    }

    /// `TrustService.GetRoot`.
    pub async fn get_root(&self, consistency: pb::ReadConsistency) -> Result<Served<pb::RootMetadata>, ClientError> {
        let request = pb::GetRootRequest { consistency: consistency.into() };
        self.call("GetRoot", Route::for_read(request.consistency), request, |channel, request| async move {
            trust_service(channel).get_root(request).await
        })
        .await
    }

    /// `TrustService.RevokeKey`.
    pub async fn revoke_key(&self, mut request: pb::RevokeKeyRequest) -> Result<Served<pb::Key>, ClientError> {
        request.idempotency_key = self.randomness.key_or_new(std::mem::take(&mut request.idempotency_key));
        self.call("RevokeKey", Route::Leader, request, |channel, request| async move {
            trust_service(channel).revoke_key(request).await
        })
        .await
    }

    /// Signs the revocation of `key_id` with every key in `signers` (root
    /// keys) and sends it.
    pub async fn revoke_key_signed(&self, key_id: &str, signers: &[&KeyPair]) -> Result<Served<pb::Key>, ClientError> {
        let payload = signing::revoke_payload(key_id)?;
        let signatures = signers.iter().map(|signer| signer.sign_to_proto(&payload)).collect();
        self.revoke_key(pb::RevokeKeyRequest { key_id: key_id.to_owned(), signatures, idempotency_key: String::new() })
            .await
    }

    /// `TrustService.RevokeToken`: puts `jti` on the deny-list until
    /// `exp_ms` (0: the longest any token may still live).
    pub async fn revoke_token(&self, jti: &str, exp_ms: u64) -> Result<Served<pb::RevokeTokenResponse>, ClientError> {
        let request = pb::RevokeTokenRequest {
            jti: jti.to_owned(),
            exp_ms,
            idempotency_key: self.randomness.key_or_new(String::new()),
        };
        self.call("RevokeToken", Route::Leader, request, |channel, request| async move {
            trust_service(channel).revoke_token(request).await
        })
        .await
    }

    /// `TrustService.RotateRoot`.
    pub async fn rotate_root(
        &self,
        mut request: pb::RotateRootRequest,
    ) -> Result<Served<pb::RootMetadata>, ClientError> {
        request.idempotency_key = self.randomness.key_or_new(std::mem::take(&mut request.idempotency_key));
        self.call("RotateRoot", Route::Leader, request, |channel, request| async move {
            trust_service(channel).rotate_root(request).await
        })
        .await
    }

    /// Signs the root metadata `document` with every key in `signers`
    /// (current and new root keys) and sends it.
    pub async fn rotate_root_signed(
        &self,
        document: &serde_json::Value,
        signers: &[&KeyPair],
    ) -> Result<Served<pb::RootMetadata>, ClientError> {
        self.rotate_root(root_metadata::rotate_root_request(document, signers)?).await
    }
}
