//! Versioned binary records: the byte layout of everything the Raft layer
//! persists (log entries, vote, committed and purged log ids, snapshots).
//!
//! Two shapes, both starting with a one-byte format version so a later build
//! can tell old records from new ones (and an older build refuses newer ones
//! instead of misreading them):
//!
//! ```text
//!  record:  ┌─────────┬──────────────────────────────┐
//!           │ version │ bincode body                 │
//!           └─────────┴──────────────────────────────┘
//!  framed:  ┌─────────┬──────────────┬────────────────┬──────────────────┐
//!           │ version │ header_bytes │ bincode header │ raw payload      │
//!           │  1 byte │   u32 LE     │                │ (rest of record) │
//!           └─────────┴──────────────┴────────────────┴──────────────────┘
//! ```
//!
//! Bodies and headers use bincode 1 with fixed-width little-endian integers,
//! the same bytes `bincode::serialize` writes. Decoding is bounded by a byte
//! limit and rejects trailing bytes, so a corrupt or truncated record is a
//! [`DecodeError`] — never a panic and never a runaway allocation. The framed
//! shape keeps large payloads (kernel snapshots) out of bincode so they are
//! neither copied byte by byte nor bounded by the header limit.
//!
//! The peer transport sends bare bodies ([`encode_body`], [`decode_body`]):
//! its protobuf envelopes carry the format version in a field of their own.

use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes where a record was expected.
    #[error("record is empty")]
    Empty,
    /// The record was written in a format this build does not read.
    #[error("record format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Version byte found.
        found: u8,
        /// Version this build reads.
        supported: u8,
    },
    /// A framed record is shorter than its header length says.
    #[error("framed record header claims {header_bytes} bytes but only {available_bytes} follow")]
    TruncatedHeader {
        /// Header length written in the record.
        header_bytes: u64,
        /// Bytes actually present after the length.
        available_bytes: u64,
    },
    /// The body (or header) does not decode, is over its limit, or has trailing bytes.
    #[error("record body does not decode")]
    Body(#[source] bincode::Error),
}

/// Why a value could not be encoded. Only possible for types serde cannot
/// express in bincode (none of ours), or a header over `u32::MAX` bytes.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// bincode refused the value.
    #[error("value does not encode")]
    Body(#[source] bincode::Error),
    /// A framed header does not fit its u32 length.
    #[error("framed record header is {header_bytes} bytes, over the u32 length field")]
    HeaderTooLarge {
        /// Encoded header size.
        header_bytes: usize,
    },
}

/// bincode options matching `bincode::serialize`'s byte layout (fixint,
/// little endian). Unbounded: encoding only ever sees our own values, and a
/// limit would make bincode size every value twice.
fn encode_options() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_little_endian()
}

/// [`encode_options`]' layout, bounded and strict about trailing bytes.
fn decode_options(bytes_max: u64) -> impl Options {
    encode_options().with_limit(bytes_max).reject_trailing_bytes()
}

/// Encodes `value` as `[version] + bincode(value)`.
pub fn encode<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut bytes = vec![version];
    encode_options().serialize_into(&mut bytes, value).map_err(EncodeError::Body)?;
    Ok(bytes)
}

/// Decodes a record written by [`encode`] with `supported` as its version.
/// `bytes_max` bounds the body.
pub fn decode<T: DeserializeOwned>(supported: u8, bytes: &[u8], bytes_max: u64) -> Result<T, DecodeError> {
    let body = strip_version(supported, bytes)?;
    decode_options(bytes_max).deserialize(body).map_err(DecodeError::Body)
}

/// Encodes `value` as bare bincode, for envelopes that carry the format
/// version in a field of their own (the peer transport's messages).
pub fn encode_body<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    encode_options().serialize(value).map_err(EncodeError::Body)
}

/// How many bytes [`encode_body`] would write for `value`, without writing them.
pub fn body_len<T: Serialize>(value: &T) -> Result<u64, EncodeError> {
    encode_options().serialized_size(value).map_err(EncodeError::Body)
}

/// Decodes bare bincode written by [`encode_body`]; `bytes_max` bounds what
/// any length prefix may claim. The caller has checked the format version.
pub fn decode_body<T: DeserializeOwned>(bytes: &[u8], bytes_max: u64) -> Result<T, DecodeError> {
    decode_options(bytes_max).deserialize(bytes).map_err(DecodeError::Body)
}

/// Encodes `[version][u32 LE header length][bincode(header)][payload]`.
pub fn encode_framed<H: Serialize>(version: u8, header: &H, payload: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let header_bytes = encode_options().serialize(header).map_err(EncodeError::Body)?;
    let header_len = u32::try_from(header_bytes.len())
        .map_err(|_| EncodeError::HeaderTooLarge { header_bytes: header_bytes.len() })?;
    let mut bytes = Vec::with_capacity(1 + 4 + header_bytes.len() + payload.len());
    bytes.push(version);
    bytes.extend_from_slice(&header_len.to_le_bytes());
    bytes.extend_from_slice(&header_bytes);
    bytes.extend_from_slice(payload);
    Ok(bytes)
}

/// Decodes a record written by [`encode_framed`]: the header (bounded by
/// `header_bytes_max`) and a borrow of the payload.
pub fn decode_framed<H: DeserializeOwned>(
    supported: u8,
    bytes: &[u8],
    header_bytes_max: u64,
) -> Result<(H, &[u8]), DecodeError> {
    let rest = strip_version(supported, bytes)?;
    let (len_bytes, rest) = rest
        .split_first_chunk::<4>()
        .ok_or(DecodeError::TruncatedHeader { header_bytes: 4, available_bytes: rest.len() as u64 })?;
    let header_len = u32::from_le_bytes(*len_bytes);
    let (header_bytes, payload) = usize::try_from(header_len).ok().and_then(|len| rest.split_at_checked(len)).ok_or(
        DecodeError::TruncatedHeader { header_bytes: u64::from(header_len), available_bytes: rest.len() as u64 },
    )?;
    let header = decode_options(header_bytes_max).deserialize(header_bytes).map_err(DecodeError::Body)?;
    Ok((header, payload))
}

fn strip_version(supported: u8, bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let (&found, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if found != supported {
        return Err(DecodeError::UnsupportedVersion { found, supported });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_match_bincode_serialize() {
        let value: (u64, String, Option<u32>) = (7, "seven".to_owned(), Some(3));
        let bytes = encode(1, &value).expect("tuples encode");
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..], bincode::serialize(&value).expect("tuples encode").as_slice());
        let back: (u64, String, Option<u32>) = decode(1, &bytes, 1024).expect("round trip");
        assert_eq!(back, value);
    }

    #[test]
    fn bad_records_are_errors() {
        let bytes = encode(1, &(1u64, "x".to_owned())).expect("tuples encode");
        assert!(matches!(decode::<(u64, String)>(1, &[], 1024), Err(DecodeError::Empty)));
        assert!(matches!(
            decode::<(u64, String)>(2, &bytes, 1024),
            Err(DecodeError::UnsupportedVersion { found: 1, supported: 2 })
        ));
        assert!(matches!(decode::<(u64, String)>(1, &bytes[..bytes.len() - 1], 1024), Err(DecodeError::Body(_))));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(decode::<(u64, String)>(1, &trailing, 1024), Err(DecodeError::Body(_))));
        // A length prefix claiming 2^60 bytes hits the limit instead of allocating.
        let mut huge = vec![1u8];
        huge.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(decode::<Vec<u8>>(1, &huge, 1024), Err(DecodeError::Body(_))));
    }

    #[test]
    fn bodies_are_records_without_the_version_byte() {
        let value: (u64, String) = (7, "seven".to_owned());
        let record = encode(1, &value).expect("tuples encode");
        let body = encode_body(&value).expect("tuples encode");
        assert_eq!(&record[1..], body.as_slice());
        assert_eq!(body_len(&value).expect("tuples encode"), body.len() as u64);
        assert_eq!(decode_body::<(u64, String)>(&body, 1024).expect("round trip"), value);
        assert!(decode_body::<(u64, String)>(&body[..body.len() - 1], 1024).is_err(), "truncated");
    }

    #[test]
    fn framed_records_round_trip_and_reject_truncation() {
        let bytes = encode_framed(1, &(5u64, 6u64), b"payload").expect("tuples encode");
        let (header, payload): ((u64, u64), &[u8]) = decode_framed(1, &bytes, 1024).expect("round trip");
        assert_eq!(header, (5, 6));
        assert_eq!(payload, b"payload");
        for cut in 0..1 + 4 + 16 {
            assert!(decode_framed::<(u64, u64)>(1, &bytes[..cut], 1024).is_err(), "cut at {cut}");
        }
    }
}
