//! Service-level objectives per RPC class and their error-budget burn rate.
//!
//! A class (reads, writes) has an objective: a share of its RPCs that must
//! be *good* — answered within the class's latency bound and not failed by
//! the server (`INTERNAL`, `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `UNKNOWN`,
//! `DATA_LOSS`, `RESOURCE_EXHAUSTED`; a refusal of bad input is a good,
//! correct answer). The burn rate over a window is the bad share divided by
//! the budget (`1 - objective`): 1 spends the budget exactly over the SLO
//! period, 14.4 over 1 h is the classic page-now alert.
//!
//! ```text
//!  edge: RpcMetrics::record(method, code, elapsed) ─► class_of(method) ─► SloTracker::record(good?)
//!        ring of SLO_BUCKET_S buckets covering SLO_WINDOW_LONG_S ─► /metrics:
//!        keel_slo_requests_total{class}, keel_slo_good_total{class}, keel_slo_objective{class},
//!        keel_slo_latency_bound_seconds{class}, keel_slo_burn_rate{class, window="5m"|"1h"}
//! ```

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Width of one bucket of the sliding windows.
pub const SLO_BUCKET_S: u64 = 10;
/// The short burn-rate window.
pub const SLO_WINDOW_SHORT_S: u64 = 5 * 60;
/// The long burn-rate window (and what the ring keeps).
pub const SLO_WINDOW_LONG_S: u64 = 60 * 60;
const BUCKETS: usize = (SLO_WINDOW_LONG_S / SLO_BUCKET_S) as usize;
/// The tightest latency bound an objective may set.
pub const SLO_LATENCY_MS_MIN: u64 = 1;
/// The loosest latency bound an objective may set.
pub const SLO_LATENCY_MS_MAX: u64 = 60_000;
/// The highest objective (a budget of one RPC in a million).
pub const SLO_OBJECTIVE_MAX: f64 = 0.999_999;

/// `[slo]`: one objective per RPC class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Reads (`Get*`, `List*`, `Evaluate`, `Test`, status) answered within this bound count as good.
    pub read_latency_ms: u64,
    /// Share of reads that must be good, in (0, `SLO_OBJECTIVE_MAX`].
    pub read_objective: f64,
    /// Writes answered within this bound count as good.
    pub write_latency_ms: u64,
    /// Share of writes that must be good.
    pub write_objective: f64,
}

impl Default for SloConfig {
    fn default() -> Self {
        SloConfig { read_latency_ms: 300, read_objective: 0.999, write_latency_ms: 1_000, write_objective: 0.999 }
    }
}

impl SloConfig {
    /// The first key out of range and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let latency = |key, value: u64| {
            if (SLO_LATENCY_MS_MIN..=SLO_LATENCY_MS_MAX).contains(&value) {
                Ok(())
            } else {
                Err((key, format!("must be between {SLO_LATENCY_MS_MIN} and {SLO_LATENCY_MS_MAX}")))
            }
        };
        let objective = |key, value: f64| {
            if value > 0.0 && value <= SLO_OBJECTIVE_MAX {
                Ok(())
            } else {
                Err((key, format!("must be above 0 and at most {SLO_OBJECTIVE_MAX}")))
            }
        };
        latency("slo.read_latency_ms", self.read_latency_ms)?;
        objective("slo.read_objective", self.read_objective)?;
        latency("slo.write_latency_ms", self.write_latency_ms)?;
        objective("slo.write_objective", self.write_objective)
    }
}

/// What an RPC is, for its objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcClass {
    /// Reads state.
    Read,
    /// Changes state (or membership).
    Write,
    /// Long-lived (`Watch`), health and reflection: no latency objective.
    Other,
}

impl RpcClass {
    fn label(self) -> &'static str {
        match self {
            RpcClass::Read => "read",
            RpcClass::Write => "write",
            RpcClass::Other => "other",
        }
    }
}

/// The class of `/package.Service/Method`.
pub fn class_of(path: &str) -> RpcClass {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return RpcClass::Other;
    };
    if !service.starts_with("keel.v1.") || method == "Watch" {
        return RpcClass::Other;
    }
    const READS: [&str; 4] = ["Get", "List", "Evaluate", "Test"];
    if READS.iter().any(|prefix| method.starts_with(prefix)) { RpcClass::Read } else { RpcClass::Write }
}

/// Whether the server failed the RPC (a bad-input refusal is a correct answer).
fn is_server_fault(code: &str) -> bool {
    matches!(code, "INTERNAL" | "UNAVAILABLE" | "DEADLINE_EXCEEDED" | "UNKNOWN" | "DATA_LOSS" | "RESOURCE_EXHAUSTED")
        || code == "TRANSPORT_ERROR"
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket period (seconds since start / SLO_BUCKET_S) it counts.
    period: u64,
    total: u64,
    good: u64,
}

#[derive(Debug)]
struct ClassWindow {
    latency: Duration,
    objective: f64,
    total: u64,
    good: u64,
    ring: Box<[Bucket; BUCKETS]>,
}

impl ClassWindow {
    fn new(latency_ms: u64, objective: f64) -> ClassWindow {
        ClassWindow {
            latency: Duration::from_millis(latency_ms),
            objective,
            total: 0,
            good: 0,
            ring: Box::new([Bucket::default(); BUCKETS]),
        }
    }

    fn record(&mut self, period: u64, good: bool) {
        self.total += 1;
        self.good += u64::from(good);
        let bucket = &mut self.ring[(period % BUCKETS as u64) as usize];
        if bucket.period != period {
            *bucket = Bucket { period, total: 0, good: 0 };
        }
        bucket.total += 1;
        bucket.good += u64::from(good);
    }

    /// Bad share over the last `window_s` divided by the budget; 0 with no traffic.
    fn burn_rate(&self, now_period: u64, window_s: u64) -> f64 {
        let periods = window_s / SLO_BUCKET_S;
        let (total, good) = self
            .ring
            .iter()
            .filter(|bucket| bucket.total > 0 && now_period.saturating_sub(bucket.period) < periods)
            .fold((0u64, 0u64), |(total, good), bucket| (total + bucket.total, good + bucket.good));
        if total == 0 {
            return 0.0;
        }
        let bad_share = (total - good) as f64 / total as f64;
        bad_share / (1.0 - self.objective)
    }
}

/// Good and total RPCs per class, overall and in sliding windows. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct SloTracker {
    started: Instant,
    windows: Arc<Mutex<[ClassWindow; 2]>>,
}

impl Default for SloTracker {
    fn default() -> Self {
        SloTracker::new(&SloConfig::default())
    }
}

impl SloTracker {
    /// Tracking against `config`.
    pub fn new(config: &SloConfig) -> SloTracker {
        SloTracker {
            started: Instant::now(),
            windows: Arc::new(Mutex::new([
                ClassWindow::new(config.read_latency_ms, config.read_objective),
                ClassWindow::new(config.write_latency_ms, config.write_objective),
            ])),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [ClassWindow; 2]> {
        self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn period(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs() / SLO_BUCKET_S
    }

    /// Counts one RPC of `path` that answered `code` after `elapsed`, at `at`.
    pub fn record(&self, path: &str, code: &str, elapsed: Duration, at: Instant) {
        let index = match class_of(path) {
            RpcClass::Read => 0,
            RpcClass::Write => 1,
            RpcClass::Other => return,
        };
        let period = self.period(at);
        let mut windows = self.lock();
        let window = &mut windows[index];
        let good = !is_server_fault(code) && elapsed <= window.latency;
        window.record(period, good);
    }

    /// The burn rate of `class` over the last `window_s` seconds, at `at`.
    pub fn burn_rate(&self, class: RpcClass, window_s: u64, at: Instant) -> f64 {
        let index = match class {
            RpcClass::Read => 0,
            RpcClass::Write => 1,
            RpcClass::Other => return 0.0,
        };
        self.lock()[index].burn_rate(self.period(at), window_s)
    }
}

/// One series of `/metrics`: name, help, and its value per class.
type Series<T> = (&'static str, &'static str, fn(&ClassWindow) -> T);

impl prometheus_client::collector::Collector for SloTracker {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let now = self.period(Instant::now());
        let windows = self.lock();
        let classes = [(RpcClass::Read, &windows[0]), (RpcClass::Write, &windows[1])];
        let counters: [Series<u64>; 2] = [
            ("keel_slo_requests", "RPCs counted against the class's objective", |w| w.total),
            ("keel_slo_good", "RPCs within the latency bound and not failed by the server", |w| w.good),
        ];
        for (name, help, value) in counters {
            let mut family =
                encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
            for (class, window) in &classes {
                let labels = [("class", class.label())];
                ConstCounter::new(value(window)).encode(family.encode_family(&labels)?)?;
            }
        }
        let gauges: [Series<f64>; 2] = [
            ("keel_slo_objective", "Share of the class's RPCs that must be good", |w| w.objective),
            ("keel_slo_latency_bound_seconds", "Latency within which an RPC of the class is good", |w| {
                w.latency.as_secs_f64()
            }),
        ];
        for (name, help, value) in gauges {
            let mut family =
                encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
            for (class, window) in &classes {
                let labels = [("class", class.label())];
                ConstGauge::new(value(window)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "keel_slo_burn_rate",
            "Error-budget burn rate: bad share over the window / (1 - objective)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (class, window) in &classes {
            for (label, window_s) in [("5m", SLO_WINDOW_SHORT_S), ("1h", SLO_WINDOW_LONG_S)] {
                let labels = [("class", class.label()), ("window", label)];
                ConstGauge::new(window.burn_rate(now, window_s)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_fall_into_classes() {
        assert_eq!(class_of("/keel.v1.TenantService/GetTenant"), RpcClass::Read);
        assert_eq!(class_of("/keel.v1.RegistryService/ListEngines"), RpcClass::Read);
        assert_eq!(class_of("/keel.v1.PolicyService/Evaluate"), RpcClass::Read);
        assert_eq!(class_of("/keel.v1.TenantService/CreateTenant"), RpcClass::Write);
        assert_eq!(class_of("/keel.v1.EventService/Watch"), RpcClass::Other);
        assert_eq!(class_of("/grpc.health.v1.Health/Check"), RpcClass::Other);
        assert_eq!(class_of("garbage"), RpcClass::Other);
    }

    #[test]
    fn burn_rate_is_the_bad_share_over_the_budget_within_the_window() {
        let tracker = SloTracker::new(&SloConfig::default());
        let start = tracker.started;
        let read = "/keel.v1.TenantService/GetTenant";
        // 1 000 reads: 990 good, 5 slow, 5 failed by the server, 10 refused bad input (good).
        for i in 0..1_000u32 {
            let (code, elapsed) = match i {
                0..5 => ("OK", Duration::from_millis(301)),
                5..10 => ("UNAVAILABLE", Duration::from_millis(1)),
                10..20 => ("INVALID_ARGUMENT", Duration::from_millis(1)),
                _ => ("OK", Duration::from_millis(2)),
            };
            tracker.record(read, code, elapsed, start);
        }
        let burn = tracker.burn_rate(RpcClass::Read, SLO_WINDOW_SHORT_S, start);
        assert!((burn - 10.0).abs() < 1e-9, "1 % bad against a 0.1 % budget burns at 10, got {burn}");
        assert_eq!(tracker.burn_rate(RpcClass::Write, SLO_WINDOW_SHORT_S, start), 0.0);
        // Ten minutes on, the short window has forgotten them; the long one has not.
        let later = start + Duration::from_secs(600);
        assert_eq!(tracker.burn_rate(RpcClass::Read, SLO_WINDOW_SHORT_S, later), 0.0);
        assert!((tracker.burn_rate(RpcClass::Read, SLO_WINDOW_LONG_S, later) - 10.0).abs() < 1e-9);
        // Past the long window, a recycled bucket counts only its new period.
        let much_later = start + Duration::from_secs(SLO_WINDOW_LONG_S + 5);
        tracker.record(read, "OK", Duration::from_millis(1), much_later);
        assert_eq!(tracker.burn_rate(RpcClass::Read, SLO_WINDOW_LONG_S, much_later), 0.0);
    }
}
