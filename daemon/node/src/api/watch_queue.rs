//! [`WatchQueue`]: the messages between one watcher's pump and its stream,
//! bounded in bytes per watcher and, through a node-wide semaphore, per node.
//!
//! ```text
//!  pump ─push(message)─► wait for room: ≤ WATCH_WATCHER_BUFFER_BYTES_MAX here
//!                                      and bytes from the node's WATCH_NODE_BUFFER_BYTES_MAX
//!                        (no room for WATCH_SEND_TIMEOUT_MS ─► cut off)
//!  stream ◄─pop── message (its bytes go back to the watcher and the node)
//!  cut off / closed ─► queue emptied at once (every byte back), then the closing status
//! ```
//!
//! Why not an mpsc channel: a channel bounds messages, not bytes, and the
//! messages a cut-off watcher left queued stay allocated for as long as its
//! client keeps the stream open. Here `close` drops them immediately.

use crate::limits::{
    WATCH_MESSAGE_BYTES_MAX, WATCH_NODE_BUFFER_BYTES_MAX, WATCH_WATCHER_BUFFER_BYTES_MAX,
    WATCH_WATCHER_BUFFER_MESSAGES_MAX,
};
use keel_proto::v1 as pb;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

const _: () = assert!(WATCH_MESSAGE_BYTES_MAX <= WATCH_WATCHER_BUFFER_BYTES_MAX);
const _: () = assert!(WATCH_WATCHER_BUFFER_BYTES_MAX <= WATCH_NODE_BUFFER_BYTES_MAX);

/// The node-wide byte budget of watch queues.
#[derive(Debug, Clone)]
pub struct WatchBudget {
    bytes: Arc<Semaphore>,
}

impl Default for WatchBudget {
    fn default() -> Self {
        WatchBudget { bytes: Arc::new(Semaphore::new(WATCH_NODE_BUFFER_BYTES_MAX)) }
    }
}

impl WatchBudget {
    /// Bytes queued for watchers on this node now.
    pub fn queued_bytes(&self) -> usize {
        WATCH_NODE_BUFFER_BYTES_MAX.saturating_sub(self.bytes.available_permits())
    }
}

/// Why a push did not queue its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushRefused {
    /// The stream's reader left.
    Closed,
    /// No room for `WATCH_SEND_TIMEOUT_MS`: the watcher does not read.
    Full,
}

/// Room for one message, taken by [`WatchQueue::reserve`].
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
}

/// One watcher's queue; the pump and the stream each hold an `Arc`.
#[derive(Debug)]
pub struct WatchQueue {
    state: Mutex<QueueState>,
    readable: Notify,
    writable: Notify,
    budget: WatchBudget,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<(pb::WatchResponse, usize, OwnedSemaphorePermit)>,
    bytes: usize,
    closing: Option<Status>,
    is_closed: bool,
    is_reader_gone: bool,
}

impl WatchQueue {
    /// An empty queue charging `budget`.
    pub fn new(budget: WatchBudget) -> Arc<WatchQueue> {
        Arc::new(WatchQueue { state: Mutex::default(), readable: Notify::new(), writable: Notify::new(), budget })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Room for one message of at most `WATCH_MESSAGE_BYTES_MAX`, waited for
    /// at most `timeout`: a place in this watcher's queue and the bytes from
    /// the node's budget. Taken before the message is built, so a message
    /// waiting for room is already counted.
    pub async fn reserve(&self, timeout: Duration) -> Result<Reservation, PushRefused> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let writable = self.writable.notified();
            {
                let state = self.state();
                if state.is_reader_gone || state.is_closed {
                    return Err(PushRefused::Closed);
                }
                let has_room = state.items.is_empty()
                    || (state.bytes + WATCH_MESSAGE_BYTES_MAX <= WATCH_WATCHER_BUFFER_BYTES_MAX
                        && state.items.len() < WATCH_WATCHER_BUFFER_MESSAGES_MAX);
                if has_room {
                    break;
                }
            }
            if tokio::time::timeout_at(deadline, writable).await.is_err() {
                return Err(PushRefused::Full);
            }
        }
        let permits = u32::try_from(WATCH_MESSAGE_BYTES_MAX).unwrap_or(u32::MAX);
        let acquire = Arc::clone(&self.budget.bytes).acquire_many_owned(permits);
        match tokio::time::timeout_at(deadline, acquire).await {
            Ok(Ok(permit)) => Ok(Reservation { permit }),
            Ok(Err(_closed)) => Err(PushRefused::Closed),
            Err(_elapsed) => Err(PushRefused::Full),
        }
    }

    /// Queues `message` in the room `reservation` holds (its bytes beyond the
    /// message's go back to the node at once).
    pub fn push(&self, message: pb::WatchResponse, reservation: Reservation) -> Result<(), PushRefused> {
        let Reservation { mut permit } = reservation;
        let bytes = prost::Message::encoded_len(&message).min(WATCH_MESSAGE_BYTES_MAX);
        let kept = permit.split(bytes).unwrap_or(permit);
        let mut state = self.state();
        if state.is_reader_gone || state.is_closed {
            return Err(PushRefused::Closed);
        }
        state.bytes += bytes;
        state.items.push_back((message, bytes, kept));
        drop(state);
        self.readable.notify_one();
        Ok(())
    }

    /// Ends the stream: drops every queued message now (their bytes go back
    /// to the watcher and the node) and, if `closing` is given, ends the
    /// stream with it.
    pub fn close(&self, closing: Option<Status>) {
        let dropped = {
            let mut state = self.state();
            state.is_closed = true;
            state.closing = closing;
            state.bytes = 0;
            std::mem::take(&mut state.items)
        };
        drop(dropped);
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    /// Whether the stream's reader left.
    pub fn is_reader_gone(&self) -> bool {
        self.state().is_reader_gone
    }

    /// Resolves when the stream's reader leaves.
    pub async fn reader_gone(&self) {
        loop {
            let writable = self.writable.notified();
            if self.is_reader_gone() {
                return;
            }
            writable.await;
        }
    }

    /// The next item for the stream: a message, the closing status, or the end.
    pub async fn pop(&self) -> Option<Result<pb::WatchResponse, Status>> {
        loop {
            let readable = self.readable.notified();
            {
                let mut state = self.state();
                if let Some((message, bytes, permit)) = state.items.pop_front() {
                    state.bytes -= bytes;
                    drop(state);
                    drop(permit);
                    self.writable.notify_waiters();
                    return Some(Ok(message));
                }
                if state.is_closed {
                    return state.closing.take().map(Err);
                }
            }
            readable.await;
        }
    }
}

/// Held by the stream: tells the pump when the reader is gone.
#[derive(Debug)]
pub struct ReaderGuard(pub Arc<WatchQueue>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let dropped = {
            let mut state = self.0.state();
            state.is_reader_gone = true;
            state.bytes = 0;
            std::mem::take(&mut state.items)
        };
        drop(dropped);
        self.0.writable.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(bytes: usize) -> pb::WatchResponse {
        let event = pb::Event { payload: vec![7; bytes], ..Default::default() };
        pb::WatchResponse { events: vec![event], progress_revision: 1, start_revision: 0 }
    }

    #[tokio::test]
    async fn bytes_are_bounded_per_watcher_and_released_when_cut_off() {
        let budget = WatchBudget::default();
        let queue = WatchQueue::new(budget.clone());
        let short = Duration::from_millis(50);
        let room = queue.reserve(short).await.expect("an empty queue has room");
        queue.push(message(1024 * 1024), room).expect("queued");
        assert!(matches!(queue.reserve(short).await, Err(PushRefused::Full)));
        assert!(budget.queued_bytes() >= 1024 * 1024 && budget.queued_bytes() < WATCH_MESSAGE_BYTES_MAX);
        queue.close(Some(Status::resource_exhausted("cut off")));
        assert_eq!(budget.queued_bytes(), 0, "a cut-off watcher's bytes go back at once");
        assert!(matches!(queue.pop().await, Some(Err(_))));
        assert!(queue.pop().await.is_none());
    }

    #[tokio::test]
    async fn the_node_budget_bounds_all_watchers_together() {
        let budget = WatchBudget::default();
        let short = Duration::from_millis(50);
        let mut queues = Vec::new();
        let mut refused = 0;
        for _ in 0..80 {
            let queue = WatchQueue::new(budget.clone());
            match queue.reserve(short).await {
                Ok(room) => queue.push(message(1024 * 1024), room).expect("queued"),
                Err(_) => refused += 1,
            }
            queues.push(queue);
        }
        assert!(refused > 0 && budget.queued_bytes() <= WATCH_NODE_BUFFER_BYTES_MAX);
        let first = ReaderGuard(Arc::clone(&queues[0]));
        drop(first);
        assert!(budget.queued_bytes() < WATCH_NODE_BUFFER_BYTES_MAX, "a gone reader's bytes go back");
    }
}
