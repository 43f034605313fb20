//! Keel client.
