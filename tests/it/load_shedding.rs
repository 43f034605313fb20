//! Server limits against a real keeld (issue 8): half-sent requests on the
//! ops port cannot starve the node, and a burst over the in-flight bound is
//! shed with `RESOURCE_EXHAUSTED` and `RetryInfo` while memory stays bounded.

use crate::fixture::{Fixture, reason_of};
use crate::harness::KeelProcess;
use anyhow::{Context, Result, ensure};
use keel_proto::v1 as pb;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tonic::Code;
use tonic_types::StatusExt;

const DEV_ARGS: [&str; 7] =
    ["--dev", "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"];

async fn dev_node(envs: &[(&str, &str)]) -> Result<KeelProcess> {
    let mut node = KeelProcess::new(DEV_ARGS.iter().map(|arg| arg.to_string()).collect())?;
    for (key, value) in envs {
        node.set_env(key, value);
    }
    node.launch().await?;
    node.wait_ready().await?;
    Ok(node)
}

fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).context("no VmRSS")?;
    let kib: u64 = line.split_whitespace().nth(1).context("no VmRSS value")?.parse()?;
    Ok(kib * 1024)
}

#[tokio::test]
async fn half_sent_ops_requests_do_not_starve_the_node() -> Result<()> {
    let node = dev_node(&[]).await?;
    let fixture = Fixture::new(&node).await?;
    // 5 000 connections at once, each sending half a request and holding on.
    // Connections the node closes at once (over its ops connection bound) may
    // fail to connect or to write: that is the point.
    let half_sent = (0..5_000).map(|_| {
        let addr = node.ops_addr.clone();
        async move {
            let connect = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr));
            let mut stream = connect.await.ok()?.ok()?;
            let _ = stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: keel\r\n").await;
            Some(stream)
        }
    });
    let flood = futures::future::join_all(half_sent);
    let writes = async {
        for index in 0..5 {
            fixture.create_tenant(&node, &format!("t{index}")).await.context("a gRPC write while ops is flooded")?;
        }
        Ok::<_, anyhow::Error>(())
    };
    let (held, written) = tokio::join!(flood, writes);
    written?;
    // The half-sent requests time out; ops answers again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = keel_chaos::process::http_get(&node.ops_addr, "/readyz").await {
            break;
        }
        ensure!(Instant::now() < deadline, "ops HTTP never answered again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The node let go of every half-sent request: each held connection was
    // closed (over the bound at once, the others at the header timeout).
    let closed = held.into_iter().flatten().map(|mut stream| async move {
        let mut buffer = [0u8; 512];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut stream, &mut buffer))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    });
    let still_open = futures::future::join_all(closed).await.into_iter().filter(|closed| !closed).count();
    ensure!(still_open == 0, "{still_open} half-sent requests still hold a connection");
    let log = node.log();
    ensure!(!log.contains("Too many open files"), "the node ran out of file descriptors:\n{log}");
    Ok(())
}

#[tokio::test]
async fn a_burst_over_the_in_flight_bound_is_shed_with_retry_info() -> Result<()> {
    let node = dev_node(&[("KEEL_API__IN_FLIGHT_REQUESTS_MAX", "2")]).await?;
    let pid = node.pid().context("running")?;
    let rss_before = rss_bytes(pid)?;
    let mut calls = Vec::new();
    for connection in 0..8 {
        let client = crate::single_node::tenants(&node).await?;
        for index in 0..40 {
            let mut client = client.clone();
            calls.push(tokio::spawn(async move {
                client.create_tenant(Fixture::tenant_request(&format!("c{connection}-{index}"))).await
            }));
        }
    }
    let (mut applied, mut shed) = (0, 0);
    for call in calls {
        match call.await? {
            Ok(_) => applied += 1,
            Err(status) => {
                ensure!(status.code() == Code::ResourceExhausted, "{status:?}");
                ensure!(reason_of(&status) == "LIMIT_EXCEEDED", "{status:?}");
                let info = status.get_details_error_info().context("error info")?;
                ensure!(info.metadata.get("limit").map(String::as_str) == Some("IN_FLIGHT_REQUESTS_MAX"), "{info:?}");
                ensure!(status.get_details_retry_info().is_some(), "shed requests say when to retry");
                shed += 1;
            }
        }
    }
    ensure!(applied > 0 && shed > 0, "{applied} applied, {shed} shed");
    let rss_after = rss_bytes(pid)?;
    ensure!(rss_after < rss_before + 256 * 1024 * 1024, "RSS grew from {rss_before} to {rss_after}");
    let (_, metrics) = keel_chaos::process::http_get(&node.ops_addr, "/metrics").await?;
    ensure!(metrics.contains("keel_requests_shed_total"), "{metrics}");
    // The node still serves.
    Fixture::new(&node).await?.create_tenant(&node, "after").await?;
    let _ = pb::TenantTier::Basic;
    Ok(())
}

fn metric(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with('{'))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn watchers_that_never_read_hold_bounded_memory_and_release_it_when_cut_off() -> Result<()> {
    let node = dev_node(&[]).await?;
    let mut events = pb::event_service_client::EventServiceClient::new(node.channel().await?);
    for index in 0..32 {
        let request = pb::PublishEventRequest {
            topic: "big".into(),
            payload: vec![index as u8; 1024 * 1024 - 1024],
            ..Default::default()
        };
        events.publish(request).await?;
    }
    let pid = node.pid().context("running")?;
    let rss_before = rss_bytes(pid)?;
    // 32 watchers from the start of the history, each on its own connection,
    // none of which ever reads.
    let mut streams = Vec::new();
    for _ in 0..32 {
        let mut client = pb::event_service_client::EventServiceClient::new(node.channel().await?)
            .max_decoding_message_size(8 * 1024 * 1024);
        let request = pb::WatchRequest { from_revision: 1, ..Default::default() };
        streams.push(client.watch(request).await?.into_inner());
    }
    // Wait until the watchers have messages (~1 MiB each, one per watcher at
    // most: a second one would pass its 2 MiB queue) waiting on them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let queued = loop {
        let (_, metrics) = keel_chaos::process::http_get(&node.ops_addr, "/metrics").await?;
        let queued = metric(&metrics, "keel_watch_queued_bytes").context("queued bytes metric")?;
        if queued >= 24 * 1024 * 1024 {
            break queued;
        }
        ensure!(Instant::now() < deadline, "the watchers' queues never filled: {queued} bytes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(queued <= 64 * 1024 * 1024, "{queued} bytes queued for watchers");
    let rss_during = rss_bytes(pid)?;
    // Documented bound: WATCH_NODE_BUFFER_BYTES_MAX (64 MiB) for the queues,
    // plus per stream one message being encoded and the HTTP/2 send buffer.
    ensure!(
        rss_during < rss_before + 256 * 1024 * 1024,
        "RSS grew from {} MiB to {} MiB with 32 stalled watchers",
        rss_before >> 20,
        rss_during >> 20
    );
    // Cut off (the clients keep their streams open): every queued byte goes back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = keel_chaos::process::http_get(&node.ops_addr, "/metrics").await?;
        if metric(&metrics, "keel_watch_queued_bytes") == Some(0) && metric(&metrics, "keel_watchers") == Some(0) {
            break;
        }
        ensure!(Instant::now() < deadline, "stalled watchers were not cut off:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(streams);
    Ok(())
}
