//! `keel.v1.RegistryService`: publish and read engine versions.

use super::context::{self, ApiContext};
use super::convert;
use super::error::ApiError;
use crate::limits::{READ_DEADLINE_DEFAULT_MS, WRITE_DEADLINE_DEFAULT_MS};
use keel_kernel::{Command, Outcome};
use keel_proto::v1 as pb;
use tonic::{Request, Response, Status};

/// The service.
pub struct RegistryApi {
    pub(crate) ctx: ApiContext,
}

#[tonic::async_trait]
impl pb::registry_service_server::RegistryService for RegistryApi {
    async fn publish_engine_version(
        &self,
        request: Request<pb::PublishEngineVersionRequest>,
    ) -> Result<Response<pb::PublishEngineVersionResponse>, Status> {
        self.ctx
            .serve(request, WRITE_DEADLINE_DEFAULT_MS, |body, call| async move {
                convert::manifest_bytes(&body.manifest)?;
                // Stateless checks fail fast here, before anything reaches the log;
                // apply repeats them and adds the signature and immutability checks.
                let parsed = keel_kernel::manifest::parse(&body.manifest)?;
                let signatures = convert::signatures(body.signatures)?;
                if signatures.is_empty() {
                    return Err(ApiError::Rejected(keel_kernel::Rejection::FieldRequired {
                        field: "signatures".into(),
                    }));
                }
                call.prejudge(keel_kernel::manifest::schema_judgement(&parsed.manifest)).await?;
                let command = Command::PublishEngineVersion { manifest: body.manifest, signatures };
                call.write(command, body.idempotency_key, |outcome| match outcome {
                    Outcome::EngineVersionPublished { version, created } => Some(pb::PublishEngineVersionResponse {
                        engine_version: Some(convert::engine_version_to_pb(version)),
                        created: *created,
                    }),
                    _ => None,
                })
                .await
            })
            .await
    }

    async fn get_engine_version(
        &self,
        request: Request<pb::GetEngineVersionRequest>,
    ) -> Result<Response<pb::EngineVersion>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let engine = convert::engine_name("engine", &body.engine)?;
                let version = optional_version(&body.version)?;
                let state = call.read(body.consistency).await?;
                find_version(state.kernel.registry(), &engine, version.as_ref()).map(convert::engine_version_to_pb)
            })
            .await
    }

    async fn list_engines(
        &self,
        request: Request<pb::ListEnginesRequest>,
    ) -> Result<Response<pb::ListEnginesResponse>, Status> {
        const QUERY: &str = "engines";
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let page = context::page(QUERY, body.page_size, &body.page_token)?;
                let after = page.after.as_deref().map(|name| convert::engine_name("page_token", name)).transpose()?;
                let state = call.read(body.consistency).await?;
                let engines: Vec<pb::Engine> = state
                    .kernel
                    .registry()
                    .engines_from(after.as_ref())
                    .take(page.size + 1)
                    .map(|(name, versions)| pb::Engine {
                        name: format!("engines/{name}"),
                        engine: name.to_string(),
                        latest_version: versions.keys().next_back().map(ToString::to_string).unwrap_or_default(),
                        version_count: u32::try_from(versions.len()).unwrap_or(u32::MAX),
                    })
                    .collect();
                let (engines, next_page_token) = context::paginate(engines, &page, QUERY, |item| &item.engine);
                Ok(pb::ListEnginesResponse { engines, next_page_token })
            })
            .await
    }

    async fn list_engine_versions(
        &self,
        request: Request<pb::ListEngineVersionsRequest>,
    ) -> Result<Response<pb::ListEngineVersionsResponse>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let engine = convert::engine_name("engine", &body.engine)?;
                let query = format!("versions/{engine}");
                let page = context::page(&query, body.page_size, &body.page_token)?;
                let after = page
                    .after
                    .as_deref()
                    .map(|v| keel_kernel::manifest::parse_version("page_token", v))
                    .transpose()
                    .map_err(|_| ApiError::PageTokenInvalid)?;
                let state = call.read(body.consistency).await?;
                let versions = state.kernel.registry().versions_from(&engine, after.as_ref()).ok_or_else(|| {
                    ApiError::NotFound { reason: "ENGINE_NOT_FOUND", resource: format!("engines/{engine}") }
                })?;
                let versions: Vec<pb::EngineVersion> =
                    versions.take(page.size + 1).map(convert::engine_version_to_pb).collect();
                let (versions, next_page_token) = context::paginate(versions, &page, &query, |item| &item.version);
                Ok(pb::ListEngineVersionsResponse { versions, next_page_token })
            })
            .await
    }

    async fn yank_engine_version(
        &self,
        request: Request<pb::YankEngineVersionRequest>,
    ) -> Result<Response<pb::EngineVersion>, Status> {
        self.ctx
            .serve(request, WRITE_DEADLINE_DEFAULT_MS, |body, call| async move {
                let engine = convert::engine_name("engine", &body.engine)?;
                let version = keel_kernel::manifest::parse_version("version", &body.version)?;
                let command = Command::YankEngineVersion { engine, version };
                call.write(command, body.idempotency_key, |outcome| match outcome {
                    Outcome::EngineVersionYanked { version, .. } => Some(convert::engine_version_to_pb(version)),
                    _ => None,
                })
                .await
            })
            .await
    }

    async fn list_dependants(
        &self,
        request: Request<pb::ListDependantsRequest>,
    ) -> Result<Response<pb::ListDependantsResponse>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let engine = convert::engine_name("engine", &body.engine)?;
                let state = call.read(body.consistency).await?;
                let registry = state.kernel.registry();
                if registry.get(&engine, None).is_none() {
                    return Err(ApiError::NotFound {
                        reason: "ENGINE_NOT_FOUND",
                        resource: format!("engines/{engine}"),
                    });
                }
                let engines = registry.dependants(&engine).iter().map(ToString::to_string).collect();
                Ok(pb::ListDependantsResponse { engines })
            })
            .await
    }

    async fn get_resolved_graph(
        &self,
        request: Request<pb::GetResolvedGraphRequest>,
    ) -> Result<Response<pb::ResolvedGraph>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let engine = convert::engine_name("engine", &body.engine)?;
                let version = optional_version(&body.version)?;
                let state = call.read(body.consistency).await?;
                let registry = state.kernel.registry();
                let root = find_version(registry, &engine, version.as_ref())?;
                let graph = registry.resolved_graph(&root.engine, &root.version).unwrap_or_default();
                let nodes = graph
                    .iter()
                    .filter_map(|(name, version)| registry.get(name, Some(version)))
                    .map(convert::resolved_node_to_pb)
                    .collect();
                Ok(pb::ResolvedGraph { nodes })
            })
            .await
    }
}

/// An optional version as sent: empty means "the highest published".
fn optional_version(text: &str) -> Result<Option<semver::Version>, ApiError> {
    match text {
        "" => Ok(None),
        text => Ok(Some(keel_kernel::manifest::parse_version("version", text)?)),
    }
}

/// One version, or the highest when `version` is `None`; the not-found reason
/// says whether the engine or only that version is missing.
fn find_version<'a>(
    registry: &'a keel_kernel::registry::Registry,
    engine: &keel_kernel::Name,
    version: Option<&semver::Version>,
) -> Result<&'a keel_kernel::registry::EngineVersion, ApiError> {
    if let Some(found) = registry.get(engine, version) {
        return Ok(found);
    }
    match version {
        Some(version) if registry.get(engine, None).is_some() => Err(ApiError::NotFound {
            reason: "ENGINE_VERSION_NOT_FOUND",
            resource: format!("engines/{engine}/versions/{version}"),
        }),
        _ => Err(ApiError::NotFound { reason: "ENGINE_NOT_FOUND", resource: format!("engines/{engine}") }),
    }
}
