//! `keel.v1.TrustService`: add, get, list and revoke trust-store keys; read
//! and rotate the root metadata.

use super::context::{self, ApiContext};
use super::convert;
use super::error::ApiError;
use crate::limits::{READ_DEADLINE_DEFAULT_MS, WRITE_DEADLINE_DEFAULT_MS};
use keel_kernel::limits::TOKEN_LIFETIME_MS_MAX;
use keel_kernel::{Command, Outcome};
use keel_proto::v1 as pb;
use tonic::{Request, Response, Status};

/// The service.
pub struct TrustApi {
    pub(crate) ctx: ApiContext,
}

#[tonic::async_trait]
impl pb::trust_service_server::TrustService for TrustApi {
    async fn add_key(&self, request: Request<pb::AddKeyRequest>) -> Result<Response<pb::AddKeyResponse>, Status> {
        self.ctx
            .serve(request, WRITE_DEADLINE_DEFAULT_MS, |body, call| async move {
                let spec = convert::key_spec(body.spec)?;
                let signatures = convert::signatures(body.signatures)?;
                call.write(Command::AddKey { spec, signatures }, body.idempotency_key, |outcome| match outcome {
                    Outcome::KeyAdded { key, created } => {
                        Some(pb::AddKeyResponse { key: Some(convert::key_to_pb(key)), created: *created })
                    }
                    _ => None,
                })
                .await
            })
            .await
    }

    async fn get_key(&self, request: Request<pb::GetKeyRequest>) -> Result<Response<pb::Key>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let key_id = convert::key_name(&body.name)?;
                let state = call.read(body.consistency).await?;
                state
                    .kernel
                    .trust()
                    .get(&key_id)
                    .map(convert::key_to_pb)
                    .ok_or_else(|| ApiError::NotFound { reason: "KEY_UNKNOWN", resource: format!("keys/{key_id}") })
            })
            .await
    }

    async fn list_keys(&self, request: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        const QUERY: &str = "keys";
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let page = context::page(QUERY, body.page_size, &body.page_token)?;
                let purpose = match body.purpose {
                    0 => None,
                    value => Some(convert::purpose(value)?),
                };
                let state = call.read(body.consistency).await?;
                let keys: Vec<pb::Key> = state
                    .kernel
                    .trust()
                    .iter_from(page.after.as_deref())
                    .filter(|key| purpose.is_none_or(|p| key.spec.purposes.contains(&p)))
                    .take(page.size + 1)
                    .map(convert::key_to_pb)
                    .collect();
                let (keys, next_page_token) = context::paginate(keys, &page, QUERY, |item| &item.key_id);
                Ok(pb::ListKeysResponse { keys, next_page_token })
            })
            .await
    }

    async fn get_root(&self, request: Request<pb::GetRootRequest>) -> Result<Response<pb::RootMetadata>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let state = call.read(body.consistency).await?;
                Ok(convert::root_to_pb(state.kernel.trust().root()))
            })
            .await
    }

    async fn revoke_key(&self, request: Request<pb::RevokeKeyRequest>) -> Result<Response<pb::Key>, Status> {
        self.ctx
            .serve(request, WRITE_DEADLINE_DEFAULT_MS, |body, call| async move {
                let key_id = convert::revoke_key_id(&body.key_id)?;
                let signatures = convert::signatures(body.signatures)?;
                call.write(Command::RevokeKey { key_id, signatures }, body.idempotency_key, |outcome| match outcome {
                    Outcome::KeyRevoked { key, .. } => Some(convert::key_to_pb(key)),
                    _ => None,
                })
                .await
            })
            .await
    }

    async fn rotate_root(&self, request: Request<pb::RotateRootRequest>) -> Result<Response<pb::RootMetadata>, Status> {
        self.ctx
            .serve(request, WRITE_DEADLINE_DEFAULT_MS, |body, call| async move {
                let metadata = convert::root_metadata_bytes(body.metadata)?;
                let signatures = convert::signatures(body.signatures)?;
                let command = Command::RotateRoot { metadata, signatures };
                call.write(command, body.idempotency_key, |outcome| match outcome {
                    Outcome::RootRotated { root } => Some(convert::root_to_pb(root)),
                    _ => None,
                })
                .await
            })
            .await
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        self.ctx
            .serve(request, WRITE_DEADLINE_DEFAULT_MS, |body, call| async move {
                keel_kernel::ids::check_claim("jti", &body.jti)?;
                let exp_ms = match body.exp_ms {
                    0 => call.ctx().replica.clock.wall_now_ms().saturating_add(TOKEN_LIFETIME_MS_MAX),
                    exp_ms => exp_ms,
                };
                let command = Command::RevokeToken { jti: body.jti, exp_ms };
                let created = call
                    .write(command, body.idempotency_key, |outcome| match outcome {
                        Outcome::TokenRevoked { created } => Some(*created),
                        _ => None,
                    })
                    .await?;
                let state = call.ctx().replica.shared.read();
                let revoked_tokens = u64::try_from(state.kernel.trust().revoked_tokens().len()).unwrap_or(u64::MAX);
                Ok(pb::RevokeTokenResponse { created, revoked_tokens })
            })
            .await
    }
}
