//! `keel.v1.TrustService`: add, get, list and revoke trust-store keys; read
//! and rotate the root metadata.

use super::context::{self, ApiContext, READ_DEADLINE_DEFAULT_MS, WRITE_DEADLINE_DEFAULT_MS};
use super::convert;
use super::error::ApiError;
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
        let deadline = context::deadline(&request, WRITE_DEADLINE_DEFAULT_MS);
        let result = async {
            let body = request.into_inner();
            let spec = convert::key_spec(body.spec)?;
            let signatures = convert::signatures(body.signatures)?;
            let (applied, revision) = self
                .ctx
                .propose_idempotent(Command::AddKey { spec, signatures }, body.idempotency_key, deadline)
                .await?;
            match applied.outcome {
                Outcome::KeyAdded { key, created } => {
                    Ok((pb::AddKeyResponse { key: Some(convert::key_to_pb(&key)), created }, revision))
                }
                other => Err(ApiError::internal(anyhow::anyhow!("AddKey answered with {other:?}"))),
            }
        }
        .await;
        self.ctx.answer(result)
    }

    async fn get_key(&self, request: Request<pb::GetKeyRequest>) -> Result<Response<pb::Key>, Status> {
        let deadline = context::deadline(&request, READ_DEADLINE_DEFAULT_MS);
        let body = request.into_inner();
        let result =
            async {
                let key_id = convert::key_name(&body.name)?;
                self.ctx
                    .read(body.consistency, deadline, |state| {
                        state.kernel.trust().get(&key_id).map(convert::key_to_pb).ok_or_else(|| ApiError::NotFound {
                            reason: "KEY_UNKNOWN",
                            resource: format!("keys/{key_id}"),
                        })
                    })
                    .await
            }
            .await;
        self.ctx.answer(result)
    }

    async fn list_keys(&self, request: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        const QUERY: &str = "keys";
        let deadline = context::deadline(&request, READ_DEADLINE_DEFAULT_MS);
        let body = request.into_inner();
        let result = async {
            let page = context::page(QUERY, body.page_size, &body.page_token)?;
            let purpose = match body.purpose {
                0 => None,
                value => Some(convert::purpose(value)?),
            };
            self.ctx
                .read(body.consistency, deadline, |state| {
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
        .await;
        self.ctx.answer(result)
    }

    async fn get_root(&self, request: Request<pb::GetRootRequest>) -> Result<Response<pb::RootMetadata>, Status> {
        let deadline = context::deadline(&request, READ_DEADLINE_DEFAULT_MS);
        let body = request.into_inner();
        let result = self
            .ctx
            .read(body.consistency, deadline, |state| Ok(convert::root_to_pb(state.kernel.trust().root())))
            .await;
        self.ctx.answer(result)
    }

    async fn revoke_key(&self, request: Request<pb::RevokeKeyRequest>) -> Result<Response<pb::Key>, Status> {
        let deadline = context::deadline(&request, WRITE_DEADLINE_DEFAULT_MS);
        let result = async {
            let body = request.into_inner();
            let key_id = convert::revoke_key_id(&body.key_id)?;
            let signatures = convert::signatures(body.signatures)?;
            let (applied, revision) = self
                .ctx
                .propose_idempotent(Command::RevokeKey { key_id, signatures }, body.idempotency_key, deadline)
                .await?;
            match applied.outcome {
                Outcome::KeyRevoked { key, .. } => Ok((convert::key_to_pb(&key), revision)),
                other => Err(ApiError::internal(anyhow::anyhow!("RevokeKey answered with {other:?}"))),
            }
        }
        .await;
        self.ctx.answer(result)
    }

    async fn rotate_root(&self, request: Request<pb::RotateRootRequest>) -> Result<Response<pb::RootMetadata>, Status> {
        let deadline = context::deadline(&request, WRITE_DEADLINE_DEFAULT_MS);
        let result = async {
            let body = request.into_inner();
            let metadata = convert::root_metadata_bytes(body.metadata)?;
            let signatures = convert::signatures(body.signatures)?;
            let (applied, revision) = self
                .ctx
                .propose_idempotent(Command::RotateRoot { metadata, signatures }, body.idempotency_key, deadline)
                .await?;
            match applied.outcome {
                Outcome::RootRotated { root } => Ok((convert::root_to_pb(&root), revision)),
                other => Err(ApiError::internal(anyhow::anyhow!("RotateRoot answered with {other:?}"))),
            }
        }
        .await;
        self.ctx.answer(result)
    }
}
