//! Every limit Keel enforces, as a named constant.
//!
//! The node checks them at the API edge to fail fast; the kernel checks them
//! again in `apply`, which is the authority. Over a limit, the rejection names
//! the constant (see [`crate::Rejection::LimitExceeded`]).

/// Bytes in any name: engine, tenant, region, zone, action, capability.
pub const NAME_BYTES_MAX: usize = 256;
/// Bytes in any free-text description or display name.
pub const DESCRIPTION_BYTES_MAX: usize = 4 * 1024;
/// Bytes in a manifest as sent (before canonicalisation).
pub const MANIFEST_BYTES_MAX: usize = 256 * 1024;
/// Bytes in a user event payload.
pub const EVENT_PAYLOAD_BYTES_MAX: usize = 1024 * 1024;
/// Bytes in a capability token.
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Permissions in one capability token.
pub const TOKEN_PERMISSIONS_MAX: usize = 100;
/// Lifetime of one capability token.
pub const TOKEN_LIFETIME_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// Bytes in a token's `sub`, `jti` or one permission name.
pub const TOKEN_CLAIM_BYTES_MAX: usize = 256;
/// Revoked token ids remembered at once (each until its token's `exp`, so at
/// most the tokens revoked within `TOKEN_LIFETIME_MS_MAX`).
pub const REVOKED_TOKENS_MAX: usize = 100_000;
/// Dependencies declared by one engine version.
pub const DEPENDENCIES_PER_ENGINE_MAX: usize = 64;
/// Actions declared by one engine version.
pub const ACTIONS_PER_ENGINE_MAX: usize = 256;
/// Capabilities declared by one engine version.
pub const CAPABILITIES_PER_ENGINE_MAX: usize = 64;
/// Keys holding one purpose (role) in the trust store.
pub const KEYS_PER_ROLE_MAX: usize = 64;
/// Signatures attached to one request.
pub const SIGNATURES_PER_REQUEST_MAX: usize = 16;
/// Root keys given at bootstrap.
pub const BOOTSTRAP_ROOT_KEYS_MAX: usize = KEYS_PER_ROLE_MAX;
/// Engines enabled for one tenant.
pub const ENABLED_ENGINES_PER_TENANT_MAX: usize = 1024;
/// Concurrent watchers on one node.
pub const WATCHERS_PER_NODE_MAX: usize = 10_000;
/// Bytes in one gRPC message, either direction.
pub const GRPC_MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Events retained in the replicated history (older ones are compacted).
pub const EVENT_HISTORY_EVENTS_MAX: usize = 10_000;
/// Bytes charged for the retained history: payloads plus a fixed overhead per event.
pub const EVENT_HISTORY_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Age of the oldest retained event, by leader-stamped time.
pub const EVENT_HISTORY_AGE_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// Bytes in one idempotency key.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// How long a key is remembered, by leader-stamped time: a retry inside the
/// window is answered with the original outcome.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 60 * 60 * 1000;
/// Keys remembered at once (the oldest are forgotten first).
pub const IDEMPOTENCY_KEYS_MAX: usize = 100_000;
/// Bytes of remembered outcomes (the oldest are forgotten first).
pub const IDEMPOTENCY_RECORDS_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Items in one page of a list response.
pub const PAGE_SIZE_MAX: usize = 1000;
/// Items in a page when the request does not say.
pub const PAGE_SIZE_DEFAULT: usize = 100;
/// UI surfaces declared by one engine version.
pub const UI_SURFACES_PER_ENGINE_MAX: usize = 16;
/// Bytes in a UI surface's `entry` (a relative path or an https URL).
pub const UI_ENTRY_BYTES_MAX: usize = 1024;
/// Bytes in one policy's Rego source.
pub const POLICY_SOURCE_BYTES_MAX: usize = 64 * 1024;
/// Policy names in the replicated state.
pub const POLICIES_MAX: usize = 256;
/// Versions kept per policy name; a put beyond it drops the oldest.
pub const POLICY_VERSIONS_KEPT: usize = 16;
/// Cases in one `PolicyService.Test` request.
pub const POLICY_TEST_CASES_MAX: usize = 256;
/// RVM instructions one policy evaluation may execute; over it the
/// evaluation fails (at put: a rejection; at evaluate: a deny).
pub const POLICY_EVAL_INSTRUCTIONS_MAX: usize = 100_000;
/// Bytes of an evaluator or compiler message kept in a rejection or a reason.
pub const POLICY_MESSAGE_BYTES_MAX: usize = 1024;
/// Nesting of `[` and `{` in a policy's source. regorus's parser takes
/// time exponential in this depth (measured: ×2 per level), so it is bounded
/// before parsing; real policies nest 3 or 4 deep.
pub const POLICY_NESTING_DEPTH_MAX: usize = 6;
/// Bytes one judgement (a policy put, a policy evaluation, a manifest's
/// action schemas) may hold allocated at once, counted exactly in the
/// judging child process: one allocation past it aborts the evaluation, the
/// same way on every member (`EVALUATION_ABORTED`, failure `memory_budget`).
pub const EVALUATION_MEMORY_BYTES_MAX: usize = 128 * 1024 * 1024;
/// The name reported for [`EVALUATION_MEMORY_BYTES_MAX`] in `ErrorInfo.metadata["limit"]`.
pub const EVALUATION_MEMORY_BYTES_MAX_NAME: &str = "EVALUATION_MEMORY_BYTES_MAX";
/// Stack of the thread that judges: large enough that no input within the
/// size limits can exhaust it (regorus's parser recurses once per operand of
/// a chain of binary operators; the worst 64 KiB policy, ~30 000 operands,
/// measured ~230 MiB of stack in a debug build), so stack depth — which
/// differs between builds — never decides a verdict. Only touched pages
/// cost memory.
pub const EVALUATION_STACK_BYTES: usize = 512 * 1024 * 1024;
/// Bytes of one judgement request or verdict exchanged with the judging process.
pub const EVALUATION_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Bytes of one signature (Ed25519 signatures are exactly 64).
pub const SIGNATURE_BYTES_MAX: usize = 64;
/// Bytes of one proposal as written to the log (bincode of the whole
/// `Proposal`). Checked before proposing: an entry over it could be
/// appended by the leader but never sent to a follower, and no later write
/// would commit. The node asserts it fits one peer message with room to spare.
pub const PROPOSAL_BYTES_MAX: usize = 3 * 1024 * 1024;
/// Members of the cluster, voters and learners together. Membership lives
/// in every snapshot's header, so it is bounded with it.
pub const MEMBERS_MAX: usize = 16;
/// Bytes of one list response page (besides `page_size`): a page ends
/// before the item that would take it past this, so large items never make
/// a list fail; it always holds at least one item.
pub const LIST_PAGE_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Tenants in the replicated state.
pub const TENANTS_MAX: usize = 100_000;
/// Bytes charged for tenants, engine versions and policy versions together
/// (each item's own bytes plus a fixed overhead; see `state_budget`). The
/// event history and idempotency records have bounds of their own, so a
/// snapshot stays well under the peer transport's `SNAPSHOT_BYTES_MAX`.
pub const STATE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Data classes in one evaluation context.
pub const POLICY_CONTEXT_DATA_CLASSES_MAX: usize = 16;

const _: () = assert!(MANIFEST_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX);
const _: () = assert!(EVENT_PAYLOAD_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX);
const _: () = assert!(PAGE_SIZE_DEFAULT <= PAGE_SIZE_MAX);
const _: () = assert!(DESCRIPTION_BYTES_MAX < MANIFEST_BYTES_MAX);
const _: () = assert!(EVENT_PAYLOAD_BYTES_MAX < EVENT_HISTORY_BYTES_MAX);
const _: () = assert!(UI_ENTRY_BYTES_MAX < MANIFEST_BYTES_MAX);
const _: () = assert!(POLICY_SOURCE_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX);
const _: () = assert!(POLICY_MESSAGE_BYTES_MAX <= DESCRIPTION_BYTES_MAX);
const _: () = assert!(POLICY_VERSIONS_KEPT >= 1);
const _: () = assert!(GRPC_MESSAGE_BYTES_MAX < EVALUATION_MESSAGE_BYTES_MAX);
const _: () = assert!(PROPOSAL_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX);
const _: () = assert!(LIST_PAGE_BYTES_MAX + 64 * 1024 < GRPC_MESSAGE_BYTES_MAX);
const _: () = assert!(2 * MANIFEST_BYTES_MAX < LIST_PAGE_BYTES_MAX);
const _: () = assert!(POLICY_SOURCE_BYTES_MAX * POLICY_VERSIONS_KEPT * POLICIES_MAX <= STATE_BYTES_MAX);
const _: () = assert!(EVENT_PAYLOAD_BYTES_MAX + 64 * 1024 < PROPOSAL_BYTES_MAX);
const _: () = assert!(MANIFEST_BYTES_MAX + SIGNATURES_PER_REQUEST_MAX * 1024 < PROPOSAL_BYTES_MAX);
const _: () = assert!(EVALUATION_MESSAGE_BYTES_MAX < EVALUATION_MEMORY_BYTES_MAX);

/// The one table of limits a rejection can name: variant => constant,
/// and whether reaching it is a *capacity* limit (accumulated state full:
/// `RESOURCE_EXHAUSTED`) or a *shape* limit (this request too big:
/// `INVALID_ARGUMENT`). The order is the variants' bincode index in logs
/// and snapshots: append only.
macro_rules! limit_table {
    ($($variant:ident => $constant:ident, $kind:ident;)*) => {
        /// The name of a limit, as it appears in `ErrorInfo.metadata["limit"]`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[allow(missing_docs)]
        pub enum Limit {
            $($variant,)*
        }

        impl Limit {
            /// Every limit, in table order.
            pub const ALL: &'static [Limit] = &[$(Limit::$variant,)*];

            /// The constant's name, stable for clients.
            pub fn name(self) -> &'static str {
                match self {
                    $(Limit::$variant => stringify!($constant),)*
                }
            }

            /// The constant's value.
            pub fn value(self) -> usize {
                match self {
                    $(Limit::$variant => $constant,)*
                }
            }

            /// Whether reaching it means accumulated state is full (rather
            /// than one request being too big).
            pub fn is_capacity(self) -> bool {
                match self {
                    $(Limit::$variant => limit_table!(@capacity $kind),)*
                }
            }
        }
    };
    (@capacity capacity) => { true };
    (@capacity shape) => { false };
}

limit_table! {
    NameBytes => NAME_BYTES_MAX, shape;
    DescriptionBytes => DESCRIPTION_BYTES_MAX, shape;
    ManifestBytes => MANIFEST_BYTES_MAX, shape;
    DependenciesPerEngine => DEPENDENCIES_PER_ENGINE_MAX, shape;
    ActionsPerEngine => ACTIONS_PER_ENGINE_MAX, shape;
    CapabilitiesPerEngine => CAPABILITIES_PER_ENGINE_MAX, shape;
    KeysPerRole => KEYS_PER_ROLE_MAX, capacity;
    SignaturesPerRequest => SIGNATURES_PER_REQUEST_MAX, shape;
    BootstrapRootKeys => BOOTSTRAP_ROOT_KEYS_MAX, shape;
    EnabledEnginesPerTenant => ENABLED_ENGINES_PER_TENANT_MAX, shape;
    EventPayloadBytes => EVENT_PAYLOAD_BYTES_MAX, shape;
    IdempotencyKeyBytes => IDEMPOTENCY_KEY_BYTES_MAX, shape;
    WatchersPerNode => WATCHERS_PER_NODE_MAX, shape;
    UiSurfacesPerEngine => UI_SURFACES_PER_ENGINE_MAX, shape;
    UiEntryBytes => UI_ENTRY_BYTES_MAX, shape;
    PolicySourceBytes => POLICY_SOURCE_BYTES_MAX, shape;
    Policies => POLICIES_MAX, capacity;
    PolicyTestCases => POLICY_TEST_CASES_MAX, shape;
    PolicyContextDataClasses => POLICY_CONTEXT_DATA_CLASSES_MAX, shape;
    PolicyNestingDepth => POLICY_NESTING_DEPTH_MAX, shape;
    SignatureBytes => SIGNATURE_BYTES_MAX, shape;
    ProposalBytes => PROPOSAL_BYTES_MAX, shape;
    Tenants => TENANTS_MAX, capacity;
    StateBytes => STATE_BYTES_MAX, capacity;
    Members => MEMBERS_MAX, capacity;
    TokenClaimBytes => TOKEN_CLAIM_BYTES_MAX, shape;
    RevokedTokens => REVOKED_TOKENS_MAX, capacity;
}

impl Limit {
    /// Fails with [`crate::Rejection::LimitExceeded`] when `actual` is over this limit.
    pub fn check(self, actual: usize) -> Result<(), crate::Rejection> {
        if actual > self.value() {
            return Err(crate::Rejection::LimitExceeded { limit: self, actual });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_table_names_each_constant_once() {
        let names: std::collections::BTreeSet<&str> = Limit::ALL.iter().map(|limit| limit.name()).collect();
        assert_eq!(names.len(), Limit::ALL.len());
        assert!(Limit::ALL.iter().all(|limit| limit.name().ends_with("_MAX") && limit.value() > 0));
        assert_eq!(Limit::Tenants.value(), TENANTS_MAX);
        assert!(Limit::Tenants.is_capacity() && !Limit::ManifestBytes.is_capacity());
    }
}
