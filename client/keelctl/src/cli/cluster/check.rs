//! `keelctl cluster check`: is this one working cluster? The Helm chart's
//! `helm test` pod runs it; so can an operator after any change.
//!
//! ```text
//!   GetStatus (any member) ─► the members (and, with --expect-voters, their voter count)
//!   probe write ─► tenant <--tenant> (created suspended, or updated): display name with a fresh nonce
//!        │            answered at revision R by node W
//!        ▼
//!   linearizable read through member M ≠ W (a client of M alone) ─► must show the nonce, served by M
//!        ▼
//!   every member's GetStatus (a client of each alone), polled until some revision ≥ R has
//!   been reported by every member with one digest, or --deadline-ms passes
//! ```
//!
//! Digests are compared per revision, not per poll round: a cluster that
//! keeps applying entries while it is polled still passes once each member
//! has reported the same revision, and two members that report *different*
//! digests for one revision fail the check at once (their states diverged).

use super::super::error::CliError;
use super::super::output::Output;
use super::super::table::Table;
use super::super::{GlobalArgs, connect};
use keel_client::client::{ClientConfig, KeelClient};
use keel_client::error::ClientError;
use keel_client::limits::CONNECT_TIMEOUT_DEFAULT_MS;
use keel_client::pb;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// Tenant the probe writes unless `--tenant` says otherwise.
pub const PROBE_TENANT_DEFAULT: &str = "keel-check";
/// Default of `--deadline-ms`.
pub const CHECK_DEADLINE_MS_DEFAULT: u64 = 60_000;
/// Attempts at the probe write when another writer changes the tenant in
/// between (`ETAG_MISMATCH`, `TENANT_ALREADY_EXISTS`).
pub const PROBE_WRITE_ATTEMPTS_MAX: u32 = 5;
/// Pause between two rounds of status polls.
pub const POLL_INTERVAL_MS: u64 = 250;
/// Longest one member's `GetStatus` may take within a poll round.
pub const STATUS_CALL_TIMEOUT_MS: u64 = 3_000;
/// Revisions whose digests are remembered while polling; the oldest go first.
pub const OBSERVED_REVISIONS_MAX: usize = 4_096;
/// Reason of a failed `GetTenant` for a tenant that does not exist.
const REASON_TENANT_NOT_FOUND: &str = "TENANT_NOT_FOUND";
/// Reasons after which the probe write is tried again.
const REASONS_PROBE_RACED: [&str; 2] = ["ETAG_MISMATCH", "TENANT_ALREADY_EXISTS"];

/// `keelctl cluster check` arguments.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Tenant the probe writes: created (suspended, tier basic) when absent,
    /// else its display name is updated. A tenant-scoped token for it with
    /// `tenant.read`, `tenant.write` and `cluster.read` is enough.
    #[arg(long, default_value = PROBE_TENANT_DEFAULT)]
    pub tenant: String,
    /// Fail unless the membership has exactly this many voters.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub expect_voters: Option<u64>,
    /// Longest to wait for every member to report the same digest at one
    /// revision after the probe, in milliseconds.
    #[arg(long, default_value_t = CHECK_DEADLINE_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
    pub deadline_ms: u64,
}

/// Why the cluster did not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckFailure {
    /// The membership has another number of voters than `--expect-voters`.
    #[error("the cluster has {actual} voters, expected {expected} (members: {members})")]
    VoterCount {
        /// `--expect-voters`.
        expected: u64,
        /// Voters in the membership.
        actual: u64,
        /// `id:client_addr` of each member.
        members: String,
    },
    /// The serving member reported no members at all.
    #[error("the serving member reports no members")]
    NoMembers,
    /// The read through another member did not show the probe.
    #[error("node {node_id} read the probe tenant back as {found:?}, expected {expected:?}")]
    ProbeNotRead {
        /// The member read through.
        node_id: u64,
        /// The display name written.
        expected: String,
        /// What the read showed.
        found: String,
    },
    /// The read meant for one member was answered by another.
    #[error("the read sent to node {asked} ({endpoint}) was answered by {answered}")]
    ReadServedElsewhere {
        /// The member read through.
        asked: u64,
        /// Its endpoint.
        endpoint: String,
        /// Who answered (`node N` or `an unidentified node`).
        answered: String,
    },
    /// Two members reported different digests for one revision.
    #[error(
        "the members' states diverged: at revision {revision} node {node_a} has digest {digest_a} and node {node_b} has {digest_b}"
    )]
    Diverged {
        /// The revision.
        revision: u64,
        /// One member.
        node_a: u64,
        /// Its digest.
        digest_a: String,
        /// Another member.
        node_b: u64,
        /// Its digest.
        digest_b: String,
    },
    /// The deadline passed before every member reported one revision ≥ the probe's.
    #[error(
        "within {deadline_ms} ms the members did not all report one state digest at a revision ≥ {probe_revision}: {last_seen}"
    )]
    NotConverged {
        /// `--deadline-ms`.
        deadline_ms: u64,
        /// The probe's revision.
        probe_revision: u64,
        /// Each member's last answer or error.
        last_seen: String,
    },
}

impl CheckFailure {
    /// The member the failure names, when it names one.
    pub fn node_id(&self) -> Option<u64> {
        match self {
            CheckFailure::ProbeNotRead { node_id, .. } => Some(*node_id),
            CheckFailure::ReadServedElsewhere { asked, .. } => Some(*asked),
            CheckFailure::Diverged { node_b, .. } => Some(*node_b),
            CheckFailure::VoterCount { .. } | CheckFailure::NoMembers | CheckFailure::NotConverged { .. } => None,
        }
    }
}

/// One member's last report, as shown.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberCheckView {
    /// Node id.
    pub node_id: u64,
    /// Address clients use.
    pub client_addr: String,
    /// Whether it votes.
    pub is_voter: bool,
    /// The revision its digest is of.
    pub state_digest_revision: u64,
    /// Its digest at that revision.
    pub state_digest: String,
}

/// A passed check, as shown.
#[derive(Debug, Serialize)]
pub struct CheckView {
    /// The probe tenant.
    pub tenant: String,
    /// The display name the probe wrote.
    pub probe: String,
    /// The revision of the probe write.
    pub probe_revision: u64,
    /// The node that answered the write.
    pub written_via: u64,
    /// The node the probe was read back through.
    pub read_via: u64,
    /// The revision every member reported the same digest at.
    pub agreed_revision: u64,
    /// That digest.
    pub state_digest: String,
    /// Every member at `agreed_revision`.
    pub members: Vec<MemberCheckView>,
}

impl CheckView {
    fn table(&self) -> Table {
        let mut fields = Table::fields();
        fields
            .field("result", "ok")
            .field("tenant", &self.tenant)
            .field("probe", &self.probe)
            .field("probe_revision", self.probe_revision)
            .field("written_via", format!("node {}", self.written_via))
            .field("read_via", format!("node {}", self.read_via))
            .field("agreed_revision", self.agreed_revision)
            .field("state_digest", &self.state_digest);
        fields
    }

    fn render(&self) -> String {
        let mut members = Table::with_header(&["NODE_ID", "CLIENT_ADDR", "VOTER", "REVISION", "STATE_DIGEST"]);
        for member in &self.members {
            members.row([
                member.node_id.to_string(),
                member.client_addr.clone(),
                if member.is_voter { "yes" } else { "no" }.to_owned(),
                member.state_digest_revision.to_string(),
                member.state_digest.clone(),
            ]);
        }
        format!("{}\n{}", self.table().render(), members.render())
    }
}

/// What the members reported, per revision: node → digest. Bounded by
/// [`OBSERVED_REVISIONS_MAX`] revisions.
#[derive(Debug, Default)]
pub struct Observations {
    digests: BTreeMap<u64, BTreeMap<u64, String>>,
}

impl Observations {
    /// Records that `node_id` reported `digest` at `revision`. Fails when
    /// another member reported another digest for the same revision.
    pub fn record(&mut self, node_id: u64, revision: u64, digest: &str) -> Result<(), CheckFailure> {
        if digest.is_empty() {
            return Ok(());
        }
        let at_revision = self.digests.entry(revision).or_default();
        if let Some((other, other_digest)) =
            at_revision.iter().find(|(other, seen)| **other != node_id && *seen != digest)
        {
            return Err(CheckFailure::Diverged {
                revision,
                node_a: *other,
                digest_a: other_digest.clone(),
                node_b: node_id,
                digest_b: digest.to_owned(),
            });
        }
        at_revision.insert(node_id, digest.to_owned());
        while self.digests.len() > OBSERVED_REVISIONS_MAX {
            self.digests.pop_first();
        }
        Ok(())
    }

    /// The highest revision ≥ `floor` that every one of `node_ids` has
    /// reported, with its digest.
    pub fn agreed(&self, node_ids: &[u64], floor: u64) -> Option<(u64, String)> {
        self.digests.range(floor..).rev().find_map(|(revision, by_node)| {
            let first = by_node.values().next()?;
            node_ids.iter().all(|id| by_node.contains_key(id)).then(|| (*revision, first.clone()))
        })
    }
}

/// The member to read the probe back through: the lowest id other than the
/// writer's, or the writer itself in a one-member cluster.
pub fn read_member(members: &[pb::Member], written_via: Option<u64>) -> Option<&pb::Member> {
    let mut sorted: Vec<&pb::Member> = members.iter().collect();
    sorted.sort_by_key(|member| member.node_id);
    sorted.iter().find(|member| Some(member.node_id) != written_via).or(sorted.first()).copied()
}

/// `id:client_addr, …` for messages.
fn describe_members(members: &[pb::Member]) -> String {
    members.iter().map(|member| format!("{}:{}", member.node_id, member.client_addr)).collect::<Vec<_>>().join(", ")
}

/// A client of `member` alone (no discovery, so every call is answered by
/// it), with the global options' TLS and token.
fn member_client(global: &GlobalArgs, member: &pb::Member, call_timeout: Duration) -> Result<KeelClient, CliError> {
    let scheme = if global.ca_file.is_some() { "https" } else { "http" };
    let config = ClientConfig::new([format!("{scheme}://{}", member.client_addr)])
        .with_discover_members(false)
        .with_tls(global.tls()?)
        .with_token(global.token()?)
        .with_call_timeout(call_timeout)
        .with_connect_timeout(call_timeout.min(Duration::from_millis(CONNECT_TIMEOUT_DEFAULT_MS)));
    Ok(KeelClient::new(config)?)
}

/// Writes the probe: creates the tenant suspended when absent, else updates
/// its display name. Retried when another writer raced it.
async fn write_probe(
    client: &KeelClient,
    tenant_id: &str,
    display_name: &str,
    home_region: &str,
) -> Result<keel_client::served::Served<pb::Tenant>, ClientError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = match client.get_tenant(tenant_id, pb::ReadConsistency::Linearizable).await {
            Ok(served) => {
                let mut tenant = served.value;
                let etag = tenant.etag.clone();
                display_name.clone_into(&mut tenant.display_name);
                client.update_tenant(tenant, &etag).await
            }
            Err(error) if error.reason() == REASON_TENANT_NOT_FOUND => {
                let tenant = pb::Tenant {
                    tenant_id: tenant_id.to_owned(),
                    display_name: display_name.to_owned(),
                    tier: pb::TenantTier::Basic.into(),
                    home_region: home_region.to_owned(),
                    status: pb::TenantStatus::Suspended.into(),
                    ..pb::Tenant::default()
                };
                client.create_tenant(tenant).await
            }
            Err(error) => Err(error),
        };
        match outcome {
            Err(error) if attempt < PROBE_WRITE_ATTEMPTS_MAX && REASONS_PROBE_RACED.contains(&error.reason()) => {}
            outcome => return outcome,
        }
    }
}

/// Runs `cluster check`.
pub async fn run(args: CheckArgs, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    let client = connect(global).await?;
    let status = client.cluster_status().await?.value;
    let members = status.members.clone();
    if let Some(expected) = args.expect_voters {
        let actual = u64::try_from(members.iter().filter(|member| member.is_voter).count()).unwrap_or(u64::MAX);
        if actual != expected {
            return Err(CheckFailure::VoterCount { expected, actual, members: describe_members(&members) }.into());
        }
    }

    let nonce: u64 = rand::random();
    let probe = format!("keel cluster check {nonce:016x}");
    let written = write_probe(&client, &args.tenant, &probe, &status.region).await?;
    let probe_revision = written.value.update_revision;
    let written_via = written.meta.node_id;
    output.note(&format!(
        "probe written: tenant {} at revision {probe_revision} via node {}",
        args.tenant,
        written_via.map_or_else(|| "?".to_owned(), |id| id.to_string())
    ));

    let Some(reader) = read_member(&members, written_via) else {
        return Err(CheckFailure::NoMembers.into());
    };
    let reader_client = member_client(global, reader, Duration::from_millis(global.timeout_ms))?;
    let read = reader_client.get_tenant(&args.tenant, pb::ReadConsistency::Linearizable).await?;
    if read.meta.node_id.is_some_and(|id| id != reader.node_id) {
        return Err(CheckFailure::ReadServedElsewhere {
            asked: reader.node_id,
            endpoint: reader.client_addr.clone(),
            answered: read.meta.node_id.map_or_else(|| "an unidentified node".to_owned(), |id| format!("node {id}")),
        }
        .into());
    }
    if read.value.display_name != probe {
        return Err(CheckFailure::ProbeNotRead {
            node_id: reader.node_id,
            expected: probe,
            found: read.value.display_name,
        }
        .into());
    }
    output.note(&format!("probe read back linearizably via node {}", reader.node_id));

    let view_members = converge(global, &members, probe_revision, args.deadline_ms).await?;
    let (agreed_revision, state_digest) = view_members
        .first()
        .map(|member| (member.state_digest_revision, member.state_digest.clone()))
        .unwrap_or_default();
    let view = CheckView {
        tenant: args.tenant,
        probe,
        probe_revision,
        written_via: written_via.unwrap_or(0),
        read_via: reader.node_id,
        agreed_revision,
        state_digest,
        members: view_members,
    };
    match output.format() {
        super::super::output::OutputFormat::Table => output.write_stdout(&view.render()),
        super::super::output::OutputFormat::Json => output.show(&view, |_| Table::default()),
    }
}

/// Polls every member until all have reported one digest at one revision ≥
/// `floor`; answers each member at that revision.
async fn converge(
    global: &GlobalArgs,
    members: &[pb::Member],
    floor: u64,
    deadline_ms: u64,
) -> Result<Vec<MemberCheckView>, CliError> {
    let per_call = Duration::from_millis(STATUS_CALL_TIMEOUT_MS.min(global.timeout_ms));
    let clients: Vec<(pb::Member, KeelClient)> = members
        .iter()
        .map(|member| Ok((member.clone(), member_client(global, member, per_call)?)))
        .collect::<Result<_, CliError>>()?;
    let node_ids: Vec<u64> = members.iter().map(|member| member.node_id).collect();
    let deadline = Instant::now() + Duration::from_millis(deadline_ms);
    let mut observations = Observations::default();
    let mut last_seen: BTreeMap<u64, String> = BTreeMap::new();
    loop {
        for (member, client) in &clients {
            match client.cluster_status().await {
                Ok(served) => {
                    let status = served.value;
                    observations.record(member.node_id, status.state_digest_revision, &status.state_digest)?;
                    last_seen.insert(
                        member.node_id,
                        format!("revision {} digest {}", status.state_digest_revision, short(&status.state_digest)),
                    );
                }
                Err(error) => {
                    last_seen.insert(member.node_id, format!("{}: {}", error.reason(), error.message()));
                }
            }
        }
        if let Some((revision, digest)) = observations.agreed(&node_ids, floor) {
            return Ok(members
                .iter()
                .map(|member| MemberCheckView {
                    node_id: member.node_id,
                    client_addr: member.client_addr.clone(),
                    is_voter: member.is_voter,
                    state_digest_revision: revision,
                    state_digest: digest.clone(),
                })
                .collect());
        }
        if Instant::now() + Duration::from_millis(POLL_INTERVAL_MS) > deadline {
            let last_seen = node_ids
                .iter()
                .map(|id| format!("node {id}: {}", last_seen.get(id).map_or("no answer", String::as_str)))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(CheckFailure::NotConverged { deadline_ms, probe_revision: floor, last_seen }.into());
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

/// The first 12 hex digits of a digest, for messages.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node_id: u64) -> pb::Member {
        pb::Member {
            node_id,
            region: "r".into(),
            zone: "z".into(),
            client_addr: format!("keel-{}.keel-headless:7400", node_id - 1),
            peer_addr: format!("keel-{}.keel-headless:7401", node_id - 1),
            is_voter: true,
        }
    }

    #[test]
    fn agreement_needs_every_member_at_one_revision_at_or_above_the_probe() {
        let mut seen = Observations::default();
        let nodes = [1, 2, 3];
        seen.record(1, 10, "aa").expect("record");
        seen.record(2, 10, "aa").expect("record");
        assert_eq!(seen.agreed(&nodes, 10), None, "node 3 has not reported revision 10");
        seen.record(3, 11, "bb").expect("record");
        assert_eq!(seen.agreed(&nodes, 10), None, "no revision reported by all three");
        seen.record(3, 10, "aa").expect("record");
        assert_eq!(seen.agreed(&nodes, 10), Some((10, "aa".to_owned())));
        assert_eq!(seen.agreed(&nodes, 11), None, "below the probe's revision does not count");
        seen.record(1, 11, "bb").expect("record");
        seen.record(2, 11, "bb").expect("record");
        assert_eq!(seen.agreed(&nodes, 10), Some((11, "bb".to_owned())), "the highest agreed revision");
    }

    #[test]
    fn two_digests_for_one_revision_fail_at_once_naming_both_members() {
        let mut seen = Observations::default();
        seen.record(1, 7, "aa").expect("record");
        seen.record(1, 7, "aa").expect("the same report twice is fine");
        let failure = seen.record(3, 7, "cc").expect_err("diverged");
        assert_eq!(
            failure,
            CheckFailure::Diverged { revision: 7, node_a: 1, digest_a: "aa".into(), node_b: 3, digest_b: "cc".into() }
        );
        assert_eq!(failure.node_id(), Some(3));
    }

    #[test]
    fn an_empty_digest_is_not_yet_worked_out_and_counts_for_nothing() {
        let mut seen = Observations::default();
        seen.record(1, 5, "").expect("record");
        seen.record(2, 5, "dd").expect("no divergence with a missing digest");
        assert_eq!(seen.agreed(&[1, 2], 0), None);
    }

    #[test]
    fn observations_keep_a_bounded_number_of_revisions() {
        let mut seen = Observations::default();
        let n_revisions = u64::try_from(OBSERVED_REVISIONS_MAX).expect("fits") + 10;
        for revision in 0..n_revisions {
            seen.record(1, revision, "aa").expect("record");
        }
        assert_eq!(seen.digests.len(), OBSERVED_REVISIONS_MAX);
        assert_eq!(seen.digests.keys().next(), Some(&10));
    }

    #[test]
    fn the_probe_is_read_back_through_another_member_than_the_writer() {
        let members = [member(3), member(1), member(2)];
        assert_eq!(read_member(&members, Some(1)).map(|m| m.node_id), Some(2));
        assert_eq!(read_member(&members, Some(2)).map(|m| m.node_id), Some(1));
        assert_eq!(read_member(&members, None).map(|m| m.node_id), Some(1));
        assert_eq!(read_member(&[member(1)], Some(1)).map(|m| m.node_id), Some(1), "alone: itself");
        assert_eq!(read_member(&[], Some(1)).map(|m| m.node_id), None);
    }

    #[test]
    fn failures_say_what_was_expected_and_what_was_seen() {
        let failure = CheckFailure::VoterCount { expected: 3, actual: 1, members: "1:keel-0:7400".into() };
        assert_eq!(failure.to_string(), "the cluster has 1 voters, expected 3 (members: 1:keel-0:7400)");
        let failure = CheckFailure::NotConverged {
            deadline_ms: 500,
            probe_revision: 9,
            last_seen: "node 1: revision 9 digest aa; node 2: TRANSPORT: refused".into(),
        };
        assert!(failure.to_string().contains("node 2: TRANSPORT: refused"), "{failure}");
    }
}
