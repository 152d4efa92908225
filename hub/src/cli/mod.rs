//! The `hub` command line: its shape (clap) and its dispatch. `main.rs` only calls [`main`];
//! every command returns an exit code and one clear line on stderr instead of panicking: 2 for
//! usage errors, 1 for runtime errors. `serve.rs` runs the exchange; `admin.rs` holds the commands
//! on a data directory (config check, backup, restore, audit verify, migrate, SLA report);
//! `pki.rs` the development PKI; `remote.rs` the operator commands against a running hub.

mod admin;
mod pki;
mod remote;
mod serve;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::ConfigError;

const DEFAULT_CONFIG: &str = "config/conghua.toml";

/// The release and the commit it was built from (hub/build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("HUB_BUILD_COMMIT"), ")");

#[derive(Parser)]
#[command(name = "hub", version = VERSION, about = "The Conghua Data Exchange Hub")]
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
    /// A running hub's joint cases: open cases per type, late steps per department and which.
    Cases {
        #[command(flatten)]
        to: Remote,
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
    /// Print a completion script for a shell (`hub completions bash > /etc/bash_completion.d/hub`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
        /// text (FILE:LINE: message lines) or json (one document on stdout, for CI and editors).
        #[arg(long, default_value = "text")]
        format: CheckFormat,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CheckFormat {
    Text,
    Json,
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
        /// Also write clients/NAME.p12 (key, certificate and CA; PKCS#12 with AES-256), encrypted
        /// with the password held by this environment variable (never on the command line,
        /// where `ps` shows it).
        #[arg(long, value_name = "VAR")]
        p12_password_env: Option<String>,
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
    /// The signed monthly joint-case report.
    Cases {
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
    /// The signed monthly report of paper documents the online services' reads replaced.
    DocumentsSpared {
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
        Command::Config { command: ConfigCommand::Check { config, format } } => {
            if format == CheckFormat::Json {
                admin::config_check_json(&config)
            } else {
                admin::config_check(&config)
            }
        }
        Command::Serve { config, data, listen, log_format } => serve::serve(&config, data, listen, log_format),
        Command::Pki { command } => pki::run(command),
        Command::Status { to } => remote::status(to),
        Command::Checks { command } => remote::checks(command),
        Command::Dlq { command } => remote::dlq(command),
        Command::Cases { to } => remote::cases(to),
        Command::Report { command: ReportCommand::Sla { month, data, config, format } } => {
            admin::report(admin::Report::Sla { html: format == "html" }, &month, data, &config)
        }
        Command::Report { command: ReportCommand::DocumentsSpared { month, data, config, format } } => {
            admin::report(admin::Report::DocumentsSpared { html: format == "html" }, &month, data, &config)
        }
        Command::Report { command: ReportCommand::Cases { month, data, config, format } } => {
            admin::report(admin::Report::Cases { html: format == "html" }, &month, data, &config)
        }
        Command::Bench(args) => {
            crate::bench::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchBaseline { mode, config, data, listen } => {
            crate::bench::serve_baseline(mode, &config, &data, listen)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { data, out } => admin::backup(&data, &out),
        Command::Restore { from, data } => admin::restore(&from, &data),
        Command::Audit { command: AuditCommand::Verify { data, public_key, config } } => {
            admin::audit_verify(&data, public_key, config)
        }
        Command::Migrate { from: MigrateFrom::Sqlite, to: MigrateTo::Postgres, data, config } => {
            let (config, _) = match load_or_report(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            admin::migrate(&config, &data)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "hub",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
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
