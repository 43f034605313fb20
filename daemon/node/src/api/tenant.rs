//! `keel.v1.TenantService`: create, read, update and list tenants.

use super::context::{self, ApiContext, READ_DEADLINE_DEFAULT_MS, WRITE_DEADLINE_DEFAULT_MS};
use super::convert;
use super::error::ApiError;
use keel_kernel::{Command, Outcome};
use keel_proto::v1 as pb;
use tonic::{Request, Response, Status};

/// The service.
pub struct TenantApi {
    pub(crate) ctx: ApiContext,
}

impl TenantApi {
    async fn write(
        &self,
        command: Command,
        idempotency_key: String,
        deadline: std::time::Duration,
    ) -> Result<(pb::Tenant, u64), ApiError> {
        let (applied, revision) = self.ctx.propose_idempotent(command, idempotency_key, deadline).await?;
        match applied.outcome {
            Outcome::TenantWritten { tenant } => Ok((convert::tenant_to_pb(&tenant), revision)),
            other => Err(ApiError::internal(anyhow::anyhow!("a tenant write answered with {other:?}"))),
        }
    }
}

#[tonic::async_trait]
impl pb::tenant_service_server::TenantService for TenantApi {
    async fn create_tenant(&self, request: Request<pb::CreateTenantRequest>) -> Result<Response<pb::Tenant>, Status> {
        let deadline = context::deadline(&request, WRITE_DEADLINE_DEFAULT_MS);
        let result = async {
            let body = request.into_inner();
            let spec = convert::tenant_spec(body.tenant)?;
            self.write(Command::CreateTenant { spec }, body.idempotency_key, deadline).await
        }
        .await;
        self.ctx.answer(result)
    }

    async fn get_tenant(&self, request: Request<pb::GetTenantRequest>) -> Result<Response<pb::Tenant>, Status> {
        let deadline = context::deadline(&request, READ_DEADLINE_DEFAULT_MS);
        let body = request.into_inner();
        let result = async {
            let tenant_id = convert::tenant_name(&body.name)?;
            self.ctx
                .read(body.consistency, deadline, |state| {
                    state.kernel.tenants().get(&tenant_id).map(convert::tenant_to_pb).ok_or_else(|| {
                        ApiError::NotFound { reason: "TENANT_NOT_FOUND", resource: format!("tenants/{tenant_id}") }
                    })
                })
                .await
        }
        .await;
        self.ctx.answer(result)
    }

    async fn update_tenant(&self, request: Request<pb::UpdateTenantRequest>) -> Result<Response<pb::Tenant>, Status> {
        let deadline = context::deadline(&request, WRITE_DEADLINE_DEFAULT_MS);
        let result = async {
            let body = request.into_inner();
            let spec = convert::tenant_spec(body.tenant)?;
            let expected_etag = (!body.etag.is_empty()).then_some(body.etag);
            self.write(Command::UpdateTenant { spec, expected_etag }, body.idempotency_key, deadline).await
        }
        .await;
        self.ctx.answer(result)
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        const QUERY: &str = "tenants";
        let deadline = context::deadline(&request, READ_DEADLINE_DEFAULT_MS);
        let body = request.into_inner();
        let result = async {
            let page = context::page(QUERY, body.page_size, &body.page_token)?;
            let after =
                page.after.as_deref().map(convert::tenant_name).transpose().map_err(|_| ApiError::PageTokenInvalid)?;
            self.ctx
                .read(body.consistency, deadline, |state| {
                    let tenants: Vec<pb::Tenant> = state
                        .kernel
                        .tenants()
                        .iter_from(after.as_ref())
                        .take(page.size + 1)
                        .map(convert::tenant_to_pb)
                        .collect();
                    let (tenants, next_page_token) = context::paginate(tenants, &page, QUERY, |item| &item.tenant_id);
                    Ok(pb::ListTenantsResponse { tenants, next_page_token })
                })
                .await
        }
        .await;
        self.ctx.answer(result)
    }
}
