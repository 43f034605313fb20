//! Persistent (structurally shared) collections for [`KernelState`]:
//! imbl's `OrdMap`, `OrdSet` and `Vector` behind newtypes that encode
//! exactly as `BTreeMap`, `BTreeSet` and `VecDeque` do.
//!
//! A clone shares the whole tree and a write copies only the path it
//! changes, so the node can publish a fresh state per applied batch without
//! copying the state. Iteration is in key order, as before.
//!
//! They decode through the std collections on purpose: imbl's own serde
//! support trusts a sequence's declared length and allocates it up front,
//! so a snapshot claiming 2^64 entries would abort the process; serde's std
//! impls cap what they preallocate and fail on the missing bytes instead.
//!
//! [`KernelState`]: crate::KernelState

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::{Deref, DerefMut};

/// An ordered map; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map<K: Ord + Clone, V: Clone>(imbl::OrdMap<K, V>);

/// An ordered set; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set<A: Ord + Clone>(imbl::OrdSet<A>);

/// A sequence; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seq<A: Clone>(imbl::Vector<A>);

impl<K: Ord + Clone, V: Clone> Default for Map<K, V> {
    fn default() -> Self {
        Map(imbl::OrdMap::new())
    }
}

impl<A: Ord + Clone> Default for Set<A> {
    fn default() -> Self {
        Set(imbl::OrdSet::new())
    }
}

impl<A: Clone> Default for Seq<A> {
    fn default() -> Self {
        Seq(imbl::Vector::new())
    }
}

impl<K: Ord + Clone, V: Clone> Deref for Map<K, V> {
    type Target = imbl::OrdMap<K, V>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<K: Ord + Clone, V: Clone> DerefMut for Map<K, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<A: Ord + Clone> Deref for Set<A> {
    type Target = imbl::OrdSet<A>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<A: Ord + Clone> DerefMut for Set<A> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<A: Clone> Deref for Seq<A> {
    type Target = imbl::Vector<A>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<A: Clone> DerefMut for Seq<A> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<K: Ord + Clone + Serialize, V: Clone + Serialize> Serialize for Map<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter())
    }
}

impl<'de, K: Ord + Clone + Deserialize<'de>, V: Clone + Deserialize<'de>> Deserialize<'de> for Map<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Map(BTreeMap::<K, V>::deserialize(deserializer)?.into_iter().collect()))
    }
}

impl<A: Ord + Clone + Serialize> Serialize for Set<A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

impl<'de, A: Ord + Clone + Deserialize<'de>> Deserialize<'de> for Set<A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Set(BTreeSet::<A>::deserialize(deserializer)?.into_iter().collect()))
    }
}

impl<A: Clone + Serialize> Serialize for Seq<A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

impl<'de, A: Clone + Deserialize<'de>> Deserialize<'de> for Seq<A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Seq(VecDeque::<A>::deserialize(deserializer)?.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn they_encode_as_the_std_collections_do() {
        let std_map: BTreeMap<String, u32> = [("b".to_owned(), 2), ("a".to_owned(), 1)].into_iter().collect();
        let map: Map<String, u32> = Map(std_map.clone().into_iter().collect());
        let std_set: BTreeSet<(u64, String)> = [(2, "x".to_owned()), (1, "y".to_owned())].into_iter().collect();
        let set: Set<(u64, String)> = Set(std_set.clone().into_iter().collect());
        let std_seq: VecDeque<u32> = [3, 1, 2].into_iter().collect();
        let seq: Seq<u32> = Seq(std_seq.clone().into_iter().collect());
        let encode = |value: &dyn erased::Encode| value.bytes();
        assert_eq!(encode(&map), encode(&std_map));
        assert_eq!(encode(&set), encode(&std_set));
        assert_eq!(encode(&seq), encode(&std_seq));
        let decoded: Map<String, u32> = bincode::deserialize(&encode(&std_map)).unwrap_or_default();
        assert_eq!(decoded, map);
        let decoded: Seq<u32> = bincode::deserialize(&encode(&std_seq)).unwrap_or_default();
        assert_eq!(decoded, seq);
    }

    #[test]
    fn a_huge_declared_length_fails_instead_of_allocating() {
        let bytes = u64::MAX.to_le_bytes();
        assert!(bincode::deserialize::<Map<String, u32>>(&bytes).is_err());
        assert!(bincode::deserialize::<Set<u64>>(&bytes).is_err());
        assert!(bincode::deserialize::<Seq<u64>>(&bytes).is_err());
    }

    mod erased {
        pub trait Encode {
            fn bytes(&self) -> Vec<u8>;
        }
        impl<T: serde::Serialize> Encode for T {
            fn bytes(&self) -> Vec<u8> {
                bincode::serialize(self).unwrap_or_default()
            }
        }
    }
}
