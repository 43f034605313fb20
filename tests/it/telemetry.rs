//! OpenTelemetry export over OTLP/gRPC, against a real receiver
//! ([`OtlpReceiver`]): a node's RPC spans and metrics arrive with the node's
//! resource; a caller's `traceparent` parents the node's span; a write
//! forwarded by a follower is one trace on both members.

use crate::cluster_harness::{Cluster, ClusterOptions, TelemetryOptions};
use crate::fixture::Fixture;
use crate::harness::KeelProcess;
use crate::otlp_receiver::{MetricKind, OtlpReceiver, ReceivedSpan};
use anyhow::{Result, ensure};
use keel_client::{ClientConfig, KeelClient};
use keel_proto::v1 as pb;
use std::time::Duration;

/// `telemetry.export_interval_ms` of the nodes under test: spans and metrics
/// leave within this.
const EXPORT_INTERVAL_MS: u64 = 200;
/// How long a test waits for something to be exported (many intervals: the
/// first export also opens the connection).
const EXPORT_DEADLINE: Duration = Duration::from_secs(30);
const CREATE_TENANT: &str = "/keel.v1.TenantService/CreateTenant";
const GET_STATUS: &str = "/keel.v1.ClusterService/GetStatus";

/// A dev node exporting to `receiver`.
async fn node_exporting_to(receiver: &OtlpReceiver) -> Result<KeelProcess> {
    let args = ["--dev", "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"];
    let mut node = KeelProcess::new(args.iter().map(|arg| arg.to_string()).collect())?;
    node.set_env("KEEL_TELEMETRY__OTLP_ENDPOINT", &receiver.endpoint());
    node.set_env("KEEL_TELEMETRY__EXPORT_INTERVAL_MS", &EXPORT_INTERVAL_MS.to_string());
    node.launch().await?;
    node.wait_ready().await?;
    Ok(node)
}

/// Whether `span` is the edge's span of an RPC to `method` on node `node_id`.
fn is_rpc_span(span: &ReceivedSpan, method: &str, node_id: u64) -> bool {
    span.name == "rpc"
        && span.attribute("rpc.method") == Some(method)
        && span.instance_id() == Some(&node_id.to_string())
}

#[tokio::test]
async fn rpc_spans_and_metrics_reach_an_otlp_receiver() -> Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let node = node_exporting_to(&receiver).await?;
    let client =
        KeelClient::connect(ClientConfig::new([node.endpoint.clone()]).with_token(node.bearer_token())).await?;
    client.cluster_status().await?;
    let tenant = Fixture::tenant_request("acme").tenant.unwrap_or_default();
    client.create_tenant(tenant).await?;

    let span = receiver.span(EXPORT_DEADLINE, |span| is_rpc_span(span, CREATE_TENANT, 1)).await?;
    ensure!(span.resource.get("service.name").map(String::as_str) == Some("keeld"), "{span:#?}");
    ensure!(span.resource.get("keel.node.region").map(String::as_str) == Some("local"), "{span:#?}");
    ensure!(span.attribute("node_id") == Some("1") && span.attribute("request_id").is_some(), "{span:#?}");
    ensure!(span.trace_id.len() == 32 && span.parent_span_id.is_empty(), "a root span: {span:#?}");

    let duration = receiver
        .point(EXPORT_DEADLINE, |point| {
            point.name == "keel.rpc.duration"
                && point.attributes.get("rpc.method").map(String::as_str) == Some(CREATE_TENANT)
        })
        .await?;
    ensure!(duration.kind == MetricKind::Histogram && duration.count >= 1, "{duration:#?}");
    ensure!(duration.resource.get("service.name").map(String::as_str) == Some("keeld"), "{duration:#?}");
    ensure!(duration.resource.get("service.instance.id").map(String::as_str) == Some("1"), "{duration:#?}");
    let responses = receiver
        .point(EXPORT_DEADLINE, |point| {
            point.name == "keel.rpc.responses"
                && point.attributes.get("rpc.method").map(String::as_str) == Some(CREATE_TENANT)
                && point.attributes.get("rpc.response.status_code").map(String::as_str) == Some("OK")
        })
        .await?;
    ensure!(responses.kind == MetricKind::Sum && responses.count >= 1, "{responses:#?}");
    Ok(())
}

#[tokio::test]
async fn a_callers_traceparent_parents_the_rpc_span() -> Result<()> {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";
    let receiver = OtlpReceiver::start().await?;
    let node = node_exporting_to(&receiver).await?;
    let mut client = pb::cluster_service_client::ClusterServiceClient::new(node.channel().await?);
    let mut request = tonic::Request::new(pb::GetStatusRequest {});
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01");
    request.metadata_mut().insert("traceparent", traceparent.parse()?);
    client.get_status(request).await?;

    let span =
        receiver.span(EXPORT_DEADLINE, |span| is_rpc_span(span, GET_STATUS, 1) && span.trace_id == TRACE_ID).await?;
    ensure!(span.parent_span_id == CALLER_SPAN_ID && span.span_id != CALLER_SPAN_ID, "{span:#?}");
    Ok(())
}

#[tokio::test]
async fn a_write_forwarded_by_a_follower_is_one_trace_on_both_members() -> Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let telemetry = TelemetryOptions { otlp_addr: receiver.addr(), export_interval_ms: EXPORT_INTERVAL_MS };
    let cluster = Cluster::three(ClusterOptions { telemetry: Some(telemetry), ..ClusterOptions::default() }).await?;
    let leader = cluster.leader().await?;
    let follower = (leader + 1) % cluster.nodes.len();
    let (leader_id, follower_id) = (cluster.ids[leader], cluster.ids[follower]);
    let fixture = Fixture::with_root(cluster.root.clone());
    fixture.create_tenant(&cluster.nodes[follower], "acme").await?;

    let on_follower = receiver.span(EXPORT_DEADLINE, |span| is_rpc_span(span, CREATE_TENANT, follower_id)).await?;
    let on_leader = receiver
        .span(EXPORT_DEADLINE, |span| {
            span.instance_id() == Some(&leader_id.to_string()) && span.trace_id == on_follower.trace_id
        })
        .await?;
    ensure!(!on_leader.parent_span_id.is_empty(), "the leader's span continues the follower's: {on_leader:#?}");
    Ok(())
}
