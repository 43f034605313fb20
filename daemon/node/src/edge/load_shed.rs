//! [`InFlightLayer`]: the per-node bound on requests in flight on the
//! client port. A request over the bound is answered at once with
//! `RESOURCE_EXHAUSTED` (`LIMIT_EXCEEDED`, `IN_FLIGHT_REQUESTS_MAX`, with
//! `RetryInfo`), before it reaches a handler — so no internal queue
//! (openraft's proposal queue included) grows with the offered load.
//!
//! ```text
//!  HTTP/2 stream ─► InFlight: permit? ─no─► RESOURCE_EXHAUSTED + RetryInfo
//!                              └─yes─► service (permit held until the response is produced)
//! ```
//!
//! Watch streams are long-lived and have their own bound
//! (`watch.watchers_max`), so they do not hold an in-flight permit.

use crate::status::{self, Overloaded};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::sync::Semaphore;

/// Paths of long-lived streams, bounded elsewhere.
const STREAMING_PATHS: &[&str] = &["/keel.v1.EventService/Watch"];

/// Shed counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct ShedStats {
    /// Requests refused for the bound since start.
    pub shed_total: AtomicU64,
}

impl prometheus_client::collector::Collector for ShedStats {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let shed = prometheus_client::metrics::counter::ConstCounter::new(self.shed_total.load(Ordering::Relaxed));
        let metric = encoder.encode_descriptor(
            "keel_requests_shed",
            "Requests refused at the in-flight bound, since start",
            None,
            shed.metric_type(),
        )?;
        shed.encode(metric)
    }
}

/// Bounds requests in flight.
#[derive(Debug, Clone)]
pub struct InFlightLayer {
    permits: Arc<Semaphore>,
    bound: usize,
    stats: Arc<ShedStats>,
}

impl InFlightLayer {
    /// A layer admitting at most `bound` requests at once.
    pub fn new(bound: usize, stats: Arc<ShedStats>) -> InFlightLayer {
        InFlightLayer { permits: Arc::new(Semaphore::new(bound)), bound, stats }
    }
}

impl<S> tower::Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight { inner, layer: self.clone() }
    }
}

/// The service [`InFlightLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct InFlight<S> {
    inner: S,
    layer: InFlightLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, R> tower::Service<http::Request<B>> for InFlight<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if STREAMING_PATHS.contains(&request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        match Arc::clone(&self.layer.permits).try_acquire_owned() {
            Ok(permit) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let response = response.await;
                    drop(permit);
                    response
                })
            }
            Err(_) => {
                self.layer.stats.shed_total.fetch_add(1, Ordering::Relaxed);
                let status =
                    status::to_status(&Overloaded { limit: "IN_FLIGHT_REQUESTS_MAX", limit_value: self.layer.bound });
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}
