//! Policies against a real keeld: put, get, list, evaluate and test over
//! gRPC and through keelctl, the example policies in `deploy/policies/`, and
//! bad policies refused with a stable reason and no change to the state.

use crate::fixture::assert_refused;
use crate::fixture::{Fixture, reason_of};
use crate::harness::KeelProcess;
use crate::keelctl::{keelctl, keelctl_ok as ok};
use anyhow::{Context, Result, ensure};
use keel_chaos::process::AuthChannel as Channel;
use keel_proto::v1 as pb;
use pb::policy_service_client::PolicyServiceClient;
use tonic::Code;

const MAIN: &str = include_str!("../../deploy/policies/main.rego");
const CRITICAL_RISK: &str = include_str!("../../deploy/policies/critical_risk.rego");

async fn policies(node: &KeelProcess) -> Result<PolicyServiceClient<Channel>> {
    Ok(PolicyServiceClient::new(node.channel().await?))
}

fn put(policy: &str, source: &str, expected_version: Option<u64>) -> pb::PutPolicyRequest {
    pb::PutPolicyRequest {
        policy: policy.into(),
        source: source.into(),
        expected_version,
        idempotency_key: String::new(),
    }
}

fn context(tenant: &str, engine: &str, risk_band: &str) -> pb::EvaluationContext {
    pb::EvaluationContext {
        tenant: tenant.into(),
        engine: engine.into(),
        action: "run".into(),
        risk_band: risk_band.into(),
        region: "eu-west".into(),
        data_classes: vec!["confidential".into()],
        ..Default::default()
    }
}

fn evaluate(context: pb::EvaluationContext) -> pb::EvaluateRequest {
    pb::EvaluateRequest { policy: String::new(), context: Some(context), consistency: 0 }
}

/// A node with engines `billing` and `search`, tenants `acme` (enterprise,
/// eu-west) and `bolt` (basic, us-east).
async fn node_with_facts() -> Result<KeelProcess> {
    let node = KeelProcess::start().await?;
    let fixture = Fixture::new(&node).await?;
    let publisher = fixture.add_publisher_key(&node).await?;
    fixture.publish(&node, &Fixture::manifest("billing", "1.0.0"), &publisher).await?;
    fixture.publish(&node, &Fixture::manifest("search", "1.0.0"), &publisher).await?;
    fixture.create_tenant(&node, "acme").await?;
    let mut bolt = Fixture::tenant_request("bolt");
    if let Some(tenant) = bolt.tenant.as_mut() {
        tenant.tier = pb::TenantTier::Basic as i32;
        tenant.home_region = "us-east".into();
    }
    crate::single_node::tenants(&node).await?.create_tenant(bolt).await?;
    Ok(node)
}

#[tokio::test]
async fn policies_are_put_read_listed_evaluated_and_tested() -> Result<()> {
    let node = node_with_facts().await?;
    let mut client = policies(&node).await?;

    // No policy yet: default deny.
    let decision = client.evaluate(evaluate(context("acme", "billing", "low"))).await?.into_inner();
    ensure!(!decision.allow && decision.policy_version.is_empty(), "{decision:?}");

    let first = client.put_policy(put("main", CRITICAL_RISK, Some(0))).await?.into_inner();
    let policy = first.policy.context("a policy")?;
    ensure!(first.created && policy.version == 1 && policy.name == "policies/main/versions/1", "{policy:?}");
    let again = client.put_policy(put("main", CRITICAL_RISK, None)).await?.into_inner();
    ensure!(!again.created && again.policy.as_ref().map(|p| p.version) == Some(1), "{again:?}");
    let second = client.put_policy(put("main", MAIN, Some(1))).await?.into_inner();
    ensure!(second.policy.as_ref().map(|p| p.version) == Some(2), "{second:?}");

    let latest = client.get_policy(pb::GetPolicyRequest { name: "main".into(), version: 0, consistency: 0 }).await?;
    ensure!(latest.get_ref().version == 2 && latest.get_ref().source == MAIN, "{:?}", latest.get_ref());
    let old =
        client.get_policy(pb::GetPolicyRequest { name: "policies/main".into(), version: 1, consistency: 0 }).await?;
    ensure!(old.get_ref().source == CRITICAL_RISK);
    client.put_policy(put("staging", CRITICAL_RISK, None)).await?;
    let list = client.list_policies(pb::ListPoliciesRequest { page_size: 1, ..Default::default() }).await?.into_inner();
    ensure!(list.policies.len() == 1 && list.policies[0].policy == "main" && !list.next_page_token.is_empty());
    let rest = client
        .list_policies(pb::ListPoliciesRequest { page_size: 10, page_token: list.next_page_token, consistency: 0 })
        .await?
        .into_inner();
    ensure!(rest.policies.iter().map(|p| p.policy.as_str()).collect::<Vec<_>>() == ["staging"], "{rest:?}");

    // The combined example, on the node's facts.
    let cases: &[(pb::EvaluationContext, bool, &str)] = &[
        (context("acme", "billing", "critical"), false, "critical risk band is denied"),
        (context("nobody", "billing", "low"), false, "unknown tenant"),
        (
            context("bolt", "billing", "low"),
            false,
            "the tenant's home region is not among the engine's allowed regions",
        ),
        (context("bolt", "search", "low"), true, "basic tier"),
        (context("acme", "billing", "low"), true, "enterprise tier"),
    ];
    for (context, allow, reason) in cases {
        let decision = client.evaluate(evaluate(context.clone())).await?.into_inner();
        ensure!(decision.allow == *allow && decision.reason == *reason, "{context:?}: {decision:?}");
        ensure!(decision.policy_version == "main@2" && decision.decision_id.len() == 32, "{decision:?}");
    }
    let limits = client.evaluate(evaluate(context("acme", "billing", "low"))).await?.into_inner().limits;
    ensure!(limits == Some(pb::DecisionLimits { calls_per_minute: 6000, burst: 1000, max_duration_ms: 120_000 }));

    // Same request, same revision: same decision id, also from local state.
    let linearizable = client.evaluate(evaluate(context("acme", "billing", "low"))).await?;
    let mut serializable = evaluate(context("acme", "billing", "low"));
    serializable.consistency = pb::ReadConsistency::Serializable as i32;
    let serializable = client.evaluate(serializable).await?;
    ensure!(linearizable.get_ref().decision_id == serializable.get_ref().decision_id);
    ensure!(linearizable.metadata().get("keel-revision").is_some());

    // An explicitly named policy.
    let mut staging = evaluate(context("acme", "billing", "critical"));
    staging.policy = "staging".into();
    let decision = client.evaluate(staging).await?.into_inner();
    ensure!(decision.policy_version == "staging@1" && !decision.allow, "{decision:?}");

    // Test runs a candidate without storing it.
    let digest = node.status().await?.state_digest;
    let case = |context, expect_allow, expect_reason: Option<&str>| pb::PolicyTestCase {
        context: Some(context),
        expect_allow,
        expect_reason: expect_reason.map(str::to_owned),
    };
    let tested = client
        .test(pb::TestPolicyRequest {
            source: CRITICAL_RISK.into(),
            cases: vec![
                case(context("acme", "billing", "critical"), false, Some("critical risk band is denied")),
                case(context("acme", "billing", "low"), true, None),
                case(context("acme", "billing", "low"), false, None),
            ],
            consistency: 0,
        })
        .await?
        .into_inner();
    ensure!((tested.passed_count, tested.failed_count) == (2, 1), "{tested:?}");
    ensure!(tested.results.iter().map(|r| r.passed).collect::<Vec<_>>() == [true, true, false]);
    ensure!(tested.results[0].decision.as_ref().map(|d| d.policy_version.as_str()) == Some("candidate"));
    ensure!(node.status().await?.state_digest == digest, "Test changed the state");
    Ok(())
}

#[tokio::test]
async fn bad_policies_are_refused_and_change_nothing() -> Result<()> {
    let node = KeelProcess::start().await?;
    let mut client = policies(&node).await?;
    client.put_policy(put("main", CRITICAL_RISK, None)).await?;
    let digest = node.status().await?.state_digest;

    let bad: &[(&str, &str, Code, &str)] = &[
        ("does not parse", "package keel.policy\ndecision := {", Code::InvalidArgument, "POLICY_COMPILE_FAILED"),
        (
            "other package",
            "package elsewhere\ndecision := {\"allow\": true, \"reason\": \"x\"}",
            Code::InvalidArgument,
            "POLICY_COMPILE_FAILED",
        ),
        ("no decision rule", "package keel.policy\nallow := true", Code::InvalidArgument, "POLICY_COMPILE_FAILED"),
        (
            "clock",
            "package keel.policy\ndecision := {\"allow\": time.now_ns() > 0, \"reason\": \"x\"}",
            Code::InvalidArgument,
            "POLICY_BUILTIN_FORBIDDEN",
        ),
        (
            "not an object",
            "package keel.policy\ndecision := \"allow\"",
            Code::InvalidArgument,
            "POLICY_DECISION_MALFORMED",
        ),
        (
            "allow not a boolean",
            "package keel.policy\ndecision := {\"allow\": 1, \"reason\": \"x\"}",
            Code::InvalidArgument,
            "POLICY_DECISION_MALFORMED",
        ),
        (
            "extra key",
            "package keel.policy\ndecision := {\"allow\": true, \"reason\": \"x\", \"why\": 1}",
            Code::InvalidArgument,
            "POLICY_DECISION_MALFORMED",
        ),
        (
            "negative limit",
            "package keel.policy\ndecision := {\"allow\": true, \"reason\": \"x\", \"limits\": \
             {\"calls_per_minute\": -5, \"burst\": 1, \"max_duration_ms\": 1}}",
            Code::InvalidArgument,
            "POLICY_DECISION_MALFORMED",
        ),
        ("empty", "", Code::InvalidArgument, "FIELD_REQUIRED"),
    ];
    for (what, source, code, reason) in bad {
        let result = client.put_policy(put("main", source, None)).await;
        assert_refused(&node, &digest, what, result, *code, reason).await?;
    }
    let huge = format!("{CRITICAL_RISK}#{}", "x".repeat(70 * 1024));
    let result = client.put_policy(put("main", &huge, None)).await;
    assert_refused(&node, &digest, "oversized", result, Code::InvalidArgument, "LIMIT_EXCEEDED").await?;
    let result = client.put_policy(put("main", MAIN, Some(5))).await;
    assert_refused(&node, &digest, "stale version", result, Code::FailedPrecondition, "POLICY_VERSION_MISMATCH")
        .await?;
    let result = client.put_policy(put("Bad Name", MAIN, None)).await;
    assert_refused(&node, &digest, "bad name", result, Code::InvalidArgument, "FIELD_INVALID").await?;

    let result = client.get_policy(pb::GetPolicyRequest { name: "main".into(), version: 9, consistency: 0 }).await;
    assert_refused(&node, &digest, "missing version", result, Code::NotFound, "POLICY_NOT_FOUND").await?;
    let result = client.evaluate(evaluate(pb::EvaluationContext::default())).await;
    assert_refused(&node, &digest, "empty context", result, Code::InvalidArgument, "FIELD_REQUIRED").await?;
    let mut unknown_class = context("acme", "billing", "low");
    unknown_class.data_classes = vec!["secret".into()];
    let result = client.evaluate(evaluate(unknown_class)).await;
    assert_refused(&node, &digest, "unknown data class", result, Code::InvalidArgument, "FIELD_INVALID").await?;
    let result = client
        .test(pb::TestPolicyRequest {
            source: "package keel.policy\ndecision := 3".into(),
            cases: vec![pb::PolicyTestCase {
                context: Some(context("acme", "billing", "low")),
                expect_allow: true,
                expect_reason: None,
            }],
            consistency: 0,
        })
        .await;
    assert_refused(&node, &digest, "malformed candidate", result, Code::InvalidArgument, "POLICY_DECISION_MALFORMED")
        .await?;
    Ok(())
}

#[tokio::test]
async fn policy_commands_through_keelctl() -> Result<()> {
    let node = node_with_facts().await?;
    let dir = node.scratch();
    std::fs::write(dir.join("main.rego"), MAIN)?;
    std::fs::write(dir.join("broken.rego"), "package keel.policy\ndecision := {")?;

    let put = ok(&node, &dir, &["policy", "put", "main", "--file", "main.rego", "--expected-version", "0"])?;
    ensure!(put.contains("version") && put.contains('1'), "{put}");
    let got: serde_json::Value =
        serde_json::from_str(&ok(&node, &dir, &["--output", "json", "policy", "get", "main"])?)?;
    ensure!(got["version"] == 1 && got["source"] == MAIN, "{got}");
    let list = ok(&node, &dir, &["policy", "list"])?;
    ensure!(list.contains("POLICY") && list.contains("main"), "{list}");

    let decision: serde_json::Value = serde_json::from_str(&ok(
        &node,
        &dir,
        &[
            "--output",
            "json",
            "policy",
            "eval",
            "--tenant",
            "acme",
            "--engine",
            "billing",
            "--action",
            "run",
            "--risk-band",
            "low",
            "--data-class",
            "pii",
        ],
    )?)?;
    ensure!(decision["allow"] == true && decision["limits"]["burst"] == 1000, "{decision}");
    ensure!(decision["policy_version"] == "main@1", "{decision}");

    let cases = serde_json::json!([
        {"context": {"tenant": "acme", "engine": "billing", "action": "run", "risk_band": "critical"},
         "expect": {"allow": false, "reason": "critical risk band is denied"}},
        {"context": {"tenant": "bolt", "engine": "search", "action": "run"}, "expect": {"allow": true, "reason": "basic tier"}}
    ]);
    std::fs::write(dir.join("cases.json"), serde_json::to_vec_pretty(&cases)?)?;
    let tested = ok(&node, &dir, &["policy", "test", "--file", "main.rego", "--cases", "cases.json"])?;
    ensure!(tested.contains("pass") && !tested.contains("FAIL"), "{tested}");

    // A failing case: exit 1 with POLICY_TEST_FAILED.
    let failing = serde_json::json!([
        {"context": {"tenant": "acme", "engine": "billing", "action": "run", "risk_band": "critical"}, "expect": {"allow": true}}
    ]);
    std::fs::write(dir.join("failing.json"), serde_json::to_vec(&failing)?)?;
    let output = keelctl(&node, &dir, &["policy", "test", "--file", "main.rego", "--cases", "failing.json"])?;
    ensure!(output.status.code() == Some(1), "{output:?}");
    ensure!(String::from_utf8_lossy(&output.stderr).contains("POLICY_TEST_FAILED"), "{output:?}");

    // A policy that does not compile: exit 1 with the server's reason, nothing stored.
    let output = keelctl(&node, &dir, &["policy", "put", "main", "--file", "broken.rego"])?;
    ensure!(output.status.code() == Some(1), "{output:?}");
    ensure!(String::from_utf8_lossy(&output.stderr).contains("POLICY_COMPILE_FAILED"), "{output:?}");
    let got: serde_json::Value =
        serde_json::from_str(&ok(&node, &dir, &["--output", "json", "policy", "get", "main"])?)?;
    ensure!(got["version"] == 1, "{got}");
    Ok(())
}

#[tokio::test]
async fn every_member_of_a_cluster_gives_the_same_decision() -> Result<()> {
    use crate::cluster_harness::{Cluster, ClusterOptions};
    let cluster = Cluster::three(ClusterOptions::default()).await?;
    let leader = cluster.leader().await?;
    let follower = (leader + 1) % 3;
    crate::single_node::tenants(&cluster.nodes[leader]).await?.create_tenant(Fixture::tenant_request("acme")).await?;

    // A put through a follower is forwarded; a bad one changes nothing anywhere.
    let mut through_follower = policies(&cluster.nodes[follower]).await?;
    through_follower.put_policy(put("main", MAIN, Some(0))).await?;
    let (_, digest) = cluster.converged().await?;
    let status = through_follower.put_policy(put("main", "package keel.policy\ndecision := 1", None)).await;
    let status = status.err().context("a malformed policy is refused")?;
    ensure!(reason_of(&status) == "POLICY_DECISION_MALFORMED", "{status:?}");
    let (_, digest_after) = cluster.converged().await?;
    ensure!(digest_after == digest, "a refused put changed the state");

    let mut decisions = Vec::new();
    for node in &cluster.nodes {
        let decision = policies(node).await?.evaluate(evaluate(context("acme", "billing", "low"))).await?.into_inner();
        decisions.push(decision);
    }
    ensure!(decisions[0].allow && decisions[0].reason == "enterprise tier", "{:?}", decisions[0]);
    // Linearizable reads at the same revision: the same decision, id included.
    ensure!(decisions.iter().all(|d| *d == decisions[0]), "{decisions:?}");
    Ok(())
}
