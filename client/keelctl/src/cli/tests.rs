//! Tests of argument parsing and of local-only commands.

use super::cluster::{ClusterCommand, JoinArgs};
use super::engine::EngineCommand;
use super::error::{CliError, EXIT_USAGE};
use super::keys::KeysCommand;
use super::output::OutputFormat;
use super::policy::PolicyCommand;
use super::tenant::{TenantCommand, TenantStatusArg, TenantTierArg, UpdateTenantArgs, apply_update};
use super::trust::{PurposeArg, TrustCommand};
use super::*;
use clap::Parser;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("keelctl").chain(args.iter().copied()))
}

#[test]
fn global_defaults() {
    // The default endpoint applies when KEEL_ENDPOINTS is unset; tests must
    // not depend on the environment, so pass the flag explicitly elsewhere.
    let cli = parse(&["--endpoints", DEFAULT_ENDPOINT, "cluster", "status"]).expect("parses");
    assert_eq!(cli.global.endpoints, [DEFAULT_ENDPOINT]);
    assert_eq!(cli.global.output, OutputFormat::Table);
    assert!(matches!(cli.command, Command::Cluster(cluster::ClusterCommand::Status)));
}

#[test]
fn global_flags_go_before_or_after_the_command() {
    let cli = parse(&[
        "cluster",
        "status",
        "--endpoints",
        "http://a:1,http://b:2",
        "--output",
        "json",
        "--timeout-ms",
        "250",
    ])
    .expect("parses");
    assert_eq!(cli.global.endpoints, ["http://a:1", "http://b:2"]);
    assert_eq!(cli.global.output, OutputFormat::Json);
    assert_eq!(cli.global.timeout_ms, 250);
    assert!(parse(&["--timeout-ms", "0", "cluster", "status"]).is_err(), "zero timeout");
    assert!(parse(&["--output", "yaml", "cluster", "status"]).is_err());
}

#[test]
fn keys_generate_needs_out() {
    let cli = parse(&["keys", "generate", "--out", "/tmp/publisher"]).expect("parses");
    let Command::Keys(KeysCommand::Generate { out }) = cli.command else { panic!("wrong command") };
    assert_eq!(out, std::path::Path::new("/tmp/publisher"));
    assert!(parse(&["keys", "generate"]).is_err());
}

#[test]
fn trust_add_key_parses_purposes_and_times() {
    let cli = parse(&[
        "trust",
        "add-key",
        "--public",
        "p.pub",
        "--purpose",
        "engine-publisher",
        "--purpose",
        "api-token",
        "--not-before",
        "2026-01-01T00:00:00Z",
        "--not-after",
        "1798761600000",
        "--signer",
        "root.key",
    ])
    .expect("parses");
    let Command::Trust(TrustCommand::AddKey(args)) = cli.command else { panic!("wrong command") };
    assert_eq!(args.purpose, [PurposeArg::EnginePublisher, PurposeArg::ApiToken]);
    assert_eq!(args.not_before, Some(1_767_225_600_000));
    assert_eq!(args.not_after, Some(1_798_761_600_000));
    assert_eq!(args.signer, [std::path::Path::new("root.key")]);
}

#[test]
fn trust_add_key_refuses_root_purpose_missing_purpose_and_bad_times() {
    let base = ["trust", "add-key", "--public", "p.pub", "--signer", "r.key"];
    assert!(parse(&base).is_err(), "purpose is required");
    assert!(parse(&[&base[..], &["--purpose", "root"]].concat()).is_err(), "root is not offered");
    let bad_time = [&base[..], &["--purpose", "api-token", "--not-after", "next week"]].concat();
    assert!(parse(&bad_time).is_err());
}

#[test]
fn trust_add_key_and_revoke_take_several_signers() {
    let cli = parse(&[
        "trust",
        "add-key",
        "--public",
        "p.pub",
        "--purpose",
        "api-token",
        "--signer",
        "a.key",
        "--signer",
        "b.key",
    ])
    .expect("parses");
    let Command::Trust(TrustCommand::AddKey(args)) = cli.command else { panic!("wrong command") };
    assert_eq!(args.signer.len(), 2);
    let cli = parse(&["trust", "revoke", "k1", "--signer", "a.key", "--signer", "b.key"]).expect("parses");
    let Command::Trust(TrustCommand::Revoke { signer, .. }) = cli.command else { panic!("wrong command") };
    assert_eq!(signer.len(), 2);
    assert!(parse(&["trust", "revoke", "k1"]).is_err(), "a signer is required");
}

#[test]
fn trust_rotate_root_parses_keys_thresholds_and_signers() {
    let cli = parse(&[
        "trust",
        "rotate-root",
        "--root-key",
        "new1.pub",
        "--root-key",
        "new2.pub",
        "--root-threshold",
        "2",
        "--engine-publisher-threshold",
        "1",
        "--not-after",
        "2030-01-01T00:00:00Z",
        "--signer",
        "old.key",
        "--signer",
        "new1.key",
        "--signer",
        "new2.key",
    ])
    .expect("parses");
    let Command::Trust(TrustCommand::RotateRoot(args)) = cli.command else { panic!("wrong command") };
    assert_eq!(args.root_key.len(), 2);
    assert_eq!(args.root_threshold, Some(2));
    assert_eq!(args.engine_publisher_threshold, Some(1));
    assert_eq!(args.not_after, Some(1_893_456_000_000));
    assert_eq!(args.signer.len(), 3);
    assert!(!args.dry_run);
}

#[test]
fn trust_rotate_root_needs_keys_or_a_document_and_signers_unless_dry() {
    assert!(parse(&["trust", "rotate-root", "--signer", "old.key"]).is_err(), "no new root keys");
    assert!(parse(&["trust", "rotate-root", "--root-key", "n.pub"]).is_err(), "no signer");
    assert!(parse(&["trust", "rotate-root", "--root-key", "n.pub", "--dry-run"]).is_ok());
    assert!(parse(&["trust", "rotate-root", "--metadata", "m.json", "--signer", "old.key"]).is_ok());
    let both = ["trust", "rotate-root", "--metadata", "m.json", "--root-key", "n.pub", "--signer", "old.key"];
    assert!(parse(&both).is_err(), "a document and building flags conflict");
}

#[test]
fn trust_list_and_get() {
    let cli = parse(&["trust", "list", "--purpose", "api-token", "--consistency", "serializable"]).expect("parses");
    let Command::Trust(TrustCommand::List { purpose, consistency }) = cli.command else { panic!("wrong command") };
    assert_eq!(purpose, Some(PurposeArg::ApiToken));
    assert_eq!(consistency, ConsistencyArg::Serializable);
    let cli = parse(&["trust", "get", "fe812c12f3ab4ce6ac5db69ac352f906"]).expect("parses");
    let Command::Trust(TrustCommand::Get { key_id, consistency }) = cli.command else { panic!("wrong command") };
    assert_eq!(key_id, "fe812c12f3ab4ce6ac5db69ac352f906");
    assert_eq!(consistency, ConsistencyArg::Linearizable);
}

#[test]
fn engine_commands_parse() {
    let cli =
        parse(&["engine", "sign", "--manifest", "m.json", "--key", "p.key", "--out", "m.signed.json"]).expect("sign");
    assert!(matches!(cli.command, Command::Engine(EngineCommand::Sign { out: Some(_), .. })));
    let cli = parse(&["engine", "publish", "m.signed.json"]).expect("publish bundle");
    assert!(matches!(cli.command, Command::Engine(EngineCommand::Publish { bundle: Some(_), manifest: None, .. })));
    let cli = parse(&["engine", "publish", "--manifest", "m.json", "--key", "p.key"]).expect("publish manifest");
    let Command::Engine(EngineCommand::Publish { bundle, manifest, key }) = cli.command else {
        panic!("wrong command")
    };
    assert_eq!((bundle, manifest.is_some(), key.len()), (None, true, 1));
    assert!(parse(&["engine", "publish"]).is_err(), "a source is required");
    assert!(parse(&["engine", "publish", "b.json", "--manifest", "m.json"]).is_err(), "only one source");
    let cli = parse(&["engine", "get", "echo", "--version", "1.2.0", "--consistency", "serializable"]).expect("get");
    let Command::Engine(EngineCommand::Get { name, version, consistency }) = cli.command else {
        panic!("wrong command")
    };
    assert_eq!((name.as_str(), version.as_deref(), consistency), ("echo", Some("1.2.0"), ConsistencyArg::Serializable));
    assert!(matches!(parse(&["engine", "list"]).expect("list").command, Command::Engine(EngineCommand::List { .. })));
    assert!(matches!(
        parse(&["engine", "versions", "echo"]).expect("versions").command,
        Command::Engine(EngineCommand::Versions { .. })
    ));
}

#[test]
fn tenant_commands_parse() {
    let cli = parse(&[
        "tenant",
        "create",
        "acme",
        "--display-name",
        "Acme Corp",
        "--tier",
        "enterprise",
        "--home-region",
        "eu-west",
        "--enable-engine",
        "echo",
        "--enable-engine",
        "ocr",
    ])
    .expect("create");
    let Command::Tenant(TenantCommand::Create { tenant_id, tier, enable_engines, status, .. }) = cli.command else {
        panic!("wrong command")
    };
    assert_eq!((tenant_id.as_str(), tier, status), ("acme", TenantTierArg::Enterprise, TenantStatusArg::Active));
    assert_eq!(enable_engines, ["echo", "ocr"]);
    assert!(
        parse(&["tenant", "create", "acme", "--display-name", "A", "--home-region", "eu"]).is_err(),
        "tier required"
    );
    let cli = parse(&["tenant", "update", "acme", "--status", "suspended", "--etag", "e1"]).expect("update");
    let Command::Tenant(TenantCommand::Update(args)) = cli.command else { panic!("wrong command") };
    assert_eq!((args.status, args.etag.as_deref()), (Some(TenantStatusArg::Suspended), Some("e1")));
    assert!(matches!(parse(&["tenant", "list"]).expect("list").command, Command::Tenant(TenantCommand::List { .. })));
    assert!(matches!(
        parse(&["tenant", "get", "acme"]).expect("get").command,
        Command::Tenant(TenantCommand::Get { .. })
    ));
}

#[test]
fn policy_commands_parse() {
    let cli = parse(&["policy", "put", "main", "--file", "main.rego", "--expected-version", "2"]).expect("put");
    let Command::Policy(PolicyCommand::Put { name, file, expected_version }) = cli.command else {
        panic!("wrong command")
    };
    assert_eq!((name.as_str(), file.to_str(), expected_version), ("main", Some("main.rego"), Some(2)));
    assert!(parse(&["policy", "put", "main"]).is_err(), "--file required");
    let cli = parse(&[
        "policy",
        "eval",
        "--tenant",
        "acme",
        "--engine",
        "billing",
        "--action",
        "charge",
        "--risk-band",
        "critical",
        "--data-class",
        "pii",
        "--data-class",
        "pci",
    ])
    .expect("eval");
    let Command::Policy(PolicyCommand::Eval(args)) = cli.command else { panic!("wrong command") };
    assert_eq!((args.policy.as_str(), args.risk_band.as_deref()), ("main", Some("critical")));
    assert_eq!(args.data_classes, ["pii", "pci"]);
    assert!(parse(&["policy", "eval", "--tenant", "acme", "--engine", "billing"]).is_err(), "--action required");
    let cli = parse(&["policy", "get", "main", "--version", "3"]).expect("get");
    assert!(matches!(cli.command, Command::Policy(PolicyCommand::Get { version: Some(3), .. })));
    assert!(matches!(parse(&["policy", "list"]).expect("list").command, Command::Policy(PolicyCommand::List { .. })));
    let cli = parse(&["policy", "test", "--file", "p.rego", "--cases", "cases.json"]).expect("test");
    assert!(matches!(cli.command, Command::Policy(PolicyCommand::Test { .. })));
}

#[test]
fn policy_test_with_a_malformed_cases_file_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("p.rego");
    let cases = dir.path().join("cases.json");
    std::fs::write(&policy, "package keel.policy\n").expect("write policy");
    std::fs::write(&cases, "{not json").expect("write cases");
    let (result, _, _) = run_local(&[
        "--endpoints",
        "http://127.0.0.1:1",
        "policy",
        "test",
        "--file",
        policy.to_str().expect("utf-8"),
        "--cases",
        cases.to_str().expect("utf-8"),
    ]);
    let error = result.expect_err("malformed cases");
    assert_eq!(error.exit_code(), EXIT_USAGE, "{error}");
}

fn update_args(args: &[&str]) -> UpdateTenantArgs {
    let cli = parse(&[&["tenant", "update", "acme"][..], args].concat()).expect("parses");
    let Command::Tenant(TenantCommand::Update(args)) = cli.command else { panic!("wrong command") };
    args
}

#[test]
fn tenant_update_applies_flags_to_the_current_tenant() {
    let mut tenant = pb::Tenant {
        tenant_id: "acme".into(),
        display_name: "Acme".into(),
        tier: pb::TenantTier::Basic.into(),
        home_region: "eu".into(),
        status: pb::TenantStatus::Active.into(),
        enabled_engines: vec!["echo".into(), "ocr".into()],
        ..pb::Tenant::default()
    };
    let args = update_args(&[
        "--tier",
        "standard",
        "--disable-engine",
        "echo",
        "--enable-engine",
        "pdf",
        "--enable-engine",
        "ocr",
    ]);
    apply_update(&mut tenant, &args).expect("applies");
    assert_eq!(tenant.tier, i32::from(pb::TenantTier::StandardTenant));
    assert_eq!(tenant.enabled_engines, ["ocr", "pdf"]);
    assert_eq!(tenant.display_name, "Acme", "unchanged fields stay");
    let nothing = apply_update(&mut tenant, &update_args(&[])).expect_err("nothing to update");
    assert_eq!(nothing.exit_code(), EXIT_USAGE);
    let both = apply_update(&mut tenant, &update_args(&["--enable-engine", "x", "--disable-engine", "x"]));
    assert!(matches!(both, Err(CliError::Usage { .. })));
}

/// Runs a local-only command and returns (result, stdout, stderr).
fn run_local(args: &[&str]) -> (Result<(), CliError>, String, String) {
    let cli = parse(args).expect("parses");
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let result = runtime.block_on(run(cli, &mut stdout, &mut stderr));
    (result, String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

#[test]
fn keys_generate_then_engine_sign_locally() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = dir.path().join("publisher");
    let prefix = prefix.to_str().expect("utf-8 path");
    let (result, stdout, _) = run_local(&["--output", "json", "keys", "generate", "--out", prefix]);
    result.expect("generate");
    let generated: serde_json::Value = serde_json::from_str(&stdout).expect("json output");
    let key_id = generated["key_id"].as_str().expect("key_id").to_owned();
    assert_eq!(key_id.len(), 32);

    let (again, _, _) = run_local(&["keys", "generate", "--out", prefix]);
    assert_eq!(again.expect_err("no overwrite").exit_code(), EXIT_USAGE);

    let manifest = dir.path().join("m.json");
    std::fs::write(&manifest, r#"{"name": "echo", "version": "1.0.0", "tier": "core"}"#).expect("write manifest");
    let manifest = manifest.to_str().expect("utf-8 path");
    let key = format!("{prefix}.key");
    let (result, stdout, _) = run_local(&["engine", "sign", "--manifest", manifest, "--key", &key]);
    result.expect("sign");
    let bundle = keel_client::SignedManifest::parse("stdout", stdout.as_bytes()).expect("bundle on stdout");
    let public = keel_client::PublicKey::read_file(std::path::Path::new(&format!("{prefix}.pub"))).expect("public");
    assert!(bundle.is_signed_by(&public));
    assert_eq!(bundle.signatures()[0].key_id, key_id);
}

#[test]
fn engine_publish_of_an_unsigned_manifest_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("m.json");
    std::fs::write(&manifest, r#"{"name": "echo", "version": "1.0.0", "tier": "core"}"#).expect("write manifest");
    let (result, _, _) = run_local(&["engine", "publish", manifest.to_str().expect("utf-8")]);
    let error = result.expect_err("unsigned");
    assert!(matches!(error, CliError::Usage { .. }), "{error:?}");
}

#[test]
fn a_missing_key_file_is_a_usage_error_naming_the_file() {
    let (result, _, _) = run_local(&[
        "trust",
        "add-key",
        "--public",
        "/nonexistent/p.pub",
        "--purpose",
        "api-token",
        "--signer",
        "/nonexistent/root.key",
    ]);
    let error = result.expect_err("missing file");
    assert_eq!(error.exit_code(), EXIT_USAGE);
    assert!(error.message().contains("/nonexistent/p.pub"), "{}", error.message());
}

#[test]
fn region_is_a_global_flag() {
    let cli = parse(&["--region", "eu-west", "trust", "list", "--consistency", "serializable"]).expect("before");
    assert_eq!(cli.global.region.as_deref(), Some("eu-west"));
    let cli = parse(&["engine", "list", "--region", "us-east"]).expect("after the command");
    assert_eq!(cli.global.region.as_deref(), Some("us-east"));
}

fn join_args(args: &[&str]) -> Result<JoinArgs, clap::Error> {
    let cli = parse(&[&["cluster", "join"][..], args].concat())?;
    let Command::Cluster(ClusterCommand::Join(join)) = cli.command else { panic!("wrong command") };
    Ok(join)
}

#[test]
fn cluster_join_parses_the_new_member() {
    let member = ["--node-id", "5", "--client-addr", "10.0.0.5:7400", "--peer-addr", "10.0.0.5:7401"];
    let join = join_args(&[&member[..], &["--region", "eu-west", "--zone", "b"]].concat()).expect("parses");
    assert_eq!(
        join.to_member(),
        pb::Member {
            node_id: 5,
            region: "eu-west".into(),
            zone: "b".into(),
            client_addr: "10.0.0.5:7400".into(),
            peer_addr: "10.0.0.5:7401".into(),
            is_voter: false,
        }
    );
    for missing in ["--node-id", "--client-addr", "--peer-addr", "--region", "--zone"] {
        let full = [&member[..], &["--region", "eu-west", "--zone", "b"]].concat();
        let position = full.iter().position(|arg| *arg == missing).expect("present");
        let without: Vec<&str> =
            full.iter().enumerate().filter(|(i, _)| *i != position && *i != position + 1).map(|(_, a)| *a).collect();
        assert!(join_args(&without).is_err(), "{missing} is required");
    }
    let zero = [&["--node-id", "0"][..], &member[2..], &["--region", "eu", "--zone", "b"]].concat();
    assert!(join_args(&zero).is_err(), "node id 0 is refused");
    // The preferred region (flag or KEEL_REGION) is never taken as the new
    // member's region: it must be given to `join` itself.
    let preferred_only = [&["--region", "eu", "cluster", "join"][..], &member[..], &["--zone", "b"]].concat();
    assert!(parse(&preferred_only).is_err());
}

#[test]
fn cluster_promote_and_remove_take_a_node_id() {
    let cli = parse(&["cluster", "promote", "5"]).expect("promote");
    assert!(matches!(cli.command, Command::Cluster(ClusterCommand::Promote { node_id: 5 })));
    let cli = parse(&["cluster", "remove", "3"]).expect("remove");
    assert!(matches!(cli.command, Command::Cluster(ClusterCommand::Remove { node_id: 3 })));
    assert!(parse(&["cluster", "promote"]).is_err());
    assert!(parse(&["cluster", "remove", "three"]).is_err());
    assert!(matches!(
        parse(&["cluster", "transfer-leader", "2"]).map(|cli| cli.command),
        Ok(Command::Cluster(cluster::ClusterCommand::TransferLeader { node_id: 2 }))
    ));
}

#[test]
fn certs_commands_parse_with_node_usage_by_default() {
    let cli = parse(&["certs", "issue", "--ca", "ca", "node-1", "--san", "127.0.0.1", "--san", "node-1.keel"])
        .expect("parses");
    match cli.command {
        Command::Certs(certs::CertsCommand::Issue { name, sans, usage, .. }) => {
            assert_eq!(name, "node-1");
            assert_eq!(sans, ["127.0.0.1", "node-1.keel"]);
            assert_eq!(usage, certs::UsageArg::Node);
        }
        other => panic!("parsed as {other:?}"),
    }
    assert!(parse(&["certs", "init"]).is_err(), "--dir is required");
    assert!(parse(&["certs", "issue", "--ca", "ca", "n", "--usage", "root"]).is_err());
}
