//! [`RedisLimiter`]: the shared rate limits and idempotency records in Lua
//! scripts, on a single Redis server or a Redis Cluster.
//!
//! ```text
//!  keys   keel:rl:{t:<tenant>}:tenant:<tenant>              a tenant's slot: its scopes and
//!         keel:rl:{t:<tenant>}:tenant_engine:<tenant>/<e>   its idempotency records
//!         keel:idem:{t:<tenant>}:<idempotency key>
//!         keel:rl:{keel}:engine:<e>, keel:rl:{keel}:global  the shared slot
//!  CHECK  many checks in one script, each alone, in order:
//!         ARGV: checks, then per check: scopes, cost, has record, record ttl ms, record value,
//!         then per scope: interval µs, tolerance µs;  KEYS per check: [record], scopes
//!         now := TIME (µs); per check: a record that exists → {2, its value} (nothing charged);
//!         every scope: tat := max(GET key, now), new := tat + cost·interval, refuse if
//!         new − now > tolerance (keep the longest wait); any refusal → {0, index, wait µs},
//!         nothing written; else SET every key new PX ⌈(new − now)/1000⌉+1, SET the record
//!         PX ttl, → {1, remaining per scope}; the answer: one reply per check
//!  REFUND KEYS: [record], scopes   ARGV: cost, has record, per scope: interval µs
//!         takes back what CHECK charged (tat −= cost·interval) and deletes the record
//! ```
//!
//! The same GCRA as [`super::limiter::LocalLimiter`], with Redis's clock, so
//! members with skewed clocks still share one limit. A script runs
//! atomically over keys of one slot, so on a single server (one script over
//! every key) all scopes are charged or none. In Redis Cluster a tenant's
//! keys share a slot and the engine and global scopes share another: a check
//! that needs both runs CHECK on the tenant's slot, then on the shared slot,
//! and a refusal (or failure) there REFUNDs the first. Between the two, the
//! tenant's scopes hold the units for one round trip: a concurrent check can
//! be refused for them, never admitted beyond the limit. Every check has one
//! deadline (`redis.timeout_ms`) for all of its round trips; past it, or when
//! Redis cannot be reached, the caller applies the outage mode.
//!
//! On one server, concurrent checks are batched: each waits in a bounded
//! queue (`REDIS_QUEUE_MAX`) for a batcher task that sends up to
//! `REDIS_BATCH_CHECKS_MAX` waiting checks as one CHECK (one round trip, one
//! script run), at most `REDIS_BATCHES_IN_FLIGHT` at once; checks whose caller
//! gave up are left out. In Redis Cluster a check's keys span slots, so each
//! runs alone (concurrent ones still share a multiplexed connection, which
//! pipelines what is in flight).

use super::limiter::{Remaining, ScopeLimit};
use redis::{FromRedisValue, Value};
use std::sync::Arc;
use std::time::Duration;

/// The GCRA checks, each atomic over its keys, with their idempotency records.
const CHECK_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local a, k = 2, 1
for c = 1, tonumber(ARGV[1]) do
  local scopes, cost, has = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2] == '1'
  local ttl, value = ARGV[a + 3], ARGV[a + 4]
  a = a + 5
  local record = false
  if has then
    record = KEYS[k]
    k = k + 1
  end
  local seen = record and redis.call('GET', record)
  if seen then
    out[c] = {2, seen}
  else
    local fresh, worst, worst_wait = {}, 0, 0
    for s = 1, scopes do
      local interval, tolerance = tonumber(ARGV[a + 2 * s - 2]), tonumber(ARGV[a + 2 * s - 1])
      local tat = tonumber(redis.call('GET', KEYS[k + s - 1]) or now)
      if tat < now then tat = now end
      local new = tat + cost * interval
      local ahead = new - now
      if ahead > tolerance then
        if ahead - tolerance > worst_wait then
          worst, worst_wait = s, ahead - tolerance
        end
      else
        fresh[s] = new
      end
    end
    if worst > 0 then
      out[c] = {0, worst, worst_wait}
    else
      local result = {1}
      for s = 1, scopes do
        local interval, tolerance = tonumber(ARGV[a + 2 * s - 2]), tonumber(ARGV[a + 2 * s - 1])
        local ahead = fresh[s] - now
        redis.call('SET', KEYS[k + s - 1], string.format('%d', fresh[s]), 'PX', math.floor(ahead / 1000) + 1)
        result[#result + 1] = math.floor((tolerance - ahead) / interval)
      end
      if record then
        redis.call('SET', record, value, 'PX', tonumber(ttl))
      end
      out[c] = result
    end
  end
  a = a + 2 * scopes
  k = k + scopes
end
return out
"#;

/// Takes back what a CHECK charged.
const REFUND_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local first = 1
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1])
  first = 2
end
for i = first, #KEYS do
  local interval = tonumber(ARGV[2 + i - first + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat then
    local back = tat - cost * interval
    if back > now then
      redis.call('SET', KEYS[i], string.format('%d', back), 'PX', math.floor((back - now) / 1000) + 1)
    else
      redis.call('DEL', KEYS[i])
    end
  end
end
return 1
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
    /// Redis failed lately and is not asked again yet (see
    /// `LimiterHealth::should_try`).
    #[error("redis is unavailable (failed lately; retried every REDIS_RETRY_WHILE_DOWN_MS)")]
    Down,
}

impl From<redis::RedisError> for RedisUnavailable {
    fn from(error: redis::RedisError) -> Self {
        RedisUnavailable::Failed(error.to_string())
    }
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
    /// The idempotency record already existed: the first decision, as
    /// stored. Nothing was charged.
    Replayed(Vec<u8>),
}

/// What a check stores under an idempotency key when it admits.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The caller's idempotency key (the tenant's namespace).
    pub key: &'a str,
    /// The decision to answer retries with.
    pub value: &'a [u8],
    /// How long retries are answered from it.
    pub ttl: Duration,
}

/// TLS material for `rediss://` (PEM files), from `[redis]`.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    /// CA certificates to trust instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, when Redis asks for one.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisTls {
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .clone()
                .map(|(client_cert, client_key)| redis::ClientTlsConfig { client_cert, client_key }),
            root_cert: self.ca_pem.clone(),
        }
    }
}

/// The deployment the limiter talks to.
#[derive(Clone)]
enum Backend {
    /// One server; a connection manager reconnects on its own.
    Single(redis::aio::ConnectionManager),
    /// A Redis Cluster, connected on first use (a cluster that is down at
    /// start is an outage, not a startup failure).
    Cluster {
        client: Arc<redis::cluster::ClusterClient>,
        connection: Arc<tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>>,
    },
}

/// One check of the keys of one slot, owned (it may wait in the batcher's queue).
#[derive(Debug)]
struct SlotCheck {
    tenant: String,
    scopes: Vec<ScopeLimit>,
    cost: u64,
    /// The idempotency record: key, value, ttl ms.
    record: Option<(String, Vec<u8>, u64)>,
}

/// A check waiting for the batcher, and where its answer goes.
struct Queued {
    check: SlotCheck,
    reply: tokio::sync::oneshot::Sender<Result<RedisAnswer, RedisUnavailable>>,
}

/// The shared limiter.
#[derive(Clone)]
pub struct RedisLimiter {
    backend: Backend,
    /// On one server: the queue of the batcher task (none outside a runtime).
    batcher: Option<tokio::sync::mpsc::Sender<Queued>>,
    check: Arc<redis::Script>,
    refund: Arc<redis::Script>,
    breaker_admit: Arc<redis::Script>,
    breaker_report: Arc<redis::Script>,
    timeout: Duration,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Single(_) => "single",
            Backend::Cluster { .. } => "cluster",
        };
        f.debug_struct("RedisLimiter").field("backend", &kind).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// Whether a scope lives in the shared slot (engine, global) rather than
/// its tenant's.
fn is_shared(scope: &ScopeLimit) -> bool {
    !scope.key.starts_with("tenant")
}

impl RedisLimiter {
    /// A limiter on one server, `url` (`redis://[:password@]host:port[/db]`,
    /// `rediss://` for TLS), answering within `timeout`. Connects lazily: a
    /// Redis that is down at start is an outage, not a startup failure.
    pub fn single(url: &str, tls: &RedisTls, timeout: Duration) -> Result<RedisLimiter, redis::RedisError> {
        let client = match url.starts_with("rediss://") {
            true => redis::Client::build_with_tls(url, tls.certificates())?,
            false => redis::Client::open(url)?,
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(100))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = redis::aio::ConnectionManager::new_lazy_with_config(client, config)?;
        let mut limiter = RedisLimiter::with_backend(Backend::Single(connection), timeout);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (queue, waiting) = tokio::sync::mpsc::channel(crate::limits::REDIS_QUEUE_MAX);
            // The task's limiter has no queue of its own: the task ends when
            // every limiter holding `queue` is gone.
            runtime.spawn(batch_checks(limiter.clone(), waiting));
            limiter.batcher = Some(queue);
        }
        Ok(limiter)
    }

    /// A limiter on the Redis Cluster reachable through `urls` (any of its
    /// nodes; the client learns the rest).
    pub fn cluster(urls: &[String], tls: &RedisTls, timeout: Duration) -> Result<RedisLimiter, redis::RedisError> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
            .connection_timeout(timeout.max(Duration::from_millis(100)))
            .response_timeout(timeout)
            .retries(1)
            .max_retry_wait(200);
        if urls.iter().any(|url| url.starts_with("rediss://")) {
            builder = builder.certs(tls.certificates());
        }
        let client = builder.build()?;
        let backend = Backend::Cluster { client: Arc::new(client), connection: Arc::new(tokio::sync::OnceCell::new()) };
        Ok(RedisLimiter::with_backend(backend, timeout))
    }

    fn with_backend(backend: Backend, timeout: Duration) -> RedisLimiter {
        RedisLimiter {
            backend,
            batcher: None,
            check: Arc::new(redis::Script::new(CHECK_SCRIPT)),
            refund: Arc::new(redis::Script::new(REFUND_SCRIPT)),
            breaker_admit: Arc::new(redis::Script::new(super::breaker::ADMIT_SCRIPT)),
            breaker_report: Arc::new(redis::Script::new(super::breaker::REPORT_SCRIPT)),
            timeout,
        }
    }

    /// Runs `invocation` (no deadline of its own: callers bound the whole check).
    async fn invoke<T: FromRedisValue>(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<T, RedisUnavailable> {
        Ok(match &self.backend {
            Backend::Single(connection) => invocation.invoke_async(&mut connection.clone()).await?,
            Backend::Cluster { client, connection } => {
                let connection = connection.get_or_try_init(|| client.get_async_connection()).await?;
                invocation.invoke_async(&mut connection.clone()).await?
            }
        })
    }

    /// Runs `command`.
    async fn query<T: FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, RedisUnavailable> {
        Ok(match &self.backend {
            Backend::Single(connection) => command.query_async(&mut connection.clone()).await?,
            Backend::Cluster { client, connection } => {
                let connection = connection.get_or_try_init(|| client.get_async_connection()).await?;
                command.query_async(&mut connection.clone()).await?
            }
        })
    }

    async fn bounded<T>(&self, work: impl Future<Output = Result<T, RedisUnavailable>>) -> Result<T, RedisUnavailable> {
        tokio::time::timeout(self.timeout, work).await.map_err(|_| RedisUnavailable::Timeout(self.timeout))?
    }

    /// Whether Redis answers PING within the deadline.
    pub async fn ping(&self) -> bool {
        self.bounded(self.query::<String>(&redis::cmd("PING"))).await.is_ok()
    }

    /// The Redis key of `scope` for `tenant`.
    pub fn key(tenant: &str, scope: &ScopeLimit) -> String {
        match is_shared(scope) {
            true => format!("keel:rl:{{keel}}:{}", scope.key),
            false => format!("keel:rl:{{t:{tenant}}}:{}", scope.key),
        }
    }

    /// The Redis key of `tenant`'s idempotency record `key`.
    pub fn record_key(tenant: &str, key: &str) -> String {
        format!("keel:idem:{{t:{tenant}}}:{key}")
    }

    /// The decision stored under `tenant`'s idempotency key, if any.
    pub async fn recorded(&self, tenant: &str, key: &str) -> Result<Option<Vec<u8>>, RedisUnavailable> {
        let command = redis::cmd("GET").arg(RedisLimiter::record_key(tenant, key)).to_owned();
        self.bounded(self.query::<Option<Vec<u8>>>(&command)).await
    }

    /// Checks `cost` against every scope of `tenant`'s admission and, when
    /// admitted, stores `record`; one deadline for the whole check.
    pub async fn check(
        &self,
        tenant: &str,
        scopes: &[ScopeLimit],
        cost: u64,
        record: Option<Record<'_>>,
    ) -> Result<RedisAnswer, RedisUnavailable> {
        let cost = cost.max(1);
        let owned = |scopes: Vec<ScopeLimit>, record: Option<Record<'_>>| SlotCheck {
            tenant: tenant.to_owned(),
            scopes,
            cost,
            record: record.map(|record| {
                let ttl_ms = u64::try_from(record.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                (record.key.to_owned(), record.value.to_vec(), ttl_ms)
            }),
        };
        let split = matches!(self.backend, Backend::Cluster { .. })
            && scopes.iter().any(is_shared)
            && (record.is_some() || scopes.iter().any(|scope| !is_shared(scope)));
        if !split {
            return self.bounded(self.check_slot(owned(scopes.to_vec(), record))).await;
        }
        let (shared, own): (Vec<ScopeLimit>, Vec<ScopeLimit>) = scopes.iter().cloned().partition(is_shared);
        let first = self.bounded(self.check_slot(owned(own.clone(), record))).await?;
        let RedisAnswer::Admitted(mut remaining) = first else {
            return Ok(first);
        };
        let refund = |limiter: RedisLimiter, own: Vec<ScopeLimit>, record: Option<String>, tenant: String| async move {
            let _ = limiter.bounded(limiter.refund_slot(&tenant, &own, cost, record.as_deref())).await;
        };
        let record_key = record.map(|record| record.key.to_owned());
        match tokio::time::timeout(self.timeout, self.check_slot(owned(shared, None))).await {
            Ok(Ok(RedisAnswer::Admitted(more))) => {
                remaining.extend(more);
                Ok(RedisAnswer::Admitted(remaining))
            }
            Ok(Ok(refused)) => {
                refund(self.clone(), own, record_key, tenant.to_owned()).await;
                Ok(refused)
            }
            failed => {
                // The outage mode answers now; the refund is best effort.
                tokio::spawn(refund(self.clone(), own, record_key, tenant.to_owned()));
                Err(match failed {
                    Ok(Err(error)) => error,
                    _ => RedisUnavailable::Timeout(self.timeout),
                })
            }
        }
    }

    /// The same GCRA check in a round trip of its own, never batched: the
    /// one-check-per-call baseline `keel-bench --admission` compares with.
    pub async fn check_alone(
        &self,
        tenant: &str,
        scopes: &[ScopeLimit],
        cost: u64,
    ) -> Result<RedisAnswer, RedisUnavailable> {
        let check = SlotCheck { tenant: tenant.to_owned(), scopes: scopes.to_vec(), cost: cost.max(1), record: None };
        let mut answers = self.bounded(self.run_checks(std::slice::from_ref(&check))).await?;
        answers.pop().ok_or_else(|| RedisUnavailable::Failed("the limit script answered nothing".to_owned()))?
    }

    /// CHECK on the keys of one slot: through the batcher on one server,
    /// else alone.
    async fn check_slot(&self, check: SlotCheck) -> Result<RedisAnswer, RedisUnavailable> {
        let Some(batcher) = &self.batcher else {
            let mut answers = self.run_checks(std::slice::from_ref(&check)).await?;
            return answers
                .pop()
                .ok_or_else(|| RedisUnavailable::Failed("the limit script answered nothing".into()))?;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        batcher
            .try_send(Queued { check, reply })
            .map_err(|_| RedisUnavailable::Failed("REDIS_QUEUE_MAX checks are already waiting for redis".to_owned()))?;
        answer.await.map_err(|_| RedisUnavailable::Failed("the redis batcher stopped".to_owned()))?
    }

    /// One CHECK over `checks` (one round trip); an answer per check.
    async fn run_checks(
        &self,
        checks: &[SlotCheck],
    ) -> Result<Vec<Result<RedisAnswer, RedisUnavailable>>, RedisUnavailable> {
        let mut invocation = self.check.prepare_invoke();
        invocation.arg(checks.len());
        for check in checks {
            invocation.arg(check.scopes.len()).arg(check.cost);
            match &check.record {
                Some((key, value, ttl_ms)) => {
                    invocation.key(RedisLimiter::record_key(&check.tenant, key));
                    invocation.arg(1).arg(*ttl_ms).arg(value.as_slice());
                }
                None => {
                    invocation.arg(0).arg(0).arg("");
                }
            }
            for scope in &check.scopes {
                let interval_us = interval_us(scope);
                invocation.key(RedisLimiter::key(&check.tenant, scope));
                invocation.arg(interval_us).arg(interval_us.saturating_mul(scope.burst.max(1)));
            }
        }
        let answers: Vec<Value> = self.invoke(&invocation).await?;
        if answers.len() != checks.len() {
            return Err(RedisUnavailable::Failed(format!("the limit script answered {answers:?}")));
        }
        Ok(checks.iter().zip(answers).map(|(check, answer)| check_answer(&check.scopes, answer)).collect())
    }

    /// REFUND on the keys of one slot.
    async fn refund_slot(
        &self,
        tenant: &str,
        scopes: &[ScopeLimit],
        cost: u64,
        record: Option<&str>,
    ) -> Result<(), RedisUnavailable> {
        let mut invocation = self.refund.prepare_invoke();
        invocation.arg(cost);
        match record {
            Some(key) => {
                invocation.key(RedisLimiter::record_key(tenant, key));
                invocation.arg(1);
            }
            None => {
                invocation.arg(0);
            }
        }
        for scope in scopes {
            invocation.key(RedisLimiter::key(tenant, scope));
            invocation.arg(interval_us(scope));
        }
        self.invoke::<i64>(&invocation).await.map(drop)
    }
}

/// One check's reply from CHECK (any reply that is not one is a failure,
/// never a panic: fuzzed by chaos/fuzz `redis_replies`).
pub fn check_answer(scopes: &[ScopeLimit], answer: Value) -> Result<RedisAnswer, RedisUnavailable> {
    let Value::Array(answer) = answer else {
        return Err(RedisUnavailable::Failed(format!("the limit script answered {answer:?}")));
    };
    let unexpected = || RedisUnavailable::Failed(format!("the limit script answered {answer:?}"));
    let int = |index: usize| match answer.get(index) {
        Some(Value::Int(value)) => Some(*value),
        _ => None,
    };
    match int(0) {
        Some(1) if answer.len() == scopes.len() + 1 => Ok(RedisAnswer::Admitted(
            scopes
                .iter()
                .enumerate()
                .map(|(index, scope)| Remaining {
                    scope: scope.clone(),
                    remaining: int(index + 1).and_then(|room| u64::try_from(room).ok()).unwrap_or(0),
                })
                .collect(),
        )),
        Some(0) => {
            let index = int(1).and_then(|index| usize::try_from(index).ok()).ok_or_else(unexpected)?;
            let scope = scopes.get(index.wrapping_sub(1)).ok_or_else(unexpected)?.clone();
            let wait_us = int(2).and_then(|wait| u64::try_from(wait).ok()).ok_or_else(unexpected)?;
            Ok(RedisAnswer::Limited { scope, retry_after: Duration::from_micros(wait_us) })
        }
        Some(2) => match answer.get(1) {
            Some(Value::BulkString(stored)) => Ok(RedisAnswer::Replayed(stored.clone())),
            _ => Err(unexpected()),
        },
        _ => Err(unexpected()),
    }
}

/// The batcher: takes the waiting checks (up to `REDIS_BATCH_CHECKS_MAX`)
/// and sends them as one CHECK, at most `REDIS_BATCHES_IN_FLIGHT` at once,
/// until every sender is gone.
async fn batch_checks(limiter: RedisLimiter, mut waiting: tokio::sync::mpsc::Receiver<Queued>) {
    use crate::limits::{REDIS_BATCH_CHECKS_MAX, REDIS_BATCHES_IN_FLIGHT};
    let in_flight = Arc::new(tokio::sync::Semaphore::new(REDIS_BATCHES_IN_FLIGHT));
    while let Some(first) = waiting.recv().await {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        // Taken after the permit: checks that came while every batch was in
        // flight go together.
        let mut batch = vec![first];
        while batch.len() < REDIS_BATCH_CHECKS_MAX {
            match waiting.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        // A caller past its deadline has its answer already: not charged.
        batch.retain(|queued| !queued.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let limiter = limiter.clone();
        tokio::spawn(async move {
            let (checks, replies): (Vec<SlotCheck>, Vec<_>) =
                batch.into_iter().map(|queued| (queued.check, queued.reply)).unzip();
            match limiter.bounded(limiter.run_checks(&checks)).await {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                }
                Err(error) => {
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}

fn interval_us(scope: &ScopeLimit) -> u64 {
    (60_000_000 / scope.calls_per_minute.max(1)).max(1)
}

/// A shared breaker's answer to an admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerAnswer {
    /// The phase before the call.
    pub before: super::breaker::Phase,
    /// The gate.
    pub gate: super::breaker::Gate,
    /// The phase after the call.
    pub after: super::breaker::Phase,
}

impl RedisLimiter {
    /// The Redis key of a shared breaker.
    pub fn breaker_key(breaker: &str) -> String {
        format!("keel:br:{{b:{breaker}}}")
    }

    fn breaker_ttl_ms(config: &super::breaker::BreakerConfig) -> u64 {
        config.window_ms.max(config.cool_down_ms).saturating_mul(crate::limits::BREAKER_STATE_TTL_FACTOR)
    }

    /// An admission through the shared `breaker` (hands out a probe when half-open).
    pub async fn breaker_admit(
        &self,
        config: &super::breaker::BreakerConfig,
        breaker: &str,
    ) -> Result<BreakerAnswer, RedisUnavailable> {
        use super::breaker::{Gate, Phase};
        let mut invocation = self.breaker_admit.prepare_invoke();
        invocation.key(RedisLimiter::breaker_key(breaker));
        invocation.arg(config.cool_down_ms).arg(config.half_open_probes).arg(RedisLimiter::breaker_ttl_ms(config));
        let answer: Vec<i64> = self.bounded(self.invoke(&invocation)).await?;
        let [before, gate, retry_after_ms, after] = answer[..] else {
            return Err(RedisUnavailable::Failed(format!("the breaker script answered {answer:?}")));
        };
        let gate = match gate {
            1 => Gate::Pass,
            2 => Gate::Probe,
            _ => Gate::Refuse { retry_after_ms: u64::try_from(retry_after_ms).unwrap_or(1).max(1) },
        };
        Ok(BreakerAnswer { before: Phase::from_code(before), gate, after: Phase::from_code(after) })
    }

    /// The shared `breaker`'s phase, read only.
    pub async fn breaker_phase(&self, breaker: &str) -> Result<super::breaker::Phase, RedisUnavailable> {
        let command = redis::cmd("HGET").arg(RedisLimiter::breaker_key(breaker)).arg("phase").to_owned();
        let phase: Option<i64> = self.bounded(self.query(&command)).await?;
        Ok(super::breaker::Phase::from_code(phase.unwrap_or(0)))
    }

    /// A reported outcome for the shared `breaker`: (phase before, after).
    pub async fn breaker_report(
        &self,
        config: &super::breaker::BreakerConfig,
        breaker: &str,
        failed: bool,
    ) -> Result<(super::breaker::Phase, super::breaker::Phase), RedisUnavailable> {
        use super::breaker::Phase;
        let mut invocation = self.breaker_report.prepare_invoke();
        invocation.key(RedisLimiter::breaker_key(breaker));
        invocation
            .arg(u8::from(failed))
            .arg(config.window_ms)
            .arg(crate::limits::BREAKER_WINDOW_BUCKETS)
            .arg(config.min_calls)
            .arg(config.error_rate_percent)
            .arg(config.half_open_probes)
            .arg(RedisLimiter::breaker_ttl_ms(config));
        let answer: Vec<i64> = self.bounded(self.invoke(&invocation)).await?;
        let [before, after] = answer[..] else {
            return Err(RedisUnavailable::Failed(format!("the breaker script answered {answer:?}")));
        };
        Ok((Phase::from_code(before), Phase::from_code(after)))
    }
}
