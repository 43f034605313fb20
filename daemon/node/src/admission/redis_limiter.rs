//! [`RedisLimiter`]: the shared rate limits, one Lua script per check.
//!
//! ```text
//!  KEYS: keel:rl:{<tenant>}:<scope>       (hash tag: a tenant's scopes share a slot)
//!  ARGV: cost, then per key: interval µs, tolerance µs
//!  script: now := TIME (µs); every key: tat := max(GET key, now), new := tat + cost·interval,
//!          refuse if new − now > tolerance (keep the longest wait); if any refused: write nothing,
//!          return {0, index, wait µs}; else SET key new PX ⌈(new − now)/1000⌉+1 for every key,
//!          return {1, remaining per key}
//! ```
//!
//! The same GCRA as [`super::limiter::LocalLimiter`], with Redis's clock,
//! so members with skewed clocks still share one limit; a script runs
//! atomically, so all scopes are charged or none. Every call has a deadline
//! (`redis.timeout_ms`); past it, or when Redis cannot be reached, the
//! caller applies the outage mode.

use super::limiter::{Remaining, ScopeLimit};
use std::time::Duration;

/// The GCRA check, atomic over its keys.
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local fresh = {}
local worst, worst_wait = 0, 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local tolerance = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new = tat + cost * interval
  local ahead = new - now
  if ahead > tolerance then
    if ahead - tolerance > worst_wait then
      worst, worst_wait = i, ahead - tolerance
    end
  else
    fresh[i] = new
  end
end
if worst > 0 then
  return {0, worst, worst_wait}
end
local out = {1}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local tolerance = tonumber(ARGV[2 * i + 1])
  local ahead = fresh[i] - now
  redis.call('SET', KEYS[i], string.format('%d', fresh[i]), 'PX', math.floor(ahead / 1000) + 1)
  out[#out + 1] = math.floor((tolerance - ahead) / interval)
end
return out
"#;

/// Why the shared limiter could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisUnavailable {
    /// No answer within the deadline.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection or the command failed.
    #[error("redis failed: {0}")]
    Failed(String),
}

/// A check's answer from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAnswer {
    /// Every scope admitted; the room left in each.
    Admitted(Vec<Remaining>),
    /// This scope refused; when it has room again.
    Limited {
        /// The scope.
        scope: ScopeLimit,
        /// The wait.
        retry_after: Duration,
    },
}

/// The shared limiter.
#[derive(Clone)]
pub struct RedisLimiter {
    connection: redis::aio::ConnectionManager,
    script: std::sync::Arc<redis::Script>,
    timeout: Duration,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// A limiter on `url` (`redis://[:password@]host:port[/db]` or
    /// `rediss://` for TLS) answering within `timeout`. Connects lazily: a
    /// Redis that is down at start is an outage, not a startup failure.
    pub fn new(url: &str, timeout: Duration) -> Result<RedisLimiter, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(100))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = redis::aio::ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisLimiter { connection, script: std::sync::Arc::new(redis::Script::new(GCRA_SCRIPT)), timeout })
    }

    /// Whether Redis answers PING within the deadline.
    pub async fn ping(&self) -> bool {
        let mut connection = self.connection.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        matches!(tokio::time::timeout(self.timeout, ping).await, Ok(Ok(_)))
    }

    /// The Redis key of `scope` for `tenant`.
    pub fn key(tenant: &str, scope: &ScopeLimit) -> String {
        format!("keel:rl:{{{tenant}}}:{}", scope.key)
    }

    /// Checks `cost` against every scope of `tenant`'s admission.
    pub async fn check(&self, tenant: &str, scopes: &[ScopeLimit], cost: u64) -> Result<RedisAnswer, RedisUnavailable> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(cost.max(1));
        for scope in scopes {
            let interval_us = (60_000_000 / scope.calls_per_minute.max(1)).max(1);
            invocation.key(RedisLimiter::key(tenant, scope));
            invocation.arg(interval_us).arg(interval_us.saturating_mul(scope.burst.max(1)));
        }
        let mut connection = self.connection.clone();
        let answer: Vec<i64> = tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
            .await
            .map_err(|_| RedisUnavailable::Timeout(self.timeout))?
            .map_err(|error| RedisUnavailable::Failed(error.to_string()))?;
        let unexpected = || RedisUnavailable::Failed(format!("the limit script answered {answer:?}"));
        match answer.first() {
            Some(1) if answer.len() == scopes.len() + 1 => Ok(RedisAnswer::Admitted(
                scopes
                    .iter()
                    .zip(&answer[1..])
                    .map(|(scope, room)| Remaining {
                        scope: scope.clone(),
                        remaining: u64::try_from(*room).unwrap_or(0),
                    })
                    .collect(),
            )),
            Some(0) => {
                let index = answer.get(1).and_then(|index| usize::try_from(*index).ok()).ok_or_else(unexpected)?;
                let scope = scopes.get(index.wrapping_sub(1)).ok_or_else(unexpected)?.clone();
                let wait_us = answer.get(2).and_then(|wait| u64::try_from(*wait).ok()).ok_or_else(unexpected)?;
                Ok(RedisAnswer::Limited { scope, retry_after: Duration::from_micros(wait_us) })
            }
            _ => Err(unexpected()),
        }
    }
}
