//! Tests that run `keelctl` commands end to end against a scripted fake node:
//! output in both formats, the "served by" line, error reports and exit codes.

use super::error::{EXIT_SERVER_ERROR, EXIT_UNAVAILABLE};
use super::*;
use clap::Parser;
use keel_client::fake_node::{Answer, FAKE_MEMBERSHIP_REVISION, FakeNode, keel_status, sample_key};
use std::time::Duration;

/// Runs `keelctl <args>` against `endpoint`; returns (exit code, stdout, stderr).
async fn keelctl(endpoint: &str, args: &[&str]) -> (u8, String, String) {
    let argv = ["keelctl", "--endpoints", endpoint, "--timeout-ms", "3000"].into_iter().chain(args.iter().copied());
    let cli = Cli::try_parse_from(argv).expect("arguments parse");
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = match run(cli, &mut stdout, &mut stderr).await {
        Ok(()) => 0,
        Err(error) => {
            error.report(&mut stderr).expect("report");
            error.exit_code()
        }
    };
    (code, String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

#[tokio::test]
async fn trust_get_prints_a_table_and_the_serving_node_on_stderr() {
    let node = FakeNode::start(1, vec![Answer::Key(sample_key("k1"))], vec![]).await;
    let (code, stdout, stderr) = keelctl(&node.address, &["trust", "get", "k1"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "key_id            k1\n\
             public_key        {}\n\
             purposes          ENGINE_PUBLISHER\n\
             not_before        2026-01-01T00:00:00Z\n\
             not_after         never\n\
             create_revision   7\n\
             signed_by         root0\n\
             revoked_revision  -\n",
            "ab".repeat(32)
        )
    );
    assert_eq!(stderr, "(served by node 1 in region local at revision 12)\n");
}

#[tokio::test]
async fn trust_get_json_has_stable_fields_and_nothing_on_stderr() {
    let node = FakeNode::start(1, vec![Answer::Key(sample_key("k1"))], vec![]).await;
    let (code, stdout, stderr) = keelctl(&node.address, &["--output", "json", "trust", "get", "k1"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr, "");
    let view: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        view,
        serde_json::json!({
            "name": "keys/k1",
            "key_id": "k1",
            "public_key": "ab".repeat(32),
            "purposes": ["ENGINE_PUBLISHER"],
            "not_before_ms": 1_767_225_600_000u64,
            "not_before": "2026-01-01T00:00:00Z",
            "not_after_ms": null,
            "not_after": null,
            "create_revision": 7,
            "signed_by": ["root0"],
            "revoked_revision": null,
        })
    );
}

#[tokio::test]
async fn a_server_refusal_is_reported_with_reason_and_metadata_and_exits_1() {
    let refusal = keel_status(tonic::Code::NotFound, "KEY_UNKNOWN", &[("key_id", "k9")], None);
    let node = FakeNode::start(1, vec![Answer::Fail(refusal)], vec![]).await;
    let (code, stdout, stderr) = keelctl(&node.address, &["trust", "get", "k9"]).await;
    assert_eq!(code, EXIT_SERVER_ERROR);
    assert_eq!(stdout, "");
    assert_eq!(stderr, "error: KEY_UNKNOWN: scripted KEY_UNKNOWN\n  key_id=k9\n");
}

#[tokio::test]
async fn an_unreachable_cluster_exits_3() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let (code, _, stderr) = keelctl(&address, &["cluster", "status"]).await;
    assert_eq!(code, EXIT_UNAVAILABLE);
    assert!(stderr.starts_with("error: CONNECT_FAILED: "), "{stderr}");
}

#[tokio::test]
async fn trust_list_fetches_all_pages_into_one_table() {
    let keys = (0..5).map(|i| sample_key(&format!("k{i}"))).collect();
    let node = FakeNode::start(1, vec![], keys).await;
    let (code, stdout, stderr) = keelctl(&node.address, &["trust", "list"]).await;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    assert!(lines[0].starts_with("KEY_ID  PURPOSES"), "{stdout}");
    assert!(lines[5].starts_with("k4      ENGINE_PUBLISHER  2026-01-01T00:00:00Z  never"), "{stdout}");
}

#[tokio::test]
async fn trust_add_key_signs_with_the_root_key_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = keel_client::KeyPair::from_secret_bytes([1u8; 32]);
    let root_file = dir.path().join("root.key");
    root.write_secret_file(&root_file).expect("root file");
    let publisher = keel_client::KeyPair::from_secret_bytes([7u8; 32]);
    let public_file = dir.path().join("publisher.pub");
    publisher.public().write_file(&public_file).expect("public file");
    let node = FakeNode::start(1, vec![], vec![]).await;
    let (code, stdout, stderr) = keelctl(
        &node.address,
        &[
            "--output",
            "json",
            "trust",
            "add-key",
            "--public",
            public_file.to_str().expect("utf-8"),
            "--purpose",
            "engine-publisher",
            "--not-before",
            "2026-01-01T00:00:00Z",
            "--signer",
            root_file.to_str().expect("utf-8"),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let view: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(view["created"], true);
    assert_eq!(view["key"]["key_id"], publisher.key_id());
    let requests = node.add_key_requests();
    let spec =
        keel_client::KeySpec::new(publisher.public_key(), [pb::KeyPurpose::EnginePublisher], 1_767_225_600_000, None)
            .expect("valid");
    assert_eq!(requests[0].spec, Some(spec.to_proto()));
    let payload = spec.signing_payload().expect("payload");
    assert!(keel_client::signing::verify(&root.public_key(), &payload, &requests[0].signatures[0].signature));
}

#[tokio::test]
async fn cluster_status_renders_fields_and_members() {
    let node = FakeNode::start(4, vec![], vec![]).await;
    let (code, stdout, stderr) = keelctl(&node.address, &["cluster", "status"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("node_id          4\n"), "{stdout}");
    assert!(stdout.contains("\nrole             LEADER\n"), "{stdout}");
    assert!(stdout.contains("\nNODE_ID  REGION  ZONE  CLIENT_ADDR     PEER_ADDR       VOTER  LEADER\n"), "{stdout}");
    assert!(stdout.ends_with("4        local   a     127.0.0.1:7400  127.0.0.1:7401  yes    *\n"), "{stdout}");
    let (code, stdout, _) = keelctl(&node.address, &["--output", "json", "cluster", "status"]).await;
    assert_eq!(code, 0);
    let view: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(view["role"], "LEADER");
    assert_eq!(view["members"][0]["client_addr"], "127.0.0.1:7400");
}

#[tokio::test]
async fn cluster_join_promote_and_remove_print_the_members_and_the_revision() {
    let node = FakeNode::start(1, vec![], vec![]).await;
    let join = [
        "cluster",
        "join",
        "--node-id",
        "5",
        "--client-addr",
        "10.0.0.5:7400",
        "--peer-addr",
        "10.0.0.5:7401",
        "--region",
        "eu",
        "--zone",
        "b",
    ];
    let (code, stdout, stderr) = keelctl(&node.address, &join).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "revision  42\n\n\
         NODE_ID  REGION  ZONE  CLIENT_ADDR     PEER_ADDR       VOTER  LEADER\n\
         1        local   a     127.0.0.1:7400  127.0.0.1:7401  yes    *\n\
         5        eu      b     10.0.0.5:7400   10.0.0.5:7401   no\n"
    );
    assert_eq!(stderr, "(served by node 1 in region local at revision 12)\n");

    let (code, stdout, stderr) = keelctl(&node.address, &["--output", "json", "cluster", "promote", "5"]).await;
    assert_eq!((code, stderr.as_str()), (0, ""));
    let view: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(view["revision"], FAKE_MEMBERSHIP_REVISION);
    assert_eq!(view["leader_id"], 1);
    assert_eq!(
        view["members"][1],
        serde_json::json!({
            "node_id": 5,
            "region": "eu",
            "zone": "b",
            "client_addr": "10.0.0.5:7400",
            "peer_addr": "10.0.0.5:7401",
            "is_voter": true,
        })
    );

    let (code, stdout, stderr) = keelctl(&node.address, &["--output", "json", "cluster", "remove", "5"]).await;
    assert_eq!(code, 0, "{stderr}");
    let view: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(view["members"].as_array().map(Vec::len), Some(1));
    assert_eq!(node.n_membership_calls(), 3);
}

#[tokio::test]
async fn removing_the_last_voter_is_reported_and_exits_1() {
    let node = FakeNode::start(1, vec![], vec![]).await;
    node.fail_membership([keel_status(tonic::Code::FailedPrecondition, "LAST_VOTER", &[("node_id", "1")], None)]);
    let (code, stdout, stderr) = keelctl(&node.address, &["cluster", "remove", "1"]).await;
    assert_eq!(code, EXIT_SERVER_ERROR);
    assert_eq!(stdout, "");
    assert_eq!(stderr, "error: LAST_VOTER: scripted LAST_VOTER\n  node_id=1\n");
}

#[tokio::test]
async fn a_membership_change_still_in_progress_at_the_deadline_exits_3() {
    let node = FakeNode::start(1, vec![], vec![]).await;
    let in_progress =
        || keel_status(tonic::Code::Unavailable, "MEMBERSHIP_CHANGE_IN_PROGRESS", &[], Some(Duration::from_secs(2)));
    node.fail_membership([in_progress(), in_progress()]);
    let argv = ["keelctl", "--endpoints", &node.address, "--timeout-ms", "500", "cluster", "promote", "2"];
    let cli = Cli::try_parse_from(argv).expect("arguments parse");
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let error = run(cli, &mut stdout, &mut stderr).await.expect_err("no time to retry");
    assert_eq!((error.reason(), error.exit_code()), ("MEMBERSHIP_CHANGE_IN_PROGRESS", EXIT_UNAVAILABLE));
}

#[tokio::test]
async fn region_flag_sends_serializable_reads_to_that_region() {
    let seed = FakeNode::start_in_region(1, "eu", vec![Answer::Key(sample_key("k1"))], vec![]).await;
    let near = FakeNode::start_in_region(2, "us", vec![Answer::Key(sample_key("k1"))], vec![]).await;
    for node in [&seed, &near] {
        node.set_cluster(vec![seed.member(true), near.member(true)], 1);
    }
    let (code, _, stderr) =
        keelctl(&seed.address, &["--region", "us", "trust", "get", "k1", "--consistency", "serializable"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr, "(served by node 2 in region us at revision 12)\n");
    assert_eq!((seed.n_get_key_calls(), near.n_get_key_calls()), (0, 1));
}

#[tokio::test]
async fn cluster_check_refuses_a_cluster_with_the_wrong_voter_count_before_writing_anything() {
    let node = FakeNode::start(1, vec![], vec![]).await;
    let learner = keel_client::fake_node::fake_member(2, "local", "127.0.0.1:2", "127.0.0.1:3", false);
    node.set_cluster(vec![node.member(true), learner], 1);
    let (code, stdout, stderr) = keelctl(&node.address, &["cluster", "check", "--expect-voters", "3"]).await;
    assert_eq!(code, super::error::EXIT_CHECK_FAILED, "{stderr}");
    assert_eq!(stdout, "");
    let member = node.address.trim_start_matches("http://");
    assert_eq!(
        stderr,
        format!(
            "error: CLUSTER_CHECK_FAILED: the cluster has 1 voters, expected 3 (members: 1:{member}, 2:127.0.0.1:2)\n"
        )
    );
    let zero = Cli::try_parse_from(["keelctl", "cluster", "check", "--deadline-ms", "0"]);
    assert!(zero.is_err(), "a zero deadline is a usage error");
}
