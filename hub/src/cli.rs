//! The `hub` command line. `main.rs` only calls [`main`]; everything here returns an exit code
//! and one clear line on stderr instead of panicking: 2 for usage errors, 1 for runtime errors.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::ConfigError;
use crate::ledger::keys;
use crate::pki::DevPki;
use crate::policy::Directory;
use crate::store::backup;
use crate::store::sqlite::SqliteStore;

const DEFAULT_CONFIG: &str = "config/conghua.toml";

#[derive(Parser)]
#[command(name = "hub", version, about = "The Conghua Data Exchange Hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the exchange.
    Serve {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Data directory (overrides [storage].path).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Listen address (overrides [server].listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormat,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Development PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Audit chain tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Write a consistent snapshot of a running or stopped hub (database, keys, PKI) to one file.
    Backup {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Backup file to create (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// A running hub's health and backlog (as an operator).
    Status {
        #[command(flatten)]
        to: Remote,
    },
    /// A running hub's checks.
    Checks {
        #[command(subcommand)]
        command: ChecksCommand,
    },
    /// A running hub's dead letters.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Reports.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Load generator: start a hub on a copy of the config and measure a scenario (BENCHMARKS.md).
    Bench(crate::bench::BenchArgs),
    /// The bare TLS ceiling `hub bench --baseline` measures against (started by it).
    #[command(hide = true)]
    BenchBaseline {
        /// parse, or parse + validate.
        #[arg(long, value_enum)]
        mode: crate::bench::BaselineMode,
        /// Configuration file (record types and TLS).
        #[arg(long)]
        config: PathBuf,
        /// Data directory with the development PKI.
        #[arg(long)]
        data: PathBuf,
        /// Listen address.
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// Copy a stopped hub's SQLite database into an empty PostgreSQL database (URL in the
    /// environment variable `[storage] url_env` names), then verify row counts and the audit chain.
    Migrate {
        /// Source engine.
        #[arg(long, value_enum)]
        from: MigrateFrom,
        /// Target engine.
        #[arg(long, value_enum)]
        to: MigrateTo,
        /// Data directory of the source (database and keys).
        #[arg(long)]
        data: PathBuf,
        /// Configuration file (`[storage] url_env`, `[audit] checkpoint_every`).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Restore a backup into an empty data directory.
    Restore {
        /// Backup file.
        #[arg(long)]
        from: PathBuf,
        /// Data directory (empty or absent).
        #[arg(long)]
        data: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum MigrateFrom {
    Sqlite,
}

#[derive(Clone, Copy, ValueEnum)]
enum MigrateTo {
    Postgres,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the config and every schema it names; list every problem as FILE:LINE: message.
    Check {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create the development CA, server certificate and every principal's client certificate.
    Init {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Configuration file (names the principals).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Issue (or re-issue) the client certificate of a department or operator.
    Issue {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Principal id (certificate CN).
        #[arg(long)]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Revoke a client certificate: re-signs DATA/pki/crl.pem (read by the hub at start).
    Revoke {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Principal id (certificate CN).
        #[arg(long)]
        name: String,
    },
}

/// Where the running hub is and whose certificate to use.
#[derive(clap::Args)]
struct Remote {
    /// Hub URL (default: https:// and [server].listen of the config).
    #[arg(long)]
    url: Option<String>,
    /// Data directory holding pki/ (default: [storage].path).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Operator whose certificate to present.
    #[arg(long = "as", default_value = "ops-duty")]
    principal: String,
    /// Configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// table or json.
    #[arg(long, default_value = "table")]
    format: String,
}

#[derive(Subcommand)]
enum ChecksCommand {
    /// Every check with its schedule and latest run.
    List {
        #[command(flatten)]
        to: Remote,
    },
    /// Run a check now.
    Run {
        /// Check name.
        name: String,
        #[command(flatten)]
        to: Remote,
    },
    /// A check's recent runs.
    History {
        /// Check name.
        name: String,
        #[command(flatten)]
        to: Remote,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Dead letters (entries for ops; counts and errors for the vendor).
    List {
        /// Only this subscription.
        #[arg(long)]
        subscription: Option<String>,
        #[command(flatten)]
        to: Remote,
    },
    /// Queue a dead letter again.
    Retry {
        /// Its id.
        id: i64,
        #[command(flatten)]
        to: Remote,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// The signed monthly SLA report.
    Sla {
        /// Month, YYYY-MM, in the hub's time zone.
        #[arg(long)]
        month: String,
        /// Data directory (default: [storage].path).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// json or html.
        #[arg(long, default_value = "json")]
        format: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the whole audit chain: offline in DATA (hub stopped), or, with a config whose
    /// `[storage] engine` is postgres, in that database (nodes may keep running).
    Verify {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Checkpoint public key (default: DATA/keys/audit-signing.pub).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Configuration file naming the store (default: the SQLite database in DATA).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hub: {}", crate::mask::scrub(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Config { command: ConfigCommand::Check { config } } => config_check(&config),
        Command::Serve { config, data, listen, log_format } => serve(&config, data, listen, log_format),
        Command::Pki { command: PkiCommand::Init { data, config } } => {
            let (config, _) = match load_or_report(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let created = DevPki::new(&data).ensure(Directory::new(&config).ids())?;
            println!("development PKI in {}: {} file(s) created", data.join("pki").display(), created.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Pki { command: PkiCommand::Issue { data, name, days, config } } => {
            let (config, _) = match load_or_report(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let directory = Directory::new(&config);
            if directory.by_common_name(&name).is_none() {
                bail!("{name:?} is not a department or operator in {}", config.path.display());
            }
            let pki = DevPki::new(&data);
            if !pki.ca_key().exists() {
                bail!("{} does not exist: run `hub pki init --data {}` first", pki.ca_key().display(), data.display());
            }
            pki.issue_client(&name, days)?;
            println!("{} and {}", pki.client_cert(&name).display(), pki.client_key(&name).display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { to } => {
            remote(to, |c, names, json| Box::pin(async move { crate::opsctl::status(&c, &names, json).await }))
        }
        Command::Checks { command: ChecksCommand::List { to } } => {
            remote(to, |c, _, json| Box::pin(async move { crate::opsctl::checks_list(&c, json).await }))
        }
        Command::Checks { command: ChecksCommand::Run { name, to } } => {
            remote(to, move |c, _, json| Box::pin(async move { crate::opsctl::checks_run(&c, &name, json).await }))
        }
        Command::Checks { command: ChecksCommand::History { name, to } } => {
            remote(to, move |c, _, json| Box::pin(async move { crate::opsctl::checks_history(&c, &name, json).await }))
        }
        Command::Dlq { command: DlqCommand::List { subscription, to } } => remote(to, move |c, _, json| {
            Box::pin(async move { crate::opsctl::dlq_list(&c, subscription.as_deref(), json).await })
        }),
        Command::Dlq { command: DlqCommand::Retry { id, to } } => {
            remote(to, move |c, _, _| Box::pin(async move { crate::opsctl::dlq_retry(&c, id).await }))
        }
        Command::Report { command: ReportCommand::Sla { month, data, config, format } } => {
            let (config, _) = match load_or_report(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let data = data.unwrap_or_else(|| PathBuf::from(&config.storage.path));
            if config.storage.engine() == crate::config::Engine::Sqlite
                && !crate::store::sqlite::db_path(&data).exists()
            {
                bail!("{} holds no hub database", data.display());
            }
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let text = runtime.block_on(async {
                let keys = std::sync::Arc::new(keys::HubKeys::load_or_create(&data)?);
                let store = crate::store::open(&config, &data, keys.clone()).await?;
                let signed =
                    crate::report::sla(&*store, &keys, config.hub.name.get_ref(), config.timezone(), &month).await?;
                store.close().await;
                Ok::<_, anyhow::Error>(if format == "html" {
                    crate::report::html(&signed)
                } else {
                    serde_json::to_string_pretty(&signed)?
                })
            })?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            crate::bench::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchBaseline { mode, config, data, listen } => {
            crate::bench::serve_baseline(mode, &config, &data, listen)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { data, out } => {
            let bar = progress_bar("verifying the snapshot's audit chain");
            let report = backup::backup(&data, &out, &mut |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            print_report("backup", &out, &report)
        }
        Command::Restore { from, data } => {
            let bar = progress_bar("verifying the restored audit chain");
            let report = backup::restore(&from, &data, &mut |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            print_report("restore", &data, &report)
        }
        Command::Pki { command: PkiCommand::Revoke { data, name } } => {
            let pki = DevPki::new(&data);
            if !pki.client_cert(&name).exists() {
                bail!("{} does not exist", pki.client_cert(&name).display());
            }
            pki.revoke(&name)?;
            println!("revoked {name}; {} re-signed (restart the hub to apply it)", pki.crl().display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command: AuditCommand::Verify { data, public_key, config } } => {
            let key_path = public_key.unwrap_or_else(|| keys::dir(&data).join("audit-signing.pub"));
            let key = keys::load_verifying_key(&key_path)?;
            let shared = match config {
                Some(path) => match load_or_report(&path) {
                    Ok((c, _)) => (c.storage.engine() == crate::config::Engine::Postgres).then_some(c),
                    Err(code) => return Ok(code),
                },
                None => None,
            };
            let verdict = match shared {
                Some(config) => verify_postgres(&config, &data, key)?,
                None => SqliteStore::verify_offline(&data, key)?,
            };
            match verdict {
                Ok(r) => {
                    println!(
                        "audit chain ok: {} entries checked, {} signed checkpoints, head seq {} digest {}",
                        r.entries, r.checkpoints, r.head_seq, r.head_digest
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(broken) => {
                    eprintln!("hub: {broken}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Migrate { from: MigrateFrom::Sqlite, to: MigrateTo::Postgres, data, config } => {
            let (config, _) = match load_or_report(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            migrate(&config, &data)
        }
    }
}

/// The PostgreSQL store a config names, with the keys of `data` (its writer is closed by the caller).
async fn connect_postgres(
    config: &crate::config::Config,
    data: &Path,
) -> anyhow::Result<crate::store::postgres::PostgresStore> {
    let var = &config.storage.url_env;
    let url =
        std::env::var(var).with_context(|| format!("the environment variable {var} ([storage] url_env) is not set"))?;
    // The node's keys must be there: made up here, they would be refused by the database (or,
    // on a new one, become the cluster's).
    let signing = keys::dir(data).join("audit-signing.key");
    if !signing.exists() {
        bail!("{} does not exist: give the data directory of a node of this hub", signing.display());
    }
    let keys = std::sync::Arc::new(keys::HubKeys::load_or_create(data)?);
    let opts = crate::store::postgres::PgOptions {
        url: url.clone(),
        max_connections: 4,
        group_commit_max: config.storage.group_commit_max,
        checkpoint_every: config.audit.checkpoint_every,
    };
    crate::store::postgres::PostgresStore::open(keys, opts)
        .await
        .with_context(|| format!("cannot open {}", crate::store::postgres::redact(&url)))
}

fn verify_postgres(
    config: &crate::config::Config,
    data: &Path,
    key: ed25519_dalek::VerifyingKey,
) -> anyhow::Result<Result<crate::ledger::ChainReport, crate::ledger::ChainBroken>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = connect_postgres(config, data).await?;
        let bar = progress_bar("verifying the audit chain");
        let verdict = store.verify_with(key, None, &mut |seq| bar.set_position(seq)).await?;
        bar.finish_and_clear();
        crate::store::Store::close(&store).await;
        Ok(verdict)
    })
}

fn migrate(config: &crate::config::Config, data: &Path) -> anyhow::Result<ExitCode> {
    let key = keys::load_verifying_key(&keys::dir(data).join("audit-signing.pub"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let migrated = runtime.block_on(async {
        let target = connect_postgres(config, data).await?;
        let bar = progress_bar("copying");
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} rows ({eta})") {
            bar.set_style(style.progress_chars("=> "));
        }
        let result = crate::store::migrate::sqlite_to_postgres(data, &target, key, &mut |table, done, total| {
            bar.set_message(format!("copying {table}"));
            bar.set_length(total);
            bar.set_position(done);
        })
        .await;
        bar.finish_and_clear();
        crate::store::Store::close(&target).await;
        anyhow::Ok(result?)
    })?;
    for (table, n) in &migrated.tables {
        println!("{table:>20}: {n} rows");
    }
    println!(
        "migrate ok: every row count matches; audit chain verified on PostgreSQL: {} entries, {} signed checkpoints, head seq {} digest {}",
        migrated.chain.entries, migrated.chain.checkpoints, migrated.chain.head_seq, migrated.chain.head_digest
    );
    println!("set [storage] engine = \"postgres\" in the config and start the hub nodes");
    Ok(ExitCode::SUCCESS)
}

type Names = Box<dyn Fn(&str) -> String + Send + Sync>;
type RemoteFuture = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<String>>>>;

/// Runs an operator command against a running hub and prints its output.
fn remote(
    to: Remote,
    f: impl FnOnce(crate::opsctl::Connection, Names, bool) -> RemoteFuture,
) -> anyhow::Result<ExitCode> {
    let (config, _) = match load_or_report(&to.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let data = to.data.unwrap_or_else(|| PathBuf::from(&config.storage.path));
    let url = to.url.unwrap_or_else(|| format!("https://{}", config.server.listen.get_ref()));
    let names: std::collections::HashMap<String, String> =
        config.departments.iter().map(|d| (d.id.get_ref().clone(), d.name.clone())).collect();
    let names: Names = Box::new(move |id| names.get(id).cloned().unwrap_or_default());
    let conn = crate::opsctl::Connection::new(url, &data, &to.principal)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let text = runtime.block_on(f(conn, names, to.format == "json"))?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on a terminal; nothing when stderr is a pipe or a file.
fn progress_bar(message: &'static str) -> indicatif::ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0).with_message(message);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} entries ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn print_report(what: &str, path: &Path, report: &backup::Report) -> anyhow::Result<ExitCode> {
    match &report.chain {
        Ok(chain) => {
            println!(
                "{what} ok: {} ({} bytes, {} key and certificate files); audit chain: {} entries, head seq {} digest {}",
                path.display(),
                report.bytes,
                report.files,
                chain.entries,
                chain.head_seq,
                chain.head_digest
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            // The copy is kept (it is evidence), but the operator must know.
            eprintln!("hub: {what} written to {}, but its {broken}", path.display());
            Ok(ExitCode::from(1))
        }
    }
}

/// Loads config and catalogue, printing every problem on failure.
fn load_or_report(path: &Path) -> Result<(crate::Config, crate::Catalog), ExitCode> {
    match crate::load(path) {
        Ok(c) => Ok(c),
        Err(ConfigError::Invalid(problems)) => {
            let mut err = std::io::stderr().lock();
            for p in &problems {
                let _ = writeln!(err, "{p}");
            }
            let _ = writeln!(err, "hub: {} problem(s) in the configuration", problems.len());
            Err(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("hub: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn config_check(path: &Path) -> anyhow::Result<ExitCode> {
    let (config, catalog) = match load_or_report(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    println!(
        "{}: ok — {} departments, {} operators, {} record types, {} grants, {} subscriptions, {} inbound connections",
        path.display(),
        config.departments.len(),
        config.operators.len(),
        catalog.iter().count(),
        config.grants.len(),
        config.subscriptions.len(),
        config.inbound.len()
    );
    Ok(ExitCode::SUCCESS)
}

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

fn serve(
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
