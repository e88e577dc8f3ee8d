//! The operations against a mock Preservica: subscriptions, roles, entities, thumbnails,
//! retries, and secrets kept out of every message.

mod common;

use std::time::{Duration, Instant};

use common::*;
use preservica_webhook_client::{
    EntityType, Error, Secret, SubscriptionId, ThumbnailSize, TriggerType,
};
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const HOOK_SECRET: &str = "hook-secret-never-shown";
const ASSET: &str = "7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2";

async fn logged_in_server() -> MockServer {
    let server = MockServer::start().await;
    mount_login(&server, "tok").await;
    server
}

#[tokio::test]
async fn subscribe_sends_the_documented_body_and_headers() {
    let server = logged_in_server().await;
    Mock::given(method("POST"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "4583e1e6d2c72ed96a1151bc7dfd53c2",
            "url": "https://hooks.example.org/dev",
            "triggerType": "FULL_TEXT_INDEXED",
            "includeIdentifiers": true
        })))
        .expect(1)
        .mount(&server)
        .await;
    let secret = Secret::new(HOOK_SECRET).unwrap();

    let created = client(&server)
        .subscribe(
            "https://hooks.example.org/dev",
            &TriggerType::FullTextIndexed,
            &secret,
        )
        .await
        .unwrap();

    assert_eq!(created.id.as_str(), "4583e1e6d2c72ed96a1151bc7dfd53c2");
    assert_eq!(created.trigger_type, Some(TriggerType::FullTextIndexed));
    let request = requests_to(&server, SUBSCRIPTIONS).await.remove(0);
    assert_eq!(
        header_value(&request, "preservica-access-token"),
        Some("tok")
    );
    assert_eq!(header_value(&request, "accept"), Some("application/json"));
    assert_eq!(
        header_value(&request, "content-type"),
        Some("application/json")
    );
    let body: serde_json::Value = request.body_json().unwrap();
    assert_eq!(
        body,
        json!({
            "url": "https://hooks.example.org/dev",
            "triggerType": "FULL_TEXT_INDEXED",
            "secret": HOOK_SECRET,
            "includeIdentifiers": true
        })
    );
}

#[tokio::test]
async fn failed_subscribe_keeps_status_and_message_and_mentions_the_handshake() {
    let server = logged_in_server().await;
    Mock::given(method("POST"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "message": format!("Challenge failed for secret {HOOK_SECRET}")
        })))
        .expect(1)
        .mount(&server)
        .await;
    let secret = Secret::new(HOOK_SECRET).unwrap();

    let err = client(&server)
        .subscribe("https://h.example/x", &TriggerType::Moved, &secret)
        .await
        .unwrap_err();

    let text = err.to_string();
    assert_eq!(err.status().map(|it| it.as_u16()), Some(400));
    assert!(text.contains("Challenge failed"), "{text}");
    assert!(text.contains("unable to verify the receiver"), "{text}");
    assert!(!text.contains(HOOK_SECRET), "{text}");
    assert!(!format!("{err:?}").contains(HOOK_SECRET));
}

#[tokio::test]
async fn subscribe_is_not_resent_after_a_503() {
    let server = logged_in_server().await;
    Mock::given(method("POST"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;

    let err = client(&server)
        .subscribe(
            "https://h.example/x",
            &TriggerType::Moved,
            &Secret::new("s").unwrap(),
        )
        .await
        .unwrap_err();

    assert_eq!(err.status().map(|it| it.as_u16()), Some(503));
}

#[tokio::test]
async fn list_keeps_unknown_fields_and_trigger_types() {
    let server = logged_in_server().await;
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .and(header("Accept", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"id": "a1", "url": "https://h/1", "triggerType": "MOVED", "includeIdentifiers": "true"},
            {"id": "b2", "url": "https://h/2", "triggerType": "SOMETHING_NEWER", "includeIdentifiers": false,
             "createdBy": "admin", "tenant": "BRAMA"}
        ])))
        .mount(&server)
        .await;

    let list = client(&server).subscriptions().await.unwrap();

    assert_eq!(list.len(), 2);
    assert_eq!(list[0].trigger_type, Some(TriggerType::Moved));
    assert!(list[0].include_identifiers);
    assert_eq!(
        list[1].trigger_type,
        Some(TriggerType::Unknown("SOMETHING_NEWER".to_owned()))
    );
    assert_eq!(list[1].extra["createdBy"], "admin");
}

#[tokio::test]
async fn list_that_is_not_json_is_a_decode_error() {
    let server = logged_in_server().await;
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"))
        .mount(&server)
        .await;

    let err = client(&server).subscriptions().await.unwrap_err();

    assert!(
        matches!(
            err,
            Error::Decode {
                what: "the subscription list",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn unsubscribe_deletes_by_id_and_reports_404_as_not_found() {
    let server = logged_in_server().await;
    Mock::given(method("DELETE"))
        .and(path(format!("{SUBSCRIPTIONS}/a1")))
        .and(header("Preservica-Access-Token", "tok"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("{SUBSCRIPTIONS}/gone")))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let client = client(&server);

    client
        .unsubscribe(&SubscriptionId::new("a1"))
        .await
        .unwrap();
    let err = client
        .unsubscribe(&SubscriptionId::new("gone"))
        .await
        .unwrap_err();

    assert!(err.is_not_found(), "{err:?}");
    assert!(err.to_string().contains("subscription gone"), "{err}");
}

#[tokio::test]
async fn unsubscribe_all_removes_every_one_and_reports_each_failure() {
    let server = logged_in_server().await;
    let ids = ["s1", "s2", "s3", "s4", "s5", "s6", "bad1", "bad2", "gone"];
    let list: Vec<_> = ids
        .iter()
        .map(|id| json!({"id": id, "url": "https://h", "triggerType": "MOVED", "includeIdentifiers": true}))
        .collect();
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(ResponseTemplate::new(200).set_body_json(list))
        .mount(&server)
        .await;
    for id in ids {
        let status = match id {
            "bad1" => 500,
            "bad2" => 409,
            "gone" => 404,
            _ => 204,
        };
        Mock::given(method("DELETE"))
            .and(path(format!("{SUBSCRIPTIONS}/{id}")))
            .respond_with(
                ResponseTemplate::new(status)
                    .set_body_json(json!({"message": format!("cannot delete {id}")}))
                    .set_delay(Duration::from_millis(20)),
            )
            .expect(1)
            .mount(&server)
            .await;
    }

    let outcome = client(&server).unsubscribe_all().await.unwrap();

    let removed: Vec<_> = outcome.removed.iter().map(SubscriptionId::as_str).collect();
    assert_eq!(removed, ["gone", "s1", "s2", "s3", "s4", "s5", "s6"]);
    let failed: Vec<_> = outcome
        .failed
        .iter()
        .map(|(id, err)| (id.as_str(), err.status().map(|it| it.as_u16())))
        .collect();
    assert_eq!(failed, [("bad1", Some(500)), ("bad2", Some(409))]);
    assert!(
        outcome.failed[1]
            .1
            .to_string()
            .contains("cannot delete bad2")
    );
}

#[tokio::test]
async fn forbidden_names_the_users_roles_and_the_one_needed() {
    let server = logged_in_server().await;
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(
            ResponseTemplate::new(403).set_body_json(json!({"message": "Access is denied"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(USER_DETAILS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "userName": USERNAME,
            "tenant": TENANT,
            "roles": ["ROLE_SDB_READ_ONLY_USER", "ROLE_SDB_REPORT_USER"],
            "fullName": "Alice"
        })))
        .expect(1)
        .mount(&server)
        .await;

    let err = client(&server).subscriptions().await.unwrap_err();

    let Error::Permission { roles, message, .. } = &err else {
        panic!("expected a permission error, got {err:?}");
    };
    assert_eq!(message, "Access is denied");
    assert_eq!(
        roles.as_deref(),
        Some(
            &[
                "ROLE_SDB_READ_ONLY_USER".to_owned(),
                "ROLE_SDB_REPORT_USER".to_owned()
            ][..]
        )
    );
    let text = err.to_string();
    assert!(
        text.contains("ROLE_SDB_READ_ONLY_USER, ROLE_SDB_REPORT_USER"),
        "{text}"
    );
    assert!(
        text.contains("ROLE_SDB_MANAGER_USER or ROLE_SDB_CONFIG_MANAGER_USER"),
        "{text}"
    );
}

#[tokio::test]
async fn user_details_keeps_the_other_fields() {
    let server = logged_in_server().await;
    Mock::given(method("GET"))
        .and(path(USER_DETAILS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "userName": USERNAME, "roles": ["ROLE_SDB_MANAGER_USER"], "email": "a@example.org"
        })))
        .mount(&server)
        .await;

    let details = client(&server).user_details().await.unwrap();

    assert_eq!(details.user.as_deref(), Some(USERNAME));
    assert!(details.can_manage_webhooks());
    assert_eq!(details.extra["email"], "a@example.org");
}

#[tokio::test]
async fn reads_an_asset_from_the_captured_shape_fixture() {
    let server = logged_in_server().await;
    Mock::given(method("GET"))
        .and(path(format!("/api/entity/information-objects/{ASSET}")))
        .and(header("Preservica-Access-Token", "tok"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            include_str!("data/entity-response-io-v7.7.xml"),
            "application/xml;charset=UTF-8",
        ))
        .mount(&server)
        .await;

    let asset = client(&server).asset(&entity_ref(ASSET)).await.unwrap();

    assert_eq!(asset.reference, ASSET);
    assert_eq!(asset.entity_type, EntityType::Asset);
    assert_eq!(asset.title.as_deref(), Some("Minutes of the board, 1923"));
    assert_eq!(asset.security_tag.as_deref(), Some("open"));
    assert_eq!(
        asset.parent.as_deref(),
        Some("2b1c4f7e-9d3a-4d2e-8f61-0c5a7b9e1d20")
    );
}

#[tokio::test]
async fn entity_calls_use_the_path_of_their_kind_and_404_is_not_found() {
    let server = logged_in_server().await;
    Mock::given(method("GET"))
        .and(path("/api/entity/structural-objects/f1"))
        .respond_with(ResponseTemplate::new(404))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/entity/content-objects/c1"))
        .respond_with(ResponseTemplate::new(200).set_body_string(
            r#"<EntityResponse xmlns:xip="http://preservica.com/XIP/v8.0"><xip:ContentObject><xip:Ref>c1</xip:Ref><xip:Parent>a1</xip:Parent></xip:ContentObject></EntityResponse>"#,
        ))
        .mount(&server)
        .await;
    let client = client(&server);

    let err = client.folder(&entity_ref("f1")).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(err.to_string().contains("folder f1"), "{err}");
    let content = client
        .entity(&EntityType::ContentObject, &entity_ref("c1"))
        .await
        .unwrap();
    assert_eq!(content.parent.as_deref(), Some("a1"));
    let unknown = client
        .entity(&EntityType::Unknown("ZZ".to_owned()), &entity_ref("x"))
        .await
        .unwrap_err();
    assert!(unknown.is_configuration(), "{unknown:?}");
}

#[tokio::test]
async fn thumbnail_streams_every_byte_and_reports_the_content_type() {
    let server = logged_in_server().await;
    let image: Vec<u8> = (0..300_000u32).map(|it| (it % 251) as u8).collect();
    Mock::given(method("GET"))
        .and(path("/api/content/thumbnail"))
        .and(query_param("id", format!("sdb:IO|{ASSET}")))
        .and(query_param("size", "medium"))
        .and(header("Preservica-Access-Token", "tok"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(image.clone(), "image/png"))
        .mount(&server)
        .await;
    let client = client(&server);

    let mut out = Vec::new();
    let thumbnail = client
        .thumbnail(
            &EntityType::Asset,
            &entity_ref(ASSET),
            ThumbnailSize::Medium,
            &mut out,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(thumbnail.content_type.as_deref(), Some("image/png"));
    assert_eq!(thumbnail.extension(), "png");
    assert_eq!(thumbnail.bytes, image.len() as u64);
    assert_eq!(out, image);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("thumb.png");
    let written = client
        .thumbnail_to_file(
            &EntityType::Asset,
            &entity_ref(ASSET),
            ThumbnailSize::Medium,
            &file,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(written.bytes, image.len() as u64);
    assert_eq!(std::fs::read(&file).unwrap(), image);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file left"
    );
}

#[tokio::test]
async fn missing_thumbnail_is_none_and_writes_no_file() {
    let server = logged_in_server().await;
    Mock::given(method("GET"))
        .and(path("/api/content/thumbnail"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let client = client(&server);

    let mut out = Vec::new();
    let none = client
        .thumbnail(
            &EntityType::Folder,
            &entity_ref("f1"),
            ThumbnailSize::Large,
            &mut out,
        )
        .await
        .unwrap();
    assert_eq!(none, None);
    assert!(out.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let none = client
        .thumbnail_to_file(
            &EntityType::Folder,
            &entity_ref("f1"),
            ThumbnailSize::Small,
            &dir.path().join("t.jpg"),
        )
        .await
        .unwrap();
    assert_eq!(none, None);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let request = requests_to(&server, "/api/content/thumbnail")
        .await
        .remove(0);
    let query: Vec<_> = request.url.query_pairs().into_owned().collect();
    assert_eq!(
        query,
        [
            ("id".to_owned(), "sdb:SO|f1".to_owned()),
            ("size".to_owned(), "large".to_owned())
        ]
    );
}

#[tokio::test]
async fn retries_a_503_then_succeeds() {
    let server = logged_in_server().await;
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&server)
        .await;

    assert!(client(&server).subscriptions().await.unwrap().is_empty());

    assert_eq!(requests_to(&server, SUBSCRIPTIONS).await.len(), 2);
}

#[tokio::test]
async fn gives_up_after_three_503s() {
    let server = logged_in_server().await;
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(ResponseTemplate::new(503).set_body_string("Service Unavailable"))
        .expect(3)
        .mount(&server)
        .await;

    let err = builder(&server)
        .retry(fast_retry(2))
        .build()
        .unwrap()
        .subscriptions()
        .await
        .unwrap_err();

    assert_eq!(err.status().map(|it| it.as_u16()), Some(503), "{err:?}");
    assert_eq!(requests_to(&server, SUBSCRIPTIONS).await.len(), 3);
}

#[tokio::test]
async fn a_subscribe_that_timed_out_is_not_resent_but_a_list_is() {
    let server = logged_in_server().await;
    Mock::given(method("POST"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&server)
        .await;
    let client = builder(&server)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();

    let err = client
        .subscribe(
            "https://h.example/x",
            &TriggerType::Moved,
            &Secret::new("s").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Transport {
                operation: "subscribe",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(client.subscriptions().await.unwrap().is_empty());

    let requests = requests_to(&server, SUBSCRIPTIONS).await;
    let posts = requests.iter().filter(|it| it.method == "POST").count();
    let gets = requests.iter().filter(|it| it.method == "GET").count();
    assert_eq!((posts, gets), (1, 2));
}

#[tokio::test]
async fn honours_retry_after() {
    let server = logged_in_server().await;
    Mock::given(method("DELETE"))
        .and(path(format!("{SUBSCRIPTIONS}/a1")))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("{SUBSCRIPTIONS}/a1")))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;

    let started = Instant::now();
    client(&server)
        .unsubscribe(&SubscriptionId::new("a1"))
        .await
        .unwrap();

    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited only {:?} although the base delay is 1 ms",
        started.elapsed()
    );
}

#[tokio::test]
async fn connection_refused_is_retried_then_a_transport_error() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let client = preservica_webhook_client::Client::builder()
        .server(&format!("http://{address}"))
        .username(USERNAME)
        .password(PASSWORD)
        .retry(fast_retry(2))
        .build()
        .unwrap();

    let err = client.subscriptions().await.unwrap_err();

    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(!err.is_configuration());
}

#[tokio::test]
async fn secrets_never_appear_in_debug_or_error_text() {
    let server = MockServer::start().await;
    // A login failure that echoes the password back.
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "message": format!("bad password {PASSWORD}")
        })))
        .mount(&server)
        .await;
    let client = builder(&server)
        .two_factor_seed("JBSWY3DPEHPK3PXP")
        .build()
        .unwrap();
    let builder_debug = format!("{:?}", builder(&server).two_factor_seed("JBSWY3DPEHPK3PXP"));
    let login_error = client.subscriptions().await.unwrap_err();
    let subscribe_error = client
        .subscribe(
            "https://h.example/x",
            &TriggerType::Moved,
            &Secret::new(HOOK_SECRET).unwrap(),
        )
        .await
        .unwrap_err();

    let texts = [
        format!("{client:?}"),
        builder_debug,
        format!("{login_error:?}"),
        login_error.to_string(),
        format!("{subscribe_error:?}"),
        subscribe_error.to_string(),
    ];
    for text in &texts {
        for secret in [PASSWORD, "JBSWY3DPEHPK3PXP", HOOK_SECRET] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
    }
    assert!(texts[3].contains("bad password ***"), "{}", texts[3]);
}

/// Records when each request arrived, then answers 204 after `delay`.
struct ArrivalRecorder {
    arrivals: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    delay: Duration,
}

impl wiremock::Respond for ArrivalRecorder {
    fn respond(&self, _request: &wiremock::Request) -> ResponseTemplate {
        self.arrivals.lock().unwrap().push(Instant::now());
        ResponseTemplate::new(204).set_delay(self.delay)
    }
}

#[tokio::test]
async fn unsubscribe_all_deletes_concurrently_but_at_most_four_at_once() {
    let server = logged_in_server().await;
    let list: Vec<_> = (0..12)
        .map(|n| json!({"id": format!("s{n:02}"), "url": "https://h", "triggerType": "MOVED"}))
        .collect();
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(ResponseTemplate::new(200).set_body_json(list))
        .mount(&server)
        .await;
    let delay = Duration::from_millis(150);
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    Mock::given(method("DELETE"))
        .respond_with(ArrivalRecorder {
            arrivals: arrivals.clone(),
            delay,
        })
        .expect(12)
        .mount(&server)
        .await;

    let outcome = client(&server).unsubscribe_all().await.unwrap();

    assert_eq!(outcome.removed.len(), 12);
    assert!(outcome.failed.is_empty());
    // Within any window shorter than the answer delay, each of the four slots can start at
    // most one delete; sequential deletes would never put two in one window.
    let arrivals = arrivals.lock().unwrap().clone();
    let window = Duration::from_millis(100);
    let most_in_a_window = arrivals
        .iter()
        .map(|start| {
            arrivals
                .iter()
                .filter(|it| **it >= *start && it.duration_since(*start) < window)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        (2..=4).contains(&most_in_a_window),
        "{most_in_a_window} deletes started within {window:?}"
    );
}

#[tokio::test]
async fn does_not_follow_a_redirect_to_another_host_with_the_token() {
    let server = logged_in_server().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(0)
        .mount(&elsewhere)
        .await;
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("Location", format!("{}{SUBSCRIPTIONS}", elsewhere.uri())),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(USER_DETAILS))
        .respond_with(ResponseTemplate::new(307).insert_header("Location", "/api/user/details/v2"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/user/details/v2"))
        .and(header("Preservica-Access-Token", "tok"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"roles": []})))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);

    let err = client.subscriptions().await.unwrap_err();
    assert_eq!(err.status().map(|it| it.as_u16()), Some(302), "{err:?}");
    client.user_details().await.unwrap();
}

/// A reference the tests know to be valid.
fn entity_ref(text: &str) -> preservica_webhook_client::EntityRef {
    text.parse().unwrap()
}
