//! `hub serve`: logging (every line scrubbed of resident ids), the runtime, the listener, and
//! shutdown on SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use super::{load_or_report, LogFormat};

struct ScrubbingStderr;

impl Write for ScrubbingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The fmt layer writes one whole event per call, so an ID is never split across calls.
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(crate::mask::scrub(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Log lines to stderr, and with `[telemetry]` the spans of [`crate::telemetry::TARGET`] to the
/// collector (each layer with its own filter: `HUB_LOG` never turns exporting on or off).
fn init_logging(
    format: LogFormat,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
) -> Result<(), tracing_subscriber::util::TryInitError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    // lapin logs every channel a broker closes (a passive declare of a missing queue in a health
    // check, too) at ERROR, with the queue name; the amqp adapter logs what matters itself.
    let filter = EnvFilter::try_from_env("HUB_LOG").unwrap_or_else(|_| EnvFilter::new("info,lapin=off"));
    // The trace spans are for the exporter alone: with no layer wanting them they cost nothing on
    // the record's way (not even their fields), where the log would format every one of them.
    let filter = match format!("{}=off", crate::telemetry::TARGET).parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(|| ScrubbingStderr);
    let fmt = match format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let logs = tracing_subscriber::registry().with(fmt.with_filter(filter));
    match tracer {
        Some(t) => {
            let only_ours =
                tracing_subscriber::filter::Targets::new().with_target(crate::telemetry::TARGET, tracing::Level::INFO);
            logs.with(tracing_opentelemetry::layer().with_tracer(t).with_filter(only_ours)).try_init()
        }
        // Not an absent `Option` layer: tracing-subscriber counts one as wanting every span, and
        // the spans of the record's way would be built for nobody.
        None => logs.try_init(),
    }
}

pub(super) fn serve(
    config_path: &Path,
    data: Option<PathBuf>,
    listen: Option<SocketAddr>,
    format: LogFormat,
) -> anyhow::Result<ExitCode> {
    let (config, catalog) = match load_or_report(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let telemetry = match &config.telemetry {
        Some(t) => Some(crate::telemetry::Telemetry::start(t, runtime.handle().clone())?),
        None => None,
    };
    let (telemetry, tracer) = telemetry.map_or((None, None), |(t, tracer)| (Some(t), Some(tracer)));
    init_logging(format, tracer)?;
    for w in &catalog.cases.warnings {
        tracing::warn!(file = %w.file.display(), line = w.line, "{}", w.message);
    }
    let data = data.unwrap_or_else(|| PathBuf::from(&config.storage.path));
    let addr = match listen.or_else(|| config.listen_addr()) {
        Some(a) => a,
        None => bail!("no listen address"),
    };
    let served = runtime.block_on(async move {
        let (state, tls) = crate::server::open(config, catalog, &data)
            .await
            .with_context(|| format!("cannot start the hub (data directory {})", data.display()))?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, data = %data.display(), "hub listening (https)");
        crate::server::run(state, tls, listener, shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(())
    });
    // After the drain, so the last deliveries' spans go too; off the runtime's threads, whose
    // exports it waits for.
    if let Some(t) = telemetry {
        let _ = runtime.block_on(runtime.spawn_blocking(move || t.shutdown()));
    }
    served?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
