//! `keel.v1.EventService`: watch the replicated event history, publish user events.
//!
//! ```text
//!  Watch(from, filter) ─► permit (≤ watch.watchers_max) ─► check from against
//!                         [compacted_through + 1, applied + 1] ─► spawn a pump
//!  pump: loop { published state: events ≥ cursor (bounded batch, whole revisions)
//!               send (bounded channel, WATCH_SEND_TIMEOUT_MS) ─► cursor = next
//!               nothing new: wait for the applied revision to move, or send progress }
//!  stream = channel items, then the pump's closing error (COMPACTED, WATCHER_TOO_SLOW)
//! ```
//!
//! The pump holds no events of its own: the history lives in the replicated
//! kernel state (the same on every node), and a watcher is a cursor into it.
//! What it has collected waits in a [`WatchQueue`], bounded in bytes per
//! watcher and per node. A watcher that stops reading fills its queue and is
//! cut off after [`WATCH_SEND_TIMEOUT_MS`] (its queued messages are dropped at
//! once, even if its client keeps the stream open); one that falls behind
//! compaction is told `COMPACTED`. Either way memory is bounded and the
//! client knows where to resume.

use super::context::{ApiContext, Call};
use super::convert;
use super::error::ApiError;
use super::watch_queue::{PushRefused, ReaderGuard, WatchQueue};
use crate::limits::{READ_DEADLINE_DEFAULT_MS, WRITE_DEADLINE_DEFAULT_MS};
use crate::limits::{
    WATCH_BATCH_BYTES_MAX, WATCH_BATCH_EVENTS_MAX, WATCH_PROGRESS_INTERVAL_MS_DEFAULT, WATCH_PROGRESS_INTERVAL_MS_MAX,
    WATCH_PROGRESS_INTERVAL_MS_MIN, WATCH_SEND_TIMEOUT_MS,
};
use crate::raft::SharedState;
use crate::replica::ReplicaError;
use futures::Stream;
use keel_kernel::{Command, Event, Name, Outcome};
use keel_proto::v1 as pb;
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

const _: () = assert!(
    WATCH_BATCH_BYTES_MAX + keel_kernel::limits::EVENT_PAYLOAD_BYTES_MAX < keel_kernel::limits::GRPC_MESSAGE_BYTES_MAX
);
const _: () = assert!(WATCH_PROGRESS_INTERVAL_MS_MIN <= WATCH_PROGRESS_INTERVAL_MS_DEFAULT);
const _: () = assert!(WATCH_PROGRESS_INTERVAL_MS_DEFAULT <= WATCH_PROGRESS_INTERVAL_MS_MAX);

/// Which events a watcher wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchFilter {
    /// Kind names; empty means all.
    pub kinds: BTreeSet<&'static str>,
    /// Only events concerning this tenant.
    pub tenant: Option<Name>,
    /// Only events concerning this engine.
    pub engine: Option<Name>,
}

impl WatchFilter {
    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(event.kind.name()))
            && self.tenant.as_ref().is_none_or(|tenant| event.kind.tenant() == Some(tenant))
            && self.engine.as_ref().is_none_or(|engine| event.kind.engine() == Some(engine))
    }
}

/// The service; watch admission is `ctx.watch_stats` (`watch.watchers_max`).
pub struct EventApi {
    pub(crate) ctx: ApiContext,
}

impl EventApi {
    /// Checks the start revision against this node's history, after a
    /// linearizable barrier when it looks like the future (a lagging node
    /// must not refuse a revision the cluster already has).
    async fn start_revision(call: &Call<'_>, from: u64) -> Result<u64, ApiError> {
        let mut state = call.read(pb::ReadConsistency::Serializable as i32).await?;
        if from == 0 {
            return Ok(state.revision().saturating_add(1));
        }
        if from > state.revision().saturating_add(1) {
            state = call.read(pb::ReadConsistency::Linearizable as i32).await?;
            let current_revision = state.revision();
            if from > current_revision.saturating_add(1) {
                return Err(ApiError::RevisionInFuture { revision: from, current_revision });
            }
        }
        let compacted_revision = state.kernel.history().compacted_through();
        if from <= compacted_revision {
            return Err(ApiError::Compacted { compacted_revision, resync_revision: state.revision() });
        }
        Ok(from)
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::event_service_server::EventService for EventApi {
    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.ctx
            .serve(request, READ_DEADLINE_DEFAULT_MS, |body, call| async move {
                let (from, filter) = convert::watch_filter(&body)?;
                // A tenant-scoped caller watches its own tenant's events, and
                // must say so: an unfiltered watch would be everyone's.
                if call.tenant_scope().is_some() {
                    call.check_tenant(filter.tenant.as_ref().map(Name::as_str).unwrap_or_default())?;
                }
                let permit = call.ctx().watch_stats.admit()?;
                let start = Self::start_revision(&call, from).await?;
                let progress_interval = progress_interval(body.progress_interval_ms);
                let actor = call.principal().map(|principal| principal.actor.clone());
                Ok(start_pump(call.ctx().clone(), permit, start, filter, progress_interval, actor))
            })
            .await
    }

    async fn publish(
        &self,
        request: Request<pb::PublishEventRequest>,
    ) -> Result<Response<pb::PublishEventResponse>, Status> {
        self.ctx
            .serve(request, WRITE_DEADLINE_DEFAULT_MS, |body, call| async move {
                let (mut command, idempotency_key) = convert::publish_event(body)?;
                // A tenant-scoped caller's events are its tenant's: stamped
                // when it names none, refused when it names another.
                if let (Some(scope), Command::PublishEvent { tenant, .. }) = (call.tenant_scope(), &mut command) {
                    match tenant {
                        Some(named) => call.check_tenant(named.as_str())?,
                        None => *tenant = Some(scope.clone()),
                    }
                }
                call.write(command, idempotency_key, |outcome| match outcome {
                    Outcome::EventPublished { revision } => {
                        Some(pb::PublishEventResponse { revision: *revision, is_replay: call.is_replay() })
                    }
                    _ => None,
                })
                .await
            })
            .await
    }
}

fn progress_interval(requested_ms: u32) -> Duration {
    let ms = match u64::from(requested_ms) {
        0 => WATCH_PROGRESS_INTERVAL_MS_DEFAULT,
        ms => ms.clamp(WATCH_PROGRESS_INTERVAL_MS_MIN, WATCH_PROGRESS_INTERVAL_MS_MAX),
    };
    Duration::from_millis(ms)
}

/// Spawns the pump for one watcher and returns its stream: the messages,
/// then the pump's closing error if it ended with one.
fn start_pump(
    ctx: ApiContext,
    permit: OwnedSemaphorePermit,
    start: u64,
    filter: WatchFilter,
    progress_interval: Duration,
    actor: Option<keel_kernel::token::Actor>,
) -> WatchStream {
    let queue = WatchQueue::new(ctx.watch_stats.budget.clone());
    let stats = Arc::clone(&ctx.watch_stats);
    let answering = ctx.clone();
    stats.active.fetch_add(1, Ordering::Relaxed);
    let pump = Pump { ctx, queue: Arc::clone(&queue), cursor: start, filter, progress_interval, actor };
    tokio::spawn(async move {
        let _permit = permit;
        let queue = Arc::clone(&pump.queue);
        let result = pump.run().await;
        stats.active.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(()) => queue.close(None),
            Err(error) => {
                if matches!(error, ApiError::WatcherTooSlow { .. }) {
                    stats.cut_off_total.fetch_add(1, Ordering::Relaxed);
                }
                // Drops whatever was queued now, even if the client keeps the
                // stream open without reading; the status ends the stream.
                queue.close(Some(answering.fail(error)));
            }
        }
    });
    let reader = ReaderGuard(queue);
    Box::pin(futures::stream::unfold(reader, |reader| async move {
        let item = reader.0.pop().await?;
        Some((item, reader))
    }))
}

/// One watcher's cursor into the history and its outgoing queue.
struct Pump {
    ctx: ApiContext,
    queue: Arc<WatchQueue>,
    /// Next revision to deliver.
    cursor: u64,
    filter: WatchFilter,
    progress_interval: Duration,
    /// The watcher's caller: re-checked whenever the pump wakes, so a stream
    /// ends (UNAUTHENTICATED) once its token is revoked or expires.
    actor: Option<keel_kernel::token::Actor>,
}

impl Pump {
    /// Fails when the watcher's token no longer holds on this member.
    fn check_actor(&self) -> Result<(), ApiError> {
        let Some(actor) = &self.actor else {
            return Ok(());
        };
        let now_ms = self.ctx.replica.clock.wall_now_ms();
        let state = self.ctx.replica.shared.read();
        keel_kernel::token::check_actor(actor, state.kernel.trust(), now_ms)
            .map_err(|error| ApiError::Rejected(keel_kernel::Rejection::Token(error)))
    }

    async fn run(mut self) -> Result<(), ApiError> {
        let mut applied_changes = self.ctx.replica.shared.applied_changes();
        let first = pb::WatchResponse {
            events: Vec::new(),
            progress_revision: self.cursor.saturating_sub(1),
            start_revision: self.cursor,
        };
        if !self.send(|_| Ok(Some(first))).await? {
            return Ok(());
        }
        let mut last_sent = Instant::now();
        loop {
            self.check_actor()?;
            if has_events_since(&self.ctx.replica.shared, self.cursor) {
                // Room first, then the batch: a batch waiting for room is
                // already counted against the watcher and the node.
                let filter = self.filter.clone();
                let shared = Arc::clone(&self.ctx.replica.shared);
                let mut next_cursor = self.cursor;
                let mut has_events = false;
                let is_read = self
                    .send(|cursor| {
                        let (events, next) = collect(&shared, cursor, &filter)?;
                        next_cursor = next;
                        has_events = !events.is_empty();
                        Ok(has_events.then(|| pb::WatchResponse {
                            events,
                            progress_revision: next.saturating_sub(1),
                            start_revision: 0,
                        }))
                    })
                    .await?;
                let has_moved = next_cursor != self.cursor;
                self.cursor = next_cursor;
                if !is_read {
                    return Ok(());
                }
                if has_events {
                    last_sent = Instant::now();
                }
                if has_moved {
                    // A full batch may have left more behind it: look again before waiting.
                    continue;
                }
            }
            let idle_left = self.progress_interval.saturating_sub(last_sent.elapsed());
            if idle_left.is_zero() {
                let progress_revision = self.cursor.saturating_sub(1);
                let progress = pb::WatchResponse { events: Vec::new(), progress_revision, start_revision: 0 };
                if !self.send(|_| Ok(Some(progress))).await? {
                    return Ok(());
                }
                last_sent = Instant::now();
                continue;
            }
            tokio::select! {
                changed = applied_changes.changed() => {
                    if changed.is_err() {
                        return Err(ReplicaError::NodeUnavailable { detail: "the state machine stopped".into() }.into());
                    }
                }
                () = tokio::time::sleep(idle_left) => {}
                () = self.queue.reader_gone() => return Ok(()),
            }
        }
    }

    /// Waits for room, then builds the message with `build` (from the
    /// cursor) and queues it (`None`: nothing to send). Whether the stream is
    /// still read (false: the client left). A watcher whose queue stays full
    /// (in its own bytes or the node's) is cut off.
    async fn send(
        &self,
        build: impl FnOnce(u64) -> Result<Option<pb::WatchResponse>, ApiError>,
    ) -> Result<bool, ApiError> {
        let room = match self.queue.reserve(Duration::from_millis(WATCH_SEND_TIMEOUT_MS)).await {
            Ok(room) => room,
            Err(PushRefused::Closed) => return Ok(false),
            Err(PushRefused::Full) => {
                tracing::warn!(next_revision = self.cursor, "watcher cut off: it stopped reading");
                return Err(ApiError::WatcherTooSlow { next_revision: self.cursor });
            }
        };
        match build(self.cursor)? {
            Some(message) => Ok(self.queue.push(message, room).is_ok()),
            None => Ok(true),
        }
    }
}

/// Whether the history holds anything at or after `cursor` (cheap: one
/// lookup in the published state).
fn has_events_since(shared: &SharedState, cursor: u64) -> bool {
    shared.read().kernel.history().since(cursor).next().is_some()
}

/// The next batch for a watcher at `cursor`: matching events (whole
/// revisions, bounded) and the cursor after them. Fails with `COMPACTED`
/// when the history no longer holds `cursor`.
fn collect(shared: &SharedState, cursor: u64, filter: &WatchFilter) -> Result<(Vec<pb::Event>, u64), ApiError> {
    let state = shared.read();
    let history = state.kernel.history();
    let compacted_revision = history.compacted_through();
    if cursor <= compacted_revision {
        return Err(ApiError::Compacted { compacted_revision, resync_revision: state.revision() });
    }
    let mut events = Vec::new();
    let mut bytes = 0usize;
    let mut last_revision = None;
    for event in history.since(cursor) {
        let is_full = events.len() >= WATCH_BATCH_EVENTS_MAX || bytes >= WATCH_BATCH_BYTES_MAX;
        if is_full && last_revision != Some(event.revision) {
            // Stop at a revision boundary, so resuming at it repeats nothing.
            return Ok((events, event.revision));
        }
        last_revision = Some(event.revision);
        if filter.matches(event) {
            let event = convert::event_to_pb(event);
            bytes = bytes.saturating_add(event.payload.len());
            events.push(event);
        }
    }
    Ok((events, state.revision().saturating_add(1).max(cursor)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_kernel::EventKind;

    fn name(value: &str) -> Name {
        Name::parse("name", value).expect("a valid name")
    }

    #[test]
    fn filters_combine_kind_tenant_and_engine() {
        let created = Event {
            revision: 1,
            time_ms: 0,
            kind: EventKind::TenantCreated { tenant_id: name("acme") },
            caused_by: None,
        };
        let published = Event {
            revision: 2,
            time_ms: 0,
            kind: EventKind::EngineVersionPublished { engine: name("billing"), version: "1.0.0".into() },
            caused_by: None,
        };
        assert!(WatchFilter::default().matches(&created));
        let tenant = WatchFilter { tenant: Some(name("acme")), ..WatchFilter::default() };
        assert!(tenant.matches(&created));
        assert!(!tenant.matches(&published));
        let kinds = WatchFilter { kinds: ["ENGINE_VERSION_PUBLISHED"].into(), ..WatchFilter::default() };
        assert!(!kinds.matches(&created));
        assert!(kinds.matches(&published));
        let engine = WatchFilter { engine: Some(name("other")), ..kinds };
        assert!(!engine.matches(&published));
    }

    #[test]
    fn progress_intervals_are_clamped() {
        assert_eq!(progress_interval(0), Duration::from_millis(WATCH_PROGRESS_INTERVAL_MS_DEFAULT));
        assert_eq!(progress_interval(1), Duration::from_millis(WATCH_PROGRESS_INTERVAL_MS_MIN));
        assert_eq!(progress_interval(u32::MAX), Duration::from_millis(WATCH_PROGRESS_INTERVAL_MS_MAX));
    }
}
