//! [`Clock`]: where the node reads time on the stamping path — the seam a
//! simulation replaces. [`SystemClock`] reads the OS; [`ManualClock`] moves
//! only when told, so a test (or a deterministic simulation) decides what
//! every member's wall and monotonic clocks say.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A wall clock and a monotonic clock.
pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    /// Wall-clock time, Unix ms. May jump either way.
    fn wall_ms(&self) -> u64;
    /// Monotonic ms since an origin fixed for this clock; never decreases.
    fn monotonic_ms(&self) -> u64;
}

/// The operating system's clocks, the wall clock shifted by `offset_ms`
/// (tests of a member with a wrong clock only: `node.clock_offset_ms`).
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
    offset_ms: i64,
}

impl SystemClock {
    /// The OS clocks, the wall clock shifted by `offset_ms`.
    pub fn new(offset_ms: i64) -> SystemClock {
        SystemClock { origin: Instant::now(), offset_ms }
    }
}

impl Clock for SystemClock {
    fn wall_ms(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let now = i128::try_from(now).unwrap_or(i128::MAX).saturating_add(i128::from(self.offset_ms));
        u64::try_from(now.max(0)).unwrap_or(u64::MAX)
    }

    fn monotonic_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Clocks that move only when told: [`ManualClock::advance`] moves both,
/// [`ManualClock::set_wall_ms`] jumps the wall clock alone.
#[derive(Debug, Default)]
pub struct ManualClock {
    wall_ms: AtomicU64,
    monotonic_ms: AtomicU64,
}

impl ManualClock {
    /// Both clocks at `wall_ms` (monotonic at 0).
    pub fn at(wall_ms: u64) -> ManualClock {
        ManualClock { wall_ms: AtomicU64::new(wall_ms), monotonic_ms: AtomicU64::new(0) }
    }

    /// Time passes: both clocks move `ms` forward.
    pub fn advance(&self, ms: u64) {
        self.wall_ms.fetch_add(ms, Ordering::SeqCst);
        self.monotonic_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// The wall clock is set (as an operator or NTP would); monotonic time does not move.
    pub fn set_wall_ms(&self, wall_ms: u64) {
        self.wall_ms.store(wall_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn wall_ms(&self) -> u64 {
        self.wall_ms.load(Ordering::SeqCst)
    }

    fn monotonic_ms(&self) -> u64 {
        self.monotonic_ms.load(Ordering::SeqCst)
    }
}
