//! [`EventHistory`]: the retained, replicated tail of every event `apply` made.
//!
//! ```text
//!  apply(revision R) ──events──► push (revision order) ──► retain(at_ms)
//!                                                            │ drop oldest while over
//!                                                            │ count / bytes / age
//!                                                            ▼
//!                                         compacted_through = highest dropped revision
//!  Watch(from) on any node: from ≤ compacted_through ──► COMPACTED (resync)
//!                           else events with revision ≥ from, in order
//! ```
//!
//! The history is part of [`crate::KernelState`], so it is in every snapshot
//! and covered by the digest: every node retains exactly the same events, a
//! node that installed a snapshot can serve any retained revision, and
//! compaction is decided by the log (leader-stamped time, fixed bounds), not
//! by each node's disk.

use crate::event::Event;
use crate::limits::{EVENT_HISTORY_AGE_MS_MAX, EVENT_HISTORY_BYTES_MAX, EVENT_HISTORY_EVENTS_MAX};
use crate::persistent::Seq;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::sync::Arc;

/// The retained events, oldest first, with the compaction floor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventHistory {
    /// Persistent, like every large part of `KernelState`; each event behind
    /// an `Arc`, so the chunk a write copies after a publish is 64 pointers,
    /// not 64 events. Encoded as the events themselves.
    events: Seq<Arc<Event>>,
    /// Sum of [`crate::EventKind::charged_bytes`] over `events`.
    retained_bytes: u64,
    /// Highest revision whose events were dropped; 0 when none were.
    compacted_through: u64,
}

impl EventHistory {
    /// Appends the events of one applied entry (all of one revision, in order).
    pub(crate) fn push(&mut self, events: &[Event]) {
        for event in events {
            self.retained_bytes = self.retained_bytes.saturating_add(charged(event));
            self.events.push_back(Arc::new(event.clone()));
        }
    }

    /// Drops the oldest events while the history is over a bound, at `at_ms`.
    /// Whole revisions are dropped together, so a revision is either fully
    /// retained or compacted.
    pub(crate) fn retain(&mut self, at_ms: u64) {
        let oldest_kept_ms = at_ms.saturating_sub(EVENT_HISTORY_AGE_MS_MAX);
        while let Some(oldest) = self.events.front() {
            let is_over = self.events.len() > EVENT_HISTORY_EVENTS_MAX
                || self.retained_bytes > EVENT_HISTORY_BYTES_MAX as u64
                || oldest.time_ms < oldest_kept_ms;
            if !is_over {
                break;
            }
            let revision = oldest.revision;
            while self.events.front().is_some_and(|event| event.revision == revision) {
                if let Some(dropped) = self.events.pop_front() {
                    self.retained_bytes = self.retained_bytes.saturating_sub(charged(&dropped));
                }
            }
            self.compacted_through = self.compacted_through.max(revision);
        }
    }

    /// Highest revision whose events are no longer retained (0: none dropped).
    /// A watch may start at any revision above it.
    pub fn compacted_through(&self) -> u64 {
        self.compacted_through
    }

    /// Retained events with `revision >= from`, oldest first.
    pub fn since(&self, from: u64) -> impl Iterator<Item = &Event> {
        // Revisions never decrease along the history: the first at or above `from`.
        let start = self
            .events
            .binary_search_by(|event| if event.revision < from { Ordering::Less } else { Ordering::Greater })
            .unwrap_or_else(|index| index);
        self.events.focus().narrow(start..).into_iter().map(Arc::as_ref)
    }

    /// Number of retained events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is retained.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Bytes charged for the retained events.
    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes
    }
}

fn charged(event: &Event) -> u64 {
    u64::try_from(event.kind.charged_bytes()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn event(revision: u64, time_ms: u64) -> Event {
        Event { revision, time_ms, kind: EventKind::RootRotated { version: revision }, caused_by: None }
    }

    #[test]
    fn since_starts_at_the_first_event_at_or_after_the_revision() {
        let mut history = EventHistory::default();
        history.push(&[event(3, 0)]);
        history.push(&[event(5, 0), event(5, 0)]);
        history.push(&[event(9, 0)]);
        let revisions = |from| history.since(from).map(|event| event.revision).collect::<Vec<_>>();
        assert_eq!(revisions(0), vec![3, 5, 5, 9]);
        assert_eq!(revisions(4), vec![5, 5, 9]);
        assert_eq!(revisions(6), vec![9]);
        assert_eq!(revisions(10), Vec::<u64>::new());
    }

    #[test]
    fn count_bound_drops_whole_revisions_and_moves_the_floor() {
        let mut history = EventHistory::default();
        for revision in 1..=(EVENT_HISTORY_EVENTS_MAX as u64 + 2) {
            history.push(&[event(revision, 0)]);
            history.retain(0);
        }
        assert_eq!(history.len(), EVENT_HISTORY_EVENTS_MAX);
        assert_eq!(history.compacted_through(), 2);
        assert_eq!(history.since(0).next().map(|event| event.revision), Some(3));
    }

    #[test]
    fn age_bound_uses_the_entry_time() {
        let mut history = EventHistory::default();
        history.push(&[event(1, 1_000)]);
        history.push(&[event(2, 2_000)]);
        history.retain(1_000 + EVENT_HISTORY_AGE_MS_MAX);
        assert_eq!(history.compacted_through(), 0, "an event exactly at the bound is kept");
        history.retain(1_001 + EVENT_HISTORY_AGE_MS_MAX);
        assert_eq!(history.compacted_through(), 1);
        assert_eq!(history.len(), 1);
    }

    #[test]
    fn byte_bound_counts_payloads() {
        let mut history = EventHistory::default();
        let payload = vec![0u8; crate::limits::EVENT_PAYLOAD_BYTES_MAX];
        let topic = crate::Name::parse("topic", "t").expect("a valid name");
        let big = |revision| Event {
            revision,
            time_ms: 0,
            kind: EventKind::UserEvent { topic: topic.clone(), tenant: None, engine: None, payload: payload.clone() },
            caused_by: None,
        };
        let fits = EVENT_HISTORY_BYTES_MAX / big(0).kind.charged_bytes();
        for revision in 1..=(fits as u64 + 1) {
            history.push(&[big(revision)]);
            history.retain(0);
        }
        assert_eq!(history.len(), fits);
        assert!(history.retained_bytes() <= EVENT_HISTORY_BYTES_MAX as u64);
        assert_eq!(history.compacted_through(), 1);
    }
}
