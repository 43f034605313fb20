//! `keelctl cluster`: the serving node's view of the cluster.

use super::error::CliError;
use super::output::Output;
use super::table::Table;
use super::timestamp::format_rfc3339;
use super::{GlobalArgs, connect, enum_name};
use crate::pb;
use serde::Serialize;

/// `keelctl cluster …`
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Role, term, leader, indices, state digest, counts and members.
    Status,
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
            members: status
                .members
                .iter()
                .map(|member| MemberView {
                    node_id: member.node_id,
                    region: member.region.clone(),
                    zone: member.zone.clone(),
                    client_addr: member.client_addr.clone(),
                    peer_addr: member.peer_addr.clone(),
                    is_voter: member.is_voter,
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
        let mut members =
            Table::with_header(&["NODE_ID", "REGION", "ZONE", "CLIENT_ADDR", "PEER_ADDR", "VOTER", "LEADER"]);
        for member in &self.members {
            members.row([
                member.node_id.to_string(),
                member.region.clone(),
                member.zone.clone(),
                member.client_addr.clone(),
                member.peer_addr.clone(),
                if member.is_voter { "yes" } else { "no" }.to_owned(),
                if member.node_id == self.leader_id { "*" } else { "" }.to_owned(),
            ]);
        }
        format!("{}\n{}", fields.render(), members.render())
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
                super::output::OutputFormat::Table => output.write_stdout(&view.render())?,
                super::output::OutputFormat::Json => output.show(&view, |_| Table::default())?,
            }
            output.served_by(&served.meta);
            Ok(())
        }
    }
}
