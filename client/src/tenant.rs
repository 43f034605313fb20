//! [`KeelClient`]'s `keel.v1.TenantService` calls.
//!
//! Both writes carry a fresh idempotency key, so when a transport failure
//! hides whether the first attempt applied, the retried attempt is answered
//! with the first outcome (not `TENANT_ALREADY_EXISTS` or `ETAG_MISMATCH`).

use crate::client::{KeelClient, collect_pages};
use crate::error::ClientError;
use crate::limits::{GRPC_MESSAGE_BYTES_MAX, LIST_PAGE_SIZE};
use crate::routing::Route;
use crate::served::Served;
use keel_proto::v1 as pb;
use keel_proto::v1::tenant_service_client::TenantServiceClient;
use tonic::transport::Channel;

fn tenant_service(channel: Channel) -> TenantServiceClient<Channel> {
    TenantServiceClient::new(channel)
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
}

impl KeelClient {
    /// `TenantService.CreateTenant`.
    pub async fn create_tenant(&self, tenant: pb::Tenant) -> Result<Served<pb::Tenant>, ClientError> {
        let request =
            pb::CreateTenantRequest { tenant: Some(tenant), idempotency_key: self.randomness.idempotency_key() };
        self.call("CreateTenant", Route::Leader, request, |channel, request| async move {
            tenant_service(channel).create_tenant(request).await
        })
        .await
    }

    /// `TenantService.GetTenant` by bare id (or `tenants/{tenant_id}`).
    pub async fn get_tenant(
        &self,
        tenant_id: &str,
        consistency: pb::ReadConsistency,
    ) -> Result<Served<pb::Tenant>, ClientError> {
        let request = pb::GetTenantRequest { name: tenant_id.to_owned(), consistency: consistency.into() };
        self.call("GetTenant", Route::for_read(request.consistency), request, |channel, request| async move {
            tenant_service(channel).get_tenant(request).await
        })
        .await
    }

    /// `TenantService.UpdateTenant`: replaces the mutable fields. A non-empty
    /// `etag` must equal the tenant's current etag.
    pub async fn update_tenant(&self, tenant: pb::Tenant, etag: &str) -> Result<Served<pb::Tenant>, ClientError> {
        let request = pb::UpdateTenantRequest {
            tenant: Some(tenant),
            etag: etag.to_owned(),
            idempotency_key: self.randomness.idempotency_key(),
        };
        self.call("UpdateTenant", Route::Leader, request, |channel, request| async move {
            tenant_service(channel).update_tenant(request).await
        })
        .await
    }

    /// `TenantService.ListTenants`: one page.
    pub async fn list_tenants(
        &self,
        request: pb::ListTenantsRequest,
    ) -> Result<Served<pb::ListTenantsResponse>, ClientError> {
        self.call("ListTenants", Route::for_read(request.consistency), request, |channel, request| async move {
            tenant_service(channel).list_tenants(request).await
        })
        .await
    }

    /// Every tenant, fetching all pages.
    pub async fn list_all_tenants(
        &self,
        consistency: pb::ReadConsistency,
    ) -> Result<Served<Vec<pb::Tenant>>, ClientError> {
        let template = pb::ListTenantsRequest {
            page_size: LIST_PAGE_SIZE,
            page_token: String::new(),
            consistency: consistency.into(),
        };
        collect_pages(
            "ListTenants",
            |page_token| self.list_tenants(pb::ListTenantsRequest { page_token, ..template.clone() }),
            |page: pb::ListTenantsResponse| (page.tenants, page.next_page_token),
        )
        .await
    }
}
