//! The ceilings `--baseline` measures: a bare TLS server with the hub's certificates that reads
//! the same publish request and answers 201 after parsing its JSON (`parse`), or after parsing
//! and validating it against the record type's schema and key (`validate`). No store, no audit,
//! no routing: what the hub adds to these is its price of durability and accountability.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::ServiceExt as _;

use crate::catalog::Catalog;

/// What the ceiling does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BaselineMode {
    /// Parse the JSON.
    Parse,
    /// Parse and validate against the schema.
    Validate,
}

impl BaselineMode {
    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            BaselineMode::Parse => "parse",
            BaselineMode::Validate => "validate",
        }
    }
}

struct Ceiling {
    mode: BaselineMode,
    catalog: Catalog,
}

async fn publish(State(c): State<Arc<Ceiling>>, UrlPath(t): UrlPath<String>, body: Bytes) -> StatusCode {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) else { return StatusCode::BAD_REQUEST };
    if c.mode == BaselineMode::Validate {
        let Some(t) = c.catalog.get(&t) else { return StatusCode::NOT_FOUND };
        if !t.violations(&doc).is_empty() || t.key_of(&doc).is_err() {
            return StatusCode::UNPROCESSABLE_ENTITY;
        }
    }
    StatusCode::CREATED
}

/// Serves the ceiling on `listen` until killed (`hub bench-baseline`).
pub fn serve_baseline(mode: BaselineMode, config: &Path, data: &Path, listen: SocketAddr) -> Result<()> {
    let (config, catalog) = crate::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tls = Arc::new(crate::pki::server_config(&crate::pki::TlsFiles::of(&config, data))?);
    let state = Arc::new(Ceiling { mode, catalog });
    let app = axum::Router::new().route("/v1/records/{type}", axum::routing::post(publish)).with_state(state);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.context("bind")?;
        eprintln!("baseline listening on {listen} ({})", mode.as_str());
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let (tcp, _) = listener.accept().await?;
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}
