//! `keel-client`: a typed client of Keel's public gRPC API (`keel.v1`) and
//! the library behind `keelctl`.
//!
//! This crate is an independent client of the public API, like a client in
//! any other language: it depends on the generated protobuf code
//! (`keel-proto`) and never on the server's crates. Signing payloads are
//! rebuilt here from the rules documented in the `.proto` files.
//!
//! ```text
//!   KeyPair ─┬─ KeySpec::add_key_request ──────────┐
//!            └─ SignedManifest::sign ─ bundle file ─┤
//!                                                   ▼
//!   ClientConfig ─▶ KeelClient ── typed calls (trust, registry, tenant, cluster + membership)
//!                     │  RoutingTable: configured + discovered endpoints; leader / region / sticky
//!                     │  Connection: a kept channel per endpoint, HTTP/2 keep-alive
//!                     │  deadline per call, bounded retries (retry), leader redirects
//!                     ▼
//!                   Served<T>{value, meta: ResponseMeta}  |  ClientError{reason, …}
//! ```
//!
//! Map of the crate:
//! - [`client`]: [`KeelClient`], [`ClientConfig`], the call loop and paging;
//!   `trust`, `registry`, `tenant` and `cluster` add one typed method per RPC.
//! - `routing` (private): the known endpoints and which one each kind of
//!   call prefers; `connection` (private): the channels; [`retry`]: which
//!   failures are retried and the backoff.
//! - [`events`]: publishing user events, [`events::EventWatch`] (a watch
//!   that resumes on another member where it broke), idempotency keys.
//! - [`served`]: [`Served`] and [`ResponseMeta`] (the `keel-*` headers).
//! - [`error`]: [`ClientError`], the one conversion from `tonic::Status`;
//!   [`local_error`]: [`LocalError`] for files and arguments.
//! - [`signing`]: payload rules; [`key_spec`]: [`KeySpec`]; [`key_pair`] and
//!   [`public_key`]: key files; [`signed_manifest`]: bundles;
//!   [`root_metadata`]: root rotation documents.
//! - [`tls`]: [`ClientTls`], TLS to `https://` endpoints (cluster CA, optional client certificate).
//! - [`token`]: capability tokens — issuing them, and the bearer token every call sends.
//! - [`limits`]: every bound as a named constant.
//! - [`cli`]: the `keelctl` command line (the binary only parses and runs it).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admission;
mod audit;
#[cfg(test)]
mod call_tests;
#[cfg(feature = "certs")]
pub mod certs;
pub mod client;
mod cluster;
mod connection;
pub mod error;
pub mod events;
/// A scripted in-process Keel node for tests (feature `test-util`).
#[cfg(any(test, feature = "test-util"))]
#[allow(missing_docs)]
pub mod fake_node;
pub mod key_pair;
pub mod key_spec;
pub mod limits;
pub mod local_error;
pub mod local_file;
mod policy;
pub mod public_key;
mod randomness;
mod registry;
pub mod retry;
pub mod root_metadata;
mod routing;
#[cfg(test)]
mod routing_tests;
pub mod served;
pub mod signed_manifest;
pub mod signing;
mod tenant;
pub mod tls;
pub mod token;
mod trust;

/// The generated `keel.v1` protobuf types.
pub use keel_proto::v1 as pb;

pub use client::{ClientConfig, KeelClient};
pub use error::{ClientError, ErrorClass};
pub use key_pair::{KeyFilePaths, KeyPair};
pub use key_spec::KeySpec;
pub use local_error::LocalError;
pub use public_key::PublicKey;
pub use served::{ResponseMeta, Served};
pub use signed_manifest::SignedManifest;
pub use tls::ClientTls;
