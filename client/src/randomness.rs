//! The client's one source of randomness (retry jitter, idempotency keys):
//! from the OS by default, or from a seed ([`ClientConfig::with_seed`]) so a
//! test or a simulation replays the same keys and delays.
//!
//! [`ClientConfig::with_seed`]: crate::ClientConfig::with_seed

use crate::retry::JITTER_SCALE;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::sync::Mutex;

/// A client's random number generator, shared by its clones.
#[derive(Debug)]
pub(crate) struct Randomness(Mutex<StdRng>);

impl Randomness {
    /// Seeded from `seed`, else from the OS.
    pub(crate) fn new(seed: Option<u64>) -> Randomness {
        Randomness(Mutex::new(match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        }))
    }

    fn rng(&self) -> std::sync::MutexGuard<'_, StdRng> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A uniformly random jitter in `0..=JITTER_SCALE`.
    pub(crate) fn jitter(&self) -> u64 {
        self.rng().gen_range(0..=JITTER_SCALE)
    }

    /// A fresh idempotency key: 128 random bits, hex. Every mutating call of
    /// the client sends one (unless the caller set its own), so the call's
    /// own retries after a lost answer apply the change once.
    pub(crate) fn idempotency_key(&self) -> String {
        let mut bytes = [0u8; 16];
        self.rng().fill_bytes(&mut bytes);
        format!("kc-{}", hex::encode(bytes))
    }

    /// `key`, or a fresh key when it is empty.
    pub(crate) fn key_or_new(&self, key: String) -> String {
        if key.is_empty() { self.idempotency_key() } else { key }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_keys_and_jitter() {
        let (a, b) = (Randomness::new(Some(7)), Randomness::new(Some(7)));
        assert_eq!(a.idempotency_key(), b.idempotency_key());
        assert_eq!(a.jitter(), b.jitter());
        assert_ne!(Randomness::new(Some(8)).idempotency_key(), Randomness::new(Some(7)).idempotency_key());
        assert_eq!(a.key_or_new("mine".into()), "mine");
    }
}
