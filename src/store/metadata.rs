//! What an event records about how its command came, beside the event itself: the surface
//! (`via`), who or what issued it (`actor`), the request it answered (`request_id`) and the
//! event that caused it (`caused_by`). Never business facts: policies and projections read
//! payloads, not this.

use std::collections::{BTreeMap, HashMap};

/// A command's metadata, built by name and handed to the store as the map cqrs-es records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub via: Option<String>,
    pub actor: Option<String>,
    pub request_id: Option<String>,
    pub caused_by: Option<String>,
    /// What one surface alone records: a user agent, a Slack retry number or member, an
    /// email link's nonce.
    pub extra: BTreeMap<&'static str, String>,
}

impl Metadata {
    /// A command that came through `via` (`page`, `api`, `slack`, `email`, `cli`…).
    pub fn via(via: &str) -> Self {
        Self {
            via: Some(via.to_string()),
            ..Self::default()
        }
    }

    /// A command a part of ExecOps issued on its own (`router`, `executor`, `deadlines`…).
    pub fn by(actor: &str) -> Self {
        Self::default().actor(actor)
    }

    pub fn actor(mut self, actor: &str) -> Self {
        self.actor = Some(actor.to_string());
        self
    }

    /// The request it answered, when the request said (`x-request-id`).
    pub fn request(mut self, request_id: Option<&str>) -> Self {
        self.request_id = request_id.map(str::to_string);
        self
    }

    pub fn caused_by(mut self, cause: impl Into<String>) -> Self {
        self.caused_by = Some(cause.into());
        self
    }

    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.extra.insert(key, value.into());
        self
    }
}

impl From<Metadata> for HashMap<String, String> {
    fn from(metadata: Metadata) -> Self {
        let named = [
            ("via", metadata.via),
            ("actor", metadata.actor),
            ("request_id", metadata.request_id),
            ("caused_by", metadata.caused_by),
        ];
        named
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_string(), value?)))
            .chain(
                metadata
                    .extra
                    .into_iter()
                    .map(|(key, value)| (key.to_string(), value)),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_was_said_is_recorded_under_its_name() {
        let map: HashMap<String, String> = Metadata::via("page")
            .actor("ana@example.com")
            .request(Some("req-1"))
            .with("link_nonce", "n1")
            .into();
        assert_eq!(
            map,
            HashMap::from([
                ("via".to_string(), "page".to_string()),
                ("actor".to_string(), "ana@example.com".to_string()),
                ("request_id".to_string(), "req-1".to_string()),
                ("link_nonce".to_string(), "n1".to_string()),
            ])
        );
        let none: HashMap<String, String> = Metadata::by("router").request(None).into();
        assert_eq!(none.len(), 1);
    }
}
