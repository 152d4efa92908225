//! What the hub does with a request body it will not use: after a refusal (413, 431, 503 shed,
//! 401, ...) it reads and discards a bounded amount of it, so that the refusal reaches the client.
//!
//! Why: a client such as Python `requests` writes the whole body before it reads a byte of the
//! answer. A server that answers early and closes leaves unread bytes in its socket, the kernel
//! resets the connection, and the client sees `ECONNRESET`/`SSLEOFError` instead of the problem.
//! Over HTTP/2 an early answer followed by a reset of the stream reads to curl as "Stream error in
//! the HTTP/2 framing layer". Reading the rest first makes every client see the problem+json.
//!
//! The bound: discarding costs the hub bandwidth and TLS decryption, never memory (each frame is
//! dropped as it arrives), and it is limited in bytes (`[server] discard_body_bytes`) and in time
//! (`[server] header_timeout_secs`, the budget a client already has to send its headers). A body
//! declared larger than the bound is not read at all and the connection is closed after the answer:
//! a client that sends far more than the hub accepts without reading the answer can be told no
//! other way. A request that asked `Expect: 100-continue` and whose body was never read is answered
//! at once: the client has sent nothing and, told no, sends nothing.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

/// How much of an unwanted body is read, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// Bytes read and dropped at most.
    pub bytes: usize,
    /// Time spent reading at most.
    pub time: Duration,
}

/// The request's body, shared between the handler (through [`Tap`]) and this layer, which drains
/// whatever the handler left once the answer is known.
struct Shared {
    body: Mutex<Option<Body>>,
    polled: std::sync::atomic::AtomicBool,
}

/// The body the handler sees: it reads through to the shared one and notes that it was read
/// (which, on HTTP/1.1, is what makes hyper send `100 Continue`).
struct Tap(Arc<Shared>);

impl HttpBody for Tap {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.0.polled.store(true, std::sync::atomic::Ordering::Relaxed);
        // Only the handler polls while it runs, and only this layer once it has returned: the
        // lock is never contended.
        let mut guard = self.0.body.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.body.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.0.body.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|b| b.size_hint()).unwrap_or_default()
    }
}

/// Middleware: runs the request with a tapped body, then discards what the handler did not read.
pub async fn layer(State(bound): State<Bound>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    let version = parts.version;
    let shared = Arc::new(Shared { body: Mutex::new(Some(body)), polled: Default::default() });
    let mut resp = next.run(Request::from_parts(parts, Body::new(Tap(shared.clone())))).await;
    let Some(mut rest) = shared.body.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return resp;
    };
    if rest.is_end_stream() {
        return resp;
    }
    let polled = shared.polled.load(std::sync::atomic::Ordering::Relaxed);
    if expects_continue && !polled && version < Version::HTTP_2 {
        return resp;
    }
    if declared.is_some_and(|n| n > bound.bytes as u64) || !drain(&mut rest, bound).await {
        // HTTP/2 has no Connection header (hyper would drop it); its stream is reset on its own.
        if version < Version::HTTP_2 {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    resp
}

/// Reads and drops frames of `body` within `bound`; true when the body ended inside it.
async fn drain(body: &mut Body, bound: Bound) -> bool {
    let read = async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > bound.bytes {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(bound.time, read).await.unwrap_or(false)
}
