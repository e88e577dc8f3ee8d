//! Payload models: subscriptions (management API) and deliveries (what a receiver gets).
//!
//! Every model is lenient: unknown fields are kept in `extra`, missing optional fields are
//! `None`, and nothing Preservica may add later makes parsing fail.

use std::fmt;

use chrono::NaiveDateTime;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::signing::Secret;
use crate::wire::{EntityType, TriggerType};

/// A subscription's id as Preservica assigns it (32 lowercase hex digits in every example;
/// treated as opaque).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubscriptionId(String);

impl SubscriptionId {
    /// Wraps an id string.
    pub fn new(id: impl Into<String>) -> SubscriptionId {
        SubscriptionId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An entity's reference (a UUID in every Preservica example), checked once at the edge so it
/// is safe as a URL path segment and as a file name: 1 to 200 ASCII letters, digits, `-`, `_`
/// and `.`, not starting with `.`.
///
/// ```
/// use preservica_webhook_core::EntityRef;
///
/// let reference: EntityRef = "7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2".parse()?;
/// assert_eq!(reference.as_str(), "7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2");
/// assert!("../etc/passwd".parse::<EntityRef>().is_err());
/// # Ok::<(), preservica_webhook_core::InvalidEntityRef>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EntityRef(String);

/// Why a text is not an [`EntityRef`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an entity reference; a reference is 1 to 200 letters, digits, '-', '_' or '.' \
     (a UUID such as 7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2)"
)]
pub struct InvalidEntityRef(String);

/// The longest reference accepted.
const MAX_ENTITY_REF_LEN: usize = 200;

impl EntityRef {
    /// Checks a reference; surrounding whitespace is ignored.
    ///
    /// # Errors
    /// [`InvalidEntityRef`] when it is empty, too long, starts with `.` or holds another
    /// character.
    pub fn new(text: &str) -> Result<EntityRef, InvalidEntityRef> {
        let text = text.trim();
        let usable = !text.is_empty()
            && text.len() <= MAX_ENTITY_REF_LEN
            && !text.starts_with('.')
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if usable {
            Ok(EntityRef(text.to_owned()))
        } else {
            let shown: String = text.chars().take(MAX_ENTITY_REF_LEN).collect();
            Err(InvalidEntityRef(shown))
        }
    }

    /// The reference as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for EntityRef {
    type Err = InvalidEntityRef;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntityRef::new(s)
    }
}

/// A subscription as the management API returns it (create and list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Preservica's id for the subscription.
    pub id: SubscriptionId,
    /// Where deliveries are sent.
    #[serde(default)]
    pub url: String,
    /// What the subscription listens for; `None` if the server did not say.
    #[serde(default)]
    pub trigger_type: Option<TriggerType>,
    /// Whether deliveries carry the entities' identifiers. Accepts `true` and `"true"`.
    #[serde(default, deserialize_with = "bool_or_string")]
    pub include_identifiers: bool,
    /// Fields this version does not know, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The body of a create-subscription request.
///
/// Serializes to `{"url","triggerType","secret","includeIdentifiers"}`; its `Debug` does not
/// show the secret.
#[derive(Debug, Clone, Copy)]
pub struct NewSubscription<'a> {
    /// Where Preservica is to send deliveries.
    pub url: &'a str,
    /// What to listen for.
    pub trigger_type: &'a TriggerType,
    /// The secret Preservica signs with.
    pub secret: &'a Secret,
    /// Whether deliveries are to carry identifiers.
    pub include_identifiers: bool,
}

impl Serialize for NewSubscription<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut state = serializer.serialize_struct("NewSubscription", 4)?;
        state.serialize_field("url", self.url)?;
        state.serialize_field("triggerType", self.trigger_type)?;
        state.serialize_field("secret", self.secret.insecure_expose())?;
        state.serialize_field("includeIdentifiers", &self.include_identifiers)?;
        state.end()
    }
}

/// One notification POST from Preservica: who sent it, what fired, and the events.
///
/// ```
/// use preservica_webhook_core::{Delivery, EntityType, TriggerType};
///
/// let body = br#"{"subscriptionId":"9495ddbf7d4a0b9f030a3411c87f967d","timestamp":"2023-10-11T10:52:42.469","tenant":"BRAMA","version":"6.10","events":[{"event":"FullTextIndexed","entityType":"IO","entityRef":"7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2","identifiers":[]}],"trigger":"FULL_TEXT_INDEXED"}"#;
/// let delivery = Delivery::from_slice(body).unwrap();
/// assert_eq!(delivery.trigger, Some(TriggerType::FullTextIndexed));
/// assert_eq!(delivery.version.as_deref(), Some("6.10"));
/// assert_eq!(delivery.events[0].entity_type, Some(EntityType::Asset));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The subscription this delivery is for.
    #[serde(default)]
    pub subscription_id: Option<SubscriptionId>,
    /// The timestamp exactly as sent (no zone offset: see [`Delivery::timestamp`]).
    #[serde(default, rename = "timestamp")]
    pub timestamp_raw: Option<String>,
    /// The tenant the event happened in.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Preservica's version, as text (`"6.10"` is not `6.1`); a number is kept as written.
    #[serde(default, deserialize_with = "string_or_number")]
    pub version: Option<String>,
    /// What fired.
    #[serde(default)]
    pub trigger: Option<TriggerType>,
    /// The events; one delivery can carry several.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Fields this version does not know, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a body is not a [`Delivery`].
#[derive(Debug, thiserror::Error)]
#[error("the body is not a Preservica delivery")]
pub struct DecodeError {
    #[from]
    source: serde_json::Error,
}

impl Delivery {
    /// Parses a delivery body. Any JSON object parses; fields of the wrong type do not.
    ///
    /// # Errors
    /// A [`DecodeError`] when the bytes are not a JSON object of the delivery's shape.
    pub fn from_slice(body: &[u8]) -> Result<Delivery, DecodeError> {
        Ok(serde_json::from_slice(body)?)
    }

    /// The timestamp as a naive date-time (Preservica sends no zone offset; the server's
    /// clock is commonly UTC). A timestamp with an offset is converted to UTC. `None` when
    /// absent or unparseable; the raw text stays in [`Delivery::timestamp_raw`].
    pub fn timestamp(&self) -> Option<NaiveDateTime> {
        let raw = self.timestamp_raw.as_deref()?.trim();
        NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .or_else(|| {
                chrono::DateTime::parse_from_rfc3339(raw)
                    .ok()
                    .map(|it| it.naive_utc())
            })
    }

    /// True for a delivery filed by catch-up for a notification that was missed (see
    /// [`recovery`](crate::recovery)): `"recovered": true`, not signed by Preservica.
    pub fn is_recovered(&self) -> bool {
        self.extra.get("recovered") == Some(&Value::Bool(true))
    }

    /// The references of all events' entities, in order.
    pub fn entity_refs(&self) -> impl Iterator<Item = &str> {
        self.events
            .iter()
            .filter_map(|event| event.entity_ref.as_deref())
    }
}

/// One event in a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The event's name (`FullTextIndexed`, `Moved`, …).
    #[serde(default)]
    pub event: Option<String>,
    /// What kind of entity it is about.
    #[serde(default)]
    pub entity_type: Option<EntityType>,
    /// The entity's reference (a UUID).
    #[serde(default)]
    pub entity_ref: Option<String>,
    /// The entity's identifiers, when the subscription asked for them; element shape unknown,
    /// kept as JSON. A single non-array value is kept as a one-element list.
    #[serde(default, deserialize_with = "list_of_values")]
    pub identifiers: Vec<Value>,
    /// Fields this version does not know, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A delivery's identity for spotting redeliveries: SHA-256 of the raw body.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryKey([u8; 32]);

impl DeliveryKey {
    /// The key of a raw body.
    pub fn of(body: &[u8]) -> DeliveryKey {
        DeliveryKey(Sha256::digest(body).into())
    }

    /// The key whose digest is `bytes`, as a store kept it (see [`DeliveryKey::as_bytes`]).
    pub const fn from_bytes(bytes: [u8; 32]) -> DeliveryKey {
        DeliveryKey(bytes)
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    ///
    /// # Errors
    /// When the text is not 64 hex digits.
    pub fn from_hex(text: &str) -> Result<DeliveryKey, hex::FromHexError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)?;
        Ok(DeliveryKey(bytes))
    }
}

impl fmt::Debug for DeliveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeliveryKey({})", self.to_hex())
    }
}

impl fmt::Display for DeliveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

fn bool_or_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Bool(it) => Ok(it),
        Value::Null => Ok(false),
        Value::String(text) if text.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(text) if text.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(de::Error::custom(format!(
            "expected true or false, found {other}"
        ))),
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text)),
        Value::Number(number) => Ok(Some(number.to_string())),
        other => Err(de::Error::custom(format!(
            "expected a version string, found {other}"
        ))),
    }
}

fn list_of_values<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Value>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Null => Vec::new(),
        Value::Array(items) => items,
        other => vec![other],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_references_are_safe_as_path_segments_and_file_names() {
        let check = |input: &str, expected: Option<&str>| {
            let parsed = EntityRef::new(input).ok();
            assert_eq!(
                parsed.as_ref().map(EntityRef::as_str),
                expected,
                "{input:?}"
            );
        };
        check(
            "7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2",
            Some("7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2"),
        );
        check(" a1 ", Some("a1"));
        check("ref_2.v1", Some("ref_2.v1"));
        check(&"a".repeat(200), Some(&"a".repeat(200)));
        for bad in [
            "", "  ", "../x", "a/b", ".hidden", "a b", "x\0", "é", "a?b=c", "a%2F",
        ] {
            check(bad, None);
        }
        check(&"a".repeat(201), None);
        let err = EntityRef::new("a/b").unwrap_err().to_string();
        assert!(err.contains("\"a/b\" is not an entity reference"), "{err}");
    }

    #[test]
    fn subscription_accepts_boolean_or_string_identifiers_and_keeps_extra_fields() {
        let list: Vec<Subscription> = serde_json::from_str(
            r#"[{"id":"4583e1e6d2c72ed96a1151bc7dfd53c2","url":"https://example.org/dev","triggerType":"FULL_TEXT_INDEXED","includeIdentifiers":true},
                {"id":"b","url":"u","triggerType":"SOMETHING_NEW","includeIdentifiers":"true","createdBy":"admin"},
                {"id":"c"}]"#,
        )
        .unwrap();
        assert_eq!(list[0].id.as_str(), "4583e1e6d2c72ed96a1151bc7dfd53c2");
        assert_eq!(list[0].trigger_type, Some(TriggerType::FullTextIndexed));
        assert!(list[0].include_identifiers);
        assert_eq!(
            list[1].trigger_type,
            Some(TriggerType::Unknown("SOMETHING_NEW".to_owned()))
        );
        assert!(list[1].include_identifiers);
        assert_eq!(list[1].extra["createdBy"], "admin");
        assert_eq!(list[2].trigger_type, None);
        assert!(!list[2].include_identifiers);
    }

    #[test]
    fn new_subscription_serializes_to_the_create_request() {
        let secret = Secret::new("s3cret").unwrap();
        let request = NewSubscription {
            url: "https://example.org/hook",
            trigger_type: &TriggerType::FullTextIndexed,
            secret: &secret,
            include_identifiers: true,
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"url":"https://example.org/hook","triggerType":"FULL_TEXT_INDEXED","secret":"s3cret","includeIdentifiers":true}"#
        );
        assert!(!format!("{request:?}").contains("s3cret"));
    }

    #[test]
    fn delivery_keeps_unknown_fields_and_parses_loose_shapes() {
        let delivery = Delivery::from_slice(
            br#"{"subscriptionId":"x","version":7.1,"timestamp":"2026-01-24T09:15:03Z","oldParent":"p",
                 "events":[{"event":"Moved","entityType":"ZZ","entityRef":"r","identifiers":{"BatchId":"B"},"reason":"r2"}]}"#,
        )
        .unwrap();
        assert_eq!(delivery.version.as_deref(), Some("7.1"));
        assert_eq!(delivery.extra["oldParent"], "p");
        assert_eq!(delivery.trigger, None);
        assert_eq!(
            delivery.timestamp().unwrap().to_string(),
            "2026-01-24 09:15:03"
        );
        let event = &delivery.events[0];
        assert_eq!(
            event.entity_type,
            Some(EntityType::Unknown("ZZ".to_owned()))
        );
        assert_eq!(event.identifiers, vec![serde_json::json!({"BatchId":"B"})]);
        assert_eq!(event.extra["reason"], "r2");
    }

    #[test]
    fn naive_timestamp_keeps_milliseconds() {
        let delivery = Delivery::from_slice(br#"{"timestamp":"2023-10-11T10:52:42.469"}"#).unwrap();
        assert_eq!(
            delivery.timestamp().unwrap().to_string(),
            "2023-10-11 10:52:42.469"
        );
        let odd = Delivery::from_slice(br#"{"timestamp":"yesterday"}"#).unwrap();
        assert_eq!(odd.timestamp(), None);
        assert_eq!(odd.timestamp_raw.as_deref(), Some("yesterday"));
    }

    #[test]
    fn refuses_bodies_that_are_not_a_delivery_object() {
        for body in [
            &b"not json"[..],
            b"[1,2]",
            b"\"text\"",
            b"{\"events\":5}",
            b"",
        ] {
            assert!(Delivery::from_slice(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn delivery_key_is_sha256_of_the_raw_body() {
        let key = DeliveryKey::of(b"abc");
        assert_eq!(
            key.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(DeliveryKey::from_hex(&key.to_hex()).unwrap(), key);
    }
}
