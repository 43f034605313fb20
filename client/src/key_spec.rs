//! The client's side of `keel.v1.KeySpec`: what a root key signs to admit a
//! key.
//!
//! ```text
//!   KeySpec ──signing_payload()──▶ "keel/v1/key\n" + JCS{…} ──root KeyPair──▶ Signature
//!      └──────to_proto()─────────▶ pb::KeySpec ─┐
//!                                               └──▶ AddKeyRequest{spec, signatures}
//! ```
//!
//! Times are whole Unix milliseconds. On the wire they travel as
//! `google.protobuf.Timestamp`; [`timestamp_from_ms`] converts exactly, so
//! the server derives the same milliseconds the payload was signed with.

use crate::key_pair::KeyPair;
use crate::local_error::LocalError;
use crate::signing::{self, PUBLIC_KEY_BYTES};
use keel_proto::v1 as pb;
use std::collections::BTreeSet;

/// Milliseconds per second.
const MS_PER_SECOND: u64 = 1_000;
/// Nanoseconds per millisecond.
const NANOS_PER_MS: u64 = 1_000_000;

/// A key's signed description, validated locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    public_key: [u8; PUBLIC_KEY_BYTES],
    purposes: BTreeSet<pb::KeyPurpose>,
    not_before_ms: u64,
    not_after_ms: Option<u64>,
}

impl KeySpec {
    /// Builds a spec. Refuses an empty or unspecified purpose, a public key
    /// that is not an Ed25519 point, and an empty or inverted validity window.
    pub fn new(
        public_key: [u8; PUBLIC_KEY_BYTES],
        purposes: impl IntoIterator<Item = pb::KeyPurpose>,
        not_before_ms: u64,
        not_after_ms: Option<u64>,
    ) -> Result<Self, LocalError> {
        let purposes: BTreeSet<pb::KeyPurpose> = purposes.into_iter().collect();
        if purposes.is_empty() {
            return Err(LocalError::ArgumentInvalid {
                argument: "purposes".into(),
                problem: "needs at least one purpose".into(),
            });
        }
        if purposes.contains(&pb::KeyPurpose::Unspecified) {
            return Err(LocalError::ArgumentInvalid {
                argument: "purposes".into(),
                problem: "must not contain KEY_PURPOSE_UNSPECIFIED".into(),
            });
        }
        if ed25519_dalek::VerifyingKey::from_bytes(&public_key).is_err() {
            return Err(LocalError::ArgumentInvalid {
                argument: "public_key".into(),
                problem: "is not a valid Ed25519 public key".into(),
            });
        }
        if let Some(not_after_ms) = not_after_ms
            && not_after_ms <= not_before_ms
        {
            return Err(LocalError::ArgumentInvalid {
                argument: "not_after".into(),
                problem: format!("({not_after_ms} ms) must be later than not_before ({not_before_ms} ms)"),
            });
        }
        Ok(KeySpec { public_key, purposes, not_before_ms, not_after_ms })
    }

    /// The raw public key.
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_BYTES] {
        &self.public_key
    }

    /// The purposes, in the server's order.
    pub fn purposes(&self) -> impl Iterator<Item = pb::KeyPurpose> + '_ {
        self.purposes.iter().copied()
    }

    /// Valid from (inclusive), Unix ms.
    pub fn not_before_ms(&self) -> u64 {
        self.not_before_ms
    }

    /// Valid until (exclusive), Unix ms; `None` never expires.
    pub fn not_after_ms(&self) -> Option<u64> {
        self.not_after_ms
    }

    /// The key's id (see [`signing::key_id_of`]).
    pub fn key_id(&self) -> String {
        signing::key_id_of(&self.public_key)
    }

    /// The bytes a root key signs to admit this key.
    pub fn signing_payload(&self) -> Result<Vec<u8>, LocalError> {
        let purposes: Vec<pb::KeyPurpose> = self.purposes().collect();
        signing::key_payload(&self.public_key, &purposes, self.not_before_ms, self.not_after_ms)
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::KeySpec {
        pb::KeySpec {
            public_key: self.public_key.to_vec(),
            purposes: self.purposes().map(i32::from).collect(),
            not_before: Some(timestamp_from_ms(self.not_before_ms)),
            not_after: self.not_after_ms.map(timestamp_from_ms),
        }
    }

    /// A signature over [`Self::signing_payload`] by `signer`.
    pub fn sign(&self, signer: &KeyPair) -> Result<pb::Signature, LocalError> {
        Ok(signer.sign_to_proto(&self.signing_payload()?))
    }

    /// A complete `AddKey` request signed by every key in `signers`.
    pub fn add_key_request(&self, signers: &[&KeyPair]) -> Result<pb::AddKeyRequest, LocalError> {
        let payload = self.signing_payload()?;
        Ok(pb::AddKeyRequest {
            spec: Some(self.to_proto()),
            signatures: signers.iter().map(|signer| signer.sign_to_proto(&payload)).collect(),
            idempotency_key: String::new(),
        })
    }
}

/// Whole Unix milliseconds as a protobuf timestamp, exactly.
pub fn timestamp_from_ms(unix_ms: u64) -> prost_types::Timestamp {
    // u64::MAX / 1000 < i64::MAX, so the seconds always fit.
    let seconds = i64::try_from(unix_ms / MS_PER_SECOND).unwrap_or(i64::MAX);
    // Below 1e9, so the nanoseconds always fit.
    let nanos = i32::try_from((unix_ms % MS_PER_SECOND) * NANOS_PER_MS).unwrap_or(0);
    prost_types::Timestamp { seconds, nanos }
}

/// A protobuf timestamp as Unix milliseconds (sub-millisecond part dropped);
/// `None` when it is before the epoch or out of range.
pub fn ms_from_timestamp(timestamp: &prost_types::Timestamp) -> Option<u64> {
    let seconds = u64::try_from(timestamp.seconds).ok()?;
    let nanos = u64::try_from(timestamp.nanos).ok()?;
    seconds.checked_mul(MS_PER_SECOND)?.checked_add(nanos / NANOS_PER_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher() -> KeyPair {
        KeyPair::from_secret_bytes([7u8; 32])
    }

    #[test]
    fn timestamps_round_trip_whole_milliseconds() {
        for unix_ms in [0, 1, 999, 1_000, 1_767_225_600_123, u64::MAX / 2] {
            assert_eq!(ms_from_timestamp(&timestamp_from_ms(unix_ms)), Some(unix_ms));
        }
        let timestamp = timestamp_from_ms(1_767_225_600_123);
        assert_eq!((timestamp.seconds, timestamp.nanos), (1_767_225_600, 123_000_000));
        assert_eq!(ms_from_timestamp(&prost_types::Timestamp { seconds: -1, nanos: 0 }), None);
    }

    /// Golden payloads. These bytes were cross-checked against the server's
    /// own payload construction; if they change, every existing signature
    /// stops verifying.
    #[test]
    fn signing_payload_golden_bytes() {
        let public_key = publisher().public_key();
        assert_eq!(publisher().key_id(), "fe812c12f3ab4ce6ac5db69ac352f906");
        let with_expiry = KeySpec::new(
            public_key,
            [pb::KeyPurpose::ApiToken, pb::KeyPurpose::EnginePublisher],
            1_767_225_600_000,
            Some(1_798_761_600_000),
        )
        .expect("spec is valid");
        assert_eq!(
            String::from_utf8(with_expiry.signing_payload().expect("payload")).expect("utf-8"),
            concat!(
                "keel/v1/key\n",
                r#"{"key_id":"fe812c12f3ab4ce6ac5db69ac352f906","not_after_ms":1798761600000,"#,
                r#""not_before_ms":1767225600000,"#,
                r#""public_key":"ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c","#,
                r#""purposes":["ENGINE_PUBLISHER","API_TOKEN"]}"#
            )
        );
        let without_expiry =
            KeySpec::new(public_key, [pb::KeyPurpose::EnginePublisher], 1_767_225_600_000, None).expect("valid");
        assert_eq!(
            String::from_utf8(without_expiry.signing_payload().expect("payload")).expect("utf-8"),
            concat!(
                "keel/v1/key\n",
                r#"{"key_id":"fe812c12f3ab4ce6ac5db69ac352f906","not_before_ms":1767225600000,"#,
                r#""public_key":"ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c","#,
                r#""purposes":["ENGINE_PUBLISHER"]}"#
            )
        );
        // Purposes follow the server's enum order, not the alphabet.
        let root_and_token =
            KeySpec::new(public_key, [pb::KeyPurpose::ApiToken, pb::KeyPurpose::Root], 0, Some(1)).expect("valid");
        let text = String::from_utf8(root_and_token.signing_payload().expect("payload")).expect("utf-8");
        assert!(text.ends_with(r#""purposes":["ROOT","API_TOKEN"]}"#), "{text}");
    }

    /// The same vectors as the kernel's golden test
    /// (`daemon/kernel/tests/snapshot_format.rs`, key seed 10), so a change on
    /// either side breaks a test on that side.
    #[test]
    fn signing_payload_matches_the_servers_golden_vectors() {
        let public_key = KeyPair::from_secret_bytes([10u8; 32]).public_key();
        let spec = KeySpec::new(
            public_key,
            [pb::KeyPurpose::ApiToken, pb::KeyPurpose::EnginePublisher],
            1_700_000_000_000,
            Some(1_700_000_001_000),
        )
        .expect("valid");
        assert_eq!(
            String::from_utf8(spec.signing_payload().expect("payload")).expect("utf-8"),
            concat!(
                "keel/v1/key\n",
                r#"{"key_id":"506ef1879d748ce0713b0dd01da32ad2","not_after_ms":1700000001000,"not_before_ms":1700000000000,"#,
                r#""public_key":"43a72e714401762df66b68c26dfbdf2682aaec9f2474eca4613e424a0fbafd3c","#,
                r#""purposes":["ENGINE_PUBLISHER","API_TOKEN"]}"#,
            )
        );
        let open_ended = KeySpec::new(public_key, [pb::KeyPurpose::EnginePublisher], 0, None).expect("valid");
        assert_eq!(
            String::from_utf8(open_ended.signing_payload().expect("payload")).expect("utf-8"),
            concat!(
                "keel/v1/key\n",
                r#"{"key_id":"506ef1879d748ce0713b0dd01da32ad2","not_before_ms":0,"#,
                r#""public_key":"43a72e714401762df66b68c26dfbdf2682aaec9f2474eca4613e424a0fbafd3c","#,
                r#""purposes":["ENGINE_PUBLISHER"]}"#,
            )
        );
    }

    #[test]
    fn signatures_are_deterministic() {
        let spec = KeySpec::new(publisher().public_key(), [pb::KeyPurpose::EnginePublisher], 1_767_225_600_000, None)
            .expect("valid");
        let root = KeyPair::from_secret_bytes([1u8; 32]);
        let first = spec.sign(&root).expect("sign");
        let second = spec.sign(&root).expect("sign");
        assert_eq!(first, second);
        assert_eq!(first.signature.len(), 64);
    }

    #[test]
    fn new_refuses_bad_specs() {
        let public_key = publisher().public_key();
        assert!(KeySpec::new(public_key, [], 0, None).is_err());
        assert!(KeySpec::new(public_key, [pb::KeyPurpose::Unspecified], 0, None).is_err());
        assert!(KeySpec::new(public_key, [pb::KeyPurpose::ApiToken], 10, Some(10)).is_err());
        assert!(KeySpec::new(public_key, [pb::KeyPurpose::ApiToken], 10, Some(11)).is_ok());
    }

    #[test]
    fn to_proto_carries_purposes_in_order_and_exact_times() {
        let spec = KeySpec::new(
            publisher().public_key(),
            [pb::KeyPurpose::ApiToken, pb::KeyPurpose::EnginePublisher],
            1_767_225_600_000,
            Some(1_798_761_600_500),
        );
        let proto = spec.expect("spec is valid").to_proto();
        assert_eq!(proto.purposes, vec![2, 3]);
        assert_eq!(proto.not_before.as_ref().and_then(ms_from_timestamp), Some(1_767_225_600_000));
        assert_eq!(proto.not_after.as_ref().and_then(ms_from_timestamp), Some(1_798_761_600_500));
        assert_eq!(proto.public_key, publisher().public_key().to_vec());
    }

    #[test]
    fn add_key_request_signature_verifies_over_the_payload() {
        let root = KeyPair::from_secret_bytes([1u8; 32]);
        let spec = KeySpec::new(publisher().public_key(), [pb::KeyPurpose::EnginePublisher], 1_000, None)
            .expect("spec is valid");
        let request = spec.add_key_request(&[&root]).expect("request builds");
        let payload = spec.signing_payload().expect("payload builds");
        assert_eq!(request.signatures.len(), 1);
        assert_eq!(request.signatures[0].key_id, root.key_id());
        assert!(signing::verify(&root.public_key(), &payload, &request.signatures[0].signature));
    }
}
