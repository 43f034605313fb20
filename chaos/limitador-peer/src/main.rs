//! `keel-limitador-peer --redis-url URL --clients N --duration-s S [--storage redis|redis_cached]`
//!
//! Limitador's library (`AsyncRateLimiter`) on its Redis storage, with the
//! limit `keel-bench --admission` gives Keel's tenant: one counter per tenant,
//! far above the load, so every check reaches Redis and is admitted. Closed
//! loop: `clients` tasks, one outstanding check each, for `duration-s`
//! seconds. Prints one JSON line in keel-bench's `LoadResult` shape.

use limitador::AsyncRateLimiter;
use limitador::limit::{Context, Expression, Limit};
use limitador::storage::AsyncCounterStorage;
use limitador::storage::redis::{AsyncRedisStorage, CachedRedisStorageBuilder};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NAMESPACE: &str = "keel-bench";
const TENANT: &str = "bench";
/// Far above any load: 100 million per second (Keel's bench tenant gets
/// 6 000 000 000 per minute).
const MAX_PER_SECOND: u64 = 100_000_000;

struct Args {
    redis_url: String,
    clients: usize,
    duration: Duration,
    storage: String,
}

fn parse() -> Result<Args, String> {
    let mut args =
        Args { redis_url: String::new(), clients: 1, duration: Duration::from_secs(10), storage: "redis".into() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--redis-url" => args.redis_url = value,
            "--clients" => args.clients = value.parse().map_err(|e| format!("--clients: {e}"))?,
            "--duration-s" => {
                args.duration = Duration::from_secs(value.parse().map_err(|e| format!("--duration-s: {e}"))?)
            }
            "--storage" => args.storage = value,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.redis_url.is_empty() {
        return Err("--redis-url is required".into());
    }
    Ok(args)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() {
    let args = match parse() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("keel-limitador-peer: {error}");
            std::process::exit(2);
        }
    };
    if let Err(error) = run(args).await {
        eprintln!("keel-limitador-peer: {error}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let storage: Box<dyn AsyncCounterStorage> = match args.storage.as_str() {
        "redis" => Box::new(AsyncRedisStorage::new(&args.redis_url).await.map_err(|e| e.to_string())?),
        "redis_cached" => {
            Box::new(CachedRedisStorageBuilder::new(&args.redis_url).build().await.map_err(|e| e.to_string())?)
        }
        other => return Err(format!("unknown storage {other} (redis, redis_cached)")),
    };
    let limiter = Arc::new(AsyncRateLimiter::new_with_storage(storage));
    let tenant: Expression = "tenant".try_into().map_err(|e| format!("{e:?}"))?;
    limiter.add_limit(Limit::new(NAMESPACE, MAX_PER_SECOND, 1, [], [tenant]));

    let started = Instant::now();
    let end = started + args.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        let limiter = Arc::clone(&limiter);
        tasks.spawn(async move {
            let values = HashMap::from([("tenant".to_owned(), TENANT.to_owned())]);
            let ctx: Context = values.into();
            let namespace = NAMESPACE.into();
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < end {
                let sent = Instant::now();
                match limiter.check_rate_limited_and_update(&namespace, &ctx, 1).await {
                    Ok(result) if !result.limited => {
                        latencies.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    while let Some(joined) = tasks.join_next().await {
        let (task_latencies, task_errors) = joined.map_err(|e| e.to_string())?;
        latencies.extend(task_latencies);
        errors += task_errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ops = latencies.len() as u64;
    let result = serde_json::json!({
        "clients": args.clients,
        "ops": ops,
        "errors": errors,
        "elapsed_s": elapsed,
        "ops_per_s": ops as f64 / elapsed,
        "p50_us": percentile(&latencies, 50.0),
        "p99_us": percentile(&latencies, 99.0),
    });
    println!("{result}");
    Ok(())
}
