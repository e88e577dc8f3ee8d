//! Signed deliveries as Preservica sends them, and the random ids they carry.

use preservica_webhook_core::{DeliveryKey, Secret, sign};
use rand::Rng as _;

/// The secret the tests share between sender and receiver.
pub const SECRET: &str = "my_shared_secret";

/// The captured Preservica 6.10 delivery body.
pub const CAPTURED: &str = r#"{"subscriptionId":"9495ddbf7d4a0b9f030a3411c87f967d","timestamp":"2023-10-11T10:52:42.469","tenant":"BRAMA","version":"6.10","events":[{"event":"FullTextIndexed","entityType":"IO","entityRef":"7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2","identifiers":[]}],"trigger":"FULL_TEXT_INDEXED"}"#;

/// The `Preservica-Signature` value of `body` under `secret`.
///
/// # Panics
/// When `secret` is empty.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let secret = Secret::new(secret).expect("a test secret is not empty");
    sign(&secret, body).to_hex()
}

/// 32 random lowercase hex digits, like Preservica's ids and challenge codes.
pub fn random_hex() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

/// A random version-4-shaped UUID, like Preservica's entity references.
pub fn random_uuid() -> String {
    let hex = random_hex();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// One event of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `IO` (asset), `SO` (folder) or `CO`.
    pub entity_type: &'static str,
    /// The entity's reference.
    pub entity_ref: String,
}

impl Event {
    /// An asset event with a fresh reference.
    pub fn asset() -> Event {
        Event {
            entity_type: "IO",
            entity_ref: random_uuid(),
        }
    }

    /// A folder event with a fresh reference.
    pub fn folder() -> Event {
        Event {
            entity_type: "SO",
            entity_ref: random_uuid(),
        }
    }

    /// An asset event whose UUID-shaped reference is made of the numbers given, so a load
    /// generator gets unique references without a random source.
    pub fn numbered(nonce: u32, stream: usize, index: usize, sequence: u64) -> Event {
        Event {
            entity_type: "IO",
            entity_ref: format!(
                "{nonce:08x}-{:04x}-4{:03x}-8000-{:012x}",
                stream & 0xffff,
                index & 0xfff,
                sequence & 0xffff_ffff_ffff
            ),
        }
    }
}

/// A delivery body, its key, and the references it carries.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The body as sent.
    pub bytes: Vec<u8>,
    /// Its delivery key (SHA-256 of the bytes, hex), as the inbox lists it.
    pub key: String,
    /// The entity references of its events, in order.
    pub refs: Vec<String>,
}

impl Delivery {
    /// A body in the captured shape, one event per entry of `events`. Bodies with fresh
    /// references ([`Event::asset`]) are unique, so a receiver never takes one for a
    /// redelivery.
    pub fn new(subscription_id: &str, trigger: &str, events: &[Event]) -> Delivery {
        let event = match trigger {
            "FULL_TEXT_INDEXED" => "FullTextIndexed",
            "MOVED" => "Moved",
            "CHANGED_SECURITY_DESCRIPTOR" => "ChangedSecurityDescriptor",
            "INGEST_FAILED" => "IngestFailed",
            _ => "Unknown",
        };
        let listed: Vec<serde_json::Value> = events
            .iter()
            .map(|it| {
                serde_json::json!({
                    "event": event,
                    "entityType": it.entity_type,
                    "entityRef": it.entity_ref,
                    "identifiers": [],
                })
            })
            .collect();
        let body = serde_json::json!({
            "subscriptionId": subscription_id,
            "timestamp": "2026-01-24T09:15:03.469",
            "tenant": crate::standin::TENANT,
            "version": "7.7",
            "events": listed,
            "trigger": trigger,
        });
        let bytes = serde_json::to_vec(&body).expect("JSON values serialize");
        Delivery {
            key: DeliveryKey::of(&bytes).to_hex(),
            bytes,
            refs: events.iter().map(|it| it.entity_ref.clone()).collect(),
        }
    }

    /// `count` asset events with fresh references, for trigger `FULL_TEXT_INDEXED`.
    pub fn assets(subscription_id: &str, count: usize) -> Delivery {
        let events: Vec<Event> = (0..count).map(|_| Event::asset()).collect();
        Delivery::new(subscription_id, "FULL_TEXT_INDEXED", &events)
    }

    /// The signature of the body under `secret`.
    pub fn signature(&self, secret: &str) -> String {
        signature(secret, &self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_carry_their_references_and_are_keyed_by_their_bytes() {
        let events = [Event::asset(), Event::folder(), Event::numbered(7, 1, 2, 3)];
        let delivery = Delivery::new("sub", "MOVED", &events);
        let parsed = preservica_webhook_core::Delivery::from_slice(&delivery.bytes).unwrap();
        assert_eq!(parsed.events.len(), 3);
        assert_eq!(parsed.subscription_id.unwrap().as_str(), "sub");
        assert_eq!(delivery.refs[2], "00000007-0001-4002-8000-000000000003");
        assert_eq!(delivery.key, DeliveryKey::of(&delivery.bytes).to_hex());
        assert_ne!(
            Delivery::assets("sub", 1).key,
            Delivery::assets("sub", 1).key
        );
        let secrets = [Secret::new(SECRET).unwrap()];
        let header = delivery.signature(SECRET);
        let verified = preservica_webhook_core::verify(&secrets, &delivery.bytes, Some(&header));
        assert!(matches!(verified, Ok(0)), "{verified:?}");
    }
}
