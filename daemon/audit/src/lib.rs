//! Keel's audit records and their per-node hash chain.
//!
//! ```text
//!  one line per record (JSON, no newline inside), in seq order:
//!    {"seq":N,"prev":"<hex sha256 of line N−1>","id":"<node>-<N>","time_ms":…,"node":…,"kind":…,…}
//!  a checkpoint is a record of kind "checkpoint" whose `signature` is the
//!  node's Ed25519 signature over  CHECKPOINT_CONTEXT ‖ node (u64 BE) ‖ seq (u64 BE) ‖ prev (32 bytes)
//!  every segment file starts with a checkpoint, so a log whose older
//!  segments were deleted (retention) starts at a signed anchor
//! ```
//!
//! [`Chain`] seals records into lines (the node's audit writer owns one);
//! [`Verifier`] takes lines in file order and names the first record that
//! was deleted, altered, moved or forged. `prev` binds each line to every
//! line before it, so an edited record is caught at its successor and the
//! tail up to the last checkpoint is bound to the signing key. What a hash
//! chain cannot show alone: lines after the last checkpoint cut off at the
//! end; the copies on other members (and their lag) bound that.
//!
//! Pure: no I/O, no clock; the node and `keelctl` share it.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bytes of one encoded record (its line, without the newline). A longer
/// line is refused when sealing and is a problem when verifying.
pub const RECORD_BYTES_MAX: usize = 16 * 1024;

/// Domain separation for checkpoint signatures.
pub const CHECKPOINT_CONTEXT: &[u8] = b"keel-audit-checkpoint/v1\0";

/// `prev` of a node's first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// What a record records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An `Admit` decision, allowed or denied (a rate-limit refusal is a
    /// denial with reason `RATE_LIMITED`).
    #[default]
    Admission,
    /// A mutation: `decision` is `proposed` (written before the proposal),
    /// then `applied` or `rejected` (or `failed` when its outcome is unknown).
    Mutation,
    /// An authentication or authorization failure, a bad signature.
    Security,
    /// A circuit breaker's transition.
    Breaker,
    /// A signed anchor of the chain.
    Checkpoint,
}

impl Kind {
    /// The wire name (`admission`, `mutation`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Admission => "admission",
            Kind::Mutation => "mutation",
            Kind::Security => "security",
            Kind::Breaker => "breaker",
            Kind::Checkpoint => "checkpoint",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Kind> {
        [Kind::Admission, Kind::Mutation, Kind::Security, Kind::Breaker, Kind::Checkpoint]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// One audit record. Fields are encoded in this order; empty text fields
/// are kept (a fixed shape is easy to grep and to load).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the node's chain, from 1.
    pub seq: u64,
    /// Hex SHA-256 of the previous line ([`GENESIS`] before the first).
    pub prev: String,
    /// `<node>-<seq>`: unique in the cluster.
    pub id: String,
    /// The recording node's wall clock, ms since the Unix epoch.
    pub time_ms: u64,
    /// The recording node.
    pub node: u64,
    /// Its region.
    pub region: String,
    /// What is recorded.
    pub kind: Kind,
    /// Who: the token's subject (empty: no token).
    pub principal: String,
    /// For which tenant (empty: none).
    pub tenant: String,
    /// Engine (admissions).
    pub engine: String,
    /// The engine's action (admissions), the RPC method (mutations and
    /// security events) or the breaker.
    pub action: String,
    /// `allowed` / `denied` (admissions), `proposed` / `applied` /
    /// `rejected` / `failed` (mutations), `refused` (security), the new
    /// phase (breakers), `signed` (checkpoints).
    pub decision: String,
    /// The stable reason (`OK`, `RATE_LIMITED`, `TOKEN_EXPIRED`, …).
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
    /// The admission's decision id.
    pub decision_id: String,
    /// The policy version that decided.
    pub policy_version: String,
    /// The revision the decision was made at, or the mutation applied at.
    pub revision: u64,
    /// Decided without a dependency (Redis down): why, else empty.
    pub degraded: String,
    /// The RPC's request id.
    pub request_id: String,
    /// The W3C trace id, when traced.
    pub trace_id: String,
    /// Checkpoints: the node's public key (hex).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub public_key: String,
    /// Checkpoints: the signature (hex).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature: String,
}

/// Bytes each free-text field keeps when a record is cut to fit
/// [`RECORD_BYTES_MAX`] (even fully escaped, 20 such fields fit).
const FIELD_BYTES_WHEN_CUT: usize = 96;

/// Cuts `text` to at most `bytes` bytes, on a character boundary.
fn cut(text: &mut String, bytes: usize) {
    if text.len() > bytes {
        let mut end = bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

impl Record {
    /// The fields a caller fills with free text (cut when a record is too large).
    fn text_fields(&mut self) -> [&mut String; 14] {
        [
            &mut self.region,
            &mut self.principal,
            &mut self.tenant,
            &mut self.engine,
            &mut self.action,
            &mut self.decision,
            &mut self.reason,
            &mut self.detail,
            &mut self.decision_id,
            &mut self.policy_version,
            &mut self.degraded,
            &mut self.request_id,
            &mut self.trace_id,
            &mut self.signature,
        ]
    }
}

/// SHA-256 of one line (without its newline).
pub fn line_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

/// What a checkpoint's signature covers.
pub fn checkpoint_message(node: u64, seq: u64, prev: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(CHECKPOINT_CONTEXT.len() + 48);
    message.extend_from_slice(CHECKPOINT_CONTEXT);
    message.extend_from_slice(&node.to_be_bytes());
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(prev);
    message
}

/// Why a record could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Its line would be over [`RECORD_BYTES_MAX`].
    #[error("the record is {0} bytes, over RECORD_BYTES_MAX")]
    TooLarge(usize),
    /// It could not be encoded.
    #[error("the record does not encode: {0}")]
    Encoding(String),
}

/// The head of one node's chain: seals records into lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    node: u64,
    next_seq: u64,
    prev: [u8; 32],
}

impl Chain {
    /// A new chain for `node`.
    pub fn new(node: u64) -> Chain {
        Chain { node, next_seq: 1, prev: GENESIS }
    }

    /// The chain continuing after the line `last` (the last line on disk).
    pub fn after(last: &[u8]) -> Result<Chain, Problem> {
        let record = decode(last, 0)?;
        Ok(Chain { node: record.node, next_seq: record.seq.saturating_add(1), prev: line_hash(last) })
    }

    /// The node this chain is for.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// The seq the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The hash of the last sealed line.
    pub fn head(&self) -> [u8; 32] {
        self.prev
    }

    /// `record` as the chain's next line (seq, prev, id and node are set
    /// here). The chain moves on only when this succeeds.
    pub fn seal(&mut self, mut record: Record) -> Result<Vec<u8>, SealError> {
        record.seq = self.next_seq;
        record.prev = hex::encode(self.prev);
        record.id = format!("{}-{}", self.node, self.next_seq);
        record.node = self.node;
        let mut line = serde_json::to_vec(&record).map_err(|error| SealError::Encoding(error.to_string()))?;
        if line.len() > RECORD_BYTES_MAX {
            // Never refuse a record for its size: cut its free text and say so.
            let original = line.len();
            for field in record.text_fields() {
                cut(field, FIELD_BYTES_WHEN_CUT);
            }
            record.detail = format!("record cut from {original} bytes to RECORD_BYTES_MAX");
            line = serde_json::to_vec(&record).map_err(|error| SealError::Encoding(error.to_string()))?;
            if line.len() > RECORD_BYTES_MAX {
                return Err(SealError::TooLarge(line.len()));
            }
        }
        self.prev = line_hash(&line);
        self.next_seq = self.next_seq.saturating_add(1);
        Ok(line)
    }

    /// A checkpoint signed with `key`, sealed as the next line.
    pub fn checkpoint(&mut self, key: &SigningKey, time_ms: u64, region: &str) -> Result<Vec<u8>, SealError> {
        let signature = key.sign(&checkpoint_message(self.node, self.next_seq, &self.prev));
        let record = Record {
            time_ms,
            region: region.to_owned(),
            kind: Kind::Checkpoint,
            decision: "signed".to_owned(),
            public_key: hex::encode(key.verifying_key().as_bytes()),
            signature: hex::encode(signature.to_bytes()),
            ..Record::default()
        };
        self.seal(record)
    }
}

/// The first thing wrong with a log, naming the first bad record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A line that is not a record.
    #[error("line {line}: not an audit record ({detail})")]
    Undecodable {
        /// 1-based line number in the input.
        line: u64,
        /// What failed.
        detail: String,
    },
    /// The record expected next is not there (deleted, or moved later).
    #[error("record {node}-{expected} is missing: found {node}-{found} where the chain expects it")]
    Missing {
        /// The node.
        node: u64,
        /// The seq the chain expects.
        expected: u64,
        /// The seq found there.
        found: u64,
    },
    /// A record whose bytes are not those its successor chained to.
    #[error("record {node}-{seq} was altered: its hash is not the one {node}-{next} recorded")]
    Altered {
        /// The node.
        node: u64,
        /// The altered record.
        seq: u64,
        /// Its successor.
        next: u64,
    },
    /// A record of another node in this node's chain.
    #[error("record at line {line} is node {found}'s, in node {node}'s chain")]
    WrongNode {
        /// 1-based line number.
        line: u64,
        /// The chain's node.
        node: u64,
        /// The record's node.
        found: u64,
    },
    /// A checkpoint whose signature does not verify.
    #[error("checkpoint {node}-{seq}: {detail}")]
    BadCheckpoint {
        /// The node.
        node: u64,
        /// The checkpoint's seq.
        seq: u64,
        /// What failed.
        detail: String,
    },
    /// A log that does not start at the node's first record or at a checkpoint.
    #[error("the log starts at {node}-{seq}, which is neither the first record nor a checkpoint")]
    Unanchored {
        /// The node.
        node: u64,
        /// The first record's seq.
        seq: u64,
    },
}

impl Problem {
    /// The id (`<node>-<seq>`) of the first bad record, when one is named.
    pub fn first_bad(&self) -> Option<String> {
        match self {
            Problem::Missing { node, expected, .. } => Some(format!("{node}-{expected}")),
            Problem::Altered { node, seq, .. }
            | Problem::BadCheckpoint { node, seq, .. }
            | Problem::Unanchored { node, seq } => Some(format!("{node}-{seq}")),
            Problem::Undecodable { .. } | Problem::WrongNode { .. } => None,
        }
    }
}

fn decode(line: &[u8], number: u64) -> Result<Record, Problem> {
    if line.len() > RECORD_BYTES_MAX {
        return Err(Problem::Undecodable { line: number, detail: "over RECORD_BYTES_MAX".to_owned() });
    }
    serde_json::from_slice(line).map_err(|error| Problem::Undecodable { line: number, detail: error.to_string() })
}

fn hash_field(hex_text: &str) -> Option<[u8; 32]> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut bytes).ok()?;
    Some(bytes)
}

/// What a verified log held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The node whose chain it is (0: empty log).
    pub node: u64,
    /// Records read, checkpoints included.
    pub records: u64,
    /// Checkpoints among them.
    pub checkpoints: u64,
    /// First and last seq.
    pub first_seq: u64,
    /// Last seq.
    pub last_seq: u64,
    /// The last checkpoint's seq (0: none).
    pub last_checkpoint: u64,
    /// The signing key of the checkpoints (hex).
    pub public_key: String,
}

/// Checks one node's lines in order; stops at the first problem.
#[derive(Debug, Default)]
pub struct Verifier {
    pinned_key: Option<VerifyingKey>,
    /// (seq, hash) of the last line read.
    last: Option<(u64, [u8; 32])>,
    lines: u64,
    summary: Summary,
}

impl Verifier {
    /// A verifier trusting the key of the first checkpoint it reads.
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// A verifier trusting only `key`.
    pub fn pinned(key: VerifyingKey) -> Verifier {
        Verifier { pinned_key: Some(key), ..Verifier::default() }
    }

    /// The next line (without its newline).
    pub fn push(&mut self, line: &[u8]) -> Result<(), Problem> {
        self.lines += 1;
        let record = decode(line, self.lines)?;
        let hash = line_hash(line);
        let node = record.node;
        match self.last {
            None => {
                let prev = hash_field(&record.prev).ok_or(Problem::Altered {
                    node,
                    seq: record.seq,
                    next: record.seq.saturating_add(1),
                })?;
                let anchored = (record.seq == 1 && prev == GENESIS) || record.kind == Kind::Checkpoint;
                if !anchored {
                    return Err(Problem::Unanchored { node, seq: record.seq });
                }
                self.summary.node = node;
                self.summary.first_seq = record.seq;
            }
            Some((last_seq, last_hash)) => {
                if node != self.summary.node {
                    return Err(Problem::WrongNode { line: self.lines, node: self.summary.node, found: node });
                }
                let expected = last_seq.saturating_add(1);
                if record.seq != expected {
                    return Err(Problem::Missing { node, expected, found: record.seq });
                }
                if hash_field(&record.prev) != Some(last_hash) {
                    return Err(Problem::Altered { node, seq: last_seq, next: record.seq });
                }
            }
        }
        if record.id != format!("{node}-{}", record.seq) {
            return Err(Problem::Altered { node, seq: record.seq, next: record.seq.saturating_add(1) });
        }
        if record.kind == Kind::Checkpoint {
            self.check_signature(&record)?;
            self.summary.checkpoints += 1;
            self.summary.last_checkpoint = record.seq;
        }
        self.summary.records += 1;
        self.summary.last_seq = record.seq;
        self.last = Some((record.seq, hash));
        Ok(())
    }

    fn check_signature(&mut self, record: &Record) -> Result<(), Problem> {
        let bad =
            |detail: &str| Problem::BadCheckpoint { node: record.node, seq: record.seq, detail: detail.to_owned() };
        let key_bytes = hash_field(&record.public_key).ok_or_else(|| bad("the public key is not 32 hex bytes"))?;
        let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| bad("the public key is not an Ed25519 key"))?;
        match self.pinned_key {
            Some(pinned) if pinned != key => return Err(bad("signed by another key than the log's")),
            _ => {}
        }
        let mut signature = [0u8; 64];
        hex::decode_to_slice(&record.signature, &mut signature)
            .map_err(|_| bad("the signature is not 64 hex bytes"))?;
        let prev = hash_field(&record.prev).ok_or_else(|| bad("prev is not 32 hex bytes"))?;
        key.verify(&checkpoint_message(record.node, record.seq, &prev), &Signature::from_bytes(&signature))
            .map_err(|_| bad("the signature does not verify"))?;
        self.pinned_key = Some(key);
        self.summary.public_key = record.public_key.clone();
        Ok(())
    }

    /// What was read so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }
}

/// The complete lines of `bytes` (a final line without its newline is torn
/// — a write cut short, never acknowledged — and left out) and the length
/// they span.
pub fn complete_lines(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let Some(end) = bytes.iter().rposition(|byte| *byte == b'\n') else {
        return (Vec::new(), 0);
    };
    let lines = bytes[..end].split(|byte| *byte == b'\n').filter(|line| !line.is_empty()).collect();
    (lines, end + 1)
}

/// Verifies `text` (lines separated by `\n`; a final newline is optional).
pub fn verify_lines(text: &[u8], pinned: Option<VerifyingKey>) -> Result<Summary, (Summary, Problem)> {
    let mut verifier = pinned.map(Verifier::pinned).unwrap_or_default();
    for line in text.split(|byte| *byte == b'\n').filter(|line| !line.is_empty()) {
        if let Err(problem) = verifier.push(line) {
            return Err((verifier.summary, problem));
        }
    }
    Ok(verifier.summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn admission(n: u64) -> Record {
        Record {
            time_ms: 1_700_000_000_000 + n,
            region: "eu-west".into(),
            tenant: "acme".into(),
            engine: "billing".into(),
            action: "refund".into(),
            decision: "allowed".into(),
            reason: "OK".into(),
            ..Record::default()
        }
    }

    /// A checkpoint, `n` admissions, a checkpoint, `n` admissions: lines.
    fn log(n: u64) -> Vec<Vec<u8>> {
        let mut chain = Chain::new(3);
        let mut lines = vec![chain.checkpoint(&key(), 1, "eu-west").expect("seals")];
        for round in 0..2 {
            for i in 0..n {
                lines.push(chain.seal(admission(i)).expect("seals"));
            }
            if round == 0 {
                lines.push(chain.checkpoint(&key(), 2, "eu-west").expect("seals"));
            }
        }
        lines
    }

    fn joined(lines: &[Vec<u8>]) -> Vec<u8> {
        lines.iter().flat_map(|line| line.iter().copied().chain([b'\n'])).collect()
    }

    #[test]
    fn an_intact_log_verifies_and_is_summarized() {
        let lines = log(5);
        let summary = verify_lines(&joined(&lines), None).expect("verifies");
        assert_eq!((summary.node, summary.records, summary.checkpoints), (3, 12, 2));
        assert_eq!((summary.first_seq, summary.last_seq, summary.last_checkpoint), (1, 12, 7));
        let pinned = key().verifying_key();
        assert!(verify_lines(&joined(&lines), Some(pinned)).is_ok());
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        let (_, problem) = verify_lines(&joined(&lines), Some(other)).expect_err("another key");
        assert_eq!(problem.first_bad().as_deref(), Some("3-1"));
    }

    #[test]
    fn a_deleted_record_is_named() {
        let mut lines = log(5);
        lines.remove(3);
        let (_, problem) = verify_lines(&joined(&lines), None).expect_err("a gap");
        assert_eq!(problem, Problem::Missing { node: 3, expected: 4, found: 5 });
        assert_eq!(problem.first_bad().as_deref(), Some("3-4"));
    }

    #[test]
    fn an_edited_record_is_named() {
        let mut lines = log(5);
        let edited = String::from_utf8(lines[2].clone()).expect("utf-8").replace("allowed", "denied");
        lines[2] = edited.into_bytes();
        let (_, problem) = verify_lines(&joined(&lines), None).expect_err("an edit");
        assert_eq!(problem.first_bad().as_deref(), Some("3-3"));
    }

    #[test]
    fn reordered_records_are_named() {
        let mut lines = log(5);
        lines.swap(4, 5);
        let (_, problem) = verify_lines(&joined(&lines), None).expect_err("a swap");
        assert_eq!(problem.first_bad().as_deref(), Some("3-5"));
    }

    #[test]
    fn a_rewritten_tail_is_caught_at_the_next_checkpoint() {
        // Records 2..=6 recomputed consistently without the key: the
        // checkpoint at 7 signed the original head (and a checkpoint left
        // as it was is caught as the forged record 6's successor).
        let lines = log(5);
        let mut forged = vec![lines[0].clone()];
        let mut chain = Chain::after(&lines[0]).expect("a record");
        for i in 0..5 {
            let mut record = admission(i);
            record.decision = "denied".into();
            forged.push(chain.seal(record).expect("seals"));
        }
        // The checkpoint re-pointed at the forged head keeps its signature.
        let mut checkpoint: Record = serde_json::from_slice(&lines[6]).expect("a record");
        checkpoint.prev = hex::encode(chain.head());
        forged.push(serde_json::to_vec(&checkpoint).expect("encodes"));
        forged.extend(lines[7..].iter().cloned());
        let (_, problem) = verify_lines(&joined(&forged), None).expect_err("forged");
        assert_eq!(problem.first_bad().as_deref(), Some("3-7"));
        assert!(matches!(problem, Problem::BadCheckpoint { .. }), "{problem}");
    }

    #[test]
    fn a_log_cut_by_retention_verifies_from_its_checkpoint() {
        let lines = log(5);
        assert!(verify_lines(&joined(&lines[6..]), None).is_ok());
        let (_, problem) = verify_lines(&joined(&lines[7..]), None).expect_err("no anchor");
        assert_eq!(problem, Problem::Unanchored { node: 3, seq: 8 });
    }

    #[test]
    fn a_line_that_is_not_a_record_is_reported_by_line() {
        let mut lines = log(2);
        lines[2] = b"{\"seq\": 3".to_vec();
        let (_, problem) = verify_lines(&joined(&lines), None).expect_err("garbage");
        assert!(matches!(problem, Problem::Undecodable { line: 3, .. }), "{problem}");
    }

    #[test]
    fn a_record_over_the_bound_is_cut_to_fit_and_says_so() {
        let mut chain = Chain::new(1);
        let record = Record { detail: "\u{1}".repeat(RECORD_BYTES_MAX), tenant: "é".repeat(5000), ..admission(0) };
        let line = chain.seal(record).expect("cut to fit");
        assert!(line.len() <= RECORD_BYTES_MAX);
        let sealed: Record = serde_json::from_slice(&line).expect("a record");
        assert!(sealed.detail.starts_with("record cut from"), "{}", sealed.detail);
        assert_eq!(sealed.tenant.len(), 96);
        assert!(verify_lines(&line, None).is_ok());
    }

    proptest::proptest! {
        /// Any bit flipped anywhere up to the last checkpoint is caught.
        #[test]
        fn any_flipped_bit_before_the_last_checkpoint_is_caught(position in 0usize..4096, bit in 0u8..8) {
            let lines = log(3);
            // Lines 1..=5: checkpoint, three admissions, checkpoint.
            let covered = joined(&lines[..5]).len();
            let mut text = joined(&lines);
            text[position % covered] ^= 1 << bit;
            proptest::prop_assert!(verify_lines(&text, None).is_err());
        }
    }
}
