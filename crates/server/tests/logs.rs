//! Nothing secret reaches the log: a real server on 127.0.0.1:0 with every tracing event down
//! to trace level captured, driven through challenges (good and oracle), good, tampered,
//! wrongly signed and unsigned deliveries and a failing handler, then every captured line,
//! every response body and every error message searched for the secret, the signatures and
//! the challenge HMACs in each form they could be printed in.

mod common;

use preservica_webhook_core::{Secret, challenge_response, sign};
use preservica_webhook_server::{HandlerError, Server};

use common::*;

/// The ways 32 MAC bytes could end up in a line: hex either case, base64, a Debug array.
fn renderings(mac: &[u8]) -> Vec<String> {
    use base64::Engine as _;
    let hex: String = mac.iter().map(|byte| format!("{byte:02x}")).collect();
    vec![
        hex.clone(),
        hex.to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(mac),
        format!("{mac:?}"),
    ]
}

/// The HMAC a challenge answer carries, as bytes.
fn challenge_mac(code: &str) -> Vec<u8> {
    let answer = challenge_response(&secret(), code).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    let hex = json["challengeResponse"].as_str().unwrap();
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
        .collect()
}

fn forbid(forbidden: &mut Vec<(String, String)>, name: &str, mac: &[u8]) {
    for rendering in renderings(mac) {
        forbidden.push((name.to_owned(), rendering));
    }
}

fn check_clean(what: &str, text: &str, forbidden: &[(String, String)]) {
    for (name, value) in forbidden {
        for line in text.lines() {
            assert!(
                !line.contains(value.as_str()),
                "{what} shows {name} ({value}): {line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_errors_show_no_secret_signature_or_challenge_hmac() {
    let log = captured();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.webhook.retry.max_attempts = 2;
    // The first call of every delivery fails, so the retry and failure paths log too.
    let (handler, mut calls) = Scripted::new(|job| {
        if job.attempt == 1 {
            Err(HandlerError::new("the archive is busy"))
        } else {
            Ok(())
        }
    });
    let debug_config = format!("{config:?}");
    let server = Running::start(config.clone(), handler).await;
    let client = client();
    let url = server.url("/");
    let other = Secret::new("someone-elses-secret").unwrap();
    let mut forbidden: Vec<(String, String)> = vec![("the secret".into(), SECRET.into())];
    let mut bodies = Vec::new();

    // A challenge, answered: its HMAC is in the answer and nowhere else.
    let code = "a1b2c3-challenge";
    let answer = client
        .post(format!("{url}?challengeCode={code}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    forbid(&mut forbidden, "a challenge HMAC", &challenge_mac(code));

    // An oracle code, refused: what it asks for is a delivery signature of the forged body.
    let forged = body(666);
    let oracle = client
        .post(url.as_str())
        .query(&[(
            "challengeCode",
            format!(
                "preservica-webhook-auth{}",
                String::from_utf8_lossy(&forged)
            ),
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(oracle.status(), 400);
    bodies.push(oracle.text().await.unwrap());
    forbid(
        &mut forbidden,
        "the oracle's HMAC",
        sign(&secret(), &forged).as_bytes().as_slice(),
    );

    // A good delivery, processed on its second attempt.
    let good = body(1);
    assert_eq!(deliver(&client, &url, &secret(), &good).await, 200);
    forbid(
        &mut forbidden,
        "a good signature",
        sign(&secret(), &good).as_bytes(),
    );
    let first = next_call(&mut calls).await;
    let second = next_call(&mut calls).await;
    assert_eq!((first.ok, second.ok), (false, true));

    // Tampered: signed for one body, another sent. Neither the signature sent nor the one the
    // tampered body would need may show.
    let signed_for = body(2);
    let tampered = body(3);
    let signature = sign(&secret(), &signed_for);
    let refused = client
        .post(url.as_str())
        .header("Preservica-Signature", signature.to_hex())
        .body(tampered.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    bodies.push(refused.text().await.unwrap());
    forbid(
        &mut forbidden,
        "a tampered delivery's signature",
        signature.as_bytes(),
    );
    forbid(
        &mut forbidden,
        "the signature a tampered body needs",
        sign(&secret(), &tampered).as_bytes(),
    );

    // Signed with another secret.
    let wrong = body(4);
    assert_eq!(deliver(&client, &url, &other, &wrong).await, 401);
    forbid(
        &mut forbidden,
        "a wrong secret's signature",
        sign(&other, &wrong).as_bytes(),
    );
    forbid(
        &mut forbidden,
        "the signature a wrongly signed body needs",
        sign(&secret(), &wrong).as_bytes(),
    );
    forbidden.push(("the other secret".into(), "someone-elses-secret".into()));

    // Unsigned.
    let unsigned = body(5);
    let refused = client
        .post(url.as_str())
        .body(unsigned.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    bodies.push(refused.text().await.unwrap());
    forbid(
        &mut forbidden,
        "the signature an unsigned body needs",
        sign(&secret(), &unsigned).as_bytes(),
    );

    // A second server on the same inbox fails: its error message is an error message too.
    let mut second_config = config.clone();
    second_config.addr = server.addr;
    let bind_error = match Server::bind(second_config, Scripted::ok().0).await {
        Ok(_) => panic!("a second server bound the same address and inbox"),
        Err(err) => format!("{err} / {err:?}"),
    };
    server.stop().await;

    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    // The capture works and reaches the lowest levels this run produces.
    for expected in [
        "listening on",
        "verified delivery",
        "DEBUG",
        "the archive is busy",
    ] {
        assert!(
            text.contains(expected),
            "no {expected:?} in the log:\n{text}"
        );
    }
    check_clean("the log", &text, &forbidden);
    check_clean("a response body", &bodies.join("\n"), &forbidden);
    check_clean("the configuration's Debug", &debug_config, &forbidden);
    check_clean("a bind error", &bind_error, &forbidden);
}

/// The captured `request` lines that name `remote` as their remote address.
fn request_lines_from(remote: std::net::SocketAddr) -> Vec<String> {
    let text = String::from_utf8(captured().lock().unwrap().clone()).unwrap();
    let remote = format!("remote={remote}");
    text.lines()
        .filter(|line| {
            let mut words = line.split_whitespace();
            words.clone().any(|word| word == "request") && words.any(|word| word == remote)
        })
        .map(str::to_owned)
        .collect()
}

/// The level word of a formatted line.
fn level(line: &str) -> &str {
    line.split_whitespace()
        .find(|word| ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(word))
        .unwrap_or("none")
}

/// The target of a formatted line: the word after the level, without its colon.
fn target(line: &str) -> &str {
    let mut words = line.split_whitespace();
    words.find(|word| *word == level(line));
    words
        .next()
        .and_then(|word| word.strip_suffix(':'))
        .unwrap_or("none")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_a_delivery_at_debug_under_the_request_target_with_its_remote_address() {
    captured();
    let dir = tempfile::tempdir().unwrap();
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config(&dir), handler).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let client_addr = stream.local_addr().unwrap();
    let request = length_request("/", &signature(&secret(), BODY), BODY);
    tokio::io::AsyncWriteExt::write_all(&mut stream, &request)
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.unwrap().status, 200);
    server.stop().await;

    let lines = request_lines_from(client_addr);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(
        (level(&lines[0]), target(&lines[0])),
        ("DEBUG", "preservica_webhook_server::request"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("status=200"), "{}", lines[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_health_and_metrics_requests_at_debug_under_the_probe_target() {
    captured();
    let dir = tempfile::tempdir().unwrap();
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config(&dir), handler).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let client_addr = stream.local_addr().unwrap();
    for path in ["/healthz", "/metrics"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .unwrap();
        assert_eq!(read_response(&mut stream).await.unwrap().status, 200);
    }
    server.stop().await;

    let lines = request_lines_from(client_addr);
    let levels: Vec<(&str, &str, bool, bool)> = lines
        .iter()
        .map(|line| {
            (
                level(line),
                target(line),
                line.contains(r#"path="/healthz""#),
                line.contains(r#"path="/metrics""#),
            )
        })
        .collect();
    let probe = "preservica_webhook_server::probe";
    assert_eq!(
        levels,
        [("DEBUG", probe, true, false), ("DEBUG", probe, false, true)],
        "{lines:#?}"
    );
}
