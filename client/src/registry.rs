//! [`KeelClient`]'s `keel.v1.RegistryService` calls: publish and read
//! engine versions.
//!
//! Publishing the same canonical manifest again is idempotent on the server
//! (`created = false`), so it is safe to retry.

use crate::client::{KeelClient, collect_pages};
use crate::error::ClientError;
use crate::limits::{GRPC_MESSAGE_BYTES_MAX, LIST_PAGE_SIZE};
use crate::routing::Route;
use crate::served::Served;
use crate::signed_manifest::SignedManifest;
use keel_proto::v1 as pb;
use keel_proto::v1::registry_service_client::RegistryServiceClient;
use tonic::transport::Channel;

fn registry_service(channel: Channel) -> RegistryServiceClient<Channel> {
    RegistryServiceClient::new(channel)
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
}

impl KeelClient {
    /// `RegistryService.PublishEngineVersion`.
    pub async fn publish_engine_version(
        &self,
        mut request: pb::PublishEngineVersionRequest,
    ) -> Result<Served<pb::PublishEngineVersionResponse>, ClientError> {
        request.idempotency_key = self.randomness.key_or_new(std::mem::take(&mut request.idempotency_key));
        self.call("PublishEngineVersion", Route::Leader, request, |channel, request| async move {
            registry_service(channel).publish_engine_version(request).await
        })
        .await
    }

    /// Publishes a signed bundle (its canonical bytes and signatures).
    pub async fn publish_signed_manifest(
        &self,
        bundle: &SignedManifest,
    ) -> Result<Served<pb::PublishEngineVersionResponse>, ClientError> {
        self.publish_engine_version(bundle.to_publish_request()).await
    }

    /// `RegistryService.GetEngineVersion`; `version: None` means the highest
    /// published version.
    pub async fn get_engine_version(
        &self,
        engine: &str,
        version: Option<&str>,
        consistency: pb::ReadConsistency,
    ) -> Result<Served<pb::EngineVersion>, ClientError> {
        let request = pb::GetEngineVersionRequest {
            engine: engine.to_owned(),
            version: version.unwrap_or_default().to_owned(),
            consistency: consistency.into(),
        };
        self.call("GetEngineVersion", Route::for_read(request.consistency), request, |channel, request| async move {
            registry_service(channel).get_engine_version(request).await
        })
        .await
    }

    /// `RegistryService.ListEngines`: one page.
    pub async fn list_engines(
        &self,
        request: pb::ListEnginesRequest,
    ) -> Result<Served<pb::ListEnginesResponse>, ClientError> {
        self.call("ListEngines", Route::for_read(request.consistency), request, |channel, request| async move {
            registry_service(channel).list_engines(request).await
        })
        .await
    }

    /// Every engine, fetching all pages.
    pub async fn list_all_engines(
        &self,
        consistency: pb::ReadConsistency,
    ) -> Result<Served<Vec<pb::Engine>>, ClientError> {
        let template = pb::ListEnginesRequest {
            page_size: LIST_PAGE_SIZE,
            page_token: String::new(),
            consistency: consistency.into(),
        };
        collect_pages(
            "ListEngines",
            |page_token| self.list_engines(pb::ListEnginesRequest { page_token, ..template.clone() }),
            |page: pb::ListEnginesResponse| (page.engines, page.next_page_token),
        )
        .await
    }

    /// `RegistryService.ListEngineVersions`: one page.
    pub async fn list_engine_versions(
        &self,
        request: pb::ListEngineVersionsRequest,
    ) -> Result<Served<pb::ListEngineVersionsResponse>, ClientError> {
        self.call("ListEngineVersions", Route::for_read(request.consistency), request, |channel, request| async move {
            registry_service(channel).list_engine_versions(request).await
        })
        .await
    }

    /// Every version of `engine` in ascending semver order, fetching all pages.
    pub async fn list_all_engine_versions(
        &self,
        engine: &str,
        consistency: pb::ReadConsistency,
    ) -> Result<Served<Vec<pb::EngineVersion>>, ClientError> {
        let template = pb::ListEngineVersionsRequest {
            engine: engine.to_owned(),
            page_size: LIST_PAGE_SIZE,
            page_token: String::new(),
            consistency: consistency.into(),
        };
        collect_pages(
            "ListEngineVersions",
            |page_token| self.list_engine_versions(pb::ListEngineVersionsRequest { page_token, ..template.clone() }),
            |page: pb::ListEngineVersionsResponse| (page.versions, page.next_page_token),
        )
        .await
    }

    /// `RegistryService.YankEngineVersion` (sent with a fresh idempotency key).
    pub async fn yank_engine_version(
        &self,
        engine: &str,
        version: &str,
    ) -> Result<Served<pb::EngineVersion>, ClientError> {
        let request = pb::YankEngineVersionRequest {
            engine: engine.to_owned(),
            version: version.to_owned(),
            idempotency_key: self.randomness.idempotency_key(),
        };
        self.call("YankEngineVersion", Route::Leader, request, |channel, request| async move {
            registry_service(channel).yank_engine_version(request).await
        })
        .await
    }

    /// `RegistryService.ListDependants`: engines depending on `engine`, transitively.
    pub async fn list_dependants(
        &self,
        engine: &str,
        consistency: pb::ReadConsistency,
    ) -> Result<Served<pb::ListDependantsResponse>, ClientError> {
        let request = pb::ListDependantsRequest { engine: engine.to_owned(), consistency: consistency.into() };
        self.call("ListDependants", Route::for_read(request.consistency), request, |channel, request| async move {
            registry_service(channel).list_dependants(request).await
        })
        .await
    }

    /// `RegistryService.GetResolvedGraph`; `version: None` means the highest
    /// published version.
    pub async fn get_resolved_graph(
        &self,
        engine: &str,
        version: Option<&str>,
        consistency: pb::ReadConsistency,
    ) -> Result<Served<pb::ResolvedGraph>, ClientError> {
        let request = pb::GetResolvedGraphRequest {
            engine: engine.to_owned(),
            version: version.unwrap_or_default().to_owned(),
            consistency: consistency.into(),
        };
        self.call("GetResolvedGraph", Route::for_read(request.consistency), request, |channel, request| async move {
            registry_service(channel).get_resolved_graph(request).await
        })
        .await
    }
}
