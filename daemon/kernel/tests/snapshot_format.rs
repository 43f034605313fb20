//! Golden bytes of the kernel's formats: the snapshot (and how decoding it
//! fails), and the signing payloads clients must rebuild byte for byte.
//!
//! Snapshots are persisted and sent between nodes, so their bytes are a
//! contract: a node must read what an older build of the same format version
//! wrote, and a state must encode to the same bytes on every node (the digest
//! is their hash). The fixed state below uses fixed keys and times, so its
//! encoding never changes unless the format does. Signing payloads are a
//! contract with every client in every language (`proto/keel/v1/*.proto`).

mod fixture;

use fixture::*;
use keel_kernel::command::{Command, Proposal};
use keel_kernel::state::{SNAPSHOT_FORMAT_VERSION, SNAPSHOT_MAGIC};
use keel_kernel::trust_store::KeyPurpose;
use keel_kernel::{KernelState, SnapshotError};

/// The fixed state's snapshot, as written by format version 5.
const GOLDEN_SNAPSHOT_HEX: &str = concat!(
    "4b45454c534e41500500e096e5cf8b0100000300000000000000200000000000000033343735306639386264353966636663",
    "3934366461343561616162653933336220000000000000003334373530663938626435396663666339343664613435616161",
    "6265393333628a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c010000000000000000000000",
    "0000000000000000000100000000000000000000000000000001090000000000000020000000000000003530366566313837",
    "3964373438636530373133623064643031646133326164322000000000000000353036656631383739643734386365303731",
    "336230646430316461333261643243a72e714401762df66b68c26dfbdf2682aaec9f2474eca4613e424a0fbafd3c02000000",
    "0000000001000000020000000068e5cf8b010000010094962793010000020000000000000001000000000000002000000000",
    "0000003661333830336435663035393930326131633664616662633962613437323932002000000000000000366133383033",
    "6435663035393930326131633664616662633962613437323932200000000000000036613338303364356630353939303261",
    "316336646166626339626134373239328139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b3940100",
    "0000000000000000000000000000000000000001000000000000000000000000000000000102000000000000000300000000",
    "0000000000000001000000000000002000000000000000366133383033643566303539393032613163366461666263396261",
    "3437323932010000000100000001000000000000002000000000000000353036656631383739643734386365303731336230",
    "6464303164613332616432010000000200000001000000000000002000000000000000353036656631383739643734386365",
    "3037313362306464303164613332616432010000000100000000000000080000000000000073746f6c656e2d3178811cd08b",
    "010000010000000000000078811cd08b010000080000000000000073746f6c656e2d31020000000000000004000000000000",
    "006563686f01000000000000000a00000000000000312e302e302d72632e3104000000000000006563686f0a000000000000",
    "00312e302e302d72632e310000000001000000000000006562000000000000007b226361706162696c6974696573223a5b22",
    "6e65742e6e6f6e65225d2c226465736372697074696f6e223a2265222c226e616d65223a226563686f222c2274696572223a",
    "22636f7265222c2276657273696f6e223a22312e302e302d72632e31227d4000000000000000323663626163663933346165",
    "3036313337326562343433363633626263383931323438323363396161363534346262666134366637396666366437633136",
    "3635010000000000000020000000000000003530366566313837396437343863653037313362306464303164613332616432",
    "40000000000000005f95cc7b699cecc399573478348813808f6b01303da6b69aafcbe450335e5f87afa0a3f77c10d8a67bff",
    "ccfd8cc95d8240ef87557a573da34cd144e98c315c0b0300000000000000d06fe5cf8b010000000000000000000001050000",
    "000000000072656c617901000000000000000500000000000000312e302e30050000000000000072656c6179050000000000",
    "0000312e302e300000000000000000000000006d000000000000007b22646570656e64656e63696573223a5b7b226e616d65",
    "223a226563686f222c22726571756972656d656e74223a223d312e302e302d72632e31227d5d2c226e616d65223a2272656c",
    "6179222c2274696572223a22636f7265222c2276657273696f6e223a22312e302e30227d4000000000000000316165633738",
    "3930626532666230356336323564393239613836393033353162393331653838616636306436666466373866636363316134",
    "6265333961323830010000000000000020000000000000003530366566313837396437343863653037313362306464303164",
    "61333261643240000000000000005ce0a3ea39cf8eb3562626dea424b173b48b28e6a6472dcffc26a10961fe53d7ad67d654",
    "abe4201ad7a4afb173942dca9512a76d773848f52fda4e90b2b28e060600000000000000887be5cf8b010000010000000000",
    "000004000000000000006563686f0a00000000000000312e302e302d72632e31000100000000000000040000000000000061",
    "636d65040000000000000061636d65080000000000000041636d6520496e6301000000070000000000000065752d77657374",
    "00000000010000000000000004000000000000006563686f04000000000000000500000000000000b873e5cf8b010000a077",
    "e5cf8b0100000d0000000000000001000000000000000068e5cf8b0100000000000002000000000000002000000000000000",
    "3334373530663938626435396663666339343664613435616161626539333362200000000000000036613338303364356630",
    "35393930326131633664616662633962613437323932000200000000000000e86be5cf8b0100000100000020000000000000",
    "003530366566313837396437343863653037313362306464303164613332616432000300000000000000d06fe5cf8b010000",
    "0200000004000000000000006563686f0a00000000000000312e302e302d72632e31000400000000000000b873e5cf8b0100",
    "0003000000040000000000000061636d65000500000000000000a077e5cf8b01000004000000040000000000000061636d65",
    "000600000000000000887be5cf8b01000002000000050000000000000072656c61790500000000000000312e302e30000700",
    "000000000000707fe5cf8b0100000500000004000000000000006563686f0a00000000000000312e302e302d72632e310008",
    "000000000000005883e5cf8b0100000600000002000000000000000009000000000000004087e5cf8b010000070000002000",
    "0000000000003334373530663938626435396663666339343664613435616161626539333362000a00000000000000288be5",
    "cf8b0100000900000007000000000000006465706c6f797301040000000000000061636d6501050000000000000072656c61",
    "790b000000000000007b226f6b223a747275657d000b00000000000000108fe5cf8b0100000800000004000000000000006d",
    "61696e0100000000000000000c00000000000000f892e5cf8b0100000a000000080000000000000073746f6c656e2d31000d",
    "00000000000000e096e5cf8b0100000900000007000000000000006465706c6f797301040000000000000061636d65000000",
    "000000000000010500000000000000616c6963650b0d00000000000000000000000000000100000000000000070000000000",
    "000072657472792d31d3dd3a22fd87dceafb5ac0282346405ebc47d308ab061f2e3b2f5584028694150a0000000000000028",
    "8be5cf8b010000070000000a00000000000000930000000000000001000000000000000a0000000000000007000000000000",
    "0072657472792d319300000000000000010000000000000004000000000000006d61696e0100000000000000010000000000",
    "000004000000000000006d61696e010000000000000041000000000000007061636b616765206b65656c2e706f6c6963790a",
    "0a6465636973696f6e203a3d207b22616c6c6f77223a20747275652c2022726561736f6e223a20226f6b227d0a4000000000",
    "0000006335363266393931346664373964363462306262633538356434656237636665386635386332613938313765653333",
    "37393566353464366239663033316438340b00000000000000108fe5cf8b010000",
);

/// SHA-256 of [`GOLDEN_SNAPSHOT_HEX`]'s bytes: the fixed state's digest.
const GOLDEN_DIGEST_HEX: &str = "15bb0df71f608f7fb44a8d980220b2e9caef1922ae1b35c73366f4c770e6624c";

/// A small state touching every part of the kernel: roots, an added key with
/// a validity window, a published manifest, a tenant created then updated, a
/// second manifest depending on the first, then the first yanked; a root
/// rotation, a revocation, a user event under an idempotency key, a
/// policy put, a revoked token, and an event caused by a tenant's token.
fn fixed_log() -> Vec<Proposal> {
    let publisher = with_window(
        key_spec(PUBLISHER, &[KeyPurpose::EnginePublisher, KeyPurpose::ApiToken]),
        T0_MS,
        Some(T0_MS + 365 * 24 * 60 * 60 * 1000),
    );
    let manifest =
        br#"{"name":"echo","version":"1.0.0-rc.1","tier":"core","description":"e","capabilities":["net.none"]}"#;
    let dependant = br#"{"name":"relay","version":"1.0.0","tier":"core","dependencies":[{"name":"echo","requirement":"=1.0.0-rc.1"}]}"#;
    vec![
        at(T0_MS, bootstrap(&[ROOT, ROOT2])),
        at(T0_MS + 1_000, add_key(publisher, &[ROOT2])),
        at(T0_MS + 2_000, publish(manifest.to_vec(), PUBLISHER)),
        at(T0_MS + 3_000, create_tenant("acme", "Acme Corp")),
        at(T0_MS + 4_000, update_tenant("acme", "Acme Inc", Some("r4"))),
        at(T0_MS + 5_000, publish(dependant.to_vec(), PUBLISHER)),
        at(
            T0_MS + 6_000,
            Command::YankEngineVersion { engine: name("echo"), version: "1.0.0-rc.1".parse().expect("semver") },
        ),
        at(T0_MS + 7_000, rotate_root(&rotated_root(), &[ROOT, ROOT2])),
        at(T0_MS + 8_000, revoke(ROOT, &[ROOT2])),
        Proposal {
            leader_time_ms: T0_MS + 9_000,
            semantics_version: keel_kernel::judge::SEMANTICS_VERSION,
            command: Command::PublishEvent {
                topic: name("deploys"),
                tenant: Some(name("acme")),
                engine: Some(name("relay")),
                payload: b"{\"ok\":true}".to_vec(),
            },
            idempotency_key: Some("retry-1".to_owned()),
            actor: None,
        },
        at(
            T0_MS + 10_000,
            Command::PutPolicy {
                name: name("main"),
                source: "package keel.policy\n\ndecision := {\"allow\": true, \"reason\": \"ok\"}\n".to_owned(),
                expected_version: Some(0),
            },
        ),
        at(T0_MS + 11_000, Command::RevokeToken { jti: "stolen-1".to_owned(), exp_ms: T0_MS + 3_611_000 }),
        Proposal {
            actor: Some(keel_kernel::token::Actor {
                sub: "alice".to_owned(),
                tenant: Some(name("acme")),
                jti: "t-1".to_owned(),
                exp_ms: T0_MS + 86_400_000,
                key_id: key_id(PUBLISHER),
            }),
            ..at(
                T0_MS + 12_000,
                Command::PublishEvent {
                    topic: name("deploys"),
                    tenant: Some(name("acme")),
                    engine: None,
                    payload: vec![],
                },
            )
        },
    ]
}

/// Version 2 of the root metadata: ROOT2 alone, PUBLISHER publishing and
/// signing tokens.
fn rotated_root() -> serde_json::Value {
    let mut document = root_document(2, &[ROOT2], 1, &[PUBLISHER]);
    document["roles"]["api-token"] = serde_json::json!({"key_ids": [key_id(PUBLISHER)], "threshold": 1});
    document
}

fn fixed_state() -> KernelState {
    let mut state = KernelState::default();
    for (index, entry) in fixed_log().iter().enumerate() {
        state.apply(index as u64 + 1, entry).unwrap_or_else(|rejection| panic!("{entry} rejected: {rejection}"));
    }
    state
}

fn golden_bytes() -> Vec<u8> {
    hex::decode(GOLDEN_SNAPSHOT_HEX).expect("the golden snapshot is hex")
}

/// The hex as Rust source, for pasting into [`GOLDEN_SNAPSHOT_HEX`].
fn as_source(bytes: &[u8]) -> String {
    let hex = hex::encode(bytes);
    let lines: Vec<String> =
        hex.as_bytes().chunks(100).map(|line| format!("    \"{}\",", String::from_utf8_lossy(line))).collect();
    format!("concat!(\n{}\n)", lines.join("\n"))
}

#[test]
fn the_encoding_of_a_fixed_state_has_not_changed() {
    let bytes = fixed_state().encode_snapshot();
    assert!(
        hex::encode(&bytes) == GOLDEN_SNAPSHOT_HEX,
        "The snapshot encoding changed. Snapshots are persisted and exchanged between nodes, so if this is on \
         purpose: bump SNAPSHOT_FORMAT_VERSION (now {SNAPSHOT_FORMAT_VERSION}), decide what decode_snapshot does \
         with the old version, and paste the new bytes here:\n{}",
        as_source(&bytes),
    );
}

#[test]
fn the_digest_of_a_fixed_state_has_not_changed() {
    assert_eq!(fixed_state().digest().to_string(), GOLDEN_DIGEST_HEX);
}

#[test]
fn the_golden_snapshot_decodes_to_the_fixed_state() {
    let decoded = KernelState::decode_snapshot(&golden_bytes()).expect("the golden snapshot decodes");
    assert_eq!(decoded, fixed_state());
    assert_eq!(decoded.digest().to_string(), GOLDEN_DIGEST_HEX);
}

#[test]
fn a_snapshot_starts_with_the_magic_and_the_format_version() {
    let bytes = KernelState::default().encode_snapshot();
    assert_eq!(&bytes[..8], SNAPSHOT_MAGIC);
    assert_eq!(&bytes[8..10], &SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    assert_eq!(KernelState::decode_snapshot(&bytes).expect("decodes"), KernelState::default());
}

#[test]
fn bytes_without_the_magic_are_refused() {
    let mut wrong_magic = golden_bytes();
    wrong_magic[0] ^= 0x20;
    let cases: [&[u8]; 5] =
        [b"", b"KEEL", b"garbage that is long enough to hold a header", b"keelsnap\x01\x00", &wrong_magic];
    for bytes in cases {
        let error = KernelState::decode_snapshot(bytes).expect_err("no magic");
        assert!(matches!(error, SnapshotError::BadMagic), "{bytes:?}: {error}");
    }
}

#[test]
fn a_header_cut_short_is_refused() {
    for bytes in [&SNAPSHOT_MAGIC[..], &[&SNAPSHOT_MAGIC[..], &[1]].concat()] {
        let error = KernelState::decode_snapshot(bytes).expect_err("no version");
        assert!(matches!(error, SnapshotError::BadMagic), "{bytes:?}: {error}");
    }
}

#[test]
fn other_format_versions_are_refused() {
    for found in [0, SNAPSHOT_FORMAT_VERSION + 1, u16::MAX] {
        let mut bytes = golden_bytes();
        bytes[8..10].copy_from_slice(&found.to_le_bytes());
        let error = KernelState::decode_snapshot(&bytes).expect_err("other version");
        assert!(
            matches!(error, SnapshotError::UnsupportedVersion { found: f, supported } if f == found && supported == SNAPSHOT_FORMAT_VERSION),
            "{found}: {error}"
        );
    }
}

#[test]
fn a_truncated_body_is_refused() {
    let bytes = golden_bytes();
    for length in 10..bytes.len() {
        let error = KernelState::decode_snapshot(&bytes[..length]).expect_err("truncated");
        assert!(matches!(error, SnapshotError::Corrupt(_)), "length {length}: {error}");
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = golden_bytes();
    bytes.push(0);
    let error = KernelState::decode_snapshot(&bytes).expect_err("trailing byte");
    assert!(matches!(error, SnapshotError::Corrupt(_)), "{error}");
}

#[test]
fn corrupted_bytes_never_panic() {
    // Every single-byte change either decodes to some state, which then
    // re-encodes deterministically, or is refused; none panics or allocates
    // without bound (lengths are checked against the input).
    let golden = golden_bytes();
    for index in 10..golden.len() {
        for replacement in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut bytes = golden.clone();
            bytes[index] = replacement;
            if let Ok(state) = KernelState::decode_snapshot(&bytes) {
                assert_eq!(KernelState::decode_snapshot(&state.encode_snapshot()).ok(), Some(state.clone()));
            }
        }
    }
}

#[test]
fn a_huge_length_prefix_is_refused_without_allocating_it() {
    // The body opens with the clock (u64) and then the trust store's key map,
    // whose length is a u64: claim 2^64 - 1 entries.
    let mut bytes = golden_bytes();
    bytes[18..26].copy_from_slice(&u64::MAX.to_le_bytes());
    let error = KernelState::decode_snapshot(&bytes).expect_err("impossible length");
    assert!(matches!(error, SnapshotError::Corrupt(_)), "{error}");
}

// ---------------------------------------------------------------- signing payloads

/// PUBLISHER's public key and id, spelled out so the payload goldens below
/// do not depend on the fixtures' derivation.
const PUBLISHER_PUBLIC_KEY_HEX: &str = "43a72e714401762df66b68c26dfbdf2682aaec9f2474eca4613e424a0fbafd3c";
const PUBLISHER_KEY_ID: &str = "506ef1879d748ce0713b0dd01da32ad2";

#[test]
fn the_key_id_is_the_first_16_bytes_of_the_public_keys_sha256() {
    assert_eq!(hex::encode(public_key(PUBLISHER)), PUBLISHER_PUBLIC_KEY_HEX);
    assert_eq!(key_id(PUBLISHER), PUBLISHER_KEY_ID);
}

#[test]
fn the_key_signing_payload_has_not_changed() {
    // Purposes are listed in enum order (ROOT, ENGINE_PUBLISHER, API_TOKEN),
    // not alphabetically, whatever order they were given in.
    let spec = with_window(
        key_spec(PUBLISHER, &[KeyPurpose::ApiToken, KeyPurpose::EnginePublisher]),
        T0_MS,
        Some(T0_MS + 1_000),
    );
    let expected = concat!(
        "keel/v1/key\n",
        r#"{"key_id":"506ef1879d748ce0713b0dd01da32ad2","not_after_ms":1700000001000,"not_before_ms":1700000000000,"#,
        r#""public_key":"43a72e714401762df66b68c26dfbdf2682aaec9f2474eca4613e424a0fbafd3c","#,
        r#""purposes":["ENGINE_PUBLISHER","API_TOKEN"]}"#,
    );
    assert_eq!(String::from_utf8(spec.signing_payload().expect("canonicalises")).expect("UTF-8"), expected);
}

#[test]
fn the_key_signing_payload_omits_an_open_end() {
    let spec = key_spec(PUBLISHER, &[KeyPurpose::EnginePublisher]);
    let expected = concat!(
        "keel/v1/key\n",
        r#"{"key_id":"506ef1879d748ce0713b0dd01da32ad2","not_before_ms":0,"#,
        r#""public_key":"43a72e714401762df66b68c26dfbdf2682aaec9f2474eca4613e424a0fbafd3c","#,
        r#""purposes":["ENGINE_PUBLISHER"]}"#,
    );
    assert_eq!(String::from_utf8(spec.signing_payload().expect("canonicalises")).expect("UTF-8"), expected);
}

#[test]
fn the_manifest_signing_payload_is_rfc_8785_of_the_document_as_sent() {
    // Keys sorted, whitespace dropped, numbers in ECMAScript form, escapes
    // resolved except the ones JSON requires.
    let sent = br#"{ "version": "2.0.0", "name": "coffee", "tier": "critical",
        "description": "caf\u00e9 \ud83d\ude00\t\"/",
        "actions": [{"name": "run", "input_schema": {"maximum": 1E3, "minimum": -0.0, "multipleOf": 0.10}}] }"#;
    let expected = concat!(
        "keel/v1/manifest\n",
        r#"{"actions":[{"input_schema":{"maximum":1000,"minimum":0,"multipleOf":0.1},"name":"run"}],"#,
        r#""description":"café 😀\t\"/","name":"coffee","tier":"critical","version":"2.0.0"}"#,
    );
    let parsed = keel_kernel::manifest::parse(sent).expect("a valid manifest");
    assert_eq!(String::from_utf8(parsed.signing_payload()).expect("UTF-8"), expected);
}

/// Found by the `snapshot_decode` fuzz target: bytes whose map entries are
/// out of order still decode, to the sorted state. That is safe because the
/// digest is computed over the re-encoding (which is canonical), so a
/// snapshot's header digest is checked against the state, not the bytes.
#[test]
fn a_snapshot_with_map_entries_out_of_order_decodes_to_the_canonical_state() {
    let mut state = KernelState::default();
    state.apply(1, &now(create_tenant("aa", "same"))).expect("create aa");
    state.apply(2, &now(create_tenant("bb", "same"))).expect("create bb");
    let bytes = state.encode_snapshot();
    let key = |id: &[u8]| {
        let mut key = (id.len() as u64).to_le_bytes().to_vec();
        key.extend_from_slice(id);
        bytes.windows(key.len()).position(|window| window == key.as_slice()).expect("key encoded")
    };
    let (first, second) = (key(b"aa"), key(b"bb"));
    let entry = second - first;
    let mut swapped = bytes.clone();
    swapped[first..first + entry].copy_from_slice(&bytes[second..second + entry]);
    swapped[second..second + entry].copy_from_slice(&bytes[first..first + entry]);
    assert_ne!(swapped, bytes);
    let decoded = KernelState::decode_snapshot(&swapped).expect("out-of-order entries decode");
    assert_eq!(decoded, state);
    assert_eq!(decoded.digest(), state.digest());
    assert_eq!(decoded.encode_snapshot(), bytes, "the re-encoding is the canonical one");
}
