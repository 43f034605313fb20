//! Rate limits for admission: GCRA over several scopes at once, all charged
//! or none.
//!
//! ```text
//!  scope s: emission interval T = 60 s / calls_per_minute, tolerance τ = T · burst
//!  check(cost): new_tat = max(tat, now) + cost · T
//!               new_tat − now ≤ τ  → admitted (tat := new_tat), remaining = ⌊(τ − (new_tat − now)) / T⌋
//!               otherwise          → limited, retry after new_tat − now − τ
//!  every scope is checked first; only if all admit are their tats written
//! ```
//!
//! GCRA, not a fixed window (which admits 2× the limit across a boundary):
//! over any time t a scope admits at most `burst + t / T` calls.
//! [`LocalLimiter`] keeps the state in this process (the embedded default
//! when no Redis is configured); the Redis limiter (same math, one Lua
//! script) comes with the Redis deployment.

use crate::limits::ADMISSION_LOCAL_SCOPES_MAX;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One scope's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeLimit {
    /// `global`, `tenant:<id>`, `engine:<name>`, `tenant_engine:<id>/<name>`.
    pub key: String,
    /// Sustained rate; at least 1.
    pub calls_per_minute: u64,
    /// Calls admitted at once from idle; at least 1.
    pub burst: u64,
}

/// Room left in one scope after an admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remaining {
    /// The scope.
    pub scope: ScopeLimit,
    /// Calls that could be admitted at once now.
    pub remaining: u64,
}

/// Why a check did not admit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limited {
    /// This scope has no room for the cost.
    Exceeded {
        /// The most constrained scope.
        scope: ScopeLimit,
        /// When it has room again.
        retry_after: Duration,
    },
    /// The limiter's state is full (`ADMISSION_LOCAL_SCOPES_MAX` busy scopes).
    Full,
}

/// GCRA state of many scopes in this process.
#[derive(Debug)]
pub struct LocalLimiter {
    origin: Instant,
    /// Theoretical arrival time per scope, ns since `origin`.
    tats: Mutex<HashMap<String, u64>>,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        LocalLimiter { origin: Instant::now(), tats: Mutex::new(HashMap::new()) }
    }
}

const MINUTE_NS: u128 = 60_000_000_000;

fn interval_ns(scope: &ScopeLimit) -> u64 {
    u64::try_from(MINUTE_NS / u128::from(scope.calls_per_minute.max(1))).unwrap_or(u64::MAX).max(1)
}

impl LocalLimiter {
    /// Checks `cost` against every scope at the current instant.
    pub fn check(&self, scopes: &[ScopeLimit], cost: u64) -> Result<Vec<Remaining>, Limited> {
        let now_ns = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.check_at(scopes, cost, now_ns)
    }

    /// Checks `cost` against every scope at `now_ns` (ns since the origin).
    pub fn check_at(&self, scopes: &[ScopeLimit], cost: u64, now_ns: u64) -> Result<Vec<Remaining>, Limited> {
        let mut tats = self.tats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = Vec::with_capacity(scopes.len());
        let mut worst: Option<(ScopeLimit, u64)> = None;
        for scope in scopes {
            let interval = interval_ns(scope);
            let tolerance = interval.saturating_mul(scope.burst.max(1));
            let tat = tats.get(&scope.key).copied().unwrap_or(now_ns).max(now_ns);
            let new_tat = tat.saturating_add(interval.saturating_mul(cost.max(1)));
            let ahead = new_tat - now_ns;
            if ahead > tolerance {
                let wait = ahead - tolerance;
                if worst.as_ref().is_none_or(|(_, longest)| wait > *longest) {
                    worst = Some((scope.clone(), wait));
                }
                continue;
            }
            let remaining = (tolerance - ahead) / interval;
            next.push((scope.clone(), new_tat, remaining));
        }
        if let Some((scope, wait)) = worst {
            return Err(Limited::Exceeded { scope, retry_after: Duration::from_nanos(wait) });
        }
        let new_keys = next.iter().filter(|(scope, ..)| !tats.contains_key(&scope.key)).count();
        if tats.len() + new_keys > ADMISSION_LOCAL_SCOPES_MAX {
            // Scopes whose debt is paid are idle: forgetting them changes nothing.
            tats.retain(|_, tat| *tat > now_ns);
            if tats.len() + new_keys > ADMISSION_LOCAL_SCOPES_MAX {
                return Err(Limited::Full);
            }
        }
        Ok(next
            .into_iter()
            .map(|(scope, new_tat, remaining)| {
                tats.insert(scope.key.clone(), new_tat);
                Remaining { scope, remaining }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(key: &str, calls_per_minute: u64, burst: u64) -> ScopeLimit {
        ScopeLimit { key: key.into(), calls_per_minute, burst }
    }

    #[test]
    fn a_burst_is_admitted_at_once_then_the_sustained_rate() {
        let limiter = LocalLimiter::default();
        let s = [scope("tenant:a", 60, 3)];
        for expected_remaining in [2, 1, 0] {
            let remaining = limiter.check_at(&s, 1, 0).expect("within the burst");
            assert_eq!(remaining[0].remaining, expected_remaining);
        }
        match limiter.check_at(&s, 1, 0) {
            Err(Limited::Exceeded { retry_after, .. }) => assert_eq!(retry_after, Duration::from_secs(1)),
            other => panic!("expected a limit, got {other:?}"),
        }
        // One call per second after that.
        assert!(limiter.check_at(&s, 1, 1_000_000_000).is_ok());
        assert!(limiter.check_at(&s, 1, 1_000_000_000).is_err());
    }

    #[test]
    fn no_scope_is_charged_when_another_refuses() {
        let limiter = LocalLimiter::default();
        let tight = scope("tenant:a", 60, 1);
        let loose = scope("global", 6000, 100);
        assert!(limiter.check_at(&[loose.clone(), tight.clone()], 1, 0).is_ok());
        // The tight scope refuses; the loose one must not be charged.
        for _ in 0..10 {
            assert!(limiter.check_at(&[loose.clone(), tight.clone()], 1, 0).is_err());
        }
        let remaining = limiter.check_at(&[loose], 1, 0).expect("the loose scope has room");
        assert_eq!(remaining[0].remaining, 98, "charged twice only: once before, once now");
    }

    #[test]
    fn admitted_calls_never_exceed_burst_plus_rate_times_time() {
        let limiter = LocalLimiter::default();
        let s = [scope("tenant:a", 600, 5)];
        let mut admitted = 0u64;
        // 20 s of attempts every millisecond.
        for ms in 0..20_000u64 {
            if limiter.check_at(&s, 1, ms * 1_000_000).is_ok() {
                admitted += 1;
            }
        }
        assert!(admitted <= 5 + 20 * 10, "{admitted}");
        assert!(admitted >= 20 * 10, "{admitted}");
    }

    #[test]
    fn a_cost_above_the_burst_is_never_admitted_and_costs_nothing() {
        let limiter = LocalLimiter::default();
        let s = [scope("tenant:a", 60, 2)];
        assert!(limiter.check_at(&s, 3, 0).is_err());
        assert_eq!(limiter.check_at(&s, 2, 0).map(|r| r[0].remaining).ok(), Some(0));
    }
}
