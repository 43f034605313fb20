//! [`StateBudget`]: the bytes charged for what callers add to the replicated
//! state — tenants, engine versions and policy versions — against
//! `STATE_BYTES_MAX`, so the state (and every snapshot of it) stays bounded
//! whatever is sent.
//!
//! The charge is derived, not stored: each item's [`Charged::charged_bytes`]
//! is its variable-length fields plus a fixed overhead, `apply` adds and
//! removes charges as items change, and a decoded snapshot recounts them
//! ([`StateBudget::recount`]), so every member holds the same figure.

use crate::limits::Limit;
use crate::rejection::Rejection;

/// Fixed bytes charged per item for its fixed-size fields and map overhead.
pub const ITEM_OVERHEAD_BYTES: usize = 256;

/// An item of the replicated state whose size callers control.
pub trait Charged {
    /// Bytes this item is charged.
    fn charged_bytes(&self) -> usize;
}

/// Bytes charged so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateBudget {
    used_bytes: usize,
}

impl StateBudget {
    /// The budget of `items`, counted afresh.
    pub fn recount<'a>(items: impl IntoIterator<Item = &'a dyn Charged>) -> StateBudget {
        StateBudget { used_bytes: items.into_iter().map(Charged::charged_bytes).fold(0, usize::saturating_add) }
    }

    /// Bytes charged.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// Replaces a charge of `old_bytes` by `new_bytes` (0 for an item added
    /// or removed), refusing a total over `STATE_BYTES_MAX`. A shrinking
    /// change is always allowed.
    pub fn charge(&mut self, old_bytes: usize, new_bytes: usize) -> Result<(), Rejection> {
        let used_bytes = self.used_bytes.saturating_sub(old_bytes).saturating_add(new_bytes);
        if new_bytes > old_bytes {
            Limit::StateBytes.check(used_bytes)?;
        }
        self.used_bytes = used_bytes;
        Ok(())
    }
}
