//! Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService`)
//! on the client port, so an existing Envoy uses Keel as its global rate
//! limiter (`rate_limit_service` with a `grpc_service` pointing at a member,
//! the bearer token in its `initial_metadata`).
//!
//! ```text
//!  ShouldRateLimit{domain, descriptors, hits_addend}
//!   each descriptor with entries tenant, engine, action (+ version, risk_band, region, role)
//!     ─► the admission pipeline (api/admission.rs admit_one), cost = hits_addend
//!        (the descriptor's, else the request's, else 1), on one applied state
//!     ─► OK, or OVER_LIMIT with the denial's reason in x-keel-reason
//!   a descriptor without them: not Keel's, OK
//!  overall OVER_LIMIT when any descriptor is; descriptors are judged alone, so
//!  an admitted one stays charged (as in Envoy's own service)
//! ```

use super::admission::{AdmissionApi, admit_many};
use super::error::ApiError;
use crate::limits::{ENVOY_DESCRIPTORS_MAX, ENVOY_ENTRIES_MAX, READ_DEADLINE_DEFAULT_MS};
use keel_kernel::Rejection;
use keel_proto::envoy::ratelimit::v3 as rls;
use keel_proto::v1 as pb;
use rls::rate_limit_response::{Code, DescriptorStatus, RateLimit, rate_limit::Unit};
use tonic::{Request, Response, Status};

/// The service: the admission service's state behind Envoy's API.
pub struct EnvoyRls(pub AdmissionApi);

fn invalid(field: &'static str, problem: &'static str) -> ApiError {
    ApiError::Rejected(Rejection::FieldInvalid { field: field.into(), problem: problem.into() })
}

/// The admission a descriptor asks, if it is Keel's.
pub fn admission_of(descriptor: &rls::RateLimitDescriptor, hits: u64) -> Result<Option<pb::AdmitRequest>, ApiError> {
    if descriptor.entries.len() > ENVOY_ENTRIES_MAX {
        return Err(invalid("descriptors.entries", "more than ENVOY_ENTRIES_MAX entries"));
    }
    let mut request = pb::AdmitRequest { cost: hits, ..Default::default() };
    for entry in &descriptor.entries {
        let field = match entry.key.as_str() {
            "tenant" => &mut request.tenant,
            "engine" => &mut request.engine,
            "action" => &mut request.action,
            "version" => &mut request.version,
            "risk_band" => &mut request.risk_band,
            "region" => &mut request.region,
            "role" => &mut request.role,
            _ => continue,
        };
        if !field.is_empty() {
            return Err(invalid("descriptors.entries", "a key appears twice in one descriptor"));
        }
        field.clone_from(&entry.value);
    }
    let is_keels = !request.tenant.is_empty() || !request.engine.is_empty() || !request.action.is_empty();
    Ok(is_keels.then_some(request))
}

/// Envoy's view of one admission's answer.
fn status_of(answer: &pb::AdmitResponse) -> DescriptorStatus {
    // The most constrained scope is the limit Envoy is told about.
    let tightest = answer.remaining.iter().min_by_key(|room| room.remaining);
    DescriptorStatus {
        code: if answer.allowed { Code::Ok } else { Code::OverLimit } as i32,
        current_limit: tightest.map(|room| RateLimit {
            name: room.scope.clone(),
            requests_per_unit: u32::try_from(room.calls_per_minute).unwrap_or(u32::MAX),
            unit: Unit::Minute as i32,
        }),
        limit_remaining: tightest.map(|room| u32::try_from(room.remaining).unwrap_or(u32::MAX)).unwrap_or(0),
        duration_until_reset: (answer.retry_after_ms > 0).then(|| prost_types::Duration {
            seconds: i64::try_from(answer.retry_after_ms / 1_000).unwrap_or(i64::MAX),
            nanos: i32::try_from((answer.retry_after_ms % 1_000) * 1_000_000).unwrap_or(0),
        }),
    }
}

fn header(key: &str, value: String) -> rls::HeaderValue {
    rls::HeaderValue { key: key.to_owned(), value }
}

#[tonic::async_trait]
impl rls::rate_limit_service_server::RateLimitService for EnvoyRls {
    async fn should_rate_limit(
        &self,
        request: Request<rls::RateLimitRequest>,
    ) -> Result<Response<rls::RateLimitResponse>, Status> {
        let limits = self.0.limits();
        self.0
            .ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                if body.descriptors.len() > ENVOY_DESCRIPTORS_MAX {
                    return Err(invalid("descriptors", "more than ENVOY_DESCRIPTORS_MAX descriptors"));
                }
                let default_hits = u64::from(body.hits_addend.max(1));
                let admissions = body
                    .descriptors
                    .iter()
                    .map(|descriptor| {
                        let hits = descriptor.hits_addend.map(|hits| hits.max(1)).unwrap_or(default_hits);
                        admission_of(descriptor, hits)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let state = call.read(pb::ReadConsistency::Serializable as i32).await?;
                let requests: Vec<pb::AdmitRequest> = admissions.iter().flatten().cloned().collect();
                let mut judged = admit_many(&call, &limits, &state, &requests).await.into_iter();
                let answers: Vec<Result<Option<pb::AdmitResponse>, ApiError>> = admissions
                    .iter()
                    .map(|admission| match admission {
                        Some(_) => match judged.next() {
                            Some(answer) => answer.map(Some),
                            None => Err(ApiError::internal(anyhow::anyhow!("a descriptor was not judged"))),
                        },
                        None => Ok(None),
                    })
                    .collect();
                let mut response = rls::RateLimitResponse { overall_code: Code::Ok as i32, ..Default::default() };
                for answer in answers {
                    let Some(answer) = answer? else {
                        response.statuses.push(DescriptorStatus { code: Code::Ok as i32, ..Default::default() });
                        continue;
                    };
                    if !answer.allowed {
                        response.overall_code = Code::OverLimit as i32;
                        if response.response_headers_to_add.is_empty() {
                            response.response_headers_to_add.push(header("x-keel-reason", answer.reason.clone()));
                            response.response_headers_to_add.push(header("x-keel-detail", answer.detail.clone()));
                            if answer.retry_after_ms > 0 {
                                let seconds = answer.retry_after_ms.div_ceil(1_000);
                                response.response_headers_to_add.push(header("retry-after", seconds.to_string()));
                            }
                        }
                    }
                    if !answer.decision_id.is_empty() {
                        response.request_headers_to_add.push(header("x-keel-decision-id", answer.decision_id.clone()));
                    }
                    response.statuses.push(status_of(&answer));
                }
                Ok(response)
            })
            .await
    }
}
