//! Entities as the entity API describes them, read from its XML `EntityResponse`.

use preservica_webhook_core::EntityType;
use serde::Serialize;

use crate::error::Error;

/// An asset, folder or content object: the fields a webhook handler usually wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entity {
    /// The entity's reference (a UUID).
    pub reference: String,
    /// What kind of entity it is.
    pub entity_type: EntityType,
    /// Its title.
    pub title: Option<String>,
    /// Its description.
    pub description: Option<String>,
    /// Its security tag (`open`, `closed`, …).
    pub security_tag: Option<String>,
    /// The reference of the folder (or, for a content object, the asset) it is in; `None` at
    /// the root.
    pub parent: Option<String>,
}

impl Entity {
    /// Reads an entity from the XML of an `EntityResponse`.
    ///
    /// Elements are matched by local name only, so any XIP namespace version
    /// (`http://preservica.com/XIP/v7.7`, `v6.0`, …) reads the same. The first
    /// `InformationObject`, `StructuralObject` or `ContentObject` element is the entity; its
    /// direct `Ref`, `Title`, `Description`, `SecurityTag` and `Parent` children are read (the
    /// `AdditionalInformation` block, which also has a `Parent`, is not).
    ///
    /// # Errors
    /// [`Error::Decode`] when the text is not XML, holds no entity element, or the entity has
    /// no `Ref`.
    pub fn from_xml(xml: &str) -> Result<Entity, Error> {
        let decode = |detail: String| Error::Decode {
            what: "entity",
            detail,
        };
        let document =
            roxmltree::Document::parse(xml).map_err(|err| decode(format!("not XML: {err}")))?;
        let (node, entity_type) = document
            .descendants()
            .filter(roxmltree::Node::is_element)
            .find_map(|node| {
                let kind = match node.tag_name().name() {
                    "InformationObject" => EntityType::Asset,
                    "StructuralObject" => EntityType::Folder,
                    "ContentObject" => EntityType::ContentObject,
                    _ => return None,
                };
                Some((node, kind))
            })
            .ok_or_else(|| {
                decode("no InformationObject, StructuralObject or ContentObject element".to_owned())
            })?;
        let child = |name: &str| {
            node.children()
                .find(|it| it.is_element() && it.tag_name().name() == name)
                .and_then(|it| it.text())
                .map(str::trim)
                .filter(|it| !it.is_empty())
                .map(str::to_owned)
        };
        let reference = child("Ref").ok_or_else(|| decode("the entity has no Ref".to_owned()))?;
        Ok(Entity {
            reference,
            entity_type,
            title: child("Title"),
            description: child("Description"),
            security_tag: child("SecurityTag"),
            parent: child("Parent"),
        })
    }
}

/// The entity API's path segment for a kind of entity.
pub(crate) fn collection(kind: &EntityType) -> Result<&'static str, Error> {
    match kind {
        EntityType::Asset => Ok("information-objects"),
        EntityType::Folder => Ok("structural-objects"),
        EntityType::ContentObject => Ok("content-objects"),
        other => Err(Error::Configuration(format!(
            "the entity type {other} is not one the entity API serves; use IO (asset), SO (folder) or CO (content object)"
        ))),
    }
}

/// What a kind of entity is called in messages.
pub(crate) fn noun(kind: &EntityType) -> &str {
    match kind {
        EntityType::Asset => "asset",
        EntityType::Folder => "folder",
        EntityType::ContentObject => "content object",
        other => other.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_captured_asset_fixture() {
        let xml = include_str!("../tests/data/entity-response-io-v7.7.xml");
        let entity = Entity::from_xml(xml).unwrap();
        assert_eq!(
            entity,
            Entity {
                reference: "7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2".to_owned(),
                entity_type: EntityType::Asset,
                title: Some("Minutes of the board, 1923".to_owned()),
                description: Some("Scanned typescript, 4 pages".to_owned()),
                security_tag: Some("open".to_owned()),
                parent: Some("2b1c4f7e-9d3a-4d2e-8f61-0c5a7b9e1d20".to_owned()),
            }
        );
    }

    #[test]
    fn matches_local_names_in_any_namespace_version() {
        let xml = r#"<EntityResponse xmlns="http://preservica.com/EntityAPI/v6.2" xmlns:x="http://preservica.com/XIP/v6.2">
            <x:StructuralObject><x:Ref>f1</x:Ref><x:Title>Folder</x:Title><x:SecurityTag>closed</x:SecurityTag></x:StructuralObject>
            <AdditionalInformation><Parent>https://example.org/api/entity/structural-objects/nope</Parent></AdditionalInformation>
        </EntityResponse>"#;
        let entity = Entity::from_xml(xml).unwrap();
        assert_eq!(entity.entity_type, EntityType::Folder);
        assert_eq!(entity.reference, "f1");
        assert_eq!(entity.title.as_deref(), Some("Folder"));
        assert_eq!(entity.description, None);
        assert_eq!(entity.parent, None);
    }

    #[test]
    fn refuses_answers_without_an_entity_or_a_ref() {
        for xml in [
            "not xml",
            "<EntityResponse/>",
            "<EntityResponse><InformationObject><Title>t</Title></InformationObject></EntityResponse>",
        ] {
            let err = Entity::from_xml(xml).unwrap_err();
            assert!(
                matches!(err, Error::Decode { what: "entity", .. }),
                "{err:?}"
            );
        }
    }
}
