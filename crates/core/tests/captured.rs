//! The captured real delivery (Preservica 6.10) and a multi-event delivery, parsed and
//! rendered, so a change in how payloads are read shows up as a snapshot diff.

use expect_test::{Expect, expect};
use preservica_webhook_core::Delivery;

fn check(body: &str, expected: Expect) {
    let delivery = Delivery::from_slice(body.as_bytes()).expect("the body parses");
    let mut rendered = format!(
        "subscription={:?} tenant={:?} version={:?} trigger={:?}\ntimestamp raw={:?} naive={:?}\n",
        delivery.subscription_id.as_ref().map(|id| id.as_str()),
        delivery.tenant,
        delivery.version,
        delivery.trigger.as_ref().map(|t| t.as_str()),
        delivery.timestamp_raw,
        delivery.timestamp().map(|t| t.to_string()),
    );
    for event in &delivery.events {
        rendered.push_str(&format!(
            "event {:?} {:?} {:?} identifiers={} extra={}\n",
            event.event,
            event.entity_type.as_ref().map(|t| t.as_str()),
            event.entity_ref,
            serde_json::Value::from(event.identifiers.clone()),
            serde_json::Value::from(event.extra.clone()),
        ));
    }
    rendered.push_str(&format!(
        "extra={}",
        serde_json::Value::from(delivery.extra.clone())
    ));
    expected.assert_eq(&rendered);
}

#[test]
fn parses_the_captured_6_10_delivery() {
    check(
        r#"{"subscriptionId":"9495ddbf7d4a0b9f030a3411c87f967d","timestamp":"2023-10-11T10:52:42.469","tenant":"BRAMA","version":"6.10","events":[{"event":"FullTextIndexed","entityType":"IO","entityRef":"7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2","identifiers":[]}],"trigger":"FULL_TEXT_INDEXED"}"#,
        expect![[r#"
            subscription=Some("9495ddbf7d4a0b9f030a3411c87f967d") tenant=Some("BRAMA") version=Some("6.10") trigger=Some("FULL_TEXT_INDEXED")
            timestamp raw=Some("2023-10-11T10:52:42.469") naive=Some("2023-10-11 10:52:42.469")
            event Some("FullTextIndexed") Some("IO") Some("7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2") identifiers=[] extra={}
            extra={}"#]],
    );
}

#[test]
fn yields_every_event_of_a_multi_event_delivery() {
    check(
        r#"{"subscriptionId":"4583e1e6d2c72ed96a1151bc7dfd53c2","timestamp":"2026-01-24T09:15:03.001","tenant":"TEST","version":"7.7","events":[{"event":"Moved","entityType":"SO","entityRef":"0b8a","identifiers":[{"BatchId":"B-17"}],"oldParent":"p1"},{"event":"Moved","entityType":"IO","entityRef":"9c1d","identifiers":[]}],"trigger":"MOVED","region":"eu"}"#,
        expect![[r#"
            subscription=Some("4583e1e6d2c72ed96a1151bc7dfd53c2") tenant=Some("TEST") version=Some("7.7") trigger=Some("MOVED")
            timestamp raw=Some("2026-01-24T09:15:03.001") naive=Some("2026-01-24 09:15:03.001")
            event Some("Moved") Some("SO") Some("0b8a") identifiers=[{"BatchId":"B-17"}] extra={"oldParent":"p1"}
            event Some("Moved") Some("IO") Some("9c1d") identifiers=[] extra={}
            extra={"region":"eu"}"#]],
    );
}
