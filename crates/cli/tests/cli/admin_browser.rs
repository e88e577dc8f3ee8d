//! `serve --admin` in a real browser: headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`), kept on loopback.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use preservica_webhook_testkit::port::free_loopback_port;

use crate::admin::{deliver_two, start};
use crate::common::PATIENCE;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver child, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver on a free loopback port and waits until it listens; its log goes to
/// `dir/chromedriver.log`.
fn chromedriver(dir: &Path) -> (Driver, u16) {
    for binary in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing: the dashboard's browser test needs Chromium and its WebDriver; \
             install them with `apt-get install -y chromium chromium-driver`"
        );
    }
    let port = free_loopback_port().unwrap();
    let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let driver = Driver(child);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < PATIENCE,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, port)
}

/// Headless Chromium with a throwaway profile; a proxy on a closed port and a resolver that
/// finds nothing keep every request but loopback from leaving the machine.
fn capabilities(profile: &Path) -> fantoccini::wd::Capabilities {
    let closed = free_loopback_port().unwrap();
    let options = serde_json::json!({
        "binary": CHROMIUM,
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1200,900",
            format!("--proxy-server=127.0.0.1:{closed}"),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".to_owned(), options);
    capabilities
}

fn assert_png(path: &Path, png: &[u8]) {
    assert!(png.len() > 1000, "a screenshot of {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    std::fs::write(path, png).unwrap();
    // Kept for the README when asked.
    if let Some(keep) = std::env::var_os("PRESERVICA_WEBHOOK_SCREENSHOTS") {
        std::fs::copy(path, Path::new(&keep).join(path.file_name().unwrap())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_chromium_the_dashboard_shows_a_sent_delivery_and_retries_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let (mut serve, base) = start(dir.path(), &[]);
    // Sent with `preservica-webhook send`.
    deliver_two(dir.path(), &serve, &base);

    let (_driver, port) = chromedriver(dir.path());
    let browser = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities(&dir.path().join("profile")))
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session through chromedriver");

    browser.goto(&format!("{base}/")).await.unwrap();
    let list = browser
        .find(Locator::Id("deliveries"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains("ref-done"), "{list}");
    assert!(
        list.contains("ref-<b>dead</b>"),
        "markup in a body is shown as text: {list}"
    );
    let png = browser.screenshot().await.unwrap();
    assert_png(&dir.path().join("admin-deliveries.png"), &png);

    browser
        .find(Locator::LinkText("2"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let raw = browser
        .wait()
        .for_element(Locator::Id("raw"))
        .await
        .unwrap();
    assert!(
        raw.text()
            .await
            .unwrap()
            .contains(r#""entityRef":"ref-<b>dead</b>""#)
    );
    let state = Locator::XPath("//th[text()='State']/following-sibling::td");
    assert_eq!(
        browser.find(state).await.unwrap().text().await.unwrap(),
        "dead"
    );

    std::fs::remove_file(dir.path().join("fail")).unwrap();
    browser
        .find(Locator::Id("retry"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        // The page may still be the one the click left, or be loading: look again then.
        let shown = match browser.wait().for_element(state).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if shown == "done" {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "still {shown} after the retry"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        browser.refresh().await.unwrap();
    }
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/deliveries/2")
    );

    browser.goto(&format!("{base}/health")).await.unwrap();
    browser.find(Locator::Id("rate")).await.unwrap();
    let png = browser.screenshot().await.unwrap();
    assert_png(&dir.path().join("admin-health.png"), &png);

    browser.close().await.unwrap();
    let (code, _) = serve.terminate();
    assert_eq!(code, Some(0));
}
