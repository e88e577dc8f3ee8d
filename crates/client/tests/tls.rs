//! The client speaks TLS with its own crypto provider and leaves the process's default alone, so
//! an application that embeds it keeps its own choice (ring, aws-lc-rs, a FIPS build).
//!
//! This file is its own test binary: no other test may install a provider in its process, or
//! the check that none is installed would prove nothing.

use std::io::Read;
use std::time::Duration;

use preservica_webhook_client::{Client, RetryPolicy};

#[test]
fn building_a_client_installs_no_default_crypto_provider() {
    let client = Client::builder()
        .server("https://preservica.example.invalid")
        .username("alice@example.org")
        .password("never-sent")
        .build()
        .unwrap();
    assert!(
        rustls::crypto::CryptoProvider::get_default().is_none(),
        "building {client:?} installed a process-wide crypto provider"
    );
}

#[tokio::test]
async fn an_https_server_gets_a_tls_hello_offering_http2_and_http11() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let hello = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut hello = vec![0; 5];
        stream.read_exact(&mut hello).unwrap();
        let length = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
        hello.resize(5 + length, 0);
        stream.read_exact(&mut hello[5..]).unwrap();
        hello
    });
    let client = Client::builder()
        .server(&format!("https://{address}"))
        .username("alice@example.org")
        .password("never-sent")
        .retry(RetryPolicy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let refused = client.subscriptions().await;

    let hello = hello.join().unwrap();
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(hello[0], 0x16, "a TLS handshake record: {hello:02x?}");
    assert_eq!(hello[5], 0x01, "a ClientHello: {hello:02x?}");
    let offers = |protocol: &[u8]| {
        let mut entry = vec![u8::try_from(protocol.len()).unwrap()];
        entry.extend_from_slice(protocol);
        hello.windows(entry.len()).any(|window| window == entry)
    };
    assert!(offers(b"h2") && offers(b"http/1.1"), "{hello:02x?}");
    assert!(rustls::crypto::CryptoProvider::get_default().is_none());
}
