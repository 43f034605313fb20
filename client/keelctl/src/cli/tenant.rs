//! `keelctl tenant`: create, read, list and update tenants.
//!
//! `update` is a read-modify-write: it reads the tenant (linearizably),
//! applies the flags, and writes it back with an etag so that a concurrent
//! update is refused (`ETAG_MISMATCH`) rather than silently overwritten.
//! `--etag` pins the etag the caller saw instead of the one just read.

use super::error::CliError;
use super::output::Output;
use super::table::Table;
use super::timestamp::format_rfc3339;
use super::{ConsistencyArg, GlobalArgs, connect, enum_name};
use keel_client::pb;
use serde::Serialize;

/// `keelctl tenant …`
#[derive(Debug, clap::Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Lowercase letters, digits, '-' and '_'.
        tenant_id: String,
        /// Human-readable name.
        #[arg(long)]
        display_name: String,
        /// Service tier.
        #[arg(long, value_enum)]
        tier: TenantTierArg,
        /// Region where the tenant's data must stay.
        #[arg(long)]
        home_region: String,
        /// An engine the tenant may run (repeatable).
        #[arg(long = "enable-engine")]
        enable_engines: Vec<String>,
        /// Initial status.
        #[arg(long, value_enum, default_value_t = TenantStatusArg::Active)]
        status: TenantStatusArg,
    },
    /// Show one tenant.
    Get {
        /// The tenant id.
        tenant_id: String,
        /// Read consistency.
        #[arg(long, value_enum, default_value_t)]
        consistency: ConsistencyArg,
    },
    /// List tenants.
    List {
        /// Read consistency.
        #[arg(long, value_enum, default_value_t)]
        consistency: ConsistencyArg,
    },
    /// Change a tenant's mutable fields.
    Update(UpdateTenantArgs),
}

/// `keelctl tenant update` arguments.
#[derive(Debug, clap::Args)]
pub struct UpdateTenantArgs {
    /// The tenant id.
    pub tenant_id: String,
    /// New display name.
    #[arg(long)]
    pub display_name: Option<String>,
    /// New tier.
    #[arg(long, value_enum)]
    pub tier: Option<TenantTierArg>,
    /// New home region.
    #[arg(long)]
    pub home_region: Option<String>,
    /// New status.
    #[arg(long, value_enum)]
    pub status: Option<TenantStatusArg>,
    /// Add an engine to the enabled set (repeatable).
    #[arg(long = "enable-engine")]
    pub enable_engines: Vec<String>,
    /// Remove an engine from the enabled set (repeatable).
    #[arg(long = "disable-engine")]
    pub disable_engines: Vec<String>,
    /// Update only if the tenant's etag is still this one.
    #[arg(long)]
    pub etag: Option<String>,
}

/// `--tier` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TenantTierArg {
    /// Basic tier.
    Basic,
    /// Standard tier.
    Standard,
    /// Enterprise tier.
    Enterprise,
}

impl From<TenantTierArg> for pb::TenantTier {
    fn from(tier: TenantTierArg) -> Self {
        match tier {
            TenantTierArg::Basic => pb::TenantTier::Basic,
            TenantTierArg::Standard => pb::TenantTier::StandardTenant,
            TenantTierArg::Enterprise => pb::TenantTier::Enterprise,
        }
    }
}

/// `--status` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TenantStatusArg {
    /// May run engines.
    Active,
    /// May not run engines.
    Suspended,
}

impl From<TenantStatusArg> for pb::TenantStatus {
    fn from(status: TenantStatusArg) -> Self {
        match status {
            TenantStatusArg::Active => pb::TenantStatus::Active,
            TenantStatusArg::Suspended => pb::TenantStatus::Suspended,
        }
    }
}

/// A tenant as shown.
#[derive(Debug, Serialize)]
pub struct TenantView {
    /// `tenants/{tenant_id}`.
    pub name: String,
    /// The tenant id.
    pub tenant_id: String,
    /// Human-readable name.
    pub display_name: String,
    /// `basic`, `standard` or `enterprise`.
    pub tier: String,
    /// Data residency region.
    pub home_region: String,
    /// `active` or `suspended`.
    pub status: String,
    /// Engines it may run.
    pub enabled_engines: Vec<String>,
    /// Pass to `tenant update --etag` for compare-and-set.
    pub etag: String,
    /// Revision of creation.
    pub create_revision: u64,
    /// Revision of the last update.
    pub update_revision: u64,
    /// Creation time, Unix ms.
    pub create_time_ms: i64,
    /// Last update time, Unix ms.
    pub update_time_ms: i64,
}

impl TenantView {
    /// The view of a tenant from the server.
    pub fn from_proto(tenant: &pb::Tenant) -> Self {
        TenantView {
            name: tenant.name.clone(),
            tenant_id: tenant.tenant_id.clone(),
            display_name: tenant.display_name.clone(),
            tier: tenant_tier_name(tenant.tier),
            home_region: tenant.home_region.clone(),
            status: enum_name(tenant.status, |value| {
                pb::TenantStatus::try_from(value).ok().map(|status| status.as_str_name())
            })
            .to_ascii_lowercase(),
            enabled_engines: tenant.enabled_engines.clone(),
            etag: tenant.etag.clone(),
            create_revision: tenant.create_revision,
            update_revision: tenant.update_revision,
            create_time_ms: tenant.create_time_ms,
            update_time_ms: tenant.update_time_ms,
        }
    }

    fn table(&self) -> Table {
        let mut table = Table::fields();
        table
            .field("tenant_id", &self.tenant_id)
            .field("display_name", &self.display_name)
            .field("tier", &self.tier)
            .field("home_region", &self.home_region)
            .field("status", &self.status)
            .field("enabled_engines", self.enabled_engines.join(","))
            .field("etag", &self.etag)
            .field("create_revision", self.create_revision)
            .field("update_revision", self.update_revision)
            .field("create_time", format_rfc3339(self.create_time_ms))
            .field("update_time", format_rfc3339(self.update_time_ms));
        table
    }
}

/// The CLI's name for a tenant tier (`STANDARD_TENANT` is `standard`).
fn tenant_tier_name(tier: i32) -> String {
    match pb::TenantTier::try_from(tier) {
        Ok(pb::TenantTier::Basic) => "basic".into(),
        Ok(pb::TenantTier::StandardTenant) => "standard".into(),
        Ok(pb::TenantTier::Enterprise) => "enterprise".into(),
        Ok(pb::TenantTier::Unspecified) => "unspecified".into(),
        Err(_) => format!("UNKNOWN({tier})"),
    }
}

/// Applies `args` to `tenant`. Refuses an update that changes nothing.
pub fn apply_update(tenant: &mut pb::Tenant, args: &UpdateTenantArgs) -> Result<(), CliError> {
    let has_change = args.display_name.is_some()
        || args.tier.is_some()
        || args.home_region.is_some()
        || args.status.is_some()
        || !args.enable_engines.is_empty()
        || !args.disable_engines.is_empty();
    if !has_change {
        return Err(CliError::Usage {
            problem: "nothing to update: give --display-name, --tier, --home-region, --status, --enable-engine or \
                      --disable-engine"
                .into(),
        });
    }
    if let Some(engine) = args.enable_engines.iter().find(|engine| args.disable_engines.contains(engine)) {
        return Err(CliError::Usage { problem: format!("engine {engine:?} is both enabled and disabled") });
    }
    if let Some(display_name) = &args.display_name {
        tenant.display_name.clone_from(display_name);
    }
    if let Some(tier) = args.tier {
        tenant.tier = pb::TenantTier::from(tier).into();
    }
    if let Some(home_region) = &args.home_region {
        tenant.home_region.clone_from(home_region);
    }
    if let Some(status) = args.status {
        tenant.status = pb::TenantStatus::from(status).into();
    }
    tenant.enabled_engines.retain(|engine| !args.disable_engines.contains(engine));
    for engine in &args.enable_engines {
        if !tenant.enabled_engines.contains(engine) {
            tenant.enabled_engines.push(engine.clone());
        }
    }
    Ok(())
}

/// Runs a `tenant` command.
pub async fn run(command: TenantCommand, global: &GlobalArgs, output: &mut Output<'_>) -> Result<(), CliError> {
    let client = connect(global).await?;
    let served = match command {
        TenantCommand::Create { tenant_id, display_name, tier, home_region, enable_engines, status } => {
            let tenant = pb::Tenant {
                tenant_id,
                display_name,
                tier: pb::TenantTier::from(tier).into(),
                home_region,
                status: pb::TenantStatus::from(status).into(),
                enabled_engines: enable_engines,
                ..pb::Tenant::default()
            };
            client.create_tenant(tenant).await?
        }
        TenantCommand::Get { tenant_id, consistency } => client.get_tenant(&tenant_id, consistency.into()).await?,
        TenantCommand::Update(args) => {
            let mut tenant = client.get_tenant(&args.tenant_id, pb::ReadConsistency::Linearizable).await?.value;
            let etag = args.etag.clone().unwrap_or_else(|| tenant.etag.clone());
            apply_update(&mut tenant, &args)?;
            client.update_tenant(tenant, &etag).await?
        }
        TenantCommand::List { consistency } => {
            let served = client.list_all_tenants(consistency.into()).await?;
            let views: Vec<TenantView> = served.value.iter().map(TenantView::from_proto).collect();
            output.show(&views, |views| {
                let mut table =
                    Table::with_header(&["TENANT_ID", "DISPLAY_NAME", "TIER", "HOME_REGION", "STATUS", "ENGINES"]);
                for view in views {
                    table.row([
                        view.tenant_id.clone(),
                        view.display_name.clone(),
                        view.tier.clone(),
                        view.home_region.clone(),
                        view.status.clone(),
                        view.enabled_engines.join(","),
                    ]);
                }
                table
            })?;
            output.served_by(&served.meta);
            return Ok(());
        }
    };
    output.show(&TenantView::from_proto(&served.value), TenantView::table)?;
    output.served_by(&served.meta);
    Ok(())
}
