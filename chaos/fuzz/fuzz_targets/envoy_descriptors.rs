//! Envoy's rate-limit requests and Keel's own admissions: arbitrary bytes
//! decoded as a `RateLimitRequest` (each descriptor mapped onto an admission
//! as `ShouldRateLimit` does, then validated) or as an `AdmitRequest`
//! (validated as `Admit` does). Every input is a request or a rejection.
#![no_main]

use keel_node::api::{admission, envoy_rls};
use keel_proto::envoy::ratelimit::v3 as rls;
use keel_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    if kind % 2 == 0 {
        let Ok(request) = rls::RateLimitRequest::decode(bytes) else {
            return;
        };
        let default_hits = u64::from(request.hits_addend.max(1));
        for descriptor in &request.descriptors {
            let hits = descriptor.hits_addend.map(|hits| hits.max(1)).unwrap_or(default_hits);
            if let Ok(Some(admit)) = envoy_rls::admission_of(descriptor, hits) {
                let _ = admission::admission_of(&admit);
            }
        }
    } else if let Ok(request) = pb::AdmitRequest::decode(bytes) {
        let _ = admission::admission_of(&request);
    }
});
