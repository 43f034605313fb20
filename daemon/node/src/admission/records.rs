//! Idempotency records of admissions kept in this process: without Redis (or
//! while it is down, in `fail_open` and `local`), a retry of an admitted
//! call on this member is answered with the first decision and not charged
//! again. With Redis the records live there (`redis_limiter`), so a retry on
//! any member is charged once.
//!
//! At most `ADMISSION_RECORDS_LOCAL_MAX` records; every record lives
//! `ADMISSION_IDEMPOTENCY_WINDOW_MS`, so the oldest is the first to expire,
//! and when full the oldest goes first (its window is cut short).

use crate::limits::ADMISSION_RECORDS_LOCAL_MAX;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Key = (String, String);

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<Key, (Instant, Vec<u8>)>,
    /// Keys by insertion, which is also expiry order.
    order: VecDeque<(Key, Instant)>,
}

/// What [`LocalRecords::admit`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded<T, E> {
    /// The key was seen: the first decision, nothing charged.
    Replayed(Vec<u8>),
    /// The check ran (and, when it admitted, its decision was recorded).
    Checked(Result<T, E>),
}

/// The records.
#[derive(Debug, Default)]
pub struct LocalRecords {
    inner: Mutex<Inner>,
}

impl LocalRecords {
    /// The decision recorded under `tenant`'s `key`, if any.
    pub fn get(&self, tenant: &str, key: &str) -> Option<Vec<u8>> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.expire(Instant::now());
        inner.records.get(&(tenant.to_owned(), key.to_owned())).map(|(_, value)| value.clone())
    }

    /// Answers from the record of `tenant`'s `key`, or runs `check` and
    /// records `value` for `ttl` when it admits; one critical section, so
    /// two concurrent retries on this member are charged once.
    pub fn admit<T, E>(
        &self,
        tenant: &str,
        key: &str,
        value: &[u8],
        ttl: Duration,
        check: impl FnOnce() -> Result<T, E>,
    ) -> Recorded<T, E> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.expire(now);
        let id = (tenant.to_owned(), key.to_owned());
        if let Some((_, value)) = inner.records.get(&id) {
            return Recorded::Replayed(value.clone());
        }
        let checked = check();
        if checked.is_ok() {
            while inner.records.len() >= ADMISSION_RECORDS_LOCAL_MAX {
                let Some((oldest, _)) = inner.order.pop_front() else { break };
                inner.records.remove(&oldest);
            }
            let expires = now + ttl;
            inner.records.insert(id.clone(), (expires, value.to_vec()));
            inner.order.push_back((id, expires));
        }
        Recorded::Checked(checked)
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while let Some((_, expires)) = self.order.front()
            && *expires <= now
        {
            if let Some((key, _)) = self.order.pop_front() {
                self.records.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_answered_from_the_record_and_not_checked_again() {
        let records = LocalRecords::default();
        let ttl = Duration::from_secs(60);
        let mut checks = 0;
        let first = records.admit("acme", "k1", b"first", ttl, || {
            checks += 1;
            Ok::<_, ()>(())
        });
        assert_eq!(first, Recorded::Checked(Ok(())));
        let again = records.admit("acme", "k1", b"second", ttl, || {
            checks += 1;
            Ok::<_, ()>(())
        });
        assert_eq!(again, Recorded::Replayed(b"first".to_vec()));
        assert_eq!(checks, 1);
        // Keys are per tenant.
        assert_eq!(records.get("other", "k1"), None);
    }

    #[test]
    fn a_refusal_is_not_recorded() {
        let records = LocalRecords::default();
        let ttl = Duration::from_secs(60);
        assert_eq!(
            records.admit("acme", "k", b"x", ttl, || Err::<(), _>("limited")),
            Recorded::Checked(Err("limited"))
        );
        assert_eq!(records.get("acme", "k"), None);
    }

    #[test]
    fn records_expire() {
        let records = LocalRecords::default();
        let _ = records.admit("acme", "k", b"x", Duration::ZERO, || Ok::<_, ()>(()));
        assert_eq!(records.get("acme", "k"), None);
    }
}
