//! Runs the exchange: owns the TLS accept loop (tokio-rustls + hyper-util), resolves the client
//! certificate's CN once per connection and attaches it to every request, and drains connections
//! on shutdown. Shutdown is passed in, so tests control it (as in mini-redis).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::api::{self, AppState, Hub, PeerIdentity};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::delivery::Delivery;
use crate::ledger::keys::{HubKeys, KeyError};
use crate::pki::{self, DevPki, PkiError, TlsFiles};
use crate::policy::{Directory, Policy};
use crate::store::StoreError;

/// Why the hub could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Certificates.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Keys in the data directory.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The store (its cause follows in the error chain).
    #[error("store")]
    Store(#[from] StoreError),
    /// The listener.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// Subscriptions and their adapters.
    #[error(transparent)]
    Delivery(#[from] crate::delivery::DeliveryError),
    /// Inbound connections and their adapters.
    #[error(transparent)]
    Inbound(#[from] crate::inbound::InboundError),
}

/// Copies what every node of a cluster must hold the same of, the keys (`DATA/keys`) and the
/// certificates (`DATA/pki`), from one node's data directory to another's (ops/deploy/cluster.md).
pub fn copy_node_identity(from: &Path, to: &Path) -> std::io::Result<()> {
    for part in ["keys", "pki"] {
        copy_tree(&from.join(part), &to.join(part))?;
    }
    Ok(())
}

/// Copies a folder and everything under it (files keep their permissions).
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Opens everything a running hub needs from a checked config and a data directory: development
/// certificates if enabled, keys, the store, and the TLS configuration.
pub async fn open(
    config: Config,
    catalog: Catalog,
    data: &Path,
) -> Result<(AppState, Arc<rustls::ServerConfig>), ServeError> {
    std::fs::create_dir_all(data)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))?;
    }
    let directory = Directory::new(&config);
    if config.tls.dev_pki {
        let created = DevPki::new(data).ensure(directory.ids())?;
        if !created.is_empty() {
            tracing::info!(files = created.len(), dir = %data.join("pki").display(), "development PKI written");
        }
    }
    let files = TlsFiles::of(&config, data);
    let dev = DevPki::new(data);
    let keys_dir = crate::ledger::keys::dir(data);
    let secrets: Vec<std::path::PathBuf> = std::fs::read_dir(keys_dir.join("webhooks"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    pki::require_private(
        [
            files.key.clone(),
            dev.ca_key(),
            dev.hub_client_key(),
            keys_dir.join("audit-signing.key"),
            keys_dir.join("subject-hmac.key"),
        ]
        .into_iter()
        .chain(secrets),
    )?;
    let tls = Arc::new(pki::server_config(&files)?);
    let keys = Arc::new(HubKeys::load_or_create(data, config.audit.suite)?);
    let store = crate::store::open(&config, data, keys.clone()).await?;
    let policy = Arc::new(Policy::new(&config));
    let catalog = Arc::new(catalog);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let delivery =
        Arc::new(Delivery::build(&config, catalog.clone(), policy.clone(), store.clone(), metrics.clone(), data)?);
    let routing = Arc::new(crate::routing::Routing::build(&config));
    let exchange = Arc::new(crate::exchange::Exchange::new(
        catalog.clone(),
        keys.clone(),
        routing.clone(),
        delivery.clone(),
        store.clone(),
        metrics.clone(),
    ));
    let cases = Arc::new(crate::cases::engine::Cases::new(
        &config,
        catalog.clone(),
        policy.clone(),
        store.clone(),
        keys.clone(),
        routing,
        exchange.clone(),
    ));
    let inbound = Arc::new(crate::inbound::Inbounds::build(&config, data)?);
    let history = Arc::new(crate::checks::StoreHistory { store: store.clone(), days: config.ops.history_days });
    let checks = Arc::new(
        ops::runner::Runner::new(
            crate::checks::build(&config, store.clone(), delivery.clone(), exchange.clone(), inbound.clone(), data),
            history,
            ops::runner::Clock::system(),
        )
        .observe(Arc::new(crate::checks::Alerting::new(
            store.clone(),
            alert_sink(&config, data)?,
            config.hub.name.get_ref().clone(),
        ))),
    );
    let rate_limits = crate::api::admission::RateLimits::new(&config);
    let hub = Hub {
        rate_limits,
        config,
        catalog,
        policy,
        delivery,
        inbound,
        checks,
        metrics,
        draining: Arc::new(false.into()),
        directory,
        store,
        exchange,
        cases,
        keys,
    };
    Ok((AppState(Arc::new(hub)), tls))
}

/// The vendor's alert webhook, when `[ops].alert_url` is set.
fn alert_sink(config: &Config, data: &Path) -> Result<Option<adapters::webhook::WebhookSink>, ServeError> {
    let Some(url) = &config.ops.alert_url else { return Ok(None) };
    let settings = adapters::webhook::WebhookConfig {
        url: url.get_ref().clone(),
        secret_env: config.ops.alert_secret_env.clone().unwrap_or_default(),
        timeout_secs: 10,
        ca: None,
        client_certificate: false,
        batch: 1,
    };
    let secret = crate::delivery::secret_resolver(data, config.tls.dev_pki);
    let resolve = |p: &str| config.resolve(p);
    let ctx = adapters::BuildContext { secret: &secret, resolve: &resolve, client_identity_pem: None };
    adapters::webhook::WebhookSink::build(&settings, &ctx).map(Some).map_err(|source| {
        ServeError::Delivery(crate::delivery::DeliveryError::Adapter { subscription: "[ops] alerts".into(), source })
    })
}

/// Serves HTTPS on `listener` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish and workers stop (within `[server] shutdown_grace_secs`) and flushes the store.
pub async fn run(
    state: AppState,
    tls: Arc<rustls::ServerConfig>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let handshake_timeout = Duration::from_secs(state.config.server.handshake_timeout_secs.max(1));
    let app = api::router(state.clone());
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    // Slow or idle clients must not hold connections open indefinitely.
    let header_timeout = Duration::from_secs(state.config.server.header_timeout_secs.max(1));
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    // h2's own 16 KiB header-list limit answers a bare 431 and, past it, drops the whole connection
    // with every other stream on it; 64 KiB lets the API's 32 KiB limit answer with a problem.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .max_header_list_size(64 * 1024);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    // A database that cannot be reached at this moment (a failover, connections cut) must not end
    // a node that has just started: it waits, as a running node does, and takes connections once
    // the subscriptions' states are read (they queue in the listener's backlog meanwhile).
    let mut pause = Duration::from_millis(100);
    loop {
        match state.delivery.load_states().await {
            Ok(()) => break,
            Err(crate::store::StoreError::Unavailable(e)) => {
                tracing::warn!(error = %crate::mask::scrub(&e), retry_in_ms = pause.as_millis() as u64, "the database cannot be reached at start; trying again");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = &mut shutdown => return Ok(()),
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let (stop_workers, workers_stop) = tokio::sync::watch::channel(false);
    if let Some(addr) = state.config.ops.metrics_listen.as_ref().and_then(|a| a.get_ref().parse::<SocketAddr>().ok()) {
        let plain = TcpListener::bind(addr).await?;
        tracing::info!(%addr, "metrics on plain loopback http");
        let (app, mut stop) = (api::metrics_router(state.clone()), workers_stop.clone());
        tokio::spawn(async move {
            let _ = axum::serve(plain, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
        });
    }
    let mut workers = state.delivery.spawn(workers_stop.clone());
    let inbound_hub = crate::inbound::Hub {
        exchange: state.exchange.clone(),
        store: state.store.clone(),
        metrics: state.metrics.clone(),
        draining: state.draining.clone(),
        cases: state.cases.clone(),
    };
    workers.extend(state.inbound.spawn(inbound_hub, workers_stop.clone()));
    workers.extend(state.checks.spawn(workers_stop.clone()));
    workers.push(crate::cases::engine::spawn_sweep(
        state.cases.clone(),
        Duration::from_secs(state.config.cases.sweep_secs.max(1)),
        workers_stop,
    ));
    // Each connection holds a permit; past the limit a new connection is closed on accept, before
    // a TLS handshake is spent on it.
    let connections = Arc::new(tokio::sync::Semaphore::new(state.config.server.max_connections.max(1)));
    // Refused certificates are audited, within a budget: anyone can make a self-signed certificate,
    // and the audit chain must not become the cheapest thing to flood. Every refusal is counted.
    let refusal_budget = Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(
        std::num::NonZeroU32::new(20).unwrap_or(std::num::NonZeroU32::MIN),
    )));
    loop {
        let (tcp, remote): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and similar: pause instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "connection limit reached; closing");
            state.metrics.shed.get_or_create(&crate::metrics::ShedLabels { reason: "connections".into() }).inc();
            drop(tcp);
            continue;
        };
        let (acceptor, app, builder, watcher) = (acceptor.clone(), app.clone(), builder.clone(), graceful.watcher());
        let (state, refusal_budget) = (state.clone(), refusal_budget.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "tls handshake failed");
                    if let Some(reason) = certificate_refusal(&e) {
                        audit_tls_refusal(&state, &refusal_budget, remote, reason).await;
                    }
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "tls handshake timed out");
                    return;
                }
            };
            let identity = PeerIdentity {
                common_name: stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|c| pki::common_name(c)),
            };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(identity.clone());
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    state.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!(grace_secs = grace.as_secs(), "shutting down: draining connections");
    if tokio::time::timeout_at(deadline, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open at the end of the grace period; closing them");
    }
    // Deliveries and inbound loops stop between records; whatever is cut off at the deadline is
    // still in the outbox (or upstream, unacknowledged) and goes out after the next start.
    let _ = stop_workers.send(true);
    for w in workers {
        let abort = w.abort_handle();
        if tokio::time::timeout_at(deadline, w).await.is_err() {
            tracing::warn!("a worker was still busy at the end of the grace period; stopping it");
            abort.abort();
        }
    }
    state.delivery.release_leases().await;
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Why a client's certificate was refused during the handshake, when that is what failed; other
/// handshake failures (scanners, plaintext HTTP, old protocol versions) are not refusals of an identity.
fn certificate_refusal(e: &std::io::Error) -> Option<&'static str> {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(c) = e.get_ref()?.downcast_ref::<rustls::Error>()? else { return None };
    Some(match c {
        C::Expired | C::ExpiredContext { .. } => "client certificate expired",
        C::NotValidYet | C::NotValidYetContext { .. } => "client certificate not yet valid",
        C::Revoked => "client certificate revoked",
        // A foreign CA with the same name as ours shows up as a bad signature, not an unknown issuer.
        C::UnknownIssuer | C::BadSignature => "client certificate not issued by the hub's CA",
        _ => "client certificate invalid",
    })
}

async fn audit_tls_refusal(
    state: &AppState,
    budget: &governor::DefaultDirectRateLimiter,
    remote: SocketAddr,
    reason: &str,
) {
    state.metrics.shed.get_or_create(&crate::metrics::ShedLabels { reason: "tls_refused".into() }).inc();
    if budget.check().is_err() {
        return;
    }
    let entry = crate::ledger::NewEntry {
        detail: Some(serde_json::json!({ "stage": "tls handshake", "remote": remote.ip().to_string() })),
        ..crate::ledger::NewEntry::new("tls-peer", crate::ledger::Action::Deny, reason)
    };
    if let Err(e) = state.store.audit(entry).await {
        tracing::warn!(error = %e, "a refused certificate could not be audited");
    }
}
