//! A scripted stand-in for one `keeld` node, for tests of the client's call
//! loop and of `keelctl` (compiled in tests only).
//!
//! It serves `TrustService` and `ClusterService` on a loopback port chosen by
//! the OS. Each `GetKey` answer is taken from a script (a key, an error
//! status with Keel's `ErrorInfo`, or a delay), every response carries the
//! `keel-*` headers, and every request's `grpc-timeout` is recorded so tests
//! can check the deadline was propagated. `GetStatus` reports a settable
//! member list and leader; the membership calls first fail with the
//! scripted statuses, then change that member list as a leader would.

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
pub const FAKE_PAGE_SIZE: usize = 2;

/// One scripted `GetKey` answer.
#[derive(Debug)]
pub enum Answer {
    /// Answer with this key.
    Key(pb::Key),
    /// Fail with this status.
    Fail(tonic::Status),
    /// Wait this long, then answer with the next scripted answer.
    Delay(Duration),
}

/// Revision a fake membership change reports.
pub const FAKE_MEMBERSHIP_REVISION: u64 = 42;

/// The membership a fake node reports.
#[derive(Debug, Default)]
struct FakeCluster {
    members: Vec<pb::Member>,
    leader_id: u64,
}

/// The node's behaviour and what it observed.
#[derive(Debug, Default)]
pub struct FakeState {
    node_id: u64,
    region: String,
    script: Mutex<VecDeque<Answer>>,
    keys: Vec<pb::Key>,
    cluster: Mutex<FakeCluster>,
    membership_failures: Mutex<VecDeque<tonic::Status>>,
    add_key_requests: Mutex<Vec<pb::AddKeyRequest>>,
    grpc_timeouts: Mutex<Vec<Option<String>>>,
    n_get_key_calls: AtomicUsize,
    n_get_status_calls: AtomicUsize,
    n_membership_calls: AtomicUsize,
}

impl FakeState {
    fn lock_script(&self) -> std::sync::MutexGuard<'_, VecDeque<Answer>> {
        self.script.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_cluster(&self) -> std::sync::MutexGuard<'_, FakeCluster> {
        self.cluster.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a membership call and takes its scripted failure, if any.
    fn membership_failure(&self) -> Option<tonic::Status> {
        self.n_membership_calls.fetch_add(1, Ordering::SeqCst);
        self.membership_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front()
    }

    fn membership_response(&self) -> tonic::Response<pb::MembershipResponse> {
        let members = self.lock_cluster().members.clone();
        self.respond(pb::MembershipResponse { members, revision: FAKE_MEMBERSHIP_REVISION })
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
            (REGION_HEADER, self.region.clone()),
            (REVISION_HEADER, "12".to_owned()),
            (LEADER_HEADER, self.lock_cluster().leader_id.to_string()),
        ] {
            if let Ok(value) = value.parse() {
                headers.insert(name, value);
            }
        }
        response
    }
}

/// A running fake node; stops when dropped.
pub struct FakeNode {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// Behaviour and observations.
    pub state: Arc<FakeState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeNode {
    /// Starts a node in region `local` answering `GetKey` from `script` and
    /// `ListKeys` from `keys`.
    pub async fn start(node_id: u64, script: Vec<Answer>, keys: Vec<pb::Key>) -> FakeNode {
        FakeNode::start_in_region(node_id, "local", script, keys).await
    }

    /// Starts a node in `region` that leads a cluster of itself alone (as
    /// `127.0.0.1:7400`, an address only shown, never dialled: it is the
    /// serving node's own entry).
    pub async fn start_in_region(node_id: u64, region: &str, script: Vec<Answer>, keys: Vec<pb::Key>) -> FakeNode {
        FakeNode::start_serving(node_id, region, script, keys, None).await
    }

    /// Starts a node like [`FakeNode::start`] that serves TLS with this
    /// certificate and key (PEM); its address is `https://127.0.0.1:<port>`.
    pub async fn start_tls(node_id: u64, cert_pem: &str, key_pem: &str) -> FakeNode {
        let tls =
            tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        FakeNode::start_serving(node_id, "local", vec![], vec![], Some(tls)).await
    }

    async fn start_serving(
        node_id: u64,
        region: &str,
        script: Vec<Answer>,
        keys: Vec<pb::Key>,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> FakeNode {
        let cluster = FakeCluster {
            members: vec![fake_member(node_id, region, "127.0.0.1:7400", "127.0.0.1:7401", true)],
            leader_id: node_id,
        };
        let state = Arc::new(FakeState {
            node_id,
            region: region.to_owned(),
            script: Mutex::new(script.into()),
            keys,
            cluster: Mutex::new(cluster),
            ..FakeState::default()
        });
        let incoming =
            tonic::transport::server::TcpIncoming::bind(([127, 0, 0, 1], 0).into()).expect("bind a loopback port");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let address = format!("{scheme}://{}", incoming.local_addr().expect("bound address"));
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).expect("valid server TLS");
        }
        let router = builder
            .add_service(TrustServiceServer::from_arc(Arc::clone(&state)))
            .add_service(ClusterServiceServer::from_arc(Arc::clone(&state)));
        let server = tokio::spawn(async move {
            // The server ends when the test aborts it.
            let _ = router.serve_with_incoming(incoming).await;
        });
        FakeNode { address, state, server }
    }

    /// Sets the members and the leader this node reports.
    pub fn set_cluster(&self, members: Vec<pb::Member>, leader_id: u64) {
        *self.state.lock_cluster() = FakeCluster { members, leader_id };
    }

    /// The next membership calls fail with these statuses, in order.
    pub fn fail_membership(&self, statuses: impl IntoIterator<Item = tonic::Status>) {
        self.state.membership_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(statuses);
    }

    /// This node as a member, with its real address.
    pub fn member(&self, is_voter: bool) -> pb::Member {
        let client_addr = self.address.trim_start_matches("http://");
        fake_member(self.state.node_id, &self.state.region, client_addr, "127.0.0.1:1", is_voter)
    }

    /// `GetStatus` calls received.
    pub fn n_get_status_calls(&self) -> usize {
        self.state.n_get_status_calls.load(Ordering::SeqCst)
    }

    /// `AddLearner`, `PromoteMember` and `RemoveMember` calls received.
    pub fn n_membership_calls(&self) -> usize {
        self.state.n_membership_calls.load(Ordering::SeqCst)
    }

    /// `GetKey` calls received.
    pub fn n_get_key_calls(&self) -> usize {
        self.state.n_get_key_calls.load(Ordering::SeqCst)
    }

    /// `grpc-timeout` headers received, in order.
    pub fn grpc_timeouts(&self) -> Vec<Option<String>> {
        self.state.grpc_timeouts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// `AddKey` requests received.
    pub fn add_key_requests(&self) -> Vec<pb::AddKeyRequest> {
        self.state.add_key_requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A status as Keel sends it: `ErrorInfo{reason, domain: "keel", metadata}`
/// and, when given, `RetryInfo`.
pub fn keel_status(
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

/// A member as the server reports it.
pub fn fake_member(node_id: u64, region: &str, client_addr: &str, peer_addr: &str, is_voter: bool) -> pb::Member {
    pb::Member {
        node_id,
        region: region.to_owned(),
        zone: "a".into(),
        client_addr: client_addr.to_owned(),
        peer_addr: peer_addr.to_owned(),
        is_voter,
    }
}

/// A key as the server would return it.
pub fn sample_key(key_id: &str) -> pb::Key {
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
        revoked_revision: 0,
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
            revoked_revision: 0,
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

    async fn get_root(
        &self,
        request: tonic::Request<pb::GetRootRequest>,
    ) -> Result<tonic::Response<pb::RootMetadata>, tonic::Status> {
        self.record(&request);
        Err(tonic::Status::unimplemented("fake node: GetRoot"))
    }

    async fn revoke_key(
        &self,
        request: tonic::Request<pb::RevokeKeyRequest>,
    ) -> Result<tonic::Response<pb::Key>, tonic::Status> {
        self.record(&request);
        Err(tonic::Status::unimplemented("fake node: RevokeKey"))
    }

    async fn rotate_root(
        &self,
        request: tonic::Request<pb::RotateRootRequest>,
    ) -> Result<tonic::Response<pb::RootMetadata>, tonic::Status> {
        self.record(&request);
        Err(tonic::Status::unimplemented("fake node: RotateRoot"))
    }

    async fn revoke_token(
        &self,
        request: tonic::Request<pb::RevokeTokenRequest>,
    ) -> Result<tonic::Response<pb::RevokeTokenResponse>, tonic::Status> {
        self.record(&request);
        Err(tonic::Status::unimplemented("fake node: RevokeToken"))
    }
}

#[tonic::async_trait]
impl ClusterService for FakeState {
    async fn get_status(
        &self,
        request: tonic::Request<pb::GetStatusRequest>,
    ) -> Result<tonic::Response<pb::ClusterStatus>, tonic::Status> {
        self.record(&request);
        self.n_get_status_calls.fetch_add(1, Ordering::SeqCst);
        let (members, leader_id) = {
            let cluster = self.lock_cluster();
            (cluster.members.clone(), cluster.leader_id)
        };
        let role = if leader_id == self.node_id { pb::RaftRole::Leader } else { pb::RaftRole::Follower };
        Ok(self.respond(pb::ClusterStatus {
            node_id: self.node_id,
            region: self.region.clone(),
            zone: "a".into(),
            version: "0.1.0".into(),
            role: role.into(),
            term: 2,
            leader_id,
            commit_index: 12,
            applied_index: 12,
            state_digest: "00".repeat(32),
            state_digest_revision: 12,
            members,
            key_count: 2,
            engine_count: 0,
            engine_version_count: 0,
            tenant_count: 0,
            boot_time_ms: 1_767_225_600_000,
            member_health: Vec::new(),
            standing: "member".into(),
            standing_detail: String::new(),
            member_changes: Vec::new(),
        }))
    }

    async fn add_learner(
        &self,
        request: tonic::Request<pb::AddLearnerRequest>,
    ) -> Result<tonic::Response<pb::MembershipResponse>, tonic::Status> {
        self.record(&request);
        if let Some(status) = self.membership_failure() {
            return Err(status);
        }
        let member = request.into_inner().member.unwrap_or_default();
        self.lock_cluster().members.push(pb::Member { is_voter: false, ..member });
        Ok(self.membership_response())
    }

    async fn promote_member(
        &self,
        request: tonic::Request<pb::PromoteMemberRequest>,
    ) -> Result<tonic::Response<pb::MembershipResponse>, tonic::Status> {
        self.record(&request);
        if let Some(status) = self.membership_failure() {
            return Err(status);
        }
        let node_id = request.into_inner().node_id;
        for member in self.lock_cluster().members.iter_mut().filter(|member| member.node_id == node_id) {
            member.is_voter = true;
        }
        Ok(self.membership_response())
    }

    async fn remove_member(
        &self,
        request: tonic::Request<pb::RemoveMemberRequest>,
    ) -> Result<tonic::Response<pb::MembershipResponse>, tonic::Status> {
        self.record(&request);
        if let Some(status) = self.membership_failure() {
            return Err(status);
        }
        let node_id = request.into_inner().node_id;
        self.lock_cluster().members.retain(|member| member.node_id != node_id);
        Ok(self.membership_response())
    }

    async fn transfer_leadership(
        &self,
        request: tonic::Request<pb::TransferLeadershipRequest>,
    ) -> Result<tonic::Response<pb::TransferLeadershipResponse>, tonic::Status> {
        self.record(&request);
        if let Some(status) = self.membership_failure() {
            return Err(status);
        }
        let node_id = request.into_inner().node_id;
        self.lock_cluster().leader_id = node_id;
        Ok(self.respond(pb::TransferLeadershipResponse { leader_id: node_id, term: 3 }))
    }
}
