//! `Delivery::from_slice` on arbitrary bytes: it must never panic, and whatever it accepts must
//! serialize and parse back to the same delivery (nothing authentic is lost or changed when the
//! server stores and re-reads a parsed delivery).

#![no_main]

use libfuzzer_sys::fuzz_target;
use preservica_webhook_core::Delivery;

fuzz_target!(|data: &[u8]| {
    let Ok(delivery) = Delivery::from_slice(data) else {
        return;
    };
    let _ = delivery.timestamp();
    let refs = delivery.entity_refs().count();
    assert!(refs <= delivery.events.len());
    let written = serde_json::to_vec(&delivery).expect("a parsed delivery serializes");
    let again = Delivery::from_slice(&written).expect("a serialized delivery parses");
    assert_eq!(again, delivery);
});
