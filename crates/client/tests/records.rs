//! Preservica's own records against a mock Preservica: the event log, the entities updated
//! since a time and the process monitors, each read page by page through `Next`.

mod common;

use chrono::{DateTime, Utc};
use common::*;
use futures_util::{StreamExt as _, TryStreamExt as _};
use preservica_webhook_client::{EntityRef, EntityType, EventsQuery, MonitorsQuery};
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn actions_page(actions: &[(&str, &str, &str)], next: Option<&str>) -> String {
    let mut xml = String::from(
        r#"<EventActionsResponse xmlns="http://preservica.com/EntityAPI/v7.7" xmlns:xip="http://preservica.com/XIP/v7.7"><EventActions>"#,
    );
    for (kind, entity, date) in actions {
        xml.push_str(&format!(
            r#"<xip:EventAction commandType="c"><xip:Event type="{kind}"><xip:Ref>ev-{entity}</xip:Ref></xip:Event><xip:Date>{date}</xip:Date><xip:Entity>{entity}</xip:Entity></xip:EventAction>"#
        ));
    }
    xml.push_str("</EventActions><Paging>");
    if let Some(next) = next {
        xml.push_str(&format!("<Next>{}</Next>", next.replace('&', "&amp;")));
    }
    xml.push_str("<TotalResults>3</TotalResults></Paging></EventActionsResponse>");
    xml
}

fn xml(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "application/xml")
}

#[tokio::test]
async fn events_follow_next_pages_lazily_with_the_query_given() {
    let server = MockServer::start().await;
    mount_login(&server, "tok").await;
    let next = format!(
        "{}/api/entity/events?start=2&max=2&types=Ingest",
        server.uri()
    );
    Mock::given(method("GET"))
        .and(path("/api/entity/events"))
        .and(query_param("start", "0"))
        .and(query_param("max", "2"))
        .and(query_param("types", "Ingest"))
        .and(query_param("from", "2026-12-01T09:00:00.000Z"))
        .and(query_param("to", "2026-12-01T10:00:00.000Z"))
        .respond_with(xml(actions_page(
            &[
                ("Ingest", "a1", "2026-12-01T09:10:00Z"),
                ("Ingest", "a2", "2026-12-01T09:20:00Z"),
            ],
            Some(&next),
        )))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/entity/events"))
        .and(query_param("start", "2"))
        .respond_with(xml(actions_page(
            &[("Ingest", "a3", "2026-12-01T09:30:00Z")],
            None,
        )))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let query = EventsQuery::new()
        .of_type("Ingest")
        .from(time("2026-12-01T09:00:00Z"))
        .to(time("2026-12-01T10:00:00Z"))
        .page_size(2);

    let mut events = Box::pin(client.events(&query));
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.entity, Some(EntityRef::new("a1").unwrap()));
    let pages_read = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|it| it.url.path() == "/api/entity/events")
        .count();
    assert_eq!(pages_read, 1, "the second page is read only when needed");
    let rest: Vec<_> = events.try_collect().await.unwrap();
    let entities: Vec<&str> = rest
        .iter()
        .filter_map(|it| it.entity.as_ref().map(EntityRef::as_str))
        .collect();
    assert_eq!(entities, ["a2", "a3"]);
    assert_eq!(rest[1].date, Some(time("2026-12-01T09:30:00Z")));
}

#[tokio::test]
async fn a_next_page_on_another_server_is_refused_not_followed() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    mount_login(&server, "tok").await;
    let next = format!("{}/api/entity/events?start=1", elsewhere.uri());
    Mock::given(method("GET"))
        .and(path("/api/entity/events"))
        .respond_with(xml(actions_page(
            &[("Moved", "a1", "2026-12-01T09:10:00Z")],
            Some(&next),
        )))
        .mount(&server)
        .await;
    let client = client(&server);

    let read: Vec<_> = client.events(&EventsQuery::new()).collect().await;

    assert_eq!(read.len(), 2);
    assert_eq!(read[0].as_ref().unwrap().event_type, "Moved");
    let err = read[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("another server"), "{err}");
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "the token never goes to the other server"
    );
}

#[tokio::test]
async fn a_page_that_links_to_itself_ends_the_listing() {
    let server = MockServer::start().await;
    mount_login(&server, "tok").await;
    let this_page = format!(
        "{}/api/entity/events/ev-1/event-actions?start=0&max=100",
        server.uri()
    );
    Mock::given(method("GET"))
        .and(path("/api/entity/events/ev-1/event-actions"))
        .respond_with(xml(actions_page(
            &[("Ingest", "a1", "2026-12-01T09:10:00Z")],
            Some(&this_page),
        )))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);

    let read: Vec<_> = client.event_actions("ev-1").try_collect().await.unwrap();

    assert_eq!(read.len(), 1);
}

#[tokio::test]
async fn entity_event_actions_read_the_entity_path() {
    let server = MockServer::start().await;
    mount_login(&server, "tok").await;
    Mock::given(method("GET"))
        .and(path("/api/entity/information-objects/a1/event-actions"))
        .respond_with(xml(actions_page(
            &[("Modified", "a1", "2026-12-01T09:10:00Z")],
            None,
        )))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let asset = EntityRef::new("a1").unwrap();

    let read: Vec<_> = client
        .entity_event_actions(&EntityType::Asset, &asset)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(read[0].event_type, "Modified");

    let refused: Vec<_> = client
        .entity_event_actions(&EntityType::parse("XX"), &asset)
        .collect()
        .await;
    assert!(refused[0].as_ref().unwrap_err().is_configuration());
}

#[tokio::test]
async fn updated_since_sends_the_window_and_keeps_deleted_entities() {
    let server = MockServer::start().await;
    mount_login(&server, "tok").await;
    Mock::given(method("GET"))
        .and(path("/api/entity/entities/updated-since"))
        .and(query_param("date", "2026-12-01T09:00:00.000Z"))
        .and(query_param("endDate", "2026-12-01T10:00:00.000Z"))
        .respond_with(xml(
            r#"<EntitiesResponse xmlns="http://preservica.com/EntityAPI/v6.0"><Entities>
                <Entity ref="a1" type="IO" title="one">x</Entity>
                <Entity ref="f1" type="SO" deleted="true"/>
            </Entities><Paging></Paging></EntitiesResponse>"#
                .to_owned(),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);

    let read: Vec<_> = client
        .updated_since(
            time("2026-12-01T09:00:00Z"),
            Some(time("2026-12-01T10:00:00Z")),
        )
        .try_collect()
        .await
        .unwrap();

    assert_eq!(read.len(), 2);
    assert_eq!(read[0].entity_type, EntityType::Asset);
    assert!(!read[0].deleted);
    assert!(read[1].deleted);
}

#[tokio::test]
async fn monitors_filter_by_status_and_category_and_page() {
    let server = MockServer::start().await;
    mount_login(&server, "tok").await;
    let next = format!(
        "{}/api/processmonitor/monitors?status=Failed&category=Ingest&start=1",
        server.uri()
    );
    Mock::given(method("GET"))
        .and(path("/api/processmonitor/monitors"))
        .and(query_param("status", "Failed"))
        .and(query_param("category", "Ingest"))
        .and(query_param("start", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true, "version": 1,
            "value": {"paging": {"totalResults": 2}, "monitors": [{"mappedId": "m2", "name": "b.zip", "status": "Failed"}]}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/processmonitor/monitors"))
        .and(query_param("status", "Failed"))
        .and(query_param("category", "Ingest"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true, "version": 1,
            "value": {"paging": {"totalResults": 2, "next": next}, "monitors": [{"mappedId": "m1", "name": "a.zip", "status": "Failed", "category": "Ingest"}]}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);

    let read: Vec<_> = client
        .monitors(&MonitorsQuery::new().status("Failed").category("Ingest"))
        .try_collect()
        .await
        .unwrap();

    let names: Vec<_> = read.iter().filter_map(|it| it.name.as_deref()).collect();
    assert_eq!(names, ["a.zip", "b.zip"]);
}

#[tokio::test]
async fn a_refused_page_is_an_error_with_preservicas_message() {
    let server = MockServer::start().await;
    mount_login(&server, "tok").await;
    Mock::given(method("GET"))
        .and(path("/api/entity/events"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(json!({"message": "bad date format"})),
        )
        .mount(&server)
        .await;
    let client = client(&server);

    let read: Vec<_> = client.events(&EventsQuery::new()).collect().await;

    assert_eq!(read.len(), 1);
    let err = read[0].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("read the event log") && err.contains("bad date format"),
        "{err}"
    );
}
