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

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // lapin logs every channel a broker closes (a passive declare of a missing queue in a health
    // check, too) at ERROR, with the queue name; the amqp adapter logs what matters itself.
    let filter = EnvFilter::try_from_env("HUB_LOG").unwrap_or_else(|_| EnvFilter::new("info,lapin=off"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(|| ScrubbingStderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
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
    init_logging(format);
    for w in &catalog.cases.warnings {
        tracing::warn!(file = %w.file.display(), line = w.line, "{}", w.message);
    }
    let data = data.unwrap_or_else(|| PathBuf::from(&config.storage.path));
    let addr = match listen.or_else(|| config.listen_addr()) {
        Some(a) => a,
        None => bail!("no listen address"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (state, tls) = crate::server::open(config, catalog, &data)
            .await
            .with_context(|| format!("cannot start the hub (data directory {})", data.display()))?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, data = %data.display(), "hub listening (https)");
        crate::server::run(state, tls, listener, shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(())
    })?;
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
