//! [`LeaderClock`]: the time a leader stamps on entries, bounded so that no
//! member — however wrong its wall clock — can move the replicated clock far
//! ahead.
//!
//! ```text
//!  every CLOCK_CHECK_INTERVAL_MS, on every member:
//!     ask each voter its wall clock (peer Clock RPC) ─► a majority within
//!     clock_skew_max_ms of ours (we count ourselves)? ─► yes: anchor = (wall now, monotonic now)
//!                                                     ─► no:  distrusted (leader: hand over)
//!  stamp(replicated clock):
//!     distrusted ─► refuse (LEADER_CLOCK_SKEW)
//!     hi = anchor + monotonic time since the anchor + clock_skew_max_ms
//!     stamp = clamp(wall now, lo = previous stamp and the replicated clock, hi)
//! ```
//!
//! The anchor is a moment at which a majority of voters agreed on the time
//! (before the first check: the replicated clock as seen here). From it the stamp may
//! advance only as fast as this node's monotonic clock, plus the skew bound:
//! a leader whose wall clock jumps ten years ahead stamps at most
//! `clock_skew_max_ms` past the agreed time, and the next check finds it
//! out of agreement, so it stops stamping and hands leadership over.
//! One voter alone is its own majority: a single node trusts its clock.
//! Both clocks are read through [`Clock`] (the OS, or a simulation's).

use crate::clock::{Clock, SystemClock};
use std::sync::{Arc, Mutex};

/// A leader's stamping clock. Shared by the API (stamps) and the clock check.
#[derive(Debug)]
pub struct LeaderClock {
    skew_max_ms: u64,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Agreed time and when it was agreed (the clock's monotonic ms).
    anchor: Option<(u64, u64)>,
    /// The last stamp handed out.
    last_stamp_ms: u64,
    /// Whether the last clock check found a majority in agreement.
    is_distrusted: bool,
}

/// Why this node may not stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this node's wall clock disagrees with a majority of the voters by more than {skew_max_ms} ms")]
pub struct ClockDisagrees {
    /// The bound.
    pub skew_max_ms: u64,
}

/// What one clock check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockAgreement {
    /// A majority of voters (this node included) are within the bound.
    Agrees,
    /// A majority of the voters answered outside the bound.
    Disagrees,
    /// Too few voters answered to tell.
    Unknown,
}

impl LeaderClock {
    /// A stamping clock over the OS clocks allowing `skew_max_ms` between
    /// members; `offset_ms` shifts this node's wall clock (tests of a wrong
    /// clock only).
    pub fn new(skew_max_ms: u64, offset_ms: i64) -> LeaderClock {
        LeaderClock::with_clock(skew_max_ms, Arc::new(SystemClock::new(offset_ms)))
    }

    /// A stamping clock reading `clock` (the simulation seam).
    pub fn with_clock(skew_max_ms: u64, clock: Arc<dyn Clock>) -> LeaderClock {
        LeaderClock { skew_max_ms, clock, inner: Mutex::default() }
    }

    /// The bound between members' clocks.
    pub fn skew_max_ms(&self) -> u64 {
        self.skew_max_ms
    }

    /// This node's wall clock, Unix ms.
    pub fn wall_now_ms(&self) -> u64 {
        self.clock.wall_ms()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the last check found this node's clock out of agreement.
    pub fn is_distrusted(&self) -> bool {
        self.inner().is_distrusted
    }

    /// Records a clock check. Agreement re-anchors at this node's wall
    /// clock; disagreement distrusts it until a later check agrees.
    pub fn record(&self, agreement: ClockAgreement) {
        let now_ms = self.wall_now_ms();
        let mut inner = self.inner();
        match agreement {
            ClockAgreement::Agrees => {
                if inner.is_distrusted {
                    tracing::info!("this node's clock agrees with the voters again");
                }
                inner.is_distrusted = false;
                inner.anchor = Some((now_ms, self.clock.monotonic_ms()));
            }
            ClockAgreement::Disagrees => {
                if !inner.is_distrusted {
                    tracing::error!(
                        skew_max_ms = self.skew_max_ms,
                        "this node's wall clock disagrees with a majority of the voters: it will not lead"
                    );
                }
                inner.is_distrusted = true;
            }
            ClockAgreement::Unknown => {}
        }
    }

    /// The next stamp, given the replicated clock (the last applied entry's
    /// time). Never below the previous stamp or the replicated clock; never
    /// more than the skew bound past the agreed time carried forward.
    pub fn stamp(&self, replicated_ms: u64) -> Result<u64, ClockDisagrees> {
        let wall_ms = self.wall_now_ms();
        let mut inner = self.inner();
        if inner.is_distrusted {
            return Err(ClockDisagrees { skew_max_ms: self.skew_max_ms });
        }
        let now = self.clock.monotonic_ms();
        // Before the first check, the replicated clock is the agreed time
        // (every stamp in it was bounded). After, it is only a floor: were it
        // an anchor, each entry could ratchet the clock another skew ahead.
        if replicated_ms > 0 && inner.anchor.is_none() {
            inner.anchor = Some((replicated_ms, now));
        }
        let projected = |anchor: Option<(u64, u64)>| anchor.map(|(ms, at)| ms.saturating_add(now.saturating_sub(at)));
        let floor_ms = inner.last_stamp_ms.max(replicated_ms);
        let stamp = match projected(inner.anchor) {
            Some(projected) => wall_ms.min(projected.saturating_add(self.skew_max_ms)),
            // Nothing agreed yet and an empty log: this clock is all there is.
            None => wall_ms,
        }
        .max(floor_ms);
        inner.last_stamp_ms = stamp;
        Ok(stamp)
    }
}

/// Judges a clock check: `offsets_ms` are the other voters' clocks minus
/// ours (`None`: no answer); this node counts as one voter in agreement.
pub fn agreement(offsets_ms: &[Option<i64>], skew_max_ms: u64) -> ClockAgreement {
    let voters = offsets_ms.len() + 1;
    let majority = voters / 2 + 1;
    let within = 1 + offsets_ms.iter().flatten().filter(|offset| offset.unsigned_abs() <= skew_max_ms).count();
    let outside = offsets_ms.iter().flatten().filter(|offset| offset.unsigned_abs() > skew_max_ms).count();
    if within >= majority {
        ClockAgreement::Agrees
    } else if outside >= majority {
        // A majority is out of our bound: it is this clock that is off
        // (one peer against us, with the rest silent, decides nothing).
        ClockAgreement::Disagrees
    } else {
        ClockAgreement::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_YEARS_MS: i64 = 10 * 365 * 24 * 60 * 60 * 1000;

    #[test]
    fn a_clock_far_ahead_cannot_move_the_stamp_past_the_agreed_time() {
        let honest = LeaderClock::new(5_000, 0);
        let agreed_ms = honest.wall_now_ms();
        let ahead = LeaderClock::new(5_000, TEN_YEARS_MS);
        // The replicated clock is the agreed time; the wall clock is ten years on.
        let stamp = ahead.stamp(agreed_ms).expect("not yet distrusted");
        assert!(stamp <= agreed_ms + 5_000 + 1_000, "stamp {stamp} ran ahead of {agreed_ms}");
        // Each stamp applied becomes the replicated clock: it must not ratchet.
        let mut replicated_ms = stamp;
        for _ in 0..100 {
            replicated_ms = ahead.stamp(replicated_ms).expect("stamp");
            assert!(replicated_ms <= agreed_ms + 5_000 + 1_000, "repeated stamps must not ratchet forward");
        }
        ahead.record(ClockAgreement::Disagrees);
        assert_eq!(ahead.stamp(agreed_ms), Err(ClockDisagrees { skew_max_ms: 5_000 }));
    }

    #[test]
    fn stamps_never_go_backwards_and_follow_an_agreeing_clock() {
        let clock = LeaderClock::new(5_000, 0);
        clock.record(ClockAgreement::Agrees);
        let first = clock.stamp(0).expect("stamp");
        assert!(first.abs_diff(clock.wall_now_ms()) < 1_000);
        let later = clock.stamp(first + 60_000).expect("stamp");
        assert_eq!(later, first + 60_000, "never below the replicated clock");
        assert!(clock.stamp(0).expect("stamp") >= later, "never below the previous stamp");
    }

    #[test]
    fn on_a_manual_clock_stamps_follow_monotonic_time_not_wall_jumps() {
        let time = Arc::new(crate::clock::ManualClock::at(1_000_000));
        let clock = LeaderClock::with_clock(5_000, Arc::clone(&time) as Arc<dyn Clock>);
        clock.record(ClockAgreement::Agrees);
        assert_eq!(clock.stamp(0), Ok(1_000_000));
        time.advance(250);
        assert_eq!(clock.stamp(0), Ok(1_000_250), "the wall clock, within the bound");
        // The wall clock jumps a year ahead; monotonic time moved 10 ms.
        time.set_wall_ms(1_000_250 + TEN_YEARS_MS as u64 / 10);
        time.advance(10);
        assert_eq!(clock.stamp(0), Ok(1_000_000 + 260 + 5_000), "agreed time + elapsed + the skew bound");
        // The wall clock jumps back: stamps never go backwards.
        time.set_wall_ms(900_000);
        assert_eq!(clock.stamp(0), Ok(1_005_260));
    }

    #[test]
    fn agreement_needs_a_majority_within_the_bound() {
        assert_eq!(agreement(&[], 5_000), ClockAgreement::Agrees, "a single voter agrees with itself");
        assert_eq!(agreement(&[Some(10), Some(-4_000)], 5_000), ClockAgreement::Agrees);
        assert_eq!(agreement(&[Some(10), None], 5_000), ClockAgreement::Agrees);
        assert_eq!(agreement(&[Some(TEN_YEARS_MS), Some(TEN_YEARS_MS)], 5_000), ClockAgreement::Disagrees);
        assert_eq!(agreement(&[Some(-TEN_YEARS_MS), None], 5_000), ClockAgreement::Unknown);
        assert_eq!(agreement(&[None, None], 5_000), ClockAgreement::Unknown);
    }
}
