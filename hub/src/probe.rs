//! The synthetic probe's loopback receiver: the end of the pipeline that the `synthetic` check's
//! probe record travels to. It is an HTTP server (the probe subscription is a real webhook, so the
//! probe crosses the same adapter as a department's delivery), which is why it lives here and not
//! in `delivery`, which knows no HTTP server.

use std::collections::HashMap;
use std::sync::Arc;

/// Waiters for probe events, by event id; the receiver completes them.
pub type ProbeBoard = std::sync::Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>;

/// A running receiver: where the probe webhook posts, and the key it must sign with.
pub struct Receiver {
    /// `http://127.0.0.1:PORT/probe`.
    pub url: String,
    /// The Standard Webhooks key, fresh for each start.
    pub key: [u8; 32],
}

/// Binds a loopback port and serves `POST /probe`: a correctly signed event completes its waiter.
pub fn spawn(probes: Arc<ProbeBoard>) -> std::io::Result<Receiver> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}/probe", listener.local_addr()?);
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = axum::Router::new().route(
        "/probe",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let probes = probes.clone();
            async move {
                let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let (id, ts) = (header("webhook-id"), header("webhook-timestamp").parse::<i64>().unwrap_or(0));
                let expected = adapters::webhook::sign(&[key.to_vec()], &id, ts, &body);
                if !header("webhook-signature").split(' ').any(|s| s == expected) {
                    return axum::http::StatusCode::UNAUTHORIZED;
                }
                if let Some(tx) = probes.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
                    let _ = tx.send(());
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Receiver { url, key })
}
