//! What Redis answers the limiter: arbitrary bytes parsed as a RESP reply
//! (redis-rs's parser), then read as a limit check's answer for one to four
//! scopes, as a breaker script's answer, and as a stored idempotency
//! record. Any reply is an answer or a failure, never a panic.
#![no_main]

use keel_node::admission::limiter::ScopeLimit;
use keel_node::admission::redis_limiter::check_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&scopes, reply)) = data.split_first() else {
        return;
    };
    let Ok(value) = redis::parse_redis_value(reply) else {
        return;
    };
    let scopes: Vec<ScopeLimit> = (0..=usize::from(scopes % 4))
        .map(|index| ScopeLimit { key: format!("scope:{index}"), calls_per_minute: 60, burst: 10 })
        .collect();
    let _ = check_answer(&scopes, value.clone());
    let _ = redis::from_redis_value::<Vec<i64>>(value.clone());
    let _ = redis::from_redis_value::<Option<i64>>(value.clone());
    if let Ok(Some(record)) = redis::from_redis_value::<Option<Vec<u8>>>(value) {
        let _ = keel_node::api::admission::replayed(&record);
    }
});
