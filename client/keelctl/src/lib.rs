//! `keelctl`, the Keel command line, as a library: every command group in
//! [`cli`], over `keel-client`. Its own crate, so users of the client
//! library do not compile clap or the certificate tooling.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cli;
