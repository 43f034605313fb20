//! The one table of what each client RPC needs: the permission a token
//! must grant, and whose data the RPC touches. `authn` enforces the
//! permission and the cluster-wide scope at the edge; handlers enforce the
//! tenant scope (they know which tenant a request names) through
//! `Call::check_tenant` / `Call::tenant_scope`; `apply` re-checks the actor
//! and the scope of every write.
//!
//! | scope | a tenant-scoped token |
//! |---|---|
//! | `Tenant` | only its own tenant: other tenants' reads and writes are PERMISSION_DENIED / TENANT_OUT_OF_SCOPE (whether or not they exist), lists are filtered, a watch must name its tenant |
//! | `Shared` | may read (engines, keys, policies, status: nobody's private data) |
//! | `Cluster` | refused: cluster-wide changes are for cluster-wide tokens |
//!
//! Trust-store writes are `RootSigned`: their root signatures are their
//! authority (checked before proposing and again in `apply`), so whoever
//! holds the root keys can bootstrap an `api-token` key without a token; a
//! token, when sent, must still verify.

/// Permission names, as tokens carry them.
pub mod permission {
    /// Read engines, versions and the dependency graph.
    pub const REGISTRY_READ: &str = "registry.read";
    /// Publish engine versions (publisher signatures are needed as well).
    pub const REGISTRY_PUBLISH: &str = "registry.publish";
    /// Yank engine versions.
    pub const REGISTRY_YANK: &str = "registry.yank";
    /// Read tenants.
    pub const TENANT_READ: &str = "tenant.read";
    /// Create and update tenants.
    pub const TENANT_WRITE: &str = "tenant.write";
    /// Read policies.
    pub const POLICY_READ: &str = "policy.read";
    /// Store policies and test candidates.
    pub const POLICY_WRITE: &str = "policy.write";
    /// Ask a policy for a decision.
    pub const POLICY_EVALUATE: &str = "policy.evaluate";
    /// Watch events.
    pub const EVENTS_READ: &str = "events.read";
    /// Publish user events.
    pub const EVENTS_PUBLISH: &str = "events.publish";
    /// Read the trust store's keys and root metadata.
    pub const TRUST_READ: &str = "trust.read";
    /// Revoke capability tokens.
    pub const TOKEN_REVOKE: &str = "token.revoke";
    /// Read the cluster's status.
    pub const CLUSTER_READ: &str = "cluster.read";
    /// Change membership and leadership.
    pub const CLUSTER_ADMIN: &str = "cluster.admin";
    /// Ask for admission decisions (the admission service).
    pub const ADMISSION_ADMIT: &str = "admission.admit";
    /// Report call outcomes to the circuit breakers.
    pub const ADMISSION_REPORT: &str = "admission.report";
    /// Read the audit log (the audit service).
    pub const AUDIT_READ: &str = "audit.read";

    /// Every permission a token may name (besides the wildcard).
    pub const ALL: &[&str] = &[
        REGISTRY_READ,
        REGISTRY_PUBLISH,
        REGISTRY_YANK,
        TENANT_READ,
        TENANT_WRITE,
        POLICY_READ,
        POLICY_WRITE,
        POLICY_EVALUATE,
        EVENTS_READ,
        EVENTS_PUBLISH,
        TRUST_READ,
        TOKEN_REVOKE,
        CLUSTER_READ,
        CLUSTER_ADMIN,
        ADMISSION_ADMIT,
        ADMISSION_REPORT,
        AUDIT_READ,
    ];
}

/// Whose data an RPC touches (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's, named in the request.
    Tenant,
    /// Nobody's in particular: readable by any token with the permission.
    Shared,
    /// The whole cluster's: only tokens not scoped to a tenant.
    Cluster,
}

/// How an RPC is authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// A token granting `permission`, within `scope`.
    Token {
        /// What the token must grant.
        permission: &'static str,
        /// Whose data.
        scope: Scope,
    },
    /// The request's root signatures authorise it; a token is optional.
    RootSigned,
}

const fn token(permission: &'static str, scope: Scope) -> Guard {
    Guard::Token { permission, scope }
}

use permission::*;

/// Every client RPC (`/package.Service/Method`) and its guard.
pub const RPCS: &[(&str, Guard)] = &[
    ("/keel.v1.TrustService/AddKey", Guard::RootSigned),
    ("/keel.v1.TrustService/GetKey", token(TRUST_READ, Scope::Shared)),
    ("/keel.v1.TrustService/ListKeys", token(TRUST_READ, Scope::Shared)),
    ("/keel.v1.TrustService/GetRoot", token(TRUST_READ, Scope::Shared)),
    ("/keel.v1.TrustService/RevokeKey", Guard::RootSigned),
    ("/keel.v1.TrustService/RotateRoot", Guard::RootSigned),
    ("/keel.v1.TrustService/RevokeToken", token(TOKEN_REVOKE, Scope::Cluster)),
    ("/keel.v1.RegistryService/PublishEngineVersion", token(REGISTRY_PUBLISH, Scope::Cluster)),
    ("/keel.v1.RegistryService/GetEngineVersion", token(REGISTRY_READ, Scope::Shared)),
    ("/keel.v1.RegistryService/ListEngines", token(REGISTRY_READ, Scope::Shared)),
    ("/keel.v1.RegistryService/ListEngineVersions", token(REGISTRY_READ, Scope::Shared)),
    ("/keel.v1.RegistryService/YankEngineVersion", token(REGISTRY_YANK, Scope::Cluster)),
    ("/keel.v1.RegistryService/ListDependants", token(REGISTRY_READ, Scope::Shared)),
    ("/keel.v1.RegistryService/GetResolvedGraph", token(REGISTRY_READ, Scope::Shared)),
    ("/keel.v1.TenantService/CreateTenant", token(TENANT_WRITE, Scope::Tenant)),
    ("/keel.v1.TenantService/GetTenant", token(TENANT_READ, Scope::Tenant)),
    ("/keel.v1.TenantService/UpdateTenant", token(TENANT_WRITE, Scope::Tenant)),
    ("/keel.v1.TenantService/ListTenants", token(TENANT_READ, Scope::Tenant)),
    ("/keel.v1.PolicyService/PutPolicy", token(POLICY_WRITE, Scope::Cluster)),
    ("/keel.v1.PolicyService/GetPolicy", token(POLICY_READ, Scope::Shared)),
    ("/keel.v1.PolicyService/ListPolicies", token(POLICY_READ, Scope::Shared)),
    ("/keel.v1.PolicyService/Evaluate", token(POLICY_EVALUATE, Scope::Tenant)),
    ("/keel.v1.PolicyService/Test", token(POLICY_WRITE, Scope::Cluster)),
    ("/keel.v1.EventService/Watch", token(EVENTS_READ, Scope::Tenant)),
    ("/keel.v1.EventService/Publish", token(EVENTS_PUBLISH, Scope::Tenant)),
    ("/keel.v1.ClusterService/GetStatus", token(CLUSTER_READ, Scope::Shared)),
    ("/keel.v1.ClusterService/AddLearner", token(CLUSTER_ADMIN, Scope::Cluster)),
    ("/keel.v1.ClusterService/PromoteMember", token(CLUSTER_ADMIN, Scope::Cluster)),
    ("/keel.v1.ClusterService/RemoveMember", token(CLUSTER_ADMIN, Scope::Cluster)),
    ("/keel.v1.ClusterService/TransferLeadership", token(CLUSTER_ADMIN, Scope::Cluster)),
    ("/keel.v1.AdmissionService/Admit", token(ADMISSION_ADMIT, Scope::Tenant)),
    ("/keel.v1.AdmissionService/AdmitBatch", token(ADMISSION_ADMIT, Scope::Tenant)),
    ("/keel.v1.AdmissionService/ReportOutcome", token(ADMISSION_REPORT, Scope::Tenant)),
    ("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit", token(ADMISSION_ADMIT, Scope::Tenant)),
    ("/keel.v1.AuditService/QueryAudit", token(AUDIT_READ, Scope::Tenant)),
    ("/keel.v1.AuditService/ExportAudit", token(AUDIT_READ, Scope::Tenant)),
    ("/keel.v1.AuditService/VerifyAudit", token(AUDIT_READ, Scope::Cluster)),
];

/// Services every caller may use without a token: health checks and reflection.
pub const OPEN_SERVICES: &[&str] =
    &["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

/// What a request path needs: `None` for an open service, `Some(None)` for
/// a path that is no client RPC (answered UNIMPLEMENTED).
pub fn guard(path: &str) -> Option<Option<Guard>> {
    if OPEN_SERVICES.iter().any(|prefix| path.starts_with(prefix)) {
        return None;
    }
    Some(RPCS.iter().find(|(rpc, _)| *rpc == path).map(|(_, guard)| *guard))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use std::collections::BTreeSet;

    /// Every method of every keel.v1 service has exactly one row, and no row
    /// names a method that does not exist: a new RPC cannot be left open.
    #[test]
    fn the_table_covers_every_client_rpc_exactly() {
        let set = prost_types::FileDescriptorSet::decode(keel_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let mut methods = BTreeSet::new();
        let served = ["keel.v1", "envoy.service.ratelimit.v3"];
        for file in set.file.iter().filter(|file| served.contains(&file.package())) {
            for service in &file.service {
                for method in &service.method {
                    methods.insert(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
        let rows: BTreeSet<String> = RPCS.iter().map(|(path, _)| (*path).to_owned()).collect();
        assert_eq!(rows.len(), RPCS.len(), "a path is listed twice");
        assert_eq!(rows, methods);
        for (_, guard) in RPCS {
            if let Guard::Token { permission, .. } = guard {
                assert!(permission::ALL.contains(permission), "{permission} is not in permission::ALL");
            }
        }
    }

    #[test]
    fn health_and_reflection_are_open_and_unknown_paths_have_no_guard() {
        assert_eq!(guard("/grpc.health.v1.Health/Check"), None);
        assert_eq!(guard("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), None);
        assert_eq!(guard("/keel.v1.TenantService/DropEverything"), Some(None));
        assert_eq!(guard("/keel.v1.TenantService/GetTenant"), Some(Some(token(TENANT_READ, Scope::Tenant))));
    }
}
