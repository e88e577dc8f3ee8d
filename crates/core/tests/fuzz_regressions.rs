//! Inputs the fuzz targets in `fuzz/` found, kept as ordinary tests. Each input is a file in
//! `tests/data/fuzz`, named after the target and what went wrong.

use preservica_webhook_core::Delivery;
use serde_json::Value;

/// What the `delivery` target checks: whatever parses serializes and parses back to itself.
fn check_round_trip(body: &[u8]) {
    let delivery = Delivery::from_slice(body).unwrap();
    let written = serde_json::to_vec(&delivery).unwrap();
    let again = Delivery::from_slice(&written).unwrap();
    assert_eq!(again, delivery, "{}", String::from_utf8_lossy(&written));
}

#[test]
fn long_integers_in_unknown_fields_survive_a_round_trip() {
    // A 36-digit integer does not fit a u64 and becomes a float. serde_json's default float
    // parsing may miss the nearest float by one unit, so writing the delivery and reading it
    // back changed the value.
    check_round_trip(include_bytes!(
        "data/fuzz/delivery-long-integer-roundtrip.json"
    ));
    for literal in [
        "555255555555555555555555555555555555",
        "5.5525555555555556e35",
        "0.30000000000000004",
        "2.2250738585072011e-308",
        "9007199254740993",
        "1e308",
        "123456789012345678901234567890",
    ] {
        let body =
            format!(r#"{{"trigger":"MOVED","size":{literal},"events":[{{"n":{literal}}}]}}"#);
        check_round_trip(body.as_bytes());
        // And the value read is the nearest float to what was written, as Rust's parser says.
        let delivery = Delivery::from_slice(body.as_bytes()).unwrap();
        let nearest: f64 = literal.parse().unwrap();
        let read = |value: &Value| value.as_f64().unwrap();
        assert_eq!(read(&delivery.extra["size"]), nearest, "{literal}");
        assert_eq!(read(&delivery.events[0].extra["n"]), nearest, "{literal}");
    }
}
