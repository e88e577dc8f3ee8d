//! The `credentials.properties` reader on arbitrary text: it must never panic, and what it
//! reads must be usable as it stands (trimmed values, a `Debug` that shows keys only).

#![no_main]

use libfuzzer_sys::fuzz_target;
use preservica_webhook_client::PropertiesFile;

const KEYS: [&str; 6] = [
    "username",
    "password",
    "tenant",
    "server",
    "twoFactorToken",
    "secret.key",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let properties = match PropertiesFile::parse(text) {
        Ok(properties) => properties,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    for key in KEYS {
        if let Some(value) = properties.get(key) {
            assert_eq!(value, value.trim());
            assert_eq!(properties.get(&key.to_ascii_uppercase()), Some(value));
        }
    }
    let _ = format!("{properties:?}");
});
