//! Value types shared by the aggregates: ids, roles, urgency, verticals and the payload hash
//! that binds a decision to the exact action a person was shown.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;
use uuid::Uuid;

/// Namespace for proposal ids. Never change it: every stored proposal id is derived from it.
const PROPOSAL_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2d4e_9a3b_4c5d_8e7f_0a1b_2c3d_4e5f);

/// A proposal's id, derived from the inbound signal and the rule that drafted it, so a replay
/// or a redelivery of the same signal can never draft the same proposal twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProposalId(Uuid);

impl ProposalId {
    pub fn derive(inbound_id: &str, rule: &str) -> Self {
        let name = format!("{inbound_id}\n{rule}");
        Self(Uuid::new_v5(&PROPOSAL_NAMESPACE, name.as_bytes()))
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The key sent to providers that deduplicate on one; stable for the proposal's life.
    pub fn idempotency_key(&self) -> String {
        format!("execops-{}", self.0)
    }
}

impl fmt::Display for ProposalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for ProposalId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// What a person may do. Viewers read; approvers decide; admins also manage people and guardrails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Approver,
    Viewer,
}

impl Role {
    pub fn may_decide(self) -> bool {
        matches!(self, Role::Admin | Role::Approver)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Approver => "approver",
            Role::Viewer => "viewer",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    Low,
    Medium,
    High,
    Critical,
}

/// The part of the company a proposal belongs to; each vertical has its own policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vertical {
    Money,
    Engineering,
    Customer,
    Growth,
    Ops,
}

/// SHA-256 (hex) of the canonical JSON of an action payload: object keys sorted at every
/// depth, no insignificant white space. Two payloads that mean the same hash the same,
/// whatever order their keys were built in.
pub fn payload_hash(payload: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(payload, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Appends `value` as canonical JSON: object keys sorted at every depth, no white space.
pub fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_hash_ignores_key_order_at_every_depth() {
        let a = json!({"to": "a@b.c", "body": {"x": 1, "y": [1, {"k": 2, "j": 3}]}});
        let b = json!({"body": {"y": [1, {"j": 3, "k": 2}], "x": 1}, "to": "a@b.c"});
        assert_eq!(payload_hash(&a), payload_hash(&b));
    }

    #[test]
    fn payload_hash_changes_when_a_value_changes() {
        let a = json!({"amount": 1000});
        let b = json!({"amount": 1001});
        assert_ne!(payload_hash(&a), payload_hash(&b));
    }

    #[test]
    fn proposal_id_is_stable_per_inbound_and_rule() {
        let a = ProposalId::derive("stripe:evt_1", "money.card_update_email");
        let b = ProposalId::derive("stripe:evt_1", "money.card_update_email");
        let c = ProposalId::derive("stripe:evt_1", "money.owner_dm");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.idempotency_key(), b.idempotency_key());
    }
}
