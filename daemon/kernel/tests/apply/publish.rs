//! Publishing manifests: shape, limits, signatures, action schemas and UI surfaces.

use super::*;

// ---------------------------------------------------------------- publish

#[test]
fn publish_stores_the_canonical_manifest() {
    let bytes = manifest("echo", "1.0.0");
    let Checked { state, result } = check_publish(bytes.clone(), Expect::Events(vec![published("echo", "1.0.0")]));
    let Outcome::EngineVersionPublished { version, created } = applied(result).outcome else { panic!("wrong outcome") };
    assert!(created);
    let canonical = serde_json_canonicalizer::to_vec(&manifest_value("echo", "1.0.0")).expect("canonicalises");
    assert_eq!(version.manifest, canonical);
    assert_eq!(version.manifest_sha256, hex::encode(Sha256::digest(&canonical)));
    assert_eq!((version.publish_revision, version.publish_time_ms), (3, T0_MS));
    assert_eq!(version.description, "Echoes its input.");
    assert_eq!(version.signatures, vec![sign_manifest(&bytes, PUBLISHER)]);
    assert_eq!(state.registry().get(&name("echo"), None), Some(&*version));
    assert_eq!((state.registry().engine_count(), state.registry().version_count()), (1, 1));
}

#[test]
fn publish_of_a_new_version_adds_it_beside_the_old_one() {
    let mut setup = trust_and_publisher();
    setup.push(now(publish(manifest("echo", "1.0.0"), PUBLISHER)));
    let Checked { state, .. } = check(
        &setup,
        now(publish(manifest("echo", "1.1.0-beta.1"), PUBLISHER)),
        Expect::Events(vec![published("echo", "1.1.0-beta.1")]),
    );
    assert_eq!(state.registry().version_count(), 2);
    let latest = state.registry().get(&name("echo"), None).expect("has versions");
    assert_eq!(latest.version.to_string(), "1.1.0-beta.1");
}

#[test]
fn publish_keeps_only_the_signatures_that_verified() {
    // A valid publisher signature carries the publish; the others (an unknown
    // key, a repeat, a known publisher's bad bytes, a root) must not be
    // recorded as if those keys had signed.
    let mut setup = trust_and_publisher();
    setup.push(now(add_key(publisher_spec(PUBLISHER2), &[ROOT])));
    let bytes = manifest("echo", "1.0.0");
    let valid = sign_manifest(&bytes, PUBLISHER);
    let forged = Signature { key_id: key_id(PUBLISHER2), signature: valid.signature.clone() };
    let signatures = vec![
        sign_manifest(&bytes, STRANGER),
        forged,
        valid.clone(),
        sign_manifest(&bytes, ROOT),
        valid.clone(),
        sign_manifest(&bytes, PUBLISHER2),
    ];
    let proposal = now(Command::PublishEngineVersion { manifest: bytes.clone(), signatures });
    let Checked { state, .. } = check(&setup, proposal, Expect::Events(vec![published("echo", "1.0.0")]));
    let stored = state.registry().get(&name("echo"), None).expect("published");
    assert_eq!(stored.signatures, vec![valid, sign_manifest(&bytes, PUBLISHER2)]);
}

#[test]
fn publish_before_bootstrap_is_refused() {
    check(&[], now(publish(manifest("echo", "1.0.0"), PUBLISHER)), Expect::Rejected("TRUST_NOT_BOOTSTRAPPED"));
}

#[test]
fn publish_signed_by_an_unknown_key_is_refused() {
    check(&trust_and_publisher(), now(publish(manifest("echo", "1.0.0"), STRANGER)), Expect::Rejected("KEY_UNKNOWN"));
}

#[test]
fn publish_signed_by_a_key_without_publisher_purpose_is_refused() {
    let expected = Expect::Rejected("KEY_PURPOSE_MISMATCH ENGINE_PUBLISHER");
    check(&trust_and_publisher(), now(publish(manifest("echo", "1.0.0"), ROOT)), expected);
    let mut setup = trust();
    setup.push(now(add_key(key_spec(TOKEN, &[KeyPurpose::ApiToken]), &[ROOT])));
    let expected = Expect::Rejected("KEY_PURPOSE_MISMATCH ENGINE_PUBLISHER");
    check(&setup, now(publish(manifest("echo", "1.0.0"), TOKEN)), expected);
}

#[test]
fn publish_signed_by_an_expired_publisher_is_refused() {
    let publisher = with_window(publisher_spec(PUBLISHER), 0, Some(T0_MS + 100));
    let setup = [now(bootstrap(&[ROOT])), now(add_key(publisher, &[ROOT]))];
    check(
        &setup,
        at(T0_MS + 99, publish(manifest("echo", "1.0.0"), PUBLISHER)),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
    check(&setup, at(T0_MS + 100, publish(manifest("echo", "1.0.0"), PUBLISHER)), Expect::Rejected("KEY_EXPIRED"));
}

#[test]
fn publish_signed_by_a_publisher_not_yet_valid_is_refused() {
    let publisher = with_window(publisher_spec(PUBLISHER), T0_MS + 100, None);
    let setup = [now(bootstrap(&[ROOT])), now(add_key(publisher, &[ROOT]))];
    check(&setup, at(T0_MS + 99, publish(manifest("echo", "1.0.0"), PUBLISHER)), Expect::Rejected("KEY_NOT_YET_VALID"));
    check(
        &setup,
        at(T0_MS + 100, publish(manifest("echo", "1.0.0"), PUBLISHER)),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
}

#[test]
fn publish_of_other_bytes_than_were_signed_is_refused() {
    let signatures = vec![sign_manifest(&manifest("echo", "1.0.0"), PUBLISHER)];
    let tampered = manifest_with("description", json!("Echoes its input, and exfiltrates it."));
    let proposal = now(Command::PublishEngineVersion { manifest: tampered, signatures });
    check(&trust_and_publisher(), proposal, Expect::Rejected("SIGNATURE_INVALID"));
}

#[test]
fn publish_without_signatures_is_refused() {
    let proposal = now(Command::PublishEngineVersion { manifest: manifest("echo", "1.0.0"), signatures: vec![] });
    check(&trust_and_publisher(), proposal, Expect::Rejected("FIELD_REQUIRED signatures"));
}

#[test]
fn publish_of_the_identical_manifest_again_is_idempotent() {
    let mut setup = trust_and_publisher();
    setup.push(now(publish(manifest("echo", "1.0.0"), PUBLISHER)));
    let Checked { result, .. } =
        check(&setup, at(T0_MS + 5, publish(manifest("echo", "1.0.0"), PUBLISHER)), Expect::NoChange);
    let Outcome::EngineVersionPublished { version, created } = applied(result).outcome else { panic!("wrong outcome") };
    assert!(!created);
    assert_eq!((version.publish_revision, version.publish_time_ms), (3, T0_MS), "the original record");
}

#[test]
fn publish_of_the_same_canonical_json_formatted_differently_is_idempotent() {
    let mut setup = trust_and_publisher();
    setup.push(now(publish(manifest("echo", "1.0.0"), PUBLISHER)));
    // Keys in another order, pretty-printed, with an escaped character: same RFC 8785 form.
    let reordered = br#"{
        "capabilities": ["net.none"],
        "data_classes": ["public"],
        "actions": [{"output_schema": true, "input_schema": {"type": "object"},
                     "description": "Returns the input.", "name": "echo"}],
        "dependencies": [ ],
        "description": "Echoes its input\u002e",
        "tier": "standard",
        "version": "1.0.0",
        "name": "echo"
    }"#
    .to_vec();
    assert_ne!(reordered, manifest("echo", "1.0.0"));
    check(&setup, now(publish(reordered, PUBLISHER)), Expect::NoChange);
}

#[test]
fn publish_of_different_content_under_a_published_version_is_refused() {
    let mut setup = trust_and_publisher();
    setup.push(now(publish(manifest("echo", "1.0.0"), PUBLISHER)));
    let other = manifest_with("description", json!("A different build."));
    check(&setup, now(publish(other, PUBLISHER)), Expect::Rejected("VERSION_ALREADY_PUBLISHED"));
}

#[test]
fn publish_checks_the_signature_before_idempotency() {
    // A replay must still be signed by a currently valid publisher.
    let mut setup = trust_and_publisher();
    setup.push(now(publish(manifest("echo", "1.0.0"), PUBLISHER)));
    check(&setup, now(publish(manifest("echo", "1.0.0"), STRANGER)), Expect::Rejected("KEY_UNKNOWN"));
}

#[test]
fn publish_with_an_invalid_version_is_refused() {
    for version in ["1.0", "v1.0.0", "1.0.0.0", "01.0.0", " 1.0.0", "latest"] {
        check_publish(manifest("echo", version), Expect::Rejected("VERSION_INVALID manifest.version"));
    }
    check_publish(manifest("echo", ""), Expect::Rejected("FIELD_REQUIRED manifest.version"));
    check_publish(manifest_with("version", json!(1)), Expect::Rejected("MANIFEST_MALFORMED"));
}

#[test]
fn publish_with_build_metadata_is_refused() {
    check_publish(manifest("echo", "1.0.0+build.7"), Expect::Rejected("VERSION_INVALID manifest.version"));
    check_publish(manifest("echo", "1.0.0-rc.1+sha.abc"), Expect::Rejected("VERSION_INVALID manifest.version"));
}

#[test]
fn publish_of_an_oversized_manifest_is_refused() {
    // Valid JSON padded with whitespace: the limit applies to the bytes as sent.
    let mut bytes = manifest("echo", "1.0.0");
    let padding = MANIFEST_BYTES_MAX - bytes.len();
    bytes.splice(1..1, std::iter::repeat_n(b' ', padding));
    assert_eq!(bytes.len(), MANIFEST_BYTES_MAX);
    check_publish(bytes.clone(), Expect::Events(vec![published("echo", "1.0.0")]));
    bytes.insert(1, b' ');
    check_publish(bytes, Expect::Rejected("LIMIT_EXCEEDED MANIFEST_BYTES_MAX"));
}

#[test]
fn publish_with_a_name_over_the_limit_is_refused() {
    let at_limit = "e".repeat(NAME_BYTES_MAX);
    check_publish(manifest(&at_limit, "1.0.0"), Expect::Events(vec![published(&at_limit, "1.0.0")]));
    check_publish(
        manifest(&"e".repeat(NAME_BYTES_MAX + 1), "1.0.0"),
        Expect::Rejected("LIMIT_EXCEEDED NAME_BYTES_MAX"),
    );
}

#[test]
fn publish_with_an_invalid_name_is_refused() {
    check_publish(manifest("Echo", "1.0.0"), Expect::Rejected("FIELD_INVALID manifest.name"));
    check_publish(manifest("", "1.0.0"), Expect::Rejected("FIELD_REQUIRED manifest.name"));
    check_publish(manifest_with("name", json!(7)), Expect::Rejected("MANIFEST_MALFORMED"));
}

#[test]
fn publish_with_invalid_names_inside_is_refused() {
    let long = "a".repeat(NAME_BYTES_MAX + 1);
    let cases = [
        ("dependencies", json!([{"name": "Base", "requirement": "^1"}]), "FIELD_INVALID manifest.dependencies.name"),
        ("dependencies", json!([{"name": long, "requirement": "^1"}]), "LIMIT_EXCEEDED NAME_BYTES_MAX"),
        ("actions", json!([{"name": "has space"}]), "FIELD_INVALID manifest.actions.name"),
        ("actions", json!([{"name": ""}]), "FIELD_REQUIRED manifest.actions.name"),
        ("capabilities", json!(["net/raw"]), "FIELD_INVALID manifest.capabilities"),
        ("capabilities", json!([long]), "LIMIT_EXCEEDED NAME_BYTES_MAX"),
    ];
    for (field, value, expected) in cases {
        check_publish(manifest_with(field, value), Expect::Rejected(expected));
    }
}

#[test]
fn publish_with_a_description_over_the_limit_is_refused() {
    let at_limit = "d".repeat(DESCRIPTION_BYTES_MAX);
    check_publish(manifest_with("description", json!(at_limit)), Expect::Events(vec![published("echo", "1.0.0")]));
    let over = "d".repeat(DESCRIPTION_BYTES_MAX + 1);
    check_publish(manifest_with("description", json!(over)), Expect::Rejected("LIMIT_EXCEEDED DESCRIPTION_BYTES_MAX"));
    let action = json!([{"name": "echo", "description": over}]);
    check_publish(manifest_with("actions", action), Expect::Rejected("LIMIT_EXCEEDED DESCRIPTION_BYTES_MAX"));
}

#[test]
fn publish_of_malformed_json_is_refused() {
    let cases: [&[u8]; 6] = [b"{", b"not json", b"[]", b"null", b"{\"name\": \"echo\",}", b"\xff\xfe"];
    for bytes in cases {
        check_publish(bytes.to_vec(), Expect::Rejected("MANIFEST_MALFORMED"));
    }
    let mut trailing = manifest("echo", "1.0.0");
    trailing.extend_from_slice(b" {}");
    check_publish(trailing, Expect::Rejected("MANIFEST_MALFORMED"));
    check_publish(b"{\"s\": \"\\ud800\"}".to_vec(), Expect::Rejected("MANIFEST_MALFORMED"));
}

#[test]
fn publish_with_a_repeated_key_is_refused() {
    // Parsers disagree on which repeated value wins; the canonical form must not depend on it.
    let top_level = br#"{"name":"echo","version":"1.0.0","tier":"core","description":"a","description":"b"}"#;
    check_publish(top_level.to_vec(), Expect::Rejected("MANIFEST_MALFORMED"));
    let nested = br#"{"name":"echo","version":"1.0.0","tier":"core",
        "actions":[{"name":"run","input_schema":{"type":"object","type":"string"}}]}"#;
    check_publish(nested.to_vec(), Expect::Rejected("MANIFEST_MALFORMED"));
    let escaped = br#"{"name":"echo","version":"1.0.0","tier":"core","name":"echo"}"#;
    check_publish(escaped.to_vec(), Expect::Rejected("MANIFEST_MALFORMED"));
    // The same key in different objects is fine.
    let distinct = br#"{"name":"echo","version":"1.0.0","tier":"core",
        "actions":[{"name":"run","input_schema":{"name":{"name":"x"}}}]}"#;
    check_publish(distinct.to_vec(), Expect::Events(vec![published("echo", "1.0.0")]));
}

#[test]
fn publish_of_deeply_nested_json_is_refused_without_overflowing_the_stack() {
    let depth = 100_000;
    let schema = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let bytes = format!(
        r#"{{"name":"echo","version":"1.0.0","tier":"core","actions":[{{"name":"a","input_schema":{{"x":{schema}}}}}]}}"#
    );
    check_publish(bytes.into_bytes(), Expect::Rejected("MANIFEST_MALFORMED"));
}

#[test]
fn publish_of_a_manifest_whose_canonical_form_is_over_the_limit_is_refused() {
    // `1e20` is 4 bytes as sent and 21 canonical bytes (`100000000000000000000`).
    let numbers = vec![json!(1e20); MANIFEST_BYTES_MAX / 21 + 1];
    let bytes = manifest_with("actions", json!([{"name": "a", "input_schema": {"enum": numbers}}]));
    assert!(bytes.len() < MANIFEST_BYTES_MAX, "{} bytes as sent", bytes.len());
    check_publish(bytes, Expect::Rejected("LIMIT_EXCEEDED MANIFEST_BYTES_MAX"));
}

#[test]
fn publish_of_an_empty_manifest_is_refused() {
    check_publish(Vec::new(), Expect::Rejected("FIELD_REQUIRED manifest"));
}

#[test]
fn publish_without_required_fields_is_refused() {
    for field in ["name", "version", "tier"] {
        check_publish(manifest_without(field), Expect::Rejected("MANIFEST_MALFORMED"));
    }
}

#[test]
fn publish_without_optional_fields_is_accepted() {
    let minimal = json_bytes(&json!({"name": "echo", "version": "1.0.0", "tier": "core"}));
    check_publish(minimal, Expect::Events(vec![published("echo", "1.0.0")]));
}

#[test]
fn publish_with_unknown_fields_is_refused() {
    check_publish(manifest_with("homepage", json!("https://example.com")), Expect::Rejected("MANIFEST_MALFORMED"));
    let action = json!([{"name": "echo", "timeout_ms": 5}]);
    check_publish(manifest_with("actions", action), Expect::Rejected("MANIFEST_MALFORMED"));
    let dependency = json!([{"name": "base", "requirement": "^1", "optional": true}]);
    check_publish(manifest_with("dependencies", dependency), Expect::Rejected("MANIFEST_MALFORMED"));
}

#[test]
fn publish_with_unknown_enum_values_is_refused() {
    check_publish(manifest_with("tier", json!("platinum")), Expect::Rejected("MANIFEST_MALFORMED"));
    check_publish(manifest_with("data_classes", json!(["secret"])), Expect::Rejected("MANIFEST_MALFORMED"));
}

#[test]
fn publish_with_duplicate_actions_is_refused() {
    let actions = json!([{"name": "echo"}, {"name": "other"}, {"name": "echo"}]);
    check_publish(manifest_with("actions", actions), Expect::Rejected("FIELD_INVALID manifest.actions"));
}

#[test]
fn publish_with_a_schema_that_is_not_an_object_is_refused() {
    let actions = json!([{"name": "echo", "input_schema": "object"}]);
    check_publish(manifest_with("actions", actions), Expect::Rejected("ACTION_SCHEMA_INVALID input_schema"));
}

// ---------------------------------------------------------------- action schemas

/// A manifest whose only action carries these schemas.
fn manifest_with_schemas(input: serde_json::Value, output: serde_json::Value) -> Vec<u8> {
    manifest_with("actions", json!([{"name": "echo", "input_schema": input, "output_schema": output}]))
}

#[test]
fn publish_with_schemas_of_every_supported_draft_is_accepted() {
    for (uri, _) in keel_kernel::action_schema::SUPPORTED_DRAFTS {
        let input =
            json!({"$schema": uri, "type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}});
        check_publish(manifest_with_schemas(input, json!(true)), Expect::Events(vec![published("echo", "1.0.0")]));
    }
    let local_ref = json!({"$defs": {"n": {"type": "integer"}}, "properties": {"n": {"$ref": "#/$defs/n"}}});
    check_publish(manifest_with_schemas(json!(false), local_ref), Expect::Events(vec![published("echo", "1.0.0")]));
}

#[test]
fn publish_with_a_schema_that_breaks_its_meta_schema_is_refused() {
    let cases = [
        (json!({"type": "no-such-type"}), json!(true), "ACTION_SCHEMA_INVALID input_schema"),
        (json!(true), json!({"properties": {"n": {"minimum": "zero"}}}), "ACTION_SCHEMA_INVALID output_schema"),
        (json!({"required": "n"}), json!(true), "ACTION_SCHEMA_INVALID input_schema"),
        (json!(true), json!(17), "ACTION_SCHEMA_INVALID output_schema"),
    ];
    for (input, output, expected) in cases {
        check_publish(manifest_with_schemas(input, output), Expect::Rejected(expected));
    }
}

#[test]
fn publish_with_a_schema_that_does_not_compile_is_refused() {
    let bad_pattern = json!({"type": "string", "pattern": "(unclosed"});
    check_publish(
        manifest_with_schemas(bad_pattern, json!(true)),
        Expect::Rejected("ACTION_SCHEMA_INVALID input_schema"),
    );
}

#[test]
fn publish_with_a_schema_needing_io_is_refused() {
    for input in [
        json!({"$ref": "https://example.com/schemas/order.json"}),
        json!({"$ref": "file:///etc/passwd"}),
        json!({"$id": "https://example.com/a.json", "properties": {"x": {"$ref": "b.json"}}}),
        json!({"$schema": "https://example.com/custom-meta"}),
        json!({"$schema": "http://json-schema.org/draft-03/schema#"}),
    ] {
        check_publish(
            manifest_with_schemas(input, json!(true)),
            Expect::Rejected("ACTION_SCHEMA_INVALID input_schema"),
        );
    }
}

#[test]
fn a_schema_rejection_names_the_action_and_the_schema() {
    let checked = check_publish(
        manifest_with("actions", json!([{"name": "ok"}, {"name": "bad", "output_schema": {"type": 5}}])),
        Expect::Rejected("ACTION_SCHEMA_INVALID output_schema"),
    );
    let Err(Rejection::ActionSchemaInvalid { action, problem, .. }) = checked.result else { unreachable!() };
    assert_eq!(action, "bad");
    assert!(!problem.is_empty());
}

// ---------------------------------------------------------------- UI surfaces

fn ui_surface(name: &str, kind: &str, entry: &str) -> serde_json::Value {
    json!({"name": name, "kind": kind, "entry": entry, "description": format!("{name} {kind}")})
}

#[test]
fn publish_with_ui_surfaces_keeps_them_readable() {
    let ui = json!([
        ui_surface("invoices", "panel", "ui/invoices.html"),
        ui_surface("refund", "form", "https://console.example.com/refund"),
        {"name": "total", "kind": "widget", "entry": "widgets/total.js"},
    ]);
    let checked = check_publish(manifest_with("ui", ui), Expect::Events(vec![published("echo", "1.0.0")]));
    let stored = checked.state.registry().get(&name("echo"), None).expect("published");
    let surfaces = keel_kernel::manifest::ui_surfaces_of(&stored.manifest);
    let summary: Vec<(String, &str, String)> =
        surfaces.iter().map(|s| (s.name.to_string(), s.kind.as_str(), s.entry.clone())).collect();
    assert_eq!(
        summary,
        [
            ("invoices".to_owned(), "panel", "ui/invoices.html".to_owned()),
            ("refund".to_owned(), "form", "https://console.example.com/refund".to_owned()),
            ("total".to_owned(), "widget", "widgets/total.js".to_owned()),
        ]
    );
    assert_eq!(surfaces[2].description, "");
}

#[test]
fn publish_with_bad_ui_surfaces_is_refused() {
    let cases = [
        (json!([ui_surface("a", "panel", "../outside.html")]), "FIELD_INVALID manifest.ui.entry"),
        (json!([ui_surface("a", "panel", "javascript:alert(1)")]), "FIELD_INVALID manifest.ui.entry"),
        (json!([ui_surface("a", "panel", "http://example.com/a")]), "FIELD_INVALID manifest.ui.entry"),
        (json!([ui_surface("a", "panel", "")]), "FIELD_REQUIRED manifest.ui.entry"),
        (json!([ui_surface("a", "panel", &"x".repeat(UI_ENTRY_BYTES_MAX + 1))]), "LIMIT_EXCEEDED UI_ENTRY_BYTES_MAX"),
        (json!([ui_surface("a", "popup", "a.html")]), "MANIFEST_MALFORMED"),
        (json!([ui_surface("Has Space", "panel", "a.html")]), "FIELD_INVALID manifest.ui.name"),
        (json!([ui_surface("a", "panel", "a.html"), ui_surface("a", "form", "b.html")]), "FIELD_INVALID manifest.ui"),
        (json!([{"name": "a", "kind": "panel", "entry": "a.html", "icon": "x.png"}]), "MANIFEST_MALFORMED"),
        (
            json!([{"name": "a", "kind": "panel", "entry": "a.html", "description": "d".repeat(DESCRIPTION_BYTES_MAX + 1)}]),
            "LIMIT_EXCEEDED DESCRIPTION_BYTES_MAX",
        ),
        (json!({"name": "a"}), "MANIFEST_MALFORMED"),
    ];
    for (ui, expected) in cases {
        check_publish(manifest_with("ui", ui), Expect::Rejected(expected));
    }
}

#[test]
fn publish_with_too_many_ui_surfaces_is_refused() {
    let surfaces = |count: usize| {
        json!((0..count).map(|i| ui_surface(&format!("s{i}"), "widget", &format!("w/{i}.js"))).collect::<Vec<_>>())
    };
    check_publish(
        manifest_with("ui", surfaces(UI_SURFACES_PER_ENGINE_MAX)),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
    check_publish(
        manifest_with("ui", surfaces(UI_SURFACES_PER_ENGINE_MAX + 1)),
        Expect::Rejected("LIMIT_EXCEEDED UI_SURFACES_PER_ENGINE_MAX"),
    );
}

#[test]
fn publish_with_too_many_actions_is_refused() {
    let actions = |count: usize| json!((0..count).map(|i| json!({"name": format!("a{i}")})).collect::<Vec<_>>());
    check_publish(
        manifest_with("actions", actions(ACTIONS_PER_ENGINE_MAX)),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
    check_publish(
        manifest_with("actions", actions(ACTIONS_PER_ENGINE_MAX + 1)),
        Expect::Rejected("LIMIT_EXCEEDED ACTIONS_PER_ENGINE_MAX"),
    );
}

#[test]
fn publish_with_too_many_dependencies_is_refused() {
    let dependencies = |count: usize| {
        json!((0..count).map(|i| json!({"name": format!("d{i}"), "requirement": "^1"})).collect::<Vec<_>>())
    };
    check_publish(
        // Within the limit the manifest parses; then its dependencies are not published.
        manifest_with("dependencies", dependencies(DEPENDENCIES_PER_ENGINE_MAX)),
        Expect::Rejected("DEPENDENCY_UNRESOLVABLE"),
    );
    check_publish(
        manifest_with("dependencies", dependencies(DEPENDENCIES_PER_ENGINE_MAX + 1)),
        Expect::Rejected("LIMIT_EXCEEDED DEPENDENCIES_PER_ENGINE_MAX"),
    );
}

#[test]
fn publish_with_too_many_capabilities_is_refused() {
    let capabilities = |count: usize| json!((0..count).map(|i| format!("c{i}")).collect::<Vec<_>>());
    check_publish(
        manifest_with("capabilities", capabilities(CAPABILITIES_PER_ENGINE_MAX)),
        Expect::Events(vec![published("echo", "1.0.0")]),
    );
    check_publish(
        manifest_with("capabilities", capabilities(CAPABILITIES_PER_ENGINE_MAX + 1)),
        Expect::Rejected("LIMIT_EXCEEDED CAPABILITIES_PER_ENGINE_MAX"),
    );
}

#[test]
fn publish_with_a_bad_dependency_requirement_is_refused() {
    for requirement in ["", "not a range", "^1.x.y", ">>1"] {
        let dependencies = json!([{"name": "base", "requirement": requirement}]);
        check_publish(
            manifest_with("dependencies", dependencies),
            Expect::Rejected("VERSION_INVALID manifest.dependencies.requirement"),
        );
    }
}

#[test]
fn publish_with_a_self_or_repeated_dependency_is_refused() {
    let own = json!([{"name": "echo", "requirement": "^1"}]);
    check_publish(manifest_with("dependencies", own), Expect::Rejected("FIELD_INVALID manifest.dependencies"));
    let twice = json!([{"name": "base", "requirement": "^1"}, {"name": "base", "requirement": "^2"}]);
    check_publish(manifest_with("dependencies", twice), Expect::Rejected("FIELD_INVALID manifest.dependencies"));
}

#[test]
fn publish_with_too_many_signatures_is_refused() {
    let bytes = manifest("echo", "1.0.0");
    let signatures = vec![sign_manifest(&bytes, PUBLISHER); SIGNATURES_PER_REQUEST_MAX + 1];
    let proposal = now(Command::PublishEngineVersion { manifest: bytes, signatures });
    check(&trust_and_publisher(), proposal, Expect::Rejected("LIMIT_EXCEEDED SIGNATURES_PER_REQUEST_MAX"));
}
