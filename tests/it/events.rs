//! Events, watch and idempotency keys over real keeld processes.
//!
//! One node: the bad inputs of issue 4 (watch from a future revision, an
//! unknown kind, an event over 1 MiB, a reused idempotency key) each get a
//! clear status and a stable reason and leave the digest as it was; replays
//! answer the first revision; idle watches get progress; a start revision
//! older than the retained history gets `COMPACTED`.
//!
//! Three nodes with `kill -9` of the leader in the middle of a stream of
//! keyed publishes: every watcher sees every event exactly once, in order,
//! resuming on another member where its stream broke, and a mutation retried
//! with the same key is applied once.

use crate::cluster_harness::{Cluster, ClusterOptions};
use crate::fixture::reason_of;
use crate::harness::KeelProcess;
use anyhow::{Context, Result, bail, ensure};
use keel_chaos::process::AuthChannel as Channel;
use keel_client::events::{WatchItem, WatchOptions};
use keel_client::{ClientConfig, KeelClient};
use keel_proto::v1 as pb;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Code;

/// Events published in the cluster test, half before and half after the kill.
const CLUSTER_EVENTS: usize = 40;
/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(60);

fn events(channel: Channel) -> pb::event_service_client::EventServiceClient<Channel> {
    pb::event_service_client::EventServiceClient::new(channel).max_decoding_message_size(4 * 1024 * 1024)
}

fn publish_request(topic: &str, payload: &[u8], key: &str) -> pb::PublishEventRequest {
    pb::PublishEventRequest {
        topic: topic.into(),
        tenant: "acme".into(),
        engine: String::new(),
        payload: payload.to_vec(),
        idempotency_key: key.into(),
    }
}

/// The first message of a watch stream, or its error status.
async fn open_watch(
    channel: Channel,
    request: pb::WatchRequest,
) -> Result<tonic::Streaming<pb::WatchResponse>, tonic::Status> {
    let mut stream = events(channel).watch(request).await?.into_inner();
    match tokio::time::timeout(WAIT, stream.message()).await {
        Err(_) => Err(tonic::Status::deadline_exceeded("no first watch message")),
        Ok(Err(status)) => Err(status),
        Ok(Ok(None)) => Err(tonic::Status::aborted("the watch ended at once")),
        Ok(Ok(Some(first))) if first.start_revision == 0 => Err(tonic::Status::internal("no start revision")),
        Ok(Ok(Some(_))) => Ok(stream),
    }
}

#[tokio::test]
async fn bad_event_input_is_refused_with_stable_reasons_and_changes_nothing() -> Result<()> {
    let node = KeelProcess::start().await?;
    let mut client = events(node.channel().await?);
    let published = client.publish(publish_request("deploys", b"one", "key-1")).await?.into_inner();
    ensure!(!published.is_replay);

    // The same key and content: the first revision, stored once.
    let digest = node.status().await?.state_digest;
    let replay = client.publish(publish_request("deploys", b"one", "key-1")).await?.into_inner();
    ensure!(replay.revision == published.revision && replay.is_replay, "{replay:?} vs {published:?}");
    ensure!(node.status().await?.state_digest == digest, "a replay changed the state");

    // Bad input, each with its status and reason; nothing changes.
    let oversized = publish_request("deploys", &vec![0u8; 1024 * 1024 + 1], "");
    let reused = publish_request("deploys", b"two", "key-1");
    let bad_key = publish_request("deploys", b"x", "has space");
    let cases: [(&str, pb::PublishEventRequest, Code, &str); 4] = [
        ("over 1 MiB", oversized, Code::InvalidArgument, "LIMIT_EXCEEDED"),
        ("key reused", reused, Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED"),
        ("bad key", bad_key, Code::InvalidArgument, "FIELD_INVALID"),
        ("no topic", publish_request("", b"x", ""), Code::InvalidArgument, "FIELD_REQUIRED"),
    ];
    for (what, request, code, reason) in cases {
        let status = match client.publish(request).await {
            Ok(answer) => bail!("{what}: accepted: {answer:?}"),
            Err(status) => status,
        };
        ensure!(status.code() == code && reason_of(&status) == reason, "{what}: {status:?}");
    }
    ensure!(node.status().await?.state_digest == digest, "a refused publish changed the state");

    let current = node.status().await?.applied_index;
    let watch_cases: [(&str, pb::WatchRequest, Code, &str); 2] = [
        (
            "future revision",
            pb::WatchRequest { from_revision: current + 1_000, ..Default::default() },
            Code::OutOfRange,
            "REVISION_IN_FUTURE",
        ),
        (
            "unknown kind",
            pb::WatchRequest { kinds: vec!["NOT_A_KIND".into()], ..Default::default() },
            Code::InvalidArgument,
            "FIELD_INVALID",
        ),
    ];
    for (what, request, code, reason) in watch_cases {
        match open_watch(node.channel().await?, request).await {
            Ok(_) => bail!("{what}: the watch opened"),
            Err(status) => ensure!(status.code() == code && reason_of(&status) == reason, "{what}: {status:?}"),
        }
    }

    // A watch from revision 1 sees the one user event, then progress while idle.
    let request = pb::WatchRequest {
        from_revision: 1,
        kinds: vec!["USER_EVENT".into()],
        progress_interval_ms: 100,
        ..Default::default()
    };
    let mut stream = open_watch(node.channel().await?, request).await.map_err(|s| anyhow::anyhow!("{s:?}"))?;
    let message = tokio::time::timeout(WAIT, stream.message()).await??.context("stream ended")?;
    ensure!(message.events.len() == 1, "{message:?}");
    let event = &message.events[0];
    ensure!(event.revision == published.revision && event.payload == b"one" && event.tenant == "acme", "{event:?}");
    ensure!(event.attributes.get("topic").map(String::as_str) == Some("deploys"), "{event:?}");
    let progress = tokio::time::timeout(WAIT, stream.message()).await??.context("stream ended")?;
    ensure!(progress.events.is_empty() && progress.progress_revision >= published.revision, "{progress:?}");
    Ok(())
}

#[tokio::test]
async fn a_start_revision_older_than_the_history_is_compacted() -> Result<()> {
    let node = KeelProcess::start().await?;
    let mut client = events(node.channel().await?);
    // 1 MiB payloads fill the history's byte budget (EVENT_HISTORY_BYTES_MAX,
    // 32 MiB) after a few dozen events; the oldest are compacted.
    let payload = vec![7u8; 1024 * 1024];
    let mut first_revision = 0;
    for i in 0..40 {
        let published = client.publish(publish_request("bulk", &payload, &format!("bulk-{i}"))).await?.into_inner();
        if i == 0 {
            first_revision = published.revision;
        }
    }
    let status = match open_watch(
        node.channel().await?,
        pb::WatchRequest { from_revision: first_revision, ..Default::default() },
    )
    .await
    {
        Ok(_) => bail!("a watch from compacted revision {first_revision} opened"),
        Err(status) => status,
    };
    ensure!(status.code() == Code::OutOfRange && reason_of(&status) == "COMPACTED", "{status:?}");
    let info = tonic_types::StatusExt::get_details_error_info(&status).context("error info")?;
    let compacted: u64 = info.metadata.get("compacted_revision").context("compacted_revision")?.parse()?;
    let resync: u64 = info.metadata.get("resync_revision").context("resync_revision")?.parse()?;
    ensure!(compacted >= first_revision && resync > compacted, "{info:?}");
    // Just above the floor is still served.
    open_watch(node.channel().await?, pb::WatchRequest { from_revision: compacted + 1, ..Default::default() })
        .await
        .map_err(|status| anyhow::anyhow!("watch above the floor: {status:?}"))?;
    Ok(())
}

/// What one watcher saw: USER_EVENT payloads by revision, in arrival order.
#[derive(Debug, Default)]
struct Seen {
    events: Vec<(u64, Vec<u8>)>,
    reconnects: u64,
}

/// Watches USER_EVENTs from revision 1 through a client whose first endpoint
/// is `first`, until `CLUSTER_EVENTS` arrived or the deadline passed.
async fn watch_all(endpoints: Vec<String>, token: Option<keel_client::token::BearerToken>) -> Result<Seen> {
    let config = ClientConfig::new(endpoints).with_call_timeout(Duration::from_secs(5)).with_token(token);
    let client = KeelClient::new(config)?;
    let mut watch = client.watch(WatchOptions {
        from_revision: 1,
        kinds: vec!["USER_EVENT".into()],
        progress_interval: Some(Duration::from_millis(200)),
        ..WatchOptions::default()
    });
    let mut seen = Seen::default();
    let deadline = Instant::now() + WAIT;
    while seen.events.len() < CLUSTER_EVENTS {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout(left, watch.next()).await.context("watch deadline")??;
        if let WatchItem::Events(events) = item {
            seen.events.extend(events.into_iter().map(|event| (event.revision, event.payload)));
        }
    }
    seen.reconnects = watch.reconnects();
    Ok(seen)
}

#[tokio::test]
async fn watchers_see_every_event_once_across_a_leader_kill_and_keyed_retries_apply_once() -> Result<()> {
    let mut cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let endpoint = |i: usize| cluster.nodes[i].endpoint.clone();
    let rotated = |first: usize| (0..3).map(|k| endpoint((first + k) % 3)).collect::<Vec<_>>();
    // One watcher starts on the leader (it must resume elsewhere), one on a follower.
    let token = cluster.nodes[0].bearer_token();
    let on_leader = tokio::spawn(watch_all(rotated(leader), token.clone()));
    let on_follower = tokio::spawn(watch_all(rotated((leader + 1) % 3), token.clone()));

    let writer = KeelClient::new(
        ClientConfig::new(rotated((leader + 1) % 3)).with_call_timeout(Duration::from_secs(5)).with_token(token),
    )?;
    let mut acknowledged: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..CLUSTER_EVENTS {
        if i == CLUSTER_EVENTS / 2 {
            cluster.nodes[leader].kill_9()?;
        }
        let key = format!("event-{i:03}");
        let request = publish_request("stream", key.as_bytes(), &key);
        // Retried with the same key until acknowledged: however often an
        // attempt is cut off by the failover, the event is stored once.
        let deadline = Instant::now() + WAIT;
        let revision = loop {
            match writer.publish_event(request.clone()).await {
                Ok(served) => break served.value.revision,
                // A pause between attempts (a retry backoff, not synchronisation).
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(error) => bail!("publish {key} never acknowledged: {error}"),
            }
        };
        acknowledged.insert(key, revision);
    }

    // A retry long after the fact answers the first revision and stores nothing.
    let replay = writer.publish_event(publish_request("stream", b"event-000", "event-000")).await?.value;
    ensure!(replay.is_replay && Some(&replay.revision) == acknowledged.get("event-000"), "{replay:?}");
    // A keyed CreateTenant sent twice creates the tenant once and answers twice.
    let mut tenants =
        pb::tenant_service_client::TenantServiceClient::new(cluster.nodes[(leader + 1) % 3].channel().await?);
    let mut create = crate::fixture::Fixture::tenant_request("acme");
    create.idempotency_key = "create-acme-once".into();
    let first = tenants.create_tenant(create.clone()).await?.into_inner();
    let second = tenants.create_tenant(create).await?.into_inner();
    ensure!(first == second, "{first:?} vs {second:?}");

    for (name, watcher) in [("on the leader", on_leader), ("on a follower", on_follower)] {
        let seen = watcher.await.context("watcher task")??;
        let revisions: Vec<u64> = seen.events.iter().map(|(revision, _)| *revision).collect();
        ensure!(revisions.windows(2).all(|pair| pair[0] < pair[1]), "{name}: out of order or repeated: {revisions:?}");
        let delivered: BTreeMap<String, u64> = seen
            .events
            .iter()
            .map(|(revision, payload)| (String::from_utf8_lossy(payload).into_owned(), *revision))
            .collect();
        ensure!(delivered == acknowledged, "{name}: delivered {delivered:?}\nacknowledged {acknowledged:?}");
        if name == "on the leader" {
            ensure!(seen.reconnects >= 1, "the watcher on the killed leader never reconnected");
        }
    }
    // The survivors agree on the state, history included.
    cluster.converged().await?;
    Ok(())
}

/// The value of an unlabelled-by-us gauge in the node's `/metrics`.
async fn gauge(node: &KeelProcess, name: &str) -> Result<u64> {
    let (code, body) = crate::harness::http_get(&node.ops_addr, "/metrics").await?;
    ensure!(code == 200, "/metrics answered {code}");
    let line = body
        .lines()
        .find(|line| line.starts_with(&format!("{name}{{")))
        .with_context(|| format!("{name} not in /metrics:\n{body}"))?;
    Ok(line.rsplit(' ').next().unwrap_or_default().parse()?)
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_cut_off_with_a_clear_status() -> Result<()> {
    let node = KeelProcess::start().await?;
    let mut stalled = open_watch(node.channel().await?, pb::WatchRequest::default())
        .await
        .map_err(|status| anyhow::anyhow!("{status:?}"))?;
    ensure!(gauge(&node, "keel_watchers").await? == 1);

    // 1 MiB events fill the watcher's bounded channel and the connection's
    // flow-control window while the watcher reads nothing.
    let mut client = events(node.channel().await?);
    let payload = vec![1u8; 1024 * 1024];
    let deadline = Instant::now() + WAIT;
    let mut n_published = 0;
    while gauge(&node, "keel_watchers_cut_off").await? == 0 {
        ensure!(Instant::now() < deadline, "the stalled watcher was never cut off");
        if n_published < 30 {
            client.publish(publish_request("flood", &payload, "")).await?;
            n_published += 1;
        } else {
            // Everything is published; the cut-off comes WATCH_SEND_TIMEOUT_MS after the channel filled.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Reading now drains what was queued, then the closing status.
    let status = loop {
        match tokio::time::timeout(WAIT, stalled.message()).await? {
            Ok(Some(_)) => continue,
            Ok(None) => bail!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    ensure!(status.code() == Code::ResourceExhausted && reason_of(&status) == "WATCHER_TOO_SLOW", "{status:?}");
    let info = tonic_types::StatusExt::get_details_error_info(&status).context("error info")?;
    ensure!(info.metadata.contains_key("next_revision"), "{info:?}");
    ensure!(gauge(&node, "keel_watchers").await? == 0, "the cut-off watcher still counts");
    Ok(())
}

/// `keelctl --output json args`: one pretty JSON result, or one object per line (a watch).
fn keelctl_json_values(node: &KeelProcess, args: &[&str]) -> Result<Vec<serde_json::Value>> {
    let json_args: Vec<&str> = ["--output", "json"].iter().chain(args).copied().collect();
    let stdout = crate::keelctl::keelctl_ok(node, &node.scratch(), &json_args)?;
    match serde_json::from_str::<serde_json::Value>(&stdout) {
        Ok(value) => Ok(vec![value]),
        Err(_) => stdout.lines().map(|line| Ok(serde_json::from_str(line)?)).collect(),
    }
}

#[tokio::test]
async fn keelctl_publishes_once_per_key_and_watches_from_a_revision() -> Result<()> {
    let node = KeelProcess::start().await?;
    let publish = ["events", "publish", "--topic", "deploys", "--tenant", "acme", "--payload", "build 42"];
    let keyed: Vec<&str> = publish.iter().copied().chain(["--idempotency-key", "deploy-42"]).collect();
    let first = keelctl_json_values(&node, &keyed)?;
    let again = keelctl_json_values(&node, &keyed)?;
    ensure!(first[0]["revision"] == again[0]["revision"], "{first:?} vs {again:?}");
    ensure!(first[0]["is_replay"] == false && again[0]["is_replay"] == true, "{first:?} {again:?}");

    let watched = keelctl_json_values(
        &node,
        &["events", "watch", "--from-revision", "1", "--kind", "USER_EVENT", "--count", "1"],
    )?;
    ensure!(watched.len() == 1, "{watched:?}");
    ensure!(watched[0]["revision"] == first[0]["revision"], "{watched:?}");
    ensure!(watched[0]["payload"] == "build 42" && watched[0]["tenant"] == "acme", "{watched:?}");
    Ok(())
}

#[tokio::test]
async fn a_node_refuses_watchers_beyond_its_bound() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("keel.toml");
    std::fs::write(&config, "[watch]\nwatchers_max = 2\n")?;
    let config = config.to_str().context("utf-8 path")?.to_owned();
    let mut node = KeelProcess::new(
        [
            "--dev",
            "--config",
            &config,
            "--listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
            "--ops-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect(),
    )?;
    node.launch().await?;
    node.wait_ready().await?;
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(
            open_watch(node.channel().await?, pb::WatchRequest::default())
                .await
                .map_err(|s| anyhow::anyhow!("{s:?}"))?,
        );
    }
    let status = match open_watch(node.channel().await?, pb::WatchRequest::default()).await {
        Ok(_) => bail!("a third watcher was admitted"),
        Err(status) => status,
    };
    ensure!(status.code() == Code::ResourceExhausted && reason_of(&status) == "LIMIT_EXCEEDED", "{status:?}");
    let info = tonic_types::StatusExt::get_details_error_info(&status).context("error info")?;
    ensure!(info.metadata.get("limit").map(String::as_str) == Some("WATCHERS_PER_NODE_MAX"), "{info:?}");
    // A closed stream frees its place.
    drop(open.pop());
    let deadline = Instant::now() + WAIT;
    while gauge(&node, "keel_watchers").await? != 1 {
        ensure!(Instant::now() < deadline, "the closed watcher still counts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    open_watch(node.channel().await?, pb::WatchRequest::default())
        .await
        .map_err(|status| anyhow::anyhow!("after a close: {status:?}"))?;
    Ok(())
}

#[tokio::test]
async fn keel_client_watch_resumes_after_a_cut_off_without_gap_or_duplicate() -> Result<()> {
    let node = KeelProcess::start().await?;
    let client = KeelClient::new(ClientConfig::new([node.endpoint.clone()]).with_token(node.bearer_token()))?;
    let mut publisher = events(node.channel().await?);
    publisher.publish(publish_request("flood", b"first", "flood-first")).await?;
    let mut watch =
        client.watch(WatchOptions { from_revision: 1, kinds: vec!["USER_EVENT".into()], ..WatchOptions::default() });
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    let mut revisions: Vec<u64> = Vec::new();
    if let WatchItem::Events(first) = tokio::time::timeout(WAIT, watch.next()).await?? {
        revisions.extend(first.iter().map(|event| event.revision));
        payloads.extend(first.into_iter().map(|event| event.payload));
    }
    ensure!(payloads == vec![b"first".to_vec()], "{payloads:?}");

    // The caller stops reading while 1 MiB events pile up, until the node cuts it off.
    let deadline = Instant::now() + WAIT;
    let mut n_published = 0usize;
    while gauge(&node, "keel_watchers_cut_off").await? == 0 {
        ensure!(Instant::now() < deadline, "the stalled watch was never cut off");
        if n_published < 30 {
            let mut payload = vec![0u8; 1024 * 1024];
            payload[..8].copy_from_slice(&(n_published as u64).to_be_bytes());
            publisher.publish(publish_request("flood", &payload, &format!("flood-{n_published}"))).await?;
            n_published += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Reading again: everything arrives once, in order, across the reopened stream.
    while payloads.len() < n_published + 1 {
        let left = deadline.saturating_duration_since(Instant::now());
        if let WatchItem::Events(events) =
            tokio::time::timeout(left, watch.next()).await.context("watch deadline")??
        {
            revisions.extend(events.iter().map(|event| event.revision));
            payloads.extend(events.into_iter().map(|event| event.payload));
        }
    }
    ensure!(revisions.windows(2).all(|pair| pair[0] < pair[1]), "out of order or repeated: {revisions:?}");
    for (index, payload) in payloads.iter().skip(1).enumerate() {
        ensure!(payload[..8] == (index as u64).to_be_bytes(), "event {index} out of place");
    }
    ensure!(watch.reconnects() >= 1, "the watch never reopened");
    Ok(())
}
