//! The baseline: a bare hyper server that reads each request's body and answers 200.
//!
//! It is the ceiling for any receiver on this machine: the same sockets, the same HTTP/1.1
//! framing and the same runtime as `serve`, and nothing else (no signature, no JSON, no disk).
//! The bench runs it as a child process (`xtask bench baseline-server ADDR`), so it is started,
//! loaded and measured exactly like `serve`.

use std::convert::Infallible;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// `xtask bench baseline-server ADDR`: serves until killed.
///
/// # Errors
/// When `ADDR` is missing or cannot be bound.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let [addr] = args else {
        bail!("usage: cargo xtask bench baseline-server ADDR (for example 127.0.0.1:0)");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the tokio runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr.as_str())
            .await
            .with_context(|| format!("could not listen on {addr}"))?;
        let local = listener.local_addr().context("no local address")?;
        eprintln!("baseline: listening on http://{local}/");
        serve(listener).await
    })
}

/// Accepts connections forever, each served on its own task.
///
/// # Errors
/// When accepting fails.
pub(crate) async fn serve(listener: TcpListener) -> Result<()> {
    loop {
        let (stream, _) = listener.accept().await.context("accept failed")?;
        // Small answers go out at once, as any tuned server would send them.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // A peer that goes away mid-request is not the baseline's concern.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

/// Reads the whole body, then answers 200 to a POST and 405 to anything else.
async fn answer(request: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    let is_post = request.method() == hyper::Method::POST;
    let read = request.into_body().collect().await;
    let status = match (is_post, read) {
        (true, Ok(_)) => StatusCode::OK,
        (false, Ok(_)) => StatusCode::METHOD_NOT_ALLOWED,
        (_, Err(_)) => StatusCode::BAD_REQUEST,
    };
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use preservica_webhook_core::Secret;

    use super::*;
    use crate::bench::load::{self, Plan};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_every_generated_delivery_with_200() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener));
        let outcome = load::run(Plan {
            addrs: vec![addr],
            path: "/".to_owned(),
            connections: 4,
            warmup: Duration::from_millis(50),
            measure: Duration::from_millis(300),
            events_per_delivery: 10,
            secret: Secret::new("bench-secret").expect("not empty"),
            nonce: 2,
        })
        .await;
        server.abort();
        assert!(outcome.is_clean(), "{:?}", outcome.first_error);
        assert!(outcome.measured > 0);
        assert!(
            outcome.answered > outcome.measured,
            "warm-up answers are not measured"
        );
        assert_eq!(outcome.latencies_us.len() as u64, outcome.measured);
        assert!(outcome.latencies_us.is_sorted());
    }
}
