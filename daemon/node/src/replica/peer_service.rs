//! [`RaftPeerService`]: the server side of the peer transport
//! (`keel.raft.v1.RaftPeer`), served on the peer port.
//!
//! ```text
//!  peer ──AppendEntries│Vote│InstallSnapshot──► unpack ──► raft.append_entries│vote│install_snapshot ──► pack Result
//!  follower ──Forward(Write)──► Replica::propose_here(write, grpc deadline) ──► pack Result<Forwarded, ReplicaError>
//!  follower ──ReadIndex──► Replica::read_index_here within the grpc deadline ──► pack Result<u64, ReplicaError>
//! ```
//!
//! Outcomes travel inside the answer's body, including openraft's errors and
//! a leader's refusals; a gRPC error status means only that the request
//! could not be read (`INVALID_ARGUMENT`) or the answer could not be written
//! (`INTERNAL`). Those two statuses are built in `undecodable` and
//! `unencodable` and nowhere else: peers are not API clients, so they get
//! no `ErrorInfo`.

use super::rejoin::RejoinAsk;
use super::{Replica, ReplicaError, Route, Write};
use crate::limits::REJOIN_FIELD_BYTES_MAX;
use crate::limits::{AUDIT_PAGE_SIZE_MAX, AUDIT_PULL_BYTES_MAX, TIMEOUT_NOW_WAIT_MS_MAX};
use crate::limits::{READ_DEADLINE_DEFAULT_MS, WRITE_DEADLINE_DEFAULT_MS};
use crate::raft::peer_message::{self, Envelope};
use crate::raft::snapshot_reception::SnapshotReception;
use crate::raft::{KeelRaft, TypeConfig};
use keel_kernel::limits::GRPC_MESSAGE_BYTES_MAX;
use keel_proto::raft::v1 as pb;
use keel_proto::raft::v1::raft_peer_server::{RaftPeer, RaftPeerServer};
use openraft::raft::{AppendEntriesRequest, VoteRequest, VoteResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

/// The peer service for `replica`, with the gRPC message limits applied:
/// what `server.rs` adds to the peer port's router.
pub fn peer_server(replica: Replica, audit: crate::audit::AuditLog) -> RaftPeerServer<RaftPeerService> {
    RaftPeerServer::new(RaftPeerService { audit, ..RaftPeerService::new(replica) })
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
}

/// Answers peers: Raft RPCs into this node's Raft, forwarded writes and read
/// index requests into its replica.
#[derive(Clone)]
pub struct RaftPeerService {
    replica: Replica,
    reception: Arc<Mutex<SnapshotReception>>,
    /// This member's audit log (its own records and its copies of others').
    audit: crate::audit::AuditLog,
}

impl RaftPeerService {
    /// The service for `replica`.
    pub fn new(replica: Replica) -> Self {
        RaftPeerService { replica, reception: Arc::default(), audit: crate::audit::AuditLog::disabled() }
    }

    fn reception(&self) -> std::sync::MutexGuard<'_, SnapshotReception> {
        self.reception.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn raft(&self) -> &KeelRaft {
        &self.replica.raft
    }
}

fn undecodable(error: peer_message::UnpackError) -> Status {
    Status::invalid_argument(format!("keel.raft.v1 request: {error}: {}", source_chain(&error)))
}

fn unencodable(error: peer_message::PackError) -> Status {
    tracing::error!(error = ?error, "cannot encode a peer answer");
    Status::internal(format!("keel.raft.v1 answer: {error}"))
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut chain = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    chain.join(": ")
}

fn open<T: DeserializeOwned, M: Envelope>(request: Request<M>) -> Result<T, Status> {
    peer_message::unpack(request.into_inner()).map_err(undecodable)
}

fn answer<M: Envelope, T: Serialize>(value: &T) -> Result<Response<M>, Status> {
    peer_message::pack(value).map(Response::new).map_err(unencodable)
}

#[tonic::async_trait]
impl RaftPeer for RaftPeerService {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = open(request)?;
        answer(&self.raft().append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
        let rpc: VoteRequest<u64> = open(request)?;
        if let Some(why) = self.refuses_vote(&rpc) {
            tracing::info!(candidate = ?rpc.vote.leader_id().voted_for(), term = rpc.vote.leader_id().term, why, "vote refused");
            // Not granted, and the candidate's own vote back: it counts no
            // vote from here and learns nothing that would move its term.
            let refused = VoteResponse { vote: rpc.vote, vote_granted: false, last_log_id: None };
            return answer(&Ok::<_, openraft::error::RaftError<u64>>(refused));
        }
        answer(&self.raft().vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        let rpc = peer_message::unpack_snapshot_chunk(request.into_inner()).map_err(undecodable)?;
        let bytes = u64::try_from(rpc.data.len()).unwrap_or(u64::MAX);
        if let Err(refused) = self.reception().admit(&rpc.meta, rpc.offset, bytes, rpc.done) {
            tracing::warn!(%refused, "snapshot chunk refused");
            return Err(Status::invalid_argument(format!("keel.raft.v1 request: {refused}")));
        }
        let result = self.raft().install_snapshot(rpc).await;
        if result.is_err() {
            self.reception().reset();
        }
        answer(&result)
    }

    async fn forward(&self, request: Request<pb::ForwardRequest>) -> Result<Response<pb::ForwardResponse>, Status> {
        let span = peer_span("/keel.raft.v1.RaftPeer/Forward", request.metadata());
        async move {
            let deadline = peer_deadline(&request, WRITE_DEADLINE_DEFAULT_MS);
            let write: Write = open(request)?;
            let result = match self.replica.propose_here(write, deadline).await {
                Ok(Route::Applied(forwarded)) => Ok(forwarded),
                // Leadership moved on since the follower looked: it tells its
                // caller where to go rather than forwarding again.
                Ok(Route::Leader { leader_id, leader, .. }) => {
                    Err(ReplicaError::NotLeader { leader_id: Some(leader_id), leader_addr: Some(leader.client_addr) })
                }
                Err(error) => Err(error),
            };
            answer(&result)
        }
        .instrument(span)
        .await
    }

    async fn read_index(
        &self,
        request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let span = peer_span("/keel.raft.v1.RaftPeer/ReadIndex", request.metadata());
        async move {
            let deadline = peer_deadline(&request, READ_DEADLINE_DEFAULT_MS);
            let () = open(request)?;
            answer(&self.replica.read_index_here(deadline).await)
        }
        .instrument(span)
        .await
    }

    async fn timeout_now(
        &self,
        request: Request<pb::TimeoutNowRequest>,
    ) -> Result<Response<pb::TimeoutNowResponse>, Status> {
        let request = request.into_inner();
        let wait = Duration::from_millis(request.wait_ms.min(TIMEOUT_NOW_WAIT_MS_MAX));
        let raft = self.raft().clone();
        // A TimeoutNow belongs to one transfer: sent by the leader this node
        // follows, in the term it follows it in. Anything else (a stale or
        // replayed message, one from a deposed leader) is ignored; so is
        // the second campaign once another member leads.
        let (term, leader_id) = (request.term, request.leader_id);
        let is_current = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            metrics.current_term == term && metrics.current_leader == Some(leader_id)
        };
        // A member that may hold a lost vote or log never campaigns, not even
        // when handed leadership (openraft's trigger ignores the elect switch):
        // the hand-over then times out and the cluster elects.
        if !self.replica.is_settled() {
            tracing::warn!(from_leader = leader_id, "ignored a TimeoutNow: this member is deciding or rejoining");
            return Ok(Response::new(pb::TimeoutNowResponse {}));
        }
        if !is_current {
            tracing::warn!(
                from_leader = request.leader_id,
                term = request.term,
                "ignored a TimeoutNow that is not from the current leader in the current term"
            );
            return Ok(Response::new(pb::TimeoutNowResponse {}));
        }
        tracing::info!(
            from_leader = request.leader_id,
            term = request.term,
            wait_ms = wait.as_millis() as u64,
            "leadership handed over: campaigning now, and again after the lease if need be"
        );
        let me = self.replica.identity.node_id;
        tokio::spawn(async move {
            // At once: the old leader grants its vote (its own lease dates
            // from its election, not from heartbeats), which with ours is a
            // majority of three. Followers still within the lease refuse.
            campaign(&raft).await;
            tokio::time::sleep(wait).await;
            let leader = raft.metrics().borrow().current_leader;
            match leader {
                Some(id) if id == me => {}
                // Another member won meanwhile: the transfer is void.
                Some(id) if id != leader_id => {
                    tracing::info!(
                        leader = id,
                        "leadership changed hands while waiting: the transfer's TimeoutNow is void"
                    );
                }
                // No leader yet (a larger cluster: the followers' lease has
                // now run out) or the old one still leads: campaign again.
                _ => campaign(&raft).await,
            }
        });
        Ok(Response::new(pb::TimeoutNowResponse {}))
    }

    async fn clock(&self, _request: Request<pb::ClockRequest>) -> Result<Response<pb::ClockResponse>, Status> {
        Ok(Response::new(pb::ClockResponse { wall_clock_ms: self.replica.clock.wall_now_ms() }))
    }

    async fn audit_pull(
        &self,
        request: Request<pb::AuditPullRequest>,
    ) -> Result<Response<pb::AuditPullResponse>, Status> {
        let after_seq = request.into_inner().after_seq;
        let node = self.replica.identity.node_id;
        let last_seq = self.audit.last_seq();
        let Some(dir) = self.audit.own_dir() else {
            return Ok(Response::new(pb::AuditPullResponse { node, last_seq, chunks: Vec::new() }));
        };
        let chunks = tokio::task::spawn_blocking(move || {
            crate::audit::query::pull(&dir, after_seq, last_seq, AUDIT_PULL_BYTES_MAX)
        })
        .await
        .map_err(|error| Status::internal(error.to_string()))?
        .map_err(|error| Status::internal(format!("reading the audit log: {error}")))?;
        let chunks = chunks.into_iter().map(|(segment, lines)| pb::AuditSegmentLines { segment, lines }).collect();
        Ok(Response::new(pb::AuditPullResponse { node, last_seq, chunks }))
    }

    async fn audit_query(
        &self,
        request: Request<pb::AuditQueryRequest>,
    ) -> Result<Response<pb::AuditQueryResponse>, Status> {
        use prost::Message as _;
        let body = request.into_inner();
        let asked = keel_proto::v1::QueryAuditRequest::decode(body.filter.as_slice())
            .map_err(|error| Status::invalid_argument(format!("audit filter: {error}")))?;
        let filter = crate::audit::query::Filter::from_request(&asked).map_err(Status::invalid_argument)?;
        let Some(dir) = self.audit.log_dir_of(body.origin).filter(|dir| dir.exists()) else {
            return Ok(Response::new(pb::AuditQueryResponse::default()));
        };
        let limit = usize::try_from(body.limit).unwrap_or(AUDIT_PAGE_SIZE_MAX).clamp(1, AUDIT_PAGE_SIZE_MAX);
        let after = body.after_seq;
        let page = tokio::task::spawn_blocking(move || crate::audit::query::scan(&dir, after, &filter, limit))
            .await
            .map_err(|error| Status::internal(error.to_string()))?
            .map_err(|error| Status::internal(format!("reading the audit log: {error}")))?;
        let records = page.records.iter().filter_map(|record| serde_json::to_vec(record).ok()).collect();
        Ok(Response::new(pb::AuditQueryResponse {
            records,
            next_after_seq: page.next_after_seq.unwrap_or(0),
            found: true,
        }))
    }

    async fn progress(&self, _request: Request<pb::ProgressRequest>) -> Result<Response<pb::ProgressResponse>, Status> {
        let (applied_index, digest) = self.replica.shared.digest();
        let metrics = self.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let leader_peer_addr = metrics
            .current_leader
            .and_then(|id| membership.get_node(&id).map(|node| node.peer_addr.clone()))
            .unwrap_or_default();
        Ok(Response::new(pb::ProgressResponse {
            node_id: self.replica.identity.node_id,
            applied_index,
            state_digest: digest.to_string(),
            term: metrics.current_term,
            initialized: membership.voter_ids().next().is_some(),
            last_applied_index: metrics.last_applied.map(|log_id| log_id.index).unwrap_or(0),
            leader_id: metrics.current_leader.unwrap_or(0),
            leader_peer_addr,
            voter_ids: membership.voter_ids().collect(),
            is_settled: self.replica.is_settled(),
            last_log_index: metrics.last_log_index.unwrap_or(0),
        }))
    }

    async fn rejoin(&self, request: Request<pb::RejoinRequest>) -> Result<Response<pb::RejoinResponse>, Status> {
        // Over TLS the caller must be the member it asks for: its certificate
        // names the host of the peer address it gives (the leader then checks
        // that address against the membership). Plaintext peers are loopback only.
        let peer_certs = request.peer_certs();
        let request = request.into_inner();
        let ask = RejoinAsk {
            node_id: request.node_id,
            client_addr: request.client_addr,
            peer_addr: request.peer_addr,
            incarnation: request.incarnation,
        };
        if let Some(problem) = rejoin_ask_problem(&ask) {
            return Err(Status::invalid_argument(problem));
        }
        if let Some(certs) = peer_certs {
            let host =
                crate::tls::peer_host(&ask.peer_addr).map_err(|error| Status::invalid_argument(error.to_string()))?;
            if let Err(error) = crate::tls::check_peer_certificates(Some(certs.as_slice()), &BTreeSet::from([host])) {
                tracing::warn!(node_id = ask.node_id, %error, "a Rejoin for another member's address was refused");
                return Err(crate::status::to_status(&error));
            }
        }
        let answer = self.replica.answer_rejoin(ask);
        Ok(Response::new(pb::RejoinResponse {
            is_leader: answer.is_leader,
            leader_id: answer.leader_id.unwrap_or(0),
            leader_peer_addr: answer.leader_peer_addr,
            step: answer.step.as_str().to_owned(),
            voter_index: answer.voter_index,
            detail: answer.detail,
        }))
    }
}

impl RaftPeerService {
    /// Why this member refuses `rpc` without asking Raft: it is deciding or
    /// rejoining (it may hold a lost vote), or the candidate is not in its
    /// membership (a removed member campaigning would only disrupt).
    fn refuses_vote(&self, rpc: &VoteRequest<u64>) -> Option<&'static str> {
        if !self.replica.is_settled() {
            return Some("this member is deciding or rejoining");
        }
        let candidate = rpc.vote.leader_id().voted_for()?;
        let metrics = self.raft().metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let knows_members = membership.voter_ids().next().is_some();
        (knows_members && membership.get_node(&candidate).is_none()).then_some("the candidate is not a member")
    }
}

/// What is wrong with a Rejoin request, if anything: every field is bounded
/// and the addresses are `host:port`.
fn rejoin_ask_problem(ask: &RejoinAsk) -> Option<String> {
    if ask.node_id == 0 {
        return Some("node_id must be greater than 0".into());
    }
    let fields = [("client_addr", &ask.client_addr), ("peer_addr", &ask.peer_addr), ("incarnation", &ask.incarnation)];
    for (name, value) in fields {
        if value.len() > REJOIN_FIELD_BYTES_MAX {
            return Some(format!("{name} is {} bytes; at most {REJOIN_FIELD_BYTES_MAX}", value.len()));
        }
    }
    for (name, value) in [("client_addr", &ask.client_addr), ("peer_addr", &ask.peer_addr)] {
        if !value.contains(':') {
            return Some(format!("{name} {value:?} is not host:port"));
        }
    }
    None
}

/// Starts an election on this node (a leadership transfer's target).
async fn campaign(raft: &KeelRaft) {
    if let Err(fatal) = raft.trigger().elect().await {
        tracing::warn!(%fatal, "could not campaign for a leadership transfer");
    }
}

/// A peer call's deadline: the follower's remaining time (`grpc-timeout`),
/// else `default_ms`, capped like a client's.
fn peer_deadline<T>(request: &Request<T>, default_ms: u64) -> Duration {
    crate::deadline::from_metadata(request.metadata(), default_ms)
}

/// The span of a peer call the replica serves, continuing the caller's
/// trace (a follower's RPC span) when its metadata carries one.
fn peer_span(method: &'static str, metadata: &tonic::metadata::MetadataMap) -> tracing::Span {
    let span = tracing::info_span!("peer", rpc.method = method);
    crate::telemetry::set_parent_from_metadata(&span, metadata);
    span
}
