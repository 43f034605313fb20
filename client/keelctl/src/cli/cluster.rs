//! `keelctl cluster`: the serving node's view of the cluster, membership
//! changes, and `check` (a probe write, a read back through another member
//! and every member's digest compared; see `cluster/check.rs`).
//!
//! `join`, `promote` and `remove` go to the leader (the client follows
//! `NOT_LEADER`, and retries while another membership change is in
//! progress) and print the resulting members and the revision of the
//! membership entry. `transfer-leader` hands leadership to a voter and
//! prints the new leader and term.

use super::error::CliError;
use super::output::{Output, OutputFormat};
use super::table::Table;
use super::timestamp::format_rfc3339;
use super::{GlobalArgs, connect, enum_name};
use keel_client::pb;
use keel_client::served::Served;
use serde::Serialize;

pub mod check;

/// `keelctl cluster …`
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Role, term, leader, indices, state digest, counts and members.
    Status,
    /// Check that the members form one working cluster: write a probe
    /// tenant, read it back linearizably through another member, and wait
    /// until every member reports the same state digest at one revision
    /// (exit 6 and the reason otherwise). What `helm test` runs.
    Check(check::CheckArgs),
    /// Add a node as a learner: it receives the log but does not vote until
    /// promoted. Answers once the learner has caught up (or at the deadline,
    /// while it keeps catching up).
    Join(JoinArgs),
    /// Make a learner a voter.
    Promote {
        /// The learner's node id.
        node_id: u64,
    },
    /// Remove a member (voter or learner). The last voter cannot be removed.
    Remove {
        /// The member's node id.
        node_id: u64,
    },
    /// Hand leadership to a voter (writes pause briefly while it moves).
    TransferLeader {
        /// The voter to lead.
        node_id: u64,
    },
}

/// `keelctl cluster join` arguments: the new member.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The new node's id (unique in the cluster, not 0).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: u64,
    /// `host:port` clients use to reach the node.
    #[arg(long)]
    pub client_addr: String,
    /// `host:port` peers use to reach the node.
    #[arg(long)]
    pub peer_addr: String,
    /// The new node's region. (This is the member's region, not the global
    /// preferred region; a join always goes to the leader.)
    #[arg(long)]
    pub region: String,
    /// The new node's zone.
    #[arg(long)]
    pub zone: String,
}

impl JoinArgs {
    /// The member to add.
    pub fn to_member(&self) -> pb::Member {
        pb::Member {
            node_id: self.node_id,
            region: self.region.trim().to_owned(),
            zone: self.zone.trim().to_owned(),
            client_addr: self.client_addr.trim().to_owned(),
            peer_addr: self.peer_addr.trim().to_owned(),
            is_voter: false,
        }
    }
}

/// A member as shown.
#[derive(Debug, Serialize)]
pub struct MemberView {
    /// Node id.
    pub node_id: u64,
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Address clients use.
    pub client_addr: String,
    /// Address peers use.
    pub peer_addr: String,
    /// Whether it votes.
    pub is_voter: bool,
}

/// Cluster status as shown.
#[derive(Debug, Serialize)]
pub struct ClusterStatusView {
    /// The serving node.
    pub node_id: u64,
    /// Its region.
    pub region: String,
    /// Its zone.
    pub zone: String,
    /// keeld version.
    pub version: String,
    /// `LEADER`, `FOLLOWER`, …
    pub role: String,
    /// Raft term.
    pub term: u64,
    /// 0 when no leader is known.
    pub leader_id: u64,
    /// Raft commit index.
    pub commit_index: u64,
    /// Last applied index.
    pub applied_index: u64,
    /// SHA-256 of the state at `applied_index`.
    pub state_digest: String,
    /// Keys in the trust store.
    pub key_count: u64,
    /// Engines.
    pub engine_count: u64,
    /// Engine versions.
    pub engine_version_count: u64,
    /// Tenants.
    pub tenant_count: u64,
    /// Process start, Unix ms.
    pub boot_time_ms: i64,
    /// Members.
    pub members: Vec<MemberView>,
    /// Each member's health as the serving node probed it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<MemberHealthView>,
    /// Whether the serving member votes: `member`, `deciding`, `rejoining`.
    pub standing: String,
    /// What a deciding or rejoining member waits for.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub standing_detail: String,
    /// Automatic membership changes the serving node made while leading.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub member_changes: Vec<MemberChangeView>,
}

/// An automatic membership change as shown.
#[derive(Debug, Serialize)]
pub struct MemberChangeView {
    /// The member.
    pub node_id: u64,
    /// `replaced` or `removed`.
    pub kind: String,
    /// When, Unix ms (the leader's clock).
    pub at_ms: u64,
    /// The membership's log index.
    pub revision: u64,
    /// What happened.
    pub detail: String,
}

/// A member's health as shown.
#[derive(Debug, Serialize)]
pub struct MemberHealthView {
    /// Node id.
    pub node_id: u64,
    /// Answered the serving node's probe.
    pub is_reachable: bool,
    /// Its applied index, if it answered.
    pub applied_index: Option<u64>,
    /// Its state digest, if it answered.
    pub state_digest: Option<String>,
}

impl MemberView {
    fn from_proto(member: &pb::Member) -> Self {
        MemberView {
            node_id: member.node_id,
            region: member.region.clone(),
            zone: member.zone.clone(),
            client_addr: member.client_addr.clone(),
            peer_addr: member.peer_addr.clone(),
            is_voter: member.is_voter,
        }
    }
}

/// The member table `status` and the membership commands print; `*` marks
/// the leader (`leader_id` 0: none known).
fn member_table(members: &[MemberView], leader_id: u64) -> Table {
    let mut table = Table::with_header(&["NODE_ID", "REGION", "ZONE", "CLIENT_ADDR", "PEER_ADDR", "VOTER", "LEADER"]);
    for member in members {
        table.row([
            member.node_id.to_string(),
            member.region.clone(),
            member.zone.clone(),
            member.client_addr.clone(),
            member.peer_addr.clone(),
            if member.is_voter { "yes" } else { "no" }.to_owned(),
            if leader_id != 0 && member.node_id == leader_id { "*" } else { "" }.to_owned(),
        ]);
    }
    table
}

/// The membership after a change, as shown.
#[derive(Debug, Serialize)]
pub struct MembershipView {
    /// Revision (Raft index) of the membership entry.
    pub revision: u64,
    /// The leader that made the change (from the response's `keel-leader`),
    /// 0 when not reported.
    pub leader_id: u64,
    /// Members after the change.
    pub members: Vec<MemberView>,
}

impl MembershipView {
    /// The view of a membership response and the headers that came with it.
    pub fn from_served(served: &Served<pb::MembershipResponse>) -> Self {
        MembershipView {
            revision: served.value.revision,
            leader_id: served.meta.leader_id().unwrap_or(0),
            members: served.value.members.iter().map(MemberView::from_proto).collect(),
        }
    }

    fn render(&self) -> String {
        let mut fields = Table::fields();
        fields.field("revision", self.revision);
        format!("{}\n{}", fields.render(), member_table(&self.members, self.leader_id).render())
    }
}

impl ClusterStatusView {
    /// The view of a status from the server.
    pub fn from_proto(status: &pb::ClusterStatus) -> Self {
        ClusterStatusView {
            node_id: status.node_id,
            region: status.region.clone(),
            zone: status.zone.clone(),
            version: status.version.clone(),
            role: enum_name(status.role, |value| pb::RaftRole::try_from(value).ok().map(|role| role.as_str_name())),
            term: status.term,
            leader_id: status.leader_id,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            state_digest: status.state_digest.clone(),
            key_count: status.key_count,
            engine_count: status.engine_count,
            engine_version_count: status.engine_version_count,
            tenant_count: status.tenant_count,
            boot_time_ms: status.boot_time_ms,
            members: status.members.iter().map(MemberView::from_proto).collect(),
            health: status
                .member_health
                .iter()
                .map(|h| MemberHealthView {
                    node_id: h.node_id,
                    is_reachable: h.is_reachable,
                    applied_index: h.applied_index,
                    state_digest: h.state_digest.clone(),
                })
                .collect(),
            standing: if status.standing.is_empty() { "member".to_owned() } else { status.standing.clone() },
            standing_detail: status.standing_detail.clone(),
            member_changes: status
                .member_changes
                .iter()
                .map(|change| MemberChangeView {
                    node_id: change.node_id,
                    kind: change.kind.clone(),
                    at_ms: change.at_ms,
                    revision: change.revision,
                    detail: change.detail.clone(),
                })
                .collect(),
        }
    }

    fn render(&self) -> String {
        let mut fields = Table::fields();
        fields
            .field("node_id", self.node_id)
            .field("region", &self.region)
            .field("zone", &self.zone)
            .field("version", &self.version)
            .field("role", &self.role)
            .field("term", self.term)
            .field("leader_id", if self.leader_id == 0 { "none".into() } else { self.leader_id.to_string() })
            .field("commit_index", self.commit_index)
            .field("applied_index", self.applied_index)
            .field("state_digest", &self.state_digest)
            .field("keys", self.key_count)
            .field("engines", self.engine_count)
            .field("engine_versions", self.engine_version_count)
            .field("tenants", self.tenant_count)
            .field("boot_time", format_rfc3339(self.boot_time_ms));
        if self.standing_detail.is_empty() {
            fields.field("standing", &self.standing);
        } else {
            fields.field("standing", format!("{} ({})", self.standing, self.standing_detail));
        }
        let mut rendered = format!("{}\n{}", fields.render(), member_table(&self.members, self.leader_id).render());
        if !self.health.is_empty() {
            let mut health = Table::with_header(&["NODE_ID", "REACHABLE", "APPLIED_INDEX", "STATE_DIGEST"]);
            for member in &self.health {
                health.row([
                    member.node_id.to_string(),
                    if member.is_reachable { "yes" } else { "no" }.to_owned(),
                    member.applied_index.map_or_else(|| "-".to_owned(), |index| index.to_string()),
                    member.state_digest.clone().unwrap_or_else(|| "-".to_owned()),
                ]);
            }
            rendered = format!("{rendered}\n{}", health.render());
        }
        if !self.member_changes.is_empty() {
            let mut changes = Table::with_header(&["NODE_ID", "CHANGE", "AT", "REVISION", "DETAIL"]);
            for change in &self.member_changes {
                changes.row([
                    change.node_id.to_string(),
                    change.kind.clone(),
                    format_rfc3339(i64::try_from(change.at_ms).unwrap_or(i64::MAX)),
                    change.revision.to_string(),
                    change.detail.clone(),
                ]);
            }
            rendered = format!("{rendered}\n{}", changes.render());
        }
        rendered
    }
}

/// Runs a `cluster` command.
pub async fn run(command: ClusterCommand, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    match command {
        ClusterCommand::Status => {
            let client = connect(global).await?;
            let served = client.cluster_status().await?;
            let view = ClusterStatusView::from_proto(&served.value);
            match output.format() {
                OutputFormat::Table => output.write_stdout(&view.render())?,
                OutputFormat::Json => output.show(&view, |_| Table::default())?,
            }
            output.served_by(&served.meta);
            Ok(())
        }
        ClusterCommand::Check(args) => check::run(args, global, output).await,
        ClusterCommand::Join(args) => {
            let member = args.to_member();
            let served = connect(global).await?.add_learner(member).await?;
            show_membership(&served, output)
        }
        ClusterCommand::Promote { node_id } => {
            let served = connect(global).await?.promote_member(node_id).await?;
            show_membership(&served, output)
        }
        ClusterCommand::Remove { node_id } => {
            let served = connect(global).await?.remove_member(node_id).await?;
            show_membership(&served, output)
        }
        ClusterCommand::TransferLeader { node_id } => {
            let served = connect(global).await?.transfer_leadership(node_id).await?;
            let view = TransferView { leader_id: served.value.leader_id, term: served.value.term };
            output.show(&view, |view| {
                let mut table = Table::fields();
                table.field("leader_id", view.leader_id).field("term", view.term);
                table
            })?;
            output.served_by(&served.meta);
            Ok(())
        }
    }
}

/// The leadership after a transfer, as shown.
#[derive(Debug, Serialize)]
pub struct TransferView {
    /// The new leader.
    pub leader_id: u64,
    /// Its term.
    pub term: u64,
}

fn show_membership(served: &Served<pb::MembershipResponse>, output: &mut Output<'_>) -> Result<(), CliError> {
    let view = MembershipView::from_served(served);
    match output.format() {
        OutputFormat::Table => output.write_stdout(&view.render())?,
        OutputFormat::Json => output.show(&view, |_| Table::default())?,
    }
    output.served_by(&served.meta);
    Ok(())
}
