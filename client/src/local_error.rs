//! Errors in local input: key files, manifests, bundles, flags.
//!
//! Everything here is found before a request is sent, so none of it is ever
//! retried. Each variant names the file or field at fault so that the user
//! can fix it without guessing.

use std::path::PathBuf;

/// A problem with input the caller supplied locally.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    FileRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    FileWrite {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is larger than this kind of file may be.
    #[error("{} is larger than {bytes_max} bytes", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The bound for this kind of file.
        bytes_max: u64,
    },
    /// A document is not valid JSON or does not have the expected shape.
    #[error("{source_name}: {source}")]
    JsonInvalid {
        /// The file or argument the JSON came from.
        source_name: String,
        /// The parser's complaint (it names line and column).
        source: serde_json::Error,
    },
    /// A field has a malformed value.
    #[error("{source_name}: field `{field}` {problem}")]
    FieldInvalid {
        /// The file or argument the field came from.
        source_name: String,
        /// The field, e.g. `public_key` or `signatures[1].signature`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A manifest is not a JSON object.
    #[error("{source_name}: a manifest must be a JSON object")]
    ManifestNotObject {
        /// The file or argument the manifest came from.
        source_name: String,
    },
    /// A manifest's canonical form is larger than the server accepts.
    #[error("{source_name}: canonical manifest is {bytes} bytes; at most {bytes_max} are accepted")]
    ManifestTooLarge {
        /// The file or argument the manifest came from.
        source_name: String,
        /// Canonical size.
        bytes: usize,
        /// [`crate::limits::MANIFEST_BYTES_MAX`].
        bytes_max: usize,
    },
    /// A value could not be put in RFC 8785 canonical form.
    #[error("{what}: cannot canonicalise as RFC 8785 JSON: {detail}")]
    CanonicalizeFailed {
        /// What was being canonicalised.
        what: String,
        /// The canonicaliser's complaint.
        detail: String,
    },
    /// More signatures than one request may carry.
    #[error("{source_name}: {count} signatures; at most {count_max} are accepted")]
    TooManySignatures {
        /// The bundle.
        source_name: String,
        /// Signatures it would hold.
        count: usize,
        /// [`crate::limits::SIGNATURES_PER_REQUEST_MAX`].
        count_max: usize,
    },
    /// An argument has a malformed or inconsistent value.
    #[error("argument `{argument}` {problem}")]
    ArgumentInvalid {
        /// The argument or flag, e.g. `--not-after`.
        argument: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A certificate, private key or CA bundle cannot be used.
    #[error("{source_name}: {problem}")]
    CertificateInvalid {
        /// The file or argument the certificate or key came from.
        source_name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A certificate or key could not be generated or signed.
    #[cfg(feature = "certs")]
    #[error("{what}: {source}")]
    CertificateGeneration {
        /// What was being produced, e.g. `certificate for node-1`.
        what: String,
        /// rcgen's complaint.
        source: rcgen::Error,
    },
}
