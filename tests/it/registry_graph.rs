//! The engine dependency graph against a real keeld: a core -> standard chain
//! publishes, a tier violation is refused with its reason and changes nothing,
//! and yank, dependants and the resolved graph work through keelctl.

use crate::fixture::{Fixture, reason_of};
use crate::harness::KeelProcess;
use crate::keelctl::keelctl_json;
use crate::single_node::registry;
use anyhow::{Context, Result};
use keel_proto::v1 as pb;
use tonic::Code;

/// A manifest of `tier` depending on each (name, requirement).
fn manifest(name: &str, version: &str, tier: &str, dependencies: &[(&str, &str)]) -> serde_json::Value {
    let mut document = Fixture::manifest(name, version);
    document["tier"] = tier.into();
    document["dependencies"] =
        dependencies.iter().map(|(n, r)| serde_json::json!({"name": n, "requirement": r})).collect();
    document
}

#[tokio::test]
async fn dependency_graph_tiers_yank_and_queries() -> Result<()> {
    let node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    let publisher = fixture.add_publisher_key(&node).await?;

    // core <- standard <- standard: a chain that resolves.
    fixture.publish(&node, &manifest("ledger", "1.0.0", "core", &[]), &publisher).await?;
    fixture.publish(&node, &manifest("ledger", "1.1.0", "core", &[]), &publisher).await?;
    fixture.publish(&node, &manifest("billing", "1.0.0", "standard", &[("ledger", "^1")]), &publisher).await?;
    fixture.publish(&node, &manifest("invoices", "1.0.0", "standard", &[("billing", "^1")]), &publisher).await?;

    // A core engine depending on a standard one is refused and changes nothing.
    let digest = node.status().await?.state_digest;
    let refused = fixture
        .publish_value(&node, &manifest("audit", "1.0.0", "core", &[("billing", "^1")]), &[&publisher])
        .await
        .expect_err("a core engine cannot depend on a standard one");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(reason_of(&refused), "DEPENDENCY_TIER_VIOLATION", "{refused:?}");
    assert_eq!(node.status().await?.state_digest, digest, "a refused publish changed the state");

    // The graph is as resolved at publish: billing took ledger 1.1.0.
    let graph = keelctl_json(&node, &["engine", "graph", "invoices", "--version", "1.0.0"])?;
    let nodes: Vec<(String, String, String)> = graph
        .as_array()
        .context("graph is a list")?
        .iter()
        .map(|n| {
            (
                n["engine"].as_str().unwrap_or("").into(),
                n["version"].as_str().unwrap_or("").into(),
                n["tier"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let expected = [("invoices", "1.0.0", "standard"), ("billing", "1.0.0", "standard"), ("ledger", "1.1.0", "core")];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(e, v, t)| ((*e).into(), (*v).into(), (*t).into())).collect();
    assert_eq!(nodes, expected);

    let dependants = keelctl_json(&node, &["engine", "dependants", "ledger"])?;
    assert_eq!(dependants["dependants"], serde_json::json!(["billing", "invoices"]));

    // Yank ledger 1.1.0: readable, idempotent, and new dependants resolve 1.0.0.
    let yanked = keelctl_json(&node, &["engine", "yank", "ledger", "1.1.0"])?;
    assert_eq!(yanked["yanked"], serde_json::json!(true));
    let again = keelctl_json(&node, &["engine", "yank", "ledger", "1.1.0"])?;
    assert_eq!(again["yanked"], serde_json::json!(true));
    let mut client = registry(&node).await?;
    let read = client
        .get_engine_version(pb::GetEngineVersionRequest {
            engine: "ledger".into(),
            version: "1.1.0".into(),
            consistency: 0,
        })
        .await?
        .into_inner();
    assert!(read.yanked);
    fixture.publish(&node, &manifest("reports", "1.0.0", "core", &[("ledger", "^1")]), &publisher).await?;
    let graph = client
        .get_resolved_graph(pb::GetResolvedGraphRequest {
            engine: "reports".into(),
            version: String::new(),
            consistency: 0,
        })
        .await?
        .into_inner();
    let versions: Vec<(&str, &str)> = graph.nodes.iter().map(|n| (n.engine.as_str(), n.version.as_str())).collect();
    assert_eq!(versions, [("reports", "1.0.0"), ("ledger", "1.0.0")]);

    // Nothing but the yanked version matches: unresolvable, nothing changes.
    let digest = node.status().await?.state_digest;
    let refused = fixture
        .publish_value(&node, &manifest("exact", "1.0.0", "core", &[("ledger", "=1.1.0")]), &[&publisher])
        .await
        .expect_err("a yanked version does not resolve");
    assert_eq!(reason_of(&refused), "DEPENDENCY_UNRESOLVABLE", "{refused:?}");
    assert_eq!(node.status().await?.state_digest, digest);

    // Yanking an unknown version is NOT_FOUND.
    let unknown = client
        .yank_engine_version(pb::YankEngineVersionRequest {
            engine: "ledger".into(),
            version: "9.9.9".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("no such version");
    assert_eq!((unknown.code(), reason_of(&unknown).as_str()), (Code::NotFound, "ENGINE_VERSION_NOT_FOUND"));
    Ok(())
}
