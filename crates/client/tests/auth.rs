//! Logging in, two-factor answers, token refresh and renewal after a 401.

mod common;

use std::sync::Arc;

use common::*;
use preservica_webhook_client::{Client, Error};
use serde_json::json;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Mounts `GET /api/user/details` answering for `token` only.
async fn mount_details_for(server: &MockServer, token: &str) {
    Mock::given(method("GET"))
        .and(path(USER_DETAILS))
        .and(header("Preservica-Access-Token", token))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"roles": ["ROLE_SDB_MANAGER_USER"]})),
        )
        .mount(server)
        .await;
}

#[tokio::test]
async fn logs_in_with_the_form_and_sends_the_token_header() {
    let server = MockServer::start().await;
    mount_login(&server, "t1").await;
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .and(header("Preservica-Access-Token", "t1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(2)
        .mount(&server)
        .await;
    let client = client(&server);

    assert!(client.subscriptions().await.unwrap().is_empty());
    assert!(client.subscriptions().await.unwrap().is_empty());

    let logins = requests_to(&server, LOGIN).await;
    assert_eq!(logins.len(), 1, "the token is cached");
    let login = &logins[0];
    assert_eq!(
        header_value(login, "content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let fields = form(login);
    assert_eq!(fields.len(), 3, "{fields:?}");
    assert_eq!(fields["username"], USERNAME);
    assert_eq!(fields["password"], PASSWORD);
    assert_eq!(fields["tenant"], TENANT);
    let user_agent = header_value(login, "user-agent").unwrap();
    assert!(
        user_agent.starts_with("preservica-webhook-client/"),
        "{user_agent}"
    );
}

#[tokio::test]
async fn refused_login_carries_the_server_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"success": false, "message": "Invalid credentials"})),
        )
        .expect(1)
        .mount(&server)
        .await;

    let err = client(&server).subscriptions().await.unwrap_err();

    assert!(
        matches!(&err, Error::Authentication { status, message } if status.as_u16() == 401 && message == "Invalid credentials"),
        "{err:?}"
    );
    assert!(err.is_configuration());
    assert!(err.to_string().contains("Invalid credentials"), "{err}");
}

#[tokio::test]
async fn learns_the_tenant_from_the_login_answer_and_sends_it_later() {
    let server = MockServer::start().await;
    mount_first_login_then(&server, "t1", 15, "t2").await;
    Mock::given(method("GET"))
        .and(path(USER_DETAILS))
        .and(header("Preservica-Access-Token", "t1"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    mount_details_for(&server, "t2").await;
    let client = Client::builder()
        .server(&server.uri())
        .username(USERNAME)
        .password(PASSWORD)
        .retry(fast_retry(0))
        .build()
        .unwrap();
    assert_eq!(client.tenant().await, None);

    client.user_details().await.unwrap();

    assert_eq!(client.tenant().await.as_deref(), Some(TENANT));
    let logins = requests_to(&server, LOGIN).await;
    assert_eq!(logins.len(), 2);
    let first = form(&logins[0]);
    assert_eq!(first.get("tenant"), None);
    assert_eq!(first["includeUserDetails"], "true");
    let second = form(&logins[1]);
    assert_eq!(second["tenant"], TENANT);
}

#[tokio::test]
async fn refreshes_the_token_before_it_runs_out() {
    let server = MockServer::start().await;
    // validFor 0: the token must be renewed before its next use.
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(login_answer("t1", 0))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(REFRESH))
        .and(header("Preservica-Access-Token", "t1"))
        .and(body_string_contains("refreshToken=refresh-t1"))
        .respond_with(login_answer("t2", 15))
        .expect(1)
        .mount(&server)
        .await;
    mount_details_for(&server, "t1").await;
    mount_details_for(&server, "t2").await;
    let client = client(&server);

    client.user_details().await.unwrap();
    client.user_details().await.unwrap();
    client.user_details().await.unwrap();

    let tokens: Vec<_> = requests_to(&server, USER_DETAILS)
        .await
        .iter()
        .map(|it| {
            header_value(it, "preservica-access-token")
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(tokens, ["t1", "t2", "t2"]);
    let refresh = &requests_to(&server, REFRESH).await[0];
    assert_eq!(form(refresh)["refreshToken"], "refresh-t1");
}

#[tokio::test]
async fn falls_back_to_a_new_login_when_the_refresh_fails() {
    let server = MockServer::start().await;
    mount_first_login_then(&server, "t1", 0, "t3").await;
    Mock::given(method("POST"))
        .and(path(REFRESH))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"message": "used"})))
        .expect(1)
        .mount(&server)
        .await;
    mount_details_for(&server, "t1").await;
    mount_details_for(&server, "t3").await;
    let client = client(&server);

    client.user_details().await.unwrap();
    client.user_details().await.unwrap();

    assert_eq!(requests_to(&server, LOGIN).await.len(), 2);
    let last = requests_to(&server, USER_DETAILS).await.pop().unwrap();
    assert_eq!(header_value(&last, "preservica-access-token"), Some("t3"));
}

#[tokio::test]
async fn twenty_concurrent_callers_after_a_401_cause_exactly_one_new_login() {
    let server = MockServer::start().await;
    mount_first_login_then(&server, "t1", 15, "t2").await;
    mount_details_for(&server, "t1").await;
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .and(header("Preservica-Access-Token", "t1"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .and(header("Preservica-Access-Token", "t2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&server)
        .await;
    let client = Arc::new(client(&server));
    client.user_details().await.unwrap();
    assert_eq!(requests_to(&server, LOGIN).await.len(), 1);

    let callers: Vec<_> = (0..20)
        .map(|_| {
            let client = Arc::clone(&client);
            tokio::spawn(async move { client.subscriptions().await })
        })
        .collect();
    for caller in callers {
        assert!(caller.await.unwrap().unwrap().is_empty());
    }

    assert_eq!(
        requests_to(&server, LOGIN).await.len(),
        2,
        "one login at the start, one renewal for all twenty callers"
    );
    let with_new_token = requests_to(&server, SUBSCRIPTIONS)
        .await
        .iter()
        .filter(|it| header_value(it, "preservica-access-token") == Some("t2"))
        .count();
    assert_eq!(with_new_token, 20, "every caller resent once");
}

#[tokio::test]
async fn a_second_401_after_a_new_login_is_an_error() {
    let server = MockServer::start().await;
    mount_login(&server, "t1").await;
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&server)
        .await;

    let err = client(&server).subscriptions().await.unwrap_err();

    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(requests_to(&server, LOGIN).await.len(), 2);
}

#[tokio::test]
async fn two_factor_without_a_seed_says_how_to_give_one() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"success": false, "message": "needs.2fa", "continuationToken": "cont-1"}),
        ))
        .mount(&server)
        .await;

    let err = client(&server).subscriptions().await.unwrap_err();

    assert!(matches!(err, Error::TwoFactorSeedMissing), "{err:?}");
    assert!(err.is_configuration());
    assert!(err.to_string().contains("PRESERVICA_2FA_TOKEN"), "{err}");
    assert!(requests_to(&server, COMPLETE_2FA).await.is_empty());
}

#[tokio::test]
async fn two_factor_not_set_up_is_a_clear_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"success": false, "message": "needs.2fa.setup"})),
        )
        .mount(&server)
        .await;

    let err = builder(&server)
        .two_factor_seed("JBSWY3DPEHPK3PXP")
        .build()
        .unwrap()
        .subscriptions()
        .await
        .unwrap_err();

    assert!(matches!(err, Error::TwoFactorNotSetUp), "{err:?}");
    assert!(err.to_string().contains("not set up"), "{err}");
}

#[tokio::test]
async fn a_refused_two_factor_code_carries_the_server_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"success": false, "message": "needs.2fa", "continuationToken": "cont-1"}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(COMPLETE_2FA))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "invalid.2fa.token"})),
        )
        .expect(1)
        .mount(&server)
        .await;

    let err = builder(&server)
        .two_factor_seed("JBSWY3DPEHPK3PXP")
        .build()
        .unwrap()
        .subscriptions()
        .await
        .unwrap_err();

    assert!(
        matches!(&err, Error::TwoFactorRejected { message, .. } if message == "invalid.2fa.token"),
        "{err:?}"
    );
}

#[test]
fn builder_refuses_incomplete_or_invalid_settings() {
    let check = |builder: preservica_webhook_client::ClientBuilder, expected: &str| {
        let err = builder.build().unwrap_err();
        assert!(err.is_configuration(), "{err:?}");
        assert!(err.to_string().contains(expected), "{err}");
    };
    check(Client::builder().username("u").password("p"), "no server");
    check(
        Client::builder().server("eu.preservica.com").password("p"),
        "no username",
    );
    check(
        Client::builder().server("eu.preservica.com").username("u"),
        "no password",
    );
    check(
        Client::builder()
            .server("ftp://host")
            .username("u")
            .password("p"),
        "not a host name or base URL",
    );
    check(
        Client::builder()
            .server("eu.preservica.com")
            .username("u")
            .password("p")
            .two_factor_seed("not base32!"),
        "not valid base32",
    );
}

#[test]
fn a_host_becomes_an_https_base_url() {
    let check = |server: &str, expected: &str| {
        let client = Client::builder()
            .server(server)
            .username("u")
            .password("p")
            .build()
            .unwrap();
        assert_eq!(client.base_url().as_str(), expected, "{server}");
    };
    check("eu.preservica.com", "https://eu.preservica.com/");
    check("http://127.0.0.1:8080", "http://127.0.0.1:8080/");
    check(
        "https://host.example/prefix/",
        "https://host.example/prefix/",
    );
}

#[tokio::test]
async fn concurrent_callers_share_one_refused_login() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"success": false, "message": "Invalid credentials"}))
                .set_delay(std::time::Duration::from_millis(50)),
        )
        .mount(&server)
        .await;
    let client = Arc::new(client(&server));

    let callers: Vec<_> = (0..20)
        .map(|_| {
            let client = Arc::clone(&client);
            tokio::spawn(async move { client.subscriptions().await })
        })
        .collect();
    for caller in callers {
        let err = caller.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Authentication { .. }), "{err:?}");
    }
    let logins_while_waiting = requests_to(&server, LOGIN).await.len();

    // A later call tries again.
    client.subscriptions().await.unwrap_err();
    let logins = requests_to(&server, LOGIN).await.len();

    assert!(
        logins_while_waiting <= 2,
        "{logins_while_waiting} logins for 20 concurrent callers"
    );
    assert_eq!(logins, logins_while_waiting + 1);
}
