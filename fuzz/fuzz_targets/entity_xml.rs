//! The entity XML reader on arbitrary text: it must never panic, and an entity it returns
//! always has a non-empty, trimmed reference.

#![no_main]

use libfuzzer_sys::fuzz_target;
use preservica_webhook_client::Entity;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Entity::from_xml(text) {
        Ok(entity) => {
            assert!(!entity.reference.is_empty());
            assert_eq!(entity.reference.trim(), entity.reference);
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
});
