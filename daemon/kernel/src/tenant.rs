//! Tenants v1: who runs engines, where their data lives, and their standing.
//!
//! Etags are derived from the revision of the last change, so they are
//! deterministic on every node and change on every update.

use crate::ids::{Name, check_description};
use crate::limits::Limit;
use crate::persistent::Map;
use crate::rejection::Rejection;
use crate::state_budget::{Charged, ITEM_OVERHEAD_BYTES, StateBudget};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Commercial tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum TenantTier {
    Basic,
    Standard,
    Enterprise,
}

/// Standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum TenantStatus {
    Active,
    Suspended,
}

/// The writable fields of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSpec {
    /// Identity; never changes.
    pub tenant_id: Name,
    /// Free text, at most `DESCRIPTION_BYTES_MAX`.
    pub display_name: String,
    /// Commercial tier.
    pub tier: TenantTier,
    /// Region where its data must stay.
    pub home_region: Name,
    /// Standing.
    pub status: TenantStatus,
    /// Engines it may run.
    pub enabled_engines: BTreeSet<Name>,
}

impl TenantSpec {
    fn validate(&self) -> Result<(), Rejection> {
        if self.display_name.is_empty() {
            return Err(Rejection::FieldRequired { field: "tenant.display_name".into() });
        }
        check_description(&self.display_name)?;
        Limit::EnabledEnginesPerTenant.check(self.enabled_engines.len())
    }
}

/// A stored tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Current values.
    pub spec: TenantSpec,
    /// Revision of creation.
    pub create_revision: u64,
    /// Revision of the last change.
    pub update_revision: u64,
    /// Leader-stamped creation time, Unix ms.
    pub create_time_ms: u64,
    /// Leader-stamped time of the last change, Unix ms.
    pub update_time_ms: u64,
}

impl Tenant {
    /// The etag clients pass back for compare-and-set.
    pub fn etag(&self) -> String {
        format!("r{}", self.update_revision)
    }
}

/// The tenants' replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenants {
    /// Persistent: a clone shares every tenant (see `KernelState`).
    tenants: Map<Name, Arc<Tenant>>,
}

impl Charged for Tenant {
    fn charged_bytes(&self) -> usize {
        let spec = &self.spec;
        ITEM_OVERHEAD_BYTES
            + spec.tenant_id.as_str().len()
            + spec.display_name.len()
            + spec.home_region.as_str().len()
            + spec.enabled_engines.iter().map(|engine| engine.as_str().len() + 8).sum::<usize>()
    }
}

impl Tenants {
    pub(crate) fn create(
        &mut self,
        spec: &TenantSpec,
        revision: u64,
        at_ms: u64,
        budget: &mut StateBudget,
    ) -> Result<Tenant, Rejection> {
        spec.validate()?;
        if self.tenants.contains_key(&spec.tenant_id) {
            return Err(Rejection::TenantAlreadyExists { tenant_id: spec.tenant_id.to_string() });
        }
        Limit::Tenants.check(self.tenants.len() + 1)?;
        let tenant = Tenant {
            spec: spec.clone(),
            create_revision: revision,
            update_revision: revision,
            create_time_ms: at_ms,
            update_time_ms: at_ms,
        };
        budget.charge(0, tenant.charged_bytes())?;
        self.tenants.insert(spec.tenant_id.clone(), Arc::new(tenant.clone()));
        Ok(tenant)
    }

    pub(crate) fn update(
        &mut self,
        spec: &TenantSpec,
        expected_etag: Option<&str>,
        revision: u64,
        at_ms: u64,
        budget: &mut StateBudget,
    ) -> Result<Tenant, Rejection> {
        spec.validate()?;
        let tenant = self
            .tenants
            .get(&spec.tenant_id)
            .ok_or_else(|| Rejection::TenantNotFound { tenant_id: spec.tenant_id.to_string() })?;
        if let Some(expected) = expected_etag
            && expected != tenant.etag()
        {
            return Err(Rejection::EtagMismatch { expected: expected.to_owned(), current: tenant.etag() });
        }
        let updated =
            Tenant { spec: spec.clone(), update_revision: revision, update_time_ms: at_ms, ..Tenant::clone(tenant) };
        budget.charge(tenant.charged_bytes(), updated.charged_bytes())?;
        self.tenants.insert(spec.tenant_id.clone(), Arc::new(updated.clone()));
        Ok(updated)
    }

    /// Every tenant, for a recount of the state budget.
    pub(crate) fn charged(&self) -> impl Iterator<Item = &dyn Charged> {
        self.tenants.values().map(|tenant| tenant.as_ref() as &dyn Charged)
    }

    /// One tenant.
    pub fn get(&self, tenant_id: &Name) -> Option<&Tenant> {
        self.tenants.get(tenant_id).map(Arc::as_ref)
    }

    /// Tenants in id order strictly after `after`.
    pub fn iter_from<'a>(&'a self, after: Option<&Name>) -> impl Iterator<Item = &'a Tenant> + 'a {
        let start = match after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        self.tenants.range((start, std::ops::Bound::Unbounded)).map(|(_, t)| t.as_ref())
    }

    /// Number of tenants.
    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}
