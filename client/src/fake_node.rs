//! A scripted stand-in for one `keeld` node, for tests of the client's call
//! loop and of `keelctl` (compiled in tests only).
//!
//! It serves `TrustService` and `ClusterService` on a loopback port chosen by
//! the OS. Each `GetKey` answer is taken from a script (a key, an error
//! status with Keel's `ErrorInfo`, or a delay), every response carries the
//! `keel-*` headers, and every request's `grpc-timeout` is recorded so tests
//! can check the deadline was propagated.

use crate::error::ERROR_DOMAIN;
use crate::pb;
use crate::pb::cluster_service_server::{ClusterService, ClusterServiceServer};
use crate::pb::trust_service_server::{TrustService, TrustServiceServer};
use crate::served::{LEADER_HEADER, NODE_ID_HEADER, REGION_HEADER, REVISION_HEADER};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic_types::{ErrorDetails, StatusExt};

/// Keys per `ListKeys` page, small so that paging is exercised.
pub(crate) const FAKE_PAGE_SIZE: usize = 2;

/// One scripted `GetKey` answer.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Answer with this key.
    Key(pb::Key),
    /// Fail with this status.
    Fail(tonic::Status),
    /// Wait this long, then answer with the next scripted answer.
    Delay(Duration),
}

/// The node's behaviour and what it observed.
#[derive(Debug, Default)]
pub(crate) struct FakeState {
    node_id: u64,
    script: Mutex<VecDeque<Answer>>,
    keys: Vec<pb::Key>,
    add_key_requests: Mutex<Vec<pb::AddKeyRequest>>,
    grpc_timeouts: Mutex<Vec<Option<String>>>,
    n_get_key_calls: AtomicUsize,
}

impl FakeState {
    fn lock_script(&self) -> std::sync::MutexGuard<'_, VecDeque<Answer>> {
        self.script.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record<T>(&self, request: &tonic::Request<T>) {
        let timeout = request.metadata().get("grpc-timeout").and_then(|value| value.to_str().ok()).map(str::to_owned);
        self.grpc_timeouts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(timeout);
    }

    fn respond<T>(&self, message: T) -> tonic::Response<T> {
        let mut response = tonic::Response::new(message);
        let headers = response.metadata_mut();
        for (name, value) in [
            (NODE_ID_HEADER, self.node_id.to_string()),
            (REGION_HEADER, "local".to_owned()),
            (REVISION_HEADER, "12".to_owned()),
            (LEADER_HEADER, "1".to_owned()),
        ] {
            if let Ok(value) = value.parse() {
                headers.insert(name, value);
            }
        }
        response
    }
}

/// A running fake node; stops when dropped.
pub(crate) struct FakeNode {
    /// `http://127.0.0.1:<port>`.
    pub(crate) address: String,
    /// Behaviour and observations.
    pub(crate) state: Arc<FakeState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeNode {
    /// Starts a node answering `GetKey` from `script` and `ListKeys` from `keys`.
    pub(crate) async fn start(node_id: u64, script: Vec<Answer>, keys: Vec<pb::Key>) -> FakeNode {
        let state = Arc::new(FakeState { node_id, script: Mutex::new(script.into()), keys, ..FakeState::default() });
        let incoming =
            tonic::transport::server::TcpIncoming::bind(([127, 0, 0, 1], 0).into()).expect("bind a loopback port");
        let address = format!("http://{}", incoming.local_addr().expect("bound address"));
        let router = tonic::transport::Server::builder()
            .add_service(TrustServiceServer::from_arc(Arc::clone(&state)))
            .add_service(ClusterServiceServer::from_arc(Arc::clone(&state)));
        let server = tokio::spawn(async move {
            // The server ends when the test aborts it.
            let _ = router.serve_with_incoming(incoming).await;
        });
        FakeNode { address, state, server }
    }

    /// `GetKey` calls received.
    pub(crate) fn n_get_key_calls(&self) -> usize {
        self.state.n_get_key_calls.load(Ordering::SeqCst)
    }

    /// `grpc-timeout` headers received, in order.
    pub(crate) fn grpc_timeouts(&self) -> Vec<Option<String>> {
        self.state.grpc_timeouts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// `AddKey` requests received.
    pub(crate) fn add_key_requests(&self) -> Vec<pb::AddKeyRequest> {
        self.state.add_key_requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A status as Keel sends it: `ErrorInfo{reason, domain: "keel", metadata}`
/// and, when given, `RetryInfo`.
pub(crate) fn keel_status(
    code: tonic::Code,
    reason: &str,
    metadata: &[(&str, &str)],
    retry_delay: Option<Duration>,
) -> tonic::Status {
    let metadata: std::collections::HashMap<String, String> =
        metadata.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    if retry_delay.is_some() {
        details.set_retry_info(retry_delay);
    }
    tonic::Status::with_error_details(code, format!("scripted {reason}"), details)
}

/// A key as the server would return it.
pub(crate) fn sample_key(key_id: &str) -> pb::Key {
    pb::Key {
        name: format!("keys/{key_id}"),
        key_id: key_id.to_owned(),
        spec: Some(pb::KeySpec {
            public_key: vec![0xab; 32],
            purposes: vec![pb::KeyPurpose::EnginePublisher.into()],
            not_before: Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 0 }),
            not_after: None,
        }),
        create_revision: 7,
        signed_by: vec!["root0".into()],
    }
}

#[tonic::async_trait]
impl TrustService for FakeState {
    async fn add_key(
        &self,
        request: tonic::Request<pb::AddKeyRequest>,
    ) -> Result<tonic::Response<pb::AddKeyResponse>, tonic::Status> {
        self.record(&request);
        let request = request.into_inner();
        self.add_key_requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(request.clone());
        let key_id = request
            .spec
            .as_ref()
            .and_then(|spec| <[u8; 32]>::try_from(spec.public_key.as_slice()).ok())
            .map(|public_key| crate::signing::key_id_of(&public_key));
        let key = pb::Key {
            name: format!("keys/{}", key_id.clone().unwrap_or_default()),
            key_id: key_id.unwrap_or_default(),
            spec: request.spec,
            create_revision: 13,
            signed_by: request.signatures.into_iter().map(|signature| signature.key_id).collect(),
        };
        Ok(self.respond(pb::AddKeyResponse { key: Some(key), created: true }))
    }

    async fn get_key(
        &self,
        request: tonic::Request<pb::GetKeyRequest>,
    ) -> Result<tonic::Response<pb::Key>, tonic::Status> {
        self.record(&request);
        self.n_get_key_calls.fetch_add(1, Ordering::SeqCst);
        loop {
            let answer = self.lock_script().pop_front();
            match answer {
                Some(Answer::Key(key)) => return Ok(self.respond(key)),
                Some(Answer::Fail(status)) => return Err(status),
                Some(Answer::Delay(delay)) => tokio::time::sleep(delay).await,
                None => return Err(tonic::Status::internal("fake node: script exhausted")),
            }
        }
    }

    async fn list_keys(
        &self,
        request: tonic::Request<pb::ListKeysRequest>,
    ) -> Result<tonic::Response<pb::ListKeysResponse>, tonic::Status> {
        self.record(&request);
        let request = request.into_inner();
        let start: usize = if request.page_token.is_empty() {
            0
        } else {
            request
                .page_token
                .parse()
                .map_err(|_| keel_status(tonic::Code::InvalidArgument, "PAGE_TOKEN_INVALID", &[], None))?
        };
        let end = (start + FAKE_PAGE_SIZE).min(self.keys.len());
        let next_page_token = if end < self.keys.len() { end.to_string() } else { String::new() };
        Ok(self.respond(pb::ListKeysResponse { keys: self.keys[start.min(end)..end].to_vec(), next_page_token }))
    }
}

#[tonic::async_trait]
impl ClusterService for FakeState {
    async fn get_status(
        &self,
        request: tonic::Request<pb::GetStatusRequest>,
    ) -> Result<tonic::Response<pb::ClusterStatus>, tonic::Status> {
        self.record(&request);
        Ok(self.respond(pb::ClusterStatus {
            node_id: self.node_id,
            region: "local".into(),
            zone: "a".into(),
            version: "0.1.0".into(),
            role: pb::RaftRole::Leader.into(),
            term: 2,
            leader_id: self.node_id,
            commit_index: 12,
            applied_index: 12,
            state_digest: "00".repeat(32),
            members: vec![pb::Member {
                node_id: self.node_id,
                region: "local".into(),
                zone: "a".into(),
                client_addr: "127.0.0.1:7400".into(),
                peer_addr: "127.0.0.1:7401".into(),
                is_voter: true,
            }],
            key_count: 2,
            engine_count: 0,
            engine_version_count: 0,
            tenant_count: 0,
            boot_time_ms: 1_767_225_600_000,
        }))
    }
}
