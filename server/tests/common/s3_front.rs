//! A front for the `s3s-fs` test server that makes conditional writes atomic.
//!
//! s3s-fs 0.14 answers a PutObject with `If-None-Match: *` by checking that the object
//! is absent and writing it afterwards (`s3s-fs` `put_object`), so two clients creating
//! the same key at the same instant can both be told "created", the second overwriting
//! the first. AWS S3 (and R2, GCS, MinIO) make the check and the write one step
//! (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>),
//! and Delta's optimistic concurrency relies on it: each commit creates
//! `_delta_log/<version>.json` only if absent. With the bare test server, two nodes
//! committing the same version could both succeed, and the multi-node test failed about
//! one run in four for a reason no real service has.
//!
//! The front forwards every request byte for byte (same Host, path, query, headers and
//! body, so the SigV4 signature still verifies) and runs conditional writes (PUT or POST
//! carrying `If-None-Match` or `If-Match`) one at a time, each until its response is
//! complete. That gives the test server the real services' guarantee and nothing more:
//! everything else, including the 412 answer a losing writer gets, comes from s3s-fs.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, IF_MATCH, IF_NONE_MATCH, TRANSFER_ENCODING};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

struct Front {
    upstream: u16,
    client: reqwest::Client,
    /// Held for the whole of each conditional write.
    writes: tokio::sync::Mutex<()>,
}

/// Serves the front on a free loopback port, forwarding to `127.0.0.1:upstream`, on a
/// thread of its own (the tests that start s3s-fs are sync and async alike). Returns
/// the port and a sender that stops it.
pub fn start(upstream: u16) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let front = Arc::new(Front {
                upstream,
                client: reqwest::Client::new(),
                writes: tokio::sync::Mutex::new(()),
            });
            let app = axum::Router::new().fallback(forward).with_state(front);
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
    });
    (port, stop)
}

async fn forward(State(front): State<Arc<Front>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return (
            StatusCode::BAD_REQUEST,
            "the request body could not be read",
        )
            .into_response();
    };
    let conditional = matches!(parts.method, Method::PUT | Method::POST)
        && (parts.headers.contains_key(IF_NONE_MATCH) || parts.headers.contains_key(IF_MATCH));
    let _turn = if conditional {
        Some(front.writes.lock().await)
    } else {
        None
    };
    let url = format!(
        "http://127.0.0.1:{}{}",
        front.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut headers = parts.headers;
    headers.remove(CONNECTION);
    headers.remove(TRANSFER_ENCODING);
    let sent = front
        .client
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("s3s-fs: {e}")).into_response(),
    };
    let mut out = Response::builder().status(answer.status());
    for (k, v) in answer.headers() {
        if k != CONNECTION && k != TRANSFER_ENCODING {
            out = out.header(k, v);
        }
    }
    // Read whole while the turn is held: the write is complete when its answer is.
    match answer.bytes().await {
        Ok(b) => out.body(Body::from(b)).unwrap(),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("s3s-fs: {e}")).into_response(),
    }
}
