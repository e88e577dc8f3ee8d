//! Preservica's own records of what happened in the repository: the entity API's event log,
//! the entities changed since a time, and the process monitors. A receiver that was down reads
//! them to find the notifications it missed.
//!
//! The XML answers are matched on local names only, so every namespace version
//! (`http://preservica.com/XIP/v7.7`, `…/v6.0`, …) reads the same, and elements this module
//! does not know are ignored. Pages are followed through the `Next` address Preservica gives,
//! only while it points at the same server.

use chrono::{DateTime, NaiveDateTime, Utc};
use futures_util::{Stream, StreamExt as _, TryStreamExt as _, stream};
use preservica_webhook_core::{EntityRef, EntityType};
use reqwest::header::ACCEPT;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::client::Client;
use crate::entity;
use crate::error::Error;
use crate::transport::{Repeat, read_body};

/// The page size asked for when a query does not say: Preservica's own default is 25, and
/// fewer, larger pages mean fewer round trips.
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 100;

/// One action recorded in the event log: what happened (the event), when, and to which entity.
///
/// Preservica nests an `Event` (type, reference, date, user) inside each `EventAction` (the
/// action's date, the entity, a command type). The event type is free text in Preservica's
/// schema, not an enumeration, so it is kept as given: `Ingest`, `Moved`, `Modified`,
/// `Download`, `Characterise`, …
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventAction {
    /// The event's type (`Ingest`, `Moved`, …); empty when Preservica gave none.
    pub event_type: String,
    /// The event's own reference; several actions (one per entity) share one event.
    pub event_ref: Option<String>,
    /// The action's command type (`command_create`, `Moved`, `AddIdentifier`, …).
    pub command_type: Option<String>,
    /// When the action happened (the action's date, else the event's).
    pub date: Option<DateTime<Utc>>,
    /// The entity the action was on.
    pub entity: Option<EntityRef>,
    /// Who caused it.
    pub user: Option<String>,
    /// The workflow that ran it, when one did.
    pub workflow_name: Option<String>,
}

/// An entity that changed after a given time, as `updated-since` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdatedEntity {
    /// The entity's reference.
    pub reference: EntityRef,
    /// What kind of entity it is (`IO`, `SO`, `CO`).
    pub entity_type: EntityType,
    /// Its title.
    pub title: Option<String>,
    /// True when Preservica marks the entity deleted.
    pub deleted: bool,
}

/// A process monitor: one long-running process, such as an ingest, and how it went.
///
/// The fields are those Preservica's process-monitor API is known to send; every one but the
/// id may be missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Monitor {
    /// Preservica's id for the monitor (`mappedId`); it may change between Preservica releases.
    #[serde(rename = "mappedId")]
    pub id: String,
    /// The process's name (an ingest's package name, for instance).
    #[serde(default)]
    pub name: Option<String>,
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Suspended` or `Recoverable`.
    #[serde(default)]
    pub status: Option<String>,
    /// `Ingest`, `Export`, `DataManagement` or `Automated`.
    #[serde(default)]
    pub category: Option<String>,
    /// When the process started, as Preservica wrote it.
    #[serde(default)]
    pub started: Option<String>,
    /// When the process ended, as Preservica wrote it.
    #[serde(default)]
    pub completed: Option<String>,
    /// How many errors the process reported.
    #[serde(default)]
    pub errors: Option<u64>,
}

/// Which part of the event log to read ([`Client::events`](crate::Client::events)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsQuery {
    pub(crate) event_type: Option<String>,
    pub(crate) from: Option<DateTime<Utc>>,
    pub(crate) to: Option<DateTime<Utc>>,
    pub(crate) page_size: Option<u32>,
}

impl EventsQuery {
    /// Every event.
    pub fn new() -> EventsQuery {
        EventsQuery::default()
    }

    /// Only events of this type (`Ingest`, `Moved`, …).
    #[must_use]
    pub fn of_type(mut self, event_type: &str) -> EventsQuery {
        self.event_type = Some(event_type.to_owned());
        self
    }

    /// Only events at or after this time.
    #[must_use]
    pub fn from(mut self, from: DateTime<Utc>) -> EventsQuery {
        self.from = Some(from);
        self
    }

    /// Only events at or before this time.
    #[must_use]
    pub fn to(mut self, to: DateTime<Utc>) -> EventsQuery {
        self.to = Some(to);
        self
    }

    /// How many records to ask for per page (1 to 1000).
    #[must_use]
    pub fn page_size(mut self, size: u32) -> EventsQuery {
        self.page_size = Some(size.clamp(1, 1000));
        self
    }
}

/// Which process monitors to list ([`Client::monitors`](crate::Client::monitors)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorsQuery {
    pub(crate) status: Option<String>,
    pub(crate) category: Option<String>,
}

impl MonitorsQuery {
    /// Every monitor.
    pub fn new() -> MonitorsQuery {
        MonitorsQuery::default()
    }

    /// Only monitors with this status (`Failed`, `Succeeded`, …).
    #[must_use]
    pub fn status(mut self, status: &str) -> MonitorsQuery {
        self.status = Some(status.to_owned());
        self
    }

    /// Only monitors of this category (`Ingest`, `Export`, …).
    #[must_use]
    pub fn category(mut self, category: &str) -> MonitorsQuery {
        self.category = Some(category.to_owned());
        self
    }
}

impl Client {
    /// The repository's event log, oldest first, read page by page as the stream is polled
    /// (`GET /api/entity/events`, filtered by `types`, `from` and `to`).
    ///
    /// # Errors
    /// Each item is an error when a page could not be read: [`Error::Status`] for refusals,
    /// [`Error::Decode`] for an answer that is not the event log or a next page on another
    /// server. The stream ends after an error.
    pub fn events(
        &self,
        query: &EventsQuery,
    ) -> impl Stream<Item = Result<EventAction, Error>> + Send + Unpin + '_ {
        let mut url = self.inner.transport.endpoint(&["api", "entity", "events"]);
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("start", "0").append_pair(
                "max",
                &query.page_size.unwrap_or(DEFAULT_PAGE_SIZE).to_string(),
            );
            if let Some(event_type) = &query.event_type {
                pairs.append_pair("types", event_type);
            }
            if let Some(from) = query.from {
                pairs.append_pair("from", &query_time(from));
            }
            if let Some(to) = query.to {
                pairs.append_pair("to", &query_time(to));
            }
        }
        self.pages(Source::EVENTS, url)
    }

    /// The actions of one event (one per entity it touched), read lazily
    /// (`GET /api/entity/events/{event}/event-actions`).
    ///
    /// # Errors
    /// As [`Client::events`].
    pub fn event_actions(
        &self,
        event_ref: &str,
    ) -> impl Stream<Item = Result<EventAction, Error>> + Send + Unpin + '_ {
        let url = self.first_page(&["api", "entity", "events", event_ref, "event-actions"]);
        self.pages(Source::EVENTS, url)
    }

    /// The actions recorded on one entity, oldest first, read lazily
    /// (`GET /api/entity/{kind}/{ref}/event-actions`).
    ///
    /// # Errors
    /// As [`Client::events`]; [`Error::Configuration`] (as the only item) for an entity type
    /// the entity API does not serve.
    pub fn entity_event_actions(
        &self,
        kind: &EntityType,
        reference: &EntityRef,
    ) -> impl Stream<Item = Result<EventAction, Error>> + Send + Unpin + '_ {
        let url = entity::collection(kind).map(|collection| {
            self.first_page(&[
                "api",
                "entity",
                collection,
                reference.as_str(),
                "event-actions",
            ])
        });
        match url {
            Ok(url) => self.pages(Source::EVENTS, url).left_stream(),
            Err(err) => stream::once(std::future::ready(Err(err))).right_stream(),
        }
    }

    /// The entities changed at or after `since` (and, when given, before `until`), in the
    /// order Preservica changed them, read lazily
    /// (`GET /api/entity/entities/updated-since`). Deleted entities are included, marked.
    ///
    /// # Errors
    /// As [`Client::events`].
    pub fn updated_since(
        &self,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> impl Stream<Item = Result<UpdatedEntity, Error>> + Send + Unpin + '_ {
        let mut url = self.first_page(&["api", "entity", "entities", "updated-since"]);
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("date", &query_time(since));
            if let Some(until) = until {
                pairs.append_pair("endDate", &query_time(until));
            }
        }
        self.pages(Source::UPDATED, url)
    }

    /// The process monitors, filtered by status and category (`Failed` and `Ingest` list the
    /// failed ingests), read lazily (`GET /api/processmonitor/monitors`).
    ///
    /// # Errors
    /// As [`Client::events`].
    pub fn monitors(
        &self,
        query: &MonitorsQuery,
    ) -> impl Stream<Item = Result<Monitor, Error>> + Send + Unpin + '_ {
        let mut url = self
            .inner
            .transport
            .endpoint(&["api", "processmonitor", "monitors"]);
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(status) = &query.status {
                pairs.append_pair("status", status);
            }
            if let Some(category) = &query.category {
                pairs.append_pair("category", category);
            }
        }
        self.pages(Source::MONITORS, url)
    }

    /// The first page's address of an entity API listing.
    fn first_page(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.transport.endpoint(segments);
        url.query_pairs_mut()
            .append_pair("start", "0")
            .append_pair("max", &DEFAULT_PAGE_SIZE.to_string());
        url
    }

    /// Reads `first` and the pages after it, one request per page as the stream is polled.
    /// Paging stops at a page without a `Next` link, an empty page, or a link back to the
    /// same page.
    fn pages<T: Send + 'static>(
        &self,
        source: Source<T>,
        first: Url,
    ) -> impl Stream<Item = Result<T, Error>> + Send + Unpin + '_ {
        stream::try_unfold(Paging::Next(first), move |paging| async move {
            let url = match paging {
                Paging::Next(url) => url,
                Paging::Refused(err) => return Err(err),
                Paging::Done => return Ok(None),
            };
            let response = self
                .inner
                .call(source.operation, Repeat::Safe, |http| {
                    http.get(url.clone()).header(ACCEPT, source.accept)
                })
                .await?;
            if !response.status().is_success() {
                return Err(self.inner.failure(source.operation, response).await);
            }
            let body = read_body(source.operation, source.what, response).await?;
            let page = (source.parse)(&body)?;
            // This page's records come out before a refused next page's error.
            let following = match &page.next {
                Some(next) if !page.items.is_empty() => match next_page(&url, next, source.what) {
                    Ok(next) if next == url => Paging::Done,
                    Ok(next) => Paging::Next(next),
                    Err(err) => Paging::Refused(err),
                },
                _ => Paging::Done,
            };
            let items = stream::iter(page.items.into_iter().map(Ok));
            Ok(Some((items, following)))
        })
        .try_flatten()
        .boxed()
    }
}

/// Where a listing goes after a page.
enum Paging {
    Next(Url),
    Refused(Error),
    Done,
}

/// How one kind of listing is asked for and read.
struct Source<T> {
    operation: &'static str,
    what: &'static str,
    accept: &'static str,
    parse: fn(&[u8]) -> Result<Page<T>, Error>,
}

impl<T> Clone for Source<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Source<T> {}

impl Source<EventAction> {
    const EVENTS: Source<EventAction> = Source {
        operation: "read the event log",
        what: "the event log",
        accept: "application/xml",
        parse: |body| event_actions_page(&String::from_utf8_lossy(body)),
    };
}

impl Source<UpdatedEntity> {
    const UPDATED: Source<UpdatedEntity> = Source {
        operation: "list the entities updated since a time",
        what: "the entities updated since",
        accept: "application/xml",
        parse: |body| updated_page(&String::from_utf8_lossy(body)),
    };
}

impl Source<Monitor> {
    const MONITORS: Source<Monitor> = Source {
        operation: "list the process monitors",
        what: "the process monitors",
        accept: "application/json",
        parse: monitors_page,
    };
}

/// One page of an answer: its records and where the next page is.
#[derive(Debug)]
pub(crate) struct Page<T> {
    pub(crate) items: Vec<T>,
    pub(crate) next: Option<String>,
}

/// A time as the entity API's queries take it: UTC with milliseconds.
pub(crate) fn query_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Reads a time Preservica wrote: RFC 3339, or without an offset (taken as UTC).
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

/// The next page's address, read relative to the current page's, when it is on the same
/// server: the access token is sent with it, so an address elsewhere is refused rather than
/// followed.
pub(crate) fn next_page(base: &Url, next: &str, what: &'static str) -> Result<Url, Error> {
    let url = base.join(next.trim()).map_err(|err| Error::Decode {
        what,
        detail: format!("the next page's address {next:?} is not a URL: {err}"),
    })?;
    let same_server = url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
        && (url.scheme() == base.scheme() || (base.scheme() == "http" && url.scheme() == "https"));
    if same_server {
        Ok(url)
    } else {
        Err(Error::Decode {
            what,
            detail: format!(
                "the next page is on another server ({}); it is not followed, because the access token would go with it",
                url.origin().ascii_serialization()
            ),
        })
    }
}

fn decode(what: &'static str) -> impl Fn(String) -> Error {
    move |detail| Error::Decode { what, detail }
}

fn parse_xml<'a>(text: &'a str, what: &'static str) -> Result<roxmltree::Document<'a>, Error> {
    roxmltree::Document::parse(text).map_err(|err| decode(what)(format!("not XML: {err}")))
}

/// The text of `node`'s first child element named `name`, trimmed, when not empty.
fn child_text(node: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    node.children()
        .find(|it| it.is_element() && it.tag_name().name() == name)
        .and_then(|it| it.text())
        .map(str::trim)
        .filter(|it| !it.is_empty())
        .map(str::to_owned)
}

fn child<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'input>> {
    node.children()
        .find(|it| it.is_element() && it.tag_name().name() == name)
}

/// The `Next` link anywhere in the document (inside `Paging`).
fn next_link(document: &roxmltree::Document<'_>) -> Option<String> {
    document
        .descendants()
        .find(|it| it.is_element() && it.tag_name().name() == "Next")
        .and_then(|it| it.text())
        .map(str::trim)
        .filter(|it| !it.is_empty())
        .map(str::to_owned)
}

/// Reads a page of event actions: `EventAction` elements, each holding an `Event`. A page
/// that holds bare `Event` elements instead (as the repository-wide log may) reads too, each
/// event as an action without an entity unless it names one.
pub(crate) fn event_actions_page(xml: &str) -> Result<Page<EventAction>, Error> {
    const WHAT: &str = "the event log";
    let document = parse_xml(xml, WHAT)?;
    let named = |name: &'static str| {
        document
            .descendants()
            .filter(move |it| it.is_element() && it.tag_name().name() == name)
    };
    let mut items: Vec<EventAction> = named("EventAction").map(read_action).collect();
    if items.is_empty() {
        items = named("Event")
            .filter(|it| {
                !it.ancestors()
                    .skip(1)
                    .any(|up| up.tag_name().name() == "EventAction")
            })
            .map(read_action)
            .collect();
    }
    Ok(Page {
        items,
        next: next_link(&document),
    })
}

fn read_action(node: roxmltree::Node<'_, '_>) -> EventAction {
    let is_action = node.tag_name().name() == "EventAction";
    let event = if is_action {
        child(node, "Event")
    } else {
        Some(node)
    };
    let from_event = |name: &str| event.and_then(|it| child_text(it, name));
    let action_date = if is_action {
        child_text(node, "Date")
    } else {
        None
    };
    EventAction {
        event_type: event
            .and_then(|it| it.attribute("type"))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned(),
        event_ref: from_event("Ref"),
        command_type: node.attribute("commandType").map(str::to_owned),
        date: action_date
            .or_else(|| from_event("Date"))
            .as_deref()
            .and_then(parse_time),
        entity: child_text(node, "Entity").and_then(|it| EntityRef::new(&it).ok()),
        user: from_event("User"),
        workflow_name: from_event("WorkflowName"),
    }
}

/// Reads a page of `updated-since`: `Entity` elements with `ref`, `type`, `title` and, for a
/// deleted entity, `deleted`. An entity without a usable reference is skipped.
pub(crate) fn updated_page(xml: &str) -> Result<Page<UpdatedEntity>, Error> {
    let document = parse_xml(xml, "the entities updated since")?;
    let items = document
        .descendants()
        .filter(|it| it.is_element() && it.tag_name().name() == "Entity")
        .filter_map(|node| {
            let reference = EntityRef::new(node.attribute("ref")?).ok()?;
            Some(UpdatedEntity {
                reference,
                entity_type: EntityType::parse(node.attribute("type").unwrap_or_default()),
                title: node.attribute("title").map(str::to_owned),
                deleted: node
                    .attribute("deleted")
                    .is_some_and(|it| !it.eq_ignore_ascii_case("false")),
            })
        })
        .collect();
    Ok(Page {
        items,
        next: next_link(&document),
    })
}

/// Reads a page of process monitors: JSON `{"value": {"monitors": [...], "paging": {"next"}}}`.
pub(crate) fn monitors_page(json: &[u8]) -> Result<Page<Monitor>, Error> {
    #[derive(Deserialize)]
    struct Answer {
        value: Value,
    }
    #[derive(Deserialize)]
    struct Value {
        #[serde(default)]
        monitors: Vec<Monitor>,
        #[serde(default)]
        paging: Option<Paging>,
    }
    #[derive(Deserialize)]
    struct Paging {
        #[serde(default)]
        next: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(json)
        .map_err(|err| decode("the process monitors")(err.to_string()))?;
    Ok(Page {
        items: answer.value.monitors,
        next: answer
            .value
            .paging
            .and_then(|it| it.next)
            .filter(|it| !it.trim().is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIONS_V77: &str = r#"<EventActionsResponse xmlns="http://preservica.com/EntityAPI/v7.7" xmlns:xip="http://preservica.com/XIP/v7.7">
  <EventActions>
    <xip:EventAction commandType="command_create">
      <xip:Event type="Ingest">
        <xip:Ref>6da319fa-07e0-4a83-9c5a-b6bad08445b1</xip:Ref>
        <xip:Date>2023-06-26T08:14:08.441Z</xip:Date>
        <xip:User>test user</xip:User>
      </xip:Event>
      <xip:Date>2023-06-26T08:14:07.441Z</xip:Date>
      <xip:Entity>a9e1cae8-ea06-4157-8dd4-82d0525b031c</xip:Entity>
      <xip:SerialisedCommand/>
      <xip:SomethingNew>kept out</xip:SomethingNew>
    </xip:EventAction>
    <xip:EventAction commandType="Moved">
      <xip:Event type="Moved"><xip:Ref>e2</xip:Ref><xip:Date>2023-06-27T10:00:00</xip:Date></xip:Event>
      <xip:Entity>b1</xip:Entity>
    </xip:EventAction>
  </EventActions>
  <Paging><Next>https://host.example/api/entity/v7.7/events?max=2&amp;start=2</Next><TotalResults>5</TotalResults></Paging>
</EventActionsResponse>"#;

    #[test]
    fn reads_event_actions_in_any_namespace_version() {
        let page = event_actions_page(ACTIONS_V77).unwrap();
        assert_eq!(page.items.len(), 2);
        let first = &page.items[0];
        assert_eq!(first.event_type, "Ingest");
        assert_eq!(
            first.event_ref.as_deref(),
            Some("6da319fa-07e0-4a83-9c5a-b6bad08445b1")
        );
        assert_eq!(first.command_type.as_deref(), Some("command_create"));
        assert_eq!(
            first.date,
            parse_time("2023-06-26T08:14:07.441Z"),
            "the action's date wins over the event's"
        );
        assert_eq!(
            first.entity.as_ref().map(EntityRef::as_str),
            Some("a9e1cae8-ea06-4157-8dd4-82d0525b031c")
        );
        assert_eq!(first.user.as_deref(), Some("test user"));
        let second = &page.items[1];
        assert_eq!(second.event_type, "Moved");
        assert_eq!(
            second.date.map(|it| it.to_rfc3339()),
            Some("2023-06-27T10:00:00+00:00".to_owned()),
            "a date without an offset is UTC"
        );
        assert_eq!(
            page.next.as_deref(),
            Some("https://host.example/api/entity/v7.7/events?max=2&start=2")
        );

        let v60 = ACTIONS_V77.replace("v7.7", "v6.0");
        assert_eq!(event_actions_page(&v60).unwrap().items, page.items);
    }

    #[test]
    fn reads_bare_events_and_keeps_unknown_types() {
        let xml = r#"<EventsResponse xmlns:xip="http://preservica.com/XIP/v6.0"><Events>
            <xip:Event type="SomethingPreservicaAdded"><xip:Ref>e9</xip:Ref><xip:Date>2024-01-01T00:00:00Z</xip:Date></xip:Event>
            <xip:Event><xip:Ref>e10</xip:Ref></xip:Event>
        </Events><Paging><TotalResults>2</TotalResults></Paging></EventsResponse>"#;
        let page = event_actions_page(xml).unwrap();
        let types: Vec<&str> = page.items.iter().map(|it| it.event_type.as_str()).collect();
        assert_eq!(types, ["SomethingPreservicaAdded", ""]);
        assert_eq!(page.items[0].entity, None);
        assert_eq!(page.next, None);
    }

    #[test]
    fn reads_updated_entities_with_deleted_marks_and_no_total() {
        let xml = r#"<EntitiesResponse xmlns="http://preservica.com/EntityAPI/v7.7"><Entities>
            <Entity title="page1File.txt" ref="8a8b1582-aa5f-4eb0-9c5d-2c16049fcb91" type="IO">http://host/x</Entity>
            <Entity ref="f1" type="SO" deleted="true"/>
            <Entity ref="../etc" type="IO"/>
        </Entities><Paging><Next>/api/entity/entities/updated-since?start=3</Next></Paging></EntitiesResponse>"#;
        let page = updated_page(xml).unwrap();
        assert_eq!(
            page.items,
            [
                UpdatedEntity {
                    reference: EntityRef::new("8a8b1582-aa5f-4eb0-9c5d-2c16049fcb91").unwrap(),
                    entity_type: EntityType::Asset,
                    title: Some("page1File.txt".to_owned()),
                    deleted: false,
                },
                UpdatedEntity {
                    reference: EntityRef::new("f1").unwrap(),
                    entity_type: EntityType::Folder,
                    title: None,
                    deleted: true,
                },
            ]
        );
        assert_eq!(
            page.next.as_deref(),
            Some("/api/entity/entities/updated-since?start=3")
        );
    }

    #[test]
    fn reads_monitors_with_missing_fields() {
        let json = br#"{"success":true,"version":1,"value":{"paging":{"totalResults":2,"next":"https://h/api/processmonitor/monitors?start=2"},
            "monitors":[{"mappedId":"m1","name":"pkg.zip","status":"Failed","category":"Ingest","started":"2024-05-01T10:00:00.000Z","errors":3,"canRetry":true},
                        {"mappedId":"m2"}]}}"#;
        let page = monitors_page(json).unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.items[0].name.as_deref(), Some("pkg.zip"));
        assert_eq!(page.items[0].errors, Some(3));
        assert_eq!(page.items[1].status, None);
        assert!(page.next.is_some());
    }

    #[test]
    fn refuses_what_is_not_xml_or_json_with_a_message() {
        let err = event_actions_page("<unclosed").unwrap_err().to_string();
        assert!(
            err.contains("the event log") && err.contains("not XML"),
            "{err}"
        );
        let err = monitors_page(b"[]").unwrap_err().to_string();
        assert!(err.contains("process monitors"), "{err}");
    }

    #[test]
    fn follows_next_pages_only_on_the_same_server() {
        let base = Url::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            next_page(&base, "/api/entity/events?start=25", "x")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/api/entity/events?start=25"
        );
        let err = next_page(&base, "http://evil.example/steal", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("another server"), "{err}");
        assert!(next_page(&base, "http://127.0.0.1:9999/x", "x").is_err());
    }

    #[test]
    fn writes_query_times_in_utc_with_milliseconds() {
        let time = parse_time("2026-12-01T10:00:00.123456+01:00").unwrap();
        assert_eq!(query_time(time), "2026-12-01T09:00:00.123Z");
    }
}
