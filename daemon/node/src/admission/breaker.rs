//! Circuit breakers: per engine, or per `engine/action` where configured.
//!
//! ```text
//!            errors ≥ error_rate_percent of ≥ min_calls in window_ms
//!  CLOSED ───────────────────────────────────────────────────────────► OPEN
//!    ▲                                                                  │ cool_down_ms
//!    │ half_open_probes successes                                        ▼
//!    └──────────────────────────────── HALF_OPEN ◄───────────────────────┘
//!                                        │ a probe fails → OPEN (cool-down again)
//!  HALF_OPEN admits half_open_probes calls (cluster-wide with Redis); probes
//!  that never report are handed out again after another cool-down.
//! ```
//!
//! [`BreakerState`] is the state machine, on times in ms; [`LocalBreakers`]
//! runs it in this process (without Redis, and while Redis is down). With
//! Redis the same machine runs in two Lua scripts (`ADMIT_SCRIPT`,
//! `REPORT_SCRIPT`) on one hash per breaker, with Redis's clock, so one
//! member's reports open the breaker for all; members keep a mirror of each
//! breaker's state and ask Redis again once it is `staleness_ms` old, so a
//! member learns of a transition within `staleness_ms` (a closed breaker
//! costs one Redis call per member per `staleness_ms`, not one per admission).

use crate::limits::{BREAKER_WINDOW_BUCKETS, BREAKERS_LOCAL_MAX};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// Event topics only members publish (clients are refused them).
pub const MEMBER_TOPIC_PREFIX: &str = "keel-";

/// The topic of breaker transition events.
pub const BREAKER_TOPIC: &str = "keel-breaker";

/// `[breaker]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Whether admissions consult breakers at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The window error rates are measured over, ms.
    #[serde(default = "window_ms_default")]
    pub window_ms: u64,
    /// Calls in the window before the error rate counts.
    #[serde(default = "min_calls_default")]
    pub min_calls: u64,
    /// Error rate (errors and timeouts over calls) that opens the breaker, %.
    #[serde(default = "error_rate_percent_default")]
    pub error_rate_percent: u64,
    /// How long an open breaker refuses before probing, ms.
    #[serde(default = "cool_down_ms_default")]
    pub cool_down_ms: u64,
    /// Admissions let through while half-open (cluster-wide with Redis);
    /// that many successes close the breaker.
    #[serde(default = "half_open_probes_default")]
    pub half_open_probes: u64,
    /// How old a member's view of a shared breaker may get, ms.
    #[serde(default = "staleness_ms_default")]
    pub staleness_ms: u64,
    /// `engine/action` pairs with a breaker of their own (others share
    /// their engine's).
    #[serde(default)]
    pub actions: Vec<String>,
}

fn yes() -> bool {
    true
}
fn window_ms_default() -> u64 {
    10_000
}
fn min_calls_default() -> u64 {
    20
}
fn error_rate_percent_default() -> u64 {
    50
}
fn cool_down_ms_default() -> u64 {
    5_000
}
fn half_open_probes_default() -> u64 {
    3
}
fn staleness_ms_default() -> u64 {
    200
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            window_ms: window_ms_default(),
            min_calls: min_calls_default(),
            error_rate_percent: error_rate_percent_default(),
            cool_down_ms: cool_down_ms_default(),
            half_open_probes: half_open_probes_default(),
            staleness_ms: staleness_ms_default(),
            actions: Vec::new(),
        }
    }
}

impl BreakerConfig {
    /// Checks the ranges; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let ranges: [(&'static str, u64, std::ops::RangeInclusive<u64>); 6] = [
            ("breaker.window_ms", self.window_ms, 100..=3_600_000),
            ("breaker.min_calls", self.min_calls, 1..=1_000_000),
            ("breaker.error_rate_percent", self.error_rate_percent, 1..=100),
            ("breaker.cool_down_ms", self.cool_down_ms, 10..=3_600_000),
            ("breaker.half_open_probes", self.half_open_probes, 1..=1_000),
            ("breaker.staleness_ms", self.staleness_ms, 1..=60_000),
        ];
        for (key, value, range) in ranges {
            if !range.contains(&value) {
                return Err((key, format!("{value} is outside {}..={}", range.start(), range.end())));
            }
        }
        for pair in &self.actions {
            let valid = pair.split_once('/').is_some_and(|(engine, action)| {
                keel_kernel::Name::parse("engine", engine).is_ok() && keel_kernel::Name::parse("action", action).is_ok()
            });
            if !valid {
                return Err(("breaker.actions", format!("{pair:?} is not engine/action")));
            }
        }
        Ok(())
    }

    /// The breaker an admission of `engine`'s `action` goes through.
    pub fn breaker_of(&self, engine: &str, action: &str) -> String {
        let pair = format!("{engine}/{action}");
        match self.actions.contains(&pair) {
            true => pair,
            false => engine.to_owned(),
        }
    }
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Admitting.
    #[default]
    Closed,
    /// Refusing until the cool-down ends.
    Open,
    /// Admitting a bounded number of probes.
    HalfOpen,
}

impl Phase {
    /// The name in events, metrics and `/diagz`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::HalfOpen => "half_open",
        }
    }

    /// The phase the scripts encode as `code`.
    pub fn from_code(code: i64) -> Phase {
        match code {
            1 => Phase::Open,
            2 => Phase::HalfOpen,
            _ => Phase::Closed,
        }
    }
}

/// How a call admitted earlier ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It worked.
    Ok,
    /// It failed.
    Error,
    /// It did not finish in time (counts as an error).
    Timeout,
}

/// A breaker's answer to an admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Closed: admit.
    Pass,
    /// Half-open and this admission is a probe: admit.
    Probe,
    /// Open, or half-open with every probe handed out: refuse, and when to
    /// ask again.
    Refuse {
        /// ms until the cool-down ends (at least 1).
        retry_after_ms: u64,
    },
}

/// A change of phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The breaker (`engine` or `engine/action`).
    pub breaker: String,
    /// Before.
    pub from: Phase,
    /// After.
    pub to: Phase,
}

/// One breaker, on times in ms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakerState {
    phase: Phase,
    /// When the phase began.
    since_ms: u64,
    /// Probes handed out in this half-open phase.
    probes: u64,
    /// Probe successes in this half-open phase.
    successes: u64,
    /// Per bucket of window_ms / BREAKER_WINDOW_BUCKETS: (bucket number, calls, errors).
    buckets: [(u64, u64, u64); BREAKER_WINDOW_BUCKETS],
}

impl BreakerState {
    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    fn enter(&mut self, phase: Phase, now_ms: u64) -> Option<(Phase, Phase)> {
        let from = self.phase;
        *self = BreakerState { phase, since_ms: now_ms, ..BreakerState::default() };
        (from != phase).then_some((from, phase))
    }

    /// An admission at `now_ms`; the transition it caused, if any.
    pub fn admit(&mut self, config: &BreakerConfig, now_ms: u64) -> (Gate, Option<(Phase, Phase)>) {
        let cooled = now_ms.saturating_sub(self.since_ms) >= config.cool_down_ms;
        let retry_after_ms = config.cool_down_ms.saturating_sub(now_ms.saturating_sub(self.since_ms)).max(1);
        match self.phase {
            Phase::Closed => (Gate::Pass, None),
            Phase::Open if cooled => {
                let transition = self.enter(Phase::HalfOpen, now_ms);
                self.probes = 1;
                (Gate::Probe, transition)
            }
            Phase::Open => (Gate::Refuse { retry_after_ms }, None),
            Phase::HalfOpen if self.probes < config.half_open_probes => {
                self.probes += 1;
                (Gate::Probe, None)
            }
            Phase::HalfOpen if cooled => {
                // The probes never reported: hand them out again.
                self.since_ms = now_ms;
                self.probes = 1;
                (Gate::Probe, None)
            }
            Phase::HalfOpen => (Gate::Refuse { retry_after_ms }, None),
        }
    }

    /// A reported outcome at `now_ms`; the transition it caused, if any.
    pub fn report(&mut self, config: &BreakerConfig, outcome: Outcome, now_ms: u64) -> Option<(Phase, Phase)> {
        let failed = outcome != Outcome::Ok;
        match self.phase {
            // Calls admitted before it opened: they say nothing new.
            Phase::Open => None,
            Phase::HalfOpen if failed => self.enter(Phase::Open, now_ms),
            Phase::HalfOpen => {
                self.successes += 1;
                (self.successes >= config.half_open_probes).then(|| self.enter(Phase::Closed, now_ms)).flatten()
            }
            Phase::Closed => {
                let width = (config.window_ms / BREAKER_WINDOW_BUCKETS as u64).max(1);
                let bucket = now_ms / width;
                let slot = &mut self.buckets[(bucket % BREAKER_WINDOW_BUCKETS as u64) as usize];
                if slot.0 != bucket {
                    *slot = (bucket, 0, 0);
                }
                slot.1 += 1;
                slot.2 += u64::from(failed);
                let oldest = bucket.saturating_sub(BREAKER_WINDOW_BUCKETS as u64 - 1);
                let (calls, errors) = self
                    .buckets
                    .iter()
                    .filter(|(number, ..)| *number >= oldest && *number <= bucket)
                    .fold((0u64, 0u64), |(calls, errors), (_, c, e)| (calls + c, errors + e));
                let tripped = calls >= config.min_calls
                    && errors.saturating_mul(100) >= config.error_rate_percent.saturating_mul(calls);
                tripped.then(|| self.enter(Phase::Open, now_ms)).flatten()
            }
        }
    }
}

/// Breakers in this process, at most `BREAKERS_LOCAL_MAX` (beyond, closed
/// breakers with no errors in their window are forgotten first; if none
/// can be, a new breaker is not tracked and admits).
#[derive(Debug, Default)]
pub struct LocalBreakers {
    breakers: Mutex<HashMap<String, BreakerState>>,
}

impl LocalBreakers {
    /// An admission through `breaker` at `now_ms`.
    pub fn admit(&self, config: &BreakerConfig, breaker: &str, now_ms: u64) -> (Gate, Option<Transition>) {
        let mut breakers = self.breakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(state) = breakers.get_mut(breaker) else {
            return (Gate::Pass, None);
        };
        let (gate, transition) = state.admit(config, now_ms);
        (gate, transition.map(|(from, to)| Transition { breaker: breaker.to_owned(), from, to }))
    }

    /// The phase of `breaker` (closed when untracked).
    pub fn phase(&self, breaker: &str) -> Phase {
        let breakers = self.breakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        breakers.get(breaker).map(BreakerState::phase).unwrap_or_default()
    }

    /// A reported outcome for `breaker` at `now_ms`.
    pub fn report(&self, config: &BreakerConfig, breaker: &str, outcome: Outcome, now_ms: u64) -> Option<Transition> {
        let mut breakers = self.breakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !breakers.contains_key(breaker) && breakers.len() >= BREAKERS_LOCAL_MAX {
            breakers.retain(|_, state| state.phase != Phase::Closed || state.buckets.iter().any(|b| b.2 > 0));
            if breakers.len() >= BREAKERS_LOCAL_MAX {
                return None;
            }
        }
        let state = breakers.entry(breaker.to_owned()).or_default();
        let (from, to) = state.report(config, outcome, now_ms)?;
        Some(Transition { breaker: breaker.to_owned(), from, to })
    }
}

/// The breaker machine over one Redis hash (`KEYS[1]`), for an admission.
/// ARGV: cool_down_ms, half_open_probes, ttl_ms. Returns {phase before, gate
/// (0 refuse, 1 pass, 2 probe), retry_after_ms, phase after}.
pub const ADMIT_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cool, probes = tonumber(ARGV[1]), tonumber(ARGV[2])
local h = redis.call('HMGET', KEYS[1], 'phase', 'since', 'probes')
local phase, since, given = tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0
local cooled = now - since >= cool
local retry = math.max(cool - (now - since), 1)
if phase == 0 then return {0, 1, 0, 0} end
if phase == 1 then
  if cooled then
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[1], 'phase', 2, 'since', now, 'probes', 1, 'ok', 0)
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
    return {1, 2, 0, 2}
  end
  return {1, 0, retry, 1}
end
if given < probes then
  redis.call('HINCRBY', KEYS[1], 'probes', 1)
  return {2, 2, 0, 2}
end
if cooled then
  redis.call('HSET', KEYS[1], 'since', now, 'probes', 1)
  return {2, 2, 0, 2}
end
return {2, 0, retry, 2}
"#;

/// The breaker machine over one Redis hash (`KEYS[1]`), for a reported
/// outcome. ARGV: failed (0/1), window_ms, buckets, min_calls,
/// error_rate_percent, half_open_probes, ttl_ms. Returns {phase before,
/// phase after}.
pub const REPORT_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local failed = tonumber(ARGV[1])
local window, buckets = tonumber(ARGV[2]), tonumber(ARGV[3])
local min_calls, rate, probes, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local phase = tonumber(redis.call('HGET', KEYS[1], 'phase')) or 0
local function enter(p)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'phase', p, 'since', now, 'probes', 0, 'ok', 0)
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {phase, p}
end
if phase == 1 then return {1, 1} end
if phase == 2 then
  if failed == 1 then return enter(1) end
  local ok = redis.call('HINCRBY', KEYS[1], 'ok', 1)
  if ok >= probes then return enter(0) end
  return {2, 2}
end
local width = math.max(math.floor(window / buckets), 1)
local bucket = math.floor(now / width)
local slot = bucket % buckets
if tonumber(redis.call('HGET', KEYS[1], 'b' .. slot)) ~= bucket then
  redis.call('HSET', KEYS[1], 'b' .. slot, bucket, 'c' .. slot, 0, 'e' .. slot, 0)
end
redis.call('HINCRBY', KEYS[1], 'c' .. slot, 1)
redis.call('HINCRBY', KEYS[1], 'e' .. slot, failed)
redis.call('PEXPIRE', KEYS[1], ttl)
local calls, errors = 0, 0
for s = 0, buckets - 1 do
  local b = tonumber(redis.call('HGET', KEYS[1], 'b' .. s))
  if b and b > bucket - buckets and b <= bucket then
    calls = calls + tonumber(redis.call('HGET', KEYS[1], 'c' .. s))
    errors = errors + tonumber(redis.call('HGET', KEYS[1], 'e' .. s))
  end
end
if calls >= min_calls and errors * 100 >= rate * calls then return enter(1) end
return {0, 0}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            min_calls: 4,
            error_rate_percent: 50,
            cool_down_ms: 1_000,
            half_open_probes: 2,
            ..Default::default()
        }
    }

    #[test]
    fn errors_over_the_threshold_open_then_probes_close() {
        let config = config();
        let mut state = BreakerState::default();
        assert_eq!(state.report(&config, Outcome::Ok, 0), None);
        assert_eq!(state.report(&config, Outcome::Error, 1), None);
        assert_eq!(state.report(&config, Outcome::Ok, 2), None);
        // 2 errors of 4 calls: 50 %.
        assert_eq!(state.report(&config, Outcome::Timeout, 3), Some((Phase::Closed, Phase::Open)));
        assert_eq!(state.admit(&config, 500).0, Gate::Refuse { retry_after_ms: 503 });
        // After the cool-down: two probes, then refusals.
        assert_eq!(state.admit(&config, 1_003), (Gate::Probe, Some((Phase::Open, Phase::HalfOpen))));
        assert_eq!(state.admit(&config, 1_004).0, Gate::Probe);
        assert!(matches!(state.admit(&config, 1_005).0, Gate::Refuse { .. }));
        assert_eq!(state.report(&config, Outcome::Ok, 1_010), None);
        assert_eq!(state.report(&config, Outcome::Ok, 1_011), Some((Phase::HalfOpen, Phase::Closed)));
        assert_eq!(state.admit(&config, 1_012).0, Gate::Pass);
    }

    #[test]
    fn a_failed_probe_opens_again_and_lost_probes_are_handed_out_again() {
        let config = config();
        let mut state = BreakerState::default();
        for ms in 0..4 {
            let _ = state.report(&config, Outcome::Error, ms);
        }
        assert_eq!(state.phase(), Phase::Open);
        let _ = state.admit(&config, 2_000);
        assert_eq!(state.report(&config, Outcome::Error, 2_001), Some((Phase::HalfOpen, Phase::Open)));
        let _ = state.admit(&config, 3_001);
        let _ = state.admit(&config, 3_002);
        assert!(matches!(state.admit(&config, 3_003).0, Gate::Refuse { .. }));
        // No probe reported within a cool-down: new probes.
        assert_eq!(state.admit(&config, 4_100).0, Gate::Probe);
    }

    #[test]
    fn old_errors_leave_the_window() {
        let config = BreakerConfig { window_ms: 1_000, ..config() };
        let mut state = BreakerState::default();
        for ms in 0..3 {
            let _ = state.report(&config, Outcome::Error, ms);
        }
        // The window has moved on: these errors no longer count.
        assert_eq!(state.report(&config, Outcome::Error, 5_000), None);
        assert_eq!(state.phase(), Phase::Closed);
    }

    #[test]
    fn too_few_calls_never_open() {
        let config = config();
        let mut state = BreakerState::default();
        for ms in 0..3 {
            assert_eq!(state.report(&config, Outcome::Error, ms), None);
        }
    }
}

/// A member's breakers: shared through Redis when configured (with a
/// mirror at most `staleness_ms` old), else (and while Redis is down) in
/// this process. Transitions are logged, counted and sent to `transitions`.
#[derive(Debug)]
pub struct Breakers {
    config: BreakerConfig,
    redis: Option<super::redis_limiter::RedisLimiter>,
    /// Whether Redis answers: while it does not, breakers are this member's.
    health: std::sync::Arc<super::LimiterHealth>,
    local: LocalBreakers,
    /// The last phase Redis reported per breaker, and when.
    mirror: Mutex<HashMap<String, (Phase, std::time::Instant, u64)>>,
    origin: std::time::Instant,
    transitions: tokio::sync::broadcast::Sender<Transition>,
}

/// What a breaker said, and whether it said it without Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gated {
    /// The answer.
    pub gate: Gate,
    /// Decided by this member alone because Redis did not answer.
    pub is_local_fallback: bool,
}

impl Breakers {
    /// Breakers as `config` says, shared through `redis` if given.
    pub fn new(
        config: BreakerConfig,
        redis: Option<super::redis_limiter::RedisLimiter>,
        health: std::sync::Arc<super::LimiterHealth>,
    ) -> Breakers {
        let (transitions, _) = tokio::sync::broadcast::channel(crate::limits::BREAKER_TRANSITIONS_BUFFERED);
        Breakers {
            config,
            redis,
            health,
            local: LocalBreakers::default(),
            mirror: Mutex::default(),
            origin: std::time::Instant::now(),
            transitions,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Transitions from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Transition> {
        self.transitions.subscribe()
    }

    /// Redis, unless there is none or it failed lately (then no admission
    /// waits on it for a breaker: the limiter's check alone retries it).
    fn shared(&self) -> Option<&super::redis_limiter::RedisLimiter> {
        self.redis.as_ref().filter(|_| !self.health.is_degraded())
    }

    /// Notes that Redis failed (the limiter's health: logged once there).
    fn failed(&self, error: &super::redis_limiter::RedisUnavailable) {
        if self.health.record(false) {
            tracing::warn!(%error, "the shared rate limiter (redis) is unavailable (seen by a circuit breaker)");
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether transitions are decided in Redis (one member announces each).
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    fn announce(&self, transition: Transition) {
        tracing::info!(
            breaker = %transition.breaker,
            from = transition.from.as_str(),
            to = transition.to.as_str(),
            "circuit breaker changed state"
        );
        let _ = self.transitions.send(transition);
    }

    /// The mirror's view of `breaker` if it is fresh: (phase, ms left of
    /// an open breaker's cool-down).
    fn mirrored(&self, breaker: &str) -> Option<(Phase, u64)> {
        let mirror = self.mirror.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (phase, at, retry_after_ms) = mirror.get(breaker)?;
        let age = u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
        (age < self.config.staleness_ms).then_some((*phase, retry_after_ms.saturating_sub(age)))
    }

    fn remember(&self, breaker: &str, phase: Phase, retry_after_ms: u64) {
        let mut mirror = self.mirror.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if mirror.len() >= BREAKERS_LOCAL_MAX && !mirror.contains_key(breaker) {
            let fresh = std::time::Duration::from_millis(self.config.staleness_ms);
            mirror.retain(|_, (_, at, _)| at.elapsed() < fresh);
            if mirror.len() >= BREAKERS_LOCAL_MAX {
                return;
            }
        }
        mirror.insert(breaker.to_owned(), (phase, std::time::Instant::now(), retry_after_ms));
    }

    /// Whether `breaker` refuses now without asking anyone (an open breaker
    /// in its cool-down, as last seen): the admission stops before it is
    /// charged.
    pub fn refuses_now(&self, breaker: &str) -> Option<Gate> {
        if !self.config.enabled {
            return None;
        }
        let (phase, retry_after_ms) = match &self.redis {
            Some(_) => self.mirrored(breaker)?,
            None => return None,
        };
        (phase == Phase::Open && retry_after_ms > 0).then_some(Gate::Refuse { retry_after_ms })
    }

    /// An admission through `breaker`: passes, is a probe, or is refused.
    pub async fn admit(&self, breaker: &str) -> Gated {
        let pass = Gated { gate: Gate::Pass, is_local_fallback: false };
        if !self.config.enabled {
            return pass;
        }
        if let Some(redis) = self.shared() {
            match self.mirrored(breaker) {
                Some((Phase::Closed, _)) => return pass,
                Some((Phase::Open, retry_after_ms)) if retry_after_ms > 0 => {
                    return Gated { gate: Gate::Refuse { retry_after_ms }, is_local_fallback: false };
                }
                _ => {}
            }
            match redis.breaker_admit(&self.config, breaker).await {
                Ok(answer) => {
                    let retry_after_ms = match answer.gate {
                        Gate::Refuse { retry_after_ms } if answer.after == Phase::Open => retry_after_ms,
                        _ => 0,
                    };
                    self.remember(breaker, answer.after, retry_after_ms);
                    if answer.before != answer.after {
                        let transition =
                            Transition { breaker: breaker.to_owned(), from: answer.before, to: answer.after };
                        self.announce(transition);
                    }
                    return Gated { gate: answer.gate, is_local_fallback: false };
                }
                Err(error) => self.failed(&error),
            }
        }
        let (gate, transition) = self.local.admit(&self.config, breaker, self.now_ms());
        if let Some(transition) = transition {
            self.announce(transition);
        }
        Gated { gate, is_local_fallback: self.redis.is_some() }
    }

    /// Whether `breaker` is closed (dependants may run); read only.
    pub async fn is_closed(&self, breaker: &str) -> bool {
        if !self.config.enabled {
            return true;
        }
        if let Some(redis) = self.shared() {
            if let Some((phase, _)) = self.mirrored(breaker) {
                return phase == Phase::Closed;
            }
            match redis.breaker_phase(breaker).await {
                Ok(phase) => {
                    self.remember(breaker, phase, if phase == Phase::Open { self.config.staleness_ms } else { 0 });
                    return phase == Phase::Closed;
                }
                Err(error) => self.failed(&error),
            }
        }
        self.local.phase(breaker) == Phase::Closed
    }

    /// A call's outcome through `breaker`; the phase after it.
    pub async fn report(&self, breaker: &str, outcome: Outcome) -> Phase {
        if let Some(redis) = &self.redis
            && let Ok((before, after)) = redis.breaker_report(&self.config, breaker, outcome != Outcome::Ok).await
        {
            let retry_after_ms =
                if after == Phase::Open && before != Phase::Open { self.config.cool_down_ms } else { 0 };
            self.remember(breaker, after, retry_after_ms);
            if before != after {
                self.announce(Transition { breaker: breaker.to_owned(), from: before, to: after });
            }
            return after;
        }
        if let Some(transition) = self.local.report(&self.config, breaker, outcome, self.now_ms()) {
            self.announce(transition);
        }
        self.local.phase(breaker)
    }
}
