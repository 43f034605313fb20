//! Who answered: the response metadata every Keel RPC carries.
//!
//! The server sets `keel-node-id`, `keel-region`, `keel-revision` and, when
//! it knows one, `keel-leader` on every response. Missing or
//! malformed headers become `None` here rather than errors: the response
//! itself is still good, and the metadata is informational.

use tonic::metadata::MetadataMap;

/// Header naming the node that served the call.
pub const NODE_ID_HEADER: &str = "keel-node-id";
/// Header naming that node's region.
pub const REGION_HEADER: &str = "keel-region";
/// Header with the revision (Raft index) the response reflects.
pub const REVISION_HEADER: &str = "keel-revision";
/// Header naming the leader, when the serving node knows it.
pub const LEADER_HEADER: &str = "keel-leader";

/// Where and at which revision a response was served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseMeta {
    /// The serving node's id.
    pub node_id: Option<u64>,
    /// The serving node's region.
    pub region: Option<String>,
    /// The revision the response reflects.
    pub revision: Option<u64>,
    /// The leader as the serving node reported it (its node id).
    pub leader: Option<String>,
}

impl ResponseMeta {
    /// Reads the `keel-*` headers.
    pub fn from_metadata(metadata: &MetadataMap) -> Self {
        let text = |name: &str| {
            metadata
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        };
        ResponseMeta {
            node_id: text(NODE_ID_HEADER).and_then(|value| value.parse().ok()),
            region: text(REGION_HEADER),
            revision: text(REVISION_HEADER).and_then(|value| value.parse().ok()),
            leader: text(LEADER_HEADER),
        }
    }

    /// The leader's node id, when the `keel-leader` header is a number.
    pub fn leader_id(&self) -> Option<u64> {
        self.leader.as_deref().and_then(|leader| leader.parse().ok())
    }
}

impl std::fmt::Display for ResponseMeta {
    /// `served by node 1 in region local at revision 12`, leaving out what is unknown.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.node_id {
            Some(node_id) => write!(formatter, "served by node {node_id}")?,
            None => write!(formatter, "served by an unidentified node")?,
        }
        if let Some(region) = &self.region {
            write!(formatter, " in region {region}")?;
        }
        if let Some(revision) = self.revision {
            write!(formatter, " at revision {revision}")?;
        }
        Ok(())
    }
}

/// A response value with the metadata of the response that carried it.
#[derive(Debug, Clone, PartialEq)]
pub struct Served<T> {
    /// The response message (or, for the "every page" helpers, the items).
    pub value: T,
    /// Who served it. For multi-page results, the last page's metadata.
    pub meta: ResponseMeta,
}

impl<T> Served<T> {
    /// Splits a tonic response into its message and metadata.
    pub fn from_response(response: tonic::Response<T>) -> Self {
        let meta = ResponseMeta::from_metadata(response.metadata());
        Served { value: response.into_inner(), meta }
    }

    /// Transforms the value, keeping the metadata.
    pub fn map<U>(self, transform: impl FnOnce(T) -> U) -> Served<U> {
        Served { value: transform(self.value), meta: self.meta }
    }

    /// The value alone.
    pub fn into_value(self) -> T {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn reads_every_header() {
        let mut metadata = MetadataMap::new();
        metadata.insert(NODE_ID_HEADER, MetadataValue::from_static("1"));
        metadata.insert(REGION_HEADER, MetadataValue::from_static("local"));
        metadata.insert(REVISION_HEADER, MetadataValue::from_static("12"));
        metadata.insert(LEADER_HEADER, MetadataValue::from_static("3"));
        let meta = ResponseMeta::from_metadata(&metadata);
        assert_eq!(
            meta,
            ResponseMeta {
                node_id: Some(1),
                region: Some("local".into()),
                revision: Some(12),
                leader: Some("3".into())
            }
        );
        assert_eq!(meta.leader_id(), Some(3));
        assert_eq!(meta.to_string(), "served by node 1 in region local at revision 12");
    }

    #[test]
    fn malformed_or_missing_headers_are_none() {
        let mut metadata = MetadataMap::new();
        metadata.insert(NODE_ID_HEADER, MetadataValue::from_static("one"));
        metadata.insert(REGION_HEADER, MetadataValue::from_static(""));
        let meta = ResponseMeta::from_metadata(&metadata);
        assert_eq!(meta, ResponseMeta::default());
        assert_eq!(meta.to_string(), "served by an unidentified node");
    }
}
