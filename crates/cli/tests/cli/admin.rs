//! `serve --admin`: the dashboard's views and actions over HTTP, against a running serve.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;

use preservica_webhook_testkit::port::free_loopback_port;
use preservica_webhook_testkit::raw::{RawResponse, parse_response};

use crate::common::{PATIENCE, SECRET, Serve, cmd, poll_until, write};

/// A delivery that the handler sends to the dead letters while `fail` exists, with markup in
/// its entity reference to check that bodies are escaped.
pub(crate) const DEAD_BODY: &str = r#"{"subscriptionId":"bb","trigger":"MOVED","events":[{"event":"Moved","entityType":"SO","entityRef":"ref-<b>dead</b>","identifiers":[]}]}"#;
/// A delivery the handler processes.
pub(crate) const DONE_BODY: &str = r#"{"subscriptionId":"aa","trigger":"FULL_TEXT_INDEXED","events":[{"event":"FullTextIndexed","entityType":"IO","entityRef":"ref-done","identifiers":[]}]}"#;

/// A serve on `dir/inbox.db` with the dashboard on a free port, whose handler fails MOVED
/// deliveries (once: `--max-attempts 1`) while `dir/fail` exists; returns it and the
/// dashboard's base URL. Extra arguments follow.
pub(crate) fn start(dir: &Path, extra: &[&str]) -> (Serve, String) {
    start_with_env(dir, extra, &[])
}

/// [`start`] with more environment variables.
fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Serve, String) {
    let port = free_loopback_port().unwrap();
    let admin = format!("127.0.0.1:{port}");
    let fail = dir.join("fail");
    write(dir, "fail", "");
    let exec = format!(
        r#"cat > /dev/null; test "$PRESERVICA_TRIGGER" != MOVED || test ! -e '{}'"#,
        fail.display()
    );
    let mut args = vec![
        "-v",
        "--inbox",
        "inbox.db",
        "--exec",
        &exec,
        "--max-attempts",
        "1",
        "--admin",
        &admin,
    ];
    args.extend_from_slice(extra);
    let serve = Serve::start(dir, &args, env);
    (serve, format!("http://{admin}"))
}

/// Sends `body` to the receiver with `preservica-webhook send`.
pub(crate) fn send(dir: &Path, serve: &Serve, name: &str, body: &str) {
    let file = write(dir, name, body);
    cmd(dir)
        .args(["send", &serve.url, "--trigger", "MOVED", "--body"])
        .arg(&file)
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .success();
}

/// Sends [`DONE_BODY`] and then [`DEAD_BODY`] (ids 1 and 2) and waits until the dashboard
/// shows the first done and the second dead.
pub(crate) fn deliver_two(dir: &Path, serve: &Serve, base: &str) {
    send(dir, serve, "done.json", DONE_BODY);
    poll_until("delivery 1 is done", || state_of(base, "1") == "done");
    send(dir, serve, "dead.json", DEAD_BODY);
    poll_until("delivery 2 is dead", || state_of(base, "2") == "dead");
}

/// One request to the dashboard at `base`, with extra header lines.
fn request(base: &str, method: &str, path: &str, headers: &[String], body: &str) -> RawResponse {
    let addr = base.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|it| it.starts_with("Host:")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    parse_response(&answer).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&answer)))
}

fn get(base: &str, path: &str, headers: &[String]) -> RawResponse {
    request(base, "GET", path, headers, "")
}

fn header<'a>(response: &'a RawResponse, name: &str) -> Option<&'a str> {
    response.head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn text(response: &RawResponse) -> String {
    String::from_utf8(response.body.clone()).unwrap()
}

/// The session cookie a response sets, as a `Cookie` header line.
fn cookie(response: &RawResponse) -> String {
    let set = header(response, "set-cookie").expect("a session cookie");
    format!("Cookie: {}", set.split(';').next().unwrap())
}

/// The CSRF token in a page's forms.
fn csrf(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token");
    let rest = &page[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Asserts a page's status, type and safety headers, and returns its text.
fn html_page(response: &RawResponse, status: u16) -> String {
    let body = text(response);
    assert_eq!(response.status, status, "{}{body}", response.head);
    assert_eq!(
        header(response, "content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = header(response, "content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "{csp}");
    assert_eq!(header(response, "x-frame-options"), Some("DENY"));
    assert_eq!(header(response, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(response, "referrer-policy"), Some("same-origin"));
    assert!(!body.contains("<script"), "{body}");
    body
}

/// The state shown on a delivery's page (empty while there is none).
fn state_of(base: &str, id: &str) -> String {
    let page = text(&get(base, &format!("/deliveries/{id}"), &[]));
    let Some(at) = page.find("<th>State</th><td>") else {
        return String::new();
    };
    let at = at + "<th>State</th><td>".len();
    page[at..at + page[at..].find('<').unwrap()].to_owned()
}

#[test]
fn admin_views_show_the_inbox_and_a_dead_letter_is_retried_by_post() {
    let dir = tempfile::tempdir().unwrap();
    let (mut serve, base) = start(dir.path(), &[]);
    deliver_two(dir.path(), &serve, &base);

    let list = get(&base, "/", &[]);
    let page = html_page(&list, 200);
    assert!(
        page.contains("ref-done") && page.contains("ref-&lt;b&gt;dead&lt;/b&gt;"),
        "{page}"
    );
    assert!(!page.contains("<b>dead"), "{page}");
    assert!(
        page.find(">2</a>").unwrap() < page.find(">1</a>").unwrap(),
        "newest first: {page}"
    );
    for (query, shown, hidden) in [
        ("/?state=dead", "ref-&lt;b&gt;dead", "ref-done"),
        ("/?state=done", "ref-done", "ref-&lt;b&gt;dead"),
        ("/?trigger=moved", "ref-&lt;b&gt;dead", "ref-done"),
        ("/?entity=REF-DONE", "ref-done", "ref-&lt;b&gt;dead"),
        ("/?after=2", "ref-done", "ref-&lt;b&gt;dead"),
        (
            "/?since=2000-01-01&until=2100-01-01T00:00",
            "ref-done",
            "no such text",
        ),
        ("/?until=2000-01-01T00:00", "0 matching", "ref-done"),
        ("/?since=2100-01-01", "0 matching", "ref-&lt;b&gt;dead"),
        ("/?q=fulltextINDEXED", "ref-done", "ref-&lt;b&gt;dead"),
        ("/?q=%3Cb%3E", "ref-&lt;b&gt;dead", "ref-done"),
    ] {
        let page = html_page(&get(&base, query, &[]), 200);
        assert!(
            page.contains(shown) && !page.contains(hidden),
            "{query}: {page}"
        );
    }

    let detail = html_page(&get(&base, "/deliveries/2", &[]), 200);
    assert!(detail.contains("<th>State</th><td>dead</td>"), "{detail}");
    assert!(
        detail.contains("<th>Handler attempts</th><td>1"),
        "{detail}"
    );
    assert!(
        detail.contains(r#"&quot;entityRef&quot;:&quot;ref-&lt;b&gt;dead&lt;/b&gt;&quot;"#),
        "raw body, escaped: {detail}"
    );
    assert!(detail.contains("<td>Moved</td>"), "parsed events: {detail}");
    assert!(detail.contains("exit"), "the last error: {detail}");
    assert!(
        !detail.contains(SECRET) && !detail.to_lowercase().contains("signature"),
        "{detail}"
    );
    html_page(&get(&base, "/deliveries/99", &[]), 404);

    let dead = get(&base, "/dead", &[]);
    let dead_page = html_page(&dead, 200);
    assert!(
        dead_page.contains(r#"action="/deliveries/2/retry""#),
        "{dead_page}"
    );
    assert!(dead_page.contains("Retry all 1"), "{dead_page}");
    assert!(!dead_page.contains("ref-done"), "{dead_page}");

    let health = html_page(&get(&base, "/health", &[]), 200);
    assert!(
        health.contains(r#"<meta http-equiv="refresh" content="30">"#),
        "{health}"
    );
    for shown in [
        "<svg",
        "sqlite",
        env!("CARGO_PKG_VERSION"),
        "s ago",
        "Dead letters",
    ] {
        assert!(health.contains(shown), "{shown}: {health}");
    }
    let subscriptions = html_page(&get(&base, "/subscriptions", &[]), 200);
    assert!(
        subscriptions.contains("no Preservica credentials"),
        "{subscriptions}"
    );
    let gaps = html_page(&get(&base, "/gaps", &[]), 200);
    assert!(gaps.contains("recorded runs"), "{gaps}");

    let export = get(&base, "/export.jsonl", &[]);
    assert_eq!(export.status, 200);
    assert_eq!(
        header(&export, "content-type"),
        Some("application/x-ndjson")
    );
    let lines: Vec<serde_json::Value> = text(&export)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["body"], DEAD_BODY);
    assert_eq!(lines[1]["state"], "dead");

    // Another name for loopback (a rebound DNS name) is refused; localhost is this listener.
    let port = base.rsplit(':').next().unwrap();
    let rebound = get(&base, "/", &[format!("Host: evil.example:{port}")]);
    html_page(&rebound, 403);
    html_page(&get(&base, "/", &[format!("Host: localhost:{port}")]), 200);

    // Refused: no Origin, another origin, a wrong or missing token, a fresh session.
    let session = cookie(&dead);
    let token = csrf(&dead_page);
    let origin = format!("Origin: {base}");
    let good = format!("csrf={token}");
    for (headers, body) in [
        (vec![session.clone()], good.clone()),
        (
            vec![session.clone(), "Origin: http://evil.example".to_owned()],
            good.clone(),
        ),
        (
            vec![session.clone(), origin.clone()],
            "csrf=0000".to_owned(),
        ),
        (vec![session.clone(), origin.clone()], String::new()),
        (vec![origin.clone()], good.clone()),
    ] {
        let refused = request(&base, "POST", "/deliveries/2/retry", &headers, &body);
        html_page(&refused, 403);
        let refused = request(&base, "POST", "/dead/retry", &headers, &body);
        html_page(&refused, 403);
    }
    assert_eq!(state_of(&base, "2"), "dead");

    std::fs::remove_file(dir.path().join("fail")).unwrap();
    let retried = request(
        &base,
        "POST",
        "/deliveries/2/retry",
        &[session.clone(), origin.clone()],
        &good,
    );
    assert_eq!(retried.status, 303, "{}", retried.head);
    assert_eq!(header(&retried, "location"), Some("/deliveries/2"));
    poll_until("the retried delivery is done", || {
        state_of(&base, "2") == "done"
    });
    let again = request(
        &base,
        "POST",
        "/deliveries/2/retry",
        &[session.clone(), origin.clone()],
        &good,
    );
    html_page(&again, 409);
    let all = request(&base, "POST", "/dead/retry", &[session, origin], &good);
    assert_eq!(all.status, 303);
    assert_eq!(header(&all, "location"), Some("/dead"));
    let (code, _) = serve.terminate();
    assert_eq!(code, Some(0));
}

/// The delivery ids a deliveries page lists, in its order.
fn listed_ids(page: &str) -> Vec<u64> {
    page.split(r#"<td><a href="/deliveries/"#)
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap())
        .collect()
}

/// The target of a page's `rel="next"` link, if it has one.
fn older_link(page: &str) -> Option<String> {
    let at = page.find(r#"" rel="next""#)?;
    let start = page[..at].rfind(r#"href=""#)? + r#"href=""#.len();
    Some(page[start..at].replace("&amp;", "&"))
}

#[test]
fn a_deliveries_page_shows_one_page_and_its_older_link_leads_to_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    // Received now: done deliveries older than the retention are pruned as the server starts.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let now = chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap(), 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let lines: String = (0..60)
        .map(|n| {
            let body =
                format!(r#"{{"trigger":"MOVED","events":[{{"entityRef":"paged-ref-{n}"}}]}}"#);
            let line = serde_json::json!({
                "key": preservica_webhook_core::DeliveryKey::of(body.as_bytes()).to_hex(),
                "state": "done",
                "receivedAt": now,
                "body": body,
            });
            format!("{line}\n")
        })
        .collect();
    cmd(dir.path())
        .args(["inbox", "import", "--inbox", "inbox.db"])
        .write_stdin(lines)
        .assert()
        .success();
    let (mut serve, base) = start(dir.path(), &[]);

    let first = html_page(&get(&base, "/?trigger=moved", &[]), 200);
    let first_ids = listed_ids(&first);
    assert_eq!(first_ids, (11..=60).rev().collect::<Vec<u64>>(), "{first}");
    assert!(first.contains("paged-ref-59") && !first.contains("paged-ref-9<"));
    let older = older_link(&first).expect("an older link");
    assert_eq!(older, "/?trigger=moved&after=11");
    let rest = html_page(&get(&base, &older, &[]), 200);
    assert_eq!(
        listed_ids(&rest),
        (1..=10).rev().collect::<Vec<u64>>(),
        "{rest}"
    );
    assert!(rest.contains("paged-ref-0<"), "{rest}");
    assert_eq!(older_link(&rest), None, "nothing older: {rest}");
    let (code, _) = serve.terminate();
    assert_eq!(code, Some(0));
}

#[test]
fn a_token_guards_every_page_and_the_login_form_sets_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "admin-token", "s3cret-admin-token\n");
    let (mut serve, base) = start(dir.path(), &["--admin-token-file", token.to_str().unwrap()]);

    let asked = get(&base, "/", &[]);
    let form = html_page(&asked, 401);
    assert!(form.contains(r#"action="/login""#), "{form}");
    html_page(&get(&base, "/export.jsonl", &[]), 401);
    html_page(
        &get(&base, "/", &["Authorization: Bearer wrong".to_owned()]),
        401,
    );
    html_page(
        &get(
            &base,
            "/",
            &["Authorization: Bearer s3cret-admin-token".to_owned()],
        ),
        200,
    );

    let session = cookie(&asked);
    let origin = format!("Origin: {base}");
    let login = |token: &str| {
        let body = format!("csrf={}&token={token}", csrf(&form));
        request(
            &base,
            "POST",
            "/login",
            &[session.clone(), origin.clone()],
            &body,
        )
    };
    html_page(&login("wrong"), 401);
    html_page(&get(&base, "/", std::slice::from_ref(&session)), 401);
    let signed_in = login("s3cret-admin-token");
    assert_eq!(signed_in.status, 303, "{}", signed_in.head);
    html_page(&get(&base, "/", std::slice::from_ref(&session)), 200);
    html_page(&get(&base, "/health", &[session]), 200);
    serve.terminate();
}

#[test]
fn a_non_loopback_admin_address_without_a_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_loopback_port().unwrap();
    cmd(dir.path())
        .args(["serve", "127.0.0.1:0", "--in-memory", "--admin"])
        .arg(format!("0.0.0.0:{port}"))
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--admin-token-file"));
    let empty = write(dir.path(), "empty-token", "\n");
    cmd(dir.path())
        .args([
            "serve",
            "127.0.0.1:0",
            "--in-memory",
            "--admin",
            "127.0.0.1:0",
            "--admin-token-file",
        ])
        .arg(&empty)
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("admin token is empty"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_subscriptions_page_sends_a_test_delivery_and_a_gap_is_caught_up_by_post() {
    let preservica = preservica_webhook_testkit::StandIn::start().await;
    preservica.insert_subscription(serde_json::json!({
        "id": "sub-1", "url": "https://archive.example/hook", "triggerType": "MOVED",
        "includeIdentifiers": true
    }));
    // Blocking calls from here on: the runtime moves the stand-in off this thread.
    tokio::task::block_in_place(|| catch_up_and_test_delivery(&preservica));
}

fn catch_up_and_test_delivery(preservica: &preservica_webhook_testkit::StandIn) {
    let env = preservica.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    // A first run, then a second: the time between is a gap.
    let (mut first, _) = start_with_env(dir.path(), &[], &env);
    assert_eq!(first.terminate().0, Some(0));
    let moved_at = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    preservica.record_event("Moved", "IO", "missed-ref", &moved_at);
    let (mut serve, base) = start_with_env(dir.path(), &[], &env);

    let page = get(&base, "/subscriptions", &[]);
    let shown = html_page(&page, 200);
    for text in [
        "sub-1",
        "https://archive.example/hook",
        "<td>MOVED</td>",
        "included",
    ] {
        assert!(shown.contains(text), "{text}: {shown}");
    }
    let origin = format!("Origin: {base}");
    let form = format!("csrf={}", csrf(&shown));
    html_page(
        &request(
            &base,
            "POST",
            "/subscriptions/test",
            &[cookie(&page)],
            &form,
        ),
        403,
    );
    let sent = request(
        &base,
        "POST",
        "/subscriptions/test",
        &[cookie(&page), origin],
        &form,
    );
    let outcome = html_page(&sent, 200);
    assert!(
        outcome.contains("200 OK: a MOVED test delivery was stored"),
        "{outcome}"
    );
    let list = html_page(&get(&base, "/?trigger=MOVED", &[]), 200);
    assert!(list.contains("1 matching"), "{list}");

    let gaps = get(&base, "/gaps", &[]);
    let shown = html_page(&gaps, 200);
    assert!(shown.contains(r#"action="/gaps/catch-up""#), "{shown}");
    let value = |name: &str| {
        let at = shown.find(&format!(r#"name="{name}" value=""#)).unwrap() + name.len() + 15;
        shown[at..at + shown[at..].find('"').unwrap()].to_owned()
    };
    let form = format!(
        "csrf={}&from={}&to={}",
        csrf(&shown),
        value("from"),
        value("to")
    );
    let caught_up = request(
        &base,
        "POST",
        "/gaps/catch-up",
        &[cookie(&gaps), format!("Origin: {base}")],
        &form,
    );
    let outcome = html_page(&caught_up, 200);
    assert!(
        outcome.contains("filed 1 recovered deliveries (0 filed before)"),
        "{outcome}"
    );
    let list = html_page(&get(&base, "/?entity=missed-ref", &[]), 200);
    assert!(list.contains("1 matching"), "{list}");
    serve.terminate();
}

#[test]
fn the_delivery_page_shows_each_handler_attempt_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_loopback_port().unwrap();
    let admin = format!("127.0.0.1:{port}");
    // Fails every attempt, with another exit status each time: 3, 4, then 5.
    let exec = r#"cat > /dev/null; n=$(cat count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > count; exit $((n + 2))"#;
    let args = [
        "--inbox",
        "inbox.db",
        "--exec",
        exec,
        "--max-attempts",
        "3",
        "--retry-delay",
        "50ms",
        "--admin",
        &admin,
    ];
    let mut serve = Serve::start(dir.path(), &args, &[]);
    let base = format!("http://{admin}");
    send(dir.path(), &serve, "dead.json", DEAD_BODY);
    poll_until("delivery 1 is dead", || state_of(&base, "1") == "dead");

    let page = html_page(&get(&base, "/deliveries/1", &[]), 200);
    assert!(
        page.contains("<th>Handler attempts</th><td>3</td>"),
        "{page}"
    );
    let at = page
        .find(r#"<table id="attempts">"#)
        .expect("a table of attempts");
    let table = &page[at..at + page[at..].find("</table>").unwrap()];
    let rows: Vec<&str> = table.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), 3, "{table}");
    for (row, (number, outcome, status)) in
        rows.iter()
            .zip([(1, "retry", 3), (2, "retry", 4), (3, "dead", 5)])
    {
        assert!(row.starts_with(&format!("<td>{number}</td>")), "{row}");
        assert!(row.contains(&format!("<td>{outcome}</td>")), "{row}");
        assert!(
            row.contains(&format!(
                "<pre>the command exited with exit status: {status}</pre>"
            )),
            "{row}"
        );
        // A retry says when it is due again; the dead letter is not due.
        assert_eq!(
            row.matches("Z</td>").count(),
            if outcome == "retry" { 2 } else { 1 },
            "{row}"
        );
    }
    assert!(
        !page.contains(SECRET) && !page.to_lowercase().contains("signature"),
        "{page}"
    );

    // `inbox show` prints them too, beside the running serve.
    let shown = cmd(dir.path())
        .args(["inbox", "show", "1", "--inbox", "inbox.db"])
        .assert()
        .success();
    let shown = String::from_utf8(shown.get_output().stdout.clone()).unwrap();
    let lines: Vec<&str> = shown
        .lines()
        .skip_while(|line| !line.starts_with("ATTEMPT"))
        .take(4)
        .collect();
    assert_eq!(lines.len(), 4, "{shown}");
    for (line, (number, outcome, status)) in
        lines[1..]
            .iter()
            .zip([(1, "retry", 3), (2, "retry", 4), (3, "dead", 5)])
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            (words[0], words[2]),
            (number.to_string().as_str(), outcome),
            "{line}"
        );
        assert!(line.ends_with(&format!("exit status: {status}")), "{line}");
    }
    let (code, _) = serve.terminate();
    assert_eq!(code, Some(0));
}
