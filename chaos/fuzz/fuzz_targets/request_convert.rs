//! Request conversion from protobuf: arbitrary bytes decoded as each
//! mutating and evaluating request, then converted as the API does.
#![no_main]

use keel_node::api::convert;
use keel_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => {
            if let Ok(request) = pb::PublishEngineVersionRequest::decode(bytes) {
                let _ = convert::manifest_bytes(&request.manifest);
                let _ = keel_kernel::manifest::parse(&request.manifest);
                let _ = convert::signatures(request.signatures);
            }
        }
        1 => {
            if let Ok(request) = pb::CreateTenantRequest::decode(bytes) {
                let _ = convert::tenant_spec(request.tenant);
            }
        }
        2 => {
            if let Ok(request) = pb::AddKeyRequest::decode(bytes) {
                let _ = convert::key_spec(request.spec);
                let _ = convert::signatures(request.signatures);
            }
        }
        3 => {
            if let Ok(request) = pb::RotateRootRequest::decode(bytes) {
                let _ = convert::root_metadata_bytes(request.metadata);
                let _ = convert::signatures(request.signatures);
            }
        }
        4 => {
            if let Ok(request) = pb::PublishEventRequest::decode(bytes) {
                let _ = convert::publish_event(request);
            }
        }
        5 => {
            if let Ok(request) = pb::WatchRequest::decode(bytes) {
                let _ = convert::watch_filter(&request);
            }
        }
        6 => {
            if let Ok(request) = pb::EvaluateRequest::decode(bytes) {
                let _ = convert::evaluation_context(request.context);
            }
        }
        _ => {
            if let Ok(request) = pb::TestPolicyRequest::decode(bytes) {
                let _ = convert::policy_test_cases(request.cases);
                let _ = convert::policy_name("policy", &request.source);
            }
        }
    }
});
