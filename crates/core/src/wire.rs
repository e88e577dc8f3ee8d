//! Wire enums: the trigger types a subscription listens for and the entity types an event names.
//!
//! Each enum has one string table (`as_str`); `Display`, `FromStr` and serde are built on it.
//! Values this version does not know are kept verbatim in an `Unknown` variant, so a newer
//! Preservica never makes a delivery or a subscription list fail to parse.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a subscription listens for, and what a delivery says fired.
///
/// The wire carries the upper-snake-case value (`FULL_TEXT_INDEXED`); users also type the names
/// Preservica's documentation and pyPreservica use (`INDEXED`, `SECURITY_CHANGED`). Parsing
/// accepts both, in any case, with `_`, `-` or spaces between words, and keeps anything else
/// as [`TriggerType::Unknown`].
///
/// ```
/// use preservica_webhook_core::TriggerType;
///
/// assert_eq!(TriggerType::parse("indexed"), TriggerType::FullTextIndexed);
/// assert_eq!(TriggerType::FullTextIndexed.to_string(), "FULL_TEXT_INDEXED");
/// assert_eq!(TriggerType::parse("NEW_THING").as_str(), "NEW_THING");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TriggerType {
    /// An entity was moved (`MOVED`).
    Moved,
    /// An ingest finished and its full-text index was built (`FULL_TEXT_INDEXED`, documented as
    /// `INDEXED`). Thumbnails and search are available from here on.
    FullTextIndexed,
    /// An entity's security tag changed (`CHANGED_SECURITY_DESCRIPTOR`, documented as
    /// `SECURITY_CHANGED`).
    ChangedSecurityDescriptor,
    /// An ingest failed (`INGEST_FAILED`).
    IngestFailed,
    /// An asset's visibility changed (`CHANGE_ASSET_VISIBILITY`; undocumented by Preservica).
    ChangeAssetVisibility,
    /// A trigger this version does not know; kept verbatim.
    Unknown(String),
}

/// Every trigger this version knows, in the order Preservica's documentation lists them.
pub const KNOWN_TRIGGERS: [TriggerType; 5] = [
    TriggerType::Moved,
    TriggerType::FullTextIndexed,
    TriggerType::ChangedSecurityDescriptor,
    TriggerType::IngestFailed,
    TriggerType::ChangeAssetVisibility,
];

impl TriggerType {
    /// The wire value, as Preservica sends and expects it.
    pub fn as_str(&self) -> &str {
        match self {
            TriggerType::Moved => "MOVED",
            TriggerType::FullTextIndexed => "FULL_TEXT_INDEXED",
            TriggerType::ChangedSecurityDescriptor => "CHANGED_SECURITY_DESCRIPTOR",
            TriggerType::IngestFailed => "INGEST_FAILED",
            TriggerType::ChangeAssetVisibility => "CHANGE_ASSET_VISIBILITY",
            TriggerType::Unknown(it) => it,
        }
    }

    /// The name Preservica's documentation and pyPreservica use for a known trigger
    /// (`INDEXED` for `FULL_TEXT_INDEXED`); the wire value for the others.
    pub fn documentation_name(&self) -> &str {
        match self {
            TriggerType::FullTextIndexed => "INDEXED",
            TriggerType::ChangedSecurityDescriptor => "SECURITY_CHANGED",
            other => other.as_str(),
        }
    }

    /// Parses a wire value or a documentation name, case-insensitively; anything else becomes
    /// [`TriggerType::Unknown`] holding the input verbatim. Never fails.
    pub fn parse(input: &str) -> TriggerType {
        let key = fold(input);
        match key.as_str() {
            "MOVED" => TriggerType::Moved,
            "FULLTEXTINDEXED" | "INDEXED" => TriggerType::FullTextIndexed,
            "CHANGEDSECURITYDESCRIPTOR" | "SECURITYCHANGED" => {
                TriggerType::ChangedSecurityDescriptor
            }
            "INGESTFAILED" => TriggerType::IngestFailed,
            "CHANGEASSETVISIBILITY" => TriggerType::ChangeAssetVisibility,
            _ => TriggerType::Unknown(input.to_owned()),
        }
    }

    /// Whether this is a trigger this version knows.
    pub fn is_known(&self) -> bool {
        !matches!(self, TriggerType::Unknown(_))
    }
}

/// What kind of entity an event is about.
///
/// The wire carries Preservica's XIP abbreviations; parsing also accepts the plain names
/// (`asset`, `folder`, `content-object`) in any case.
///
/// ```
/// use preservica_webhook_core::EntityType;
///
/// assert_eq!(EntityType::parse("IO"), EntityType::Asset);
/// assert_eq!(EntityType::parse("folder").as_str(), "SO");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntityType {
    /// An asset, an information object (`IO`).
    Asset,
    /// A folder, a structural object (`SO`).
    Folder,
    /// A content object (`CO`).
    ContentObject,
    /// An entity type this version does not know; kept verbatim.
    Unknown(String),
}

impl EntityType {
    /// The wire value (`IO`, `SO`, `CO`).
    pub fn as_str(&self) -> &str {
        match self {
            EntityType::Asset => "IO",
            EntityType::Folder => "SO",
            EntityType::ContentObject => "CO",
            EntityType::Unknown(it) => it,
        }
    }

    /// Parses a wire value or a plain name, case-insensitively; anything else becomes
    /// [`EntityType::Unknown`] holding the input verbatim. Never fails.
    pub fn parse(input: &str) -> EntityType {
        match fold(input).as_str() {
            "IO" | "ASSET" | "INFORMATIONOBJECT" => EntityType::Asset,
            "SO" | "FOLDER" | "STRUCTURALOBJECT" => EntityType::Folder,
            "CO" | "CONTENTOBJECT" => EntityType::ContentObject,
            _ => EntityType::Unknown(input.to_owned()),
        }
    }
}

/// Upper-cases and drops word separators, so `full-text indexed` and `FullTextIndexed` meet.
fn fold(input: &str) -> String {
    input
        .trim()
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_uppercase)
        .collect()
}

macro_rules! string_wire_impls {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = Infallible;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok($ty::parse(s))
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                Ok($ty::parse(&raw))
            }
        }
    };
}

string_wire_impls!(TriggerType);
string_wire_impls!(EntityType);

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    fn check_trigger(inputs: &[&str], expected: expect_test::Expect) {
        let rendered: Vec<String> = inputs
            .iter()
            .map(|input| {
                let parsed = TriggerType::parse(input);
                format!("{input:?} -> {parsed:?} -> {parsed}")
            })
            .collect();
        expected.assert_eq(&rendered.join("\n"));
    }

    #[test]
    fn parses_wire_and_documentation_trigger_names_in_any_case() {
        check_trigger(
            &[
                "MOVED",
                "moved",
                "FULL_TEXT_INDEXED",
                "full_text_indexed",
                "INDEXED",
                "Indexed",
                "FullTextIndexed",
                "full-text-indexed",
                "CHANGED_SECURITY_DESCRIPTOR",
                "SECURITY_CHANGED",
                "security_changed",
                "INGEST_FAILED",
                "ingest-failed",
                "CHANGE_ASSET_VISIBILITY",
                "change_asset_visibility",
                " MOVED ",
            ],
            expect![[r#"
                "MOVED" -> Moved -> MOVED
                "moved" -> Moved -> MOVED
                "FULL_TEXT_INDEXED" -> FullTextIndexed -> FULL_TEXT_INDEXED
                "full_text_indexed" -> FullTextIndexed -> FULL_TEXT_INDEXED
                "INDEXED" -> FullTextIndexed -> FULL_TEXT_INDEXED
                "Indexed" -> FullTextIndexed -> FULL_TEXT_INDEXED
                "FullTextIndexed" -> FullTextIndexed -> FULL_TEXT_INDEXED
                "full-text-indexed" -> FullTextIndexed -> FULL_TEXT_INDEXED
                "CHANGED_SECURITY_DESCRIPTOR" -> ChangedSecurityDescriptor -> CHANGED_SECURITY_DESCRIPTOR
                "SECURITY_CHANGED" -> ChangedSecurityDescriptor -> CHANGED_SECURITY_DESCRIPTOR
                "security_changed" -> ChangedSecurityDescriptor -> CHANGED_SECURITY_DESCRIPTOR
                "INGEST_FAILED" -> IngestFailed -> INGEST_FAILED
                "ingest-failed" -> IngestFailed -> INGEST_FAILED
                "CHANGE_ASSET_VISIBILITY" -> ChangeAssetVisibility -> CHANGE_ASSET_VISIBILITY
                "change_asset_visibility" -> ChangeAssetVisibility -> CHANGE_ASSET_VISIBILITY
                " MOVED " -> Moved -> MOVED"#]],
        );
    }

    #[test]
    fn keeps_unknown_trigger_names_verbatim() {
        check_trigger(
            &["NEW_TRIGGER", "", "indexedd", "MOVED_TWICE", "ÉVÉNEMENT"],
            expect![[r#"
                "NEW_TRIGGER" -> Unknown("NEW_TRIGGER") -> NEW_TRIGGER
                "" -> Unknown("") -> 
                "indexedd" -> Unknown("indexedd") -> indexedd
                "MOVED_TWICE" -> Unknown("MOVED_TWICE") -> MOVED_TWICE
                "ÉVÉNEMENT" -> Unknown("ÉVÉNEMENT") -> ÉVÉNEMENT"#]],
        );
    }

    #[test]
    fn known_triggers_round_trip_through_wire_and_documentation_names() {
        for trigger in KNOWN_TRIGGERS {
            assert_eq!(TriggerType::parse(trigger.as_str()), trigger);
            assert_eq!(TriggerType::parse(trigger.documentation_name()), trigger);
            let json = serde_json::to_string(&trigger).unwrap();
            assert_eq!(json, format!("\"{}\"", trigger.as_str()));
            assert_eq!(serde_json::from_str::<TriggerType>(&json).unwrap(), trigger);
        }
    }

    #[test]
    fn parses_entity_types() {
        let cases = [
            ("IO", EntityType::Asset),
            ("io", EntityType::Asset),
            ("asset", EntityType::Asset),
            ("SO", EntityType::Folder),
            ("Folder", EntityType::Folder),
            ("CO", EntityType::ContentObject),
            ("content-object", EntityType::ContentObject),
            ("XX", EntityType::Unknown("XX".to_owned())),
        ];
        for (input, expected) in cases {
            assert_eq!(EntityType::parse(input), expected, "input {input:?}");
        }
        assert_eq!(EntityType::Folder.to_string(), "SO");
        assert_eq!(
            serde_json::from_str::<EntityType>("\"XX\"")
                .unwrap()
                .as_str(),
            "XX"
        );
    }
}
