//! [`KeelClient`]'s `keel.v1.EventService` calls: publishing user events and
//! a resuming [`EventWatch`].
//!
//! ```text
//!  watch(options) ─► EventWatch{next_revision = from}
//!  next() ─► [no stream? open Watch(from = next_revision) on a reachable member]
//!          ─► message ─► events: next_revision = last revision + 1 ─► Events
//!                      └ progress: next_revision = progress + 1   ─► Progress
//!          ─► stream broke (transport, node stopping, stream ended, WATCHER_TOO_SLOW):
//!             mark the endpoint failed, back off, reopen from next_revision
//!             (at most WATCH_RECONNECTS_MAX times in a row)
//! ```
//!
//! Every node holds the same replicated event history, so a watch resumed on
//! another node from `next_revision` continues exactly where it broke off: no
//! gap, no duplicate. `COMPACTED`, `REVISION_IN_FUTURE` and bad filters are
//! returned to the caller, never retried (after `COMPACTED`: read the state,
//! then watch from the revision the read reports + 1).

use crate::client::KeelClient;
use crate::error::ClientError;
use crate::limits::{GRPC_MESSAGE_BYTES_MAX, WATCH_RECONNECTS_MAX};
use crate::retry::{self, RetryAction};
use crate::routing::Route;
use crate::served::Served;
use keel_proto::v1 as pb;
use keel_proto::v1::event_service_client::EventServiceClient;
use std::time::Duration;
use tonic::transport::Channel;

pub(crate) fn event_service(channel: Channel) -> EventServiceClient<Channel> {
    EventServiceClient::new(channel)
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
}

/// What to watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// First revision to deliver; 0 means "changes from now on".
    pub from_revision: u64,
    /// Only these kinds (e.g. `TENANT_CREATED`); empty means all.
    pub kinds: Vec<String>,
    /// Only events concerning this tenant.
    pub tenant: Option<String>,
    /// Only events concerning this engine.
    pub engine: Option<String>,
    /// Idle time before the server sends progress; `None`: the server default.
    pub progress_interval: Option<Duration>,
}

/// One step of a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    /// Events, in revision order.
    Events(Vec<pb::Event>),
    /// Nothing more matched up to and including this revision.
    Progress(u64),
}

/// A watch that survives node failures: see the module docs.
pub struct EventWatch {
    client: KeelClient,
    options: WatchOptions,
    stream: Option<tonic::Streaming<pb::WatchResponse>>,
    /// The next revision this watch must deliver.
    next_revision: u64,
    /// Reconnects since the last message.
    n_reconnects: u32,
    /// Total reconnects over the watch's life.
    n_reconnects_total: u64,
}

impl KeelClient {
    /// `EventService.Publish`. An empty `idempotency_key` is replaced by a
    /// fresh one, so the call's own retries store the event once.
    pub async fn publish_event(
        &self,
        mut request: pb::PublishEventRequest,
    ) -> Result<Served<pb::PublishEventResponse>, ClientError> {
        request.idempotency_key = self.randomness.key_or_new(std::mem::take(&mut request.idempotency_key));
        self.call("Publish", Route::Leader, request, |channel, request| async move {
            event_service(channel).publish(request).await
        })
        .await
    }

    /// Starts a watch; nothing is sent until the first [`EventWatch::next`].
    pub fn watch(&self, options: WatchOptions) -> EventWatch {
        EventWatch {
            client: self.clone(),
            next_revision: options.from_revision,
            options,
            stream: None,
            n_reconnects: 0,
            n_reconnects_total: 0,
        }
    }
}

impl EventWatch {
    /// The next revision the watch will deliver (0 before the first message
    /// of a watch "from now").
    pub fn next_revision(&self) -> u64 {
        self.next_revision
    }

    /// How many times the stream was reopened.
    pub fn reconnects(&self) -> u64 {
        self.n_reconnects_total
    }

    /// Waits for the next events or progress, reopening the stream where it
    /// broke. Errors that a reconnect cannot fix are returned.
    pub async fn next(&mut self) -> Result<WatchItem, ClientError> {
        loop {
            let error = match self.stream.as_mut() {
                None => match self.open().await {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        continue;
                    }
                    Err(error) => error,
                },
                Some(stream) => match stream.message().await {
                    Ok(Some(message)) => {
                        self.n_reconnects = 0;
                        if let Some(item) = self.accept(message) {
                            return Ok(item);
                        }
                        continue;
                    }
                    Ok(None) => ClientError::Transport {
                        endpoint: String::new(),
                        code: tonic::Code::Unavailable,
                        detail: "the watch stream ended".into(),
                    },
                    Err(status) => ClientError::from_status(&status, ""),
                },
            };
            self.stream = None;
            // A cut-off for reading too slowly is resumed like a broken
            // stream: the caller is reading again, and `next_revision` says
            // exactly what it has seen.
            let is_cut_off = error.reason() == pb::ErrorReason::WatcherTooSlow.as_str_name();
            if !is_cut_off && retry::retry_action(&error) == RetryAction::Stop {
                return Err(error);
            }
            if self.n_reconnects >= WATCH_RECONNECTS_MAX {
                return Err(error);
            }
            let delay = retry::retry_delay(self.n_reconnects, self.client.randomness.jitter(), &error);
            self.n_reconnects += 1;
            self.n_reconnects_total += 1;
            tokio::time::sleep(delay).await;
        }
    }

    /// Opens the stream at `next_revision` on a member the client can reach.
    async fn open(&mut self) -> Result<tonic::Streaming<pb::WatchResponse>, ClientError> {
        let request = pb::WatchRequest {
            from_revision: self.next_revision,
            kinds: self.options.kinds.clone(),
            tenant: self.options.tenant.clone().unwrap_or_default(),
            engine: self.options.engine.clone().unwrap_or_default(),
            progress_interval_ms: self
                .options
                .progress_interval
                .map_or(0, |interval| u32::try_from(interval.as_millis()).unwrap_or(u32::MAX)),
        };
        let served = self
            .client
            .call("Watch", Route::Nearby, request, |channel, request| async move {
                event_service(channel).watch(request).await
            })
            .await?;
        Ok(served.value)
    }

    /// Advances `next_revision` past `message`; `None` for a message that
    /// tells nothing new (the stream's opening, or a repeated progress).
    fn accept(&mut self, message: pb::WatchResponse) -> Option<WatchItem> {
        if message.start_revision > 0 {
            // A watch "from now" learns its start here.
            self.next_revision = self.next_revision.max(message.start_revision);
            return None;
        }
        if let Some(last) = message.events.last() {
            self.next_revision = self.next_revision.max(last.revision.saturating_add(1));
        }
        self.next_revision = self.next_revision.max(message.progress_revision.saturating_add(1));
        if message.events.is_empty() {
            return Some(WatchItem::Progress(message.progress_revision));
        }
        Some(WatchItem::Events(message.events))
    }
}
