//! A server that answers with more than any Preservica answer holds is refused, whether it
//! announces the size or streams it in chunks, instead of filling the client's memory.

mod common;

use common::*;
use preservica_webhook_client::{Client, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// More than the client reads of one answer (16 MiB).
const OVERSIZED: usize = 17 * 1024 * 1024;

fn is_too_large(error: &Error) -> bool {
    matches!(error, Error::Decode { detail, .. } if detail.contains("larger than 16 MiB"))
}

#[tokio::test]
async fn refuses_an_announced_oversized_answer() {
    let server = MockServer::start().await;
    mount_login(&server, "t1").await;
    let mut list = b"[".to_vec();
    list.resize(OVERSIZED, b' ');
    list.push(b']');
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(ResponseTemplate::new(200).set_body_raw(list, "application/json"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/entity/information-objects/a1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(vec![b' '; OVERSIZED], "application/xml"),
        )
        .mount(&server)
        .await;
    let client = client(&server);

    let err = client.subscriptions().await.unwrap_err();
    assert!(is_too_large(&err), "{err:?}");
    let err = client.asset(&entity_ref("a1")).await.unwrap_err();
    assert!(is_too_large(&err), "{err:?}");
}

#[tokio::test]
async fn refuses_an_oversized_answer_streamed_in_chunks() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        // One connection per request: the login, then the endless list.
        for _ in 0..2 {
            let (mut socket, _) = listener.accept().await.unwrap();
            let head = read_head(&mut socket).await;
            if head.starts_with("POST /api/accesstoken/login") {
                let body = br#"{"success":true,"token":"t1","validFor":15}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
                socket.write_all(body).await.unwrap();
                continue;
            }
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0;
            // Stop once the client hangs up (it must, before the body ends).
            while sent <= OVERSIZED {
                let frame = [
                    format!("{:x}\r\n", chunk.len()).into_bytes(),
                    chunk.clone(),
                    b"\r\n".to_vec(),
                ]
                .concat();
                if socket.write_all(&frame).await.is_err() {
                    return sent;
                }
                sent += chunk.len();
            }
            let _ = socket.write_all(b"0\r\n\r\n").await;
            return sent;
        }
        0
    });
    let client = Client::builder()
        .server(&format!("http://{address}"))
        .username(USERNAME)
        .password(PASSWORD)
        .tenant(TENANT)
        .retry(fast_retry(0))
        .build()
        .unwrap();

    let err = client.subscriptions().await.unwrap_err();
    assert!(is_too_large(&err), "{err:?}");
    drop(client);
    let sent = server.await.unwrap();
    assert!(
        sent > 16 * 1024 * 1024,
        "the answer was streamed ({sent} bytes)"
    );
}

/// Reads a request head and its Content-Length body.
async fn read_head(socket: &mut tokio::net::TcpStream) -> String {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = socket.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the client closed before sending a request");
        data.extend_from_slice(&buffer[..read]);
        let Some(end) = data.windows(4).position(|it| it == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        while data.len() < end + 4 + length {
            let read = socket.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the client closed mid-request");
            data.extend_from_slice(&buffer[..read]);
        }
        return head;
    }
}

/// A reference the tests know to be valid.
fn entity_ref(text: &str) -> preservica_webhook_client::EntityRef {
    text.parse().unwrap()
}
