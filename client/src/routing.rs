//! Where a call goes: the endpoints the client knows, what it knows about the
//! node behind each, and the order in which a call tries them.
//!
//! ```text
//!   configured endpoints ───────┐
//!   GetStatus members ──────────┼──▶ RoutingTable: endpoints (configured first, ≤ ENDPOINTS_MAX),
//!   NOT_LEADER leader_addr ─────┤      node id + region of each, leader id, recent failures,
//!   keel-* response headers ────┘      the sticky endpoint, the rotation start
//!                                            │ candidates(route)
//!                                            ▼
//!   Route::Leader: the leader's endpoint ─┐
//!   Route::Nearby: preferred region ──────┴──▶ then the sticky endpoint ──▶ then the rest, in rotation
//! ```
//!
//! Preferring the leader for writes and linearizable reads only saves a hop:
//! any node forwards a write to the leader and takes the leader's read index.
//! Serializable reads are answered from the serving node's own state, so they
//! go to a member of the preferred region when one is known and has not
//! failed recently. Everything else goes to the *sticky* endpoint: the one
//! the client connected to last, kept until it fails; then the next endpoint
//! in the list takes over (failover) and discovery runs again.
//!
//! This module performs no I/O and reads no clock: callers pass `now`, so the
//! rules are unit-tested without a network.

use crate::limits::{ENDPOINT_FAILURE_COOLDOWN_MS, ENDPOINTS_MAX};
use keel_proto::v1 as pb;
use std::time::Duration;
use tokio::time::Instant;

/// Which node a call prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Writes, membership changes and linearizable reads: the leader when its
    /// address is known (the server forwards anyway; this saves a hop).
    Leader,
    /// Serializable reads and status: a member of the preferred region when
    /// one is known and reachable, else the sticky endpoint.
    Nearby,
}

impl Route {
    /// The route of a read with this `consistency` (a `pb::ReadConsistency`
    /// value; unspecified means linearizable on the server).
    pub(crate) fn for_read(consistency: i32) -> Route {
        if consistency == i32::from(pb::ReadConsistency::Serializable) { Route::Nearby } else { Route::Leader }
    }
}

/// A member reported by `GetStatus`, its address already made a client
/// endpoint (`http://host:port`) and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiscoveredMember {
    /// The member's node id.
    pub(crate) node_id: u64,
    /// Its region.
    pub(crate) region: String,
    /// `http://<client_addr>`.
    pub(crate) address: String,
}

/// One endpoint and what is known about the node behind it.
#[derive(Debug, Clone)]
struct KnownEndpoint {
    address: String,
    /// Given by the user (kept across discoveries, always first).
    is_configured: bool,
    node_id: Option<u64>,
    region: Option<String>,
    failed_at: Option<Instant>,
}

impl KnownEndpoint {
    fn new(address: String, is_configured: bool) -> Self {
        KnownEndpoint { address, is_configured, node_id: None, region: None, failed_at: None }
    }

    fn is_cooling_down(&self, now: Instant) -> bool {
        self.failed_at.is_some_and(|failed_at| {
            now.saturating_duration_since(failed_at) < Duration::from_millis(ENDPOINT_FAILURE_COOLDOWN_MS)
        })
    }
}

/// The endpoints and the routing state. Not thread-safe by itself; the
/// connection keeps it behind a mutex.
#[derive(Debug)]
pub(crate) struct RoutingTable {
    endpoints: Vec<KnownEndpoint>,
    preferred_region: Option<String>,
    leader_id: Option<u64>,
    /// The endpoint used when no preference applies, until it fails.
    sticky: Option<String>,
    /// Where the rotation starts: the endpoint after the last sticky one
    /// that failed.
    next_index: usize,
    is_discovery_enabled: bool,
    is_discovery_due: bool,
}

impl RoutingTable {
    /// A table of the configured endpoints (at most [`ENDPOINTS_MAX`], which
    /// the configuration checks).
    pub(crate) fn new(configured: &[String], preferred_region: Option<String>, is_discovery_enabled: bool) -> Self {
        RoutingTable {
            endpoints: configured
                .iter()
                .take(ENDPOINTS_MAX)
                .map(|address| KnownEndpoint::new(address.clone(), true))
                .collect(),
            preferred_region,
            leader_id: None,
            sticky: None,
            next_index: 0,
            is_discovery_enabled,
            is_discovery_due: is_discovery_enabled,
        }
    }

    /// Every known address: the configured ones first, then the discovered.
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.endpoints.iter().map(|endpoint| endpoint.address.clone()).collect()
    }

    /// Whether `address` is a known endpoint (and so may keep a channel).
    pub(crate) fn contains(&self, address: &str) -> bool {
        self.position(address).is_some()
    }

    /// The leader's node id, when known.
    pub(crate) fn leader_id(&self) -> Option<u64> {
        self.leader_id
    }

    /// The region serializable reads prefer.
    pub(crate) fn preferred_region(&self) -> Option<&str> {
        self.preferred_region.as_deref()
    }

    /// Whether discovery should run now; clears the flag, so that only one
    /// caller runs it.
    pub(crate) fn take_discovery_due(&mut self) -> bool {
        std::mem::take(&mut self.is_discovery_due)
    }

    /// Asks for discovery again, e.g. because the one that was due could not
    /// connect anywhere.
    pub(crate) fn set_discovery_due(&mut self) {
        self.is_discovery_due = self.is_discovery_enabled;
    }

    /// The addresses to try for `route`, best first, each once: the preferred
    /// endpoints that have not failed recently, the sticky endpoint, then
    /// every endpoint in rotation (recently failed ones last).
    pub(crate) fn candidates(&self, route: Route, now: Instant) -> Vec<String> {
        let mut order: Vec<&KnownEndpoint> = Vec::with_capacity(self.endpoints.len());
        let sticky =
            self.sticky.as_deref().and_then(|address| self.position(address)).map(|index| &self.endpoints[index]);
        let is_usable = |endpoint: &KnownEndpoint| !endpoint.is_cooling_down(now);
        match route {
            Route::Leader => {
                if let Some(leader_id) = self.leader_id {
                    order.extend(
                        self.endpoints
                            .iter()
                            .filter(|endpoint| endpoint.node_id == Some(leader_id) && is_usable(endpoint)),
                    );
                }
            }
            Route::Nearby => {
                if let Some(region) = &self.preferred_region {
                    let is_in_region = |endpoint: &KnownEndpoint| endpoint.region.as_ref() == Some(region);
                    order.extend(sticky.filter(|endpoint| is_in_region(endpoint) && is_usable(endpoint)));
                    order
                        .extend(self.endpoints.iter().filter(|endpoint| is_in_region(endpoint) && is_usable(endpoint)));
                }
            }
        }
        order.extend(sticky.filter(|endpoint| is_usable(endpoint)));
        let count = self.endpoints.len();
        let rotation = (0..count).map(|offset| &self.endpoints[(self.next_index + offset) % count]);
        let (fresh, cooling): (Vec<_>, Vec<_>) = rotation.partition(|endpoint| is_usable(endpoint));
        order.extend(fresh);
        order.extend(cooling);
        let mut addresses: Vec<String> = Vec::with_capacity(count);
        for endpoint in order {
            if !addresses.contains(&endpoint.address) {
                addresses.push(endpoint.address.clone());
            }
        }
        addresses
    }

    /// A call on `address` succeeded: it is healthy, and becomes the sticky
    /// endpoint if there is none.
    pub(crate) fn record_success(&mut self, address: &str) {
        if let Some(index) = self.position(address) {
            self.endpoints[index].failed_at = None;
        }
        if self.sticky.is_none() {
            self.sticky = Some(address.to_owned());
        }
    }

    /// What a response from `address` said about the serving node and the
    /// leader (the `keel-*` headers). A leader this table has no address for
    /// makes discovery due.
    pub(crate) fn record_answer(
        &mut self,
        address: &str,
        node_id: Option<u64>,
        region: Option<&str>,
        leader_id: Option<u64>,
    ) {
        if let Some(index) = self.position(address) {
            let endpoint = &mut self.endpoints[index];
            if node_id.is_some() {
                endpoint.node_id = node_id;
            }
            if let Some(region) = region {
                endpoint.region = Some(region.to_owned());
            }
        }
        if let Some(leader_id) = leader_id.filter(|id| *id != 0) {
            let is_new = self.leader_id != Some(leader_id);
            self.leader_id = Some(leader_id);
            if is_new && !self.endpoints.iter().any(|endpoint| endpoint.node_id == Some(leader_id)) {
                self.set_discovery_due();
            }
        }
    }

    /// A `NOT_LEADER` answer named the leader: remembers it, adds its address
    /// when there is room, and returns the address as an endpoint
    /// (`http://` added to a bare `host:port`).
    pub(crate) fn record_leader(&mut self, leader_id: Option<u64>, leader_addr: &str) -> String {
        let address = endpoint_address(leader_addr);
        let index = match self.position(&address) {
            Some(index) => Some(index),
            None if self.endpoints.len() < ENDPOINTS_MAX => {
                self.endpoints.push(KnownEndpoint::new(address.clone(), false));
                Some(self.endpoints.len() - 1)
            }
            None => None,
        };
        if let Some(leader_id) = leader_id.filter(|id| *id != 0) {
            self.leader_id = Some(leader_id);
            if let Some(index) = index {
                self.endpoints[index].node_id = Some(leader_id);
                self.endpoints[index].failed_at = None;
            }
        }
        address
    }

    /// A call on `address` failed below the API or the node is going away:
    /// it is not preferred for a while, and if it was the sticky endpoint the
    /// next one takes over and discovery runs again (a failover).
    pub(crate) fn mark_failed(&mut self, address: &str, now: Instant) {
        let index = self.position(address);
        if let Some(index) = index {
            self.endpoints[index].failed_at = Some(now);
        }
        if self.sticky.as_deref().is_some_and(|sticky| same_address(sticky, address)) {
            self.sticky = None;
            if let Some(index) = index {
                self.next_index = (index + 1) % self.endpoints.len().max(1);
            }
            self.set_discovery_due();
        }
    }

    /// Applies a `GetStatus` answer from the node at `address`: that node's
    /// identity, the leader, and the members. The discovered endpoints are
    /// replaced by the members not already configured, in the order given,
    /// up to [`ENDPOINTS_MAX`] endpoints in all; what is known about an
    /// endpoint that stays (e.g. a recent failure) is kept.
    pub(crate) fn apply_status(
        &mut self,
        address: &str,
        node_id: u64,
        region: &str,
        leader_id: u64,
        members: &[DiscoveredMember],
    ) {
        self.record_answer(address, Some(node_id), Some(region).filter(|region| !region.is_empty()), None);
        let previous = std::mem::take(&mut self.endpoints);
        let (mut endpoints, old_discovered): (Vec<_>, Vec<_>) =
            previous.into_iter().partition(|endpoint| endpoint.is_configured);
        for member in members {
            let configured = endpoints.iter_mut().find(|endpoint| {
                endpoint.is_configured
                    && (same_address(&endpoint.address, &member.address) || endpoint.node_id == Some(member.node_id))
            });
            if let Some(endpoint) = configured {
                endpoint.node_id = Some(member.node_id);
                endpoint.region = Some(member.region.clone());
                continue;
            }
            let is_listed = endpoints.iter().any(|endpoint| {
                same_address(&endpoint.address, &member.address) || endpoint.node_id == Some(member.node_id)
            });
            if is_listed || endpoints.len() >= ENDPOINTS_MAX {
                continue;
            }
            let mut endpoint = old_discovered
                .iter()
                .find(|old| same_address(&old.address, &member.address))
                .cloned()
                .unwrap_or_else(|| KnownEndpoint::new(member.address.clone(), false));
            endpoint.node_id = Some(member.node_id);
            endpoint.region = Some(member.region.clone());
            endpoints.push(endpoint);
        }
        self.endpoints = endpoints;
        if self.sticky.as_deref().is_some_and(|sticky| !self.contains(sticky)) {
            self.sticky = None;
        }
        self.next_index %= self.endpoints.len().max(1);
        if leader_id != 0 {
            self.leader_id = Some(leader_id);
        }
    }

    fn position(&self, address: &str) -> Option<usize> {
        self.endpoints.iter().position(|endpoint| same_address(&endpoint.address, address))
    }
}

/// `address` as a client endpoint: a bare `host:port` (as members and
/// `NOT_LEADER` report addresses) gets `http://`.
pub(crate) fn endpoint_address(address: &str) -> String {
    let address = address.trim();
    if address.contains("://") { address.to_owned() } else { format!("http://{address}") }
}

/// Whether two endpoint addresses name the same place (a trailing `/` aside).
fn same_address(left: &str, right: &str) -> bool {
    left.trim_end_matches('/') == right.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node_id: u64, region: &str, port: u16) -> DiscoveredMember {
        DiscoveredMember { node_id, region: region.into(), address: format!("http://10.0.0.{node_id}:{port}") }
    }

    fn table(configured: &[&str], region: Option<&str>) -> RoutingTable {
        let configured: Vec<String> = configured.iter().map(|address| (*address).to_owned()).collect();
        RoutingTable::new(&configured, region.map(str::to_owned), true)
    }

    #[test]
    fn discovery_appends_members_after_the_configured_endpoints() {
        let mut table = table(&["http://seed:7400"], None);
        assert!(table.take_discovery_due(), "due after the first connect");
        assert!(!table.take_discovery_due(), "taken once");
        table.apply_status("http://seed:7400", 1, "eu", 2, &[member(1, "eu", 7400), member(2, "us", 7400)]);
        // Node 1 is the seed (it answered): it is not listed twice.
        assert_eq!(table.addresses(), ["http://seed:7400", "http://10.0.0.2:7400"]);
        assert_eq!(table.leader_id(), Some(2));
        assert_eq!(table.candidates(Route::Leader, Instant::now())[0], "http://10.0.0.2:7400");
    }

    #[test]
    fn discovery_is_bounded_by_endpoints_max() {
        let mut table = table(&["http://seed:7400"], None);
        let members: Vec<_> = (1..=u64::try_from(ENDPOINTS_MAX).expect("small") + 10)
            .map(|node_id| DiscoveredMember {
                node_id,
                region: "eu".into(),
                address: format!("http://n{node_id}:7400"),
            })
            .collect();
        table.apply_status("http://seed:7400", 1_000, "eu", 0, &members);
        assert_eq!(table.addresses().len(), ENDPOINTS_MAX);
        assert_eq!(table.addresses()[0], "http://seed:7400");
    }

    #[test]
    fn a_new_discovery_replaces_the_discovered_endpoints_only() {
        let mut table = table(&["http://seed:7400"], None);
        table.apply_status("http://seed:7400", 1, "eu", 1, &[member(2, "eu", 7400), member(3, "eu", 7400)]);
        table.apply_status("http://seed:7400", 1, "eu", 1, &[member(3, "eu", 7400)]);
        assert_eq!(table.addresses(), ["http://seed:7400", "http://10.0.0.3:7400"]);
    }

    #[test]
    fn serializable_reads_prefer_the_region_unless_it_failed_recently() {
        let mut table = table(&["http://seed:7400"], Some("us"));
        let now = Instant::now();
        table.record_success("http://seed:7400");
        table.apply_status("http://seed:7400", 1, "eu", 1, &[member(2, "us", 7400), member(3, "ap", 7400)]);
        assert_eq!(
            table.candidates(Route::Nearby, now),
            ["http://10.0.0.2:7400", "http://seed:7400", "http://10.0.0.3:7400"]
        );
        assert_eq!(table.candidates(Route::Leader, now)[0], "http://seed:7400", "node 1 leads");
        table.mark_failed("http://10.0.0.2:7400", now);
        assert_eq!(table.candidates(Route::Nearby, now)[0], "http://seed:7400");
        let later = now + Duration::from_millis(ENDPOINT_FAILURE_COOLDOWN_MS);
        assert_eq!(table.candidates(Route::Nearby, later)[0], "http://10.0.0.2:7400", "preferred again");
    }

    #[test]
    fn without_a_region_every_read_goes_to_the_sticky_endpoint() {
        let mut table = table(&["http://a:1", "http://b:1"], None);
        table.record_success("http://b:1");
        assert_eq!(table.candidates(Route::Nearby, Instant::now()), ["http://b:1", "http://a:1"]);
    }

    #[test]
    fn a_failed_sticky_endpoint_hands_over_to_the_next_and_makes_discovery_due() {
        let mut table = table(&["http://a:1", "http://b:1", "http://c:1"], None);
        let now = Instant::now();
        assert!(table.take_discovery_due());
        table.record_success("http://a:1");
        table.mark_failed("http://a:1", now);
        assert!(table.take_discovery_due(), "a failover rediscovers");
        assert_eq!(table.candidates(Route::Leader, now), ["http://b:1", "http://c:1", "http://a:1"]);
    }

    #[test]
    fn not_leader_adds_and_prefers_the_leader() {
        let mut table = table(&["http://a:1"], None);
        let address = table.record_leader(Some(7), " n7:7400 ");
        assert_eq!(address, "http://n7:7400");
        assert_eq!(table.addresses(), ["http://a:1", "http://n7:7400"]);
        assert_eq!(table.candidates(Route::Leader, Instant::now())[0], "http://n7:7400");
        assert_eq!(table.candidates(Route::Nearby, Instant::now())[0], "http://a:1");
    }

    #[test]
    fn an_unknown_leader_in_the_headers_makes_discovery_due() {
        let mut table = table(&["http://a:1"], None);
        assert!(table.take_discovery_due());
        table.record_answer("http://a:1", Some(1), Some("eu"), Some(1));
        assert!(!table.take_discovery_due(), "the leader is the serving node");
        table.record_answer("http://a:1", Some(1), Some("eu"), Some(4));
        assert!(table.take_discovery_due(), "node 4 has no known address");
        table.record_answer("http://a:1", Some(1), Some("eu"), Some(4));
        assert!(!table.take_discovery_due(), "only when the leader changes");
    }

    #[test]
    fn discovery_disabled_is_never_due() {
        let mut table = RoutingTable::new(&["http://a:1".to_owned()], None, false);
        assert!(!table.take_discovery_due());
        table.record_success("http://a:1");
        table.mark_failed("http://a:1", Instant::now());
        assert!(!table.take_discovery_due());
    }

    #[test]
    fn reads_route_by_consistency() {
        assert_eq!(Route::for_read(pb::ReadConsistency::Serializable.into()), Route::Nearby);
        assert_eq!(Route::for_read(pb::ReadConsistency::Linearizable.into()), Route::Leader);
        assert_eq!(Route::for_read(0), Route::Leader, "unspecified is linearizable");
    }
}
