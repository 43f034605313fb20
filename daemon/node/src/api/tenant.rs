//! `keel.v1.TenantService`: create, read, update and list tenants.

use super::context::{self, ApiContext};
use super::convert;
use super::error::ApiError;
use crate::limits::{READ_DEADLINE_DEFAULT_MS, WRITE_DEADLINE_DEFAULT_MS};
use keel_kernel::{Command, Outcome};
use keel_proto::v1 as pb;
use tonic::{Request, Response, Status};

/// The service.
pub struct TenantApi {
    pub(crate) ctx: ApiContext,
}

/// The outcome of a tenant write.
fn written(outcome: &Outcome) -> Option<pb::Tenant> {
    match outcome {
        Outcome::TenantWritten { tenant } => Some(convert::tenant_to_pb(tenant)),
        _ => None,
    }
}

#[tonic::async_trait]
impl pb::tenant_service_server::TenantService for TenantApi {
    async fn create_tenant(&self, request: Request<pb::CreateTenantRequest>) -> Result<Response<pb::Tenant>, Status> {
        self.ctx
            .serve(request, WRITE_DEADLINE_DEFAULT_MS, |body, call| async move {
                let spec = convert::tenant_spec(body.tenant)?;
                call.check_tenant(spec.tenant_id.as_str())?;
                call.write(Command::CreateTenant { spec }, body.idempotency_key, written).await
            })
            .await
    }

    async fn get_tenant(&self, request: Request<pb::GetTenantRequest>) -> Result<Response<pb::Tenant>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let tenant_id = convert::tenant_name(&body.name)?;
                call.check_tenant(tenant_id.as_str())?;
                let state = call.read(body.consistency).await?;
                state.kernel.tenants().get(&tenant_id).map(convert::tenant_to_pb).ok_or_else(|| ApiError::NotFound {
                    reason: "TENANT_NOT_FOUND",
                    resource: format!("tenants/{tenant_id}"),
                })
            })
            .await
    }

    async fn update_tenant(&self, request: Request<pb::UpdateTenantRequest>) -> Result<Response<pb::Tenant>, Status> {
        self.ctx
            .serve(request, WRITE_DEADLINE_DEFAULT_MS, |body, call| async move {
                let spec = convert::tenant_spec(body.tenant)?;
                call.check_tenant(spec.tenant_id.as_str())?;
                let expected_etag = (!body.etag.is_empty()).then_some(body.etag);
                call.write(Command::UpdateTenant { spec, expected_etag }, body.idempotency_key, written).await
            })
            .await
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        const QUERY: &str = "tenants";
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let page = context::page(QUERY, body.page_size, &body.page_token)?;
                let after = page
                    .after
                    .as_deref()
                    .map(convert::tenant_name)
                    .transpose()
                    .map_err(|_| ApiError::PageTokenInvalid)?;
                let state = call.read(body.consistency).await?;
                // A tenant-scoped caller's list holds its own tenant only.
                let scope = call.tenant_scope();
                let tenants: Vec<pb::Tenant> = state
                    .kernel
                    .tenants()
                    .iter_from(after.as_ref())
                    .filter(|tenant| scope.is_none_or(|scope| *scope == tenant.spec.tenant_id))
                    .take(page.size + 1)
                    .map(convert::tenant_to_pb)
                    .collect();
                let (tenants, next_page_token) = context::paginate(tenants, &page, QUERY, |item| &item.tenant_id);
                Ok(pb::ListTenantsResponse { tenants, next_page_token })
            })
            .await
    }
}
